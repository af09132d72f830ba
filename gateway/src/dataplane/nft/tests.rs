//! Rendering tests on the JSON itself: deterministic, constant rule count, the elements
//! that carry identity, policy and quarantine.

use super::render::*;
use crate::policy::{self, DeviceStates, SourceFile};
use lazaret_abi::QUARANTINE_ISOLATE;
use nftables::schema::NfListObject;
use std::{collections::BTreeMap, sync::Arc};

/// A site with `n` monitors (MAC + IPv4 on `gd`), one workflow to a server on 443/tcp and
/// 2575-2580/tcp, and one audit-mode device.
pub(crate) fn policy_text(n: usize) -> String {
    let mut t = String::from(
        r#"
[site]
name = "lab"
unknown_devices = "deny"
[site.interfaces.gd]
side = "devices"
[site.interfaces.gu]
side = "upstream"
[site.essentials]
dhcp = false
dns = false
ntp = false
neighbor = true
[classes.patient-monitor]
description = "monitors"
workflows = ["central"]
[workflows.central]
description = "central station"
[[workflows.central.rules]]
device = "class:patient-monitor"
peer = "10.10.0.0/24"
proto = "tcp"
ports = [443, "2575-2580"]
[[workflows.central.rules]]
device = "class:patient-monitor"
peer = "10.10.0.20/32"
proto = "udp"
ports = [514]
"#,
    );
    for i in 0..n {
        t.push_str(&format!(
            "[[devices]]\nid = \"mon-{i}\"\nclass = \"patient-monitor\"\nmac = \"02:00:00:00:{:02x}:{:02x}\"\nipv4 = \"10.20.{}.{}\"\ninterface = \"gd\"\n",
            i / 256,
            i % 256,
            i / 250,
            i % 250 + 2
        ));
    }
    t
}

/// What the renderer takes from a compile: the devices (in the XDP map contents) and the
/// rules as ranges.
pub(crate) struct Input {
    pub m: policy::MapContents,
    pub rules: Arc<policy::Ranges>,
}

pub(crate) fn contents(n: usize) -> Input {
    input(&policy_text(n))
}

fn input(text: &str) -> Input {
    let p = policy::parse_sources(vec![SourceFile::new("lab.toml".into(), text.to_string())])
        .expect("valid test policy");
    let c = policy::compile(&p).expect("compiles");
    let ix = BTreeMap::from([("gd".to_string(), 2), ("gu".to_string(), 3)]);
    Input {
        m: c.map_contents(0, 1, &ix).expect("map contents"),
        rules: c.ranges().clone(),
    }
}

/// [`super::render::render`] of an [`Input`].
fn render(i: &Input, states: &DeviceStates, opt: &RenderOptions) -> Result<Rendered, RenderError> {
    super::render::render(&i.m, &i.rules, states, opt)
}

pub(crate) fn options() -> RenderOptions {
    RenderOptions {
        family: Family::Inet,
        table: "lazaret".into(),
        generation: 7,
        ifnames: BTreeMap::from([(2, "gd".to_string()), (3, "gu".to_string())]),
        stacked: BTreeMap::new(),
        log_group: Some(7),
    }
}

fn json(r: &Rendered) -> serde_json::Value {
    super::apply::to_json(&super::apply::replace_batch(r))
}

fn rules(r: &Rendered) -> usize {
    r.objects
        .iter()
        .filter(|o| matches!(o, NfListObject::Rule(_)))
        .count()
}

/// The elements of set or map `name`, as JSON text.
fn elems(r: &Rendered, name: &str) -> Vec<String> {
    r.objects
        .iter()
        .find_map(|o| match o {
            NfListObject::Set(s) if s.name == name => Some(s.elem.clone()),
            NfListObject::Map(m) if m.name == name => Some(m.elem.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no set {name}"))
        .map(|e| {
            e.iter()
                .map(|x| serde_json::to_string(x).expect("json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rendering_is_deterministic() {
    let m = contents(20);
    let a = render(&m, &DeviceStates::default(), &options()).expect("renders");
    let b = render(&m, &DeviceStates::default(), &options()).expect("renders");
    assert_eq!(json(&a), json(&b));
}

#[test]
fn the_rule_count_does_not_grow_with_devices() {
    let one = render(&contents(1), &DeviceStates::default(), &options()).expect("renders");
    let many = render(&contents(600), &DeviceStates::default(), &options()).expect("renders");
    assert_eq!(rules(&one), rules(&many));
    assert_eq!(elems(&one, "bind4").len(), 1);
    assert_eq!(elems(&many, "bind4").len(), 600);
    // Devices share one policy: the peer and port elements do not grow either.
    assert_eq!(elems(&one, "peer_init_4"), elems(&many, "peer_init_4"));
    assert_eq!(elems(&one, "ports"), elems(&many, "ports"));
}

#[test]
fn bindings_tie_address_mac_and_interface_with_a_counter_each() {
    let r = render(&contents(1), &DeviceStates::default(), &options()).expect("renders");
    assert_eq!(
        elems(&r, "bind4"),
        vec![r#"{"concat":["10.20.0.2","02:00:00:00:00:00","gd"]}"#]
    );
    assert_eq!(elems(&r, "devidx4"), vec![r#"["10.20.0.2",1]"#]);
    assert_eq!(elems(&r, "dev_ifaces"), vec![r#""gd""#]);
    assert_eq!(elems(&r, "up_ifaces"), vec![r#""gu""#]);
}

#[test]
fn prefixes_and_port_ranges_become_interval_elements() {
    let r = render(&contents(1), &DeviceStates::default(), &options()).expect("renders");
    let peers = elems(&r, "peer_init_4");
    // 10.10.0.20/32 nests in 10.10.0.0/24: three disjoint ranges, the /32 its own class.
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(peers[0].contains(r#"{"range":["10.10.0.0","10.10.0.19"]}"#));
    assert!(peers[1].contains(r#""10.10.0.20""#));
    assert!(peers[2].contains(r#"{"range":["10.10.0.21","10.10.0.255"]}"#));
    let ports = elems(&r, "ports").join(" ");
    assert!(ports.contains(r#"6,443"#), "{ports}");
    assert!(ports.contains(r#"6,{"range":[2575,2580]}"#), "{ports}");
    assert!(ports.contains(r#"17,514"#), "{ports}");
    // No rule admits a protocol without ports.
    assert!(elems(&r, "ports0").is_empty());
}

#[test]
fn quarantine_is_set_membership() {
    let m = contents(3);
    let mut states = DeviceStates::default();
    let victim = m.m.devices[1].1.id;
    states.set_quarantine(victim, QUARANTINE_ISOLATE);
    let r = render(&m, &states, &options()).expect("renders");
    assert_eq!(elems(&r, "quar_isolate"), vec!["2".to_string()]);
    assert!(elems(&r, "quar_restrict").is_empty());
    assert_eq!(elems(&r, "quar4").len(), 1);
    let q = serde_json::to_string(&super::apply::quarantine_batch(&r, &states)).expect("json");
    assert!(
        q.contains(r#"{"flush":{"set":{"family":"inet","table":"lazaret","name":"quar_isolate""#),
        "{q}"
    );
    assert!(q.contains(r#""elem":[2]"#), "{q}");
    // The MAC sets, for devices known by their MAC alone in a family, are refilled too.
    for set in ["quarmac4", "quarmac6"] {
        assert!(q.contains(&format!(r#""name":"{set}""#)), "{q}");
    }
}

#[test]
fn the_batch_replaces_the_table_in_one_transaction() {
    let r = render(&contents(1), &DeviceStates::default(), &options()).expect("renders");
    let j = json(&r);
    let objs = j["nftables"].as_array().expect("array");
    assert_eq!(
        objs[0],
        serde_json::json!({"add": {"table": {"family": "inet", "name": "lazaret"}}})
    );
    assert_eq!(
        objs[1],
        serde_json::json!({"delete": {"table": {"family": "inet", "name": "lazaret"}}})
    );
    assert!(objs[2..].iter().all(|o| o.get("add").is_some()));
    let bind4 = objs
        .iter()
        .find(|o| o.pointer("/add/set/name") == Some(&serde_json::json!("bind4")))
        .expect("bind4");
    assert_eq!(
        bind4.pointer("/add/set/stmt"),
        Some(&serde_json::json!([{"counter": null}]))
    );
}

#[test]
fn denials_are_logged_to_the_nflog_group_under_a_rate_limit() {
    let r = render(&contents(1), &DeviceStates::default(), &options()).expect("renders");
    // serde_json's Value orders keys alphabetically.
    let text = json(&r).to_string();
    for reason in [
        "deny_unknown",
        "deny_spoof",
        "deny_no_rule",
        "deny_quarantine",
    ] {
        assert!(
            text.contains(&format!(
                r#""log":{{"group":7,"prefix":"lazaret {reason} "}}"#
            )),
            "{reason} not logged"
        );
    }
    // The limit is per source: each `update @event_rate { ether saddr limit … }` carries it.
    // A frame a device sent spends its own bucket: by its source address for a device
    // identity admitted by address alone (whatever MAC the frame carries), else by MAC.
    // Any other spends its source MAC's in its own meter, then the table's shared named
    // limit.
    let log_rules = json(&r)["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| o.pointer("/add/rule/expr").and_then(|e| e.as_array()))
        .filter(|e| e.iter().any(|s| s.get("log").is_some()))
        .cloned()
        .collect::<Vec<_>>();
    let mut by_meter = std::collections::BTreeMap::<String, usize>::new();
    for e in &log_rules {
        let at = e
            .iter()
            .position(|s| s.get("set").is_some())
            .expect("every log rule updates a meter");
        let meter = e[at]["set"]["set"].as_str().unwrap_or_default().to_string();
        let (protocol, set) = match meter.as_str() {
            "@event_rate" => ("ether", Some("@devmac")),
            "@event_rate_addr4" => ("ip", Some("@bind_nomac4")),
            "@event_rate_addr6" => ("ip6", Some("@bind_nomac6")),
            "@event_rate_unknown" => ("ether", None),
            other => panic!("log rule updates {other}: {e:?}"),
        };
        assert_eq!(
            e[at]["set"],
            serde_json::json!({
                "op": "update",
                "set": meter,
                "elem": {"payload": {"protocol": protocol, "field": "saddr"}},
                "stmt": [{"limit": {"burst": 100, "burst_unit": "packets", "per": "second", "rate": 50, "rate_unit": "packets"}}],
            }),
            "{e:?}"
        );
        if let Some(set) = set {
            // Right before a device's meter: the source it is keyed by, a device's.
            let m = &e[at - 1]["match"];
            // By address: the source address and the interface, as identity bound them.
            let source = m.pointer("/left/concat/0").unwrap_or(&m["left"]);
            assert_eq!(
                (
                    source.pointer("/payload/protocol"),
                    source.pointer("/payload/field")
                ),
                (
                    Some(&serde_json::json!(protocol)),
                    Some(&serde_json::json!("saddr"))
                ),
                "{e:?}"
            );
            assert_eq!(
                (m["op"].as_str(), m["right"].as_str()),
                (Some("in"), Some(set))
            );
        }
        let budget = e.get(at + 1).and_then(|s| s.get("limit")).cloned();
        let want = set.is_none().then(|| serde_json::json!("unknown_events"));
        assert_eq!(budget, want, "the shared budget, after the meter: {e:?}");
        *by_meter.entry(meter).or_default() += 1;
    }
    let count = |m: &str| by_meter.get(m).copied().unwrap_or(0);
    assert!(
        count("@event_rate") > 0
            && count("@event_rate_addr4") == count("@event_rate_addr6")
            && count("@event_rate") == count("@event_rate_addr4") + count("@event_rate_addr6")
            && count("@event_rate_unknown") > count("@event_rate"),
        "{by_meter:?}"
    );
    let objects = json(&r)["nftables"].as_array().expect("array").clone();
    let named = objects
        .iter()
        .find_map(|o| o.pointer("/add/limit"))
        .expect("the shared budget's named limit");
    assert_eq!(
        (
            named["name"].as_str(),
            named["rate"].as_u64(),
            named["burst"].as_u64()
        ),
        (Some("unknown_events"), Some(500), Some(1000))
    );
    for meter in [
        "event_rate",
        "event_rate_unknown",
        "event_rate_addr4",
        "event_rate_addr6",
    ] {
        assert!(
            text.contains(&format!(r#""name":"{meter}""#)),
            "the meter set {meter}"
        );
    }
    // An idle bucket is forgotten once it would be full again: burst ÷ rate.
    assert!(text.contains(r#""timeout":2"#), "the meters' timeout");
    // Without a group, no log rules: the rule count is the skeleton's.
    let quiet = RenderOptions {
        log_group: None,
        ..options()
    };
    let q = render(&contents(1), &DeviceStates::default(), &quiet).expect("renders");
    assert!(!json(&q).to_string().contains(r#""log""#));
    assert!(rules(&q) < rules(&r));
}

#[test]
fn a_swap_builds_the_new_table_unhooked_then_hooks_it_and_drops_the_old_one() {
    let r = render(
        &contents(1),
        &DeviceStates::default(),
        &RenderOptions {
            table: "lazaret_b".into(),
            ..options()
        },
    )
    .expect("renders");
    let (build, hook, retire) = super::apply::swap_batches("lazaret", &r);
    let build = super::apply::to_json(&build).to_string();
    let hook = super::apply::to_json(&hook);
    let retire = super::apply::to_json(&retire);
    assert!(
        !build.contains(r#""hook""#),
        "nothing hooked in the first step"
    );
    assert!(build.contains(r#""name":"bind4""#));
    assert!(
        !build.contains(r#""name":"lazaret""#),
        "the old table is untouched"
    );
    let objs = hook["nftables"].as_array().expect("array");
    assert!(objs
        .iter()
        .any(|o| o.pointer("/add/chain/hook") == Some(&serde_json::json!("prerouting"))));
    assert!(
        !hook.to_string().contains(r#""delete""#),
        "the old table stays hooked until the new one is"
    );
    assert_eq!(
        retire["nftables"].as_array().and_then(|a| a.last()),
        Some(&serde_json::json!({"delete": {"table": {"family": "inet", "name": "lazaret"}}}))
    );
}

#[test]
fn counters_are_per_reason_and_side_and_start_from_the_replaced_table() {
    let mut r = render(&contents(1), &DeviceStates::default(), &options()).expect("renders");
    let text = json(&r).to_string();
    for name in [
        "deny_no_rule_devices",
        "deny_no_rule_upstream",
        "deny_spoof_devices",
    ] {
        assert!(text.contains(&format!(r#""name":"{name}""#)), "{name}");
    }
    r.counter_base
        .insert("deny_no_rule_devices".into(), (5_000_000_000, 7));
    let (build, _, _) = super::apply::swap_batches("lazaret_b", &r);
    let mut build = super::apply::to_json(&build);
    super::apply::start_counters_at(&mut build, &r.counter_base);
    let c = build["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .find(|o| {
            o.pointer("/add/counter/name") == Some(&serde_json::json!("deny_no_rule_devices"))
        })
        .expect("the counter");
    assert_eq!(
        c.pointer("/add/counter/packets"),
        Some(&serde_json::json!(5_000_000_000u64))
    );
    assert_eq!(c.pointer("/add/counter/bytes"), Some(&serde_json::json!(7)));
    // Read back from nft's listing, values past u32 included.
    let listed = serde_json::json!({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"counter": {"family": "inet", "name": "allow_rule_devices", "table": "lazaret", "handle": 3, "packets": 5_000_000_000u64, "bytes": 9}},
        {"counter": {"family": "inet", "name": "allow_rule_devices", "table": "other", "handle": 3, "packets": 1, "bytes": 1}},
    ]});
    assert_eq!(
        super::apply::counters_of(&listed, "lazaret"),
        BTreeMap::from([("allow_rule_devices".to_string(), (5_000_000_000, 9))])
    );
}

#[test]
fn learn_mode_devices_new_allowed_flows_are_logged_as_learn_records() {
    let text = policy_text(2).replacen(
        "interface = \"gd\"\n",
        "interface = \"gd\"\nmode = \"learn\"\n",
        1,
    );
    let r = render(&input(&text), &DeviceStates::default(), &options()).expect("renders");
    let j = json(&r);
    let learn4 = j["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .find(|o| o.pointer("/add/set/name") == Some(&serde_json::json!("learn4")))
        .expect("learn4");
    assert_eq!(
        learn4.pointer("/add/set/elem"),
        Some(&serde_json::json!(["10.20.0.2"])),
        "only the learn-mode device's address"
    );
    assert!(j
        .to_string()
        .contains(r#""prefix":"lazaret learn:allow_rule ""#));
}

#[test]
fn the_members_of_a_pair_never_stamp_a_flow_alike() {
    use super::dataplane::flow_stamp;
    let gens = [0u64, 1, 2, 3, 1000, u64::from(u32::MAX), 1 << 31, 1 << 32];
    for (salt_a, salt_b) in [(0, 0), (0x1234_5678, 0x9abc_def0), (u32::MAX, 7)] {
        for g in gens {
            for (second, salt) in [(false, salt_a), (true, salt_b)] {
                let stamp = flow_stamp(g, second, salt);
                assert_ne!(stamp, 0, "generation {g}");
                // Never an owner mark kept in a flow being judged (`judge4`/`6`).
                assert_eq!(stamp & super::render::OWNER_MARK, 0, "generation {g}");
            }
            for h in gens {
                assert_ne!(
                    flow_stamp(g, false, salt_a),
                    flow_stamp(h, true, salt_b),
                    "{g} / {h}"
                );
            }
        }
        // One member's generations stay apart (until the 30-bit number wraps).
        assert_ne!(flow_stamp(1, false, salt_a), flow_stamp(2, false, salt_a));
    }
    // Where the bit cannot be told, the salts keep two daemons apart.
    assert_ne!(
        flow_stamp(1, false, 0x1234_5678),
        flow_stamp(1, false, 0x9abc_def0)
    );
}

/// The policy's `[site.events]` rate and burst are the tables' budgets, as the XDP program
/// reads them from its site config: each meter's per-source limit, the shared named limit
/// (ten times both), and the meters' timeout (burst ÷ rate), in the inet table and in the
/// frame stage alike.
#[test]
fn the_sites_event_rate_and_burst_are_the_tables_budgets() {
    let mut i = contents(1);
    i.m.site.event_rate = 7;
    i.m.site.event_burst = 30;
    let r = render(&i, &DeviceStates::default(), &options()).expect("renders");
    let v = json(&r);
    let objects = v["nftables"].as_array().expect("array");
    let mut meters = 0;
    for e in objects
        .iter()
        .filter_map(|o| o.pointer("/add/rule/expr").and_then(|e| e.as_array()))
    {
        // The event meters (other updates fill sets, as DCCP's sessions).
        let meter = |s: &&serde_json::Value| {
            s["set"]
                .as_str()
                .is_some_and(|n| n.starts_with("@event_rate"))
        };
        for set in e.iter().filter_map(|s| s.get("set")).filter(meter) {
            assert_eq!(
                set["stmt"],
                serde_json::json!([{"limit": {"burst": 30, "burst_unit": "packets", "per": "second", "rate": 7, "rate_unit": "packets"}}]),
                "{e:?}"
            );
            meters += 1;
        }
        // The per-source limit moved into its update: no limit statement of its own is
        // left but the named one.
        assert!(
            e.iter()
                .filter_map(|s| s.get("limit"))
                .all(serde_json::Value::is_string),
            "{e:?}"
        );
    }
    assert!(meters > 0);
    let named = objects
        .iter()
        .find_map(|o| o.pointer("/add/limit"))
        .expect("the shared budget's named limit");
    assert_eq!(
        (named["rate"].as_u64(), named["burst"].as_u64()),
        (Some(70), Some(300))
    );
    let timeouts: Vec<_> = objects
        .iter()
        .filter_map(|o| o.pointer("/add/set"))
        .filter(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("event_rate"))
        })
        .map(|s| s["timeout"].as_u64())
        .collect();
    assert_eq!(timeouts, vec![Some(5); 4], "30 ÷ 7, rounded up");

    let frame = frame_of(&i, Some(7), &Default::default());
    assert!(frame.build.contains("limit rate 7/second burst 30 packets"));
    assert!(!frame.build.contains("limit rate 50/second"));
    assert!(frame.build.contains("rate 70/second burst 300 packets"));
    assert!(frame.build.contains("timeout 5s"));
}

/// A reload carries each owner of an address by first use with what its ownership had left,
/// not a fresh timeout: an address its owner left is free 10 minutes later, however often
/// the policy reloads. One with nothing left is not carried.
#[test]
fn a_reload_carries_address_owners_with_what_they_had_left() {
    let i = contents(1);
    let mac = [2, 0, 0, 0, 0x0a, 1];
    let carried = super::frame::Dynamic {
        owners4: vec![
            (std::net::Ipv4Addr::new(10, 20, 0, 50), mac, 120),
            (std::net::Ipv4Addr::new(10, 20, 0, 51), mac, 0),
        ],
        owners6: vec![("fd00:20::50".parse().expect("addr"), mac, 42)],
        ..Default::default()
    };
    let frame = frame_of(&i, None, &carried);
    let b = &frame.build;
    assert!(
        b.contains("10.20.0.50 . 02:00:00:00:0a:01 expires 120s"),
        "{b}"
    );
    assert!(b.contains("10.20.0.50 expires 120s"), "{b}");
    assert!(!b.contains("10.20.0.51"), "{b}");
    let raw = "0xfd000020000000000000000000000050";
    assert!(
        b.contains(&format!("{raw} . 02:00:00:00:0a:01 expires 42s")),
        "{b}"
    );
}

/// The addresses devices known by their MAC alone own are carried into the next frame
/// stage with the owner's device mark (`ownidx4`/`6`, read by the inet table), with what
/// the claim or the destination ownership had left (whichever is more: the destination
/// outlives the claim), one element per address however many owners were listed (a map
/// refuses two: the reload would fail), and none for an owner that is no such device.
#[test]
fn a_reload_carries_the_devices_of_owned_addresses_once_each() {
    use lazaret_abi::{DEV_F_HAS_MAC, DEV_F_NO_IP4, DEV_F_NO_IP6};
    let mut i = contents(2);
    let macs: Vec<(u64, [u8; 6])> =
        i.m.devices
            .iter()
            .filter(|(_, d)| d.flags & DEV_F_HAS_MAC != 0)
            .map(|(_, d)| (d.id, d.mac))
            .take(2)
            .collect();
    let [(a, mac_a), (b, mac_b)] = macs[..] else {
        panic!("two devices with a MAC: {macs:?}");
    };
    // Device b keeps its IPv6 addresses: it owns only link-local ones of the family.
    i.m.edit_device(a, |d| d.flags |= DEV_F_NO_IP4 | DEV_F_NO_IP6);
    i.m.edit_device(b, |d| d.flags = (d.flags | DEV_F_NO_IP4) & !DEV_F_NO_IP6);
    let index = super::render::device_index(&i.m);
    let mark = |id: u64| super::render::owner_tag("lazaret") | index[&id];
    let addr = std::net::Ipv4Addr::new(10, 20, 0, 50);
    let carried = super::frame::Dynamic {
        owners4: vec![
            (addr, mac_a, 30),
            (addr, mac_b, 120),
            (
                std::net::Ipv4Addr::new(10, 20, 0, 52),
                [2, 0, 0, 0, 0x0c, 1],
                90,
            ),
        ],
        owners6: vec![
            ("fd00:20::50".parse().expect("addr"), mac_a, 42),
            ("fd00:20::51".parse().expect("addr"), mac_a, 1),
            ("fe80::11".parse().expect("addr"), mac_a, 300),
            ("fe80::22".parse().expect("addr"), mac_b, 200),
            ("fd00:20::52".parse().expect("addr"), mac_b, 200),
        ],
        // Destination owners whose claims have expired: carried with their own time.
        dest4: vec![
            (std::net::Ipv4Addr::new(10, 20, 0, 53), mac_a, 80_000),
            (addr, mac_b, 60),
        ],
        dest6: vec![("fd00:20::53".parse().expect("addr"), mac_a, 70_000)],
        pins: vec![],
    };
    let b_text = frame_of(&i, None, &carried).build;
    let map = |name: &str| -> String {
        let at = b_text.find(&format!("map {name} {{")).expect("the map");
        b_text[at..]
            .split('}')
            .next()
            .expect("its body")
            .to_string()
    };
    let own4 = map("ownidx4");
    assert!(
        own4.contains(&format!("10.20.0.50 expires 120s : {}", mark(b))),
        "{own4}"
    );
    assert_eq!(own4.matches("10.20.0.50").count(), 1, "{own4}");
    assert!(!own4.contains("10.20.0.52"), "{own4}");
    assert!(
        own4.contains(&format!("10.20.0.53 expires 80000s : {}", mark(a))),
        "{own4}"
    );
    // As long as the XDP program's `owned_device` finds an owner: a day.
    assert!(own4.contains("timeout 86400s"), "{own4}");
    let own6 = map("ownidx6");
    for (raw, left) in [
        ("0xfd000020000000000000000000000050", 42),
        ("0xfd000020000000000000000000000051", 1),
        ("0xfd000020000000000000000000000053", 70_000),
    ] {
        assert!(
            own6.contains(&format!("{raw} expires {left}s : {}", mark(a))),
            "{own6}"
        );
    }
    // Not a link-local address (a frame sent there names its device by MAC), nor an
    // address of a family the device has bound.
    assert_eq!(own6.matches("expires").count(), 3, "{own6}");
    let mac_str = super::render::mac_str;
    assert!(map("macidx4").contains(&format!("{} : {}", mac_str(&mac_a), mark(a))));
    assert!(!map("macidx6").contains(&mac_str(&mac_b)));
    assert!(map("macidxll").contains(&format!("{} : {}", mac_str(&mac_b), mark(b))));
}

/// The addresses that may be owned by first use (`DIR_CLAIM` entries: nested prefixes,
/// the longest deciding) become disjoint ranges of an interval set, which matches no
/// longest prefix: a server network inside the devices' is cut out of it. The declared
/// devices' networks alone make the set owners are found in for what devices send.
#[test]
fn claimable_networks_are_flattened_into_ranges() {
    use crate::policy::{claim_entry4, claim_entry6};
    let mut i = contents(2);
    let slot = i.m.slot;
    let p4 = std::sync::Arc::make_mut(&mut i.m.peer4);
    p4.retain(|(_, k, _)| k.dir != lazaret_abi::DIR_CLAIM);
    use lazaret_abi::{CLAIM_ANY, CLAIM_DEVICES, CLAIM_NO};
    for (net, class) in [
        ("10.0.0.0/8", CLAIM_DEVICES),
        ("10.10.0.0/16", CLAIM_NO),
        ("169.254.0.0/16", CLAIM_DEVICES),
    ] {
        p4.push(claim_entry4(slot, 0, net.parse().expect("net"), class));
    }
    let p6 = std::sync::Arc::make_mut(&mut i.m.peer6);
    p6.retain(|(_, k, _)| k.dir != lazaret_abi::DIR_CLAIM);
    for (net, class) in [
        ("::/0", CLAIM_ANY),
        ("fd00:10::/64", CLAIM_NO),
        ("fe80::/10", CLAIM_DEVICES),
    ] {
        p6.push(claim_entry6(slot, 0, net.parse().expect("net"), class));
    }
    i.m.sort();
    let text = frame_of(&i, None, &Default::default()).build;
    let set = |name: &str| -> String {
        let at = text.find(&format!("set {name} {{")).expect("the set");
        text[at..].split('}').next().expect("its body").to_string()
    };
    let v4 = set("claimnets4");
    assert!(v4.contains("flags interval"), "{v4}");
    assert!(
        v4.contains(
            "elements = { 10.0.0.0-10.9.255.255, 10.11.0.0-10.255.255.255, 169.254.0.0-169.254.255.255 "
        ),
        "{v4}"
    );
    let v6 = set("claimnets6");
    assert!(
        v6.contains("0x00000000000000000000000000000000-0xfd00000fffffffffffffffffffffffff, 0xfd000010000000010000000000000000-0xffffffffffffffffffffffffffffffff"),
        "{v6}"
    );
    // Owners are found for what devices send only inside the declared networks.
    assert_eq!(set("devnets4"), v4.replace("claimnets4", "devnets4"));
    let dev6 = set("devnets6");
    assert!(
        dev6.contains(
            "elements = { 0xfe800000000000000000000000000000-0xfebfffffffffffffffffffffffffffff "
        ),
        "{dev6}"
    );
    // A port whose interface has no entries of its own claims as the site-wide ones say.
    let port = |name: &str, scope: u16| super::frame::Port {
        name: name.into(),
        ifindex: 2,
        cfg: lazaret_abi::IfaceConfig {
            claim_scope: scope,
            ..lazaret_abi::IfaceConfig::new(lazaret_abi::SIDE_DEVICES)
        },
    };
    let scope = lazaret_abi::claim_scope(b"icu0");
    let text = frame_with(&i, &[port("gd", scope)], None, &Default::default()).build;
    let set = |name: &str| -> String {
        let at = text.find(&format!("set {name} {{")).expect("the set");
        text[at..].split('}').next().expect("its body").to_string()
    };
    assert!(
        set("claimscope4").contains(
            "elements = { \"gd\" . 10.0.0.0-10.9.255.255, \"gd\" . 10.11.0.0-10.255.255.255, "
        ),
        "{}",
        set("claimscope4")
    );
    // Its interface's own entries, per port: another interface's network is cut out.
    let p4 = std::sync::Arc::make_mut(&mut i.m.peer4);
    for (net, class) in [
        ("0.0.0.0/0", CLAIM_NO),
        ("10.20.0.0/24", CLAIM_DEVICES),
        ("10.20.0.128/25", CLAIM_NO),
    ] {
        p4.push(claim_entry4(
            slot,
            u32::from(scope),
            net.parse().expect("net"),
            class,
        ));
    }
    i.m.sort();
    let ports = [port("gd", scope), port("ge", 0)];
    let text = frame_with(&i, &ports, None, &Default::default()).build;
    let at = text.find("set claimscope4 {").expect("the set");
    let body = text[at..].split('}').next().expect("its body");
    assert!(body.contains("typeof iifname . ip saddr"), "{body}");
    assert!(
        body.contains(
            "elements = { \"gd\" . 10.20.0.0-10.20.0.127, \"ge\" . 10.0.0.0-10.9.255.255, "
        ),
        "{body}"
    );
    // Checked before every claim, by the port the frame arrived on.
    for key in ["ip saddr", "arp saddr ip"] {
        assert!(
            text.contains(&format!("iifname . {key} != @claimscope4")),
            "{key}"
        );
    }
    for key in ["@nh,64,128", "@th,64,128"] {
        assert!(
            text.contains(&format!("iifname . {key} != @claimscope6")),
            "{key}"
        );
    }
}

/// The frame stage of `i` with one device port, `gd`.
fn frame_of(
    i: &Input,
    log_group: Option<u32>,
    carried: &super::frame::Dynamic,
) -> super::frame::Frame {
    let ports = [super::frame::Port {
        name: "gd".into(),
        ifindex: 2,
        cfg: lazaret_abi::IfaceConfig::new(lazaret_abi::SIDE_DEVICES),
    }];
    frame_with(i, &ports, log_group, carried)
}

/// The frame stage of `i` with `ports`.
fn frame_with(
    i: &Input,
    ports: &[super::frame::Port],
    log_group: Option<u32>,
    carried: &super::frame::Dynamic,
) -> super::frame::Frame {
    super::frame::render_frame(
        &i.m,
        &super::frame::FrameOptions {
            table: "lazaret",
            ports,
            local: &Default::default(),
            log_group,
            counter_base: &Default::default(),
            carried,
            states: &Default::default(),
        },
    )
    .expect("the frame stage renders")
}

/// While a reload swaps the pair's tables, a packet from upstream may carry the other
/// frame stage's owner mark, numbered by the other generation: each table drops a mark of
/// the other's (its table bit differs), and reads only its own as a device.
#[test]
fn an_owner_mark_of_the_other_table_is_refused_not_read() {
    use super::render::{OWNER_MARK, OWNER_TABLE};
    let i = contents(1);
    for (table, theirs) in [
        ("lazaret", OWNER_MARK | OWNER_TABLE),
        ("lazaret_b", OWNER_MARK),
    ] {
        let r = render(
            &i,
            &DeviceStates::default(),
            &RenderOptions {
                table: table.into(),
                ..options()
            },
        )
        .expect("renders");
        // The rules of `chain`, as JSON text.
        let chain = |name: &str| -> Vec<String> {
            r.objects
                .iter()
                .filter_map(|o| match o {
                    NfListObject::Rule(rule) if rule.chain == name => {
                        Some(serde_json::to_string(&rule.expr).expect("json"))
                    }
                    _ => None,
                })
                .collect()
        };
        for from in ["from_upstream", "from_devices"] {
            let rules = chain(from);
            let refused = rules
                .iter()
                .find(|r| r.contains(&format!("\"right\":{theirs}")))
                .unwrap_or_else(|| {
                    panic!("{table} {from}: no rule for the other's mark: {rules:?}")
                });
            assert!(refused.contains("\"drop\""), "{table}: {refused}");
        }
        // Its own marks only are read as a device, or kept in the flow's conntrack mark
        // while the initiator is judged: the judge chains compare both bits with its own
        // tag (keep, clear a kept one and the kept owner, each from upstream and from a
        // device port to an address not link-local; a reply's owner).
        let tag = super::render::owner_tag(table);
        let judge: Vec<String> = chain("judge4")
            .into_iter()
            .filter(|r| r.contains(&(OWNER_MARK | OWNER_TABLE).to_string()))
            .collect();
        assert_eq!(judge.len(), 7, "{table}: {judge:?}");
        // The audit and learn chains ask the kept owner (two rules per family, as above),
        // and by MAC a device known by its MAC alone answering and the device a frame to a
        // link-local address is sent to, as the responder (one rule per family each).
        for soft in ["soft_audit", "soft_learn"] {
            let rules = chain(soft);
            let kept = rules
                .iter()
                .filter(|r| r.contains(&format!("\"right\":{tag}")));
            assert_eq!(kept.count(), 4, "{table} {soft}: {rules:?}");
            let by_mac = rules
                .iter()
                .filter(|r| r.contains(super::render::names::DEVIDX_MAC));
            assert_eq!(by_mac.count(), 4, "{table} {soft}: {rules:?}");
        }
        for rule in &judge {
            assert!(
                rule.contains(&format!("\"right\":{tag}")),
                "{table}: {rule}"
            );
        }
    }
}

/// The frame stage refuses a quarantined device's link-local control frames by its MAC
/// (`quar_mac`): rendered from the quarantine states, rewritten in place as they change.
#[test]
fn the_frame_stage_knows_quarantined_devices_by_their_mac() {
    let i = contents(3);
    let d =
        &i.m.devices
            .iter()
            .find(|(_, d)| d.flags & lazaret_abi::DEV_F_HAS_MAC != 0)
            .expect("a device with a MAC")
            .1;
    let mut states = DeviceStates::default();
    assert!(super::frame::quarantined_macs(&i.m, &states).is_empty());
    // Restricted: its control frames pass (802.1X must go on); isolated, not.
    states.set_quarantine(d.id, lazaret_abi::QUARANTINE_RESTRICT);
    assert!(super::frame::quarantined_macs(&i.m, &states).is_empty());
    states.set_quarantine(d.id, lazaret_abi::QUARANTINE_ISOLATE);
    let mac = d
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(
        super::frame::quarantined_macs(&i.m, &states),
        vec![mac.clone()]
    );
    let ports = [super::frame::Port {
        name: "gd".into(),
        ifindex: 2,
        cfg: lazaret_abi::IfaceConfig::new(lazaret_abi::SIDE_DEVICES),
    }];
    let text = super::frame::render_frame(
        &i.m,
        &super::frame::FrameOptions {
            table: "lazaret",
            ports: &ports,
            local: &Default::default(),
            log_group: None,
            counter_base: &Default::default(),
            carried: &Default::default(),
            states: &states,
        },
    )
    .expect("the frame stage renders")
    .build;
    let at = text.find("set quar_mac {").expect("the set");
    let body = text[at..].split('}').next().expect("its body");
    assert!(body.contains(&mac), "{body}");
}
