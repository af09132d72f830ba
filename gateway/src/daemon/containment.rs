//! Containment: which device to quarantine, with what, until when, and when a quarantine
//! expires — decided without I/O. The controller feeds it the enforcing policy's devices,
//! the datapath's events and the time, and carries out what it returns (the dataplanes'
//! device state, the state file, the audit log, metrics, events). Time is always an
//! argument: the unit tests below run the decisions through a whole incident without a
//! clock, a datapath or root.

use std::collections::{BTreeMap, HashMap};

use lazaret_abi::Event;

use super::{
    deviation::Detector,
    quarantine::{Action, Entry},
};
use crate::policy::{
    model::{QuarantineAction, QuarantineSettings},
    Compiled,
};

/// Who an automatic quarantine is by, in the audit log, the event and `quarantine list`.
pub const AUTOMATIC: &str = "lazaret (automatic)";
/// Who a TTL release is by.
pub const TTL: &str = "lazaret (ttl)";

/// A quarantine to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The device's inventory id and its datapath key.
    pub device: String,
    pub hash: u64,
    /// The list entry to record.
    pub entry: Entry,
}

/// The decisions' state: each enforcing device's settings and its deviation window.
#[derive(Debug, Default)]
pub struct Containment {
    detector: Detector,
    /// Device hash → (id, quarantine settings resolved by the policy: class, device and
    /// the life-critical default).
    devices: HashMap<u64, (String, QuarantineSettings)>,
}

impl Containment {
    /// A new generation enforces: its devices' settings apply from now on. Deviation
    /// windows of devices still in the policy carry over; those of devices gone are dropped.
    pub fn set_policy(&mut self, compiled: &Compiled) {
        self.devices = compiled
            .devices
            .iter()
            .map(|d| (d.hash, (d.id.clone(), d.quarantine)))
            .collect();
        let devices = &self.devices;
        self.detector.retain(|hash| devices.contains_key(&hash));
    }

    /// One datapath event at `now_ms` (a monotonic clock, for the deviation window) and
    /// `now_s` (Unix seconds, for the entry): a quarantine when the event takes its device
    /// across its threshold, unless `quarantined` already lists the device. `describe`
    /// names the event in the entry's reason.
    pub fn on_event(
        &mut self,
        ev: &Event,
        quarantined: &BTreeMap<String, Entry>,
        now_ms: u64,
        now_s: u64,
        describe: impl FnOnce(&Event) -> String,
    ) -> Option<Decision> {
        let (id, settings) = self.devices.get(&ev.device)?;
        if quarantined.contains_key(id) || !self.detector.observe(ev, now_ms, settings) {
            return None;
        }
        let reason = format!(
            "{} distinct denied flows within {} s (last: {})",
            settings.after,
            settings.within_s,
            describe(ev)
        );
        Some(Decision {
            device: id.clone(),
            hash: ev.device,
            entry: entry(
                action(settings.action),
                AUTOMATIC,
                &reason,
                settings.ttl_s,
                now_s,
            ),
        })
    }

    /// A device released (or quarantined by hand): its deviations so far no longer count.
    pub fn forget(&mut self, hash: u64) {
        self.detector.forget(hash);
    }
}

/// The entry of a quarantine decided at `now_s`, lasting `ttl_s` seconds (0: until
/// released).
pub fn entry(action: Action, by: &str, reason: &str, ttl_s: u64, now_s: u64) -> Entry {
    Entry {
        action,
        reason: reason.to_string(),
        by: by.to_string(),
        since: now_s,
        until: (ttl_s > 0).then(|| now_s.saturating_add(ttl_s)),
        recovered: false,
    }
}

/// The devices whose quarantine has expired at `now_s`.
pub fn expired(quarantined: &BTreeMap<String, Entry>, now_s: u64) -> Vec<String> {
    quarantined
        .iter()
        .filter(|(_, e)| e.until.is_some_and(|u| u <= now_s))
        .map(|(d, _)| d.clone())
        .collect()
}

/// The policy's quarantine action as a quarantine.
pub fn action(a: QuarantineAction) -> Action {
    match a {
        QuarantineAction::Alert => Action::Alert,
        QuarantineAction::Restrict => Action::Restrict,
        QuarantineAction::Isolate => Action::Isolate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{build, BASE};
    use lazaret_abi::{EVENT_DENY, FAMILY_V4};

    /// A pump that isolates after 3 distinct denied flows within a minute, for 10 minutes,
    /// and a life-critical ventilator with the class's default action.
    const DEVICES: &str = r#"
[classes.infusion]
workflows = ["sync"]
quarantine = { after = 3, within = "1m", action = "isolate", ttl = "10m" }

[classes.vent]
workflows = ["sync"]
quarantine = { after = 2, within = "1m" }

[[devices]]
id = "pump-1"
class = "infusion"
mac = "00:1a:2b:00:00:01"
ipv4 = "10.20.0.11"

[[devices]]
id = "vent-1"
class = "vent"
mac = "00:1a:2b:00:00:02"
ipv4 = "10.20.0.12"
life_critical = true
"#;

    fn policy() -> (Containment, Compiled) {
        let (_, compiled) =
            build(&[("site.toml", BASE), ("devices.toml", DEVICES)]).expect("valid policy");
        let mut c = Containment::default();
        c.set_policy(&compiled);
        (c, compiled)
    }

    fn hash(compiled: &Compiled, id: &str) -> u64 {
        compiled.device(id).expect("device").hash
    }

    /// A denied flow of `device` to 10.10.0.`peer`, port `port`.
    fn deny(device: u64, peer: u8, port: u16) -> Event {
        let mut ev = Event {
            device,
            kind: EVENT_DENY,
            reason: lazaret_abi::Reason::DenyNoRule as u8,
            family: FAMILY_V4,
            proto: 6,
            dst_port: port,
            dir: lazaret_abi::DIR_DEVICE_INIT,
            ..Event::default()
        };
        ev.dst[..4].copy_from_slice(&[10, 10, 0, peer]);
        ev
    }

    fn named(_: &Event) -> String {
        "a denied flow".into()
    }

    #[test]
    fn the_threshold_flow_quarantines_with_the_class_action_and_ttl() {
        let (mut c, compiled) = policy();
        let pump = hash(&compiled, "pump-1");
        let none = BTreeMap::new();
        assert_eq!(c.on_event(&deny(pump, 1, 23), &none, 0, 1000, named), None);
        assert_eq!(c.on_event(&deny(pump, 1, 23), &none, 5, 1000, named), None);
        assert_eq!(c.on_event(&deny(pump, 2, 25), &none, 10, 1000, named), None);
        let d = c
            .on_event(&deny(pump, 3, 80), &none, 20, 1000, named)
            .expect("the third distinct flow");
        assert_eq!((d.device.as_str(), d.hash), ("pump-1", pump));
        assert_eq!(d.entry.action, Action::Isolate);
        assert_eq!(d.entry.by, AUTOMATIC);
        assert_eq!((d.entry.since, d.entry.until), (1000, Some(1600)));
        assert!(
            d.entry
                .reason
                .contains("3 distinct denied flows within 60 s")
                && d.entry.reason.contains("a denied flow"),
            "{}",
            d.entry.reason
        );
    }

    #[test]
    fn a_quarantined_device_is_not_quarantined_again() {
        let (mut c, compiled) = policy();
        let pump = hash(&compiled, "pump-1");
        let listed: BTreeMap<String, Entry> = [(
            "pump-1".to_string(),
            entry(Action::Restrict, "alice", "by hand", 0, 5),
        )]
        .into();
        for (t, port) in [22u16, 23, 25, 80, 443].into_iter().enumerate() {
            assert_eq!(
                c.on_event(&deny(pump, 1, port), &listed, t as u64, 9, named),
                None
            );
        }
    }

    #[test]
    fn a_life_critical_device_is_alerted_not_cut_off() {
        let (mut c, compiled) = policy();
        let vent = hash(&compiled, "vent-1");
        let none = BTreeMap::new();
        assert_eq!(c.on_event(&deny(vent, 1, 23), &none, 0, 0, named), None);
        let d = c
            .on_event(&deny(vent, 2, 23), &none, 1, 0, named)
            .expect("the second distinct flow");
        assert_eq!(d.entry.action, Action::Alert, "life-critical default");
        let ttl = compiled.device("vent-1").expect("vent").quarantine.ttl_s;
        assert_eq!(d.entry.until, Some(ttl), "the site's default TTL");
    }

    #[test]
    fn a_ttl_expires_at_its_second() {
        let listed: BTreeMap<String, Entry> = [
            (
                "pump-1".to_string(),
                entry(Action::Isolate, AUTOMATIC, "x", 600, 1000),
            ),
            (
                "vent-1".to_string(),
                entry(Action::Alert, AUTOMATIC, "x", 0, 1000),
            ),
        ]
        .into();
        assert!(expired(&listed, 1599).is_empty());
        assert_eq!(expired(&listed, 1600), ["pump-1"]);
        assert_eq!(expired(&listed, u64::MAX), ["pump-1"], "no TTL: never");
    }

    #[test]
    fn a_release_starts_the_count_again_and_old_deviations_leave_the_window() {
        let (mut c, compiled) = policy();
        let pump = hash(&compiled, "pump-1");
        let none = BTreeMap::new();
        c.on_event(&deny(pump, 1, 23), &none, 0, 0, named);
        c.on_event(&deny(pump, 2, 23), &none, 0, 0, named);
        c.forget(pump);
        assert_eq!(c.on_event(&deny(pump, 3, 23), &none, 1, 0, named), None);
        // A minute later the first two are out of the window.
        c.on_event(&deny(pump, 4, 23), &none, 61_000, 0, named);
        assert_eq!(
            c.on_event(&deny(pump, 5, 23), &none, 61_500, 0, named),
            None,
            "two distinct flows within the minute, not three"
        );
        assert!(c
            .on_event(&deny(pump, 6, 23), &none, 62_000, 0, named)
            .is_some());
    }

    #[test]
    fn devices_not_in_the_policy_and_gone_from_it_never_trigger() {
        let (mut c, compiled) = policy();
        let pump = hash(&compiled, "pump-1");
        let none = BTreeMap::new();
        for peer in 1..10 {
            assert_eq!(c.on_event(&deny(0, peer, 23), &none, 0, 0, named), None);
            assert_eq!(c.on_event(&deny(12345, peer, 23), &none, 0, 0, named), None);
        }
        c.on_event(&deny(pump, 1, 23), &none, 0, 0, named);
        c.on_event(&deny(pump, 2, 23), &none, 0, 0, named);
        // The pump leaves the policy: nothing it did counts, even if it comes back.
        let (_, without) = build(&[("site.toml", BASE)]).expect("valid policy");
        c.set_policy(&without);
        assert_eq!(c.on_event(&deny(pump, 3, 23), &none, 1, 0, named), None);
        c.set_policy(&compiled);
        assert_eq!(c.on_event(&deny(pump, 3, 23), &none, 2, 0, named), None);
    }
}
