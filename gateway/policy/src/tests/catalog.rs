//! Snapshot catalog of rendered diagnostics: every `testdata/catalog/*.toml` is a policy with
//! mistakes; its `.expected` file holds the exact output of `lazaret check`'s error report.
//! Re-bless after a deliberate wording change with
//! `LAZARET_BLESS=1 cargo test -p lazaret --lib policy::tests::catalog`.

use super::*;
use crate::diag::render_all;

fn render(name: &str, text: &str) -> String {
    match parse(&[(name, text)]) {
        Err(e) => e.render(),
        Ok(p) => match compile(&p) {
            Err(e) => e.render(),
            Ok(c) => render_all(&p.sources, &c.warnings) + "ok\n",
        },
    }
}

#[test]
fn catalog_of_rendered_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata/catalog");
    let bless = std::env::var_os("LAZARET_BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "catalog is missing");
    let mut failures = Vec::new();
    for case in cases {
        let file = case.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&case).unwrap();
        let got = render(&format!("catalog/{file}"), &text);
        let expected_path = case.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!("=== {file}: expected\n{expected}=== got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
