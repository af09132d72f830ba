//! Reading a policy from a git revision (for `lazaret plan`): the `*.toml` files under a
//! path at that revision, read with `git ls-tree` and one `git cat-file --batch`, without a
//! checkout. I/O: runs `git`; the rest of `policy` stays pure.
//!
//! A revision comes from a pull request, so it is held to the loader's limits before a byte
//! is read ([`super::load::Limits`]: sizes come from `ls-tree -l`): a blob past the per-file
//! or whole-policy size, or more files than allowed, is refused by name. A symbolic link
//! named `*.toml` is refused too (a checkout would follow it, possibly out of the
//! repository; its blob is only the target's name).

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
    #[error("{name}: {size} bytes, more than the {limit} bytes a policy file may have")]
    FileTooLarge { name: String, size: u64, limit: u64 },
    #[error("the policy at {rev} is {size} bytes, more than the {limit} bytes allowed in all")]
    PolicyTooLarge { rev: String, size: u64, limit: u64 },
    #[error("more than {limit} policy files at {rev}")]
    TooManyFiles { rev: String, limit: usize },
    #[error(
        "{0} is a symbolic link or a submodule: policy files and directories must be regular ones"
    )]
    Symlink(String),
}

/// The policy directory `path` (relative to `cwd`) as a path from the repository's root,
/// `/`-terminated unless it is the root: what `ls-tree --full-name` prefixes its files with.
fn policy_root(cwd: &Path, path: &str) -> Result<String, GitError> {
    let out = Command::new("git")
        .current_dir(cwd)
        .args(["rev-parse", "--show-prefix"])
        .output()?;
    if !out.status.success() {
        return Err(GitError::Failed {
            command: "rev-parse --show-prefix".to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.starts_with('/') {
        return Err(GitError::Failed {
            command: format!("ls-tree -- {path}"),
            message: "give the policy directory relative to the current directory".to_string(),
        });
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in prefix.split('/').chain(path.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(parts.iter().map(|p| format!("{p}/")).collect())
}

/// The policy files under `path` (relative to `cwd`) at `rev`, named `rev:path/file`, but
/// those under its importers' directory ([`super::load::IMPORT_DIR`]).
pub fn read_revision(cwd: &Path, rev: &str, path: &str) -> Result<Vec<SourceFile>, GitError> {
    let limits = super::load::Limits::DEFAULT;
    let out = Command::new("git")
        .current_dir(cwd)
        .args(["ls-tree", "-r", "-z", "-l", "--full-name", rev, "--", path])
        .output()?;
    if !out.status.success() {
        return Err(GitError::Failed {
            command: format!("ls-tree {rev} -- {path}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let root = policy_root(cwd, path)?;
    let import = format!("{root}{}/", super::load::IMPORT_DIR);
    let advisories = format!("{root}{}/", super::load::ADVISORIES_DIR);
    // `advisories/*.json` at the root, as the directory loader reads them.
    let advisory = |f: &str| {
        f.strip_prefix(&advisories)
            .is_some_and(|rest| !rest.contains('/') && super::load::is_advisory(rest))
    };
    let mut blobs = Vec::new();
    let mut total = 0u64;
    for entry in out.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        // "<mode> <type> <object> <size, right-aligned>\t<path>"
        let Some((meta, file)) = entry.split_once('\t') else {
            continue;
        };
        let mut parts = meta.split_whitespace();
        let (mode, kind, object, size) = (parts.next(), parts.next(), parts.next(), parts.next());
        let hidden = file.split('/').any(|c| c.starts_with('.'));
        // The directory loader follows a linked directory (advisories/, a ward's devices)
        // and reads a submodule's files; a revision lists either as one entry, whose files
        // a plan would silently lose. Both are refused here, as a linked file is below.
        let dir_like = !file.rsplit('/').next().unwrap_or(file).contains('.');
        let linked_dir = mode == Some("120000") && (dir_like || format!("{file}/") == advisories);
        if !hidden && !file.starts_with(&import) && (linked_dir || mode == Some("160000")) {
            return Err(GitError::Symlink(format!(
                "{rev}:{}",
                crate::text::printable(file)
            )));
        }
        let policy_file = file.ends_with(".toml") || advisory(file);
        if kind != Some("blob") || !policy_file || hidden || file.starts_with(&import) {
            continue;
        }
        let name = format!("{rev}:{}", crate::text::printable(file));
        if mode == Some("120000") {
            return Err(GitError::Symlink(name));
        }
        let size: u64 = size
            .and_then(|s| s.parse().ok())
            .ok_or(GitError::Protocol)?;
        if size > limits.file_bytes {
            return Err(GitError::FileTooLarge {
                name,
                size,
                limit: limits.file_bytes,
            });
        }
        total += size;
        if total > limits.total_bytes {
            return Err(GitError::PolicyTooLarge {
                rev: rev.to_string(),
                size: total,
                limit: limits.total_bytes,
            });
        }
        if blobs.len() >= limits.files {
            return Err(GitError::TooManyFiles {
                rev: rev.to_string(),
                limit: limits.files,
            });
        }
        if let Some(object) = object {
            blobs.push((file.to_string(), object.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .expect("git runs")
            .status
            .success();
        assert!(ok, "git {args:?}");
    }

    /// A revision from a pull request is held to the loader's limits before anything is
    /// read: an oversized file, a symbolic link.
    #[test]
    fn a_hostile_revision_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        git(root, &["init", "-q"]);
        std::fs::create_dir(root.join("policies")).expect("mkdir");
        std::fs::write(root.join("policies/site.toml"), "[site]\nname = \"x\"\n").expect("w");
        git(root, &["add", "."]);
        git(root, &["commit", "-qm", "good"]);
        assert_eq!(
            read_revision(root, "HEAD", "policies").expect("read").len(),
            1
        );

        std::os::unix::fs::symlink("/etc/passwd", root.join("policies/passwd.toml")).expect("ln");
        git(root, &["add", "."]);
        git(root, &["commit", "-qm", "link"]);
        let err = read_revision(root, "HEAD", "policies").expect_err("refused");
        assert!(
            matches!(err, GitError::Symlink(ref n) if n.ends_with("passwd.toml")),
            "{err}"
        );

        std::fs::remove_file(root.join("policies/passwd.toml")).expect("rm");
        let big = vec![b'#'; (Limits::DEFAULT.file_bytes + 1) as usize];
        std::fs::write(root.join("policies/big.toml"), big).expect("w");
        git(root, &["add", "-A"]);
        git(root, &["commit", "-qm", "big"]);
        let err = read_revision(root, "HEAD", "policies").expect_err("refused");
        assert!(
            matches!(err, GitError::FileTooLarge { ref name, .. } if name.ends_with("big.toml")),
            "{err}"
        );
    }

    /// The importers' inputs at the policy root are not policy, at a revision as in a
    /// directory; a directory of that name deeper down is, and so is the root's from a
    /// subdirectory's view.
    #[test]
    fn the_import_directory_is_not_read_as_policy() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        git(root, &["init", "-q"]);
        for d in ["policies/import", "policies/devices/import"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(root.join("policies/site.toml"), "[site]\nname = \"x\"\n").expect("w");
        std::fs::write(root.join("policies/import/map.toml"), "[columns]\n").expect("w");
        std::fs::write(root.join("policies/devices/import/d.toml"), "").expect("w");
        git(root, &["add", "."]);
        git(root, &["commit", "-qm", "import"]);
        let names = |cwd: &Path, path: &str| -> Vec<String> {
            let files = read_revision(cwd, "HEAD", path).expect("read");
            files.into_iter().map(|f| f.name).collect()
        };
        let want = [
            "HEAD:policies/devices/import/d.toml",
            "HEAD:policies/site.toml",
        ];
        assert_eq!(names(root, "policies"), want);
        assert_eq!(names(root, "./policies/"), want);
        assert_eq!(names(&root.join("policies/devices"), ".."), want);
        // An absolute path has no place in a revision's tree: refused, not misread.
        let abs = root.join("policies").display().to_string();
        assert!(read_revision(root, "HEAD", &abs).is_err());
        // A linked advisories/ directory is refused at a revision (its files would be lost).
        std::fs::create_dir_all(root.join("shared")).expect("mkdir");
        std::os::unix::fs::symlink("../shared", root.join("policies/advisories")).expect("ln");
        git(root, &["add", "."]);
        git(root, &["commit", "-qm", "link"]);
        let err = read_revision(root, "HEAD", "policies").expect_err("linked advisories");
        assert!(
            matches!(err, GitError::Symlink(ref n) if n.ends_with("advisories")),
            "{err}"
        );
        std::fs::remove_file(root.join("policies/advisories")).expect("rm");
        let listed = super::super::load::read_dir(&root.join("policies")).expect("dir");
        assert_eq!(
            listed.len(),
            2,
            "{:?}",
            listed.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
    }

    use super::super::load::Limits;
}
