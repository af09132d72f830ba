//! Enforcement removed behind the running daemon's back, on both dataplanes: the XDP link
//! detached through bpf(2) (`BPF_LINK_DETACH` on the pinned link, what any root process can
//! do; the kernel refuses `ip link set … xdp off` for a link), lazaret's nftables table
//! deleted, `nft flush ruleset`, and `lazaret detach` without `--force`. Each time, the
//! daemon notices from the kernel (the interface's XDP program id over netlink, the
//! ruleset's generation), puts enforcement back within the bound, counts it in
//! `lazaret_datapath_tamper_total`, and `lazaret_interface_attached` and `status` say what
//! the kernel does; a port the policy denies is closed again. `lazaret detach --force` is the
//! one way to stop on purpose: the daemon stops restoring and reports `detached`.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use lazaret_tests::{
    daemon::{monitor_policy, workflow, Dataplane, Lab},
    lazaret_bin,
    netns::wait_until,
    on_both_dataplanes,
    reliability::{metric, record_figure},
};

on_both_dataplanes!(enforcement_removed_behind_the_daemon_is_restored);

/// The allowed workflow (HL7 MLLP) and a port the monitor's policy does not allow (DICOM).
const ALLOWED: u16 = 2575;
const DENIED: u16 = 104;
/// The bound the daemon must restore within.
const BOUND: Duration = Duration::from_secs(1);
const T: Duration = Duration::from_millis(400);

/// The id of the XDP program on `ifname` in the gateway, as `ip -d link` reports it.
fn xdp_program(lab: &Lab, ifname: &str) -> Result<Option<u64>> {
    let out = lab
        .net
        .gateway
        .exec(&["ip", "-j", "-d", "link", "show", "dev", ifname])?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("ip -j link: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(links[0]["xdp"]["prog"]["id"].as_u64())
}

/// The nftables tables in the gateway, as `family name`.
fn nft_tables(lab: &Lab) -> Result<Vec<String>> {
    let out = lab.net.gateway.exec(&["nft", "list", "tables"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect())
}

fn lazaret_tables(lab: &Lab) -> Result<Vec<String>> {
    Ok(nft_tables(lab)?
        .into_iter()
        .filter(|t| t.ends_with(" lazaret") || t.ends_with(" lazaret_b"))
        .collect())
}

/// `BPF_LINK_DETACH` on the link pinned at `pin`: the program leaves the interface while
/// the link and its pin stay.
fn detach_pinned_link(pin: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes())?;
    // union bpf_attr, large enough for both commands (zeroed beyond what they read).
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of `attr`, which outlives the call,
    // and the path string it points to.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        bail!(
            "BPF_OBJ_GET {}: {}",
            pin.display(),
            std::io::Error::last_os_error()
        );
    }
    let mut attr = [0u64; 16];
    attr[0] = fd as u64;
    // SAFETY: as above; `fd` is the link's, closed right after.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: our own descriptor, not used after.
    unsafe { libc::close(fd as libc::c_int) };
    if rc < 0 {
        bail!("BPF_LINK_DETACH {}: {err}", pin.display());
    }
    Ok(())
}

/// Waits (bounded by `limit`) until `enforcing` says enforcement is back; how long it took.
fn restored_within(limit: Duration, mut enforcing: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if enforcing() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn denied_is_closed(lab: &Lab, when: &str) -> Result<()> {
    if lab.connect(DENIED, T).is_ok() {
        bail!("{when}: the denied port {DENIED} is open");
    }
    Ok(())
}

/// `lazaret detach ARGS` against the lab's configuration.
/// In the gateway's namespace, where its nftables tables are.
fn detach(lab: &Lab, args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new("ip")
        .args(["netns", "exec", &lab.net.gateway.name])
        .arg(lazaret_bin()?)
        .arg("detach")
        .args(args)
        .arg("--config")
        .arg(&lab.config)
        .output()?)
}

fn tamper_count(lab: &Lab, iface: &str, kind: &str) -> Result<f64> {
    Ok(metric(
        lab,
        "lazaret_datapath_tamper_total",
        &[("interface", iface), ("kind", kind)],
    )?
    .unwrap_or(0.0))
}

fn attached(lab: &Lab, iface: &str) -> Result<Option<f64>> {
    metric(lab, "lazaret_interface_attached", &[("interface", iface)])
}

fn enforcement_removed_behind_the_daemon_is_restored(dataplane: Dataplane) -> Result<()> {
    let mut lab = Lab::on(dataplane, |mac| {
        monitor_policy(mac, &["hl7"], &workflow("hl7", "tcp", ALLOWED))
    })?;
    lab.echo_servers(&[ALLOWED, DENIED])?;
    lab.start()?;
    let dev = lab.net.gw_dev_if.clone();
    let server = lab.net.server_ip;
    assert_eq!(server, Ipv4Addr::new(10, 10, 0, 20));
    lab.connect(ALLOWED, T).context("the allowed workflow")?;
    denied_is_closed(&lab, "at start")?;
    assert_eq!(attached(&lab, &dev)?, Some(1.0), "attached at start");

    let mut figures = Vec::new();
    match dataplane {
        Dataplane::Xdp => {
            xdp_program(&lab, &dev)?.context("XDP attached at start")?;
            let pin = lab
                .bpffs
                .path
                .join(format!("v{}", lazaret_abi::ABI_VERSION))
                .join(format!("link_{dev}"));
            detach_pinned_link(&pin)?;
            assert_eq!(xdp_program(&lab, &dev)?, None, "the link detached");
            let took = restored_within(BOUND * 3, || {
                xdp_program(&lab, &dev).ok().flatten().is_some()
            })
            .context("XDP not restored after the link was detached")?;
            assert!(
                took <= BOUND,
                "XDP restored after {took:?}, bound {BOUND:?}"
            );
            assert_ne!(xdp_program(&lab, &dev)?, None);
            denied_is_closed(&lab, "after the detached link was restored")?;
            assert_eq!(tamper_count(&lab, &dev, "xdp_detached")?, 1.0);
            figures.push(format!(
                "XDP link detached: restored in {} ms",
                took.as_millis()
            ));
        }
        Dataplane::Nftables => {
            for (how, cmd) in [
                ("table deleted", None),
                ("ruleset flushed", Some(vec!["nft", "flush", "ruleset"])),
            ] {
                let before = lazaret_tables(&lab)?;
                assert!(!before.is_empty(), "lazaret's tables at start");
                match cmd {
                    Some(cmd) => {
                        lab.net.gateway.exec(&cmd)?;
                    }
                    None => {
                        let inet = before
                            .iter()
                            .find(|t| t.starts_with("inet "))
                            .context("inet table")?;
                        let mut args = vec!["nft", "delete", "table"];
                        args.extend(inet.split(' '));
                        lab.net.gateway.exec(&args)?;
                    }
                }
                let took = restored_within(BOUND * 3, || {
                    lazaret_tables(&lab).is_ok_and(|t| t.len() == before.len())
                })
                .with_context(|| format!("nftables not restored after: {how}"))?;
                assert!(
                    took <= BOUND,
                    "{how}: restored after {took:?}, bound {BOUND:?}"
                );
                denied_is_closed(&lab, how)?;
                lab.connect(ALLOWED, T)
                    .with_context(|| format!("the allowed workflow after: {how}"))?;
                figures.push(format!("{how}: restored in {} ms", took.as_millis()));
            }
            // A table of the other generation of the pair beside the enforcing one (a
            // reload whose delete of the old one failed): removed, the generation applied
            // again (with it there, what upstream sends to an address a device owns by
            // first use would be refused: see the enforcing table's OWNER_TABLE).
            let before = lazaret_tables(&lab)?;
            let inet = before
                .iter()
                .find(|t| t.starts_with("inet "))
                .context("inet table")?;
            let other = if inet.ends_with("_b") {
                "lazaret"
            } else {
                "lazaret_b"
            };
            lab.net
                .gateway
                .exec(&["nft", "add", "table", "inet", other])?;
            // One generation's tables again, both families (not merely as many: the
            // restore deletes them all, passing through as many on the way).
            let one_pair = |t: &[String]| {
                let name = |x: &String| x.split(' ').nth(1).map(str::to_string);
                t.len() == before.len() && t.iter().all(|x| name(x) == name(&t[0]))
            };
            let took = restored_within(BOUND * 3, || {
                lazaret_tables(&lab).is_ok_and(|t| one_pair(&t))
            })
            .context("the other table of the pair was not removed")?;
            denied_is_closed(&lab, "the other table removed")?;
            lab.connect(ALLOWED, T)
                .context("the allowed workflow after the other table was removed")?;
            assert_eq!(tamper_count(&lab, &dev, "nft_stale_table")?, 1.0);
            figures.push(format!(
                "the other table of the pair added: removed in {} ms",
                took.as_millis()
            ));
            // Both tamperings counted. A check that lists the tables just before a flush
            // and counts a table's rules just after sees the rules changed rather than the
            // table missing (CI caught it): either kind is the tampering, counted once.
            let counted = tamper_count(&lab, &dev, "nft_table_missing")?
                + tamper_count(&lab, &dev, "nft_rules_changed")?;
            assert!(
                counted == 2.0,
                "nftables tamperings counted {counted}, not 2; the daemon's log:\n{}",
                lab.daemon
                    .as_ref()
                    .map(lazaret_tests::netns::ChildGuard::output)
                    .unwrap_or_default()
            );
        }
    }
    // The metric and status say what the kernel does.
    assert_eq!(attached(&lab, &dev)?, Some(1.0), "attached after restoring");
    let status = lab.cli(&["status"])?;
    let mode = status["interfaces"][&dev]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(mode, "detached", "{status}");

    // `lazaret detach` against the running daemon is refused without --force.
    let out = detach(&lab, &[])?;
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && refused.contains("--force"),
        "detach without --force: {refused}"
    );
    denied_is_closed(&lab, "after a refused detach")?;
    if dataplane == Dataplane::Xdp {
        assert!(
            xdp_program(&lab, &dev)?.is_some(),
            "a refused detach detached"
        );
    }

    // With --force the daemon stands down, says so, and restores nothing.
    let out = detach(&lab, &["--force", "--reason", "maintenance window"])?;
    assert!(
        out.status.success(),
        "detach --force: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = lab.cli(&["status"])?;
    assert_eq!(status["interfaces"][&dev], "detached", "{status}");
    assert_eq!(attached(&lab, &dev)?, Some(0.0), "the metric says detached");
    std::thread::sleep(BOUND + Duration::from_millis(500));
    match dataplane {
        Dataplane::Xdp => assert_eq!(xdp_program(&lab, &dev)?, None, "not restored"),
        Dataplane::Nftables => assert!(lazaret_tables(&lab)?.is_empty(), "not restored"),
    }
    assert!(
        wait_until(Duration::from_secs(2), || lab.connect(DENIED, T).is_ok()),
        "detached on purpose: nothing is enforced"
    );
    record_figure(
        &format!(
            "fault_tamper::enforcement_removed_behind_the_daemon_is_restored::{}",
            dataplane.name()
        ),
        &format!(
            "{}; detach without --force refused; --force reported detached, not restored",
            figures.join("; ")
        ),
    );
    Ok(())
}
