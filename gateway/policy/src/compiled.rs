//! What the compiler produces: [`Compiled`] (site, interfaces, devices, the deduplicated
//! policies, the rule table, statistics) and its parts. Serializable, traceable to the
//! source (every rule keeps its origin and location); the datapath encoding of it is
//! [`super::maps`], its lookup structure `super::lookup`.

use super::compile::Reuse;
use super::diag::Diagnostic;
use super::lookup::Lookup;
use super::model::*;
use super::source::Location;
use ipnet::IpNet;
use lazaret_abi as abi;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Who opens the flow, seen from the device whose policy an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// The device opens the flow to the peer.
    DeviceInit,
    /// The peer opens the flow to the device.
    PeerInit,
}

impl Dir {
    pub fn abi(self) -> u8 {
        match self {
            Dir::DeviceInit => abi::DIR_DEVICE_INIT,
            Dir::PeerInit => abi::DIR_PEER_INIT,
        }
    }

    pub fn from_abi(dir: u8) -> Dir {
        if dir == abi::DIR_PEER_INIT {
            Dir::PeerInit
        } else {
            Dir::DeviceInit
        }
    }

    pub(crate) fn flip(self) -> Dir {
        match self {
            Dir::DeviceInit => Dir::PeerInit,
            Dir::PeerInit => Dir::DeviceInit,
        }
    }
}

/// Where a compiled rule comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// One of the site essentials: `dhcp`, `dns` or `ntp`.
    Essential { name: &'static str },
    /// An `allow` entry of `[site.quarantine]` (1-based).
    Quarantine { index: usize },
    /// Rule `index` (1-based) of a workflow.
    Workflow { workflow: String, index: usize },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Essential { name } => write!(f, "essential {name}"),
            Origin::Quarantine { index } => write!(f, "quarantine profile, allow entry {index}"),
            Origin::Workflow { workflow, index } => {
                write!(f, "workflow `{workflow}`, rule {index}")
            }
        }
    }
}

/// One compiled rule: its id is its index in [`Compiled::rules`] and the number the
/// datapath reports.
#[derive(Clone, Debug, Serialize)]
pub struct RuleInfo {
    pub id: u32,
    pub origin: Origin,
    pub location: Option<Location>,
    pub proto: Proto,
    /// `None`: all ports.
    pub ports: Option<Vec<PortRange>>,
    pub initiator: Initiator,
    pub peers: Vec<String>,
    /// The rule's workflow is in audit or learn mode (`RULE_F_AUDIT`).
    pub audit: bool,
    pub description: String,
}

/// One allow-list entry of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Entry {
    pub dir: Dir,
    pub peer: IpNet,
    pub proto: Proto,
    /// `None`: all ports (or a protocol without ports).
    pub ports: Option<PortRange>,
    pub rule: u32,
    pub audit: bool,
}

impl Entry {
    /// Whether this entry admits an initiating packet to/from `peer` with `proto` and the
    /// responder port `port`.
    pub fn matches(&self, dir: Dir, peer: IpAddr, proto: u8, port: u16) -> bool {
        self.dir == dir
            && self.peer.contains(&peer)
            && self.proto.matches(proto)
            && self.ports.is_none_or(|r| r.contains(port))
    }
}

/// A deduplicated allow-list; devices with identical allow-lists share one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CompiledPolicy {
    pub id: u32,
    /// Sorted.
    pub entries: Vec<Entry>,
}

/// A device as the datapath knows it.
#[derive(Clone, Debug, Serialize)]
pub struct CompiledDevice {
    pub id: String,
    /// [`lazaret_abi::device_id_hash`] of `id`: the datapath's id.
    pub hash: u64,
    pub class: Option<String>,
    /// Index into [`Compiled::classes`], `u32::MAX` for none.
    pub class_index: u32,
    pub mode: Mode,
    pub mac: Option<Mac>,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    pub vlan: Option<u16>,
    pub interface: Option<String>,
    /// The bridge port the device must be behind, if configured.
    pub port: Option<String>,
    pub life_critical: bool,
    pub policy: u32,
    pub restrict_policy: u32,
    pub quarantine: QuarantineSettings,
}

impl CompiledDevice {
    /// `d` with its (policy, restrict policy) ids; `classes` is [`Compiled::classes`].
    pub(crate) fn new(
        d: &Device,
        classes: &[String],
        (policy, restrict_policy): (u32, u32),
    ) -> Self {
        CompiledDevice {
            id: d.id.clone(),
            hash: abi::device_id_hash(d.id.as_bytes()),
            class: d.class.clone(),
            class_index: d
                .class
                .as_ref()
                .and_then(|c| classes.binary_search(c).ok())
                .map_or(u32::MAX, |i| i as u32),
            mode: d.mode,
            mac: d.mac,
            ipv4: d.ipv4.clone(),
            ipv6: d.ipv6.clone(),
            vlan: d.vlan,
            interface: d.interface.clone(),
            port: d.port.clone(),
            life_critical: d.inventory.life_critical,
            policy,
            restrict_policy,
            quarantine: d.quarantine,
        }
    }

    /// `DEV_F_*` flags.
    pub fn flags(&self) -> u8 {
        let mut f = 0;
        if self.mac.is_some() {
            f |= abi::DEV_F_HAS_MAC;
        }
        if self.life_critical {
            f |= abi::DEV_F_LIFE_CRITICAL;
        }
        if self.ipv4.is_empty() {
            f |= abi::DEV_F_NO_IP4;
        }
        if self.ipv6.is_empty() {
            f |= abi::DEV_F_NO_IP6;
        }
        f
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CompiledSite {
    pub name: String,
    pub unknown_audit: bool,
    pub l2_control: bool,
    pub neighbor: bool,
    /// Policy enforced on isolated devices.
    pub quarantine_policy: u32,
    pub event_rate: u32,
    pub event_burst: u32,
}

impl CompiledSite {
    /// `SITE_F_*` flags.
    pub fn flags(&self) -> u32 {
        let mut f = 0;
        if self.unknown_audit {
            f |= abi::SITE_F_UNKNOWN_AUDIT;
        }
        if self.l2_control {
            f |= abi::SITE_F_L2_CONTROL;
        }
        if self.neighbor {
            f |= abi::SITE_F_NEIGHBOR;
        }
        f
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CompiledInterface {
    pub name: String,
    pub side: Side,
}

/// Counts for `check`'s summary, with the datapath capacities they fill.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub devices: usize,
    pub classes: usize,
    pub workflows: usize,
    pub roles: usize,
    pub rules: usize,
    pub policies: usize,
    pub dev_mac: usize,
    pub dev_ip4: usize,
    pub dev_ip6: usize,
    pub peer4: usize,
    pub peer6: usize,
    pub peer_classes: usize,
    pub ports: usize,
}

/// The compiled policy: what the datapath enforces, traceable to its source.
#[derive(Clone, Debug, Serialize)]
pub struct Compiled {
    pub site: CompiledSite,
    pub interfaces: Vec<CompiledInterface>,
    /// Class names; a device's `class_index` points here.
    pub classes: Vec<String>,
    /// Sorted by id.
    pub devices: Vec<CompiledDevice>,
    /// Indexed by policy id. Shared (`Arc`) with the compiles patched from this one.
    pub policies: Arc<Vec<CompiledPolicy>>,
    /// Indexed by rule id.
    pub rules: Arc<Vec<RuleInfo>>,
    pub stats: Stats,
    /// The datapath lookup structure (peer classes and port blocks), slot-independent.
    #[serde(skip)]
    pub(crate) lookup: Arc<Lookup>,
    /// What a device-only edit needs to be patched in without recompiling (see
    /// [`super::incremental`]).
    #[serde(skip)]
    pub(crate) reuse: Arc<Reuse>,
    /// Warnings of validation and compilation.
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
}

impl Compiled {
    /// What one gateway of a fleet enforces: the devices behind the interfaces it serves,
    /// and those interfaces. Policies, rules and peers are shared: a device another gateway
    /// enforces stays in this one's peer sets (its addresses), but is not managed here.
    pub fn for_gateway(&self, gateway: &super::model::Gateway) -> Compiled {
        let serves =
            |i: &Option<String>| i.as_ref().is_some_and(|i| gateway.interfaces.contains(i));
        let devices: Vec<CompiledDevice> = self
            .devices
            .iter()
            .filter(|d| serves(&d.interface))
            .cloned()
            .collect();
        let stats = Stats {
            devices: devices.len(),
            dev_mac: devices.iter().filter(|d| d.mac.is_some()).count(),
            dev_ip4: devices.iter().map(|d| d.ipv4.len()).sum(),
            dev_ip6: devices.iter().map(|d| d.ipv6.len()).sum(),
            ..self.stats.clone()
        };
        // Its own claimable networks: another gateway's devices' are not its devices' (a
        // device here could otherwise take the address of a device enforced there). A
        // lookup of its own, then, with map contents of its own.
        let lookup = match self.lookup.claims_of_gateway.get(&gateway.name) {
            Some(g) => g
                .view
                .get_or_init(|| {
                    let (claim4, claim6) = g.claims.clone();
                    Arc::new(Lookup {
                        claim4,
                        claim6,
                        claims_of_gateway: Default::default(),
                        maps: Default::default(),
                        ..(*self.lookup).clone()
                    })
                })
                .clone(),
            None => self.lookup.clone(),
        };
        Compiled {
            interfaces: self
                .interfaces
                .iter()
                .filter(|i| gateway.interfaces.contains(&i.name))
                .cloned()
                .collect(),
            devices,
            stats,
            site: self.site.clone(),
            classes: self.classes.clone(),
            policies: self.policies.clone(),
            rules: self.rules.clone(),
            lookup,
            reuse: self.reuse.clone(),
            warnings: self.warnings.clone(),
        }
    }

    pub fn device(&self, id: &str) -> Option<&CompiledDevice> {
        self.devices
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.devices.get(i))
    }

    /// The policy's two lookup stages as prefixes and ranges, dataplane-neutral (shared by
    /// every compile patched from this one).
    pub fn ranges(&self) -> &Arc<super::lookup::Ranges> {
        &self.lookup.ranges
    }

    pub fn device_by_hash(&self, hash: u64) -> Option<&CompiledDevice> {
        self.devices.iter().find(|d| d.hash == hash)
    }

    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(id as usize)
    }

    pub fn policy(&self, id: u32) -> Option<&CompiledPolicy> {
        self.policies.get(id as usize)
    }
}
