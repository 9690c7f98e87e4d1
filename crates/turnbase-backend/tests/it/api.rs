//! Probes, error bodies, request ids, OpenAPI, metrics and shutdown.

use reqwest::StatusCode;
use turnbase_testkit::DbKind;

use crate::helpers::{spawn_app, spawn_app_with};

async fn probes_answer(backend: DbKind) {
    let t = spawn_app(backend).await;
    assert_eq!(
        t.get_json("/healthz").await,
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    assert_eq!(
        t.get_json("/readyz").await,
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    );
    t.app.shutdown().await;
}

async fn readyz_names_caches_that_are_not_ready(backend: DbKind) {
    let t = spawn_app(backend).await;
    let sessions = t.app.readiness.register("sessions");
    let (status, body) = t.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "not_ready");
    assert_eq!(body["error"]["message"], "not ready: sessions");
    assert_eq!(body["not_ready"], serde_json::json!(["sessions"]));
    sessions.set(true);
    assert_eq!(t.get_json("/readyz").await.0, StatusCode::OK);
    t.app.shutdown().await;
}

async fn readyz_fails_when_the_database_is_gone(backend: DbKind) {
    let t = spawn_app(backend).await;
    t.app.database.close().await;
    let (status, body) = t.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["not_ready"], serde_json::json!(["database"]));
    // Liveness does not depend on the database.
    assert_eq!(t.get_json("/healthz").await.0, StatusCode::OK);
    t.app.shutdown().await;
}

async fn every_error_has_the_json_body(backend: DbKind) {
    let t = spawn_app_with(backend, &[("BACKEND_HTTP_BODY_LIMIT", "4KiB")]).await;
    let big = "x".repeat(8 * 1024);
    let cases = [
        (
            reqwest::Method::GET,
            "/no/such/route",
            String::new(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            reqwest::Method::GET,
            "/api/v1/user/me",
            String::new(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            reqwest::Method::POST,
            "/healthz",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/public/info",
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let response = t
            .client
            .request(method.clone(), t.url(path))
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let json: serde_json::Value = response.json().await.expect("JSON error body");
        assert_eq!(json["error"]["code"], code, "{method} {path}: {json}");
        assert!(
            json["error"]["message"].is_string(),
            "{method} {path}: {json}"
        );
    }
    t.app.shutdown().await;
}

async fn info_names_the_installation(backend: DbKind) {
    let t = spawn_app(backend).await;
    let (status, body) = t.get_json("/api/v1/public/info").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "turnbase");
    assert_eq!(body["version"], "test");
    assert_eq!(body["instance_id"], t.app.instance.id.to_string());
    t.app.shutdown().await;
}

async fn shutdown_stops_components_in_reverse_order(backend: DbKind) {
    let t = spawn_app(backend).await;
    let report = t.app.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
    let order: Vec<&str> = report.components.iter().map(|c| c.name).collect();
    assert_eq!(
        order,
        [
            "metrics",
            "runtime-reconciler",
            "turn-reminders",
            "turn-scheduler",
            "runtime-workers",
            "lobby-sweeper",
            "guest-reaper",
            "notification-worker",
            "mail-worker",
            "http",
            "grpc-push",
            "runtime-engines",
            "accounts-flusher",
            "push",
            "database",
            "telemetry"
        ]
    );
}

turnbase_testkit::both_backends!(
    probes_answer,
    readyz_names_caches_that_are_not_ready,
    readyz_fails_when_the_database_is_gone,
    every_error_has_the_json_body,
    info_names_the_installation,
    shutdown_stops_components_in_reverse_order,
);

#[tokio::test]
async fn request_ids_are_set_or_propagated() {
    let t = spawn_app(DbKind::Sqlite).await;
    let fresh = t
        .client
        .get(t.url("/healthz"))
        .send()
        .await
        .expect("request");
    let id = fresh.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let given = t
        .client
        .get(t.url("/healthz"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .expect("request");
    assert_eq!(given.headers()["x-request-id"], "client-chosen-42");
    t.app.shutdown().await;
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let t = spawn_app(DbKind::Sqlite).await;
    let (status, doc) = t.get_json("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], "test");
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/healthz",
        "/readyz",
        "/api/v1/public/info",
        "/api/v1/openapi.json",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys()
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    t.app.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests() {
    let t = spawn_app(DbKind::Sqlite).await;
    for _ in 0..3 {
        t.client
            .get(t.url("/healthz"))
            .send()
            .await
            .expect("request");
    }
    t.client
        .get(t.url("/nowhere"))
        .send()
        .await
        .expect("request");
    let text = t.metrics_text().await;
    assert!(
        text.contains(
            r#"http_server_requests_total{method="GET",route="/healthz",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_server_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("http_server_request_duration_seconds_bucket"),
        "{text}"
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let t = spawn_app_with(
        DbKind::Sqlite,
        &[("BACKEND_HTTP_CORS_ORIGINS", "https://play.example")],
    )
    .await;
    let preflight = |origin: &'static str| {
        t.client
            .request(reqwest::Method::OPTIONS, t.url("/api/v1/public/info"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://play.example").await.expect("preflight");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://play.example"
    );
    let refused = preflight("https://evil.example").await.expect("preflight");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn a_second_start_keeps_the_installation_id() {
    let t = spawn_app(DbKind::Sqlite).await;
    let first = t.app.instance.clone();
    let data_dir = t.app_data_dir();
    t.app.shutdown().await;
    let env = vec![
        ("BACKEND_HTTP_ADDR".to_string(), "127.0.0.1:0".to_string()),
        (
            "BACKEND_GRPC_PUSH_ADDR".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("BACKEND_DATA_DIR".to_string(), data_dir),
    ];
    let config = turnbase_backend::Config::load(turnbase_backend::config::Profile::Up, env, None)
        .expect("config");
    let telemetry =
        turnbase_core::telemetry::Telemetry::init(&config.telemetry).expect("telemetry");
    let again = turnbase_backend::App::start(config, telemetry, "test")
        .await
        .expect("restart");
    assert_eq!(again.instance.id, first.id);
    assert_eq!(again.instance.start_count, 2);
    again.shutdown().await;
}

#[tokio::test]
async fn published_events_reach_a_push_subscriber_and_stop_ends_the_stream() {
    use turnbase_push::proto::push_client::PushClient;
    use turnbase_push::proto::push_message::Kind;

    let t = spawn_app(DbKind::Sqlite).await;
    let mut client = PushClient::connect(format!("http://{}", t.app.grpc_push_addr))
        .await
        .expect("connect");
    let mut stream = client
        .subscribe_push(crate::helpers::push_request("gw", ""))
        .await
        .expect("subscribe")
        .into_inner();
    let first = stream.message().await.expect("ok").expect("message");
    assert!(matches!(first.kind, Some(Kind::Resumed(_))));
    t.app
        .push
        .publish_session_invalidation(uuid::Uuid::now_v7(), None, "blocked")
        .expect("publish");
    let events = stream.message().await.expect("ok").expect("message");
    assert!(matches!(events.kind, Some(Kind::Events(e)) if e.events.len() == 1));
    let report = t.app.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
    let end = stream
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn push_metrics_are_exported() {
    use turnbase_push::proto::push_client::PushClient;

    let t = spawn_app(DbKind::Sqlite).await;
    let url = format!("http://{}", t.app.grpc_push_addr);
    let mut client = PushClient::connect(url).await.expect("connect");
    let subscribe = crate::helpers::push_request;
    let mut first = client
        .subscribe_push(subscribe("gw-a", ""))
        .await
        .expect("subscribe")
        .into_inner();
    first.message().await.expect("ok").expect("opening");
    // Replace it, with a malformed cursor for good measure.
    let mut second = client
        .subscribe_push(subscribe("gw-a", "nonsense"))
        .await
        .expect("subscribe")
        .into_inner();
    second.message().await.expect("ok").expect("opening");
    assert!(
        first.message().await.is_err(),
        "the first stream was replaced"
    );
    t.app
        .push
        .publish_session_invalidation(uuid::Uuid::now_v7(), None, "logout")
        .expect("publish");
    second.message().await.expect("ok").expect("events");

    let text = t.metrics_text().await;
    for line in [
        r#"grpc_push_events_total{kind="session_invalidation"} 1"#,
        r#"grpc_push_stale_total{reason="malformed"} 1"#,
        "grpc_push_replaced_total 1",
        "grpc_push_subscribers 1",
        r#"grpc_push_subscriber_lag{gateway_client_id="gw-a"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    t.app.shutdown().await;
}

/// One bad request: what it is, path, token, content type, body.
type BadInput<'a> = (
    &'a str,
    String,
    Option<String>,
    Option<&'a str>,
    Option<String>,
);

/// Every operation of the OpenAPI document, sent each class of bad input
/// it can meet (no or the wrong credentials, a path id that is not a UUID,
/// a query that does not parse, a body that is not JSON, malformed, of the
/// wrong shape or too large), answers only statuses the document lists for
/// it, each a 4xx with the JSON error body.
#[tokio::test]
async fn every_operation_answers_only_documented_statuses() {
    let t = spawn_app_with(DbKind::Sqlite, &[("BACKEND_HTTP_BODY_LIMIT", "4KiB")]).await;
    let admin = t.become_admin().await;
    let (player, _) = t.guest("Walker").await;
    let (_, doc) = t.get_json("/api/v1/openapi.json").await;
    let paths = doc["paths"].as_object().expect("paths").clone();
    let mut checked = 0;
    for (path, item) in &paths {
        for (method, operation) in item.as_object().expect("operations") {
            let documented: Vec<u16> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .filter_map(|k| k.parse().ok())
                .collect();
            let token = if path.starts_with("/api/v1/admin/") {
                Some(admin.clone())
            } else if path.starts_with("/api/v1/user/") {
                Some(player.clone())
            } else if path.starts_with("/api/v1/internal/") {
                Some(crate::helpers::INTERNAL_TOKEN.to_string())
            } else {
                None
            };
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // Path parameters that are ids (UUIDs); others (a race name)
            // take any text.
            let ids: Vec<String> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path" && p["schema"]["format"] == "uuid")
                .filter_map(|p| p["name"].as_str().map(|n| format!("{{{n}}}")))
                .collect();
            let fill = |bad: bool| {
                path.split('/')
                    .map(
                        |seg| match (seg.starts_with('{'), ids.iter().any(|i| i == seg), bad) {
                            (true, true, true) => "not-a-uuid".to_string(),
                            (true, true, false) => uuid::Uuid::now_v7().to_string(),
                            (true, false, _) => "Some Name".to_string(),
                            _ => seg.to_string(),
                        },
                    )
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let has_body = operation.get("requestBody").is_some();
            let has_query = operation["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let mut cases: Vec<BadInput<'_>> = Vec::new();
            if token.is_some() {
                cases.push(("no credentials", fill(false), None, None, None));
                cases.push((
                    "garbage credentials",
                    fill(false),
                    Some("tbs_garbage".into()),
                    None,
                    None,
                ));
            }
            if path.starts_with("/api/v1/admin/") {
                cases.push((
                    "a player's session",
                    fill(false),
                    Some(player.clone()),
                    None,
                    None,
                ));
            }
            if !ids.is_empty() {
                let body = has_body.then(|| "{}".to_string());
                let kind = has_body.then_some("application/json");
                cases.push((
                    "a path id that is no UUID",
                    fill(true),
                    token.clone(),
                    kind,
                    body,
                ));
            }
            if has_query {
                let query = format!(
                    "{}?limit=lots&before=yesterday&status=lost&to=nobody",
                    fill(false)
                );
                cases.push((
                    "a query that does not parse",
                    query,
                    token.clone(),
                    None,
                    None,
                ));
            }
            if has_body {
                for (what, kind, body) in [
                    ("a body that is not JSON", "text/plain", "hello".to_string()),
                    ("malformed JSON", "application/json", "{\"a\":".to_string()),
                    (
                        "JSON of the wrong shape",
                        "application/json",
                        "[1,2]".to_string(),
                    ),
                    (
                        "wrong field types",
                        "application/json",
                        "{\"email\":5,\"display_name\":[],\"token\":{}}".to_string(),
                    ),
                    (
                        "a body over the limit",
                        "application/json",
                        format!("{{\"x\":\"{}\"}}", "y".repeat(8192)),
                    ),
                ] {
                    cases.push((what, fill(false), token.clone(), Some(kind), Some(body)));
                }
            }
            for (what, target, token, kind, body) in cases {
                let mut request = t.client.request(method.clone(), t.url(&target));
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                if let Some(kind) = kind {
                    request = request.header("content-type", kind);
                }
                if let Some(body) = body {
                    request = request.body(body);
                }
                let response = request.send().await.expect("request");
                let status = response.status().as_u16();
                let text = response.text().await.expect("body");
                assert!(
                    documented.contains(&status),
                    "{method} {path} with {what}: {status} is not among {documented:?}: {text}"
                );
                assert!(
                    (400..500).contains(&status),
                    "{method} {path} with {what}: {status} {text}"
                );
                let json: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{method} {path} with {what}: {e}: {text}"));
                assert!(
                    json["error"]["code"].is_string(),
                    "{method} {path} with {what}: {text}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "walked {checked} cases");
    t.app.shutdown().await;
}
