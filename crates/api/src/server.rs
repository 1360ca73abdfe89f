//! Serving the router over HTTP/1.1 (plain or TLS) with bounds on what a slow, idle or
//! numerous client can hold.
//!
//! Every connection is in one of three phases, watched by its own task:
//!
//! - **head**: from accept (or from the first byte after an answer) until the request's
//!   head has been read — at most [`HttpLimits::header_timeout`] (10 s), TLS handshake
//!   included;
//! - **in flight**: the request is with the router; its body must arrive within
//!   [`HttpLimits::body_timeout`] (30 s) of the head, or reading it fails and the answer is
//!   408 `REQUEST_TIMEOUT` with `Connection: close`;
//! - **idle**: a kept-alive connection between requests — closed after
//!   [`HttpLimits::idle_timeout`] (60 s).
//!
//! At most [`HttpLimits::max_connections`] (4,096) connections are open at once; beyond
//! that the listener stops accepting, so new connections wait in the kernel's backlog until
//! one closes. A request head may be at most [`MAX_HEAD_BYTES`]; hyper answers a larger one
//! 431, a request line longer than 65,534 bytes 414 and an unparsable one 400, with empty
//! bodies that this module replaces with the Salesforce error array.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::Router;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// The largest request head (request line and headers) read, in bytes.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

/// Timeouts and the connection limit of the HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// From accept, or from the first byte of a request after an answer, to its full head.
    pub header_timeout: Duration,
    /// From the head to the end of the body.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// The command-line flags (each with its environment variable) for [`HttpLimits`].
#[derive(clap::Args, Clone, Debug)]
pub struct HttpArgs {
    /// Seconds a client has to send a request's head (and finish a TLS handshake).
    #[arg(long, env = "REFUNDS_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,
    /// Seconds a client has to send a request's body, counted from its head.
    #[arg(long, env = "REFUNDS_HTTP_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub http_body_timeout_secs: u64,
    /// Seconds a kept-alive connection may stay idle between requests.
    #[arg(long, env = "REFUNDS_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub http_idle_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "REFUNDS_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
}

impl HttpArgs {
    pub fn limits(&self) -> Result<HttpLimits, String> {
        let secs = |name: &str, value: u64| {
            if value == 0 {
                Err(format!("--{name} must be at least 1"))
            } else {
                Ok(Duration::from_secs(value))
            }
        };
        if self.http_max_connections == 0 || self.http_max_connections > Semaphore::MAX_PERMITS {
            return Err("--http-max-connections must be at least 1".into());
        }
        Ok(HttpLimits {
            header_timeout: secs("http-header-timeout-secs", self.http_header_timeout_secs)?,
            body_timeout: secs("http-body-timeout-secs", self.http_body_timeout_secs)?,
            idle_timeout: secs("http-idle-timeout-secs", self.http_idle_timeout_secs)?,
            max_connections: self.http_max_connections,
        })
    }
}

/// The error a request body reports once its time is up; `ApiError` turns it into 408.
#[derive(Debug)]
pub(crate) struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body was not received in time")
    }
}

impl StdError for BodyTimedOut {}

/// Whether `error` (or anything it was caused by) is a [`BodyTimedOut`].
pub(crate) fn timed_out(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` turns true;
/// then stops accepting and returns once every open connection has finished (each is told
/// to close after its request in flight).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let phase = Arc::new(Phases::new());
            match acceptor {
                None => connection(tcp, peer, app, limits, phase, stop).await,
                Some(acceptor) => {
                    // The handshake is part of the head's time.
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, peer, app, limits, phase, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Every connection holds a slot until it ends: holding them all means all have ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// One connection: hyper's HTTP/1.1 state machine, watched for the phase timeouts.
async fn connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    app: Router,
    limits: HttpLimits,
    phase: Arc<Phases>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Guarded::new(stream, phase.clone()));
    let service_phase = phase.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = service_phase.begin();
        let deadline = tokio::time::sleep(limits.body_timeout);
        let mut request =
            request.map(|body| axum::body::Body::new(TimedBody::new(body, Box::pin(deadline))));
        // The peer address is what login throttling counts by.
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let mut conn = std::pin::pin!(hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .writev(false)
        .serve_connection(io, service));
    let mut closing = false;
    loop {
        let deadline = phase.deadline(&limits);
        let changed = phase.changed.notified();
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = changed => {}
            _ = sleep_until(deadline) => {
                if phase.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("connection closed: the client was too slow or idle too long");
                    return;
                }
            }
            _ = shutdown.wait_for(|stop| *stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading a request's head since then.
    Head(Instant),
    /// This many requests are with the router.
    InFlight(usize),
    /// Waiting for the next request since then.
    Idle(Instant),
}

/// A connection's phase, shared by its reader, its service and its watcher.
struct Phases {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn set(&self, change: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        *phase = change(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    fn deadline(&self, limits: &HttpLimits) -> Option<Instant> {
        match *self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            // (a timeout too large for the clock is no timeout)
            Phase::Head(since) => since.checked_add(limits.header_timeout),
            Phase::Idle(since) => since.checked_add(limits.idle_timeout),
            Phase::InFlight(_) => None,
        }
    }

    /// Bytes arrived: an idle connection starts reading a head.
    fn bytes_in(&self) {
        let idle = matches!(
            *self.phase.lock().unwrap_or_else(|p| p.into_inner()),
            Phase::Idle(_)
        );
        if idle {
            self.set(|_| Phase::Head(Instant::now()));
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.set(|phase| match phase {
            Phase::InFlight(n) => Phase::InFlight(n + 1),
            _ => Phase::InFlight(1),
        });
        InFlight(self.clone())
    }
}

/// A request with the router; when it ends the connection is idle again.
struct InFlight(Arc<Phases>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(|phase| match phase {
            Phase::InFlight(n) if n > 1 => Phase::InFlight(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// A request body that fails with [`BodyTimedOut`] once its deadline has passed.
struct TimedBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
}

impl<B> TimedBody<B> {
    fn new(inner: B, deadline: Pin<Box<Sleep>>) -> TimedBody<B> {
        TimedBody { inner, deadline }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it: reads mark activity; hyper's own error answers (400, 414,
/// 431 with an empty body) are replaced by the Salesforce error array.
struct Guarded<S> {
    inner: S,
    phase: Arc<Phases>,
    /// A replacement answer and how much of it is written; once set, whatever else hyper
    /// writes is dropped (it closes the connection after such an answer).
    replaced: Option<(Vec<u8>, usize)>,
}

impl<S> Guarded<S> {
    fn new(inner: S, phase: Arc<Phases>) -> Guarded<S> {
        Guarded {
            inner,
            phase,
            replaced: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((bytes, written)) = &mut self.replaced else {
            return Poll::Ready(Ok(()));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.phase.bytes_in();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replaced.is_none() {
            match automatic_answer(buf) {
                Some(answer) => this.replaced = Some((answer, 0)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // What is left of the replacement goes out now or at the next flush.
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The Salesforce-shaped replacement for one of hyper's automatic error answers: status
/// 400, 414 or 431, `content-length: 0` and no content type (every answer of the router
/// has one).
fn automatic_answer(written: &[u8]) -> Option<Vec<u8>> {
    let rest = written.strip_prefix(b"HTTP/1.1 ")?;
    let status = rest.get(..3)?;
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&written[..head_end]).to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0") || head.contains("\r\ncontent-type:") {
        return None;
    }
    let (line, code, message) = match status {
        b"400" => (
            "400 Bad Request",
            "MALFORMED_REQUEST",
            "The request is not valid HTTP/1.1",
        ),
        b"414" => (
            "414 URI Too Long",
            "URI_TOO_LONG",
            "The request line is longer than 65,534 bytes; send a long SOQL query as a POST to …/query with the form field q",
        ),
        b"431" => (
            "431 Request Header Fields Too Large",
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
            "The request's head is larger than 131,072 bytes or has more than 100 headers",
        ),
        _ => return None,
    };
    let body = serde_json::json!([{"errorCode": code, "message": message}]).to_string();
    Some(
        format!(
            "HTTP/1.1 {line}\r\ncontent-type: application/json;charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::{automatic_answer, HttpArgs, HttpLimits};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        http: HttpArgs,
    }

    #[test]
    fn flags_default_to_the_documented_limits_and_refuse_zero() {
        let defaults = Cli::try_parse_from(["serve"]).expect("parses").http;
        assert_eq!(defaults.limits(), Ok(HttpLimits::default()));
        assert_eq!(
            HttpLimits::default(),
            HttpLimits {
                header_timeout: std::time::Duration::from_secs(10),
                body_timeout: std::time::Duration::from_secs(30),
                idle_timeout: std::time::Duration::from_secs(60),
                max_connections: 4096,
            }
        );
        let set = Cli::try_parse_from([
            "serve",
            "--http-header-timeout-secs",
            "2",
            "--http-body-timeout-secs",
            "3",
            "--http-idle-timeout-secs",
            "4",
            "--http-max-connections",
            "5",
        ])
        .expect("parses")
        .http
        .limits()
        .expect("valid");
        assert_eq!(
            (set.header_timeout.as_secs(), set.body_timeout.as_secs()),
            (2, 3)
        );
        assert_eq!((set.idle_timeout.as_secs(), set.max_connections), (4, 5));
        for zero in [
            "--http-header-timeout-secs",
            "--http-body-timeout-secs",
            "--http-idle-timeout-secs",
            "--http-max-connections",
        ] {
            let args = Cli::try_parse_from(["serve", zero, "0"]).expect("parses");
            let refused = args.http.limits().expect_err("zero is refused");
            assert!(refused.contains(zero), "{refused}");
        }
    }

    #[test]
    fn only_hyper_s_empty_error_answers_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 08:00:00 GMT\r\n\r\n";
        let answer =
            String::from_utf8(automatic_answer(hyper_431).expect("replaced")).expect("UTF-8");
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(json[0]["errorCode"], "REQUEST_HEADER_FIELDS_TOO_LARGE");
        for kept in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json;charset=UTF-8\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n0123456789",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n",
            b"{\"partial\": \"body\"}",
        ] {
            assert!(
                automatic_answer(kept).is_none(),
                "{}",
                String::from_utf8_lossy(kept)
            );
        }
    }
}
