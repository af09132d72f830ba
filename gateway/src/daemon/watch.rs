//! Watching the policy directory: inotify events, and a reload once the files have stopped
//! changing, so a `git pull` touching twenty files is one reload and a half-written file
//! is never compiled — without a fixed wait, since a one-device edit should enforce within
//! tens of milliseconds.
//!
//! "Stopped changing" is: no event for [`QUIET`], no policy file open for writing (inotify
//! reports each write and each close after writing, so a writer that pauses mid-file keeps
//! the reload waiting), and no git operation holding `.git/index.lock` (a checkout writes
//! files one by one under that lock). Waiting for writers and the lock is bounded by
//! [`MAX_WAIT`]; past it the reload goes ahead, and a file still half-written fails to
//! parse and is refused like any invalid policy.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last change before a reload: longer than the gap between the
/// files of one `cp`, `rsync` or editor save, short against the one-device reload target.
pub const QUIET: Duration = Duration::from_millis(15);

/// Longest wait for a file open for writing or a git lock before reloading anyway.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// What one inotify event means for settling.
#[derive(Debug)]
enum Change {
    /// Data written to a policy file: it is open for writing until [`Change::Closed`].
    Written(PathBuf),
    /// A policy file was closed after writing.
    Closed(PathBuf),
    /// Anything else relevant: created, removed, renamed, a checkout.
    Other,
}

/// The policy directory's watch: inotify events, filtered (editor swap files, `.git`
/// internals except `HEAD` and branch refs, and non-TOML files are ignored), and which
/// policy files are open for writing.
pub struct PolicyWatch {
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<Change>,
    dir: PathBuf,
    writing: HashSet<PathBuf>,
    /// A change not reloaded yet: when the first and the last event of it arrived.
    pending: Option<(Instant, Instant)>,
}

impl PolicyWatch {
    pub fn new(dir: &Path) -> notify::Result<PolicyWatch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                // The kernel's queue overflowed: changes were lost, so assume one.
                if ev.need_rescan() {
                    let _ = tx.send(Change::Other);
                    return;
                }
                if !ev.paths.iter().any(|p| relevant(p)) {
                    return;
                }
                let path = ev.paths.first().cloned().unwrap_or_default();
                let change = match ev.kind {
                    EventKind::Modify(ModifyKind::Data(_)) => Change::Written(path),
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Closed(path),
                    // The daemon's own reads (open, read, close) and metadata are not changes.
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => return,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => {
                        Change::Other
                    }
                    _ => return,
                };
                let _ = tx.send(change);
            })?;
        watcher.watch(dir, RecursiveMode::Recursive)?;
        Ok(PolicyWatch {
            _watcher: watcher,
            rx,
            dir: dir.to_path_buf(),
            writing: HashSet::new(),
            pending: None,
        })
    }

    /// Waits for the next change. Cancel-safe (for `select!`); false once the watch ended.
    pub async fn changed(&mut self) -> bool {
        match self.rx.recv().await {
            Some(c) => {
                self.note(c);
                true
            }
            None => false,
        }
    }

    /// When to ask [`Self::settled`], while a change is pending. The daemon's loop sleeps
    /// until then alongside its other work, so settling never holds up events, the
    /// control API or signals.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.pending.map(|(_, last)| (last + QUIET).into())
    }

    /// At the deadline: whether the pending change has settled (it is then taken). Queued
    /// events are taken into account first.
    pub fn settled(&mut self) -> bool {
        while let Ok(c) = self.rx.try_recv() {
            self.note(c);
        }
        let Some((since, last)) = self.pending else {
            return false;
        };
        if last.elapsed() < QUIET {
            return false;
        }
        let lock = self.dir.join(".git/index.lock").exists();
        if !self.writing.is_empty() || lock {
            if since.elapsed() <= MAX_WAIT {
                // Ask again a quiet time from now.
                self.pending = Some((since, Instant::now()));
                return false;
            }
            tracing::warn!(
                open_for_writing = ?self.writing,
                git_lock = lock,
                "policy directory still busy after {MAX_WAIT:?}; reloading anyway"
            );
            self.writing.clear();
        }
        self.pending = None;
        true
    }

    /// Waits until the pending change has settled (see the module docs); at once when none
    /// is pending. False if the watch ended. For callers with nothing else to do (tests,
    /// the reload benchmark).
    pub async fn settle(&mut self) -> bool {
        loop {
            let Some(deadline) = self.deadline() else {
                return true;
            };
            tokio::select! {
                c = self.rx.recv() => match c {
                    Some(c) => self.note(c),
                    None => return false,
                },
                () = tokio::time::sleep_until(deadline) => {
                    if self.settled() {
                        return true;
                    }
                }
            }
        }
    }

    fn note(&mut self, c: Change) {
        match c {
            Change::Written(p) => {
                self.writing.insert(p);
            }
            Change::Closed(p) => {
                self.writing.remove(&p);
            }
            Change::Other => {}
        }
        // A file removed while open is no longer ours to wait for.
        self.writing.retain(|p| p.exists());
        let now = Instant::now();
        self.pending = Some((self.pending.map_or(now, |(since, _)| since), now));
    }
}

fn relevant(p: &Path) -> bool {
    let s = p.to_string_lossy();
    if s.contains("/.git/") {
        return s.ends_with("/.git/HEAD") || s.contains("/.git/refs/heads/");
    }
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !(name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp"))
        && (p.extension().is_some_and(|e| e == "toml" || e == "json") || p.is_dir() || !p.exists())
}

/// The git commit of the policy directory (with `-dirty` when the work tree differs), if it
/// is inside a git checkout.
pub fn git_commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--short=12", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--", "."])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty {
        commit.push_str("-dirty");
    }
    Some(commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Bounds every wait of these tests: a broken watch fails instead of hanging.
    const LIMIT: Duration = Duration::from_secs(20);

    async fn settled(w: &mut PolicyWatch) -> Instant {
        let waited = tokio::time::timeout(LIMIT, async {
            assert!(w.changed().await, "a change is seen");
            assert!(w.settle().await, "the directory settles");
        })
        .await;
        assert!(waited.is_ok(), "settled within {LIMIT:?}");
        Instant::now()
    }

    #[tokio::test]
    async fn a_file_half_written_is_waited_for() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = PolicyWatch::new(tmp.path()).expect("watch");
        let path = tmp.path().join("devices.toml");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::File::create(&path).expect("create");
                f.write_all(b"[[devices]]\nid = \"pump-01\"\n")
                    .expect("write");
                // A writer pausing mid-file: far longer than the quiet time.
                std::thread::sleep(Duration::from_millis(300));
                f.write_all(b"class = \"infusion-pump\"\n").expect("write");
                drop(f);
                Instant::now()
            })
        };
        let at = settled(&mut w).await;
        let closed = writer.join().expect("writer");
        assert!(at >= closed, "settled before the writer closed the file");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with("\"infusion-pump\"\n"), "{text}");
    }

    #[tokio::test]
    async fn a_git_checkout_is_waited_for() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join(".git")).expect("mkdir");
        let mut w = PolicyWatch::new(tmp.path()).expect("watch");
        let lock = tmp.path().join(".git/index.lock");
        std::fs::write(&lock, b"").expect("lock");
        let dir = tmp.path().to_path_buf();
        let git = std::thread::spawn(move || {
            for i in 0..5 {
                std::fs::write(dir.join(format!("wf-{i}.toml")), b"# workflow\n").expect("write");
                std::thread::sleep(Duration::from_millis(60));
            }
            std::fs::remove_file(dir.join(".git/index.lock")).expect("unlock");
            Instant::now()
        });
        let at = settled(&mut w).await;
        let unlocked = git.join().expect("checkout");
        assert!(at >= unlocked, "settled while git held its index lock");
        assert!(!lock.exists());
    }

    #[tokio::test]
    async fn an_edit_settles_after_the_quiet_time() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut w = PolicyWatch::new(tmp.path()).expect("watch");
        std::fs::write(tmp.path().join("devices.toml"), b"[[devices]]\n").expect("write");
        settled(&mut w).await;
        assert!(w.writing.is_empty(), "{:?}", w.writing);
        // A change of an ignored file is not a change.
        std::fs::write(tmp.path().join("notes.txt"), b"x").expect("write");
        std::fs::write(tmp.path().join(".devices.toml.swp"), b"x").expect("write");
        let nothing = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
        assert!(nothing.is_err(), "ignored files reported as changes");
    }
}
