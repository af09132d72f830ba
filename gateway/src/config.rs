//! The daemon's configuration (`/etc/lazaret/lazaret.toml`): interfaces and their sides,
//! where policy, state and pins live, where metrics and the control socket listen.
//!
//! Pure: parsing and validation only. Unknown keys and bad values are errors with
//! `file:line:col`, like policy errors.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::datapath::AttachMode;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/lazaret/lazaret.toml";

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of policy TOML files (usually a git checkout).
    pub policy_dir: PathBuf,
    /// Where quarantine state, learned flows and the audit log are kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// bpffs directory for pinned maps and links; a subdirectory per ABI version is used.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Prometheus endpoint (`/metrics`).
    #[serde(default = "default_metrics")]
    pub metrics_listen: SocketAddr,
    /// Unix socket of the control API.
    #[serde(default = "default_socket")]
    pub control_socket: PathBuf,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Which dataplane enforces: the XDP program, the nftables table, or XDP with nftables
    /// on the interfaces where the program cannot be attached.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Interfaces to enforce on.
    pub interfaces: Vec<Interface>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    pub side: Side,
    #[serde(default = "default_mode")]
    pub xdp_mode: AttachMode,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Faces medical devices: sources are attributed, checked for spoofing and judged.
    Devices,
    /// Faces servers and the rest of the hospital: traffic is judged for the device it is
    /// addressed to.
    Upstream,
}

impl Side {
    pub fn abi(self) -> u8 {
        match self {
            Side::Devices => lazaret_abi::SIDE_DEVICES,
            Side::Upstream => lazaret_abi::SIDE_UPSTREAM,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    #[default]
    Xdp,
    Nftables,
    Auto,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/lazaret")
}
fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/lazaret")
}
fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_socket() -> PathBuf {
    PathBuf::from("/run/lazaret/control.sock")
}
fn default_mode() -> AttachMode {
    AttachMode::Auto
}

/// A configuration error, positioned in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: error: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
}

impl Config {
    /// Reads and validates a configuration file. Relative paths inside it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.policy_dir,
            &mut cfg.state_dir,
            &mut cfg.pin_dir,
            &mut cfg.control_socket,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    /// Parses configuration text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |offset: usize, message: String| {
            let (line, col) = line_col(text, offset);
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                col,
                message,
            }
        };
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            invalid(offset, e.message().to_string())
        })?;
        if cfg.interfaces.is_empty() {
            return Err(invalid(
                text.find("interfaces").unwrap_or(0),
                "no interfaces configured: add at least one [[interfaces]] with a name and a side"
                    .into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for iface in &cfg.interfaces {
            let at = text.find(&format!("\"{}\"", iface.name)).unwrap_or(0);
            if iface.name.is_empty() || iface.name.len() > 15 || iface.name.contains('/') {
                return Err(invalid(
                    at,
                    format!(
                        "{:?} is not a valid interface name (1 to 15 bytes, no '/')",
                        iface.name
                    ),
                ));
            }
            if !seen.insert(&iface.name) {
                return Err(invalid(
                    at,
                    format!("interface {:?} is configured twice", iface.name),
                ));
            }
        }
        Ok(cfg)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("lazaret.toml"))
    }

    const GOOD: &str = r#"
policy_dir = "policies"
metrics_listen = "127.0.0.1:9464"
[[interfaces]]
name = "icu0"
side = "devices"
[[interfaces]]
name = "uplink0"
side = "upstream"
xdp_mode = "skb"
"#;

    #[test]
    fn parses_a_good_config_with_defaults() {
        let cfg = parse(GOOD).expect("valid");
        assert_eq!(cfg.interfaces.len(), 2);
        assert_eq!(cfg.interfaces[0].xdp_mode, AttachMode::Auto);
        assert_eq!(cfg.interfaces[1].xdp_mode, AttachMode::Skb);
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/lazaret"));
    }

    #[test]
    fn unknown_key_is_rejected_with_its_position() {
        let text = GOOD.replace("xdp_mode = \"skb\"", "xdp_mod = \"skb\"");
        match parse(&text) {
            Err(ConfigError::Invalid {
                line, col, message, ..
            }) => {
                assert_eq!((line, col), (10, 1));
                assert!(message.contains("unknown field `xdp_mod`"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn bad_side_is_rejected_with_its_position() {
        let text = GOOD.replace("side = \"upstream\"", "side = \"north\"");
        match parse(&text) {
            Err(ConfigError::Invalid { line, col, .. }) => assert_eq!((line, col), (9, 8)),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn dataplane_defaults_to_xdp_and_a_bad_one_is_positioned() {
        assert_eq!(parse(GOOD).expect("valid").dataplane, Dataplane::Xdp);
        let nft = format!("dataplane = \"nftables\"\n{GOOD}");
        assert_eq!(parse(&nft).expect("valid").dataplane, Dataplane::Nftables);
        match parse(&format!("dataplane = \"ebpf\"\n{GOOD}")) {
            Err(ConfigError::Invalid {
                line, col, message, ..
            }) => {
                assert_eq!((line, col), (1, 13));
                assert!(message.contains("nftables"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_interface_is_rejected() {
        let text = GOOD.replace("uplink0", "icu0");
        assert!(matches!(parse(&text), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn no_interfaces_is_rejected() {
        assert!(matches!(
            parse("policy_dir = \"p\"\ninterfaces = []\n"),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lazaret.toml");
        let cfg = Config::load(&path).expect("deploy/lazaret.toml parses");
        assert_eq!(cfg.interfaces.len(), 4);
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
