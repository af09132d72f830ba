//! Learn mode: the flows devices in `learn` mode open and receive, recorded per device in
//! the state directory (`learned-flows.json`) so they accumulate across restarts, for
//! `lazaret learn export` to turn into a proposed workflow ([`super::propose`]).
//!
//! One record per (who initiated, protocol, peer address, service port): how many flows and
//! when the first and last were seen. The datapath reports the first packet of each new
//! flow of a learn-mode device (rate-limited per device, see `lazaret_events_total`), so a
//! count is a number of flows, not of packets. Bounded per device; writes are atomic
//! (temporary file, fsync, rename).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use lazaret_abi::{Event, DIR_DEVICE_INIT, PROTO_TCP, PROTO_UDP};
use serde::{Deserialize, Serialize};

/// The file in the state directory.
pub const FILE: &str = "learned-flows.json";
/// Distinct flows kept per device; beyond that new ones are counted in `overflow`.
pub const MAX_PER_DEVICE: usize = 1024;

/// Who opened a learned flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Initiator {
    Device,
    Peer,
}

impl Initiator {
    pub fn name(self) -> &'static str {
        match self {
            Initiator::Device => "device",
            Initiator::Peer => "peer",
        }
    }
}

/// One learned flow pattern of a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedFlow {
    pub initiator: Initiator,
    /// IP protocol number.
    pub proto: u8,
    pub peer: IpAddr,
    /// The service port (the responder's), 0 for protocols without ports.
    pub port: u16,
    /// Flows seen.
    pub count: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// Learned flows of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFlows {
    /// Keyed by `initiator proto peer port`, so the file reads in a stable order.
    pub flows: BTreeMap<String, LearnedFlow>,
    /// New flow patterns not kept because [`MAX_PER_DEVICE`] was reached.
    #[serde(default)]
    pub overflow: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a learned-flows file ({message}); it is left as it is")]
    Corrupt { path: PathBuf, message: String },
}

/// Every learn-mode device's flows, as kept in the state directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    pub version: u32,
    pub devices: BTreeMap<String, DeviceFlows>,
}

impl Learned {
    /// Reads `state_dir/learned-flows.json`; empty if there is none.
    pub fn load(state_dir: &Path) -> Result<Learned, LearnError> {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LearnError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Learned {
                version: 1,
                ..Learned::default()
            }),
            Err(source) => Err(LearnError::Io { path, source }),
        }
    }

    /// Writes the file atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), LearnError> {
        let path = state_dir.join(FILE);
        let io = |source| LearnError::Io {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(self).map_err(|e| io(e.into()))?;
        super::state::write_atomic(&path, &body).map_err(io)
    }

    /// Records a learn event of `device`. Returns true when it is a new flow pattern (worth
    /// writing at once); repeated ones only update counts.
    pub fn observe(&mut self, device: &str, ev: &Event, now: u64) -> bool {
        let Some(flow) = pattern(ev) else {
            return false;
        };
        let key = format!(
            "{} {} {} {}",
            flow.initiator.name(),
            flow.proto,
            flow.peer,
            flow.port
        );
        let d = self.devices.entry(device.to_string()).or_default();
        if let Some(f) = d.flows.get_mut(&key) {
            f.count += 1;
            f.last_seen = now;
            return false;
        }
        if d.flows.len() >= MAX_PER_DEVICE {
            d.overflow += 1;
            return false;
        }
        d.flows.insert(
            key,
            LearnedFlow {
                count: 1,
                first_seen: now,
                last_seen: now,
                ..flow
            },
        );
        true
    }
}

impl DeviceFlows {
    /// Takes in what the other member of a pair learned of the device (see `hasync`): a
    /// pattern both hold keeps the larger count and the wider time span (both members count
    /// the flows they saw, which are mostly the same ones, so the counts are not added); a
    /// new one is added within [`MAX_PER_DEVICE`]. Whether anything changed.
    pub fn merge(&mut self, other: &DeviceFlows) -> bool {
        let mut changed = false;
        for (key, theirs) in &other.flows {
            let room = self.flows.len() < MAX_PER_DEVICE;
            match self.flows.get_mut(key) {
                Some(ours) => {
                    let merged = LearnedFlow {
                        count: ours.count.max(theirs.count),
                        first_seen: ours.first_seen.min(theirs.first_seen),
                        last_seen: ours.last_seen.max(theirs.last_seen),
                        ..ours.clone()
                    };
                    if merged != *ours {
                        *ours = merged;
                        changed = true;
                    }
                }
                None if room => {
                    self.flows.insert(key.clone(), theirs.clone());
                    changed = true;
                }
                None => {}
            }
        }
        if other.overflow > self.overflow {
            self.overflow = other.overflow;
            changed = true;
        }
        changed
    }
}

/// The flow pattern an event reports, seen from its device; None for non-IP events.
fn pattern(ev: &Event) -> Option<LearnedFlow> {
    let addr = |a: &[u8; 16]| super::intake::event_addr(ev.family, a);
    let (initiator, peer) = if ev.dir == DIR_DEVICE_INIT {
        (Initiator::Device, addr(&ev.dst)?)
    } else {
        (Initiator::Peer, addr(&ev.src)?)
    };
    let port = if matches!(ev.proto, PROTO_TCP | PROTO_UDP) {
        ev.dst_port
    } else {
        0
    };
    Some(LearnedFlow {
        initiator,
        proto: ev.proto,
        peer,
        port,
        count: 0,
        first_seen: 0,
        last_seen: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_abi::FAMILY_V4;

    pub(crate) fn learn_event(dst_last: u8, port: u16, dir: u8) -> Event {
        let mut ev = Event {
            kind: lazaret_abi::EVENT_LEARN,
            family: FAMILY_V4,
            proto: PROTO_TCP,
            dir,
            src_port: 40000,
            dst_port: port,
            ..Event::default()
        };
        if dir == DIR_DEVICE_INIT {
            ev.src[..4].copy_from_slice(&[10, 20, 0, 11]);
            ev.dst[..4].copy_from_slice(&[10, 10, 0, dst_last]);
        } else {
            ev.src[..4].copy_from_slice(&[10, 10, 0, dst_last]);
            ev.dst[..4].copy_from_slice(&[10, 20, 0, 11]);
        }
        ev
    }

    #[test]
    fn the_other_members_flows_merge_without_double_counting() {
        let flow = |count, first_seen, last_seen| LearnedFlow {
            initiator: Initiator::Device,
            proto: 6,
            peer: "10.10.0.20".parse().expect("ip"),
            port: 2575,
            count,
            first_seen,
            last_seen,
        };
        let of = |list: Vec<(&str, LearnedFlow)>| DeviceFlows {
            flows: list.into_iter().map(|(k, f)| (k.to_string(), f)).collect(),
            overflow: 0,
        };
        let mut ours = of(vec![("a", flow(5, 100, 200))]);
        let theirs = of(vec![("a", flow(3, 50, 150)), ("b", flow(1, 300, 300))]);
        assert!(ours.merge(&theirs));
        assert_eq!(ours.flows["a"], flow(5, 50, 200));
        assert_eq!(ours.flows["b"], flow(1, 300, 300));
        // The same again changes nothing.
        assert!(!ours.merge(&theirs));
    }

    #[test]
    fn repeated_flows_count_and_new_ones_are_reported() {
        let mut l = Learned::default();
        assert!(l.observe("mon", &learn_event(20, 2575, DIR_DEVICE_INIT), 100));
        assert!(!l.observe("mon", &learn_event(20, 2575, DIR_DEVICE_INIT), 200));
        assert!(l.observe("mon", &learn_event(20, 22, lazaret_abi::DIR_PEER_INIT), 300));
        let flows = &l.devices["mon"].flows;
        assert_eq!(flows.len(), 2);
        let f = &flows["device 6 10.10.0.20 2575"];
        assert_eq!((f.count, f.first_seen, f.last_seen), (2, 100, 200));
        let p = &flows["peer 6 10.10.0.20 22"];
        assert_eq!(p.initiator, Initiator::Peer);
    }

    #[test]
    fn survives_a_save_and_load() {
        let dir = std::env::temp_dir().join(format!("lazaret-learn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut l = Learned::load(&dir).expect("empty");
        l.observe("mon", &learn_event(20, 2575, DIR_DEVICE_INIT), 1);
        l.save(&dir).expect("save");
        assert!(!dir.join("learned-flows.json.tmp").exists());
        assert_eq!(Learned::load(&dir).expect("load"), l);
        std::fs::write(dir.join(FILE), "{oops").expect("write");
        assert!(matches!(
            Learned::load(&dir),
            Err(LearnError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bounded_per_device() {
        let mut l = Learned::default();
        for port in 0..(MAX_PER_DEVICE as u16 + 3) {
            l.observe("mon", &learn_event(20, port, DIR_DEVICE_INIT), 1);
        }
        assert_eq!(l.devices["mon"].flows.len(), MAX_PER_DEVICE);
        assert_eq!(l.devices["mon"].overflow, 3);
    }
}
