//! Hostile traffic on the real path, on both dataplanes: crafted frames are injected from
//! the device's namespace into its real veth (AF_PACKET), reach the gateway's XDP program
//! or nftables table as they would from a compromised device, and each must be counted with
//! the expected reason; an unknown device and a device spoofing its MAC on real sockets.

use std::{
    net::{IpAddr, Ipv4Addr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Result};
use lazaret_abi::{Reason, SIDE_DEVICES};
use lazaret_tests::{
    daemon::{fmt_mac, monitor_policy, round_trip, workflow, Dataplane, Lab},
    frames::*,
    netns::{mac_of, send_raw, unique_prefix, Netns},
    nftlab::tcp_probe,
    on_both_dataplanes,
};

on_both_dataplanes!(
    hostile_frames_from_a_device_port_are_judged_on_the_real_path,
    unknown_devices_are_denied_and_listed_and_a_spoofed_mac_is_denied,
);

/// Frames whose checks are XDP's, by design of nftables' inet family (module docs of
/// `lazaret::dataplane::nft`): conntrack reassembles fragments before the table sees them.
/// Every other case is counted under the same reason on both (the frame stage's checks).
const XDP_ONLY: [&str; 3] = [
    "first fragment of an allowed SYN",
    "later fragment of that train",
    "orphan later fragment",
];

fn hostile_frames_from_a_device_port_are_judged_on_the_real_path(
    dataplane: Dataplane,
) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| {
        monitor_policy(mac, &["hl7-results"], &workflow("hl7-results", "tcp", 2575))
    })?;
    lab.start()?;
    let dev_mac = lab.net.device_mac;
    let gw_mac = mac_of(&lab.net.gateway, &lab.net.gw_dev_if)?;
    let dev_ip = lab.net.device_ip;
    let server = lab.net.server_ip;
    let stranger: Mac = [0x02, 0xba, 0xd0, 0, 0, 1];
    let syn = |smac: Mac, src: Ipv4Addr, dport: u16| {
        with_l4_checksum4(tcp4(smac, gw_mac, src, server, 41000, dport, TCP_SYN))
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
            "IPv6 payload length 0 (a jumbogram without its option)",
            {
                let mut f = v6(&[], &tcp(41000, 2575, TCP_SYN, &[]), 6);
                // The payload length field, after Ethernet's 14 bytes and 4 of IPv6.
                f[18..20].copy_from_slice(&[0, 0]);
                f
            },
            Reason::DenyMalformed,
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
        if dataplane == Dataplane::Nftables && XDP_ONLY.contains(&what) {
            continue;
        }
        let before = lab.packets(reason, SIDE_DEVICES)?;
        send_raw(&lab.net.device, &lab.net.device_if, vec![frame])?;
        let mut after = lab.packets(reason, SIDE_DEVICES)?;
        for _ in 0..50 {
            if after > before {
                break;
            }
            thread::sleep(Duration::from_millis(10));
            after = lab.packets(reason, SIDE_DEVICES)?;
        }
        assert_eq!(
            after,
            before + 1,
            "{what}: counted as {reason:?}\n{}",
            lazaret_tests::nftlab::list_text(&lab.net.gateway).unwrap_or_default()
        );
    }
    Ok(())
}

const T: Duration = Duration::from_millis(600);

/// An unknown device on the device port (its own namespace and MAC, through a macvlan on
/// the device's veth) is denied and listed by `lazaret devices --unknown`; the device's
/// own address from a foreign MAC is spoofing; its real MAC is allowed again.
fn unknown_devices_are_denied_and_listed_and_a_spoofed_mac_is_denied(
    dataplane: Dataplane,
) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| {
        monitor_policy(mac, &["hl7-results"], &workflow("hl7-results", "tcp", 2575))
    })?;
    lab.start()?;
    lab.echo_servers(&[2575])?;
    let mut s = lab.connect(2575, T)?;
    assert!(round_trip(&mut s), "the device's allowed flow");

    let unk = Netns::new(format!("{}unk", unique_prefix()))?;
    // The gateway's MAC is known in advance: XDP drops an unknown device's ARP request,
    // and the test is about its IP traffic.
    // Its own MAC, which the list must name (nftables once reported every event's MAC as
    // 00:00:00:00:00:00, and all unknown devices were one).
    let unk_mac = "02:00:5e:00:53:42";
    lab.plug_host(&unk, "10.20.0.99", Some(unk_mac))?;
    let server = IpAddr::V4(lab.net.server_ip);
    let unknown_before = lab.packets(Reason::DenyUnknown, SIDE_DEVICES)?;
    assert!(
        !tcp_probe(&unk, "10.20.0.99".parse()?, server, 2575, T)?,
        "unknown device denied"
    );
    assert!(lab.packets(Reason::DenyUnknown, SIDE_DEVICES)? > unknown_before);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = lab.cli(&["devices", "--unknown"])?;
        let listed = listed.to_string();
        if listed.contains("10.20.0.99") {
            ensure!(
                listed.contains(&format!("\"mac\":\"{unk_mac}\"")),
                "the unknown device is listed without its MAC {unk_mac}: {listed}"
            );
            break;
        }
        if Instant::now() > deadline {
            bail!("the unknown device was never listed: {listed}");
        }
        thread::sleep(Duration::from_millis(100));
    }

    // The device's address from a foreign MAC.
    let dev = &lab.net.device;
    let me = IpAddr::V4(lab.net.device_ip);
    let set_mac = |mac: &str| {
        dev.exec(&[
            "ip",
            "link",
            "set",
            "dev",
            &lab.net.device_if,
            "address",
            mac,
        ])
    };
    let spoof_before = lab.packets(Reason::DenySpoof, SIDE_DEVICES)?;
    set_mac("02:00:5e:00:53:99")?;
    assert!(!tcp_probe(dev, me, server, 2575, T)?, "spoofed MAC denied");
    assert!(lab.packets(Reason::DenySpoof, SIDE_DEVICES)? > spoof_before);
    set_mac(&fmt_mac(lab.net.device_mac))?;
    // The gateway may still hold the foreign MAC in its neighbor cache for a moment.
    let back = (0..10).any(|_| {
        thread::sleep(Duration::from_millis(100));
        tcp_probe(dev, me, server, 2575, T).unwrap_or(false)
    });
    assert!(back, "the real MAC is allowed again");
    Ok(())
}
