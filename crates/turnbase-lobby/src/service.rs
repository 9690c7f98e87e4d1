//! The lobby service: games from creation to the start, applications and
//! approvals, bot seats, the race-name directory, admin actions, and the
//! live events owners and players hear about each change.
//!
//! Every change is decided by the store under its locks (seat counts,
//! name uniqueness, "still in this state"); this service checks who may
//! ask, validates and normalises input, and tells people afterwards.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, ObservableGauge};
use rand::Rng as _;
use serde_json::{Value, json};
use turnbase_engine_kit::protocol::Problem;
use turnbase_store::accounts::AuditEntry;
use turnbase_store::lobby::{
    ApplicationRow, ApplicationStatus, GameEdit, GameFilter, GameRow, GameState, IllegalTransition,
    MyGame, NameHold, NewApplication, NewBot, NewGame, SeatRefusal, SeatRow, StateChange,
    StateChangeRow, Transition, Transitioned, Visibility,
};
use turnbase_store::notify::{Audience, Kind, NewNotice};
use turnbase_store::{Database, StoreError};
use uuid::Uuid;

use crate::engines::{EngineKind, EngineRegistry};
use crate::race_name::RaceName;
use crate::rules::PlayRules;
use crate::schedule::{FLOOR_STEP, PreviewTime, Schedule, ScheduleSpec};

pub use turnbase_core::worker::{Clock, system_clock};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 80;
/// The furthest an enrolment deadline may be.
pub const MAX_ENROLMENT: Duration = Duration::from_secs(90 * 24 * 3600);
/// Turn times previewed for a new game.
pub const PREVIEW_COUNT: usize = 5;

#[derive(Debug, Clone)]
pub struct LobbyConfig {
    /// How long an application reserves its race name without a decision.
    pub pending_ttl: Duration,
    /// How often the sweeper runs.
    pub sweep_interval: Duration,
    /// Shortest turn interval or move limit a game may have.
    pub min_turn_step: Duration,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub id: Uuid,
    pub admin: bool,
}

/// An admin acting, for the audit log.
#[derive(Debug, Clone)]
pub struct AdminActor {
    pub id: Uuid,
    pub email: Option<String>,
}

/// What the lobby needs of the game runtime, which the backend wires in:
/// whether a start may be queued now, and a nudge when the lobby queued a
/// runtime job (a game entering `starting` or ending).
#[async_trait::async_trait]
pub trait StartQueue: Send + Sync {
    async fn has_room(&self) -> bool;
    fn queued(&self);
}

#[derive(Debug, thiserror::Error)]
pub enum LobbyError {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown engine kind {0:?}")]
    UnknownEngine(String),
    #[error("the settings do not fit the engine's schema")]
    InvalidSettings(Vec<Problem>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("{0}")]
    Refused(SeatRefusal),
    #[error("{0}")]
    Conflict(String),
    /// The runtime's queue is full; try again shortly.
    #[error("the game runtime is busy; try again shortly")]
    Busy,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for LobbyError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => LobbyError::NotFound("no such game".into()),
            StoreError::Conflict(message) => LobbyError::Conflict(message),
            other => LobbyError::Unexpected(other.into()),
        }
    }
}

impl From<SeatRefusal> for LobbyError {
    fn from(refusal: SeatRefusal) -> Self {
        match refusal {
            SeatRefusal::NoGame => LobbyError::NotFound("no such game".into()),
            SeatRefusal::NoApplication => LobbyError::NotFound(refusal.to_string()),
            other => LobbyError::Refused(other),
        }
    }
}

pub type LobbyResult<T> = Result<T, LobbyError>;

/// A game to create, as the owner asks for it.
#[derive(Debug, Clone)]
pub struct GameDraft {
    pub title: String,
    pub engine: String,
    /// A (possibly partial) settings object; defaults fill the rest.
    pub settings: Value,
    /// The kind's bounds when absent.
    pub min_players: Option<u32>,
    pub max_players: Option<u32>,
    pub enrol_deadline: DateTime<Utc>,
    pub schedule: ScheduleSpec,
    pub visibility: Visibility,
    /// The platform's play rules (defaults for what is left out).
    pub rules: PlayRules,
}

/// Changes to an enrolling game; `None` keeps a value.
#[derive(Debug, Clone, Default)]
pub struct GameChanges {
    pub title: Option<String>,
    /// Replaces the settings (defaults fill what is left out).
    pub settings: Option<Value>,
    pub min_players: Option<u32>,
    pub max_players: Option<u32>,
    pub enrol_deadline: Option<DateTime<Utc>>,
    pub schedule: Option<ScheduleSpec>,
    pub rules: Option<PlayRules>,
}

/// A game with what is derived from its stored text.
#[derive(Debug, Clone)]
pub struct GameView {
    pub row: GameRow,
    pub settings: Value,
    pub schedule: ScheduleSpec,
    pub rules: PlayRules,
    /// The next turn times if the game started at its enrolment deadline
    /// (empty for per-move schedules). Only for a single game's answer:
    /// lists leave it out, as finding cron slots is the costliest part of
    /// a listing.
    pub preview: Option<Vec<PreviewTime>>,
    /// Whether the caller may see the invite code and manage the game.
    pub manages: bool,
}

/// A game with its seats, applications and history (owners and admins).
#[derive(Debug, Clone)]
pub struct GameDetail {
    pub game: GameView,
    pub seats: Vec<SeatRow>,
    /// Every application (owners and admins); the caller's own otherwise.
    pub applications: Vec<ApplicationRow>,
    pub history: Vec<StateChangeRow>,
}

/// What the directory says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available {
        name: String,
    },
    /// Held by a seat in an active game.
    Taken {
        name: String,
    },
    /// Reserved by a pending application until `until`.
    Reserved {
        name: String,
        until: Option<DateTime<Utc>>,
    },
    Invalid {
        reason: String,
    },
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: usize,
    pub started: usize,
    pub cancelled: usize,
}

struct Metrics {
    applications: Counter<u64>,
    started: Counter<u64>,
    abandoned: Counter<u64>,
    _games: ObservableGauge<i64>,
}

/// Games per state, as last counted by the sweeper.
type GameCounts = Arc<std::sync::Mutex<Vec<(GameState, i64)>>>;

#[derive(Clone)]
pub struct LobbyService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    engines: EngineRegistry,
    config: LobbyConfig,
    clock: Clock,
    metrics: Metrics,
    counts: GameCounts,
    listings: crate::listing::ListCache,
    start_queue: std::sync::OnceLock<Arc<dyn StartQueue>>,
    /// Wakes the notification router after notices were written.
    notices: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
}

impl LobbyService {
    pub fn new(
        db: Database,
        engines: EngineRegistry,
        config: LobbyConfig,
        clock: Clock,
        meter: &Meter,
    ) -> LobbyService {
        let counts: GameCounts = Arc::default();
        let observed = counts.clone();
        let metrics = Metrics {
            applications: meter
                .u64_counter("lobby_applications")
                .with_description("Applications decided, by outcome")
                .build(),
            started: meter
                .u64_counter("games_started")
                .with_description("Games whose enrolment closed with enough players")
                .build(),
            abandoned: meter
                .u64_counter("games_abandoned")
                .with_description("Games cancelled before they ran")
                .build(),
            _games: meter
                .i64_observable_gauge("lobby_games")
                .with_description("Games by state, as of the last lobby sweep")
                .with_callback(move |o| {
                    let counts = observed.lock().map(|c| c.clone()).unwrap_or_default();
                    for state in GameState::ALL {
                        let n = counts
                            .iter()
                            .find(|(s, _)| *s == state)
                            .map_or(0, |(_, n)| *n);
                        o.observe(n, &[KeyValue::new("state", state.as_str())]);
                    }
                })
                .build(),
        };
        LobbyService {
            inner: Arc::new(Inner {
                db,
                engines,
                config,
                clock,
                metrics,
                counts,
                listings: crate::listing::ListCache::default(),
                start_queue: std::sync::OnceLock::new(),
                notices: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    /// Wires in the notification router's wake (once, at start).
    pub fn set_notifier(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = self.inner.notices.set(wake);
    }

    /// Nudges the router: notices were committed.
    fn notices_written(&self) {
        if let Some(wake) = self.inner.notices.get() {
            wake.notify_one();
        }
    }

    /// Wires in the runtime (once, at start).
    pub fn set_start_queue(&self, queue: Arc<dyn StartQueue>) {
        let _ = self.inner.start_queue.set(queue);
    }

    /// Refuses a start the runtime has no room for.
    async fn room_to_start(&self) -> LobbyResult<()> {
        match self.inner.start_queue.get() {
            Some(queue) if !queue.has_room().await => Err(LobbyError::Busy),
            _ => Ok(()),
        }
    }

    pub fn config(&self) -> &LobbyConfig {
        &self.inner.config
    }

    pub fn engines(&self) -> &EngineRegistry {
        &self.inner.engines
    }

    fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    fn schedule(&self, kind: &EngineKind, spec: &ScheduleSpec) -> LobbyResult<Schedule> {
        Schedule::parse_bounded(spec, kind.mode, self.inner.config.min_turn_step)
            .map_err(|e| LobbyError::Invalid(e.to_string()))
    }

    fn kind(&self, name: &str) -> LobbyResult<&EngineKind> {
        self.inner
            .engines
            .get(name)
            .ok_or_else(|| LobbyError::UnknownEngine(name.to_string()))
    }

    // ---- games -------------------------------------------------------

    #[tracing::instrument(skip_all, fields(owner = %caller.id, engine = %draft.engine))]
    pub async fn create_game(&self, caller: Caller, draft: GameDraft) -> LobbyResult<GameView> {
        let now = self.now();
        let kind = self.kind(&draft.engine)?;
        let title = title(&draft.title)?;
        let settings = settings(kind, &draft.settings)?;
        let (min, max) = players(
            kind,
            draft.min_players.unwrap_or(kind.min_players),
            draft.max_players.unwrap_or(kind.max_players),
        )?;
        deadline(draft.enrol_deadline, now)?;
        self.schedule(kind, &draft.schedule)?;
        let rules = rules_text(&draft.rules)?;
        let invite_code = (draft.visibility == Visibility::Unlisted).then(invite_code);
        let row = self
            .inner
            .db
            .lobby()
            .create_game(
                &NewGame {
                    id: Uuid::now_v7(),
                    owner_id: caller.id,
                    title,
                    engine: kind.name.clone(),
                    engine_version: kind.version.clone(),
                    settings: settings.to_string(),
                    min_players: min,
                    max_players: max,
                    enrol_deadline: draft.enrol_deadline,
                    schedule: schedule_text(&draft.schedule)?,
                    visibility: draft.visibility,
                    invite_code,
                    created_at: now,
                    rules,
                },
                caller.id,
            )
            .await?;
        self.inner.listings.changed();
        tracing::info!(game = %row.id, "game created");
        self.view_with_preview(row, true)
    }

    /// A game as `caller` may see it: public games for everyone; unlisted
    /// ones for the owner, seat holders, applicants, admins and whoever
    /// gives the invite code.
    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn game(
        &self,
        caller: Caller,
        id: Uuid,
        invite: Option<&str>,
    ) -> LobbyResult<GameDetail> {
        let store = self.inner.db.lobby();
        let row = store.game(id).await?;
        let manages = caller.admin || row.owner_id == caller.id;
        let (seats, applications) =
            tokio::try_join!(store.seats(id), store.applications(id, None))?;
        let involved = manages
            || seats.iter().any(|s| s.account_id == Some(caller.id))
            || applications.iter().any(|a| a.account_id == caller.id);
        let invited = row.visibility == Visibility::Unlisted
            && invite.is_some()
            && row.invite_code.as_deref() == invite;
        if row.visibility == Visibility::Unlisted && !involved && !invited {
            // Unlisted games are not acknowledged to strangers.
            return Err(LobbyError::NotFound("no such game".into()));
        }
        let applications = if manages {
            applications
        } else {
            applications
                .into_iter()
                .filter(|a| a.account_id == caller.id)
                .collect()
        };
        let history = if manages {
            store.state_history(id).await?
        } else {
            Vec::new()
        };
        Ok(GameDetail {
            game: self.view_with_preview(row, manages)?,
            seats,
            applications,
            history,
        })
    }

    /// Public games, newest first.
    /// Public games, newest first; pages come from a cache that any
    /// change here empties and that lives at most a second.
    pub async fn list_games(
        &self,
        filter: GameFilter,
    ) -> LobbyResult<Arc<crate::listing::ListedPage>> {
        let filter = GameFilter {
            public_only: true,
            ..filter
        };
        let cache = &self.inner.listings;
        let asked = std::time::Instant::now();
        if let Some(page) = cache.get(&filter, asked) {
            return Ok(page);
        }
        let generation = cache.generation();
        let rows = self.inner.db.lobby().list_games(&filter).await?;
        let page = Arc::new(crate::listing::ListedPage::new(
            rows.into_iter()
                .map(|r| self.view(r, false))
                .collect::<LobbyResult<Vec<_>>>()?,
        ));
        cache.put(filter, generation, asked, page.clone());
        Ok(page)
    }

    /// Every game (admins): search, filters, newest first.
    pub async fn admin_list_games(&self, filter: GameFilter) -> LobbyResult<Vec<GameView>> {
        let rows = self
            .inner
            .db
            .lobby()
            .list_games(&GameFilter {
                public_only: false,
                ..filter
            })
            .await?;
        rows.into_iter().map(|r| self.view(r, true)).collect()
    }

    pub async fn my_games(
        &self,
        caller: Caller,
        before: Option<Uuid>,
        limit: i64,
    ) -> LobbyResult<Vec<(GameView, MyGame)>> {
        let rows = self
            .inner
            .db
            .lobby()
            .my_games(caller.id, before, limit)
            .await?;
        rows.into_iter()
            .map(|m| {
                let view = self.view(m.game.clone(), m.game.owner_id == caller.id)?;
                Ok((view, m))
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn edit_game(
        &self,
        caller: Caller,
        id: Uuid,
        changes: GameChanges,
    ) -> LobbyResult<GameView> {
        let store = self.inner.db.lobby();
        let current = self.managed(caller, id).await?;
        if current.state != GameState::Enrolling {
            return Err(LobbyError::Conflict(format!(
                "the game is {}; only an enrolling game can be edited",
                current.state.as_str()
            )));
        }
        let kind = self.kind(&current.engine)?;
        let now = self.now();
        let mut edit = GameEdit::default();
        if let Some(t) = &changes.title {
            edit.title = Some(title(t)?);
        }
        if let Some(s) = &changes.settings {
            edit.settings = Some(settings(kind, s)?.to_string());
        }
        if changes.min_players.is_some() || changes.max_players.is_some() {
            let (min, max) = players(
                kind,
                changes
                    .min_players
                    .unwrap_or(u32::try_from(current.min_players).unwrap_or(0)),
                changes
                    .max_players
                    .unwrap_or(u32::try_from(current.max_players).unwrap_or(0)),
            )?;
            edit.min_players = Some(min);
            edit.max_players = Some(max);
        }
        if let Some(d) = changes.enrol_deadline {
            deadline(d, now)?;
            edit.enrol_deadline = Some(d);
        }
        if let Some(spec) = &changes.schedule {
            self.schedule(kind, spec)?;
            edit.schedule = Some(schedule_text(spec)?);
        }
        if let Some(rules) = &changes.rules {
            edit.rules = Some(rules_text(rules)?);
        }
        let row = store.edit_game(id, &edit, now).await?;
        self.inner.listings.changed();
        let seats = store.seats(id).await?;
        let pending = store
            .applications(id, Some(ApplicationStatus::Pending))
            .await?;
        let payload = json!({ "game_id": id, "title": row.title });
        let mut told: Vec<Uuid> = seats.iter().filter_map(|s| s.account_id).collect();
        told.extend(pending.iter().map(|a| a.account_id));
        told.retain(|u| *u != row.owner_id);
        self.tell(&told, Kind::GameUpdated, Some(id), &payload)
            .await;
        self.view_with_preview(row, true)
    }

    /// Closes enrolment now (the owner, once enough players are seated).
    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn start_early(&self, caller: Caller, id: Uuid) -> LobbyResult<GameView> {
        let game = self.managed(caller, id).await?;
        game.state.apply(Transition::CloseEnrolment)?;
        if game.seats_taken < game.min_players {
            return Err(LobbyError::Conflict(format!(
                "{} of at least {} players are seated; the game cannot start yet",
                game.seats_taken, game.min_players
            )));
        }
        self.room_to_start().await?;
        let moved = self
            .transition(
                &game,
                Transition::CloseEnrolment,
                Some(caller.id),
                "started early by the owner",
                None,
            )
            .await?;
        self.view(moved.game, true)
    }

    /// Asks the runtime for another start of a game whose start failed
    /// (the owner or an admin).
    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn retry_start(
        &self,
        caller: Caller,
        id: Uuid,
        admin: Option<&AdminActor>,
    ) -> LobbyResult<GameView> {
        let game = self.managed(caller, id).await?;
        game.state.apply(Transition::RetryStart)?;
        self.room_to_start().await?;
        let audit = admin.map(|actor| self.audit(actor, "game.retry_start", id, "start retried"));
        let moved = self
            .transition(
                &game,
                Transition::RetryStart,
                Some(caller.id),
                "start retried",
                audit.as_ref(),
            )
            .await?;
        self.view(moved.game, true)
    }

    /// Moves a game for the runtime (began, start failed): no caller to
    /// check, the platform acts.
    pub async fn runtime_moved(
        &self,
        id: Uuid,
        transition: Transition,
        reason: &str,
    ) -> LobbyResult<GameRow> {
        let game = self.inner.db.lobby().game(id).await?;
        Ok(self
            .transition(&game, transition, None, reason, None)
            .await?
            .game)
    }

    /// Cancels a game: the owner while it is enrolling or after a failed
    /// start, an admin (audited) at any point before it ends.
    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn cancel(
        &self,
        caller: Caller,
        id: Uuid,
        admin: Option<(&AdminActor, &str)>,
    ) -> LobbyResult<GameView> {
        let game = self.managed(caller, id).await?;
        game.state.apply(Transition::Cancel)?;
        let (reason, audit) = match admin {
            Some((actor, why)) => {
                let reason = format!("cancelled by an admin: {why}");
                let audit = self.audit(actor, "game.cancel", id, why);
                (reason, Some(audit))
            }
            None => {
                if !matches!(game.state, GameState::Enrolling | GameState::StartFailed) {
                    return Err(LobbyError::Conflict(format!(
                        "the game is {}; its owner can cancel it only while it is enrolling \
                         or after a failed start",
                        game.state.as_str()
                    )));
                }
                ("cancelled by the owner".to_string(), None)
            }
        };
        let moved = self
            .transition(
                &game,
                Transition::Cancel,
                Some(caller.id),
                &reason,
                audit.as_ref(),
            )
            .await?;
        self.view(moved.game, true)
    }

    /// Pauses a running game (its owner, or an admin with a reason,
    /// audited): its clock stops until it is resumed.
    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn pause(
        &self,
        caller: Caller,
        id: Uuid,
        admin: Option<(&AdminActor, &str)>,
    ) -> LobbyResult<GameView> {
        self.pause_or_resume(caller, id, Transition::Pause, admin)
            .await
    }

    /// Resumes a paused game; the scheduler gives the open turn at least
    /// a whole turn's time again.
    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn resume(
        &self,
        caller: Caller,
        id: Uuid,
        admin: Option<(&AdminActor, &str)>,
    ) -> LobbyResult<GameView> {
        self.pause_or_resume(caller, id, Transition::Resume, admin)
            .await
    }

    async fn pause_or_resume(
        &self,
        caller: Caller,
        id: Uuid,
        transition: Transition,
        admin: Option<(&AdminActor, &str)>,
    ) -> LobbyResult<GameView> {
        let game = self.managed(caller, id).await?;
        game.state.apply(transition)?;
        let verb = if transition == Transition::Pause {
            "paused"
        } else {
            "resumed"
        };
        let (reason, audit) = match admin {
            Some((actor, why)) => (
                format!("{verb} by an admin: {why}"),
                Some(self.audit(actor, &format!("game.{}", &verb[..verb.len() - 1]), id, why)),
            ),
            None => (format!("{verb} by the owner"), None),
        };
        let moved = self
            .transition(&game, transition, Some(caller.id), &reason, audit.as_ref())
            .await?;
        self.view(moved.game, true)
    }

    /// Gives a game another owner (admins; audited).
    #[tracing::instrument(skip_all, fields(game = %id, owner = %owner))]
    pub async fn transfer(
        &self,
        actor: &AdminActor,
        id: Uuid,
        owner: Uuid,
    ) -> LobbyResult<GameView> {
        let store = self.inner.db.lobby();
        let game = store.game(id).await?;
        if game.state.is_over() {
            return Err(LobbyError::Conflict(format!(
                "the game is {}; its ownership no longer matters",
                game.state.as_str()
            )));
        }
        let account = self
            .inner
            .db
            .accounts()
            .account(owner)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => LobbyError::NotFound(format!("no account {owner}")),
                other => other.into(),
            })?;
        if account.blocked_at.is_some() {
            return Err(LobbyError::Conflict("that account is blocked".into()));
        }
        let detail = format!("from {} to {owner}", game.owner_id);
        let audit = self.audit(actor, "game.transfer", id, &detail);
        let row = store.transfer_game(id, owner, &audit).await?;
        self.inner.listings.changed();
        let payload = json!({ "game_id": id, "title": row.title, "owner_id": owner });
        self.tell(
            &[game.owner_id, owner],
            Kind::GameOwnerChanged,
            Some(id),
            &payload,
        )
        .await;
        self.view(row, true)
    }

    // ---- enrolment ---------------------------------------------------

    #[tracing::instrument(skip_all, fields(game = %id, account = %caller.id))]
    pub async fn apply(
        &self,
        caller: Caller,
        id: Uuid,
        race_name: &str,
        invite: Option<&str>,
    ) -> LobbyResult<ApplicationRow> {
        let name = RaceName::parse(race_name)
            .map_err(|e| LobbyError::Invalid(format!("race_name: {e}")))?;
        let now = self.now();
        let ttl = chrono::Duration::from_std(self.inner.config.pending_ttl)
            .map_err(|e| LobbyError::Unexpected(e.into()))?;
        let new = NewApplication {
            id: Uuid::now_v7(),
            game_id: id,
            account_id: caller.id,
            race_name: name.as_str().to_string(),
            name_key: name.key().to_string(),
            created_at: now,
            expires_at: now + ttl,
            invite_code: invite.map(str::to_string),
        };
        let payload = json!({
            "game_id": id,
            "application_id": new.id,
            "account_id": caller.id,
            "race_name": new.race_name,
            "expires_at": new.expires_at,
        });
        let notice = NewNotice::new(
            Kind::ApplicationReceived,
            Some(id),
            payload.to_string(),
            Audience::Owner(id),
        );
        let applied = self.inner.db.lobby().apply(&new, &[notice]).await??;
        self.notices_written();
        Ok(applied.application)
    }

    /// Applies to take over a seat the bot plays after its player went
    /// missing (running or paused games); the owner approves as usual.
    #[tracing::instrument(skip_all, fields(game = %id, seat = %seat, account = %caller.id))]
    pub async fn apply_substitute(
        &self,
        caller: Caller,
        id: Uuid,
        seat: Uuid,
    ) -> LobbyResult<ApplicationRow> {
        let now = self.now();
        let ttl = chrono::Duration::from_std(self.inner.config.pending_ttl)
            .map_err(|e| LobbyError::Unexpected(e.into()))?;
        let new = NewApplication {
            id: Uuid::now_v7(),
            game_id: id,
            account_id: caller.id,
            race_name: String::new(),
            name_key: String::new(),
            created_at: now,
            expires_at: now + ttl,
            invite_code: None,
        };
        let race_name = self
            .inner
            .db
            .lobby()
            .seats(id)
            .await?
            .into_iter()
            .find(|s| s.id == seat)
            .map(|s| s.race_name)
            .unwrap_or_default();
        let payload = json!({
            "game_id": id,
            "application_id": new.id,
            "account_id": caller.id,
            "race_name": race_name,
            "seat_id": seat,
            "substitute": true,
            "expires_at": new.expires_at,
        });
        let notice = NewNotice::new(
            Kind::ApplicationReceived,
            Some(id),
            payload.to_string(),
            Audience::Owner(id),
        );
        let applied = self
            .inner
            .db
            .lobby()
            .apply_substitute(&new, seat, &[notice])
            .await??;
        self.notices_written();
        Ok(applied.application)
    }

    pub async fn applications(
        &self,
        caller: Caller,
        id: Uuid,
        status: Option<ApplicationStatus>,
    ) -> LobbyResult<Vec<ApplicationRow>> {
        self.managed(caller, id).await?;
        Ok(self.inner.db.lobby().applications(id, status).await?)
    }

    #[tracing::instrument(skip_all, fields(game = %id, application = %application))]
    pub async fn approve(
        &self,
        caller: Caller,
        id: Uuid,
        application: Uuid,
    ) -> LobbyResult<(ApplicationRow, SeatRow)> {
        self.managed(caller, id).await?;
        let store = self.inner.db.lobby();
        let notice = self
            .decision_notice(id, application, Kind::ApplicationApproved, None)
            .await?;
        let (approved, seat) = store
            .approve(id, application, self.now(), &notice)
            .await??;
        self.notices_written();
        self.count("approved", 1);
        Ok((approved, seat))
    }

    #[tracing::instrument(skip_all, fields(game = %id, application = %application))]
    pub async fn reject(
        &self,
        caller: Caller,
        id: Uuid,
        application: Uuid,
        reason: Option<&str>,
    ) -> LobbyResult<ApplicationRow> {
        self.managed(caller, id).await?;
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if reason.is_some_and(|r| r.chars().count() > 500) {
            return Err(LobbyError::Invalid("reason: at most 500 characters".into()));
        }
        let notice = self
            .decision_notice(id, application, Kind::ApplicationRejected, reason)
            .await?;
        let rejected = self
            .inner
            .db
            .lobby()
            .reject(id, application, reason, self.now(), &notice)
            .await??;
        self.notices_written();
        self.count("rejected", 1);
        Ok(rejected)
    }

    /// The caller takes back their application (or seat, before the start).
    #[tracing::instrument(skip_all, fields(game = %id, account = %caller.id))]
    pub async fn withdraw(&self, caller: Caller, id: Uuid) -> LobbyResult<ApplicationRow> {
        let store = self.inner.db.lobby();
        let withdrawn = store.withdraw(id, caller.id, self.now()).await??;
        self.count("withdrawn", 1);
        let game = store.game(id).await?;
        let payload = json!({
            "game_id": id,
            "title": game.title,
            "application_id": withdrawn.id,
            "race_name": withdrawn.race_name,
        });
        self.tell(
            &[game.owner_id],
            Kind::ApplicationWithdrawn,
            Some(id),
            &payload,
        )
        .await;
        Ok(withdrawn)
    }

    /// The caller leaves a game that has started; the seat stays, resigned.
    #[tracing::instrument(skip_all, fields(game = %id, account = %caller.id))]
    pub async fn resign(&self, caller: Caller, id: Uuid) -> LobbyResult<SeatRow> {
        let store = self.inner.db.lobby();
        let game = store.game(id).await?;
        if !matches!(
            game.state,
            GameState::Starting | GameState::StartFailed | GameState::Running | GameState::Paused
        ) {
            return Err(LobbyError::Conflict(format!(
                "the game is {}; resigning is for games that have started (withdraw before)",
                game.state.as_str()
            )));
        }
        let seat = store
            .resign(id, caller.id, self.now())
            .await?
            .ok_or_else(|| LobbyError::NotFound("you hold no active seat in this game".into()))?;
        let mut told: Vec<Uuid> = store
            .seats(id)
            .await?
            .iter()
            .filter_map(|s| s.account_id)
            .filter(|a| *a != caller.id)
            .collect();
        told.push(game.owner_id);
        told.dedup();
        let payload = json!({ "game_id": id, "title": game.title, "race_name": seat.race_name });
        self.tell(&told, Kind::PlayerResigned, Some(id), &payload)
            .await;
        Ok(seat)
    }

    #[tracing::instrument(skip_all, fields(game = %id))]
    pub async fn add_bot(&self, caller: Caller, id: Uuid, name: &str) -> LobbyResult<SeatRow> {
        let game = self.managed(caller, id).await?;
        let kind = self.kind(&game.engine)?;
        if !kind.bots {
            return Err(LobbyError::Conflict(format!(
                "the {} engine does not play bot seats",
                kind.name
            )));
        }
        let name = RaceName::parse(name).map_err(|e| LobbyError::Invalid(format!("name: {e}")))?;
        let seat = self
            .inner
            .db
            .lobby()
            .add_bot(&NewBot {
                id: Uuid::now_v7(),
                game_id: id,
                race_name: name.as_str().to_string(),
                name_key: name.key().to_string(),
                at: self.now(),
            })
            .await??;
        Ok(seat)
    }

    #[tracing::instrument(skip_all, fields(game = %id, seat = %seat))]
    pub async fn remove_bot(&self, caller: Caller, id: Uuid, seat: Uuid) -> LobbyResult<SeatRow> {
        self.managed(caller, id).await?;
        let removed = self.inner.db.lobby().remove_bot(id, seat).await?;
        removed.map_err(|refusal| match refusal {
            SeatRefusal::NoApplication => LobbyError::NotFound("no such bot seat".into()),
            other => other.into(),
        })
    }

    // ---- the directory -----------------------------------------------

    pub async fn availability(&self, name: &str) -> LobbyResult<Availability> {
        let name = match RaceName::parse(name) {
            Ok(name) => name,
            Err(e) => {
                return Ok(Availability::Invalid {
                    reason: e.to_string(),
                });
            }
        };
        let held = self.inner.db.lobby().race_name(name.key()).await?;
        let shown = name.as_str().to_string();
        Ok(match held {
            None => Availability::Available { name: shown },
            Some(h) if h.status == NameHold::Registered => Availability::Taken { name: shown },
            Some(h) => Availability::Reserved {
                name: shown,
                until: h.expires_at,
            },
        })
    }

    // ---- the sweeper -------------------------------------------------

    /// Releases expired reservations and closes games whose enrolment
    /// deadline passed, each exactly once even with several sweepers.
    #[tracing::instrument(skip_all)]
    pub async fn sweep(&self) -> LobbyResult<SweepReport> {
        let now = self.now();
        let store = self.inner.db.lobby();
        let mut report = SweepReport::default();
        let expired = store.expire_applications(now).await?;
        report.expired = expired.len();
        self.count("expired", expired.len() as u64);
        for a in &expired {
            let payload = json!({
                "game_id": a.game_id,
                "application_id": a.id,
                "race_name": a.race_name,
            });
            self.tell(
                &[a.account_id],
                Kind::ApplicationExpired,
                Some(a.game_id),
                &payload,
            )
            .await;
        }
        loop {
            let due = store.games_past_deadline(now, 100).await?;
            let batch = due.len();
            for game in due {
                let enough = game.seats_taken >= game.min_players;
                let (transition, reason) = if enough {
                    (Transition::CloseEnrolment, "enrolment deadline passed")
                } else {
                    (
                        Transition::Cancel,
                        "enrolment deadline passed without enough players",
                    )
                };
                match self.transition(&game, transition, None, reason, None).await {
                    Ok(_) if enough => report.started += 1,
                    Ok(_) => report.cancelled += 1,
                    // Another sweeper (or the owner) moved it first.
                    Err(LobbyError::Conflict(_) | LobbyError::Illegal(_)) => {}
                    Err(other) => return Err(other),
                }
            }
            if batch < 100 {
                break;
            }
        }
        let counts = store.game_counts().await?;
        if let Ok(mut shared) = self.inner.counts.lock() {
            *shared = counts;
        }
        Ok(report)
    }

    // ---- helpers -----------------------------------------------------

    /// The game, if `caller` owns it or is an admin.
    async fn managed(&self, caller: Caller, id: Uuid) -> LobbyResult<GameRow> {
        let game = self.inner.db.lobby().game(id).await?;
        if game.owner_id != caller.id && !caller.admin {
            if game.visibility == Visibility::Unlisted {
                return Err(LobbyError::NotFound("no such game".into()));
            }
            return Err(LobbyError::Forbidden(
                "only the game's owner (or an admin) may do this".into(),
            ));
        }
        Ok(game)
    }

    /// Moves `game` and tells everyone concerned; a game that moved in
    /// between is a conflict naming its state now.
    async fn transition(
        &self,
        game: &GameRow,
        transition: Transition,
        actor: Option<Uuid>,
        reason: &str,
        audit: Option<&AuditEntry>,
    ) -> LobbyResult<Transitioned> {
        let to = game.state.apply(transition)?;
        let title = &game.title;
        let (kind, payload) = match to {
            GameState::Starting => (
                Kind::GameStarting,
                json!({
                    "game_id": game.id,
                    "title": title,
                    "players": game.seats_taken,
                    "reason": reason,
                }),
            ),
            GameState::Cancelled => (
                Kind::GameCancelled,
                json!({ "game_id": game.id, "title": title, "reason": reason }),
            ),
            GameState::Running if game.state == GameState::Starting => (
                Kind::GameStarted,
                json!({ "game_id": game.id, "title": title }),
            ),
            GameState::StartFailed => (
                Kind::GameStartFailed,
                json!({ "game_id": game.id, "title": title, "reason": reason }),
            ),
            _ => (
                Kind::GameStateChanged,
                json!({
                    "game_id": game.id,
                    "title": title,
                    "state": to.as_str(),
                    "reason": reason,
                }),
            ),
        };
        let change = StateChange {
            id: Uuid::now_v7(),
            game_id: game.id,
            from: game.state,
            to,
            actor_id: actor,
            reason: reason.to_string(),
            at: self.now(),
            notices: vec![NewNotice::new(
                kind,
                Some(game.id),
                payload.to_string(),
                Audience::Members(game.id),
            )],
        };
        let store = self.inner.db.lobby();
        let moved = store.transition_game(&change, audit).await?;
        self.inner.listings.changed();
        let Some(moved) = moved else {
            let now = store.game(game.id).await?;
            return Err(LobbyError::Conflict(format!(
                "the game is {} now; it cannot {}",
                now.state.as_str(),
                transition.as_str()
            )));
        };
        self.notices_written();
        tracing::info!(game = %game.id, from = game.state.as_str(), to = to.as_str(), reason, "game state changed");
        let queued_job =
            to == GameState::Starting || (to.is_over() && game.state != GameState::Enrolling);
        if queued_job && let Some(queue) = self.inner.start_queue.get() {
            queue.queued();
        }
        self.count("closed", moved.closed.len() as u64);
        match to {
            GameState::Starting => self.inner.metrics.started.add(1, &[]),
            GameState::Cancelled
                if matches!(
                    game.state,
                    GameState::Enrolling | GameState::Starting | GameState::StartFailed
                ) =>
            {
                self.inner.metrics.abandoned.add(1, &[]);
            }
            _ => {}
        }
        for a in &moved.closed {
            let payload = json!({
                "game_id": game.id,
                "title": title,
                "application_id": a.id,
                "race_name": a.race_name,
                "reason": reason,
            });
            self.tell(
                &[a.account_id],
                Kind::ApplicationClosed,
                Some(game.id),
                &payload,
            )
            .await;
        }
        Ok(moved)
    }

    /// A game for a list: no turn-time preview.
    fn view(&self, row: GameRow, manages: bool) -> LobbyResult<GameView> {
        let settings: Value = serde_json::from_str(&row.settings).map_err(|e| {
            LobbyError::Unexpected(anyhow::anyhow!("stored settings of {}: {e}", row.id))
        })?;
        let spec: ScheduleSpec = serde_json::from_str(&row.schedule).map_err(|e| {
            LobbyError::Unexpected(anyhow::anyhow!("stored schedule of {}: {e}", row.id))
        })?;
        let rules: PlayRules = serde_json::from_str(&row.rules).map_err(|e| {
            LobbyError::Unexpected(anyhow::anyhow!("stored rules of {}: {e}", row.id))
        })?;
        Ok(GameView {
            row,
            settings,
            schedule: spec,
            rules,
            preview: None,
            manages,
        })
    }

    /// A single game: with the next turn times previewed.
    fn view_with_preview(&self, row: GameRow, manages: bool) -> LobbyResult<GameView> {
        let mut view = self.view(row, manages)?;
        let preview = match self.inner.engines.get(&view.row.engine) {
            Some(kind) => Schedule::parse_bounded(&view.schedule, kind.mode, FLOOR_STEP)
                .map(|s| s.preview(view.row.enrol_deadline, PREVIEW_COUNT))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        view.preview = Some(preview);
        Ok(view)
    }

    fn audit(&self, actor: &AdminActor, action: &str, game: Uuid, detail: &str) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            actor_id: actor.id,
            actor_email: actor.email.clone(),
            action: action.to_string(),
            target: game.to_string(),
            detail: detail.to_string(),
            at: self.now(),
        }
    }

    fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.inner
                .metrics
                .applications
                .add(n, &[KeyValue::new("outcome", outcome)]);
        }
    }

    /// Tells users of a change after its commit (the kinds that need not
    /// commit with their change); a failed write is logged, the change
    /// stands.
    async fn tell(&self, users: &[Uuid], kind: Kind, game: Option<Uuid>, payload: &Value) {
        if users.is_empty() {
            return;
        }
        let notice = NewNotice::new(
            kind,
            game,
            payload.to_string(),
            Audience::Users(users.to_vec()),
        );
        match self
            .inner
            .db
            .notify()
            .write_notices(&[notice], self.now())
            .await
        {
            Ok(_) => self.notices_written(),
            Err(err) => {
                tracing::warn!(kind = kind.as_str(), error = %err, "lobby notice not written")
            }
        }
    }

    /// The notice of an owner's decision on an application, to its
    /// applicant (read first, so the notice commits with the decision).
    async fn decision_notice(
        &self,
        game: Uuid,
        application: Uuid,
        kind: Kind,
        reason: Option<&str>,
    ) -> LobbyResult<Vec<NewNotice>> {
        let a = match self.inner.db.lobby().application(application).await {
            Ok(a) if a.game_id == game => a,
            // The store refuses it with the precise reason.
            Ok(_) | Err(StoreError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let payload = json!({
            "game_id": game,
            "application_id": a.id,
            "race_name": a.race_name,
            "reason": reason,
        });
        Ok(vec![NewNotice::new(
            kind,
            Some(game),
            payload.to_string(),
            Audience::Users(vec![a.account_id]),
        )])
    }
}

fn title(text: &str) -> LobbyResult<String> {
    let t = text.trim();
    let n = t.chars().count();
    if n == 0 || n > MAX_TITLE_CHARS {
        return Err(LobbyError::Invalid(format!(
            "title: 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(LobbyError::Invalid("title: no control characters".into()));
    }
    Ok(t.to_string())
}

fn settings(kind: &EngineKind, given: &Value) -> LobbyResult<Value> {
    let given = if given.is_null() { &json!({}) } else { given };
    turnbase_engine_kit::settings::apply(&kind.settings_schema, given)
        .map_err(LobbyError::InvalidSettings)
}

fn players(kind: &EngineKind, min: u32, max: u32) -> LobbyResult<(i64, i64)> {
    if min > max {
        return Err(LobbyError::Invalid(format!(
            "min_players ({min}) is more than max_players ({max})"
        )));
    }
    if min < kind.min_players || max > kind.max_players {
        return Err(LobbyError::Invalid(format!(
            "{} plays with {} to {} players; min_players and max_players must be within",
            kind.name, kind.min_players, kind.max_players
        )));
    }
    Ok((i64::from(min), i64::from(max)))
}

fn deadline(at: DateTime<Utc>, now: DateTime<Utc>) -> LobbyResult<()> {
    if at <= now {
        return Err(LobbyError::Invalid(
            "enrol_deadline: must be in the future".into(),
        ));
    }
    let furthest = now + chrono::Duration::from_std(MAX_ENROLMENT).unwrap_or(chrono::Duration::MAX);
    if at > furthest {
        return Err(LobbyError::Invalid(format!(
            "enrol_deadline: at most {} days ahead",
            MAX_ENROLMENT.as_secs() / 86_400
        )));
    }
    Ok(())
}

fn rules_text(rules: &PlayRules) -> LobbyResult<String> {
    rules.check().map_err(LobbyError::Invalid)?;
    serde_json::to_string(rules).map_err(|e| LobbyError::Unexpected(e.into()))
}

fn schedule_text(spec: &ScheduleSpec) -> LobbyResult<String> {
    serde_json::to_string(spec).map_err(|e| LobbyError::Unexpected(e.into()))
}

/// Ten characters from an alphabet without look-alikes (~50 bits).
fn invite_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
