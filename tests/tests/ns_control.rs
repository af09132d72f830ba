//! The running daemon from the outside: the control API through the real CLI, metrics
//! scraped over HTTP and parsed as Prometheus text, and quarantine: a manual isolate cuts
//! the device's established session, survives `kill -9`, and a release restores it
//! (XDP only: `devices --live` and `flows` read the XDP maps). On both dataplanes, the
//! packet metrics count what was sent, and keep counting across a reload.

use std::{
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lazaret_abi::{Reason, SIDE_DEVICES};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Dataplane, Lab},
    on_both_dataplanes,
};

on_both_dataplanes!(packet_metrics_count_the_traffic_across_a_reload);

/// GET /metrics from inside the gateway namespace, parsed.
fn fetch_metrics(lab: &Lab) -> Result<prometheus_parse::Scrape> {
    let body = lab.metrics_text()?;
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Ok(prometheus_parse::Scrape::parse(lines)?)
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn control_api_metrics_and_quarantine() -> Result<()> {
    let mut lab = Lab::new(|mac| {
        monitor_policy(mac, &["hl7-results"], &workflow("hl7-results", "tcp", 2575))
    })?;
    lab.echo_servers(&[2575])?;
    lab.start()?;

    // Status through the CLI.
    let status = lab.cli(&["status"])?;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["devices"], 1);
    assert_eq!(
        status["interfaces"]
            .as_object()
            .map(serde_json::map::Map::len),
        Some(2)
    );

    // Traffic: one allowed session, one denied attempt.
    let mut session = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut session));
    let denied = lab.net.device.run(|| {
        TcpStream::connect_timeout(
            &SocketAddr::from(([10, 10, 0, 20], 22)),
            Duration::from_millis(800),
        )
    })?;
    assert!(denied.is_err());

    // Metrics, scraped and parsed, once the daemon has read the counters.
    let deadline = Instant::now() + Duration::from_secs(15);
    let scrape = loop {
        let s = fetch_metrics(&lab)?;
        if value(
            &s,
            "lazaret_packets_total",
            &[("reason", "allow_rule"), ("side", "devices")],
        ) == Some(1.0)
        {
            break s;
        }
        if Instant::now() > deadline {
            bail!("allow_rule never reached 1 in the metrics");
        }
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        value(
            &scrape,
            "lazaret_packets_total",
            &[("reason", "deny_no_rule"), ("side", "devices")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "lazaret_policy_info", &[("generation", "1")]),
        Some(1.0)
    );
    assert!(value(&scrape, "lazaret_build_info", &[]).is_some());
    assert_eq!(
        value(
            &scrape,
            "lazaret_interface_attached",
            &[("interface", lab.net.gw_dev_if.as_str())]
        ),
        Some(1.0)
    );

    // Live inventory: the monitor's counters.
    let live = lab.cli(&["devices", "--live"])?;
    let mon = live
        .as_array()
        .and_then(|d| d.iter().find(|x| x["id"] == "mon-icu-01").cloned())
        .context("mon-icu-01 listed")?;
    assert!(mon["allowed_packets"].as_u64().unwrap_or(0) >= 3, "{mon}");
    assert_eq!(mon["denied_packets"], 1, "{mon}");

    // An unknown device appears on the device port and is listed with its address.
    let gw_mac = lazaret_tests::netns::mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    // A frame from `mac` at 10.20.0.`host` opening a connection to the server's 443.
    let speak = |mac: [u8; 6], host: u8| {
        let frame = lazaret_tests::frames::tcp4(
            mac,
            gw_mac,
            std::net::Ipv4Addr::new(10, 20, 0, host),
            lab.net.server_ip,
            40000,
            443,
            lazaret_tests::frames::TCP_SYN,
        );
        lazaret_tests::netns::send_raw(&lab.net.device, &lab.net.device_if, vec![frame])
    };
    speak([0x02, 0x5e, 0, 0, 0, 0x42], 66)?;
    let unknown = unknown_listed(&lab, "02:5e:00:00:00:42")?;
    assert_eq!(unknown["addresses"][0], "10.20.0.66", "{unknown}");
    assert_eq!(unknown["flows"][0], "proto 6 10.10.0.20:443", "{unknown}");
    // A locally administered MAC is flagged as randomised, and names no vendor.
    assert_eq!(unknown["randomized"], true, "{unknown}");
    assert!(unknown.get("vendor").is_none(), "{unknown}");
    // One the IEEE assigned is listed with its vendor (the registry from ieee-data).
    speak([0x00, 0x22, 0x72, 0, 0, 0x43], 67)?;
    let vendor = unknown_listed(&lab, "00:22:72:00:00:43")?;
    assert_eq!(
        vendor["vendor"], "American Micro-Fuel Device Corp.",
        "{vendor}"
    );
    assert_eq!(vendor["randomized"], false, "{vendor}");

    // Flows of the device: the open session is there, confirmed by the kernel's real
    // handshake (the ACK acknowledged the SYN-ACK's ISN) and so in the established table.
    let flows = lab.cli(&["flows", "mon-icu-01"])?;
    assert!(
        flows.as_array().is_some_and(|f| f.iter().any(|x| {
            let to_server = x["b"].as_str() == Some("10.10.0.20:2575")
                || x["a"].as_str() == Some("10.10.0.20:2575");
            to_server && x["state"] == "established" && x["table"] == "established"
        })),
        "{flows}"
    );
    // Status reports the pressure of both flow tables.
    let maps = lab.cli(&["status"])?["maps"].clone();
    for table in [lazaret_abi::MAP_FLOWS, lazaret_abi::MAP_EST_FLOWS] {
        assert!(
            maps.as_array()
                .is_some_and(|m| m.iter().any(|x| x["map"] == table)),
            "{table} missing from {maps}"
        );
    }

    // Isolate: the established session is cut at once.
    lab.quarantine("mon-icu-01", "isolate", "test: lateral scan")?;
    assert!(
        !round_trip(&mut session),
        "the isolated device's session was cut"
    );
    assert!(
        lab.connect(2575, Duration::from_millis(800)).is_err(),
        "no new session while isolated"
    );

    // kill -9 and restart: the quarantine is kept.
    lab.kill9();
    lab.start()?;
    let list = lab.cli(&["quarantine", "list"])?;
    assert_eq!(list["mon-icu-01"]["action"], "isolate", "{list}");
    assert!(
        lab.connect(2575, Duration::from_millis(800)).is_err(),
        "still isolated after the restart"
    );

    // Release: the workflow works again, and the audit log has both events.
    lab.release("mon-icu-01", "test: cleared")?;
    let mut again = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut again));
    let audit = std::fs::read_to_string(lab.state_dir.join("audit.log"))?;
    assert_eq!(audit.lines().count(), 2, "{audit}");

    // An invalid policy is refused and visible in the metrics.
    let gen = lab.ready_generation();
    lab.write_policy("[site\nname = broken")?;
    lab.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = fetch_metrics(&lab)?;
        if value(&s, "lazaret_policy_last_reload_failed", &[]) == Some(1.0) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the failed reload never showed in the metrics");
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lab.ready_generation(), gen);
    assert!(
        round_trip(&mut again),
        "traffic unaffected by the refused policy"
    );
    Ok(())
}

/// Waits until `lazaret_packets_total{reason, side="devices"}` reads `want` (the daemon
/// reads the counters every 5 s).
fn wait_packets(lab: &Lab, reason: &str, want: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = fetch_metrics(lab)?;
        let got = value(
            &s,
            "lazaret_packets_total",
            &[("reason", reason), ("side", "devices")],
        );
        if got == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("lazaret_packets_total{{reason={reason}}} is {got:?}, not {want}");
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Denied SYNs to the server's tcp/22, each connect giving up before the kernel's first
/// retransmission (initial RTO 1 s): exactly one SYN each.
fn denied_syns(lab: &Lab, n: usize) {
    for _ in 0..n {
        assert!(lab.connect(22, Duration::from_millis(800)).is_err());
    }
}

fn packet_metrics_count_the_traffic_across_a_reload(dataplane: Dataplane) -> Result<()> {
    let policy = |mac, extra: bool| {
        let mut rules = workflow("hl7-results", "tcp", 2575);
        let mut wf = vec!["hl7-results"];
        if extra {
            wf.push("device-sync");
            rules += &workflow("device-sync", "udp", 5000);
        }
        monitor_policy(mac, &wf, &rules)
    };
    let mut lab = Lab::on(dataplane, |mac| policy(mac, false))?;
    lab.echo_servers(&[2575])?;
    lab.start()?;
    denied_syns(&lab, 3);
    let mut s = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut s));
    wait_packets(&lab, "deny_no_rule", 3.0)?;
    wait_packets(&lab, "allow_rule", 1.0)?;

    // A reload replaces the nftables table: the counts carry on from where they were. One
    // reload, through the watch (a SIGHUP as well would make two, and a packet counted by
    // the old table between the new one's start and the old one's deletion is not carried:
    // see docs/metrics.md).
    let gen = lab.ready_generation().context("generation")?;
    lab.write_policy(&policy(lab.net.device_mac, true))?;
    lab.wait_generation(gen + 1, Duration::from_secs(10))?;
    thread::sleep(Duration::from_millis(300));
    assert_eq!(lab.ready_generation(), Some(gen + 1), "one reload");
    assert_eq!(lab.packets(Reason::DenyNoRule, SIDE_DEVICES)?, 3);
    denied_syns(&lab, 2);
    let mut s2 = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut s2));
    wait_packets(&lab, "deny_no_rule", 5.0)?;
    wait_packets(&lab, "allow_rule", 2.0)?;
    assert_eq!(lab.packets(Reason::DenyNoRule, SIDE_DEVICES)?, 5);
    Ok(())
}

/// The entry of `lazaret devices --unknown` for `mac`, once it is listed (5 s at most).
fn unknown_listed(lab: &Lab, mac: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let u = lab.cli(&["devices", "--unknown"])?;
        let found = u
            .as_array()
            .and_then(|a| a.iter().find(|d| d["mac"] == mac).cloned());
        if let Some(d) = found {
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!("{mac} was never listed as an unknown device: {u}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}
