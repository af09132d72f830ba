//! `cargo xtask bench import`: wall time of `lazaret import csv` (the library's `plan` and
//! `write`) on a 10,000-row export of the generated 10,000-device policy. Target: under 1 s.
//!
//! Each run works on a fresh copy of the policy (copied outside the timed region) and an
//! export, written from the policy's own devices, that changes every device's firmware and
//! spells its MAC with dashes: 10,000 devices updated in place across the policy's files.
//! A second timing imports the same export again into the updated copy (every row compared,
//! nothing written): the cost of a nightly import that finds nothing new.

#[path = "common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::{median, round3, thousands, verdict};
use lazaret::import::csv::{self, Mapping};
use serde_json::json;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 7;
const QUICK_RUNS: usize = 3;
const POLICY: &str = "10000x100000";
const TARGET_MS: f64 = 1000.0;

const MAPPING: &str = r#"
[columns]
id = "Asset Tag"
mac = "MAC Address"
ipv4 = "IP Address"
vlan = "VLAN"
interface = "Segment"
vendor = "Manufacturer"
model = "Model"
firmware = "Software Version"
location = "Location"
[output]
file = "devices/imported.toml"
"#;

const METHOD: &str = "Wall time (std::time::Instant) of lazaret::import::csv::plan + write on a \
10,000-row semicolon-separated export of the generated 10,000-device, 100,000-rule policy (every \
row's firmware changed, MACs dash-spelled), into a fresh copy of the policy made outside the \
timed region: read and decode the export, load and validate the policy, compare every row, \
edit the device files in place, validate the policy the import would leave, write. Then the \
same export again into the updated copy (no change, nothing written). Median of the runs after \
one untimed warm-up.";

fn main() -> Result<()> {
    let args = common::args()?;
    let runs = if args.quick { QUICK_RUNS } else { RUNS };
    let src = args.policy(POLICY)?;
    let work = lazaret_tests::netns::TempDir::new().context("a working directory")?;
    let export = work.path.join("export.csv");
    let rows = write_export(src, &export)?;
    let mapping = Mapping::parse(MAPPING, "mapping.toml")?;
    eprintln!(
        "import: {runs} runs of a {rows}-row export into {}",
        src.display()
    );

    let (mut changed, mut again) = (Vec::new(), Vec::new());
    for run in 0..=runs {
        let dir = work.path.join(format!("run-{run}"));
        copy_dir(src, &dir)?;
        let t = Instant::now();
        let plan = csv::plan(&dir, &export, &mapping, false)?;
        csv::write(&plan)?;
        let first = t.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            plan.changed.len() == rows,
            "{} of {rows} rows changed",
            plan.changed.len()
        );
        let t = Instant::now();
        let plan = csv::plan(&dir, &export, &mapping, false)?;
        let second = t.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            plan.files.is_empty() && plan.unchanged == rows,
            "the second import changed something"
        );
        std::fs::remove_dir_all(&dir).context("removing a run's copy")?;
        // The first run warms the page cache and the allocator.
        if run > 0 {
            changed.push(first);
            again.push(second);
        }
    }
    let (m_changed, m_again) = (median(&changed), median(&again));
    let pass = m_changed < TARGET_MS;
    let mut md = format!(
        "`lazaret import csv` of a {}-row export into the 10,000-device, 100,000-rule \
policy, median of {runs} runs{}.\n\n",
        thousands(rows),
        if args.quick { " (--quick)" } else { "" }
    );
    md.push_str("| import | median | target | |\n|---|---:|---|---|\n");
    let _ = writeln!(
        md,
        "| {} rows, every device updated in place | {m_changed:.0} ms | < {TARGET_MS:.0} ms | {} |",
        thousands(rows),
        verdict(pass)
    );
    let _ = writeln!(
        md,
        "| the same export again: nothing to change | {m_again:.0} ms | — | |"
    );
    print!("{md}");
    let out = json!({
        "quick": args.quick,
        "runs": runs,
        "rows": rows,
        "import_10k_rows_ms": round3(m_changed),
        "reimport_unchanged_10k_rows_ms": round3(m_again),
        "samples_ms": changed.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
        "target_ms": TARGET_MS,
        "target": format!("import_10k_rows_ms < {TARGET_MS}"),
        "pass": pass,
        "method": METHOD,
    });
    args.write(&out, &md)
}

/// An export of `policy`'s devices with every firmware changed: (rows written).
fn write_export(policy: &Path, to: &Path) -> Result<usize> {
    let p = lazaret::policy::load_dir(policy).map_err(|e| anyhow::anyhow!(e.render()))?;
    let mut out = String::from(
        "Asset Tag;MAC Address;IP Address;VLAN;Segment;Manufacturer;Model;Software Version;Location\n",
    );
    for d in &p.devices {
        let mac = d
            .mac
            .map(|m| m.to_string().to_uppercase().replace(':', "-"));
        let ip = d.ipv4.first().map(ToString::to_string);
        let _ = writeln!(
            out,
            "{};{};{};{};{};{};{};{}-r2;{}",
            d.id,
            mac.unwrap_or_default(),
            ip.unwrap_or_default(),
            d.vlan.map(|v| v.to_string()).unwrap_or_default(),
            d.interface.clone().unwrap_or_default(),
            d.inventory.vendor,
            d.inventory.model,
            d.inventory.firmware,
            d.inventory.location,
        );
    }
    std::fs::write(to, out).with_context(|| format!("writing {}", to.display()))?;
    Ok(p.devices.len())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()?
        .success();
    ensure!(ok, "copying {} to {}", from.display(), to.display());
    Ok(())
}
