//! Bridge deployment on the nftables dataplane: two devices are ports of a Linux bridge on
//! the gateway; `lazaret run` with `dataplane = "nftables"` enforces device-to-device
//! traffic on the segment (through br_netfilter, which the daemon turns on in its
//! namespace): the central station may send time sync (UDP 2000) to the monitor, nothing
//! else passes. The lab is `lazaret_tests::bridge`, shared with the XDP bridge test.

use anyhow::Result;
use lazaret_tests::{
    bridge::{udp_arrives, BridgeLab, CENTRAL, MONITOR},
    nftlab::list_text,
};

#[test]
fn same_segment_traffic_is_enforced_on_a_bridge_by_nftables() -> Result<()> {
    let mut lab = BridgeLab::new()?;
    // Before lazaret: the segment is open.
    assert!(udp_arrives(&lab.mon, MONITOR, &lab.cs, CENTRAL, 5000)?);
    lab.start("dataplane = \"nftables\"")?;
    assert!(list_text(&lab.gw)?.contains("table inet lazaret"));
    assert!(
        udp_arrives(&lab.cs, CENTRAL, &lab.mon, MONITOR, 2000)?,
        "time sync from the central station passes"
    );
    let passed = udp_arrives(&lab.mon, MONITOR, &lab.cs, CENTRAL, 2000)?;
    assert!(
        !passed,
        "the monitor may not open flows to the central station:\n{}\n{}",
        String::from_utf8_lossy(
            &lab.gw
                .exec(&["sysctl", "net.bridge.bridge-nf-call-iptables"])?
                .stdout
        ),
        list_text(&lab.gw)?
    );
    assert!(
        !udp_arrives(&lab.cs, CENTRAL, &lab.mon, MONITOR, 5000)?,
        "other ports are denied on the segment"
    );
    if let Some(mut d) = lab.daemon.take() {
        d.stop();
    }
    Ok(())
}
