//! The fast path: a data packet of a confirmed IPv4 TCP or UDP flow, judged from the flow
//! entry without the parse into the scratch slot, the identity hash lookup or the judge.
//!
//! Most packets a gateway sees are of this kind, and the full path spent most of its
//! instructions on what such a packet does not need. The fast path takes a frame only when
//! it can prove the full path's verdict would be `AllowFlow` with side effects it
//! reproduces exactly; anything else — another frame shape, a flow that is new, closing,
//! stale or expired, an identity it cannot confirm from the device's record — returns
//! `false` having changed nothing, and the full path judges the frame from the start. So it
//! passes nothing the full path would drop: the bypass classes stay the full path's to
//! judge, and the differential and hostile-packet tests, which drive the whole program,
//! hold it to the reference classifier like every other path.
//!
//! What makes the verdict certain, check by check:
//! - **Frame**: Ethernet with the interface's tag stack (the parser's VLAN rules, restated),
//!   IPv4 without options or fragmentation, a total length inside the frame covering the
//!   L4 header, TCP with a sane data offset and none of SYN, FIN or RST (so the flow's
//!   state cannot change), or UDP (not a DHCP server's reply from a device port, which the full
//!   path refuses). Every parser check that could drop such a frame holds.
//! - **Flow**: in the established table (no promotion to do), `FLOW_ESTABLISHED`, not
//!   expired, stamped under the active generation and its devices' current epochs: the
//!   full path's `keep_flow` would pass it and change nothing but the timestamp.
//! - **Identity**, from a device port: the flow's endpoint for the source names the device
//!   its address names (`FLOW_F_ADDR_*`: in this generation, the identity lookup by address
//!   finds that device), and that device's record, read by its cell from `LZ_DEV_CELL`,
//!   accepts the frame's MAC, VLAN, interface and port exactly as `identify_source` does
//!   (a bridge port pinned on first sight needs the pin map: the full path). From upstream:
//!   the conditions of `upstream_reply` (the source endpoint has no device, the destination
//!   is the device its address names).

use super::*;
use parse::{Hdr, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4};

/// Judges and counts the frame if it is a data packet of a confirmed flow (`true`: pass
/// it); `false`: it is not, or not provably, and nothing was changed but
/// `gen.est_missed`. A BPF function of its own: its stack is not added to the full path's.
#[inline(never)]
pub(crate) fn established(
    ctx: *mut aya_ebpf::bindings::xdp_md,
    iface: &IfaceConfig,
    ifindex: u32,
    gen: &mut Gen,
    len: u64,
) -> bool {
    let ctx = XdpContext::new(ctx);
    let Some(f) = frame(&ctx, iface) else {
        return false;
    };
    let (key, src_is_a) = normalized_key(
        &Addr::v4(f.src),
        f.sport,
        &Addr::v4(f.dst),
        f.dport,
        f.proto,
        FAMILY_V4,
    );
    let Some(flow) = LZ_EST_FLOWS.get_ptr_mut(key) else {
        // The full path need not look in the established table again (see FlowLookup).
        gen.est_missed = true;
        return false;
    };
    // SAFETY: the pointer comes from a successful lookup in this program run.
    let flow = unsafe { &mut *flow };
    if flow.state != FLOW_ESTABLISHED
        || age(gen.now, flow.last_seen_ns) > flow_timeout_ns(f.proto, FLOW_ESTABLISHED)
        || !flow_is_current(gen, flow)
    {
        return false;
    }
    // The endpoints as (device, cell, found by its address), source first.
    let a = (flow.dev_a, flow.cell_a, flow.flags & FLOW_F_ADDR_A != 0);
    let b = (flow.dev_b, flow.cell_b, flow.flags & FLOW_F_ADDR_B != 0);
    let (src, dst) = if src_is_a { (a, b) } else { (b, a) };
    let dev = if iface.side == SIDE_DEVICES {
        let (id, cell, by_addr) = src;
        if id == 0 || !by_addr || !device_accepts(gen.slot, id, cell, &f, iface, ifindex) {
            return false;
        }
        Dev { id, cell }
    } else {
        // As upstream_reply: a source with a device is a spoof to judge in full.
        let (id, cell, by_addr) = dst;
        if src.0 != 0 || !by_addr {
            return false;
        }
        Dev { id, cell }
    };
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
    /// IPv4 addresses, as loaded (network order in a native word).
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    proto: u8,
}

/// The frame, if it has the fast path's shape and every parser check that could drop it
/// holds (see the module docs).
#[inline(always)]
fn frame(ctx: &XdpContext, iface: &IfaceConfig) -> Option<Frame> {
    // Room for two tags; a frame shorter than that carries no IPv4 TCP or UDP packet.
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
    // A third tag fails the ethertype test.
    if ethertype != ETH_P_IPV4 {
        return None;
    }
    let vlan = parse::device_vlan(iface, tags, outer, inner)?;
    // The IPv4 header without options and the first 14 bytes of a TCP header (8 of UDP's).
    let ip = Hdr::<34>::at(ctx, off).ok()?;
    // Version 4, IHL 5: options (rare, and a variable offset) take the full path.
    if ip.u8::<0>() != 0x45 {
        return None;
    }
    let proto = ip.u8::<9>();
    let need = match proto {
        PROTO_TCP => 40,
        PROTO_UDP => 28,
        _ => return None,
    };
    let total = ip.be16::<2>() as usize;
    let available = ctx.data_end() - ctx.data() - off;
    // Neither MF nor an offset: not a fragment.
    if total < need || total > available || ip.be16::<6>() & 0x3fff != 0 {
        return None;
    }
    let sport = ip.be16::<20>();
    if proto == PROTO_TCP {
        // Data offset of 5 words or more; neither FIN nor RST, so the flow's state stays.
        // Nor SYN: not for the verdict (a SYN alone changes nothing on a confirmed flow),
        // but because SYNs open flows, and sending them on at once keeps this path's flow
        // lookup off the new-flow, denial and unknown-device paths.
        const NOT_DATA: u8 = parse::TCP_SYN | parse::TCP_FIN | parse::TCP_RST;
        if ip.u8::<32>() >> 4 < 5 || ip.u8::<33>() & NOT_DATA != 0 {
            return None;
        }
    } else if iface.side == SIDE_DEVICES && sport == 67 {
        // A DHCP server's message from a device port: judge_ip refuses it.
        return None;
    }
    Some(Frame {
        src_mac: eth.mac::<6, 10>(),
        vlan,
        src: ip.ne32::<12>(),
        dst: ip.ne32::<16>(),
        sport,
        dport: ip.be16::<22>(),
        proto,
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
