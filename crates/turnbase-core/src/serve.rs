//! Serving an axum router on a TCP listener, with the limit hyper leaves
//! off unless it is given a timer: a client gets [`HEADER_READ_TIMEOUT`] to
//! send a request's head. Without it a client that opens connections and
//! trickles (or never finishes) its headers holds each one open for ever,
//! until the process runs out of file descriptors.
//!
//! The same timeout closes keep-alive connections that sit idle between
//! requests. HTTP/2 is not served: nothing here needs it in clear text
//! (browsers speak it only over TLS, which a proxy in front terminates;
//! gRPC has its own listener), and hyper has no idle limit for it, so an
//! HTTP/2 connection could be held open for ever.
//!
//! A request whose header fields take more than [`MAX_HEADER_BYTES`] gets
//! 431 with the JSON error body before it reaches the router; the answers
//! hyper gives itself to heads it cannot parse get that body as they are
//! written (see [`WriteDeadline`]).
//!
//! Every write has a deadline ([`ServeOptions::write_timeout`]): a client
//! that stops reading (a REST answer, an SSE stream or a WebSocket, which
//! keeps the same socket after its upgrade) cannot hold a connection, its
//! slot and its buffers past it; the connection is then reset.
//!
//! Otherwise it does what `axum::serve` does for HTTP/1.1: upgrades (for
//! WebSockets), `ConnectInfo<SocketAddr>` on every request, `TCP_NODELAY`,
//! and a graceful stop that refuses new connections and lets the open ones
//! finish their requests. For [`ServeOptions::drain_grace`] after the stop,
//! requests that arrive on open keep-alive connections are still answered,
//! with `Connection: close`, rather than dropped with the connection (a
//! client may have sent one just before it could know of the stop).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

/// How long a client may take to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How the listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long a client may take to send a request's head; also how long
    /// a keep-alive connection may sit idle.
    pub header_read_timeout: Duration,
    /// How long one write may make no progress before the connection is
    /// reset.
    pub write_timeout: Duration,
    /// How long after the stop requests on open connections are still
    /// answered (with `Connection: close`); the drain ends sooner once no
    /// connection is left.
    pub drain_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: HEADER_READ_TIMEOUT,
            write_timeout: Duration::from_secs(30),
            drain_grace: Duration::from_millis(500),
        }
    }
}

/// The most bytes a request's header fields may take together (names and
/// values); beyond it the answer is 431 with the usual JSON error body.
/// hyper itself refuses more than 100 fields, or about 400 KB of head,
/// with a 431 of its own (raising its field limit would move its parsing
/// to the heap, for every request), which [`WriteDeadline`] gives the JSON
/// body.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// 431 with a JSON body when the request's head is over the limits.
fn oversized_head<B>(request: &hyper::Request<B>) -> Option<axum::response::Response> {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (bytes > MAX_HEADER_BYTES).then(|| {
        crate::http::error_response(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("{bytes} bytes of header fields; at most {MAX_HEADER_BYTES} are accepted"),
        )
    })
}

/// Serves `router` (an axum [`Router`], or any service that answers the
/// same way) until `stop` resolves, then drains the open connections:
/// requests are answered for the grace with `Connection: close`, then
/// every connection finishes the request under way and closes (upgraded
/// ones are the caller's).
pub async fn serve<S>(
    listener: TcpListener,
    router: S,
    stop: impl Future<Output = ()>,
    options: ServeOptions,
) -> std::io::Result<()>
where
    S: tower::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .writev(false)
        .header_read_timeout(options.header_read_timeout);
    // Connections are told to finish when `stopping` changes or is
    // dropped; `connections` waits for them.
    let (stopping, stop_signal) = tokio::sync::watch::channel(());
    let draining = Arc::new(AtomicBool::new(false));
    let connections = tokio_util::task::TaskTracker::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection that died
                    // before it was accepted: wait a little and go on.
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let draining_now = draining.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let router = router.clone();
            let draining = draining_now.clone();
            async move {
                if let Some(refused) = oversized_head(&request) {
                    return Ok(refused);
                }
                request.extensions_mut().insert(ConnectInfo(peer));
                let mut response = router.oneshot(request).await?;
                if draining.load(Ordering::Relaxed) {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let io = WriteDeadline::new(tcp, options.write_timeout);
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut stop_signal = stop_signal.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stop_signal.changed() => {
                    // Finish the request under way, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::trace!(%err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    draining.store(true, Ordering::Relaxed);
    connections.close();
    // The grace: open connections keep being served, each answer saying
    // the connection closes; over early when none is left.
    let _ = tokio::time::timeout(options.drain_grace, connections.wait()).await;
    drop(stopping);
    connections.wait().await;
    Ok(())
}

/// A TCP stream whose writes have a deadline: a write (or flush) that
/// makes no progress for `timeout` fails, and the connection is reset
/// rather than closed (the kernel then drops what the client never read
/// instead of holding it for ever).
///
/// It also gives hyper's own answers the JSON error body: hyper refuses a
/// request whose head it cannot parse (a bad `Content-Length`, bytes not
/// allowed in the path, a target over 64 KiB, more than 100 header fields,
/// a head over its buffer) before any service sees it, with an empty body.
/// Such an answer is recognised as it is written and sent with the body
/// every other 4xx has.
pub struct WriteDeadline {
    inner: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A bare answer of hyper's, being replaced: the bytes sent instead,
    /// how many are out, and how many of hyper's bytes they stand for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl WriteDeadline {
    pub fn new(inner: TcpStream, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
            replacing: None,
        }
    }

    /// Whether this write is (or continues) the replacement of a bare
    /// answer of hyper's, which `head` starts when it is one.
    fn replaces(&mut self, head: &[u8]) -> bool {
        if self.replacing.is_none()
            && let Some(with_body) = with_error_body(head)
        {
            self.replacing = Some((with_body, 0, head.len()));
        }
        self.replacing.is_some()
    }

    /// Writes the replacement of a bare answer; ready once all of it is
    /// out, reporting hyper's bytes as written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        while let Some((bytes, sent, stands_for)) = &mut self.replacing {
            if *sent == bytes.len() {
                let done = *stands_for;
                self.replacing = None;
                return Poll::Ready(Ok(done));
            }
            let result = Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]);
            match self.progressed(result, cx) {
                Poll::Ready(Ok(n)) => {
                    if let Some((_, sent, _)) = &mut self.replacing {
                        *sent += n;
                    }
                }
                other => return other,
            }
        }
        Poll::Ready(Ok(0))
    }

    /// Called when the socket cannot take more: starts the clock, or ends
    /// the write once it ran out.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let timeout = self.timeout;
        let clock = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match clock.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let _ = socket_reset_on_close(&self.inner);
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client read nothing for {timeout:?}"),
                )))
            }
        }
    }

    fn progressed<T>(
        &mut self,
        result: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx),
        }
    }
}

/// The answer to send instead of `head` when it is one of hyper's bare
/// refusals: a whole 4xx head with `content-length: 0`, which no answer of
/// ours is (every 4xx of ours carries the JSON error body).
fn with_error_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 4")?;
    if !text.ends_with("\r\n\r\n")
        || !text
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let status: u16 = format!("4{}", rest.get(..2)?).parse().ok()?;
    let (code, message) = match status {
        414 => ("uri_too_long", "the request target is longer than 64 KiB"),
        431 => (
            "headers_too_large",
            "the request head is too large (more than 100 header fields, or more than the server reads)",
        ),
        _ => (
            "bad_request",
            "the request head is malformed and cannot be parsed",
        ),
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Client Error");
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Makes closing `stream` send a reset (SO_LINGER of zero).
fn socket_reset_on_close(stream: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO))
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.replaces(buf) {
            return this.poll_replacement(cx);
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if this.replaces(first) {
            return this.poll_replacement(cx);
        }
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The Prometheus listener both processes run: `GET /metrics` with the
/// text of `telemetry`'s registry, served until `stop` like any listener.
pub async fn serve_metrics(
    listener: TcpListener,
    telemetry: crate::telemetry::Telemetry,
    stop: impl Future<Output = ()>,
    options: ServeOptions,
) -> std::io::Result<()> {
    let router = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let telemetry = telemetry.clone();
            async move {
                crate::http::text_response(
                    "text/plain; version=0.0.4; charset=utf-8",
                    telemetry.prometheus_text().unwrap_or_default(),
                )
            }
        }),
    );
    serve(listener, router, stop, options).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn start(timeout: Duration) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            }),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            router,
            async move {
                let _ = rx.await;
            },
            ServeOptions {
                header_read_timeout: timeout,
                ..ServeOptions::default()
            },
        ));
        (addr, tx)
    }

    /// Sends `head` (a request without its final blank line) and returns
    /// the status line and the body of the answer.
    async fn exchange(addr: SocketAddr, head: &str) -> (String, String) {
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("answered")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer).to_string();
        let status = answer.lines().next().unwrap_or_default().to_string();
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn oversized_heads_get_431_with_a_json_body() {
        let (addr, _stop) = start(Duration::from_secs(5)).await;
        let big = format!(
            "GET /peer HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n",
            "c".repeat(MAX_HEADER_BYTES + 1)
        );
        let (status, body) = exchange(addr, &big).await;
        assert!(status.contains(" 431 "), "{status}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(json["error"]["code"], "headers_too_large", "{json}");
        let (status, _) = exchange(addr, "GET /peer HTTP/1.1\r\nHost: x\r\n").await;
        assert!(status.contains(" 200 "), "{status}");
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let (addr, _stop) = start(Duration::from_secs(1)).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf))
                .await
                .is_err(),
            "the server waits for the rest of the head, up to the timeout"
        );
        // Then, whatever hyper answers (a 408, or nothing), the connection
        // ends.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "the connection was still open 10 s after the header timeout"
        );
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
        let (addr, _stop) = start(Duration::from_secs(1)).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = client.read(&mut buf).await.expect("the answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let idle = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await;
        assert!(
            matches!(idle, Ok(Ok(0))),
            "the idle connection was not closed: {idle:?}"
        );
    }

    #[tokio::test]
    async fn http2_in_clear_text_is_not_served() {
        let (addr, _stop) = start(Duration::from_secs(30)).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // The HTTP/2 connection preface and an empty SETTINGS frame.
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("write");
        let mut rest = Vec::new();
        // Closed at once, long before the 30 s header timeout.
        let read =
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "an HTTP/2 connection was held open");
        assert!(
            rest.is_empty() || rest.starts_with(b"HTTP/1.1"),
            "the server answered with HTTP/2 frames: {rest:?}"
        );
    }

    #[tokio::test]
    async fn requests_carry_the_peer_address_and_stop_is_graceful() {
        let (addr, stop) = start(Duration::from_secs(30)).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let local = client.local_addr().expect("local");
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&local.to_string()), "{answer}");
        stop.send(()).expect("stop");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still accepting after the stop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A request that reaches an idle keep-alive connection just after
    /// the stop is answered (saying the connection closes) for the drain
    /// grace; hyper alone closes idle connections at once, and a request
    /// then on its way met a reset.
    #[tokio::test]
    async fn requests_after_the_stop_are_answered_during_the_grace() {
        let (addr, stop) = start(Duration::from_secs(30)).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 4096];
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let n = client.read(&mut buf).await.expect("the answer");
        let first = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        assert!(first.starts_with("http/1.1 200"), "{first}");
        assert!(!first.contains("connection: close"), "{first}");
        stop.send(()).expect("stop");
        // The stop has reached the accept loop once new connections fail;
        // a moment more (well within the 500 ms grace) lets every task see
        // it before the next request is sent.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still accepting");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        client
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("the connection ends");
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(
            answer.starts_with("http/1.1 200"),
            "dropped instead of answered: {answer:?}"
        );
        assert!(answer.contains("connection: close"), "{answer}");
    }

    /// A client that stops reading a large answer is cut off once a write
    /// makes no progress for the write timeout.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_reset_after_the_write_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route(
            "/big",
            axum::routing::get(|| async { "x".repeat(32 * 1024 * 1024) }),
        );
        let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            router,
            async move {
                let _ = rx.await;
            },
            ServeOptions {
                write_timeout: Duration::from_millis(300),
                ..ServeOptions::default()
            },
        ));
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let mut client = socket.connect(addr).await.expect("connect");
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Not reading for well past the timeout; then the rest of the
        // stream is short of the 32 MiB and ends (reset or closed).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the server kept the stalled connection open");
        assert!(
            total < 32 * 1024 * 1024,
            "the whole answer arrived: {total}"
        );
    }

    /// Requests hyper refuses before any service sees them get the JSON
    /// error body too.
    #[tokio::test]
    async fn requests_hyper_refuses_get_the_json_error_body() {
        let (addr, _stop) = start(Duration::from_secs(5)).await;
        let fields: String = (0..101).map(|i| format!("X-{i}: y\r\n")).collect();
        let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
            (
                "invalid Content-Length",
                b"GET /peer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
                400,
                "bad_request",
            ),
            (
                "a raw 0xFF in the path",
                b"GET /pe\xffer HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                400,
                "bad_request",
            ),
            (
                "a 100,000-character query",
                format!(
                    "GET /peer?ticket={} HTTP/1.1\r\nHost: x\r\n\r\n",
                    "a".repeat(100_000)
                )
                .into_bytes(),
                414,
                "uri_too_long",
            ),
            (
                "a header field of 600 KB",
                format!(
                    "GET /peer HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(600_000)
                )
                .into_bytes(),
                431,
                "headers_too_large",
            ),
            (
                "101 header fields",
                format!("GET /peer HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes(),
                431,
                "headers_too_large",
            ),
        ];
        for (what, request, status, code) in cases {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = client.write_all(&request).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
                .await;
            let answer = String::from_utf8_lossy(&answer).to_string();
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{what}: {answer}"
            );
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let json: serde_json::Value =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {answer}"));
            assert_eq!(json["error"]["code"], code, "{what}");
            assert!(
                answer
                    .to_lowercase()
                    .contains("content-type: application/json"),
                "{what}"
            );
        }
        // A well-formed request on the same server is untouched.
        let (status, body) = exchange(addr, "GET /peer HTTP/1.1\r\nHost: x\r\n").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(body.starts_with("127.0.0.1:"), "{body}");
    }
}
