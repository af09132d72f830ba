//! The MUD catalog: published shapes (RFC 8520's own example, a pump with controllers and
//! abstractions, a monitor with port operators and peer-initiated flows), what cannot be
//! enforced exactly (listed, never widened), hostile files (refused with a JSON pointer),
//! and the round trip through `export` on the example hospital.

use std::path::Path;

use lazaret_policy::model::Initiator;

use super::import::{parse, MudRule};
use super::*;

const RFC: &[u8] = include_bytes!("testdata/rfc8520-lightbulb.json");
const PUMP: &[u8] = include_bytes!("testdata/infusion-pump.json");
const MONITOR: &[u8] = include_bytes!("testdata/patient-monitor.json");

fn binding(text: &str) -> Binding {
    Binding::parse(text, "binding.toml").expect("binding")
}

fn rule(initiator: Initiator, proto: u8, peers: &[&str], ports: Option<&[(u16, u16)]>) -> MudRule {
    MudRule {
        initiator,
        proto: Some(proto),
        peers: peers.iter().map(ToString::to_string).collect(),
        ports: ports.map(<[(u16, u16)]>::to_vec),
    }
}

fn rules(bytes: &[u8], b: &Binding) -> Vec<MudRule> {
    let imp = parse(bytes, "mud.json", b).expect("parse");
    imp.rules.into_keys().collect()
}

fn left_out(bytes: &[u8], b: &Binding) -> Vec<(String, String)> {
    parse(bytes, "mud.json", b).expect("parse").left_out
}

fn refused(bytes: &[u8]) -> String {
    parse(bytes, "mud.json", &binding("class = \"x\""))
        .expect_err("refused")
        .to_string()
}

#[test]
fn the_rfc_example_is_one_device_initiated_flow() {
    let b = binding("class = \"lightbulb\"\n[names]\n\"test.example.com\" = [\"role:bms\"]\n");
    // Its two ACEs are the flow and its replies: one rule.
    assert_eq!(
        rules(RFC, &b),
        [rule(
            Initiator::Device,
            6,
            &["role:bms"],
            Some(&[(443, 443)])
        )]
    );
    let imp = parse(RFC, "mud.json", &b).expect("parse");
    assert_eq!(imp.mud_url, "https://lighting.example.com/lightbulb2000");
    assert!(imp.left_out.is_empty());
}

#[test]
fn an_unbound_dns_name_is_left_out_and_listed() {
    let got = left_out(RFC, &binding("class = \"lightbulb\""));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0]
            .1
            .contains("\"test.example.com\": the binding's [names]"),
        "{got:?}"
    );
    assert!(rules(RFC, &binding("class = \"lightbulb\"")).is_empty());
}

const PUMP_BINDING: &str = r#"
class = "infusion-pump"
[controllers]
"urn:ietf:params:mud:dns" = ["role:dns"]
"urn:ietf:params:mud:ntp" = ["role:ntp"]
[abstractions]
my-controller = ["role:pump-server"]
"#;

#[test]
fn a_pump_with_controllers_and_a_network() {
    let b = binding(PUMP_BINDING);
    assert_eq!(
        rules(PUMP, &b),
        [
            rule(
                Initiator::Device,
                6,
                &["198.51.100.0/24"],
                Some(&[(443, 443)])
            ),
            rule(
                Initiator::Device,
                6,
                &["role:pump-server"],
                Some(&[(51243, 51243)])
            ),
            rule(Initiator::Device, 17, &["role:dns"], Some(&[(53, 53)])),
            rule(Initiator::Device, 17, &["role:ntp"], Some(&[(123, 123)])),
        ]
    );
    let out = left_out(PUMP, &b);
    let why: Vec<&str> = out.iter().map(|(from, _)| from.as_str()).collect();
    assert_eq!(
        why,
        [
            "pump-v4-fr/lldp",
            "pump-v4-fr/echo-reply",
            "pump-v4-fr/rest"
        ]
    );
    assert!(out[0].1.contains("Ethernet"), "{out:?}");
    assert!(out[1].1.contains("ICMP type"), "{out:?}");
    assert!(
        out[2].1.contains("trailing drop changes nothing"),
        "{out:?}"
    );
}

const MONITOR_BINDING: &str = r#"
class = "patient-monitor"
[abstractions]
local-networks = ["10.20.0.0/16"]
same-manufacturer = ["class:central-station"]
[manufacturers]
"monitors.example" = ["role:vendor-support"]
[models]
"https://mud.monitors.example/gateway" = ["role:hl7-engine"]
"#;

#[test]
fn a_monitor_with_abstractions_port_operators_and_a_peer_initiated_flow() {
    let b = binding(MONITOR_BINDING);
    assert_eq!(
        rules(MONITOR, &b),
        [
            rule(
                Initiator::Device,
                6,
                &["class:central-station"],
                Some(&[(7000, 7010)])
            ),
            rule(
                Initiator::Device,
                6,
                &["role:hl7-engine"],
                Some(&[(2575, 2575)])
            ),
            rule(
                Initiator::Device,
                17,
                &["role:vendor-support"],
                Some(&[(49152, 65535)])
            ),
            rule(
                Initiator::Peer,
                6,
                &["10.20.0.0/16"],
                Some(&[(0, 22), (24, 65535)])
            ),
        ]
    );
    let out = left_out(MONITOR, &b);
    let from: Vec<&str> = out.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        from,
        ["mon-fr/pinned-source", "mon-to/unbound", "mon-to/augmented"]
    );
    assert!(
        out[0].1.contains("both a source and a destination port"),
        "{out:?}"
    );
    assert!(out[2].1.contains("\"example-vendor:location\""), "{out:?}");
}

#[test]
fn an_abstraction_the_binding_lacks_is_left_out() {
    let out = left_out(MONITOR, &binding("class = \"patient-monitor\""));
    assert!(
        out.iter()
            .any(|(f, why)| f == "mon-fr/to-central" && why.contains("same-manufacturer")),
        "{out:?}"
    );
}

// === Hostile files: refused with where ===

#[test]
fn not_json_is_refused_with_its_line() {
    let err = refused(b"{\n  \"ietf-mud:mud\": {,\n}");
    assert!(err.contains("not JSON") && err.contains("line 2"), "{err}");
}

#[test]
fn a_wrong_type_is_refused_at_its_pointer() {
    let text = String::from_utf8_lossy(PUMP).replace("\"port\": 51243", "\"port\": \"51243\"");
    let err = refused(text.as_bytes());
    assert!(
        err.contains("at /ietf-access-control-list:acls/acl/0/aces/ace/0/matches/tcp/destination-port/port: expected a number"),
        "{err}"
    );
    let text = String::from_utf8_lossy(PUMP).replace("\"aces\": {", "\"aces\": [], \"x\": {");
    let err = refused(text.as_bytes());
    assert!(
        err.contains("/aces: expected an object, found an array"),
        "{err}"
    );
}

#[test]
fn huge_arrays_are_refused_before_they_are_walked() {
    let ace = r#"{"name":"a","matches":{},"actions":{"forwarding":"accept"}}"#;
    let many = vec![ace; MAX_ACES + 1].join(",");
    let text = format!(
        r#"{{"ietf-mud:mud":{{"mud-version":1,"mud-url":"u","from-device-policy":{{"access-lists":{{"access-list":[{{"name":"a"}}]}}}}}},
"ietf-access-control-list:acls":{{"acl":[{{"name":"a","aces":{{"ace":[{many}]}}}}]}}}}"#
    );
    let err = refused(text.as_bytes());
    assert!(err.contains("1025 entries; at most 1024 are read"), "{err}");
}

#[test]
fn a_file_past_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("big.json");
    std::fs::write(&path, vec![b' '; (MUD_MAX_BYTES + 1) as usize]).expect("w");
    let err = import::read(&path, &binding("class = \"x\""))
        .expect_err("big")
        .to_string();
    assert!(err.contains("larger than the 1 MiB such a file"), "{err}");
}

#[test]
fn a_drop_before_an_accept_is_refused_not_widened() {
    let text = String::from_utf8_lossy(PUMP).replacen(
        "\"name\": \"server-sync\",",
        "\"name\": \"no-telnet\", \"matches\": {\"tcp\": {\"destination-port\": {\"port\": 23}}}, \"actions\": {\"forwarding\": \"drop\"}}, {\"name\": \"server-sync\",",
        1,
    );
    let err = refused(text.as_bytes());
    assert!(
        err.contains("accepts after pump-v4-fr/no-telnet drops"),
        "{err}"
    );
}

#[test]
fn a_policy_naming_a_missing_acl_or_another_version_is_refused() {
    let text = String::from_utf8_lossy(PUMP)
        .replace("{ \"name\": \"pump-v4-to\" }", "{ \"name\": \"nope\" }");
    assert!(refused(text.as_bytes()).contains("names ACL \"nope\", which the file does not have"));
    let text = String::from_utf8_lossy(PUMP).replace("\"mud-version\": 1", "\"mud-version\": 2");
    assert!(refused(text.as_bytes()).contains("only MUD version 1"));
    assert!(refused(b"{\"ietf-access-control-list:acls\": {}}").contains("not a MUD file"));
}

#[test]
fn binding_mistakes_are_refused() {
    for (text, want) in [
        ("class = \"a b\"", "a class name"),
        ("klass = \"x\"", "unknown field `klass`"),
        (
            "class = \"x\"\n[abstractions]\nmy_controller = []",
            "unknown field `my_controller`",
        ),
    ] {
        let err = Binding::parse(text, "b.toml").expect_err(want).to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
}

// === Into the example hospital, and back out ===

fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(dir.path().join("policies"))
        .status()
        .expect("cp")
        .success();
    assert!(ok);
    dir
}

const EXAMPLE_PUMP_BINDING: &str = r#"
class = "infusion-pump"
mud_url = "https://mud.hospital.example/infusion-pump.json"
essential = true
[abstractions]
my-controller = ["role:pump-server"]
[controllers]
"urn:ietf:params:mud:dns" = ["role:dns"]
"urn:ietf:params:mud:ntp" = ["role:ntp"]
"#;

#[test]
fn an_import_adds_a_workflow_to_an_existing_class_and_the_policy_loads() {
    let tmp = example_copy();
    let dir = tmp.path().join("policies");
    let mud = tmp.path().join("pump.json");
    std::fs::write(&mud, PUMP).expect("w");
    let b = binding(EXAMPLE_PUMP_BINDING);
    let plan = import::plan(&dir, &mud, &b).expect("plan");
    let text = plan.to_string();
    assert!(
        text.contains("+ device -> role:pump-server tcp/51243"),
        "{text}"
    );
    assert!(text.contains("left out pump-v4-fr/lldp"), "{text}");
    assert!(plan.class_edit.is_some(), "{text}");
    import::write(&plan).expect("write");
    let policy = lazaret_policy::load_dir(&dir).expect("loads");
    assert!(policy.classes["infusion-pump"]
        .workflows
        .contains(&"mud-infusion-pump".to_string()));
    let classes = std::fs::read_to_string(dir.join("classes.toml")).expect("classes");
    assert!(
        classes.contains("# Pumps are life-sustaining"),
        "comments kept"
    );
    // Again: the same files.
    let again = import::plan(&dir, &mud, &b).expect("again");
    assert!(again.class_edit.is_none());
    assert_eq!(
        again.file.1,
        std::fs::read_to_string(&again.file.0).expect("read")
    );
}

#[test]
fn a_mud_peer_the_policy_lacks_fails_the_import_as_check_would() {
    let tmp = example_copy();
    let dir = tmp.path().join("policies");
    let mud = tmp.path().join("pump.json");
    std::fs::write(&mud, PUMP).expect("w");
    let b = binding(&EXAMPLE_PUMP_BINDING.replace("role:pump-server", "role:pump-srv"));
    let err = import::plan(&dir, &mud, &b)
        .expect_err("unknown role")
        .to_string();
    assert!(
        err.contains("pump-srv") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!dir.join("mud").exists());
}

/// Export → import with the same binding: the class's devices keep exactly their flows.
#[test]
fn export_then_import_gives_the_class_the_same_flows() {
    let tmp = example_copy();
    let dir = tmp.path().join("policies");
    let policy = lazaret_policy::load_dir(&dir).expect("loads");
    let b = binding(EXAMPLE_PUMP_BINDING);
    let out = export::export(&policy, &b, "infusion-pump", "2026-12-05T00:00:00Z").expect("export");
    let doc: serde_json::Value = serde_json::from_str(&out.json).expect("JSON");
    assert_eq!(
        doc["ietf-mud:mud"]["mud-url"],
        "https://mud.hospital.example/infusion-pump.json"
    );
    assert_eq!(doc["ietf-mud:mud"]["model-name"], "Plum 360");
    let mud = tmp.path().join("exported.json");
    std::fs::write(&mud, &out.json).expect("w");

    // The class's workflows replaced by the imported one.
    let classes = dir.join("classes.toml");
    let text = std::fs::read_to_string(&classes).expect("read");
    std::fs::write(
        &classes,
        text.replace("workflows = [\"pump-server-sync\"]", "workflows = []"),
    )
    .expect("w");
    let plan = import::plan(&dir, &mud, &b).expect("import");
    assert!(plan.imported.left_out.is_empty(), "{plan}");
    import::write(&plan).expect("write");

    let after = lazaret_policy::load_dir(&dir).expect("after loads");
    let original = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let original = lazaret_policy::load_dir(&original).expect("original");
    let compile = |p| lazaret_policy::compile(p).expect("compiles");
    let (oc, nc) = (compile(&original), compile(&after));
    let text = lazaret_policy::plan::plan(&original, &oc, &after, &nc).render();
    // The pumps' flows are the same; what changed is the name of the workflow granting them.
    assert!(
        text.ends_with("3 devices changed: 0 flows newly allowed, 0 newly denied.\n"),
        "{text}"
    );
    let other: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.starts_with("~ pump-")
                && !l.contains("\"pump-server-sync\" -> \"mud-infusion-pump\"")
        })
        .collect();
    assert_eq!(
        other,
        ["3 devices changed: 0 flows newly allowed, 0 newly denied."],
        "{text}"
    );
}

/// A class the repository lacks is defined by the generated file, and a second import
/// writes it there again.
#[test]
fn a_new_class_lives_in_the_generated_file_across_imports() {
    let tmp = example_copy();
    let dir = tmp.path().join("policies");
    let mud = tmp.path().join("bulb.json");
    std::fs::write(&mud, RFC).expect("w");
    let b =
        binding("class = \"lightbulb\"\n[names]\n\"test.example.com\" = [\"fd00:10::53/128\"]\n");
    for round in 0..2 {
        let plan = import::plan(&dir, &mud, &b).expect("plan");
        assert!(plan.class_edit.is_none(), "round {round}");
        assert!(
            plan.file.1.contains("[classes.lightbulb]"),
            "round {round}: {}",
            plan.file.1
        );
        import::write(&plan).expect("write");
        let policy = lazaret_policy::load_dir(&dir).expect("loads");
        assert_eq!(policy.classes["lightbulb"].workflows, ["mud-lightbulb"]);
    }
}
