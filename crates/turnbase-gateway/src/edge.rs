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
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use turnbase_core::http::{
    HttpMetrics, error_response, inject_trace_context, normalize_errors, observe,
    rate_limited_response, unauthorized_response,
};
use turnbase_core::limiter::RateLimiter;
use turnbase_core::readiness::Readiness;

use crate::backend::{HttpClient, ResolveError, Resolver, Session};
use crate::config::{EdgeLimits, GatewayConfig};
use crate::envelope::control;
use crate::hub::{CloseReason, Connection, Hub, Outbound, Refused, Start};
use crate::signing::Signer;

/// Everything the edge's handlers share.
pub struct Edge {
    pub hub: Arc<Hub>,
    pub resolver: Arc<Resolver>,
    pub signer: Arc<Signer>,
    pub readiness: Readiness,
    client: HttpClient,
    backend_url: String,
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
    per_session: RateLimiter<[u8; 32]>,
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
        client: HttpClient,
        readiness: Readiness,
        meter: &Meter,
    ) -> Arc<Edge> {
        Arc::new(Edge {
            hub,
            resolver,
            signer,
            readiness,
            client,
            backend_url: config.backend_url.clone(),
            expose_admin: config.expose_admin,
            web: crate::web::Web::get(),
            cors: config.cors.clone(),
            request_timeout: config.request_timeout,
            limits: config.limits.clone(),
            ticket_ttl: config.ticket_ttl,
            tickets: Mutex::default(),
            per_ip: RateLimiter::new(config.rate_per_ip),
            per_session: RateLimiter::new(config.rate_per_session),
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

/// The router with every layer.
pub fn router(edge: Arc<Edge>, metrics: HttpMetrics, body_limit: usize) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let forwarded = Router::new()
        .route("/api/v1/user/events/ticket", post(ticket))
        .route("/api/v1/events", get(events))
        .route("/api/v1/public/{*rest}", any(forward))
        .route("/api/v1/user/{*rest}", any(forward))
        .route("/api/v1/admin/{*rest}", any(forward))
        .route("/api/v1/internal/{*rest}", any(forward))
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
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(
            request_id,
            turnbase_core::http::RequestIds,
        ))
        .layer(axum::middleware::from_fn(normalize_errors))
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
    if let Err(wait) = edge.per_ip.check(peer.ip()) {
        return rate_limited_response(wait);
    }
    if request.uri().path().starts_with("/api/v1/user/")
        && let Some(token) = bearer(request.headers())
        && let Err(wait) = edge
            .per_session
            .check(Sha256::digest(token.as_bytes()).into())
    {
        return rate_limited_response(wait);
    }
    next.run(request).await
}

/// Headers that belong to one connection and are not forwarded.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

async fn forward(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path();
    let admin = path.starts_with("/api/v1/admin/");
    if !edge.expose_admin && (admin || path.starts_with("/api/v1/internal/")) {
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
        match edge.resolver.resolve(token).await {
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
    let (parts, body) = request.into_parts();
    let target = format!(
        "{}{}",
        edge.backend_url,
        parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str())
    );
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(&target);
    let mut forwarded_for = None;
    if let Some(headers) = builder.headers_mut() {
        for (name, value) in &parts.headers {
            if hop_by_hop(name) {
                continue;
            }
            if name == "x-forwarded-for" {
                forwarded_for = value.to_str().ok().map(str::to_string);
                continue;
            }
            headers.append(name, value.clone());
        }
        let chain = match forwarded_for {
            Some(earlier) => format!("{earlier}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", value);
        }
        inject_trace_context(headers);
    }
    let Ok(outgoing) = builder.body(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "cannot forward this request",
        );
    };
    let result = tokio::time::timeout(edge.request_timeout, edge.client.request(outgoing)).await;
    let status_label;
    let response = match result {
        Ok(Ok(response)) => {
            status_label = response.status().as_u16().to_string();
            let (mut parts, incoming) = response.into_parts();
            // With CORS at the edge, the backend's own CORS headers would
            // double the edge's, which browsers refuse.
            let edge_cors = edge.cors.is_enabled();
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
            Response::from_parts(parts, Body::new(incoming))
        }
        Ok(Err(err)) => {
            // A body over the limit surfaces here, as the client's error:
            // deep in the chain when it was found out while streaming (a
            // chunked body), so the whole chain is searched.
            if over_body_limit(&err) {
                status_label = "413".into();
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is too large",
                )
            } else {
                status_label = "502".into();
                tracing::warn!(error = %err, "the backend did not answer");
                error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the backend did not answer; try again",
                )
            }
        }
        Err(_) => {
            status_label = "504".into();
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the backend took too long to answer",
            )
        }
    };
    if let Some(h) = &edge.edge_duration {
        h.record(
            started.elapsed().as_secs_f64(),
            &[KeyValue::new("status", status_label)],
        );
    }
    response
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
