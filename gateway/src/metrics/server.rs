//! The read-only HTTP endpoint: GET or HEAD `/metrics`, and `/healthz` (is the event loop
//! working), nothing else.
//!
//! HTTP/1.1 only (what Prometheus speaks). Slow clients cannot hold a connection open without
//! sending their request headers; on shutdown the listener closes at once and connections
//! get a short grace period to finish the response they are writing.

use std::{convert::Infallible, future::Future, io, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::net::TcpListener;

use super::Metrics;

/// `Content-Type` of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections may finish their response once shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after an accept error caused by resource exhaustion, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `GET /metrics` (and `HEAD`) on `listener` until `shutdown` resolves: 404 for any
/// other path, 405 for any other method. Returns an error only if the listener itself fails.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) if is_transient(&error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed, retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let metrics = Arc::clone(&metrics);
        let service = service_fn(move |request| {
            let response = respond(&metrics, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "metrics endpoint: connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("metrics endpoint: connections still open after the drain timeout");
        }
    }
    Ok(())
}

/// Errors of one accept that say nothing about the listener: an aborted handshake, or a
/// momentary lack of descriptors or memory.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
    ) || matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() == "/healthz" && matches!(*request.method(), Method::GET | Method::HEAD)
    {
        return healthz(metrics);
    }
    if request.uri().path() != "/metrics" {
        return status(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = status(
            StatusCode::METHOD_NOT_ALLOWED,
            "the metrics endpoint is read-only\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // hyper leaves the body out of a HEAD response and keeps its Content-Length.
    let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// `/healthz`: 200 while the event loop beats (it reads events, applies quarantines and
/// answers the control socket), 503 once it has been silent for
/// [`super::health::STALLED_AFTER_MS`] (or before its first beat). The body says how long.
fn healthz(metrics: &Metrics) -> Response<Full<Bytes>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = metrics.heartbeat_ms();
    let age = now.saturating_sub(last);
    let ok = last > 0 && age <= super::health::STALLED_AFTER_MS;
    let body = format!(
        "{{\"status\":\"{}\",\"loop_heartbeat_age_ms\":{}}}\n",
        if ok { "ok" } else { "stalled" },
        if last == 0 { -1 } else { age as i64 }
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    if !ok {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
