//! Deviation detection end to end: a compromised infusion pump scans; after its policy's
//! threshold it is isolated within the same scan, its session to the pump server is cut,
//! the quarantine profile (the biomed jump host) still works, and a release restores it.
//! A life-critical device with the default action is only alerted, never cut off.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{fmt_mac, Lab},
    lazaret_bin,
};

fn policy(mac: [u8; 6], life_critical: bool, action: Option<&str>) -> String {
    let quarantine = match action {
        Some(a) => format!("quarantine = {{ after = 3, within = \"1m\", action = \"{a}\" }}"),
        None => "quarantine = { after = 3, within = \"1m\" }".to_string(),
    };
    format!(
        r#"
[site]
name = "quarantine lab"
unknown_devices = "deny"

[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true

[site.quarantine]
allow = [ {{ peer = "10.10.0.20/32", proto = "tcp", ports = [22], description = "biomed jump host" }} ]

[classes.infusion-pump]
description = "Large-volume infusion pumps"
workflows = ["pump-server-sync"]
{quarantine}

# CLINICAL-FLOWS row 8: the pump opens its session to the pump server (site port).
[workflows.pump-server-sync]
description = "Drug library, status and events"
[[workflows.pump-server-sync.rules]]
device = "class:infusion-pump"
peer = "10.10.0.20/32"
proto = "tcp"
ports = [2575]
initiator = "device"

[[devices]]
id = "pump-icu-01"
class = "infusion-pump"
mac = "{}"
ipv4 = "10.20.0.11"
life_critical = {life_critical}
"#,
        fmt_mac(mac)
    )
}

fn cli(lab: &Lab, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(lazaret_bin()?)
        .args(args)
        .arg("--config")
        .arg(&lab.config)
        .arg("--json")
        .output()?;
    if !out.status.success() {
        bail!("lazaret {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn servers(lab: &Lab) -> Result<()> {
    for port in [2575u16, 22] {
        let l = lab
            .net
            .server
            .run(move || TcpListener::bind(("10.10.0.20", port)))??;
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let _ = l.set_nonblocking(true);
            while Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        thread::spawn(move || {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                            let mut b = [0u8; 16];
                            while let Ok(n) = s.read(&mut b) {
                                if n == 0 || s.write_all(&b[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }
    Ok(())
}

fn connect(lab: &Lab, port: u16, ms: u64) -> std::io::Result<TcpStream> {
    lab.net
        .device
        .run(move || {
            TcpStream::connect_timeout(
                &SocketAddr::from(([10, 10, 0, 20], port)),
                Duration::from_millis(ms),
            )
        })
        .map_err(std::io::Error::other)?
}

fn round_trip(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut back = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut back).is_ok()
}

/// Scans five closed ports of the server (five distinct denied flows).
fn scan(lab: &Lab) {
    for port in [23u16, 25, 80, 139, 445] {
        let _ = connect(lab, port, 200);
    }
}

fn wait_quarantined(lab: &Lab, action: &str) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = cli(lab, &["quarantine", "list"])?;
        if list["pump-icu-01"]["action"] == action {
            return Ok(list);
        }
        if Instant::now() > deadline {
            bail!("pump-icu-01 not quarantined with {action}: {list}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scanning_pump_is_isolated_and_released() -> Result<()> {
    let mut lab = Lab::new(|mac| policy(mac, false, Some("isolate")))?;
    servers(&lab)?;
    lab.start()?;
    let mut session = connect(&lab, 2575, 1000)?;
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
        connect(&lab, 2575, 800).is_err(),
        "no new pump-server session while isolated"
    );
    let mut jump = connect(&lab, 22, 1000)?;
    assert!(
        round_trip(&mut jump),
        "the biomed jump host is still reachable"
    );

    cli(
        &lab,
        &[
            "quarantine",
            "release",
            "pump-icu-01",
            "--reason",
            "biomed checked the pump",
        ],
    )?;
    let mut again = connect(&lab, 2575, 1000)?;
    assert!(round_trip(&mut again), "release restores the workflow");
    Ok(())
}

#[test]
fn life_critical_device_with_the_default_action_is_alerted_never_cut_off() -> Result<()> {
    let mut lab = Lab::new(|mac| policy(mac, true, None))?;
    servers(&lab)?;
    lab.start()?;
    let mut session = connect(&lab, 2575, 1000)?;
    scan(&lab);
    wait_quarantined(&lab, "alert")?;
    assert!(
        round_trip(&mut session),
        "the life-critical pump keeps its session"
    );
    assert!(connect(&lab, 2575, 1000).is_ok(), "and may open new ones");
    Ok(())
}
