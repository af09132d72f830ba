//! Quarantine persistence: a quarantine survives a policy reload and a reboot (simulated by
//! `kill -9` and `lazaret detach`, which removes every pinned map and link, so only the
//! state file remains), and a manual release survives a restart.

use std::time::Duration;

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Lab},
    lazaret_bin,
};

fn policy(mac: [u8; 6], description: &str) -> String {
    monitor_policy(mac, &["hl7-results"], &workflow("hl7-results", "tcp", 2575))
        .replace("Bedside monitors", description)
}

fn isolated(lab: &Lab) -> Result<bool> {
    let list = lab.cli(&["quarantine", "list"])?;
    Ok(list["mon-icu-01"]["action"] == "isolate")
}

fn session_works(lab: &Lab) -> bool {
    lab.connect(2575, Duration::from_millis(800))
        .is_ok_and(|mut s| round_trip(&mut s))
}

#[test]
fn quarantine_survives_reload_and_reboot_and_a_release_survives_a_restart() -> Result<()> {
    let mut lab = Lab::new(|mac| policy(mac, "Bedside monitors"))?;
    lab.echo_servers(&[2575])?;
    lab.start()?;
    assert!(session_works(&lab));
    lab.quarantine("mon-icu-01", "isolate", "INC-1: beaconing")?;
    assert!(!session_works(&lab), "isolated");

    // A policy reload (a new generation) keeps the quarantine.
    let next = lab.ready_generation().unwrap_or(0) + 1;
    lab.write_policy(&policy(lab.net.device_mac, "Bedside monitors, ICU"))?;
    lab.wait_generation(next, Duration::from_secs(10))?;
    assert!(isolated(&lab)?, "listed after the reload");
    assert!(!session_works(&lab), "still isolated after the reload");

    // Reboot: the daemon dies and every pinned map and link is gone.
    lab.kill9();
    let out = std::process::Command::new(lazaret_bin()?)
        .args(["detach", "--config"])
        .arg(&lab.config)
        .output()?;
    if !out.status.success() {
        bail!("detach: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        session_works(&lab),
        "nothing enforces between the reboot and the start"
    );
    lab.start()?;
    assert!(isolated(&lab)?, "restored from the state file");
    assert!(!session_works(&lab), "isolated again after the reboot");

    // A manual release survives a restart.
    lab.release("mon-icu-01", "INC-1 closed")?;
    assert!(session_works(&lab), "released");
    lab.kill9();
    lab.start()?;
    assert!(!isolated(&lab)?, "not listed after the restart");
    assert!(session_works(&lab), "still released after the restart");
    let audit = std::fs::read_to_string(lab.state_dir.join("audit.log"))?;
    assert_eq!(audit.lines().count(), 2, "{audit}");
    Ok(())
}
