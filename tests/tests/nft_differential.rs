//! Differential test of the nftables dataplane: a generated policy is rendered into a real
//! gateway namespace; a generated list of flows (TCP connects and UDP exchanges, opened by
//! devices, by unknown hosts, and by servers towards devices) crosses it, and each outcome
//! (the flow opens and its replies come back, or not) must equal the reference classifier's
//! verdict on the flow's initiating packet. Bounded: at most `FLOWS` flows, each given
//! `PROBE` to answer, on a fixed seed so a failure replays.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::Result;
use lazaret::policy::{
    classify,
    classify::{TCP_ACK, TCP_SYN},
    DeviceStates, FlowHint, IpDesc, PacketDesc, PacketKind,
};
use lazaret_abi::*;
use lazaret_tests::{netns::Routed, nftlab::*};

const FLOWS: usize = 96;
const PROBE: Duration = Duration::from_millis(300);
/// Real clinical ports (docs/clinical-flows.md): HL7/MLLP, syslog, CARESCAPE time sync, DICOM,
/// HTTPS, SSH, nurse call, SNMP, IntelliVue export, NTP.
const PORTS: [u16; 10] = [2575, 514, 2000, 104, 11112, 443, 22, 5005, 161, 24105];
const SERVERS: [[u8; 4]; 4] = [
    [10, 10, 0, 20],
    [10, 10, 0, 21],
    [10, 10, 0, 22],
    [10, 10, 0, 30],
];
/// Flows shaped like the policy's workflows: (server, port, TCP?, opened by the server?).
const SHAPED: [(u8, u16, bool, bool); 6] = [
    (20, 2575, true, false),
    (30, 514, false, false),
    (21, 2000, false, true),
    (22, 104, true, false),
    (22, 11112, true, false),
    (21, 443, true, false),
];
/// Devices 10.20.0.11–.18 are managed; .19 is not in the policy.
const HOSTS: std::ops::RangeInclusive<u8> = 11..=19;

/// fd00:NET::HOST, written with the decimal digits of the IPv4 lab's addresses.
fn v6(net: u8, host: u8) -> Ipv6Addr {
    format!("fd00:{net}::{host}")
        .parse()
        .unwrap_or(Ipv6Addr::UNSPECIFIED)
}

/// A small deterministic generator (xorshift), so the flow list is the same every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

fn policy(net: &Routed) -> String {
    let mut t = format!(
        r#"
[site]
name = "lab"
unknown_devices = "deny"
[site.interfaces.{dev}]
side = "devices"
[site.interfaces.{up}]
side = "upstream"
[site.essentials]
dhcp = false
dns = false
ntp = false
[site.quarantine]
allow = [{{ peer = "10.10.0.30/32", proto = "tcp", ports = [22] }}]
[classes.monitor]
description = "bedside monitors"
workflows = ["hl7", "syslog", "timesync", "export"]
[classes.modality]
description = "imaging"
workflows = ["dicom", "syslog"]
[classes.pump]
description = "infusion pumps"
workflows = ["pumpserver"]
mode = "audit"
[workflows.hl7]
description = "HL7 results"
[[workflows.hl7.rules]]
peer = ["10.10.0.20/32", "fd00:10::20/128"]
proto = "tcp"
ports = [2575]
[workflows.syslog]
description = "ATNA syslog"
[[workflows.syslog.rules]]
peer = ["10.10.0.0/24", "fd00:10::/120"]
proto = "udp"
ports = [514]
[workflows.timesync]
description = "central station time sync"
[[workflows.timesync.rules]]
peer = ["10.10.0.21/32", "fd00:10::21/128"]
proto = "udp"
ports = [2000]
initiator = "peer"
[workflows.export]
description = "IntelliVue data export"
[[workflows.export.rules]]
peer = ["10.10.0.0/30", "fd00:10::/126"]
proto = "udp"
ports = [24105]
initiator = "peer"
[workflows.dicom]
description = "DICOM to PACS"
[[workflows.dicom.rules]]
peer = ["10.10.0.22/32", "fd00:10::22/128"]
proto = "tcp"
ports = [104, 11112]
[workflows.pumpserver]
description = "pump server"
[[workflows.pumpserver.rules]]
peer = ["10.10.0.20/31", "fd00:10::20/127"]
proto = "tcp"
ports = [443]
"#,
        dev = net.gw_dev_if,
        up = net.gw_up_if,
    );
    let classes = [
        "monitor", "monitor", "monitor", "modality", "modality", "pump", "monitor", "modality",
    ];
    for (i, class) in classes.iter().enumerate() {
        t.push_str(&format!(
            "[[devices]]\nid = \"dev-{i}\"\nclass = \"{class}\"\nipv4 = \"10.20.0.{}\"\nipv6 = [\"fd00:20::{}\"]\ninterface = \"{}\"\n",
            11 + i,
            11 + i,
            net.gw_dev_if
        ));
    }
    t
}

#[test]
fn nftables_outcomes_equal_the_reference_classifier() -> Result<()> {
    let net = Routed::new()?;
    for h in HOSTS.skip(1) {
        net.device.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.20.0.{h}/24"),
            "dev",
            &net.device_if,
        ])?;
    }
    for s in &SERVERS[1..] {
        let a = Ipv4Addr::from(*s);
        net.server.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            &net.server_if,
        ])?;
    }
    // IPv6 beside IPv4: fd00:20::H for 10.20.0.H, fd00:10::S for 10.10.0.S. Neighbors on
    // the device link are static: the lab's devices have no MAC in the policy, so their
    // link-local neighbor discovery would be (rightly) an unknown device's.
    let gw_mac = lazaret_tests::netns::mac_of(&net.gateway, &net.gw_dev_if)?;
    let fmt = lazaret_tests::daemon::fmt_mac;
    net.gateway
        .set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
    net.gateway.exec(&[
        "ip",
        "addr",
        "add",
        "fd00:20::1/64",
        "dev",
        &net.gw_dev_if,
        "nodad",
    ])?;
    net.gateway.exec(&[
        "ip",
        "addr",
        "add",
        "fd00:10::1/64",
        "dev",
        &net.gw_up_if,
        "nodad",
    ])?;
    for h in HOSTS {
        let a = v6(20, h).to_string();
        net.device.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{a}/64"),
            "dev",
            &net.device_if,
            "nodad",
        ])?;
        net.gateway.exec(&[
            "ip",
            "neigh",
            "replace",
            &a,
            "lladdr",
            &fmt(net.device_mac),
            "dev",
            &net.gw_dev_if,
            "nud",
            "permanent",
        ])?;
    }
    net.device.exec(&[
        "ip",
        "neigh",
        "replace",
        "fd00:20::1",
        "lladdr",
        &fmt(gw_mac),
        "dev",
        &net.device_if,
        "nud",
        "permanent",
    ])?;
    net.device
        .exec(&["ip", "-6", "route", "add", "default", "via", "fd00:20::1"])?;
    // Static on the upstream link too: right after the veths come up their link-local
    // addresses are still tentative, and neighbor discovery would outlast a probe.
    let gw_up_mac = lazaret_tests::netns::mac_of(&net.gateway, &net.gw_up_if)?;
    let srv_mac = lazaret_tests::netns::mac_of(&net.server, &net.server_if)?;
    net.server.exec(&[
        "ip",
        "neigh",
        "replace",
        "fd00:10::1",
        "lladdr",
        &fmt(gw_up_mac),
        "dev",
        &net.server_if,
        "nud",
        "permanent",
    ])?;
    for s in &SERVERS {
        let a = v6(10, s[3]).to_string();
        net.server.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{a}/64"),
            "dev",
            &net.server_if,
            "nodad",
        ])?;
        net.gateway.exec(&[
            "ip",
            "neigh",
            "replace",
            &a,
            "lladdr",
            &fmt(srv_mac),
            "dev",
            &net.gw_up_if,
            "nud",
            "permanent",
        ])?;
    }
    net.server
        .exec(&["ip", "-6", "route", "add", "default", "via", "fd00:10::1"])?;

    let life = Duration::from_secs(90);
    tcp_echo(&net.server, &PORTS, life)?;
    let server_addrs: Vec<IpAddr> = SERVERS
        .iter()
        .flat_map(|a| [IpAddr::from(*a), IpAddr::V6(v6(10, a[3]))])
        .collect();
    let host_addrs: Vec<IpAddr> = HOSTS
        .flat_map(|h| [IpAddr::from([10, 20, 0, h]), IpAddr::V6(v6(20, h))])
        .collect();
    udp_echo(&net.server, &server_addrs, &PORTS, life)?;
    tcp_echo(&net.device, &PORTS, life)?;
    udp_echo(&net.device, &host_addrs, &PORTS, life)?;

    let ifaces = [net.gw_dev_if.as_str(), net.gw_up_if.as_str()];
    let m = contents(&policy(&net), &net.gateway, &ifaces)?;
    // dev-6 is isolated: only its quarantine profile applies.
    let mut states = DeviceStates::default();
    let isolated = m
        .dev_ip4
        .iter()
        .find(|(k, _)| k.addr == [10, 20, 0, 17])
        .map(|(_, r)| r.id)
        .ok_or_else(|| anyhow::anyhow!("dev-6 missing"))?;
    states.set_quarantine(isolated, QUARANTINE_ISOLATE);
    let table = render(&m, &states, &net.gateway, 1)?;
    nft_in(&net.gateway).apply(&table)?;
    let gw_dev = ifindex(&net.gateway, &net.gw_dev_if)?;
    let gw_up = ifindex(&net.gateway, &net.gw_up_if)?;
    // What devices behind an interface may own by first use, as its configuration says.
    let scope_of = |ix: u32| {
        m.ifaces
            .iter()
            .find(|(i, _)| *i == ix)
            .map_or(CLAIM_POLICY as u16, |(_, c)| c.claim_scope)
    };
    let device_mac = net.device_mac;
    let server_mac = lazaret_tests::netns::mac_of(&net.server, &net.server_if)?;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut passed, mut dropped) = (0, 0);
    let (mut passed6, mut dropped6) = (0, 0);
    let mut mismatches = Vec::new();
    for i in 0..FLOWS {
        let h = rng.pick(&HOSTS.collect::<Vec<_>>());
        let (mut sv, mut port) = (rng.pick(&SERVERS), rng.pick(&PORTS));
        let mut tcp = rng.next().is_multiple_of(2);
        // One flow in four is opened by the server towards the device; one in three is IPv6.
        let mut from_server = rng.next().is_multiple_of(4);
        // Half the flows take the shape of a workflow (server, port, protocol, opener), so
        // both outcomes are well represented; whether it passes still depends on the host.
        if rng.next().is_multiple_of(2) {
            let (last, p, t, f) = rng.pick(&SHAPED);
            sv = [10, 10, 0, last];
            (port, tcp, from_server) = (p, t, f);
        }
        let (host, server) = if rng.next().is_multiple_of(3) {
            (IpAddr::V6(v6(20, h)), IpAddr::V6(v6(10, sv[3])))
        } else {
            (IpAddr::from([10, 20, 0, h]), IpAddr::from(sv))
        };
        let (src, dst) = if from_server {
            (server, host)
        } else {
            (host, server)
        };
        let ip = IpDesc {
            src,
            dst,
            proto: if tcp { PROTO_TCP } else { PROTO_UDP },
            sport: 40000 + i as u16,
            dport: port,
            tcp_flags: if tcp { TCP_SYN } else { 0 },
            icmp_type: 0,
            nd_target: None,
            hop_limit: 64,
            quoted: None,
        };
        let pkt = PacketDesc {
            side: if from_server {
                SIDE_UPSTREAM
            } else {
                SIDE_DEVICES
            },
            ifindex: if from_server { gw_up } else { gw_dev },
            port: if from_server { gw_up } else { gw_dev },
            claim_scope: scope_of(if from_server { gw_up } else { gw_dev }),
            vlan: VLAN_UNTAGGED,
            src_mac: if from_server { server_mac } else { device_mac },
            dst_mac: [0; 6],
            kind: PacketKind::Ip(IpDesc {
                src,
                dst,
                proto: if tcp { PROTO_TCP } else { PROTO_UDP },
                sport: 40000 + i as u16,
                dport: port,
                tcp_flags: if tcp {
                    lazaret::policy::classify::TCP_SYN
                } else {
                    0
                },
                icmp_type: 0,
                nd_target: None,
                hop_limit: 64,
                quoted: None,
            }),
            flow: FlowHint::None,
        };
        // The flow opens if its first packet passes and so does the first reply, which
        // travels a flow entry when the first packet created one.
        let first = classify(&m, &states, &pkt);
        let reply = PacketDesc {
            side: if from_server {
                SIDE_DEVICES
            } else {
                SIDE_UPSTREAM
            },
            ifindex: if from_server { gw_dev } else { gw_up },
            port: if from_server { gw_dev } else { gw_up },
            claim_scope: scope_of(if from_server { gw_dev } else { gw_up }),
            src_mac: if from_server { device_mac } else { server_mac },
            kind: PacketKind::Ip(IpDesc {
                src: dst,
                dst: src,
                sport: port,
                dport: 40000 + i as u16,
                tcp_flags: if tcp { TCP_SYN | TCP_ACK } else { 0 },
                ..ip
            }),
            flow: match first.reason {
                Reason::AllowRule | Reason::Audit | Reason::Learn => FlowHint::Current {
                    rule: first.rule.unwrap_or(NO_RULE),
                },
                _ => FlowHint::None,
            },
            ..pkt
        };
        let second = classify(&m, &states, &reply);
        let expected = if first.passes() {
            second.clone()
        } else {
            first.clone()
        };
        let ns = if from_server {
            &net.server
        } else {
            &net.device
        };
        let got = if tcp {
            tcp_probe(ns, src, dst, port, PROBE)?
        } else {
            udp_probe(ns, src, dst, port, PROBE)?
        };
        match (got, src.is_ipv6()) {
            (true, false) => passed += 1,
            (false, false) => dropped += 1,
            (true, true) => passed6 += 1,
            (false, true) => dropped6 += 1,
        }
        if std::env::var_os("LZ_DIFF_TRACE").is_some() {
            eprintln!(
                "{i} {} {src} -> {dst}:{port} got {got} ref {:?}",
                if tcp { "tcp" } else { "udp" },
                expected.reason
            );
        }
        if got != expected.passes() {
            mismatches.push(format!(
                "{} {src} -> {dst}:{port}: nftables {}, reference {:?}",
                if tcp { "tcp" } else { "udp" },
                if got { "passed" } else { "dropped" },
                expected.reason
            ));
        }
    }
    if !mismatches.is_empty() {
        eprintln!("{}", list_text(&net.gateway)?);
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // The generated list must exercise both outcomes, or the comparison proves little.
    assert!(
        passed6 >= 4 && dropped6 >= 4,
        "IPv6: passed {passed6}, dropped {dropped6}"
    );
    assert!(
        passed >= 8 && dropped >= 8,
        "passed {passed}, dropped {dropped}"
    );
    Ok(())
}
