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

use crate::dataplane::xdp::AttachMode;

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
    /// A group whose members may use the control socket besides root (a name, or a numeric
    /// gid). Without it, only root may.
    #[serde(default)]
    pub control_group: Option<String>,
    /// `control_group` resolved to a gid by [`Config::load`] (parsing alone leaves it unset,
    /// which admits root only: a failure to resolve can never widen access).
    #[serde(skip)]
    pub control_gid: Option<u32>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Which dataplane enforces: the XDP program, the nftables table, or XDP with nftables
    /// on the interfaces where the program cannot be attached.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Interfaces to enforce on.
    pub interfaces: Vec<Interface>,
    /// Where quarantine and release events are POSTed, if anywhere.
    #[serde(default)]
    pub webhook: Option<Webhook>,
    /// Where every event is sent as syslog, if anywhere.
    #[serde(default)]
    pub syslog: Option<Syslog>,
    /// Which of the policy's `[site.gateways.*]` this host is (required when the policy
    /// names gateways, refused when it names none): it enforces that gateway's devices only.
    #[serde(default)]
    pub gateway: Option<String>,
    /// This host's name among its gateway's `members` (an active/standby pair's two hosts);
    /// the system's host name when unset.
    #[serde(default)]
    pub member: Option<String>,
    /// This host is a member of an active/standby pair (see `docs/ha.md`).
    #[serde(default)]
    pub ha: Option<Ha>,
}

/// `[ha]`: the addresses keepalived moves between the members of a pair. The member holding
/// every one of them is active; the other is standby (see `daemon::ha`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ha {
    /// Checked by [`Config::parse`]: at least one, no repeats.
    pub virtual_addresses: Vec<std::net::IpAddr>,
    /// Quarantine replication with the other member (`daemon::hasync`): where this member
    /// listens, where the other listens, and the pre-shared key both sign with. All three
    /// or none.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub peer: Option<SocketAddr>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The key `key_file` holds, once loaded by [`Config::load`].
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
}

/// `[syslog]`: every event of the feed as an RFC 5424 message (see `daemon::syslog`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Syslog {
    /// `udp://host:port` or `tcp://host:port`; checked by [`Config::parse`].
    pub address: String,
    /// The facility of every message (default `local4`).
    #[serde(default = "default_facility")]
    pub facility: String,
}

fn default_facility() -> String {
    "local4".into()
}

/// `[webhook]`: quarantine and release events as JSON POSTs (see `daemon::webhook`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://host[:port]/path`; checked by [`Config::parse`].
    pub url: toml::Spanned<String>,
    /// A file holding the key every POST is signed with (`X-Lazaret-Signature`, see
    /// `daemon::webhook`); read by [`Config::load`], which refuses a file others may read.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The key `secret_file` holds (trailing whitespace removed), once loaded.
    #[serde(skip)]
    pub secret: Option<Vec<u8>>,
    /// PEM certificates of the CA an `https://` receiver's certificate must chain to,
    /// instead of the system's trust store (a hospital's own PKI).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// What `ca_file` holds, once loaded (and checked to hold certificates).
    #[serde(skip)]
    pub ca: Option<Vec<u8>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    pub side: Side,
    #[serde(default = "default_mode")]
    pub xdp_mode: AttachMode,
    /// VLAN of the frames that arrive untagged: set it when the interface is an access port
    /// or a VLAN sub-interface (`eth0.20`), where the tag is gone before XDP sees the frame,
    /// so devices bound to that VLAN in the policy are recognised.
    #[serde(default)]
    pub vlan: Option<Vlan>,
    /// The outer (802.1ad service) VLAN of a QinQ port: every frame must carry two tags,
    /// the outer one this, and devices are bound to the inner VLAN. Without it a port
    /// carries at most one tag, and a frame with two is dropped (an outer tag in front of a
    /// device's own is how frames hop VLANs).
    #[serde(default)]
    pub outer_vlan: Option<Vlan>,
    /// The Linux bridge this interface is a port of: devices the policy binds to the
    /// bridge's name are accepted behind this port (bridge deployment).
    #[serde(default)]
    pub bridge: Option<String>,
}

/// An 802.1Q VLAN id, 1 to 4094.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan(pub u16);

impl<'de> Deserialize<'de> for Vlan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u16::try_from(n) {
            Ok(v @ 1..=4094) => Ok(Vlan(v)),
            _ => Err(serde::de::Error::custom(format!(
                "VLAN {n} is out of range: an 802.1Q VLAN id is 1 to 4094"
            ))),
        }
    }
}

impl Interface {
    /// The interface's datapath configuration; `bridge_ifindex` is the ifindex of
    /// [`Self::bridge`] when it has one.
    pub fn datapath_config(&self, bridge_ifindex: Option<u32>) -> lazaret_abi::IfaceConfig {
        let plain = lazaret_abi::IfaceConfig::new(self.side.abi());
        lazaret_abi::IfaceConfig {
            untagged_vlan: self.vlan.map_or(lazaret_abi::VLAN_UNTAGGED, |v| v.0),
            binding_ifindex: bridge_ifindex.unwrap_or(lazaret_abi::IFINDEX_ANY),
            outer_vlan: self.outer_vlan.map_or(0, |v| v.0),
            // What devices behind it may own by first use: the policy's entries for the
            // interface they bind to (the bridge's, for a bridge port).
            claim_scope: match self.side {
                Side::Devices => lazaret_abi::claim_scope(self.binding().as_bytes()),
                Side::Upstream => plain.claim_scope,
            },
            ..plain
        }
    }

    /// The name of the interface devices behind this one bind to in the policy: its
    /// bridge's, or its own.
    pub fn binding(&self) -> &str {
        self.bridge.as_deref().unwrap_or(&self.name)
    }
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
    /// As written in the configuration (and logged).
    pub fn name(self) -> &'static str {
        match self {
            Side::Devices => "devices",
            Side::Upstream => "upstream",
        }
    }

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

/// One problem of a configuration file, positioned on the token it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// A configuration error, positioned in its file. `Invalid` carries every problem found
/// (the first in its fields, the rest in `more`), so one run of `lazaret config check`
/// shows them all.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(path, *line, *col, message, more))]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
        /// The problems after the first.
        more: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem, in file order (an unreadable file has none).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Invalid {
                line,
                col,
                message,
                more,
                ..
            } => std::iter::once(Problem {
                line: *line,
                col: *col,
                message: message.clone(),
            })
            .chain(more.iter().cloned())
            .collect(),
        }
    }
}

fn render(path: &Path, line: usize, col: usize, message: &str, more: &[Problem]) -> String {
    let mut out = format!("{}:{line}:{col}: {message}", path.display());
    for p in more {
        out += &format!("\n{}:{}:{}: {}", path.display(), p.line, p.col, p.message);
    }
    if !more.is_empty() {
        out += &format!("\n{} problems in {}", more.len() + 1, path.display());
    }
    out
}

/// The keys of the file and of its tables (unknown ones are errors).
const KEYS: [&str; 14] = [
    "policy_dir",
    "state_dir",
    "pin_dir",
    "metrics_listen",
    "control_socket",
    "control_group",
    "log_format",
    "dataplane",
    "interfaces",
    "webhook",
    "gateway",
    "member",
    "syslog",
    "ha",
];
const HA_KEYS: [&str; 4] = ["virtual_addresses", "listen", "peer", "key_file"];
const SYSLOG_KEYS: [&str; 2] = ["address", "facility"];
const INTERFACE_KEYS: [&str; 6] = ["name", "side", "xdp_mode", "vlan", "outer_vlan", "bridge"];
const WEBHOOK_KEYS: [&str; 3] = ["url", "secret_file", "ca_file"];

type Val<'i> = toml::Spanned<toml::de::DeValue<'i>>;

/// Collects every problem of a configuration text, each on its token. The values are
/// deserialized one by one (serde stops at the first error of a document), so a bad side
/// on one interface does not hide an unknown key on another.
struct Checker<'t> {
    text: &'t str,
    problems: Vec<(usize, String)>,
}

impl<'t> Checker<'t> {
    fn problem(&mut self, offset: usize, message: impl Into<String>) {
        self.problems.push((offset, message.into()));
    }

    fn keys(&mut self, table: &toml::de::DeTable<'_>, known: &[&str], what: &str) {
        for (key, _) in table {
            if !known.contains(&key.get_ref().as_ref()) {
                self.problem(
                    key.span().start,
                    format!(
                        "unknown key `{}` in {what}; expected one of: {}",
                        crate::text::printable(key.get_ref()),
                        known.join(", ")
                    ),
                );
            }
        }
    }

    /// `value` deserialized alone as a `T` (the text of the value, parsed again).
    fn value<T: serde::de::DeserializeOwned>(&mut self, key: &str, value: &Val<'_>) -> Option<T> {
        let span = value.span();
        let raw = self.text.get(span.clone()).unwrap_or_default();
        match toml::de::ValueDeserializer::parse(raw).and_then(T::deserialize) {
            Ok(v) => Some(v),
            Err(e) => {
                let at = span.start + e.span().map_or(0, |s| s.start.min(raw.len()));
                self.problem(at, format!("{key}: {}", e.message()));
                None
            }
        }
    }

    fn get<'a, 'i>(table: &'a toml::de::DeTable<'i>, key: &str) -> Option<&'a Val<'i>> {
        table.get(key)
    }

    /// `key`, if present, is a name of at most `max` letters, digits, '_', '-' and '.'.
    fn name(&mut self, doc: &toml::de::DeTable<'_>, key: &str, max: usize, what: &str) {
        let Some(v) = Self::get(doc, key) else {
            return;
        };
        let Some(name) = self.value::<String>(key, v) else {
            return;
        };
        let valid = !name.is_empty()
            && name.len() <= max
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            self.problem(
                v.span().start,
                format!(
                    "{key}: {:?} is not {what} (letters, digits, '_', '-', '.'; at most {max})",
                    crate::text::printable(&name)
                ),
            );
        }
    }

    fn check(&mut self, doc: &toml::de::DeTable<'_>) {
        self.keys(doc, &KEYS, "the configuration");
        for key in ["policy_dir", "state_dir", "pin_dir", "control_socket"] {
            if let Some(v) = Self::get(doc, key) {
                self.value::<PathBuf>(key, v);
            }
        }
        if Self::get(doc, "policy_dir").is_none() {
            self.problem(
                0,
                "policy_dir is missing: the directory of the policy files (a git checkout)",
            );
        }
        if let Some(v) = Self::get(doc, "metrics_listen") {
            self.value::<SocketAddr>("metrics_listen", v);
        }
        if let Some(v) = Self::get(doc, "log_format") {
            self.value::<LogFormat>("log_format", v);
        }
        for key in ["gateway", "member"] {
            self.name(doc, key, 64, "a name");
        }
        let dataplane = match Self::get(doc, "dataplane") {
            Some(v) => self.value::<Dataplane>("dataplane", v),
            None => Some(Dataplane::default()),
        };
        self.name(doc, "control_group", 32, "a group name or gid");
        self.interfaces(doc, dataplane);
        self.syslog(doc);
        self.ha(doc);
        self.webhook(doc);
    }

    /// The table `[key]`, if present: its value (for positions) and its entries, their
    /// keys checked against `known`. Anything but a table is a problem, with `example`.
    fn section<'a, 'i>(
        &mut self,
        doc: &'a toml::de::DeTable<'i>,
        key: &str,
        known: &[&str],
        example: &str,
    ) -> Option<(&'a Val<'i>, &'a toml::de::DeTable<'i>)> {
        let v = Self::get(doc, key)?;
        let toml::de::DeValue::Table(t) = v.get_ref() else {
            self.problem(
                v.span().start,
                format!("{key}: expected a table ({example})"),
            );
            return None;
        };
        self.keys(t, known, &format!("[{key}]"));
        Some((v, t))
    }

    /// `[webhook]`: a url lazaret can POST to.
    fn webhook(&mut self, doc: &toml::de::DeTable<'_>) {
        let example = "[webhook] url = \"https://…\"";
        let Some((v, t)) = self.section(doc, "webhook", &WEBHOOK_KEYS, example) else {
            return;
        };
        let mut https = false;
        match Self::get(t, "url") {
            Some(url) => {
                if let Some(u) = self.value::<String>("url", url) {
                    https = u.starts_with("https://");
                    if let Err(message) = crate::daemon::webhook::check_url(&u) {
                        self.problem(url.span().start, message);
                    }
                }
            }
            None => self.problem(v.span().start, "[webhook] needs a url"),
        }
        if let Some(ca) = Self::get(t, "ca_file") {
            if self.value::<PathBuf>("ca_file", ca).is_some() && !https {
                self.problem(
                    ca.span().start,
                    "ca_file: only an https:// webhook checks a certificate",
                );
            }
        }
    }

    /// `[ha]`: the virtual addresses, each an IP address, at least one, none twice.
    fn ha(&mut self, doc: &toml::de::DeTable<'_>) {
        use toml::de::DeValue;
        let example = "[ha] virtual_addresses = [\"10.20.0.1\"]";
        let Some((v, t)) = self.section(doc, "ha", &HA_KEYS, example) else {
            return;
        };
        let Some(list) = Self::get(t, "virtual_addresses") else {
            self.problem(
                v.span().start,
                "[ha] needs virtual_addresses: the addresses keepalived moves to the active member",
            );
            return;
        };
        let DeValue::Array(items) = list.get_ref() else {
            self.problem(
                list.span().start,
                "virtual_addresses: expected a list of IP addresses",
            );
            return;
        };
        if items.is_empty() {
            self.problem(
                list.span().start,
                "virtual_addresses is empty: name the addresses keepalived moves to the active member",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for item in items {
            if let Some(addr) = self.value::<std::net::IpAddr>("virtual_addresses", item) {
                if !seen.insert(addr) {
                    self.problem(
                        item.span().start,
                        format!("virtual_addresses: {addr} is listed twice"),
                    );
                }
            }
        }
        // Quarantine replication: all three settings, or none.
        let sync = ["listen", "peer", "key_file"];
        let present: Vec<&str> = sync
            .iter()
            .copied()
            .filter(|k| Self::get(t, k).is_some())
            .collect();
        for key in ["listen", "peer"] {
            if let Some(v) = Self::get(t, key) {
                // A concrete address: on every address the channel would also listen on
                // the device ports, and the two members tell their flow stamps apart by
                // comparing theirs.
                let unspecified = self
                    .value::<SocketAddr>(key, v)
                    .is_some_and(|a| a.ip().is_unspecified());
                if unspecified {
                    self.problem(
                        v.span().start,
                        format!("{key}: an address of the dedicated link between the members, not every address"),
                    );
                }
            }
        }
        if let Some(v) = Self::get(t, "key_file") {
            self.value::<PathBuf>("key_file", v);
        }
        if !present.is_empty() && present.len() < sync.len() {
            let missing: Vec<&str> = sync
                .iter()
                .copied()
                .filter(|k| !present.contains(k))
                .collect();
            self.problem(
                v.span().start,
                format!(
                    "[ha] replicates quarantines with listen, peer and key_file together: {} missing",
                    missing.join(" and ")
                ),
            );
        }
    }

    /// `[syslog]`: an address and a facility lazaret can use, each error on its value.
    fn syslog(&mut self, doc: &toml::de::DeTable<'_>) {
        let example = "[syslog] address = \"udp://host:514\"";
        let Some((v, t)) = self.section(doc, "syslog", &SYSLOG_KEYS, example) else {
            return;
        };
        match Self::get(t, "address") {
            Some(a) => {
                if let Some(address) = self.value::<String>("address", a) {
                    if let Err(message) = crate::daemon::syslog::check_address(&address) {
                        self.problem(a.span().start, format!("address: {message}"));
                    }
                }
            }
            None => self.problem(v.span().start, "[syslog] needs an address"),
        }
        if let Some(f) = Self::get(t, "facility") {
            if let Some(name) = self.value::<String>("facility", f) {
                if let Err(message) = crate::daemon::syslog::facility(&name) {
                    self.problem(f.span().start, format!("facility: {message}"));
                }
            }
        }
    }

    fn interfaces(&mut self, doc: &toml::de::DeTable<'_>, dataplane: Option<Dataplane>) {
        use toml::de::DeValue;
        let none =
            "no interfaces configured: add at least one [[interfaces]] with a name and a side";
        let Some(list) = Self::get(doc, "interfaces") else {
            self.problem(0, none);
            return;
        };
        let DeValue::Array(items) = list.get_ref() else {
            self.problem(
                list.span().start,
                "interfaces: expected [[interfaces]] tables",
            );
            return;
        };
        if items.is_empty() {
            self.problem(list.span().start, none);
        }
        let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for item in items {
            let DeValue::Table(t) = item.get_ref() else {
                self.problem(
                    item.span().start,
                    "interfaces: expected a table with a name and a side",
                );
                continue;
            };
            self.keys(t, &INTERFACE_KEYS, "[[interfaces]]");
            let name = match Self::get(t, "name") {
                Some(v) => self.value::<String>("name", v).map(|n| (n, v.span().start)),
                None => {
                    self.problem(item.span().start, "[[interfaces]] needs a name");
                    None
                }
            };
            let shown = name.as_ref().map_or_else(String::new, |(n, _)| {
                format!("{:?}", crate::text::printable(n))
            });
            if let Some((n, at)) = &name {
                if n.is_empty() || n.len() > 15 || n.contains('/') {
                    self.problem(
                        *at,
                        format!("{shown} is not a valid interface name (1 to 15 bytes, no '/')"),
                    );
                } else if !seen.insert(n.clone()) {
                    self.problem(*at, format!("interface {shown} is configured twice"));
                }
            }
            let side = match Self::get(t, "side") {
                Some(v) => self.value::<Side>("side", v),
                None => {
                    self.problem(
                        item.span().start,
                        format!("interface {shown} needs a side (\"devices\" or \"upstream\")"),
                    );
                    None
                }
            };
            if let Some(v) = Self::get(t, "xdp_mode") {
                self.value::<AttachMode>("xdp_mode", v);
            }
            let vlan = Self::get(t, "vlan").and_then(|v| self.value::<Vlan>("vlan", v));
            if let Some(v) = Self::get(t, "bridge") {
                if let Some(bridge) = self.value::<String>("bridge", v) {
                    let at = v.span().start;
                    if bridge.is_empty() || bridge.len() > 15 || bridge.contains('/') {
                        self.problem(
                            at,
                            format!(
                                "{:?} is not a valid bridge name (1 to 15 bytes, no '/')",
                                crate::text::printable(&bridge)
                            ),
                        );
                    } else if side == Some(Side::Upstream) {
                        self.problem(at, format!("interface {shown} is a bridge port facing upstream: only device-side ports bind devices to a bridge"));
                    }
                }
            }
            if let Some(v) = Self::get(t, "outer_vlan") {
                if self.value::<Vlan>("outer_vlan", v).is_some() {
                    let at = v.span().start;
                    if vlan.is_some() {
                        self.problem(at, format!("interface {shown} has both `vlan` (untagged frames) and `outer_vlan` (two tags on every frame): a port is one or the other"));
                    }
                    if dataplane == Some(Dataplane::Nftables) {
                        self.problem(at, format!("interface {shown}: `outer_vlan` (QinQ) needs the XDP dataplane; nftables drops every double-tagged frame"));
                    }
                }
            }
        }
    }
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
        // Resolved once: every reload labels the gateway's metric with it.
        cfg.member = Some(cfg.member());
        // A key file, relative to the configuration's directory, read now: an error points
        // at its setting.
        let key = |file: &mut PathBuf, setting: &str| {
            if file.is_relative() {
                *file = base.join(&*file);
            }
            read_secret(file).map_err(|message| {
                let (line, col) = line_col(&text, value_offset(&text, setting));
                ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    col,
                    message: format!("{setting}: {message}"),
                    more: Vec::new(),
                }
            })
        };
        if let Some(w) = &mut cfg.webhook {
            if let Some(file) = &mut w.secret_file {
                w.secret = Some(key(file, "secret_file")?);
            }
            if let Some(file) = &mut w.ca_file {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
                let shown = file.display().to_string();
                let ca = std::fs::read(&*file)
                    .map_err(|e| format!("cannot read {shown}: {e}"))
                    .and_then(|pem| {
                        crate::daemon::webhook::ca_certificates(&pem)
                            .map(|_| pem)
                            .map_err(|e| format!("{shown} {e}"))
                    })
                    .map_err(|message| {
                        let (line, col) = line_col(&text, value_offset(&text, "ca_file"));
                        ConfigError::Invalid {
                            path: path.to_path_buf(),
                            line,
                            col,
                            message: format!("ca_file: {message}"),
                            more: Vec::new(),
                        }
                    })?;
                w.ca = Some(ca);
            }
        }
        if let Some(ha) = &mut cfg.ha {
            if let Some(file) = &mut ha.key_file {
                ha.key = Some(key(file, "key_file")?);
            }
        }
        if let Some(group) = &cfg.control_group {
            cfg.control_gid = Some(resolve_group(group).ok_or_else(|| {
                let at = value_offset(&text, "control_group");
                let (line, col) = line_col(&text, at);
                ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    col,
                    message: format!(
                        "control_group: no group {:?} on this host (create it, or remove control_group to admit root only)",
                        crate::text::printable(group)
                    ),
                    more: Vec::new(),
                }
            })?);
        }
        Ok(cfg)
    }

    /// Parses configuration text; `path` only names the source in errors. Every problem is
    /// reported, each at its token.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |mut problems: Vec<(usize, String)>| {
            problems.sort_by_key(|(at, _)| *at);
            let mut problems = problems.into_iter().map(|(at, message)| {
                let (line, col) = line_col(text, at);
                Problem { line, col, message }
            });
            let first = problems.next().unwrap_or(Problem {
                line: 1,
                col: 1,
                message: "invalid configuration".into(),
            });
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line: first.line,
                col: first.col,
                message: first.message,
                more: problems.collect(),
            }
        };
        let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            return Err(invalid(
                syntax
                    .iter()
                    .map(|e| (e.span().map_or(0, |s| s.start), e.message().to_string()))
                    .collect(),
            ));
        }
        let mut checker = Checker {
            text,
            problems: Vec::new(),
        };
        checker.check(doc.get_ref());
        if !checker.problems.is_empty() {
            return Err(invalid(checker.problems));
        }
        // Every value checked: the whole document deserializes (anything it still refuses
        // is reported the same way).
        toml::from_str(text).map_err(|e| {
            invalid(vec![(
                e.span().map_or(0, |s| s.start),
                e.message().to_string(),
            )])
        })
    }
}

/// The offset of the value of the first `key = …` line (for problems found after parsing).
fn value_offset(text: &str, key: &str) -> usize {
    let Some(at) = text.find(key) else {
        return 0;
    };
    text[at..]
        .find('=')
        .map(|eq| {
            let after = at + eq + 1;
            after + (text[after..].len() - text[after..].trim_start().len())
        })
        .unwrap_or(at)
}

impl Config {
    /// This host's name among its gateway's members: `member`, else the host name.
    pub fn member(&self) -> String {
        self.member.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default()
        })
    }
}

/// The webhook's signing key from `file`: refused when it cannot be read, is empty or
/// shorter than 16 bytes, or may be read by anyone but its owner (a key others can read
/// signs for them too).
fn read_secret(file: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = file.display();
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} may be read by other users (mode {:o}): chmod 600 it",
            meta.permissions().mode() & 0o777
        ));
    }
    let mut key = std::fs::read(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    while key.last().is_some_and(u8::is_ascii_whitespace) {
        key.pop();
    }
    if key.len() < 16 {
        return Err(format!(
            "{shown} holds {} bytes: a signing key needs at least 16 (e.g. `openssl rand -hex 32 > {shown}`)",
            key.len()
        ));
    }
    Ok(key)
}

/// A group name or numeric gid → gid, through the system's group database.
pub fn resolve_group(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
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
                assert!(message.contains("unknown key `xdp_mod`"), "{message}");
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
    fn vlan_and_bridge_are_read_and_a_bad_vlan_is_positioned() {
        let text = GOOD.replace(
            "name = \"icu0\"\nside = \"devices\"",
            "name = \"icu0-p1\"\nside = \"devices\"\nvlan = 20\nbridge = \"icu0\"",
        );
        let cfg = parse(&text).expect("valid");
        let c = cfg.interfaces[0].datapath_config(Some(7));
        assert_eq!((c.side, c.untagged_vlan, c.binding_ifindex), (0, 20, 7));
        // A bridge port's devices claim what the policy's interface of the bridge allows.
        assert_eq!(c.claim_scope, lazaret_abi::claim_scope(b"icu0"));
        let c = cfg.interfaces[1].datapath_config(None);
        assert_eq!((c.untagged_vlan, c.binding_ifindex), (0, 0));
        assert_eq!(c.claim_scope, lazaret_abi::CLAIM_POLICY as u16, "upstream");
        match parse(&text.replace("vlan = 20", "vlan = 4095")) {
            Err(ConfigError::Invalid {
                line, col, message, ..
            }) => {
                assert_eq!((line, col), (7, 8));
                assert!(message.contains("1 to 4094"), "{message}");
            }
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
    fn webhook_url_is_checked_with_its_position() {
        let ok = format!("{GOOD}[webhook]\nurl = \"http://10.10.9.9:8080/lazaret\"\n");
        let cfg = parse(&ok).expect("valid");
        assert_eq!(
            cfg.webhook.map(|w| w.url.into_inner()),
            Some("http://10.10.9.9:8080/lazaret".to_string())
        );
        for (bad, why) in [
            ("ftp://x/y", "https://"),
            ("http:///nohost", "host"),
            ("not a url", "https://"),
        ] {
            let text = format!("{GOOD}[webhook]\nurl = \"{bad}\"\n");
            match parse(&text) {
                Err(ConfigError::Invalid {
                    line, col, message, ..
                }) => {
                    assert_eq!((line, col), (12, 7), "{bad}");
                    assert!(message.contains(why), "{bad}: {message}");
                }
                other => panic!("{bad}: expected an error, got {other:?}"),
            }
        }
        let text = format!("{GOOD}[webhook]\nurl = \"http://x/\"\nretries = 3\n");
        assert!(matches!(
            parse(&text),
            Err(ConfigError::Invalid { line: 13, .. })
        ));
    }

    #[test]
    fn control_group_is_checked_with_its_position() {
        let text = GOOD.replace(
            "metrics_listen = \"127.0.0.1:9464\"",
            "control_group = \"bad group\"",
        );
        match parse(&text) {
            // On the value, not the key.
            Err(ConfigError::Invalid { line, col, .. }) => assert_eq!((line, col), (3, 17)),
            other => panic!("expected an error, got {other:?}"),
        }
        let ok = GOOD.replace(
            "metrics_listen = \"127.0.0.1:9464\"",
            "control_group = \"lazaret-ops\"",
        );
        let cfg = parse(&ok).expect("valid");
        assert_eq!(cfg.control_group.as_deref(), Some("lazaret-ops"));
        // Parsing alone never resolves the group: root only until `load` does.
        assert_eq!(cfg.control_gid, None);
    }

    #[test]
    fn gateway_and_member_are_names_checked_with_their_position() {
        let text = GOOD.replace(
            "metrics_listen = \"127.0.0.1:9464\"",
            "gateway = \"ward-a\"\nmember = \"gw a1\"",
        );
        match parse(&text) {
            Err(ConfigError::Invalid {
                line, col, message, ..
            }) => {
                assert_eq!((line, col), (4, 10), "{message}");
                assert!(message.starts_with("member:"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let ok = GOOD.replace(
            "metrics_listen = \"127.0.0.1:9464\"",
            "gateway = \"ward-a\"\nmember = \"gw-a1\"",
        );
        let cfg = parse(&ok).expect("valid");
        assert_eq!(cfg.gateway.as_deref(), Some("ward-a"));
        assert_eq!(cfg.member(), "gw-a1");
        // Unset: the host's name.
        assert!(!parse(GOOD).expect("valid").member().is_empty());
    }

    #[test]
    fn syslog_address_and_facility_are_checked_on_their_values() {
        let text =
            format!("{GOOD}\n[syslog]\naddress = \"udp://10.0.0.5\"\nfacility = \"local9\"\n");
        match parse(&text) {
            Err(ConfigError::Invalid {
                line,
                col,
                message,
                more,
                ..
            }) => {
                assert_eq!((line, col), (13, 11), "{message}");
                assert!(message.starts_with("address:"), "{message}");
                assert_eq!(more.len(), 1, "{more:?}");
                assert!(more[0].message.starts_with("facility:"), "{more:?}");
            }
            other => panic!("expected errors, got {other:?}"),
        }
        let ok = format!("{GOOD}\n[syslog]\naddress = \"tcp://siem.mgmt:514\"\n");
        let cfg = parse(&ok).expect("valid");
        let s = cfg.syslog.expect("syslog");
        assert_eq!(
            (s.address.as_str(), s.facility.as_str()),
            ("tcp://siem.mgmt:514", "local4")
        );
    }

    #[test]
    fn ha_virtual_addresses_are_checked_each_on_its_value() {
        let text = format!(
            "{GOOD}\n[ha]\nvirtual_addresses = [\"10.20.0.1\", \"10.20.0.300\", \"10.20.0.1\"]\nrole = \"master\"\n"
        );
        match parse(&text) {
            Err(ConfigError::Invalid {
                line,
                col,
                message,
                more,
                ..
            }) => {
                let mut all = vec![((line, col), message)];
                all.extend(more.into_iter().map(|p| ((p.line, p.col), p.message)));
                all.sort();
                let messages: Vec<&str> = all.iter().map(|(_, m)| m.as_str()).collect();
                assert_eq!(all.len(), 3, "{all:?}");
                assert_eq!(all[0].0, (13, 35), "{all:?}");
                assert!(messages[0].starts_with("virtual_addresses:"), "{all:?}");
                assert_eq!(all[1].0, (13, 50), "{all:?}");
                assert!(messages[1].contains("listed twice"), "{all:?}");
                assert_eq!(all[2].0, (14, 1), "{all:?}");
                assert!(messages[2].contains("unknown key `role`"), "{all:?}");
            }
            other => panic!("expected errors, got {other:?}"),
        }
        for bad in ["[ha]\n", "[ha]\nvirtual_addresses = []\n", "ha = 1\n"] {
            let text = if bad.starts_with('[') {
                format!("{GOOD}\n{bad}")
            } else {
                format!("{bad}{GOOD}")
            };
            assert!(parse(&text).is_err(), "{bad:?} accepted");
        }
        let ok = format!("{GOOD}\n[ha]\nvirtual_addresses = [\"10.20.0.1\", \"fd00::1\"]\n");
        let ha = parse(&ok).expect("valid").ha.expect("ha");
        assert_eq!(ha.virtual_addresses.len(), 2);
        // Replication takes its three settings together, each a valid value.
        let partial = format!("{ok}listen = \"192.168.255.1:9465\"\n");
        match parse(&partial) {
            Err(ConfigError::Invalid { line, message, .. }) => {
                assert_eq!(line, 12, "on the [ha] table: {message}");
                assert!(message.contains("peer and key_file missing"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let bad = format!("{partial}peer = \"192.168.255.2\"\nkey_file = \"ha.key\"\n");
        match parse(&bad) {
            Err(ConfigError::Invalid { line, message, .. }) => {
                assert_eq!(line, 15, "{message}");
                assert!(message.starts_with("peer:"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let full = format!("{partial}peer = \"192.168.255.2:9465\"\nkey_file = \"ha.key\"\n");
        let wildcard = full.replace("192.168.255.1:9465", "0.0.0.0:9465");
        match parse(&wildcard) {
            Err(ConfigError::Invalid { message, .. }) => {
                assert!(message.contains("dedicated link"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let ha = parse(&full).expect("valid").ha.expect("ha");
        assert_eq!(
            ha.peer,
            Some("192.168.255.2:9465".parse().expect("address"))
        );
    }

    #[test]
    fn a_webhook_signing_key_is_read_from_a_private_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("lazaret.toml");
        let key = dir.path().join("webhook.key");
        std::fs::write(
            &path,
            format!("{GOOD}\n[webhook]\nurl = \"http://10.0.0.9/hook\"\nsecret_file = \"webhook.key\"\n"),
        )
        .expect("write");
        let error = |what: &str| match Config::load(&path) {
            Err(ConfigError::Invalid { line, message, .. }) => {
                assert_eq!(line, 14, "{what}: on the secret_file line: {message}");
                message
            }
            other => panic!("{what}: expected an error, got {other:?}"),
        };
        assert!(error("missing").contains("cannot read"));
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(error("readable by others").contains("chmod 600"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let cfg = Config::load(&path).expect("a private key file");
        let w = cfg.webhook.expect("webhook");
        assert_eq!(
            w.secret.as_deref(),
            Some(&b"0123456789abcdef0123456789abcdef"[..])
        );
        std::fs::write(&key, "short\n").expect("key");
        assert!(error("short").contains("at least 16"));
    }

    #[test]
    fn a_webhook_ca_file_is_read_and_must_hold_certificates() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("lazaret.toml");
        let ca = dir.path().join("ca.pem");
        let write = |url: &str| {
            std::fs::write(
                &path,
                format!("{GOOD}\n[webhook]\nurl = \"{url}\"\nca_file = \"ca.pem\"\n"),
            )
            .expect("write");
        };
        let error = || match Config::load(&path) {
            Err(ConfigError::Invalid {
                line, col, message, ..
            }) => (line, col, message),
            other => panic!("expected an error, got {other:?}"),
        };
        write("https://10.0.0.9/hook");
        let (line, col, message) = error();
        assert_eq!((line, col), (14, 11), "{message}");
        assert!(message.contains("cannot read"), "{message}");
        std::fs::write(&ca, "not a certificate\n").expect("ca");
        assert!(error().2.contains("no PEM certificate"));
        let pem = rcgen::generate_simple_self_signed(vec!["10.0.0.9".to_string()])
            .expect("cert")
            .cert
            .pem();
        std::fs::write(&ca, &pem).expect("ca");
        let w = Config::load(&path)
            .expect("valid")
            .webhook
            .expect("webhook");
        assert_eq!(w.ca.as_deref(), Some(pem.as_bytes()));
        // Only an https:// webhook checks a certificate.
        write("http://10.0.0.9/hook");
        assert!(error().2.contains("only an https://"));
    }

    #[test]
    fn a_group_missing_on_the_host_is_a_positioned_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("lazaret.toml");
        let text = GOOD.replace(
            "metrics_listen = \"127.0.0.1:9464\"",
            "control_group = \"no-such-group-lzt\"",
        );
        std::fs::write(&path, text).expect("write");
        match Config::load(&path) {
            Err(ConfigError::Invalid {
                line, col, message, ..
            }) => {
                assert_eq!((line, col), (3, 17));
                assert!(message.contains("no group"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert_eq!(resolve_group("root"), Some(0));
        assert_eq!(resolve_group("4242"), Some(4242));
    }

    /// Every problem at once, each on its own token, in file order, with no doubled
    /// prefix.
    #[test]
    fn every_problem_is_reported_on_its_token() {
        let text = r#"policy_dir = "policies"
metrics_listen = "not an address"
colour = "blue"
[[interfaces]]
name = "icu0"
side = "dev"
[[interfaces]]
name = "icu0"
side = "upstream"
bridge = "br0"
vlan = 5000
[webhook]
url = "ftp://x/y"
"#;
        let err = parse(text).expect_err("invalid");
        let at: Vec<(usize, usize)> = err.problems().iter().map(|p| (p.line, p.col)).collect();
        assert_eq!(
            at,
            vec![(2, 18), (3, 1), (6, 8), (8, 8), (10, 10), (11, 8), (13, 7)],
            "{err}"
        );
        let shown = err.to_string();
        assert!(!shown.contains("error: "), "{shown}");
        assert!(shown.ends_with("7 problems in lazaret.toml"), "{shown}");
        // A syntax error is positioned too.
        let err = parse("policy_dir = \"p\n[[interfaces]]\n").expect_err("syntax");
        assert_eq!(err.problems()[0].line, 1, "{err}");
    }

    #[test]
    fn an_unreadable_file_names_its_cause_once() {
        let err = Config::load(Path::new("/nonexistent/lazaret.toml")).expect_err("missing");
        let shown = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(shown.matches("No such file").count(), 1, "{shown}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
