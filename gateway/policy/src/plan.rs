//! `plan`: what a policy change does, per device: flows that become allowed or denied and
//! inventory changes. A diff of two compiled policies, for pull-request review. Pure.

use super::compiled::{Compiled, CompiledPolicy, Dir};
use super::model::{Device, Exception, Policy, Proto};
use super::windows::format_time;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Flows of one (direction, peer, protocol) that changed, as port ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowChange {
    pub dir: Dir,
    pub peer: IpNet,
    /// What the peer is in the policy: a device id, or `role:NAME` when a role has exactly
    /// this prefix; `None` for a prefix neither names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_name: Option<String>,
    pub proto: Proto,
    /// Inclusive port ranges; empty when the protocol has no ports or all are meant.
    pub ports: Vec<(u16, u16)>,
    /// Rules behind the flow (in the revision where it is allowed).
    pub via: Vec<String>,
}

/// A field that changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub old: String,
    pub new: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// Everything that changes for one device (or for the site quarantine profile).
#[derive(Clone, Debug, Serialize)]
pub struct DevicePlan {
    pub device: String,
    pub class: Option<String>,
    /// The device is life-critical (in the new revision, else the old): a change of its
    /// quarantine action is shown as a warning.
    pub life_critical: bool,
    /// The gateways enforcing the device before and after (one when it did not move;
    /// empty when the policy names no gateways; every gateway for the site quarantine
    /// profile).
    pub gateways: Vec<String>,
    pub change: Change,
    pub inventory: Vec<FieldChange>,
    pub allowed: Vec<FlowChange>,
    pub denied: Vec<FlowChange>,
}

/// A service window added, removed or changed, and what it grants while open.
#[derive(Clone, Debug, Serialize)]
pub struct WindowPlan {
    pub name: String,
    pub change: Change,
    /// RFC 3339, UTC.
    pub from: String,
    pub until: String,
    pub ticket: String,
    pub approved_by: String,
    /// The old revision's interval, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<(String, String)>,
    /// The flows it adds while open, per device whose policy it changes (the devices it
    /// grants and managed peers of its rules), in the new revision; in the old one for a
    /// removed window.
    pub grants: Vec<(String, Vec<FlowChange>)>,
    /// The policy does not compile with the window open (`check` refuses it too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The plan: devices with changes, in id order.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub devices: Vec<DevicePlan>,
    /// Service windows that changed, in name order (devices' flows above are as written,
    /// every window closed).
    pub windows: Vec<WindowPlan>,
    pub flows_allowed: usize,
    pub flows_denied: usize,
    /// When the policy names gateways: those whose enforcement the change touches (a
    /// device of theirs changed, or their own definition did), and the others.
    pub gateways_touched: Vec<String>,
    pub gateways_untouched: Vec<String>,
}

/// Peers by name: the devices' host prefixes and the roles' prefixes, of both revisions
/// (the new one's first).
struct Names {
    by_net: BTreeMap<IpNet, String>,
}

impl Names {
    fn new(old: &Policy, new: &Policy) -> Names {
        let mut by_net = BTreeMap::new();
        for p in [new, old] {
            for d in &p.devices {
                for a in d.addresses() {
                    by_net
                        .entry(super::model::host_net(a))
                        .or_insert_with(|| d.id.clone());
                }
            }
            for r in p.roles.values() {
                for n in &r.addresses {
                    by_net
                        .entry(*n)
                        .or_insert_with(|| format!("role:{}", r.name));
                }
            }
        }
        Names { by_net }
    }

    fn of(&self, net: &IpNet) -> Option<String> {
        self.by_net.get(net).cloned()
    }
}

/// The gateways of `policy` enforcing device `id` (none when it names no gateways).
fn gateways_of(policy: &Policy, id: &str) -> Option<String> {
    let d = policy.device(id)?;
    policy
        .site
        .gateway_of(d.interface.as_deref()?)
        .map(|g| g.name.clone())
}

type Key = (Dir, IpNet, Proto);
/// Allowed port intervals (as u32, inclusive) per (dir, peer, proto), and the rules.
type Flows = BTreeMap<Key, (Vec<(u32, u32)>, BTreeSet<u32>)>;

fn flows(p: Option<&CompiledPolicy>) -> Flows {
    let mut out: Flows = BTreeMap::new();
    for e in p.into_iter().flat_map(|p| &p.entries) {
        let (lo, hi) = e
            .ports
            .map_or((0, 65535), |r| (u32::from(r.lo), u32::from(r.hi)));
        let slot = out.entry((e.dir, e.peer, e.proto)).or_default();
        slot.0.push((lo, hi));
        slot.1.insert(e.rule);
    }
    for (ranges, _) in out.values_mut() {
        *ranges = normalize(std::mem::take(ranges));
    }
    out
}

fn normalize(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `a` minus `b`, both normalized.
fn subtract(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(lo, hi) in a {
        let mut cur = lo;
        for &(blo, bhi) in b {
            if bhi < cur || blo > hi {
                continue;
            }
            if blo > cur {
                out.push((cur, blo - 1));
            }
            cur = cur.max(bhi + 1);
            if cur > hi {
                break;
            }
        }
        if cur <= hi {
            out.push((cur, hi));
        }
    }
    out
}

fn diff(compiled: &Compiled, a: &Flows, b: &Flows) -> Vec<FlowChange> {
    let mut out = Vec::new();
    for (key, (ranges, rules)) in a {
        let empty = Vec::new();
        let other = b.get(key).map_or(&empty, |x| &x.0);
        let left = subtract(ranges, other);
        if left.is_empty() {
            continue;
        }
        let all = left == [(0, 65535)];
        out.push(FlowChange {
            dir: key.0,
            peer: key.1,
            peer_name: None,
            proto: key.2,
            ports: if all || !key.2.has_ports() {
                Vec::new()
            } else {
                left.iter().map(|(l, h)| (*l as u16, *h as u16)).collect()
            },
            via: rules
                .iter()
                .filter_map(|r| compiled.rule(*r))
                .map(|r| r.origin.to_string())
                .collect(),
        });
    }
    out
}

fn inventory(old: &Device, new: &Device) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut cmp = |field: &'static str, a: String, b: String| {
        if a != b {
            out.push(FieldChange {
                field,
                old: a,
                new: b,
            });
        }
    };
    let list = |v: Vec<String>| v.join(", ");
    cmp(
        "class",
        old.class.clone().unwrap_or_default(),
        new.class.clone().unwrap_or_default(),
    );
    cmp("mode", old.mode.name().into(), new.mode.name().into());
    cmp(
        "mac",
        old.mac.map(|m| m.to_string()).unwrap_or_default(),
        new.mac.map(|m| m.to_string()).unwrap_or_default(),
    );
    cmp(
        "ipv4",
        list(
            old.ipv4
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
        list(
            new.ipv4
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
    );
    cmp(
        "ipv6",
        list(
            old.ipv6
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
        list(
            new.ipv6
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
    );
    cmp(
        "vlan",
        old.vlan.map_or("any".into(), |v| v.to_string()),
        new.vlan.map_or("any".into(), |v| v.to_string()),
    );
    cmp(
        "interface",
        old.interface.clone().unwrap_or_default(),
        new.interface.clone().unwrap_or_default(),
    );
    cmp(
        "port",
        old.port.clone().unwrap_or_default(),
        new.port.clone().unwrap_or_default(),
    );
    cmp(
        "workflows",
        list(old.workflows.iter().cloned().collect()),
        list(new.workflows.iter().cloned().collect()),
    );
    cmp(
        "quarantine action",
        old.quarantine.action.name().into(),
        new.quarantine.action.name().into(),
    );
    let (a, b) = (&old.inventory, &new.inventory);
    cmp("vendor", a.vendor.clone(), b.vendor.clone());
    cmp("model", a.model.clone(), b.model.clone());
    cmp("serial", a.serial.clone(), b.serial.clone());
    cmp("firmware", a.firmware.clone(), b.firmware.clone());
    cmp(
        "last_patched",
        a.last_patched.map(|d| d.to_string()).unwrap_or_default(),
        b.last_patched.map(|d| d.to_string()).unwrap_or_default(),
    );
    cmp("location", a.location.clone(), b.location.clone());
    cmp("owner", a.owner.clone(), b.owner.clone());
    cmp(
        "life_critical",
        a.life_critical.to_string(),
        b.life_critical.to_string(),
    );
    cmp(
        "stores_phi",
        a.stores_phi.to_string(),
        b.stores_phi.to_string(),
    );
    cmp(
        "patient_connection",
        format!("{:?}", a.patient_connection).to_lowercase(),
        format!("{:?}", b.patient_connection).to_lowercase(),
    );
    cmp(
        "patchable",
        a.patchable.to_string(),
        b.patchable.to_string(),
    );
    out
}

/// The changes from (`old_policy`, `old`) to (`new_policy`, `new`).
pub fn plan(old_policy: &Policy, old: &Compiled, new_policy: &Policy, new: &Compiled) -> Plan {
    let ids: BTreeSet<&str> = old_policy
        .devices
        .iter()
        .chain(&new_policy.devices)
        .map(|d| d.id.as_str())
        .collect();
    let mut devices = Vec::new();
    // The site quarantine profile first: it applies to every isolated device.
    let qa = flows(old.policy(old.site.quarantine_policy));
    let qb = flows(new.policy(new.site.quarantine_policy));
    let (allowed, denied) = (diff(new, &qb, &qa), diff(old, &qa, &qb));
    let every: BTreeSet<String> = old_policy
        .site
        .gateways
        .keys()
        .chain(new_policy.site.gateways.keys())
        .cloned()
        .collect();
    if !allowed.is_empty() || !denied.is_empty() {
        devices.push(DevicePlan {
            device: "(site quarantine profile)".into(),
            class: None,
            life_critical: false,
            gateways: every.iter().cloned().collect(),
            change: Change::Changed,
            inventory: Vec::new(),
            allowed,
            denied,
        });
    }
    let names = Names::new(old_policy, new_policy);
    for id in ids {
        let (od, nd) = (old_policy.device(id), new_policy.device(id));
        let ofl = flows(old.device(id).and_then(|d| old.policy(d.policy)));
        let nfl = flows(new.device(id).and_then(|d| new.policy(d.policy)));
        // A rule naming the device's own class includes the device: a flow to itself never
        // crosses the gateway, so it is not a change anyone reviews.
        let own: BTreeSet<IpNet> = od
            .into_iter()
            .chain(nd)
            .flat_map(|d| d.addresses().map(super::model::host_net))
            .collect();
        let name = |v: Vec<FlowChange>| -> Vec<FlowChange> {
            v.into_iter()
                .filter(|f| !own.contains(&f.peer))
                .map(|f| FlowChange {
                    peer_name: names.of(&f.peer),
                    ..f
                })
                .collect()
        };
        let allowed = name(diff(new, &nfl, &ofl));
        let denied = name(diff(old, &ofl, &nfl));
        let (change, inv) = match (od, nd) {
            (Some(a), Some(b)) => (Change::Changed, inventory(a, b)),
            (None, Some(_)) => (Change::Added, Vec::new()),
            (Some(_), None) => (Change::Removed, Vec::new()),
            (None, None) => continue,
        };
        if change == Change::Changed && inv.is_empty() && allowed.is_empty() && denied.is_empty() {
            continue;
        }
        let mut gateways: Vec<String> = [gateways_of(old_policy, id), gateways_of(new_policy, id)]
            .into_iter()
            .flatten()
            .collect();
        gateways.dedup();
        devices.push(DevicePlan {
            device: id.to_string(),
            class: nd.or(od).and_then(|d| d.class.clone()),
            life_critical: nd.or(od).is_some_and(|d| d.inventory.life_critical),
            gateways,
            change,
            inventory: inv,
            allowed,
            denied,
        });
    }
    let flows_allowed = devices.iter().map(|d| d.allowed.len()).sum();
    let flows_denied = devices.iter().map(|d| d.denied.len()).sum();
    let mut touched: BTreeSet<String> = devices
        .iter()
        .flat_map(|d| d.gateways.iter().cloned())
        .collect();
    // A gateway added, removed, or serving other interfaces or hosts is touched even when
    // no device's flows changed.
    for g in &every {
        let (a, b) = (
            old_policy.site.gateways.get(g),
            new_policy.site.gateways.get(g),
        );
        let same = match (a, b) {
            (Some(a), Some(b)) => a.interfaces == b.interfaces && a.members == b.members,
            _ => false,
        };
        if !same {
            touched.insert(g.clone());
        }
    }
    let untouched = every
        .iter()
        .filter(|g| !touched.contains(*g))
        .cloned()
        .collect();
    Plan {
        devices,
        windows: windows((old_policy, old), (new_policy, new), &names),
        flows_allowed,
        flows_denied,
        gateways_touched: touched.into_iter().collect(),
        gateways_untouched: untouched,
    }
}

/// The windows that differ between the revisions, each with what it grants: every device's
/// flows with the window open, less those of the policy as written (`old`, `new`). A window
/// whose own entry is unchanged differs when what it grants does (a workflow only it uses
/// was edited).
fn windows(
    (old_policy, old): (&Policy, &Compiled),
    (new_policy, new): (&Policy, &Compiled),
    names: &Names,
) -> Vec<WindowPlan> {
    let same = |a: &Exception, b: &Exception| {
        Exception {
            span: b.span,
            ..a.clone()
        } == *b
    };
    let all: BTreeSet<&String> = (old_policy.exceptions.keys())
        .chain(new_policy.exceptions.keys())
        .collect();
    let mut out = Vec::new();
    for name in all {
        let (a, b) = (
            old_policy.exceptions.get(name),
            new_policy.exceptions.get(name),
        );
        let (change, e, grants) = match (a, b) {
            (Some(a), Some(b)) => {
                let before = grants(old_policy, old, a, names);
                let after = grants(new_policy, new, b, names);
                if same(a, b) && before == after {
                    continue;
                }
                (Change::Changed, b, after)
            }
            (None, Some(b)) => (Change::Added, b, grants(new_policy, new, b, names)),
            (Some(a), None) => (Change::Removed, a, grants(old_policy, old, a, names)),
            (None, None) => continue,
        };
        let interval = |e: &Exception| (format_time(e.from), format_time(e.until));
        let was = match (change, a) {
            (Change::Changed, Some(a)) if (a.from, a.until) != (e.from, e.until) => {
                Some(interval(a))
            }
            _ => None,
        };
        let (grants, error) = match grants {
            Ok(g) => (g, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        out.push(WindowPlan {
            name: name.clone(),
            change,
            from: format_time(e.from),
            until: format_time(e.until),
            ticket: e.ticket.clone(),
            approved_by: e.approved_by.clone(),
            was,
            grants,
            error,
        });
    }
    out
}

type Grants = Result<Vec<(String, Vec<FlowChange>)>, String>;

fn grants(policy: &Policy, base: &Compiled, e: &Exception, names: &Names) -> Grants {
    let open = BTreeSet::from([e.name.clone()]);
    let with = super::compile(&policy.at(&open)).map_err(|e| e.render())?;
    Ok(policy
        .devices
        .iter()
        .filter_map(|d| {
            let a = flows(with.device(&d.id).and_then(|c| with.policy(c.policy)));
            let b = flows(base.device(&d.id).and_then(|c| base.policy(c.policy)));
            let added: Vec<FlowChange> = diff(&with, &a, &b)
                .into_iter()
                .map(|f| FlowChange {
                    peer_name: names.of(&f.peer),
                    ..f
                })
                .collect();
            (!added.is_empty()).then(|| (d.id.clone(), added))
        })
        .collect())
}

fn flow_text(device: &str, f: &FlowChange) -> String {
    let what = if f.ports.is_empty() {
        f.proto.to_string()
    } else {
        let ports: Vec<String> = f
            .ports
            .iter()
            .map(|(l, h)| {
                if l == h {
                    l.to_string()
                } else {
                    format!("{l}-{h}")
                }
            })
            .collect();
        format!("{}/{}", f.proto, ports.join(","))
    };
    let peer = match &f.peer_name {
        Some(name) => format!("{name} ({})", f.peer),
        None => f.peer.to_string(),
    };
    let arrow = match f.dir {
        Dir::DeviceInit => format!("{device} -> {peer}"),
        Dir::PeerInit => format!("{peer} -> {device}"),
    };
    format!("{arrow} {what}  ({})", f.via.join("; "))
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.windows.is_empty()
    }

    /// Service windows first: each is a grant a reviewer signs off on, with its interval.
    fn render_windows(&self, out: &mut String) {
        for w in &self.windows {
            let (mark, what) = match w.change {
                Change::Added => ("+", "new service window"),
                Change::Removed => ("-", "service window removed"),
                Change::Changed => ("~", "service window changed"),
            };
            let was = w
                .was
                .as_ref()
                .map_or(String::new(), |(f, u)| format!(", was {f} – {u}"));
            let _ = writeln!(
                out,
                "{mark} {what} {}: {} – {}{was} (ticket {}, approved by {})",
                w.name, w.from, w.until, w.ticket, w.approved_by
            );
            if let Some(e) = &w.error {
                let _ = writeln!(out, "    ! the policy does not compile with it open:");
                for line in e.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
            for (device, flows) in &w.grants {
                for f in flows {
                    let verb = if w.change == Change::Removed {
                        "no longer"
                    } else {
                        "while open"
                    };
                    let _ = writeln!(out, "    {verb}: allow {}", flow_text(device, f));
                }
            }
        }
    }

    /// The human-readable plan.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.gateways_touched.is_empty() || !self.gateways_untouched.is_empty() {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            let _ = writeln!(
                out,
                "Gateways touched: {} (not touched: {}).",
                list(&self.gateways_touched),
                list(&self.gateways_untouched)
            );
        }
        self.render_windows(&mut out);
        if self.devices.is_empty() {
            out.push_str(if self.windows.is_empty() {
                "No changes: every device keeps its flows and inventory.\n"
            } else {
                "No other changes: outside the service windows above, every device keeps its flows and inventory.\n"
            });
            return out;
        }
        for d in &self.devices {
            let (mark, note) = match d.change {
                Change::Added => ("+", " new device"),
                Change::Removed => ("-", " removed: all its flows are denied"),
                Change::Changed => ("~", ""),
            };
            let class = d
                .class
                .as_ref()
                .map_or(String::new(), |c| format!(" ({c})"));
            let on = if d.gateways.is_empty() || d.device.starts_with('(') {
                String::new()
            } else {
                format!(" [gateway {}]", d.gateways.join(" -> "))
            };
            let _ = writeln!(out, "{mark} {}{class}{on}{note}", d.device);
            let name = if d.device.starts_with('(') {
                "device"
            } else {
                d.device.as_str()
            };
            for f in &d.allowed {
                let _ = writeln!(out, "    + allow {}", flow_text(name, f));
            }
            if d.change != Change::Removed {
                for f in &d.denied {
                    let _ = writeln!(out, "    - deny  {}", flow_text(name, f));
                }
            }
            for c in &d.inventory {
                let _ = writeln!(out, "    {}: {:?} -> {:?}", c.field, c.old, c.new);
                if d.life_critical && c.field == "quarantine action" {
                    let _ = writeln!(
                        out,
                        "    ! LIFE-CRITICAL device: its quarantine action changes from {} to {}; {}",
                        c.old,
                        c.new,
                        if c.new == "alert" {
                            "a deviation will only be reported"
                        } else {
                            "a deviation will cut its flows, possibly during therapy: confirm with the clinical engineers"
                        }
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "{} device{} changed: {} flow{} newly allowed, {} newly denied.",
            self.devices.len(),
            super::diag::plural(self.devices.len()),
            self.flows_allowed,
            super::diag::plural(self.flows_allowed),
            self.flows_denied
        );
        out
    }
}
