//! The gateway's keep-alive connections to the backend.
//!
//! A forwarded request is driven by the task that serves the client's
//! connection: it takes an idle backend connection from the pool, writes
//! the request and reads the answer on that same task, and the answer's
//! body keeps driving the backend connection while the client reads it.
//! When the body has been read to its end the connection goes back to the
//! pool. No second task owns the connection, so a request costs no hand-off
//! between tasks (hyper's pooled client runs every connection on a task of
//! its own and passes each request and answer across a channel; under load
//! those hand-offs were a large share of the gateway's own CPU).
//!
//! An idle connection is not watched: one the backend closed while idle is
//! found out when it is taken, and a request that was never written on it
//! is sent again on another connection.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Body>>>;

/// Why a request did not get an answer from the backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the backend at {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("connecting to the backend at {0} timed out")]
    ConnectTimeout(String),
    #[error("the backend connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the backend closed the connection before answering")]
    Closed,
    #[error("a request with a URL the gateway cannot forward: {0}")]
    BadRequest(String),
}

/// One open connection: the handle requests are sent through, and the
/// state machine that does the reading and writing when polled (dropped
/// once it has ended, which hands a request it had not taken back to its
/// sender).
struct Conn {
    send: SendRequest<Body>,
    driver: Option<Driver>,
}

impl Conn {
    /// Lets the connection read and write what it can; false once it has
    /// ended (closed by either side, or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = &mut self.driver else {
            return false;
        };
        if driver.as_mut().poll(cx).is_pending() {
            return true;
        }
        self.driver = None;
        false
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The pool of connections to one backend.
pub struct Upstream {
    authority: Authority,
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl Upstream {
    /// Connections to the backend at `base` (`http://host[:port]`).
    pub fn new(base: &str) -> Result<Arc<Upstream>, String> {
        let authority_text = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("{base:?} is not an http:// URL"))?
            .trim_end_matches('/');
        let authority: Authority = authority_text
            .parse()
            .map_err(|e| format!("{base:?} is not an http://host:port URL: {e}"))?;
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|e| format!("{base:?}: {e}"))?;
        Ok(Arc::new(Upstream {
            authority,
            host,
            idle: Mutex::default(),
            max_idle: 512,
            // Below the backend's own idle limit (its header read timeout,
            // 30 s by default), so that the gateway lets a connection go
            // before the backend closes it under a request.
            idle_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
        }))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Idle connections in the pool (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// The most recently used idle connection that has not been idle too
    /// long (older ones are closed: the backend may be about to).
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle();
        let entry = idle.pop()?;
        if entry.since.elapsed() >= self.idle_timeout {
            // The rest are older still.
            idle.clear();
            return None;
        }
        Some(entry.conn)
    }

    fn checkin(&self, conn: Conn) {
        if conn.driver.is_none() || conn.send.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let host = self.authority.host();
        // An IPv6 literal comes bracketed in URLs but not to the resolver.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.authority.to_string()))?
            .map_err(|source| UpstreamError::Connect {
                authority: self.authority.to_string(),
                source,
            })?;
        // Requests are small writes that must leave at once.
        let _ = stream.set_nodelay(true);
        let (send, driver) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Conn {
            send,
            driver: Some(Box::pin(driver)),
        })
    }

    /// Sends `request` (its URI may be a path, or a full URL whose path is
    /// what is sent) and waits for the answer's head; the body streams as
    /// the caller reads it.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            // A pooled connection the backend closed while it sat idle
            // shows it here. An idle one is ready at once: that first look
            // is taken without this task's waker, so that handing it the
            // request below does not wake this task for nothing (one poll
            // of the whole request less).
            let mut probe = |cx: &mut Context<'_>| {
                if !conn.drive(cx) {
                    return Poll::Ready(false);
                }
                conn.send.poll_ready(cx).map(|result| result.is_ok())
            };
            let first = probe(&mut Context::from_waker(std::task::Waker::noop()));
            let ready = match first {
                Poll::Ready(ready) => ready,
                Poll::Pending => poll_fn(probe).await,
            };
            if !ready {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Closed);
            }
            let mut answer = pin!(conn.send.try_send_request(request));
            let outcome = poll_fn(|cx| {
                let alive = conn.drive(cx);
                match answer.as_mut().poll(cx) {
                    Poll::Ready(result) => Poll::Ready(Some(result)),
                    Poll::Pending if alive => Poll::Pending,
                    // The connection ended (and was dropped) without
                    // handing the request back or answering it: not
                    // expected of hyper, but not waited on forever either.
                    Poll::Pending => Poll::Ready(None),
                }
            })
            .await;
            match outcome {
                Some(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    let relay = Relay {
                        body,
                        ended: false,
                        conn: Some(conn),
                        upstream: self.clone(),
                    };
                    return Ok(Response::from_parts(parts, Body::new(relay)));
                }
                Some(Err(mut failed)) => match failed.take_message() {
                    // Never written: safe to send again elsewhere.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed.into_error().into()),
                },
                None => return Err(UpstreamError::Closed),
            }
        }
    }
}

/// The body of a backend's answer. Reading it drives the connection it
/// comes over; once read to its end, the connection goes back to the pool.
struct Relay {
    body: Incoming,
    /// The body has told its end.
    ended: bool,
    conn: Option<Conn>,
    upstream: Arc<Upstream>,
}

impl HttpBody for Relay {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Some(conn) = &mut this.conn
            && !conn.drive(cx)
        {
            this.conn = None;
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none() {
            this.ended = true;
            this.release();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Relay {
    /// Returns the connection to the pool when the whole answer was read
    /// (an answer cut short leaves the connection mid-message: it closes).
    fn release(&mut self) {
        if (self.ended || self.body.is_end_stream())
            && let Some(conn) = self.conn.take()
        {
            self.upstream.checkin(conn);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The server may stop reading once the body says it has ended,
        // without asking for the end itself.
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::sync::oneshot;
    use turnbase_core::serve::{ServeOptions, serve};

    /// A backend on loopback that counts the connections it accepted and
    /// closes keep-alive connections idle for `idle`.
    async fn backend(idle: Duration) -> (String, Arc<AtomicUsize>) {
        let app = axum::Router::new()
            .route("/small", axum::routing::get(|| async { "small" }))
            .route(
                "/chunked",
                axum::routing::get(|| async {
                    let chunks = (0..50).map(|i| Ok::<_, std::io::Error>(format!("chunk {i};")));
                    Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .route(
                "/echo",
                axum::routing::post(|body: bytes::Bytes| async move { body }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        // Count connections by wrapping the listener's accepts: a proxy
        // in front of the server.
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let front_addr = front.local_addr().expect("addr");
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = front.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        let options = ServeOptions {
            header_read_timeout: idle,
            ..ServeOptions::default()
        };
        tokio::spawn(serve(listener, app, std::future::pending(), options));
        (format!("http://{front_addr}"), accepted)
    }

    async fn get(upstream: &Arc<Upstream>, path: &str) -> (u16, String) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = upstream.send(request).await.expect("answered");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn answers_read_to_their_end_give_their_connection_back() {
        let (url, accepted) = backend(Duration::from_secs(30)).await;
        let upstream = Upstream::new(&url).expect("url");
        for _ in 0..5 {
            assert_eq!(get(&upstream, "/small").await, (200, "small".into()));
        }
        let (status, body) = get(&upstream, "/chunked").await;
        assert_eq!(status, 200);
        assert!(body.starts_with("chunk 0;") && body.ends_with("chunk 49;"));
        let echoed = upstream
            .send(
                Request::post("/echo")
                    .body(Body::from("ping"))
                    .expect("request"),
            )
            .await
            .expect("answered")
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&echoed[..], b"ping");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
        assert_eq!(upstream.idle_count(), 1);
    }

    #[tokio::test]
    async fn an_answer_dropped_before_its_end_closes_its_connection() {
        let (url, accepted) = backend(Duration::from_secs(30)).await;
        let upstream = Upstream::new(&url).expect("url");
        let request = Request::get("/chunked")
            .body(Body::empty())
            .expect("request");
        let response = upstream.send(request).await.expect("answered");
        let mut body = response.into_body();
        let _first = body.frame().await;
        drop(body);
        assert_eq!(upstream.idle_count(), 0, "not reused mid-message");
        assert_eq!(get(&upstream, "/small").await, (200, "small".into()));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_while_idle_is_replaced() {
        let (url, accepted) = backend(Duration::from_millis(200)).await;
        let upstream = Upstream::new(&url).expect("url");
        assert_eq!(get(&upstream, "/small").await, (200, "small".into()));
        // The backend closes the idle connection; the pool finds out when
        // it next takes it, and the request goes out on a new one.
        tokio::time::sleep(Duration::from_millis(600)).await;
        for _ in 0..3 {
            assert_eq!(get(&upstream, "/small").await, (200, "small".into()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_each_get_a_connection() {
        let (url, accepted) = backend(Duration::from_secs(30)).await;
        let upstream = Upstream::new(&url).expect("url");
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let upstream = upstream.clone();
                tokio::spawn(async move { get(&upstream, "/chunked").await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.expect("join").0, 200);
        }
        let opened = accepted.load(Ordering::SeqCst);
        assert!((1..=8).contains(&opened), "{opened} connections");
        assert_eq!(upstream.idle_count(), opened);
    }

    /// A plain backend on `addr` until `stop` fires.
    async fn stoppable(addr: std::net::SocketAddr) -> (std::net::SocketAddr, oneshot::Sender<()>) {
        let app = axum::Router::new().route("/small", axum::routing::get(|| async { "small" }));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            app,
            async move {
                let _ = stopped.await;
            },
            ServeOptions::default(),
        ));
        (addr, stop)
    }

    #[tokio::test]
    async fn a_backend_that_restarts_is_an_error_while_down_then_served_again() {
        let (addr, stop) = stoppable("127.0.0.1:0".parse().expect("addr")).await;
        let upstream = Upstream::new(&format!("http://{addr}")).expect("url");
        assert_eq!(get(&upstream, "/small").await, (200, "small".into()));
        assert_eq!(upstream.idle_count(), 1);
        // Down: the pooled connection is dead and nothing listens.
        let _ = stop.send(());
        tokio::time::sleep(Duration::from_millis(700)).await;
        let request = Request::get("/small").body(Body::empty()).expect("request");
        let down = tokio::time::timeout(Duration::from_secs(10), upstream.send(request))
            .await
            .expect("an answer, not a hang");
        assert!(down.is_err(), "no backend, no answer");
        assert_eq!(upstream.idle_count(), 0);
        // Back on the same address: served again.
        let (_, _stop) = stoppable(addr).await;
        assert_eq!(get(&upstream, "/small").await, (200, "small".into()));
    }

    #[tokio::test]
    async fn a_backend_that_is_not_there_is_an_error_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let upstream = Upstream::new(&format!("http://{addr}")).expect("url");
        let request = Request::get("/small").body(Body::empty()).expect("request");
        assert!(matches!(
            upstream.send(request).await,
            Err(UpstreamError::Connect { .. })
        ));
        assert!(Upstream::new("https://example.com").is_err());
        assert!(Upstream::new("http://").is_err());
    }
}
