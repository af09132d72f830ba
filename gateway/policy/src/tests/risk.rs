//! Advisories in the policy repository and `[site.risk]`: a device's risk from the
//! advisories that apply to it, what the site does at a band (enforce, a tighter
//! quarantine threshold), the warning about high-risk devices with broad workflows, and
//! advisory files refused at their line.

use super::*;
use crate::model::Mode;

const PUMP_INVENTORY: &str = r#"
[[devices]]
id = "pump-1"
class = "pump"
mac = "00:1a:2b:00:00:01"
ipv4 = "10.20.0.11"
mode = "audit"
vendor = "ICU Medical"
model = "Plum 360"
firmware = "15.10"
life_critical = true
patchable = false
quarantine = { after = 10 }
"#;

const CSAF: &str =
    include_str!("../../../../policies/import/advisories/example-pumps-2026-001.json");
const KEV: &str = include_str!("../../../../policies/import/advisories/kev-excerpt.json");

fn site(risk: &str) -> String {
    BASE.replace(
        "[site.ports]",
        &format!("[site.risk]\n{risk}\n[site.ports]"),
    )
}

fn pump(files: &[(&str, &str)], risk: &str) -> Result<Policy, PolicyErrors> {
    let base = site(risk);
    let mut all = vec![("base.toml", base.as_str()), ("pump.toml", PUMP_INVENTORY)];
    all.extend_from_slice(files);
    parse(&all)
}

#[test]
fn an_advisory_raises_the_band_and_the_site_enforces_and_tightens_from_it() {
    let risk = "enforce_from = \"high\"\ntighten_from = \"high\"";
    // 55 (life-critical 30, not patchable 15, no patch date 10): medium, nothing changes.
    let p = pump(&[], risk).unwrap_or_else(|e| panic!("{}", e.render()));
    let d = &p.devices[0];
    assert_eq!((d.mode, d.quarantine.after), (Mode::Audit, 10));
    assert!(d.risk_actions.is_empty());
    // The advisory (15, not patchable 10) and the KEV entry (25): 100, high.
    let p = pump(
        &[("advisories/a.json", CSAF), ("advisories/kev.json", KEV)],
        risk,
    )
    .unwrap_or_else(|e| panic!("{}", e.render()));
    let d = &p.devices[0];
    assert_eq!((d.mode, d.quarantine.after), (Mode::Enforce, 5));
    assert_eq!(d.risk_actions.len(), 2, "{:?}", d.risk_actions);
    assert!(
        d.risk_actions[0].starts_with("enforced, not audit: risk 100 (high)"),
        "{:?}",
        d.risk_actions
    );
    let r = crate::risk::score(&d.inventory, 0, &p.advisories.hits(&d.inventory));
    assert_eq!(r.advisories[0].id, "EXAMPLE-PUMPS-2026-001");
    assert!(r.advisories[0].exploited);
    // Without [site.risk], the advisory is reported but changes nothing.
    let p = pump(&[("advisories/a.json", CSAF)], "").unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(p.devices[0].mode, Mode::Audit);
    // The fixed firmware: no advisory, no change.
    let fixed = PUMP_INVENTORY.replace("15.10", "15.11");
    let base = site(risk);
    let p = parse(&[
        ("base.toml", &base),
        ("pump.toml", &fixed),
        ("advisories/a.json", CSAF),
    ])
    .unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(p.devices[0].mode, Mode::Audit);
}

#[test]
fn a_bad_band_is_refused_with_the_choices() {
    let err = pump(&[], "enforce_from = \"severe\"").expect_err("band");
    let text = err.render();
    assert!(
        text.contains("severe") && text.contains("low, medium, high"),
        "{text}"
    );
}

#[test]
fn a_broken_advisory_is_a_policy_error_at_its_line() {
    let broken = CSAF.replacen("\"category\": \"vendor\",", "\"category\": \"vendor\",,", 1);
    let err = pump(&[("advisories/a.json", &broken)], "").expect_err("broken");
    let text = err.render();
    assert!(text.contains("advisories/a.json:7:28: error"), "{text}");
    assert!(text.contains("advisory file: not JSON"), "{text}");
}

#[test]
fn a_high_risk_device_with_a_workflow_to_the_internet_or_a_segment_is_warned() {
    let broad = r#"
[workflows.cloud]
rules = [
  { peer = "any", proto = "tcp", ports = [443] },
  { peer = "198.51.100.0/24", proto = "tcp", ports = [8443] },
  { peer = "10.20.0.0/16", proto = "udp", ports = [5000] },
  { peer = "role:pump-server", proto = "tcp", ports = [8080] },
]
"#;
    let inventory = PUMP_INVENTORY.replace("mode = \"audit\"", "workflows = [\"cloud\"]");
    let base = site("");
    let files = [
        ("base.toml", base.as_str()),
        ("pump.toml", inventory.as_str()),
        ("cloud.toml", broad),
        ("advisories/a.json", CSAF),
    ];
    let p = parse(&files).unwrap_or_else(|e| panic!("{}", e.render()));
    let what: Vec<String> = (p.warnings.iter())
        .filter_map(|w| match &w.problem {
            Problem::RiskyBroadFlow {
                what, advisories, ..
            } => {
                assert!(
                    advisories.contains("EXAMPLE-PUMPS-2026-001"),
                    "{advisories}"
                );
                Some(what.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        what,
        [
            "any address (the internet)",
            "198.51.100.0/24, on the internet",
            "10.20.0.0/16, all of device segment 10.20.0.0/24",
        ]
    );
    // Medium risk (no advisory): no warning.
    let p = parse(&files[..3]).unwrap_or_else(|e| panic!("{}", e.render()));
    assert!(!p
        .warnings
        .iter()
        .any(|w| matches!(w.problem, Problem::RiskyBroadFlow { .. })));
}

#[test]
fn the_directory_loader_reads_advisories_and_nothing_else_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("advisories/old")).unwrap();
    std::fs::write(dir.join("base.toml"), BASE).unwrap();
    std::fs::write(dir.join("pump.toml"), PUMP_INVENTORY).unwrap();
    std::fs::write(dir.join("advisories/a.json"), CSAF).unwrap();
    std::fs::write(dir.join("advisories/old/b.json"), "not read").unwrap();
    std::fs::write(dir.join("stray.json"), "not read").unwrap();
    let p = load_dir(dir).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(p.advisories.advisories.len(), 1);
    assert_eq!(p.advisories.advisories[0].id, "EXAMPLE-PUMPS-2026-001");
}
