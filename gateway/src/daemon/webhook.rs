//! The optional webhook: quarantine and release events POSTed as JSON to a configured
//! `http://` URL, for paging and ticketing systems.
//!
//! Enforcement never waits for it. The controller hands an event over with a non-blocking
//! `try_send` on a bounded queue; a full queue drops the event and counts it
//! (`lazaret_webhook_deliveries_total{result="dropped"}`). One task of its own delivers the
//! queue in order: each attempt has a connect-and-answer timeout, failed attempts are retried
//! with exponential backoff, and an event whose every attempt failed is counted `failed`.
//! A receiver answering 2xx has it; a 4xx other than 408/429 is not retried (the receiver
//! refuses the request itself). Events stay in `lazaret events` and the log either way.
//!
//! Plain HTTP only (no TLS stack in lazaret yet): point it at a receiver on the management
//! network or a local relay. With `secret_file`, every POST is signed so the receiver can
//! tell it came from this gateway and was not altered or replayed on the way:
//! `X-Lazaret-Signature: t=<unix seconds>,sha256=<hex HMAC-SHA256 of "<t>.<body>">`. The
//! receiver recomputes the HMAC with the shared key, compares it in constant time, and
//! refuses a `t` too far from its clock (docs/events.md shows the check).

use super::events::Record;
use std::{sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{
    body::Bytes,
    header::{HeaderName, CONTENT_TYPE, HOST, USER_AGENT},
    Method, Request, Uri,
};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Events waiting for delivery; beyond that new ones are dropped (and counted).
pub const QUEUE: usize = 64;
/// Attempts per event, and the backoff before the first retry (doubled each time):
/// 0.5 + 1 + 2 + 4 + 8 s between six attempts.
pub const ATTEMPTS: u32 = 6;
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// One attempt: connect, send, and read the status line.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a webhook URL; the message says what to write instead. Pure.
pub fn check_url(url: &str) -> Result<Uri, String> {
    if url.starts_with("https://") {
        return Err(
            "https webhooks are not supported (lazaret has no TLS client): use an http:// \
             receiver on the management network, or a local relay"
                .into(),
        );
    }
    if !url.starts_with("http://") {
        return Err(format!(
            "{url:?} is not a webhook URL: write http://host[:port]/path"
        ));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a valid URL ({e}): write http://host[:port]/path"))?;
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(uri),
        _ => Err(format!(
            "{url:?} names no host: write http://host[:port]/path"
        )),
    }
}

/// The header carrying a POST's signature.
pub const SIGNATURE: &str = "x-lazaret-signature";

/// The signature of `body` sent at `unix_s` with `key`: `t=<unix_s>,sha256=<hex>`, the
/// HMAC-SHA256 of `"<unix_s>.<body>"` (the time is signed too, so an old event cannot be
/// replayed as new). Pure.
pub fn signature(key: &[u8], unix_s: u64, body: &[u8]) -> String {
    let t = unix_s.to_string();
    let hex = super::sign::hex(key, &[t.as_bytes(), b".", body]);
    format!("t={unix_s},sha256={hex}")
}

/// The controller's end of the webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Record>,
    metrics: Arc<Metrics>,
}

impl Webhook {
    /// Starts the delivery task (on the current tokio runtime).
    pub fn spawn(uri: Uri, key: Option<Vec<u8>>, metrics: Arc<Metrics>) -> Webhook {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(uri, key, rx, metrics.clone()));
        Webhook { tx, metrics }
    }

    /// Queues an event; never blocks. A full queue drops it.
    pub fn send(&self, event: Record) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!(
                queue = QUEUE,
                "webhook queue full: event dropped (the receiver is slow or down)"
            );
            self.metrics.webhook_delivery("dropped");
        }
    }
}

async fn deliver_all(
    uri: Uri,
    key: Option<Vec<u8>>,
    mut rx: mpsc::Receiver<Record>,
    metrics: Arc<Metrics>,
) {
    while let Some(event) = rx.recv().await {
        let Ok(body) = serde_json::to_vec(&event) else {
            metrics.webhook_delivery("failed");
            continue;
        };
        let body = Bytes::from(body);
        let mut backoff = FIRST_BACKOFF;
        let mut result = "failed";
        for attempt in 1..=ATTEMPTS {
            // Signed at each attempt: a retry carries its own time.
            let signed = key.as_deref().map(|k| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                signature(k, now, &body)
            });
            match tokio::time::timeout(ATTEMPT_TIMEOUT, post(&uri, body.clone(), signed)).await {
                Ok(Ok(status)) if status.is_success() => {
                    result = "delivered";
                    break;
                }
                Ok(Ok(status)) => {
                    tracing::warn!(url = %uri, attempt, %status, "webhook receiver refused the event");
                    let retryable = status.is_server_error()
                        || status == hyper::StatusCode::REQUEST_TIMEOUT
                        || status == hyper::StatusCode::TOO_MANY_REQUESTS;
                    if !retryable {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(url = %uri, attempt, error = %e, "webhook delivery failed");
                }
                Err(_) => {
                    tracing::warn!(url = %uri, attempt, timeout_s = ATTEMPT_TIMEOUT.as_secs(), "webhook delivery timed out");
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        if result == "failed" {
            tracing::error!(url = %uri, event = %body.escape_ascii(), "webhook event given up after every retry");
        }
        metrics.webhook_delivery(result);
    }
}

#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    Request(#[from] hyper::http::Error),
}

/// One POST over a fresh connection (events are rare: no pool to keep healthy).
async fn post(
    uri: &Uri,
    body: Bytes,
    signature: Option<String>,
) -> Result<hyper::StatusCode, PostError> {
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(80);
    // `[v6]` in the URL, a bare address for the socket.
    let connect_host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((connect_host, port))
        .await
        .map_err(PostError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, authority)
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("lazaret/", env!("CARGO_PKG_VERSION")));
    if let Some(s) = signature {
        request = request.header(HeaderName::from_static(SIGNATURE), s);
    }
    let request = request.body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    // Drain the (small) answer so the connection closes cleanly.
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("http://10.10.9.9:8080/hook").is_ok());
        assert!(check_url("http://[fd00::9]:8080/").is_ok());
        assert!(check_url("http://pager.example/").is_ok());
        assert!(check_url("https://pager.example/").is_err());
        assert!(check_url("http:///x").is_err());
        assert!(check_url("pager.example").is_err());
    }

    /// The signature is HMAC-SHA256 of "<t>.<body>" (checked against Python's hmac).
    #[test]
    fn a_signature_covers_the_time_and_the_body() {
        let key = b"0123456789abcdef0123456789abcdef";
        let body = br#"{"kind":"quarantine"}"#;
        assert_eq!(
            signature(key, 1_764_870_407, body),
            "t=1764870407,sha256=773c284972b9cac6586c37eaeb6e8dfeef669a19d4d7f418385d010d499ffb45"
        );
        assert_ne!(
            signature(key, 1_764_870_408, body),
            signature(key, 1_764_870_407, body)
        );
    }

    /// A receiver that answers 500 twice, then 200: the event is retried and delivered.
    #[tokio::test]
    async fn retries_until_the_receiver_takes_the_event() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for status in [
                "500 Internal Server Error",
                "500 Internal Server Error",
                "200 OK",
            ] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read");
                bodies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                s.write_all(reply.as_bytes()).await.expect("write");
            }
            bodies
        });
        let metrics = Arc::new(Metrics::new("test").expect("metrics"));
        let uri = check_url(&format!("http://{addr}/hook")).expect("url");
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let hook = Webhook::spawn(uri, Some(key.clone()), metrics.clone());
        hook.send(crate::daemon::events::quarantine_event(
            "pump-01",
            Some(crate::daemon::quarantine::Action::Isolate),
            "root",
            "test",
            1.0,
        ));
        let bodies = server.await.expect("server");
        assert_eq!(bodies.len(), 3);
        // Each attempt is signed: the receiver's check, with the shared key.
        for request in &bodies {
            let (head, body) = request.split_once("\r\n\r\n").expect("a body");
            let sent = head
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{SIGNATURE}: ")))
                .expect("a signature header");
            let t: u64 = sent
                .strip_prefix("t=")
                .and_then(|r| r.split(',').next())
                .and_then(|t| t.parse().ok())
                .expect("t=");
            assert_eq!(sent, signature(&key, t, body.as_bytes()), "{request}");
            assert_ne!(
                sent,
                signature(b"another key, 32 bytes long......", t, body.as_bytes())
            );
        }
        assert!(
            bodies[2].starts_with("POST /hook HTTP/1.1"),
            "{}",
            bodies[2]
        );
        assert!(
            bodies[2].contains("\"device\":\"pump-01\""),
            "{}",
            bodies[2]
        );
        for _ in 0..100 {
            if metrics
                .render()
                .contains("lazaret_webhook_deliveries_total{result=\"delivered\"} 1")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("delivery not counted:\n{}", metrics.render());
    }

    #[tokio::test]
    async fn a_full_queue_drops_without_blocking() {
        let metrics = Arc::new(Metrics::new("test").expect("metrics"));
        // Nothing delivers: the receiver end is held but never read.
        let (tx, _rx) = mpsc::channel(QUEUE);
        let hook = Webhook {
            tx,
            metrics: metrics.clone(),
        };
        for _ in 0..QUEUE + 5 {
            hook.send(crate::daemon::events::quarantine_event(
                "pump-01", None, "root", "test", 1.0,
            ));
        }
        assert!(metrics
            .render()
            .contains("lazaret_webhook_deliveries_total{result=\"dropped\"} 5"));
    }
}
