//! Hostile policy repositories: a policy repository is input from pull requests, so what a
//! file in it can do to the reader is bounded. Each case runs `lazaret check` on a copy of the
//! example hospital with the hostile entry added, under a timeout (it must answer, with an
//! error naming the entry, in bounded output), and the daemon case feeds the same entries to
//! a running daemon: each reload is refused and counted, the previous generation keeps
//! enforcing, and meanwhile a scan is still detected and quarantined and `status` answers.

use std::{
    io::Read,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use lazaret_tests::{
    daemon::{pump_policy, Lab},
    lazaret_bin,
    netns::{wait_until, TempDir},
    reliability::{metric, record_figure},
};

/// How long `lazaret check` may take on any of these, at most (it takes well under a second
/// on all but the million-entry file).
const CHECK_LIMIT: Duration = Duration::from_secs(60);

/// A copy of the example hospital's policy.
fn repo() -> Result<TempDir> {
    let tmp = TempDir::new()?;
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    lazaret_tests::copy_tree(&policies, &tmp.path)?;
    Ok(tmp)
}

/// What `lazaret ARGS` exited with and printed (stdout and stderr), killed if it takes
/// longer than [`CHECK_LIMIT`]. Output past 4 MiB is counted, not kept.
fn lazaret(args: &[&str], env: &[(&str, &str)]) -> Result<(i32, String, usize)> {
    let mut child = Command::new(lazaret_bin()?)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        readers.push(thread::spawn(move || {
            let (mut kept, mut total) = (Vec::new(), 0usize);
            let mut stream = stream;
            let mut buf = [0u8; 65536];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
                if kept.len() < 4 << 20 {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
            (kept, total)
        }));
    }
    let deadline = Instant::now() + CHECK_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("lazaret {args:?} did not answer within {CHECK_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut out = Vec::new();
    let mut total = 0;
    for r in readers {
        let (kept, n) = r.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
        out.extend(kept);
        total += n;
    }
    Ok((
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
        total,
    ))
}

/// `lazaret check` on `dir` refuses it, within the time limit, with `expect` in its output,
/// in less than 64 KiB, with no raw control character.
fn refused(dir: &Path, env: &[(&str, &str)], expect: &str) -> Result<String> {
    let dir_s = dir.to_str().context("path")?;
    let (code, out, bytes) = lazaret(&["check", dir_s], env)?;
    ensure!(code != 0, "lazaret check accepted it:\n{out}");
    ensure!(out.contains(expect), "{expect:?} not in:\n{out}");
    ensure!(bytes < 64 << 10, "{bytes} bytes of output");
    ensure!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "a raw control character reached the output"
    );
    Ok(out)
}

fn mkfifo(path: &Path) -> Result<()> {
    let c = std::ffi::CString::new(path.to_str().context("path")?)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
        bail!("mkfifo: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A policy file of `entries` `[[devices]]` entries, each with an unknown key and no id.
fn million_bad_entries(path: &Path, entries: usize) -> Result<()> {
    let mut text = String::with_capacity(entries * 16);
    for _ in 0..entries {
        text.push_str("[[devices]]\nx=1\n");
    }
    std::fs::write(path, text)?;
    Ok(())
}

#[test]
fn check_refuses_a_fifo_without_hanging() -> Result<()> {
    let r = repo()?;
    mkfifo(&r.path.join("x.toml"))?;
    refused(&r.path, &[], "named pipe (FIFO), not a regular file")?;
    Ok(())
}

#[test]
fn check_refuses_a_link_to_a_device_file() -> Result<()> {
    let r = repo()?;
    symlink("/dev/zero", r.path.join("zero.toml"))?;
    refused(&r.path, &[], "outside the policy directory")?;
    Ok(())
}

#[test]
fn check_never_prints_a_file_outside_the_repository() -> Result<()> {
    let r = repo()?;
    symlink("/proc/self/environ", r.path.join("env.toml"))?;
    let secret = "LZ-CI-SECRET-7f3a9";
    let out = refused(
        &r.path,
        &[("LAZARET_TEST_TOKEN", secret)],
        "outside the policy directory",
    )?;
    ensure!(!out.contains(secret), "the environment was printed:\n{out}");
    Ok(())
}

#[test]
fn check_refuses_a_directory_link_loop() -> Result<()> {
    let r = repo()?;
    std::fs::create_dir(r.path.join("sub"))?;
    symlink("..", r.path.join("sub/up"))?;
    refused(&r.path, &[], "symbolic link loop")?;
    Ok(())
}

#[test]
fn check_refuses_a_file_past_the_size_limit() -> Result<()> {
    let r = repo()?;
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(
        r.path.join("big.toml"),
        line.repeat((17 << 20) / line.len()),
    )?;
    refused(&r.path, &[], "bytes a policy file may have")?;
    Ok(())
}

#[test]
fn check_reports_the_first_problems_of_a_million() -> Result<()> {
    let r = repo()?;
    million_bad_entries(&r.path.join("devices-bad.toml"), 1_000_000)?;
    let started = Instant::now();
    let out = refused(&r.path, &[], "not shown: only the first 200 are reported")?;
    record_figure(
        "fault_hostile_repo::check_reports_the_first_problems_of_a_million",
        &format!(
            "1,000,000 bad entries (16 MB): refused in {:.1} s with {} bytes of output",
            started.elapsed().as_secs_f64(),
            out.len()
        ),
    );
    Ok(())
}

#[test]
fn check_escapes_terminal_control_characters_and_csv_formulas() -> Result<()> {
    let r = repo()?;
    // A bad value with an escape sequence: the error quotes it, escaped.
    std::fs::write(
        r.path.join("evil.toml"),
        "[roles.\"evil\\u001b[2J\"]\naddresses = [\"10.10.99.1\"]\nbogus = \"\\u001b]0;pwned\\u0007\"\n",
    )?;
    let out = refused(&r.path, &[], "\\u{1b}")?;
    ensure!(!out.contains('\u{1b}'), "{out}");
    // A valid policy whose inventory text holds an escape and a formula.
    std::fs::write(
        r.path.join("evil.toml"),
        "[[devices]]\nid = \"mon-evil-01\"\nclass = \"patient-monitor\"\nmac = \"00:1a:2b:99:00:01\"\n\
         location = \"\\u001b[2JICU\"\nvendor = \"=HYPERLINK(\\\"http://x.invalid\\\")\"\n",
    )?;
    let dir = r.path.to_str().context("path")?;
    let (code, table, _) = lazaret(&["devices", dir], &[])?;
    ensure!(code == 0, "{table}");
    ensure!(
        table.contains("\\u{1b}[2JICU") && !table.contains('\u{1b}'),
        "{table}"
    );
    let (code, csv, _) = lazaret(&["devices", dir, "--format", "csv"], &[])?;
    ensure!(code == 0, "{csv}");
    let row = csv
        .lines()
        .find(|l| l.starts_with("mon-evil-01"))
        .context("the row")?;
    ensure!(
        row.contains("\"'=HYPERLINK(") && !row.contains(",=HYPERLINK"),
        "a formula reached the CSV: {row}"
    );
    Ok(())
}

/// The daemon's count of failed reloads, all reasons.
fn failures(lab: &Lab) -> f64 {
    ["invalid_policy", "io"]
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

/// Whether the daemon lists the pump as quarantined.
fn quarantined(lab: &Lab) -> bool {
    lab.cli(&["quarantine", "list"])
        .is_ok_and(|v| v.get("pump-icu-01").is_some())
}

/// The generation once reloads have stopped (the directory watch and a SIGHUP may both
/// have asked for one).
fn settled(lab: &Lab) -> Result<u64> {
    let mut g = lab.ready_generation().context("generation")?;
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(300));
        let now = lab.ready_generation().context("generation")?;
        if now == g {
            return Ok(g);
        }
        g = now;
    }
    bail!("the daemon kept reloading")
}

#[test]
fn a_running_daemon_refuses_hostile_repositories_and_keeps_working() -> Result<()> {
    let mut lab = Lab::new(|mac| pump_policy("hostile repo lab", mac, Some("isolate"), false))?;
    lab.start()?;
    lab.echo_servers(&[2575])?;
    let mut generation = settled(&lab)?;
    let dir = lab.policy_dir.clone();
    type Make = Box<dyn Fn(&Path) -> Result<PathBuf>>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "a FIFO",
            Box::new(|d: &Path| {
                let p = d.join("x.toml");
                mkfifo(&p)?;
                Ok(p)
            }),
        ),
        (
            "a link to /dev/zero",
            Box::new(|d: &Path| {
                let p = d.join("zero.toml");
                symlink("/dev/zero", &p)?;
                Ok(p)
            }),
        ),
        (
            "a link to /proc/self/environ",
            Box::new(|d: &Path| {
                let p = d.join("env.toml");
                symlink("/proc/self/environ", &p)?;
                Ok(p)
            }),
        ),
        (
            "a directory link loop",
            Box::new(|d: &Path| {
                let p = d.join("loop");
                symlink(".", &p)?;
                Ok(p)
            }),
        ),
        (
            "a million bad entries",
            Box::new(|d: &Path| {
                let p = d.join("devices-bad.toml");
                million_bad_entries(&p, 1_000_000)?;
                Ok(p)
            }),
        ),
    ];
    let mut slowest_status = Duration::ZERO;
    let mut slowest_quarantine = Duration::ZERO;
    for (what, make) in &cases {
        let before = failures(&lab);
        let entry = make(&dir)?;
        lab.signal(libc::SIGHUP);
        // Meanwhile the pump scans: three denied flows cross its threshold.
        let scan_at = Instant::now();
        lab.net.device.run(|| -> std::io::Result<()> {
            let s = std::net::UdpSocket::bind(("10.20.0.11", 0))?;
            for port in [23, 25, 80] {
                s.send_to(b"scan", ("10.10.0.20", port))?;
            }
            Ok(())
        })??;
        let status_at = Instant::now();
        let status = lab
            .cli(&["status"])
            .with_context(|| format!("{what}: status"))?;
        slowest_status = slowest_status.max(status_at.elapsed());
        ensure!(
            status["generation"].as_u64() == Some(generation),
            "{what}: the generation moved: {status}"
        );
        ensure!(
            wait_until(Duration::from_secs(5), || quarantined(&lab)),
            "{what}: the scan was not quarantined during the hostile reload"
        );
        slowest_quarantine = slowest_quarantine.max(scan_at.elapsed());
        ensure!(
            wait_until(Duration::from_secs(30), || failures(&lab) > before),
            "{what}: the reload was not refused"
        );
        ensure!(
            lab.ready_generation() == Some(generation),
            "{what}: a new generation"
        );
        // Still enforcing the previous generation: the quarantine holds, released it works.
        lab.release("pump-icu-01", "test")?;
        let mut s = lab.connect(2575, Duration::from_secs(2))?;
        ensure!(
            lazaret_tests::daemon::round_trip(&mut s),
            "{what}: the pump's allowed session failed"
        );
        if entry.is_dir() && !entry.is_symlink() {
            std::fs::remove_dir_all(&entry)?;
        } else {
            std::fs::remove_file(&entry)?;
        }
        // The repository is valid again: the next reload succeeds, a new generation.
        lab.signal(libc::SIGHUP);
        lab.wait_generation(generation + 1, Duration::from_secs(30))?;
        generation = settled(&lab)?;
    }
    record_figure(
        "fault_hostile_repo::a_running_daemon_refuses_hostile_repositories_and_keeps_working",
        &format!(
            "{} hostile repositories refused, generation unchanged; a scan during each was quarantined within {} ms, status answered within {} ms",
            cases.len(),
            slowest_quarantine.as_millis(),
            slowest_status.as_millis()
        ),
    );
    Ok(())
}
