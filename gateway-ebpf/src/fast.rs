//! The fast path: a data packet of a confirmed IPv4 or IPv6 TCP or UDP flow, judged from the
//! flow entry without the parse into the scratch slot, the identity hash lookup or the
//! judge.
//!
//! Most packets a gateway sees are of this kind, and the full path spent most of its
//! instructions on what such a packet does not need. The fast path takes a frame only when
//! it can prove the full path's verdict would be `AllowFlow` with side effects it
//! reproduces exactly; anything else — another frame shape, a flow that is new, closing,
//! stale or expired, an identity it cannot confirm from the device's record — is left to
//! the full path having changed nothing, and the full path judges the frame from the start
//! (parsing it too, but for the segments handed over, below).
//! So it passes nothing the full path would drop: the bypass classes stay the full path's
//! to judge, and the differential and hostile-packet tests, which drive the whole program,
//! hold it to the reference classifier like every other path.
//!
//! One thing it does for the full path: a TCP segment with SYN, FIN or RST whose shape it
//! has just checked (a flow opening, closing or being refused, an unknown source's SYN) is
//! written into the scratch slot as the parser would write it (`hand_over`), and the full
//! path judges it without parsing it again.
//!
//! What makes the verdict certain, check by check:
//! - **Frame**: Ethernet with the interface's tag stack (the parser's VLAN rules, restated),
//!   IPv4 without options or fragmentation, a total length inside the frame covering the
//!   L4 header; or IPv6 with a payload length inside the frame covering the L4 header and
//!   at most a hop-by-hop header (first) and one destination-options header before it —
//!   the chains the parser passes without a fragment header, so no bypass class of the
//!   header chain (RFC 7112, RFC 8200 §4) reaches this path: any other chain, a repeat, a
//!   fragment or an L4 header past the parser's bound takes the full path, which judges
//!   it. Then TCP with a sane data offset and none of SYN, FIN or RST (so the flow's state
//!   cannot change), or UDP (not a DHCP server's reply from a device port, DHCPv4's 67 or
//!   DHCPv6's 547, which the full path refuses); from a device port, not to a link-local
//!   address (the parser refuses one in a group frame). Every parser check that
//!   could drop such a frame holds.
//! - **Flow**: in the established table (no promotion to do), `FLOW_ESTABLISHED`, not
//!   expired, stamped under the active generation and its devices' current epochs: the
//!   full path's `keep_flow` would pass it and change nothing but the timestamp.
//! - **Identity**, from a device port: the flow's endpoint for the source names the device
//!   its address names (`FLOW_F_ADDR_*`: in this generation, the identity lookup by address
//!   finds that device), and that device's record, read by its cell from `LZ_DEV_CELL`,
//!   accepts the frame's MAC, VLAN, interface and port exactly as `identify_source` does
//!   (a bridge port pinned on first sight needs the pin map: the full path). Ends the
//!   identity lookup does not find by address are never flagged (unspecified and IPv6
//!   link-local sources, a link-local end found by MAC: `stamp_flow`), so a frame from one
//!   takes the full path. From upstream:
//!   the conditions of `upstream_reply` (the source endpoint has no device, the destination
//!   is the device its address names).

use super::*;
use parse::{Hdr, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, MAX_L4_OFFSET};

/// `established`'s answer: a data packet of a confirmed flow, judged `AllowFlow` and
/// counted; pass it.
pub(crate) const FLOW: u32 = 1;
/// `established`'s answer: the full path's to parse and judge. Nothing was changed but
/// `gen.est_missed`.
pub(crate) const FULL: u32 = 0;
/// `established`'s answer: a TCP segment with SYN, FIN or RST of the fast path's shape,
/// which the flow check does not take, parsed into the scratch slot (`hand_over`): the
/// full path's to judge without parsing it again.
pub(crate) const PARSED: u32 = 2;

/// Judges and counts the frame if it is a data packet of a confirmed flow ([`FLOW`]: pass
/// it); else the full path's, parsed already or not ([`PARSED`], [`FULL`]). A BPF function
/// of its own: its stack is not added to the full path's.
#[inline(never)]
pub(crate) fn established(
    ctx: *mut aya_ebpf::bindings::xdp_md,
    iface: &IfaceConfig,
    ifindex: u32,
    gen: &mut Gen,
    len: u64,
) -> u32 {
    let ctx = XdpContext::new(ctx);
    let Some(l2) = link(&ctx, iface) else {
        return FULL;
    };
    // One copy of the flow check per family, each inlined with its family constant: IPv4
    // keeps its one-word addresses (a shared copy compared and keyed two words each).
    let taken = match l2.ethertype {
        ETH_P_IPV4 => match ipv4(&ctx, l2.off).map(|ip| frame(iface, ifindex, &l2, ip)) {
            Some(Ok(f)) => on_flow(iface, ifindex, gen, len, &f),
            Some(Err(answer)) => return answer,
            None => false,
        },
        ETH_P_IPV6 => match ipv6(&ctx, l2.off).map(|ip| frame(iface, ifindex, &l2, ip)) {
            Some(Ok(f)) => on_flow(iface, ifindex, gen, len, &f),
            Some(Err(answer)) => return answer,
            None => false,
        },
        // A third tag fails here too.
        _ => false,
    };
    if taken {
        FLOW
    } else {
        FULL
    }
}

/// The fast path's verdict on a frame of its shape: see `established`.
#[inline(always)]
fn on_flow(iface: &IfaceConfig, ifindex: u32, gen: &mut Gen, len: u64, f: &Frame) -> bool {
    let (key, src_is_a) = normalized_key(
        (&f.src, f.sport),
        (&f.dst, f.dport),
        (f.proto, f.family),
        ECHO_NONE,
    );
    let Some(flow) = LZ_EST_FLOWS.get_ptr_mut(key) else {
        // The full path looks in the new table first (see FlowLookup::of).
        gen.est_missed = true;
        return false;
    };
    // SAFETY: the pointer comes from a successful lookup in this program run.
    let flow = unsafe { &mut *flow };
    if flow.state != FLOW_ESTABLISHED
        || expired(
            gen.now,
            flow.last_seen_ns,
            flow_timeout_ns(f.proto, FLOW_ESTABLISHED),
        )
        || !flow_is_current(gen, flow)
    {
        return false;
    }
    // The endpoint the verdict is for — the source from a device port, the destination from
    // upstream — as (device, cell, found by its address), and the other endpoint's device.
    // Only that endpoint is read (selecting both pairs cost a dozen moves on every packet).
    let from_devices = iface.side == SIDE_DEVICES;
    let (id, cell, by_addr, other) = if src_is_a == from_devices {
        let by_addr = flow.flags & FLOW_F_ADDR_A != 0;
        (flow.dev_a, flow.cell_a, by_addr, flow.dev_b)
    } else {
        let by_addr = flow.flags & FLOW_F_ADDR_B != 0;
        (flow.dev_b, flow.cell_b, by_addr, flow.dev_a)
    };
    // The flag is set only with a device (stamp_flow): both checks hold or neither.
    if id == 0 || !by_addr {
        return false;
    }
    if from_devices {
        // The flag says identify_source would find this device by this address, so the
        // record's checks are all that is left. It is never set for an unspecified or IPv6
        // link-local source (identify_source goes by MAC and the link-local owner map for
        // those), nor for a link-local end found by the MAC its frames were sent to, nor
        // for an unspecified one (no device binds one: the compiler refuses it): frames
        // from those took the full path above. Bypass class, twice found by reviews: a
        // flag set for a link-local end found by MAC let frames from an IPv6 link-local
        // address named in the inventory, or from a 169.254 address the device no longer
        // owned, pass as its own here.
        if !device_accepts(gen.slot, id, cell, f, iface, ifindex) {
            return false;
        }
    } else if other != 0 {
        // As upstream_reply: a source with a device is a spoof to judge in full.
        return false;
    }
    let dev = Dev { id, cell };
    // The coarse clock moves once a tick: most packets of a busy flow find the timestamp
    // current and leave the entry's cache line clean.
    if flow.last_seen_ns != gen.now {
        flow.last_seen_ns = gen.now;
    }
    let mut v = Verdict::dev(Reason::AllowFlow, dev);
    v.rule = flow.rule;
    v.report = false;
    account(gen, &v, iface.side, len);
    true
}

/// The fields of a frame the fast path takes.
struct Frame {
    src_mac: Mac,
    /// The device VLAN, as the parser derives it.
    vlan: u16,
    /// Addresses as the parser holds them (see `Addr`).
    src: Addr,
    dst: Addr,
    family: u8,
    sport: u16,
    dport: u16,
    proto: u8,
}

/// The network layer of a frame the fast path takes.
struct L3 {
    src: Addr,
    dst: Addr,
    family: u8,
    proto: u8,
    /// The first 14 bytes of the L4 header (the ports, TCP's data offset and flags), and
    /// whether the IP payload covers the protocol's whole header.
    l4: Hdr<14>,
    whole: bool,
    /// The IP header's first 20 bytes, and the length of the IPv6 extension headers (0 for
    /// IPv4): read by `hand_over` alone.
    head: Hdr<20>,
    ext: usize,
}

/// The link layer of a frame the fast path may take.
struct Link {
    /// The Ethernet header (the source MAC is read last, when the frame is taken).
    eth: Hdr<22>,
    /// The device VLAN, as the parser derives it.
    vlan: u16,
    ethertype: u16,
    /// Offset of the IP header.
    off: usize,
}

/// The link layer, if the frame has the interface's tag stack (the parser's rule).
#[inline(always)]
fn link(ctx: &XdpContext, iface: &IfaceConfig) -> Option<Link> {
    // Room for two tags; a frame shorter than that carries no IP TCP or UDP packet.
    let eth = Hdr::<22>::at(ctx, 0).ok()?;
    let is_tag = |t: u16| t == ETH_P_8021Q || t == ETH_P_8021AD;
    // (offset of the IP header, tags, outer VID, innermost VID, ethertype)
    let (off, tags, outer, inner, ethertype) = if !is_tag(eth.be16::<12>()) {
        (14usize, 0, 0, VLAN_UNTAGGED, eth.be16::<12>())
    } else if !is_tag(eth.be16::<16>()) {
        let vid = eth.be16::<14>() & 0x0fff;
        (18, 1, vid, vid, eth.be16::<16>())
    } else {
        let outer = eth.be16::<14>() & 0x0fff;
        (22, 2, outer, eth.be16::<18>() & 0x0fff, eth.be16::<20>())
    };
    Some(Link {
        eth,
        vlan: parse::device_vlan(iface, tags, outer, inner)?,
        ethertype,
        off,
    })
}

/// The frame, if its transport has the fast path's shape and every parser check that could
/// drop it holds (see the module docs), and it is a data packet; else `established`'s
/// answer.
#[inline(always)]
fn frame(iface: &IfaceConfig, ifindex: u32, l2: &Link, ip: L3) -> Result<Frame, u32> {
    if !ip.whole || !matches!(ip.proto, PROTO_TCP | PROTO_UDP) {
        return Err(FULL);
    }
    // A link-local destination from a device port: the full path (its group-MAC check and
    // `sent_elsewhere`; IPv4's broadcast address too, one compare cheaper).
    if iface.side == SIDE_DEVICES && parse::is_link_local(ip.family, &ip.dst) {
        return Err(FULL);
    }
    let l4 = ip.l4;
    let sport = l4.be16::<0>();
    if ip.proto == PROTO_TCP {
        // Data offset of 5 words or more; neither FIN nor RST, so the flow's state stays.
        // Nor SYN: not for the verdict (a SYN alone changes nothing on a confirmed flow),
        // but because SYNs open flows, and handing them over at once keeps this path's flow
        // lookup off the new-flow, denial and unknown-device paths.
        const NOT_DATA: u8 = parse::TCP_SYN | parse::TCP_FIN | parse::TCP_RST;
        let flags = l4.u8::<13>();
        if l4.u8::<12>() >> 4 < 5 {
            return Err(FULL);
        }
        if flags & NOT_DATA != 0 {
            // What the parser refuses is its to refuse.
            return Err(if parse::refused_flags(flags) {
                FULL
            } else {
                hand_over(iface, ifindex, l2, &ip, flags)
            });
        }
    } else if iface.side == SIDE_DEVICES {
        // A DHCP server's message from a device port (from the server's port or to the
        // client's): judge_ip refuses it.
        let (server, client) = if ip.family == FAMILY_V4 {
            (67, 68)
        } else {
            (547, 546)
        };
        if sport == server || l4.be16::<2>() == client {
            return Err(FULL);
        }
    }
    Ok(Frame {
        src_mac: l2.eth.mac::<6, 10>(),
        vlan: l2.vlan,
        src: ip.src,
        dst: ip.dst,
        family: ip.family,
        sport,
        dport: l4.be16::<2>(),
        proto: ip.proto,
    })
}

/// Writes a TCP segment with SYN, FIN or RST of the fast path's shape into the scratch
/// slot, as the parser would ([`PARSED`]): one parse per packet for a device's new flows
/// and refusals, unknown sources' SYNs, and every flow's SYN-ACK, FIN and RST, from either
/// side (the parser read it again, some 210 instructions, for the 70 the fast path had
/// spent). Every field the parser writes for such a frame is read from the same bytes; the
/// differential test holds the two to the same verdicts.
/// Only here, where the flow check is not taken: handed over after it declined a data
/// packet, the reads kept live across it spilled its registers (some 55 instructions on
/// every packet of a confirmed flow).
#[inline(always)]
fn hand_over(iface: &IfaceConfig, ifindex: u32, l2: &Link, ip: &L3, flags: u8) -> u32 {
    let Some(pkt) = LZ_SCRATCH.get_ptr_mut(0) else {
        return FULL;
    };
    // SAFETY: this CPU's scratch slot; XDP runs to completion without preemption.
    let pkt = unsafe { &mut *pkt };
    let v4 = ip.family == FAMILY_V4;
    let read = parse::Read {
        src: ip.src,
        dst: ip.dst,
        src_mac: l2.eth.mac::<6, 10>(),
        dst_mac: l2.eth.mac::<0, 4>(),
        family: ip.family,
        // IPv4's TTL and identification; IPv6's hop limit (no fragment header: no id).
        hop_limit: if v4 {
            ip.head.u8::<8>()
        } else {
            ip.head.u8::<7>()
        },
        frag_id: if v4 {
            u32::from(ip.head.be16::<4>())
        } else {
            0
        },
        proto: PROTO_TCP,
        tcp_flags: flags,
        vlan: l2.vlan,
        // Read again rather than passed in: `frame`'s sport kept live into this cold branch
        // cost the established path 3 instructions (register allocation), counted.
        sport: ip.l4.be16::<0>(),
        dport: ip.l4.be16::<2>(),
        tcp_seq: ip.l4.be32::<4>(),
        tcp_ack: ip.l4.be32::<8>(),
        // Where the TCP header ends, from the start of the IP payload (`parse_l4`).
        frag_at: (ip.ext + 20) as u32,
    };
    parse::write_read(pkt, iface, ifindex, &read);
    PARSED
}

/// The L4 header's length the fast path needs inside the IP payload: TCP's 20, UDP's 8
/// (any other protocol takes the full path anyway).
#[inline(always)]
fn l4_len(proto: u8) -> usize {
    if proto == PROTO_TCP {
        20
    } else {
        8
    }
}

/// An IPv4 header without options, not a fragment, its total length inside the frame, and
/// the start of its L4 header with it (one bounds check for both).
#[inline(always)]
fn ipv4(ctx: &XdpContext, off: usize) -> Option<L3> {
    let ip = Hdr::<34>::at(ctx, off).ok()?;
    // Version 4, IHL 5: options (rare, and a variable offset) take the full path.
    if ip.u8::<0>() != 0x45 {
        return None;
    }
    let total = ip.be16::<2>() as usize;
    let available = ctx.data_end() - ctx.data() - off;
    // Neither MF nor an offset: not a fragment.
    if total > available || ip.be16::<6>() & 0x3fff != 0 {
        return None;
    }
    let proto = ip.u8::<9>();
    Some(L3 {
        src: Addr::v4(ip.ne32::<12>()),
        dst: Addr::v4(ip.ne32::<16>()),
        family: FAMILY_V4,
        proto,
        l4: ip.sub::<20, 14>(),
        whole: total >= 20 + l4_len(proto),
        head: ip.sub::<0, 20>(),
        ext: 0,
    })
}

/// An IPv6 header, its payload inside the frame, then at most a hop-by-hop header and one
/// destination-options header: straight-line, no walk (see the module docs).
#[inline(always)]
fn ipv6(ctx: &XdpContext, off: usize) -> Option<L3> {
    let ip = Hdr::<40>::at(ctx, off).ok()?;
    if ip.u8::<0>() >> 4 != 6 {
        return None;
    }
    let payload = ip.be16::<4>() as usize;
    let available = ctx.data_end() - ctx.data() - off;
    // Payload length 0 is a jumbogram: the parser drops it.
    if payload == 0 || 40 + payload > available {
        return None;
    }
    let mut next = ip.u8::<6>();
    let mut at = off + 40;
    // Hop-by-hop only first (RFC 8200 §4.3), then one destination-options header; each
    // counts its length in 8-octet units beyond the first 8.
    for kind in [0u8, 60] {
        if next == kind {
            let h = Hdr::<2>::at(ctx, at).ok()?;
            next = h.u8::<0>();
            at += (h.u8::<1>() as usize + 1) * 8;
            if at > MAX_L4_OFFSET {
                return None;
            }
        }
    }
    Some(L3 {
        src: Addr([ip.ne64::<8>(), ip.ne64::<16>()]),
        dst: Addr([ip.ne64::<24>(), ip.ne64::<32>()]),
        family: FAMILY_V6,
        proto: next,
        l4: Hdr::<14>::at(ctx, at).ok()?,
        whole: at + l4_len(next) <= off + 40 + payload,
        head: ip.sub::<0, 20>(),
        ext: at - (off + 40),
    })
}

/// Whether device `id`, whose record in the active slot sits at `cell`, accepts the frame
/// as its own: `identify_source`'s checks of a device found by its address, read from the
/// record by cell. `false` also for a bridge port pinned on first sight (the pin map is
/// the full path's).
#[inline(always)]
fn device_accepts(
    slot: u8,
    id: u64,
    cell: u16,
    f: &Frame,
    iface: &IfaceConfig,
    ifindex: u32,
) -> bool {
    let Some(dev) = LZ_DEV_CELL.get(dev_cell_index(slot, cell)) else {
        return false;
    };
    let binding = iface.binding(ifindex);
    let has_mac = dev.flags & DEV_F_HAS_MAC != 0;
    let port_ok = binding == ifindex
        || (dev.port_ifindex != IFINDEX_ANY && dev.port_ifindex == ifindex)
        || (dev.port_ifindex == IFINDEX_ANY && !has_mac);
    dev.id == id
        && (!has_mac || Mac::of_device(dev) == f.src_mac)
        && (dev.vlan == VLAN_ANY || dev.vlan == f.vlan)
        && (dev.ifindex == IFINDEX_ANY || dev.ifindex == binding)
        && port_ok
}
