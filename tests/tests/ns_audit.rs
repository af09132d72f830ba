//! Audit mode: a flow its policy does not allow passes for a device in audit mode and is
//! reported with its context (the deny it would be); a flow allowed only by a workflow in
//! audit mode passes and is reported with the rule that allowed it. The device count by
//! mode says how many devices are not enforced, so audit never silently replaces
//! enforcement.

use std::time::Duration;

use anyhow::Result;
use lazaret_tests::daemon::{monitor_policy, round_trip, wait_event, workflow, Lab};

#[test]
fn audit_mode_device_passes_would_be_denies_and_reports_them() -> Result<()> {
    // The device is in audit mode: its `mode` key precedes the workflows in its entry.
    let rules = format!("mode = \"audit\"\n{}", workflow("hl7-results", "tcp", 2575));
    let mut lab = Lab::new(|mac| monitor_policy(mac, &["hl7-results"], &rules))?;
    lab.echo_servers(&[2575, 22])?;
    lab.start()?;
    assert_eq!(lab.metric("lazaret_devices{mode=\"audit\"}")?, Some(1.0));
    assert_eq!(lab.metric("lazaret_devices{mode=\"enforce\"}")?, Some(0.0));
    let follower = lab.follow_events()?;

    let mut outside = lab.connect(22, Duration::from_millis(1000))?;
    assert!(
        round_trip(&mut outside),
        "a flow outside the device's workflows passes in audit mode"
    );
    let ev = wait_event(&follower, |v| {
        v["kind"] == "audit" && v["dst"] == "10.10.0.20:22"
    })?;
    assert_eq!(ev["device"], "mon-icu-01");
    assert_eq!(ev["mode"], "audit");
    assert_eq!(ev["reason"], "audit");
    assert_eq!(ev["would_be"], "deny_no_rule");
    assert_eq!(ev["initiator"], "device");

    // The device's own workflow is allowed without an audit record.
    let mut inside = lab.connect(2575, Duration::from_millis(1000))?;
    assert!(round_trip(&mut inside));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !follower.output().contains("10.10.0.20:2575"),
        "an allowed flow is not an audit record:\n{}",
        follower.output()
    );
    Ok(())
}

#[test]
fn a_workflow_in_audit_mode_reports_the_rule_it_would_enforce() -> Result<()> {
    // `hl7-results` enforces; `remote-service` is being rolled out in audit mode.
    let rules = format!(
        "{}{}",
        workflow("hl7-results", "tcp", 2575),
        workflow("remote-service", "tcp", 22).replace(
            "description = \"lab workflow remote-service\"",
            "description = \"lab workflow remote-service\"\nmode = \"audit\"",
        )
    );
    let mut lab = Lab::new(|mac| monitor_policy(mac, &["hl7-results", "remote-service"], &rules))?;
    lab.echo_servers(&[2575, 22, 23])?;
    lab.start()?;
    assert_eq!(lab.metric("lazaret_devices{mode=\"enforce\"}")?, Some(1.0));
    let follower = lab.follow_events()?;

    let mut s = lab.connect(22, Duration::from_millis(1000))?;
    assert!(round_trip(&mut s), "the audited workflow's flow passes");
    let ev = wait_event(&follower, |v| {
        v["kind"] == "audit" && v["dst"] == "10.10.0.20:22"
    })?;
    assert_eq!(
        ev["rule"]["origin"], "workflow `remote-service`, rule 1",
        "{ev}"
    );
    assert_eq!(ev["mode"], "enforce");
    // The device still enforces: a flow no workflow allows is denied.
    assert!(lab.connect(23, Duration::from_millis(500)).is_err());
    wait_event(&follower, |v| {
        v["kind"] == "deny" && v["dst"] == "10.10.0.20:23"
    })?;
    Ok(())
}
