//! The real XDP program on crafted frames through BPF_PROG_TEST_RUN, with a small map
//! contents written by hand against the ABI (independent of the policy compiler).

use std::net::Ipv4Addr;

use lazaret::{
    daemon::flowsync::{self, SyncedFlow},
    dataplane::xdp::{Datapath, FlowTable},
};
use lazaret_abi::*;
use lazaret_tests::{
    frames::*,
    handmade::{
        self, bystander_id, dev_id, stat, DEV_IP, DEV_MAC, GW_MAC, LO, OTHER_MAC, OTHER_SERVER,
        SERVER,
    },
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn loaded() -> Datapath {
    handmade::loaded(SITE_F_NEIGHBOR)
}

fn contents(slot: u8, generation: u64) -> lazaret::dataplane::xdp::MapContents {
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
    let synack = handmade::server_synack(40001);
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
    std::sync::Arc::make_mut(&mut c.ports).clear();
    dp.install(&c).expect("install");
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_DROP);
}

#[test]
fn isolating_a_device_cuts_its_established_flow() {
    let mut dp = loaded();
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40003, 2575, TCP_SYN);
    let ack = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40003, 2575, TCP_ACK);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_PASS);
    isolate(&mut dp, dev_id());
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyQuarantine, SIDE_DEVICES), 1);
}

/// Isolates device `id` (its first quarantine: epoch 1); the state written.
fn isolate(dp: &mut Datapath, id: u64) -> DevState {
    let isolated = DevState {
        epoch: 1,
        quarantine: QUARANTINE_ISOLATE,
        _pad: [0; 3],
    };
    dp.set_device_state(id, isolated).expect("state");
    isolated
}

// === The two flow tables ===

/// (table, state) of the flow between the device's `sport` and the server's 2575.
fn flow_of(dp: &mut Datapath, sport: u16) -> Option<(FlowTable, u8)> {
    dp.flows()
        .expect("flows")
        .into_iter()
        .find(|(_, k, _)| k.proto == PROTO_TCP && (k.port_a == sport || k.port_b == sport))
        .map(|(t, _, v)| (t, v.state))
}

#[test]
fn a_tcp_flow_is_confirmed_only_by_the_initiators_ack_of_the_syn_ack() {
    let mut dp = loaded();
    let sport = 40010;
    let from_device = |flags, ack| {
        let l4 = tcp_seq_ack(sport, 2575, flags, (TCP_SEQ, ack), b"data");
        ethernet(
            GW_MAC,
            DEV_MAC,
            &[],
            ETH_IPV4,
            &ipv4(DEV_IP, SERVER, 6, &l4, &Ipv4Opts::default()),
        )
    };
    let synack = handmade::server_synack(sport);
    assert_eq!(
        dp.test_run(&from_device(TCP_SYN, 0)).expect("run"),
        XDP_PASS
    );
    assert_eq!(flow_of(&mut dp, sport), Some((FlowTable::New, FLOW_NEW)));
    // The responder's SYN-ACK alone confirms nothing: a SYN flood towards a live host
    // gets those.
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    assert_eq!(dp.test_run(&synack).expect("run"), XDP_PASS);
    assert_eq!(
        flow_of(&mut dp, sport),
        Some((FlowTable::New, FLOW_RESPONDED))
    );
    // An ACK of another number (a blind guess) passes, as any packet of the flow, but
    // does not confirm it.
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    assert_eq!(
        dp.test_run(&from_device(TCP_ACK, 0x7777)).expect("run"),
        XDP_PASS
    );
    assert_eq!(
        flow_of(&mut dp, sport),
        Some((FlowTable::New, FLOW_RESPONDED))
    );
    // The ACK of the SYN-ACK's ISN confirms it: it moves to the established table.
    assert_eq!(
        dp.test_run(&from_device(TCP_ACK, TCP_SEQ + 1))
            .expect("run"),
        XDP_PASS
    );
    assert_eq!(
        flow_of(&mut dp, sport),
        Some((FlowTable::Established, FLOW_ESTABLISHED))
    );
    assert_eq!(
        dp.flows().expect("flows").len(),
        1,
        "the flow left the new table when it was promoted"
    );
    // Both directions keep passing through the established entry.
    assert_eq!(
        dp.test_run(&from_device(TCP_ACK, TCP_SEQ + 1))
            .expect("run"),
        XDP_PASS
    );
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    let data_back = tcp4(GW_MAC, DEV_MAC, SERVER, DEV_IP, 2575, sport, TCP_ACK);
    assert_eq!(dp.test_run(&data_back).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowFlow, SIDE_UPSTREAM), 2);
}

#[test]
fn a_rule_counts_the_packets_it_decided_not_those_its_flow_passes() {
    let mut dp = loaded();
    let slot = dp.active_slot().expect("slot");
    let sport = 40020;
    // The SYN is the rule's decision; the SYN-ACK and the ACK pass through the flow.
    confirmed(&mut dp, sport);
    assert_eq!(dp.rule_hits(slot, 0).expect("hits"), 1);
    let data = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_ACK);
    for _ in 0..3 {
        assert_eq!(dp.test_run(&data).expect("run"), XDP_PASS);
    }
    assert_eq!(
        dp.rule_hits(slot, 0).expect("hits"),
        1,
        "packets of the confirmed flow are the flow's, not the rule's"
    );
    // They count for the device and the verdict, every one.
    let c = dp.device_counters(dev_id()).expect("counters");
    assert_eq!(c.allowed_packets, 6);
    assert_eq!(stat(&mut dp, Reason::AllowFlow, SIDE_DEVICES), 4);
    // A new generation: the flow's next packet is re-judged, and the rule that decides it
    // is hit in the new slot (a rule carrying only a long-lived session still shows as
    // used); the packets after it are the flow's again.
    let next = dp.next_slot().expect("slot");
    dp.install(&contents(next, 2)).expect("install");
    for _ in 0..2 {
        assert_eq!(dp.test_run(&data).expect("run"), XDP_PASS);
    }
    assert_eq!(dp.rule_hits(next, 0).expect("hits"), 1, "the re-judgement");
}

/// Opens and confirms the device's flow from `sport` to the server.
fn confirmed(dp: &mut Datapath, sport: u16) {
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), XDP_PASS);
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    let synack = handmade::server_synack(sport);
    assert_eq!(dp.test_run(&synack).expect("run"), XDP_PASS);
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    let ack = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_ACK);
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_PASS);
    assert_eq!(
        flow_of(dp, sport),
        Some((FlowTable::Established, FLOW_ESTABLISHED))
    );
}

#[test]
fn established_table_flows_are_rejudged_on_a_generation_swap_and_a_quarantine() {
    let mut dp = loaded();
    confirmed(&mut dp, 40011);
    confirmed(&mut dp, 40012);
    let ack = |sport| tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_ACK);
    // Same rules, new generation: re-judged, kept, still in the established table.
    let slot = dp.next_slot().expect("slot");
    dp.install(&contents(slot, 2)).expect("install");
    assert_eq!(dp.test_run(&ack(40011)).expect("run"), XDP_PASS);
    assert_eq!(
        flow_of(&mut dp, 40011),
        Some((FlowTable::Established, FLOW_ESTABLISHED))
    );
    // An ICMP error quoting a confirmed flow passes.
    let inner = ipv4(
        DEV_IP,
        SERVER,
        6,
        &tcp(40011, 2575, TCP_ACK, &[]),
        &Ipv4Opts::default(),
    );
    let mut msg = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
    msg.extend_from_slice(&inner[..28]);
    let router = Ipv4Addr::new(10, 10, 0, 1);
    let frag_needed = ethernet(
        DEV_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(router, DEV_IP, 1, &msg, &Ipv4Opts::default()),
    );
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    assert_eq!(dp.test_run(&frag_needed).expect("run"), XDP_PASS);
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    // Isolation bumps the epoch: both confirmed flows are re-judged and cut, and leave
    // the established table.
    isolate(&mut dp, dev_id());
    assert_eq!(dp.test_run(&ack(40011)).expect("run"), XDP_DROP);
    assert_eq!(dp.test_run(&ack(40012)).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyQuarantine, SIDE_DEVICES), 2);
    assert!(
        dp.flows().expect("flows").is_empty(),
        "the cut flows were removed"
    );
}

/// `FlowValue` as ABI 2 wrote it (one flow table, 48 bytes): what an upgrade finds pinned.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowValueAbi2 {
    last_seen_ns: u64,
    generation: u64,
    dev_a: u64,
    dev_b: u64,
    epoch_a: u32,
    epoch_b: u32,
    rule: u32,
    state: u8,
    initiator: u8,
    reason: u8,
    _pad: u8,
}
// SAFETY: repr(C), integer fields only, no implicit padding (48 bytes, asserted below).
unsafe impl aya::Pod for FlowValueAbi2 {}
const _: () = assert!(std::mem::size_of::<FlowValueAbi2>() == 48);

/// A bpffs with the pin directory an older datapath of ABI `version` would have left (the
/// mount and its temporary directory live as long as the first two).
fn older_pin_dir(
    version: u32,
) -> (
    lazaret_tests::netns::TempDir,
    lazaret_tests::netns::BpfMount,
    std::path::PathBuf,
) {
    let tmp = lazaret_tests::netns::TempDir::new().expect("temp dir");
    let bpffs = lazaret_tests::netns::BpfMount::new(&tmp.path).expect("bpffs");
    let dir = bpffs.path.join(format!("v{version}"));
    std::fs::create_dir_all(&dir).expect("pin dir");
    (tmp, bpffs, dir)
}

#[test]
fn flows_pinned_by_an_abi_2_datapath_are_carried_over_and_keep_working() {
    use aya::maps::{HashMap, MapData};
    let (_tmp, _bpffs, old_dir) = older_pin_dir(2);
    // The device's session to the server, established under ABI 2's generation 1; the
    // server (10.10.0.20) is the lower endpoint, so it is `a` and the device `b`.
    let sport = 40020;
    let key = FlowKey {
        addr_a: {
            let mut a = [0; 16];
            a[..4].copy_from_slice(&SERVER.octets());
            a
        },
        addr_b: {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&DEV_IP.octets());
            b
        },
        port_a: 2575,
        port_b: sport,
        proto: PROTO_TCP,
        family: FAMILY_V4,
        echo: ECHO_NONE,
        _pad: 0,
    };
    let old_value = FlowValueAbi2 {
        // Recent on the kernel's clock: CLOCK_MONOTONIC, which the datapath's coarse
        // clock may trail by a tick (a timestamp ahead of it counts as fresh).
        last_seen_ns: monotonic_ns(),
        generation: 1,
        dev_a: 0,
        dev_b: dev_id(),
        epoch_a: 0,
        epoch_b: 0,
        rule: 0,
        state: FLOW_ESTABLISHED,
        initiator: 1,
        reason: Reason::AllowRule as u8,
        _pad: 0,
    };
    let mut old: HashMap<MapData, FlowKey, FlowValueAbi2> =
        HashMap::create(16, 0).expect("create an ABI 2 flow table");
    old.insert(key, old_value, 0).expect("insert");
    old.pin(old_dir.join(MAP_FLOWS)).expect("pin");

    let mut dp = loaded();
    assert_eq!(dp.migrate_flows(&old_dir).expect("migrate"), 1);
    assert_eq!(
        flow_of(&mut dp, sport),
        Some((FlowTable::New, FLOW_ESTABLISHED)),
        "an ABI 2 flow lands in the new table, its state kept"
    );
    // Mid-stream, no handshake: re-judged under the current generation, allowed, and
    // promoted (it was confirmed under ABI 2).
    let ack = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_ACK);
    assert_eq!(dp.test_run(&ack).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowFlow, SIDE_DEVICES), 1);
    assert_eq!(
        flow_of(&mut dp, sport),
        Some((FlowTable::Established, FLOW_ESTABLISHED))
    );
}

/// An echo flow of ABI 10 was keyed by its identifier alone; carried over, it is keyed by
/// its requester (`FlowKey::echo`, from the flow's initiator): the server's reply still
/// passes, and the server's own request with that identifier is another flow.
#[test]
fn an_echo_flow_pinned_by_an_abi_10_datapath_is_carried_over_keyed_by_its_requester() {
    use aya::maps::{HashMap, MapData};
    let (_tmp, _bpffs, old_dir) = older_pin_dir(10);
    let id = 0x4c0a;
    let v4 = |a: Ipv4Addr| {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&a.octets());
        b
    };
    // The device pinged the server (10.10.0.20, endpoint a); the device (b) initiated.
    let key = FlowKey {
        addr_a: v4(SERVER),
        addr_b: v4(DEV_IP),
        port_a: id,
        port_b: id,
        proto: PROTO_ICMP,
        family: FAMILY_V4,
        echo: ECHO_NONE,
        _pad: 0,
    };
    let value = FlowValue {
        last_seen_ns: monotonic_ns(),
        generation: 1,
        state: FLOW_RESPONDED,
        initiator: 1,
        reason: Reason::AllowRule as u8,
        ..FlowValue::default()
    };
    let mut old: HashMap<MapData, FlowKey, FlowValue> =
        HashMap::create(16, 0).expect("create an ABI 10 flow table");
    old.insert(key, value, 0).expect("insert");
    old.pin(old_dir.join(MAP_FLOWS)).expect("pin");

    let mut dp = loaded();
    assert_eq!(dp.migrate_flows(&old_dir).expect("migrate"), 1);
    let keys: Vec<FlowKey> = dp.flows().expect("flows").iter().map(|f| f.1).collect();
    assert_eq!(
        keys,
        vec![FlowKey {
            echo: ECHO_BY_B,
            ..key
        }]
    );
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    let from_server = |kind: u8| {
        let ip = ipv4(
            SERVER,
            DEV_IP,
            1,
            &icmp(kind, 0, id, 1),
            &Ipv4Opts::default(),
        );
        ethernet(DEV_MAC, GW_MAC, &[], ETH_IPV4, &ip)
    };
    assert_eq!(dp.test_run(&from_server(0)).expect("run"), XDP_PASS);
    assert_eq!(stat(&mut dp, Reason::AllowFlow, SIDE_UPSTREAM), 1);
    assert_eq!(dp.test_run(&from_server(8)).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyNoRule, SIDE_UPSTREAM), 1);
}

/// CLOCK_MONOTONIC in ns: the clock whose tick-resolution view the datapath reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The benchmark's reference programs load (the verifier accepts them) and do what the
/// bench says: the baseline passes a frame; the floor passes it and tracks its flow under
/// one key for both directions.
#[test]
fn the_benchmark_baseline_and_floor_programs_load_and_track_as_documented() {
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40000, 2575, TCP_SYN);
    let reply = handmade::server_synack(40000);
    let mut baseline = Datapath::load_baseline().expect("baseline loads (needs root)");
    assert_eq!(baseline.test_run(&syn).expect("run"), XDP_PASS);
    let mut floor = Datapath::load_floor().expect("floor loads (needs root)");
    for frame in [&syn, &reply, &syn] {
        assert_eq!(floor.test_run(frame).expect("run"), XDP_PASS);
    }
    let map = floor
        .ebpf_mut()
        .map_mut(MAP_FLOWS)
        .expect("the floor's flow table");
    let flows: aya::maps::HashMap<_, FlowKey, FlowValue> =
        aya::maps::HashMap::try_from(map).expect("typed");
    let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
    assert_eq!(keys.len(), 1, "one flow for both directions: {keys:?}");
    let k = keys[0];
    assert_eq!((k.port_a, k.port_b, k.proto), (2575, 40000, PROTO_TCP));
    // The denial floor finds no flow (its own table is empty) and drops; once the flow is
    // in its table, it passes.
    let mut deny = Datapath::load_floor_deny().expect("denial floor loads");
    assert_eq!(deny.test_run(&syn).expect("run"), XDP_DROP);
    // The duties floor passes the device's flow and its replies, and drops the same
    // 5-tuple from another MAC (its identity check is real, not timed away).
    let mut duties = Datapath::load_floor_duties().expect("duties floor loads");
    let spoofed = tcp4(OTHER_MAC, GW_MAC, DEV_IP, SERVER, 40000, 2575, TCP_ACK);
    verdicts(
        &mut duties,
        &[
            (&syn, XDP_PASS),
            (&reply, XDP_PASS),
            (&syn, XDP_PASS),
            (&spoofed, XDP_DROP),
        ],
    );
    // A new generation: the flow was judged under another, so it is not passed.
    let map = duties
        .ebpf_mut()
        .map_mut("LZ_DUTY_GEN")
        .expect("generation");
    let mut generation: aya::maps::Array<_, u64> = aya::maps::Array::try_from(map).expect("typed");
    generation.set(0, 1, 0).expect("set");
    assert_eq!(duties.test_run(&syn).expect("run"), XDP_DROP);
    // The denial duties floor learns the device on its first packet (standing for the
    // controller), then refuses and counts; the unknown-source one refuses and counts every
    // frame. Their work is real, not folded away: the counters show it was done.
    let refused = |dp: &mut Datapath| -> u64 {
        let map = dp.ebpf_mut().map_mut("LZ_DUTY_STATS").expect("stats");
        let stats: aya::maps::PerCpuArray<_, u64> =
            aya::maps::PerCpuArray::try_from(map).expect("typed");
        stats.get(&1, 0).expect("slot").iter().sum()
    };
    // Packets counted for devices, over every cell.
    let counted = |dp: &mut Datapath| -> u64 {
        let map = dp.ebpf_mut().map_mut("LZ_DUTY_COUNT").expect("counters");
        let cells: aya::maps::PerCpuArray<_, [u64; 2]> =
            aya::maps::PerCpuArray::try_from(map).expect("typed");
        cells
            .iter()
            .map(|v| v.expect("cell").iter().map(|c| c[0]).sum::<u64>())
            .sum()
    };
    let mut duties_deny = Datapath::load_floor_duties_deny().expect("denial duties loads");
    let mut duties_unknown =
        Datapath::load_floor_duties_unknown().expect("unknown duties floor loads");
    for _ in 0..3 {
        assert_eq!(duties_deny.test_run(&syn).expect("run"), XDP_DROP);
        assert_eq!(duties_unknown.test_run(&syn).expect("run"), XDP_DROP);
    }
    assert_eq!(counted(&mut duties_deny), 2);
    assert_eq!(refused(&mut duties_unknown), 3);
    // The unknown source's address lookup sits behind an address filter, as lazaret's: the
    // source's address known but its bit clear, the lookup is skipped and it is refused;
    // with its bit set, the lookup finds it and it passes (slot 0: generation 0).
    let words = AddrBits::v4(DEV_IP.octets());
    {
        let map = duties_unknown
            .ebpf_mut()
            .map_mut("LZ_DUTY_ADDR")
            .expect("addresses");
        let mut addrs: aya::maps::HashMap<_, [u64; 2], u32> =
            aya::maps::HashMap::try_from(map).expect("typed");
        addrs.insert([words.0, words.1], 0, 0).expect("address");
    }
    assert_eq!(duties_unknown.test_run(&syn).expect("run"), XDP_DROP);
    {
        let map = duties_unknown
            .ebpf_mut()
            .map_mut("LZ_DUTY_ADDRBITS")
            .expect("bits");
        let mut bits: aya::maps::Array<_, AddrBits> =
            aya::maps::Array::try_from(map).expect("typed");
        let mut set = Box::<AddrBits>::default();
        set.insert(words);
        bits.set(0, set, 0).expect("bits");
    }
    assert_eq!(duties_unknown.test_run(&syn).expect("run"), XDP_PASS);
    // The new-flow duties floor opens the device's flow (learning the device and the rule
    // on the first packet), passes its next packet through it, opens a second flow from
    // another port, and refuses another MAC's new flow from the device's address.
    let mut duties_open = Datapath::load_floor_duties_open().expect("new-flow duties loads");
    let second = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40001, 2575, TCP_SYN);
    let other_mac = tcp4(OTHER_MAC, GW_MAC, DEV_IP, SERVER, 40002, 2575, TCP_SYN);
    verdicts(
        &mut duties_open,
        &[
            (&syn, XDP_PASS),
            (&syn, XDP_PASS),
            (&second, XDP_PASS),
            (&other_mac, XDP_DROP),
        ],
    );
    assert_eq!(counted(&mut duties_open), 2, "two flows opened");
    let mut empty = Datapath::load_empty().expect("empty program loads");
    assert_eq!(empty.test_run(&syn).expect("run"), XDP_PASS);
    // IPv6 with hop-by-hop and destination options: both directions share one flow too.
    let v6 = |src, dst, sport, dport| {
        let l3 = ipv6(
            src,
            dst,
            &[Ext::HopByHop, Ext::DestOpts],
            PROTO_TCP,
            &tcp(sport, dport, TCP_ACK, &[]),
        );
        ethernet(GW_MAC, DEV_MAC, &[], ETH_IPV6, &l3)
    };
    let mut floor6 = Datapath::load_floor().expect("floor loads");
    let (a, b) = (handmade::DEV_IP6, handmade::SERVER6);
    for frame in [v6(a, b, 40001, 2575), v6(b, a, 2575, 40001)] {
        assert_eq!(floor6.test_run(&frame).expect("run"), XDP_PASS);
    }
    let map = floor6.ebpf_mut().map_mut(MAP_FLOWS).expect("flow table");
    let flows: aya::maps::HashMap<_, FlowKey, FlowValue> =
        aya::maps::HashMap::try_from(map).expect("typed");
    let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
    assert_eq!(keys.len(), 1, "one IPv6 flow for both directions: {keys:?}");
    assert_eq!((keys[0].proto, keys[0].family), (PROTO_TCP, FAMILY_V6));
    let (xlated, jited) = floor.program_sizes().expect("sizes");
    assert!(xlated > 0 && jited > 0, "sizes {xlated} / {jited}");
}

/// Runs each frame in turn and checks its XDP action.
fn verdicts(dp: &mut Datapath, runs: &[(&Vec<u8>, u32)]) {
    for (i, (frame, want)) in runs.iter().enumerate() {
        assert_eq!(dp.test_run(frame).expect("run"), *want, "frame {i}");
    }
}

// === Replies from upstream judged from the flow entry (`upstream_reply`) ===

/// The device's session to the server, opened from the device port, and the server's
/// answer arriving upstream.
fn session(sport: u16) -> (Vec<u8>, Vec<u8>) {
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_SYN);
    let synack = handmade::server_synack(sport);
    (syn, synack)
}

fn on(t: &mut handmade::Twin, side: u8) {
    t.iface(LO, IfaceConfig::new(side));
}

#[test]
fn a_reply_from_upstream_is_charged_to_the_device_its_flow_names() {
    let mut t = handmade::Twin::new(SITE_F_NEIGHBOR);
    let (syn, synack) = session(40100);
    assert_eq!(t.judge(&syn, LO), Reason::AllowRule);
    on(&mut t, SIDE_UPSTREAM);
    assert_eq!(t.judge(&synack, LO), Reason::AllowFlow);
    let c = t.dp.device_counters(dev_id()).expect("counters");
    assert_eq!(c.allowed_packets, 2, "the reply counts for the device");
}

#[test]
fn a_flow_an_audit_or_learn_device_opens_without_a_rule_is_tracked_and_a_refusal_is_not() {
    // The device's own policy has no rule for port 23. Enforcing, it is refused (and the
    // destination's device is never looked up); in audit or learn mode the refusal is only
    // reported, and the flow is opened as an allowed one would be: its reply passes.
    for (mode, want) in [
        (MODE_ENFORCE, Reason::DenyNoRule),
        (MODE_AUDIT, Reason::Audit),
        (MODE_LEARN, Reason::Learn),
    ] {
        let mut t = handmade::Twin::with(SITE_F_NEIGHBOR, |c| {
            c.edit_device(dev_id(), |d| d.mode = mode);
        });
        let sport = 40110;
        let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 23, TCP_SYN);
        assert_eq!(t.judge(&syn, LO), want, "mode {mode}");
        on(&mut t, SIDE_UPSTREAM);
        let synack = tcp4(
            GW_MAC,
            DEV_MAC,
            SERVER,
            DEV_IP,
            23,
            sport,
            TCP_SYN | TCP_ACK,
        );
        let reply = if want == Reason::DenyNoRule {
            Reason::DenyNoFlow
        } else {
            Reason::AllowFlow
        };
        assert_eq!(t.judge(&synack, LO), reply, "mode {mode}");
    }
    // The same soft refusal towards a managed server (the bystander, at the server's
    // address): the destination's device is looked up after all. Enforcing, with no rule
    // for the flow, it refuses it: the initiator's mode softens its own end only.
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40111, 23, TCP_SYN);
    let mut t = with_managed_server(|c| c.edit_device(dev_id(), |d| d.mode = MODE_AUDIT));
    assert_eq!(t.judge(&syn, LO), Reason::DenyNoRule);
    let tracked = t.dp.flows().expect("flows");
    assert!(
        !tracked
            .iter()
            .any(|(_, k, _)| k.port_a == 40111 || k.port_b == 40111),
        "the refused flow is not tracked: {tracked:?}"
    );
    // In audit mode too, it reports its own refusal, and the flow entry names both ends,
    // each found by its address.
    let mut t = with_managed_server(|c| {
        c.edit_device(dev_id(), |d| d.mode = MODE_AUDIT);
        c.edit_device(bystander_id(), |d| d.mode = MODE_AUDIT);
    });
    assert_eq!(t.judge(&syn, LO), Reason::Audit);
    let (_, _, flow) =
        t.dp.flows()
            .expect("flows")
            .into_iter()
            .find(|(_, k, _)| k.port_a == 40111 || k.port_b == 40111)
            .expect("the audited flow is tracked");
    let mut ends = [flow.dev_a, flow.dev_b];
    ends.sort_unstable();
    let mut want = [dev_id(), bystander_id()];
    want.sort_unstable();
    assert_eq!(ends, want, "both ends named");
    assert_eq!(flow.flags, FLOW_F_ADDR_A | FLOW_F_ADDR_B);
}

/// The handmade maps with the bystander device at the server's address (a managed
/// server), after `edit`.
fn with_managed_server(
    edit: impl FnOnce(&mut lazaret::dataplane::xdp::MapContents),
) -> handmade::Twin {
    handmade::Twin::with(SITE_F_NEIGHBOR, |c| {
        for (k, d) in &mut c.dev_ip4 {
            if d.id == bystander_id() {
                k.addr = SERVER.octets();
            }
        }
        edit(c);
        c.sort_devices();
    })
}

#[test]
fn a_managed_source_from_upstream_on_a_live_flow_is_still_spoofing() {
    // The server is a managed device too (the bystander, in audit mode so that it admits
    // the session): both ends of the flow entry name devices, found by their addresses.
    let mut t = with_managed_server(|c| c.edit_device(bystander_id(), |d| d.mode = MODE_AUDIT));
    let (syn, _) = session(40101);
    assert_eq!(t.judge(&syn, LO), Reason::Audit);
    // The device's own segment, arriving from upstream: the flow's key, and its
    // destination is a device the entry names by address; but so is its source, and a
    // managed source from upstream is forged, whatever flow it claims.
    let forged = tcp4(GW_MAC, GW_MAC, DEV_IP, SERVER, 40101, 2575, TCP_ACK);
    on(&mut t, SIDE_UPSTREAM);
    assert_eq!(t.judge(&forged, LO), Reason::DenySpoof);
}

#[test]
fn a_reply_from_upstream_to_a_device_known_by_its_mac_alone_is_judged_by_identity() {
    // The device has no IPv4 binding: it is identified by its MAC, and its address names it
    // only as the owner by first use (its SYN claimed it), which can pass to another device:
    // the entry does not flag that endpoint (FLOW_F_ADDR_* unset), so the reply takes the
    // full path, which finds the owner, and passes as the flow's.
    let mut t = handmade::Twin::with(SITE_F_NEIGHBOR, |c| {
        c.dev_ip4.retain(|(_, d)| d.id != dev_id());
        c.edit_device(dev_id(), |d| d.flags |= DEV_F_NO_IP4);
    });
    let (syn, synack) = session(40102);
    assert_eq!(t.judge(&syn, LO), Reason::AllowRule);
    on(&mut t, SIDE_UPSTREAM);
    assert_eq!(t.judge(&synack, LO), Reason::AllowFlow);
    let (_, _, flow) =
        t.dp.flows()
            .expect("flows")
            .into_iter()
            .find(|(_, k, _)| k.port_a == 40102 || k.port_b == 40102)
            .expect("the device's flow is tracked");
    assert_eq!(flow.flags, 0, "no endpoint flagged as found by its address");
    // Isolated, it is not: the owner's quarantine judges its flow again.
    t.quarantine(dev_id(), QUARANTINE_ISOLATE);
    let (_, again) = session(40102);
    assert_eq!(t.judge(&again, LO), Reason::DenyQuarantine);
}

#[test]
fn a_reply_from_upstream_after_a_quarantine_is_judged_again() {
    let mut t = handmade::Twin::new(SITE_F_NEIGHBOR);
    let (syn, synack) = session(40103);
    assert_eq!(t.judge(&syn, LO), Reason::AllowRule);
    t.quarantine(dev_id(), QUARANTINE_ISOLATE);
    on(&mut t, SIDE_UPSTREAM);
    assert_eq!(t.judge(&synack, LO), Reason::DenyQuarantine);
}

// === Counter cells (LZ_DEV_COUNT is an array; the loader gives each device a cell) ===

/// The hand-made generation `generation` for the next slot, with or without the bystander.
fn generation(
    dp: &mut Datapath,
    generation: u64,
    bystander: bool,
) -> lazaret::dataplane::xdp::MapContents {
    let mut c = contents(dp.next_slot().expect("slot"), generation);
    if !bystander {
        let other = |d: &Device| d.id != bystander_id();
        c.dev_mac.retain(|(_, d)| other(d));
        c.dev_ip4.retain(|(_, d)| other(d));
        c.dev_ip6.retain(|(_, d)| other(d));
        c.devices.retain(|(_, d)| other(d));
    }
    c
}

/// The program skips an identity lookup by address when the active slot's address bits
/// (LZ_DEV_ADDRBITS) say no device has the address. Bypass class: bits not written with
/// their slot, or for the other slot, would make a device's new address unmanaged —
/// upstream traffic to it passed unjudged, upstream traffic from it not refused as forged.
/// Each reload lands in the other slot (generation 1 is in slot 1): the bystander's
/// addresses are absent from slot 0, present in slot 1 while slot 0 lacks them, absent
/// from slot 1, then present in slot 0 while slot 1 lacks them.
#[test]
fn an_address_a_reload_gives_a_device_is_its_own_in_either_slot_at_once() {
    let mut t = handmade::Twin::new(SITE_F_NEIGHBOR);
    on(&mut t, SIDE_UPSTREAM);
    let to4 = tcp4(
        GW_MAC,
        GW_MAC,
        SERVER,
        handmade::BYSTANDER_IP,
        40300,
        5000,
        TCP_SYN,
    );
    let from4 = tcp4(
        GW_MAC,
        GW_MAC,
        handmade::BYSTANDER_IP,
        SERVER,
        40301,
        2575,
        TCP_SYN,
    );
    let v6 = |src, dst| {
        let tcp = tcp(40302, 5000, TCP_SYN, &[]);
        let ip = ipv6(src, dst, &[], PROTO_TCP, &tcp);
        with_l4_checksum(ethernet(GW_MAC, GW_MAC, &[], 0x86dd, &ip))
    };
    let to6 = v6(handmade::SERVER6, handmade::BYSTANDER_IP6);
    let from6 = v6(handmade::BYSTANDER_IP6, handmade::SERVER6);
    for (number, present) in [(2, false), (3, true), (4, false), (5, false), (6, true)] {
        let g = generation(&mut t.dp, number, present);
        t.install(&g);
        let (to, from) = if present {
            (Reason::DenyNoRule, Reason::DenySpoof)
        } else {
            (Reason::PassUnmanaged, Reason::PassUnmanaged)
        };
        for (frame, want) in [(&to4, to), (&from4, from), (&to6, to), (&from6, from)] {
            assert_eq!(t.judge(frame, LO), want, "generation {number}");
        }
    }
}

#[test]
fn device_counters_stay_with_their_device_across_reloads_and_restart_when_it_left() {
    let mut dp = loaded();
    let by_syn = tcp4(
        handmade::BYSTANDER_MAC,
        GW_MAC,
        handmade::BYSTANDER_IP,
        SERVER,
        40200,
        2575,
        TCP_SYN,
    );
    let syn = |sport| tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_SYN);
    let allowed = |dp: &mut Datapath, id| dp.device_counters(id).expect("counters").allowed_packets;
    assert_eq!(dp.test_run(&syn(40201)).expect("run"), XDP_PASS);
    assert_eq!(dp.test_run(&by_syn).expect("run"), XDP_PASS);
    // Generation 2 drops the bystander: the device's count stays its own.
    let g2 = generation(&mut dp, 2, false);
    dp.install(&g2).expect("install");
    assert_eq!(dp.test_run(&syn(40202)).expect("run"), XDP_PASS);
    assert_eq!(allowed(&mut dp, dev_id()), 2);
    // Generation 3 still without it: gone from both slots, its cell is free; generation 4
    // brings it back, counted from zero in whatever cell it gets, and the device's count
    // is untouched.
    let g3 = generation(&mut dp, 3, false);
    dp.install(&g3).expect("install");
    assert_eq!(
        allowed(&mut dp, bystander_id()),
        0,
        "not counted while absent"
    );
    let g4 = generation(&mut dp, 4, true);
    dp.install(&g4).expect("install");
    assert_eq!(allowed(&mut dp, bystander_id()), 0);
    assert_eq!(dp.test_run(&by_syn).expect("run"), XDP_PASS);
    assert_eq!(allowed(&mut dp, bystander_id()), 1);
    assert_eq!(allowed(&mut dp, dev_id()), 2);
}

/// A freed cell given to a returning device is zeroed before any record names it, even when
/// the install that gave it failed to zero it: the next install zeroes it again.
#[test]
fn a_reused_cell_is_zeroed_by_the_next_install_when_zeroing_it_failed() {
    let mut dp = loaded();
    let by_syn = |sport| {
        tcp4(
            handmade::BYSTANDER_MAC,
            GW_MAC,
            handmade::BYSTANDER_IP,
            SERVER,
            sport,
            2575,
            TCP_SYN,
        )
    };
    let allowed = |dp: &mut Datapath| {
        dp.device_counters(bystander_id())
            .expect("counters")
            .allowed_packets
    };
    assert_eq!(dp.test_run(&by_syn(40220)).expect("run"), XDP_PASS);
    assert_eq!(dp.test_run(&by_syn(40221)).expect("run"), XDP_PASS);
    // Gone from both slots: its cell is free, still holding its two packets.
    for g in [2, 3] {
        let without = generation(&mut dp, g, false);
        dp.install(&without).expect("install");
    }
    // It returns (to the cell it left, the only one free), and the zeroing fails: so does
    // that install.
    dp.fail_next_counter_clear();
    let back = generation(&mut dp, 4, true);
    assert!(
        dp.install(&back).is_err(),
        "the injected failure fails the install"
    );
    // The retry zeroes the cell before naming it, though the device already holds it.
    let back = generation(&mut dp, 4, true);
    dp.install(&back).expect("install");
    assert_eq!(
        allowed(&mut dp),
        0,
        "no count of its previous life in the cell"
    );
    assert_eq!(dp.test_run(&by_syn(40222)).expect("run"), XDP_PASS);
    assert_eq!(allowed(&mut dp), 1);
}

#[test]
fn counter_cells_are_read_back_from_pinned_maps_after_a_restart() {
    let tmp = lazaret_tests::netns::TempDir::new().expect("temp dir");
    let bpffs = lazaret_tests::netns::BpfMount::new(&tmp.path).expect("bpffs");
    let opts = lazaret::dataplane::xdp::LoadOptions {
        pin_dir: Some(bpffs.path.join("v")),
    };
    std::fs::create_dir_all(bpffs.path.join("v")).expect("pin dir");
    let syn = |sport| tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_SYN);
    {
        let mut dp = Datapath::load(&opts).expect("load");
        let g1 = contents(dp.next_slot().expect("slot"), 1);
        dp.install(&g1).expect("install");
        dp.set_interface(LO, SIDE_DEVICES).expect("iface");
        assert_eq!(dp.test_run(&syn(40210)).expect("run"), XDP_PASS);
        assert_eq!(
            dp.device_counters(dev_id())
                .expect("counters")
                .allowed_packets,
            1
        );
    }
    // A new process adopts the pinned maps: the device's cell is found again, and the next
    // generation keeps it there.
    let mut dp = Datapath::load(&opts).expect("adopt");
    assert_eq!(
        dp.device_counters(dev_id())
            .expect("counters")
            .allowed_packets,
        1
    );
    let g2 = contents(dp.next_slot().expect("slot"), 2);
    dp.install(&g2).expect("install");
    assert_eq!(dp.test_run(&syn(40211)).expect("run"), XDP_PASS);
    assert_eq!(
        dp.device_counters(dev_id())
            .expect("counters")
            .allowed_packets,
        2
    );
}

#[test]
fn a_quarantine_follows_its_device_through_cells_and_never_its_cell() {
    let mut dp = loaded();
    let syn_from = |mac, ip, sport| tcp4(mac, GW_MAC, ip, SERVER, sport, 2575, TCP_SYN);
    let by_syn = |sport| syn_from(handmade::BYSTANDER_MAC, handmade::BYSTANDER_IP, sport);
    let isolated = isolate(&mut dp, bystander_id());
    assert_eq!(dp.test_run(&by_syn(40300)).expect("run"), XDP_DROP);
    // The bystander leaves both slots (two generations without it): its cell is freed.
    for g in [2, 3] {
        let c = generation(&mut dp, g, false);
        dp.install(&c).expect("install");
    }
    // A new device arrives and takes a free cell, perhaps the bystander's: it is not
    // quarantined.
    let newcomer = lazaret_abi::device_id_hash(b"mon-icu-03");
    let mut g4 = generation(&mut dp, 4, true);
    g4.edit_device(bystander_id(), |d| d.id = newcomer);
    dp.install(&g4).expect("install");
    assert_eq!(
        dp.device_state(newcomer).expect("state"),
        DevState::default()
    );
    assert_eq!(dp.test_run(&by_syn(40301)).expect("run"), XDP_PASS);
    // The bystander comes back (the newcomer gone): quarantined again, from its first packet.
    let g5 = generation(&mut dp, 5, false);
    dp.install(&g5).expect("install");
    let g6 = generation(&mut dp, 6, true);
    dp.install(&g6).expect("install");
    assert_eq!(dp.device_state(bystander_id()).expect("state"), isolated);
    assert_eq!(dp.test_run(&by_syn(40302)).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyQuarantine, SIDE_DEVICES), 2);
}

/// The fast path takes data packets of confirmed flows; a FIN or RST on one still moves
/// the flow to closing (and its shorter timeout), from either side.
#[test]
fn fin_and_rst_on_an_established_flow_close_it() {
    let mut dp = loaded();
    for (sport, flags, from_device) in [
        (40070, TCP_FIN | TCP_ACK, true),
        (40071, TCP_RST, true),
        (40072, TCP_FIN | TCP_ACK, false),
    ] {
        confirmed(&mut dp, sport);
        let f = if from_device {
            dp.set_interface(LO, SIDE_DEVICES).expect("iface");
            tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, flags)
        } else {
            dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
            tcp4(GW_MAC, DEV_MAC, SERVER, DEV_IP, 2575, sport, flags)
        };
        assert_eq!(dp.test_run(&f).expect("run"), XDP_PASS);
        assert_eq!(
            flow_of(&mut dp, sport),
            Some((FlowTable::Established, FLOW_CLOSING)),
            "flags {flags:#x}, from the device: {from_device}"
        );
    }
}

/// Moves the last-seen time of the device's flow from `sport` `ago` ns into the past;
/// `false`, leaving it, when the machine's monotonic clock (its uptime) is younger than
/// `ago`: no flow can be that old yet (a timestamp ahead of the clock counts as fresh).
fn age_flow(dp: &mut Datapath, sport: u16, ago: u64) -> bool {
    let Some(then) = monotonic_ns().checked_sub(ago) else {
        eprintln!(
            "the machine has been up for less than {} s: a flow cannot be aged past it, and the check that needs it is left out",
            ago / 1_000_000_000
        );
        return false;
    };
    use aya::maps::HashMap;
    let (table, key, mut value) = dp
        .flows()
        .expect("flows")
        .into_iter()
        .find(|(_, k, _)| k.proto == PROTO_TCP && (k.port_a == sport || k.port_b == sport))
        .expect("the flow");
    let name = match table {
        FlowTable::New => MAP_FLOWS,
        FlowTable::Established => MAP_EST_FLOWS,
    };
    value.last_seen_ns = then;
    let map = dp.ebpf_mut().map_mut(name).expect("flow table");
    let mut map: HashMap<_, FlowKey, FlowValue> = HashMap::try_from(map).expect("a hash");
    map.insert(key, value, 0).expect("rewrite the flow");
    true
}

/// Bypass class: a DHCP server's message from a device port is refused whatever the flow
/// table holds (judge_ip; a client reads what reaches its port 68 whatever the source port).
/// The fast path, which passes a data packet of an established flow without judging it,
/// hands a device's UDP from the server's port or to the client's to the full path. Such a
/// flow cannot be confirmed today (the full path refuses the packet that would open it);
/// one confirmed before an upgrade brought the guard can: planted here in the established
/// table, beside a flow to another port, whose datagram the fast path passes.
#[test]
fn a_dhcp_servers_message_on_an_established_flow_is_still_refused() {
    use aya::maps::HashMap;
    let mut dp = loaded();
    confirmed(&mut dp, 40090);
    let (_, tcp, value) = dp
        .flows()
        .expect("flows")
        .into_iter()
        .find(|(t, k, _)| *t == FlowTable::Established && (k.port_a == 40090 || k.port_b == 40090))
        .expect("the confirmed flow");
    // The same ends and state, as UDP from the device's port 40090 to `port` on the server.
    let plant = |dp: &mut Datapath, port: u16| {
        let mut key = tcp;
        key.proto = PROTO_UDP;
        if key.port_a == 2575 {
            key.port_a = port;
        } else {
            key.port_b = port;
        }
        let map = dp.ebpf_mut().map_mut(MAP_EST_FLOWS).expect("flow table");
        let mut map: HashMap<_, FlowKey, FlowValue> = HashMap::try_from(map).expect("a hash");
        map.insert(key, value, 0).expect("plant the flow");
    };
    plant(&mut dp, 123);
    plant(&mut dp, 68);
    let datagram = |dport| udp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40090, dport);
    let before = stat(&mut dp, Reason::AllowFlow, SIDE_DEVICES);
    assert_eq!(dp.test_run(&datagram(123)).expect("run"), XDP_PASS);
    assert_eq!(
        stat(&mut dp, Reason::AllowFlow, SIDE_DEVICES),
        before + 1,
        "the planted flow to another port passes as the flow's"
    );
    assert_eq!(dp.test_run(&datagram(68)).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyRogueDhcp, SIDE_DEVICES), 1);
}

/// A confirmed flow idle past its timeout is gone: its next data packet, from either side,
/// is judged as the first packet of a flow (a mid-stream ACK opens none), and a closing
/// flow has the closing timeout, not the established one.
#[test]
fn an_established_flow_past_its_timeout_passes_nothing() {
    let mut dp = loaded();
    let second = 1_000_000_000;
    let ack = |sport| tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, 2575, TCP_ACK);
    confirmed(&mut dp, 40080);
    let mut denied = 0;
    if age_flow(&mut dp, 40080, TIMEOUT_TCP_ESTABLISHED_NS + second) {
        assert_eq!(dp.test_run(&ack(40080)).expect("run"), XDP_DROP);
        denied += 1;
        assert_eq!(stat(&mut dp, Reason::DenyNoFlow, SIDE_DEVICES), denied);
    }

    confirmed(&mut dp, 40081);
    let fin = tcp4(
        DEV_MAC,
        GW_MAC,
        DEV_IP,
        SERVER,
        40081,
        2575,
        TCP_FIN | TCP_ACK,
    );
    assert_eq!(dp.test_run(&fin).expect("run"), XDP_PASS);
    assert!(TIMEOUT_TCP_CLOSING_NS + second < TIMEOUT_TCP_ESTABLISHED_NS);
    if age_flow(&mut dp, 40081, TIMEOUT_TCP_CLOSING_NS + second) {
        assert_eq!(dp.test_run(&ack(40081)).expect("run"), XDP_DROP);
        denied += 1;
        assert_eq!(stat(&mut dp, Reason::DenyNoFlow, SIDE_DEVICES), denied);
    }

    // From upstream, the server's data on an expired flow.
    confirmed(&mut dp, 40082);
    if age_flow(&mut dp, 40082, TIMEOUT_TCP_ESTABLISHED_NS + second) {
        dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
        let back = tcp4(GW_MAC, DEV_MAC, SERVER, DEV_IP, 2575, 40082, TCP_ACK);
        assert_eq!(dp.test_run(&back).expect("run"), XDP_DROP);
        assert_eq!(stat(&mut dp, Reason::DenyNoFlow, SIDE_UPSTREAM), 1);
    }
}

/// The records the fast path reads by cell follow every generation into its slot: a
/// session confirmed under one generation, its device moved to another VLAN by each of the
/// next three (the last written over the first one's slot), passes only on the VLAN of the
/// generation enforcing.
#[test]
fn a_devices_record_by_cell_follows_every_generation() {
    let mut dp = loaded();
    let sport = 40090;
    let seg = |vlan: u16, flags| {
        let l3 = ipv4(
            DEV_IP,
            SERVER,
            6,
            &tcp(sport, 2575, flags, b"data"),
            &Ipv4Opts::default(),
        );
        ethernet(GW_MAC, DEV_MAC, &[(ETH_8021Q, vlan)], ETH_IPV4, &l3)
    };
    let mut generation = 1;
    let mut move_to = |dp: &mut Datapath, vlan: u16| {
        generation += 1;
        let slot = dp.next_slot().expect("slot");
        let mut c = contents(slot, generation);
        c.edit_device(dev_id(), |d| d.vlan = vlan);
        dp.install(&c).expect("install");
    };
    move_to(&mut dp, 20);
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    assert_eq!(dp.test_run(&seg(20, TCP_SYN)).expect("run"), XDP_PASS);
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    let synack = handmade::server_synack(sport);
    assert_eq!(dp.test_run(&synack).expect("run"), XDP_PASS);
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    assert_eq!(dp.test_run(&seg(20, TCP_ACK)).expect("run"), XDP_PASS);
    assert_eq!(
        flow_of(&mut dp, sport),
        Some((FlowTable::Established, FLOW_ESTABLISHED))
    );
    let mut spoofs = 0;
    for (now, before) in [(30, [20, 20]), (40, [20, 30])] {
        move_to(&mut dp, now);
        // Re-judged under the new generation, then judged by the fast path.
        for _ in 0..2 {
            assert_eq!(
                dp.test_run(&seg(now, TCP_ACK)).expect("run"),
                XDP_PASS,
                "VLAN {now}"
            );
        }
        for old in before {
            assert_eq!(
                dp.test_run(&seg(old, TCP_ACK)).expect("run"),
                XDP_DROP,
                "VLAN {old} under {now}"
            );
            spoofs += 1;
        }
    }
    assert_eq!(stat(&mut dp, Reason::DenySpoof, SIDE_DEVICES), spoofs);
}

/// A flow as the other member of a pair replicates it (`daemon::flowsync`): the device's
/// `sport` to the server's `port`, established, idle for a second, in `table`.
fn replicated(table: FlowTable, sport: u16, port: u16) -> SyncedFlow {
    let dev = std::net::SocketAddr::from((DEV_IP, sport));
    let srv = std::net::SocketAddr::from((SERVER, port));
    let (a, b, initiator) = if dev <= srv {
        (dev, srv, 0)
    } else {
        (srv, dev, 1)
    };
    SyncedFlow {
        table,
        proto: PROTO_TCP,
        a,
        b,
        initiator,
        state: FLOW_ESTABLISHED,
        resp_isn: 0,
        idle_ms: 1000,
    }
}

/// Flows the other member replicates are written under no generation, so the datapath
/// judges each again under this member's policy on its next packet, from either side: a
/// session the policy allows carries on mid-stream (no SYN: the session survives the
/// failover), one it forbids is dropped — a member holding the pair's key still cannot open
/// what the policy does not — and so is one of a device quarantined here.
#[test]
fn a_replicated_flow_is_judged_again_under_this_members_policy() {
    let mut dp = loaded();
    let mut tables = dp.flow_tables().expect("flow tables");
    let now = flowsync::datapath_now_ns();
    for f in [
        replicated(FlowTable::Established, 41000, 2575),
        replicated(FlowTable::New, 41001, 2575),
        replicated(FlowTable::Established, 41002, 22),
        replicated(FlowTable::Established, 41003, 2575),
    ] {
        let (table, key, value) = f.entry(now).expect("a valid flow");
        tables.write(table, &key, &value).expect("write");
    }
    let from_device = |sport, port| tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, sport, port, TCP_ACK);
    let from_server = |sport| tcp4(GW_MAC, DEV_MAC, SERVER, DEV_IP, 2575, sport, TCP_ACK);
    // Allowed: the device's next segment passes, and so does the server's after it.
    assert_eq!(
        dp.test_run(&from_device(41000, 2575)).expect("run"),
        XDP_PASS
    );
    assert_eq!(
        flow_of(&mut dp, 41000),
        Some((FlowTable::Established, FLOW_ESTABLISHED))
    );
    dp.set_interface(LO, SIDE_UPSTREAM).expect("iface");
    assert_eq!(dp.test_run(&from_server(41000)).expect("run"), XDP_PASS);
    // The server speaks first after the takeover: judged again from its side.
    assert_eq!(dp.test_run(&from_server(41001)).expect("run"), XDP_PASS);
    dp.set_interface(LO, SIDE_DEVICES).expect("iface");
    // Not allowed here (no rule for port 22): dropped, and the entry is gone.
    assert_eq!(dp.test_run(&from_device(41002, 22)).expect("run"), XDP_DROP);
    assert_eq!(stat(&mut dp, Reason::DenyNoRule, SIDE_DEVICES), 1);
    assert_eq!(flow_of(&mut dp, 41002), None);
    // Isolated on this member: its replicated session is cut.
    isolate(&mut dp, dev_id());
    assert_eq!(
        dp.test_run(&from_device(41003, 2575)).expect("run"),
        XDP_DROP
    );
    assert_eq!(stat(&mut dp, Reason::DenyQuarantine, SIDE_DEVICES), 1);
}

/// Every branch added to the packet path multiplies the states the verifier walks, and past
/// 1,000,000 explored instructions it refuses the program: the gateway would not start.
/// This keeps a margin, so a change that nears the limit fails here with the figure.
#[test]
fn the_verifier_accepts_the_program_with_room_to_spare() {
    let mut dp = loaded();
    let explored = dp.verified_instructions().expect("program info");
    if explored == 0 {
        // Kernels before 5.16 do not report it.
        eprintln!("skipped: this kernel does not say how much its verifier explored");
        return;
    }
    eprintln!("the verifier explored {explored} instructions");
    assert!(
        explored < 900_000,
        "{explored} of the verifier's 1,000,000: cut the states it walks before adding more"
    );
}
