//! Unknown-device discovery: every source on a device port that is not in the inventory,
//! keyed by MAC, with the VLAN, interface and addresses it used, when it was first and last
//! seen, and the flows it tried. This is the inventory-visibility gap hospitals have: a
//! device nobody registered shows up here the first time it speaks.
//!
//! Pure bookkeeping; the daemon feeds it the datapath's unknown-device events (rate-limited
//! per MAC in the datapath) and persists it in the state directory.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

/// Unknown devices tracked at most; beyond that new ones are counted, not stored.
pub const MAX_TRACKED: usize = 4096;
/// Distinct flows remembered per unknown device.
pub const MAX_FLOWS: usize = 32;
/// Addresses remembered per unknown device (one sending from many is scanning or spoofing;
/// the first ones say enough, and the record stays small enough to send to the other member
/// of a pair).
pub const MAX_ADDRESSES: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownDevice {
    pub mac: String,
    pub vlan: u16,
    pub ifindex: u32,
    pub addresses: BTreeSet<IpAddr>,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    /// "proto dst:port" of the flows it tried (at most [`MAX_FLOWS`]).
    pub flows: BTreeSet<String>,
    pub packets_reported: u64,
    /// Who the IEEE assigned the MAC's first three octets to (see `oui`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// A locally administered MAC: chosen by software, often randomised (no vendor).
    #[serde(default)]
    pub randomized: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Unknowns {
    pub devices: BTreeMap<String, UnknownDevice>,
    /// New unknown devices not stored because [`MAX_TRACKED`] was reached.
    pub overflow: u64,
}

/// What one sighting tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub mac: [u8; 6],
    pub vlan: u16,
    pub ifindex: u32,
    pub src: Option<IpAddr>,
    pub flow: Option<String>,
    pub now: u64,
}

/// `aa:bb:cc:dd:ee:ff`, as policies and the unknown-device list spell MACs.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Unknowns {
    /// Records a sighting; returns true if this MAC was never seen before.
    pub fn observe(&mut self, s: &Sighting) -> bool {
        let key = fmt_mac(&s.mac);
        let new = !self.devices.contains_key(&key);
        if new && self.devices.len() >= MAX_TRACKED {
            self.overflow += 1;
            return false;
        }
        let d = self
            .devices
            .entry(key.clone())
            .or_insert_with(|| UnknownDevice {
                mac: key,
                vlan: s.vlan,
                ifindex: s.ifindex,
                first_seen: s.now,
                ..UnknownDevice::default()
            });
        d.last_seen = s.now;
        d.vlan = s.vlan;
        d.ifindex = s.ifindex;
        d.packets_reported += 1;
        if let Some(a) = s.src {
            if !a.is_unspecified() && d.addresses.len() < MAX_ADDRESSES {
                d.addresses.insert(a);
            }
        }
        if let Some(f) = &s.flow {
            if d.flows.len() < MAX_FLOWS {
                d.flows.insert(f.clone());
            }
        }
        new
    }

    /// Takes in the other member's record of an unknown device (see `hasync`): addresses
    /// and flows are joined (within [`MAX_FLOWS`]), the time span widened, the larger count
    /// kept. The interface stays this host's own: an interface index names an interface of
    /// the host that saw it, so a device only the other member saw has none here (0).
    /// Whether anything changed.
    pub fn merge(&mut self, theirs: &UnknownDevice) -> bool {
        let Some(ours) = self.devices.get_mut(&theirs.mac) else {
            if self.devices.len() >= MAX_TRACKED {
                return false;
            }
            let mut d = theirs.clone();
            d.ifindex = 0;
            d.flows = d.flows.into_iter().take(MAX_FLOWS).collect();
            d.addresses = d.addresses.into_iter().take(MAX_ADDRESSES).collect();
            self.devices.insert(d.mac.clone(), d);
            return true;
        };
        let before = ours.clone();
        for a in &theirs.addresses {
            if ours.addresses.len() < MAX_ADDRESSES {
                ours.addresses.insert(*a);
            }
        }
        for f in &theirs.flows {
            if ours.flows.len() < MAX_FLOWS {
                ours.flows.insert(f.clone());
            }
        }
        if theirs.last_seen > ours.last_seen {
            ours.last_seen = theirs.last_seen;
            ours.vlan = theirs.vlan;
        }
        ours.first_seen = ours.first_seen.min(theirs.first_seen);
        ours.packets_reported = ours.packets_reported.max(theirs.packets_reported);
        *ours != before
    }

    /// Forgets devices that are now in the inventory (by MAC).
    pub fn retain_unknown(&mut self, known_macs: &BTreeSet<String>) {
        self.devices.retain(|mac, _| !known_macs.contains(mac));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(mac_last: u8, src: &str, flow: &str, now: u64) -> Sighting {
        Sighting {
            mac: [2, 0, 0, 0, 0, mac_last],
            vlan: 20,
            ifindex: 3,
            src: src.parse().ok(),
            flow: Some(flow.to_string()),
            now,
        }
    }

    #[test]
    fn first_sighting_is_new_and_later_ones_update() {
        let mut u = Unknowns::default();
        assert!(u.observe(&seen(1, "10.20.0.77", "tcp 10.10.0.20:443", 100)));
        assert!(!u.observe(&seen(1, "10.20.0.78", "tcp 10.10.0.20:22", 200)));
        let d = &u.devices["02:00:00:00:00:01"];
        assert_eq!(
            (d.first_seen, d.last_seen, d.packets_reported),
            (100, 200, 2)
        );
        assert_eq!(d.addresses.len(), 2);
        assert_eq!(d.flows.len(), 2);
    }

    #[test]
    fn tracking_is_bounded() {
        let mut u = Unknowns::default();
        for i in 0..MAX_TRACKED + 10 {
            let mac = [2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            u.observe(&Sighting {
                mac,
                vlan: 0,
                ifindex: 1,
                src: None,
                flow: None,
                now: 0,
            });
        }
        assert_eq!(u.devices.len(), MAX_TRACKED);
        assert_eq!(u.overflow, 10);
    }

    #[test]
    fn the_other_members_record_joins_this_ones() {
        let mut ours = Unknowns::default();
        ours.observe(&seen(1, "10.20.0.77", "tcp 10.10.0.20:443", 100));
        let mut theirs = Unknowns::default();
        theirs.observe(&seen(1, "10.20.0.78", "tcp 10.10.0.20:22", 50));
        theirs.observe(&seen(2, "10.20.0.79", "tcp 10.10.0.20:22", 60));
        for d in theirs.devices.values() {
            assert!(ours.merge(d));
        }
        let one = &ours.devices["02:00:00:00:00:01"];
        assert_eq!((one.first_seen, one.last_seen), (50, 100));
        assert_eq!(
            (one.addresses.len(), one.flows.len(), one.ifindex),
            (2, 2, 3)
        );
        // Seen only by the other member: no interface of this host.
        assert_eq!(ours.devices["02:00:00:00:00:02"].ifindex, 0);
        for d in theirs.devices.values() {
            assert!(!ours.merge(d), "the same record again changes nothing");
        }
    }

    #[test]
    fn devices_added_to_the_inventory_are_forgotten() {
        let mut u = Unknowns::default();
        u.observe(&seen(1, "10.20.0.77", "tcp 10.10.0.20:443", 1));
        u.retain_unknown(&["02:00:00:00:00:01".to_string()].into_iter().collect());
        assert!(u.devices.is_empty());
    }
}
