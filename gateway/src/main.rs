//! The `lazaret` binary: the controller daemon and the CLI.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: compiling a 100,000-rule policy allocates and frees
/// millions of small objects, and takes about a fifth less time with it. The benchmarks
/// that time the daemon's and `lazaret check`'s paths use it too.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "lazaret",
    version,
    about = "Micro-segmentation gateway for medical-device networks"
)]
struct Cli {
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
    /// releases (`--json`: one JSON object per line).
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Detach(args) => cli::detach::run(args),
        Command::Status(target) => cli::control_cmds::status(target),
        Command::Flows { device, target } => cli::control_cmds::flows(device, target),
        Command::Events { follow, target } => cli::control_cmds::events(follow, target),
        Command::Learn(cmd) => cli::learn_cmds::run(cmd),
        Command::Quarantine(cmd) => cli::control_cmds::quarantine(cmd),
        Command::Pins(cmd) => cli::control_cmds::pins(cmd),
        Command::Config(cmd) => cli::config_cmds::run(cmd),
        Command::Policy(cmd) => cli::policy_cmds::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
