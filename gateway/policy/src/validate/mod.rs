//! Stage two of parsing: raw structs into the validated [`Policy`]. Resolves names (with
//! did-you-mean hints), parses addresses, ports, MACs and dates, checks the inventory for
//! conflicts, and resolves per-device settings. Pure; reports every problem it finds.
//!
//! One `Validator` walks the raw policy; its jobs are split by what they validate:
//! `site` (`[site]`, essentials, roles' servers), `rules` (workflows and their rules),
//! `devices` (the inventory and its conflicts), `values` (names, durations, addresses,
//! protocols, ports).

mod devices;
mod exceptions;
mod risk;
mod rules;
mod site;
mod values;

use super::diag::{did_you_mean, nearest, Diagnostic, Diags, NameKind, Problem};
use super::load::RawPolicy;
use super::model::*;
use super::raw::{NumOrText, RawDevice, RawQuarantine, RawRule, RawWorkflow, Sp};
use super::source::{Sources, Span};
pub use devices::conflicts;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
pub use values::parse_net;
use values::{is_hex_group, text};

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
    if let Some(s) = &raw.site {
        site.gateways = v.gateways(&s.gateways, &site);
    }
    v.names.gateways = site.gateways.keys().cloned().collect();

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

    let mut devices = v.devices(&raw.devices, &site, &classes);
    let advisories = v.advisories(&sources);
    v.risk(
        &mut devices,
        &site,
        &workflows,
        &advisories,
        crate::windows::now() / 86_400,
    );
    let exceptions = v.exceptions(
        &raw.exceptions,
        &site,
        &workflows,
        &devices,
        crate::windows::now(),
    );

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
    // What devices behind a devices-side interface may own is keyed by a 16-bit fold of
    // its name (`lazaret_abi::claim_scope`): two names that fold alike share it.
    let mut scopes: BTreeMap<u16, &str> = BTreeMap::new();
    for i in site.interfaces.values().filter(|i| i.side == Side::Devices) {
        let scope = lazaret_abi::claim_scope(i.name.as_bytes());
        match scopes.get(&scope) {
            Some(first) => v.diags.push(Diagnostic::at(
                Problem::SharedClaimScope {
                    first: (*first).to_string(),
                    second: i.name.clone(),
                },
                i.span,
            )),
            None => {
                scopes.insert(scope, &i.name);
            }
        }
    }

    Policy {
        sources,
        site,
        roles,
        classes,
        workflows,
        devices,
        exceptions,
        advisories,
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
            gateways: policy.site.gateways.keys().cloned().collect(),
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

#[derive(Default, Clone)]
struct Names {
    roles: BTreeSet<String>,
    classes: BTreeSet<String>,
    workflows: BTreeSet<String>,
    devices: BTreeSet<String>,
    interfaces: BTreeSet<String>,
    gateways: BTreeSet<String>,
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

    fn names_of(&self, kind: NameKind) -> &BTreeSet<String> {
        match kind {
            NameKind::Role => &self.names.roles,
            NameKind::Class => &self.names.classes,
            NameKind::Workflow => &self.names.workflows,
            NameKind::Device => &self.names.devices,
            NameKind::Interface => &self.names.interfaces,
            NameKind::Gateway => &self.names.gateways,
            // Ports live in their own map, exceptions are never referred to: the set is
            // never consulted for them.
            NameKind::Port | NameKind::Exception => &self.names.interfaces,
        }
    }
}
