//! The gateway edge with a real backend on loopback: REST forwarding, live
//! events over real WebSocket and SSE clients, signatures, resume,
//! revocation, slow clients, limits and graceful stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use futures::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use turnbase_backend::config::Profile as BackendProfile;
use turnbase_backend::{App, Config};
use turnbase_core::telemetry::Telemetry;
use turnbase_gateway::{Gateway, GatewayConfig, Profile};
use turnbase_push::{ClientEventInput, JsonPayload};
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(10);
const SECRET: &str = "edge-test-internal-secret-0123456789";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) struct Stack {
    pub(crate) app: Option<App>,
    pub(crate) gateway: Option<Gateway>,
    pub(crate) db: TestDb,
    pub(crate) backend_http: SocketAddr,
    pub(crate) backend_push: SocketAddr,
    pub(crate) edge: String,
    pub(crate) client: reqwest::Client,
}

/// The origin of a browser client on another site.
const BROWSER_ORIGIN: &str = "https://play.example.org";

fn backend_config(db: &TestDb, http: &str, push: &str) -> Config {
    backend_config_with(db, http, push, &[])
}

fn backend_config_with(db: &TestDb, http: &str, push: &str, extra: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("BACKEND_HTTP_ADDR".into(), http.into()),
        ("BACKEND_GRPC_PUSH_ADDR".into(), push.into()),
        ("BACKEND_FRESHNESS_WINDOW".into(), "1m".into()),
        ("BACKEND_MAIL_DELIVERY".into(), "file".into()),
        ("BACKEND_MAIL_POLL_INTERVAL".into(), "50ms".into()),
        ("BACKEND_DATA_DIR".into(), db.dir().display().to_string()),
        ("BACKEND_LOG_LEVEL".into(), "warn".into()),
        ("BACKEND_INTERNAL_TOKEN".into(), SECRET.into()),
        ("BACKEND_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
        (
            "BACKEND_GEOIP_DB".into(),
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../testdata/geo/GeoLite2-Country-Test.mmdb"
            )
            .into(),
        ),
        // Keeps a Prometheus registry, which the gateway's listener serves.
        ("BACKEND_METRICS_ADDR".into(), "127.0.0.1:0".into()),
        // The backend allows every origin on its own; an edge doing CORS
        // drops that and decides by its own list.
        ("BACKEND_HTTP_CORS_ORIGINS".into(), "*".into()),
        // Tests keep pooled connections open: no need to wait for them.
        ("BACKEND_HTTP_DRAIN_GRACE".into(), "0s".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    if let Some(url) = &db.url {
        env.push(("BACKEND_DATABASE_URL".into(), url.clone()));
    }
    let mut config = Config::load(BackendProfile::Backend, env, None).expect("backend config");
    // The reference engines' kinds, as `turnbase` registers them.
    let engines =
        turnbase_lobby::EngineRegistry::from_manifests(&turnbase_engines::manifests(), |m| {
            turnbase_lobby::EngineRun::Binary {
                program: "turnbase-engines".into(),
                args: vec![m.kind.clone()],
            }
        })
        .expect("the reference manifests are valid");
    config.lobby.engines = turnbase_backend::config::EngineSource::Builtin(engines);
    config
}

impl Stack {
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Stack {
        Stack::start_with(&[], extra).await
    }

    /// A stack with extra backend and gateway variables.
    pub(crate) async fn start_with(backend: &[(&str, &str)], extra: &[(&str, &str)]) -> Stack {
        Stack::start_on(DbKind::Sqlite, backend, extra).await
    }

    /// A stack on a database of `kind`.
    pub(crate) async fn start_on(
        kind: DbKind,
        backend: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Stack {
        let db = TestDb::new(kind).await;
        let config = backend_config_with(&db, "127.0.0.1:0", "127.0.0.1:0", backend);
        let telemetry = Telemetry::init(&config.telemetry).expect("telemetry");
        let app = App::start(config, telemetry.clone(), "test")
            .await
            .expect("backend starts");
        let (backend_http, backend_push) = (app.http_addr, app.grpc_push_addr);
        let mut env: Vec<(String, String)> = vec![
            ("GATEWAY_HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("GATEWAY_METRICS_ADDR".into(), "127.0.0.1:0".into()),
            ("GATEWAY_PUSH_RECONNECT_BASE_BACKOFF".into(), "50ms".into()),
            ("GATEWAY_PUSH_RECONNECT_MAX_BACKOFF".into(), "200ms".into()),
            ("GATEWAY_HTTP_DRAIN_GRACE".into(), "0s".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let key: PathBuf = db.dir().join("gateway.key");
        let defaults = [
            ("GATEWAY_BACKEND_URL", format!("http://{backend_http}")),
            ("GATEWAY_GRPC_PUSH_URL", format!("http://{backend_push}")),
            ("GATEWAY_INTERNAL_TOKEN", SECRET.to_string()),
            ("GATEWAY_SIGNING_KEY_FILE", key.display().to_string()),
        ];
        let gw_config =
            GatewayConfig::load(Profile::Up, env, None, &defaults).expect("gateway config");
        let gateway = Gateway::start(
            gw_config,
            telemetry,
            turnbase_gateway::StartOptions::EMBEDDED,
        )
        .await
        .expect("gateway starts");
        let edge = format!("http://{}", gateway.http_addr);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !gateway.readiness.not_ready().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway never subscribed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Stack {
            app: Some(app),
            gateway: Some(gateway),
            db,
            backend_http,
            backend_push,
            edge,
            client: reqwest::Client::new(),
        }
    }

    /// What the gateway's Prometheus listener serves.
    pub(crate) async fn metrics_text(&self) -> String {
        let metrics = self
            .gateway
            .as_ref()
            .and_then(|g| g.metrics_addr)
            .expect("a metrics listener");
        self.client
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub(crate) fn app(&self) -> &App {
        self.app.as_ref().expect("the backend is running")
    }

    pub(crate) async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
        if let Some(a) = self.app.take() {
            a.shutdown().await;
        }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.edge));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, json)
    }

    /// A guest through the gateway: (token, account id, session id).
    pub(crate) async fn guest(&self, name: &str) -> (String, Uuid, Uuid) {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/public/auth/guest",
                None,
                Some(json!({ "display_name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["token"].as_str().expect("token").to_string(),
            body["account"]["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid"),
            body["session"]["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid"),
        )
    }

    /// A second session of the same account, by mailed code.
    pub(crate) async fn sign_in(&self, email: &str) -> (String, Uuid, Uuid) {
        let mail_dir = self.db.dir().join("mail");
        let count = || {
            std::fs::read_dir(&mail_dir)
                .map(|d| {
                    d.flatten()
                        .filter(|e| {
                            let name = e.file_name().to_string_lossy().to_string();
                            name.ends_with(".eml") && !name.starts_with('.')
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        let before = count();
        let (status, _) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/public/auth/email/start",
                None,
                Some(json!({ "email": email })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let code = loop {
            if count() > before {
                let mut files: Vec<_> = std::fs::read_dir(&mail_dir)
                    .expect("mail dir")
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "eml")
                            && !p
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .collect();
                files.sort();
                let text = std::fs::read_to_string(files.last().expect("a mail")).expect("read");
                let at = text.find("sign-in code: ").expect("a code");
                break text[at + 14..at + 20].to_string();
            }
            assert!(tokio::time::Instant::now() < deadline, "no mail");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/public/auth/email/verify",
                None,
                Some(json!({ "email": email, "code": code })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["token"].as_str().expect("token").to_string(),
            body["account"]["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid"),
            body["session"]["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid"),
        )
    }

    pub(crate) fn publish(&self, user: Uuid, session: Option<Uuid>, n: u64) {
        self.app()
            .push
            .publish_client_event(ClientEventInput {
                user_id: user,
                device_session_id: session,
                kind: "game.turn".into(),
                payload: JsonPayload::from_value(&serde_json::json!({ "n": n })),
                event_id: format!("e{n}"),
                request_id: String::new(),
                trace_id: String::new(),
            })
            .expect("published");
    }

    pub(crate) async fn ws(&self, token: &str, query: &str) -> Ws {
        match self.try_ws(query, Some(token)).await {
            Ok(ws) => ws,
            Err(refused) => panic!("the WebSocket was refused: {refused:?}"),
        }
    }

    /// Opens a live-event WebSocket (with a bearer token when given), or
    /// returns the status and JSON body of the refusal.
    pub(crate) async fn try_ws(
        &self,
        query: &str,
        token: Option<&str>,
    ) -> Result<Ws, (u16, Value)> {
        let url = format!(
            "{}/api/v1/events{query}",
            self.edge.replacen("http://", "ws://", 1)
        );
        let mut request = url.into_client_request().expect("request");
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err((
                r.status().as_u16(),
                r.body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null),
            )),
            Err(other) => panic!("{other}"),
        }
    }
}

/// The next text message of a WebSocket, as JSON.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message in time")
            .expect("the socket stays open")
            .expect("no error");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Reads until the socket closes; returns the close code.
async fn close_code(ws: &mut Ws, within: Duration) -> u16 {
    loop {
        let message = tokio::time::timeout(within, ws.next())
            .await
            .expect("closed in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) | None => return 1005,
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("socket error before close: {err}"),
        }
    }
}

fn n_of(frame: &Value) -> u64 {
    let envelope: Value =
        serde_json::from_str(frame["envelope"].as_str().expect("envelope string")).expect("JSON");
    envelope["payload"]["n"].as_u64().expect("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_only_their_user_and_session_with_a_valid_signature() {
    let s = Stack::start(&[]).await;
    let (a1, user_a, session_a1) = s.sign_in("ann@example.org").await;
    let (a2, _, _) = s.sign_in("ann@example.org").await;
    let (b, user_b, _) = s.guest("Bo").await;
    let mut ws_a1 = s.ws(&a1, "").await;
    let mut ws_a2 = s.ws(&a2, "").await;
    let mut ws_b = s.ws(&b, "").await;
    s.publish(user_a, None, 1);
    s.publish(user_a, Some(session_a1), 2);
    s.publish(user_b, None, 3);
    assert_eq!(n_of(&next_json(&mut ws_a1).await), 1);
    assert_eq!(n_of(&next_json(&mut ws_a1).await), 2);
    assert_eq!(n_of(&next_json(&mut ws_a2).await), 1);
    let third = next_json(&mut ws_b).await;
    assert_eq!(n_of(&third), 3, "user B sees only its own event");
    s.publish(user_a, None, 4);
    assert_eq!(
        n_of(&next_json(&mut ws_a2).await),
        4,
        "session-only event 2 skipped A2"
    );

    // The signature verifies with the published key, and not after a flip.
    let (status, keys) = s
        .send(
            reqwest::Method::GET,
            "/.well-known/turnbase-signing-keys",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let key = &keys["keys"][0];
    assert_eq!(key["kid"], third["kid"]);
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    let x = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().expect("x"))
        .expect("b64");
    let public = VerifyingKey::from_bytes(&x.try_into().expect("32 bytes")).expect("key");
    let sig = URL_SAFE_NO_PAD
        .decode(third["sig"].as_str().expect("sig"))
        .expect("b64");
    let sig = Signature::from_slice(&sig).expect("64 bytes");
    let envelope = third["envelope"]
        .as_str()
        .expect("string")
        .as_bytes()
        .to_vec();
    assert!(public.verify(&envelope, &sig).is_ok());
    let mut flipped = envelope.clone();
    flipped[10] ^= 1;
    assert!(public.verify(&flipped, &sig).is_err());
    let parsed: Value = serde_json::from_slice(&envelope).expect("JSON");
    assert_eq!(parsed["user_id"], user_b.to_string());
    assert_eq!(parsed["kind"], "game.turn");
    assert_eq!(parsed["event_id"], "e3");
    assert_eq!(parsed["id"], third["id"]);
    for field in ["request_id", "trace_id", "published_at"] {
        assert!(parsed[field].is_string(), "{field}: {parsed}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_within_the_window_is_exact_and_past_it_is_a_resync() {
    let s = Stack::start(&[("GATEWAY_RESUME_MAX_EVENTS", "4")]).await;
    let (token, user, _) = s.guest("Resumer").await;
    let mut ws = s.ws(&token, "").await;
    s.publish(user, None, 1);
    s.publish(user, None, 2);
    let _ = next_json(&mut ws).await;
    let second = next_json(&mut ws).await;
    let last = second["id"].as_str().expect("id").to_string();
    drop(ws);
    s.publish(user, None, 3);
    s.publish(user, None, 4);
    let mut back = s.ws(&token, &format!("?resume={last}")).await;
    assert_eq!(n_of(&next_json(&mut back).await), 3);
    assert_eq!(n_of(&next_json(&mut back).await), 4);
    s.publish(user, None, 5);
    assert_eq!(
        n_of(&next_json(&mut back).await),
        5,
        "then live, nothing twice"
    );

    // The resume message works too, as the first thing a client sends.
    let mut by_message = s.ws(&token, "").await;
    by_message
        .send(Message::Text(
            json!({"type": "resume", "id": last}).to_string().into(),
        ))
        .await
        .expect("send");
    let got: Vec<u64> = vec![
        n_of(&next_json(&mut by_message).await),
        n_of(&next_json(&mut by_message).await),
        n_of(&next_json(&mut by_message).await),
    ];
    assert_eq!(got, [3, 4, 5]);

    // SSE with Last-Event-ID.
    let response = s
        .client
        .get(format!("{}/api/v1/events", s.edge))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("last-event-id", &last)
        .send()
        .await
        .expect("SSE");
    assert_eq!(response.status(), StatusCode::OK);
    let text = read_sse(response, 3).await;
    let ns: Vec<u64> = sse_data(&text).iter().map(n_of).collect();
    assert_eq!(ns, [3, 4, 5]);
    for block in text.split("\n\n").filter(|b| b.contains("event: event")) {
        let id = block
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .expect("an id line");
        let data: Value = serde_json::from_str(
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data"),
        )
        .expect("JSON");
        assert_eq!(data["id"], id, "the SSE id is the envelope id");
    }

    // Past the window (4 envelopes): a resync, not a partial replay.
    for n in 6..=10 {
        s.publish(user, None, n);
    }
    // Once a live client has them, the gateway's window has moved on.
    for n in 6..=10 {
        assert_eq!(n_of(&next_json(&mut back).await), n);
    }
    let mut late = s.ws(&token, &format!("?resume={last}")).await;
    let first = next_json(&mut late).await;
    assert_eq!(first["type"], "resync", "{first}");

    // An id that is not even text (non-ASCII bytes in Last-Event-ID) is
    // unknown like any other: a resync, never a silent fresh start.
    let response = s
        .client
        .get(format!("{}/api/v1/events", s.edge))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header(
            "last-event-id",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9-\xff").expect("obs-text"),
        )
        .send()
        .await
        .expect("SSE");
    assert_eq!(response.status(), StatusCode::OK);
    let mut response = response;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("SSE data in time")
            .expect("no error")
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: resync"), "{text}");
    s.stop().await;
}

/// Reads an SSE body until `events` data lines of type event arrived.
async fn read_sse(mut response: reqwest::Response, events: usize) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while text.matches("event: event").count() < events {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("SSE data in time")
            .expect("no error")
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

fn sse_data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|block| block.contains("event: event"))
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_session_closes_its_connections_within_a_second() {
    let s = Stack::start(&[]).await;
    let (a1, _, session_a1) = s.sign_in("cy@example.org").await;
    let (a2, _, _) = s.sign_in("cy@example.org").await;
    let mut ws_a1 = s.ws(&a1, "").await;
    let mut ws_a2 = s.ws(&a2, "").await;
    let sse = s
        .client
        .get(format!("{}/api/v1/events", s.edge))
        .bearer_auth(&a1)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE");
    // A ticket issued before the revocation and used after it.
    let (_, body) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/user/events/ticket",
            Some(&a1),
            None,
        )
        .await;
    let ticket = body["ticket"].as_str().expect("ticket").to_string();
    let (status, _) = s
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/user/sessions/{session_a1}"),
            Some(&a2),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "revoked through the edge");
    assert_eq!(close_code(&mut ws_a1, Duration::from_secs(1)).await, 4001);
    let body = tokio::time::timeout(Duration::from_secs(1), sse.text())
        .await
        .expect("the SSE stream ends within a second")
        .expect("body");
    assert!(body.contains("event: revoked"), "{body}");
    // The other session is untouched, and the revoked token is refused.
    s.publish(s_user(&s, &a2).await, None, 1);
    assert_eq!(n_of(&next_json(&mut ws_a2).await), 1);
    match s.try_ws("", Some(&a1)).await {
        Err((status, _)) => assert_eq!(status, 401),
        Ok(_) => panic!("expected 401 before the upgrade, got a WebSocket"),
    }
    match s.try_ws(&format!("?ticket={ticket}"), None).await {
        Err((status, _)) => assert_eq!(status, 401, "the ticket's session was revoked"),
        Ok(_) => panic!("expected 401 for a ticket of a revoked session, got a WebSocket"),
    }
    s.stop().await;
}

async fn s_user(s: &Stack, token: &str) -> Uuid {
    let (_, me) = s
        .send(reqwest::Method::GET, "/api/v1/user/me", Some(token), None)
        .await;
    me["id"].as_str().expect("id").parse().expect("uuid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_closed_while_a_fast_one_keeps_up() {
    let s = Stack::start(&[
        ("GATEWAY_CLIENT_QUEUE_MESSAGES", "64"),
        ("GATEWAY_CLIENT_QUEUE_BYTES", "2MiB"),
    ])
    .await;
    let (token, user, _) = s.guest("Twins").await;
    let mut fast = s.ws(&token, "").await;
    let mut slow = s.ws(&token, "").await;
    // 1,000 events of ~20 KB: far more than the slow socket's buffers hold.
    let pad = "x".repeat(20_000);
    let total = 1000u64;
    // The publisher never runs more than a few events ahead of the fast
    // client, so only the client that does not read can overflow, however
    // slow the machine.
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = received.clone();
    let reader = tokio::spawn(async move {
        // Reads the number without parsing 20 KB of JSON twice per
        // message, which a debug build could not keep up with.
        let mut got = Vec::new();
        while got.len() < total as usize {
            let message = tokio::time::timeout(PATIENCE, fast.next())
                .await
                .expect("a message in time")
                .expect("open")
                .expect("no error");
            let Message::Text(text) = message else {
                assert!(
                    !matches!(message, Message::Close(_)),
                    "the fast client was closed after {} events",
                    got.len()
                );
                continue;
            };
            let marker = "{\\\"n\\\":";
            let at = text.find(marker).expect("the payload's n") + marker.len();
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            got.push(digits.parse::<u64>().expect("a number"));
            progress.store(got.len() as u64, std::sync::atomic::Ordering::SeqCst);
        }
        got
    });
    for n in 0..total {
        s.app()
            .push
            .publish_client_event(ClientEventInput {
                user_id: user,
                device_session_id: None,
                kind: "big".into(),
                payload: JsonPayload::from_value(&serde_json::json!({ "n": n, "pad": pad })),
                event_id: String::new(),
                request_id: String::new(),
                trace_id: String::new(),
            })
            .expect("published");
        if n % 8 == 7 {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while received.load(std::sync::atomic::Ordering::SeqCst) < n + 1 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the fast client stalled at {n}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let got = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the fast client keeps up")
        .expect("reader");
    assert_eq!(got, (0..total).collect::<Vec<_>>(), "every event, in order");
    assert_eq!(close_code(&mut slow, Duration::from_secs(30)).await, 4008);
    let text = s.metrics_text().await;
    assert!(text.contains("edge_slow_client_closes_total 1"), "{text}");
    assert!(text.contains("edge_events_sent_total"), "{text}");
    let resume_bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("edge_resume_window_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("edge_resume_window_bytes in {text}"));
    assert!(resume_bytes > 0, "the window holds what was sent");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_get_1009_and_bad_credentials_401_before_upgrade() {
    let s = Stack::start(&[
        ("GATEWAY_WS_MAX_MESSAGE", "4KiB"),
        ("GATEWAY_TICKET_TTL", "1s"),
    ])
    .await;
    let (token, _, _) = s.guest("Big").await;
    let mut ws = s.ws(&token, "").await;
    ws.send(Message::Text("y".repeat(8 * 1024).into()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws, PATIENCE).await, 1009);

    let ws_status = |query: String, token: Option<String>| {
        let s = &s;
        async move {
            match s.try_ws(&query, token.as_deref()).await {
                Ok(_) => 101,
                Err((status, _)) => status,
            }
        }
    };
    assert_eq!(ws_status(String::new(), None).await, 401, "absent");
    assert_eq!(
        ws_status(String::new(), Some("tbs_garbage".into())).await,
        401,
        "garbage"
    );
    assert_eq!(
        ws_status("?ticket=tbt_nope".into(), None).await,
        401,
        "unknown ticket"
    );
    let (status, body) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/user/events/ticket",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ticket = body["ticket"].as_str().expect("ticket").to_string();
    assert_eq!(ws_status(format!("?ticket={ticket}"), None).await, 101);
    assert_eq!(
        ws_status(format!("?ticket={ticket}"), None).await,
        401,
        "used once"
    );
    let (_, body) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/user/events/ticket",
            Some(&token),
            None,
        )
        .await;
    let expired = body["ticket"].as_str().expect("ticket").to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        ws_status(format!("?ticket={expired}"), None).await,
        401,
        "expired"
    );
    let (status, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/user/events/ticket",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_hides_admin_and_internal_routes_and_limits_rates() {
    let s = Stack::start(&[("GATEWAY_RATE_PER_IP", "12/1m")]).await;
    let (token, _, _) = s.guest("Fwd").await;
    let (status, info) = s
        .send(reqwest::Method::GET, "/api/v1/public/info", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["name"], "turnbase");
    let (status, me) = s
        .send(reqwest::Method::GET, "/api/v1/user/me", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["display_name"], "Fwd");
    for path in [
        "/api/v1/admin/accounts",
        "/api/v1/internal/sessions/resolve",
    ] {
        let (status, body) = s.send(reqwest::Method::GET, path, Some(&token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    // The backend is reachable directly, so 404 above is the edge's doing.
    let direct = s
        .client
        .get(format!("http://{}/api/v1/admin/accounts", s.backend_http))
        .send()
        .await
        .expect("direct");
    assert_eq!(direct.status(), StatusCode::UNAUTHORIZED);
    // The client's address reaches the backend: the test client is on
    // loopback (trusted by this backend, like the gateway), so the address
    // it forwards is the one the backend sees.
    let signed_up = s
        .client
        .post(format!("{}/api/v1/public/auth/guest", s.edge))
        .header("x-forwarded-for", "81.2.69.160")
        .json(&json!({ "display_name": "Far" }))
        .send()
        .await
        .expect("request");
    let body: Value = signed_up.json().await.expect("json");
    assert_eq!(body["session"]["country"], "GB", "{body}");
    let text = s.metrics_text().await;
    assert!(
        text.contains("edge_request_duration_seconds_bucket"),
        "{text}"
    );
    let mut limited = None;
    for _ in 0..12 {
        let response = s
            .client
            .get(format!("{}/api/v1/public/info", s.edge))
            .send()
            .await
            .expect("request");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            break;
        }
    }
    assert!(
        limited.is_some_and(|r| r.parse::<u64>().is_ok()),
        "429 with Retry-After"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_another_origin_get_cors_from_the_edge() {
    let s = Stack::start(&[("GATEWAY_HTTP_CORS_ORIGINS", BROWSER_ORIGIN)]).await;
    let (token, _, _) = s.guest("Ann").await;
    let allowed = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("access-control-allow-origin")
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    };
    // The ticket carries the session token, so the browser asks first.
    let preflight = s
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/user/events/ticket", s.edge),
        )
        .header("origin", BROWSER_ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(allowed(&preflight), [BROWSER_ORIGIN]);
    let allow_headers = preflight
        .headers()
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_lowercase();
    assert!(allow_headers.contains("authorization"), "{allow_headers}");

    // The edge's own routes and forwarded ones carry exactly one
    // allow-origin (the backend's own is dropped).
    let ticket = s
        .client
        .post(format!("{}/api/v1/user/events/ticket", s.edge))
        .header("origin", BROWSER_ORIGIN)
        .bearer_auth(&token)
        .send()
        .await
        .expect("ticket");
    assert!(ticket.status().is_success(), "{}", ticket.status());
    assert_eq!(allowed(&ticket), [BROWSER_ORIGIN]);
    let me = s
        .client
        .get(format!("{}/api/v1/user/me", s.edge))
        .header("origin", BROWSER_ORIGIN)
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(allowed(&me), [BROWSER_ORIGIN]);
    let events = s
        .client
        .get(format!("{}/api/v1/events", s.edge))
        .header("origin", BROWSER_ORIGIN)
        .header("accept", "text/event-stream")
        .bearer_auth(&token)
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(allowed(&events), [BROWSER_ORIGIN]);
    drop(events);

    // Another site gets no permission (the backend's `*` stays behind).
    let other = s
        .client
        .get(format!("{}/api/v1/user/me", s.edge))
        .header("origin", "https://elsewhere.example")
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert!(allowed(&other).is_empty(), "{:?}", allowed(&other));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_pass_when_exposed_and_only_for_admin_sessions() {
    let s = Stack::start_with(
        &[("BACKEND_ADMIN_EMAIL", "ops@example.org")],
        &[("GATEWAY_EXPOSE_ADMIN", "true")],
    )
    .await;
    let (status, body) = s
        .send(reqwest::Method::GET, "/api/v1/admin/accounts", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    // A player's session is turned away at the edge.
    let (player, _, _) = s.guest("Curious").await;
    let (status, body) = s
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/accounts",
            Some(&player),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let (admin, _, _) = s.sign_in("ops@example.org").await;
    let (status, body) = s
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/accounts",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["items"].as_array().is_some_and(|a| a.len() >= 2),
        "{body}"
    );
    // The console's live counters: the backend's metrics, through the edge.
    let text = s
        .client
        .get(format!("{}/api/v1/admin/metrics", s.edge))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("metrics");
    assert_eq!(text.status(), StatusCode::OK);
    let text = text.text().await.expect("text");
    assert!(
        text.contains("accounts_sign_ins_total{method=\"email\"} 1"),
        "{text}"
    );
    // The console itself is served.
    let console = s
        .client
        .get(format!("{}/admin/", s.edge))
        .send()
        .await
        .expect("console");
    assert_eq!(console.status(), StatusCode::OK);
    assert!(console.text().await.expect("html").contains("/admin.js"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_restart_means_reconnect_and_resync_without_duplicates() {
    let mut s = Stack::start(&[]).await;
    let (token, user, _) = s.guest("Survivor").await;
    let mut ws = s.ws(&token, "").await;
    s.publish(user, None, 1);
    assert_eq!(n_of(&next_json(&mut ws).await), 1);
    // Restart the backend on the same addresses and database.
    let old = s.app.take().expect("running");
    old.shutdown().await;
    let config = backend_config(
        &s.db,
        &s.backend_http.to_string(),
        &s.backend_push.to_string(),
    );
    let telemetry = Telemetry::init(&config.telemetry).expect("telemetry");
    s.app = Some(
        App::start(config, telemetry, "test")
            .await
            .expect("restarts"),
    );
    let resync = next_json(&mut ws).await;
    assert_eq!(resync["type"], "resync", "{resync}");
    s.publish(user, None, 2);
    let next = next_json(&mut ws).await;
    assert_eq!(n_of(&next), 2, "live again, nothing repeated: {next}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_tells_clients_to_reconnect() {
    let mut s = Stack::start(&[]).await;
    let (token, _, _) = s.guest("Leaver").await;
    let mut ws = s.ws(&token, "").await;
    let sse = s
        .client
        .get(format!("{}/api/v1/events", s.edge))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE");
    let gateway = s.gateway.take().expect("running");
    let stopping = tokio::spawn(gateway.shutdown());
    assert_eq!(close_code(&mut ws, PATIENCE).await, 1001);
    let body = tokio::time::timeout(PATIENCE, sse.text())
        .await
        .expect("the SSE stream ends")
        .expect("body");
    assert!(body.contains("event: reconnect"), "{body}");
    assert!(body.contains("retry: 1000"), "{body}");
    let report = stopping.await.expect("joined");
    assert!(report.is_clean(), "{report:?}");
    let order: Vec<&str> = report.components.iter().map(|c| c.name).collect();
    assert_eq!(
        order,
        [
            "gateway-metrics",
            "gateway-http",
            "gateway-hub-sweeper",
            "gateway-push-client"
        ],
        "the push stream closes last"
    );
    s.stop().await;
}

/// What the backend receives from the edge. A capturing server stands in
/// for the backend here only to observe the forwarded request itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_carry_the_client_address_and_trace_context() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(http::HeaderMap, String, String)>>> = Arc::default();
    let capture = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let capture = capture.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
            capture.lock().expect("not poisoned").push((
                parts.headers,
                parts.uri.to_string(),
                String::from_utf8_lossy(&bytes).to_string(),
            ));
            axum::Json(json!({ "ok": true }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile_dir();
    let env: Vec<(String, String)> = vec![
        ("GATEWAY_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("GATEWAY_OTEL_TRACES_EXPORTER".into(), "none".into()),
    ];
    let defaults = [
        ("GATEWAY_BACKEND_URL", format!("http://{backend}")),
        // Nothing listens there; forwarding does not need the push stream.
        ("GATEWAY_GRPC_PUSH_URL", "http://127.0.0.1:9".to_string()),
        ("GATEWAY_INTERNAL_TOKEN", SECRET.to_string()),
        (
            "GATEWAY_SIGNING_KEY_FILE",
            dir.join("key").display().to_string(),
        ),
    ];
    let config = GatewayConfig::load(Profile::Up, env, None, &defaults).expect("config");
    let telemetry = Telemetry::init(&config.telemetry).expect("telemetry");
    let gateway = Gateway::start(config, telemetry, turnbase_gateway::StartOptions::EMBEDDED)
        .await
        .expect("starts");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/public/echo?x=1",
            gateway.http_addr
        ))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive")
        .body("hello backend")
        .send()
        .await
        .expect("forwarded");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let (headers, uri, body) = seen.lock().expect("not poisoned").pop().expect("a request");
    assert_eq!(uri, "/api/v1/public/echo?x=1");
    assert_eq!(body, "hello backend");
    assert_eq!(
        headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        Some("203.0.113.9, 127.0.0.1"),
        "the peer's address is appended"
    );
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("trace context passed on");
    assert!(parent.contains(trace_id), "the same trace: {parent}");
    assert!(
        headers.contains_key("x-request-id"),
        "the request id goes along"
    );
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tb-gw-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_a_live_client_open_and_silence_closes_with_4000() {
    let s = Stack::start(&[
        ("GATEWAY_WS_PING_INTERVAL", "100ms"),
        // Generous, so that a loaded machine's scheduling hiccups do not
        // look like silence.
        ("GATEWAY_WS_IDLE_TIMEOUT", "1s"),
    ])
    .await;
    let (token, user, _) = s.guest("Pinger").await;
    // A client that reads answers the pings (tungstenite does so as it
    // reads), so it outlives the idle timeout several times over.
    let mut live = s.ws(&token, "").await;
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut pings = 0;
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout_at(until, live.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("ended: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(pings >= 10, "pinged every 100 ms: {pings}");
    s.publish(user, None, 1);
    assert_eq!(n_of(&next_json(&mut live).await), 1, "still delivering");
    // A client that never reads never answers: closed as idle. It reads
    // only its socket at the end (a WebSocket library would answer the
    // queued pings first, into a connection the server has dropped).
    let silent = s.ws(&token, "").await;
    let tokio_tungstenite::MaybeTlsStream::Plain(mut stream) = silent.into_inner() else {
        panic!("a plain TCP stream");
    };
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut bytes),
    )
    .await;
    assert_eq!(close_code_in(&bytes), Some(4000), "{} bytes", bytes.len());
    s.stop().await;
}

/// The close code in raw server frames (unmasked), if a close frame is there.
fn close_code_in(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => return None,
            n => (usize::from(n), 2),
        };
        let payload = bytes.get(header..header + len)?;
        if opcode == 8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
        bytes = &bytes[header + len..];
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_connections_are_limited_per_account_and_per_gateway() {
    let s = Stack::start(&[
        ("GATEWAY_MAX_CONNECTIONS_PER_USER", "2"),
        ("GATEWAY_MAX_CONNECTIONS", "3"),
    ])
    .await;
    let (ann, _, _) = s.guest("Ann").await;
    let (bob, _, _) = s.guest("Bob").await;
    let (cy, _, _) = s.guest("Cy").await;
    let mut ann_first = s.ws(&ann, "").await;
    let _ann_second = s.ws(&ann, "").await;
    let Err((status, body)) = s.try_ws("", Some(&ann)).await else {
        panic!("a third connection of one account was let in")
    };
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    let sse = s
        .client
        .get(format!("{}/api/v1/events", s.edge))
        .bearer_auth(&ann)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE");
    assert_eq!(
        sse.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "SSE counts too"
    );
    assert!(sse.headers().contains_key("retry-after"));

    let _bob = s.ws(&bob, "").await;
    let Err((status, body)) = s.try_ws("", Some(&cy)).await else {
        panic!("a fourth connection was let into a gateway for three")
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "gateway_full", "{body}");

    // A closed connection gives its place back.
    ann_first.close(None).await.expect("close");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let _cy = loop {
        match s.try_ws("", Some(&cy)).await {
            Ok(ws) => break ws,
            Err((503, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(refused) => panic!("Cy was refused: {refused:?}"),
        }
    };
    s.stop().await;
}

/// A WebSocket client whose socket reads into a tiny buffer, and which the
/// test never reads from until it chooses to: a client that stopped
/// reading. Returns the raw stream after the handshake.
async fn stalled_client(s: &Stack, token: &str) -> tokio::net::TcpStream {
    let addr: SocketAddr = s
        .edge
        .trim_start_matches("http://")
        .parse()
        .expect("edge address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let stream = socket.connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/api/v1/events")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade");
    ws.into_inner()
}

/// `count` events of ~20 KB each for every one of `users`, in turns.
fn publish_big(s: &Stack, users: &[Uuid], count: u64) {
    let pad = "x".repeat(20_000);
    for n in 0..count {
        for user in users {
            s.app()
                .push
                .publish_client_event(ClientEventInput {
                    user_id: *user,
                    device_session_id: None,
                    kind: "big".into(),
                    payload: JsonPayload::from_value(&serde_json::json!({ "n": n, "pad": pad })),
                    event_id: String::new(),
                    request_id: String::new(),
                    trace_id: String::new(),
                })
                .expect("published");
        }
    }
}

/// The close code of the frame that ends a raw server stream, if it ends
/// with one (read from the end: the bytes before may start mid-frame).
fn final_close_code(bytes: &[u8]) -> Option<u16> {
    (0..bytes.len().saturating_sub(3)).rev().find_map(|i| {
        (bytes[i] == 0x88 && usize::from(bytes[i + 1]) == bytes.len() - i - 2)
            .then(|| u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]))
    })
}

/// Reads what the server sent until it ends the stream (EOF or reset).
async fn drain(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read(stream, &mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return bytes,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server neither sent nor closed for {PATIENCE:?}"),
        }
    }
}

/// A client that never reads is dropped once a write makes no progress
/// for GATEWAY_WRITE_TIMEOUT, and its connection slot is free again.
/// (Its connection task used to sit in a flush for ever, still counted
/// against the account's and the gateway's limits.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_its_slot_freed() {
    let s = Stack::start(&[
        ("GATEWAY_WRITE_TIMEOUT", "1s"),
        ("GATEWAY_MAX_CONNECTIONS_PER_USER", "1"),
        // A queue larger than the socket buffers, as by default: the
        // connection's task fills the socket and waits in a write before
        // its queue overflows.
        ("GATEWAY_CLIENT_QUEUE_MESSAGES", "1024"),
        ("GATEWAY_CLIENT_QUEUE_BYTES", "4MiB"),
    ])
    .await;
    let (token, user, _) = s.guest("Sleeper").await;
    let mut stalled = stalled_client(&s, &token).await;
    // ~8 MB: more than the socket buffers and the queue hold.
    publish_big(&s, &[user], 400);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let _next = loop {
        match s.try_ws("", Some(&token)).await {
            Ok(ws) => break ws,
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(refused) => panic!("the stalled connection still holds its slot: {refused:?}"),
        }
    };
    let bytes = drain(&mut stalled).await;
    assert_ne!(
        final_close_code(&bytes),
        Some(4000),
        "a slow client is not told it was idle"
    );
    s.stop().await;
}

/// A client marked slow that reads again only after its idle timeout has
/// passed hears 4008 (slow consumer) every time, never 4000 (idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_hears_4008_even_past_its_idle_timeout() {
    let s = Stack::start(&[
        ("GATEWAY_WS_PING_INTERVAL", "100ms"),
        ("GATEWAY_WS_IDLE_TIMEOUT", "3s"),
        ("GATEWAY_WRITE_TIMEOUT", "60s"),
        ("GATEWAY_CLIENT_QUEUE_MESSAGES", "16"),
        ("GATEWAY_CLIENT_QUEUE_BYTES", "256KiB"),
    ])
    .await;
    // Four at once: before the fix each had even odds of hearing 4000.
    // Until they are marked slow the clients send pings (they never read),
    // so the gateway hears from them and has no reason to call them idle.
    let heard = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for i in 0..4 {
        let (token, user, _) = s.guest(&format!("Slow{i}")).await;
        let (read, mut write) = stalled_client(&s, &token).await.into_split();
        let stop = heard.clone();
        tokio::spawn(async move {
            // An empty ping, masked as a client must.
            let ping = [0x89u8, 0x80, 1, 2, 3, 4];
            while !stop.is_cancelled() {
                if tokio::io::AsyncWriteExt::write_all(&mut write, &ping)
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Kept open (not shut down) until the test ends.
            stop.cancelled().await;
            std::future::pending::<()>().await;
        });
        clients.push((read, user));
    }
    let users: Vec<Uuid> = clients.iter().map(|(_, u)| *u).collect();
    publish_big(&s, &users, 300);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = s.metrics_text().await;
        if text.contains("edge_slow_client_closes_total 4") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all four marked slow: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    heard.cancel();
    // Past the idle timeout (3 s) with nothing heard from the clients.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for (mut stream, _) in clients {
        let bytes = drain(&mut stream).await;
        assert_eq!(
            final_close_code(&bytes),
            Some(4008),
            "{} bytes",
            bytes.len()
        );
    }
    s.stop().await;
}

/// Sends a raw HTTP/1.1 request to the edge and returns the status and the
/// JSON body of the answer.
async fn raw_exchange(s: &Stack, request: &[u8]) -> (u16, Value) {
    let addr = s.edge.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before it has read everything.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // A chunked answer: the JSON is the first chunk's data.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// A body over the edge's limit gets 413 with the JSON error body whether
/// its size is announced (Content-Length) or only found out while it
/// streams (chunked); the chunked one used to be reported as 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_chunked_or_not() {
    let s = Stack::start(&[("GATEWAY_HTTP_BODY_LIMIT", "16KiB")]).await;
    let big = format!("{{\"display_name\":\"{}\"}}", "x".repeat(40_000));
    let sized = format!(
        "POST /api/v1/public/auth/guest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let (status, body) = raw_exchange(&s, sized.as_bytes()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("payload_too_large")),
        "{body}"
    );
    let mut chunked = String::from(
        "POST /api/v1/public/auth/guest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for piece in big.as_bytes().chunks(4096) {
        chunked.push_str(&format!("{:x}\r\n", piece.len()));
        chunked.push_str(std::str::from_utf8(piece).expect("ASCII"));
        chunked.push_str("\r\n");
    }
    chunked.push_str("0\r\n\r\n");
    for _ in 0..5 {
        let (status, body) = raw_exchange(&s, chunked.as_bytes()).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (413, &json!("payload_too_large")),
            "{body}"
        );
    }
    // Under the limit, chunked bodies go through.
    let small = "{\"display_name\":\"Chunky\"}";
    let ok = format!(
        "POST /api/v1/public/auth/guest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n",
        small.len()
    );
    let (status, body) = raw_exchange(&s, ok.as_bytes()).await;
    assert_eq!(status, 201, "{body}");
    s.stop().await;
}

/// Logging out and then at once opening live events with the same token
/// (cached by the gateway) or with a ticket issued before the logout is
/// refused with 401 every time: the gateway checks the session with the
/// backend after registering the connection, so it never waits for the
/// revocation to reach it over the push stream (a connection used to be
/// let in, and given its replay, for a few milliseconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_right_after_logout_is_always_refused() {
    let s = Stack::start_with(
        &[("BACKEND_LOGIN_IP_RATE", "1000000/1s")],
        &[
            ("GATEWAY_RATE_PER_IP", "1000000/1s"),
            ("GATEWAY_RATE_PER_SESSION", "1000000/1s"),
        ],
    )
    .await;
    let rounds = 1000;
    for round in 0..rounds {
        let (token, user, _) = s.guest("Racer").await;
        // The ticket request resolves the token, so the gateway has it
        // cached from here on.
        let (status, body) = s
            .send(
                reqwest::Method::POST,
                "/api/v1/user/events/ticket",
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let ticket = body["ticket"].as_str().expect("ticket").to_string();
        s.publish(user, None, round);
        let (status, _) = s
            .send(
                reqwest::Method::POST,
                "/api/v1/user/logout",
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let with_ticket = format!("?ticket={ticket}&resume=0");
        let (by_token, by_ticket) = tokio::join!(
            s.try_ws("?resume=0", Some(&token)),
            s.try_ws(&with_ticket, None)
        );
        for (how, attempt) in [("token", by_token), ("ticket", by_ticket)] {
            match attempt {
                Err((401, _)) => {}
                Err(other) => panic!("round {round}, {how}: {other:?}"),
                Ok(_) => panic!("round {round}: a {how} of a logged-out session was let in"),
            }
        }
    }
    s.stop().await;
}

/// The lobby's whole enrolment flow through the edge, on both backends:
/// players create, apply, approve and start over forwarded REST, and each
/// hears what concerns them as a signed live event on its WebSocket.
async fn a_game_fills_through_the_edge_and_everyone_hears_it(kind: DbKind) {
    let s = Stack::start_on(kind, &[], &[]).await;
    let (owner, owner_id, _) = s.guest("Owner").await;
    let (ann, ann_id, _) = s.guest("Ann").await;
    let (bo, _, _) = s.guest("Bo").await;
    let mut ws_owner = s.ws(&owner, "").await;
    let mut ws_ann = s.ws(&ann, "").await;
    let deadline = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (status, game) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/user/games",
            Some(&owner),
            Some(json!({
                "title": "Through the edge", "engine": "conquest", "max_players": 2,
                "enrol_deadline": deadline,
                "schedule": { "kind": "interval", "every": "1h" },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{game}");
    let id = game["id"].as_str().expect("id").to_string();
    let kind_of = |frame: &Value| -> (String, Value) {
        let envelope: Value =
            serde_json::from_str(frame["envelope"].as_str().expect("an envelope")).expect("JSON");
        let payload = envelope["payload"].clone();
        (envelope["kind"].as_str().unwrap_or("").to_string(), payload)
    };

    let (status, a) = s
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/user/games/{id}/applications"),
            Some(&ann),
            Some(json!({ "race_name": "Andromeda" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let (k, payload) = kind_of(&next_json(&mut ws_owner).await);
    assert_eq!(k, "lobby.application_received");
    assert_eq!(payload["race_name"], "Andromeda");
    assert_eq!(payload["account_id"], ann_id.to_string());

    let (status, b) = s
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/user/games/{id}/applications"),
            Some(&bo),
            Some(json!({ "race_name": "ANDROMEDA" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "race_name_reserved");

    let app_id = a["id"].as_str().expect("id");
    let (status, approved) = s
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/user/games/{id}/applications/{app_id}/approve"),
            Some(&owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let (k, payload) = kind_of(&next_json(&mut ws_ann).await);
    assert_eq!(
        (k.as_str(), payload["game_id"].as_str()),
        ("lobby.application_approved", Some(id.as_str()))
    );

    let (status, bot) = s
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/user/games/{id}/bots"),
            Some(&owner),
            Some(json!({ "name": "Robot" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bot}");
    let (status, started) = s
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/user/games/{id}/start"),
            Some(&owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["state"], "starting");
    for ws in [&mut ws_owner, &mut ws_ann] {
        let (k, payload) = kind_of(&next_json(ws).await);
        assert_eq!(k, "lobby.game_starting");
        assert_eq!(payload["players"], 2);
    }
    let (status, mine) = s
        .send(
            reqwest::Method::GET,
            "/api/v1/user/me/games",
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["items"][0]["seat"]["race_name"], "Andromeda");
    assert_eq!(mine["items"][0]["game"]["owner_id"], owner_id.to_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_fills_through_the_edge_on_sqlite() {
    a_game_fills_through_the_edge_and_everyone_hears_it(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_fills_through_the_edge_on_postgres() {
    a_game_fills_through_the_edge_and_everyone_hears_it(DbKind::Postgres).await;
}
