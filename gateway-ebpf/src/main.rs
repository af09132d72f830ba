//! lazaret's XDP program: per-device allow-lists, stateful, at line rate.
//!
//! Shape: [`parse`] turns a frame into a [`Pkt`] or a drop reason; [`judge`] decides;
//! [`lazaret_xdp`] is the single exit that counts every verdict and emits events. The decision
//! procedure is documented in `lazaret_abi` and mirrored by the reference classifier in
//! `lazaret::policy::classify`; differential tests hold the two together.
//!
//! Fail closed: whatever the parser cannot judge from a device port is dropped with a reason.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod fast;
mod load;
mod parse;
mod word;

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use core::mem::size_of;
use lazaret_abi::*;
use parse::{Frag, Pkt, L3};
use word::{Addr, Mac};

// === Maps (names and capacities from lazaret_abi) ===

#[map]
static LZ_GEN: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static LZ_SITE: Array<SiteConfig> = Array::with_max_entries(2, 0);
#[map]
static LZ_IFACE: Array<IfaceConfig> = Array::with_max_entries(IFACE_DIRECT, 0);
#[map]
static LZ_IFACE_HIGH: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(MAX_IFACES, 0);
#[map]
static LZ_DEV_MAC: HashMap<MacKey, Device> = HashMap::with_max_entries(2 * MAX_DEVICES, 0);
#[map]
static LZ_DEV_IP4: HashMap<Ip4Key, Device> = HashMap::with_max_entries(2 * MAX_DEVICE_ADDRS, 0);
#[map]
static LZ_DEV_IP6: HashMap<Ip6Key, Device> = HashMap::with_max_entries(2 * MAX_DEVICE_ADDRS, 0);
#[map]
static LZ_DEV_ADDRBITS: Array<AddrBits> = Array::with_max_entries(2, 0);
// Not read by the program (the identity maps hold the records); the controller's copy by id.
#[map]
static LZ_DEVICES: HashMap<DevKey, Device> = HashMap::with_max_entries(2 * MAX_DEVICES, 0);
#[map]
static LZ_DEV_CELL: Array<Device> = Array::with_max_entries(2 * COUNTER_SLOTS, 0);
#[map]
static LZ_DEV_STATE: Array<DevState> = Array::with_max_entries(COUNTER_SLOTS, 0);
#[map]
static LZ_PEER4: LpmTrie<PeerKey4, PeerClass> = LpmTrie::with_max_entries(2 * MAX_PEER_ENTRIES, 0);
#[map]
static LZ_PEER6: LpmTrie<PeerKey6, PeerClass> = LpmTrie::with_max_entries(2 * MAX_PEER_ENTRIES, 0);
#[map]
static LZ_PORTS: LpmTrie<PortKey, RuleRef> = LpmTrie::with_max_entries(2 * MAX_PORT_ENTRIES, 0);
// The full-length entries of the three tries (see lazaret_abi, *Exact entries in hashes*).
// Not preallocated: a preallocated port hash of this capacity would pin ~150 MB.
#[map]
static LZ_PEER4_HOST: HashMap<PeerKey4, PeerClass> =
    HashMap::with_max_entries(2 * MAX_PEER_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static LZ_PEER6_HOST: HashMap<PeerKey6, PeerClass> =
    HashMap::with_max_entries(2 * MAX_PEER_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static LZ_PORTS_EXACT: HashMap<PortKey, RuleRef> =
    HashMap::with_max_entries(2 * MAX_PORT_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static LZ_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
#[map]
static LZ_EST_FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(MAX_EST_FLOWS, 0);
#[map]
static LZ_PROMOTE: LruHashMap<u64, TokenBucket> =
    LruHashMap::with_max_entries(MAX_PROMOTE_BUCKETS, 0);
#[map]
static LZ_FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(MAX_FRAGS, 0);
#[map]
static LZ_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);
#[map]
static LZ_DEV_COUNT: PerCpuArray<DevCounters> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);
#[map]
static LZ_RULE_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2 * MAX_RULES, 0);
#[map]
static LZ_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
#[map]
static LZ_EV_BUCKET: LruHashMap<u64, TokenBucket> = LruHashMap::with_max_entries(MAX_EV_BUCKETS, 0);
/// Managed devices' event buckets by cell: every denied packet of a device is reported
/// (within its rate), and an array lookup is inlined where the hash's is a kernel call.
#[map]
static LZ_DEV_EVBUCKET: Array<TokenBucket> = Array::with_max_entries(COUNTER_SLOTS, 0);
/// Managed devices' budgets of new addresses to own by first use, by cell.
#[map]
static LZ_DEV_CLAIM: Array<TokenBucket> = Array::with_max_entries(COUNTER_SLOTS, 0);
/// The budget all sources without a device share, after their own (see `MAP_EV_UNKNOWN`).
#[map]
static LZ_EV_UNKNOWN: Array<TokenBucket> = Array::with_max_entries(1, 0);
/// Per-CPU scratch space for the parsed packet: the BPF stack (512 bytes for the whole call
/// chain) cannot hold it next to the lookup keys.
#[map]
static LZ_SCRATCH: PerCpuArray<Pkt> = PerCpuArray::with_max_entries(1, 0);
#[map]
static LZ_EV_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EV_STATS_LEN, 0);
#[map]
static LZ_LOCAL: HashMap<LocalKey, u32> = HashMap::with_max_entries(MAX_LOCAL_ADDRS, 0);
#[map]
static LZ_LL_OWNER: LruHashMap<LlKey, LlOwner> = LruHashMap::with_max_entries(MAX_LL_OWNERS, 0);
#[map]
static LZ_PROBED: LruHashMap<LlKey, LlOwner> = LruHashMap::with_max_entries(MAX_LL_OWNERS, 0);
#[map]
static LZ_PORT_PIN: HashMap<PinKey, PortPin> = HashMap::with_max_entries(MAX_PORT_PINS, 0);

/// The outcome of judging one frame.
#[must_use]
struct Verdict {
    reason: Reason,
    /// Device the frame was attributed to (`Dev::NONE`: none).
    dev: Dev,
    /// Rule that decided, or NO_RULE.
    rule: u32,
    /// DIR_* of the flow seen from `dev`, with `REJUDGED` set for a flow admitted
    /// earlier and refused when judged again (a bit of this field, not a field of its own:
    /// one more field to initialise costs every verdict instructions).
    dir: u8,
    /// Whether the verdict is worth an event (denies, audits, new learned flows, …).
    report: bool,
    /// A new flow of a device in learn mode: reported as a learn event even when allowed.
    learn: bool,
}

/// `Verdict::dir`'s bit for a flow admitted earlier and refused when judged again under a
/// new policy or device state (`EVENT_F_REJUDGED`): not the device's deviation, and not
/// paid from its budget.
const REJUDGED: u8 = 0x80;

impl Verdict {
    const fn new(reason: Reason) -> Self {
        Verdict {
            reason,
            dev: Dev::NONE,
            rule: NO_RULE,
            dir: DIR_DEVICE_INIT,
            report: !reason.passes(),
            learn: false,
        }
    }
    const fn dev(reason: Reason, dev: Dev) -> Self {
        let mut v = Verdict::new(reason);
        v.dev = dev;
        v
    }
}

/// A device as a verdict names it: its id (events, rate limits) and its cell (counters and runtime state).
#[derive(Clone, Copy)]
struct Dev {
    /// 0: no device.
    id: u64,
    cell: u16,
}

impl Dev {
    const NONE: Dev = Dev { id: 0, cell: 0 };

    #[inline(always)]
    fn of(d: &Device) -> Dev {
        Dev {
            id: d.id,
            cell: d.cell,
        }
    }
}

/// Per-packet context read once: the active slot and its site settings.
struct Gen {
    slot: u8,
    site: &'static SiteConfig,
    /// The clock, read once per packet (see `now`).
    now: u64,
    /// The fast path looked this packet's flow up in the established table and found
    /// nothing: the full path looks in the new table first (see `FlowLookup::of`).
    est_missed: bool,
}

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_xdp(ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    // An interface lazaret was not told about is a device port with the defaults (fail
    // closed): a missing entry, or an unset (zero) one of the array, which is the same.
    let iface = if ifindex < IFACE_DIRECT {
        // An array lookup the verifier inlines: no hash on the hot path.
        LZ_IFACE.get(ifindex).copied()
    } else {
        // SAFETY: hash-map lookups return pointers into the map that stay valid for this
        // run.
        unsafe { LZ_IFACE_HIGH.get(ifindex) }.copied()
    }
    .unwrap_or(IfaceConfig::new(SIDE_DEVICES));
    let side = iface.side;
    // Read the generation switch exactly once: the whole packet is judged by this slot.
    let slot = match LZ_GEN.get(0) {
        Some(s) => (*s & 1) as u8,
        None => 0,
    };
    // The slot's settings in place, not copied: the judge's BPF function and this one
    // share the 512-byte stack.
    let Some(site) = LZ_SITE.get(u32::from(slot)) else {
        // Cannot happen (a two-element array has slots 0 and 1); fail closed if it does.
        return xdp_action::XDP_DROP;
    };
    let mut gen = Gen {
        slot,
        site,
        now: now(),
        est_missed: false,
    };
    let len = (ctx.data_end() - ctx.data()) as u64;
    let fast = fast::established(ctx.ctx, &iface, ifindex, &mut gen, len);
    if fast == fast::FLOW {
        return xdp_action::XDP_PASS;
    }

    let Some(pkt) = LZ_SCRATCH.get_ptr_mut(0) else {
        // Cannot happen (a one-element array always has slot 0); fail closed if it does.
        return xdp_action::XDP_DROP;
    };
    // SAFETY: this CPU's scratch slot; XDP runs to completion without preemption.
    let pkt = unsafe { &mut *pkt };
    // What the fast path parsed is in the scratch slot already (`fast::hand_over`).
    let parsed = if fast == fast::PARSED {
        None
    } else {
        parse::parse(ctx.ctx, &iface, ifindex, pkt)
    };
    let (verdict, pkt) = match parsed {
        None => (judge(&gen, pkt), Some(&*pkt)),
        Some(reason) => (Verdict::new(reason), None),
    };
    account(&gen, &verdict, side, len);
    if verdict.report {
        report(&gen, &verdict, side, pkt, &ctx);
    }
    if verdict.reason.passes() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

// === Judging ===

/// The verdict on a parsed frame. A BPF function of its own for the reason `parse` is (see
/// there): inlined, its many exits merged into the seven fields of one verdict, which
/// LLVM stored to the stack before every branch, taken or not. Called, each exit writes
/// its verdict once, through the caller's pointer.
#[inline(never)]
fn judge(gen: &Gen, pkt: &Pkt) -> Verdict {
    let v = match pkt.l3 {
        L3::Arp => judge_arp(gen, pkt),
        L3::Control => judge_control(gen, pkt),
        L3::Ip => judge_ip(gen, pkt),
    };
    clear_r0();
    v
}

/// A BPF function returning nothing (the verdict goes through the caller's pointer) leaves
/// in R0 whatever LLVM last kept there, and the verifier refuses a function that returns
/// with a stack pointer in R0 ("cannot return stack pointer to the caller"): clear it on
/// the way out. Placed last, R0 is clobbered after every other use; a scalar the caller
/// never reads costs the verifier no states. (Returning a value the caller reads instead
/// took the verifier past its limit: it tracks each path's value. Were LLVM to use R0
/// again after this, the program would fail to load, in every test, not misjudge.)
#[inline(always)]
fn clear_r0() {
    // SAFETY: writes R0 only, which is declared clobbered.
    unsafe { core::arch::asm!("r0 = 0", out("r0") _, options(nomem, nostack, preserves_flags)) };
}

/// IEEE 802.1 link-local control frames (STP, LACP, 802.1X, LLDP), where the site allows
/// them: from upstream as they come; from a device port only as its device's (its MAC, on
/// its interface and bridge port), and not while the device is isolated.
///
/// Bypass class: passed by their destination MAC alone, a host the inventory does not
/// know, one using a device's MAC from another port, or an isolated device would still
/// speak to the gateway's bridge and agents (a spanning-tree topology change makes the
/// bridge flood every port's unicast for a while; an LLDP frame writes what an operator
/// reads of the device). Not the VLAN: these frames are sent untagged, on a trunk too,
/// whatever VLAN the device's traffic is bound to (and carry nothing a VLAN would reach).
/// Not a restricted device's: 802.1X re-authentication must go on under a restriction.
#[inline(always)]
fn judge_control(gen: &Gen, pkt: &Pkt) -> Verdict {
    if gen.site.flags & SITE_F_L2_CONTROL == 0 {
        return Verdict::new(Reason::DenyEthertype);
    }
    if pkt.side == SIDE_UPSTREAM {
        return Verdict::new(Reason::AllowControl);
    }
    let Some(dev) = lookup_mac(gen.slot, pkt.src_mac) else {
        return unknown_source(gen);
    };
    let if_ok = dev.ifindex == IFINDEX_ANY || dev.ifindex == pkt.ifindex;
    if !(if_ok && on_its_port(gen, pkt, dev)) {
        return Verdict::dev(Reason::DenySpoof, Dev::of(dev));
    }
    // The device's cell: an array lookup the verifier inlines.
    let isolated = LZ_DEV_STATE
        .get(u32::from(dev.cell))
        .is_some_and(|s| s.quarantine == QUARANTINE_ISOLATE);
    if isolated {
        Verdict::dev(Reason::DenyQuarantine, Dev::of(dev))
    } else {
        Verdict::dev(Reason::AllowControl, Dev::of(dev))
    }
}

/// ARP from a device port passes only for the sender's own binding.
#[inline(always)]
fn judge_arp(gen: &Gen, pkt: &Pkt) -> Verdict {
    if pkt.side == SIDE_UPSTREAM {
        return Verdict::new(Reason::PassUnmanaged);
    }
    // The ARP sender hardware address must be the frame's source: a mismatch is a classic
    // poisoning trick (the frame passes switch port security, the ARP payload lies).
    if pkt.arp_sha != pkt.src_mac {
        let dev = mac_device(gen.slot, pkt.src_mac);
        return Verdict::dev(Reason::DenySpoof, dev);
    }
    // An address-conflict probe (RFC 5227: sender address 0.0.0.0) names in its target the
    // address it asks about. Its device by its MAC, as `identify_source` would find it (before
    // it: there, every way through it multiplies what the verifier walks here). A probe of
    // an address its sender may take makes it the holder where the frame is its device's
    // (`in_place`, all `identify_source` asks of a probe: a frame refused for its port or
    // VLAN holds nothing in its name).
    if pkt.src.is_zero() {
        if let Some(dev) = lookup_mac(gen.slot, pkt.src_mac) {
            let refused = match probe_of(gen, pkt, FAMILY_V4, &pkt.dst, dev) {
                PROBE_REFUSED => true,
                PROBE_FREE => {
                    in_place(gen, pkt, dev)
                        && !hold_probed(gen, FAMILY_V4, &pkt.dst, pkt.src_mac, Dev::of(dev))
                }
                _ => false,
            };
            if refused {
                return Verdict::dev(Reason::DenySpoof, Dev::of(dev));
            }
        }
    }
    match identify_source(gen, pkt) {
        Ok((dev, _)) => {
            if gen.site.flags & SITE_F_NEIGHBOR != 0 {
                let mut v = Verdict::dev(Reason::AllowNeighbor, Dev::of(dev));
                v.report = false;
                v
            } else {
                Verdict::dev(Reason::DenyNoRule, Dev::of(dev))
            }
        }
        Err(v) => v,
    }
}

#[inline(always)]
fn judge_ip(gen: &Gen, pkt: &Pkt) -> Verdict {
    if pkt.side == SIDE_DEVICES {
        // Servers' messages from a device port: a rogue DHCP server or router. A server
        // speaks from its port (a relay too) and to the client's; a client reads what
        // arrives at its port whatever the source port, so both are refused.
        let (server, client) = if pkt.family == FAMILY_V4 {
            (67, 68)
        } else {
            (547, 546)
        };
        if pkt.proto == PROTO_UDP && (pkt.sport == server || pkt.dport == client) {
            let dev = mac_device(gen.slot, pkt.src_mac);
            return Verdict::dev(Reason::DenyRogueDhcp, dev);
        }
        if pkt.proto == PROTO_ICMPV6 && (pkt.icmp_type == 134 || pkt.icmp_type == 137) {
            let dev = mac_device(gen.slot, pkt.src_mac);
            return Verdict::dev(Reason::DenyRogueRa, dev);
        }
    }

    // Identity: who is the managed end this frame is judged for? (And whether the source's
    // device is the one its address names, for the flow entry: see FLOW_F_ADDR_A.)
    // The flow lookup of an upstream packet that may take the shortcut, kept for judge_flow
    // when it does not (one lookup per packet, either way).
    let mut early = Early::NONE;
    let (src_dev, src_by_addr) = if pkt.side == SIDE_DEVICES {
        match identify_source(gen, pkt) {
            Ok((dev, by_addr)) => (Some(dev), by_addr),
            Err(v) => return v,
        }
    } else {
        if pkt.frag == Frag::None && !pkt.related {
            let lookup = FlowLookup::of(gen, pkt);
            if let Some(v) = upstream_reply(gen, pkt, &lookup) {
                return v;
            }
            early = Early::of(&lookup);
        }
        // Devices are never upstream: a managed source address from there is forged (it
        // would otherwise open flows as the device). Not one a device owns by first use:
        // where the site declares no devices' networks, a device may claim a server's
        // address, which would then be refused everything it sends.
        if let Some(dev) = lookup_ip_device(gen.slot, pkt.family, &pkt.src) {
            return Verdict::dev(Reason::DenySpoof, Dev::of(dev));
        }
        (None, false)
    };
    // On a device port the source is a managed device, so the destination's device only
    // matters when a flow is new or re-judged: judge_flow looks it up then (one or two map
    // lookups saved on every packet of an established flow).
    let dst_dev = if pkt.side == SIDE_DEVICES {
        None
    } else {
        device_at(gen, pkt.family, &pkt.dst)
    };
    // Compare ids, not the Option<&Device> pointers: LLVM folds two null checks into
    // `p1 | p2 == 0`, and the verifier rejects arithmetic on map-value pointers.
    if dev_id(&src_dev, &dst_dev).id == 0 {
        if to_unowned(gen, pkt) {
            return Verdict::new(Reason::DenyUnknown);
        }
        return Verdict::new(Reason::PassUnmanaged);
    }

    // NDP for the device's own addresses (the neighbor-discovery essential).
    if pkt.proto == PROTO_ICMPV6 && parse::is_neighbor_icmpv6(pkt.icmp_type) {
        if let Some(dev) = src_dev {
            if pkt.side == SIDE_DEVICES {
                return judge_ndp(gen, pkt, dev);
            }
        }
    }

    // What a fragment train is judged under, read here, before the flow stage: after it,
    // every one of its exits would walk the lookups again (verifier states).
    // Non-first fragments carry no ports: they follow their train's first fragment.
    if let Frag::Later = pkt.frag {
        let src_id = src_dev.map_or(0, |d| d.id);
        return judge_later_fragment(gen, pkt, dev_id(&src_dev, &dst_dev), src_id);
    }

    if pkt.related {
        return judge_related(gen, pkt, &src_dev, &dst_dev);
    }
    let lookup = if early.done {
        FlowLookup::found_early(pkt, early)
    } else {
        FlowLookup::of(gen, pkt)
    };
    let v = judge_flow(gen, pkt, &src_dev, &dst_dev, src_by_addr, lookup);
    if let Frag::First = pkt.frag {
        let train = FragValue {
            last_seen_ns: gen.now,
            reason: v.reason as u8,
            echo: pkt.echo,
            hdr_end: pkt.frag_at as u16,
            sport: pkt.sport,
            dport: pkt.dport,
        };
        let _ = LZ_FRAGS.insert(frag_key(pkt), train, 0);
    }
    v
}

/// A fragment after the first follows its train: it passes when the first fragment passed
/// and its flow is still live and current, and it does not start inside the first
/// fragment's upper-layer header.
#[inline(always)]
fn judge_later_fragment(gen: &Gen, pkt: &Pkt, dev: Dev, src_id: u64) -> Verdict {
    // SAFETY: see LZ_IFACE_HIGH above.
    let Some(train) = (unsafe { LZ_FRAGS.get(frag_key(pkt)) }) else {
        return Verdict::dev(Reason::DenyFragment, dev);
    };
    // Starting inside the first fragment's upper-layer header would rewrite it after it
    // was judged (RFC 1858, RFC 5722).
    if pkt.frag_at < u32::from(train.hdr_end) {
        return Verdict::dev(Reason::DenyFragment, dev);
    }
    // Bypass class: a train whose first fragment passed before a quarantine or a reload
    // would carry the rest of its datagram (up to 64 KiB, written after the fact) past
    // the state that now forbids it, for as long as the receiver reassembles. Its flow
    // says whether it still may: the flow a quarantine or a reload would judge again on
    // its next packet (its ports, which later fragments lack, are in the train).
    let (key, src_is_a) = normalized_key(
        (&pkt.src, train.sport),
        (&pkt.dst, train.dport),
        (pkt.proto, pkt.family),
        train.echo,
    );
    // Sent to another device's MAC than the flow names there, it would reach a device
    // whose policy never judged the train (`sent_elsewhere`).
    let live = live_flow(gen, &key)
        .is_some_and(|f| flow_is_current(gen, f) && !sent_elsewhere(gen, pkt, f, src_is_a, src_id));
    match Reason::from_u8(train.reason) {
        Some(r) if live && r.passes() => {
            let mut v = Verdict::new(r);
            v.dev = dev;
            v.report = false;
            v
        }
        _ => Verdict::dev(Reason::DenyFragment, dev),
    }
}

#[inline(always)]
fn dev_id(src: &Option<&'static Device>, dst: &Option<&'static Device>) -> Dev {
    match (src, dst) {
        (Some(d), _) => Dev::of(d),
        (None, Some(d)) => Dev::of(d),
        (None, None) => Dev::NONE,
    }
}

/// NS, NA, RS and MLD from a device (identify_source checked its source): link-scope only,
/// and an NA may only advertise an address of the device.
#[inline(always)]
fn judge_ndp(gen: &Gen, pkt: &Pkt, dev: &'static Device) -> Verdict {
    if gen.site.flags & SITE_F_NEIGHBOR == 0 {
        return Verdict::dev(Reason::DenyNoRule, Dev::of(dev));
    }
    // Bypass class: neighbor discovery passed to any destination is routed like any packet,
    // carrying whatever it holds past the policy. NDP is link-scope (RFC 4861 §7.1: hop
    // limit 255, which a routed packet cannot keep) and MLD is sent with hop limit 1 (RFC
    // 3810 §5), which no router forwards.
    let link_scope = match pkt.icmp_type {
        133 | 135 | 136 => pkt.hop_limit == 255 && on_link(gen, pkt),
        _ => pkt.hop_limit == 1 && pkt.dst.byte(0) == 0xff,
    };
    if !link_scope {
        return Verdict::dev(Reason::DenyNdScope, Dev::of(dev));
    }
    // Duplicate address detection's probe (RFC 4862: an NS from `::`) names in its target
    // the address it asks about.
    if pkt.icmp_type == 135 && pkt.src.is_zero() {
        let target = &pkt.nd_target;
        let refused = match probe_of(gen, pkt, FAMILY_V6, target, dev) {
            PROBE_REFUSED => true,
            PROBE_FREE => !hold_probed(gen, FAMILY_V6, target, pkt.src_mac, Dev::of(dev)),
            _ => false,
        };
        if refused {
            return Verdict::dev(Reason::DenySpoof, Dev::of(dev));
        }
    }
    // An NA for an address that is not the device's rewrites its neighbours' caches: the
    // router's link-local address, another device's, or an unowned one it claims first.
    if pkt.icmp_type == 136 {
        let target = &pkt.nd_target;
        let own = match lookup_ip_device(gen.slot, FAMILY_V6, target) {
            Some(owner) => owner.id == dev.id,
            None => {
                (parse::is_link_local6(target) || dev.flags & DEV_F_NO_IP6 != 0)
                    && claim_address(
                        gen,
                        (FAMILY_V6, target),
                        in_claim_networks(gen.slot, pkt.claim_scope, FAMILY_V6, target),
                        pkt.src_mac,
                        Dev::of(dev),
                    )
            }
        };
        if !own {
            return Verdict::dev(Reason::DenySpoof, Dev::of(dev));
        }
    }
    let mut v = Verdict::dev(Reason::AllowNeighbor, Dev::of(dev));
    v.report = false;
    v
}

/// [`probe_of`]: the probe passes (an address its sender holds, or one it may not take).
const PROBE_PASSES: u8 = 0;
/// [`probe_of`]: the probe is refused.
const PROBE_REFUSED: u8 = 1;
/// [`probe_of`]: an address no one holds that its sender may take: it holds it
/// ([`hold_probed`]) once the frame is known to be its.
const PROBE_FREE: u8 = 2;

/// What an address-conflict probe (an ARP probe, a DAD neighbor solicitation) from the
/// frame's MAC, of device `dev`, asks about `target`: refused for an address that is not
/// for it to take (the gateway's, one the inventory binds to another device, one another
/// MAC owns by first use or holds as the first to probe it); free for an address no one
/// holds that it may take by first use (claimable, in its interface's networks, a
/// link-local one or one of a family its device has none bound in).
///
/// Bypass class (a denial of service; FCFS SAVI, RFC 6620, drops such probes too): a host
/// still probing the address it was given takes such a probe for a conflict and gives the
/// address up (a DHCP client declines it, IPv6 marks it duplicate), so a device sending
/// them at every boot or renewal of its neighbours, or of the gateway's addresses, keeps
/// them off the network; a device that sees a neighbour probe a new address (a DHCP lease
/// not yet used, a link-local address at boot: the probe is broadcast or multicast) would
/// answer with a probe of its own, or take the address, but the first to probe it holds it.
#[inline(always)]
fn probe_of(gen: &Gen, pkt: &Pkt, family: u8, target: &Addr, dev: &Device) -> u8 {
    if is_local(family, target) {
        return PROBE_REFUSED;
    }
    if let Some(owner) = lookup_ip_device(gen.slot, family, target) {
        return if owner.id == dev.id {
            PROBE_PASSES
        } else {
            PROBE_REFUSED
        };
    }
    let key = word::owner_key(family, target);
    // SAFETY: see LZ_IFACE_HIGH above.
    if let Some(o) = unsafe { LZ_LL_OWNER.get(key) } {
        if !expired(gen.now, o.last_seen_ns, TIMEOUT_LL_OWNER_NS) {
            return if Mac::of_owner(o) == pkt.src_mac {
                PROBE_PASSES
            } else {
                PROBE_REFUSED
            };
        }
    }
    // SAFETY: as above.
    if let Some(h) = unsafe { LZ_PROBED.get(key) } {
        if !expired(gen.now, h.last_seen_ns, TIMEOUT_PROBE_HOLD_NS) {
            // Its own hold is not renewed by its probes.
            return if Mac::of_owner(h) == pkt.src_mac {
                PROBE_PASSES
            } else {
                PROBE_REFUSED
            };
        }
    }
    let may_take = (family == FAMILY_V6 && parse::is_link_local6(target))
        || dev.flags & no_addr_flag(family) != 0;
    if may_take
        && parse::is_claimable(family, target)
        && in_claim_networks(gen.slot, pkt.claim_scope, family, target)
    {
        PROBE_FREE
    } else {
        PROBE_PASSES
    }
}

/// RFC 6620's tentative binding: `mac` holds `target`, which no one holds, as the first to
/// probe it, for TIMEOUT_PROBE_HOLD_NS; a new hold spends a token of `dev`'s budget of new
/// addresses, so a device holds no more addresses by probing them than it could take;
/// `false` when there is none left. A BPF function of its own, as [`held_by_another`].
#[inline(never)]
fn hold_probed(gen: &Gen, family: u8, target: &Addr, mac: Mac, dev: Dev) -> bool {
    // An expired hold is overwritten; of two CPUs probing at once, the later stands.
    claim_token(gen, dev)
        && LZ_PROBED
            .insert(
                word::owner_key(family, target),
                word::ll_owner(mac, gen.now),
                0,
            )
            .is_ok()
}

/// Whether another MAC than `mac` holds the address of `key` tentatively
/// ([`hold_probed`]): no one takes it meanwhile. A BPF function of its own: inlined into
/// `claim_address`'s two ways of taking an address, it grew what the verifier walks by
/// more than its ceiling's headroom.
#[inline(never)]
fn held_by_another(gen: &Gen, key: LlKey, mac: Mac) -> bool {
    // SAFETY: see LZ_IFACE_HIGH above.
    match unsafe { LZ_PROBED.get(key) } {
        Some(h) => {
            Mac::of_owner(h) != mac && !expired(gen.now, h.last_seen_ns, TIMEOUT_PROBE_HOLD_NS)
        }
        None => false,
    }
}

/// Whether an NS, NA or RS is addressed on its link: a link-scope multicast group, a
/// link-local address, one of the gateway's addresses, or a device behind the same
/// interface and VLAN.
#[inline(always)]
fn on_link(gen: &Gen, pkt: &Pkt) -> bool {
    let dst = &pkt.dst;
    if parse::is_link_scope_multicast6(dst) || parse::is_link_local6(dst) {
        return true;
    }
    if is_local(FAMILY_V6, dst) {
        return true;
    }
    match lookup_ip_device(gen.slot, FAMILY_V6, dst) {
        Some(d) => {
            (d.ifindex == IFINDEX_ANY || d.ifindex == pkt.ifindex)
                && (d.vlan == VLAN_ANY || d.vlan == pkt.vlan)
        }
        None => false,
    }
}

/// Whether `addr` is one of the gateway's own addresses.
#[inline(always)]
fn is_local(family: u8, addr: &Addr) -> bool {
    // SAFETY: see LZ_IFACE_HIGH above.
    unsafe { LZ_LOCAL.get(word::local_key(family, addr)) }.is_some()
}

/// First come, first served (RFC 6620): `mac` (of device `dev`) may use `addr` (a
/// link-local address, or any address of a family its device has none bound in) unless it
/// is the gateway's, not claimable, outside the devices' networks, another MAC used it
/// within TIMEOUT_LL_OWNER_NS, or another MAC holds it tentatively ([`hold_probed`]);
/// using it makes (or keeps) `mac` its owner, a new address within the device's budget.
/// `in_nets` is [`in_claim_networks`] of the address, asked by the caller: called from
/// here, inside `identify_source`'s closure (a BPF function of its own), its frame would be
/// a fourth on the call chain, past the verifier's 512 bytes.
/// See lazaret_abi, *Addresses owned by first use*.
#[inline(always)]
fn claim_address(
    gen: &Gen,
    (family, addr): (u8, &Addr),
    in_nets: bool,
    mac: Mac,
    dev: Dev,
) -> bool {
    if !in_nets || !parse::is_claimable(family, addr) || is_local(family, addr) {
        return false;
    }
    let key = word::owner_key(family, addr);
    match LZ_LL_OWNER.get_ptr_mut(key) {
        Some(o) => {
            // SAFETY: pointer from a successful lookup in this program run.
            let o = unsafe { &mut *o };
            let live = !expired(gen.now, o.last_seen_ns, TIMEOUT_LL_OWNER_NS);
            if Mac::of_owner(o) == mac && live {
                *o = word::ll_owner(mac, gen.now);
                return true;
            }
            // Another MAC's: taken only once it is left unused. Left unused, its own or
            // another's, it is taken as a new address (as the frame stage's claim of an
            // expired element), and not while another MAC holds it tentatively.
            if live || held_by_another(gen, key, mac) || !claim_token(gen, dev) {
                return false;
            }
            *o = word::ll_owner(mac, gen.now);
            true
        }
        // BPF_NOEXIST: of two MACs claiming an address at once on two CPUs, one wins.
        None => {
            !held_by_another(gen, key, mac)
                && claim_token(gen, dev)
                && LZ_LL_OWNER
                    .insert(key, word::ll_owner(mac, gen.now), u64::from(BPF_NOEXIST))
                    .is_ok()
        }
    }
}

/// One token of `dev`'s budget of new addresses (CLAIM_BURST, then one every
/// CLAIM_PERIOD_S): the bucket's clock runs CLAIM_PERIOD_S times slower than the program's,
/// so its rate of one token a second is one a period.
#[inline(always)]
fn claim_token(gen: &Gen, dev: Dev) -> bool {
    let Some(b) = LZ_DEV_CLAIM.get_ptr_mut(u32::from(dev.cell)) else {
        return false;
    };
    // SAFETY: an array slot; races between CPUs only blur the rate a little.
    let b = unsafe { &mut *b };
    let now = gen.now / CLAIM_PERIOD_S;
    let burst_milli = u64::from(CLAIM_BURST) * 1000;
    if b.last_ns == 0 {
        b.tokens_milli = burst_milli - 1000;
        b.last_ns = now;
        return true;
    }
    take_from(now, b, 1, burst_milli)
}

/// Whether a frame with `dev`'s MAC is where `dev` is: its VLAN, its interface, its bridge
/// port (`identify_source` of a device found by its MAC).
#[inline(always)]
fn in_place(gen: &Gen, pkt: &Pkt, dev: &Device) -> bool {
    let vlan_ok = dev.vlan == VLAN_ANY || dev.vlan == pkt.vlan;
    let if_ok = dev.ifindex == IFINDEX_ANY || dev.ifindex == pkt.ifindex;
    vlan_ok && if_ok && on_its_port(gen, pkt, dev)
}

/// Behind a bridge, a device must arrive on its port: the configured one, else the one its
/// MAC was first seen on (pinned now if it has none). See lazaret_abi, *Bridge ports*.
#[inline(always)]
fn on_its_port(gen: &Gen, pkt: &Pkt, dev: &Device) -> bool {
    if pkt.port == pkt.ifindex {
        // Not a bridge port: the interface binding is the whole identity.
        return true;
    }
    if dev.port_ifindex != IFINDEX_ANY {
        return dev.port_ifindex == pkt.port;
    }
    if dev.flags & DEV_F_HAS_MAC == 0 {
        return true;
    }
    pin_port(gen, pkt, Mac::of_device(dev))
}

#[inline(always)]
fn pin_port(gen: &Gen, pkt: &Pkt, mac: Mac) -> bool {
    let key = word::pin_key(mac);
    // SAFETY: see LZ_IFACE_HIGH above.
    match unsafe { LZ_PORT_PIN.get(key) } {
        Some(pin) => pin.ifindex == pkt.port,
        None => {
            let pin = PortPin {
                ifindex: pkt.port,
                _pad: 0,
                since_ns: gen.now,
            };
            // NOEXIST: two CPUs seeing the MAC on two ports at once leave one pin, and the
            // other port is refused from the next frame on.
            let _ = LZ_PORT_PIN.insert(key, pin, u64::from(BPF_NOEXIST));
            true
        }
    }
}

/// Attributes a frame from a device port to a managed device (and says whether it was
/// found by its source address, rather than by its MAC), or returns the verdict for a
/// spoofed or unknown source.
#[inline(always)]
fn identify_source(gen: &Gen, pkt: &Pkt) -> Result<(&'static Device, bool), Verdict> {
    let unspecified = parse::is_unspecified_or_link_local(pkt.family, &pkt.src);
    let by_ip = if unspecified {
        None
    } else {
        lookup_ip_device(gen.slot, pkt.family, &pkt.src)
    };
    if let Some(dev) = by_ip {
        let mac_ok = dev.flags & DEV_F_HAS_MAC == 0 || Mac::of_device(dev) == pkt.src_mac;
        let vlan_ok = dev.vlan == VLAN_ANY || dev.vlan == pkt.vlan;
        let if_ok = dev.ifindex == IFINDEX_ANY || dev.ifindex == pkt.ifindex;
        return if mac_ok && vlan_ok && if_ok && on_its_port(gen, pkt, dev) {
            Ok((dev, true))
        } else {
            Err(Verdict::dev(Reason::DenySpoof, Dev::of(dev)))
        };
    }
    match lookup_mac(gen.slot, pkt.src_mac) {
        Some(dev) => {
            // A managed MAC may speak from an unspecified or link-local address (DHCP, NDP),
            // or from any address when the device has no address bound for that family —
            // never from one of the gateway's, and a link-local one or one of that family
            // only if it owns it: the first MAC to use it (bypass class: a device taking
            // over the address its neighbour was given by DHCP, and with it what is sent
            // to the neighbour). In this order: a frame refused for its VLAN, interface or
            // bridge port claims nothing (a frame with a neighbour's MAC from another port
            // makes no claim in its name).
            // Asked only where a claim is made (not for DHCP's 0.0.0.0, say).
            let claims = if unspecified {
                pkt.family == FAMILY_V6 && parse::is_link_local6(&pkt.src)
            } else {
                dev.flags & no_addr_flag(pkt.family) != 0
            };
            let in_nets =
                claims && in_claim_networks(gen.slot, pkt.claim_scope, pkt.family, &pkt.src);
            let ip_ok = || {
                if !claims {
                    // 0.0.0.0 or `::` passes; another address of a family it has bound not.
                    return unspecified;
                }
                let src = (pkt.family, &pkt.src);
                claim_address(gen, src, in_nets, pkt.src_mac, Dev::of(dev))
            };
            if in_place(gen, pkt, dev) && ip_ok() {
                Ok((dev, false))
            } else {
                Err(Verdict::dev(Reason::DenySpoof, Dev::of(dev)))
            }
        }
        None => Err(unknown_source(gen)),
    }
}

/// The verdict on a source the inventory does not know, as the site says.
#[inline(always)]
fn unknown_source(gen: &Gen) -> Verdict {
    if gen.site.flags & SITE_F_UNKNOWN_AUDIT != 0 {
        let mut v = Verdict::new(Reason::UnknownAudit);
        v.report = true;
        v
    } else {
        Verdict::new(Reason::DenyUnknown)
    }
}

/// Stateful part: known flows pass (re-judged after a policy or epoch change), new
/// initiating packets are judged against the policy and open a flow in the new table.
/// The established table is looked up first, so a confirmed session costs one lookup; a
/// confirmed flow still in the new table asks to be promoted (see `lazaret_abi`, *Flow
/// tables*).
#[inline(always)]
fn judge_flow(
    gen: &Gen,
    pkt: &Pkt,
    src_dev: &Option<&'static Device>,
    dst_dev: &Option<&'static Device>,
    src_by_addr: bool,
    lookup: FlowLookup,
) -> Verdict {
    let FlowLookup {
        key,
        src_is_a,
        found,
    } = lookup;
    let now = gen.now;
    // Bypass class: a packet of no flow by its kind never uses one it finds (see
    // `Pkt::flowless`); it cannot open one either, so it is refused below.
    if let Some((flow, in_est)) = found.filter(|_| !pkt.flowless()) {
        // SAFETY: the pointer comes from a successful lookup in this program run.
        let flow = unsafe { &mut *flow };
        if !expired(
            now,
            flow.last_seen_ns,
            flow_timeout_ns(pkt.proto, flow.state),
        ) {
            let initiator_is_src = (flow.initiator == 0) == src_is_a;
            let src_id = src_dev.map_or(0, |d| d.id);
            if flow_is_current(gen, flow) && !sent_elsewhere(gen, pkt, flow, src_is_a, src_id) {
                let dev = dev_id(src_dev, dst_dev);
                return keep_flow(gen, pkt, &key, flow, src_is_a, in_est, dev);
            }
            // Policy or device state changed since the flow was admitted, or its packet goes
            // to a link-local address at another MAC than the device the flow names there:
            // judge its initiating direction again under the current generation.
            //
            // Bypass class: the device a flow names at a link-local end is never renamed. A
            // packet of the flow, either way, sent on to another MAC than that device's
            // (another device's, an unmanaged host's) would be judged for what it reaches
            // and, passed, stamp the flow with that device or none: the named device's
            // quarantine would no longer make the flow stale, and its packets would go on
            // as the flow's (found by reviews). So it reaches no device (`destination`),
            // and, as no flow opens to a link-local address at a MAC of no device
            // (`to_nobody`), it is refused as a flow judged again; so are the initiator's
            // packets sent there where the flow names none. A device's reply to an
            // upstream host's IPv4 link-local address (at the gateway's MAC; the flow names
            // no device there) goes on. Asked before the policy, as nftables asks. (So
            // written, the checks join `to_nobody`'s: as checks of their own, or after the
            // policy, the verifier's count had no room.)
            let there = if src_is_a { flow.dev_b } else { flow.dev_a };
            let dst_dev = &destination(gen, pkt, dst_dev, there);
            let named = u8::from(initiator_is_src) | u8::from(there != 0);
            // From no device, at an end the flow names a device at (upstream, from an
            // address a device owns): a spoof, refused so too.
            let here = if src_is_a { flow.dev_a } else { flow.dev_b };
            let unnamed = u8::from(here != 0) & u8::from(src_id == 0);
            if unnamed != 0 || (to_nobody(pkt, dst_dev) && named != 0) {
                remove_flow(&key, in_est);
                let mut v = Verdict::dev(Reason::DenyNoRule, dev_id(src_dev, dst_dev));
                v.dir |= REJUDGED;
                return v;
            }
            let (init_dev, resp_dev) = if initiator_is_src {
                (src_dev, dst_dev)
            } else {
                (dst_dev, src_dev)
            };
            let (init_addr, resp_addr) = if initiator_is_src {
                (&pkt.src, &pkt.dst)
            } else {
                (&pkt.dst, &pkt.src)
            };
            let resp_port = if initiator_is_src {
                pkt.dport
            } else {
                pkt.sport
            };
            let fp = (pkt.family, pkt.proto);
            let mut v = judge_policy(gen, fp, init_dev, resp_dev, init_addr, resp_addr, resp_port);
            if v.reason.passes() {
                stamp_flow(gen, pkt, flow, src_is_a, src_dev, dst_dev, src_by_addr, &v);
                // The rule decided this packet, which passes as the flow's (AllowFlow).
                rule_hit(gen, v.rule);
                return keep_flow(gen, pkt, &key, flow, src_is_a, in_est, v.dev);
            }
            remove_flow(&key, in_est);
            v.dir |= REJUDGED;
            return v;
        }
        remove_flow(&key, in_est);
    }

    if !pkt.initiating() {
        let mut v = Verdict::new(Reason::DenyNoFlow);
        v.dev = dev_id(src_dev, dst_dev);
        return v;
    }
    let port = if pkt.has_ports() { pkt.dport } else { 0 };
    let fp = (pkt.family, pkt.proto);
    // The source's policy first: when it refuses, the destination's device is not looked
    // up (one hash lookup fewer for every packet a device sends where it may not). A
    // refusal an audit or learn device only reports goes on to the responder's policy.
    let init = match judge_initiator(gen, fp, src_dev, &pkt.dst, port) {
        Ok(init) => init,
        Err(v) => return v,
    };
    let dst_dev = &destination(gen, pkt, dst_dev, 0);
    // After the sender's policy: asked before, the lookups cost the verifier's count more
    // than the program has room for. (nftables asks before it, so a quarantined sender's
    // refusal is reported as this one there.)
    if to_nobody(pkt, dst_dev) {
        return Verdict::dev(Reason::DenyNoRule, dev_id(src_dev, dst_dev));
    }
    let v = judge_responder(gen, fp, init, dst_dev, &pkt.src, port);
    if v.reason.passes() {
        let mut slot = core::mem::MaybeUninit::uninit();
        let flow = word::new_flow(&mut slot, now, FLOW_NEW, if src_is_a { 0 } else { 1 });
        stamp_flow(gen, pkt, flow, src_is_a, src_dev, dst_dev, src_by_addr, &v);
        // A flow the table refuses (LRU free lists exhausted under contention) is admitted
        // but not tracked: its replies will be dropped as DenyNoFlow. Counted, so that is
        // explained rather than silent.
        let inserted = {
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by reference: moved, the value is copied, and the copy of its zero words becomes a memset call (see word.rs)"
            )]
            LZ_FLOWS.insert(&key, &*flow, 0)
        };
        if inserted.is_err() {
            bump(&LZ_EV_STATS, EV_STAT_FLOW_INSERT_FAILED, 1);
        }
    }
    v
}

/// Bypass class: a link-local destination from a device port names the device the frame is
/// sent to, by MAC (`destination`). A flow to such an address at a MAC that names no device
/// (judged by the sender's policy alone, which audit and learn soften) would carry the same
/// addresses and ports sent on to a device's MAC (`sent_elsewhere` judges those again
/// now): none opens, unless to one of the gateway's own addresses; nor do the initiator's
/// packets of a flow judged again go on there (opened at a device's MAC that accepts it,
/// sent on to an unmanaged host's MAC, they would pass on the sender's policy alone).
#[inline(always)]
fn to_nobody(pkt: &Pkt, dst_dev: &Option<&'static Device>) -> bool {
    dst_dev.is_none() && pkt.dst_by_mac != 0 && !is_local(pkt.family, &pkt.dst)
}

/// Bypass class: a flow to a link-local address is keyed by addresses and ports, but the
/// device at each link-local end is the one the frames are sent to, by MAC (`destination`,
/// stamped in the flow). A neighbour could open it at a MAC whose device accepts it (its
/// own, where audit or learn softens its refusal) and send the same addresses and ports on
/// to another device's MAC, whose policy was never asked; or, owning a silent device's
/// link-local address by first use, open a flow from it and send the replies to that
/// device's MAC. A packet from a device port (`src_is_a`: its source is endpoint a) to a
/// link-local address goes on as the flow's only to the MAC of the device the flow names
/// at that end (an ICMP error about the flow and a later fragment of its train too); sent
/// elsewhere, the flow is judged again, for the device it reaches. Nor does a packet go on
/// as the flow's from another device (`src_id`, 0 for none) than the one the flow names at
/// its source end, none included: a neighbour sending to its own MAC a flow to a silent
/// device's link-local address named itself at that end, and the device, once
/// quarantined, sent from the address on that flow as its own (found by a review); so did
/// a new owner of an address by first use, and a host upstream sending from an address a
/// device owns. And a device known by its MAC alone answering a flow opened to an address
/// no device owned yet (it owns it by first use from that answer on) went on as the flow's
/// at an end that named no device: its own policy never asked, its quarantine, which makes
/// stale only the flows that name it, never cutting the flow (found by a review). Judged
/// again, it is asked, and the flow names it from then on.
#[inline(always)]
fn sent_elsewhere(gen: &Gen, pkt: &Pkt, flow: &FlowValue, src_is_a: bool, src_id: u64) -> bool {
    let (here, there) = if src_is_a {
        (flow.dev_a, flow.dev_b)
    } else {
        (flow.dev_b, flow.dev_a)
    };
    if here != src_id {
        return true;
    }
    if pkt.dst_by_mac == 0 {
        return false;
    }
    mac_device(gen.slot, pkt.dst_mac).id != there
}

/// The outcome of a flow lookup done before judge_flow, kept as plain scalars that are
/// always set. (An `Option<FlowLookup>`, left `None` on most paths, has an undefined
/// payload there: LLVM is free to spill it from a register the parse call clobbered, and
/// the verifier refuses to read an uninitialised register.)
#[derive(Clone, Copy)]
struct Early {
    done: bool,
    /// Null: no entry.
    flow: *mut FlowValue,
    in_est: bool,
}

impl Early {
    const NONE: Early = Early {
        done: false,
        flow: core::ptr::null_mut(),
        in_est: false,
    };

    #[inline(always)]
    fn of(lookup: &FlowLookup) -> Early {
        let (flow, in_est) = lookup.found.unwrap_or((core::ptr::null_mut(), false));
        Early {
            done: true,
            flow,
            in_est,
        }
    }
}

/// A packet's flow key, whether its source is endpoint a, and the flow entry if there is
/// one (with whether it is in the established table).
struct FlowLookup {
    key: FlowKey,
    src_is_a: bool,
    found: Option<(*mut FlowValue, bool)>,
}

impl FlowLookup {
    /// The established table first (a confirmed session costs one lookup), then the new
    /// one; when the fast path missed in the established one with this very key, the new
    /// one first. `promote` on another CPU (insert into the established table, then remove
    /// from the new one) may move the flow between two looks, so that neither finds it: a
    /// packet found in neither looks in the established table again when the fast path
    /// missed there (a data packet or datagram of a confirmed flow) or when it cannot open
    /// a flow (it would be refused as of no flow). Not an initiating packet the fast path
    /// left alone (a SYN, an echo request, a first fragment): no timed path pays the third
    /// lookup; such a packet of a flow being promoted is judged as a new flow (a responder's
    /// as one it opens: docs/reliability.md, *Open findings*).
    /// The pointer is valid for this program run.
    #[inline(always)]
    fn of(gen: &Gen, pkt: &Pkt) -> FlowLookup {
        let (key, src_is_a) = flow_key(pkt);
        let est = if gen.est_missed {
            None
        } else {
            LZ_EST_FLOWS.get_ptr_mut(key)
        };
        let found = match est {
            Some(f) => Some((f, true)),
            None => match LZ_FLOWS.get_ptr_mut(key) {
                Some(f) => Some((f, false)),
                None if gen.est_missed || !pkt.initiating() => {
                    LZ_EST_FLOWS.get_ptr_mut(key).map(|f| (f, true))
                }
                None => None,
            },
        };
        FlowLookup {
            key,
            src_is_a,
            found,
        }
    }

    /// The lookup `early` already made, with the key rebuilt (cheaper to rebuild than to
    /// keep alive across the identity lookups).
    #[inline(always)]
    fn found_early(pkt: &Pkt, early: Early) -> FlowLookup {
        let (key, src_is_a) = flow_key(pkt);
        let found = if early.flow.is_null() {
            None
        } else {
            Some((early.flow, early.in_est))
        };
        FlowLookup {
            key,
            src_is_a,
            found,
        }
    }
}

/// A packet of a live flow whose entry is current: allowed, charged to `dev`, the flow's
/// state advanced (and promoted, if it is confirmed and still in the new table).
#[inline(always)]
fn keep_flow(
    gen: &Gen,
    pkt: &Pkt,
    key: &FlowKey,
    flow: &mut FlowValue,
    src_is_a: bool,
    in_est: bool,
    dev: Dev,
) -> Verdict {
    let initiator_is_src = (flow.initiator == 0) == src_is_a;
    flow.last_seen_ns = gen.now;
    advance_flow(flow, pkt, initiator_is_src);
    let mut v = Verdict::new(Reason::AllowFlow);
    v.dev = dev;
    v.rule = flow.rule;
    v.report = false;
    if !in_est {
        promote(gen, key, flow);
    }
    v
}

/// A packet from upstream on a live, current flow whose entry already names the device it
/// goes to: judged from the entry alone, without judge_ip's two identity lookups (the
/// source's, for spoofing, and the destination's). The same verdict as that full path,
/// because the flow's generation is the current one: an endpoint stamped without a device
/// had none by its address in it (so the source is no managed address: not a spoof), and
/// an endpoint flagged FLOW_F_ADDR_* is the device its address names (the destination's
/// device judge_ip would find). Anything else takes the full path: no such flow, expired
/// or stale, a source endpoint with a device, a destination device known by its MAC alone
/// (an address it owns by first use, or a link-local one it was found at by MAC).
#[inline(always)]
fn upstream_reply(gen: &Gen, pkt: &Pkt, lookup: &FlowLookup) -> Option<Verdict> {
    let (key, src_is_a) = (&lookup.key, lookup.src_is_a);
    // Bypass class: see `Pkt::flowless`.
    if pkt.flowless() {
        return None;
    }
    let (flow, in_est) = lookup.found?;
    // SAFETY: the pointer comes from a successful lookup in this program run.
    let flow = unsafe { &mut *flow };
    let (src_dev, dst_dev, dst_flag) = if src_is_a {
        let dst = Dev {
            id: flow.dev_b,
            cell: flow.cell_b,
        };
        (flow.dev_a, dst, FLOW_F_ADDR_B)
    } else {
        let dst = Dev {
            id: flow.dev_a,
            cell: flow.cell_a,
        };
        (flow.dev_b, dst, FLOW_F_ADDR_A)
    };
    if src_dev != 0 || flow.flags & dst_flag == 0 {
        return None;
    }
    if expired(
        gen.now,
        flow.last_seen_ns,
        flow_timeout_ns(pkt.proto, flow.state),
    ) || !flow_is_current(gen, flow)
    {
        return None;
    }
    Some(keep_flow(gen, pkt, key, flow, src_is_a, in_est, dst_dev))
}

#[inline(always)]
fn remove_flow(key: &FlowKey, in_est: bool) {
    let _ = if in_est {
        LZ_EST_FLOWS.remove(key)
    } else {
        LZ_FLOWS.remove(key)
    };
}

/// Moves a confirmed flow of the new table into the established table, if the device it is
/// charged to has a promotion token; otherwise it stays (working, unprotected) and asks
/// again on its next packet. Call last: `flow` points into the new table's entry, which the
/// move frees.
#[inline(always)]
fn promote(gen: &Gen, key: &FlowKey, flow: &FlowValue) {
    if flow.state != FLOW_ESTABLISHED {
        return;
    }
    let (init, resp) = if flow.initiator == 0 {
        (flow.dev_a, flow.dev_b)
    } else {
        (flow.dev_b, flow.dev_a)
    };
    let charged = if init != 0 { init } else { resp };
    let site = gen.site;
    if !take_token(
        gen,
        &LZ_PROMOTE,
        charged,
        site.promote_rate,
        site.promote_burst,
    ) {
        return;
    }
    // Insert first, then remove: the flow is in one table or the other at every instant,
    // though a packet on another CPU that looked in the established table before the insert
    // and in the new one after the remove finds it in neither: it looks in the established
    // one again (`FlowLookup::of` says which packets do).
    if LZ_EST_FLOWS.insert(key, flow, 0).is_ok() {
        let _ = LZ_FLOWS.remove(key);
    }
}

/// The destination's device: already looked up on the upstream side, deferred to here on
/// device ports (see judge_ip). On a device port too, an address a device known by its MAC
/// alone owns by first use names it (bypass class: the responder's policy was not asked,
/// so a device in audit or learn mode, whose refusals only report, could open any flow to
/// such a neighbour), but only in a network the site declares for its devices
/// (`CLAIM_DEVICES`): where none is declared for the family, a device may own a server's
/// address, and would then be asked about every device's flows to the server.
/// A link-local address (IPv6's, or IPv4's 169.254/16) is reached on the segment, by MAC:
/// it names the device the frame is sent to, which is the one that receives it behind a
/// bridge (bypass class: a neighbour in audit mode could open any session on a device at
/// its link-local address). Not its owner by first use: a neighbour could use a silent
/// device's link-local address (its MAC's EUI-64, predictable; an APIPA address seen in
/// its probe) first, and be asked in its place. A flow that names a device there (`named`,
/// 0 for none) is never renamed: sent to another device's MAC, its packet reaches none.
#[inline(always)]
fn destination(
    gen: &Gen,
    pkt: &Pkt,
    known: &Option<&'static Device>,
    named: u64,
) -> Option<&'static Device> {
    if pkt.side != SIDE_DEVICES {
        return *known;
    }
    match lookup_ip_device(gen.slot, pkt.family, &pkt.dst) {
        Some(d) => Some(d),
        None if pkt.dst_by_mac != 0 => {
            lookup_mac(gen.slot, pkt.dst_mac).filter(|d| named == 0 || d.id == named)
        }
        None if !has_owners(gen, pkt.family) => None,
        None => owned_device(gen.slot, gen.now, pkt.family, &pkt.dst).filter(|_| {
            site_claim_class(gen.slot, pkt.family, &pkt.dst) == u64::from(CLAIM_DEVICES)
        }),
    }
}

/// An ICMP error passes only along the flow of the packet it quotes: back to that packet's
/// sender, from a device port only from that packet's destination, and only while the flow
/// is live and (re-judged if stale) allowed. Path-MTU discovery and unreachables for allowed
/// sessions work; errors cannot probe, carry data elsewhere, or outlive a quarantine.
#[inline(always)]
fn judge_related(
    gen: &Gen,
    pkt: &Pkt,
    src_dev: &Option<&'static Device>,
    dst_dev: &Option<&'static Device>,
) -> Verdict {
    let dev = dev_id(src_dev, dst_dev);
    // Bypass class: judged by the quoted packet alone, an error with any live flow in it
    // could be sent to any host, or quote another device's flow to tear it down.
    let to_sender = pkt.dst == pkt.inner_src;
    let from_receiver = pkt.side == SIDE_UPSTREAM || pkt.src == pkt.inner_dst;
    if !to_sender || !from_receiver {
        return Verdict::dev(Reason::DenyIcmpError, dev);
    }
    let (key, inner_src_is_a) = normalized_key(
        (&pkt.inner_src, pkt.inner_sport),
        (&pkt.inner_dst, pkt.inner_dport),
        (pkt.inner_proto, pkt.family),
        pkt.inner_echo,
    );
    let Some(flow) = live_flow(gen, &key) else {
        return Verdict::dev(Reason::DenyNoFlow, dev);
    };
    let initiator_is_inner_src = (flow.initiator == 0) == inner_src_is_a;
    // The error's own source is the quoted packet's destination (`sent_elsewhere`).
    let src_id = src_dev.map_or(0, |d| d.id);
    if flow_is_current(gen, flow) && !sent_elsewhere(gen, pkt, flow, !inner_src_is_a, src_id) {
        let mut v = Verdict::dev(Reason::AllowFlow, dev);
        v.rule = flow.rule;
        v.report = false;
        return v;
    }
    // The policy or a device's state changed since the flow was last judged (a quarantine
    // among them), or the error goes to another device than the flow's: judge the flow's
    // opening again, as its own next packet would be.
    // The quoted packet went from the error's destination to its source (checked above),
    // or, upstream, to a host a router answered for.
    let inner_src_dev = destination(gen, pkt, dst_dev, 0);
    let inner_dst_dev = if pkt.side == SIDE_DEVICES {
        *src_dev
    } else {
        lookup_ip_device(gen.slot, pkt.family, &pkt.inner_dst)
    };
    let v = if initiator_is_inner_src {
        judge_policy(
            gen,
            (pkt.family, pkt.inner_proto),
            &inner_src_dev,
            &inner_dst_dev,
            &pkt.inner_src,
            &pkt.inner_dst,
            pkt.inner_dport,
        )
    } else {
        judge_policy(
            gen,
            (pkt.family, pkt.inner_proto),
            &inner_dst_dev,
            &inner_src_dev,
            &pkt.inner_dst,
            &pkt.inner_src,
            pkt.inner_sport,
        )
    };
    if !v.reason.passes() {
        let mut v = v;
        v.dir |= REJUDGED;
        return v;
    }
    // The rule decided this packet, which passes as the flow's (AllowFlow).
    rule_hit(gen, v.rule);
    let mut out = Verdict::dev(Reason::AllowFlow, v.dev);
    out.rule = v.rule;
    out.report = false;
    out
}

/// Judges an initiating packet (initiator → responder:port, `fp` its family and protocol)
/// against the effective policy of every managed end: all of them must allow it.
#[inline(always)]
fn judge_policy(
    gen: &Gen,
    fp: (u8, u8),
    init_dev: &Option<&'static Device>,
    resp_dev: &Option<&'static Device>,
    init_addr: &Addr,
    resp_addr: &Addr,
    port: u16,
) -> Verdict {
    match judge_initiator(gen, fp, init_dev, resp_addr, port) {
        Ok(init) => judge_responder(gen, fp, init, resp_dev, init_addr, port),
        Err(v) => v,
    }
}

/// What the initiator's end decided, for `judge_responder` (scalars only).
#[derive(Clone, Copy)]
struct Initiator {
    /// Its rule; [`NO_RULE`] with a device: its policy has no rule for the flow and its
    /// mode only reports that (`Audit`, or `Learn` when `learn`), which is the verdict
    /// unless the responder refuses (see `softened`). Encoded in these fields rather than
    /// carried as a verdict or a flag of its own: the program's stack has no room for one.
    rule: u32,
    dev: Dev,
    audit: bool,
    learn: bool,
}

impl Initiator {
    /// The initiator's refusal was softened by its mode.
    #[inline(always)]
    fn softened(&self) -> bool {
        self.rule == NO_RULE && self.dev.id != 0
    }
}

/// The first half of `judge_policy`: the initiator's policy, if it is a managed device.
/// An `Err` is the verdict: the responder's end cannot change a refusal, so a caller may
/// leave the responder's device unlooked-up until this half allows. A refusal the
/// initiator's mode only reports is no verdict yet (`Initiator::softened`).
#[inline(always)]
fn judge_initiator(
    gen: &Gen,
    fp: (u8, u8),
    init_dev: &Option<&'static Device>,
    resp_addr: &Addr,
    port: u16,
) -> Result<Initiator, Verdict> {
    let mut init = Initiator {
        rule: NO_RULE,
        dev: Dev::NONE,
        audit: false,
        learn: false,
    };
    if let Some(d) = init_dev {
        init.learn = d.mode == MODE_LEARN;
        init.dev = Dev::of(d);
        match judge_end(gen, fp, d, DIR_DEVICE_INIT, resp_addr, port) {
            Ok(r) => {
                init.rule = r.rule;
                init.audit = r.flags & RULE_F_AUDIT != 0;
            }
            // Softened (`Initiator::softened`): the rule stays NO_RULE.
            Err(v) if v.reason.passes() => {}
            Err(v) => return Err(v),
        }
    }
    Ok(init)
}

/// The second half of `judge_policy`: the responder's policy, if it is a managed device,
/// after the initiator's allowed, or refused in a mode that only reports
/// (`Initiator::softened`).
///
/// Bypass class: a softened refusal is the initiator's alone. Taken as the verdict, a
/// device in audit or learn mode could open flows on devices that enforce and accept
/// nothing of the kind. The responder's refusal stands; if it accepts, or its own mode
/// softens its refusal too, the initiator's softened refusal is the verdict (reported as
/// the deviation it is).
#[inline(always)]
fn judge_responder(
    gen: &Gen,
    fp: (u8, u8),
    init: Initiator,
    resp_dev: &Option<&'static Device>,
    init_addr: &Addr,
    port: u16,
) -> Verdict {
    let softened = init.softened();
    let Initiator {
        mut rule,
        mut dev,
        mut audit,
        mut learn,
    } = init;
    let mut dir = DIR_DEVICE_INIT;
    if let Some(d) = resp_dev {
        match judge_end(gen, fp, d, DIR_PEER_INIT, init_addr, port) {
            Ok(_) if softened => {}
            Ok(r) => {
                learn |= d.mode == MODE_LEARN;
                if dev.id == 0 {
                    rule = r.rule;
                    dev = Dev::of(d);
                    dir = DIR_PEER_INIT;
                }
                audit |= r.flags & RULE_F_AUDIT != 0;
            }
            // A refusal the responder's mode also only reports: the initiator's is the
            // deviation reported (its flow, its learn record).
            Err(v) if softened && v.reason.passes() => {}
            Err(v) => return v,
        }
    }
    if softened {
        // The initiator's own refusal, as its end reported it (`judge_end`).
        let reason = if learn { Reason::Learn } else { Reason::Audit };
        let mut v = Verdict::dev(reason, dev);
        v.dir = DIR_DEVICE_INIT;
        v.report = true;
        return v;
    }
    let mut v = Verdict::new(if audit {
        Reason::Audit
    } else {
        Reason::AllowRule
    });
    v.dev = dev;
    v.rule = rule;
    v.dir = dir;
    v.report = audit || learn;
    v.learn = learn;
    v
}

/// One managed end: its effective policy (by quarantine state) must have a rule for the
/// peer address, protocol and port. A miss is a deny, softened by the device's mode unless
/// the device is quarantined.
#[inline(always)]
fn judge_end(
    gen: &Gen,
    (family, proto): (u8, u8),
    dev: &Device,
    dir: u8,
    peer: &Addr,
    port: u16,
) -> Result<RuleRef, Verdict> {
    // The device's cell: an array lookup the verifier inlines (see `Device::cell`).
    let quarantine = match LZ_DEV_STATE.get(u32::from(dev.cell)) {
        Some(s) => s.quarantine,
        None => QUARANTINE_NONE,
    };
    let policy = match quarantine {
        QUARANTINE_NONE => dev.policy,
        QUARANTINE_RESTRICT => dev.restrict_policy,
        _ => gen.site.quarantine_policy,
    };
    if let Some(r) = lookup_rule(gen.slot, policy, dir, family, peer, proto, port) {
        return Ok(r);
    }
    let reason = if quarantine != QUARANTINE_NONE {
        Reason::DenyQuarantine
    } else {
        match dev.mode {
            MODE_AUDIT => Reason::Audit,
            MODE_LEARN => Reason::Learn,
            _ => Reason::DenyNoRule,
        }
    };
    let mut v = Verdict::dev(reason, Dev::of(dev));
    v.dir = dir;
    v.report = true;
    Err(v)
}

/// The rule of `policy` for a peer, protocol and port (see [`lookup_rule_inline`]), through
/// the global function [`lz_lookup_rule`].
#[inline(always)]
fn lookup_rule(
    slot: u8,
    policy: u32,
    dir: u8,
    family: u8,
    peer: &Addr,
    proto: u8,
    port: u16,
) -> Option<RuleRef> {
    let query = u64::from(slot)
        | u64::from(dir) << 8
        | u64::from(family) << 16
        | u64::from(proto) << 24
        | u64::from(port) << 32;
    let found = lz_lookup_rule(query, u64::from(policy), peer.0[0], peer.0[1]);
    if found == u64::MAX {
        return None;
    }
    Some(RuleRef {
        rule: found as u32,
        flags: (found >> 32) as u32,
    })
}

/// [`lookup_rule`] as a global BPF function: the verifier checks it once, on its own, instead
/// of again on every path that reaches one of its call sites (the policy is asked from
/// several places, each on many paths: the program's exploration is bounded by the
/// verifier's 1,000,000 instructions). Its arguments and result are scalars, as a global
/// function's must be: the query packed (slot, direction, family, protocol, port), the
/// policy, the peer's address words; the rule and its flags, or `u64::MAX` for none.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lz_lookup_rule(query: u64, policy: u64, peer_hi: u64, peer_lo: u64) -> u64 {
    let slot = query as u8;
    let dir = (query >> 8) as u8;
    let family = (query >> 16) as u8;
    let proto = (query >> 24) as u8;
    let port = (query >> 32) as u16;
    let peer = Addr([peer_hi, peer_lo]);
    match lookup_rule_inline(slot, policy as u32, dir, family, &peer, proto, port) {
        Some(r) => u64::from(r.rule) | u64::from(r.flags) << 32,
        None => u64::MAX,
    }
}

/// Peer address → class (longest prefix), then (class, protocol, port) → rule (longest
/// prefix over aligned port blocks). Each longest-prefix map is a hash of its full-length
/// entries and a trie of the rest: a hash hit is the longest match, so the trie, whose walk
/// deepens as the policy grows, is read only on a miss, and for ports only when the class
/// has shorter entries for the protocol (`port_prefixes`). See lazaret_abi, *Exact entries
/// in hashes*; the reference classifier's single-trie lookups are the specification.
#[inline(always)]
fn lookup_rule_inline(
    slot: u8,
    policy: u32,
    dir: u8,
    family: u8,
    peer: &Addr,
    proto: u8,
    port: u16,
) -> Option<RuleRef> {
    let peer_class = peer_class(slot, dir, policy, family, peer)?;
    let key = word::port_key(slot, peer_class.class, proto, port);
    // SAFETY: see LZ_IFACE_HIGH above.
    if let Some(r) = unsafe { LZ_PORTS_EXACT.get(key) } {
        return Some(*r);
    }
    if peer_class.port_prefixes & (PORT_PREFIX_ANY | port_prefix_bit(proto)) == 0 {
        return None;
    }
    lpm_get(&LZ_PORTS, &LpmKey::new(PORT_KEY_FULL_BITS, key)).copied()
}

/// The peer class of `peer` for `policy` and `dir`: the longest prefix containing it.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a borrow, not a copy: the key by value takes 24 more bytes of lz_lookup_rule's stack"
)]
fn peer_class(slot: u8, dir: u8, policy: u32, family: u8, peer: &Addr) -> Option<PeerClass> {
    // One key on the stack per family, the trie's, whose tail is the hash's key (the
    // stack of the global functions calling this counts against the program's 512 bytes).
    Some(if family == FAMILY_V4 {
        let key = LpmKey::new(
            PEER_KEY_FIXED_BITS + 32,
            word::peer_key4(slot, dir, policy, peer),
        );
        // SAFETY: see LZ_IFACE_HIGH above.
        match unsafe { LZ_PEER4_HOST.get(&key.data) } {
            Some(c) => *c,
            None => *lpm_get(&LZ_PEER4, &key)?,
        }
    } else {
        let key = LpmKey::new(
            PEER_KEY_FIXED_BITS + 128,
            word::peer_key6(slot, dir, policy, peer),
        );
        // SAFETY: see LZ_IFACE_HIGH above.
        match unsafe { LZ_PEER6_HOST.get(&key.data) } {
            Some(c) => *c,
            None => *lpm_get(&LZ_PEER6, &key)?,
        }
    })
}

/// Whether a device behind an interface of claim scope `scope` may own `addr` by first use
/// as far as the site's networks go: inside its interface's networks, or link-local (the
/// peer maps' `DIR_CLAIM` entries; see lazaret_abi, *Addresses owned by first use*).
/// Bypass class: a device known by its MAC alone could otherwise take a server's address,
/// and with it what is sent there, or the address DHCP gives a device on another VLAN.
#[inline(always)]
fn in_claim_networks(slot: u8, scope: u16, family: u8, addr: &Addr) -> bool {
    claimable_class(claim_class(slot, scope, family, addr))
}

/// Whether a `CLAIM_*` class (or `u64::MAX`, none) lets a device own the address.
#[inline(always)]
fn claimable_class(class: u64) -> bool {
    class == u64::from(CLAIM_DEVICES) || class == u64::from(CLAIM_ANY)
}

/// The site-wide `CLAIM_*` class of `addr` (`u64::MAX`: none): which networks are the
/// devices' anywhere, where an owner is looked up as a destination.
#[inline(always)]
fn site_claim_class(slot: u8, family: u8, addr: &Addr) -> u64 {
    claim_class(slot, CLAIM_POLICY as u16, family, addr)
}

/// The `CLAIM_*` class of `addr` in claim scope `scope` (`u64::MAX`: none, not to be owned).
#[inline(always)]
fn claim_class(slot: u8, scope: u16, family: u8, addr: &Addr) -> u64 {
    let (slot, scope) = (u64::from(slot), u64::from(scope));
    if family == FAMILY_V4 {
        lz_claim_class4(slot, scope, addr.0[0])
    } else {
        lz_claim_class6(slot, scope, addr.0[0], addr.0[1])
    }
}

/// The IPv4 half of [`claim_class`] as a global BPF function, verified once on its own
/// (see [`lz_lookup_rule`]); one per family keeps its stack small enough to be called from
/// `judge_ip`'s (the call chain's frames share 512 bytes). The class, or `u64::MAX` for none.
/// A scope without entries (an interface the policy does not declare: every declared
/// one's scope has an entry for 0/0) asks the site-wide ones.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lz_claim_class4(slot: u64, scope: u64, addr_word: u64) -> u64 {
    // An IPv4 address is the first word's low 32 bits (`Addr::low32`).
    let addr = Addr([addr_word, 0]);
    let slot = slot as u8;
    let class = match peer_class(slot, DIR_CLAIM, scope as u32, FAMILY_V4, &addr) {
        None if scope != u64::from(CLAIM_POLICY) => {
            peer_class(slot, DIR_CLAIM, CLAIM_POLICY, FAMILY_V4, &addr)
        }
        found => found,
    };
    class.map_or(u64::MAX, |c| u64::from(c.class))
}

/// The IPv6 half of [`claim_class`] (see [`lz_claim_class4`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lz_claim_class6(slot: u64, scope: u64, addr_hi: u64, addr_lo: u64) -> u64 {
    let addr = Addr([addr_hi, addr_lo]);
    let slot = slot as u8;
    let class = match peer_class(slot, DIR_CLAIM, scope as u32, FAMILY_V6, &addr) {
        None if scope != u64::from(CLAIM_POLICY) => {
            peer_class(slot, DIR_CLAIM, CLAIM_POLICY, FAMILY_V6, &addr)
        }
        found => found,
    };
    class.map_or(u64::MAX, |c| u64::from(c.class))
}

/// An LPM trie key: the same bytes as aya's `lpm_trie::Key` (a 4-byte prefix length, then
/// the key), but aligned. aya's is `packed`, so a key built in it is written a byte at a
/// time; the keys are at most 4-aligned (see lazaret_abi), so no padding comes between.
#[repr(C)]
struct LpmKey<K> {
    prefix_len: u32,
    data: K,
}

impl<K> LpmKey<K> {
    #[inline(always)]
    const fn new(prefix_len: u32, data: K) -> Self {
        LpmKey { prefix_len, data }
    }
}

const _: () = {
    assert!(size_of::<LpmKey<PeerKey4>>() == size_of::<Key<PeerKey4>>());
    assert!(size_of::<LpmKey<PeerKey6>>() == size_of::<Key<PeerKey6>>());
    assert!(size_of::<LpmKey<PortKey>>() == size_of::<Key<PortKey>>());
};

#[inline(always)]
fn lpm_get<K, V>(map: &LpmTrie<K, V>, key: &LpmKey<K>) -> Option<&'static V> {
    // SAFETY: `Key<K>` is `repr(C, packed)` with the same two fields and no padding between
    // them in `LpmKey<K>` (asserted above): the same bytes, and any address is aligned for
    // a packed type. Lookups return pointers into the map that stay valid for this run.
    unsafe {
        map.get(&*(key as *const LpmKey<K>).cast::<Key<K>>())
            .map(|v| &*(v as *const V))
    }
}

// === Flow helpers ===

#[inline(always)]
fn flow_key(pkt: &Pkt) -> (FlowKey, bool) {
    normalized_key(
        (&pkt.src, pkt.sport),
        (&pkt.dst, pkt.dport),
        (pkt.proto, pkt.family),
        pkt.echo,
    )
}

/// The flow-table key of a 5-tuple: the lower (address, port) endpoint first, so both
/// directions share one key. Also says whether the source is endpoint a. `echo` is the
/// packet's `echo_kind`: an echo's key also names the end that sends its requests (bypass
/// class, see `echo_end`).
#[inline(always)]
fn normalized_key(
    (src, sport): (&Addr, u16),
    (dst, dport): (&Addr, u16),
    (proto, family): (u8, u8),
    echo: u8,
) -> (FlowKey, bool) {
    // Compared as big-endian words: the same order as the bytes' (the reference
    // classifier's), without a byte-wise memcmp.
    let src_is_a = (src.ordered(), sport) <= (dst.ordered(), dport);
    let echo = echo_end(echo, src_is_a);
    let key = if src_is_a {
        word::flow_key((src, sport), (dst, dport), proto, family, echo)
    } else {
        word::flow_key((dst, dport), (src, sport), proto, family, echo)
    };
    (key, src_is_a)
}

#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined at judge_flow's two stamping sites, each argument a value it holds"
)]
fn stamp_flow(
    gen: &Gen,
    pkt: &Pkt,
    flow: &mut FlowValue,
    src_is_a: bool,
    src_dev: &Option<&'static Device>,
    dst_dev: &Option<&'static Device>,
    src_by_addr: bool,
    v: &Verdict,
) {
    let src = src_dev.map_or(Dev::NONE, Dev::of);
    let dst = dst_dev.map_or(Dev::NONE, Dev::of);
    // The source's device (from a device port) may be known by its MAC alone; the
    // destination's is found by its address, bound or owned by first use (`owned_device`:
    // a device with no address of a family bound, whose address may pass to another; not
    // flagged, whichever family it was found by), or, for a link-local address, by the
    // MAC the frame was sent to (`destination`; not flagged, nor is a link-local address
    // the inventory binds, which identify_source does not look up for IPv6). Bypass
    // class: flagged, a device the flow was sent to by MAC, answering from a link-local
    // address that is not its own (another's by first use, or its own from before a
    // reload bound it an address), passed on the fast path, and an upstream packet to
    // such an address was credited to it (found by a review).
    let src_flag = u8::from(src_dev.is_some() && src_by_addr);
    let bound = dst_dev.is_some_and(|d| d.flags & (DEV_F_NO_IP4 | DEV_F_NO_IP6) == 0);
    let dst_flag = u8::from(bound) & (pkt.dst_by_mac ^ 1);
    let (a, b, flag_a, flag_b) = if src_is_a {
        (src, dst, src_flag, dst_flag)
    } else {
        (dst, src, dst_flag, src_flag)
    };
    flow.dev_a = a.id;
    flow.dev_b = b.id;
    flow.cell_a = a.cell;
    flow.cell_b = b.cell;
    // FLOW_F_ADDR_A and FLOW_F_ADDR_B, without a branch.
    flow.flags = (flag_a * FLOW_F_ADDR_A) | (flag_b * FLOW_F_ADDR_B);
    flow.epoch_a = epoch(a);
    flow.epoch_b = epoch(b);
    flow.generation = gen.site.generation;
    flow.rule = v.rule;
    flow.reason = v.reason as u8;
}

/// Whether the flow was judged under the active generation and its devices' epochs since.
/// The generation is compared first: only then do the cells the entry names belong to its
/// devices (a device keeps its cell while it is in either slot).
#[inline(always)]
fn flow_is_current(gen: &Gen, flow: &FlowValue) -> bool {
    let a = Dev {
        id: flow.dev_a,
        cell: flow.cell_a,
    };
    let b = Dev {
        id: flow.dev_b,
        cell: flow.cell_b,
    };
    flow.generation == gen.site.generation && flow.epoch_a == epoch(a) && flow.epoch_b == epoch(b)
}

#[inline(always)]
fn epoch(dev: Dev) -> u32 {
    if dev.id == 0 {
        return 0;
    }
    match LZ_DEV_STATE.get(u32::from(dev.cell)) {
        Some(s) => s.epoch,
        None => 0,
    }
}

/// The flow's state after this packet. A datagram flow is confirmed (established) by a
/// packet back from its responder. A TCP flow is confirmed only by the initiator's ACK of
/// the responder's SYN-ACK: a SYN flood towards a live host gets SYN-ACKs back, but never
/// that ACK, because the SYN-ACKs go to the spoofed sources (and a blind ACK would have to
/// guess the ISN).
#[inline(always)]
fn advance_flow(flow: &mut FlowValue, pkt: &Pkt, from_initiator: bool) {
    if pkt.proto != PROTO_TCP {
        if !from_initiator {
            flow.state = FLOW_ESTABLISHED;
        }
        return;
    }
    const SYN_ACK: u8 = parse::TCP_SYN | parse::TCP_ACK;
    let handshake = pkt.tcp_flags & SYN_ACK;
    if pkt.tcp_flags & (parse::TCP_FIN | parse::TCP_RST) != 0 {
        flow.state = FLOW_CLOSING;
    } else if !from_initiator {
        if handshake == SYN_ACK && (flow.state == FLOW_NEW || flow.state == FLOW_RESPONDED) {
            flow.state = FLOW_RESPONDED;
            flow.resp_isn = pkt.tcp_seq;
        }
    } else if flow.state == FLOW_RESPONDED
        && handshake == parse::TCP_ACK
        && pkt.tcp_ack == flow.resp_isn.wrapping_add(1)
    {
        flow.state = FLOW_ESTABLISHED;
    }
}

/// The unexpired entry of flow `key`, in either table (the established one first, and again
/// after the new one: a promotion on another CPU may move it between the first two looks,
/// see `FlowLookup::of`), for packets that only refer to a flow (an ICMP error, a later
/// fragment) and do not refresh it.
#[inline(always)]
fn live_flow(gen: &Gen, key: &FlowKey) -> Option<&'static FlowValue> {
    // SAFETY: see LZ_IFACE_HIGH above.
    let flow = match unsafe { LZ_EST_FLOWS.get(key) } {
        Some(f) => f,
        // SAFETY: as above.
        None => match unsafe { LZ_FLOWS.get(key) } {
            Some(f) => f,
            // SAFETY: as above.
            None => unsafe { LZ_EST_FLOWS.get(key) }?,
        },
    };
    let timeout = flow_timeout_ns(key.proto, flow.state);
    (!expired(gen.now, flow.last_seen_ns, timeout)).then_some(flow)
}

#[inline(always)]
fn frag_key(pkt: &Pkt) -> FragKey {
    word::frag_key(&pkt.src, &pkt.dst, pkt.frag_id, pkt.proto, pkt.family)
}

// === Identity lookups ===

/// The device whose MAC `mac` is, in one lookup (the identity maps hold the records).
#[inline(always)]
fn lookup_mac(slot: u8, mac: Mac) -> Option<&'static Device> {
    // SAFETY: see LZ_IFACE_HIGH above.
    unsafe { LZ_DEV_MAC.get(word::mac_key(slot, mac)) }
}

/// The device whose MAC `mac` is, or none.
#[inline(always)]
fn mac_device(slot: u8, mac: Mac) -> Dev {
    lookup_mac(slot, mac).map_or(Dev::NONE, Dev::of)
}

/// The device whose address `addr` is, in one lookup, or none without one when the slot's
/// address bits say no device has it (most upstream hosts and servers: see
/// `MAP_DEV_ADDR_BITS`).
#[inline(always)]
fn lookup_ip_device(slot: u8, family: u8, addr: &Addr) -> Option<&'static Device> {
    // The words the identity key is made of, exactly: an IPv4 key takes the address's
    // four bytes only, so its bit must not depend on the rest of the `Addr`.
    let words = if family == FAMILY_V4 {
        (u64::from(addr.0[0] as u32), 0)
    } else {
        (addr.0[0], addr.0[1])
    };
    // An array lookup the verifier inlines. A slot without its bits (cannot happen: the
    // array has both) falls through to the hash: never a device missed.
    if let Some(bits) = LZ_DEV_ADDRBITS.get(u32::from(slot)) {
        if !bits.may_hold(words) {
            return None;
        }
    }
    if family == FAMILY_V4 {
        // SAFETY: see LZ_IFACE_HIGH above.
        unsafe { LZ_DEV_IP4.get(word::ip4_key(slot, addr)) }
    } else {
        // SAFETY: see LZ_IFACE_HIGH above.
        unsafe { LZ_DEV_IP6.get(word::ip6_key(slot, addr)) }
    }
}

/// The device the destination address of a packet from upstream names: the one the
/// inventory binds it to, else the one that owns it by first use (`owned_device`).
#[inline(always)]
fn device_at(gen: &Gen, family: u8, addr: &Addr) -> Option<&'static Device> {
    match lookup_ip_device(gen.slot, family, addr) {
        Some(d) => Some(d),
        // Owned before the policy took the address out of the devices' networks: no
        // longer the device's (its next frame from it is refused; the entry ages out).
        // Asked here, not in `owned_device`: a global function called from there made the
        // call chain's stack too deep for the verifier (512 bytes).
        None if has_owners(gen, family) => owned_device(gen.slot, gen.now, family, addr)
            .filter(|_| claimable_class(site_claim_class(gen.slot, family, addr))),
        None => None,
    }
}

/// Bypass class: from upstream, an address of the devices' declared networks that no
/// device binds or owns by first use (`device_at` found none). A device known by its MAC
/// alone that has not spoken since the gateway booted (or an HA failover) owns nothing
/// yet, and what upstream sent to the address DHCP gave it passed as traffic to no device,
/// its policy not asked: on a fresh gateway, a port scan of every such device. Where the
/// site denies unknown devices, and has devices known by their MAC alone in the family,
/// such a packet is refused as to an unknown device's (`deny_unknown`): an unmanaged host
/// there may not send either. The device's first frame makes the address its own, so only
/// the packets before it are refused (TCP retransmits; a one-shot datagram is lost, and
/// counted). The refused packet never reaches routing, so nothing here resolves the
/// address: the daemon does, for each such refusal it is told of (`daemon::probe`), and a
/// device that only listens answers. Not a link-local address (nothing is routed there from upstream,
/// and its owner is found by MAC), not the gateway's own, and not a DHCP server's answer
/// to a client (DHCPv4 67 → 68, DHCPv6 547 → 546), which comes before the client has an
/// address to speak from.
#[inline(always)]
fn to_unowned(gen: &Gen, pkt: &Pkt) -> bool {
    let dhcp = if pkt.family == FAMILY_V4 {
        (67, 68)
    } else {
        (547, 546)
    };
    pkt.side == SIDE_UPSTREAM
        && gen.site.flags & SITE_F_UNKNOWN_AUDIT == 0
        && has_owners(gen, pkt.family)
        && !(pkt.proto == PROTO_UDP && (pkt.sport, pkt.dport) == dhcp)
        && !parse::is_link_local(pkt.family, &pkt.dst)
        && !is_local(pkt.family, &pkt.dst)
        && site_claim_class(gen.slot, pkt.family, &pkt.dst) == u64::from(CLAIM_DEVICES)
}

/// Whether some device of the generation is known by its MAC alone in `family`: without
/// one, no owner by first use names a device, and none is looked up (a map lookup saved on
/// every new flow to an address no device is bound to).
#[inline(always)]
fn has_owners(gen: &Gen, family: u8) -> bool {
    let none = if family == FAMILY_V4 {
        SITE_F_NO_OWNERS4
    } else {
        SITE_F_NO_OWNERS6
    };
    gen.site.flags & none == 0
}

/// The device known by its MAC alone (no address of `family` bound) whose MAC owns `addr`
/// by first use (`claim_address`), if any: the destination of a packet (`device_at` from
/// upstream, `destination` from a device port).
/// Bypass class: without it, what upstream sends to such a device is judged by no policy
/// of its own — it would reach an isolated device, and any session opened on it would pass
/// as unmanaged. The address names its owner until another MAC claims it (the claim
/// overwrites the entry) or the owner leaves it unused for TIMEOUT_DEST_OWNER_NS, far past
/// the claim's TIMEOUT_LL_OWNER_NS (bypass class: a device silent for the claim's 10
/// minutes was reached from upstream as no device's), as the nftables frame stage's
/// `ownidx` maps keep it. IPv6 link-local addresses are not looked up: from a device port the frame's MAC
/// names their device (`destination`, as it does IPv4's, 169.254/16); from upstream nothing
/// is routed to them (an upstream port of a bridge: docs/reliability.md, *Open findings*).
/// IPv4's are from upstream, as on nftables. A BPF function of its own: inlined, its exits multiplied the paths the
/// verifier walks after its call sites.
#[inline(never)]
fn owned_device(slot: u8, now: u64, family: u8, addr: &Addr) -> Option<&'static Device> {
    if parse::is_unspecified_or_link_local(family, addr) {
        return None;
    }
    // SAFETY: see LZ_IFACE_HIGH above.
    let owner = unsafe { LZ_LL_OWNER.get(word::owner_key(family, addr)) }?;
    // As long as the frame stage's `ownidx` elements live (the two dataplanes find the
    // same owners).
    if expired(now, owner.last_seen_ns, TIMEOUT_DEST_OWNER_NS) {
        return None;
    }
    let dev = lookup_mac(slot, Mac::of_owner(owner))?;
    // A device given an address of the family since it claimed this one is found by that
    // address, no longer by this one.
    if dev.flags & no_addr_flag(family) != 0 {
        Some(dev)
    } else {
        None
    }
}

/// The device flag saying the inventory binds it no address of `family`.
#[inline(always)]
fn no_addr_flag(family: u8) -> u8 {
    if family == FAMILY_V4 {
        DEV_F_NO_IP4
    } else {
        DEV_F_NO_IP6
    }
}

// === The single exit: counters and events ===

/// The clock of every timestamp the program keeps: CLOCK_MONOTONIC_COARSE, as
/// CLOCK_MONOTONIC but at the resolution of the scheduler tick (1 to 10 ms). The shortest
/// interval judged by it is a token bucket's millisecond refill and the shortest timeout
/// is seconds; `bpf_ktime_get_ns` reads the clock source and costs as much as a map
/// lookup, this reads a word the tick updated.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Whether more than `timeout` has passed since `then`. A timestamp ahead of `now` is
/// fresh, not expired: one written from userspace with the precise clock can be a tick
/// ahead of the coarse one. Two compares, where `now.saturating_sub(then) > timeout`
/// became a branch ladder (the BPF target has no select) on every packet of a flow.
#[inline(always)]
fn expired(now: u64, then: u64, timeout: u64) -> bool {
    now > then && now - then > timeout
}

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32, by: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, only this CPU writes it.
        unsafe { *c += by };
    }
}

/// Counts a packet rule `rule` decided (see `lazaret_abi::MAP_RULE_HITS`).
#[inline(always)]
fn rule_hit(gen: &Gen, rule: u32) {
    if rule != NO_RULE && rule < MAX_RULES {
        bump(&LZ_RULE_HITS, rule_hit_index(gen.slot, rule), 1);
    }
}

#[inline(always)]
fn account(gen: &Gen, v: &Verdict, side: u8, len: u64) {
    bump(&LZ_STATS, stats_index(v.reason, side), 1);
    // A rule's hits are the packets it decided: a flow's opening here, its re-judgements
    // where they happen (they pass as AllowFlow). A packet its flow passes counts for its
    // device and the verdict, not for the rule again (a per-CPU update fewer on the
    // established path, the most common).
    if v.reason != Reason::AllowFlow {
        rule_hit(gen, v.rule);
    }
    if v.dev.id == 0 {
        return;
    }
    let passes = v.reason.passes();
    // A per-CPU array the verifier inlines; the cell is the device's for as long as it is
    // in either slot (see `Device::cell`).
    let Some(c) = LZ_DEV_COUNT.get_ptr_mut(u32::from(v.dev.cell)) else {
        return;
    };
    // SAFETY: a per-CPU value, only this CPU writes it.
    let c = unsafe { &mut *c };
    if passes {
        c.allowed_packets += 1;
        c.allowed_bytes += len;
    } else {
        c.denied_packets += 1;
        c.denied_bytes += len;
    }
    c.last_seen_ns = gen.now;
}

/// Takes one token of `source`'s bucket in `buckets` (unknown sources' events,
/// promotions): a flooding source exhausts only its own bucket.
#[inline(always)]
fn take_token(
    gen: &Gen,
    buckets: &LruHashMap<u64, TokenBucket>,
    source: u64,
    rate: u32,
    burst: u32,
) -> bool {
    let burst_milli = u64::from(burst) * 1000;
    match buckets.get_ptr_mut(source) {
        // SAFETY: pointer from a successful lookup; races between CPUs only blur the rate a
        // little, never overflow it badly.
        Some(b) => take_from(gen.now, unsafe { &mut *b }, rate, burst_milli),
        None => {
            let b = TokenBucket {
                tokens_milli: burst_milli.saturating_sub(1000),
                last_ns: gen.now,
            };
            let _ = buckets.insert(source, b, 0);
            burst_milli >= 1000
        }
    }
}

/// Takes one token of bucket `b`, refilled at `rate` per second up to `burst_milli`
/// thousandths.
#[inline(always)]
fn take_from(now: u64, b: &mut TokenBucket, rate: u32, burst_milli: u64) -> bool {
    let rate = u64::from(rate);
    // Cap the elapsed time so the product stays small: plain u64 arithmetic, no overflow
    // checks (those need 128-bit multiplies BPF does not have).
    let mut elapsed_ms = now.saturating_sub(b.last_ns) / 1_000_000;
    if elapsed_ms > 1_000_000 {
        elapsed_ms = 1_000_000;
    }
    let refill = elapsed_ms * rate;
    let tokens = if b.tokens_milli + refill > burst_milli {
        burst_milli
    } else {
        b.tokens_milli + refill
    };
    if refill > 0 {
        b.last_ns = now;
    }
    if tokens >= 1000 {
        b.tokens_milli = tokens - 1000;
        true
    } else {
        // Written only when it changed: an empty bucket under a flood stays a clean cache
        // line (the unknown sources' shared one is asked from every CPU).
        if b.tokens_milli != tokens {
            b.tokens_milli = tokens;
        }
        false
    }
}

/// Takes one token of the event bucket at `index` of an array: a managed device's, by its
/// cell, or the one unknown sources share. A bucket never used (all zero: a fresh cell)
/// starts full, as a new entry of a hash does.
#[inline(always)]
fn take_array_token(
    gen: &Gen,
    buckets: &Array<TokenBucket>,
    index: u32,
    rate: u32,
    burst: u32,
) -> bool {
    let Some(b) = buckets.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: an array slot; races between CPUs only blur the rate a little.
    let b = unsafe { &mut *b };
    let burst_milli = u64::from(burst) * 1000;
    if b.last_ns == 0 {
        b.tokens_milli = burst_milli.saturating_sub(1000);
        b.last_ns = gen.now;
        return burst_milli >= 1000;
    }
    take_from(gen.now, b, rate, burst_milli)
}

/// Sends the verdict's event, within its source's rate. A BPF function of its own: it is
/// off the hot path (allowed packets of known flows send nothing), and its stack (the
/// token bucket, the ring-buffer entry) is not added to the judge's.
#[inline(never)]
fn report(gen: &Gen, v: &Verdict, side: u8, pkt: Option<&Pkt>, ctx: &XdpContext) {
    // Read again rather than passed: BPF functions take at most five arguments.
    let ifindex = ctx.ingress_ifindex() as u32;
    let src_mac = match pkt {
        Some(p) => p.src_mac,
        None => parse::src_mac(ctx).unwrap_or(Mac::ZERO),
    };
    let (rate, burst) = (gen.site.event_rate, gen.site.event_burst);
    // A device's own budget pays only for frames it provably sent: from its side, past
    // identity, on a flow it opened. A frame upstream sent to it, one claiming its
    // identity (a spoof, a cloned MAC before identity), another device's flow refused by
    // its policy as the responder (`DIR_PEER_INIT`), or a packet of a flow judged again
    // (which may be the peer's reply) spends its source MAC's: otherwise a flood in the
    // device's name would use up its budget and silence its own deviations.
    // (`v.dir` with the REJUDGED bit is not DIR_DEVICE_INIT.)
    let sender = v.dev.id != 0
        && side == SIDE_DEVICES
        && v.dir == DIR_DEVICE_INIT
        && v.reason.spends_own_budget();
    let token = if sender {
        take_array_token(gen, &LZ_DEV_EVBUCKET, u32::from(v.dev.cell), rate, burst)
    } else {
        // Other sources by MAC, with the top bit set (the map once held devices' too);
        // then the budget they share, so that a flood whose every frame has a MAC of its
        // own (each finding a fresh bucket) cannot fill the ring buffer and drown the
        // events that quarantine a deviating device. In this order, a source that
        // exhausted its own bucket spends none of the shared one.
        take_token(gen, &LZ_EV_BUCKET, (1u64 << 63) | src_mac.0, rate, burst)
            && take_array_token(
                gen,
                &LZ_EV_UNKNOWN,
                0,
                rate.saturating_mul(UNKNOWN_EVENTS_SHARE),
                burst.saturating_mul(UNKNOWN_EVENTS_SHARE),
            )
    };
    if !token {
        bump(&LZ_EV_STATS, EV_STAT_RATE_LIMITED, 1);
        return;
    }
    let Some(mut entry) = LZ_EVENTS.reserve::<Event>(0) else {
        bump(&LZ_EV_STATS, EV_STAT_RINGBUF_FULL, 1);
        return;
    };
    let kind = if v.learn {
        EVENT_LEARN
    } else {
        v.reason.event_kind()
    };
    // Fill the reserved ring-buffer slot in place: an Event on the stack would not fit.
    let ev = entry.as_mut_ptr();
    // SAFETY: the entry is a reserved, exclusively owned, 8-aligned slot of
    // size_of::<Event>() bytes; zeroing it first makes every field (padding included)
    // initialised, and all zeros is a valid Event.
    let ev = unsafe {
        word::zero_words(ev);
        &mut *ev
    };
    ev.version = EVENT_VERSION;
    ev.kind = kind;
    ev.reason = v.reason as u8;
    ev.side = side;
    ev.dir = v.dir & !REJUDGED;
    if v.dir & REJUDGED != 0 {
        ev.flags = EVENT_F_REJUDGED;
    }
    ev.ifindex = ifindex;
    ev.rule = v.rule;
    ev.ts_ns = gen.now;
    ev.device = v.dev.id;
    ev.generation = gen.site.generation;
    match pkt {
        Some(p) => {
            ev.family = if p.l3 == L3::Ip { p.family } else { 0 };
            ev.proto = p.proto;
            ev.vlan = p.vlan;
            ev.src_port = p.sport;
            ev.dst_port = p.dport;
            word::event_addrs(ev, &p.src, &p.dst);
            word::event_macs(ev, src_mac, p.dst_mac);
        }
        None => word::event_macs(ev, src_mac, Mac::ZERO),
    }
    entry.submit(0);
    bump(&LZ_EV_STATS, EV_STAT_SENT, 1);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
