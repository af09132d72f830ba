//! The closed sets of label values: every label lazaret exports is bounded by the datapath
//! ABI, the policy's classes, the configured interfaces or one of the lists here.

use lazaret_abi::{SIDE_DEVICES, SIDE_UPSTREAM};

/// Stands in for a value outside its closed set, so a caller's mistake cannot grow a label
/// without bound.
pub(crate) const OTHER: &str = "other";

/// `verdict`: what the datapath did with the packet (`Reason::passes`).
pub(crate) const PASS: &str = "pass";
pub(crate) const DROP: &str = "drop";

/// `side`, indexed by `SIDE_*`.
pub(crate) const SIDES: [(u8, &str); 2] = [(SIDE_DEVICES, "devices"), (SIDE_UPSTREAM, "upstream")];

/// `lazaret_events_total{outcome}`. Disjoint: their sum is every event the datapath wanted to
/// report. Everything but `delivered` is a lost event.
pub(crate) const EV_DELIVERED: &str = "delivered";
pub(crate) const EV_RATE_LIMITED: &str = "rate_limited";
pub(crate) const EV_RING_FULL: &str = "ring_full";
pub(crate) const EV_UNDECODABLE: &str = "undecodable";
pub(crate) const EVENT_OUTCOMES: [&str; 4] =
    [EV_DELIVERED, EV_RATE_LIMITED, EV_RING_FULL, EV_UNDECODABLE];

/// `lazaret_policy_reloads_total{result}`.
pub(crate) const SUCCESS: &str = "success";
pub(crate) const FAILURE: &str = "failure";

/// Why a reload failed: `lazaret_policy_reload_failures_total{reason}`. A closed set, so the
/// label list is built from it and a new reason cannot be exported as `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadFailure {
    /// The policy does not compile.
    InvalidPolicy,
    /// Policy files unreadable.
    Io,
    /// The XDP maps refused the generation.
    Datapath,
    /// nft refused the generation's tables.
    Nftables,
}

impl ReloadFailure {
    pub const ALL: [ReloadFailure; 4] = [
        ReloadFailure::InvalidPolicy,
        ReloadFailure::Io,
        ReloadFailure::Datapath,
        ReloadFailure::Nftables,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReloadFailure::InvalidPolicy => "invalid_policy",
            ReloadFailure::Io => "io",
            ReloadFailure::Datapath => "datapath",
            ReloadFailure::Nftables => "nftables",
        }
    }
}

/// `lazaret_interface_attached{mode}`: the enforcers' labels.
pub(crate) const ATTACH_MODES: [&str; 3] = {
    let all = crate::dataplane::Enforcer::ALL;
    [all[0].label(), all[1].label(), all[2].label()]
};

/// `action` of the quarantine families.
pub(crate) const QUARANTINE_ACTIONS: [&str; 3] = ["alert", "restrict", "isolate"];

/// `lazaret_deviations_total{kind}`.
pub(crate) const DEVIATION_KINDS: [&str; 5] =
    ["deny", "spoof", "rogue_dhcp", "rogue_ra", "unknown"];

/// `lazaret_webhook_deliveries_total{result}`: disjoint, one per quarantine or release
/// event handed to the webhook.
pub(crate) const WEBHOOK_RESULTS: [&str; 3] = ["delivered", "failed", "dropped"];

/// `lazaret_syslog_messages_total{result}`.
pub(crate) const SYSLOG_RESULTS: [&str; 3] = ["sent", "failed", "dropped"];

/// `lazaret_devices{mode}`.
pub(crate) const DEVICE_MODES: [&str; 3] = ["enforce", "audit", "learn"];

/// `verdict` of a packet with this reason.
pub(crate) const fn verdict(passes: bool) -> &'static str {
    if passes {
        PASS
    } else {
        DROP
    }
}

/// `value` if it belongs to `allowed`, else [`OTHER`] (and a warning: the caller has a bug).
pub(crate) fn bounded<'a>(label: &str, value: &'a str, allowed: &[&str]) -> &'a str {
    if allowed.contains(&value) {
        value
    } else {
        tracing::warn!(
            label,
            value,
            "metric label value outside its set, recorded as \"other\""
        );
        OTHER
    }
}
