//! Playing a game over HTTP: orders, views, options, the clock and the
//! turn history under `/api/v1/user/games/{id}` (the caller's seat is
//! checked on every call), the owner's pause, resume, force and extend, and
//! the same actions plus turns with their lateness under
//! `/api/v1/admin/games/{id}` (audited). The JSON types are converted by
//! hand from the turns service's.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use turnbase_core::http::ErrorBody;
use turnbase_store::turns::TurnPage;
use turnbase_turns::play::{ClockView, OrdersOutcome, TurnView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{AdminSession, Authenticated};
use super::games::{GameJson, caller};
use super::{ApiError, AppState};

/// Largest page of turns.
const MAX_TURNS_PAGE: i64 = 100;

pub fn user_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(view))
        .routes(routes!(orders))
        .routes(routes!(options))
        .routes(routes!(clock))
        .routes(routes!(turns))
        .routes(routes!(turn))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(force))
        .routes(routes!(extend))
}

pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_turns))
        .routes(routes!(admin_pause))
        .routes(routes!(admin_resume))
        .routes(routes!(admin_force))
        .routes(routes!(admin_extend))
}

#[derive(Serialize, utoipa::ToSchema)]
struct SeatMarkJson {
    seat_id: Uuid,
    race_name: String,
    /// The engine's bot plays it.
    bot: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ClockJson {
    game_id: Uuid,
    state: String,
    /// The open turn.
    turn: i64,
    /// When it resolves; absent while paused.
    deadline: Option<DateTime<Utc>>,
    /// Why it resolves then: schedule, timeout, bot, early, forced,
    /// catch_up; `none` once the game is over (then `turn` is the last
    /// turn played, with no deadline and no one to move).
    trigger: String,
    paused: bool,
    /// Seats the engine waits for.
    to_move: Vec<SeatMarkJson>,
    /// Seats that have sent orders this turn (never what they sent).
    submitted: Vec<Uuid>,
    /// The owner extended this turn.
    extended: bool,
}

impl From<ClockView> for ClockJson {
    fn from(c: ClockView) -> Self {
        ClockJson {
            game_id: c.game_id,
            state: c.state.to_string(),
            turn: c.turn,
            deadline: c.deadline,
            trigger: c.trigger.to_string(),
            paused: c.paused,
            to_move: c
                .to_move
                .into_iter()
                .map(|m| SeatMarkJson {
                    seat_id: m.seat_id,
                    race_name: m.race_name,
                    bot: m.bot,
                })
                .collect(),
            submitted: c.submitted,
            extended: c.extended,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct TurnJson {
    turn: i64,
    /// schedule, timeout, bot, early, forced, catch_up or move.
    trigger: String,
    due_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    /// The caller's own summary.
    summary: Option<String>,
    #[schema(value_type = Object)]
    standings: Value,
    /// The engine's public events of the turn.
    #[schema(value_type = Object)]
    events: Value,
    finished: bool,
    /// Admins: resolve call sent minus due time (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    lateness_ms: Option<i64>,
    /// Admins: the engine's resolve call (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<i64>,
    /// `/turns/{n}`: the caller's view after this turn (replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    view: Option<Value>,
}

impl From<TurnView> for TurnJson {
    fn from(t: TurnView) -> Self {
        TurnJson {
            turn: t.turn,
            trigger: t.trigger.to_string(),
            due_at: t.due_at,
            resolved_at: t.resolved_at,
            summary: t.summary,
            standings: t.standings,
            events: t.events,
            finished: t.finished,
            lateness_ms: t.lateness_ms,
            duration_ms: t.duration_ms,
            view: t.view,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct TurnPageJson {
    turns: Vec<TurnJson>,
    /// Pass as `before` for the next (older) page.
    next_before: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct OrdersJson {
    turn: i64,
    stored: bool,
    count: usize,
    /// A sequential move resolves at once: the turn open now.
    next_turn: Option<i64>,
    finished: bool,
    /// Every awaited seat has sent orders: the turn resolves now.
    resolves_early: bool,
}

impl From<OrdersOutcome> for OrdersJson {
    fn from(o: OrdersOutcome) -> Self {
        OrdersJson {
            turn: o.turn,
            stored: o.stored,
            count: o.count,
            next_turn: o.next_turn,
            finished: o.finished,
            resolves_early: o.resolves_early,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OrdersBody {
    /// The open turn (see `/clock`).
    turn: i64,
    /// The game's orders, a list (see the engine's `/options` example).
    #[schema(value_type = Vec<Object>)]
    orders: Value,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TurnQuery {
    /// Turns before this number (the cursor).
    before: Option<i64>,
    /// Page size, 1 to 100 (default 20).
    limit: Option<i64>,
}

impl TurnQuery {
    fn page(&self) -> Result<TurnPage, ApiError> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=MAX_TURNS_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit: 1 to {MAX_TURNS_PAGE}"
            )));
        }
        if self.before.is_some_and(|b| b < 1) {
            return Err(ApiError::BadRequest("before: a turn number, from 1".into()));
        }
        Ok(TurnPage {
            before: self.before,
            limit,
        })
    }
}

fn turn_page(views: Vec<TurnView>, limit: i64) -> TurnPageJson {
    let next_before = if views.len() as i64 == limit {
        views.last().map(|t| t.turn)
    } else {
        None
    };
    TurnPageJson {
        turns: views.into_iter().map(TurnJson::from).collect(),
        next_before,
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    /// How long, e.g. `6h` (1 s to 7 days).
    by: String,
}

fn duration(text: &str) -> Result<std::time::Duration, ApiError> {
    turnbase_core::config::parse_duration(text)
        .map_err(|e| ApiError::BadRequest(format!("by: {e} (e.g. 30m, 6h)")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminReason {
    /// Why; recorded in the audit log.
    reason: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminExtendBody {
    by: String,
    reason: String,
}

fn reason(text: &str) -> Result<&str, ApiError> {
    let r = text.trim();
    if r.is_empty() || r.chars().count() > 500 {
        return Err(ApiError::BadRequest("reason: 1 to 500 characters".into()));
    }
    Ok(r)
}

// ---- players -----------------------------------------------------------

/// The engine's view for my seat, with the open turn and its deadline.
#[utoipa::path(get, path = "/games/{id}/view", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "`{game_id, state, seat_id, turn, deadline, paused, to_move, view}`; `view` is the engine's", body = Object),
        (status = 403, description = "No seat of yours in the game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 503, description = "The engine is not answering (engine_unavailable)", body = ErrorBody),
    ))]
async fn view(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.turns.view(caller(&s), id).await?))
}

/// Send my orders for the open turn (replaceable until it resolves; a
/// sequential move resolves at once). The engine's 422 `invalid_orders`
/// with per-order `details` comes back unchanged.
#[utoipa::path(put, path = "/games/{id}/orders", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = OrdersBody,
    responses(
        (status = 200, description = "Taken", body = OrdersJson),
        (status = 403, description = "No active seat of yours in the game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "turn_closed (with the open `turn`), game_paused, game_over, not_running, or the engine's not_your_move", body = ErrorBody),
        (status = 422, description = "The engine's invalid_orders / too_many_orders, with details", body = ErrorBody),
        (status = 503, description = "The engine is not answering (engine_unavailable)", body = ErrorBody),
    ))]
async fn orders(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<OrdersBody>,
) -> Result<Json<OrdersJson>, ApiError> {
    if !body.orders.is_array() {
        return Err(ApiError::Detailed(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_orders",
            "orders must be a JSON list".into(),
            vec![turnbase_core::http::FieldProblem {
                path: "/orders".into(),
                reason: "must be a list of orders".into(),
            }],
        ));
    }
    let outcome = state
        .turns
        .send_orders(caller(&s), id, body.turn, body.orders)
        .await?;
    Ok(Json(outcome.into()))
}

/// What I can order now.
#[utoipa::path(get, path = "/games/{id}/options", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The engine's options: `{turn, to_move, nothing_to_order, options, example}`", body = Object),
        (status = 403, description = "No seat of yours in the game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 503, description = "The engine is not answering", body = ErrorBody),
    ))]
async fn options(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.turns.options(caller(&s), id).await?))
}

/// The open turn's deadline, who is to move, and which seats have sent
/// orders.
#[utoipa::path(get, path = "/games/{id}/clock", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The clock", body = ClockJson),
        (status = 403, description = "No seat of yours in the game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game has no open turn (not_running)", body = ErrorBody),
    ))]
async fn clock(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<ClockJson>, ApiError> {
    Ok(Json(state.turns.clock_view(caller(&s), id).await?.into()))
}

/// Resolved turns, newest first: when, my summary, standings.
#[utoipa::path(get, path = "/games/{id}/turns", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), TurnQuery),
    responses(
        (status = 200, description = "A page of turns", body = TurnPageJson),
        (status = 400, description = "Bad page", body = ErrorBody),
        (status = 403, description = "No seat of yours in the game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
    ))]
async fn turns(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
    Query(q): Query<TurnQuery>,
) -> Result<Json<TurnPageJson>, ApiError> {
    let page = q.page()?;
    let views = state.turns.history(caller(&s), id, page).await?;
    Ok(Json(turn_page(views, page.limit)))
}

/// One resolved turn with my view after it (replay).
#[utoipa::path(get, path = "/games/{id}/turns/{n}", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), ("n" = i64, Path, description = "Turn number")),
    responses(
        (status = 200, description = "The turn", body = TurnJson),
        (status = 403, description = "No seat of yours in the game", body = ErrorBody),
        (status = 404, description = "No such game, or the turn is not resolved", body = ErrorBody),
    ))]
async fn turn(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path((id, n)): Path<(Uuid, i64)>,
) -> Result<Json<TurnJson>, ApiError> {
    if n < 1 {
        return Err(ApiError::BadRequest("n: turns are numbered from 1".into()));
    }
    Ok(Json(state.turns.turn(caller(&s), id, n).await?.into()))
}

// ---- owners ------------------------------------------------------------

/// Pause a running game (the owner): no turn resolves until it resumes.
#[utoipa::path(post, path = "/games/{id}/pause", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The game, paused", body = GameJson),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game is not running (illegal_transition)", body = ErrorBody),
    ))]
async fn pause(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<GameJson>, ApiError> {
    let view = state.lobby.pause(caller(&s), id, None).await?;
    state.turns.wake();
    Ok(Json(view.into()))
}

/// Resume a paused game (the owner): the open turn gets at least a whole
/// turn's time.
#[utoipa::path(post, path = "/games/{id}/resume", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The game, running", body = GameJson),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game is not paused (illegal_transition)", body = ErrorBody),
    ))]
async fn resume(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<GameJson>, ApiError> {
    let view = state.lobby.resume(caller(&s), id, None).await?;
    state.turns.wake();
    Ok(Json(view.into()))
}

/// Resolve the open turn now (the owner; one-shot).
#[utoipa::path(post, path = "/games/{id}/force-turn", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, description = "The clock, due now", body = ClockJson),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "game_paused, game_over, not_running or turn_being_resolved", body = ErrorBody),
    ))]
async fn force(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<ClockJson>, ApiError> {
    Ok(Json(state.turns.force(caller(&s), id, None).await?.into()))
}

/// Push the open turn's deadline back (the owner, once per turn).
#[utoipa::path(post, path = "/games/{id}/extend", tag = "user", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = ExtendBody,
    responses(
        (status = 200, description = "The clock with its new deadline", body = ClockJson),
        (status = 400, description = "Bad duration", body = ErrorBody),
        (status = 403, description = "Not your game", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "already_extended, game_paused, game_over, not_running or turn_being_resolved", body = ErrorBody),
    ))]
async fn extend(
    State(state): State<AppState>,
    Authenticated(s): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<ExtendBody>,
) -> Result<Json<ClockJson>, ApiError> {
    let by = duration(&body.by)?;
    Ok(Json(
        state.turns.extend(caller(&s), id, by, None).await?.into(),
    ))
}

// ---- admins ------------------------------------------------------------

fn actor(admin: &AdminSession) -> turnbase_lobby::AdminActor {
    let a = admin.actor();
    turnbase_lobby::AdminActor {
        id: a.id,
        email: a.email,
    }
}

/// A game's turns with lateness and engine time, newest first, claims
/// under way included.
#[utoipa::path(get, path = "/games/{id}/turns", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id"), TurnQuery),
    responses(
        (status = 200, description = "A page of turns", body = TurnPageJson),
        (status = 400, description = "Bad page", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
    ))]
async fn admin_turns(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(q): Query<TurnQuery>,
) -> Result<Json<TurnPageJson>, ApiError> {
    let page = q.page()?;
    let views = state.turns.admin_turns(id, page).await?;
    Ok(Json(turn_page(views, page.limit)))
}

/// Pause a running game (audited).
#[utoipa::path(post, path = "/games/{id}/pause", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = AdminReason,
    responses(
        (status = 200, description = "The game, paused", body = GameJson),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game is not running (illegal_transition)", body = ErrorBody),
    ))]
async fn admin_pause(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
    Json(body): Json<AdminReason>,
) -> Result<Json<GameJson>, ApiError> {
    pause_or_resume(&state, &admin, id, &body, true).await
}

/// Resume a paused game (audited).
#[utoipa::path(post, path = "/games/{id}/resume", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = AdminReason,
    responses(
        (status = 200, description = "The game, running", body = GameJson),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "The game is not paused (illegal_transition)", body = ErrorBody),
    ))]
async fn admin_resume(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
    Json(body): Json<AdminReason>,
) -> Result<Json<GameJson>, ApiError> {
    pause_or_resume(&state, &admin, id, &body, false).await
}

/// An admin's pause or resume, audited with its reason; the scheduler is
/// woken to stop or re-plan the clock.
async fn pause_or_resume(
    state: &AppState,
    admin: &AdminSession,
    id: Uuid,
    body: &AdminReason,
    pause: bool,
) -> Result<Json<GameJson>, ApiError> {
    let why = reason(&body.reason)?;
    let by = actor(admin);
    let admin_of = Some((&by, why));
    let view = if pause {
        state.lobby.pause(caller(&admin.0), id, admin_of).await?
    } else {
        state.lobby.resume(caller(&admin.0), id, admin_of).await?
    };
    state.turns.wake();
    Ok(Json(view.into()))
}

/// Resolve the open turn now (audited).
#[utoipa::path(post, path = "/games/{id}/force-turn", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = AdminReason,
    responses(
        (status = 200, description = "The clock, due now", body = ClockJson),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "game_paused, game_over, not_running or turn_being_resolved", body = ErrorBody),
    ))]
async fn admin_force(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
    Json(body): Json<AdminReason>,
) -> Result<Json<ClockJson>, ApiError> {
    let why = reason(&body.reason)?;
    let by = actor(&admin);
    let clock = state
        .turns
        .force(caller(&admin.0), id, Some((&by, why)))
        .await?;
    Ok(Json(clock.into()))
}

/// Push the open turn's deadline back, any number of times (audited).
#[utoipa::path(post, path = "/games/{id}/extend", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Game id")), request_body = AdminExtendBody,
    responses(
        (status = 200, description = "The clock with its new deadline", body = ClockJson),
        (status = 400, description = "Bad duration or no reason", body = ErrorBody),
        (status = 404, description = "No such game", body = ErrorBody),
        (status = 409, description = "game_paused, game_over, not_running or turn_being_resolved", body = ErrorBody),
    ))]
async fn admin_extend(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminSession>,
    Path(id): Path<Uuid>,
    Json(body): Json<AdminExtendBody>,
) -> Result<Json<ClockJson>, ApiError> {
    let by = duration(&body.by)?;
    let why = reason(&body.reason)?;
    let admin_actor = actor(&admin);
    let clock = state
        .turns
        .extend(caller(&admin.0), id, by, Some((&admin_actor, why)))
        .await?;
    Ok(Json(clock.into()))
}
