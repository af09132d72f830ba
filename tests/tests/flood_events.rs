//! One device floods denied packets as fast as this machine can inject them (raw frames on
//! its port, for `FLOOD` seconds) while a second device makes a few denied attempts. The
//! datapath's per-source event token bucket must keep the second device's events flowing:
//! its deviations reach the controller, which quarantines it (action `alert`) after three
//! distinct denied flows. The flood's own events are rate limited and counted in the
//! metrics, and the controller's CPU over the window stays bounded (read from
//! /proc/PID/stat: utime + stime).
//!
//! A flood whose every frame has a source MAC of its own (and an address no device has)
//! finds a fresh bucket per frame: the budget all sources without a device share bounds
//! its events, on both dataplanes, so the second device is still quarantined.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lazaret_tests::{
    daemon::{fmt_mac, Dataplane, Lab},
    frames::{tcp4, udp4, with_l4_checksum4, Mac},
    netns::{mac_of, wait_until},
    on_both_dataplanes,
    reliability::{metric, record_figure},
};

const FLOOD: Duration = Duration::from_secs(5);
const MAX_FLOOD_PACKETS: u64 = 20_000_000;
const PUMP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x22];
const PUMP_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 12);
/// Event token bucket per source, set in the policy.
const RATE: u32 = 50;
const BURST: u32 = 100;
/// The controller may use at most this share of one core while the flood runs (it handles
/// at most RATE events per second per source).
const MAX_CPU: f64 = 0.5;

on_both_dataplanes!(a_flood_of_made_up_source_macs_does_not_silence_the_devices);

fn policy(monitor: Mac) -> String {
    format!(
        r#"
[site]
name = "flood-lab"
unknown_devices = "deny"

[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true

[site.events]
rate = {RATE}
burst = {BURST}

[classes.patient-monitor]
description = "Bedside monitors"
workflows = ["hl7"]
quarantine = {{ after = 1000000, within = "1m", action = "alert" }}

[classes.infusion-pump]
description = "Infusion pumps"
workflows = ["hl7"]
quarantine = {{ after = 3, within = "1m", action = "alert" }}

[[devices]]
id = "mon-icu-01"
class = "patient-monitor"
mac = "{}"
ipv4 = "10.20.0.11"

[[devices]]
id = "pump-icu-02"
class = "infusion-pump"
mac = "{}"
ipv4 = "{PUMP_IP}"

[workflows.hl7]
description = "HL7 results"
[[workflows.hl7.rules]]
peer = "10.10.0.20/32"
proto = "tcp"
ports = [2575]
"#,
        fmt_mac(monitor),
        fmt_mac(PUMP_MAC)
    )
}

/// The pump's six denied attempts: SYNs to ports no workflow allows, each a flow of its
/// own (three distinct denied flows quarantine it). With their checksums: conntrack
/// (nftables) takes a bad one for an invalid packet.
fn pump_attempts(gw_mac: Mac, server: Ipv4Addr) -> Vec<Vec<u8>> {
    (0..6)
        .map(|i| {
            with_l4_checksum4(tcp4(
                PUMP_MAC,
                gw_mac,
                PUMP_IP,
                server,
                41000 + i,
                3000 + i,
                0x02,
            ))
        })
        .collect()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: f64 = f.get(11).context("utime")?.parse()?;
    let stime: f64 = f.get(12).context("stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz)
}

/// Sends `frame` on the device port in a tight loop for `FLOOD` (bounded in packets too),
/// through one AF_PACKET socket; the packets sent. With `made_up_macs`, each frame has a
/// source MAC of its own, and every other one an unknown ethertype.
fn flood(lab: &Lab, mut frame: Vec<u8>, made_up_macs: bool) -> Result<u64> {
    let ifname = std::ffi::CString::new(lab.net.device_if.clone())?;
    lab.net.device.run(move || -> Result<u64> {
        // SAFETY: plain libc calls with valid arguments; the fd is closed below.
        unsafe {
            let index = libc::if_nametoindex(ifname.as_ptr());
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 || index == 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < FLOOD && sent < MAX_FLOOD_PACKETS {
                for _ in 0..256 {
                    if made_up_macs {
                        // Locally administered, unicast, numbered; every other frame of an
                        // ethertype no one speaks, which is refused before any identity
                        // (XDP's parser, nftables' frame stage) under the source's MAC.
                        let [.., a, b, c, d] = sent.to_be_bytes();
                        frame[6..12].copy_from_slice(&[0x02, 0x5a, a, b, c, d]);
                        let ethertype: u16 = if sent.is_multiple_of(2) {
                            0x0800
                        } else {
                            0x88b5
                        };
                        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
                    }
                    let n = libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        std::ptr::addr_of!(addr).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                    if n > 0 {
                        sent += 1;
                    }
                }
            }
            libc::close(fd);
            Ok(sent)
        }
    })?
}

#[test]
fn a_flooding_device_does_not_silence_the_others() -> Result<()> {
    let mut lab = Lab::new(policy)?;
    lab.start()?;
    let pid = lab
        .daemon
        .as_ref()
        .and_then(lazaret_tests::netns::ChildGuard::id)
        .context("daemon pid")?;
    let gw_mac = mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let monitor = lab.net.device_mac;
    // Denied: UDP to a port no workflow allows.
    let flood_frame = udp4(
        monitor,
        gw_mac,
        lab.net.device_ip,
        lab.net.server_ip,
        40000,
        9,
    );
    let pump_frames = pump_attempts(gw_mac, lab.net.server_ip);

    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let flooder = {
        let lab_ref: &Lab = &lab;
        std::thread::scope(|s| -> Result<u64> {
            let h = s.spawn(|| flood(lab_ref, flood_frame, false));
            // Halfway through the flood, the pump makes six distinct denied attempts.
            std::thread::sleep(FLOOD / 2);
            lazaret_tests::netns::send_raw(
                &lab_ref.net.device,
                &lab_ref.net.device_if,
                pump_frames,
            )?;
            h.join()
                .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
        })?
    };
    let window = started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(pid)? - cpu_before) / window;

    // The pump's deviations arrived despite the flood: it is quarantined (alert).
    let quarantined = wait_until(Duration::from_secs(5), || {
        lab.cli(&["quarantine", "list"])
            .map(|v| v.to_string().contains("pump-icu-02"))
            .unwrap_or(false)
    });
    assert!(quarantined, "the pump's events were drowned by the flood");
    let list = lab.cli(&["quarantine", "list"])?.to_string();
    assert!(!list.contains("mon-icu-01"), "{list}");

    // The flood's events were rate limited, and every event not delivered is counted:
    // the outcomes add up to the denied packets (metrics refresh every 5 s).
    let outcome = |lab: &Lab, o: &str| {
        metric(lab, "lazaret_events_total", &[("outcome", o)])
            .ok()
            .flatten()
            .unwrap_or(0.0)
    };
    let accounted = |lab: &Lab| {
        ["delivered", "rate_limited", "ring_full", "undecodable"]
            .iter()
            .map(|o| outcome(lab, o))
            .sum::<f64>()
    };
    wait_until(Duration::from_secs(12), || {
        accounted(&lab) >= 0.99 * flooder as f64
    });
    let rate_limited = outcome(&lab, "rate_limited");
    let delivered = outcome(&lab, "delivered");
    let lost = outcome(&lab, "ring_full");
    let total = accounted(&lab);
    assert!(
        total >= 0.99 * flooder as f64,
        "{flooder} denied packets sent, only {total} events accounted for"
    );
    assert!(flooder > 10_000, "only {flooder} flood packets were sent");
    assert!(rate_limited > 0.0, "no rate-limited events counted");
    // Per source: at most the burst plus RATE per second got through, for each of the two.
    let bound = 2.0 * (f64::from(BURST) + f64::from(RATE) * (window + 6.0));
    assert!(
        delivered <= bound,
        "{delivered} events delivered, bound {bound}"
    );
    assert!(
        cpu < MAX_CPU,
        "controller used {:.0} % of a core",
        cpu * 100.0
    );
    let pps = flooder as f64 / FLOOD.as_secs_f64();
    record_figure(
        "flood_events::a_flooding_device_does_not_silence_the_others",
        &format!(
            "{flooder} denied packets in {:.0} s ({:.0} kpps); controller CPU {:.1} % of a core; events delivered {delivered}, rate limited {rate_limited}, lost to a full ring {lost} (all {total} accounted for); the other device's deviations arrived",
            FLOOD.as_secs_f64(),
            pps / 1000.0,
            cpu * 100.0
        ),
    );
    Ok(())
}

/// Frames from made-up source MACs, half of them IP from an address no device has, half of
/// an unknown ethertype: each is a source without a device, with a bucket of its own, full.
/// Without the budget they share, every frame was an event: on XDP the ring buffer filled
/// and the pump's deviations were lost (it was never quarantined); on nftables the events
/// overflowed the nflog socket and the controller's queue, and the made-up MACs could fill
/// the meter the devices' buckets live in.
fn a_flood_of_made_up_source_macs_does_not_silence_the_devices(dp: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dp, policy)?;
    lab.start()?;
    let gw_mac = mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let nobody = Ipv4Addr::new(10, 20, 0, 99);
    let flood_frame = udp4(
        lab.net.device_mac,
        gw_mac,
        nobody,
        lab.net.server_ip,
        40000,
        9,
    );
    let pump_frames = pump_attempts(gw_mac, lab.net.server_ip);
    let pid = lab
        .daemon
        .as_ref()
        .and_then(lazaret_tests::netns::ChildGuard::id)
        .context("daemon pid")?;
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let flooder = std::thread::scope(|s| -> Result<u64> {
        let lab_ref: &Lab = &lab;
        let h = s.spawn(|| flood(lab_ref, flood_frame, true));
        std::thread::sleep(FLOOD / 2);
        // Again every 100 ms while the flood lasts: a gateway's CPU saturated by the flood
        // (nftables judges each frame in softirq) drops frames before any table sees them,
        // the pump's among them. Each attempt is one of six flows, whichever copy passes.
        let sock =
            lazaret_tests::netns::RawSocket::open(&lab_ref.net.device, &lab_ref.net.device_if)?;
        let until = Instant::now() + FLOOD / 2;
        while Instant::now() < until {
            for f in &pump_frames {
                // The flood keeps the interface's queue full: a frame it has no room for
                // (ENOBUFS) is lost like one dropped on the way, and sent again next round.
                let _ = sock.send(f);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        h.join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
    })?;
    let window = started.elapsed().as_secs_f64();
    // Each new unknown device is news to record: the controller's work for them stays
    // bounded, as the budget bounds the events (its loop also quarantines).
    let cpu = (cpu_seconds(pid)? - cpu_before) / window;
    assert!(flooder > 10_000, "only {flooder} flood packets were sent");
    let quarantined = wait_until(Duration::from_secs(5), || {
        lab.cli(&["quarantine", "list"])
            .map(|v| v.to_string().contains("pump-icu-02"))
            .unwrap_or(false)
    });
    if !quarantined {
        let m = |name: &str, labels: &[(&str, &str)]| metric(&lab, name, labels).ok().flatten();
        panic!(
            "{}: the pump's events were drowned by {flooder} frames from made-up MACs (packets deny_no_rule {:?}; events delivered {:?}, lost {:?})",
            dp.name(),
            m("lazaret_packets_total", &[("reason", "deny_no_rule"), ("side", "devices")]),
            m("lazaret_events_total", &[("outcome", "delivered")]),
            m("lazaret_events_total", &[("outcome", "ring_full")]),
        );
    }
    // Delivered: the pump's own budget and the unknown sources' shared one (on nftables the
    // frame stage's named limit, which refuses both halves of the flood), each burst plus
    // rate over the window.
    let delivered = |lab: &Lab| {
        metric(lab, "lazaret_events_total", &[("outcome", "delivered")])
            .ok()
            .flatten()
            .unwrap_or(0.0)
    };
    // The metrics refresh every 5 s: the count settles after the flood.
    std::thread::sleep(Duration::from_secs(6));
    let per_source = f64::from(BURST) + f64::from(RATE) * (window + 6.0);
    let bound = per_source * (1.0 + f64::from(lazaret_abi::UNKNOWN_EVENTS_SHARE));
    let got = delivered(&lab);
    // And none lost: the ring buffer (XDP) or the nflog socket (nftables) never overflowed.
    let lost = metric(&lab, "lazaret_events_total", &[("outcome", "ring_full")])?.unwrap_or(0.0);
    assert!(
        lost == 0.0,
        "{}: {lost} events lost to a full ring buffer or nflog socket ({got} delivered)",
        dp.name()
    );
    assert!(
        cpu < MAX_CPU,
        "{}: the controller used {:.0} % of a core",
        dp.name(),
        cpu * 100.0
    );
    // At least the pump's three that quarantined it: the count is read, not absent.
    assert!(
        (3.0..=bound).contains(&got),
        "{}: {got} events delivered from {flooder} frames, bound {bound}",
        dp.name()
    );
    record_figure(
        &format!(
            "flood_events::a_flood_of_made_up_source_macs_does_not_silence_the_devices::{}",
            dp.name()
        ),
        &format!(
            "{flooder} frames from as many made-up MACs in {:.0} s; events delivered {got} (bound {bound:.0}), none lost; controller CPU {:.1} % of a core; the other device's deviations arrived",
            FLOOD.as_secs_f64(),
            cpu * 100.0
        ),
    );
    Ok(())
}
