//! A routed lab with the real `lazaret run` on its gateway: start, kill, restart, reload,
//! and read the pinned counters. Everything lives in the test's own namespaces, temporary
//! directory and private bpffs, and is removed when the [`Lab`] drops.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lazaret::datapath::Datapath;

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

pub struct Lab {
    pub net: Routed,
    // Field order matters for drop: the daemon dies before the bpffs is unmounted and the
    // directory removed.
    pub daemon: Option<ChildGuard>,
    pub bpffs: BpfMount,
    pub tmp: TempDir,
    pub policy_dir: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
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
            daemon: None,
            bpffs,
            tmp,
            policy_dir,
            state_dir,
            config,
        })
    }

    /// Starts `lazaret run` and waits until it has written its ready file.
    pub fn start(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(self.state_dir.join("ready"));
        let bin = lazaret_bin()?;
        let daemon = self.net.gateway.spawn(&[
            bin.to_str().context("binary path")?,
            "run",
            "--config",
            self.config.to_str().context("config path")?,
        ])?;
        self.daemon = Some(daemon);
        let ready = self.state_dir.join("ready");
        let daemon = self.daemon.as_mut().context("daemon")?;
        wait_until(Duration::from_secs(30), || {
            ready.exists() || !daemon.running()
        });
        if !ready.exists() {
            bail!("lazaret run did not become ready:\n{}", daemon.stop());
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
        self.daemon
            .as_mut()
            .map(ChildGuard::stop)
            .unwrap_or_default()
    }

    /// Output of the daemon so far (stops it).
    pub fn stop(&mut self) -> String {
        self.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(200));
        self.daemon
            .as_mut()
            .map(ChildGuard::stop)
            .unwrap_or_default()
    }

    /// The pinned packet counters, by `stats_index`.
    pub fn stats(&self) -> Result<Vec<u64>> {
        let pins = self
            .bpffs
            .path
            .join(format!("v{}", lazaret_abi::ABI_VERSION));
        Ok(Datapath::pinned_stats(&pins)?)
    }

    pub fn write_policy(&self, text: &str) -> Result<()> {
        // Write-then-rename, like git does, so the watcher never sees half a file.
        let tmp = self.policy_dir.join(".hospital.toml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.policy_dir.join("hospital.toml"))?;
        Ok(())
    }
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
