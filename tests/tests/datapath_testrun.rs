//! The real XDP program on crafted frames through BPF_PROG_TEST_RUN, with a small map
//! contents written by hand against the ABI (independent of the policy compiler).

use std::net::Ipv4Addr;

use lazaret::datapath::Datapath;
use lazaret_abi::*;
use lazaret_tests::{
    frames::*,
    handmade::{self, dev_id, stat, DEV_IP, DEV_MAC, GW_MAC, LO, OTHER_MAC, OTHER_SERVER, SERVER},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn loaded() -> Datapath {
    handmade::loaded(SITE_F_NEIGHBOR)
}

fn contents(slot: u8, generation: u64) -> lazaret::datapath::MapContents {
    handmade::contents(slot, generation, SITE_F_NEIGHBOR)
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
    let synack = tcp4(
        GW_MAC,
        DEV_MAC,
        SERVER,
        DEV_IP,
        2575,
        40001,
        TCP_SYN | TCP_ACK,
    );
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
    let own = ethernet(
        [0xff; 6],
        DEV_MAC,
        &[],
        ETH_ARP,
        &arp(1, DEV_MAC, DEV_IP, [0; 6], Ipv4Addr::new(10, 20, 0, 1)),
    );
    assert_eq!(dp.test_run(&own).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowNeighbor, SIDE_DEVICES), 1);
    // The monitor claims the gateway's address.
    let claim = ethernet(
        [0xff; 6],
        DEV_MAC,
        &[],
        ETH_ARP,
        &arp(
            2,
            DEV_MAC,
            Ipv4Addr::new(10, 20, 0, 1),
            [0; 6],
            Ipv4Addr::new(10, 20, 0, 1),
        ),
    );
    assert_eq!(dp.test_run(&claim).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenySpoof, SIDE_DEVICES), 1);
}

#[test]
fn non_ip_ethertype_is_dropped() {
    let mut dp = loaded();
    let frame = ethernet(
        GW_MAC,
        DEV_MAC,
        &[],
        0x88b5,
        b"local experimental ethertype",
    );
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
    let syn = tcp4(
        OTHER_MAC,
        GW_MAC,
        Ipv4Addr::new(10, 20, 0, 99),
        SERVER,
        40000,
        2575,
        TCP_SYN,
    );
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
    dp.set_device_state(
        dev_id(),
        DevState {
            epoch: 1,
            quarantine: QUARANTINE_ISOLATE,
            _pad: [0; 3],
        },
    )
    .expect("state");
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyQuarantine, SIDE_DEVICES), 1);
}
