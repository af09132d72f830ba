//! The control API's replies as types, shared by the daemon (which builds them) and the CLI
//! (which reads them back): a field renamed or retyped on one side does not compile on the
//! other, instead of printing `?` in an operator's terminal. Their JSON is the `data` of a
//! [`super::control::Reply`], and what the CLI prints with `--output json`.
//!
//! Which reply answers which [`super::control::Request`]: `Status` → [`Status`], `Devices`
//! → `Vec<`[`Device`]`>`, `UnknownDevices` → `Vec<`[`super::unknown::UnknownDevice`]`>`,
//! `Flows` → `Vec<`[`Flow`]`>`, `QuarantineList` → a map of device id to
//! [`super::quarantine::Entry`], `QuarantineAdd` → [`Quarantined`], `QuarantineRelease` →
//! [`Released`], `Pins` → `Vec<`[`Pin`]`>`, `PinRelease` → [`Released`], `Detach` →
//! [`Detached`].

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::quarantine::Action;
use crate::dataplane::IfaceMode;
use crate::policy::{model::Mode, twin::FlowTable};

/// `lazaret status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The enforcing generation (0: none yet).
    pub generation: u64,
    /// The policy repository's commit of that generation, if it is a git checkout.
    pub commit: Option<String>,
    pub uptime_seconds: u64,
    pub policy_dir: PathBuf,
    /// Where the enforcing policy came from.
    pub policy: PolicySource,
    /// Each configured interface: what enforces there now.
    pub interfaces: BTreeMap<String, InterfaceMode>,
    /// Devices in the enforcing policy.
    pub devices: usize,
    pub quarantined: usize,
    /// Interfaces held closed (gone, or no policy at all).
    pub held: Vec<String>,
    /// The last reload's error, while the previous generation enforces.
    pub last_reload_error: Option<String>,
    /// Kinds of state the state directory failed to keep, with the error.
    pub state_errors: BTreeMap<String, String>,
    /// The XDP maps' fill, as of the last read of the counters (every few seconds).
    pub maps: Vec<MapUsage>,
    /// The role in an active/standby pair; absent without `[ha]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
}

/// `status`' view of an active/standby pair member (see `docs/ha.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    pub role: super::ha::Role,
    /// `[ha] virtual_addresses`, and which of them this host holds.
    pub virtual_addresses: Vec<std::net::IpAddr>,
    pub held: usize,
}

/// Where the enforcing policy came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// The policy directory, as it is now or at its last valid state.
    Repository,
    /// The last-known-good copy in the state directory: the repository was refused at start.
    LastKnownGood,
    /// The generation an earlier run left pinned: the repository was refused at start and
    /// there is no last-known-good.
    Pinned,
    /// Nothing: device-side interfaces are held closed until the repository compiles.
    None,
}

/// What enforces on an interface, as `status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceMode {
    /// XDP in the driver.
    Native,
    /// XDP in generic (skb) mode.
    Skb,
    Nftables,
    /// Its dataplane is not on it (gone, not present yet, not restorable): held closed by
    /// name until it is.
    Held,
    /// Nothing enforces and nothing holds it closed: detached on request.
    Detached,
}

impl From<IfaceMode> for InterfaceMode {
    fn from(m: IfaceMode) -> Self {
        use crate::dataplane::Enforcer;
        match m {
            IfaceMode::Enforcing(Enforcer::XdpNative) => InterfaceMode::Native,
            IfaceMode::Enforcing(Enforcer::XdpSkb) => InterfaceMode::Skb,
            IfaceMode::Enforcing(Enforcer::Nftables) => InterfaceMode::Nftables,
            IfaceMode::Held(_) => InterfaceMode::Held,
            IfaceMode::Detached(_) => InterfaceMode::Detached,
        }
    }
}

/// One XDP map's fill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapUsage {
    pub map: String,
    pub entries: u64,
    pub capacity: u64,
    /// entries / capacity.
    pub pressure: f64,
}

/// One device of the enforcing policy, with its XDP counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub class: Option<String>,
    pub mode: Mode,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    pub quarantine: Option<Action>,
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
    /// CLOCK_MONOTONIC nanoseconds of the device's last packet (0: none seen).
    pub last_seen_ns: u64,
}

/// One flow of the XDP flow tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// IP protocol number.
    pub proto: u8,
    /// The flow's two ends (`address:port`, `[v6]:port`), in the key's normalized order.
    pub a: String,
    pub b: String,
    /// Which end opened it.
    pub initiator: End,
    pub state: FlowState,
    pub table: FlowTable,
    /// The rule that admitted it.
    pub rule: u32,
}

/// An end of a [`Flow`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    A,
    B,
}

/// A flow's tracking state (`lazaret_abi::FLOW_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    New,
    Responded,
    Established,
    Closing,
}

impl FlowState {
    pub fn name(self) -> &'static str {
        match self {
            FlowState::New => "new",
            FlowState::Responded => "responded",
            FlowState::Established => "established",
            FlowState::Closing => "closing",
        }
    }

    pub fn from_abi(state: u8) -> FlowState {
        match state {
            lazaret_abi::FLOW_ESTABLISHED => FlowState::Established,
            lazaret_abi::FLOW_CLOSING => FlowState::Closing,
            lazaret_abi::FLOW_RESPONDED => FlowState::Responded,
            _ => FlowState::New,
        }
    }
}

/// A bridge-port pin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The policy's device with that MAC, if any.
    pub device: Option<String>,
    pub mac: String,
    /// The bridge port it is pinned to.
    pub port: String,
}

/// A quarantine applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub device: String,
    pub action: Action,
}

/// A quarantine or a port pin released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub device: String,
    pub released: bool,
    /// `PinRelease`: whether the device was pinned, and how many addresses it owned by
    /// first use (released with the pin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<usize>,
}

/// `lazaret detach --force`: the interfaces no longer enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub detached: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON the CLI, the tests and operators' scripts read: names and spellings fixed.
    #[test]
    fn replies_keep_their_json() {
        let status = Status {
            generation: 3,
            commit: None,
            uptime_seconds: 9,
            policy_dir: "/etc/lazaret/policies".into(),
            policy: PolicySource::LastKnownGood,
            interfaces: [("eth1".to_string(), InterfaceMode::Native)].into(),
            devices: 2,
            quarantined: 1,
            held: vec![],
            last_reload_error: None,
            state_errors: BTreeMap::new(),
            maps: vec![],
            ha: Some(HaStatus {
                role: super::super::ha::Role::Standby,
                virtual_addresses: vec!["10.20.0.1".parse().expect("address")],
                held: 0,
            }),
        };
        let v = serde_json::to_value(&status).expect("serializes");
        assert_eq!(v["policy"], "last_known_good");
        assert_eq!(v["ha"]["role"], "standby");
        assert_eq!(v["ha"]["virtual_addresses"][0], "10.20.0.1");
        assert_eq!(v["interfaces"]["eth1"], "native");
        assert!(v["commit"].is_null());
        let back: Status = serde_json::from_value(v).expect("reads back");
        assert_eq!(back, status);

        let flow = Flow {
            proto: 6,
            a: "10.0.0.1:1".into(),
            b: "10.0.0.2:2575".into(),
            initiator: End::A,
            state: FlowState::from_abi(lazaret_abi::FLOW_ESTABLISHED),
            table: FlowTable::Established,
            rule: 7,
        };
        let v = serde_json::to_value(&flow).expect("serializes");
        assert_eq!(
            (
                v["initiator"].as_str(),
                v["state"].as_str(),
                v["table"].as_str()
            ),
            (Some("a"), Some("established"), Some("established"))
        );
        let detached: InterfaceMode = IfaceMode::Enforcing(crate::dataplane::Enforcer::XdpSkb)
            .detached()
            .into();
        assert_eq!(serde_json::to_value(detached).expect("json"), "detached");
        let held: InterfaceMode = IfaceMode::Enforcing(crate::dataplane::Enforcer::Nftables)
            .held()
            .into();
        assert_eq!(serde_json::to_value(held).expect("json"), "held");
    }
}
