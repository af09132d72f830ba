//! The active member's records for the other member of a pair (`docs/ha.md`): the flows its
//! learn-mode devices opened ([`super::learn`]) and the unknown devices it saw
//! ([`super::unknown`]). A standby sees no device traffic, so without them a failover would
//! start both lists again from what the new active sees.
//!
//! Sent by the active member over the replication's channel ([`super::hasync`]), behind
//! quarantines (in the flows' queue), on its tick, when the channel (re)connects and, for a
//! new unknown device, at once: every device record that differs from what was last sent,
//! in parts small enough for one message (records are bounded: 1,024 patterns per device,
//! 32 flows and 16 addresses per unknown device). A part the queue refuses (the peer is
//! slow or gone) is sent again at the next tick. Received records are merged, never
//! replaced (see `DeviceFlows::merge`, `Unknowns::merge`): merging is idempotent, so a
//! record sent twice, or by both members after a split, converges.

use std::collections::BTreeMap;

use super::{ha, hasync, learn::DeviceFlows, unknown::UnknownDevice, Controller};

/// Learned flow patterns in one message at most (a device has at most 1,024).
const LEARNED_PER_PART: usize = 4096;
/// Unknown devices in one message at most (each with at most 32 flows).
const UNKNOWN_PER_PART: usize = 256;

/// What was last sent to the other member.
#[derive(Debug, Default)]
pub(super) struct Sent {
    learned: BTreeMap<String, DeviceFlows>,
    unknown: BTreeMap<String, UnknownDevice>,
}

impl Controller {
    /// Sends the records that changed since they were last sent, if this member is active
    /// and replicates.
    pub(super) fn send_records(&mut self) {
        let Some(out) = self.records_out.clone() else {
            return;
        };
        if self.role.0 != ha::Role::Active {
            return;
        }
        let sent = &mut self.records_sent;
        let learned: Vec<_> = self
            .learned
            .devices
            .iter()
            .filter(|(d, f)| sent.learned.get(*d) != Some(*f))
            .collect();
        let mut part = BTreeMap::new();
        let mut patterns = 0;
        for (i, (device, flows)) in learned.iter().enumerate() {
            part.insert((*device).clone(), (*flows).clone());
            patterns += flows.flows.len();
            if patterns >= LEARNED_PER_PART || i + 1 == learned.len() {
                let sending = std::mem::take(&mut part);
                let body = hasync::Body::Records {
                    learned: sending.clone(),
                    unknown: Vec::new(),
                };
                if out.try_send(body).is_err() {
                    return;
                }
                sent.learned.extend(sending);
                patterns = 0;
            }
        }
        let unknown: Vec<UnknownDevice> = self
            .unknowns
            .devices
            .values()
            .filter(|d| sent.unknown.get(&d.mac) != Some(*d))
            .cloned()
            .collect();
        for chunk in unknown.chunks(UNKNOWN_PER_PART) {
            let body = hasync::Body::Records {
                learned: BTreeMap::new(),
                unknown: chunk.to_vec(),
            };
            if out.try_send(body).is_err() {
                return;
            }
            sent.unknown
                .extend(chunk.iter().map(|d| (d.mac.clone(), d.clone())));
        }
    }

    /// Sends the record of the unknown device `mac` now (it was just found), if this member
    /// is active and replicates; otherwise, or if the queue is full, the tick sends it.
    pub(super) fn send_unknown(&mut self, mac: &str) {
        let (Some(out), Some(d)) = (&self.records_out, self.unknowns.devices.get(mac)) else {
            return;
        };
        if self.role.0 != ha::Role::Active {
            return;
        }
        let body = hasync::Body::Records {
            learned: BTreeMap::new(),
            unknown: vec![d.clone()],
        };
        if out.try_send(body).is_ok() {
            self.records_sent.unknown.insert(mac.to_string(), d.clone());
        }
    }

    /// Forgets what was sent: the next [`Self::send_records`] sends everything (the other
    /// member (re)joined, or this one became active).
    pub(super) fn resend_records(&mut self) {
        self.records_sent = Sent::default();
    }

    /// Merges the other member's records into this member's; they are written to the state
    /// directory with the next tick (never a write per message on the loop). Learned flows
    /// of a device this member's policy does not have are not taken.
    pub(super) fn take_records(
        &mut self,
        learned: BTreeMap<String, DeviceFlows>,
        unknown: &[UnknownDevice],
    ) {
        for (device, flows) in learned {
            if self.device_hash(&device).is_none() {
                continue;
            }
            if self
                .learned
                .devices
                .entry(device)
                .or_default()
                .merge(&flows)
            {
                self.learned_dirty = true;
            }
        }
        let mut changed = false;
        for d in unknown {
            changed |= self.unknowns.merge(d);
        }
        if changed {
            self.metrics
                .set_unknown_devices(self.unknowns.devices.len() as u64);
            self.unknowns_dirty = true;
        }
    }

    /// Writes the unknown devices the other member sent, if any came since the last tick.
    pub(super) fn save_taken_unknowns(&mut self) {
        if std::mem::take(&mut self.unknowns_dirty) {
            self.save_unknowns();
        }
    }
}
