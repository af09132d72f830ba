//! The control API: JSON lines over a unix socket. One request per line, one reply per
//! line. Only root may use it, or the members of `control_group` when one is configured;
//! everyone else is refused (checked with SO_PEERCRED, whatever the socket's mode) and
//! logged. The socket is mode 0600 (0660, group `control_group`, with a group). The server never
//! touches the datapath itself: it forwards each request to the controller's loop (the
//! datapath's single owner) and waits for the answer.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::{events::Feed, quarantine::Action};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Empty struct variants, not unit variants: serde ignores unknown fields of unit
    // variants in an internally tagged enum, and a typo'd request must be an error.
    /// Generation, commit, interfaces, uptime, map pressure.
    Status {},
    /// Devices with live counters and last seen.
    Devices {},
    /// Sources seen on device ports that are not in the inventory.
    UnknownDevices {},
    /// The flows of one device.
    Flows {
        device: String,
    },
    QuarantineList {},
    QuarantineAdd {
        device: String,
        action: Action,
        reason: String,
    },
    QuarantineRelease {
        device: String,
        reason: String,
    },
    /// Bridge-port pins: which managed MAC is pinned to which port.
    Pins {},
    /// Releases a device's bridge-port pin (it is pinned again where it is next seen).
    PinRelease {
        device: String,
        reason: String,
    },
    /// Stop enforcing (`lazaret detach --force`): the daemon removes its XDP links, nftables
    /// tables and interface hold, and restores nothing until it is restarted.
    Detach {
        reason: String,
    },
    /// Recent events (deny, audit, spoof, unknown, learn, rogue, quarantine, release). With
    /// `follow`, the reply is followed by one event object per line, as they happen, until
    /// the client closes the connection.
    Events {
        #[serde(default)]
        follow: bool,
    },
}

/// A reply: `{"ok": true, "data": …}` or `{"ok": false, "error": "…"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn data(v: serde_json::Value) -> Reply {
        Reply {
            ok: true,
            data: Some(v),
            error: None,
        }
    }
    /// A typed reply (see [`super::api`]).
    pub fn of(data: &impl Serialize) -> Reply {
        match serde_json::to_value(data) {
            Ok(v) => Reply::data(v),
            Err(e) => Reply::error(format!("the daemon could not encode its reply: {e}")),
        }
    }

    /// The reply's data as `T` (see [`super::api`]), or its error.
    pub fn into_typed<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        if !self.ok {
            return Err(self
                .error
                .unwrap_or_else(|| "the daemon refused the request".into()));
        }
        serde_json::from_value(self.data.unwrap_or(serde_json::Value::Null)).map_err(|e| {
            format!(
                "the daemon's reply is not what this lazaret expects (a different version?): {e}"
            )
        })
    }

    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            data: None,
            error: Some(msg.into()),
        }
    }
}

/// Decodes one request line. Pure: the fuzz target and the tests call it directly.
pub fn decode(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    serde_json::from_slice(line)
        .map_err(|e| format!("malformed request: {e} (expected e.g. {{\"cmd\":\"status\"}})"))
}

/// A request on its way to the controller, with who asked and where to answer.
#[derive(Debug)]
pub struct Call {
    pub request: Request,
    pub peer: String,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: another lazaret is already serving it (stop it first, or set control_socket elsewhere)")]
    InUse { path: PathBuf },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who may use the control socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Members of this group are admitted besides root.
    pub group: Option<u32>,
}

impl Access {
    /// Whether a peer is admitted: root, or a member of the group (its primary group, or a
    /// supplementary one as the kernel reports it for the peer's process).
    pub fn admits(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        if uid == 0 {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        gid == group || pid.is_some_and(|p| supplementary_groups(p).contains(&group))
    }
}

/// The `Groups:` line of /proc/PID/status (empty if the process is gone). Read after the
/// connection is accepted: a peer that exits at once could see its pid reused, which can
/// only admit a process that could have connected through the group-owned socket anyway.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Who is behind a control connection, for the audit log and the logs: the user the kernel
/// says is connected (`root (uid 0)`), and, when that process runs for someone else, the
/// person who logged in — the audit login uid (`/proc/PID/loginuid`, set at login and kept
/// across `sudo` and `su`), else `SUDO_USER` from the process's environment: `alice via
/// root (uid 0)`. Read right after accepting; a peer gone by then is named by uid alone.
pub fn operator(uid: u32, pid: Option<i32>) -> String {
    let connected = format!(
        "{} (uid {uid})",
        user_name(uid).unwrap_or_else(|| "?".into())
    );
    let Some(pid) = pid else {
        return connected;
    };
    let login = std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        // (uid_t)-1: no login (a service, a container without pam_loginuid).
        .filter(|l| *l != u32::MAX && *l != uid)
        .map(|l| user_name(l).unwrap_or_else(|| format!("uid {l}")));
    let sudo = || {
        std::fs::read(format!("/proc/{pid}/environ"))
            .ok()?
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"SUDO_USER="))
            .map(|v| crate::text::printable(&String::from_utf8_lossy(v)).into_owned())
            .filter(|v| !v.is_empty())
    };
    match login.or_else(sudo) {
        Some(person) => format!("{person} via {connected}"),
        None => connected,
    }
}

/// The user name of `uid` from the system's user database.
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Binds the socket (root only: mode 0600). An existing path is an error if a server
/// answers on it; a stale socket left by a crash is replaced; any other file there is an
/// error (never deleted).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    bind_for(path, Access::default())
}

/// Binds the socket for `access`: mode 0600, or 0660 owned by the group.
pub fn bind_for(path: &Path, access: Access) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    let mode = if access.group.is_some() { 0o660 } else { 0o600 };
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(listener)
}

/// Accepts connections from root only, until the controller goes away. Event requests are
/// answered here from `feed`, without a round trip through the controller.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<Call>, feed: Feed) {
    serve_for(listener, calls, feed, Access::default()).await;
}

/// Accepts connections from the peers `access` admits, until the controller goes away.
pub async fn serve_for(
    listener: UnixListener,
    calls: mpsc::Sender<Call>,
    feed: Feed,
    access: Access,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                continue;
            }
        };
        let calls = calls.clone();
        let feed = feed.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, calls, feed, access).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn connection(
    stream: UnixStream,
    calls: mpsc::Sender<Call>,
    feed: Feed,
    access: Access,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let peer = operator(cred.uid(), cred.pid());
    let (read, mut write) = stream.into_split();
    if !access.admits(cred.uid(), cred.gid(), cred.pid()) {
        let who = match access.group {
            Some(g) => format!("root and members of group {g}"),
            None => "root".to_string(),
        };
        tracing::warn!(
            uid = cred.uid(),
            gid = cred.gid(),
            pid = cred.pid().unwrap_or(0),
            "control request refused: only {who} may use the control socket"
        );
        let reply = Reply::error(format!(
            "permission denied: only {who} may use lazaret's control socket"
        ));
        write.write_all(&line(&reply)).await?;
        return Ok(());
    }
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bounded read: a line longer than MAX_REQUEST is refused, not buffered forever.
        let n = (&mut reader)
            .take(MAX_REQUEST as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let reply = if buf.len() > MAX_REQUEST {
            let r = Reply::error(format!("request longer than {MAX_REQUEST} bytes"));
            write.write_all(&line(&r)).await?;
            return Ok(());
        } else {
            match decode(buf.trim_ascii()) {
                Err(e) => Reply::error(e),
                Ok(Request::Events { follow }) => {
                    return events(&mut reader, &mut write, &feed, follow).await;
                }
                Ok(request) => {
                    let (tx, rx) = oneshot::channel();
                    if calls
                        .send(Call {
                            request,
                            peer: peer.clone(),
                            reply: tx,
                        })
                        .await
                        .is_err()
                    {
                        Reply::error("lazaret is shutting down")
                    } else {
                        rx.await
                            .unwrap_or_else(|_| Reply::error("lazaret dropped the request"))
                    }
                }
            }
        };
        write.write_all(&line(&reply)).await?;
    }
}

/// Answers an events request: the recent events as the reply's data; when following, then
/// every new event on its own line until the client hangs up (or the daemon stops).
async fn events(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    feed: &Feed,
    follow: bool,
) -> std::io::Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    let (recent, mut rx) = feed.subscribe();
    let data: Vec<serde_json::Value> = recent
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    write
        .write_all(&line(&Reply::data(serde_json::Value::Array(data))))
        .await?;
    if !follow {
        return Ok(());
    }
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            // The client closing (or writing anything) ends the stream.
            n = reader.read(&mut sink) => {
                if n? == 0 {
                    return Ok(());
                }
            }
            ev = rx.recv() => {
                let text = match ev {
                    Ok(l) => l.to_string(),
                    Err(RecvError::Lagged(count)) => serde_json::to_string(&super::events::Record::new(
                        super::events::unix_now(),
                        super::events::Event::Lost { count },
                    ))
                    .unwrap_or_default(),
                    Err(RecvError::Closed) => return Ok(()),
                };
                write.write_all(text.as_bytes()).await?;
                write.write_all(b"\n").await?;
            }
        }
    }
}

fn line(reply: &Reply) -> Vec<u8> {
    let mut v = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    v.push(b'\n');
    v
}

/// Client side of `events`: the recent events, then (when following) `on_event` for each
/// new one until it returns false or the daemon goes away.
pub fn follow_events(
    path: &Path,
    follow: bool,
    mut on_event: impl FnMut(serde_json::Value) -> bool,
) -> Result<(), std::io::Error> {
    use std::io::{BufRead, Write};
    let mut s = connect(path)?;
    let mut body =
        serde_json::to_vec(&Request::Events { follow }).map_err(std::io::Error::other)?;
    body.push(b'\n');
    s.write_all(&body)?;
    let mut lines = std::io::BufReader::new(s).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let reply: Reply = serde_json::from_str(&first)
        .map_err(|e| std::io::Error::other(format!("bad reply from lazaret: {e}")))?;
    if !reply.ok {
        return Err(std::io::Error::other(
            reply
                .error
                .unwrap_or_else(|| "the daemon refused the request".into()),
        ));
    }
    // Raw JSON, not `events::Record`: a record of a kind or with a field this build does not
    // know (a newer daemon) is still passed on, never dropped or ended on.
    let recent: Vec<serde_json::Value> = reply.into_typed().map_err(std::io::Error::other)?;
    for ev in recent {
        if !on_event(ev) {
            return Ok(());
        }
    }
    for l in lines {
        let ev = serde_json::from_str(&l?)
            .map_err(|e| std::io::Error::other(format!("bad event from lazaret: {e}")))?;
        if !on_event(ev) {
            break;
        }
    }
    Ok(())
}

fn connect(path: &Path) -> Result<std::os::unix::net::UnixStream, std::io::Error> {
    std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot reach lazaret at {} ({e}); is `lazaret run` running, and are you root?",
                path.display()
            ),
        )
    })
}

/// Client side, for the CLI: one request, one reply.
pub fn call(path: &Path, request: &Request) -> Result<Reply, std::io::Error> {
    use std::io::{BufRead, Write};
    let mut s = connect(path)?;
    let mut body = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    body.push(b'\n');
    s.write_all(&body)?;
    let mut reply = String::new();
    std::io::BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(&reply)
        .map_err(|e| std::io::Error::other(format!("bad reply from lazaret: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit log names the person behind sudo, not only uid 0: here a child process
    /// with `SUDO_USER` in its environment (its loginuid is unset in the test sandbox, or
    /// ours, so the environment decides).
    #[test]
    fn the_operator_behind_sudo_is_named() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env("SUDO_USER", "alice-biomed")
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        // Until the child has exec'd, /proc shows the forked copy of this process and its
        // environment: wait (bounded) until the child's own environment is there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.windows(10).any(|w| w == b"SUDO_USER=") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let uid = nix::unistd::getuid().as_raw();
        let who = operator(uid, Some(pid));
        let _ = child.kill();
        let _ = child.wait();
        let ours = std::fs::read_to_string("/proc/self/loginuid").unwrap_or_default();
        if ours.trim() == u32::MAX.to_string() || ours.trim() == uid.to_string() {
            assert!(who.starts_with("alice-biomed via "), "{who}");
        }
        assert!(who.ends_with(&format!("(uid {uid})")), "{who}");
        assert_eq!(
            operator(uid, None),
            format!(
                "{} (uid {uid})",
                user_name(uid).unwrap_or_else(|| "?".into())
            )
        );
    }

    #[test]
    fn decodes_every_request() {
        assert_eq!(decode(br#"{"cmd":"status"}"#), Ok(Request::Status {}));
        assert_eq!(
            decode(br#"{"cmd":"quarantine_add","device":"pump-01","action":"isolate","reason":"scan"}"#),
            Ok(Request::QuarantineAdd { device: "pump-01".into(), action: Action::Isolate, reason: "scan".into() })
        );
        assert_eq!(
            decode(br#"{"cmd":"events"}"#),
            Ok(Request::Events { follow: false })
        );
        assert_eq!(
            decode(br#"{"cmd":"events","follow":true}"#),
            Ok(Request::Events { follow: true })
        );
        assert_eq!(
            decode(br#"{"cmd":"flows","device":"mon-1"}"#),
            Ok(Request::Flows {
                device: "mon-1".into()
            })
        );
    }

    #[test]
    fn only_root_or_the_control_group_is_admitted() {
        let root_only = Access::default();
        assert!(root_only.admits(0, 0, None));
        assert!(!root_only.admits(1000, 1000, None));
        assert!(!root_only.admits(65534, 0, None), "gid 0 alone is not root");
        let ops = Access { group: Some(4242) };
        assert!(ops.admits(0, 0, None));
        assert!(ops.admits(1000, 4242, None));
        assert!(!ops.admits(1000, 1000, None));
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"cmd\":\"nope\"}",
            b"{\"cmd\":\"status\",\"x\":1}",
            b"{\"cmd\":\"events\",\"follow\":\"yes\"}",
            b"\xff\xfe",
            b"{\"cmd\":\"quarantine_add\",\"device\":\"a\",\"action\":\"burn\",\"reason\":\"\"}",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert!(decode(&vec![b' '; MAX_REQUEST + 1]).is_err());
    }
}
