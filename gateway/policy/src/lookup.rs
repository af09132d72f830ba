//! The two-stage lookup structure, built from compiled policies: once as dataplane-neutral
//! prefixes and ranges ([`Ranges`], what nftables renders), and from those, as the XDP
//! maps' longest-prefix-match entries described below.
//!
//! Stage 1, per (policy, direction, family): every distinct peer prefix P of the policy's
//! entries becomes an LPM entry whose *peer class* holds every entry whose prefix contains P.
//! The prefixes containing an address form a chain, so the longest match sees every entry
//! that applies to the address. Identical class contents share one class id.
//!
//! Stage 2, per class: (protocol, port) → the winning rule, as LPM entries over
//! `PortKey`: protocol `any` at `PORT_KEY_CLASS_BITS`, a whole protocol at
//! `PORT_KEY_PROTO_BITS`, port ranges as maximal aligned power-of-two blocks below it.
//! Among the entries matching a packet the winner is the first of: a non-audit entry before
//! an audit one, then the lowest rule id. Every level is compiled with that winner, so the
//! longest prefix the datapath finds always reports it. Pure.

use super::compiled::{CompiledPolicy, Dir};
use super::interner::FxMap;
use super::model::{PortRange, Proto};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use lazaret_abi as abi;
use std::collections::{BTreeMap, BTreeSet};

/// A stage-1 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PeerEntry<N> {
    pub policy: u32,
    /// `DIR_*`.
    pub dir: u8,
    pub net: N,
    pub class: u32,
}

/// A stage-2 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PortEntry {
    pub class: u32,
    pub proto: u8,
    pub port: u16,
    /// LPM prefix length over `PortKey`.
    pub prefix_len: u32,
    pub rule: u32,
    /// `RULE_F_*`.
    pub flags: u32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Lookup {
    pub peer4: Vec<PeerEntry<Ipv4Net>>,
    pub peer6: Vec<PeerEntry<Ipv6Net>>,
    pub ports: Vec<PortEntry>,
    /// Number of distinct peer classes.
    pub classes: usize,
    /// These entries as map contents, per slot, built on first use and shared by every
    /// compile patched from this one (see [`super::maps::LookupMaps`]).
    pub maps: super::maps::LookupMaps,
    /// The same lookup as prefixes and ranges, for dataplanes that do not match longest
    /// prefixes (see [`Ranges`]).
    pub ranges: std::sync::Arc<Ranges>,
    /// Which addresses a device may own by first use ([`claims`]): (scope, prefix, class).
    pub claim4: Vec<(u32, Ipv4Net, u32)>,
    pub claim6: Vec<(u32, Ipv6Net, u32)>,
    /// The same for each gateway of a fleet, by name: only the interfaces it serves count
    /// as the devices' (see `Compiled::for_gateway`).
    pub claims_of_gateway: BTreeMap<String, GatewayClaims>,
}

/// A fleet gateway's [`claims`], and the lookup it sees: this one with those claims, built
/// once (on the first view of the gateway) and shared by every compile patched from this
/// one, so that its map lists are too (the loader skips a list the slot already holds).
#[derive(Clone, Debug, Default)]
pub(crate) struct GatewayClaims {
    pub claims: Claims,
    pub view: std::sync::OnceLock<std::sync::Arc<Lookup>>,
}

/// Prefixes per family, each with the claim scope it is of (`DIR_CLAIM` entries' policy)
/// and whether its addresses may be owned by first use (`CLAIM_*`).
pub(crate) type Claims = (Vec<(u32, Ipv4Net, u32)>, Vec<(u32, Ipv6Net, u32)>);

/// Which addresses a device known by its MAC alone may own by first use, as prefixes whose
/// longest match decides (`lazaret_abi`, *Addresses owned by first use*), in two kinds of
/// scope. Site-wide (`CLAIM_POLICY`, where owners are looked up as destinations): the
/// networks of the devices-side interfaces may be owned (`CLAIM_DEVICES`); those of the
/// upstream interfaces not (`CLAIM_NO`; an upstream network that is also a devices-side
/// one is upstream); link-local addresses may (a device makes its own); everything else
/// may not, unless a devices-side interface declares no networks, or none declares one of
/// the family (or the site declares no devices-side interface): then everything outside
/// the upstream networks may (`CLAIM_ANY`). And per devices-side interface
/// (`abi::claim_scope` of its name: what devices behind it may claim): the same with only
/// that interface's networks the devices', the other devices-side interfaces' not to be
/// owned (its own wins where both declare a network), and `0/0` not to be owned unless the
/// interface declares no networks or no interface declares one of the family, so that
/// every such scope has an entry. So what an interface's devices may own, the site-wide
/// entries let them own too (the owners they find as destinations). A devices-side
/// interface that `serves` says is another gateway's counts as upstream (also where one
/// served declares the same network), in every scope.
pub(crate) fn claims<'a>(
    interfaces: impl IntoIterator<Item = &'a super::model::Interface>,
    serves: impl Fn(&str) -> bool,
) -> Claims {
    use super::model::Side;
    let interfaces: Vec<&super::model::Interface> = interfaces.into_iter().collect();
    let mut out = Claims::default();
    scope_claims(&interfaces, &serves, None, &mut out);
    // Interfaces whose names fold to one scope share it (`abi::claim_scope`).
    let mut scopes: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for i in &interfaces {
        if i.side == Side::Devices && serves(&i.name) {
            let scope = abi::claim_scope(i.name.as_bytes());
            scopes.entry(scope).or_default().push(&i.name);
        }
    }
    for (scope, own) in scopes {
        scope_claims(&interfaces, &serves, Some((scope, &own)), &mut out);
    }
    out
}

/// One scope's entries of [`claims`]: site-wide (`own` none), or of the interfaces `own`
/// names.
fn scope_claims(
    interfaces: &[&super::model::Interface],
    serves: &impl Fn(&str) -> bool,
    own: Option<(u16, &[&str])>,
    out: &mut Claims,
) {
    use super::model::Side;
    use abi::{CLAIM_ANY, CLAIM_DEVICES, CLAIM_NO, CLAIM_POLICY};
    // Per prefix, the strongest claim on it: an upstream network's (no), another gateway's
    // devices' (no: its devices are not in this gateway's maps, so their bound addresses
    // would be anyone's here), the scope's own devices' (yes), another devices-side
    // interface's of this gateway (no).
    const UPSTREAM: u8 = 4;
    const OTHERS: u8 = 3;
    const OWN: u8 = 2;
    const SIBLING: u8 = 1;
    let mut ranks: BTreeMap<IpNet, u8> = BTreeMap::new();
    // Everything of a family not another's is the scope's where one of its interfaces
    // declares no networks, or no served devices-side interface declares one of the family
    // (or there is none).
    let (mut devices_side, mut undeclared) = (false, false);
    let mut declared = [false; 2];
    for i in interfaces {
        if i.side == Side::Devices && serves(&i.name) {
            devices_side = true;
            for n in &i.networks {
                declared[usize::from(n.addr().is_ipv6())] = true;
            }
        }
        let rank = match i.side {
            Side::Upstream => UPSTREAM,
            Side::Devices if !serves(&i.name) => OTHERS,
            Side::Devices if own.is_some_and(|(_, o)| !o.contains(&i.name.as_str())) => SIBLING,
            Side::Devices => {
                undeclared |= i.networks.is_empty();
                OWN
            }
        };
        for n in &i.networks {
            let r = ranks.entry(n.trunc()).or_insert(rank);
            *r = (*r).max(rank);
        }
    }
    let mut nets: BTreeMap<IpNet, u32> = ranks
        .into_iter()
        .map(|(n, r)| (n, if r == OWN { CLAIM_DEVICES } else { CLAIM_NO }))
        .collect();
    let everything = declared.map(|d| !devices_side || undeclared || !d);
    let link_local: [(IpNet, u32); 2] = [
        ("169.254.0.0/16".parse().expect("literal"), CLAIM_DEVICES),
        ("fe80::/10".parse().expect("literal"), CLAIM_DEVICES),
    ];
    for (n, v) in link_local {
        nets.entry(n).or_insert(v);
    }
    for (open, n) in everything.into_iter().zip(["0.0.0.0/0", "::/0"]) {
        let class = if open { CLAIM_ANY } else { CLAIM_NO };
        if open || own.is_some() {
            nets.entry(n.parse().expect("literal")).or_insert(class);
        }
    }
    let scope = own.map_or(CLAIM_POLICY, |(s, _)| u32::from(s));
    for (n, v) in nets {
        match n {
            IpNet::V4(n) => out.0.push((scope, n, v)),
            IpNet::V6(n) => out.1.push((scope, n, v)),
        }
    }
}

/// The compiled policy's two stages, dataplane-neutral: the XDP maps encode them as
/// longest-prefix-match entries (aligned port blocks, slot-stamped keys, see
/// [`super::maps`]); nftables renders them as interval sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges {
    /// Stage 1: for each (policy, `DIR_*`), every peer prefix with its peer class. Prefixes
    /// nest; an address belongs to the class of the longest prefix containing it.
    pub peer4: Vec<(u32, u8, Ipv4Net, u32)>,
    pub peer6: Vec<(u32, u8, Ipv6Net, u32)>,
    /// Stage 2: what each peer class admits. A flow is admitted when any entry of its peer
    /// class matches it.
    pub ports: Vec<Admits>,
}

/// One stage-2 entry of [`Ranges`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Admits {
    pub class: u32,
    /// `None`: any protocol, every port.
    pub proto: Option<u8>,
    /// `None`: every port of the protocol; else an inclusive range.
    pub ports: Option<(u16, u16)>,
    /// The rule it comes from, and whether that rule only audits: where entries overlap,
    /// the flow is reported under the first of a non-audit rule, then the lowest id.
    pub rule: u32,
    pub audit: bool,
}

/// What a peer class holds: (protocol, ports, rule, audit).
type Item = (Proto, Option<PortRange>, u32, bool);

/// A protocol's whole-protocol winner and its port ranges (inclusive, as u32).
type ProtoItems = (Option<Rank>, Vec<(u32, u32, Rank)>);

/// Rank of a matching rule: lower wins (enforce before audit, then lower rule id).
type Rank = (bool, u32);

fn best(a: Option<Rank>, b: Option<Rank>) -> Option<Rank> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

pub(super) fn build(policies: &[CompiledPolicy]) -> Lookup {
    // Per policy, in parallel: every peer prefix and the contents of its class.
    let per_policy = super::par::map(policies, contents);
    // Sequential interning in policy order keeps class ids deterministic.
    let mut out = Lookup::default();
    let mut classes: FxMap<&[Item], u32> = FxMap::default();
    let mut fresh: Vec<(u32, &[Item])> = Vec::new();
    for (p, list) in policies.iter().zip(&per_policy) {
        for (dir, net, content) in list {
            let next = classes.len() as u32;
            let class = *classes.entry(content.as_slice()).or_insert_with(|| {
                fresh.push((next, content.as_slice()));
                next
            });
            match net {
                IpNet::V4(n) => out.peer4.push(PeerEntry {
                    policy: p.id,
                    dir: *dir,
                    net: *n,
                    class,
                }),
                IpNet::V6(n) => out.peer6.push(PeerEntry {
                    policy: p.id,
                    dir: *dir,
                    net: *n,
                    class,
                }),
            }
        }
    }
    out.classes = classes.len();
    let mut ranges = Ranges {
        peer4: out
            .peer4
            .iter()
            .map(|e| (e.policy, e.dir, e.net, e.class))
            .collect(),
        peer6: out
            .peer6
            .iter()
            .map(|e| (e.policy, e.dir, e.net, e.class))
            .collect(),
        ports: Vec::new(),
    };
    for (class, items) in &fresh {
        for (proto, ports, rule, audit) in *items {
            let proto = proto.number();
            ranges.ports.push(Admits {
                class: *class,
                proto,
                ports: ports.filter(|_| proto.is_some()).map(|r| (r.lo, r.hi)),
                rule: *rule,
                audit: *audit,
            });
        }
    }
    ranges.ports.sort_unstable();
    ranges.ports.dedup();
    // The XDP back end of stage 2: each class's entries as longest-prefix-match blocks.
    let by_class: Vec<&[Admits]> = ranges.ports.chunk_by(|a, b| a.class == b.class).collect();
    out.ports = super::par::map(&by_class, |admits| {
        let mut v = Vec::new();
        port_entries(admits, &mut v);
        v
    })
    .into_iter()
    .flatten()
    .collect();
    out.ranges = std::sync::Arc::new(ranges);
    out
}

/// The peer prefixes of one policy, each with its class contents: the items of every entry
/// whose prefix contains it.
fn contents(p: &CompiledPolicy) -> Vec<(u8, IpNet, Vec<Item>)> {
    let mut out = Vec::new();
    for dir in [Dir::DeviceInit, Dir::PeerInit] {
        let mut by_prefix: BTreeMap<IpNet, Vec<Item>> = BTreeMap::new();
        for e in p.entries.iter().filter(|e| e.dir == dir) {
            by_prefix
                .entry(e.peer)
                .or_default()
                .push((e.proto, e.ports, e.rule, e.audit));
        }
        let lengths: BTreeSet<(bool, u8)> = by_prefix
            .keys()
            .map(|n| (matches!(n, IpNet::V6(_)), n.prefix_len()))
            .collect();
        for net in by_prefix.keys() {
            let v6 = matches!(net, IpNet::V6(_));
            let mut content: Vec<Item> = Vec::new();
            for (_, len) in lengths
                .iter()
                .filter(|(f, l)| *f == v6 && *l <= net.prefix_len())
            {
                if let Ok(anc) = IpNet::new(net.addr(), *len) {
                    if let Some(items) = by_prefix.get(&anc.trunc()) {
                        content.extend_from_slice(items);
                    }
                }
            }
            content.sort_unstable();
            content.dedup();
            out.push((dir.abi(), *net, content));
        }
    }
    out
}

fn flags(rank: Rank) -> u32 {
    if rank.0 {
        abi::RULE_F_AUDIT
    } else {
        0
    }
}

/// Stage-2 entries of one class (`admits`: that class's entries).
fn port_entries(admits: &[Admits], out: &mut Vec<PortEntry>) {
    let Some(class) = admits.first().map(|a| a.class) else {
        return;
    };
    let any = admits
        .iter()
        .filter(|a| a.proto.is_none())
        .map(|a| (a.audit, a.rule))
        .min();
    if let Some(r) = any {
        out.push(PortEntry {
            class,
            proto: 0,
            port: 0,
            prefix_len: abi::PORT_KEY_CLASS_BITS,
            rule: r.1,
            flags: flags(r),
        });
    }
    let mut by_proto: BTreeMap<u8, ProtoItems> = BTreeMap::new();
    for a in admits {
        let Some(n) = a.proto else { continue };
        let e = by_proto.entry(n).or_default();
        match a.ports {
            None => e.0 = best(e.0, Some((a.audit, a.rule))),
            Some((lo, hi)) => e.1.push((u32::from(lo), u32::from(hi), (a.audit, a.rule))),
        }
    }
    for (proto, (whole, ranges)) in by_proto {
        let fallback = best(any, whole);
        if fallback != any {
            if let Some(r) = fallback {
                out.push(PortEntry {
                    class,
                    proto,
                    port: 0,
                    prefix_len: abi::PORT_KEY_PROTO_BITS,
                    rule: r.1,
                    flags: flags(r),
                });
            }
        }
        for (lo, hi, rank) in segments(&ranges, fallback) {
            blocks(lo, hi, |port, bits| {
                out.push(PortEntry {
                    class,
                    proto,
                    port,
                    prefix_len: abi::PORT_KEY_PROTO_BITS + bits,
                    rule: rank.1,
                    flags: flags(rank),
                });
            });
        }
    }
}

/// Disjoint port segments whose winner differs from `fallback` (what a lookup finds when no
/// port entry matches), adjacent segments with the same winner merged.
fn segments(ranges: &[(u32, u32, Rank)], fallback: Option<Rank>) -> Vec<(u32, u32, Rank)> {
    let mut events: Vec<(u32, bool, Rank)> = Vec::with_capacity(ranges.len() * 2);
    for (lo, hi, rank) in ranges {
        events.push((*lo, true, *rank));
        events.push((hi + 1, false, *rank));
    }
    events.sort_unstable();
    let mut active: BTreeMap<Rank, u32> = BTreeMap::new();
    let mut out: Vec<(u32, u32, Rank)> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let Some(&(pos, _, _)) = events.get(i) else {
            break;
        };
        while let Some(&(p, start, rank)) = events.get(i) {
            if p != pos {
                break;
            }
            if start {
                *active.entry(rank).or_insert(0) += 1;
            } else if let Some(c) = active.get_mut(&rank) {
                *c -= 1;
                if *c == 0 {
                    active.remove(&rank);
                }
            }
            i += 1;
        }
        let Some(&(next, _, _)) = events.get(i) else {
            break;
        };
        let winner = best(fallback, active.keys().next().copied());
        if let Some(w) = winner.filter(|w| Some(*w) != fallback) {
            match out.last_mut() {
                Some(last) if last.1 + 1 == pos && last.2 == w => last.1 = next - 1,
                _ => out.push((pos, next - 1, w)),
            }
        }
    }
    out
}

/// Splits `[lo, hi]` into maximal aligned power-of-two blocks: `emit(start, prefix bits)`.
pub(super) fn blocks(mut lo: u32, hi: u32, mut emit: impl FnMut(u16, u32)) {
    while lo <= hi {
        let mut k = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while lo + (1 << k) - 1 > hi {
            k -= 1;
        }
        emit(lo as u16, 16 - k);
        lo += 1 << k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(lo: u32, hi: u32) -> Vec<(u16, u32)> {
        let mut v = Vec::new();
        blocks(lo, hi, |p, b| v.push((p, b)));
        v
    }

    #[test]
    fn blocks_are_maximal_and_aligned() {
        assert_eq!(collect(0, 65535), vec![(0, 0)]);
        assert_eq!(collect(2575, 2575), vec![(2575, 16)]);
        assert_eq!(collect(1024, 2047), vec![(1024, 6)]);
        assert_eq!(collect(5, 10), vec![(5, 16), (6, 15), (8, 15), (10, 16)]);
        assert_eq!(collect(65535, 65535), vec![(65535, 16)]);
    }

    #[test]
    fn overlapping_ranges_resolve_to_the_best_rank() {
        let r = [(100, 200, (false, 5)), (150, 300, (false, 2))];
        assert_eq!(
            segments(&r, None),
            vec![(100, 149, (false, 5)), (150, 300, (false, 2))]
        );
        // A whole-protocol rule of a better rank swallows the ranges.
        assert_eq!(segments(&r, Some((false, 1))), vec![]);
        // An audit fallback loses to enforce ranges.
        assert_eq!(
            segments(&r, Some((true, 0))),
            vec![(100, 149, (false, 5)), (150, 300, (false, 2))]
        );
    }
}
