//! More devices, device addresses, peers, rules or port entries than the datapath's maps
//! hold: the real `lazaret check` refuses the policy with an error naming the map and both
//! numbers, and exits non-zero, so a daemon never loads part of it (reload runs the same
//! compiler, and a refused policy never replaces the enforcing generation). Each input is
//! the smallest text that crosses its capacity, built in memory.

use std::{fmt::Write as _, process::Command};

use anyhow::Result;
use lazaret_abi::{
    MAP_DEV_IP6, MAP_PEER4, MAP_PEER6, MAP_PORTS, MAP_RULE_HITS, MAX_DEVICES, MAX_DEVICE_ADDRS,
    MAX_PEER_ENTRIES, MAX_PORT_ENTRIES, MAX_RULES,
};
use lazaret_tests::{lazaret_bin, netns::TempDir, reliability::record_figure};

const SITE: &str = r#"
[site]
name = "capacity"
unknown_devices = "deny"
[site.essentials]
dhcp = false
dns = false
ntp = false

[classes.pump]
description = "Infusion pumps"
workflows = ["feed"]
"#;

/// `lazaret check DIR`: (success, stderr + stdout).
fn check(files: &[(&str, String)]) -> Result<(bool, String)> {
    let tmp = TempDir::new()?;
    for (name, text) in files {
        std::fs::write(tmp.path.join(name), text)?;
    }
    let out = Command::new(lazaret_bin()?)
        .arg("check")
        .arg(&tmp.path)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok((out.status.success(), text))
}

fn devices(n: u32) -> String {
    let mut s = String::new();
    for i in 0..n {
        let _ = write!(
            s,
            "[[devices]]\nid = \"pump-{i}\"\nclass = \"pump\"\nmac = \"02:00:00:{:02x}:{:02x}:{:02x}\"\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        );
    }
    s
}

fn workflow(peer: &str) -> String {
    format!(
        "[workflows.feed]\ndescription = \"feed\"\n[[workflows.feed.rules]]\npeer = \"{peer}\"\nproto = \"tcp\"\nports = [2575]\n"
    )
}

#[test]
fn too_many_devices_is_refused_by_check() -> Result<()> {
    let (ok, out) = check(&[
        ("site.toml", SITE.to_string()),
        ("flows.toml", workflow("10.10.0.20/32")),
        ("devices.toml", devices(MAX_DEVICES + 1)),
    ])?;
    assert!(!ok, "check accepted {} devices:\n{out}", MAX_DEVICES + 1);
    let wanted = format!(
        "{} exceeds the datapath capacity of {MAX_DEVICES}",
        MAX_DEVICES + 1
    );
    assert!(out.contains(&wanted), "unclear error:\n{out}");
    // At capacity exactly, it passes.
    let (ok, out) = check(&[
        ("site.toml", SITE.to_string()),
        ("flows.toml", workflow("10.10.0.20/32")),
        ("devices.toml", devices(MAX_DEVICES)),
    ])?;
    assert!(ok, "check refused {MAX_DEVICES} devices:\n{out}");
    record_figure(
        "flood_capacity::too_many_devices_is_refused_by_check",
        &format!(
            "{} devices refused, {MAX_DEVICES} accepted",
            MAX_DEVICES + 1
        ),
    );
    Ok(())
}

#[test]
fn too_many_peer_entries_is_refused_by_check() -> Result<()> {
    // One role with more single addresses than the IPv4 peer map holds.
    let n = MAX_PEER_ENTRIES + 1;
    let mut role = String::from("[roles.everyone]\ndescription = \"too many\"\naddresses = [\n");
    for i in 0..n {
        let _ = writeln!(
            role,
            "\"10.{}.{}.{}\",",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        );
    }
    role.push_str("]\n");
    let (ok, out) = check(&[
        ("site.toml", SITE.to_string()),
        ("roles.toml", role),
        ("flows.toml", workflow("role:everyone")),
        ("devices.toml", devices(1)),
    ])?;
    assert!(!ok, "check accepted {n} peer addresses:\n{out}");
    assert_refused(&out, "IPv4 peer entries", MAP_PEER4, n, MAX_PEER_ENTRIES);
    record_figure(
        "flood_capacity::too_many_peer_entries_is_refused_by_check",
        &format!("{n} IPv4 peer addresses refused (capacity {MAX_PEER_ENTRIES})"),
    );
    Ok(())
}

/// The error names the map and both numbers: the entries counted are at least `count` (the
/// peer maps also hold a few entries of the site's networks, `DIR_CLAIM`).
fn assert_refused(out: &str, what: &str, map: &str, count: u32, max: u32) {
    let head = format!("{what} (map {map}): ");
    let tail = format!(" exceeds the datapath capacity of {max}");
    let found = out.lines().find_map(|l| {
        let rest = &l[l.find(&head)? + head.len()..];
        rest[..rest.find(&tail)?].parse::<u32>().ok()
    });
    assert!(
        found.is_some_and(|n| (count..count + 16).contains(&n)),
        "wanted `{head}<{count} or a few more>{tail}`, got:\n{out}"
    );
}

/// One role of `n` distinct IPv6 addresses.
fn role6(n: u32) -> String {
    let mut role = String::from("[roles.everyone]\ndescription = \"too many\"\naddresses = [\n");
    for i in 0..n {
        let _ = writeln!(role, "\"fd00::{:x}:{:x}\",", i >> 16, i & 0xffff);
    }
    role.push_str("]\n");
    role
}

#[test]
fn too_many_ipv6_device_addresses_is_refused_by_check() -> Result<()> {
    // One device with one address more than the map holds (the count is of addresses,
    // not devices), reaching an IPv6 peer.
    let n = MAX_DEVICE_ADDRS + 1;
    let addrs = (0..n)
        .map(|i| format!("\"fd00:20::{i:x}\""))
        .collect::<Vec<_>>()
        .join(",");
    let device = format!(
        "[[devices]]\nid = \"pump-0\"\nclass = \"pump\"\nmac = \"02:00:00:00:00:01\"\nipv6 = [{addrs}]\n"
    );
    let (ok, out) = check(&[
        ("site.toml", SITE.to_string()),
        ("flows.toml", workflow("fd00:10::20/128")),
        ("devices.toml", device),
    ])?;
    assert!(!ok, "check accepted {n} IPv6 device addresses:\n{out}");
    assert_refused(
        &out,
        "IPv6 device addresses",
        MAP_DEV_IP6,
        n,
        MAX_DEVICE_ADDRS,
    );
    record_figure(
        "flood_capacity::too_many_ipv6_device_addresses_is_refused_by_check",
        &format!("{n} IPv6 device addresses refused (capacity {MAX_DEVICE_ADDRS})"),
    );
    Ok(())
}

#[test]
fn too_many_ipv6_peer_entries_is_refused_by_check() -> Result<()> {
    let n = MAX_PEER_ENTRIES + 1;
    let (ok, out) = check(&[
        ("site.toml", SITE.to_string()),
        ("roles.toml", role6(n)),
        ("flows.toml", workflow("role:everyone")),
        ("devices.toml", devices(1)),
    ])?;
    assert!(!ok, "check accepted {n} IPv6 peer addresses:\n{out}");
    assert_refused(&out, "IPv6 peer entries", MAP_PEER6, n, MAX_PEER_ENTRIES);
    record_figure(
        "flood_capacity::too_many_ipv6_peer_entries_is_refused_by_check",
        &format!("{n} IPv6 peer addresses refused (capacity {MAX_PEER_ENTRIES})"),
    );
    Ok(())
}

#[test]
fn too_many_rules_is_refused_by_check() -> Result<()> {
    // One compiled rule per rule written: one more than the rule ids the datapath counts,
    // as inline tables (the shortest TOML for a rule).
    let n = MAX_RULES + 1;
    let mut flows = String::from("[workflows.feed]\ndescription = \"feed\"\nrules = [\n");
    for _ in 0..n {
        flows.push_str("{peer=\"10.10.0.20/32\",proto=\"tcp\"},\n");
    }
    flows.push_str("]\n");
    let (ok, out) = check(&[
        ("site.toml", SITE.to_string()),
        ("flows.toml", flows),
        ("devices.toml", devices(1)),
    ])?;
    assert!(!ok, "check accepted {n} rules:\n{out}");
    assert_refused(&out, "compiled rules", MAP_RULE_HITS, n, MAX_RULES);
    record_figure(
        "flood_capacity::too_many_rules_is_refused_by_check",
        &format!("{n} rules refused (capacity {MAX_RULES})"),
    );
    Ok(())
}

/// A workflow whose port lookup needs about `121 * ports` entries from a few kilobytes:
/// one rule allows `ports` separate TCP ports toward fd00::/8, and 120 rules allow all of
/// TCP toward the nested prefixes fd00::/9 … fd00::/128. Each nested prefix is a peer
/// class of its own (it holds one more rule), and each class repeats the first rule's
/// ports, which win there by rule order.
fn nested_port_classes(ports: u32) -> String {
    let list = (0..ports)
        .map(|i| (2 * i + 1).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut flows = format!(
        "[workflows.feed]\ndescription = \"feed\"\nrules = [\n{{peer=\"fd00::/8\",proto=\"tcp\",ports=[{list}]}},\n"
    );
    for len in 9..=128 {
        let _ = writeln!(flows, "{{peer=\"fd00::/{len}\",proto=\"tcp\"}},");
    }
    flows.push_str("]\n");
    flows
}

#[test]
fn too_many_port_entries_is_refused_by_check() -> Result<()> {
    // 121 classes of about 8,700 ports: just over the capacity.
    let ports = MAX_PORT_ENTRIES / 121 + 40;
    let files = |ports| {
        [
            ("site.toml", SITE.to_string()),
            ("flows.toml", nested_port_classes(ports)),
            ("devices.toml", devices(1)),
        ]
    };
    let (ok, out) = check(&files(ports))?;
    assert!(!ok, "check accepted {ports} ports in 121 classes:\n{out}");
    let prefix = format!("port entries (map {MAP_PORTS}): ");
    let count: u32 = out
        .split_once(&prefix)
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}COUNT` in:\n{out}"));
    assert!(count > MAX_PORT_ENTRIES, "{count}");
    assert_refused(&out, "port entries", MAP_PORTS, count, MAX_PORT_ENTRIES);
    // Half the ports fit: the refusal is the size, not the shape.
    let (ok, out) = check(&files(ports / 2))?;
    assert!(ok, "check refused half the ports:\n{out}");
    record_figure(
        "flood_capacity::too_many_port_entries_is_refused_by_check",
        &format!(
            "{count} port entries refused (capacity {MAX_PORT_ENTRIES}) from {ports} ports in 121 classes; half as many accepted"
        ),
    );
    Ok(())
}
