//! A small policy written by hand against the ABI, independent of the policy compiler:
//! one monitor (MAC, IPv4, IPv6) allowed to open TCP 2575 and ICMP echo to one server, and
//! UDP 5000 to a time server; its quarantine profile allows only UDP 123 to that server.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use lazaret::datapath::{Datapath, LoadOptions, MapContents};
use lazaret_abi::*;

use crate::frames::Mac;

pub const DEV_MAC: Mac = [0x02, 0, 0, 0, 0, 0x11];
pub const GW_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
pub const OTHER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x99];
pub const DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 11);
pub const DEV_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 0x11);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 20);
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x20);
pub const NTP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 123);
pub const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 21);
/// BPF_PROG_TEST_RUN delivers frames on the namespace's loopback.
pub const LO: u32 = 1;
pub const DEVICE_ID: &str = "mon-icu-01";

pub fn dev_id() -> u64 {
    device_id_hash(DEVICE_ID.as_bytes())
}

fn peer4(
    slot: u8,
    policy: u32,
    addr: Ipv4Addr,
    plen: u32,
    class: u32,
) -> (u32, PeerKey4, PeerClass) {
    (
        PEER_KEY_FIXED_BITS + plen,
        PeerKey4 {
            slot,
            dir: DIR_DEVICE_INIT,
            _pad: [0; 2],
            policy: policy.to_be_bytes(),
            addr: addr.octets(),
        },
        peer_class(class),
    )
}

/// The class with the flags the datapath needs to find its port entries shorter than one
/// port: class 0's ICMP and ICMPv6 entries (protocol, any port).
fn peer_class(class: u32) -> PeerClass {
    PeerClass {
        class,
        port_prefixes: if class == 0 { PORT_PREFIX_OTHER } else { 0 },
    }
}

fn port(
    slot: u8,
    class: u32,
    proto: u8,
    port: u16,
    bits: u32,
    rule: u32,
) -> (u32, PortKey, RuleRef) {
    (
        bits,
        PortKey {
            slot,
            _pad: [0; 3],
            class: class.to_be_bytes(),
            proto,
            port: port.to_be_bytes(),
            _pad2: 0,
        },
        RuleRef { rule, flags: 0 },
    )
}

/// Policy 0: the monitor's; policy 1: quarantine (NTP only).
pub fn contents(slot: u8, generation: u64, site_flags: u32) -> MapContents {
    let id = dev_id();
    let device = Device {
        id,
        policy: 0,
        restrict_policy: 1,
        ifindex: IFINDEX_ANY,
        vlan: VLAN_ANY,
        mode: MODE_ENFORCE,
        flags: DEV_F_HAS_MAC,
        mac: DEV_MAC,
        class: 0,
        ..Device::default()
    };
    MapContents {
        slot,
        ifaces: vec![],
        site: SiteConfig {
            generation,
            flags: site_flags,
            quarantine_policy: 1,
            event_rate: EVENT_RATE_PER_S,
            event_burst: EVENT_BURST,
            promote_rate: PROMOTE_RATE_PER_S,
            promote_burst: PROMOTE_BURST,
        },
        dev_mac: vec![(
            MacKey {
                slot,
                _pad: 0,
                mac: DEV_MAC,
            },
            DevRef { id },
        )],
        dev_ip4: vec![(
            Ip4Key {
                slot,
                _pad: [0; 3],
                addr: DEV_IP.octets(),
            },
            DevRef { id },
        )],
        dev_ip6: vec![(
            Ip6Key {
                slot,
                _pad: [0; 3],
                addr: DEV_IP6.octets(),
            },
            DevRef { id },
        )],
        devices: vec![(
            DevKey {
                slot,
                _pad: [0; 7],
                id,
            },
            device,
        )],
        peer4: Arc::new(vec![
            peer4(slot, 0, SERVER, 32, 0),
            peer4(slot, 0, NTP, 32, 1),
            peer4(slot, 1, NTP, 32, 2),
        ]),
        peer6: Arc::new(vec![(
            PEER_KEY_FIXED_BITS + 128,
            PeerKey6 {
                slot,
                dir: DIR_DEVICE_INIT,
                _pad: [0; 2],
                policy: 0u32.to_be_bytes(),
                addr: SERVER6.octets(),
            },
            peer_class(0),
        )]),
        ports: Arc::new(vec![
            port(slot, 0, PROTO_TCP, 2575, PORT_KEY_FULL_BITS, 0),
            port(slot, 0, PROTO_ICMP, 0, PORT_KEY_PROTO_BITS, 1),
            port(slot, 0, PROTO_ICMPV6, 0, PORT_KEY_PROTO_BITS, 1),
            port(slot, 1, PROTO_UDP, 5000, PORT_KEY_FULL_BITS, 2),
            port(slot, 2, PROTO_UDP, 123, PORT_KEY_FULL_BITS, 3),
        ]),
    }
}

/// The real program, loaded, with the hand-made policy installed and loopback a device port.
pub fn loaded(site_flags: u32) -> Datapath {
    let mut dp = Datapath::load(&LoadOptions::default())
        .expect("loading the XDP program needs root (CAP_BPF) and a kernel with BTF");
    let slot = dp.next_slot().expect("slot");
    dp.install(&contents(slot, 1, site_flags)).expect("install");
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    dp
}

/// Packets counted for a reason on a side.
pub fn stat(dp: &mut Datapath, reason: Reason, side: u8) -> u64 {
    dp.stats().expect("stats")[stats_index(reason, side) as usize]
}
