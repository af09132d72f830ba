//! `cargo xtask bench reload`: how long a policy change takes to enforce, from the file
//! change to the new generation enforcing.
//!
//! Runs the daemon's reload path on the real XDP program (loaded, not attached; no
//! namespaces): the policy directory's watch (`PolicyWatch`: wait for the files to settle),
//! the reloader (`Reloader`: full compile or device patch), map contents for the next slot,
//! and the generation switch (bring the inactive slot to the new contents, flip). The clock
//! starts just before the first byte is written and stops when the datapath reports the
//! new generation active. Two changes, on a working copy of the 10,000-device /
//! 100,000-rule policy:
//!
//! - **whole policy**: every file overwritten by an unrelated policy of the same size
//!   (three generated policies, seeds 1–3, in rotation), as a checkout would;
//! - **one device**: a sequence of edits, each switching one more device to audit mode in
//!   its 1,000-device file — what the daemon sees on a stream of small commits.
//!
//! Settle (watch), compile (reloader + map contents) and install are reported separately.
//! Targets: < 2 s for the whole policy, < 50 ms for one device.

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use common::{median, round3, verdict};
use lazaret::{
    daemon::watch::PolicyWatch,
    dataplane::xdp::{Datapath, LoadOptions},
    policy::incremental::{How, Reloader},
};
use serde_json::json;

/// The daemon's allocator (gateway/src/main.rs): the bench times the daemon's path.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 5;
const QUICK_RUNS: usize = 2;
const TARGET_FULL_MS: f64 = 2000.0;
const TARGET_ONE_MS: f64 = 50.0;
/// Between the whole-policy change and the first one-device edit.
const EDIT_PAUSE: Duration = Duration::from_secs(1);
/// Bounds one trial: a change the watch never reports fails the bench instead of hanging.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);

/// One change's times, in ms from just before the write.
#[derive(Clone, Copy)]
struct Trial {
    /// Until the watch reported the directory settled (includes the writes).
    settle: f64,
    compile: f64,
    install: f64,
    patched: bool,
}

impl Trial {
    fn total(&self) -> f64 {
        self.settle + self.compile + self.install
    }
}

struct Rig {
    dp: Datapath,
    watch: PolicyWatch,
    reloader: Reloader,
    generation: u64,
    rt: tokio::runtime::Runtime,
}

impl Rig {
    /// Makes `change` in the watched directory and follows it to enforcement.
    fn trial(&mut self, change: impl FnOnce() -> Result<()>) -> Result<Trial> {
        let t = Instant::now();
        change()?;
        let watch = &mut self.watch;
        let settled = self.rt.block_on(async {
            tokio::time::timeout(TRIAL_LIMIT, async {
                watch.changed().await && watch.settle().await
            })
            .await
        });
        if !matches!(settled, Ok(true)) {
            bail!("the policy watch did not report the change within {TRIAL_LIMIT:?}");
        }
        let settle = ms(t);
        let t = Instant::now();
        let (compiled, how) = self
            .reloader
            .load()
            .map_err(|e| anyhow::anyhow!("{}", e.render()))?;
        let ifindexes: BTreeMap<String, u32> = compiled
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), 1))
            .collect();
        self.generation += 1;
        let slot = self.dp.next_slot()?;
        let contents = compiled.map_contents(slot, self.generation, &ifindexes)?;
        let compile = ms(t);
        let t = Instant::now();
        self.dp.install(&contents)?;
        let install = ms(t);
        // As the daemon does after every install (what it costs shows in the next
        // install, which waits for it if it is still running).
        let generation = self.generation;
        self.dp
            .sync_retired(move |slot| compiled.map_contents(slot, generation, &ifindexes).ok())?;
        if self.dp.active_site()?.generation != self.generation {
            bail!(
                "generation {} is not the one enforcing after install",
                self.generation
            );
        }
        Ok(Trial {
            settle,
            compile,
            install,
            patched: matches!(how, How::Patched { .. }),
        })
    }
}

fn worst(trials: &[Trial]) -> f64 {
    trials.iter().map(Trial::total).fold(0.0, f64::max)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The edit switching device `dev-NNNNN` of a generated policy to audit mode: the file
/// that holds it and its new text (prepared outside the timed part).
fn audit_edit(dir: &Path, n: usize) -> Result<(PathBuf, String)> {
    let id = format!("id = \"dev-{n:05}\"\n");
    for e in std::fs::read_dir(dir.join("devices"))? {
        let path = e?.path();
        let text = std::fs::read_to_string(&path)?;
        if text.contains(&id) {
            let changed = text.replacen(&id, &format!("{id}mode = \"audit\"\n"), 1);
            return Ok((path, changed));
        }
    }
    bail!("no device dev-{n:05} in {}", dir.display())
}

/// Overwrites the policy in `dir` with the one in `from` as `git checkout` does: the files
/// written in place while `.git/index.lock` exists.
fn checkout(from: &Path, dir: &Path) -> Result<()> {
    let lock = dir.join(".git/index.lock");
    std::fs::create_dir_all(dir.join(".git"))?;
    std::fs::write(&lock, b"")?;
    let copied = lazaret_tests::copy_tree(from, dir);
    std::fs::remove_file(&lock)?;
    Ok(copied?)
}

fn medians(trials: &[Trial]) -> [f64; 4] {
    let of = |f: fn(&Trial) -> f64| median(&trials.iter().map(f).collect::<Vec<_>>());
    [
        of(Trial::total),
        of(|t| t.settle),
        of(|t| t.compile),
        of(|t| t.install),
    ]
}

fn main() -> Result<()> {
    let args = common::args()?;
    let runs = if args.quick { QUICK_RUNS } else { RUNS };
    let sources: Vec<&(String, PathBuf)> = args.policies.iter().collect();
    let [first, _, _] = sources.as_slice() else {
        bail!("the reload bench needs three --policy of one size (seeds 1, 2, 3)");
    };
    let key = first.0.clone();

    let dir = std::env::temp_dir().join(format!("lazaret-bench-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    lazaret_tests::copy_tree(&first.1, &dir)?;
    let result = measure(&dir, &sources, runs);
    let _ = std::fs::remove_dir_all(&dir);
    let (full, one) = result?;

    let [full_ms, full_settle, full_compile, full_install] = medians(&full);
    let [one_ms, one_settle, one_compile, one_install] = medians(&one);
    let patched = one.iter().filter(|t| t.patched).count();
    let out = json!({
        "quick": args.quick,
        "runs": runs,
        "policy": key,
        "file_change_to_enforcing_full_ms": round3(full_ms),
        "full_settle_ms": round3(full_settle),
        "full_compile_ms": round3(full_compile),
        "full_install_ms": round3(full_install),
        "file_change_to_enforcing_one_device_ms": round3(one_ms),
        "one_device_settle_ms": round3(one_settle),
        "one_device_compile_ms": round3(one_compile),
        "one_device_install_ms": round3(one_install),
        "one_device_samples": one.len(),
        "full_samples_ms": full.iter().map(|t| round3(t.total())).collect::<Vec<_>>(),
        "one_device_samples_ms": one.iter().map(|t| round3(t.total())).collect::<Vec<_>>(),
        "one_device_patched": patched,
        "target_full_ms": TARGET_FULL_MS,
        "target_one_device_ms": TARGET_ONE_MS,
        "full_met": full_ms < TARGET_FULL_MS,
        "one_device_met": one_ms < TARGET_ONE_MS,
    });
    let md = format!(
        "From just before the first byte is written to the new generation enforcing, \
         medians ({} whole-policy replacements, {} one-device edits), through the daemon's \
         own path: settle = the policy watch waiting for the files to settle (includes the \
         writes), compile = read + parse + validate + compile (or the device patch) + map \
         contents, install = bring the inactive slot to the new contents + flip.\n\n\
         | change | settle | compile | install | file change → enforcing | target | |\n\
         |---|---:|---:|---:|---:|---|---|\n\
         | whole policy replaced, 10,000 devices / 100,000 rules | {full_settle:.0} ms | \
         {full_compile:.0} ms | {full_install:.0} ms | **{full_ms:.0} ms** | < {TARGET_FULL_MS} ms | {} |\n\
         | one device (mode → audit) in a 1,000-device file | {one_settle:.1} ms | \
         {one_compile:.1} ms | {one_install:.1} ms | **{one_ms:.1} ms** | < {TARGET_ONE_MS} ms | {} |\n\n\
         Slowest: {:.0} ms (whole policy), {:.1} ms (one device). {patched} of {} one-device \
         edits were patched into the previous compile (the rest compiled in full). The patch \
         parses only the changed entries of the changed file, and the install writes only the \
         device maps' differences. After each install the retired slot is brought up to the \
         new generation in the background (as the daemon does); the edits start {} s after a \
         whole-policy change, and one arriving sooner waits for that sync.\n",
        full.len(),
        one.len(),
        verdict(full_ms < TARGET_FULL_MS),
        verdict(one_ms < TARGET_ONE_MS),
        worst(&full),
        worst(&one),
        one.len(),
        EDIT_PAUSE.as_secs(),
    );
    args.write(&out, &md)
}

fn measure(
    dir: &Path,
    sources: &[&(String, PathBuf)],
    runs: usize,
) -> Result<(Vec<Trial>, Vec<Trial>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let dp =
        Datapath::load(&LoadOptions::default()).context("loading the XDP program (needs root)")?;
    let watch = rt.block_on(async { PolicyWatch::new(dir) })?;
    let mut rig = Rig {
        dp,
        watch,
        reloader: Reloader::new(dir),
        generation: 0,
        rt,
    };

    // Whole policy: each change overwrites an unrelated policy. The first two fill the
    // empty slots and are not counted.
    let mut full = Vec::new();
    for i in 0..runs + 2 {
        let (name, from) = sources[(i + 1) % 3];
        eprintln!("reload: whole policy {name} ({}/{})", i + 1, runs + 2);
        let t = rig.trial(|| checkout(from, dir))?;
        if i >= 2 {
            full.push(t);
        }
    }
    // Back to seed 1 for the edits, then one-device changes, starting a moment later as
    // commits do: meanwhile the daemon brings the retired slot up to date in the
    // background. (An edit arriving sooner waits for that, up to a whole-policy install.)
    rig.trial(|| checkout(&sources[0].1, dir))?;
    std::thread::sleep(EDIT_PAUSE);
    let mut one = Vec::new();
    for n in 0..runs * 2 {
        eprintln!("reload: one device, edit {}/{}", n + 1, runs * 2);
        let (path, text) = audit_edit(dir, n)?;
        one.push(rig.trial(|| Ok(std::fs::write(&path, &text)?))?);
    }
    Ok((full, one))
}
