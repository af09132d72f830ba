//! Ethernet and up to two VLAN tags, for the benchmark programs (baseline and floor): both
//! must parse exactly alike for their costs to compare.

/// The ethertype after at most two 802.1Q/802.1ad tags, and the offset of the header that
/// follows; `None` when the frame ends first.
#[inline(always)]
pub(crate) fn skip(start: usize, end: usize) -> Option<(u16, usize)> {
    if start + 14 > end {
        return None;
    }
    // SAFETY: the 14 bytes were bounds-checked above.
    let mut ethertype = u16::from_be(unsafe { *((start + 12) as *const u16) });
    let mut off = 14usize;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        if start + off + 4 > end {
            return None;
        }
        // SAFETY: bounds-checked above.
        ethertype = u16::from_be(unsafe { *((start + off + 2) as *const u16) });
        off += 4;
    }
    Some((ethertype, off))
}
