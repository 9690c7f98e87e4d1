//! Turns as the store sees them: each running game's clock (its open turn
//! and when that turn resolves), one row per turn that is first its claim
//! and then its recorded result, and which seats sent orders.
//!
//! A turn resolves exactly once because only the scheduler that inserts
//! the turn's row (or takes over its run-out lease) calls the engine, the
//! engine's resolve is idempotent by turn number, and the result is
//! recorded only while the row is still a claim, in the same transaction
//! that moves the clock on (and ends the game when the engine says so).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreResult;
use crate::lobby::{GameRow, SeatRow, StateChange, Transitioned};

/// Why a clock is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The game just began: the scheduler opens its first turn.
    Open,
    /// The game was resumed: the scheduler gives the turn a new deadline.
    Resume,
    /// The schedule's slot came.
    Schedule,
    /// A sequential mover's clock ran out.
    Timeout,
    /// A bot (or a seat the bot plays) is to move.
    Bot,
    /// Every awaited seat sent orders.
    Early,
    /// The owner or an admin forced the turn.
    Forced,
    /// The slot passed while no scheduler ran: one late turn.
    CatchUp,
    /// A sequential move resolved the turn (the orders call).
    Move,
}

crate::runtime::texts!(Trigger {
    Open => "open",
    Resume => "resume",
    Schedule => "schedule",
    Timeout => "timeout",
    Bot => "bot",
    Early => "early",
    Forced => "forced",
    CatchUp => "catch_up",
    Move => "move",
});

impl Trigger {
    /// Whether the scheduler plans the clock (no engine resolve) on it.
    pub fn plans(self) -> bool {
        matches!(self, Trigger::Open | Trigger::Resume)
    }
}

/// A running game's clock.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClockRow {
    pub game_id: Uuid,
    /// The open turn.
    pub turn: i64,
    pub opened_at: DateTime<Utc>,
    /// Where an interval schedule counts its slots from.
    pub anchor_at: DateTime<Utc>,
    /// The schedule slot this turn stands for (none for move clocks).
    pub slot_at: Option<DateTime<Utc>>,
    /// When the scheduler acts next; none while paused.
    pub due_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "String")]
    pub trigger: Trigger,
    /// JSON list of the seat ids the engine waits for.
    pub to_move: String,
    /// JSON list of the seat ids of people the platform waits for.
    pub awaiting: String,
    pub extended: bool,
    pub excused: bool,
    pub paused_at: Option<DateTime<Utc>>,
    /// Failed engine calls for this turn.
    pub attempts: i64,
    /// Raised by every change.
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const CLOCK_COLUMNS: &str = "game_id, turn, opened_at, anchor_at, slot_at, due_at, \
     trigger, to_move, awaiting, extended, excused, paused_at, attempts, version, updated_at";

/// Where a turn's row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnStatus {
    /// A scheduler holds it and calls the engine.
    Claimed,
    Resolved,
}

crate::runtime::texts!(TurnStatus { Claimed => "claimed", Resolved => "resolved" });

/// A turn: its claim, then its result.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TurnRow {
    pub game_id: Uuid,
    pub turn: i64,
    #[sqlx(try_from = "String")]
    pub status: TurnStatus,
    #[sqlx(try_from = "String")]
    pub trigger: Trigger,
    pub due_at: DateTime<Utc>,
    pub claimed_at: DateTime<Utc>,
    pub claimed_by: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub lateness_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The engine's resolution (JSON).
    pub resolution: Option<String>,
}

pub(crate) const TURN_COLUMNS: &str = "game_id, turn, status, trigger, due_at, claimed_at, \
     claimed_by, lease_until, sent_at, resolved_at, lateness_ms, duration_ms, resolution";

/// A claim to take.
#[derive(Debug, Clone)]
pub struct TurnClaim<'a> {
    pub game_id: Uuid,
    pub turn: i64,
    pub trigger: Trigger,
    pub due_at: DateTime<Utc>,
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    pub lease: Duration,
}

/// A resolved turn to record, and where the clock goes next.
#[derive(Debug, Clone)]
pub struct TurnResult {
    pub game_id: Uuid,
    pub turn: i64,
    pub trigger: Trigger,
    pub due_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    pub resolved_at: DateTime<Utc>,
    pub lateness_ms: Option<i64>,
    pub duration_ms: i64,
    /// The engine's resolution (JSON).
    pub resolution: String,
    /// The next turn's clock (its `version` is ignored); `None` when the
    /// game ends with this turn.
    pub next: Option<ClockRow>,
    /// The game's move to `finished`, when it ends.
    pub finish: Option<StateChange>,
    /// Awaited seats that sent nothing (their miss count rises) and seats
    /// that sent orders (theirs starts again).
    pub missed: Vec<Uuid>,
    pub acted: Vec<Uuid>,
    /// What the turn tells people, written with its record.
    pub notices: Vec<crate::notify::NewNotice>,
}

/// What recording a turn did.
#[derive(Debug, Clone)]
pub struct RecordedTurn {
    pub game: GameRow,
    /// The seats after the change (miss counts updated).
    pub seats: Vec<SeatRow>,
    /// The lobby's side of an ending, when the game finished with it.
    pub finished: Option<Transitioned>,
}

/// A page of a game's turns, newest first.
#[derive(Debug, Clone, Copy)]
pub struct TurnPage {
    /// Turns before this number (the cursor).
    pub before: Option<i64>,
    pub limit: i64,
}

#[async_trait::async_trait]
pub trait TurnStore: Send + Sync {
    async fn clock(&self, game: Uuid) -> StoreResult<Option<ClockRow>>;

    /// Clocks due at or before `now`, earliest first.
    async fn due_clocks(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<ClockRow>>;

    /// The earliest time after `now` any clock is due.
    async fn next_due_after(&self, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>>;

    /// How many clocks are due at or before `now`.
    async fn due_count(&self, now: DateTime<Utc>) -> StoreResult<i64>;

    /// Writes `clock` if the stored one is still at `clock.version` (and
    /// raises the version); whether it was.
    async fn update_clock(&self, clock: &ClockRow) -> StoreResult<bool>;

    /// [`TurnStore::update_clock`] that writes `notices` with the clock,
    /// in one transaction (nothing when the clock moved on).
    async fn update_clock_telling(
        &self,
        clock: &ClockRow,
        notices: &[crate::notify::NewNotice],
    ) -> StoreResult<bool>;

    /// Claims the turn for `claim.owner` until `now + lease`: inserts its
    /// row, or takes over a claim whose lease ran out, if the clock still
    /// has that turn open. The clock is then due again when the lease ends
    /// (so a scheduler that died is followed by another). `None` when the
    /// turn moved on or another scheduler holds it.
    async fn claim_turn(&self, claim: &TurnClaim<'_>) -> StoreResult<Option<TurnRow>>;

    /// [`TurnStore::claim_turn`] for many turns in one transaction (the
    /// scheduler's batch of due turns); the claims it got.
    async fn claim_turns(&self, claims: &[TurnClaim<'_>]) -> StoreResult<Vec<TurnRow>>;

    /// Hands a claim back after a failed engine call: the clock is due
    /// again at `retry_at` with one more failed attempt.
    async fn release_turn(
        &self,
        game: Uuid,
        turn: i64,
        owner: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Records a resolution, moves the clock on, counts misses, and ends
    /// the game when it finished, in one transaction. `None` when the turn
    /// was already recorded (the engine's idempotent answer came twice).
    async fn record_turn(&self, result: &TurnResult) -> StoreResult<Option<RecordedTurn>>;

    /// Notes that `seat` sent orders for `turn`, if it is still the open
    /// turn and not claimed; the seats that have sent orders for it, or
    /// `None` when the turn is closed.
    async fn submit(
        &self,
        game: Uuid,
        turn: i64,
        seat: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Vec<Uuid>>>;

    /// Seats that sent orders for `turn`.
    async fn submissions(&self, game: Uuid, turn: i64) -> StoreResult<Vec<Uuid>>;

    async fn turn(&self, game: Uuid, turn: i64) -> StoreResult<Option<TurnRow>>;

    /// Recorded and claimed turns, newest first.
    async fn turns(&self, game: Uuid, page: TurnPage) -> StoreResult<Vec<TurnRow>>;

    /// Hands a seat to the engine's bot or back; resets its misses when
    /// handed back.
    async fn set_bot_control(&self, seat: Uuid, bot: bool) -> StoreResult<()>;

    /// Spends one excused miss of each seat.
    async fn spend_excuses(&self, seats: &[Uuid]) -> StoreResult<()>;
}
