//! `lazaret import csv`: a CMMS or asset-management export into `[[devices]]` entries.
//!
//! A mapping file (TOML) says which column holds which device key, how a column's values
//! name a class, how the export is encoded and where new devices go:
//!
//! ```toml
//! [csv]
//! encoding = "latin-1"        # or "utf-8" (the default)
//! delimiter = ";"             # default: whichever of , ; and tab the header row uses
//!
//! [columns]                   # device key = column header (trimmed, either case)
//! id = "Asset Tag"
//! mac = "MAC Address"
//! ipv4 = "IP Address"
//!
//! [class]                     # optional: the class from a column, through `map`
//! column = "Model"
//! map = { "CARESCAPE B450" = "patient-monitor" }
//!
//! [output]
//! file = "devices/cmms.toml"  # new devices, relative to the policy directory
//! ```
//!
//! What the export owns is exactly the mapped keys: each is set on the device it names
//! (matched by `id`, in whichever file the device is), every other key and every comment is
//! left as it was, and an empty cell leaves the key alone. Values are normalised (MACs in
//! any of the usual spellings, addresses, VLANs, dates, yes/no) and compared by meaning, so
//! importing the same export again changes no byte. New devices are appended to the output
//! file sorted by id.
//!
//! Nothing is guessed: a malformed value, a value no class maps from, an id, MAC or address
//! twice in the export or already another device's, and a repository device the export
//! does not list are each reported with the export's line and column (or the device's file
//! and line), and then nothing is written. The repository the import would leave must also
//! load as a policy (`lazaret check`'s errors), or nothing is written.

mod values;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::path::{Component, Path, PathBuf};

use lazaret_policy::{
    load::{self, IMPORT_DIR},
    text::printable,
    Policy, PolicyErrors, SourceFile,
};
use serde::Deserialize;
use toml_edit::{DocumentMut, Item};
use values::{parse_cell, show_item, Kind, Value, KEYS};

/// Why an import was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Mapping { path: String, message: String },
    #[error("the policy in {dir} does not load, so nothing can be imported into it:\n{errors}")]
    PolicyBefore { dir: String, errors: String },
    #[error("{} problem(s) in {path}; nothing was written:\n{}", .problems.len(), render(.problems))]
    Rows {
        path: String,
        problems: Vec<RowProblem>,
    },
    #[error("the policy the import would leave does not load; nothing was written:\n{errors}")]
    PolicyAfter { errors: String },
    #[error("writing {path}: {message}")]
    Write { path: String, message: String },
}

/// One problem of the export, at its line and column, or of a repository device (`at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// Where: `line 12, column "MAC Address"`, or a repository file and line.
    pub at: String,
    pub message: String,
}

fn render(problems: &[RowProblem]) -> String {
    let mut out = String::new();
    for p in problems {
        let _ = writeln!(out, "  {}: {}", p.at, p.message);
    }
    out.trim_end().to_string()
}

/// What the import does or would do.
#[derive(Debug, Default)]
pub struct Plan {
    /// New devices: id, the file they go to, the export's line.
    pub added: Vec<(String, String, u64)>,
    /// Updated devices: id, their file, the export's line, and each key's old and new value.
    pub changed: Vec<Changed>,
    pub unchanged: usize,
    /// Repository devices the export does not list, kept as they are (`--keep-missing`).
    pub kept: Vec<String>,
    /// The files to write and their new text.
    pub files: Vec<(PathBuf, String)>,
}

#[derive(Debug)]
pub struct Changed {
    pub id: String,
    pub file: String,
    pub line: u64,
    pub keys: Vec<(String, Option<String>, String)>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, file, line) in &self.added {
            writeln!(f, "+ {} → {file} (line {line})", printable(id))?;
        }
        for c in &self.changed {
            writeln!(f, "~ {} in {} (line {})", printable(&c.id), c.file, c.line)?;
            for (key, old, new) in &c.keys {
                match old {
                    Some(old) => writeln!(f, "    {key}: {} → {}", printable(old), printable(new))?,
                    None => writeln!(f, "    {key}: (none) → {}", printable(new))?,
                }
            }
        }
        for id in &self.kept {
            writeln!(
                f,
                "= {} kept: not in the export (--keep-missing)",
                printable(id)
            )?;
        }
        write!(
            f,
            "{} new, {} changed, {} unchanged",
            self.added.len(),
            self.changed.len(),
            self.unchanged
        )?;
        if !self.kept.is_empty() {
            write!(f, ", {} kept", self.kept.len())?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    #[serde(default)]
    csv: RawCsv,
    columns: BTreeMap<String, String>,
    class: Option<RawClass>,
    output: RawOutput,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCsv {
    encoding: Option<String>,
    delimiter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    column: String,
    #[serde(default)]
    map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    file: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Utf8,
    /// ISO-8859-1: 0x80-0x9F are control characters, refused (an export with them is
    /// Windows-1252).
    Latin1,
    Windows1252,
}

/// Windows-1252's 0x80-0x9F (`None`: unassigned).
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

/// A mapping file, checked.
#[derive(Debug)]
pub struct Mapping {
    encoding: Encoding,
    delimiter: Option<u8>,
    /// (key, its kind, the column header), in `KEYS` order.
    columns: Vec<(&'static str, Kind, String)>,
    /// The class column, and its values (folded to lower case) → class.
    class: Option<(String, BTreeMap<String, String>)>,
    /// New devices' file, relative to the policy directory.
    output: PathBuf,
}

impl Mapping {
    pub fn load(path: &Path) -> Result<Mapping, ImportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ImportError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Mapping::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, name: &str) -> Result<Mapping, ImportError> {
        let bad = |message: String| ImportError::Mapping {
            path: name.to_string(),
            message,
        };
        let raw: RawMapping = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let encoding = match raw.csv.encoding.as_deref().map(str::to_ascii_lowercase) {
            None => Encoding::Utf8,
            Some(e) if e == "utf-8" || e == "utf8" => Encoding::Utf8,
            Some(e) if e == "latin-1" || e == "latin1" || e == "iso-8859-1" => Encoding::Latin1,
            Some(e) if e == "windows-1252" || e == "cp1252" => Encoding::Windows1252,
            Some(e) => {
                return Err(bad(format!(
                    "[csv] encoding = {e:?}: use \"utf-8\", \"latin-1\" or \"windows-1252\""
                )))
            }
        };
        let delimiter = match raw.csv.delimiter.as_deref() {
            None => None,
            Some("\\t" | "\t" | "tab") => Some(b'\t'),
            Some(d) if d.len() == 1 && d.is_ascii() && d != "\"" => Some(d.as_bytes()[0]),
            Some(d) => {
                return Err(bad(format!(
                    "[csv] delimiter = {d:?}: one ASCII character (\",\", \";\", \"tab\" …)"
                )))
            }
        };
        let mut columns = Vec::new();
        for (key, header) in &raw.columns {
            let Some(&(name, kind)) = KEYS.iter().find(|(k, _)| k == key) else {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                return Err(bad(format!(
                    "[columns] {key:?} is not a device key a column can fill; these are: {}",
                    known.join(", ")
                )));
            };
            if header.trim().is_empty() {
                return Err(bad(format!("[columns] {key}: an empty column name")));
            }
            columns.push((name, kind, header.trim().to_string()));
        }
        columns.sort_by_key(|(k, _, _)| KEYS.iter().position(|(n, _)| n == k));
        if !columns.iter().any(|(k, _, _)| *k == "id") {
            return Err(bad(
                "[columns] needs `id`: the column that names each device (its asset tag)"
                    .to_string(),
            ));
        }
        let class = raw.class.map(|c| {
            let map = c
                .map
                .into_iter()
                .map(|(value, class)| (value.trim().to_lowercase(), class))
                .collect();
            (c.column.trim().to_string(), map)
        });
        let output = PathBuf::from(&raw.output.file);
        let inside = output
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        let hidden = output
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        if !inside
            || hidden
            || output.extension().is_none_or(|e| e != "toml")
            || output.starts_with(IMPORT_DIR)
        {
            return Err(bad(format!(
                "[output] file = {:?}: a .toml file inside the policy directory (relative, \
no `..`, not hidden, not under {IMPORT_DIR}/)",
                raw.output.file
            )));
        }
        Ok(Mapping {
            encoding,
            delimiter,
            columns,
            class,
            output,
        })
    }
}

/// The export's text: a UTF-8 byte-order mark dropped, Latin-1 decoded when the mapping
/// says so. Invalid UTF-8 is refused at its line, not replaced.
fn decode(bytes: &[u8], encoding: Encoding, path: &str) -> Result<String, ImportError> {
    let read = |message: String| ImportError::Read {
        path: path.to_string(),
        message,
    };
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return Err(read(
            "UTF-16 (its byte-order mark): export as UTF-8 or Latin-1".to_string(),
        ));
    }
    match encoding {
        Encoding::Latin1 | Encoding::Windows1252 if bytes.starts_with(b"\xef\xbb\xbf") => {
            Err(read(
                "a UTF-8 byte-order mark, but the mapping says otherwise: set [csv] encoding \
= \"utf-8\""
                    .to_string(),
            ))
        }
        Encoding::Latin1 | Encoding::Windows1252 => {
            let mut text = String::with_capacity(bytes.len());
            for (i, &b) in bytes.iter().enumerate() {
                let c = match (b, encoding) {
                    (0x80..=0x9f, Encoding::Windows1252) => CP1252_HIGH[usize::from(b - 0x80)],
                    (0x80..=0x9f, _) => None,
                    _ => Some(char::from(b)),
                };
                let Some(c) = c else {
                    let line = bytes[..i].iter().filter(|&&b| b == b'\n').count() + 1;
                    let hint = if encoding == Encoding::Latin1 {
                        "a control character in Latin-1: the export is probably Windows-1252 \
(set [csv] encoding = \"windows-1252\")"
                    } else {
                        "unassigned in Windows-1252"
                    };
                    return Err(read(format!("line {line}: byte 0x{b:02x} is {hint}")));
                };
                text.push(c);
            }
            Ok(text)
        }
        Encoding::Utf8 => {
            let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
            std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
                let line = bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                read(format!(
                    "line {line}: not UTF-8; if the export is Latin-1, set [csv] encoding = \
\"latin-1\" in the mapping"
                ))
            })
        }
    }
}

/// The separator the header row uses most: `,`, `;` or a tab (outside quotes).
fn detect_delimiter(text: &str) -> u8 {
    let header = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let mut quoted = false;
    let mut counts = [0usize; 3];
    for b in header.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
    [b',', b';', b'\t'][best]
}

/// Line numbers of byte offsets met in increasing order, counted incrementally.
#[derive(Default)]
struct LineCounter {
    at: usize,
    line: u64,
}

impl LineCounter {
    fn line_at(&mut self, text: &[u8], byte: u64) -> u64 {
        let byte = usize::try_from(byte).unwrap_or(usize::MAX).min(text.len());
        if byte >= self.at {
            self.line += text[self.at..byte].iter().filter(|&&b| b == b'\n').count() as u64;
            self.at = byte;
        }
        self.line + 1
    }
}

/// One device row of the export, read.
struct Row {
    line: u64,
    id: String,
    /// Mapped keys with a value in this row.
    values: Vec<(&'static str, Kind, Value)>,
    class: Option<String>,
}

/// Reads the export's rows against the mapping. Empty rows are skipped; every problem is
/// collected.
fn read_rows(
    text: &str,
    m: &Mapping,
    classes: &BTreeSet<String>,
    problems: &mut Vec<RowProblem>,
) -> Result<Vec<Row>, String> {
    let delimiter = m.delimiter.unwrap_or_else(|| detect_delimiter(text));
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the header row: {e}"))?
        .iter()
        .map(str::to_string)
        .collect();
    let find = |name: &str| -> Result<usize, String> {
        let hits: Vec<usize> = (0..headers.len())
            .filter(|&i| headers[i].eq_ignore_ascii_case(name))
            .collect();
        match hits[..] {
            [i] => Ok(i),
            [] => Err(format!(
                "no column {name:?} in the header row (it has: {})",
                headers
                    .iter()
                    .map(|h| format!("{:?}", printable(h)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "the header row has {} columns named {name:?}",
                hits.len()
            )),
        }
    };
    let mut cols = Vec::new();
    for (key, kind, header) in &m.columns {
        cols.push((*key, *kind, header.as_str(), find(header)?));
    }
    let class_col = match &m.class {
        Some((header, _)) => Some((header.as_str(), find(header)?)),
        None => None,
    };
    let mut lines = LineCounter::default();
    let text_bytes = text.as_bytes();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        // The line the record starts on, counted here: the reader's position is where it
        // began reading, before the empty lines it skipped (and, for CRLF, the `\n`).
        let mut byte = record.position().map_or(0, ::csv::Position::byte);
        while text_bytes
            .get(usize::try_from(byte).unwrap_or(usize::MAX))
            .is_some_and(|b| matches!(b, b'\r' | b'\n'))
        {
            byte += 1;
        }
        let line = lines.line_at(text_bytes, byte);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let at = |header: &str| format!("line {line}, column {:?}", printable(header));
        // A short row is a truncated export or a line break inside an unquoted value: its
        // cells would land in the wrong columns.
        if record.len() < headers.len() {
            problems.push(RowProblem {
                at: format!("line {line}"),
                message: format!(
                    "{} fields, but the header has {}: a truncated row, or a line break inside \
an unquoted value?",
                    record.len(),
                    headers.len()
                ),
            });
            continue;
        }
        if let Some((i, extra)) = record
            .iter()
            .enumerate()
            .skip(headers.len())
            .find(|(_, c)| !c.is_empty())
        {
            problems.push(RowProblem {
                at: format!("line {line}"),
                message: format!(
                    "field {} ({:?}) is past the header's {} columns: a separator inside an \
unquoted value?",
                    i + 1,
                    printable(extra),
                    headers.len()
                ),
            });
            continue;
        }
        let mut row = Row {
            line,
            id: String::new(),
            values: Vec::new(),
            class: None,
        };
        for &(key, kind, header, i) in &cols {
            let cell = record.get(i).unwrap_or_default();
            if cell.is_empty() {
                continue;
            }
            match parse_cell(kind, cell) {
                Ok(Value::Text(id)) if key == "id" => row.id = id,
                Ok(v) => row.values.push((key, kind, v)),
                Err(message) => {
                    problems.push(RowProblem {
                        at: at(header),
                        message,
                    });
                }
            }
        }
        if row.id.is_empty() {
            problems.push(RowProblem {
                at: at(&m.columns[0].2),
                message: "no id: every device row needs one".to_string(),
            });
            continue;
        }
        if let (Some((header, i)), Some((_, map))) = (class_col, &m.class) {
            let cell = record.get(i).unwrap_or_default();
            let class = if map.is_empty() {
                Some(cell.to_string()).filter(|c| !c.is_empty())
            } else {
                map.get(&cell.to_lowercase()).cloned()
            };
            match class {
                Some(c) if classes.contains(&c) => row.class = Some(c),
                Some(c) => {
                    problems.push(RowProblem {
                        at: at(header),
                        message: format!("class {:?} is not a class of the policy", printable(&c)),
                    });
                }
                None if cell.is_empty() => {}
                None => {
                    problems.push(RowProblem {
                        at: at(header),
                        message: format!(
                            "{:?} maps to no class: add it to the mapping's [class] map",
                            printable(cell)
                        ),
                    });
                }
            }
        }
        // A row with a refused value is kept, though nothing of it is imported (any problem
        // stops the import): its id is listed, and its other values still count as claims.
        rows.push(row);
    }
    Ok(rows)
}

/// The fuzz harness's view of [`read_rows`]: the lines of every problem and row an export
/// yields under a mapping of every device key (`lazaret::fuzzing::imports`).
#[cfg(feature = "fuzzing")]
pub fn fuzz_problem_lines(text: &str) -> Vec<u64> {
    let columns: String = KEYS
        .iter()
        .map(|(k, _)| format!("{k} = \"{k}\"\n"))
        .collect();
    let mapping = format!(
        "[columns]\n{columns}[class]\ncolumn = \"class\"\nmap = {{ a = \"c\" }}\n[output]\nfile = \"d.toml\"\n"
    );
    let Ok(m) = Mapping::parse(&mapping, "mapping.toml") else {
        panic!("the fuzz mapping does not parse");
    };
    let classes = BTreeSet::from(["c".to_string()]);
    let mut problems = Vec::new();
    let Ok(rows) = read_rows(text, &m, &classes, &mut problems) else {
        return Vec::new();
    };
    (rows.iter().map(|r| r.line))
        .chain(problems.iter().filter_map(|p| {
            let (kind, line) = line_of(&p.at);
            (kind == 0).then_some(line)
        }))
        .collect()
}

/// A `[[devices]]` entry of the repository.
struct Entry {
    /// Index into the files.
    file: usize,
    /// Index in the file's `devices` array.
    index: usize,
}

/// Plans the import of `export` into the policy directory `dir`: reads everything, checks
/// everything, and returns the files to write (none written).
pub fn plan(
    dir: &Path,
    export: &Path,
    mapping: &Mapping,
    keep_missing: bool,
) -> Result<Plan, ImportError> {
    let export_name = export.display().to_string();
    let bytes =
        super::read_bounded(export, EXPORT_MAX_BYTES).map_err(|message| ImportError::Read {
            path: export_name.clone(),
            message,
        })?;
    let text = decode(&bytes, mapping.encoding, &export_name)?;
    let files = load::read_dir(dir).map_err(|e| before(dir, &e))?;
    let policy = lazaret_policy::parse_sources(files.clone()).map_err(|e| before(dir, &e))?;
    plan_text(
        dir,
        &text,
        &export_name,
        mapping,
        files,
        &policy,
        keep_missing,
    )
}

/// The largest export read: 100,000 devices of a wide export are about 50 MB.
const EXPORT_MAX_BYTES: u64 = 256 << 20;

fn before(dir: &Path, e: &PolicyErrors) -> ImportError {
    ImportError::PolicyBefore {
        dir: dir.display().to_string(),
        errors: e.render(),
    }
}

fn plan_text(
    dir: &Path,
    text: &str,
    export_name: &str,
    m: &Mapping,
    mut files: Vec<SourceFile>,
    policy: &Policy,
    keep_missing: bool,
) -> Result<Plan, ImportError> {
    let rows_err = |problems| ImportError::Rows {
        path: export_name.to_string(),
        problems,
    };
    let classes: BTreeSet<String> = policy.classes.keys().cloned().collect();
    let mut problems = Vec::new();
    let rows = read_rows(text, m, &classes, &mut problems).map_err(|message| {
        rows_err(vec![RowProblem {
            at: "the export".to_string(),
            message,
        }])
    })?;
    let listed = conflicts(&rows, policy, keep_missing, &mut problems);
    if !problems.is_empty() {
        problems.sort_by_key(|p| line_of(&p.at));
        return Err(rows_err(problems));
    }

    let mut repo = Repo::read(dir, &files)?;
    let mut plan = Plan::default();
    let new_rows = repo.update(&rows, &files, &mut plan);
    plan.kept = (policy.devices.iter())
        .filter(|d| !listed.contains(&d.id))
        .map(|d| d.id.clone())
        .collect();
    if !new_rows.is_empty() {
        repo.append(dir.join(&m.output), new_rows, &mut files, &mut plan);
    }
    for i in std::mem::take(&mut repo.touched) {
        if let Some(Some(doc)) = repo.docs.get(i) {
            let text = doc.to_string();
            files[i] = SourceFile::new(files[i].name.clone(), text.clone());
            plan.files.push((PathBuf::from(&files[i].name), text));
        }
    }
    plan.files.sort_by(|a, b| a.0.cmp(&b.0));

    // The repository as the import would leave it must load.
    if !plan.files.is_empty() {
        lazaret_policy::parse_sources(files)
            .map_err(|e| ImportError::PolicyAfter { errors: e.render() })?;
    }
    Ok(plan)
}

/// Ids, MACs and addresses the export lists twice or takes from another device, and the
/// repository's devices it does not list (unless kept): into `problems`. Returns the ids
/// the export lists.
fn conflicts(
    rows: &[Row],
    policy: &Policy,
    keep_missing: bool,
    problems: &mut Vec<RowProblem>,
) -> BTreeSet<String> {
    // Twice in the export.
    let mut first: HashMap<(&str, String), u64> = HashMap::new();
    let mut listed = BTreeSet::new();
    for r in rows {
        let mut claims = vec![("id", r.id.clone())];
        for (key, _, v) in &r.values {
            match v {
                Value::Text(mac) if *key == "mac" => claims.push(("mac", mac.clone())),
                Value::Addrs(a) => claims.extend(a.iter().map(|a| ("address", a.to_string()))),
                _ => {}
            }
        }
        for (what, value) in claims {
            if let Some(line) = first.insert((what, value.clone()), r.line) {
                problems.push(RowProblem {
                    at: format!("line {}", r.line),
                    message: format!("{what} {value} is on line {line} too"),
                });
            }
        }
        listed.insert(r.id.clone());
    }

    // Already another device's, as the repository would be after the import: a device's
    // MAC or addresses stay its own unless its row sets them.
    let by_id: HashMap<&str, &Row> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let location = |d: &lazaret_policy::model::Device| {
        let l = policy.sources.locate(d.span);
        format!("{}:{}", l.file, l.line)
    };
    for d in &policy.devices {
        let row = by_id.get(d.id.as_str());
        let owned = |key: &str| row.is_some_and(|r| r.values.iter().any(|(k, _, _)| *k == key));
        let mut claims = Vec::new();
        if !owned("mac") {
            claims.extend(d.mac.map(|m| ("mac", m.to_string())));
        }
        if !owned("ipv4") {
            claims.extend(d.ipv4.iter().map(|a| ("address", a.to_string())));
        }
        if !owned("ipv6") {
            claims.extend(d.ipv6.iter().map(|a| ("address", a.to_string())));
        }
        for (what, value) in claims {
            let Some(line) = first.get(&(what, value.clone())) else {
                continue;
            };
            if row.is_none_or(|r| r.line != *line) {
                problems.push(RowProblem {
                    at: format!("line {line}"),
                    message: format!(
                        "{what} {value} is device {}'s ({})",
                        printable(&d.id),
                        location(d)
                    ),
                });
            }
        }
        if !listed.contains(&d.id) && !keep_missing {
            problems.push(RowProblem {
                at: location(d),
                message: format!(
                    "device {} is not in the export: remove it from the repository, or pass \
--keep-missing to keep it",
                    printable(&d.id)
                ),
            });
        }
    }
    listed
}

/// The repository's files as `toml_edit` documents (those that may hold devices), its
/// device entries by id, and which documents the import has edited.
struct Repo {
    docs: Vec<Option<DocumentMut>>,
    entries: HashMap<String, Entry>,
    touched: BTreeSet<usize>,
}

impl Repo {
    fn read(dir: &Path, files: &[SourceFile]) -> Result<Repo, ImportError> {
        let mut docs = Vec::with_capacity(files.len());
        let mut entries = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            if !f.text.contains("devices") {
                docs.push(None);
                continue;
            }
            let doc: DocumentMut = f.text.parse().map_err(|e| ImportError::PolicyBefore {
                dir: dir.display().to_string(),
                errors: format!("{}: {e}", f.name),
            })?;
            if let Some(arr) = doc.get("devices").and_then(Item::as_array_of_tables) {
                for (index, t) in arr.iter().enumerate() {
                    if let Some(id) = t.get("id").and_then(Item::as_str) {
                        entries.insert(id.to_string(), Entry { file: fi, index });
                    }
                }
            }
            docs.push(Some(doc));
        }
        Ok(Repo {
            docs,
            entries,
            touched: BTreeSet::new(),
        })
    }

    /// Sets each row's keys on its device where they differ in meaning; returns the rows of
    /// devices the repository does not have.
    fn update<'r>(
        &mut self,
        rows: &'r [Row],
        files: &[SourceFile],
        plan: &mut Plan,
    ) -> Vec<&'r Row> {
        let mut new_rows = Vec::new();
        for r in rows {
            let Some(e) = self.entries.get(&r.id) else {
                new_rows.push(r);
                continue;
            };
            let Some(table) = (self.docs.get_mut(e.file))
                .and_then(Option::as_mut)
                .and_then(|doc| doc.get_mut("devices"))
                .and_then(Item::as_array_of_tables_mut)
                .and_then(|a| a.get_mut(e.index))
            else {
                continue;
            };
            let class = r
                .class
                .iter()
                .map(|c| ("class", Kind::Text, Value::Text(c.clone())));
            let mut keys = Vec::new();
            for (key, kind, v) in r.values.iter().cloned().chain(class) {
                match table.get_mut(key) {
                    Some(old) if v.same_as(kind, old) => {}
                    // In place: the key's comments above it and the value's after it stay
                    // (`insert` would reset both).
                    Some(old) => {
                        keys.push((key.to_string(), Some(show_item(old)), v.show()));
                        let mut new = v.item();
                        if let (Some(was), Some(now)) = (old.as_value(), new.as_value_mut()) {
                            *now.decor_mut() = was.decor().clone();
                        }
                        *old = new;
                    }
                    None => {
                        keys.push((key.to_string(), None, v.show()));
                        table.insert(key, v.item());
                    }
                }
            }
            if keys.is_empty() {
                plan.unchanged += 1;
            } else {
                self.touched.insert(e.file);
                plan.changed.push(Changed {
                    id: r.id.clone(),
                    file: files[e.file].name.clone(),
                    line: r.line,
                    keys,
                });
            }
        }
        new_rows
    }

    /// Appends the new devices, sorted by id, to `out` (an existing file keeps its text and
    /// this import's edits to it; a new one gets a header).
    fn append(
        &mut self,
        out: PathBuf,
        mut rows: Vec<&Row>,
        files: &mut Vec<SourceFile>,
        plan: &mut Plan,
    ) {
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let name = out.display().to_string();
        let existing = files.iter().position(|f| Path::new(&f.name) == out);
        let mut text = match existing {
            Some(i) => {
                self.touched.remove(&i);
                self.docs[i]
                    .take()
                    .map_or_else(|| files[i].text.clone(), |d| d.to_string())
            }
            None => "# Devices imported from an asset export by `lazaret import csv`. The \
export\n# owns the keys its mapping names; other keys and comments here are kept.\n"
                .to_string(),
        };
        for r in rows {
            let mut t = toml_edit::Table::new();
            t.insert("id", toml_edit::value(r.id.as_str()));
            if let Some(c) = &r.class {
                t.insert("class", toml_edit::value(c.as_str()));
            }
            for (key, _, v) in &r.values {
                t.insert(key, v.item());
            }
            let mut doc = DocumentMut::new();
            let mut arr = toml_edit::ArrayOfTables::new();
            arr.push(t);
            doc.insert("devices", Item::ArrayOfTables(arr));
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push('\n');
            text.push_str(&doc.to_string());
            plan.added.push((r.id.clone(), name.clone(), r.line));
        }
        match existing {
            Some(i) => files[i] = SourceFile::new(name, text.clone()),
            None => files.push(SourceFile::new(name, text.clone())),
        }
        plan.files.push((out, text));
    }
}

/// The line a problem is at, for a stable sort: export lines first, in order, then the
/// repository's devices as found.
fn line_of(at: &str) -> (u8, u64) {
    at.strip_prefix("line ")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .map_or((1, 0), |n| (0, n))
}

/// Writes the plan's files, each replaced whole (a temporary file renamed over it), so a
/// reader never sees half of one.
pub fn write(plan: &Plan) -> Result<(), ImportError> {
    super::write_files(&plan.files).map_err(|(path, e)| ImportError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
