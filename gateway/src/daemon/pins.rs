//! Bridge-port pins the dataplanes learned (a managed MAC pinned to the port it was first
//! seen on, see `lazaret_abi`, *Bridge ports*), kept in the state directory so they survive
//! a reboot, which empties the dataplanes: a pin ends only when a person releases it.
//!
//! The dataplanes are the truth while they run; the controller reads their pins back
//! (`Pins::merge`) and writes the file when they changed. Pure but for [`Pins::load`] and
//! [`Pins::save`].

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

/// MAC (`aa:bb:…`) → the port (interface name) it is pinned to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub by_mac: BTreeMap<String, String>,
}

const FILE: &str = "port-pins.json";

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Pins {
    /// The pins of `state_dir`; none (and a warning) if the file is missing or unreadable.
    pub fn load(state_dir: &Path) -> Pins {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "port pins unreadable; they are learned anew");
                Pins::default()
            }),
            Err(_) => Pins::default(),
        }
    }

    /// Writes the pins atomically.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        super::state::write_atomic(&state_dir.join(FILE), &body)
    }

    /// Adds the pins a dataplane reports; whether any is new or moved.
    pub fn merge(&mut self, seen: impl IntoIterator<Item = ([u8; 6], String)>) -> bool {
        let mut changed = false;
        for (mac, port) in seen {
            let old = self.by_mac.insert(fmt_mac(&mac), port.clone());
            changed |= old.as_deref() != Some(port.as_str());
        }
        changed
    }

    /// The pins as (MAC, port).
    pub fn list(&self) -> Vec<([u8; 6], String)> {
        self.by_mac
            .iter()
            .filter_map(|(m, p)| Some((parse_mac(m)?, p.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_merge_report_changes_and_round_trip_through_the_state_directory() {
        let mut p = Pins::default();
        let mac = [2, 0, 0, 0, 0, 0x11];
        assert!(p.merge([(mac, "icu0p1".to_string())]));
        assert!(
            !p.merge([(mac, "icu0p1".to_string())]),
            "the same pin again"
        );
        assert!(p.merge([(mac, "icu0p2".to_string())]), "a moved pin");
        let dir = tempfile::tempdir().expect("tempdir");
        p.save(dir.path()).expect("save");
        assert_eq!(Pins::load(dir.path()), p);
        assert_eq!(p.list(), vec![(mac, "icu0p2".to_string())]);
    }
}
