//! `dataplane = "nftables"` is for gateways where XDP cannot run, and so where BPF may not
//! be available at all: the daemon runs with the deployed unit's capabilities less
//! `CAP_BPF`, `CAP_PERFMON` and `CAP_SYS_ADMIN` (so no BPF program or map can be created),
//! with `pin_dir` on no bpf filesystem, and still enforces, quarantines, and keeps both
//! through a restart.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Dataplane, Lab},
    netns::wait_until,
};

const T: Duration = Duration::from_millis(800);

/// Capability numbers (linux/capability.h) the daemon must not hold.
const WITHOUT: [(&str, u32); 3] = [("CAP_SYS_ADMIN", 21), ("CAP_PERFMON", 38), ("CAP_BPF", 39)];

/// The named capability sets of a process (`CapEff`, `CapBnd`, ...) from /proc.
fn capabilities(pid: u32, set: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .with_context(|| format!("no {set} in /proc/{pid}/status"))?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

/// Whether `mon-icu-01`'s allowed session (tcp/2575) is refused now.
fn cut_off(lab: &Lab) -> bool {
    lab.connect(2575, T).is_err()
}

#[test]
fn nftables_enforces_and_quarantines_with_no_bpf_at_all() -> Result<()> {
    let mut lab = Lab::on(Dataplane::Nftables, |mac| {
        monitor_policy(mac, &["hl7"], &workflow("hl7", "tcp", 2575))
    })?;
    lab.confine_without(&WITHOUT.map(|(name, _)| name));
    let pin_dir = lab.without_bpffs()?;
    lab.echo_servers(&[2575, 104])?;
    lab.start()?;

    // The daemon holds none of the three, in any set that matters.
    let pid = lab.daemon_pid().context("the daemon's pid")?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    if !String::from_utf8_lossy(&cmdline).contains("lazaret") {
        bail!("process {pid} is not the daemon: {cmdline:?}");
    }
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let caps = capabilities(pid, set)?;
        for (name, bit) in WITHOUT {
            assert_eq!(caps & (1 << bit), 0, "{set} of the daemon has {name}");
        }
    }
    assert!(
        !pin_dir.exists(),
        "the daemon made {} though nothing is pinned without XDP",
        pin_dir.display()
    );

    // Enforcing: the workflow works, anything else is dropped.
    let mut session = lab.connect(2575, T)?;
    assert!(round_trip(&mut session), "the allowed session");
    assert!(
        lab.connect(104, T).is_err(),
        "a port no workflow allows is refused"
    );
    let status = lab.cli(&["status"])?;
    let modes = status.to_string();
    assert!(modes.contains("nftables"), "status: {status}");
    // What only XDP has says so, clearly.
    match lab.cli(&["flows", "mon-icu-01"]) {
        Ok(v) => bail!("flows without XDP answered {v}"),
        Err(e) => assert!(format!("{e:#}").contains("nftables"), "flows: {e:#}"),
    }

    // Quarantine: the open session is cut and no new one is let through.
    lab.quarantine("mon-icu-01", "isolate", "test: no BPF")?;
    assert!(!round_trip(&mut session), "the isolated device's session");
    assert!(cut_off(&lab), "no new session while isolated");
    let generation = lab.ready_generation().context("generation")?;

    // Restart (SIGTERM, then start again): the quarantine is kept and enforced, and the
    // generation numbering continues (connections are stamped with it).
    lab.stop();
    lab.start()?;
    let listed = lab.cli(&["quarantine", "list"])?;
    assert!(
        listed.to_string().contains("mon-icu-01"),
        "after the restart: {listed}"
    );
    assert!(cut_off(&lab), "still isolated after the restart");
    let after = lab.ready_generation().context("generation")?;
    assert!(
        after > generation,
        "generation {after} after the restart, {generation} before"
    );

    // Released: the workflow works again, the rest is still refused.
    lab.release("mon-icu-01", "test: done")?;
    assert!(
        wait_until(Duration::from_secs(3), || !cut_off(&lab)),
        "the released device reaches its server"
    );
    assert!(lab.connect(104, T).is_err(), "104 still refused");
    assert!(!pin_dir.exists(), "still nothing pinned");
    Ok(())
}
