//! The real XDP program on crafted frames through BPF_PROG_TEST_RUN, with a small map
//! contents written by hand against the ABI (independent of the policy compiler).

use std::net::Ipv4Addr;

use lazaret::datapath::{Datapath, LoadOptions, MapContents};
use lazaret_abi::*;
use lazaret_tests::frames::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const DEV_MAC: Mac = [0x02, 0, 0, 0, 0, 0x11];
const GW_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
const OTHER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
const DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 11);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 20);
const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 21);
/// BPF_PROG_TEST_RUN delivers frames on the namespace's loopback.
const LO: u32 = 1;

fn dev_id() -> u64 {
    device_id_hash(b"mon-icu-01")
}

/// One monitor allowed to open TCP 2575 to one server.
fn contents(slot: u8, generation: u64) -> MapContents {
    let id = dev_id();
    let device = Device {
        id,
        policy: 0,
        restrict_policy: 0,
        ifindex: IFINDEX_ANY,
        vlan: VLAN_ANY,
        mode: MODE_ENFORCE,
        flags: DEV_F_HAS_MAC | DEV_F_NO_IP6,
        mac: DEV_MAC,
        class: 0,
        ..Device::default()
    };
    MapContents {
        site: SiteConfig {
            generation,
            flags: SITE_F_NEIGHBOR,
            quarantine_policy: 1,
            event_rate: EVENT_RATE_PER_S,
            event_burst: EVENT_BURST,
        },
        dev_mac: vec![(MacKey { slot, _pad: 0, mac: DEV_MAC }, DevRef { id })],
        dev_ip4: vec![(Ip4Key { slot, _pad: [0; 3], addr: DEV_IP.octets() }, DevRef { id })],
        dev_ip6: vec![],
        devices: vec![(DevKey { slot, _pad: [0; 7], id }, device)],
        peer4: vec![(
            PEER_KEY_FIXED_BITS + 32,
            PeerKey4 {
                slot,
                dir: DIR_DEVICE_INIT,
                _pad: [0; 2],
                policy: 0u32.to_be_bytes(),
                addr: SERVER.octets(),
            },
            PeerClass { class: 0 },
        )],
        peer6: vec![],
        ports: vec![(
            PORT_KEY_FULL_BITS,
            PortKey {
                slot,
                _pad: [0; 3],
                class: 0u32.to_be_bytes(),
                proto: PROTO_TCP,
                port: 2575u16.to_be_bytes(),
                _pad2: 0,
            },
            RuleRef { rule: 0, flags: 0 },
        )],
    }
}

fn loaded() -> Datapath {
    let mut dp = Datapath::load(&LoadOptions::default())
        .expect("loading the XDP program needs root (CAP_BPF) and a kernel with BTF");
    let slot = dp.next_slot().expect("slot");
    dp.install(&contents(slot, 1)).expect("install");
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    dp
}

fn stat(dp: &mut Datapath, reason: Reason, side: u8) -> u64 {
    dp.stats().expect("stats")[stats_index(reason, side) as usize]
}

#[test]
fn allowed_syn_passes_and_is_counted() {
    let mut dp = loaded();
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40000, 2575, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowRule, SIDE_DEVICES), 1);
    let slot = dp.active_slot().expect("slot");
    assert_eq!(dp.rule_hits(slot, 0).expect("hits"), 1);
    let c = dp.device_counters(dev_id()).expect("counters");
    assert_eq!((c.allowed_packets, c.denied_packets), (1, 0));
    assert_eq!(c.allowed_bytes, syn.len() as u64);
}

#[test]
fn reply_passes_through_the_flow_and_unsolicited_segment_does_not() {
    let mut dp = loaded();
    // Unsolicited SYN-ACK from upstream: no flow yet.
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    let synack = tcp4(GW_MAC, DEV_MAC, SERVER, DEV_IP, 2575, 40001, TCP_SYN | TCP_ACK);
    assert_eq!(dp.test_run(&synack).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyNoFlow, SIDE_UPSTREAM), 1);
    // The device opens the flow; now the reply passes.
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40001, 2575, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_PASS);
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    assert_eq!(dp.test_run(&synack).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowFlow, SIDE_UPSTREAM), 1);
}

#[test]
fn port_not_allowed_is_dropped() {
    let mut dp = loaded();
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40000, 22, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyNoRule, SIDE_DEVICES), 1);
    assert_eq!(dp.device_counters(dev_id()).expect("c").denied_packets, 1);
}

#[test]
fn peer_not_allowed_is_dropped() {
    let mut dp = loaded();
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, OTHER_SERVER, 40000, 2575, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyNoRule, SIDE_DEVICES), 1);
}

#[test]
fn arp_for_own_binding_passes_and_claiming_another_address_is_spoofing() {
    let mut dp = loaded();
    let own = ethernet([0xff; 6], DEV_MAC, &[], ETH_ARP, &arp(1, DEV_MAC, DEV_IP, [0; 6], Ipv4Addr::new(10, 20, 0, 1)));
    assert_eq!(dp.test_run(&own).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowNeighbor, SIDE_DEVICES), 1);
    // The monitor claims the gateway's address.
    let claim = ethernet([0xff; 6], DEV_MAC, &[], ETH_ARP, &arp(2, DEV_MAC, Ipv4Addr::new(10, 20, 0, 1), [0; 6], Ipv4Addr::new(10, 20, 0, 1)));
    assert_eq!(dp.test_run(&claim).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenySpoof, SIDE_DEVICES), 1);
}

#[test]
fn non_ip_ethertype_is_dropped() {
    let mut dp = loaded();
    let frame = ethernet(GW_MAC, DEV_MAC, &[], 0x88b5, b"local experimental ethertype");
    assert_eq!(dp.test_run(&frame).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyEthertype, SIDE_DEVICES), 1);
}

#[test]
fn managed_ip_from_a_foreign_mac_is_spoofing() {
    let mut dp = loaded();
    let syn = tcp4(OTHER_MAC, GW_MAC, DEV_IP, SERVER, 40000, 2575, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenySpoof, SIDE_DEVICES), 1);
}

#[test]
fn unknown_device_is_denied_by_default() {
    let mut dp = loaded();
    let syn = tcp4(OTHER_MAC, GW_MAC, Ipv4Addr::new(10, 20, 0, 99), SERVER, 40000, 2575, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyUnknown, SIDE_DEVICES), 1);
}

#[test]
fn generation_swap_cuts_flows_the_new_policy_forbids() {
    let mut dp = loaded();
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40002, 2575, TCP_SYN);
    let ack = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40002, 2575, TCP_ACK);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_PASS);
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_PASS);
    // Same policy, new generation: the flow survives.
    let slot = dp.next_slot().expect("slot");
    dp.install(&contents(slot, 2)).expect("install");
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_PASS);
    // A generation without the rule: the flow is re-judged and cut.
    let slot = dp.next_slot().expect("slot");
    let mut c = contents(slot, 3);
    c.ports.clear();
    dp.install(&c).expect("install");
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_DROP);
}

#[test]
fn isolating_a_device_cuts_its_established_flow() {
    let mut dp = loaded();
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40003, 2575, TCP_SYN);
    let ack = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40003, 2575, TCP_ACK);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_PASS);
    dp.set_device_state(dev_id(), DevState { epoch: 1, quarantine: QUARANTINE_ISOLATE, _pad: [0; 3] })
        .expect("state");
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyQuarantine, SIDE_DEVICES), 1);
}
