//! The Debian package (`cargo xtask package`; `cargo xtask test` builds it from the debug
//! binary and names it in `LAZARET_DEB`), installed with `dpkg --root` into an empty root:
//! its files land where the unit, the alerts' runbook links and the man pages expect them,
//! the installed binary runs `--version` and checks the packaged example policy, the
//! installed unit passes `systemd-analyze verify`, installing enables and starts nothing,
//! the configuration is a conffile that removal keeps and purge deletes.
//!
//! The root has no Debian base system, so dependencies are not checked (`--force-depends`)
//! and the maintainer scripts run outside a chroot (`--force-script-chrootless`, with
//! `DPKG_ROOT` set, which they honour).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context, Result};
use lazaret_tests::netns::TempDir;

fn dpkg(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "--force-script-chrootless"])
        .args(args)
        .output()
        .context("running dpkg")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "dpkg {args:?} failed:\n{text}");
    Ok(text)
}

fn run(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn the_package_installs_into_a_clean_root_and_runs_from_there() -> Result<()> {
    let deb: PathBuf = std::env::var_os("LAZARET_DEB")
        .context(
            "LAZARET_DEB is not set: run the tests with `cargo xtask test` (it builds the \
             package first), or run `cargo xtask package --debug` and point LAZARET_DEB at \
             target/debian/lazaret_<version>_amd64.deb",
        )?
        .into();
    let tmp = TempDir::new()?;
    let root = tmp.path.join("root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "")?;
    }
    let deb = deb.to_str().context("package path")?;
    dpkg(&root, &["--install", deb])?;

    for file in [
        "usr/bin/lazaret",
        "lib/systemd/system/lazaret.service",
        "etc/lazaret/lazaret.toml",
        "usr/share/lazaret/prometheus/lazaret-rules.yml",
        "usr/share/lazaret/grafana/lazaret.json",
        // The pair's VRRP configuration and what it does (docs/ha.md).
        "usr/share/lazaret/keepalived/keepalived.conf",
        "usr/share/lazaret/conntrackd/conntrackd.conf",
        "usr/share/doc/lazaret/ha.md",
        // The alerts' runbook_url and the unit's Documentation= point here.
        "usr/share/doc/lazaret/runbook.md",
        "usr/share/doc/lazaret/README.md",
        "usr/share/doc/lazaret/copyright",
        "usr/share/man/man1/lazaret.1.gz",
        "usr/share/man/man1/lazaret-check.1.gz",
        "usr/share/bash-completion/completions/lazaret",
        "usr/share/zsh/vendor-completions/_lazaret",
        "usr/share/fish/vendor_completions.d/lazaret.fish",
    ] {
        ensure!(root.join(file).is_file(), "{file} is not installed");
    }
    let lazaret = root.join("usr/bin/lazaret");
    let (ok, version) = run(Command::new(&lazaret).arg("--version"))?;
    ensure!(ok && version.starts_with("lazaret "), "{version}");
    let (ok, out) = run(Command::new(&lazaret)
        .arg("check")
        .arg(root.join("usr/share/doc/lazaret/examples/policies")))?;
    ensure!(ok && out.contains("St. Example General"), "{out}");

    // The unit, as installed: its commands must exist in the root; /bin/kill (ExecReload)
    // comes with every Debian system (procps), so the empty root gets a copy of the host's.
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::copy("/bin/kill", root.join("bin/kill")).context("/bin/kill")?;
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/lazaret.service"))?;
    ensure!(
        unit.contains("ExecStart=/usr/bin/lazaret run") && !unit.contains("/usr/local/bin"),
        "the unit runs the packaged binary:\n{unit}"
    );
    let (ok, out) = run(Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(["verify", "/lib/systemd/system/lazaret.service"]))?;
    ensure!(ok, "systemd-analyze verify:\n{out}");

    // Installing enforces nothing: no unit enabled, the configuration a conffile.
    ensure!(
        !root
            .join("etc/systemd/system/multi-user.target.wants")
            .exists()
            && !root
                .join("etc/systemd/system/network-pre.target.wants")
                .exists(),
        "installing enabled the unit"
    );
    let status = dpkg(&root, &["--status", "lazaret"])?;
    ensure!(
        status.contains("Conffiles:\n /etc/lazaret/lazaret.toml "),
        "{status}"
    );

    // Removal keeps the (possibly edited) configuration; purge deletes it.
    dpkg(&root, &["--remove", "lazaret"])?;
    ensure!(!lazaret.exists(), "remove left the binary");
    ensure!(
        root.join("etc/lazaret/lazaret.toml").exists(),
        "remove deleted the conffile"
    );
    dpkg(&root, &["--purge", "lazaret"])?;
    ensure!(
        !root.join("etc/lazaret/lazaret.toml").exists(),
        "purge kept the conffile"
    );
    Ok(())
}

/// Whether the ELF file at `path` asks for no program interpreter (no `PT_INTERP`): it is
/// statically linked, and runs without the C library of any particular distribution.
fn statically_linked(path: &Path) -> Result<bool> {
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        elf.get(..4) == Some(b"\x7fELF") && elf.get(4) == Some(&2),
        "not an ELF64 file"
    );
    let u16_at = |at: usize| -> Result<u64> {
        let b = elf.get(at..at + 2).context("truncated ELF header")?;
        Ok(u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u64_at = |at: usize| -> Result<u64> {
        let b: [u8; 8] = elf
            .get(at..at + 8)
            .context("truncated ELF header")?
            .try_into()?;
        Ok(u64::from_le_bytes(b))
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?);
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize)?;
        let kind = elf.get(at..at + 4).context("truncated program header")?;
        if kind == 3u32.to_le_bytes() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The statically linked binary (`cargo xtask package` ships it next to the package; the
/// test runs the debug build `cargo xtask test` names in `LAZARET_STATIC`): no interpreter,
/// and `check`, `plan` and `explain` work with every capability dropped (no BPF, no network
/// administration), as a policy repository's CI runs them.
#[test]
fn the_static_binary_checks_and_plans_a_policy_without_privileges() -> Result<()> {
    let binary: PathBuf = std::env::var_os("LAZARET_STATIC")
        .context(
            "LAZARET_STATIC is not set: run the tests with `cargo xtask test` (it builds the \
             static binary first)",
        )?
        .into();
    ensure!(
        statically_linked(&binary)?,
        "{} is dynamically linked",
        binary.display()
    );
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    // A policy repository with two commits, as CI sees a pull request.
    let tmp = TempDir::new()?;
    let repo = tmp.path.join("repo");
    std::fs::create_dir_all(repo.join("policies/devices"))?;
    std::fs::create_dir_all(repo.join("policies/workflows"))?;
    for entry in walk(&policies)? {
        let to = repo.join("policies").join(entry.strip_prefix(&policies)?);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&entry, to)?;
    }
    let git = |args: &[&str]| -> Result<()> {
        let (ok, out) = run(Command::new("git")
            .args(["-c", "user.email=ci@example.invalid", "-c", "user.name=ci"])
            .args(args)
            .current_dir(&repo))?;
        ensure!(ok, "git {args:?}: {out}");
        Ok(())
    };
    git(&["init", "-q"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-qm", "hospital"])?;
    let imaging = repo.join("policies/workflows/imaging.toml");
    let text =
        std::fs::read_to_string(&imaging)?.replacen("ports = [104, 11112]", "ports = [11112]", 1);
    std::fs::write(&imaging, text)?;
    git(&["commit", "-qam", "DICOM-TLS port only"])?;
    // No capability at all: what a CI container has (setpriv, from util-linux).
    let unprivileged = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--bounding-set=-all", "--inh-caps=-all", "--"])
            .arg(&binary)
            .args(args)
            .current_dir(&repo);
        run(&mut cmd)
    };
    let (ok, out) = unprivileged(&["check", "policies", "--format", "json"])?;
    ensure!(ok && out.contains("\"ok\": true"), "{out}");
    let (ok, out) = unprivileged(&["plan", "HEAD~1", "HEAD", "--path", "policies"])?;
    ensure!(
        ok && out.contains("- deny  ct-01 -> role:pacs (10.10.4.10/32) tcp/104"),
        "{out}"
    );
    let (ok, out) = unprivileged(&[
        "explain",
        "policies",
        "--from",
        "mon-icu-01",
        "--to",
        "10.10.1.20",
        "--proto",
        "tcp",
        "--port",
        "2575",
    ])?;
    ensure!(ok && out.contains("verdict: allow"), "{out}");
    Ok(())
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}
