//! Tests of the policy language, compiler and classifier, by topic.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod catalog;
mod compile;
mod gateways;
mod props;
mod risk;
mod validation;
mod windows;
mod workflows;

use super::*;
use std::path::{Path, PathBuf};

pub(crate) use crate::testing::{build, parse, BASE};

pub(crate) const PUMP: &str = r#"
[[devices]]
id = "pump-1"
class = "pump"
mac = "00:1a:2b:00:00:01"
ipv4 = "10.20.0.11"
"#;

/// BASE + PUMP + `extra` (as a third file).
pub(crate) fn with(extra: &str) -> Result<Policy, PolicyErrors> {
    parse(&[
        ("base.toml", BASE),
        ("pump.toml", PUMP),
        ("extra.toml", extra),
    ])
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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example hospital policy in `policies/`.
pub(crate) fn example() -> (Policy, Compiled) {
    load_and_compile(&repo_root().join("policies")).unwrap_or_else(|e| panic!("{}", e.render()))
}
