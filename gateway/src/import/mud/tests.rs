//! The MUD catalog: published shapes (RFC 8520's own example, a pump with controllers and
//! abstractions, a monitor with port operators and peer-initiated flows), what cannot be
//! enforced exactly (listed, never widened), hostile files (refused with a JSON pointer),
//! and the round trip through `export` on the example hospital.

use std::path::Path;

use lazaret_policy::model::{Family, Initiator};

use super::import::{parse, MudRule};
use super::*;

const RFC: &[u8] = include_bytes!("testdata/rfc8520-lightbulb.json");
const PUMP: &[u8] = include_bytes!("testdata/infusion-pump.json");
const MONITOR: &[u8] = include_bytes!("testdata/patient-monitor.json");

fn binding(text: &str) -> Binding {
    Binding::parse(text, "binding.toml").expect("binding")
}

/// An IPv4 rule (`rule6` for IPv6).
fn rule(initiator: Initiator, proto: u8, peers: &[&str], ports: Option<&[(u16, u16)]>) -> MudRule {
    MudRule {
        family: Some(Family::V4),
        initiator,
        proto: Some(proto),
        peers: peers.iter().map(ToString::to_string).collect(),
        ports: ports.map(<[(u16, u16)]>::to_vec),
    }
}

fn rule6(initiator: Initiator, proto: u8, peers: &[&str], ports: Option<&[(u16, u16)]>) -> MudRule {
    MudRule {
        family: Some(Family::V6),
        ..rule(initiator, proto, peers, ports)
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
        [rule6(
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
        r#"{{"ietf-mud:mud":{{"mud-version":1,"mud-url":"https://u.example/","from-device-policy":{{"access-lists":{{"access-list":[{{"name":"a"}}]}}}}}},
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

// === Never wider than the MUD file (found in review) ===

/// A minimal MUD file with these ACLs: (side, ACEs as JSON) each.
fn mud(from: &[&str], to: &[&str]) -> Vec<u8> {
    let acl = |name: &str, aces: &[&str]| {
        format!(
            r#"{{"name":"{name}","type":"ipv4-acl-type","aces":{{"ace":[{}]}}}}"#,
            aces.join(",")
        )
    };
    format!(
        r#"{{"ietf-mud:mud":{{"mud-version":1,"mud-url":"https://m.example/x",
"from-device-policy":{{"access-lists":{{"access-list":[{{"name":"fr"}}]}}}},
"to-device-policy":{{"access-lists":{{"access-list":[{{"name":"to"}}]}}}}}},
"ietf-access-control-list:acls":{{"acl":[{},{}]}}}}"#,
        acl("fr", from),
        acl("to", to)
    )
    .into_bytes()
}

fn accept(matches: &str) -> String {
    format!(r#"{{"name":"a","matches":{matches},"actions":{{"forwarding":"accept"}}}}"#)
}

fn drop(matches: &str) -> String {
    format!(r#"{{"name":"d","matches":{matches},"actions":{{"forwarding":"drop"}}}}"#)
}

const DNS: &str = "class = \"x\"\n[controllers]\n\"urn:ietf:params:mud:dns\" = [\"role:dns\"]\n";

#[test]
fn a_half_whose_opener_is_the_other_side_opens_nothing() {
    let b = binding(DNS);
    // from-device, opened by the peer: only replies, and no to-device ACE opens the flow.
    let inbound = accept(r#"{"tcp":{"ietf-mud:direction-initiated":"to-device"}}"#);
    assert!(rules(&mud(&[&inbound], &[]), &b).is_empty());
    let out = left_out(&mud(&[&inbound], &[]), &b);
    assert!(out[0].1.contains("does not open"), "{out:?}");
    // to-device replies from any udp/53 while the device may only ask the resolvers.
    let dns = accept(
        r#"{"ietf-mud:mud":{"controller":"urn:ietf:params:mud:dns"},"udp":{"destination-port":{"port":53}}}"#,
    );
    let replies = accept(r#"{"udp":{"source-port":{"port":53}}}"#);
    assert_eq!(
        rules(&mud(&[&dns], &[&replies]), &b),
        [rule(
            Initiator::Device,
            17,
            &["role:dns"],
            Some(&[(53, 53)])
        )]
    );
}

#[test]
fn a_drop_in_an_earlier_acl_of_the_side_refuses_a_later_accept() {
    let text = String::from_utf8(mud(&[], &[])).expect("utf8").replace(
        r#""access-list":[{"name":"fr"}]"#,
        r#""access-list":[{"name":"fr"},{"name":"to"}]"#,
    );
    let text = text.replace(
        r#"{"name":"fr","type":"ipv4-acl-type","aces":{"ace":[]}}"#,
        &format!(
            r#"{{"name":"fr","type":"ipv4-acl-type","aces":{{"ace":[{}]}}}}"#,
            drop(r#"{"tcp":{"destination-port":{"port":23}}}"#)
        ),
    );
    let text = text.replace(
        r#"{"name":"to","type":"ipv4-acl-type","aces":{"ace":[]}}"#,
        &format!(
            r#"{{"name":"to","type":"ipv4-acl-type","aces":{{"ace":[{}]}}}}"#,
            accept("{}")
        ),
    );
    let err = parse(text.as_bytes(), "mud.json", &binding(DNS))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("accepts after fr/d drops"), "{err}");
}

#[test]
fn a_mud_url_that_is_not_https_is_refused_before_it_reaches_a_file() {
    let text = String::from_utf8(mud(&[], &[])).expect("utf8").replace(
        "https://m.example/x",
        "x\\n[[workflows.mud-x.rules]]\\npeer = [\\\"any\\\"]",
    );
    let err = parse(text.as_bytes(), "mud.json", &binding(DNS))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("mud-url: a MUD URL is an https: URL"), "{err}");
}

#[test]
fn an_ipv4_ace_allows_ipv4_only() {
    let any = accept(r#"{"ipv4":{"protocol":6},"tcp":{"destination-port":{"port":443}}}"#);
    assert_eq!(
        rules(&mud(&[&any], &[]), &binding(DNS)),
        [rule(
            Initiator::Device,
            6,
            &["0.0.0.0/0"],
            Some(&[(443, 443)])
        )]
    );
    // A name and a network in one ACE: their intersection, not expressible.
    let both = accept(
        r#"{"ipv4":{"ietf-acldns:dst-dnsname":"test.example.com","destination-ipv4-network":"0.0.0.0/0","protocol":6}}"#,
    );
    let b = binding("class = \"x\"\n[names]\n\"test.example.com\" = [\"role:a\"]\n");
    assert!(rules(&mud(&[&both], &[]), &b).is_empty());
    assert!(left_out(&mud(&[&both], &[]), &b)[0]
        .1
        .contains("intersection"));
}

/// The example's resolvers are dual-stack: an IPv4 ACE bound to them keeps their IPv4
/// address only.
#[test]
fn a_dual_stack_role_is_narrowed_to_the_aces_family() {
    let tmp = example_copy();
    let dir = tmp.path().join("policies");
    let mud = tmp.path().join("pump.json");
    std::fs::write(&mud, PUMP).expect("w");
    let plan = import::plan(&dir, &mud, &binding(EXAMPLE_PUMP_BINDING)).expect("plan");
    let peers: Vec<String> = plan
        .imported
        .rules
        .keys()
        .map(|r| r.peers.join(" "))
        .collect();
    assert!(peers.contains(&"10.10.0.53/32".to_string()), "{peers:?}");
    assert!(!peers.iter().any(|p| p.contains("fd00")), "{peers:?}");
}

#[test]
fn a_hand_written_file_in_the_way_is_not_overwritten_and_dotted_names_are_one_key() {
    let tmp = example_copy();
    let dir = tmp.path().join("policies");
    let mud = tmp.path().join("bulb.json");
    std::fs::write(&mud, RFC).expect("w");
    std::fs::create_dir_all(dir.join("mud")).expect("mkdir");
    std::fs::write(dir.join("mud/lightbulb.toml"), "# mine\n").expect("w");
    let b =
        binding("class = \"lightbulb\"\n[names]\n\"test.example.com\" = [\"fd00:10::53/128\"]\n");
    let err = import::plan(&dir, &mud, &b)
        .expect_err("in the way")
        .to_string();
    assert!(err.contains("not written by `lazaret import mud`"), "{err}");
    let b =
        binding("class = \"light.bulb\"\n[names]\n\"test.example.com\" = [\"fd00:10::53/128\"]\n");
    let plan = import::plan(&dir, &mud, &b).expect("dotted");
    assert!(
        plan.file.1.contains("[classes.\"light.bulb\"]"),
        "{}",
        plan.file.1
    );
}

// === Found in the second review ===

#[test]
fn binding_peers_are_read_the_policys_way_or_refused() {
    let b = binding("class = \"x\"\n[names]\n\"ntp.example\" = [\" 192.0.2.10\", \"role:ntp \"]\n");
    assert_eq!(b.names["ntp.example"], ["192.0.2.10/32", "role:ntp"]);
    let err = Binding::parse(
        "class = \"x\"\n[names]\n\"a\" = [\"roles:ntp\"]\n",
        "b.toml",
    )
    .expect_err("not a peer")
    .to_string();
    assert!(err.contains("\"roles:ntp\" is not a peer"), "{err}");
}

#[test]
fn an_unknown_acl_type_is_refused_not_read_as_either_family() {
    let text = String::from_utf8(mud(&[&accept("{}")], &[]))
        .expect("utf8")
        .replacen("\"ipv4-acl-type\"", "\"ipv4-acl\"", 1);
    let err = parse(text.as_bytes(), "mud.json", &binding(DNS))
        .expect_err("type")
        .to_string();
    assert!(
        err.contains("\"ipv4-acl\" is not an RFC 8519 ACL type"),
        "{err}"
    );
}

#[test]
fn a_portless_to_device_ace_is_absorbed_only_by_an_all_ports_rule() {
    let b = binding(DNS);
    let dns = accept(
        r#"{"ietf-mud:mud":{"controller":"urn:ietf:params:mud:dns"},"udp":{"destination-port":{"port":53}}}"#,
    );
    let inbound = accept(r#"{"ietf-mud:mud":{"controller":"urn:ietf:params:mud:dns"},"udp":{}}"#);
    // The file lets the resolvers send the device UDP on any port: that is what it allows.
    assert_eq!(
        rules(&mud(&[&dns], &[&inbound]), &b),
        [
            rule(Initiator::Device, 17, &["role:dns"], Some(&[(53, 53)])),
            rule(Initiator::Peer, 17, &["role:dns"], None),
        ]
    );
}

/// A class peer whose devices are dual-stack, in ACEs of both families: one rule.
#[test]
fn a_rule_in_both_families_is_one_rule_for_either() {
    let tmp = example_copy();
    let dir = tmp.path().join("policies");
    let ace = accept(
        r#"{"ietf-mud:mud":{"same-manufacturer":[null]},"tcp":{"ietf-mud:direction-initiated":"from-device","destination-port":{"port":7000}}}"#,
    );
    let text = String::from_utf8(mud(&[&ace], &[]))
        .expect("utf8")
        .replacen(
            r#""access-list":[{"name":"fr"}]"#,
            r#""access-list":[{"name":"fr"},{"name":"fr6"}]"#,
            1,
        );
    let text = text.replacen(
        r#"{"acl":["#,
        &format!(r#"{{"acl":[{{"name":"fr6","type":"ipv6-acl-type","aces":{{"ace":[{ace}]}}}},"#),
        1,
    );
    let file = tmp.path().join("mon.json");
    std::fs::write(&file, text).expect("w");
    let b = binding("class = \"patient-monitor\"\n[abstractions]\nsame-manufacturer = [\"class:central-station\"]\n");
    let plan = import::plan(&dir, &file, &b).expect("plan");
    let got: Vec<&MudRule> = plan.imported.rules.keys().collect();
    assert_eq!(got.len(), 1, "{plan}");
    assert_eq!(got[0].family, None);
    assert_eq!(got[0].peers, ["class:central-station"]);
}
