//! Frame parsing: Ethernet, VLAN tags, ARP, IPv4, IPv6 extension headers, L4 ports.
//!
//! Every read is bounds-checked against `data_end` (the verifier demands it, and a frame
//! shorter than its headers claim is an attack, not an accident). Offsets derived from
//! packet fields are capped so the verifier can bound them. A frame the parser cannot
//! judge is an `Err(reason)`: the caller drops it.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use core::mem::size_of;
use lazaret_abi::*;

use crate::load;
use crate::word::{Addr, Mac};

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// SYN with FIN or RST: never a real stack's segment (scans, evasion), refused by the
/// parser (`Reason::DenyTcpFlags`); the fast path leaves such a segment to it.
#[inline(always)]
pub(crate) fn refused_flags(flags: u8) -> bool {
    flags & TCP_SYN != 0 && flags & (TCP_FIN | TCP_RST) != 0
}

pub(crate) const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88a8;

/// Furthest L4 offset accepted; a header chain reaching past it is not a real frame.
pub(crate) const MAX_L4_OFFSET: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum L3 {
    Arp = 0,
    Ip = 1,
    /// A link-local control frame (LLDP, STP, LACP, 802.1X …) addressed to 01:80:c2:00:00:0x.
    Control,
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Frag {
    None = 0,
    /// Offset 0 with more fragments: carries the L4 header.
    First,
    /// Offset > 0: no L4 header, judged by its train.
    Later,
}

/// What the judge needs to know about a frame.
///
/// Laid out by hand, 8-aligned, widest first: the 16-byte addresses and the MACs start on
/// 8-byte boundaries, so LLVM copies, zeroes and compares them a word at a time (laid out
/// by rustc, byte arrays may land anywhere, and every touch of one is a byte loop).
#[repr(C, align(8))]
pub(crate) struct Pkt {
    /// Source and destination addresses; IPv4 (and ARP's sender/target protocol addresses)
    /// in the first four bytes, the rest zero.
    pub src: Addr,
    pub dst: Addr,
    /// NS/NA target address.
    pub nd_target: Addr,
    pub inner_src: Addr,
    pub inner_dst: Addr,
    pub src_mac: Mac,
    pub dst_mac: Mac,
    /// ARP sender hardware address (ARP only).
    pub arp_sha: Mac,
    // The fields below are reset on every packet a word at a time (see `reset`): the
    // words' layout is asserted there.
    pub side: u8,
    pub l3: L3,
    pub family: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// An ICMP error (unreachable, time exceeded, parameter problem, packet too big) whose
    /// quoted packet was parsed into `inner_*` (all 16 bytes written, for either family):
    /// it passes only along that packet's flow.
    pub related: bool,
    pub frag: Frag,
    pub inner_proto: u8,
    pub vlan: u16,
    pub sport: u16,
    pub dport: u16,
    /// The interface devices bind to: the ingress interface, or the bridge it is a port of.
    pub ifindex: u32,
    /// The ingress interface itself (a bridge port when `ifindex` is its bridge).
    pub port: u32,
    /// TCP sequence and acknowledgment numbers (confirming a handshake, see judge_flow).
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub frag_id: u32,
    /// A later fragment's offset in bytes; a first fragment's upper-layer header end, in
    /// bytes from the start of its fragmentable part (see `FragValue::hdr_end`).
    pub frag_at: u32,
    pub inner_sport: u16,
    pub inner_dport: u16,
    /// `echo_kind` of the packet and of the quoted packet: their flow keys' `echo`.
    pub echo: u8,
    pub inner_echo: u8,
    /// Whose `DIR_CLAIM` entries say what a device behind the ingress interface may own by
    /// first use (`IfaceConfig::claim_scope`).
    pub claim_scope: u16,
    /// 1 when the destination is a link-local unicast address and the frame came from a
    /// device port: the device it names is the one the frame is sent to, by MAC
    /// (`destination`), never by its address; else 0. Written for IP packets only (the
    /// only ones that read it). A number, not a bool, so the flow stamp can use it without
    /// a branch: one there costs the verifier's count more than the program has room for.
    pub dst_by_mac: u8,
}

impl Pkt {
    /// Whether this packet may open a flow: TCP SYN without ACK, any UDP packet, ICMP echo
    /// request, any packet of a protocol without state lazaret tracks.
    #[inline(always)]
    pub(crate) fn initiating(&self) -> bool {
        match self.proto {
            PROTO_TCP => self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
            PROTO_UDP => true,
            PROTO_ICMP => self.icmp_type == 8,
            PROTO_ICMPV6 => self.icmp_type == 128,
            _ => true,
        }
    }

    #[inline(always)]
    pub(crate) fn has_ports(&self) -> bool {
        self.proto == PROTO_TCP || self.proto == PROTO_UDP
    }

    /// ICMP other than echo: no flow of its own (an error is judged by the flow it quotes,
    /// apart), so never a packet of one. Its flow key has no identifier to hold: looked
    /// up, it would find an echo flow of identifier 0 and pass as that flow's (a redirect,
    /// a router advertisement, an unsolicited neighbor advertisement).
    #[inline(always)]
    pub(crate) fn flowless(&self) -> bool {
        match self.proto {
            PROTO_ICMP => !matches!(self.icmp_type, 0 | 8),
            PROTO_ICMPV6 => !matches!(self.icmp_type, 128 | 129),
            _ => false,
        }
    }
}

/// A bounds-checked pointer into the frame.
///
/// `data_end` is re-read with a volatile load on purpose: otherwise LLVM combines this check
/// with the header-length arithmetic done elsewhere (total length ≤ frame length, …), proves
/// it redundant and deletes it — and the verifier, which does not follow that reasoning,
/// rejects the access.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*const T, Reason> {
    let start = ctx.data();
    // SAFETY: ctx.ctx is the xdp_md the kernel passed to the program.
    let end = unsafe { core::ptr::read_volatile(&(*ctx.ctx).data_end) } as usize;
    if start + off + size_of::<T>() > end {
        return Err(Reason::DenyMalformed);
    }
    Ok((start + off) as *const T)
}

/// `N` bytes of the frame, bounds-checked once: the fields of a fixed header are read from
/// it without another check. A check per field re-read `data_end` and made LLVM keep the
/// failure path's values alive across every one of them (about a dozen instructions each,
/// on every packet). Each field is one load instruction whatever its alignment (see
/// crate::load), and a field outside the `N` checked bytes does not compile.
#[derive(Clone, Copy)]
pub(crate) struct Hdr<const N: usize>(usize);

impl<const N: usize> Hdr<N> {
    #[inline(always)]
    pub(crate) fn at(ctx: &XdpContext, off: usize) -> Result<Self, Reason> {
        Ok(Hdr(ptr_at::<[u8; N]>(ctx, off)? as usize))
    }

    #[inline(always)]
    pub(crate) fn u8<const K: usize>(self) -> u8 {
        const { assert!(K < N) };
        // SAFETY: `at` checked that N bytes from self.0 lie inside the frame; K < N.
        unsafe { *((self.0 + K) as *const u8) }
    }

    /// The big-endian `u16` at byte `K`.
    #[inline(always)]
    pub(crate) fn be16<const K: i16>(self) -> u16 {
        const { assert!(K >= 0 && K as usize + 2 <= N) };
        // SAFETY: as in `u8`, for the two bytes at K.
        u16::from_be(unsafe { load::u16_at::<K>(self.0) })
    }

    /// The big-endian `u32` at byte `K`.
    #[inline(always)]
    pub(crate) fn be32<const K: i16>(self) -> u32 {
        u32::from_be(self.ne32::<K>())
    }

    /// The four bytes at `K` as a native word (an IPv4 address as `Addr` holds it).
    #[inline(always)]
    pub(crate) fn ne32<const K: i16>(self) -> u32 {
        const { assert!(K >= 0 && K as usize + 4 <= N) };
        // SAFETY: as in `u8`, for the four bytes at K.
        unsafe { load::u32_at::<K>(self.0) }
    }

    /// The eight bytes at `K` as a native word (half an IPv6 address as `Addr` holds it).
    #[inline(always)]
    pub(crate) fn ne64<const K: i16>(self) -> u64 {
        const { assert!(K >= 0 && K as usize + 8 <= N) };
        // SAFETY: as in `u8`, for the eight bytes at K.
        unsafe { load::u64_at::<K>(self.0) }
    }

    /// The `M` bytes at `K`, checked with these `N`.
    #[inline(always)]
    pub(crate) fn sub<const K: usize, const M: usize>(self) -> Hdr<M> {
        const { assert!(K + M <= N) };
        Hdr(self.0 + K)
    }

    /// The MAC address at bytes `K..K + 6`; `K4` is `K + 4` (a const argument cannot be
    /// computed from another here).
    #[inline(always)]
    pub(crate) fn mac<const K: i16, const K4: i16>(self) -> Mac {
        const { assert!(K4 == K + 4) };
        // SAFETY: as in `u8`, for the six bytes at K (ne32 and be16 assert the range).
        Mac::of_parts(self.ne32::<K>(), unsafe { load::u16_at::<K4>(self.0) })
    }
}

/// The source MAC of a frame that failed to parse further (for events), if it has one.
#[inline(always)]
pub(crate) fn src_mac(ctx: &XdpContext) -> Option<Mac> {
    Some(Hdr::<12>::at(ctx, 0).ok()?.mac::<6, 10>())
}

/// Parses the frame into `pkt`: `None`, or the reason it is dropped.
///
/// A function of its own, not inlined into the program, on purpose: every check here can
/// end the packet, and inlined, each check's exit merged into the program's one verdict
/// (seven fields) made LLVM store the whole verdict to the stack before every branch, taken
/// or not — more instructions than the parse itself. Called, an exit is one register.
#[inline(never)]
pub(crate) fn parse(
    ctx: *mut xdp_md,
    iface: &IfaceConfig,
    ifindex: u32,
    pkt: &mut Pkt,
) -> Option<Reason> {
    parse_frame(&XdpContext::new(ctx), iface, ifindex, pkt).err()
}

#[inline(always)]
fn parse_frame(
    ctx: &XdpContext,
    iface: &IfaceConfig,
    ifindex: u32,
    pkt: &mut Pkt,
) -> Result<(), Reason> {
    let eth = Hdr::<14>::at(ctx, 0)?;
    let mut ethertype = eth.be16::<12>();
    let mut off = 14usize;
    let mut vlan = VLAN_UNTAGGED;
    let mut outer = VLAN_UNTAGGED;
    // 802.1Q and 802.1ad: at most two tags; the innermost VLAN id identifies the device.
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag = Hdr::<4>::at(ctx, off)?;
        vlan = tag.be16::<0>() & 0x0fff;
        if tags == 0 {
            outer = vlan;
        }
        ethertype = tag.be16::<2>();
        off += 4;
        tags += 1;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Reason::DenyVlanDepth);
    }
    let vlan = device_vlan(iface, tags, outer, vlan).ok_or(Reason::DenyVlanTag)?;
    // The scratch slot holds the previous packet: reset every field that is read without
    // being written first. arp_sha, nd_target and inner_* are only read on the paths that
    // write them (ARP, NS/NA, ICMP errors); zeroing them here cost a memset per packet.
    reset(pkt, iface, vlan, ifindex);
    pkt.src_mac = eth.mac::<6, 10>();
    pkt.dst_mac = eth.mac::<0, 4>();
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, off, pkt)?,
        ETH_P_IPV6 => parse_ipv6(ctx, off, pkt)?,
        ETH_P_ARP => parse_arp(ctx, off, pkt)?,
        _ => {
            // IEEE 802.1 link-local group addresses 01:80:c2:00:00:00-0f (STP, LACP, 802.1X,
            // LLDP): never forwarded by bridges, passed only if the site allows.
            // 01:80:c2:00:00:0x, as Mac holds it: byte 0 in the low bits.
            if pkt.dst_mac.0 & 0xf0_ff_ff_ff_ff_ff == 0x00_00_00_c2_80_01 {
                pkt.l3 = L3::Control;
                // The addresses: every IP and ARP parse sets them before it succeeds; a
                // control frame has none, and its event must not show the last packet's.
                pkt.src = Addr([0; 2]);
                pkt.dst = Addr([0; 2]);
            } else {
                return Err(Reason::DenyEthertype);
            }
        }
    }
    Ok(())
}

/// The VLAN a frame's device is bound by, given its tag stack (`tags` tags, the outermost
/// VID `outer`, the innermost `inner`; VID 0 for none) on `iface`; `None` when the stack is
/// not the port's. Bypass class: the tag stack must be the port's, whole. Judging by the
/// innermost tag alone lets a frame with a foreign outer tag pass as the device (VLAN
/// hopping). Shared by the parser and the fast path, so both hold the same rule.
#[inline(always)]
pub(crate) fn device_vlan(iface: &IfaceConfig, tags: usize, outer: u16, inner: u16) -> Option<u16> {
    let port_stack = if iface.outer_vlan != 0 {
        tags == 2 && outer == iface.outer_vlan
    } else {
        // Not two tags without an outer VLAN; not a real tag on an access port, whose
        // frames are untagged (a priority tag, VID 0, is untagged with a priority).
        tags == 0 || (tags == 1 && (inner == VLAN_UNTAGGED || iface.untagged_vlan == 0))
    };
    if !port_stack {
        return None;
    }
    // Untagged: an access port or VLAN sub-interface, where the switch or the kernel took
    // the tag off.
    Some(if inner == VLAN_UNTAGGED {
        iface.untagged_vlan
    } else {
        inner
    })
}

/// Resets the scratch slot's per-packet fields, six word stores: `side`, `vlan` and the
/// interfaces set, `l3` set to `Ip`, the rest zero (the protocol fields, the TCP numbers,
/// the fragment's fields, the quoted ports and the echo kinds; the addresses are set by
/// every parse that succeeds). Volatile: LLVM merges plain zero stores to
/// neighbouring fields into a `memset` call, a byte loop on this target (see crate::word).
#[inline(always)]
fn reset(pkt: &mut Pkt, iface: &IfaceConfig, vlan: u16, port: u32) {
    write_words(
        pkt,
        [
            // 104: side, l3, family, hop_limit, proto, tcp_flags, icmp_type, related.
            u64::from(iface.side) | (L3::Ip as u64) << 8,
            // 112: frag (None), inner_proto, vlan, sport, dport.
            u64::from(vlan) << 16,
            // 120: ifindex (the binding), port (the ingress interface).
            u64::from(iface.binding(port)) | u64::from(port) << 32,
            // 128: tcp_seq, tcp_ack; 136: frag_id, frag_at.
            0,
            0,
            // 144: inner_sport, inner_dport, echo, inner_echo, claim_scope.
            u64::from(iface.claim_scope) << 48,
        ],
    );
}

/// Writes the six words of `Pkt` from byte 104 (see `reset`), volatile.
#[inline(always)]
fn write_words(pkt: &mut Pkt, words: [u64; 6]) {
    let p = core::ptr::from_mut(pkt).cast::<u64>();
    // SAFETY: (every write) `pkt` is exclusive and 8-aligned; word i is bytes 104 + 8 i of
    // it, the fields the callers' comments name (asserted below), all plain integers or
    // enums whose written values are valid.
    unsafe {
        p.add(13).write_volatile(words[0]);
        p.add(14).write_volatile(words[1]);
        p.add(15).write_volatile(words[2]);
        p.add(16).write_volatile(words[3]);
        p.add(17).write_volatile(words[4]);
        p.add(18).write_volatile(words[5]);
    }
}

/// What the fast path read of a TCP segment of its shape (no IPv4 options, no fragment, at
/// most a hop-by-hop and a destination-options header, the TCP header whole, and not, from a
/// device port, to a link-local address), for `write_read`.
pub(crate) struct Read {
    pub src: Addr,
    pub dst: Addr,
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub family: u8,
    pub hop_limit: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    pub vlan: u16,
    pub sport: u16,
    pub dport: u16,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub frag_id: u32,
    pub frag_at: u32,
}

/// Writes the scratch slot as `parse_frame` leaves it for a frame of `Read`'s shape: the
/// words `reset` writes, with the packet's fields in them, the addresses and the MACs, and
/// `dst_by_mac` clear (no link-local destination from a device port). The fields neither
/// writes are read only on paths such a frame does not take (ARP, NS/NA, ICMP errors).
#[inline(always)]
pub(crate) fn write_read(pkt: &mut Pkt, iface: &IfaceConfig, port: u32, r: &Read) {
    write_words(
        pkt,
        [
            // 104: side, l3, family, hop_limit, proto, tcp_flags, icmp_type, related.
            u64::from(iface.side)
                | (L3::Ip as u64) << 8
                | u64::from(r.family) << 16
                | u64::from(r.hop_limit) << 24
                | u64::from(r.proto) << 32
                | u64::from(r.tcp_flags) << 40,
            // 112: frag (None), inner_proto, vlan, sport, dport.
            u64::from(r.vlan) << 16 | u64::from(r.sport) << 32 | u64::from(r.dport) << 48,
            // 120: ifindex (the binding), port (the ingress interface).
            u64::from(iface.binding(port)) | u64::from(port) << 32,
            // 128: tcp_seq, tcp_ack; 136: frag_id, frag_at.
            u64::from(r.tcp_seq) | u64::from(r.tcp_ack) << 32,
            u64::from(r.frag_id) | u64::from(r.frag_at) << 32,
            // 144: inner_sport, inner_dport, echo, inner_echo, claim_scope.
            u64::from(iface.claim_scope) << 48,
        ],
    );
    pkt.dst_by_mac = 0;
    pkt.src = r.src;
    pkt.dst = r.dst;
    pkt.src_mac = r.src_mac;
    pkt.dst_mac = r.dst_mac;
}

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Pkt, side) == 104 && offset_of!(Pkt, l3) == 105);
    assert!(offset_of!(Pkt, family) == 106 && offset_of!(Pkt, related) == 111);
    assert!(offset_of!(Pkt, frag) == 112 && offset_of!(Pkt, vlan) == 114);
    assert!(offset_of!(Pkt, sport) == 116 && offset_of!(Pkt, dport) == 118);
    assert!(offset_of!(Pkt, ifindex) == 120 && offset_of!(Pkt, port) == 124);
    assert!(offset_of!(Pkt, tcp_seq) == 128 && offset_of!(Pkt, frag_at) == 140);
    assert!(offset_of!(Pkt, inner_sport) == 144 && offset_of!(Pkt, echo) == 148);
    assert!(offset_of!(Pkt, inner_echo) == 149 && offset_of!(Pkt, claim_scope) == 150);
    assert!(offset_of!(Pkt, dst_by_mac) == 152 && size_of::<Pkt>() == 160);
    assert!(offset_of!(Pkt, hop_limit) == 107 && offset_of!(Pkt, proto) == 108);
    assert!(offset_of!(Pkt, tcp_flags) == 109 && offset_of!(Pkt, tcp_ack) == 132);
};

/// ARP for Ethernet/IPv4 only; the sender's binding is what anti-spoofing checks.
#[inline(always)]
fn parse_arp(ctx: &XdpContext, off: usize, pkt: &mut Pkt) -> Result<(), Reason> {
    let arp = Hdr::<28>::at(ctx, off)?;
    if arp.be16::<0>() != 1 || arp.be16::<2>() != ETH_P_IPV4 || arp.be16::<4>() != 0x0604 {
        return Err(Reason::DenyMalformed);
    }
    pkt.l3 = L3::Arp;
    pkt.family = FAMILY_V4;
    pkt.arp_sha = arp.mac::<8, 12>();
    pkt.src = Addr::v4(arp.ne32::<14>());
    pkt.dst = Addr::v4(arp.ne32::<24>());
    Ok(())
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize, pkt: &mut Pkt) -> Result<(), Reason> {
    // Shorter than the fixed header is malformed either way: its total length could not
    // cover its header.
    let ip = Hdr::<20>::at(ctx, off)?;
    let vihl = ip.u8::<0>();
    if vihl >> 4 != 4 {
        return Err(Reason::DenyMalformed);
    }
    // IHL below 5 is not a header; the mask bounds the offset for the verifier.
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Reason::DenyMalformed);
    }
    let total = ip.be16::<2>() as usize;
    let available = ctx.data_end() - ctx.data() - off;
    // A total length beyond the frame, or shorter than the header, is a lie about the
    // packet; trailing Ethernet padding (total < available) is normal.
    if total < ihl || total > available {
        return Err(Reason::DenyMalformed);
    }
    let frag_word = ip.be16::<6>();
    let more = frag_word & 0x2000 != 0;
    let frag_off = frag_word & 0x1fff;
    pkt.family = FAMILY_V4;
    pkt.hop_limit = ip.u8::<8>();
    pkt.proto = ip.u8::<9>();
    pkt.src = Addr::v4(ip.ne32::<12>());
    pkt.dst = Addr::v4(ip.ne32::<16>());
    link_local_destination(pkt, FAMILY_V4)?;
    pkt.frag_id = u32::from(ip.be16::<4>());
    if frag_off != 0 {
        // RFC 1858: a TCP fragment at offset 8 can rewrite the flags of the first one.
        if frag_off == 1 && pkt.proto == PROTO_TCP {
            return Err(Reason::DenyFragment);
        }
        // A datagram reassembled past 65,535 bytes (the "ping of death" shape).
        if frag_off as usize * 8 + total > 65_535 {
            return Err(Reason::DenyFragment);
        }
        pkt.frag = Frag::Later;
        pkt.frag_at = u32::from(frag_off) * 8;
        return Ok(());
    }
    if more {
        pkt.frag = Frag::First;
    }
    parse_l4(ctx, off + ihl, off + ihl, off + total, pkt)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize, pkt: &mut Pkt) -> Result<(), Reason> {
    // The fixed header whole, or malformed (as a payload length beyond the frame is).
    let ip = Hdr::<40>::at(ctx, off)?;
    if ip.u8::<0>() >> 4 != 6 {
        return Err(Reason::DenyMalformed);
    }
    let payload = ip.be16::<4>() as usize;
    let available = ctx.data_end() - ctx.data() - off;
    // Payload length 0 means a jumbogram (hop-by-hop option), never needed on device VLANs.
    if payload == 0 || 40 + payload > available {
        return Err(Reason::DenyMalformed);
    }
    pkt.family = FAMILY_V6;
    pkt.hop_limit = ip.u8::<7>();
    pkt.src = Addr([ip.ne64::<8>(), ip.ne64::<16>()]);
    pkt.dst = Addr([ip.ne64::<24>(), ip.ne64::<32>()]);
    link_local_destination(pkt, FAMILY_V6)?;
    let end = off + 40 + payload;
    let mut next = ip.u8::<6>();
    let mut at = off + 40;
    // Where the fragmentable part starts: after the Fragment header, if there is one.
    let mut frag_part = at;
    let mut seen = 0u8;
    let mut walked = 0;
    // Walk at most MAX_IPV6_EXT_HEADERS extension headers (see lazaret_abi, *What the
    // parser drops*): each may appear once, so a longer chain is a repeat. Long or repeated
    // chains push the transport header out of reach of stateless filters.
    while walked < MAX_IPV6_EXT_HEADERS {
        let bit = match next {
            // Hop-by-hop: only right after the IPv6 header (RFC 8200 §4.3).
            0 if walked == 0 => EXT_HBH,
            60 => EXT_DST,
            44 => EXT_FRAG,
            // Hop-by-hop elsewhere, routing (RFC 5095, RFC 8754), authentication.
            0 | 43 | 51 => return Err(Reason::DenyIpv6Ext),
            _ => break,
        };
        if seen & bit != 0 {
            return Err(Reason::DenyIpv6Ext);
        }
        seen |= bit;
        if bit == EXT_FRAG {
            let hdr = Hdr::<8>::at(ctx, at)?;
            next = hdr.u8::<0>();
            let offset_word = hdr.be16::<2>();
            let offset = (offset_word >> 3) as usize * 8;
            let more = offset_word & 1 != 0;
            pkt.frag_id = hdr.be32::<4>();
            at += 8;
            if at > end {
                return Err(Reason::DenyMalformed);
            }
            frag_part = at;
            // The reassembled payload would pass 65,535 bytes (RFC 8200 §4.5).
            if offset + (end - at) > 65_535 {
                return Err(Reason::DenyFragment);
            }
            if offset != 0 {
                pkt.proto = next;
                pkt.frag = Frag::Later;
                pkt.frag_at = offset as u32;
                return Ok(());
            }
            if more {
                pkt.frag = Frag::First;
            }
        } else {
            // Hop-by-hop and destination options: length in 8-octet units, excluding the
            // first 8.
            let hdr = Hdr::<2>::at(ctx, at)?;
            next = hdr.u8::<0>();
            at += (hdr.u8::<1>() as usize + 1) * 8;
        }
        if at > MAX_L4_OFFSET {
            return Err(Reason::DenyIpv6Ext);
        }
        walked += 1;
    }
    match next {
        // Still an extension header after the bound, or one lazaret does not pass
        // (routing, authentication, mobility, HIP, shim6, experimental).
        0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => Err(Reason::DenyIpv6Ext),
        _ => {
            pkt.proto = next;
            // RFC 7112: a first fragment must carry the whole header chain and the L4 header.
            parse_l4(ctx, frag_part, at, end, pkt)
        }
    }
}

/// `seen` bits of the IPv6 extension-header walk.
const EXT_HBH: u8 = 1;
const EXT_DST: u8 = 2;
const EXT_FRAG: u8 = 4;

/// Reads ports, TCP flags or ICMP type. `end` is where the IP payload ends; `frag_part`
/// where the fragmentable part starts (a first fragment records where its upper-layer header
/// ends, relative to it).
#[inline(always)]
fn parse_l4(
    ctx: &XdpContext,
    frag_part: usize,
    at: usize,
    end: usize,
    pkt: &mut Pkt,
) -> Result<(), Reason> {
    if at > MAX_L4_OFFSET {
        return Err(Reason::DenyMalformed);
    }
    let short = if pkt.frag == Frag::First {
        Reason::DenyFragment
    } else {
        Reason::DenyMalformed
    };
    let need = match pkt.proto {
        PROTO_TCP => 20,
        PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6 => 8,
        // The ports that key the flow (see `PROTO_SCTP`).
        PROTO_SCTP | PROTO_UDPLITE | PROTO_DCCP => 4,
        _ => 0,
    };
    if at + need > end {
        return Err(short);
    }
    pkt.frag_at = (at + need - frag_part) as u32;
    match pkt.proto {
        PROTO_TCP => {
            let hdr = Hdr::<14>::at(ctx, at).map_err(|_| short)?;
            pkt.sport = hdr.be16::<0>();
            pkt.dport = hdr.be16::<2>();
            // Data offset below 5 words is not a TCP header.
            if hdr.u8::<12>() >> 4 < 5 {
                return Err(Reason::DenyMalformed);
            }
            let flags = hdr.u8::<13>();
            pkt.tcp_flags = flags;
            if refused_flags(flags) {
                return Err(Reason::DenyTcpFlags);
            }
            pkt.tcp_seq = hdr.be32::<4>();
            pkt.tcp_ack = hdr.be32::<8>();
        }
        // Bypass class, SCTP, UDP-Lite and DCCP: keyed without their ports, the peer's own
        // sessions to the device would pass as the session the device opened.
        PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE | PROTO_DCCP => {
            let hdr = Hdr::<4>::at(ctx, at).map_err(|_| short)?;
            pkt.sport = hdr.be16::<0>();
            pkt.dport = hdr.be16::<2>();
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let hdr = Hdr::<8>::at(ctx, at).map_err(|_| short)?;
            let icmp_type = hdr.u8::<0>();
            pkt.icmp_type = icmp_type;
            let echo = matches!(
                (pkt.proto, icmp_type),
                (PROTO_ICMP, 0 | 8) | (PROTO_ICMPV6, 128 | 129)
            );
            if echo {
                // The echo identifier plays the role of both ports: request and reply share
                // one flow key, which also names the requester's end (`echo_end`).
                let id = hdr.be16::<4>();
                pkt.sport = id;
                pkt.dport = id;
                pkt.echo = echo_kind(pkt.proto, icmp_type);
            }
            let error = match pkt.proto {
                PROTO_ICMP => matches!(icmp_type, 3 | 11 | 12),
                _ => matches!(icmp_type, 1..=4),
            };
            if error && pkt.frag == Frag::None {
                parse_quoted(ctx, at + 8, pkt)?;
            }
            if pkt.proto == PROTO_ICMPV6 && (icmp_type == 135 || icmp_type == 136) {
                if at + 24 > end {
                    return Err(Reason::DenyMalformed);
                }
                let target = Hdr::<16>::at(ctx, at + 8)?;
                pkt.nd_target = Addr([target.ne64::<0>(), target.ne64::<8>()]);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The packet quoted by an ICMP error: its addresses, protocol and the first eight bytes of
/// its transport header (all RFC 792 / 4443 guarantee). Options and extension headers in the
/// quoted packet are not walked: such an error simply relates to no flow.
#[inline(always)]
fn parse_quoted(ctx: &XdpContext, at: usize, pkt: &mut Pkt) -> Result<(), Reason> {
    let l4_at = if pkt.proto == PROTO_ICMP {
        let ip = Hdr::<20>::at(ctx, at)?;
        // A quoted packet with IP options is not walked (devices do not send options): a
        // variable offset here defeats the verifier's bounds tracking.
        if ip.u8::<0>() != 0x45 {
            return Err(Reason::DenyMalformed);
        }
        pkt.inner_proto = ip.u8::<9>();
        // All 16 bytes: the scratch slot may hold an IPv6 error's addresses from an earlier
        // packet, and the flow key compares all of them.
        pkt.inner_src = Addr::v4(ip.ne32::<12>());
        pkt.inner_dst = Addr::v4(ip.ne32::<16>());
        at + 20
    } else {
        let ip = Hdr::<40>::at(ctx, at)?;
        if ip.u8::<0>() >> 4 != 6 {
            return Err(Reason::DenyMalformed);
        }
        pkt.inner_proto = ip.u8::<6>();
        pkt.inner_src = Addr([ip.ne64::<8>(), ip.ne64::<16>()]);
        pkt.inner_dst = Addr([ip.ne64::<24>(), ip.ne64::<32>()]);
        at + 40
    };
    let l4 = Hdr::<8>::at(ctx, l4_at)?;
    match pkt.inner_proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE | PROTO_DCCP => {
            pkt.inner_sport = l4.be16::<0>();
            pkt.inner_dport = l4.be16::<2>();
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let id = l4.be16::<4>();
            pkt.inner_sport = id;
            pkt.inner_dport = id;
            pkt.inner_echo = echo_kind(pkt.inner_proto, l4.u8::<0>());
        }
        _ => {
            pkt.inner_sport = 0;
            pkt.inner_dport = 0;
        }
    }
    pkt.related = true;
    Ok(())
}

/// ICMPv6 types that belong to neighbor discovery and multicast listener signalling a host
/// needs for its own addresses: RS, NS, NA, MLD reports (v1 and v2) and done.
#[inline(always)]
pub(crate) fn is_neighbor_icmpv6(t: u8) -> bool {
    matches!(t, 131 | 132 | 133 | 135 | 136 | 143)
}

/// fe80::/10. (On the first word as loaded, little-endian: its low byte is the address's
/// first. A mask and one compare, where byte by byte took shifts for each.)
#[inline(always)]
pub(crate) fn is_link_local6(a: &Addr) -> bool {
    a.0[0] & 0xc0ff == 0x80fe
}

/// A link-local address: fe80::/10 or 169.254/16, its broadcast address included.
#[inline(always)]
pub(crate) fn is_link_local(family: u8, a: &Addr) -> bool {
    if family == FAMILY_V4 {
        // 169.254.x.y as loaded: 0xyyxx_fea9.
        a.0[0] & 0xffff == 0xfea9
    } else {
        is_link_local6(a)
    }
}

/// A unicast link-local address: fe80::/10, or 169.254/16 but its broadcast address. Never
/// routed, it is reached on the segment, by MAC (`destination`).
#[inline(always)]
pub(crate) fn is_link_local_unicast(family: u8, a: &Addr) -> bool {
    if family == FAMILY_V4 {
        let w = a.0[0] as u32;
        w & 0xffff == 0xfea9 && w != 0xffff_fea9
    } else {
        is_link_local6(a)
    }
}

/// Sets `Pkt::dst_by_mac`. Bypass class: from a device port a link-local destination names
/// the device the frame is sent to, by MAC (`destination`). Sent to a group MAC it would
/// name none, yet a bridge floods it to every port and the device takes it: the sender's
/// policy alone would be asked. A unicast destination has no business in a group frame
/// (RFC 1122 §3.3.6 has hosts discard one): malformed.
#[inline(always)]
fn link_local_destination(pkt: &mut Pkt, family: u8) -> Result<(), Reason> {
    let by_mac = pkt.side == SIDE_DEVICES && is_link_local_unicast(family, &pkt.dst);
    if by_mac && pkt.dst_mac.0 & 1 != 0 {
        return Err(Reason::DenyMalformed);
    }
    pkt.dst_by_mac = u8::from(by_mac);
    Ok(())
}

/// Whether a device may own `a` by using it first (`lazaret_abi`, *Addresses owned by first
/// use*): a unicast address of a host, not IPv4-mapped (RFC 4291 §2.5.5.2: never on the
/// wire; it would also name the IPv4 address the map keys that way).
#[inline(always)]
pub(crate) fn is_claimable(family: u8, a: &Addr) -> bool {
    if family == FAMILY_V4 {
        // Not 0/8 ("this network"), 127/8 (loopback), 224/4 (multicast), 240/4 (reserved
        // and the broadcast address).
        let first = a.byte(0);
        first != 0 && first != 127 && first < 224
    } else {
        let high_zero = a.0[0] == 0;
        let mapped = high_zero && a.0[1] as u32 == 0xffff_0000;
        let unspecified_or_loopback = high_zero && (a.0[1] == 0 || a.0[1] == 1 << 56);
        a.byte(0) != 0xff && !mapped && !unspecified_or_loopback
    }
}

/// A multicast group of link-local scope (ff02::/16 and its flag variants, ff12:: …).
#[inline(always)]
pub(crate) fn is_link_scope_multicast6(a: &Addr) -> bool {
    a.byte(0) == 0xff && a.byte(1) & 0x0f == 2
}

/// 0.0.0.0, :: or fe80::/10: a source that carries no routable identity.
#[inline(always)]
pub(crate) fn is_unspecified_or_link_local(family: u8, a: &Addr) -> bool {
    if family == FAMILY_V4 {
        a.is_zero()
    } else {
        is_link_local6(a) || a.is_zero()
    }
}
