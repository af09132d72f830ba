//! `lazaret risk`: each device's risk score with every factor behind it, the advisories
//! that apply to it (the repository's `advisories/`, and `--advisories DIR`), and what
//! `[site.risk]` changes for it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use lazaret::policy::{model::Date, risk};
use serde::Serialize;

use super::Output;

#[derive(Debug, Args)]
pub(crate) struct RiskArgs {
    /// Policy directory (default: the configuration's `policy_dir` with `--config`, else
    /// `policies`).
    pub dir: Option<PathBuf>,
    /// More advisories: the CSAF 2.0 documents and KEV catalogs (`*.json`) in this
    /// directory, besides the repository's own `advisories/`.
    #[arg(long, value_name = "DIR")]
    pub advisories: Vec<PathBuf>,
    /// Compute patch ages as of this date (YYYY-MM-DD) instead of today.
    #[arg(long)]
    pub today: Option<String>,
}

#[derive(Serialize)]
struct Row {
    id: String,
    score: u8,
    band: &'static str,
    factors: Vec<Factor>,
    advisories: Vec<lazaret::policy::advisories::Hit>,
    site_risk: Vec<String>,
    /// Advisories that name the device's vendor and model at versions its unrecorded
    /// firmware cannot be checked against.
    firmware_unknown: Vec<String>,
}

#[derive(Serialize)]
struct Factor {
    factor: String,
    points: u8,
}

/// The `*.json` files of a directory given with `--advisories`, sorted, as policy sources
/// (`check` and `risk` parse them with the policy), read as carefully as the policy's own
/// files (no FIFO, within the loader's limits).
pub(crate) fn advisory_files(dir: &Path) -> Result<Vec<lazaret::policy::SourceFile>> {
    use lazaret::policy::load::{read_file, Limits};
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let limits = Limits::DEFAULT;
    anyhow::ensure!(
        paths.len() <= limits.files,
        "{}: more than {} advisory files",
        dir.display(),
        limits.files
    );
    let mut budget = limits.total_bytes;
    let mut out = Vec::new();
    for path in paths {
        let text = read_file(&path, &limits, &mut budget)
            .map_err(|p| anyhow::anyhow!("{}: {p}", path.display()))?;
        out.push(lazaret::policy::SourceFile::new(
            path.display().to_string(),
            text,
        ));
    }
    Ok(out)
}

pub(crate) fn run(a: RiskArgs, output: Output) -> Result<ExitCode> {
    let dir = a.dir.unwrap_or_else(|| PathBuf::from("policies"));
    let today = match &a.today {
        Some(t) => t
            .parse::<Date>()
            .map_err(|()| anyhow::anyhow!("--today: {t:?} is not YYYY-MM-DD"))?
            .days(),
        None => lazaret::policy::windows::now() / 86_400,
    };
    // The feed is read with the policy, as `check --advisories` reads it: the score and
    // what `[site.risk]` changes come from the same advisories.
    let mut files = match lazaret::policy::load::read_dir(&dir) {
        Ok(f) => f,
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(ExitCode::FAILURE);
        }
    };
    for extra in &a.advisories {
        files.extend(advisory_files(extra)?);
    }
    let policy = match lazaret::policy::parse_sources(files) {
        Ok(p) => p,
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(ExitCode::FAILURE);
        }
    };
    let rows: Vec<Row> = (policy.devices.iter())
        .map(|d| {
            let hits = policy.advisories.hits(&d.inventory);
            let r = risk::score(&d.inventory, today, &hits);
            Row {
                id: d.id.clone(),
                score: r.score,
                band: r.band,
                factors: (r.factors.iter())
                    .map(|(f, p)| Factor {
                        factor: f.clone(),
                        points: *p,
                    })
                    .collect(),
                advisories: r.advisories.clone(),
                site_risk: d.risk_actions.clone(),
                firmware_unknown: policy.advisories.unknown_firmware(&d.inventory),
            }
        })
        .collect();
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    match output {
        Output::Json => line(serde_json::to_string_pretty(&rows)?),
        Output::Csv => {
            line("id,score,band,advisories,factors".to_string());
            for r in &rows {
                let ids: Vec<&str> = r.advisories.iter().map(|h| h.id.as_str()).collect();
                let factors: Vec<String> = r
                    .factors
                    .iter()
                    .map(|f| format!("{} {}", f.factor, f.points))
                    .collect();
                let cells = [
                    r.id.clone(),
                    r.score.to_string(),
                    r.band.to_string(),
                    ids.join(" "),
                    factors.join("; "),
                ];
                let cells: Vec<String> = cells.iter().map(|c| lazaret::text::csv_cell(c)).collect();
                line(cells.join(","));
            }
        }
        Output::Text => {
            for r in &rows {
                line(format!(
                    "{} {} {}",
                    lazaret::text::printable(&r.id),
                    r.score,
                    r.band
                ));
                for f in &r.factors {
                    line(format!(
                        "  {:>3}  {}",
                        f.points,
                        lazaret::text::printable(&f.factor)
                    ));
                }
                for s in &r.site_risk {
                    line(format!(
                        "       [site.risk] {}",
                        lazaret::text::printable(s)
                    ));
                }
                for a in &r.firmware_unknown {
                    line(format!(
                        "       firmware not recorded: advisory {} names this vendor and \
model; record the firmware to know",
                        lazaret::text::printable(a)
                    ));
                }
            }
            let affected = rows.iter().filter(|r| !r.advisories.is_empty()).count();
            line(format!(
                "{} devices, {affected} affected by an advisory ({} advisories, {} KEV entries read)",
                rows.len(),
                policy.advisories.advisories.len(),
                policy.advisories.exploited.len()
            ));
        }
    }
    super::policy_cmds::write_out(&out);
    Ok(ExitCode::SUCCESS)
}
