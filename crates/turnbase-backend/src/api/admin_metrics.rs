//! `/api/v1/admin/metrics`: this process's metrics in the Prometheus text
//! format, for the admin console's live counters (connections, queue
//! depths, turns per minute) without a second origin for the browser to
//! reach. Inside `turnbase up` the gateway shares the registry, so its
//! connection gauges are here too.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use turnbase_core::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AdminSession;
use super::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The process's metrics (Prometheus text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain", body = String),
        (status = 404, description = "Metrics are off (no `BACKEND_METRICS_ADDR`)", body = ErrorBody),
    ))]
async fn metrics(
    State(state): State<AppState>,
    _admin: axum::Extension<AdminSession>,
) -> Result<Response, ApiError> {
    let Some(text) = state.telemetry.prometheus_text() else {
        return Err(ApiError::NotFound(
            "this backend keeps no Prometheus metrics".into(),
        ));
    };
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
