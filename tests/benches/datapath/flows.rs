//! The benchmark's flows, chosen from the compiled policies, and their frames. A flow is
//! kept only if the reference classifier gives the path's reason under every policy loaded
//! (main.rs then checks the real program's action and counted reason before timing).
//! Pure: no kernel here.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context, Result};
use lazaret::policy::compiled::{CompiledDevice, Entry, Origin};
use lazaret::policy::model::{Mode, Proto};
use lazaret::policy::{
    classify_indexed, Compiled, DeviceStates, FlowHint, IpDesc, MapIndex, PacketDesc, PacketKind,
};
use lazaret_abi::*;
use lazaret_tests::frames::{self, Ext, Mac, TCP_SYN};

/// The gateway's MAC, as devices address it.
pub(crate) const GW_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
/// BPF_PROG_TEST_RUN delivers frames on the loopback interface.
pub(crate) const LO: u32 = 1;
/// Source port of the probes that check a flow (outside the new-flow port range).
pub(crate) const PROBE_SPORT: u16 = 60_999;
/// A MAC no generated device has (gen-policy uses 02:00:…).
const UNKNOWN_MAC: Mac = [0x02, 0xee, 0, 0, 0, 0x01];

/// One compiled policy and its map contents indexed for the reference classifier.
pub(crate) struct Policy {
    pub rules: usize,
    pub compiled: Compiled,
    pub index: MapIndex,
}

/// A device-initiated TCP or UDP flow.
#[derive(Clone, Debug)]
pub(crate) struct Flow {
    pub device: String,
    pub class: u32,
    pub mac: Mac,
    pub vlan: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub dport: u16,
    /// Where the rule that allows it comes from (or why it is denied), for the report.
    pub origin: String,
}

/// How a frame is wrapped: VLAN tags (outermost first) and IPv6 extension headers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shape {
    pub tags: Vec<(u16, u16)>,
    pub exts: Vec<Ext>,
}

impl Shape {
    /// One 802.1Q tag: how every generated device is bound.
    pub(crate) fn tagged(vlan: u16) -> Shape {
        Shape {
            tags: vec![(frames::ETH_8021Q, vlan)],
            exts: Vec::new(),
        }
    }
}

impl Flow {
    fn new(d: &CompiledDevice, e: &Entry, c: &Compiled, v6: bool) -> Option<Flow> {
        let src = if v6 {
            IpAddr::V6(*d.ipv6.first()?)
        } else {
            IpAddr::V4(*d.ipv4.first()?)
        };
        let proto = e.proto.number()?;
        Some(Flow {
            device: d.id.clone(),
            class: d.class_index,
            mac: d.mac?.0,
            vlan: d.vlan?,
            src,
            dst: e.peer.hosts().next()?,
            proto,
            dport: e.ports.map_or(443, |r| r.lo),
            origin: c
                .rule(e.rule)
                .map_or_else(|| format!("rule {}", e.rule), |r| r.origin.to_string()),
        })
    }

    pub(crate) fn describe(&self) -> String {
        let proto = match self.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            _ => "ip",
        };
        format!(
            "{} ({}, VLAN {}) → {} {proto}/{} — {}",
            self.device, self.src, self.vlan, self.dst, self.dport, self.origin
        )
    }

    /// A frame from the device (device side).
    pub(crate) fn device_frame(
        &self,
        shape: &Shape,
        sport: u16,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let l4 = self.l4(sport, self.dport, flags, payload);
        let l3 = l3(self.src, self.dst, self.proto, &shape.exts, &l4);
        frames::ethernet(GW_MAC, self.mac, &shape.tags, ethertype(self.src), &l3)
    }

    /// The peer's reply (upstream side, untagged).
    pub(crate) fn peer_frame(
        &self,
        shape: &Shape,
        sport: u16,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let l4 = self.l4(self.dport, sport, flags, payload);
        let l3 = l3(self.dst, self.src, self.proto, &shape.exts, &l4);
        frames::ethernet(self.mac, GW_MAC, &[], ethertype(self.src), &l3)
    }

    fn l4(&self, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        if self.proto == PROTO_TCP {
            frames::tcp(sport, dport, flags, payload)
        } else {
            frames::udp(sport, dport, payload)
        }
    }

    /// The reference classifier's reason for an initiating packet of this flow (no flow
    /// entry yet).
    pub(crate) fn judge(&self, ix: &MapIndex, sport: u16) -> Reason {
        let pkt = PacketDesc {
            side: SIDE_DEVICES,
            ifindex: LO,
            port: LO,
            claim_scope: CLAIM_POLICY as u16,
            vlan: self.vlan,
            src_mac: self.mac,
            dst_mac: GW_MAC,
            kind: PacketKind::Ip(IpDesc {
                src: self.src,
                dst: self.dst,
                proto: self.proto,
                sport,
                dport: self.dport,
                tcp_flags: if self.proto == PROTO_TCP { TCP_SYN } else { 0 },
                icmp_type: 0,
                nd_target: None,
                hop_limit: 64,
                quoted: None,
            }),
            flow: FlowHint::None,
        };
        classify_indexed(ix, &DeviceStates::default(), &pkt).reason
    }

    fn judged_everywhere(&self, policies: &[Policy], reason: Reason) -> bool {
        policies
            .iter()
            .all(|p| self.judge(&p.index, PROBE_SPORT) == reason)
    }
}

fn ethertype(a: IpAddr) -> u16 {
    if a.is_ipv4() {
        frames::ETH_IPV4
    } else {
        frames::ETH_IPV6
    }
}

fn l3(src: IpAddr, dst: IpAddr, proto: u8, exts: &[Ext], l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frames::ipv4(s, d, proto, l4, &frames::Ipv4Opts::default())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => frames::ipv6(s, d, exts, proto, l4),
        // Flows are built from one family's addresses only.
        _ => Vec::new(),
    }
}

/// A device that can be the source of a benchmark flow: enforcing, bound to a MAC and a
/// VLAN we can tag, with an address of the family.
fn usable(d: &CompiledDevice, v6: bool) -> bool {
    d.mode == Mode::Enforce
        && d.mac.is_some()
        && d.vlan.is_some_and(|v| (1..4095).contains(&v))
        && if v6 {
            !d.ipv6.is_empty()
        } else {
            !d.ipv4.is_empty()
        }
}

/// Preference of an entry as the benchmark's allowed flow: workflow TCP rules first, then
/// essentials over TCP, then UDP; `None` for entries that do not fit.
fn rank(c: &Compiled, e: &Entry, v6: bool) -> Option<u8> {
    let fits = e.dir == lazaret::policy::Dir::DeviceInit
        && !e.audit
        && e.peer.addr().is_ipv6() == v6
        && matches!(e.proto, Proto::Tcp | Proto::Udp);
    if !fits {
        return None;
    }
    let essential = matches!(c.rule(e.rule)?.origin, Origin::Essential { .. });
    Some(2 * u8::from(e.proto == Proto::Udp) + u8::from(essential))
}

/// The first flow (by preference, then device id) that every policy allows as a new flow
/// (`AllowRule`) towards an unmanaged peer, so exactly one end is judged.
pub(crate) fn allowed(policies: &[Policy], v6: bool) -> Result<Flow> {
    let first = &policies.first().context("no policy")?.compiled;
    for want in 0..4 {
        for d in first.devices.iter().filter(|d| usable(d, v6)) {
            let Some(p) = first.policy(d.policy) else {
                continue;
            };
            for e in p
                .entries
                .iter()
                .filter(|e| rank(first, e, v6) == Some(want))
            {
                let Some(flow) = Flow::new(d, e, first, v6) else {
                    continue;
                };
                let unmanaged_peer = policies
                    .iter()
                    .all(|p| p.index.device_by_ip(flow.dst).is_none());
                if unmanaged_peer && flow.judged_everywhere(policies, Reason::AllowRule) {
                    return Ok(flow);
                }
            }
        }
    }
    bail!(
        "no device-initiated TCP or UDP flow ({}) is allowed under every policy",
        if v6 { "IPv6" } else { "IPv4" }
    )
}

/// Up to `max` devices of the flow's class for which the same flow (to the same peer and
/// port) is allowed under every policy: sources of distinct new flows.
pub(crate) fn pool(policies: &[Policy], flow: &Flow, max: usize) -> Result<Vec<Flow>> {
    if flow.src.is_ipv6() {
        bail!("the new-flow pool is built for IPv4 flows");
    }
    let first = &policies.first().context("no policy")?.compiled;
    let mut out = Vec::new();
    for d in first.devices.iter().filter(|d| d.class_index == flow.class) {
        if out.len() == max {
            break;
        }
        if !usable(d, false) {
            continue;
        }
        let f = Flow {
            device: d.id.clone(),
            mac: d.mac.map_or([0; 6], |m| m.0),
            vlan: d.vlan.unwrap_or(VLAN_ANY),
            src: IpAddr::V4(*d.ipv4.first().context("usable device")?),
            ..flow.clone()
        };
        if f.judged_everywhere(policies, Reason::AllowRule) {
            out.push(f);
        }
    }
    if out.is_empty() {
        bail!("no device can open the new-flow benchmark's flow");
    }
    Ok(out)
}

/// The same device and peer over TCP, to a port no rule allows: both lookups (peer, then
/// port) run and the port lookup misses, under every policy.
pub(crate) fn denied(policies: &[Policy], flow: &Flow) -> Result<Flow> {
    let ports = [23, 445, 3389, 5900, 135, 139, 21, 25, 111, 2049];
    for port in ports.into_iter().chain(1..1024) {
        let f = Flow {
            proto: PROTO_TCP,
            dport: port,
            origin: "no rule for this port".into(),
            ..flow.clone()
        };
        if f.judged_everywhere(policies, Reason::DenyNoRule) {
            return Ok(f);
        }
    }
    bail!(
        "every port below 1024 to {} is allowed: no denied flow",
        flow.dst
    )
}

/// A MAC and address no device has, on the flow's VLAN, opening the same flow.
pub(crate) fn unknown(policies: &[Policy], flow: &Flow) -> Result<Flow> {
    let IpAddr::V4(a) = flow.src else {
        bail!("the unknown-device flow is built from an IPv4 flow");
    };
    let [x, y, ..] = a.octets();
    for host in 1..255 {
        let src = IpAddr::V4(Ipv4Addr::new(x, y, 250, host));
        let free = policies.iter().all(|p| {
            p.index.device_by_ip(src).is_none() && p.index.lookup_mac(&UNKNOWN_MAC).is_none()
        });
        let f = Flow {
            device: "(unknown device)".into(),
            class: u32::MAX,
            mac: UNKNOWN_MAC,
            src,
            origin: "site default: deny unknown devices".into(),
            ..flow.clone()
        };
        if free && f.judged_everywhere(policies, Reason::DenyUnknown) {
            return Ok(f);
        }
    }
    bail!("no free address in {x}.{y}.250.0/24 is judged an unknown device")
}
