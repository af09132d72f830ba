//! `cargo xtask setup`: installs what is missing, says what it does, and is a quick no-op
//! when everything is present.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// bpf-linker 0.10.0 loads rustc's own libLLVM at run time, so it works with the nightly
/// toolchain on the image (newer releases want an LLVM the machine does not have).
const BPF_LINKER_VERSION: &str = "0.10.0";

/// cargo-fuzz drives libFuzzer for `cargo xtask fuzz`; 0.13.2 builds with the stable
/// toolchain here (the fuzz targets themselves build with nightly).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Debian packages the project uses, with a command each provides.
/// prometheus brings promtool, which unit-tests the alert rules.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("nftables", "nft"),
    ("prometheus", "promtool"),
    // setpriv: the tests run the daemon with the systemd unit's capability bounding set.
    ("util-linux", "setpriv"),
];

pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
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
    if !has_bpf_linker() {
        say(&format!(
            "installing bpf-linker {BPF_LINKER_VERSION} from crates.io (about a minute)"
        ));
        run_cmd(Command::new("cargo").args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ]))?;
        done.push("bpf-linker");
    }
    if !has_cargo_fuzz() {
        say(&format!(
            "installing cargo-fuzz {CARGO_FUZZ_VERSION} from crates.io (about a minute and a half)"
        ));
        run_cmd(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]))?;
        done.push("cargo-fuzz");
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
            "everything present (nightly rust-src, bpf-linker {BPF_LINKER_VERSION}, cargo-fuzz {CARGO_FUZZ_VERSION}, {})",
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

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
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

fn has_bpf_linker() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION))
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

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
