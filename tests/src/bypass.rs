//! The bypass lab: a strict policy on a bridge segment, a compromised device on one port,
//! its neighbour on another, a server behind the gateway, and observers that capture what
//! arrives. The scenarios of `ns_bypass.rs` send crafted frames from the attacker's port and
//! look on the far side: the frame must not arrive, and the neighbour's caches and addresses
//! must not change.
//!
//! ```text
//!  att (mon-icu-01) ── pa ┐
//!                         br (10.20.0.1, fd00:20::1) ── gateway ── up (10.10.0.1) ── srv (.20, .21)
//!  bys (mon-icu-02) ── pb ┘
//! ```
//!
//! Both monitors are bound to the bridge and VLAN 20 (the ports are access ports, `vlan =
//! 20`); their one workflow is HL7 results, TCP 2575 to 10.10.0.20 and fd00:10::20. The
//! quarantine threshold is out of reach, so a scenario's denied frames do not isolate the
//! attacker unless the scenario does.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    daemon::{fmt_mac, Dataplane},
    frames::Mac,
    lazaret_bin,
    netns::{
        mac_of, send_raw, unique_prefix, veth, wait_until, BpfMount, ChildGuard, Netns, RawSocket,
        TempDir,
    },
};

pub const ATT_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 11);
pub const BYS_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 12);
pub const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 20);
/// A host behind the gateway no workflow reaches.
pub const DENIED: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 21);
pub const ATT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 0x11);
pub const BYS_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 0x12);
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x20);
pub const HL7: u16 = 2575;

/// Field order is drop order: the daemon stops first, the namespaces go last.
pub struct BypassLab {
    pub daemon: Option<ChildGuard>,
    pub dataplane: Dataplane,
    pub bpffs: BpfMount,
    pub tmp: TempDir,
    pub state: PathBuf,
    pub config: PathBuf,
    pub bridge: String,
    /// The attacker's and the bystander's interfaces in their namespaces, the gateway's
    /// ports for them, and the server's interface.
    pub att_if: String,
    pub bys_if: String,
    pub att_port: String,
    pub bys_port: String,
    pub srv_if: String,
    /// The gateway's upstream interface.
    pub up_if: String,
    pub att_mac: Mac,
    pub bys_mac: Mac,
    /// The bridge's MAC: the gateway as the devices see it.
    pub gw_mac: Mac,
    pub gw: Netns,
    pub att: Netns,
    pub bys: Netns,
    pub srv: Netns,
}

impl BypassLab {
    /// Builds the topology and starts `lazaret run` on `dataplane`.
    pub fn start(dataplane: Dataplane) -> Result<Self> {
        let p = unique_prefix();
        let gw = Netns::new(format!("{p}gw"))?;
        let att = Netns::new(format!("{p}att"))?;
        let bys = Netns::new(format!("{p}bys"))?;
        let srv = Netns::new(format!("{p}srv"))?;
        let (att_if, att_port) = (format!("{p}a"), format!("{p}pa"));
        let (bys_if, bys_port) = (format!("{p}b"), format!("{p}pb"));
        let (srv_if, up_if) = (format!("{p}s"), format!("{p}up"));
        let bridge = format!("{p}br");
        veth(&att, &att_if, None, &gw, &att_port, None)?;
        veth(&bys, &bys_if, None, &gw, &bys_port, None)?;
        veth(&srv, &srv_if, None, &gw, &up_if, None)?;
        gw.exec(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        for port in [&att_port, &bys_port] {
            gw.exec(&["ip", "link", "set", port, "master", &bridge])?;
        }
        gw.exec(&["ip", "link", "set", &bridge, "up"])?;
        let addr = |ns: &Netns, a: &str, dev: &str| -> Result<()> {
            ns.exec(&["ip", "addr", "add", a, "dev", dev, "nodad"])?;
            Ok(())
        };
        addr(&gw, "10.20.0.1/24", &bridge)?;
        addr(&gw, "fd00:20::1/64", &bridge)?;
        addr(&gw, "10.10.0.1/24", &up_if)?;
        addr(&gw, "fd00:10::1/64", &up_if)?;
        addr(&att, "10.20.0.11/24", &att_if)?;
        addr(&att, "fd00:20::11/64", &att_if)?;
        addr(&bys, "10.20.0.12/24", &bys_if)?;
        addr(&bys, "fd00:20::12/64", &bys_if)?;
        for a in [
            "10.10.0.20/24",
            "10.10.0.21/24",
            "fd00:10::20/64",
            "fd00:10::21/64",
        ] {
            addr(&srv, a, &srv_if)?;
        }
        for ns in [&att, &bys] {
            ns.exec(&["ip", "route", "add", "default", "via", "10.20.0.1"])?;
            ns.exec(&["ip", "-6", "route", "add", "default", "via", "fd00:20::1"])?;
        }
        srv.exec(&["ip", "route", "add", "default", "via", "10.10.0.1"])?;
        srv.exec(&["ip", "-6", "route", "add", "default", "via", "fd00:10::1"])?;
        gw.set_sysctl("net.ipv4.ip_forward", "1")?;
        gw.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let att_mac = mac_of(&att, &att_if)?;
        let bys_mac = mac_of(&bys, &bys_if)?;
        let gw_mac = mac_of(&gw, &bridge)?;

        let tmp = TempDir::new()?;
        let bpffs = BpfMount::new(&tmp.path)?;
        let policy_dir = tmp.path.join("policies");
        std::fs::create_dir_all(&policy_dir)?;
        std::fs::write(
            policy_dir.join("site.toml"),
            policy(&bridge, &up_if, att_mac, bys_mac),
        )?;
        let state = tmp.path.join("state");
        let config = tmp.path.join("lazaret.toml");
        let mut text = format!(
            "dataplane = \"{}\"\npolicy_dir = \"{}\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n",
            dataplane.name(),
            policy_dir.display(),
            state.display(),
            bpffs.path.display(),
            tmp.path.join("control.sock").display()
        );
        for port in [&att_port, &bys_port] {
            text.push_str(&format!(
                "[[interfaces]]\nname = \"{port}\"\nside = \"devices\"\nbridge = \"{bridge}\"\nvlan = 20\n"
            ));
        }
        text.push_str(&format!(
            "[[interfaces]]\nname = \"{up_if}\"\nside = \"upstream\"\n"
        ));
        std::fs::write(&config, text)?;
        let mut lab = BypassLab {
            daemon: None,
            dataplane,
            bpffs,
            tmp,
            state,
            config,
            bridge,
            att_if,
            bys_if,
            att_port,
            bys_port,
            srv_if,
            up_if,
            att_mac,
            bys_mac,
            gw_mac,
            gw,
            att,
            bys,
            srv,
        };
        let bin = lazaret_bin()?;
        let mut daemon = lab.gw.spawn(&[
            bin.to_str().context("binary path")?,
            "run",
            "--config",
            lab.config.to_str().context("config path")?,
        ])?;
        let ready = lab.state.join("ready");
        wait_until(Duration::from_secs(30), || {
            ready.exists() || !daemon.running()
        });
        if !ready.exists() {
            bail!("lazaret run did not start:\n{}", daemon.stop());
        }
        lab.daemon = Some(daemon);
        // The devices speak first from their own ports (as they would long before an
        // attack), so each is known where it is: resolved neighbours, pinned ports.
        for (ns, src) in [(&lab.att, ATT_IP), (&lab.bys, BYS_IP)] {
            let _ = crate::nftlab::tcp_probe(
                ns,
                IpAddr::V4(src),
                IpAddr::V4(SERVER),
                HL7,
                Duration::from_millis(500),
            );
        }
        Ok(lab)
    }

    /// The generation the daemon enforces (its ready file).
    pub fn generation(&self) -> Result<u64> {
        let text = std::fs::read_to_string(self.state.join("ready"))?;
        text.trim()
            .parse()
            .with_context(|| format!("ready file {text:?}"))
    }

    /// Rewrites the site policy with `extra` (TOML) appended — write-then-rename, as git
    /// does, so the daemon's watcher reloads it once.
    pub fn write_policy(&self, extra: &str) -> Result<()> {
        self.write_site_policy("", extra)
    }

    /// [`Self::write_policy`], with `site` (TOML keys) added to the `[site]` table.
    pub fn write_site_policy(&self, site: &str, extra: &str) -> Result<()> {
        let dir = self.tmp.path.join("policies");
        let text = policy(&self.bridge, &self.up_if, self.att_mac, self.bys_mac);
        // A site key given replaces the lab's (`unknown_devices`).
        let text = if site.contains("unknown_devices") {
            text.replacen("unknown_devices = \"deny\"\n", "", 1)
        } else {
            text
        };
        let text = text.replacen("[site]\n", &format!("[site]\n{site}"), 1) + extra;
        std::fs::write(dir.join(".site.toml.tmp"), text)?;
        std::fs::rename(dir.join(".site.toml.tmp"), dir.join("site.toml"))?;
        Ok(())
    }

    /// The first generation above `before` the daemon reports, as soon as it does (the
    /// ready file, read every millisecond), for at most 10 s.
    pub fn wait_generation_above(&self, before: u64) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(g) = self.generation().ok().filter(|&g| g > before) {
                return Ok(g);
            }
            thread::sleep(Duration::from_millis(1));
        }
        bail!("no generation above {before} within 10 s\n{}", self.debug())
    }

    /// [`Self::write_policy`], then [`Self::wait_generation_above`] `before`.
    pub fn reload_to(&self, before: u64, extra: &str) -> Result<u64> {
        self.write_policy(extra)?;
        self.wait_generation_above(before)
    }

    /// Sends crafted frames out of the attacker's interface.
    pub fn attack(&self, frames: Vec<Vec<u8>>) -> Result<()> {
        send_raw(&self.att, &self.att_if, frames)
    }

    /// Packets the dataplane counted with `reason` on `side`.
    pub fn packets(&self, reason: lazaret_abi::Reason, side: u8) -> Result<u64> {
        let stats = match self.dataplane {
            Dataplane::Xdp => lazaret::dataplane::xdp::Datapath::pinned_stats(
                &self
                    .bpffs
                    .path
                    .join(format!("v{}", lazaret_abi::ABI_VERSION)),
            )?,
            Dataplane::Nftables => nft_stats(&self.gw)?,
        };
        Ok(stats
            .get(lazaret_abi::stats_index(reason, side) as usize)
            .copied()
            .unwrap_or(0))
    }

    /// Runs the real CLI against this lab's daemon.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new(lazaret_bin()?)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()?;
        if !out.status.success() {
            bail!(
                "lazaret {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Isolates `device` through the CLI, as an operator would.
    pub fn isolate(&self, device: &str) -> Result<String> {
        self.cli(&[
            "quarantine",
            "add",
            device,
            "--action",
            "isolate",
            "--reason",
            "bypass test",
        ])
    }

    /// What the daemon printed so far, and the gateway's ruleset (for failure messages).
    pub fn debug(&self) -> String {
        let out = self
            .daemon
            .as_ref()
            .map(ChildGuard::output)
            .unwrap_or_default();
        let rules = crate::nftlab::list_text(&self.gw).unwrap_or_default();
        format!("daemon:\n{out}\nruleset:\n{rules}")
    }

    /// The neighbour entry `addr` in `ns` (`ip neigh show ADDR`), trimmed.
    pub fn neighbour(ns: &Netns, addr: &str) -> Result<String> {
        let out = ns.exec(&["ip", "neigh", "show", addr])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// An open TCP connection from `ns` (bound to `src`) to the server's HL7 port.
    pub fn session(ns: &Netns, src: IpAddr, dst: IpAddr) -> Result<TcpStream> {
        ns.run(move || -> Result<TcpStream> {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(std::net::SocketAddr::new(src, 0)),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            sock.bind(&std::net::SocketAddr::new(src, 0).into())?;
            // Long enough for neighbour discovery and two retransmitted SYNs on a loaded
            // machine: an IPv6 session is a lab's first IPv6 traffic, and a device known by
            // its MAC alone that has not spoken takes the second at the earliest.
            sock.connect_timeout(
                &std::net::SocketAddr::new(dst, HL7).into(),
                Duration::from_secs(10),
            )
            .with_context(|| format!("opening a session {src} → {dst}:{HL7}"))?;
            let mut s: TcpStream = sock.into();
            s.write_all(b"hello")?;
            Ok(s)
        })?
    }

    pub fn fmt(mac: Mac) -> String {
        fmt_mac(mac)
    }

    /// Permanent neighbour entries on the gateway, (address, MAC, interface) each: for hosts
    /// sent as raw frames, which have no stack to answer a solicitation.
    pub fn neighbours(&self, entries: &[(IpAddr, &str, &str)]) -> Result<()> {
        for (addr, mac, dev) in entries {
            let family = if addr.is_ipv4() { "-4" } else { "-6" };
            let addr = addr.to_string();
            let args = [
                "ip", family, "neigh", "replace", &addr, "lladdr", mac, "dev", dev,
            ];
            self.gw.exec(&[&args[..], &["nud", "permanent"]].concat())?;
        }
        Ok(())
    }

    /// The server's stack drops its own TCP resets: it has no listener behind the ports the
    /// scenarios use, and its resets would close the sessions they open (conntrack forgets
    /// a reset session) before they answer on them.
    pub fn server_sends_no_resets(&self) -> Result<()> {
        let table = "add table inet lz_no_rst { chain out { type filter hook output priority 0; tcp flags rst drop; }; }";
        self.srv.exec(&["nft", table])?;
        Ok(())
    }

    /// Makes the dataplane's record of `mac`'s ownership of `addr` by first use `secs`
    /// older, as if its owner had been silent that much longer: XDP's `LZ_LL_OWNER` entry
    /// last used `secs` earlier; on nftables, every frame stage table's claim (`own4`,
    /// `claimed4`) removed when `secs` is past the claim's timeout, and its destination
    /// owner (`ownidx4`) given `secs` less to live (removed when nothing is left).
    pub fn age_owner(&self, addr: Ipv4Addr, mac: Mac, secs: u64) -> Result<()> {
        use lazaret_abi::{LlKey, LlOwner, NS_PER_S, TIMEOUT_LL_OWNER_NS};
        match self.dataplane {
            Dataplane::Xdp => {
                let path =
                    lazaret::dataplane::pin_dir(&self.bpffs.path).join(lazaret_abi::MAP_LL_OWNER);
                let data = aya::maps::MapData::from_pin(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let mut map: aya::maps::HashMap<_, LlKey, LlOwner> =
                    aya::maps::Map::LruHashMap(data).try_into()?;
                // IPv4-mapped: `::ffff:a.b.c.d`.
                let key = lazaret_abi::LlKey {
                    addr: addr.to_ipv6_mapped().octets(),
                };
                let mut owner = map
                    .get(&key, 0)
                    .with_context(|| format!("no owner of {addr} recorded"))?;
                if owner.mac != mac {
                    bail!("{addr} is owned by {:?}, not {mac:?}", owner.mac);
                }
                owner.last_seen_ns = owner
                    .last_seen_ns
                    .checked_sub(secs * NS_PER_S)
                    .context("the machine has been up for less time than the owner is aged")?;
                map.insert(key, owner, 0)?;
            }
            Dataplane::Nftables => {
                let listed = self.gw.exec(&["nft", "-j", "list", "tables", "netdev"])?;
                let listed: serde_json::Value = serde_json::from_slice(&listed.stdout)?;
                let tables: Vec<String> = listed["nftables"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| Some(o.get("table")?.get("name")?.as_str()?.to_string()))
                    .collect();
                let mut aged = 0;
                for t in tables {
                    let Ok(out) = self
                        .gw
                        .exec(&["nft", "-j", "list", "map", "netdev", &t, "ownidx4"])
                    else {
                        continue;
                    };
                    let map: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                    let body = map["nftables"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|o| o.get("map"))
                        .context("an ownidx4 listing without the map")?;
                    let timeout = body["timeout"].as_u64().context("ownidx4's timeout")?;
                    let elem =
                        body["elem"].as_array().into_iter().flatten().find(|e| {
                            e[0]["elem"]["val"].as_str() == Some(addr.to_string().as_str())
                        });
                    // A table that records no owner of the address (one a reload is
                    // replacing, say) has nothing to age.
                    let Some(e) = elem else {
                        continue;
                    };
                    let mut text = String::new();
                    if secs * NS_PER_S > TIMEOUT_LL_OWNER_NS {
                        let m = fmt_mac(mac);
                        text.push_str(&format!(
                            "delete element netdev {t} own4 {{ {addr} . {m} }}\ndelete element netdev {t} claimed4 {{ {addr} }}\n"
                        ));
                    }
                    let left = e[0]["elem"]["expires"].as_u64().unwrap_or(0);
                    let mark = e[1].as_u64().context("ownidx4's mark")?;
                    text.push_str(&format!("delete element netdev {t} ownidx4 {{ {addr} }}\n"));
                    if left > secs {
                        text.push_str(&format!(
                            "add element netdev {t} ownidx4 {{ {addr} timeout {timeout}s expires {}s : {mark} }}\n",
                            left - secs
                        ));
                    }
                    let file = self.tmp.path.join("age-owner.nft");
                    std::fs::write(&file, &text)?;
                    self.gw
                        .exec(&["nft", "-f", file.to_str().context("path")?])?;
                    aged += 1;
                }
                if aged == 0 {
                    bail!("no frame stage table records an owner of {addr}");
                }
            }
        }
        Ok(())
    }
}

impl Drop for BypassLab {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        let _ = std::fs::remove_dir_all(
            self.bpffs
                .path
                .join(format!("v{}", lazaret_abi::ABI_VERSION)),
        );
    }
}

/// The nftables dataplane's counters by `stats_index`, summed over its tables.
fn nft_stats(gw: &Netns) -> Result<Vec<u64>> {
    let nft = lazaret::dataplane::nft::Nft::in_netns(&gw.name);
    let mut out = vec![0u64; lazaret_abi::STATS_LEN as usize];
    for family in lazaret::dataplane::nft::dataplane::FAMILIES {
        for table in lazaret::dataplane::nft::dataplane::TABLES {
            for (name, (packets, _)) in nft.counters(family, table)? {
                for r in lazaret_abi::Reason::ALL {
                    for side in [lazaret_abi::SIDE_DEVICES, lazaret_abi::SIDE_UPSTREAM] {
                        if name == lazaret::dataplane::nft::render::counter_name(r, side) {
                            out[lazaret_abi::stats_index(r, side) as usize] += packets;
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Captures every frame arriving on an interface, in its namespace, for at most 30 s or
/// until dropped.
pub struct Observer {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl Observer {
    pub fn on(ns: &Netns, ifname: &str) -> Result<Observer> {
        let sock = RawSocket::open(ns, ifname)?.with_read_timeout(Duration::from_millis(50))?;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frames.clone(), stop.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Some(n) = sock.recv(&mut buf) {
                    if let Ok(mut v) = f.lock() {
                        v.push(buf[..n].to_vec());
                    }
                }
            }
        });
        Ok(Observer { frames, stop })
    }

    /// Whether a frame carrying `marker` arrived, waiting up to `wait` for one.
    pub fn saw(&self, marker: &[u8], wait: Duration) -> bool {
        wait_until(wait, || self.has(marker))
    }

    /// Whether a frame carrying `marker` has arrived by now.
    pub fn has(&self, marker: &[u8]) -> bool {
        self.frames.lock().is_ok_and(|v| {
            v.iter()
                .any(|f| f.windows(marker.len()).any(|w| w == marker))
        })
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn policy(bridge: &str, up: &str, att: Mac, bys: Mac) -> String {
    format!(
        r#"
[site]
name = "bypass lab"
unknown_devices = "deny"

[site.interfaces."{bridge}"]
side = "devices"
networks = ["10.20.0.0/24", "fd00:20::/64"]

[site.interfaces."{up}"]
side = "upstream"

[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true

[classes.patient-monitor]
description = "Bedside monitors"
workflows = ["hl7-results"]
# Out of reach: the scenarios' denied frames must not isolate the attacker by themselves.
quarantine = {{ after = 100000, within = "1m", action = "isolate" }}

# The monitor sends HL7 results to the interface engine over MLLP (TCP 2575).
[workflows.hl7-results]
description = "HL7 ORU results to the interface engine"
[[workflows.hl7-results.rules]]
device = "class:patient-monitor"
peer = "10.10.0.20/32"
proto = "tcp"
ports = [2575]
initiator = "device"
[[workflows.hl7-results.rules]]
device = "class:patient-monitor"
peer = "fd00:10::20/128"
proto = "tcp"
ports = [2575]
initiator = "device"

[[devices]]
id = "mon-icu-01"
class = "patient-monitor"
mac = "{}"
ipv4 = "10.20.0.11"
ipv6 = ["fd00:20::11"]
vlan = 20
interface = "{bridge}"

[[devices]]
id = "mon-icu-02"
class = "patient-monitor"
mac = "{}"
ipv4 = "10.20.0.12"
ipv6 = ["fd00:20::12"]
vlan = 20
interface = "{bridge}"
"#,
        fmt_mac(att),
        fmt_mac(bys)
    )
}
