//! Floor program for benchmarks: the least a program meeting the datapath issue's flow
//! requirements does for one packet — parse Ethernet (up to two VLAN tags), IPv4 and the
//! ports, find the flow in an LRU hash keyed by the normalized 5-tuple (lazaret's own
//! `FlowKey`, `FlowValue` and capacity) and refresh its timestamp, or insert it. No identity,
//! policy, counters or events. `cargo xtask bench datapath` times it next to the baseline
//! (parse only) and lazaret in the same run: what stateful flow tracking alone costs, and so
//! what a ratio to the baseline can and cannot reach.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::LruHashMap,
    programs::XdpContext,
};
use lazaret_abi::{FlowKey, FlowValue, FAMILY_V4, FLOW_NEW, MAX_FLOWS};

mod l2;
#[expect(dead_code, reason = "the floor builds flow keys and values only")]
mod word;

use word::Addr;

#[map]
static LZ_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_floor(ctx: XdpContext) -> u32 {
    floor(&ctx).unwrap_or(xdp_action::XDP_DROP)
}

#[inline(always)]
fn floor(ctx: &XdpContext) -> Option<u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    let (ethertype, off) = l2::skip(start, end)?;
    if ethertype != 0x0800 {
        return Some(xdp_action::XDP_PASS);
    }
    let ip = start + off;
    if ip + 20 > end {
        return None;
    }
    // SAFETY: every read below is bounds-checked against `end` first.
    let ihl = usize::from(unsafe { *(ip as *const u8) } & 0x0f) * 4;
    // Bounded for the verifier: 20..=60 bytes of header, then the two ports.
    if !(20..=60).contains(&ihl) || ip + ihl + 4 > end {
        return None;
    }
    // SAFETY: 20 bytes of IPv4 header and the 4 bytes of ports after `ihl` are within
    // `end` (checked just above).
    let (proto, src, dst, sport, dport) = unsafe {
        (
            *((ip + 9) as *const u8),
            ((ip + 12) as *const [u8; 4]).read_unaligned(),
            ((ip + 16) as *const [u8; 4]).read_unaligned(),
            u16::from_be(((ip + ihl) as *const u16).read_unaligned()),
            u16::from_be(((ip + ihl + 2) as *const u16).read_unaligned()),
        )
    };
    // Both directions share a key, as in lazaret: the lower (address, port) first, built
    // a word at a time as lazaret builds it (see word.rs).
    let (src, dst) = (Addr::v4(src), Addr::v4(dst));
    let key: FlowKey = if (src.ordered(), sport) <= (dst.ordered(), dport) {
        word::flow_key(&src, sport, &dst, dport, proto, FAMILY_V4)
    } else {
        word::flow_key(&dst, dport, &src, sport, proto, FAMILY_V4)
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
    Some(xdp_action::XDP_PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
