//! Events of the nftables dataplane: the table's `log group N` statements deliver packets
//! over netlink (NFLOG); this reads them and turns them into the XDP program's
//! [`lazaret_abi::Event`]s, so deviation detection and unknown-device discovery work the
//! same on both dataplanes. [`parse`] is pure (tested on crafted messages); [`NflogSocket`]
//! is the only I/O.

use lazaret_abi::{Event, Reason, EVENT_VERSION};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// The nflog group lazaret's table logs to.
pub const GROUP: u16 = 7434;

// The kernel's numbers (linux/netfilter/nfnetlink_log.h), from libc rather than typed
// here: hand-typed, the hardware address was read from attribute 6 (the bridge's physical
// input port) instead of 8, so every event had MAC 00:00:00:00:00:00, and the queue
// threshold and timeout were sent as the timeout and the buffer size.
const NFNL_SUBSYS_ULOG: u16 = libc::NFNL_SUBSYS_ULOG as u16;
const NFULNL_MSG_PACKET: u16 = libc::NFULNL_MSG_PACKET as u16;
const NFULNL_MSG_CONFIG: u16 = libc::NFULNL_MSG_CONFIG as u16;
const NFULA_CFG_CMD: u16 = libc::NFULA_CFG_CMD as u16;
const NFULA_CFG_MODE: u16 = libc::NFULA_CFG_MODE as u16;
const NFULA_CFG_TIMEOUT: u16 = libc::NFULA_CFG_TIMEOUT as u16;
const NFULA_CFG_QTHRESH: u16 = libc::NFULA_CFG_QTHRESH as u16;
const NFULNL_CFG_CMD_BIND: u8 = libc::NFULNL_CFG_CMD_BIND as u8;
const NFULNL_COPY_PACKET: u8 = libc::NFULNL_COPY_PACKET as u8;
const NFULA_IFINDEX_INDEV: u16 = libc::NFULA_IFINDEX_INDEV as u16;
const NFULA_HWADDR: u16 = libc::NFULA_HWADDR as u16;
const NFULA_PAYLOAD: u16 = libc::NFULA_PAYLOAD as u16;
const NFULA_PREFIX: u16 = libc::NFULA_PREFIX as u16;
/// Bytes of each packet copied to us: headers are enough.
pub const COPY_RANGE: u32 = 128;

/// One logged packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logged {
    pub prefix: String,
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    /// The network-layer packet, from the IP header on (truncated to [`COPY_RANGE`]).
    pub payload: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink attributes (`len`, `type`, value) of `buf`.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((ty, value))
    })
}

/// The NFLOG packet messages in one netlink datagram.
pub fn parse(datagram: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 16 || len > rest.len() {
            break;
        }
        // nlmsghdr (16) + nfgenmsg (4), then attributes.
        if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET && len >= 20 {
            let mut l = Logged::default();
            for (at, v) in attrs(&rest[20..len]) {
                match at {
                    NFULA_PREFIX => {
                        let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                        l.prefix = String::from_utf8_lossy(&v[..end]).into_owned();
                    }
                    NFULA_IFINDEX_INDEV if v.len() >= 4 => {
                        l.ifindex = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                    }
                    // struct nfulnl_msg_packet_hw { __be16 hw_addrlen; u16 pad; u8 hw_addr[8]; }
                    NFULA_HWADDR if v.len() >= 10 => l.src_mac.copy_from_slice(&v[4..10]),
                    NFULA_PAYLOAD => l.payload = v.to_vec(),
                    _ => {}
                }
            }
            out.push(l);
        }
        rest = &rest[align4(len).min(rest.len())..];
    }
    out
}

/// The reason a log prefix names (`lazaret deny_no_rule `, a learn record's
/// `lazaret learn:allow_rule `, a responder's verdict's `lazaret resp:deny_no_rule `, a
/// re-judged flow's refusal's `lazaret rejudge:deny_no_rule `).
pub fn reason_of(prefix: &str) -> Option<Reason> {
    let name = prefix.strip_prefix(super::render::LOG_PREFIX)?.trim();
    let name = ["learn:", "resp:", "rejudge:"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    (0..=u8::MAX)
        .filter_map(Reason::from_u8)
        .find(|r| r.name() == name)
}

/// Whether the prefix is a learn record of an allowed flow ([`super::render::LEARN_PREFIX`]):
/// a learn event whatever its reason, as the XDP program reports a learn-mode device's
/// new flows.
pub fn is_learn_record(prefix: &str) -> bool {
    prefix.starts_with(super::render::LEARN_PREFIX)
}

/// Whether the prefix is a verdict of a responder's policy
/// ([`super::render::RESPONDER_PREFIX`]).
pub fn is_responder_record(prefix: &str) -> bool {
    prefix.starts_with(super::render::RESPONDER_PREFIX)
}

/// Whether the prefix is the refusal of a flow judged again
/// ([`super::render::REJUDGED_PREFIX`]).
pub fn is_rejudged_record(prefix: &str) -> bool {
    prefix.starts_with(super::render::REJUDGED_PREFIX)
}

/// Fills the packet fields of an [`Event`] from a logged packet (IPv4 or IPv6 header and
/// the ports of TCP/UDP). The caller sets `device`, `side`, `generation`.
pub fn event(l: &Logged) -> Option<Event> {
    let reason = reason_of(&l.prefix)?;
    let kind = if is_learn_record(&l.prefix) {
        lazaret_abi::EVENT_LEARN
    } else {
        reason.event_kind()
    };
    let mut ev = Event {
        version: EVENT_VERSION,
        kind,
        reason: reason as u8,
        side: 0,
        family: 0,
        proto: 0,
        dir: lazaret_abi::DIR_DEVICE_INIT,
        vlan: 0,
        src_port: 0,
        dst_port: 0,
        flags: if is_rejudged_record(&l.prefix) {
            lazaret_abi::EVENT_F_REJUDGED
        } else {
            0
        },
        _pad: 0,
        ifindex: l.ifindex,
        rule: lazaret_abi::NO_RULE,
        ts_ns: 0,
        device: 0,
        generation: 0,
        src: [0; 16],
        dst: [0; 16],
        src_mac: l.src_mac,
        dst_mac: [0; 6],
        _pad2: [0; 4],
    };
    let p = &l.payload;
    let l4 = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            ev.family = lazaret_abi::FAMILY_V4;
            ev.proto = p[9];
            ev.src[..4].copy_from_slice(&p[12..16]);
            ev.dst[..4].copy_from_slice(&p[16..20]);
            usize::from(p[0] & 0x0f) * 4
        }
        Some(6) if p.len() >= 40 => {
            ev.family = lazaret_abi::FAMILY_V6;
            ev.proto = p[6];
            ev.src.copy_from_slice(&p[8..24]);
            ev.dst.copy_from_slice(&p[24..40]);
            40
        }
        _ => return Some(ev),
    };
    // The protocols whose ports key a flow, as the XDP program's events carry them (and the
    // deviation detector tells flows apart by them).
    let keyed = [
        lazaret_abi::PROTO_TCP,
        lazaret_abi::PROTO_UDP,
        lazaret_abi::PROTO_SCTP,
        lazaret_abi::PROTO_UDPLITE,
        lazaret_abi::PROTO_DCCP,
    ];
    if keyed.contains(&ev.proto) && p.len() >= l4 + 4 {
        ev.src_port = u16::from_be_bytes([p[l4], p[l4 + 1]]);
        ev.dst_port = u16::from_be_bytes([p[l4 + 2], p[l4 + 3]]);
    }
    Some(ev)
}

/// A netlink socket bound to an nflog group.
pub struct NflogSocket {
    fd: OwnedFd,
}

impl NflogSocket {
    /// Binds `group` in the caller's network namespace, copying [`COPY_RANGE`] bytes of
    /// each packet; `timeout` bounds each [`Self::recv`].
    pub fn bind(group: u16, timeout: Duration) -> io::Result<Self> {
        /// The socket's receive buffer, in bytes.
        const RCVBUF: usize = 4 << 20;
        use nix::sys::{
            socket::{
                bind, setsockopt, socket, sockopt::ReceiveTimeout, AddressFamily, NetlinkAddr,
                SockFlag, SockProtocol, SockType,
            },
            time::TimeVal,
        };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // Through nix's constructor: libc's time_t and suseconds_t aliases are deprecated on
        // musl (the static build).
        let tv = <TimeVal as nix::sys::time::TimeValLike>::microseconds(
            i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX),
        );
        setsockopt(&fd, ReceiveTimeout, &tv)?;
        // Room for the table's event budgets' bursts (the kernel's default buffer holds a
        // few hundred packets): past the /proc/sys/net/core/rmem_max cap with
        // CAP_NET_ADMIN, which the daemon has for nftables; best effort, as an overflow
        // is counted and survived (see `NftDataplane::spawn_reader`).
        if setsockopt(&fd, nix::sys::socket::sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = setsockopt(&fd, nix::sys::socket::sockopt::RcvBuf, &RCVBUF);
        }
        let s = NflogSocket { fd };
        s.config(group, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND, 0, 0, 0])?;
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0, 0, 0]);
        s.config(group, NFULA_CFG_MODE, &mode)?;
        // Deliver every packet at once. The kernel's defaults (a batch of 100 or a 1 s
        // timer, whichever first) held a deviation's events back long enough to delay its
        // quarantine by up to a second; the table's per-source rate limit bounds the volume.
        s.config(group, NFULA_CFG_QTHRESH, &1u32.to_be_bytes())?;
        s.config(group, NFULA_CFG_TIMEOUT, &0u32.to_be_bytes())?;
        Ok(s)
    }

    /// Sends one NFULNL_MSG_CONFIG with one attribute and waits for its acknowledgement.
    fn config(&self, group: u16, attr: u16, value: &[u8]) -> io::Result<()> {
        let attr_len = 4 + value.len();
        let len = 16 + 4 + align4(attr_len);
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes()); // seq
        m.extend_from_slice(&0u32.to_ne_bytes()); // pid
        m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]); // nfgenmsg family, version
        m.extend_from_slice(&group.to_be_bytes()); // res_id
        m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        m.extend_from_slice(&attr.to_ne_bytes());
        m.extend_from_slice(value);
        m.resize(len, 0);
        use nix::sys::socket::{recv, send, MsgFlags};
        send(self.fd.as_raw_fd(), &m, MsgFlags::empty()).map_err(io::Error::from)?;
        let mut buf = [0u8; 256];
        let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(io::Error::from)?;
        // NLMSG_ERROR (2) with error 0 is the acknowledgement.
        if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
        }
        Ok(())
    }

    /// The packets of one datagram; empty on timeout.
    pub fn recv(&self) -> io::Result<Vec<Logged>> {
        use nix::sys::socket::{recv, MsgFlags};
        let mut buf = vec![0u8; 65536];
        match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => Ok(parse(&buf[..n])),
            Err(e) => {
                let e = io::Error::from(e);
                match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => Ok(Vec::new()),
                    _ => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let len = 20 + body.len();
        let mut m = (len as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[2, 0, 0x1d, 0x0a]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn a_logged_udp_packet_becomes_a_deny_event() {
        let mut ip = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 20, 0, 11, 10, 10, 0, 20,
        ];
        ip.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb, 0, 8, 0, 0]);
        let mut hw = vec![0, 6, 0, 0, 2, 0, 0, 0, 0, 7, 0, 0];
        hw.truncate(12);
        let dgram = [
            message(&[
                attr(NFULA_PREFIX, b"lazaret deny_no_rule \0"),
                attr(NFULA_IFINDEX_INDEV, &3u32.to_be_bytes()),
                attr(NFULA_HWADDR, &hw),
                attr(NFULA_PAYLOAD, &ip),
            ]),
            message(&[attr(NFULA_PREFIX, b"lazaret deny_unknown \0")]),
        ]
        .concat();
        let logged = parse(&dgram);
        assert_eq!(logged.len(), 2);
        assert_eq!(logged[0].ifindex, 3);
        assert_eq!(logged[0].src_mac, [2, 0, 0, 0, 0, 7]);
        let ev = event(&logged[0]).expect("an event");
        assert_eq!(ev.kind, lazaret_abi::EVENT_DENY);
        assert_eq!(ev.reason, Reason::DenyNoRule as u8);
        assert_eq!((ev.family, ev.proto), (lazaret_abi::FAMILY_V4, 17));
        assert_eq!(&ev.src[..4], &[10, 20, 0, 11]);
        assert_eq!(&ev.dst[..4], &[10, 10, 0, 20]);
        assert_eq!((ev.src_port, ev.dst_port), (40000, 443));
        assert_eq!(
            event(&logged[1]).map(|e| e.kind),
            Some(lazaret_abi::EVENT_UNKNOWN)
        );
    }

    /// SCTP's, UDP-Lite's and DCCP's ports key their flows on XDP, whose events carry them; the
    /// deviation detector tells one refused flow from another by them.
    #[test]
    fn sctp_udp_lite_and_dccp_events_carry_their_ports() {
        for proto in [
            lazaret_abi::PROTO_SCTP,
            lazaret_abi::PROTO_UDPLITE,
            lazaret_abi::PROTO_DCCP,
        ] {
            let mut ip = vec![
                0x45, 0, 0, 32, 0, 0, 0, 0, 64, proto, 0, 0, 10, 20, 0, 11, 10, 10, 0, 20,
            ];
            ip.extend_from_slice(&[0x13, 0x88, 0x0b, 0x59, 0, 0, 0, 0, 0, 0, 0, 0]);
            let dgram = message(&[
                attr(NFULA_PREFIX, b"lazaret deny_no_rule \0"),
                attr(NFULA_PAYLOAD, &ip),
            ]);
            let logged = parse(&dgram);
            let ev = event(&logged[0]).expect("an event");
            assert_eq!((ev.proto, ev.src_port, ev.dst_port), (proto, 5000, 2905));
        }
    }

    #[test]
    fn a_learn_record_of_an_allowed_flow_is_a_learn_event() {
        let learned = |prefix: &str| {
            event(&Logged {
                prefix: prefix.into(),
                ..Logged::default()
            })
            .map(|e| (e.kind, e.reason))
        };
        assert_eq!(
            learned("lazaret learn:allow_rule "),
            Some((lazaret_abi::EVENT_LEARN, Reason::AllowRule as u8))
        );
        // Without a rule: the `learn` reason, a learn event too.
        assert_eq!(
            learned("lazaret learn "),
            Some((lazaret_abi::EVENT_LEARN, Reason::Learn as u8))
        );
        assert_eq!(
            learned("lazaret audit "),
            Some((lazaret_abi::EVENT_AUDIT, Reason::Audit as u8))
        );
        assert_eq!(learned("lazaret learn:nonsense "), None);
    }

    #[test]
    fn foreign_prefixes_and_truncated_messages_are_ignored() {
        assert_eq!(reason_of("other 1"), None);
        assert!(event(&Logged {
            prefix: "somebody else ".into(),
            ..Logged::default()
        })
        .is_none());
        let m = message(&[attr(NFULA_PREFIX, b"lazaret deny_spoof \0")]);
        assert!(parse(&m[..m.len() - 3]).is_empty());
        assert!(parse(&[1, 2, 3]).is_empty());
    }

    /// A responder's verdict keeps its reason and kind, and is told apart by its prefix
    /// (the caller names the responder).
    #[test]
    fn a_responders_verdict_has_its_reason_and_is_recognised() {
        let prefix = format!("{}deny_no_rule ", super::super::render::RESPONDER_PREFIX);
        assert_eq!(reason_of(&prefix), Some(Reason::DenyNoRule));
        assert!(is_responder_record(&prefix));
        assert!(!is_responder_record("lazaret deny_no_rule "));
        let ev = event(&Logged {
            prefix,
            ..Logged::default()
        })
        .expect("an event");
        assert_eq!(
            (ev.kind, ev.reason),
            (lazaret_abi::EVENT_DENY, Reason::DenyNoRule as u8)
        );
        assert_eq!(reason_of("lazaret resp:nonsense "), None);
        let again = event(&Logged {
            prefix: format!("{}deny_no_rule ", super::super::render::REJUDGED_PREFIX),
            ..Logged::default()
        })
        .expect("an event");
        assert_eq!(
            (again.reason, again.flags),
            (Reason::DenyNoRule as u8, lazaret_abi::EVENT_F_REJUDGED)
        );
    }
}
