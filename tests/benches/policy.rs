//! `cargo xtask bench policy`: wall time of `lazaret::policy::load_and_compile` (read +
//! parse + validate + compile) on policies written by `cargo xtask gen-policy`; the median
//! of several runs after one untimed warm-up. Target: 10,000 devices and 100,000 rules in
//! under 1 s. A breakdown by stage is timed in separate passes of the same runs.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use common::{median, round3, short, thousands, verdict};
use lazaret::policy::{self, PolicyErrors};
use serde_json::{json, Map, Value};

/// Timed runs per policy (after one warm-up); --quick still times the full-size policy.
/// The `lazaret` binary's allocator (gateway/src/main.rs): the bench times `lazaret check`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 7;
const QUICK_RUNS: usize = 3;
/// The target applies to this size: (devices, rules, milliseconds).
const TARGET: (usize, usize, f64) = (10_000, 100_000, 1000.0);

fn main() -> Result<()> {
    let args = common::args()?;
    let runs = if args.quick { QUICK_RUNS } else { RUNS };
    let mut fig = Map::new();
    let mut details = Map::new();
    let mut rows = Vec::new();
    for (key, dir) in &args.policies {
        let (devices, rules) = parse_key(key)?;
        let name = format!("{}_devices_{}_rules", short(devices), short(rules));
        eprintln!(
            "policy: {name}: {runs} runs of load_and_compile on {}",
            dir.display()
        );
        let target = ((devices, rules) == (TARGET.0, TARGET.1)).then_some(TARGET.2);
        // One size failing (a generator bug, say) does not hide the others' figures; the
        // target size failing fails the group.
        let m = match measure(dir, runs) {
            Ok(m) => m,
            Err(e) if target.is_none() => {
                eprintln!("policy: {name}: {e:#}");
                fig.insert(format!("compile_{name}_ms"), Value::Null);
                details.insert(name, json!({ "error": format!("{e:#}") }));
                rows.push(Row {
                    devices,
                    rules,
                    m: Err(first_line(&e)),
                    target,
                });
                continue;
            }
            Err(e) => return Err(e.context(format!("policy {name}"))),
        };
        fig.insert(format!("compile_{name}_ms"), json!(round3(m.median_ms)));
        details.insert(name.clone(), m.json(devices, rules, target));
        rows.push(Row {
            devices,
            rules,
            m: Ok(m),
            target,
        });
    }
    if rows.is_empty() {
        bail!("no --policy given");
    }
    let missed = rows.iter().any(|r| match (&r.m, r.target) {
        (Ok(m), Some(t)) => m.median_ms >= t,
        _ => false,
    });
    let mut out = Map::new();
    out.insert("quick".into(), json!(args.quick));
    out.insert("runs".into(), json!(runs));
    out.extend(fig);
    out.insert("target_ms".into(), json!(TARGET.2));
    out.insert(
        "target".into(),
        json!(format!(
            "compile_{}_devices_{}_rules_ms < {}",
            short(TARGET.0),
            short(TARGET.1),
            TARGET.2
        )),
    );
    out.insert("pass".into(), json!(!missed));
    out.insert("details".into(), Value::Object(details));
    out.insert("method".into(), json!(METHOD));
    let md = markdown(&rows, runs, args.quick);
    print!("{md}");
    args.write(&Value::Object(out), &md)
}

struct Row {
    devices: usize,
    rules: usize,
    /// The figures, or the first line of why there are none.
    m: Result<Measured, String>,
    target: Option<f64>,
}

fn first_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next()) {
        (Some(a), Some(b)) => format!("{a} {b}"),
        (Some(a), None) => a.to_string(),
        _ => "failed".into(),
    }
}

const METHOD: &str = "Wall time (std::time::Instant) of lazaret::policy::load_and_compile on a \
directory written by `cargo xtask gen-policy`: read every file, parse, validate, compile into \
the datapath's lookup structure. One untimed warm-up (page cache), then the median of the timed \
runs; the result is dropped outside the timed region. The stage breakdown (read, parse + \
validate, compile) is timed in a separate pass of each run with the same public functions.";

/// `10000x100000` → (10000, 100000).
fn parse_key(key: &str) -> Result<(usize, usize)> {
    let (d, r) = key
        .split_once('x')
        .with_context(|| format!("policy key {key:?}: expected DEVICESxRULES"))?;
    Ok((
        d.parse().context("policy key: devices")?,
        r.parse().context("policy key: rules")?,
    ))
}

fn errors(e: PolicyErrors) -> anyhow::Error {
    let text = e.render();
    let head: Vec<&str> = text.lines().take(30).collect();
    anyhow!(
        "the generated policy does not compile:\n{}",
        head.join("\n")
    )
}

struct Measured {
    samples_ms: Vec<f64>,
    median_ms: f64,
    read_ms: f64,
    parse_validate_ms: f64,
    compile_ms: f64,
    files: usize,
    bytes: usize,
    stats: Value,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn measure(dir: &Path, runs: usize) -> Result<Measured> {
    // Warm-up: the page cache, the allocator, and a check that the policy compiles at all.
    let (_, compiled) = policy::load_and_compile(dir).map_err(errors)?;
    let stats = serde_json::to_value(&compiled.stats).context("compiled stats")?;
    drop(compiled);
    let (mut samples, mut read, mut parse, mut comp) = (vec![], vec![], vec![], vec![]);
    let (mut files, mut bytes) = (0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let result = policy::load_and_compile(dir);
        samples.push(ms(t));
        result.map_err(errors)?;

        let t = Instant::now();
        let sources = policy::load::read_dir(dir).map_err(errors)?;
        read.push(ms(t));
        files = sources.len();
        bytes = sources.iter().map(|f| f.text.len()).sum();
        let t = Instant::now();
        let parsed = policy::parse_sources(sources).map_err(errors)?;
        parse.push(ms(t));
        let t = Instant::now();
        let compiled = policy::compile(&parsed).map_err(errors)?;
        comp.push(ms(t));
        drop((parsed, compiled));
    }
    Ok(Measured {
        median_ms: median(&samples),
        samples_ms: samples,
        read_ms: median(&read),
        parse_validate_ms: median(&parse),
        compile_ms: median(&comp),
        files,
        bytes,
        stats,
    })
}

impl Measured {
    fn json(&self, devices: usize, rules: usize, target: Option<f64>) -> Value {
        json!({
            "devices": devices,
            "rules": rules,
            "files": self.files,
            "bytes": self.bytes,
            "median_ms": round3(self.median_ms),
            "samples_ms": self.samples_ms.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
            "breakdown_median_ms": {
                "read": round3(self.read_ms),
                "parse_validate": round3(self.parse_validate_ms),
                "compile": round3(self.compile_ms),
            },
            "target_ms": target,
            "pass": target.map(|t| self.median_ms < t),
            "compiled": self.stats,
        })
    }
}

fn markdown(rows: &[Row], runs: usize, quick: bool) -> String {
    let mut s = format!(
        "Parse + validate + compile (`load_and_compile`), median of {runs} runs{}.\n\n",
        if quick { " (--quick)" } else { "" }
    );
    s.push_str("| policy | median | read | parse + validate | compile | target | |\n");
    s.push_str("|---|---:|---:|---:|---:|---|---|\n");
    for r in rows {
        let policy = format!(
            "{} devices, {} rules",
            thousands(r.devices),
            thousands(r.rules)
        );
        let m = match &r.m {
            Ok(m) => m,
            Err(e) => {
                s.push_str(&format!(
                    "| {policy} | failed: {} | | | | | |\n",
                    e.replace('|', "/")
                ));
                continue;
            }
        };
        let (t, v) = match r.target {
            Some(t) => (format!("< {t:.0} ms"), verdict(m.median_ms < t)),
            None => ("—".to_string(), ""),
        };
        s.push_str(&format!(
            "| {policy} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {t} | {v} |\n",
            m.median_ms, m.read_ms, m.parse_validate_ms, m.compile_ms
        ));
    }
    s
}
