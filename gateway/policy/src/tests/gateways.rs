//! `[site.gateways.*]`: one policy repository, several gateways, each enforcing the
//! devices behind its own interfaces.

use super::*;

/// Two wards behind two gateways (ward-a a pair), one uplink name on both.
const FLEET: &str = r#"
[site]
name = "Test General"
[site.interfaces.icu0]
side = "devices"
networks = ["10.20.0.0/24"]
[site.interfaces.pumps0]
side = "devices"
networks = ["10.30.0.0/24"]
[site.interfaces.up0]
side = "upstream"
[site.gateways.ward-a]
interfaces = ["icu0", "up0"]
members = ["gw-a1", "gw-a2"]
[site.gateways.ward-b]
interfaces = ["pumps0", "up0"]

[roles.dhcp]
addresses = ["10.10.0.2"]
[roles.dns]
addresses = ["10.10.0.53"]
[roles.ntp]
addresses = ["10.10.0.123"]
[roles.pump-server]
addresses = ["10.10.3.10"]

[classes.monitor]
workflows = ["central"]
[classes.pump]
workflows = ["sync"]

[workflows.sync]
rules = [{ peer = "role:pump-server", proto = "tcp", ports = [443] }]
[workflows.central]
# A monitor on ward-a may reach a pump's web page on ward-b: a peer across gateways.
rules = [{ peer = "class:pump", proto = "tcp", ports = [443] }]

[[devices]]
id = "mon-1"
class = "monitor"
ipv4 = "10.20.0.11"
interface = "icu0"

[[devices]]
id = "pump-1"
class = "pump"
ipv4 = "10.30.0.11"
interface = "pumps0"
"#;

fn fleet_with(edit: impl Fn(&str) -> String) -> Vec<Problem> {
    problems(build(&[("site.toml", &edit(FLEET))]))
}

#[test]
fn each_gateway_enforces_the_devices_behind_its_interfaces_and_shares_the_peers() {
    let (p, c) = build(&[("site.toml", FLEET)]).unwrap_or_else(|e| panic!("{}", e.render()));
    let a = c.for_gateway(&p.site.gateways["ward-a"]);
    let b = c.for_gateway(&p.site.gateways["ward-b"]);
    let ids = |v: &Compiled| v.devices.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let ifaces = |v: &Compiled| {
        v.interfaces
            .iter()
            .map(|i| i.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ["mon-1"]);
    assert_eq!(ids(&b), ["pump-1"]);
    assert_eq!(ifaces(&a), ["icu0", "up0"]);
    assert_eq!(ifaces(&b), ["pumps0", "up0"]);
    assert_eq!((a.stats.devices, a.stats.dev_ip4), (1, 1));
    assert_eq!(p.site.gateways["ward-a"].members, ["gw-a1", "gw-a2"]);
    // ward-a does not manage the pump, but its monitor's rule still names the pump's
    // address as a peer: the policies are the whole site's.
    let mon = a.device("mon-1").unwrap();
    let peers: Vec<String> = a
        .policy(mon.policy)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.peer.to_string())
        .collect();
    assert!(
        peers.iter().any(|n| n == "10.30.0.11/32"),
        "the pump stays a peer of ward-a's monitor: {peers:?}"
    );
    assert!(a.device("pump-1").is_none());
}

#[test]
fn a_devices_side_interface_belongs_to_exactly_one_gateway() {
    let e = fleet_with(|f| {
        f.replace(
            r#"interfaces = ["pumps0", "up0"]"#,
            r#"interfaces = ["pumps0", "icu0", "up0"]"#,
        )
    });
    assert!(
        matches!(&e[..], [Problem::InterfaceOnTwoGateways { interface, first, second }]
            if interface == "icu0" && first == "ward-a" && second == "ward-b"),
        "{e:#?}"
    );
    // An upstream interface is every gateway's own uplink: naming it twice is fine (FLEET).
    let e = fleet_with(|f| {
        f.replace(
            r#"interfaces = ["pumps0", "up0"]"#,
            r#"interfaces = ["up0"]"#,
        )
    });
    assert!(
        e.iter().any(
            |p| matches!(p, Problem::InterfaceWithoutGateway { interface } if interface == "pumps0")
        ),
        "{e:#?}"
    );
    assert!(
        e.iter().any(
            |p| matches!(p, Problem::GatewayWithoutDevices { gateway } if gateway == "ward-b")
        ),
        "{e:#?}"
    );
}

#[test]
fn gateways_name_real_interfaces_and_one_or_two_hosts_each() {
    let e = fleet_with(|f| f.replace(r#"["icu0", "up0"]"#, r#"["icu0", "up1", "up0"]"#));
    assert!(
        matches!(&e[..], [Problem::UnknownName { kind: crate::diag::NameKind::Interface, name }] if name == "up1"),
        "{e:#?}"
    );
    let e = fleet_with(|f| f.replace(r#"["gw-a1", "gw-a2"]"#, r#"["gw-a1", "gw-a2", "gw-a3"]"#));
    assert!(
        matches!(&e[..], [Problem::GatewayMembers { gateway, count: 3 }] if gateway == "ward-a"),
        "{e:#?}"
    );
    let e = fleet_with(|f| {
        f.replace(
            r#"interfaces = ["pumps0", "up0"]"#,
            "interfaces = [\"pumps0\", \"up0\"]\nmembers = [\"gw-a2\"]",
        )
    });
    assert!(
        matches!(&e[..], [Problem::MemberOfTwoGateways { member, .. }] if member == "gw-a2"),
        "{e:#?}"
    );
    let e = fleet_with(|f| {
        f.replace(
            "[site.gateways.ward-b]",
            "[site.gateways.ward-b]\nlocation = \"B\"",
        )
    });
    assert!(matches!(&e[..], [Problem::UnknownKey { .. }]), "{e:#?}");
}

#[test]
fn with_gateways_every_device_names_the_interface_that_decides_its_gateway() {
    let e = fleet_with(|f| {
        f.replace(
            "ipv4 = \"10.30.0.11\"\ninterface = \"pumps0\"",
            "ipv4 = \"10.30.0.11\"",
        )
    });
    assert!(
        matches!(&e[..], [Problem::DeviceWithoutGateway { device }] if device == "pump-1"),
        "{e:#?}"
    );
}

#[test]
fn a_plan_names_the_gateways_a_change_touches() {
    let (op, oc) = build(&[("site.toml", FLEET)]).unwrap();
    // The pump's workflow changes: only ward-b enforces differently.
    let changed = FLEET.replace(
        "ports = [443] }]\n[workflows.central]",
        "ports = [443, 8443] }]\n[workflows.central]",
    );
    let (np, nc) = build(&[("site.toml", &changed)]).unwrap();
    let p = plan::plan(&op, &oc, &np, &nc);
    assert_eq!(p.gateways_touched, ["ward-b"]);
    assert_eq!(p.gateways_untouched, ["ward-a"]);
    let text = p.render();
    assert!(
        text.starts_with("Gateways touched: ward-b (not touched: ward-a)."),
        "{text}"
    );
    assert!(text.contains("~ pump-1 (pump) [gateway ward-b]"), "{text}");
    // A gateway's own definition changing touches it, even with no flow changed.
    let members = FLEET.replace(r#"["gw-a1", "gw-a2"]"#, r#"["gw-a1", "gw-a3"]"#);
    let (np, nc) = build(&[("site.toml", &members)]).unwrap();
    let p = plan::plan(&op, &oc, &np, &nc);
    assert_eq!(p.gateways_touched, ["ward-a"]);
    // A policy without gateways says nothing of them.
    let (p1, c1) = build(&[("base.toml", BASE), ("pump.toml", PUMP)]).unwrap();
    let p = plan::plan(&p1, &c1, &p1, &c1);
    assert!(!p.render().contains("Gateways"));
}

/// A gateway of a fleet lets its devices own addresses of the networks it serves, not of
/// another gateway's: a device on ward A could otherwise take the address of a pump ward B
/// enforces (ward A's maps do not hold it), and pose as it. The whole site's compile (one
/// gateway) counts both.
#[test]
fn a_gateway_lets_its_devices_own_only_addresses_of_its_own_networks() {
    let (p, c) = build(&[("site.toml", FLEET)]).unwrap();
    let claimable = |c: &Compiled, a: &str| {
        let ix: std::collections::BTreeMap<String, u32> = [("icu0", 2), ("pumps0", 3), ("up0", 4)]
            .into_iter()
            .map(|(n, i)| (n.to_string(), i))
            .collect();
        MapIndex::new(&c.map_contents(0, 1, &ix).unwrap())
            .in_claim_networks(lazaret_abi::CLAIM_POLICY as u16, a.parse().unwrap())
    };
    let ward = |name: &str| c.for_gateway(&p.site.gateways[name]);
    let (a, b) = (ward("ward-a"), ward("ward-b"));
    assert!(claimable(&a, "10.20.0.50") && !claimable(&a, "10.30.0.11"));
    assert!(claimable(&b, "10.30.0.50") && !claimable(&b, "10.20.0.11"));
    assert!(claimable(&c, "10.20.0.50") && claimable(&c, "10.30.0.50"));
    // Neither gateway declares an IPv6 network: any IPv6 address but link-local's rules.
    assert!(claimable(&a, "fd00:20::50") && claimable(&a, "fe80::1"));
    // A network both declare (a stretched segment) is the other gateway's too: its devices'
    // bound addresses are not in this gateway's maps, so none is owned here.
    let stretched = FLEET.replace(
        "networks = [\"10.20.0.0/24\"]",
        "networks = [\"10.20.0.0/24\", \"10.30.0.0/24\"]",
    );
    let (p, c) = build(&[("site.toml", &stretched)]).unwrap();
    let a = c.for_gateway(&p.site.gateways["ward-a"]);
    assert!(claimable(&a, "10.20.0.50") && !claimable(&a, "10.30.0.11"));
}
