//! Baseline XDP program for benchmarks: parses Ethernet (and up to two VLAN tags) and the IP
//! header, then passes. `cargo xtask bench datapath` measures lazaret's program against it in
//! the same run, so ratios survive a noisy machine.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn lazaret_baseline(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + 14 > end {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: the 14 bytes were bounds-checked above.
    let mut ethertype = u16::from_be(unsafe { *((start + 12) as *const u16) });
    let mut off = 14usize;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        if start + off + 4 > end {
            return xdp_action::XDP_DROP;
        }
        // SAFETY: bounds-checked above.
        ethertype = u16::from_be(unsafe { *((start + off + 2) as *const u16) });
        off += 4;
    }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
