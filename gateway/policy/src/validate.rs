//! Stage two of parsing: raw structs into the validated [`Policy`]. Resolves names (with
//! did-you-mean hints), parses addresses, ports, MACs and dates, checks the inventory for
//! conflicts, and resolves per-device settings. Pure; reports every problem it finds.

use super::diag::{did_you_mean, nearest, Diagnostic, Diags, NameKind, Problem};
use super::load::RawPolicy;
use super::model::*;
use super::raw::{NumOrText, RawDevice, RawQuarantine, RawRule, RawWorkflow, Sp};
use super::source::{Sources, Span};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Defaults of `[site.quarantine]`.
const DEFAULT_AFTER: u32 = 20;
const DEFAULT_WITHIN_S: u64 = 60;
const DEFAULT_TTL_S: u64 = 3600;

/// Longest name accepted for roles, classes, workflows, ports, interfaces and device ids.
const MAX_NAME: usize = 64;

/// Validates a merged raw policy. Problems go to `diags`; the returned policy is complete
/// only if `diags` has no errors.
pub fn validate(sources: Arc<Sources>, raw: RawPolicy, diags: &mut Diags) -> Policy {
    let mut v = Validator {
        diags: Dd::Borrowed(diags),
        names: Names::default(),
        used_roles: BTreeSet::new(),
        named_devices: BTreeSet::new(),
        ports: BTreeMap::new(),
    };
    v.names.roles = raw.roles.keys().cloned().collect();
    v.names.classes = raw.classes.keys().cloned().collect();
    v.names.workflows = raw.workflows.keys().cloned().collect();
    v.names.devices = raw
        .devices
        .iter()
        .filter_map(|d| d.id.as_ref().map(|i| i.v.clone()))
        .collect();

    let site_span = raw.site.as_ref().map_or(Span::default(), |s| s.span);
    let (mut site, interfaces_ok) = match &raw.site {
        Some(s) => v.site(s),
        None => {
            v.diags.push(Diagnostic::new(Problem::NoSite, None).hint(
                "add a file with a [site] section (name, interfaces, essentials); see policies/README.md",
            ));
            (v.default_site(), true)
        }
    };
    let _ = interfaces_ok;
    v.names.interfaces = site.interfaces.keys().cloned().collect();

    let mut roles = BTreeMap::new();
    for (name, r) in &raw.roles {
        v.check_name(NameKind::Role, &r.name);
        let addresses = r.addresses.iter().filter_map(|a| v.net(a)).collect();
        roles.insert(
            name.clone(),
            Role {
                name: name.clone(),
                description: text(&r.description),
                addresses,
                span: r.name.span,
            },
        );
    }
    // Essentials' servers resolve against the roles, so they come after them.
    site.essentials = v.essentials(&raw, &roles, site_span);

    let mut classes = BTreeMap::new();
    for (name, c) in &raw.classes {
        v.check_name(NameKind::Class, &c.name);
        let workflows = c
            .workflows
            .iter()
            .filter(|w| v.known(NameKind::Workflow, w))
            .map(|w| w.v.clone())
            .collect();
        classes.insert(
            name.clone(),
            Class {
                name: name.clone(),
                description: text(&c.description),
                workflows,
                mode: c.mode.as_ref().and_then(|m| v.mode(m)),
                quarantine: v.quarantine_partial(&c.quarantine),
                span: c.name.span,
            },
        );
    }

    // Workflows hold most of a big policy's rules and validate independently: in parallel,
    // one chunk per core, merged back in name order.
    let list: Vec<(&String, &RawWorkflow)> = raw.workflows.iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let chunk = list.len().div_ceil(threads).max(512);
    let parts: Vec<ChunkResult> = if list.len() <= chunk {
        vec![v.fork().workflows(&list)]
    } else {
        let parent = &v;
        std::thread::scope(|s| {
            let handles: Vec<_> = list
                .chunks(chunk)
                .map(|c| s.spawn(move || parent.fork().workflows(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut workflows = BTreeMap::new();
    for part in parts {
        v.diags.extend(part.diags);
        v.used_roles.extend(part.used_roles);
        v.named_devices.extend(part.named_devices);
        for w in part.workflows {
            workflows.insert(w.name.clone(), w);
        }
    }
    site.quarantine_allow = raw
        .site
        .as_ref()
        .map(|s| {
            s.quarantine
                .allow
                .iter()
                .enumerate()
                .filter_map(|(i, r)| v.rule(r, i + 1, true))
                .collect()
        })
        .unwrap_or_default();

    let devices = v.devices(&raw.devices, &site, &classes);

    // Unused definitions: warnings, the policy still compiles.
    for (name, r) in &roles {
        if !v.used_roles.contains(name) {
            v.diags.push(Diagnostic::at(
                Problem::UnusedRole { name: name.clone() },
                r.span,
            ));
        }
    }
    let used_classes: BTreeSet<&str> = devices.iter().filter_map(|d| d.class.as_deref()).collect();
    for (name, c) in &classes {
        if !used_classes.contains(name.as_str()) {
            v.diags.push(Diagnostic::at(
                Problem::UnusedClass { name: name.clone() },
                c.span,
            ));
        }
    }

    Policy {
        sources,
        site,
        roles,
        classes,
        workflows,
        devices,
        warnings: Vec::new(),
    }
}

/// Validates `[[devices]]` entries against the rest of an already validated `policy` (its
/// names, site and classes): the device half of [`validate`], for a device-only edit
/// (see [`super::incremental`]). `named` are the device ids the policy's rules name.
/// Duplicate ids and MAC/address conflicts are left to the caller, who checks them over
/// the whole merged inventory with [`conflicts`].
pub fn devices_against(
    policy: &Policy,
    raw: &[RawDevice],
    named: &BTreeSet<String>,
    diags: &mut Diags,
) -> Vec<Device> {
    let mut v = Validator {
        diags: Dd::Borrowed(diags),
        names: Names {
            roles: policy.roles.keys().cloned().collect(),
            classes: policy.classes.keys().cloned().collect(),
            workflows: policy.workflows.keys().cloned().collect(),
            devices: BTreeSet::new(),
            interfaces: policy.site.interfaces.keys().cloned().collect(),
        },
        used_roles: BTreeSet::new(),
        named_devices: named.clone(),
        ports: BTreeMap::new(),
    };
    let mut out = Vec::with_capacity(raw.len());
    for d in raw {
        let Some(id) = v.entry_id(d) else { continue };
        if let Some(dev) = v.device(d, id, &policy.site, &policy.classes) {
            out.push(dev);
        }
    }
    out
}

/// The same MAC, address or id hash on two devices of `devices`.
pub fn conflicts(devices: &[Device], diags: &mut Diags) {
    let mut v = Validator {
        diags: Dd::Borrowed(diags),
        names: Names::default(),
        used_roles: BTreeSet::new(),
        named_devices: BTreeSet::new(),
        ports: BTreeMap::new(),
    };
    v.conflicts(devices);
}

#[derive(Default, Clone)]
struct Names {
    roles: BTreeSet<String>,
    classes: BTreeSet<String>,
    workflows: BTreeSet<String>,
    devices: BTreeSet<String>,
    interfaces: BTreeSet<String>,
}

/// What validating a chunk of workflows found.
struct ChunkResult {
    workflows: Vec<Workflow>,
    diags: Diags,
    used_roles: BTreeSet<String>,
    named_devices: BTreeSet<String>,
}

struct Validator<'d> {
    diags: Dd<'d>,
    names: Names,
    used_roles: BTreeSet<String>,
    /// Devices a rule names with `device:ID` (they have a policy without class or workflow).
    named_devices: BTreeSet<String>,
    ports: BTreeMap<String, u16>,
}

/// The validator's diagnostics: the caller's, or a forked validator's own.
enum Dd<'d> {
    Borrowed(&'d mut Diags),
    Owned(Diags),
}

impl std::ops::Deref for Dd<'_> {
    type Target = Diags;
    fn deref(&self) -> &Diags {
        match self {
            Dd::Borrowed(d) => d,
            Dd::Owned(d) => d,
        }
    }
}

impl std::ops::DerefMut for Dd<'_> {
    fn deref_mut(&mut self) -> &mut Diags {
        match self {
            Dd::Borrowed(d) => d,
            Dd::Owned(d) => d,
        }
    }
}

fn text(s: &Option<Sp<String>>) -> String {
    s.as_ref().map(|s| s.v.clone()).unwrap_or_default()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// `30s`, `5m`, `4h`, `2d` in seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let n: u64 = text.get(..text.len() - 1)?.parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|s| *s > 0)
}

/// An address (`10.1.2.3`, a host prefix) or a prefix (`10.1.0.0/16`), host bits clear.
pub fn parse_net(text: &str) -> Result<IpNet, Problem> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Ok(net),
        Ok(net) => Err(Problem::HostBits {
            text: text.to_string(),
            network: net.trunc().to_string(),
        }),
        Err(_) => Err(Problem::BadAddress {
            text: text.to_string(),
        }),
    }
}

impl Validator<'_> {
    /// A validator with the same names and its own findings, for another thread.
    fn fork(&self) -> Validator<'static> {
        Validator {
            diags: Dd::Owned(Diags::default()),
            names: self.names.clone(),
            used_roles: BTreeSet::new(),
            named_devices: BTreeSet::new(),
            ports: self.ports.clone(),
        }
    }

    fn workflows(mut self, list: &[(&String, &RawWorkflow)]) -> ChunkResult {
        let mut out = Vec::with_capacity(list.len());
        for (name, w) in list {
            self.check_name(NameKind::Workflow, &w.name);
            let rules = w
                .rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| self.rule(r, i + 1, false))
                .collect();
            out.push(Workflow {
                name: (*name).clone(),
                description: text(&w.description),
                mode: w
                    .mode
                    .as_ref()
                    .and_then(|m| self.mode(m))
                    .unwrap_or_default(),
                essential: w.essential.as_ref().is_some_and(|e| e.v),
                rules,
                span: w.name.span,
            });
        }
        let diags = match self.diags {
            Dd::Owned(d) => d,
            Dd::Borrowed(d) => std::mem::take(d),
        };
        ChunkResult {
            workflows: out,
            diags,
            used_roles: self.used_roles,
            named_devices: self.named_devices,
        }
    }

    fn names_of(&self, kind: NameKind) -> &BTreeSet<String> {
        match kind {
            NameKind::Role => &self.names.roles,
            NameKind::Class => &self.names.classes,
            NameKind::Workflow => &self.names.workflows,
            NameKind::Device => &self.names.devices,
            NameKind::Interface => &self.names.interfaces,
            // Ports live in their own map; an empty set is never consulted for them.
            NameKind::Port => &self.names.interfaces,
        }
    }

    fn check_name(&mut self, kind: NameKind, name: &Sp<String>) {
        if !valid_name(&name.v) {
            self.diags.err(
                Problem::InvalidName {
                    kind,
                    name: name.v.clone(),
                },
                name.span,
            );
        }
    }

    /// Whether `name` is defined; reports a dangling name with the nearest match.
    fn known(&mut self, kind: NameKind, name: &Sp<String>) -> bool {
        self.known_str(kind, &name.v, name.span)
    }

    fn known_str(&mut self, kind: NameKind, name: &str, span: Span) -> bool {
        let set = self.names_of(kind);
        if set.contains(name) {
            return true;
        }
        let hint = did_you_mean(name, set.iter().map(String::as_str));
        self.diags.push(
            Diagnostic::at(
                Problem::UnknownName {
                    kind,
                    name: name.to_string(),
                },
                span,
            )
            .maybe_hint(hint),
        );
        false
    }

    fn bad_value(&mut self, key: &str, value: &Sp<String>, allowed: &[&str]) {
        self.diags.push(
            Diagnostic::at(
                Problem::BadValue {
                    key: key.to_string(),
                    value: value.v.clone(),
                    expected: allowed.join(", "),
                },
                value.span,
            )
            .maybe_hint(did_you_mean(&value.v, allowed.iter().copied())),
        );
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        value: &Sp<String>,
        options: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = options.iter().find(|(n, _)| *n == value.v) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.bad_value(key, value, &names);
        None
    }

    fn mode(&mut self, m: &Sp<String>) -> Option<Mode> {
        self.choice(
            "mode",
            m,
            &[
                ("enforce", Mode::Enforce),
                ("audit", Mode::Audit),
                ("learn", Mode::Learn),
            ],
        )
    }

    fn net(&mut self, s: &Sp<String>) -> Option<IpNet> {
        match parse_net(&s.v) {
            Ok(n) => Some(n),
            Err(p) => {
                let hint = match &p {
                    Problem::HostBits { network, .. } => {
                        Some(format!("did you mean \"{network}\"?"))
                    }
                    _ => None,
                };
                self.diags.push(Diagnostic::at(p, s.span).maybe_hint(hint));
                None
            }
        }
    }

    fn duration(&mut self, s: &Sp<String>) -> Option<u64> {
        let d = parse_duration(&s.v);
        if d.is_none() {
            self.diags
                .err(Problem::BadDuration { text: s.v.clone() }, s.span);
        }
        d
    }

    fn ranged(
        &mut self,
        key: &str,
        n: &Sp<i64>,
        lo: i64,
        hi: i64,
        expected: &'static str,
    ) -> Option<i64> {
        if (lo..=hi).contains(&n.v) {
            Some(n.v)
        } else {
            self.diags.err(
                Problem::OutOfRange {
                    key: key.to_string(),
                    value: n.v,
                    expected,
                },
                n.span,
            );
            None
        }
    }

    // === Site ===

    fn default_site(&self) -> Site {
        Site {
            name: String::new(),
            span: Span::default(),
            unknown_audit: false,
            l2_control: false,
            interfaces: BTreeMap::new(),
            ports: BTreeMap::new(),
            essentials: Essentials {
                dhcp: None,
                dns: None,
                ntp: None,
                neighbor: true,
            },
            quarantine_allow: Vec::new(),
            quarantine_defaults: QuarantineSettings {
                after: DEFAULT_AFTER,
                within_s: DEFAULT_WITHIN_S,
                action: QuarantineAction::Restrict,
                ttl_s: DEFAULT_TTL_S,
            },
            event_rate: lazaret_abi::EVENT_RATE_PER_S,
            event_burst: lazaret_abi::EVENT_BURST,
        }
    }

    fn site(&mut self, s: &super::raw::RawSite) -> (Site, bool) {
        let mut site = self.default_site();
        site.span = s.span;
        match &s.name {
            Some(n) => site.name = n.v.clone(),
            None => self.diags.err(
                Problem::MissingKey {
                    key: "name",
                    table: "[site]".to_string(),
                },
                s.span,
            ),
        }
        if let Some(u) = &s.unknown_devices {
            site.unknown_audit =
                self.choice("unknown_devices", u, &[("deny", false), ("audit", true)])
                    == Some(true);
        }
        site.l2_control = s.l2_control.as_ref().is_some_and(|b| b.v);
        let mut ok = true;
        for i in &s.interfaces {
            self.check_name(NameKind::Interface, &i.name);
            let side = match &i.side {
                Some(side) => self.choice(
                    "side",
                    side,
                    &[("devices", Side::Devices), ("upstream", Side::Upstream)],
                ),
                None => {
                    self.diags.err(
                        Problem::MissingKey {
                            key: "side",
                            table: format!("interface `{}`", i.name.v),
                        },
                        i.name.span,
                    );
                    None
                }
            };
            let networks = i.networks.iter().filter_map(|n| self.net(n)).collect();
            match side {
                Some(side) => {
                    site.interfaces.insert(
                        i.name.v.clone(),
                        Interface {
                            name: i.name.v.clone(),
                            side,
                            networks,
                            span: i.name.span,
                        },
                    );
                }
                None => ok = false,
            }
        }
        if site.interfaces.len() > lazaret_abi::MAX_IFACES as usize {
            self.diags.err(
                Problem::Capacity {
                    what: "interfaces",
                    map: lazaret_abi::MAP_IFACE,
                    count: site.interfaces.len() as u64,
                    max: u64::from(lazaret_abi::MAX_IFACES),
                },
                s.span,
            );
        }
        for (name, port) in &s.ports {
            self.check_name(NameKind::Port, name);
            if let Some(p) = self.port_number(port) {
                site.ports.insert(name.v.clone(), p);
            }
        }
        self.ports = site.ports.clone();
        let q = &s.quarantine.defaults;
        let d = &mut site.quarantine_defaults;
        if let Some(n) = &q.after {
            d.after = self
                .ranged("after", n, 1, i64::from(u32::MAX), "1 or more")
                .map_or(d.after, |n| n as u32);
        }
        if let Some(w) = &q.within {
            d.within_s = self.duration(w).unwrap_or(d.within_s);
        }
        if let Some(t) = &q.ttl {
            d.ttl_s = self.duration(t).unwrap_or(d.ttl_s);
        }
        if let Some(a) = &q.action {
            d.action = self.action(a).unwrap_or(d.action);
        }
        if let Some(r) = &s.event_rate {
            site.event_rate = self
                .ranged("rate", r, 1, 1_000_000, "1-1000000")
                .map_or(site.event_rate, |n| n as u32);
        }
        if let Some(b) = &s.event_burst {
            site.event_burst = self
                .ranged("burst", b, 1, 1_000_000, "1-1000000")
                .map_or(site.event_burst, |n| n as u32);
        }
        (site, ok)
    }

    fn action(&mut self, a: &Sp<String>) -> Option<QuarantineAction> {
        self.choice(
            "action",
            a,
            &[
                ("alert", QuarantineAction::Alert),
                ("restrict", QuarantineAction::Restrict),
                ("isolate", QuarantineAction::Isolate),
            ],
        )
    }

    fn essentials(
        &mut self,
        raw: &RawPolicy,
        roles: &BTreeMap<String, Role>,
        site_span: Span,
    ) -> Essentials {
        let e = raw.site.as_ref().map(|s| &s.essentials);
        let on = |b: Option<&Option<Sp<bool>>>| b.and_then(|b| b.as_ref()).is_none_or(|b| b.v);
        let servers = |this: &mut Self,
                       enabled: bool,
                       key: &str,
                       list: Option<&Vec<Sp<String>>>,
                       default_role: &str| {
            if !enabled {
                return None;
            }
            let mut out = Vec::new();
            match list {
                Some(list) => {
                    for s in list {
                        out.extend(this.server(s, roles));
                    }
                }
                None => match roles.get(default_role) {
                    Some(r) => {
                        this.used_roles.insert(default_role.to_string());
                        out.extend(r.addresses.iter().copied());
                    }
                    None => this.diags.push(
                        Diagnostic::new(
                            Problem::UnknownName {
                                kind: NameKind::Role,
                                name: default_role.to_string(),
                            },
                            raw.site.as_ref().map(|_| site_span),
                        )
                        .hint(format!(
                            "the {key} essential uses role `{default_role}` by default: define it, set [site.essentials] {key}_servers, or turn the essential off with {key} = false"
                        )),
                    ),
                },
            }
            Some(out)
        };
        Essentials {
            dhcp: servers(
                self,
                on(e.map(|e| &e.dhcp)),
                "dhcp",
                e.and_then(|e| e.dhcp_servers.as_ref()),
                "dhcp",
            ),
            dns: servers(
                self,
                on(e.map(|e| &e.dns)),
                "dns",
                e.and_then(|e| e.dns_servers.as_ref()),
                "dns",
            ),
            ntp: servers(
                self,
                on(e.map(|e| &e.ntp)),
                "ntp",
                e.and_then(|e| e.ntp_servers.as_ref()),
                "ntp",
            ),
            neighbor: on(e.map(|e| &e.neighbor)),
        }
    }

    /// A server selector of the essentials: a role or a prefix.
    fn server(&mut self, s: &Sp<String>, roles: &BTreeMap<String, Role>) -> Vec<IpNet> {
        match self.peer_sel(s, false) {
            Some(PeerSel::Role(r)) => roles
                .get(&r)
                .map(|r| r.addresses.clone())
                .unwrap_or_default(),
            Some(PeerSel::Prefix(p)) => vec![p],
            Some(PeerSel::Any) => vec![
                IpNet::V4(ipnet::Ipv4Net::default()),
                IpNet::V6(ipnet::Ipv6Net::default()),
            ],
            _ => Vec::new(),
        }
    }

    // === Rules ===

    fn peer_sel(&mut self, s: &Sp<String>, allow_managed: bool) -> Option<PeerSel> {
        let t = s.v.trim();
        if let Some(name) = t.strip_prefix("role:") {
            if self.known_str(NameKind::Role, name, s.span) {
                if !self.used_roles.contains(name) {
                    self.used_roles.insert(name.to_string());
                }
                return Some(PeerSel::Role(name.to_string()));
            }
            return None;
        }
        for (prefix, kind) in [("class:", NameKind::Class), ("device:", NameKind::Device)] {
            if let Some(name) = t.strip_prefix(prefix) {
                if !allow_managed {
                    self.diags.err(
                        Problem::ManagedPeerInQuarantine { text: s.v.clone() },
                        s.span,
                    );
                    return None;
                }
                if !self.known_str(kind, name, s.span) {
                    return None;
                }
                if kind == NameKind::Device {
                    self.named_devices.insert(name.to_string());
                    return Some(PeerSel::Device(name.to_string()));
                }
                return Some(PeerSel::Class(name.to_string()));
            }
        }
        if t == "any" {
            return Some(PeerSel::Any);
        }
        match parse_net(t) {
            Ok(net) => Some(PeerSel::Prefix(net)),
            Err(p) => {
                // `rol:x` or `clas:x` is a misspelt selector, not an address.
                if let Some((word, _)) = t.split_once(':') {
                    if !word.is_empty()
                        && word.chars().all(|c| c.is_ascii_alphabetic())
                        && word.parse::<IpAddr>().is_err()
                        && !is_hex_group(word)
                    {
                        let rest = t.split_once(':').map_or("", |(_, r)| r);
                        let hint = nearest(word, ["role", "class", "device"])
                            .map(|k| format!("did you mean \"{k}:{rest}\"?"));
                        self.diags.push(
                            Diagnostic::at(
                                Problem::BadSelector {
                                    text: s.v.clone(),
                                    expected: "role:NAME, class:NAME, device:ID, an address or prefix, or any",
                                },
                                s.span,
                            )
                            .maybe_hint(hint),
                        );
                        return None;
                    }
                }
                let hint = match &p {
                    Problem::HostBits { network, .. } => {
                        Some(format!("did you mean \"{network}\"?"))
                    }
                    _ => None,
                };
                self.diags.push(Diagnostic::at(p, s.span).maybe_hint(hint));
                None
            }
        }
    }

    fn end_sel(&mut self, s: &Sp<String>) -> Option<EndSel> {
        let t = s.v.trim();
        if let Some(name) = t.strip_prefix("class:") {
            return self
                .known_str(NameKind::Class, name, s.span)
                .then(|| EndSel::Class(name.to_string()));
        }
        if let Some(name) = t.strip_prefix("device:") {
            if self.known_str(NameKind::Device, name, s.span) {
                self.named_devices.insert(name.to_string());
                return Some(EndSel::Device(name.to_string()));
            }
            return None;
        }
        self.diags
            .err(Problem::BadEnd { text: s.v.clone() }, s.span);
        None
    }

    fn proto(&mut self, p: &Sp<NumOrText>) -> Option<Proto> {
        let bad = |this: &mut Self, text: String| {
            let hint = did_you_mean(&text, ["tcp", "udp", "icmp", "icmpv6", "any"]);
            this.diags
                .push(Diagnostic::at(Problem::BadProto { text }, p.span).maybe_hint(hint));
            None
        };
        match &p.v {
            NumOrText::Num(n) => match u8::try_from(*n) {
                Ok(n) => Some(Proto::from_number(n)),
                Err(_) => bad(self, n.to_string()),
            },
            NumOrText::Text(t) => match t.as_str() {
                "any" => Some(Proto::Any),
                "tcp" => Some(Proto::Tcp),
                "udp" => Some(Proto::Udp),
                "icmp" => Some(Proto::Icmp),
                "icmpv6" => Some(Proto::Icmpv6),
                other => match other.parse::<u8>() {
                    Ok(n) => Some(Proto::from_number(n)),
                    Err(_) => bad(self, other.to_string()),
                },
            },
        }
    }

    fn port_number(&mut self, n: &Sp<i64>) -> Option<u16> {
        match u16::try_from(n.v) {
            Ok(p) => Some(p),
            Err(_) => {
                self.diags
                    .err(Problem::PortOutOfRange { value: n.v }, n.span);
                None
            }
        }
    }

    fn port_text(&mut self, t: &str, span: Span) -> Option<u16> {
        match t.trim().parse::<i64>() {
            Ok(n) => self.port_number(&Sp { v: n, span }),
            Err(_) => {
                let name = t.trim();
                if let Some(p) = self.ports.get(name) {
                    return Some(*p);
                }
                let looks_like_name = name.chars().any(|c| c.is_ascii_alphabetic());
                if looks_like_name {
                    let hint = did_you_mean(name, self.ports.keys().map(String::as_str));
                    self.diags.push(
                        Diagnostic::at(
                            Problem::UnknownName {
                                kind: NameKind::Port,
                                name: name.to_string(),
                            },
                            span,
                        )
                        .maybe_hint(
                            hint.or_else(|| Some("define it under [site.ports]".to_string())),
                        ),
                    );
                } else {
                    self.diags.err(
                        Problem::BadPort {
                            text: t.to_string(),
                        },
                        span,
                    );
                }
                None
            }
        }
    }

    fn port_range(&mut self, p: &Sp<NumOrText>) -> Option<PortRange> {
        match &p.v {
            NumOrText::Num(n) => self
                .port_number(&Sp {
                    v: *n,
                    span: p.span,
                })
                .map(|x| PortRange { lo: x, hi: x }),
            NumOrText::Text(t) => match t.split_once('-') {
                Some((a, b))
                    if !a.trim().is_empty() && a.trim().chars().all(|c| c.is_ascii_digit()) =>
                {
                    if !b.trim().chars().all(|c| c.is_ascii_digit()) || b.trim().is_empty() {
                        self.diags.err(Problem::BadPort { text: t.clone() }, p.span);
                        return None;
                    }
                    let lo = self.port_text(a, p.span)?;
                    let hi = self.port_text(b, p.span)?;
                    if lo > hi {
                        self.diags.push(
                            Diagnostic::at(Problem::ReversedPortRange { lo, hi }, p.span)
                                .hint(format!("did you mean \"{hi}-{lo}\"?")),
                        );
                        return None;
                    }
                    Some(PortRange { lo, hi })
                }
                _ => self
                    .port_text(t, p.span)
                    .map(|x| PortRange { lo: x, hi: x }),
            },
        }
    }

    /// A workflow rule, or an `allow` entry of the quarantine profile (`quarantine`).
    fn rule(&mut self, r: &RawRule, index: usize, quarantine: bool) -> Option<Rule> {
        let mut ok = true;
        let what = if quarantine {
            "a quarantine allow entry"
        } else {
            "a rule"
        };
        let ends = match &r.device {
            Some(list) if !quarantine => {
                let mut out = Vec::new();
                for s in list {
                    match self.end_sel(s) {
                        Some(e) => out.push(e),
                        None => ok = false,
                    }
                }
                Some(out)
            }
            _ => None,
        };
        let mut peers = Vec::new();
        match &r.peer {
            Some(list) if !list.is_empty() => {
                for s in list {
                    match self.peer_sel(s, !quarantine) {
                        Some(p) => peers.push(p),
                        None => ok = false,
                    }
                }
            }
            _ => {
                self.diags.err(
                    Problem::MissingKey {
                        key: "peer",
                        table: what.to_string(),
                    },
                    r.span,
                );
                ok = false;
            }
        }
        let proto = match &r.proto {
            Some(p) => self.proto(p),
            None => {
                self.diags.push(
                    Diagnostic::at(
                        Problem::MissingKey {
                            key: "proto",
                            table: what.to_string(),
                        },
                        r.span,
                    )
                    .hint(
                        "write proto = \"tcp\", \"udp\", \"icmp\", \"icmpv6\", \"any\" or a number",
                    ),
                );
                None
            }
        };
        let mut ports = None;
        if let Some(list) = &r.ports {
            if let Some(proto) = proto {
                if !proto.has_ports() {
                    let span = list.first().map_or(r.span, |p| p.span);
                    self.diags.err(
                        Problem::PortsWithoutPortProtocol {
                            proto: proto.to_string(),
                        },
                        span,
                    );
                    ok = false;
                }
            }
            let mut out = Vec::new();
            for p in list {
                match self.port_range(p) {
                    Some(x) => out.push(x),
                    None => ok = false,
                }
            }
            if list.is_empty() {
                self.diags.push(Diagnostic::at(
                    Problem::BadValue {
                        key: "ports".to_string(),
                        value: "[]".to_string(),
                        expected: "at least one port (omit `ports` to allow all)".to_string(),
                    },
                    r.span,
                ));
                ok = false;
            }
            ports = Some(out);
        }
        let initiator = match &r.initiator {
            Some(i) => self.choice(
                "initiator",
                i,
                &[("device", Initiator::Device), ("peer", Initiator::Peer)],
            ),
            None => Some(Initiator::Device),
        };
        let (Some(proto), Some(initiator), true) = (proto, initiator, ok) else {
            return None;
        };
        Some(Rule {
            span: r.span,
            index,
            ends,
            peers,
            proto,
            ports,
            initiator,
            description: text(&r.description),
        })
    }

    fn quarantine_partial(&mut self, q: &RawQuarantine) -> QuarantinePartial {
        QuarantinePartial {
            after: q
                .after
                .as_ref()
                .and_then(|n| self.ranged("after", n, 1, i64::from(u32::MAX), "1 or more"))
                .map(|n| n as u32),
            within_s: q.within.as_ref().and_then(|w| self.duration(w)),
            action: q
                .action
                .as_ref()
                .and_then(|a| self.action(a).map(|x| (x, a.span))),
            ttl_s: q.ttl.as_ref().and_then(|t| self.duration(t)),
        }
    }

    // === Devices ===

    fn devices(
        &mut self,
        raw: &[RawDevice],
        site: &Site,
        classes: &BTreeMap<String, Class>,
    ) -> Vec<Device> {
        let mut out: Vec<Device> = Vec::with_capacity(raw.len());
        let mut ids: BTreeMap<&str, Span> = BTreeMap::new();
        for d in raw {
            let Some(id) = self.entry_id(d) else { continue };
            if let Some(first) = ids.get(id.v.as_str()) {
                self.diags.push(
                    Diagnostic::at(
                        Problem::DuplicateName {
                            kind: NameKind::Device,
                            name: id.v.clone(),
                        },
                        id.span,
                    )
                    .note(*first, "first defined here"),
                );
                continue;
            }
            ids.insert(&id.v, id.span);
            if let Some(dev) = self.device(d, id, site, classes) {
                out.push(dev);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        self.conflicts(&out);
        out
    }

    /// A `[[devices]]` entry's id, checked; an error when it has none.
    fn entry_id<'r>(&mut self, d: &'r RawDevice) -> Option<&'r Sp<String>> {
        let Some(id) = &d.id else {
            self.diags.err(
                Problem::MissingKey {
                    key: "id",
                    table: "a [[devices]] entry".to_string(),
                },
                d.span,
            );
            return None;
        };
        self.check_name(NameKind::Device, id);
        Some(id)
    }

    fn device(
        &mut self,
        d: &RawDevice,
        id: &Sp<String>,
        site: &Site,
        classes: &BTreeMap<String, Class>,
    ) -> Option<Device> {
        let class = d
            .class
            .as_ref()
            .filter(|c| self.known(NameKind::Class, c))
            .map(|c| c.v.clone());
        let class_def = class.as_ref().and_then(|c| classes.get(c));
        let mac = d.mac.as_ref().and_then(|m| match m.v.parse::<Mac>() {
            Ok(mac) => Some(mac),
            Err(()) => {
                self.diags.push(
                    Diagnostic::at(Problem::BadMac { text: m.v.clone() }, m.span)
                        .hint("write six hex bytes separated by `:`, e.g. 00:1a:2b:3c:4d:5e"),
                );
                None
            }
        });
        let mut ipv4 = Vec::new();
        let mut ipv6 = Vec::new();
        for (key, list) in [("ipv4", &d.ipv4), ("ipv6", &d.ipv6)] {
            for a in list {
                match a.v.trim().parse::<IpAddr>() {
                    Ok(IpAddr::V4(x)) if key == "ipv4" => ipv4.push(x),
                    Ok(IpAddr::V6(x)) if key == "ipv6" => ipv6.push(x),
                    Ok(other) => self.diags.push(
                        Diagnostic::at(
                            Problem::WrongFamily {
                                key,
                                family: Family::of_addr(&other).name(),
                                addr: a.v.clone(),
                            },
                            a.span,
                        )
                        .hint(format!(
                            "move it to `{}`",
                            if key == "ipv4" { "ipv6" } else { "ipv4" }
                        )),
                    ),
                    Err(_) => self.diags.push(
                        Diagnostic::at(Problem::BadAddress { text: a.v.clone() }, a.span)
                            .hint("a device address is a single address, without a prefix length"),
                    ),
                }
            }
        }
        ipv4.sort();
        ipv4.dedup();
        ipv6.sort();
        ipv6.dedup();
        if mac.is_none()
            && d.mac.is_none()
            && ipv4.is_empty()
            && ipv6.is_empty()
            && d.ipv4.is_empty()
            && d.ipv6.is_empty()
        {
            self.diags.push(
                Diagnostic::at(
                    Problem::NoIdentity {
                        device: id.v.clone(),
                    },
                    id.span,
                )
                .hint("give it a `mac`, an `ipv4` or an `ipv6` address"),
            );
        }
        let vlan = d.vlan.as_ref().and_then(|v| {
            if (0..=4094).contains(&v.v) {
                Some(v.v as u16)
            } else {
                self.diags.err(Problem::BadVlan { value: v.v }, v.span);
                None
            }
        });
        let interface = d.interface.as_ref().and_then(|i| {
            if !self.known(NameKind::Interface, i) {
                return None;
            }
            let iface = site.interfaces.get(&i.v)?;
            if iface.side != Side::Devices {
                self.diags.err(
                    Problem::NotADeviceInterface {
                        device: id.v.clone(),
                        interface: i.v.clone(),
                    },
                    i.span,
                );
                return None;
            }
            if !iface.networks.is_empty() {
                let addrs = ipv4
                    .iter()
                    .map(|a| IpAddr::V4(*a))
                    .chain(ipv6.iter().map(|a| IpAddr::V6(*a)));
                for a in addrs {
                    if !iface.networks.iter().any(|n| n.contains(&a)) {
                        self.diags.push(
                            Diagnostic::at(
                                Problem::AddressOutsideInterface {
                                    addr: a.to_string(),
                                    device: id.v.clone(),
                                    interface: i.v.clone(),
                                },
                                i.span,
                            )
                            .note(iface.span, "the interface's networks are defined here"),
                        );
                    }
                }
            }
            Some(i.v.clone())
        });
        let port = d.port.as_ref().and_then(|p| {
            if interface.is_none() {
                self.diags.push(
                    Diagnostic::at(
                        Problem::PortWithoutInterface {
                            device: id.v.clone(),
                        },
                        p.span,
                    )
                    .hint("add `interface = \"<bridge>\"`: a port belongs to a bridge"),
                );
                return None;
            }
            // Linux interface names: IFNAMSIZ - 1 bytes, no '/', ':' or whitespace.
            let ok = !p.v.is_empty()
                && p.v.len() <= 15
                && !p
                    .v
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace());
            if !ok {
                self.diags
                    .err(Problem::BadPortName { name: p.v.clone() }, p.span);
                return None;
            }
            Some(p.v.clone())
        });
        let last_patched = d
            .last_patched
            .as_ref()
            .and_then(|t| match t.v.parse::<Date>() {
                Ok(date) => Some(date),
                Err(()) => {
                    self.diags
                        .err(Problem::BadDate { text: t.v.clone() }, t.span);
                    None
                }
            });
        let patient_connection = d
            .patient_connection
            .as_ref()
            .and_then(|p| {
                self.choice(
                    "patient_connection",
                    p,
                    &[
                        ("direct", PatientConnection::Direct),
                        ("indirect", PatientConnection::Indirect),
                        ("none", PatientConnection::None),
                    ],
                )
            })
            .unwrap_or_default();
        let inventory = Inventory {
            vendor: text(&d.vendor),
            model: text(&d.model),
            serial: text(&d.serial),
            firmware: text(&d.firmware),
            last_patched,
            location: text(&d.location),
            owner: text(&d.owner),
            life_critical: d.life_critical.as_ref().is_some_and(|b| b.v),
            stores_phi: d.stores_phi.as_ref().is_some_and(|b| b.v),
            patient_connection,
            patchable: d.patchable.as_ref().is_none_or(|b| b.v),
            notes: text(&d.notes),
        };
        let own_mode = d.mode.as_ref().and_then(|m| self.mode(m));
        let mode = own_mode
            .or(class_def.and_then(|c| c.mode))
            .unwrap_or_default();
        let mut workflows: BTreeSet<String> = class_def
            .map(|c| c.workflows.iter().cloned().collect())
            .unwrap_or_default();
        for w in &d.workflows {
            if self.known(NameKind::Workflow, w) {
                workflows.insert(w.v.clone());
            }
        }
        let own_q = self.quarantine_partial(&d.quarantine);
        let class_q = class_def.map(|c| c.quarantine).unwrap_or_default();
        let defaults = site.quarantine_defaults;
        let (action, action_span) = match own_q.action.or(class_q.action) {
            Some((a, span)) => (a, Some(span)),
            // Cutting off a life-sustaining device must be a deliberate decision.
            None if inventory.life_critical => (QuarantineAction::Alert, None),
            None => (defaults.action, None),
        };
        if inventory.life_critical && action != QuarantineAction::Alert {
            self.diags.push(
                Diagnostic::new(
                    Problem::LifeCriticalQuarantine {
                        device: id.v.clone(),
                        action: action.name().to_string(),
                    },
                    Some(action_span.unwrap_or(id.span)),
                )
                .note(id.span, "the device is defined here")
                .hint("make sure this is deliberate, or set quarantine.action = \"alert\" on the device"),
            );
        }
        let quarantine = QuarantineSettings {
            after: own_q.after.or(class_q.after).unwrap_or(defaults.after),
            within_s: own_q
                .within_s
                .or(class_q.within_s)
                .unwrap_or(defaults.within_s),
            action,
            ttl_s: own_q.ttl_s.or(class_q.ttl_s).unwrap_or(defaults.ttl_s),
        };
        if class.is_none()
            && workflows.is_empty()
            && d.class.is_none()
            && !self.named_devices.contains(&id.v)
        {
            self.diags.push(
                Diagnostic::at(
                    Problem::DeviceWithoutPolicy {
                        device: id.v.clone(),
                    },
                    id.span,
                )
                .hint("give it a `class` or `workflows`"),
            );
        }
        Some(Device {
            id: id.v.clone(),
            span: id.span,
            class,
            mac,
            ipv4,
            ipv6,
            vlan,
            interface,
            port,
            inventory,
            mode,
            workflows,
            quarantine,
        })
    }

    /// The same MAC or address on two devices.
    fn conflicts(&mut self, devices: &[Device]) {
        let mut macs: BTreeMap<Mac, &Device> = BTreeMap::new();
        let mut addrs: BTreeMap<IpAddr, &Device> = BTreeMap::new();
        let mut hashes: BTreeMap<u64, &Device> = BTreeMap::new();
        // Report the later definition (in file order) against the earlier one.
        let mut order: Vec<&Device> = devices.iter().collect();
        order.sort_by_key(|d| d.span);
        for d in order {
            if let Some(mac) = d.mac {
                if let Some(first) = macs.get(&mac) {
                    self.diags.push(
                        Diagnostic::at(
                            Problem::DuplicateMac {
                                mac: mac.to_string(),
                                first: first.id.clone(),
                                second: d.id.clone(),
                            },
                            d.span,
                        )
                        .note(first.span, format!("`{}` is defined here", first.id)),
                    );
                } else {
                    macs.insert(mac, d);
                }
            }
            for a in d.addresses() {
                if let Some(first) = addrs.get(&a) {
                    self.diags.push(
                        Diagnostic::at(
                            Problem::DuplicateAddress {
                                addr: a.to_string(),
                                first: first.id.clone(),
                                second: d.id.clone(),
                            },
                            d.span,
                        )
                        .note(first.span, format!("`{}` is defined here", first.id)),
                    );
                } else {
                    addrs.insert(a, d);
                }
            }
            let h = lazaret_abi::device_id_hash(d.id.as_bytes());
            if let Some(first) = hashes.get(&h) {
                self.diags.push(Diagnostic::at(
                    Problem::DeviceIdCollision {
                        first: first.id.clone(),
                        second: d.id.clone(),
                    },
                    d.span,
                ));
            } else {
                hashes.insert(h, d);
            }
        }
    }
}

/// Whether `word` could be the first group of an IPv6 address (`fd00:`, `dead:`).
fn is_hex_group(word: &str) -> bool {
    word.len() <= 4 && word.chars().all(|c| c.is_ascii_hexdigit())
}
