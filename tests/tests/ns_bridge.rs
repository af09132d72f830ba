//! Bridge deployment: two devices are ports of a Linux bridge on the gateway, on one
//! segment. Device-to-device traffic never crosses a router, and lazaret still enforces it:
//! the central station may send time sync (UDP 2000) to the monitor, nothing else passes.
//! The devices are bound to the bridge and to VLAN 20 in the policy; the ports are
//! configured as ports of that bridge whose untagged frames are VLAN 20 (an access segment),
//! so the bindings hold for frames that arrive on the ports untagged.

use std::{net::UdpSocket, time::Duration};

use anyhow::Result;
use lazaret_tests::{
    daemon::fmt_mac,
    lazaret_bin,
    netns::{mac_of, unique_prefix, veth, wait_until, BpfMount, Netns, TempDir},
};

fn policy(bridge: &str, monitor: [u8; 6], central: [u8; 6]) -> String {
    format!(
        r#"
[site]
name = "bridge lab"
unknown_devices = "deny"

[site.interfaces."{bridge}"]
side = "devices"
networks = ["10.20.0.0/24"]

[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true

[classes.patient-monitor]
description = "Bedside monitors"
workflows = ["central-time-sync"]

[classes.central-station]
description = "Central station (master node)"
workflows = ["central-time-sync"]

# CLINICAL-FLOWS row 1: the central station broadcasts time to the monitors, UDP 2000.
[workflows.central-time-sync]
description = "Central station time sync to bedside monitors"
[[workflows.central-time-sync.rules]]
device = "class:central-station"
peer = "class:patient-monitor"
proto = "udp"
ports = [2000]
initiator = "device"

[[devices]]
id = "mon-icu-01"
class = "patient-monitor"
mac = "{}"
ipv4 = "10.20.0.11"
vlan = 20
interface = "{bridge}"

[[devices]]
id = "cs-icu-01"
class = "central-station"
mac = "{}"
ipv4 = "10.20.0.10"
vlan = 20
interface = "{bridge}"
"#,
        fmt_mac(monitor),
        fmt_mac(central)
    )
}

/// Sends one datagram from `from` to `to`:port and says whether it arrived.
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
fn same_segment_traffic_is_enforced_on_a_bridge() -> Result<()> {
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

    let tmp = TempDir::new()?;
    let bpffs = BpfMount::new(&tmp.path)?;
    let policy_dir = tmp.path.join("policies");
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(
        policy_dir.join("site.toml"),
        policy(&br, monitor_mac, central_mac),
    )?;
    let state = tmp.path.join("state");
    let config = tmp.path.join("lazaret.toml");
    std::fs::write(
        &config,
        format!(
            "policy_dir = \"{}\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n\
             [[interfaces]]\nname = \"{mon_port}\"\nside = \"devices\"\nbridge = \"{br}\"\nvlan = 20\n\
             [[interfaces]]\nname = \"{cs_port}\"\nside = \"devices\"\nbridge = \"{br}\"\nvlan = 20\n",
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
    assert!(
        state.join("ready").exists(),
        "lazaret run did not start:\n{}",
        daemon.stop()
    );

    // Allowed: the central station opens time sync to the monitor (ARP passes too).
    assert!(
        udp_arrives(&cs, "10.20.0.10", &mon, "10.20.0.11", 2000)?,
        "time sync delivered\n{}",
        daemon.output()
    );
    // The reverse direction is not a workflow: the monitor may not open UDP 2000.
    assert!(
        !udp_arrives(&mon, "10.20.0.11", &cs, "10.20.0.10", 2000)?,
        "monitor → central station dropped"
    );
    // Another port between the same two devices: dropped.
    assert!(
        !udp_arrives(&cs, "10.20.0.10", &mon, "10.20.0.11", 2001)?,
        "other port dropped"
    );
    // Both were dropped by lazaret's rules, not lost elsewhere.
    let pins = bpffs.path.join(format!("v{}", lazaret_abi::ABI_VERSION));
    let stats = lazaret::datapath::Datapath::pinned_stats(&pins)?;
    let no_rule =
        stats[lazaret_abi::stats_index(lazaret_abi::Reason::DenyNoRule, lazaret_abi::SIDE_DEVICES)
            as usize];
    assert_eq!(
        no_rule, 2,
        "the two refused datagrams were dropped by the policy"
    );
    daemon.signal(libc::SIGTERM);
    let _ = std::fs::remove_dir_all(bpffs.path.join(format!("v{}", lazaret_abi::ABI_VERSION)));
    Ok(())
}
