//! A routed lab with the real `lazaret run` on its gateway: start, kill, restart, reload,
//! and read the pinned counters. Everything lives in the test's own namespaces, temporary
//! directory and private bpffs, and is removed when the [`Lab`] drops.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lazaret::dataplane::xdp::Datapath;

use crate::{
    lazaret_bin,
    netns::{wait_until, BpfMount, ChildGuard, Routed, TempDir},
};

/// Formats a MAC for a policy file.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A site with the device `mon-icu-01` (the lab's device) in class `patient-monitor`;
/// `rules` is appended as TOML (workflows and their rules).
pub fn monitor_policy(mac: [u8; 6], workflows: &[&str], rules: &str) -> String {
    let list = workflows
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[site]
name = "lab"
unknown_devices = "deny"

[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true

[classes.patient-monitor]
description = "Bedside monitors"
workflows = [{list}]

[[devices]]
id = "mon-icu-01"
class = "patient-monitor"
mac = "{}"
ipv4 = "10.20.0.11"
{rules}
"#,
        fmt_mac(mac)
    )
}

/// The pump lab's policy: `pump-icu-01` (class `infusion-pump`, the lab's device) opens its
/// session to the lab's server (10.10.0.20, tcp/2575, where the lab's echo server listens)
/// and is quarantined after three distinct denied flows within a minute, with `action` (the
/// class default when `None`); the quarantine profile keeps the biomed jump host (tcp/22 on
/// the server). `site` names the lab.
pub fn pump_policy(site: &str, mac: [u8; 6], action: Option<&str>, life_critical: bool) -> String {
    let quarantine = match action {
        Some(a) => format!("quarantine = {{ after = 3, within = \"1m\", action = \"{a}\" }}"),
        None => "quarantine = { after = 3, within = \"1m\" }".to_string(),
    };
    format!(
        r#"
[site]
name = "{site}"
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

# docs/clinical-flows.md row 8: the pump opens its session to the pump server (site port).
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

/// A workflow allowing the monitor to open `proto`/`port` to the lab's server.
pub fn workflow(name: &str, proto: &str, port: u16) -> String {
    format!(
        r#"
[workflows.{name}]
description = "lab workflow {name}"
[[workflows.{name}.rules]]
device = "class:patient-monitor"
peer = "10.10.0.20/32"
proto = "{proto}"
ports = [{port}]
initiator = "device"
"#
    )
}

/// Which dataplane the lab's daemon enforces with: the namespace scenarios run against
/// both ([`crate::on_both_dataplanes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    Xdp,
    Nftables,
}

impl Dataplane {
    /// The value of `dataplane` in the daemon's configuration.
    pub fn name(self) -> &'static str {
        match self {
            Dataplane::Xdp => "xdp",
            Dataplane::Nftables => "nftables",
        }
    }
}

/// Runs each named scenario (`fn NAME(dataplane: Dataplane) -> anyhow::Result<()>`) as two
/// tests, `NAME::xdp` and `NAME::nftables`, so a scenario added later runs on both
/// dataplanes.
#[macro_export]
macro_rules! on_both_dataplanes {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn xdp() -> anyhow::Result<()> {
                    super::$scenario($crate::daemon::Dataplane::Xdp)
                }
                #[test]
                fn nftables() -> anyhow::Result<()> {
                    super::$scenario($crate::daemon::Dataplane::Nftables)
                }
            }
        )*
    };
}

pub struct Lab {
    pub net: Routed,
    /// The dataplane written in the config ([`Lab::on`]; XDP unless chosen).
    pub dataplane: Dataplane,
    // Field order matters for drop: the daemon dies before the bpffs is unmounted and the
    // directory removed.
    pub daemon: Option<ChildGuard>,
    pub bpffs: BpfMount,
    pub tmp: TempDir,
    pub policy_dir: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    /// Start the daemon confined to the deployed unit's capability bounding set
    /// ([`Lab::confine`]); with every capability of root otherwise.
    pub confined: bool,
    /// Capabilities taken out of the unit's set when confined ([`Lab::confine_without`]).
    pub dropped: Vec<String>,
}

impl Lab {
    /// Builds the topology and writes the config and the policy, made from the device's
    /// MAC address (not started yet).
    pub fn new(policy: impl FnOnce([u8; 6]) -> String) -> Result<Self> {
        let net = Routed::new()?;
        let policy = policy(net.device_mac);
        let tmp = TempDir::new()?;
        let bpffs = BpfMount::new(&tmp.path)?;
        let policy_dir = tmp.path.join("policies");
        std::fs::create_dir_all(&policy_dir)?;
        std::fs::write(policy_dir.join("hospital.toml"), &policy)?;
        let state_dir = tmp.path.join("state");
        let config = tmp.path.join("lazaret.toml");
        std::fs::write(
            &config,
            format!(
                "policy_dir = \"{}\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n\
                 [[interfaces]]\nname = \"{}\"\nside = \"devices\"\n\
                 [[interfaces]]\nname = \"{}\"\nside = \"upstream\"\n",
                policy_dir.display(),
                state_dir.display(),
                bpffs.path.display(),
                tmp.path.join("control.sock").display(),
                net.gw_dev_if,
                net.gw_up_if
            ),
        )?;
        Ok(Lab {
            net,
            dataplane: Dataplane::Xdp,
            daemon: None,
            bpffs,
            tmp,
            policy_dir,
            state_dir,
            config,
            confined: false,
            dropped: Vec::new(),
        })
    }

    /// [`Lab::new`] with `dataplane` written in the config.
    pub fn on(dataplane: Dataplane, policy: impl FnOnce([u8; 6]) -> String) -> Result<Self> {
        let mut lab = Lab::new(policy)?;
        if dataplane != Dataplane::Xdp {
            lab.use_dataplane(dataplane.name())?;
        }
        lab.dataplane = dataplane;
        Ok(lab)
    }

    /// Packets the dataplane judged with `reason` on `side` (`SIDE_*`), read from the
    /// kernel, so it works while the daemon is down: XDP's pinned counters, or the named
    /// counter of the enforcing nftables table (`<reason>_<side>`, carried across
    /// generations).
    pub fn packets(&self, reason: lazaret_abi::Reason, side: u8) -> Result<u64> {
        match self.dataplane {
            Dataplane::Xdp => Ok(self
                .stats()?
                .get(lazaret_abi::stats_index(reason, side) as usize)
                .copied()
                .unwrap_or(0)),
            Dataplane::Nftables => {
                let nft = lazaret::dataplane::nft::Nft::in_netns(&self.net.gateway.name);
                let name = lazaret::dataplane::nft::render::counter_name(reason, side);
                // The table's name alternates with each generation: a reload between the
                // two reads leaves neither found; read again.
                // The inet table and the frame stage (netdev) count under the same names.
                for _ in 0..20 {
                    for table in lazaret::dataplane::nft::dataplane::TABLES {
                        let mut found = None;
                        for family in lazaret::dataplane::nft::dataplane::FAMILIES {
                            let c = nft.counters(family, table)?;
                            if let Some((packets, _)) = c.get(&name) {
                                *found.get_or_insert(0) += *packets;
                            }
                        }
                        if let Some(n) = found {
                            return Ok(n);
                        }
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                bail!("no nftables table of lazaret with the counter {name} in the gateway")
            }
        }
    }

    /// From now on, [`Lab::start`] runs the daemon as the deployed unit does: root with only
    /// the capabilities of `CapabilityBoundingSet=` in `deploy/systemd/lazaret.service`
    /// (read from the unit, so the two cannot drift) and no new privileges, through
    /// `setpriv` (util-linux; `cargo xtask setup` installs it).
    pub fn confine(&mut self) {
        self.confined = true;
    }

    /// [`Lab::confine`], with `caps` (`CAP_BPF`, ...) also taken out of the unit's set.
    pub fn confine_without(&mut self, caps: &[&str]) {
        self.confined = true;
        self.dropped = caps.iter().map(std::string::ToString::to_string).collect();
    }

    /// Points the config's `pin_dir` at a directory that is not (and, not created, cannot
    /// be) a bpf filesystem; returns it. For a daemon that must not need one.
    pub fn without_bpffs(&self) -> Result<PathBuf> {
        let elsewhere = self.tmp.path.join("no-bpffs");
        let text = std::fs::read_to_string(&self.config)?;
        let from = format!("pin_dir = \"{}\"", self.bpffs.path.display());
        if !text.contains(&from) {
            bail!("the lab's config has no {from}");
        }
        let to = format!("pin_dir = \"{}\"", elsewhere.display());
        std::fs::write(&self.config, text.replace(&from, &to))?;
        Ok(elsewhere)
    }

    /// The daemon's process id (`ip netns exec` and `setpriv` exec, they do not fork).
    pub fn daemon_pid(&mut self) -> Option<u32> {
        self.daemon.as_mut()?.child_mut().map(|c| c.id())
    }

    /// Starts `lazaret run` and waits until it has written its ready file.
    pub fn start(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(self.state_dir.join("ready"));
        let bin = lazaret_bin()?;
        let mut args: Vec<String> = Vec::new();
        if self.confined {
            args.extend(setpriv_prefix(&self.dropped)?);
        }
        args.extend([
            bin.to_str().context("binary path")?.to_string(),
            "run".to_string(),
            "--config".to_string(),
            self.config.to_str().context("config path")?.to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = self.net.gateway.spawn(&args)?;
        self.daemon = Some(daemon);
        let ready = self.state_dir.join("ready");
        let daemon = self.daemon.as_mut().context("daemon")?;
        wait_until(Duration::from_secs(30), || {
            ready.exists() || !daemon.running()
        });
        if !ready.exists() {
            let out = daemon.stop();
            // Who holds the socket, when the daemon says another one does.
            let holders = self.unix_listeners();
            bail!("lazaret run did not become ready:\n{out}\nlistening unix sockets:\n{holders}");
        }
        Ok(())
    }

    /// The generation in the ready file.
    pub fn ready_generation(&self) -> Option<u64> {
        std::fs::read_to_string(self.state_dir.join("ready"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits until the daemon reports a generation of at least `gen`.
    pub fn wait_generation(&mut self, gen: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ready_generation().is_some_and(|g| g >= gen) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let at = self.ready_generation();
        let out = self
            .daemon
            .as_mut()
            .map(ChildGuard::stop)
            .unwrap_or_default();
        bail!("generation {gen} not reached within {timeout:?} (the daemon reports {at:?}):\n{out}")
    }

    pub fn signal(&self, sig: libc::c_int) {
        if let Some(d) = &self.daemon {
            d.signal(sig);
        }
    }

    /// `kill -9`: no cleanup code of the daemon runs.
    pub fn kill9(&mut self) -> String {
        let out = self
            .daemon
            .as_mut()
            .map(ChildGuard::stop)
            .unwrap_or_default();
        self.wait_control_unserved();
        out
    }

    /// Waits (bounded) until nobody answers on the control socket. The daemon is reaped
    /// by then, but a child it forked just before the kill holds a copy of the listener
    /// until that child's exec closes it; a daemon started in that moment refuses to
    /// start ("another lazaret is already serving it"), as it should. The socket file
    /// stays: a daemon restarted after a crash must replace it.
    fn wait_control_unserved(&self) {
        let sock = self.tmp.path.join("control.sock");
        let unserved = wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_err()
        });
        if !unserved {
            eprintln!(
                "{} is still served 10 s after the daemon was stopped; listeners in the gateway:\n{}",
                sock.display(),
                self.unix_listeners()
            );
        }
    }

    /// The gateway namespace's listening unix sockets and their owners (`ss -xlp`).
    fn unix_listeners(&self) -> String {
        self.net
            .gateway
            .exec(&["ss", "-xlp"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Output of the daemon so far (stops it).
    /// SIGTERM, then up to 10 s for the daemon's own shutdown before it is killed: a
    /// daemon started next must not find this one still holding the control socket.
    pub fn stop(&mut self) -> String {
        self.signal(libc::SIGTERM);
        if let Some(d) = self.daemon.as_mut() {
            wait_until(Duration::from_secs(10), || !d.running());
        }
        let out = self
            .daemon
            .as_mut()
            .map(ChildGuard::stop)
            .unwrap_or_default();
        self.wait_control_unserved();
        out
    }

    /// The pinned packet counters, by `stats_index`.
    pub fn stats(&self) -> Result<Vec<u64>> {
        let pins = self
            .bpffs
            .path
            .join(format!("v{}", lazaret_abi::ABI_VERSION));
        Ok(Datapath::pinned_stats(&pins)?)
    }

    /// Chooses the dataplane (`xdp`, `nftables`, `auto`) in the lab's config; call before
    /// [`Lab::start`].
    pub fn use_dataplane(&self, dataplane: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        std::fs::write(&self.config, format!("dataplane = \"{dataplane}\"\n{text}"))?;
        Ok(())
    }

    pub fn write_policy(&self, text: &str) -> Result<()> {
        // Write-then-rename, like git does, so the watcher never sees half a file.
        let tmp = self.policy_dir.join(".hospital.toml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.policy_dir.join("hospital.toml"))?;
        Ok(())
    }
}

impl Lab {
    /// A second host on the device segment: a macvlan of the device's veth (it dies with the
    /// veth) moved into `ns`, with address `ip` (/24 of the device network), `mac` when
    /// given, a default route through the gateway, and the gateway's MAC as a permanent
    /// neighbour — so its IP traffic leaves even when the datapath denies its ARP.
    pub fn plug_host(&self, ns: &crate::netns::Netns, ip: &str, mac: Option<&str>) -> Result<()> {
        let mv = format!("{}m", crate::netns::unique_prefix());
        let mut add = vec![
            "ip",
            "link",
            "add",
            "link",
            &self.net.device_if,
            "name",
            &mv,
        ];
        if let Some(mac) = mac {
            add.extend(["address", mac]);
        }
        add.extend(["netns", &ns.name, "type", "macvlan", "mode", "bridge"]);
        self.net.device.exec(&add)?;
        let addr = format!("{ip}/24");
        ns.exec(&["ip", "addr", "add", &addr, "dev", &mv])?;
        ns.exec(&["ip", "link", "set", &mv, "up"])?;
        ns.exec(&["ip", "route", "add", "default", "via", "10.20.0.1"])?;
        let gw_mac = fmt_mac(crate::netns::mac_of(
            &self.net.gateway,
            &self.net.gw_dev_if,
        )?);
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            "10.20.0.1",
            "lladdr",
            &gw_mac,
            "dev",
            &mv,
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// Runs the real CLI against this lab's daemon with `--output json`; the parsed reply.
    pub fn cli(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = std::process::Command::new(lazaret_bin()?)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .args(["--output", "json"])
            .output()?;
        if !out.status.success() {
            bail!(
                "lazaret {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "lazaret {args:?} printed no JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `lazaret quarantine add <device> --action <action> --reason <reason>`.
    pub fn quarantine(
        &self,
        device: &str,
        action: &str,
        reason: &str,
    ) -> Result<serde_json::Value> {
        self.cli(&[
            "quarantine",
            "add",
            device,
            "--action",
            action,
            "--reason",
            reason,
        ])
    }

    /// `lazaret quarantine release <device> --reason <reason>`.
    pub fn release(&self, device: &str, reason: &str) -> Result<serde_json::Value> {
        self.cli(&["quarantine", "release", device, "--reason", reason])
    }

    /// TCP echo servers on the lab's server address, one per port, for at most a minute.
    pub fn echo_servers(&self, ports: &[u16]) -> Result<()> {
        for &port in ports {
            let l = self
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
                                let mut b = [0u8; 64];
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

    /// A TCP connection from the device to the server's `port`.
    pub fn connect(&self, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
        self.net
            .device
            .run(move || {
                TcpStream::connect_timeout(&SocketAddr::from(([10, 10, 0, 20], port)), timeout)
            })
            .map_err(std::io::Error::other)?
    }
}

impl Lab {
    /// The daemon's `/metrics` text, fetched from inside the gateway namespace (the
    /// configuration's default 127.0.0.1:9464).
    pub fn metrics_text(&self) -> Result<String> {
        let reply = self.net.gateway.run(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect("127.0.0.1:9464")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lazaret\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })??;
        let (head, body) = reply.split_once("\r\n\r\n").context("HTTP reply")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("metrics endpoint answered {head}");
        }
        Ok(body.to_string())
    }

    /// The value of one sample line of `/metrics`, e.g. `lazaret_devices{mode="audit"}`.
    pub fn metric(&self, series: &str) -> Result<Option<f64>> {
        Ok(self.metrics_text()?.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        }))
    }

    /// `lazaret events --follow --output json` against this lab's daemon, started in the gateway
    /// namespace; read it with [`wait_event`].
    pub fn follow_events(&self) -> Result<ChildGuard> {
        let bin = lazaret_bin()?;
        let follower = self.net.gateway.spawn(&[
            bin.to_str().context("binary path")?,
            "events",
            "--follow",
            "--output",
            "json",
            "--config",
            self.config.to_str().context("config path")?,
        ])?;
        // Subscribed once it has connected; give it a moment.
        thread::sleep(Duration::from_millis(300));
        Ok(follower)
    }

    /// Appends TOML to the daemon's configuration (before [`Lab::start`]).
    pub fn append_config(&self, toml: &str) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)?;
        f.write_all(toml.as_bytes())?;
        Ok(())
    }
}

/// The deployed unit file, `deploy/systemd/lazaret.service`.
pub fn unit_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/lazaret.service")
}

/// The capabilities of the unit's `CapabilityBoundingSet=`, as the kernel names them
/// (`CAP_BPF`, ...).
pub fn unit_capabilities() -> Result<Vec<String>> {
    let path = unit_file();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let caps: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CapabilityBoundingSet="))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect();
    if caps.is_empty() || caps.iter().any(|c| !c.starts_with("CAP_")) {
        bail!(
            "{}: expected CapabilityBoundingSet= with CAP_* names, found {caps:?}",
            path.display()
        );
    }
    Ok(caps)
}

/// `setpriv` arguments that run the rest of the command line with the unit's bounding set
/// less `dropped`, no inheritable capabilities and no new privileges (`NoNewPrivileges=yes`).
/// Root's permitted and effective sets after exec are the bounding set.
fn setpriv_prefix(dropped: &[String]) -> Result<Vec<String>> {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .context("setpriv (util-linux) is missing: run `cargo xtask setup`")?;
    let set = unit_capabilities()?
        .iter()
        .filter(|c| !dropped.contains(c))
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    Ok(vec![
        setpriv.to_string(),
        "--bounding-set".to_string(),
        format!("-all,{set}"),
        "--inh-caps".to_string(),
        "-all".to_string(),
        "--no-new-privs".to_string(),
        "--".to_string(),
    ])
}

/// The first JSON event `follower` printed that satisfies `want`, waiting up to 5 s.
pub fn wait_event(
    follower: &ChildGuard,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let find = || followed(follower).into_iter().find(|v| want(v));
    crate::netns::wait_until(Duration::from_secs(5), || find().is_some());
    match find() {
        Some(v) => Ok(v),
        None => bail!(
            "the event did not arrive; the follower printed:\n{}",
            follower.output()
        ),
    }
}

/// Every event a [`Lab::follow_events`] follower has printed so far, parsed.
pub fn followed(follower: &ChildGuard) -> Vec<serde_json::Value> {
    follower
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// One echo round trip on a stream; false if it did not come back within 1.5 s.
pub fn round_trip(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut back = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut back).is_ok() && &back == b"ping"
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        // Remove enforcement explicitly: the pins live on the private bpffs, which is
        // unmounted next, but the links must not outlive the test on the lab's veths.
        let _ = std::fs::remove_dir_all(
            self.bpffs
                .path
                .join(format!("v{}", lazaret_abi::ABI_VERSION)),
        );
    }
}
