//! A naive evaluator written directly over the parsed [`Policy`]: no compilation, no
//! lookup structure, every rule tried in turn. Slow and obviously correct; property tests
//! check the compiler and the reference classifier against it. Pure.

use super::classify::{IpDesc, PacketDesc, PacketKind};
use super::compiled::{Dir, Origin};
use super::model::*;
use lazaret_abi::{self as abi, Reason};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The naive verdict: reason, the device it was attributed to, and the deciding rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NaiveDecision {
    pub reason: Reason,
    pub device: Option<String>,
    pub origin: Option<Origin>,
}

impl NaiveDecision {
    fn new(reason: Reason, device: Option<&Device>) -> Self {
        NaiveDecision {
            reason,
            device: device.map(|d| d.id.clone()),
            origin: None,
        }
    }
}

/// Runtime context the policy does not hold: interface indexes and quarantine states.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub ifindexes: BTreeMap<String, u32>,
    /// Device id → `QUARANTINE_*`.
    pub quarantine: BTreeMap<String, u8>,
    /// The gateway's own addresses.
    pub local: std::collections::BTreeSet<IpAddr>,
}

/// A rule that matched, with its rank (lower wins).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    audit: bool,
    order: (u8, String, usize),
    origin: Origin,
}

struct Eval<'p> {
    p: &'p Policy,
    cx: &'p Context,
}

/// Evaluates an initiating or other packet with no flow state (the [`PacketDesc::flow`]
/// hint must be `None`; flows are the stateful layer's business).
pub fn evaluate(policy: &Policy, cx: &Context, pkt: &PacketDesc) -> NaiveDecision {
    let e = Eval { p: policy, cx };
    match &pkt.kind {
        PacketKind::Control => e.control(pkt),
        PacketKind::Arp { sha, spa, tpa } => e.arp(pkt, sha, (*spa, *tpa)),
        PacketKind::Ip(ip) => e.ip(pkt, ip),
    }
}

impl<'p> Eval<'p> {
    fn by_ip(&self, a: IpAddr) -> Option<&'p Device> {
        self.p.devices.iter().find(|d| d.has_address(a))
    }

    fn by_mac(&self, mac: &[u8; 6]) -> Option<&'p Device> {
        self.p
            .devices
            .iter()
            .find(|d| d.mac.is_some_and(|m| m.0 == *mac))
    }

    /// The policy's interface a packet arrived behind (the one of its binding ifindex).
    fn arrival(&self, pkt: &PacketDesc) -> Option<&str> {
        self.cx
            .ifindexes
            .iter()
            .find(|(_, ix)| **ix == pkt.ifindex)
            .map(|(n, _)| n.as_str())
    }

    fn bound_here(&self, d: &Device, pkt: &PacketDesc) -> bool {
        d.vlan.is_none_or(|v| v == pkt.vlan) && self.on_its_interface(d, pkt)
    }

    fn on_its_interface(&self, d: &Device, pkt: &PacketDesc) -> bool {
        d.interface
            .as_ref()
            .is_none_or(|i| self.cx.ifindexes.get(i) == Some(&pkt.ifindex))
    }

    fn identify(&self, pkt: &PacketDesc, src: IpAddr) -> Result<&'p Device, NaiveDecision> {
        let unspecified = match src {
            IpAddr::V4(a) => a.is_unspecified(),
            IpAddr::V6(a) => a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80,
        };
        if !unspecified {
            if let Some(d) = self.by_ip(src) {
                let mac_ok = d.mac.is_none_or(|m| m.0 == pkt.src_mac);
                return if mac_ok && self.bound_here(d, pkt) {
                    Ok(d)
                } else {
                    Err(NaiveDecision::new(Reason::DenySpoof, Some(d)))
                };
            }
        }
        match self.by_mac(&pkt.src_mac) {
            Some(d) => {
                let no_addr_of_family = match src {
                    IpAddr::V4(_) => d.ipv4.is_empty(),
                    IpAddr::V6(_) => d.ipv6.is_empty(),
                };
                // Its own by first use (nobody else owns one here: ownership is the
                // datapath's runtime record) if unicast and not IPv4-mapped.
                let local = !unspecified && self.cx.local.contains(&src);
                // A link-local one too, as far as the site's networks go.
                let link_local =
                    matches!(src, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80);
                let own = if link_local {
                    in_claim_networks(self.p, self.arrival(pkt), src)
                } else {
                    unspecified
                        || (no_addr_of_family
                            && claimable(src)
                            && in_claim_networks(self.p, self.arrival(pkt), src))
                };
                if own && !local && self.bound_here(d, pkt) {
                    Ok(d)
                } else {
                    Err(NaiveDecision::new(Reason::DenySpoof, Some(d)))
                }
            }
            None if self.p.site.unknown_audit => {
                Err(NaiveDecision::new(Reason::UnknownAudit, None))
            }
            None => Err(NaiveDecision::new(Reason::DenyUnknown, None)),
        }
    }

    /// From upstream, to an address of a network a devices-side interface declares that no
    /// device has (nobody owns one here: ownership is the datapath's runtime record), where
    /// unknown devices are denied and some device is known by its MAC alone in the family:
    /// an unknown device's. Not a link-local address, the gateway's own, or a DHCP
    /// server's answer to a client.
    fn to_unowned(&self, pkt: &PacketDesc, ip: &IpDesc) -> bool {
        let v4 = ip.dst.is_ipv4();
        let mac_only = self.p.devices.iter().any(|d| {
            d.mac.is_some()
                && if v4 {
                    d.ipv4.is_empty()
                } else {
                    d.ipv6.is_empty()
                }
        });
        let dhcp = if v4 { (67, 68) } else { (547, 546) };
        let link_local = crate::classify::link_local(ip.dst);
        if pkt.side != abi::SIDE_UPSTREAM || self.p.site.unknown_audit || link_local {
            return false;
        }
        let dhcp_answer = ip.proto == abi::PROTO_UDP && (ip.sport, ip.dport) == dhcp;
        mac_only
            && !dhcp_answer
            && !self.cx.local.contains(&ip.dst)
            && claim_winner(self.p, None, ip.dst).is_some_and(|((_, rank), _)| rank == 2)
    }

    /// Link-local control frames where the site allows them: from a device port only as
    /// its device's, not while it is isolated.
    fn control(&self, pkt: &PacketDesc) -> NaiveDecision {
        if !self.p.site.l2_control {
            return NaiveDecision::new(Reason::DenyEthertype, None);
        }
        if pkt.side == abi::SIDE_UPSTREAM {
            return NaiveDecision::new(Reason::AllowControl, None);
        }
        // Its MAC on its interface; not its VLAN (these frames are sent untagged).
        match self.by_mac(&pkt.src_mac) {
            Some(d) if !self.on_its_interface(d, pkt) => {
                NaiveDecision::new(Reason::DenySpoof, Some(d))
            }
            Some(d) if self.cx.quarantine.get(&d.id) == Some(&abi::QUARANTINE_ISOLATE) => {
                NaiveDecision::new(Reason::DenyQuarantine, Some(d))
            }
            Some(d) => NaiveDecision::new(Reason::AllowControl, Some(d)),
            None if self.p.site.unknown_audit => NaiveDecision::new(Reason::UnknownAudit, None),
            None => NaiveDecision::new(Reason::DenyUnknown, None),
        }
    }

    /// An address-conflict probe (ARP from 0.0.0.0, an NS from `::`) by device `d` about
    /// the gateway's address or another device's (nobody owns or holds one here: ownership
    /// and the first prober's hold are the datapath's runtime record).
    fn probes_anothers(&self, target: IpAddr, d: &Device) -> bool {
        self.cx.local.contains(&target) || self.by_ip(target).is_some_and(|o| o.id != d.id)
    }

    fn arp(
        &self,
        pkt: &PacketDesc,
        sha: &[u8; 6],
        (spa, tpa): (Ipv4Addr, Ipv4Addr),
    ) -> NaiveDecision {
        if pkt.side == abi::SIDE_UPSTREAM {
            return NaiveDecision::new(Reason::PassUnmanaged, None);
        }
        if *sha != pkt.src_mac {
            return NaiveDecision::new(Reason::DenySpoof, self.by_mac(&pkt.src_mac));
        }
        // An address-conflict probe about an address not for its device to take.
        if let Some(d) = self.by_mac(&pkt.src_mac).filter(|_| spa.is_unspecified()) {
            if self.probes_anothers(IpAddr::V4(tpa), d) {
                return NaiveDecision::new(Reason::DenySpoof, Some(d));
            }
        }
        match self.identify(pkt, IpAddr::V4(spa)) {
            Ok(d) if self.p.site.essentials.neighbor => {
                NaiveDecision::new(Reason::AllowNeighbor, Some(d))
            }
            Ok(d) => NaiveDecision::new(Reason::DenyNoRule, Some(d)),
            Err(n) => n,
        }
    }

    fn ip(&self, pkt: &PacketDesc, ip: &IpDesc) -> NaiveDecision {
        let v4 = ip.src.is_ipv4();
        if v4 != ip.dst.is_ipv4() {
            return NaiveDecision::new(Reason::DenyMalformed, None);
        }
        if pkt.side == abi::SIDE_DEVICES {
            let (server, client) = if v4 { (67, 68) } else { (547, 546) };
            if ip.proto == abi::PROTO_UDP && (ip.sport == server || ip.dport == client) {
                return NaiveDecision::new(Reason::DenyRogueDhcp, self.by_mac(&pkt.src_mac));
            }
            if ip.proto == abi::PROTO_ICMPV6 && matches!(ip.icmp_type, 134 | 137) {
                return NaiveDecision::new(Reason::DenyRogueRa, self.by_mac(&pkt.src_mac));
            }
        }
        let src = if pkt.side == abi::SIDE_DEVICES {
            match self.identify(pkt, ip.src) {
                Ok(d) => Some(d),
                Err(n) => return n,
            }
        } else {
            // A device's address arriving from upstream is forged: devices are never there.
            if let Some(d) = self.by_ip(ip.src) {
                return NaiveDecision::new(Reason::DenySpoof, Some(d));
            }
            None
        };
        // From a device port, a link-local destination is the device the frame is sent to.
        let link_local_dst = crate::classify::link_local_unicast(ip.dst);
        let dst = match self.by_ip(ip.dst) {
            None if link_local_dst && pkt.side == abi::SIDE_DEVICES => self.by_mac(&pkt.dst_mac),
            found => found,
        };
        if src.is_none() && dst.is_none() {
            if self.to_unowned(pkt, ip) {
                return NaiveDecision::new(Reason::DenyUnknown, None);
            }
            return NaiveDecision::new(Reason::PassUnmanaged, None);
        }
        if ip.proto == abi::PROTO_ICMPV6
            && matches!(ip.icmp_type, 131 | 132 | 133 | 135 | 136 | 143)
            && pkt.side == abi::SIDE_DEVICES
        {
            if let Some(d) = src {
                if !self.p.site.essentials.neighbor {
                    return NaiveDecision::new(Reason::DenyNoRule, Some(d));
                }
                // Link-scope only: NDP keeps hop limit 255 and stays on its link; MLD is
                // sent with hop limit 1 to a group.
                let link_scope = match (ip.icmp_type, ip.dst) {
                    (133 | 135 | 136, IpAddr::V6(a)) => {
                        let s = a.segments()[0];
                        ip.hop_limit == 255
                            && (s & 0xff0f == 0xff02
                                || s & 0xffc0 == 0xfe80
                                || self.cx.local.contains(&ip.dst)
                                || self.by_ip(ip.dst).is_some_and(|o| self.bound_here(o, pkt)))
                    }
                    (_, IpAddr::V6(a)) => ip.hop_limit == 1 && a.segments()[0] >> 8 == 0xff,
                    _ => false,
                };
                if !link_scope {
                    return NaiveDecision::new(Reason::DenyNdScope, Some(d));
                }
                let dad = ip.icmp_type == 135 && ip.src == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
                if dad
                    && self.probes_anothers(
                        IpAddr::V6(ip.nd_target.unwrap_or(Ipv6Addr::UNSPECIFIED)),
                        d,
                    )
                {
                    return NaiveDecision::new(Reason::DenySpoof, Some(d));
                }
                if ip.icmp_type == 136 {
                    // Its own address, or a link-local one (or any, when the inventory binds it
                    // no IPv6 address) nobody else owns (nobody owns one here: ownership is
                    // the datapath's runtime record).
                    let t = ip.nd_target.unwrap_or(Ipv6Addr::UNSPECIFIED);
                    let link_local = (t.segments()[0] & 0xffc0) == 0xfe80;
                    let own = match self.by_ip(IpAddr::V6(t)) {
                        Some(o) => o.id == d.id,
                        None => {
                            (link_local || d.ipv6.is_empty())
                                && claimable(IpAddr::V6(t))
                                && in_claim_networks(self.p, self.arrival(pkt), IpAddr::V6(t))
                                && !self.cx.local.contains(&IpAddr::V6(t))
                        }
                    };
                    if !own {
                        return NaiveDecision::new(Reason::DenySpoof, Some(d));
                    }
                }
                return NaiveDecision::new(Reason::AllowNeighbor, Some(d));
            }
        }
        if !ip.initiating() {
            return NaiveDecision::new(Reason::DenyNoFlow, src.or(dst));
        }
        let port = if ip.has_ports() { ip.dport } else { 0 };
        // Every managed end must allow; the initiator's rule is the one reported.
        let mut reported: Option<(&Device, Candidate)> = None;
        let mut audit = false;
        // The initiator's refusal its mode only reports stands unless the responder refuses
        // outright (its own mode softening its refusal too, the initiator's is reported).
        let mut softened = None;
        for (dev, dir, peer) in [(src, Dir::DeviceInit, ip.dst), (dst, Dir::PeerInit, ip.src)] {
            let Some(d) = dev else { continue };
            let q = self
                .cx
                .quarantine
                .get(&d.id)
                .copied()
                .unwrap_or(abi::QUARANTINE_NONE);
            match self.best(d, q, dir, peer, ip.proto, port) {
                Some(c) => {
                    audit |= c.audit;
                    if reported.is_none() {
                        reported = Some((d, c));
                    }
                }
                None => {
                    let reason = if q != abi::QUARANTINE_NONE {
                        Reason::DenyQuarantine
                    } else {
                        match d.mode {
                            Mode::Audit => Reason::Audit,
                            Mode::Learn => Reason::Learn,
                            Mode::Enforce => Reason::DenyNoRule,
                        }
                    };
                    if reason.passes() && (dir == Dir::DeviceInit || softened.is_some()) {
                        softened.get_or_insert(NaiveDecision::new(reason, Some(d)));
                        continue;
                    }
                    return NaiveDecision::new(reason, Some(d));
                }
            }
        }
        // Unless the initiator refused: no flow opens to a link-local address of no device
        // (by MAC) but the gateway's.
        if link_local_dst
            && pkt.side == abi::SIDE_DEVICES
            && dst.is_none()
            && !self.cx.local.contains(&ip.dst)
        {
            return NaiveDecision::new(Reason::DenyNoRule, src);
        }
        if let Some(v) = softened {
            return v;
        }
        let Some((d, c)) = reported else {
            return NaiveDecision::new(Reason::PassUnmanaged, None);
        };
        NaiveDecision {
            reason: if audit {
                Reason::Audit
            } else {
                Reason::AllowRule
            },
            device: Some(d.id.clone()),
            origin: Some(c.origin),
        }
    }

    /// The best rule of `d`'s effective policy for this flow, if any.
    fn best(
        &self,
        d: &Device,
        q: u8,
        dir: Dir,
        peer: IpAddr,
        proto: u8,
        port: u16,
    ) -> Option<Candidate> {
        let mut found: Vec<Candidate> = Vec::new();
        let fam = Family::of_addr(&peer);
        let isolated = q == abi::QUARANTINE_ISOLATE;
        let speaks = |f: Family| isolated || d.speaks(f);
        self.essentials(speaks(fam), fam, dir, peer, proto, port, &mut found);
        if isolated {
            for r in &self.p.site.quarantine_allow {
                let nets = self.nets(r);
                if r.initiator_dir() == dir && self.rule_matches(r, &nets, peer, proto, port) {
                    found.push(Candidate {
                        audit: false,
                        order: (1, String::new(), r.index),
                        origin: Origin::Quarantine { index: r.index },
                    });
                }
            }
        } else if d.speaks(fam) {
            for (name, wf) in &self.p.workflows {
                if q == abi::QUARANTINE_RESTRICT && !wf.essential {
                    continue;
                }
                for r in &wf.rules {
                    let ends = self.ends(wf, r);
                    let managed = self.managed(r);
                    let mut hit = false;
                    if ends.iter().any(|e| e.id == d.id) && r.initiator_dir() == dir {
                        let mut nets = self.nets(r);
                        nets.extend(managed.iter().flat_map(|m| m.addresses().map(host_net)));
                        hit |= self.rule_matches(r, &nets, peer, proto, port);
                    }
                    if managed.iter().any(|m| m.id == d.id) && r.initiator_dir() != dir {
                        let nets: Vec<_> = ends
                            .iter()
                            .flat_map(|e| e.addresses().map(host_net))
                            .collect();
                        hit |= self.rule_matches(r, &nets, peer, proto, port);
                    }
                    if hit {
                        found.push(Candidate {
                            audit: wf.mode != Mode::Enforce,
                            order: (2, name.clone(), r.index),
                            origin: Origin::Workflow {
                                workflow: name.clone(),
                                index: r.index,
                            },
                        });
                    }
                }
            }
        }
        found.into_iter().min()
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the flow being matched"
    )]
    fn essentials(
        &self,
        speaks: bool,
        fam: Family,
        dir: Dir,
        peer: IpAddr,
        proto: u8,
        port: u16,
        found: &mut Vec<Candidate>,
    ) {
        if !speaks {
            return;
        }
        let e = &self.p.site.essentials;
        let in_servers = |s: &Option<Vec<ipnet::IpNet>>| {
            s.as_ref()
                .is_some_and(|s| s.iter().any(|n| n.contains(&peer)))
        };
        let mut hit = |order: u8, name: &'static str| {
            found.push(Candidate {
                audit: false,
                order: (0, String::new(), order as usize),
                origin: Origin::Essential { name },
            });
        };
        if e.dhcp.is_some() && proto == abi::PROTO_UDP {
            let bcast = match fam {
                Family::V4 => peer == IpAddr::V4(Ipv4Addr::BROADCAST),
                Family::V6 => peer == IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2)),
            };
            let request_port = if fam == Family::V4 { 67 } else { 547 };
            let to_server =
                dir == Dir::DeviceInit && port == request_port && (bcast || in_servers(&e.dhcp));
            let reply =
                fam == Family::V4 && dir == Dir::PeerInit && port == 68 && in_servers(&e.dhcp);
            if to_server || reply {
                hit(0, "dhcp");
            }
        }
        if dir == Dir::DeviceInit
            && port == 53
            && (proto == abi::PROTO_UDP || proto == abi::PROTO_TCP)
            && in_servers(&e.dns)
        {
            hit(1, "dns");
        }
        if dir == Dir::DeviceInit && port == 123 && proto == abi::PROTO_UDP && in_servers(&e.ntp) {
            hit(2, "ntp");
        }
    }

    fn rule_matches(
        &self,
        r: &Rule,
        nets: &[ipnet::IpNet],
        peer: IpAddr,
        proto: u8,
        port: u16,
    ) -> bool {
        let fam_ok = r.proto.family().is_none_or(|f| f == Family::of_addr(&peer));
        fam_ok
            && r.proto.matches(proto)
            && r.ports
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p.contains(port)))
            && nets.iter().any(|n| n.contains(&peer))
    }

    fn nets(&self, r: &Rule) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for p in &r.peers {
            match p {
                PeerSel::Role(n) => out.extend(
                    self.p
                        .roles
                        .get(n)
                        .into_iter()
                        .flat_map(|r| r.addresses.iter().copied()),
                ),
                PeerSel::Prefix(n) => out.push(*n),
                PeerSel::Any => {
                    out.push(ipnet::IpNet::V4(ipnet::Ipv4Net::default()));
                    out.push(ipnet::IpNet::V6(ipnet::Ipv6Net::default()));
                }
                _ => {}
            }
        }
        out
    }

    fn ends(&self, wf: &Workflow, r: &Rule) -> Vec<&'p Device> {
        self.p
            .devices
            .iter()
            .filter(|d| match &r.ends {
                None => d.workflows.contains(&wf.name),
                Some(sels) => sels.iter().any(|s| match s {
                    EndSel::Class(c) => d.class.as_ref() == Some(c),
                    EndSel::Device(id) => d.id == *id,
                }),
            })
            .collect()
    }

    fn managed(&self, r: &Rule) -> Vec<&'p Device> {
        self.p
            .devices
            .iter()
            .filter(|d| {
                r.peers.iter().any(|p| match p {
                    PeerSel::Class(c) => d.class.as_ref() == Some(c),
                    PeerSel::Device(id) => d.id == *id,
                    _ => false,
                })
            })
            .collect()
    }
}

impl Rule {
    /// Direction of the rule seen from its managed end.
    pub fn initiator_dir(&self) -> Dir {
        match self.initiator {
            Initiator::Device => Dir::DeviceInit,
            Initiator::Peer => Dir::PeerInit,
        }
    }
}

/// Whether the site's networks let a device behind the devices-side interface `at` (any,
/// when `at` is none or no interface of the policy) own `a` by first use: of the networks
/// the interfaces declare that contain it, the longest decides (upstream: no; `at`'s, or
/// any devices-side one's when `at` is none: yes; another devices-side interface's: no;
/// on a tie in that order). Link-local addresses count as a devices-side network of `at`
/// declared after the others; so does everything when `at` (for any interface: one of
/// them) declares no networks, or no devices-side interface declares one of `a`'s family
/// (or there is none).
pub(crate) fn in_claim_networks(p: &Policy, at: Option<&str>, a: IpAddr) -> bool {
    claim_winner(p, at, a).is_some_and(|(_, yes)| yes)
}

/// The network that decides [`in_claim_networks`]: ((prefix length, rank), allowed), rank
/// 3 an upstream network, 2 one of `at`'s (any devices-side interface's when `at` is
/// none), 1 another devices-side interface's, 0 what is implied (link-local, or every
/// address where no network of the family is declared).
fn claim_winner(p: &Policy, at: Option<&str>, a: IpAddr) -> Option<((u8, u8), bool)> {
    let v4 = a.is_ipv4();
    let at = at.filter(|n| {
        p.site
            .interfaces
            .get(*n)
            .is_some_and(|i| i.side == Side::Devices)
    });
    let own = |i: &Interface| i.side == Side::Devices && at.is_none_or(|n| n == i.name);
    let devices: Vec<&Interface> = p.site.interfaces.values().filter(|i| own(i)).collect();
    let open = devices.is_empty()
        || devices.iter().any(|i| i.networks.is_empty())
        || !p.site.interfaces.values().any(|i| {
            i.side == Side::Devices && i.networks.iter().any(|n| n.addr().is_ipv4() == v4)
        });
    // (prefix length, rank on a tie: 3 upstream, 2 own, 1 another devices-side interface's,
    // 0 what is implied), allowed.
    let mut candidates: Vec<((u8, u8), bool)> = Vec::new();
    for i in p.site.interfaces.values() {
        for n in i.networks.iter().filter(|n| n.contains(&a)) {
            let rank = match i.side {
                Side::Upstream => 3,
                Side::Devices if own(i) => 2,
                Side::Devices => 1,
            };
            candidates.push(((n.prefix_len(), rank), rank == 2));
        }
    }
    if crate::classify::link_local(a) {
        candidates.push(((if v4 { 16 } else { 10 }, 0), true));
    }
    if open {
        candidates.push(((0, 0), true));
    }
    candidates.into_iter().max()
}

/// Whether a device may own `a` by first use: a host's unicast address (not 0/8, loopback,
/// multicast, reserved or broadcast; not `::`), not IPv4-mapped.
fn claimable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !v4.is_loopback() && v4.octets()[0] != 0 && v4.octets()[0] < 224,
        IpAddr::V6(v6) => {
            !(v6.is_multicast() || v6.is_unspecified() || v6.is_loopback())
                && v6.to_ipv4_mapped().is_none()
        }
    }
}
