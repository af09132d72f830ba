//! `cargo xtask fuzz TARGET|all --time SECONDS`: runs libFuzzer targets of `fuzz/` through
//! `cargo +nightly fuzz run`, and records what was tried in
//! `target/reliability/fuzz-TARGET.json` (inputs run, seconds, crashes) for
//! `docs/reliability.md`.
//!
//! The committed seeds in `fuzz/corpus/TARGET` are read but never written: inputs the fuzzer
//! finds go to `target/fuzz-corpus/TARGET`, crashes to `fuzz/artifacts/TARGET` (ignored by
//! git). A crash is fixed, then its file is copied into `fuzz/corpus/TARGET` where
//! `tests/tests/fuzz_corpus.rs` keeps it as a regression test.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

pub(crate) const TARGETS: &[&str] = &["policy", "config", "control", "packet", "imports"];

pub(crate) fn run(target: &str, seconds: u64) -> Result<()> {
    let targets: Vec<&str> = match target {
        "all" => TARGETS.to_vec(),
        t if TARGETS.contains(&t) => vec![t],
        t => bail!(
            "unknown fuzz target {t:?}: one of {} or all",
            TARGETS.join(", ")
        ),
    };
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut failed = Vec::new();
    for t in targets {
        let found = target_dir.join("fuzz-corpus").join(t);
        std::fs::create_dir_all(&found)?;
        let seeds = root.join("fuzz/corpus").join(t);
        eprintln!("fuzz: {t} for {seconds} s");
        // Sanitizer builds in their own target dir: they would otherwise invalidate the
        // normal build's artifacts every time.
        let out = Command::new("cargo")
            .current_dir(root.join("fuzz"))
            .env("CARGO_TARGET_DIR", target_dir.join("fuzz"))
            .args(["+nightly", "fuzz", "run", "-O", t])
            .arg(&found)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
            .context("running cargo +nightly fuzz (cargo xtask setup installs cargo-fuzz)")?;
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = stat(&log, "stat::number_of_executed_units:").unwrap_or(0);
        let crashed = !out.status.success();
        let corpus = std::fs::read_dir(&found)
            .map(std::iter::Iterator::count)
            .unwrap_or(0)
            + std::fs::read_dir(&seeds)
                .map(std::iter::Iterator::count)
                .unwrap_or(0);
        let json = format!(
            "{{\"target\":\"{t}\",\"seconds\":{seconds},\"runs\":{runs},\"corpus\":{corpus},\"crashed\":{crashed}}}\n"
        );
        let dir = target_dir.join("reliability");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("fuzz-{t}.json")), json)?;
        eprintln!("fuzz: {t}: {runs} inputs in {seconds} s, corpus {corpus}, crashed: {crashed}");
        if crashed {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            failed.push(t);
        }
    }
    if !failed.is_empty() {
        bail!(
            "crash in {}: the input is in fuzz/artifacts/TARGET; fix it, then copy it into fuzz/corpus/TARGET as a regression test",
            failed.join(", ")
        );
    }
    Ok(())
}

fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log =
            "#1024 DONE cov: 10\nstat::number_of_executed_units: 123456\nstat::peak_rss_mb: 80\n";
        assert_eq!(stat(log, "stat::number_of_executed_units:"), Some(123456));
        assert_eq!(stat(log, "stat::nothing:"), None);
    }
}
