//! `/api/v1/admin/runtime`: the engines of games (records with state,
//! driver, address, last health, restarts, jobs) and restarting one,
//! audited.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use turnbase_core::http::ErrorBody;
use turnbase_store::accounts::AuditEntry;
use turnbase_store::runtime::{JobRow, RecordState, RuntimeRecord};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::AdminSession;
use super::{ApiError, AppState};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_records))
        .routes(routes!(show_record))
        .routes(routes!(restart))
}

#[derive(Serialize, utoipa::ToSchema)]
struct RecordJson {
    game_id: Uuid,
    engine: String,
    /// `process`.
    driver: String,
    /// `per_game` or `shared`.
    placement: String,
    /// The engine's base URL.
    address: Option<String>,
    /// The driver's handle (a pid).
    handle: Option<String>,
    /// starting, ready, stopped, removed or failed.
    state: String,
    restarts: i64,
    last_health_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<RuntimeRecord> for RecordJson {
    fn from(r: RuntimeRecord) -> Self {
        RecordJson {
            game_id: r.game_id,
            engine: r.engine,
            driver: r.driver,
            placement: r.placement,
            address: r.address,
            handle: r.handle,
            state: r.state.as_str().to_string(),
            restarts: r.restarts,
            last_health_at: r.last_health_at,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct JobJson {
    id: Uuid,
    /// start, stop or remove.
    kind: String,
    /// queued, running, done or failed.
    status: String,
    attempts: i64,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<JobRow> for JobJson {
    fn from(j: JobRow) -> Self {
        JobJson {
            id: j.id,
            kind: j.kind.as_str().to_string(),
            status: j.status.as_str().to_string(),
            attempts: j.attempts,
            next_attempt_at: j.next_attempt_at,
            last_error: j.last_error,
            created_at: j.created_at,
            finished_at: j.finished_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct RecordList {
    items: Vec<RecordJson>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RecordQuery {
    /// starting, ready, stopped, removed or failed.
    state: Option<String>,
    /// At most this many (1 to 1000, default 200).
    limit: Option<i64>,
}

/// The engines of games, by game id.
#[utoipa::path(get, path = "/runtime", tag = "admin", security(("bearer" = [])), params(RecordQuery),
    responses(
        (status = 200, description = "Runtime records", body = RecordList),
        (status = 400, description = "Bad filter", body = ErrorBody),
    ))]
async fn list_records(
    State(state): State<AppState>,
    Query(q): Query<RecordQuery>,
) -> Result<Json<RecordList>, ApiError> {
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 1000".into()));
    }
    let filter = q
        .state
        .as_deref()
        .map(|t| {
            RecordState::parse(t).ok_or_else(|| {
                ApiError::BadRequest(
                    "state must be one of starting, ready, stopped, removed, failed".into(),
                )
            })
        })
        .transpose()?;
    let rows = state.runtime.records(filter, limit).await?;
    Ok(Json(RecordList {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct RecordDetail {
    record: RecordJson,
    /// The game's runtime jobs, oldest first.
    jobs: Vec<JobJson>,
}

/// One game's engine and its jobs.
#[utoipa::path(get, path = "/runtime/{game}", tag = "admin", security(("bearer" = [])),
    params(("game" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The record and its jobs", body = RecordDetail),
        (status = 404, description = "The game has no engine record", body = ErrorBody),
    ))]
async fn show_record(
    State(state): State<AppState>,
    Path(game): Path<Uuid>,
) -> Result<Json<RecordDetail>, ApiError> {
    let (record, jobs) = state
        .runtime
        .record(game)
        .await?
        .ok_or_else(|| ApiError::NotFound("that game has no engine record".into()))?;
    Ok(Json(RecordDetail {
        record: record.into(),
        jobs: jobs.into_iter().map(Into::into).collect(),
    }))
}

/// Restart a game's engine now (audited as `runtime.restart`).
#[utoipa::path(post, path = "/runtime/{game}/restart", tag = "admin", security(("bearer" = [])),
    params(("game" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The record after the restart", body = RecordJson),
        (status = 404, description = "The game has no engine record", body = ErrorBody),
        (status = 409, description = "The engine could not be restarted", body = ErrorBody),
    ))]
async fn restart(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(game): Path<Uuid>,
) -> Result<Json<RecordJson>, ApiError> {
    if state.runtime.record(game).await?.is_none() {
        return Err(ApiError::NotFound("that game has no engine record".into()));
    }
    let actor = admin.actor();
    let record = state
        .runtime
        .restart_audited(game, |r| AuditEntry {
            id: Uuid::now_v7(),
            actor_id: actor.id,
            actor_email: actor.email.clone(),
            action: "runtime.restart".into(),
            target: game.to_string(),
            detail: format!("restarts now {}", r.restarts),
            at: Utc::now(),
        })
        .await
        .map_err(|e| ApiError::Conflict(format!("the engine could not be restarted: {e:#}")))?;
    Ok(Json(record.into()))
}
