//! Running frames through the loaded programs: the checks (XDP action and the reason the
//! program counted) and the two timing methods. Every timed batch is checked afterwards:
//! the stats map must have counted exactly one packet per repetition, all for the path's
//! reason, so no repetition took another path unnoticed.

use std::net::IpAddr;

use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap, MapData};
use lazaret::dataplane::xdp::Datapath;
use lazaret_abi::*;

use crate::flows::{Flow, Shape, LO};

pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;

/// Source ports of new flows: each frame of the new-flow path is a distinct 5-tuple.
const NEW_FLOW_LAST_SPORT: u16 = 59_999;
const NEW_FLOW_SPORTS: std::ops::RangeInclusive<u16> = 1024..=NEW_FLOW_LAST_SPORT;

pub(crate) fn action_for(reason: Reason) -> u32 {
    if reason.passes() {
        XDP_PASS
    } else {
        XDP_DROP
    }
}

fn reason_name(index: usize) -> String {
    let side = if index.is_multiple_of(2) {
        "devices"
    } else {
        "upstream"
    };
    match Reason::from_u8((index / 2) as u8) {
        Some(r) => format!("{} ({side} side)", r.name()),
        None => format!("stats slot {index}"),
    }
}

/// The program counted exactly `n` packets between two stats reads, all for `reason` on
/// `side`.
pub(crate) fn check_counted(
    before: &[u64],
    after: &[u64],
    reason: Reason,
    side: u8,
    n: u64,
    what: &str,
) -> Result<()> {
    let at = stats_index(reason, side) as usize;
    let wrong: Vec<String> = before
        .iter()
        .zip(after)
        .enumerate()
        .filter_map(|(i, (b, a))| {
            let moved = a.wrapping_sub(*b);
            let want = if i == at { n } else { 0 };
            (moved != want).then(|| format!("{moved} as {} (expected {want})", reason_name(i)))
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "{what}: the program counted {} (the path is not the one claimed)",
        wrong.join(", ")
    );
    Ok(())
}

/// Runs one frame on loopback configured as `port` and checks the action and that exactly
/// this reason was counted (on the port's side).
pub(crate) fn expect_one_on(
    dp: &mut Datapath,
    port: IfaceConfig,
    frame: &[u8],
    reason: Reason,
    what: &str,
) -> Result<()> {
    let side = port.side;
    dp.set_interface_config(LO, port)?;
    let before = dp.stats()?;
    let action = dp.test_run(frame)?;
    let after = dp.stats()?;
    check_counted(&before, &after, reason, side, 1, what)?;
    let want = action_for(reason);
    ensure!(
        action == want,
        "{what}: XDP action {action}, expected {want} for {}",
        reason.name()
    );
    Ok(())
}

/// The kernel's mean ns per repetition over `reps` repetitions of one frame.
pub(crate) fn repeated(dp: &mut Datapath, frame: &[u8], reps: u32, want: u32) -> Result<f64> {
    let (action, mean) = dp.test_run_repeat(frame, reps)?;
    ensure!(action == want, "XDP action {action}, expected {want}");
    Ok(mean.as_nanos() as f64)
}

/// Frames of distinct new flows: one template per source device, its TCP/UDP source port
/// rewritten for every frame. Frame `i` comes from device `i % devices` with port
/// `1024 + (i / devices) % 58,976`, so a 5-tuple recurs only after `cycle()` frames.
#[derive(Clone)]
pub(crate) struct NewFlows {
    flows: Vec<Flow>,
    templates: Vec<Vec<u8>>,
    sport_at: usize,
    next: u64,
}

/// New flows opened between two clean-ups of the flow table when it must keep room.
const CHUNK: u64 = 65_536;

impl NewFlows {
    /// A frame of this generator's first flow with a source port no timed frame uses (above
    /// its range) and no setup probe either (they use `PROBE_SPORT` and the port below it;
    /// the count once took the probe's port, and counted a flow the probe had opened): a
    /// new flow whatever has been timed. `nth` tells paths apart: counting a path runs its
    /// frame in the kernel too, which opens its flow.
    pub(crate) fn unopened(&self, nth: u16) -> Vec<u8> {
        const UNOPENED_SPORT: u16 = NEW_FLOW_LAST_SPORT + 500;
        const _: () = assert!(UNOPENED_SPORT + 100 < crate::flows::PROBE_SPORT - 1);
        let mut frame = self.templates.first().cloned().unwrap_or_default();
        let sport = UNOPENED_SPORT + nth.min(100);
        if let Some(b) = frame.get_mut(self.sport_at..self.sport_at + 2) {
            b.copy_from_slice(&sport.to_be_bytes());
        }
        frame
    }

    pub(crate) fn new(pool: &[Flow], shape: &Shape, flags: u8) -> Result<NewFlows> {
        let first_port = *NEW_FLOW_SPORTS.start();
        let templates: Vec<Vec<u8>> = pool
            .iter()
            .map(|f| f.device_frame(shape, first_port, flags, &[]))
            .collect();
        // Ethernet, the tags, a 20-byte IPv4 header: the source port follows.
        let sport_at = 14 + 4 * shape.tags.len() + 20;
        for t in &templates {
            ensure!(
                t.get(sport_at..sport_at + 2) == Some(&first_port.to_be_bytes()[..]),
                "new-flow template: the source port is not at byte {sport_at}"
            );
        }
        Ok(NewFlows {
            flows: pool.to_vec(),
            templates,
            sport_at,
            next: 0,
        })
    }

    fn ports() -> u64 {
        u64::from(NEW_FLOW_SPORTS.end() - NEW_FLOW_SPORTS.start()) + 1
    }

    /// Frames after which a 5-tuple recurs.
    pub(crate) fn cycle(&self) -> u64 {
        self.templates.len() as u64 * Self::ports()
    }

    /// Frame `i`'s source device and port.
    fn tuple(&self, i: u64) -> (usize, u16) {
        let devices = self.templates.len() as u64;
        let port = NEW_FLOW_SPORTS.start() + ((i / devices) % Self::ports()) as u16;
        ((i % devices) as usize, port)
    }

    /// Runs the next `n` frames once each (BPF_PROG_TEST_RUN, repeat 1) and returns the mean
    /// of the kernel's per-run durations in ns. With `keep_room`, the flows opened are
    /// removed from the flow table every CHUNK frames (untimed), so the table never fills
    /// and no insertion evicts.
    pub(crate) fn run(
        &mut self,
        dp: &mut Datapath,
        n: u64,
        want: u32,
        keep_room: bool,
    ) -> Result<f64> {
        let mut total_ns = 0u128;
        let mut chunk_start = self.next;
        // (The baseline program has no flow table.)
        if !keep_room && dp.ebpf_mut().map(MAP_FLOWS).is_some() {
            // The kernel's LRU is approximate: a flow opened a cycle ago can outlive
            // millions of insertions, and its tuple's next frame would be a known flow.
            // Such leftovers are removed first (untimed); the table stays full.
            self.forget(dp, self.next..self.next + n, false)?;
        }
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            let (dev, port) = self.tuple(i);
            let sport_at = self.sport_at;
            let t = self.templates.get_mut(dev).context("new-flow template")?;
            t[sport_at..sport_at + 2].copy_from_slice(&port.to_be_bytes());
            let (action, d) = dp.test_run_repeat(t, 1)?;
            ensure!(
                action == want,
                "new flow {i}: XDP action {action}, expected {want}"
            );
            total_ns += d.as_nanos();
            if keep_room && self.next - chunk_start == CHUNK {
                self.forget(dp, chunk_start..self.next, true)?;
                chunk_start = self.next;
            }
        }
        if keep_room {
            self.forget(dp, chunk_start..self.next, true)?;
        }
        Ok(total_ns as f64 / n.max(1) as f64)
    }

    /// Removes the flows of frames `range` from the program's flow table. With `opened`
    /// (the frames were just run) every one must be there, which also proves the key
    /// layout below is the program's; otherwise those missing are skipped.
    fn forget(&self, dp: &mut Datapath, range: std::ops::Range<u64>, opened: bool) -> Result<()> {
        let map = dp
            .ebpf_mut()
            .map_mut(MAP_FLOWS)
            .context("the program has no flow table")?;
        let mut flows: HashMap<&mut MapData, FlowKey, FlowValue> = HashMap::try_from(map)?;
        for i in range {
            let (dev, port) = self.tuple(i);
            let f = self.flows.get(dev).context("new-flow source")?;
            let key = flow_key(f, port);
            match flows.remove(&key) {
                // aya reports a removal's miss as the syscall's ENOENT.
                Err(aya::maps::MapError::SyscallError(e))
                    if !opened && e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                r => r.with_context(|| format!("new flow {i} is not in the flow table"))?,
            }
        }
        Ok(())
    }
}

/// The flow table's key for `flow` opened from source port `sport` (the program's
/// `flow_key`: endpoints ordered by (address, port), IPv4 in the first four bytes).
fn flow_key(flow: &Flow, sport: u16) -> FlowKey {
    let bytes = |a: IpAddr| match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    let (src, dst) = (bytes(flow.src), bytes(flow.dst));
    let src_is_a = (src, sport) <= (dst, flow.dport);
    let ((addr_a, port_a), (addr_b, port_b)) = if src_is_a {
        ((src, sport), (dst, flow.dport))
    } else {
        ((dst, flow.dport), (src, sport))
    };
    FlowKey {
        addr_a,
        addr_b,
        port_a,
        port_b,
        proto: flow.proto,
        family: if flow.src.is_ipv4() {
            FAMILY_V4
        } else {
            FAMILY_V6
        },
        echo: ECHO_NONE,
        _pad: 0,
    }
}
