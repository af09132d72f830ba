//! Choosing the dataplane: `dataplane = "auto"` falls back to nftables where XDP cannot
//! attach, a switch back to XDP removes the nftables table, and a switch to nftables
//! removes the XDP program. (The scenarios every
//! dataplane must pass — allow/deny, replies, unknown devices, spoofing, quarantine,
//! reload, restart — run on both from one source: see `on_both_dataplanes!` in the ns_*
//! tests.)

use std::time::Duration;

use anyhow::Result;
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Dataplane, Lab},
    nftlab::list_text,
};

fn policy(mac: [u8; 6], port: u16) -> String {
    monitor_policy(mac, &["results"], &workflow("results", "tcp", port))
}

const T: Duration = Duration::from_millis(600);

#[test]
fn auto_falls_back_to_nftables_where_xdp_cannot_attach() -> Result<()> {
    let mut lab = Lab::new(|mac| policy(mac, 2575))?;
    // Native XDP on a veth refuses an MTU above a page: with `xdp_mode = "native"` the
    // attach fails, and `dataplane = "auto"` must fall back.
    for (ns, ifname) in [
        (&lab.net.gateway, &lab.net.gw_dev_if),
        (&lab.net.device, &lab.net.device_if),
    ] {
        ns.exec(&["ip", "link", "set", "dev", ifname, "mtu", "9000"])?;
    }
    let config = std::fs::read_to_string(&lab.config)?.replacen(
        "side = \"devices\"\n",
        "side = \"devices\"\nxdp_mode = \"native\"\n",
        1,
    );
    std::fs::write(&lab.config, config)?;
    lab.use_dataplane("auto")?;
    lab.start()?;
    lab.echo_servers(&[2575, 443])?;
    let status = lab.cli(&["status"])?;
    assert_eq!(
        status["interfaces"][&lab.net.gw_dev_if], "nftables",
        "{status}"
    );
    assert_eq!(
        status["interfaces"][&lab.net.gw_up_if], "nftables",
        "{status}"
    );
    let listed = list_text(&lab.net.gateway)?;
    assert!(listed.contains("table inet lazaret"), "{listed}");
    let mut s = lab.connect(2575, T)?;
    assert!(
        round_trip(&mut s),
        "allowed flow and its replies after the fallback"
    );
    assert!(lab.connect(443, T).is_err(), "denied after the fallback");
    let metrics = lab.metrics_text()?;
    assert!(
        metrics.contains(&format!(
            "lazaret_dataplane_info{{dataplane=\"nftables\",interface=\"{}\"}} 1",
            lab.net.gw_dev_if
        )),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn switching_back_to_xdp_removes_the_table() -> Result<()> {
    let mut lab = Lab::on(Dataplane::Nftables, |mac| policy(mac, 2575))?;
    lab.start()?;
    lab.echo_servers(&[2575, 443])?;
    let mut s = lab.connect(2575, T)?;
    assert!(round_trip(&mut s));
    assert!(list_text(&lab.net.gateway)?.contains("table inet lazaret"));
    lab.kill9();
    let config = std::fs::read_to_string(&lab.config)?.replacen(
        "dataplane = \"nftables\"",
        "dataplane = \"xdp\"",
        1,
    );
    std::fs::write(&lab.config, config)?;
    lab.start()?;
    assert!(
        !list_text(&lab.net.gateway)?.contains("table inet lazaret"),
        "the nftables table is gone once XDP enforces"
    );
    let status = lab.cli(&["status"])?;
    assert_ne!(
        status["interfaces"][&lab.net.gw_dev_if], "nftables",
        "{status}"
    );
    let mut again = lab.connect(2575, T)?;
    assert!(round_trip(&mut again), "XDP allows the workflow");
    assert!(lab.connect(443, T).is_err(), "XDP denies the rest");
    Ok(())
}

#[test]
fn switching_to_nftables_removes_the_xdp_program() -> Result<()> {
    let mut lab = Lab::on(Dataplane::Xdp, |mac| policy(mac, 2575))?;
    lab.start()?;
    lab.echo_servers(&[2575, 443])?;
    let dev = lab.net.gw_dev_if.clone();
    assert!(xdp_program(&lab, &dev)?.is_some(), "XDP enforces first");
    lab.kill9();
    lab.use_dataplane("nftables")?;
    lab.start()?;
    // Left attached, the old program would judge every packet by the policy and quarantine
    // state it was frozen with, in front of nftables.
    assert_eq!(
        xdp_program(&lab, &dev)?,
        None,
        "the XDP program of the earlier run is gone once nftables enforces"
    );
    assert!(list_text(&lab.net.gateway)?.contains("table inet lazaret"));
    let mut s = lab.connect(2575, T)?;
    assert!(round_trip(&mut s), "nftables allows the workflow");
    assert!(lab.connect(443, T).is_err(), "nftables denies the rest");
    Ok(())
}

/// The id of the XDP program `ifname` runs in the lab's gateway, if any.
fn xdp_program(lab: &Lab, ifname: &str) -> Result<Option<u64>> {
    let out = lab
        .net
        .gateway
        .exec(&["ip", "-j", "-d", "link", "show", "dev", ifname])?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(links[0]["xdp"]["prog"]["id"].as_u64())
}
