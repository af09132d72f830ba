//! The daemon killed with `kill -9` at random points of a reload — before the change is
//! noticed, while it settles and compiles, around and after the generation switch — then
//! started again, many times. After every restart: the generation in the ready file is the
//! one the pinned datapath enforces and never goes backwards, the established session
//! survived, the port only the new policy allows is open exactly when the policy on disk
//! allows it, and the never-allowed port is closed.
//!
//! Bounded: at most `ROUNDS` rounds and `BUDGET` seconds. The delays come from a seeded
//! generator; the seed is printed so a failure can be replayed (`LAZARET_KILL_SEED`).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use lazaret::dataplane::xdp::Datapath;
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Lab},
    reliability::record_figure,
};

const ROUNDS: u32 = 12;
const BUDGET: Duration = Duration::from_secs(120);
/// Kill delays are drawn from 0..MAX_DELAY_MS: the watcher settles 15 ms after the write
/// and a reload of this policy takes a few ms, so this spans before, during and after the
/// switch.
const MAX_DELAY_MS: u64 = 300;

fn policy(mac: [u8; 6], with_extra: bool) -> String {
    let mut rules = workflow("hl7", "tcp", 2575);
    let mut flows = vec!["hl7"];
    if with_extra {
        rules.push_str(&workflow("dicom-echo", "tcp", 11112));
        flows.push("dicom-echo");
    }
    monitor_policy(mac, &flows, &rules)
}

/// xorshift64*: enough randomness for kill timing without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn kill_9_at_random_points_of_a_reload_never_loses_enforcement() -> Result<()> {
    let mut lab = Lab::new(|mac| policy(mac, false))?;
    let mac = lab.net.device_mac;
    lab.echo_servers(&[2575, 11112, 104])?;
    lab.start()?;
    let mut session = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut session));
    let pins = lab
        .bpffs
        .path
        .join(format!("v{}", lazaret_abi::ABI_VERSION));
    let seed = std::env::var("LAZARET_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("LAZARET_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut last_generation = lab.ready_generation().unwrap_or(0);
    let mut with_extra = false;
    let mut rounds = 0;
    let mut delays = Vec::new();
    // Where the kill landed: before the new generation was installed, or after.
    let (mut before_switch, mut after_switch) = (0u32, 0u32);
    while rounds < ROUNDS && started.elapsed() < BUDGET {
        rounds += 1;
        with_extra = !with_extra;
        lab.write_policy(&policy(mac, with_extra))?;
        // Stratified: rounds cycle through before the watcher settles, around the compile
        // and switch, and after it, each at a random point of its window.
        let (lo, hi) = [(0, 14), (14, 40), (40, MAX_DELAY_MS)][(rounds % 3) as usize];
        let delay = lo + rng.next() % (hi - lo);
        delays.push(delay);
        std::thread::sleep(Duration::from_millis(delay));
        lab.kill9();

        // Down: the pinned generation enforces on its own.
        let pinned = Datapath::pinned_generation(&pins);
        if pinned.is_some_and(|p| p > last_generation) {
            after_switch += 1;
        } else {
            before_switch += 1;
        }
        if !round_trip(&mut session) {
            bail!("round {rounds} (kill after {delay} ms): session broke while lazaret was down");
        }
        if lab.connect(104, Duration::from_millis(300)).is_ok() {
            bail!("round {rounds}: the denied port opened while lazaret was down");
        }

        lab.start()?;
        let g = lab.ready_generation().unwrap_or(0);
        let pinned_now = Datapath::pinned_generation(&pins);
        if pinned_now != Some(g) {
            bail!(
                "round {rounds}: ready file says {g}, the pinned datapath enforces {pinned_now:?}"
            );
        }
        if g < last_generation || pinned.is_some_and(|p| g <= p) {
            bail!(
                "round {rounds}: generation went from {last_generation} (pinned {pinned:?}) to {g}"
            );
        }
        last_generation = g;
        if !round_trip(&mut session) {
            bail!("round {rounds} (kill after {delay} ms): session broke across the restart");
        }
        // The restart loaded the policy on disk: the extra port follows it.
        let extra_open = lab
            .connect(11112, Duration::from_millis(500))
            .map(|mut s| round_trip(&mut s))
            .unwrap_or(false);
        if extra_open != with_extra {
            bail!("round {rounds}: port 11112 open={extra_open}, policy on disk allows it={with_extra}");
        }
        if lab.connect(104, Duration::from_millis(300)).is_ok() {
            bail!("round {rounds}: the denied port opened after the restart");
        }
    }
    assert!(rounds >= 5, "only {rounds} rounds within the budget");
    delays.sort_unstable();
    record_figure(
        "fault_kill_reload::kill_9_at_random_points_of_a_reload_never_loses_enforcement",
        &format!(
            "{rounds} kill -9 during reloads (delays {}–{} ms; {before_switch} before the switch, {after_switch} after), 0 session breaks, 0 denied packets passed",
            delays.first().copied().unwrap_or(0),
            delays.last().copied().unwrap_or(0)
        ),
    );
    Ok(())
}

/// The kill above, landed on purpose between an install's two halves: a run that wrote its
/// next slot (a higher generation) and died before switching to it. The next run enforces
/// what was enforcing, and numbers its first install above the generation written but
/// never enforced: a number names one policy only.
#[test]
fn a_generation_written_but_never_switched_to_is_not_numbered_again() -> Result<()> {
    use aya::maps::{Array, Map, MapData};
    use lazaret_abi::{SiteConfig, MAP_GEN, MAP_SITE};

    let mut lab = Lab::new(|mac| policy(mac, false))?;
    lab.start()?;
    let first = lab.ready_generation().unwrap_or(0);
    lab.kill9();
    let pins = lab
        .bpffs
        .path
        .join(format!("v{}", lazaret_abi::ABI_VERSION));
    let gen: Array<MapData, u32> =
        Array::try_from(Map::Array(MapData::from_pin(pins.join(MAP_GEN))?))?;
    let inactive = 1 - gen.get(&0, 0)?;
    let mut site: Array<MapData, SiteConfig> =
        Array::try_from(Map::Array(MapData::from_pin(pins.join(MAP_SITE))?))?;
    let mut written = site.get(&inactive, 0)?;
    written.generation = first + 5;
    site.set(inactive, written, 0)?;
    if Datapath::pinned_generation(&pins) != Some(first + 5) {
        bail!("the inactive slot does not hold the written generation");
    }
    lab.start()?;
    let g = lab.ready_generation().unwrap_or(0);
    if g <= first + 5 {
        bail!(
            "enforcing {first}, {} written but never switched to: the restart numbered its \
             install {g}",
            first + 5
        );
    }
    record_figure(
        "fault_kill_reload::a_generation_written_but_never_switched_to_is_not_numbered_again",
        &format!(
            "enforcing {first}, {} written and not switched to: next install {g}",
            first + 5
        ),
    );
    Ok(())
}
