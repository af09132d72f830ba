//! The floor: what flow tracking alone costs, timed next to the baseline in the same runs.
//!
//! The floor program (`gateway-ebpf/src/floor.rs`) parses like the baseline, then finds the
//! packet's flow in an LRU hash keyed by the normalized 5-tuple — lazaret's own key, value
//! and capacity — and refreshes its timestamp, or inserts it: the least any program that
//! keeps state the way the datapath issue asks can do per packet. Two paths: an established
//! flow (one frame, repeated: every run a lookup hit and a refresh) and a new flow into a
//! full table (distinct 5-tuples, one call each, the table filled first: every run a miss
//! and an insertion that evicts). Its ratio to the baseline is a lower bound for lazaret's
//! on the same path.

use anyhow::{Context, Result};
use lazaret::dataplane::xdp::Datapath;
use lazaret_abi::MAX_FLOWS;

use crate::common::median;
use crate::measure::{repeated, NewFlows, XDP_PASS};

/// Per-run samples of one path, floor and baseline timed back to back.
pub(crate) struct Pair {
    pub floor_ns: Vec<f64>,
    pub baseline_ns: Vec<f64>,
}

impl Pair {
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

pub(crate) struct Floor {
    pub established: Pair,
    pub new_flow_full: Pair,
}

/// Times the floor and the baseline on `established` (a frame of an established flow) and
/// on new flows from `new_flows` into a full table.
pub(crate) fn measure(
    baseline: &mut Datapath,
    established: &[u8],
    new_flows: &NewFlows,
    reps: u32,
    runs: usize,
) -> Result<Floor> {
    let mut floor = Datapath::load_floor().context("loading the floor program (needs root)")?;
    // The established frame's flow goes in with its first run.
    anyhow::ensure!(
        floor.test_run(established)? == XDP_PASS,
        "floor: established frame"
    );
    let (mut g_floor, mut g_base) = (new_flows.clone(), new_flows.clone());
    let fill = u64::from(MAX_FLOWS) * 11 / 10;
    eprintln!("datapath: floor: filling its flow table with {fill} new flows");
    g_floor.run(&mut floor, fill, XDP_PASS, false)?;
    let mut est = Pair {
        floor_ns: Vec::new(),
        baseline_ns: Vec::new(),
    };
    let mut new = Pair {
        floor_ns: Vec::new(),
        baseline_ns: Vec::new(),
    };
    for run in 0..=runs {
        let warm = run == 0;
        let r = if warm { (reps / 10).max(1) } else { reps };
        eprintln!(
            "datapath: floor, {}",
            if warm {
                "warm-up".to_string()
            } else {
                format!("run {run}/{runs}")
            }
        );
        let e = (
            repeated(&mut floor, established, r, XDP_PASS)?,
            repeated(baseline, established, r, XDP_PASS)?,
        );
        let n = (
            g_floor.run(&mut floor, u64::from(r), XDP_PASS, false)?,
            g_base.run(baseline, u64::from(r), XDP_PASS, false)?,
        );
        if !warm {
            est.floor_ns.push(e.0);
            est.baseline_ns.push(e.1);
            new.floor_ns.push(n.0);
            new.baseline_ns.push(n.1);
        }
    }
    Ok(Floor {
        established: est,
        new_flow_full: new,
    })
}
