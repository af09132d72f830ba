//! `cargo xtask test` and `cargo xtask lint`.
//!
//! `lint`: fmt, clippy (host crates and the eBPF crate, warnings denied, the workspace's
//! lint set in Cargo.toml), cargo-deny (licences, bans, sources), rustdoc (warnings denied)
//! and a build of the fuzz targets.
//!
//! `test` runs every test of the workspace (unit tests, BPF_PROG_TEST_RUN datapath tests,
//! network-namespace integration tests), streams cargo's output, and prints one line:
//! `N passed, N failed`; then, on a whole run, checks the datapath bench's instruction
//! counts against their reference (`bench::check_counts_in_tests`).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::setup::run_cmd;

pub(crate) fn run(extra: &[String]) -> Result<()> {
    // The namespace tests run the real binary; cargo test does not build other packages'
    // binaries, so build it first.
    run_cmd(Command::new("cargo").args(["build", "--package", "lazaret", "--bin", "lazaret"]))?;
    // The package the `package` test installs into a clean root (from the binary just built).
    let deb = crate::package::build(crate::package::Profile::Debug)?;
    // ... and the statically linked binary the `package` test runs without privileges.
    let static_bin = crate::package::build_static(crate::package::Profile::Debug)?;
    let mut cmd = Command::new("cargo");
    cmd.env("LAZARET_DEB", &deb)
        .env("LAZARET_STATIC", &static_bin);
    // No --workspace: the default members are every host crate; the eBPF crate only builds
    // for the BPF target (gateway's build script builds it).
    cmd.args(["test", "--no-fail-fast", "--color", "never"]);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("could not start cargo test")?;
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some((p, f)) = parse_result_line(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("{passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("tests failed ({failed} failed; cargo exited with {status})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    // Only on a whole run: one given arguments is someone iterating on a few tests.
    if extra.is_empty() {
        crate::bench::check_counts_in_tests()?;
    } else {
        eprintln!(
            "test: arguments given, so the datapath's instruction counts were not checked \
             (`cargo xtask bench datapath --count` checks them)"
        );
    }
    Ok(())
}

/// `test result: ok. 12 passed; 0 failed; 0 ignored; …` → (12, 0).
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(word))
            .and_then(|n| n.trim().rsplit(' ').next())
            .and_then(|n| n.parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

pub(crate) fn lint() -> Result<()> {
    run_cmd(Command::new("cargo").args(["fmt", "--all", "--check"]))?;
    run_cmd(Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF crate only builds for the BPF target, with build-std, on nightly.
    run_cmd(
        Command::new("cargo")
            .args([
                "+nightly",
                "clippy",
                "--package",
                "lazaret-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER"),
    )?;
    // Licences, bans and sources of the dependency graph (.cargo/deny.toml, with the other
    // tool configuration, out of the top level; advisories need the network: see there).
    // cargo deny reads the whole graph, every platform's crates included, and offline it
    // only finds what is already downloaded: a build downloads the host's only (a fresh
    // machine lacks `windows-sys`), so fetch them all first.
    run_cmd(Command::new("cargo").args(["fetch", "--locked"]))?;
    run_cmd(Command::new("cargo").args([
        "deny",
        "--offline",
        "--config",
        ".cargo/deny.toml",
        "check",
        "licenses",
        "bans",
        "sources",
    ]))?;
    // The docs the next engineer reads: no broken or private intra-doc link.
    run_cmd(
        Command::new("cargo")
            .args([
                "doc",
                "--no-deps",
                "--package",
                "lazaret",
                "--package",
                "lazaret-policy",
                "--package",
                "lazaret-abi",
            ])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // The fuzz targets build (nightly, sanitizers; their own target directory, as
    // `cargo xtask fuzz` uses): a harness that no longer compiles is caught here, not the
    // next time someone fuzzes.
    let root = crate::fuzz::workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    run_cmd(
        Command::new("cargo")
            .current_dir(root.join("fuzz"))
            .env("CARGO_TARGET_DIR", target_dir.join("fuzz"))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .args(["+nightly", "fuzz", "build", "-O"]),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

    #[test]
    fn parses_cargo_result_lines() {
        assert_eq!(
            parse_result_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"),
            Some((12, 0))
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 3 passed; 2 failed; 0 ignored"),
            Some((3, 2))
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
