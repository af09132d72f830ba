//! Access control of the running daemon: the control socket admits root (and the members of
//! `control_group`) only, checked by the daemon on the peer's credentials even when the
//! socket's file mode would let others connect; refusals are logged; the metrics endpoint
//! answers GET and HEAD only; nothing the daemon writes is writable by others.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use std::time::Duration;

use anyhow::{Context, Result};
use lazaret_tests::{
    daemon::{monitor_policy, workflow, Lab},
    netns::wait_until,
    reliability::{control_as, http, record_figure},
};

const NOBODY: u32 = 65534;
const OPS_GID: u32 = 4242;

/// Starts the daemon and waits for its control socket (bound just after the ready file).
fn start(lab: &mut Lab) -> Result<std::path::PathBuf> {
    lab.start()?;
    let socket = lab.tmp.path.join("control.sock");
    wait_until(Duration::from_secs(10), || socket.exists())
        .then_some(socket)
        .context("the control socket did not appear")
}

/// A lab whose daemon runs confined as the deployed unit confines it: what it does with
/// the socket and the state files works with the unit's capabilities only.
fn lab() -> Result<Lab> {
    let mut lab = Lab::new(|mac| monitor_policy(mac, &["hl7"], &workflow("hl7", "tcp", 2575)))?;
    lab.confine();
    Ok(lab)
}

/// Opens the way to the socket for everyone at the file-system level, so what is left to
/// refuse an unprivileged peer is the daemon's own credential check.
fn open_socket_to_all(lab: &Lab) -> Result<std::path::PathBuf> {
    let socket = lab.tmp.path.join("control.sock");
    std::fs::set_permissions(&lab.tmp.path, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
    Ok(socket)
}

#[test]
fn control_socket_refuses_other_users_and_files_are_not_world_writable() -> Result<()> {
    let mut lab = lab()?;
    let socket = start(&mut lab)?;

    // The socket and the state the daemon wrote.
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    lab.quarantine("mon-icu-01", "alert", "test")?;
    let mut checked = 0;
    for entry in std::fs::read_dir(&lab.state_dir)? {
        let entry = entry?;
        let mode = entry.metadata()?.permissions().mode();
        assert_eq!(
            mode & 0o002,
            0,
            "{} is world-writable ({mode:o})",
            entry.path().display()
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} state files to check");
    let dir_mode = std::fs::metadata(&lab.state_dir)?.permissions().mode();
    assert_eq!(dir_mode & 0o002, 0, "state dir mode {dir_mode:o}");

    // Root is served; nobody is refused by the daemon itself, and the refusal is logged.
    let socket = open_socket_to_all(&lab)?;
    assert!(control_as(0, 0, &[], &socket)?.contains("\"ok\":true"));
    let reply = control_as(NOBODY, NOBODY, &[], &socket)?;
    assert!(
        reply.contains("\"ok\":false") && reply.contains("permission denied"),
        "nobody got: {reply}"
    );
    let logged = |lab: &Lab| {
        let log = lab
            .daemon
            .as_ref()
            .map(lazaret_tests::netns::ChildGuard::output)
            .unwrap_or_default();
        log.lines()
            .any(|l| l.contains("control request refused") && l.contains("65534"))
    };
    assert!(
        wait_until(Duration::from_secs(3), || logged(&lab)),
        "refusal not logged:\n{}",
        lab.daemon
            .as_ref()
            .map(lazaret_tests::netns::ChildGuard::output)
            .unwrap_or_default()
    );

    // The metrics endpoint is read-only.
    assert_eq!(http(&lab, "GET", "/metrics")?.0, 200);
    assert_eq!(http(&lab, "HEAD", "/metrics")?.0, 200);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        assert_eq!(http(&lab, method, "/metrics")?.0, 405, "{method}");
    }
    assert_eq!(http(&lab, "GET", "/quarantine")?.0, 404);
    record_figure(
        "ns_access::control_socket_refuses_other_users_and_files_are_not_world_writable",
        &format!("{checked} state files checked, 1 foreign uid refused, 4 write methods → 405"),
    );
    Ok(())
}

#[test]
fn control_group_members_are_admitted_and_others_refused() -> Result<()> {
    let mut lab = lab()?;
    let config = std::fs::read_to_string(&lab.config)?;
    std::fs::write(
        &lab.config,
        format!("control_group = \"{OPS_GID}\"\n{config}"),
    )?;
    let socket = start(&mut lab)?;
    let meta = std::fs::metadata(&socket)?;
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), OPS_GID);

    let socket = open_socket_to_all(&lab)?;
    let primary = control_as(NOBODY, OPS_GID, &[], &socket)?;
    assert!(primary.contains("\"ok\":true"), "primary group: {primary}");
    let supplementary = control_as(NOBODY, NOBODY, &[OPS_GID], &socket)?;
    assert!(
        supplementary.contains("\"ok\":true"),
        "supplementary group: {supplementary}"
    );
    let outsider = control_as(NOBODY, NOBODY, &[], &socket)?;
    assert!(
        outsider.contains("permission denied") && outsider.contains("group 4242"),
        "outsider: {outsider}"
    );
    record_figure(
        "ns_access::control_group_members_are_admitted_and_others_refused",
        "2 group members admitted (primary, supplementary), 1 outsider refused",
    );
    Ok(())
}
