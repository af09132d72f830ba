//! Policy reload families: attempts, results, failures by reason, duration, and which
//! generation (and git commit) is enforcing.

use std::time::Duration;

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{
    labels::{ReloadFailure, FAILURE, SUCCESS},
    register,
};

/// Reload duration buckets, in seconds: the targets are 50 ms for a one-device change and 2 s
/// for 10,000 devices, so the buckets are finest around those two.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

pub(crate) struct ReloadFamilies {
    attempts: IntCounter,
    results: IntCounterVec,
    failures: IntCounterVec,
    duration: Histogram,
    last_success: Gauge,
    last_failed: IntGauge,
    info: IntGaugeVec,
    gateway: IntGaugeVec,
    ha_role: IntGaugeVec,
    ha_standby_decisions: IntCounter,
    ha_sync_up: IntGauge,
    ha_sync_refused: IntCounterVec,
    ha_flow_updates: IntCounterVec,
    exceptions_open: IntGauge,
    exceptions_overdue: IntGauge,
    exception_transitions: IntCounterVec,
}

impl ReloadFamilies {
    pub(crate) fn register(r: &Registry) -> register::Result<Self> {
        let results = register::counter_vec(
            r,
            "lazaret_policy_reloads_total",
            "Completed policy reloads, by result.",
            &["result"],
        )?;
        let failures = register::counter_vec(
            r,
            "lazaret_policy_reload_failures_total",
            "Failed policy reloads, by reason; the previous generation kept enforcing.",
            &["reason"],
        )?;
        for result in [SUCCESS, FAILURE] {
            results.with_label_values(&[result]);
        }
        for reason in ReloadFailure::ALL.map(ReloadFailure::label) {
            failures.with_label_values(&[reason]);
        }
        let ha_sync_refused = register::counter_vec(
            r,
            "lazaret_ha_sync_refused_total",
            "Connections and messages of the pair's quarantine replication refused, by reason.",
            &["reason"],
        )?;
        for reason in crate::daemon::hasync::Refusal::ALL.map(crate::daemon::hasync::Refusal::label)
        {
            ha_sync_refused.with_label_values(&[reason]);
        }
        let ha_flow_updates = register::counter_vec(
            r,
            "lazaret_ha_flow_updates_total",
            "Flows of the pair's flow replication, by outcome (sent, adopted, ignored, invalid, failed).",
            &["outcome"],
        )?;
        for o in crate::daemon::flowsync::Outcome::ALL {
            ha_flow_updates.with_label_values(&[o.label()]);
        }
        let exception_transitions = register::counter_vec(
            r,
            "lazaret_exception_transitions_total",
            "Service windows that began (opened) or stopped (closed) being enforced.",
            &["transition"],
        )?;
        for t in ["opened", "closed"] {
            exception_transitions.with_label_values(&[t]);
        }
        Ok(ReloadFamilies {
            exceptions_open: register::gauge(
                r,
                "lazaret_exceptions_open",
                "Service windows ([exceptions.*]) open in the enforcing generation.",
            )?,
            exceptions_overdue: register::gauge(
                r,
                "lazaret_exceptions_overdue",
                "Service windows past their end that the enforcing generation still has open.",
            )?,
            exception_transitions,
            attempts: register::counter(
                r,
                "lazaret_policy_reload_attempts_total",
                "Policy reloads started (file change, SIGHUP or startup).",
            )?,
            results,
            failures,
            duration: register::histogram(
                r,
                "lazaret_policy_reload_duration_seconds",
                "Time from the start of a reload to the new generation enforcing, or to failure.",
                &DURATION_BUCKETS,
            )?,
            last_success: register::float_gauge(
                r,
                "lazaret_policy_last_success_timestamp_seconds",
                "Unix time of the last successful reload (0: none since start).",
            )?,
            last_failed: register::gauge(
                r,
                "lazaret_policy_last_reload_failed",
                "1 if the last reload failed (the previous generation is still enforcing), else 0.",
            )?,
            info: register::gauge_vec(
                r,
                "lazaret_policy_info",
                "The policy generation enforcing and its git commit (empty if none); always 1.",
                &["generation", "commit"],
            )?,
            gateway: register::gauge_vec(
                r,
                "lazaret_gateway_info",
                "The site (policy repository) and gateway this daemon enforces for, and its host among the gateway's members; always 1.",
                &["site", "gateway", "member"],
            )?,
            ha_role: register::gauge_vec(
                r,
                "lazaret_ha_role",
                "This host's role in an active/standby pair (active, standby) or standalone; always 1.",
                &["role"],
            )?,
            ha_standby_decisions: register::counter(
                r,
                "lazaret_ha_standby_decisions_total",
                "Automatic quarantines decided while standby and not carried out.",
            )?,
            ha_sync_up: register::gauge(
                r,
                "lazaret_ha_sync_up",
                "1 while this member's quarantine replication is connected to the other member, else 0.",
            )?,
            ha_sync_refused,
            ha_flow_updates,
        })
    }

    /// The caller holds the series lock.
    pub(crate) fn set_ha_role(&self, role: &str) {
        self.ha_role.reset();
        self.ha_role.with_label_values(&[role]).set(1);
    }

    pub(crate) fn exceptions(&self, open: usize, opened: usize, closed: usize) {
        self.exceptions_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        self.exception_transitions
            .with_label_values(&["opened"])
            .inc_by(n(opened));
        self.exception_transitions
            .with_label_values(&["closed"])
            .inc_by(n(closed));
    }

    pub(crate) fn exceptions_overdue(&self, n: usize) {
        self.exceptions_overdue
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn standby_decision(&self) {
        self.ha_standby_decisions.inc();
    }

    pub(crate) fn set_ha_sync_up(&self, up: bool) {
        self.ha_sync_up.set(i64::from(up));
    }

    pub(crate) fn ha_sync_refused(&self, reason: &str) {
        self.ha_sync_refused.with_label_values(&[reason]).inc();
    }

    pub(crate) fn ha_flow_updates(&self, outcome: &str, n: u64) {
        self.ha_flow_updates.with_label_values(&[outcome]).inc_by(n);
    }

    /// The caller holds the series lock.
    pub(crate) fn set_gateway(&self, site: &str, gateway: &str, member: &str) {
        self.gateway.reset();
        self.gateway
            .with_label_values(&[site, gateway, member])
            .set(1);
    }

    pub(crate) fn attempted(&self) {
        self.attempts.inc();
    }

    pub(crate) fn failed(&self, duration: Duration, reason: ReloadFailure) {
        self.results.with_label_values(&[FAILURE]).inc();
        self.failures.with_label_values(&[reason.label()]).inc();
        self.duration.observe(duration.as_secs_f64());
        self.last_failed.set(1);
    }

    /// The caller holds the series lock: `lazaret_policy_info` is replaced, not added to.
    pub(crate) fn succeeded(
        &self,
        duration: Duration,
        generation: u64,
        commit: Option<&str>,
        unix_time_s: f64,
    ) {
        self.results.with_label_values(&[SUCCESS]).inc();
        self.duration.observe(duration.as_secs_f64());
        self.last_success.set(unix_time_s);
        self.last_failed.set(0);
        self.info.reset();
        self.info
            .with_label_values(&[generation.to_string().as_str(), commit.unwrap_or("")])
            .set(1);
    }
}
