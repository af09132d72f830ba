//! Faults in the policy directory under a running daemon: replaced by garbage, emptied, a
//! file made unreadable, a file half-written in place. Each one is a failed reload in the
//! metrics, and the previous generation keeps enforcing: the established session keeps
//! working, new allowed connections open, the denied port stays closed. A valid policy
//! afterwards is loaded again.
//!
//! "Unreadable" is a dangling symlink: the daemon runs as root, which reads through any
//! file mode (CAP_DAC_OVERRIDE), so a chmod 000 file would not be a fault for it.

use std::{net::TcpStream, time::Duration};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Lab},
    netns::wait_until,
    reliability::{metric, record_figure},
};

/// One way of breaking the policy directory.
type Fault<'a> = Box<dyn Fn() -> std::io::Result<()> + 'a>;

fn failures(lab: &Lab) -> f64 {
    // Summed over reasons: the fault decides which one.
    ["invalid_policy", "io", "datapath"]
        .iter()
        .map(|r| {
            metric(
                lab,
                "lazaret_policy_reload_failures_total",
                &[("reason", r)],
            )
            .ok()
            .flatten()
            .unwrap_or(0.0)
        })
        .sum()
}

/// The previous generation still enforces: the session, a new allowed connection, and the
/// denied port.
fn check_enforcing(lab: &Lab, session: &mut TcpStream, fault: &str) -> Result<()> {
    if !round_trip(session) {
        bail!("{fault}: the established session broke");
    }
    let mut fresh = lab.connect(2575, Duration::from_millis(800))?;
    if !round_trip(&mut fresh) {
        bail!("{fault}: a new allowed connection failed");
    }
    if lab.connect(104, Duration::from_millis(500)).is_ok() {
        bail!("{fault}: the denied port opened");
    }
    Ok(())
}

#[test]
fn broken_policy_directory_keeps_the_previous_generation_enforcing() -> Result<()> {
    let valid = |mac| monitor_policy(mac, &["hl7"], &workflow("hl7", "tcp", 2575));
    let mut lab = Lab::new(valid)?;
    let text = std::fs::read_to_string(lab.policy_dir.join("hospital.toml"))?;
    lab.echo_servers(&[2575, 104])?;
    lab.start()?;
    let mut session = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut session));
    let mut generation = lab.ready_generation();
    let file = lab.policy_dir.join("hospital.toml");

    let faults: [(&str, Fault); 4] = [
        (
            "garbage",
            Box::new(|| std::fs::write(&file, b"[site\n\x00\xff garbage = = =\n")),
        ),
        ("emptied", Box::new(|| std::fs::remove_file(&file))),
        (
            "unreadable",
            Box::new(|| {
                std::fs::remove_file(&file)?;
                std::os::unix::fs::symlink("/nonexistent/lazaret-policy", &file)
            }),
        ),
        (
            "half-written",
            // Written in place (not renamed in): what an editor or a copy cut short leaves.
            Box::new(|| std::fs::write(&file, &text.as_bytes()[..text.len() / 2])),
        ),
    ];
    let mut survived = 0;
    for (name, fault) in &faults {
        let before = failures(&lab);
        fault()?;
        let seen = wait_until(Duration::from_secs(10), || failures(&lab) > before);
        assert!(seen, "{name}: no failed reload in the metrics");
        assert_eq!(
            metric(&lab, "lazaret_policy_last_reload_failed", &[])?,
            Some(1.0),
            "{name}"
        );
        assert_eq!(
            lab.ready_generation(),
            generation,
            "{name}: generation changed"
        );
        check_enforcing(&lab, &mut session, name)?;
        // Restore (renamed in, over a symlink too): the valid policy loads as a new generation.
        lab.write_policy(&text)?;
        let g = lab.ready_generation().unwrap_or(0);
        lab.wait_generation(g + 1, Duration::from_secs(10))?;
        generation = lab.ready_generation();
        check_enforcing(&lab, &mut session, &format!("{name} (restored)"))?;
        survived += 1;
    }
    assert_eq!(
        metric(&lab, "lazaret_policy_last_reload_failed", &[])?,
        Some(0.0)
    );
    record_figure(
        "fault_policy::broken_policy_directory_keeps_the_previous_generation_enforcing",
        &format!("{survived}/4 faults survived; session unbroken, denied port closed"),
    );
    Ok(())
}
