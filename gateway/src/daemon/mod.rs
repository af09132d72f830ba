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
//!
//! # Where things are
//!
//! The shell, [`run`] ([`serve`](Controller::serve) in `serve`): sockets, signals, timers,
//! the policy watch, the dataplanes' event sources; every input goes to the [`Controller`],
//! whose state is the services below plus the dataplanes. What it takes from the host is
//! injected as [`Deps`]: the dataplanes and the interface lookup.
//!
//! Services that decide without I/O (time and kernel lookups are arguments), unit-tested
//! without root:
//! - [`reloader`]: the enforcing generation, the next one, reloads queued meanwhile.
//! - [`interfaces`]: ifindexes, what enforces on each interface, holds, and what an
//!   interface lost or regained needs.
//! - [`containment`] with [`deviation`]: which device to quarantine, with what, until when.
//! - [`learn`], [`unknown`], [`propose`]: learned flows, unknown devices, proposed rules;
//!   [`records`] sends the first two to the other member of a pair.
//! - [`api`], [`events`], [`control`]: the typed control replies, event record and protocol.
//!
//! The controller's jobs, one file each: `start` (adopt, restore, first install, attach),
//! `install` (reloads: compile off the loop, the two halves of an install), `upkeep`
//! (interfaces, tamper, addresses, pins, the hold, counters), `intake` (what the
//! dataplanes report), `quarantines` (applying, releasing, expiring), `windows` (service
//! windows opening and closing by the clock), `requests` (the control socket), `serve`
//! (the loop).
//!
//! State kept on disk: [`quarantine`] (state file, audit log), [`lkg`] (last-known-good
//! policy), [`pins`], `state` (atomic writes). The kernel: [`local`]
//! (own addresses), [`preflight`]; [`compiler`] runs the policy compiler off the loop;
//! [`watch`] the policy directory; [`webhook`] the event webhook.

pub mod api;
pub mod compiler;
pub mod containment;
pub mod control;
pub mod deviation;
pub mod events;
pub mod flowsync;
pub mod ha;
pub mod hasync;
mod install;
mod intake;
pub mod interfaces;
pub mod learn;
pub mod lkg;
pub mod local;
pub mod oui;
pub mod pins;
pub mod preflight;
pub mod probe;
pub mod propose;
pub mod quarantine;
mod quarantines;
pub mod records;
pub mod reloader;
mod requests;
mod serve;
mod sign;
mod start;
mod state;
pub mod syslog;
pub mod unknown;
mod upkeep;
pub mod watch;
pub mod webhook;
mod windows;

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
        xdp::{attach, Datapath, DatapathError},
        Dataplane, Dataplanes,
    },
    metrics::{DatapathSnapshot, Metrics, ReloadFailure},
    policy::{self, Compiled},
};
use control::{Call, Reply, Request};
use events::endpoint;
use install::{read_generation, Staged};
use quarantine::{Action, Quarantines};

pub use crate::dataplane::xdp::attach::detach_all;
pub use serve::run;

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
    #[error("no dataplane of this gateway enforces as {}", .0.label())]
    NoDataplane(Enforcer),
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

/// The running controller: the single owner of the datapath.
pub struct Controller {
    config: Config,
    /// Every dataplane (see [`crate::dataplane::Dataplanes`]): XDP is `None` with
    /// `dataplane = "nftables"`, which runs without BPF; nftables is always there.
    planes: Dataplanes,
    /// Looks a configured interface up by name (see [`Deps::ifindex`]).
    ifindex: fn(&str) -> Option<u32>,
    /// The interfaces stacked on those nftables enforces on that a reload was last asked
    /// to render, and when (`upkeep::check_interfaces`).
    stacked_tried: Option<(BTreeMap<String, Vec<String>>, Instant)>,
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
    /// Where `observe`'s thread sends its snapshot (serving only), and whether one runs.
    observed_tx: Option<mpsc::UnboundedSender<Option<DatapathSnapshot>>>,
    observing: bool,
    /// Signalled by the install thread when the slot is written (serving only).
    staged_tx: Option<mpsc::UnboundedSender<()>>,
    /// Quarantine decisions (deviations, thresholds, TTLs): pure, see [`containment`].
    containment: containment::Containment,
    unknowns: unknown::Unknowns,
    /// Resolves the addresses upstream was refused at because no device owns them yet.
    prober: probe::Prober,
    /// What `lazaret events` shows.
    feed: events::Feed,
    /// Started by [`Controller::serve`] when `[webhook]` is configured.
    webhook: Option<webhook::Webhook>,
    /// Flows of learn-mode devices, and whether they changed since the last write.
    learned: learn::Learned,
    learned_dirty: bool,
    /// The gateway's own addresses, as last given to the dataplanes (see [`local`]).
    local: std::collections::BTreeSet<std::net::IpAddr>,
    /// Bridge-port pins, as last read from the dataplanes and kept in the state directory.
    pins: pins::Pins,
    /// This host's role in an active/standby pair, and how many of `[ha]
    /// virtual_addresses` it holds (see [`ha`]).
    role: (ha::Role, usize),
    /// Quarantines and releases for the other member, when `[ha]` replicates them (see
    /// [`hasync`]); started by [`Controller::serve`].
    sync_out: Option<mpsc::Sender<hasync::Body>>,
    /// A quarantine or release did not fit in the queue: send a snapshot at the next tick.
    resnapshot: bool,
    /// MAC vendors, from the IEEE registry (see [`oui`]).
    vendors: oui::Vendors,
    /// The records changed since last sent to the other member (see [`records`]), the
    /// queue they go by (the flows', behind quarantines), and whether the other member's
    /// unknown devices are still to be written.
    records_pending: records::Pending,
    records_out: Option<mpsc::Sender<hasync::Body>>,
    /// Unknown devices changed and not yet written: the other member's, or new ones seen
    /// within [`intake::SAVE_UNKNOWNS_EVERY`] of the last write (the next tick, within
    /// [`serve::OBSERVE_EVERY`], or the stop writes them).
    unknowns_dirty: bool,
    /// When the unknown-device list was last written.
    unknowns_saved: Option<std::time::Instant>,
    /// The XDP flow replication's thread, when `[ha]` replicates (see [`flowsync`]).
    flow_sync: Option<flowsync::Handle>,
    /// The enforcing policy's commit, for the replication's hello.
    commit_tx: tokio::sync::watch::Sender<Option<String>>,
    /// The enforcing generation's service windows, and the policy to recompile at their
    /// boundaries (see [`windows`]).
    windows: windows::Windows,
}

impl Controller {
    /// Every dataplane, for what the controller does to all alike (see [`crate::dataplane`]).
    fn dataplanes(&mut self) -> impl Iterator<Item = &mut dyn Dataplane> {
        self.planes.all()
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
}

/// Names as one log field value: `a,b,c` (not Rust's `{"a", "b"}`).
fn names<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// What [`run`] takes from the host, so that the shell runs against other dataplanes and
/// interfaces than the kernel's (the daemon's unit tests give it a recording dataplane).
pub struct Deps {
    /// Opens the dataplanes `config.dataplane` names; the registry is the daemon's metrics.
    #[expect(clippy::type_complexity, reason = "a constructor, named once here")]
    pub dataplanes:
        Box<dyn FnOnce(&Config, &prometheus::Registry) -> Result<Dataplanes, DaemonError> + Send>,
    /// A configured interface's ifindex by name; `None`: not present.
    pub ifindex: fn(&str) -> Option<u32>,
}

impl Deps {
    /// The host's: the dataplanes of [`Dataplanes::open`], interfaces by `if_nametoindex`.
    pub fn host() -> Deps {
        Deps {
            dataplanes: Box::new(|config, registry| Ok(Dataplanes::open(config, registry)?)),
            ifindex: host_ifindex,
        }
    }
}

fn host_ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok().filter(|i| *i != 0)
}
