//! `lazaret import`: inventories held elsewhere into the policy repository, as edits to
//! review (`lazaret plan`, a pull request). Reads and writes files only: the daemon need not
//! run, and picks the edits up as it does any other.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use lazaret::import::csv::{self, ImportError, Mapping};
use lazaret::import::mud::{self, Binding, MudError};

#[derive(Debug, Subcommand)]
pub(crate) enum ImportCommand {
    /// Write or update `[[devices]]` entries from a CMMS or asset-management export (CSV),
    /// through a mapping file that names its columns.
    Csv(CsvArgs),
    /// Write a workflow for a class from a manufacturer's MUD file (RFC 8520), through a
    /// binding file that says what its DNS names and abstractions are at this site.
    Mud(MudArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ExportCommand {
    /// Print a class's workflows as a MUD file (RFC 8520), for its manufacturer.
    Mud(ExportMudArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MudArgs {
    /// The MUD file (JSON).
    pub mud: PathBuf,
    /// The binding file: the class, and the site's meaning of each DNS name, controller and
    /// abstraction.
    #[arg(long, value_name = "FILE")]
    pub binding: PathBuf,
    /// Policy directory (default: the configuration's `policy_dir` with `--config`, else
    /// `policies`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportMudArgs {
    /// The class to describe.
    #[arg(long)]
    pub class: String,
    /// The binding file: the MUD URL, and the names to give the site's peers.
    #[arg(long, value_name = "FILE")]
    pub binding: PathBuf,
    /// Policy directory (default: the configuration's `policy_dir` with `--config`, else
    /// `policies`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Write the MUD file here instead of to standard output.
    #[arg(long = "out", short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CsvArgs {
    /// The export: comma-, semicolon- or tab-separated, with a header row.
    pub export: PathBuf,
    /// The mapping file: which column holds which device key, how a column names a class,
    /// the export's encoding, and the file new devices go to.
    #[arg(long, value_name = "FILE")]
    pub mapping: PathBuf,
    /// Policy directory (default: the configuration's `policy_dir` with `--config`, else
    /// `policies`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the repository's devices the export does not list (by default each is a
    /// problem, and nothing is written).
    #[arg(long)]
    pub keep_missing: bool,
}

pub(crate) fn run(cmd: ImportCommand, g: &super::Globals) -> anyhow::Result<ExitCode> {
    g.text_only("import")?;
    match cmd {
        ImportCommand::Csv(a) => import_csv(a, g),
        ImportCommand::Mud(a) => import_mud(a, g),
    }
}

fn import_mud(a: MudArgs, g: &super::Globals) -> anyhow::Result<ExitCode> {
    let dir = g.policy_dir(a.dir)?;
    let planned = Binding::load(&a.binding).and_then(|b| mud::import::plan(&dir, &a.mud, &b));
    let plan = match planned {
        Ok(plan) => plan,
        Err(e @ (MudError::Read { .. } | MudError::Write { .. })) => return Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{plan}");
    if a.dry_run {
        println!("Dry run: nothing written.");
    } else {
        mud::import::write(&plan)?;
        for (path, _) in std::iter::once(&plan.file).chain(plan.class_edit.as_ref()) {
            println!("wrote {}", path.display());
        }
        println!("Review with `lazaret plan` against the last commit before merging.");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn export(cmd: ExportCommand, g: &super::Globals) -> anyhow::Result<ExitCode> {
    g.text_only("export (its file: --out)")?;
    let ExportCommand::Mud(a) = cmd;
    let dir = g.policy_dir(a.dir)?;
    let policy = lazaret::policy::load_dir(&dir).map_err(|e| {
        anyhow::anyhow!(
            "the policy in {} does not load:\n{}",
            dir.display(),
            e.render()
        )
    })?;
    let binding = Binding::load(&a.binding)?;
    let now = lazaret::policy::windows::format_time(lazaret::policy::windows::now());
    let out = mud::export::export(&policy, &binding, &a.class, &now)?;
    for note in &out.notes {
        eprintln!("note: {note}");
    }
    match a.out {
        Some(path) => std::fs::write(&path, &out.json)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?,
        None => print!("{}", out.json),
    }
    Ok(ExitCode::SUCCESS)
}

fn import_csv(a: CsvArgs, g: &super::Globals) -> anyhow::Result<ExitCode> {
    let dir = g.policy_dir(a.dir)?;
    // Refused input (the mapping, the export's rows, the policy before or after) exits 1,
    // as `check` does on a bad policy; a file that cannot be read or written exits 2.
    let planned = Mapping::load(&a.mapping)
        .and_then(|mapping| csv::plan(&dir, &a.export, &mapping, a.keep_missing));
    let plan = match planned {
        Ok(plan) => plan,
        Err(e @ (ImportError::Read { .. } | ImportError::Write { .. })) => return Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{plan}");
    if plan.files.is_empty() {
        println!("No changes: the repository already says what the export says.");
    } else if a.dry_run {
        println!("Dry run: nothing written.");
    } else {
        csv::write(&plan)?;
        for (path, _) in &plan.files {
            println!("wrote {}", path.display());
        }
        println!("Review with `lazaret plan` against the last commit before merging.");
    }
    Ok(ExitCode::SUCCESS)
}
