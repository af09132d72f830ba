//! Deviation detection: turns the datapath's events into quarantine decisions.
//!
//! A deviation is a frame a managed device sent that its policy refuses: a flow it may not
//! open, an ICMP error it may not send, neighbor discovery beyond its link. Repeated
//! packets of one denied flow count once; distinct denied flows count separately. When a
//! device reaches `after` distinct deviations within `within` seconds, its configured
//! action fires once (the window restarts). Pure: time is passed in, so tests need no
//! clock.
//!
//! Only frames that passed identity as the device count ([`is_evidence`]). Everything else
//! an event may name a device for is still dropped and reported, but proves nothing about
//! what the device did, and counting it would let anyone have any device quarantined,
//! isolated if its class says so: a host upstream opening flows to it; a frame claiming its
//! address or MAC from another port, VLAN or MAC (spoofing, which names the identity
//! claimed); a frame the parser refuses (or a fragment), or a DHCP offer or router
//! advertisement, each judged before identity, so named by a MAC anyone can clone.
//!
//! Nor does what follows from a policy change rather than from the device: a session the
//! change cut (`EVENT_F_REJUDGED`), and the device's attempts to open that flow again
//! afterwards (an application reconnecting to a service the new policy removed), for
//! [`CUT_GRACE_MS`] after each attempt. A device that keeps doing what it always did has
//! not changed; its refused attempts are still reported.

use std::collections::{HashMap, HashSet, VecDeque};

use lazaret_abi::{
    Event, Reason, DIR_DEVICE_INIT, EVENT_DENY, EVENT_F_REJUDGED, EVENT_ROGUE, EVENT_SPOOF,
    FAMILY_V4, SIDE_DEVICES,
};

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

/// How long a flow a policy change cut stays excused after the device last tried it.
pub const CUT_GRACE_MS: u64 = 60 * 60 * 1000;
/// Cut flows remembered per device; the one tried least recently is forgotten first.
const MAX_CUT: usize = 256;

/// Per-device sliding windows of distinct deviations, and the flows a policy change cut.
#[derive(Debug, Default)]
pub struct Detector {
    windows: HashMap<u64, Window>,
    /// Device → the flows a policy change cut → when it last tried one (ms).
    cut: HashMap<u64, HashMap<Signature, u64>>,
}

/// The flow an event is about, seen from its device: the peer and the service port.
fn signature(ev: &Event) -> Signature {
    let device_is_src = ev.dir == DIR_DEVICE_INIT;
    let mut peer = if device_is_src { ev.dst } else { ev.src };
    if ev.family == FAMILY_V4 {
        peer[4..].fill(0);
    }
    Signature {
        kind: ev.kind,
        proto: ev.proto,
        peer,
        port: ev.dst_port,
    }
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

/// Whether an event is evidence against the device it names: a frame from the devices'
/// side, on a flow the device opened (not another device's flow its policy refused as the
/// responder), refused for a reason both dataplanes decide only after the frame passed
/// identity as that device ([`Reason::names_its_sender`]: its address, MAC, interface,
/// VLAN and bridge port bindings). Drops because the device is quarantined are the quarantine working, not
/// new deviations (and one reported late, after a release, must not count towards the
/// next).
///
/// Nor do two kinds of refusal that follow from something other than what the device chose
/// to send: a flow admitted earlier and refused when judged again under a new policy or
/// device state ([`EVENT_F_REJUDGED`]: the policy moved, and the packet judged may be the
/// peer's reply), and a packet of no flow (`DenyNoFlow`: a retransmission or keepalive of
/// a flow the gateway removed or forgot is one). Both are reported.
pub fn is_evidence(ev: &Event) -> bool {
    ev.device != 0
        && ev.side == SIDE_DEVICES
        && ev.dir == DIR_DEVICE_INIT
        && ev.flags & EVENT_F_REJUDGED == 0
        && matches!(ev.kind, EVENT_DENY | EVENT_SPOOF)
        && ev.reason != Reason::DenyQuarantine as u8
        && ev.reason != Reason::DenyNoFlow as u8
        && Reason::from_u8(ev.reason).is_some_and(Reason::names_its_sender)
}

impl Detector {
    /// Records one event; returns true when the device crosses its threshold.
    pub fn observe(&mut self, ev: &Event, now_ms: u64, settings: &QuarantineSettings) -> bool {
        let sig = signature(ev);
        if ev.device != 0
            && ev.kind == EVENT_DENY
            && ev.dir == DIR_DEVICE_INIT
            && ev.flags & EVENT_F_REJUDGED != 0
        {
            self.cut_flow(ev.device, sig, now_ms);
            return false;
        }
        if !is_evidence(ev) || settings.after == 0 {
            return false;
        }
        // The device trying again a flow a policy change cut: excused, and the grace runs
        // on from this attempt.
        if let Some(tried) = self
            .cut
            .get_mut(&ev.device)
            .and_then(|c| c.get_mut(&sig))
            .filter(|t| now_ms.saturating_sub(**t) < CUT_GRACE_MS)
        {
            *tried = now_ms;
            return false;
        }
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

    /// Remembers a flow of `device` that a policy change cut.
    fn cut_flow(&mut self, device: u64, sig: Signature, now_ms: u64) {
        let cut = self.cut.entry(device).or_default();
        cut.retain(|_, t| now_ms.saturating_sub(*t) < CUT_GRACE_MS);
        if cut.len() >= MAX_CUT && !cut.contains_key(&sig) {
            if let Some(oldest) = cut.iter().min_by_key(|(_, t)| **t).map(|(s, _)| *s) {
                cut.remove(&oldest);
            }
        }
        cut.insert(sig, now_ms);
    }

    /// Forgets a device (released, or gone from the policy).
    pub fn forget(&mut self, device: u64) {
        self.windows.remove(&device);
        self.cut.remove(&device);
    }

    /// Keeps the windows of the devices `keep` says are still in the policy.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.windows.retain(|device, _| keep(*device));
        self.cut.retain(|device, _| keep(*device));
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
            reason: Reason::DenyNoRule as u8,
            side: SIDE_DEVICES,
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

    /// What no frame of the device's own shows: from upstream, spoofed, refused by the
    /// parser, a server's message from its port. Each names the device, none counts.
    #[test]
    fn only_frames_that_passed_identity_on_the_devices_side_count() {
        let s = settings(1, 60);
        let mut from_upstream = deny(1, 1, 22);
        from_upstream.side = lazaret_abi::SIDE_UPSTREAM;
        // Another device's flow to it, refused by its policy as the responder.
        let mut to_it = deny(1, 7, 22);
        to_it.dir = lazaret_abi::DIR_PEER_INIT;
        let mut spoofed = deny(1, 2, 22);
        spoofed.kind = EVENT_SPOOF;
        spoofed.reason = Reason::DenySpoof as u8;
        let mut tagged = deny(1, 3, 22);
        tagged.kind = EVENT_SPOOF;
        tagged.reason = Reason::DenyVlanTag as u8;
        let mut parser = deny(1, 4, 22);
        parser.reason = Reason::DenyTcpFlags as u8;
        let mut rogue = deny(1, 5, 22);
        rogue.kind = EVENT_ROGUE;
        rogue.reason = Reason::DenyRogueDhcp as u8;
        let mut fragment = deny(1, 6, 22);
        fragment.reason = Reason::DenyFragment as u8;
        for ev in [
            from_upstream,
            to_it,
            spoofed,
            tagged,
            parser,
            rogue,
            fragment,
        ] {
            let mut d = Detector::default();
            assert!(!d.observe(&ev, 0, &s), "{ev:?}");
        }
        // What does count, each alone reaching a threshold of one.
        for r in [
            Reason::DenyNoRule,
            Reason::DenyIcmpError,
            Reason::DenyNdScope,
        ] {
            let mut ev = deny(1, 6, 22);
            ev.reason = r as u8;
            ev.kind = r.event_kind();
            let mut d = Detector::default();
            assert!(d.observe(&ev, 0, &s), "{r:?}");
        }
    }

    /// A session a reload cut, then the device trying it again (a reconnect): excused for
    /// an hour after its last attempt, each attempt extending it; other flows still count.
    #[test]
    fn a_flow_a_policy_change_cut_is_excused_when_tried_again() {
        let s = settings(2, 60);
        let mut d = Detector::default();
        let mut cut = deny(1, 1, 22);
        cut.flags = EVENT_F_REJUDGED;
        assert!(!d.observe(&cut, 0, &s));
        // Reconnects for the next 90 minutes, every 30: each within the grace of the last.
        for t in [1, 30, 60, 90] {
            assert!(!d.observe(&deny(1, 1, 22), t * 60_000, &s), "minute {t}");
        }
        assert!(!d.observe(&deny(1, 2, 22), 90 * 60_000, &s));
        assert!(
            d.observe(&deny(1, 3, 22), 90 * 60_000 + 1, &s),
            "flows the change did not cut count"
        );
        // Untried for longer than the grace, the flow counts again.
        let mut d = Detector::default();
        assert!(!d.observe(&cut, 0, &s));
        let late = CUT_GRACE_MS + 1;
        assert!(!d.observe(&deny(1, 1, 22), late, &s));
        assert!(d.observe(&deny(1, 2, 22), late, &s));
    }
}
