//! Faults at start: the metrics port already taken, the control socket path held by a live
//! daemon, by a stale socket (a crash's leftover) or by another file. Each taken resource
//! is a clear error before the datapath is touched (the running generation is not bumped by
//! a second daemon), a stale socket is replaced, and enforcement holds throughout.

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Lab},
    lazaret_bin,
    reliability::record_figure,
};

fn lab() -> Result<Lab> {
    let lab = Lab::new(|mac| monitor_policy(mac, &["hl7"], &workflow("hl7", "tcp", 2575)))?;
    lab.echo_servers(&[2575, 104])?;
    Ok(lab)
}

/// Runs a second `lazaret run` on the lab's config in the gateway namespace; its exit
/// status and output (bounded: 20 s).
fn second_daemon(lab: &Lab) -> Result<(bool, String)> {
    let bin = lazaret_bin()?;
    let mut child = lab.net.gateway.spawn(&[
        bin.to_str().unwrap_or_default(),
        "run",
        "--config",
        lab.config.to_str().unwrap_or_default(),
    ])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.child_mut().and_then(|c| c.try_wait().ok().flatten());
    let out = child.stop();
    match status {
        None => bail!("the second daemon did not exit:\n{out}"),
        Some(s) => Ok((s.success(), out)),
    }
}

/// Enforcement: the allowed port connects, the never-allowed one does not.
fn enforcing(lab: &Lab) -> bool {
    let allowed = lab
        .connect(2575, Duration::from_millis(800))
        .map(|mut s| round_trip(&mut s))
        .unwrap_or(false);
    let denied = lab.connect(104, Duration::from_millis(500)).is_ok();
    allowed && !denied
}

#[test]
fn metrics_port_taken_is_a_clear_error_before_the_datapath_is_touched() -> Result<()> {
    let mut lab = lab()?;
    lab.start()?;
    let generation = lab.ready_generation();
    lab.kill9();
    // Another service takes the port while lazaret is down.
    let squatter = lab
        .net
        .gateway
        .run(|| TcpListener::bind("127.0.0.1:9464"))??;
    let (ok, out) = second_daemon(&lab)?;
    assert!(!ok, "started although the metrics port is taken:\n{out}");
    assert!(
        out.contains("metrics endpoint 127.0.0.1:9464") && out.contains("taken"),
        "unclear error:\n{out}"
    );
    assert_eq!(
        lab.ready_generation(),
        generation,
        "the datapath was touched"
    );
    assert!(enforcing(&lab), "the pinned generation stopped enforcing");
    drop(squatter);
    lab.start()?;
    assert!(enforcing(&lab));
    record_figure(
        "fault_start::metrics_port_taken_is_a_clear_error_before_the_datapath_is_touched",
        "refused at start, generation unchanged, enforcement held",
    );
    Ok(())
}

#[test]
fn control_socket_taken_live_stale_or_foreign() -> Result<()> {
    let mut lab = lab()?;
    lab.start()?;
    let generation = lab.ready_generation();
    let socket = lab.tmp.path.join("control.sock");

    // A live daemon holds it: a second one refuses, without bumping the generation.
    let (ok, out) = second_daemon(&lab)?;
    assert!(!ok, "a second daemon started:\n{out}");
    assert!(
        out.contains("another lazaret is already serving it"),
        "unclear error:\n{out}"
    );
    assert_eq!(
        lab.ready_generation(),
        generation,
        "the second daemon installed a generation"
    );
    assert!(lab.cli(&["status"])?["generation"].as_u64() == generation);

    // A stale socket (kill -9 leaves it): replaced, the daemon starts.
    lab.kill9();
    assert!(socket.exists(), "kill -9 should leave the socket file");
    lab.start()?;
    assert!(lab.cli(&["status"]).is_ok());

    // Any other file there: refused and left alone.
    lab.kill9();
    std::fs::remove_file(&socket)?;
    std::fs::write(&socket, "not a socket")?;
    let (ok, out) = second_daemon(&lab)?;
    assert!(!ok);
    assert!(
        out.contains("exists and is not a socket"),
        "unclear error:\n{out}"
    );
    assert_eq!(std::fs::read_to_string(&socket)?, "not a socket");
    assert!(
        enforcing(&lab),
        "enforcement did not hold while lazaret was down"
    );
    record_figure(
        "fault_start::control_socket_taken_live_stale_or_foreign",
        "live: refused, generation unchanged; stale: replaced; foreign file: refused, kept",
    );
    Ok(())
}
