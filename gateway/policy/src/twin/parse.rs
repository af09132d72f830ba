//! Host twin of `gateway-ebpf/src/parse.rs`: frame bytes → [`Parsed`] or the reason the XDP
//! program drops the frame. Same checks, same order, same bounds; a differential test and
//! the fuzzer hold the two together. Pure and panic-free on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lazaret_abi::*;

pub use crate::classify::Quoted;
use crate::classify::{FlowHint, IpDesc, PacketDesc, PacketKind, TCP_FIN, TCP_RST, TCP_SYN};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// `parse.rs::MAX_L4_OFFSET`.
const MAX_L4_OFFSET: usize = 1024;

/// Fragment position, as in the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    None,
    First,
    Later,
}

/// What the parser extracts: the classifier's description plus the datapath-only facts
/// (fragments, TCP sequence numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub desc: PacketDesc,
    pub frag: Frag,
    pub frag_id: u32,
    /// `Pkt::frag_at`: a later fragment's offset in bytes; a first fragment's upper-layer
    /// header end in its fragmentable part.
    pub frag_at: u32,
    /// TCP sequence and acknowledgment numbers (0 for other protocols): the flow table
    /// confirms a handshake with them.
    pub tcp_seq: u32,
    pub tcp_ack: u32,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn get<const N: usize>(&self, off: usize) -> Result<[u8; N], Reason> {
        self.0
            .get(off..off.checked_add(N).ok_or(Reason::DenyMalformed)?)
            .and_then(|s| s.try_into().ok())
            .ok_or(Reason::DenyMalformed)
    }
    fn u8(&self, off: usize) -> Result<u8, Reason> {
        Ok(self.get::<1>(off)?[0])
    }
    fn be16(&self, off: usize) -> Result<u16, Reason> {
        Ok(u16::from_be_bytes(self.get(off)?))
    }
}

/// Parses a frame received on interface `ifindex`, configured as `iface`.
pub fn parse(frame: &[u8], iface: &IfaceConfig, ifindex: u32) -> Result<Parsed, Reason> {
    let b = Bytes(frame);
    let dst_mac: [u8; 6] = b.get(0)?;
    let src_mac: [u8; 6] = b.get(6)?;
    let mut ethertype = b.be16(12)?;
    let mut off = 14;
    let mut vlan = VLAN_UNTAGGED;
    let mut outer = VLAN_UNTAGGED;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        vlan = b.be16(off)? & 0x0fff;
        if tags == 0 {
            outer = vlan;
        }
        ethertype = b.be16(off + 2)?;
        off += 4;
        tags += 1;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Reason::DenyVlanDepth);
    }
    if iface.outer_vlan != 0 {
        if tags != 2 || outer != iface.outer_vlan {
            return Err(Reason::DenyVlanTag);
        }
    } else if tags == 2 || (tags == 1 && vlan != VLAN_UNTAGGED && iface.untagged_vlan != 0) {
        return Err(Reason::DenyVlanTag);
    }
    if vlan == VLAN_UNTAGGED {
        vlan = iface.untagged_vlan;
    }
    let mut p = Parsed {
        desc: PacketDesc {
            side: iface.side,
            ifindex: iface.binding(ifindex),
            port: ifindex,
            claim_scope: iface.claim_scope,
            vlan,
            src_mac,
            dst_mac,
            kind: PacketKind::Control,
            flow: FlowHint::None,
        },
        frag: Frag::None,
        frag_id: 0,
        frag_at: 0,
        tcp_seq: 0,
        tcp_ack: 0,
    };
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(&b, off, &mut p)?,
        ETH_P_IPV6 => parse_ipv6(&b, off, &mut p)?,
        ETH_P_ARP => {
            let (htype, ptype) = (b.be16(off)?, b.be16(off + 2)?);
            let (hlen, plen) = (b.u8(off + 4)?, b.u8(off + 5)?);
            if htype != 1 || ptype != ETH_P_IPV4 || hlen != 6 || plen != 4 {
                return Err(Reason::DenyMalformed);
            }
            let sha: [u8; 6] = b.get(off + 8)?;
            let spa: [u8; 4] = b.get(off + 14)?;
            let tpa: [u8; 4] = b.get(off + 24)?;
            p.desc.kind = PacketKind::Arp {
                sha,
                spa: Ipv4Addr::from(spa),
                tpa: Ipv4Addr::from(tpa),
            };
        }
        _ => {
            let link_local = dst_mac[..5] == [0x01, 0x80, 0xc2, 0, 0] && dst_mac[5] & 0xf0 == 0;
            if !link_local {
                return Err(Reason::DenyEthertype);
            }
        }
    }
    Ok(p)
}

fn ip_desc(src: IpAddr, dst: IpAddr, proto: u8, hop_limit: u8) -> IpDesc {
    IpDesc {
        hop_limit,
        ..IpDesc::new(src, dst, proto)
    }
}

fn parse_ipv4(b: &Bytes, off: usize, p: &mut Parsed) -> Result<(), Reason> {
    let vihl = b.u8(off)?;
    if vihl >> 4 != 4 {
        return Err(Reason::DenyMalformed);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < 20 {
        return Err(Reason::DenyMalformed);
    }
    let total = usize::from(b.be16(off + 2)?);
    let available = b.0.len().saturating_sub(off);
    if total < ihl || total > available {
        return Err(Reason::DenyMalformed);
    }
    let frag_word = b.be16(off + 6)?;
    let more = frag_word & 0x2000 != 0;
    let frag_off = frag_word & 0x1fff;
    let ttl = b.u8(off + 8)?;
    let proto = b.u8(off + 9)?;
    let src = IpAddr::V4(Ipv4Addr::from(b.get::<4>(off + 12)?));
    let dst = IpAddr::V4(Ipv4Addr::from(b.get::<4>(off + 16)?));
    link_local_in_group_frame(p, dst)?;
    p.frag_id = u32::from(b.be16(off + 4)?);
    let mut ip = ip_desc(src, dst, proto, ttl);
    if frag_off != 0 {
        if frag_off == 1 && proto == PROTO_TCP {
            return Err(Reason::DenyFragment);
        }
        if usize::from(frag_off) * 8 + total > 65_535 {
            return Err(Reason::DenyFragment);
        }
        p.frag = Frag::Later;
        p.frag_at = u32::from(frag_off) * 8;
        p.desc.kind = PacketKind::Ip(ip);
        return Ok(());
    }
    if more {
        p.frag = Frag::First;
    }
    parse_l4(b, off + ihl, off + ihl, off + total, &mut ip, p)?;
    p.desc.kind = PacketKind::Ip(ip);
    Ok(())
}

/// The datapath's `link_local_in_group_frame`: from a device port, a link-local destination
/// in a frame sent to a group MAC (it would name no device, and reach one).
fn link_local_in_group_frame(p: &Parsed, dst: IpAddr) -> Result<(), Reason> {
    let group = p.desc.dst_mac[0] & 1 != 0;
    if p.desc.side == SIDE_DEVICES && group && crate::classify::link_local_unicast(dst) {
        return Err(Reason::DenyMalformed);
    }
    Ok(())
}

fn parse_ipv6(b: &Bytes, off: usize, p: &mut Parsed) -> Result<(), Reason> {
    let vtc = b.u8(off)?;
    if vtc >> 4 != 6 {
        return Err(Reason::DenyMalformed);
    }
    let payload = usize::from(b.be16(off + 4)?);
    let available = b.0.len().saturating_sub(off);
    if payload == 0 || 40 + payload > available {
        return Err(Reason::DenyMalformed);
    }
    let hop_limit = b.u8(off + 7)?;
    let src = IpAddr::V6(Ipv6Addr::from(b.get::<16>(off + 8)?));
    let dst = IpAddr::V6(Ipv6Addr::from(b.get::<16>(off + 24)?));
    link_local_in_group_frame(p, dst)?;
    let end = off + 40 + payload;
    let mut next = b.u8(off + 6)?;
    let mut at = off + 40;
    let mut frag_part = at;
    let mut seen = 0u8;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        let bit = match next {
            0 if walked == 0 => 1,
            60 => 2,
            44 => 4,
            0 | 43 | 51 => return Err(Reason::DenyIpv6Ext),
            _ => break,
        };
        if seen & bit != 0 {
            return Err(Reason::DenyIpv6Ext);
        }
        seen |= bit;
        if bit == 4 {
            let hdr: [u8; 8] = b.get(at)?;
            next = hdr[0];
            let offset = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]) >> 3) * 8;
            let more = hdr[3] & 1 != 0;
            p.frag_id = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            at += 8;
            if at > end {
                return Err(Reason::DenyMalformed);
            }
            frag_part = at;
            if offset + (end - at) > 65_535 {
                return Err(Reason::DenyFragment);
            }
            if offset != 0 {
                p.frag = Frag::Later;
                p.frag_at = offset as u32;
                p.desc.kind = PacketKind::Ip(ip_desc(src, dst, next, hop_limit));
                return Ok(());
            }
            if more {
                p.frag = Frag::First;
            }
        } else {
            let hdr: [u8; 2] = b.get(at)?;
            next = hdr[0];
            at += (usize::from(hdr[1]) + 1) * 8;
        }
        if at > MAX_L4_OFFSET {
            return Err(Reason::DenyIpv6Ext);
        }
        walked += 1;
    }
    match next {
        0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254 => Err(Reason::DenyIpv6Ext),
        _ => {
            let mut ip = ip_desc(src, dst, next, hop_limit);
            parse_l4(b, frag_part, at, end, &mut ip, p)?;
            p.desc.kind = PacketKind::Ip(ip);
            Ok(())
        }
    }
}

fn parse_l4(
    b: &Bytes,
    frag_part: usize,
    at: usize,
    end: usize,
    ip: &mut IpDesc,
    p: &mut Parsed,
) -> Result<(), Reason> {
    if at > MAX_L4_OFFSET {
        return Err(Reason::DenyMalformed);
    }
    let short = if p.frag == Frag::First {
        Reason::DenyFragment
    } else {
        Reason::DenyMalformed
    };
    let need = match ip.proto {
        PROTO_TCP => 20,
        PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6 => 8,
        PROTO_SCTP | PROTO_UDPLITE | PROTO_DCCP => 4,
        _ => 0,
    };
    if at + need > end {
        return Err(short);
    }
    p.frag_at = (at + need - frag_part) as u32;
    match ip.proto {
        PROTO_TCP => {
            let hdr: [u8; 14] = b.get(at).map_err(|_| short)?;
            ip.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            ip.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
            if hdr[12] >> 4 < 5 {
                return Err(Reason::DenyMalformed);
            }
            ip.tcp_flags = hdr[13];
            if hdr[13] & TCP_SYN != 0 && hdr[13] & (TCP_FIN | TCP_RST) != 0 {
                return Err(Reason::DenyTcpFlags);
            }
            p.tcp_seq = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            p.tcp_ack = u32::from_be_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        }
        PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE | PROTO_DCCP => {
            let hdr: [u8; 4] = b.get(at).map_err(|_| short)?;
            ip.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            ip.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let hdr: [u8; 8] = b.get(at).map_err(|_| short)?;
            ip.icmp_type = hdr[0];
            let echo = matches!(
                (ip.proto, hdr[0]),
                (PROTO_ICMP, 0 | 8) | (PROTO_ICMPV6, 128 | 129)
            );
            if echo {
                let id = u16::from_be_bytes([hdr[4], hdr[5]]);
                ip.sport = id;
                ip.dport = id;
            }
            let error = match ip.proto {
                PROTO_ICMP => matches!(hdr[0], 3 | 11 | 12),
                _ => matches!(hdr[0], 1..=4),
            };
            if error && p.frag == Frag::None {
                ip.quoted = Some(parse_quoted(b, at + 8, ip.proto)?);
            }
            if ip.proto == PROTO_ICMPV6 && (hdr[0] == 135 || hdr[0] == 136) {
                if at + 24 > end {
                    return Err(Reason::DenyMalformed);
                }
                ip.nd_target = Some(Ipv6Addr::from(b.get::<16>(at + 8)?));
            }
        }
        _ => {}
    }
    Ok(())
}

fn parse_quoted(b: &Bytes, at: usize, proto: u8) -> Result<Quoted, Reason> {
    let (src, dst, inner, l4_at) = if proto == PROTO_ICMP {
        if b.u8(at)? != 0x45 {
            return Err(Reason::DenyMalformed);
        }
        (
            IpAddr::V4(Ipv4Addr::from(b.get::<4>(at + 12)?)),
            IpAddr::V4(Ipv4Addr::from(b.get::<4>(at + 16)?)),
            b.u8(at + 9)?,
            at + 20,
        )
    } else {
        if b.u8(at)? >> 4 != 6 {
            return Err(Reason::DenyMalformed);
        }
        (
            IpAddr::V6(Ipv6Addr::from(b.get::<16>(at + 8)?)),
            IpAddr::V6(Ipv6Addr::from(b.get::<16>(at + 24)?)),
            b.u8(at + 6)?,
            at + 40,
        )
    };
    let l4: [u8; 8] = b.get(l4_at)?;
    let (sport, dport) = match inner {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE | PROTO_DCCP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        PROTO_ICMP | PROTO_ICMPV6 => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (0, 0),
    };
    Ok(Quoted {
        src,
        dst,
        proto: inner,
        sport,
        dport,
        echo: echo_kind(inner, l4[0]),
    })
}
