//! Faults in the policy directory under a running daemon: replaced by garbage, emptied, a
//! file made unreadable, a file half-written in place. Each one is a failed reload in the
//! metrics, and the previous generation keeps enforcing: the established session keeps
//! working, new allowed connections open, the denied port stays closed. A valid policy
//! afterwards is loaded again.
//!
//! The daemon runs confined as the deployed unit confines it (`Lab::confine`: the unit's
//! capability bounding set, which holds neither CAP_DAC_OVERRIDE nor CAP_DAC_READ_SEARCH),
//! so file modes bind it: "unreadable" is a real `chmod 000`, and a file renamed in that
//! belongs to another user with mode 0600. The refusal names the file. A dangling symlink
//! is the third way a file cannot be read.

use std::{
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Result};
use lazaret_tests::{
    daemon::{monitor_policy, round_trip, workflow, Lab},
    netns::wait_until,
    reliability::{metric, record_figure},
};

/// One way of breaking the policy directory, and how it is undone.
struct Fault<'a> {
    name: &'static str,
    apply: Box<dyn Fn() -> std::io::Result<()> + 'a>,
    /// A chmod is metadata, which the directory watch ignores (as it ignores `touch`): the
    /// operator reloads by hand (`systemctl reload`, SIGHUP).
    hup: bool,
    /// The file could not be read: the refusal must name it and say why.
    unreadable: bool,
    /// Undoes the fault; true if a SIGHUP must follow. `None`: the valid policy is renamed
    /// back in.
    restore: Option<Box<dyn Fn() -> std::io::Result<bool> + 'a>>,
}

/// Writes `text` next to `file` with `mode` and owner `uid`, then renames it over `file`,
/// as a deployment tool does.
fn rename_in(file: &Path, text: &str, mode: u32, uid: u32) -> std::io::Result<()> {
    let tmp: PathBuf = file.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::os::unix::fs::chown(&tmp, Some(uid), Some(uid))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, file)
}

/// The unprivileged `nobody`, owner of the foreign file.
const NOBODY: u32 = 65534;

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
    lab.confine();
    let text = std::fs::read_to_string(lab.policy_dir.join("hospital.toml"))?;
    lab.echo_servers(&[2575, 104])?;
    lab.start()?;
    let mut session = lab.connect(2575, Duration::from_millis(800))?;
    assert!(round_trip(&mut session));
    let mut generation = lab.ready_generation();
    let file = lab.policy_dir.join("hospital.toml");
    let mode = |m: u32| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m));

    let faults = [
        Fault {
            name: "garbage",
            apply: Box::new(|| std::fs::write(&file, b"[site\n\x00\xff garbage = = =\n")),
            hup: false,
            unreadable: false,
            restore: None,
        },
        Fault {
            name: "emptied",
            apply: Box::new(|| std::fs::remove_file(&file)),
            hup: false,
            unreadable: false,
            restore: None,
        },
        Fault {
            name: "chmod 000",
            apply: Box::new(|| mode(0o000)),
            hup: true,
            unreadable: true,
            restore: Some(Box::new(|| mode(0o644).map(|()| true))),
        },
        Fault {
            name: "another user's 0600 file",
            apply: Box::new(|| rename_in(&file, &text, 0o600, NOBODY)),
            hup: false,
            unreadable: true,
            restore: None,
        },
        Fault {
            name: "dangling symlink",
            apply: Box::new(|| {
                std::fs::remove_file(&file)?;
                std::os::unix::fs::symlink("/nonexistent/lazaret-policy", &file)
            }),
            hup: false,
            unreadable: true,
            restore: None,
        },
        Fault {
            name: "half-written",
            // Written in place (not renamed in): what an editor or a copy cut short leaves.
            apply: Box::new(|| std::fs::write(&file, &text.as_bytes()[..text.len() / 2])),
            hup: false,
            unreadable: false,
            restore: None,
        },
    ];
    let mut survived = 0;
    for fault in &faults {
        let name = fault.name;
        let before = failures(&lab);
        let io_before = io_failures(&lab);
        let logged = daemon_output(&lab).len();
        (fault.apply)()?;
        if fault.hup {
            lab.signal(libc::SIGHUP);
        }
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
        if fault.unreadable {
            assert!(io_failures(&lab) > io_before, "{name}: not counted as io");
            let out = daemon_output(&lab);
            let refusal = out.get(logged..).unwrap_or_default();
            let why = if name == "dangling symlink" {
                "No such file or directory"
            } else {
                "Permission denied"
            };
            assert!(
                refusal.contains("reload refused")
                    && refusal.contains(&file.display().to_string())
                    && refusal.contains(why),
                "{name}: the refusal does not name the file and the cause:\n{refusal}"
            );
        }
        check_enforcing(&lab, &mut session, name)?;
        // Restore: the valid policy loads as a new generation.
        let hup = match &fault.restore {
            Some(restore) => restore()?,
            // Renamed in (over a symlink too), root's and readable.
            None => {
                lab.write_policy(&text)?;
                false
            }
        };
        if hup {
            lab.signal(libc::SIGHUP);
        }
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
        &format!(
            "{survived}/{} faults survived (daemon confined to the unit's capabilities); session unbroken, denied port closed",
            faults.len()
        ),
    );
    Ok(())
}

fn io_failures(lab: &Lab) -> f64 {
    metric(
        lab,
        "lazaret_policy_reload_failures_total",
        &[("reason", "io")],
    )
    .ok()
    .flatten()
    .unwrap_or(0.0)
}

fn daemon_output(lab: &Lab) -> String {
    lab.daemon
        .as_ref()
        .map(lazaret_tests::netns::ChildGuard::output)
        .unwrap_or_default()
}
