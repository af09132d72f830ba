//! Bridge deployment on the nftables dataplane: two devices are ports of a Linux bridge on
//! the gateway; `lazaret run` with `dataplane = "nftables"` enforces device-to-device
//! traffic on the segment (through br_netfilter, which the daemon turns on in its
//! namespace): the central station may send time sync (UDP 2000) to the monitor, nothing
//! else passes.

use std::{net::UdpSocket, time::Duration};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::fmt_mac,
    lazaret_bin,
    netns::{mac_of, unique_prefix, veth, wait_until, BpfMount, Netns, TempDir},
    nftlab::list_text,
};

fn policy(monitor: [u8; 6], central: [u8; 6]) -> String {
    format!(
        r#"
[site]
name = "bridge lab"
unknown_devices = "deny"
[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true
[classes.patient-monitor]
description = "Bedside monitors"
workflows = ["central-time-sync"]
[classes.central-station]
description = "Central station"
workflows = ["central-time-sync"]
# CLINICAL-FLOWS row 1: the central station sends time to the monitors, UDP 2000.
[workflows.central-time-sync]
description = "Central station time sync to bedside monitors"
[[workflows.central-time-sync.rules]]
device = "class:central-station"
peer = "class:patient-monitor"
proto = "udp"
ports = [2000]
[[devices]]
id = "mon-icu-01"
class = "patient-monitor"
mac = "{}"
ipv4 = "10.20.0.11"
[[devices]]
id = "cs-icu-01"
class = "central-station"
mac = "{}"
ipv4 = "10.20.0.10"
"#,
        fmt_mac(monitor),
        fmt_mac(central)
    )
}

fn udp_arrives(
    from: &Netns,
    src: &'static str,
    to: &Netns,
    dst: &'static str,
    port: u16,
) -> Result<bool> {
    let rx = to.run(move || UdpSocket::bind((dst, port)))??;
    rx.set_read_timeout(Some(Duration::from_millis(700)))?;
    let tx = from.run(move || UdpSocket::bind((src, 0)))??;
    tx.send_to(b"sync", (dst, port))?;
    let mut buf = [0u8; 16];
    Ok(rx.recv_from(&mut buf).is_ok())
}

#[test]
fn same_segment_traffic_is_enforced_on_a_bridge_by_nftables() -> Result<()> {
    let p = unique_prefix();
    let gw = Netns::new(format!("{p}gw"))?;
    let mon = Netns::new(format!("{p}mon"))?;
    let cs = Netns::new(format!("{p}cs"))?;
    let (mon_port, cs_port) = (format!("{p}pm"), format!("{p}pc"));
    veth(
        &mon,
        &format!("{p}m"),
        Some("10.20.0.11/24"),
        &gw,
        &mon_port,
        None,
    )?;
    veth(
        &cs,
        &format!("{p}c"),
        Some("10.20.0.10/24"),
        &gw,
        &cs_port,
        None,
    )?;
    let br = format!("{p}br");
    gw.exec(&["ip", "link", "add", &br, "type", "bridge"])?;
    for port in [&mon_port, &cs_port] {
        gw.exec(&["ip", "link", "set", port, "master", &br])?;
    }
    gw.exec(&["ip", "link", "set", &br, "up"])?;
    let monitor_mac = mac_of(&mon, &format!("{p}m"))?;
    let central_mac = mac_of(&cs, &format!("{p}c"))?;
    // Before lazaret: the segment is open.
    assert!(udp_arrives(&mon, "10.20.0.11", &cs, "10.20.0.10", 5000)?);

    let tmp = TempDir::new()?;
    let bpffs = BpfMount::new(&tmp.path)?;
    let policy_dir = tmp.path.join("policies");
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(
        policy_dir.join("site.toml"),
        policy(monitor_mac, central_mac),
    )?;
    let state = tmp.path.join("state");
    let config = tmp.path.join("lazaret.toml");
    std::fs::write(
        &config,
        format!(
            "dataplane = \"nftables\"\npolicy_dir = \"{}\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n\
             [[interfaces]]\nname = \"{mon_port}\"\nside = \"devices\"\n\
             [[interfaces]]\nname = \"{cs_port}\"\nside = \"devices\"\n",
            policy_dir.display(),
            state.display(),
            bpffs.path.display(),
            tmp.path.join("control.sock").display()
        ),
    )?;
    let bin = lazaret_bin()?;
    let mut daemon = gw.spawn(&[
        bin.to_str().unwrap_or_default(),
        "run",
        "--config",
        config.to_str().unwrap_or_default(),
    ])?;
    wait_until(Duration::from_secs(30), || {
        state.join("ready").exists() || !daemon.running()
    });
    if !state.join("ready").exists() {
        bail!("lazaret run did not become ready:\n{}", daemon.stop());
    }
    assert!(list_text(&gw)?.contains("table inet lazaret"));
    assert!(
        udp_arrives(&cs, "10.20.0.10", &mon, "10.20.0.11", 2000)?,
        "time sync from the central station passes"
    );
    let passed = udp_arrives(&mon, "10.20.0.11", &cs, "10.20.0.10", 2000)?;
    assert!(
        !passed,
        "the monitor may not open flows to the central station:\n{}\n{}",
        String::from_utf8_lossy(
            &gw.exec(&["sysctl", "net.bridge.bridge-nf-call-iptables"])?
                .stdout
        ),
        list_text(&gw)?
    );
    assert!(
        !udp_arrives(&cs, "10.20.0.10", &mon, "10.20.0.11", 5000)?,
        "other ports are denied on the segment"
    );
    daemon.stop();
    Ok(())
}
