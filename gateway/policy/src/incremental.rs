//! Incremental reloads: a device-only edit patched into the previous compile.
//!
//! The most frequent change to a hospital's policy is an inventory edit: a pump switched
//! to audit, a monitor's MAC after a board swap, a device added to a ward. Recompiling
//! 100,000 rules for that takes most of a second; [`Reloader`] re-reads only the files
//! whose stat changed and, when the edit is provably local, patches the changed devices
//! into the previous compile in milliseconds. Everything else runs the full pipeline
//! ([`super::load_and_compile`]).
//!
//! The patch is taken only when a full compile would give the same devices their same
//! policies:
//! - the set of files is the same and every changed file held only `[[devices]]` entries,
//!   before and after;
//! - the changed files parse and their devices validate without error against the rest of
//!   the policy, and the merged inventory has no duplicate id, MAC, address or id hash;
//! - every device that differs keeps its class, workflows and addresses (so its grants and
//!   every other device's policy are unchanged), or else no other device's policy
//!   depends on it (not named by a rule, not of a class or workflow whose members are
//!   managed peers) and it joins a grant group that already exists, and no group loses its
//!   last member (so the set of compiled policies and the unused-definition warnings stay
//!   the same).
//!
//! Any other case, and any error (so errors are always reported exactly as `lazaret check`
//! reports them), takes the full path. The result is equal to a full compile up to the
//! numbering of policies; tests compare the two over random edits.

use super::compile::{group_key, in_group, GroupKey};
use super::compiled::{Compiled, CompiledDevice, Stats};
use super::diag::{Diags, PolicyErrors, Severity};
use super::lints::capacity_problems;
use super::model::{Device, Policy};
use super::source::{SourceFile, Sources, Span};
use super::{load, validate};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What identifies a file's contents without reading it. `ctime` cannot be set from user
/// space, so a rewrite that restores size and mtime is still seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// Changed less than [`RACY`] before the stamp was taken: a second write within the
    /// file system's timestamp granularity could leave the stamp equal, so the contents
    /// are compared next time (git's "racily clean" entries).
    racy: bool,
}

/// File timestamps advance with the kernel's coarse clock, one tick (at most 10 ms) at a
/// time; ten ticks of margin.
const RACY: std::time::Duration = std::time::Duration::from_millis(100);

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        let at = |(s, ns): (i64, i64)| {
            std::time::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(s).unwrap_or(0),
                    u32::try_from(ns).unwrap_or(0),
                )
        };
        let changed = at((m.ctime(), m.ctime_nsec())).max(at((m.mtime(), m.mtime_nsec())));
        // A clock set back or a file dated in the future: racy too; and on a file system
        // with whole-second timestamps (vfat, some NFS) always: the contents are compared.
        let coarse = m.mtime_nsec() == 0 && m.ctime_nsec() == 0;
        let racy = coarse
            || std::time::SystemTime::now()
                .duration_since(changed)
                .map_or(true, |age| age < RACY);
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            racy,
        })
    }

    fn same(&self, now: &Stamp) -> bool {
        !self.racy
            && (self.dev, self.ino, self.len, self.mtime, self.ctime)
                == (now.dev, now.ino, now.len, now.mtime, now.ctime)
    }
}

/// How a reload was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Read, parsed, validated and compiled as a whole.
    Full,
    /// The previous compile with `devices` devices patched in (0: nothing changed).
    Patched { devices: usize },
}

/// The last good load of one policy directory.
struct Last {
    /// Stamped before reading, so a write racing the read shows as a change next time.
    files: Vec<(PathBuf, Stamp)>,
    devices_only: Vec<bool>,
    /// As written: without its service windows applied.
    policy: Policy,
    compiled: Arc<Compiled>,
    /// The service windows open in `compiled`.
    windows: BTreeSet<String>,
}

/// Loads a policy directory again and again, patching device-only edits in.
pub struct Reloader {
    dir: PathBuf,
    last: Option<Last>,
}

impl Reloader {
    pub fn new(dir: &Path) -> Reloader {
        Reloader {
            dir: dir.to_path_buf(),
            last: None,
        }
    }

    /// Loads the directory: patched when the change since the last good load allows it,
    /// in full otherwise. A failed load leaves the last good one as the base.
    pub fn load(&mut self) -> Result<(Arc<Compiled>, How), PolicyErrors> {
        self.load_at(crate::windows::now())
    }

    /// [`Self::load`] as the policy stands at `now` (Unix seconds): with the service
    /// windows open then. A policy with service windows is always loaded in full: a patch
    /// compiles devices as written and validates them against rules only, where a window
    /// names devices and classes too.
    pub fn load_at(&mut self, now: i64) -> Result<(Arc<Compiled>, How), PolicyErrors> {
        if let Some(last) = &mut self.last {
            // Advisories and `[site.risk]` change devices' modes and thresholds by their
            // risk, which a patch does not recompute: a full load.
            let risk = !last.policy.advisories.is_empty()
                || last.policy.site.risk_enforce_from.is_some()
                || last.policy.site.risk_tighten_from.is_some();
            if last.policy.exceptions.is_empty() && last.windows.is_empty() && !risk {
                if let Some((compiled, devices)) = patch(&self.dir, last) {
                    return Ok((compiled, How::Patched { devices }));
                }
            }
        }
        // The last load is no base for a full one. Freed meanwhile on another thread (a
        // big policy takes ~100 ms to free), and before the new one is built, so its
        // memory is reused.
        if let Some(old) = self.last.take() {
            std::thread::spawn(move || drop(old));
        }
        let last = full(&self.dir, now)?;
        let compiled = last.compiled.clone();
        self.last = Some(last);
        Ok((compiled, How::Full))
    }

    /// The service windows open in the last good load's compile.
    pub fn windows(&self) -> &BTreeSet<String> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        self.last.as_ref().map_or(&NONE, |l| &l.windows)
    }

    /// The policy of the last good load.
    pub fn policy(&self) -> Option<&Policy> {
        self.last.as_ref().map(|l| &l.policy)
    }
}

fn full(dir: &Path, now: i64) -> Result<Last, PolicyErrors> {
    let stamped: Option<Vec<(PathBuf, Stamp)>> = load::list(dir).and_then(|paths| {
        paths
            .into_iter()
            .map(|p| Stamp::of(&p).map(|s| (p, s)))
            .collect()
    });
    let files = load::read_dir(dir)?;
    let sources = Arc::new(Sources::new(files));
    let mut diags = Diags::default();
    let parsed = load::parse_kinds(&sources, &mut diags);
    let (raw, devices_only) = match parsed {
        Some((raw, kinds)) => (Some(raw), kinds),
        None => (None, Vec::new()),
    };
    let policy = raw.map(|raw| validate::validate(sources.clone(), raw, &mut diags));
    diags.sort();
    let mut policy = match policy {
        Some(p) if !diags.has_errors() => p,
        _ => {
            return Err(PolicyErrors {
                sources,
                diagnostics: diags.into_items(),
            })
        }
    };
    policy.warnings = diags.into_items();
    let (compiled, windows) = crate::windows::compile_at(&policy, now)?;
    // A file list that changed between listing and reading: no stamps, so the next load
    // is a full one.
    let names: Vec<&str> = sources.files().iter().map(|f| f.name.as_str()).collect();
    let files = stamped
        .filter(|s| {
            s.len() == names.len()
                && s.iter()
                    .zip(&names)
                    .all(|((p, _), n)| p.display().to_string() == *n)
        })
        .unwrap_or_default();
    Ok(Last {
        files,
        devices_only,
        policy,
        compiled: Arc::new(compiled),
        windows,
    })
}

/// The device-only patch, or `None` when the edit needs (or may need) the full path.
fn patch(dir: &Path, last: &mut Last) -> Option<(Arc<Compiled>, usize)> {
    let paths = load::list(dir)?;
    if last.files.is_empty()
        || paths.len() != last.files.len()
        || paths.iter().zip(&last.files).any(|(p, (q, _))| p != q)
    {
        return None;
    }
    // Stat first, then read: a write racing the read leaves a stamp that differs next time.
    let mut changed: Vec<(usize, Stamp)> = Vec::new();
    let mut restamped: Vec<(usize, Stamp)> = Vec::new();
    let mut texts: Vec<(usize, SourceFile)> = Vec::new();
    let mut regions: Vec<Region> = Vec::new();
    let mut raw_devices = Vec::new();
    for (i, (path, stamp)) in last.files.iter().enumerate() {
        let now = Stamp::of(path)?;
        if stamp.same(&now) {
            continue;
        }
        // The same careful read as a full load's (no FIFO, nothing past the limits).
        let mut budget = load::Limits::DEFAULT.total_bytes;
        let text = load::read_file(path, &load::Limits::DEFAULT, &mut budget).ok()?;
        let old = &last.policy.sources.files().get(i)?.text;
        if *old == text {
            restamped.push((i, now));
            continue;
        }
        if !last.devices_only.get(i).copied().unwrap_or(false) {
            return None;
        }
        // Only the entries that changed are parsed: the rest of the file is parsed already.
        // Blank lines stand in for the text before them, so spans are the file's offsets.
        let r = Region::of(i, old, &text)?;
        let mut part = "\n".repeat(r.start as usize);
        part.push_str(text.get(r.start as usize..r.new_end as usize)?);
        let (raw, diags, syntax) = load::parse_file(i, &SourceFile::new(String::new(), part));
        if syntax || diags.has_errors() || !raw.devices_only() {
            return None;
        }
        raw_devices.extend(raw.devices);
        texts.push((i, SourceFile::new(path.display().to_string(), text)));
        regions.push(r);
        changed.push((i, now));
    }
    for (i, stamp) in restamped {
        if let Some(f) = last.files.get_mut(i) {
            f.1 = stamp;
        }
    }
    if changed.is_empty() {
        return Some((last.compiled.clone(), 0));
    }

    let reuse = last.compiled.reuse.clone();
    let mut diags = Diags::default();
    let new = validate::devices_against(&last.policy, &raw_devices, &reuse.named, &mut diags);
    if diags.has_errors() || new.len() != raw_devices.len() {
        return None;
    }
    // No id, MAC, address or id hash claimed twice: the kept devices had none among
    // themselves, so the new ones are checked against each other and the kept ones — a
    // scan, not a rebuilt index.
    let in_region = |s: &Span| regions.iter().any(|r| r.holds(s));
    let changed_file = |d: &Device| in_region(&d.span);
    let mut claims: HashSet<Claim<'_>> = HashSet::new();
    for d in &new {
        for c in claims_of(d) {
            if !claims.insert(c) {
                return None;
            }
        }
    }
    let kept = || last.policy.devices.iter().filter(|d| !changed_file(d));
    if kept().any(|d| claims_of(d).any(|c| claims.contains(&c))) {
        return None;
    }

    // Which devices differ, and whether each difference stays local.
    let old_by_id: BTreeMap<&str, &Device> = last
        .policy
        .devices
        .iter()
        .filter(|d| changed_file(d))
        .map(|d| (d.id.as_str(), d))
        .collect();
    let new_by_id: BTreeMap<&str, &Device> = new.iter().map(|d| (d.id.as_str(), d)).collect();
    let ids: BTreeSet<&str> = old_by_id.keys().chain(new_by_id.keys()).copied().collect();
    let mut emptied = Vec::new();
    let mut patched: BTreeMap<String, Option<CompiledDevice>> = BTreeMap::new();
    for id in ids {
        let (o, n) = (old_by_id.get(id).copied(), new_by_id.get(id).copied());
        if let (Some(o), Some(n)) = (o, n) {
            if same_device(o, n) {
                continue;
            }
        }
        let ids = match (o, n) {
            // Same grants, and no other device's policy changes: keep its policy ids.
            (Some(o), Some(n)) if same_shape(o, n) => {
                let c = last.compiled.device(id)?;
                Some((c.policy, c.restrict_policy))
            }
            _ => {
                if o.is_some_and(|o| reuse.referenced(o)) || n.is_some_and(|n| reuse.referenced(n))
                {
                    return None;
                }
                emptied.extend(o.map(group_key));
                match n {
                    Some(n) => Some(*reuse.groups.get(&group_key(n))?),
                    None => None,
                }
            }
        };
        let device = match (n, ids) {
            (Some(n), Some(ids)) => Some(CompiledDevice::new(n, &last.compiled.classes, ids)),
            _ => None,
        };
        patched.insert(id.to_string(), device);
    }
    // A group left without members would drop its policy (and maybe warnings) in a full
    // compile.
    let members = |k: &GroupKey| {
        kept()
            .chain(&new)
            .any(|d| in_group(d, k) && !reuse.named.contains(&d.id))
    };
    if !emptied.iter().all(members) {
        return None;
    }

    let base = &*last.compiled;
    let mut devices: Vec<CompiledDevice> = base
        .devices
        .iter()
        .filter(|d| !patched.contains_key(&d.id))
        .cloned()
        .collect();
    let count = patched.len();
    devices.extend(patched.into_values().flatten());
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    let stats = Stats {
        devices: devices.len(),
        dev_mac: devices.iter().filter(|d| d.mac.is_some()).count(),
        dev_ip4: devices.iter().map(|d| d.ipv4.len()).sum(),
        dev_ip6: devices.iter().map(|d| d.ipv6.len()).sum(),
        ..base.stats.clone()
    };
    if !capacity_problems(&stats).is_empty() {
        return None;
    }

    // Commit. Warnings located in the changed entries are replaced by the new devices' own
    // (a device's warning may sit in a class file, but then a note points at the device);
    // those after them in the same file move with the text.
    let located_in_changed = |d: &super::Diagnostic| {
        d.span
            .iter()
            .chain(d.notes.iter().map(|n| &n.span))
            .any(&in_region)
    };
    let shift = |s: &mut Span| regions.iter().for_each(|r| r.shift(s));
    let fresh: Vec<_> = diags
        .items
        .into_iter()
        .filter(|d| d.severity() == Severity::Warning)
        .collect();
    let rewarn = |list: &[super::Diagnostic]| {
        let mut out = Diags::default();
        out.items = list
            .iter()
            .filter(|d| !located_in_changed(d))
            .cloned()
            .collect();
        for d in &mut out.items {
            d.span.iter_mut().for_each(shift);
            d.notes.iter_mut().for_each(|n| shift(&mut n.span));
        }
        if out.items.len() == list.len() && fresh.is_empty() {
            return out.items;
        }
        out.items.extend(fresh.iter().cloned());
        out.sort();
        out.items
    };
    let compiled = Arc::new(Compiled {
        site: base.site.clone(),
        interfaces: base.interfaces.clone(),
        classes: base.classes.clone(),
        devices,
        policies: base.policies.clone(),
        rules: base.rules.clone(),
        stats,
        lookup: base.lookup.clone(),
        reuse: base.reuse.clone(),
        warnings: rewarn(&base.warnings),
    });
    last.policy.warnings = rewarn(&last.policy.warnings);
    let sources = Arc::make_mut(&mut last.policy.sources);
    for (i, file) in texts {
        sources.replace(i, file);
    }
    last.policy.devices.retain(|d| !in_region(&d.span));
    last.policy
        .devices
        .iter_mut()
        .for_each(|d| shift(&mut d.span));
    last.policy.devices.extend(new);
    last.policy.devices.sort_by(|a, b| a.id.cmp(&b.id));
    for (i, stamp) in changed {
        if let Some(f) = last.files.get_mut(i) {
            f.1 = stamp;
        }
    }
    last.compiled = compiled.clone();
    Some((compiled, count))
}

/// Equal in what decides a device's grants and what other devices' policies read of it.
fn same_shape(a: &Device, b: &Device) -> bool {
    a.class == b.class && a.workflows == b.workflows && a.ipv4 == b.ipv4 && a.ipv6 == b.ipv6
}

/// The changed part of a devices file, widened to whole `[[devices]]` entries: bytes
/// `start..old_end` of the old text became `start..new_end` of the new one; the text
/// before and after is the same.
struct Region {
    file: u32,
    start: u32,
    old_end: u32,
    new_end: u32,
}

impl Region {
    /// The whole file when it cannot be cut safely: a multi-line string could hold a line
    /// that looks like an entry header (and CRLF files are not worth the care).
    fn of(file: usize, old: &str, new: &str) -> Option<Region> {
        let whole = || {
            Some(Region {
                file: u32::try_from(file).ok()?,
                start: 0,
                old_end: u32::try_from(old.len()).ok()?,
                new_end: u32::try_from(new.len()).ok()?,
            })
        };
        if [old, new]
            .iter()
            .any(|t| t.contains("\"\"\"") || t.contains("'''") || t.contains('\r'))
        {
            return whole();
        }
        let prefix = old
            .bytes()
            .zip(new.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let room = old.len().min(new.len()) - prefix;
        let suffix = old
            .bytes()
            .rev()
            .zip(new.bytes().rev())
            .take(room)
            .take_while(|(a, b)| a == b)
            .count();
        let entries = entry_starts(new);
        // The entry the first difference is in (its header line is in the common prefix,
        // so it is an entry header in the old text too), and the first entry after the last
        // difference.
        let start = entries
            .iter()
            .rev()
            .copied()
            .find(|&o| o + HEADER.len() <= prefix)
            .unwrap_or(0);
        let new_end = entries
            .iter()
            .copied()
            .find(|&o| o >= new.len() - suffix && o > start)
            .unwrap_or(new.len());
        // The suffix from `new_end` is the old text's from `old_end`, but the newline
        // before it may not be: `old_end` must start a line there too (an uncommented
        // `#[[devices]]` turns the old entry's tail into a new entry).
        let Some(old_end) = (new_end + old.len())
            .checked_sub(new.len())
            .filter(|&e| e >= start)
            .filter(|&e| e == old.len() || (e > 0 && old.as_bytes().get(e - 1) == Some(&b'\n')))
        else {
            return whole();
        };
        Some(Region {
            file: u32::try_from(file).ok()?,
            start: u32::try_from(start).ok()?,
            old_end: u32::try_from(old_end).ok()?,
            new_end: u32::try_from(new_end).ok()?,
        })
    }

    /// Whether `s` (in the old text) is inside the changed part.
    fn holds(&self, s: &Span) -> bool {
        s.file == self.file && s.start >= self.start && s.start < self.old_end
    }

    /// Moves `s` (in the old text, outside the changed part) to where it is in the new.
    fn shift(&self, s: &mut Span) {
        if s.file == self.file && s.start >= self.old_end {
            let moved =
                |o: u32| (i64::from(o) + i64::from(self.new_end) - i64::from(self.old_end)) as u32;
            s.start = moved(s.start);
            s.end = moved(s.end);
        }
    }
}

/// An entry header line, as `gen-policy`, `learn export` and people write it.
const HEADER: &str = "[[devices]]\n";

/// Offsets of the lines that are exactly `[[devices]]`.
fn entry_starts(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line == HEADER {
            out.push(at);
        }
        at += line.len();
    }
    out
}

/// What a device claims for itself alone.
#[derive(Hash, PartialEq, Eq)]
enum Claim<'d> {
    Id(&'d str),
    IdHash(u64),
    Mac(super::model::Mac),
    Addr(std::net::IpAddr),
}

fn claims_of(d: &Device) -> impl Iterator<Item = Claim<'_>> {
    [
        Claim::Id(&d.id),
        Claim::IdHash(lazaret_abi::device_id_hash(d.id.as_bytes())),
    ]
    .into_iter()
    .chain(d.mac.map(Claim::Mac))
    .chain(d.addresses().map(Claim::Addr))
}

/// Equal in everything but source position. (Destructured: a field added to [`Device`]
/// must be considered here.)
fn same_device(a: &Device, b: &Device) -> bool {
    let Device {
        id,
        span: _,
        class,
        mac,
        ipv4,
        ipv6,
        vlan,
        interface,
        port,
        inventory,
        mode,
        workflows,
        quarantine,
        risk_actions,
    } = a;
    *id == b.id
        && *class == b.class
        && *mac == b.mac
        && *ipv4 == b.ipv4
        && *ipv6 == b.ipv6
        && *vlan == b.vlan
        && *interface == b.interface
        && *port == b.port
        && *inventory == b.inventory
        && *mode == b.mode
        && *workflows == b.workflows
        && *quarantine == b.quarantine
        && *risk_actions == b.risk_actions
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
