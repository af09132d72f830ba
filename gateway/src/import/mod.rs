//! Importers: knowledge a hospital already holds elsewhere, taken into the policy repository
//! as files a person reviews (`lazaret plan`, a pull request), never applied past it.
//!
//! - [`csv`]: a CMMS or asset-management export becomes `[[devices]]` entries, updated in
//!   place where they already exist.
//!
//! An importer reads the repository, plans every change, checks that the repository it
//! would leave loads as a policy, and only then writes: it refuses whole (nothing written)
//! on any input it would have to guess about, naming the row and column.

pub mod csv;
pub mod mud;

use std::path::{Path, PathBuf};

/// A file's bytes, refused past `max` (a path to `/dev/zero` ends): `Err` says why.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        let size = if max >= 1 << 20 {
            format!("{} MiB", max >> 20)
        } else {
            format!("{} KiB", max >> 10)
        };
        return Err(format!("larger than the {size} such a file may be"));
    }
    Ok(bytes)
}

/// Writes each file whole (a temporary file renamed over it), so that a reader, the
/// daemon's watcher included, never sees half of one; and every temporary file before the
/// first rename, so that a write that fails (a full disk, a directory in the way) leaves
/// every file as it was. A symbolic link is refused: renaming over it would replace the
/// link, not the shared file it points to. `Err`: the file that failed.
fn write_files<'a>(
    files: impl IntoIterator<Item = &'a (PathBuf, String)>,
) -> Result<(), (PathBuf, std::io::Error)> {
    let mut temps: Vec<(PathBuf, &PathBuf)> = Vec::new();
    let clean = |temps: &[(PathBuf, &PathBuf)]| {
        for (tmp, _) in temps {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (path, text) in files {
        let step = || -> std::io::Result<PathBuf> {
            // Whatever would make a rename fail is refused before the first one.
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => return Err(std::io::Error::other(
                    "a symbolic link: edit the file it points to, or replace the link by the file",
                )),
                Ok(m) if !m.is_file() => {
                    return Err(std::io::Error::other("in the way: not a regular file"))
                }
                _ => {}
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = path.with_extension("toml.import-tmp");
            // A stale temporary file (or a link planted as one) is removed, and the new one
            // created, never opened through a link.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            Ok(tmp)
        };
        match step() {
            Ok(tmp) => temps.push((tmp, path)),
            Err(e) => {
                clean(&temps);
                return Err((path.clone(), e));
            }
        }
    }
    for (i, (tmp, path)) in temps.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            clean(&temps[i..]);
            return Err(((*path).clone(), e));
        }
    }
    Ok(())
}
