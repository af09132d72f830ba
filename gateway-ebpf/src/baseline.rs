//! Baseline XDP programs for benchmarks: `lazaret_baseline` parses Ethernet (and up to two
//! VLAN tags) and the IP header, then passes; `lazaret_empty` only passes. `cargo xtask bench datapath` measures lazaret's program against it in
//! the same run, so ratios survive a noisy machine. `lazaret_drop` drops and counts every
//! frame: `cargo xtask bench dataplanes` measures with it how fast its sender can bring
//! frames to the gateway's hook at all.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

mod l2;

#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_baseline(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let Some((ethertype, off)) = l2::skip(start, end) else {
        return xdp_action::XDP_DROP;
    };
    let ip_len = match ethertype {
        0x0800 => 20,
        0x86dd => 40,
        _ => return xdp_action::XDP_PASS,
    };
    if start + off + ip_len > end {
        return xdp_action::XDP_DROP;
    }
    // Read the first byte so the header access is not optimised away.
    // SAFETY: bounds-checked above.
    let version = unsafe { *((start + off) as *const u8) } >> 4;
    if version == 4 || version == 6 {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// The empty program: what BPF_PROG_TEST_RUN itself costs per repetition (the bench
/// subtracts it from both sides for its net ratios).
#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Frames `lazaret_drop` dropped, one per-CPU counter.
#[map]
static LZ_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Drops every frame and counts it: the cheapest verdict XDP can give. No dataplane drops
/// frames faster on the same sender and link, so the rate it counts is the ceiling the
/// dataplanes bench reads the others against.
#[xdp]
#[expect(
    unreachable_pub,
    reason = "the #[xdp] wrapper is the exported program; it takes this visibility"
)]
pub fn lazaret_drop(_ctx: XdpContext) -> u32 {
    if let Some(n) = LZ_DROPPED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; XDP runs to completion without
        // preemption.
        unsafe { *n += 1 };
    }
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
