//! Deviation detection end to end: a compromised infusion pump scans; after its policy's
//! threshold it is isolated within the same scan, its session to the pump server is cut,
//! the quarantine profile (the biomed jump host) still works, and a release restores it.
//! A life-critical device with the default action is only alerted, never cut off. An
//! isolated pump still reaches the site's DNS and NTP servers. On both dataplanes (on
//! nftables the denied flows arrive as nflog events).

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{pump_policy, round_trip, Dataplane, Lab},
    on_both_dataplanes,
};

on_both_dataplanes!(
    scanning_pump_is_isolated_and_released,
    life_critical_device_with_the_default_action_is_alerted_never_cut_off,
    isolated_pump_keeps_dns_and_ntp,
    restrict_keeps_only_the_essential_workflows,
    quarantine_with_a_ttl_is_released_automatically,
);

fn policy(mac: [u8; 6], life_critical: bool, action: Option<&str>) -> String {
    pump_policy("quarantine lab", mac, action, life_critical)
}

/// Scans five closed ports of the server (five distinct denied flows).
fn scan(lab: &Lab) {
    for port in [23u16, 25, 80, 139, 445] {
        let _ = lab.connect(port, Duration::from_millis(200));
    }
}

fn wait_quarantined(lab: &Lab, action: &str) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = lab.cli(&["quarantine", "list"])?;
        if list["pump-icu-01"]["action"] == action {
            return Ok(list);
        }
        if Instant::now() > deadline {
            bail!("pump-icu-01 not quarantined with {action}: {list}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn scanning_pump_is_isolated_and_released(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| policy(mac, false, Some("isolate")))?;
    lab.echo_servers(&[2575, 22])?;
    lab.start()?;
    let mut session = lab.connect(2575, Duration::from_millis(1000))?;
    assert!(
        round_trip(&mut session),
        "the pump's session works before the scan"
    );

    scan(&lab);
    let list = wait_quarantined(&lab, "isolate")?;
    assert_eq!(list["pump-icu-01"]["by"], "lazaret (automatic)");
    assert!(
        !round_trip(&mut session),
        "the isolated pump's session to the pump server was cut"
    );
    assert!(
        lab.connect(2575, Duration::from_millis(800)).is_err(),
        "no new pump-server session while isolated"
    );
    let mut jump = lab.connect(22, Duration::from_millis(1000))?;
    assert!(
        round_trip(&mut jump),
        "the biomed jump host is still reachable"
    );

    lab.release("pump-icu-01", "biomed checked the pump")?;
    let mut again = lab.connect(2575, Duration::from_millis(1000))?;
    assert!(round_trip(&mut again), "release restores the workflow");
    Ok(())
}

fn life_critical_device_with_the_default_action_is_alerted_never_cut_off(
    dataplane: Dataplane,
) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| policy(mac, true, None))?;
    lab.echo_servers(&[2575, 22])?;
    lab.start()?;
    let mut session = lab.connect(2575, Duration::from_millis(1000))?;
    scan(&lab);
    wait_quarantined(&lab, "alert")?;
    assert!(
        round_trip(&mut session),
        "the life-critical pump keeps its session"
    );
    assert!(
        lab.connect(2575, Duration::from_millis(1000)).is_ok(),
        "and may open new ones"
    );
    Ok(())
}

/// A UDP echo on the server's `port` for at most a minute.
fn udp_echo(lab: &Lab, port: u16) -> Result<()> {
    let s = lab
        .net
        .server
        .run(move || std::net::UdpSocket::bind(("10.10.0.20", port)))??;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut b = [0u8; 64];
        while Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut b) {
                let _ = s.send_to(&b[..n], from);
            }
        }
    });
    Ok(())
}

/// One UDP round trip from the pump to the server's `port`.
fn udp_round_trip(lab: &Lab, port: u16) -> Result<bool> {
    Ok(lab.net.device.run(move || -> std::io::Result<bool> {
        let s = std::net::UdpSocket::bind(("10.20.0.11", 0))?;
        s.set_read_timeout(Some(Duration::from_millis(800)))?;
        s.send_to(b"query", ("10.10.0.20", port))?;
        let mut b = [0u8; 16];
        Ok(s.recv_from(&mut b).is_ok_and(|(n, _)| &b[..n] == b"query"))
    })??)
}

fn isolated_pump_keeps_dns_and_ntp(dataplane: Dataplane) -> Result<()> {
    // The lab's server is the site's DNS resolver and NTP server too (docs/clinical-flows.md rows
    // 13 and 15); DHCP stays off (it does not cross the lab's router).
    let essentials = "dns_servers = [\"10.10.0.20\"]\nntp_servers = [\"10.10.0.20\"]";
    let mut lab = Lab::on(dataplane, |mac| {
        policy(mac, false, Some("isolate")).replace("dns = false\nntp = false", essentials)
    })?;
    for port in [53, 123, 514] {
        udp_echo(&lab, port)?;
    }
    lab.start()?;
    assert!(udp_round_trip(&lab, 53)?, "DNS before the scan");
    assert!(!udp_round_trip(&lab, 514)?, "not in the pump's workflows");
    scan(&lab);
    wait_quarantined(&lab, "isolate")?;
    assert!(
        udp_round_trip(&lab, 53)?,
        "DNS still resolves while isolated"
    );
    assert!(
        udp_round_trip(&lab, 123)?,
        "NTP still answers while isolated"
    );
    assert!(
        lab.connect(2575, Duration::from_millis(800)).is_err(),
        "but the pump server is cut off"
    );
    Ok(())
}

fn restrict_keeps_only_the_essential_workflows(dataplane: Dataplane) -> Result<()> {
    // The pump keeps its drug-library session (marked essential) under `restrict`; its
    // remote-service session (biomed SSH, not essential) is cut.
    let mut lab = Lab::on(dataplane, |mac| {
        policy(mac, false, Some("restrict"))
            .replace(
                "workflows = [\"pump-server-sync\"]",
                "workflows = [\"pump-server-sync\", \"remote-service\"]",
            )
            .replace(
                "description = \"Drug library, status and events\"",
                "description = \"Drug library, status and events\"\nessential = true",
            )
            + r#"
[workflows.remote-service]
description = "Biomed remote diagnostics over SSH"
[[workflows.remote-service.rules]]
device = "class:infusion-pump"
peer = "10.10.0.20/32"
proto = "tcp"
ports = [22]
initiator = "device"
"#
    })?;
    lab.echo_servers(&[2575, 22])?;
    lab.start()?;
    let mut essential = lab.connect(2575, Duration::from_millis(1000))?;
    let mut service = lab.connect(22, Duration::from_millis(1000))?;
    assert!(round_trip(&mut essential) && round_trip(&mut service));
    scan(&lab);
    wait_quarantined(&lab, "restrict")?;
    assert!(
        round_trip(&mut essential),
        "the essential workflow's session survives restrict"
    );
    assert!(
        !round_trip(&mut service),
        "the non-essential session is cut"
    );
    assert!(lab.connect(2575, Duration::from_millis(1000)).is_ok());
    assert!(lab.connect(22, Duration::from_millis(800)).is_err());
    Ok(())
}

fn quarantine_with_a_ttl_is_released_automatically(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| {
        policy(mac, false, Some("isolate")).replace(
            "action = \"isolate\" }",
            "action = \"isolate\", ttl = \"2s\" }",
        )
    })?;
    lab.echo_servers(&[2575])?;
    lab.start()?;
    scan(&lab);
    let list = wait_quarantined(&lab, "isolate")?;
    assert!(list["pump-icu-01"]["until"].is_u64(), "{list}");
    assert!(lab.connect(2575, Duration::from_millis(500)).is_err());
    // The daemon checks expiries every 5 s: released within the TTL plus one check.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if lab.cli(&["quarantine", "list"])?["pump-icu-01"].is_null() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the quarantine was not released after its ttl");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let mut s = lab.connect(2575, Duration::from_millis(1000))?;
    assert!(round_trip(&mut s), "the workflow works again");
    let audit = std::fs::read_to_string(lab.state_dir.join("audit.log"))?;
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"release\"") && l.contains("lazaret (ttl)")),
        "{audit}"
    );
    Ok(())
}
