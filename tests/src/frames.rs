//! Crafted Ethernet frames for datapath tests: well-formed by default, every field
//! overridable so malformed cases are one call away.

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_8021Q: u16 = 0x8100;
pub const ETH_8021AD: u16 = 0x88a8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// An Ethernet frame: destination, source, VLAN tags (TPID, VID) outermost first, payload.
pub fn ethernet(
    dst: Mac,
    src: Mac,
    tags: &[(u16, u16)],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * tags.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    // Pad to the Ethernet minimum like a NIC would.
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Fills in the TCP or UDP checksum of an untagged Ethernet + IPv4 frame (the builders
/// leave it 0). The XDP program does not check it; conntrack, in front of the nftables
/// table, counts a packet with a wrong one as invalid.
pub fn with_l4_checksum4(frame: Vec<u8>) -> Vec<u8> {
    with_l4_checksum(frame)
}

/// Fills in the TCP or UDP checksum of an Ethernet frame carrying IPv4 or IPv6 (after any
/// VLAN tags; IPv6 without extension headers): conntrack drops segments with a wrong one
/// as invalid, so frames meant to pass need it.
pub fn with_l4_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let mut at = 12;
    while frame.len() >= at + 2
        && matches!(
            u16::from_be_bytes([frame[at], frame[at + 1]]),
            ETH_8021Q | ETH_8021AD
        )
    {
        at += 4;
    }
    if frame.len() < at + 2 {
        return frame;
    }
    let ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let ip = at + 2;
    let (l4, end, proto, mut pseudo) = match ethertype {
        ETH_IPV4 if frame.len() >= ip + 20 => {
            let ihl = usize::from(frame[ip] & 0x0f) * 4;
            // The IP total length, not the frame's: a short frame is padded to 60 bytes.
            let end = ip + usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
            (
                ip + ihl,
                end,
                frame[ip + 9],
                frame[ip + 12..ip + 20].to_vec(),
            )
        }
        ETH_IPV6 if frame.len() >= ip + 40 => {
            let end = ip + 40 + usize::from(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]));
            (ip + 40, end, frame[ip + 6], frame[ip + 8..ip + 40].to_vec())
        }
        _ => return frame,
    };
    let at = match proto {
        6 => 16,
        17 => 6,
        _ => return frame,
    };
    if end > frame.len() || end < l4 + at + 2 {
        return frame;
    }
    frame[l4 + at] = 0;
    frame[l4 + at + 1] = 0;
    let len = end - l4;
    if ethertype == ETH_IPV4 {
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    }
    pseudo.extend_from_slice(&frame[l4..end]);
    let c = checksum(&pseudo);
    frame[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
    frame
}

/// An ICMPv6 message with its checksum filled in (over the IPv6 pseudo-header of `src` →
/// `dst`): a receiving host drops neighbor discovery with a wrong one.
pub fn icmp6_checksummed(src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
    if msg.len() < 4 {
        return msg;
    }
    msg[2] = 0;
    msg[3] = 0;
    let mut pseudo = Vec::with_capacity(40 + msg.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&msg);
    let c = checksum(&pseudo);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    msg
}

/// An ICMP (v4) message with its checksum filled in.
pub fn icmp4_checksummed(mut msg: Vec<u8>) -> Vec<u8> {
    if msg.len() < 4 {
        return msg;
    }
    msg[2] = 0;
    msg[3] = 0;
    let c = checksum(&msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    msg
}

/// IPv4 header fields a test may want to bend.
#[derive(Clone, Debug)]
pub struct Ipv4Opts {
    pub ihl_words: u8,
    pub options: Vec<u8>,
    pub id: u16,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub frag_offset: u16,
    /// Override of the total-length field.
    pub total_len: Option<u16>,
    pub ttl: u8,
}

impl Default for Ipv4Opts {
    fn default() -> Self {
        Ipv4Opts {
            ihl_words: 5,
            options: Vec::new(),
            id: 0x1234,
            more_fragments: false,
            frag_offset: 0,
            total_len: None,
            ttl: 64,
        }
    }
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8], o: &Ipv4Opts) -> Vec<u8> {
    let hlen = 20 + o.options.len();
    let total = o.total_len.unwrap_or((hlen + payload.len()) as u16);
    let mut h = Vec::with_capacity(hlen + payload.len());
    h.push(0x40 | (o.ihl_words & 0x0f));
    h.push(0);
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&o.id.to_be_bytes());
    let frag = (u16::from(o.more_fragments) << 13) | (o.frag_offset & 0x1fff);
    h.extend_from_slice(&frag.to_be_bytes());
    h.push(o.ttl);
    h.push(proto);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&o.options);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 extension header: (type, body); the body is padded to the header's unit.
#[derive(Clone, Debug)]
pub enum Ext {
    HopByHop,
    DestOpts,
    /// A routing header of type 4 (segment routing) with no segments left.
    Routing,
    /// A routing header of the given type with no segments left.
    RoutingType(u8),
    /// An authentication header (12 bytes: no ICV).
    Auth,
    /// Fragment header: offset in 8-byte units, more-fragments flag, identification.
    Fragment {
        offset: u16,
        more: bool,
        id: u32,
    },
}

impl Ext {
    fn number(&self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing | Ext::RoutingType(_) => 43,
            Ext::Auth => 51,
            Ext::Fragment { .. } => 44,
            Ext::DestOpts => 60,
        }
    }
}

pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, exts: &[Ext], proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv6_hl(64, src, dst, exts, proto, payload)
}

/// [`ipv6`] with hop limit `hop_limit` (NDP's 255, MLD's 1).
pub fn ipv6_hl(
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    exts: &[Ext],
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, ext) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(proto, Ext::number);
        match ext {
            Ext::HopByHop | Ext::DestOpts => {
                // 8 bytes: next, len 0, PadN option of 4 bytes + Pad1 ×2.
                chain.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            Ext::Routing => {
                // Segment routing (type 4), segments left 0.
                chain.extend_from_slice(&[next, 0, 4, 0, 0, 0, 0, 0]);
            }
            Ext::RoutingType(kind) => {
                chain.extend_from_slice(&[next, 0, *kind, 0, 0, 0, 0, 0]);
            }
            Ext::Auth => {
                // Payload length 1: (1 + 2) * 4 = 12 bytes; SPI and sequence number.
                chain.extend_from_slice(&[next, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
            }
            Ext::Fragment { offset, more, id } => {
                chain.push(next);
                chain.push(0);
                let word = (offset << 3) | u16::from(*more);
                chain.extend_from_slice(&word.to_be_bytes());
                chain.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
    let first = exts.first().map_or(proto, Ext::number);
    let plen = (chain.len() + payload.len()) as u16;
    let mut h = Vec::with_capacity(40 + plen as usize);
    h.extend_from_slice(&[0x60, 0, 0, 0]);
    h.extend_from_slice(&plen.to_be_bytes());
    h.push(first);
    h.push(hop_limit);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&chain);
    h.extend_from_slice(payload);
    h
}

/// Sequence number of every segment the builders make (unless given).
pub const TCP_SEQ: u32 = 1;
/// Acknowledgment number of every segment the builders make (unless given): `TCP_SEQ + 1`,
/// so a handshake built from them (SYN, SYN-ACK, ACK) confirms its flow in the datapath,
/// which checks that the initiator's ACK acknowledges the responder's ISN.
pub const TCP_ACK_NUM: u32 = TCP_SEQ + 1;

pub fn tcp(sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    tcp_with_offset(sport, dport, flags, 5, data)
}

pub fn tcp_with_offset(
    sport: u16,
    dport: u16,
    flags: u8,
    offset_words: u8,
    data: &[u8],
) -> Vec<u8> {
    tcp_segment(
        sport,
        dport,
        flags,
        (TCP_SEQ, TCP_ACK_NUM),
        offset_words,
        data,
    )
}

/// A TCP segment with the given (sequence, acknowledgment) numbers.
pub fn tcp_seq_ack(sport: u16, dport: u16, flags: u8, seq_ack: (u32, u32), data: &[u8]) -> Vec<u8> {
    tcp_segment(sport, dport, flags, seq_ack, 5, data)
}

fn tcp_segment(
    sport: u16,
    dport: u16,
    flags: u8,
    (seq, ack): (u32, u32),
    offset_words: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + data.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(offset_words << 4);
    t.push(flags);
    t.extend_from_slice(&0xffffu16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(data);
    t
}

pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + data.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

/// ICMP or ICMPv6 message: type, code, and for echo the identifier and sequence.
pub fn icmp(kind: u8, code: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"lazaret!");
    m
}

/// ICMPv6 neighbor solicitation / advertisement carrying a target address.
pub fn icmpv6_nd(kind: u8, target: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m
}

/// ARP for Ethernet/IPv4: op 1 request, 2 reply.
pub fn arp(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes());
    a.extend_from_slice(&ETH_IPV4.to_be_bytes());
    a.push(6);
    a.push(4);
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// Shorthand: an untagged IPv4 TCP frame.
pub fn tcp4(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let l4 = tcp(sport, dport, flags, &[]);
    ethernet(
        dst_mac,
        src_mac,
        &[],
        ETH_IPV4,
        &ipv4(src, dst, 6, &l4, &Ipv4Opts::default()),
    )
}

/// Shorthand: an untagged IPv6 UDP frame from `(src, sport)` to `(dst, dport)` carrying
/// `data`, sent from MAC `src_mac` to `dst_mac`.
pub fn udp6(
    (src_mac, dst_mac): (Mac, Mac),
    (src, sport): (Ipv6Addr, u16),
    (dst, dport): (Ipv6Addr, u16),
    data: &[u8],
) -> Vec<u8> {
    let ip = ipv6(src, dst, &[], 17, &udp(sport, dport, data));
    ethernet(dst_mac, src_mac, &[], ETH_IPV6, &ip)
}

/// Shorthand: an untagged IPv4 UDP frame.
pub fn udp4(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let l4 = udp(sport, dport, b"payload");
    ethernet(
        dst_mac,
        src_mac,
        &[],
        ETH_IPV4,
        &ipv4(src, dst, 17, &l4, &Ipv4Opts::default()),
    )
}
