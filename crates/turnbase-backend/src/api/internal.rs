//! `/api/v1/internal`: for gateways only, behind the shared secret
//! (checked by the guard in `auth`).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use turnbase_core::http::ErrorBody;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(resolve_session))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Resolve {
    /// A client's session token.
    token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Resolved {
    account_id: Uuid,
    session_id: Uuid,
    display_name: String,
    /// `player` or `admin`.
    role: String,
    is_guest: bool,
}

/// Resolve a client's session token to its account and session.
#[utoipa::path(post, path = "/sessions/resolve", tag = "internal", security(("bearer" = [])),
    request_body = Resolve,
    responses(
        (status = 200, description = "The session is valid", body = Resolved),
        (status = 401, description = "Bad internal secret, or the client's token is unknown or revoked", body = ErrorBody),
    ))]
async fn resolve_session(
    State(state): State<AppState>,
    Json(body): Json<Resolve>,
) -> Result<Json<Resolved>, ApiError> {
    let s = state.accounts.resolve(&body.token).await?;
    Ok(Json(Resolved {
        account_id: s.account.id,
        session_id: s.session_id,
        display_name: s.account.display_name.clone(),
        role: s.account.role.as_str().to_string(),
        is_guest: s.account.is_guest,
    }))
}
