//! The active member's records for the other member of a pair (`docs/ha.md`): the flows its
//! learn-mode devices opened ([`super::learn`]) and the unknown devices it saw
//! ([`super::unknown`]). A standby sees no device traffic, so without them a failover would
//! start both lists again from what the new active sees.
//!
//! Sent by the active member over the replication's channel ([`super::hasync`]), behind
//! quarantines (in the flows' queue), on its tick, when the channel (re)connects and, for a
//! new unknown device, at once: every device record that changed since it was last sent
//! (marked as it changes, never found by comparing), in parts small enough for one message
//! (records are bounded: 1,024 patterns per device, 32 flows and 16 addresses per unknown
//! device). A part the queue refuses (the peer is
//! slow or gone) is sent again at the next tick. Received records are merged, never
//! replaced (see `DeviceFlows::merge`, `Unknowns::merge`): merging is idempotent, so a
//! record sent twice, or by both members after a split, converges.

use std::collections::{BTreeMap, BTreeSet};

use super::{ha, hasync, learn::DeviceFlows, unknown::UnknownDevice, Controller};

/// Learned flow patterns in one message at most (a device has at most 1,024).
const LEARNED_PER_PART: usize = 4096;
/// Unknown devices in one message at most (each with at most 32 flows).
const UNKNOWN_PER_PART: usize = 256;

/// The records that changed since they were last sent to the other member, by device id
/// and by MAC: what changes marks them ([`Controller::records_changed`]), so a tick costs
/// what changed, not a comparison of every record (a site in learn mode holds up to 1,024
/// patterns a device). Bounded by the records themselves.
#[derive(Debug, Default)]
pub(super) struct Pending {
    learned: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

/// A record that changed ([`Controller::records_changed`]).
pub(super) enum Changed<'a> {
    /// A learn-mode device's flows, by device id.
    Learned(&'a str),
    /// An unknown device, by MAC.
    Unknown(&'a str),
}

impl Controller {
    /// Marks a record to be sent to the other member with the next
    /// [`Self::send_records`] (only where there is another member).
    pub(super) fn records_changed(&mut self, changed: Changed) {
        if self.records_out.is_none() {
            return;
        }
        let (set, key) = match changed {
            Changed::Learned(d) => (&mut self.records_pending.learned, d),
            Changed::Unknown(m) => (&mut self.records_pending.unknown, m),
        };
        if !set.contains(key) {
            set.insert(key.to_string());
        }
    }

    /// Sends the records that changed since they were last sent, if this member is active
    /// and replicates. What the queue refuses stays marked for the next tick.
    pub(super) fn send_records(&mut self) {
        let Some(out) = self.records_out.clone() else {
            return;
        };
        if self.role.0 != ha::Role::Active {
            return;
        }
        // Parts of whole devices, each sent and then unmarked.
        let devices: Vec<String> = self.records_pending.learned.iter().cloned().collect();
        let mut part = BTreeMap::new();
        let (mut patterns, mut first) = (0, 0);
        for (i, device) in devices.iter().enumerate() {
            if let Some(flows) = self.learned.devices.get(device) {
                part.insert(device.clone(), flows.clone());
                patterns += flows.flows.len();
            }
            if patterns < LEARNED_PER_PART && i + 1 < devices.len() {
                continue;
            }
            let sending = std::mem::take(&mut part);
            if !sending.is_empty() {
                let body = hasync::Body::Records {
                    learned: sending,
                    unknown: Vec::new(),
                };
                if out.try_send(body).is_err() {
                    return;
                }
            }
            for d in &devices[first..=i] {
                self.records_pending.learned.remove(d);
            }
            (patterns, first) = (0, i + 1);
        }
        let macs: Vec<String> = self.records_pending.unknown.iter().cloned().collect();
        for chunk in macs.chunks(UNKNOWN_PER_PART) {
            let unknown: Vec<UnknownDevice> = chunk
                .iter()
                .filter_map(|m| self.unknowns.devices.get(m).cloned())
                .collect();
            if !unknown.is_empty() {
                let body = hasync::Body::Records {
                    learned: BTreeMap::new(),
                    unknown,
                };
                if out.try_send(body).is_err() {
                    return;
                }
            }
            for m in chunk {
                self.records_pending.unknown.remove(m);
            }
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
            self.records_pending.unknown.remove(mac);
        }
    }

    /// Marks every record: the next [`Self::send_records`] sends them all (the other
    /// member (re)joined, or this one became active).
    pub(super) fn resend_records(&mut self) {
        if self.records_out.is_none() {
            return;
        }
        self.records_pending = Pending {
            learned: self.learned.devices.keys().cloned().collect(),
            unknown: self.unknowns.devices.keys().cloned().collect(),
        };
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

    /// Writes the unknown devices that changed since the last write and waited: the other
    /// member's, or new ones seen soon after a write (see `on_unknown`).
    pub(super) fn save_taken_unknowns(&mut self) {
        if std::mem::take(&mut self.unknowns_dirty) {
            self.save_unknowns();
        }
    }
}
