//! `cargo xtask bench reload`: how long a policy change takes to enforce.
//!
//! Measures the daemon's apply path on the real XDP program (loaded, not attached; no
//! namespaces): read + parse + validate + compile, map contents for the next slot, and the
//! generation switch (bring the inactive slot to the new contents, flip), for two changes:
//!
//! - **whole policy**: the 10,000-device / 100,000-rule policy replaced by an unrelated one
//!   of the same size (three generated policies, seeds 1–3, in rotation), so every install
//!   rewrites its slot completely — removing one policy's entries and writing another's;
//! - **one device**: a sequence of edits to the seed-1 policy, each switching one more
//!   device to audit mode, so every install writes over the generation before last (two
//!   devices differ) — what the daemon does on a stream of small commits.
//!
//! Compile and install are timed separately. The daemon waits for the files to settle before
//! it reloads (`DEBOUNCE` + a 100 ms stability check); "file change → enforcing" adds that
//! fixed wait. Targets: < 2 s for the whole policy, < 50 ms for one device.

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Instant,
};

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

/// One apply's times, in ms.
#[derive(Clone, Copy)]
struct Apply {
    compile: f64,
    install: f64,
}

impl Apply {
    fn total(&self) -> f64 {
        self.compile + self.install
    }
}

/// One apply: compile the directory and install it as the next generation.
fn apply(dp: &mut Datapath, dir: &Path, generation: u64) -> Result<Apply> {
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
    let compile = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    dp.install(&contents)?;
    let install = t.elapsed().as_secs_f64() * 1000.0;
    if dp.active_site()?.generation != generation {
        bail!("generation {generation} is not the one enforcing after install");
    }
    Ok(Apply { compile, install })
}

/// Switches device `dev-NNNNN` of a generated policy to audit mode, in whichever device file
/// holds it.
fn audit_device(dir: &Path, n: usize) -> Result<()> {
    let id = format!("id = \"dev-{n:05}\"\n");
    for e in std::fs::read_dir(dir.join("devices"))? {
        let path = e?.path();
        let text = std::fs::read_to_string(&path)?;
        if text.contains(&id) {
            let changed = text.replacen(&id, &format!("{id}mode = \"audit\"\n"), 1);
            std::fs::write(&path, changed)?;
            return Ok(());
        }
    }
    bail!("no device dev-{n:05} in {}", dir.display())
}

fn medians(applies: &[Apply]) -> (f64, f64, f64) {
    let of = |f: fn(&Apply) -> f64| median(&applies.iter().map(f).collect::<Vec<_>>());
    (of(Apply::total), of(|a| a.compile), of(|a| a.install))
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
    let sources: Vec<&(String, PathBuf)> = args.policies.iter().collect();
    let [first, _, _] = sources.as_slice() else {
        bail!("the reload bench needs three --policy of one size (seeds 1, 2, 3)");
    };
    let key = first.0.clone();

    let mut dp =
        Datapath::load(&LoadOptions::default()).context("loading the XDP program (needs root)")?;
    let mut generation = 0;

    // Whole policy: each install replaces an unrelated policy in its slot. The first two
    // fill the empty slots and are not timed.
    let mut full = Vec::new();
    for i in 0..runs + 2 {
        let (name, dir) = sources[i % 3];
        eprintln!("reload: whole policy {name} ({}/{})", i + 1, runs + 2);
        generation += 1;
        let a = apply(&mut dp, dir, generation)?;
        if i >= 2 {
            full.push(a);
        }
    }

    // One device: cumulative edits on a copy of the seed-1 policy. Two untimed applies first
    // put the unedited policy in both slots.
    let dir = std::env::temp_dir().join(format!("lazaret-bench-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&first.1, &dir)?;
    let mut one = Vec::new();
    let result = (|| -> Result<()> {
        for _ in 0..2 {
            generation += 1;
            apply(&mut dp, &dir, generation)?;
        }
        for n in 0..runs * 2 {
            eprintln!("reload: one device, edit {}/{}", n + 1, runs * 2);
            audit_device(&dir, n)?;
            generation += 1;
            one.push(apply(&mut dp, &dir, generation)?);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;

    let (full_ms, full_compile, full_install) = medians(&full);
    let (one_ms, one_compile, one_install) = medians(&one);
    let out = json!({
        "quick": args.quick,
        "runs": runs,
        "policy": key,
        "apply_full_ms": round3(full_ms),
        "apply_full_compile_ms": round3(full_compile),
        "apply_full_install_ms": round3(full_install),
        "apply_one_device_change_ms": round3(one_ms),
        "apply_one_device_compile_ms": round3(one_compile),
        "apply_one_device_install_ms": round3(one_install),
        "one_device_samples": one.len(),
        "settle_wait_ms": SETTLE_MS,
        "file_change_to_enforcing_full_ms": round3(full_ms + SETTLE_MS),
        "file_change_to_enforcing_one_device_ms": round3(one_ms + SETTLE_MS),
        "target_full_ms": TARGET_FULL_MS,
        "target_one_device_ms": TARGET_ONE_MS,
        "full_met": full_ms + SETTLE_MS < TARGET_FULL_MS,
        "one_device_met": one_ms + SETTLE_MS < TARGET_ONE_MS,
    });
    let md = format!(
        "Apply path on the real program, medians ({runs} whole-policy replacements, {} one-device \
         edits); compile = read + parse + validate + compile + map contents, install = bring the \
         inactive slot to the new contents + flip. The daemon's settle wait ({SETTLE_MS} ms) is \
         added for \"file change → enforcing\".\n\n\
         | change | compile | install | apply | file change → enforcing | target | |\n\
         |---|---:|---:|---:|---:|---|---|\n\
         | whole policy replaced, 10,000 devices / 100,000 rules | {full_compile:.0} ms | \
         {full_install:.0} ms | {full_ms:.0} ms | {:.0} ms | < {TARGET_FULL_MS} ms | {} |\n\
         | one device (mode → audit) | {one_compile:.0} ms | {one_install:.1} ms | {one_ms:.0} ms | \
         {:.0} ms | < {TARGET_ONE_MS} ms | {} |\n\n\
         Installs are incremental (only entries that differ from what the slot holds are \
         written), so a one-device install is a few map updates; a one-device change still \
         recompiles the whole policy.\n",
        one.len(),
        full_ms + SETTLE_MS,
        verdict(full_ms + SETTLE_MS < TARGET_FULL_MS),
        one_ms + SETTLE_MS,
        verdict(one_ms + SETTLE_MS < TARGET_ONE_MS),
    );
    args.write(&out, &md)
}
