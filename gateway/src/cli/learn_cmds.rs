//! `lazaret learn export`: a proposed workflow from the flows learned in the state
//! directory, folded against the policy directory's inventory. Reads files only: the daemon
//! need not run.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, Subcommand};
use lazaret::{
    config::Config,
    daemon::{
        learn::Learned,
        propose::{propose, Target},
    },
    policy,
};

#[derive(Debug, Subcommand)]
pub(crate) enum LearnCommand {
    /// Write a proposed workflow file from the flows learned for a device or a class.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["device", "class"])))]
pub(crate) struct ExportArgs {
    /// The device whose flows to export.
    #[arg(long)]
    pub device: Option<String>,
    /// Every device of this class.
    #[arg(long)]
    pub class: Option<String>,
    /// Name of the proposed workflow (default `learned-<device or class>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Write the workflow file here instead of to standard output.
    #[arg(long = "out", short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub(crate) fn run(cmd: LearnCommand, g: &super::Globals) -> anyhow::Result<ExitCode> {
    g.text_only("learn export (its file: --out)")?;
    match cmd {
        LearnCommand::Export(a) => export(a, &g.config()),
    }
}

fn export(a: ExportArgs, config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let policy = policy::load_dir(&config.policy_dir).map_err(|e| {
        anyhow::anyhow!(
            "the policy in {} does not load:\n{}",
            config.policy_dir.display(),
            e.render()
        )
    })?;
    let learned = Learned::load(&config.state_dir)?;
    let target = match (a.device, a.class) {
        (Some(d), _) => Target::Device(d),
        (None, Some(c)) => Target::Class(c),
        (None, None) => anyhow::bail!("give --device ID or --class NAME"),
    };
    let text = propose(&policy, &learned, &target, a.name.as_deref())?;
    match a.out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
