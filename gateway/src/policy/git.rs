//! Reading a policy from a git revision (for `lazaret plan`): the `*.toml` files under a
//! path at that revision, read with `git ls-tree` and one `git cat-file --batch`, without a
//! checkout. I/O: runs `git`; the rest of `policy` stays pure.

use super::source::SourceFile;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `rev` names a commit in the repository around `cwd`.
pub fn is_revision(cwd: &Path, rev: &str) -> bool {
    Command::new("git")
        .current_dir(cwd)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why a revision could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("running git: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("git {command}: {message}")]
    Failed { command: String, message: String },
    #[error("no .toml files under {path:?} at {rev}")]
    Empty { rev: String, path: String },
    #[error("unexpected output from git cat-file")]
    Protocol,
    #[error("{0} is not UTF-8")]
    NotUtf8(String),
}

/// The policy files under `path` (relative to `cwd`) at `rev`, named `rev:path/file`.
pub fn read_revision(cwd: &Path, rev: &str, path: &str) -> Result<Vec<SourceFile>, GitError> {
    let out = Command::new("git")
        .current_dir(cwd)
        .args(["ls-tree", "-r", "-z", "--full-name", rev, "--", path])
        .output()?;
    if !out.status.success() {
        return Err(GitError::Failed {
            command: format!("ls-tree {rev} -- {path}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut blobs = Vec::new();
    for entry in out.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        // "<mode> <type> <object>\t<path>"
        let Some((meta, file)) = entry.split_once('\t') else {
            continue;
        };
        let mut parts = meta.split(' ');
        let (_, kind, object) = (parts.next(), parts.next(), parts.next());
        let hidden = file.split('/').any(|c| c.starts_with('.'));
        if kind == Some("blob") && file.ends_with(".toml") && !hidden {
            if let Some(object) = object {
                blobs.push((file.to_string(), object.to_string()));
            }
        }
    }
    blobs.sort();
    if blobs.is_empty() {
        return Err(GitError::Empty {
            rev: rev.to_string(),
            path: path.to_string(),
        });
    }
    let mut child = Command::new("git")
        .current_dir(cwd)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or(GitError::Protocol)?;
    let request: String = blobs.iter().map(|(_, o)| format!("{o}\n")).collect();
    // Write from a thread: git answers while reading, and a big policy fills the pipe.
    let writer = std::thread::spawn(move || stdin.write_all(request.as_bytes()));
    let mut data = Vec::new();
    child
        .stdout
        .take()
        .ok_or(GitError::Protocol)?
        .read_to_end(&mut data)?;
    child.wait()?;
    writer.join().map_err(|_| GitError::Protocol)??;
    let mut files = Vec::with_capacity(blobs.len());
    let mut at = 0usize;
    for (name, _) in blobs {
        let header_end = data
            .get(at..)
            .unwrap_or_default()
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| at + i)
            .ok_or(GitError::Protocol)?;
        let header =
            String::from_utf8_lossy(data.get(at..header_end).unwrap_or_default()).to_string();
        let size: usize = header
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(GitError::Protocol)?;
        let start = header_end + 1;
        let body = data.get(start..start + size).ok_or(GitError::Protocol)?;
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| GitError::NotUtf8(format!("{rev}:{name}")))?;
        files.push(SourceFile::new(format!("{rev}:{name}"), text));
        at = start + size + 1;
    }
    Ok(files)
}
