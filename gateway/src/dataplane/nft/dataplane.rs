//! The daemon's nftables dataplane: which interfaces nftables enforces on, the quarantine
//! state it renders, the gateway's own addresses, the last tables applied, and the
//! `lazaret_dataplane_info` metric. The daemon calls it from its reload and quarantine
//! paths; nothing here knows about XDP.

use super::frame::{self, Dynamic, FrameOptions, Port};
use super::{render, ApplyError, Family, Nft, RenderError, RenderOptions, Rendered};
use crate::dataplane::Enforcer;
use crate::policy::{DeviceStates, MapContents, Ranges};
use lazaret_abi::IfaceConfig;
use prometheus::{IntGaugeVec, Opts, Registry};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// nftables' own table names: lazaret owns `inet lazaret` and `inet lazaret_b`, and the
/// frame stage's `netdev lazaret` and `netdev lazaret_b`, and nothing else. Generations
/// alternate between the two names, so a new one is built beside the enforcing one and
/// swapped in (see [`super::Nft::swap`]); one exists at a time otherwise.
pub const TABLE: &str = "lazaret";
pub const TABLES: [&str; 2] = ["lazaret", "lazaret_b"];
/// The families lazaret's tables live in.
pub const FAMILIES: [Family; 2] = [Family::Inet, Family::Netdev];

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables: {0}")]
    Render(#[from] RenderError),
    #[error("nftables: {0}")]
    Apply(#[from] ApplyError),
}

/// What the last [`NftDataplane::apply`] was given: rendered again after an interface
/// falls back to nftables or the tables were tampered with, and what events are named from.
struct Inputs {
    contents: MapContents,
    rules: Arc<Ranges>,
    ifindexes: BTreeMap<String, u32>,
    ifaces: Vec<(String, IfaceConfig)>,
    generation: u64,
}

pub struct NftDataplane {
    nft: Nft,
    /// Interfaces nftables enforces on (by name); empty: nftables is not used.
    interfaces: BTreeSet<String>,
    states: DeviceStates,
    last_contents: Option<Arc<Inputs>>,
    /// The same, for the nflog reader's thread, which names the device of each event.
    events_inputs: Arc<RwLock<Option<Arc<Inputs>>>>,
    /// What the nflog reader delivered and lost, for the metrics.
    nflog: Arc<NflogStats>,
    last: Option<Rendered>,
    /// The interfaces stacked on enforced ones that the enforcing table was rendered with
    /// (see [`Self::stacked`]).
    rendered_stacked: BTreeMap<String, Vec<String>>,
    info: IntGaugeVec,
    /// The gateway's own addresses (see `daemon::local`).
    local: BTreeSet<IpAddr>,
    /// Port pins restored from the state directory, for the next frame stage.
    restored: Vec<([u8; 6], String)>,
    /// The rules of the enforcing tables as applied, per family: what [`Self::verify`]
    /// expects to find.
    expected: BTreeMap<&'static str, usize>,
    /// The ruleset generation last verified intact.
    verified: Option<u32>,
    /// Which member of an active/standby pair this is, and this daemon's salt, for
    /// [`flow_stamp`].
    second_member: bool,
    salt: u32,
}

/// Four random bytes (0 if the kernel's random source cannot be read: the member bit still
/// holds).
fn random_salt() -> u32 {
    let mut b = [0u8; 4];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    if read.is_ok() {
        u32::from_ne_bytes(b)
    } else {
        0
    }
}

/// The conntrack mark a table of `generation` stamps on the flows it admits (never 0, which
/// no table stamps, and never with the top bit, [`super::render::OWNER_MARK`], which the
/// table keeps in the conntrack mark of a flow being judged, so that such a mark is never
/// taken for an admitted flow's stamp): the generation mixed with this daemon's random
/// `salt` (its low 30 bits), shifted up, with the pair member's bit below it. The two members of a pair stamp
/// with different bits, so a flow conntrackd carried over from the other member never
/// matches this member's stamp and is judged again under this member's policy on its next
/// packet (`docs/ha.md`), as XDP judges a replicated flow again; the salt keeps that so,
/// but for a chance of one in 2^30, where the bit cannot be told (no `[ha] listen`).
pub fn flow_stamp(generation: u64, second_member: bool, salt: u32) -> u32 {
    ((((generation as u32) ^ salt) & 0x3fff_ffff).max(1) << 1) | u32::from(second_member)
}
/// The enforcing table's named counters, readable from any thread.
#[derive(Clone, Debug)]
pub struct CounterReader {
    nft: Nft,
    table: String,
    nflog: Arc<NflogStats>,
}

/// The nflog reader's events, from this process's start: handed to the controller, and
/// lost on the way (the socket's buffer overflowed — each overflow is at least one event,
/// the kernel does not say how many — or the controller's queue was full). The XDP ring
/// buffer's `EV_STAT_SENT` and `EV_STAT_RINGBUF_FULL`, so `lazaret_events_total` says the
/// same on both dataplanes. (Events the table's rate limits hold back are not counted:
/// nftables keeps no count of what a `limit` stopped.)
#[derive(Debug, Default)]
pub struct NflogStats {
    pub delivered: AtomicU64,
    pub lost: AtomicU64,
}

impl CounterReader {
    /// The nflog reader's events: see [`NflogStats`].
    pub fn events(&self) -> (u64, u64) {
        (
            self.nflog.delivered.load(Ordering::Relaxed),
            self.nflog.lost.load(Ordering::Relaxed),
        )
    }

    /// See [`NftDataplane::packet_stats`].
    pub fn read(&self) -> Option<Vec<u64>> {
        let mut out = vec![0u64; lazaret_abi::STATS_LEN as usize];
        // The frame stage and the inet table count with the same names; a packet is counted
        // by one of them (the frame stage counts only what it decides).
        for family in FAMILIES {
            let counters = match self.nft.counters(family, &self.table) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the nftables counters");
                    return None;
                }
            };
            for r in lazaret_abi::Reason::ALL {
                for (side, _) in super::render::SIDE_NAMES {
                    if let Some((packets, _)) = counters.get(&super::render::counter_name(r, side))
                    {
                        if let Some(slot) = out.get_mut(lazaret_abi::stats_index(r, side) as usize)
                        {
                            *slot += *packets;
                        }
                    }
                }
            }
        }
        Some(out)
    }
}

/// What [`NftDataplane::verify`] found changed behind lazaret's back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tampered {
    /// A table of the enforcing generation is gone (deleted, `nft flush ruleset`).
    TableMissing,
    /// Its rules changed (a chain flushed or deleted, rules added or removed).
    RulesChanged,
    /// The interface hold is gone while interfaces are held.
    HoldMissing,
    /// A table of the other generation of the pair still judges beside the enforcing one (a
    /// reload's delete of it failed). Both must pass a packet (closed), but what upstream
    /// sends to an address a device owns by first use is refused by the enforcing table
    /// while the other's frame stage marks it (`render::OWNER_TABLE`): put right at once.
    StaleTable,
}

impl Tampered {
    /// The `kind` label of `lazaret_datapath_tamper_total`.
    pub fn kind(self) -> &'static str {
        match self {
            Tampered::TableMissing => "nft_table_missing",
            Tampered::RulesChanged => "nft_rules_changed",
            Tampered::HoldMissing => "nft_hold_missing",
            Tampered::StaleTable => "nft_stale_table",
        }
    }
}

impl NftDataplane {
    /// Registers `lazaret_dataplane_info{interface, dataplane}` in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let info = IntGaugeVec::new(
            Opts::new(
                "lazaret_dataplane_info",
                "Which dataplane enforces on each interface (xdp or nftables); always 1.",
            ),
            &["interface", "dataplane"],
        )?;
        registry.register(Box::new(info.clone()))?;
        Ok(NftDataplane {
            nft: Nft::default(),
            interfaces: BTreeSet::new(),
            states: DeviceStates::default(),
            last_contents: None,
            rendered_stacked: BTreeMap::new(),
            events_inputs: Arc::default(),
            nflog: Arc::default(),
            last: None,
            info,
            local: BTreeSet::new(),
            restored: Vec::new(),
            expected: BTreeMap::new(),
            verified: None,
            second_member: false,
            salt: random_salt(),
        })
    }

    /// Marks this gateway as the second member of its pair (see [`flow_stamp`]).
    pub fn set_second_member(&mut self, second: bool) {
        self.second_member = second;
    }

    /// Holds the interfaces named in `held` closed (see [`super::hold`]).
    pub fn hold(&self, held: &BTreeSet<String>) -> Result<(), ApplyError> {
        self.nft.hold(held)
    }

    pub fn uses(&self, interface: &str) -> bool {
        self.interfaces.contains(interface)
    }

    pub fn active(&self) -> bool {
        !self.interfaces.is_empty()
    }

    /// Puts `interface` under nftables (takes effect at the next [`Self::apply`]).
    pub fn add_interface(&mut self, interface: &str) {
        self.interfaces.insert(interface.to_string());
    }

    /// Takes `interface` from nftables (takes effect at the next [`Self::apply`]).
    pub fn remove_interface(&mut self, interface: &str) {
        self.interfaces.remove(interface);
    }

    /// Records which dataplane enforces on `interface` in the metric.
    pub fn report(&self, interface: &str, enforcer: Enforcer) {
        for other in Enforcer::ALL {
            let _ = self
                .info
                .remove_label_values(&[interface, other.dataplane()]);
        }
        self.info
            .with_label_values(&[interface, enforcer.dataplane()])
            .set(1);
    }

    /// The stacked interfaces the enforcing table was rendered with.
    pub fn rendered_stacked(&self) -> &BTreeMap<String, Vec<String>> {
        &self.rendered_stacked
    }

    /// The interfaces stacked on those nftables enforces on, by the name the inet hooks see
    /// each of those under (see `RenderOptions::stacked`), as the kernel has them now.
    pub fn stacked(&self) -> BTreeMap<String, Vec<String>> {
        if self.interfaces.is_empty() {
            return BTreeMap::new();
        }
        let roots = self
            .interfaces
            .iter()
            .map(|n| (n.clone(), bridge_of(n).unwrap_or_else(|| n.clone())))
            .collect();
        stacked_on(&roots, sysfs_uppers)
    }

    /// Renders `contents` (the devices) and `rules` (the policy's two lookup stages) for
    /// the nftables interfaces and replaces the tables (see [`super::Nft::swap`]). `ifaces`
    /// are the configured interfaces with their datapath configuration (side, untagged
    /// VLAN, bridge binding); `states` the devices' quarantine states. No-op while no
    /// interface uses nftables.
    pub fn apply(
        &mut self,
        contents: &MapContents,
        rules: &Arc<Ranges>,
        ifindexes: &BTreeMap<String, u32>,
        ifaces: &[(String, IfaceConfig)],
        states: DeviceStates,
        generation: u64,
    ) -> Result<Option<Duration>, NftError> {
        self.states = states;
        let inputs = Arc::new(Inputs {
            contents: contents.clone(),
            rules: rules.clone(),
            ifindexes: ifindexes.clone(),
            ifaces: ifaces.to_vec(),
            generation,
        });
        self.last_contents = Some(inputs.clone());
        *self
            .events_inputs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(inputs);
        if !self.active() {
            return Ok(None);
        }
        let ports: Vec<Port> = ifaces
            .iter()
            .filter(|(name, _)| self.interfaces.contains(name))
            .filter_map(|(name, cfg)| {
                ifindexes.get(name).map(|ix| Port {
                    name: name.clone(),
                    ifindex: *ix,
                    cfg: *cfg,
                })
            })
            .collect();
        let mut m = contents.clone();
        m.ifaces = ports
            .iter()
            .map(|p| (p.ifindex, IfaceConfig::new(p.cfg.side)))
            .collect();
        // A bridge port is seen by the inet hooks (through br_netfilter) as its bridge, so
        // devices behind a bridge are bound to the bridge, not to their port.
        let ifnames = ifindexes
            .iter()
            .map(|(n, i)| (*i, bridge_of(n).unwrap_or_else(|| n.clone())))
            .collect();
        let stacked = self.stacked();
        for (under, names) in &stacked {
            tracing::info!(interface = %under, stacked = %names.join(","), "interfaces stacked on one nftables enforces on: judged as it");
        }
        // The name not in use (the enforcing table's, as found in the kernel: a restarted
        // daemon continues from what the last run left).
        let current = match &self.last {
            Some(r) => Some(r.table.clone()),
            None => TABLES
                .iter()
                .find(|t| self.nft.has_table(Family::Inet, t).unwrap_or(false))
                .map(std::string::ToString::to_string),
        };
        let next_table = match current.as_deref() {
            Some(t) if t == TABLES[0] => TABLES[1],
            _ => TABLES[0],
        };
        let rendered = render(
            &m,
            rules,
            &self.states,
            &RenderOptions {
                family: Family::Inet,
                table: next_table.into(),
                generation: flow_stamp(generation, self.second_member, self.salt),
                ifnames,
                stacked: stacked.clone(),
                log_group: Some(u32::from(super::nflog::GROUP)),
            },
        )?;
        let mut rendered = rendered;
        let mut frame_base = BTreeMap::new();
        let mut carried = Dynamic::default();
        if let Some(previous) = &current {
            // The new generation's counters start where the enforcing one's are, so they
            // (and the Prometheus counters read from them) only grow. Packets counted
            // between this read and the swap are not carried (milliseconds).
            match self
                .nft
                .counters(Family::Inet, previous)
                .and_then(|c| Ok((c, self.nft.counters(Family::Netdev, previous)?)))
            {
                Ok((c, f)) => {
                    rendered.counter_base = c;
                    frame_base = f;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the nftables counters before a reload: they restart from zero");
                }
            }
            // Link-local owners and port pins the packet path recorded stay.
            match self.nft.dynamic(previous) {
                Ok(d) => carried = d,
                Err(e) => {
                    tracing::warn!(error = %e, "reading link-local owners and port pins before a reload: they are learned anew");
                }
            }
        }
        // Pins restored from the state directory, unless the table already has the MAC.
        for (mac, port) in std::mem::take(&mut self.restored) {
            if !carried.pins.iter().any(|(m, _)| *m == mac) {
                carried.pins.push((mac, port));
            }
        }
        // A pin to a port that is no longer enforced here cannot be written (its name may
        // not exist); the MAC is pinned again where it is next seen.
        carried
            .pins
            .retain(|(_, port)| ports.iter().any(|p| &p.name == port));
        rendered.frame = Some(frame::render_frame(
            contents,
            &FrameOptions {
                table: next_table,
                ports: &ports,
                local: &self.local,
                log_group: Some(u32::from(super::nflog::GROUP)),
                counter_base: &frame_base,
                carried: &carried,
                states: &self.states,
            },
        )?);
        bridge_hooks(&self.interfaces);
        let took = match &current {
            Some(previous) => self.nft.swap(previous, &rendered)?,
            None => self.nft.apply(&rendered)?,
        };
        // What the verifier expects from now on (a terse listing: milliseconds).
        self.expected.clear();
        for family in FAMILIES {
            if let Some(n) = self.nft.rule_count(family, next_table)? {
                self.expected.insert(family.name(), n);
            }
        }
        self.verified = None;
        self.last = Some(rendered);
        self.rendered_stacked = stacked;
        Ok(Some(took))
    }

    /// Checks that the ruleset still holds what lazaret put there, given the ruleset's
    /// `generation` (`dataplane::kernel::nft_generation`): nothing is listed while it is the
    /// one last verified, so the check costs one netlink round trip until something —
    /// lazaret or anyone else — commits a change. `held`: whether the interface hold
    /// should be in place.
    pub fn verify(&mut self, generation: u32, held: bool) -> Result<Option<Tampered>, NftError> {
        // Enforcing once contents were applied; `last` is gone only after a restore failed.
        let enforcing = self.active() && self.last_contents.is_some();
        if (!enforcing && !held) || self.verified == Some(generation) {
            return Ok(None);
        }
        let tables = self.nft.tables()?;
        let has = |family: &str, name: &str| tables.iter().any(|(f, n)| f == family && n == name);
        if enforcing {
            let Some(r) = &self.last else {
                return Ok(Some(Tampered::TableMissing));
            };
            for family in FAMILIES {
                if !has(family.name(), &r.table) {
                    return Ok(Some(Tampered::TableMissing));
                }
                let rules = self.nft.rule_count(family, &r.table)?;
                if rules != self.expected.get(family.name()).copied() {
                    return Ok(Some(Tampered::RulesChanged));
                }
                let other = TABLES.iter().find(|t| **t != r.table);
                if other.is_some_and(|t| has(family.name(), t)) {
                    return Ok(Some(Tampered::StaleTable));
                }
            }
        }
        if held && !has("inet", super::hold::HOLD_TABLE) {
            return Ok(Some(Tampered::HoldMissing));
        }
        self.verified = Some(generation);
        Ok(None)
    }

    /// Puts the enforcing generation back after [`Self::verify`] found it changed: what is
    /// left of lazaret's tables is removed and the last contents applied afresh (their
    /// counters restart; the pins are written back from `pins`).
    pub fn restore(&mut self, pins: &[([u8; 6], String)]) -> Result<(), NftError> {
        for family in FAMILIES {
            for table in TABLES {
                if self.nft.has_table(family, table)? {
                    self.nft.delete(family, table)?;
                }
            }
        }
        self.last = None;
        self.verified = None;
        self.restored = pins.to_vec();
        self.reapply()?;
        Ok(())
    }

    /// Applies the last contents again (after interfaces were added).
    pub fn reapply(&mut self) -> Result<Option<Duration>, NftError> {
        match self.last_contents.clone() {
            Some(inputs) => {
                let states = self.states.clone();
                let i = &*inputs;
                self.apply(
                    &i.contents,
                    &i.rules,
                    &i.ifindexes,
                    &i.ifaces,
                    states,
                    i.generation,
                )
            }
            None => Ok(None),
        }
    }

    /// The gateway's own addresses changed: the frame stage's sets of them are rewritten in
    /// place (no new generation).
    pub fn set_local(&mut self, local: &BTreeSet<IpAddr>) -> Result<(), NftError> {
        self.local = local.clone();
        if let Some(r) = &self.last {
            self.nft.set_local(&r.table, local)?;
        }
        Ok(())
    }

    /// Pins kept from an earlier run (the state directory), written into the next
    /// generation's frame stage with those the enforcing one holds.
    pub fn restore_pins(&mut self, pins: &[([u8; 6], String)]) {
        self.restored = pins.to_vec();
    }

    /// The bridge-port pins of the enforcing frame stage (MAC → port name).
    pub fn pins(&self) -> Result<Vec<([u8; 6], String)>, NftError> {
        match &self.last {
            Some(r) => Ok(self.nft.dynamic(&r.table)?.pins),
            None => Ok(Vec::new()),
        }
    }

    /// The quarantines lazaret's inet table left in the kernel by an earlier run enforces,
    /// by device MAC and address (see [`super::Nft::quarantined_devices`]); none if there
    /// is no table.
    pub fn kernel_quarantines(&self) -> Vec<(super::KernelDevice, u8)> {
        TABLES
            .iter()
            .find(|t| self.nft.has_table(Family::Inet, t).unwrap_or(false))
            .and_then(|t| self.nft.quarantined_devices(t).ok())
            .unwrap_or_default()
    }

    /// Whether lazaret's inet table of an earlier run is in the kernel (and so enforcing).
    pub fn table_in_kernel(&self) -> bool {
        TABLES
            .iter()
            .any(|t| self.nft.has_table(Family::Inet, t).unwrap_or(false))
    }

    /// Releases the pin of `mac`; whether there was one.
    pub fn release_pin(&mut self, mac: [u8; 6]) -> Result<bool, NftError> {
        let Some(r) = &self.last else {
            return Ok(false);
        };
        let pins = self.nft.dynamic(&r.table)?.pins;
        let mine: Vec<String> = pins
            .into_iter()
            .filter(|(m, _)| *m == mac)
            .map(|(_, port)| port)
            .collect();
        if mine.is_empty() {
            return Ok(false);
        }
        self.nft.release_pin(&r.table, mac, &mine)?;
        Ok(true)
    }

    /// Releases the addresses `mac` owns by first use; how many it owned. One about to
    /// expire (under 2 s left) is left to expire: deleting an element that expired after
    /// it was listed would fail the whole transaction.
    pub fn release_addresses(&mut self, mac: [u8; 6]) -> Result<usize, NftError> {
        let Some(r) = &self.last else {
            return Ok(0);
        };
        let d = self.nft.dynamic(&r.table)?;
        // Claimed, or still naming it as a destination (each address once).
        let owned =
            mine(&d.owners4, &d.dest4, mac, 0).len() + mine(&d.owners6, &d.dest6, mac, 0).len();
        let v4: Vec<_> = mine(&d.owners4, &[], mac, 2).into_iter().collect();
        let v6: Vec<_> = mine(&d.owners6, &[], mac, 2).into_iter().collect();
        // Addresses whose claim it has left still name it as a destination.
        let dest4: Vec<_> = mine(&[], &d.dest4, mac, 2).into_iter().collect();
        let dest6: Vec<_> = mine(&[], &d.dest6, mac, 2).into_iter().collect();
        if !v4.is_empty() || !v6.is_empty() || !dest4.is_empty() || !dest6.is_empty() {
            let dest = (&dest4[..], &dest6[..]);
            self.nft
                .release_addresses(&r.table, mac, (&v4, &v6), dest)?;
        }
        Ok(owned)
    }

    /// With XDP enforcing everywhere, removes a table an earlier nftables run left (after
    /// XDP is attached, so there is no gap). Without nft installed there is nothing to do.
    pub fn retire(&self) {
        if self.active() {
            return;
        }
        for family in FAMILIES {
            for table in TABLES {
                if let Ok(true) = self.nft.has_table(family, table) {
                    match self.nft.delete(family, table) {
                        Ok(()) => tracing::info!(
                            table,
                            "removed an nftables table of an earlier nftables run: XDP enforces"
                        ),
                        Err(e) => {
                            tracing::warn!(table, error = %e, "could not remove an nftables table of an earlier run");
                        }
                    }
                }
            }
        }
    }

    /// The enforcing table's packet counters by reason and side, indexed by
    /// [`lazaret_abi::stats_index`] (the XDP program's `LZ_STATS` layout); `None` while
    /// nftables enforces nowhere or the table cannot be read.
    pub fn packet_stats(&self) -> Option<Vec<u64>> {
        self.counter_reader()?.read()
    }

    /// What [`Self::packet_stats`] reads, to read it on another thread (`nft` is a process
    /// per family: milliseconds not to spend on the daemon's loop).
    pub fn counter_reader(&self) -> Option<CounterReader> {
        if !self.active() {
            return None;
        }
        Some(CounterReader {
            nft: self.nft.clone(),
            table: self.last.as_ref()?.table.clone(),
            nflog: self.nflog.clone(),
        })
    }

    /// Sets a device's quarantine (`QUARANTINE_*`) in the table's quarantine sets.
    pub fn set_quarantine(&mut self, device: u64, quarantine: u8) -> Result<(), NftError> {
        self.states.set_quarantine(device, quarantine);
        if let Some(r) = &self.last {
            self.nft.set_quarantine(r, &self.states)?;
            if let (Some(f), Some(i)) = (&r.frame, &self.last_contents) {
                let macs = frame::quarantined_macs(&i.contents, &self.states);
                self.nft.set_frame_quarantine(&f.table, &macs)?;
            }
        }
        Ok(())
    }
}

impl NftDataplane {
    /// Reads the table's nflog group on a thread of its own (in the daemon's namespace),
    /// names each logged packet's device from the generation then enforcing, and sends the
    /// event to `tx`, until `tx` is closed. Logged packets are rate-limited by the table
    /// itself (see [`super::render::EVENT_METER`]); what the controller is too slow for is
    /// dropped here rather than blocking the socket.
    pub fn spawn_reader(
        &self,
        tx: tokio::sync::mpsc::Sender<lazaret_abi::Event>,
    ) -> std::io::Result<()> {
        let sock =
            super::nflog::NflogSocket::bind(super::nflog::GROUP, Duration::from_millis(500))?;
        let inputs = self.events_inputs.clone();
        let stats = self.nflog.clone();
        std::thread::Builder::new()
            .name("nflog".into())
            .spawn(move || {
                while !tx.is_closed() {
                    match sock.recv() {
                        Ok(batch) => {
                            let now = inputs
                                .read()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .clone();
                            for l in batch {
                                let ev = now.as_deref().and_then(|i| event(i, &l));
                                if let Some(ev) = ev {
                                    let counter = match tx.try_send(ev) {
                                        Ok(()) => &stats.delivered,
                                        Err(_) => &stats.lost,
                                    };
                                    counter.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        // The socket's buffer overflowed: events were lost, and reading on
                        // at once is what makes room (a pause would lose more).
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            stats.lost.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reading nftables events (nflog)");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            })?;
        Ok(())
    }
}

/// Devices behind a Linux bridge: bridged frames reach the inet table's hooks only through
/// br_netfilter (`bridge-nf-call-iptables`, per network namespace). nftables' own bridge
/// family would need conntrack for bridges (`nf_conntrack_bridge`), which kernels may lack,
/// so lazaret keeps one inet table and turns the bridge hooks on when an interface it
/// enforces on is a bridge port.
fn bridge_hooks(interfaces: &BTreeSet<String>) {
    let bridged = interfaces
        .iter()
        .any(|i| std::path::Path::new(&format!("/sys/class/net/{i}/brport")).exists());
    if !bridged {
        return;
    }
    // Tagged frames too: a trunk port's single-tagged frames would otherwise be bridged
    // without the inet table seeing them (the frame stage refuses every other stack).
    for key in [
        "bridge-nf-call-iptables",
        "bridge-nf-call-ip6tables",
        "bridge-nf-filter-vlan-tagged",
    ] {
        let path = format!("/proc/sys/net/bridge/{key}");
        if let Err(e) = std::fs::write(&path, "1") {
            tracing::error!(path, error = %e, "cannot route bridged traffic through nftables: devices behind the bridge are not enforced");
        }
    }
}

/// Most interfaces followed up from the enforced ones: a bound on the walk.
const MAX_STACKED: usize = 4096;

/// The interfaces stacked on `roots` (each enforced interface's name, to the name the inet
/// hooks see it under: its bridge's for a bridge port), transitively, by that name; those
/// that are roots themselves (judged as their own) and what is stacked on them are left
/// out. `uppers_of` names the interfaces directly on one (the kernel's `upper_*` links).
pub fn stacked_on(
    roots: &BTreeMap<String, String>,
    uppers_of: impl Fn(&str) -> Vec<String>,
) -> BTreeMap<String, Vec<String>> {
    let known: BTreeSet<&String> = roots.keys().chain(roots.values()).collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut visited = BTreeSet::new();
    let mut cut = false;
    for (raw, seen_as) in roots {
        let mut todo = vec![raw.clone(), seen_as.clone()];
        while let Some(name) = todo.pop() {
            if visited.len() >= MAX_STACKED {
                cut = true;
                continue;
            }
            if !visited.insert((seen_as.clone(), name.clone())) {
                continue;
            }
            for up in uppers_of(&name) {
                if known.contains(&up) {
                    continue;
                }
                let list = out.entry(seen_as.clone()).or_default();
                if !list.contains(&up) {
                    list.push(up.clone());
                }
                todo.push(up);
            }
        }
    }
    // Once: the daemon's interface check walks this every 250 ms.
    static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if cut && !TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(
            max = MAX_STACKED,
            "more interfaces are stacked on those nftables enforces on than it follows: what is routed through the rest is not judged"
        );
    }
    for list in out.values_mut() {
        list.sort();
    }
    out
}

/// The interfaces stacked on `interface` that take its frames and hand them to the stack
/// under their own name — VLAN sub-interfaces, macvlans, ipvlans: its `upper_*` links
/// (`/sys/class/net`) but its `master`. Not a master (a bridge, whose configured ports are
/// seen as it; a bond or a VRF, which gather several interfaces, of either side, under one
/// name). A name nft would read as a wildcard (ending in `*`) is left out, loudly:
/// rendered, it would fail every table.
fn sysfs_uppers(interface: &str) -> Vec<String> {
    let base = format!("/sys/class/net/{interface}");
    let Ok(dir) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let master = std::fs::read_link(format!("{base}/master"))
        .ok()
        .and_then(|m| Some(m.file_name()?.to_str()?.to_string()));
    dir.filter_map(|e| {
        let name = e.ok()?.file_name();
        Some(name.to_str()?.strip_prefix("upper_")?.to_string())
    })
    .filter(|n| master.as_ref() != Some(n))
    .filter(|n| {
        let writable = !n.contains('*');
        if !writable {
            tracing::error!(interface = %n, under = %interface, "an interface stacked on one nftables enforces on has a name nft cannot match: what is routed through it is not judged");
        }
        writable
    })
    .collect()
}

/// The bridge `interface` is a port of, if it is one.
fn bridge_of(interface: &str) -> Option<String> {
    let master = std::fs::read_link(format!("/sys/class/net/{interface}/master")).ok()?;
    std::path::Path::new(&format!("/sys/class/net/{interface}/brport"))
        .exists()
        .then(|| master.file_name()?.to_str().map(str::to_string))
        .flatten()
}

/// The event for a packet the table logged: its fields, plus the device it concerns
/// (by source address, else source MAC, else destination address) and the side of the
/// interface it came in on, from the last applied contents.
fn event(inputs: &Inputs, l: &super::nflog::Logged) -> Option<lazaret_abi::Event> {
    let mut ev = super::nflog::event(l)?;
    let Inputs {
        contents: m,
        ifindexes,
        ifaces: sides,
        generation,
        ..
    } = inputs;
    ev.generation = *generation;
    ev.side = ifindexes
        .iter()
        .find(|(_, ix)| **ix == l.ifindex)
        .and_then(|(name, _)| sides.iter().find(|(n, _)| n == name))
        .map_or(lazaret_abi::SIDE_DEVICES, |(_, cfg)| cfg.side);
    let by_addr = |a: &[u8; 16]| -> Option<u64> {
        match ev.family {
            lazaret_abi::FAMILY_V4 => m
                .dev_ip4
                .iter()
                .find(|(k, _)| k.addr[..] == a[..4])
                .map(|(_, r)| r.id),
            lazaret_abi::FAMILY_V6 => m
                .dev_ip6
                .iter()
                .find(|(k, _)| &k.addr == a)
                .map(|(_, r)| r.id),
            _ => None,
        }
    };
    let by_mac = || {
        m.dev_mac
            .iter()
            .find(|(k, _)| k.mac == l.src_mac)
            .map(|(_, r)| r.id)
    };
    // The parser's refusals come before identity (the frame stage's `frame` checks): like
    // the XDP program, they name no device (a source MAC or address there is only claimed).
    let parsed = matches!(
        lazaret_abi::Reason::from_u8(ev.reason),
        Some(
            lazaret_abi::Reason::DenyMalformed
                | lazaret_abi::Reason::DenyEthertype
                | lazaret_abi::Reason::DenyVlanDepth
                | lazaret_abi::Reason::DenyVlanTag
                | lazaret_abi::Reason::DenyIpv6Ext
                | lazaret_abi::Reason::DenyTcpFlags
                | lazaret_abi::Reason::DenyFragment
        )
    );
    if ev.kind != lazaret_abi::EVENT_UNKNOWN && super::nflog::is_responder_record(&l.prefix) {
        // A responder's policy refused (or reported) another end's flow: the responder is
        // the flow's destination, and did not open it.
        ev.device = by_addr(&ev.dst).unwrap_or(0);
        ev.dir = lazaret_abi::DIR_PEER_INIT;
    } else if ev.kind != lazaret_abi::EVENT_UNKNOWN && !parsed {
        // The source's device opened the flow; else the flow was opened towards the
        // destination's device.
        match by_addr(&ev.src).or_else(by_mac) {
            Some(d) => ev.device = d,
            None => {
                ev.device = by_addr(&ev.dst).unwrap_or(0);
                ev.dir = lazaret_abi::DIR_PEER_INIT;
            }
        }
    }
    Some(ev)
}

/// The addresses of `claims` and `dest` (address, owner's MAC, seconds left) that `mac`
/// holds with at least `left` seconds to go, each once.
fn mine<A: Ord + Copy>(
    claims: &[(A, [u8; 6], u64)],
    dest: &[(A, [u8; 6], u64)],
    mac: [u8; 6],
    left: u64,
) -> BTreeSet<A> {
    claims
        .iter()
        .chain(dest)
        .filter(|o| o.1 == mac && o.2 >= left)
        .map(|o| o.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::stacked_on;
    use std::collections::BTreeMap;

    /// A trunk's VLANs and what is stacked on them, a bridge's VLAN (found through the
    /// bridge its port is seen as), and another enforced interface stacked on the trunk
    /// (judged as itself, and so is what is on it): each under the name the hooks see.
    #[test]
    fn interfaces_stacked_on_an_enforced_one_are_found_under_its_name() {
        let uppers = |n: &str| -> Vec<String> {
            let v: &[&str] = match n {
                "trunk" => &["trunk.20", "trunk.30", "own.40"],
                "trunk.20" => &["mv0"],
                "own.40" => &["own.40.1"],
                "port1" => &["icu0"],
                "icu0" => &["icu0.50"],
                _ => &[],
            };
            v.iter().map(|s| (*s).to_string()).collect()
        };
        let roots = BTreeMap::from([
            ("trunk".to_string(), "trunk".to_string()),
            ("port1".to_string(), "icu0".to_string()),
            ("own.40".to_string(), "own.40".to_string()),
        ]);
        let found = stacked_on(&roots, uppers);
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        assert_eq!(
            found,
            BTreeMap::from([
                ("trunk".to_string(), names(&["mv0", "trunk.20", "trunk.30"])),
                ("icu0".to_string(), names(&["icu0.50"])),
                ("own.40".to_string(), names(&["own.40.1"])),
            ])
        );
        assert!(stacked_on(&roots, |_| Vec::new()).is_empty());
    }

    /// A chain of stacked interfaces with no end (a kernel that lists one forever) stops at
    /// the bound, and is said (an error logged once).
    #[test]
    fn the_walk_up_stacked_interfaces_is_bounded() {
        let roots = BTreeMap::from([("x".to_string(), "x".to_string())]);
        let found = stacked_on(&roots, |n| vec![format!("{n}+")]);
        assert_eq!(found["x"].len(), super::MAX_STACKED);
    }
}
