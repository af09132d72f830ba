//! `cargo xtask bench quarantine`: time from the packet that crosses a device's deviation
//! threshold to its quarantine enforcing in the datapath.
//!
//! The real daemon (release build, `LAZARET_BIN`, set by xtask) runs in a routed namespace
//! lab with an infusion pump whose class isolates after 3 distinct denied flows. One trial:
//! the pump sends two denied UDP datagrams (distinct ports), the bench waits 20 ms so both
//! are counted, then takes t0 and sends the third, the one that crosses the threshold, and
//! polls the pinned device-state map until the pump's quarantine state is `isolate`: t1.
//! Between t0 and t1 lie the XDP verdict, the ring buffer, the daemon's wake-up, deviation
//! detection and the device-state write (epoch bump included); persistence, the audit log,
//! metrics and the webhook come after the write and are not in the figure. Each trial is
//! then verified on the datapath: the next datagram of the pump's allowed syslog workflow
//! must be dropped with `deny_quarantine` (pinned counters). The pump is released through
//! the control API before the next trial. Target: p99 under 10 ms.
//!
//! Baseline, in the same run and with the same polling: the first denied datagram of each
//! trial, from `send` to the pinned `deny_no_rule` counter moving — the XDP verdict alone,
//! as the bench can observe it; the ratio says what the controller's part costs.
//!
//! The nftables dataplane, in the same run: the same lab and trials with `dataplane =
//! "nftables"`. Its events come through nflog, and its quarantine is a set update; t1 is when
//! the daemon's state file lists the quarantine, which it writes after the set is updated
//! (an upper bound). Each trial is verified the same way, by the next packet dropped as
//! quarantined (the table's counters). Target: p99 under 100 ms.
//!
//! During reloads, in the same run: the lab's policy is a generated hospital of 10,000
//! devices / 100,000 rules with the pump added, and a thread replaces it with another such
//! policy, back to back, as a `git checkout` would (each whole-policy reload: about a second
//! and a half of compile off the loop, then half a second of map writes off the loop, then
//! the flip on it). The same XDP trials run meanwhile, and a `status` round trip through
//! the control socket is timed in each. Targets: quarantine p99 under 20 ms, `status` p99
//! under 100 ms; the idle `status` round trip is timed in the idle trials for comparison.

#[path = "common/mod.rs"]
mod common;

use std::{
    net::UdpSocket,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use common::{median, percentile, round3, verdict};
use lazaret::daemon::control::{call, Request};
use lazaret_abi::{stats_index, DevState, Reason, QUARANTINE_ISOLATE, SIDE_DEVICES};
use lazaret_tests::daemon::{fmt_mac, Dataplane, Lab};
use serde_json::json;

const TRIALS: usize = 300;
const QUICK_TRIALS: usize = 30;
const TARGET_P99_MS: f64 = 10.0;
const NFT_TRIALS: usize = 100;
const NFT_QUICK_TRIALS: usize = 20;
const NFT_TARGET_P99_MS: f64 = 100.0;
const DEVICE: &str = "pump-icu-01";
const RELOAD_TRIALS: usize = 100;
const RELOAD_QUICK_TRIALS: usize = 20;
const RELOAD_TARGET_P99_MS: f64 = 20.0;
const CONTROL_TARGET_P99_MS: f64 = 100.0;
/// The generated policies the whole-policy reloads alternate between (`cargo xtask bench`
/// passes them).
const RELOAD_POLICIES: [&str; 2] = ["10000x100000", "10000x100000s2"];

fn policy(mac: [u8; 6]) -> String {
    format!(
        r#"
[site]
name = "quarantine bench"
unknown_devices = "deny"

# Every trial reports 4 events; the default budget (50/s per device) would drop some.
[site.events]
rate = 100000
burst = 100000

[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true

[site.quarantine]
allow = [ {{ peer = "10.10.0.20/32", proto = "tcp", ports = [22], description = "biomed jump host" }} ]

[classes.infusion-pump]
description = "Large-volume infusion pumps"
workflows = ["audit-trail"]
quarantine = {{ after = 3, within = "1m", action = "isolate" }}

# docs/clinical-flows.md row 16: the device sends its audit records over syslog UDP 514.
[workflows.audit-trail]
description = "IHE ATNA audit records"
[[workflows.audit-trail.rules]]
device = "class:infusion-pump"
peer = "10.10.0.20/32"
proto = "udp"
ports = [514]
initiator = "device"

[[devices]]
id = "{DEVICE}"
class = "infusion-pump"
mac = "{}"
ipv4 = "10.20.0.11"
"#,
        fmt_mac(mac)
    )
}

/// The pump's quarantine state, read from the pinned map as the XDP program reads it: at
/// the pump's cell (`Device::cell`), as its pinned records name it.
struct StateMap {
    map: aya::maps::Array<MapData, DevState>,
    cell: u32,
}

impl StateMap {
    fn open(pins: &Path) -> Result<Self> {
        let hash = lazaret_abi::device_id_hash(DEVICE.as_bytes());
        let devices = MapData::from_pin(pins.join(lazaret_abi::MAP_DEVICES))
            .context("opening the pinned device map")?;
        let devices: HashMap<MapData, lazaret_abi::DevKey, lazaret_abi::Device> =
            HashMap::try_from(Map::HashMap(devices))?;
        let cell = devices
            .iter()
            .filter_map(Result::ok)
            .find(|(_, d)| d.id == hash)
            .map(|(_, d)| u32::from(d.cell))
            .context("the pump has no record in the pinned device map")?;
        let data = MapData::from_pin(pins.join(lazaret_abi::MAP_DEV_STATE))
            .context("opening the pinned device-state map")?;
        Ok(StateMap {
            map: aya::maps::Array::try_from(Map::Array(data))?,
            cell,
        })
    }

    fn quarantine(&self) -> u8 {
        self.map.get(&self.cell, 0).map_or(0, |s| s.quarantine)
    }

    /// Polls until the state is `want`; the instant it was seen.
    fn wait(&self, want: u8, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.quarantine() == want {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("quarantine state {want} not reached within {timeout:?}");
            }
            // Yield rather than spin: on a small machine the daemon needs the core.
            std::thread::yield_now();
        }
    }
}

/// One pinned packet counter, polled.
struct Counter {
    map: PerCpuArray<MapData, u64>,
    index: u32,
}

impl Counter {
    fn open(pins: &Path, reason: Reason) -> Result<Self> {
        let data = MapData::from_pin(pins.join(lazaret_abi::MAP_STATS))
            .context("opening the pinned counters")?;
        Ok(Counter {
            map: PerCpuArray::try_from(Map::PerCpuArray(data))?,
            index: stats_index(reason, SIDE_DEVICES),
        })
    }

    fn get(&self) -> u64 {
        self.map.get(&self.index, 0).map_or(0, |v| v.iter().sum())
    }

    /// Polls until the counter passes `above`; the instant it was seen.
    fn wait_above(&self, above: u64, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.get() > above {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("counter {} did not move within {timeout:?}", self.index);
            }
            // Yield rather than spin: on a small machine the daemon needs the core.
            std::thread::yield_now();
        }
    }
}

/// Whether the daemon's state file lists the pump as quarantined.
fn listed(file: &Path) -> bool {
    std::fs::read_to_string(file).is_ok_and(|t| t.contains(DEVICE))
}

/// Polls the state file until it lists the pump (`want`) or not; the instant it was seen.
fn wait_listed(file: &Path, want: bool, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if listed(file) == want {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the state file did not list the quarantine as {want} within {timeout:?}");
        }
        std::thread::yield_now();
    }
}

/// The trials on the nftables dataplane: milliseconds from the threshold packet to the
/// quarantine enforcing, each verified by the next packet dropped as quarantined.
fn nftables(trials: usize) -> Result<Vec<f64>> {
    let mut lab = Lab::on(Dataplane::Nftables, policy)?;
    lab.start()?;
    let file = lab.state_dir.join("quarantine.json");
    let socket = lab.tmp.path.join("control.sock");
    let pump = lab
        .net
        .device
        .run(|| UdpSocket::bind(("10.20.0.11", 0)))??;
    pump.send_to(b"x", ("10.10.0.20", 514))?;
    let mut ms = Vec::with_capacity(trials);
    for trial in 0..trials {
        pump.send_to(b"scan", ("10.10.0.20", 23))?;
        pump.send_to(b"scan", ("10.10.0.20", 25))?;
        std::thread::sleep(Duration::from_millis(50));
        if listed(&file) {
            bail!("trial {trial}: the pump was quarantined before the threshold");
        }
        let before = lab.packets(Reason::DenyQuarantine, SIDE_DEVICES)?;
        let t0 = Instant::now();
        pump.send_to(b"scan", ("10.10.0.20", 80))?;
        let t1 = wait_listed(&file, true, Duration::from_secs(3))?;
        ms.push(t1.duration_since(t0).as_secs_f64() * 1000.0);
        pump.send_to(b"audit record", ("10.10.0.20", 514))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while lab.packets(Reason::DenyQuarantine, SIDE_DEVICES)? <= before {
            if Instant::now() > deadline {
                bail!("trial {trial}: quarantined, but the next packet was not dropped");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let reply = call(
            &socket,
            &Request::QuarantineRelease {
                device: DEVICE.into(),
                reason: "bench".into(),
            },
        )?;
        if !reply.ok {
            bail!("release refused: {:?}", reply.error);
        }
        wait_listed(&file, false, Duration::from_secs(2))?;
    }
    Ok(ms)
}

/// The pump, its class and workflow, without `[site]`: added to a generated hospital.
fn pump_only(mac: [u8; 6]) -> String {
    format!(
        r#"
[classes.bench-infusion-pump]
description = "Large-volume infusion pumps (quarantine bench)"
workflows = ["bench-audit-trail"]
quarantine = {{ after = 3, within = "1m", action = "isolate" }}

[workflows.bench-audit-trail]
description = "IHE ATNA audit records"
[[workflows.bench-audit-trail.rules]]
device = "class:bench-infusion-pump"
peer = "10.10.0.20/32"
proto = "udp"
ports = [514]
initiator = "device"

[[devices]]
id = "{DEVICE}"
class = "bench-infusion-pump"
mac = "{}"
ipv4 = "10.20.0.11"
"#,
        fmt_mac(mac)
    )
}

/// `generated` with the pump added and the event budget raised (each trial reports 4
/// events), written to `to`. The generated devices' interface bindings (`dev0`, … are not
/// interfaces of the lab) are dropped: the compile is the same work.
fn hospital_with_pump(generated: &Path, to: &Path, mac: [u8; 6]) -> Result<()> {
    lazaret_tests::copy_tree(generated, to)?;
    for entry in std::fs::read_dir(to.join("devices"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let unbound: String = text
            .lines()
            .filter(|l| !l.starts_with("interface = "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, unbound)?;
    }
    let site = to.join("site.toml");
    let mut text = std::fs::read_to_string(&site)?;
    if !text.contains("[site.events]") {
        text.push_str("\n[site.events]\nrate = 100000\nburst = 100000\n");
    }
    std::fs::write(&site, text)?;
    std::fs::write(to.join("bench-pump.toml"), pump_only(mac))?;
    Ok(())
}

/// A `status` round trip through the control socket, in ms.
fn status_ms(socket: &Path) -> Result<f64> {
    let t0 = Instant::now();
    let reply = call(socket, &Request::Status {})?;
    if !reply.ok {
        bail!("status refused: {:?}", reply.error);
    }
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

/// One XDP trial: two deviations below the threshold, then the clock from the threshold
/// packet to the quarantine in the map, verified by the next packet dropped, then a
/// release. Returns (threshold → enforcing ms, baseline ms).
fn xdp_trial(
    trial: usize,
    pump: &UdpSocket,
    state: &StateMap,
    no_rule: &Counter,
    quarantine_drops: &Counter,
    socket: &Path,
) -> Result<(f64, f64)> {
    let n = no_rule.get();
    let b0 = Instant::now();
    pump.send_to(b"scan", ("10.10.0.20", 23))?;
    let b1 = no_rule.wait_above(n, Duration::from_secs(2))?;
    let base = b1.duration_since(b0).as_secs_f64() * 1000.0;
    pump.send_to(b"scan", ("10.10.0.20", 25))?;
    std::thread::sleep(Duration::from_millis(20));
    if state.quarantine() != 0 {
        bail!("trial {trial}: the pump was quarantined before the threshold");
    }
    let before = quarantine_drops.get();
    let t0 = Instant::now();
    pump.send_to(b"scan", ("10.10.0.20", 80))?;
    let t1 = state.wait(QUARANTINE_ISOLATE, Duration::from_secs(2))?;
    let took = t1.duration_since(t0).as_secs_f64() * 1000.0;
    // Enforcing: the next packet of the pump's own workflow is dropped as quarantined.
    pump.send_to(b"audit record", ("10.10.0.20", 514))?;
    quarantine_drops
        .wait_above(before, Duration::from_secs(1))
        .with_context(|| {
            format!(
                "trial {trial}: the quarantine is in the map but the next packet was not dropped"
            )
        })?;
    let reply = call(
        socket,
        &Request::QuarantineRelease {
            device: DEVICE.into(),
            reason: "bench".into(),
        },
    )?;
    if !reply.ok {
        bail!("release refused: {:?}", reply.error);
    }
    state.wait(0, Duration::from_secs(2))?;
    Ok((took, base))
}

/// What the during-reload phase measured.
struct DuringReload {
    quarantine_ms: Vec<f64>,
    status_ms: Vec<f64>,
    reloads: usize,
}

/// The XDP trials while whole-policy reloads run back to back.
fn during_reload(args: &common::Args, trials: usize) -> Result<DuringReload> {
    let generated = [
        args.policy(RELOAD_POLICIES[0])?,
        args.policy(RELOAD_POLICIES[1])?,
    ];
    let mut lab = Lab::new(pump_only)?;
    let mac = lab.net.device_mac;
    let copies = [lab.tmp.path.join("policy-a"), lab.tmp.path.join("policy-b")];
    for (from, to) in generated.iter().zip(&copies) {
        hospital_with_pump(from, to, mac)?;
    }
    std::fs::remove_file(lab.policy_dir.join("hospital.toml"))?;
    lazaret_tests::copy_tree(&copies[0], &lab.policy_dir)?;
    lab.start()?;
    let pins = lab
        .bpffs
        .path
        .join(format!("v{}", lazaret_abi::ABI_VERSION));
    let state = StateMap::open(&pins)?;
    let quarantine_drops = Counter::open(&pins, Reason::DenyQuarantine)?;
    let no_rule = Counter::open(&pins, Reason::DenyNoRule)?;
    let socket = lab.tmp.path.join("control.sock");
    let pump = lab
        .net
        .device
        .run(|| UdpSocket::bind(("10.20.0.11", 0)))??;
    pump.send_to(b"x", ("10.10.0.20", 514))?;

    // The reloads: the other policy checked out as soon as the last one enforces.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dir, ready) = (lab.policy_dir.clone(), lab.state_dir.join("ready"));
    let generation = move || -> u64 {
        std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    let reloader = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<usize> {
            let mut reloads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let from = &copies[(reloads + 1) % 2];
                let before = generation();
                let lock = dir.join(".git/index.lock");
                std::fs::create_dir_all(dir.join(".git"))?;
                std::fs::write(&lock, b"")?;
                lazaret_tests::copy_tree(from, &dir)?;
                std::fs::remove_file(&lock)?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while generation() <= before {
                    if Instant::now() > deadline {
                        bail!("a whole-policy reload did not enforce within 30 s");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                reloads += 1;
            }
            Ok(reloads)
        })
    };
    let mut out = DuringReload {
        quarantine_ms: Vec::with_capacity(trials),
        status_ms: Vec::with_capacity(trials),
        reloads: 0,
    };
    let measured = (|| -> Result<()> {
        for trial in 0..trials {
            let (took, _) = xdp_trial(trial, &pump, &state, &no_rule, &quarantine_drops, &socket)?;
            out.quarantine_ms.push(took);
            out.status_ms.push(status_ms(&socket)?);
        }
        Ok(())
    })();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reloads = reloader
        .join()
        .map_err(|_| anyhow::anyhow!("the reloading thread panicked"))?;
    if let Err(e) = measured {
        let status = call(&socket, &Request::Status {}).map(|r| r.data);
        bail!(
            "{e:#}\nstatus: {status:?}\nthe daemon's log:\n{}",
            lab.stop()
        );
    }
    out.reloads = reloads?;
    if out.reloads == 0 {
        bail!("no whole-policy reload completed while the trials ran: nothing was measured during one");
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args = common::args()?;
    let trials = if args.quick { QUICK_TRIALS } else { TRIALS };
    if std::env::var_os("LAZARET_BIN").is_none() {
        bail!("LAZARET_BIN is not set: run this through `cargo xtask bench quarantine` (it builds the release daemon)");
    }
    let mut lab = Lab::new(policy)?;
    lab.start()?;
    let pins = lab
        .bpffs
        .path
        .join(format!("v{}", lazaret_abi::ABI_VERSION));
    let state = StateMap::open(&pins)?;
    let socket = lab.tmp.path.join("control.sock");
    let pump = lab
        .net
        .device
        .run(|| UdpSocket::bind(("10.20.0.11", 0)))??;
    let quarantine_drops = Counter::open(&pins, Reason::DenyQuarantine)?;
    let no_rule = Counter::open(&pins, Reason::DenyNoRule)?;
    // Warm-up: ARP, the daemon's first event, the first quarantine file write.
    pump.send_to(b"x", ("10.10.0.20", 514))?;

    let (mut ms, mut base) = (Vec::with_capacity(trials), Vec::with_capacity(trials));
    let mut idle_status = Vec::with_capacity(trials);
    let started = Instant::now();
    for trial in 0..trials {
        let t0 = started.elapsed();
        let (took, b) = xdp_trial(trial, &pump, &state, &no_rule, &quarantine_drops, &socket)?;
        if took > TARGET_P99_MS / 2.0 {
            // When slow trials happen tells what they met (the daemon's tick, a write).
            eprintln!(
                "quarantine: trial {trial} took {took:.3} ms, at {:.3} s",
                t0.as_secs_f64()
            );
        }
        ms.push(took);
        base.push(b);
        idle_status.push(status_ms(&socket)?);
    }
    drop(lab);
    let nft = nftables(if args.quick {
        NFT_QUICK_TRIALS
    } else {
        NFT_TRIALS
    })?;
    let during = during_reload(
        &args,
        if args.quick {
            RELOAD_QUICK_TRIALS
        } else {
            RELOAD_TRIALS
        },
    )?;
    let p = |v: &[f64], q: f64| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, q)
    };
    let (r50, r99) = (
        median(&during.quarantine_ms),
        p(&during.quarantine_ms, 0.99),
    );
    let (c50, c99) = (median(&during.status_ms), p(&during.status_ms, 0.99));
    let (i50, i99) = (median(&idle_status), p(&idle_status, 0.99));
    let mut nft_sorted = nft.clone();
    nft_sorted.sort_by(f64::total_cmp);
    let (n50, n99, nmax) = (
        median(&nft),
        percentile(&nft_sorted, 0.99),
        nft_sorted.last().copied().unwrap_or(0.0),
    );

    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        median(&ms),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(0.0),
    );
    let mut base_sorted = base.clone();
    base_sorted.sort_by(f64::total_cmp);
    let (b50, b99) = (median(&base), percentile(&base_sorted, 0.99));
    let ratio = if b50 > 0.0 { p50 / b50 } else { 0.0 };
    let out = json!({
        "quick": args.quick,
        "trials": trials,
        "threshold_to_enforcing_p50_ms": round3(p50),
        "threshold_to_enforcing_p99_ms": round3(p99),
        "threshold_to_enforcing_max_ms": round3(max),
        "baseline_xdp_verdict_p50_ms": round3(b50),
        "baseline_xdp_verdict_p99_ms": round3(b99),
        "p50_ratio_to_baseline": round3(ratio),
        "target_p99_ms": TARGET_P99_MS,
        "met": p99 < TARGET_P99_MS,
        "verified_next_packet_dropped": trials,
        "control_idle_p50_ms": round3(i50),
        "control_idle_p99_ms": round3(i99),
        "during_reload_trials": during.quarantine_ms.len(),
        "during_reload_reloads": during.reloads,
        "during_reload_p50_ms": round3(r50),
        "during_reload_p99_ms": round3(r99),
        "during_reload_target_p99_ms": RELOAD_TARGET_P99_MS,
        "during_reload_met": r99 < RELOAD_TARGET_P99_MS,
        "control_during_reload_p50_ms": round3(c50),
        "control_during_reload_p99_ms": round3(c99),
        "control_during_reload_target_p99_ms": CONTROL_TARGET_P99_MS,
        "control_during_reload_met": c99 < CONTROL_TARGET_P99_MS,
        "nftables": {
            "trials": nft.len(),
            "threshold_to_enforcing_p50_ms": round3(n50),
            "threshold_to_enforcing_p99_ms": round3(n99),
            "threshold_to_enforcing_max_ms": round3(nmax),
            "target_p99_ms": NFT_TARGET_P99_MS,
            "met": n99 < NFT_TARGET_P99_MS,
            "verified_next_packet_dropped": nft.len(),
        },
    });
    let md = format!(
        "| measure | p50 | p99 | max | target (p99) | |\n|---|---|---|---|---|---|\n\
         | threshold packet sent → quarantine in the device-state map ({trials} trials, each verified by the next packet dropped) | {:.3} ms | {:.3} ms | {:.3} ms | < {TARGET_P99_MS} ms | {} |\n\
         | baseline: denied packet sent → its XDP verdict counted (same trials, same polling) | {:.3} ms | {:.3} ms | | | |\n\n\
         | nftables: threshold packet sent → quarantine enforcing, listed in the state file ({} trials, each verified by the next packet dropped) | {:.3} ms | {:.3} ms | {:.3} ms | < {NFT_TARGET_P99_MS} ms | {} |\n\n\
         | during whole-policy reloads (10,000 devices / 100,000 rules, {} reloads back to back): threshold packet sent → quarantine in the map ({} trials) | {:.3} ms | {:.3} ms | | < {RELOAD_TARGET_P99_MS} ms | {} |\n\
         | `status` round trip through the control socket, idle (same trials as the first row) | {:.3} ms | {:.3} ms | | | |\n\
         | `status` round trip during those reloads | {:.3} ms | {:.3} ms | | < {CONTROL_TARGET_P99_MS} ms | {} |\n\n\
         p50 ratio quarantine / baseline (XDP): {:.1}×.\n",
        p50,
        p99,
        max,
        verdict(p99 < TARGET_P99_MS),
        b50,
        b99,
        nft.len(),
        n50,
        n99,
        nmax,
        verdict(n99 < NFT_TARGET_P99_MS),
        during.reloads,
        during.quarantine_ms.len(),
        r50,
        r99,
        verdict(r99 < RELOAD_TARGET_P99_MS),
        i50,
        i99,
        c50,
        c99,
        verdict(c99 < CONTROL_TARGET_P99_MS),
        ratio
    );
    args.write(&out, &md)?;
    eprintln!("quarantine: p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms over {trials} trials; baseline p50 {b50:.3} ms; nftables p50 {n50:.3} ms, p99 {n99:.3} ms; during {} reloads p50 {r50:.3} ms, p99 {r99:.3} ms, status p99 {c99:.3} ms (idle {i99:.3} ms)", during.reloads);
    Ok(())
}
