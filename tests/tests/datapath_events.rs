//! Events from the real XDP program: content, per-source rate limiting, counters.

use std::net::Ipv4Addr;

use lazaret_abi::*;
use lazaret_tests::{
    frames::*,
    handmade::{self, dev_id, DEV_IP, DEV_MAC, GW_MAC, OTHER_MAC, SERVER},
};

#[test]
fn denied_flow_produces_an_event_with_its_context() {
    let mut dp = handmade::loaded(SITE_F_NEIGHBOR);
    let mut events = dp.take_events().expect("events");
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40000, 22, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), 1);
    let ev = events.next().expect("one event");
    assert_eq!(ev.kind, EVENT_DENY);
    assert_eq!(Reason::from_u8(ev.reason), Some(Reason::DenyNoRule));
    assert_eq!(ev.device, dev_id());
    assert_eq!(ev.side, SIDE_DEVICES);
    assert_eq!(ev.family, FAMILY_V4);
    assert_eq!(ev.proto, PROTO_TCP);
    assert_eq!((ev.src_port, ev.dst_port), (40000, 22));
    assert_eq!(&ev.src[..4], &DEV_IP.octets());
    assert_eq!(&ev.dst[..4], &SERVER.octets());
    assert_eq!(ev.src_mac, DEV_MAC);
    assert_eq!(ev.generation, 1);
    assert_eq!(ev.rule, NO_RULE);
    assert!(events.next().is_none(), "exactly one event");
}

#[test]
fn allowed_traffic_produces_no_event() {
    let mut dp = handmade::loaded(SITE_F_NEIGHBOR);
    let mut events = dp.take_events().expect("events");
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40000, 2575, TCP_SYN);
    assert_eq!(dp.test_run(&syn).expect("run"), 2);
    assert!(events.next().is_none());
}

#[test]
fn spoof_and_unknown_sources_have_their_own_kinds() {
    let mut dp = handmade::loaded(SITE_F_NEIGHBOR);
    let mut events = dp.take_events().expect("events");
    let spoof = tcp4(OTHER_MAC, GW_MAC, DEV_IP, SERVER, 40000, 2575, TCP_SYN);
    dp.test_run(&spoof).expect("run");
    let unknown = tcp4(
        OTHER_MAC,
        GW_MAC,
        Ipv4Addr::new(10, 20, 0, 77),
        SERVER,
        40000,
        2575,
        TCP_SYN,
    );
    dp.test_run(&unknown).expect("run");
    let evs = events.drain();
    assert_eq!(evs.len(), 2);
    assert_eq!((evs[0].kind, evs[0].device), (EVENT_SPOOF, dev_id()));
    assert_eq!((evs[1].kind, evs[1].device), (EVENT_UNKNOWN, 0));
    assert_eq!(evs[1].src_mac, OTHER_MAC);
}

#[test]
fn a_flooding_device_is_rate_limited_without_starving_others() {
    let mut dp = handmade::loaded(SITE_F_NEIGHBOR);
    let mut events = dp.take_events().expect("events");
    // One run of many repetitions: far faster than the bucket refills.
    let flood = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40000, 22, TCP_SYN);
    dp.test_run_repeat(&flood, 10_000).expect("run");
    // An unknown device right after still gets its event through.
    let unknown = tcp4(
        OTHER_MAC,
        GW_MAC,
        Ipv4Addr::new(10, 20, 0, 77),
        SERVER,
        40000,
        2575,
        TCP_SYN,
    );
    dp.test_run(&unknown).expect("run");
    let evs = events.drain();
    let from_flooder = evs.iter().filter(|e| e.device == dev_id()).count() as u64;
    assert!(
        from_flooder >= u64::from(EVENT_BURST),
        "the burst is delivered ({from_flooder})"
    );
    assert!(
        from_flooder < 10_000 / 2,
        "the flood is limited ({from_flooder})"
    );
    assert_eq!(
        evs.iter().filter(|e| e.kind == EVENT_UNKNOWN).count(),
        1,
        "the other source is heard"
    );
    let st = dp.event_stats().expect("stats");
    assert_eq!(st[EV_STAT_SENT as usize], evs.len() as u64);
    assert_eq!(
        st[EV_STAT_SENT as usize]
            + st[EV_STAT_RATE_LIMITED as usize]
            + st[EV_STAT_RINGBUF_FULL as usize],
        10_001
    );
}

/// A frame that claims a device's identity without passing it spends the budget of its
/// source MAC and the one such sources share, not the device's: 10,000 spoofs in the
/// device's name (reported as naming it), then the device's own denied flow is reported.
/// Charged to the device's budget, the spoofs used it up and silenced its deviations.
#[test]
fn spoofs_in_a_devices_name_do_not_spend_its_event_budget() {
    let mut dp = handmade::loaded(SITE_F_NEIGHBOR);
    let mut events = dp.take_events().expect("events");
    let spoof = tcp4(OTHER_MAC, GW_MAC, DEV_IP, SERVER, 40000, 22, TCP_SYN);
    dp.test_run_repeat(&spoof, 10_000).expect("run");
    let spoofs = events.drain();
    assert!(
        spoofs.len() >= EVENT_BURST as usize && spoofs.len() < 10_000 / 2,
        "the spoofs' burst, then their limit ({})",
        spoofs.len()
    );
    assert!(spoofs
        .iter()
        .all(|e| (e.kind, e.device) == (EVENT_SPOOF, dev_id())));
    let own = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40001, 23, TCP_SYN);
    dp.test_run_repeat(&own, 10).expect("run");
    let heard = events.drain();
    assert_eq!(
        heard.len(),
        10,
        "the device's own denials are all reported: {heard:?}"
    );
    assert!(heard
        .iter()
        .all(|e| e.device == dev_id() && e.reason == Reason::DenyNoRule as u8));
}

/// Packets of no flow are never evidence, so they must not spend the budget the device's
/// deviations are reported from: 10,000 ACKs of no flow from the device (reported within
/// their source's budget), then its ten denied SYNs are all reported.
#[test]
fn packets_of_no_flow_do_not_spend_a_devices_event_budget() {
    let mut dp = handmade::loaded(SITE_F_NEIGHBOR);
    let mut events = dp.take_events().expect("events");
    let ack = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40000, 22, 0x10);
    dp.test_run_repeat(&ack, 10_000).expect("run");
    let acks = events.drain();
    assert!(
        !acks.is_empty() && acks.len() < 10_000 / 2,
        "reported, within a limit ({})",
        acks.len()
    );
    assert!(acks
        .iter()
        .all(|e| e.device == dev_id() && e.reason == Reason::DenyNoFlow as u8));
    let syn = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40001, 23, TCP_SYN);
    dp.test_run_repeat(&syn, 10).expect("run");
    let heard = events.drain();
    assert_eq!(heard.len(), 10, "the device's own denials: {heard:?}");
}

/// A device's event budget lives in its cell, which a departed device's successor may be
/// given: the successor starts with a full budget, not the one its predecessor's flood
/// spent (the cell's bucket is emptied with its counters).
#[test]
fn a_device_given_a_departed_devices_cell_gets_its_own_event_budget() {
    const SUCCESSOR: u64 = 0x5ecc_e550;
    let mut dp = handmade::loaded(SITE_F_NEIGHBOR);
    let mut events = dp.take_events().expect("events");
    let flood = tcp4(DEV_MAC, GW_MAC, DEV_IP, SERVER, 40000, 22, TCP_SYN);
    // Every generation here refills nothing (rate 0): only an emptied bucket gives tokens
    // again, so no time passing can hide a missing clear.
    install(&mut dp, 2, |_| true);
    dp.test_run_repeat(&flood, 10_000).expect("run");
    let spent_cell = cell_of(&mut dp, dev_id()).expect("the device has a cell");
    let from_flooder = (events.drain().iter())
        .filter(|e| e.device == dev_id())
        .count();
    assert_eq!(
        from_flooder, EVENT_BURST as usize,
        "the burst, then nothing"
    );
    // The device leaves both slots (two generations without it), then another takes its
    // binding and, the only free cell, its cell.
    install(&mut dp, 3, |d| d.id != dev_id());
    install(&mut dp, 4, |d| d.id != dev_id());
    install(&mut dp, 5, |d| {
        if d.id == dev_id() {
            d.id = SUCCESSOR;
        }
        true
    });
    assert_eq!(
        cell_of(&mut dp, SUCCESSOR),
        Some(spent_cell),
        "the cell was reused"
    );
    dp.test_run_repeat(&flood, 10_000).expect("run");
    let heard = (events.drain().iter())
        .filter(|e| e.device == SUCCESSOR)
        .count();
    assert_eq!(
        heard, EVENT_BURST as usize,
        "the successor's first denials are reported, a whole burst"
    );
}

/// Installs the hand-made policy as `generation` with no event refill, each device record
/// kept if `keep` says so (it may edit the record).
fn install(
    dp: &mut lazaret::dataplane::xdp::Datapath,
    generation: u64,
    keep: impl Fn(&mut Device) -> bool,
) {
    let slot = dp.next_slot().expect("slot");
    let mut c = handmade::contents(slot, generation, SITE_F_NEIGHBOR);
    c.site.event_rate = 0;
    c.dev_mac.retain_mut(|(_, d)| keep(d));
    c.dev_ip4.retain_mut(|(_, d)| keep(d));
    c.dev_ip6.retain_mut(|(_, d)| keep(d));
    c.devices.retain_mut(|(k, d)| {
        let kept = keep(d);
        k.id = d.id;
        kept
    });
    dp.install(&c).expect("install");
}

/// The cell the loaded records give device `id`.
fn cell_of(dp: &mut lazaret::dataplane::xdp::Datapath, id: u64) -> Option<u16> {
    let map = dp.ebpf_mut().map(MAP_DEVICES).expect("devices map");
    let map: aya::maps::HashMap<_, DevKey, Device> =
        aya::maps::HashMap::try_from(map).expect("typed");
    map.iter()
        .filter_map(Result::ok)
        .find(|(k, _)| k.id == id)
        .map(|(_, d)| d.cell)
}
