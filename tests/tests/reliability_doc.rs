//! `docs/reliability.md` cannot go stale: every row of its table names a test that exists
//! (`FILE::FUNCTION` in `tests/tests/FILE.rs`, or `fuzz TARGET` in `fuzz/fuzz_targets/`),
//! and every test of the reliability suite (`fault_*`, `flood_*`, `ns_access`, `ns_bypass`,
//! `fuzz_corpus`) and every fuzz target has a row. `cargo xtask reliability` refreshes the
//! figures from the last runs.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The names in backticks in the first column of the table.
fn rows() -> BTreeSet<String> {
    let doc =
        std::fs::read_to_string(root().join("docs/reliability.md")).expect("docs/reliability.md");
    doc.lines()
        .filter_map(|l| {
            let cell = l.split('|').nth(1)?.trim();
            Some(cell.strip_prefix('`')?.strip_suffix('`')?.to_string())
        })
        .collect()
}

/// `#[test]` functions of one test file, ignored ones left out; a scenario run by
/// `on_both_dataplanes!` is two tests, `SCENARIO::xdp` and `SCENARIO::nftables`.
fn tests_in(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = Vec::new();
    if let Some((_, rest)) = text.split_once("on_both_dataplanes!(") {
        let list = rest.split(')').next().unwrap_or_default();
        for scenario in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(format!("{scenario}::xdp"));
            out.push(format!("{scenario}::nftables"));
        }
    }
    let mut marked = false;
    for line in text.lines() {
        let l = line.trim();
        if l == "#[test]" {
            marked = true;
        } else if marked && l.starts_with("fn ") {
            let name = l[3..].split('(').next().unwrap_or_default().to_string();
            out.push(name);
            marked = false;
        } else if marked && (l.starts_with("#[ignore") || !l.starts_with("#[")) {
            // Ignored tests (tools such as the seed writer) prove nothing by running.
            marked = false;
        }
    }
    out
}

fn suite() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("tests/tests"))
        .expect("tests dir")
        .flatten()
    {
        let path = entry.path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let in_suite = stem.starts_with("fault_")
            || stem.starts_with("flood_")
            || stem == "ns_access"
            || stem == "ns_bypass"
            || stem == "fuzz_corpus";
        if in_suite {
            all.extend(tests_in(&path).into_iter().map(|t| format!("{stem}::{t}")));
        }
    }
    for entry in std::fs::read_dir(root().join("fuzz/fuzz_targets"))
        .expect("fuzz targets")
        .flatten()
    {
        if let Some(stem) = entry.path().file_stem().and_then(|s| s.to_str()) {
            all.insert(format!("fuzz {stem}"));
        }
    }
    all
}

#[test]
fn every_row_names_an_existing_test_and_every_test_has_a_row() {
    let rows = rows();
    let suite = suite();
    assert!(suite.len() >= 10, "suite found: {suite:?}");
    let missing: Vec<_> = suite.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "tests without a row in docs/reliability.md: {missing:?}"
    );
    for row in &rows {
        let exists = suite.contains(row) || {
            // Rows may also cite other existing tests (e.g. the interface test in ns_daemon).
            row.split_once("::").is_some_and(|(file, f)| {
                tests_in(&root().join(format!("tests/tests/{file}.rs")))
                    .iter()
                    .any(|t| t == f)
            })
        };
        assert!(
            exists,
            "docs/reliability.md lists `{row}`, which does not exist"
        );
    }
}

#[test]
fn the_checker_sees_scenarios_on_both_dataplanes() {
    let tests = tests_in(&root().join("tests/tests/ns_daemon.rs"));
    for dataplane in ["xdp", "nftables"] {
        let name = format!("detach_removes_enforcement::{dataplane}");
        assert!(tests.contains(&name), "{name} not in {tests:?}");
    }
}

#[test]
fn the_checker_sees_ignored_and_plain_tests() {
    let tests = tests_in(&root().join("tests/tests/fuzz_corpus.rs"));
    assert!(tests.contains(&"policy_corpus_passes".to_string()));
    assert!(
        !tests.contains(&"write_seed_corpora".to_string()),
        "{tests:?}"
    );
}
