//! HTTP pieces every Turnbase listener shares: the JSON error body, the
//! middleware that makes every error answer use it, request spans with W3C
//! trace context, request metrics, and binding a listener with a clear error.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt as _;
use serde::Serialize;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The body of every 4xx and 5xx answer: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `not_found`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// For input with several faults: each one, by where it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldProblem>,
}

/// One fault of the input: a JSON pointer into it and the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldProblem {
    pub path: String,
    pub reason: String,
}

/// Builds an error answer with the standard body.
pub fn error_response(
    status: StatusCode,
    code: impl Into<String>,
    message: impl Into<String>,
) -> Response {
    error_response_with_details(status, code, message, Vec::new())
}

/// An error answer that lists each fault of the input in `details`.
pub fn error_response_with_details(
    status: StatusCode,
    code: impl Into<String>,
    message: impl Into<String>,
    details: Vec<FieldProblem>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message: message.into(),
            details,
        },
    };
    (status, axum::Json(body)).into_response()
}

/// 401 with `WWW-Authenticate: Bearer`.
pub fn unauthorized_response(message: impl Into<String>) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// 429 with `Retry-After` in whole seconds (at least one).
pub fn rate_limited_response(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; try again in {secs} s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The default code for a status, used when a layer or the framework (not
/// our handlers) produced the error.
pub fn default_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// Middleware: rewrites any error answer that is not already JSON (axum's
/// own 404/405/413/415/422 rejections, tower-http's limits and timeouts)
/// into the standard error body, keeping its status and headers such as
/// `Allow` and `Retry-After`.
pub async fn normalize_errors(request: Request, next: Next) -> Response {
    normalized(next.run(request).await).await
}

/// `response` with the standard error body when it is an error answer that
/// is not JSON already (what [`normalize_errors`] does, for services that
/// are not built from axum layers).
pub async fn normalized(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Framework error texts are short; anything longer is cut.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let mut fresh = error_response(status, default_code(status), message);
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *fresh.headers_mut() = headers;
    fresh
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Request counters and durations, labelled by method, route and status.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Counter<u64>,
    duration: Histogram<f64>,
}

impl HttpMetrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            requests: meter
                .u64_counter("http_server_requests")
                .with_description("HTTP requests answered")
                .build(),
            duration: meter
                .f64_histogram("http_server_request_duration")
                .with_unit("s")
                .with_description("Time to answer an HTTP request")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .build(),
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Writes the current span's W3C trace context (`traceparent`) into
/// `headers`, so a call to another service continues the trace.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let current = tracing::Span::current();
    if current.is_disabled() {
        // Nothing is traced here (the span is filtered out): no context to pass.
        return;
    }
    let cx = current.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers));
    });
}

/// Request ids: random UUIDs (version 4) drawn from the thread's
/// user-space generator. tower-http's `MakeRequestUuid` asks the operating
/// system for each one (a `getrandom` system call per request, seen with
/// strace under the gateway benchmark); an id only has to be unique, not
/// secret.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIds;

impl tower_http::request_id::MakeRequestId for RequestIds {
    fn make_request_id<B>(
        &mut self,
        _request: &http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        Some(tower_http::request_id::RequestId::new(new_request_id()))
    }
}

/// A fresh request id (what [`RequestIds`] makes), as a header value.
pub fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Middleware: opens the request span (continuing a W3C `traceparent` from
/// the caller), records the trace and span ids on it so that every log line
/// inside the request carries them, and counts and times the request.
pub async fn observe(
    axum::extract::State(metrics): axum::extract::State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(opentelemetry::StringValue::from("unmatched"), |p| {
            p.as_str().to_string().into()
        });
    observed(&metrics, route, request, |request| next.run(request)).await
}

/// What [`observe`] does, around `inner`, for a request whose route
/// pattern the caller knows (services that are not built from axum layers).
pub async fn observed<F, Fut>(
    metrics: &HttpMetrics,
    route: opentelemetry::StringValue,
    request: Request,
    inner: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let started = Instant::now();
    let method = request.method().clone();
    let probe = is_probe(request.uri().path());
    let span = {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!(
            "http_request",
            otel.name = %format!("{method} {}", route.as_str()),
            http.method = %method,
            http.route = %route.as_str(),
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    };
    // Trace context is only worth reading when the span is recorded (the
    // log level lets it through); otherwise this is per-request work for
    // nothing.
    if !span.is_disabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        let otel_cx = span.context();
        let span_ref = otel_cx.span();
        let ids = span_ref.span_context();
        if ids.is_valid() {
            span.record("trace_id", tracing::field::display(ids.trace_id()));
            span.record("span_id", tracing::field::display(ids.span_id()));
        }
    }

    let response = inner(request).instrument(span.clone()).await;

    let status = response.status();
    let elapsed = started.elapsed().as_secs_f64();
    let labels = [
        KeyValue::new("method", method_label(&method)),
        KeyValue::new("route", route),
        KeyValue::new("status", i64::from(status.as_u16())),
    ];
    metrics.requests.add(1, &labels);
    metrics.duration.record(elapsed, &labels);
    span.in_scope(|| {
        let took_ms = elapsed * 1000.0;
        let code = status.as_u16();
        if status.is_server_error() {
            tracing::warn!(status = code, took_ms, "request failed");
        } else if probe {
            tracing::debug!(status = code, took_ms, "request done");
        } else {
            tracing::info!(status = code, took_ms, "request done");
        }
    });
    response
}

/// The method as a metric label, without an allocation for the usual ones.
fn method_label(method: &Method) -> opentelemetry::Value {
    let known = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return opentelemetry::Value::from(method.to_string()),
    };
    opentelemetry::Value::from(known)
}

/// Probes are polled constantly; their access log lines are debug only.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Binds a TCP listener, naming the variable that chose the address when it
/// fails (for example because the port is in use).
pub async fn bind(addr: SocketAddr, variable: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{variable}: cannot listen on {addr}: {e}"))
}

/// A plain-text 200 answer, for `/metrics`.
pub fn text_response(content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        use tower_http::request_id::MakeRequestId as _;
        let request = http::Request::new(());
        let mut make = super::RequestIds;
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                let id = make.make_request_id(&request).expect("an id");
                let text = id.header_value().to_str().expect("ascii").to_string();
                let parsed = uuid::Uuid::parse_str(&text).expect("a UUID");
                assert_eq!(parsed.get_version_num(), 4, "{text}");
                text
            })
            .collect();
        assert_eq!(ids.len(), 1000);
    }

    use super::*;
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt as _;

    #[derive(serde::Deserialize)]
    struct Order {
        #[allow(dead_code)]
        fleet: u32,
    }

    fn app() -> Router {
        Router::new()
            .route("/orders", post(|_: axum::Json<Order>| async { "ok" }))
            .layer(axum::extract::DefaultBodyLimit::max(64))
            .layer(axum::middleware::from_fn(normalize_errors))
    }

    async fn call(request: http::Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = app().oneshot(request).await.expect("infallible router");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, headers, json)
    }

    fn request(
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> http::Request<Body> {
        let mut builder = http::Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder
            .body(Body::from(body.to_string()))
            .expect("valid request")
    }

    #[tokio::test]
    async fn framework_errors_get_the_json_error_body() {
        let json = Some("application/json");
        let big = format!("{{\"fleet\": 1, \"pad\": \"{}\"}}", "x".repeat(200));
        let cases: Vec<(http::Request<Body>, StatusCode, &str)> = vec![
            (
                request("GET", "/nowhere", None, ""),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                request("GET", "/orders", None, ""),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                request("POST", "/orders", None, "{\"fleet\":1}"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                request("POST", "/orders", json, "{\"fleet\":\"many\"}"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                request("POST", "/orders", json, "{\"fleet\":"),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request("POST", "/orders", json, &big),
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            ),
        ];
        for (req, status, code) in cases {
            let what = format!("{} {}", req.method(), req.uri());
            let (got, headers, body) = call(req).await;
            assert_eq!(got, status, "{what}: {body}");
            assert_eq!(body["error"]["code"], code, "{what}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{what}: {body}"
            );
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{what}");
        }
    }

    #[tokio::test]
    async fn status_specific_headers_survive() {
        let (status, headers, _) = call(request("DELETE", "/orders", None, "")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "POST");
    }

    #[tokio::test]
    async fn json_errors_pass_through_unchanged() {
        let router = Router::new()
            .route(
                "/teapot",
                axum::routing::get(|| async {
                    error_response(StatusCode::CONFLICT, "race_name_taken", "taken")
                }),
            )
            .layer(axum::middleware::from_fn(normalize_errors));
        let response = router
            .oneshot(request("GET", "/teapot", None, ""))
            .await
            .expect("infallible");
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(
            std::str::from_utf8(&bytes).expect("utf-8"),
            r#"{"error":{"code":"race_name_taken","message":"taken"}}"#
        );
    }
}
