//! Device and interface families: quarantine state and events, deviations, devices by mode,
//! unknown devices, and the XDP attach state of each interface. Counts only: which device is
//! quarantined or unknown is the control API's to tell.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{
    labels::{
        self, ATTACH_MODES, DEVIATION_KINDS, DEVICE_MODES, OTHER, QUARANTINE_ACTIONS,
        SYSLOG_RESULTS, WEBHOOK_RESULTS,
    },
    register::{self, gauge_value},
};

pub(crate) struct DeviceFamilies {
    quarantined: IntGaugeVec,
    quarantines: IntCounterVec,
    deviations: IntCounterVec,
    devices: IntGaugeVec,
    unknown: IntGauge,
    unknown_discovered: IntCounter,
    interface_attached: IntGaugeVec,
    webhook: IntCounterVec,
    syslog: IntCounterVec,
}

impl DeviceFamilies {
    pub(crate) fn register(r: &Registry) -> register::Result<Self> {
        let f = DeviceFamilies {
            quarantined: register::gauge_vec(
                r,
                "lazaret_quarantined_devices",
                "Devices in quarantine now, by action.",
                &["action"],
            )?,
            quarantines: register::counter_vec(
                r,
                "lazaret_quarantines_total",
                "Devices put in quarantine (by threshold or by hand), by action.",
                &["action"],
            )?,
            deviations: register::counter_vec(
                r,
                "lazaret_deviations_total",
                "Deviations of managed devices from their policy, by kind.",
                &["kind"],
            )?,
            devices: register::gauge_vec(
                r,
                "lazaret_devices",
                "Managed devices in the enforcing policy, by mode.",
                &["mode"],
            )?,
            unknown: register::gauge(
                r,
                "lazaret_unknown_devices",
                "Devices seen on device-facing interfaces that are not in the inventory.",
            )?,
            unknown_discovered: register::counter(
                r,
                "lazaret_unknown_devices_discovered_total",
                "Unknown devices seen for the first time.",
            )?,
            interface_attached: register::gauge_vec(
                r,
                "lazaret_interface_attached",
                "1 if lazaret enforces on the interface in this mode, 0 if it should but does not.",
                &["interface", "mode"],
            )?,
            webhook: register::counter_vec(
                r,
                "lazaret_webhook_deliveries_total",
                "Quarantine and release events handed to the webhook, by result.",
                &["result"],
            )?,
            syslog: register::counter_vec(
                r,
                "lazaret_syslog_messages_total",
                "Events of the feed for the syslog collector, by result.",
                &["result"],
            )?,
        };
        for result in SYSLOG_RESULTS {
            f.syslog.with_label_values(&[result]);
        }
        for result in WEBHOOK_RESULTS {
            f.webhook.with_label_values(&[result]);
        }
        for action in QUARANTINE_ACTIONS {
            f.quarantined.with_label_values(&[action]);
            f.quarantines.with_label_values(&[action]);
        }
        for kind in DEVIATION_KINDS {
            f.deviations.with_label_values(&[kind]);
        }
        for mode in DEVICE_MODES {
            f.devices.with_label_values(&[mode]);
        }
        Ok(f)
    }

    /// `by_action` is the whole picture: actions it omits have no device in quarantine.
    pub(crate) fn set_quarantined(&self, by_action: &[(&str, u64)]) {
        let mut counts = QUARANTINE_ACTIONS.map(|action| (action, 0));
        let mut other = None;
        for (action, n) in by_action {
            match counts.iter_mut().find(|(a, _)| a == action) {
                Some((_, count)) => *count += n,
                None => {
                    labels::bounded("action", action, &QUARANTINE_ACTIONS);
                    *other.get_or_insert(0) += n;
                }
            }
        }
        for (action, n) in counts.into_iter().chain(other.map(|n| (OTHER, n))) {
            self.quarantined
                .with_label_values(&[action])
                .set(gauge_value(n));
        }
    }

    pub(crate) fn quarantine_event(&self, action: &str) {
        let action = labels::bounded("action", action, &QUARANTINE_ACTIONS);
        self.quarantines.with_label_values(&[action]).inc();
    }

    pub(crate) fn deviation(&self, kind: &str) {
        let kind = labels::bounded("kind", kind, &DEVIATION_KINDS);
        self.deviations.with_label_values(&[kind]).inc();
    }

    pub(crate) fn set_devices_by_mode(&self, enforce: u64, audit: u64, learn: u64) {
        for (mode, n) in DEVICE_MODES.into_iter().zip([enforce, audit, learn]) {
            self.devices.with_label_values(&[mode]).set(gauge_value(n));
        }
    }

    pub(crate) fn set_unknown_devices(&self, n: u64) {
        self.unknown.set(gauge_value(n));
    }

    pub(crate) fn webhook_delivery(&self, result: &str) {
        let result = labels::bounded("result", result, &WEBHOOK_RESULTS);
        self.webhook.with_label_values(&[result]).inc();
    }

    pub(crate) fn syslog_messages(&self, result: &str, n: u64) {
        let result = labels::bounded("result", result, &SYSLOG_RESULTS);
        self.syslog.with_label_values(&[result]).inc_by(n);
    }

    pub(crate) fn unknown_device_discovered(&self) {
        self.unknown_discovered.inc();
    }

    /// The caller holds the series lock: the interface's other modes are removed, so exactly
    /// one series says how it is attached.
    pub(crate) fn set_interface(&self, interface: &str, mode: &str, attached: bool) {
        let mode = labels::bounded("mode", mode, &ATTACH_MODES);
        self.remove_interface_except(interface, Some(mode));
        self.interface_attached
            .with_label_values(&[interface, mode])
            .set(i64::from(attached));
    }

    /// The caller holds the series lock.
    pub(crate) fn remove_interface(&self, interface: &str) {
        self.remove_interface_except(interface, None);
    }

    fn remove_interface_except(&self, interface: &str, keep: Option<&str>) {
        for mode in ATTACH_MODES.into_iter().chain([OTHER]) {
            if Some(mode) != keep {
                // Err means there was no such series: nothing to remove.
                let _ = self
                    .interface_attached
                    .remove_label_values(&[interface, mode]);
            }
        }
    }
}
