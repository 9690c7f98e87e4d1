//! `/api/v1/user`: the signed-in player's account and sessions.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use turnbase_accounts::CachedSession;
use turnbase_core::http::ErrorBody;
use turnbase_store::accounts::{AccountRow, SessionRow};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Authenticated, ClientAddr};
use super::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me, rename))
        .routes(routes!(upgrade))
        .routes(routes!(sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(revoke_others))
        .routes(routes!(logout))
}

/// An account as its owner sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Me {
    id: Uuid,
    /// Absent for a guest.
    email: Option<String>,
    display_name: String,
    /// `player` or `admin`.
    role: String,
    is_guest: bool,
    created_at: DateTime<Utc>,
}

impl From<&AccountRow> for Me {
    fn from(a: &AccountRow) -> Self {
        Me {
            id: a.id,
            email: a.email.clone(),
            display_name: a.display_name.clone(),
            role: a.role.as_str().to_string(),
            is_guest: a.is_guest,
            created_at: a.created_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SessionView {
    id: Uuid,
    device_name: String,
    /// ISO country code of the address it was opened from, if known.
    country: Option<String>,
    created_at: DateTime<Utc>,
    /// Updated every few minutes of use, not on every request.
    last_seen_at: DateTime<Utc>,
    /// Whether this is the session making the request.
    current: bool,
}

impl SessionView {
    pub(super) fn current(s: &CachedSession) -> Self {
        SessionView {
            id: s.session_id,
            device_name: s.device_name.clone(),
            country: s.country.clone(),
            created_at: s.created_at,
            last_seen_at: DateTime::from_timestamp(s.last_seen_recorded(), 0)
                .unwrap_or(s.created_at),
            current: true,
        }
    }

    pub(super) fn of(row: SessionRow, current: Uuid) -> Self {
        SessionView {
            current: row.id == current,
            id: row.id,
            device_name: row.device_name,
            country: row.country,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
        }
    }
}

/// The signed-in account.
#[utoipa::path(get, path = "/me", tag = "user", security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = Me),
        (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody),
    ))]
async fn me(Authenticated(s): Authenticated) -> Json<Me> {
    Json(Me::from(&s.account))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Rename {
    /// 1 to 32 characters, no control characters.
    #[schema(min_length = 1, max_length = 32)]
    display_name: String,
}

/// Change the display name.
#[utoipa::path(patch, path = "/me", tag = "user", security(("bearer" = [])), request_body = Rename,
    responses(
        (status = 200, description = "The updated account", body = Me),
        (status = 400, description = "Bad display name", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody),
    ))]
async fn rename(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Json(body): Json<Rename>,
) -> Result<Json<Me>, ApiError> {
    let account = state.accounts.rename(&s, &body.display_name).await?;
    Ok(Json(Me::from(&account)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpgradeBody {
    email: String,
    /// The code mailed by `POST /api/v1/public/auth/email/start`.
    code: String,
}

/// Give a guest account an email address, proven by a mailed code. The
/// account id, and with it every seat, is kept.
#[utoipa::path(post, path = "/me/upgrade", tag = "user", security(("bearer" = [])), request_body = UpgradeBody,
    responses(
        (status = 200, description = "The account, now with an email address", body = Me),
        (status = 400, description = "Malformed input, or a wrong or expired code (`invalid_code`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody),
        (status = 409, description = "Not a guest, or the address belongs to another account", body = ErrorBody),
        (status = 429, description = "Too many requests from this client", body = ErrorBody),
    ))]
async fn upgrade(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    ClientAddr(client): ClientAddr,
    Json(body): Json<UpgradeBody>,
) -> Result<Json<Me>, ApiError> {
    let account = state
        .accounts
        .upgrade(&s, &body.email, &body.code, client)
        .await?;
    Ok(Json(Me::from(&account)))
}

#[derive(Serialize, utoipa::ToSchema)]
struct SessionList {
    items: Vec<SessionView>,
}

/// Every session of the account, most recently used first.
#[utoipa::path(get, path = "/sessions", tag = "user", security(("bearer" = [])),
    responses(
        (status = 200, description = "The sessions", body = SessionList),
        (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody),
    ))]
async fn sessions(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
) -> Result<Json<SessionList>, ApiError> {
    let rows = state.accounts.sessions(&s).await?;
    Ok(Json(SessionList {
        items: rows
            .into_iter()
            .map(|r| SessionView::of(r, s.session_id))
            .collect(),
    }))
}

/// Revoke one of your sessions (its token stops working at once).
#[utoipa::path(delete, path = "/sessions/{id}", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody),
        (status = 404, description = "You have no such session", body = ErrorBody),
    ))]
async fn revoke_session(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    state.accounts.revoke_session(&s, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
struct Revoked {
    revoked: usize,
}

/// Revoke every session but this one.
#[utoipa::path(post, path = "/sessions/revoke-others", tag = "user", security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were revoked", body = Revoked),
        (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody),
    ))]
async fn revoke_others(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
) -> Result<Json<Revoked>, ApiError> {
    let revoked = state.accounts.revoke_others(&s).await?;
    Ok(Json(Revoked { revoked }))
}

/// End this session.
#[utoipa::path(post, path = "/logout", tag = "user", security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody),
    ))]
async fn logout(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
) -> Result<Response, ApiError> {
    state.accounts.logout(&s).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
