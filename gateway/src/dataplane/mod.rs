//! The dataplanes, and the seam between them and the controller.
//!
//! - [`xdp`]: the XDP program, loaded, pinned and filled generation by generation.
//! - [`nft`]: the same compiled policy as nftables tables, where XDP cannot run.
//! - [`IfaceMode`] / [`Enforcer`]: what enforces on each interface, as types.
//! - [`Dataplane`]: what the controller does to every dataplane, the same way, whichever it
//!   is: attach to an interface and let go of it ([`Dataplane::attach`],
//!   [`Dataplane::release`]), install a generation ([`Dataplane::stage`],
//!   [`Dataplane::commit`]), read its counters ([`Dataplane::counters`]), find and put
//!   back what someone else changed ([`Dataplane::tampered`], [`Dataplane::restore`]),
//!   deliver its events ([`Dataplane::events`]), set a device's quarantine, the gateway's
//!   own addresses, bridge-port pins.
//! - [`kernel`]: the kernel's own answer about enforcement (netlink).
//! - [`Dataplanes`]: every dataplane of a gateway, built in one place
//!   ([`Dataplanes::open`], from `config.dataplane`) and reached through
//!   [`Dataplanes::all`].
//!
//! A trait rather than an enum of the two: the controller holds both at once (with
//! `dataplane = "auto"` nftables takes over the interfaces where XDP cannot attach, and the
//! nftables dataplane also owns the interface hold that both rely on), and reaches them
//! through [`Dataplanes::all`] — nftables first, so a table `nft` refuses fails an install
//! before XDP's slot is written; XDP is absent with `dataplane = "nftables"`, which loads no
//! BPF at all. The daemon's shell takes its `Dataplanes` as a dependency, so tests run it
//! over a recording dataplane.
//!
//! What is not behind the seam is what only one dataplane has: XDP's flow table, per-device
//! counters and port pins (`lazaret flows`, `devices --live`, `pins`), its pinned device
//! state read back at start; nftables' interface hold, which every dataplane relies on.
//!
//! Adding a third dataplane, without touching the controller:
//! 1. a module implementing [`Dataplane`] (and [`EventDrain`] or a reader thread for its
//!    events, [`Counters`] for its counters);
//! 2. a variant of [`Enforcer`] with its labels, and the arm of `daemon::interfaces::meant`
//!    that picks it;
//! 3. a value of `config::Dataplane`, whose arm in [`Dataplanes::open`] builds it into
//!    [`Dataplanes::others`].

mod dataplanes;
pub mod kernel;
mod mode;
pub mod nft;
pub mod xdp;

pub use dataplanes::{pin_dir, Dataplanes};
pub use mode::{Enforcer, IfaceMode};

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::fd::AsRawFd,
    path::Path,
};

use lazaret_abi::IfaceConfig;

use crate::{
    metrics::DatapathSnapshot,
    policy::{DeviceStates, MapContents},
};

/// A dataplane's counters, read on a thread of their own (reading every device's counters
/// of a big policy takes tens of milliseconds).
pub trait Counters: Send {
    /// Adds this dataplane's counters to `snap` (packets by reason and side are summed
    /// across dataplanes: each judges its own interfaces). `devices`: (id hash, class) of
    /// the policy's devices. An error: the packet counters cannot be read, and the snapshot
    /// is not used.
    fn read_into(
        &mut self,
        devices: &[(u64, Option<String>)],
        snap: &mut DatapathSnapshot,
    ) -> Result<(), DataplaneError>;
}

/// A dataplane's events waiting in the kernel, drained by the controller's loop when the
/// descriptor is readable (and at every beat): nothing is copied before the loop is ready
/// for it, and what the loop does not keep up with stays in the kernel's buffer, whose
/// overflow the dataplane counts (XDP's ring buffer: `ringbuf_full`).
pub trait EventDrain: AsRawFd + Send {
    /// Every event waiting now; never blocks.
    fn drain(&mut self) -> Vec<lazaret_abi::Event>;
}

impl EventDrain for xdp::EventReader {
    fn drain(&mut self) -> Vec<lazaret_abi::Event> {
        xdp::EventReader::drain(self)
    }
}

/// Adds `counts` to `total`, index by index.
fn add_packets(total: &mut Vec<u64>, counts: &[u64]) {
    if total.len() < counts.len() {
        total.resize(counts.len(), 0);
    }
    for (t, n) in total.iter_mut().zip(counts) {
        *t += n;
    }
}

/// An error of one dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Xdp(#[from] crate::dataplane::xdp::DatapathError),
    #[error(transparent)]
    Nftables(#[from] crate::dataplane::nft::NftError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("creating pin directory {}: {source}", dir.display())]
    PinDir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not on a bpf filesystem (mount one: mount -t bpf bpf {})", dir.display(), root.display())]
    NotBpffs {
        dir: std::path::PathBuf,
        root: std::path::PathBuf,
    },
    #[error("registering metrics: {0}")]
    Metrics(#[source] prometheus::Error),
}

/// A compiled generation, as every dataplane is given it to install.
pub struct Generation<'a> {
    /// Its number (nftables stamps it in each connection's mark).
    pub number: u64,
    /// The compiled policy encoded for the XDP maps' next slot: its devices and, as
    /// longest-prefix-match entries, its rules.
    pub contents: &'a MapContents,
    /// Its rules as prefixes and ranges, dataplane-neutral (what nftables renders).
    pub rules: &'a std::sync::Arc<crate::policy::Ranges>,
    /// The configured interfaces and bridges (0: not present).
    pub ifindexes: &'a BTreeMap<String, u32>,
    /// Each configured interface with its side, untagged VLAN and binding.
    pub interfaces: &'a [(String, IfaceConfig)],
    /// The devices' quarantines, as the controller holds them.
    pub states: &'a DeviceStates,
}

/// An interface to enforce on.
pub struct Attach<'a> {
    pub iface: &'a crate::config::Interface,
    pub ifindex: u32,
    /// Its side, untagged VLAN and binding.
    pub config: IfaceConfig,
    /// Where XDP pins its links (`<pin_dir>/v<ABI>`).
    pub pin_dir: &'a Path,
    /// Where the XDP attach mode of each link is recorded (a pinned link does not say).
    pub state_dir: &'a Path,
}

/// Something lazaret put in the kernel, found changed behind its back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tampering {
    /// `kind` of `lazaret_datapath_tamper_total`.
    pub kind: &'static str,
    /// The interfaces it concerns (for the hold: the interfaces held).
    pub interfaces: Vec<String>,
    /// How it is put back.
    pub repair: Repair,
}

/// How a [`Tampering`] is put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Attach the dataplane to each interface again (XDP: a new link).
    Reattach,
    /// The dataplane puts its state back itself ([`Dataplane::restore`]).
    Restore,
    /// The interface hold is written again from the controller's list of held interfaces.
    Hold,
}

/// Called once a staged generation may be committed, on whatever thread staged it.
pub type Staged = Box<dyn FnOnce() + Send>;

/// Builds the committed generation's contents for another XDP slot (`None`: cannot).
pub type Retired = Box<dyn FnOnce(u8) -> Option<MapContents> + Send>;

/// What the controller does to every dataplane alike.
pub trait Dataplane {
    /// Whether this is the dataplane `e` names.
    fn serves(&self, e: Enforcer) -> bool;

    /// Starts enforcing on an interface, and says how it enforces there. XDP attaches its
    /// program through a pinned link (adopting, atomically, one an earlier run or an older
    /// ABI left); nftables adds the interface to the tables it renders, hooked by the next
    /// install or [`nft::NftDataplane::reapply`].
    fn attach(&mut self, a: &Attach<'_>) -> Result<Enforcer, DataplaneError>;

    /// Stops enforcing on `interface`: another dataplane takes it over, or it came back
    /// under a new ifindex (XDP's pinned link died with the old one).
    fn release(&mut self, interface: &str, pin_dir: &Path);

    /// Every interface is attached: what an earlier run left that nothing uses now goes
    /// (XDP: an older ABI's pins; nftables: its tables, when it enforces nowhere).
    fn attached_all(&mut self, pin_dir: &Path);

    /// The first half of installing `g`: `staged` is called once it may be committed. XDP
    /// writes its inactive slot on a thread of its own (packets still see the old
    /// generation); nftables replaces its tables in one atomic transaction, so for it
    /// staging is enforcing, and calls `staged` before returning. On error nothing changed.
    fn stage(&mut self, g: &Generation<'_>, staged: Staged) -> Result<(), DataplaneError>;

    /// The second half: the staged generation judges every packet from now on (XDP flips
    /// its generation switch). `retired` builds it for the other slot, which XDP brings up
    /// to date in the background so the next small edit writes only its difference.
    fn commit(&mut self, retired: Retired) -> Result<(), DataplaneError>;

    /// Compares what the kernel enforces with what this dataplane put there, on
    /// `enforcing` (the interfaces it enforces on, with their ifindexes). `held`: whether
    /// the interface hold should be in place (nftables keeps it for every dataplane).
    fn tampered(&mut self, enforcing: &[(String, u32)], held: bool) -> Vec<Tampering>;

    /// Puts back what [`Self::tampered`] found changed, for [`Repair::Restore`]; `pins`
    /// are the bridge-port pins to write back.
    fn restore(&mut self, pins: &[([u8; 6], String)]) -> Result<(), DataplaneError>;

    /// Starts delivering its events, once, when serving starts. A dataplane whose events
    /// wait in the kernel returns them for the loop to drain (XDP's ring buffer); one whose
    /// events must be read as they come sends them to `tx` from a thread of its own and
    /// returns `None` (nftables' nflog socket keeps nothing for a reader that is not there).
    fn events(
        &mut self,
        tx: &tokio::sync::mpsc::Sender<lazaret_abi::Event>,
    ) -> Result<Option<Box<dyn EventDrain>>, DataplaneError>;

    /// Its counters, for a read off the controller's loop; `None` while it counts nothing
    /// (nftables enforcing nowhere). An error: they cannot be reached now, and no snapshot
    /// is taken (a partial one would look like counters going back).
    fn counters(&mut self) -> Result<Option<Box<dyn Counters>>, DataplaneError>;

    /// Sets `device`'s quarantine (`lazaret_abi::QUARANTINE_*`); its flows are judged by
    /// the new state from their next packet on.
    fn set_quarantine(&mut self, device: u64, quarantine: u8) -> Result<(), DataplaneError>;

    /// The gateway's own addresses (devices may reach them only as the site allows).
    fn set_local(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<(), DataplaneError>;

    /// The bridge-port pins the dataplane holds, as (MAC, port name); `ifindexes` names
    /// the ports.
    fn pins(
        &mut self,
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<Vec<([u8; 6], String)>, DataplaneError>;

    /// Puts back pins kept in the state directory (after a reboot the dataplane has none).
    fn restore_pins(
        &mut self,
        pins: &[([u8; 6], String)],
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<(), DataplaneError>;

    /// Releases the pin of `mac`; whether there was one.
    fn release_pin(&mut self, mac: [u8; 6]) -> Result<bool, DataplaneError>;

    /// Releases the addresses `mac` owns by first use (another device may use them at
    /// once); how many it owned.
    fn release_addresses(&mut self, mac: [u8; 6]) -> Result<usize, DataplaneError>;
}

impl Dataplane for crate::dataplane::xdp::Datapath {
    fn serves(&self, e: Enforcer) -> bool {
        e.is_xdp()
    }

    fn attach(&mut self, a: &Attach<'_>) -> Result<Enforcer, DataplaneError> {
        let name = &a.iface.name;
        self.set_interface_config(a.ifindex, a.config)?;
        let root = a.pin_dir.parent().unwrap_or(a.pin_dir);
        let legacy = xdp::attach::legacy_dirs(root, a.pin_dir);
        let attached = xdp::attach::attach(
            self.program_mut()?,
            name,
            a.iface.xdp_mode,
            a.pin_dir,
            &legacy,
        )?;
        let mode = match attached {
            xdp::attach::Attached::New(mode) => {
                if a.iface.xdp_mode == xdp::AttachMode::Auto && mode == xdp::AttachMode::Skb {
                    tracing::warn!(interface = %name, "attached in skb (generic) mode");
                }
                let mode = Enforcer::xdp(mode);
                tracing::info!(interface = %name, side = a.iface.side.name(), mode = mode.label(), "attached");
                mode
            }
            xdp::attach::Attached::Adopted => {
                tracing::info!(interface = %name, side = a.iface.side.name(), "program swapped into the pinned link");
                xdp::attach::recorded_mode(a.state_dir, name).unwrap_or(Enforcer::XdpNative)
            }
        };
        xdp::attach::record_mode(a.state_dir, name, mode);
        Ok(mode)
    }

    /// An interface whose XDP program is gone (its pinned link detached through bpf(2)) or
    /// another one: re-attached. One netlink round trip per interface.
    fn tampered(&mut self, enforcing: &[(String, u32)], _held: bool) -> Vec<Tampering> {
        let ours = self
            .program_mut()
            .ok()
            .and_then(|p| p.info().ok())
            .map(|i| i.id());
        let mut out: Vec<Tampering> = Vec::new();
        for (name, index) in enforcing {
            // An interface gone is the controller's interface check's business.
            let Ok(found) = kernel::xdp_program(*index) else {
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
            tracing::error!(interface = %name, kind, found_program = found.unwrap_or(0), lazaret_program = ours.unwrap_or(0), "enforcement removed behind lazaret's back: restoring");
            out.push(Tampering {
                kind,
                interfaces: vec![name.clone()],
                repair: Repair::Reattach,
            });
        }
        out
    }

    fn events(
        &mut self,
        _tx: &tokio::sync::mpsc::Sender<lazaret_abi::Event>,
    ) -> Result<Option<Box<dyn EventDrain>>, DataplaneError> {
        Ok(Some(Box::new(self.take_events()?)))
    }

    /// Nothing but links to put back, and those are re-attached.
    fn restore(&mut self, _pins: &[([u8; 6], String)]) -> Result<(), DataplaneError> {
        Ok(())
    }

    /// Unpins the interface's link: the program leaves it (a link whose interface is gone
    /// is defunct anyway).
    fn release(&mut self, interface: &str, pin_dir: &Path) {
        xdp::attach::release(pin_dir, interface);
    }

    fn attached_all(&mut self, pin_dir: &Path) {
        let root = pin_dir.parent().unwrap_or(pin_dir);
        for dir in xdp::attach::legacy_dirs(root, pin_dir) {
            tracing::info!(dir = %dir.display(), "removing pins of an older datapath ABI");
            xdp::attach::remove_legacy(&dir);
        }
    }

    fn stage(&mut self, g: &Generation<'_>, staged: Staged) -> Result<(), DataplaneError> {
        Ok(xdp::Datapath::stage(self, g.contents.clone(), staged)?)
    }

    fn counters(&mut self) -> Result<Option<Box<dyn Counters>>, DataplaneError> {
        Ok(Some(Box::new(self.reader()?)))
    }

    fn commit(&mut self, retired: Retired) -> Result<(), DataplaneError> {
        xdp::Datapath::commit(self)?;
        if let Err(e) = self.sync_retired(retired) {
            // The next install reads the slot back instead: slower, as exact.
            tracing::warn!(error = %e, "could not start bringing the retired slot up to date");
        }
        Ok(())
    }

    /// Also bumps the device's epoch, so its established flows are re-judged.
    fn set_quarantine(&mut self, device: u64, quarantine: u8) -> Result<(), DataplaneError> {
        let mut st = self.device_state(device)?;
        if st.quarantine != quarantine {
            st.quarantine = quarantine;
            st.epoch = st.epoch.wrapping_add(1);
            self.set_device_state(device, st)?;
        }
        Ok(())
    }

    fn set_local(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<(), DataplaneError> {
        self.set_local_addrs(addrs)?;
        Ok(())
    }

    fn pins(
        &mut self,
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<Vec<([u8; 6], String)>, DataplaneError> {
        Ok(self
            .port_pins()?
            .into_iter()
            .filter_map(|(mac, pin)| {
                let (name, _) = ifindexes.iter().find(|(_, i)| **i == pin.ifindex)?;
                Some((mac, name.clone()))
            })
            .collect())
    }

    fn restore_pins(
        &mut self,
        pins: &[([u8; 6], String)],
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<(), DataplaneError> {
        // Every pin is tried: one that fails does not leave the others unpinned.
        let mut failed = Ok(());
        for (mac, port) in pins {
            if let Some(ifindex) = ifindexes.get(port) {
                let pin = lazaret_abi::PortPin {
                    ifindex: *ifindex,
                    ..Default::default()
                };
                if let Err(e) = self.set_port_pin(*mac, pin) {
                    failed = Err(e.into());
                }
            }
        }
        failed
    }

    fn release_pin(&mut self, mac: [u8; 6]) -> Result<bool, DataplaneError> {
        Ok(self.release_port_pin(mac)?)
    }

    fn release_addresses(&mut self, mac: [u8; 6]) -> Result<usize, DataplaneError> {
        Ok(self.release_owned_addresses(mac)?)
    }
}

impl Dataplane for crate::dataplane::nft::NftDataplane {
    fn serves(&self, e: Enforcer) -> bool {
        e == Enforcer::Nftables
    }

    fn attach(&mut self, a: &Attach<'_>) -> Result<Enforcer, DataplaneError> {
        self.add_interface(&a.iface.name);
        Ok(Enforcer::Nftables)
    }

    /// Takes effect at the next install or reapply.
    fn release(&mut self, interface: &str, _pin_dir: &Path) {
        self.remove_interface(interface);
    }

    fn attached_all(&mut self, _pin_dir: &Path) {
        self.retire();
    }

    /// Renders and swaps the tables of the interfaces nftables enforces on (none: only
    /// remembered, for a fallback later).
    fn stage(&mut self, g: &Generation<'_>, staged: Staged) -> Result<(), DataplaneError> {
        let took = self.apply(
            g.contents,
            g.rules,
            g.ifindexes,
            g.interfaces,
            g.states.clone(),
            g.number,
        )?;
        if let Some(took) = took {
            tracing::info!(
                generation = g.number,
                ms = took.as_millis() as u64,
                "nftables table applied"
            );
        }
        staged();
        Ok(())
    }

    /// Nothing left to do: the table swapped at [`Dataplane::stage`] enforces already.
    fn commit(&mut self, _retired: Retired) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn counters(&mut self) -> Result<Option<Box<dyn Counters>>, DataplaneError> {
        Ok(self
            .counter_reader()
            .map(|r| Box::new(r) as Box<dyn Counters>))
    }

    /// Its tables deleted or their rules changed (`nft flush ruleset`, a chain flushed), or
    /// the interface hold gone while interfaces are held. One netlink round trip while the
    /// ruleset's generation is the one last verified.
    fn tampered(&mut self, enforcing: &[(String, u32)], held: bool) -> Vec<Tampering> {
        if !self.active() && !held {
            return Vec::new();
        }
        let found = kernel::nft_generation()
            .map_err(|e| e.to_string())
            .and_then(|g| self.verify(g, held).map_err(|e| e.to_string()));
        match found {
            Ok(None) => Vec::new(),
            Ok(Some(t @ nft::Tampered::HoldMissing)) => {
                tracing::error!("the interface hold was removed behind lazaret's back: restoring");
                vec![Tampering {
                    kind: t.kind(),
                    interfaces: Vec::new(),
                    repair: Repair::Hold,
                }]
            }
            Ok(Some(t)) => {
                let on: Vec<String> = enforcing.iter().map(|(n, _)| n.clone()).collect();
                tracing::error!(kind = t.kind(), interfaces = %on.join(","), "lazaret's nftables tables were changed behind its back: restoring");
                vec![Tampering {
                    kind: t.kind(),
                    interfaces: on,
                    repair: Repair::Restore,
                }]
            }
            Err(e) => {
                tracing::debug!(error = %e, "checking the nftables ruleset");
                Vec::new()
            }
        }
    }

    fn restore(&mut self, pins: &[([u8; 6], String)]) -> Result<(), DataplaneError> {
        Ok(nft::NftDataplane::restore(self, pins)?)
    }

    /// Nothing to read while it enforces nowhere.
    fn events(
        &mut self,
        tx: &tokio::sync::mpsc::Sender<lazaret_abi::Event>,
    ) -> Result<Option<Box<dyn EventDrain>>, DataplaneError> {
        if self.active() {
            self.spawn_reader(tx.clone())
                .map_err(|source| DataplaneError::Io {
                    what: "reading nftables events (nflog)",
                    source,
                })?;
        }
        Ok(None)
    }

    fn set_quarantine(&mut self, device: u64, quarantine: u8) -> Result<(), DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::set_quarantine(
            self, device, quarantine,
        )?)
    }

    fn set_local(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<(), DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::set_local(self, addrs)?)
    }

    fn pins(
        &mut self,
        _ifindexes: &BTreeMap<String, u32>,
    ) -> Result<Vec<([u8; 6], String)>, DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::pins(self)?)
    }

    /// Written into the next generation's frame stage.
    fn restore_pins(
        &mut self,
        pins: &[([u8; 6], String)],
        _ifindexes: &BTreeMap<String, u32>,
    ) -> Result<(), DataplaneError> {
        crate::dataplane::nft::NftDataplane::restore_pins(self, pins);
        Ok(())
    }

    fn release_pin(&mut self, mac: [u8; 6]) -> Result<bool, DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::release_pin(self, mac)?)
    }

    fn release_addresses(&mut self, mac: [u8; 6]) -> Result<usize, DataplaneError> {
        Ok(crate::dataplane::nft::NftDataplane::release_addresses(
            self, mac,
        )?)
    }
}

impl Counters for xdp::DatapathReader {
    fn read_into(
        &mut self,
        devices: &[(u64, Option<String>)],
        snap: &mut DatapathSnapshot,
    ) -> Result<(), DataplaneError> {
        let packets = self.stats().inspect_err(|e| {
            tracing::warn!(error = %e, "reading packet counters");
        })?;
        add_packets(&mut snap.packets, &packets);
        if let Ok(e) = self.event_stats() {
            for (i, v) in e.iter().take(4).enumerate() {
                snap.event_stats[i] += *v;
            }
        }
        if let Ok(usage) = self.map_usage() {
            snap.flows_active = usage
                .iter()
                .filter(|(m, _, _)| {
                    *m == lazaret_abi::MAP_FLOWS || *m == lazaret_abi::MAP_EST_FLOWS
                })
                .map(|u| u.1)
                .sum();
            snap.map_entries = usage;
        }
        let mut by_class: BTreeMap<String, xdp::DeviceCounterTotals> = BTreeMap::new();
        for (hash, class) in devices {
            let Ok(t) = self.device_counters(*hash) else {
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
        Ok(())
    }
}

/// nftables counts the packets it judges by the same reasons and sides (its counters carry
/// over from one generation to the next); a table that cannot be read adds nothing.
impl Counters for nft::dataplane::CounterReader {
    fn read_into(
        &mut self,
        _devices: &[(u64, Option<String>)],
        snap: &mut DatapathSnapshot,
    ) -> Result<(), DataplaneError> {
        if let Some(counts) = self.read() {
            add_packets(&mut snap.packets, &counts);
        }
        let (delivered, lost) = self.events();
        snap.event_stats[lazaret_abi::EV_STAT_SENT as usize] += delivered;
        snap.event_stats[lazaret_abi::EV_STAT_RINGBUF_FULL as usize] += lost;
        Ok(())
    }
}
