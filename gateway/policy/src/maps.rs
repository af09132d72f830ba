//! The exact contents of the datapath's per-slot maps for one compiled policy, as ABI
//! types: what the daemon writes into a slot and what the reference classifier reads. Pure.

use super::compiled::Compiled;
use super::model::Side;
use lazaret_abi::*;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Why map contents cannot be produced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("device `{device}` is bound to interface `{interface}`, which has no ifindex")]
    UnknownInterface { device: String, interface: String },
    #[error("slot {0} is not 0 or 1")]
    BadSlot(u8),
}

/// Every entry of every per-slot map, sorted by key. `ifaces` is [`MAP_IFACE`], which is
/// not per slot: the site's interfaces that have an ifindex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapContents {
    pub slot: u8,
    pub site: SiteConfig,
    pub ifaces: Vec<(u32, IfaceConfig)>,
    pub dev_mac: Vec<(MacKey, Device)>,
    pub dev_ip4: Vec<(Ip4Key, Device)>,
    pub dev_ip6: Vec<(Ip6Key, Device)>,
    pub devices: Vec<(DevKey, Device)>,
    /// (LPM prefix length, key, value). The rule-derived lists are shared (`Arc`) by every
    /// generation of one compile written to the same slot: the loader skips a list that is
    /// the very one the slot holds.
    pub peer4: Arc<Vec<(u32, PeerKey4, PeerClass)>>,
    pub peer6: Arc<Vec<(u32, PeerKey6, PeerClass)>>,
    pub ports: Arc<Vec<(u32, PortKey, RuleRef)>>,
}

impl Compiled {
    /// The map contents for `slot` under `generation`, binding named interfaces to
    /// `ifindexes`. Deterministic: equal inputs give equal contents.
    pub fn map_contents(
        &self,
        slot: u8,
        generation: u64,
        ifindexes: &BTreeMap<String, u32>,
    ) -> Result<MapContents, MapError> {
        if slot > 1 {
            return Err(MapError::BadSlot(slot));
        }
        let mut m = MapContents {
            slot,
            site: SiteConfig {
                generation,
                flags: self.site.flags() | self.owner_flags(),
                quarantine_policy: self.site.quarantine_policy,
                event_rate: self.site.event_rate,
                event_burst: self.site.event_burst,
                // Not a policy setting (yet): the ABI's defaults, sized so one device cannot
                // cycle the established flow table (see lazaret_abi, *Flow tables*).
                promote_rate: PROMOTE_RATE_PER_S,
                promote_burst: PROMOTE_BURST,
            },
            ..MapContents::default()
        };
        for i in &self.interfaces {
            if let Some(ix) = ifindexes.get(&i.name) {
                let side = match i.side {
                    Side::Devices => SIDE_DEVICES,
                    Side::Upstream => SIDE_UPSTREAM,
                };
                let claim_scope = match i.side {
                    Side::Devices => claim_scope(i.name.as_bytes()),
                    Side::Upstream => IfaceConfig::new(side).claim_scope,
                };
                let cfg = IfaceConfig {
                    claim_scope,
                    ..IfaceConfig::new(side)
                };
                m.ifaces.push((*ix, cfg));
            }
        }
        for d in &self.devices {
            let ifindex = match &d.interface {
                None => IFINDEX_ANY,
                Some(name) => *ifindexes
                    .get(name)
                    .ok_or_else(|| MapError::UnknownInterface {
                        device: d.id.clone(),
                        interface: name.clone(),
                    })?,
            };
            let port_ifindex = match &d.port {
                None => IFINDEX_ANY,
                Some(name) => *ifindexes
                    .get(name)
                    .ok_or_else(|| MapError::UnknownInterface {
                        device: d.id.clone(),
                        interface: name.clone(),
                    })?,
            };
            // The identity maps hold the record itself (one lookup in the datapath).
            let r = Device {
                id: d.hash,
                policy: d.policy,
                restrict_policy: d.restrict_policy,
                ifindex,
                vlan: d.vlan.unwrap_or(VLAN_ANY),
                mode: d.mode.abi(),
                flags: d.flags(),
                mac: d.mac.map_or([0; 6], |m| m.0),
                cell: 0,
                class: d.class_index,
                port_ifindex,
            };
            if let Some(mac) = d.mac {
                m.dev_mac.push((
                    MacKey {
                        slot,
                        _pad: 0,
                        mac: mac.0,
                    },
                    r,
                ));
            }
            for a in &d.ipv4 {
                m.dev_ip4.push((
                    Ip4Key {
                        slot,
                        _pad: [0; 3],
                        addr: a.octets(),
                    },
                    r,
                ));
            }
            for a in &d.ipv6 {
                m.dev_ip6.push((
                    Ip6Key {
                        slot,
                        _pad: [0; 3],
                        addr: a.octets(),
                    },
                    r,
                ));
            }
            m.devices.push((
                DevKey {
                    slot,
                    _pad: [0; 7],
                    id: d.hash,
                },
                r,
            ));
        }
        let lists = self.lookup.maps.lists(&self.lookup, slot);
        m.peer4 = lists.peer4;
        m.peer6 = lists.peer6;
        m.ports = lists.ports;
        // Already in order (the slot leads every key, so changing it keeps the order);
        // only the device maps need sorting.
        m.sort_devices();
        Ok(m)
    }
}

impl Compiled {
    /// `SITE_F_NO_OWNERS4`/`6`: no device is known by its MAC alone in the family (so none
    /// may be found as the owner of an address by first use).
    fn owner_flags(&self) -> u32 {
        let mut f = SITE_F_NO_OWNERS4 | SITE_F_NO_OWNERS6;
        for d in self.devices.iter().filter(|d| d.mac.is_some()) {
            if d.ipv4.is_empty() {
                f &= !SITE_F_NO_OWNERS4;
            }
            if d.ipv6.is_empty() {
                f &= !SITE_F_NO_OWNERS6;
            }
        }
        f
    }
}

/// The rule-derived map entries (peers and ports) of a compile, per slot. They are most of
/// a big policy's entries and do not change when only devices do, so each slot's lists are
/// built once per compile (the second by copying the first with the slot changed) and
/// shared by every generation patched from it.
#[derive(Clone, Debug, Default)]
pub struct LookupMaps {
    slots: [OnceLock<Lists>; 2],
}

#[derive(Clone, Debug, Default)]
struct Lists {
    peer4: Arc<Vec<(u32, PeerKey4, PeerClass)>>,
    peer6: Arc<Vec<(u32, PeerKey6, PeerClass)>>,
    ports: Arc<Vec<(u32, PortKey, RuleRef)>>,
}

impl LookupMaps {
    fn lists(&self, lookup: &super::lookup::Lookup, slot: u8) -> Lists {
        let (this, other) = (usize::from(slot & 1), usize::from(!slot & 1));
        self.slots[this]
            .get_or_init(|| match self.slots[other].get() {
                // The slot leads every key: changing it keeps the order.
                Some(o) => Lists {
                    peer4: Arc::new(
                        o.peer4
                            .iter()
                            .map(|&(p, k, v)| (p, PeerKey4 { slot, ..k }, v))
                            .collect(),
                    ),
                    peer6: Arc::new(
                        o.peer6
                            .iter()
                            .map(|&(p, k, v)| (p, PeerKey6 { slot, ..k }, v))
                            .collect(),
                    ),
                    ports: Arc::new(
                        o.ports
                            .iter()
                            .map(|&(p, k, v)| (p, PortKey { slot, ..k }, v))
                            .collect(),
                    ),
                },
                None => Lists::build(lookup, slot),
            })
            .clone()
    }
}

impl Lists {
    fn build(lookup: &super::lookup::Lookup, slot: u8) -> Lists {
        let mut m = MapContents::default();
        let prefixes = port_prefixes(&lookup.ports);
        let class = |class: u32| PeerClass {
            class,
            port_prefixes: prefixes.get(&class).copied().unwrap_or(0),
        };
        let (mut peer4, mut peer6, mut ports) = (Vec::new(), Vec::new(), Vec::new());
        for e in &lookup.peer4 {
            peer4.push((
                PEER_KEY_FIXED_BITS + u32::from(e.net.prefix_len()),
                PeerKey4 {
                    slot,
                    dir: e.dir,
                    _pad: [0; 2],
                    policy: e.policy.to_be_bytes(),
                    addr: e.net.addr().octets(),
                },
                class(e.class),
            ));
        }
        for e in &lookup.peer6 {
            peer6.push((
                PEER_KEY_FIXED_BITS + u32::from(e.net.prefix_len()),
                PeerKey6 {
                    slot,
                    dir: e.dir,
                    _pad: [0; 2],
                    policy: e.policy.to_be_bytes(),
                    addr: e.net.addr().octets(),
                },
                class(e.class),
            ));
        }
        // Which addresses may be owned by first use: a pseudo-policy of the peer maps.
        peer4.extend(
            lookup
                .claim4
                .iter()
                .map(|&(scope, n, class)| claim_entry4(slot, scope, n, class)),
        );
        peer6.extend(
            lookup
                .claim6
                .iter()
                .map(|&(scope, n, class)| claim_entry6(slot, scope, n, class)),
        );
        for e in &lookup.ports {
            ports.push((
                e.prefix_len,
                PortKey {
                    slot,
                    _pad: [0; 3],
                    class: e.class.to_be_bytes(),
                    proto: e.proto,
                    port: e.port.to_be_bytes(),
                    _pad2: 0,
                },
                RuleRef {
                    rule: e.rule,
                    flags: e.flags,
                },
            ));
        }
        m.peer4 = Arc::new(peer4);
        m.peer6 = Arc::new(peer6);
        m.ports = Arc::new(ports);
        m.sort();
        Lists {
            peer4: m.peer4,
            peer6: m.peer6,
            ports: m.ports,
        }
    }
}

/// The peer-map entry saying whether devices may own the addresses of `net` by first use,
/// in claim scope `scope` (`DIR_CLAIM`, class `CLAIM_*`; see `lazaret_abi`, *Addresses owned
/// by first use*).
pub fn claim_entry4(
    slot: u8,
    scope: u32,
    net: ipnet::Ipv4Net,
    class: u32,
) -> (u32, PeerKey4, PeerClass) {
    (
        PEER_KEY_FIXED_BITS + u32::from(net.prefix_len()),
        PeerKey4 {
            slot,
            dir: DIR_CLAIM,
            _pad: [0; 2],
            policy: scope.to_be_bytes(),
            addr: net.network().octets(),
        },
        PeerClass {
            class,
            port_prefixes: 0,
        },
    )
}

/// [`claim_entry4`] for IPv6.
pub fn claim_entry6(
    slot: u8,
    scope: u32,
    net: ipnet::Ipv6Net,
    class: u32,
) -> (u32, PeerKey6, PeerClass) {
    (
        PEER_KEY_FIXED_BITS + u32::from(net.prefix_len()),
        PeerKey6 {
            slot,
            dir: DIR_CLAIM,
            _pad: [0; 2],
            policy: scope.to_be_bytes(),
            addr: net.network().octets(),
        },
        PeerClass {
            class,
            port_prefixes: 0,
        },
    )
}

impl MapContents {
    /// Puts every list in the order the type promises: by key, LPM entries by (key,
    /// prefix length). The loader's deltas walk two lists in this order side by side.
    pub fn sort(&mut self) {
        self.sort_devices();
        Arc::make_mut(&mut self.peer4).sort_by_key(|e| (e.1, e.0));
        Arc::make_mut(&mut self.peer6).sort_by_key(|e| (e.1, e.0));
        Arc::make_mut(&mut self.ports).sort_by_key(|e| (e.1, e.0));
    }

    /// Sorts the device maps by key (the order the loader and the readers expect).
    pub fn sort_devices(&mut self) {
        self.ifaces.sort_by_key(|e| e.0);
        self.dev_mac.sort_by_key(|e| e.0);
        self.dev_ip4.sort_by_key(|e| e.0);
        self.dev_ip6.sort_by_key(|e| e.0);
        self.devices.sort_by_key(|e| e.0);
    }

    /// Changes device `id`'s record everywhere it is kept: [`MAP_DEVICES`] and each
    /// identity map entry (which hold copies, so that the datapath identifies a device in
    /// one lookup; the copies must never differ).
    pub fn edit_device(&mut self, id: u64, mut edit: impl FnMut(&mut Device)) {
        let identity = self.dev_mac.iter_mut().map(|(_, d)| d);
        let identity = identity.chain(self.dev_ip4.iter_mut().map(|(_, d)| d));
        let identity = identity.chain(self.dev_ip6.iter_mut().map(|(_, d)| d));
        for d in identity.chain(self.devices.iter_mut().map(|(_, d)| d)) {
            if d.id == id {
                edit(d);
            }
        }
    }

    /// Entry counts per map, in the order of the fields.
    pub fn counts(&self) -> [(&'static str, usize); 8] {
        [
            (MAP_IFACE, self.ifaces.len()),
            (MAP_DEV_MAC, self.dev_mac.len()),
            (MAP_DEV_IP4, self.dev_ip4.len()),
            (MAP_DEV_IP6, self.dev_ip6.len()),
            (MAP_DEVICES, self.devices.len()),
            (MAP_PEER4, self.peer4.len()),
            (MAP_PEER6, self.peer6.len()),
            (MAP_PORTS, self.ports.len()),
        ]
    }
}

/// Per peer class, the `PORT_PREFIX_*` protocols for which it has port entries shorter than
/// one port: the datapath reads the port trie only for those (lazaret_abi, *Exact entries
/// in hashes*). A class missing here has single-port entries only.
fn port_prefixes(ports: &[super::lookup::PortEntry]) -> std::collections::HashMap<u32, u32> {
    let mut out = std::collections::HashMap::new();
    for e in ports.iter().filter(|e| e.prefix_len < PORT_KEY_FULL_BITS) {
        let bit = if e.prefix_len <= PORT_KEY_CLASS_BITS {
            PORT_PREFIX_ANY
        } else {
            port_prefix_bit(e.proto)
        };
        *out.entry(e.class).or_insert(0) |= bit;
    }
    out
}

/// Key bytes of LPM keys, in memory order (what the kernel's trie compares).
pub(crate) fn peer4_bytes(k: &PeerKey4) -> Vec<u8> {
    let mut v = vec![k.slot, k.dir, k._pad[0], k._pad[1]];
    v.extend_from_slice(&k.policy);
    v.extend_from_slice(&k.addr);
    v
}

pub(crate) fn peer6_bytes(k: &PeerKey6) -> Vec<u8> {
    let mut v = vec![k.slot, k.dir, k._pad[0], k._pad[1]];
    v.extend_from_slice(&k.policy);
    v.extend_from_slice(&k.addr);
    v
}

pub(crate) fn port_bytes(k: &PortKey) -> Vec<u8> {
    let mut v = vec![k.slot, k._pad[0], k._pad[1], k._pad[2]];
    v.extend_from_slice(&k.class);
    v.push(k.proto);
    v.extend_from_slice(&k.port);
    v.push(k._pad2);
    v
}
