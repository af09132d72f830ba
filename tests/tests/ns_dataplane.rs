//! The daemon with `dataplane = "nftables"`: the namespace tests of the XDP dataplane
//! (allowed flows and their replies, denied flows, unknown device, spoofed MAC, quarantine,
//! reload, invalid policy, `kill -9` and restart) against the nftables table instead.

use std::{net::IpAddr, thread, time::Duration};

use anyhow::Result;
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Lab},
    netns::{unique_prefix, Netns},
    nftlab::{list_text, tcp_probe},
};

fn policy(mac: [u8; 6], port: u16) -> String {
    monitor_policy(mac, &["results"], &workflow("results", "tcp", port))
}

fn nft_lab(port: u16) -> Result<Lab> {
    let mut lab = Lab::new(|mac| policy(mac, port))?;
    lab.use_dataplane("nftables")?;
    lab.start()?;
    lab.echo_servers(&[2575, 443])?;
    Ok(lab)
}

/// The value of a reason counter of lazaret's table in the gateway (the table's name
/// alternates between generations: `lazaret`, `lazaret_b`).
fn counter(lab: &Lab, name: &str) -> Result<u64> {
    let text = list_text(&lab.net.gateway)?;
    let Some(at) = text.find(&format!("counter {name} {{")) else {
        anyhow::bail!("no counter {name}: {text}");
    };
    Ok(text[at..]
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

const T: Duration = Duration::from_millis(600);

#[test]
fn allowed_denied_unknown_and_spoofed_traffic_on_nftables() -> Result<()> {
    let lab = nft_lab(2575)?;
    let listed = list_text(&lab.net.gateway)?;
    assert!(listed.contains("table inet lazaret"), "{listed}");
    let link = lab
        .net
        .gateway
        .exec(&["ip", "link", "show", &lab.net.gw_dev_if])?;
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "no XDP program on the interface in nftables mode"
    );
    let status = lab.cli(&["status"])?;
    assert_eq!(
        status["interfaces"][&lab.net.gw_dev_if], "nftables",
        "{status}"
    );

    // Allowed, with replies; denied.
    let mut s = lab.connect(2575, T)?;
    assert!(round_trip(&mut s), "allowed flow and its replies");
    assert!(lab.connect(443, T).is_err(), "443 is not in the policy");
    assert!(counter(&lab, "deny_no_rule")? > 0);

    // An unknown device on the device port: its own namespace and MAC, through a macvlan
    // on the device's veth. The device's own MAC with another address would be spoofing.
    let unk = Netns::new(format!("{}unk", unique_prefix()))?;
    let mv = format!("{}m", unique_prefix());
    lab.net.device.exec(&[
        "ip",
        "link",
        "add",
        "link",
        &lab.net.device_if,
        "name",
        &mv,
        "netns",
        &unk.name,
        "type",
        "macvlan",
        "mode",
        "bridge",
    ])?;
    unk.exec(&["ip", "addr", "add", "10.20.0.99/24", "dev", &mv])?;
    unk.exec(&["ip", "link", "set", &mv, "up"])?;
    unk.exec(&["ip", "route", "add", "default", "via", "10.20.0.1"])?;
    let unknown = "10.20.0.99".parse::<IpAddr>()?;
    let server = IpAddr::V4(lab.net.server_ip);
    assert!(
        !tcp_probe(&unk, unknown, server, 2575, T)?,
        "unknown device denied"
    );
    assert!(counter(&lab, "deny_unknown")? > 0);

    // The device's address from a foreign MAC: spoofing.
    let dev = &lab.net.device;
    let me = IpAddr::V4(lab.net.device_ip);
    dev.exec(&[
        "ip",
        "link",
        "set",
        "dev",
        &lab.net.device_if,
        "address",
        "02:00:5e:00:53:99",
    ])?;
    assert!(!tcp_probe(dev, me, server, 2575, T)?, "spoofed MAC denied");
    assert!(counter(&lab, "deny_spoof")? > 0);
    let mac = lazaret_tests::daemon::fmt_mac(lab.net.device_mac);
    dev.exec(&[
        "ip",
        "link",
        "set",
        "dev",
        &lab.net.device_if,
        "address",
        &mac,
    ])?;
    // The gateway may still hold the foreign MAC in its neighbor cache for a moment.
    let back = (0..10).any(|_| {
        thread::sleep(Duration::from_millis(100));
        tcp_probe(dev, me, server, 2575, T).unwrap_or(false)
    });
    assert!(back, "the real MAC is allowed again");
    Ok(())
}

#[test]
fn quarantine_reload_and_restart_on_nftables() -> Result<()> {
    let mut lab = nft_lab(2575)?;
    let mut s = lab.connect(2575, T)?;
    assert!(round_trip(&mut s));

    // Isolate: the established session is cut, new ones are refused; release restores.
    lab.cli(&[
        "quarantine",
        "add",
        "mon-icu-01",
        "--action",
        "isolate",
        "--reason",
        "test",
    ])?;
    assert!(!round_trip(&mut s), "isolation cuts the live session");
    assert!(lab.connect(2575, T).is_err(), "isolated: no new session");
    assert!(counter(&lab, "deny_quarantine")? > 0);
    lab.cli(&["quarantine", "release", "mon-icu-01", "--reason", "checked"])?;
    let mut s = lab.connect(2575, T)?;
    assert!(round_trip(&mut s), "released");

    // Reload to a policy that allows 443 instead: the 2575 session is cut.
    let gen = lab.ready_generation().unwrap_or(0);
    lab.write_policy(&policy(lab.net.device_mac, 443))?;
    lab.wait_generation(gen + 1, Duration::from_secs(10))?;
    assert!(!round_trip(&mut s), "the new policy cuts the 2575 session");
    assert!(
        lab.connect(2575, T).is_err(),
        "2575 denied after the reload"
    );
    let mut s443 = lab.connect(443, T)?;
    assert!(round_trip(&mut s443), "443 allowed after the reload");

    // An invalid policy changes nothing.
    lab.write_policy("[site\nname = ")?;
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(lab.ready_generation(), Some(gen + 1));
    assert!(
        round_trip(&mut s443),
        "still enforcing the last good policy"
    );

    // kill -9: the table stays and keeps enforcing; a restart replaces it without a gap.
    lab.write_policy(&policy(lab.net.device_mac, 443))?;
    lab.kill9();
    assert!(round_trip(&mut s443), "allowed session survives the kill");
    assert!(
        lab.connect(2575, T).is_err(),
        "denied while the daemon is down"
    );
    lab.start()?;
    assert!(
        round_trip(&mut s443),
        "allowed session survives the restart"
    );
    assert!(lab.connect(2575, T).is_err(), "denied after the restart");
    let listed = list_text(&lab.net.gateway)?;
    assert_eq!(listed.matches("table inet lazaret").count(), 1);

    // `lazaret detach` (run in the gateway's namespace) removes the table: nothing enforces.
    lab.stop();
    let bin = lazaret_tests::lazaret_bin()?;
    let config = lab.config.to_string_lossy().into_owned();
    lab.net.gateway.exec(&[
        bin.to_str().unwrap_or_default(),
        "detach",
        "--config",
        &config,
    ])?;
    assert!(!list_text(&lab.net.gateway)?.contains("table inet lazaret"));
    assert!(
        lab.connect(2575, T).is_ok(),
        "nothing enforces after detach"
    );
    Ok(())
}

fn pump_policy(mac: [u8; 6]) -> String {
    lazaret_tests::daemon::pump_policy("nft events lab", mac, Some("isolate"), false)
}

/// Polls the CLI until `f` accepts its reply (at most 5 s).
fn wait_cli(
    lab: &Lab,
    args: &[&str],
    f: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = lab.cli(args)?;
        if f(&v) {
            return Ok(v);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("lazaret {args:?} never showed it: {v}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nflog_events_report_unknown_devices_and_quarantine_a_scanner_on_nftables() -> Result<()> {
    let mut lab = Lab::new(pump_policy)?;
    lab.use_dataplane("nftables")?;
    lab.start()?;
    lab.echo_servers(&[2575, 22])?;
    let mut session = lab.connect(2575, T)?;
    assert!(round_trip(&mut session));

    // An unknown device: the table logs it, the controller lists it.
    let unk = Netns::new(format!("{}unk", unique_prefix()))?;
    let mv = format!("{}m", unique_prefix());
    lab.net.device.exec(&[
        "ip",
        "link",
        "add",
        "link",
        &lab.net.device_if,
        "name",
        &mv,
        "netns",
        &unk.name,
        "type",
        "macvlan",
        "mode",
        "bridge",
    ])?;
    unk.exec(&["ip", "addr", "add", "10.20.0.99/24", "dev", &mv])?;
    unk.exec(&["ip", "link", "set", &mv, "up"])?;
    unk.exec(&["ip", "route", "add", "default", "via", "10.20.0.1"])?;
    let server = IpAddr::V4(lab.net.server_ip);
    let _ = tcp_probe(&unk, "10.20.0.99".parse()?, server, 2575, T)?;
    let unknown = wait_cli(&lab, &["devices", "--unknown"], |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    })?;
    assert!(unknown.to_string().contains("10.20.0.99"), "{unknown}");

    // The pump scans: its denied flows arrive as events and isolate it; the live session
    // is cut and the quarantine profile (the jump host) still works.
    for port in [23u16, 25, 80, 139, 445] {
        let _ = lab.connect(port, Duration::from_millis(200));
    }
    wait_cli(&lab, &["quarantine", "list"], |v| {
        v["pump-icu-01"]["action"] == "isolate"
    })?;
    assert!(
        !round_trip(&mut session),
        "isolation cuts the pump's session"
    );
    let mut jump = lab.connect(22, T)?;
    assert!(
        round_trip(&mut jump),
        "the quarantine profile still reaches the jump host"
    );
    Ok(())
}

#[test]
fn auto_falls_back_to_nftables_where_xdp_cannot_attach() -> Result<()> {
    let mut lab = Lab::new(|mac| policy(mac, 2575))?;
    // Native XDP on a veth refuses an MTU above a page: with `xdp_mode = "native"` the
    // attach fails, and `dataplane = "auto"` must fall back.
    for (ns, ifname) in [
        (&lab.net.gateway, &lab.net.gw_dev_if),
        (&lab.net.device, &lab.net.device_if),
    ] {
        ns.exec(&["ip", "link", "set", "dev", ifname, "mtu", "9000"])?;
    }
    let config = std::fs::read_to_string(&lab.config)?.replacen(
        "side = \"devices\"\n",
        "side = \"devices\"\nxdp_mode = \"native\"\n",
        1,
    );
    std::fs::write(&lab.config, config)?;
    lab.use_dataplane("auto")?;
    lab.start()?;
    lab.echo_servers(&[2575, 443])?;
    let status = lab.cli(&["status"])?;
    assert_eq!(
        status["interfaces"][&lab.net.gw_dev_if], "nftables",
        "{status}"
    );
    assert_eq!(
        status["interfaces"][&lab.net.gw_up_if], "nftables",
        "{status}"
    );
    let listed = list_text(&lab.net.gateway)?;
    assert!(listed.contains("table inet lazaret"), "{listed}");
    let mut s = lab.connect(2575, T)?;
    assert!(
        round_trip(&mut s),
        "allowed flow and its replies after the fallback"
    );
    assert!(lab.connect(443, T).is_err(), "denied after the fallback");
    let metrics = metrics_text(&lab)?;
    assert!(
        metrics.contains(&format!(
            "lazaret_dataplane_info{{dataplane=\"nftables\",interface=\"{}\"}} 1",
            lab.net.gw_dev_if
        )),
        "{metrics}"
    );
    Ok(())
}

/// GET /metrics from inside the gateway namespace, as text.
fn metrics_text(lab: &Lab) -> Result<String> {
    use std::io::{Read, Write};
    Ok(lab.net.gateway.run(|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9464")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lazaret\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??)
}

#[test]
fn reloads_under_traffic_lose_nothing_on_nftables() -> Result<()> {
    use std::sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    };
    let mut lab = nft_lab(2575)?;
    let mut s = lab.connect(2575, T)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, broken) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let stream = {
        let (stop, ok, broken) = (stop.clone(), ok.clone(), broken.clone());
        thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                if !round_trip(&mut s) {
                    broken.store(true, Ordering::Relaxed);
                    break;
                }
                ok.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Two valid policies that both allow the stream, alternating, each reload waited for.
    let both = |mac| {
        monitor_policy(
            mac,
            &["results", "extra"],
            &(workflow("results", "tcp", 2575) + &workflow("extra", "tcp", 443)),
        )
    };
    let reloads = 30;
    const DENIES: [&str; 4] = ["deny_no_rule", "deny_no_flow", "deny_spoof", "deny_unknown"];
    let mut denied = 0;
    let mut which = Vec::new();
    for i in 0..reloads {
        let gen = lab.ready_generation().unwrap_or(0);
        let text = if i % 2 == 0 {
            both(lab.net.device_mac)
        } else {
            policy(lab.net.device_mac, 2575)
        };
        // The table's counters start from zero with each generation: add them up first.
        for c in DENIES {
            let n = counter(&lab, c)?;
            if n > 0 {
                which.push(format!("{c} {n} before reload {i}"));
            }
            denied += n;
        }
        lab.write_policy(&text)?;
        lab.signal(libc::SIGHUP);
        lab.wait_generation(gen + 1, Duration::from_secs(10))?;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stream.join();
    assert!(
        !broken.load(Ordering::Relaxed),
        "the allowed stream broke during {reloads} reloads"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "the stream ran: {}",
        ok.load(Ordering::Relaxed)
    );
    // Not one packet dropped: a retransmission would hide it from the stream, not from the
    // table's counters (up to the moment between reading them and each reload).
    for c in DENIES {
        let n = counter(&lab, c)?;
        if n > 0 {
            which.push(format!("{c} {n} at the end"));
        }
        denied += n;
    }
    assert_eq!(denied, 0, "packets dropped during the reloads: {which:?}");
    Ok(())
}

#[test]
fn switching_back_to_xdp_removes_the_table() -> Result<()> {
    let mut lab = nft_lab(2575)?;
    let mut s = lab.connect(2575, T)?;
    assert!(round_trip(&mut s));
    lab.kill9();
    let config = std::fs::read_to_string(&lab.config)?.replacen(
        "dataplane = \"nftables\"",
        "dataplane = \"xdp\"",
        1,
    );
    std::fs::write(&lab.config, config)?;
    lab.start()?;
    assert!(
        !list_text(&lab.net.gateway)?.contains("table inet lazaret"),
        "the nftables table is gone once XDP enforces"
    );
    let status = lab.cli(&["status"])?;
    assert_ne!(
        status["interfaces"][&lab.net.gw_dev_if], "nftables",
        "{status}"
    );
    let mut again = lab.connect(2575, T)?;
    assert!(round_trip(&mut again), "XDP allows the workflow");
    assert!(lab.connect(443, T).is_err(), "XDP denies the rest");
    Ok(())
}
