//! The controller daemon behind `lazaret run`.
//!
//! Start: load the XDP program with its maps pinned (adopting maps a previous run pinned:
//! flows, counters, device state and the enforcing generation are kept), compile the policy
//! directory into the next generation, install it through the generation switch, then
//! attach through pinned links (adopting existing ones atomically). From then on the
//! policy directory is watched and SIGHUP reloads; a policy that fails to compile or load
//! never replaces the generation that is enforcing. Stopping leaves everything pinned and
//! enforcing.
//!
//! With `dataplane = "nftables"` no BPF is loaded at all (no program, no maps, no bpffs):
//! `dp` is `None`, the controller's own state (quarantines in the state directory, the
//! generation in the ready file) drives the nftables table, and the XDP-only operations
//! (flow listing, port pins, counters per device) answer that there is no XDP datapath.

pub mod api;
pub mod compiler;
pub mod containment;
pub mod control;
pub mod deviation;
pub mod events;
pub mod interfaces;
pub mod kernel;
pub mod learn;
pub mod lkg;
pub mod local;
pub mod pins;
pub mod preflight;
pub mod propose;
pub mod quarantine;
pub mod reloader;
mod state;
pub mod unknown;
pub mod watch;
pub mod webhook;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::dataplane::{Enforcer, IfaceMode};
use crate::{
    config::Config,
    dataplane::{
        nft,
        xdp::{attach, AttachMode, Datapath, DatapathError, LoadOptions},
        DeviceDataplane,
    },
    metrics::{DatapathSnapshot, Metrics, ReloadFailure},
    policy::{self, Compiled},
};
use control::{Call, Reply, Request};
use events::endpoint;
use quarantine::{Action, Quarantines};

pub use crate::dataplane::xdp::attach::detach_all;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("policy in {dir} refused:\n{errors}")]
    Policy {
        dir: PathBuf,
        errors: String,
        /// Every error is a file that could not be read (permissions, a dangling link):
        /// counted as `io`, not `invalid_policy`, since the fix is on the host, not in the
        /// policy.
        unreadable: bool,
    },
    #[error("interface {0:?} does not exist on this host")]
    NoInterface(String),
    #[error("detached on request (lazaret detach --force): restart lazaret to enforce again")]
    StoodDown,
    #[error("this gateway runs dataplane = \"nftables\": there is no XDP datapath ({0})")]
    NoXdp(&'static str),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(transparent)]
    Nftables(#[from] crate::dataplane::nft::NftError),
    #[error(transparent)]
    Dataplane(#[from] crate::dataplane::DataplaneError),
    #[error("metrics: {0}")]
    Metrics(String),
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

/// How often datapath counters are read into the metrics.
const OBSERVE_EVERY: Duration = Duration::from_secs(5);

/// How often the configured interfaces are looked up by name. An interface that is deleted
/// and created again has no XDP program until the daemon notices: traffic on it passes
/// unjudged for up to this long (one `if_nametoindex` per interface per check).
const INTERFACES_EVERY: Duration = Duration::from_millis(250);

/// How often the loop beats (heartbeat metric, `/healthz`, systemd's watchdog at half its
/// period if that is shorter).
const BEAT_EVERY: Duration = Duration::from_secs(1);

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The running controller: the single owner of the datapath.
pub struct Controller {
    config: Config,
    /// The XDP datapath; `None` with `dataplane = "nftables"`, which runs without BPF.
    dp: Option<Datapath>,
    /// The configured interfaces: ifindexes, what enforces on each, which are held closed.
    ifaces: interfaces::Interfaces,
    /// The enforcing generation, the next one, and the reloads asked for meanwhile.
    reloads: reloader::Reloader<Staged>,
    pin_dir: PathBuf,
    metrics: Arc<Metrics>,
    compiled: Option<Arc<Compiled>>,
    /// Loads the policy directory, patching device-only edits into the last compile, off
    /// the event loop once serving.
    compiler: compiler::Compiler,
    /// Where compile results come back to the loop (set by [`Controller::serve`]).
    compiled_tx: Option<mpsc::UnboundedSender<compiler::Done>>,
    started: Instant,
    quarantines: Quarantines,
    /// Writes of the state directory failing now, by state (see [`metrics::health::PERSISTED`]):
    /// enforced but not surviving a reboot. Shown by `status`, exported, cleared by the next
    /// successful write of the same state.
    state_errors: BTreeMap<&'static str, String>,
    /// The last-known-good policy in the state directory.
    lkg: lkg::Keeper,
    /// The generation enforcing is the last-known-good (the repository was refused at start).
    on_lkg: bool,
    /// No policy at all (the repository refused at start, no last-known-good, nothing
    /// pinned): the device-side interfaces are held closed until a reload succeeds.
    no_policy: bool,
    /// The datapath maps' entries and capacities, as last read by `observe`.
    usage: Vec<(&'static str, u64, u64)>,
    /// Second handles of the maps `observe` reads, for its thread (serving only).
    reader: Option<Arc<std::sync::Mutex<crate::dataplane::xdp::DatapathReader>>>,
    /// Where `observe`'s thread sends its snapshot (serving only), and whether one runs.
    observed_tx: Option<mpsc::UnboundedSender<Option<DatapathSnapshot>>>,
    observing: bool,
    /// Signalled by the install thread when the slot is written (serving only).
    staged_tx: Option<mpsc::UnboundedSender<()>>,
    /// Quarantine decisions (deviations, thresholds, TTLs): pure, see [`containment`].
    containment: containment::Containment,
    unknowns: unknown::Unknowns,
    /// What `lazaret events` shows.
    feed: events::Feed,
    /// Started by [`Controller::serve`] when `[webhook]` is configured.
    webhook: Option<webhook::Webhook>,
    /// Flows of learn-mode devices, and whether they changed since the last write.
    learned: learn::Learned,
    learned_dirty: bool,
    /// The nftables dataplane (`dataplane = "nftables"`, or `auto` after an attach failed).
    nft: crate::dataplane::nft::NftDataplane,
    /// The gateway's own addresses, as last given to the dataplanes (see [`local`]).
    local: std::collections::BTreeSet<std::net::IpAddr>,
    /// Bridge-port pins, as last read from the dataplanes and kept in the state directory.
    pins: pins::Pins,
}

impl Controller {
    /// Loads the program (adopting pinned maps), installs the policy, attaches. At start the
    /// policy must be valid unless a previous generation is already enforcing from the
    /// pinned maps, in which case that one keeps enforcing and the error is logged.
    pub fn start(config: Config) -> Result<Self, DaemonError> {
        let compiler = compiler::Compiler::new(&config.policy_dir);
        // At boot lazaret starts before the network is configured: an interface (a VLAN, a
        // bridge) may not exist yet. It is held closed by name (see `nft::hold`) under the
        // placeholder ifindex 0, which no interface has, so devices bound to it fail their
        // binding check; `check_interfaces` attaches when it appears.
        let ifaces = interfaces::Interfaces::new(&config.interfaces, config.dataplane, ifindex);
        // nftables alone needs no BPF: nothing is loaded, no bpffs is needed or touched.
        let xdp = config.dataplane != crate::config::Dataplane::Nftables;
        let (pin_dir, dp) = if xdp {
            let pin_dir = pin_dir(&config)?;
            let dp = Datapath::load(&LoadOptions {
                pin_dir: Some(pin_dir.clone()),
            })?;
            (pin_dir, Some(dp))
        } else {
            let version = format!("v{}", lazaret_abi::ABI_VERSION);
            (config.pin_dir.join(version), None)
        };
        let metrics = Metrics::new(env!("CARGO_PKG_VERSION"))
            .map_err(|e| DaemonError::Metrics(e.to_string()))?;
        let mut nft = crate::dataplane::nft::NftDataplane::new(metrics.registry())
            .map_err(|e| DaemonError::Metrics(e.to_string()))?;
        if config.dataplane == crate::config::Dataplane::Nftables {
            for iface in &config.interfaces {
                nft.add_interface(&iface.name);
            }
        }
        let (quarantines, state_error) = Quarantines::load(&config.state_dir);
        let config_state_dir = config.state_dir.clone();
        let mut ctl = Controller {
            config,
            dp,
            ifaces,
            reloads: reloader::Reloader::new(read_generation(&config_state_dir)),
            pin_dir,
            metrics: Arc::new(metrics),
            compiled: None,
            compiler,
            compiled_tx: None,
            started: Instant::now(),
            quarantines,
            state_errors: BTreeMap::new(),
            lkg: lkg::Keeper::new(&config_state_dir),
            on_lkg: false,
            no_policy: false,
            staged_tx: None,
            usage: Vec::new(),
            reader: None,
            observed_tx: None,
            observing: false,
            containment: containment::Containment::default(),
            unknowns: Self::load_unknowns(&config_state_dir),
            feed: events::Feed::default(),
            webhook: None,
            learned: Self::load_learned(&config_state_dir),
            learned_dirty: false,
            nft,
            local: std::collections::BTreeSet::new(),
            pins: pins::Pins::load(&config_state_dir),
        };
        ctl.sync_local();
        ctl.restore_pins();
        let legacy = match ctl.dp.as_mut() {
            Some(dp) => {
                let adopted = dp.active_site()?;
                ctl.reloads.adopt(adopted.generation);
                if adopted.generation > 0 {
                    tracing::info!(
                        generation = adopted.generation,
                        "adopted the pinned datapath state"
                    );
                }
                attach::legacy_dirs(&ctl.config.pin_dir, &ctl.pin_dir)
            }
            None => Vec::new(),
        };
        // An upgrade from an older datapath ABI: continue its generation numbering, so the
        // flows carried over are all older than the first new generation and re-judged.
        for dir in &legacy {
            if let Some(g) = Datapath::pinned_generation(dir) {
                ctl.reloads.adopt(g);
            }
        }
        for iface in ctl.config.interfaces.clone() {
            if let Some(index) = ctl.ifaces.ifindex(&iface.name) {
                let config = ctl.iface_config(&iface);
                if let Some(dp) = ctl.dp.as_mut() {
                    dp.set_interface_config(index, config)?;
                }
            }
        }
        let held = ctl.ifaces.held();
        if !held.is_empty() {
            ctl.metrics.held(held.len());
            // Closed before anything else happens (the policy may take a while to compile).
            ctl.nft
                .hold(held)
                .map_err(|e| DaemonError::Nftables(e.into()))?;
        }
        // Without XDP, the quarantines an earlier run's nftables table enforces are read
        // before the first table of this run replaces it: the state file may have lost one.
        // Its table also keeps enforcing if the repository is refused now (see
        // `start_without_repository`), like pinned XDP maps do.
        let mut kernel_quarantines = Vec::new();
        if ctl.dp.is_none() && ctl.nft.table_in_kernel() {
            kernel_quarantines = ctl.nft.kernel_quarantines();
            ctl.reloads
                .adopt(read_generation(&ctl.config.state_dir).max(1));
        }
        match ctl.reload() {
            Ok(_) => {}
            Err(e @ DaemonError::Policy { .. }) => ctl.start_without_repository(&e)?,
            Err(e) => return Err(e),
        }
        ctl.restore_quarantines(state_error, &kernel_quarantines)?;
        // (`legacy` is empty without an XDP datapath.)
        if let Some(dp) = ctl.dp.as_mut() {
            for dir in &legacy {
                match dp.migrate_flows(dir) {
                    Ok(n) => {
                        tracing::info!(from = %dir.display(), flows = n, "flows carried over from the older datapath");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not carry flows over; their sessions will have to reconnect");
                    }
                }
            }
        }
        ctl.attach_all()?;
        // A hold an earlier run left (it died while an interface was gone): every interface
        // is attached now. Best effort: without nft there is no hold to lift.
        if let Err(e) = ctl.nft.hold(&ctl.held_interfaces()) {
            tracing::debug!(error = %e, "lifting an interface hold");
        }
        Ok(ctl)
    }

    /// The policy repository was refused at start (`refused`): enforce the last-known-good
    /// policy; without one, keep a generation still pinned from before (a restart, not a
    /// reboot); without that either, hold the device-side interfaces closed until a reload
    /// succeeds. Never start open.
    fn start_without_repository(&mut self, refused: &DaemonError) -> Result<(), DaemonError> {
        tracing::error!(error = %refused, "the policy repository is refused at start");
        match lkg::Snapshot::load(&self.config.state_dir) {
            Ok(Some(snap)) => {
                let job = self.job("last-known-good")?.ok_or(DaemonError::StoodDown)?;
                let result = self.compiler.compile_snapshot(&snap, &job);
                match result.and_then(|out| self.install(job, out)) {
                    Ok(r) => {
                        // `status` keeps saying why: the repository is still refused.
                        self.reloads.refused(refused.to_string());
                        tracing::error!(
                            generation = r.generation,
                            commit = snap.commit.as_deref().unwrap_or("-"),
                            saved = snap.saved,
                            enforced_as = snap.generation,
                            "enforcing the LAST-KNOWN-GOOD policy until the repository is fixed"
                        );
                        return Ok(());
                    }
                    Err(e) => {
                        // What the operator must fix is the repository.
                        self.reloads.refused(refused.to_string());
                        tracing::error!(error = %e, "the last-known-good policy cannot be enforced");
                    }
                }
            }
            Ok(None) => tracing::error!("no last-known-good policy in the state directory"),
            Err(e) => tracing::error!(error = %e, "the last-known-good policy is unusable"),
        }
        if self.reloads.generation() > 0 {
            // Pinned XDP maps, or (nftables alone) the table an earlier run left in the
            // kernel: what enforced before the restart keeps enforcing.
            tracing::error!(
                generation = self.reloads.generation(),
                "the generation enforcing before the restart keeps enforcing"
            );
            return Ok(());
        }
        // Nothing to enforce: the device ports are closed, by name, before they exist.
        self.no_policy = true;
        let held = self.held_interfaces();
        tracing::error!(held = %names(&held), "NO POLICY to enforce: device-side interfaces held closed until the repository compiles");
        self.metrics.held(held.len());
        self.nft
            .hold(&held)
            .map_err(|e| DaemonError::Nftables(e.into()))
    }

    /// The interfaces held closed: those that disappeared (XDP cannot be on them when they
    /// return) and, with no policy, every device-side interface.
    fn held_interfaces(&self) -> std::collections::BTreeSet<String> {
        let mut held = self.ifaces.held().clone();
        if self.no_policy {
            held.extend(
                self.config
                    .interfaces
                    .iter()
                    .filter(|i| i.side == crate::config::Side::Devices)
                    .map(|i| i.name.clone()),
            );
        }
        held
    }

    /// Puts the persisted quarantines back into the datapath (after a reboot the pinned
    /// state is gone), and lists the quarantines the pinned datapath enforces that the
    /// state file does not know (corrupt, or a write failed) as recovered: none is dropped
    /// and none is invisible.
    fn restore_quarantines(
        &mut self,
        state_error: Option<quarantine::StateError>,
        kernel: &[([u8; 6], u8)],
    ) -> Result<(), DaemonError> {
        let devices: Vec<(String, u64, Option<[u8; 6]>)> = self
            .compiled
            .as_ref()
            .map(|c| {
                c.devices
                    .iter()
                    .map(|d| (d.id.clone(), d.hash, d.mac.map(|m| m.0)))
                    .collect()
            })
            .unwrap_or_default();
        // Every quarantine the pinned datapath enforces is listed, whether the state file
        // was corrupt or merely missing one (a write that failed before a restart): a
        // device the datapath drops is never one `quarantine list` does not show.
        let corrupt = state_error.is_some();
        if let Some(err) = state_error {
            tracing::error!(error = %err, "quarantine state could not be read");
        }
        // Only ever stricter: where the datapath enforces more than the file records (a
        // quarantine whose write failed), the datapath's is kept; where the file records
        // more (a release whose write failed, or a reboot emptied the datapath), the file's
        // is applied below. A quarantine is never dropped by a restart.
        let mut recovered = 0;
        let mut enforced = Vec::new();
        for (id, hash, mac) in &devices {
            let quarantine = match self.dp.as_mut() {
                Some(dp) => dp.device_state(*hash)?.quarantine,
                // nftables alone: what its table of the earlier run enforced, by MAC.
                None => kernel
                    .iter()
                    .find(|(m, _)| Some(*m) == *mac)
                    .map_or(lazaret_abi::QUARANTINE_NONE, |(_, q)| *q),
            };
            enforced.push((id, quarantine));
        }
        for (id, quarantine) in enforced {
            let action = match quarantine {
                lazaret_abi::QUARANTINE_RESTRICT => Action::Restrict,
                lazaret_abi::QUARANTINE_ISOLATE => Action::Isolate,
                _ => continue,
            };
            let recorded = self.quarantines.entries.get(id).map(|e| e.action);
            if recorded.is_some_and(|r| r >= action) {
                continue;
            }
            let reason = if corrupt {
                "recovered from the datapath after the state file was found corrupt".to_string()
            } else {
                format!(
                    "recovered from the datapath: the state file recorded {} (a write failed?)",
                    recorded.map_or("no quarantine", Action::name)
                )
            };
            tracing::warn!(device = %id, action = action.name(), "quarantine recovered from the datapath");
            self.quarantines.entries.insert(
                id.clone(),
                quarantine::Entry {
                    action,
                    reason,
                    by: "lazaret".into(),
                    since: quarantine::now(),
                    until: None,
                    recovered: true,
                },
            );
            recovered += 1;
        }
        if corrupt || recovered > 0 {
            self.save_quarantines();
        }
        for (id, entry) in self.quarantines.entries.clone() {
            match devices.iter().find(|(d, _, _)| *d == id) {
                Some((_, hash, _)) => self.apply_quarantine(*hash, entry.action)?,
                None => {
                    tracing::warn!(device = %id, "a quarantined device is not in the policy; its quarantine is kept");
                }
            }
        }
        self.update_quarantine_metrics();
        Ok(())
    }

    /// Sets the device's quarantine in the datapath and bumps its epoch, so its flows are
    /// re-judged against the new state on their next packet.
    fn apply_quarantine(&mut self, hash: u64, action: Action) -> Result<(), DaemonError> {
        for dp in self.dataplanes() {
            dp.set_quarantine(hash, action.abi())?;
        }
        Ok(())
    }

    /// Every dataplane, for what the controller pushes to all alike (see [`crate::dataplane`]):
    /// XDP (unless `dataplane = "nftables"`), then nftables (a no-op where it enforces
    /// nowhere).
    fn dataplanes(&mut self) -> impl Iterator<Item = &mut dyn DeviceDataplane> {
        let xdp = self.dp.as_mut().map(|d| d as &mut dyn DeviceDataplane);
        let nft: &mut dyn DeviceDataplane = &mut self.nft;
        xdp.into_iter().chain(std::iter::once(nft))
    }

    /// Writes the quarantine list; the datapath enforces regardless, the file is what
    /// survives a reboot.
    fn save_quarantines(&mut self) {
        let result = self.quarantines.save();
        self.persisted("quarantine", result);
    }

    /// Records the outcome of a write of the state directory: a failure is logged,
    /// counted, and shown by `status` until the same state is written successfully.
    fn persisted<E: std::fmt::Display>(&mut self, state: &'static str, result: Result<(), E>) {
        match result {
            Ok(()) => {
                self.state_errors.remove(state);
                self.metrics
                    .persist(state, true, self.state_errors.is_empty());
            }
            Err(e) => {
                tracing::error!(state, error = %e, "could not write the state directory; enforced, but a reboot would lose it");
                self.state_errors.insert(state, e.to_string());
                self.metrics.persist(state, false, false);
            }
        }
    }

    /// The control reply of a change that is enforced: an error (the CLI exits non-zero)
    /// if `state` could not be written, since a reboot would undo it.
    fn enforced_reply(&self, state: &str, what: String, data: &impl serde::Serialize) -> Reply {
        match self.state_errors.get(state) {
            None => Reply::of(data),
            Some(e) => Reply::error(format!(
                "{what} is enforced, but the state directory could not record it ({e}): a restart of the gateway would undo it. Fix the state directory; `lazaret status` shows the failure until a write succeeds"
            )),
        }
    }

    fn update_quarantine_metrics(&self) {
        let mut counts = BTreeMap::new();
        for e in self.quarantines.entries.values() {
            *counts.entry(e.action.name()).or_insert(0u64) += 1;
        }
        let by: Vec<(&str, u64)> = ["alert", "restrict", "isolate"]
            .iter()
            .map(|a| (*a, counts.get(a).copied().unwrap_or(0)))
            .collect();
        self.metrics.set_quarantined(&by);
    }

    fn attach_all(&mut self) -> Result<(), DaemonError> {
        let root = self.config.pin_dir.clone();
        let legacy = attach::legacy_dirs(&root, &self.pin_dir);
        let mut fell_back = false;
        for iface in self.config.interfaces.clone() {
            if self.ifaces.ifindex(&iface.name).is_none() {
                // Not there yet: held closed (since `Interfaces::new`), attached when it
                // appears.
                if let Some(mode) = self.ifaces.mode(&iface.name) {
                    self.set_mode(&iface.name, mode);
                }
                continue;
            }
            if self.nft.uses(&iface.name) {
                // nftables enforces here already (applied by the reload before this); an
                // XDP link pinned by an earlier run in XDP mode is released.
                let _ = std::fs::remove_file(attach::link_pin(&self.pin_dir, &iface.name));
                self.set_mode(&iface.name, IfaceMode::Enforcing(Enforcer::Nftables));
                continue;
            }
            let prog = xdp(&mut self.dp, "attaching an interface")?.program_mut()?;
            let attached =
                attach::attach(prog, &iface.name, iface.xdp_mode, &self.pin_dir, &legacy);
            let attached = match attached {
                Err(e) if self.config.dataplane == crate::config::Dataplane::Auto => {
                    tracing::warn!(interface = %iface.name, error = %e, "XDP cannot attach: nftables enforces on this interface");
                    self.nft.add_interface(&iface.name);
                    self.set_mode(&iface.name, IfaceMode::Enforcing(Enforcer::Nftables));
                    fell_back = true;
                    continue;
                }
                other => other?,
            };
            let mode = match attached {
                attach::Attached::New(mode) => {
                    if iface.xdp_mode == AttachMode::Auto && mode == AttachMode::Skb {
                        tracing::warn!(interface = %iface.name, "attached in skb (generic) mode");
                    }
                    let mode = Enforcer::xdp(mode);
                    tracing::info!(interface = %iface.name, side = iface.side.name(), mode = mode.label(), "attached");
                    mode
                }
                attach::Attached::Adopted => {
                    tracing::info!(interface = %iface.name, side = iface.side.name(), "program swapped into the pinned link");
                    attach::recorded_mode(&self.config.state_dir, &iface.name)
                        .unwrap_or(Enforcer::XdpNative)
                }
            };
            attach::record_mode(&self.config.state_dir, &iface.name, mode);
            self.set_mode(&iface.name, IfaceMode::Enforcing(mode));
        }
        self.nft.retire();
        if fell_back {
            // A flow must meet one dataplane at both ends: the XDP flow table and conntrack
            // do not know each other's flows (a reply entering an XDP interface for a flow
            // that nftables admitted would be dropped as flowless). So once one interface
            // needs nftables, every interface uses it.
            for iface in self.config.interfaces.clone() {
                if !self.nft.uses(&iface.name) {
                    tracing::warn!(interface = %iface.name, "moved to nftables with the interfaces that fell back");
                    self.nft.add_interface(&iface.name);
                    self.set_mode(&iface.name, IfaceMode::Enforcing(Enforcer::Nftables));
                }
            }
            self.nft.reapply()?;
            for iface in &self.config.interfaces {
                let _ = std::fs::remove_file(attach::link_pin(&self.pin_dir, &iface.name));
            }
        }
        for dir in legacy {
            tracing::info!(dir = %dir.display(), "removing pins of an older datapath ABI");
            attach::remove_legacy(&dir);
        }
        Ok(())
    }

    /// Compiles the policy directory and installs it as the next generation, on this thread
    /// (at start). On error the enforcing generation is untouched.
    pub fn reload(&mut self) -> Result<ReloadReport, DaemonError> {
        self.reload_now("start")
    }

    fn reload_now(&mut self, why: &str) -> Result<ReloadReport, DaemonError> {
        let job = self.job(why)?.ok_or(DaemonError::StoodDown)?;
        self.metrics.reload_attempted();
        let result = self.compiler.compile(&job);
        self.finish(job, result)
    }

    /// The next reload's job (the inactive slot, the next generation), if one may start now:
    /// `None` while another runs (this one runs after it) or when stood down.
    fn job(&mut self, why: &str) -> Result<Option<compiler::Job>, DaemonError> {
        let generation = match self.reloads.ask(why) {
            reloader::Ask::Start { generation } => generation,
            reloader::Ask::Queued => return Ok(None),
            reloader::Ask::StoodDown => {
                tracing::warn!(
                    trigger = why,
                    "not reloading: detached on request (restart lazaret to enforce again)"
                );
                return Ok(None);
            }
        };
        // nftables alone has no slots: its table is replaced whole.
        let slot = self.dp.as_mut().map_or(Ok(0), Datapath::next_slot);
        let slot = match slot {
            Ok(slot) => slot,
            Err(e) => {
                self.reloads.refused(e.to_string());
                return Err(e.into());
            }
        };
        Ok(Some(compiler::Job {
            slot,
            generation,
            ifindexes: self.ifaces.ifindexes().clone(),
            why: why.to_string(),
            started: Instant::now(),
        }))
    }

    /// Installs a compile's result (or reports its failure) and counts it in the metrics.
    fn finish(
        &mut self,
        job: compiler::Job,
        result: Result<compiler::Output, DaemonError>,
    ) -> Result<ReloadReport, DaemonError> {
        let started = job.started;
        let result = result.and_then(|out| self.install(job, out));
        self.record(started, result)
    }

    /// Counts a reload's outcome in the metrics and the status.
    fn record(
        &mut self,
        started: Instant,
        result: Result<ReloadReport, DaemonError>,
    ) -> Result<ReloadReport, DaemonError> {
        match result {
            Ok(r) => {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.metrics
                    .reload_succeeded(r.duration, r.generation, r.commit.as_deref(), unix);
                if self.no_policy {
                    tracing::warn!(
                        generation = r.generation,
                        "a policy enforces: the device-side interfaces are no longer held closed"
                    );
                    self.no_policy = false;
                    self.update_hold();
                }
                Ok(r)
            }
            Err(e) => {
                let reason = match e {
                    DaemonError::Policy {
                        unreadable: true, ..
                    } => ReloadFailure::Io,
                    DaemonError::Policy { .. } => ReloadFailure::InvalidPolicy,
                    DaemonError::Io { .. } => ReloadFailure::Io,
                    DaemonError::Nftables(_)
                    | DaemonError::Dataplane(crate::dataplane::DataplaneError::Nftables(_)) => {
                        ReloadFailure::Nftables
                    }
                    _ => ReloadFailure::Datapath,
                };
                self.metrics.reload_failed(started.elapsed(), reason);
                self.reloads.refused(e.to_string());
                Err(e)
            }
        }
    }

    pub fn generation(&self) -> u64 {
        self.reloads.generation()
    }

    /// Asks for a reload. Serving, the policy is compiled off the loop and installed when
    /// the result arrives ([`Self::finish_reload`]); one asked for while another compiles
    /// runs after it (as one, however many were asked for).
    fn reload_and_report(&mut self, why: &str) {
        let Some(tx) = self.compiled_tx.clone() else {
            // Not serving yet: on this thread.
            self.report(why, |ctl| ctl.reload_now(why));
            return;
        };
        match self.job(why) {
            Ok(Some(job)) => {
                self.metrics.reload_attempted();
                self.compiler.spawn(job, tx);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "reload refused; the previous generation keeps enforcing");
            }
        }
    }

    /// A compile finished: install it (the generation flip happens here, on the loop), then
    /// start a reload asked for meanwhile.
    fn finish_reload(&mut self, done: compiler::Done) {
        let compiler::Done { job, result } = done;
        let (why, started) = (job.why.clone(), job.started);
        let tx = self.staged_tx.clone();
        let signal = Box::new(move || {
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        });
        match result.and_then(|out| self.stage_install(job, out, signal)) {
            // Written off the loop; `finish_install` flips when the thread signals.
            Ok(staged) => self.reloads.compiled(staged),
            Err(e) => {
                self.report(&why, |ctl| ctl.record(started, Err(e)));
                self.next_reload();
            }
        }
    }

    /// The staged slot is written: the generation switch, on the loop.
    fn finish_install(&mut self) {
        // None when stood down meanwhile: the staged generation is never switched to.
        let Some((why, staged)) = self.reloads.take_staged() else {
            return;
        };
        let started = staged.job.started;
        self.report(&why, |ctl| {
            let result = ctl.complete_install(staged);
            ctl.record(started, result)
        });
        self.next_reload();
    }

    /// Starts a reload asked for while the last one ran.
    fn next_reload(&mut self) {
        if let Some(next) = self.reloads.take_pending() {
            self.reload_and_report(&next);
        }
    }

    fn report(
        &mut self,
        why: &str,
        reload: impl FnOnce(&mut Self) -> Result<ReloadReport, DaemonError>,
    ) {
        match reload(self) {
            Ok(_) => {
                if let Err(e) = self.write_ready() {
                    tracing::error!(error = %e, "could not write the ready file");
                }
            }
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "reload refused; the previous generation keeps enforcing");
            }
        }
    }

    /// Installs a compiled generation on this thread (at start): [`Self::stage_install`],
    /// then [`Self::complete_install`].
    fn install(
        &mut self,
        job: compiler::Job,
        out: compiler::Output,
    ) -> Result<ReloadReport, DaemonError> {
        let staged = self.stage_install(job, out, Box::new(|| {}))?;
        self.complete_install(staged)
    }

    /// The first half of an install: nftables first (a table it refuses fails the reload
    /// before anything changed), then the XDP maps' inactive slot, written on a thread
    /// (`done` is called there when it is): a whole policy's half second of map writes
    /// never holds up the loop.
    fn stage_install(
        &mut self,
        job: compiler::Job,
        out: compiler::Output,
        done: Box<dyn FnOnce() + Send>,
    ) -> Result<Staged, DaemonError> {
        let compiler::Output {
            compiled,
            how,
            contents,
            commit,
            sources,
        } = out;
        let generation = job.generation;
        // nftables first: a table it refuses fails the reload before anything changed.
        let sides: Vec<(String, lazaret_abi::IfaceConfig)> = self
            .config
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), self.iface_config(i)))
            .collect();
        // The controller's quarantines, not anything read back from XDP: the two
        // dataplanes are given the same state.
        let mut states = policy::DeviceStates::default();
        for d in &compiled.devices {
            if let Some(e) = self.quarantines.entries.get(&d.id) {
                states.set_quarantine(d.hash, e.action.abi());
            }
        }
        if let Some(took) = self.nft.apply(
            &contents,
            self.ifaces.ifindexes(),
            &sides,
            states,
            generation,
        )? {
            tracing::info!(
                generation,
                ms = took.as_millis() as u64,
                "nftables table applied"
            );
        }
        let entries = entry_count(&contents);
        match self.dp.as_mut() {
            Some(dp) => dp.stage(contents, done)?,
            // Nothing to write off the loop: the nftables table is already applied.
            None => done(),
        }
        Ok(Staged {
            job,
            compiled,
            how,
            commit,
            sources,
            entries,
        })
    }

    /// The second half: the generation switch (on the loop, once the slot is written), and
    /// everything that follows from the new generation.
    fn complete_install(&mut self, staged: Staged) -> Result<ReloadReport, DaemonError> {
        let Staged {
            job,
            compiled,
            how,
            commit,
            sources,
            entries,
        } = staged;
        let (started, generation) = (job.started, job.generation);
        if let Some(dp) = self.dp.as_mut() {
            dp.commit()?;
            // The retired slot still holds the generation before last: bring it up to this
            // one in the background, so the next small edit writes only its own difference.
            let (c, ix) = (compiled.clone(), self.ifaces.ifindexes().clone());
            if let Err(e) = dp.sync_retired(move |slot| c.map_contents(slot, generation, &ix).ok())
            {
                tracing::warn!(error = %e, "could not start bringing the retired slot up to date");
            }
        }
        self.reloads.enforcing(generation, commit);
        self.on_lkg = sources.is_none();
        // What enforces now is the last-known-good: kept for a start with a broken
        // repository (on this thread at start, off the loop when serving).
        match sources {
            Some(src) if self.compiled_tx.is_some() => self.lkg.keep(
                src,
                generation,
                self.reloads.commit().map(str::to_string),
                &self.config.policy_dir,
            ),
            Some(src) => {
                let result = self.lkg.keep_now(
                    &src,
                    generation,
                    self.reloads.commit().map(str::to_string),
                    &self.config.policy_dir,
                );
                self.persisted("last_known_good", result);
            }
            None => {}
        }
        self.metrics.last_known_good(self.on_lkg);
        let mut modes = [0u64; 3];
        for d in &compiled.devices {
            modes[match d.mode {
                policy::model::Mode::Enforce => 0,
                policy::model::Mode::Audit => 1,
                policy::model::Mode::Learn => 2,
            }] += 1;
        }
        self.metrics
            .set_devices_by_mode(modes[0], modes[1], modes[2]);
        let known: std::collections::BTreeSet<String> = compiled
            .devices
            .iter()
            .filter_map(|d| d.mac.map(|m| unknown::fmt_mac(&m.0)))
            .collect();
        self.unknowns.retain_unknown(&known);
        self.metrics
            .set_unknown_devices(self.unknowns.devices.len() as u64);
        self.containment.set_policy(&compiled);
        // The previous compile of a big policy takes ~100 ms to free: not on this thread.
        if let Some(old) = self.compiled.replace(compiled) {
            std::thread::spawn(move || drop(old));
        }
        let report = ReloadReport {
            generation,
            commit: self.reloads.commit().map(str::to_string),
            duration: started.elapsed(),
            entries,
        };
        let patched = match how {
            policy::incremental::How::Full => None,
            policy::incremental::How::Patched { devices } => Some(devices),
        };
        tracing::info!(
            generation,
            commit = report.commit.as_deref().unwrap_or("-"),
            entries = report.entries,
            patched_devices = patched,
            ms = report.duration.as_millis() as u64,
            "policy generation enforcing"
        );
        Ok(report)
    }

    /// `state_dir/ready` holds the enforcing generation: a readiness signal for tests and
    /// service managers. `state_dir/generation` holds it too, for the next start (see
    /// [`read_generation`]); nobody removes that one.
    fn write_ready(&mut self) -> Result<(), DaemonError> {
        let dir = &self.config.state_dir;
        std::fs::create_dir_all(dir).map_err(io_err(format!(
            "creating state directory {}",
            dir.display()
        )))?;
        let kept = state::write_atomic(
            &dir.join(GENERATION_FILE),
            format!("{}\n", self.reloads.generation()).as_bytes(),
        );
        self.persisted("generation", kept);
        let dir = &self.config.state_dir;
        let path = dir.join("ready");
        let tmp = dir.join(".ready.tmp");
        std::fs::write(&tmp, format!("{}\n", self.reloads.generation()))
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    }

    /// Reads the datapath's counters into the metrics, on a thread of its own when serving
    /// (with a big policy, counting map entries and reading every device's counters takes
    /// tens of milliseconds the loop must not spend); the snapshot comes back through
    /// `observed`. At most one read at a time.
    fn observe(&mut self) {
        let Some(tx) = self.observed_tx.clone() else {
            return;
        };
        if self.observing {
            return;
        }
        let reader = self.reader.clone();
        let devices: Vec<(u64, Option<String>)> = self
            .compiled
            .as_ref()
            .map(|c| {
                c.devices
                    .iter()
                    .map(|d| (d.hash, d.class.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let nft = self.nft.counter_reader();
        self.observing = true;
        tokio::task::spawn_blocking(move || {
            let mut reader = reader
                .as_ref()
                .map(|r| r.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            let _ = tx.send(read_snapshot(reader.as_deref_mut(), &devices, nft.as_ref()));
        });
    }

    /// A snapshot `observe` read.
    fn observed(&mut self, snap: Option<DatapathSnapshot>) {
        self.observing = false;
        if let Some(snap) = snap {
            self.metrics.counters_read(unix_ms() as f64 / 1000.0);
            self.usage.clone_from(&snap.map_entries);
            self.metrics.observe_datapath(&snap);
        }
    }

    /// Answers one control request.
    fn handle(&mut self, request: Request, peer: &str) -> Reply {
        match request {
            Request::Status {} => Reply::of(&self.status()),
            Request::Devices {} => match self.devices() {
                Some(devices) => Reply::of(&devices),
                None => Reply::error("no policy loaded"),
            },
            Request::Flows { device } => match self.flows(&device) {
                Ok(flows) => Reply::of(&flows),
                Err(e) => Reply::error(e),
            },
            Request::UnknownDevices {} => {
                Reply::data(json!(self.unknowns.devices.values().collect::<Vec<_>>()))
            }
            Request::QuarantineList {} => Reply::data(json!(self.quarantines.entries)),
            Request::Pins {} => {
                self.sync_pins();
                let device_of = |mac: &str| {
                    self.compiled.as_ref().and_then(|c| {
                        c.devices
                            .iter()
                            .find(|d| d.mac.is_some_and(|m| pins::fmt_mac(&m.0) == mac))
                            .map(|d| d.id.clone())
                    })
                };
                let pins: Vec<api::Pin> = self
                    .pins
                    .by_mac
                    .iter()
                    .map(|(mac, port)| api::Pin {
                        device: device_of(mac),
                        mac: mac.clone(),
                        port: port.clone(),
                    })
                    .collect();
                Reply::of(&pins)
            }
            Request::PinRelease { device, reason } => {
                match self.release_pin(&device, peer, &reason) {
                    Ok(true) => self.enforced_reply(
                        "port_pins",
                        format!("the release of {device:?}'s port pin"),
                        &api::Released {
                            device: device.clone(),
                            released: true,
                        },
                    ),
                    Ok(false) => Reply::error(format!("{device:?} is not pinned to a port")),
                    Err(e) => Reply::error(e),
                }
            }
            Request::Detach { reason } => match self.stand_down(peer, &reason) {
                Ok(detached) => Reply::of(&api::Detached { detached }),
                Err(e) => Reply::error(e),
            },
            // The control server answers event requests from the feed; this is the same
            // answer without following.
            Request::Events { .. } => Reply::of(
                &self
                    .feed
                    .recent()
                    .iter()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .collect::<Vec<_>>(),
            ),
            Request::QuarantineAdd {
                device,
                action,
                reason,
            } => {
                let Some(hash) = self.device_hash(&device) else {
                    return Reply::error(format!("no device {device:?} in the policy"));
                };
                let decision = containment::Decision {
                    device: device.clone(),
                    hash,
                    entry: containment::entry(action, peer, &reason, 0, quarantine::now()),
                };
                match self.quarantine(decision) {
                    Ok(()) => self.enforced_reply(
                        "quarantine",
                        format!("the quarantine of {device:?} ({})", action.name()),
                        &api::Quarantined {
                            device: device.clone(),
                            action,
                        },
                    ),
                    Err(e) => Reply::error(e.to_string()),
                }
            }
            Request::QuarantineRelease { device, reason } => {
                if !self.quarantines.entries.contains_key(&device) {
                    return Reply::error(format!("{device:?} is not quarantined"));
                }
                match self.release(&device, peer, &reason) {
                    Ok(()) => self.enforced_reply(
                        "quarantine",
                        format!("the release of {device:?}"),
                        &api::Released {
                            device: device.clone(),
                            released: true,
                        },
                    ),
                    Err(e) => Reply::error(e.to_string()),
                }
            }
        }
    }

    /// `status`'s reply.
    fn status(&self) -> api::Status {
        api::Status {
            generation: self.reloads.generation(),
            commit: self.reloads.commit().map(str::to_string),
            uptime_seconds: self.started.elapsed().as_secs(),
            policy_dir: self.config.policy_dir.clone(),
            policy: if self.no_policy {
                api::PolicySource::None
            } else if self.on_lkg {
                api::PolicySource::LastKnownGood
            } else if self.compiled.is_none() {
                api::PolicySource::Pinned
            } else {
                api::PolicySource::Repository
            },
            interfaces: self
                .ifaces
                .modes()
                .iter()
                .map(|(n, m)| (n.clone(), (*m).into()))
                .collect(),
            devices: self.compiled.as_ref().map_or(0, |c| c.devices.len()),
            quarantined: self.quarantines.entries.len(),
            held: self.held_interfaces().into_iter().collect(),
            last_reload_error: self.reloads.last_error().map(str::to_string),
            state_errors: self
                .state_errors
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            // As of the last read of the counters (every few seconds): counting a big map's
            // entries takes tens of milliseconds, not for every `status`.
            maps: self
                .usage
                .iter()
                .map(|(m, n, cap)| api::MapUsage {
                    map: m.to_string(),
                    entries: *n,
                    capacity: *cap,
                    pressure: if *cap == 0 {
                        0.0
                    } else {
                        *n as f64 / *cap as f64
                    },
                })
                .collect(),
        }
    }

    /// `devices`' reply: `None` without a policy.
    fn devices(&mut self) -> Option<Vec<api::Device>> {
        let c = self.compiled.as_ref()?;
        let mut out = Vec::with_capacity(c.devices.len());
        for d in &c.devices {
            // Counted by the XDP program only (nftables counts per reason and side).
            let t = self
                .dp
                .as_mut()
                .and_then(|dp| dp.device_counters(d.hash).ok())
                .unwrap_or_default();
            out.push(api::Device {
                id: d.id.clone(),
                class: d.class.clone(),
                mode: d.mode,
                ipv4: d.ipv4.clone(),
                ipv6: d.ipv6.clone(),
                quarantine: self.quarantines.entries.get(&d.id).map(|e| e.action),
                allowed_packets: t.allowed_packets,
                allowed_bytes: t.allowed_bytes,
                denied_packets: t.denied_packets,
                denied_bytes: t.denied_bytes,
                last_seen_ns: t.last_seen_ns,
            });
        }
        Some(out)
    }

    /// `flows`' reply: the flows of `device` in the XDP flow tables.
    fn flows(&mut self, device: &str) -> Result<Vec<api::Flow>, String> {
        let hash = self
            .device_hash(device)
            .ok_or_else(|| format!("no device {device:?} in the policy"))?;
        let dp = self.dp.as_mut().ok_or(
            "flows are listed from the XDP flow table; this gateway runs dataplane = \"nftables\", whose flows are in conntrack (conntrack -L)",
        )?;
        let flows = dp.flows().map_err(|e| e.to_string())?;
        Ok(flows
            .iter()
            .filter(|(_, _, v)| v.dev_a == hash || v.dev_b == hash)
            .map(|(table, k, v)| api::Flow {
                proto: k.proto,
                a: endpoint(k.family, &k.addr_a, k.port_a),
                b: endpoint(k.family, &k.addr_b, k.port_b),
                initiator: if v.initiator == 0 {
                    api::End::A
                } else {
                    api::End::B
                },
                state: api::FlowState::from_abi(v.state),
                table: *table,
                rule: v.rule,
            })
            .collect())
    }

    /// Carries out a quarantine: datapath state, persisted list, audit log, metrics, log
    /// line, event.
    fn quarantine(&mut self, decision: containment::Decision) -> Result<(), DaemonError> {
        let containment::Decision {
            device,
            hash,
            entry,
        } = decision;
        let (device, action) = (device.as_str(), entry.action);
        let (by, reason) = (entry.by.clone(), entry.reason.clone());
        let (by, reason) = (by.as_str(), reason.as_str());
        self.apply_quarantine(hash, action)?;
        self.quarantines.entries.insert(device.to_string(), entry);
        self.save_quarantines();
        if let Err(e) = self
            .quarantines
            .audit("quarantine", device, Some(action), by, reason)
        {
            tracing::error!(error = %e, "audit log");
        }
        tracing::warn!(
            device,
            action = action.name(),
            by,
            reason,
            "device quarantined"
        );
        self.metrics.quarantine_event(action.name());
        self.update_quarantine_metrics();
        self.notify(events::quarantine_event(
            device,
            Some(action),
            by,
            reason,
            events::unix_now(),
        ));
        Ok(())
    }

    fn release(&mut self, device: &str, by: &str, reason: &str) -> Result<(), DaemonError> {
        if let Some(hash) = self.device_hash(device) {
            self.apply_quarantine(hash, Action::Alert)?;
            self.containment.forget(hash);
        }
        self.quarantines.entries.remove(device);
        self.save_quarantines();
        if let Err(e) = self.quarantines.audit("release", device, None, by, reason) {
            tracing::error!(error = %e, "audit log");
        }
        tracing::warn!(device, by, reason, "device released from quarantine");
        self.update_quarantine_metrics();
        self.notify(events::quarantine_event(
            device,
            None,
            by,
            reason,
            events::unix_now(),
        ));
        Ok(())
    }

    /// A controller event for followers (and the webhook, when one is configured).
    fn notify(&self, event: events::Record) {
        self.feed.publish(&event);
        if let Some(hook) = &self.webhook {
            hook.send(event);
        }
    }

    /// The learned flows; a file that cannot be read is moved aside (never overwritten)
    /// and learning starts again.
    fn load_learned(state_dir: &Path) -> learn::Learned {
        match learn::Learned::load(state_dir) {
            Ok(l) => l,
            Err(e) => {
                let path = state_dir.join(learn::FILE);
                let moved = path.with_extension(format!("json.corrupt-{}", quarantine::now()));
                let _ = std::fs::rename(&path, &moved);
                tracing::error!(error = %e, moved = %moved.display(), "learned flows unreadable; moved aside, learning starts again");
                learn::Learned {
                    version: 1,
                    ..learn::Learned::default()
                }
            }
        }
    }

    /// Writes the learned flows if they changed.
    fn save_learned(&mut self) {
        if !self.learned_dirty {
            return;
        }
        let result = self.learned.save(&self.config.state_dir);
        if result.is_ok() {
            self.learned_dirty = false;
        }
        self.persisted("learned", result);
    }

    /// A learn event: recorded for its device if the device is in learn mode. New flow
    /// patterns are written at once, counts on the next tick.
    fn on_learn(&mut self, ev: &lazaret_abi::Event) {
        let Some(d) = self
            .compiled
            .as_ref()
            .and_then(|c| c.device_by_hash(ev.device))
            .filter(|d| d.mode == policy::model::Mode::Learn)
        else {
            return;
        };
        let id = d.id.clone();
        self.learned_dirty = true;
        if self.learned.observe(&id, ev, quarantine::now()) {
            self.save_learned();
        }
    }

    fn load_unknowns(state_dir: &Path) -> unknown::Unknowns {
        let path = state_dir.join("unknown-devices.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unknown-device list unreadable; starting a new one");
                unknown::Unknowns::default()
            }),
            Err(_) => unknown::Unknowns::default(),
        }
    }

    fn save_unknowns(&mut self) {
        let path = self.config.state_dir.join("unknown-devices.json");
        let result = serde_json::to_vec_pretty(&self.unknowns)
            .map_err(std::io::Error::other)
            .and_then(|body| state::write_atomic(&path, &body));
        self.persisted("unknown_devices", result);
    }

    /// An unknown source spoke on a device port.
    fn on_unknown(&mut self, ev: &lazaret_abi::Event) {
        let src = match ev.family {
            lazaret_abi::FAMILY_V4 => Some(std::net::IpAddr::from([
                ev.src[0], ev.src[1], ev.src[2], ev.src[3],
            ])),
            lazaret_abi::FAMILY_V6 => Some(std::net::IpAddr::from(ev.src)),
            _ => None,
        };
        let flow = (ev.family != 0).then(|| {
            let dst = endpoint(ev.family, &ev.dst, ev.dst_port);
            format!("proto {} {dst}", ev.proto)
        });
        let sighting = unknown::Sighting {
            mac: ev.src_mac,
            vlan: ev.vlan,
            ifindex: ev.ifindex,
            src,
            flow,
            now: quarantine::now(),
        };
        if self.unknowns.observe(&sighting) {
            tracing::warn!(mac = %unknown::fmt_mac(&ev.src_mac), vlan = ev.vlan, ifindex = ev.ifindex, source = %src.map_or_else(|| "-".to_string(), |a| a.to_string()), "new unknown device on a device port");
            self.metrics.unknown_device_discovered();
            self.feed
                .publish(&events::new_unknown_event(&sighting, events::unix_now()));
            self.metrics
                .set_unknown_devices(self.unknowns.devices.len() as u64);
            self.save_unknowns();
        }
    }

    /// One datapath event: metrics, unknown-device discovery, deviation detection.
    fn on_event(&mut self, ev: &lazaret_abi::Event) {
        self.feed.publish(&events::datapath_event(
            ev,
            self.compiled.as_deref(),
            events::unix_now(),
        ));
        if let Some(kind) = deviation::kind_label(ev) {
            self.metrics.deviation(kind);
        }
        if ev.kind == lazaret_abi::EVENT_UNKNOWN {
            self.on_unknown(ev);
            return;
        }
        if ev.kind == lazaret_abi::EVENT_LEARN {
            self.on_learn(ev);
            return;
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        let decision = self.containment.on_event(
            ev,
            &self.quarantines.entries,
            now_ms,
            quarantine::now(),
            describe,
        );
        if let Some(d) = decision {
            let device = d.device.clone();
            if let Err(e) = self.quarantine(d) {
                tracing::error!(device = %device, error = %e, "automatic quarantine failed");
            }
        }
    }

    /// The datapath's view of a configured interface (side, untagged VLAN, bridge binding).
    fn iface_config(&self, iface: &crate::config::Interface) -> lazaret_abi::IfaceConfig {
        let bridge = iface
            .bridge
            .as_ref()
            .and_then(|b| self.ifaces.ifindexes().get(b).copied());
        iface.datapath_config(bridge)
    }

    /// Records `mode` for `interface`, in `status` and in `lazaret_interface_attached`.
    fn set_mode(&mut self, interface: &str, mode: IfaceMode) {
        self.ifaces.set_mode(interface, mode);
        self.nft.report(interface, mode.enforcer());
        self.metrics
            .set_interface(interface, mode.enforcer().label(), mode.is_enforcing());
    }

    /// Acts on what [`interfaces::Interfaces::check`] found: a bridge that appeared (its
    /// ports configured, a reload for devices bound to it), an interface gone (held closed
    /// by name: neither XDP nor the nftables frame stage, bound to the device, will be on it
    /// when it returns), an interface back, possibly under a new ifindex (attached anew:
    /// the old pinned link died with the old interface; devices bound to it are recompiled
    /// for the new ifindex).
    fn check_interfaces(&mut self) {
        if self.reloads.stood_down() {
            return;
        }
        let held = self.ifaces.held().clone();
        for change in self.ifaces.check(ifindex) {
            match change {
                interfaces::Change::BridgeAppeared {
                    bridge,
                    ifindex,
                    ports,
                } => {
                    tracing::warn!(bridge = %bridge, ifindex, "bridge appeared");
                    for port in ports {
                        let Some(iface) = self.config.interfaces.iter().find(|i| i.name == port)
                        else {
                            continue;
                        };
                        let config = self.iface_config(iface);
                        let index = self.ifaces.ifindex(&port);
                        if let Some(Err(e)) = index
                            .zip(self.dp.as_mut())
                            .map(|(p, dp)| dp.set_interface_config(p, config))
                        {
                            tracing::error!(interface = %port, error = %e, "configuring a bridge port");
                        }
                    }
                    self.reload_and_report("bridge appeared");
                }
                interfaces::Change::Lost { interface } => {
                    tracing::error!(interface = %interface, "interface disappeared: held closed until it returns");
                    if let Some(mode) = self.ifaces.mode(&interface) {
                        self.set_mode(&interface, mode);
                    }
                }
                interfaces::Change::Returned {
                    interface,
                    ifindex,
                    enforcer,
                } => self.returned(&interface, ifindex, enforcer),
            }
        }
        if self.ifaces.held() != &held {
            self.update_hold();
        }
    }

    /// `interface` is back (or still without its dataplane) under `index`: its dataplane
    /// enforces on it again, or it stays held and is retried at the next check.
    fn returned(&mut self, interface: &str, index: u32, enforcer: Enforcer) {
        tracing::warn!(
            interface,
            ifindex = index,
            "interface (re)appeared: attaching"
        );
        let _ = std::fs::remove_file(attach::link_pin(&self.pin_dir, interface));
        if enforcer == Enforcer::Nftables {
            // The inet table matches interfaces by name; a reload re-renders it for the new
            // ifindex of devices bound to the interface, and hooks the frame stage on the
            // new device. Then the hold can go.
            self.reload_and_report("interface returned");
            self.set_mode(interface, IfaceMode::Enforcing(Enforcer::Nftables));
            return;
        }
        let Some(iface) = self
            .config
            .interfaces
            .iter()
            .find(|i| i.name == interface)
            .cloned()
        else {
            return;
        };
        // Attach first, then reload for the new ifindex: until the reload, devices bound to
        // the interface fail their binding check and are dropped (closed), rather than the
        // interface passing everything (open).
        let config = self.iface_config(&iface);
        let result = xdp(&mut self.dp, "re-attaching an interface")
            .and_then(|dp| Ok(dp.set_interface_config(index, config)?))
            .and_then(|()| self.attach_again(&iface));
        match result {
            Ok(a) => {
                let mode = match a {
                    attach::Attached::New(m) => Enforcer::xdp(m),
                    attach::Attached::Adopted => Enforcer::XdpNative,
                };
                attach::record_mode(&self.config.state_dir, interface, mode);
                // Enforcing again (closed for devices bound to it until the reload binds the
                // new ifindex): the hold can go. A reload that fails is reported and retried
                // with the next policy change; the attach is not redone.
                self.set_mode(interface, IfaceMode::Enforcing(mode));
                tracing::info!(interface, mode = mode.label(), "re-attached");
                self.reload_and_report("interface returned");
            }
            Err(e) => {
                // Not enforcing on it: held closed, retried at the next check.
                tracing::error!(interface, error = %e, "re-attaching failed; will retry");
                self.set_mode(interface, IfaceMode::Held(enforcer));
            }
        }
    }

    /// Attaches the program to `iface` again (it came back, or lost its program), pinning a
    /// new link.
    fn attach_again(
        &mut self,
        iface: &crate::config::Interface,
    ) -> Result<attach::Attached, DaemonError> {
        let prog = xdp(&mut self.dp, "attaching XDP")?.program_mut()?;
        Ok(attach::attach(
            prog,
            &iface.name,
            iface.xdp_mode,
            &self.pin_dir,
            &[],
        )?)
    }

    /// `lazaret detach --force`: stop enforcing on purpose, and say so. The XDP links and
    /// maps are unpinned (the program leaves every interface), lazaret's nftables tables and
    /// the interface hold are removed, every interface reports detached, and nothing is
    /// restored or re-attached until the daemon is restarted.
    fn stand_down(&mut self, by: &str, reason: &str) -> Result<Vec<String>, String> {
        self.reloads.stand_down();
        attach::detach_all(&self.config.pin_dir).map_err(|e| {
            format!(
                "removing the pinned links under {}: {e}",
                self.config.pin_dir.display()
            )
        })?;
        let ruleset = nft::Nft::default();
        for family in nft::dataplane::FAMILIES {
            for table in nft::dataplane::TABLES {
                if ruleset.has_table(family, table).unwrap_or(false) {
                    ruleset.delete(family, table).map_err(|e| e.to_string())?;
                }
            }
        }
        self.no_policy = false;
        self.metrics.held(0);
        let _ = ruleset.hold(&Default::default());
        let detached = self.ifaces.stand_down();
        for name in &detached {
            if let Some(mode) = self.ifaces.mode(name) {
                self.set_mode(name, mode);
            }
        }
        if let Err(e) = self.quarantines.audit("detach", "-", None, by, reason) {
            tracing::error!(error = %e, "audit log");
        }
        tracing::warn!(by, reason, interfaces = %names(&detached), "DETACHED on request: lazaret no longer enforces and restores nothing until restarted");
        Ok(detached)
    }

    /// Compares what the kernel enforces with what this daemon put there, and puts it back
    /// if someone else changed it: an XDP program detached (its pinned link detached through
    /// bpf(2)) or replaced, lazaret's nftables tables deleted or changed, the interface hold
    /// removed. Each finding is counted in `lazaret_datapath_tamper_total`, and
    /// `lazaret_interface_attached` says 0 until enforcement is back. An XDP interface that
    /// cannot be restored (another program holds it) is held closed and retried.
    fn check_tamper(&mut self) {
        if self.reloads.stood_down() {
            return;
        }
        let ours = self
            .dp
            .as_mut()
            .and_then(|dp| dp.program_mut().ok())
            .and_then(|p| p.info().ok())
            .map(|i| i.id());
        for iface in self.config.interfaces.clone() {
            let Some(mode) = self
                .ifaces
                .mode(&iface.name)
                .filter(|m| m.is_enforcing() && m.enforcer().is_xdp())
            else {
                continue;
            };
            let Some(index) = self.ifaces.ifindex(&iface.name) else {
                continue;
            };
            // An interface gone is `check_interfaces`' business.
            let Ok(found) = kernel::xdp_program(index) else {
                continue;
            };
            if found.is_some() && found == ours {
                continue;
            }
            let kind = if found.is_none() {
                "xdp_detached"
            } else {
                "xdp_replaced"
            };
            tracing::error!(interface = %iface.name, kind, found_program = found.unwrap_or(0), lazaret_program = ours.unwrap_or(0), "enforcement removed behind lazaret's back: restoring");
            self.metrics.tamper(&iface.name, kind);
            self.set_mode(&iface.name, mode.detached());
            let _ = std::fs::remove_file(attach::link_pin(&self.pin_dir, &iface.name));
            let attached = self.attach_again(&iface);
            match attached {
                Ok(_) => {
                    tracing::warn!(interface = %iface.name, mode = mode.label(), "XDP restored");
                    self.set_mode(&iface.name, mode);
                }
                Err(e) => {
                    // Another program holds the interface: closed until XDP is back
                    // (`check_interfaces` retries a held interface).
                    tracing::error!(interface = %iface.name, error = %e, "cannot restore XDP: the interface is held closed");
                    self.set_mode(&iface.name, mode.held());
                    self.update_hold();
                }
            }
        }
        let held = !self.held_interfaces().is_empty();
        if !self.nft.active() && !held {
            return;
        }
        let found = kernel::nft_generation()
            .map_err(|e| e.to_string())
            .and_then(|g| self.nft.verify(g, held).map_err(|e| e.to_string()));
        match found {
            Ok(None) => {}
            Ok(Some(nft::Tampered::HoldMissing)) => {
                tracing::error!("the interface hold was removed behind lazaret's back: restoring");
                for name in self.held_interfaces() {
                    self.metrics
                        .tamper(&name, nft::Tampered::HoldMissing.kind());
                }
                self.update_hold();
            }
            Ok(Some(t)) => {
                let kind = t.kind();
                let on: Vec<String> = self
                    .config
                    .interfaces
                    .iter()
                    .filter(|i| self.nft.uses(&i.name))
                    .map(|i| i.name.clone())
                    .collect();
                tracing::error!(kind, interfaces = %names(&on), "lazaret's nftables tables were changed behind its back: restoring");
                // Interfaces that are gone stay detached; the others are, until restored.
                let enforcing: Vec<String> = on
                    .iter()
                    .filter(|n| self.ifaces.is_enforcing(n))
                    .cloned()
                    .collect();
                for name in &on {
                    self.metrics.tamper(name, kind);
                }
                for name in &enforcing {
                    self.set_mode(name, IfaceMode::Detached(Enforcer::Nftables));
                }
                match self.nft.restore(&self.pins.list()) {
                    Ok(()) => {
                        tracing::warn!("nftables enforcement restored");
                        for name in &enforcing {
                            self.set_mode(name, IfaceMode::Enforcing(Enforcer::Nftables));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot restore the nftables tables (retried every check)");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "checking the nftables ruleset"),
        }
    }

    /// Gives the dataplanes the gateway's current addresses when they changed.
    fn sync_local(&mut self) {
        let now = match local::own_addresses() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reading the gateway's addresses; the previous ones stay");
                return;
            }
        };
        if now == self.local {
            return;
        }
        // Every dataplane is given them, even after one failed.
        let results: Vec<_> = self.dataplanes().map(|dp| dp.set_local(&now)).collect();
        match results.into_iter().collect::<Result<Vec<()>, _>>() {
            Ok(_) => {
                tracing::info!(
                    addresses = now.len(),
                    "the gateway's own addresses given to the dataplanes"
                );
                self.local = now;
            }
            Err(e) => {
                tracing::error!(error = %e, "updating the gateway's addresses in the dataplanes; retried at the next check");
            }
        }
    }

    /// Puts the pins of the state directory back into the dataplanes (after a reboot they
    /// are empty): a pin ends only when a person releases it.
    fn restore_pins(&mut self) {
        let (pins, ifindexes) = (self.pins.list(), self.ifaces.ifindexes().clone());
        for dp in self.dataplanes() {
            if let Err(e) = dp.restore_pins(&pins, &ifindexes) {
                tracing::error!(error = %e, "restoring the port pins");
            }
        }
    }

    /// Reads the pins the dataplanes learned and keeps new ones in the state directory.
    fn sync_pins(&mut self) {
        let mut seen = Vec::new();
        let ifindexes = self.ifaces.ifindexes().clone();
        for dp in self.dataplanes() {
            match dp.pins(&ifindexes) {
                Ok(pins) => seen.extend(pins),
                Err(e) => tracing::debug!(error = %e, "reading the port pins"),
            }
        }
        if self.pins.merge(seen) {
            let result = self.pins.save(&self.config.state_dir);
            self.persisted("port_pins", result);
        }
    }

    /// Releases the pin of `device`'s MAC on every dataplane: the next port it is seen on
    /// pins it again.
    fn release_pin(&mut self, device: &str, by: &str, reason: &str) -> Result<bool, String> {
        let mac = self
            .compiled
            .as_ref()
            .and_then(|c| c.device(device))
            .ok_or_else(|| format!("no device {device:?} in the policy"))?
            .mac
            .ok_or_else(|| format!("{device:?} has no MAC: it is never pinned"))?
            .0;
        let mut held = false;
        for dp in self.dataplanes() {
            held |= dp.release_pin(mac).map_err(|e| e.to_string())?;
        }
        let kept = self.pins.by_mac.remove(&pins::fmt_mac(&mac)).is_some();
        let result = self.pins.save(&self.config.state_dir);
        self.persisted("port_pins", result);
        let released = held || kept;
        if released {
            if let Err(e) = self
                .quarantines
                .audit("release-pin", device, None, by, reason)
            {
                tracing::error!(error = %e, "audit log");
            }
            tracing::warn!(device, by, reason, "bridge-port pin released");
        }
        Ok(released)
    }

    fn update_hold(&self) {
        let held = self.held_interfaces();
        self.metrics.held(held.len());
        match self.nft.hold(&held) {
            Ok(()) => {
                tracing::info!(held = %names(&held), "interfaces held closed until XDP is attached or a policy compiles");
            }
            Err(e) => {
                tracing::warn!(error = %e, held = %names(&held), "could not hold interfaces closed (nftables): a returning interface passes traffic unjudged until re-attached");
            }
        }
    }

    /// Releases quarantines whose TTL has passed.
    fn expire_quarantines(&mut self) {
        for d in containment::expired(&self.quarantines.entries, quarantine::now()) {
            if let Err(e) = self.release(&d, containment::TTL, "quarantine ttl expired") {
                tracing::error!(device = %d, error = %e, "automatic release failed");
            }
        }
    }

    fn device_hash(&self, id: &str) -> Option<u64> {
        self.compiled.as_ref()?.device(id).map(|d| d.hash)
    }

    /// Serves until SIGTERM or SIGINT; SIGHUP and changes in the policy directory reload.
    /// Returning leaves the datapath pinned and enforcing.
    pub async fn serve(mut self) -> Result<(), DaemonError> {
        let listener = tokio::net::TcpListener::bind(self.config.metrics_listen)
            .await
            .map_err(io_err(format!(
                "metrics endpoint {} (is the port already taken?)",
                self.config.metrics_listen
            )))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = self.metrics.clone();
        let mut stop_metrics = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_metrics.changed().await;
            };
            if let Err(e) = crate::metrics::serve(listener, metrics, shutdown).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
        if let Some(w) = &self.config.webhook {
            // Checked when the configuration was parsed.
            match webhook::check_url(w.url.get_ref()) {
                Ok(uri) => self.webhook = Some(webhook::Webhook::spawn(uri, self.metrics.clone())),
                Err(e) => tracing::error!(error = %e, "webhook disabled"),
            }
        }
        let access = control::Access {
            group: self.config.control_gid,
        };
        let control = control::bind_for(&self.config.control_socket, access)?;
        let (calls_tx, mut calls) = mpsc::channel::<Call>(64);
        tokio::spawn(control::serve_for(
            control,
            calls_tx,
            self.feed.clone(),
            access,
        ));
        let mut tick = tokio::time::interval(OBSERVE_EVERY);
        let mut links = tokio::time::interval(INTERFACES_EVERY);
        // The XDP program's ring buffer (none without XDP: nflog below brings nftables').
        let mut events = match self.dp.as_mut() {
            Some(dp) => {
                let events = dp.take_events()?;
                // SAFETY: the ring buffer's fd is owned by the EventReader, stays open and the
                // same for the reader's whole life, which the AsyncFd owns.
                let fd = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        events,
                        tokio::io::Interest::READABLE,
                    )
                };
                Some(fd.map_err(|e| DaemonError::Io {
                    what: "watching the event ring buffer".into(),
                    source: std::io::Error::other(e.to_string()),
                })?)
            }
            None => None,
        };
        let mut term =
            signal(SignalKind::terminate()).map_err(io_err("installing a SIGTERM handler"))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(io_err("installing a SIGINT handler"))?;
        let mut hup =
            signal(SignalKind::hangup()).map_err(io_err("installing a SIGHUP handler"))?;
        let dir = self.config.policy_dir.clone();
        let mut changes = watch::PolicyWatch::new(&dir).map_err(|e| DaemonError::Io {
            what: format!("watching {}", dir.display()),
            source: std::io::Error::other(e),
        })?;
        // Compiles run off the loop from now on; their results come back here.
        let (compiled_tx, mut compiled_rx) = mpsc::unbounded_channel();
        self.compiled_tx = Some(compiled_tx);
        let (staged_tx, mut staged_rx) = mpsc::unbounded_channel();
        self.staged_tx = Some(staged_tx);
        let (observed_tx, mut observed_rx) = mpsc::unbounded_channel();
        self.observed_tx = Some(observed_tx);
        if let Some(dp) = &self.dp {
            self.reader = Some(Arc::new(std::sync::Mutex::new(dp.reader()?)));
        }
        // Events of the nftables dataplane (nflog), beside the XDP ring buffer.
        let (nflog_tx, mut nflog) = mpsc::channel(1024);
        if self.nft.active() {
            crate::dataplane::nft::NftDataplane::spawn_reader(nflog_tx.clone())
                .map_err(io_err("reading nftables events (nflog)"))?;
        }
        // Ready only now that events are read: nflog, unlike the XDP ring buffer, keeps
        // nothing for a reader that is not there yet.
        self.write_ready()?;
        // systemd (Type=notify): ready; and the watchdog, if the unit has one, is pinged from
        // the loop below, so a loop that stalls gets the daemon restarted (enforcement
        // carries on through the restart: everything is pinned).
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let mut watchdog_usec = 0u64;
        let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
        let beat_every = if watchdog {
            Duration::from_micros(watchdog_usec / 2).min(BEAT_EVERY)
        } else {
            BEAT_EVERY
        };
        let mut beat = tokio::time::interval(beat_every);
        loop {
            // A policy change waiting for the directory to settle (see `watch`).
            let settle_at = changes.deadline();
            tokio::select! {
                _ = term.recv() => break,
                Some(logged) = nflog.recv() => {
                    if let Some(ev) = self.nft.event(&logged) {
                        self.on_event(&ev);
                    }
                }
                _ = int.recv() => break,
                _ = hup.recv() => self.reload_and_report("SIGHUP"),
                _ = beat.tick() => {
                    // Events first: the beat says the loop keeps up, not only that it runs.
                    if let Some(events) = events.as_mut() {
                        let batch = events.get_mut().drain();
                        for ev in &batch {
                            self.on_event(ev);
                        }
                    }
                    if let Some(written) = self.lkg.outcome() {
                        self.persisted("last_known_good", written);
                    }
                    self.metrics.heartbeat(unix_ms());
                    if watchdog {
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    }
                }
                _ = links.tick() => {
                    self.check_interfaces();
                    self.check_tamper();
                    self.sync_local();
                }
                _ = tick.tick() => {
                    self.observe();
                    self.sync_pins();
                    self.expire_quarantines();
                    self.save_learned();
                }
                ready = readable(events.as_mut()) => {
                    match ready {
                        Ok(mut guard) => {
                            let batch = guard.get_inner_mut().drain();
                            guard.clear_ready();
                            for ev in &batch {
                                self.on_event(ev);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "event ring buffer"),
                    }
                }
                Some(done) = compiled_rx.recv() => self.finish_reload(done),
                Some(()) = staged_rx.recv() => self.finish_install(),
                Some(snap) = observed_rx.recv() => self.observed(snap),
                Some(call) = calls.recv() => {
                    let reply = self.handle(call.request, &call.peer);
                    let _ = call.reply.send(reply);
                }
                true = changes.changed() => {}
                () = tokio::time::sleep_until(settle_at.unwrap_or_else(tokio::time::Instant::now)),
                    if settle_at.is_some() =>
                {
                    if changes.settled() {
                        self.reload_and_report("policy directory changed");
                    }
                }
            }
        }
        tracing::info!(
            generation = self.reloads.generation(),
            "stopping; the datapath stays pinned and keeps enforcing (lazaret detach removes it)"
        );
        self.save_learned();
        let _ = stop_tx.send(true);
        drop(nflog_tx);
        let _ = std::fs::remove_file(&self.config.control_socket);
        Ok(())
    }
}

/// The datapath's counters, read through `reader` (on a thread: see `Controller::observe`):
/// `None` if the packet counters cannot be read. `devices`: (hash, class) of the policy's
/// devices; `nft`: the nftables table's counters, when it enforces somewhere.
fn read_snapshot(
    reader: Option<&mut crate::dataplane::xdp::DatapathReader>,
    devices: &[(u64, Option<String>)],
    nft: Option<&nft::dataplane::CounterReader>,
) -> Option<DatapathSnapshot> {
    let mut snap = DatapathSnapshot::default();
    if let Some(reader) = reader {
        snap.packets = match reader.stats() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading packet counters");
                return None;
            }
        };
        if let Ok(e) = reader.event_stats() {
            for (i, v) in e.iter().take(4).enumerate() {
                snap.event_stats[i] = *v;
            }
        }
        if let Ok(usage) = reader.map_usage() {
            snap.flows_active = usage
                .iter()
                .filter(|(m, _, _)| {
                    *m == lazaret_abi::MAP_FLOWS || *m == lazaret_abi::MAP_EST_FLOWS
                })
                .map(|u| u.1)
                .sum();
            snap.map_entries = usage;
        }
        let mut by_class: BTreeMap<String, crate::dataplane::xdp::DeviceCounterTotals> =
            BTreeMap::new();
        for (hash, class) in devices {
            let Ok(t) = reader.device_counters(*hash) else {
                continue;
            };
            let e = by_class
                .entry(class.clone().unwrap_or_else(|| "none".into()))
                .or_default();
            e.allowed_packets += t.allowed_packets;
            e.allowed_bytes += t.allowed_bytes;
            e.denied_packets += t.denied_packets;
            e.denied_bytes += t.denied_bytes;
            e.last_seen_ns = e.last_seen_ns.max(t.last_seen_ns);
        }
        snap.class_packets = by_class.into_iter().collect();
    }
    // nftables' table counts the packets it judges by the same reasons and sides (its
    // counters carry over from one generation to the next): the same series, summed with
    // whatever XDP judged on the other interfaces.
    if let Some(n) = nft.and_then(nft::dataplane::CounterReader::read) {
        if snap.packets.len() < n.len() {
            snap.packets.resize(n.len(), 0);
        }
        for (total, n) in snap.packets.iter_mut().zip(n) {
            *total += n;
        }
    }
    Some(snap)
}

/// The XDP ring buffer's next readiness; never, without one.
async fn readable(
    events: Option<&mut tokio::io::unix::AsyncFd<crate::dataplane::xdp::EventReader>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, crate::dataplane::xdp::EventReader>>
{
    match events {
        Some(e) => e.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// The last generation a run enforced, in the state directory.
const GENERATION_FILE: &str = "generation";

/// The generation `state_dir/generation` holds (0 if none): see [`Controller::write_ready`].
/// Also the ready file's, which versions before `generation` existed wrote (an upgrade in
/// nftables mode must not restart the numbering either).
fn read_generation(state_dir: &Path) -> u64 {
    [GENERATION_FILE, "ready"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(state_dir.join(f)).ok())
        .filter_map(|t| t.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// The XDP datapath, for what only it does (`what`): an error with `dataplane = "nftables"`.
fn xdp<'a>(
    dp: &'a mut Option<Datapath>,
    what: &'static str,
) -> Result<&'a mut Datapath, DaemonError> {
    dp.as_mut().ok_or(DaemonError::NoXdp(what))
}

/// A generation half installed: nftables applied, its XDP slot being written.
struct Staged {
    job: compiler::Job,
    compiled: Arc<Compiled>,
    how: policy::incremental::How,
    commit: Option<String>,
    sources: Option<Arc<policy::Sources>>,
    entries: usize,
}

/// One line about an event, for logs and quarantine reasons.
fn describe(ev: &lazaret_abi::Event) -> String {
    let reason = lazaret_abi::Reason::from_u8(ev.reason).map_or("?", |r| r.name());
    format!(
        "{reason} proto {} {} -> {}",
        ev.proto,
        endpoint(ev.family, &ev.src, ev.src_port),
        endpoint(ev.family, &ev.dst, ev.dst_port)
    )
}

/// Names as one log field value: `a,b,c` (not Rust's `{"a", "b"}`).
fn names<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn entry_count(c: &crate::dataplane::xdp::MapContents) -> usize {
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
    let dir = config
        .pin_dir
        .join(format!("v{}", lazaret_abi::ABI_VERSION));
    std::fs::create_dir_all(&dir)
        .map_err(io_err(format!("creating pin directory {}", dir.display())))?;
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
    nix::sys::statfs::statfs(path)
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok().filter(|i| *i != 0)
}
