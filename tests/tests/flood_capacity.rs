//! More devices, or more peers, than the datapath's maps hold: the real `lazaret check`
//! refuses the policy with an error naming the map and both numbers, and exits non-zero,
//! so a daemon never loads part of it (reload runs the same compiler, and a refused
//! policy never replaces the enforcing generation).

use std::{fmt::Write as _, process::Command};

use anyhow::Result;
use lazaret_abi::{MAX_DEVICES, MAX_PEER_ENTRIES};
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
    assert!(
        out.contains("exceeds the datapath capacity of") && out.contains("peer"),
        "unclear error:\n{out}"
    );
    record_figure(
        "flood_capacity::too_many_peer_entries_is_refused_by_check",
        &format!("{n} IPv4 peer addresses refused (capacity {MAX_PEER_ENTRIES})"),
    );
    Ok(())
}
