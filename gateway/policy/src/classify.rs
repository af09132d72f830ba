//! The reference classifier: a plain-Rust twin of the XDP program's decision
//! (`gateway-ebpf/src/main.rs`: `judge`, `judge_arp`, `judge_ip`, `identify_source`,
//! `judge_ndp`, `judge_flow`, `judge_policy`, `judge_end`, `lookup_rule`).
//!
//! It reads only [`MapContents`], emulating the kernel's hash and LPM lookups in software,
//! so it checks the compiled *maps*, not the compiler's intermediate form. Keep every branch
//! in the order of the XDP program; differential tests hold the two together. Not modelled:
//! frame parsing (the packet arrives as a [`PacketDesc`]), fragments, and the flow table
//! itself (the caller says, with [`FlowHint`], whether a flow entry exists). The datapath's
//! own records of who owns a link-local address and which port a MAC is pinned to are read
//! from [`DeviceStates`]; what the XDP program would record while judging the frame is
//! returned in [`Decision::claims`] for the caller to keep. Pure.

use super::maps::{peer4_bytes, peer6_bytes, port_bytes, MapContents};
use lazaret_abi::*;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the flow table holds for a packet's 5-tuple (emulated by the caller); for an ICMP
/// error, for the 5-tuple of the packet it quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlowHint {
    /// No live flow entry.
    #[default]
    None,
    /// A live flow judged under the current generation and device epochs, admitted by `rule`.
    Current { rule: u32 },
    /// A live flow judged under an older generation or epoch: it is re-judged as its
    /// initiating packet (`initiator_is_src`: this packet's source, or for an ICMP error
    /// the quoted packet's source, opened the flow; `here` and `there`: the devices the flow
    /// names at this packet's source and destination ends, 0 for none).
    Stale {
        initiator_is_src: bool,
        here: u64,
        there: u64,
    },
}

/// An IP packet, as the parser would describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpDesc {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Ports for TCP and UDP; the echo identifier (both) for ICMP echo; else 0.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// NS/NA target.
    pub nd_target: Option<Ipv6Addr>,
    /// The packet an ICMP error quotes.
    pub quoted: Option<Quoted>,
}

/// The packet an ICMP error quotes: its addresses, protocol and ports (the echo identifier
/// for ICMP echo, as in a flow key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// `lazaret_abi::echo_kind` of the quoted packet.
    pub echo: u8,
}

impl IpDesc {
    /// A packet of `proto` from `src` to `dst` with every other field zero (hop limit 64).
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8) -> IpDesc {
        IpDesc {
            src,
            dst,
            proto,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp_type: 0,
            hop_limit: 64,
            nd_target: None,
            quoted: None,
        }
    }
}

/// What the frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    Arp {
        sha: [u8; 6],
        spa: Ipv4Addr,
        tpa: Ipv4Addr,
    },
    /// An IEEE 802.1 link-local control frame (LLDP, STP, LACP, 802.1X).
    Control,
    Ip(IpDesc),
}

/// A frame as the XDP program sees it after parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketDesc {
    /// `SIDE_*` of the ingress interface.
    pub side: u8,
    /// The interface devices bind to (the ingress interface, or its bridge).
    pub ifindex: u32,
    /// The ingress interface itself (a bridge port when `ifindex` is its bridge).
    pub port: u32,
    /// Whose `DIR_CLAIM` entries say what a device behind the ingress interface may own by
    /// first use (`IfaceConfig::claim_scope`; `CLAIM_POLICY`: the site's).
    pub claim_scope: u16,
    /// Innermost VLAN id, [`VLAN_UNTAGGED`] for untagged.
    pub vlan: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub kind: PacketKind,
    pub flow: FlowHint,
}

/// TCP flag bits (as in the datapath's parser).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

impl IpDesc {
    /// Whether this packet may open a flow (`Pkt::initiating`).
    pub fn initiating(&self) -> bool {
        match self.proto {
            PROTO_TCP => self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
            PROTO_UDP => true,
            PROTO_ICMP => self.icmp_type == 8,
            PROTO_ICMPV6 => self.icmp_type == 128,
            _ => true,
        }
    }

    pub fn has_ports(&self) -> bool {
        self.proto == PROTO_TCP || self.proto == PROTO_UDP
    }

    /// ICMP other than echo, which belongs to no flow (`Pkt::flowless`): an error is judged
    /// by the flow it quotes, anything else would find an echo flow of identifier 0.
    pub fn flowless(&self) -> bool {
        match self.proto {
            PROTO_ICMP => !matches!(self.icmp_type, 0 | 8),
            PROTO_ICMPV6 => !matches!(self.icmp_type, 128 | 129),
            _ => false,
        }
    }
}

/// Runtime state outside the policy slots: epochs and quarantine by device id
/// ([`MAP_DEV_STATE`]), the gateway's own addresses ([`MAP_LOCAL`]), the owners of
/// addresses owned by first use ([`MAP_LL_OWNER`], the ones that still name their owner: the
/// claim's and the destination's lifetimes, 10 minutes and a day, are not modelled) and the
/// bridge-port pins
/// ([`MAP_PORT_PIN`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceStates {
    pub states: HashMap<u64, DevState>,
    pub local: std::collections::BTreeSet<IpAddr>,
    pub owners: HashMap<IpAddr, [u8; 6]>,
    /// Addresses held tentatively by the first MAC to probe them ([`MAP_PROBED`]; the twin
    /// has no clock: a hold does not lapse here).
    pub probed: HashMap<IpAddr, [u8; 6]>,
    /// New addresses each device (by id) has owned by first use: its budget
    /// ([`MAP_DEV_CLAIM`]) is modelled without its refill, one token a minute.
    pub claimed: HashMap<u64, u32>,
    pub pins: HashMap<[u8; 6], u32>,
}

/// Something the XDP program records while judging a frame (see [`Decision::claims`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `mac` owns (or keeps owning) `addr` by first use ([`MAP_LL_OWNER`]), a `new`
    /// address spending a token of device `dev`'s budget ([`MAP_DEV_CLAIM`]).
    Address {
        addr: IpAddr,
        mac: [u8; 6],
        dev: u64,
        new: bool,
    },
    /// `mac` is pinned to the bridge port `ifindex` ([`MAP_PORT_PIN`]).
    Port { mac: [u8; 6], ifindex: u32 },
    /// `mac` holds `addr` tentatively, as the first to probe it ([`MAP_PROBED`]), a token
    /// of device `dev`'s budget spent.
    Probe {
        addr: IpAddr,
        mac: [u8; 6],
        dev: u64,
    },
}

impl DeviceStates {
    /// Records `claims` as the XDP program does.
    pub fn keep(&mut self, claims: &[Claim]) {
        for c in claims {
            match *c {
                Claim::Address {
                    addr,
                    mac,
                    dev,
                    new,
                } => {
                    self.owners.insert(addr, mac);
                    if new {
                        *self.claimed.entry(dev).or_default() += 1;
                    }
                }
                Claim::Port { mac, ifindex } => {
                    self.pins.entry(mac).or_insert(ifindex);
                }
                Claim::Probe { addr, mac, dev } => {
                    self.probed.insert(addr, mac);
                    *self.claimed.entry(dev).or_default() += 1;
                }
            }
        }
    }
}

impl DeviceStates {
    pub fn quarantine(&self, dev: u64) -> u8 {
        self.states
            .get(&dev)
            .map_or(QUARANTINE_NONE, |s| s.quarantine)
    }

    pub fn set_quarantine(&mut self, dev: u64, quarantine: u8) {
        self.states.entry(dev).or_default().quarantine = quarantine;
    }
}

/// How one managed end judged a packet (for `explain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndTrace {
    pub device: u64,
    /// `DIR_*` seen from the device.
    pub dir: u8,
    /// The policy consulted (by quarantine state).
    pub policy: u32,
    pub quarantine: u8,
    pub peer: IpAddr,
    /// The rule found, if any.
    pub rule: Option<RuleRef>,
}

/// The verdict on one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    pub reason: Reason,
    /// Device the frame was attributed to.
    pub device: Option<u64>,
    /// Rule that decided.
    pub rule: Option<u32>,
    /// `DIR_*` of the flow seen from `device`.
    pub dir: u8,
    /// The ends judged, in order (initiator's first).
    pub ends: Vec<EndTrace>,
    /// What the XDP program records while judging the frame, whatever the verdict.
    pub claims: Vec<Claim>,
}

impl Decision {
    pub fn new(reason: Reason) -> Decision {
        Decision {
            reason,
            device: None,
            rule: None,
            dir: DIR_DEVICE_INIT,
            ends: Vec::new(),
            claims: Vec::new(),
        }
    }

    pub fn dev(reason: Reason, dev: u64) -> Decision {
        let mut d = Decision::new(reason);
        d.device = (dev != 0).then_some(dev);
        d
    }

    pub fn passes(&self) -> bool {
        self.reason.passes()
    }
}

/// A software longest-prefix-match table over byte keys, as the kernel's LPM trie.
#[derive(Clone, Debug, Default)]
struct Lpm<V> {
    /// Prefix lengths present, longest first.
    lens: Vec<u32>,
    map: HashMap<(u32, Vec<u8>), V>,
}

fn mask(bytes: &[u8], bits: u32) -> Vec<u8> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let start = i as u32 * 8;
            if bits >= start + 8 {
                *b
            } else if bits <= start {
                0
            } else {
                b & (0xffu8 << (8 - (bits - start)))
            }
        })
        .collect()
}

impl<V: Copy> Lpm<V> {
    fn insert(&mut self, bits: u32, key: &[u8], v: V) {
        if !self.lens.contains(&bits) {
            self.lens.push(bits);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        self.map.insert((bits, mask(key, bits)), v);
    }

    fn get(&self, key: &[u8]) -> Option<V> {
        self.lens
            .iter()
            .find_map(|bits| self.map.get(&(*bits, mask(key, *bits))).copied())
    }
}

/// [`MapContents`] indexed for lookups. Build once, classify many packets.
#[derive(Clone, Debug)]
pub struct MapIndex {
    slot: u8,
    site: SiteConfig,
    mac: HashMap<MacKey, u64>,
    ip4: HashMap<Ip4Key, u64>,
    ip6: HashMap<Ip6Key, u64>,
    devices: HashMap<DevKey, Device>,
    peer4: Lpm<u32>,
    peer6: Lpm<u32>,
    ports: Lpm<RuleRef>,
}

impl MapIndex {
    pub fn new(m: &MapContents) -> MapIndex {
        let mut ix = MapIndex {
            slot: m.slot,
            site: m.site,
            mac: m.dev_mac.iter().map(|(k, v)| (*k, v.id)).collect(),
            ip4: m.dev_ip4.iter().map(|(k, v)| (*k, v.id)).collect(),
            ip6: m.dev_ip6.iter().map(|(k, v)| (*k, v.id)).collect(),
            devices: m.devices.iter().copied().collect(),
            peer4: Lpm::default(),
            peer6: Lpm::default(),
            ports: Lpm::default(),
        };
        for (bits, k, v) in m.peer4.iter() {
            ix.peer4.insert(*bits, &peer4_bytes(k), v.class);
        }
        for (bits, k, v) in m.peer6.iter() {
            ix.peer6.insert(*bits, &peer6_bytes(k), v.class);
        }
        for (bits, k, v) in m.ports.iter() {
            ix.ports.insert(*bits, &port_bytes(k), *v);
        }
        ix
    }

    pub fn site(&self) -> &SiteConfig {
        &self.site
    }

    pub fn device(&self, id: u64) -> Option<Device> {
        self.devices
            .get(&DevKey {
                slot: self.slot,
                _pad: [0; 7],
                id,
            })
            .copied()
    }

    pub fn lookup_mac(&self, mac: &[u8; 6]) -> Option<u64> {
        self.mac
            .get(&MacKey {
                slot: self.slot,
                _pad: 0,
                mac: *mac,
            })
            .copied()
    }

    /// The device bound to an address (`lookup_ip_device`).
    pub fn device_by_ip(&self, addr: IpAddr) -> Option<Device> {
        let id = match addr {
            IpAddr::V4(a) => self.ip4.get(&Ip4Key {
                slot: self.slot,
                _pad: [0; 3],
                addr: a.octets(),
            }),
            IpAddr::V6(a) => self.ip6.get(&Ip6Key {
                slot: self.slot,
                _pad: [0; 3],
                addr: a.octets(),
            }),
        }?;
        self.device(*id)
    }

    /// The device the destination address `addr` of `pkt` names (the datapath's `device_at`
    /// from upstream, `destination` from a device port): the one bound to it, else, from a
    /// device port, for a link-local address the one the frame is sent to (by its
    /// destination MAC), else the device known by its MAC alone in that family whose MAC
    /// owns it by first use (`owned_device`; not for link-local addresses; from a device
    /// port only in a network declared for the devices).
    pub fn device_at(
        &self,
        states: &DeviceStates,
        addr: IpAddr,
        pkt: &PacketDesc,
    ) -> Option<Device> {
        if let Some(d) = self.device_by_ip(addr) {
            return Some(d);
        }
        let side = pkt.side;
        if side == SIDE_DEVICES && link_local_unicast(addr) {
            return self.device(self.lookup_mac(&pkt.dst_mac)?);
        }
        if unspecified_or_link_local(addr) {
            return None;
        }
        let none = if addr.is_ipv4() {
            SITE_F_NO_OWNERS4
        } else {
            SITE_F_NO_OWNERS6
        };
        if self.site.flags & none != 0 {
            return None;
        }
        let mac = states.owners.get(&addr)?;
        let found = match self.peer_class(CLAIM_POLICY, DIR_CLAIM, addr) {
            Some(CLAIM_DEVICES) => true,
            Some(CLAIM_ANY) => side == SIDE_UPSTREAM,
            _ => false,
        };
        if !found {
            return None;
        }
        let d = self.device(self.lookup_mac(mac)?)?;
        let no_addr = if addr.is_ipv4() {
            DEV_F_NO_IP4
        } else {
            DEV_F_NO_IP6
        };
        (d.flags & no_addr != 0).then_some(d)
    }

    /// Whether a device behind an interface of claim scope `scope` may own `addr` by first
    /// use as far as the site's networks go (the datapath's `in_claim_networks`: the peer
    /// maps' `DIR_CLAIM` entries of the scope; of the site, `CLAIM_POLICY`, for a scope
    /// without entries).
    pub fn in_claim_networks(&self, scope: u16, addr: IpAddr) -> bool {
        let class = match self.peer_class(u32::from(scope), DIR_CLAIM, addr) {
            None if u32::from(scope) != CLAIM_POLICY => {
                self.peer_class(CLAIM_POLICY, DIR_CLAIM, addr)
            }
            found => found,
        };
        matches!(class, Some(CLAIM_DEVICES | CLAIM_ANY))
    }

    fn peer_class(&self, policy: u32, dir: u8, peer: IpAddr) -> Option<u32> {
        match peer {
            IpAddr::V4(a) => self.peer4.get(&peer4_bytes(&PeerKey4 {
                slot: self.slot,
                dir,
                _pad: [0; 2],
                policy: policy.to_be_bytes(),
                addr: a.octets(),
            })),
            IpAddr::V6(a) => self.peer6.get(&peer6_bytes(&PeerKey6 {
                slot: self.slot,
                dir,
                _pad: [0; 2],
                policy: policy.to_be_bytes(),
                addr: a.octets(),
            })),
        }
    }

    /// Peer class, then rule: the datapath's `lookup_rule`.
    pub fn lookup_rule(
        &self,
        policy: u32,
        dir: u8,
        peer: IpAddr,
        proto: u8,
        port: u16,
    ) -> Option<RuleRef> {
        let class = self.peer_class(policy, dir, peer)?;
        self.ports.get(&port_bytes(&PortKey {
            slot: self.slot,
            _pad: [0; 3],
            class: class.to_be_bytes(),
            proto,
            port: port.to_be_bytes(),
            _pad2: 0,
        }))
    }
}

/// Classifies a frame against map contents (builds an index; use [`classify_indexed`] for
/// many packets).
pub fn classify(maps: &MapContents, states: &DeviceStates, pkt: &PacketDesc) -> Decision {
    classify_indexed(&MapIndex::new(maps), states, pkt)
}

/// The datapath's whole decision for one frame.
pub fn classify_indexed(ix: &MapIndex, states: &DeviceStates, pkt: &PacketDesc) -> Decision {
    let mut claims = Vec::new();
    let mut d = match &pkt.kind {
        PacketKind::Arp { sha, spa, tpa } => {
            judge_arp(ix, states, pkt, sha, (*spa, *tpa), &mut claims)
        }
        PacketKind::Control => judge_control(ix, states, pkt, &mut claims),
        PacketKind::Ip(ip) => judge_ip(ix, states, pkt, ip, false, &mut claims),
    };
    d.claims = claims;
    d
}

/// The policy judgement of an initiating packet: identity, then the effective policy of
/// every managed end, as if no flow entry existed and the packet may open a flow.
pub fn judge_initiating(ix: &MapIndex, states: &DeviceStates, pkt: &PacketDesc) -> Decision {
    match &pkt.kind {
        PacketKind::Ip(ip) => {
            let mut claims = Vec::new();
            let mut d = judge_ip(ix, states, pkt, ip, true, &mut claims);
            d.claims = claims;
            d
        }
        _ => classify_indexed(ix, states, pkt),
    }
}

/// The datapath's `judge_control`: link-local control frames where the site allows them,
/// from a device port only as its device's (MAC, interface, port; not the VLAN), not while
/// it is isolated.
fn judge_control(
    ix: &MapIndex,
    states: &DeviceStates,
    pkt: &PacketDesc,
    claims: &mut Vec<Claim>,
) -> Decision {
    if ix.site.flags & SITE_F_L2_CONTROL == 0 {
        return Decision::new(Reason::DenyEthertype);
    }
    if pkt.side == SIDE_UPSTREAM {
        return Decision::new(Reason::AllowControl);
    }
    let Some(dev) = ix.lookup_mac(&pkt.src_mac).and_then(|id| ix.device(id)) else {
        return unknown_source(ix);
    };
    let if_ok = dev.ifindex == IFINDEX_ANY || dev.ifindex == pkt.ifindex;
    if !(if_ok && on_its_port(states, pkt, &dev, claims)) {
        Decision::dev(Reason::DenySpoof, dev.id)
    } else if states.quarantine(dev.id) == QUARANTINE_ISOLATE {
        Decision::dev(Reason::DenyQuarantine, dev.id)
    } else {
        Decision::dev(Reason::AllowControl, dev.id)
    }
}

fn judge_arp(
    ix: &MapIndex,
    states: &DeviceStates,
    pkt: &PacketDesc,
    sha: &[u8; 6],
    (spa, tpa): (Ipv4Addr, Ipv4Addr),
    claims: &mut Vec<Claim>,
) -> Decision {
    if pkt.side == SIDE_UPSTREAM {
        return Decision::new(Reason::PassUnmanaged);
    }
    if *sha != pkt.src_mac {
        let dev = ix.lookup_mac(&pkt.src_mac).unwrap_or(0);
        return Decision::dev(Reason::DenySpoof, dev);
    }
    // An address-conflict probe: its device by its MAC, before identity (as the datapath);
    // the hold of a free address once the frame is known to be its.
    let mut free = false;
    if spa.is_unspecified() {
        if let Some(dev) = ix.lookup_mac(&pkt.src_mac).and_then(|id| ix.device(id)) {
            match probe_of(ix, states, pkt, IpAddr::V4(tpa), &dev) {
                Probe::Refused => return Decision::dev(Reason::DenySpoof, dev.id),
                Probe::Free => free = true,
                Probe::Passes => {}
            }
        }
    }
    match identify_source(ix, states, pkt, IpAddr::V4(spa), claims) {
        Ok(dev) => {
            if free && !hold_probed(states, IpAddr::V4(tpa), pkt.src_mac, dev.id, claims) {
                return Decision::dev(Reason::DenySpoof, dev.id);
            }
            if ix.site.flags & SITE_F_NEIGHBOR != 0 {
                Decision::dev(Reason::AllowNeighbor, dev.id)
            } else {
                Decision::dev(Reason::DenyNoRule, dev.id)
            }
        }
        Err(d) => d,
    }
}

fn is_link_local6(a: &Ipv6Addr) -> bool {
    let o = a.octets();
    o[0] == 0xfe && o[1] & 0xc0 == 0x80
}

/// A link-local address: fe80::/10 or 169.254/16, its broadcast address included (the
/// datapath's `parse::is_link_local`).
pub fn link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.octets()[..2] == [169, 254],
        IpAddr::V6(a) => is_link_local6(&a),
    }
}

/// A unicast link-local address: fe80::/10, or 169.254/16 but its broadcast address (the
/// datapath's `is_link_local_unicast`): from a device port, named by the frame's MAC.
pub fn link_local_unicast(a: IpAddr) -> bool {
    link_local(a) && a != IpAddr::V4(Ipv4Addr::new(169, 254, 255, 255))
}

/// From upstream, an address of the devices' declared networks no device binds or owns,
/// where the site denies unknown devices and has devices known by their MAC alone in the
/// family: refused as an unknown device's (the datapath's `to_unowned`, which says why).
/// Not a link-local address, the gateway's own, or a DHCP server's answer to a client.
fn to_unowned(ix: &MapIndex, states: &DeviceStates, pkt: &PacketDesc, ip: &IpDesc) -> bool {
    let (no_owners, dhcp) = if ip.dst.is_ipv4() {
        (SITE_F_NO_OWNERS4, (67, 68))
    } else {
        (SITE_F_NO_OWNERS6, (547, 546))
    };
    pkt.side == SIDE_UPSTREAM
        && ix.site.flags & (SITE_F_UNKNOWN_AUDIT | no_owners) == 0
        && !(ip.proto == PROTO_UDP && (ip.sport, ip.dport) == dhcp)
        && !link_local(ip.dst)
        && !states.local.contains(&ip.dst)
        && ix.peer_class(CLAIM_POLICY, DIR_CLAIM, ip.dst) == Some(CLAIM_DEVICES)
}

/// 0.0.0.0, :: or fe80::/10 (`parse::is_unspecified_or_link_local`).
pub fn unspecified_or_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.octets() == [0; 4],
        IpAddr::V6(a) => is_link_local6(&a) || a.octets() == [0; 16],
    }
}

fn identify_source(
    ix: &MapIndex,
    states: &DeviceStates,
    pkt: &PacketDesc,
    src: IpAddr,
    claims: &mut Vec<Claim>,
) -> Result<Device, Decision> {
    let unspecified = unspecified_or_link_local(src);
    let by_ip = if unspecified {
        None
    } else {
        ix.device_by_ip(src)
    };
    if let Some(dev) = by_ip {
        let mac_ok = dev.flags & DEV_F_HAS_MAC == 0 || dev.mac == pkt.src_mac;
        let vlan_ok = dev.vlan == VLAN_ANY || dev.vlan == pkt.vlan;
        let if_ok = dev.ifindex == IFINDEX_ANY || dev.ifindex == pkt.ifindex;
        return if mac_ok && vlan_ok && if_ok && on_its_port(states, pkt, &dev, claims) {
            Ok(dev)
        } else {
            Err(Decision::dev(Reason::DenySpoof, dev.id))
        };
    }
    let by_mac = ix.lookup_mac(&pkt.src_mac).and_then(|id| ix.device(id));
    match by_mac {
        Some(dev) => {
            let vlan_ok = dev.vlan == VLAN_ANY || dev.vlan == pkt.vlan;
            let if_ok = dev.ifindex == IFINDEX_ANY || dev.ifindex == pkt.ifindex;
            let ip_ok = |claims: &mut Vec<Claim>| match src {
                IpAddr::V6(a) if is_link_local6(&a) => claim(ix, states, pkt, src, dev.id, claims),
                _ if unspecified => true,
                IpAddr::V4(_) => {
                    dev.flags & DEV_F_NO_IP4 != 0 && claim(ix, states, pkt, src, dev.id, claims)
                }
                IpAddr::V6(_) => {
                    dev.flags & DEV_F_NO_IP6 != 0 && claim(ix, states, pkt, src, dev.id, claims)
                }
            };
            // The port first: a frame refused for it claims nothing.
            if vlan_ok && if_ok && on_its_port(states, pkt, &dev, claims) && ip_ok(claims) {
                Ok(dev)
            } else {
                Err(Decision::dev(Reason::DenySpoof, dev.id))
            }
        }
        None => Err(unknown_source(ix)),
    }
}

/// The datapath's `unknown_source`: a source the inventory does not know, as the site says.
fn unknown_source(ix: &MapIndex) -> Decision {
    if ix.site.flags & SITE_F_UNKNOWN_AUDIT != 0 {
        Decision::new(Reason::UnknownAudit)
    } else {
        Decision::new(Reason::DenyUnknown)
    }
}

/// The datapath's `parse::is_claimable`: a host's unicast address, not IPv4-mapped.
fn claimable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !matches!(a.octets()[0], 0 | 127 | 224..),
        IpAddr::V6(a) => {
            !a.is_multicast()
                && !a.is_unspecified()
                && !a.is_loopback()
                && a.to_ipv4_mapped().is_none()
        }
    }
}

/// The datapath's `claim_address`: FCFS ownership of an address (RFC 6620) that is a
/// host's unicast address, not IPv4-mapped, not the gateway's and inside the devices'
/// networks; a new one within the device's budget.
fn claim(
    ix: &MapIndex,
    states: &DeviceStates,
    pkt: &PacketDesc,
    addr: IpAddr,
    dev: u64,
    claims: &mut Vec<Claim>,
) -> bool {
    let mac = pkt.src_mac;
    if !claimable(addr)
        || states.local.contains(&addr)
        || !ix.in_claim_networks(pkt.claim_scope, addr)
    {
        return false;
    }
    // Claimed earlier by this same frame (an NA from the address it advertises): the
    // datapath finds its own fresh entry then.
    let earlier = claims.iter().find_map(|c| match *c {
        Claim::Address { addr: a, mac, .. } if a == addr => Some(mac),
        _ => None,
    });
    let new = match earlier.or_else(|| states.owners.get(&addr).copied()) {
        Some(owner) if owner != mac => return false,
        Some(_) => false,
        // Not while another MAC holds it as the first to probe it (`held_by_another`).
        None if states.probed.get(&addr).is_some_and(|&m| m != mac) => return false,
        None => true,
    };
    // New addresses this frame claimed before count too (the datapath spent their tokens).
    let this_frame = claims
        .iter()
        .filter(|c| matches!(c, Claim::Address { dev: d, new: true, .. } if *d == dev))
        .count() as u32;
    if new && states.claimed.get(&dev).copied().unwrap_or(0) + this_frame >= CLAIM_BURST {
        return false;
    }
    claims.push(Claim::Address {
        addr,
        mac,
        dev,
        new,
    });
    true
}

/// The datapath's `on_its_port`: behind a bridge, the configured port, else the pinned one
/// (pinning the port now if there is none).
fn on_its_port(
    states: &DeviceStates,
    pkt: &PacketDesc,
    dev: &Device,
    claims: &mut Vec<Claim>,
) -> bool {
    if pkt.port == pkt.ifindex {
        return true;
    }
    if dev.port_ifindex != IFINDEX_ANY {
        return dev.port_ifindex == pkt.port;
    }
    if dev.flags & DEV_F_HAS_MAC == 0 {
        return true;
    }
    match states.pins.get(&dev.mac) {
        Some(port) => *port == pkt.port,
        None => {
            claims.push(Claim::Port {
                mac: dev.mac,
                ifindex: pkt.port,
            });
            true
        }
    }
}

fn dev_id(src: &Option<Device>, dst: &Option<Device>) -> u64 {
    match (src, dst) {
        (Some(d), _) => d.id,
        (None, Some(d)) => d.id,
        (None, None) => 0,
    }
}

/// ICMPv6 types of neighbor discovery and MLD (`parse::is_neighbor_icmpv6`).
fn is_neighbor_icmpv6(t: u8) -> bool {
    matches!(t, 131 | 132 | 133 | 135 | 136 | 143)
}

fn judge_ip(
    ix: &MapIndex,
    states: &DeviceStates,
    pkt: &PacketDesc,
    ip: &IpDesc,
    assume_initiating: bool,
    claims: &mut Vec<Claim>,
) -> Decision {
    let v4 = matches!(ip.src, IpAddr::V4(_));
    if v4 != matches!(ip.dst, IpAddr::V4(_)) {
        // The parser never produces mixed families.
        return Decision::new(Reason::DenyMalformed);
    }
    if pkt.side == SIDE_DEVICES {
        // A DHCP server's message: from the server's port, or to the client's (which a
        // client reads whatever the source port).
        let (server, client) = if v4 { (67, 68) } else { (547, 546) };
        if ip.proto == PROTO_UDP && (ip.sport == server || ip.dport == client) {
            let dev = ix.lookup_mac(&pkt.src_mac).unwrap_or(0);
            return Decision::dev(Reason::DenyRogueDhcp, dev);
        }
        if ip.proto == PROTO_ICMPV6 && (ip.icmp_type == 134 || ip.icmp_type == 137) {
            let dev = ix.lookup_mac(&pkt.src_mac).unwrap_or(0);
            return Decision::dev(Reason::DenyRogueRa, dev);
        }
    }
    let src_dev = if pkt.side == SIDE_DEVICES {
        match identify_source(ix, states, pkt, ip.src, claims) {
            Ok(d) => Some(d),
            Err(d) => return d,
        }
    } else {
        // Devices are never upstream (bound addresses; not owned ones, see `device_at`).
        if let Some(d) = ix.device_by_ip(ip.src) {
            return Decision::dev(Reason::DenySpoof, d.id);
        }
        None
    };
    let dst_dev = ix.device_at(states, ip.dst, pkt);
    if src_dev.is_none() && dst_dev.is_none() {
        if to_unowned(ix, states, pkt, ip) {
            return Decision::new(Reason::DenyUnknown);
        }
        return Decision::new(Reason::PassUnmanaged);
    }
    if ip.proto == PROTO_ICMPV6 && is_neighbor_icmpv6(ip.icmp_type) {
        if let Some(dev) = src_dev {
            if pkt.side == SIDE_DEVICES {
                return judge_ndp(ix, states, pkt, ip, dev, claims);
            }
        }
    }
    if assume_initiating {
        let port = if ip.has_ports() { ip.dport } else { 0 };
        return judge_policy(
            ix, states, ip.proto, &src_dev, &dst_dev, ip.src, ip.dst, port,
        );
    }
    if let Some(q) = &ip.quoted {
        return judge_related(ix, states, pkt, ip, q, &src_dev, &dst_dev);
    }
    if ip.flowless() {
        return Decision::dev(Reason::DenyNoFlow, dev_id(&src_dev, &dst_dev));
    }
    match pkt.flow {
        FlowHint::Current { rule } => {
            let mut d = Decision::dev(Reason::AllowFlow, dev_id(&src_dev, &dst_dev));
            d.rule = (rule != NO_RULE).then_some(rule);
            d
        }
        FlowHint::Stale {
            initiator_is_src,
            here,
            there,
        } => {
            // The datapath's `destination` for a flow judged again: the device a flow names
            // at a link-local end is never renamed; sent to another device's MAC than that
            // one's, its packet reaches no device (an address the inventory binds aside).
            let by_mac = pkt.side == SIDE_DEVICES
                && link_local_unicast(ip.dst)
                && ix.device_by_ip(ip.dst).is_none();
            let dst_dev = dst_dev.filter(|d| !by_mac || there == 0 || d.id == there);
            let (init_dev, resp_dev, init, resp, port) = if initiator_is_src {
                (&src_dev, &dst_dev, ip.src, ip.dst, ip.dport)
            } else {
                (&dst_dev, &src_dev, ip.dst, ip.src, ip.sport)
            };
            // The datapath's: a packet of a flow judged again goes on to a link-local
            // address at a MAC of no device no more than a new flow opens there, from its
            // initiator, or where the flow names a device at that end (asked before the
            // policy).
            // From no device at an end the flow names one at (upstream, from an address a
            // device owns): a spoof, refused so too.
            let unnamed = here != 0 && src_dev.is_none();
            if unnamed || ((initiator_is_src || there != 0) && to_nobody(states, pkt, ip, &dst_dev))
            {
                return Decision::dev(Reason::DenyNoRule, dev_id(&src_dev, &dst_dev));
            }
            let v = judge_policy(ix, states, ip.proto, init_dev, resp_dev, init, resp, port);
            if v.passes() {
                let mut out = Decision::dev(Reason::AllowFlow, v.device.unwrap_or(0));
                out.rule = v.rule;
                out.ends = v.ends;
                out
            } else {
                v
            }
        }
        FlowHint::None => {
            if !ip.initiating() {
                return Decision::dev(Reason::DenyNoFlow, dev_id(&src_dev, &dst_dev));
            }
            let port = if ip.has_ports() { ip.dport } else { 0 };
            let v = judge_policy(
                ix, states, ip.proto, &src_dev, &dst_dev, ip.src, ip.dst, port,
            );
            // The datapath's, once the initiator's policy did not refuse: no flow opens from
            // a device port to a link-local address the frame's MAC names no device for,
            // unless the gateway's own.
            if v.passes() && to_nobody(states, pkt, ip, &dst_dev) {
                return Decision::dev(Reason::DenyNoRule, dev_id(&src_dev, &dst_dev));
            }
            v
        }
    }
}

/// From a device port, to a link-local address the frame's MAC names no device for, and not
/// the gateway's own (the datapath's `to_nobody`): no flow opens there, nor do its
/// initiator's packets go on there.
fn to_nobody(
    states: &DeviceStates,
    pkt: &PacketDesc,
    ip: &IpDesc,
    dst_dev: &Option<Device>,
) -> bool {
    pkt.side == SIDE_DEVICES
        && link_local_unicast(ip.dst)
        && dst_dev.is_none()
        && !states.local.contains(&ip.dst)
}

/// The datapath's `judge_ndp`: link-scope only, and an NA advertises only the device's own
/// address (its bound one, or a link-local one it owns).
fn judge_ndp(
    ix: &MapIndex,
    states: &DeviceStates,
    pkt: &PacketDesc,
    ip: &IpDesc,
    dev: Device,
    claims: &mut Vec<Claim>,
) -> Decision {
    if ix.site.flags & SITE_F_NEIGHBOR == 0 {
        return Decision::dev(Reason::DenyNoRule, dev.id);
    }
    let link_scope = match ip.icmp_type {
        133 | 135 | 136 => ip.hop_limit == 255 && on_link(ix, states, pkt, ip.dst),
        _ => ip.hop_limit == 1 && matches!(ip.dst, IpAddr::V6(a) if a.octets()[0] == 0xff),
    };
    if !link_scope {
        return Decision::dev(Reason::DenyNdScope, dev.id);
    }
    if ip.icmp_type == 135 && ip.src == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        let target = ip.nd_target.unwrap_or(Ipv6Addr::UNSPECIFIED);
        let refused = match probe_of(ix, states, pkt, IpAddr::V6(target), &dev) {
            Probe::Refused => true,
            Probe::Free => !hold_probed(states, IpAddr::V6(target), pkt.src_mac, dev.id, claims),
            Probe::Passes => false,
        };
        if refused {
            return Decision::dev(Reason::DenySpoof, dev.id);
        }
    }
    if ip.icmp_type == 136 {
        let target = ip.nd_target.unwrap_or(Ipv6Addr::UNSPECIFIED);
        let own = match ix.device_by_ip(IpAddr::V6(target)) {
            Some(owner) => owner.id == dev.id,
            None => {
                (is_link_local6(&target) || dev.flags & DEV_F_NO_IP6 != 0)
                    && claim(ix, states, pkt, IpAddr::V6(target), dev.id, claims)
            }
        };
        if !own {
            return Decision::dev(Reason::DenySpoof, dev.id);
        }
    }
    Decision::dev(Reason::AllowNeighbor, dev.id)
}

/// What an address-conflict probe asks about (the datapath's `PROBE_*`).
enum Probe {
    Passes,
    Refused,
    Free,
}

/// The datapath's `probe_of`: a probe from the frame's MAC (of device `dev`) about the
/// gateway's address, another device's, one another MAC owns or holds as the first to
/// probe it, is refused; one about an address no one holds that it may take is free.
fn probe_of(
    ix: &MapIndex,
    states: &DeviceStates,
    pkt: &PacketDesc,
    target: IpAddr,
    dev: &Device,
) -> Probe {
    let mine = |m: [u8; 6]| {
        if m == pkt.src_mac {
            Probe::Passes
        } else {
            Probe::Refused
        }
    };
    if states.local.contains(&target) {
        return Probe::Refused;
    }
    if let Some(owner) = ix.device_by_ip(target) {
        return if owner.id == dev.id {
            Probe::Passes
        } else {
            Probe::Refused
        };
    }
    if let Some(&owner) = states.owners.get(&target) {
        return mine(owner);
    }
    if let Some(&holder) = states.probed.get(&target) {
        return mine(holder);
    }
    let may_take = match target {
        IpAddr::V6(a) => is_link_local6(&a) || dev.flags & DEV_F_NO_IP6 != 0,
        IpAddr::V4(_) => dev.flags & DEV_F_NO_IP4 != 0,
    };
    if may_take && claimable(target) && ix.in_claim_networks(pkt.claim_scope, target) {
        Probe::Free
    } else {
        Probe::Passes
    }
}

/// The datapath's `hold_probed`: `mac` holds `target` within device `dev`'s budget of new
/// addresses.
fn hold_probed(
    states: &DeviceStates,
    target: IpAddr,
    mac: [u8; 6],
    dev: u64,
    claims: &mut Vec<Claim>,
) -> bool {
    if states.claimed.get(&dev).copied().unwrap_or(0) >= CLAIM_BURST {
        return false;
    }
    claims.push(Claim::Probe {
        addr: target,
        mac,
        dev,
    });
    true
}

/// The datapath's `on_link`: a link-scope multicast group, a link-local address, the
/// gateway, or a device behind the same interface and VLAN.
fn on_link(ix: &MapIndex, states: &DeviceStates, pkt: &PacketDesc, dst: IpAddr) -> bool {
    let IpAddr::V6(a) = dst else {
        return false;
    };
    let o = a.octets();
    if (o[0] == 0xff && o[1] & 0x0f == 2) || is_link_local6(&a) || states.local.contains(&dst) {
        return true;
    }
    ix.device_by_ip(dst).is_some_and(|d| {
        (d.ifindex == IFINDEX_ANY || d.ifindex == pkt.ifindex)
            && (d.vlan == VLAN_ANY || d.vlan == pkt.vlan)
    })
}

/// The datapath's `judge_related`: an ICMP error travels back along the flow it quotes
/// (`pkt.flow` is that flow's hint).
fn judge_related(
    ix: &MapIndex,
    states: &DeviceStates,
    pkt: &PacketDesc,
    ip: &IpDesc,
    q: &Quoted,
    src_dev: &Option<Device>,
    dst_dev: &Option<Device>,
) -> Decision {
    let dev = dev_id(src_dev, dst_dev);
    let to_sender = ip.dst == q.src;
    let from_receiver = pkt.side == SIDE_UPSTREAM || ip.src == q.dst;
    if !to_sender || !from_receiver {
        return Decision::dev(Reason::DenyIcmpError, dev);
    }
    match pkt.flow {
        FlowHint::None => Decision::dev(Reason::DenyNoFlow, dev),
        FlowHint::Current { rule } => {
            let mut d = Decision::dev(Reason::AllowFlow, dev);
            d.rule = (rule != NO_RULE).then_some(rule);
            d
        }
        FlowHint::Stale {
            initiator_is_src, ..
        } => {
            let inner_src_dev = *dst_dev;
            let inner_dst_dev = if pkt.side == SIDE_DEVICES {
                *src_dev
            } else {
                ix.device_by_ip(q.dst)
            };
            let v = if initiator_is_src {
                judge_policy(
                    ix,
                    states,
                    q.proto,
                    &inner_src_dev,
                    &inner_dst_dev,
                    q.src,
                    q.dst,
                    q.dport,
                )
            } else {
                judge_policy(
                    ix,
                    states,
                    q.proto,
                    &inner_dst_dev,
                    &inner_src_dev,
                    q.dst,
                    q.src,
                    q.sport,
                )
            };
            if !v.passes() {
                return v;
            }
            let mut out = Decision::dev(Reason::AllowFlow, v.device.unwrap_or(0));
            out.rule = v.rule;
            out.ends = v.ends;
            out
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the datapath function's signature"
)]
fn judge_policy(
    ix: &MapIndex,
    states: &DeviceStates,
    proto: u8,
    init_dev: &Option<Device>,
    resp_dev: &Option<Device>,
    init_addr: IpAddr,
    resp_addr: IpAddr,
    port: u16,
) -> Decision {
    let mut rule = NO_RULE;
    let mut dev = 0u64;
    let mut dir = DIR_DEVICE_INIT;
    let mut audit = false;
    let mut ends = Vec::new();
    // A refusal the initiator's mode only reports (audit, learn) is the verdict unless the
    // responder refuses outright: the initiator's mode softens its own end only (bypass
    // class).
    let mut softened = None;
    if let Some(d) = init_dev {
        match judge_end(
            ix,
            states,
            proto,
            d,
            DIR_DEVICE_INIT,
            resp_addr,
            port,
            &mut ends,
        ) {
            Ok(r) => {
                rule = r.rule;
                dev = d.id;
                audit |= r.flags & RULE_F_AUDIT != 0;
            }
            Err(v) if v.reason.passes() => softened = Some(v),
            Err(mut v) => {
                v.ends = ends;
                return v;
            }
        }
    }
    if let Some(d) = resp_dev {
        match judge_end(
            ix,
            states,
            proto,
            d,
            DIR_PEER_INIT,
            init_addr,
            port,
            &mut ends,
        ) {
            Ok(r) => {
                if dev == 0 {
                    rule = r.rule;
                    dev = d.id;
                    dir = DIR_PEER_INIT;
                }
                audit |= r.flags & RULE_F_AUDIT != 0;
            }
            // The responder's mode softens its refusal too: the initiator's is reported.
            Err(v) if softened.is_some() && v.reason.passes() => {}
            Err(mut v) => {
                v.ends = ends;
                return v;
            }
        }
    }
    if let Some(mut v) = softened {
        v.ends = ends;
        return v;
    }
    let mut v = Decision::dev(
        if audit {
            Reason::Audit
        } else {
            Reason::AllowRule
        },
        dev,
    );
    v.rule = (rule != NO_RULE).then_some(rule);
    v.dir = dir;
    v.ends = ends;
    v
}

#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the datapath function's signature"
)]
fn judge_end(
    ix: &MapIndex,
    states: &DeviceStates,
    proto: u8,
    dev: &Device,
    dir: u8,
    peer: IpAddr,
    port: u16,
    trace: &mut Vec<EndTrace>,
) -> Result<RuleRef, Decision> {
    let quarantine = states.quarantine(dev.id);
    let policy = match quarantine {
        QUARANTINE_NONE => dev.policy,
        QUARANTINE_RESTRICT => dev.restrict_policy,
        _ => ix.site.quarantine_policy,
    };
    let found = ix.lookup_rule(policy, dir, peer, proto, port);
    trace.push(EndTrace {
        device: dev.id,
        dir,
        policy,
        quarantine,
        peer,
        rule: found,
    });
    if let Some(r) = found {
        return Ok(r);
    }
    let reason = if quarantine != QUARANTINE_NONE {
        Reason::DenyQuarantine
    } else {
        match dev.mode {
            MODE_AUDIT => Reason::Audit,
            MODE_LEARN => Reason::Learn,
            _ => Reason::DenyNoRule,
        }
    };
    let mut v = Decision::dev(reason, dev.id);
    v.dir = dir;
    Err(v)
}

impl super::compiled::Compiled {
    /// Convenience: classify one frame against this policy's maps in slot 0 (generation 1)
    /// with the given interface indexes. Builds the maps and their index on every call; for
    /// many packets use [`super::compiled::Compiled::map_contents`] and [`MapIndex`].
    pub fn classify(
        &self,
        ifindexes: &std::collections::BTreeMap<String, u32>,
        states: &DeviceStates,
        pkt: &PacketDesc,
    ) -> Result<Decision, super::maps::MapError> {
        let maps = self.map_contents(0, 1, ifindexes)?;
        Ok(classify(&maps, states, pkt))
    }
}
