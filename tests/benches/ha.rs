//! `cargo xtask bench ha`: an active/standby pair failing over, and its flow replication.
//!
//! Failovers. Each trial builds the pair of `tests/ns_ha.rs` afresh (`lazaret_tests::ha::Pair`:
//! two members on one device segment and one upstream segment, the shipped keepalived and,
//! on nftables, conntrackd; the release daemon, `LAZARET_BIN`), opens a TCP session from the
//! pump to the server through member a, waits until member b holds its flow, and starts an
//! allowed datagram stream (the pump's audit records, UDP 514) of one datagram a millisecond,
//! each numbered and timed when sent. Then member a fails — its lazaret killed, its
//! keepalived killed, its device-side link down, or the whole member gone at once — at t0.
//! The stream runs on until member b holds the addresses and a datagram sent after that has
//! arrived, and half a second more. Recovery is the time from t0 to the sending of the first
//! datagram after the last one lost (0 when none was lost): when allowed traffic flowed
//! again. Lost counts the datagrams sent after t0 that never arrived. The session must carry
//! on through member b with its next round trip (no new handshake). Target: recovery within
//! three of keepalived's advertisement intervals plus a second at p99 (the interval is read
//! from the shipped configuration the trials run), and no session lost.
//!
//! Replication (XDP). In one pair, member b's daemon is stopped, 100,000 established flows
//! are written into member a's pinned established table, and member b is started again: the
//! bulk transfer is the time from member a's replication connecting to member b (its
//! `lazaret_ha_sync_up` turning 1) to member b's `lazaret_ha_flow_updates_total{outcome=
//! "adopted"}` counting them all. Target: under 2 s. Then, connected, another 20,000 new
//! flows are written on member a: the steady-state rate is those flows over the time until
//! member b has adopted them (a round a second, so the figure includes the wait for the next
//! round).

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::HashSet,
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use common::{median, percentile, round3, verdict};
use lazaret::daemon::flowsync::datapath_now_ns;
use lazaret_abi::{
    FlowKey, FlowValue, ECHO_NONE, FAMILY_V4, FLOW_ESTABLISHED, MAP_EST_FLOWS, PROTO_TCP,
};
use lazaret_tests::{
    daemon::{round_trip, Dataplane, Lab},
    ha::{wait_metric, Fault, Pair, AUDIT_PORT},
    netns::wait_until,
};
use serde_json::json;

const TRIALS: usize = 10;
const QUICK_TRIALS: usize = 2;
const BULK_FLOWS: u32 = 100_000;
const BULK_TARGET_S: f64 = 2.0;
const STEADY_FLOWS: u32 = 20_000;
const ADOPTED: &str = "lazaret_ha_flow_updates_total{outcome=\"adopted\"}";

/// One failover.
struct Trial {
    recovery_s: f64,
    lost: usize,
    sent_after_fault: usize,
    session_survived: bool,
}

/// The pump's datagram stream to the server: one numbered datagram a millisecond.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Instant>>>,
    received: Arc<Mutex<Vec<(u64, Instant)>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Stream {
    fn start(lab: &Lab) -> Result<Stream> {
        let tx = lab
            .net
            .device
            .run(|| UdpSocket::bind(("10.20.0.11", 0)))??;
        let rx = lab
            .net
            .server
            .run(|| UdpSocket::bind(("10.10.0.20", AUDIT_PORT)))??;
        rx.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, st) = (stop.clone(), sent.clone());
        let sender = thread::spawn(move || {
            let start = Instant::now();
            // Bounded: a minute at most, whatever the caller does.
            for seq in 0u64..60_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let _ = tx.send_to(&seq.to_be_bytes(), ("10.10.0.20", AUDIT_PORT));
                if let Ok(mut v) = st.lock() {
                    v.push(Instant::now());
                }
                let next = start + Duration::from_millis(seq + 1);
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        let (s, rc) = (stop.clone(), received.clone());
        let receiver = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(70);
            let mut buf = [0u8; 16];
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((8, _)) = rx.recv_from(&mut buf) {
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(&buf[..8]);
                    if let Ok(mut v) = rc.lock() {
                        v.push((u64::from_be_bytes(seq), Instant::now()));
                    }
                }
            }
        });
        Ok(Stream {
            stop,
            sent,
            received,
            threads: vec![sender, receiver],
        })
    }

    /// Whether a datagram sent after `t` has arrived.
    fn flowing_since(&self, t: Instant) -> bool {
        let sent = self.sent.lock().map(|v| v.clone()).unwrap_or_default();
        let received = self.received.lock().map(|v| v.clone()).unwrap_or_default();
        received
            .iter()
            .any(|(seq, _)| sent.get(*seq as usize).is_some_and(|at| *at > t))
    }

    /// Stops the stream; (recovery after `t0` in s, lost after `t0`, sent after `t0`).
    fn finish(self, t0: Instant) -> Result<(f64, usize, usize)> {
        // The sender first, and time for what is in flight, then the receiver.
        self.stop.store(true, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(300));
        for t in self.threads {
            let _ = t.join();
        }
        let sent = self.sent.lock().map(|v| v.clone()).unwrap_or_default();
        let got: HashSet<u64> = self
            .received
            .lock()
            .map(|v| v.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default();
        let after: Vec<usize> = (0..sent.len()).filter(|&i| sent[i] >= t0).collect();
        let lost: Vec<usize> = after
            .iter()
            .copied()
            .filter(|i| !got.contains(&(*i as u64)))
            .collect();
        let recovery = match lost.last() {
            None => 0.0,
            Some(&last) => {
                let resumed = sent
                    .get(last + 1)
                    .context("the stream never flowed again")?;
                resumed.duration_since(t0).as_secs_f64()
            }
        };
        Ok((recovery, lost.len(), after.len()))
    }
}

fn trial(dataplane: Dataplane, fault: Fault) -> Result<Trial> {
    let mut pair = Pair::new(dataplane)?;
    let mut session = pair.members[0].lab.connect(2575, Duration::from_secs(1))?;
    ensure!(round_trip(&mut session), "no session through member a");
    pair.wait_replicated(1)?;
    let stream = Stream::start(&pair.members[0].lab)?;
    let warm = wait_until(Duration::from_secs(2), || {
        stream.flowing_since(Instant::now() - Duration::from_millis(100))
    });
    ensure!(warm, "the audit stream does not flow through member a");
    thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    pair.fail_a(fault)?;
    let moved = wait_until(Duration::from_secs(15), || pair.holds_all(1));
    ensure!(moved, "member b did not take the addresses after {fault:?}");
    let taken = Instant::now();
    let flowing = wait_until(Duration::from_secs(10), || stream.flowing_since(taken));
    ensure!(flowing, "the stream did not flow again after {fault:?}");
    thread::sleep(Duration::from_millis(500));
    let (recovery_s, lost, sent_after_fault) = stream.finish(t0)?;
    let session_survived = round_trip(&mut session);
    Ok(Trial {
        recovery_s,
        lost,
        sent_after_fault,
        session_survived,
    })
}

/// `advert_int` of the shipped keepalived configuration, in seconds.
fn advert_interval() -> Result<f64> {
    let conf = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/keepalived/keepalived.conf"),
    )?;
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("advert_int "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no advert_int in deploy/keepalived/keepalived.conf")
}

/// Writes `n` established flows, the `offset`th on (hosts of the device network to the
/// server's 2575), into the established table pinned for `lab`.
fn write_flows(lab: &Lab, n: u32, offset: u32) -> Result<()> {
    let path = lab
        .bpffs
        .path
        .join(format!("v{}", lazaret_abi::ABI_VERSION))
        .join(MAP_EST_FLOWS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut map: HashMap<_, FlowKey, FlowValue> = HashMap::try_from(Map::LruHashMap(data))?;
    let now = datapath_now_ns();
    for i in offset..offset + n {
        // 10.20.(i / 60000).(…) : 1024 + i % 60000, against 10.10.0.20:2575; the server's
        // address is the lower, so it is endpoint a.
        let host = (i / 60_000) as u8;
        let mut addr_b = [0u8; 16];
        addr_b[..4].copy_from_slice(&[10, 20, 1 + host / 200, host % 200 + 1]);
        let mut addr_a = [0u8; 16];
        addr_a[..4].copy_from_slice(&[10, 10, 0, 20]);
        let key = FlowKey {
            addr_a,
            addr_b,
            port_a: 2575,
            port_b: 1024 + (i % 60_000) as u16,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            echo: ECHO_NONE,
            _pad: 0,
        };
        let value = FlowValue {
            last_seen_ns: now,
            state: FLOW_ESTABLISHED,
            initiator: 1,
            ..FlowValue::default()
        };
        map.insert(key, value, 0)?;
    }
    Ok(())
}

fn metric(lab: &Lab, series: &str) -> f64 {
    lab.metric(series).ok().flatten().unwrap_or(0.0)
}

/// (bulk transfer of [`BULK_FLOWS`] in s, steady-state flows per second).
fn replication() -> Result<(f64, f64)> {
    let mut pair = Pair::new(Dataplane::Xdp)?;
    pair.members[1].lab.stop();
    let a = &pair.members[0].lab;
    let down = wait_until(Duration::from_secs(5), || {
        metric(a, "lazaret_ha_sync_up") == 0.0
    });
    ensure!(down, "member a still reports its replication connected");
    write_flows(a, BULK_FLOWS, 0)?;
    pair.members[1].lab.start()?;
    let (a, b) = (&pair.members[0].lab, &pair.members[1].lab);
    let up = wait_until(Duration::from_secs(10), || {
        metric(a, "lazaret_ha_sync_up") == 1.0
    });
    ensure!(up, "member a did not reconnect to member b");
    let t0 = Instant::now();
    let all = f64::from(BULK_FLOWS);
    let done = wait_until(Duration::from_secs(30), || metric(b, ADOPTED) >= all);
    ensure!(
        done,
        "member b adopted {} of {BULK_FLOWS} flows in 30 s",
        metric(b, ADOPTED)
    );
    let bulk = t0.elapsed().as_secs_f64();
    let before = metric(b, ADOPTED);
    let t1 = Instant::now();
    write_flows(a, STEADY_FLOWS, BULK_FLOWS)?;
    wait_metric(
        b,
        ADOPTED,
        before + f64::from(STEADY_FLOWS),
        Duration::from_secs(30),
    )?;
    let rate = f64::from(STEADY_FLOWS) / t1.elapsed().as_secs_f64();
    Ok((bulk, rate))
}

fn main() -> Result<()> {
    let args = common::args()?;
    if std::env::var_os("LAZARET_BIN").is_none() {
        bail!("LAZARET_BIN is not set: run this through `cargo xtask bench ha` (it builds the release daemon)");
    }
    let trials = if args.quick { QUICK_TRIALS } else { TRIALS };
    let advert = advert_interval()?;
    let target = 3.0 * advert + 1.0;
    let (mut rows, mut md_rows) = (Vec::new(), String::new());
    let mut all_met = true;
    for dataplane in [Dataplane::Xdp, Dataplane::Nftables] {
        for fault in Fault::ALL {
            let mut done = Vec::with_capacity(trials);
            for i in 0..trials {
                let t = trial(dataplane, fault)
                    .with_context(|| format!("{dataplane:?}, {fault:?}, trial {i}"))?;
                eprintln!(
                    "ha: {dataplane:?} {fault:?} trial {i}: traffic again after {:.3} s, {} of {} datagrams lost, session {}",
                    t.recovery_s,
                    t.lost,
                    t.sent_after_fault,
                    if t.session_survived { "kept" } else { "LOST" }
                );
                done.push(t);
            }
            let mut rec: Vec<f64> = done.iter().map(|t| t.recovery_s).collect();
            rec.sort_by(f64::total_cmp);
            let (p50, p99) = (median(&rec), percentile(&rec, 0.99));
            let lost: Vec<f64> = done.iter().map(|t| t.lost as f64).collect();
            let max_lost = done.iter().map(|t| t.lost).max().unwrap_or(0);
            let kept = done.iter().filter(|t| t.session_survived).count();
            let met = p99 <= target && kept == done.len();
            all_met &= met;
            rows.push(json!({
                "dataplane": dataplane.name(),
                "fault": fault.name(),
                "trials": done.len(),
                "recovery_p50_s": round3(p50),
                "recovery_p99_s": round3(p99),
                "lost_datagrams_p50": median(&lost),
                "lost_datagrams_max": max_lost,
                "sessions_kept": kept,
                "target_recovery_p99_s": target,
                "met": met,
            }));
            md_rows.push_str(&format!(
                "| {} | {} | {} | {p50:.3} s | {p99:.3} s | {:.0} / {max_lost} | {kept} of {} | ≤ {target:.1} s, no session lost | {} |\n",
                dataplane.name(),
                fault.what(),
                done.len(),
                median(&lost),
                done.len(),
                verdict(met)
            ));
        }
    }
    let (bulk, rate) = replication()?;
    let bulk_met = bulk < BULK_TARGET_S;
    let out = json!({
        "quick": args.quick,
        "advert_interval_s": advert,
        "failovers": rows,
        "failovers_met": all_met,
        "bulk_transfer_flows": BULK_FLOWS,
        "bulk_transfer_s": round3(bulk),
        "bulk_transfer_target_s": BULK_TARGET_S,
        "bulk_transfer_met": bulk_met,
        "steady_state_flows": STEADY_FLOWS,
        "steady_state_flows_per_s": rate.round(),
    });
    let md = format!(
        "keepalived's advertisement interval (the shipped configuration): {advert} s; the \
         recovery target is three of them plus a second. A datagram stream of 1,000/s; \
         recovery: from the fault to the first datagram after the last one lost. A member \
         whose lazaret or keepalived dies still forwards until the neighbours follow the \
         addresses to the other member, so nothing is lost there.\n\n\
         | dataplane | fault | trials | recovery p50 | recovery p99 | datagrams lost p50 / max | sessions kept | target | |\n\
         |---|---|---|---|---|---|---|---|---|\n{md_rows}\n\
         | replication (XDP) | figure | target | |\n|---|---|---|---|\n\
         | bulk transfer of {BULK_FLOWS} flows to a member that rejoins | {bulk:.3} s | < {BULK_TARGET_S} s | {} |\n\
         | steady state: {STEADY_FLOWS} new flows until the standby has them all | {:.0} flows/s | | |\n",
        verdict(bulk_met),
        rate
    );
    args.write(&out, &md)?;
    eprintln!(
        "ha: bulk transfer of {BULK_FLOWS} flows {bulk:.3} s; steady state {rate:.0} flows/s"
    );
    Ok(())
}
