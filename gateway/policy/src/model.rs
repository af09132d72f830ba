//! Stage two of parsing: the validated policy model. Every value here is checked (names
//! resolve, prefixes are canonical, ports are in range); the compiler trusts it. Pure.

use super::source::{Sources, Span};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A parsed, validated policy: what `lazaret check` accepts.
#[derive(Clone, Debug)]
pub struct Policy {
    pub sources: Arc<Sources>,
    pub site: Site,
    pub roles: BTreeMap<String, Role>,
    pub classes: BTreeMap<String, Class>,
    pub workflows: BTreeMap<String, Workflow>,
    /// Sorted by id.
    pub devices: Vec<Device>,
    /// Vendor service windows, by name (see [`crate::windows`]).
    pub exceptions: BTreeMap<String, Exception>,
    /// The advisories of its `advisories/` directory (see [`crate::advisories`]).
    pub advisories: crate::advisories::Catalog,
    /// Warnings found while validating (the policy is usable).
    pub warnings: Vec<super::diag::Diagnostic>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Devices,
    Upstream,
}

#[derive(Clone, Debug, Serialize)]
pub struct Interface {
    pub name: String,
    pub side: Side,
    pub networks: Vec<IpNet>,
    #[serde(skip)]
    pub span: Span,
}

/// Traffic modes of devices, classes and workflows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
    Learn,
}

impl Mode {
    pub fn abi(self) -> u8 {
        match self {
            Mode::Enforce => lazaret_abi::MODE_ENFORCE,
            Mode::Audit => lazaret_abi::MODE_AUDIT,
            Mode::Learn => lazaret_abi::MODE_LEARN,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Learn => "learn",
        }
    }
}

/// What happens to a device that keeps hitting denies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineAction {
    /// Report only; traffic is untouched.
    Alert,
    /// Only the essentials and `essential` workflows.
    Restrict,
    /// Only the site quarantine profile.
    Isolate,
}

impl QuarantineAction {
    pub fn name(self) -> &'static str {
        match self {
            QuarantineAction::Alert => "alert",
            QuarantineAction::Restrict => "restrict",
            QuarantineAction::Isolate => "isolate",
        }
    }
}

/// Resolved quarantine settings of a device (device, then class, then site defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct QuarantineSettings {
    /// Denies that trigger the action ...
    pub after: u32,
    /// ... within this many seconds.
    pub within_s: u64,
    pub action: QuarantineAction,
    /// How long the action lasts, in seconds.
    pub ttl_s: u64,
}

/// Quarantine settings as written on a class or device (each field optional).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuarantinePartial {
    pub after: Option<u32>,
    pub within_s: Option<u64>,
    pub action: Option<(QuarantineAction, Span)>,
    pub ttl_s: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Site {
    pub name: String,
    pub span: Span,
    pub unknown_audit: bool,
    pub l2_control: bool,
    pub interfaces: BTreeMap<String, Interface>,
    pub ports: BTreeMap<String, u16>,
    pub essentials: Essentials,
    /// What an isolated device may still reach, besides the essentials.
    pub quarantine_allow: Vec<Rule>,
    /// Defaults for devices whose class and entry say nothing.
    pub quarantine_defaults: QuarantineSettings,
    pub event_rate: u32,
    pub event_burst: u32,
    /// The gateways that enforce this policy, by name (`[site.gateways.NAME]`); empty: one
    /// gateway, unnamed, serving every interface.
    pub gateways: BTreeMap<String, Gateway>,
    /// The longest service window (`[exceptions.*]`) the site accepts, in seconds.
    pub exception_max_s: u64,
    /// `[site.risk]`: devices at or above this band are enforced (a device in `learn` or
    /// `audit` mode is switched to `enforce`) ...
    pub risk_enforce_from: Option<crate::risk::Band>,
    /// ... and have their quarantine threshold (`after`) halved.
    pub risk_tighten_from: Option<crate::risk::Band>,
}

/// A gateway of a fleet enforcing one policy repository: the interfaces it serves (every
/// devices-side interface is served by exactly one gateway, so every device is enforced
/// by exactly one), and the hosts that run it (two for an active/standby pair).
#[derive(Clone, Debug, Serialize)]
pub struct Gateway {
    pub name: String,
    pub interfaces: BTreeSet<String>,
    pub members: Vec<String>,
    #[serde(skip)]
    pub span: Span,
}

impl Site {
    /// The gateway that enforces the devices behind `interface`, if gateways are named.
    pub fn gateway_of(&self, interface: &str) -> Option<&Gateway> {
        self.gateways
            .values()
            .find(|g| g.interfaces.contains(interface))
    }
}

/// The flows every device gets; `None` means turned off.
#[derive(Clone, Debug)]
pub struct Essentials {
    pub dhcp: Option<Vec<IpNet>>,
    pub dns: Option<Vec<IpNet>>,
    pub ntp: Option<Vec<IpNet>>,
    pub neighbor: bool,
}

#[derive(Clone, Debug)]
pub struct Role {
    pub name: String,
    pub description: String,
    pub addresses: Vec<IpNet>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Class {
    pub name: String,
    pub description: String,
    pub workflows: Vec<String>,
    pub mode: Option<Mode>,
    pub quarantine: QuarantinePartial,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Workflow {
    pub name: String,
    pub description: String,
    pub mode: Mode,
    /// Kept while a device is quarantined with `restrict`.
    pub essential: bool,
    pub rules: Vec<Rule>,
    pub span: Span,
}

/// The managed end of a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndSel {
    Class(String),
    Device(String),
}

/// The other end of a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerSel {
    Role(String),
    Class(String),
    Device(String),
    Prefix(IpNet),
    Any,
}

impl fmt::Display for PeerSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerSel::Role(n) => write!(f, "role:{n}"),
            PeerSel::Class(n) => write!(f, "class:{n}"),
            PeerSel::Device(n) => write!(f, "device:{n}"),
            PeerSel::Prefix(p) => write!(f, "{p}"),
            PeerSel::Any => f.write_str("any"),
        }
    }
}

impl fmt::Display for EndSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndSel::Class(n) => write!(f, "class:{n}"),
            EndSel::Device(n) => write!(f, "device:{n}"),
        }
    }
}

/// A rule's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Number(u8),
}

impl Proto {
    /// Canonical form: 6/17/1/58 by name.
    pub fn from_number(n: u8) -> Proto {
        match n {
            lazaret_abi::PROTO_TCP => Proto::Tcp,
            lazaret_abi::PROTO_UDP => Proto::Udp,
            lazaret_abi::PROTO_ICMP => Proto::Icmp,
            lazaret_abi::PROTO_ICMPV6 => Proto::Icmpv6,
            n => Proto::Number(n),
        }
    }

    /// The IP protocol number, or `None` for any.
    pub fn number(self) -> Option<u8> {
        match self {
            Proto::Any => None,
            Proto::Tcp => Some(lazaret_abi::PROTO_TCP),
            Proto::Udp => Some(lazaret_abi::PROTO_UDP),
            Proto::Icmp => Some(lazaret_abi::PROTO_ICMP),
            Proto::Icmpv6 => Some(lazaret_abi::PROTO_ICMPV6),
            Proto::Number(n) => Some(n),
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }

    /// Whether packets of `proto` match.
    pub fn matches(self, proto: u8) -> bool {
        self.number().is_none_or(|n| n == proto)
    }

    /// The only family this protocol exists in, if it is family-specific.
    pub fn family(self) -> Option<Family> {
        match self {
            Proto::Icmp => Some(Family::V4),
            Proto::Icmpv6 => Some(Family::V6),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Any => f.write_str("any"),
            Proto::Tcp => f.write_str("tcp"),
            Proto::Udp => f.write_str("udp"),
            Proto::Icmp => f.write_str("icmp"),
            Proto::Icmpv6 => f.write_str("icmpv6"),
            Proto::Number(n) => write!(f, "proto {n}"),
        }
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    pub fn covers(self, other: PortRange) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Who opens the flow a rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    Device,
    Peer,
}

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub span: Span,
    /// 1-based position in its workflow (or in the quarantine profile).
    pub index: usize,
    /// `None`: every device that takes part in the workflow.
    pub ends: Option<Vec<EndSel>>,
    pub peers: Vec<PeerSel>,
    pub proto: Proto,
    /// `None`: all ports (and always `None` for protocols without ports).
    pub ports: Option<Vec<PortRange>>,
    pub initiator: Initiator,
    pub description: String,
}

/// IP families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Mac {
    type Err = ();
    /// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, either case.
    fn from_str(text: &str) -> Result<Mac, ()> {
        let sep = if text.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = text.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or(())?;
            if part.len() != 2 {
                return Err(());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() {
            return Err(());
        }
        Ok(Mac(out))
    }
}

/// A calendar date (proleptic Gregorian), for patch ages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    pub fn days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }
}

impl std::str::FromStr for Date {
    type Err = ();
    fn from_str(text: &str) -> Result<Date, ()> {
        let mut it = text.split('-');
        let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(());
        };
        let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        // Digits only: `parse` would take a sign (`2026-+1-+4`).
        if y.len() != 4 || m.len() != 2 || d.len() != 2 || ![y, m, d].into_iter().all(digits) {
            return Err(());
        }
        let date = Date {
            year: y.parse().map_err(|_| ())?,
            month: m.parse().map_err(|_| ())?,
            day: d.parse().map_err(|_| ())?,
        };
        // Round-tripping through a day count rejects 2024-02-30 and month 13.
        if !(1..=12).contains(&date.month) || Date::from_days(date.days()) != date {
            return Err(());
        }
        Ok(date)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PatientConnection {
    Direct,
    Indirect,
    #[default]
    None,
}

/// Inventory attributes: they feed the risk score and reports, never the datapath.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub vendor: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub last_patched: Option<Date>,
    pub location: String,
    pub owner: String,
    pub life_critical: bool,
    pub stores_phi: bool,
    pub patient_connection: PatientConnection,
    pub patchable: bool,
    pub notes: String,
}

/// A vendor service window (`[exceptions.NAME]`): named workflows granted to some devices
/// from one second to another, under a ticket and an approver. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exception {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
    /// Devices by id; with `class`, its devices too.
    pub devices: Vec<String>,
    pub class: Option<String>,
    pub workflows: Vec<String>,
    /// Open from this second (inclusive) …
    pub from: i64,
    /// … to this one (exclusive).
    pub until: i64,
    pub ticket: String,
    pub approved_by: String,
    pub description: String,
}

/// A managed device with its resolved settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub span: Span,
    pub class: Option<String>,
    pub mac: Option<Mac>,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    /// `None`: any VLAN.
    pub vlan: Option<u16>,
    pub interface: Option<String>,
    /// The bridge port of `interface` the device must be behind (`None`: pinned to the
    /// port it is first seen on).
    pub port: Option<String>,
    pub inventory: Inventory,
    /// Resolved: the device's own mode, else its class's, else enforce.
    pub mode: Mode,
    /// Workflows the device takes part in: its class's and its own.
    pub workflows: BTreeSet<String>,
    /// Resolved quarantine settings.
    pub quarantine: QuarantineSettings,
    /// What the site's `[site.risk]` changed for this device because of its risk band
    /// (for `explain`); empty when nothing did.
    pub risk_actions: Vec<String>,
}

impl Device {
    /// Whether the device may use IPv4: it has an IPv4 address, or no address at all (a
    /// DHCP client known by MAC only).
    pub fn speaks(&self, family: Family) -> bool {
        let none = self.ipv4.is_empty() && self.ipv6.is_empty();
        none || match family {
            Family::V4 => !self.ipv4.is_empty(),
            Family::V6 => !self.ipv6.is_empty(),
        }
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.ipv6.iter().map(|a| IpAddr::V6(*a)))
    }

    pub fn has_address(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.ipv4.contains(&a),
            IpAddr::V6(a) => self.ipv6.contains(&a),
        }
    }
}

impl Policy {
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.devices.get(i))
    }

    /// The device bound to `addr`, if any.
    pub fn device_by_addr(&self, addr: IpAddr) -> Option<&Device> {
        self.devices.iter().find(|d| d.has_address(addr))
    }
}

/// Host prefix of an address (/32 or /128).
pub fn host_net(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}
