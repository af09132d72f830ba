//! `cargo xtask setup`: installs what is missing, says what it does, and is a quick no-op
//! when everything is present.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// bpf-linker 0.10.0 loads rustc's own libLLVM at run time, so it works with the nightly
/// toolchain on the image (newer releases want an LLVM the machine does not have).
const BPF_LINKER_VERSION: &str = "0.10.0";

/// cargo-fuzz drives libFuzzer for `cargo xtask fuzz`; 0.13.2 builds with the stable
/// toolchain here (the fuzz targets themselves build with nightly).
pub(crate) const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-deny checks the dependency graph's licences, bans and sources in `cargo xtask
/// lint`; 0.20.2 builds with the stable toolchain here (about two and a half minutes).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// A tool installed with `cargo install --locked`: its crate, version, a command that prints
/// its version, and how long the install takes here.
struct CargoTool {
    krate: &'static str,
    version: &'static str,
    probe: &'static [&'static str],
    takes: &'static str,
}

const CARGO_TOOLS: &[CargoTool] = &[
    CargoTool {
        krate: "bpf-linker",
        version: BPF_LINKER_VERSION,
        probe: &["bpf-linker", "--version"],
        takes: "about a minute",
    },
    CargoTool {
        krate: "cargo-fuzz",
        version: CARGO_FUZZ_VERSION,
        probe: &["cargo", "fuzz", "--version"],
        takes: "about a minute and a half",
    },
    CargoTool {
        krate: "cargo-deny",
        version: CARGO_DENY_VERSION,
        probe: &["cargo", "deny", "--version"],
        takes: "about two and a half minutes",
    },
];

/// Debian packages the project uses, with a command each provides.
/// prometheus brings promtool, which unit-tests the alert rules.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("nftables", "nft"),
    ("prometheus", "promtool"),
    // setpriv: the tests run the daemon with the systemd unit's capability bounding set.
    ("util-linux", "setpriv"),
    // xdp-filter's program objects (in libxdp1): the datapath bench's stateless peer.
    ("xdp-tools", "xdp-filter"),
    // `cargo xtask package` (dpkg-deb, gzip for the man pages) and the package test's
    // `systemd-analyze verify` of the installed unit.
    ("dpkg", "dpkg-deb"),
    ("gzip", "gzip"),
    ("systemd", "systemd-analyze"),
    // musl-gcc: the static binary's C dependency (mimalloc) for the musl target.
    ("musl-tools", "musl-gcc"),
    // The active/standby pair's VRRP (deploy/keepalived, tests/tests/ns_ha.rs).
    ("keepalived", "keepalived"),
    // The pair's flow replication on the nftables dataplane (deploy/conntrackd), and
    // conntrack to read the replicated entries in its test.
    ("conntrackd", "conntrackd"),
    ("conntrack", "conntrack"),
    // The IEEE's MAC registry: unknown devices' vendors (gateway/src/daemon/oui.rs). A
    // file, not a command (an absolute path is probed as it is).
    ("ieee-data", "/usr/share/ieee-data/oui.txt"),
];

/// The target of the statically linked binary (`cargo xtask package`).
pub(crate) const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

pub(crate) fn run() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "lazaret's setup and tests load XDP programs and create network namespaces: run as root \
             (the capabilities needed are CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces \
             and package installation)"
        );
    }
    let mut done = Vec::new();
    if !has_rust_src()? {
        say("installing rust-src for the nightly toolchain (the eBPF crate builds core from source)");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        done.push("rust-src");
    }
    if !has_static_target()? {
        say(&format!(
            "adding the {STATIC_TARGET} target (the statically linked lazaret for policy repositories' CI)"
        ));
        run_cmd(Command::new("rustup").args(["target", "add", STATIC_TARGET]))?;
        done.push(STATIC_TARGET);
    }
    for tool in CARGO_TOOLS {
        if has(tool) {
            continue;
        }
        say(&format!(
            "installing {} {} from crates.io ({})",
            tool.krate, tool.version, tool.takes
        ));
        run_cmd(Command::new("cargo").args([
            "install",
            tool.krate,
            "--version",
            tool.version,
            "--locked",
        ]))?;
        done.push(tool.krate);
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, cmd)| !on_path(cmd))
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        say(&format!(
            "installing Debian packages: {}",
            missing.join(", ")
        ));
        run_cmd(Command::new("apt-get").arg("update").arg("-qq"))?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        done.extend(missing);
    }
    if done.is_empty() {
        say(&format!(
            "everything present (nightly rust-src, {STATIC_TARGET}, {}, {})",
            CARGO_TOOLS
                .iter()
                .map(|t| format!("{} {}", t.krate, t.version))
                .collect::<Vec<_>>()
                .join(", "),
            DEBIAN_PACKAGES
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    } else {
        say(&format!("installed: {}", done.join(", ")));
    }
    Ok(())
}

fn say(msg: &str) {
    eprintln!("setup: {msg}");
}

fn has_static_target() -> Result<bool> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == STATIC_TARGET))
}

fn has_rust_src() -> Result<bool> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup (is the nightly toolchain installed?)")?;
    if !out.status.success() {
        bail!(
            "the nightly toolchain is missing (rustup says: {}); it is needed to build the XDP program",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src")))
}

/// Whether `tool` is installed at its version.
fn has(tool: &CargoTool) -> bool {
    let [cmd, args @ ..] = tool.probe else {
        return false;
    };
    Command::new(cmd)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(tool.version))
        .unwrap_or(false)
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(cmd).is_file())
}

pub(crate) fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
