//! Flow replication between the two members of an active/standby pair (`docs/ha.md`), for
//! the XDP dataplane: the active member's flows exist on the standby when it takes over, so
//! a session that was open (an HL7 connection of days) carries on through a failover.
//! (nftables' flows are conntrack's, which conntrackd replicates.)
//!
//! pfsync is the model. What is sent, by the active member only, over the quarantine
//! replication's channel ([`super::hasync`]: the same key, the same checks on the sender's
//! address, replays, ABI and commit):
//! - a flow when it is new to the channel, when its state changes, and again every
//!   [`REFRESH`] while it carries traffic (so the copy does not time out);
//! - everything again, at once, after the channel (re)connects or the member becomes
//!   active: the bulk transfer of a peer that (re)joins;
//! - at most [`PER_ROUND`] flows each round, in batches of [`BATCH`]: new flows and changes
//!   first, refreshes after. A bound on the link and on the peer's work, not on
//!   correctness: what does not fit goes in the next round. Rounds are [`ROUND`] apart, or
//!   further for a table slow to read (at most a tenth of the thread's time reads).
//!
//! What the other member takes, if it is not active itself: each flow into the table it is
//! in on the sender (the established table's protection from floods of unconfirmed flows is
//! the same on both: only confirmed flows are taken into it), with its state, initiator and TCP ISN, its idle time on this member's
//! clock, and **no generation** ([`UNJUDGED`] names no policy). The datapath judges a flow
//! stamped under another generation again on its next packet, under this member's policy and
//! quarantines — the path every flow takes after a policy reload — and keeps it only if that
//! policy allows its initiating direction. So a replicated flow cannot open what the policy
//! does not, a quarantine decided meanwhile holds, and device records, cells and epochs are
//! this member's own. What is not taken is counted by outcome
//! (`lazaret_ha_flow_updates_total`).
//!
//! Flows that end are not sent: the copy expires by its own timeout, and a stale copy of a
//! closed flow is judged again like any other.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc, Arc,
    },
    time::{Duration, Instant},
};

use lazaret_abi::{
    flow_timeout_ns, FlowKey, FlowValue, FAMILY_V4, FAMILY_V6, FLOW_CLOSING, FLOW_ESTABLISHED,
    FLOW_NEW, FLOW_RESPONDED, NO_RULE,
};
use serde::{Deserialize, Serialize};

use super::hasync::Body;
use crate::{
    dataplane::xdp::{FlowTable, FlowTables},
    metrics::Metrics,
};

/// Between two rounds of the active member's sender.
pub const ROUND: Duration = Duration::from_secs(1);
/// Flows sent in one round at most: a bulk transfer of a full established table (100,000
/// flows is the target) goes in one round.
pub const PER_ROUND: usize = 100_000;
/// Flows in one message.
pub const BATCH: usize = 500;
/// A flow carrying traffic is sent again after this long, so its copy stays fresh (the
/// shortest timeout, of a half-open TCP flow, is 30 s).
pub const REFRESH: Duration = Duration::from_secs(10);

/// The generation a taken-over flow is stamped with: none the daemon ever enforces (they
/// count up from 1) and not an empty slot's 0, so the datapath judges the flow again on its
/// next packet whatever it enforces then.
pub const UNJUDGED: u64 = u64::MAX;

/// A flow as the channel carries it: the flow key's endpoints and what the datapath needs
/// to go on with the flow; nothing that names this member's devices or policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncedFlow {
    pub table: FlowTable,
    pub proto: u8,
    /// The flow key's endpoints, in its order (`a` is the lower).
    pub a: SocketAddr,
    pub b: SocketAddr,
    /// 0: `a` opened the flow; 1: `b` did.
    pub initiator: u8,
    /// `FLOW_*`.
    pub state: u8,
    pub resp_isn: u32,
    /// Milliseconds since its last packet, on the sender.
    pub idle_ms: u64,
}

/// Why a replicated flow was not taken (the metric's `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Written into this member's flow tables.
    Adopted,
    /// Not taken: this member is active (its own flows are the live ones), or the flow
    /// timed out on the way.
    Ignored,
    /// Not a flow the datapath could hold (mixed families, an unknown state, a key out of
    /// order): a bug or a hostile peer.
    Invalid,
    /// The kernel refused the write.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Sent,
        Outcome::Adopted,
        Outcome::Ignored,
        Outcome::Invalid,
        Outcome::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Adopted => "adopted",
            Outcome::Ignored => "ignored",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
        }
    }
}

/// The datapath's clock (CLOCK_MONOTONIC_COARSE, as `bpf_ktime_get_coarse_ns`), in ns.
pub fn datapath_now_ns() -> u64 {
    crate::clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

fn endpoint(family: u8, addr: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == FAMILY_V4 {
        IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    } else {
        IpAddr::from(*addr)
    };
    SocketAddr::new(ip, port)
}

/// An address as the flow key holds it: IPv4 in the first four bytes.
fn key_addr(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

impl SyncedFlow {
    /// `value` of `key` in `table`, read at `now` (datapath clock).
    pub fn of(table: FlowTable, key: &FlowKey, value: &FlowValue, now: u64) -> Self {
        SyncedFlow {
            table,
            proto: key.proto,
            a: endpoint(key.family, &key.addr_a, key.port_a),
            b: endpoint(key.family, &key.addr_b, key.port_b),
            initiator: value.initiator,
            state: value.state,
            resp_isn: value.resp_isn,
            idle_ms: now.saturating_sub(value.last_seen_ns) / 1_000_000,
        }
    }

    /// The entry to write on this member at `now` (datapath clock): judged under no
    /// generation, so the datapath judges it again on its next packet (module docs).
    pub fn entry(&self, now: u64) -> Result<(FlowTable, FlowKey, FlowValue), Outcome> {
        let ((addr_a, fam_a), (addr_b, fam_b)) = (key_addr(self.a.ip()), key_addr(self.b.ip()));
        let known_state = matches!(
            self.state,
            FLOW_NEW | FLOW_ESTABLISHED | FLOW_CLOSING | FLOW_RESPONDED
        );
        // The datapath finds a flow only under its normalized key: the lower endpoint first.
        let ordered = (addr_a, self.a.port()) <= (addr_b, self.b.port());
        // The established table holds confirmed flows only (a FIN makes one closing there).
        let table_ok =
            self.table == FlowTable::New || matches!(self.state, FLOW_ESTABLISHED | FLOW_CLOSING);
        if fam_a != fam_b || !known_state || self.initiator > 1 || !ordered || !table_ok {
            return Err(Outcome::Invalid);
        }
        let idle_ns = self.idle_ms.saturating_mul(1_000_000);
        if idle_ns > flow_timeout_ns(self.proto, self.state) {
            return Err(Outcome::Ignored);
        }
        let key = FlowKey {
            addr_a,
            addr_b,
            port_a: self.a.port(),
            port_b: self.b.port(),
            proto: self.proto,
            family: fam_a,
            echo: lazaret_abi::echo_of_flow(self.proto, self.initiator),
            _pad: 0,
        };
        let value = FlowValue {
            last_seen_ns: now.saturating_sub(idle_ns),
            generation: UNJUDGED,
            rule: NO_RULE,
            state: self.state,
            initiator: self.initiator,
            resp_isn: self.resp_isn,
            ..FlowValue::default()
        };
        Ok((self.table, key, value))
    }
}

/// What was last sent of a flow.
#[derive(Clone, Copy, Debug)]
struct Sent {
    state: u8,
    last_seen_ns: u64,
    /// When (datapath clock).
    at: u64,
}

/// The sender's memory of what the other member has: decides what a round sends.
#[derive(Debug, Default)]
pub struct Tracker {
    sent: HashMap<(FlowTable, FlowKey), Sent>,
}

impl Tracker {
    /// Forgets everything: the next round sends every flow (a peer that (re)joins).
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    /// What to send of `flows`, read at `now`: at most `limit`, new flows and state changes
    /// first, then flows that carried traffic and were last sent [`REFRESH`] ago or more.
    /// Timed-out flows are not sent; flows gone from the tables are forgotten.
    pub fn due(
        &mut self,
        flows: &[(FlowTable, FlowKey, FlowValue)],
        now: u64,
        limit: usize,
    ) -> Vec<SyncedFlow> {
        let live: std::collections::HashSet<_> = flows.iter().map(|(t, k, _)| (*t, *k)).collect();
        self.sent.retain(|k, _| live.contains(k));
        let refresh = u64::try_from(REFRESH.as_nanos()).unwrap_or(u64::MAX);
        let (mut changed, mut stale) = (Vec::new(), Vec::new());
        for (table, key, value) in flows {
            if now.saturating_sub(value.last_seen_ns) > flow_timeout_ns(key.proto, value.state) {
                continue;
            }
            match self.sent.get(&(*table, *key)) {
                Some(s) if s.state == value.state => {
                    if value.last_seen_ns > s.last_seen_ns && now.saturating_sub(s.at) >= refresh {
                        stale.push((*table, key, value));
                    }
                }
                _ => changed.push((*table, key, value)),
            }
        }
        changed
            .into_iter()
            .chain(stale)
            .take(limit)
            .map(|(table, key, value)| {
                let s = Sent {
                    state: value.state,
                    last_seen_ns: value.last_seen_ns,
                    at: now,
                };
                self.sent.insert((table, *key), s);
                SyncedFlow::of(table, key, value, now)
            })
            .collect()
    }
}

/// The controller's handle on the replication's thread. Whether this member is active and
/// whether the channel is up are flags the thread reads (never a queue a slow round could
/// fill); the other member's flows go through a bounded queue, and what does not fit is
/// dropped and counted (`failed`): the next round's refresh sends it again.
pub struct Handle {
    shared: Arc<Shared>,
    flows: std_mpsc::SyncSender<Vec<SyncedFlow>>,
}

#[derive(Default)]
struct Shared {
    active: AtomicBool,
    link: AtomicBool,
    /// Send everything at the next round, which starts at once.
    resend: AtomicBool,
}

/// Flow messages of the other member waiting for the thread at most.
const INBOUND_QUEUE: usize = 64;

impl Handle {
    /// Whether this member is active (only the active member sends).
    pub fn set_active(&self, active: bool) {
        if active && !self.shared.active.swap(true, Ordering::SeqCst) {
            self.resend();
        }
        self.shared.active.store(active, Ordering::SeqCst);
    }

    /// The channel to the other member connected (`true`: send everything) or was lost.
    pub fn set_link(&self, up: bool) {
        self.shared.link.store(up, Ordering::SeqCst);
        if up {
            self.resend();
        }
    }

    /// Flows the other member sent; false when the queue is full and they were dropped.
    pub fn take(&self, flows: Vec<SyncedFlow>) -> bool {
        self.flows.try_send(flows).is_ok()
    }

    fn resend(&self) {
        self.shared.resend.store(true, Ordering::SeqCst);
        // An empty batch wakes the thread for its round now (or it is awake already).
        let _ = self.flows.try_send(Vec::new());
    }
}

/// Starts the replication on a thread of its own (reading a large flow table takes a
/// syscall per entry: never on the controller's loop). `out` is the channel's queue for
/// flows; `rt` runs the waits on it.
pub fn spawn(
    tables: FlowTables,
    out: tokio::sync::mpsc::Sender<Body>,
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Handle,
) -> std::io::Result<Handle> {
    let (tx, rx) = std_mpsc::sync_channel(INBOUND_QUEUE);
    let shared = Arc::new(Shared::default());
    let thread = Thread {
        tables,
        out,
        metrics,
        rt,
        shared: shared.clone(),
        tracker: Tracker::default(),
        read_failed: false,
    };
    std::thread::Builder::new()
        .name("lazaret-flowsync".into())
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| thread.run(&rx));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("ha sync: the flow replication stopped (a bug, reported above); sessions will not survive a failover until lazaret restarts");
            }
        })?;
    Ok(Handle { shared, flows: tx })
}

/// How long a round may wait for room in the channel's queue before it gives up (the
/// channel is stuck or down; the next connection starts over with everything).
const SEND_WAIT: Duration = Duration::from_secs(2);
/// The share of the thread's time reading the tables may take: a table that takes longer
/// than a tenth of [`ROUND`] to read is read less often (100,000 flows: about every 3 s
/// here), so the replication never costs the gateway more than a tenth of a core.
const READ_SHARE: u32 = 10;

struct Thread {
    tables: FlowTables,
    out: tokio::sync::mpsc::Sender<Body>,
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    tracker: Tracker,
    read_failed: bool,
}

impl Thread {
    fn sending(&self) -> bool {
        self.shared.active.load(Ordering::SeqCst) && self.shared.link.load(Ordering::SeqCst)
    }

    fn run(mut self, rx: &std_mpsc::Receiver<Vec<SyncedFlow>>) {
        let mut next = Instant::now() + ROUND;
        loop {
            if self.shared.resend.swap(false, Ordering::SeqCst) {
                self.tracker.reset();
                next = Instant::now();
            }
            match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(flows) => {
                    let active = self.shared.active.load(Ordering::SeqCst);
                    adopt(&mut self.tables, &flows, active, &self.metrics);
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    let started = Instant::now();
                    if self.sending() {
                        self.round();
                    }
                    next = started + ROUND.max(started.elapsed() * READ_SHARE);
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Sends what is due, batch by batch, while this member is active and the channel up.
    fn round(&mut self) {
        let flows = match self.tables.read() {
            Ok(f) => {
                self.read_failed = false;
                f
            }
            Err(e) => {
                if !self.read_failed {
                    tracing::error!(error = %e, "ha sync: cannot read the flow tables; flows are not replicated until they can be");
                    self.read_failed = true;
                }
                return;
            }
        };
        let due = self.tracker.due(&flows, datapath_now_ns(), PER_ROUND);
        for batch in due.chunks(BATCH) {
            if !self.sending() {
                return;
            }
            let body = Body::Flows {
                flows: batch.to_vec(),
            };
            // The timeout is made inside the runtime's context (its timer), not before.
            let out = &self.out;
            let sent = self
                .rt
                .block_on(async { tokio::time::timeout(SEND_WAIT, out.send(body)).await });
            if !matches!(sent, Ok(Ok(()))) {
                // What was marked sent was not: everything again when the channel is back.
                self.tracker.reset();
                return;
            }
            self.metrics
                .ha_flow_updates(Outcome::Sent.label(), batch.len() as u64);
        }
    }
}

/// Writes the other member's flows, unless this member is active.
fn adopt(tables: &mut FlowTables, flows: &[SyncedFlow], active: bool, metrics: &Metrics) {
    if active {
        metrics.ha_flow_updates(Outcome::Ignored.label(), flows.len() as u64);
        return;
    }
    if flows.len() > BATCH {
        // Not what a member of this release sends: a bug or a hostile peer.
        metrics.ha_flow_updates(Outcome::Invalid.label(), flows.len() as u64);
        return;
    }
    let now = datapath_now_ns();
    let mut counts = [0u64; Outcome::ALL.len()];
    let mut failure = None;
    for f in flows {
        let outcome = match f.entry(now) {
            Ok((table, key, value)) => match tables.write(table, &key, &value) {
                Ok(()) => Outcome::Adopted,
                Err(e) => {
                    failure = Some(e);
                    Outcome::Failed
                }
            },
            Err(o) => o,
        };
        counts[outcome as usize] += 1;
    }
    if let Some(e) = failure {
        tracing::error!(error = %e, "ha sync: writing the other member's flows");
    }
    for (o, n) in Outcome::ALL.iter().zip(counts) {
        if n > 0 {
            metrics.ha_flow_updates(o.label(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_abi::{PROTO_TCP, PROTO_UDP};

    const S: u64 = 1_000_000_000;

    fn key(port_b: u16) -> FlowKey {
        FlowKey {
            addr_a: key_addr("10.10.0.20".parse().expect("ip")).0,
            addr_b: key_addr("10.20.0.11".parse().expect("ip")).0,
            port_a: 2575,
            port_b,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            echo: 0,
            _pad: 0,
        }
    }

    fn value(state: u8, last_seen_ns: u64) -> FlowValue {
        FlowValue {
            last_seen_ns,
            generation: 7,
            dev_a: 11,
            dev_b: 22,
            epoch_a: 3,
            rule: 5,
            state,
            initiator: 1,
            resp_isn: 99,
            cell_a: 4,
            ..FlowValue::default()
        }
    }

    #[test]
    fn a_flow_travels_without_this_members_stamps_and_is_judged_again() {
        let now = 5000 * S;
        let f = SyncedFlow::of(
            FlowTable::Established,
            &key(40000),
            &value(FLOW_ESTABLISHED, now - 3 * S),
            now,
        );
        assert_eq!(f.a, "10.10.0.20:2575".parse().expect("addr"));
        assert_eq!(f.idle_ms, 3000);
        // Written on a member whose clock reads otherwise: the same idle time there.
        let there = 90 * S;
        let (table, k, v) = f.entry(there).expect("a valid flow");
        assert_eq!((table, k), (FlowTable::Established, key(40000)));
        assert_eq!(v.last_seen_ns, there - 3 * S);
        assert_eq!(
            (v.state, v.initiator, v.resp_isn),
            (FLOW_ESTABLISHED, 1, 99)
        );
        // No generation, devices, cells, epochs or rule of the sender's.
        assert_eq!((v.generation, v.dev_a, v.dev_b), (UNJUDGED, 0, 0));
        assert_eq!((v.epoch_a, v.cell_a, v.rule), (0, 0, NO_RULE));
    }

    /// The key's echo byte is not sent: the other member derives it from the initiator,
    /// as the datapath made it (only a request opens an echo flow).
    #[test]
    fn an_echo_flow_arrives_keyed_by_its_requester() {
        let now = 5000 * S;
        for (initiator, echo) in [(0, lazaret_abi::ECHO_BY_A), (1, lazaret_abi::ECHO_BY_B)] {
            let k = FlowKey {
                port_a: 7,
                port_b: 7,
                proto: lazaret_abi::PROTO_ICMP,
                echo,
                ..key(0)
            };
            let v = FlowValue {
                initiator,
                ..value(FLOW_RESPONDED, now)
            };
            let f = SyncedFlow::of(FlowTable::New, &k, &v, now);
            let (_, there, _) = f.entry(now).expect("a valid flow");
            assert_eq!(there, k);
        }
    }

    #[test]
    fn what_the_datapath_could_not_hold_is_refused_and_a_timed_out_flow_ignored() {
        let now = 5000 * S;
        let good = SyncedFlow::of(FlowTable::New, &key(40000), &value(FLOW_NEW, now), now);
        let bad = |f: &dyn Fn(&mut SyncedFlow)| {
            let mut x = good.clone();
            f(&mut x);
            x.entry(now)
        };
        assert!(good.entry(now).is_ok());
        let invalid = Err(Outcome::Invalid);
        assert_eq!(bad(&|x| x.b = "[fd00::1]:80".parse().expect("a")), invalid);
        assert_eq!(bad(&|x| x.state = 9), invalid);
        assert_eq!(bad(&|x| x.initiator = 2), invalid);
        assert_eq!(bad(&|x| std::mem::swap(&mut x.a, &mut x.b)), invalid);
        // An unconfirmed flow claiming the established table.
        assert_eq!(bad(&|x| x.table = FlowTable::Established), invalid);
        // A half-open TCP flow idle for longer than its 30 s.
        assert_eq!(bad(&|x| x.idle_ms = 31_000), Err(Outcome::Ignored));
        // Within the UDP timeout: taken.
        assert!(bad(&|x| {
            x.proto = PROTO_UDP;
            x.idle_ms = 59_000;
        })
        .is_ok());
    }

    #[test]
    fn a_round_sends_new_and_changed_flows_first_then_refreshes_within_its_limit() {
        let mut t = Tracker::default();
        let now = 1000 * S;
        let mut flows = vec![
            (FlowTable::Established, key(1), value(FLOW_ESTABLISHED, now)),
            (FlowTable::New, key(2), value(FLOW_NEW, now)),
            // Timed out: never sent.
            (FlowTable::New, key(3), value(FLOW_NEW, now - 31 * S)),
        ];
        let sent = t.due(&flows, now, 10);
        assert_eq!(sent.len(), 2);
        // Nothing changed: nothing to send.
        assert!(t.due(&flows, now + S, 10).is_empty());
        // Flow 2 is confirmed; flow 1 carries traffic but was sent a second ago.
        flows[1].2.state = FLOW_ESTABLISHED;
        flows[0].2.last_seen_ns = now + S;
        let sent = t.due(&flows, now + S, 10);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].b.port(), 2);
        // Ten seconds on, flow 1 is refreshed; a new flow goes before it when the limit
        // allows only one.
        flows.push((FlowTable::New, key(4), value(FLOW_NEW, now + 11 * S)));
        let later = now + 11 * S;
        let sent = t.due(&flows, later, 1);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].b.port(), 4);
        let sent = t.due(&flows, later, 10);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].b.port(), 1);
        // A reset (the peer reconnected): everything live again.
        t.reset();
        assert_eq!(t.due(&flows, later, 10).len(), 3);
    }
}
