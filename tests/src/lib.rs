//! Helpers shared by lazaret's integration tests: crafted frames, network namespaces, and
//! the path of the real `lazaret` binary.

pub mod bridge;
pub mod bypass;
pub mod daemon;
pub mod demo;
pub mod frames;
pub mod ha;
pub mod handmade;
pub mod netns;
pub mod nftlab;
pub mod reliability;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The `lazaret` binary under test: `$LAZARET_BIN`, or the workspace's debug build
/// (`cargo xtask test` builds it first).
pub fn lazaret_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LAZARET_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/lazaret");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p lazaret` (cargo xtask test does) or set LAZARET_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Copies every file of `from` over the same path below `to`, creating directories and
/// writing files in place (as `git checkout` does): a working copy of a policy directory.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}
