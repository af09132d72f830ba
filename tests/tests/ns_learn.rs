//! Learn mode end to end: a monitor in learn mode opens its HL7 session and an SSH session
//! to the lab server and receives a data-export poll (UDP 24105, docs/clinical-flows.md row 4); the
//! flows are recorded in the state directory and survive a `kill -9`; the exported workflow
//! passes `lazaret check`, and once applied with the monitor enforcing it allows exactly
//! that traffic and denies the rest. On both dataplanes (nftables logs a learn-mode
//! device's new flows, allowed or not, as learn records).

use std::{
    net::UdpSocket,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, wait_event, workflow, Dataplane, Lab},
    lazaret_bin,
    netns::wait_until,
    on_both_dataplanes,
};

on_both_dataplanes!(learned_flows_become_an_enforced_workflow);

const ROLES: &str = r#"
[roles.lab-server]
description = "The lab's HL7 engine and jump host"
addresses = ["10.10.0.20"]
"#;

/// The data-export port of an IntelliVue monitor (docs/clinical-flows.md row 4).
const DATA_EXPORT: u16 = 24105;

/// A UDP responder on the device for `secs` seconds: echoes every datagram.
fn udp_responder(lab: &Lab, secs: u64) -> Result<()> {
    let s = lab
        .net
        .device
        .run(|| UdpSocket::bind(("10.20.0.11", DATA_EXPORT)))??;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut b = [0u8; 64];
        while Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut b) {
                let _ = s.send_to(&b[..n], from);
            }
        }
    });
    Ok(())
}

/// The server polls the device's data-export port; true if the answer came back.
fn poll_device(lab: &Lab) -> Result<bool> {
    lab.net
        .server
        .run(|| -> std::io::Result<bool> {
            let s = UdpSocket::bind(("10.10.0.20", 0))?;
            s.set_read_timeout(Some(Duration::from_millis(800)))?;
            s.send_to(b"poll", ("10.20.0.11", DATA_EXPORT))?;
            let mut b = [0u8; 16];
            Ok(s.recv_from(&mut b).is_ok_and(|(n, _)| &b[..n] == b"poll"))
        })?
        .map_err(Into::into)
}

/// The monitor's learned flows from the state directory, as "initiator proto peer port" →
/// count.
fn learned(lab: &Lab) -> Vec<(String, u64)> {
    let Ok(text) = std::fs::read_to_string(lab.state_dir.join("learned-flows.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    v["devices"]["mon-icu-01"]["flows"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, f)| (k.clone(), f["count"].as_u64().unwrap_or(0)))
        .collect()
}

fn count(lab: &Lab, key: &str) -> u64 {
    learned(lab)
        .into_iter()
        .find(|(k, _)| k == key)
        .map_or(0, |(_, n)| n)
}

const HL7: &str = "device 6 10.10.0.20 2575";
const SSH: &str = "device 6 10.10.0.20 22";
const EXPORT: &str = "peer 17 10.10.0.20 24105";

fn learned_flows_become_an_enforced_workflow(dataplane: Dataplane) -> Result<()> {
    let learn_rules = format!(
        "mode = \"learn\"\n{}{ROLES}",
        workflow("hl7-results", "tcp", 2575)
    );
    let mut lab = Lab::on(dataplane, |mac| {
        monitor_policy(mac, &["hl7-results"], &learn_rules)
    })?;
    lab.echo_servers(&[2575, 22, 23])?;
    udp_responder(&lab, 60)?;
    lab.start()?;
    assert_eq!(lab.metric("lazaret_devices{mode=\"learn\"}")?, Some(1.0));

    for port in [2575, 2575, 22] {
        let mut s = lab.connect(port, Duration::from_millis(1000))?;
        assert!(round_trip(&mut s), "port {port} passes in learn mode");
    }
    assert!(
        poll_device(&lab)?,
        "the data-export poll passes in learn mode"
    );
    wait_until(Duration::from_secs(10), || {
        count(&lab, HL7) >= 2 && count(&lab, SSH) >= 1 && count(&lab, EXPORT) >= 1
    });
    let before = learned(&lab);
    assert_eq!(before.len(), 3, "three flow patterns learned: {before:?}");
    assert_eq!(count(&lab, HL7), 2, "{before:?}");

    // kill -9, restart, one more HL7 session: counted on top of what was kept.
    lab.kill9();
    lab.start()?;
    let mut s = lab.connect(2575, Duration::from_millis(1000))?;
    assert!(round_trip(&mut s));
    wait_until(Duration::from_secs(10), || count(&lab, HL7) >= 3);
    assert_eq!(count(&lab, HL7), 3, "{:?}", learned(&lab));
    assert_eq!(
        (count(&lab, SSH), count(&lab, EXPORT)),
        (1, 1),
        "flows learned before the restart are kept"
    );

    // Export, with the real CLI.
    let proposal = lab.tmp.path.join("learned.toml");
    let out = std::process::Command::new(lazaret_bin()?)
        .args(["learn", "export", "--device", "mon-icu-01", "--config"])
        .arg(&lab.config)
        .arg("--out")
        .arg(&proposal)
        .output()?;
    if !out.status.success() {
        bail!("learn export: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = std::fs::read_to_string(&proposal)?;
    for expected in [
        "[workflows.learned-mon-icu-01]",
        "device = \"device:mon-icu-01\"\npeer = \"role:lab-server\"\nproto = \"tcp\"\nports = [22, 2575]\ninitiator = \"device\"",
        "peer = \"role:lab-server\"\nproto = \"udp\"\nports = [24105]\ninitiator = \"peer\"",
        "# 4 flows opened by the device",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }

    // Apply: the monitor enforces, with the learned workflow instead of hl7-results.
    let enforce = monitor_policy(lab.net.device_mac, &[], ROLES);
    let next = lab.ready_generation().context("generation")? + 1;
    std::fs::copy(&proposal, lab.policy_dir.join("learned.toml"))?;
    lab.write_policy(&enforce)?;
    let check = std::process::Command::new(lazaret_bin()?)
        .arg("check")
        .arg(&lab.policy_dir)
        .output()?;
    assert!(
        check.status.success(),
        "lazaret check refused the exported workflow:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    lab.wait_generation(next, Duration::from_secs(10))?;
    wait_until(Duration::from_secs(10), || {
        lab.metric("lazaret_devices{mode=\"enforce\"}")
            .ok()
            .flatten()
            == Some(1.0)
    });
    assert_eq!(lab.metric("lazaret_devices{mode=\"learn\"}")?, Some(0.0));

    let follower = lab.follow_events()?;
    for port in [2575, 22] {
        let mut s = lab.connect(port, Duration::from_millis(1000))?;
        assert!(round_trip(&mut s), "learned port {port} is allowed");
    }
    assert!(
        poll_device(&lab)?,
        "the learned data-export poll is allowed"
    );
    assert!(
        lab.connect(23, Duration::from_millis(500)).is_err(),
        "a flow never learned is denied"
    );
    wait_event(&follower, |v| {
        v["kind"] == "deny" && v["dst"] == "10.10.0.20:23"
    })?;
    Ok(())
}
