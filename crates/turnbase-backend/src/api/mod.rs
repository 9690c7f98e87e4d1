//! The backend's HTTP API: probes, the route groups under `/api/v1`, the
//! OpenAPI document, and the layers every request passes through. This is
//! the only module that knows HTTP status codes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http::{HeaderName, StatusCode};
use serde::Serialize;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use turnbase_core::http::{
    ErrorBody, HttpMetrics, error_response, normalize_errors, observe, rate_limited_response,
    unauthorized_response,
};
use turnbase_core::readiness::Readiness;
use turnbase_store::{Database, InstanceInfo};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::HttpConfig;

mod admin_accounts;
mod admin_games;
mod admin_mail;
mod admin_metrics;
mod admin_runtime;
mod auth;
mod games;
mod internal;
mod notifications;
pub mod outage;
mod public_auth;
mod turns;
mod user;

use auth::SecuritySchemes;
pub use auth::{ADMIN_ROUTE_PREFIX, INTERNAL_ROUTE_PREFIX};

/// How long `/readyz` waits for the database before calling it not ready.
const READINESS_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub readiness: Readiness,
    pub instance: Arc<InstanceInfo>,
    /// The version of the running binary.
    pub version: &'static str,
    pub mail: turnbase_mail::MailService,
    pub accounts: turnbase_accounts::AccountService,
    pub lobby: turnbase_lobby::LobbyService,
    pub runtime: turnbase_runtime::Runtime,
    pub turns: turnbase_turns::TurnService,
    pub notify: turnbase_notify::NotifyService,
    /// The secret gateways present on `/api/v1/internal`.
    pub internal_token: Arc<turnbase_core::config::Secret<String>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<turnbase_accounts::TrustedProxies>,
    /// Whether requests find the database away right now.
    pub outage: Arc<outage::Outage>,
    /// The process's metrics, read back by `/api/v1/admin/metrics`.
    pub telemetry: turnbase_core::telemetry::Telemetry,
}

/// Errors a handler can return; converted to status and JSON body here only.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("too many requests")]
    RateLimited(Duration),
    /// A status with a code more specific than the status's own.
    #[error("{2}")]
    Coded(StatusCode, &'static str, String),
    /// 503 with `Retry-After`: a queue is full for now.
    #[error("{1}")]
    Busy(&'static str, String),
    /// Input with several faults, each listed in the body's `details`.
    #[error("{2}")]
    Detailed(
        StatusCode,
        &'static str,
        String,
        Vec<turnbase_core::http::FieldProblem>,
    ),
    /// A JSON error body made elsewhere (an engine's refusal, passed on
    /// unchanged).
    #[error("status {0}")]
    Raw(StatusCode, bytes::Bytes),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(message) => {
                error_response(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            ApiError::NotFound(message) => {
                error_response(StatusCode::NOT_FOUND, "not_found", message)
            }
            ApiError::Conflict(message) => {
                error_response(StatusCode::CONFLICT, "conflict", message)
            }
            ApiError::Forbidden(message) => {
                error_response(StatusCode::FORBIDDEN, "forbidden", message)
            }
            ApiError::Unauthorized(message) => unauthorized_response(message),
            ApiError::RateLimited(wait) => rate_limited_response(wait),
            ApiError::Coded(status, code, message) => error_response(status, code, message),
            ApiError::Busy(code, message) => {
                let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, code, message);
                response.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("5"),
                );
                response
            }
            ApiError::Detailed(status, code, message, details) => {
                turnbase_core::http::error_response_with_details(status, code, message, details)
            }
            ApiError::Raw(status, body) => (
                status,
                [(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            ApiError::Unexpected(err)
                if turnbase_store::StoreError::in_chain_is_unavailable(err.as_ref()) =>
            {
                // Logged once per outage by `outage::watch`, not here.
                tracing::debug!(error = %format!("{err:#}"), "the database is unavailable");
                database_unavailable_response()
            }
            ApiError::Unexpected(err) => {
                tracing::error!(error = %format!("{err:#}"), "request failed unexpectedly");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "an unexpected error occurred; it has been logged",
                )
            }
        }
    }
}

/// 503 `database_unavailable` with `Retry-After`, marked for the outage
/// watch.
fn database_unavailable_response() -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        "the database cannot be reached right now; try again shortly",
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("5"),
    );
    response
        .extensions_mut()
        .insert(outage::DatabaseUnavailable);
    response
}

/// A page of a keyset-paged list: `rows` were fetched with `limit + 1`, so
/// one more than fits means there is a next page, which starts before the
/// last item shown.
pub(crate) fn page<R, T>(
    rows: Vec<R>,
    limit: i64,
    id: impl Fn(&T) -> uuid::Uuid,
) -> (Vec<T>, Option<uuid::Uuid>)
where
    T: From<R>,
{
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    let items: Vec<T> = rows.into_iter().take(limit).map(T::from).collect();
    let next = if more { items.last().map(&id) } else { None };
    (items, next)
}

impl From<turnbase_accounts::AccountError> for ApiError {
    fn from(err: turnbase_accounts::AccountError) -> Self {
        use turnbase_accounts::AccountError as E;
        match err {
            E::Invalid(message) => ApiError::BadRequest(message),
            E::InvalidCode => ApiError::Coded(
                StatusCode::BAD_REQUEST,
                "invalid_code",
                E::InvalidCode.to_string(),
            ),
            E::Unauthorized => ApiError::Unauthorized(E::Unauthorized.to_string()),
            E::RateLimited(wait) => ApiError::RateLimited(wait),
            E::Blocked => ApiError::Coded(
                StatusCode::FORBIDDEN,
                "account_blocked",
                E::Blocked.to_string(),
            ),
            E::NotFound(message) => ApiError::NotFound(message),
            E::Conflict(message) => ApiError::Conflict(message),
            E::Unexpected(err) => ApiError::Unexpected(err),
        }
    }
}

impl From<turnbase_lobby::LobbyError> for ApiError {
    fn from(err: turnbase_lobby::LobbyError) -> Self {
        use turnbase_lobby::LobbyError as E;
        use turnbase_store::lobby::{NameHold, SeatRefusal as R};
        let message = err.to_string();
        match err {
            E::Invalid(message) => ApiError::BadRequest(message),
            E::UnknownEngine(_) => {
                ApiError::Coded(StatusCode::BAD_REQUEST, "unknown_engine", message)
            }
            E::InvalidSettings(problems) => {
                let details = problems
                    .into_iter()
                    .map(|p| turnbase_core::http::FieldProblem {
                        path: format!("/settings{}", p.path),
                        reason: p.reason,
                    })
                    .collect::<Vec<_>>();
                let first = details
                    .first()
                    .map(|d| format!(": {} {}", d.path, d.reason))
                    .unwrap_or_default();
                ApiError::Detailed(
                    StatusCode::BAD_REQUEST,
                    "invalid_settings",
                    format!("{message}{first}"),
                    details,
                )
            }
            E::NotFound(message) => ApiError::NotFound(message),
            E::Forbidden(message) => ApiError::Forbidden(message),
            E::Illegal(_) => ApiError::Coded(StatusCode::CONFLICT, "illegal_transition", message),
            E::Refused(refusal) => {
                let (status, code) = match refusal {
                    R::NotEnrolling(_) => (StatusCode::CONFLICT, "enrolment_closed"),
                    R::Full => (StatusCode::CONFLICT, "game_full"),
                    R::NameHeld(NameHold::Registered) => (StatusCode::CONFLICT, "race_name_taken"),
                    R::NameHeld(NameHold::Pending) => (StatusCode::CONFLICT, "race_name_reserved"),
                    R::AlreadyApplied => (StatusCode::CONFLICT, "already_applied"),
                    R::WrongInvite => (StatusCode::FORBIDDEN, "wrong_invite_code"),
                    R::NotPending(_) => (StatusCode::CONFLICT, "application_not_pending"),
                    R::SeatNotOpen => (StatusCode::CONFLICT, "seat_not_open"),
                    R::NoGame | R::NoApplication => (StatusCode::NOT_FOUND, "not_found"),
                };
                ApiError::Coded(status, code, message)
            }
            E::Conflict(message) => ApiError::Conflict(message),
            E::Busy => ApiError::Busy("runtime_busy", message),
            E::Unexpected(err) => ApiError::Unexpected(err),
        }
    }
}

impl From<turnbase_turns::TurnError> for ApiError {
    fn from(err: turnbase_turns::TurnError) -> Self {
        use turnbase_turns::TurnError as E;
        let message = err.to_string();
        match err {
            E::NotFound(message) => ApiError::NotFound(message),
            E::Forbidden(message) => ApiError::Forbidden(message),
            E::Invalid(message) => ApiError::BadRequest(message),
            E::Conflict { code, message } => ApiError::Coded(StatusCode::CONFLICT, code, message),
            E::TurnClosed { turn, .. } => {
                let body = serde_json::json!({"error": {
                    "code": "turn_closed",
                    "message": message,
                    "turn": turn,
                }});
                ApiError::Raw(StatusCode::CONFLICT, bytes::Bytes::from(body.to_string()))
            }
            E::Engine { status, body } => match StatusCode::from_u16(status) {
                Ok(s)
                    if s.is_client_error()
                        && serde_json::from_slice::<serde_json::Value>(&body).is_ok() =>
                {
                    ApiError::Raw(s, body)
                }
                _ => ApiError::Coded(
                    StatusCode::BAD_GATEWAY,
                    "engine_error",
                    format!("the game's engine answered {status}"),
                ),
            },
            E::Unavailable(reason) => ApiError::Coded(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_unavailable",
                format!("the game's engine is not answering; try again shortly ({reason})"),
            ),
            E::Unexpected(err) => ApiError::Unexpected(err),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Turnbase API",
        description = "HTTP API of the Turnbase backend. Every 4xx and 5xx answer has the body \
                       `{\"error\":{\"code\":…,\"message\":…}}`.",
        license(name = "Apache-2.0 OR MIT", identifier = "Apache-2.0 OR MIT")
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "probes", description = "Liveness and readiness"),
        (name = "public", description = "No authentication"),
        (name = "user", description = "A signed-in player: `Authorization: Bearer <session token>`"),
        (name = "internal", description = "Gateways only: `Authorization: Bearer <BACKEND_INTERNAL_TOKEN>`"),
        (name = "admin", description = "Operators: a session of an account with the admin role"),
    )
)]
struct ApiDoc;

/// The routes with their OpenAPI description, before layers.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .nest("/api/v1/public", public_routes())
        .nest(
            "/api/v1/user",
            user::routes()
                .merge(games::user_routes())
                .merge(turns::user_routes())
                .merge(notifications::user_routes()),
        )
        .nest("/api/v1/internal", internal::routes())
        .nest("/api/v1/admin", admin_routes())
}

/// The admin API. Every route passes the admin guard.
fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .nest("/mail", admin_mail::routes())
        .merge(admin_accounts::routes())
        .merge(admin_games::routes())
        .merge(admin_runtime::routes())
        .merge(turns::admin_routes())
        .merge(notifications::admin_routes())
        .merge(admin_metrics::routes())
}

fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(server_info))
        .merge(public_auth::routes())
        .merge(games::public_routes())
        .merge(notifications::public_routes())
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi(version: &str) -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes().split_for_parts();
    doc.info.version = version.to_string();
    document_shared_statuses(&mut doc);
    doc.paths.paths.insert(
        "/api/v1/openapi.json".into(),
        utoipa::openapi::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .summary(Some("This OpenAPI document"))
                .tag("public")
                .response(
                    "200",
                    utoipa::openapi::ResponseBuilder::new().description("OpenAPI 3.1 document"),
                ),
        ),
    );
    doc
}

/// Adds to every operation the answers its layers and extractors can give
/// besides its own (each with the JSON error body), so that the document
/// lists every status a route can answer: the guard's 401/403 by path
/// prefix, 400 for a path parameter that does not parse, 400/413/415/422
/// for a JSON body that is malformed, too large, of another type or of the
/// wrong shape, 400 for a query that does not parse, and 503 when the
/// database is unavailable or the request times out.
fn document_shared_statuses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let probe = path == "/healthz" || path == "/readyz";
        let operations = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description));
            };
            if path.starts_with(ADMIN_ROUTE_PREFIX) {
                add("401", "Missing, unknown or revoked session token");
                add("403", "The session's account is not an admin");
            } else if path.starts_with("/api/v1/user/") {
                add("401", "Missing, unknown or revoked session token");
            } else if path.starts_with(INTERNAL_ROUTE_PREFIX) {
                add("401", "Missing or wrong internal secret");
            }
            if path.contains('{') {
                add("400", "A path parameter does not parse (e.g. not a UUID)");
            }
            let has_query = operation.parameters.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)))
            });
            if has_query {
                add("400", "A query parameter does not parse or is out of range");
            }
            if operation.request_body.is_some() {
                add("400", "The body is not valid JSON, or a value is invalid");
                add("413", "The body is larger than BACKEND_HTTP_BODY_LIMIT");
                add("415", "The body is not sent as application/json");
                add(
                    "422",
                    "The JSON does not have the expected fields and types",
                );
            }
            if !probe {
                add(
                    "503",
                    "The database is unavailable (database_unavailable, with Retry-After) or the request timed out",
                );
            }
        }
    }
}

/// Builds the router with every layer.
pub fn router(state: AppState, config: &HttpConfig, metrics: HttpMetrics) -> Router {
    let (router, _) = routes().split_for_parts();
    let doc = Arc::new(openapi(state.version));
    // The guards look at the path, so every route under their prefixes
    // passes them, including routes added later.
    let router = router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::guard,
    ));
    let request_id = HeaderName::from_static("x-request-id");
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.outage.clone(),
            outage::watch,
        ))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(config.body_limit))
        .layer(RequestBodyLimitLayer::new(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(turnbase_core::cors::layer(&config.cors))
        .layer(axum::middleware::from_fn_with_state(metrics, observe))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(
            request_id,
            turnbase_core::http::RequestIds,
        ))
        .layer(axum::middleware::from_fn(normalize_errors))
}

async fn not_found(request: Request) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
struct NotReady {
    error: turnbase_core::http::ErrorDetail,
    /// The components that are not ready.
    not_ready: Vec<String>,
}

/// Readiness: the database answers and every cache is warm.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Ready to take traffic", body = Health),
        (status = 503, description = "Not ready; names what is not", body = NotReady),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let mut not_ready: Vec<String> = Vec::new();
    match tokio::time::timeout(READINESS_DB_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database does not answer");
            not_ready.push("database".into());
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer in time");
            not_ready.push("database".into());
        }
    }
    not_ready.extend(state.readiness.not_ready().into_iter().map(String::from));
    if not_ready.is_empty() {
        return Json(Health { status: "ready" }).into_response();
    }
    let body = NotReady {
        error: turnbase_core::http::ErrorDetail {
            code: "not_ready".into(),
            message: format!("not ready: {}", not_ready.join(", ")),
            details: Vec::new(),
        },
        not_ready,
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

#[derive(Serialize, utoipa::ToSchema)]
struct ServerInfo {
    /// Always `turnbase`.
    name: &'static str,
    /// The backend's version.
    version: &'static str,
    /// Identifies this installation; stable across restarts.
    instance_id: uuid::Uuid,
}

/// What this server is: name, version and installation id.
#[utoipa::path(get, path = "/info", tag = "public",
    responses((status = 200, description = "Server information", body = ServerInfo)))]
async fn server_info(State(state): State<AppState>) -> Result<Json<ServerInfo>, ApiError> {
    Ok(Json(ServerInfo {
        name: "turnbase",
        version: state.version,
        instance_id: state.instance.id,
    }))
}
