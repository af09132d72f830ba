//! The bridge lab both dataplanes' bridge tests run on: two devices (a monitor and its
//! central station) are ports of a Linux bridge on the gateway, one segment, VLAN 20 for
//! untagged frames. The policy binds both devices to the bridge and to VLAN 20 and allows
//! one workflow: the central station sends time sync (UDP 2000, docs/clinical-flows.md row 1) to the
//! monitor.

use std::{net::UdpSocket, path::PathBuf, time::Duration};

use anyhow::{bail, Result};

use crate::{
    daemon::fmt_mac,
    lazaret_bin,
    netns::{mac_of, unique_prefix, veth, wait_until, BpfMount, ChildGuard, Netns, TempDir},
};

pub const MONITOR: &str = "10.20.0.11";
pub const CENTRAL: &str = "10.20.0.10";

/// Field order is drop order: the daemon stops before its bpffs and directory go, and the
/// namespaces go last.
pub struct BridgeLab {
    pub daemon: Option<ChildGuard>,
    pub bpffs: BpfMount,
    pub tmp: TempDir,
    pub state: PathBuf,
    pub bridge: String,
    pub gw: Netns,
    pub mon: Netns,
    pub cs: Netns,
}

impl BridgeLab {
    /// The topology, the policy and a config with both ports (not started yet).
    pub fn new() -> Result<Self> {
        let p = unique_prefix();
        let gw = Netns::new(format!("{p}gw"))?;
        let mon = Netns::new(format!("{p}mon"))?;
        let cs = Netns::new(format!("{p}cs"))?;
        let (mon_port, cs_port) = (format!("{p}pm"), format!("{p}pc"));
        let mon_if = format!("{p}m");
        let cs_if = format!("{p}c");
        veth(
            &mon,
            &mon_if,
            Some(&format!("{MONITOR}/24")),
            &gw,
            &mon_port,
            None,
        )?;
        veth(
            &cs,
            &cs_if,
            Some(&format!("{CENTRAL}/24")),
            &gw,
            &cs_port,
            None,
        )?;
        let bridge = format!("{p}br");
        gw.exec(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        for port in [&mon_port, &cs_port] {
            gw.exec(&["ip", "link", "set", port, "master", &bridge])?;
        }
        gw.exec(&["ip", "link", "set", &bridge, "up"])?;
        let tmp = TempDir::new()?;
        let bpffs = BpfMount::new(&tmp.path)?;
        let policy_dir = tmp.path.join("policies");
        std::fs::create_dir_all(&policy_dir)?;
        std::fs::write(
            policy_dir.join("site.toml"),
            policy(&bridge, mac_of(&mon, &mon_if)?, mac_of(&cs, &cs_if)?),
        )?;
        let state = tmp.path.join("state");
        let mut config = format!(
            "policy_dir = \"{}\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n",
            policy_dir.display(),
            state.display(),
            bpffs.path.display(),
            tmp.path.join("control.sock").display()
        );
        for port in [&mon_port, &cs_port] {
            config.push_str(&format!(
                "[[interfaces]]\nname = \"{port}\"\nside = \"devices\"\nbridge = \"{bridge}\"\nvlan = 20\n"
            ));
        }
        std::fs::write(tmp.path.join("lazaret.toml"), config)?;
        Ok(BridgeLab {
            daemon: None,
            bpffs,
            tmp,
            state,
            bridge,
            gw,
            mon,
            cs,
        })
    }

    /// Starts `lazaret run` on the gateway, with `extra` prepended to the config (e.g.
    /// `dataplane = "nftables"`), and waits until it enforces.
    pub fn start(&mut self, extra: &str) -> Result<()> {
        let path = self.tmp.path.join("lazaret.toml");
        let config = std::fs::read_to_string(&path)?;
        std::fs::write(&path, format!("{extra}\n{config}"))?;
        let bin = lazaret_bin()?;
        let mut daemon = self.gw.spawn(&[
            bin.to_str().unwrap_or_default(),
            "run",
            "--config",
            path.to_str().unwrap_or_default(),
        ])?;
        let ready = self.state.join("ready");
        wait_until(Duration::from_secs(30), || {
            ready.exists() || !daemon.running()
        });
        if !ready.exists() {
            bail!("lazaret run did not start:\n{}", daemon.stop());
        }
        self.daemon = Some(daemon);
        Ok(())
    }

    /// What the daemon printed so far.
    pub fn output(&self) -> String {
        self.daemon
            .as_ref()
            .map(ChildGuard::output)
            .unwrap_or_default()
    }
}

/// Sends one datagram from `from` (bound to `src`) to `dst`:`port` in `to` and says whether
/// it arrived within 700 ms.
pub fn udp_arrives(
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

# docs/clinical-flows.md row 1: the central station broadcasts time to the monitors, UDP 2000.
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
ipv4 = "{MONITOR}"
vlan = 20
interface = "{bridge}"

[[devices]]
id = "cs-icu-01"
class = "central-station"
mac = "{}"
ipv4 = "{CENTRAL}"
vlan = 20
interface = "{bridge}"
"#,
        fmt_mac(monitor),
        fmt_mac(central)
    )
}
