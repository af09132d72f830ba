//! `cargo xtask demo`: St. Example General on one machine. Network namespaces stand in for
//! the device segments and the server room, the real `lazaret run` enforces `policies/` as
//! they are on a gateway namespace, and a story plays out: clinical traffic flows, a pump
//! is compromised and scans, it is quarantined and its session cut while the monitors keep
//! working, and biomed releases it.
//!
//! Everything the demo creates is named after its prefix (namespaces `<prefix>-*`, the
//! directory `/run/lazaret-demo-<prefix>`), so [`teardown`] finds it by name: on success,
//! on failure, on Ctrl-C, and for `cargo xtask demo --down` after `--keep`.
//!
//! Here: the hospital (devices, servers) and teardown; `story`: the steps; `lab`: the
//! namespaces, the daemon and the control socket; `clients` and `services`: the clinical
//! protocols on both ends.

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

mod clients;
mod lab;
mod services;
mod story;

use anyhow::{bail, Context, Result};
use clients::*;
use lazaret::daemon::control::{call, Request};
use services::*;

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
        // A pid we recorded; if it is gone, kill fails harmlessly.
        let target = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
        let gone = wait_until(Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid)
        });
        if !gone {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
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

fn dev(id: &str) -> &'static Dev {
    DEVICES.iter().find(|d| d.id == id).unwrap_or(&DEVICES[0])
}
