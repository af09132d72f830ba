//! Small policies and helpers that unit tests here and in the controller build on (feature
//! `testing`; never in the shipped binary).

use crate::{compile, parse_sources, Compiled, Policy, PolicyErrors, SourceFile};

/// A small valid policy the tests extend or break (one file per entry).
pub const BASE: &str = r#"
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

/// Parses files given as (name, text).
pub fn parse(files: &[(&str, &str)]) -> Result<Policy, PolicyErrors> {
    parse_sources(
        files
            .iter()
            .map(|(n, t)| SourceFile::new(n.to_string(), t.to_string()))
            .collect(),
    )
}

/// Parse and compile; every error of either stage.
pub fn build(files: &[(&str, &str)]) -> Result<(Policy, Compiled), PolicyErrors> {
    let p = parse(files)?;
    let c = compile(&p)?;
    Ok((p, c))
}
