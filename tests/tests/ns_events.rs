//! `lazaret events`: a follower started before the traffic sees the deny of a flow the
//! device's policy does not allow, with the device's inventory context, and a manual
//! quarantine and release, and the discovery of an unknown device; without `--follow`, the
//! recent events are printed and the command ends.

use std::time::Duration;

use anyhow::{Context, Result};
use lazaret_tests::{
    daemon::{monitor_policy, wait_event, workflow, Lab},
    lazaret_bin,
};

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

    lab.cli(&[
        "quarantine",
        "add",
        "mon-icu-01",
        "--action",
        "isolate",
        "--reason",
        "events test",
    ])?;
    lab.cli(&["quarantine", "release", "mon-icu-01", "--reason", "done"])?;
    let q = wait_event(&follower, |v| v["kind"] == "quarantine")?;
    assert_eq!(
        (&q["device"], &q["action"], &q["reason"]),
        (
            &"mon-icu-01".into(),
            &"isolate".into(),
            &"events test".into()
        )
    );
    assert_eq!(q["by"], "uid 0");
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
            .any(|l| l.contains("quarantine mon-icu-01 (isolate) by uid 0: events test")),
        "{text}"
    );
    Ok(())
}
