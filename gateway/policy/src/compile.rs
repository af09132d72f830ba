//! The compiler: a validated [`Policy`] into [`Compiled`], the per-device allow-lists
//! (deduplicated into shared policies), the rule table and the datapath lookup structure.
//! Pure and deterministic: no I/O, no clock, no iteration over hash maps where order shows.
//!
//! The output types are in [`super::compiled`], the interner in `super::interner`, the
//! checks of a policy that compiles (capacities, shadowed rules, protocol families) in
//! `super::lints`; the device grouping a device-only edit relies on stays here.

use super::compiled::*;
use super::diag::{Diagnostic, Diags, PolicyErrors, Problem};
use super::interner::{FxMap, Interner};
use super::lints::{capacity_problems, dhcp_port_problem, proto_family_problem, shadowing};
use super::lookup;
use super::model::*;
use super::source::Location;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The grant signature of a device: devices equal in it get the same policies.
pub(crate) type GroupKey = (Option<String>, BTreeSet<String>, u8);

/// How the compiled policies depend on the device inventory, recorded by [`compile`] so a
/// device-only edit can be checked for being local (see [`super::incremental`]).
#[derive(Debug, Default)]
pub(crate) struct Reuse {
    /// (policy, restrict policy) of every device group not named by a rule, by signature.
    pub groups: HashMap<GroupKey, (u32, u32)>,
    /// Device ids a rule names (`device:ID`, as end or peer).
    pub named: BTreeSet<String>,
    /// Classes whose members' addresses appear in other devices' policies: named as a
    /// peer, or an end of a rule with managed peers.
    pub ref_classes: BTreeSet<String>,
    /// Workflows with a rule that has managed peers: their participants' addresses appear
    /// in the peers' policies.
    pub ref_workflows: BTreeSet<String>,
}

impl Reuse {
    /// Whether other devices' policies depend on this device's addresses or membership.
    pub(crate) fn referenced(&self, d: &Device) -> bool {
        self.named.contains(&d.id)
            || d.class
                .as_ref()
                .is_some_and(|c| self.ref_classes.contains(c))
            || d.workflows.iter().any(|w| self.ref_workflows.contains(w))
    }
}

/// The signature [`compile`] groups `d` by, when no rule names it.
pub(crate) fn group_key(d: &Device) -> GroupKey {
    (d.class.clone(), d.workflows.clone(), family_mask(d))
}

/// `group_key(d) == *key`, without building the key.
pub(crate) fn in_group(d: &Device, key: &GroupKey) -> bool {
    d.class == key.0 && d.workflows == key.1 && family_mask(d) == key.2
}

// === The compiler ===

/// A grant: part of a rule as it applies to one device (one direction, one peer set).
/// Interned: devices refer to grants by id, and policies are sets of grant ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Grant {
    rule: u32,
    dir: Dir,
    peers: u32,
    proto: Proto,
    /// Port-set id, or `None` for all ports.
    ports: Option<u32>,
    audit: bool,
}

/// Families a device speaks, as a mask: bit 0 IPv4, bit 1 IPv6.
fn family_mask(d: &Device) -> u8 {
    u8::from(d.speaks(Family::V4)) | (u8::from(d.speaks(Family::V6)) << 1)
}

fn in_mask(net: &IpNet, mask: u8) -> bool {
    match net {
        IpNet::V4(_) => mask & 1 != 0,
        IpNet::V6(_) => mask & 2 != 0,
    }
}

const BOTH: u8 = 3;

/// A rule resolved against the inventory.
pub(crate) struct Resolved<'p> {
    pub(crate) id: u32,
    pub(crate) rule: &'p Rule,
    pub(crate) workflow: Option<&'p Workflow>,
    pub(crate) audit: bool,
    /// Indexes of the devices at the rule's managed end (shared by a workflow's rules).
    pub(crate) ends: std::sync::Arc<[usize]>,
    /// Peer prefixes that are not managed devices (roles, prefixes, any).
    pub(crate) nets: Vec<IpNet>,
    /// Indexes of managed devices named as peers.
    pub(crate) managed: Vec<usize>,
    pub(crate) ports: Option<u32>,
}

struct Compiler<'p> {
    policy: &'p Policy,
    diags: Diags,
    peersets: Interner<Vec<IpNet>>,
    portsets: Interner<Vec<PortRange>>,
    grants: Interner<Grant>,
    rules: Vec<RuleInfo>,
}

/// Compiles a validated policy. Errors: rules that cannot apply (family mismatches) and
/// capacities of the datapath maps; never a partial result.
pub fn compile(policy: &Policy) -> Result<Compiled, PolicyErrors> {
    let mut c = Compiler {
        policy,
        diags: Diags::default(),
        peersets: Interner::new(),
        portsets: Interner::new(),
        grants: Interner::new(),
        rules: Vec::new(),
    };
    let essentials = c.essential_rules();
    let quarantine = c.quarantine_rules();
    let resolved = c.resolve_workflows();
    c.warn_unused(&resolved);

    // Per device: the grants of every rule it is an end or a managed peer of. Devices alike
    // (same class, workflows and families, not named by id in a rule) get the same grants,
    // so grants are computed once per such group: thousands of identical pumps cost one.
    let index = RuleIndex::new(&resolved);
    // Shadowed-rule warnings only read the resolved rules: found on another core meanwhile.
    let n = policy.devices.len();
    let (group_of, mut group_grants, mismatches, groups) = std::thread::scope(|scope| {
        let shadow = scope.spawn(|| shadowing(policy, &resolved));
        let mut groups: BTreeMap<Signature<'_>, usize> = BTreeMap::new();
        let mut group_grants: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
        let mut group_of = Vec::with_capacity(n);
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut mismatches: BTreeMap<u32, (Family, Vec<usize>)> = BTreeMap::new();
        let mut cache: FxMap<(usize, bool, u8), Option<u32>> = FxMap::default();
        for (i, d) in policy.devices.iter().enumerate() {
            let sig = Signature {
                class: d.class.as_deref(),
                workflows: &d.workflows,
                mask: family_mask(d),
                named: index.names(&d.id).then_some(d.id.as_str()),
            };
            if let Some(g) = groups.get(&sig) {
                group_of.push(*g);
                members[*g].push(i);
                continue;
            }
            let g = group_grants.len();
            groups.insert(sig, g);
            group_of.push(g);
            members.push(vec![i]);
            let mask = family_mask(d);
            let base = c.essential_grants(&essentials, mask);
            let (mut full, mut restricted) = (base.clone(), base);
            for (side, rules) in index.rules_of(d) {
                for k in rules {
                    let Some(r) = resolved.get(k) else { continue };
                    let grant = match cache.get(&(k, side, mask)) {
                        Some(g) => *g,
                        None => {
                            let grant = c.rule_grant(r, side, dir_of(r.rule.initiator), mask);
                            cache.insert((k, side, mask), grant);
                            grant
                        }
                    };
                    match grant {
                        Some(id) => {
                            full.push(id);
                            if r.workflow.is_some_and(|w| w.essential) {
                                restricted.push(id);
                            }
                        }
                        None => {
                            if let Some(fam) = c.reachable_family(r, side) {
                                mismatches
                                    .entry(r.id)
                                    .or_insert((fam, Vec::new()))
                                    .1
                                    .push(g);
                            }
                        }
                    }
                }
            }
            group_grants.push((full, restricted));
        }
        match shadow.join() {
            Ok(d) => d.into_iter().for_each(|x| c.diags.push(x)),
            Err(e) => std::panic::resume_unwind(e),
        }
        let mismatches: BTreeMap<u32, (Family, Vec<String>)> = mismatches
            .into_iter()
            .map(|(rule, (fam, gs))| {
                let mut names: Vec<String> = gs
                    .iter()
                    .flat_map(|g| members.get(*g).into_iter().flatten())
                    .filter_map(|i| policy.devices.get(*i).map(|d| d.id.clone()))
                    .collect();
                names.sort();
                names.dedup();
                (rule, (fam, names))
            })
            .collect();
        (group_of, group_grants, mismatches, groups)
    });
    for (rule, (fam, devices)) in mismatches {
        let Some(r) = resolved.iter().find(|r| r.id == rule) else {
            continue;
        };
        let other = if fam == Family::V4 {
            Family::V6
        } else {
            Family::V4
        };
        let shown: Vec<String> = devices.iter().take(3).map(|d| format!("`{d}`")).collect();
        let mut list = shown.join(", ");
        if devices.len() > 3 {
            list.push_str(&format!(" and {} more", devices.len() - 3));
        }
        let verb = if devices.len() == 1 {
            "device {} has"
        } else {
            "devices {} have"
        };
        c.diags.push(
            Diagnostic::at(
                Problem::FamilyMismatch {
                    rule_family: fam.name(),
                    device_family: other.name(),
                    devices: verb.replace("{}", &list),
                },
                r.rule.span,
            )
            .hint(format!(
                "add {} peers to the rule, or {} addresses to the devices",
                other.name(),
                fam.name()
            )),
        );
    }

    // The site quarantine policy: the essentials (both families) and the allow entries.
    let mut qkey = c.essential_grants(&essentials, BOTH);
    for r in &quarantine {
        if let Some(g) = c.rule_grant(r, false, dir_of(r.rule.initiator), BOTH) {
            qkey.push(g);
        }
    }

    // Deduplicate: policy 0 is the quarantine policy, then first appearance by device id.
    let mut policies: Interner<Vec<u32>> = Interner::new();
    let canon = |mut v: Vec<u32>| {
        v.sort_unstable();
        v.dedup();
        v
    };
    let quarantine_policy = policies.id(canon(qkey));
    let mut group_ids: Vec<Option<(u32, u32)>> = vec![None; group_grants.len()];
    let mut assignments = Vec::with_capacity(n);
    for g in group_of {
        let ids = match group_ids.get(g).copied().flatten() {
            Some(ids) => ids,
            None => {
                let (full, restricted) = group_grants
                    .get_mut(g)
                    .map(std::mem::take)
                    .unwrap_or_default();
                let ids = (policies.id(canon(full)), policies.id(canon(restricted)));
                if let Some(slot) = group_ids.get_mut(g) {
                    *slot = Some(ids);
                }
                ids
            }
        };
        assignments.push(ids);
    }

    if c.diags.has_errors() {
        return Err(c.fail());
    }
    let reuse = Reuse {
        groups: groups
            .into_iter()
            .filter(|(sig, _)| sig.named.is_none())
            .filter_map(|(sig, g)| {
                let ids = group_ids.get(g).copied().flatten()?;
                Some((
                    (
                        sig.class.map(str::to_string),
                        sig.workflows.clone(),
                        sig.mask,
                    ),
                    ids,
                ))
            })
            .collect(),
        ..index.reuse(&resolved)
    };

    let keyed: Vec<(u32, &Vec<u32>)> = policies
        .values
        .iter()
        .enumerate()
        .map(|(i, k)| (i as u32, k))
        .collect();
    let shared = &c;
    let compiled_policies: Vec<CompiledPolicy> =
        super::par::map(&keyed, |(id, key)| CompiledPolicy {
            id: *id,
            entries: shared.expand(key),
        });
    let mut lookup = lookup::build(&compiled_policies);
    (lookup.claim4, lookup.claim6) = lookup::claims(policy.site.interfaces.values(), |_| true);
    for g in policy.site.gateways.values() {
        let claims = lookup::claims(policy.site.interfaces.values(), |i| {
            g.interfaces.contains(i)
        });
        let claims = lookup::GatewayClaims {
            claims,
            view: Default::default(),
        };
        lookup.claims_of_gateway.insert(g.name.clone(), claims);
    }

    let classes: Vec<String> = policy.classes.keys().cloned().collect();
    let devices: Vec<CompiledDevice> = policy
        .devices
        .iter()
        .zip(assignments)
        .map(|(d, ids)| CompiledDevice::new(d, &classes, ids))
        .collect();

    let stats = Stats {
        devices: devices.len(),
        classes: classes.len(),
        workflows: policy.workflows.len(),
        roles: policy.roles.len(),
        rules: c.rules.len(),
        policies: compiled_policies.len(),
        dev_mac: devices.iter().filter(|d| d.mac.is_some()).count(),
        dev_ip4: devices.iter().map(|d| d.ipv4.len()).sum(),
        dev_ip6: devices.iter().map(|d| d.ipv6.len()).sum(),
        peer4: lookup.peer4.len() + lookup.claim4.len(),
        peer6: lookup.peer6.len() + lookup.claim6.len(),
        peer_classes: lookup.classes,
        ports: lookup.ports.len(),
    };
    c.capacities(&stats);
    if c.diags.has_errors() {
        return Err(c.fail());
    }
    let mut warnings = policy.warnings.clone();
    warnings.extend(std::mem::take(&mut c.diags).into_items());
    Ok(Compiled {
        site: CompiledSite {
            name: policy.site.name.clone(),
            unknown_audit: policy.site.unknown_audit,
            l2_control: policy.site.l2_control,
            neighbor: policy.site.essentials.neighbor,
            quarantine_policy,
            event_rate: policy.site.event_rate,
            event_burst: policy.site.event_burst,
        },
        interfaces: policy
            .site
            .interfaces
            .values()
            .map(|i| CompiledInterface {
                name: i.name.clone(),
                side: i.side,
            })
            .collect(),
        classes,
        devices,
        policies: Arc::new(compiled_policies),
        rules: Arc::new(c.rules),
        stats,
        lookup: Arc::new(lookup),
        reuse: Arc::new(reuse),
        warnings,
    })
}

fn dir_of(i: Initiator) -> Dir {
    match i {
        Initiator::Device => Dir::DeviceInit,
        Initiator::Peer => Dir::PeerInit,
    }
}

fn any_nets() -> [IpNet; 2] {
    [IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())]
}

pub(crate) fn host(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

/// The essentials' rule ids (in the order dhcp, dns, ntp), absent when turned off.
struct EssentialRules {
    dhcp: Option<u32>,
    dns: Option<u32>,
    ntp: Option<u32>,
}

impl<'p> Compiler<'p> {
    fn fail(&mut self) -> PolicyErrors {
        let mut items = self.policy.warnings.clone();
        items.extend(std::mem::take(&mut self.diags).into_items());
        PolicyErrors {
            sources: self.policy.sources.clone(),
            diagnostics: items,
        }
    }

    fn locate(&self, span: super::source::Span) -> Option<Location> {
        Some(self.policy.sources.locate(span))
    }

    fn add_rule(&mut self, info: RuleInfo) -> u32 {
        let id = self.rules.len() as u32;
        self.rules.push(RuleInfo { id, ..info });
        id
    }

    fn essential_rules(&mut self) -> EssentialRules {
        let e = &self.policy.site.essentials;
        let span = self.policy.site.span;
        let mk = |this: &mut Self,
                  name: &'static str,
                  proto: Proto,
                  ports: Vec<PortRange>,
                  servers: &[IpNet],
                  desc: &str| {
            let location = this.locate(span);
            this.add_rule(RuleInfo {
                id: 0,
                origin: Origin::Essential { name },
                location,
                proto,
                ports: Some(ports),
                initiator: Initiator::Device,
                peers: servers
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect(),
                audit: false,
                description: desc.to_string(),
            })
        };
        let p = |x: u16| PortRange { lo: x, hi: x };
        EssentialRules {
            dhcp: e.dhcp.as_ref().map(|s| {
                mk(self, "dhcp", Proto::Udp, vec![p(67), p(68), p(547)], s, "DHCP and DHCPv6: requests to the servers (and broadcast / all-servers multicast), server replies to port 68")
            }),
            dns: e.dns.as_ref().map(|s| mk(self, "dns", Proto::Any, vec![p(53)], s, "DNS over UDP and TCP to the resolvers")),
            ntp: e.ntp.as_ref().map(|s| mk(self, "ntp", Proto::Udp, vec![p(123)], s, "NTP to the time servers")),
        }
    }

    fn grant(
        &mut self,
        rule: u32,
        dir: Dir,
        peers: Vec<IpNet>,
        proto: Proto,
        ports: Option<Vec<PortRange>>,
        audit: bool,
    ) -> Option<u32> {
        let ports = ports.map(|p| self.portsets.id(p));
        self.grant_ids(rule, dir, peers, proto, ports, audit)
    }

    fn grant_ids(
        &mut self,
        rule: u32,
        dir: Dir,
        mut peers: Vec<IpNet>,
        proto: Proto,
        ports: Option<u32>,
        audit: bool,
    ) -> Option<u32> {
        if peers.is_empty() {
            return None;
        }
        peers.sort_unstable();
        peers.dedup();
        let peers = self.peersets.id(peers);
        Some(self.grants.id(Grant {
            rule,
            dir,
            peers,
            proto,
            ports,
            audit,
        }))
    }

    /// Essentials for a device speaking the families in `mask`.
    fn essential_grants(&mut self, ess: &EssentialRules, mask: u8) -> Vec<u32> {
        let e = &self.policy.site.essentials;
        let p = |x: u16| Some(vec![PortRange { lo: x, hi: x }]);
        let fam = |nets: &[IpNet], m: u8| {
            nets.iter()
                .copied()
                .filter(|n| in_mask(n, m))
                .collect::<Vec<_>>()
        };
        let mut out = Vec::new();
        if let (Some(id), Some(servers)) = (ess.dhcp, e.dhcp.clone()) {
            if mask & 1 != 0 {
                let mut to = fam(&servers, 1);
                to.push(IpNet::V4(Ipv4Net::from(Ipv4Addr::BROADCAST)));
                out.extend(self.grant(id, Dir::DeviceInit, to, Proto::Udp, p(67), false));
                out.extend(self.grant(
                    id,
                    Dir::PeerInit,
                    fam(&servers, 1),
                    Proto::Udp,
                    p(68),
                    false,
                ));
            }
            if mask & 2 != 0 {
                let mut to = fam(&servers, 2);
                to.push(IpNet::V6(Ipv6Net::from(Ipv6Addr::new(
                    0xff02, 0, 0, 0, 0, 0, 1, 2,
                ))));
                out.extend(self.grant(id, Dir::DeviceInit, to, Proto::Udp, p(547), false));
            }
        }
        if let (Some(id), Some(servers)) = (ess.dns, e.dns.clone()) {
            let to = fam(&servers, mask);
            out.extend(self.grant(id, Dir::DeviceInit, to.clone(), Proto::Udp, p(53), false));
            out.extend(self.grant(id, Dir::DeviceInit, to, Proto::Tcp, p(53), false));
        }
        if let (Some(id), Some(servers)) = (ess.ntp, e.ntp.clone()) {
            out.extend(self.grant(
                id,
                Dir::DeviceInit,
                fam(&servers, mask),
                Proto::Udp,
                p(123),
                false,
            ));
        }
        out
    }

    fn rule_info(&self, rule: &Rule, origin: Origin, audit: bool) -> RuleInfo {
        RuleInfo {
            id: 0,
            origin,
            location: self.locate(rule.span),
            proto: rule.proto,
            ports: rule.ports.clone(),
            initiator: rule.initiator,
            peers: rule
                .peers
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
            audit,
            description: rule.description.clone(),
        }
    }

    fn quarantine_rules(&mut self) -> Vec<Resolved<'p>> {
        let policy = self.policy;
        let mut out = Vec::new();
        for rule in &policy.site.quarantine_allow {
            let info = self.rule_info(rule, Origin::Quarantine { index: rule.index }, false);
            let id = self.add_rule(info);
            let nets = self.nets_of(rule);
            let ports = rule.ports.clone().map(|p| self.portsets.id(p));
            self.check_proto_family(rule, &nets);
            out.push(Resolved {
                id,
                rule,
                workflow: None,
                audit: false,
                ends: std::sync::Arc::from(Vec::new()),
                nets,
                managed: Vec::new(),
                ports,
            });
        }
        out
    }

    /// Non-managed peer prefixes of a rule.
    fn nets_of(&self, rule: &Rule) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for p in &rule.peers {
            match p {
                PeerSel::Role(r) => {
                    if let Some(role) = self.policy.roles.get(r) {
                        nets.extend(role.addresses.iter().copied());
                    }
                }
                PeerSel::Prefix(n) => nets.push(*n),
                PeerSel::Any => nets.extend(any_nets()),
                PeerSel::Class(_) | PeerSel::Device(_) => {}
            }
        }
        nets.sort_unstable();
        nets.dedup();
        nets
    }

    fn check_proto_family(&mut self, rule: &Rule, nets: &[IpNet]) {
        if let Some(d) = proto_family_problem(rule, nets) {
            self.diags.push(d);
        }
    }

    fn resolve_workflows(&mut self) -> Vec<Resolved<'p>> {
        let policy = self.policy;
        let index: FxMap<&str, usize> = policy
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.as_str(), i))
            .collect();
        let mut by_class: FxMap<&str, Vec<usize>> = FxMap::default();
        let mut by_workflow: FxMap<&str, Vec<usize>> = FxMap::default();
        for (i, d) in policy.devices.iter().enumerate() {
            if let Some(c) = &d.class {
                by_class.entry(c).or_default().push(i);
            }
            for w in &d.workflows {
                by_workflow.entry(w).or_default().push(i);
            }
        }
        // Device indexes ascend already: pushed in device order.
        let participants: FxMap<&str, std::sync::Arc<[usize]>> = by_workflow
            .into_iter()
            .map(|(w, v)| (w, std::sync::Arc::from(v)))
            .collect();
        let none: std::sync::Arc<[usize]> = std::sync::Arc::from(Vec::new());
        // Resolving reads only the policy: done per workflow in parallel; ids, interning and
        // warnings follow sequentially in workflow order, so the result is deterministic.
        let workflows: Vec<(&String, &Workflow)> = policy.workflows.iter().collect();
        let this = &*self;
        let pre = super::par::map(&workflows, |(name, wf)| {
            let audit = wf.mode != Mode::Enforce;
            wf.rules
                .iter()
                .map(|rule| {
                    let info = this.rule_info(
                        rule,
                        Origin::Workflow {
                            workflow: (*name).clone(),
                            index: rule.index,
                        },
                        audit,
                    );
                    let ends = match &rule.ends {
                        None => participants
                            .get(name.as_str())
                            .cloned()
                            .unwrap_or_else(|| none.clone()),
                        Some(sels) => {
                            let mut v = Vec::new();
                            for s in sels {
                                match s {
                                    EndSel::Class(c) => v.extend(
                                        by_class.get(c.as_str()).into_iter().flatten().copied(),
                                    ),
                                    EndSel::Device(d) => v.extend(index.get(d.as_str()).copied()),
                                }
                            }
                            v.sort_unstable();
                            v.dedup();
                            std::sync::Arc::from(v)
                        }
                    };
                    let mut managed = Vec::new();
                    for p in &rule.peers {
                        match p {
                            PeerSel::Class(c) => managed
                                .extend(by_class.get(c.as_str()).into_iter().flatten().copied()),
                            PeerSel::Device(d) => managed.extend(index.get(d.as_str()).copied()),
                            _ => {}
                        }
                    }
                    managed.sort_unstable();
                    managed.dedup();
                    let nets = this.nets_of(rule);
                    let mut all = nets.clone();
                    for &m in &managed {
                        if let Some(d) = policy.devices.get(m) {
                            all.extend(d.addresses().map(host));
                        }
                    }
                    let proto_problem = proto_family_problem(rule, &all);
                    (info, rule, *wf, audit, ends, nets, managed, proto_problem)
                })
                .collect::<Vec<_>>()
        });
        let mut warned_no_addr = BTreeSet::new();
        let mut out = Vec::new();
        for (info, rule, wf, audit, ends, nets, managed, proto_problem) in pre.into_iter().flatten()
        {
            let id = self.add_rule(info);
            for &m in &managed {
                if let Some(d) = policy.devices.get(m) {
                    if d.ipv4.is_empty() && d.ipv6.is_empty() && warned_no_addr.insert(m) {
                        self.diags.push(
                            Diagnostic::at(
                                Problem::PeerWithoutAddress {
                                    device: d.id.clone(),
                                },
                                d.span,
                            )
                            .note(rule.span, "named as a peer here"),
                        );
                    }
                }
            }
            if let Some(d) = proto_problem {
                self.diags.push(d);
            }
            if let Some(d) = dhcp_port_problem(&wf.name, rule) {
                self.diags.push(d);
            }
            let ports = rule.ports.clone().map(|p| self.portsets.id(p));
            out.push(Resolved {
                id,
                rule,
                workflow: Some(wf),
                audit,
                ends,
                nets,
                managed,
                ports,
            });
        }
        out
    }

    /// The family of the peers a rule reaches from the given side, when there is exactly one.
    fn reachable_family(&self, r: &Resolved<'_>, peer_side: bool) -> Option<Family> {
        let nets = self.side_nets(r, peer_side);
        let nets: Vec<&IpNet> = nets
            .iter()
            .filter(|n| r.rule.proto.family().is_none_or(|f| f == Family::of(n)))
            .collect();
        let v4 = nets.iter().any(|n| Family::of(n) == Family::V4);
        let v6 = nets.iter().any(|n| Family::of(n) == Family::V6);
        match (v4, v6) {
            (true, false) => Some(Family::V4),
            (false, true) => Some(Family::V6),
            _ => None,
        }
    }

    /// Peer prefixes seen from an end device (`peer_side == false`) or from a managed peer.
    fn side_nets(&self, r: &Resolved<'_>, peer_side: bool) -> Vec<IpNet> {
        let devs = &self.policy.devices;
        if peer_side {
            r.ends
                .iter()
                .filter_map(|i| devs.get(*i))
                .flat_map(|d| d.addresses().map(host))
                .collect()
        } else {
            let mut v = r.nets.clone();
            v.extend(
                r.managed
                    .iter()
                    .filter_map(|i| devs.get(*i))
                    .flat_map(|d| d.addresses().map(host)),
            );
            v
        }
    }

    /// The grant of rule `r` for a device at its end (`peer_side == false`) or a managed peer.
    fn rule_grant(
        &mut self,
        r: &Resolved<'_>,
        peer_side: bool,
        end_dir: Dir,
        mask: u8,
    ) -> Option<u32> {
        let dir = if peer_side { end_dir.flip() } else { end_dir };
        let pf = r.rule.proto.family();
        let nets: Vec<IpNet> = self
            .side_nets(r, peer_side)
            .into_iter()
            .filter(|n| in_mask(n, mask) && pf.is_none_or(|f| f == Family::of(n)))
            .collect();
        if nets.is_empty() {
            return None;
        }
        self.grant_ids(r.id, dir, nets, r.rule.proto, r.ports, r.audit)
    }

    /// Entries of a policy from its grant ids, sorted.
    fn expand(&self, grants: &[u32]) -> Vec<Entry> {
        let mut out = Vec::new();
        for g in grants.iter().filter_map(|g| self.grants.get(*g)) {
            let peers = self
                .peersets
                .get(g.peers)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let ports: Vec<Option<PortRange>> = match g.ports.and_then(|p| self.portsets.get(p)) {
                Some(list) => list.iter().copied().map(Some).collect(),
                None => vec![None],
            };
            for peer in peers {
                for p in &ports {
                    out.push(Entry {
                        dir: g.dir,
                        peer: *peer,
                        proto: g.proto,
                        ports: *p,
                        rule: g.rule,
                        audit: g.audit,
                    });
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn warn_unused(&mut self, resolved: &[Resolved<'_>]) {
        // A service window's workflows apply to no device while it is closed, as intended.
        let windowed: BTreeSet<&str> = (self.policy.exceptions.values())
            .flat_map(|e| e.workflows.iter().map(String::as_str))
            .collect();
        let mut used = windowed.clone();
        for r in resolved {
            let Some(wf) = r.workflow else { continue };
            if windowed.contains(wf.name.as_str()) && r.ends.is_empty() {
                continue;
            }
            if r.ends.is_empty() && r.managed.is_empty() {
                // Reported per workflow below when the whole workflow is unused.
                continue;
            }
            used.insert(&wf.name);
            if r.ends.is_empty() {
                self.diags.push(Diagnostic::at(
                    Problem::RuleMatchesNoDevice {
                        workflow: wf.name.clone(),
                        index: r.rule.index,
                    },
                    r.rule.span,
                ));
            }
        }
        for (name, wf) in &self.policy.workflows {
            if !used.contains(name.as_str()) {
                self.diags.push(
                    Diagnostic::at(Problem::UnusedWorkflow { name: name.clone() }, wf.span)
                        .hint("list it in a class's or device's `workflows`, or name devices in its rules"),
                );
            }
        }
    }

    fn capacities(&mut self, s: &Stats) {
        capacity_problems(s)
            .into_iter()
            .for_each(|d| self.diags.push(d));
    }
}

/// What decides a device's grants; devices with equal signatures get equal grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Signature<'p> {
    class: Option<&'p str>,
    workflows: &'p BTreeSet<String>,
    mask: u8,
    /// The device's id, when a rule names it with `device:ID`.
    named: Option<&'p str>,
}

/// Which resolved rules apply to a device, by what it is: its workflows (rules without
/// `device`), its class or id as an end, its class or id as a peer.
struct RuleIndex<'p> {
    by_workflow: HashMap<&'p str, Vec<usize>>,
    class_end: HashMap<&'p str, Vec<usize>>,
    device_end: HashMap<&'p str, Vec<usize>>,
    class_peer: HashMap<&'p str, Vec<usize>>,
    device_peer: HashMap<&'p str, Vec<usize>>,
}

impl<'p> RuleIndex<'p> {
    fn new(resolved: &[Resolved<'p>]) -> Self {
        let mut ix = RuleIndex {
            by_workflow: HashMap::new(),
            class_end: HashMap::new(),
            device_end: HashMap::new(),
            class_peer: HashMap::new(),
            device_peer: HashMap::new(),
        };
        for (k, r) in resolved.iter().enumerate() {
            match (&r.rule.ends, r.workflow) {
                (None, Some(w)) => ix.by_workflow.entry(w.name.as_str()).or_default().push(k),
                (None, None) => {}
                (Some(sels), _) => {
                    for s in sels {
                        match s {
                            EndSel::Class(c) => ix.class_end.entry(c.as_str()).or_default().push(k),
                            EndSel::Device(d) => {
                                ix.device_end.entry(d.as_str()).or_default().push(k);
                            }
                        }
                    }
                }
            }
            for p in &r.rule.peers {
                match p {
                    PeerSel::Class(c) => ix.class_peer.entry(c.as_str()).or_default().push(k),
                    PeerSel::Device(d) => ix.device_peer.entry(d.as_str()).or_default().push(k),
                    _ => {}
                }
            }
        }
        ix
    }

    /// The inventory dependencies of the compiled policies (all but `groups`).
    fn reuse(&self, resolved: &[Resolved<'_>]) -> Reuse {
        let managed = |k: &usize| {
            resolved.get(*k).is_some_and(|r| {
                r.rule
                    .peers
                    .iter()
                    .any(|p| matches!(p, PeerSel::Class(_) | PeerSel::Device(_)))
            })
        };
        let with_managed = |m: &HashMap<&'p str, Vec<usize>>| -> BTreeSet<String> {
            m.iter()
                .filter(|(_, ks)| ks.iter().any(managed))
                .map(|(n, _)| n.to_string())
                .collect()
        };
        let mut ref_classes = with_managed(&self.class_end);
        ref_classes.extend(self.class_peer.keys().map(std::string::ToString::to_string));
        Reuse {
            groups: HashMap::new(),
            named: self
                .device_end
                .keys()
                .chain(self.device_peer.keys())
                .map(std::string::ToString::to_string)
                .collect(),
            ref_classes,
            ref_workflows: with_managed(&self.by_workflow),
        }
    }

    fn names(&self, id: &str) -> bool {
        self.device_end.contains_key(id) || self.device_peer.contains_key(id)
    }

    /// The rules a device is an end of (`false`) and a managed peer of (`true`).
    fn rules_of(&self, d: &Device) -> [(bool, Vec<usize>); 2] {
        let get = |m: &HashMap<&str, Vec<usize>>, k: &str| m.get(k).cloned().unwrap_or_default();
        let class = d.class.as_deref().unwrap_or("");
        let mut ends: Vec<usize> = d
            .workflows
            .iter()
            .flat_map(|w| get(&self.by_workflow, w))
            .collect();
        if d.class.is_some() {
            ends.extend(get(&self.class_end, class));
        }
        ends.extend(get(&self.device_end, &d.id));
        ends.sort_unstable();
        ends.dedup();
        let mut peers = if d.class.is_some() {
            get(&self.class_peer, class)
        } else {
            Vec::new()
        };
        peers.extend(get(&self.device_peer, &d.id));
        peers.sort_unstable();
        peers.dedup();
        [(false, ends), (true, peers)]
    }
}
