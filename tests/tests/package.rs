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
