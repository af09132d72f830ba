//! Subcommands of the `lazaret` binary, and the options they all take ([`Globals`]).

pub(crate) mod config_cmds;
pub(crate) mod control_cmds;
pub(crate) mod detach;
pub(crate) mod import_cmds;
pub(crate) mod learn_cmds;
pub(crate) mod policy_cmds;
pub(crate) mod risk_cmds;
pub(crate) mod run;

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Options every command takes, before or after its name (`lazaret --config F status` and
/// `lazaret status --config F` are the same).
#[derive(Debug, Args)]
pub(crate) struct Globals {
    /// The daemon's configuration file (for its control socket, state and policy
    /// directories) [default: /etc/lazaret/lazaret.toml]. `check` reads one only when
    /// given, and then checks the policy against it too.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to print: `text` (lines and tables for people), `json`, or `csv` (the commands
    /// that print a table).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        alias = "format"
    )]
    pub output: Option<Output>,
    /// The same as `--output json`.
    #[arg(long, global = true, hide = true, conflicts_with = "output")]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Output {
    /// Lines and tables for people.
    #[value(alias = "table")]
    Text,
    Json,
    /// Comma-separated values with a header row (RFC 4180).
    Csv,
}

/// A command's output where CSV has no table to print: text or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

impl Globals {
    /// `--config`, or the default path.
    pub(crate) fn config(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(lazaret::config::DEFAULT_PATH))
    }

    /// `--output` (`--json` included); text by default.
    pub(crate) fn output(&self) -> Output {
        if self.json {
            Output::Json
        } else {
            self.output.unwrap_or(Output::Text)
        }
    }

    /// For commands that print no data of their own (`run`, `detach`, `learn export`):
    /// anything but text is a usage error (exit 2), never silently ignored.
    pub(crate) fn text_only(&self, command: &str) -> anyhow::Result<()> {
        match self.output() {
            Output::Text => Ok(()),
            other => anyhow::bail!(
                "--output {}: `{command}` prints only text",
                format!("{other:?}").to_lowercase()
            ),
        }
    }

    /// The policy directory of a command that reads one: `dir` if given, else the
    /// configuration's `policy_dir` when `--config` is given, else `policies`.
    pub(crate) fn policy_dir(&self, dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
        if let Some(d) = dir {
            return Ok(d);
        }
        match &self.config {
            Some(path) => Ok(lazaret::config::Config::load(path)?.policy_dir),
            None => Ok(PathBuf::from("policies")),
        }
    }

    /// The output of `command`, which prints no table: CSV is a usage error (exit 2).
    pub(crate) fn format(&self, command: &str) -> anyhow::Result<Format> {
        match self.output() {
            Output::Text => Ok(Format::Text),
            Output::Json => Ok(Format::Json),
            Output::Csv => anyhow::bail!(
                "--output csv: `{command}` prints no table; use --output text or json"
            ),
        }
    }
}
