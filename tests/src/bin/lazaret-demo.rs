//! The demo's binary: `cargo xtask demo` builds and runs it (see `lazaret_tests::demo`).
//!
//! Usage: lazaret-demo --lazaret PATH --policies DIR [--keep] [--prefix P]
//!        lazaret-demo --down [--prefix P]      (`--help` for more)

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use lazaret_tests::demo::{self, Options};

/// The demo lab: a hospital in network namespaces, the story told step by step.
#[derive(Debug, clap::Parser)]
#[command(name = "lazaret-demo")]
struct Cli {
    /// The lazaret binary to run.
    #[arg(long, required_unless_present = "down")]
    lazaret: Option<PathBuf>,
    /// The policy directory (the example hospital).
    #[arg(long, required_unless_present = "down")]
    policies: Option<PathBuf>,
    /// Leave the lab up at the end (remove it with --down).
    #[arg(long)]
    keep: bool,
    /// Remove a lab left up with --keep, and nothing else.
    #[arg(long, conflicts_with_all = ["lazaret", "policies", "keep"])]
    down: bool,
    /// Prefix of the lab's namespaces and interfaces (1 to 8 letters or digits).
    #[arg(long, default_value = "lzd", value_parser = prefix)]
    prefix: String,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("\nlazaret demo failed: {e:#}");
        std::process::exit(1);
    }
}

fn prefix(p: &str) -> Result<String, String> {
    if p.is_empty() || p.len() > 8 || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("1 to 8 letters or digits".into());
    }
    Ok(p.to_string())
}

fn run() -> Result<()> {
    let Cli {
        lazaret,
        policies,
        keep,
        down,
        prefix,
    } = clap::Parser::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates network namespaces and loads XDP programs: run it as root");
    }
    if down {
        demo::teardown(&prefix);
        println!("demo lab {prefix:?} removed");
        return Ok(());
    }
    let (Some(lazaret), Some(policies)) = (lazaret, policies) else {
        bail!("--lazaret and --policies are needed (clap requires them without --down)");
    };
    let opts = Options {
        prefix: prefix.clone(),
        keep,
        lazaret: std::fs::canonicalize(&lazaret)
            .with_context(|| format!("the lazaret binary {}", lazaret.display()))?,
        policies: std::fs::canonicalize(&policies)
            .with_context(|| format!("the policy directory {}", policies.display()))?,
    };
    // Ctrl-C: tear the lab down in order, then leave.
    ctrlc::set_handler(move || {
        eprintln!("\ninterrupted: tearing the demo lab down");
        demo::teardown(&prefix);
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;
    demo::run(&opts)
}
