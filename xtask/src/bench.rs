//! `cargo xtask bench [GROUP…] [--quick]`: runs benchmark groups and writes one report,
//! `docs/bench-results.json` and `docs/bench-results.md`.
//!
//! A group is a bench binary of the `lazaret-tests` package (`tests/benches/`), run with
//! `cargo bench`; it writes a JSON and a markdown fragment that this module merges. This
//! module also writes the synthetic policies the groups need (with gen-policy, reused while
//! their stamp matches) and describes the machine. It never links lazaret (see main.rs):
//! the JSON is assembled from the fragments as text.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{gen_policy, setup::run_cmd};

/// What a group needs from xtask before its bench binary runs.
#[derive(Clone, Copy)]
enum Needs {
    /// Generated policies, as (devices, rules, seed).
    Policies(&'static [(usize, usize, u64)]),
    /// The release `lazaret` binary (a daemon under test), passed as `LAZARET_BIN`, and
    /// generated policies as above.
    ReleaseDaemon(&'static [(usize, usize, u64)]),
}

struct Group {
    name: &'static str,
    what: &'static str,
    /// The bench binary and what it needs; `None`: not implemented yet.
    bench: Option<Needs>,
}

/// Every group, in report order.
const GROUPS: &[Group] = &[
    Group {
        name: "policy",
        what: "parse + validate + compile of generated policies",
        bench: Some(Needs::Policies(&[(10_000, 100_000, 1), (1_000, 10_000, 1)])),
    },
    Group {
        name: "datapath",
        what: "ns/packet of the XDP program through BPF_PROG_TEST_RUN",
        bench: Some(Needs::Policies(&[
            (10_000, 1, 1),
            (10_000, 1_000, 1),
            (10_000, 100_000, 1),
        ])),
    },
    Group {
        name: "dataplanes",
        what: "XDP against the nftables dataplane: pps dropped and forwarded, apply time",
        bench: Some(Needs::Policies(&[(10_000, 100_000, 1)])),
    },
    Group {
        name: "reload",
        what: "policy reload and generation switch",
        // Three unrelated policies of one size: replacing a whole policy by another.
        bench: Some(Needs::Policies(&[
            (10_000, 100_000, 1),
            (10_000, 100_000, 2),
            (10_000, 100_000, 3),
        ])),
    },
    Group {
        name: "quarantine",
        what: "time from the threshold packet to the quarantine enforcing",
        // Two unrelated whole policies, reloaded back to back while quarantines are timed.
        bench: Some(Needs::ReleaseDaemon(&[
            (10_000, 100_000, 1),
            (10_000, 100_000, 2),
        ])),
    },
    Group {
        name: "import",
        what: "`lazaret import csv` of a 10,000-row asset export",
        bench: Some(Needs::Policies(&[(10_000, 100_000, 1)])),
    },
    Group {
        name: "ha",
        what: "an active/standby pair failing over: time to traffic, datagrams lost, sessions kept; flow replication",
        bench: Some(Needs::ReleaseDaemon(&[])),
    },
];

/// gen-policy's default seed: policies with it keep their short names.
const DEFAULT_SEED: u64 = 1;

/// How a group ended in this invocation.
enum Outcome {
    Done {
        json: String,
        md: String,
    },
    NotImplemented,
    NotRequested,
    /// Not run now: the figures of an earlier run, from the previous report, with the
    /// date and commit they were measured at.
    Kept {
        json: String,
        md: String,
        when: String,
    },
    Failed(String),
}

pub(crate) fn run(requested: &[String], quick: bool, count: bool) -> Result<()> {
    let selected = select(requested)?;
    if count {
        return count_only(&selected);
    }
    let root = workspace_root()?;
    let load = load_average();
    if load.parse::<f64>().is_ok_and(|l| l > 0.5) {
        eprintln!("bench: load average {load}: other work is running, figures will be noisier");
    }
    let out = target_dir(&root).join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let benches: Vec<&str> = selected
        .iter()
        .filter(|g| g.bench.is_some())
        .map(|g| g.name)
        .collect();
    let daemon = selected
        .iter()
        .any(|g| matches!(g.bench, Some(Needs::ReleaseDaemon(_))));
    build(&root, &benches, daemon)?;
    let mut outcomes = Vec::new();
    for g in GROUPS {
        let outcome = if g.bench.is_none() {
            Outcome::NotImplemented
        } else if !selected.iter().any(|s| s.name == g.name) {
            Outcome::NotRequested
        } else {
            match run_group(g, &root, &out, quick) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("bench: group {} failed: {e:#}", g.name);
                    Outcome::Failed(format!("{e:#}"))
                }
            }
        };
        outcomes.push((g, outcome));
    }
    let machine = machine(&root, quick, load);
    let json_path = root.join("docs/bench-results.json");
    let md_path = root.join("docs/bench-results.md");
    let outcomes = stamp_and_keep(outcomes, &machine, &json_path, &md_path);
    std::fs::write(&json_path, report_json(&machine, &outcomes))
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = report_md(&machine, &outcomes);
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    summarize(&outcomes, &md, &json_path, &md_path)
}

/// The groups to run: the requested ones, or every implemented one. A requested group that
/// is unknown or not implemented stops everything before any work.
fn select(requested: &[String]) -> Result<Vec<&'static Group>> {
    if requested.is_empty() {
        return Ok(GROUPS.iter().filter(|g| g.bench.is_some()).collect());
    }
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for name in requested {
        let Some(g) = GROUPS.iter().find(|g| g.name == name) else {
            let names: Vec<&str> = GROUPS.iter().map(|g| g.name).collect();
            bail!(
                "unknown benchmark group {name:?}; groups: {}",
                names.join(", ")
            );
        };
        if g.bench.is_none() {
            missing.push(g.name);
        } else if !out.iter().any(|o: &&Group| o.name == g.name) {
            out.push(g);
        }
    }
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("bench: group {m}: not implemented yet");
        }
        bail!("not implemented yet: {}", missing.join(", "));
    }
    Ok(out)
}

/// Builds the bench binaries once (release), so build output and build load come before
/// any timing.
fn build(root: &Path, benches: &[&str], daemon: bool) -> Result<()> {
    if benches.is_empty() {
        return Ok(());
    }
    if daemon {
        eprintln!("bench: building the lazaret daemon (release)");
        run_cmd(Command::new("cargo").current_dir(root).args([
            "build",
            "--release",
            "--package",
            "lazaret",
            "--bin",
            "lazaret",
        ]))?;
    }
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["bench", "--package", "lazaret-tests", "--no-run"]);
    for b in benches {
        cmd.args(["--bench", b]);
    }
    eprintln!("bench: building {} (release)", benches.join(", "));
    run_cmd(&mut cmd)
}

/// `--count`: the datapath paths' executed instructions, checked against
/// `tests/benches/datapath/reference.json`, in seconds and without timing anything: for
/// iterating on the packet path. Writes no report; with `LAZARET_COUNT_PROFILE=DIR`, each
/// path's executions per instruction go to `DIR/<path>.tsv`.
fn count_only(selected: &[&Group]) -> Result<()> {
    let [g] = selected else {
        bail!("--count counts one group's instructions: `cargo xtask bench datapath --count`");
    };
    if g.name != "datapath" {
        bail!(
            "--count counts the datapath group's instructions, not {}'s",
            g.name
        );
    }
    let root = workspace_root()?;
    let out = target_dir(&root).join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    build(&root, &[g.name], false)?;
    let mut cmd = group_command(g, &root, &out, "bench")?.context("the datapath bench")?;
    cmd.arg("--count");
    run_cmd(&mut cmd)
}

/// The `--count` check as part of `cargo xtask test`: the same binary built with the test
/// profile (its dependencies are the tests' own, so this adds one binary to the build, not
/// a release build), so a change that makes the program or a path's executed instructions
/// grow past the reference fails when it lands, not at the next bench run. Counts do not
/// depend on the profile the host side is built with: the XDP object is the same.
pub(crate) fn check_counts_in_tests() -> Result<()> {
    let g = GROUPS
        .iter()
        .find(|g| g.name == "datapath")
        .context("the datapath group")?;
    let root = workspace_root()?;
    let out = target_dir(&root).join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = group_command(g, &root, &out, "test")?.context("the datapath bench")?;
    cmd.arg("--count");
    eprintln!("test: the datapath's executed instructions against its reference");
    run_cmd(&mut cmd)
}

/// `cargo bench` (or `cargo test`, `cargo_verb`, for the test profile) of the group's
/// binary with the policies it needs, or `None` for a group not implemented.
fn group_command(g: &Group, root: &Path, out: &Path, cargo_verb: &str) -> Result<Option<Command>> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        cargo_verb,
        "--quiet",
        "--package",
        "lazaret-tests",
        "--bench",
        g.name,
        "--",
    ]);
    match g.bench {
        Some(Needs::Policies(sizes)) => {
            for &(devices, rules, seed) in sizes {
                let (name, dir) = ensure_policy(out, devices, rules, seed)?;
                cmd.arg("--policy").arg(format!("{name}={}", dir.display()));
            }
        }
        Some(Needs::ReleaseDaemon(sizes)) => {
            cmd.env("LAZARET_BIN", target_dir(root).join("release/lazaret"));
            for &(devices, rules, seed) in sizes {
                let (name, dir) = ensure_policy(out, devices, rules, seed)?;
                cmd.arg("--policy").arg(format!("{name}={}", dir.display()));
            }
        }
        None => return Ok(None),
    }
    Ok(Some(cmd))
}

fn run_group(g: &Group, root: &Path, out: &Path, quick: bool) -> Result<Outcome> {
    let json = out.join(format!("{}.json", g.name));
    let md = out.join(format!("{}.md", g.name));
    for f in [&json, &md] {
        if f.exists() {
            std::fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    let Some(mut cmd) = group_command(g, root, out, "bench")? else {
        return Ok(Outcome::NotImplemented);
    };
    cmd.arg("--json").arg(&json).arg("--md").arg(&md);
    if quick {
        cmd.arg("--quick");
    }
    eprintln!(
        "bench: running group {} ({}){}",
        g.name,
        g.what,
        if quick { ", --quick" } else { "" }
    );
    run_cmd(&mut cmd)?;
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let (json, md) = (read(&json)?, read(&md)?);
    let trimmed = json.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        bail!("{}: the bench binary did not write a JSON object", g.name);
    }
    Ok(Outcome::Done {
        json: trimmed.to_string(),
        md,
    })
}

// === Generated policies ===

/// The generator's identity: a hash of its source, so a changed generator regenerates.
fn generator_fingerprint() -> u64 {
    fnv1a(include_str!("gen_policy.rs").as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `target/bench/policy-<devices>d-<rules>r[-s<seed>]`, written by gen-policy unless its
/// stamp says it was written with the same parameters and generator. Returns the policy's
/// key for the bench binary (`<devices>x<rules>[s<seed>]`) and its directory.
fn ensure_policy(out: &Path, devices: usize, rules: usize, seed: u64) -> Result<(String, PathBuf)> {
    let suffix = if seed == DEFAULT_SEED {
        String::new()
    } else {
        format!("-s{seed}")
    };
    let key = format!("{devices}x{rules}{}", suffix.replace('-', ""));
    let dir = out.join(format!("policy-{devices}d-{rules}r{suffix}"));
    let stamp_path = out.join(format!("policy-{devices}d-{rules}r{suffix}.stamp"));
    let stamp = format!(
        "devices={devices} rules={rules} seed={seed} generator={:016x}\n",
        generator_fingerprint()
    );
    let current = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if current == stamp && dir.join("site.toml").is_file() {
        eprintln!("bench: reusing {}", dir.display());
        return Ok((key, dir));
    }
    let _ = std::fs::remove_file(&stamp_path);
    gen_policy::run(&gen_policy::Args::new(devices, rules, seed, dir.clone()))?;
    std::fs::write(&stamp_path, stamp)
        .with_context(|| format!("writing {}", stamp_path.display()))?;
    Ok((key, dir))
}

// === Paths ===

pub(crate) fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// Absolute: the bench binaries run from their package's directory, so a relative
/// `CARGO_TARGET_DIR` (cargo reads it from the current directory) would name another
/// place there.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| std::path::absolute(&d).unwrap_or_else(|_| PathBuf::from(d)))
        .unwrap_or_else(|| root.join("target"))
}

// === The machine ===

struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    date: String,
    commit: String,
    rustc: String,
    /// /proc/loadavg's 1-minute figure when the run started: others' work on the machine.
    load: String,
    quick: bool,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn machine(root: &Path, quick: bool, load: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let output = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit =
        output(
            Command::new("git")
                .arg("-C")
                .arg(root)
                .args(["rev-parse", "--short", "HEAD"]),
        )
        .unwrap_or_else(|| "unknown".into());
    let dirty = output(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["status", "--porcelain"]),
    )
    .is_some_and(|s| !s.is_empty());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        kernel,
        date: utc_now(),
        commit: if dirty {
            format!("{commit} (uncommitted changes)")
        } else {
            commit
        },
        rustc: output(Command::new("rustc").arg("--version")).unwrap_or_else(|| "unknown".into()),
        load,
        quick,
    }
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// === The report ===

/// Stamps each group run now with when it was measured, and carries over the groups not run
/// now from the previous report (so `cargo xtask bench reload` does not erase the datapath
/// figures).
fn stamp_and_keep<'g>(
    outcomes: Vec<(&'g Group, Outcome)>,
    m: &Machine,
    json_path: &Path,
    md_path: &Path,
) -> Vec<(&'g Group, Outcome)> {
    let previous: serde_json::Value = std::fs::read_to_string(json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let previous_md = std::fs::read_to_string(md_path).unwrap_or_default();
    outcomes
        .into_iter()
        .map(|(g, o)| {
            let o = match o {
                Outcome::Done { json, md } => {
                    let stamped = serde_json::from_str::<serde_json::Value>(&json)
                        .ok()
                        .and_then(|mut v| {
                            v.as_object_mut()?.insert(
                                "measured".into(),
                                serde_json::json!({
                                    "date": m.date, "commit": m.commit, "quick": m.quick,
                                    "load_average_at_start": m.load,
                                }),
                            );
                            serde_json::to_string_pretty(&v).ok()
                        })
                        .unwrap_or(json);
                    Outcome::Done { json: stamped, md }
                }
                Outcome::NotRequested => {
                    let old = &previous[g.name];
                    let when = &old["measured"];
                    match (when["date"].as_str(), md_section(&previous_md, g.name)) {
                        (Some(date), Some(md)) => Outcome::Kept {
                            json: serde_json::to_string_pretty(old).unwrap_or_default(),
                            md,
                            when: format!(
                                "{date}, commit {}{}",
                                when["commit"].as_str().unwrap_or("unknown"),
                                if when["quick"].as_bool() == Some(true) {
                                    ", --quick"
                                } else {
                                    ""
                                }
                            ),
                        },
                        _ => Outcome::NotRequested,
                    }
                }
                other => other,
            };
            (g, o)
        })
        .collect()
}

/// A group's section body in a previous markdown report (without its heading or a kept-note).
fn md_section(md: &str, group: &str) -> Option<String> {
    let heading = format!("\n## {group} — ");
    let start = md.find(&heading)? + 1;
    let body_start = start + md[start..].find('\n')? + 1;
    let end = md[body_start..]
        .find("\n## ")
        .map_or(md.len(), |i| body_start + i + 1);
    let body = md[body_start..end].trim_start_matches('\n');
    let body = match body.strip_prefix("*Kept from the run of ") {
        Some(rest) => rest.split_once("*\n\n").map_or(body, |(_, b)| b),
        None => body,
    };
    (!body.starts_with("Not run") && !body.starts_with("Not implemented"))
        .then(|| format!("{}\n", body.trim_end()))
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Indents a (pretty-printed) fragment so it nests under a top-level key.
fn nest(fragment: &str) -> String {
    fragment.lines().collect::<Vec<_>>().join("\n  ")
}

fn report_json(m: &Machine, outcomes: &[(&Group, Outcome)]) -> String {
    let mut parts = vec![format!(
        "\"machine\": {{\"cpu\": {}, \"cores\": {}, \"kernel\": {}, \"date\": {}, \"commit\": {}, \"rustc\": {}, \"load_average_at_start\": {}, \"quick\": {}}}",
        js(&m.cpu),
        m.cores,
        js(&m.kernel),
        js(&m.date),
        js(&m.commit),
        js(&m.rustc),
        js(&m.load),
        m.quick
    )];
    for (g, o) in outcomes {
        let value = match o {
            Outcome::Done { json, .. } => nest(json),
            Outcome::NotImplemented => "{\"status\": \"not implemented\"}".into(),
            Outcome::NotRequested => "{\"status\": \"not run (not requested)\"}".into(),
            Outcome::Kept { json, .. } => nest(json),
            Outcome::Failed(e) => format!("{{\"status\": \"failed\", \"error\": {}}}", js(e)),
        };
        parts.push(format!("{}: {value}", js(g.name)));
    }
    format!("{{\n  {}\n}}\n", parts.join(",\n  "))
}

fn report_md(m: &Machine, outcomes: &[(&Group, Outcome)]) -> String {
    let mut s = String::from("# lazaret benchmark results\n\n");
    s.push_str(&format!(
        "Machine: {}, {} cores, Linux {}; {}; commit {}; {}; load average {} at start{}.\n",
        m.cpu,
        m.cores,
        m.kernel,
        m.date,
        m.commit,
        m.rustc,
        m.load,
        if m.quick {
            "; **--quick run (smoke figures, not for publication)**"
        } else {
            ""
        }
    ));
    s.push_str("How each figure is measured: docs/benchmarks.md.\n");
    for (g, o) in outcomes {
        s.push_str(&format!("\n## {} — {}\n\n", g.name, g.what));
        match o {
            Outcome::Done { md, .. } => s.push_str(md),
            Outcome::NotImplemented => s.push_str("Not implemented yet.\n"),
            Outcome::NotRequested => s.push_str("Not run in this invocation.\n"),
            Outcome::Kept { md, when, .. } => {
                s.push_str(&format!(
                    "*Kept from the run of {when}: not run in this invocation.*\n\n"
                ));
                s.push_str(md);
            }
            Outcome::Failed(e) => s.push_str(&format!("**Failed:** {e}\n")),
        }
    }
    s
}

/// The closing lines; an error if a group failed. Missed targets are reported, not errors:
/// a benchmark shows the figures, it does not gate.
fn summarize(outcomes: &[(&Group, Outcome)], md: &str, json: &Path, md_path: &Path) -> Result<()> {
    let name = |f: fn(&Outcome) -> bool| -> Vec<&str> {
        outcomes
            .iter()
            .filter(|(_, o)| f(o))
            .map(|(g, _)| g.name)
            .collect()
    };
    let done = name(|o| matches!(o, Outcome::Done { .. }));
    let missing = name(|o| matches!(o, Outcome::NotImplemented));
    let failed = name(|o| matches!(o, Outcome::Failed(_)));
    let missed = md.lines().filter(|l| l.contains("MISSED")).count();
    println!();
    println!(
        "bench: ran {}",
        if done.is_empty() {
            "nothing".to_string()
        } else {
            done.join(", ")
        }
    );
    if !missing.is_empty() {
        println!("bench: not implemented yet: {}", missing.join(", "));
    }
    if missed > 0 {
        println!(
            "bench: {missed} table row(s) with a MISSED target (see {})",
            md_path.display()
        );
    } else if !done.is_empty() {
        println!("bench: every target met");
    }
    println!("bench: wrote {} and {}", json.display(), md_path.display());
    if !failed.is_empty() {
        bail!("benchmark group(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::md_section;

    const MD: &str = "# lazaret benchmark results\n\nMachine: x.\n\
        \n## policy — parse\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\
        \n## datapath — ns\n\nNot run in this invocation.\n\
        \n## reload — reload\n\n*Kept from the run of 2026-11-23, commit abc: not run in this invocation.*\n\nfigures\n";

    #[test]
    fn a_groups_section_is_found_without_its_heading_or_kept_note() {
        assert_eq!(
            md_section(MD, "policy").as_deref(),
            Some("| a | b |\n|---|---|\n| 1 | 2 |\n")
        );
        assert_eq!(md_section(MD, "reload").as_deref(), Some("figures\n"));
    }

    #[test]
    fn a_group_that_was_not_run_has_no_figures_to_keep() {
        assert_eq!(md_section(MD, "datapath"), None);
        assert_eq!(md_section(MD, "quarantine"), None);
    }
}
