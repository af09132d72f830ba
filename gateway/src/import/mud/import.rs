//! `lazaret import mud`: a MUD file's ACLs into one workflow for the binding's class.
//!
//! Each accepted ACE becomes a rule: its peer from the match's DNS name, network or MUD
//! abstraction (through the binding), its protocol, and who initiates and on which port:
//!
//! | ACL | match | rule |
//! |---|---|---|
//! | from-device | `direction-initiated: from-device`, or a destination port, or no port | the device opens, to the destination port (all ports without one) |
//! | from-device | `direction-initiated: to-device`, or only a source port | replies of a flow the peer opens to the device's source port |
//! | to-device | `direction-initiated: to-device`, or a destination port, or no port | the peer opens, to the destination port |
//! | to-device | `direction-initiated: from-device`, or only a source port | replies of a flow the device opens to the peer's source port |
//!
//! Only an ACE on the opener's side makes a rule: one whose opener is the other side (the
//! `direction-initiated` or the port says so) passes only the flow's replies, and is read
//! as part of the rule the other side's ACE opens, or left out (listed) when none does. A
//! to-device ACE with neither port nor direction whose peer and protocol a device-initiated
//! rule already has is that rule's replies, not a second flow. A side's ACLs are one
//! ordered list: a `drop` anywhere before an `accept` refuses the file.
//!
//! An ACE of one family (its `ipv4`/`ipv6` match, else its ACL's type) allows that family
//! only: `any` becomes `0.0.0.0/0` or `::/0`, and `plan` narrows a dual-stack role of the
//! binding to its addresses of the family (a class or device with addresses of the other
//! family cannot be narrowed: the rule is left out).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use lazaret_policy::{
    load,
    model::{Family, Initiator, PeerSel},
    text::printable,
    Policy, SourceFile,
};
use serde_json::{Map, Value};
use toml_edit::{DocumentMut, Item};

use super::{read_bounded, Binding, MudError, MAX_ACES, MAX_ACLS, MUD_MAX_BYTES};

/// A rule the MUD file allows, in lazaret's terms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MudRule {
    /// The family of the ACE's match or ACL (`None`: either).
    pub family: Option<Family>,
    pub initiator: Initiator,
    /// `None`: any protocol.
    pub proto: Option<u8>,
    /// As a rule's `peer` takes them.
    pub peers: Vec<String>,
    /// The responder's ports; `None`: all.
    pub ports: Option<Vec<(u16, u16)>>,
}

/// A MUD file, read against a binding.
#[derive(Debug)]
pub struct Imported {
    pub mud_url: String,
    pub systeminfo: String,
    /// Rules, each with the ACEs (`acl/ace`) it comes from.
    pub rules: BTreeMap<MudRule, Vec<String>>,
    /// What was left out, and why: (`acl/ace`, reason).
    pub left_out: Vec<(String, String)>,
    /// ACEs read as the replies half of a flow another ACE opens (`acl/ace`).
    pub replies: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    FromDevice,
    ToDevice,
}

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, at: &str, message: impl Into<String>) -> MudError {
        MudError::Mud {
            path: self.file.to_string(),
            at: if at.is_empty() {
                "/".to_string()
            } else {
                at.to_string()
            },
            message: message.into(),
        }
    }

    fn obj<'v>(&self, v: &'v Value, at: &str) -> Result<&'v Map<String, Value>, MudError> {
        v.as_object()
            .ok_or_else(|| self.err(at, format!("expected an object, found {}", kind(v))))
    }

    fn arr<'v>(&self, v: &'v Value, at: &str, max: usize) -> Result<&'v Vec<Value>, MudError> {
        let a = v
            .as_array()
            .ok_or_else(|| self.err(at, format!("expected an array, found {}", kind(v))))?;
        if a.len() > max {
            return Err(self.err(at, format!("{} entries; at most {max} are read", a.len())));
        }
        Ok(a)
    }

    fn str<'v>(&self, v: &'v Value, at: &str) -> Result<&'v str, MudError> {
        v.as_str()
            .ok_or_else(|| self.err(at, format!("expected a string, found {}", kind(v))))
    }

    fn u64(&self, v: &Value, at: &str, max: u64) -> Result<u64, MudError> {
        match v.as_u64() {
            Some(n) if n <= max => Ok(n),
            _ => Err(self.err(at, format!("expected a number 0–{max}, found {v}"))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSON pointer escaping (RFC 6901).
fn ptr(base: &str, key: &str) -> String {
    format!("{base}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Reads the MUD file at `path` against `binding`.
pub fn read(path: &Path, binding: &Binding) -> Result<Imported, MudError> {
    let bytes = read_bounded(path, MUD_MAX_BYTES)?;
    parse(&bytes, &path.display().to_string(), binding)
}

/// Reads a MUD file's bytes (`file` names it in errors).
pub fn parse(bytes: &[u8], file: &str, binding: &Binding) -> Result<Imported, MudError> {
    let r = Reader { file };
    let root: Value = serde_json::from_slice(bytes).map_err(|e| MudError::Read {
        path: file.to_string(),
        message: format!("not JSON: {e}"),
    })?;
    let top = r.obj(&root, "")?;
    let mud_at = "/ietf-mud:mud";
    let mud = r.obj(
        top.get("ietf-mud:mud")
            .ok_or_else(|| r.err("", "no \"ietf-mud:mud\" container: not a MUD file"))?,
        mud_at,
    )?;
    let version_at = ptr(mud_at, "mud-version");
    let version = mud
        .get("mud-version")
        .ok_or_else(|| r.err(mud_at, "no mud-version"))?;
    if r.u64(version, &version_at, 255)? != 1 {
        return Err(r.err(&version_at, "only MUD version 1 (RFC 8520) is read"));
    }
    let url_at = ptr(mud_at, "mud-url");
    let mud_url = r
        .str(
            mud.get("mud-url")
                .ok_or_else(|| r.err(mud_at, "no mud-url"))?,
            &url_at,
        )?
        .to_string();
    // RFC 8520 §1.8: MUD URLs are https. Anything else (a newline, a comment) is refused
    // here, before it reaches a generated file.
    let url_ok = mud_url.starts_with("https://")
        && mud_url.len() <= 2048
        && mud_url.chars().all(|c| c.is_ascii_graphic());
    if !url_ok {
        return Err(r.err(
            &url_at,
            "a MUD URL is an https: URL of printable characters",
        ));
    }
    let systeminfo = match mud.get("systeminfo") {
        Some(v) => r.str(v, &ptr(mud_at, "systeminfo"))?.to_string(),
        None => String::new(),
    };

    // The ACLs, by name, with where each is.
    let acls_at = "/ietf-access-control-list:acls";
    let mut acls: BTreeMap<&str, (&Value, String)> = BTreeMap::new();
    if let Some(v) = top.get("ietf-access-control-list:acls") {
        let list_at = ptr(acls_at, "acl");
        if let Some(list) = r.obj(v, acls_at)?.get("acl") {
            for (i, acl) in r.arr(list, &list_at, MAX_ACLS)?.iter().enumerate() {
                let at = format!("{list_at}/{i}");
                let name = r.str(
                    r.obj(acl, &at)?
                        .get("name")
                        .ok_or_else(|| r.err(&at, "an ACL without a name"))?,
                    &ptr(&at, "name"),
                )?;
                if acls.insert(name, (acl, at.clone())).is_some() {
                    return Err(r.err(&at, format!("a second ACL named {name:?}")));
                }
            }
        }
    }

    let mut out = Imported {
        mud_url,
        systeminfo,
        rules: BTreeMap::new(),
        left_out: Vec::new(),
        replies: Vec::new(),
    };
    let mut halves: Vec<(Half, MudRule, String)> = Vec::new();
    for (side, key) in [
        (Side::FromDevice, "from-device-policy"),
        (Side::ToDevice, "to-device-policy"),
    ] {
        let Some(pol) = mud.get(key) else { continue };
        let pol_at = ptr(mud_at, key);
        let lists_at = ptr(&pol_at, "access-lists");
        let lists = r.obj(pol, &pol_at)?.get("access-lists");
        let Some(lists) = lists else { continue };
        let names_at = ptr(&lists_at, "access-list");
        let names = match r.obj(lists, &lists_at)?.get("access-list") {
            Some(a) => r.arr(a, &names_at, MAX_ACLS)?,
            None => continue,
        };
        // A side's ACLs are one ordered list (RFC 8519: the first match wins), so a drop
        // in one is before every accept of the next.
        let mut dropped: Option<String> = None;
        for (i, n) in names.iter().enumerate() {
            let n_at = format!("{names_at}/{i}");
            let name = r.str(
                r.obj(n, &n_at)?
                    .get("name")
                    .ok_or_else(|| r.err(&n_at, "an access-list entry without a name"))?,
                &ptr(&n_at, "name"),
            )?;
            let (value, acl_at) = acls.get(name).ok_or_else(|| {
                r.err(
                    &n_at,
                    format!("names ACL {name:?}, which the file does not have"),
                )
            })?;
            let acl = Acl {
                side,
                name,
                at: acl_at,
            };
            let mut reading = Reading {
                binding,
                dropped: &mut dropped,
                out: &mut out,
                halves: &mut halves,
            };
            read_acl(&r, &acl, value, &mut reading)?;
        }
    }
    // The other halves: an ACE that lets only a flow's replies through is part of the
    // rule whose opening ACE the other side has, and grants nothing of its own.
    for (half, rule, from) in halves {
        let opened = match half {
            Half::Replies => out.rules.contains_key(&rule),
            // A to-device ACE with neither port nor direction: the replies of a flow the
            // device opens to the same peers, if one does; else the peer opens.
            Half::Portless => out.rules.keys().any(|k| {
                k.initiator == Initiator::Device
                    && k.proto == rule.proto
                    && k.peers == rule.peers
                    && k.family == rule.family
                    && k.ports.is_none()
            }),
        };
        if opened {
            let key = match half {
                Half::Replies => Some(rule),
                Half::Portless => None,
            };
            match key.and_then(|k| out.rules.get_mut(&k)) {
                Some(sources) => sources.push(format!("{from} (replies)")),
                None => out.replies.push(from),
            }
        } else if half == Half::Portless {
            out.rules.entry(rule).or_default().push(from);
        } else {
            out.left_out.push((
                from,
                "the replies of a flow the other side's ACL does not open: its first packet \
is not allowed"
                    .to_string(),
            ));
        }
    }
    Ok(out)
}

/// An ACE that is the other half of a flow (see `parse`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    /// Its opener is the other side: it passes the flow's replies.
    Replies,
    /// A to-device ACE with neither port nor direction.
    Portless,
}

/// The ACL being read: its side, name and JSON pointer.
struct Acl<'a> {
    side: Side,
    name: &'a str,
    at: &'a str,
}

/// Where one ACL's reading goes.
struct Reading<'a> {
    binding: &'a Binding,
    /// The first drop ACE of this side so far.
    dropped: &'a mut Option<String>,
    out: &'a mut Imported,
    halves: &'a mut Vec<(Half, MudRule, String)>,
}

fn read_acl(
    r: &Reader<'_>,
    acl: &Acl<'_>,
    value: &Value,
    to: &mut Reading<'_>,
) -> Result<(), MudError> {
    let (side, name, acl_at) = (acl.side, acl.name, acl.at);
    // The family of the ACL's type, for ACEs without an ipv4 or ipv6 match.
    // RFC 8519's type identities, with or without their module prefix; another value is
    // refused rather than read as either family.
    let family = match r.obj(value, acl_at)?.get("type") {
        None => None,
        Some(t) => {
            let type_at = ptr(acl_at, "type");
            let t = r.str(t, &type_at)?;
            match t.strip_prefix("ietf-access-control-list:").unwrap_or(t) {
                "ipv4-acl-type" | "mixed-eth-ipv4-acl-type" => Some(Family::V4),
                "ipv6-acl-type" | "mixed-eth-ipv6-acl-type" => Some(Family::V6),
                "mixed-eth-ipv4-ipv6-acl-type" | "eth-acl-type" => None,
                other => {
                    return Err(r.err(&type_at, format!("{other:?} is not an RFC 8519 ACL type")))
                }
            }
        }
    };
    let aces_at = ptr(acl_at, "aces");
    let Some(aces) = r.obj(value, acl_at)?.get("aces") else {
        return Ok(());
    };
    let list_at = ptr(&aces_at, "ace");
    let Some(list) = r.obj(aces, &aces_at)?.get("ace") else {
        return Ok(());
    };
    for (i, ace) in r.arr(list, &list_at, MAX_ACES)?.iter().enumerate() {
        let at = format!("{list_at}/{i}");
        let o = r.obj(ace, &at)?;
        let ace_name = match o.get("name") {
            Some(n) => r.str(n, &ptr(&at, "name"))?.to_string(),
            None => format!("#{i}"),
        };
        let from = format!("{name}/{ace_name}");
        let forwarding = o
            .get("actions")
            .map(|a| r.obj(a, &ptr(&at, "actions")))
            .transpose()?
            .and_then(|a| a.get("forwarding"))
            .ok_or_else(|| r.err(&at, "an ACE without actions/forwarding"))?;
        let forwarding = r.str(forwarding, &ptr(&at, "actions/forwarding"))?;
        let forwarding = forwarding.rsplit(':').next().unwrap_or(forwarding);
        if forwarding != "accept" {
            to.dropped.get_or_insert_with(|| from.clone());
            to.out.left_out.push((
                from,
                format!("{forwarding}: lazaret denies what no rule allows, so a trailing {forwarding} changes nothing"),
            ));
            continue;
        }
        if let Some(d) = &to.dropped {
            return Err(r.err(
                &at,
                format!(
                    "ACE {from} accepts after {d} drops: lazaret has allow rules only and could not keep \
out what the earlier ACE excludes; move the drop last or split the accept"
                ),
            ));
        }
        let matches_at = ptr(&at, "matches");
        let matches = match o.get("matches") {
            Some(m) => r.obj(m, &matches_at)?,
            None => &Map::new(),
        };
        match ace_rule(r, side, family, matches, &matches_at, to.binding)? {
            Ace::Rule(rule) => to.out.rules.entry(rule).or_default().push(from),
            Ace::Half(half, rule) => to.halves.push((half, rule, from)),
            Ace::LeftOut(why) => to.out.left_out.push((from, why)),
        }
    }
    Ok(())
}

enum Ace {
    Rule(MudRule),
    /// The other half of a flow (see `parse`).
    Half(Half, MudRule),
    LeftOut(String),
}

/// One accepted ACE's matches as a rule, or why it cannot be one exactly.
fn ace_rule(
    r: &Reader<'_>,
    side: Side,
    acl_family: Option<Family>,
    m: &Map<String, Value>,
    at: &str,
    binding: &Binding,
) -> Result<Ace, MudError> {
    const KNOWN: &[&str] = &["ipv4", "ipv6", "tcp", "udp", "icmp", "ietf-mud:mud"];
    if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        let why = if k == "eth" {
            "an Ethernet match: lazaret enforces IP flows only".to_string()
        } else {
            format!("a match lazaret does not know: {k:?}")
        };
        return Ok(Ace::LeftOut(why));
    }
    if m.contains_key("ipv4") && m.contains_key("ipv6") {
        return Err(r.err(at, "both ipv4 and ipv6 matches in one ACE"));
    }
    let (l3_key, l3) = match (m.get("ipv4"), m.get("ipv6")) {
        (Some(v), _) => ("ipv4", Some(r.obj(v, &ptr(at, "ipv4"))?)),
        (_, Some(v)) => ("ipv6", Some(r.obj(v, &ptr(at, "ipv6"))?)),
        _ if acl_family == Some(Family::V6) => ("ipv6", None),
        _ => ("ipv4", None),
    };
    // A match of one family allows that family only: its peers are narrowed to it (here
    // for `any`, in `plan` for the binding's roles, classes and devices).
    let family = match (l3.is_some(), l3_key) {
        (true, "ipv6") => Some(Family::V6),
        (true, _) => Some(Family::V4),
        (false, _) => acl_family,
    };
    let l3_at = ptr(at, l3_key);
    // The peer's side of the packet: the destination of what the device sends.
    let (peer_dir, own_dir) = match side {
        Side::FromDevice => ("dst", "src"),
        Side::ToDevice => ("src", "dst"),
    };
    let long = |d: &str| if d == "dst" { "destination" } else { "source" };
    // Why the ACE cannot be enforced exactly, if it cannot: decided only after every
    // field is read, so a malformed value is refused wherever it is.
    let mut leave: Option<String> = None;
    let mut proto: Option<u8> = None;
    let mut peers: Vec<String> = Vec::new();
    let mut peer_named = false;
    if let Some(l3) = l3 {
        for (k, v) in l3 {
            let k_at = ptr(&l3_at, k);
            match k.as_str() {
                "protocol" => proto = Some(u8::try_from(r.u64(v, &k_at, 255)?).unwrap_or(0)),
                k if k == format!("ietf-acldns:{peer_dir}-dnsname") => {
                    let name = r.str(v, &k_at)?;
                    if peer_named {
                        leave.get_or_insert(two_peers());
                    }
                    match binding.names.get(name) {
                        Some(p) => peers.extend(p.iter().cloned()),
                        None => {
                            leave.get_or_insert(format!(
                                "DNS name {:?}: the binding's [names] does not say what it is here",
                                printable(name)
                            ));
                        }
                    }
                    peer_named = true;
                }
                k if k == format!("{}-{l3_key}-network", long(peer_dir)) => {
                    let net = r.str(v, &k_at)?;
                    if net.parse::<ipnet::IpNet>().is_err() {
                        return Err(r.err(&k_at, format!("{:?} is not a prefix", printable(net))));
                    }
                    if peer_named {
                        leave.get_or_insert(two_peers());
                    }
                    peers.push(net.to_string());
                    peer_named = true;
                }
                k if k == format!("ietf-acldns:{own_dir}-dnsname")
                    || k == format!("{}-{l3_key}-network", long(own_dir)) =>
                {
                    leave.get_or_insert(format!(
                        "{k}: a constraint on the device's own address, which lazaret takes from the inventory"
                    ));
                }
                other => {
                    leave.get_or_insert(format!(
                        "{l3_key} match {other:?}: lazaret cannot enforce it"
                    ));
                }
            }
        }
    }
    if let Some(mud) = m.get("ietf-mud:mud") {
        let mud_at = ptr(at, "ietf-mud:mud");
        let mud = r.obj(mud, &mud_at)?;
        if mud.len() != 1 || peer_named {
            {
                leave.get_or_insert(
                "a MUD abstraction together with another peer constraint: lazaret's peer is one of them, not both"
                    .to_string(),
            );
            };
        }
        let Some((k, v)) = mud.iter().next() else {
            return Err(r.err(&mud_at, "an empty ietf-mud:mud match"));
        };
        let k_at = ptr(&mud_at, k);
        let (what, bound) = match k.as_str() {
            "controller" => {
                let uri = r.str(v, &k_at)?;
                (format!("controller {uri:?}"), binding.controllers.get(uri))
            }
            "manufacturer" => {
                let d = r.str(v, &k_at)?;
                (format!("manufacturer {d:?}"), binding.manufacturers.get(d))
            }
            "model" => {
                let u = r.str(v, &k_at)?;
                (format!("model {u:?}"), binding.models.get(u))
            }
            "my-controller" => (
                "my-controller".to_string(),
                binding.abstractions.my_controller.as_ref(),
            ),
            "local-networks" => (
                "local-networks".to_string(),
                binding.abstractions.local_networks.as_ref(),
            ),
            "same-manufacturer" => (
                "same-manufacturer".to_string(),
                binding.abstractions.same_manufacturer.as_ref(),
            ),
            other => (format!("MUD abstraction {other:?} (not in RFC 8520)"), None),
        };
        match bound {
            Some(p) if !p.is_empty() => peers.extend(p.iter().cloned()),
            _ => {
                leave.get_or_insert(format!(
                    "{}: the binding does not say what it is here",
                    printable(&what)
                ));
            }
        }
        peer_named = true;
    }
    if !peer_named {
        peers.push(
            match family {
                Some(Family::V4) => "0.0.0.0/0",
                Some(Family::V6) => "::/0",
                None => "any",
            }
            .to_string(),
        );
    }
    peers.sort();
    peers.dedup();

    // Transport.
    let l4 = match (m.get("tcp"), m.get("udp"), m.get("icmp")) {
        (Some(v), None, None) => Some(("tcp", 6u8, v)),
        (None, Some(v), None) => Some(("udp", 17u8, v)),
        (None, None, Some(v)) => {
            let icmp_at = ptr(at, "icmp");
            if !r.obj(v, &icmp_at)?.is_empty() {
                {
                    leave.get_or_insert(
                        "an ICMP type or code: lazaret allows a protocol's every ICMP message"
                            .to_string(),
                    );
                };
            }
            let want = if family == Some(Family::V6) { 58 } else { 1 };
            if proto.is_some_and(|p| p != want) {
                return Err(r.err(at, "an icmp match with another protocol"));
            }
            proto = Some(want);
            None
        }
        (None, None, None) => None,
        _ => return Err(r.err(at, "more than one of tcp, udp and icmp in one ACE")),
    };
    let mut initiator = match side {
        Side::FromDevice => Initiator::Device,
        Side::ToDevice => Initiator::Peer,
    };
    let mut ports = None;
    let mut half = (side == Side::ToDevice).then_some(Half::Portless);
    if let Some((name, number, v)) = l4 {
        if proto.is_some_and(|p| p != number) {
            return Err(r.err(
                at,
                format!("a {name} match with protocol {}", proto.unwrap_or(0)),
            ));
        }
        proto = Some(number);
        let l4_at = ptr(at, name);
        let l4 = r.obj(v, &l4_at)?;
        let (mut src, mut dst, mut direction) = (None, None, None);
        for (k, v) in l4 {
            let k_at = ptr(&l4_at, k);
            match k.as_str() {
                "source-port" => src = Some(port_ranges(r, v, &k_at)?),
                "destination-port" => dst = Some(port_ranges(r, v, &k_at)?),
                "ietf-mud:direction-initiated" if name == "tcp" => {
                    direction = Some(match r.str(v, &k_at)? {
                        "from-device" => Side::FromDevice,
                        "to-device" => Side::ToDevice,
                        other => {
                            return Err(r.err(&k_at, format!("{other:?}: from-device or to-device")))
                        }
                    });
                }
                other => {
                    leave.get_or_insert(format!(
                        "{name} match {other:?}: lazaret cannot enforce it"
                    ));
                }
            }
        }
        if src.is_some() && dst.is_some() {
            {
                leave.get_or_insert(
                "both a source and a destination port: lazaret cannot hold the initiator's own port"
                    .to_string(),
            );
            };
        }
        // Who opens: the direction if given, else the side of the port given.
        let opener = direction.or(match (&src, &dst) {
            (None, Some(_)) => Some(side),
            (Some(_), None) => Some(match side {
                Side::FromDevice => Side::ToDevice,
                Side::ToDevice => Side::FromDevice,
            }),
            _ => None,
        });
        if let Some(o) = opener {
            // An ACE whose opener is the other side passes only the flow's replies: it is
            // part of the rule the other side's ACE opens, never a rule of its own (its
            // first packet is not allowed here).
            half = (o != side).then_some(Half::Replies);
            initiator = match o {
                Side::FromDevice => Initiator::Device,
                Side::ToDevice => Initiator::Peer,
            };
            // The responder's port: the destination of what the opener sends.
            let opener_sends = o == side;
            let any_port = src.is_some() || dst.is_some();
            ports = if opener_sends { dst } else { src };
            if ports.is_none() && any_port {
                {
                    leave.get_or_insert(
                        "a port on the initiator's side only: lazaret cannot hold it".to_string(),
                    );
                };
            }
        }
    }
    if let Some(why) = leave {
        return Ok(Ace::LeftOut(why));
    }
    let rule = MudRule {
        family,
        initiator,
        proto,
        peers,
        ports,
    };
    Ok(match half {
        Some(h) => Ace::Half(h, rule),
        None => Ace::Rule(rule),
    })
}

fn two_peers() -> String {
    "two peer constraints in one ACE (a name, a network or an abstraction): the ACE allows \
their intersection, which a lazaret peer cannot say"
        .to_string()
}

/// RFC 8519's `port-range-or-operator`: `{lower-port, upper-port}`, or `{operator, port}`
/// with `eq`, `lte`, `gte` or `neq` (`eq` when absent).
fn port_ranges(r: &Reader<'_>, v: &Value, at: &str) -> Result<Vec<(u16, u16)>, MudError> {
    let o = r.obj(v, at)?;
    let port = |k: &str| -> Result<u16, MudError> {
        let p = o.get(k).ok_or_else(|| r.err(at, format!("no {k}")))?;
        Ok(u16::try_from(r.u64(p, &ptr(at, k), 65535)?).unwrap_or(0))
    };
    if o.contains_key("lower-port") || o.contains_key("upper-port") {
        let (lo, hi) = (port("lower-port")?, port("upper-port")?);
        if lo > hi {
            return Err(r.err(at, format!("lower-port {lo} is above upper-port {hi}")));
        }
        return Ok(vec![(lo, hi)]);
    }
    let p = port("port")?;
    let op = match o.get("operator") {
        Some(v) => r.str(v, &ptr(at, "operator"))?,
        None => "eq",
    };
    Ok(match op {
        "eq" => vec![(p, p)],
        "lte" => vec![(0, p)],
        "gte" => vec![(p, u16::MAX)],
        "neq" => [
            (0, p.checked_sub(1)),
            (
                p.checked_add(1).unwrap_or(0),
                (p < u16::MAX).then_some(u16::MAX),
            ),
        ]
        .into_iter()
        .filter_map(|(lo, hi)| hi.map(|hi| (lo, hi)))
        .collect(),
        other => {
            return Err(r.err(
                &ptr(at, "operator"),
                format!("{other:?}: eq, lte, gte or neq"),
            ))
        }
    })
}

impl fmt::Display for MudRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            None => "any".to_string(),
            Some(6) => "tcp".to_string(),
            Some(17) => "udp".to_string(),
            Some(1) => "icmp".to_string(),
            Some(58) => "icmpv6".to_string(),
            Some(n) => format!("proto {n}"),
        };
        let ports = match &self.ports {
            None => String::new(),
            Some(p) => format!(
                "/{}",
                p.iter().map(|r| range(*r)).collect::<Vec<_>>().join(",")
            ),
        };
        let peers = self.peers.join(", ");
        match self.initiator {
            Initiator::Device => write!(f, "device -> {peers} {proto}{ports}"),
            Initiator::Peer => write!(f, "{peers} -> device {proto}{ports}"),
        }
    }
}

fn range((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// What an import does or would do.
#[derive(Debug)]
pub struct Plan {
    pub imported: Imported,
    pub class: String,
    pub workflow: String,
    /// The generated file and its text.
    pub file: (PathBuf, String),
    /// The class's file, when the import adds the workflow to an existing class.
    pub class_edit: Option<(PathBuf, String)>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "workflow {} for class {} from {}: {} rule(s)",
            self.workflow,
            self.class,
            printable(&self.imported.mud_url),
            self.imported.rules.len()
        )?;
        for rule in self.imported.rules.keys() {
            writeln!(f, "  + {}", printable(&rule.to_string()))?;
        }
        for from in &self.imported.replies {
            writeln!(f, "  replies of a rule above: {}", printable(from))?;
        }
        for (from, why) in &self.imported.left_out {
            writeln!(f, "  left out {}: {}", printable(from), printable(why))?;
        }
        match &self.class_edit {
            Some((path, _)) => write!(
                f,
                "class {} gains the workflow ({})",
                self.class,
                path.display()
            ),
            None => write!(f, "class {} is defined with the workflow", self.class),
        }
    }
}

/// Plans the import of the MUD file `mud` into the policy directory `dir` (nothing written).
pub fn plan(dir: &Path, mud: &Path, binding: &Binding) -> Result<Plan, MudError> {
    let mut imported = read(mud, binding)?;
    let files = load::read_dir(dir).map_err(|e| MudError::PolicyBefore {
        dir: dir.display().to_string(),
        errors: e.render(),
    })?;
    let policy =
        lazaret_policy::parse_sources(files.clone()).map_err(|e| MudError::PolicyBefore {
            dir: dir.display().to_string(),
            errors: e.render(),
        })?;
    narrow(&mut imported, &policy);
    let workflow = binding.workflow();
    let path = dir.join("mud").join(format!("{}.toml", binding.class));
    if let Ok(old) = std::fs::read_to_string(&path) {
        if !old.starts_with(GENERATED) {
            return Err(MudError::Policy(format!(
                "{}: exists and was not written by `lazaret import mud`: move it away first",
                path.display()
            )));
        }
    }
    // The class is defined by the generated file when the repository had none (a first
    // import wrote it there): then it is written again, not edited.
    let existing = (policy.classes.get(&binding.class))
        .filter(|c| Path::new(policy.sources.name(c.span.file)) != path);
    let text = render(
        &imported,
        binding,
        &mud.display().to_string(),
        existing.is_none(),
    );
    let mut class_edit = None;
    if let Some(class) = existing {
        if !class.workflows.contains(&workflow) {
            let file = policy.sources.name(class.span.file).to_string();
            let src = files
                .iter()
                .find(|f| f.name == file)
                .ok_or_else(|| MudError::Policy(format!("{file}: not read")))?;
            class_edit = Some((
                PathBuf::from(&file),
                add_workflow(&src.text, &binding.class, &workflow, &file)?,
            ));
        }
    }
    // The repository the import would leave must load.
    let mut after: Vec<SourceFile> = files
        .into_iter()
        .filter(|f| Path::new(&f.name) != path)
        .collect();
    if let Some((p, t)) = &class_edit {
        for f in &mut after {
            if Path::new(&f.name) == p {
                *f = SourceFile::new(f.name.clone(), t.clone());
            }
        }
    }
    after.push(SourceFile::new(path.display().to_string(), text.clone()));
    lazaret_policy::parse_sources(after)
        .map_err(|e| MudError::PolicyAfter { errors: e.render() })?;
    Ok(Plan {
        imported,
        class: binding.class.clone(),
        workflow,
        file: (path, text),
        class_edit,
    })
}

/// Narrows each rule of one family to peers of that family: a role with addresses of both
/// keeps those of the family (as prefixes); a class or device with addresses of the other
/// family cannot be narrowed, and its rule is left out. Without this an IPv4 ACE bound to
/// a dual-stack role would allow its IPv6 addresses too.
fn narrow(imported: &mut Imported, policy: &Policy) {
    let mut rules = std::mem::take(&mut imported.rules);
    // A rule the file has for both families is one rule for either: nothing to narrow
    // (a dual-stack class peer would otherwise be refused in each family in turn).
    let both: Vec<MudRule> = (rules.keys())
        .filter(|r| r.family == Some(Family::V4))
        .filter(|r| {
            let v6 = MudRule {
                family: Some(Family::V6),
                ..(*r).clone()
            };
            rules.contains_key(&v6)
        })
        .cloned()
        .collect();
    for v4 in both {
        let v6 = MudRule {
            family: Some(Family::V6),
            ..v4.clone()
        };
        let mut from = rules.remove(&v4).unwrap_or_default();
        from.extend(rules.remove(&v6).unwrap_or_default());
        rules
            .entry(MudRule { family: None, ..v4 })
            .or_default()
            .extend(from);
    }
    for (mut rule, from) in rules {
        let Some(family) = rule.family else {
            imported.rules.entry(rule).or_default().extend(from);
            continue;
        };
        let name = match family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        let of = |net: &ipnet::IpNet| Family::of(net) == family;
        let mut peers = Vec::new();
        let mut refused = None;
        for p in &rule.peers {
            let sel = p
                .strip_prefix("role:")
                .map(|r| PeerSel::Role(r.to_string()))
                .or_else(|| {
                    p.strip_prefix("class:")
                        .map(|c| PeerSel::Class(c.to_string()))
                })
                .or_else(|| {
                    p.strip_prefix("device:")
                        .map(|d| PeerSel::Device(d.to_string()))
                });
            match sel {
                Some(PeerSel::Role(r)) => match policy.roles.get(&r) {
                    Some(role) if !role.addresses.iter().all(of) => {
                        let same: Vec<String> = role
                            .addresses
                            .iter()
                            .filter(|a| of(a))
                            .map(ToString::to_string)
                            .collect();
                        if same.is_empty() {
                            refused = Some(format!("role {r} has no {name} address"));
                        }
                        peers.extend(same);
                    }
                    // An unknown role is the policy check's to refuse.
                    _ => peers.push(p.clone()),
                },
                Some(PeerSel::Class(c)) => {
                    let other = (policy.devices.iter())
                        .filter(|d| d.class.as_deref() == Some(c.as_str()))
                        .any(|d| d.addresses().any(|a| Family::of_addr(&a) != family));
                    if other {
                        refused = Some(format!(
                            "class {c} has devices with addresses of the other family than this {name}-only ACE"
                        ));
                    }
                    peers.push(p.clone());
                }
                Some(PeerSel::Device(id)) => {
                    let other = (policy.devices.iter())
                        .filter(|d| d.id == id)
                        .any(|d| d.addresses().any(|a| Family::of_addr(&a) != family));
                    if other {
                        refused = Some(format!(
                            "device {id} has addresses of the other family than this {name}-only ACE"
                        ));
                    }
                    peers.push(p.clone());
                }
                _ if p == "any" => peers.push(match family {
                    Family::V4 => "0.0.0.0/0".to_string(),
                    Family::V6 => "::/0".to_string(),
                }),
                _ => match p.parse::<ipnet::IpNet>() {
                    Ok(net) if !of(&net) => refused = Some(format!("{net} is not {name}")),
                    Ok(_) => peers.push(p.clone()),
                    // The binding's peers are checked when it is read: nothing else is kept.
                    Err(_) => refused = Some(format!("{p:?} is not a peer")),
                },
            }
        }
        match refused {
            Some(why) => imported
                .left_out
                .extend(from.into_iter().map(|f| (f, why.clone()))),
            None => {
                peers.sort();
                peers.dedup();
                rule.peers = peers;
                imported.rules.entry(rule).or_default().extend(from);
            }
        }
    }
}

/// The first line of a file `import mud` writes (and may write over).
const GENERATED: &str = "# Generated by `lazaret import mud`";

/// `text` with `workflow` appended to class `class`'s `workflows`, comments kept.
fn add_workflow(text: &str, class: &str, workflow: &str, file: &str) -> Result<String, MudError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| MudError::Policy(format!("{file}: {e}")))?;
    let table = doc
        .get_mut("classes")
        .and_then(|c| c.get_mut(class))
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| MudError::Policy(format!("{file}: class {class} is not a table here")))?;
    match table.get_mut("workflows") {
        Some(w) => w
            .as_array_mut()
            .ok_or_else(|| {
                MudError::Policy(format!("{file}: class {class}'s workflows is not an array"))
            })?
            .push(workflow),
        None => {
            let mut a = toml_edit::Array::new();
            a.push(workflow);
            table.insert("workflows", toml_edit::value(a));
        }
    }
    Ok(doc.to_string())
}

/// The generated file: the workflow (and the class, when the repository has none).
fn render(imp: &Imported, b: &Binding, source: &str, define_class: bool) -> String {
    let q = |s: &str| toml_edit::Value::from(s).to_string();
    let mut s = String::new();
    let _ = writeln!(s, "{GENERATED} from {}", printable(source));
    let _ = writeln!(s, "# (MUD URL {}).", printable(&imp.mud_url));
    s.push_str("# Regenerate it rather than editing it: change the MUD file or its binding.\n");
    if !imp.left_out.is_empty() {
        s.push_str("#\n# Left out, so that nothing here allows more than the MUD file does:\n");
        for (from, why) in &imp.left_out {
            let _ = writeln!(s, "#   {}: {}", printable(from), printable(why));
        }
    }
    let wf = b.workflow();
    if define_class {
        let _ = writeln!(s, "\n[classes.{}]", key(&b.class));
        let desc = if imp.systeminfo.is_empty() {
            "Described by its manufacturer's MUD file"
        } else {
            &imp.systeminfo
        };
        let _ = writeln!(s, "description = {}", q(desc));
        let _ = writeln!(s, "workflows = [{}]", q(&wf));
    }
    let _ = writeln!(s, "\n[workflows.{}]", key(&wf));
    let desc = format!("What the manufacturer's MUD file allows ({})", imp.mud_url);
    let _ = writeln!(s, "description = {}", q(&desc));
    if b.essential {
        s.push_str("essential = true\n");
    }
    if let Some(mode) = &b.mode {
        let _ = writeln!(s, "mode = {}", q(mode));
    }
    for (rule, from) in &imp.rules {
        let _ = writeln!(s, "\n[[workflows.{}.rules]]", key(&wf));
        let _ = writeln!(s, "# {}", printable(&from.join(", ")));
        let peers: Vec<String> = rule.peers.iter().map(|p| q(p)).collect();
        let _ = writeln!(s, "peer = [{}]", peers.join(", "));
        let proto = match rule.proto {
            None => q("any"),
            Some(6) => q("tcp"),
            Some(17) => q("udp"),
            Some(1) => q("icmp"),
            Some(58) => q("icmpv6"),
            Some(n) => n.to_string(),
        };
        let _ = writeln!(s, "proto = {proto}");
        if let Some(ports) = &rule.ports {
            let p: Vec<String> = ports
                .iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        q(&range((lo, hi)))
                    }
                })
                .collect();
            let _ = writeln!(s, "ports = [{}]", p.join(", "));
        }
        let initiator = match rule.initiator {
            Initiator::Device => "device",
            Initiator::Peer => "peer",
        };
        let _ = writeln!(s, "initiator = {}", q(initiator));
    }
    s
}

/// A TOML key, quoted when it needs to be (`a.b` is one name, not a path).
fn key(name: &str) -> String {
    toml_edit::Key::new(name).to_string()
}

/// Writes the plan's files, each replaced whole.
pub fn write(plan: &Plan) -> Result<(), MudError> {
    let files = std::iter::once(&plan.file).chain(plan.class_edit.as_ref());
    super::super::write_files(files).map_err(|(path, e)| MudError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
