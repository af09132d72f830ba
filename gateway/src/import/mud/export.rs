//! `lazaret export mud`: a class's workflows as a MUD file, so a hospital can hand a
//! manufacturer what its device actually does here (a learned baseline too, once `learn
//! export` has made it a workflow).
//!
//! Each rule that applies to the class becomes a from-device and a to-device ACE (the flow
//! and its replies), with `direction-initiated` on TCP. A peer is written as the binding
//! names it when a binding entry says exactly that peer (a DNS name, a controller, an
//! abstraction), else as its prefixes (a role's addresses, with a note); a class or device
//! peer the binding does not name has no MUD form and is listed. Importing the export with
//! the same binding gives the same flows for the class.

use std::collections::BTreeMap;

use lazaret_policy::{
    model::{EndSel, Initiator, PeerSel, Proto},
    Policy,
};
use serde_json::{json, Map, Value};

use super::{Binding, MudError};

/// A MUD file and what it could not say.
#[derive(Debug)]
pub struct Exported {
    pub json: String,
    pub notes: Vec<String>,
}

/// How a MUD ACE names a peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Spec {
    Dns(String),
    Net(ipnet::IpNet),
    /// An `ietf-mud:mud` abstraction and its value (`None`: the empty type).
    Abstraction(&'static str, Option<String>),
    Any,
}

/// The binding's entries, each with the peers it stands for (sorted).
fn reverse(b: &Binding) -> Vec<(Vec<String>, Spec)> {
    let mut out = Vec::new();
    let mut push = |peers: &Vec<String>, spec: Spec| {
        let mut p = peers.clone();
        p.sort();
        out.push((p, spec));
    };
    for (name, p) in &b.names {
        push(p, Spec::Dns(name.clone()));
    }
    for (uri, p) in &b.controllers {
        push(p, Spec::Abstraction("controller", Some(uri.clone())));
    }
    if let Some(p) = &b.abstractions.my_controller {
        push(p, Spec::Abstraction("my-controller", None));
    }
    for (domain, p) in &b.manufacturers {
        push(p, Spec::Abstraction("manufacturer", Some(domain.clone())));
    }
    for (uri, p) in &b.models {
        push(p, Spec::Abstraction("model", Some(uri.clone())));
    }
    if let Some(p) = &b.abstractions.same_manufacturer {
        push(p, Spec::Abstraction("same-manufacturer", None));
    }
    if let Some(p) = &b.abstractions.local_networks {
        push(p, Spec::Abstraction("local-networks", None));
    }
    out
}

/// Writes class `class` of `policy` as a MUD file; `last_update` is its RFC 3339 time.
pub fn export(
    policy: &Policy,
    binding: &Binding,
    class: &str,
    last_update: &str,
) -> Result<Exported, MudError> {
    let c = policy
        .classes
        .get(class)
        .ok_or_else(|| MudError::Policy(format!("the policy has no class {class:?}")))?;
    let mud_url = binding.mud_url.clone().ok_or_else(|| MudError::Binding {
        path: "the binding".to_string(),
        message: "an export needs mud_url: the URL the MUD file will be served at".to_string(),
    })?;
    let devices: Vec<_> = (policy.devices.iter())
        .filter(|d| d.class.as_deref() == Some(class))
        .collect();
    let has_v6 = devices.iter().any(|d| !d.ipv6.is_empty());
    let unique = |f: &dyn Fn(&lazaret_policy::model::Device) -> &str| {
        let mut v: Vec<&str> = devices.iter().map(|d| f(d)).collect();
        v.sort_unstable();
        v.dedup();
        match v[..] {
            [one] if !one.is_empty() => Some(one.to_string()),
            _ => None,
        }
    };
    let mut notes = Vec::new();
    let rev = reverse(binding);
    // (family is v6, side is to-device) → ACEs: v4 before v6, from-device first.
    let mut aces: BTreeMap<(bool, bool), Vec<Value>> = BTreeMap::new();
    for wf_name in &c.workflows {
        let Some(wf) = policy.workflows.get(wf_name) else {
            continue;
        };
        for rule in &wf.rules {
            let here = format!("workflow {wf_name}, rule {}", rule.index);
            match &rule.ends {
                None => {}
                Some(ends) if ends.contains(&EndSel::Class(class.to_string())) => {}
                Some(ends) if ends.iter().all(|e| matches!(e, EndSel::Class(_))) => continue,
                Some(_) => {
                    notes.push(format!(
                        "{here}: for single devices; a MUD file describes a model"
                    ));
                    continue;
                }
            }
            for spec in specs(&rule.peers, &rev, policy, &here, &mut notes) {
                ace_pair(rule, &spec, has_v6, &here, &mut aces, &mut notes);
            }
        }
    }
    let name = |v6: bool, from: bool| {
        format!(
            "{class}-{}-{}",
            if v6 { "v6" } else { "v4" },
            if from { "fr" } else { "to" }
        )
    };
    let mut acl_list = Vec::new();
    let (mut from_names, mut to_names) = (Vec::new(), Vec::new());
    for ((v6, to), list) in aces {
        let from = !to;
        let n = name(v6, from);
        let entries: Vec<Value> = (list.into_iter().enumerate())
            .map(|(i, mut ace)| {
                if let Value::Object(o) = &mut ace {
                    o.insert("name".into(), json!(format!("{n}-{i}")));
                }
                ace
            })
            .collect();
        acl_list.push(json!({
            "name": n,
            "type": if v6 { "ipv6-acl-type" } else { "ipv4-acl-type" },
            "aces": { "ace": entries },
        }));
        if from {
            from_names.push(json!({ "name": n }));
        } else {
            to_names.push(json!({ "name": n }));
        }
    }
    let mut mud = Map::new();
    mud.insert("mud-version".into(), json!(1));
    mud.insert("mud-url".into(), json!(mud_url));
    mud.insert("last-update".into(), json!(last_update));
    mud.insert("cache-validity".into(), json!(48));
    mud.insert("is-supported".into(), json!(true));
    let info = if c.description.is_empty() {
        format!("lazaret class {class}")
    } else {
        c.description.clone()
    };
    mud.insert("systeminfo".into(), json!(info));
    if let Some(v) = unique(&|d| &d.inventory.vendor) {
        mud.insert("mfg-name".into(), json!(v));
    }
    if let Some(m) = unique(&|d| &d.inventory.model) {
        mud.insert("model-name".into(), json!(m));
    }
    mud.insert(
        "from-device-policy".into(),
        json!({ "access-lists": { "access-list": from_names } }),
    );
    mud.insert(
        "to-device-policy".into(),
        json!({ "access-lists": { "access-list": to_names } }),
    );
    let doc = json!({
        "ietf-mud:mud": mud,
        "ietf-access-control-list:acls": { "acl": acl_list },
    });
    let json = serde_json::to_string_pretty(&doc).map_err(|e| MudError::Policy(e.to_string()))?;
    Ok(Exported {
        json: json + "\n",
        notes,
    })
}

/// How the rule's peers are written: as one binding entry that says exactly them, else
/// each on its own.
fn specs(
    peers: &[PeerSel],
    rev: &[(Vec<String>, Spec)],
    policy: &Policy,
    here: &str,
    notes: &mut Vec<String>,
) -> Vec<Spec> {
    let mut all: Vec<String> = peers.iter().map(ToString::to_string).collect();
    all.sort();
    if let Some((_, spec)) = rev.iter().find(|(p, _)| *p == all) {
        return vec![spec.clone()];
    }
    let mut out = Vec::new();
    for peer in peers {
        let one = vec![peer.to_string()];
        if let Some((_, spec)) = rev.iter().find(|(p, _)| *p == one) {
            out.push(spec.clone());
            continue;
        }
        match peer {
            PeerSel::Any => out.push(Spec::Any),
            PeerSel::Prefix(net) => out.push(Spec::Net(*net)),
            PeerSel::Role(r) => {
                let addrs = policy
                    .roles
                    .get(r)
                    .map(|r| r.addresses.clone())
                    .unwrap_or_default();
                notes.push(format!(
                    "{here}: role {r} written as its addresses (no binding entry names it)"
                ));
                out.extend(addrs.into_iter().map(Spec::Net));
            }
            PeerSel::Class(_) | PeerSel::Device(_) => notes.push(format!(
                "{here}: peer {peer} left out: a managed device has no MUD form unless the \
binding names it (same-manufacturer, manufacturer, model)"
            )),
        }
    }
    out
}

/// The from-device and to-device ACEs of one rule toward one peer, in each family it
/// concerns.
fn ace_pair(
    rule: &lazaret_policy::model::Rule,
    spec: &Spec,
    has_v6: bool,
    here: &str,
    aces: &mut BTreeMap<(bool, bool), Vec<Value>>,
    notes: &mut Vec<String>,
) {
    let families: Vec<bool> = match (spec, rule.proto) {
        (Spec::Net(n), _) => vec![matches!(n, ipnet::IpNet::V6(_))],
        (_, Proto::Icmp) => vec![false],
        (_, Proto::Icmpv6) => vec![true],
        _ if has_v6 => vec![false, true],
        _ => vec![false],
    };
    let tcp = rule.proto == Proto::Tcp;
    let ported = rule.proto.has_ports();
    if rule.initiator == Initiator::Peer && !(ported && (tcp || rule.ports.is_some())) {
        // MUD cannot say who opens a flow without ports (nor UDP to all ports): only the
        // to-device half is written, which an import reads as the peer opening.
        notes.push(format!(
            "{here}: the peer opens, which MUD says only with a port: written to-device only; \
an import reads it back only where no device-opened rule to the same peers has all ports"
        ));
    }
    let ranges: Vec<Option<(u16, u16)>> = match &rule.ports {
        Some(p) if ported => p.iter().map(|r| Some((r.lo, r.hi))).collect(),
        _ => vec![None],
    };
    let direction = match rule.initiator {
        Initiator::Device => "from-device",
        Initiator::Peer => "to-device",
    };
    for v6 in families {
        for range in &ranges {
            for from in [true, false] {
                let opener_side = (rule.initiator == Initiator::Device) == from;
                if rule.initiator == Initiator::Peer
                    && from
                    && !(ported && (tcp || range.is_some()))
                {
                    continue;
                }
                let mut m = Map::new();
                let mut l3 = Map::new();
                if let Some(n) = rule.proto.number() {
                    l3.insert("protocol".into(), json!(n));
                }
                let (dir, long) = if from {
                    ("dst", "destination")
                } else {
                    ("src", "source")
                };
                let fam = if v6 { "ipv6" } else { "ipv4" };
                match spec {
                    Spec::Dns(name) => {
                        l3.insert(format!("ietf-acldns:{dir}-dnsname"), json!(name));
                    }
                    Spec::Net(net) => {
                        l3.insert(format!("{long}-{fam}-network"), json!(net.to_string()));
                    }
                    Spec::Abstraction(k, v) => {
                        let v = v.as_ref().map_or(json!([null]), |v| json!(v));
                        m.insert("ietf-mud:mud".into(), json!({ *k: v }));
                    }
                    Spec::Any => {}
                }
                if !l3.is_empty() {
                    m.insert(fam.into(), Value::Object(l3));
                }
                if ported {
                    let mut l4 = Map::new();
                    if let Some((lo, hi)) = range {
                        // The responder's port: the destination of what the opener sends.
                        let key = if opener_side {
                            "destination-port"
                        } else {
                            "source-port"
                        };
                        let port = if lo == hi {
                            json!({ "operator": "eq", "port": lo })
                        } else {
                            json!({ "lower-port": lo, "upper-port": hi })
                        };
                        l4.insert(key.into(), port);
                    }
                    if tcp {
                        l4.insert("ietf-mud:direction-initiated".into(), json!(direction));
                    }
                    let l4_name = if tcp { "tcp" } else { "udp" };
                    m.insert(l4_name.into(), Value::Object(l4));
                }
                aces.entry((v6, !from)).or_default().push(json!({
                    "matches": m,
                    "actions": { "forwarding": "accept" },
                }));
            }
        }
    }
}
