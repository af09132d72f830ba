//! Vendor service windows (`[exceptions.*]`): what `check` refuses and warns about, and
//! what a window grants at a second — never past a quarantine.

use super::*;
use crate::explain::{explain, Query};
use crate::windows::{compile_at, format_time, now};
use lazaret_abi::{Reason, PROTO_TCP, QUARANTINE_ISOLATE, QUARANTINE_RESTRICT};
use std::collections::BTreeMap;

const VENDOR: &str = r#"
[roles.vendor-vpn]
addresses = ["10.10.9.0/24"]
[workflows.vendor-remote]
description = "the vendor's remote session"
rules = [{ peer = "role:vendor-vpn", proto = "tcp", ports = [22], initiator = "peer" }]
"#;

fn window(from: i64, end: &str) -> String {
    format!(
        r#"{VENDOR}
[exceptions.visit]
devices = ["pump-1"]
workflows = ["vendor-remote"]
from = {}
{end}
ticket = "CHG-0042"
approved_by = "biomed on call"
"#,
        format_time(from)
    )
}

/// What explain says of the vendor's session to the pump at `at`, under `quarantine`.
fn vendor_session(text: &str, at: i64, quarantine: Option<u8>) -> &'static str {
    let p = with(text).unwrap_or_else(|e| panic!("{}", e.render()));
    let (c, _) = compile_at(&p, at).unwrap();
    let q = Query {
        from: "10.10.9.5".into(),
        to: "pump-1".into(),
        proto: PROTO_TCP,
        port: Some(22),
        quarantine: quarantine
            .map(|q| BTreeMap::from([("pump-1".to_string(), q)]))
            .unwrap_or_default(),
    };
    explain(&p, &c, &q).unwrap().reason
}

#[test]
fn a_window_grants_its_workflows_only_while_open_and_never_past_a_quarantine() {
    let from = 1_796_374_800;
    let text = window(from, r#"duration = "2h""#);
    let (allow, deny) = (Reason::AllowRule.name(), Reason::DenyNoRule.name());
    assert_eq!(vendor_session(&text, from - 1, None), deny);
    assert_eq!(
        vendor_session(&text, from, None),
        allow,
        "from is inclusive"
    );
    assert_eq!(vendor_session(&text, from + 7199, None), allow);
    assert_eq!(
        vendor_session(&text, from + 7200, None),
        deny,
        "until is exclusive"
    );
    let quarantined = Reason::DenyQuarantine.name();
    for q in [QUARANTINE_RESTRICT, QUARANTINE_ISOLATE] {
        assert_eq!(vendor_session(&text, from + 60, Some(q)), quarantined);
    }
}

#[test]
fn a_window_by_class_grants_every_device_of_the_class() {
    let t = now();
    let text = window(t - 60, r#"duration = "1h""#)
        .replace(r#"devices = ["pump-1"]"#, r#"class = "pump""#);
    assert_eq!(vendor_session(&text, t, None), Reason::AllowRule.name());
}

#[test]
fn check_refuses_a_window_it_cannot_bound_or_trust() {
    let from = now() + 3600;
    let refused = |text: String| problems(with(&text).and_then(|p| compile(&p).map(|c| (p, c))));
    assert!(matches!(
        refused(window(from, r#"duration = "25h""#))[..],
        [Problem::ExceptionTooLong { .. }]
    ));
    let site_max = window(from, r#"duration = "3h""#) + "\n";
    let strict = with(&site_max).map(|_| ());
    assert!(strict.is_ok(), "3 h is within the default maximum");
    assert!(matches!(
        refused(window(from, r#"until = "2026-12-04T09:00:00""#))[..],
        [Problem::BadDateTime { .. }]
    ));
    assert!(matches!(
        refused(window(
            from,
            &format!("until = \"{}\"", format_time(from - 1))
        ))[..],
        [Problem::ExceptionEndsBeforeStart { .. }]
    ));
    assert!(matches!(
        refused(window(from, r#"duration = "1h""#) + "\nuntil = \"2099-01-01T00:00:00Z\"")[..],
        [Problem::ExceptionUntilAndDuration { .. }]
    ));
    assert!(matches!(
        refused(window(from, r#"duration = "1h""#).replace("ticket = \"CHG-0042\"", ""))[..],
        [Problem::ExceptionMissing { key: "ticket", .. }]
    ));
    // An essential workflow would survive a quarantine; one naming devices applies always.
    let essential = window(from, r#"duration = "1h""#).replace(
        "description = \"the vendor's remote session\"",
        "essential = true",
    );
    assert!(matches!(
        refused(essential)[..],
        [Problem::ExceptionEssentialWorkflow { .. }]
    ));
    let named = window(from, r#"duration = "1h""#).replace(
        "rules = [{ peer",
        "rules = [{ device = \"device:pump-1\", peer",
    );
    assert!(matches!(
        refused(named)[..],
        [Problem::ExceptionWorkflowNamesDevices { .. }]
    ));
    assert!(matches!(
        refused(window(from, r#"duration = "1h""#).replace("pump-1\"]", "pump-9\"]"))[..],
        [Problem::UnknownName { .. }]
    ));
}

#[test]
fn a_site_maximum_bounds_windows_and_an_expired_one_is_a_warning() {
    let from = now() + 3600;
    let site = BASE.replace(
        "[site.ports]",
        "[site.exceptions]\nmax = \"2h\"\n[site.ports]",
    );
    let files = |w: String| {
        parse(&[
            ("base.toml", &site),
            ("pump.toml", PUMP),
            ("extra.toml", &w),
        ])
    };
    let too_long = files(window(from, r#"duration = "3h""#));
    assert!(matches!(
        too_long
            .err()
            .map(|e| e.errors().map(|d| d.problem.clone()).collect::<Vec<_>>())
            .as_deref(),
        Some([Problem::ExceptionTooLong { .. }])
    ));
    let t = now();
    let expired = with(&window(t - 7200, r#"duration = "1h""#)).unwrap();
    let (c, open) = compile_at(&expired, t).unwrap();
    assert!(open.is_empty());
    let warned: Vec<_> = expired.warnings.iter().map(|d| &d.problem).collect();
    assert!(
        matches!(warned[..], [Problem::ExceptionExpired { .. }]),
        "{warned:?}"
    );
    // A closed window's workflow is not "unused".
    let expired = Problem::ExceptionExpired {
        name: "visit".into(),
        until: format_time(t - 3600),
    };
    assert_eq!(warnings(&c), vec![expired]);
}

#[test]
fn plan_shows_a_new_window_with_its_interval_and_grants_and_explain_names_it() {
    let before = with(VENDOR).unwrap();
    let t = now();
    let after = with(&window(t - 60, r#"duration = "2h""#)).unwrap();
    let (ca, cb) = (compile(&before).unwrap(), compile(&after).unwrap());
    let p = crate::plan::plan(&before, &ca, &after, &cb);
    assert!(
        p.devices.is_empty(),
        "the devices' flows are planned as written"
    );
    let text = p.render();
    assert!(
        text.contains(&format!(
            "+ new service window visit: {} – {} (ticket CHG-0042, approved by biomed on call)",
            format_time(t - 60),
            format_time(t - 60 + 7200)
        )),
        "{text}"
    );
    assert!(
        text.contains("while open: allow role:vendor-vpn (10.10.9.0/24) -> pump-1 tcp/22"),
        "{text}"
    );
    let removed = crate::plan::plan(&after, &cb, &before, &ca).render();
    assert!(
        removed.contains("- service window removed visit"),
        "{removed}"
    );
    let (c, _) = compile_at(&after, t).unwrap();
    let q = Query {
        from: "10.10.9.5".into(),
        to: "pump-1".into(),
        proto: PROTO_TCP,
        port: Some(22),
        quarantine: BTreeMap::new(),
    };
    let e = explain(&after, &c, &q).unwrap();
    assert!(
        e.notes
            .iter()
            .any(|n| n.starts_with("service window visit (")
                && n.contains("grants pump-1 vendor-remote: open now")),
        "{:?}",
        e.notes
    );
}

#[test]
fn a_window_that_cannot_compile_open_is_refused_before_it_opens() {
    // pump-1 has no IPv6 address: a workflow with IPv6 peers only cannot apply to it. The
    // window is hours away, and still refused now, by check and by the reload.
    let text = window(now() + 3600, r#"duration = "1h""#).replace(
        r#"addresses = ["10.10.9.0/24"]"#,
        r#"addresses = ["fd00:99::/64"]"#,
    );
    let p = with(&text).unwrap();
    let refused = compile_at(&p, now())
        .err()
        .map(|e| e.errors().map(|d| d.problem.clone()).collect::<Vec<_>>());
    assert!(
        matches!(refused.as_deref(), Some([Problem::FamilyMismatch { .. }])),
        "{refused:?}"
    );
    assert!(
        compile(&p).is_ok(),
        "as written (every window closed) it compiles"
    );
}

#[test]
fn plan_sees_a_window_change_through_its_workflow_and_its_managed_peers() {
    let t = now() + 3600;
    let before = with(&window(t, r#"duration = "1h""#)).unwrap();
    // Only the workflow changes (the window's own entry does not): 22 becomes 22 and 443.
    let after = with(&window(t, r#"duration = "2h""#).replace("ports = [22]", "ports = [22, 443]"))
        .unwrap();
    let (ca, cb) = (compile(&before).unwrap(), compile(&after).unwrap());
    let text = crate::plan::plan(&before, &ca, &after, &cb).render();
    assert!(text.contains("~ service window changed visit"), "{text}");
    assert!(
        text.contains(&format!(
            "was {} – {}",
            format_time(t),
            format_time(t + 3600)
        )),
        "{text}"
    );
    assert!(text.contains("tcp/22,443"), "{text}");
    let mut workflow_only = window(t, r#"duration = "1h""#);
    let same_entry = with(&workflow_only).unwrap();
    workflow_only = workflow_only.replace("ports = [22]", "ports = [2222]");
    let edited = with(&workflow_only).unwrap();
    let (cs, ce) = (compile(&same_entry).unwrap(), compile(&edited).unwrap());
    let p = crate::plan::plan(&same_entry, &cs, &edited, &ce);
    assert!(
        !p.is_empty(),
        "a workflow only a window uses changed: the plan is not empty"
    );
    // A window whose workflow's peer is a managed device changes that device's policy too.
    let peer = window(t, r#"duration = "1h""#).replace(
        r#"peer = "role:vendor-vpn", proto = "tcp", ports = [22], initiator = "peer""#,
        r#"peer = "device:pump-2", proto = "tcp", ports = [22]"#,
    ) + r#"
[[devices]]
id = "pump-2"
class = "pump"
mac = "00:1a:2b:00:00:02"
ipv4 = "10.20.0.12"
"#;
    let with_peer = with(&peer).unwrap();
    let none = with(&format!("{VENDOR}\n[[devices]]\nid = \"pump-2\"\nclass = \"pump\"\nmac = \"00:1a:2b:00:00:02\"\nipv4 = \"10.20.0.12\"\n")).unwrap();
    let (cn, cp) = (compile(&none).unwrap(), compile(&with_peer).unwrap());
    let p = crate::plan::plan(&none, &cn, &with_peer, &cp);
    let granted: Vec<&str> = p.windows[0]
        .grants
        .iter()
        .map(|(d, _)| d.as_str())
        .collect();
    assert_eq!(granted, ["pump-1", "pump-2"]);
}

#[test]
fn a_site_maximum_beyond_a_year_is_refused() {
    let site = BASE.replace(
        "[site.ports]",
        "[site.exceptions]\nmax = \"400d\"\n[site.ports]",
    );
    let r = parse(&[("base.toml", &site), ("pump.toml", PUMP)]);
    let problems: Vec<Problem> = r
        .err()
        .map(|e| e.errors().map(|d| d.problem.clone()).collect())
        .unwrap_or_default();
    assert!(
        matches!(problems[..], [Problem::ExceptionMaxTooLong { .. }]),
        "{problems:?}"
    );
}

#[test]
fn a_window_that_grants_nothing_new_is_a_warning() {
    let t = now() + 3600;
    // pump-1's class already has `sync`: granting it again by window hides nothing new.
    let redundant = window(t, r#"duration = "1h""#).replace(
        r#"workflows = ["vendor-remote"]"#,
        r#"workflows = ["vendor-remote", "sync"]"#,
    );
    let p = with(&redundant).unwrap();
    let warned: Vec<&Problem> = p.warnings.iter().map(|d| &d.problem).collect();
    assert!(
        matches!(warned[..], [Problem::ExceptionRedundant { .. }]),
        "{warned:?}"
    );
    // A window for two devices, one of which lacks the workflow: it adds something.
    let partly = redundant.replace(r#"devices = ["pump-1"]"#, r#"devices = ["pump-1", "mon-1"]"#)
        + "\n[[devices]]\nid = \"mon-1\"\nmac = \"00:1a:2b:00:00:09\"\nipv4 = \"10.20.0.19\"\nworkflows = [\"vendor-remote\"]\n";
    let p = with(&partly).unwrap();
    assert!(
        !p.warnings
            .iter()
            .any(|d| matches!(d.problem, Problem::ExceptionRedundant { .. })),
        "{:?}",
        p.warnings
    );
    let empty = format!("{VENDOR}\n[classes.unused]\n")
        + &window(t, r#"duration = "1h""#)
            .replace(VENDOR, "")
            .replace(r#"devices = ["pump-1"]"#, r#"class = "unused""#);
    let p = with(&empty).unwrap();
    let warned: Vec<&Problem> = p.warnings.iter().map(|d| &d.problem).collect();
    assert!(
        warned
            .iter()
            .any(|w| matches!(w, Problem::ExceptionGrantsNothing { .. })),
        "{warned:?}"
    );
}
