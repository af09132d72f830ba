//! A small policy written by hand against the ABI, independent of the policy compiler:
//! one monitor (MAC, IPv4, IPv6) allowed to open TCP 2575 and ICMP echo to one server, and
//! UDP 5000 to a time server; its quarantine profile allows only UDP 123 to that server. A
//! second monitor on the same segment, the bystander, has the same policy.
//!
//! [`Twin`] runs the real program and its host twin side by side on the same frames.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use lazaret::dataplane::xdp::{Datapath, LoadOptions, MapContents};
use lazaret::policy::twin::Model;
use lazaret::policy::MapIndex;
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
/// The second monitor on the segment.
pub const BYSTANDER_ID: &str = "mon-icu-02";
pub const BYSTANDER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x22];
pub const BYSTANDER_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 22);
pub const BYSTANDER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 0x22);

/// The server's SYN-ACK to the device's `sport` (from its HL7 port 2575), as it arrives
/// upstream.
pub fn server_synack(sport: u16) -> Vec<u8> {
    crate::frames::tcp4(
        GW_MAC,
        DEV_MAC,
        SERVER,
        DEV_IP,
        2575,
        sport,
        crate::frames::TCP_SYN | crate::frames::TCP_ACK,
    )
}

pub fn dev_id() -> u64 {
    device_id_hash(DEVICE_ID.as_bytes())
}

pub fn bystander_id() -> u64 {
    device_id_hash(BYSTANDER_ID.as_bytes())
}

fn peer4(
    slot: u8,
    policy: u32,
    addr: Ipv4Addr,
    plen: u32,
    class: u32,
) -> (u32, PeerKey4, PeerClass) {
    peer4_dir(slot, DIR_DEVICE_INIT, policy, (addr, plen), class)
}

/// An IPv4 peer entry: under `policy`, for flows opened in direction `dir`, the prefix
/// `net` is class `class`.
pub fn peer4_dir(
    slot: u8,
    dir: u8,
    policy: u32,
    (addr, plen): (Ipv4Addr, u32),
    class: u32,
) -> (u32, PeerKey4, PeerClass) {
    (
        PEER_KEY_FIXED_BITS + plen,
        PeerKey4 {
            slot,
            dir,
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

/// A port entry: class `class`, protocol and port (`bits` long) → rule `rule`.
pub fn port(
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
    let bystander = Device {
        id: bystander_id(),
        mac: BYSTANDER_MAC,
        ..device
    };
    let by = bystander;
    let mut m = MapContents {
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
            device,
        )],
        dev_ip4: vec![(
            Ip4Key {
                slot,
                _pad: [0; 3],
                addr: DEV_IP.octets(),
            },
            device,
        )],
        dev_ip6: vec![(
            Ip6Key {
                slot,
                _pad: [0; 3],
                addr: DEV_IP6.octets(),
            },
            device,
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
    };
    m.dev_mac.push((
        MacKey {
            slot,
            _pad: 0,
            mac: BYSTANDER_MAC,
        },
        by,
    ));
    m.dev_ip4.push((
        Ip4Key {
            slot,
            _pad: [0; 3],
            addr: BYSTANDER_IP.octets(),
        },
        by,
    ));
    m.dev_ip6.push((
        Ip6Key {
            slot,
            _pad: [0; 3],
            addr: BYSTANDER_IP6.octets(),
        },
        by,
    ));
    m.devices.push((
        DevKey {
            slot,
            _pad: [0; 7],
            id: by.id,
        },
        bystander,
    ));
    // No networks declared: every address may be owned by first use, as the compiler has
    // it; tests of the networks set their own with [`claim_networks`].
    claim_networks(
        &mut m,
        &[
            ("0.0.0.0/0", CLAIM_ANY),
            ("::/0", CLAIM_ANY),
            ("169.254.0.0/16", CLAIM_DEVICES),
            ("fe80::/10", CLAIM_DEVICES),
        ],
    );
    m.sort_devices();
    m
}

/// Replaces the addresses devices may own by first use (`DIR_CLAIM` entries) with `nets`
/// (prefix, `CLAIM_*`; the longest prefix decides).
pub fn claim_networks(m: &mut MapContents, nets: &[(&str, u32)]) {
    Arc::make_mut(&mut m.peer4).retain(|(_, k, _)| k.dir != DIR_CLAIM);
    Arc::make_mut(&mut m.peer6).retain(|(_, k, _)| k.dir != DIR_CLAIM);
    scope_claim_networks(m, CLAIM_POLICY as u16, nets);
}

/// Adds the addresses devices behind an interface of claim scope `scope` may own by first
/// use (`IfaceConfig::claim_scope`), as [`claim_networks`] does the site's.
pub fn scope_claim_networks(m: &mut MapContents, scope: u16, nets: &[(&str, u32)]) {
    let (slot, scope) = (m.slot, u32::from(scope));
    for (net, class) in nets {
        match net.parse().expect("a network") {
            ipnet::IpNet::V4(n) => Arc::make_mut(&mut m.peer4)
                .push(lazaret::policy::claim_entry4(slot, scope, n, *class)),
            ipnet::IpNet::V6(n) => Arc::make_mut(&mut m.peer6)
                .push(lazaret::policy::claim_entry6(slot, scope, n, *class)),
        }
    }
    m.sort();
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

/// The real program and its host twin ([`Model`]) over the hand-made policy, fed the same
/// frames: [`Twin::judge`] fails the test unless both give the same reason (and the program
/// the action that reason implies).
pub struct Twin {
    pub dp: Datapath,
    pub model: Model,
    ifaces: HashMap<u32, IfaceConfig>,
}

impl Twin {
    /// Loopback is a device port with the default configuration.
    pub fn new(site_flags: u32) -> Twin {
        Twin::with(site_flags, |_| {})
    }

    /// [`Twin::new`] with the hand-made contents changed by `edit` first.
    pub fn with(site_flags: u32, edit: impl FnOnce(&mut MapContents)) -> Twin {
        let mut dp = Datapath::load(&LoadOptions::default())
            .expect("loading the XDP program needs root (CAP_BPF) and a kernel with BTF");
        let slot = dp.next_slot().expect("slot");
        let mut c = contents(slot, 1, site_flags);
        edit(&mut c);
        dp.install(&c).expect("install");
        let mut t = Twin {
            dp,
            model: Model::new(MapIndex::new(&c)),
            ifaces: HashMap::new(),
        };
        t.iface(LO, IfaceConfig::new(SIDE_DEVICES));
        t
    }

    /// Installs a new generation in both (the model keeps its flows, as the program does).
    pub fn install(&mut self, c: &MapContents) {
        self.dp.install(c).expect("install");
        self.model.install(MapIndex::new(c));
    }

    /// Configures interface `ifindex` in both.
    pub fn iface(&mut self, ifindex: u32, cfg: IfaceConfig) {
        self.dp
            .set_interface_config(ifindex, cfg)
            .expect("interface config");
        self.ifaces.insert(ifindex, cfg);
    }

    /// The gateway's own addresses, in both.
    pub fn local(&mut self, addrs: &[IpAddr]) {
        let set = addrs.iter().copied().collect();
        self.dp.set_local_addrs(&set).expect("local addresses");
        self.model.states.local = set;
    }

    /// A device's runtime state (quarantine, epoch), in both.
    pub fn device_state(&mut self, id: u64, st: DevState) {
        self.dp.set_device_state(id, st).expect("device state");
        self.model.states.states.insert(id, st);
    }

    /// Quarantines a device as the daemon does: the state and a new epoch.
    pub fn quarantine(&mut self, id: u64, q: u8) {
        let mut st = self
            .model
            .states
            .states
            .get(&id)
            .copied()
            .unwrap_or_default();
        st.quarantine = q;
        st.epoch = st.epoch.wrapping_add(1);
        self.device_state(id, st);
    }

    /// Judges `frame` arriving on `ifindex` (loopback, or an interface of the calling
    /// thread's namespace): the reason both gave.
    pub fn judge(&mut self, frame: &[u8], ifindex: u32) -> Reason {
        let cfg = *self
            .ifaces
            .get(&ifindex)
            .unwrap_or(&IfaceConfig::new(SIDE_DEVICES));
        let before = self.dp.stats().expect("stats");
        let action = if ifindex == LO {
            self.dp.test_run(frame)
        } else {
            self.dp.test_run_on(frame, ifindex)
        }
        .expect("BPF_PROG_TEST_RUN");
        let after = self.dp.stats().expect("stats");
        let moved: Vec<usize> = (0..before.len())
            .filter(|&i| after[i] != before[i])
            .collect();
        let [index] = moved[..] else {
            panic!("one counter should move, these did: {moved:?}");
        };
        let reason = Reason::from_u8((index / 2) as u8).expect("a reason");
        assert_eq!(
            index % 2,
            usize::from(cfg.side),
            "counted on the wrong side"
        );
        let twin = self.model.judge_on(frame, &cfg, ifindex);
        assert_eq!(
            twin.reason, reason,
            "the XDP program counted {reason:?}, its twin says {twin:?}"
        );
        let expected = if reason.passes() { 2 } else { 1 };
        assert_eq!(action, expected, "XDP action for {reason:?}");
        reason
    }
}

/// Packets counted for a reason on a side.
pub fn stat(dp: &mut Datapath, reason: Reason, side: u8) -> u64 {
    dp.stats().expect("stats")[stats_index(reason, side) as usize]
}
