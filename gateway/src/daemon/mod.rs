//! The controller daemon behind `lazaret run`.
//!
//! Start: load the XDP program with its maps pinned (adopting maps a previous run pinned:
//! flows, counters, device state and the enforcing generation are kept), compile the policy
//! directory into the next generation, install it through the generation switch, then
//! attach through pinned links (adopting existing ones atomically). From then on the
//! policy directory is watched and SIGHUP reloads; a policy that fails to compile or load
//! never replaces the generation that is enforcing. Stopping leaves everything pinned and
//! enforcing.

mod attach;
mod watch;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::Config,
    datapath::{AttachMode, Datapath, DatapathError, LoadOptions},
    policy,
};

pub use attach::detach_all;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("policy in {dir} refused:\n{errors}")]
    Policy { dir: PathBuf, errors: String },
    #[error("interface {0:?} does not exist on this host")]
    NoInterface(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// Outcome of one reload, for logs and metrics.
#[derive(Clone, Debug)]
pub struct ReloadReport {
    pub generation: u64,
    pub commit: Option<String>,
    pub duration: Duration,
    pub entries: usize,
}

/// The running controller.
pub struct Controller {
    config: Config,
    dp: Datapath,
    ifindexes: BTreeMap<String, u32>,
    generation: u64,
    commit: Option<String>,
    pin_dir: PathBuf,
}

impl Controller {
    /// Loads the program (adopting pinned maps), installs the policy, attaches. At start the
    /// policy must be valid unless a previous generation is already enforcing from the
    /// pinned maps, in which case that one keeps enforcing and the error is logged.
    pub fn start(config: Config) -> Result<Self, DaemonError> {
        let mut ifindexes = BTreeMap::new();
        for iface in &config.interfaces {
            let index = ifindex(&iface.name).ok_or_else(|| DaemonError::NoInterface(iface.name.clone()))?;
            ifindexes.insert(iface.name.clone(), index);
        }
        let pin_dir = pin_dir(&config)?;
        let dp = Datapath::load(&LoadOptions {
            pin_dir: Some(pin_dir.clone()),
        })?;
        let mut ctl = Controller {
            config,
            dp,
            ifindexes,
            generation: 0,
            commit: None,
            pin_dir,
        };
        let adopted = ctl.dp.active_site()?;
        ctl.generation = adopted.generation;
        if adopted.generation > 0 {
            tracing::info!(generation = adopted.generation, "adopted the pinned datapath state");
        }
        for iface in ctl.config.interfaces.clone() {
            ctl.dp.set_interface(ctl.ifindexes[&iface.name], iface.side.abi())?;
        }
        match ctl.reload() {
            Ok(_) => {}
            Err(e @ DaemonError::Policy { .. }) if ctl.generation > 0 => {
                tracing::error!(error = %e, generation = ctl.generation, "policy refused at start; the pinned generation keeps enforcing");
            }
            Err(e) => return Err(e),
        }
        ctl.attach_all()?;
        ctl.write_ready()?;
        Ok(ctl)
    }

    fn attach_all(&mut self) -> Result<(), DaemonError> {
        let root = self.config.pin_dir.clone();
        let legacy = attach::legacy_dirs(&root, &self.pin_dir);
        for iface in self.config.interfaces.clone() {
            let prog = self.dp.program_mut()?;
            match attach::attach(prog, &iface.name, iface.xdp_mode, &self.pin_dir, &legacy)? {
                attach::Attached::New(mode) => {
                    if iface.xdp_mode == AttachMode::Auto && mode == AttachMode::Skb {
                        tracing::warn!(interface = %iface.name, "attached in skb (generic) mode");
                    }
                    tracing::info!(interface = %iface.name, side = ?iface.side, mode = ?mode, "attached");
                }
                attach::Attached::Adopted => {
                    tracing::info!(interface = %iface.name, side = ?iface.side, "program swapped into the pinned link");
                }
            }
        }
        for dir in legacy {
            tracing::info!(dir = %dir.display(), "removing pins of an older datapath ABI");
            attach::remove_legacy(&dir);
        }
        Ok(())
    }

    /// Compiles the policy directory and installs it as the next generation. On error the
    /// enforcing generation is untouched.
    pub fn reload(&mut self) -> Result<ReloadReport, DaemonError> {
        let started = Instant::now();
        let dir = self.config.policy_dir.clone();
        let refused = |errors: String| DaemonError::Policy {
            dir: dir.clone(),
            errors,
        };
        let (_, compiled) = policy::load_and_compile(&dir).map_err(|e| refused(e.render()))?;
        let slot = self.dp.next_slot()?;
        let generation = self.generation + 1;
        let contents = compiled
            .map_contents(slot, generation, &self.ifindexes)
            .map_err(|e| refused(e.to_string()))?;
        self.dp.install(&contents)?;
        self.generation = generation;
        self.commit = watch::git_commit(&dir);
        let report = ReloadReport {
            generation,
            commit: self.commit.clone(),
            duration: started.elapsed(),
            entries: entry_count(&contents),
        };
        tracing::info!(
            generation,
            commit = report.commit.as_deref().unwrap_or("-"),
            entries = report.entries,
            ms = report.duration.as_millis() as u64,
            "policy generation enforcing"
        );
        Ok(report)
    }

    /// `state_dir/ready` holds the enforcing generation: a readiness signal for tests and
    /// service managers.
    fn write_ready(&self) -> Result<(), DaemonError> {
        let dir = &self.config.state_dir;
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating state directory {}", dir.display())))?;
        let path = dir.join("ready");
        let tmp = dir.join(".ready.tmp");
        std::fs::write(&tmp, format!("{}\n", self.generation)).map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    }

    pub fn datapath_mut(&mut self) -> &mut Datapath {
        &mut self.dp
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn reload_and_report(&mut self, why: &str) {
        match self.reload() {
            Ok(_) => {
                if let Err(e) = self.write_ready() {
                    tracing::error!(error = %e, "could not write the ready file");
                }
            }
            Err(e) => tracing::error!(trigger = why, error = %e, "reload refused; the previous generation keeps enforcing"),
        }
    }

    /// Serves until SIGTERM or SIGINT; SIGHUP and changes in the policy directory reload.
    /// Returning leaves the datapath pinned and enforcing.
    pub async fn serve(mut self) -> Result<(), DaemonError> {
        let mut term = signal(SignalKind::terminate()).map_err(io_err("installing a SIGTERM handler"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io_err("installing a SIGINT handler"))?;
        let mut hup = signal(SignalKind::hangup()).map_err(io_err("installing a SIGHUP handler"))?;
        let dir = self.config.policy_dir.clone();
        let (_watcher, mut changes) = watch::watch(&dir).map_err(|e| DaemonError::Io {
            what: format!("watching {}", dir.display()),
            source: std::io::Error::other(e),
        })?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => self.reload_and_report("SIGHUP"),
                Some(()) = changes.recv() => {
                    if watch::settle(&mut changes, &dir).await {
                        self.reload_and_report("policy directory changed");
                    }
                }
            }
        }
        tracing::info!(generation = self.generation, "stopping; the datapath stays pinned and keeps enforcing (lazaret detach removes it)");
        Ok(())
    }
}

fn entry_count(c: &crate::datapath::MapContents) -> usize {
    c.dev_mac.len()
        + c.dev_ip4.len()
        + c.dev_ip6.len()
        + c.devices.len()
        + c.peer4.len()
        + c.peer6.len()
        + c.ports.len()
}

/// `pin_dir/v<ABI_VERSION>`, on a bpf filesystem.
fn pin_dir(config: &Config) -> Result<PathBuf, DaemonError> {
    let dir = config.pin_dir.join(format!("v{}", lazaret_abi::ABI_VERSION));
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating pin directory {}", dir.display())))?;
    if !is_bpffs(&dir) {
        return Err(DaemonError::Io {
            what: format!(
                "{} is not on a bpf filesystem (mount one: mount -t bpf bpf {})",
                dir.display(),
                config.pin_dir.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    Ok(dir)
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and an out-parameter of the right type.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}
