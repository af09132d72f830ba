//! `cargo xtask reliability`: refreshes the "Figure measured" column of the table in
//! `docs/reliability.md` from what the last runs recorded in `target/reliability/`: one
//! `FILE::TEST.txt` per reliability test (written by `lazaret_tests::reliability::
//! record_figure`) and one `fuzz-TARGET.json` per fuzz target (`cargo xtask fuzz`).
//!
//! Rows whose test has not run since keep their figure. The other columns are written by
//! hand; `tests/tests/reliability_doc.rs` checks that every row names a test that exists and
//! that every fault, flood, access and fuzz test has a row.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub(crate) fn run() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let figures = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("reliability");
    let doc = root.join("docs/reliability.md");
    let text = std::fs::read_to_string(&doc).with_context(|| doc.display().to_string())?;
    let (out, updated) = refresh(&text, |test| figure(&figures, test));
    std::fs::write(&doc, out)?;
    eprintln!(
        "reliability: {updated} figures refreshed from {} into {}",
        figures.display(),
        doc.display()
    );
    Ok(())
}

/// The recorded figure of a row's test, if any run recorded one.
fn figure(dir: &Path, test: &str) -> Option<String> {
    if let Some(target) = test.strip_prefix("fuzz ") {
        let json = std::fs::read_to_string(dir.join(format!("fuzz-{target}.json"))).ok()?;
        let field = |k: &str| -> Option<String> {
            let at = json.find(&format!("\"{k}\":"))? + k.len() + 3;
            Some(json[at..].split([',', '}']).next()?.trim().to_string())
        };
        let crashed = field("crashed")? == "true";
        return Some(format!(
            "{} inputs in {} s, {}",
            field("runs")?,
            field("seconds")?,
            if crashed { "CRASHED" } else { "no crash" }
        ));
    }
    let text = std::fs::read_to_string(dir.join(format!("{test}.txt"))).ok()?;
    Some(text.trim().replace('|', "/"))
}

/// Replaces the third cell of each table row whose first cell is a `code` test name.
fn refresh(text: &str, figure: impl Fn(&str) -> Option<String>) -> (String, usize) {
    let mut updated = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').collect();
        // "| `test` | proves | figure |" splits into 5 pieces, empty at both ends.
        let test = cells
            .get(1)
            .map(|c| c.trim())
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'));
        match (cells.len(), test.and_then(&figure)) {
            (5, Some(fig)) => {
                out.push_str(&format!("|{}|{}| {fig} |", cells[1], cells[2]));
                updated += 1;
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    (out, updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_only_rows_with_a_new_figure() {
        let doc = "# T\n\n| Test | Proves | Figure |\n|---|---|---|\n| `a::b` | x | old |\n| `c::d` | y | kept |\n";
        let (out, n) = refresh(doc, |t| (t == "a::b").then(|| "new".to_string()));
        assert_eq!(n, 1);
        assert!(out.contains("| `a::b` | x | new |"), "{out}");
        assert!(out.contains("| `c::d` | y | kept |"), "{out}");
    }
}
