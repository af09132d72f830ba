//! `lazaret config check`: the daemon's configuration, checked like policy — every problem
//! at once, each at `file:line:col` on its token.

use std::process::ExitCode;

use clap::Subcommand;
use lazaret::config::Config;

use super::Format;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check the configuration file (`--config`): every problem, each with file:line:col.
    Check,
}

pub(crate) fn run(cmd: ConfigCommand, g: &super::Globals) -> anyhow::Result<ExitCode> {
    let format = g.format("config check")?;
    let path = g.config();
    let ConfigCommand::Check = cmd;
    let c = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            match format {
                Format::Text => report(&e),
                Format::Json => {
                    let errors: Vec<String> = shown(&e).lines().map(str::to_string).collect();
                    let out = serde_json::json!({
                        "ok": false,
                        "file": path,
                        "errors": errors,
                    });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
            }
            return Ok(failure_code(&e));
        }
    };
    let side = |s: lazaret::config::Side| match s {
        lazaret::config::Side::Devices => "devices",
        lazaret::config::Side::Upstream => "upstream",
    };
    let dataplane = format!("{:?}", c.dataplane).to_lowercase();
    match format {
        Format::Text => {
            let names: Vec<String> = c
                .interfaces
                .iter()
                .map(|i| format!("{} ({})", i.name, side(i.side)))
                .collect();
            println!(
                "{}: ok: {} interface{} ({}), dataplane {dataplane}, policy in {}",
                path.display(),
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                names.join(", "),
                c.policy_dir.display()
            );
        }
        Format::Json => {
            let interfaces: Vec<_> = c
                .interfaces
                .iter()
                .map(|i| serde_json::json!({ "name": i.name, "side": side(i.side) }))
                .collect();
            let out = serde_json::json!({
                "ok": true,
                "file": path,
                "interfaces": interfaces,
                "dataplane": dataplane,
                "policy_dir": c.policy_dir,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// 2 for a configuration that cannot be read (an I/O failure), 1 for one with problems.
pub(crate) fn failure_code(e: &lazaret::config::ConfigError) -> ExitCode {
    if matches!(e, lazaret::config::ConfigError::Read { .. }) {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// The problems of `e`, one a line.
fn shown(e: &lazaret::config::ConfigError) -> String {
    match e {
        lazaret::config::ConfigError::Read { source, .. } => format!("{e}: {source}"),
        _ => e.to_string(),
    }
}

/// Prints every problem of `e` on stderr, one `error: file:line:col: …` line each.
pub(crate) fn report(e: &lazaret::config::ConfigError) {
    for line in shown(e).lines() {
        eprintln!("error: {line}");
    }
}
