//! The floors: what flow tracking alone costs on each path, timed next to the baseline in
//! the same runs, and the empty program (what BPF_PROG_TEST_RUN itself costs).
//!
//! The floor programs (`gateway-ebpf/src/floor.rs`) parse like the baseline (IPv6 with its
//! extension headers too), then find the packet's flow in an LRU hash keyed by the
//! normalized 5-tuple — lazaret's own key, value, capacity and clock — and refresh it or
//! insert it; the denial floor misses there, misses one more hash lookup (the policy's
//! stand-in) and drops. Each lazaret path is compared with the floor on its own frames:
//! - a repeated frame (established, IPv6, QinQ, a reply from upstream): the floor on that
//!   frame (a lookup hit and a refresh);
//! - denied: the denial floor on the denied frame;
//! - unknown device: the established floor (the target: an unknown device must
//!   cost no more than an established flow's floor);
//! - new flows: the floor on the same distinct 5-tuples, one call each, into a table kept
//!   with room (flows removed untimed) or filled first (every insertion evicts).
//!
//! Each path is also timed on its duties floor: the floor plus the per-packet work
//! lazaret's guarantees need on that path, in its leanest layout — on a confirmed flow
//! (`lazaret_floor_duties`), for an unknown source (`lazaret_floor_duties_unknown`), for a
//! device's refused flow (`lazaret_floor_duties_deny`), for its allowed new flow
//! (`lazaret_floor_duties_open`, on the same new flows, into a table with room or full). Its cost over the path's floor is
//! what no implementation of those guarantees can avoid; lazaret's cost over it is what
//! lazaret could still save.

use anyhow::{Context, Result};
use lazaret::dataplane::xdp::Datapath;
use lazaret_abi::MAX_FLOWS;

use crate::common::median;
use crate::count::{Counted, Interpreter};
use crate::flows::LO;
use crate::measure::{repeated, NewFlows, XDP_DROP, XDP_PASS};

/// Per-run samples of one program on one path, and the baseline's timed back to back
/// (and the duties floor's, on a path that has one).
pub(crate) struct Pair {
    pub floor_ns: Vec<f64>,
    pub baseline_ns: Vec<f64>,
    pub duties_ns: Vec<f64>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            floor_ns: Vec::new(),
            baseline_ns: Vec::new(),
            duties_ns: Vec::new(),
        }
    }

    /// The duties floor's median, on a path it was timed on.
    pub(crate) fn duties(&self) -> Option<f64> {
        (!self.duties_ns.is_empty()).then(|| median(&self.duties_ns))
    }

    pub(crate) fn floor(&self) -> f64 {
        median(&self.floor_ns)
    }

    pub(crate) fn baseline(&self) -> f64 {
        median(&self.baseline_ns)
    }

    /// Median of the per-run ratios (paired, like the main table's).
    pub(crate) fn ratio(&self) -> f64 {
        let r: Vec<f64> = self
            .floor_ns
            .iter()
            .zip(&self.baseline_ns)
            .map(|(f, b)| f / b)
            .collect();
        median(&r)
    }
}

/// What a lazaret path is compared with.
pub(crate) enum Spec<'a> {
    /// The floor on this frame, repeated.
    Repeat(&'a [u8]),
    /// The denial floor on this frame, repeated.
    Deny(&'a [u8]),
    /// The floor on these new flows, one call each; `full`: into a table filled first.
    NewFlows(&'a NewFlows, bool),
    /// Another path's floor (by key); this path's own frame, for its duties floor.
    Same(&'static str, &'a [u8]),
}

pub(crate) struct Floor {
    /// (lazaret path key, its floor); a `Same` path points at another's samples.
    pub paths: Vec<(&'static str, Option<Pair>, Option<&'static str>)>,
    /// The empty program on the established frame, repeated.
    pub empty: Pair,
    /// Sizes in bytes of the floor program: after the verifier, and JIT-compiled.
    pub sizes: (u32, u32),
    /// Instructions and kernel calls of the floor on each path's frame (see `count`).
    pub counts: Vec<(&'static str, Counted)>,
    /// The same of the duties floor, on the paths it was timed on.
    pub duty_counts: Vec<(&'static str, Counted)>,
}

impl Floor {
    /// The floor samples of lazaret path `key`.
    pub(crate) fn of(&self, key: &str) -> Option<&Pair> {
        let (_, pair, same) = self.paths.iter().find(|(k, ..)| *k == key)?;
        match (pair, same) {
            (_, Some(other)) => self.of(other),
            (Some(p), None) => Some(p),
            (None, None) => None,
        }
    }

    /// The duties floor's median on `key`'s own frames (not another path's floor).
    pub(crate) fn duties_of(&self, key: &str) -> Option<f64> {
        let (_, pair, _) = self.paths.iter().find(|(k, ..)| *k == key)?;
        pair.as_ref()?.duties()
    }

    /// The floor's counts for `key`'s path (following a path held to another's floor).
    pub(crate) fn count_of(&self, key: &str) -> Option<Counted> {
        if let Some((_, c)) = self.counts.iter().find(|(k, _)| *k == key) {
            return Some(*c);
        }
        let (.., same) = self.paths.iter().find(|(k, ..)| *k == key)?;
        self.count_of((*same)?)
    }
}

/// Counts a floor program on one frame; its verdict must be `want`.
fn count(dp: &mut Datapath, program: &str, frame: &[u8], want: u32) -> Result<Counted> {
    let interp = Interpreter::of(lazaret::dataplane::xdp::FLOOR, program, dp.program_mut()?)?;
    Ok(interp.checked(frame, LO, want, program)?.counted)
}

/// Times the floors of `specs` (lazaret path key, spec) and the empty program on
/// `established`, each next to the baseline, `runs` times after a warm-up.
pub(crate) fn measure(
    baseline: &mut Datapath,
    specs: &[(&'static str, Spec<'_>)],
    established: &[u8],
    reps: u32,
    runs: usize,
) -> Result<Floor> {
    let load = |what| format!("loading the {what} program (needs root)");
    let mut floor = Datapath::load_floor().with_context(|| load("floor"))?;
    let mut room = Datapath::load_floor().with_context(|| load("floor"))?;
    let mut deny = Datapath::load_floor_deny().with_context(|| load("denial floor"))?;
    let mut duties = Datapath::load_floor_duties().with_context(|| load("duties floor"))?;
    let mut duties_deny =
        Datapath::load_floor_duties_deny().with_context(|| load("denial duties floor"))?;
    let mut duties_unknown =
        Datapath::load_floor_duties_unknown().with_context(|| load("unknown duties floor"))?;
    let load_open =
        || Datapath::load_floor_duties_open().with_context(|| load("new-flow duties floor"));
    let (mut duties_open_room, mut duties_open_full) = (load_open()?, load_open()?);
    let mut empty = Datapath::load_empty().with_context(|| load("empty"))?;
    let sizes = floor.program_sizes()?;
    // The full-table floor is filled first; the repeated frames' flows go in with their
    // first repetition (one miss in a run).
    // (floor, baseline, duties floor): a generator per program, each opening the same flows.
    let mut gens: Vec<Option<(NewFlows, NewFlows, NewFlows)>> = specs
        .iter()
        .map(|(_, s)| match s {
            Spec::NewFlows(g, _) => Some(((*g).clone(), (*g).clone(), (*g).clone())),
            _ => None,
        })
        .collect();
    for ((_, s), g) in specs.iter().zip(&mut gens) {
        if let (Spec::NewFlows(_, true), Some((g_floor, _, g_duties))) = (s, g) {
            let fill = u64::from(MAX_FLOWS) * 11 / 10;
            eprintln!("datapath: floors: filling their flow tables with {fill} new flows");
            g_floor.run(&mut floor, fill, XDP_PASS, false)?;
            g_duties.run(&mut duties_open_full, fill, XDP_PASS, false)?;
        }
    }
    let mut pairs: Vec<Option<Pair>> = specs.iter().map(|_| Some(Pair::new())).collect();
    let mut empty_pair = Pair::new();
    for run in 0..=runs {
        let warm = run == 0;
        let r = if warm { (reps / 10).max(1) } else { reps };
        eprintln!(
            "datapath: floors, {}",
            if warm {
                "warm-up".to_string()
            } else {
                format!("run {run}/{runs}")
            }
        );
        for (i, (_, s)) in specs.iter().enumerate() {
            let d = match s {
                Spec::Repeat(frame) => repeated(&mut duties, frame, r, XDP_PASS)?,
                Spec::Deny(frame) => repeated(&mut duties_deny, frame, r, XDP_DROP)?,
                Spec::Same(_, frame) => repeated(&mut duties_unknown, frame, r, XDP_DROP)?,
                Spec::NewFlows(_, full) => {
                    let (.., g_duties) = gens[i].as_mut().context("new-flow generators")?;
                    let prog = if *full {
                        &mut duties_open_full
                    } else {
                        &mut duties_open_room
                    };
                    g_duties.run(prog, u64::from(r), XDP_PASS, !*full)?
                }
            };
            if let (Some(p), false) = (&mut pairs[i], warm) {
                p.duties_ns.push(d);
            }
            let (f, b) = match s {
                Spec::Repeat(frame) => (
                    repeated(&mut floor, frame, r, XDP_PASS)?,
                    repeated(baseline, frame, r, XDP_PASS)?,
                ),
                Spec::Deny(frame) => (
                    repeated(&mut deny, frame, r, XDP_DROP)?,
                    repeated(baseline, frame, r, XDP_PASS)?,
                ),
                Spec::NewFlows(_, full) => {
                    let (g_floor, g_base, _) = gens[i].as_mut().context("new-flow generators")?;
                    let prog = if *full { &mut floor } else { &mut room };
                    (
                        g_floor.run(prog, u64::from(r), XDP_PASS, !*full)?,
                        g_base.run(baseline, u64::from(r), XDP_PASS, false)?,
                    )
                }
                Spec::Same(..) => continue,
            };
            if let (Some(p), false) = (&mut pairs[i], warm) {
                p.floor_ns.push(f);
                p.baseline_ns.push(b);
            }
        }
        let e = (
            repeated(&mut empty, established, r, XDP_PASS)?,
            repeated(baseline, established, r, XDP_PASS)?,
        );
        if !warm {
            empty_pair.floor_ns.push(e.0);
            empty_pair.baseline_ns.push(e.1);
        }
    }
    let mut counts = Vec::new();
    let mut duty_counts = Vec::new();
    for (key, s) in specs {
        let c = match s {
            Spec::Repeat(frame) => {
                let d = count(&mut duties, "lazaret_floor_duties", frame, XDP_PASS)?;
                duty_counts.push((*key, d));
                count(&mut floor, "lazaret_floor", frame, XDP_PASS)?
            }
            Spec::Deny(frame) => {
                let d = count(
                    &mut duties_deny,
                    "lazaret_floor_duties_deny",
                    frame,
                    XDP_DROP,
                )?;
                duty_counts.push((*key, d));
                count(&mut deny, "lazaret_floor_deny", frame, XDP_DROP)?
            }
            Spec::NewFlows(g, _) => {
                let program = "lazaret_floor_duties_open";
                let d = count(&mut duties_open_room, program, &g.unopened(0), XDP_PASS)?;
                duty_counts.push((*key, d));
                count(&mut room, "lazaret_floor", &g.unopened(0), XDP_PASS)?
            }
            Spec::Same(_, frame) => {
                let program = "lazaret_floor_duties_unknown";
                let d = count(&mut duties_unknown, program, frame, XDP_DROP)?;
                duty_counts.push((*key, d));
                continue;
            }
        };
        counts.push((*key, c));
    }
    Ok(Floor {
        counts,
        duty_counts,
        paths: specs
            .iter()
            .zip(pairs)
            .map(|((key, s), p)| {
                let same = match s {
                    Spec::Same(other, _) => Some(*other),
                    _ => None,
                };
                (*key, p, same)
            })
            .collect(),
        empty: empty_pair,
        sizes,
    })
}
