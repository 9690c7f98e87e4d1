//! The lobby over HTTP: engine kinds and race-name availability under
//! `/api/v1/public`, games and enrolment under `/api/v1/user`. The JSON
//! types here are converted by hand from the lobby's domain types.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use turnbase_core::http::ErrorBody;
use turnbase_lobby::{
    Availability, Caller, GameChanges, GameDetail, GameDraft, GameView, PlayRules, ScheduleSpec,
};
use turnbase_store::accounts::Role;
use turnbase_store::lobby::{
    ApplicationRow, ApplicationStatus, GameFilter, GameState, SeatRow, StateChangeRow, Visibility,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Authenticated;
use super::{ApiError, AppState};

/// Largest page of games.
pub(super) const MAX_GAMES_PAGE: i64 = 100;

pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(engines))
        .routes(routes!(availability))
}

pub fn user_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_game, list_games))
        .routes(routes!(show_game, edit_game))
        .routes(routes!(start_game))
        .routes(routes!(cancel_game))
        .routes(routes!(retry_start))
        .routes(routes!(apply, list_applications))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(withdraw))
        .routes(routes!(resign))
        .routes(routes!(substitute))
        .routes(routes!(add_bot))
        .routes(routes!(remove_bot))
        .routes(routes!(my_games))
}

pub(super) fn caller(s: &turnbase_accounts::CachedSession) -> Caller {
    Caller {
        id: s.account.id,
        admin: s.account.role == Role::Admin,
    }
}

pub(super) fn page_limit(limit: Option<i64>, default: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=MAX_GAMES_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_GAMES_PAGE}"
        )))
    }
}

pub(super) fn parse_state(text: Option<&str>) -> Result<Option<GameState>, ApiError> {
    text.map(|t| {
        GameState::parse(t).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state must be one of {}",
                GameState::ALL.map(GameState::as_str).join(", ")
            ))
        })
    })
    .transpose()
}

// ---- JSON --------------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
struct EngineJson {
    name: String,
    version: String,
    title: String,
    /// `simultaneous` or `sequential`.
    mode: String,
    min_players: u32,
    max_players: u32,
    /// Whether the engine plays bot seats.
    bots: bool,
    /// JSON Schema of the settings, every property with its default.
    #[schema(value_type = Object)]
    settings_schema: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EngineList {
    items: Vec<EngineJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TurnTime {
    utc: DateTime<Utc>,
    /// The same instant in the game's time zone (RFC 3339).
    local: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct GameJson {
    id: Uuid,
    title: String,
    engine: String,
    engine_version: String,
    /// enrolling, starting, running, paused, finished or cancelled.
    state: String,
    owner_id: Uuid,
    /// The settings as validated, defaults filled in.
    #[schema(value_type = Object)]
    settings: Value,
    min_players: i64,
    max_players: i64,
    /// Approved players and bots.
    seats_taken: i64,
    free_seats: i64,
    enrol_deadline: DateTime<Utc>,
    #[schema(value_type = Object)]
    schedule: Value,
    /// The platform's play rules: `early_turns`, `bot_delay`,
    /// `excused_misses`, `bot_takeover_after`.
    #[schema(value_type = Object)]
    rules: Value,
    /// The next five turn times if the game starts at its enrolment
    /// deadline (empty for per-move schedules). In a single game's answer
    /// only; lists leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_turns: Option<Vec<TurnTime>>,
    /// `public` or `unlisted`.
    visibility: String,
    /// Shown to the owner and admins only.
    invite_code: Option<String>,
    /// Why the engine could not be started (in `start_failed`).
    start_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
}

impl From<GameView> for GameJson {
    fn from(v: GameView) -> Self {
        let r = v.row;
        GameJson {
            id: r.id,
            title: r.title,
            engine: r.engine,
            engine_version: r.engine_version,
            state: r.state.as_str().to_string(),
            owner_id: r.owner_id,
            settings: v.settings,
            min_players: r.min_players,
            max_players: r.max_players,
            seats_taken: r.seats_taken,
            free_seats: (r.max_players - r.seats_taken).max(0),
            enrol_deadline: r.enrol_deadline,
            schedule: serde_json::to_value(&v.schedule).unwrap_or(Value::Null),
            rules: serde_json::to_value(&v.rules).unwrap_or(Value::Null),
            next_turns: v.preview.map(|times| {
                times
                    .into_iter()
                    .map(|t| TurnTime {
                        utc: t.utc,
                        local: t.local,
                    })
                    .collect()
            }),
            visibility: r.visibility.as_str().to_string(),
            invite_code: if v.manages { r.invite_code } else { None },
            start_error: r.start_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SeatJson {
    id: Uuid,
    /// Absent for a bot.
    account_id: Option<Uuid>,
    is_bot: bool,
    race_name: String,
    /// `active` or `resigned`.
    status: String,
    joined_at: DateTime<Utc>,
    resigned_at: Option<DateTime<Utc>>,
    /// Consecutive turns its player let pass without orders.
    misses: i64,
    /// The engine's bot plays the seat after too many misses, until its
    /// player sends orders again; meanwhile a substitute may apply for it.
    open_for_substitute: bool,
}

impl From<SeatRow> for SeatJson {
    fn from(s: SeatRow) -> Self {
        SeatJson {
            id: s.id,
            account_id: s.account_id,
            is_bot: s.is_bot,
            race_name: s.race_name,
            status: s.status.as_str().to_string(),
            joined_at: s.joined_at,
            resigned_at: s.resigned_at,
            misses: s.misses,
            open_for_substitute: s.bot_control && !s.is_bot,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ApplicationJson {
    id: Uuid,
    game_id: Uuid,
    account_id: Uuid,
    race_name: String,
    /// pending, approved, rejected, withdrawn, expired or closed.
    status: String,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    /// When a pending application lapses (and its name is released).
    expires_at: DateTime<Utc>,
    /// A substitute's application: the seat it would take over.
    seat_id: Option<Uuid>,
}

impl From<ApplicationRow> for ApplicationJson {
    fn from(a: ApplicationRow) -> Self {
        ApplicationJson {
            id: a.id,
            game_id: a.game_id,
            account_id: a.account_id,
            race_name: a.race_name,
            status: a.status.as_str().to_string(),
            reason: a.reason,
            created_at: a.created_at,
            decided_at: a.decided_at,
            expires_at: a.expires_at,
            seat_id: a.seat_id,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct StateChangeJson {
    /// Absent for the creation.
    from: Option<String>,
    to: String,
    /// Who moved it; absent when the platform did (the sweeper).
    actor_id: Option<Uuid>,
    reason: String,
    at: DateTime<Utc>,
}

impl From<StateChangeRow> for StateChangeJson {
    fn from(c: StateChangeRow) -> Self {
        StateChangeJson {
            from: c.from_state,
            to: c.to_state,
            actor_id: c.actor_id,
            reason: c.reason,
            at: c.at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct GameDetailJson {
    game: GameJson,
    seats: Vec<SeatJson>,
    /// Every application for the owner and admins; your own otherwise.
    applications: Vec<ApplicationJson>,
    /// State changes, oldest first (owner and admins).
    history: Vec<StateChangeJson>,
}

impl From<GameDetail> for GameDetailJson {
    fn from(d: GameDetail) -> Self {
        GameDetailJson {
            game: d.game.into(),
            seats: d.seats.into_iter().map(Into::into).collect(),
            applications: d.applications.into_iter().map(Into::into).collect(),
            history: d.history.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct GamePage {
    items: Vec<GameJson>,
    /// Pass as `before` for the next page; absent on the last page.
    next: Option<Uuid>,
}

impl GamePage {
    /// The page of `limit` games out of `views`, fetched with one more
    /// than fits to tell whether a next page exists.
    pub(super) fn of(views: &[GameView], limit: i64) -> GamePage {
        let limit = usize::try_from(limit).unwrap_or(0);
        let shown = &views[..views.len().min(limit)];
        let next = if views.len() > limit {
            shown.last().map(|v| v.row.id)
        } else {
            None
        };
        GamePage {
            items: shown.iter().cloned().map(Into::into).collect(),
            next,
        }
    }
}

// ---- public ------------------------------------------------------------

/// The engine kinds games can be created for.
#[utoipa::path(get, path = "/engines", tag = "public",
    responses((status = 200, description = "Every registered kind, by name", body = EngineList)))]
async fn engines(State(state): State<AppState>) -> Json<EngineList> {
    let items = state
        .lobby
        .engines()
        .kinds()
        .map(|k| EngineJson {
            name: k.name.clone(),
            version: k.version.clone(),
            title: k.title.clone(),
            mode: k.mode_name().to_string(),
            min_players: k.min_players,
            max_players: k.max_players,
            bots: k.bots,
            settings_schema: k.settings_schema.clone(),
        })
        .collect();
    Json(EngineList { items })
}

#[derive(Serialize, utoipa::ToSchema)]
struct AvailabilityJson {
    /// available, taken, reserved or invalid.
    status: &'static str,
    /// The name as it would be shown (normalised); absent when invalid.
    name: Option<String>,
    /// When a reservation lapses unless approved.
    reserved_until: Option<DateTime<Utc>>,
    /// Why a name is invalid.
    reason: Option<String>,
}

/// Whether a race name is free: names are unique across active games,
/// compared without case or accents.
#[utoipa::path(get, path = "/race-names/{name}/availability", tag = "public",
    params(("name" = String, Path, description = "The race name")),
    responses((status = 200, description = "What the directory says", body = AvailabilityJson)))]
async fn availability(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AvailabilityJson>, ApiError> {
    if name.len() > 256 {
        return Err(ApiError::BadRequest("the name is too long".into()));
    }
    let answer = match state.lobby.availability(&name).await? {
        Availability::Available { name } => AvailabilityJson {
            status: "available",
            name: Some(name),
            reserved_until: None,
            reason: None,
        },
        Availability::Taken { name } => AvailabilityJson {
            status: "taken",
            name: Some(name),
            reserved_until: None,
            reason: None,
        },
        Availability::Reserved { name, until } => AvailabilityJson {
            status: "reserved",
            name: Some(name),
            reserved_until: until,
            reason: None,
        },
        Availability::Invalid { reason } => AvailabilityJson {
            status: "invalid",
            name: None,
            reserved_until: None,
            reason: Some(reason),
        },
    };
    Ok(Json(answer))
}

// ---- games -------------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateGame {
    /// 1 to 80 characters.
    title: String,
    /// An engine kind's name (`GET /api/v1/public/engines`).
    engine: String,
    /// Settings for the engine; what is left out takes its default.
    #[serde(default)]
    #[schema(value_type = Object)]
    settings: Value,
    /// The kind's minimum when absent.
    min_players: Option<u32>,
    /// The kind's maximum when absent.
    max_players: Option<u32>,
    /// When enrolment closes: the game starts then if enough players are
    /// approved, and is cancelled otherwise.
    enrol_deadline: DateTime<Utc>,
    /// `{"kind":"cron","cron":"0 18 * * *","time_zone":"Europe/Berlin"}`,
    /// `{"kind":"interval","every":"24h"}` or, for sequential engines,
    /// `{"kind":"per_move","limit":"12h"}`.
    #[schema(value_type = Object)]
    schedule: ScheduleSpec,
    /// `public` (default) or `unlisted` (an invite code is made).
    visibility: Option<String>,
    /// Play rules; what is left out takes its default:
    /// `{"early_turns": true, "bot_delay": "2s", "excused_misses": 1,
    /// "bot_takeover_after": 3}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    rules: PlayRules,
}

/// Create a game. The answer has the settings with their defaults and
/// the next five turn times.
#[utoipa::path(post, path = "/games", tag = "user", security(("bearer" = [])), request_body = CreateGame,
    responses(
        (status = 201, description = "The game, enrolling", body = GameJson),
        (status = 400, description = "Invalid input: unknown_engine, invalid_settings (with details) or a field named in the message", body = ErrorBody),
    ))]
async fn create_game(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Json(body): Json<CreateGame>,
) -> Result<Response, ApiError> {
    let visibility = match body.visibility.as_deref() {
        None => Visibility::Public,
        Some(t) => Visibility::parse(t)
            .ok_or_else(|| ApiError::BadRequest("visibility must be public or unlisted".into()))?,
    };
    let view = state
        .lobby
        .create_game(
            caller(&s),
            GameDraft {
                title: body.title,
                engine: body.engine,
                settings: body.settings,
                min_players: body.min_players,
                max_players: body.max_players,
                enrol_deadline: body.enrol_deadline,
                schedule: body.schedule,
                visibility,
                rules: body.rules,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(GameJson::from(view))).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct GameQuery {
    /// An engine kind.
    engine: Option<String>,
    /// A state (default `enrolling`).
    state: Option<String>,
    /// At least this many free seats.
    free_seats: Option<i64>,
    /// Games older than this id (the previous page's `next`).
    before: Option<Uuid>,
    /// Page size, 1 to 100 (default 20).
    limit: Option<i64>,
}

/// Public games, newest first (by default those still enrolling).
#[utoipa::path(get, path = "/games", tag = "user", security(("bearer" = [])), params(GameQuery),
    responses((status = 200, description = "A page of games", body = GamePage)))]
async fn list_games(
    State(state): State<AppState>,
    Authenticated(_): Authenticated,
    Query(q): Query<GameQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(q.limit, 20)?;
    if let Some(n) = q.free_seats
        && !(0..=i64::from(turnbase_lobby::engines::MAX_PLAYERS_LIMIT)).contains(&n)
    {
        return Err(ApiError::BadRequest(format!(
            "free_seats must be 0 to {}",
            turnbase_lobby::engines::MAX_PLAYERS_LIMIT
        )));
    }
    if q.engine.as_ref().is_some_and(|e| e.len() > 64) {
        return Err(ApiError::BadRequest("engine: at most 64 characters".into()));
    }
    let views = state
        .lobby
        .list_games(GameFilter {
            engine: q.engine,
            state: Some(parse_state(q.state.as_deref())?.unwrap_or(GameState::Enrolling)),
            min_free_seats: q.free_seats.filter(|n| *n > 0),
            before: q.before,
            limit: limit + 1,
            ..GameFilter::default()
        })
        .await?;
    let body = views.rendered(
        |games| match serde_json::to_vec(&GamePage::of(games, limit)) {
            Ok(bytes) => bytes.into(),
            Err(err) => {
                tracing::error!(error = %err, "a game listing did not serialise");
                bytes::Bytes::new()
            }
        },
    );
    if body.is_empty() {
        return Err(ApiError::Unexpected(anyhow::anyhow!(
            "a game listing did not serialise"
        )));
    }
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct InviteQuery {
    /// The invite code of an unlisted game.
    invite_code: Option<String>,
}

/// A game with its seats (and, for the owner, applications and history).
/// An unlisted game is found only by those involved or with its code.
#[utoipa::path(get, path = "/games/{id}", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), InviteQuery),
    responses(
        (status = 200, description = "The game", body = GameDetailJson),
        (status = 404, description = "No such game (or unlisted and not yours)", body = ErrorBody),
    ))]
async fn show_game(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
    Query(q): Query<InviteQuery>,
) -> Result<Json<GameDetailJson>, ApiError> {
    let detail = state
        .lobby
        .game(caller(&s), id, q.invite_code.as_deref())
        .await?;
    Ok(Json(detail.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EditGame {
    title: Option<String>,
    /// Replaces the settings; what is left out takes its default.
    #[schema(value_type = Object)]
    settings: Option<Value>,
    min_players: Option<u32>,
    max_players: Option<u32>,
    enrol_deadline: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    schedule: Option<ScheduleSpec>,
    /// Replaces the play rules; what is left out takes its default.
    #[schema(value_type = Object)]
    rules: Option<PlayRules>,
}

/// Change an enrolling game (the owner).
#[utoipa::path(patch, path = "/games/{id}", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = EditGame,
    responses(
        (status = 200, description = "The game", body = GameJson),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game is no longer enrolling, or more seats are taken than the new maximum", body = ErrorBody),
    ))]
async fn edit_game(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<EditGame>,
) -> Result<Json<GameJson>, ApiError> {
    let view = state
        .lobby
        .edit_game(
            caller(&s),
            id,
            GameChanges {
                title: body.title,
                settings: body.settings,
                min_players: body.min_players,
                max_players: body.max_players,
                enrol_deadline: body.enrol_deadline,
                schedule: body.schedule,
                rules: body.rules,
            },
        )
        .await?;
    Ok(Json(view.into()))
}

/// Close enrolment now and start (the owner, once at least the minimum
/// of players is seated).
#[utoipa::path(post, path = "/games/{id}/start", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The game, starting", body = GameJson),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "Not enrolling (illegal_transition) or too few players", body = ErrorBody),
    ))]
async fn start_game(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<GameJson>, ApiError> {
    Ok(Json(state.lobby.start_early(caller(&s), id).await?.into()))
}

/// Start again a game whose engine could not be started (the owner).
#[utoipa::path(post, path = "/games/{id}/retry-start", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The game, starting again", body = GameJson),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game's start has not failed (illegal_transition)", body = ErrorBody),
        (status = 503, description = "The runtime's queue is full (runtime_busy, with Retry-After)", body = ErrorBody),
    ))]
async fn retry_start(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<GameJson>, ApiError> {
    let owner = Caller {
        admin: false,
        ..caller(&s)
    };
    Ok(Json(state.lobby.retry_start(owner, id, None).await?.into()))
}

/// Cancel an enrolling game, or one whose start failed (the owner).
#[utoipa::path(post, path = "/games/{id}/cancel", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The game, cancelled", body = GameJson),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game is past enrolling (illegal_transition or conflict)", body = ErrorBody),
    ))]
async fn cancel_game(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<GameJson>, ApiError> {
    let owner = Caller {
        admin: false,
        ..caller(&s)
    };
    Ok(Json(state.lobby.cancel(owner, id, None).await?.into()))
}

// ---- enrolment -----------------------------------------------------------

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Apply {
    /// 2 to 24 letters, digits, spaces and - ' . ; unique across active
    /// games without regard to case or accents.
    race_name: String,
    /// Required for an unlisted game.
    invite_code: Option<String>,
}

/// Apply to join a game; the race name is reserved until the owner
/// decides or the reservation expires.
#[utoipa::path(post, path = "/games/{id}/applications", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = Apply,
    responses(
        (status = 201, description = "The application, pending", body = ApplicationJson),
        (status = 400, description = "An invalid race name", body = ErrorBody),
        (status = 403, description = "A missing or wrong invite code (wrong_invite_code)", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "race_name_taken, race_name_reserved, already_applied, game_full or enrolment_closed", body = ErrorBody),
    ))]
async fn apply(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<Apply>,
) -> Result<Response, ApiError> {
    let application = state
        .lobby
        .apply(caller(&s), id, &body.race_name, body.invite_code.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ApplicationJson::from(application)),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ApplicationQuery {
    /// pending, approved, rejected, withdrawn, expired or closed.
    status: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ApplicationList {
    items: Vec<ApplicationJson>,
}

/// The game's applications, oldest first (the owner).
#[utoipa::path(get, path = "/games/{id}/applications", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), ApplicationQuery),
    responses(
        (status = 200, description = "The applications", body = ApplicationList),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
    ))]
async fn list_applications(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
    Query(q): Query<ApplicationQuery>,
) -> Result<Json<ApplicationList>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|t| {
            ApplicationStatus::parse(t).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "status must be one of {}",
                    ApplicationStatus::ALL
                        .map(ApplicationStatus::as_str)
                        .join(", ")
                ))
            })
        })
        .transpose()?;
    let rows = state.lobby.applications(caller(&s), id, status).await?;
    Ok(Json(ApplicationList {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Approved {
    application: ApplicationJson,
    seat: SeatJson,
}

/// Approve an application: the player is seated.
#[utoipa::path(post, path = "/games/{id}/applications/{application}/approve", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), ("application" = Uuid, Path, description = "Application id")),
    responses(
        (status = 200, description = "Approved and seated", body = Approved),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game or application", body = ErrorBody),
        (status = 409, description = "game_full, enrolment_closed, application_not_pending or (a substitute) seat_not_open", body = ErrorBody),
    ))]
async fn approve(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path((id, application)): Path<(Uuid, Uuid)>,
) -> Result<Json<Approved>, ApiError> {
    let (application, seat) = state.lobby.approve(caller(&s), id, application).await?;
    if application.seat_id.is_some() {
        // A substitute took the seat over: the engine's bot gives it back.
        if let Err(err) = state.turns.hand_back(id, seat.id).await {
            tracing::warn!(game = %id, error = %err, "the engine keeps playing the seat until its new player sends orders");
        }
    }
    Ok(Json(Approved {
        application: application.into(),
        seat: seat.into(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct Reject {
    /// Told to the applicant; at most 500 characters.
    reason: Option<String>,
}

/// Reject an application; its race name is released.
#[utoipa::path(post, path = "/games/{id}/applications/{application}/reject", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), ("application" = Uuid, Path, description = "Application id")),
    request_body = Reject,
    responses(
        (status = 200, description = "Rejected", body = ApplicationJson),
        (status = 400, description = "The reason is too long", body = ErrorBody),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game or application", body = ErrorBody),
        (status = 409, description = "application_not_pending", body = ErrorBody),
    ))]
async fn reject(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path((id, application)): Path<(Uuid, Uuid)>,
    Json(body): Json<Reject>,
) -> Result<Json<ApplicationJson>, ApiError> {
    let rejected = state
        .lobby
        .reject(caller(&s), id, application, body.reason.as_deref())
        .await?;
    Ok(Json(rejected.into()))
}

/// Take back your application, or your seat before the game starts.
#[utoipa::path(post, path = "/games/{id}/withdraw", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "Withdrawn; the race name is released", body = ApplicationJson),
        (status = 404, description = "No such game, or no live application of yours", body = ErrorBody),
        (status = 409, description = "The game has started (resign instead)", body = ErrorBody),
    ))]
async fn withdraw(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<ApplicationJson>, ApiError> {
    Ok(Json(state.lobby.withdraw(caller(&s), id).await?.into()))
}

/// Leave a game that has started; the seat stays, marked resigned.
#[utoipa::path(post, path = "/games/{id}/resign", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The seat, resigned", body = SeatJson),
        (status = 404, description = "No such game, or no active seat of yours", body = ErrorBody),
        (status = 409, description = "The game has not started or is over", body = ErrorBody),
    ))]
async fn resign(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<SeatJson>, ApiError> {
    let seat = state.lobby.resign(caller(&s), id).await?;
    // Not waited for any more; a sequential mover's clock runs out now.
    if let Err(err) = state.turns.seat_left(id, seat.id).await {
        tracing::warn!(game = %id, error = %err, "the turn clock did not take the resignation");
    }
    Ok(Json(seat.into()))
}

/// Apply to take over a seat the bot plays after its player went missing
/// (`open_for_substitute` in the game's seats); the owner approves it like
/// any application, and the seat, its race name and its history become
/// yours.
#[utoipa::path(post, path = "/games/{id}/seats/{seat}/substitute", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), ("seat" = Uuid, Path, description = "Seat id")),
    responses(
        (status = 201, description = "Applied", body = ApplicationJson),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "seat_not_open or already_applied", body = ErrorBody),
    ))]
async fn substitute(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path((id, seat)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let application = state.lobby.apply_substitute(caller(&s), id, seat).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApplicationJson::from(application)),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddBot {
    /// The bot's race name (the same rules as players').
    name: String,
}

/// Seat a bot (the owner, before the start, for engines that play bots).
#[utoipa::path(post, path = "/games/{id}/bots", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = AddBot,
    responses(
        (status = 201, description = "The bot's seat", body = SeatJson),
        (status = 400, description = "An invalid name", body = ErrorBody),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The engine plays no bots, game_full, enrolment_closed or the name is held", body = ErrorBody),
    ))]
async fn add_bot(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<AddBot>,
) -> Result<Response, ApiError> {
    let seat = state.lobby.add_bot(caller(&s), id, &body.name).await?;
    Ok((StatusCode::CREATED, Json(SeatJson::from(seat))).into_response())
}

/// Remove a bot seat before the start (the owner).
#[utoipa::path(delete, path = "/games/{id}/bots/{seat}", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), ("seat" = Uuid, Path, description = "The bot's seat id")),
    responses(
        (status = 200, description = "The removed seat", body = SeatJson),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game or bot seat", body = ErrorBody),
        (status = 409, description = "enrolment_closed", body = ErrorBody),
    ))]
async fn remove_bot(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path((id, seat)): Path<(Uuid, Uuid)>,
) -> Result<Json<SeatJson>, ApiError> {
    Ok(Json(
        state.lobby.remove_bot(caller(&s), id, seat).await?.into(),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
struct MyGameJson {
    game: GameJson,
    /// Whether you own it.
    owner: bool,
    /// Your seat, once approved.
    seat: Option<SeatJson>,
    /// Your pending application, before a decision.
    application: Option<ApplicationJson>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MyGamePage {
    items: Vec<MyGameJson>,
    next: Option<Uuid>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MyGameQuery {
    before: Option<Uuid>,
    /// Page size, 1 to 100 (default 20).
    limit: Option<i64>,
}

/// Games you own, hold a seat in or have applied to, newest first.
#[utoipa::path(get, path = "/me/games", tag = "user", security(("bearer" = [])), params(MyGameQuery),
    responses((status = 200, description = "A page of your games", body = MyGamePage)))]
async fn my_games(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Query(q): Query<MyGameQuery>,
) -> Result<Json<MyGamePage>, ApiError> {
    let limit = page_limit(q.limit, 20)?;
    let me = caller(&s);
    let mut rows = state.lobby.my_games(me, q.before, limit + 1).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(0);
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more {
        rows.last().map(|(v, _)| v.row.id)
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|(view, mine)| MyGameJson {
            owner: view.row.owner_id == me.id,
            game: view.into(),
            seat: mine.seat.map(Into::into),
            application: mine.application.map(Into::into),
        })
        .collect();
    Ok(Json(MyGamePage { items, next }))
}
