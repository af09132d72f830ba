//! Hostile frames on the real attach path: crafted frames are injected from the device's
//! namespace into its real veth (AF_PACKET), reach the gateway's XDP program as they would
//! from a compromised device, and each must be counted with the expected reason.

use std::{net::Ipv4Addr, thread, time::Duration};

use anyhow::Result;
use lazaret_abi::{stats_index, Reason, SIDE_DEVICES};
use lazaret_tests::{
    daemon::{monitor_policy, workflow, Lab},
    frames::*,
    netns::{mac_of, send_raw},
};

#[test]
fn hostile_frames_from_a_device_port_are_judged_on_the_real_path() -> Result<()> {
    let mut lab = Lab::new(|mac| {
        monitor_policy(mac, &["hl7-results"], &workflow("hl7-results", "tcp", 2575))
    })?;
    lab.start()?;
    let dev_mac = lab.net.device_mac;
    let gw_mac = mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let dev_ip = lab.net.device_ip;
    let server = lab.net.server_ip;
    let stranger: Mac = [0x02, 0xba, 0xd0, 0, 0, 1];
    let syn = |smac: Mac, src: Ipv4Addr, dport: u16| {
        tcp4(smac, gw_mac, src, server, 41000, dport, TCP_SYN)
    };
    let v6 = |exts: &[Ext], payload: &[u8], proto: u8| {
        let src = "fd00:20::11"
            .parse()
            .unwrap_or(std::net::Ipv6Addr::LOCALHOST);
        let dst = "fd00:10::20"
            .parse()
            .unwrap_or(std::net::Ipv6Addr::LOCALHOST);
        ethernet(
            gw_mac,
            dev_mac,
            &[],
            ETH_IPV6,
            &ipv6(src, dst, exts, proto, payload),
        )
    };
    let frag = |more: bool, offset: u16, l4: &[u8]| {
        let o = Ipv4Opts {
            id: 4242,
            more_fragments: more,
            frag_offset: offset,
            ..Ipv4Opts::default()
        };
        ethernet(
            gw_mac,
            dev_mac,
            &[],
            ETH_IPV4,
            &ipv4(dev_ip, server, 6, l4, &o),
        )
    };
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("allowed SYN", syn(dev_mac, dev_ip, 2575), Reason::AllowRule),
        (
            "the device's MAC with another address",
            syn(dev_mac, Ipv4Addr::new(10, 20, 0, 99), 2575),
            Reason::DenySpoof,
        ),
        (
            "the device's address from another MAC",
            syn(stranger, dev_ip, 2575),
            Reason::DenySpoof,
        ),
        (
            "an unknown device",
            syn(stranger, Ipv4Addr::new(10, 20, 0, 77), 2575),
            Reason::DenyUnknown,
        ),
        (
            "rogue DHCP server",
            ethernet(
                [0xff; 6],
                dev_mac,
                &[],
                ETH_IPV4,
                &ipv4(
                    dev_ip,
                    Ipv4Addr::BROADCAST,
                    17,
                    &udp(67, 68, b"OFFER"),
                    &Ipv4Opts::default(),
                ),
            ),
            Reason::DenyRogueDhcp,
        ),
        (
            "router advertisement",
            ethernet(
                [0x33, 0x33, 0, 0, 0, 1],
                dev_mac,
                &[],
                ETH_IPV6,
                &ipv6(
                    "fe80::11".parse()?,
                    "ff02::1".parse()?,
                    &[],
                    58,
                    &icmp(134, 0, 0, 0),
                ),
            ),
            Reason::DenyRogueRa,
        ),
        (
            "IPv6 extension chain beyond the bound",
            v6(&vec![Ext::DestOpts; 7], &tcp(41000, 2575, TCP_SYN, &[]), 6),
            Reason::DenyIpv6Ext,
        ),
        (
            "first fragment of an allowed SYN",
            frag(true, 0, &tcp(41001, 2575, TCP_SYN, &[0; 8])),
            Reason::AllowRule,
        ),
        (
            "later fragment of that train",
            frag(false, 4, b"the rest"),
            Reason::AllowRule,
        ),
        (
            "orphan later fragment",
            ethernet(
                gw_mac,
                dev_mac,
                &[],
                ETH_IPV4,
                &ipv4(
                    dev_ip,
                    server,
                    6,
                    b"orphan..",
                    &Ipv4Opts {
                        id: 999,
                        frag_offset: 4,
                        ..Ipv4Opts::default()
                    },
                ),
            ),
            Reason::DenyFragment,
        ),
        (
            "triple VLAN tag",
            ethernet(
                gw_mac,
                dev_mac,
                &[(ETH_8021AD, 1), (ETH_8021Q, 2), (ETH_8021Q, 3)],
                ETH_IPV4,
                &ipv4(
                    dev_ip,
                    server,
                    6,
                    &tcp(41000, 2575, TCP_SYN, &[]),
                    &Ipv4Opts::default(),
                ),
            ),
            Reason::DenyVlanDepth,
        ),
        (
            "TCP data offset below five",
            ethernet(
                gw_mac,
                dev_mac,
                &[],
                ETH_IPV4,
                &ipv4(
                    dev_ip,
                    server,
                    6,
                    &tcp_with_offset(41000, 2575, TCP_SYN, 2, &[]),
                    &Ipv4Opts::default(),
                ),
            ),
            Reason::DenyMalformed,
        ),
    ];
    for (what, frame, reason) in cases {
        let before = lab.stats()?;
        send_raw(&lab.net.device, &lab.net.device_if, vec![frame])?;
        let idx = stats_index(reason, SIDE_DEVICES) as usize;
        let mut after = lab.stats()?;
        for _ in 0..50 {
            if after[idx] > before[idx] {
                break;
            }
            thread::sleep(Duration::from_millis(10));
            after = lab.stats()?;
        }
        assert_eq!(after[idx], before[idx] + 1, "{what}: counted as {reason:?}");
    }
    Ok(())
}
