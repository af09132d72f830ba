//! The optional syslog output: every event of the feed (denies, spoofing, unknown devices,
//! audit and learn records, quarantines and releases, lost events) as an RFC 5424 message to
//! the hospital's SIEM or log collector, over UDP (RFC 5426, one datagram each) or TCP
//! (RFC 6587 octet counting).
//!
//! It follows the feed like `lazaret events --follow` does, so enforcement never waits for
//! it: a collector too slow to keep up makes the follower lag, and what it skipped is counted
//! (`lazaret_syslog_messages_total{result="dropped"}`); a message the network refuses is
//! counted `failed` (a TCP connection is opened again for the next one). The message is
//! the event's JSON record (docs/events.md), so a SIEM parses one format whichever way the
//! event reached it; the header carries what a collector routes on: the facility, a
//! severity per kind, the host, and the kind as MSGID.

use std::{sync::Arc, time::Duration};

use tokio::{io::AsyncWriteExt, net::TcpStream, sync::broadcast};

use super::events::{Feed, Line};
use crate::metrics::Metrics;

/// Time to connect (TCP) or write one message before it counts as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Where syslog messages go, parsed from `udp://host:port` or `tcp://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Udp(String),
    Tcp(String),
}

/// Checks a syslog address; the message says what to write instead. Pure.
pub fn check_address(address: &str) -> Result<Target, String> {
    let usage = "write udp://host:port or tcp://host:port (514 is syslog's port)";
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| format!("{address:?} is not a syslog address: {usage}"))?;
    let valid_port = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid_port {
        return Err(format!("{address:?} names no host and port: {usage}"));
    }
    match scheme {
        "udp" => Ok(Target::Udp(rest.to_string())),
        "tcp" => Ok(Target::Tcp(rest.to_string())),
        "tls" | "tcp+tls" => Err(format!(
            "{address:?}: syslog over TLS is not supported (lazaret has no TLS client): send \
             to a local relay (rsyslog, syslog-ng) that forwards over TLS, or {usage}"
        )),
        _ => Err(format!("{address:?}: unknown scheme {scheme:?}: {usage}")),
    }
}

/// The facilities a configuration may name, with their codes (RFC 5424 §6.2.1).
pub const FACILITIES: [(&str, u8); 12] = [
    ("daemon", 3),
    ("auth", 4),
    ("authpriv", 10),
    ("security", 13),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// The facility code of `name`; the message lists the names. Pure.
pub fn facility(name: &str) -> Result<u8, String> {
    FACILITIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
            format!("unknown facility {name:?}: use one of {}", names.join(", "))
        })
}

/// The severity of an event kind (RFC 5424 §6.2.1): what a collector alerts on.
fn severity(kind: &str) -> u8 {
    match kind {
        // Events were lost: the record of what happened is incomplete.
        "lost" => 3,
        // A device cut off, forged traffic, a rogue DHCP server or router.
        "quarantine" | "spoof" | "rogue" => 4,
        "deny" | "unknown" | "new_unknown_device" | "release" => 5,
        // Access granted or taken away by the clock: worth a look, not an alert.
        "exception_opened" | "exception_closed" => 5,
        _ => 6,
    }
}

/// One RFC 5424 message for a feed line (the event's JSON record): `<PRI>1 TIMESTAMP HOST
/// lazaret PID KIND - JSON`. Pure.
pub fn format(line: &str, facility: u8, host: &str, pid: u32) -> String {
    let record: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let kind = record["kind"].as_str().unwrap_or("event");
    let when = record["ts"]
        .as_f64()
        .and_then(|ts| chrono::DateTime::from_timestamp_millis((ts * 1000.0) as i64))
        .map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        );
    // RFC 5424 fields are printable US-ASCII without spaces, at most 32 (MSGID) or 255
    // (HOSTNAME) characters; "-" stands for a missing one.
    let field = |s: &str, max: usize| {
        let s: String = s.chars().filter(char::is_ascii_graphic).take(max).collect();
        if s.is_empty() {
            "-".to_string()
        } else {
            s
        }
    };
    format!(
        "<{}>1 {when} {} lazaret {pid} {} - {line}",
        u16::from(facility) * 8 + u16::from(severity(kind)),
        field(host, 255),
        field(kind, 32),
    )
}

/// Follows `feed` and sends every event to `target` until the feed closes.
pub fn spawn(target: Target, facility: u8, feed: &Feed, metrics: Arc<Metrics>) {
    let (_, rx) = feed.subscribe();
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    tokio::spawn(forward(target, facility, host, rx, metrics));
}

async fn forward(
    target: Target,
    facility: u8,
    host: String,
    mut rx: broadcast::Receiver<Line>,
    metrics: Arc<Metrics>,
) {
    let pid = std::process::id();
    let mut sender = Sender::new(target);
    loop {
        let line = match rx.recv().await {
            Ok(line) => line,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(skipped, "syslog collector too slow: events skipped");
                metrics.syslog_messages("dropped", skipped);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let message = format(&line, facility, &host, pid);
        let result = match tokio::time::timeout(SEND_TIMEOUT, sender.send(&message)).await {
            Ok(Ok(())) => "sent",
            Ok(Err(e)) => {
                tracing::warn!(error = %e, target = ?sender.target, "syslog message not sent");
                sender.reset();
                "failed"
            }
            Err(_) => {
                tracing::warn!(target = ?sender.target, "syslog message timed out");
                sender.reset();
                "failed"
            }
        };
        metrics.syslog_messages(result, 1);
    }
}

/// A syslog connection: a UDP socket, or a TCP stream opened on first use and again after a
/// failure.
struct Sender {
    target: Target,
    udp: Option<tokio::net::UdpSocket>,
    tcp: Option<TcpStream>,
}

impl Sender {
    fn new(target: Target) -> Sender {
        Sender {
            target,
            udp: None,
            tcp: None,
        }
    }

    fn reset(&mut self) {
        self.udp = None;
        self.tcp = None;
    }

    async fn send(&mut self, message: &str) -> std::io::Result<()> {
        match &self.target {
            Target::Udp(addr) => {
                if self.udp.is_none() {
                    let peer = tokio::net::lookup_host(addr.as_str())
                        .await?
                        .next()
                        .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))?;
                    let local = if peer.is_ipv4() {
                        "0.0.0.0:0"
                    } else {
                        "[::]:0"
                    };
                    let socket = tokio::net::UdpSocket::bind(local).await?;
                    socket.connect(peer).await?;
                    self.udp = Some(socket);
                }
                if let Some(s) = &self.udp {
                    s.send(message.as_bytes()).await?;
                }
            }
            Target::Tcp(addr) => {
                if self.tcp.is_none() {
                    self.tcp = Some(TcpStream::connect(addr.as_str()).await?);
                }
                if let Some(s) = &mut self.tcp {
                    // RFC 6587 octet counting: "LEN SP MSG", so a message may hold newlines.
                    let framed = format!("{} {message}", message.len());
                    s.write_all(framed.as_bytes()).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;

    const LINE: &str = r#"{"v":1,"ts":1764870407.25,"kind":"quarantine","device":"pump-01"}"#;

    #[test]
    fn addresses_and_facilities_are_checked() {
        assert_eq!(
            check_address("udp://10.0.0.5:514"),
            Ok(Target::Udp("10.0.0.5:514".into()))
        );
        assert_eq!(
            check_address("tcp://[fd00::5]:6514"),
            Ok(Target::Tcp("[fd00::5]:6514".into()))
        );
        for bad in [
            "10.0.0.5:514",
            "udp://10.0.0.5",
            "udp://:514",
            "http://x:1",
            "udp://x:0",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        assert!(check_address("tls://siem:6514")
            .unwrap_err()
            .contains("local relay"));
        assert_eq!(facility("local4"), Ok(20));
        assert!(facility("local9").unwrap_err().contains("local7"));
    }

    #[test]
    fn an_event_is_an_rfc5424_message_carrying_its_json_record() {
        assert_eq!(
            format(LINE, 20, "gw-a1", 4242),
            format!("<164>1 2025-12-04T17:46:47.250Z gw-a1 lazaret 4242 quarantine - {LINE}")
        );
        let deny = r#"{"v":1,"ts":1.0,"kind":"deny"}"#;
        assert!(format(deny, 16, "", 1)
            .starts_with("<133>1 1970-01-01T00:00:01.000Z - lazaret 1 deny - "));
        // A service window opening or closing is a notice (severity 5).
        let window = r#"{"v":1,"ts":1.0,"kind":"exception_closed"}"#;
        assert!(format(window, 16, "gw", 1).starts_with("<133>1 "));
        // A host name with spaces cannot break the header.
        assert!(format(LINE, 20, "gw a1", 1).contains(" gwa1 lazaret "));
    }

    /// The feed's events arrive at a UDP collector and, octet-counted, at a TCP one.
    #[tokio::test]
    async fn the_feed_reaches_udp_and_tcp_collectors() {
        use tokio::io::AsyncReadExt;
        let metrics = Arc::new(Metrics::new("test").expect("metrics"));
        let feed = Feed::default();
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("tcp");
        let udp_at = udp.local_addr().expect("addr");
        let tcp_at = tcp.local_addr().expect("addr");
        spawn(Target::Udp(udp_at.to_string()), 20, &feed, metrics.clone());
        spawn(Target::Tcp(tcp_at.to_string()), 20, &feed, metrics.clone());
        tokio::task::yield_now().await;
        feed.publish(&crate::daemon::events::quarantine_event(
            "pump-01",
            Some(crate::daemon::quarantine::Action::Isolate),
            "root",
            "test",
            1_764_870_407.25,
        ));
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
            .await
            .expect("a datagram in time")
            .expect("recv");
        let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            datagram.starts_with("<164>1 2025-12-04T17:46:47.250Z "),
            "{datagram}"
        );
        assert!(datagram.contains(r#""device":"pump-01""#), "{datagram}");
        assert!(
            datagram.contains(" lazaret ") && datagram.contains(" quarantine - {"),
            "{datagram}"
        );
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), tcp.accept())
            .await
            .expect("a connection in time")
            .expect("accept");
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a frame in time")
            .expect("read");
        let frame = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (len, message) = frame.split_once(' ').expect("LEN SP MSG");
        assert_eq!(len.parse::<usize>().ok(), Some(message.len()), "{frame}");
        assert_eq!(message, datagram);
    }
}
