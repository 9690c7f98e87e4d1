//! The public edge's HTTP side: REST forwarding to the backend, live
//! events over WebSocket and SSE, event tickets, the signing keys, probes,
//! and the per-address and per-session rate limits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures::{SinkExt, Stream};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use rand::Rng as _;
use serde::Deserialize;
use tokio::time::Instant;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use turnbase_core::http::{
    HttpMetrics, error_response, inject_trace_context, normalize_errors, normalized, observe,
    observed, rate_limited_response, unauthorized_response,
};
use turnbase_core::limiter::RateLimiter;
use turnbase_core::readiness::Readiness;

use crate::backend::{ResolveError, Resolver, Session};
use crate::config::{EdgeLimits, GatewayConfig};
use crate::envelope::control;
use crate::hub::{CloseReason, Connection, Hub, Outbound, Refused, Start};
use crate::signing::Signer;
use crate::upstream::Upstream;

/// Everything the edge's handlers share.
pub struct Edge {
    pub hub: Arc<Hub>,
    pub resolver: Arc<Resolver>,
    pub signer: Arc<Signer>,
    pub readiness: Readiness,
    upstream: Arc<Upstream>,
    expose_admin: bool,
    /// The browser client.
    web: Arc<crate::web::Web>,
    /// The edge answers CORS itself (and drops the backend's headers).
    cors: turnbase_core::cors::CorsOrigins,
    request_timeout: Duration,
    limits: EdgeLimits,
    ticket_ttl: Duration,
    tickets: Mutex<HashMap<String, Ticket>>,
    per_ip: RateLimiter<IpAddr>,
    per_session: RateLimiter<u64>,
    /// Keys the per-session limits by a keyed hash of the token (SipHash
    /// with this process's random keys: no token is kept, and nobody can
    /// pick a token that shares another's bucket).
    token_keys: std::hash::RandomState,
    /// Set when the gateway starts stopping: new event connections are refused.
    closing: AtomicBool,
    edge_duration: Option<Histogram<f64>>,
}

impl Edge {
    pub fn new(
        config: &GatewayConfig,
        hub: Arc<Hub>,
        resolver: Arc<Resolver>,
        signer: Arc<Signer>,
        upstream: Arc<Upstream>,
        readiness: Readiness,
        meter: &Meter,
    ) -> Arc<Edge> {
        Arc::new(Edge {
            hub,
            resolver,
            signer,
            readiness,
            upstream,
            expose_admin: config.expose_admin,
            web: crate::web::Web::get(),
            cors: config.cors.clone(),
            request_timeout: config.request_timeout,
            limits: config.limits.clone(),
            ticket_ttl: config.ticket_ttl,
            tickets: Mutex::default(),
            per_ip: RateLimiter::new(config.rate_per_ip),
            per_session: RateLimiter::new(config.rate_per_session),
            token_keys: std::hash::RandomState::new(),
            closing: AtomicBool::new(false),
            edge_duration: Some(meter).map(|m| {
                m.f64_histogram("edge_request_duration")
                    .with_unit("s")
                    .with_description("Forwarded requests, from arrival to the backend's answer")
                    .build()
            }),
        })
    }

    /// Refuses new event connections and closes the open ones, each told
    /// to reconnect.
    pub fn begin_closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.hub.close_all();
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_response(status, code.to_string(), message)
}

fn resolve_error(err: ResolveError) -> Response {
    match err {
        ResolveError::Unauthorized => {
            unauthorized_response("missing, unknown or revoked session token")
        }
        ResolveError::Unavailable(why) => {
            tracing::warn!(%why, "cannot resolve a session");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "sessions cannot be checked right now; try again",
            )
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let text = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The forwarded API: each prefix with the router's pattern for it (also
/// the direct path's metrics label).
const FORWARDED: [(&str, &str); 4] = [
    ("/api/v1/public/", "/api/v1/public/{*rest}"),
    ("/api/v1/user/", "/api/v1/user/{*rest}"),
    ("/api/v1/admin/", "/api/v1/admin/{*rest}"),
    ("/api/v1/internal/", "/api/v1/internal/{*rest}"),
];

/// The one route under a forwarded prefix that the edge answers itself.
const TICKET_ROUTE: &str = "/api/v1/user/events/ticket";

/// The router with every layer.
pub fn router(edge: Arc<Edge>, metrics: HttpMetrics, body_limit: usize) -> Router {
    let forwarded = FORWARDED
        .iter()
        .fold(Router::new(), |r, (_, pattern)| {
            r.route(pattern, any(forward))
        })
        .route(TICKET_ROUTE, post(ticket))
        .route("/api/v1/events", get(events))
        .route("/api/v1/openapi.json", get(forward))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(axum::middleware::from_fn_with_state(edge.clone(), limit));
    let web = Router::new()
        .route("/", get(player_page))
        .route("/admin", get(admin_redirect))
        .route("/admin/", get(admin_page))
        .route("/assets/{bundle}/{*file}", get(asset));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/turnbase-signing-keys", get(keys))
        .merge(forwarded)
        .merge(web)
        .fallback(not_found)
        // Without CORS origins the layer is left out, not run as a no-op on
        // every request.
        .layer(tower::util::option_layer(
            edge.cors
                .is_enabled()
                .then(|| turnbase_core::cors::layer(&edge.cors)),
        ))
        .with_state(edge)
        .layer(axum::middleware::from_fn_with_state(metrics, observe))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(
            REQUEST_ID,
            turnbase_core::http::RequestIds,
        ))
        .layer(axum::middleware::from_fn(normalize_errors))
}

/// The edge's HTTP service: the [`router`], except that calls of the
/// forwarded API (`/api/v1/{public,user,admin,internal}/…`) take a direct
/// path through the same steps in the same order — error bodies made JSON,
/// the request id, the request's span and metrics, the rate limits, the
/// body limit, then [`Edge::forward`] — without the router's layers, each
/// of which boxes the request's future and clones a boxed service per
/// call (in the gateway benchmark those were over a third of the edge's
/// instructions per request, and half its allocations). With CORS
/// answered at the edge, every request goes through the router.
#[derive(Clone)]
pub struct EdgeService {
    edge: Arc<Edge>,
    metrics: HttpMetrics,
    body_limit: usize,
    router: Router,
}

impl EdgeService {
    pub fn new(edge: Arc<Edge>, metrics: HttpMetrics, body_limit: usize) -> EdgeService {
        EdgeService {
            router: router(edge.clone(), metrics.clone(), body_limit),
            edge,
            metrics,
            body_limit,
        }
    }
}

/// The route pattern of a call the direct path takes (the router's own
/// pattern for it, as the metrics label), or `None` for the router.
pub fn forwarded_route(path: &str) -> Option<&'static str> {
    if path == TICKET_ROUTE {
        return None;
    }
    FORWARDED.iter().find_map(|(prefix, route)| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty())
            .then_some(*route)
    })
}

impl tower::Service<http::Request<hyper::body::Incoming>> for EdgeService {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let direct = if self.edge.cors.is_enabled() {
            None
        } else {
            forwarded_route(request.uri().path())
        };
        match direct {
            Some(route) => Box::pin(forward_directly(
                self.edge.clone(),
                self.metrics.clone(),
                self.body_limit,
                route,
                request,
            )),
            None => {
                use tower::ServiceExt as _;
                Box::pin(self.router.clone().oneshot(request))
            }
        }
    }
}

/// The router's layers for one forwarded call, in their order.
async fn forward_directly(
    edge: Arc<Edge>,
    metrics: HttpMetrics,
    body_limit: usize,
    route: &'static str,
    request: http::Request<hyper::body::Incoming>,
) -> Result<Response, Infallible> {
    let (mut parts, incoming) = request.into_parts();
    let id = match parts.headers.get(REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let id = turnbase_core::http::new_request_id();
            parts.headers.insert(REQUEST_ID, id.clone());
            id
        }
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A body that is known to be empty needs no limit (nor a box).
    let body = if hyper::body::Body::is_end_stream(&incoming) {
        Body::empty()
    } else {
        Body::new(http_body_util::Limited::new(incoming, body_limit))
    };
    let request = Request::from_parts(parts, body);
    let response = observed(&metrics, route.into(), request, |request| async move {
        if let Some(refused) = edge.over_limit(peer.ip(), &request) {
            return refused;
        }
        if declared.is_some_and(|n| n > body_limit as u64) {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "length limit exceeded",
            );
        }
        edge.forward(peer, request).await
    })
    .await;
    let mut response = normalized(response).await;
    response.headers_mut().entry(REQUEST_ID).or_insert(id);
    Ok(response)
}

async fn player_page(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    edge.web.player_page(&request)
}

/// The console is served only where the edge forwards the admin API.
async fn admin_page(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    if !edge.expose_admin {
        return not_found(request).await;
    }
    edge.web.admin_page(&request)
}

async fn admin_redirect(State(edge): State<Arc<Edge>>, request: Request) -> Response {
    if !edge.expose_admin {
        return not_found(request).await;
    }
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("/admin/"))],
    )
        .into_response()
}

async fn asset(
    State(edge): State<Arc<Edge>>,
    path: axum::extract::Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    edge.web.asset(path, &headers)
}

async fn not_found(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(edge): State<Arc<Edge>>) -> Response {
    let not_ready = edge.readiness.not_ready();
    if not_ready.is_empty() {
        return Json(serde_json::json!({ "status": "ready" })).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({
            "error": { "code": "not_ready", "message": format!("not ready: {}", not_ready.join(", ")) },
            "not_ready": not_ready,
        })),
    )
        .into_response()
}

async fn keys(State(edge): State<Arc<Edge>>) -> Response {
    let mut r = Json(edge.signer.jwks()).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// Per client address on everything forwarded or connected; per session
/// token on `/api/v1/user/*`.
async fn limit(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(refused) = edge.over_limit(peer.ip(), &request) {
        return refused;
    }
    next.run(request).await
}

impl Edge {
    /// The 429 answer when `request` is over its address's or session's
    /// rate.
    fn over_limit(&self, ip: IpAddr, request: &Request) -> Option<Response> {
        if let Err(wait) = self.per_ip.check(ip) {
            return Some(rate_limited_response(wait));
        }
        if request.uri().path().starts_with("/api/v1/user/")
            && let Some(token) = bearer(request.headers())
            && let Err(wait) = self
                .per_session
                .check(std::hash::BuildHasher::hash_one(&self.token_keys, token))
        {
            return Some(rate_limited_response(wait));
        }
        None
    }
}

/// Headers that belong to one connection and are not forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// `ip` as text, written into `buf` (IPv4 without the formatting
/// machinery: this runs for every forwarded request).
fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write as _;
    let mut len = 0;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    buf[len] = b'0' + d;
                    len += 1;
                }
            }
        }
        IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{v6}");
            len = usize::try_from(cursor.position()).unwrap_or(0);
        }
    }
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

async fn forward(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    edge.forward(peer, request).await
}

impl Edge {
    /// Sends `request` on to the backend and relays its answer.
    async fn forward(&self, peer: SocketAddr, request: Request) -> Response {
        let path = request.uri().path();
        let admin = path.starts_with("/api/v1/admin/");
        if !self.expose_admin && (admin || path.starts_with("/api/v1/internal/")) {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {} {path}", request.method()),
            );
        }
        // The admin API passes the edge only with an admin's session: anyone
        // else is answered here, and the backend never sees the call.
        if admin {
            let Some(token) = bearer(request.headers()) else {
                return unauthorized_response("the admin API needs an admin's session token");
            };
            match self.resolver.resolve(token).await {
                Ok(session) if session.role == "admin" => {}
                Ok(_) => {
                    return error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "the admin API is for accounts with the admin role",
                    );
                }
                Err(e) => return resolve_error(e),
            }
        }
        let started = Instant::now();
        // The client's head is reused in place: its connection's own
        // headers go, the forwarding chain gets the client's address.
        let (mut parts, body) = request.into_parts();
        parts.version = http::Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        // Every request names its host; the other connection headers are
        // rare, so the map is searched for them only when one is there.
        parts.headers.remove(header::HOST);
        if parts.headers.keys().any(hop_by_hop) {
            for name in &HOP_BY_HOP {
                parts.headers.remove(name);
            }
        }
        let x_forwarded_for = HeaderName::from_static("x-forwarded-for");
        let earlier = parts
            .headers
            .get_all(&x_forwarded_for)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok());
        let mut text = [0u8; 64];
        let ip = ip_text(peer.ip(), &mut text);
        let chain = match earlier {
            Some(earlier) => HeaderValue::from_str(&format!("{earlier}, {ip}")),
            None => HeaderValue::from_str(ip),
        };
        match chain {
            Ok(value) => {
                parts.headers.insert(x_forwarded_for, value);
            }
            Err(_) => {
                parts.headers.remove(x_forwarded_for);
            }
        }
        inject_trace_context(&mut parts.headers);
        let outgoing = http::Request::from_parts(parts, body);
        let result = tokio::time::timeout(self.request_timeout, self.upstream.send(outgoing)).await;
        let status_label;
        let response = match result {
            Ok(Ok(response)) => {
                status_label = response.status().as_u16();
                let (mut parts, body) = response.into_parts();
                // With CORS at the edge, the backend's own CORS headers would
                // double the edge's, which browsers refuse.
                let edge_cors = self.cors.is_enabled();
                let names: Vec<HeaderName> = parts
                    .headers
                    .keys()
                    .filter(|n| {
                        hop_by_hop(n) || (edge_cors && n.as_str().starts_with("access-control-"))
                    })
                    .cloned()
                    .collect();
                for name in names {
                    parts.headers.remove(name);
                }
                Response::from_parts(parts, body)
            }
            Ok(Err(err)) => {
                // A body over the limit surfaces here, as the client's error:
                // deep in the chain when it was found out while streaming (a
                // chunked body), so the whole chain is searched.
                if over_body_limit(&err) {
                    status_label = 413;
                    error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is too large",
                    )
                } else {
                    status_label = 502;
                    tracing::warn!(error = %err, "the backend did not answer");
                    error(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the backend did not answer; try again",
                    )
                }
            }
            Err(_) => {
                status_label = 504;
                error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    "the backend took too long to answer",
                )
            }
        };
        if let Some(h) = &self.edge_duration {
            h.record(
                started.elapsed().as_secs_f64(),
                &[KeyValue::new("status", i64::from(status_label))],
            );
        }
        response
    }
}

/// Whether `err`, or anything that caused it, is the body limit's.
fn over_body_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() || e.to_string().contains("length limit") {
            return true;
        }
        next = e.source();
    }
    false
}

/// What a ticket stands for: the session, and the token it was issued to
/// (kept in memory only, to check the session again later).
struct Ticket {
    session: Session,
    token: String,
    at: Instant,
}

/// A one-use ticket that opens `GET /api/v1/events?ticket=…` (browsers
/// cannot set headers on WebSocket or EventSource requests, and a session
/// token must never travel in a URL).
async fn ticket(State(edge): State<Arc<Edge>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized_response("missing Authorization: Bearer header");
    };
    let session = match edge.resolver.resolve(token).await {
        Ok(s) => s,
        Err(e) => return resolve_error(e),
    };
    let bytes: [u8; 24] = rand::rng().random();
    let ticket: String = std::iter::once("tbt_".to_string())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    {
        let mut tickets = edge.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = edge.ticket_ttl;
        tickets.retain(|_, t| t.at.elapsed() < ttl);
        tickets.insert(
            ticket.clone(),
            Ticket {
                session,
                token: token.to_string(),
                at: Instant::now(),
            },
        );
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "ticket": ticket, "expires_in": edge.ticket_ttl.as_secs() })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    ticket: Option<String>,
    resume: Option<String>,
}

/// Live events: a WebSocket upgrade, or SSE with `Accept: text/event-stream`.
async fn events(
    State(edge): State<Arc<Edge>>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if edge.closing.load(Ordering::SeqCst) {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this gateway is stopping; reconnect",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let (session, token) = if let Some(token) = bearer(&headers) {
        match edge.resolver.resolve(token).await {
            Ok(s) => (s, token.to_string()),
            Err(e) => return resolve_error(e),
        }
    } else if let Some(ticket) = &query.ticket {
        let found = edge
            .tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ticket);
        match found {
            Some(t) if t.at.elapsed() < edge.ticket_ttl => (t.session, t.token),
            _ => return unauthorized_response("unknown, used or expired ticket"),
        }
    } else {
        return unauthorized_response(
            "send Authorization: Bearer <token>, or ?ticket= from POST /api/v1/user/events/ticket",
        );
    };
    // An id that is not valid text is still an id the client asks for: it
    // matches nothing, so the client gets a resync, not a fresh stream.
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let resume = query.resume.clone().or(last_event_id);
    if upgrade.is_err()
        && !headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "connect with a WebSocket upgrade, or send Accept: text/event-stream",
        );
    }
    // Registered before the answer goes out, so that nothing published
    // after the client hears back is missed, and a stop that began in
    // between still reaches this connection.
    let conn = match edge
        .hub
        .admit(session.account_id, session.session_id, start(resume))
    {
        Ok(conn) => conn,
        Err(Refused::UserLimit) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!(
                    "this account already holds {} live-event connections; close one first",
                    edge.limits.max_connections_per_user
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        Err(Refused::Full) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway_full",
                "this gateway holds as many live-event connections as it may; try again or connect elsewhere",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
    };
    if edge.closing.load(Ordering::SeqCst) {
        conn.state.close(CloseReason::ShuttingDown);
    }
    // The session is checked with the backend itself, after registering:
    // a revocation that the backend has answered has taken effect there,
    // though its push event may not have reached this gateway yet (which
    // left a few milliseconds in which a cached token or an earlier
    // ticket opened a connection, and got its replay). One that comes
    // later reaches the registered connection and closes it.
    if let Err(e) = edge.resolver.ask(&token).await {
        return resolve_error(e);
    }
    if let Ok(ws) = upgrade {
        let limits = edge.limits.clone();
        return ws
            .max_message_size(limits.max_message)
            .max_frame_size(limits.max_message)
            // Small buffers: most connections are idle most of the time.
            // Writes are batched by the connection loop and flushed at the
            // end of each batch.
            .read_buffer_size(1024)
            .write_buffer_size(16 * 1024)
            .on_upgrade(move |socket| websocket(edge, socket, session, token, conn));
    }
    sse(edge, conn, token).into_response()
}

/// The most queued messages one write carries.
const WRITE_BATCH: usize = 64;

fn start(resume: Option<String>) -> Start {
    match resume.filter(|r| !r.is_empty()) {
        Some(id) => Start::Resume(id),
        None => Start::Fresh,
    }
}

/// After a resync the gateway checks the session again: events that would
/// have revoked it may be among those lost. (When events were lost the
/// session cache was cleared first, so this asks the backend, once per
/// session however many connections it has.) The check runs beside the
/// connection, so delivery never waits on the backend; a revoked session
/// is closed like any other.
fn revalidate(edge: &Arc<Edge>, token: String, state: Arc<crate::hub::ConnState>) {
    let edge = edge.clone();
    tokio::spawn(async move {
        if matches!(
            edge.resolver.resolve(&token).await,
            Err(ResolveError::Unauthorized)
        ) {
            state.close(CloseReason::Revoked);
        }
    });
}

/// Sends a close frame and waits briefly for the client's answer before
/// the connection is dropped, as the closing handshake asks; dropping at
/// once would make a client that still writes (a pong, say) see a reset
/// instead of the close code.
async fn goodbye(socket: &mut WebSocket, frame: Message) {
    if socket.send(frame).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        loop {
            match socket.recv().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
}

/// How long a closed connection waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
struct ClientMessage {
    r#type: String,
    id: Option<String>,
}

async fn websocket(
    edge: Arc<Edge>,
    mut socket: WebSocket,
    session: Session,
    token: String,
    mut conn: Connection,
) {
    let mut sent_any = false;
    let mut ping = tokio::time::interval(edge.limits.ping_interval);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        // Biased: once the hub has marked the connection (revoked, slow,
        // stopping), that reason is what the client hears, never an idle
        // timeout that a stalled write let run out meanwhile.
        tokio::select! {
            biased;
            reason = conn.state.closed() => {
                goodbye(&mut socket, close(reason.code(), reason.text())).await;
                break;
            }
            message = conn.rx.recv() => {
                let Some(first) = message else { break };
                // Whatever else is queued goes out in the same write.
                let mut next = Some(first);
                let (mut batch, mut resync, mut failed) = (0, false, false);
                while let Some(message) = next.take() {
                    conn.sent(&message);
                    let frame = match &message {
                        Outbound::Event(sealed) => sealed.frame.clone(),
                        Outbound::Resync(reason) => {
                            resync = true;
                            control("resync", reason)
                        }
                    };
                    if socket.feed(Message::Text(frame)).await.is_err() {
                        failed = true;
                        break;
                    }
                    batch += 1;
                    if batch < WRITE_BATCH {
                        next = conn.rx.try_recv().ok();
                    }
                }
                if failed || SinkExt::flush(&mut socket).await.is_err() {
                    break;
                }
                sent_any = true;
                if resync {
                    revalidate(&edge, token.clone(), conn.state.clone());
                }
            }
            incoming = socket.recv() => {
                last_heard = Instant::now();
                match incoming {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => {
                        let parsed: Option<ClientMessage> = serde_json::from_str(&text).ok();
                        match parsed {
                            Some(m) if m.r#type == "resume" && !sent_any => {
                                // Nothing was written yet: start over from the
                                // id; whatever was queued is in the window too.
                                drop(conn);
                                conn = edge.hub.register(
                                    session.account_id,
                                    session.session_id,
                                    start(m.id),
                                );
                            }
                            Some(m) if m.r#type == "resume" => {
                                let _ = socket
                                    .send(Message::Text(control("error", "resume must come before any event; reconnect with ?resume=")))
                                    .await;
                            }
                            _ => {
                                let _ = socket
                                    .send(Message::Text(control("error", "unknown message; clients may only send {\"type\":\"resume\",\"id\":…}")))
                                    .await;
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        // Most likely a message over the size limit.
                        let too_big = err.to_string().to_lowercase().contains("too long")
                            || err.to_string().to_lowercase().contains("too big")
                            || err.to_string().to_lowercase().contains("size");
                        if too_big {
                            let _ = socket.send(close(1009, "message too big")).await;
                        }
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if let Some(reason) = conn.state.reason() {
                    goodbye(&mut socket, close(reason.code(), reason.text())).await;
                    break;
                }
                if last_heard.elapsed() > edge.limits.idle_timeout {
                    goodbye(&mut socket, close(4000, "idle timeout")).await;
                    break;
                }
                if socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    break;
                }
            }
        }
    }
}

fn sse(
    edge: Arc<Edge>,
    conn: Connection,
    token: String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let keep_alive = KeepAlive::new().interval(edge.limits.ping_interval);
    struct SseState {
        edge: Arc<Edge>,
        conn: Connection,
        token: String,
        done: bool,
    }
    let state = SseState {
        edge,
        conn,
        token,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let event = tokio::select! {
            reason = s.conn.state.closed() => {
                s.done = true;
                let mut e = Event::default()
                    .event(reason.sse_event())
                    .data(serde_json::json!({ "type": reason.sse_event(), "reason": reason.text() }).to_string());
                if reason != CloseReason::Revoked {
                    e = e.retry(Duration::from_secs(1));
                }
                e
            }
            message = s.conn.rx.recv() => {
                let message = message?;
                s.conn.sent(&message);
                match message {
                    Outbound::Event(sealed) => Event::default().id(&*sealed.id).event("event").data(sealed.frame.as_str()),
                    Outbound::Resync(reason) => {
                        revalidate(&s.edge, s.token.clone(), s.conn.state.clone());
                        Event::default().event("resync").data(control("resync", reason).as_str())
                    }
                }
            }
        };
        Some((Ok(event), s))
    });
    Sse::new(stream).keep_alive(keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        let samples: [IpAddr; 7] = [
            [0, 0, 0, 0].into(),
            [127, 0, 0, 1].into(),
            [10, 9, 99, 100].into(),
            [255, 255, 255, 255].into(),
            [192, 168, 1, 20].into(),
            "::1".parse().expect("v6"),
            "2001:db8::8a2e:370:7334".parse().expect("v6"),
        ];
        for ip in samples {
            let mut buf = [0u8; 64];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
        // Every octet value, in every position.
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, 255 - n, n / 3, n.wrapping_mul(7)]);
            let mut buf = [0u8; 64];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }

    #[test]
    fn the_direct_path_takes_exactly_the_routers_forwarded_routes() {
        for (path, route) in [
            ("/api/v1/user/me", Some("/api/v1/user/{*rest}")),
            ("/api/v1/user/games/1/orders", Some("/api/v1/user/{*rest}")),
            ("/api/v1/public/auth/guest", Some("/api/v1/public/{*rest}")),
            ("/api/v1/admin/games", Some("/api/v1/admin/{*rest}")),
            (
                "/api/v1/internal/sessions/resolve",
                Some("/api/v1/internal/{*rest}"),
            ),
            // Answered by the edge, or by no route at all: the router's.
            ("/api/v1/user/events/ticket", None),
            ("/api/v1/user/", None),
            ("/api/v1/user", None),
            ("/api/v1/events", None),
            ("/api/v1/openapi.json", None),
            ("/healthz", None),
            ("/", None),
        ] {
            assert_eq!(forwarded_route(path), route, "{path}");
        }
    }
}
