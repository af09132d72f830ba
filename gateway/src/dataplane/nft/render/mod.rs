//! Renders [`MapContents`] (what the XDP maps are filled with) into one nftables table.
//! Pure: builds the `nftables` crate's JSON objects; no `nft`, no I/O.
//!
//! The chains are fixed: their number depends on neither devices nor rules. Everything
//! that grows with the policy is a set or map element, so the table is
//! `O(devices + peer ranges + port ranges)` elements and `O(1)` rules. The decision follows
//! [`crate::policy::classify()`] branch by branch (see the module docs of [`super`] for the
//! differences that remain).
//!
//! Here: the sets and maps (`render`, from the map contents); `builder`: the objects and the
//! verdict rules that count and log; `chains`: the chains, one method per stage.

mod builder;
mod chains;

use super::expr::*;
use super::ranges::{flatten, union};
use crate::policy::{DeviceStates, MapContents, Ranges};
use builder::Builder;
use lazaret_abi::*;
use nftables::expr::MetaKey;
use nftables::schema::{NfListObject, SetType};
use nftables::types::NfFamily;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Which nftables family the table lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Routed gateway: devices and upstream are different IP interfaces.
    Inet,
    /// Ingress of each interface: the frame stage ([`super::frame`]).
    Netdev,
    /// nftables' bridge family. Needs `nf_conntrack_bridge` for the conntrack expressions;
    /// kernels without it (this project's CI kernel) refuse the table, so the daemon uses
    /// `Inet` with br_netfilter for bridge ports instead. Rendered, not exercised by tests.
    Bridge,
}

impl Family {
    /// nft's name of the family (`inet`, `netdev`, `bridge`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Netdev => "netdev",
            Family::Bridge => "bridge",
        }
    }

    pub fn nf(self) -> NfFamily {
        match self {
            Family::Inet => NfFamily::INet,
            Family::Netdev => NfFamily::NetDev,
            Family::Bridge => NfFamily::Bridge,
        }
    }
}

/// How to render.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    pub family: Family,
    /// The table's name; lazaret owns the whole table.
    pub table: String,
    /// Stamped into the conntrack mark of flows this table admitted; flows stamped with
    /// another generation are judged again (the XDP program's generation switch). The
    /// daemon's tables stamp [`super::dataplane::flow_stamp`]; only equality matters.
    pub generation: u32,
    /// Interface names by ifindex (the keys of [`MapContents::ifaces`]); several ports
    /// may map to one name (a bridge's ports to the bridge).
    pub ifnames: BTreeMap<u32, String>,
    /// The interfaces stacked on each of those names (a trunk's VLAN sub-interfaces, a
    /// macvlan, a bridge's VLANs), by that name. Bypass class: the frame stage judges their
    /// frames on the interface they arrive on, but the hooks here see them under the
    /// stacked interface's name; unknown to this table, their flows passed unjudged. They
    /// are judged as the interface they are stacked on: its side, its devices' bindings.
    pub stacked: BTreeMap<String, Vec<String>>,
    /// nflog group for deny/unknown/spoof events, if any.
    pub log_group: Option<u32>,
}

/// Why a table cannot be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("interface with ifindex {0} has no name")]
    NoName(u32),
    #[error("{0:?} cannot be written into an nftables ruleset (an interface name of at most 15 printable characters, without quotes, backslashes or '/')")]
    BadName(String),
}

/// One rendered table: the objects to add, and the device numbering its sets use.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub family: Family,
    pub table: String,
    /// Table, counters, sets, maps, chains, rules, in the order `nft` needs them.
    pub objects: Vec<NfListObject<'static>>,
    /// Device id ([`Device::id`]) to the index the sets use (`meta mark` values).
    pub dev_index: BTreeMap<u64, u32>,
    /// Addresses of each device, for the quarantine address sets.
    pub dev_addrs: BTreeMap<u64, (Vec<Ipv4Addr>, Vec<Ipv6Addr>)>,
    /// The MAC of each device known by it alone in a family (no address of it), and those
    /// families (IPv4, IPv6), for the quarantine MAC sets (`quarmac4`/`6`).
    pub dev_mac_only: BTreeMap<u64, (String, [bool; 2])>,
    /// Where the named counters start (name → packets, bytes): the totals of the table this
    /// one replaces, so the counts run on across generations (set by the daemon; empty
    /// starts at zero).
    pub counter_base: BTreeMap<String, (u64, u64)>,
    /// The frame stage (`netdev` table of the same name) applied and swapped with this
    /// table, when one is rendered ([`super::frame`]).
    pub frame: Option<super::frame::Frame>,
}

/// The index each device (by [`Device::id`]) has in the table's sets and maps (the `meta
/// mark` values of `devidx4`/`6` and `devidx_mac`): 1, 2, … in the contents' order; 0 is
/// no device. The frame stage names the owners of addresses by these too ([`OWNER_MARK`]).
pub fn device_index(m: &MapContents) -> BTreeMap<u64, u32> {
    m.devices
        .iter()
        .enumerate()
        .map(|(i, (_, d))| (d.id, i as u32 + 1))
        .collect()
}

/// The packet mark the frame stage hands the table for a packet to an address a device
/// known by its MAC alone owns by first use (the XDP program's `owned_device`), or from a
/// device port to an IPv6 link-local address, for the device its frame is sent to:
/// this bit, [`OWNER_TABLE`] for the second of the pair's tables, and the owner's
/// [`device_index`] in the bits of [`OWNER_INDEX`]. Without the bit the mark names no owner
/// (a frame-stage mark is otherwise a VLAN id or 0).
pub const OWNER_MARK: u32 = 0x8000_0000;
/// Set in the owner marks of the frame stage of the second of the pair's tables
/// (`dataplane::TABLES`): while a reload swaps them, a packet may pass both frame stages
/// and meet the other generation's inet table, whose device numbering may differ; a mark
/// of the other table's is refused, never read as a device of this one (see
/// `chain_from_upstream`).
pub const OWNER_TABLE: u32 = 0x4000_0000;
/// The bits of an [`OWNER_MARK`] mark that hold the device's index.
pub const OWNER_INDEX: u32 = 0xffff;
/// The packet mark the frame stage hands the table for a packet from a device port to a
/// link-local address that is not the gateway's, sent to a MAC of no device: no flow
/// opens with it, nor do an initiator's packets go on with it (the XDP program's
/// `judge_flow`; a flow opened at such a MAC would carry the same addresses and ports sent
/// on to a device's, and one opened at a device's MAC would go on to an unmanaged host's
/// on the sender's policy alone). Not an owner mark.
pub const LINK_LOCAL_NOBODY: u32 = 0x2000_0000;

/// Set beside the packet mark the frame stage hands the table (a [`LINK_LOCAL_NOBODY`] or
/// an owner mark) for a frame from a device port to an IPv6 link-local address a device
/// claimed by first use, sent to another MAC than its owner's. In a flow's reply direction
/// that address is its initiator's (it claimed it opening the flow): the device at that end
/// of the flow. The XDP program never renames the device a flow names at a link-local end
/// (`judge_flow`); nftables keeps no device per flow end, and asks the claim instead.
pub const LINK_LOCAL_ELSEWHERE: u32 = 0x1000_0000;

const _: () = assert!(
    (LINK_LOCAL_NOBODY | LINK_LOCAL_ELSEWHERE) & (OWNER_MARK | OWNER_TABLE | OWNER_INDEX) == 0
        && LINK_LOCAL_NOBODY & LINK_LOCAL_ELSEWHERE == 0
        && LINK_LOCAL_ELSEWHERE > 4095,
    "apart from owner marks, VLAN ids and each other"
);

const _: () = assert!(
    MAX_DEVICES <= OWNER_INDEX,
    "a device index fits the owner mark"
);

/// The owner bits of the marks of `table`'s frame stage: [`OWNER_MARK`], and
/// [`OWNER_TABLE`] for the pair's second table.
pub fn owner_tag(table: &str) -> u32 {
    if table == super::dataplane::TABLES[1] {
        OWNER_MARK | OWNER_TABLE
    } else {
        OWNER_MARK
    }
}

/// Prefix of every nflog message the table sends: `lazaret <reason> `.
pub const LOG_PREFIX: &str = "lazaret ";

/// Prefix of the learn records of allowed flows: `lazaret learn:<reason> ` (the reason the
/// flow passed with). The XDP program reports a learn-mode device's new flows as learn
/// events whatever their verdict; a flow without a rule is logged as `lazaret learn `.
pub const LEARN_PREFIX: &str = "lazaret learn:";

/// Prefix of the verdicts of a responder's policy on a flow another end opened: `lazaret
/// resp:<reason> `. The event names the responder, as a flow it did not open
/// (`DIR_PEER_INIT`), as the XDP program's `judge_end` reports it.
pub const RESPONDER_PREFIX: &str = "lazaret resp:";

/// Prefix of the refusals of a flow admitted under another generation and judged again:
/// `lazaret rejudge:<reason> ` (the XDP program's `EVENT_F_REJUDGED`).
pub const REJUDGED_PREFIX: &str = "lazaret rejudge:";

/// The dynamic set that rate-limits events per source (see `Builder::decide`).
pub const EVENT_METER: &str = "event_rate";
/// The per-source buckets of sources that are not a device's MAC (see `Builder::log`):
/// apart from [`EVENT_METER`], so that a flood of made-up source MACs, which fills this
/// meter, leaves the devices' meter room for every device.
pub const EVENT_METER_UNKNOWN: &str = "event_rate_unknown";
/// The per-address buckets of devices known by address alone (no MAC in the inventory),
/// IPv4 and IPv6, keyed by the device's source address (see `Builder::log`): such a device
/// has a budget of its own as the devices with a MAC have theirs in [`EVENT_METER`], not a
/// share of [`UNKNOWN_BUDGET`] with every made-up MAC. Per address, not per device: a
/// device with several addresses has a bucket for each (the inventory bounds them).
pub const EVENT_METER_ADDR: [&str; 2] = ["event_rate_addr4", "event_rate_addr6"];
/// Every meter, as the packet path fills them, with its key's type.
pub const EVENT_METERS: [(&str, &str); 4] = [
    (EVENT_METER, "ether_addr"),
    (EVENT_METER_UNKNOWN, "ether_addr"),
    (EVENT_METER_ADDR[0], "ipv4_addr"),
    (EVENT_METER_ADDR[1], "ipv6_addr"),
];
/// The named limit every source without a device spends from after its own bucket in
/// [`EVENT_METER_UNKNOWN`]: [`lazaret_abi::UNKNOWN_EVENTS_SHARE`] times a source's rate and
/// burst, one per table (the inet table's and the frame stage's).
pub const UNKNOWN_BUDGET: &str = "unknown_events";
/// The event budgets of a table, from the policy's `[site.events]` as the XDP program reads
/// them from its site config: a rate per second and a burst per source, and
/// [`lazaret_abi::UNKNOWN_EVENTS_SHARE`] times both for the budget shared by sources
/// without a device ([`UNKNOWN_BUDGET`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventBudget {
    pub rate: u32,
    pub burst: u32,
}

impl EventBudget {
    /// The site's (validation keeps both at least 1; a zero here is taken as 1, as `nft`
    /// refuses a rate of 0).
    pub fn of(site: &lazaret_abi::SiteConfig) -> EventBudget {
        EventBudget {
            rate: site.event_rate.max(1),
            burst: site.event_burst.max(1),
        }
    }

    /// The budget all sources without a device share.
    pub fn shared(self) -> EventBudget {
        EventBudget {
            rate: self.rate.saturating_mul(lazaret_abi::UNKNOWN_EVENTS_SHARE),
            burst: self.burst.saturating_mul(lazaret_abi::UNKNOWN_EVENTS_SHARE),
        }
    }

    /// How long an idle source keeps its bucket in a meter, in seconds: as long as an empty
    /// bucket takes to fill again (burst ÷ rate), so forgetting it changes nothing (a
    /// source seen again gets a full bucket, as it would have had), while a meter a flood
    /// filled is free again within seconds. (`update` refreshes an entry's timeout.)
    pub fn meter_timeout_s(self) -> u32 {
        self.burst.div_ceil(self.rate)
    }
}

/// Sources each meter holds at once; a source beyond it gets no events until an entry
/// times out.
pub const EVENT_METER_SIZE: u32 = 65_536;

/// The side names of the named counters (`deny_no_rule_devices`), as in the metrics.
pub const SIDE_NAMES: [(u8, &str); 2] = [(SIDE_DEVICES, "devices"), (SIDE_UPSTREAM, "upstream")];

/// The named counter of `reason` on `side` (`SIDE_*`): `<reason>_<side>`.
pub fn counter_name(reason: Reason, side: u8) -> String {
    let side = if side == SIDE_DEVICES {
        "devices"
    } else {
        "upstream"
    };
    format!("{}_{side}", reason.name())
}

/// The reasons the table can decide; each has a named counter per side
/// ([`counter_name`], `nft list counters`).
pub const COUNTERS: &[Reason] = &[
    Reason::AllowRule,
    Reason::AllowFlow,
    Reason::AllowNeighbor,
    Reason::PassUnmanaged,
    Reason::Audit,
    Reason::Learn,
    Reason::UnknownAudit,
    Reason::DenyNoRule,
    Reason::DenyNoFlow,
    Reason::DenySpoof,
    Reason::DenyUnknown,
    Reason::DenyQuarantine,
    Reason::DenyRogueDhcp,
    Reason::DenyRogueRa,
    // A DCCP packet too short for its ports (`Builder::flow`).
    Reason::DenyMalformed,
];

/// Set and map names.
pub mod names {
    pub const DEV_IFACES: &str = "dev_ifaces";
    pub const UP_IFACES: &str = "up_ifaces";
    pub const DEVMAC: &str = "devmac";
    pub const DEVIDX_MAC: &str = "devidx_mac";
    pub const MACBIND: &str = "macbind";
    pub const DEV_POLICY: &str = "dev_policy";
    pub const DEV_RESTRICT: &str = "dev_restrict";
    /// Devices in audit mode, and in learn mode: their flows without a rule pass and are
    /// reported (as `audit` and `learn`).
    pub const AUDIT: &str = "audit_mode";
    pub const LEARN: &str = "learn_mode";
    /// Addresses of learn-mode devices (`learn4`, `learn6`): their new flows are reported
    /// even when a rule allows them.
    pub const LEARN_ADDR: &str = "learn";
    pub const QUAR_ISOLATE: &str = "quar_isolate";
    pub const QUAR_RESTRICT: &str = "quar_restrict";
    /// Per family (`quarmac4`, `quarmac6`): the MACs of quarantined devices known by their
    /// MAC alone in that family, whose addresses no quarantine address set holds.
    pub const QUAR_MAC: &str = "quarmac";
    /// Per family (`dccp4`, `dccp6`): the ports of each DCCP session an allowed packet
    /// opened, which this kernel's conntrack does not keep (see `Builder::flow`).
    pub const DCCP: &str = "dccp";
    /// Per family, what a device known by its MAC alone passed on at a flow end no
    /// inventory entry names (see `Builder::flow`): as the flow's initiator (`macflow4`,
    /// `macflow6`), and as its responder (`macanswer4`, `macanswer6`).
    pub const MACFLOW: [&str; 2] = ["macflow", "macanswer"];
    pub const PORTS: &str = "ports";
    pub const PORTS0: &str = "ports0";
    pub const CHAIN_HOOK: &str = "prerouting";
    /// Sets whose elements each carry a packet/byte counter: the source bindings, so
    /// every managed device has its own counter (`nft list set inet lazaret bind4`).
    pub const COUNTED: &[&str] = &[
        "bind4",
        "bind6",
        "bind_nomac4",
        "bind_nomac6",
        "macbind4",
        "macbind6",
    ];
}
use names::*;

/// Per IP family: names and expressions.
#[derive(Clone, Copy)]
struct Fam {
    v: u8,
    /// `ip` / `ip6` payload protocol.
    proto: &'static str,
    /// `ct original` address keys.
    ct_saddr: &'static str,
    ct_daddr: &'static str,
    addr: SetType,
}

const V4: Fam = Fam {
    v: 4,
    proto: "ip",
    ct_saddr: "ip saddr",
    ct_daddr: "ip daddr",
    addr: SetType::Ipv4Addr,
};
const V6: Fam = Fam {
    v: 6,
    proto: "ip6",
    ct_saddr: "ip6 saddr",
    ct_daddr: "ip6 daddr",
    addr: SetType::Ipv6Addr,
};

impl Fam {
    fn n(&self, base: &str) -> String {
        format!("{base}{}", self.v)
    }
    fn saddr(&self) -> Expr {
        payload(self.proto, "saddr")
    }
    fn daddr(&self) -> Expr {
        payload(self.proto, "daddr")
    }
    fn is(&self) -> Stmt {
        eq(meta(MetaKey::Protocol), s(self.proto))
    }
    /// The family's unicast link-local addresses (the XDP program's
    /// `is_link_local_unicast`): fe80::/10; 169.254/16 but its broadcast address.
    fn link_local_unicast(&self) -> Expr {
        if self.v == 4 {
            range(s("169.254.0.0"), s("169.254.255.254"))
        } else {
            range(s("fe80::"), s("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        }
    }
    fn ct_saddr(&self) -> Expr {
        ct_orig(self.ct_saddr)
    }
    fn ct_daddr(&self) -> Expr {
        ct_orig(self.ct_daddr)
    }
    /// A DCCP session's key in `dccp4`/`6`: its initiator's address and port, then its
    /// responder's; read from a packet in the session's `reply` direction or not.
    fn dccp_session(&self, reply: bool) -> Expr {
        let (sport, dport) = (payload("th", "sport"), payload("th", "dport"));
        let parts = if reply {
            vec![self.daddr(), dport, self.saddr(), sport]
        } else {
            vec![self.saddr(), sport, self.daddr(), dport]
        };
        concat(parts)
    }
    /// A flow as a packet's sender sends it, with the sender's MAC: its key in
    /// `macflow4`/`6` and `macanswer4`/`6`. The packet's own fields, not conntrack's
    /// original tuple (whose ports nft types only under one protocol): a flow's packets
    /// from one end all read the same. Not its source address: the policy asked does not
    /// read it (the sender is found by its MAC), and with it an IPv6 key is longer than
    /// nft's registers hold for a set update. Only for protocols with ports
    /// (`chains::ported_flow`).
    fn sent_by(&self) -> Expr {
        concat(vec![
            self.daddr(),
            meta(MetaKey::L4proto),
            payload("th", "sport"),
            payload("th", "dport"),
            payload("ether", "saddr"),
        ])
    }
    /// 0.0.0.0, or :: and fe80::/10 (`unspecified_or_link_local`).
    fn unspecified(&self) -> Expr {
        if self.v == 4 {
            anon(vec![s("0.0.0.0")])
        } else {
            anon(vec![
                s("::"),
                E::Named(N::Prefix(nftables::expr::Prefix {
                    addr: Box::new(s("fe80::")),
                    len: 10,
                })),
            ])
        }
    }
    fn addr_str(&self, a: u128) -> String {
        if self.v == 4 {
            Ipv4Addr::from(a as u32).to_string()
        } else {
            Ipv6Addr::from(a).to_string()
        }
    }
}

use nftables::expr::{Expression as E, NamedExpression as N};

pub(crate) fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Renders the table.
pub fn render(
    m: &MapContents,
    rules: &Ranges,
    states: &DeviceStates,
    opt: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let mut b = Builder::new(opt, EventBudget::of(&m.site));
    let mut dev_ifaces = Vec::new();
    let mut up_ifaces = Vec::new();
    for (ix, cfg) in &m.ifaces {
        let name = opt.ifnames.get(ix).ok_or(RenderError::NoName(*ix))?.clone();
        // Two ports of one bridge have one name here (see `ifnames`): keep it once.
        let list = if cfg.side == SIDE_DEVICES {
            &mut dev_ifaces
        } else {
            &mut up_ifaces
        };
        let above = opt.stacked.get(&name).into_iter().flatten();
        for n in std::iter::once(&name).chain(above) {
            if !list.contains(n) {
                list.push(n.clone());
            }
        }
    }

    // Devices: index, addresses, bindings.
    let dev_index = device_index(m);
    let devices: BTreeMap<u64, Device> = m.devices.iter().map(|(_, d)| (d.id, *d)).collect();
    let mut dev_addrs: BTreeMap<u64, (Vec<Ipv4Addr>, Vec<Ipv6Addr>)> = BTreeMap::new();
    for (k, r) in &m.dev_ip4 {
        dev_addrs
            .entry(r.id)
            .or_default()
            .0
            .push(Ipv4Addr::from(k.addr));
    }
    for (k, r) in &m.dev_ip6 {
        dev_addrs
            .entry(r.id)
            .or_default()
            .1
            .push(Ipv6Addr::from(k.addr));
    }
    let ifaces_of = |d: &Device| -> Result<Vec<String>, RenderError> {
        if d.ifindex == IFINDEX_ANY {
            Ok(dev_ifaces.clone())
        } else {
            let name = opt
                .ifnames
                .get(&d.ifindex)
                .ok_or(RenderError::NoName(d.ifindex))?;
            let above = opt.stacked.get(name).into_iter().flatten();
            Ok(std::iter::once(name).chain(above).cloned().collect())
        }
    };

    let mut policy_elems = Vec::new();
    let mut restrict_elems = Vec::new();
    let mut audit = Vec::new();
    let mut learn = Vec::new();
    let mut devmac = Vec::new();
    let mut devidx_mac = Vec::new();
    let mut macbind = Vec::new();
    let mut macbind_fam: [Vec<Expr>; 2] = [Vec::new(), Vec::new()];
    let mut quar = [Vec::new(), Vec::new()];
    let mut quar_addr: [Vec<Expr>; 2] = [Vec::new(), Vec::new()];
    let mut quar_mac: [Vec<Expr>; 2] = [Vec::new(), Vec::new()];
    let mut dev_mac_only = BTreeMap::new();
    let mut learn_addr: [Vec<Expr>; 2] = [Vec::new(), Vec::new()];
    for (id, d) in &devices {
        let ix = dev_index[id];
        policy_elems.push(E::List(vec![n(ix), n(d.policy)]));
        restrict_elems.push(E::List(vec![n(ix), n(d.restrict_policy)]));
        if d.mode == MODE_AUDIT {
            audit.push(n(ix));
        } else if d.mode == MODE_LEARN {
            learn.push(n(ix));
            if let Some((a4, a6)) = dev_addrs.get(id) {
                learn_addr[0].extend(a4.iter().map(|a| s(a.to_string())));
                learn_addr[1].extend(a6.iter().map(|a| s(a.to_string())));
            }
        }
        let no_addr = [DEV_F_NO_IP4, DEV_F_NO_IP6].map(|f| d.flags & f != 0);
        if d.flags & DEV_F_HAS_MAC != 0 && no_addr.contains(&true) {
            dev_mac_only.insert(*id, (mac_str(&d.mac), no_addr));
        }
        let q = states.quarantine(*id);
        if q != QUARANTINE_NONE {
            quar[usize::from(q == QUARANTINE_ISOLATE)].push(n(ix));
            if let Some((a4, a6)) = dev_addrs.get(id) {
                quar_addr[0].extend(a4.iter().map(|a| s(a.to_string())));
                quar_addr[1].extend(a6.iter().map(|a| s(a.to_string())));
            }
            if let Some((mac, families)) = dev_mac_only.get(id) {
                for fi in 0..2 {
                    if families[fi] {
                        quar_mac[fi].push(s(mac.clone()));
                    }
                }
            }
        }
        if d.flags & DEV_F_HAS_MAC != 0 {
            let mac = s(mac_str(&d.mac));
            devmac.push(mac.clone());
            devidx_mac.push(E::List(vec![mac.clone(), n(ix)]));
            for ifn in ifaces_of(d)? {
                let key = concat(vec![mac.clone(), s(ifn)]);
                macbind.push(key.clone());
                if d.flags & DEV_F_NO_IP4 != 0 {
                    macbind_fam[0].push(key.clone());
                }
                if d.flags & DEV_F_NO_IP6 != 0 {
                    macbind_fam[1].push(key);
                }
            }
        }
    }

    b.counters();
    b.set(DEV_IFACES, vec![SetType::Ifname], false, strs(&dev_ifaces));
    b.set(UP_IFACES, vec![SetType::Ifname], false, strs(&up_ifaces));
    b.set(DEVMAC, vec![SetType::EtherAddr], false, devmac);
    b.map(DEVIDX_MAC, vec![SetType::EtherAddr], false, devidx_mac);
    b.set(
        MACBIND,
        vec![SetType::EtherAddr, SetType::Ifname],
        false,
        macbind,
    );
    b.map(DEV_POLICY, vec![SetType::Mark], false, policy_elems);
    b.map(DEV_RESTRICT, vec![SetType::Mark], false, restrict_elems);
    b.set(AUDIT, vec![SetType::Mark], false, audit);
    b.set(LEARN, vec![SetType::Mark], false, learn);
    let [q_restrict, q_isolate] = quar;
    b.set(QUAR_RESTRICT, vec![SetType::Mark], false, q_restrict);
    b.set(QUAR_ISOLATE, vec![SetType::Mark], false, q_isolate);

    for (fi, f) in [V4, V6].into_iter().enumerate() {
        let mut dev = Vec::new();
        let mut devidx = Vec::new();
        let mut bind = Vec::new();
        let mut bind_nomac = Vec::new();
        let addrs: Vec<(u128, u64)> = if f.v == 4 {
            m.dev_ip4
                .iter()
                .map(|(k, r)| (u128::from(u32::from_be_bytes(k.addr)), r.id))
                .collect()
        } else {
            m.dev_ip6
                .iter()
                .map(|(k, r)| (u128::from_be_bytes(k.addr), r.id))
                .collect()
        };
        for (a, id) in addrs {
            let Some(d) = devices.get(&id) else { continue };
            let addr = s(f.addr_str(a));
            dev.push(addr.clone());
            devidx.push(E::List(vec![addr.clone(), n(dev_index[&id])]));
            for ifn in ifaces_of(d)? {
                if d.flags & DEV_F_HAS_MAC != 0 {
                    bind.push(concat(vec![addr.clone(), s(mac_str(&d.mac)), s(ifn)]));
                } else {
                    bind_nomac.push(concat(vec![addr.clone(), s(ifn)]));
                }
            }
        }
        b.set(&f.n("dev"), vec![f.addr], false, dev);
        b.map(&f.n("devidx"), vec![f.addr], false, devidx);
        b.set(
            &f.n("bind"),
            vec![f.addr, SetType::EtherAddr, SetType::Ifname],
            false,
            bind,
        );
        b.set(
            &f.n("bind_nomac"),
            vec![f.addr, SetType::Ifname],
            false,
            bind_nomac,
        );
        b.set(
            &f.n("macbind"),
            vec![SetType::EtherAddr, SetType::Ifname],
            false,
            std::mem::take(&mut macbind_fam[fi]),
        );
        b.set(
            &f.n("quar"),
            vec![f.addr],
            false,
            std::mem::take(&mut quar_addr[fi]),
        );
        b.set(
            &f.n(QUAR_MAC),
            vec![SetType::EtherAddr],
            false,
            std::mem::take(&mut quar_mac[fi]),
        );
        b.set(
            &f.n(LEARN_ADDR),
            vec![f.addr],
            false,
            std::mem::take(&mut learn_addr[fi]),
        );
        let dccp_timeout = flow_timeout_ns(PROTO_DCCP, FLOW_ESTABLISHED) / NS_PER_S;
        b.dynamic_set(
            &f.n(DCCP),
            vec![f.addr, SetType::InetService, f.addr, SetType::InetService],
            u32::try_from(dccp_timeout).unwrap_or(u32::MAX),
            MAX_FLOWS,
        );
        // A UDP flow's life: a recorded flow outliving it is judged again (and recorded
        // again) once a minute at most, and the sets hold the flows of the last minute.
        let kept = flow_timeout_ns(PROTO_UDP, FLOW_ESTABLISHED) / NS_PER_S;
        for set in MACFLOW {
            b.dynamic_set(
                &f.n(set),
                vec![
                    f.addr,
                    SetType::InetProto,
                    SetType::InetService,
                    SetType::InetService,
                    SetType::EtherAddr,
                ],
                u32::try_from(kept).unwrap_or(u32::MAX),
                MAX_FLOWS,
            );
        }
        for (dir, dname) in [(DIR_DEVICE_INIT, "init"), (DIR_PEER_INIT, "resp")] {
            b.map(
                &f.n(&format!("peer_{dname}_")),
                vec![SetType::Mark, f.addr],
                true,
                peer_elems(rules, f, dir),
            );
        }
    }
    let (ports, ports0) = port_elems(rules);
    b.set(
        PORTS,
        vec![SetType::Mark, SetType::InetProto, SetType::InetService],
        true,
        ports,
    );
    b.set(
        PORTS0,
        vec![SetType::Mark, SetType::InetProto],
        true,
        ports0,
    );

    b.chains(m.site.flags, m.site.quarantine_policy);
    Ok(Rendered {
        family: opt.family,
        table: opt.table.clone(),
        objects: b.objects,
        dev_index,
        dev_addrs,
        dev_mac_only,
        counter_base: BTreeMap::new(),
        frame: None,
    })
}

fn strs(v: &[String]) -> Vec<Expr> {
    v.iter().map(|x| s(x.clone())).collect()
}

/// Stage 1 (peer classes) of one family and direction, as disjoint address ranges per
/// policy: `policy . range : class`. Nested prefixes are flattened: each address keeps the
/// class of the longest prefix containing it, as the XDP program's LPM lookup finds it.
fn peer_elems(r: &Ranges, f: Fam, dir: u8) -> Vec<Expr> {
    let mut by_policy: BTreeMap<u32, Vec<(u128, u128, u32)>> = BTreeMap::new();
    if f.v == 4 {
        for (policy, _, net, class) in r.peer4.iter().filter(|e| e.1 == dir) {
            let (lo, hi) = (u32::from(net.network()), u32::from(net.broadcast()));
            by_policy
                .entry(*policy)
                .or_default()
                .push((u128::from(lo), u128::from(hi), *class));
        }
    } else {
        for (policy, _, net, class) in r.peer6.iter().filter(|e| e.1 == dir) {
            let (lo, hi) = (u128::from(net.network()), u128::from(net.broadcast()));
            by_policy.entry(*policy).or_default().push((lo, hi, *class));
        }
    }
    let mut out = Vec::new();
    for (policy, spans) in by_policy {
        for (lo, hi, class) in flatten(spans) {
            let key = concat(vec![
                n(policy),
                if lo == hi {
                    s(f.addr_str(lo))
                } else {
                    range(s(f.addr_str(lo)), s(f.addr_str(hi)))
                },
            ]);
            out.push(E::List(vec![key, n(class)]));
        }
    }
    out
}

/// Stage 2 (ports by class) as disjoint `class . proto . port` ranges, and the
/// `class . proto` ranges that admit port 0 (protocols without ports look up port 0). Only
/// membership counts: a flow is admitted by any entry of its class.
fn port_elems(r: &Ranges) -> (Vec<Expr>, Vec<Expr>) {
    // Each entry as a range of (proto << 16 | port).
    let mut by_class: BTreeMap<u32, Vec<(u128, u128)>> = BTreeMap::new();
    for a in &r.ports {
        let span = match (a.proto, a.ports) {
            (None, _) => (0, 0xff_ffff),
            (Some(p), None) => (u128::from(p) << 16, (u128::from(p) << 16) | 0xffff),
            (Some(p), Some((lo, hi))) => (
                (u128::from(p) << 16) | u128::from(lo),
                (u128::from(p) << 16) | u128::from(hi),
            ),
        };
        by_class.entry(a.class).or_default().push(span);
    }
    let num = |lo: u128, hi: u128| {
        if lo == hi {
            n(lo as u32)
        } else {
            range(n(lo as u32), n(hi as u32))
        }
    };
    let mut ports = Vec::new();
    let mut ports0 = Vec::new();
    for (class, spans) in by_class {
        for (lo, hi) in union(spans) {
            // Split a range of (proto << 16 | port) into protocol and port ranges.
            let (pa, pb) = (lo >> 16, hi >> 16);
            let (qa, qb) = (lo & 0xffff, hi & 0xffff);
            let mut pieces: Vec<(u128, u128, u128, u128)> = Vec::new();
            if pa == pb {
                pieces.push((pa, pa, qa, qb));
            } else {
                let mid_lo = if qa == 0 { pa } else { pa + 1 };
                let mid_hi = if qb == 0xffff { pb } else { pb - 1 };
                if qa != 0 {
                    pieces.push((pa, pa, qa, 0xffff));
                }
                if mid_lo <= mid_hi {
                    pieces.push((mid_lo, mid_hi, 0, 0xffff));
                }
                if qb != 0xffff {
                    pieces.push((pb, pb, 0, qb));
                }
            }
            for (p0, p1, q0, q1) in pieces {
                ports.push(concat(vec![n(class), num(p0, p1), num(q0, q1)]));
                if q0 == 0 {
                    ports0.push(concat(vec![n(class), num(p0, p1)]));
                }
            }
        }
    }
    (ports, ports0)
}
