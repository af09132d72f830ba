//! Faults in the state directory under a running daemon: full, then read-only. The state
//! directory is a tiny tmpfs mounted on the lab's own temporary directory (unmounted on
//! drop), so "full" and "read-only" are real ENOSPC and EROFS. A quarantine ordered then is
//! enforced by the datapath at once (the device's session is cut), and the failure to
//! persist it is never silent: the CLI command exits non-zero with the reason, `status`
//! lists it, `lazaret_state_persisted` is 0 (the alert's input), and the quarantine file
//! already there is never truncated. After a restart, the quarantine the datapath enforces
//! but the file does not know is listed as recovered and can be released.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Dataplane, Lab},
    on_both_dataplanes,
    reliability::record_figure,
};

/// A tmpfs mounted at a path, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Result<Tmpfs> {
        std::fs::create_dir_all(at)?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "lazaret-test-state",
            ])
            .arg(at)
            .status()?
            .success();
        if !ok {
            bail!("mounting a tmpfs at {} failed", at.display());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    fn remount(&self, opts: &str) -> Result<()> {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()?
            .success();
        if !ok {
            bail!("remount {opts} failed");
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system until ENOSPC; the bytes written.
fn fill(dir: &std::path::Path) -> u64 {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(dir.join("filler")) else {
        return 0;
    };
    let block = vec![0u8; 4096];
    let mut n = 0;
    // Bounded: the tmpfs is 256 KiB.
    for _ in 0..10_000 {
        if f.write_all(&block).is_err() {
            break;
        }
        n += block.len() as u64;
    }
    let _ = f.sync_all();
    n
}

fn quarantine_file(lab: &Lab) -> serde_json::Value {
    let text = std::fs::read_to_string(lab.state_dir.join("quarantine.json")).unwrap_or_default();
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("quarantine.json is damaged ({e}): {text:?}"))
}

on_both_dataplanes!(full_or_read_only_state_directory_still_enforces_quarantines);

/// A monitor known by its address only (not plugged into the lab: its quarantine is state).
const MACLESS: &str = r#"
[[devices]]
id = "mon-icu-09"
class = "patient-monitor"
ipv4 = "10.20.0.19"
"#;

/// On nftables alone (no BPF), what recovers the quarantine the file never learned of is
/// the table the earlier run left in the kernel.
fn full_or_read_only_state_directory_still_enforces_quarantines(dp: Dataplane) -> Result<()> {
    // mon-icu-09 has no MAC: on nftables alone it is recovered by its address.
    let mut lab = Lab::on(dp, |mac| {
        let rules = workflow("hl7", "tcp", 2575);
        monitor_policy(mac, &["hl7"], &format!("{rules}\n{MACLESS}"))
    })?;
    let state = Tmpfs::mount(&lab.state_dir, "256k")?;
    lab.echo_servers(&[2575])?;
    lab.start()?;

    // A quarantine persisted while the disk is healthy: the file to protect.
    lab.quarantine("mon-icu-01", "alert", "baseline")?;
    let before = quarantine_file(&lab);
    assert_eq!(before["devices"]["mon-icu-01"]["action"], "alert");

    // Full: an isolate is enforced at once, the error is logged, the file is intact.
    let mut session = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut session));
    let filled = fill(&lab.state_dir);
    assert!(filled > 0);
    let refused = lab
        .quarantine("mon-icu-01", "isolate", "disk full")
        .expect_err("a quarantine that cannot be persisted makes the CLI fail");
    let refused = refused.to_string();
    assert!(
        refused.contains("is enforced, but the state directory could not record it")
            && refused.contains("No space left"),
        "the CLI does not say what happened: {refused}"
    );
    assert!(
        !round_trip(&mut session),
        "isolate not enforced with a full state directory"
    );
    assert!(lab.connect(2575, Duration::from_millis(500)).is_err());
    let log = lab
        .daemon
        .as_ref()
        .map(lazaret_tests::netns::ChildGuard::output)
        .unwrap_or_default();
    assert!(
        log.contains("could not write the state directory") && log.contains("No space left"),
        "no clear error for a full state directory:\n{log}"
    );
    assert_eq!(
        quarantine_file(&lab),
        before,
        "quarantine.json changed or was truncated"
    );
    let listed = lab.cli(&["quarantine", "list"])?;
    assert!(listed.to_string().contains("isolate"), "{listed}");
    let status = lab.cli(&["status"])?;
    assert!(
        status["state_errors"]["quarantine"]
            .as_str()
            .is_some_and(|e| e.contains("No space left")),
        "status does not show the failure: {status}"
    );
    assert_eq!(lab.metric("lazaret_state_persisted")?, Some(0.0));
    assert!(lab
        .metric(r#"lazaret_state_persist_failures_total{state="quarantine"}"#)?
        .is_some_and(|n| n >= 1.0));

    // Read-only: a release is enforced (the device works again), the CLI still fails, the
    // file is intact.
    std::fs::remove_file(lab.state_dir.join("filler"))?;
    state.remount("ro")?;
    let refused = lab
        .release("mon-icu-01", "read-only test")
        .expect_err("a release that cannot be persisted makes the CLI fail");
    assert!(
        refused.to_string().contains("Read-only file system"),
        "{refused}"
    );
    let mut fresh = lab.connect(2575, Duration::from_millis(800))?;
    assert!(
        round_trip(&mut fresh),
        "release not enforced with a read-only state directory"
    );
    assert_eq!(
        quarantine_file(&lab),
        before,
        "quarantine.json changed on a read-only fs"
    );

    // A quarantine the file never learns of, then a restart: recovered from the datapath,
    // listed as such, and releasable.
    assert!(lab
        .quarantine("mon-icu-01", "isolate", "read-only")
        .is_err());
    assert!(lab
        .quarantine("mon-icu-09", "restrict", "read-only")
        .is_err());
    assert!(!round_trip(&mut fresh), "isolate not enforced (read-only)");
    state.remount("rw")?;
    lab.stop();
    lab.start()?;
    let listed = lab.cli(&["quarantine", "list"])?;
    assert_eq!(
        (
            listed["mon-icu-01"]["action"].as_str(),
            listed["mon-icu-01"]["recovered"].as_bool()
        ),
        (Some("isolate"), Some(true)),
        "the quarantine the datapath enforces is not listed as recovered: {listed}"
    );
    assert_eq!(
        (
            listed["mon-icu-09"]["action"].as_str(),
            listed["mon-icu-09"]["recovered"].as_bool()
        ),
        (Some("restrict"), Some(true)),
        "a device without a MAC lost its quarantine across the restart: {listed}"
    );
    assert!(
        lab.connect(2575, Duration::from_millis(500)).is_err(),
        "still isolated after the restart"
    );
    assert_eq!(lab.metric("lazaret_state_persisted")?, Some(1.0));
    lab.release("mon-icu-01", "recovered, checked")?;
    let mut after = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut after), "the recovered quarantine released");
    assert!(quarantine_file(&lab)["devices"].get("mon-icu-01").is_none());
    record_figure(
        &format!(
            "fault_state::full_or_read_only_state_directory_still_enforces_quarantines::{}",
            dp.name()
        ),
        &format!(
            "ENOSPC after {} KiB and EROFS: quarantine and release enforced, CLI non-zero, state file intact; recovered after restart",
            filled / 1024
        ),
    );
    // The daemon first, then the tmpfs, then the lab's directory: removed with the tmpfs
    // still mounted on it, the directory would be left behind with an empty state/.
    lab.kill9();
    drop(state);
    drop(lab);
    Ok(())
}
