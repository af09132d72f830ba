//! `cargo xtask demo [--keep] [--down]`: bootstrap (setup), build with a progress line, then
//! run the demo binary (`tests/src/bin/lazaret-demo.rs`, the story itself lives in
//! `lazaret_tests::demo`) on the repository's `policies/` as they are.

use std::{
    io::{BufRead, BufReader, IsTerminal, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{bench::workspace_root, setup::run_cmd};

pub(crate) fn run(keep: bool, down: bool) -> Result<()> {
    let root = workspace_root()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let demo = target.join("debug/lazaret-demo");
    if down {
        if !demo.is_file() {
            build(&root)?;
        }
        return run_cmd(Command::new(&demo).arg("--down"));
    }
    build(&root)?;
    let mut cmd = Command::new(&demo);
    cmd.arg("--lazaret")
        .arg(target.join("debug/lazaret"))
        .arg("--policies")
        .arg(root.join("policies"));
    if keep {
        cmd.arg("--keep");
    }
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", demo.display()))?;
    if !status.success() {
        bail!("the demo failed ({status}); the step that failed is named above");
    }
    Ok(())
}

/// Builds the daemon and the demo (the debug profile `cargo xtask test` also uses), showing
/// one progress line instead of cargo's wall of output.
fn build(root: &Path) -> Result<()> {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "-p",
            "lazaret",
            "-p",
            "lazaret-tests",
            "--bin",
            "lazaret",
            "--bin",
            "lazaret-demo",
        ])
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_TERM_PROGRESS_WHEN", "never")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo build")?;
    let tty = std::io::stderr().is_terminal();
    let mut compiled = 0usize;
    let mut log = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.unwrap_or_default();
            let trimmed = line.trim_start();
            // The eBPF crate's build reports through the build script (`warning: lazaret@…:`).
            let what = trimmed
                .strip_prefix("Compiling ")
                .or_else(|| trimmed.split_once("Compiling ").map(|(_, w)| w));
            if let Some(what) = what {
                compiled += 1;
                let name = what
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                if tty {
                    eprint!("\r\x1b[2Kdemo: building — {compiled} crates compiled, now {name}");
                    let _ = std::io::stderr().flush();
                } else if compiled % 25 == 1 {
                    eprintln!("demo: building — {compiled} crates compiled, now {name}");
                }
            }
            log.push(line);
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if tty {
        eprint!("\r\x1b[2K");
    }
    if !status.success() {
        eprintln!("{}", log.join("\n"));
        bail!("building the demo failed");
    }
    eprintln!(
        "demo: built ({compiled} crates compiled) in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
