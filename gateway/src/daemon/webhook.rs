//! The optional webhook: quarantine, release and new-unknown-device events POSTed as JSON
//! to a configured `https://` (or `http://`) URL, for paging and ticketing systems.
//!
//! Enforcement never waits for it. The controller hands an event over with a non-blocking
//! `try_send` on a bounded queue; a full queue drops the event and counts it
//! (`lazaret_webhook_deliveries_total{result="dropped"}`). One task of its own delivers the
//! queue in order: each attempt has a connect-and-answer timeout, failed attempts are retried
//! with exponential backoff, and an event whose every attempt failed is counted `failed`.
//! A receiver answering 2xx has it; a 4xx other than 408/429 is not retried (the receiver
//! refuses the request itself). Events stay in `lazaret events` and the log either way.
//!
//! `https://` goes over TLS (rustls, TLS 1.2 or 1.3): the receiver's certificate must chain
//! to the system's trust store, or to the site's own CA when `[webhook] ca_file` names one
//! (the trust store is then not used), and name the URL's host. A receiver whose
//! certificate does not is never sent the event: the attempt fails and is retried like any
//! other. With `secret_file`, every POST is signed so the receiver can tell it came from
//! this gateway and was not altered or replayed on the way:
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
    let form = "write https://host[:port]/path (or http://)";
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return Err(format!("{url:?} is not a webhook URL: {form}"));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a valid URL ({e}): {form}"))?;
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(uri),
        _ => Err(format!("{url:?} names no host: {form}")),
    }
}

/// Whether `uri` is delivered over TLS.
fn is_https(uri: &Uri) -> bool {
    uri.scheme_str() == Some("https")
}

/// The certificates of `pem` (a site's CA for the webhook), or why there are none.
pub fn ca_certificates(
    pem: &[u8],
) -> Result<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>, String> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The TLS implementation: ring's. It builds with a C compiler alone, the static musl
/// binary included (aws-lc-rs, rustls's default, needs cmake), and a webhook needs no
/// post-quantum key exchange.
fn crypto() -> std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    #[expect(
        deprecated,
        reason = "ring is chosen on purpose (above); rustls deprecates it only for lacking post-quantum key exchange"
    )]
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    std::sync::Arc::new(provider)
}

/// The TLS client for `https://` receivers: trusting `ca` (PEM) if given, else the
/// system's trust store.
pub fn tls_connector(ca: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls::{self, RootCertStore};
    let mut roots = RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in ca_certificates(pem)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file: a certificate rustls refuses ({e})"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("the system's trust store holds no certificate (install ca-certificates, or set [webhook] ca_file)".into());
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
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
    /// Starts the delivery task (on the current tokio runtime); `tls` for an `https://`
    /// URL (see [`tls_connector`]).
    pub fn spawn(
        uri: Uri,
        key: Option<Vec<u8>>,
        tls: Option<tokio_rustls::TlsConnector>,
        metrics: Arc<Metrics>,
    ) -> Webhook {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(uri, key, tls, rx, metrics.clone()));
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
    tls: Option<tokio_rustls::TlsConnector>,
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
            match tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                post(&uri, tls.as_ref(), body.clone(), signed),
            )
            .await
            {
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
    #[error("TLS with the receiver: {0}")]
    Tls(#[source] std::io::Error),
    #[error("the URL's host {0:?} cannot be checked against a certificate")]
    Name(String),
    #[error("an https:// URL without a TLS client")]
    NoTls,
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    Request(#[from] hyper::http::Error),
}

/// One POST over a fresh connection (events are rare: no pool to keep healthy), over TLS
/// for an `https://` URL.
async fn post(
    uri: &Uri,
    tls: Option<&tokio_rustls::TlsConnector>,
    body: Bytes,
    signature: Option<String>,
) -> Result<hyper::StatusCode, PostError> {
    let host = uri.host().unwrap_or_default();
    let https = is_https(uri);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // `[v6]` in the URL, a bare address for the socket.
    let connect_host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((connect_host, port))
        .await
        .map_err(PostError::Connect)?;
    if !https {
        return exchange(TokioIo::new(stream), uri, body, signature).await;
    }
    let tls = tls.ok_or(PostError::NoTls)?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(connect_host.to_string())
        .map_err(|_| PostError::Name(connect_host.to_string()))?;
    let stream = tls.connect(name, stream).await.map_err(PostError::Tls)?;
    exchange(TokioIo::new(stream), uri, body, signature).await
}

/// The POST itself, over `io` (plain or TLS).
async fn exchange<I>(
    io: I,
    uri: &Uri,
    body: Bytes,
    signature: Option<String>,
) -> Result<hyper::StatusCode, PostError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let host = uri.host().unwrap_or_default();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
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
        assert!(check_url("https://pager.example/").is_ok());
        assert!(check_url("ftp://pager.example/").is_err());
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
        let hook = Webhook::spawn(uri, Some(key.clone()), None, metrics.clone());
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

    /// A self-signed certificate for 127.0.0.1: (its PEM, a TLS acceptor serving it).
    fn tls_receiver() -> (String, tokio_rustls::TlsAcceptor) {
        use tokio_rustls::rustls::{
            self,
            pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
        };
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server config");
        (
            cert.pem(),
            tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        )
    }

    /// An https:// receiver whose certificate chains to `ca_file` gets the signed event; one
    /// whose certificate does not (another CA) is never sent it.
    #[tokio::test]
    async fn an_https_receiver_is_trusted_by_its_ca_and_refused_otherwise() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (pem, acceptor) = tls_receiver();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.expect("accept");
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    requests.push(None);
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read");
                requests.push(Some(String::from_utf8_lossy(&buf[..n]).into_owned()));
                let reply = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                s.write_all(reply.as_bytes()).await.expect("write");
                let _ = s.shutdown().await;
            }
            requests
        });
        let uri = check_url(&format!("https://{addr}/hook")).expect("url");
        let key = b"0123456789abcdef0123456789abcdef";
        let body = Bytes::from_static(br#"{"kind":"quarantine"}"#);
        let trusted = tls_connector(Some(pem.as_bytes())).expect("connector");
        let signed = signature(key, 1_764_870_407, &body);
        let status = post(&uri, Some(&trusted), body.clone(), Some(signed.clone()))
            .await
            .expect("delivered over TLS");
        assert!(status.is_success());
        // Another CA: the handshake fails, nothing is sent.
        let (other, _) = tls_receiver();
        let untrusted = tls_connector(Some(other.as_bytes())).expect("connector");
        let refused = post(&uri, Some(&untrusted), body.clone(), Some(signed.clone())).await;
        assert!(matches!(refused, Err(PostError::Tls(_))), "{refused:?}");
        let requests = server.await.expect("server");
        let first = requests[0].as_deref().expect("a request over TLS");
        assert!(first.starts_with("POST /hook HTTP/1.1"), "{first}");
        assert!(first.contains(&format!("{SIGNATURE}: {signed}")), "{first}");
        assert!(
            requests[1].is_none(),
            "the untrusted client sent: {:?}",
            requests[1]
        );
        // A file without certificates is refused with a reason.
        assert!(tls_connector(Some(b"not a certificate")).is_err());
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
