//! The datapath's twin on the host: the frame parser ([`parse`]) and the stateful parts of
//! the XDP program (flow table, fragment trains, ICMP errors related to flows) around the
//! reference classifier in [`crate::classify()`].
//!
//! Feed it the same frames as the XDP program, in the same order, and it must return the
//! same reasons: that is what the differential tests and the packet fuzzer check. It also
//! keeps each flow in the table the datapath keeps it in ([`FlowTable`]: new or
//! established, see `lazaret_abi`, *Flow tables*), with the same TCP confirmation and the
//! same per-device promotion buckets, so a test can compare the two tables' contents too
//! ([`Model::flow_tables`]).
//!
//! Time is not modelled: flows never expire and promotion buckets never refill here, so
//! tests must stay well inside the datapath's timeouts (seconds), and compare table
//! contents only with a promotion rate of 0 (`SiteConfig::promote_rate`), where the
//! datapath's buckets do not refill either. Capacity is not modelled: nothing is evicted.
//! Pure: no aya, no I/O.

pub mod parse;

use std::{collections::HashMap, net::IpAddr};

use lazaret_abi::*;

use crate::classify::{
    classify_indexed, Decision, DeviceStates, FlowHint, IpDesc, MapIndex, PacketKind, TCP_ACK,
    TCP_FIN, TCP_RST, TCP_SYN,
};
use parse::{Frag, Parsed};

/// Which of the datapath's two flow tables a flow is in.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FlowTable {
    /// [`MAP_FLOWS`]: not confirmed yet, or confirmed beyond its device's promotion budget.
    New,
    /// [`MAP_EST_FLOWS`]: confirmed; a flood of unconfirmed flows cannot evict it.
    Established,
}

impl FlowTable {
    /// Both tables, in the datapath's lookup order.
    pub const ALL: [FlowTable; 2] = [FlowTable::Established, FlowTable::New];

    /// The map holding this table.
    pub const fn map(self) -> &'static str {
        match self {
            FlowTable::New => MAP_FLOWS,
            FlowTable::Established => MAP_EST_FLOWS,
        }
    }

    /// Lower-case name, for the control API.
    pub const fn name(self) -> &'static str {
        match self {
            FlowTable::New => "new",
            FlowTable::Established => "established",
        }
    }
}

/// A flow entry, as `FlowValue` keeps it (minus timestamps), and the table it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    generation: u64,
    dev_a: u64,
    dev_b: u64,
    epoch_a: u32,
    epoch_b: u32,
    rule: u32,
    /// Endpoint a opened the flow.
    a_initiated: bool,
    /// `FLOW_*`.
    state: u8,
    /// TCP: the responder's ISN, from its SYN-ACK.
    resp_isn: u32,
    table: FlowTable,
}

impl Flow {
    /// The datapath's `advance_flow`: a datagram flow is confirmed by a packet back from
    /// its responder; a TCP flow by the initiator's ACK of the responder's SYN-ACK.
    fn advance(&mut self, ip: &IpDesc, p: &Parsed, from_initiator: bool) {
        if ip.proto != PROTO_TCP {
            if !from_initiator {
                self.state = FLOW_ESTABLISHED;
            }
            return;
        }
        const SYN_ACK: u8 = TCP_SYN | TCP_ACK;
        let handshake = ip.tcp_flags & SYN_ACK;
        if ip.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            self.state = FLOW_CLOSING;
        } else if !from_initiator {
            if handshake == SYN_ACK && matches!(self.state, FLOW_NEW | FLOW_RESPONDED) {
                self.state = FLOW_RESPONDED;
                self.resp_isn = p.tcp_seq;
            }
        } else if self.state == FLOW_RESPONDED
            && handshake == TCP_ACK
            && p.tcp_ack == self.resp_isn.wrapping_add(1)
        {
            self.state = FLOW_ESTABLISHED;
        }
    }

    /// The device a promotion is charged to: the initiator if managed, else the responder.
    fn charged(&self) -> u64 {
        let (init, resp) = if self.a_initiated {
            (self.dev_a, self.dev_b)
        } else {
            (self.dev_b, self.dev_a)
        };
        if init != 0 {
            init
        } else {
            resp
        }
    }
}

/// Normalized 5-tuple (`FlowKey`), the lower endpoint first: protocol, endpoints a and b,
/// and an echo's requester (`FlowKey::echo`).
type Key = (u8, (IpAddr, u16), (IpAddr, u16), u8);

/// The datapath's `normalized_key`; `echo` is the packet's `echo_kind`.
fn key(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16), echo: u8) -> (Key, bool) {
    // The datapath compares the 16-byte address arrays (IPv4 in the first four bytes),
    // then the port: the same order as comparing these byte arrays.
    let src_is_a = (addr_bytes(&src.0), src.1) <= (addr_bytes(&dst.0), dst.1);
    let echo = echo_end(echo, src_is_a);
    if src_is_a {
        ((proto, src, dst, echo), true)
    } else {
        ((proto, dst, src, echo), false)
    }
}

/// An address as the flow key holds it: IPv4 in the first four bytes, the rest zero.
fn addr_bytes(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A fragment train (`FragValue`).
#[derive(Clone, Copy, Debug)]
struct Train {
    /// The first fragment's verdict.
    reason: Reason,
    /// Where its upper-layer header ends.
    hdr_end: u32,
    /// Its ports and echo kind, which name its flow with the train's addresses.
    sport: u16,
    dport: u16,
    echo: u8,
}

/// The stateful twin of the datapath.
#[derive(Debug)]
pub struct Model {
    index: MapIndex,
    pub states: DeviceStates,
    flows: HashMap<Key, Flow>,
    /// Fragment trains: (src, dst, id, proto) → the first fragment's verdict and what it
    /// was judged under (`FragValue`).
    frags: HashMap<(IpAddr, IpAddr, u32, u8), Train>,
    /// Promotion buckets (`LZ_PROMOTE`): device → tokens in thousandths.
    promote: HashMap<u64, u64>,
}

impl Model {
    pub fn new(index: MapIndex) -> Self {
        Model {
            index,
            states: DeviceStates::default(),
            flows: HashMap::new(),
            frags: HashMap::new(),
            promote: HashMap::new(),
        }
    }

    /// Every flow with its table, as the datapath's `LZ_EST_FLOWS` and `LZ_FLOWS` keys,
    /// sorted.
    pub fn flow_tables(&self) -> Vec<(FlowTable, FlowKey)> {
        let mut out: Vec<(FlowTable, FlowKey)> = self
            .flows
            .iter()
            .map(|((proto, (a, pa), (b, pb), echo), f)| {
                let key = FlowKey {
                    addr_a: addr_bytes(a),
                    addr_b: addr_bytes(b),
                    port_a: *pa,
                    port_b: *pb,
                    proto: *proto,
                    family: if a.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 },
                    echo: *echo,
                    _pad: 0,
                };
                (f.table, key)
            })
            .collect();
        out.sort();
        out
    }

    /// Installs a new generation (the flow table and trains are kept, as in the datapath).
    pub fn install(&mut self, index: MapIndex) {
        self.index = index;
    }

    pub fn index(&self) -> &MapIndex {
        &self.index
    }

    fn epoch(&self, dev: u64) -> u32 {
        if dev == 0 {
            return 0;
        }
        self.states.states.get(&dev).map_or(0, |s| s.epoch)
    }

    /// Judges one frame and updates the state like the XDP program would, on an interface
    /// of `side` with the default configuration.
    pub fn judge(&mut self, frame: &[u8], side: u8, ifindex: u32) -> Decision {
        self.judge_on(frame, &IfaceConfig::new(side), ifindex)
    }

    /// [`Self::judge`] on interface `ifindex` configured as `iface` (its `LZ_IFACE` entry).
    pub fn judge_on(&mut self, frame: &[u8], iface: &IfaceConfig, ifindex: u32) -> Decision {
        match parse::parse(frame, iface, ifindex) {
            Ok(p) => self.judge_parsed(p),
            Err(reason) => Decision::new(reason),
        }
    }

    fn judge_parsed(&mut self, p: Parsed) -> Decision {
        let PacketKind::Ip(ip) = p.desc.kind else {
            // ARP: what its sender claims (its address, its port) stays too.
            let d = classify_indexed(&self.index, &self.states, &p.desc);
            self.states.keep(&d.claims);
            return d;
        };
        // Identity, rogue servers, unmanaged traffic and NDP come first in the datapath;
        // probing the classifier with "no flow" yields exactly those verdicts when they
        // apply. A probe reaching the policy stage means identity passed.
        let probe = classify_indexed(&self.index, &self.states, &p.desc);
        // What the datapath records while identifying the frame (link-local owners, port
        // pins) stays, whatever the verdict.
        self.states.keep(&probe.claims);
        if !reached_policy(probe.reason) {
            return probe;
        }
        let (src_dev, dst_dev) = self.ends(&p, &ip);
        let dev = if src_dev != 0 { src_dev } else { dst_dev };
        if p.frag == Frag::Later {
            let train = self
                .frags
                .get(&(ip.src, ip.dst, p.frag_id, ip.proto))
                .copied();
            return match train {
                Some(t) if p.frag_at < t.hdr_end => Decision::dev(Reason::DenyFragment, dev),
                // A train lives as long as its flow stays current: a quarantine or a reload
                // that would judge the flow again cuts it (its later fragments carry no
                // ports to judge again).
                Some(t) if t.reason.passes() && self.train_flow_is_current(&t, &p, &ip) => {
                    Decision::dev(t.reason, dev)
                }
                _ => Decision::dev(Reason::DenyFragment, dev),
            };
        }
        if let Some(q) = ip.quoted {
            // The flow the error quotes decides (the datapath's `judge_related`).
            let (k, inner_src_is_a) = key(q.proto, (q.src, q.sport), (q.dst, q.dport), q.echo);
            let mut desc = p.desc;
            // The error's own source is the quoted packet's destination.
            desc.flow = self.hint_at(&k, inner_src_is_a, !inner_src_is_a, &p, (ip.src, ip.dst));
            return classify_indexed(&self.index, &self.states, &desc);
        }
        let d = self.judge_flow(&p, &ip);
        if p.frag == Frag::First {
            let train = Train {
                reason: d.reason,
                hdr_end: p.frag_at,
                sport: ip.sport,
                dport: ip.dport,
                echo: echo_kind(ip.proto, ip.icmp_type),
            };
            self.frags
                .insert((ip.src, ip.dst, p.frag_id, ip.proto), train);
        }
        d
    }

    /// Whether the flow of the train `t` (whose fragments go from `ip.src` to `ip.dst`) is
    /// in the table and current (the datapath's `judge_later_fragment`).
    fn train_flow_is_current(&self, t: &Train, p: &Parsed, ip: &IpDesc) -> bool {
        let (k, src_is_a) = key(ip.proto, (ip.src, t.sport), (ip.dst, t.dport), t.echo);
        matches!(
            self.hint_at(&k, src_is_a, src_is_a, p, (ip.src, ip.dst)),
            FlowHint::Current { .. }
        )
    }

    fn judge_flow(&mut self, p: &Parsed, ip: &IpDesc) -> Decision {
        let (k, src_is_a) = key(
            ip.proto,
            (ip.src, ip.sport),
            (ip.dst, ip.dport),
            echo_kind(ip.proto, ip.icmp_type),
        );
        // ICMP other than echo belongs to no flow (`IpDesc::flowless`): it neither finds one
        // nor advances it.
        let hint = if ip.flowless() {
            FlowHint::None
        } else {
            self.hint_at(&k, src_is_a, src_is_a, p, (ip.src, ip.dst))
        };
        let mut desc = p.desc;
        desc.flow = hint;
        let d = classify_indexed(&self.index, &self.states, &desc);
        match hint {
            FlowHint::Current { .. } => self.advance(&k, p, ip, src_is_a),
            FlowHint::Stale { there, .. } => {
                if d.passes() {
                    let (src_dev, mut dst_dev) = self.ends(p, ip);
                    // The datapath's `destination` for a flow judged again: a link-local end
                    // found by MAC is never renamed (it passes only to the gateway's own
                    // address, then naming no device).
                    let by_mac = p.desc.side == SIDE_DEVICES
                        && crate::classify::link_local_unicast(ip.dst)
                        && self.index.device_by_ip(ip.dst).is_none();
                    if by_mac && there != 0 && dst_dev != there {
                        dst_dev = 0;
                    }
                    self.stamp(k, src_is_a, src_dev, dst_dev, &d);
                    self.advance(&k, p, ip, src_is_a);
                } else {
                    self.flows.remove(&k);
                }
            }
            FlowHint::None => {
                if d.passes() && ip.initiating() && !matches!(d.reason, Reason::AllowFlow) {
                    let (src_dev, dst_dev) = self.ends(p, ip);
                    let (dev_a, dev_b) = if src_is_a {
                        (src_dev, dst_dev)
                    } else {
                        (dst_dev, src_dev)
                    };
                    let flow = Flow {
                        generation: 0,
                        dev_a,
                        dev_b,
                        epoch_a: 0,
                        epoch_b: 0,
                        rule: NO_RULE,
                        a_initiated: src_is_a,
                        state: FLOW_NEW,
                        resp_isn: 0,
                        table: FlowTable::New,
                    };
                    self.flows.insert(k, flow);
                    self.stamp(k, src_is_a, src_dev, dst_dev, &d);
                }
            }
        }
        d
    }

    /// What the flow table says of the flow `k` for a packet (`p`, to `dst`) whose own
    /// source is endpoint a or not (`pkt_src_is_a`), `src_is_a` the key's (an ICMP error's
    /// quoted packet's): none, current, or stale (to be re-judged); and the datapath's
    /// `sent_elsewhere`: a current flow whose packet goes from a device port to a link-local
    /// address, sent to a MAC whose device is not the one the flow names at that end, is
    /// stale: judged again, for the device it reaches.
    fn hint_at(
        &self,
        k: &Key,
        src_is_a: bool,
        pkt_src_is_a: bool,
        p: &Parsed,
        (src, dst): (IpAddr, IpAddr),
    ) -> FlowHint {
        let Some(f) = self.flows.get(k) else {
            return FlowHint::None;
        };
        let (here, there) = if pkt_src_is_a {
            (f.dev_a, f.dev_b)
        } else {
            (f.dev_b, f.dev_a)
        };
        let stale = FlowHint::Stale {
            initiator_is_src: f.a_initiated == src_is_a,
            here,
            there,
        };
        let generation = self.index.site().generation;
        let current = f.generation == generation
            && f.epoch_a == self.epoch(f.dev_a)
            && f.epoch_b == self.epoch(f.dev_b);
        if !current {
            return stale;
        }
        // Nor from another device than the flow names at its source end, none included
        // (the datapath's `sent_elsewhere`).
        if here != self.source(p, src) {
            return stale;
        }
        let sent_elsewhere = p.desc.side == SIDE_DEVICES
            && crate::classify::link_local_unicast(dst)
            && self.index.lookup_mac(&p.desc.dst_mac).unwrap_or(0) != there;
        if sent_elsewhere {
            stale
        } else {
            FlowHint::Current { rule: f.rule }
        }
    }

    /// A packet of a live flow: its state advances, and a confirmed flow of the new table
    /// moves to the established one if its device has a promotion token (`promote`).
    fn advance(&mut self, k: &Key, p: &Parsed, ip: &IpDesc, src_is_a: bool) {
        let Some(f) = self.flows.get_mut(k) else {
            return;
        };
        let from_initiator = f.a_initiated == src_is_a;
        f.advance(ip, p, from_initiator);
        if f.table == FlowTable::New && f.state == FLOW_ESTABLISHED {
            let charged = f.charged();
            if self.take_promotion(charged) {
                if let Some(f) = self.flows.get_mut(k) {
                    f.table = FlowTable::Established;
                }
            }
        }
    }

    /// The datapath's `take_token` on `LZ_PROMOTE`, with no time passing.
    fn take_promotion(&mut self, dev: u64) -> bool {
        let burst_milli = u64::from(self.index.site().promote_burst) * 1000;
        match self.promote.get_mut(&dev) {
            Some(tokens) => {
                *tokens = (*tokens).min(burst_milli);
                if *tokens >= 1000 {
                    *tokens -= 1000;
                    true
                } else {
                    false
                }
            }
            None => {
                self.promote.insert(dev, burst_milli.saturating_sub(1000));
                burst_milli >= 1000
            }
        }
    }

    /// Managed devices at the packet's two ends, as the datapath finds them once identity
    /// has passed: a device-side source by its address, or by its MAC when the address is
    /// unspecified, link-local or not bound; the destination by address (bound, or owned:
    /// `MapIndex::device_at`).
    fn ends(&self, p: &Parsed, ip: &IpDesc) -> (u64, u64) {
        let src = self.source(p, ip.src);
        let dst = self
            .index
            .device_at(&self.states, ip.dst, &p.desc)
            .map_or(0, |d| d.id);
        (src, dst)
    }

    /// The device a packet from `src` (`p`) comes from: by its address, or its MAC (an
    /// unspecified or link-local address, or one the inventory binds to none).
    fn source(&self, p: &Parsed, src: IpAddr) -> u64 {
        if p.desc.side != SIDE_DEVICES {
            // Never a device upstream (the datapath refuses it as spoofing first).
            return 0;
        }
        let unspecified = crate::classify::unspecified_or_link_local(src);
        let by_addr = if unspecified {
            0
        } else {
            self.index.device_by_ip(src).map_or(0, |d| d.id)
        };
        if by_addr != 0 {
            by_addr
        } else {
            self.index.lookup_mac(&p.desc.src_mac).unwrap_or(0)
        }
    }

    /// The datapath's `stamp_flow`: the devices, epochs, generation and rule the flow was
    /// (re-)admitted with; its state, initiator and table stay.
    fn stamp(&mut self, k: Key, src_is_a: bool, src_dev: u64, dst_dev: u64, d: &Decision) {
        let (dev_a, dev_b) = if src_is_a {
            (src_dev, dst_dev)
        } else {
            (dst_dev, src_dev)
        };
        let (epoch_a, epoch_b) = (self.epoch(dev_a), self.epoch(dev_b));
        let generation = self.index.site().generation;
        if let Some(f) = self.flows.get_mut(&k) {
            f.generation = generation;
            f.dev_a = dev_a;
            f.dev_b = dev_b;
            f.epoch_a = epoch_a;
            f.epoch_b = epoch_b;
            f.rule = d.rule.unwrap_or(NO_RULE);
        }
    }
}

/// Reasons the datapath gives only after identity checks passed.
fn reached_policy(r: Reason) -> bool {
    matches!(
        r,
        Reason::AllowRule
            | Reason::AllowFlow
            | Reason::Audit
            | Reason::Learn
            | Reason::DenyNoRule
            | Reason::DenyNoFlow
            | Reason::DenyQuarantine
    )
}
