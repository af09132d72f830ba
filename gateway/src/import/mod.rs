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
/// daemon's watcher included, never sees half of one. `Err`: the file that failed.
fn write_files<'a>(
    files: impl IntoIterator<Item = &'a (PathBuf, String)>,
) -> Result<(), (PathBuf, std::io::Error)> {
    for (path, text) in files {
        let fail = |e| (path.clone(), e);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        let tmp = path.with_extension("toml.import-tmp");
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)?;
    }
    Ok(())
}
