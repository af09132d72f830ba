//! Atomic apply of the nftables dataplane, in a routed namespace lab: generation A is
//! applied and enforces; a broken generation B is refused as a whole by `nft` with a clear
//! error, and A is still listed and still enforcing (nothing of B leaked in).

use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use lazaret::dataplane::nft::ApplyError;
use lazaret::policy::DeviceStates;
use lazaret_tests::{daemon::fmt_mac, netns::Routed, nftlab::*};
use nftables::{
    schema::{NfListObject, Rule},
    stmt::{JumpTarget, Statement},
};

fn policy(net: &Routed, port: u16) -> String {
    format!(
        r#"
[site]
name = "lab"
unknown_devices = "deny"
[site.interfaces.{dev}]
side = "devices"
[site.interfaces.{up}]
side = "upstream"
[site.essentials]
dhcp = false
dns = false
ntp = false
[classes.patient-monitor]
description = "monitors"
workflows = ["hl7"]
[workflows.hl7]
description = "results to the interface engine"
[[workflows.hl7.rules]]
device = "class:patient-monitor"
peer = "10.10.0.20/32"
proto = "tcp"
ports = [{port}]
[[devices]]
id = "mon-icu-01"
class = "patient-monitor"
mac = "{mac}"
ipv4 = "10.20.0.11"
interface = "{dev}"
"#,
        dev = net.gw_dev_if,
        up = net.gw_up_if,
        mac = fmt_mac(net.device_mac),
    )
}

#[test]
fn a_broken_generation_is_refused_whole_and_the_previous_one_keeps_enforcing() -> Result<()> {
    let net = Routed::new()?;
    let ifaces = [net.gw_dev_if.as_str(), net.gw_up_if.as_str()];
    let nft = nft_in(&net.gateway);
    tcp_echo(&net.server, &[2575, 443], Duration::from_secs(30))?;
    let (dev, srv) = (IpAddr::V4(net.device_ip), IpAddr::V4(net.server_ip));
    let t = Duration::from_millis(500);

    let a = render(
        &contents(&policy(&net, 2575), &net.gateway, &ifaces)?,
        &DeviceStates::default(),
        &net.gateway,
        1,
    )?;
    nft.apply(&a)?;
    let listed = list_text(&net.gateway)?;
    assert!(listed.contains("table inet lazaret"), "{listed}");
    assert!(listed.contains("ct mark set 0x00000001"), "{listed}");
    assert!(tcp_probe(&net.device, dev, srv, 2575, t)?, "A allows 2575");
    assert!(!tcp_probe(&net.device, dev, srv, 443, t)?, "A denies 443");

    // B would allow 443, but one of its rules jumps to a chain that does not exist.
    let mut b = render(
        &contents(&policy(&net, 443), &net.gateway, &ifaces)?,
        &DeviceStates::default(),
        &net.gateway,
        2,
    )?;
    b.objects.push(NfListObject::Rule(Rule {
        family: nftables::types::NfFamily::INet,
        table: "lazaret".into(),
        chain: "flow".into(),
        expr: vec![Statement::Jump(JumpTarget {
            target: "no_such_chain".into(),
        })]
        .into(),
        handle: None,
        index: None,
        comment: None,
    }));
    let err = nft.apply(&b).expect_err("B must be refused");
    match &err {
        ApplyError::Rejected { stderr } => assert!(stderr.contains("Error"), "{stderr}"),
        other => panic!("expected a rejection, got {other}"),
    }
    assert!(
        err.to_string().contains("previous one keeps enforcing"),
        "{err}"
    );

    let listed = list_text(&net.gateway)?;
    assert!(
        listed.contains("ct mark set 0x00000001"),
        "A still listed: {listed}"
    );
    assert!(
        !listed.contains("ct mark set 0x00000002"),
        "nothing of B: {listed}"
    );
    assert!(
        tcp_probe(&net.device, dev, srv, 2575, t)?,
        "A still allows 2575"
    );
    assert!(
        !tcp_probe(&net.device, dev, srv, 443, t)?,
        "A still denies 443"
    );

    // A valid B then replaces A whole.
    b.objects.pop();
    nft.apply(&b)?;
    assert!(tcp_probe(&net.device, dev, srv, 443, t)?, "B allows 443");
    assert!(!tcp_probe(&net.device, dev, srv, 2575, t)?, "B denies 2575");
    let listed = list_text(&net.gateway)?;
    assert_eq!(listed.matches("table inet lazaret").count(), 1, "{listed}");
    Ok(())
}
