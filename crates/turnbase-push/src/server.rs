//! The gRPC side of the push service: `turnbase.push.v1.Push/SubscribePush`.
//! Only gateways may subscribe: a stream carries every user's events, so a
//! request must present the backend's internal secret as
//! `authorization: Bearer <secret>` (DESIGN §8), or it ends with
//! `UNAUTHENTICATED` before anything is sent.
//!
//! Written by hand rather than generated, because its responses are frames
//! of bytes assembled from events encoded once (see `wire`), which the
//! generated server, encoding each message itself, cannot send.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use prost::Message as _;
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Status, body::Body};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::proto::GatewaySubscribeRequest;
use crate::service::{PushService, SubscribeError, Subscription, SubscriptionEnd};
use crate::wire::Frame;

const SUBSCRIBE_PATH: &str = "/turnbase.push.v1.Push/SubscribePush";

/// How long the push listener keeps connections that do nothing useful.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// A connection that has not made an authorized request within this
    /// is closed, so nobody can hold connections open without the secret.
    pub handshake: Duration,
    /// HTTP/2 ping interval; a peer that does not answer within as long
    /// again is gone (crashed host, partition) and its stream is dropped.
    pub keepalive: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            handshake: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
        }
    }
}

/// Serves `SubscribePush` on `listener` until `shutdown` resolves, then
/// closes the service (every stream delivers what was published and ends)
/// and waits for the connections to finish.
pub async fn serve(
    service: PushService,
    listener: tokio::net::TcpListener,
    secret: String,
    liveness: Liveness,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| accepted.map(|io| Gated::new(io, liveness.handshake)));
    let closing = service.clone();
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(liveness.keepalive))
        .http2_keepalive_timeout(Some(liveness.keepalive))
        .serve_with_incoming_shutdown(PushServer::new(service, secret), incoming, async move {
            shutdown.await;
            closing.close();
        })
        .await
}

/// A connection that must make an authorized request before its deadline:
/// until then, every read also watches the clock, and once it has passed
/// the read fails and the connection is closed.
struct Gated {
    io: tokio::net::TcpStream,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    passed: Arc<AtomicBool>,
}

/// What the service learns of a [`Gated`] connection (request extensions).
#[derive(Clone)]
struct GatedInfo {
    tcp: TcpConnectInfo,
    passed: Arc<AtomicBool>,
}

impl Gated {
    fn new(io: tokio::net::TcpStream, within: Duration) -> Self {
        Gated {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            passed: Arc::default(),
        }
    }
}

impl Connected for Gated {
    type ConnectInfo = GatedInfo;

    fn connect_info(&self) -> GatedInfo {
        GatedInfo {
            tcp: self.io.connect_info(),
            passed: self.passed.clone(),
        }
    }
}

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.passed.load(Ordering::Acquire) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no authorized request in time",
                )));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The tower service tonic runs for every request.
#[derive(Clone)]
pub struct PushServer {
    service: PushService,
    /// `Bearer <secret>`, as the `authorization` metadata must read.
    expected: std::sync::Arc<[u8]>,
}

impl PushServer {
    pub fn new(service: PushService, secret: String) -> Self {
        Self {
            service,
            expected: format!("Bearer {secret}").into_bytes().into(),
        }
    }

    /// Whether the request carries the internal secret (compared in
    /// constant time).
    fn authorized(&self, request: &http::Request<Body>) -> bool {
        request
            .headers()
            .get(http::header::AUTHORIZATION)
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(&self.expected)))
    }
}

/// The `authorization` metadata a gateway sends with its subscription.
pub fn authorization(
    secret: &str,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
    format!("Bearer {secret}")
        .parse()
        .map_err(|_| "the internal secret must be printable ASCII".to_string())
}

impl tonic::server::NamedService for PushServer {
    const NAME: &'static str = "turnbase.push.v1.Push";
}

impl tower::Service<http::Request<Body>> for PushServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // An authorized request lifts its connection's deadline; the
        // TCP details go where tonic's `remote_addr` looks for them.
        let gated = request.extensions_mut().remove::<GatedInfo>();
        if let Some(info) = gated {
            if self.authorized(&request) {
                info.passed.store(true, Ordering::Release);
            }
            request.extensions_mut().insert(info.tcp);
        }
        if request.uri().path() != SUBSCRIBE_PATH {
            let status = Status::unimplemented(format!("no method {}", request.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        if !self.authorized(&request) {
            let status = Status::unauthenticated(
                "subscribing needs authorization: Bearer <the backend's internal secret>",
            );
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let handler = SubscribeHandler(self.service.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(FrameCodec);
            Ok(grpc.server_streaming(handler, request).await)
        })
    }
}

struct SubscribeHandler(PushService);

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

impl tonic::server::ServerStreamingService<GatewaySubscribeRequest> for SubscribeHandler {
    type Response = Frame;
    type ResponseStream = FrameStream;
    type Future = std::future::Ready<Result<tonic::Response<FrameStream>, Status>>;

    fn call(&mut self, request: tonic::Request<GatewaySubscribeRequest>) -> Self::Future {
        let remote = request.remote_addr();
        // Continue the caller's trace when it sent a W3C traceparent.
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&MetadataExtractor(request.metadata()))
        });
        let request = request.into_inner();
        let span = tracing::info_span!(
            "push_subscription",
            gateway_client_id = %request.gateway_client_id,
            remote = ?remote,
        );
        let _ = span.set_parent(parent);
        let subscription = span.in_scope(|| {
            self.0
                .subscribe(&request.gateway_client_id, &request.cursor)
        });
        std::future::ready(match subscription {
            Ok(subscription) => Ok(tonic::Response::new(frames(subscription, span))),
            Err(SubscribeError::InvalidClientId) => Err(Status::invalid_argument(
                SubscribeError::InvalidClientId.to_string(),
            )),
            Err(SubscribeError::Closed) => Err(Status::unavailable("the backend is stopping")),
        })
    }
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Turns a subscription into the response stream; the stream ends with the
/// status that says why.
fn frames(subscription: Subscription, span: tracing::Span) -> FrameStream {
    let stream = futures::stream::unfold(Some(subscription), move |state| {
        let span = span.clone();
        async move {
            let mut subscription = state?;
            match subscription.next().instrument(span).await {
                Ok(frame) => Some((Ok(frame), Some(subscription))),
                Err(SubscriptionEnd::Replaced) => Some((
                    Err(Status::aborted(
                        "replaced: a newer subscription with the same gateway_client_id took over",
                    )),
                    None,
                )),
                Err(SubscriptionEnd::Closed) => Some((
                    Err(Status::unavailable("the backend is stopping; reconnect")),
                    None,
                )),
                Err(SubscriptionEnd::InvalidationLost) => Some((
                    Err(Status::data_loss(
                        "session invalidations were lost while this subscriber lagged; \
                         revalidate sessions and resubscribe",
                    )),
                    None,
                )),
            }
        }
    });
    Box::pin(stream)
}

/// Encodes frames as the bytes they already are; decodes requests with prost.
#[derive(Debug, Clone, Copy, Default)]
struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Frame;
    type Decode = GatewaySubscribeRequest;
    type Encoder = FrameCodec;
    type Decoder = FrameCodec;

    fn encoder(&mut self) -> Self::Encoder {
        FrameCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        FrameCodec
    }
}

impl Encoder for FrameCodec {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write_to(dst);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = GatewaySubscribeRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        GatewaySubscribeRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
    }
}
