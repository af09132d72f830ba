//! Security advisories matched against the inventory: CSAF 2.0 documents (manufacturers',
//! CISA's ICS medical advisories) and CISA's Known Exploited Vulnerabilities catalog, kept
//! as `*.json` files in the policy repository's `advisories/` directory (or given to
//! `lazaret risk --advisories`). Pure: the texts come in, the hits go out.
//!
//! - **CSAF**: the product tree's branches give each product id its vendor, product name
//!   and version (`product_version`) or version range (`product_version_range`, in `vers:`
//!   syntax or as plain constraints such as `<15.11`); each vulnerability's
//!   `product_status` says which ids are affected (`known_affected`, `first_affected`,
//!   `last_affected`) and which are fixed (`fixed`, `first_fixed`).
//! - **KEV**: `cveID` with `vendorProject` and `product`. A CVE in the catalog makes every
//!   advisory naming it *known exploited*; a catalog entry no advisory names matches devices
//!   by vendor and product alone (the catalog has no versions).
//!
//! A device is affected when its vendor and model match a product's (compared without case,
//! spaces or punctuation; either may extend the other, `ICU Medical` and `ICU Medical Inc`)
//! and its firmware is in the product's versions, and no fixed product of the same
//! advisory holds its firmware. A versioned product never matches a device whose firmware
//! the inventory does not record: that is reported by `lazaret risk`, never guessed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::model::Inventory;

/// Advisories and the catalog, read.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub advisories: Vec<Advisory>,
    /// KEV: CVE id → (vendor, product).
    pub exploited: BTreeMap<String, (String, String)>,
}

/// One CSAF advisory.
#[derive(Clone, Debug)]
pub struct Advisory {
    pub id: String,
    pub title: String,
    /// The file it came from.
    pub file: String,
    pub vulnerabilities: Vec<Vulnerability>,
}

#[derive(Clone, Debug)]
pub struct Vulnerability {
    pub cve: Option<String>,
    pub affected: Vec<Product>,
    pub fixed: Vec<Product>,
}

/// A product of a CSAF product tree (or a KEV entry's), its names normalised for matching
/// (see [`norm`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub vendor: String,
    pub name: String,
    pub versions: Versions,
}

impl Product {
    pub fn new(vendor: &str, name: &str, versions: Versions) -> Product {
        Product {
            vendor: norm(vendor),
            name: norm(name),
            versions,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Versions {
    /// No version in the tree: every version.
    Any,
    Exact(String),
    /// Every constraint holds (`vers:` alternatives joined by `|` are each a range).
    Range(Vec<Vec<(Op, String)>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// An advisory (or a KEV entry) that applies to a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// The CSAF tracking id, or the CVE of a KEV entry no advisory names.
    pub id: String,
    pub cves: Vec<String>,
    /// A CVE of it is in the KEV catalog.
    pub exploited: bool,
}

/// Why a file was not read: a message, and the line and column it is at (1-based; 0 when
/// it is about the whole file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

fn whole(message: impl Into<String>) -> ReadError {
    ReadError {
        message: message.into(),
        line: 0,
        column: 0,
    }
}

impl Catalog {
    pub fn is_empty(&self) -> bool {
        self.advisories.is_empty() && self.exploited.is_empty()
    }

    /// Adds one file: a CSAF document or a KEV catalog, told apart by their contents.
    pub fn add(&mut self, file: &str, text: &str) -> Result<(), ReadError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ReadError {
            message: format!("not JSON: {e}"),
            line: e.line(),
            column: e.column(),
        })?;
        if v.pointer("/document/csaf_version").is_some() {
            self.advisories.push(csaf(file, &v)?);
            Ok(())
        } else if v.get("catalogVersion").is_some()
            || v.pointer("/vulnerabilities/0/cveID").is_some()
        {
            self.kev(&v)
        } else {
            Err(whole(
                "neither a CSAF 2.0 document (document.csaf_version) nor a KEV catalog \
(catalogVersion, vulnerabilities[].cveID)",
            ))
        }
    }

    fn kev(&mut self, v: &Value) -> Result<(), ReadError> {
        let list = v
            .get("vulnerabilities")
            .and_then(Value::as_array)
            .ok_or_else(|| whole("a KEV catalog without a vulnerabilities array"))?;
        for (i, e) in list.iter().enumerate() {
            let field = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let cve = field("cveID");
            if !cve.starts_with("CVE-") {
                return Err(whole(format!(
                    "vulnerabilities[{i}].cveID: {cve:?} is not a CVE id"
                )));
            }
            self.exploited.insert(
                cve,
                (norm(&field("vendorProject")), norm(&field("product"))),
            );
        }
        Ok(())
    }

    /// The advisories and KEV entries that apply to a device, sorted by id (an advisory in
    /// two files, two revisions of it, counts once).
    pub fn hits(&self, inv: &Inventory) -> Vec<Hit> {
        let d = Device::of(inv);
        let mut out: Vec<Hit> = Vec::new();
        let mut named: BTreeSet<&str> = BTreeSet::new();
        for a in &self.advisories {
            let mut cves = Vec::new();
            let mut affected = false;
            for v in &a.vulnerabilities {
                named.extend(v.cve.as_deref());
                let hit = v.affects(&d);
                if hit {
                    affected = true;
                    cves.extend(v.cve.clone());
                }
            }
            if affected && !out.iter().any(|h| h.id == a.id) {
                let exploited = cves.iter().any(|c| self.exploited.contains_key(c));
                out.push(Hit {
                    id: a.id.clone(),
                    cves,
                    exploited,
                });
            }
        }
        for (cve, (vendor, product)) in &self.exploited {
            if named.contains(cve.as_str()) {
                continue;
            }
            let p = Product {
                vendor: vendor.clone(),
                name: product.clone(),
                versions: Versions::Any,
            };
            if p.holds(&d) {
                out.push(Hit {
                    id: cve.clone(),
                    cves: vec![cve.clone()],
                    exploited: true,
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The advisories whose affected products are the device's vendor and model at
    /// versions the inventory cannot say (its firmware is not recorded): reported by
    /// `lazaret risk`, not counted.
    pub fn unknown_firmware(&self, inv: &Inventory) -> Vec<String> {
        if !inv.firmware.trim().is_empty() {
            return Vec::new();
        }
        let d = Device::of(inv);
        let mut out: Vec<String> = (self.advisories.iter())
            .filter(|a| {
                (a.vulnerabilities.iter())
                    .flat_map(|v| &v.affected)
                    .any(|p| p.versions != Versions::Any && p.names_match(&d))
            })
            .map(|a| a.id.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Vulnerability {
    /// Whether the device has it: an affected product holds, and no fixed one does. An
    /// exact affected version wins over a fixed bound, and a `first_fixed` bound fixes
    /// only up to the next `first_affected` (or exact affected) version above it, so a
    /// second release line stays affected.
    fn affects(&self, d: &Device<'_>) -> bool {
        let affected: Vec<&Product> = self.affected.iter().filter(|p| p.holds(d)).collect();
        if affected.is_empty() {
            return false;
        }
        if affected
            .iter()
            .any(|p| matches!(p.versions, Versions::Exact(_)))
        {
            return true;
        }
        // The lower bounds of affected lines: exact versions and `>=` bounds.
        let lower = |p: &Product| -> Option<String> {
            match &p.versions {
                Versions::Exact(v) => Some(v.clone()),
                Versions::Range(g) => match &g[..] {
                    [one] => match &one[..] {
                        [(Op::Ge, v)] => Some(v.clone()),
                        _ => None,
                    },
                    _ => None,
                },
                Versions::Any => None,
            }
        };
        let reopened = |fixed_from: &str| {
            self.affected.iter().filter_map(lower).any(|u| {
                compare(&u, fixed_from) == Ordering::Greater
                    && compare(&u, d.firmware) != Ordering::Greater
            })
        };
        !self.fixed.iter().any(|f| {
            f.holds(d)
                && match lower(f) {
                    Some(from) if !matches!(f.versions, Versions::Exact(_)) => !reopened(&from),
                    _ => true,
                }
        })
    }
}

/// A device's names normalised once, for matching against every product.
struct Device<'a> {
    vendor: String,
    model: String,
    firmware: &'a str,
}

impl Device<'_> {
    fn of(inv: &Inventory) -> Device<'_> {
        Device {
            vendor: norm(&inv.vendor),
            model: norm(&inv.model),
            firmware: inv.firmware.trim(),
        }
    }
}

/// Lower case, letters and digits only.
pub fn norm(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Either extends the other (both normalised), neither empty.
fn extends(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

impl Product {
    fn names_match(&self, d: &Device<'_>) -> bool {
        extends(&self.vendor, &d.vendor) && extends(&self.name, &d.model)
    }

    /// Whether the device is this product, at one of its versions.
    fn holds(&self, d: &Device<'_>) -> bool {
        if !self.names_match(d) {
            return false;
        }
        match &self.versions {
            Versions::Any => true,
            _ if d.firmware.is_empty() => false,
            Versions::Exact(v) => compare(d.firmware, v) == Ordering::Equal,
            Versions::Range(alternatives) => alternatives.iter().any(|all| {
                all.iter().all(|(op, v)| {
                    let c = compare(d.firmware, v);
                    match op {
                        Op::Lt => c == Ordering::Less,
                        Op::Le => c != Ordering::Greater,
                        Op::Gt => c == Ordering::Greater,
                        Op::Ge => c != Ordering::Less,
                        Op::Eq => c == Ordering::Equal,
                        Op::Ne => c != Ordering::Equal,
                    }
                })
            }),
        }
    }
}

/// Versions compared segment by segment (split at `.`, `-`, `_`, `+` and spaces), numbers
/// as numbers, others as text (`15.9 < 15.10`, `2.04 = 2.4`); a missing segment is less.
pub fn compare(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> Vec<String> {
        s.trim()
            .trim_start_matches(['v', 'V'])
            .split(['.', '-', '_', '+', ' '])
            .filter(|x| !x.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let (a, b) = (split(a), split(b));
    for i in 0..a.len().max(b.len()) {
        let c = match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) => match (x.parse::<u64>(), y.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => x.cmp(y),
            },
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        };
        if c != Ordering::Equal {
            return c;
        }
    }
    Ordering::Equal
}

/// A version range: `vers:<scheme>/<constraints>` (the vers specification: `|`-separated
/// constraints sorted by version; `>`/`>=` then `<`/`<=` make an interval, `=` a single
/// version, `!=` an exclusion; `vers:all/*` every version) or plain constraints that all
/// hold (`<15.11`, `>=4.0, <4.2`, `>=4.0 <4.2`). A version must hold a digit: free text
/// ("all versions") is refused, not read as a version no firmware has.
fn parse_range(text: &str) -> Result<Versions, String> {
    let constraint = |c: &str| -> Result<(Op, String), String> {
        let (op, v) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("=", Op::Eq),
        ]
        .into_iter()
        .find_map(|(p, op)| c.strip_prefix(p).map(|v| (op, v.trim())))
        .unwrap_or((Op::Eq, c));
        let bad = |c: char| c.is_whitespace() || "<>=!|,*".contains(c);
        if !v.chars().any(|c| c.is_ascii_digit()) || v.chars().any(bad) {
            return Err(format!("{text:?}: {v:?} is not a version"));
        }
        Ok((op, v.to_string()))
    };
    let Some(rest) = text.trim().strip_prefix("vers:") else {
        // Plain: every constraint holds.
        let mut all = Vec::new();
        for piece in text.split(',') {
            let mut words = piece.split_whitespace().peekable();
            while let Some(w) = words.next() {
                // `>= 4.0`: an operator alone takes the next word.
                let c = if w.chars().all(|c| "<>=!".contains(c)) {
                    format!("{w}{}", words.next().unwrap_or_default())
                } else {
                    w.to_string()
                };
                all.push(constraint(&c)?);
            }
        }
        if all.is_empty() {
            return Err(format!("{text:?}: no constraint"));
        }
        // All hold: two versions (`1.0, 1.1`, a list) or a version beside constraints
        // (`<V2.0 SP1`) would match nothing, silently.
        let exact = all.iter().filter(|(op, _)| *op == Op::Eq).count();
        if exact > 1 || (exact == 1 && all.len() > 1) {
            return Err(format!(
                "{text:?}: constraints that all hold cannot name a version besides others"
            ));
        }
        return Ok(Versions::Range(vec![all]));
    };
    let body = rest
        .split_once('/')
        .map(|(_, c)| c.trim())
        .ok_or_else(|| format!("{text:?}: vers: needs a scheme and constraints"))?;
    if body == "*" {
        return Ok(Versions::Any);
    }
    let constraints = (body.split('|').map(str::trim))
        .map(constraint)
        .collect::<Result<Vec<_>, _>>()?;
    if constraints
        .windows(2)
        .any(|w| compare(&w[0].1, &w[1].1) == Ordering::Greater)
    {
        return Err(format!(
            "{text:?}: vers constraints must be sorted by version"
        ));
    }
    // Intervals and single versions are alternatives; exclusions hold in every one.
    let excluded: Vec<(Op, String)> = (constraints.iter())
        .filter(|(op, _)| *op == Op::Ne)
        .cloned()
        .collect();
    let mut groups: Vec<Vec<(Op, String)>> = Vec::new();
    let mut open: Vec<(Op, String)> = Vec::new();
    for (op, v) in constraints {
        match op {
            Op::Gt | Op::Ge => {
                if !open.is_empty() {
                    groups.push(std::mem::take(&mut open));
                }
                open.push((op, v));
            }
            Op::Lt | Op::Le => {
                open.push((op, v));
                groups.push(std::mem::take(&mut open));
            }
            Op::Eq => groups.push(vec![(op, v)]),
            Op::Ne => {}
        }
    }
    if !open.is_empty() {
        groups.push(open);
    }
    if groups.is_empty() {
        // Only exclusions: every other version.
        groups.push(Vec::new());
    }
    for g in &mut groups {
        g.extend(excluded.iter().cloned());
    }
    Ok(Versions::Range(groups))
}

/// One CSAF document.
fn csaf(file: &str, v: &Value) -> Result<Advisory, ReadError> {
    let version = v.pointer("/document/csaf_version").and_then(Value::as_str);
    if version != Some("2.0") {
        return Err(whole(format!(
            "document.csaf_version {version:?}: only CSAF 2.0 is read"
        )));
    }
    let id = v
        .pointer("/document/tracking/id")
        .and_then(Value::as_str)
        .ok_or_else(|| whole("a CSAF document without document.tracking.id"))?
        .to_string();
    let title = v
        .pointer("/document/title")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut products: BTreeMap<String, Product> = BTreeMap::new();
    if let Some(branches) = v.pointer("/product_tree/branches") {
        walk(branches, &Path::default(), &mut products, 0)?;
    }
    let mut vulnerabilities = Vec::new();
    for (i, vuln) in v
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let cve = vuln.get("cve").and_then(Value::as_str).map(str::to_string);
        // `first_affected: 4.0` means 4.0 and later, `last_affected: 4.2` 4.2 and earlier,
        // `first_fixed: 4.3` 4.3 and later: an exact version in the tree becomes a bound.
        let bound = |p: &Product, k: &str| -> Product {
            let op = match k {
                "first_affected" | "first_fixed" => Op::Ge,
                "last_affected" => Op::Le,
                _ => return p.clone(),
            };
            match &p.versions {
                Versions::Exact(v) => Product {
                    versions: Versions::Range(vec![vec![(op, v.clone())]]),
                    ..p.clone()
                },
                _ => p.clone(),
            }
        };
        let status = |keys: &[&str]| -> Result<Vec<Product>, ReadError> {
            let mut out = Vec::new();
            for k in keys {
                let ids = vuln
                    .pointer(&format!("/product_status/{k}"))
                    .and_then(Value::as_array);
                for pid in ids.into_iter().flatten() {
                    let pid = pid.as_str().unwrap_or_default();
                    // A product id the tree does not describe (a relationship, a
                    // full_product_name without branches) cannot be matched by name.
                    if let Some(p) = products.get(pid) {
                        out.push(bound(p, k));
                    } else if pid.is_empty() {
                        return Err(whole(format!(
                            "vulnerabilities[{i}].product_status.{k}: a product id that is not a string"
                        )));
                    }
                }
            }
            Ok(out)
        };
        vulnerabilities.push(Vulnerability {
            cve,
            affected: status(&["known_affected", "first_affected", "last_affected"])?,
            fixed: status(&["fixed", "first_fixed"])?,
        });
    }
    Ok(Advisory {
        id,
        title,
        file: file.to_string(),
        vulnerabilities,
    })
}

/// Where a branch is in the tree: the names of its vendor and product ancestors.
#[derive(Clone, Default)]
struct Path {
    vendor: String,
    product: String,
}

/// CSAF's schema bounds nothing; a hostile tree is bounded here.
const MAX_DEPTH: usize = 16;

fn walk(
    branches: &Value,
    at: &Path,
    out: &mut BTreeMap<String, Product>,
    depth: usize,
) -> Result<(), ReadError> {
    if depth > MAX_DEPTH {
        return Err(whole(format!(
            "product_tree: branches nested deeper than {MAX_DEPTH}"
        )));
    }
    let list = branches
        .as_array()
        .ok_or_else(|| whole("product_tree: branches that are not an array"))?;
    for b in list {
        let category = b
            .get("category")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = b.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut here = at.clone();
        let mut versions = Versions::Any;
        match category {
            "vendor" => here.vendor = name.to_string(),
            "product_name" => here.product = name.to_string(),
            "product_version" => versions = Versions::Exact(name.to_string()),
            "product_version_range" => {
                versions = parse_range(name)
                    .map_err(|m| whole(format!("product_tree: product_version_range {m}")))?;
            }
            _ => {}
        }
        if let Some(pid) = b.pointer("/product/product_id").and_then(Value::as_str) {
            out.insert(
                pid.to_string(),
                Product::new(&here.vendor, &here.product, versions),
            );
        }
        if let Some(sub) = b.get("branches") {
            walk(sub, &here, out, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "advisories_tests.rs"]
mod tests;
