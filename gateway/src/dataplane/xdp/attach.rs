//! Attaching through pinned bpf links, so enforcement outlives the daemon.
//!
//! Each interface's XDP link is pinned at `<pin_dir>/v<ABI>/link_<ifname>`. When the daemon
//! stops — SIGTERM, crash or `kill -9` — the link and the maps stay pinned and the last
//! policy keeps enforcing (fail closed). A starting daemon that finds a pinned link swaps its
//! freshly loaded program into that link atomically (`bpf_link_update`): there is no moment
//! without a program on the interface. A link pinned under an older ABI version is swapped
//! the same way, then the old version's pins are removed. `lazaret detach` is the only way
//! to remove enforcement.

use std::path::{Path, PathBuf};

use aya::programs::{links::FdLink, links::PinnedLink, Xdp, XdpMode};

use super::{AttachMode, DatapathError};
use crate::dataplane::Enforcer;

/// What happened on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attached {
    /// A new link was created in this mode.
    New(AttachMode),
    /// The program replaced the one in an existing pinned link (same ABI or an upgrade).
    Adopted,
}

pub(crate) fn link_pin(pin_dir: &Path, ifname: &str) -> PathBuf {
    pin_dir.join(format!("link_{ifname}"))
}

/// Unpins `ifname`'s link: the program leaves the interface (nothing else holds the link).
/// No BPF is needed for this, only the bpf filesystem.
pub(crate) fn release(pin_dir: &Path, ifname: &str) {
    let _ = std::fs::remove_file(link_pin(pin_dir, ifname));
}

/// Attaches `prog` to `ifname`, adopting a link pinned in `pin_dir` or in `legacy` (older
/// ABI directories), and pins the result in `pin_dir`.
pub(crate) fn attach(
    prog: &mut Xdp,
    ifname: &str,
    mode: AttachMode,
    pin_dir: &Path,
    legacy: &[PathBuf],
) -> Result<Attached, DatapathError> {
    let pin = link_pin(pin_dir, ifname);
    let candidates = std::iter::once(pin.clone()).chain(legacy.iter().map(|d| link_pin(d, ifname)));
    for old in candidates {
        if !old.exists() {
            continue;
        }
        match adopt(prog, &old, &pin) {
            Ok(()) => return Ok(Attached::Adopted),
            Err(e) => {
                // A link whose interface went away is defunct: drop it and attach anew.
                tracing::warn!(interface = ifname, pin = %old.display(), error = %e, "pinned link unusable, attaching anew");
                let _ = std::fs::remove_file(&old);
            }
        }
    }
    let used = match mode {
        AttachMode::Native => {
            attach_new(prog, ifname, XdpMode::Driver, &pin).map(|()| AttachMode::Native)?
        }
        AttachMode::Skb => {
            attach_new(prog, ifname, XdpMode::Skb, &pin).map(|()| AttachMode::Skb)?
        }
        AttachMode::Auto => match attach_new(prog, ifname, XdpMode::Driver, &pin) {
            Ok(()) => AttachMode::Native,
            Err(native) => {
                tracing::warn!(interface = ifname, error = %native, "native XDP unavailable, falling back to skb (generic) mode");
                attach_new(prog, ifname, XdpMode::Skb, &pin)?;
                AttachMode::Skb
            }
        },
    };
    Ok(Attached::New(used))
}

fn attach_new(
    prog: &mut Xdp,
    ifname: &str,
    mode: XdpMode,
    pin: &Path,
) -> Result<(), DatapathError> {
    let id = prog.attach(ifname, mode)?;
    let link = prog.take_link(id)?;
    let fd: FdLink = link.try_into().map_err(|e| DatapathError::Link(format!(
        "{ifname}: the kernel attached through netlink, not a bpf link, so the attachment cannot be pinned: {e}"
    )))?;
    fd.pin(pin).map_err(|e| {
        DatapathError::Link(format!(
            "pinning the link of {ifname} at {}: {e}",
            pin.display()
        ))
    })?;
    Ok(())
}

/// Swaps `prog` into the link pinned at `old`, and makes sure it is pinned at `pin`.
fn adopt(prog: &mut Xdp, old: &Path, pin: &Path) -> Result<(), DatapathError> {
    let pinned = PinnedLink::from_pin(old)
        .map_err(|e| DatapathError::Link(format!("opening {}: {e}", old.display())))?;
    let fd: FdLink = pinned.into();
    // Keep a second handle to pin it under the new path after the update.
    let link = fd
        .try_into()
        .map_err(|e| DatapathError::Link(format!("{}: {e}", old.display())))?;
    let id = prog.attach_to_link(link)?;
    if old != pin {
        let link = prog.take_link(id)?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e| DatapathError::Link(format!("{e}")))?;
        fd.pin(pin)
            .map_err(|e| DatapathError::Link(format!("pinning at {}: {e}", pin.display())))?;
        let _ = std::fs::remove_file(old);
    } else {
        // The program stays referenced by the pinned link; our handle may go.
        let _ = prog.take_link(id)?;
    }
    Ok(())
}

/// Removes every pinned link and map under `root` (all ABI versions): XDP detaches from
/// every interface and the maps are freed. Returns what was removed.
pub fn detach_all(root: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut removed = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root) else {
        return Ok(removed);
    };
    for dir in dirs.flatten() {
        let dir = dir.path();
        if !is_version_dir(&dir) {
            continue;
        }
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let p = entry.path();
            std::fs::remove_file(&p)?;
            removed.push(p);
        }
        std::fs::remove_dir(&dir)?;
    }
    Ok(removed)
}

/// ABI version directories under `root` other than `current`.
pub(crate) fn legacy_dirs(root: &Path, current: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| is_version_dir(p) && p != current)
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Removes an old ABI directory's remaining pins (its maps) once its links were adopted.
pub(crate) fn remove_legacy(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The ABI a pin directory is named for (`v<N>`).
pub(crate) fn abi_of(dir: &Path) -> Option<u32> {
    dir.file_name()?.to_str()?.strip_prefix('v')?.parse().ok()
}

fn is_version_dir(p: &Path) -> bool {
    p.is_dir()
        && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with('v') && n[1..].chars().all(|c| c.is_ascii_digit()) && n.len() > 1
        })
}

/// Remembers the XDP mode an interface was attached in (a pinned link does not say).
pub(crate) fn record_mode(state_dir: &Path, ifname: &str, mode: Enforcer) {
    let _ = std::fs::create_dir_all(state_dir);
    let _ = std::fs::write(state_dir.join(format!("attach-{ifname}")), mode.label());
}

/// The XDP mode recorded when the link was created.
pub(crate) fn recorded_mode(state_dir: &Path, ifname: &str) -> Option<Enforcer> {
    let text = std::fs::read_to_string(state_dir.join(format!("attach-{ifname}"))).ok()?;
    Enforcer::from_label(text.trim()).filter(|e| e.is_xdp())
}
