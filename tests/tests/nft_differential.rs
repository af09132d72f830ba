//! Differential test of the nftables dataplane: a generated policy is rendered into a real
//! gateway namespace; a generated list of flows (TCP connects and UDP exchanges, opened by
//! devices, by unknown hosts, and by servers towards devices) crosses it, and each outcome
//! (the flow opens and its replies come back, or not) must equal the reference classifier's
//! verdict on the flow's initiating packet. Bounded: at most `FLOWS` flows, each given
//! `PROBE` to answer, on a fixed seed so a failure replays.

use std::{
    net::{IpAddr, Ipv4Addr},
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

const FLOWS: usize = 72;
const PROBE: Duration = Duration::from_millis(300);
/// Real clinical ports (CLINICAL-FLOWS.md): HL7/MLLP, syslog, CARESCAPE time sync, DICOM,
/// HTTPS, SSH, nurse call, SNMP, IntelliVue export, NTP.
const PORTS: [u16; 10] = [2575, 514, 2000, 104, 11112, 443, 22, 5005, 161, 24105];
const SERVERS: [[u8; 4]; 4] = [
    [10, 10, 0, 20],
    [10, 10, 0, 21],
    [10, 10, 0, 22],
    [10, 10, 0, 30],
];
/// Devices 10.20.0.11–.18 are managed; .19 is not in the policy.
const HOSTS: std::ops::RangeInclusive<u8> = 11..=19;

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
peer = "10.10.0.20/32"
proto = "tcp"
ports = [2575]
[workflows.syslog]
description = "ATNA syslog"
[[workflows.syslog.rules]]
peer = "10.10.0.0/24"
proto = "udp"
ports = [514]
[workflows.timesync]
description = "central station time sync"
[[workflows.timesync.rules]]
peer = "10.10.0.21/32"
proto = "udp"
ports = [2000]
initiator = "peer"
[workflows.export]
description = "IntelliVue data export"
[[workflows.export.rules]]
peer = "10.10.0.0/30"
proto = "udp"
ports = [24105]
initiator = "peer"
[workflows.dicom]
description = "DICOM to PACS"
[[workflows.dicom.rules]]
peer = "10.10.0.22/32"
proto = "tcp"
ports = [104, 11112]
[workflows.pumpserver]
description = "pump server"
[[workflows.pumpserver.rules]]
peer = "10.10.0.20/31"
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
            "[[devices]]\nid = \"dev-{i}\"\nclass = \"{class}\"\nipv4 = \"10.20.0.{}\"\ninterface = \"{}\"\n",
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
    let life = Duration::from_secs(90);
    tcp_echo(&net.server, &PORTS, life)?;
    let server_addrs: Vec<IpAddr> = SERVERS.iter().map(|a| IpAddr::from(*a)).collect();
    let host_addrs: Vec<IpAddr> = HOSTS.map(|h| IpAddr::from([10, 20, 0, h])).collect();
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
    let device_mac = net.device_mac;
    let server_mac = lazaret_tests::netns::mac_of(&net.server, &net.server_if)?;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut passed, mut dropped) = (0, 0);
    let mut mismatches = Vec::new();
    for i in 0..FLOWS {
        let host = Ipv4Addr::new(10, 20, 0, rng.pick(&HOSTS.collect::<Vec<_>>()));
        let server = Ipv4Addr::from(rng.pick(&SERVERS));
        let port = rng.pick(&PORTS);
        let tcp = rng.next().is_multiple_of(2);
        // One flow in four is opened by the server towards the device.
        let from_server = rng.next().is_multiple_of(4);
        let (src, dst) = if from_server {
            (server, host)
        } else {
            (host, server)
        };
        let ip = IpDesc {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            proto: if tcp { PROTO_TCP } else { PROTO_UDP },
            sport: 40000 + i as u16,
            dport: port,
            tcp_flags: if tcp { TCP_SYN } else { 0 },
            icmp_type: 0,
            nd_target: None,
        };
        let pkt = PacketDesc {
            side: if from_server {
                SIDE_UPSTREAM
            } else {
                SIDE_DEVICES
            },
            ifindex: if from_server { gw_up } else { gw_dev },
            vlan: VLAN_UNTAGGED,
            src_mac: if from_server { server_mac } else { device_mac },
            dst_mac: [0; 6],
            kind: PacketKind::Ip(IpDesc {
                src: IpAddr::V4(src),
                dst: IpAddr::V4(dst),
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
            src_mac: if from_server { device_mac } else { server_mac },
            kind: PacketKind::Ip(IpDesc {
                src: IpAddr::V4(dst),
                dst: IpAddr::V4(src),
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
            tcp_probe(ns, IpAddr::V4(src), IpAddr::V4(dst), port, PROBE)?
        } else {
            udp_probe(ns, IpAddr::V4(src), IpAddr::V4(dst), port, PROBE)?
        };
        if got {
            passed += 1;
        } else {
            dropped += 1;
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
        passed >= 8 && dropped >= 8,
        "passed {passed}, dropped {dropped}"
    );
    Ok(())
}
