//! Frame parsing: Ethernet, VLAN tags, ARP, IPv4, IPv6 extension headers, L4 ports.
//!
//! Every read is bounds-checked against `data_end` (the verifier demands it, and a frame
//! shorter than its headers claim is an attack, not an accident). Offsets derived from
//! packet fields are capped so the verifier can bound them. A frame the parser cannot
//! judge is an `Err(reason)`: the caller drops it.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lazaret_abi::*;

use crate::word::Addr;

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// Furthest L4 offset accepted; a header chain reaching past it is not a real frame.
const MAX_L4_OFFSET: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum L3 {
    Arp,
    Ip,
    /// A link-local control frame (LLDP, STP, LACP, 802.1X …) addressed to 01:80:c2:00:00:0x.
    Control,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frag {
    None,
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
    pub src_mac: [u8; 6],
    pub side: u8,
    pub family: u8,
    pub dst_mac: [u8; 6],
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    pub proto: u8,
    /// ARP sender hardware address (ARP only).
    pub arp_sha: [u8; 6],
    pub tcp_flags: u8,
    pub icmp_type: u8,
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
    pub vlan: u16,
    pub sport: u16,
    pub dport: u16,
    pub inner_sport: u16,
    pub inner_dport: u16,
    pub inner_proto: u8,
    pub l3: L3,
    pub frag: Frag,
    /// An ICMP error (unreachable, time exceeded, parameter problem, packet too big) whose
    /// quoted packet was parsed into `inner_*` (all 16 bytes written, for either family):
    /// it passes only along that packet's flow.
    pub related: bool,
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

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Result<T, Reason> {
    let p = ptr_at::<T>(ctx, off)?;
    // SAFETY: ptr_at checked that size_of::<T>() bytes at p lie inside the frame.
    Ok(unsafe { core::ptr::read_unaligned(p) })
}

/// `N` bytes of the frame, bounds-checked once: the fields of a fixed header are read from
/// it without another check. A check per field re-read `data_end` and made LLVM keep the
/// failure path's values alive across every one of them (about a dozen instructions each,
/// on every packet).
#[derive(Clone, Copy)]
struct Hdr<const N: usize>(*const u8);

impl<const N: usize> Hdr<N> {
    #[inline(always)]
    fn at(ctx: &XdpContext, off: usize) -> Result<Self, Reason> {
        Ok(Hdr(ptr_at::<[u8; N]>(ctx, off)?.cast::<u8>()))
    }

    /// The `T` at byte `k`. Every caller passes a constant `k`, so the range test folds
    /// away; it keeps the read inside the checked bytes whatever a future caller passes.
    #[inline(always)]
    fn get<T: Copy>(self, k: usize) -> Result<T, Reason> {
        if k + size_of::<T>() > N {
            return Err(Reason::DenyMalformed);
        }
        // SAFETY: `at` checked that N bytes from self.0 lie inside the frame, and the
        // read's k + size_of::<T>() bytes are within them.
        Ok(unsafe { self.0.add(k).cast::<T>().read_unaligned() })
    }

    #[inline(always)]
    fn be16(self, k: usize) -> Result<u16, Reason> {
        Ok(u16::from_be_bytes(self.get::<[u8; 2]>(k)?))
    }
}

/// 16 bytes of address as two words: one bounds check, two unaligned word loads (a read
/// of the whole array becomes a `memmove` call on this target, see crate::word).
#[inline(always)]
fn read_addr(ctx: &XdpContext, off: usize) -> Result<Addr, Reason> {
    let p = ptr_at::<[u64; 2]>(ctx, off)?.cast::<u64>();
    // SAFETY: ptr_at checked that 16 bytes at p lie inside the frame.
    Ok(Addr(unsafe {
        [p.read_unaligned(), p.add(1).read_unaligned()]
    }))
}

#[inline(always)]
fn be16(ctx: &XdpContext, off: usize) -> Result<u16, Reason> {
    Ok(u16::from_be_bytes(read::<[u8; 2]>(ctx, off)?))
}

/// The source MAC of a frame that failed to parse further (for events), if it has one.
#[inline(always)]
pub(crate) fn src_mac(ctx: &XdpContext) -> Option<[u8; 6]> {
    read::<[u8; 6]>(ctx, 6).ok()
}

#[inline(always)]
pub(crate) fn parse(
    ctx: &XdpContext,
    iface: &IfaceConfig,
    ifindex: u32,
    pkt: &mut Pkt,
) -> Result<(), Reason> {
    let eth = Hdr::<14>::at(ctx, 0)?;
    let dst_mac: [u8; 6] = eth.get(0)?;
    let src_mac: [u8; 6] = eth.get(6)?;
    let mut ethertype = eth.be16(12)?;
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
        vlan = tag.be16(0)? & 0x0fff;
        if tags == 0 {
            outer = vlan;
        }
        ethertype = tag.be16(2)?;
        off += 4;
        tags += 1;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Reason::DenyVlanDepth);
    }
    // Bypass class: the tag stack must be the port's, whole. Judging by the innermost tag
    // alone lets a frame with a foreign outer tag pass as the device (VLAN hopping).
    if iface.outer_vlan != 0 {
        if tags != 2 || outer != iface.outer_vlan {
            return Err(Reason::DenyVlanTag);
        }
    } else if tags == 2 || (tags == 1 && vlan != VLAN_UNTAGGED && iface.untagged_vlan != 0) {
        // Two tags without an outer VLAN; or a real tag on an access port, whose frames are
        // untagged (a priority tag, VID 0, is untagged with a priority).
        return Err(Reason::DenyVlanTag);
    }
    if vlan == VLAN_UNTAGGED {
        // An access port or VLAN sub-interface: the switch or the kernel took the tag off.
        vlan = iface.untagged_vlan;
    }
    // The scratch slot holds the previous packet: reset every field that is read without
    // being written first. arp_sha, nd_target and inner_* are only read on the paths that
    // write them (ARP, NS/NA, ICMP errors); zeroing them here cost a memset per packet.
    pkt.side = iface.side;
    pkt.ifindex = iface.binding(ifindex);
    pkt.port = ifindex;
    pkt.l3 = L3::Ip;
    pkt.vlan = vlan;
    pkt.src_mac = src_mac;
    pkt.dst_mac = dst_mac;
    // Volatile: plain zero stores to neighbouring fields are merged by LLVM into a
    // `memset` call, a byte loop on this target (see crate::word).
    clear(&mut pkt.src, Addr::ZERO);
    clear(&mut pkt.dst, Addr::ZERO);
    clear(&mut pkt.tcp_seq, 0);
    clear(&mut pkt.tcp_ack, 0);
    clear(&mut pkt.frag_id, 0);
    clear(&mut pkt.frag_at, 0);
    pkt.family = 0;
    pkt.hop_limit = 0;
    pkt.proto = 0;
    pkt.sport = 0;
    pkt.dport = 0;
    pkt.tcp_flags = 0;
    pkt.icmp_type = 0;
    pkt.frag = Frag::None;
    pkt.related = false;
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, off, pkt)?,
        ETH_P_IPV6 => parse_ipv6(ctx, off, pkt)?,
        ETH_P_ARP => parse_arp(ctx, off, pkt)?,
        _ => {
            // IEEE 802.1 link-local group addresses 01:80:c2:00:00:00-0f (STP, LACP, 802.1X,
            // LLDP): never forwarded by bridges, passed only if the site allows.
            if dst_mac[0] == 0x01
                && dst_mac[1] == 0x80
                && dst_mac[2] == 0xc2
                && dst_mac[3] == 0
                && dst_mac[4] == 0
                && dst_mac[5] & 0xf0 == 0
            {
                pkt.l3 = L3::Control;
            } else {
                return Err(Reason::DenyEthertype);
            }
        }
    }
    Ok(())
}

/// Writes `v` with a store LLVM does not merge into a `memset` call.
#[inline(always)]
fn clear<T: Copy>(field: &mut T, v: T) {
    // SAFETY: a valid, aligned, exclusive reference.
    unsafe { core::ptr::write_volatile(field, v) }
}

/// ARP for Ethernet/IPv4 only; the sender's binding is what anti-spoofing checks.
#[inline(always)]
fn parse_arp(ctx: &XdpContext, off: usize, pkt: &mut Pkt) -> Result<(), Reason> {
    let htype = be16(ctx, off)?;
    let ptype = be16(ctx, off + 2)?;
    let hlen: u8 = read(ctx, off + 4)?;
    let plen: u8 = read(ctx, off + 5)?;
    if htype != 1 || ptype != ETH_P_IPV4 || hlen != 6 || plen != 4 {
        return Err(Reason::DenyMalformed);
    }
    pkt.l3 = L3::Arp;
    pkt.family = FAMILY_V4;
    pkt.arp_sha = read(ctx, off + 8)?;
    let spa: [u8; 4] = read(ctx, off + 14)?;
    let tpa: [u8; 4] = read(ctx, off + 24)?;
    pkt.src = Addr::v4(spa);
    pkt.dst = Addr::v4(tpa);
    Ok(())
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize, pkt: &mut Pkt) -> Result<(), Reason> {
    // Shorter than the fixed header is malformed either way: its total length could not
    // cover its header.
    let ip = Hdr::<20>::at(ctx, off)?;
    let vihl: u8 = ip.get(0)?;
    if vihl >> 4 != 4 {
        return Err(Reason::DenyMalformed);
    }
    // IHL below 5 is not a header; the mask bounds the offset for the verifier.
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Reason::DenyMalformed);
    }
    let total = ip.be16(2)? as usize;
    let available = ctx.data_end() - ctx.data() - off;
    // A total length beyond the frame, or shorter than the header, is a lie about the
    // packet; trailing Ethernet padding (total < available) is normal.
    if total < ihl || total > available {
        return Err(Reason::DenyMalformed);
    }
    let frag_word = ip.be16(6)?;
    let more = frag_word & 0x2000 != 0;
    let frag_off = frag_word & 0x1fff;
    pkt.family = FAMILY_V4;
    pkt.hop_limit = ip.get(8)?;
    pkt.proto = ip.get(9)?;
    pkt.src = Addr::v4(ip.get(12)?);
    pkt.dst = Addr::v4(ip.get(16)?);
    pkt.frag_id = u32::from(ip.be16(4)?);
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
    let vtc: u8 = ip.get(0)?;
    if vtc >> 4 != 6 {
        return Err(Reason::DenyMalformed);
    }
    let payload = ip.be16(4)? as usize;
    let available = ctx.data_end() - ctx.data() - off;
    // Payload length 0 means a jumbogram (hop-by-hop option), never needed on device VLANs.
    if payload == 0 || 40 + payload > available {
        return Err(Reason::DenyMalformed);
    }
    pkt.family = FAMILY_V6;
    pkt.hop_limit = ip.get(7)?;
    pkt.src = Addr([ip.get(8)?, ip.get(16)?]);
    pkt.dst = Addr([ip.get(24)?, ip.get(32)?]);
    let end = off + 40 + payload;
    let mut next: u8 = ip.get(6)?;
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
            let hdr: [u8; 8] = read(ctx, at)?;
            next = hdr[0];
            let offset = (u16::from_be_bytes([hdr[2], hdr[3]]) >> 3) as usize * 8;
            let more = hdr[3] & 1 != 0;
            pkt.frag_id = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
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
            let hdr: [u8; 2] = read(ctx, at)?;
            next = hdr[0];
            at += (hdr[1] as usize + 1) * 8;
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
        _ => 0,
    };
    if at + need > end {
        return Err(short);
    }
    pkt.frag_at = (at + need - frag_part) as u32;
    match pkt.proto {
        PROTO_TCP => {
            let hdr: [u8; 14] = read(ctx, at).map_err(|_| short)?;
            pkt.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            pkt.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
            // Data offset below 5 words is not a TCP header.
            if hdr[12] >> 4 < 5 {
                return Err(Reason::DenyMalformed);
            }
            pkt.tcp_flags = hdr[13];
            // SYN+FIN and SYN+RST: never a real stack's packet (scans, evasion).
            if hdr[13] & TCP_SYN != 0 && hdr[13] & (TCP_FIN | TCP_RST) != 0 {
                return Err(Reason::DenyTcpFlags);
            }
            pkt.tcp_seq = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            pkt.tcp_ack = u32::from_be_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        }
        PROTO_UDP => {
            let hdr: [u8; 4] = read(ctx, at).map_err(|_| short)?;
            pkt.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            pkt.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let hdr: [u8; 8] = read(ctx, at).map_err(|_| short)?;
            pkt.icmp_type = hdr[0];
            let echo = matches!(
                (pkt.proto, hdr[0]),
                (PROTO_ICMP, 0 | 8) | (PROTO_ICMPV6, 128 | 129)
            );
            if echo {
                // The echo identifier plays the role of both ports: request and reply share
                // one flow key.
                let id = u16::from_be_bytes([hdr[4], hdr[5]]);
                pkt.sport = id;
                pkt.dport = id;
            }
            let error = match pkt.proto {
                PROTO_ICMP => matches!(hdr[0], 3 | 11 | 12),
                _ => matches!(hdr[0], 1..=4),
            };
            if error && pkt.frag == Frag::None {
                parse_quoted(ctx, at + 8, pkt)?;
            }
            if pkt.proto == PROTO_ICMPV6 && (hdr[0] == 135 || hdr[0] == 136) {
                if at + 24 > end {
                    return Err(Reason::DenyMalformed);
                }
                pkt.nd_target = read_addr(ctx, at + 8)?;
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
        let vihl: u8 = read(ctx, at)?;
        // A quoted packet with IP options is not walked (devices do not send options): a
        // variable offset here defeats the verifier's bounds tracking.
        if vihl != 0x45 {
            return Err(Reason::DenyMalformed);
        }
        pkt.inner_proto = read(ctx, at + 9)?;
        let src: [u8; 4] = read(ctx, at + 12)?;
        let dst: [u8; 4] = read(ctx, at + 16)?;
        // All 16 bytes: the scratch slot may hold an IPv6 error's addresses from an earlier
        // packet, and the flow key compares all of them.
        pkt.inner_src = Addr::v4(src);
        pkt.inner_dst = Addr::v4(dst);
        at + 20
    } else {
        let vtc: u8 = read(ctx, at)?;
        if vtc >> 4 != 6 {
            return Err(Reason::DenyMalformed);
        }
        pkt.inner_proto = read(ctx, at + 6)?;
        pkt.inner_src = read_addr(ctx, at + 8)?;
        pkt.inner_dst = read_addr(ctx, at + 24)?;
        at + 40
    };
    let l4: [u8; 8] = read(ctx, l4_at)?;
    match pkt.inner_proto {
        PROTO_TCP | PROTO_UDP => {
            pkt.inner_sport = u16::from_be_bytes([l4[0], l4[1]]);
            pkt.inner_dport = u16::from_be_bytes([l4[2], l4[3]]);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            pkt.inner_sport = id;
            pkt.inner_dport = id;
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

#[inline(always)]
pub(crate) fn is_link_local6(a: &Addr) -> bool {
    a.byte(0) == 0xfe && a.byte(1) & 0xc0 == 0x80
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
