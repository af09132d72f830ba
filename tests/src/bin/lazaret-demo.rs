//! The demo's binary: `cargo xtask demo` builds and runs it (see `lazaret_tests::demo`).
//!
//! Usage: lazaret-demo --lazaret PATH --policies DIR [--keep] [--prefix P]
//!        lazaret-demo --down [--prefix P]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use lazaret_tests::demo::{self, Options};

const USAGE: &str =
    "usage: lazaret-demo --lazaret PATH --policies DIR [--keep] [--prefix P] | --down [--prefix P]";

fn main() {
    if let Err(e) = run() {
        eprintln!("\nlazaret demo failed: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let (mut lazaret, mut policies, mut keep, mut down) = (None, None, false, false);
    let mut prefix = "lzd".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lazaret" => lazaret = Some(PathBuf::from(args.next().context(USAGE)?)),
            "--policies" => policies = Some(PathBuf::from(args.next().context(USAGE)?)),
            "--prefix" => prefix = args.next().context(USAGE)?,
            "--keep" => keep = true,
            "--down" => down = true,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if prefix.is_empty() || prefix.len() > 8 || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("--prefix must be 1 to 8 letters or digits");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and loads XDP programs: run it as root");
    }
    if down {
        demo::teardown(&prefix);
        println!("demo lab {prefix:?} removed");
        return Ok(());
    }
    let (Some(lazaret), Some(policies)) = (lazaret, policies) else {
        bail!(USAGE);
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
