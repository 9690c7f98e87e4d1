//! `/api/v1/admin/games`: every game (search and filters), one game with
//! its seats, applications and state history, cancel and ownership
//! transfer. Actions are written to the audit log with the change.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use turnbase_core::http::ErrorBody;
use turnbase_lobby::AdminActor;
use turnbase_store::lobby::GameFilter;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::AdminSession;
use super::games::{GameDetailJson, GameJson, GamePage, caller, page_limit, parse_state};
use super::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_games))
        .routes(routes!(show_game))
        .routes(routes!(cancel_game))
        .routes(routes!(transfer_game))
        .routes(routes!(retry_start))
}

fn actor(admin: &AdminSession) -> AdminActor {
    let a = admin.actor();
    AdminActor {
        id: a.id,
        email: a.email,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AdminGameQuery {
    /// Part of the title (case-insensitive).
    q: Option<String>,
    state: Option<String>,
    engine: Option<String>,
    owner: Option<Uuid>,
    before: Option<Uuid>,
    /// Page size, 1 to 100 (default 50).
    limit: Option<i64>,
}

/// Every game, public or not, newest first.
#[utoipa::path(get, path = "/games", tag = "admin", security(("bearer" = [])), params(AdminGameQuery),
    responses(
        (status = 200, description = "A page of games", body = GamePage),
        (status = 400, description = "Bad filter or page size", body = ErrorBody),
    ))]
async fn list_games(
    State(state): State<AppState>,
    Query(q): Query<AdminGameQuery>,
) -> Result<Json<GamePage>, ApiError> {
    let limit = page_limit(q.limit, 50)?;
    if q.q.as_ref().is_some_and(|t| t.chars().count() > 100) {
        return Err(ApiError::BadRequest(
            "q must be at most 100 characters".into(),
        ));
    }
    if q.engine.as_ref().is_some_and(|e| e.len() > 64) {
        return Err(ApiError::BadRequest("engine: at most 64 characters".into()));
    }
    let views = state
        .lobby
        .admin_list_games(GameFilter {
            search: q.q.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
            state: parse_state(q.state.as_deref())?,
            engine: q.engine,
            owner: q.owner,
            before: q.before,
            limit: limit + 1,
            ..GameFilter::default()
        })
        .await?;
    Ok(Json(GamePage::of(&views, limit)))
}

/// One game with its seats, every application and its state history.
#[utoipa::path(get, path = "/games/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The game", body = GameDetailJson),
        (status = 404, description = "No such game", body = ErrorBody),
    ))]
async fn show_game(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
) -> Result<Json<GameDetailJson>, ApiError> {
    let detail = state.lobby.game(caller(&admin.0), id, None).await?;
    Ok(Json(detail.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    /// Why; recorded in the audit log and told to the players.
    reason: String,
}

/// Cancel a game that has not ended (audited).
#[utoipa::path(post, path = "/games/{id}/cancel", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = CancelBody,
    responses(
        (status = 200, description = "The game, cancelled", body = GameJson),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game has already ended (illegal_transition)", body = ErrorBody),
    ))]
async fn cancel_game(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
    Json(body): Json<CancelBody>,
) -> Result<Json<GameJson>, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::BadRequest("reason: 1 to 500 characters".into()));
    }
    let by = actor(&admin);
    let view = state
        .lobby
        .cancel(caller(&admin.0), id, Some((&by, reason)))
        .await?;
    Ok(Json(view.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    /// The account that will own the game.
    owner_id: Uuid,
}

/// Give a game another owner (audited).
#[utoipa::path(post, path = "/games/{id}/transfer", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = TransferBody,
    responses(
        (status = 200, description = "The game", body = GameJson),
        (status = 404, description = "No such game or account", body = ErrorBody),
        (status = 409, description = "The game has ended, or the account is blocked", body = ErrorBody),
    ))]
async fn transfer_game(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
    Json(body): Json<TransferBody>,
) -> Result<Json<GameJson>, ApiError> {
    let view = state
        .lobby
        .transfer(&actor(&admin), id, body.owner_id)
        .await?;
    Ok(Json(view.into()))
}

/// Start again a game whose engine could not be started (audited).
#[utoipa::path(post, path = "/games/{id}/retry-start", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The game, starting again", body = GameJson),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game's start has not failed (illegal_transition)", body = ErrorBody),
        (status = 503, description = "The runtime's queue is full (runtime_busy)", body = ErrorBody),
    ))]
async fn retry_start(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
) -> Result<Json<GameJson>, ApiError> {
    let by = actor(&admin);
    let view = state
        .lobby
        .retry_start(caller(&admin.0), id, Some(&by))
        .await?;
    Ok(Json(view.into()))
}
