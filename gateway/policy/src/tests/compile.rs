//! The compiler and the map contents: determinism, deduplication, ABI encoding, and the
//! lookup structure as the reference classifier reads it.

use super::*;
use crate::classify::TCP_SYN;
use lazaret_abi as abi;
use std::collections::BTreeMap;
use std::net::IpAddr;

fn ifx(c: &Compiled) -> BTreeMap<String, u32> {
    c.interfaces
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), 10 + i as u32))
        .collect()
}

fn example_files() -> Vec<SourceFile> {
    load::read_dir(&repo_root().join("policies")).unwrap()
}

#[test]
fn output_does_not_depend_on_file_order() {
    let files = example_files();
    let mut reversed = files.clone();
    reversed.reverse();
    let a = compile(&parse_sources(files).unwrap()).unwrap();
    let b = compile(&parse_sources(reversed).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let ix = ifx(&a);
    assert_eq!(
        a.map_contents(1, 7, &ix).unwrap(),
        b.map_contents(1, 7, &ix).unwrap()
    );
}

#[test]
fn identical_devices_share_one_policy() {
    let mut devices = String::new();
    for i in 0..300 {
        devices.push_str(&format!(
            "[[devices]]\nid = \"pump-{i:03}\"\nclass = \"pump\"\nipv4 = \"10.20.{}.{}\"\n",
            i / 200,
            10 + i % 200
        ));
    }
    let (_, c) = build(&[
        ("base.toml", &BASE.replace("10.20.0.0/24", "10.20.0.0/22")),
        ("d.toml", &devices),
    ])
    .unwrap();
    let policies: std::collections::BTreeSet<u32> = c.devices.iter().map(|d| d.policy).collect();
    assert_eq!(policies.len(), 1);
    // The quarantine policy, the pumps' policy and their restrict policy (essentials only).
    assert_eq!(c.policies.len(), 3);
}

#[test]
fn map_contents_encode_identity_as_the_abi_says() {
    let (_, c) = example();
    let ix = ifx(&c);
    let m = c.map_contents(1, 42, &ix).unwrap();
    assert_eq!(m.site.generation, 42);
    // The cabinet (below) is known by its MAC alone in both families: owners are looked up.
    assert_eq!(m.site.flags, abi::SITE_F_NEIGHBOR);
    let cab = c.device("cab-01").unwrap();
    let (_, dev) = m.devices.iter().find(|(k, _)| k.id == cab.hash).unwrap();
    assert_eq!(
        dev.flags,
        abi::DEV_F_HAS_MAC | abi::DEV_F_NO_IP4 | abi::DEV_F_NO_IP6
    );
    assert_eq!(dev.vlan, 20);
    assert_eq!(dev.ifindex, ix["icu0"]);
    assert_eq!(dev.id, abi::device_id_hash(b"cab-01"));
    let pump = c.device("pump-icu-01").unwrap();
    let (_, dev) = m.devices.iter().find(|(k, _)| k.id == pump.hash).unwrap();
    assert_eq!(
        dev.flags,
        abi::DEV_F_HAS_MAC | abi::DEV_F_LIFE_CRITICAL | abi::DEV_F_NO_IP6
    );
    assert!(m.dev_ip4.iter().all(|(k, _)| k.slot == 1));
    assert!(m
        .peer4
        .iter()
        .all(|(len, k, _)| k.slot == 1 && *len >= abi::PEER_KEY_FIXED_BITS));
    // Sorted by key.
    assert!(m
        .ports
        .windows(2)
        .all(|w| (w[0].1, w[0].0) <= (w[1].1, w[1].0)));
    let counts: usize = m.counts().iter().map(|(_, n)| n).sum();
    assert!(counts > 0);
}

#[test]
fn unbound_devices_match_any_vlan_and_interface() {
    let (_, c) = build(&[("base.toml", BASE), ("pump.toml", PUMP)]).unwrap();
    let m = c.map_contents(0, 1, &BTreeMap::new()).unwrap();
    let (_, d) = m.devices[0];
    assert_eq!((d.vlan, d.ifindex), (abi::VLAN_ANY, abi::IFINDEX_ANY));
}

#[test]
fn a_named_interface_needs_an_ifindex() {
    let (_, c) = example();
    let err = c.map_contents(0, 1, &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, MapError::UnknownInterface { .. }));
    assert_eq!(
        c.map_contents(2, 1, &ifx(&c)).unwrap_err(),
        MapError::BadSlot(2)
    );
}

fn tcp(src: &str, dst: &str, dport: u16) -> PacketDesc {
    PacketDesc {
        side: abi::SIDE_UPSTREAM,
        ifindex: 1,
        port: 1,
        claim_scope: abi::CLAIM_POLICY as u16,
        vlan: 0,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        kind: PacketKind::Ip(IpDesc {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: abi::PROTO_TCP,
            sport: 40000,
            dport,
            tcp_flags: TCP_SYN,
            icmp_type: 0,
            nd_target: None,
            hop_limit: 64,
            quoted: None,
        }),
        flow: FlowHint::None,
    }
}

#[test]
fn the_most_specific_port_entry_reports_the_winning_rule() {
    // Rule 1: tcp 100-200 (audit workflow); rule 2: tcp 150 (enforce): at 150 the
    // enforcing rule wins, elsewhere in the range the audit one.
    let extra = r#"
[workflows.a-trial]
mode = "audit"
rules = [{ device = "class:pump", peer = "10.10.0.0/16", proto = "tcp", ports = ["100-200"], initiator = "peer" }]
[workflows.b-real]
rules = [{ device = "class:pump", peer = "10.10.3.10", proto = "tcp", ports = [150], initiator = "peer" }]
"#;
    let (_, c) = build(&[("base.toml", BASE), ("pump.toml", PUMP), ("x.toml", extra)]).unwrap();
    let m = c.map_contents(0, 1, &BTreeMap::new()).unwrap();
    let st = DeviceStates::default();
    let at = |port| classify(&m, &st, &tcp("10.10.3.10", "10.20.0.11", port));
    let origin = |d: &Decision| c.rule(d.rule.unwrap()).unwrap().origin.to_string();
    assert_eq!(at(150).reason, lazaret_abi::Reason::AllowRule);
    assert_eq!(origin(&at(150)), "workflow `b-real`, rule 1");
    assert_eq!(at(151).reason, lazaret_abi::Reason::Audit);
    assert_eq!(origin(&at(151)), "workflow `a-trial`, rule 1");
    assert_eq!(at(201).reason, lazaret_abi::Reason::DenyNoRule);
    // Another source inside the /16 only has the audit rule.
    assert_eq!(
        classify(&m, &st, &tcp("10.10.7.7", "10.20.0.11", 150)).reason,
        lazaret_abi::Reason::Audit
    );
}

#[test]
fn rule_ids_are_dense_and_traceable() {
    let (_, c) = example();
    for (i, r) in c.rules.iter().enumerate() {
        assert_eq!(r.id as usize, i);
        assert!(r.location.is_some());
    }
    assert!(c.rules.len() < lazaret_abi::MAX_RULES as usize);
    let r = c.rules.iter().find(|r| matches!(&r.origin, Origin::Workflow { workflow, .. } if workflow == "pump-server-sync")).unwrap();
    let loc = r.location.as_ref().unwrap();
    assert!(loc.file.ends_with("workflows/infusion.toml"), "{loc}");
    let _ = IpAddr::from([0, 0, 0, 0]);
}

#[test]
fn flow_hints_follow_the_datapath() {
    let (_, c) = build(&[("base.toml", BASE), ("pump.toml", PUMP)]).unwrap();
    let m = c.map_contents(0, 1, &BTreeMap::new()).unwrap();
    let ix = MapIndex::new(&m);
    let st = DeviceStates::default();
    let mut syn = tcp("10.20.0.11", "10.10.3.10", 443);
    syn.side = abi::SIDE_DEVICES;
    syn.src_mac = [0x00, 0x1a, 0x2b, 0, 0, 1];
    assert_eq!(
        classify_indexed(&ix, &st, &syn).reason,
        lazaret_abi::Reason::AllowRule
    );
    // The server's SYN-ACK without a flow entry: not initiating, no flow.
    let mut reply = tcp("10.10.3.10", "10.20.0.11", 40000);
    if let PacketKind::Ip(ip) = &mut reply.kind {
        ip.sport = 443;
        ip.tcp_flags = 0x12;
    }
    assert_eq!(
        classify_indexed(&ix, &st, &reply).reason,
        lazaret_abi::Reason::DenyNoFlow
    );
    reply.flow = FlowHint::Current { rule: 3 };
    let d = classify_indexed(&ix, &st, &reply);
    assert_eq!(
        (d.reason, d.rule),
        (lazaret_abi::Reason::AllowFlow, Some(3))
    );
    // A stale flow is re-judged in its initiating direction: the pump opened it.
    reply.flow = FlowHint::Stale {
        initiator_is_src: false,
        here: 0,
        there: abi::device_id_hash(b"pump-1"),
    };
    assert_eq!(
        classify_indexed(&ix, &st, &reply).reason,
        lazaret_abi::Reason::AllowFlow
    );
    let mut q = DeviceStates::default();
    q.set_quarantine(abi::device_id_hash(b"pump-1"), abi::QUARANTINE_ISOLATE);
    assert_eq!(
        classify_indexed(&ix, &q, &reply).reason,
        lazaret_abi::Reason::DenyQuarantine
    );
    // judge_initiating ignores the flow state and the initiating test.
    assert_eq!(
        judge_initiating(&ix, &st, &syn).reason,
        lazaret_abi::Reason::AllowRule
    );
    assert_eq!(
        c.classify(&BTreeMap::new(), &st, &syn).unwrap().reason,
        lazaret_abi::Reason::AllowRule
    );
}

#[test]
fn every_class_flags_the_protocols_of_its_shorter_port_entries() {
    // The datapath walks the port trie only for the protocols a peer class flags
    // (lazaret_abi, *Exact entries in hashes*): a missing flag would hide a range or a
    // whole-protocol rule. Every entry kind, in both families.
    let extra = r#"
[workflows.kinds]
rules = [
  { device = "class:pump", peer = "10.10.7.0/24", proto = "any" },
  { device = "class:pump", peer = "10.10.8.0/24", proto = "icmp" },
  { device = "class:pump", peer = "10.10.8.0/24", proto = 47 },
  { device = "class:pump", peer = "10.10.9.9", proto = "tcp", ports = ["8000-8099", 8443] },
  { device = "class:pump", peer = "10.10.9.0/24", proto = "udp", ports = ["6000-6010"], initiator = "peer" },
]
[classes.pump]
workflows = ["sync", "kinds"]
"#;
    let base = BASE.replace("[classes.pump]\nworkflows = [\"sync\"]\n", "");
    assert_ne!(base, BASE, "BASE defines the pump class");
    let (_, c) = build(&[("base.toml", &base), ("pump.toml", PUMP), ("x.toml", extra)]).unwrap();
    let (_, example) = example();
    for c in [c, example] {
        let m = c.map_contents(0, 1, &ifx(&c)).unwrap();
        // Not the claim entries (classes of no policy).
        let flags: BTreeMap<[u8; 4], u32> = m
            .peer4
            .iter()
            .filter(|(_, k, _)| k.dir != abi::DIR_CLAIM)
            .map(|(_, _, v)| *v)
            .chain(
                m.peer6
                    .iter()
                    .filter(|(_, k, _)| k.dir != abi::DIR_CLAIM)
                    .map(|(_, _, v)| *v),
            )
            .map(|v| (v.class.to_be_bytes(), v.port_prefixes))
            .collect();
        let (mut shorter, mut checked) = (0, 0);
        for (len, k, _) in m.ports.iter() {
            let Some(&f) = flags.get(&k.class) else {
                continue;
            };
            checked += 1;
            if *len == abi::PORT_KEY_FULL_BITS {
                continue;
            }
            shorter += 1;
            let need = if *len <= abi::PORT_KEY_CLASS_BITS {
                abi::PORT_PREFIX_ANY
            } else {
                abi::port_prefix_bit(k.proto)
            };
            assert!(
                f & need != 0,
                "class {:?} has a {len}-bit entry for protocol {} but flags {f:#x}",
                k.class,
                k.proto
            );
        }
        assert!(
            checked > 0 && shorter > 0,
            "{checked} entries, {shorter} shorter"
        );
    }
}

/// Which addresses devices may own by first use (`DIR_CLAIM` entries, as the reference
/// classifier reads them): the devices' networks and link-local ones; not the upstream
/// networks (even inside a devices' one), nor what no interface declares, unless a
/// devices-side interface declares none, or none declares one of the family.
#[test]
fn devices_own_addresses_only_in_their_networks() {
    // The reference classifier's answer, site-wide (`at` none) or behind an interface,
    // checked against the naive evaluator's.
    let claimable = |(p, c): &(Policy, Compiled), at: Option<&str>, addrs: &[&str]| {
        let ix = MapIndex::new(&c.map_contents(0, 1, &ifx(c)).unwrap());
        let scope = at.map_or(abi::CLAIM_POLICY as u16, |n| abi::claim_scope(n.as_bytes()));
        addrs
            .iter()
            .map(|a| {
                let a = a.parse().unwrap();
                let yes = ix.in_claim_networks(scope, a);
                let naive = crate::naive::in_claim_networks(p, at, a);
                assert_eq!(yes, naive, "{a} at {at:?}");
                yes
            })
            .collect::<Vec<bool>>()
    };
    let example = example();
    let addrs = [
        "10.20.0.50",
        "10.30.0.9",
        "169.254.1.1",
        "fd00:20::50",
        "fe80::1",
        "10.10.1.20",
        "192.0.2.7",
        "fd00:10::20",
        "2001:db8::1",
    ];
    // Site-wide: every devices-side interface's networks.
    assert_eq!(
        claimable(&example, None, &addrs),
        [true, true, true, true, true, false, false, false, false]
    );
    // Behind an interface, its own networks only (and link-local), not another's.
    assert_eq!(
        claimable(&example, Some("icu0"), &addrs),
        [true, false, true, true, true, false, false, false, false]
    );
    // The pumps' interface declares no IPv6 network, but another interface does: no
    // global IPv6 address is the pumps' to take.
    assert_eq!(
        claimable(&example, Some("pumps0"), &addrs),
        [false, true, true, false, true, false, false, false, false]
    );
    // An interface the policy does not declare: the site-wide entries.
    assert_eq!(claimable(&example, Some("eth9"), &addrs[..2]), [true, true]);
    // A server network inside the devices' network stays the servers'.
    let site = |devices: &str, upstream: &str| {
        format!(
            "[site]\nname = \"t\"\n[site.essentials]\ndhcp = false\ndns = false\nntp = false\n[site.interfaces.dev0]\nside = \"devices\"\n{devices}\n[site.interfaces.up0]\nside = \"upstream\"\n{upstream}\n"
        )
    };
    let nested = site(
        "networks = [\"10.0.0.0/8\"]",
        "networks = [\"10.10.0.0/16\", \"fd00:10::/64\"]",
    );
    let c = build(&[("site.toml", &nested)]).unwrap();
    let addrs = [
        "10.20.0.1",
        "10.10.0.1",
        "11.0.0.1",
        "fd00:20::1",
        "fd00:10::1",
    ];
    for at in [None, Some("dev0")] {
        assert_eq!(
            claimable(&c, at, &addrs),
            // IPv6: no devices-side network of the family declared, so all but upstream's.
            [true, false, false, true, false]
        );
    }
    // A devices-side interface that declares no networks: everything but upstream's.
    let c = build(&[("site.toml", &site("", "networks = [\"10.10.0.0/16\"]"))]).unwrap();
    assert_eq!(
        claimable(&c, Some("dev0"), &["10.20.0.1", "192.0.2.7", "10.10.0.1"]),
        [true, true, false]
    );
    // Two devices-side interfaces: a network inside another's is cut out of it, and one
    // that declares none is open but for the others' networks.
    let two = format!(
        "{}[site.interfaces.dev1]\nside = \"devices\"\nnetworks = [\"10.30.0.0/24\"]\n[site.interfaces.dev2]\nside = \"devices\"\n",
        site("networks = [\"10.0.0.0/8\"]", "networks = [\"10.10.0.0/16\"]")
    );
    let c = build(&[("site.toml", &two)]).unwrap();
    let addrs = [
        "10.20.0.1",
        "10.30.0.1",
        "192.0.2.7",
        "10.10.0.1",
        "fe80::1",
    ];
    assert_eq!(
        claimable(&c, Some("dev0"), &addrs),
        [true, false, false, false, true]
    );
    assert_eq!(
        claimable(&c, Some("dev1"), &addrs),
        [false, true, false, false, true]
    );
    assert_eq!(
        claimable(&c, Some("dev2"), &addrs),
        [false, false, true, false, true]
    );
    assert_eq!(claimable(&c, None, &addrs), [true, true, true, false, true]);
    // No two of these interfaces share a scope (their names fold apart).
    let scopes: std::collections::BTreeSet<u16> =
        ["dev0", "dev1", "dev2", "icu0", "pumps0", "imaging0"]
            .iter()
            .map(|n| abi::claim_scope(n.as_bytes()))
            .collect();
    assert_eq!(scopes.len(), 6);
}

/// The slot says in which families some device is known by its MAC alone (the datapath
/// looks owners by first use up only then): the example's medication cabinet has no
/// address; BASE's pump has an IPv4 address and no IPv6 one.
#[test]
fn the_slot_says_whether_owners_by_first_use_can_name_a_device() {
    let owners = |c: &Compiled| {
        let f = c.map_contents(0, 1, &ifx(c)).unwrap().site.flags;
        (
            f & abi::SITE_F_NO_OWNERS4 == 0,
            f & abi::SITE_F_NO_OWNERS6 == 0,
        )
    };
    assert_eq!(owners(&example().1), (true, true));
    let (_, c) = build(&[("base.toml", BASE), ("pump.toml", PUMP)]).unwrap();
    assert_eq!(owners(&c), (false, true));
}
