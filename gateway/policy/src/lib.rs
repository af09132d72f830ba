//! The policy language, its validation, the compiler into the datapath's maps, and the
//! reference classifier. Pure: no aya, no kernel; the only I/O is reading policy files in
//! [`load`], and in [`git`] for reading a policy at a git revision.
//!
//! # The language
//! A policy is a directory of `*.toml` files in any layout, read recursively in sorted path
//! order. Each file may hold any of the top-level sections; a name defined twice (in one
//! file or two) is an error citing both places. `policies/README.md` is the user's guide;
//! in short:
//!
//! - `[site]`: `name`; `unknown_devices = "deny" | "audit"`; `l2_control` (pass LLDP, STP,
//!   LACP, 802.1X from device ports); `[site.interfaces.NAME]` with `side = "devices" |
//!   "upstream"` and the `networks` behind it; `[site.ports]` named site-configured ports;
//!   `[site.essentials]` (`dhcp`, `dns`, `ntp`, `neighbor`, each on by default, and
//!   `dhcp_servers`/`dns_servers`/`ntp_servers`, by default `role:dhcp`, `role:dns`,
//!   `role:ntp`); `[site.quarantine]` with `allow` entries (what an isolated device may
//!   still reach) and defaults `after`, `within`, `action`, `ttl`; `[site.events]` `rate`
//!   and `burst`.
//! - `[roles.NAME]`: `description`, `addresses` (addresses and prefixes, both families).
//! - `[classes.NAME]`: `description`, `workflows`, `mode`, `quarantine = { after, within,
//!   action, ttl }`.
//! - `[workflows.NAME]`: `description`, `mode`, `essential`, and `[[workflows.NAME.rules]]`
//!   with `device` (`class:X` / `device:ID`, or a list; omitted: every device that takes
//!   part in the workflow through its class's or its own `workflows`), `peer` (`role:X`,
//!   `class:X`, `device:ID`, an address or prefix, `any`, or a list), `proto` (`tcp`, `udp`,
//!   `icmp`, `icmpv6`, `any` or a number), `ports` (numbers, `"a-b"` ranges, site port
//!   names; omitted: all), `initiator` (`device`, the default, or `peer`).
//! - `[[devices]]`: `id`, `class`, identity (`mac`, `ipv4`, `ipv6`, `vlan`, `interface`,
//!   `port`; an address is a host's own, never unspecified, broadcast, multicast,
//!   loopback or IPv4-mapped), inventory (`vendor`, `model`, `serial`, `firmware`, `last_patched`, `location`,
//!   `owner`, `life_critical`, `stores_phi`, `patient_connection`, `patchable`, `notes`) and
//!   overrides (`mode`, extra `workflows`, `quarantine`).
//! - `[exceptions.NAME]`: a vendor service window — `devices` and/or `class`, non-essential
//!   `workflows` without `device` selectors, `from` and `until` or `duration` (within
//!   `[site.exceptions] max`), `ticket`, `approved_by`. Compiled in only while open (see
//!   [`windows`]).
//!
//! # Semantics
//! Default deny: a device may open, and accept, only the flows its workflows and the
//! essentials allow; replies of an allowed flow are implicit. A rule authorizes its flow
//! end to end: when `peer` names managed devices, the rule compiles into their policies
//! too. A rule whose peer is a role or prefix grants nothing to managed devices inside it:
//! the datapath asks every managed end. A device speaks IPv4 if it has an IPv4 address or no
//! address at all (MAC only), likewise IPv6; its policy holds peers of those families only.
//! When several entries match, an enforcing rule wins over an audit one, then the rule that
//! comes first (essentials, quarantine profile, workflows by name, rules in order).

pub mod advisories;
pub mod classify;
pub mod compile;
pub mod compiled;
pub mod diag;
pub mod explain;
pub mod git;
pub mod incremental;
mod interner;
mod lints;
pub mod load;
mod lookup;
pub mod maps;
pub mod model;
pub mod naive;
mod par;
pub mod plan;
pub mod raw;
pub mod risk;
pub mod source;
pub mod validate;
pub mod windows;

pub mod text;
pub mod twin;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
pub(crate) mod tests;

pub use classify::{
    classify, classify_indexed, judge_initiating, Claim, Decision, DeviceStates, EndTrace,
    FlowHint, IpDesc, MapIndex, PacketDesc, PacketKind, Quoted,
};
pub use compile::compile;
pub use compiled::{Compiled, CompiledDevice, CompiledPolicy, Dir, Entry, Origin, RuleInfo, Stats};
pub use diag::{Diagnostic, NameKind, PolicyErrors, Problem, Severity};
pub use lookup::{Admits, Ranges};
pub use maps::{claim_entry4, claim_entry6, MapContents, MapError};
pub use model::{Date, Policy};
pub use source::{SourceFile, Sources};

use diag::Diags;
use std::path::Path;
use std::sync::Arc;

/// Parses and validates policy files given as (name, text). Warnings are kept in
/// [`Policy::warnings`]; any error fails the whole policy.
pub fn parse_sources(files: Vec<SourceFile>) -> Result<Policy, PolicyErrors> {
    let sources = Arc::new(Sources::new(files));
    let mut diags = Diags::default();
    let raw = load::parse(&sources, &mut diags);
    let policy = raw.map(|raw| validate::validate(sources.clone(), raw, &mut diags));
    diags.sort();
    match policy {
        Some(mut p) if !diags.has_errors() => {
            p.warnings = diags.into_items();
            Ok(p)
        }
        _ => Err(PolicyErrors {
            sources,
            diagnostics: diags.into_items(),
        }),
    }
}

/// Reads, parses and validates the policy directory `dir`.
pub fn load_dir(dir: &Path) -> Result<Policy, PolicyErrors> {
    parse_sources(load::read_dir(dir)?)
}

/// Reads, parses, validates and compiles the policy directory `dir` (what a benchmark
/// times and what the daemon runs on reload), as it stands now: with the service windows
/// open now (the policy returned is as written).
pub fn load_and_compile(dir: &Path) -> Result<(Policy, Compiled), PolicyErrors> {
    let files = load::read_dir(dir)?;
    let policy = parse_sources(files)?;
    let (compiled, _) = windows::compile_at(&policy, windows::now())?;
    Ok((policy, compiled))
}
