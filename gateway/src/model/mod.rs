//! The datapath's twin on the host: the frame parser ([`parse`]) and the stateful parts of
//! the XDP program (flow table, fragment trains, ICMP errors related to flows) around the
//! reference classifier in [`crate::policy::classify`].
//!
//! Feed it the same frames as the XDP program, in the same order, and it must return the
//! same reasons: that is what the differential tests and the packet fuzzer check. Time is
//! not modelled: flows never expire here, so tests must stay well inside the datapath's
//! timeouts (seconds). Pure: no aya, no I/O.

pub mod parse;

use std::{collections::HashMap, net::IpAddr};

use lazaret_abi::*;

use crate::policy::classify::{
    classify_indexed, Decision, DeviceStates, FlowHint, IpDesc, MapIndex, PacketKind,
};
use parse::{Frag, Parsed};

/// A flow entry, as `FlowValue` keeps it (minus timestamps).
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
}

/// Normalized 5-tuple (`FlowKey`): the lower endpoint first.
type Key = (u8, (IpAddr, u16), (IpAddr, u16));

fn key(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> (Key, bool) {
    // The datapath compares the 16-byte address arrays (IPv4 in the first four bytes),
    // then the port: the same order as comparing these byte arrays.
    let bytes = |a: &IpAddr| -> [u8; 16] {
        match a {
            IpAddr::V4(v4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                b
            }
            IpAddr::V6(v6) => v6.octets(),
        }
    };
    let src_is_a = (bytes(&src.0), src.1) <= (bytes(&dst.0), dst.1);
    if src_is_a {
        ((proto, src, dst), true)
    } else {
        ((proto, dst, src), false)
    }
}

/// The stateful twin of the datapath.
#[derive(Debug)]
pub struct Model {
    index: MapIndex,
    pub states: DeviceStates,
    flows: HashMap<Key, Flow>,
    /// Fragment trains: (src, dst, id, proto) → reason of the first fragment.
    frags: HashMap<(IpAddr, IpAddr, u32, u8), Reason>,
}

impl Model {
    pub fn new(index: MapIndex) -> Self {
        Model {
            index,
            states: DeviceStates::default(),
            flows: HashMap::new(),
            frags: HashMap::new(),
        }
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
            return classify_indexed(&self.index, &self.states, &p.desc);
        };
        // Identity, rogue servers, unmanaged traffic and NDP come first in the datapath;
        // probing the classifier with "no flow" yields exactly those verdicts when they
        // apply. A probe reaching the policy stage means identity passed.
        let probe = classify_indexed(&self.index, &self.states, &p.desc);
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
                Some(r) if r.passes() => Decision::dev(r, dev),
                _ => Decision::dev(Reason::DenyFragment, dev),
            };
        }
        if let Some(q) = p.quoted {
            let (k, _) = key(q.proto, (q.src, q.sport), (q.dst, q.dport));
            return match self.flows.get(&k) {
                Some(f) => {
                    let mut d = Decision::dev(Reason::AllowFlow, dev);
                    d.rule = Some(f.rule);
                    d
                }
                None => Decision::dev(Reason::DenyNoFlow, dev),
            };
        }
        let d = self.judge_flow(&p, &ip);
        if p.frag == Frag::First {
            self.frags
                .insert((ip.src, ip.dst, p.frag_id, ip.proto), d.reason);
        }
        d
    }

    fn judge_flow(&mut self, p: &Parsed, ip: &IpDesc) -> Decision {
        let (k, src_is_a) = key(ip.proto, (ip.src, ip.sport), (ip.dst, ip.dport));
        let generation = self.index.site().generation;
        let hint = match self.flows.get(&k) {
            None => FlowHint::None,
            Some(f) => {
                let current = f.generation == generation
                    && f.epoch_a == self.epoch(f.dev_a)
                    && f.epoch_b == self.epoch(f.dev_b);
                if current {
                    FlowHint::Current { rule: f.rule }
                } else {
                    FlowHint::Stale {
                        initiator_is_src: f.a_initiated == src_is_a,
                    }
                }
            }
        };
        let mut desc = p.desc;
        desc.flow = hint;
        let d = classify_indexed(&self.index, &self.states, &desc);
        match hint {
            FlowHint::Current { .. } => {}
            FlowHint::Stale { initiator_is_src } => {
                if d.passes() {
                    let (src_dev, dst_dev) = self.ends(p, ip);
                    let a_initiated = initiator_is_src == src_is_a;
                    self.stamp(k, src_is_a, src_dev, dst_dev, &d, a_initiated);
                } else {
                    self.flows.remove(&k);
                }
            }
            FlowHint::None => {
                if d.passes() && ip.initiating() && !matches!(d.reason, Reason::AllowFlow) {
                    let (src_dev, dst_dev) = self.ends(p, ip);
                    self.stamp(k, src_is_a, src_dev, dst_dev, &d, src_is_a);
                }
            }
        }
        d
    }

    /// Managed devices at the packet's two ends, as the datapath finds them once identity
    /// has passed: a device-side source by its address, or by its MAC when the address is
    /// unspecified, link-local or not bound; everything else by address.
    fn ends(&self, p: &Parsed, ip: &IpDesc) -> (u64, u64) {
        let by_ip = |a: IpAddr| self.index.device_by_ip(a).map_or(0, |d| d.id);
        let src = if p.desc.side == SIDE_DEVICES {
            let unspecified = crate::policy::classify::unspecified_or_link_local(ip.src);
            let by_addr = if unspecified { 0 } else { by_ip(ip.src) };
            if by_addr != 0 {
                by_addr
            } else {
                self.index.lookup_mac(&p.desc.src_mac).unwrap_or(0)
            }
        } else {
            by_ip(ip.src)
        };
        (src, by_ip(ip.dst))
    }

    fn stamp(
        &mut self,
        k: Key,
        src_is_a: bool,
        src_dev: u64,
        dst_dev: u64,
        d: &Decision,
        a_initiated: bool,
    ) {
        let (dev_a, dev_b) = if src_is_a {
            (src_dev, dst_dev)
        } else {
            (dst_dev, src_dev)
        };
        let flow = Flow {
            generation: self.index.site().generation,
            dev_a,
            dev_b,
            epoch_a: self.epoch(dev_a),
            epoch_b: self.epoch(dev_b),
            rule: d.rule.unwrap_or(NO_RULE),
            a_initiated,
        };
        self.flows.insert(k, flow);
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
