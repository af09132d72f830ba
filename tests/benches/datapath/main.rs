//! `cargo xtask bench datapath`: ns/packet of lazaret's XDP program through
//! BPF_PROG_TEST_RUN on eight paths (allowed new flow into a table with room and a full
//! one, established flow, denied, unknown device, IPv6 with two extension headers,
//! double-tagged VLAN, a reply from upstream on an established flow), with 10,000 devices and
//! 1, 1,000 and 100,000 rules loaded, next to the parse-only baseline program on the same
//! frames in the same run. Targets: cost at 100,000 rules ≤ 1.15 × cost at 1 rule, and
//! every path ≤ 2.5 × the baseline.
//!
//! All programs are loaded side by side; each run measures every path on every program in
//! turn (the order rotating from run to run), so the machine's noise falls on all of them
//! alike. Figures are medians over the runs. How the new-flow path is timed: see METHOD.
//!
//! Each path's executed BPF instructions and kernel calls are counted too (`count`), for
//! lazaret and its floor, and checked against `reference.json`. With
//! `LAZARET_COUNT_PROFILE=DIR`, each path's executions per instruction are written to
//! `DIR/<path>.tsv` (`count<TAB>function<TAB>byte offset in its section`): joined with
//! `llvm-objdump -d -l` of the object, they say which source lines the instructions are.
//! Beside each, `DIR/<path>.calls` lists its kernel calls in order (the helper, the map).
//! With `--count` (`cargo xtask bench datapath --count`) the binary stops after the counts
//! and their check: seconds, for iterating on the packet path.

#[path = "../common/mod.rs"]
mod common;
mod count;
mod floor;
mod flows;
mod measure;
mod peer;
mod report;

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use lazaret::dataplane::xdp::{Datapath, LoadOptions};
use lazaret::policy::{self, MapIndex};
use lazaret_abi::*;
use lazaret_tests::frames::{Ext, ETH_8021AD, ETH_8021Q, TCP_ACK, TCP_SYN};

use flows::{Flow, Policy, Shape, LO, PROBE_SPORT};
use measure::{action_for, check_counted, expect_one_on, NewFlows, XDP_PASS};

const DEVICES: usize = 10_000;
const RULE_COUNTS: [usize; 3] = [1, 1_000, 100_000];
const REPS: u32 = 1_000_000;
const RUNS: usize = 7;
const QUICK_REPS: u32 = 100_000;
const QUICK_RUNS: usize = 3;
/// Devices of one class that open the new flows (each with 58,976 source ports).
const NEW_FLOW_DEVICES: usize = 64;
/// Payload of established-flow packets.
const DATA: &[u8] = &[0x5a; 32];

/// How a path's frames are timed.
enum Timed {
    /// One frame, `reps` repetitions in one BPF_PROG_TEST_RUN call.
    Repeat(Vec<u8>),
    /// Distinct new flows, one BPF_PROG_TEST_RUN call each; one generator per program.
    NewFlows(Vec<NewFlows>, Table),
}

/// The flow table's state while new flows are timed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    /// Timed flows are removed every 65,536 (untimed): no insertion evicts.
    Room,
    /// Filled first (measured after every other path): each insertion evicts an old flow.
    Full,
}

pub struct Path {
    pub key: &'static str,
    pub title: &'static str,
    pub frame: String,
    pub flow: String,
    pub reason: Reason,
    /// Frames that put the flow in its state (side, frame, counted reason), run on every
    /// lazaret program before timing; the last one is the check of the timed path itself.
    setup: Vec<(u8, Vec<u8>, Reason)>,
    timed: Timed,
    /// The outer VLAN of the device port the path's device frames arrive on (a QinQ port),
    /// or 0.
    outer_vlan: u16,
    /// The side the timed frame arrives on (`SIDE_*`).
    side: u8,
}

impl Path {
    /// The port the path's frames arrive on: its side, and a QinQ path's outer VLAN.
    fn port(&self) -> IfaceConfig {
        IfaceConfig {
            outer_vlan: self.outer_vlan,
            ..IfaceConfig::new(self.side)
        }
    }
}

/// The programs: index 0 is the baseline, then one per rule count.
struct Programs {
    dps: Vec<Datapath>,
    policies: Vec<Policy>,
}

fn main() -> Result<()> {
    let args = common::args()?;
    let (reps, runs) = if args.quick {
        (QUICK_REPS, QUICK_RUNS)
    } else {
        (REPS, RUNS)
    };
    let mut progs = load(&args)?;
    let mut paths = paths(&progs.policies, progs.dps.len())?;
    for p in &paths {
        eprintln!("datapath: {:<22} {}", p.key, p.flow);
    }
    setup(&mut progs, &paths)?;
    if let Some(key) = &args.profile {
        return profile(&mut progs, &mut paths, key);
    }
    let counts = count_all(&mut progs, &paths)?;
    if args.count {
        let (xlated, _) = progs
            .dps
            .last_mut()
            .context("lazaret's programs")?
            .program_sizes()?;
        check_size(xlated)?;
        return check_counts(&paths, &counts);
    }
    let samples = measure_all(&mut progs, &mut paths, reps, runs)?;
    let floor = measure_floor(&mut progs, &paths, reps, runs)?;
    let peer = measure_peer(&paths, reps, runs)?;
    let sizes = progs
        .dps
        .last_mut()
        .context("lazaret's programs")?
        .program_sizes()?;
    let results = report::Results {
        quick: args.quick,
        devices: DEVICES,
        rule_counts: RULE_COUNTS.to_vec(),
        reps,
        runs,
        paths: &paths,
        samples,
        floor,
        sizes,
        counts: &counts,
        peer,
    };
    let (json, md) = results.render();
    print!("{md}");
    args.write(&json, &md)?;
    check_size(sizes.0)?;
    check_counts(&paths, &counts)
}

/// Each path's executed instructions and kernel calls on the program with the most rules
/// (see `count`), in the state `setup` left; the interpreter's verdict must be the
/// kernel's. A new-flow path is counted on a flow no frame has opened yet.
fn count_all(progs: &mut Programs, paths: &[Path]) -> Result<Vec<count::Counted>> {
    let dp = progs.dps.last_mut().context("lazaret's programs")?;
    let interp = count::Interpreter::of(
        lazaret::dataplane::xdp::PROGRAM,
        lazaret_abi::PROGRAM_NAME,
        dp.program_mut()?,
    )?;
    let mut out = Vec::new();
    for (nth, p) in (0u16..).zip(paths) {
        let frame = match &p.timed {
            Timed::Repeat(frame) => frame.clone(),
            Timed::NewFlows(gens, _) => gens.last().context("new-flow generator")?.unopened(nth),
        };
        dp.set_interface_config(LO, p.port())?;
        // Both runs read the path's port config, reset after them. The count comes first:
        // the kernel's run changes state (an event's token bucket, an unknown device's
        // record) that the count would otherwise see.
        let profiled = interp.run(&frame, LO);
        let action = dp.test_run(&frame);
        dp.set_interface(LO, SIDE_DEVICES)?;
        let profiled = count::agrees(profiled?, action?, p.key)?;
        if let Some(dir) = std::env::var_os("LAZARET_COUNT_PROFILE") {
            let file = std::path::Path::new(&dir).join(format!("{}.tsv", p.key));
            std::fs::write(&file, interp.profile(&profiled))
                .with_context(|| format!("writing {}", file.display()))?;
            let file = file.with_extension("calls");
            std::fs::write(&file, profiled.calls.join("\n") + "\n")
                .with_context(|| format!("writing {}", file.display()))?;
        }
        let counted = profiled.counted;
        eprintln!(
            "datapath: {:<22} {:>5} instructions, {} kernel calls",
            p.key, counted.instructions, counted.kernel_calls
        );
        out.push(counted);
    }
    Ok(out)
}

/// Fails when a path executes more than 10 % more instructions than `reference.json`
/// records for it: counts do not move with machine noise, so this catches what timing
/// cannot. A deliberate growth updates the reference in the same commit.
fn check_counts(paths: &[Path], counts: &[count::Counted]) -> Result<()> {
    let reference: serde_json::Value = serde_json::from_str(SIZE_REFERENCE)?;
    let mut grew = Vec::new();
    for (p, c) in paths.iter().zip(counts) {
        let want = reference["instructions"][p.key]
            .as_u64()
            .with_context(|| format!("reference.json: instructions.{}", p.key))?;
        if c.instructions as f64 > want as f64 * SIZE_GROWTH_MAX {
            grew.push(format!("{} {want} → {}", p.key, c.instructions));
        }
    }
    ensure!(
        grew.is_empty(),
        "paths execute more than {:.0} % more instructions than tests/benches/datapath/\
         reference.json records: {}. If the growth is deliberate, update the reference in the \
         same commit",
        (SIZE_GROWTH_MAX - 1.0) * 100.0,
        grew.join(", ")
    );
    Ok(())
}

/// The program's size after the verifier, committed when a change to the packet path was
/// last accepted (`reference.json` beside this file). Timing cannot see a regression of a
/// few instructions through this machine's noise; a count can.
const SIZE_REFERENCE: &str = include_str!("reference.json");

/// How much the program may grow over the reference before the bench fails.
const SIZE_GROWTH_MAX: f64 = 1.10;

/// Fails when the program's xlated instruction count grew more than 10 % over the
/// reference: a hot-path regression (a byte-loop `memset` back, say) shows here first.
/// A deliberate growth updates `reference.json` in the same commit.
fn check_size(xlated_bytes: u32) -> Result<()> {
    let reference: serde_json::Value = serde_json::from_str(SIZE_REFERENCE)?;
    let want = reference["xlated_instructions"]
        .as_u64()
        .context("reference.json: xlated_instructions")?;
    let have = u64::from(xlated_bytes / 8);
    eprintln!("datapath: program size {have} instructions after the verifier (reference {want})");
    ensure!(
        have as f64 <= want as f64 * SIZE_GROWTH_MAX,
        "the XDP program grew from {want} to {have} instructions after the verifier (more than \
         {:.0} %): a hot-path regression? If the growth is deliberate, update \
         tests/benches/datapath/reference.json in the same commit",
        (SIZE_GROWTH_MAX - 1.0) * 100.0
    );
    Ok(())
}

/// Compiles each policy, loads a program per policy and installs it, and the baseline.
fn load(args: &common::Args) -> Result<Programs> {
    let mut dps = vec![Datapath::load_baseline().context("loading the baseline (needs root)")?];
    let mut policies = Vec::new();
    for rules in RULE_COUNTS {
        let dir = args.policy(&format!("{DEVICES}x{rules}"))?;
        eprintln!("datapath: compiling and installing {}", dir.display());
        let (_, compiled) = policy::load_and_compile(dir)
            .map_err(|e| anyhow::anyhow!("{} does not compile:\n{}", dir.display(), e.render()))?;
        ensure!(
            compiled.devices.len() == DEVICES,
            "{} has {} devices, expected {DEVICES}",
            dir.display(),
            compiled.devices.len()
        );
        let mut dp =
            Datapath::load(&LoadOptions::default()).context("loading lazaret's XDP program")?;
        // Every interface of the site is the test run's loopback.
        let ifindexes: BTreeMap<String, u32> = compiled
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), LO))
            .collect();
        let slot = dp.next_slot()?;
        let contents = compiled.map_contents(slot, 1, &ifindexes)?;
        dp.install(&contents)?;
        let index = MapIndex::new(&contents);
        dps.push(dp);
        policies.push(Policy {
            rules,
            compiled,
            index,
        });
    }
    Ok(Programs { dps, policies })
}

/// The frames that open a flow of `flow` with source port `sport` and bring it to the
/// established state, then the packet that is timed (from the device, on the flow).
fn established(flow: &Flow, shape: &Shape, sport: u16) -> Vec<(u8, Vec<u8>, Reason)> {
    if flow.proto == PROTO_TCP {
        vec![
            (
                SIDE_DEVICES,
                flow.device_frame(shape, sport, TCP_SYN, &[]),
                Reason::AllowRule,
            ),
            (
                SIDE_UPSTREAM,
                flow.peer_frame(shape, sport, TCP_SYN | TCP_ACK, &[]),
                Reason::AllowFlow,
            ),
            (
                SIDE_DEVICES,
                flow.device_frame(shape, sport, TCP_ACK, DATA),
                Reason::AllowFlow,
            ),
        ]
    } else {
        vec![
            (
                SIDE_DEVICES,
                flow.device_frame(shape, sport, 0, DATA),
                Reason::AllowRule,
            ),
            (
                SIDE_UPSTREAM,
                flow.peer_frame(shape, sport, 0, DATA),
                Reason::AllowFlow,
            ),
            (
                SIDE_DEVICES,
                flow.device_frame(shape, sport, 0, DATA),
                Reason::AllowFlow,
            ),
        ]
    }
}

fn last_frame(setup: &[(u8, Vec<u8>, Reason)]) -> Result<Vec<u8>> {
    Ok(setup.last().context("a path without frames")?.1.clone())
}

/// The paths, with flows chosen from the policies (see flows.rs).
fn paths(policies: &[Policy], programs: usize) -> Result<Vec<Path>> {
    let v4 = flows::allowed(policies, false)?;
    let v6 = flows::allowed(policies, true)?;
    let pool = flows::pool(policies, &v4, NEW_FLOW_DEVICES)?;
    let denied = flows::denied(policies, &v4)?;
    let unknown = flows::unknown(policies, &v4)?;
    let tag = Shape::tagged(v4.vlan);
    let tag6 = Shape {
        exts: vec![Ext::HopByHop, Ext::DestOpts],
        ..Shape::tagged(v6.vlan)
    };
    let qinq = Shape {
        tags: vec![(ETH_8021AD, 300), (ETH_8021Q, v4.vlan)],
        exts: Vec::new(),
    };
    let syn = if v4.proto == PROTO_TCP { TCP_SYN } else { 0 };
    let probe = |sport| {
        (
            SIDE_DEVICES,
            v4.device_frame(&tag, sport, syn, &[]),
            Reason::AllowRule,
        )
    };
    let new_flows = NewFlows::new(&pool, &tag, syn)?;
    // A 5-tuple must not come back while its flow could still be in the (LRU) flow table.
    ensure!(
        new_flows.cycle() >= 4 * u64::from(MAX_FLOWS),
        "too few distinct new flows ({} devices × source ports) for a flow table of {MAX_FLOWS}",
        pool.len()
    );
    let l4 = |f: &Flow, what: &str| {
        format!(
            "{} {what}",
            if f.proto == PROTO_TCP { "TCP" } else { "UDP" }
        )
    };
    let est = established(&v4, &tag, 61_000);
    let est6 = established(&v6, &tag6, 61_001);
    let est_qinq = established(&v4, &qinq, 61_002);
    // The same session, timed on the server's data back to the device.
    let mut est_reply = established(&v4, &tag, 61_003);
    let reply_flags = if v4.proto == PROTO_TCP { TCP_ACK } else { 0 };
    est_reply.push((
        SIDE_UPSTREAM,
        v4.peer_frame(&tag, 61_003, reply_flags, DATA),
        Reason::AllowFlow,
    ));
    let denied_syn = denied.device_frame(&tag, PROBE_SPORT, TCP_SYN, &[]);
    let unknown_syn = unknown.device_frame(&tag, PROBE_SPORT, syn, &[]);
    Ok(vec![
        Path {
            key: "allowed_new_flow",
            title: "allowed new flow",
            frame: format!(
                "IPv4 {}, 802.1Q; {} devices × distinct source ports; flow table with room",
                l4(&v4, "initiating"),
                pool.len()
            ),
            flow: v4.describe(),
            reason: Reason::AllowRule,
            setup: vec![probe(PROBE_SPORT)],
            timed: Timed::NewFlows(vec![new_flows.clone(); programs], Table::Room),
            outer_vlan: 0,
            side: SIDE_DEVICES,
        },
        Path {
            key: "allowed_new_flow_table_full",
            title: "allowed new flow, flow table full",
            frame: format!(
                "as above, the flow table full: each new flow evicts the least recently used \
                 of {MAX_FLOWS}"
            ),
            flow: v4.describe(),
            reason: Reason::AllowRule,
            setup: vec![probe(PROBE_SPORT - 1)],
            timed: Timed::NewFlows(vec![new_flows; programs], Table::Full),
            outer_vlan: 0,
            side: SIDE_DEVICES,
        },
        Path {
            key: "established_flow",
            title: "established flow",
            frame: format!("IPv4 {}, 802.1Q", l4(&v4, "data")),
            flow: v4.describe(),
            reason: Reason::AllowFlow,
            timed: Timed::Repeat(last_frame(&est)?),
            setup: est,
            outer_vlan: 0,
            side: SIDE_DEVICES,
        },
        Path {
            key: "denied",
            title: "denied (no rule)",
            frame: "IPv4 TCP SYN, 802.1Q".into(),
            flow: denied.describe(),
            reason: Reason::DenyNoRule,
            setup: vec![(SIDE_DEVICES, denied_syn.clone(), Reason::DenyNoRule)],
            timed: Timed::Repeat(denied_syn),
            outer_vlan: 0,
            side: SIDE_DEVICES,
        },
        Path {
            key: "unknown_device",
            title: "unknown device",
            frame: format!("IPv4 {}, 802.1Q", l4(&unknown, "initiating")),
            flow: unknown.describe(),
            reason: Reason::DenyUnknown,
            setup: vec![(SIDE_DEVICES, unknown_syn.clone(), Reason::DenyUnknown)],
            timed: Timed::Repeat(unknown_syn),
            outer_vlan: 0,
            side: SIDE_DEVICES,
        },
        Path {
            key: "ipv6_two_ext_headers",
            title: "IPv6, 2 extension headers",
            frame: format!(
                "IPv6 hop-by-hop + destination options, {} (established), 802.1Q",
                l4(&v6, "data")
            ),
            flow: v6.describe(),
            reason: Reason::AllowFlow,
            timed: Timed::Repeat(last_frame(&est6)?),
            setup: est6,
            outer_vlan: 0,
            side: SIDE_DEVICES,
        },
        Path {
            key: "qinq_vlan",
            title: "double-tagged VLAN (QinQ)",
            frame: format!("802.1ad + 802.1Q, IPv4 {} (established)", l4(&v4, "data")),
            flow: v4.describe(),
            reason: Reason::AllowFlow,
            timed: Timed::Repeat(last_frame(&est_qinq)?),
            setup: est_qinq,
            outer_vlan: 300,
            side: SIDE_DEVICES,
        },
        Path {
            key: "established_reply",
            title: "established flow, reply from upstream",
            frame: format!("IPv4 {}, 802.1Q, from the server", l4(&v4, "data")),
            flow: v4.describe(),
            reason: Reason::AllowFlow,
            timed: Timed::Repeat(last_frame(&est_reply)?),
            setup: est_reply,
            outer_vlan: 0,
            side: SIDE_UPSTREAM,
        },
    ])
}

/// Puts every flow in its state on every lazaret program, checking each frame's action and
/// counted reason; checks that the baseline passes every timed frame.
fn setup(progs: &mut Programs, paths: &[Path]) -> Result<()> {
    let (baseline, lazaret) = progs.dps.split_at_mut(1);
    for p in paths {
        for (dp, pol) in lazaret.iter_mut().zip(&progs.policies) {
            // A QinQ path's device frames arrive on a QinQ port; replies come untagged.
            let port = |side: u8| IfaceConfig {
                outer_vlan: if side == SIDE_DEVICES {
                    p.outer_vlan
                } else {
                    0
                },
                ..IfaceConfig::new(side)
            };
            for (i, (side, frame, reason)) in p.setup.iter().enumerate() {
                let what = format!("{} with {} rules, frame {}", p.key, pol.rules, i + 1);
                expect_one_on(dp, port(*side), frame, *reason, &what)?;
            }
            dp.set_interface_config(LO, port(SIDE_DEVICES))?;
        }
        let frame = &p.setup.last().context("a path without frames")?.1;
        let action = baseline[0].test_run(frame)?;
        ensure!(
            action == XDP_PASS,
            "{}: the baseline returned {action}",
            p.key
        );
    }
    Ok(())
}

/// Samples in ns, indexed [path][program][run]; plus, for the new-flow paths, the baseline
/// timed with repetitions on the probe frame (to estimate the per-call overhead).
pub struct Samples {
    pub ns: Vec<Vec<Vec<f64>>>,
    pub baseline_repeated: Vec<Vec<f64>>,
}

fn is_full(p: &Path) -> bool {
    matches!(p.timed, Timed::NewFlows(_, Table::Full))
}

/// Every path but the full-table one, then the flow tables filled, then that one.
fn measure_all(
    progs: &mut Programs,
    paths: &mut [Path],
    reps: u32,
    runs: usize,
) -> Result<Samples> {
    let mut s = Samples {
        ns: vec![vec![Vec::new(); progs.dps.len()]; paths.len()],
        baseline_repeated: vec![Vec::new(); paths.len()],
    };
    let (full, room): (Vec<usize>, Vec<usize>) =
        (0..paths.len()).partition(|i| is_full(&paths[*i]));
    phase(progs, paths, &room, reps, runs, &mut s)?;
    for &pi in &full {
        let fill = u64::from(MAX_FLOWS) * 11 / 10;
        eprintln!("datapath: filling each flow table with {fill} new flows");
        if let Timed::NewFlows(gens, _) = &mut paths[pi].timed {
            for (t, g) in gens.iter_mut().enumerate().skip(1) {
                let want = action_for(Reason::AllowRule);
                g.run(&mut progs.dps[t], fill, want, false)?;
            }
        }
    }
    phase(progs, paths, &full, reps, runs, &mut s)?;
    Ok(s)
}

/// Each path's floor next to the baseline, on the path's own frames (see `floor`), and the
/// program sizes.
fn measure_floor(
    progs: &mut Programs,
    paths: &[Path],
    reps: u32,
    runs: usize,
) -> Result<floor::Floor> {
    let find = |key: &str| paths.iter().find(|p| p.key == key).context(key.to_string());
    let Timed::Repeat(established) = &find("established_flow")?.timed else {
        anyhow::bail!("established_flow is not a repeated frame");
    };
    let mut specs = Vec::new();
    for p in paths {
        let spec = match (&p.timed, p.key) {
            (Timed::Repeat(frame), "unknown_device") => {
                floor::Spec::Same("established_flow", frame)
            }
            (Timed::Repeat(frame), "denied") => floor::Spec::Deny(frame),
            (Timed::Repeat(frame), _) => floor::Spec::Repeat(frame),
            (Timed::NewFlows(gens, table), _) => floor::Spec::NewFlows(
                gens.first().context("new-flow generator")?,
                *table == Table::Full,
            ),
        };
        specs.push((p.key, spec));
    }
    let baseline = progs.dps.first_mut().context("the baseline")?;
    floor::measure(baseline, &specs, established, reps, runs)
}

/// Each path on xdp-filter (see `peer`), allowing the destination ports of the allowed
/// paths' frames, where it reaches lazaret's verdict; one warm-up run, then `runs` runs.
fn measure_peer(paths: &[Path], reps: u32, runs: usize) -> Result<Vec<peer::Compared>> {
    let mut ports: Vec<u16> = paths
        .iter()
        .filter(|p| p.reason.passes() && p.side == SIDE_DEVICES)
        .filter_map(|p| match &p.timed {
            Timed::Repeat(frame) => peer::dport(frame),
            Timed::NewFlows(..) => None,
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let mut xf = peer::Peer::load(&ports)?;
    let mut out = Vec::new();
    for p in paths {
        let Timed::Repeat(frame) = &p.timed else {
            out.push(Err(
                "lazaret's cost here is opening a flow (its policy lookup and \
                 the insert); a stateless filter opens none, so there is no same work to time"
                    .to_string(),
            ));
            continue;
        };
        let want = action_for(p.reason);
        if let Some(why) = xf.compare(frame, want)? {
            out.push(Err(why));
            continue;
        }
        let mut ns = Vec::new();
        for run in 0..=runs {
            let r = if run == 0 { (reps / 10).max(1) } else { reps };
            let (action, t) = xf.run(frame, r)?;
            ensure!(
                action == want,
                "xdp-filter changed its verdict on {}",
                p.key
            );
            if run > 0 {
                ns.push(t);
            }
        }
        let counted = xf.count(frame)?;
        eprintln!(
            "datapath: xdp-filter {:<22} {:.1} ns, {} instructions",
            p.key,
            common::median(&ns),
            counted.instructions
        );
        out.push(Ok((ns, counted)));
    }
    Ok(out)
}

/// One warm-up run (a tenth of the repetitions, not recorded), then `runs` runs; each run
/// times every path of `which` on every program, the program order rotating by run.
fn phase(
    progs: &mut Programs,
    paths: &mut [Path],
    which: &[usize],
    reps: u32,
    runs: usize,
    s: &mut Samples,
) -> Result<()> {
    let n = progs.dps.len();
    for run in 0..=runs {
        let warm = run == 0;
        let r = if warm { (reps / 10).max(1) } else { reps };
        let what = if warm {
            "warm-up".to_string()
        } else {
            format!("run {run}/{runs}")
        };
        eprintln!(
            "datapath: {what} ({} paths × {n} programs × {r})",
            which.len()
        );
        for &pi in which {
            let p = &mut paths[pi];
            for k in 0..n {
                let t = (k + run) % n;
                let ns = time(progs, p, t, r)?;
                if !warm {
                    s.ns[pi][t].push(ns);
                }
            }
            if let (Timed::NewFlows(..), false) = (&p.timed, warm) {
                let probe = &p.setup.last().context("probe")?.1;
                s.baseline_repeated[pi].push(measure::repeated(
                    &mut progs.dps[0],
                    probe,
                    r,
                    XDP_PASS,
                )?);
            }
        }
    }
    Ok(())
}

/// Times one path on program `t` (0: baseline) and checks what the program counted.
fn time(progs: &mut Programs, p: &mut Path, t: usize, reps: u32) -> Result<f64> {
    let dp = progs.dps.get_mut(t).context("program index")?;
    let want = if t == 0 {
        XDP_PASS
    } else {
        action_for(p.reason)
    };
    // The path's port: a QinQ path's frames arrive on a QinQ port. (Not on the baseline,
    // which has no interface map.)
    if t > 0 {
        dp.set_interface_config(LO, p.port())?;
    }
    let before = if t == 0 { Vec::new() } else { dp.stats()? };
    let ns = match &mut p.timed {
        Timed::Repeat(frame) => measure::repeated(dp, frame, reps, want)?,
        Timed::NewFlows(gens, table) => {
            let g = gens.get_mut(t).context("new-flow generator")?;
            // The baseline has no flow table to keep room in.
            let keep_room = *table == Table::Room && t > 0;
            g.run(dp, u64::from(reps), want, keep_room)?
        }
    };
    if t > 0 {
        // Back to the plain device port the other phases (table fills, floors) expect.
        dp.set_interface(LO, SIDE_DEVICES)?;
        let after = dp.stats()?;
        let rules = progs.policies.get(t - 1).map_or(0, |p| p.rules);
        let what = format!("{} with {rules} rules, {reps} timed packets", p.key);
        check_counted(&before, &after, p.reason, p.side, u64::from(reps), &what)?;
    }
    Ok(ns)
}

/// `--profile PATH`: runs one path on the program with the most rules for about 20 s, for a
/// profiler attached to the whole system (`perf record -a`). Nothing is written.
fn profile(progs: &mut Programs, paths: &mut [Path], key: &str) -> Result<()> {
    let p = paths
        .iter_mut()
        .find(|p| p.key == key)
        .with_context(|| format!("no path {key:?}"))?;
    let t = progs.dps.len() - 1;
    let start = std::time::Instant::now();
    let mut ns = Vec::new();
    while start.elapsed().as_secs() < 20 {
        ns.push(time(progs, p, t, REPS)?);
    }
    eprintln!(
        "datapath: profiled {key}: median {:.1} ns",
        common::median(&ns)
    );
    Ok(())
}
