//! Helpers for the nftables dataplane tests: compile a policy for a namespace's interfaces,
//! render and apply it there, and probe flows (TCP connects and UDP echoes from a chosen
//! source address). Everything runs inside the test's own namespaces; `nft` is only ever
//! run through `ip netns exec`.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use lazaret::{
    dataplane::nft::{self, Family, Nft, RenderOptions, Rendered},
    policy::{self, DeviceStates, MapContents, Ranges, SourceFile},
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

/// The ifindex of `name` inside `ns`.
pub fn ifindex(ns: &Netns, name: &str) -> Result<u32> {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{name}/ifindex")])?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("ifindex of {name}"))
}

/// A compiled policy as the nftables renderer takes it: the map contents in slot 0 (its
/// devices; also what the XDP program and the reference classifier take) and its rules as
/// ranges.
pub struct Contents {
    pub m: MapContents,
    pub rules: Arc<Ranges>,
}

impl std::ops::Deref for Contents {
    type Target = MapContents;
    fn deref(&self) -> &MapContents {
        &self.m
    }
}

/// Compiles policy text for the gateway's interfaces.
pub fn contents(text: &str, gw: &Netns, ifaces: &[&str]) -> Result<Contents> {
    let p = policy::parse_sources(vec![SourceFile::new("lab.toml".into(), text.into())])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = policy::compile(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut ix = BTreeMap::new();
    for i in ifaces {
        ix.insert(i.to_string(), ifindex(gw, i)?);
    }
    Ok(Contents {
        m: c.map_contents(0, 1, &ix)?,
        rules: c.ranges().clone(),
    })
}

/// Renders `m` for the gateway namespace (interface names by ifindex from `m`).
pub fn render(
    c: &Contents,
    states: &DeviceStates,
    gw: &Netns,
    generation: u32,
) -> Result<Rendered> {
    let mut ifnames = BTreeMap::new();
    for (ix, _) in &c.m.ifaces {
        let out = gw.exec(&["ip", "-o", "link", "show"])?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut parts = line.split(": ");
            let (Some(n), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            if n.trim().parse::<u32>().ok() == Some(*ix) {
                let name = name.split('@').next().unwrap_or(name);
                ifnames.insert(*ix, name.to_string());
            }
        }
    }
    Ok(nft::render(
        &c.m,
        &c.rules,
        states,
        &RenderOptions {
            family: Family::Inet,
            table: "lazaret".into(),
            generation,
            ifnames,
            stacked: Default::default(),
            log_group: None,
        },
    )?)
}

/// `nft` inside the gateway namespace.
pub fn nft_in(gw: &Netns) -> Nft {
    Nft::in_netns(&gw.name)
}

/// `nft list ruleset` (text) inside `ns`.
pub fn list_text(ns: &Netns) -> Result<String> {
    let out = ns.exec(&["nft", "list", "ruleset"])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// TCP listeners (accept, echo) on `[::]:port` (both families) for each port, in `ns`, for
/// at most `life`.
pub fn tcp_echo(ns: &Netns, ports: &[u16], life: Duration) -> Result<()> {
    for &port in ports {
        let l = ns.run(move || TcpListener::bind(("::", port)))??;
        l.set_nonblocking(true)?;
        thread::spawn(move || {
            let deadline = Instant::now() + life;
            while Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        thread::spawn(move || {
                            let mut b = [0u8; 64];
                            while let Ok(n) = s.read(&mut b) {
                                if n == 0 || s.write_all(&b[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
    Ok(())
}

/// UDP echo servers on `addr:port` for each address and port, in `ns`, for at most `life`.
/// Bound to each address, not 0.0.0.0: a wildcard socket would answer from the
/// interface's primary address, which is another flow for conntrack and the classifier.
pub fn udp_echo(ns: &Netns, addrs: &[IpAddr], ports: &[u16], life: Duration) -> Result<()> {
    for (&addr, &port) in addrs.iter().flat_map(|a| ports.iter().map(move |p| (a, p))) {
        let s = ns.run(move || UdpSocket::bind((addr, port)))??;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        thread::spawn(move || {
            let deadline = Instant::now() + life;
            let mut b = [0u8; 64];
            while Instant::now() < deadline {
                if let Ok((n, from)) = s.recv_from(&mut b) {
                    let _ = s.send_to(&b[..n], from);
                }
            }
        });
    }
    Ok(())
}

/// Whether a TCP connection from `src` to `dst:port` opens within `timeout` (a refused
/// connection counts as open: the SYN went through and the reset came back).
pub fn tcp_probe(
    ns: &Netns,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<bool> {
    ns.run(move || -> Result<bool> {
        let sock = Socket::new(
            Domain::for_address(SocketAddr::new(src, 0)),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        match sock.connect_timeout(&SockAddr::from(SocketAddr::new(dst, port)), timeout) {
            Ok(()) => {
                let mut s: std::net::TcpStream = sock.into();
                let _ = s.set_read_timeout(Some(timeout));
                let mut back = [0u8; 4];
                Ok(s.write_all(b"ping").is_ok() && s.read_exact(&mut back).is_ok())
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
            Err(_) => Ok(false),
        }
    })?
}

/// Whether a UDP datagram from `src` to `dst:port` is echoed back within `timeout`.
pub fn udp_probe(
    ns: &Netns,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<bool> {
    ns.run(move || -> Result<bool> {
        let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
        s.set_read_timeout(Some(timeout))?;
        s.send_to(b"ping", SocketAddr::new(dst, port))?;
        let mut b = [0u8; 16];
        Ok(matches!(s.recv_from(&mut b), Ok((4, _))))
    })?
}
