//! Tests of the policy language, compiler and classifier, by topic.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod catalog;
mod compile;
mod props;
mod validation;
mod workflows;

use super::*;
use std::path::{Path, PathBuf};

/// A small valid policy the tests extend or break (one file per entry).
pub(crate) const BASE: &str = r#"
[site]
name = "Test General"
[site.interfaces.dev0]
side = "devices"
networks = ["10.20.0.0/24", "fd00:20::/64"]
[site.interfaces.up0]
side = "upstream"
[site.ports]
hl7 = 2575

[roles.dhcp]
addresses = ["10.10.0.2"]
[roles.dns]
addresses = ["10.10.0.53", "fd00:10::53"]
[roles.ntp]
addresses = ["10.10.0.123"]
[roles.pump-server]
addresses = ["10.10.3.10"]

[classes.pump]
workflows = ["sync"]

[workflows.sync]
rules = [{ peer = "role:pump-server", proto = "tcp", ports = [443] }]
"#;

pub(crate) const PUMP: &str = r#"
[[devices]]
id = "pump-1"
class = "pump"
mac = "00:1a:2b:00:00:01"
ipv4 = "10.20.0.11"
"#;

/// Parses files given as (name, text).
pub(crate) fn parse(files: &[(&str, &str)]) -> Result<Policy, PolicyErrors> {
    parse_sources(
        files
            .iter()
            .map(|(n, t)| SourceFile::new(n.to_string(), t.to_string()))
            .collect(),
    )
}

/// BASE + PUMP + `extra` (as a third file).
pub(crate) fn with(extra: &str) -> Result<Policy, PolicyErrors> {
    parse(&[
        ("base.toml", BASE),
        ("pump.toml", PUMP),
        ("extra.toml", extra),
    ])
}

/// Parse and compile; every error of either stage.
pub(crate) fn build(files: &[(&str, &str)]) -> Result<(Policy, Compiled), PolicyErrors> {
    let p = parse(files)?;
    let c = compile(&p)?;
    Ok((p, c))
}

/// The error problems of a failed parse or compile.
pub(crate) fn problems(r: Result<(Policy, Compiled), PolicyErrors>) -> Vec<Problem> {
    match r {
        Ok(_) => Vec::new(),
        Err(e) => e.errors().map(|d| d.problem.clone()).collect(),
    }
}

/// The warning problems of a successful compile.
pub(crate) fn warnings(c: &Compiled) -> Vec<Problem> {
    c.warnings.iter().map(|d| d.problem.clone()).collect()
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example hospital policy in `policies/`.
pub(crate) fn example() -> (Policy, Compiled) {
    load_and_compile(&repo_root().join("policies")).unwrap_or_else(|e| panic!("{}", e.render()))
}
