//! The compiler's checks of a policy that compiles: datapath capacities, rules shadowed by
//! others of their workflow, rules whose protocol cannot match their peers' family.

use super::compile::{host, Resolved};
use super::compiled::Stats;
use super::diag::{Diagnostic, Problem};
use super::model::*;
use ipnet::IpNet;
use lazaret_abi as abi;
use std::collections::BTreeMap;

/// The datapath capacities `s` exceeds, as errors.
pub(crate) fn capacity_problems(s: &Stats) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    // Rule ids index the per-rule hit counters: that map bounds them.
    let checks: [(&'static str, &'static str, usize, u32); 8] = [
        ("devices", abi::MAP_DEVICES, s.devices, abi::MAX_DEVICES),
        (
            "MAC bindings",
            abi::MAP_DEV_MAC,
            s.dev_mac,
            abi::MAX_DEVICES,
        ),
        (
            "IPv4 device addresses",
            abi::MAP_DEV_IP4,
            s.dev_ip4,
            abi::MAX_DEVICE_ADDRS,
        ),
        (
            "IPv6 device addresses",
            abi::MAP_DEV_IP6,
            s.dev_ip6,
            abi::MAX_DEVICE_ADDRS,
        ),
        (
            "compiled rules",
            abi::MAP_RULE_HITS,
            s.rules,
            abi::MAX_RULES,
        ),
        (
            "IPv4 peer entries",
            abi::MAP_PEER4,
            s.peer4,
            abi::MAX_PEER_ENTRIES,
        ),
        (
            "IPv6 peer entries",
            abi::MAP_PEER6,
            s.peer6,
            abi::MAX_PEER_ENTRIES,
        ),
        (
            "port entries",
            abi::MAP_PORTS,
            s.ports,
            abi::MAX_PORT_ENTRIES,
        ),
    ];
    for (what, map, count, max) in checks {
        if count > max as usize {
            out.push(Diagnostic::new(
                Problem::Capacity {
                    what,
                    map,
                    count: count as u64,
                    max: u64::from(max),
                },
                None,
            ));
        }
    }
    out
}

/// Rules that allow nothing another rule of the same workflow does not already allow.
pub(crate) fn shadowing(policy: &Policy, resolved: &[Resolved<'_>]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    /// Pairwise check; bigger workflows are skipped (a generated policy, not a review).
    const MAX_PAIRWISE: usize = 1000;
    let mut by_wf: BTreeMap<&str, Vec<&Resolved<'_>>> = BTreeMap::new();
    for r in resolved {
        if let Some(w) = r.workflow {
            by_wf.entry(&w.name).or_default().push(r);
        }
    }
    for (name, rules) in by_wf {
        if rules.len() > MAX_PAIRWISE {
            continue;
        }
        for (j, b) in rules.iter().enumerate() {
            let by = rules.iter().enumerate().find(|(i, a)| {
                *i != j && (covers(policy, a, b) && (!covers(policy, b, a) || *i < j))
            });
            if let Some((_, a)) = by {
                out.push(
                    Diagnostic::at(
                        Problem::ShadowedRule {
                            workflow: name.to_string(),
                            index: b.rule.index,
                            by: a.rule.index,
                        },
                        b.rule.span,
                    )
                    .note(a.rule.span, "the broader rule"),
                );
            }
        }
    }
    out
}

/// An ICMP or ICMPv6 rule none of whose peers is of that family.
pub(crate) fn proto_family_problem(rule: &Rule, nets: &[IpNet]) -> Option<Diagnostic> {
    let fam = rule.proto.family()?;
    let has = nets.iter().any(|n| Family::of(n) == fam);
    (!nets.is_empty() && !has).then(|| {
        Diagnostic::at(
            Problem::ProtoFamily {
                proto: if fam == Family::V4 { "icmp" } else { "icmpv6" },
                family: fam.name(),
            },
            rule.span,
        )
    })
}

/// A UDP rule whose every port is one the datapath refuses before any policy: a device's
/// datagram to a DHCP client's port (68, 546) or, answering a peer, from a DHCP server's
/// (67, 547) is a rogue DHCP server's on both dataplanes. Ranges that also hold other ports
/// are left alone (the rule allows those).
pub(crate) fn dhcp_port_problem(workflow: &str, rule: &Rule) -> Option<Diagnostic> {
    if rule.proto != Proto::Udp {
        return None;
    }
    let (refused, what): (&[u16], _) = match rule.initiator {
        Initiator::Device => (&[68, 546], "a device's datagrams to a DHCP client's port"),
        Initiator::Peer => (&[67, 547], "a device's answers from a DHCP server's port"),
    };
    let ports = rule.ports.as_ref()?;
    let all = !ports.is_empty()
        && ports
            .iter()
            .all(|r| r.lo == r.hi && refused.contains(&r.lo));
    all.then(|| {
        Diagnostic::at(
            Problem::DhcpPortRule {
                workflow: workflow.to_string(),
                index: rule.index,
                what,
            },
            rule.span,
        )
    })
}

/// Whether rule `a` allows everything rule `b` allows (same workflow, so same mode).
pub(crate) fn covers(policy: &Policy, a: &Resolved<'_>, b: &Resolved<'_>) -> bool {
    if a.rule.initiator != b.rule.initiator {
        return false;
    }
    if !(a.rule.proto == Proto::Any || a.rule.proto == b.rule.proto) {
        return false;
    }
    let ports_ok = match (&a.rule.ports, &b.rule.ports) {
        (None, _) => true,
        (Some(pa), None) => pa.iter().any(|r| r.covers(PortRange::ALL)),
        (Some(pa), Some(pb)) => pb.iter().all(|rb| pa.iter().any(|ra| ra.covers(*rb))),
    };
    if !ports_ok {
        return false;
    }
    if !is_subset(&b.ends, &a.ends) || !is_subset(&b.managed, &a.managed) {
        return false;
    }
    let a_nets: Vec<IpNet> = {
        let mut v = a.nets.clone();
        v.extend(
            a.managed
                .iter()
                .filter_map(|i| policy.devices.get(*i))
                .flat_map(|d| d.addresses().map(host)),
        );
        v
    };
    b.nets.iter().all(|n| a_nets.iter().any(|m| m.contains(n)))
}

pub(crate) fn is_subset(small: &[usize], big: &[usize]) -> bool {
    small.iter().all(|x| big.binary_search(x).is_ok())
}
