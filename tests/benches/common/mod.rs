//! Shared by the bench binaries: the arguments `cargo xtask bench` passes, medians, and the
//! two fragment files (JSON, markdown) each binary writes for xtask to merge into
//! `docs/bench-results.json` and `docs/bench-results.md`. No timing here.
#![allow(
    dead_code,
    reason = "shared by the bench binaries; each uses a part of it"
)]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// `-- --json FILE --md FILE [--quick] [--policy KEY=DIR]… [--profile PATH] [--count]`
/// (after cargo's own `--bench`).
pub(crate) struct Args {
    pub json: PathBuf,
    pub md: PathBuf,
    pub quick: bool,
    /// Generated policy directories, keyed as the binary expects (`DEVICESxRULES`).
    pub policies: Vec<(String, PathBuf)>,
    /// Instead of measuring, run one path for a while (for `perf record`); no files written.
    pub profile: Option<String>,
    /// Only count each path's executed instructions and check them against the reference
    /// (seconds, not minutes: for iterating on the packet path); no files written.
    pub count: bool,
}

pub(crate) fn args() -> Result<Args> {
    let usage =
        "usage: --json FILE --md FILE [--quick] [--policy KEY=DIR]… [--profile PATH] [--count]";
    let (mut json, mut md, mut quick, mut policies) = (None, None, false, Vec::new());
    let (mut profile, mut count) = (None, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            // cargo bench appends `--bench` to every bench binary's arguments.
            "--bench" => {}
            "--quick" => quick = true,
            "--count" => count = true,
            "--json" => json = Some(PathBuf::from(it.next().context("--json needs a file")?)),
            "--md" => md = Some(PathBuf::from(it.next().context("--md needs a file")?)),
            "--policy" => {
                let v = it.next().context("--policy needs KEY=DIR")?;
                let (k, d) = v.split_once('=').context("--policy needs KEY=DIR")?;
                policies.push((k.to_string(), PathBuf::from(d)));
            }
            "--profile" => profile = Some(it.next().context("--profile needs a path name")?),
            other => bail!("unknown argument {other:?}; {usage}"),
        }
    }
    if profile.is_some() || count {
        json = json.or_else(|| Some(PathBuf::new()));
        md = md.or_else(|| Some(PathBuf::new()));
    }
    let (Some(json), Some(md)) = (json, md) else {
        bail!("{usage} (run it through `cargo xtask bench`)");
    };
    Ok(Args {
        json,
        md,
        quick,
        policies,
        profile,
        count,
    })
}

impl Args {
    /// The policy directory given for `key`.
    pub(crate) fn policy(&self, key: &str) -> Result<&PathBuf> {
        self.policies
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, d)| d)
            .with_context(|| format!("no --policy {key}=DIR given (cargo xtask bench passes it)"))
    }

    /// Writes the group's fragments.
    pub(crate) fn write(&self, json: &serde_json::Value, md: &str) -> Result<()> {
        let text = serde_json::to_string_pretty(json).context("serialising the results")?;
        std::fs::write(&self.json, text + "\n")
            .with_context(|| format!("writing {}", self.json.display()))?;
        std::fs::write(&self.md, md).with_context(|| format!("writing {}", self.md.display()))
    }
}

/// Median of the samples (mean of the middle two for an even count); 0 for none.
pub(crate) fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Rounds for the report: figures keep three decimals, enough for ns and ms.
/// The `p` quantile (0..=1) of `sorted` (ascending), nearest rank; 0 for no samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `10000` → `10k`, `100000` → `100k`, `1` → `1`: the short form used in figure names.
pub(crate) fn short(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// `100000` → `100,000`.
pub(crate) fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `pass` or `MISSED`, as the markdown tables and xtask's summary spell it.
pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "pass"
    } else {
        "MISSED"
    }
}
