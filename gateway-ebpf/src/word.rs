//! Addresses and map keys built a machine word at a time.
//!
//! The BPF target does not expand `memset`, `memcpy` or `memcmp` inline: a zeroed padding
//! array, a copied address or a compared one becomes a call to a byte loop (16 iterations
//! for an IPv6 address), and LLVM also merges neighbouring zero stores into such calls. On
//! the hot path that was most of the executed instructions. So the packet's addresses are
//! [`Addr`] (two native words, 8-aligned), and every key a packet looks up is assembled
//! from words and reinterpreted as its `lazaret_abi` type: the same bytes, no byte loops.
//!
//! The word layouts below follow the `#[repr(C)]` types of `lazaret_abi` on a
//! little-endian target (the only one BPF programs are built for here); the differential
//! tests compare every lookup's outcome with the reference classifier's.

use lazaret_abi::{
    Device, Event, FlowKey, FlowValue, FragKey, Ip4Key, Ip6Key, LlKey, LlOwner, LocalKey, MacKey,
    PeerKey4, PeerKey6, PinKey, PortKey,
};

#[cfg(not(target_endian = "little"))]
compile_error!("the word layouts of map keys assume a little-endian BPF target");

/// An IPv4 or IPv6 address in network byte order (IPv4 in the first four bytes, the rest
/// zero), held as two native words: the bytes of the frame read as `[u64; 2]`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct Addr(pub [u64; 2]);

impl Addr {
    /// An IPv4 address from its four bytes loaded as a native word.
    #[inline(always)]
    pub(crate) fn v4(w: u32) -> Addr {
        Addr([u64::from(w), 0])
    }

    /// Byte `i` (0 = the first in network order).
    #[inline(always)]
    pub(crate) fn byte(&self, i: usize) -> u8 {
        (self.0[i / 8] >> ((i % 8) * 8)) as u8
    }

    /// The first four bytes (an IPv4 address) as a native word.
    #[inline(always)]
    fn low32(&self) -> u32 {
        self.0[0] as u32
    }

    /// The address as a big-endian number: ordered as its bytes are.
    #[inline(always)]
    pub(crate) fn ordered(&self) -> (u64, u64) {
        (u64::from_be(self.0[0]), u64::from_be(self.0[1]))
    }

    #[inline(always)]
    pub(crate) fn is_zero(&self) -> bool {
        self.0[0] | self.0[1] == 0
    }
}

/// A MAC address as one word: its six bytes in frame order, loaded little-endian (byte 0 in
/// the low bits), the top two bytes zero. Compared, keyed and copied as the one word it is
/// (a `[u8; 6]` is compared and copied a byte at a time on this target).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mac(pub u64);

impl Mac {
    pub(crate) const ZERO: Mac = Mac(0);

    /// From its low and high parts as loaded from the frame: bytes 0..4 and 4..6.
    #[inline(always)]
    pub(crate) fn of_parts(lo: u32, hi: u16) -> Mac {
        Mac(u64::from(lo) | u64::from(hi) << 32)
    }

    /// A MAC field of a `lazaret_abi` value, 4-aligned (asserted below for each).
    ///
    /// # Safety
    /// `m` is 4-aligned.
    #[inline(always)]
    unsafe fn of_aligned(m: &[u8; 6]) -> Mac {
        let p = core::ptr::from_ref(m).cast::<u32>();
        // SAFETY: 4-aligned (the caller's contract) and six readable bytes.
        unsafe { Mac::of_parts(p.read(), p.add(1).cast::<u16>().read()) }
    }

    /// A device's MAC.
    #[inline(always)]
    pub(crate) fn of_device(d: &Device) -> Mac {
        // SAFETY: Device's MAC is 4-aligned (asserted below).
        unsafe { Mac::of_aligned(&d.mac) }
    }

    /// A link-local address owner's MAC.
    #[inline(always)]
    pub(crate) fn of_owner(o: &LlOwner) -> Mac {
        // SAFETY: LlOwner's MAC is 4-aligned (asserted below).
        unsafe { Mac::of_aligned(&o.mac) }
    }
}

// Word by word: a derived comparison of arrays becomes a `bcmp` call.
impl PartialEq for Addr {
    #[inline(always)]
    fn eq(&self, other: &Addr) -> bool {
        self.0[0] == other.0[0] && self.0[1] == other.0[1]
    }
}

// SAFETY (every function below): the word array and the key have the same size (transmute
// checks it at compile time), the key is repr(C) integers and byte arrays (every bit pattern
// is valid), and the comment on each gives the byte layout the words produce.

/// `FlowKey`: addr_a (0..16), addr_b (16..32), port_a, port_b, proto, family, echo, zero.
#[inline(always)]
pub(crate) fn flow_key(
    (a, pa): (&Addr, u16),
    (b, pb): (&Addr, u16),
    proto: u8,
    family: u8,
    echo: u8,
) -> FlowKey {
    let tail = u64::from(pa)
        | u64::from(pb) << 16
        | u64::from(proto) << 32
        | u64::from(family) << 40
        | u64::from(echo) << 48;
    // SAFETY: see above.
    unsafe { core::mem::transmute::<[u64; 5], FlowKey>([a.0[0], a.0[1], b.0[0], b.0[1], tail]) }
}

/// `FragKey`: src (0..16), dst (16..32), id, proto, family, zero pad.
#[inline(always)]
pub(crate) fn frag_key(src: &Addr, dst: &Addr, id: u32, proto: u8, family: u8) -> FragKey {
    let tail = u64::from(id) | u64::from(proto) << 32 | u64::from(family) << 40;
    // SAFETY: see above.
    unsafe {
        core::mem::transmute::<[u64; 5], FragKey>([src.0[0], src.0[1], dst.0[0], dst.0[1], tail])
    }
}

/// `Ip4Key`: slot, three zero bytes, the address.
#[inline(always)]
pub(crate) fn ip4_key(slot: u8, a: &Addr) -> Ip4Key {
    // SAFETY: see above.
    unsafe { core::mem::transmute::<u64, Ip4Key>(u64::from(slot) | a.0[0] << 32) }
}

/// A byte, three zero bytes, then the 16 bytes of `a` (`Ip6Key`, `LocalKey`).
#[inline(always)]
fn head_addr(head: u8, a: &Addr) -> [u32; 5] {
    let w = a.0;
    [
        u32::from(head),
        w[0] as u32,
        (w[0] >> 32) as u32,
        w[1] as u32,
        (w[1] >> 32) as u32,
    ]
}

/// `Ip6Key`: slot, three zero bytes, the address.
#[inline(always)]
pub(crate) fn ip6_key(slot: u8, a: &Addr) -> Ip6Key {
    // SAFETY: see above.
    unsafe { core::mem::transmute::<[u32; 5], Ip6Key>(head_addr(slot, a)) }
}

/// `LocalKey`: family, three zero bytes, the address.
#[inline(always)]
pub(crate) fn local_key(family: u8, a: &Addr) -> LocalKey {
    // SAFETY: see above.
    unsafe { core::mem::transmute::<[u32; 5], LocalKey>(head_addr(family, a)) }
}

/// `PeerKey4`: slot, dir, two zero bytes, the policy big-endian, the address.
#[inline(always)]
pub(crate) fn peer_key4(slot: u8, dir: u8, policy: u32, a: &Addr) -> PeerKey4 {
    let head = u32::from(slot) | u32::from(dir) << 8;
    // SAFETY: see above.
    unsafe { core::mem::transmute::<[u32; 3], PeerKey4>([head, policy.to_be(), a.low32()]) }
}

/// `PeerKey6`: as `PeerKey4` with the 16-byte address.
#[inline(always)]
pub(crate) fn peer_key6(slot: u8, dir: u8, policy: u32, a: &Addr) -> PeerKey6 {
    let head = u64::from(slot) | u64::from(dir) << 8 | u64::from(policy.to_be()) << 32;
    // SAFETY: see above.
    unsafe { core::mem::transmute::<[u64; 3], PeerKey6>([head, a.0[0], a.0[1]]) }
}

/// `PortKey`: slot, three zero bytes, the class big-endian, proto, the port big-endian,
/// a zero byte.
#[inline(always)]
pub(crate) fn port_key(slot: u8, class: u32, proto: u8, port: u16) -> PortKey {
    let tail = u32::from(proto) | u32::from(port.to_be()) << 8;
    // SAFETY: see above.
    unsafe { core::mem::transmute::<[u32; 3], PortKey>([u32::from(slot), class.to_be(), tail]) }
}

/// `MacKey`: slot, a zero byte, the MAC.
#[inline(always)]
pub(crate) fn mac_key(slot: u8, m: Mac) -> MacKey {
    // SAFETY: see above.
    unsafe { core::mem::transmute::<u64, MacKey>(u64::from(slot) | m.0 << 16) }
}

/// `PinKey`: the MAC, two zero bytes.
#[inline(always)]
pub(crate) fn pin_key(m: Mac) -> PinKey {
    // SAFETY: see above.
    unsafe { core::mem::transmute::<u64, PinKey>(m.0) }
}

/// `LlOwner`: the MAC, two zero bytes, the time.
#[inline(always)]
pub(crate) fn ll_owner(m: Mac, last_seen_ns: u64) -> LlOwner {
    // SAFETY: see above.
    unsafe { core::mem::transmute::<[u64; 2], LlOwner>([m.0, last_seen_ns]) }
}

/// `LlKey` (`lazaret_abi::owner_key`): an IPv6 address as it is; an IPv4 one IPv4-mapped,
/// bytes 10 and 11 0xff and the address in bytes 12..16 (the high half of the second word).
#[inline(always)]
pub(crate) fn owner_key(family: u8, a: &Addr) -> LlKey {
    let words = if family == lazaret_abi::FAMILY_V6 {
        a.0
    } else {
        [0, (a.0[0] << 32) | 0xffff_0000]
    };
    // SAFETY: see above.
    unsafe { core::mem::transmute::<[u64; 2], LlKey>(words) }
}

/// A new `FlowValue` in `slot`: last_seen_ns, then zeros (generation, devices, epochs,
/// rule) up to state (byte 44) and initiator (byte 45), then zeros (reason, resp_isn,
/// padding). Written in place with volatile stores: LLVM turns a run of known zero words
/// into a `memset` call, wherever the value is built or copied.
#[inline(always)]
pub(crate) fn new_flow(
    slot: &mut core::mem::MaybeUninit<FlowValue>,
    now: u64,
    state: u8,
    initiator: u8,
) -> &mut FlowValue {
    let flags = u64::from(state) << 32 | u64::from(initiator) << 40;
    let words: [u64; 7] = [now, 0, 0, 0, 0, flags, 0];
    let p = slot.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < words.len() {
        // SAFETY: FlowValue is 56 bytes, 8-aligned: seven words, each written once.
        unsafe { p.add(i).write_volatile(words[i]) };
        i += 1;
    }
    // SAFETY: every byte was written above; every bit pattern is a valid FlowValue.
    unsafe { slot.assume_init_mut() }
}

/// Zeroes `*p` a word at a time, with volatile stores (see [`new_flow`]).
///
/// # Safety
/// `p` is valid for writes and 8-aligned, `T` is a whole number of words, and all zeros
/// is a valid `T`.
#[inline(always)]
pub(crate) unsafe fn zero_words<T>(p: *mut T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8)) };
    let p = p.cast::<u64>();
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: within *p (the caller's contract), word-aligned.
        unsafe { p.add(i).write_volatile(0) };
        i += 1;
    }
}

/// Writes an event's addresses a word at a time: `Event` is 8-aligned, with the
/// addresses at 48 and 64 (asserted below).
#[inline(always)]
pub(crate) fn event_addrs(ev: &mut Event, src: &Addr, dst: &Addr) {
    let p = core::ptr::from_mut(ev).cast::<u64>();
    // SAFETY: `ev` is an exclusive reference, 8-aligned; its words 6..10 are these fields.
    // (Word by word: a copy of the arrays is a `memmove` call.)
    unsafe {
        p.add(6).write(src.0[0]);
        p.add(7).write(src.0[1]);
        p.add(8).write(dst.0[0]);
        p.add(9).write(dst.0[1]);
    }
}

/// Writes an event's MACs (and the four bytes of padding after them) as two words, from
/// byte 80 (asserted below).
#[inline(always)]
pub(crate) fn event_macs(ev: &mut Event, src_mac: Mac, dst_mac: Mac) {
    let macs = [src_mac.0 | dst_mac.0 << 48, dst_mac.0 >> 16];
    // SAFETY: as in event_addrs; words 10 and 11 are the MACs and the padding.
    unsafe {
        core::ptr::from_mut(ev)
            .cast::<[u64; 2]>()
            .add(5)
            .write(macs);
    };
}

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FlowValue>() == 7 * 8);
    assert!(size_of::<Event>() == 12 * 8 && align_of::<Event>() == 8);
    assert!(offset_of!(Event, src) == 48 && offset_of!(Event, dst) == 64);
    assert!(offset_of!(Event, src_mac) == 80 && offset_of!(Event, dst_mac) == 86);
    // Mac::of_aligned reads these as a u32 and a u16.
    assert!(offset_of!(Device, mac) % 4 == 0 && align_of::<Device>() >= 4);
    assert!(offset_of!(LlOwner, mac) == 0 && align_of::<LlOwner>() >= 4);
};
