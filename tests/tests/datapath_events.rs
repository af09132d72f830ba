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
