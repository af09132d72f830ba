//! `cargo xtask …`: the project's own commands (setup, test, lint, bench, demo, gen-policy).
//!
//! xtask depends on nothing of lazaret's: `cargo xtask setup` must build and run on a bare
//! machine before bpf-linker (which the gateway's build script needs) is installed.

mod bench;
mod demo;
mod fuzz;
mod gen_policy;
mod package;
mod reliability;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what the project needs and is missing (idempotent).
    Setup,
    /// Run every test the project has and print `N passed, N failed`; after a whole run,
    /// check the datapath's instruction counts against their reference.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// cargo fmt --check and clippy with warnings denied, for the host crates and the eBPF crate.
    Lint,
    /// A simulated hospital on this machine: the real daemon, clinical traffic, a compromised
    /// pump quarantined and released. Needs root; removes everything it made on exit.
    Demo {
        /// Leave the lab running at the end and print how to explore it.
        #[arg(long)]
        keep: bool,
        /// Remove a lab left running by --keep.
        #[arg(long)]
        down: bool,
    },
    /// Write a synthetic policy: --devices N --rules M --out DIR [--seed S].
    GenPolicy(gen_policy::Args),
    /// Run benchmark groups (policy, datapath, dataplanes, reload, quarantine; all by
    /// default) and write docs/bench-results.json and docs/bench-results.md.
    Bench {
        groups: Vec<String>,
        /// Fewer repetitions: a smoke run, not figures to publish.
        #[arg(long)]
        quick: bool,
        /// Only count the datapath paths' executed instructions and check them against the
        /// committed reference (seconds; no report written): `bench datapath --count`.
        #[arg(long, conflicts_with = "quick")]
        count: bool,
    },
    /// Run a libFuzzer target (policy, config, control, packet, or all) for --time seconds
    /// each (needs the nightly toolchain and cargo-fuzz, which setup installs).
    Fuzz {
        target: String,
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
    /// Build the Debian package (target/debian/lazaret_<version>_amd64.deb) with dpkg-deb,
    /// and the statically linked binary (target/debian/lazaret-<version>-x86_64-linux-musl).
    Package {
        /// Package the debug binary, uncompressed (what the tests install).
        #[arg(long)]
        debug: bool,
    },
    /// Refresh the figures in docs/reliability.md from target/reliability/ (written by the
    /// reliability tests and `cargo xtask fuzz`).
    Reliability,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Test { args } => setup::run().and_then(|()| test::run(&args)),
        Command::Lint => setup::run().and_then(|()| test::lint()),
        Command::GenPolicy(args) => gen_policy::run(&args),
        Command::Demo { keep, down } => setup::run().and_then(|()| demo::run(keep, down)),
        Command::Bench {
            groups,
            quick,
            count,
        } => setup::run().and_then(|()| bench::run(&groups, quick, count)),
        Command::Fuzz { target, time } => setup::run().and_then(|()| fuzz::run(&target, time)),
        Command::Reliability => reliability::run(),
        Command::Package { debug } => {
            let profile = if debug {
                package::Profile::Debug
            } else {
                package::Profile::Release
            };
            setup::run()
                .and_then(|()| package::build(profile))
                .and_then(|_| package::build_static(profile))
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
