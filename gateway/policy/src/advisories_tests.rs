//! Advisories: the example hospital's CSAF document and KEV excerpt (written in their
//! published formats), version ranges in `vers:` and plain syntax, fixed versions, KEV
//! entries no advisory names, and hostile files.
//!
//! The CSAF document was checked against the OASIS CSAF 2.0 JSON schema and the
//! mandatory tests (6.1) of secvisogram's csaf-validator-lib 2.0.10 (from npm, offline):
//! valid. CISA publishes no offline package of the KEV schema; the excerpt follows the
//! catalog's published field names and types.

use super::*;

const CSAF: &str = include_str!("../../../policies/import/advisories/example-pumps-2026-001.json");
const KEV: &str = include_str!("../../../policies/import/advisories/kev-excerpt.json");

fn pump(firmware: &str) -> Inventory {
    Inventory {
        vendor: "ICU Medical, Inc.".into(),
        model: "Plum 360".into(),
        firmware: firmware.into(),
        ..Inventory::default()
    }
}

fn catalog(files: &[&str]) -> Catalog {
    let mut c = Catalog::default();
    for (i, f) in files.iter().enumerate() {
        c.add(&format!("f{i}.json"), f).expect("reads");
    }
    c
}

#[test]
fn a_csaf_range_matches_the_affected_firmware_and_not_the_fixed_one() {
    let c = catalog(&[CSAF]);
    let ids = |fw: &str| -> Vec<String> { c.hits(&pump(fw)).into_iter().map(|h| h.id).collect() };
    assert_eq!(ids("15.10"), ["EXAMPLE-PUMPS-2026-001"]);
    assert_eq!(ids("15.0"), ["EXAMPLE-PUMPS-2026-001"]);
    assert!(ids("15.11").is_empty(), "fixed");
    assert!(ids("14.9").is_empty(), "below the range");
    assert!(ids("16.1").is_empty(), "above the range");
    // Firmware the inventory does not record never matches a versioned product.
    assert!(ids("").is_empty());
    let hit = &c.hits(&pump("15.10"))[0];
    assert_eq!(hit.cves, ["CVE-2026-99901"]);
    assert!(!hit.exploited, "no KEV read yet");
    // Another model or vendor: no match.
    let other = Inventory {
        model: "Plum A+".into(),
        ..pump("15.10")
    };
    assert!(c.hits(&other).is_empty());
}

#[test]
fn the_kev_catalog_marks_an_advisory_known_exploited() {
    let c = catalog(&[CSAF, KEV]);
    let hits = c.hits(&pump("15.10"));
    assert_eq!(
        hits.len(),
        1,
        "the KEV entry is the advisory's CVE: one hit"
    );
    assert!(hits[0].exploited);
    assert!(
        c.hits(&pump("15.11")).is_empty(),
        "the fixed version stays clean"
    );
}

#[test]
fn a_kev_entry_no_advisory_names_matches_by_vendor_and_product() {
    let c = catalog(&[KEV]);
    let hits = c.hits(&pump(""));
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "CVE-2026-99901");
    assert!(hits[0].exploited);
}

#[test]
fn versions_compare_by_segment() {
    use std::cmp::Ordering::*;
    assert_eq!(compare("15.9", "15.10"), Less);
    assert_eq!(compare("2.04", "2.4"), Equal);
    assert_eq!(compare("v3.0.1", "3.0"), Greater);
    assert_eq!(compare("VA40", "VA30"), Greater);
    assert_eq!(compare("1.2-rc1", "1.2"), Greater);
}

#[test]
fn plain_and_vers_ranges() {
    let held = |range: &str, fw: &str| {
        let versions = parse_range(range).expect("range");
        Product::new("ICU Medical", "Plum 360", versions).holds(&Device::of(&pump(fw)))
    };
    assert!(held("<15.11", "15.10"));
    assert!(!held("<15.11", "15.11"));
    assert!(held(">= 1.0, < 2.0", "1.5"));
    assert!(!held(">= 1.0, < 2.0", "2.0"));
    // Plain constraints all hold, in any order and however separated.
    assert!(
        !held("<15.11, >=15.0", "14.0"),
        "an AND, not two alternatives"
    );
    assert!(held(">=4.0 <4.2", "4.1"));
    assert!(!held(">=4.0 <4.2", "4.2"));
    assert!(held("vers:generic/>=1.0|<2.0|>=3.0|<4.0", "3.5"));
    assert!(!held("vers:generic/>=1.0|<2.0|>=3.0|<4.0", "2.5"));
    assert!(held("vers:generic/1.0|2.0", "2.0"));
    assert!(held("vers:generic/!=1.0", "1.1"));
    assert!(
        !held("vers:generic/>=1.0|!=1.5|<2.0", "1.5"),
        "an exclusion holds in the interval"
    );
    assert!(held("vers:generic/>=1.0|!=1.5|<2.0", "1.6"));
    assert!(
        held("vers:all/*", ""),
        "every version, firmware recorded or not"
    );
    for bad in [
        "vers:generic",
        "<",
        "vers:generic/<2.0|>=1.0",
        "All versions",
        "*",
        "1.0, 1.1",
        "<V2.0 SP1",
    ] {
        assert!(parse_range(bad).is_err(), "{bad}");
    }
}

#[test]
fn first_and_last_affected_are_bounds_and_a_repeated_advisory_counts_once() {
    let doc = CSAF
        .replace(
            "\"known_affected\": [\"PLUM360-AFFECTED\"]",
            "\"last_affected\": [\"PLUM360-15.11\"]",
        )
        .replace("\"fixed\": [\"PLUM360-15.11\"]", "\"fixed\": []");
    let c = catalog(&[&doc, &doc]);
    let ids = |fw: &str| -> Vec<String> { c.hits(&pump(fw)).into_iter().map(|h| h.id).collect() };
    assert_eq!(
        ids("15.11"),
        ["EXAMPLE-PUMPS-2026-001"],
        "last_affected is affected"
    );
    assert_eq!(
        ids("9.0"),
        ["EXAMPLE-PUMPS-2026-001"],
        "and so is every earlier version"
    );
    assert!(ids("15.12").is_empty());
    let doc = CSAF.replace(
        "\"fixed\": [\"PLUM360-15.11\"]",
        "\"first_fixed\": [\"PLUM360-15.11\"]",
    );
    let c = catalog(&[&doc]);
    assert_eq!(c.hits(&pump("15.10")).len(), 1);
    // Two release lines: 3.0 and 4.0 affected, fixed in 3.5 and 4.2.
    let lines = r#"{"document":{"csaf_version":"2.0","tracking":{"id":"TWO-LINES"}},
"product_tree":{"branches":[{"category":"vendor","name":"ICU Medical","branches":[
{"category":"product_name","name":"Plum 360","branches":[
{"category":"product_version","name":"3.0","product":{"product_id":"A3","name":"a3"}},
{"category":"product_version","name":"4.0","product":{"product_id":"A4","name":"a4"}},
{"category":"product_version","name":"3.5","product":{"product_id":"F3","name":"f3"}},
{"category":"product_version","name":"4.2","product":{"product_id":"F4","name":"f4"}}]}]}]},
"vulnerabilities":[{"cve":"CVE-2026-99902","product_status":{
"first_affected":["A3","A4"],"first_fixed":["F3","F4"]}}]}"#;
    let two = catalog(&[lines]);
    let hit = |fw: &str| !two.hits(&pump(fw)).is_empty();
    assert!(
        hit("3.1") && !hit("3.6") && hit("4.1") && !hit("4.3"),
        "each line fixed in its own release"
    );
    assert!(!hit("2.9"));
    // Firmware not recorded: not counted, but said.
    assert!(c.hits(&pump("")).is_empty());
    assert_eq!(c.unknown_firmware(&pump("")), ["EXAMPLE-PUMPS-2026-001"]);
}

#[test]
fn hostile_and_foreign_files_are_refused_with_where() {
    let mut c = Catalog::default();
    let e = c
        .add("a.json", "{\n  \"document\": {,\n}")
        .expect_err("not JSON");
    assert_eq!(e.line, 2, "{e:?}");
    assert!(e.message.starts_with("not JSON"), "{e:?}");
    let e = c
        .add("b.json", r#"{"document": {"csaf_version": "1.2"}}"#)
        .expect_err("version");
    assert!(e.message.contains("only CSAF 2.0"), "{e:?}");
    let e = c.add("c.json", r#"{"hello": 1}"#).expect_err("foreign");
    assert!(e.message.contains("neither a CSAF 2.0 document"), "{e:?}");
    let e = c
        .add(
            "d.json",
            r#"{"catalogVersion": "x", "vulnerabilities": [{"cveID": "nope"}]}"#,
        )
        .expect_err("cve");
    assert!(e.message.contains("is not a CVE id"), "{e:?}");
    // A product tree nested past the bound.
    let mut tree = String::from(r#"{"category":"vendor","name":"v"}"#);
    for _ in 0..20 {
        tree = format!(r#"{{"category":"product_family","name":"f","branches":[{tree}]}}"#);
    }
    let doc = format!(
        r#"{{"document":{{"csaf_version":"2.0","tracking":{{"id":"X"}}}},"product_tree":{{"branches":[{tree}]}}}}"#
    );
    let e = c.add("e.json", &doc).expect_err("deep");
    assert!(e.message.contains("nested deeper than 16"), "{e:?}");
    assert!(c.is_empty());
}
