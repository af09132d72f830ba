//! Loading a policy: reading a directory of `*.toml` files (recursively, sorted paths),
//! parsing them in parallel, and merging them into one raw policy. The only module of
//! `policy` that touches the file system; everything after it is pure.

use super::diag::{Diagnostic, Diags, NameKind, PolicyErrors, Problem};
use super::raw::{self, RawClass, RawFile, RawRole, RawSite, RawWorkflow, Sp};
use super::source::{SourceFile, Sources, Span};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files of a policy directory: every `*.toml` below `dir`, sorted by path, hidden
/// files and directories (`.git`) skipped.
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, PolicyErrors> {
    let mut paths = Vec::new();
    let mut diags = Diags::default();
    collect(dir, &mut paths, &mut diags);
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path.display().to_string();
        match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => files.push(SourceFile::new(name, text)),
                Err(_) => diags.push(Diagnostic::new(Problem::NotUtf8 { path: name }, None)),
            },
            Err(e) => diags.push(Diagnostic::new(
                Problem::Io {
                    path: name,
                    message: e.to_string(),
                },
                None,
            )),
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
            diagnostics: diags.items,
        });
    }
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Diags) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::new(
                Problem::Io {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                },
                None,
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        // Follows symlinks on purpose: a policy repo may link shared inventory files in.
        if path.is_dir() {
            collect(&path, out, diags);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
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
        diags.items.extend(file_diags.items);
        raws.push(raw);
    }
    if syntax {
        return None;
    }
    let kinds = raws.iter().map(RawFile::devices_only).collect();
    Some((merge(raws, diags), kinds))
}

/// The `*.toml` files below `dir` in the order [`read_dir`] reads them, or `None` if a
/// directory cannot be read.
pub fn list(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let mut diags = Diags::default();
    collect(dir, &mut paths, &mut diags);
    paths.sort();
    (!diags.has_errors()).then_some(paths)
}

pub type Parsed = (RawFile, Diags, bool);

fn parse_files(files: &[SourceFile]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
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
    let (doc, errors) = toml09::de::DeTable::parse_recoverable(&file.text);
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
