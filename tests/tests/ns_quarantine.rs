//! Deviation detection end to end: a compromised infusion pump scans; after its policy's
//! threshold it is isolated within the same scan, its session to the pump server is cut,
//! the quarantine profile (the biomed jump host) still works, and a release restores it.
//! A life-critical device with the default action is only alerted, never cut off. An
//! isolated pump still reaches the site's DNS and NTP servers. Frames the pump did not send
//! (or that prove nothing about who sent them) are reported in its name but never
//! quarantine it. On both dataplanes (on nftables the denied flows arrive as nflog events).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{followed, pump_policy, round_trip, Dataplane, Lab},
    frames::{tcp4, udp4, with_l4_checksum4},
    netns::{mac_of, wait_until, RawSocket},
    on_both_dataplanes,
};

on_both_dataplanes!(
    scanning_pump_is_isolated_and_released,
    life_critical_device_with_the_default_action_is_alerted_never_cut_off,
    isolated_pump_keeps_dns_and_ntp,
    restrict_keeps_only_the_essential_workflows,
    quarantine_with_a_ttl_is_released_automatically,
    frames_the_pump_did_not_send_never_quarantine_it,
    packets_of_no_flow_are_reported_and_quarantine_nobody,
    a_narrowed_workflow_cuts_sessions_and_quarantines_nobody,
    a_device_known_by_its_mac_alone_is_isolated_with_its_sessions,
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
    isolated_then_released(&lab, &mut session)
}

/// The isolated pump's live `session` is cut, no new pump-server session opens, the biomed
/// jump host is still reached, and a release restores the workflow.
fn isolated_then_released(lab: &Lab, session: &mut TcpStream) -> Result<()> {
    assert!(
        !round_trip(session),
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

/// The pump known by its MAC alone (addressed by DHCP, no `ipv4` in the inventory):
/// isolated, its live session to the pump server is cut, no new one opens, the jump host is
/// still reached, and a release restores the workflow. On nftables the session kept
/// passing as an admitted flow: the quarantine sets held only addresses (found by a
/// review); they now hold the MACs of quarantined devices too.
fn a_device_known_by_its_mac_alone_is_isolated_with_its_sessions(
    dataplane: Dataplane,
) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| {
        let bound = policy(mac, false, Some("isolate"));
        let mac_only = bound.replace("ipv4 = \"10.20.0.11\"\n", "");
        assert_ne!(bound, mac_only, "the pump's address is unbound");
        mac_only
    })?;
    lab.echo_servers(&[2575, 22])?;
    lab.start()?;
    let mut session = lab.connect(2575, Duration::from_millis(1000))?;
    assert!(round_trip(&mut session), "the pump's session works");
    lab.quarantine("pump-icu-01", "isolate", "test")?;
    // Nor is a session another host opens to its address opened: the address it owns by
    // first use names it, and its quarantine refuses the server's SYN (its answers, its own
    // packets, would be refused too).
    let pump = SocketAddr::from(([10, 20, 0, 11], 7000));
    let listener = lab.net.device.run(move || TcpListener::bind(pump))??;
    let inbound = lab
        .net
        .server
        .run(move || TcpStream::connect_timeout(&pump, Duration::from_millis(800)))?;
    assert!(
        inbound.is_err(),
        "a session from upstream to the isolated pump opened"
    );
    drop(listener);
    isolated_then_released(&lab, &mut session)
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

/// A monitor on the pump's network whose workflow lets it open flows to the pump's address
/// (a prefix: the rule grants the pump nothing, so the pump's policy refuses them as the
/// responder).
const MONITOR_TO_PUMP: &str = r#"
[classes.patient-monitor]
description = "Bedside monitors"
workflows = ["monitor-to-pump"]

[workflows.monitor-to-pump]
description = "lab: the monitor opens flows to the pump's address"
[[workflows.monitor-to-pump.rules]]
device = "class:patient-monitor"
peer = "10.20.0.11/32"
proto = "tcp"
ports = [3000, 3001, 3002, 3003, 3004, 3005]

[[devices]]
id = "mon-icu-05"
class = "patient-monitor"
mac = "02:00:00:00:00:55"
ipv4 = "10.20.0.55"
"#;

/// Anyone who could have a device isolated by sending frames in its name could cut off a
/// pump mid-therapy at will. Six kinds of frame name the pump, each on six distinct
/// flows, twice its threshold: a host upstream opening connections to it; a made-up MAC on
/// its port claiming its address; its own MAC and address with SYN and FIN together
/// (refused by the parser, before identity); its own MAC as a DHCP server (refused before
/// identity too); and a made-up MAC claiming its address from upstream. Every kind is
/// dropped and its events reach the controller, naming the pump where the dataplane does;
/// none quarantines it. Then the pump's own scan does, in the same minute: the detector
/// was listening all along.
fn frames_the_pump_did_not_send_never_quarantine_it(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| {
        policy(mac, false, Some("isolate")) + MONITOR_TO_PUMP
    })?;
    lab.start()?;
    let follower = lab.follow_events()?;
    let pump_ip = lab.net.device_ip;
    let server = lab.net.server_ip;
    let pump_mac = lab.net.device_mac;
    let stranger = [0x02, 0x66, 0, 0, 0, 0x01];
    let gw_dev = mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let gw_up = mac_of(&lab.net.gateway, &lab.net.gw_up_if)?;
    let ports = 3000u16..3006;

    // Upstream: the server opens connections to the pump (no workflow lets it).
    lab.net.server.run(move || {
        for port in 3000u16..3006 {
            let to = std::net::SocketAddr::from((pump_ip, port));
            let _ = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(150));
        }
    })?;
    // The pump's port: a stranger with the pump's address; the pump's MAC and address with
    // SYN+FIN; the pump's MAC as a DHCP server.
    let mut frames = Vec::new();
    for (i, port) in ports.clone().enumerate() {
        let sport = 41000 + i as u16;
        frames.push(with_l4_checksum4(tcp4(
            stranger, gw_dev, pump_ip, server, sport, port, 0x02,
        )));
        frames.push(with_l4_checksum4(tcp4(
            pump_mac, gw_dev, pump_ip, server, sport, port, 0x03,
        )));
        frames.push(with_l4_checksum4(udp4(
            pump_mac, gw_dev, pump_ip, server, 67, port,
        )));
        frames.push(with_l4_checksum4(tcp4(
            [0x02, 0, 0, 0, 0, 0x55],
            gw_dev,
            std::net::Ipv4Addr::new(10, 20, 0, 55),
            pump_ip,
            sport,
            port,
            0x02,
        )));
    }
    let sock = RawSocket::open(&lab.net.device, &lab.net.device_if)?;
    for f in &frames {
        sock.send(f)?;
    }
    // Upstream again: a stranger with the pump's address (devices are never upstream).
    let up = RawSocket::open(&lab.net.server, &lab.net.server_if)?;
    for (i, port) in ports.enumerate() {
        up.send(&with_l4_checksum4(tcp4(
            stranger,
            gw_up,
            pump_ip,
            server,
            42000 + i as u16,
            port,
            0x02,
        )))?;
    }

    // Every kind was reported: the controller saw them all.
    let reported = |reason: &str, named: bool| {
        followed(&follower)
            .iter()
            .filter(|v| v["reason"] == reason && (!named || v["device"] == "pump-icu-01"))
            .count()
    };
    let all_reported = || {
        reported("deny_no_rule", true) >= 12
            && reported("deny_spoof", true) >= 12
            && reported("deny_tcp_flags", false) >= 6
            && reported("deny_rogue_dhcp", true) >= 6
    };
    wait_until(Duration::from_secs(5), all_reported);
    // The detector had them all a moment ago (or the pump was quarantined before they all
    // came, and the rest were refused as quarantined): a quarantine would be listed now.
    wait_until(Duration::from_secs(2), || quarantined(&lab));
    let list = lab.cli(&["quarantine", "list"])?;
    assert!(
        list.as_object().is_some_and(serde_json::Map::is_empty),
        "{}: frames the pump did not send quarantined it (or the monitor): {list}",
        dataplane.name()
    );

    assert!(
        all_reported(),
        "{}: not every kind was reported: deny_no_rule {}, deny_spoof {}, deny_tcp_flags {}, deny_rogue_dhcp {}",
        dataplane.name(),
        reported("deny_no_rule", true),
        reported("deny_spoof", true),
        reported("deny_tcp_flags", false),
        reported("deny_rogue_dhcp", true),
    );
    scan(&lab);
    let list = wait_quarantined(&lab, "isolate")?;
    assert_eq!(list["pump-icu-01"]["by"], "lazaret (automatic)");
    Ok(())
}

/// Packets of no flow (an ACK scan, a FIN scan: six ports each) are reported on both
/// dataplanes (nftables dropped them unreported: conntrack calls the FIN ones invalid), but
/// are not evidence: a retransmission or keepalive of a flow the gateway removed or forgot
/// is one, and the device did not choose it. The pump's SYN scan then quarantines it.
fn packets_of_no_flow_are_reported_and_quarantine_nobody(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| policy(mac, false, Some("isolate")))?;
    lab.start()?;
    let follower = lab.follow_events()?;
    let gw_dev = mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let (pump_mac, pump_ip, server) = (lab.net.device_mac, lab.net.device_ip, lab.net.server_ip);
    let sock = RawSocket::open(&lab.net.device, &lab.net.device_if)?;
    for (flags, base) in [(0x10u8, 43000u16), (0x01, 44000)] {
        for (i, port) in (3000u16..3006).enumerate() {
            sock.send(&with_l4_checksum4(tcp4(
                pump_mac,
                gw_dev,
                pump_ip,
                server,
                base + i as u16,
                port,
                flags,
            )))?;
        }
    }
    let no_flow = || {
        followed(&follower)
            .into_iter()
            .filter(|v| v["reason"] == "deny_no_flow" && v["device"] == "pump-icu-01")
            .count()
    };
    wait_until(Duration::from_secs(5), || no_flow() >= 12);
    assert!(
        no_flow() >= 12,
        "{}: {} of the 12 packets of no flow reported",
        dataplane.name(),
        no_flow()
    );
    wait_until(Duration::from_secs(2), || quarantined(&lab));
    assert!(!quarantined(&lab), "{}: quarantined", dataplane.name());
    scan(&lab);
    wait_quarantined(&lab, "isolate")?;
    Ok(())
}

/// Whether any device is in quarantine.
fn quarantined(lab: &Lab) -> bool {
    lab.cli(&["quarantine", "list"])
        .map(|l| l.as_object().is_some_and(|o| !o.is_empty()))
        .unwrap_or(true)
}

/// The pump's class with three more services on the pump server (a workflow a reload then
/// takes away).
fn with_extra_workflow(mac: [u8; 6]) -> String {
    policy(mac, false, Some("isolate")).replace(
        "workflows = [\"pump-server-sync\"]",
        "workflows = [\"pump-server-sync\", \"pump-extra\"]",
    ) + r#"
[workflows.pump-extra]
description = "lab: three more services on the pump server"
[[workflows.pump-extra.rules]]
device = "class:infusion-pump"
peer = "10.10.0.20/32"
proto = "tcp"
ports = [3000, 3001, 3002]
initiator = "device"
[[workflows.pump-extra.rules]]
device = "class:infusion-pump"
peer = "10.10.0.20/32"
proto = "udp"
ports = [3003, 3004, 3005]
initiator = "device"
"#
}

/// A reload that narrows the pump's workflows moves the policy, not the pump: its three
/// sessions and three one-way UDP streams the new policy refuses are cut when judged again,
/// each reported as such (`rejudged`), its application's reconnects to them are refused,
/// and nobody is quarantined — three distinct refused flows would otherwise isolate the pump (and, on
/// nftables, its peer's replies counted against the pump too).
fn a_narrowed_workflow_cuts_sessions_and_quarantines_nobody(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, with_extra_workflow)?;
    lab.echo_servers(&[3000, 3001, 3002])?;
    lab.start()?;
    let follower = lab.follow_events()?;
    let mut sessions = Vec::new();
    for port in [3000u16, 3001, 3002] {
        let mut s = lab.connect(port, Duration::from_millis(1000))?;
        assert!(round_trip(&mut s), "session to {port} before the reload");
        sessions.push(s);
    }
    // Three one-way UDP flows (a device streaming to a collector that never answers):
    // conntrack keeps such a flow `new` while it is unreplied, so its packets after the
    // reload look like new flows' unless the table asks whether the flow was admitted.
    const STREAMS: [u16; 3] = [3003, 3004, 3005];
    let sinks = lab
        .net
        .server
        .run(|| -> std::io::Result<Vec<std::net::UdpSocket>> {
            STREAMS
                .iter()
                .map(|&p| std::net::UdpSocket::bind(("10.10.0.20", p)))
                .collect()
        })??;
    let from = lab
        .net
        .device
        .run(|| std::net::UdpSocket::bind(("10.20.0.11", 0)))??;
    let stream = |what: &[u8]| -> Result<()> {
        for p in STREAMS {
            from.send_to(what, ("10.10.0.20", p))?;
        }
        Ok(())
    };
    // What arrived at each collector within `wait`.
    let arrived = |wait: Duration| -> Result<usize> {
        let mut buf = [0u8; 16];
        let mut n = 0;
        for s in &sinks {
            s.set_read_timeout(Some(wait))?;
            n += usize::from(s.recv_from(&mut buf).is_ok());
        }
        Ok(n)
    };
    stream(b"before")?;
    assert_eq!(
        arrived(Duration::from_millis(1000))?,
        3,
        "{}: the one-way UDP flows before the reload",
        dataplane.name()
    );
    let gen = lab.ready_generation().unwrap_or(1);
    lab.write_policy(&policy(lab.net.device_mac, false, Some("isolate")))?;
    lab.signal(libc::SIGHUP);
    lab.wait_generation(gen + 1, Duration::from_secs(10))?;
    for (s, port) in sessions.iter_mut().zip([3000u16, 3001, 3002]) {
        assert!(
            !round_trip(s),
            "{}: the session to {port} survived the workflow's removal",
            dataplane.name()
        );
    }
    // The streams go on after the reload, twice each: refused, and their flows cut.
    stream(b"after1")?;
    stream(b"after2")?;
    assert_eq!(
        arrived(Duration::from_millis(300))?,
        0,
        "{}: one-way UDP flows passed after their workflow's removal",
        dataplane.name()
    );
    // Each kind reported as judged again: the sessions (their retransmissions are
    // reported too, so they are counted apart) and every one of the streams.
    let cut = |proto: u64| {
        let mut ports: Vec<String> = followed(&follower)
            .into_iter()
            .filter(|v| {
                v["reason"] == "deny_no_rule" && v["rejudged"] == true && v["proto"] == proto
            })
            .filter_map(|v| v["dst"].as_str().map(str::to_string))
            .collect();
        ports.sort();
        ports.dedup();
        ports.len()
    };
    wait_until(Duration::from_secs(5), || cut(6) >= 3 && cut(17) >= 3);
    assert!(
        cut(6) >= 3 && cut(17) >= 3,
        "{}: {} cut sessions and {} cut streams reported as judged again (of 3 each)",
        dataplane.name(),
        cut(6),
        cut(17)
    );
    // The pump's application reconnects: refused (and reported), but the same flows.
    for port in [3000u16, 3001, 3002] {
        assert!(
            lab.connect(port, Duration::from_millis(300)).is_err(),
            "{}: reconnecting to {port} was allowed",
            dataplane.name()
        );
    }
    wait_until(Duration::from_secs(2), || quarantined(&lab));
    let list = lab.cli(&["quarantine", "list"])?;
    assert!(
        !quarantined(&lab),
        "{}: a narrowed workflow quarantined: {list}",
        dataplane.name()
    );
    Ok(())
}
