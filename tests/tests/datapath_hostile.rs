//! Hostile and malformed frames through the real XDP program (BPF_PROG_TEST_RUN): each case
//! of issue 4's parsing list is a named test asserting the action and the counted reason.

use std::net::{Ipv4Addr, Ipv6Addr};

use lazaret::datapath::Datapath;
use lazaret_abi::*;
use lazaret_tests::{
    frames::*,
    handmade::{self, stat, DEV_IP, DEV_IP6, DEV_MAC, GW_MAC, LO, NTP, OTHER_MAC, SERVER, SERVER6},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn dp() -> Datapath {
    handmade::loaded(SITE_F_NEIGHBOR)
}

fn syn_payload() -> Vec<u8> {
    tcp(40000, 2575, TCP_SYN, &[])
}

/// Runs a frame and checks both the action and that exactly one packet was counted with
/// the expected reason on the device side.
fn expect(dp: &mut Datapath, frame: &[u8], action: u32, reason: Reason) {
    let before = stat(dp, reason, SIDE_DEVICES);
    assert_eq!(
        dp.test_run(frame).expect("test run"),
        action,
        "action for {reason:?}"
    );
    assert_eq!(
        stat(dp, reason, SIDE_DEVICES),
        before + 1,
        "counted as {reason:?}"
    );
}

fn v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8], o: &Ipv4Opts) -> Vec<u8> {
    ethernet(
        GW_MAC,
        DEV_MAC,
        &[],
        ETH_IPV4,
        &ipv4(src, dst, proto, l4, o),
    )
}

fn v6(exts: &[Ext], proto: u8, l4: &[u8]) -> Vec<u8> {
    ethernet(
        GW_MAC,
        DEV_MAC,
        &[],
        ETH_IPV6,
        &ipv6(DEV_IP6, SERVER6, exts, proto, l4),
    )
}

// === Ethernet and VLAN ===

#[test]
fn single_8021q_tag_is_parsed() {
    let mut dp = dp();
    let ip = ipv4(DEV_IP, SERVER, 6, &syn_payload(), &Ipv4Opts::default());
    let f = ethernet(GW_MAC, DEV_MAC, &[(ETH_8021Q, 20)], ETH_IPV4, &ip);
    expect(&mut dp, &f, XDP_PASS, Reason::AllowRule);
}

#[test]
fn qinq_double_tag_is_parsed() {
    let mut dp = dp();
    let ip = ipv4(DEV_IP, SERVER, 6, &syn_payload(), &Ipv4Opts::default());
    let f = ethernet(
        GW_MAC,
        DEV_MAC,
        &[(ETH_8021AD, 100), (ETH_8021Q, 20)],
        ETH_IPV4,
        &ip,
    );
    expect(&mut dp, &f, XDP_PASS, Reason::AllowRule);
}

#[test]
fn three_vlan_tags_are_dropped() {
    let mut dp = dp();
    let ip = ipv4(DEV_IP, SERVER, 6, &syn_payload(), &Ipv4Opts::default());
    let f = ethernet(
        GW_MAC,
        DEV_MAC,
        &[(ETH_8021AD, 1), (ETH_8021Q, 2), (ETH_8021Q, 3)],
        ETH_IPV4,
        &ip,
    );
    expect(&mut dp, &f, XDP_DROP, Reason::DenyVlanDepth);
}

#[test]
fn frame_with_only_an_ethernet_header_is_dropped() {
    let mut dp = dp();
    let mut f = Vec::new();
    f.extend_from_slice(&GW_MAC);
    f.extend_from_slice(&DEV_MAC);
    f.extend_from_slice(&ETH_IPV4.to_be_bytes());
    expect(&mut dp, &f, XDP_DROP, Reason::DenyMalformed);
}

#[test]
fn truncated_vlan_tag_is_dropped() {
    let mut dp = dp();
    let mut f = Vec::new();
    f.extend_from_slice(&GW_MAC);
    f.extend_from_slice(&DEV_MAC);
    f.extend_from_slice(&ETH_8021Q.to_be_bytes());
    f.extend_from_slice(&[0x00]);
    expect(&mut dp, &f, XDP_DROP, Reason::DenyMalformed);
}

#[test]
fn unknown_ethertype_is_dropped() {
    let mut dp = dp();
    let f = ethernet(GW_MAC, DEV_MAC, &[], 0x88b5, b"experimental");
    expect(&mut dp, &f, XDP_DROP, Reason::DenyEthertype);
}

#[test]
fn lldp_is_dropped_unless_the_site_allows_link_local_control() {
    let lldp_dst = [0x01, 0x80, 0xc2, 0, 0, 0x0e];
    let f = ethernet(lldp_dst, DEV_MAC, &[], 0x88cc, b"chassis id tlv");
    let mut dp = dp();
    expect(&mut dp, &f, XDP_DROP, Reason::DenyEthertype);
    let mut dp = handmade::loaded(SITE_F_NEIGHBOR | SITE_F_L2_CONTROL);
    expect(&mut dp, &f, XDP_PASS, Reason::AllowControl);
}

// === ARP ===

#[test]
fn arp_request_for_own_binding_passes() {
    let mut dp = dp();
    let a = arp(1, DEV_MAC, DEV_IP, [0; 6], Ipv4Addr::new(10, 20, 0, 1));
    expect(
        &mut dp,
        &ethernet([0xff; 6], DEV_MAC, &[], ETH_ARP, &a),
        XDP_PASS,
        Reason::AllowNeighbor,
    );
}

#[test]
fn arp_probe_from_unspecified_address_passes() {
    let mut dp = dp();
    let a = arp(1, DEV_MAC, Ipv4Addr::UNSPECIFIED, [0; 6], DEV_IP);
    expect(
        &mut dp,
        &ethernet([0xff; 6], DEV_MAC, &[], ETH_ARP, &a),
        XDP_PASS,
        Reason::AllowNeighbor,
    );
}

#[test]
fn arp_claiming_the_gateway_address_is_spoofing() {
    let mut dp = dp();
    let gw = Ipv4Addr::new(10, 20, 0, 1);
    let a = arp(2, DEV_MAC, gw, [0xff; 6], gw);
    expect(
        &mut dp,
        &ethernet([0xff; 6], DEV_MAC, &[], ETH_ARP, &a),
        XDP_DROP,
        Reason::DenySpoof,
    );
}

#[test]
fn arp_claiming_a_managed_address_from_another_mac_is_spoofing() {
    let mut dp = dp();
    let a = arp(2, OTHER_MAC, DEV_IP, [0xff; 6], DEV_IP);
    expect(
        &mut dp,
        &ethernet([0xff; 6], OTHER_MAC, &[], ETH_ARP, &a),
        XDP_DROP,
        Reason::DenySpoof,
    );
}

#[test]
fn arp_whose_sender_differs_from_the_frame_source_is_spoofing() {
    let mut dp = dp();
    let a = arp(2, OTHER_MAC, DEV_IP, [0xff; 6], DEV_IP);
    expect(
        &mut dp,
        &ethernet([0xff; 6], DEV_MAC, &[], ETH_ARP, &a),
        XDP_DROP,
        Reason::DenySpoof,
    );
}

#[test]
fn arp_for_ipv6_protocol_type_is_malformed() {
    let mut dp = dp();
    let mut a = arp(1, DEV_MAC, DEV_IP, [0; 6], DEV_IP);
    a[2..4].copy_from_slice(&ETH_IPV6.to_be_bytes());
    expect(
        &mut dp,
        &ethernet([0xff; 6], DEV_MAC, &[], ETH_ARP, &a),
        XDP_DROP,
        Reason::DenyMalformed,
    );
}

// === IPv4 ===

#[test]
fn ipv4_ihl_below_five_is_dropped() {
    let mut dp = dp();
    let o = Ipv4Opts {
        ihl_words: 4,
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &syn_payload(), &o),
        XDP_DROP,
        Reason::DenyMalformed,
    );
}

#[test]
fn ipv4_ihl_beyond_the_frame_is_dropped() {
    let mut dp = dp();
    // IHL 15 (60 bytes) while the packet claims 40 bytes in total.
    let o = Ipv4Opts {
        ihl_words: 15,
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &syn_payload(), &o),
        XDP_DROP,
        Reason::DenyMalformed,
    );
}

#[test]
fn ipv4_options_are_skipped_to_reach_the_ports() {
    let mut dp = dp();
    let o = Ipv4Opts {
        ihl_words: 6,
        options: vec![1, 1, 1, 0],
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &syn_payload(), &o),
        XDP_PASS,
        Reason::AllowRule,
    );
    // The same options with a denied port: the ports really were read after the options.
    let denied = tcp(40000, 22, TCP_SYN, &[]);
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &denied, &o),
        XDP_DROP,
        Reason::DenyNoRule,
    );
}

#[test]
fn ipv4_total_length_beyond_the_frame_is_dropped() {
    let mut dp = dp();
    let o = Ipv4Opts {
        total_len: Some(1400),
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &syn_payload(), &o),
        XDP_DROP,
        Reason::DenyMalformed,
    );
}

#[test]
fn ipv4_total_length_shorter_than_the_header_is_dropped() {
    let mut dp = dp();
    let o = Ipv4Opts {
        total_len: Some(12),
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &syn_payload(), &o),
        XDP_DROP,
        Reason::DenyMalformed,
    );
}

#[test]
fn later_fragment_of_an_allowed_train_passes() {
    let mut dp = dp();
    let first = Ipv4Opts {
        id: 7,
        more_fragments: true,
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &syn_payload(), &first),
        XDP_PASS,
        Reason::AllowRule,
    );
    let later = Ipv4Opts {
        id: 7,
        frag_offset: 3,
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, b"rest of the segment.....", &later),
        XDP_PASS,
        Reason::AllowRule,
    );
}

#[test]
fn later_fragment_without_an_allowed_first_is_dropped() {
    let mut dp = dp();
    let later = Ipv4Opts {
        id: 8,
        frag_offset: 3,
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, b"orphan fragment.........", &later),
        XDP_DROP,
        Reason::DenyFragment,
    );
}

#[test]
fn later_fragment_of_a_denied_train_is_dropped() {
    let mut dp = dp();
    let first = Ipv4Opts {
        id: 9,
        more_fragments: true,
        ..Ipv4Opts::default()
    };
    let denied = tcp(40000, 22, TCP_SYN, &[]);
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &denied, &first),
        XDP_DROP,
        Reason::DenyNoRule,
    );
    let later = Ipv4Opts {
        id: 9,
        frag_offset: 3,
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, b"rest of the segment.....", &later),
        XDP_DROP,
        Reason::DenyFragment,
    );
}

#[test]
fn first_fragment_too_short_for_the_tcp_header_is_dropped() {
    let mut dp = dp();
    let first = Ipv4Opts {
        id: 10,
        more_fragments: true,
        ..Ipv4Opts::default()
    };
    let short = &syn_payload()[..8];
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, short, &first),
        XDP_DROP,
        Reason::DenyFragment,
    );
}

#[test]
fn tcp_fragment_at_offset_eight_is_dropped() {
    // RFC 1858: a fragment at offset 8 can rewrite the TCP flags of the first fragment.
    let mut dp = dp();
    let o = Ipv4Opts {
        id: 11,
        frag_offset: 1,
        ..Ipv4Opts::default()
    };
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, b"\x00\x00\x00\x00\x50\x02\x00\x00", &o),
        XDP_DROP,
        Reason::DenyFragment,
    );
}

// === IPv6 ===

#[test]
fn ipv6_with_two_extension_headers_reaches_the_ports() {
    let mut dp = dp();
    let f = v6(&[Ext::HopByHop, Ext::DestOpts], 6, &syn_payload());
    expect(&mut dp, &f, XDP_PASS, Reason::AllowRule);
    let denied = tcp(40000, 22, TCP_SYN, &[]);
    expect(
        &mut dp,
        &v6(&[Ext::HopByHop, Ext::DestOpts], 6, &denied),
        XDP_DROP,
        Reason::DenyNoRule,
    );
}

#[test]
fn ipv6_extension_chain_beyond_the_bound_is_dropped() {
    let mut dp = dp();
    let chain = vec![Ext::DestOpts; MAX_IPV6_EXT_HEADERS + 1];
    expect(
        &mut dp,
        &v6(&chain, 6, &syn_payload()),
        XDP_DROP,
        Reason::DenyIpv6Ext,
    );
}

#[test]
fn ipv6_extension_chain_at_the_bound_is_walked() {
    let mut dp = dp();
    let chain = vec![Ext::DestOpts; MAX_IPV6_EXT_HEADERS];
    expect(
        &mut dp,
        &v6(&chain, 6, &syn_payload()),
        XDP_PASS,
        Reason::AllowRule,
    );
}

#[test]
fn ipv6_unwalked_extension_header_is_dropped() {
    let mut dp = dp();
    // 135: mobility header, an extension header lazaret does not walk.
    let f = v6(&[], 135, &[59, 0, 0, 0, 0, 0, 0, 0]);
    expect(&mut dp, &f, XDP_DROP, Reason::DenyIpv6Ext);
}

#[test]
fn ipv6_first_fragment_without_the_transport_header_is_dropped() {
    let mut dp = dp();
    let f = v6(
        &[Ext::Fragment {
            offset: 0,
            more: true,
            id: 77,
        }],
        6,
        &syn_payload()[..8],
    );
    expect(&mut dp, &f, XDP_DROP, Reason::DenyFragment);
}

#[test]
fn ipv6_later_fragment_follows_its_train() {
    let mut dp = dp();
    let first = v6(
        &[Ext::Fragment {
            offset: 0,
            more: true,
            id: 78,
        }],
        6,
        &syn_payload(),
    );
    expect(&mut dp, &first, XDP_PASS, Reason::AllowRule);
    let later = v6(
        &[Ext::Fragment {
            offset: 4,
            more: false,
            id: 78,
        }],
        6,
        b"rest....",
    );
    expect(&mut dp, &later, XDP_PASS, Reason::AllowRule);
    let orphan = v6(
        &[Ext::Fragment {
            offset: 4,
            more: false,
            id: 79,
        }],
        6,
        b"rest....",
    );
    expect(&mut dp, &orphan, XDP_DROP, Reason::DenyFragment);
}

#[test]
fn ipv6_payload_length_beyond_the_frame_is_dropped() {
    let mut dp = dp();
    let mut ip = ipv6(DEV_IP6, SERVER6, &[], 6, &syn_payload());
    ip[4..6].copy_from_slice(&1400u16.to_be_bytes());
    expect(
        &mut dp,
        &ethernet(GW_MAC, DEV_MAC, &[], ETH_IPV6, &ip),
        XDP_DROP,
        Reason::DenyMalformed,
    );
}

// === NDP ===

fn nd(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> Vec<u8> {
    ethernet(
        [0x33, 0x33, 0, 0, 0, 1],
        DEV_MAC,
        &[],
        ETH_IPV6,
        &ipv6(src, dst, &[], 58, msg),
    )
}

#[test]
fn neighbor_solicitation_from_own_address_passes() {
    let mut dp = dp();
    let ns = icmpv6_nd(135, Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 1));
    expect(
        &mut dp,
        &nd(DEV_IP6, "ff02::1:ff00:1".parse().expect("addr"), &ns),
        XDP_PASS,
        Reason::AllowNeighbor,
    );
}

#[test]
fn neighbor_solicitation_from_link_local_with_own_mac_passes() {
    let mut dp = dp();
    let ns = icmpv6_nd(135, DEV_IP6);
    let ll: Ipv6Addr = "fe80::11".parse().expect("addr");
    expect(
        &mut dp,
        &nd(ll, "ff02::1:ff00:11".parse().expect("addr"), &ns),
        XDP_PASS,
        Reason::AllowNeighbor,
    );
}

#[test]
fn neighbor_advertisement_for_another_address_is_spoofing() {
    let mut dp = dp();
    let na = icmpv6_nd(136, SERVER6);
    expect(
        &mut dp,
        &nd(DEV_IP6, "ff02::1".parse().expect("addr"), &na),
        XDP_DROP,
        Reason::DenySpoof,
    );
}

#[test]
fn neighbor_advertisement_for_own_address_passes() {
    let mut dp = dp();
    let na = icmpv6_nd(136, DEV_IP6);
    expect(
        &mut dp,
        &nd(DEV_IP6, "ff02::1".parse().expect("addr"), &na),
        XDP_PASS,
        Reason::AllowNeighbor,
    );
}

#[test]
fn router_advertisement_from_a_device_port_is_rogue() {
    let mut dp = dp();
    let ra = icmp(134, 0, 0, 0);
    let ll: Ipv6Addr = "fe80::11".parse().expect("addr");
    expect(
        &mut dp,
        &nd(ll, "ff02::1".parse().expect("addr"), &ra),
        XDP_DROP,
        Reason::DenyRogueRa,
    );
}

#[test]
fn redirect_from_a_device_port_is_rogue() {
    let mut dp = dp();
    let redirect = icmpv6_nd(137, SERVER6);
    expect(
        &mut dp,
        &nd(DEV_IP6, SERVER6, &redirect),
        XDP_DROP,
        Reason::DenyRogueRa,
    );
}

// === Transport ===

#[test]
fn tcp_data_offset_below_five_is_dropped() {
    let mut dp = dp();
    let l4 = tcp_with_offset(40000, 2575, TCP_SYN, 4, &[]);
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &l4, &Ipv4Opts::default()),
        XDP_DROP,
        Reason::DenyMalformed,
    );
}

#[test]
fn truncated_udp_header_is_dropped() {
    let mut dp = dp();
    let ip = ipv4(DEV_IP, NTP, 17, &[0, 123], &Ipv4Opts::default());
    // Cut the frame right after the two UDP bytes (no Ethernet padding).
    let mut f = ethernet(GW_MAC, DEV_MAC, &[], ETH_IPV4, &ip);
    f.truncate(14 + ip.len());
    expect(&mut dp, &f, XDP_DROP, Reason::DenyMalformed);
}

#[test]
fn dhcp_server_reply_from_a_device_port_is_rogue() {
    let mut dp = dp();
    let f = v4(
        DEV_IP,
        Ipv4Addr::BROADCAST,
        17,
        &udp(67, 68, b"DHCPOFFER"),
        &Ipv4Opts::default(),
    );
    expect(&mut dp, &f, XDP_DROP, Reason::DenyRogueDhcp);
}

#[test]
fn icmp_echo_opens_a_flow_for_its_reply() {
    let mut dp = dp();
    let req = v4(
        DEV_IP,
        SERVER,
        1,
        &icmp(8, 0, 0x4242, 1),
        &Ipv4Opts::default(),
    );
    expect(&mut dp, &req, XDP_PASS, Reason::AllowRule);
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    let reply = ethernet(
        DEV_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(
            SERVER,
            DEV_IP,
            1,
            &icmp(0, 0, 0x4242, 1),
            &Ipv4Opts::default(),
        ),
    );
    assert_eq!(dp.test_run(&reply).expect("run"), XDP_PASS);
    // A reply with another identifier matches no flow.
    let stray = ethernet(
        DEV_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(
            SERVER,
            DEV_IP,
            1,
            &icmp(0, 0, 0x4343, 1),
            &Ipv4Opts::default(),
        ),
    );
    assert_eq!(dp.test_run(&stray).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyNoFlow, SIDE_UPSTREAM), 1);
}

#[test]
fn udp_first_packet_opens_a_flow_for_the_reply() {
    let mut dp = dp();
    let req = v4(
        DEV_IP,
        NTP,
        17,
        &udp(40123, 123, b"ntp request"),
        &Ipv4Opts::default(),
    );
    // Not allowed for the monitor's own policy (only the quarantine profile has NTP):
    expect(&mut dp, &req, XDP_DROP, Reason::DenyNoRule);
    let req = v4(
        DEV_IP,
        NTP,
        17,
        &udp(40123, 5000, b"allowed port"),
        &Ipv4Opts::default(),
    );
    expect(&mut dp, &req, XDP_PASS, Reason::AllowRule);
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    let reply = ethernet(
        DEV_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(
            NTP,
            DEV_IP,
            17,
            &udp(5000, 40123, b"reply"),
            &Ipv4Opts::default(),
        ),
    );
    assert_eq!(dp.test_run(&reply).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowFlow, SIDE_UPSTREAM), 1);
}

#[test]
fn upstream_traffic_to_an_unmanaged_address_is_not_judged() {
    let mut dp = dp();
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    let f = ethernet(
        OTHER_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(
            SERVER,
            Ipv4Addr::new(10, 10, 0, 1),
            6,
            &syn_payload(),
            &Ipv4Opts::default(),
        ),
    );
    assert_eq!(dp.test_run(&f).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::PassUnmanaged, SIDE_UPSTREAM), 1);
}

#[test]
fn quarantined_device_keeps_only_its_quarantine_profile() {
    let mut dp = dp();
    dp.set_device_state(
        handmade::dev_id(),
        DevState {
            epoch: 1,
            quarantine: QUARANTINE_ISOLATE,
            _pad: [0; 3],
        },
    )
    .expect("state");
    expect(
        &mut dp,
        &v4(DEV_IP, SERVER, 6, &syn_payload(), &Ipv4Opts::default()),
        XDP_DROP,
        Reason::DenyQuarantine,
    );
    let ntp = v4(
        DEV_IP,
        NTP,
        17,
        &udp(40123, 123, b"ntp"),
        &Ipv4Opts::default(),
    );
    expect(&mut dp, &ntp, XDP_PASS, Reason::AllowRule);
}

// === ICMP errors ===

/// An ICMP "fragmentation needed" from a router for a packet the device sent.
fn frag_needed(inner_dport: u16) -> Vec<u8> {
    let inner = ipv4(
        DEV_IP,
        SERVER,
        6,
        &tcp(40100, inner_dport, TCP_ACK, &[]),
        &Ipv4Opts::default(),
    );
    let mut msg = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
    msg.extend_from_slice(&inner[..28]);
    let router = Ipv4Addr::new(10, 10, 0, 1);
    ethernet(
        DEV_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(router, DEV_IP, 1, &msg, &Ipv4Opts::default()),
    )
}

#[test]
fn icmp_error_for_a_live_flow_passes() {
    let mut dp = dp();
    expect(
        &mut dp,
        &v4(
            DEV_IP,
            SERVER,
            6,
            &tcp(40100, 2575, TCP_SYN, &[]),
            &Ipv4Opts::default(),
        ),
        XDP_PASS,
        Reason::AllowRule,
    );
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    assert_eq!(dp.test_run(&frag_needed(2575)).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowFlow, SIDE_UPSTREAM), 1);
}

#[test]
fn icmp_error_for_no_flow_is_dropped() {
    let mut dp = dp();
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    assert_eq!(dp.test_run(&frag_needed(2576)).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyNoFlow, SIDE_UPSTREAM), 1);
}
