//! MUD (RFC 8520) in and out: a manufacturer's description of what a device model does,
//! turned into a lazaret workflow for a class (`lazaret import mud`), and a class's
//! workflows written as a MUD file (`lazaret export mud`).
//!
//! MUD speaks of the network in the device's terms (DNS names, "my controller", "devices of
//! the same manufacturer"); a lazaret policy speaks of this site's roles, classes and
//! prefixes. A **binding** file (TOML) says what each means here, as Cisco's MUD manager
//! and NAMIB configure it:
//!
//! ```toml
//! class = "infusion-pump"           # the class the MUD file describes
//! mud_url = "https://…/plum360"     # for export; import takes the file's own
//! essential = true                  # the imported workflow's, as the site decides
//!
//! [names]                           # ietf-acldns names
//! "pumps.vendor.example" = ["role:pump-server"]
//!
//! [controllers]                     # `controller` URIs, well-known URNs included
//! "urn:ietf:params:mud:dns" = ["role:dns"]
//! "urn:ietf:params:mud:ntp" = ["role:ntp"]
//!
//! [abstractions]                    # the abstractions without a value
//! my-controller = ["role:pump-server"]
//! local-networks = ["10.30.0.0/16"]
//! same-manufacturer = ["class:infusion-pump"]
//!
//! [manufacturers]                   # `manufacturer` domains
//! "vendor.example" = ["role:pump-server"]
//!
//! [models]                          # `model` URIs
//! "https://…/pump-server" = ["role:pump-server"]
//! ```
//!
//! Each value is a list of peers as a rule's `peer` takes them (`role:X`, `class:X`,
//! `device:ID`, a prefix, `any`). What the binding does not resolve, and every part of a MUD
//! file lazaret cannot enforce exactly (an Ethernet match, an ICMP type, a source port on
//! the initiator's side, a `drop` ACE), is listed and left out: an import never allows
//! more than the MUD file does. A `drop` ACE before an `accept` is refused outright, since
//! lazaret's allow rules could not keep what it excludes.

pub mod export;
pub mod import;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Why a MUD import or export was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum MudError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Binding { path: String, message: String },
    /// Where in the MUD file (a JSON pointer), and what is wrong there.
    #[error("{path}: at {at}: {message}")]
    Mud {
        path: String,
        at: String,
        message: String,
    },
    #[error("the policy in {dir} does not load:\n{errors}")]
    PolicyBefore { dir: String, errors: String },
    #[error("the policy the import would leave does not load; nothing was written:\n{errors}")]
    PolicyAfter { errors: String },
    #[error("{0}")]
    Policy(String),
    #[error("writing {path}: {message}")]
    Write { path: String, message: String },
}

/// A binding file, read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The class the MUD file describes.
    pub class: String,
    /// The MUD URL an export names (import takes the file's own).
    pub mud_url: Option<String>,
    /// The imported workflow is essential (kept under `restrict` quarantine): what the
    /// device's clinical use needs, which a MUD file cannot say.
    #[serde(default)]
    pub essential: bool,
    /// The imported workflow's mode (`enforce`, `audit`, `learn`); the class's by default.
    pub mode: Option<String>,
    #[serde(default)]
    pub names: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub controllers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub abstractions: Abstractions,
    #[serde(default)]
    pub manufacturers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub models: BTreeMap<String, Vec<String>>,
}

/// The MUD abstractions that carry no value of their own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Abstractions {
    pub my_controller: Option<Vec<String>>,
    pub local_networks: Option<Vec<String>>,
    pub same_manufacturer: Option<Vec<String>>,
}

impl Binding {
    pub fn load(path: &Path) -> Result<Binding, MudError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MudError::Read {
            path: name.clone(),
            message: e.to_string(),
        })?;
        Binding::parse(&text, &name)
    }

    pub fn parse(text: &str, name: &str) -> Result<Binding, MudError> {
        let b: Binding = toml::from_str(text).map_err(|e| MudError::Binding {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !id_ok(&b.class) {
            return Err(MudError::Binding {
                path: name.to_string(),
                message: format!(
                    "class = {:?}: a class name (letters, digits, `-`, `_`, `.`)",
                    b.class
                ),
            });
        }
        let mut b = b;
        let check = |peers: &mut Vec<String>, what: &str| -> Result<(), MudError> {
            for p in peers.iter_mut() {
                *p = peer(p).ok_or_else(|| MudError::Binding {
                    path: name.to_string(),
                    message: format!(
                        "{what}: {p:?} is not a peer (role:NAME, class:NAME, device:ID, an \
address or prefix, or any)"
                    ),
                })?;
            }
            Ok(())
        };
        for (k, v) in &mut b.names {
            check(v, &format!("[names] {k:?}"))?;
        }
        for (k, v) in &mut b.controllers {
            check(v, &format!("[controllers] {k:?}"))?;
        }
        for (k, v) in &mut b.manufacturers {
            check(v, &format!("[manufacturers] {k:?}"))?;
        }
        for (k, v) in &mut b.models {
            check(v, &format!("[models] {k:?}"))?;
        }
        let a = &mut b.abstractions;
        for (v, what) in [
            (&mut a.my_controller, "my-controller"),
            (&mut a.local_networks, "local-networks"),
            (&mut a.same_manufacturer, "same-manufacturer"),
        ] {
            if let Some(v) = v {
                check(v, &format!("[abstractions] {what}"))?;
            }
        }
        Ok(b)
    }

    /// The lazaret workflow an import writes for the class.
    pub fn workflow(&self) -> String {
        format!("mud-{}", self.class)
    }
}

/// A binding's peer in the one spelling `import` and `export` compare: trimmed, an address
/// as its host prefix. `None`: not a peer.
fn peer(p: &str) -> Option<String> {
    let p = p.trim();
    let named = |prefix: &str| {
        p.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && !n.contains(char::is_whitespace))
    };
    if p == "any" || named("role:") || named("class:") || named("device:") {
        return Some(p.to_string());
    }
    if let Ok(net) = p.parse::<ipnet::IpNet>() {
        return Some(net.to_string());
    }
    p.parse::<std::net::IpAddr>()
        .ok()
        .map(|a| ipnet::IpNet::from(a).to_string())
}

/// The largest MUD file read (published ones are a few kilobytes).
const MUD_MAX_BYTES: u64 = 1 << 20;
/// The most ACLs, and ACEs in one ACL, a MUD file may have.
const MAX_ACLS: usize = 64;
const MAX_ACES: usize = 1024;

/// Reads a file of at most `max` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, MudError> {
    super::read_bounded(path, max).map_err(|message| MudError::Read {
        path: path.display().to_string(),
        message,
    })
}

#[cfg(test)]
mod tests;
