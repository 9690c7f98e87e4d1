//! `spawn_app`: a started backend with its own database and ports.

use turnbase_backend::config::Profile;
use turnbase_backend::{App, Config};
use turnbase_core::telemetry::Telemetry;
use turnbase_testkit::{DbKind, TestDb};

pub struct TestApp {
    pub app: App,
    pub base: String,
    pub metrics: String,
    pub client: reqwest::Client,
    /// Sent as the bearer token by `get_json` and `send` once set.
    pub bearer: std::sync::Mutex<Option<String>>,
    db: TestDb,
}

/// The admin every test app has (`BACKEND_ADMIN_EMAIL`).
pub const ADMIN_EMAIL: &str = "admin@example.org";
pub const INTERNAL_TOKEN: &str = "internal-secret-for-tests-0123456789";

/// A push subscription request as a gateway sends it, with the internal
/// secret.
pub fn push_request(
    id: &str,
    cursor: &str,
) -> tonic::Request<turnbase_push::proto::GatewaySubscribeRequest> {
    let mut request = tonic::Request::new(turnbase_push::proto::GatewaySubscribeRequest {
        gateway_client_id: id.into(),
        cursor: cursor.into(),
    });
    request.metadata_mut().insert(
        "authorization",
        turnbase_push::server::authorization(INTERNAL_TOKEN).expect("ASCII"),
    );
    request
}

/// The reference engines' kinds, as `turnbase` registers them (the
/// lobby never runs them: the runtime will).
pub fn reference_engines() -> turnbase_lobby::EngineRegistry {
    let program = engines_binary();
    turnbase_lobby::EngineRegistry::from_manifests(&turnbase_engines::manifests(), |m| {
        turnbase_lobby::EngineRun::Binary {
            program: program.clone(),
            args: vec![m.kind.clone()],
        }
    })
    .expect("the reference manifests are valid")
}

/// The `turnbase-engines` binary of this build (next to the test
/// binary's `deps` folder; `cargo nextest run --workspace` builds it).
pub fn engines_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    dir.join("turnbase-engines")
}

pub async fn spawn_app(backend: DbKind) -> TestApp {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: DbKind, extra: &[(&str, &str)]) -> TestApp {
    spawn_app_on(TestDb::new(backend).await, None, extra).await
}

/// A backend on a fresh Postgres database reached through a relay that
/// the test can take down (a stopped server) or cut (a partition).
pub async fn spawn_app_via_relay(extra: &[(&str, &str)]) -> (TestApp, turnbase_testkit::Partition) {
    let db = TestDb::new(DbKind::Postgres).await;
    let url = db.url.clone().expect("a Postgres URL");
    let after_at = url.find('@').expect("user@host in the URL") + 1;
    let host_end = after_at + url[after_at..].find('/').expect("a database name");
    let relay = turnbase_testkit::Partition::start(&url[after_at..host_end])
        .await
        .expect("relay");
    let relayed = format!("{}{}{}", &url[..after_at], relay.addr(), &url[host_end..]);
    (spawn_app_on(db, Some(relayed), extra).await, relay)
}

async fn spawn_app_on(db: TestDb, url: Option<String>, extra: &[(&str, &str)]) -> TestApp {
    let mut env: Vec<(String, String)> = vec![
        ("BACKEND_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_GRPC_PUSH_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_FRESHNESS_WINDOW".into(), "1m".into()),
        ("BACKEND_MAIL_DELIVERY".into(), "file".into()),
        ("BACKEND_MAIL_POLL_INTERVAL".into(), "100ms".into()),
        ("BACKEND_DATA_DIR".into(), db.dir().display().to_string()),
        ("BACKEND_LOG_LEVEL".into(), "warn".into()),
        ("BACKEND_INTERNAL_TOKEN".into(), INTERNAL_TOKEN.into()),
        ("BACKEND_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
        // Tests keep pooled connections open: no need to wait for them.
        ("BACKEND_HTTP_DRAIN_GRACE".into(), "0s".into()),
    ];
    if let Some(url) = url.as_ref().or(db.url.as_ref()) {
        env.push(("BACKEND_DATABASE_URL".into(), url.clone()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut config = Config::load(Profile::Backend, env, None).expect("test config is valid");
    if let turnbase_backend::config::EngineSource::Builtin(registry) = &mut config.lobby.engines {
        *registry = reference_engines();
    }
    let telemetry = Telemetry::init(&config.telemetry).expect("telemetry");
    let app = App::start(config, telemetry, "test")
        .await
        .expect("backend starts");
    // Caches are warm before the listeners bind; this only guards against
    // a readiness flag that a future cache sets later.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.readiness.not_ready().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready: {:?}",
            app.readiness.not_ready()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    TestApp {
        base: format!("http://{}", app.http_addr),
        metrics: format!(
            "http://{}/metrics",
            app.metrics_addr.expect("metrics listener")
        ),
        app,
        client: reqwest::Client::new(),
        bearer: std::sync::Mutex::new(None),
        db,
    }
}

impl TestApp {
    /// Whether the backend is in a database outage.
    pub fn app_outage_is_down(&self) -> bool {
        self.app.outage.is_down()
    }

    pub fn app_data_dir(&self) -> String {
        self.db.dir().display().to_string()
    }

    /// The Prometheus text the metrics listener serves.
    pub async fn metrics_text(&self) -> String {
        let response = self
            .client
            .get(&self.metrics)
            .send()
            .await
            .expect("metrics");
        response.text().await.expect("metrics text")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let token = self.bearer.lock().expect("not poisoned").clone();
        self.send(reqwest::Method::GET, path, token.as_deref(), None)
            .await
    }

    /// Sends a request with an optional bearer token and JSON body; returns
    /// the status and the JSON body (`null` for an empty one).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"))
        };
        (status, json)
    }

    /// The folder `file` delivery writes mail into.
    pub fn mail_dir(&self) -> std::path::PathBuf {
        self.db.dir().join("mail")
    }

    /// Waits for a sign-in code mail to `email` newer than `skip` mails
    /// already seen, and reads the code from it.
    pub async fn code_for(&self, email: &str, skip: usize) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let mut codes: Vec<(String, String)> = Vec::new();
            if let Ok(entries) = std::fs::read_dir(self.mail_dir()) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if !name.ends_with(".eml") || name.starts_with('.') {
                        continue;
                    }
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let to_line = format!("To: {email}");
                    if !text.lines().any(|l| l.eq_ignore_ascii_case(&to_line)) {
                        continue;
                    }
                    if let Some(at) = text.find("sign-in code: ") {
                        let code: String = text[at + 14..].chars().take(6).collect();
                        // Outbox ids are UUIDv7: the file names sort by age.
                        codes.push((name, code));
                    }
                }
            }
            codes.sort();
            if codes.len() > skip {
                return codes.pop().expect("at least one").1;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no sign-in mail to {email} arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Signs in by mailed code; returns the sign-in response.
    pub async fn sign_in(&self, email: &str) -> serde_json::Value {
        let seen = self.mails_to(email);
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/public/auth/email/start",
                None,
                Some(serde_json::json!({ "email": email })),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
        let code = self.code_for(email, seen).await;
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/public/auth/email/verify",
                None,
                Some(serde_json::json!({ "email": email, "code": code, "device_name": "test" })),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body
    }

    /// How many sign-in mails to `email` are in the mail folder.
    pub fn mails_to(&self, email: &str) -> usize {
        let to_line = format!("To: {email}");
        std::fs::read_dir(self.mail_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                    .filter(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .lines()
                            .any(|l| l.eq_ignore_ascii_case(&to_line))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Signs in as the configured admin and sends that token from now on.
    pub async fn become_admin(&self) -> String {
        let body = self.sign_in(ADMIN_EMAIL).await;
        let token = body["token"].as_str().expect("a token").to_string();
        *self.bearer.lock().expect("not poisoned") = Some(token.clone());
        token
    }

    /// A new guest: (token, sign-in response).
    pub async fn guest(&self, name: &str) -> (String, serde_json::Value) {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/public/auth/guest",
                None,
                Some(serde_json::json!({ "display_name": name, "device_name": "test" })),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        (body["token"].as_str().expect("a token").to_string(), body)
    }
}

/// A push subscription over gRPC as a gateway makes it, positioned at the
/// head (its `Resumed` opening already read).
pub async fn subscribe(
    t: &TestApp,
    client_id: &str,
) -> tonic::Streaming<turnbase_push::proto::PushMessage> {
    use turnbase_push::proto::push_client::PushClient;
    use turnbase_push::proto::push_message::Kind as Msg;
    let mut client = PushClient::connect(format!("http://{}", t.app.grpc_push_addr))
        .await
        .expect("connect");
    let mut stream = client
        .subscribe_push(push_request(client_id, ""))
        .await
        .expect("subscribe")
        .into_inner();
    match stream.message().await {
        Ok(Some(turnbase_push::proto::PushMessage {
            kind: Some(Msg::Resumed(_)),
        })) => stream,
        other => panic!("expected Resumed, got {other:?}"),
    }
}

/// Waits for `probe` to give a value, looking every 25 ms, for at most
/// `patience`; the test fails naming `what` otherwise.
pub async fn until<T, F, Fut>(what: &str, patience: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Client events seen on a push stream until it is quiet for `quiet`:
/// (user, kind, payload).
pub async fn drain_push(
    stream: &mut tonic::Streaming<turnbase_push::proto::PushMessage>,
    seen: &mut Vec<(String, String, serde_json::Value)>,
    quiet: std::time::Duration,
) {
    use turnbase_push::proto::push_event::Kind as EventKind;
    use turnbase_push::proto::push_message::Kind as Msg;
    while let Ok(Ok(Some(message))) = tokio::time::timeout(quiet, stream.message()).await {
        if let Some(Msg::Events(events)) = message.kind {
            for e in events.events {
                if let Some(EventKind::ClientEvent(c)) = e.kind {
                    let payload =
                        serde_json::from_slice(&c.payload).unwrap_or(serde_json::Value::Null);
                    seen.push((c.user_id, c.kind, payload));
                }
            }
        }
    }
}
