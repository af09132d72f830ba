//! Floods into the flow tables, through the real XDP program (BPF_PROG_TEST_RUN).
//!
//! The lab: the monitor `mon-icu-01` holds `SESSIONS` HL7 sessions to its server, fully
//! established (SYN, SYN-ACK, ACK), so they sit in the established table. Half are active
//! (a packet every `TOUCH_EVERY` flood packets, like a live HL7 feed), half idle (silent
//! during the flood). After each flood a mid-stream packet of every session shows whether
//! its flow is still there (`AllowFlow`) or was evicted (`DenyNoFlow`: the session is cut).
//!
//! 1. `random_source_flood_keeps_established_sessions`: a workflow lets any host of
//!    10.10.0.0/16 open TCP 2575 to the monitor, and an attacker in that prefix sends SYNs
//!    from one and a half times as many random sources as the new table holds (`MAX_FLOWS`),
//!    so that table must evict. Two shapes: a bare SYN flood, and one where the monitor, a
//!    live host, answers each SYN with its SYN-ACK and the attacker follows with a blind ACK
//!    (it cannot see the SYN-ACK, sent to the spoofed source, so it guesses the number):
//!    three packets per flow, every flood entry referenced like a real session's.
//! 2. `one_device_cannot_flush_the_established_table`: a compromised anesthesia machine
//!    (`vent-or-01`) sends DNS queries from random source ports to its resolvers, and every
//!    query is answered: one and a half times the established table (`MAX_EST_FLOWS`) of
//!    *confirmed* flows from one device. Run twice: with the ABI's promotion budget, and with
//!    the budget lifted, which shows it is the budget that protects the others' sessions.
//!
//! What is guaranteed (see `lazaret_abi`, *Flow tables*, and docs/reliability.md): flows
//! that were never confirmed (no SYN-ACK acknowledged by the initiator, no reply) never
//! enter the established table, so no flood of them evicts an established session, idle or
//! not; one device puts at most `PROMOTE_BURST + PROMOTE_RATE_PER_S × t` flows into the
//! established table in `t` seconds, so it needs longer than the established-TCP timeout to
//! cycle it. The new table is still an LRU: a half-open handshake of a managed device can be
//! evicted by a flood (the connection attempt is retried by its TCP stack).

use std::{net::Ipv4Addr, time::Instant};

use anyhow::{ensure, Result};
use lazaret::{
    dataplane::xdp::{Datapath, FlowTable, LoadOptions},
    policy,
};
use lazaret_abi::{
    Reason, FLOW_ESTABLISHED, MAP_EST_FLOWS, MAP_FLOWS, MAX_EST_FLOWS, MAX_FLOWS, PROMOTE_BURST,
    PROMOTE_RATE_PER_S, SIDE_DEVICES, SIDE_UPSTREAM,
};
use lazaret_tests::{
    daemon::monitor_policy,
    frames::{
        ethernet, ipv4, tcp4, tcp_seq_ack, udp4, Ipv4Opts, Mac, ETH_IPV4, TCP_ACK, TCP_FIN,
        TCP_SEQ, TCP_SYN,
    },
    reliability::record_figure,
};

const MONITOR: Mac = [0x02, 0, 0, 0, 0, 0x11];
const VENT: Mac = [0x02, 0, 0, 0, 0, 0x21];
const GW: Mac = [0x02, 0, 0, 0, 0, 0xfe];
const SESSIONS: u16 = 32;
const TOUCH_EVERY: u64 = 4096;

fn monitor_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, 11)
}
fn vent_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, 21)
}
fn server_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 10, 0, 20)
}

fn lab_policy() -> String {
    let rules = r#"
[workflows.hl7]
description = "HL7 results to the server"
[[workflows.hl7.rules]]
device = "class:patient-monitor"
peer = "10.10.0.20/32"
proto = "tcp"
ports = [2575]

[workflows.hl7-inbound]
description = "HL7 orders from the clinical network"
[[workflows.hl7-inbound.rules]]
device = "class:patient-monitor"
peer = "10.10.0.0/16"
proto = "tcp"
ports = [2575]
initiator = "peer"

[workflows.dns-lookups]
description = "Name lookups at the site's four resolvers (docs/clinical-flows.md row 15)"
[[workflows.dns-lookups.rules]]
device = "class:anesthesia-machine"
peer = "10.10.0.52/30"
proto = "udp"
ports = [53]

[classes.anesthesia-machine]
description = "Anesthesia machines"
workflows = ["dns-lookups"]

[[devices]]
id = "vent-or-01"
class = "anesthesia-machine"
mac = "02:00:00:00:00:21"
ipv4 = "10.20.0.21"
"#;
    monitor_policy(MONITOR, &["hl7", "hl7-inbound"], rules)
}

fn compiled() -> Result<policy::Compiled> {
    let dir = std::env::temp_dir().join(format!(
        "{}-flows-{}",
        lazaret_tests::netns::unique_prefix(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("lab.toml"), lab_policy())?;
    let compiled = policy::load_and_compile(&dir).map_err(|e| anyhow::anyhow!(e.render()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(compiled?.1)
}

/// The reason the datapath counted for one frame.
fn judge(dp: &mut Datapath, side: u8, frame: &[u8]) -> Result<Option<Reason>> {
    dp.set_interface(1, side)?;
    let before = dp.stats()?;
    dp.test_run(frame)?;
    let after = dp.stats()?;
    let moved: Vec<usize> = (0..before.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    Ok(match moved.as_slice() {
        [i] => Reason::from_u8((i / 2) as u8),
        _ => None,
    })
}

/// A fresh datapath with the lab policy (its promotion budget replaced by `budget`, as
/// (rate, burst), if given) and the
/// monitor's sessions established. Sessions 0..SESSIONS/2 are active, the rest idle.
fn lab(compiled: &policy::Compiled, budget: Option<(u32, u32)>) -> Result<Datapath> {
    let mut dp = Datapath::load(&LoadOptions::default())?;
    let slot = dp.next_slot()?;
    let mut contents = compiled.map_contents(slot, 1, &Default::default())?;
    if let Some((rate, burst)) = budget {
        contents.site.promote_rate = rate;
        contents.site.promote_burst = burst;
    }
    dp.install(&contents)?;
    let (monitor, server) = (monitor_ip(), server_ip());
    for i in 0..SESSIONS {
        let sport = 50_000 + i;
        let handshake = [
            (
                SIDE_DEVICES,
                tcp4(MONITOR, GW, monitor, server, sport, 2575, TCP_SYN),
                Reason::AllowRule,
            ),
            (
                SIDE_UPSTREAM,
                tcp4(GW, MONITOR, server, monitor, 2575, sport, TCP_SYN | TCP_ACK),
                Reason::AllowFlow,
            ),
            (
                SIDE_DEVICES,
                tcp4(MONITOR, GW, monitor, server, sport, 2575, TCP_ACK),
                Reason::AllowFlow,
            ),
        ];
        for (side, frame, want) in handshake {
            ensure!(
                judge(&mut dp, side, &frame)? == Some(want),
                "session {i}: setup frame not {want:?}"
            );
        }
    }
    let established = tables(&mut dp)?.1;
    ensure!(
        established == u64::from(SESSIONS),
        "after their handshakes the {SESSIONS} sessions are in the established table (it holds {established})"
    );
    Ok(dp)
}

/// Sends one packet of every active session (device side); leaves the interface upstream.
fn touch_active(dp: &mut Datapath) -> Result<()> {
    dp.set_interface(1, SIDE_DEVICES)?;
    for i in 0..SESSIONS / 2 {
        let ack = tcp4(
            MONITOR,
            GW,
            monitor_ip(),
            server_ip(),
            50_000 + i,
            2575,
            TCP_ACK,
        );
        dp.test_run(&ack)?;
    }
    dp.set_interface(1, SIDE_UPSTREAM)?;
    Ok(())
}

/// (active sessions kept, idle sessions kept): a mid-stream packet of each still passes.
fn sessions_kept(dp: &mut Datapath) -> Result<(u16, u16)> {
    let (mut active, mut idle) = (0u16, 0u16);
    for i in 0..SESSIONS {
        let ack = tcp4(
            MONITOR,
            GW,
            monitor_ip(),
            server_ip(),
            50_000 + i,
            2575,
            TCP_ACK,
        );
        if judge(dp, SIDE_DEVICES, &ack)? == Some(Reason::AllowFlow) {
            if i < SESSIONS / 2 {
                active += 1;
            } else {
                idle += 1;
            }
        }
    }
    Ok((active, idle))
}

/// Entries of (the new table, the established table).
fn tables(dp: &mut Datapath) -> Result<(u64, u64)> {
    let usage = dp.map_usage()?;
    let count = |m: &str| usage.iter().find(|u| u.0 == m).map_or(0, |u| u.1);
    Ok((count(MAP_FLOWS), count(MAP_EST_FLOWS)))
}

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Outcome of one flood.
struct Outcome {
    flows: u64,
    /// Flood flows the datapath opened (their first packet allowed).
    opened: u64,
    active_kept: u16,
    idle_kept: u16,
    new_entries: u64,
    est_entries: u64,
    seconds: f64,
}

/// A random-source SYN flood to the monitor; `answered`: the monitor answers each SYN with
/// its SYN-ACK and the attacker sends a blind ACK.
fn syn_flood(compiled: &policy::Compiled, answered: bool) -> Result<Outcome> {
    let mut dp = lab(compiled, None)?;
    let monitor = monitor_ip();
    let flows = u64::from(MAX_FLOWS) * 3 / 2;
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut opened = 0u64;
    let started = Instant::now();
    dp.set_interface(1, SIDE_UPSTREAM)?;
    for n in 0..flows {
        let x = rng.next();
        let src = Ipv4Addr::new(10, 10, (x >> 8) as u8, x as u8);
        let sport = 1024 + ((x >> 16) % 60_000) as u16;
        if dp.test_run(&tcp4(GW, MONITOR, src, monitor, sport, 2575, TCP_SYN))? == 2 {
            opened += 1;
        }
        if answered {
            dp.set_interface(1, SIDE_DEVICES)?;
            dp.test_run(&tcp4(
                MONITOR,
                GW,
                monitor,
                src,
                2575,
                sport,
                TCP_SYN | TCP_ACK,
            ))?;
            dp.set_interface(1, SIDE_UPSTREAM)?;
            // The SYN-ACK went to the spoofed source: the attacker guesses its number (the
            // top bit set keeps the guess off the real ISN + 1 in this lab).
            let guess = (x >> 32) as u32 | 0x8000_0000;
            let l4 = tcp_seq_ack(sport, 2575, TCP_ACK, (TCP_SEQ + 1, guess), &[]);
            let ack = ethernet(
                MONITOR,
                GW,
                &[],
                ETH_IPV4,
                &ipv4(src, monitor, 6, &l4, &Ipv4Opts::default()),
            );
            dp.test_run(&ack)?;
        }
        if n % TOUCH_EVERY == 0 {
            touch_active(&mut dp)?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (active_kept, idle_kept) = sessions_kept(&mut dp)?;
    let (new_entries, est_entries) = tables(&mut dp)?;
    Ok(Outcome {
        flows,
        opened,
        active_kept,
        idle_kept,
        new_entries,
        est_entries,
        seconds,
    })
}

/// The anesthesia machine sends DNS queries from random source ports to its four resolvers,
/// each answered: every flow is confirmed. Also returns how many of its flows ended in the
/// established table.
fn confirmed_flood(
    compiled: &policy::Compiled,
    budget_override: Option<(u32, u32)>,
) -> Result<(Outcome, u64)> {
    let mut dp = lab(compiled, budget_override)?;
    let vent = vent_ip();
    let flows = u64::from(MAX_EST_FLOWS) * 3 / 2;
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    let mut opened = 0u64;
    let started = Instant::now();
    for n in 0..flows {
        let x = rng.next();
        // Four resolvers × 60,000 source ports: 240,000 distinct flows to draw from.
        let resolver = Ipv4Addr::new(10, 10, 0, 52 + (x & 3) as u8);
        let sport = 1024 + ((x >> 8) % 60_000) as u16;
        dp.set_interface(1, SIDE_DEVICES)?;
        if dp.test_run(&udp4(VENT, GW, vent, resolver, sport, 53))? == 2 {
            opened += 1;
        }
        dp.set_interface(1, SIDE_UPSTREAM)?;
        dp.test_run(&udp4(GW, VENT, resolver, vent, 53, sport))?;
        if n % TOUCH_EVERY == 0 {
            touch_active(&mut dp)?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (active_kept, idle_kept) = sessions_kept(&mut dp)?;
    let (new_entries, est_entries) = tables(&mut dp)?;
    let vent_id = compiled
        .devices
        .iter()
        .find(|d| d.id == "vent-or-01")
        .map(|d| d.hash)
        .ok_or_else(|| anyhow::anyhow!("vent-or-01 is not in the compiled policy"))?;
    let flows_of_vent = dp.flows()?;
    let vent_est = flows_of_vent
        .iter()
        .filter(|(t, _, v)| {
            *t == FlowTable::Established && (v.dev_a == vent_id || v.dev_b == vent_id)
        })
        .count() as u64;
    let vent_confirmed_new = flows_of_vent
        .iter()
        .filter(|(t, _, v)| {
            *t == FlowTable::New
                && v.state == FLOW_ESTABLISHED
                && (v.dev_a == vent_id || v.dev_b == vent_id)
        })
        .count() as u64;
    ensure!(
        vent_confirmed_new > 0 || budget_override.is_some(),
        "the flood's confirmed flows beyond the budget stay in the new table"
    );
    Ok((
        Outcome {
            flows,
            opened,
            active_kept,
            idle_kept,
            new_entries,
            est_entries,
            seconds,
        },
        vent_est,
    ))
}

#[test]
fn random_source_flood_keeps_established_sessions() -> Result<()> {
    let compiled = compiled()?;
    let half = SESSIONS / 2;
    let mut figures = Vec::new();
    for (answered, name) in [
        (false, "SYN flood"),
        (true, "SYN flood answered by the monitor + blind ACKs"),
    ] {
        let o = syn_flood(&compiled, answered)?;
        eprintln!(
            "{name}: {} flows, {} opened in {:.1} s; active sessions kept {}/{half}, idle {}/{half}; new table {}, established table {}",
            o.flows, o.opened, o.seconds, o.active_kept, o.idle_kept, o.new_entries, o.est_entries
        );
        assert!(
            o.opened > u64::from(MAX_FLOWS),
            "{name}: the flood did not overflow the new table"
        );
        assert!(
            o.new_entries <= u64::from(MAX_FLOWS),
            "{name}: the new table holds more than its capacity"
        );
        // The guarantee: no unconfirmed flow reaches the established table, so every
        // session there, idle or not, survives.
        assert_eq!(
            o.est_entries,
            u64::from(SESSIONS),
            "{name}: flood flows reached the established table"
        );
        assert_eq!(o.active_kept, half, "{name}: active sessions were evicted");
        assert_eq!(o.idle_kept, half, "{name}: idle sessions were evicted");
        figures.push(format!(
            "{name}: {} opened, active {}/{half}, idle {}/{half} kept, 0 flood flows in the established table",
            o.opened, o.active_kept, o.idle_kept
        ));
    }
    record_figure(
        "flood_flows::random_source_flood_keeps_established_sessions",
        &format!(
            "{} random-source flows into a {MAX_FLOWS}-flow new table; {}",
            u64::from(MAX_FLOWS) * 3 / 2,
            figures.join("; ")
        ),
    );
    Ok(())
}

#[test]
fn one_device_cannot_flush_the_established_table() -> Result<()> {
    let compiled = compiled()?;
    let half = SESSIONS / 2;

    let (o, vent_est) = confirmed_flood(&compiled, None)?;
    // Whole seconds started, plus one token of slack for a refill landing on the boundary.
    let bound =
        u64::from(PROMOTE_BURST) + u64::from(PROMOTE_RATE_PER_S) * (o.seconds.ceil() as u64 + 1);
    eprintln!(
        "budgeted: {} confirmed flows, {} opened in {:.1} s; vent's flows promoted {vent_est} (bound {bound}); active kept {}/{half}, idle {}/{half}; new table {}, established table {}",
        o.flows, o.opened, o.seconds, o.active_kept, o.idle_kept, o.new_entries, o.est_entries
    );
    assert!(
        o.opened >= o.flows * 9 / 10,
        "the device's flows were allowed"
    );
    assert!(
        vent_est <= bound,
        "one device promoted {vent_est} flows in {:.1} s, more than its budget ({bound})",
        o.seconds
    );
    assert!(
        vent_est >= u64::from(PROMOTE_BURST),
        "the burst was promoted"
    );
    assert!(o.est_entries <= u64::from(MAX_EST_FLOWS));
    assert_eq!(o.active_kept, half, "active sessions were evicted");
    assert_eq!(
        o.idle_kept, half,
        "idle sessions were evicted by one device's confirmed flows"
    );

    // The budget lifted: the same flood cycles the established table and the idle
    // sessions go, so it is the budget that protects them.
    let (u, vent_est_unbounded) = confirmed_flood(&compiled, Some((1_000_000, 1_000_000)))?;
    eprintln!(
        "unbudgeted: vent's flows promoted {vent_est_unbounded}; active kept {}/{half}, idle {}/{half}",
        u.active_kept, u.idle_kept
    );
    assert!(
        u.idle_kept < half,
        "without the budget the flood should have evicted idle sessions (the test would prove nothing)"
    );
    record_figure(
        "flood_flows::one_device_cannot_flush_the_established_table",
        &format!(
            "{} confirmed DNS flows from one device in {:.0} s into a {MAX_EST_FLOWS}-flow established table: {vent_est} promoted (budget {PROMOTE_BURST} + {PROMOTE_RATE_PER_S}/s), active {}/{half}, idle {}/{half} kept; budget lifted: idle {}/{half} kept",
            o.flows, o.seconds, o.active_kept, o.idle_kept, u.idle_kept
        ),
    );
    Ok(())
}

/// Flows whose confirming packets race on two CPUs, in rounds of this many.
const RACE_FLOWS: u16 = 2_000;
const RACE_ROUNDS: u16 = 5;

/// The monitor's segment with `flags` on flow `sport`: its handshake ACK confirms the flow
/// and promotes it into the established table.
fn monitor_segment(sport: u16, flags: u8) -> Vec<u8> {
    tcp4(MONITOR, GW, monitor_ip(), server_ip(), sport, 2575, flags)
}

/// Runs `frames` on `dp` from a thread pinned to `cpu`, each in step with the other
/// thread's frame of the same index (`step` counts both threads' arrivals); the XDP
/// actions, in order.
fn in_step(
    dp: &mut Datapath,
    cpu: usize,
    frames: &[Vec<u8>],
    step: &std::sync::atomic::AtomicUsize,
) -> Result<Vec<u32>> {
    use std::sync::atomic::Ordering;
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    let mut actions = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        // Both threads at frame i before either runs it (bounded: the other thread is
        // at most one frame behind, or gone on an error, which the deadline catches).
        step.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while step.load(Ordering::Acquire) < 2 * (i + 1) {
            ensure!(Instant::now() < deadline, "the other CPU's thread stopped");
            std::hint::spin_loop();
        }
        actions.push(dp.test_run(frame)?);
    }
    Ok(actions)
}

/// Two packets of one flow on two CPUs at once, one of them confirming it: the promotion
/// (insert into the established table, then remove from the new one) may run on one CPU
/// between the other's two lookups — the fast path's miss in the established table and the
/// full path's in the new one (the other's packet is an ACK too), or the full path's own two
/// (a FIN, which the fast path leaves alone). The flow is in one table or the other at
/// every instant, and a packet must find it: none of the racing packets may be refused
/// (`deny_no_flow`), and every flow confirmed by the ACKs alone ends up in the established
/// table. Two program instances share pinned maps, as the daemon's upgrade does, each
/// driven by BPF_PROG_TEST_RUN on its own CPU.
#[test]
fn a_flow_promoted_on_another_cpu_is_not_lost() -> Result<()> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .take(2)
        .collect();
    let &[cpu_a, cpu_b] = cpus.as_slice() else {
        anyhow::bail!("the race needs two CPUs; this process may run on {cpus:?}");
    };
    let compiled = compiled()?;
    let tmp = lazaret_tests::netns::TempDir::new()?;
    let bpffs = lazaret_tests::netns::BpfMount::new(&tmp.path)?;
    let opts = LoadOptions {
        pin_dir: Some(bpffs.path.clone()),
    };
    let mut a = Datapath::load(&opts)?;
    let slot = a.next_slot()?;
    let mut contents = compiled.map_contents(slot, 1, &Default::default())?;
    // The promotion budget lifted: every confirmed flow is promoted, so every one races.
    contents.site.promote_rate = u32::MAX;
    contents.site.promote_burst = u32::MAX;
    a.install(&contents)?;
    let mut b = Datapath::load(&opts)?;
    let (monitor, server) = (monitor_ip(), server_ip());
    let mut refused = Vec::new();
    for round in 0..RACE_ROUNDS {
        let ports: Vec<u16> = (0..RACE_FLOWS)
            .map(|i| 20_000 + round * RACE_FLOWS + i)
            .collect();
        a.set_interface(1, SIDE_DEVICES)?;
        for &p in &ports {
            let syn = tcp4(MONITOR, GW, monitor, server, p, 2575, TCP_SYN);
            ensure!(a.test_run(&syn)? == 2, "flow {p}: the SYN was refused");
        }
        a.set_interface(1, SIDE_UPSTREAM)?;
        for &p in &ports {
            let synack = tcp4(GW, MONITOR, server, monitor, 2575, p, TCP_SYN | TCP_ACK);
            ensure!(
                a.test_run(&synack)? == 2,
                "flow {p}: the SYN-ACK was refused"
            );
        }
        a.set_interface(1, SIDE_DEVICES)?;
        // Even rounds: an ACK on each CPU; odd ones: an ACK on one, a FIN on the other.
        let other = if round % 2 == 0 {
            TCP_ACK
        } else {
            TCP_FIN | TCP_ACK
        };
        let acks: Vec<Vec<u8>> = ports.iter().map(|&p| monitor_segment(p, TCP_ACK)).collect();
        let others: Vec<Vec<u8>> = ports.iter().map(|&p| monitor_segment(p, other)).collect();
        let step = std::sync::atomic::AtomicUsize::new(0);
        let (on_a, on_b) = std::thread::scope(|s| {
            let ta = s.spawn(|| in_step(&mut a, cpu_a, &acks, &step));
            let tb = s.spawn(|| in_step(&mut b, cpu_b, &others, &step));
            (ta.join(), tb.join())
        });
        let (on_a, on_b) = (
            on_a.map_err(|_| anyhow::anyhow!("CPU {cpu_a}'s thread panicked"))??,
            on_b.map_err(|_| anyhow::anyhow!("CPU {cpu_b}'s thread panicked"))??,
        );
        for (i, &p) in ports.iter().enumerate() {
            if on_a[i] != 2 || on_b[i] != 2 {
                refused.push((p, on_a[i], on_b[i]));
            }
        }
    }
    let flows = u64::from(RACE_FLOWS) * u64::from(RACE_ROUNDS);
    let (_, established) = tables(&mut a)?;
    ensure!(
        refused.is_empty(),
        "{} of {flows} flows had a packet refused while the other CPU promoted it (port, action on CPU {cpu_a}, on CPU {cpu_b}; 2 passes): {:?}",
        refused.len(),
        &refused[..refused.len().min(10)]
    );
    // A FIN before the ACK closes the flow unconfirmed: the ACK rounds' flows at least.
    let by_acks = u64::from(RACE_FLOWS) * u64::from(RACE_ROUNDS.div_ceil(2));
    ensure!(
        (by_acks..=flows).contains(&established),
        "{established} of the {flows} racing flows are in the established table, fewer than the {by_acks} the ACKs alone confirmed"
    );
    record_figure(
        "flood_flows::a_flow_promoted_on_another_cpu_is_not_lost",
        &format!("{flows} flows, each sent an ACK and an ACK or a FIN at once on two CPUs: none refused; at least the {by_acks} flows the ACKs alone confirmed in the established table"),
    );
    Ok(())
}
