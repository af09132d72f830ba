//! The `lazaret` binary: the controller daemon and the CLI.

mod cli;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// The exit statuses every subcommand uses (shown by `--help` and in the man pages).
const EXIT_STATUS: &str = "\
Exit status:
  0  success (`check`: the policy is valid; warnings count only with --deny-warnings)
  1  a finding: the policy or the configuration has errors (`check`, `config check`,
     `plan`, `explain`, `compile`), `check --deny-warnings` found warnings, or
     `explain`'s verdict is deny
  2  anything else that failed: a usage error, an unreadable file or directory, the
     daemon unreachable or refusing the request; and `plan --detailed-exitcode`
     when the plan has changes (0 then means none, 1 an error, as terraform has it)";

/// mimalloc rather than glibc's malloc: compiling a 100,000-rule policy allocates and frees
/// millions of small objects, and takes about a fifth less time with it. The benchmarks
/// that time the daemon's and `lazaret check`'s paths use it too.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "lazaret",
    version,
    about = "Micro-segmentation gateway for medical-device networks",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(flatten)]
    globals: cli::Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: enforce the policy on the configured interfaces.
    Run(cli::run::RunArgs),
    /// Remove lazaret's XDP programs and pinned maps: stop enforcing.
    Detach(cli::detach::DetachArgs),
    /// The running daemon: generation, commit, interfaces, map pressure.
    Status(cli::control_cmds::Target),
    /// The flows of one device, from the running daemon.
    Flows {
        device: String,
        #[command(flatten)]
        target: cli::control_cmds::Target,
    },
    /// Events: denies, audit and learn records, spoofing, unknown devices, quarantines and
    /// releases (`--output json`: one JSON object per line).
    Events {
        /// Keep printing new events as they happen.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        target: cli::control_cmds::Target,
    },
    /// Learn mode: turn the flows learned for a device or class into a proposed workflow.
    #[command(subcommand)]
    Learn(cli::learn_cmds::LearnCommand),
    /// Import what is known elsewhere (a CMMS export, a MUD file) into the policy
    /// repository, as edits to review.
    #[command(subcommand)]
    Import(cli::import_cmds::ImportCommand),
    /// Export what the policy says in another format (a class as a MUD file).
    #[command(subcommand)]
    Export(cli::import_cmds::ExportCommand),
    /// Quarantine: list, add, release.
    #[command(subcommand)]
    Quarantine(cli::control_cmds::QuarantineCommand),
    /// Bridge-port pins: which device is pinned to which bridge port; release one.
    #[command(subcommand)]
    Pins(cli::control_cmds::PinsCommand),
    /// The daemon's configuration file: check it.
    #[command(subcommand)]
    Config(cli::config_cmds::ConfigCommand),
    #[command(flatten)]
    Policy(cli::policy_cmds::PolicyCommand),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (lazaret.1 and one per subcommand) into a directory.
    Man {
        /// The directory to write them to (created if missing).
        #[arg(long, default_value = "man")]
        out: std::path::PathBuf,
    },
}

/// `lazaret man`: lazaret.1 and lazaret-SUBCOMMAND.1 for each subcommand, with the exit
/// statuses.
fn man_pages(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, out).with_context(|| format!("writing to {}", out.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let Cli { globals, command } = Cli::parse();
    let g = &globals;
    let result = match command {
        Command::Run(args) => cli::run::run(args, g),
        Command::Detach(args) => cli::detach::run(args, g),
        Command::Status(target) => cli::control_cmds::status(&target, g),
        Command::Flows { device, target } => cli::control_cmds::flows(device, &target, g),
        Command::Events { follow, target } => cli::control_cmds::events(follow, &target, g),
        Command::Learn(cmd) => cli::learn_cmds::run(cmd, g),
        Command::Import(cmd) => cli::import_cmds::run(cmd, g),
        Command::Export(cmd) => cli::import_cmds::export(cmd, g),
        Command::Quarantine(cmd) => cli::control_cmds::quarantine(cmd, g),
        Command::Pins(cmd) => cli::control_cmds::pins(cmd, g),
        Command::Config(cmd) => cli::config_cmds::run(cmd, g),
        Command::Policy(cmd) => cli::policy_cmds::run(cmd, g),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lazaret",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => man_pages(&out),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
