//! Watching the policy directory: inotify events, debounced, and loaded only once the files
//! have stopped changing, so a `git pull` touching twenty files is one reload and a
//! half-written file is never compiled.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last change before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Starts watching `dir`; a unit message arrives on the channel for every relevant change
/// (already filtered: editor swap files, `.git` internals and non-TOML files are ignored,
/// except a change of `.git/HEAD`, which is a checkout).
pub fn watch(
    dir: &Path,
) -> notify::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // Only changes: the daemon's own reads of the policy (open, access, close)
            // would otherwise trigger reload after reload.
            let change = matches!(
                ev.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(_)
                    | notify::EventKind::Remove(_)
            ) && !matches!(
                ev.kind,
                notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
            );
            if change && ev.paths.iter().any(|p| relevant(p)) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok((watcher, rx))
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
        && (p.extension().is_some_and(|e| e == "toml") || p.is_dir() || !p.exists())
}

/// Waits until no change arrived for [`DEBOUNCE`], then until the directory's files
/// (sizes and modification times) are the same on two reads and no git operation holds
/// the index lock. Returns false if the channel closed.
pub async fn settle(rx: &mut mpsc::UnboundedReceiver<()>, dir: &Path) -> bool {
    loop {
        match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_) => {}
        }
        let before = fingerprint(dir);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if before == fingerprint(dir) && !dir.join(".git/index.lock").exists() {
            // Drop notifications that were queued by our own reads' timing.
            while rx.try_recv().is_ok() {}
            return true;
        }
    }
}

fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) => {
                    out.insert(p, (m.len(), m.modified().ok()));
                }
                Err(_) => {}
            }
        }
    }
    out
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
