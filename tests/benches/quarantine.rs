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

#[path = "common/mod.rs"]
mod common;

use std::{
    net::UdpSocket,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use common::{median, round3, verdict};
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

# CLINICAL-FLOWS row 16: the device sends its audit records over syslog UDP 514.
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

/// The pump's quarantine state, read from the pinned map as the XDP program reads it.
struct StateMap {
    map: HashMap<MapData, u64, DevState>,
    hash: u64,
}

impl StateMap {
    fn open(pins: &Path) -> Result<Self> {
        let data = MapData::from_pin(pins.join(lazaret_abi::MAP_DEV_STATE))
            .context("opening the pinned device-state map")?;
        Ok(StateMap {
            map: HashMap::try_from(Map::HashMap(data))?,
            hash: lazaret_abi::device_id_hash(DEVICE.as_bytes()),
        })
    }

    fn quarantine(&self) -> u8 {
        self.map.get(&self.hash, 0).map_or(0, |s| s.quarantine)
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
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
    let started = Instant::now();
    for trial in 0..trials {
        // Two deviations below the threshold, counted before the clock starts; the first
        // is the baseline.
        let n = no_rule.get();
        let b0 = Instant::now();
        pump.send_to(b"scan", ("10.10.0.20", 23))?;
        let b1 = no_rule.wait_above(n, Duration::from_secs(2))?;
        base.push(b1.duration_since(b0).as_secs_f64() * 1000.0);
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
        if took > TARGET_P99_MS / 2.0 {
            // When slow trials happen tells what they met (the daemon's 5 s tick, a write).
            eprintln!(
                "quarantine: trial {trial} took {took:.3} ms, at {:.3} s",
                t0.duration_since(started).as_secs_f64()
            );
        }
        ms.push(took);
        // Enforcing: the next packet of the pump's own workflow is dropped as quarantined.
        pump.send_to(b"audit record", ("10.10.0.20", 514))?;
        quarantine_drops
            .wait_above(before, Duration::from_secs(1))
            .with_context(|| {
                format!("trial {trial}: the quarantine is in the map but the next packet was not dropped")
            })?;
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
        state.wait(0, Duration::from_secs(2))?;
    }
    drop(lab);
    let nft = nftables(if args.quick {
        NFT_QUICK_TRIALS
    } else {
        NFT_TRIALS
    })?;
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
        ratio
    );
    args.write(&out, &md)?;
    eprintln!("quarantine: p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms over {trials} trials; baseline p50 {b50:.3} ms; nftables p50 {n50:.3} ms, p99 {n99:.3} ms");
    Ok(())
}
