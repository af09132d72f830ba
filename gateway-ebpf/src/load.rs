//! Loads from the frame at any alignment, one BPF instruction each.
//!
//! LLVM's BPF backend treats a load it cannot prove aligned as a byte load, a shift and an
//! OR per byte: an Ethernet header's fields, a VLAN-tagged IPv4 header's addresses and
//! every TCP port sit at offsets that are 2 mod 4, so reading a frame cost several
//! instructions per byte (and the registers to hold the bytes, spilled to the stack).
//! The kernel loads from packet memory at any alignment on this architecture: the verifier
//! checks a packet pointer's alignment only when strict alignment is asked for
//! (`BPF_F_STRICT_ALIGNMENT`, or an architecture without efficient unaligned access). The
//! target-wide `allows-misaligned-mem-access` flag would tell LLVM so, but it also merges
//! stack stores into misaligned wider ones, which the verifier refuses (the stack *is*
//! checked strictly). So packet loads, and only they, are written as the one instruction
//! they are.
//!
//! Every caller has bounds-checked the bytes it loads against `data_end` first: the
//! verifier still checks each of these loads against the range it has proven.

use core::arch::asm;

/// The `u16` at byte `K` from `p`, in the frame's (network) byte order.
///
/// # Safety
/// `p + K .. p + K + 2` lies inside the frame and has been checked against `data_end`.
#[inline(always)]
pub(crate) unsafe fn u16_at<const K: i16>(p: usize) -> u16 {
    let v: u64;
    // SAFETY: the caller's; a load of packet memory the verifier checks again.
    unsafe {
        asm!("{v} = *(u16 *)({p} + {k})", p = in(reg) p, k = const K, v = lateout(reg) v,
            options(pure, readonly, nostack, preserves_flags));
    }
    v as u16
}

/// The `u32` at byte `K` from `p` (see [`u16_at`]).
///
/// # Safety
/// As [`u16_at`], for 4 bytes.
#[inline(always)]
pub(crate) unsafe fn u32_at<const K: i16>(p: usize) -> u32 {
    let v: u64;
    // SAFETY: the caller's; a load of packet memory the verifier checks again.
    unsafe {
        asm!("{v} = *(u32 *)({p} + {k})", p = in(reg) p, k = const K, v = lateout(reg) v,
            options(pure, readonly, nostack, preserves_flags));
    }
    v as u32
}

/// The `u64` at byte `K` from `p` (see [`u16_at`]).
///
/// # Safety
/// As [`u16_at`], for 8 bytes.
#[inline(always)]
pub(crate) unsafe fn u64_at<const K: i16>(p: usize) -> u64 {
    let v: u64;
    // SAFETY: the caller's; a load of packet memory the verifier checks again.
    unsafe {
        asm!("{v} = *(u64 *)({p} + {k})", p = in(reg) p, k = const K, v = lateout(reg) v,
            options(pure, readonly, nostack, preserves_flags));
    }
    v
}
