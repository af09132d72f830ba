//! Resolving an address of the devices' networks that upstream was refused at because no
//! device owns it yet (`deny_unknown` from upstream: the datapath's `to_unowned`).
//!
//! A device the inventory knows by its MAC alone owns its DHCP or SLAAC address only once
//! it has sent from it (or answered ARP or neighbor discovery for it). One that only
//! listens would stay unreachable from upstream after the gateway boots or fails over:
//! the refused packet is dropped at ingress, before routing, so the gateway never resolves
//! the address, and the device never answers. So the daemon resolves it: sending one
//! packet there makes the kernel send an ARP request or a neighbor solicitation for it,
//! and the device's answer makes the address its own (the dataplanes' claim by first use);
//! the sender's retransmission then passes as its policy allows. The packet is a TCP reset
//! with a checksum of zero, which every stack discards without a word: a datagram would
//! draw an ICMP error, which the dataplane refuses (no flow) and charges to the device, a
//! step towards quarantining it. (Adding an incomplete neighbour entry sends nothing.) At most one probe per address every [`EVERY`], and [`MAX_TRACKED`] addresses
//! remembered: a scan of the devices' networks costs a bounded trickle of resolutions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The least time between two probes of one address.
pub const EVERY: Duration = Duration::from_secs(5);
/// Addresses remembered; past this, those probed longer than [`EVERY`] ago are forgotten,
/// and while none is, no new address is probed.
pub const MAX_TRACKED: usize = 4096;

/// Probes sent, by address.
#[derive(Debug, Default)]
pub struct Prober {
    last: HashMap<IpAddr, Instant>,
}

impl Prober {
    /// Whether `addr` may be probed at `now` (and records that it is).
    pub fn due(&mut self, addr: IpAddr, now: Instant) -> bool {
        if let Some(t) = self.last.get(&addr) {
            if now.duration_since(*t) < EVERY {
                return false;
            }
        }
        if self.last.len() >= MAX_TRACKED && !self.last.contains_key(&addr) {
            self.last.retain(|_, t| now.duration_since(*t) < EVERY);
            if self.last.len() >= MAX_TRACKED {
                return false;
            }
        }
        self.last.insert(addr, now);
        true
    }

    /// Resolves `addr` when it is due (see the module documentation). A failure to send
    /// is logged, not returned: the next refused packet tries again.
    pub fn probe(&mut self, addr: IpAddr) {
        if !self.due(addr, Instant::now()) {
            return;
        }
        match send_reset(addr) {
            Ok(_) => tracing::debug!(%addr, "resolving an address no device owns yet"),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "could not resolve an address no device owns yet");
            }
        }
    }
}

/// Sends `addr` a TCP reset from port 9 to port 9 with a zero checksum (the kernel builds
/// the IP header; a raw socket of either family computes no TCP checksum).
fn send_reset(addr: IpAddr) -> nix::Result<usize> {
    use nix::sys::socket::{
        sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
        SockaddrIn6,
    };
    use std::os::fd::AsRawFd;
    // Ports 9 (discard), sequence and acknowledgment 0, data offset 5 words, RST, window 0,
    // checksum 0, urgent pointer 0.
    let mut segment = [0u8; 20];
    segment[1] = 9;
    segment[3] = 9;
    segment[12] = 5 << 4;
    segment[13] = 0x04;
    let family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let sock = socket(
        family,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Tcp,
    )?;
    let (fd, flags) = (sock.as_raw_fd(), MsgFlags::MSG_DONTWAIT);
    match addr {
        IpAddr::V4(a) => sendto(
            fd,
            &segment,
            &SockaddrIn::from(std::net::SocketAddrV4::new(a, 0)),
            flags,
        ),
        IpAddr::V6(a) => {
            let to = SockaddrIn6::from(std::net::SocketAddrV6::new(a, 0, 0, 0));
            sendto(fd, &segment, &to, flags)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_probed_at_most_once_every_period_and_the_memory_is_bounded() {
        let mut p = Prober::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.20.0.50".parse().expect("addr");
        assert!(p.due(a, t0));
        assert!(!p.due(a, t0 + EVERY / 2));
        assert!(p.due(a, t0 + EVERY));
        let mut p = Prober::default();
        for i in 0..MAX_TRACKED as u32 {
            assert!(p.due(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), t0));
        }
        let more: IpAddr = "10.99.0.1".parse().expect("addr");
        assert!(!p.due(more, t0), "full, none forgettable yet");
        assert!(p.due(more, t0 + EVERY), "the old ones forgotten");
        assert!(p.last.len() <= MAX_TRACKED);
    }
}
