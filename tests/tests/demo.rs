//! `cargo xtask demo` end to end: the story runs to the end on `policies/` as they are and
//! leaves nothing behind; a failing step exits non-zero naming the step; Ctrl-C tears the
//! lab down. Each run uses its own prefix, so these run beside a user's demo and each other.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lazaret_tests::{demo::demo_dir, lazaret_bin, netns::TempDir};

fn demo(prefix: &str, policies: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lazaret-demo"));
    cmd.arg("--lazaret")
        .arg(lazaret_bin().expect("the lazaret binary"))
        .arg("--policies")
        .arg(policies)
        .arg("--prefix")
        .arg(prefix);
    cmd
}

/// A prefix of its own per test and process (the demo allows 8 characters).
fn prefix(tag: char) -> String {
    format!("t{tag}{}", std::process::id() % 100_000)
}

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Nothing named after the prefix is left: no namespace, no directory, no mount.
fn assert_nothing_left(prefix: &str) {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let dir = demo_dir(prefix);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "a mount under {} is left",
        dir.display()
    );
}

#[test]
fn the_story_runs_to_the_end_and_leaves_nothing_behind() {
    let p = prefix('o');
    let out = demo(&p, &policies()).output().expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "[7/7] Biomed reimages the pump and releases it",
        "quarantined, action isolate",
        "its session to the pump server is cut",
        "✓ mon-icu-01     → HL7 engine   observations flowing",
        "✓ pump-depot-01  → pump server  sync works again",
        "Summary (live counters from the gateway)",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    assert_nothing_left(&p);
}

#[test]
fn a_failing_step_exits_non_zero_and_names_the_step() {
    // A policy directory that does not compile: the daemon starts but holds the device ports
    // closed (it never starts open), and the demo stops at step 2.
    let tmp = TempDir::new().expect("tempdir");
    std::fs::write(tmp.path.join("site.toml"), "[site]\nname = 3\n").expect("write");
    let p = prefix('b');
    let out = demo(&p, &tmp.path).output().expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("step 2/7 (Starting `lazaret run` on the gateway) failed"),
        "{stderr}"
    );
    assert_nothing_left(&p);
}

#[test]
fn ctrl_c_tears_the_lab_down() {
    let p = prefix('i');
    let mut child = demo(&p, &policies())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    // Interrupt once the lab is built and the daemon runs (bounded wait).
    let started = Instant::now();
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let before = all.contains("[3/7]");
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            if !before && all.contains("[3/7]") {
                // SAFETY: signalling the child we spawned.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
        }
        // Read to the end: a closed pipe would make the demo's next print fail.
        all
    });
    let seen = reader.join().expect("reader");
    assert!(
        seen.contains("[3/7]"),
        "the demo did not get going:\n{seen}"
    );
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the demo did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert_nothing_left(&p);
}
