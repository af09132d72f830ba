//! The example hospital policy end to end: its clinical flows through the reference
//! classifier, `explain` output snapshots, and `plan` across two git commits.

use super::*;
use crate::explain::{explain, Query};
use crate::plan::{plan, Change};
use lazaret_abi::{self as abi, Reason};
use std::collections::BTreeMap;

fn q(from: &str, to: &str, proto: u8, port: Option<u16>) -> Query {
    Query {
        from: from.into(),
        to: to.into(),
        proto,
        port,
        quarantine: BTreeMap::new(),
    }
}

fn reason(from: &str, to: &str, proto: u8, port: u16) -> &'static str {
    let (p, c) = example();
    explain(&p, &c, &q(from, to, proto, Some(port)))
        .unwrap()
        .reason
}

#[test]
fn the_example_policy_checks_clean() {
    let (_, c) = example();
    assert_eq!(warnings(&c), vec![]);
    assert!(c.stats.devices >= 9);
}

#[test]
fn clinical_flows_of_the_example_policy() {
    use abi::{PROTO_TCP as TCP, PROTO_UDP as UDP};
    let allow = Reason::AllowRule.name();
    let deny = Reason::DenyNoRule.name();
    assert_eq!(reason("mon-icu-01", "10.10.1.20", TCP, 2575), allow);
    assert_eq!(reason("mon-icu-01", "10.10.1.20", TCP, 22), deny);
    assert_eq!(reason("10.10.1.20", "mon-icu-01", TCP, 2575), deny);
    assert_eq!(reason("cs-icu-01", "mon-icu-02", UDP, 2000), allow);
    assert_eq!(reason("mon-icu-02", "cs-icu-01", UDP, 2000), deny);
    assert_eq!(reason("mon-icu-02", "mon-icu-01", UDP, 7000), allow);
    assert_eq!(reason("pump-icu-01", "10.10.3.10", TCP, 51243), allow);
    // The pump server never opens a flow to a pump (orders ride the pump's own session).
    assert_eq!(reason("10.10.3.10", "pump-icu-01", TCP, 51243), deny);
    assert_eq!(reason("ct-01", "10.10.4.10", TCP, 11112), allow);
    assert_eq!(reason("ct-01", "10.10.4.20", TCP, 104), allow);
    assert_eq!(reason("10.10.5.10", "anes-01", UDP, 161), allow);
    assert_eq!(reason("anes-01", "10.10.5.10", TCP, 40000), allow);
    assert_eq!(reason("cab-01", "203.0.113.80", TCP, 443), allow);
    assert_eq!(reason("cab-01", "10.10.0.123", UDP, 123), allow);
    assert_eq!(reason("pump-icu-01", "10.10.0.53", UDP, 53), allow);
    // The lab analyzer's class is in audit mode.
    assert_eq!(
        reason("lab-01", "10.10.1.20", TCP, 2575),
        Reason::Audit.name()
    );
    // Neither end managed.
    assert_eq!(
        reason("10.10.1.20", "10.10.3.10", TCP, 1),
        Reason::PassUnmanaged.name()
    );
}

#[test]
fn quarantine_narrows_the_policy() {
    let (p, c) = example();
    let mut query = q("mon-icu-01", "10.10.1.20", abi::PROTO_TCP, Some(2575));
    query
        .quarantine
        .insert("mon-icu-01".into(), abi::QUARANTINE_RESTRICT);
    // monitor-results is essential: kept under restrict.
    assert_eq!(
        explain(&p, &c, &query).unwrap().reason,
        Reason::AllowRule.name()
    );
    query
        .quarantine
        .insert("mon-icu-01".into(), abi::QUARANTINE_ISOLATE);
    assert_eq!(
        explain(&p, &c, &query).unwrap().reason,
        Reason::DenyQuarantine.name()
    );
    let mut jump = q("mon-icu-01", "10.10.9.5", abi::PROTO_TCP, Some(22));
    jump.quarantine
        .insert("mon-icu-01".into(), abi::QUARANTINE_ISOLATE);
    assert_eq!(
        explain(&p, &c, &jump).unwrap().reason,
        Reason::AllowRule.name()
    );
    let mut sync = q("cs-icu-01", "mon-icu-01", abi::PROTO_UDP, Some(2000));
    sync.quarantine
        .insert("mon-icu-01".into(), abi::QUARANTINE_RESTRICT);
    assert_eq!(
        explain(&p, &c, &sync).unwrap().reason,
        Reason::DenyQuarantine.name()
    );
}

#[test]
fn explain_names_the_rule_and_the_near_misses() {
    let (p, c) = example();
    let e = explain(
        &p,
        &c,
        &q("mon-icu-01", "10.10.1.20", abi::PROTO_TCP, Some(2575)),
    )
    .unwrap();
    assert_eq!(
        e.render(),
        "mon-icu-01 (10.20.0.11) -> 10.10.1.20 [role hl7-engine], tcp/2575\n\
         verdict: allow (allow_rule)\n  \
         mon-icu-01 opens the flow: allowed by workflow `monitor-results`, rule 1 (rule #19) at policies/workflows/monitoring.toml:8:1\n"
            .replace("policies/", &format!("{}/", repo_root().join("policies").display()))
    );
    let e = explain(
        &p,
        &c,
        &q("mon-icu-02", "cs-icu-01", abi::PROTO_UDP, Some(2000)),
    )
    .unwrap();
    assert_eq!(
        e.render(),
        "mon-icu-02 (10.20.0.12) -> cs-icu-01 (10.20.0.10), udp/2000\n\
         verdict: deny (deny_no_rule)\n  \
         mon-icu-02 opens the flow: no matching rule\n    \
         - a rule allows this flow only when the peer opens it: udp/2000 with 10.20.0.10/32 (workflow `central-time-sync`, rule 1)\n    \
         - a rule allows udp/7000 with 10.20.0.10/32 (workflow `monitoring-network`, rule 1) instead\n  \
         note: no rule of `mon-icu-02`'s policy allows this flow\n"
    );
    assert!(matches!(
        explain(&p, &c, &q("nope", "ct-01", abi::PROTO_TCP, Some(1))),
        Err(crate::explain::ExplainError::UnknownEndpoint(_))
    ));
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn plan_between_two_git_revisions() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    copy_dir(&repo_root().join("policies"), &root.join("policies"));
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "initial policy"]);
    // The change under review: a new pump, and the CT may no longer use port 104.
    let pumps = root.join("policies/devices/pumps.toml");
    let mut text = std::fs::read_to_string(&pumps).unwrap();
    text.push_str("\n[[devices]]\nid = \"pump-icu-03\"\nclass = \"infusion-pump\"\nmac = \"00:1a:2b:30:00:13\"\nipv4 = \"10.30.0.13\"\nvlan = 30\ninterface = \"pumps0\"\nlife_critical = true\nfirmware = \"15.10\"\n");
    std::fs::write(&pumps, text).unwrap();
    let imaging = root.join("policies/workflows/imaging.toml");
    let text = std::fs::read_to_string(&imaging).unwrap().replacen(
        "ports = [104, 11112]",
        "ports = [11112]",
        1,
    );
    std::fs::write(&imaging, text).unwrap();
    let ct = root.join("policies/devices/imaging.toml");
    let text = std::fs::read_to_string(&ct)
        .unwrap()
        .replace("firmware = \"VA40\"", "firmware = \"VA50\"");
    std::fs::write(&ct, text).unwrap();
    git(
        root,
        &["commit", "-q", "-a", "-m", "add pump, DICOM-TLS port only"],
    );

    let load = |rev: &str| {
        let files = crate::git::read_revision(root, rev, "policies").unwrap();
        assert!(files
            .iter()
            .all(|f| f.name.starts_with(&format!("{rev}:policies/"))));
        let p = parse_sources(files).unwrap();
        let c = compile(&p).unwrap();
        (p, c)
    };
    let (op, oc) = load("HEAD~1");
    let (np, nc) = load("HEAD");
    assert!(crate::git::is_revision(root, "HEAD~1"));
    assert!(!crate::git::is_revision(root, "no-such-rev"));
    let pl = plan(&op, &oc, &np, &nc);
    let names: Vec<(&str, Change)> = pl
        .devices
        .iter()
        .map(|d| (d.device.as_str(), d.change))
        .collect();
    assert_eq!(
        names,
        vec![("ct-01", Change::Changed), ("pump-icu-03", Change::Added)]
    );
    let ct = &pl.devices[0];
    assert_eq!(ct.denied.len(), 1, "{:#?}", ct.denied);
    assert_eq!(ct.denied[0].ports, vec![(104, 104)]);
    assert_eq!(ct.denied[0].peer.to_string(), "10.10.4.10/32");
    assert_eq!(ct.denied[0].peer_name.as_deref(), Some("role:pacs"));
    assert!(ct.allowed.is_empty());
    assert_eq!(ct.inventory.len(), 1);
    assert_eq!(ct.inventory[0].field, "firmware");
    let rendered = pl.render();
    assert!(
        rendered.contains(
            "- deny  ct-01 -> role:pacs (10.10.4.10/32) tcp/104  (workflow `dicom-store`, rule 1)"
        ),
        "{rendered}"
    );
    assert!(
        rendered.contains("+ pump-icu-03 (infusion-pump) new device"),
        "{rendered}"
    );
    assert!(
        rendered.contains("+ allow pump-icu-03 -> role:pump-server (10.10.3.10/32) tcp/51243"),
        "{rendered}"
    );
    // No change, no plan.
    assert!(plan(&np, &nc, &np, &nc).is_empty());
}

/// A plan names peers as the policy does, leaves out a device's flows to itself (a rule
/// naming its own class), and warns when a life-critical device's quarantine action
/// changes.
#[test]
fn plan_names_peers_skips_self_flows_and_flags_life_critical_quarantine_changes() {
    let devices = |port: u16, action: &str| {
        format!(
            r#"
[classes.monitor]
workflows = ["peers"]
quarantine = {{ action = "{action}" }}
[workflows.peers]
rules = [{{ peer = "class:monitor", proto = "udp", ports = [{port}] }}]
[[devices]]
id = "mon-1"
class = "monitor"
ipv4 = "10.20.0.21"
life_critical = true
[[devices]]
id = "mon-2"
class = "monitor"
ipv4 = "10.20.0.22"
"#
        )
    };
    let (op, oc) = build(&[("base.toml", BASE), ("mon.toml", &devices(7000, "alert"))]).unwrap();
    let (np, nc) = build(&[("base.toml", BASE), ("mon.toml", &devices(7001, "isolate"))]).unwrap();
    let pl = plan(&op, &oc, &np, &nc);
    let mon1 = pl.devices.iter().find(|d| d.device == "mon-1").unwrap();
    assert!(mon1.life_critical);
    let peers: Vec<&str> = mon1
        .allowed
        .iter()
        .chain(&mon1.denied)
        .filter_map(|f| f.peer_name.as_deref())
        .collect();
    assert!(
        peers.iter().all(|p| *p == "mon-2"),
        "no flow to itself: {mon1:#?}"
    );
    assert!(!peers.is_empty());
    let text = pl.render();
    assert!(
        text.contains("+ allow mon-1 -> mon-2 (10.20.0.22/32) udp/7001"),
        "{text}"
    );
    let mon1_text = text.split("~ mon-2").next().unwrap_or_default();
    assert!(!mon1_text.contains("mon-1 (10.20.0.21/32)"), "{text}");
    assert!(
        text.contains(
            "! LIFE-CRITICAL device: its quarantine action changes from alert to isolate"
        ),
        "{text}"
    );
    // mon-2 is not life-critical: its action changes without the warning.
    let mon2 = text.split("~ mon-2").nth(1).unwrap_or_default();
    assert!(
        mon2.contains("quarantine action: \"alert\" -> \"isolate\""),
        "{text}"
    );
    assert!(!mon2.contains("LIFE-CRITICAL"), "{text}");
}
