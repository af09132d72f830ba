//! `cargo xtask bench reload`: how long a policy change takes to enforce.
//!
//! Measures the daemon's apply path on the real XDP program (loaded, not attached; no
//! namespaces): read + parse + validate + compile, map contents for the next slot, and the
//! generation switch (fill the inactive slot, flip, grace period, clear the old slot), for
//! the 10,000-device / 100,000-rule policy as a whole and for a one-device change (one
//! device switched to audit mode). The daemon waits for the files to settle before it
//! reloads (`DEBOUNCE` + a 100 ms stability check); "file change → enforcing" adds that
//! fixed wait to the apply time. Targets: < 2 s for the whole policy, < 50 ms for one device.

#[path = "common/mod.rs"]
mod common;

use std::{collections::BTreeMap, path::Path, time::Instant};

use anyhow::{bail, Context, Result};
use common::{median, round3, verdict};
use lazaret::{
    datapath::{Datapath, LoadOptions},
    policy,
};
use serde_json::json;

const RUNS: usize = 5;
const QUICK_RUNS: usize = 2;
/// The watcher's wait before a reload: DEBOUNCE (300 ms) and the 100 ms stability check.
const SETTLE_MS: f64 = 400.0;
const TARGET_FULL_MS: f64 = 2000.0;
const TARGET_ONE_MS: f64 = 50.0;

/// One apply: compile the directory and install it as the next generation.
fn apply(dp: &mut Datapath, dir: &Path, generation: u64) -> Result<f64> {
    let t = Instant::now();
    let (_, compiled) =
        policy::load_and_compile(dir).map_err(|e| anyhow::anyhow!("{}", e.render()))?;
    let ifindexes: BTreeMap<String, u32> = compiled
        .interfaces
        .iter()
        .map(|i| (i.name.clone(), 1))
        .collect();
    let slot = dp.next_slot()?;
    let contents = compiled.map_contents(slot, generation, &ifindexes)?;
    dp.install(&contents)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if dp.active_site()?.generation != generation {
        bail!("generation {generation} is not the one enforcing after install");
    }
    Ok(ms)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = common::args()?;
    let runs = if args.quick { QUICK_RUNS } else { RUNS };
    let (key, src) = args.policies.first().context("no --policy given")?;
    // Work on a copy: the one-device change edits a file.
    let dir = std::env::temp_dir().join(format!("lazaret-bench-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(src, &dir)?;
    let device_file = dir.join("devices/devices-000.toml");
    let original = std::fs::read_to_string(&device_file)
        .context("the generated policy's first device file")?;
    let changed = original.replacen(
        "id = \"dev-00000\"\n",
        "id = \"dev-00000\"\nmode = \"audit\"\n",
        1,
    );
    if changed == original {
        bail!(
            "could not find dev-00000 to change in {}",
            device_file.display()
        );
    }

    let mut dp =
        Datapath::load(&LoadOptions::default()).context("loading the XDP program (needs root)")?;
    let mut generation = 0;
    let (mut full, mut one) = (Vec::new(), Vec::new());
    // Warm-up: the first install fills empty maps.
    generation += 1;
    apply(&mut dp, &dir, generation)?;
    for i in 0..runs {
        eprintln!("reload: run {}/{runs}", i + 1);
        std::fs::write(&device_file, &original)?;
        generation += 1;
        full.push(apply(&mut dp, &dir, generation)?);
        std::fs::write(&device_file, &changed)?;
        generation += 1;
        one.push(apply(&mut dp, &dir, generation)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (full_ms, one_ms) = (median(&full), median(&one));
    let out = json!({
        "quick": args.quick,
        "runs": runs,
        "policy": key,
        "apply_full_ms": round3(full_ms),
        "apply_one_device_change_ms": round3(one_ms),
        "settle_wait_ms": SETTLE_MS,
        "file_change_to_enforcing_full_ms": round3(full_ms + SETTLE_MS),
        "file_change_to_enforcing_one_device_ms": round3(one_ms + SETTLE_MS),
        "target_full_ms": TARGET_FULL_MS,
        "target_one_device_ms": TARGET_ONE_MS,
        "full_met": full_ms + SETTLE_MS < TARGET_FULL_MS,
        "one_device_met": one_ms + SETTLE_MS < TARGET_ONE_MS,
    });
    let md = format!(
        "Apply path on the real program (compile + map contents + generation switch), median of {runs} runs; the daemon's \
         settle wait ({SETTLE_MS} ms) is added for \"file change → enforcing\".\n\n\
         | change | apply | file change → enforcing | target | |\n|---|---:|---:|---|---|\n\
         | whole policy, 10,000 devices / 100,000 rules | {full_ms:.0} ms | {:.0} ms | < {TARGET_FULL_MS} ms | {} |\n\
         | one device (mode → audit) | {one_ms:.0} ms | {:.0} ms | < {TARGET_ONE_MS} ms | {} |\n\n\
         Every reload recompiles and reinstalls the whole generation, so a one-device change costs \
         as much as the whole policy: meeting the one-device target needs an incremental compile \
         and install.\n",
        full_ms + SETTLE_MS,
        verdict(full_ms + SETTLE_MS < TARGET_FULL_MS),
        one_ms + SETTLE_MS,
        verdict(one_ms + SETTLE_MS < TARGET_ONE_MS),
    );
    args.write(&out, &md)
}
