//! A reboot with a broken policy checkout, on both dataplanes. A reboot is simulated the way
//! the kernel sees one: the daemon killed, its pins and nftables tables removed (what a
//! reboot loses), the interfaces down (the network is not configured yet: the unit starts
//! before network-pre.target). Then the repository is made invalid and the daemon started.
//!
//! - With a last-known-good policy in the state directory (written when the good policy
//!   enforced), that policy enforces: the allowed workflow works, the denied port is closed
//!   from the first packet after the interfaces come up, and `status` and
//!   `lazaret_policy_last_known_good` say so.
//! - Without one, the device-side interface is held closed (nothing in or out) and
//!   `lazaret_interfaces_held_closed` says so, until the repository is fixed: the first
//!   good reload lifts the hold.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lazaret_tests::{
    daemon::{monitor_policy, workflow, Dataplane, Lab},
    lazaret_bin, on_both_dataplanes,
    reliability::{metric, record_figure},
};

on_both_dataplanes!(a_reboot_with_a_broken_repository_never_opens_the_network);

const ALLOWED: u16 = 2575;
const DENIED: u16 = 104;
const T: Duration = Duration::from_millis(400);
/// How long the denied port is probed right after the interfaces come up.
const PROBE: Duration = Duration::from_secs(2);

const BROKEN: &str = "[site]\nname = \"broken\n[[devices]\nid = 1\n";

/// The daemon killed and what a reboot loses removed: bpffs pins and nftables tables
/// (`lazaret detach` with no daemon running), interfaces down.
fn reboot(lab: &mut Lab) -> Result<()> {
    lab.kill9();
    // In the gateway's namespace: its nftables tables are the ones to remove.
    let bin = lazaret_bin()?;
    let config = lab.config.to_str().context("config path")?;
    let out = lab.net.gateway.exec(&[
        bin.to_str().context("binary path")?,
        "detach",
        "--config",
        config,
    ])?;
    if !out.status.success() {
        bail!("detach: {}", String::from_utf8_lossy(&out.stderr));
    }
    for iface in [&lab.net.gw_dev_if, &lab.net.gw_up_if] {
        lab.net
            .gateway
            .exec(&["ip", "link", "set", "dev", iface, "down"])?;
    }
    Ok(())
}

/// The interfaces up again (as the network configuration would, after lazaret is ready).
fn network_up(lab: &Lab) -> Result<()> {
    for iface in [&lab.net.gw_dev_if, &lab.net.gw_up_if] {
        lab.net
            .gateway
            .exec(&["ip", "link", "set", "dev", iface, "up"])?;
    }
    Ok(())
}

/// Connections to the denied port that opened while probing for `PROBE` (must be 0), and
/// the number of attempts.
fn probe_denied(lab: &Lab) -> (usize, usize) {
    let started = Instant::now();
    let (mut opened, mut tried) = (0, 0);
    while started.elapsed() < PROBE {
        tried += 1;
        if lab.connect(DENIED, Duration::from_millis(100)).is_ok() {
            opened += 1;
        }
    }
    (opened, tried)
}

fn a_reboot_with_a_broken_repository_never_opens_the_network(dataplane: Dataplane) -> Result<()> {
    let good = |mac| monitor_policy(mac, &["hl7"], &workflow("hl7", "tcp", ALLOWED));
    let mut lab = Lab::on(dataplane, good)?;
    lab.echo_servers(&[ALLOWED, DENIED])?;
    lab.start()?;
    lab.connect(ALLOWED, T).context("allowed at start")?;
    if lab.connect(DENIED, T).is_ok() {
        bail!("the denied port is open at start");
    }
    let lkg = lab.state_dir.join("last-known-good.json");
    assert!(
        lkg.exists(),
        "no last-known-good written after the policy enforced"
    );
    let policy_text = std::fs::read_to_string(lab.policy_dir.join("hospital.toml"))?;

    // The simulation can fail: with nothing enforcing, the denied port is open.
    reboot(&mut lab)?;
    network_up(&lab)?;
    // The links just came up: on a loaded machine the first attempt may find them not yet
    // forwarding (a CI run failed so), so up to five of a second each.
    let open = (0..5).any(|_| lab.connect(DENIED, Duration::from_secs(1)).is_ok());
    assert!(open, "the simulated reboot left enforcement in place");

    // 1. Broken repository, last-known-good present.
    reboot(&mut lab)?;
    lab.write_policy(BROKEN)?;
    lab.start()?;
    network_up(&lab)?;
    let (opened, tried) = probe_denied(&lab);
    assert_eq!(
        opened, 0,
        "{opened} of {tried} denied connections opened after the reboot"
    );
    lab.connect(ALLOWED, Duration::from_secs(2))
        .context("the last-known-good policy allows the workflow")?;
    let status = lab.cli(&["status"])?;
    assert_eq!(status["policy"], "last_known_good", "{status}");
    assert_eq!(
        metric(&lab, "lazaret_policy_last_known_good", &[])?,
        Some(1.0)
    );
    let log = lab
        .daemon
        .as_ref()
        .map(lazaret_tests::netns::ChildGuard::output)
        .unwrap_or_default();
    assert!(log.contains("LAST-KNOWN-GOOD"), "not logged:\n{log}");

    // 2. Broken repository, no last-known-good: held closed until the repository is fixed.
    reboot(&mut lab)?;
    std::fs::remove_file(&lkg)?;
    lab.start()?;
    network_up(&lab)?;
    let (opened_none, tried_none) = probe_denied(&lab);
    assert_eq!(opened_none, 0, "denied port opened with no policy");
    assert!(
        lab.connect(ALLOWED, T).is_err(),
        "with no policy the device port is held closed"
    );
    let status = lab.cli(&["status"])?;
    assert_eq!(status["policy"], "none", "{status}");
    assert!(
        metric(&lab, "lazaret_interfaces_held_closed", &[])?.is_some_and(|n| n >= 1.0),
        "the hold is not exported"
    );
    lab.write_policy(&policy_text)?;
    let lifted = lazaret_tests::netns::wait_until(Duration::from_secs(10), || {
        lab.connect(ALLOWED, T).is_ok()
    });
    assert!(lifted, "fixing the repository did not lift the hold");
    if lab.connect(DENIED, T).is_ok() {
        bail!("the denied port is open after the repository was fixed");
    }
    assert_eq!(
        metric(&lab, "lazaret_interfaces_held_closed", &[])?,
        Some(0.0)
    );
    assert!(lkg.exists(), "the fixed policy is kept as last-known-good");
    record_figure(
        &format!(
            "fault_reboot::a_reboot_with_a_broken_repository_never_opens_the_network::{}",
            dataplane.name()
        ),
        &format!(
            "0 s unfiltered: last-known-good enforced, {opened} of {tried} denied probes opened; \
             no last-known-good: held closed, {opened_none} of {tried_none} opened"
        ),
    );
    Ok(())
}
