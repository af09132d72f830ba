//! `explain`: why a flow between two endpoints is allowed or denied. Builds the initiating
//! packet, runs the reference classifier over the compiled maps, and names the rule that
//! decided or the near misses (another port, the other direction, audit mode). Pure.

use super::classify::{
    classify, Decision, DeviceStates, EndTrace, FlowHint, IpDesc, PacketDesc, PacketKind, TCP_SYN,
};
use super::compiled::{Compiled, CompiledDevice, Dir, Entry};
use super::model::{Policy, Side};
use lazaret_abi::{self as abi, Reason};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source port used for the synthetic initiating packet.
const EPHEMERAL_PORT: u16 = 40_000;
/// MAC used for endpoints that are not managed devices (locally administered).
const FOREIGN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// What to explain.
#[derive(Clone, Debug)]
pub struct Query {
    pub from: String,
    pub to: String,
    pub proto: u8,
    /// Destination port (TCP and UDP).
    pub port: Option<u16>,
    /// Quarantine states to assume: device id → `QUARANTINE_*`.
    pub quarantine: BTreeMap<String, u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("`{0}` is neither a device id nor an IP address")]
    UnknownEndpoint(String),
    #[error("{0} and {1} are of different IP families")]
    MixedFamilies(String, String),
    #[error("--port is needed for tcp and udp")]
    MissingPort,
    #[error(transparent)]
    Maps(#[from] super::maps::MapError),
}

/// One end of the explained flow.
#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    pub text: String,
    pub device: Option<String>,
    pub addr: IpAddr,
    /// Roles whose addresses contain `addr`.
    pub roles: Vec<String>,
}

/// How one managed end judged the flow.
#[derive(Clone, Debug, Serialize)]
pub struct EndExplanation {
    pub device: String,
    /// `device_init` or `peer_init`.
    pub dir: Dir,
    pub policy: u32,
    pub quarantine: &'static str,
    pub rule: Option<u32>,
    pub origin: Option<String>,
    pub location: Option<String>,
    pub audit: bool,
    /// When no rule matched: what the policy allows with this peer instead.
    pub near_misses: Vec<String>,
}

/// The answer.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub from: Endpoint,
    pub to: Endpoint,
    pub proto: u8,
    pub port: u16,
    pub verdict: &'static str,
    pub reason: &'static str,
    pub rule: Option<u32>,
    pub ends: Vec<EndExplanation>,
    pub notes: Vec<String>,
}

fn proto_name(p: u8) -> String {
    match p {
        abi::PROTO_TCP => "tcp".into(),
        abi::PROTO_UDP => "udp".into(),
        abi::PROTO_ICMP => "icmp".into(),
        abi::PROTO_ICMPV6 => "icmpv6".into(),
        n => format!("proto {n}"),
    }
}

/// Synthetic ifindexes: interfaces in name order, from 1.
fn ifindexes(compiled: &Compiled) -> BTreeMap<String, u32> {
    compiled
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i as u32 + 1))
        .collect()
}

struct Resolved<'c> {
    device: Option<&'c CompiledDevice>,
    addr: Option<IpAddr>,
    text: String,
}

fn resolve<'c>(compiled: &'c Compiled, text: &str) -> Result<Resolved<'c>, ExplainError> {
    if let Some(d) = compiled.device(text) {
        return Ok(Resolved {
            device: Some(d),
            addr: None,
            text: text.to_string(),
        });
    }
    match text.parse::<IpAddr>() {
        Ok(a) => Ok(Resolved {
            device: compiled.devices.iter().find(|d| match a {
                IpAddr::V4(x) => d.ipv4.contains(&x),
                IpAddr::V6(x) => d.ipv6.contains(&x),
            }),
            addr: Some(a),
            text: text.to_string(),
        }),
        Err(_) => Err(ExplainError::UnknownEndpoint(text.to_string())),
    }
}

/// An address for a device in `v4`/`v6`: its own, else (a DHCP device) a free address of
/// its interface's network, else the unspecified address.
fn device_addr(
    policy: &Policy,
    compiled: &Compiled,
    d: &CompiledDevice,
    v4: bool,
    notes: &mut Vec<String>,
) -> IpAddr {
    if v4 {
        if let Some(a) = d.ipv4.first() {
            return IpAddr::V4(*a);
        }
    } else if let Some(a) = d.ipv6.first() {
        return IpAddr::V6(*a);
    }
    let nets = d
        .interface
        .as_ref()
        .and_then(|i| policy.site.interfaces.get(i))
        .map(|i| i.networks.clone())
        .unwrap_or_default();
    let bound = |a: IpAddr| {
        compiled.devices.iter().any(|x| match a {
            IpAddr::V4(y) => x.ipv4.contains(&y),
            IpAddr::V6(y) => x.ipv6.contains(&y),
        })
    };
    let pick = nets
        .iter()
        .filter(|n| matches!(n.addr(), IpAddr::V4(_)) == v4)
        .flat_map(|n| n.hosts().skip(1).take(256))
        .find(|a| !bound(*a));
    let addr = pick.unwrap_or(if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    notes.push(format!(
        "`{}` has no {} address bound (DHCP): using {addr}; any such address with its MAC is attributed to it",
        d.id,
        if v4 { "IPv4" } else { "IPv6" }
    ));
    addr
}

fn roles_of(policy: &Policy, addr: IpAddr) -> Vec<String> {
    policy
        .roles
        .values()
        .filter(|r| r.addresses.iter().any(|n| n.contains(&addr)))
        .map(|r| r.name.clone())
        .collect()
}

/// Explains the flow `q.from` → `q.to`.
pub fn explain(
    policy: &Policy,
    compiled: &Compiled,
    q: &Query,
) -> Result<Explanation, ExplainError> {
    let from = resolve(compiled, &q.from)?;
    let to = resolve(compiled, &q.to)?;
    let has_ports = q.proto == abi::PROTO_TCP || q.proto == abi::PROTO_UDP;
    let port = match (has_ports, q.port) {
        (true, Some(p)) => p,
        (true, None) => return Err(ExplainError::MissingPort),
        (false, _) => 0,
    };
    // Family: fixed by an explicit address or ICMP flavour, else IPv4 when both ends have it.
    let mut notes = Vec::new();
    let v4 = match (from.addr, to.addr) {
        (Some(a), Some(b)) if a.is_ipv4() != b.is_ipv4() => {
            return Err(ExplainError::MixedFamilies(q.from.clone(), q.to.clone()))
        }
        (Some(a), _) | (None, Some(a)) => a.is_ipv4(),
        (None, None) => match q.proto {
            abi::PROTO_ICMPV6 => false,
            abi::PROTO_ICMP => true,
            _ => {
                let has4 = |d: Option<&CompiledDevice>| {
                    d.is_some_and(|d| !d.ipv4.is_empty() || d.ipv6.is_empty())
                };
                has4(from.device) && has4(to.device)
            }
        },
    };
    let addr_of = |r: &Resolved<'_>, notes: &mut Vec<String>| match (r.addr, r.device) {
        (Some(a), _) => a,
        (None, Some(d)) => device_addr(policy, compiled, d, v4, notes),
        (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let src = addr_of(&from, &mut notes);
    let dst = addr_of(&to, &mut notes);

    let ifx = ifindexes(compiled);
    let maps = compiled.map_contents(0, 1, &ifx)?;
    let (side, ifindex, vlan, src_mac) = match from.device {
        Some(d) => (
            abi::SIDE_DEVICES,
            d.interface
                .as_ref()
                .and_then(|i| ifx.get(i).copied())
                .unwrap_or(0),
            d.vlan.unwrap_or(abi::VLAN_UNTAGGED),
            d.mac.map_or(FOREIGN_MAC, |m| m.0),
        ),
        None => {
            // An unmanaged source inside a device network arrives on a device port.
            let iface =
                policy.site.interfaces.values().find(|i| {
                    i.side == Side::Devices && i.networks.iter().any(|n| n.contains(&src))
                });
            match iface {
                Some(i) => {
                    notes.push(format!(
                        "{src} is inside `{}`'s networks but is no managed device",
                        i.name
                    ));
                    (
                        abi::SIDE_DEVICES,
                        ifx.get(&i.name).copied().unwrap_or(0),
                        abi::VLAN_UNTAGGED,
                        FOREIGN_MAC,
                    )
                }
                None => {
                    let up = policy
                        .site
                        .interfaces
                        .values()
                        .find(|i| i.side == Side::Upstream);
                    let ix = up.and_then(|i| ifx.get(&i.name).copied()).unwrap_or(0);
                    (abi::SIDE_UPSTREAM, ix, abi::VLAN_UNTAGGED, FOREIGN_MAC)
                }
            }
        }
    };
    let (sport, dport, tcp_flags, icmp_type) = match q.proto {
        abi::PROTO_TCP => (EPHEMERAL_PORT, port, TCP_SYN, 0),
        abi::PROTO_UDP => (EPHEMERAL_PORT, port, 0, 0),
        abi::PROTO_ICMP => (1, 1, 0, 8),
        abi::PROTO_ICMPV6 => (1, 1, 0, 128),
        _ => (0, 0, 0, 0),
    };
    let pkt = PacketDesc {
        side,
        ifindex,
        // Explained as arriving on the interface itself: identity by port is not asked.
        port: ifindex,
        claim_scope: maps
            .ifaces
            .iter()
            .find(|(ix, _)| *ix == ifindex)
            .map_or(abi::CLAIM_POLICY as u16, |(_, c)| c.claim_scope),
        vlan,
        src_mac,
        dst_mac: [0x02, 0, 0, 0, 0, 0x01],
        kind: PacketKind::Ip(IpDesc {
            src,
            dst,
            proto: q.proto,
            sport,
            dport,
            tcp_flags,
            icmp_type,
            hop_limit: 64,
            nd_target: None,
            quoted: None,
        }),
        flow: FlowHint::None,
    };
    let mut states = DeviceStates::default();
    for (id, qs) in &q.quarantine {
        if let Some(d) = compiled.device(id) {
            states.set_quarantine(d.hash, *qs);
        }
    }
    let decision = classify(&maps, &states, &pkt);
    let ends = decision
        .ends
        .iter()
        .map(|t| end_explanation(compiled, t, q.proto, port))
        .collect();
    describe_reason(policy, compiled, &decision, &mut notes);
    for r in [&from, &to] {
        if let Some(d) = r.device {
            let quarantined = q
                .quarantine
                .get(&d.id)
                .is_some_and(|s| *s != abi::QUARANTINE_NONE);
            describe_windows(policy, &d.id, quarantined, &mut notes);
            describe_risk(policy, &d.id, &mut notes);
        }
    }
    Ok(Explanation {
        from: endpoint(policy, &from, src),
        to: endpoint(policy, &to, dst),
        proto: q.proto,
        port,
        verdict: verdict(decision.reason),
        reason: decision.reason.name(),
        rule: decision.rule,
        ends,
        notes,
    })
}

/// The advisories that apply to a device, and what `[site.risk]` changed for it.
fn describe_risk(policy: &Policy, id: &str, notes: &mut Vec<String>) {
    let Ok(i) = policy.devices.binary_search_by(|d| d.id.as_str().cmp(id)) else {
        return;
    };
    let d = &policy.devices[i];
    for h in policy.advisories.hits(&d.inventory) {
        let exploited = if h.exploited { ", known exploited" } else { "" };
        let cves = if h.cves.is_empty() {
            String::new()
        } else {
            format!(" ({})", h.cves.join(", "))
        };
        notes.push(format!(
            "{}: advisory {}{cves} applies{exploited}",
            d.id, h.id
        ));
    }
    for a in &d.risk_actions {
        notes.push(format!("{}: {a}", d.id));
    }
}

/// The service windows granted to `device`, with their interval and whether they are open
/// now (the compile explained is the policy as it stands now).
fn describe_windows(policy: &Policy, device: &str, quarantined: bool, notes: &mut Vec<String>) {
    let Some(d) = policy.device(device) else {
        return;
    };
    let now = crate::windows::now();
    for e in policy.exceptions.values().filter(|e| e.applies_to(d)) {
        let state = if e.open_at(now) && quarantined {
            "open now, but the device is quarantined: the quarantine wins"
        } else if e.open_at(now) {
            "open now: its flows are in the verdict above"
        } else if now < e.from {
            "not open yet: its flows are not in the verdict above"
        } else {
            "closed"
        };
        notes.push(format!(
            "service window {} ({}; ticket {}, approved by {}) grants {device} {}: {state}",
            e.name,
            e.interval(),
            e.ticket,
            e.approved_by,
            e.workflows.join(", ")
        ));
    }
}

fn endpoint(policy: &Policy, r: &Resolved<'_>, addr: IpAddr) -> Endpoint {
    Endpoint {
        text: r.text.clone(),
        device: r.device.map(|d| d.id.clone()),
        addr,
        roles: roles_of(policy, addr),
    }
}

fn verdict(r: Reason) -> &'static str {
    match r {
        Reason::AllowRule | Reason::AllowFlow | Reason::AllowNeighbor | Reason::AllowControl => {
            "allow"
        }
        Reason::PassUnmanaged => "pass (not lazaret's to judge)",
        Reason::Audit => "pass (audit: would be denied or is under trial)",
        Reason::Learn => "pass (learn mode)",
        Reason::UnknownAudit => "pass (unknown device, site audits unknown devices)",
        _ => "deny",
    }
}

fn quarantine_name(q: u8) -> &'static str {
    match q {
        abi::QUARANTINE_NONE => "none",
        abi::QUARANTINE_RESTRICT => "restrict",
        _ => "isolate",
    }
}

fn end_explanation(compiled: &Compiled, t: &EndTrace, proto: u8, port: u16) -> EndExplanation {
    let device = compiled
        .device_by_hash(t.device)
        .map_or_else(|| format!("{:#x}", t.device), |d| d.id.clone());
    let dir = Dir::from_abi(t.dir);
    let info = t.rule.and_then(|r| compiled.rule(r.rule));
    let near_misses = if t.rule.is_none() {
        near_misses(compiled, t.policy, dir, t.peer, proto, port)
    } else {
        Vec::new()
    };
    EndExplanation {
        device,
        dir,
        policy: t.policy,
        quarantine: quarantine_name(t.quarantine),
        rule: t.rule.map(|r| r.rule),
        origin: info.map(|i| i.origin.to_string()),
        location: info
            .and_then(|i| i.location.as_ref())
            .map(std::string::ToString::to_string),
        audit: t.rule.is_some_and(|r| r.flags & abi::RULE_F_AUDIT != 0),
        near_misses,
    }
}

fn entry_text(compiled: &Compiled, e: &Entry) -> String {
    let what = match e.ports {
        Some(p) => format!("{}/{p}", e.proto),
        None => e.proto.to_string(),
    };
    let origin = compiled
        .rule(e.rule)
        .map_or_else(String::new, |r| format!(" ({})", r.origin));
    format!("{what} with {}{origin}", e.peer)
}

/// What the policy does allow with this peer: other ports or protocols, or the other
/// direction.
fn near_misses(
    compiled: &Compiled,
    policy: u32,
    dir: Dir,
    peer: IpAddr,
    proto: u8,
    port: u16,
) -> Vec<String> {
    let Some(p) = compiled.policy(policy) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in p.entries.iter().filter(|e| e.peer.contains(&peer)) {
        if e.dir == dir {
            out.push(format!("a rule allows {} instead", entry_text(compiled, e)));
        } else if e.proto.matches(proto) && e.ports.is_none_or(|r| r.contains(port)) {
            let who = match e.dir {
                Dir::DeviceInit => "the device",
                Dir::PeerInit => "the peer",
            };
            out.push(format!(
                "a rule allows this flow only when {who} opens it: {}",
                entry_text(compiled, e)
            ));
        }
    }
    out.sort();
    out.dedup();
    out.truncate(8);
    out
}

fn describe_reason(policy: &Policy, compiled: &Compiled, d: &Decision, notes: &mut Vec<String>) {
    let dev = d.device.and_then(|h| compiled.device_by_hash(h));
    let name = dev.map_or("the device".to_string(), |d| format!("`{}`", d.id));
    match d.reason {
        Reason::DenyNoRule => notes.push(format!("no rule of {name}'s policy allows this flow")),
        Reason::Audit => {
            if d.ends.iter().any(|e| e.rule.is_none()) {
                notes.push(format!(
                    "{name} is in audit mode: no rule allows this flow, it passes and is reported"
                ));
            } else {
                notes.push("the rule's workflow is in audit or learn mode: the flow passes and is reported".into());
            }
        }
        Reason::Learn => notes.push(format!(
            "{name} is in learn mode: no rule allows this flow, it passes and is recorded"
        )),
        Reason::DenyQuarantine => notes.push(format!(
            "{name} is quarantined and its quarantine policy does not allow this flow"
        )),
        Reason::DenySpoof => notes.push(format!(
            "the source does not match {name}'s binding (MAC, VLAN, interface or address)"
        )),
        Reason::DenyUnknown => notes.push(
            "the source is not a managed device (from upstream: the destination is an address of the devices' networks no device has used yet) and the site denies unknown devices"
                .into(),
        ),
        Reason::UnknownAudit => {
            notes
                .push("the source is not a managed device; the site audits unknown devices".into());
        }
        Reason::PassUnmanaged => {
            notes.push("neither end is a managed device: lazaret does not judge this flow".into());
        }
        Reason::DenyRogueDhcp => {
            notes.push("DHCP server messages from device ports (from the server's port or to the client's) are always dropped".into());
        }
        _ => {}
    }
    let _ = policy;
}

impl Explanation {
    /// The human-readable answer.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let ep = |e: &Endpoint| {
            let mut s = match &e.device {
                Some(d) if *d == e.text => format!("{d} ({})", e.addr),
                Some(d) => format!("{} (device {d})", e.addr),
                None => e.addr.to_string(),
            };
            if !e.roles.is_empty() {
                s.push_str(&format!(" [role {}]", e.roles.join(", ")));
            }
            s
        };
        let what = if self.proto == abi::PROTO_TCP || self.proto == abi::PROTO_UDP {
            format!("{}/{}", proto_name(self.proto), self.port)
        } else {
            proto_name(self.proto)
        };
        let _ = writeln!(out, "{} -> {}, {what}", ep(&self.from), ep(&self.to));
        let _ = writeln!(out, "verdict: {} ({})", self.verdict, self.reason);
        for e in &self.ends {
            let role = match e.dir {
                Dir::DeviceInit => "opens the flow",
                Dir::PeerInit => "accepts the flow",
            };
            let q = if e.quarantine == "none" {
                String::new()
            } else {
                format!(" [quarantine: {}]", e.quarantine)
            };
            match (&e.origin, e.rule) {
                (Some(origin), Some(id)) => {
                    let at = e
                        .location
                        .as_ref()
                        .map_or(String::new(), |l| format!(" at {l}"));
                    let audit = if e.audit { ", audit" } else { "" };
                    let _ = writeln!(
                        out,
                        "  {} {role}{q}: allowed by {origin} (rule #{id}{audit}){at}",
                        e.device
                    );
                }
                _ => {
                    let _ = writeln!(out, "  {} {role}{q}: no matching rule", e.device);
                    for m in &e.near_misses {
                        let _ = writeln!(out, "    - {m}");
                    }
                }
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}
