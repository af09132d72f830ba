//! Loading a policy: reading a directory of `*.toml` files (recursively, sorted paths),
//! parsing them in parallel, and merging them into one raw policy. The only module of
//! `policy` that touches the file system; everything after it is pure.

use super::diag::{Diagnostic, Diags, NameKind, PolicyErrors, Problem};
use super::raw::{self, RawClass, RawFile, RawRole, RawSite, RawWorkflow, Sp};
use super::source::{SourceFile, Sources, Span};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a policy directory may hold. A policy repository is input from pull requests, so
/// reading it must not be something a file in it can turn against the reader: the limits
/// bound the time and memory a read can take, far above what a 10,000-device hospital
/// needs (its inventory is about 4 MB in one file; 10,000 devices with 100,000 rules about
/// 11 MB in all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest policy file.
    pub file_bytes: u64,
    /// Largest sum of all the policy files.
    pub total_bytes: u64,
    /// Most `*.toml` files.
    pub files: usize,
    /// Deepest directory nesting below the policy directory.
    pub depth: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        file_bytes: 16 << 20,
        total_bytes: 64 << 20,
        files: 10_000,
        depth: 32,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The directory at a policy repository's root that holds importers' inputs (a CMMS export
/// and its column mapping, MUD files and their bindings, advisories): read by `lazaret
/// import`, never as policy, though its mapping files are TOML too.
pub const IMPORT_DIR: &str = "import";

/// The directory at a policy repository's root whose `*.json` files are security
/// advisories (CSAF 2.0) and KEV catalogs, read with the policy (see `advisories`).
pub const ADVISORIES_DIR: &str = "advisories";

/// Whether a policy file is an advisory (JSON) rather than TOML.
pub fn is_advisory(name: &str) -> bool {
    name.ends_with(".json")
}

/// The files of a policy directory: every `*.toml` below `dir` but [`IMPORT_DIR`], and the
/// `*.json` of [`ADVISORIES_DIR`], sorted by path, hidden files and directories (`.git`)
/// skipped, within [`Limits::DEFAULT`] (see [`list`] for
/// what is refused).
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, PolicyErrors> {
    let mut diags = Diags::default();
    let paths = walk(dir, &Limits::DEFAULT, &mut diags);
    let mut files = Vec::with_capacity(paths.len());
    let mut budget = Limits::DEFAULT.total_bytes;
    for path in paths {
        let name = path.display().to_string();
        match read_file(&path, &Limits::DEFAULT, &mut budget) {
            Ok(text) => files.push(SourceFile::new(name, text)),
            Err(problem) => diags.push(Diagnostic::new(problem, None)),
        }
    }
    if files.is_empty() && !diags.has_errors() {
        diags.push(Diagnostic::new(
            Problem::NoPolicyFiles {
                path: dir.display().to_string(),
            },
            None,
        ));
    }
    if diags.has_errors() {
        return Err(PolicyErrors {
            sources: Arc::new(Sources::new(files)),
            diagnostics: diags.into_items(),
        });
    }
    Ok(files)
}

/// One policy file's text, read without trusting what the path is: opened without
/// blocking (a FIFO swapped in for a checked file cannot hang the reader), required to be a
/// regular file by the open file itself, and read up to the limits, which it takes from
/// `budget`.
pub fn read_file(path: &Path, limits: &Limits, budget: &mut u64) -> Result<String, Problem> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let name = || path.display().to_string();
    let io = |e: std::io::Error| Problem::Io {
        path: name(),
        message: e.to_string(),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(Problem::NotRegularFile {
            path: name(),
            kind: file_kind(&meta.file_type()),
        });
    }
    let limit = limits.file_bytes.min(*budget);
    let too_big = |size: u64| {
        if size > limits.file_bytes {
            Problem::FileTooLarge {
                path: name(),
                size,
                limit: limits.file_bytes,
            }
        } else {
            Problem::PolicyTooLarge {
                limit: limits.total_bytes,
            }
        }
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte past the limit tells a file that grew while being read.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    let read = bytes.len() as u64;
    if read > limit {
        return Err(too_big(read));
    }
    *budget -= read;
    String::from_utf8(bytes).map_err(|_| Problem::NotUtf8 { path: name() })
}

/// What a file type is, for an error message.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "named pipe (FIFO)"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// The `*.toml` files below `dir`, sorted, hidden entries skipped. Refused with an error
/// naming the path: a file that is not a regular file (FIFO, socket, device), a symbolic
/// link that leaves the policy directory or dangles, a directory reached twice (a link
/// loop), nesting past the limit, more files than the limit.
fn walk(dir: &Path, limits: &Limits, diags: &mut Diags) -> Vec<PathBuf> {
    let root = match std::fs::canonicalize(dir) {
        Ok(r) => r,
        Err(e) => {
            diags.push(Diagnostic::new(
                Problem::Io {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                },
                None,
            ));
            return Vec::new();
        }
    };
    let mut w = Walker {
        visited: std::collections::HashSet::from([root.clone()]),
        root,
        limits,
        out: Vec::new(),
        too_many: false,
        diags,
    };
    w.dir(dir, 0);
    let mut out = w.out;
    out.sort();
    out
}

struct Walker<'a> {
    root: PathBuf,
    limits: &'a Limits,
    /// Directories read so far, by their real path.
    visited: std::collections::HashSet<PathBuf>,
    out: Vec<PathBuf>,
    too_many: bool,
    diags: &'a mut Diags,
}

impl Walker<'_> {
    fn problem(&mut self, p: Problem) {
        self.diags.push(Diagnostic::new(p, None));
    }

    fn dir(&mut self, dir: &Path, depth: usize) {
        if depth > self.limits.depth {
            self.problem(Problem::TooDeep {
                path: dir.display().to_string(),
                limit: self.limits.depth,
            });
            return;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.problem(Problem::Io {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                });
                return;
            }
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let name = || path.display().to_string();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // A link is followed only inside the policy directory: a repository may link a
            // shared inventory file in, but never /dev/zero or /proc/self/environ.
            let meta = if meta.file_type().is_symlink() {
                match std::fs::canonicalize(&path) {
                    Err(e) => {
                        self.problem(Problem::Io {
                            path: name(),
                            message: format!("a symbolic link to nothing ({e})"),
                        });
                        continue;
                    }
                    Ok(real) if !real.starts_with(&self.root) => {
                        self.problem(Problem::OutsideRoot {
                            path: name(),
                            target: real.display().to_string(),
                        });
                        continue;
                    }
                    Ok(real) => match std::fs::metadata(&real) {
                        Ok(m) => m,
                        Err(e) => {
                            self.problem(Problem::Io {
                                path: name(),
                                message: e.to_string(),
                            });
                            continue;
                        }
                    },
                }
            } else {
                meta
            };
            if meta.is_dir() && depth == 0 && entry.file_name() == IMPORT_DIR {
                continue;
            }
            if meta.is_dir() {
                let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                if !self.visited.insert(real) {
                    self.problem(Problem::SymlinkLoop { path: name() });
                    continue;
                }
                self.dir(&path, depth + 1);
            } else if path.extension().is_some_and(|e| e == "toml")
                || (depth == 1
                    && dir.file_name().is_some_and(|n| n == ADVISORIES_DIR)
                    && path.extension().is_some_and(|e| e == "json"))
            {
                if !meta.file_type().is_file() {
                    self.problem(Problem::NotRegularFile {
                        path: name(),
                        kind: file_kind(&meta.file_type()),
                    });
                } else if self.out.len() >= self.limits.files {
                    if !self.too_many {
                        self.too_many = true;
                        self.problem(Problem::TooManyFiles {
                            limit: self.limits.files,
                        });
                    }
                } else {
                    self.out.push(path);
                }
            }
        }
    }
}

/// A whole policy before validation: every file's definitions merged, duplicates reported.
#[derive(Debug, Default)]
pub struct RawPolicy {
    pub site: Option<RawSite>,
    pub roles: BTreeMap<String, RawRole>,
    pub classes: BTreeMap<String, RawClass>,
    pub workflows: BTreeMap<String, RawWorkflow>,
    pub devices: Vec<raw::RawDevice>,
    pub exceptions: BTreeMap<String, raw::RawException>,
}

/// Parses every file (in parallel) and merges them. Returns `None` in place of the raw
/// policy when a file has TOML syntax errors: validating a half-read policy would bury the
/// real error under dangling names.
pub fn parse(sources: &Sources, diags: &mut Diags) -> Option<RawPolicy> {
    parse_kinds(sources, diags).map(|(raw, _)| raw)
}

/// [`parse`], also telling for each file whether it holds only `[[devices]]` entries (what
/// an incremental reload can patch in).
pub fn parse_kinds(sources: &Sources, diags: &mut Diags) -> Option<(RawPolicy, Vec<bool>)> {
    let parsed = parse_files(sources.files());
    let mut syntax = false;
    let mut raws = Vec::with_capacity(parsed.len());
    for (raw, file_diags, bad) in parsed {
        syntax |= bad;
        diags.extend(file_diags);
        raws.push(raw);
    }
    if syntax {
        return None;
    }
    let kinds = raws.iter().map(RawFile::devices_only).collect();
    Some((merge(raws, diags), kinds))
}

/// The `*.toml` files below `dir` in the order [`read_dir`] reads them, or `None` if one of
/// them is refused or a directory cannot be read.
pub fn list(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut diags = Diags::default();
    let paths = walk(dir, &Limits::DEFAULT, &mut diags);
    (!diags.has_errors()).then_some(paths)
}

pub type Parsed = (RawFile, Diags, bool);

fn parse_files(files: &[SourceFile]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(files.len());
    if threads <= 1 {
        return files
            .iter()
            .enumerate()
            .map(|(i, f)| parse_file(i, f))
            .collect();
    }
    // Contiguous groups of roughly equal size in bytes, one per thread; results come back in
    // file order, so the outcome does not depend on scheduling.
    let total: usize = files.iter().map(|f| f.text.len()).sum();
    let per = total / threads + 1;
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut acc = 0;
    for (i, f) in files.iter().enumerate() {
        if acc >= per && groups.len() < threads {
            groups.push(Vec::new());
            acc = 0;
        }
        acc += f.text.len();
        if let Some(g) = groups.last_mut() {
            g.push(i);
        }
    }
    let mut results: Vec<Option<Parsed>> = (0..files.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| {
                s.spawn(move || {
                    group
                        .into_iter()
                        .filter_map(|i| files.get(i).map(|f| (i, parse_file(i, f))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A panicking parser thread is a bug; its files then read as empty with an error.
            if let Ok(done) = h.join() {
                for (i, p) in done {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(p);
                    }
                }
            }
        }
    });
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| {
                let mut d = Diags::default();
                d.push(Diagnostic::new(
                    Problem::Syntax {
                        message: format!("internal error while parsing file {i}"),
                    },
                    None,
                ));
                (RawFile::default(), d, true)
            })
        })
        .collect()
}

/// Parses one file of a policy, `index` being its place in the sorted file list (spans
/// refer to it): the raw file, its diagnostics, and whether it had TOML syntax errors.
pub fn parse_file(index: usize, file: &SourceFile) -> Parsed {
    let id = u32::try_from(index).unwrap_or(u32::MAX);
    let mut diags = Diags::default();
    // Advisories are read by validation (`advisories`), not as policy TOML.
    if is_advisory(&file.name) {
        return (RawFile::default(), diags, false);
    }
    let (doc, errors) = toml::de::DeTable::parse_recoverable(&file.text);
    if !errors.is_empty() {
        for e in errors {
            let span = Span::new(id, e.span().unwrap_or(0..0));
            let message = e.message().trim().replace('\n', "; ");
            diags.err(Problem::Syntax { message }, span);
        }
        return (RawFile::default(), diags, true);
    }
    let raw = raw::read_file(id, doc.get_ref(), &mut diags);
    (raw, diags, false)
}

fn merge(files: Vec<RawFile>, diags: &mut Diags) -> RawPolicy {
    let mut out = RawPolicy::default();
    for f in files {
        if let Some(site) = f.site {
            match &out.site {
                Some(first) => diags.push(
                    Diagnostic::at(Problem::DuplicateSite, site.span)
                        .note(first.span, "first defined here"),
                ),
                None => out.site = Some(site),
            }
        }
        insert_all(&mut out.roles, f.roles, |r| &r.name, NameKind::Role, diags);
        insert_all(
            &mut out.classes,
            f.classes,
            |c| &c.name,
            NameKind::Class,
            diags,
        );
        insert_all(
            &mut out.workflows,
            f.workflows,
            |w| &w.name,
            NameKind::Workflow,
            diags,
        );
        insert_all(
            &mut out.exceptions,
            f.exceptions,
            |e| &e.name,
            NameKind::Exception,
            diags,
        );
        out.devices.extend(f.devices);
    }
    out
}

fn insert_all<T>(
    map: &mut BTreeMap<String, T>,
    items: Vec<T>,
    name: impl Fn(&T) -> &Sp<String>,
    kind: NameKind,
    diags: &mut Diags,
) {
    for item in items {
        let n = name(&item).clone();
        match map.get(&n.v) {
            Some(first) => diags.push(
                Diagnostic::at(
                    Problem::DuplicateName {
                        kind,
                        name: n.v.clone(),
                    },
                    n.span,
                )
                .note(name(first).span, "first defined here"),
            ),
            None => {
                map.insert(n.v, item);
            }
        }
    }
}
