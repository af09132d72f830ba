//! Deviation detection: turns the datapath's events into quarantine decisions.
//!
//! A deviation is a flow a managed device opens or receives that its policy does not allow,
//! a spoofing attempt, or a rogue DHCP server / router advertisement from its port. Repeated
//! packets of one denied flow count once; distinct denied flows count separately. When a
//! device reaches `after` distinct deviations within `within` seconds, its configured action
//! fires once (the window restarts). Pure: time is passed in, so tests need no clock.

use std::collections::{HashMap, HashSet, VecDeque};

use lazaret_abi::{Event, EVENT_DENY, EVENT_ROGUE, EVENT_SPOOF, FAMILY_V4};

use crate::policy::model::QuarantineSettings;

/// What makes two denied packets "the same flow".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Signature {
    kind: u8,
    proto: u8,
    peer: [u8; 16],
    port: u16,
}

#[derive(Debug, Default)]
struct Window {
    seen: VecDeque<(u64, Signature)>,
    distinct: HashSet<Signature>,
}

/// Per-device sliding windows of distinct deviations.
#[derive(Debug, Default)]
pub struct Detector {
    windows: HashMap<u64, Window>,
}

/// The label of a deviation event for metrics, or None if the event is not a deviation.
pub fn kind_label(ev: &Event) -> Option<&'static str> {
    match ev.kind {
        EVENT_DENY => Some("deny"),
        EVENT_SPOOF => Some("spoof"),
        EVENT_ROGUE => Some(if ev.reason == lazaret_abi::Reason::DenyRogueDhcp as u8 {
            "rogue_dhcp"
        } else {
            "rogue_ra"
        }),
        lazaret_abi::EVENT_UNKNOWN => Some("unknown"),
        _ => None,
    }
}

impl Detector {
    /// Records one event; returns true when the device crosses its threshold.
    pub fn observe(&mut self, ev: &Event, now_ms: u64, settings: &QuarantineSettings) -> bool {
        // Drops because the device is quarantined are the quarantine working, not new
        // deviations; one reported late (after a release) must not count towards the next.
        if ev.device == 0
            || !matches!(ev.kind, EVENT_DENY | EVENT_SPOOF | EVENT_ROGUE)
            || ev.reason == lazaret_abi::Reason::DenyQuarantine as u8
            || settings.after == 0
        {
            return false;
        }
        // The other end of the flow: the peer address and the service port.
        let device_is_src = ev.dir == lazaret_abi::DIR_DEVICE_INIT;
        let mut peer = if device_is_src { ev.dst } else { ev.src };
        if ev.family == FAMILY_V4 {
            peer[4..].fill(0);
        }
        let sig = Signature {
            kind: ev.kind,
            proto: ev.proto,
            peer,
            port: ev.dst_port,
        };
        let w = self.windows.entry(ev.device).or_default();
        let horizon = now_ms.saturating_sub(settings.within_s.saturating_mul(1000));
        while let Some((t, s)) = w.seen.front().copied() {
            if t >= horizon {
                break;
            }
            w.seen.pop_front();
            if !w.seen.iter().any(|(_, x)| *x == s) {
                w.distinct.remove(&s);
            }
        }
        if w.distinct.insert(sig) {
            w.seen.push_back((now_ms, sig));
        }
        if w.distinct.len() as u64 >= u64::from(settings.after) {
            self.windows.remove(&ev.device);
            return true;
        }
        false
    }

    /// Forgets a device (released, or gone from the policy).
    pub fn forget(&mut self, device: u64) {
        self.windows.remove(&device);
    }

    /// Keeps the windows of the devices `keep` says are still in the policy.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.windows.retain(|device, _| keep(*device));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::QuarantineAction;

    fn settings(after: u32, within_s: u64) -> QuarantineSettings {
        QuarantineSettings {
            after,
            within_s,
            action: QuarantineAction::Isolate,
            ttl_s: 0,
        }
    }

    fn deny(device: u64, dst_last: u8, port: u16) -> Event {
        let mut ev = Event {
            device,
            kind: EVENT_DENY,
            family: FAMILY_V4,
            proto: 6,
            dst_port: port,
            ..Event::default()
        };
        ev.dst[..4].copy_from_slice(&[10, 10, 0, dst_last]);
        ev
    }

    #[test]
    fn distinct_flows_reach_the_threshold() {
        let mut d = Detector::default();
        let s = settings(3, 60);
        assert!(!d.observe(&deny(1, 1, 22), 0, &s));
        assert!(!d.observe(&deny(1, 2, 22), 10, &s));
        assert!(d.observe(&deny(1, 3, 22), 20, &s), "third distinct flow");
    }

    #[test]
    fn repeated_packets_of_one_flow_count_once() {
        let mut d = Detector::default();
        let s = settings(2, 60);
        for t in 0..100 {
            assert!(!d.observe(&deny(1, 1, 22), t, &s));
        }
        assert!(d.observe(&deny(1, 1, 23), 200, &s));
    }

    #[test]
    fn old_deviations_leave_the_window() {
        let mut d = Detector::default();
        let s = settings(2, 1);
        assert!(!d.observe(&deny(1, 1, 22), 0, &s));
        assert!(
            !d.observe(&deny(1, 2, 22), 5_000, &s),
            "the first one expired"
        );
        assert!(d.observe(&deny(1, 3, 22), 5_500, &s));
    }

    #[test]
    fn devices_are_counted_separately_and_unknown_sources_never_trigger() {
        let mut d = Detector::default();
        let s = settings(2, 60);
        assert!(!d.observe(&deny(1, 1, 22), 0, &s));
        assert!(!d.observe(&deny(2, 2, 22), 0, &s));
        assert!(!d.observe(&deny(0, 3, 22), 0, &s));
        assert!(!d.observe(&deny(0, 4, 22), 0, &s));
    }

    #[test]
    fn drops_of_a_quarantined_device_are_not_deviations() {
        let mut d = Detector::default();
        let s = settings(1, 60);
        let mut ev = deny(1, 1, 514);
        ev.reason = lazaret_abi::Reason::DenyQuarantine as u8;
        assert!(!d.observe(&ev, 0, &s), "reported after its release");
        ev.reason = lazaret_abi::Reason::DenyNoRule as u8;
        assert!(d.observe(&ev, 0, &s));
    }

    #[test]
    fn audit_and_learn_events_are_not_deviations() {
        let mut d = Detector::default();
        let s = settings(1, 60);
        let mut ev = deny(1, 1, 22);
        ev.kind = lazaret_abi::EVENT_AUDIT;
        assert!(!d.observe(&ev, 0, &s));
        ev.kind = lazaret_abi::EVENT_LEARN;
        assert!(!d.observe(&ev, 0, &s));
    }
}
