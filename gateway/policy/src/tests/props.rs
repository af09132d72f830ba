//! Property tests: for random small policies and random packets, the reference classifier
//! over the compiled maps agrees with the naive evaluator over the parsed policy (reason,
//! device and deciding rule); and no input makes the loader panic.
//!
//! Policies are generated as TOML text from a seed (so a failure prints a policy a person
//! can read and re-run), packets are drawn around the policy's own addresses.

use super::*;
use crate::naive::{evaluate, Context};
use lazaret_abi::{self as abi, Reason};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const ROLE_ADDRS: &[&str] = &[
    "10.10.0.1",
    "10.10.0.2",
    "10.10.0.0/29",
    "10.10.0.0/16",
    "10.20.0.0/24",
    "fd00:10::1",
    "fd00:10::/64",
    "fd00:20::/64",
];
const PORTS: &[&str] = &[
    "53",
    "67",
    "68",
    "123",
    "547",
    "80",
    "443",
    "\"100-200\"",
    "\"150-160\"",
    "\"1024-65535\"",
];
const PROTOS: &[&str] = &[
    "\"tcp\"",
    "\"udp\"",
    "\"icmp\"",
    "\"icmpv6\"",
    "\"any\"",
    "47",
];
const MODES: &[&str] = &["enforce", "audit", "learn"];
const DEVICES: usize = 5;

/// A random policy as TOML text.
fn policy_text(r: &mut Rng) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "[site]\nname = \"prop\"\nunknown_devices = \"{}\"\nl2_control = {}",
        if r.coin(30) { "audit" } else { "deny" },
        r.coin(50)
    );
    s.push_str("[site.interfaces.dev0]\nside = \"devices\"\nnetworks = [\"10.20.0.0/24\", \"fd00:20::/64\"]\n");
    s.push_str(
        "[site.interfaces.dev1]\nside = \"devices\"\n[site.interfaces.up0]\nside = \"upstream\"\n",
    );
    let _ = writeln!(
        s,
        "[site.essentials]\ndhcp = {}\ndns = {}\nntp = {}\nneighbor = {}",
        r.coin(70),
        r.coin(70),
        r.coin(70),
        r.coin(70)
    );
    if r.coin(50) {
        let _ = writeln!(
            s,
            "[site.quarantine]\nallow = [{{ peer = \"role:r0\", proto = {}, initiator = \"{}\" }}]",
            if r.coin(50) {
                "\"tcp\", ports = [443]"
            } else {
                "\"udp\""
            },
            if r.coin(50) { "device" } else { "peer" }
        );
    }
    for name in ["dhcp", "dns", "ntp"] {
        let _ = writeln!(
            s,
            "[roles.{name}]\naddresses = [\"{}\"]",
            r.pick(&ROLE_ADDRS[..2])
        );
    }
    for i in 0..3 {
        // An IPv4 address or prefix, often an IPv6 one too: rules then reach every device.
        let mut addrs = vec![format!("\"{}\"", r.pick(&ROLE_ADDRS[..5]))];
        if r.coin(60) {
            addrs.push(format!("\"{}\"", r.pick(&ROLE_ADDRS[5..])));
        }
        let _ = writeln!(s, "[roles.r{i}]\naddresses = [{}]", addrs.join(", "));
    }
    let workflows = 1 + r.below(3);
    for c in 0..2 {
        let wfs: Vec<String> = (0..workflows)
            .filter(|_| r.coin(60))
            .map(|w| format!("\"w{w}\""))
            .collect();
        let _ = writeln!(s, "[classes.c{c}]\nworkflows = [{}]", wfs.join(", "));
        if r.coin(30) {
            let _ = writeln!(s, "mode = \"{}\"", r.pick(MODES));
        }
    }
    for w in 0..workflows {
        let _ = writeln!(
            s,
            "[workflows.w{w}]\nmode = \"{}\"\nessential = {}",
            if r.coin(20) { r.pick(MODES) } else { "enforce" },
            r.coin(50)
        );
        for _ in 0..1 + r.below(4) {
            s.push_str("[[workflows.w");
            let _ = writeln!(s, "{w}.rules]]");
            match r.below(4) {
                0 => {}
                1 => {
                    let _ = writeln!(s, "device = \"class:c{}\"", r.below(2));
                }
                2 => {
                    let _ = writeln!(s, "device = \"device:d{}\"", r.below(DEVICES));
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "device = [\"class:c{}\", \"device:d{}\"]",
                        r.below(2),
                        r.below(DEVICES)
                    );
                }
            }
            let peer = match r.below(6) {
                0 => format!("\"class:c{}\"", r.below(2)),
                1 => format!("\"device:d{}\"", r.below(DEVICES)),
                2 => "\"any\"".to_string(),
                3 => format!("\"{}\"", r.pick(&ROLE_ADDRS[..5])),
                _ => format!("\"role:r{}\"", r.below(3)),
            };
            let proto = *r.pick(PROTOS);
            // ICMP flavours exist in one family only: give them a peer of every family.
            let peer = if proto.starts_with("\"icmp") {
                "\"any\"".to_string()
            } else {
                peer
            };
            let _ = writeln!(
                s,
                "peer = {peer}\nproto = {proto}\ninitiator = \"{}\"",
                if r.coin(70) { "device" } else { "peer" }
            );
            if (proto == "\"tcp\"" || proto == "\"udp\"") && r.coin(70) {
                let ports: Vec<&str> = (0..1 + r.below(2)).map(|_| *r.pick(PORTS)).collect();
                let _ = writeln!(s, "ports = [{}]", ports.join(", "));
            }
        }
    }
    for d in 0..DEVICES {
        let _ = writeln!(s, "[[devices]]\nid = \"d{d}\"");
        if r.coin(80) {
            let _ = writeln!(s, "class = \"c{}\"", r.below(2));
        }
        let v4 = r.coin(75);
        let v6 = v4 && r.coin(40);
        let mac = r.coin(70) || (!v4 && !v6);
        if mac {
            let _ = writeln!(s, "mac = \"02:00:00:00:00:{:02x}\"", d + 1);
        }
        if v4 {
            let _ = writeln!(s, "ipv4 = \"10.20.0.{}\"", d + 1);
        }
        if v6 {
            let _ = writeln!(s, "ipv6 = [\"fd00:20::{}\"]", d + 1);
        }
        if r.coin(50) {
            let _ = writeln!(s, "vlan = {}", r.pick(&[0, 20]));
        }
        if r.coin(50) {
            let _ = writeln!(s, "interface = \"{}\"", r.pick(&["dev0", "dev1"]));
        }
        if r.coin(20) {
            let _ = writeln!(s, "mode = \"{}\"", r.pick(MODES));
        }
        if r.coin(20) {
            let _ = writeln!(s, "workflows = [\"w{}\"]", r.below(workflows));
        }
    }
    s
}

const HOSTS: &[&str] = &[
    "10.20.0.1",
    "10.20.0.2",
    "10.20.0.3",
    "10.20.0.4",
    "10.20.0.5",
    "10.20.0.99",
    "10.10.0.1",
    "10.10.0.2",
    "10.10.0.5",
    "10.10.3.3",
    "255.255.255.255",
    "0.0.0.0",
    "192.0.2.1",
];
const HOSTS6: &[&str] = &[
    "fd00:20::1",
    "fd00:20::2",
    "fd00:20::3",
    "fd00:20::4",
    "fd00:20::5",
    "fd00:10::1",
    "fd00:10::9",
    "ff02::1:2",
    "fe80::1",
    "::",
    "2001:db8::1",
];

fn packet(r: &mut Rng) -> PacketDesc {
    let side = if r.coin(60) {
        abi::SIDE_DEVICES
    } else {
        abi::SIDE_UPSTREAM
    };
    let mac_last = r.below(DEVICES + 2) as u8 + 1;
    let src_mac = [2, 0, 0, 0, 0, mac_last];
    let v4 = r.coin(60);
    let host = |r: &mut Rng| -> IpAddr {
        if v4 {
            r.pick(HOSTS).parse().unwrap()
        } else {
            r.pick(HOSTS6).parse().unwrap()
        }
    };
    let kind = match r.below(20) {
        0 => PacketKind::Control,
        1 | 2 => {
            let sha = if r.coin(85) {
                src_mac
            } else {
                [2, 0, 0, 0, 0, 9]
            };
            let spa = match r.pick(HOSTS).parse::<IpAddr>().unwrap() {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
            };
            PacketKind::Arp {
                sha,
                spa,
                tpa: "10.20.0.254".parse().unwrap(),
            }
        }
        _ => {
            let proto = *r.pick(&[
                abi::PROTO_TCP,
                abi::PROTO_TCP,
                abi::PROTO_UDP,
                abi::PROTO_UDP,
                abi::PROTO_ICMP,
                abi::PROTO_ICMPV6,
                47,
            ]);
            let port = |r: &mut Rng| *r.pick(&[53u16, 67, 68, 123, 547, 80, 150, 443, 40000]);
            let (sport, dport) = (port(r), port(r));
            PacketKind::Ip(IpDesc {
                src: host(r),
                dst: host(r),
                proto,
                sport,
                dport,
                tcp_flags: *r.pick(&[0x02u8, 0x02, 0x12, 0x10]),
                icmp_type: *r.pick(&[8u8, 0, 128, 129, 135, 136, 134, 133]),
                nd_target: Some(r.pick(HOSTS6).parse().unwrap()),
                hop_limit: *r.pick(&[64u8, 255, 1]),
                quoted: None,
            })
        }
    };
    let ifindex = 1 + r.below(3) as u32;
    PacketDesc {
        side,
        ifindex,
        // Not behind a bridge: port identity is the datapath's runtime state, not policy.
        port: ifindex,
        // Set from the interface's configuration (see `check_seed`).
        claim_scope: abi::CLAIM_POLICY as u16,
        vlan: *r.pick(&[0u16, 20, 30]),
        src_mac,
        dst_mac: [2, 0, 0, 0, 0, 0xff],
        kind,
        flow: FlowHint::None,
    }
}

fn check_seed(seed: u64) -> Result<(), TestCaseError> {
    let mut r = Rng(seed);
    let text = policy_text(&mut r);
    let Ok(policy) = parse(&[("prop.toml", &text)]) else {
        return Ok(());
    };
    let Ok(compiled) = compile(&policy) else {
        return Ok(());
    };
    let ifindexes: BTreeMap<String, u32> = [("dev0", 1), ("dev1", 2), ("up0", 3)]
        .into_iter()
        .map(|(n, i)| (n.to_string(), i))
        .collect();
    let maps = compiled.map_contents(1, 9, &ifindexes).unwrap();
    let index = MapIndex::new(&maps);
    let mut cx = Context {
        ifindexes,
        quarantine: BTreeMap::new(),
        local: Default::default(),
    };
    let mut states = DeviceStates::default();
    for d in &compiled.devices {
        let q = *r.pick(&[
            abi::QUARANTINE_NONE,
            abi::QUARANTINE_NONE,
            abi::QUARANTINE_RESTRICT,
            abi::QUARANTINE_ISOLATE,
        ]);
        cx.quarantine.insert(d.id.clone(), q);
        states.set_quarantine(d.hash, q);
    }
    for _ in 0..64 {
        let mut pkt = packet(&mut r);
        // What devices behind the interface may claim: its own networks' addresses.
        pkt.claim_scope = maps
            .ifaces
            .iter()
            .find(|(ix, _)| *ix == pkt.ifindex)
            .map_or(abi::CLAIM_POLICY as u16, |(_, c)| c.claim_scope);
        let got = classify_indexed(&index, &states, &pkt);
        let want = evaluate(&policy, &cx, &pkt);
        let got_dev = got
            .device
            .and_then(|h| compiled.device_by_hash(h))
            .map(|d| d.id.clone());
        let got_origin = match got.reason {
            Reason::AllowRule | Reason::Audit => got
                .rule
                .and_then(|id| compiled.rule(id))
                .map(|r| r.origin.clone()),
            _ => None,
        };
        let context = || {
            format!(
                "seed {seed}\npacket {pkt:#?}\nclassify {got:?}\nnaive {want:?}\npolicy:\n{text}"
            )
        };
        prop_assert_eq!(got.reason, want.reason, "{}", context());
        prop_assert_eq!(&got_dev, &want.device, "{}", context());
        prop_assert_eq!(&got_origin, &want.origin, "{}", context());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn classifier_over_maps_agrees_with_naive_evaluator(seed in any::<u64>()) {
        check_seed(seed)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes).to_string();
        prop_assert!(parse(&[("fuzz.toml", &text)]).is_err());
    }

    #[test]
    fn mutated_policies_never_panic(seed in any::<u64>(), cut in 0usize..4000, insert in "[ -~]{0,12}") {
        let mut r = Rng(seed);
        let mut text = policy_text(&mut r);
        let at = (0..=cut.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &insert);
        if let Ok(p) = parse(&[("m.toml", &text)]) {
            let _ = compile(&p);
        }
    }
}

#[test]
fn the_generator_makes_mostly_valid_policies() {
    let valid = (0..100u64)
        .filter(|s| {
            let text = policy_text(&mut Rng(*s));
            parse(&[("p.toml", &text)])
                .ok()
                .is_some_and(|p| compile(&p).is_ok())
        })
        .count();
    assert!(
        valid >= 50,
        "only {valid} of 100 generated policies compile"
    );
}
