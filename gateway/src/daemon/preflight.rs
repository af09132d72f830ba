//! Checks made before `lazaret run` touches the datapath: the metrics address can be bound
//! and the control socket path is free (or a stale socket). A second daemon started by
//! mistake, or a port taken by another service, must fail with a clear error before it has
//! installed a generation into the pinned maps a running daemon owns.

use std::path::Path;

use super::{control::ControlError, DaemonError};
use crate::config::Config;

/// Fails if the metrics address or the control socket is taken.
pub fn check(config: &Config) -> Result<(), DaemonError> {
    control_socket_free(&config.control_socket)?;
    // Bound and released at once: only the daemon's own listener keeps it afterwards.
    std::net::TcpListener::bind(config.metrics_listen).map_err(|source| DaemonError::Io {
        what: format!(
            "metrics endpoint {}: the address is taken or unusable (is another lazaret or exporter listening there? set metrics_listen elsewhere)",
            config.metrics_listen
        ),
        source,
    })?;
    Ok(())
}

/// The socket path is absent, or a socket nobody answers on (left by a crash).
fn control_socket_free(path: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            ),
        }
        .into());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ControlError::InUse {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(())
}
