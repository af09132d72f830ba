//! Datapath families: absolute readings of the XDP program's maps turned into Prometheus
//! counters and gauges. Pure bookkeeping: the caller reads the maps, nothing here touches them.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use lazaret_abi::{
    stats_index, Reason, EV_STAT_FLOW_INSERT_FAILED, EV_STAT_RATE_LIMITED, EV_STAT_RINGBUF_FULL,
    EV_STAT_SENT,
};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{
    labels::{self, DROP, PASS, SIDES},
    register::{self, gauge_value},
};
use crate::dataplane::xdp::DeviceCounterTotals;

/// One reading of the datapath's counters, all absolute (as the maps hold them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathSnapshot {
    /// Packets by reason and side, indexed by [`lazaret_abi::stats_index`], of length
    /// [`lazaret_abi::STATS_LEN`]. Empty means "not read this time": those counters stay as
    /// they are.
    pub packets: Vec<u64>,
    /// `LZ_EV_STATS`, indexed by `EV_STAT_SENT`, `EV_STAT_RATE_LIMITED`,
    /// `EV_STAT_RINGBUF_FULL`, `EV_STAT_FLOW_INSERT_FAILED`. All zero means "not read this
    /// time" (or nothing counted yet, which amounts to the same): the counters stay as
    /// they are.
    pub event_stats: [u64; 4],
    /// Events read from the ring buffer but dropped by the controller (unknown version).
    pub events_undecodable: u64,
    /// Entries in both flow tables (new and established).
    pub flows_active: u64,
    /// (map name, entries, capacity) for each map whose pressure is watched.
    pub map_entries: Vec<(&'static str, u64, u64)>,
    /// Per-device counters summed by device class.
    pub class_packets: Vec<(String, DeviceCounterTotals)>,
}

/// The datapath families and the last readings they advanced from.
pub(crate) struct DatapathFamilies {
    packets: IntCounterVec,
    class_packets: IntCounterVec,
    class_bytes: IntCounterVec,
    flows_active: IntGauge,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    events: [IntCounter; 4],
    flow_insert_failures: IntCounter,
    last: Mutex<Baseline>,
}

/// The readings of the previous [`DatapathFamilies::observe`].
#[derive(Default)]
struct Baseline {
    packets: Vec<u64>,
    event_stats: [u64; 4],
    events_undecodable: u64,
    /// Kept for classes that vanish from a reading: a class that comes back is compared with
    /// its old sums rather than counted from zero.
    classes: HashMap<String, DeviceCounterTotals>,
}

/// How far a counter advances from reading `before` to reading `now`. After the maps were
/// recreated (an upgrade) every map counts from zero again: the reading is the advance.
/// Otherwise a lower reading only happens for sums over a changing set (a class whose device
/// left it): the counter holds still rather than count the rest of the set again.
fn advance(before: u64, now: u64, recreated: bool) -> u64 {
    if recreated {
        now
    } else {
        now.saturating_sub(before)
    }
}

impl DatapathFamilies {
    pub(crate) fn register(r: &Registry) -> register::Result<Self> {
        let packets = register::counter_vec(
            r,
            "lazaret_packets_total",
            "Packets judged by the XDP program, by reason, interface side and verdict.",
            &["reason", "side", "verdict"],
        )?;
        // Every (reason, side) series exists from the start, so increase() sees the first packet.
        for reason in Reason::ALL {
            for (_, side) in SIDES {
                packets.with_label_values(&[reason.name(), side, labels::verdict(reason.passes())]);
            }
        }
        let events = register::counter_vec(
            r,
            "lazaret_events_total",
            "Datapath events by outcome; every outcome but delivered is a lost event.",
            &["outcome"],
        )?;
        let events = labels::EVENT_OUTCOMES.map(|outcome| events.with_label_values(&[outcome]));
        Ok(DatapathFamilies {
            packets,
            class_packets: register::counter_vec(
                r,
                "lazaret_class_packets_total",
                "Packets of managed devices, summed by device class and verdict.",
                &["class", "verdict"],
            )?,
            class_bytes: register::counter_vec(
                r,
                "lazaret_class_bytes_total",
                "Bytes of managed devices' packets, summed by device class and verdict.",
                &["class", "verdict"],
            )?,
            flows_active: register::gauge(
                r,
                "lazaret_flows_active",
                "Entries in the datapath's flow tables (new and established).",
            )?,
            map_entries: register::gauge_vec(
                r,
                "lazaret_map_entries",
                "Entries in a datapath map.",
                &["map"],
            )?,
            map_capacity: register::gauge_vec(
                r,
                "lazaret_map_capacity",
                "Maximum entries of a datapath map.",
                &["map"],
            )?,
            events,
            flow_insert_failures: register::counter(
                r,
                "lazaret_flow_insert_failures_total",
                "Allowed new flows the XDP flow table refused to insert: admitted but untracked, so their replies are dropped as deny_no_flow.",
            )?,
            last: Mutex::new(Baseline::default()),
        })
    }

    /// Advances every counter by the difference with the previous reading.
    pub(crate) fn observe(&self, snap: &DatapathSnapshot) {
        // The baseline is plain numbers: one left by a panicking thread is still consistent.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let events_read = snap.event_stats != [0; 4];
        // Every map is created with the program: a drop in any global counter (they only grow
        // while their map lives) means all of them were recreated.
        let dropped = |now: &[u64], before: &[u64]| now.iter().zip(before).any(|(n, b)| n < b);
        let recreated = dropped(&snap.packets, &last.packets)
            || (events_read && dropped(&snap.event_stats, &last.event_stats));
        if !snap.packets.is_empty() {
            self.observe_packets(&snap.packets, &last.packets, recreated);
            last.packets.clone_from(&snap.packets);
        }
        if events_read {
            // The event counts on their own: nftables' come from this process's nflog reader,
            // not from the table, so a table restored (its packet counters back at zero) has
            // not reset them, and taking them for new would count them twice.
            let events_recreated = dropped(&snap.event_stats, &last.event_stats);
            self.observe_events(snap, &last, events_recreated);
            last.event_stats = snap.event_stats;
            last.events_undecodable = snap.events_undecodable;
        }
        for (class, now) in &snap.class_packets {
            let before = last.classes.get(class).copied();
            self.observe_class(class, before, now, recreated);
            last.classes.insert(class.clone(), *now);
        }
        self.flows_active.set(gauge_value(snap.flows_active));
        for (map, entries, capacity) in &snap.map_entries {
            self.map_entries
                .with_label_values(&[map])
                .set(gauge_value(*entries));
            self.map_capacity
                .with_label_values(&[map])
                .set(gauge_value(*capacity));
        }
    }

    fn observe_packets(&self, now: &[u64], before: &[u64], recreated: bool) {
        // Slots past Reason::ALL (up to `STATS_LEN`) are reserved; this program never writes them.
        for reason in Reason::ALL {
            for (side, side_name) in SIDES {
                let i = stats_index(reason, side) as usize;
                let step = advance(
                    before.get(i).copied().unwrap_or(0),
                    now.get(i).copied().unwrap_or(0),
                    recreated,
                );
                self.packets
                    .with_label_values(&[
                        reason.name(),
                        side_name,
                        labels::verdict(reason.passes()),
                    ])
                    .inc_by(step);
            }
        }
    }

    fn observe_events(&self, snap: &DatapathSnapshot, last: &Baseline, recreated: bool) {
        let stat = |i: u32| {
            let i = i as usize;
            advance(last.event_stats[i], snap.event_stats[i], recreated)
        };
        // Counted by this process, from zero at its start: it never falls.
        let undecodable = snap
            .events_undecodable
            .saturating_sub(last.events_undecodable);
        let [delivered, rate_limited, ring_full, undecodable_total] = &self.events;
        // Undecodable events were sent into the ring too; keep the outcomes disjoint.
        delivered.inc_by(stat(EV_STAT_SENT).saturating_sub(undecodable));
        rate_limited.inc_by(stat(EV_STAT_RATE_LIMITED));
        ring_full.inc_by(stat(EV_STAT_RINGBUF_FULL));
        undecodable_total.inc_by(undecodable);
        self.flow_insert_failures
            .inc_by(stat(EV_STAT_FLOW_INSERT_FAILED));
    }

    fn observe_class(
        &self,
        class: &str,
        before: Option<DeviceCounterTotals>,
        now: &DeviceCounterTotals,
        recreated: bool,
    ) {
        let before = before.unwrap_or_default();
        let series = [
            (
                PASS,
                before.allowed_packets,
                now.allowed_packets,
                &self.class_packets,
            ),
            (
                DROP,
                before.denied_packets,
                now.denied_packets,
                &self.class_packets,
            ),
            (
                PASS,
                before.allowed_bytes,
                now.allowed_bytes,
                &self.class_bytes,
            ),
            (
                DROP,
                before.denied_bytes,
                now.denied_bytes,
                &self.class_bytes,
            ),
        ];
        for (verdict, before, now, family) in series {
            family
                .with_label_values(&[class, verdict])
                .inc_by(advance(before, now, recreated));
        }
    }
}
