//! The frame stage of the nftables dataplane: a `netdev` table hooked at the ingress of
//! every interface nftables enforces on, where the XDP program runs. It judges what the
//! `inet` table cannot see or sees too late: VLAN tag stacks, ethertypes, ARP, the source's
//! whole L2 identity (address, MAC, interface, bridge port, VLAN), neighbor discovery's scope
//! and targets, link-local ownership, the stateless header checks (TCP flags, IPv6
//! extension chains, fragments that overlap a TCP header), ICMP errors sent by a device that
//! were not about a packet it received, rogue DHCP servers and routers. Frames it passes go on
//! to the kernel (bridge or routing) and so to the `inet` table, which keeps the flows and
//! the policy. Pure: renders text; [`super::Nft`] applies it.
//!
//! Rendered as nft's text syntax, not JSON: nft 1.0.6's JSON cannot declare sets keyed by
//! raw payload (`typeof @th,64,128`, the NDP target), which the NA and ICMP checks need.
//! Every value written is formatted here from typed data (addresses, MACs, numbers), and
//! interface names are checked before they are quoted.
//!
//! The VLAN a frame belongs to is put in the packet mark first: the tag's VID, or for an
//! untagged (or priority-tagged) frame the VLAN its port gives untagged frames (0 on a
//! trunk). Identity sets are keyed by `… . iifname . meta mark`, and by `… . iifname` for
//! devices bound to any VLAN. Leaving the stage, a packet's mark is the owner mark of its
//! destination (`render::OWNER_MARK`, an address a device known by its MAC alone owns by
//! first use; from a device port, only inside the devices' declared networks, and the
//! device a frame to a link-local address is sent to), `render::LINK_LOCAL_NOBODY` (from a
//! device port, to a link-local address of no device's MAC, not the gateway's), or 0,
//! with `render::LINK_LOCAL_ELSEWHERE` beside it for a frame to an IPv6 link-local address
//! a device claimed, sent to another MAC than its owner's; the
//! `inet` table reads it, then uses the mark as its own register.
//!
//! Reasons and their order follow the XDP program's parser and `identify_source`
//! (`gateway-ebpf/src/main.rs`); where the two differ it is in the reason a frame failing two
//! checks is counted under, never in whether it passes.

use super::render::{counter_name, RenderError, LOG_PREFIX};
use crate::policy::{DeviceStates, MapContents};
use lazaret_abi::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One interface the frame stage hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub ifindex: u32,
    /// Side, untagged VLAN and bridge binding, as the XDP program gets them.
    pub cfg: IfaceConfig,
}

/// Elements the packet path added to the dynamic sets of the enforcing table (owners of
/// addresses by first use, bridge-port pins), carried into the next generation so a reload
/// forgets no owner and no pin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// IPv6 addresses owned by first use (link-local ones, and those of devices the
    /// inventory binds no IPv6 address), with the seconds their ownership has left.
    pub owners6: Vec<(Ipv6Addr, [u8; 6], u64)>,
    /// IPv4 addresses devices the inventory binds none use, the same way.
    pub owners4: Vec<(Ipv4Addr, [u8; 6], u64)>,
    /// The addresses that name their owner as a destination (`ownidx4`/`ownidx6`), by the
    /// owner's MAC, with the seconds left: they outlive the claims above
    /// (`TIMEOUT_DEST_OWNER_NS`).
    pub dest4: Vec<(Ipv4Addr, [u8; 6], u64)>,
    pub dest6: Vec<(Ipv6Addr, [u8; 6], u64)>,
    pub pins: Vec<([u8; 6], String)>,
}

/// How to render.
#[derive(Clone, Debug)]
pub struct FrameOptions<'a> {
    pub table: &'a str,
    pub ports: &'a [Port],
    pub local: &'a BTreeSet<IpAddr>,
    pub log_group: Option<u32>,
    /// Named counters start here (name → packets, bytes), as in the `inet` table.
    pub counter_base: &'a BTreeMap<String, (u64, u64)>,
    pub carried: &'a Dynamic,
    /// Quarantine states, for [`names::QUAR_MAC`].
    pub states: &'a DeviceStates,
}

/// A rendered frame stage: the table without its base chains (applied first, unhooked),
/// then the base chains that hook it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub table: String,
    pub build: String,
    pub hook: String,
}

/// Set names the daemon updates or reads in place.
pub mod names {
    /// The MACs of isolated devices: their link-local control frames are refused
    /// (`control_ok`). Rewritten in place as quarantines change.
    pub const QUAR_MAC: &str = "quar_mac";
    pub const LOCAL4: &str = "local4";
    pub const LOCAL6: &str = "local6";
    pub const T_LOCAL: &str = "t_local";
    pub const LL_OWNER: &str = "ll_owner";
    pub const LL_CLAIMED: &str = "ll_claimed";
    pub const OWN4: &str = "own4";
    pub const CLAIMED4: &str = "claimed4";
    /// Per family: the addresses held tentatively by the first MAC to probe them
    /// (`probed4`, `probed6`: the XDP program's `LZ_PROBED`), and by which MAC
    /// (`probedby4`, `probedby6`), for `TIMEOUT_PROBE_HOLD_NS`, not renewed.
    pub const PROBED: [&str; 2] = ["probed4", "probed6"];
    pub const PROBED_BY: [&str; 2] = ["probedby4", "probedby6"];
    /// The source MAC of each ARP frame from a MAC that is no device's, twice, for a
    /// second: its sender hardware address is compared with it by a lookup (`arp_id`).
    pub const ARP_SENDER: &str = "arp_sender";
    pub const CLAIM_BUDGET: &str = "claim_budget";
    pub const CLAIM_BUDGET6: &str = "claim_budget6";
    /// Per family (`ownidx4`, `ownidx6`): each address a device known by its MAC alone
    /// owns by first use (IPv6 link-local ones aside), to its device as an owner mark
    /// (`render::OWNER_MARK`); refreshed by the owner's frames, living
    /// `TIMEOUT_DEST_OWNER_NS` past the last (after the claim), deleted by another
    /// device's claim of the address.
    pub const OWN_INDEX: &str = "ownidx";
    /// Devices by MAC, to their owner marks: those known by their MAC alone in IPv4 and in
    /// IPv6 (the owners of `ownidx4`/`6`), and every one with a MAC (the device a frame to
    /// a link-local address is sent to).
    pub const MAC_INDEX: [&str; 3] = ["macidx4", "macidx6", "macidxll"];
    /// The addresses that may be owned by first use, as far as the site's networks go.
    pub const CLAIM_NETS4: &str = "claimnets4";
    pub const CLAIM_NETS6: &str = "claimnets6";
    /// The same for what devices behind each devices-side port may own (`iifname .
    /// address`): their interface's claim scope (`IfaceConfig::claim_scope`).
    pub const CLAIM_SCOPE4: &str = "claimscope4";
    pub const CLAIM_SCOPE6: &str = "claimscope6";
    /// The devices' declared networks (and link-local addresses).
    pub const DEV_NETS4: &str = "devnets4";
    pub const DEV_NETS6: &str = "devnets6";
    pub const PINNED: &str = "pinned";
    pub const PIN_PORT: &str = "pin_port";
}
use names::*;

/// The first 12 bytes of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), as a raw payload.
const MAPPED6: &str = "0x00000000000000000000ffff";
/// `::` and `::1` as raw payloads.
const ZERO6: &str = "0x00000000000000000000000000000000";
const LOOPBACK6: &str = "0x00000000000000000000000000000001";

/// A unicast IPv4 link-local destination (169.254/16 but its broadcast address; the XDP
/// program's `is_link_local_unicast`).
const LINK_LOCAL_UNICAST4: &str = "ip daddr 169.254.0.0/16 ip daddr != 169.254.255.255";

/// How long a link-local owner keeps an unused address (`TIMEOUT_LL_OWNER_NS`), in seconds.
const LL_TIMEOUT_S: u64 = TIMEOUT_LL_OWNER_NS / NS_PER_S;
/// How long an owned address names its owner as a destination (`TIMEOUT_DEST_OWNER_NS`).
const DEST_TIMEOUT_S: u64 = TIMEOUT_DEST_OWNER_NS / NS_PER_S;

/// The reasons the frame stage decides, on either side; each has a named counter per side.
pub const COUNTERS: &[Reason] = &[
    Reason::AllowNeighbor,
    Reason::AllowControl,
    Reason::PassUnmanaged,
    Reason::UnknownAudit,
    Reason::DenyNoRule,
    Reason::DenyNoFlow,
    Reason::DenySpoof,
    Reason::DenyUnknown,
    Reason::DenyMalformed,
    Reason::DenyEthertype,
    Reason::DenyQuarantine,
    Reason::DenyRogueDhcp,
    Reason::DenyRogueRa,
    Reason::DenyFragment,
    Reason::DenyVlanDepth,
    Reason::DenyIpv6Ext,
    Reason::DenyVlanTag,
    Reason::DenyTcpFlags,
    Reason::DenyNdScope,
    Reason::DenyIcmpError,
];

/// An interface name, quoted for nft; refused if it could break out of the quotes.
fn quoted(name: &str) -> Result<String, RenderError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '/');
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(RenderError::BadName(name.to_string()))
    }
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An IPv6 address as the integer a raw-payload key holds.
fn raw6(a: &Ipv6Addr) -> String {
    format!("0x{:032x}", u128::from(*a))
}

fn raw4(a: &Ipv4Addr) -> String {
    format!("0x{:08x}", u32::from(*a))
}

/// The text of one table: sets, counters and chains, built as strings.
struct Text {
    body: String,
    log_group: Option<u32>,
    /// The site's event budgets (see `decide_as`).
    budget: super::render::EventBudget,
    neighbor: bool,
}

/// Which side a chain's packets come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Devices,
    Upstream,
}

impl Side {
    fn abi(self) -> u8 {
        match self {
            Side::Devices => SIDE_DEVICES,
            Side::Upstream => SIDE_UPSTREAM,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Side::Devices => "devices",
            Side::Upstream => "upstream",
        }
    }
}

impl Text {
    fn line(&mut self, s: &str) {
        self.body.push_str("    ");
        self.body.push_str(s);
        self.body.push('\n');
    }

    /// `set NAME { typeof|type …; [flags]; elements = { … } }`.
    fn set(&mut self, name: &str, key: &str, flags: &str, elems: &[String]) {
        self.object("set", name, key, flags, elems);
    }

    /// `map NAME { typeof|type … : …; [flags]; elements = { … } }`.
    fn map(&mut self, name: &str, key: &str, flags: &str, elems: &[String]) {
        self.object("map", name, key, flags, elems);
    }

    fn object(&mut self, kind: &str, name: &str, key: &str, flags: &str, elems: &[String]) {
        let _ = write!(self.body, "  {kind} {name} {{\n    {key}\n");
        if !flags.is_empty() {
            let _ = writeln!(self.body, "    {flags}");
        }
        if !elems.is_empty() {
            let _ = writeln!(self.body, "    elements = {{ {} }}", elems.join(", "));
        }
        self.body.push_str("  }\n");
    }

    fn chain(&mut self, name: &str, rules: impl FnOnce(&mut Text)) {
        let _ = writeln!(self.body, "  chain {name} {{");
        rules(self);
        self.body.push_str("  }\n");
    }

    /// A rule deciding `r` on `matches`: logged (rate-limited per source) when it is
    /// reported, counted, then dropped or accepted. For a frame that has not passed
    /// identity as a device: it spends its source MAC's budget, then the one all such
    /// sources share (as the inet table's `Payer::Source`).
    fn decide(&mut self, side: Side, matches: &str, r: Reason) {
        self.decide_as(side, matches, r, None);
    }

    /// As `decide`, for a frame that passed identity as the device that sent it, known
    /// by its source address `addr` (`arp saddr ip`, `ip saddr`, `ip6 saddr`) of family
    /// `v` when the device has no MAC: it spends that device's budget (as the inet table's
    /// `Payer::Sender`).
    fn decide_sent(&mut self, matches: &str, r: Reason, addr: &str, v: u8) {
        self.decide_as(Side::Devices, matches, r, Some((addr, v)));
    }

    fn decide_as(&mut self, side: Side, matches: &str, r: Reason, sent: Option<(&str, u8)>) {
        let report = !matches!(
            r,
            Reason::AllowNeighbor | Reason::AllowControl | Reason::PassUnmanaged
        );
        if let (true, Some(g)) = (report, self.log_group) {
            let (rate, burst) = (self.budget.rate, self.budget.burst);
            let limit =
                |key: &str| format!("{{ {key} limit rate {rate}/second burst {burst} packets }}");
            let log = format!("log prefix \"{LOG_PREFIX}{} \" group {g}", r.name());
            let source = format!(
                "update @{} {} limit name \"{}\" {log}",
                super::render::EVENT_METER_UNKNOWN,
                limit("ether saddr"),
                super::render::UNKNOWN_BUDGET
            );
            match sent.filter(|_| r.spends_own_budget()) {
                Some((addr, v)) => {
                    // Admitted by its address alone (`bindnm`): a device without a MAC,
                    // whose frames may carry another device's (behind a managed router).
                    // Keyed by that address, neither spends the other's budget (the XDP
                    // program's is the device's own cell).
                    let by_addr = format!("{addr} . iifname . meta mark @bindnm{v}");
                    let by_addr_any = format!("{addr} . iifname @bindnm{v}_any");
                    let not_by_addr = format!(
                        "{addr} . iifname . meta mark != @bindnm{v} {addr} . iifname != @bindnm{v}_any"
                    );
                    let addr_bucket = format!("update @event_rate_addr{v} {} {log}", limit(addr));
                    self.line(&format!("{matches} {by_addr} {addr_bucket}"));
                    self.line(&format!(
                        "{matches} {addr} . iifname . meta mark != @bindnm{v} {by_addr_any} {addr_bucket}"
                    ));
                    self.line(&format!(
                        "{matches} {not_by_addr} ether saddr @devmac update @{} {} {log}",
                        super::render::EVENT_METER,
                        limit("ether saddr")
                    ));
                    // Identity admits no other source without a device MAC; should one
                    // come, it is any other source's, not lost.
                    self.line(&format!(
                        "{matches} {not_by_addr} ether saddr != @devmac {source}"
                    ));
                }
                None => self.line(&format!("{matches} {source}")),
            }
        }
        let verdict = if r.passes() { "accept" } else { "drop" };
        self.line(&format!(
            "{matches} counter name {} {verdict}",
            counter_name(r, side.abi())
        ));
    }
}

/// Per-family identity sets, keyed with the frame's VLAN (`meta mark`) or, for devices on
/// any VLAN, without it.
#[derive(Default)]
struct Ident {
    bind: [Vec<String>; 2],
    bind_any: [Vec<String>; 2],
    bindnm: [Vec<String>; 2],
    bindnm_any: [Vec<String>; 2],
    macnoip: [Vec<String>; 2],
    macnoip_any: [Vec<String>; 2],
    macbind: Vec<String>,
    macbind_any: Vec<String>,
    /// Every device MAC on each of its ports, whatever its VLAN (link-local control frames,
    /// sent untagged: `control_id`).
    macport: Vec<String>,
    onlink6: Vec<String>,
    onlink6_any: Vec<String>,
    t_bind6: Vec<String>,
    t_bind6_any: Vec<String>,
    t_bindnm6: Vec<String>,
    t_bindnm6_any: Vec<String>,
}

/// The MACs of the devices `states` isolates, as set elements (a restricted device's
/// control frames pass: 802.1X re-authentication must go on under a restriction).
pub fn quarantined_macs(m: &MapContents, states: &DeviceStates) -> Vec<String> {
    m.devices
        .iter()
        .filter(|(_, d)| d.flags & DEV_F_HAS_MAC != 0)
        .filter(|(_, d)| states.quarantine(d.id) == QUARANTINE_ISOLATE)
        .map(|(_, d)| mac(&d.mac))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Renders the frame stage for `m` (the same contents the XDP maps are filled from).
pub fn render_frame(m: &MapContents, opt: &FrameOptions) -> Result<Frame, RenderError> {
    let dev_ports: Vec<&Port> = opt
        .ports
        .iter()
        .filter(|p| p.cfg.side == SIDE_DEVICES)
        .collect();
    // The ports a device may be behind: those binding to its interface (the interface
    // itself, or the ports of its bridge), or every device port.
    let ports_of = |d: &Device| -> Vec<&Port> {
        dev_ports
            .iter()
            .copied()
            .filter(|p| d.ifindex == IFINDEX_ANY || p.cfg.binding(p.ifindex) == d.ifindex)
            .collect()
    };
    let mut addrs: BTreeMap<u64, (Vec<Ipv4Addr>, Vec<Ipv6Addr>)> = BTreeMap::new();
    for (k, r) in &m.dev_ip4 {
        addrs
            .entry(r.id)
            .or_default()
            .0
            .push(Ipv4Addr::from(k.addr));
    }
    for (k, r) in &m.dev_ip6 {
        addrs
            .entry(r.id)
            .or_default()
            .1
            .push(Ipv6Addr::from(k.addr));
    }

    let mut id = Ident::default();
    let mut devmac = Vec::new();
    let mut samemac = Vec::new();
    let mut dev46: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut same4 = Vec::new();
    let mut same6 = Vec::new();
    let mut t_dev6 = Vec::new();
    let mut portcfg = Vec::new();
    let mut portcfg_mac = Vec::new();
    for (_, d) in &m.devices {
        let has_mac = d.flags & DEV_F_HAS_MAC != 0;
        let mac_s = mac(&d.mac);
        let (a4, a6) = addrs.get(&d.id).cloned().unwrap_or_default();
        if has_mac {
            devmac.push(mac_s.clone());
            samemac.push(format!("{mac_s} . {mac_s}"));
        }
        if d.port_ifindex != IFINDEX_ANY && has_mac {
            if let Some(p) = opt.ports.iter().find(|p| p.ifindex == d.port_ifindex) {
                portcfg.push(format!("{mac_s} . {}", quoted(&p.name)?));
                portcfg_mac.push(mac_s.clone());
            }
        }
        for a in &a4 {
            dev46[0].push(a.to_string());
            same4.push(format!("{a} . {}", raw4(a)));
        }
        for a in &a6 {
            dev46[1].push(a.to_string());
            same6.push(format!("{a} . {}", raw6(a)));
            t_dev6.push(raw6(a));
        }
        for p in ports_of(d) {
            let port = quoted(&p.name)?;
            // The VLAN this device's frames carry on this port, as the mark holds it: its
            // own (a tag on a trunk, or the port's untagged VLAN), or any.
            let vlan = if d.vlan == VLAN_ANY {
                None
            } else {
                Some(d.vlan)
            };
            let on = |key: String, specific: &mut Vec<String>, any: &mut Vec<String>| match vlan {
                Some(v) => specific.push(format!("{key} . {port} . {v}")),
                None => any.push(format!("{key} . {port}")),
            };
            if has_mac {
                on(mac_s.clone(), &mut id.macbind, &mut id.macbind_any);
                id.macport.push(format!("{mac_s} . {port}"));
                if d.flags & DEV_F_NO_IP4 != 0 {
                    on(mac_s.clone(), &mut id.macnoip[0], &mut id.macnoip_any[0]);
                }
                if d.flags & DEV_F_NO_IP6 != 0 {
                    on(mac_s.clone(), &mut id.macnoip[1], &mut id.macnoip_any[1]);
                }
            }
            for a in &a4 {
                if has_mac {
                    on(
                        format!("{a} . {mac_s}"),
                        &mut id.bind[0],
                        &mut id.bind_any[0],
                    );
                } else {
                    on(a.to_string(), &mut id.bindnm[0], &mut id.bindnm_any[0]);
                }
            }
            for a in &a6 {
                on(a.to_string(), &mut id.onlink6, &mut id.onlink6_any);
                if has_mac {
                    on(
                        format!("{a} . {mac_s}"),
                        &mut id.bind[1],
                        &mut id.bind_any[1],
                    );
                    on(
                        format!("{} . {mac_s}", raw6(a)),
                        &mut id.t_bind6,
                        &mut id.t_bind6_any,
                    );
                } else {
                    on(a.to_string(), &mut id.bindnm[1], &mut id.bindnm_any[1]);
                    on(raw6(a), &mut id.t_bindnm6, &mut id.t_bindnm6_any);
                }
            }
        }
    }

    let mut t = Text {
        body: String::new(),
        log_group: opt.log_group,
        budget: super::render::EventBudget::of(&m.site),
        neighbor: m.site.flags & SITE_F_NEIGHBOR != 0,
    };
    for r in COUNTERS {
        for side in [Side::Devices, Side::Upstream] {
            let name = counter_name(*r, side.abi());
            let (p, b) = opt.counter_base.get(&name).copied().unwrap_or((0, 0));
            let _ = writeln!(t.body, "  counter {name} {{ packets {p} bytes {b} }}");
        }
    }
    let names = |ports: Vec<&Port>| -> Result<Vec<String>, RenderError> {
        ports.iter().map(|p| quoted(&p.name)).collect()
    };
    let access = names(
        dev_ports
            .iter()
            .copied()
            .filter(|p| p.cfg.untagged_vlan != VLAN_UNTAGGED)
            .collect(),
    )?;
    let bridged = names(
        dev_ports
            .iter()
            .copied()
            .filter(|p| p.cfg.binding_ifindex != IFINDEX_ANY)
            .collect(),
    )?;
    let port_vlan: Vec<String> = dev_ports
        .iter()
        .map(|p| Ok(format!("{} : {}", quoted(&p.name)?, p.cfg.untagged_vlan)))
        .collect::<Result<_, RenderError>>()?;
    t.set("access_ports", "type ifname", "", &access);
    t.set("bridge_ports", "type ifname", "", &bridged);
    let _ = writeln!(t.body, "  map port_vlan {{\n    type ifname : mark");
    if !port_vlan.is_empty() {
        let _ = writeln!(t.body, "    elements = {{ {} }}", port_vlan.join(", "));
    }
    t.body.push_str("  }\n");
    t.set("devmac", "type ether_addr", "", &devmac);
    t.set(
        QUAR_MAC,
        "type ether_addr",
        "",
        &quarantined_macs(m, opt.states),
    );
    t.set("samemac", "type ether_addr . ether_addr", "", &samemac);
    let seen = format!("flags dynamic,timeout\n    timeout 1s\n    size {MAX_LL_OWNERS}");
    t.set(ARP_SENDER, "type ether_addr . ether_addr", &seen, &[]);
    let local4: Vec<String> = opt
        .local
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v) => Some(v.to_string()),
            IpAddr::V6(_) => None,
        })
        .collect();
    let local6: Vec<&Ipv6Addr> = opt
        .local
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(v) => Some(v),
            IpAddr::V4(_) => None,
        })
        .collect();
    t.set(LOCAL4, "type ipv4_addr", "", &local4);
    let l6: Vec<String> = local6
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    t.set(LOCAL6, "type ipv6_addr", "", &l6);
    let tl: Vec<String> = local6.iter().map(|a| raw6(a)).collect();
    t.set(T_LOCAL, "typeof @th,64,128", "", &tl);
    for (i, (v, ty)) in [("4", "ipv4_addr"), ("6", "ipv6_addr")]
        .into_iter()
        .enumerate()
    {
        t.set(&format!("dev{v}"), &format!("type {ty}"), "", &dev46[i]);
        t.set(
            &format!("bind{v}"),
            &format!("type {ty} . ether_addr . ifname . mark"),
            "",
            &id.bind[i],
        );
        t.set(
            &format!("bind{v}_any"),
            &format!("type {ty} . ether_addr . ifname"),
            "",
            &id.bind_any[i],
        );
        t.set(
            &format!("bindnm{v}"),
            &format!("type {ty} . ifname . mark"),
            "",
            &id.bindnm[i],
        );
        t.set(
            &format!("bindnm{v}_any"),
            &format!("type {ty} . ifname"),
            "",
            &id.bindnm_any[i],
        );
        t.set(
            &format!("macnoip{v}"),
            "type ether_addr . ifname . mark",
            "",
            &id.macnoip[i],
        );
        t.set(
            &format!("macnoip{v}_any"),
            "type ether_addr . ifname",
            "",
            &id.macnoip_any[i],
        );
    }
    t.set("macport", "type ether_addr . ifname", "", &id.macport);
    t.set(
        "macbind",
        "type ether_addr . ifname . mark",
        "",
        &id.macbind,
    );
    t.set(
        "macbind_any",
        "type ether_addr . ifname",
        "",
        &id.macbind_any,
    );
    t.set("onlink6", "type ipv6_addr . ifname . mark", "", &id.onlink6);
    t.set(
        "onlink6_any",
        "type ipv6_addr . ifname",
        "",
        &id.onlink6_any,
    );
    t.set("same4", "typeof ip saddr . @th,192,32", "", &same4);
    t.set("same6", "typeof ip6 saddr . @th,256,128", "", &same6);
    t.set("t_dev6", "typeof @th,64,128", "", &t_dev6);
    t.set(
        "t_bind6",
        "typeof @th,64,128 . ether saddr . iifname . meta mark",
        "",
        &id.t_bind6,
    );
    t.set(
        "t_bind6_any",
        "typeof @th,64,128 . ether saddr . iifname",
        "",
        &id.t_bind6_any,
    );
    t.set(
        "t_bindnm6",
        "typeof @th,64,128 . iifname . meta mark",
        "",
        &id.t_bindnm6,
    );
    t.set(
        "t_bindnm6_any",
        "typeof @th,64,128 . iifname",
        "",
        &id.t_bindnm6_any,
    );
    t.set("portcfg", "type ether_addr . ifname", "", &portcfg);
    t.set("portcfg_mac", "type ether_addr", "", &portcfg_mac);
    // Written by the packet path: owners of addresses by first use (FCFS, refreshed by use)
    // and pins.
    let dynamic_ll =
        format!("flags dynamic,timeout\n    timeout {LL_TIMEOUT_S}s\n    size {MAX_LL_OWNERS}");
    // Each with what it had left (`expires`): a reload does not renew an owner, so an
    // address its owner left is free after 10 minutes however often the policy reloads.
    let owners = |v: Vec<(String, &[u8; 6], u64)>| -> (Vec<String>, Vec<String>) {
        let live = v.iter().filter(|(_, _, left)| *left > 0);
        let pairs = live
            .clone()
            .map(|(a, m, left)| format!("{a} . {} expires {left}s", mac(m)))
            .collect();
        let mut claimed = BTreeMap::new();
        for (a, _, left) in live {
            let e = claimed.entry(a.clone()).or_insert(*left);
            *e = (*e).max(*left);
        }
        let claimed = claimed
            .into_iter()
            .map(|(a, left)| format!("{a} expires {left}s"))
            .collect();
        (pairs, claimed)
    };
    let (own6, claimed6) = owners(
        opt.carried
            .owners6
            .iter()
            .map(|(a, m, left)| (raw6(a), m, *left))
            .collect(),
    );
    t.set(
        LL_OWNER,
        "typeof @nh,64,128 . ether saddr",
        &dynamic_ll,
        &own6,
    );
    t.set(LL_CLAIMED, "typeof @nh,64,128", &dynamic_ll, &claimed6);
    let (own4, claimed4) = owners(
        opt.carried
            .owners4
            .iter()
            .map(|(a, m, left)| (a.to_string(), m, *left))
            .collect(),
    );
    t.set(OWN4, "typeof ip saddr . ether saddr", &dynamic_ll, &own4);
    t.set(CLAIMED4, "typeof ip saddr", &dynamic_ll, &claimed4);
    // Tentative holds live a probe's window and are not carried across a reload.
    let hold_s = TIMEOUT_PROBE_HOLD_NS / NS_PER_S;
    let held = format!("flags dynamic,timeout\n    timeout {hold_s}s\n    size {MAX_LL_OWNERS}");
    for (i, key) in ["ip saddr", "@nh,64,128"].into_iter().enumerate() {
        t.set(PROBED[i], &format!("typeof {key}"), &held, &[]);
        t.set(
            PROBED_BY[i],
            &format!("typeof {key} . ether saddr"),
            &held,
            &[],
        );
    }
    // The owners' devices, for the inet table (the `dst_*` chains), by MAC: the devices
    // known by their MAC alone in a family (`macidx4`, `macidx6`); and the addresses they
    // own, carried with what they had left. And every device with a MAC (`macidxll`): the
    // device a frame to an IPv6 link-local address is sent to (the hooks).
    let index = super::render::device_index(m);
    let mut macidx: [BTreeMap<[u8; 6], u32>; 3] = Default::default();
    for (_, d) in &m.devices {
        if d.flags & DEV_F_HAS_MAC == 0 {
            continue;
        }
        let mark = super::render::owner_tag(opt.table) | index[&d.id];
        for (fi, flag) in [DEV_F_NO_IP4, DEV_F_NO_IP6].into_iter().enumerate() {
            if d.flags & flag != 0 {
                macidx[fi].insert(d.mac, mark);
            }
        }
        macidx[2].insert(d.mac, mark);
    }
    // An address names its owner as a destination for as long as the XDP program's
    // `owned_device` finds it (TIMEOUT_DEST_OWNER_NS since the owner last used it), past
    // its claim: a new owner's claim deletes the element first (`fcfs`), as a map keeps
    // the data of an element it already holds (`update` refreshes only its timeout). The
    // elements are carried with what they had left, and a carried claim keeps its address
    // at least as long. One element per address (a map refuses two): the owner with the
    // most time left.
    let dynamic_idx =
        format!("flags dynamic,timeout\n    timeout {DEST_TIMEOUT_S}s\n    size {MAX_LL_OWNERS}");
    let owned = |fi: usize, v: Vec<(String, &[u8; 6], u64)>| -> Vec<String> {
        let mut by_addr: BTreeMap<String, (u64, u32)> = BTreeMap::new();
        for (a, m, left) in v {
            let Some(mark) = macidx[fi].get(m).copied() else {
                continue;
            };
            if left > 0 && by_addr.get(&a).is_none_or(|(l, _)| *l < left) {
                by_addr.insert(a, (left, mark));
            }
        }
        by_addr
            .into_iter()
            .map(|(a, (left, mark))| format!("{a} expires {left}s : {mark}"))
            .collect()
    };
    let c = opt.carried;
    let ownidx4 = owned(
        0,
        c.owners4
            .iter()
            .chain(&c.dest4)
            .map(|(a, m, left)| (a.to_string(), m, *left))
            .collect(),
    );
    let ownidx6 = owned(
        1,
        c.owners6
            .iter()
            .chain(&c.dest6)
            .filter(|(a, _, _)| !a.is_unicast_link_local())
            .map(|(a, m, left)| (raw6(a), m, *left))
            .collect(),
    );
    for (fi, name) in MAC_INDEX.into_iter().enumerate() {
        let macs: Vec<String> = macidx[fi]
            .iter()
            .map(|(m, mark)| format!("{} : {mark}", mac(m)))
            .collect();
        t.map(name, "type ether_addr : mark", "", &macs);
    }
    for (fi, (key, elems)) in [("ip saddr", ownidx4), ("@nh,64,128", ownidx6)]
        .into_iter()
        .enumerate()
    {
        t.map(
            &format!("{OWN_INDEX}{}", fi * 2 + 4),
            &format!("typeof {key} : meta mark"),
            &dynamic_idx,
            &elems,
        );
    }
    // Which addresses may be owned by first use (the peer maps' `DIR_CLAIM` entries, the
    // XDP program's `in_claim_networks`), flattened: an interval set matches no longest
    // prefix.
    let claimable = |c: u32| c == CLAIM_DEVICES || c == CLAIM_ANY;
    let (claim4, claim6) = claim_networks(m, CLAIM_POLICY, claimable);
    t.set(CLAIM_NETS4, "typeof ip saddr", "flags interval", &claim4);
    t.set(CLAIM_NETS6, "typeof @nh,64,128", "flags interval", &claim6);
    // Per devices-side port, its interface's scope (the site's, for an interface the
    // policy has no entries for, as the XDP program falls back).
    let scopes: BTreeSet<u32> = m
        .peer4
        .iter()
        .filter(|(_, k, _)| k.dir == DIR_CLAIM)
        .map(|(_, k, _)| u32::from_be_bytes(k.policy))
        .collect();
    let mut by_scope: BTreeMap<u32, (Vec<String>, Vec<String>)> = BTreeMap::new();
    let (mut scope4, mut scope6) = (Vec::new(), Vec::new());
    for p in opt.ports.iter().filter(|p| p.cfg.side == SIDE_DEVICES) {
        let scope = Some(u32::from(p.cfg.claim_scope))
            .filter(|s| scopes.contains(s))
            .unwrap_or(CLAIM_POLICY);
        let (v4, v6) = by_scope
            .entry(scope)
            .or_insert_with(|| claim_networks(m, scope, claimable));
        let name = quoted(&p.name)?;
        scope4.extend(v4.iter().map(|r| format!("{name} . {r}")));
        scope6.extend(v6.iter().map(|r| format!("{name} . {r}")));
    }
    t.set(
        CLAIM_SCOPE4,
        "typeof iifname . ip saddr",
        "flags interval",
        &scope4,
    );
    t.set(
        CLAIM_SCOPE6,
        "typeof iifname . @nh,64,128",
        "flags interval",
        &scope6,
    );
    // The networks declared for the devices: an owned address names its device for what
    // devices send there only inside them (the XDP program's `destination`).
    let (dev4, dev6) = claim_networks(m, CLAIM_POLICY, |c| c == CLAIM_DEVICES);
    t.set(DEV_NETS4, "typeof ip saddr", "flags interval", &dev4);
    t.set(DEV_NETS6, "typeof @nh,64,128", "flags interval", &dev6);
    // A full bucket again once it would have refilled: the burst's worth of periods.
    let budget_s = u64::from(CLAIM_BURST) * CLAIM_PERIOD_S;
    let budget = format!(
        "flags dynamic,timeout\n    timeout {budget_s}s\n    size {}",
        2 * MAX_DEVICES
    );
    t.set(CLAIM_BUDGET, "typeof ether saddr", &budget, &[]);
    let budget6 =
        format!("flags dynamic,timeout\n    timeout {budget_s}s\n    size {MAX_DEVICE_ADDRS}");
    t.set(CLAIM_BUDGET6, "typeof ip6 saddr", &budget6, &[]);
    let dynamic_pin = format!("flags dynamic\n    size {MAX_PORT_PINS}");
    let mut pin_port = Vec::new();
    let mut pinned = Vec::new();
    for (m, port) in &opt.carried.pins {
        pin_port.push(format!("{} . {}", mac(m), quoted(port)?));
        pinned.push(mac(m));
    }
    t.set(
        PIN_PORT,
        "type ether_addr . ifname",
        &dynamic_pin,
        &pin_port,
    );
    t.set(PINNED, "type ether_addr", &dynamic_pin, &pinned);
    if opt.log_group.is_some() {
        let _ = writeln!(
            t.body,
            "  limit {} {{\n    rate {}/second burst {} packets\n  }}",
            super::render::UNKNOWN_BUDGET,
            t.budget.shared().rate,
            t.budget.shared().burst
        );
    }
    for (meter, key) in super::render::EVENT_METERS
        .into_iter()
        .filter(|_| opt.log_group.is_some())
    {
        t.set(
            meter,
            &format!("type {key}"),
            &format!(
                "flags dynamic,timeout\n    timeout {}s\n    size {}",
                t.budget.meter_timeout_s(),
                super::render::EVENT_METER_SIZE
            ),
            &[],
        );
    }

    chains(&mut t, m.site.flags);

    let table = quoted_table(opt.table)?;
    let mut build = String::new();
    // `add` makes the `delete` valid when the table does not exist yet.
    let _ = writeln!(build, "add table netdev {table}");
    let _ = writeln!(build, "delete table netdev {table}");
    let _ = writeln!(build, "table netdev {table} {{\n{}}}", t.body);
    let mut hook = String::new();
    for (i, p) in opt.ports.iter().enumerate() {
        let side = if p.cfg.side == SIDE_DEVICES {
            "from_devices"
        } else {
            "from_upstream"
        };
        let _ = writeln!(
            hook,
            "add chain netdev {table} in_{i} {{ type filter hook ingress device {} priority -500; policy accept; }}",
            quoted(&p.name)?
        );
        let _ = writeln!(hook, "add rule netdev {table} in_{i} jump {side}");
        // A packet to an address a device owns by first use names that device (the `dst_*`
        // chains); any other, none. From a device port, only inside the devices' declared
        // networks, and at an IPv6 link-local address by MAC. (A frame the stage accepted
        // above keeps its VLAN: no owner bit.)
        let (nets4, nets6) = if p.cfg.side == SIDE_DEVICES {
            (DEV_NETS4, DEV_NETS6)
        } else {
            (CLAIM_NETS4, CLAIM_NETS6)
        };
        let _ = writeln!(hook, "add rule netdev {table} in_{i} meta mark set 0");
        let _ = writeln!(
            hook,
            "add rule netdev {table} in_{i} meta protocol ip ip daddr @{nets4} meta mark set ip daddr map @{OWN_INDEX}4"
        );
        let _ = writeln!(
            hook,
            "add rule netdev {table} in_{i} meta protocol ip6 @nh,192,128 @{nets6} meta mark set @nh,192,128 map @{OWN_INDEX}6"
        );
        // From upstream, an address of the devices' declared networks that no device binds
        // or owns (no owner mark): an unknown device's (the XDP program's `to_unowned`,
        // which says why), where the site denies those and has devices known by their MAC
        // alone in the family. Not a link-local address, nor the gateway's own; not from a
        // device's address either (a spoof, refused as such by the `inet` table, as the
        // XDP program checks the source first).
        let flags = m.site.flags;
        if p.cfg.side != SIDE_DEVICES && flags & SITE_F_UNKNOWN_AUDIT == 0 {
            if flags & SITE_F_NO_OWNERS4 == 0 {
                let _ = writeln!(
                    hook,
                    "add rule netdev {table} in_{i} meta protocol ip meta mark 0 ip saddr != @dev4 ip daddr @{DEV_NETS4} ip daddr != 169.254.0.0/16 ip daddr != @{LOCAL4} ip daddr != @dev4 jump {TO_UNOWNED}"
                );
            }
            if flags & SITE_F_NO_OWNERS6 == 0 {
                let _ = writeln!(
                    hook,
                    "add rule netdev {table} in_{i} meta protocol ip6 meta mark 0 ip6 saddr != @dev6 @nh,192,128 @{DEV_NETS6} @nh,192,16 & 0xffc0 != 0xfe80 @nh,192,128 != @{T_LOCAL} ip6 daddr != @dev6 jump {TO_UNOWNED}"
                );
            }
        }
        // From a device port, an IPv6 link-local address names the device the frame is
        // sent to (the XDP program's `destination`; `ownidx6` holds none).
        // Sent to a MAC of no device (and not to the gateway's own), it names no device:
        // `render::LINK_LOCAL_NOBODY`, which opens no flow.
        if p.cfg.side == SIDE_DEVICES {
            let ll4 = format!("meta protocol ip {LINK_LOCAL_UNICAST4}");
            let ll6 = "meta protocol ip6 @nh,192,16 & 0xffc0 == 0xfe80";
            let nobody = super::render::LINK_LOCAL_NOBODY;
            let not_local6 = format!("@nh,192,128 != @{T_LOCAL}");
            for (ll, not_local) in [
                (ll4.as_str(), format!("ip daddr != @{LOCAL4}")),
                (ll6, not_local6.clone()),
            ] {
                let _ = writeln!(
                    hook,
                    "add rule netdev {table} in_{i} {ll} {not_local} meta mark set {nobody}"
                );
                let _ = writeln!(
                    hook,
                    "add rule netdev {table} in_{i} {ll} meta mark set ether daddr map @{}",
                    MAC_INDEX[2]
                );
            }
            // An IPv6 link-local address a device claimed, sent to another MAC than its
            // owner's: `render::LINK_LOCAL_ELSEWHERE`, beside the mark. Not IPv4's: a
            // device known by its MAC alone may claim an upstream host's 169.254 address,
            // and the devices' replies to that host (at the gateway's MAC) would be refused.
            let elsewhere = super::render::LINK_LOCAL_ELSEWHERE;
            let _ = writeln!(
                hook,
                "add rule netdev {table} in_{i} {ll6} {not_local6} @nh,192,128 @{LL_CLAIMED} @nh,192,128 . ether daddr != @{LL_OWNER} meta mark set meta mark | {elsewhere}"
            );
        }
    }
    Ok(Frame {
        table: opt.table.to_string(),
        build,
        hook,
    })
}

/// The chain recording the owner mark of the address `key` (a source, an ARP sender, an
/// NA target) its frame owns: `dst_ip4`, `dst_arp4`, `dst_nh6`, `dst_th6`.
fn dst_owner_chain(key: &str) -> &'static str {
    match key {
        "ip saddr" => "dst_ip4",
        "arp saddr ip" => "dst_arp4",
        "@nh,64,128" => "dst_nh6",
        _ => "dst_th6",
    }
}

/// The elements of the `claimnets4`/`6` and `devnets4`/`6` sets (and of one port's in
/// `claimscope4`/`6`): the ranges of the addresses whose class `keep` keeps, from the peer
/// maps' `DIR_CLAIM` entries of claim scope `scope` (nested prefixes, the longest
/// deciding, flattened).
fn claim_networks(
    m: &MapContents,
    scope: u32,
    keep: impl Fn(u32) -> bool,
) -> (Vec<String>, Vec<String>) {
    // (prefix length, dir, policy, address as a number, class) → the claimable ranges.
    let spans = |bits: u32, entries: &mut dyn Iterator<Item = (u32, u8, u32, u128, u32)>| {
        let prefixes = entries
            .filter(|e| e.1 == DIR_CLAIM && e.2 == scope)
            .map(|(len, _, _, addr, class)| {
                // The address bits the prefix leaves free.
                let free = bits - len.saturating_sub(PEER_KEY_FIXED_BITS).min(bits);
                let rest = u128::MAX.checked_shr(128 - free).unwrap_or(0);
                (addr, addr | rest, keep(class))
            })
            .collect();
        super::ranges::flatten(prefixes)
            .into_iter()
            .filter(|s| s.2)
            .map(|(a, b, _)| (a, b))
    };
    let v4 = spans(
        32,
        &mut m.peer4.iter().map(|(len, k, v)| {
            let addr = u128::from(u32::from_be_bytes(k.addr));
            (*len, k.dir, u32::from_be_bytes(k.policy), addr, v.class)
        }),
    )
    .map(|(a, b)| format!("{}-{}", Ipv4Addr::from(a as u32), Ipv4Addr::from(b as u32)))
    .collect();
    let v6 = spans(
        128,
        &mut m.peer6.iter().map(|(len, k, v)| {
            let addr = u128::from_be_bytes(k.addr);
            (*len, k.dir, u32::from_be_bytes(k.policy), addr, v.class)
        }),
    )
    .map(|(a, b)| format!("0x{a:032x}-0x{b:032x}"))
    .collect();
    (v4, v6)
}

/// The map of owners' device marks (`ownidx4`/`6`) an owned address `key` is kept in.
fn owner_index_map(key: &str) -> String {
    let v = if key.starts_with('@') { 6 } else { 4 };
    format!("{OWN_INDEX}{v}")
}

/// A table name lazaret chose (`lazaret`, `lazaret_b`); checked like an interface name.
fn quoted_table(name: &str) -> Result<String, RenderError> {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(name.to_string())
    } else {
        Err(RenderError::BadName(name.to_string()))
    }
}

const ETH_8021Q: &str = "0x8100";
/// The ICMP errors the XDP program relates to the flow they quote (`parse_quoted`).
const ICMP4_ERRORS: &str =
    "icmp type { destination-unreachable, time-exceeded, parameter-problem }";
const ICMP6_ERRORS: &str =
    "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem }";
/// An ICMPv6 error's quoted packet has an extension header (its Next Header, byte 6 of
/// the quote): the XDP program does not walk it and keys the quoted flow by the header's
/// number, so the error relates to no flow, where conntrack would walk the chain and relate
/// it to the session it quotes. (59, no next header, is no extension header: XDP would key
/// a flow of protocol 59, which only a rule for every protocol allows; conntrack calls such
/// an error invalid.)
const QUOTED6_EXTHDR: &str = "@th,112,8 { 0, 43, 44, 51, 59, 60 }";
/// A later fragment (no transport header) leaves the chain: the rules after it read one.
const LATER_FRAGMENT4_RETURN: &str = "ip frag-off & 0x1fff != 0 return";
const LATER_FRAGMENT6_RETURN: &str = "frag frag-off != 0 return";
const TAG: &str = "{ 0x8100, 0x88a8 }";
/// The chain refusing what upstream sends to an address of the devices' networks no device
/// binds or owns.
const TO_UNOWNED: &str = "to_unowned";
const LINK_LOCAL_CONTROL: &str = "ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00";

fn chains(t: &mut Text, site_flags: u32) {
    for side in [Side::Devices, Side::Upstream] {
        t.chain(&format!("frame_{}", side.name()), |t| {
            frame(t, side, site_flags);
        });
    }
    t.chain("from_upstream", |t| {
        t.line("jump frame_upstream");
        // ARP arriving from upstream is not lazaret's to judge (XDP: pass_unmanaged).
        t.decide(Side::Upstream, "meta protocol arp", Reason::PassUnmanaged);
    });
    // What upstream sends to an address of the devices' networks no device binds or owns
    // (the hooks jump here): a DHCP server's answer to a client passes (a whole packet or
    // a first fragment, whose ports the XDP program reads too), the rest is refused.
    t.chain(TO_UNOWNED, |t| {
        t.line("ip frag-off & 0x1fff == 0 udp sport 67 udp dport 68 return");
        for whole in ["exthdr frag missing", "frag frag-off 0"] {
            t.line(&format!("{whole} udp sport 547 udp dport 546 return"));
        }
        t.decide(Side::Upstream, "", Reason::DenyUnknown);
    });
    let d = Side::Devices;
    // The frame's VLAN in the mark: the tag's VID, or what the port gives untagged and
    // priority-tagged frames. (Again after the `dst_*` chains, which borrow the mark.)
    t.chain("vlan_mark", |t| {
        t.line(&format!(
            "@ll,96,16 {ETH_8021Q} vlan id != 0 meta mark set vlan id"
        ));
        t.line(&format!(
            "@ll,96,16 {ETH_8021Q} vlan id 0 meta mark set iifname map @port_vlan"
        ));
        t.line(&format!(
            "@ll,96,16 != {ETH_8021Q} meta mark set iifname map @port_vlan"
        ));
    });
    t.chain("from_devices", |t| {
        t.line("jump frame_devices");
        t.line("jump vlan_mark");
        // Servers' messages from a device port come before identity, as in the XDP program.
        // Each read from the transport header: of a packet that has one (see
        // `LATER_FRAGMENT4_RETURN`). A DHCP server's message: from the server's port, or
        // to the client's (which a client reads whatever the source port).
        for port in ["sport 67", "dport 68"] {
            let r = format!("ip frag-off & 0x1fff == 0 udp {port}");
            t.decide(d, &r, Reason::DenyRogueDhcp);
        }
        for whole in ["exthdr frag missing", "frag frag-off 0"] {
            for port in ["sport 547", "dport 546"] {
                let r = format!("{whole} udp {port}");
                t.decide(d, &r, Reason::DenyRogueDhcp);
            }
            t.decide(
                d,
                &format!("{whole} icmpv6 type {{ nd-router-advert, nd-redirect }}"),
                Reason::DenyRogueRa,
            );
        }
        t.line("meta protocol arp goto arp_id");
        // What else the frame stage returned: a link-local control frame the site allows.
        t.line("meta protocol != { ip, ip6, arp } goto control_id");
        t.line("meta protocol ip goto ip4_id");
        t.line("meta protocol ip6 goto ip6_id");
    });
    let unknown = if site_flags & SITE_F_UNKNOWN_AUDIT != 0 {
        Reason::UnknownAudit
    } else {
        Reason::DenyUnknown
    };

    // ARP: the sender's own binding only (`judge_arp`). The inet table never sees ARP, so
    // passing it is counted here.
    t.chain("arp_id", |t| {
        t.decide(
            d,
            "ether saddr @devmac arp saddr ether . ether saddr != @samemac",
            Reason::DenySpoof,
        );
        // So too for a MAC that is no device's (where unknown devices are only audited,
        // their ARP passes): nft compares no two fields of a frame, so each such frame
        // records its own source MAC twice and looks its sender hardware address up beside
        // it (a set full under a flood of MACs records none: refused, fail-closed).
        t.line(&format!(
            "ether saddr != @devmac update @{ARP_SENDER} {{ ether saddr . ether saddr }}"
        ));
        t.decide(
            d,
            &format!("ether saddr != @devmac arp saddr ether . ether saddr != @{ARP_SENDER}"),
            Reason::DenySpoof,
        );
        t.line("arp saddr ip 0.0.0.0 ether saddr @devmac jump arp_probe");
        t.line("arp saddr ip . ether saddr . iifname . meta mark @bind4 goto arp_ok");
        t.line("arp saddr ip . ether saddr . iifname @bind4_any goto arp_ok");
        t.line("arp saddr ip . iifname . meta mark @bindnm4 goto arp_ok");
        t.line("arp saddr ip . iifname @bindnm4_any goto arp_ok");
        t.decide(d, "arp saddr ip @dev4", Reason::DenySpoof);
        t.line("arp saddr ip 0.0.0.0 ether saddr . iifname . meta mark @macbind goto arp_ok");
        t.line("arp saddr ip 0.0.0.0 ether saddr . iifname @macbind_any goto arp_ok");
        // Any other address, for a device the inventory binds no IPv4 address, if it owns it.
        for k in [
            "ether saddr . iifname . meta mark @macnoip4",
            "ether saddr . iifname @macnoip4_any",
        ] {
            // Its bridge port first: a frame refused for it claims nothing.
            t.line(&format!("{k} iifname @bridge_ports jump port_pin"));
            t.line(&format!("{k} jump arp_own"));
            t.line(&format!("{k} goto arp_ok"));
        }
        t.decide(d, "ether saddr @devmac", Reason::DenySpoof);
        t.decide(d, "", unknown);
    });
    // A probe of an address bound to its sender's device (by MAC, interface and VLAN, or
    // on any VLAN) returns: it may probe it, and holds nothing.
    let its_binding_returns = |t: &mut Text, target: &str, bind: &str| {
        t.line(&format!(
            "{target} . ether saddr . iifname . meta mark @{bind} return"
        ));
        t.line(&format!(
            "{target} . ether saddr . iifname @{bind}_any return"
        ));
    };
    // An address-conflict probe names the address it asks about in its target: one that is
    // not for its sender to take (the gateway's, another device's binding, another MAC's by
    // first use, or held by another MAC as the first to probe it) is refused, as the XDP
    // program's `probe_of`: a host still probing the address it was given gives it up on
    // such a probe. Before identity for ARP, as the XDP program (a refusal needs no port).
    for (i, (chain, target, local, bind, dev, owner, claimed)) in [
        (
            "arp_probe",
            "arp daddr ip",
            "@local4",
            "bind4",
            "@dev4",
            OWN4,
            CLAIMED4,
        ),
        (
            "dad_probe",
            "@th,64,128",
            "@t_local",
            "t_bind6",
            "@t_dev6",
            LL_OWNER,
            LL_CLAIMED,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (probed, by) = (PROBED[i], PROBED_BY[i]);
        t.chain(chain, |t| {
            t.decide(d, &format!("{target} {local}"), Reason::DenySpoof);
            its_binding_returns(t, target, bind);
            t.decide(d, &format!("{target} {dev}"), Reason::DenySpoof);
            t.line(&format!("{target} . ether saddr @{owner} return"));
            t.decide(d, &format!("{target} @{claimed}"), Reason::DenySpoof);
            // Its own hold, not renewed by its probes.
            t.line(&format!("{target} . ether saddr @{by} return"));
            t.decide(d, &format!("{target} @{probed}"), Reason::DenySpoof);
            // DAD is judged after identity (`nd_target`): the hold at once.
            if i == 1 {
                t.line("jump dad_hold");
            }
        });
    }
    // The first to probe an address no one holds holds it (`hold_probed`), once the frame is
    // known to be its device's (interface, VLAN, bridge port: `arp_ok`, `nd_target`), where
    // it may take it by first use (`probe_of`): a device known by its MAC alone in the
    // family, or any device for an IPv6 link-local address; an address that may be owned,
    // in its interface's networks. Each new hold spends a token of its budget of new
    // addresses; a set full records none, and the probe is refused (fail-closed).
    for (i, (chain, target, may_take, unclaimable)) in [
        (
            "arp_hold",
            "arp daddr ip",
            "",
            vec!["arp daddr ip { 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/3 }".to_string()],
        ),
        (
            "dad_hold",
            "@th,64,128",
            "@th,64,16 & 0xffc0 != 0xfe80 ",
            vec![
                "@th,64,8 0xff".to_string(),
                format!("@th,64,96 {MAPPED6}"),
                format!("@th,64,128 {{ {ZERO6}, {LOOPBACK6} }}"),
            ],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (probed, by) = (PROBED[i], PROBED_BY[i]);
        let (v, scope, owner, bind) = if i == 0 {
            (4, CLAIM_SCOPE4, OWN4, "bind4")
        } else {
            (6, CLAIM_SCOPE6, LL_OWNER, "t_bind6")
        };
        t.chain(chain, |t| {
            // Its own already: its hold, what it owns, its device's binding.
            t.line(&format!("{target} . ether saddr @{by} return"));
            t.line(&format!("{target} . ether saddr @{owner} return"));
            its_binding_returns(t, target, bind);
            t.line(&format!(
                "{may_take}ether saddr . iifname . meta mark != @macnoip{v} ether saddr . iifname != @macnoip{v}_any return"
            ));
            for u in &unclaimable {
                t.line(&format!("{u} return"));
            }
            t.line(&format!("iifname . {target} != @{scope} return"));
            t.line(&format!(
                "update @{CLAIM_BUDGET} {{ ether saddr limit rate over 1/minute burst {CLAIM_BURST} packets }} goto claim_refused"
            ));
            t.line(&format!("ether saddr != @{CLAIM_BUDGET} goto claim_refused"));
            t.line(&format!(
                "add @{probed} {{ {target} }} add @{by} {{ {target} . ether saddr }}"
            ));
            t.line(&format!("{target} . ether saddr != @{by} goto claim_refused"));
        });
    }
    // Link-local control frames only as a device's (`judge_control`): its MAC on its
    // interface and bridge port (not its VLAN: they are sent untagged), and not while it is
    // isolated.
    t.chain("control_id", |t| {
        t.line("ether saddr . iifname @macport goto control_ok");
        t.decide(d, "ether saddr @devmac", Reason::DenySpoof);
        t.decide(d, "", unknown);
    });
    t.chain("control_ok", |t| {
        t.line("iifname @bridge_ports jump port_pin");
        t.decide(
            d,
            &format!("ether saddr @{QUAR_MAC}"),
            Reason::DenyQuarantine,
        );
        t.decide(d, "", Reason::AllowControl);
    });
    t.chain("arp_ok", |t| {
        t.line("iifname @bridge_ports jump port_pin");
        t.line("arp saddr ip 0.0.0.0 jump arp_hold");
        let r = if t.neighbor {
            Reason::AllowNeighbor
        } else {
            Reason::DenyNoRule
        };
        t.decide_sent("", r, "arp saddr ip", 4);
    });

    // IP: `identify_source`. A frame passing identity returns to the kernel (and the inet
    // table judges its flow); the inet table counts it.
    for (f, ip, unspecified) in [("4", "ip", "0.0.0.0"), ("6", "ip6", "::")] {
        t.chain(&format!("ip{f}_id"), |t| {
            let not_ll = if f == "6" {
                " ip6 saddr != fe80::/10"
            } else {
                ""
            };
            t.line(&format!(
                "{ip} saddr != {unspecified}{not_ll} {ip} saddr @dev{f} goto ip{f}_bound"
            ));
            t.line(&format!("ether saddr @devmac goto ip{f}_bymac"));
            if unknown.passes() {
                // Unknown and audited: the inet table reports it.
                t.line("return");
            } else {
                t.decide(d, "", unknown);
            }
        });
        t.chain(&format!("ip{f}_bound"), |t| {
            t.line(&format!(
                "{ip} saddr . ether saddr . iifname . meta mark @bind{f} goto ip{f}_ok"
            ));
            t.line(&format!(
                "{ip} saddr . ether saddr . iifname @bind{f}_any goto ip{f}_ok"
            ));
            t.line(&format!(
                "{ip} saddr . iifname . meta mark @bindnm{f} goto ip{f}_ok"
            ));
            t.line(&format!(
                "{ip} saddr . iifname @bindnm{f}_any goto ip{f}_ok"
            ));
            t.decide(d, "", Reason::DenySpoof);
        });
        t.chain(&format!("ip{f}_bymac"), |t| {
            let zero = if f == "6" {
                "ip6 saddr { ::, fe80::/10 }"
            } else {
                "ip saddr 0.0.0.0"
            };
            let keyed = "ether saddr . iifname . meta mark @macbind";
            let any = "ether saddr . iifname @macbind_any";
            if f == "6" {
                // A link-local source is the sender's only if no other MAC owns it.
                // Its bridge port first: a frame refused for it claims nothing.
                for k in [keyed, any] {
                    t.line(&format!(
                        "ip6 saddr fe80::/10 {k} iifname @bridge_ports jump port_pin"
                    ));
                    t.line(&format!("ip6 saddr fe80::/10 {k} jump own6"));
                }
            }
            t.line(&format!("{zero} {keyed} goto ip{f}_ok"));
            t.line(&format!("{zero} {any} goto ip{f}_ok"));
            // Any other address, for a device the inventory binds none of the family, if it
            // owns it (first use).
            for k in [
                format!("ether saddr . iifname . meta mark @macnoip{f}"),
                format!("ether saddr . iifname @macnoip{f}_any"),
            ] {
                t.line(&format!("{k} iifname @bridge_ports jump port_pin"));
                t.line(&format!("{k} jump own{f}"));
                t.line(&format!("{k} goto ip{f}_ok"));
            }
            t.decide(d, "", Reason::DenySpoof);
        });
    }
    t.chain("ip4_ok", |t| {
        t.line("iifname @bridge_ports jump port_pin");
        t.line(LATER_FRAGMENT4_RETURN);
        // Bypass class: a fragmented error. The check below reads the quoted header, which
        // a first fragment need not hold, and reassembly then hands the whole error to
        // conntrack, which relates it to the flow it quotes. The XDP program relates only
        // an unfragmented error to a flow: a fragmented one is a packet of no flow.
        t.decide_sent(
            &format!("ip frag-off & 0x2000 != 0 {ICMP4_ERRORS}"),
            Reason::DenyNoFlow,
            "ip saddr",
            4,
        );
        // A device's ICMP error is about a packet it received: its source is the quoted
        // packet's destination (XDP: `judge_related`; the destination side conntrack checks).
        t.decide_sent(
            &format!("{ICMP4_ERRORS} ip saddr . @th,192,32 != @same4"),
            Reason::DenyIcmpError,
            "ip saddr",
            4,
        );
    });
    t.chain("ip6_ok", |t| {
        t.line("iifname @bridge_ports jump port_pin");
        t.line(LATER_FRAGMENT6_RETURN);
        t.decide_sent(
            &format!("frag more-fragments 1 {ICMP6_ERRORS}"),
            Reason::DenyNoFlow,
            "ip6 saddr",
            6,
        );
        t.decide_sent(
            &format!("{ICMP6_ERRORS} ip6 saddr . @th,256,128 != @same6"),
            Reason::DenyIcmpError,
            "ip6 saddr",
            6,
        );
        t.decide_sent(
            &format!("{ICMP6_ERRORS} {QUOTED6_EXTHDR}"),
            Reason::DenyNoFlow,
            "ip6 saddr",
            6,
        );
        if t.neighbor {
            t.line(
                "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld-listener-done, mld2-listener-report } goto nd",
            );
        }
    });

    // Neighbor discovery and MLD are link-scope (`judge_ndp`).
    t.chain("nd", |t| {
        let ndp = "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }";
        let mld = "icmpv6 type { mld-listener-report, mld-listener-done, mld2-listener-report }";
        t.decide_sent(
            &format!("{ndp} ip6 hoplimit != 255"),
            Reason::DenyNdScope,
            "ip6 saddr",
            6,
        );
        t.decide_sent(
            &format!("{mld} ip6 hoplimit != 1"),
            Reason::DenyNdScope,
            "ip6 saddr",
            6,
        );
        t.decide_sent(
            &format!("{mld} ip6 daddr != ff00::/8"),
            Reason::DenyNdScope,
            "ip6 saddr",
            6,
        );
        t.line(&format!("{mld} return"));
        t.line("ip6 daddr & ff0f:: == ff02:: goto nd_target");
        t.line("ip6 daddr fe80::/10 goto nd_target");
        t.line("ip6 daddr @local6 goto nd_target");
        t.line("ip6 daddr . iifname . meta mark @onlink6 goto nd_target");
        t.line("ip6 daddr . iifname @onlink6_any goto nd_target");
        t.decide_sent("", Reason::DenyNdScope, "ip6 saddr", 6);
    });
    // An NA advertises only an address of its sender.
    t.chain("nd_target", |t| {
        t.line("icmpv6 type nd-neighbor-solicit ip6 saddr :: jump dad_probe");
        t.line("icmpv6 type != nd-neighbor-advert return");
        t.decide(d, "@th,64,128 @t_local", Reason::DenySpoof);
        t.line("@th,64,128 . ether saddr . iifname . meta mark @t_bind6 return");
        t.line("@th,64,128 . ether saddr . iifname @t_bind6_any return");
        t.line("@th,64,128 . iifname . meta mark @t_bindnm6 return");
        t.line("@th,64,128 . iifname @t_bindnm6_any return");
        t.decide(d, "@th,64,128 @t_dev6", Reason::DenySpoof);
        // A link-local target, or any, for a device the inventory binds no IPv6 address,
        // if it owns it (first use). A device known by its address alone may send with
        // any MAC: its budget is its address's (`na_own_addr`), not the frame's MAC's.
        let ll = "@th,64,16 & 0xffc0 == 0xfe80";
        t.line(&format!(
            "{ll} ip6 saddr . iifname . meta mark @bindnm6 goto na_own_addr"
        ));
        t.line(&format!(
            "{ll} ip6 saddr . iifname @bindnm6_any goto na_own_addr"
        ));
        t.line(&format!("{ll} goto na_own"));
        // Any other target only for a device known by its MAC: one known by its address
        // (which may send with any MAC, a MAC-only neighbour's too) advertises only its own.
        t.decide(
            d,
            "ip6 saddr . iifname . meta mark @bindnm6",
            Reason::DenySpoof,
        );
        t.decide(d, "ip6 saddr . iifname @bindnm6_any", Reason::DenySpoof);
        t.line("ether saddr . iifname . meta mark @macnoip6 goto na_own");
        t.line("ether saddr . iifname @macnoip6_any goto na_own");
        t.decide(d, "", Reason::DenySpoof);
    });
    // First come, first served ownership of an address (RFC 6620; `claim_address`): of the
    // NA's target, of an IPv6 or IPv4 source, of an ARP sender. Never the gateway's (checked
    // before for the NA's target) or one no host has (0/8, loopback, multicast, reserved,
    // broadcast, `::`, IPv4-mapped). A new address spends a token of the sender's budget
    // (`claim_budget` by MAC, `claim_budget6` by address for a device known by its address
    // alone; the XDP program's is by device): one device claiming a flood of addresses
    // would otherwise fill the sets. Whatever a set did not take (a full one) is refused:
    // unrecorded, the address would be anyone's and the budget no one's.
    // What is owned is recorded for the inet table too (the `dst_*` chains).
    let fcfs = |t: &mut Text,
                key: &str,
                owner: &str,
                claimed: &str,
                (who, budget): (&str, &str)| {
        let dst = dst_owner_chain(key);
        t.line(&format!(
            "{key} . ether saddr @{owner} update @{owner} {{ {key} . ether saddr }} update @{claimed} {{ {key} }} goto {dst}"
        ));
        t.decide(d, &format!("{key} @{claimed}"), Reason::DenySpoof);
        // Nor while another MAC holds it as the first to probe it (`held_by_another`).
        let i = usize::from(owner == LL_OWNER);
        let (probed, by) = (PROBED[i], PROBED_BY[i]);
        t.decide(
            d,
            &format!("{key} @{probed} {key} . ether saddr != @{by}"),
            Reason::DenySpoof,
        );
        t.line(&format!(
            "update @{budget} {{ {who} limit rate over 1/minute burst {CLAIM_BURST} packets }} goto claim_refused"
        ));
        t.line(&format!("{who} != @{budget} goto claim_refused"));
        t.line(&format!(
            "add @{owner} {{ {key} . ether saddr }} add @{claimed} {{ {key} }}"
        ));
        t.line(&format!(
            "{key} . ether saddr != @{owner} goto claim_refused"
        ));
        t.line(&format!("{key} != @{claimed} goto claim_refused"));
        // The previous owner's device mark, outliving its claim (`ownidx`, TIMEOUT_DEST_
        // OWNER_NS), goes with it: the new owner's frame writes its own (an update keeps
        // the data of an element it finds). The data given is not compared: a delete
        // finds the element by its key.
        let index = owner_index_map(key);
        t.line(&format!("delete @{index} {{ {key} : meta mark }}"));
        t.line(&format!("goto {dst}"));
    };
    // The owner's device by the address it owns, as the mark the inet table reads
    // (`OWNER_MARK`): found for a packet to that address (the hooks, at their end), as the
    // XDP program's `owned_device`. Not for IPv6 link-local addresses (the hooks name their
    // device by the frame's destination MAC), nor for a device known by its address (no
    // `macidx` entry: the statement does not run). The mark is borrowed: the frame's VLAN
    // again after.
    for key in ["ip saddr", "arp saddr ip", "@nh,64,128", "@th,64,128"] {
        t.chain(dst_owner_chain(key), |t| {
            let map = owner_index_map(key);
            let by = if key.starts_with('@') {
                let at = &key[..key.len() - 4];
                t.line(&format!("{at},16 & 0xffc0 == 0xfe80 return"));
                MAC_INDEX[1]
            } else {
                MAC_INDEX[0]
            };
            t.line(&format!(
                "meta mark set ether saddr map @{by} update @{map} {{ {key} : meta mark }} goto vlan_mark"
            ));
            // Bypass class: a full map records no new owner (its elements outlive the
            // claims' by far), and the address would name no device. The claim's frame
            // is refused instead, as long as there is no room. (A device with no mark
            // here has nothing to record.)
            t.line(&format!(
                "meta mark set ether saddr map @{by} goto claim_refused"
            ));
            t.line("jump vlan_mark");
        });
    }
    let by_mac = ("ether saddr", CLAIM_BUDGET);
    const _: () = assert!(CLAIM_PERIOD_S == 60, "claim_budget's limit reads 1/minute");
    t.chain("claim_refused", |t| t.decide(d, "", Reason::DenySpoof));
    for (chain, budget) in [
        ("na_own", by_mac),
        ("na_own_addr", ("ip6 saddr", CLAIM_BUDGET6)),
    ] {
        t.chain(chain, |t| {
            t.decide(d, "@th,64,8 0xff", Reason::DenySpoof);
            t.decide(d, &format!("@th,64,96 {MAPPED6}"), Reason::DenySpoof);
            let none = format!("@th,64,128 {{ {ZERO6}, {LOOPBACK6} }}");
            t.decide(d, &none, Reason::DenySpoof);
            t.decide(
                d,
                &format!("iifname . @th,64,128 != @{CLAIM_SCOPE6}"),
                Reason::DenySpoof,
            );
            fcfs(t, "@th,64,128", LL_OWNER, LL_CLAIMED, budget);
        });
    }
    t.chain("own6", |t| {
        t.decide(d, "ip6 saddr @local6", Reason::DenySpoof);
        t.decide(
            d,
            "ip6 saddr { ::, ::1, ff00::/8, ::ffff:0.0.0.0/96 }",
            Reason::DenySpoof,
        );
        t.decide(
            d,
            &format!("iifname . @nh,64,128 != @{CLAIM_SCOPE6}"),
            Reason::DenySpoof,
        );
        fcfs(t, "@nh,64,128", LL_OWNER, LL_CLAIMED, by_mac);
    });
    for (chain, key) in [("own4", "ip saddr"), ("arp_own", "arp saddr ip")] {
        t.chain(chain, |t| {
            t.decide(d, &format!("{key} @local4"), Reason::DenySpoof);
            let none = "{ 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/3 }";
            t.decide(d, &format!("{key} {none}"), Reason::DenySpoof);
            t.decide(
                d,
                &format!("iifname . {key} != @{CLAIM_SCOPE4}"),
                Reason::DenySpoof,
            );
            fcfs(t, key, OWN4, CLAIMED4, by_mac);
        });
    }
    // Behind a bridge, the configured port or the one the MAC was first seen on.
    t.chain("port_pin", |t| {
        t.line("ether saddr @portcfg_mac ether saddr . iifname @portcfg return");
        t.decide(d, "ether saddr @portcfg_mac", Reason::DenySpoof);
        t.line("ether saddr != @devmac return");
        t.line(&format!("ether saddr . iifname @{PIN_PORT} return"));
        t.decide(d, &format!("ether saddr @{PINNED}"), Reason::DenySpoof);
        t.line(&format!(
            "add @{PINNED} {{ ether saddr }} add @{PIN_PORT} {{ ether saddr . iifname }}"
        ));
    });
}

/// The parser's checks (`parse.rs`), on both sides.
fn frame(t: &mut Text, side: Side, site_flags: u32) {
    // VLAN tag stack: more than two tags; two (nftables has no QinQ port); an 802.1ad tag
    // alone; a tag other than a priority tag on an access port.
    t.decide(
        side,
        &format!("@ll,96,16 {TAG} @ll,128,16 {TAG} @ll,160,16 {TAG}"),
        Reason::DenyVlanDepth,
    );
    t.decide(
        side,
        &format!("@ll,96,16 {TAG} @ll,128,16 {TAG}"),
        Reason::DenyVlanTag,
    );
    t.decide(side, "@ll,96,16 0x88a8", Reason::DenyVlanTag);
    if side == Side::Devices {
        t.decide(
            side,
            &format!("iifname @access_ports @ll,96,16 {ETH_8021Q} vlan id != 0"),
            Reason::DenyVlanTag,
        );
    }
    // Ethertypes: IPv4, IPv6 and ARP (after at most one tag), and link-local control
    // frames where the site allows them.
    let other = "meta protocol != { ip, ip6, arp }";
    if site_flags & SITE_F_L2_CONTROL != 0 {
        let control = format!("{other} {LINK_LOCAL_CONTROL}");
        if side == Side::Devices {
            // Judged as its device's after the VLAN mark (`control_id`).
            t.line(&format!("{control} return"));
        } else {
            t.decide(side, &control, Reason::AllowControl);
        }
    }
    t.decide(side, other, Reason::DenyEthertype);
    t.decide(
        side,
        "meta protocol arp arp htype != 1",
        Reason::DenyMalformed,
    );
    t.decide(
        side,
        "meta protocol arp arp ptype != ip",
        Reason::DenyMalformed,
    );
    t.decide(
        side,
        "meta protocol arp arp hlen != 6",
        Reason::DenyMalformed,
    );
    t.decide(
        side,
        "meta protocol arp arp plen != 4",
        Reason::DenyMalformed,
    );
    // IPv6 payload length 0 announces a jumbogram (RFC 2675), never needed on a device
    // VLAN; the XDP program refuses it as malformed. On device ports only: this hook runs
    // after GRO, which builds such packets where BIG TCP raised an interface's
    // gro_ipv6_max_size above 64 KiB (a fast uplink, never a device's port), and the XDP
    // program, before GRO, never sees them.
    if side == Side::Devices {
        t.decide(side, "ip6 length 0", Reason::DenyMalformed);
        // From a device port a link-local destination names the device the frame is sent
        // to, by MAC (the hooks): sent to a group MAC it would name none, and a bridge
        // floods it to that device too (XDP: `link_local_in_group_frame`).
        for dst in [LINK_LOCAL_UNICAST4, "ip6 daddr fe80::/10"] {
            let group = format!("@ll,0,8 & 0x01 == 0x01 {dst}");
            t.decide(side, &group, Reason::DenyMalformed);
        }
    }
    // IPv6 extension headers: Hop-by-Hop only first, each of Destination Options and
    // Fragment at most once, no Routing or Authentication header, no unknown one. nft finds
    // the first header of each type, so a repeat shows as a header pointing back at its
    // own type, or at one that points back to it.
    // Bypass class: a Routing header is refused where a header names it, not only where
    // nft finds it. A first fragment whose chain ends in a header naming a Routing header
    // that only the next fragment carries has none for `exthdr rt` to find, nor a
    // transport header for the ICMPv6 checks (nft's walk of the chain fails), and the
    // kernel, whose own walk fails the same way, does not count it truncated (RFC 7112):
    // reassembled, the Routing header and what follows it reached the `inet` table past
    // every check here (a SYN behind it arrived at the server, in a namespace). The XDP
    // parser refuses the header by the number that names it, as these rules now do.
    for m in [
        "exthdr hbh exists ip6 nexthdr != 0",
        "hbh nexthdr { 0, 43, 51 }",
        "dst nexthdr { 0, 43, 51, 60 }",
        "frag nexthdr { 0, 43, 44, 51 }",
        "dst nexthdr 44 frag nexthdr 60",
        "exthdr rt exists",
        "ip6 nexthdr { 43, 51 }",
        "meta l4proto { 135, 139, 140, 253, 254 }",
    ] {
        t.decide(side, m, Reason::DenyIpv6Ext);
    }
    // A fragmented ICMP error to a device from upstream: a packet of no flow, as on XDP
    // (see `ip4_ok`; from a device port it is judged there, after identity). To a host
    // that is no device's it is not lazaret's to judge.
    // A device's address: bound to it, or owned by it (`ownidx`: the XDP program's
    // `device_at`; a lookup of its value, last, as kernels before 6.5 refuse a membership
    // test on a map; the mark it writes on the way is the hook's to set again).
    let to_devices = [
        ("ip daddr @dev4 ", "", "ip6 daddr @dev6 ", ""),
        (
            "ip daddr @claimnets4 ",
            " meta mark set ip daddr map @ownidx4",
            "@nh,192,128 @claimnets6 ",
            " meta mark set @nh,192,128 map @ownidx6",
        ),
    ];
    if side == Side::Upstream {
        for (to4, owned4, to6, owned6) in to_devices {
            t.decide(
                side,
                &format!(
                    "ip saddr != @dev4 {to4}ip frag-off & 0x3fff == 0x2000 {ICMP4_ERRORS}{owned4}"
                ),
                Reason::DenyNoFlow,
            );
            t.decide(
                side,
                &format!(
                    "ip6 saddr != @dev6 {to6}frag frag-off 0 frag more-fragments 1 {ICMP6_ERRORS}{owned6}"
                ),
                Reason::DenyNoFlow,
            );
            // Whole, or an atomic fragment (offset 0, no more), which the XDP program
            // parses as whole.
            for whole in [
                "exthdr frag missing",
                "frag frag-off 0 frag more-fragments 0",
            ] {
                t.decide(
                    side,
                    &format!(
                        "ip6 saddr != @dev6 {to6}{whole} {ICMP6_ERRORS} {QUOTED6_EXTHDR}{owned6}"
                    ),
                    Reason::DenyNoFlow,
                );
            }
        }
    }
    // A fragment that starts inside a TCP header's 20 bytes would rewrite what was judged
    // (RFC 1858, RFC 5722); the kernel's reassembly drops other overlaps and oversize trains.
    t.decide(
        side,
        "ip frag-off & 0x1fff { 1, 2 } ip protocol tcp",
        Reason::DenyFragment,
    );
    t.decide(
        side,
        "frag frag-off { 1, 2 } frag nexthdr tcp",
        Reason::DenyFragment,
    );
    // The transport header's checks, last as in the XDP program's parser. A later fragment
    // has none: nft reads its payload as one all the same (in the netdev family a fragment's
    // offset does not stop `@th`), so a data fragment could be refused for what its bytes
    // happen to look like.
    t.line(LATER_FRAGMENT4_RETURN);
    t.line(LATER_FRAGMENT6_RETURN);
    // A whole ICMP error quoting an IPv4 packet with options, or no IPv4 or IPv6 packet at
    // all: the XDP program does not walk the quoted header (a variable offset there defeats
    // the verifier) and refuses the error as malformed (`parse_quoted`), where conntrack
    // would relate it to the session it quotes.
    t.decide(
        side,
        &format!("ip frag-off & 0x2000 == 0 {ICMP4_ERRORS} @th,64,8 != 0x45"),
        Reason::DenyMalformed,
    );
    for whole in ["exthdr frag missing", "frag more-fragments 0"] {
        t.decide(
            side,
            &format!("{whole} {ICMP6_ERRORS} @th,64,4 != 6"),
            Reason::DenyMalformed,
        );
    }
    // A TCP header shorter than its fixed 20 bytes (XDP: `parse_l4`).
    t.decide(side, "tcp doff < 5", Reason::DenyMalformed);
    // TCP: SYN with FIN or RST.
    t.decide(
        side,
        "tcp flags & (syn | fin) == syn | fin",
        Reason::DenyTcpFlags,
    );
    t.decide(
        side,
        "tcp flags & (syn | rst) == syn | rst",
        Reason::DenyTcpFlags,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_that_could_escape_their_quotes_are_refused() {
        assert_eq!(quoted("icu0").ok(), Some("\"icu0\"".to_string()));
        for bad in ["a\"b", "a b", "a\\b", "", "a/b", "sixteen-chars-xx"] {
            assert!(quoted(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn raw_keys_are_the_addresses_as_integers() {
        assert_eq!(
            raw6(&"fe80::1".parse().expect("addr")),
            "0xfe800000000000000000000000000001"
        );
        assert_eq!(raw4(&Ipv4Addr::new(10, 20, 0, 11)), "0x0a14000b");
    }
}
