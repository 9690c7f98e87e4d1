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
//! 431 with the JSON error body before it reaches the router.
//!
//! Otherwise it does what `axum::serve` does for HTTP/1.1: upgrades (for
//! WebSockets), `ConnectInfo<SocketAddr>` on every request, `TCP_NODELAY`,
//! and a graceful stop that refuses new connections and lets the open ones
//! finish their requests.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// How long a client may take to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes a request's header fields may take together (names and
/// values); beyond it the answer is 431 with the usual JSON error body.
/// hyper itself refuses more than 100 fields, or about 400 KB of head,
/// with a bare 431 (raising its field limit would move its parsing to the
/// heap, for every request).
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

/// Serves `router` until `stop` resolves, then waits for the open
/// connections to finish their requests (upgraded ones are the caller's).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, router, stop, HEADER_READ_TIMEOUT).await
}

/// [`serve`] with another header timeout (tests use a short one).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // Connections are told to finish when `stopping` changes or is
    // dropped; `connections` waits for them.
    let (stopping, stop_signal) = tokio::sync::watch::channel(());
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
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let router = router.clone();
            async move {
                if let Some(refused) = oversized_head(&request) {
                    return Ok(refused);
                }
                request.extensions_mut().insert(ConnectInfo(peer));
                router.oneshot(request).await
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(tcp), service)
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
    drop(stopping);
    connections.close();
    connections.wait().await;
    Ok(())
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
        tokio::spawn(serve_with(
            listener,
            router,
            async move {
                let _ = rx.await;
            },
            timeout,
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
}
