//! `lazaret learn export`: turns the flows learned for a device (or every device of a class)
//! into a proposed workflow file that reads like a hand-written one and passes
//! `lazaret check` once placed in the policy directory.
//!
//! Peers are folded into the inventory's names: an address inside a role becomes
//! `role:NAME` (the most specific role wins), the address of a managed device becomes
//! `device:ID`, anything else stays an address. Ports of the same peer, protocol and
//! direction are collected into one rule, and rules that differ only by peer share one
//! rule with a list of peers. Each rule carries a comment with what was seen. Pure: the
//! caller reads the policy and the learned flows.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write,
    net::IpAddr,
};

use super::learn::{Initiator, Learned, LearnedFlow};
use crate::policy::model::{PeerSel, Policy, Proto};

/// Whose flows to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Device(String),
    Class(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("no device {0:?} in the policy")]
    NoDevice(String),
    #[error("no class {0:?} in the policy")]
    NoClass(String),
    #[error("nothing learned for {0} yet: put it in `mode = \"learn\"` and let it work (the daemon records its flows in the state directory)")]
    NothingLearned(String),
}

/// The peer selector an address folds into.
fn fold_peer(policy: &Policy, addr: IpAddr) -> String {
    let role = policy
        .roles
        .values()
        .flat_map(|r| r.addresses.iter().map(move |n| (n, &r.name)))
        .filter(|(net, _)| net.contains(&addr))
        .max_by(|(a, an), (b, bn)| a.prefix_len().cmp(&b.prefix_len()).then(bn.cmp(an)));
    if let Some((_, name)) = role {
        return PeerSel::Role(name.clone()).to_string();
    }
    if let Some(d) = policy
        .devices
        .iter()
        .find(|d| d.addresses().any(|a| a == addr))
    {
        return PeerSel::Device(d.id.clone()).to_string();
    }
    addr.to_string()
}

/// Consecutive ports as ranges: `[21, "1024-1030"]`.
fn ports_toml(ports: &BTreeSet<u16>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = ports.iter().copied().peekable();
    while let Some(lo) = iter.next() {
        let mut hi = lo;
        while iter.peek() == Some(&(hi.wrapping_add(1))) && hi < u16::MAX {
            hi += 1;
            iter.next();
        }
        out.push(if lo == hi {
            lo.to_string()
        } else {
            format!("\"{lo}-{hi}\"")
        });
    }
    format!("[{}]", out.join(", "))
}

fn flows_text(n: u64) -> String {
    if n == 1 {
        "1 flow".into()
    } else {
        format!("{n} flows")
    }
}

fn date(unix: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(unix).unwrap_or(0), 0).map_or_else(
        || unix.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// What was seen for one rule.
#[derive(Default)]
struct Seen {
    flows: u64,
    first: u64,
    last: u64,
}

impl Seen {
    fn add(&mut self, f: &LearnedFlow) {
        self.merge(&Seen {
            flows: f.count,
            first: f.first_seen,
            last: f.last_seen,
        });
    }

    fn merge(&mut self, o: &Seen) {
        self.first = if self.flows == 0 {
            o.first
        } else {
            self.first.min(o.first)
        };
        self.flows += o.flows;
        self.last = self.last.max(o.last);
    }
}

/// What a rule allows besides its peers: who opens, protocol, ports.
type Service = (Initiator, u8, Vec<u16>);

/// The proposed workflow file. `name` is the workflow's name (default `learned-<target>`).
pub fn propose(
    policy: &Policy,
    learned: &Learned,
    target: &Target,
    name: Option<&str>,
) -> Result<String, ProposeError> {
    let (devices, end, what): (Vec<&str>, Option<String>, String) = match target {
        Target::Device(id) => {
            let d = policy
                .devices
                .iter()
                .find(|d| d.id == *id)
                .ok_or_else(|| ProposeError::NoDevice(id.clone()))?;
            let class = d
                .class
                .as_deref()
                .map_or(String::new(), |c| format!(" (class {c})"));
            (
                vec![d.id.as_str()],
                Some(format!("device:{id}")),
                format!("device {id}{class}"),
            )
        }
        Target::Class(c) => {
            if !policy.classes.contains_key(c) {
                return Err(ProposeError::NoClass(c.clone()));
            }
            let ids = policy
                .devices
                .iter()
                .filter(|d| d.class.as_deref() == Some(c.as_str()))
                .map(|d| d.id.as_str())
                .collect();
            (ids, Some(format!("class:{c}")), format!("class {c}"))
        }
    };
    let flows: Vec<&LearnedFlow> = devices
        .iter()
        .filter_map(|d| learned.devices.get(*d))
        .flat_map(|d| d.flows.values())
        .collect();
    if flows.is_empty() {
        return Err(ProposeError::NothingLearned(what));
    }
    let default_name = match target {
        Target::Device(id) | Target::Class(id) => format!("learned-{id}"),
    };
    let name = name.unwrap_or(&default_name);

    // (initiator, proto, peer) → ports and what was seen.
    let mut by_peer: BTreeMap<(Initiator, u8, String), (BTreeSet<u16>, Seen)> = BTreeMap::new();
    for f in &flows {
        let e = by_peer
            .entry((f.initiator, f.proto, fold_peer(policy, f.peer)))
            .or_default();
        if Proto::from_number(f.proto).has_ports() {
            e.0.insert(f.port);
        }
        e.1.add(f);
    }
    // (initiator, proto, ports) → peers: peers with the same service share a rule.
    let mut rules: BTreeMap<Service, (Vec<String>, Seen)> = BTreeMap::new();
    for ((initiator, proto, peer), (ports, seen)) in by_peer {
        let e = rules
            .entry((initiator, proto, ports.into_iter().collect()))
            .or_default();
        e.0.push(peer);
        e.1.merge(&seen);
    }

    let total: u64 = flows.iter().map(|f| f.count).sum();
    let first = flows.iter().map(|f| f.first_seen).min().unwrap_or(0);
    let last = flows.iter().map(|f| f.last_seen).max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Proposed by `lazaret learn export` from {} of {what} in learn mode,\n\
         # seen from {} to {}.\n\
         # Review every rule: it allows what the device did, nothing more and nothing less.\n\
         # Then put this file in the policy directory and set the device (or class) back to\n\
         # `mode = \"enforce\"`.\n",
        flows_text(total),
        date(first),
        date(last)
    );
    let _ = writeln!(out, "[workflows.{name}]");
    let _ = writeln!(
        out,
        "description = \"Learned from {what}, {} to {}\"",
        date(first),
        date(last)
    );
    for ((initiator, proto, ports), (peers, seen)) in rules {
        let proto = Proto::from_number(proto);
        let _ = writeln!(out, "\n[[workflows.{name}.rules]]");
        let _ = writeln!(
            out,
            "# {} opened by the {}, first {}, last {}.",
            flows_text(seen.flows),
            initiator.name(),
            date(seen.first),
            date(seen.last)
        );
        if let Some(end) = &end {
            let _ = writeln!(out, "device = \"{end}\"");
        }
        let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
        if peers.len() == 1 {
            let _ = writeln!(out, "peer = {}", peers[0]);
        } else {
            let _ = writeln!(out, "peer = [{}]", peers.join(", "));
        }
        let proto_text = match proto {
            Proto::Number(n) => n.to_string(),
            p => format!("\"{p}\""),
        };
        let _ = writeln!(out, "proto = {proto_text}");
        if !ports.is_empty() {
            let _ = writeln!(out, "ports = {}", ports_toml(&ports.into_iter().collect()));
        }
        let _ = writeln!(out, "initiator = \"{}\"", initiator.name());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_sources, SourceFile};

    const SITE: &str = r#"
[site]
name = "learn"
[site.essentials]
dhcp = false
dns = false
ntp = false
[roles.pump-server]
description = "Pump server"
addresses = ["10.10.3.0/24"]
[roles.pump-server-primary]
description = "The primary pump server"
addresses = ["10.10.3.10"]
[classes.infusion-pump]
description = "Pumps"
workflows = []
[[devices]]
id = "pump-01"
class = "infusion-pump"
ipv4 = "10.20.0.11"
MODE
[[devices]]
id = "pump-02"
class = "infusion-pump"
ipv4 = "10.20.0.12"
"#;

    fn flow(initiator: Initiator, proto: u8, peer: &str, port: u16, count: u64) -> LearnedFlow {
        LearnedFlow {
            initiator,
            proto,
            peer: peer.parse().expect("address"),
            port,
            count,
            first_seen: 1_790_000_000,
            last_seen: 1_790_086_400,
        }
    }

    fn learned() -> Learned {
        let mut l = Learned::default();
        let d = l.devices.entry("pump-01".into()).or_default();
        for (i, f) in [
            flow(Initiator::Device, 6, "10.10.3.10", 2575, 40),
            flow(Initiator::Device, 6, "10.10.3.10", 443, 3),
            flow(Initiator::Device, 6, "10.10.3.11", 2575, 1),
            flow(Initiator::Device, 6, "10.20.0.12", 2575, 2),
            flow(Initiator::Peer, 17, "10.99.0.5", 161, 7),
            flow(Initiator::Device, 1, "10.10.3.10", 0, 1),
        ]
        .into_iter()
        .enumerate()
        {
            d.flows.insert(i.to_string(), f);
        }
        l
    }

    fn policy(mode: &str) -> Policy {
        parse_sources(vec![SourceFile::new(
            "site.toml".into(),
            SITE.replace("MODE", mode),
        )])
        .expect("valid policy")
    }

    #[test]
    fn a_device_export_folds_peers_and_passes_check() {
        let p = policy("mode = \"learn\"");
        let text =
            propose(&p, &learned(), &Target::Device("pump-01".into()), None).expect("proposal");
        // The most specific role, another managed device, and a bare address.
        assert!(
            text.contains(
                "peer = \"role:pump-server-primary\"\nproto = \"tcp\"\nports = [443, 2575]"
            ),
            "{text}"
        );
        assert!(
            text.contains("peer = [\"device:pump-02\", \"role:pump-server\"]"),
            "{text}"
        );
        assert!(
            text.contains(
                "peer = \"10.99.0.5\"\nproto = \"udp\"\nports = [161]\ninitiator = \"peer\""
            ),
            "{text}"
        );
        assert!(
            text.contains("proto = \"icmp\"\ninitiator = \"device\""),
            "{text}"
        );
        assert!(text.contains("# 43 flows opened by the device"), "{text}");
        // Passes validation next to the policy it came from, with the device enforcing.
        let enforced = parse_sources(vec![
            SourceFile::new("site.toml".into(), SITE.replace("MODE", "")),
            SourceFile::new("learned.toml".into(), text.clone()),
        ]);
        assert!(
            enforced.is_ok(),
            "{text}\n{:?}",
            enforced.err().map(|e| e.render())
        );
    }

    #[test]
    fn a_class_export_and_errors() {
        let p = policy("");
        let text = propose(
            &p,
            &learned(),
            &Target::Class("infusion-pump".into()),
            Some("pump-flows"),
        )
        .expect("proposal");
        assert!(text.contains("[workflows.pump-flows]"), "{text}");
        assert!(text.contains("device = \"class:infusion-pump\""), "{text}");
        assert_eq!(
            propose(
                &p,
                &Learned::default(),
                &Target::Device("pump-02".into()),
                None
            ),
            Err(ProposeError::NothingLearned(
                "device pump-02 (class infusion-pump)".into()
            ))
        );
        assert!(matches!(
            propose(&p, &learned(), &Target::Class("nope".into()), None),
            Err(ProposeError::NoClass(_))
        ));
    }

    #[test]
    fn ports_fold_into_ranges() {
        let p: BTreeSet<u16> = [22, 2575, 1024, 1025, 1026].into_iter().collect();
        assert_eq!(ports_toml(&p), "[22, \"1024-1026\", 2575]");
        assert_eq!(ports_toml(&[65535].into_iter().collect()), "[65535]");
    }
}
