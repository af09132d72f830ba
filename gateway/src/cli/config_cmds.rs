//! `lazaret config check`: the daemon's configuration, checked like policy — every problem
//! at once, each at `file:line:col` on its token.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use lazaret::config::{Config, DEFAULT_PATH};

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check the configuration file: every problem, each with file:line:col.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConfigCheckArgs {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

pub(crate) fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check(a) => match Config::load(&a.config) {
            Ok(c) => {
                let names: Vec<String> = c
                    .interfaces
                    .iter()
                    .map(|i| {
                        format!(
                            "{} ({})",
                            i.name,
                            match i.side {
                                lazaret::config::Side::Devices => "devices",
                                lazaret::config::Side::Upstream => "upstream",
                            }
                        )
                    })
                    .collect();
                println!(
                    "{}: ok: {} interface{} ({}), dataplane {}, policy in {}",
                    a.config.display(),
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", "),
                    format!("{:?}", c.dataplane).to_lowercase(),
                    c.policy_dir.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                report(&e);
                Ok(ExitCode::from(1))
            }
        },
    }
}

/// Prints every problem of `e` on stderr, one `error: file:line:col: …` line each.
pub(crate) fn report(e: &lazaret::config::ConfigError) {
    let shown = match e {
        lazaret::config::ConfigError::Read { source, .. } => format!("{e}: {source}"),
        _ => e.to_string(),
    };
    for line in shown.lines() {
        eprintln!("error: {line}");
    }
}
