//! One test per validation error and warning, matching on the [`Problem`] variant.

use super::*;
use crate::diag::NameKind;

fn errs(extra: &str) -> Vec<Problem> {
    match with(extra) {
        Ok(p) => problems(compile(&p).map(|c| (p, c))),
        Err(e) => e.errors().map(|d| d.problem.clone()).collect(),
    }
}

fn one(extra: &str) -> Problem {
    let e = errs(extra);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap()
}

fn diag(extra: &str) -> Diagnostic {
    let e = with(extra).unwrap_err();
    let d = e.errors().next().unwrap().clone();
    d
}

fn warns(extra: &str) -> Vec<Problem> {
    let p = with(extra).unwrap_or_else(|e| panic!("{}", e.render()));
    let c = compile(&p).unwrap_or_else(|e| panic!("{}", e.render()));
    warnings(&c)
}

#[test]
fn the_base_policy_is_valid_and_quiet() {
    assert_eq!(warns(""), vec![]);
}

#[test]
fn unknown_keys_suggest_the_nearest_known_key() {
    let d = diag("[roles.pacs]\naddreses = [\"10.10.4.10\"]\n");
    assert!(matches!(&d.problem, Problem::UnknownKey { key, .. } if key == "addreses"));
    assert_eq!(d.hint.as_deref(), Some("did you mean \"addresses\"?"));
}

#[test]
fn unknown_keys_everywhere_are_all_reported() {
    let e = errs("[[devices]]\nid = \"x\"\nipv4 = \"10.20.0.99\"\nclas = \"pump\"\n[workflows.w]\nrules = [{ peer = \"any\", proto = \"tcp\", port = [1] }]\n");
    let keys: Vec<_> = e
        .iter()
        .filter_map(|p| match p {
            Problem::UnknownKey { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, vec!["clas", "port"]);
}

#[test]
fn wrong_types_are_errors() {
    assert!(matches!(
        one("[roles.x]\naddresses = 5\n"),
        Problem::WrongType { .. }
    ));
}

#[test]
fn syntax_errors_are_reported_with_their_position() {
    let e = parse(&[("a.toml", "[site\nname = 1")]).unwrap_err();
    let d = e.errors().next().unwrap();
    assert!(matches!(d.problem, Problem::Syntax { .. }));
    assert_eq!(e.sources.locate(d.span.unwrap()).line, 1);
}

#[test]
fn dangling_names_suggest_the_nearest_definition() {
    let d = diag("[workflows.w]\nrules = [{ device = \"class:pump\", peer = \"role:pump-servr\", proto = \"tcp\" }]\n");
    assert_eq!(
        d.problem,
        Problem::UnknownName {
            kind: NameKind::Role,
            name: "pump-servr".into()
        }
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean \"pump-server\"?"));
    assert!(matches!(
        one("[classes.c]\nworkflows = [\"synk\"]\n"),
        Problem::UnknownName {
            kind: NameKind::Workflow,
            ..
        }
    ));
    assert!(matches!(
        one("[[devices]]\nid = \"d\"\nipv4 = \"10.20.0.5\"\nclass = \"pmp\"\n"),
        Problem::UnknownName {
            kind: NameKind::Class,
            ..
        }
    ));
}

#[test]
fn names_defined_twice_cite_both_places() {
    let e = parse(&[
        ("base.toml", BASE),
        (
            "b.toml",
            "[roles.pump-server]\naddresses = [\"10.10.3.11\"]\n",
        ),
    ])
    .unwrap_err();
    let d = e.errors().next().unwrap();
    assert!(
        matches!(&d.problem, Problem::DuplicateName { kind: NameKind::Role, name } if name == "pump-server")
    );
    assert_eq!(d.notes.len(), 1);
    assert_eq!(e.sources.name(d.notes[0].span.file), "base.toml");
    assert_eq!(e.sources.name(d.span.unwrap().file), "b.toml");
}

#[test]
fn site_is_required_and_unique() {
    assert!(matches!(
        one("[site]\nname = \"again\"\n"),
        Problem::DuplicateSite
    ));
    let e = parse(&[("a.toml", "[roles.x]\naddresses = [\"10.0.0.1\"]\n")]).unwrap_err();
    assert!(e.problems().contains(&&Problem::NoSite));
}

#[test]
fn addresses_must_parse_and_prefixes_be_canonical() {
    assert!(matches!(
        one("[roles.x]\naddresses = [\"10.0.0.300\"]\n"),
        Problem::BadAddress { .. }
    ));
    let d = diag("[roles.x]\naddresses = [\"10.10.2.5/24\"]\n");
    assert!(matches!(&d.problem, Problem::HostBits { network, .. } if network == "10.10.2.0/24"));
    assert_eq!(d.hint.as_deref(), Some("did you mean \"10.10.2.0/24\"?"));
}

fn rule(r: &str) -> String {
    format!("[workflows.w]\nrules = [{{ device = \"class:pump\", {r} }}]\n")
}

#[test]
fn ports_are_checked() {
    assert_eq!(
        one(&rule("peer = \"any\", proto = \"tcp\", ports = [70000]")),
        Problem::PortOutOfRange { value: 70000 }
    );
    assert_eq!(
        one(&rule(
            "peer = \"any\", proto = \"tcp\", ports = [\"200-100\"]"
        )),
        Problem::ReversedPortRange { lo: 200, hi: 100 }
    );
    assert!(matches!(
        one(&rule("peer = \"any\", proto = \"tcp\", ports = [\"hl8\"]")),
        Problem::UnknownName {
            kind: NameKind::Port,
            ..
        }
    ));
    assert!(matches!(
        one(&rule("peer = \"any\", proto = \"icmp\", ports = [1]")),
        Problem::PortsWithoutPortProtocol { .. }
    ));
    assert!(matches!(
        one(&rule("peer = \"any\", proto = \"tcp\", ports = [\"1-x\"]")),
        Problem::BadPort { .. }
    ));
    // Named site ports and ranges are fine.
    assert_eq!(
        errs(&rule(
            "peer = \"any\", proto = \"tcp\", ports = [\"hl7\", \"100-200\"]"
        )),
        vec![]
    );
}

#[test]
fn protocols_are_checked() {
    assert!(matches!(
        one(&rule("peer = \"any\", proto = \"tpc\"")),
        Problem::BadProto { .. }
    ));
    assert!(matches!(
        one(&rule("peer = \"any\", proto = 300")),
        Problem::BadProto { .. }
    ));
    assert!(matches!(
        one(&rule("peer = \"any\"")),
        Problem::MissingKey { key: "proto", .. }
    ));
}

#[test]
fn selectors_are_checked() {
    let d = diag(&rule("peer = \"rol:pump-server\", proto = \"tcp\""));
    assert!(matches!(d.problem, Problem::BadSelector { .. }));
    assert_eq!(
        d.hint.as_deref(),
        Some("did you mean \"role:pump-server\"?")
    );
    assert!(matches!(one("[workflows.w]\nrules = [{ device = \"role:pump-server\", peer = \"any\", proto = \"tcp\" }]\n"), Problem::BadEnd { .. }));
}

#[test]
fn quarantine_profile_cannot_name_managed_devices() {
    let site = BASE.replace(
        "[site.ports]",
        "[site.quarantine]\nallow = [{ peer = \"class:pump\", proto = \"tcp\" }]\n[site.ports]",
    );
    let e = parse(&[("base.toml", &site), ("pump.toml", PUMP)]).unwrap_err();
    assert!(matches!(
        e.problems()[..],
        [Problem::ManagedPeerInQuarantine { .. }]
    ));
}

fn device(body: &str) -> String {
    format!("[[devices]]\nid = \"d\"\nclass = \"pump\"\n{body}\n")
}

#[test]
fn device_identity_is_checked() {
    let d = diag(&device("mac = \"00:1a:2b:3c:4d\""));
    assert!(matches!(d.problem, Problem::BadMac { .. }));
    assert!(matches!(
        one(&device("ipv4 = \"fd00:20::5\"")),
        Problem::WrongFamily { .. }
    ));
    assert!(matches!(
        one(&device("ipv4 = \"10.20.0.0/24\"")),
        Problem::BadAddress { .. }
    ));
    for (key, addr) in [
        ("ipv4", "0.0.0.0"),
        ("ipv4", "255.255.255.255"),
        ("ipv4", "224.0.0.5"),
        ("ipv4", "127.0.0.1"),
        ("ipv6", "::"),
        ("ipv6", "ff02::1"),
        ("ipv6", "::1"),
        ("ipv6", "::ffff:10.20.0.5"),
    ] {
        let value = if key == "ipv4" {
            format!("\"{addr}\"")
        } else {
            format!("[\"{addr}\"]")
        };
        let d = diag(&device(&format!(
            "mac = \"02:00:00:00:00:01\"\n{key} = {value}"
        )));
        assert!(
            matches!(&d.problem, Problem::NotAHostAddress { addr: a, .. } if a == addr),
            "{addr}: {:?}",
            d.problem
        );
        assert!(d.span.is_some(), "{addr}: no position");
    }
    assert!(matches!(one(&device("")), Problem::NoIdentity { .. }));
    assert!(matches!(
        one(&device("ipv4 = \"10.20.0.5\"\nvlan = 5000")),
        Problem::BadVlan { value: 5000 }
    ));
    assert!(matches!(
        one(&device("ipv4 = \"10.20.0.5\"\ninterface = \"up0\"")),
        Problem::NotADeviceInterface { .. }
    ));
    assert!(matches!(
        one(&device("ipv4 = \"10.30.0.5\"\ninterface = \"dev0\"")),
        Problem::AddressOutsideInterface { .. }
    ));
    assert!(matches!(
        one(&device("ipv4 = \"10.20.0.5\"\ninterface = \"dev1\"")),
        Problem::UnknownName {
            kind: NameKind::Interface,
            ..
        }
    ));
}

#[test]
fn device_attributes_are_checked() {
    assert!(matches!(
        one(&device(
            "ipv4 = \"10.20.0.5\"\nlast_patched = \"2024-13-01\""
        )),
        Problem::BadDate { .. }
    ));
    assert!(matches!(
        one(&device("ipv4 = \"10.20.0.5\"\nmode = \"enforcing\"")),
        Problem::BadValue { .. }
    ));
    assert!(matches!(
        one(&device(
            "ipv4 = \"10.20.0.5\"\npatient_connection = \"yes\""
        )),
        Problem::BadValue { .. }
    ));
    assert!(matches!(
        one(&device(
            "ipv4 = \"10.20.0.5\"\nquarantine = { within = \"5 minutes\" }"
        )),
        Problem::BadDuration { .. }
    ));
    assert!(matches!(
        one(&device(
            "ipv4 = \"10.20.0.5\"\nquarantine = { action = \"shutdown\" }"
        )),
        Problem::BadValue { .. }
    ));
    assert!(matches!(
        one(&device("ipv4 = \"10.20.0.5\"\nid = \"x\"")),
        Problem::Syntax { .. }
    ));
    assert!(matches!(
        one("[[devices]]\nipv4 = \"10.20.0.5\"\n"),
        Problem::MissingKey { key: "id", .. }
    ));
    assert!(matches!(
        one("[[devices]]\nid = \"bad id\"\nipv4 = \"10.20.0.5\"\n"),
        Problem::InvalidName { .. }
    ));
}

#[test]
fn conflicts_between_devices_cite_both() {
    let e = with("[[devices]]\nid = \"pump-2\"\nclass = \"pump\"\nmac = \"00:1a:2b:00:00:01\"\nipv4 = \"10.20.0.11\"\n[[devices]]\nid = \"pump-1\"\nipv4 = \"10.20.0.99\"\n").unwrap_err();
    let p = e.problems();
    assert!(p.iter().any(|p| matches!(p, Problem::DuplicateMac { first, second, .. } if first == "pump-1" && second == "pump-2")));
    assert!(p
        .iter()
        .any(|p| matches!(p, Problem::DuplicateAddress { addr, .. } if addr == "10.20.0.11")));
    assert!(p.iter().any(|p| matches!(
        p,
        Problem::DuplicateName {
            kind: NameKind::Device,
            ..
        }
    )));
    assert!(e.errors().all(|d| !d.notes.is_empty()));
}

#[test]
fn a_rule_must_reach_the_families_its_devices_speak() {
    // A device with only IPv6 and a rule with only IPv4 peers.
    let e = errs("[[devices]]\nid = \"v6\"\nclass = \"pump\"\nipv6 = \"fd00:20::5\"\n");
    assert!(
        matches!(
            &e[..],
            [Problem::FamilyMismatch {
                rule_family: "IPv4",
                device_family: "IPv6",
                ..
            }]
        ),
        "{e:?}"
    );
    // ICMPv6 to an IPv4-only role.
    let e = errs(&rule("peer = \"role:pump-server\", proto = \"icmpv6\""));
    assert!(
        e.contains(&Problem::ProtoFamily {
            proto: "icmpv6",
            family: "IPv6"
        }),
        "{e:?}"
    );
}

#[test]
fn capacities_are_enforced_before_anything_is_loaded() {
    let mut devices = String::new();
    for i in 0..=lazaret_abi::MAX_DEVICES {
        devices.push_str(&format!(
            "[[devices]]\nid = \"d{i}\"\nclass = \"pump\"\nmac = \"02:00:00:00:{:02x}:{:02x}\"\n",
            i >> 8,
            i & 0xff
        ));
    }
    let e = problems(build(&[("base.toml", BASE), ("d.toml", &devices)]));
    assert!(
        e.iter().any(|p| matches!(
            p,
            Problem::Capacity {
                what: "devices",
                ..
            }
        )),
        "{e:?}"
    );
}

#[test]
fn unused_definitions_are_warnings() {
    let w = warns("[roles.pacs]\naddresses = [\"10.10.4.10\"]\n[classes.ct]\n[workflows.idle]\nrules = [{ peer = \"any\", proto = \"tcp\" }]\n");
    assert!(w.contains(&Problem::UnusedRole {
        name: "pacs".into()
    }));
    assert!(w.contains(&Problem::UnusedClass { name: "ct".into() }));
    assert!(w.contains(&Problem::UnusedWorkflow {
        name: "idle".into()
    }));
}

/// What devices behind an interface may own by first use is keyed by a 16-bit fold of its
/// name: two devices-side interfaces whose names fold alike share it, and are told.
#[test]
fn interfaces_sharing_a_claim_scope_are_a_warning() {
    let (a, b) = ("ward65", "ward181");
    assert_eq!(
        lazaret_abi::claim_scope(a.as_bytes()),
        lazaret_abi::claim_scope(b.as_bytes())
    );
    let site = |names: &[&str]| {
        let mut s =
            "[site]\nname = \"t\"\n[site.essentials]\ndhcp = false\ndns = false\nntp = false\n"
                .to_string();
        for n in names {
            s.push_str(&format!("[site.interfaces.{n}]\nside = \"devices\"\n"));
        }
        let (_, c) = build(&[("site.toml", &s)]).unwrap_or_else(|e| panic!("{}", e.render()));
        warnings(&c)
    };
    assert_eq!(
        site(&[a, b]),
        // In name order (the interfaces' table is sorted).
        vec![Problem::SharedClaimScope {
            first: b.into(),
            second: a.into()
        }]
    );
    assert_eq!(site(&[a, "ward66"]), vec![]);
}

#[test]
fn a_device_without_class_or_workflow_is_a_warning() {
    let w = warns("[[devices]]\nid = \"lonely\"\nipv4 = \"10.20.0.77\"\n");
    assert_eq!(
        w,
        vec![Problem::DeviceWithoutPolicy {
            device: "lonely".into()
        }]
    );
}

#[test]
fn shadowed_rules_are_warnings() {
    let p = parse(&[
        ("base.toml", &BASE.replace("rules = [{ peer = \"role:pump-server\", proto = \"tcp\", ports = [443] }]", "rules = [{ peer = \"10.10.0.0/16\", proto = \"tcp\" }, { peer = \"role:pump-server\", proto = \"tcp\", ports = [443] }]")),
        ("pump.toml", PUMP),
    ])
    .unwrap();
    let c = compile(&p).unwrap();
    assert_eq!(
        warnings(&c),
        vec![Problem::ShadowedRule {
            workflow: "sync".into(),
            index: 2,
            by: 1
        }]
    );
}

#[test]
fn life_critical_devices_that_quarantine_would_cut_off_are_warnings() {
    let w = warns("[[devices]]\nid = \"vent\"\nclass = \"pump\"\nipv4 = \"10.20.0.50\"\nlife_critical = true\nquarantine = { action = \"isolate\" }\n[[devices]]\nid = \"vent2\"\nclass = \"pump\"\nipv4 = \"10.20.0.51\"\nlife_critical = true\n");
    assert_eq!(
        w,
        vec![Problem::LifeCriticalQuarantine {
            device: "vent".into(),
            action: "isolate".into()
        }]
    );
}

#[test]
fn peers_without_addresses_and_rules_without_devices_are_warnings() {
    let w = warns("[[devices]]\nid = \"cab\"\nclass = \"pump\"\nmac = \"00:50:c2:00:00:01\"\n[classes.empty]\n[workflows.w]\nrules = [{ device = \"class:empty\", peer = \"device:cab\", proto = \"tcp\" }]\n");
    assert!(
        w.contains(&Problem::PeerWithoutAddress {
            device: "cab".into()
        }),
        "{w:?}"
    );
    assert!(
        w.contains(&Problem::RuleMatchesNoDevice {
            workflow: "w".into(),
            index: 1
        }),
        "{w:?}"
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let e = errs("[roles.a]\naddresses = [\"10.1.1.1/8\"]\n[roles.b]\naddresses = [\"x\"]\n[classes.c]\nworkflows = [\"nope\"]\nmode = \"strict\"\n");
    assert_eq!(e.len(), 4, "{e:?}");
}

#[test]
fn no_input_panics() {
    for text in [
        "",
        "\0\u{1}\u{2}",
        "[[site]]",
        "site = 1",
        "[site]\nname = 1\n[site.interfaces]\nx = 1",
        "[workflows.w]\nrules = 5",
        "[[devices]]\n[[devices]]\nid = []",
        "roles = []",
        "[site.essentials]\ndhcp_servers = [1]",
    ] {
        let r = parse(&[("a.toml", text)]);
        assert!(r.is_err(), "{text:?} should not be a valid policy");
    }
}

/// A UDP rule every port of which the datapath refuses as a rogue DHCP server's, before any
/// policy, is told: it would pass nothing. Rules that allow other ports too are not.
#[test]
fn a_rule_only_a_rogue_dhcp_server_would_use_is_a_warning() {
    let dhcp = |w: &[Problem]| {
        w.iter()
            .filter(|p| matches!(p, Problem::DhcpPortRule { workflow, index: 1, .. } if workflow == "w"))
            .count()
    };
    for r in [
        "peer = \"any\", proto = \"udp\", ports = [68]",
        "peer = \"any\", proto = \"udp\", ports = [68, 546]",
        "peer = \"any\", proto = \"udp\", ports = [67], initiator = \"peer\"",
    ] {
        assert_eq!(dhcp(&warns(&rule(r))), 1, "{r}");
    }
    for r in [
        "peer = \"any\", proto = \"udp\", ports = [67]",
        "peer = \"any\", proto = \"udp\", ports = [68, 2575]",
        "peer = \"any\", proto = \"udp\", ports = [\"60-70\"]",
        "peer = \"any\", proto = \"tcp\", ports = [68]",
        "peer = \"any\", proto = \"udp\", ports = [68], initiator = \"peer\"",
    ] {
        assert_eq!(dhcp(&warns(&rule(r))), 0, "{r}");
    }
}
