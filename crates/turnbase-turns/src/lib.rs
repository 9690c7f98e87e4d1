//! Turnbase's turns: the scheduler that resolves each running game's turn
//! when it is due, exactly once across crashes and replicas; the owner's
//! and admins' turn actions (force, extend; pause and resume go through
//! the lobby's state machine); absent players (excused misses, the bot
//! taking a seat over); and what players do through the backend: orders,
//! views, options, the clock and the turn history.
//!
//! How a turn resolves once: the scheduler inserts the turn's row in
//! `game_turns` (a claim with a lease) before calling the engine; the
//! engine's resolve is idempotent by turn number; the result is recorded
//! only while the row is still a claim, in the transaction that moves the
//! clock on. A scheduler that dies leaves a claim whose lease runs out; the
//! next one takes it over and gets the engine's stored resolution.

mod dispatch;
pub mod plan;
pub mod play;
pub mod reminders;
pub mod scheduler;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};
use serde_json::{Value, json};
use turnbase_engine_kit::protocol::{Mode, Resolution};
use turnbase_lobby::{EngineRegistry, PlayRules, Rules, Schedule, ScheduleSpec, StartQueue};
use turnbase_runtime::EngineClient;
use turnbase_store::lobby::{GameRow, GameState, SeatRow, StateChange};
use turnbase_store::notify::{Audience, Kind, NewNotice};
use turnbase_store::turns::{ClockRow, RecordedTurn, Trigger, TurnResult};
use turnbase_store::{Database, StoreError};
use uuid::Uuid;

pub use turnbase_core::worker::Clock;

use crate::plan::{Deadline, played_by_person};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct TurnsConfig {
    /// How long a claim holds a turn before another scheduler may take
    /// it over.
    pub lease: Duration,
    /// Turns resolved at once by one scheduler.
    pub concurrency: usize,
    /// Backoff of a turn whose engine did not answer.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The longest the scheduler sleeps without looking (changes made by
    /// other backends wake only their own scheduler).
    pub idle_recheck: Duration,
    /// How far ahead of its due time a turn is claimed (the call still
    /// goes out at the due time).
    pub lookahead: Duration,
    /// Nice value of the dispatch thread (see [`dispatch`]).
    pub dispatch_nice: i32,
}

impl Default for TurnsConfig {
    fn default() -> TurnsConfig {
        TurnsConfig {
            lease: Duration::from_secs(60),
            concurrency: 1024,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            idle_recheck: Duration::from_secs(5),
            lookahead: Duration::from_millis(600),
            dispatch_nice: -15,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    /// A conflict with a code (`game_paused`, `game_over`, `not_running`,
    /// `turn_being_resolved`, `already_extended`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Orders for a turn that is closed; `turn` is the open one now.
    #[error("turn {closed} is closed; turn {turn} is open")]
    TurnClosed { closed: i64, turn: i64 },
    /// The engine refused (its status and body, passed on unchanged).
    #[error("the engine answered {status}")]
    Engine { status: u16, body: bytes::Bytes },
    /// The engine cannot be reached now.
    #[error("the game's engine is not answering: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for TurnError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => TurnError::NotFound("no such game".into()),
            other => TurnError::Unexpected(other.into()),
        }
    }
}

pub type TurnResultOf<T> = Result<T, TurnError>;

struct Metrics {
    turns: Counter<u64>,
    lateness: Histogram<f64>,
    duration: Histogram<f64>,
    _due: ObservableGauge<i64>,
}

/// The turns service: shared by the scheduler and the API.
#[derive(Clone)]
pub struct TurnService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub db: Database,
    pub engines: EngineRegistry,
    pub client: EngineClient,
    /// Sends resolve calls at their due time, on a thread of its own (none
    /// when the thread could not be started: the calls go from here).
    pub dispatcher: Option<dispatch::Dispatcher>,
    pub config: TurnsConfig,
    pub clock: Clock,
    metrics: Metrics,
    pub due_games: Arc<std::sync::atomic::AtomicI64>,
    /// Wakes the scheduler (a clock changed here).
    pub wake: Arc<tokio::sync::Notify>,
    /// Games whose turn this process is resolving.
    pub in_flight: Mutex<HashSet<Uuid>>,
    /// Engine addresses by game, as last read from the runtime records.
    pub addresses: Mutex<std::collections::HashMap<Uuid, String>>,
    /// Who holds claims: this process.
    pub owner: String,
    /// Nudges the runtime when a finished game queued its stop job.
    pub runtime: std::sync::OnceLock<Arc<dyn StartQueue>>,
    /// When this scheduler started: turns due before are catch-up turns.
    pub started_at: DateTime<Utc>,
    /// Wakes the notification router after notices were written.
    pub notices: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    /// Wakes the reminders (a clock changed here).
    pub reminders_wake: Arc<tokio::sync::Notify>,
}

/// A game with what resolving or playing it needs.
pub(crate) struct Game {
    pub row: GameRow,
    pub mode: Mode,
    pub schedule: Schedule,
    pub rules: Rules,
    pub seats: Vec<SeatRow>,
}

impl TurnService {
    pub fn new(
        db: Database,
        engines: EngineRegistry,
        config: TurnsConfig,
        clock: Clock,
        meter: &Meter,
    ) -> TurnService {
        let due_games = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let observed = due_games.clone();
        let metrics = Metrics {
            turns: meter
                .u64_counter("game_turns")
                .with_description("Turns resolved, by engine and trigger")
                .build(),
            lateness: meter
                .f64_histogram("game_turn_lateness")
                .with_unit("s")
                .with_description("Resolve call sent minus the time the turn was due")
                .with_boundaries(vec![
                    0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
                ])
                .build(),
            duration: meter
                .f64_histogram("game_turn_duration")
                .with_unit("s")
                .with_description("The engine's resolve call, by engine")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                ])
                .build(),
            _due: meter
                .i64_observable_gauge("scheduler_due_games")
                .with_description("Running games whose turn is due now, as the scheduler last saw")
                .with_callback(move |o| {
                    o.observe(observed.load(std::sync::atomic::Ordering::Relaxed), &[])
                })
                .build(),
        };
        let started_at = clock();
        TurnService {
            inner: Arc::new(Inner {
                client: EngineClient::new(meter),
                dispatcher: match dispatch::Dispatcher::start(meter, config.dispatch_nice) {
                    Ok(dispatcher) => Some(dispatcher),
                    Err(err) => {
                        tracing::warn!(error = %err, "no turn dispatch thread; resolve calls go from the runtime");
                        None
                    }
                },
                db,
                engines,
                config,
                clock,
                metrics,
                due_games,
                wake: Arc::new(tokio::sync::Notify::new()),
                in_flight: Mutex::new(HashSet::new()),
                addresses: Mutex::new(std::collections::HashMap::new()),
                owner: format!("turns-{}-{}", std::process::id(), Uuid::now_v7().simple()),
                runtime: std::sync::OnceLock::new(),
                started_at,
                notices: std::sync::OnceLock::new(),
                reminders_wake: Arc::new(tokio::sync::Notify::new()),
            }),
        }
    }

    /// Wires in the runtime's nudge (once, at start).
    pub fn set_runtime(&self, runtime: Arc<dyn StartQueue>) {
        let _ = self.inner.runtime.set(runtime);
    }

    pub fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    /// Wakes the scheduler: a clock changed.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
        self.inner.reminders_wake.notify_one();
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    /// The game, its kind's mode, schedule, rules and seats.
    pub(crate) async fn game(&self, id: Uuid) -> TurnResultOf<Game> {
        let lobby = self.inner.db.lobby();
        let (row, seats) = tokio::try_join!(lobby.game(id), lobby.seats(id))?;
        let kind = self.inner.engines.get(&row.engine).ok_or_else(|| {
            TurnError::Unexpected(anyhow::anyhow!(
                "game {id} is of the kind {}, which is not registered",
                row.engine
            ))
        })?;
        let spec: ScheduleSpec = serde_json::from_str(&row.schedule)
            .map_err(|e| anyhow::anyhow!("stored schedule of {id}: {e}"))?;
        let schedule = Schedule::parse_bounded(&spec, kind.mode, Duration::ZERO)
            .map_err(|e| anyhow::anyhow!("stored schedule of {id}: {e}"))?;
        Ok(Game {
            rules: PlayRules::stored(&row.rules),
            mode: kind.mode,
            schedule,
            row,
            seats,
        })
    }

    /// The address of the game's engine, remembered between turns (the
    /// scheduler's path to the resolve call); forgotten when a call to it
    /// fails, so that a restarted engine's new address is read again.
    pub(crate) async fn engine_cached(&self, game: Uuid) -> TurnResultOf<String> {
        if let Some(base) = self
            .inner
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&game)
        {
            return Ok(base.clone());
        }
        let base = self.engine(game).await?;
        let mut addresses = self
            .inner
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if addresses.len() >= 100_000 {
            addresses.clear();
        }
        addresses.insert(game, base.clone());
        Ok(base)
    }

    pub(crate) fn forget_engine(&self, game: Uuid) {
        self.inner
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&game);
    }

    /// The address of the game's engine.
    pub(crate) async fn engine(&self, game: Uuid) -> TurnResultOf<String> {
        self.inner
            .db
            .runtime()
            .runtime_record(game)
            .await?
            .and_then(|r| r.address)
            .ok_or_else(|| TurnError::Unavailable("the game has no engine yet".into()))
    }

    /// Seats among `to_move` that the platform waits for: people playing
    /// their own seat who have something to order (asked of the engine;
    /// a seat whose options cannot be read is waited for).
    pub(crate) async fn awaited(&self, base: &str, game: &Game, to_move: &[Uuid]) -> Vec<Uuid> {
        let mut out = Vec::new();
        for id in to_move {
            let Some(seat) = game.seats.iter().find(|s| s.id == *id) else {
                continue;
            };
            if !played_by_person(seat) {
                continue;
            }
            match self.inner.client.options(base, game.row.id, *id).await {
                Ok(o) if o.nothing_to_order => {}
                _ => out.push(*id),
            }
        }
        out
    }

    /// The clock of the next turn after `resolution`, or `None` when the
    /// game ended.
    pub(crate) async fn next_clock(
        &self,
        base: &str,
        game: &Game,
        clock: &ClockRow,
        resolution: &Resolution,
        now: DateTime<Utc>,
    ) -> TurnResultOf<Option<ClockRow>> {
        let Some(next_turn) = resolution.next_turn.filter(|_| !resolution.finished) else {
            return Ok(None);
        };
        let to_move = seat_ids(&resolution.to_move);
        let deadline = self.deadline(game, clock.anchor_at, clock.slot_at, &to_move, now)?;
        let awaiting = self.awaited(base, game, &to_move).await;
        Ok(Some(ClockRow {
            game_id: game.row.id,
            turn: i64::from(next_turn),
            opened_at: now,
            anchor_at: clock.anchor_at,
            slot_at: deadline.slot,
            due_at: Some(deadline.due),
            trigger: deadline.trigger,
            to_move: ids_json(&to_move),
            awaiting: ids_json(&awaiting),
            extended: false,
            excused: false,
            paused_at: None,
            attempts: 0,
            version: clock.version,
            updated_at: now,
        }))
    }

    pub(crate) fn deadline(
        &self,
        game: &Game,
        anchor: DateTime<Utc>,
        consumed: Option<DateTime<Utc>>,
        to_move: &[Uuid],
        now: DateTime<Utc>,
    ) -> TurnResultOf<Deadline> {
        let mover = to_move
            .first()
            .and_then(|id| game.seats.iter().find(|s| s.id == *id));
        plan::next_deadline(&game.schedule, &game.rules, anchor, consumed, mover, now).ok_or_else(
            || {
                TurnError::Unexpected(anyhow::anyhow!(
                    "game {}: no next deadline (a cron schedule that never fires again, or no one to move)",
                    game.row.id
                ))
            },
        )
    }

    /// Records a resolution (from the scheduler or a sequential move) and
    /// tells everyone. `None` when it was already recorded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record(
        &self,
        base: &str,
        game: &mut Game,
        clock: &ClockRow,
        trigger: Trigger,
        due: DateTime<Utc>,
        sent_at: DateTime<Utc>,
        duration: Duration,
        resolution: &Resolution,
    ) -> TurnResultOf<Option<RecordedTurn>> {
        let now = self.now();
        let turn = clock.turn;
        let awaiting = parse_ids(&clock.awaiting);
        let acted: Vec<Uuid> = match game.mode {
            // Nobody awaited (a game of bots): no read on the hot path.
            Mode::Simultaneous if awaiting.is_empty() => Vec::new(),
            Mode::Simultaneous => self.inner.db.turns().submissions(game.row.id, turn).await?,
            Mode::Sequential if trigger == Trigger::Move => awaiting.clone(),
            Mode::Sequential => Vec::new(),
        };
        // A miss is a deadline passing without orders; forced and early
        // turns did not give the full time.
        let counts_misses = matches!(
            trigger,
            Trigger::Schedule | Trigger::Timeout | Trigger::CatchUp
        );
        let missed = if counts_misses {
            plan::missing(&awaiting, &acted)
        } else {
            Vec::new()
        };
        // Seats that reach the takeover count now go to the bot before the
        // next turn is planned, so that it is not waited for.
        let threshold = i64::from(game.rules.bot_takeover_after);
        let mut taken_over = Vec::new();
        if threshold > 0 && !resolution.finished {
            for id in &missed {
                let Some(seat) = game.seats.iter_mut().find(|s| s.id == *id) else {
                    continue;
                };
                if seat.misses + 1 >= threshold && played_by_person(seat) {
                    match self
                        .inner
                        .client
                        .control(base, game.row.id, seat.id, true)
                        .await
                    {
                        Ok(_) => {
                            self.inner.db.turns().set_bot_control(seat.id, true).await?;
                            seat.bot_control = true;
                            taken_over.push(seat.clone());
                        }
                        Err(err) => {
                            tracing::warn!(game = %game.row.id, seat = %seat.id, error = %err, "the engine did not take the seat over");
                        }
                    }
                }
            }
        }
        let next = self.next_clock(base, game, clock, resolution, now).await?;
        let finish = resolution.finished.then(|| StateChange {
            id: Uuid::now_v7(),
            game_id: game.row.id,
            from: game.row.state,
            to: GameState::Finished,
            actor_id: None,
            reason: format!("the game ended with turn {turn}"),
            at: now,
            // The turn's own notices say that it ended, with standings.
            notices: Vec::new(),
        });
        let lateness = match trigger {
            Trigger::Move => None,
            _ => Some((sent_at - due).num_milliseconds().max(0)),
        };
        let result = TurnResult {
            game_id: game.row.id,
            turn,
            trigger,
            due_at: due,
            sent_at,
            resolved_at: now,
            lateness_ms: lateness,
            duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
            resolution: serde_json::to_string(resolution)
                .map_err(|e| anyhow::anyhow!("resolution: {e}"))?,
            next: next.clone(),
            finish,
            missed: missed.clone(),
            acted: acted.clone(),
            notices: Vec::new(),
        };
        let notices = self.resolved_notices(
            game,
            resolution,
            trigger,
            due,
            sent_at,
            next.as_ref(),
            &taken_over,
        );
        let result = TurnResult { notices, ..result };
        let Some(recorded) = self.inner.db.turns().record_turn(&result).await? else {
            return Ok(None);
        };
        let engine = KeyValue::new("engine", game.row.engine.clone());
        self.inner.metrics.turns.add(
            1,
            &[engine.clone(), KeyValue::new("trigger", trigger.as_str())],
        );
        if let Some(ms) = lateness {
            self.inner.metrics.lateness.record(ms as f64 / 1000.0, &[]);
        }
        if trigger != Trigger::Move {
            self.inner
                .metrics
                .duration
                .record(duration.as_secs_f64(), &[engine]);
        }
        self.notices_written();
        if recorded.finished.is_some()
            && let Some(runtime) = self.inner.runtime.get()
        {
            runtime.queued();
        }
        self.wake();
        tracing::info!(game = %game.row.id, turn, trigger = trigger.as_str(), finished = resolution.finished, "turn recorded");
        Ok(Some(recorded))
    }

    /// What a resolved turn tells people, written with its record: each
    /// seat's result (with its own summary), the next mover's "your move",
    /// seats taken over by the bot, eliminations (the engine's
    /// `eliminated` events) and the end with its standings.
    #[allow(clippy::too_many_arguments)]
    fn resolved_notices(
        &self,
        game: &Game,
        resolution: &Resolution,
        trigger: Trigger,
        due: DateTime<Utc>,
        sent_at: DateTime<Utc>,
        next: Option<&ClockRow>,
        taken_over: &[SeatRow],
    ) -> Vec<NewNotice> {
        let id = game.row.id;
        let late_by = (sent_at - due).num_seconds();
        let late = trigger == Trigger::CatchUp;
        let mut notices = Vec::with_capacity(game.seats.len() + 2);
        let mut notice = |kind: Kind, users: Vec<Uuid>, payload: Value| {
            if !users.is_empty() {
                notices.push(NewNotice::new(
                    kind,
                    Some(id),
                    payload.to_string(),
                    Audience::Users(users),
                ));
            }
        };
        let eliminated: Vec<&str> = resolution
            .events
            .iter()
            .filter(|e| e.get("type").and_then(Value::as_str) == Some("eliminated"))
            .filter_map(|e| e.get("player").and_then(Value::as_str))
            .collect();
        for seat in &game.seats {
            let Some(user) = seat.account_id else {
                continue;
            };
            let player = seat.id.to_string();
            notice(
                Kind::TurnResolved,
                vec![user],
                json!({
                    "game_id": id,
                    "title": game.row.title,
                    "turn": resolution.turn,
                    "next_turn": resolution.next_turn,
                    "deadline": next.and_then(|c| c.due_at),
                    "trigger": trigger.as_str(),
                    "late": late,
                    "late_by_seconds": if late { Some(late_by) } else { None },
                    "summary": resolution.summaries.get(&player),
                    "standings": resolution.standings,
                    "events": resolution.events,
                }),
            );
            if let Some(next) = next
                && seat.status == turnbase_store::lobby::SeatStatus::Active
                && resolution.to_move.len() == 1
                && resolution.to_move[0] == player
                && played_by_person(seat)
            {
                notice(
                    Kind::YourMove,
                    vec![user],
                    json!({
                        "game_id": id,
                        "title": game.row.title,
                        "turn": next.turn,
                        "deadline": next.due_at,
                    }),
                );
            }
            if eliminated.contains(&player.as_str()) {
                notice(
                    Kind::Eliminated,
                    vec![user],
                    json!({
                        "game_id": id,
                        "title": game.row.title,
                        "turn": resolution.turn,
                        "race_name": seat.race_name,
                    }),
                );
            }
        }
        for seat in taken_over {
            if let Some(user) = seat.account_id {
                notice(
                    Kind::SeatTakenOver,
                    vec![user],
                    json!({
                        "game_id": id,
                        "title": game.row.title,
                        "seat_id": seat.id,
                        "misses": seat.misses + 1,
                        "message": "the engine's bot plays your seat until you send orders again",
                    }),
                );
            }
        }
        if resolution.finished {
            let names: std::collections::HashMap<String, &str> = game
                .seats
                .iter()
                .map(|s| (s.id.to_string(), s.race_name.as_str()))
                .collect();
            let standings: Vec<Value> = resolution
                .standings
                .iter()
                .map(|s| {
                    json!({
                        "player_id": s.player_id,
                        "name": names.get(&s.player_id).copied().unwrap_or(s.player_id.as_str()),
                        "rank": s.rank,
                        "score": s.score,
                        "status": s.status,
                    })
                })
                .collect();
            let mut told: Vec<Uuid> = game.seats.iter().filter_map(|s| s.account_id).collect();
            told.push(game.row.owner_id);
            told.sort();
            told.dedup();
            notice(
                Kind::GameFinished,
                told,
                json!({
                    "game_id": id,
                    "title": game.row.title,
                    "turn": resolution.turn,
                    "winners": resolution.winners,
                    "standings": standings,
                }),
            );
        }
        notices
    }

    /// Nudges the notification router: notices were committed.
    pub(crate) fn notices_written(&self) {
        if let Some(wake) = self.inner.notices.get() {
            wake.notify_one();
        }
    }

    /// Wires in the notification router's wake (once, at start).
    pub fn set_notifier(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = self.inner.notices.set(wake);
    }
}

/// Seat ids from the engine's player ids (ours are seat UUIDs).
pub(crate) fn seat_ids(players: &[String]) -> Vec<Uuid> {
    players.iter().filter_map(|p| p.parse().ok()).collect()
}

pub(crate) fn ids_json(ids: &[Uuid]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_ids(text: &str) -> Vec<Uuid> {
    serde_json::from_str(text).unwrap_or_default()
}
