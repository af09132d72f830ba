//! The kernel's truth about enforcement, asked directly: which XDP program each interface
//! runs (`RTM_GETLINK`, the `IFLA_XDP` attribute) and the nftables ruleset's generation
//! (`NFT_MSG_GETGEN`), both over netlink in the daemon's network namespace.
//!
//! Asked, not subscribed to: detaching a bpf link (`BPF_LINK_DETACH` through bpf(2), what
//! `lazaret detach` or any root process with the pin can do) changes the interface's
//! program without a netlink notification, so a link-event subscription would miss exactly
//! the tampering that matters. Both questions are one small netlink round trip; the daemon
//! asks every 250 ms.

use std::io;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage, LinkXdp},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols, Socket, SocketAddr};

/// Replies larger than this are refused (a link message is a few KiB).
const MAX_REPLY: usize = 1 << 20;

fn socket(protocol: isize) -> io::Result<Socket> {
    let mut s = Socket::new(protocol)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    Ok(s)
}

/// The id of the XDP program attached to interface `ifindex` (any mode), `None` without
/// one; an error if the interface does not exist.
pub fn xdp_program(ifindex: u32) -> io::Result<Option<u32>> {
    let s = socket(protocols::NETLINK_ROUTE)?;
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(link)),
    );
    req.header.flags = NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    s.send(&buf, 0)?;
    let (reply, _) = s.recv_from_full()?;
    if reply.len() > MAX_REPLY {
        return Err(io::Error::other("oversized netlink reply"));
    }
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| io::Error::other(format!("undecodable link message: {e}")))?;
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
            Ok(m.attributes.iter().find_map(|a| match a {
                LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
                    LinkXdp::ProgId(id) if *id != 0 => Some(*id),
                    _ => None,
                }),
                _ => None,
            }))
        }
        NetlinkPayload::Error(e) => Err(e.to_io()),
        other => Err(io::Error::other(format!(
            "unexpected reply to RTM_GETLINK: {other:?}"
        ))),
    }
}

// nfnetlink: subsystem nftables (10), message NFT_MSG_GETGEN (16) / NFT_MSG_NEWGEN (15),
// attribute NFTA_GEN_ID (1, big-endian u32). Not in any maintained crate's API.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLMSG_ERROR: u16 = 2;

/// The nftables ruleset's generation: it changes with every committed transaction, by
/// anyone, so an unchanged generation means lazaret's tables are as it left them.
pub fn nft_generation() -> io::Result<u32> {
    let s = socket(protocols::NETLINK_NETFILTER)?;
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + NFGENMSG_LEN);
    req.extend_from_slice(&((NLMSG_HDRLEN + NFGENMSG_LEN) as u32).to_ne_bytes());
    req.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
                                                // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, resource id 0.
    req.extend_from_slice(&[0, 0, 0, 0]);
    s.send(&req, 0)?;
    let (reply, _) = s.recv_from_full()?;
    parse_generation(&reply)
}

/// Reads `NFTA_GEN_ID` out of one `NFT_MSG_NEWGEN` reply, every length checked.
fn parse_generation(reply: &[u8]) -> io::Result<u32> {
    let bad = |what: &str| io::Error::other(format!("NFT_MSG_GETGEN: {what}"));
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|v| u16::from_ne_bytes([v[0], v[1]]));
    let len = reply
        .get(0..4)
        .map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]) as usize)
        .ok_or_else(|| bad("short reply"))?;
    let msg = reply.get(..len).ok_or_else(|| bad("truncated reply"))?;
    let kind = u16_at(msg, 4).ok_or_else(|| bad("short header"))?;
    if kind == NLMSG_ERROR {
        let errno = msg
            .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
            .map(|v| i32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
            .unwrap_or(0);
        return Err(io::Error::from_raw_os_error(-errno));
    }
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
        return Err(bad(&format!("unexpected message type {kind:#x}")));
    }
    let mut at = NLMSG_HDRLEN + NFGENMSG_LEN;
    while at + 4 <= msg.len() {
        let nla_len = usize::from(u16_at(msg, at).ok_or_else(|| bad("short attribute"))?);
        let nla_type = u16_at(msg, at + 2).ok_or_else(|| bad("short attribute"))? & 0x3fff;
        if nla_len < 4 {
            return Err(bad("malformed attribute"));
        }
        if nla_type == NFTA_GEN_ID {
            return msg
                .get(at + 4..at + 8)
                .filter(|_| nla_len >= 8)
                .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
                .ok_or_else(|| bad("short NFTA_GEN_ID"));
        }
        at += (nla_len + 3) & !3;
    }
    Err(bad("no NFTA_GEN_ID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newgen(id: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&28u32.to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&NFTA_GEN_ID.to_ne_bytes());
        m.extend_from_slice(&id.to_be_bytes());
        m
    }

    #[test]
    fn reads_the_generation_and_refuses_what_is_not_one() {
        assert_eq!(
            parse_generation(&newgen(0x0102_0304)).expect("parsed"),
            0x0102_0304
        );
        let good = newgen(7);
        for cut in 0..good.len() {
            // Every truncation is an error, never a panic or a wrong id.
            let mut short = good[..cut].to_vec();
            if short.len() >= 4 {
                short[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            assert!(parse_generation(&short).is_err(), "cut at {cut}");
        }
        let mut wrong = good.clone();
        wrong[4..6].copy_from_slice(&0x0a10u16.to_ne_bytes());
        assert!(parse_generation(&wrong).is_err());
    }
}
