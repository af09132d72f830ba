//! `lazaret events`: a follower started before the traffic sees the deny of a flow the
//! device's policy does not allow, with the device's inventory context, and a manual
//! quarantine and release, and the discovery of an unknown device; without `--follow`, the
//! recent events are printed and the command ends. A flooding source cannot starve the
//! events of another device (per-source rate limit, on both dataplanes).

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use lazaret_abi::{Reason, SIDE_DEVICES};
use lazaret_tests::{
    daemon::{monitor_policy, wait_event, workflow, Dataplane, Lab},
    frames::{tcp4, TCP_SYN},
    lazaret_bin,
    netns::{mac_of, send_raw},
    on_both_dataplanes,
};

on_both_dataplanes!(a_flooding_source_cannot_starve_another_devices_events);

/// An unknown source floods the device port with denied SYNs (thousands per second, far
/// above the 50 events/s a source may report) while the monitor opens flows its policy
/// denies: each of the monitor's denies still arrives as an event. With one rate limit for
/// everyone the flood would take nearly every token.
fn a_flooding_source_cannot_starve_another_devices_events(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| {
        monitor_policy(mac, &["hl7-results"], &workflow("hl7-results", "tcp", 2575))
    })?;
    lab.start()?;
    let follower = lab.follow_events()?;
    let gw_mac = mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let stranger = [0x02, 0x5e, 0, 0, 0, 0x77];
    let frames: Vec<Vec<u8>> = (0..200u16)
        .map(|i| {
            tcp4(
                stranger,
                gw_mac,
                std::net::Ipv4Addr::new(10, 20, 0, 77),
                lab.net.server_ip,
                30000 + i,
                80,
                TCP_SYN,
            )
        })
        .collect();
    let flooded_before = lab.packets(Reason::DenyUnknown, SIDE_DEVICES)?;
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let seen = thread::scope(|scope| {
        scope.spawn(|| {
            // Bounded: at most 8 s and 400 batches of 200 frames.
            let deadline = Instant::now() + Duration::from_secs(8);
            for _ in 0..400 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                if send_raw(&lab.net.device, &lab.net.device_if, frames.clone()).is_ok() {
                    sent.fetch_add(200, Ordering::Relaxed);
                }
            }
        });
        // Let the flood use up a shared budget first.
        thread::sleep(Duration::from_millis(500));
        let mut seen = 0;
        for port in [22u16, 23, 25] {
            let _ = lab.connect(port, Duration::from_millis(300));
            let dst = format!("10.10.0.20:{port}");
            if wait_event(&follower, |v| {
                v["kind"] == "deny" && v["dst"] == dst.as_str()
            })
            .is_ok()
            {
                seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        seen
    });
    let flooded = lab.packets(Reason::DenyUnknown, SIDE_DEVICES)? - flooded_before;
    assert!(
        flooded > 2000,
        "the flood ran: {flooded} denied of {} sent",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(seen, 3, "the monitor's denies arrived during the flood");
    Ok(())
}

#[test]
fn events_follow_reports_denies_and_quarantines() -> Result<()> {
    let mut lab = Lab::new(|mac| {
        monitor_policy(mac, &["hl7-results"], &workflow("hl7-results", "tcp", 2575))
    })?;
    lab.echo_servers(&[2575])?;
    lab.start()?;
    let follower = lab.follow_events()?;

    let allowed = lab.connect(2575, Duration::from_millis(800));
    assert!(allowed.is_ok(), "the workflow's flow is allowed");
    assert!(
        lab.connect(22, Duration::from_millis(500)).is_err(),
        "a flow outside the workflow is denied"
    );
    let deny = wait_event(&follower, |v| {
        v["kind"] == "deny" && v["dst"] == "10.10.0.20:22"
    })?;
    assert_eq!(deny["device"], "mon-icu-01");
    assert_eq!(deny["class"], "patient-monitor");
    assert_eq!(deny["reason"], "deny_no_rule");
    assert_eq!(deny["initiator"], "device");
    assert_eq!(
        deny["src"].as_str().map(|s| s.starts_with("10.20.0.11:")),
        Some(true)
    );

    lab.quarantine("mon-icu-01", "isolate", "events test")?;
    lab.release("mon-icu-01", "done")?;
    let q = wait_event(&follower, |v| v["kind"] == "quarantine")?;
    assert_eq!(
        (&q["device"], &q["action"], &q["reason"]),
        (
            &"mon-icu-01".into(),
            &"isolate".into(),
            &"events test".into()
        )
    );
    // The connected user by name (and, under sudo or after a login, the person: see
    // `control::operator`).
    assert!(
        q["by"]
            .as_str()
            .is_some_and(|b| b.ends_with("root (uid 0)")),
        "{q}"
    );
    wait_event(&follower, |v| {
        v["kind"] == "release" && v["device"] == "mon-icu-01"
    })?;

    // A device nobody registered appears on the device port: one discovery event.
    let gw_mac = lazaret_tests::netns::mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let frame = lazaret_tests::frames::tcp4(
        [0x02, 0x5e, 0, 0, 0, 0x42],
        gw_mac,
        std::net::Ipv4Addr::new(10, 20, 0, 66),
        lab.net.server_ip,
        40000,
        443,
        lazaret_tests::frames::TCP_SYN,
    );
    lazaret_tests::netns::send_raw(
        &lab.net.device,
        &lab.net.device_if,
        vec![frame.clone(), frame],
    )?;
    let new = wait_event(&follower, |v| v["kind"] == "new_unknown_device")?;
    assert_eq!(new["src_mac"], "02:5e:00:00:00:42", "{new}");
    assert_eq!(new["address"], "10.20.0.66", "{new}");
    wait_event(&follower, |v| {
        v["kind"] == "unknown" && v["src_mac"] == "02:5e:00:00:00:42"
    })?;
    std::thread::sleep(Duration::from_millis(200));
    let discoveries = follower
        .output()
        .lines()
        .filter(|l| l.contains("\"new_unknown_device\""))
        .count();
    assert_eq!(discoveries, 1, "one discovery event for two frames");

    // Without --follow: the recent events, one readable line each, and the command ends.
    let out = std::process::Command::new(lazaret_bin()?)
        .args(["events", "--config"])
        .arg(&lab.config)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let deny_line = text
        .lines()
        .find(|l| l.contains(" deny ") && l.contains("-> 10.10.0.20:22"))
        .with_context(|| format!("no readable deny line in:\n{text}"))?;
    assert!(
        deny_line.contains("mon-icu-01 (patient-monitor, enforce) deny_no_rule"),
        "{deny_line}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("quarantine mon-icu-01 (isolate) by ")
                && l.contains("root (uid 0): events test")),
        "{text}"
    );
    Ok(())
}
