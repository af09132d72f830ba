//! Floor programs for benchmarks: the least a program meeting the datapath issue's flow
//! requirements does for one packet, with lazaret's own flow key, value, capacity, clock and
//! word-wise key building (see word.rs). No identity, policy, counters or events.
//! `cargo xtask bench datapath` times them next to lazaret in the same run: what stateful
//! flow tracking alone costs on each path, and so how far lazaret is from it.
//!
//! - `lazaret_floor`: parse Ethernet (up to two VLAN tags), IPv4 or IPv6 (with up to two
//!   hop-by-hop or destination-options headers) and the ports, find the flow in an LRU hash
//!   keyed by the normalized 5-tuple and refresh its timestamp, or insert it; pass.
//! - `lazaret_floor_deny`: the same parse and flow lookup (a miss), then one hash lookup
//!   standing for the policy check (a miss too); drop.
//! - `lazaret_floor_duties`: the floor plus the least a per-device gateway must do for a
//!   packet of a flow it passed before, if it is to keep lazaret's guarantees: read the
//!   port's side and the active policy generation, check the flow was judged under both
//!   that generation and its device's current epoch (a quarantine re-judges every flow),
//!   check the frame comes from the device's MAC (a spoofer on a confirmed 5-tuple is
//!   judged, not passed), and count the packet and its bytes for the device. The leanest
//!   layout for that: the epoch and the MAC in one record per device (one array lookup),
//!   one per-CPU counter block. What the established-path targets can be held to (see
//!   docs/benchmarks.md).
//! - `lazaret_floor_duties_unknown`: the same for a frame from a source no device has: the
//!   side and generation, the source's identity by address (behind an address filter, as
//!   lazaret's: its bit is clear) and by MAC (a device may be known by either; both
//!   miss), its event budget (a token bucket per source MAC, in an
//!   LRU hash: an exact bucket per source, so a flooder exhausts only its own), an event
//!   when the budget allows, a counter; drop.
//! - `lazaret_floor_duties_deny`: the same for a device's new flow its policy has no rule
//!   for: the side and generation, the flow-table miss, the source's identity by address
//!   (a hit) and its record's MAC, one hash lookup for the rule (keyed by the device's
//!   policy, the protocol and the port: the leanest order, a port no rule names is refused
//!   before any peer lookup), the device's event budget (an array bucket), an event when
//!   it allows, the device's counter; drop.
//! - `lazaret_floor_duties_open`: the same for a device's new flow its policy allows: as
//!   the denial's up to the rule lookup (a hit), then the flow inserted with its device's
//!   cell and the generation, the device's counter; pass.
//!
//! The duties floors stand for the controller where a bench has none: the deny floor
//! learns the device's address on its first packet, the established one the device's MAC
//! when it inserts the flow (the timed repetitions then find both).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use lazaret_abi::{
    AddrBits, FlowKey, FlowValue, COUNTER_SLOTS, ECHO_NONE, FAMILY_V4, FAMILY_V6, FLOW_NEW,
    IFACE_DIRECT, MAX_FLOWS, SIDE_DEVICES,
};

mod l2;
mod load;
#[expect(dead_code, reason = "the floor builds flow keys and values only")]
mod word;

use word::Addr;

#[map]
static LZ_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
/// Stands for the policy: empty, so its lookup misses as a denied packet's does.
#[map]
static LZ_FLOOR_RULES: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

/// The duties floor's interface sides, by ifindex (zeroed: every port a device port).
#[map]
static LZ_DUTY_IFACE: Array<u8> = Array::with_max_entries(IFACE_DIRECT, 0);
/// The duties floor's active generation.
#[map]
static LZ_DUTY_GEN: Array<u64> = Array::with_max_entries(1, 0);
/// The duties floor's device records, by cell.
#[map]
static LZ_DUTY_DEV: Array<DutyDev> = Array::with_max_entries(COUNTER_SLOTS, 0);
/// The duties floor's per-device packets and bytes, by cell.
#[map]
static LZ_DUTY_COUNT: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// A device as the duties floors check a packet against it: its epoch, its policy and its
/// MAC (the frame's six bytes as one little-endian word), in one record.
#[repr(C)]
#[derive(Clone, Copy)]
struct DutyDev {
    epoch: u32,
    policy: u32,
    mac: u64,
}

/// Device identity by address (the address's two words; the family is left out: a
/// floor) and by MAC, to the device's cell.
#[map]
static LZ_DUTY_ADDR: HashMap<[u64; 2], u32> = HashMap::with_max_entries(1024, 0);
#[map]
static LZ_DUTY_MAC: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);
/// The unknown source's address filter (lazaret's `LZ_DEV_ADDRBITS`, one slot).
#[map]
static LZ_DUTY_ADDRBITS: Array<AddrBits> = Array::with_max_entries(1, 0);
/// Event budgets: unknown sources' by MAC, devices' by cell.
#[map]
static LZ_DUTY_SRC_BUCKET: LruHashMap<u64, Bucket> = LruHashMap::with_max_entries(4096, 0);
#[map]
static LZ_DUTY_DEV_BUCKET: Array<Bucket> = Array::with_max_entries(COUNTER_SLOTS, 0);
#[map]
static LZ_DUTY_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);
/// Verdict counters (one slot per verdict a duties floor gives).
#[map]
static LZ_DUTY_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

/// A token bucket: thousandths of a token, and when it was last refilled.
#[repr(C)]
#[derive(Clone, Copy)]
struct Bucket {
    milli: u64,
    at_ns: u64,
}

/// Events a source may send per second, and in a burst (lazaret's defaults' order).
const EV_RATE: u64 = 10;
const EV_BURST: u64 = 20;

/// Refills `b` for the time since it was last refilled and takes a token if it has one.
#[inline(always)]
fn take(b: &mut Bucket, now: u64) -> bool {
    let refill = (now.wrapping_sub(b.at_ns) / 1_000_000) * EV_RATE;
    b.at_ns = now;
    let milli = b.milli + refill;
    let milli = if milli > EV_BURST * 1000 {
        EV_BURST * 1000
    } else {
        milli
    };
    let took = milli >= 1000;
    b.milli = if took { milli - 1000 } else { milli };
    took
}

/// Reports `who` (a MAC or a cell) through the ring buffer.
#[inline(always)]
fn event(who: u64, why: u64) {
    // Reserved and submitted, as lazaret's events are.
    if let Some(mut e) = LZ_DUTY_EVENTS.reserve::<[u64; 2]>(0) {
        e.write([who, why]);
        e.submit(0);
    }
}

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_floor(ctx: XdpContext) -> u32 {
    let key = match flow_key(&ctx) {
        Ok(k) => k,
        Err(action) => return action,
    };
    // SAFETY: a helper without arguments; lazaret's clock (see `now` in main.rs).
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    match LZ_FLOWS.get_ptr_mut(key) {
        // SAFETY: the pointer comes from a successful lookup in this program run.
        Some(flow) => unsafe { (*flow).last_seen_ns = now },
        None => {
            let mut slot = core::mem::MaybeUninit::<FlowValue>::uninit();
            let flow = word::new_flow(&mut slot, now, FLOW_NEW, 0);
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by reference: moved, the value is copied, and the copy of its zero words becomes a memset call (see word.rs)"
            )]
            let _ = LZ_FLOWS.insert(&key, &*flow, 0);
        }
    }
    xdp_action::XDP_PASS
}

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_floor_deny(ctx: XdpContext) -> u32 {
    let key = match flow_key(&ctx) {
        Ok(k) => k,
        Err(action) => return action,
    };
    if LZ_FLOWS.get_ptr_mut(key).is_some() {
        return xdp_action::XDP_PASS;
    }
    // The responder's port and the protocol, as a policy lookup would use them.
    let rule = u64::from(key.port_b) | u64::from(key.proto) << 16;
    // SAFETY: hash-map lookups return pointers into the map valid for this run.
    match unsafe { LZ_FLOOR_RULES.get(rule) } {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_DROP,
    }
}

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_floor_duties(ctx: XdpContext) -> u32 {
    // Fail closed without a side or a generation, as lazaret does.
    let Some(side) = LZ_DUTY_IFACE.get(ctx.ingress_ifindex() as u32).copied() else {
        return xdp_action::XDP_DROP;
    };
    let Some(generation) = LZ_DUTY_GEN.get(0).copied() else {
        return xdp_action::XDP_DROP;
    };
    let (key, src_is_a) = match keyed(&ctx) {
        Ok(k) => k,
        Err(action) => return action,
    };
    let Some(mac) = source_mac(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: a helper without arguments; lazaret's clock (see `now` in main.rs).
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(flow) = LZ_FLOWS.get_ptr_mut(key) else {
        let mut slot = core::mem::MaybeUninit::<FlowValue>::uninit();
        // The opener is the device (the initiator field records which endpoint it is).
        let flow = word::new_flow(&mut slot, now, FLOW_NEW, u8::from(!src_is_a));
        let cell = cell_of(mac);
        flow.cell_a = cell as u16;
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "by reference, as in lazaret_floor"
        )]
        let _ = LZ_FLOWS.insert(&key, &*flow, 0);
        // The device record's epoch stays 0, as the entry's.
        learn_device(cell, mac);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: the pointer comes from a successful lookup in this program run.
    let flow = unsafe { &mut *flow };
    let cell = u32::from(flow.cell_a);
    let Some(dev) = LZ_DUTY_DEV.get(cell) else {
        return xdp_action::XDP_DROP;
    };
    // A packet from the device on a device port must carry the device's MAC; a reply
    // comes from its peer. Anything else is the full path's to judge; this floor drops it.
    let from_device = (flow.initiator == 0) == src_is_a;
    if flow.generation != generation
        || flow.epoch_a != dev.epoch
        || (from_device && side == SIDE_DEVICES && dev.mac != mac)
    {
        return xdp_action::XDP_DROP;
    }
    flow.last_seen_ns = now;
    count_device(cell, &ctx);
    xdp_action::XDP_PASS
}

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_floor_duties_unknown(ctx: XdpContext) -> u32 {
    let Some(slot) = port_and_slot(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    let (src, ..) = match tuple(&ctx) {
        Ok(t) => t,
        Err(action) => return action,
    };
    let Some(mac) = source_mac(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    // The address lookup behind an address filter, as lazaret's (an array the verifier
    // inlines; a clear bit proves no device has the address). Nothing sets its bits here:
    // the benchmark's unknown source finds its bit clear in lazaret's filter too.
    let maybe_device = LZ_DUTY_ADDRBITS
        .get(0)
        .is_none_or(|bits| bits.may_hold((src.0[0], src.0[1])));
    // SAFETY: hash-map lookups return pointers into the map valid for this run.
    if (maybe_device && unsafe { LZ_DUTY_ADDR.get(addr_key(&src, slot)).is_some() })
        // SAFETY: as above.
        || unsafe { LZ_DUTY_MAC.get(mac | slot << 48).is_some() }
    {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: a helper without arguments; lazaret's clock.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    match LZ_DUTY_SRC_BUCKET.get_ptr_mut(mac) {
        Some(b) => {
            // SAFETY: the pointer comes from a successful lookup in this program run.
            if take(unsafe { &mut *b }, now) {
                event(mac, 1);
            }
        }
        None => {
            let b = Bucket {
                milli: (EV_BURST - 1) * 1000,
                at_ns: now,
            };
            let _ = LZ_DUTY_SRC_BUCKET.insert(mac, b, 0);
            event(mac, 1);
        }
    }
    // Its one count: an unknown source has no device counter.
    bump_stat(1);
    xdp_action::XDP_DROP
}

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_floor_duties_deny(ctx: XdpContext) -> u32 {
    let Some(slot) = port_and_slot(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    let t = match tuple(&ctx) {
        Ok(t) => t,
        Err(action) => return action,
    };
    let Some(mac) = source_mac(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    let (key, _) = normalize(&t);
    let (src, _, _, dport, proto, _) = t;
    if LZ_FLOWS.get_ptr_mut(key).is_some() {
        return xdp_action::XDP_PASS;
    }
    let addr = addr_key(&src, slot);
    // SAFETY: as above.
    let Some(cell) = (unsafe { LZ_DUTY_ADDR.get(addr) }).copied() else {
        // The first packet makes the source a device.
        let cell = cell_of(mac);
        let _ = LZ_DUTY_ADDR.insert(addr, cell, 0);
        learn_device(cell, mac);
        return xdp_action::XDP_DROP;
    };
    let Some(dev) = LZ_DUTY_DEV.get(cell) else {
        return xdp_action::XDP_DROP;
    };
    if dev.mac != mac {
        return xdp_action::XDP_DROP;
    }
    let rule = u64::from(dev.policy) << 32 | u64::from(proto) << 16 | u64::from(dport);
    // SAFETY: as above.
    if unsafe { LZ_FLOOR_RULES.get(rule) }.is_some() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: as above.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(b) = LZ_DUTY_DEV_BUCKET.get_ptr_mut(cell) {
        // SAFETY: an array slot of this program's map.
        if take(unsafe { &mut *b }, now) {
            event(u64::from(cell), 2);
        }
    }
    count_device(cell, &ctx);
    xdp_action::XDP_DROP
}

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_floor_duties_open(ctx: XdpContext) -> u32 {
    let Some(generation) = LZ_DUTY_GEN.get(0).copied() else {
        return xdp_action::XDP_DROP;
    };
    let Some(slot) = port_and_slot(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    let t = match tuple(&ctx) {
        Ok(t) => t,
        Err(action) => return action,
    };
    let Some(mac) = source_mac(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    let (key, src_is_a) = normalize(&t);
    let (src, _, _, dport, proto, _) = t;
    // SAFETY: a helper without arguments; lazaret's clock.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(flow) = LZ_FLOWS.get_ptr_mut(key) {
        // SAFETY: the pointer comes from a successful lookup in this program run.
        unsafe { (*flow).last_seen_ns = now };
        return xdp_action::XDP_PASS;
    }
    let addr = addr_key(&src, slot);
    // SAFETY: hash-map lookups return pointers into the map valid for this run.
    let cell = match unsafe { LZ_DUTY_ADDR.get(addr) } {
        Some(c) => *c,
        None => {
            // A device's first packet makes it known.
            let cell = cell_of(mac);
            let _ = LZ_DUTY_ADDR.insert(addr, cell, 0);
            learn_device(cell, mac);
            cell
        }
    };
    let Some(dev) = LZ_DUTY_DEV.get(cell) else {
        return xdp_action::XDP_DROP;
    };
    if dev.mac != mac {
        return xdp_action::XDP_DROP;
    }
    let rule_key = u64::from(dev.policy) << 32 | u64::from(proto) << 16 | u64::from(dport);
    // SAFETY: as above.
    let rule = match unsafe { LZ_FLOOR_RULES.get(rule_key) } {
        Some(r) => *r,
        None => {
            // Stands for the controller: the policy allows what it is first asked. (The
            // value from the stack: `&0` would be a constant in .rodata, which the bench's
            // interpreter does not relocate.)
            let rule = u32::from(proto);
            let _ = LZ_FLOOR_RULES.insert(rule_key, rule, 0);
            rule
        }
    };
    let mut slot = core::mem::MaybeUninit::<FlowValue>::uninit();
    let flow = word::new_flow(&mut slot, now, FLOW_NEW, u8::from(!src_is_a));
    flow.cell_a = cell as u16;
    flow.generation = generation;
    flow.rule = rule;
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by reference, as in lazaret_floor"
    )]
    let _ = LZ_FLOWS.insert(&key, &*flow, 0);
    count_device(cell, &ctx);
    xdp_action::XDP_PASS
}

/// The active slot (the generation's parity), if the frame arrived on a device port: an
/// unknown source and a device's new flow are judged there (from upstream, a source is
/// never a device). `None` also without a side or a generation; the floors then drop (they
/// time device ports only).
#[inline(always)]
fn port_and_slot(ctx: &XdpContext) -> Option<u64> {
    let side = *LZ_DUTY_IFACE.get(ctx.ingress_ifindex() as u32)?;
    let generation = *LZ_DUTY_GEN.get(0)?;
    (side == SIDE_DEVICES).then_some(generation & 1)
}

/// An identity key of the active slot: the address's words, the slot in the second (an
/// IPv4 address leaves it zero; for a floor, an IPv6 address's low bit may alias).
#[inline(always)]
fn addr_key(a: &word::Addr, slot: u64) -> [u64; 2] {
    [a.0[0], a.0[1] ^ slot]
}

/// Stands for the controller's cell of a device: one per source MAC here (the bench's
/// devices differ in their last two bytes).
#[inline(always)]
fn cell_of(mac: u64) -> u32 {
    ((mac >> 32) as u32) % COUNTER_SLOTS
}

/// Stands for the controller's write of a device's record (its MAC; epoch 0).
#[inline(always)]
fn learn_device(cell: u32, mac: u64) {
    if let Some(d) = LZ_DUTY_DEV.get_ptr_mut(cell) {
        // SAFETY: an array slot; only this program writes it.
        unsafe { (*d).mac = mac };
    }
}

/// Counts the packet and its bytes for the device at `cell`.
#[inline(always)]
fn count_device(cell: u32, ctx: &XdpContext) {
    if let Some(c) = LZ_DUTY_COUNT.get_ptr_mut(cell) {
        // SAFETY: a per-CPU slot, only this CPU writes it.
        unsafe {
            (*c)[0] += 1;
            (*c)[1] += (ctx.data_end() - ctx.data()) as u64;
        }
    }
}

#[inline(always)]
fn bump_stat(i: u32) {
    if let Some(c) = LZ_DUTY_STATS.get_ptr_mut(i) {
        // SAFETY: a per-CPU slot, only this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// The frame's source MAC as one little-endian word.
#[inline(always)]
fn source_mac(ctx: &XdpContext) -> Option<u64> {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return None;
    }
    // SAFETY: bytes 6..12 were bounds-checked above.
    Some(unsafe {
        u64::from(load::u32_at::<6>(start)) | u64::from(load::u16_at::<10>(start)) << 32
    })
}

/// The normalized 5-tuple of an IPv4 or IPv6 frame (lower (address, port) first, as in
/// lazaret), or the action for a frame without one: pass what is not IP, drop what is
/// malformed. The floors' own: its code stays as it was when they were first measured.
#[inline(always)]
fn flow_key(ctx: &XdpContext) -> Result<FlowKey, u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    let (ethertype, off) = l2::skip(start, end).ok_or(xdp_action::XDP_DROP)?;
    let tuple = match ethertype {
        0x0800 => v4(start + off, end),
        0x86dd => v6(start + off, end),
        _ => return Err(xdp_action::XDP_PASS),
    };
    let (src, sport, dst, dport, proto, family) = tuple.ok_or(xdp_action::XDP_DROP)?;
    Ok(if (src.ordered(), sport) <= (dst.ordered(), dport) {
        word::flow_key((&src, sport), (&dst, dport), proto, family, ECHO_NONE)
    } else {
        word::flow_key((&dst, dport), (&src, sport), proto, family, ECHO_NONE)
    })
}

/// As `flow_key`, and whether the source is the key's first endpoint (the duties floor
/// of a confirmed flow needs to know whether the packet comes from the flow's device).
#[inline(always)]
fn keyed(ctx: &XdpContext) -> Result<(FlowKey, bool), u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    let (ethertype, off) = l2::skip(start, end).ok_or(xdp_action::XDP_DROP)?;
    let tuple = match ethertype {
        0x0800 => v4(start + off, end),
        0x86dd => v6(start + off, end),
        _ => return Err(xdp_action::XDP_PASS),
    };
    let (src, sport, dst, dport, proto, family) = tuple.ok_or(xdp_action::XDP_DROP)?;
    let src_is_a = (src.ordered(), sport) <= (dst.ordered(), dport);
    Ok(if src_is_a {
        (
            word::flow_key((&src, sport), (&dst, dport), proto, family, ECHO_NONE),
            true,
        )
    } else {
        (
            word::flow_key((&dst, dport), (&src, sport), proto, family, ECHO_NONE),
            false,
        )
    })
}

/// The 5-tuple and family of an IPv4 or IPv6 frame, or the action for a frame without one.
#[inline(always)]
fn tuple(ctx: &XdpContext) -> Result<Tuple, u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    let (ethertype, off) = l2::skip(start, end).ok_or(xdp_action::XDP_DROP)?;
    let tuple = match ethertype {
        0x0800 => v4(start + off, end),
        0x86dd => v6(start + off, end),
        _ => return Err(xdp_action::XDP_PASS),
    };
    tuple.ok_or(xdp_action::XDP_DROP)
}

/// The flow key of a 5-tuple, and whether its source is endpoint a.
#[inline(always)]
fn normalize(&(src, sport, dst, dport, proto, family): &Tuple) -> (FlowKey, bool) {
    let src_is_a = (src.ordered(), sport) <= (dst.ordered(), dport);
    if src_is_a {
        (
            word::flow_key((&src, sport), (&dst, dport), proto, family, ECHO_NONE),
            true,
        )
    } else {
        (
            word::flow_key((&dst, dport), (&src, sport), proto, family, ECHO_NONE),
            false,
        )
    }
}

type Tuple = (Addr, u16, Addr, u16, u8, u8);

#[inline(always)]
fn v4(ip: usize, end: usize) -> Option<Tuple> {
    if ip + 20 > end {
        return None;
    }
    // SAFETY: 20 bytes bounds-checked above.
    let ihl = usize::from(unsafe { *(ip as *const u8) } & 0x0f) * 4;
    // Bounded for the verifier: 20..=60 bytes of header, then the two ports.
    if !(20..=60).contains(&ihl) || ip + ihl + 4 > end {
        return None;
    }
    // SAFETY: the header and the 4 bytes of ports after it are within `end` (checked).
    let (proto, src, dst, sport, dport) = unsafe {
        (
            *((ip + 9) as *const u8),
            load::u32_at::<12>(ip),
            load::u32_at::<16>(ip),
            u16::from_be(load::u16_at::<0>(ip + ihl)),
            u16::from_be(load::u16_at::<2>(ip + ihl)),
        )
    };
    Some((Addr::v4(src), sport, Addr::v4(dst), dport, proto, FAMILY_V4))
}

#[inline(always)]
fn v6(ip: usize, end: usize) -> Option<Tuple> {
    if ip + 40 > end {
        return None;
    }
    // SAFETY: as above.
    let mut next = unsafe { *((ip + 6) as *const u8) };
    // SAFETY: the 40-byte header was bounds-checked above.
    let src = unsafe { Addr([load::u64_at::<8>(ip), load::u64_at::<16>(ip)]) };
    // SAFETY: as above.
    let dst = unsafe { Addr([load::u64_at::<24>(ip), load::u64_at::<32>(ip)]) };
    let mut at = ip + 40;
    // Hop-by-hop and destination options, at most two (lazaret walks a bounded chain too).
    for _ in 0..2 {
        if next != 0 && next != 60 {
            break;
        }
        if at + 2 > end {
            return None;
        }
        // SAFETY: two bytes bounds-checked above.
        let (nh, len) = unsafe { (*(at as *const u8), *((at + 1) as *const u8)) };
        next = nh;
        at += (usize::from(len) + 1) * 8;
    }
    if at + 4 > end {
        return None;
    }
    // SAFETY: the 4 bytes of ports are within `end` (checked above).
    let (sport, dport) = unsafe {
        (
            u16::from_be(load::u16_at::<0>(at)),
            u16::from_be(load::u16_at::<2>(at)),
        )
    };
    Some((src, sport, dst, dport, next, FAMILY_V6))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
