//! The Prometheus alerting rules in deploy/prometheus: valid for promtool, covered by unit
//! tests that pass, and complete (every alert tested firing and silent, with a `for:`, a
//! severity and annotations an on-call engineer can act on).
//!
//! Needs promtool (Debian's `prometheus` package, installed by `cargo xtask setup`); a
//! missing promtool fails these tests, it never skips them.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
};

const RULES: &str = "lazaret-rules.yml";
const RULE_TESTS: &str = "lazaret-rules.test.yml";

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// `$PROMTOOL`, or `promtool` from `PATH`.
fn promtool() -> PathBuf {
    std::env::var_os("PROMTOOL").map_or_else(|| PathBuf::from("promtool"), PathBuf::from)
}

/// Runs promtool in the rules directory; panics with its output unless it succeeds.
fn run_promtool(args: &[&str]) {
    let promtool = promtool();
    let output = match Command::new(&promtool)
        .args(args)
        .current_dir(rules_dir())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{} not found: run `cargo xtask setup` (it installs Debian's `prometheus` package), \
             or point $PROMTOOL at it",
            promtool.display()
        ),
        Err(e) => panic!("cannot run {}: {e}", promtool.display()),
    };
    assert!(
        output.status.success(),
        "`promtool {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

fn read(name: &str) -> String {
    let path = rules_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Each alerting rule as (name, the text of its rule up to the next one).
fn alerts(rules: &str) -> Vec<(String, String)> {
    let mut alerts: Vec<(String, String)> = Vec::new();
    for line in rules.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alerts.push((name.trim().to_owned(), String::new()));
        } else if trimmed.starts_with("- name:") || trimmed.starts_with("- record:") {
            alerts.push((String::new(), String::new())); // ends the previous rule
        } else if let Some((_, body)) = alerts.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    alerts.retain(|(name, _)| !name.is_empty());
    alerts
}

#[test]
fn rules_pass_promtool_check() {
    run_promtool(&["check", "rules", RULES]);
}

#[test]
fn rules_pass_their_unit_tests() {
    run_promtool(&["test", "rules", RULE_TESTS]);
}

#[test]
fn every_alert_is_tested_firing_and_silent() {
    let tests = read(RULE_TESTS);
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let alerts = alerts(&read(RULES));
    assert!(alerts.len() >= 8, "only {} alerts found", alerts.len());
    for (alert, _) in &alerts {
        let cases = lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {alert}"))
            .map(|w| w[1]);
        let (mut fires, mut silent) = (false, false);
        for expectation in cases {
            fires |= expectation == "exp_alerts:";
            silent |= expectation == "exp_alerts: []";
        }
        assert!(fires, "{RULE_TESTS} has no case where {alert} fires");
        assert!(
            silent,
            "{RULE_TESTS} has no case where {alert} stays silent"
        );
    }
}

#[test]
fn every_alert_has_a_delay_a_severity_and_guidance() {
    for (alert, body) in alerts(&read(RULES)) {
        assert!(body.contains("\n        for: "), "{alert} has no `for:`");
        assert!(
            body.contains("severity: critical") || body.contains("severity: warning"),
            "{alert} has no severity label"
        );
        assert!(body.contains("summary: "), "{alert} has no summary");
        assert!(body.contains("description: "), "{alert} has no description");
        assert!(
            body.contains("journalctl -u lazaret"),
            "{alert}'s description does not say where the logs are"
        );
    }
}

#[test]
fn every_alert_links_its_section_of_the_runbook() {
    let runbook = std::fs::read_to_string(rules_dir().join("../../docs/runbook.md"))
        .expect("docs/runbook.md");
    // GitHub's heading anchors: `## LazaretDown` → `#lazaretdown`.
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    for (alert, body) in alerts(&read(RULES)) {
        let url = body
            .lines()
            .find_map(|l| l.trim().strip_prefix("runbook_url: "))
            .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
        let anchor = url
            .trim_matches('"')
            .rsplit_once("runbook.md#")
            .map(|(_, a)| a.to_string())
            .unwrap_or_else(|| panic!("{alert}'s runbook_url does not point into runbook.md"));
        assert_eq!(
            anchor,
            alert.to_lowercase(),
            "{alert} links another section"
        );
        assert!(
            anchors.contains(&anchor),
            "docs/runbook.md has no section for {alert}"
        );
    }
}

/// The Grafana dashboard (deploy/grafana/lazaret.json): every panel's query is valid
/// PromQL, checked by promtool as a recording rule with the dashboard's variables filled
/// in, and names only metric families docs/metrics.md documents.
#[test]
fn the_grafana_dashboard_queries_documented_metrics_in_valid_promql() {
    let path = rules_dir().join("../grafana/lazaret.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let dash: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    let exprs: Vec<(String, String)> = panels
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_string())))
        })
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    for title in [
        "Devices in quarantine",
        "Denied packets by reason",
        "Policy commit per gateway",
        "Map pressure",
    ] {
        assert!(exprs.iter().any(|(t, _)| t == title), "no panel {title:?}");
    }
    let docs = std::fs::read_to_string(rules_dir().join("../../docs/metrics.md"))
        .unwrap_or_else(|e| panic!("docs/metrics.md: {e}"));
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        for name in expr.split("lazaret_").skip(1).map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            format!("lazaret_{}", &rest[..end])
        }) {
            let family = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(
                docs.contains(&format!("`{family}`")),
                "panel {title:?} queries {family}, which docs/metrics.md does not document"
            );
        }
        let filled = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: lazaret:dashboard_{i}\n        expr: |\n          {}\n",
            filled.replace('\n', "\n          ")
        ));
    }
    let dir = lazaret_tests::netns::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path.join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap_or_else(|e| panic!("{e}"));
    run_promtool(&["check", "rules", file.to_str().unwrap_or_default()]);
}
