//! Quarantine state: which devices are quarantined, how, why and by whom; persisted in the
//! state directory so it survives restarts, reboots and reloads, with an append-only audit
//! log of every change.
//!
//! Writes are atomic (temporary file, fsync, rename, fsync of the directory). A state file
//! that cannot be parsed is never overwritten or ignored silently: it is moved aside, the
//! error is reported, and the quarantines still active in the pinned datapath are recovered
//! from it, so no quarantine is ever dropped.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// What a quarantine does to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Report only.
    Alert,
    /// Only the essentials and the class's essential workflows.
    Restrict,
    /// Only the site's quarantine profile.
    Isolate,
}

impl Action {
    pub fn abi(self) -> u8 {
        match self {
            Action::Alert => lazaret_abi::QUARANTINE_NONE,
            Action::Restrict => lazaret_abi::QUARANTINE_RESTRICT,
            Action::Isolate => lazaret_abi::QUARANTINE_ISOLATE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Restrict => "restrict",
            Action::Isolate => "isolate",
        }
    }
}

/// One quarantined device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub action: Action,
    pub reason: String,
    /// Who: a user (control API peer), or "lazaret" for automatic quarantine.
    pub by: String,
    /// Unix seconds.
    pub since: u64,
    /// Unix seconds of automatic release, if a TTL applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Found enforced in the datapath at start but not in the state file (a write failed,
    /// or the file was lost): listed, and releasable like any other.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

/// A release, kept for a day so that the later of a quarantine and a release wins on both
/// members of a pair, across restarts (see `hasync`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Released {
    /// Unix seconds.
    pub at: u64,
    pub by: String,
    pub reason: String,
}

/// How long a release is kept.
pub const RELEASES_KEPT_S: u64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({message}); it was moved to {moved} and the quarantines still enforced by the datapath were recovered")]
    Corrupt {
        path: PathBuf,
        moved: PathBuf,
        message: String,
    },
}

/// The quarantine list and its files.
#[derive(Debug)]
pub struct Quarantines {
    path: PathBuf,
    audit: PathBuf,
    pub entries: BTreeMap<String, Entry>,
    /// Releases of the last day, by device ([`Released`]).
    pub released: BTreeMap<String, Released>,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    devices: BTreeMap<String, Entry>,
    /// Absent from files written before releases were kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    released: BTreeMap<String, Released>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Quarantines {
    /// Loads `state_dir/quarantine.json` (empty if absent). A corrupt file yields the error
    /// alongside an empty list the caller fills from the datapath.
    pub fn load(state_dir: &Path) -> (Quarantines, Option<StateError>) {
        let path = state_dir.join("quarantine.json");
        let audit = state_dir.join("audit.log");
        let mut q = Quarantines {
            path: path.clone(),
            audit,
            entries: BTreeMap::new(),
            released: BTreeMap::new(),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (q, None),
            Err(e) => return (q, Some(io(&path)(e))),
        };
        match serde_json::from_str::<FileFormat>(&text) {
            Ok(f) => {
                q.entries = f.devices;
                q.released = f.released;
                (q, None)
            }
            Err(e) => {
                let moved = path.with_extension(format!("json.corrupt-{}", now()));
                let _ = std::fs::rename(&path, &moved);
                let err = StateError::Corrupt {
                    path,
                    moved,
                    message: e.to_string(),
                };
                (q, Some(err))
            }
        }
    }

    /// Writes the list atomically.
    pub fn save(&self) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(&FileFormat {
            version: 1,
            devices: self.entries.clone(),
            released: self.released.clone(),
        })
        .map_err(|e| io(&self.path)(std::io::Error::other(e)))?;
        super::state::write_atomic(&self.path, &body).map_err(io(&self.path))
    }

    /// Records the release of `device`, and forgets releases a day older than `now`.
    pub fn record_release(&mut self, device: &str, released: Released, now: u64) {
        self.released.insert(device.to_string(), released);
        self.entries.remove(device);
        self.released.retain(|_, r| r.at + RELEASES_KEPT_S > now);
    }

    /// The releases of the last day, as of `now`.
    pub fn recent_releases(&self, now: u64) -> BTreeMap<String, Released> {
        self.released
            .iter()
            .filter(|(_, r)| r.at + RELEASES_KEPT_S > now)
            .map(|(d, r)| (d.clone(), r.clone()))
            .collect()
    }

    /// Appends one line to the audit log (JSON, one object per line).
    pub fn audit(
        &self,
        event: &str,
        device: &str,
        action: Option<Action>,
        by: &str,
        reason: &str,
    ) -> Result<(), StateError> {
        let line = serde_json::json!({
            "ts": now(),
            "event": event,
            "device": device,
            "action": action.map(Action::name),
            "by": by,
            "reason": reason,
        });
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.audit)
            .map_err(io(&self.audit))?;
        writeln!(f, "{line}").map_err(io(&self.audit))?;
        f.sync_data().map_err(io(&self.audit))
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lazaret-q-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp");
        d
    }

    #[test]
    fn saves_and_loads_atomically() {
        let d = tmpdir("roundtrip");
        let (mut q, err) = Quarantines::load(&d);
        assert!(err.is_none());
        q.entries.insert(
            "pump-01".into(),
            Entry {
                recovered: false,
                action: Action::Isolate,
                reason: "port scan".into(),
                by: "lazaret".into(),
                since: 1,
                until: None,
            },
        );
        q.save().expect("save");
        assert!(!d.join("quarantine.json.tmp").exists());
        let (q2, err) = Quarantines::load(&d);
        assert!(err.is_none());
        assert_eq!(q2.entries, q.entries);
    }

    #[test]
    fn releases_of_the_last_day_are_kept_across_restarts() {
        let d = tmpdir("released");
        let (mut q, _) = Quarantines::load(&d);
        let day = RELEASES_KEPT_S;
        let r = |at| Released {
            at,
            by: "root".into(),
            reason: "checked".into(),
        };
        q.record_release("pump-01", r(10), 10);
        assert_eq!(q.recent_releases(10 + day - 1).len(), 1);
        assert!(q.recent_releases(10 + day).is_empty());
        q.record_release("pump-02", r(10 + day), 10 + day);
        // pump-01's release is a day old by then: forgotten.
        assert_eq!(q.released.keys().collect::<Vec<_>>(), ["pump-02"]);
        q.save().expect("save");
        let (q2, err) = Quarantines::load(&d);
        assert!(err.is_none());
        assert_eq!(q2.released, q.released);
        // A file from before releases were kept still loads.
        std::fs::write(d.join("quarantine.json"), r#"{"version":1,"devices":{}}"#).expect("write");
        let (q3, err) = Quarantines::load(&d);
        assert!(err.is_none() && q3.released.is_empty());
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_reported() {
        let d = tmpdir("corrupt");
        std::fs::write(d.join("quarantine.json"), "{ not json").expect("write");
        let (q, err) = Quarantines::load(&d);
        assert!(q.entries.is_empty());
        match err {
            Some(StateError::Corrupt { moved, .. }) => {
                assert!(moved.exists(), "the corrupt file is kept");
            }
            other => panic!("expected a corrupt-state error, got {other:?}"),
        }
        assert!(!d.join("quarantine.json").exists());
    }

    #[test]
    fn audit_log_appends() {
        let d = tmpdir("audit");
        let (q, _) = Quarantines::load(&d);
        q.audit(
            "quarantine",
            "pump-01",
            Some(Action::Isolate),
            "root",
            "scan",
        )
        .expect("audit");
        q.audit("release", "pump-01", None, "root", "fixed")
            .expect("audit");
        let log = std::fs::read_to_string(d.join("audit.log")).expect("read");
        assert_eq!(log.lines().count(), 2);
        assert!(log.contains("\"event\":\"release\""));
    }
}
