//! `cargo xtask demo`: St. Example General on one machine. Network namespaces stand in for
//! the device segments and the server room, the real `lazaret run` enforces `policies/` as
//! they are on a gateway namespace, and a story plays out: clinical traffic flows, a pump
//! is compromised and scans, it is quarantined and its session cut while the monitors keep
//! working, and biomed releases it.
//!
//! Everything the demo creates is named after its prefix (namespaces `<prefix>-*`, the
//! directory `/run/lazaret-demo-<prefix>`), so [`teardown`] finds it by name: on success,
//! on failure, on Ctrl-C, and for `cargo xtask demo --down` after `--keep`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lazaret::daemon::control::{call, Request};

use crate::netns::{sh, veth, wait_until, Netns};

/// What the demo is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Names every namespace and the demo directory.
    pub prefix: String,
    /// Leave the lab running at the end.
    pub keep: bool,
    /// The `lazaret` binary.
    pub lazaret: PathBuf,
    /// The policy directory (the repository's `policies/`).
    pub policies: PathBuf,
}

/// Where a demo's files live.
pub fn demo_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/run/lazaret-demo-{prefix}"))
}

/// A simulated device: which namespace, which gateway port, which addresses.
struct Dev {
    id: &'static str,
    class: &'static str,
    ns: &'static str,
    /// The gateway's interface facing it (a bridge port, or a plain interface).
    port: &'static str,
    bridge: Option<&'static str>,
    vlan: u16,
    mac: &'static str,
    ip: &'static str,
    gateway: &'static str,
}

/// The devices of `policies/devices/*.toml` that the demo brings to life.
const DEVICES: &[Dev] = &[
    Dev {
        id: "cs-icu-01",
        class: "central-station",
        ns: "cs",
        port: "icu0-cs",
        bridge: Some("icu0"),
        vlan: 20,
        mac: "00:1b:4f:20:00:10",
        ip: "10.20.0.10",
        gateway: "10.20.0.1",
    },
    Dev {
        id: "mon-icu-01",
        class: "patient-monitor",
        ns: "mon1",
        port: "icu0-mon1",
        bridge: Some("icu0"),
        vlan: 20,
        mac: "00:1b:4f:20:00:11",
        ip: "10.20.0.11",
        gateway: "10.20.0.1",
    },
    Dev {
        id: "mon-icu-02",
        class: "patient-monitor",
        ns: "mon2",
        port: "icu0-mon2",
        bridge: Some("icu0"),
        vlan: 20,
        mac: "00:1b:4f:20:00:12",
        ip: "10.20.0.12",
        gateway: "10.20.0.1",
    },
    Dev {
        id: "pump-icu-01",
        class: "infusion-pump",
        ns: "pump1",
        port: "pumps0-bed1",
        bridge: Some("pumps0"),
        vlan: 30,
        mac: "00:1a:2b:30:00:11",
        ip: "10.30.0.11",
        gateway: "10.30.0.1",
    },
    Dev {
        id: "pump-depot-01",
        class: "infusion-pump",
        ns: "pump9",
        port: "pumps0-depot",
        bridge: Some("pumps0"),
        vlan: 30,
        mac: "00:1a:2b:30:00:21",
        ip: "10.30.0.21",
        gateway: "10.30.0.1",
    },
    Dev {
        id: "ct-01",
        class: "ct-scanner",
        ns: "ct",
        port: "imaging0",
        bridge: None,
        vlan: 40,
        mac: "00:80:b7:40:00:10",
        ip: "10.40.0.10",
        gateway: "10.40.0.1",
    },
];

/// The gateway's addresses on each segment: (interface, address).
const GATEWAY_ADDRS: &[(&str, &str)] = &[
    ("uplink0", "10.10.0.1/16"),
    ("icu0", "10.20.0.1/24"),
    ("pumps0", "10.30.0.1/24"),
    ("imaging0", "10.40.0.1/24"),
];

/// The server room: the roles of `policies/roles.toml` the story talks to.
const HL7_ENGINE: &str = "10.10.1.20:2575";
const PUMP_SERVER: &str = "10.10.3.10:51243";
const PACS: &str = "10.10.4.10:104";
const NTP: &str = "10.10.0.123:123";
const DNS: &str = "10.10.0.53:53";
const JUMP_HOST: &str = "10.10.9.5:22";
const SERVER_ADDRS: &[&str] = &[
    "10.10.0.2",
    "10.10.0.53",
    "10.10.0.123",
    "10.10.1.20",
    "10.10.3.10",
    "10.10.4.10",
    "10.10.9.5",
];

/// How long a client waits for an answer before calling the flow blocked.
const PATIENCE: Duration = Duration::from_millis(800);

/// Set when the demo is being torn down: nothing new is created after it.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Runs the demo. On any error the lab is torn down and the error names the step.
pub fn run(opts: &Options) -> Result<()> {
    let dir = demo_dir(&opts.prefix);
    if dir.exists() || !namespaces(&opts.prefix)?.is_empty() {
        bail!(
            "a demo lab with prefix {:?} already exists (a run with --keep?): remove it with \
             `cargo xtask demo --down` first",
            opts.prefix
        );
    }
    let mut story = Story::new(opts);
    let result = story.play();
    if interrupted() {
        // The Ctrl-C handler is tearing down and will exit; failures from here on are its
        // doing, not the story's.
        thread::sleep(Duration::from_secs(30));
    }
    match (&result, opts.keep) {
        (Ok(()), true) => story.print_keep(),
        _ => {
            println!("\nTearing the lab down…");
            teardown(&opts.prefix);
        }
    }
    result
}

/// Whether a teardown has begun (Ctrl-C).
pub fn interrupted() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Removes everything a demo with this prefix created. Idempotent; never fails (what it
/// cannot remove, it reports).
pub fn teardown(prefix: &str) {
    STOPPING.store(true, Ordering::SeqCst);
    let dir = demo_dir(prefix);
    if let Some(pid) = std::fs::read_to_string(dir.join("daemon.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
    {
        // SAFETY: signalling a pid we recorded; if it is gone, kill fails harmlessly.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let gone = wait_until(Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid)
        });
        if !gone {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    match namespaces(prefix) {
        Ok(list) => {
            for ns in list {
                let _ = Command::new("ip")
                    .args(["netns", "delete", &ns])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        Err(e) => eprintln!("could not list namespaces: {e:#}"),
    }
    let bpffs = dir.join("bpffs");
    if bpffs.exists() {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&bpffs)
            .stderr(Stdio::null())
            .status();
    }
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("could not remove {}: {e}", dir.display());
        }
    }
}

fn zombie(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The network namespaces named after the prefix.
fn namespaces(prefix: &str) -> Result<Vec<String>> {
    let out = sh(Command::new("ip").args(["netns", "list"]))?;
    let start = format!("{prefix}-");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&start))
        .map(str::to_string)
        .collect())
}

/// The running demo: its namespaces (kept alive as names; [`teardown`] removes them) and
/// what it measured.
struct Story<'a> {
    opts: &'a Options,
    dir: PathBuf,
    step: usize,
    stop: Arc<AtomicBool>,
}

const STEPS: usize = 7;

impl<'a> Story<'a> {
    fn new(opts: &'a Options) -> Self {
        Story {
            opts,
            dir: demo_dir(&opts.prefix),
            step: 0,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A handle on one of the demo's namespaces (teardown removes them, by name).
    fn ns(&self, name: &str) -> Netns {
        Netns::borrowed(format!("{}-{name}", self.opts.prefix))
    }

    fn config(&self) -> PathBuf {
        self.dir.join("lazaret.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn heading(&mut self, what: &str) {
        self.step += 1;
        println!("\n[{}/{STEPS}] {what}", self.step);
    }

    /// Runs a step; an error names it.
    fn step<T>(&mut self, what: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if STOPPING.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        self.heading(what);
        f(self).with_context(|| format!("step {}/{STEPS} ({what}) failed", self.step))
    }

    fn play(&mut self) -> Result<()> {
        println!("lazaret demo — St. Example General, simulated on this machine");
        println!(
            "policies: {} (as they are); everything lives in namespaces {}-*",
            self.opts.policies.display(),
            self.opts.prefix
        );
        self.step("Building the hospital", Self::build)?;
        self.step("Starting `lazaret run` on the gateway", Self::start_daemon)?;
        let services = self.start_services()?;
        self.step("Clinical traffic", Self::clinical_traffic)?;
        let session = self.step(
            "pump-depot-01 syncs with the pump server (one message every 200 ms)",
            Self::open_pump_session,
        )?;
        self.step(
            "pump-depot-01 is compromised: it scans the ICU segment",
            |s| s.compromise(&session),
        )?;
        self.step(
            "The rest of the hospital keeps working",
            Self::still_working,
        )?;
        self.step("Biomed reimages the pump and releases it", Self::release)?;
        self.summary()?;
        drop(session);
        if !self.opts.keep {
            self.stop.store(true, Ordering::SeqCst);
            for s in services {
                let _ = s.join();
            }
        }
        Ok(())
    }

    // === Step 1: topology ===

    fn build(&mut self) -> Result<()> {
        std::fs::create_dir_all(self.dir.join("state"))?;
        let bpffs = self.dir.join("bpffs");
        std::fs::create_dir_all(&bpffs)?;
        sh(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))
            .context("mounting a private bpf filesystem (needs root)")?;
        let gw = self.create_ns("gw")?;
        gw.set_sysctl("net.ipv4.ip_forward", "1")?;
        let srv = self.create_ns("srv")?;
        veth(&gw, "uplink0", None, &srv, "eth0", None)?;
        for a in SERVER_ADDRS {
            srv.exec(&["ip", "addr", "add", &format!("{a}/16"), "dev", "eth0"])?;
        }
        srv.exec(&["ip", "route", "add", "default", "via", "10.10.0.1"])?;
        for bridge in ["icu0", "pumps0"] {
            gw.exec(&["ip", "link", "add", bridge, "type", "bridge"])?;
            gw.exec(&["ip", "link", "set", bridge, "up"])?;
        }
        for d in DEVICES {
            let ns = self.create_ns(d.ns)?;
            veth(&gw, d.port, None, &ns, "eth0", None)?;
            ns.exec(&["ip", "link", "set", "eth0", "down"])?;
            ns.exec(&["ip", "link", "set", "eth0", "address", d.mac])?;
            ns.exec(&["ip", "addr", "add", &format!("{}/24", d.ip), "dev", "eth0"])?;
            ns.exec(&["ip", "link", "set", "eth0", "up"])?;
            ns.exec(&["ip", "route", "add", "default", "via", d.gateway])?;
            if let Some(bridge) = d.bridge {
                gw.exec(&["ip", "link", "set", d.port, "master", bridge])?;
            }
        }
        for (iface, addr) in GATEWAY_ADDRS {
            gw.exec(&["ip", "addr", "add", addr, "dev", iface])?;
        }
        println!("      server room  10.10.0.0/16  HL7 engine, PACS, pump server, NTP, DNS, biomed jump host");
        println!("      icu0         bridge, VLAN 20  cs-icu-01, mon-icu-01, mon-icu-02 (device to device enforced)");
        println!(
            "      pumps0       bridge, VLAN 30  pump-icu-01 (bed 1), pump-depot-01 (biomed depot)"
        );
        println!("      imaging0     VLAN 40          ct-01");
        Ok(())
    }

    /// A namespace with loopback up and IPv6 off (the demo's devices are IPv4-only, and
    /// router solicitations and MLD reports would only add noise to the counters).
    fn create_ns(&self, name: &str) -> Result<Netns> {
        if STOPPING.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        // Kept alive by name: teardown deletes it (and --keep leaves it).
        let ns = Netns::new(format!("{}-{name}", self.opts.prefix))?.keep();
        ns.set_sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(ns)
    }

    // === Step 2: the daemon ===

    fn start_daemon(&mut self) -> Result<()> {
        let mut cfg = format!(
            "# lazaret demo: the gateway of St. Example General\n\
             policy_dir = \"{}\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n\
             metrics_listen = \"10.10.0.1:9464\"\n\n\
             [[interfaces]]\nname = \"uplink0\"\nside = \"upstream\"\n",
            self.opts.policies.display(),
            self.dir.join("state").display(),
            self.dir.join("bpffs").display(),
            self.socket().display(),
        );
        for d in DEVICES {
            cfg.push_str(&format!(
                "\n[[interfaces]]\nname = \"{}\"\nside = \"devices\"\nvlan = {}\n",
                d.port, d.vlan
            ));
            if let Some(b) = d.bridge {
                cfg.push_str(&format!("bridge = \"{b}\"\n"));
            }
        }
        std::fs::write(self.config(), cfg)?;
        let log = std::fs::File::create(self.dir.join("lazaret.log"))?;
        let gw = self.ns("gw");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &gw.name])
            .arg(&self.opts.lazaret)
            .arg("run")
            .arg("--config")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: a Ctrl-C in the terminal reaches the demo, which tears
        // the lab down in order, not the daemon directly.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("starting lazaret run")?;
        std::fs::write(self.dir.join("daemon.pid"), child.id().to_string())?;
        let ready = self.dir.join("state/ready");
        let mut child = child;
        let socket = self.socket();
        let up = wait_until(Duration::from_secs(30), || {
            (ready.exists() && socket.exists()) || matches!(child.try_wait(), Ok(Some(_)))
        });
        if !up || !ready.exists() || !socket.exists() {
            bail!(
                "lazaret run did not become ready; its log:\n{}",
                std::fs::read_to_string(self.dir.join("lazaret.log")).unwrap_or_default()
            );
        }
        // The child is reaped by teardown's kill; a running daemon must not be waited on.
        std::mem::forget(child);
        let status = self.api(&Request::Status {})?;
        if status["policy"] != "repository" {
            // The daemon never starts open: with a policy that does not compile it holds
            // the device ports closed (or enforces its last-known-good). The demo needs the
            // policy it was given.
            bail!(
                "lazaret started without the demo's policy (policy: {}; device ports held closed: {}); its log:\n{}",
                status["policy"],
                status["held"],
                std::fs::read_to_string(self.dir.join("lazaret.log")).unwrap_or_default()
            );
        }
        let generation = status["generation"].as_u64().unwrap_or(0);
        let commit = status["commit"].as_str().unwrap_or("not a git checkout");
        let mut modes = std::collections::BTreeMap::<String, usize>::new();
        for mode in status["interfaces"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            *modes
                .entry(mode.as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        let ifaces = modes
            .iter()
            .map(|(mode, n)| format!("{n} interfaces in {mode} mode"))
            .collect::<Vec<_>>()
            .join(", ");
        println!("      policy generation {generation} enforcing (commit: {commit})");
        println!("      XDP attached: {ifaces}");
        Ok(())
    }

    fn api(&self, request: &Request) -> Result<serde_json::Value> {
        let reply = call(&self.socket(), request)?;
        if !reply.ok {
            bail!(
                "lazaret refused {request:?}: {}",
                reply.error.unwrap_or_default()
            );
        }
        Ok(reply.data.unwrap_or_default())
    }

    /// Runs the real CLI against the demo's daemon and prints it as the audience would
    /// type it.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("{a:?}")
                } else {
                    a.to_string()
                }
            })
            .collect();
        println!("      $ lazaret {}", shown.join(" "));
        let out = sh(Command::new(&self.opts.lazaret)
            .args(args)
            .arg("--config")
            .arg(self.config()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    // === The server room ===

    fn start_services(&self) -> Result<Vec<thread::JoinHandle<()>>> {
        let srv = self.ns("srv");
        let mut handles = Vec::new();
        let tcp: [(&str, Handler); 4] = [
            (HL7_ENGINE, serve_hl7),
            (PUMP_SERVER, serve_pump),
            (PACS, serve_dicom),
            (JUMP_HOST, serve_ssh_banner),
        ];
        for (addr, handler) in tcp {
            let addr: SocketAddr = addr.parse()?;
            let listener = srv.run(move || TcpListener::bind(addr))??;
            listener.set_nonblocking(true)?;
            let stop = self.stop.clone();
            handles.push(thread::spawn(move || accept_loop(listener, stop, handler)));
        }
        for (addr, reply) in [(NTP, ntp_reply as fn(&[u8]) -> Vec<u8>), (DNS, dns_reply)] {
            let addr: SocketAddr = addr.parse()?;
            let socket = srv.run(move || UdpSocket::bind(addr))??;
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            let stop = self.stop.clone();
            handles.push(thread::spawn(move || udp_loop(socket, stop, reply)));
        }
        Ok(handles)
    }

    // === Step 3 ===

    fn clinical_traffic(&mut self) -> Result<()> {
        for id in ["mon-icu-01", "mon-icu-02"] {
            self.expect(
                true,
                id,
                "HL7 engine",
                "HL7 ORU^R01 over MLLP, ACK received",
                || hl7(&self.ns(dev(id).ns), "PCD-01"),
            )?;
        }
        self.expect(
            true,
            "cs-icu-01",
            "mon-icu-01",
            "time sync, UDP 2000, same bridge segment",
            || time_sync(&self.ns("cs"), &self.ns("mon1")),
        )?;
        self.expect(true, "ct-01", "PACS", "DICOM association accepted", || {
            dicom(&self.ns("ct"))
        })?;
        self.expect(
            true,
            "pump-icu-01",
            "pump server",
            "drug-library check answered",
            || pump_exchange(&self.ns("pump1")),
        )?;
        for d in DEVICES {
            self.expect(true, d.id, "NTP", "time received", || ntp(&self.ns(d.ns)))?;
        }
        self.expect(
            false,
            "mon-icu-01",
            "pump server",
            "not in its workflows",
            || pump_exchange(&self.ns("mon1")),
        )?;
        self.expect(
            false,
            "mon-icu-01",
            "pump-icu-01",
            "device to device, no workflow",
            || tcp_answers(&self.ns("mon1"), "10.30.0.11:80"),
        )?;
        Ok(())
    }

    /// Runs one flow and prints its outcome; an outcome other than `allowed` is an error.
    fn expect(
        &self,
        allowed: bool,
        from: &str,
        to: &str,
        what: &str,
        flow: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let t = Instant::now();
        let result = flow();
        let ms = t.elapsed().as_millis();
        match (&result, allowed) {
            (Ok(()), true) => {
                println!("      ✓ {from:<14} → {to:<12} {what} ({ms} ms)");
                Ok(())
            }
            (Err(_), false) => {
                println!("      ✗ {from:<14} → {to:<12} blocked: {what}");
                Ok(())
            }
            (Ok(()), false) => bail!("{from} → {to} ({what}) should have been blocked"),
            (Err(e), true) => bail!("{from} → {to} ({what}) failed: {e:#}"),
        }
    }

    // === Step 4 ===

    fn open_pump_session(&mut self) -> Result<PumpSession> {
        let session = PumpSession::open(&self.ns("pump9"))?;
        wait_until(Duration::from_secs(3), || session.exchanged() >= 3);
        if session.exchanged() < 3 || session.cut_after().is_some() {
            bail!("the pump session did not get going");
        }
        println!(
            "      ✓ session open: {} messages answered",
            session.exchanged()
        );
        Ok(session)
    }

    // === Step 5 ===

    fn compromise(&mut self, session: &PumpSession) -> Result<()> {
        let pump = self.ns("pump9");
        let targets: Vec<String> = ["10.20.0.10", "10.20.0.11", "10.20.0.12"]
            .iter()
            .flat_map(|h| {
                [22u16, 23, 80, 443, 445, 3389, 5900]
                    .iter()
                    .map(move |p| format!("{h}:{p}"))
            })
            .collect();
        println!(
            "      {} connection attempts to the ICU segment (ssh, telnet, http, https, smb, rdp, vnc)",
            targets.len()
        );
        let started = Instant::now();
        // One thread per attempt, like a scanner's parallel probes; each waits PATIENCE.
        let probes: Vec<_> = targets
            .into_iter()
            .map(|t| {
                let pump = Netns::borrowed(pump.name.clone());
                thread::spawn(move || tcp_answers(&pump, &t).is_ok())
            })
            .collect();
        let mut quarantined = None;
        wait_until(Duration::from_secs(15), || {
            match self.api(&Request::QuarantineList {}) {
                Ok(list) => {
                    quarantined = list.get("pump-depot-01").cloned();
                    quarantined.is_some()
                }
                Err(_) => false,
            }
        });
        let answered = probes
            .into_iter()
            .map(thread::JoinHandle::join)
            .filter(|r| !matches!(r, Ok(false)))
            .count();
        let Some(q) = quarantined else {
            bail!("pump-depot-01 was not quarantined");
        };
        println!(
            "      ✗ every attempt blocked ({answered} answered); each distinct denied flow is a deviation"
        );
        println!(
            "      ⚠ threshold crossed (10 deviations within 5m): quarantined, action {}, {} ms after the scan began",
            q["action"].as_str().unwrap_or("?"),
            started.elapsed().as_millis()
        );
        if answered > 0 {
            bail!("{answered} scan attempts were answered");
        }
        wait_until(Duration::from_secs(5), || session.cut_after().is_some());
        match session.cut_after() {
            Some(n) => println!(
                "      ✗ its session to the pump server is cut (after {n} answered messages)"
            ),
            None => bail!("the quarantined pump's session to the pump server was not cut"),
        }
        self.show_feed("pump-depot-01")?;
        self.expect(
            true,
            "pump-depot-01",
            "NTP",
            "still allowed by the quarantine profile",
            || ntp(&pump),
        )?;
        self.expect(
            true,
            "pump-depot-01",
            "jump host",
            "biomed can still reach it (TCP 22)",
            || ssh_banner(&pump),
        )?;
        self.expect(false, "pump-depot-01", "pump server", "isolated", || {
            pump_exchange(&pump)
        })?;
        Ok(())
    }

    /// What the on-call engineer sees in the event feed: the device's first denies, the
    /// quarantine, and the first packet of its session the quarantine dropped.
    fn show_feed(&self, device: &str) -> Result<()> {
        let feed = self.cli(&["events"])?;
        let lines: Vec<&str> = feed.lines().filter(|l| l.contains(device)).collect();
        let denies: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("deny_no_rule"))
            .collect();
        let short = |l: &str| {
            // Time of day, then the event without the class and mode.
            let (ts, rest) = l.split_once(' ').unwrap_or(("", l));
            let time = ts
                .split_once('T')
                .map_or(ts, |(_, t)| t.trim_end_matches('Z'));
            let rest = rest.replace(" (infusion-pump, enforce)", "");
            format!(
                "        {time} {}",
                rest.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        };
        for l in denies.iter().take(3) {
            println!("{}", short(l));
        }
        if denies.len() > 3 {
            println!("        … {} more denied flows", denies.len() - 3);
        }
        let Some(q) = lines.iter().find(|l| l.contains(" quarantine ")) else {
            bail!("the event feed has no quarantine of {device}");
        };
        println!("{}", short(q));
        if let Some(cut) = lines
            .iter()
            .find(|l| l.contains("deny_quarantine") && l.contains(PUMP_SERVER))
        {
            println!("{}", short(cut));
        }
        Ok(())
    }

    // === Step 6 ===

    fn still_working(&mut self) -> Result<()> {
        self.expect(
            true,
            "mon-icu-01",
            "HL7 engine",
            "observations flowing",
            || hl7(&self.ns("mon1"), "PCD-01"),
        )?;
        self.expect(
            true,
            "mon-icu-02",
            "HL7 engine",
            "observations flowing",
            || hl7(&self.ns("mon2"), "PCD-01"),
        )?;
        self.expect(
            true,
            "pump-icu-01",
            "pump server",
            "the pump at bed 1 is untouched",
            || pump_exchange(&self.ns("pump1")),
        )?;
        self.expect(true, "ct-01", "PACS", "imaging unaffected", || {
            dicom(&self.ns("ct"))
        })?;
        Ok(())
    }

    // === Step 7 ===

    fn release(&mut self) -> Result<()> {
        self.cli(&[
            "quarantine",
            "release",
            "pump-depot-01",
            "--reason",
            "reimaged by biomed, ticket BME-4471",
        ])?;
        let list = self.api(&Request::QuarantineList {})?;
        if list.get("pump-depot-01").is_some() {
            bail!("pump-depot-01 is still quarantined after the release");
        }
        self.expect(
            true,
            "pump-depot-01",
            "pump server",
            "sync works again",
            || pump_exchange(&self.ns("pump9")),
        )?;
        println!(
            "      every quarantine and release is in {}",
            self.dir.join("state/audit.log").display()
        );
        Ok(())
    }

    // === The end ===

    fn summary(&self) -> Result<()> {
        let devices = self.api(&Request::Devices {})?;
        let list = devices.as_array().cloned().unwrap_or_default();
        println!("\nSummary (live counters from the gateway)\n");
        println!(
            "  {:<15} {:<18} {:>9} {:>8}  state",
            "device", "class", "allowed", "denied"
        );
        for d in DEVICES {
            let Some(row) = list.iter().find(|r| r["id"] == d.id) else {
                bail!("{} is missing from the daemon's device list", d.id);
            };
            let state = match row["quarantine"].as_str() {
                Some(a) => format!("quarantined ({a})"),
                None => row["mode"].as_str().unwrap_or("?").to_string(),
            };
            println!(
                "  {:<15} {:<18} {:>9} {:>8}  {state}",
                d.id,
                d.class,
                row["allowed_packets"].as_u64().unwrap_or(0),
                row["denied_packets"].as_u64().unwrap_or(0),
            );
        }
        let cfg = self.config();
        println!("\nWhere to look next (while the lab runs: `cargo xtask demo --keep`):");
        println!("  lazaret status --config {}", cfg.display());
        println!("  lazaret devices --live --config {}", cfg.display());
        println!(
            "  ip netns exec {} curl -s http://10.10.0.1:9464/metrics | grep ^lazaret_",
            self.ns("gw").name
        );
        println!(
            "  the daemon's log: {}",
            self.dir.join("lazaret.log").display()
        );
        Ok(())
    }

    fn print_keep(&self) {
        println!(
            "\nThe lab keeps running (--keep): the gateway keeps enforcing; the simulated servers \
             stopped with the demo. Explore it:"
        );
        println!(
            "  ip netns exec {} bash          # a shell on pump-depot-01",
            self.ns("pump9").name
        );
        println!("  ip netns list | grep {}-", self.opts.prefix);
        println!(
            "  {} status --config {}",
            self.opts.lazaret.display(),
            self.config().display()
        );
        println!("Tear it down: cargo xtask demo --down");
    }
}

fn dev(id: &str) -> &'static Dev {
    DEVICES.iter().find(|d| d.id == id).unwrap_or(&DEVICES[0])
}

// === Clients (sockets are created inside the device's namespace) ===

fn connect(ns: &Netns, addr: &str) -> Result<TcpStream> {
    let addr: SocketAddr = addr.parse()?;
    let s = ns.run(move || TcpStream::connect_timeout(&addr, PATIENCE))??;
    s.set_read_timeout(Some(PATIENCE))?;
    s.set_write_timeout(Some(PATIENCE))?;
    Ok(s)
}

fn tcp_answers(ns: &Netns, addr: &str) -> Result<()> {
    connect(ns, addr).map(drop)
}

/// MLLP framing: 0x0b, the message, 0x1c 0x0d.
fn mllp(msg: &str) -> Vec<u8> {
    let mut v = vec![0x0b];
    v.extend_from_slice(msg.as_bytes());
    v.extend_from_slice(&[0x1c, 0x0d]);
    v
}

fn read_mllp(s: &mut TcpStream) -> Result<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < 64 * 1024 {
        s.read_exact(&mut byte)?;
        if byte[0] == 0x1c {
            s.read_exact(&mut byte)?;
            return Ok(String::from_utf8_lossy(&buf)
                .trim_start_matches('\x0b')
                .to_string());
        }
        buf.push(byte[0]);
    }
    bail!("MLLP frame too long")
}

fn hl7(ns: &Netns, profile: &str) -> Result<()> {
    let mut s = connect(ns, HL7_ENGINE)?;
    let msg = format!(
        "MSH|^~\\&|MONITOR|ICU|HL7ENGINE|HOSP|20261123120000||ORU^R01^ORU_R01|{profile}-1|P|2.6\r\
         PID|||MRN4471\r\
         OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|262688^MDC_DIM_PERCENT^MDC|||||R\r"
    );
    s.write_all(&mllp(&msg))?;
    let ack = read_mllp(&mut s)?;
    if !ack.contains("MSA|AA") {
        bail!("no positive ACK: {ack:?}");
    }
    Ok(())
}

fn time_sync(from: &Netns, to: &Netns) -> Result<()> {
    let rx = to.run(|| UdpSocket::bind("10.20.0.11:2000"))??;
    rx.set_read_timeout(Some(PATIENCE))?;
    let tx = from.run(|| UdpSocket::bind("10.20.0.10:0"))??;
    tx.send_to(b"TIME 20261123T120000Z", "10.20.0.11:2000")?;
    let mut buf = [0u8; 64];
    rx.recv_from(&mut buf)?;
    Ok(())
}

/// An A-ASSOCIATE-RQ for the Verification SOP class, answered by an A-ASSOCIATE-AC.
fn dicom(ns: &Netns) -> Result<()> {
    let mut s = connect(ns, PACS)?;
    let mut pdu = vec![0x01, 0x00, 0, 0, 0, 68, 0x00, 0x01, 0, 0];
    pdu.extend_from_slice(b"PACS            ");
    pdu.extend_from_slice(b"CT01            ");
    pdu.extend_from_slice(&[0u8; 32]);
    s.write_all(&pdu)?;
    let mut head = [0u8; 6];
    s.read_exact(&mut head)?;
    if head[0] != 0x02 {
        bail!("association not accepted (PDU type {:#04x})", head[0]);
    }
    s.write_all(&[0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])?;
    s.read_exact(&mut head)?;
    Ok(())
}

fn pump_exchange(ns: &Netns) -> Result<()> {
    let s = connect(ns, PUMP_SERVER)?;
    let mut r = BufReader::new(s.try_clone()?);
    (&s).write_all(b"LIBRARY-CHECK v2026.11\n")?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("OK") {
        bail!("unexpected answer {line:?}");
    }
    Ok(())
}

fn ntp(ns: &Netns) -> Result<()> {
    let s = ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
    s.set_read_timeout(Some(PATIENCE))?;
    let mut req = [0u8; 48];
    req[0] = 0x23; // LI 0, version 4, mode 3 (client)
    s.send_to(&req, NTP)?;
    let mut buf = [0u8; 64];
    let (n, _) = s.recv_from(&mut buf)?;
    if n < 48 || buf[0] & 7 != 4 {
        bail!("not an NTP server reply");
    }
    Ok(())
}

fn ssh_banner(ns: &Netns) -> Result<()> {
    let s = connect(ns, JUMP_HOST)?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if !line.starts_with("SSH-2.0-") {
        bail!("no SSH banner");
    }
    Ok(())
}

/// pump-depot-01's long-lived session: a status message every 200 ms, each answered. It
/// records how many were answered and whether an answer stopped coming.
struct PumpSession {
    answered: Arc<std::sync::atomic::AtomicUsize>,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PumpSession {
    fn open(ns: &Netns) -> Result<Self> {
        let s = connect(ns, PUMP_SERVER)?;
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, st) = (answered.clone(), cut.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let Ok(reader) = s.try_clone() else {
                c.store(true, Ordering::SeqCst);
                return;
            };
            let mut r = BufReader::new(reader);
            // Bounded: at most 10 minutes of messages.
            for seq in 0..3000u32 {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let mut line = String::new();
                let ok = (&s)
                    .write_all(format!("STATUS {seq} infusing=0 battery=96\n").as_bytes())
                    .is_ok()
                    && r.read_line(&mut line).is_ok_and(|n| n > 0);
                if !ok {
                    c.store(true, Ordering::SeqCst);
                    return;
                }
                a.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(200));
            }
        });
        Ok(PumpSession {
            answered,
            cut,
            stop,
            thread: Some(thread),
        })
    }

    fn exchanged(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// How many messages were answered before the session was cut, if it was.
    fn cut_after(&self) -> Option<usize> {
        self.cut.load(Ordering::SeqCst).then(|| self.exchanged())
    }
}

impl Drop for PumpSession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// === Servers (sockets bound inside the server room's namespace) ===

/// Serves one accepted connection.
type Handler = fn(TcpStream);

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, handler: Handler) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                thread::spawn(move || handler(s));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn udp_loop(socket: UdpSocket, stop: Arc<AtomicBool>, reply: fn(&[u8]) -> Vec<u8>) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&reply(&buf[..n]), from);
        }
    }
}

fn serve_hl7(mut s: TcpStream) {
    while let Ok(msg) = read_mllp(&mut s) {
        let control = msg
            .split('\r')
            .next()
            .and_then(|msh| msh.split('|').nth(9))
            .unwrap_or("0")
            .to_string();
        let ack = format!(
            "MSH|^~\\&|HL7ENGINE|HOSP|MONITOR|ICU|20261123120000||ACK^R01^ACK|A{control}|P|2.6\rMSA|AA|{control}\r"
        );
        if s.write_all(&mllp(&ack)).is_err() {
            return;
        }
    }
}

fn serve_pump(s: TcpStream) {
    let Ok(reader) = s.try_clone() else { return };
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let Ok(line) = line else { return };
        let word = line.split_whitespace().next().unwrap_or("");
        if (&s)
            .write_all(format!("OK {word} {n}\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
}

fn serve_dicom(mut s: TcpStream) {
    let mut head = [0u8; 6];
    while s.read_exact(&mut head).is_ok() {
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let mut body = vec![0u8; len.min(64 * 1024)];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let reply: &[u8] = match head[0] {
            // A-ASSOCIATE-RQ → a minimal A-ASSOCIATE-AC.
            0x01 => &[0x02, 0, 0, 0, 0, 4, 0, 1, 0, 0],
            // A-RELEASE-RQ → A-RELEASE-RP.
            0x05 => &[0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0],
            _ => return,
        };
        if s.write_all(reply).is_err() {
            return;
        }
    }
}

fn serve_ssh_banner(mut s: TcpStream) {
    let _ = s.write_all(b"SSH-2.0-biomed-jump-host\r\n");
}

fn ntp_reply(req: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 48];
    r[0] = 0x24; // LI 0, version 4, mode 4 (server)
    r[1] = 2; // stratum
    if req.len() >= 48 {
        // Originate timestamp = the client's transmit timestamp.
        r[24..32].copy_from_slice(&req[40..48]);
    }
    r
}

fn dns_reply(req: &[u8]) -> Vec<u8> {
    let mut r = req.to_vec();
    if r.len() >= 4 {
        r[2] |= 0x80; // a response
        r[3] = (r[3] & 0xf0) | 3; // NXDOMAIN: the demo has no zone
    }
    r
}
