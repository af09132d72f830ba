//! The last-known-good policy: the policy of the last generation that enforced, kept in the
//! state directory so a gateway that boots (or restarts) with a policy checkout that is
//! broken, half-merged or unreadable enforces what it enforced before instead of nothing.
//!
//! What is kept is the policy's *source* (every file's name and text as it compiled), with
//! its commit, generation and a SHA-256 over the texts, written atomically after each
//! generation that enforced. At start it is compiled again: compiling is deterministic, so
//! the maps are the ones that enforced, and unlike a dump of the maps the snapshot survives
//! an upgrade of lazaret that changes the datapath's ABI. A snapshot whose checksum does not
//! match (damaged, or edited by hand) is refused and left in place for inspection.
//!
//! Writes happen off the event loop ([`Keeper::keep`]): a big policy is megabytes, and a
//! slow disk must not hold up events or quarantines. Writers are serialized and a write
//! older than the one already on disk is skipped, so the file only ever moves forward.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::{SourceFile, Sources};

/// The file in the state directory.
pub const FILE: &str = "last-known-good.json";
/// Larger than any snapshot of a policy the loader accepts (64 MiB of sources, escaped).
const MAX_BYTES: u64 = 512 << 20;
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LkgError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a last-known-good policy this lazaret can read ({message}); left in place, not enforced")]
    Format { path: PathBuf, message: String },
    #[error("{path}: checksum mismatch (recorded {recorded}, contents {actual}): the file was damaged or edited; left in place, not enforced")]
    Checksum {
        path: PathBuf,
        recorded: String,
        actual: String,
    },
}

/// One policy file as it compiled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileText {
    pub name: String,
    pub text: String,
}

/// A last-known-good policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format: u32,
    /// The lazaret that wrote it.
    pub lazaret: String,
    /// The generation it enforced as.
    pub generation: u64,
    /// The git commit it was loaded from, if the policy directory is a checkout.
    pub commit: Option<String>,
    pub policy_dir: PathBuf,
    /// Unix seconds.
    pub saved: u64,
    /// SHA-256 over the files (see [`digest`]), lowercase hex.
    pub sha256: String,
    pub files: Vec<FileText>,
}

/// SHA-256 over every file's name and text, each length-prefixed so no two different sets
/// of files hash alike by moving bytes from one field to the next.
pub fn digest(files: &[FileText]) -> String {
    let mut h = Sha256::new();
    for f in files {
        for part in [f.name.as_bytes(), f.text.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Snapshot {
    pub fn of(
        sources: &Sources,
        generation: u64,
        commit: Option<String>,
        policy_dir: &Path,
    ) -> Snapshot {
        let files: Vec<FileText> = sources
            .files()
            .iter()
            .map(|f| FileText {
                name: f.name.clone(),
                text: f.text.clone(),
            })
            .collect();
        Snapshot {
            format: FORMAT,
            lazaret: env!("CARGO_PKG_VERSION").into(),
            generation,
            commit,
            policy_dir: policy_dir.to_path_buf(),
            saved: super::quarantine::now(),
            sha256: digest(&files),
            files,
        }
    }

    /// The policy files, to parse and compile again.
    pub fn source_files(&self) -> Vec<SourceFile> {
        self.files
            .iter()
            .map(|f| SourceFile::new(f.name.clone(), f.text.clone()))
            .collect()
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), LkgError> {
        let path = state_dir.join(FILE);
        let body = serde_json::to_vec(self).map_err(|e| LkgError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        super::state::write_atomic(&path, &body).map_err(|source| LkgError::Io { path, source })
    }

    /// The snapshot in `state_dir`, `None` if there is none; its checksum verified.
    pub fn load(state_dir: &Path) -> Result<Option<Snapshot>, LkgError> {
        use std::io::Read;
        let path = state_dir.join(FILE);
        let io = |source| LkgError::Io {
            path: path.clone(),
            source,
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mut body = Vec::new();
        file.take(MAX_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(io)?;
        if body.len() as u64 > MAX_BYTES {
            return Err(LkgError::Format {
                path,
                message: format!("larger than {MAX_BYTES} bytes"),
            });
        }
        let snap: Snapshot = serde_json::from_slice(&body).map_err(|e| LkgError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if snap.format != FORMAT {
            return Err(LkgError::Format {
                path,
                message: format!("format {} (this lazaret reads {FORMAT})", snap.format),
            });
        }
        let actual = digest(&snap.files);
        if actual != snap.sha256 {
            return Err(LkgError::Checksum {
                path,
                recorded: snap.sha256,
                actual,
            });
        }
        Ok(Some(snap))
    }
}

/// What is on disk, shared by the writers.
#[derive(Debug, Default)]
struct Written {
    /// (generation, checksum, commit) of the snapshot on disk, if this daemon wrote one.
    last: Option<(u64, String, Option<String>)>,
    /// The outcome of the last write, not yet collected by [`Keeper::outcome`].
    outcome: Option<Result<(), String>>,
}

/// Keeps the state directory's snapshot up to date with the generations that enforce.
#[derive(Clone, Debug)]
pub struct Keeper {
    state_dir: PathBuf,
    written: Arc<Mutex<Written>>,
}

impl Keeper {
    pub fn new(state_dir: &Path) -> Keeper {
        Keeper {
            state_dir: state_dir.to_path_buf(),
            written: Arc::default(),
        }
    }

    /// Writes the snapshot of `sources` on this thread (at start, before serving).
    pub fn keep_now(
        &self,
        sources: &Sources,
        generation: u64,
        commit: Option<String>,
        policy_dir: &Path,
    ) -> Result<(), LkgError> {
        let mut w = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write(
            &self.state_dir,
            &mut w,
            sources,
            generation,
            commit,
            policy_dir,
        )
    }

    /// Writes the snapshot of `sources` on a thread of its own; the outcome is collected
    /// with [`Self::outcome`].
    pub fn keep(
        &self,
        sources: Arc<Sources>,
        generation: u64,
        commit: Option<String>,
        policy_dir: &Path,
    ) {
        let (keeper, policy_dir) = (self.clone(), policy_dir.to_path_buf());
        let spawned = std::thread::Builder::new()
            .name("last-known-good".into())
            .spawn(move || {
                let mut w = keeper
                    .written
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let result = write(
                    &keeper.state_dir,
                    &mut w,
                    &sources,
                    generation,
                    commit,
                    &policy_dir,
                );
                w.outcome = Some(result.map_err(|e| e.to_string()));
            });
        if let Err(e) = spawned {
            let mut w = self
                .written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            w.outcome = Some(Err(format!("could not start the writer's thread: {e}")));
        }
    }

    /// The outcome of the last background write since the last call, if one finished.
    pub fn outcome(&self) -> Option<Result<(), String>> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .outcome
            .take()
    }
}

fn write(
    state_dir: &Path,
    w: &mut Written,
    sources: &Sources,
    generation: u64,
    commit: Option<String>,
    policy_dir: &Path,
) -> Result<(), LkgError> {
    if w.last.as_ref().is_some_and(|(g, _, _)| *g > generation) {
        // A newer generation's snapshot is already on disk: never move backwards.
        return Ok(());
    }
    let snap = Snapshot::of(sources, generation, commit, policy_dir);
    if w.last
        .as_ref()
        .is_some_and(|(_, sum, c)| *sum == snap.sha256 && *c == snap.commit)
    {
        // The same policy from the same commit: the file on disk already says so.
        return Ok(());
    }
    snap.save(state_dir)?;
    w.last = Some((generation, snap.sha256, snap.commit));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(texts: &[(&str, &str)]) -> Sources {
        Sources::new(
            texts
                .iter()
                .map(|(n, t)| SourceFile::new(n.to_string(), t.to_string()))
                .collect(),
        )
    }

    #[test]
    fn round_trips_and_verifies_its_checksum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = sources(&[("site.toml", "[site]\nname = \"x\"\n"), ("d.toml", "")]);
        let keeper = Keeper::new(dir.path());
        keeper
            .keep_now(&src, 7, Some("abc123".into()), Path::new("/p"))
            .expect("kept");
        let snap = Snapshot::load(dir.path()).expect("loads").expect("present");
        assert_eq!(snap.generation, 7);
        assert_eq!(snap.commit.as_deref(), Some("abc123"));
        let files = snap.source_files();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].name, "site.toml");
        assert_eq!(files[0].text, "[site]\nname = \"x\"\n");
    }

    #[test]
    fn none_when_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Snapshot::load(dir.path()).expect("no error"), None);
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_left_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = sources(&[("site.toml", "allow = 1\n")]);
        Keeper::new(dir.path())
            .keep_now(&src, 1, None, Path::new("/p"))
            .expect("kept");
        let path = dir.path().join(FILE);
        let body = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, body.replace("allow = 1", "allow = 2")).expect("tamper");
        let err = Snapshot::load(dir.path()).expect_err("refused");
        assert!(matches!(err, LkgError::Checksum { .. }), "{err}");
        assert!(path.exists(), "left for inspection");
        std::fs::write(&path, b"{ not json").expect("garble");
        let err = Snapshot::load(dir.path()).expect_err("refused");
        assert!(matches!(err, LkgError::Format { .. }), "{err}");
    }

    #[test]
    fn the_checksum_separates_names_from_texts() {
        let a = [FileText {
            name: "ab".into(),
            text: "c".into(),
        }];
        let b = [FileText {
            name: "a".into(),
            text: "bc".into(),
        }];
        assert_ne!(digest(&a), digest(&b));
    }

    #[test]
    fn never_moves_backwards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keeper = Keeper::new(dir.path());
        keeper
            .keep_now(&sources(&[("a.toml", "new")]), 9, None, Path::new("/p"))
            .expect("kept");
        keeper
            .keep_now(&sources(&[("a.toml", "old")]), 8, None, Path::new("/p"))
            .expect("skipped");
        let snap = Snapshot::load(dir.path()).expect("loads").expect("present");
        assert_eq!((snap.generation, snap.files[0].text.as_str()), (9, "new"));
    }

    #[test]
    fn a_background_write_reports_its_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"").expect("blocker");
        let keeper = Keeper::new(&blocker);
        keeper.keep(
            Arc::new(sources(&[("a.toml", "x")])),
            1,
            None,
            Path::new("/p"),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let outcome = loop {
            if let Some(o) = keeper.outcome() {
                break o;
            }
            assert!(std::time::Instant::now() < deadline, "the write finished");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(
            outcome.is_err(),
            "an unwritable state directory is reported"
        );
    }
}
