//! Whether the daemon is working, not merely running: the event loop's heartbeat and the
//! last time it read the datapath's counters (a stalled loop stops both, and Prometheus
//! sees the timestamps fall behind), persistence failures, the last-known-good policy, and
//! tampering with the datapath. `/healthz` reads the heartbeat too.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{Gauge, IntCounterVec, IntGauge, Registry};

use super::register;

/// The loop is stalled when its heartbeat is older than this (it beats every second).
pub const STALLED_AFTER_MS: u64 = 5_000;

pub(crate) struct HealthFamilies {
    heartbeat: Gauge,
    counters_read: Gauge,
    persist_failures: IntCounterVec,
    persisted: IntGauge,
    last_known_good: IntGauge,
    tamper: IntCounterVec,
    held: IntGauge,
    /// Unix milliseconds of the last heartbeat, for `/healthz` (0: none yet).
    heartbeat_ms: AtomicU64,
}

/// What the state directory failed to keep.
pub const PERSISTED: [&str; 6] = [
    "quarantine",
    "learned",
    "unknown_devices",
    "port_pins",
    "last_known_good",
    "generation",
];

impl HealthFamilies {
    pub(crate) fn register(r: &Registry) -> register::Result<Self> {
        let persist_failures = register::counter_vec(
            r,
            "lazaret_state_persist_failures_total",
            "Writes of the state directory that failed, by what was written; the dataplanes enforced regardless.",
            &["state"],
        )?;
        for s in PERSISTED {
            persist_failures.with_label_values(&[s]);
        }
        let tamper = register::counter_vec(
            r,
            "lazaret_datapath_tamper_total",
            "Times lazaret found its enforcement changed behind its back on an interface (its XDP program detached or replaced, its nftables tables deleted), and what it did.",
            &["interface", "kind"],
        )?;
        let persisted = register::gauge(
            r,
            "lazaret_state_persisted",
            "1 if the last write of every kind of state succeeded, 0 while one is failing (what is enforced is not what survives a reboot).",
        )?;
        persisted.set(1);
        Ok(HealthFamilies {
            heartbeat: register::float_gauge(
                r,
                "lazaret_loop_heartbeat_timestamp_seconds",
                "Unix time the daemon's event loop last ran its once-a-second tick; behind by more than a few seconds, the loop is stalled.",
            )?,
            counters_read: register::float_gauge(
                r,
                "lazaret_datapath_counters_read_timestamp_seconds",
                "Unix time the datapath's counters were last read into these metrics.",
            )?,
            persist_failures,
            persisted,
            last_known_good: register::gauge(
                r,
                "lazaret_policy_last_known_good",
                "1 if the enforcing generation is the last-known-good policy kept in the state directory, because the policy repository was invalid or unreadable at start.",
            )?,
            tamper,
            held: register::gauge(
                r,
                "lazaret_interfaces_held_closed",
                "Interfaces lazaret holds closed (everything in and out dropped): configured but missing, detached and not restorable, or every device-side interface while there is no policy at all.",
            )?,
            heartbeat_ms: AtomicU64::new(0),
        })
    }

    pub(crate) fn heartbeat(&self, unix_ms: u64) {
        self.heartbeat.set(unix_ms as f64 / 1000.0);
        self.heartbeat_ms.store(unix_ms, Ordering::Relaxed);
    }

    pub(crate) fn heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn counters_read(&self, unix_s: f64) {
        self.counters_read.set(unix_s);
    }

    pub(crate) fn persist(&self, state: &str, ok: bool, all_ok: bool) {
        if !ok {
            self.persist_failures.with_label_values(&[state]).inc();
        }
        self.persisted.set(i64::from(all_ok));
    }

    pub(crate) fn last_known_good(&self, on: bool) {
        self.last_known_good.set(i64::from(on));
    }

    pub(crate) fn held(&self, n: usize) {
        self.held.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn tamper(&self, interface: &str, kind: &str) {
        self.tamper.with_label_values(&[interface, kind]).inc();
    }
}
