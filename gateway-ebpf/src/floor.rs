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
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{HashMap, LruHashMap},
    programs::XdpContext,
};
use lazaret_abi::{FlowKey, FlowValue, FAMILY_V4, FAMILY_V6, FLOW_NEW, MAX_FLOWS};

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

/// The normalized 5-tuple of an IPv4 or IPv6 frame (lower (address, port) first, as in
/// lazaret), or the action for a frame without one: pass what is not IP, drop what is
/// malformed.
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
        word::flow_key(&src, sport, &dst, dport, proto, family)
    } else {
        word::flow_key(&dst, dport, &src, sport, proto, family)
    })
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
