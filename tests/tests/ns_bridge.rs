//! Bridge deployment: two devices are ports of a Linux bridge on the gateway, on one
//! segment. Device-to-device traffic never crosses a router, and lazaret still enforces it:
//! the central station may send time sync (UDP 2000) to the monitor, nothing else passes.
//! The devices are bound to the bridge and to VLAN 20 in the policy; the ports are
//! configured as ports of that bridge whose untagged frames are VLAN 20 (an access segment),
//! so the bindings hold for frames that arrive on the ports untagged. (The lab is
//! `lazaret_tests::bridge`, shared with the nftables dataplane's bridge test.)

use anyhow::Result;
use lazaret_tests::bridge::{udp_arrives, BridgeLab, CENTRAL, MONITOR};

#[test]
fn same_segment_traffic_is_enforced_on_a_bridge() -> Result<()> {
    let mut lab = BridgeLab::new()?;
    lab.start("")?;
    // Allowed: the central station opens time sync to the monitor (ARP passes too).
    assert!(
        udp_arrives(&lab.cs, CENTRAL, &lab.mon, MONITOR, 2000)?,
        "time sync delivered\n{}",
        lab.output()
    );
    // The reverse direction is not a workflow: the monitor may not open UDP 2000.
    assert!(
        !udp_arrives(&lab.mon, MONITOR, &lab.cs, CENTRAL, 2000)?,
        "monitor → central station dropped"
    );
    // Another port between the same two devices: dropped.
    assert!(
        !udp_arrives(&lab.cs, CENTRAL, &lab.mon, MONITOR, 2001)?,
        "other port dropped"
    );
    // Both were dropped by lazaret's rules, not lost elsewhere.
    let pins = lab
        .bpffs
        .path
        .join(format!("v{}", lazaret_abi::ABI_VERSION));
    let stats = lazaret::dataplane::xdp::Datapath::pinned_stats(&pins)?;
    let no_rule =
        stats[lazaret_abi::stats_index(lazaret_abi::Reason::DenyNoRule, lazaret_abi::SIDE_DEVICES)
            as usize];
    assert_eq!(
        no_rule, 2,
        "the two refused datagrams were dropped by the policy"
    );
    if let Some(d) = &lab.daemon {
        d.signal(libc::SIGTERM);
    }
    let _ = std::fs::remove_dir_all(pins);
    Ok(())
}
