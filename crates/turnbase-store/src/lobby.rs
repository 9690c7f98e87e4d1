//! The lobby as the store sees it: games and their one state machine,
//! applications, seats and the race-name directory. Values arrive already
//! validated by the lobby crate (titles, race names and their keys,
//! settings, schedules); this module keeps them and holds the invariants
//! that concurrency could break: no game over-filled, no race name held
//! twice, no game moved out of a state twice.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreResult;
use crate::accounts::AuditEntry;
use crate::notify::NewNotice;

/// Where a game is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GameState {
    /// Open for applications until the enrolment deadline.
    Enrolling,
    /// Enrolment closed with enough players; the runtime gives it an engine.
    Starting,
    /// The runtime could not start its engine; the owner retries or
    /// cancels.
    StartFailed,
    Running,
    Paused,
    Finished,
    Cancelled,
}

/// What moves a game from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Enrolment closes with enough players (deadline or the owner early).
    CloseEnrolment,
    /// The runtime has the engine running with the seats.
    Begin,
    /// The runtime gave up starting the engine.
    FailStart,
    /// The owner (or an admin) asks for another start.
    RetryStart,
    Pause,
    Resume,
    Finish,
    /// The owner (while enrolling), an admin (any unfinished game), the
    /// sweeper (not enough players at the deadline) or the runtime (the
    /// engine could not be started).
    Cancel,
}

/// A transition the current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the game is {}; it cannot {}", .from.as_str(), .transition.as_str())]
pub struct IllegalTransition {
    pub from: GameState,
    pub transition: Transition,
}

impl GameState {
    pub const ALL: [GameState; 7] = [
        GameState::Enrolling,
        GameState::Starting,
        GameState::StartFailed,
        GameState::Running,
        GameState::Paused,
        GameState::Finished,
        GameState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GameState::Enrolling => "enrolling",
            GameState::Starting => "starting",
            GameState::StartFailed => "start_failed",
            GameState::Running => "running",
            GameState::Paused => "paused",
            GameState::Finished => "finished",
            GameState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<GameState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Finished and cancelled games never change again.
    pub fn is_over(self) -> bool {
        matches!(self, GameState::Finished | GameState::Cancelled)
    }

    /// The whole state machine: the state `transition` leads to from
    /// here, or why it may not happen.
    pub fn apply(self, transition: Transition) -> Result<GameState, IllegalTransition> {
        use GameState as S;
        use Transition as T;
        let next = match (self, transition) {
            (S::Enrolling, T::CloseEnrolment) => S::Starting,
            (S::Starting, T::Begin) => S::Running,
            (S::Starting, T::FailStart) => S::StartFailed,
            (S::StartFailed, T::RetryStart) => S::Starting,
            (S::Running, T::Pause) => S::Paused,
            (S::Paused, T::Resume) => S::Running,
            (S::Running | S::Paused, T::Finish) => S::Finished,
            (S::Enrolling | S::Starting | S::StartFailed | S::Running | S::Paused, T::Cancel) => {
                S::Cancelled
            }
            (from, transition) => return Err(IllegalTransition { from, transition }),
        };
        Ok(next)
    }
}

impl Transition {
    pub const ALL: [Transition; 8] = [
        Transition::CloseEnrolment,
        Transition::Begin,
        Transition::FailStart,
        Transition::RetryStart,
        Transition::Pause,
        Transition::Resume,
        Transition::Finish,
        Transition::Cancel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::CloseEnrolment => "close enrolment",
            Transition::Begin => "begin",
            Transition::FailStart => "fail to start",
            Transition::RetryStart => "retry its start",
            Transition::Pause => "pause",
            Transition::Resume => "resume",
            Transition::Finish => "finish",
            Transition::Cancel => "be cancelled",
        }
    }
}

/// Who may find a game.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Listed in the lobby; anyone may apply.
    Public,
    /// Not listed; only holders of the invite code may apply.
    Unlisted,
}

impl Visibility {
    pub const ALL: [Visibility; 2] = [Visibility::Public, Visibility::Unlisted];

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
        }
    }

    pub fn parse(text: &str) -> Option<Visibility> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Where an application is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplicationStatus {
    /// Waiting for the owner; its race name is reserved until it expires.
    Pending,
    /// Seated.
    Approved,
    Rejected,
    /// The player took it back (pending, or approved before the start).
    Withdrawn,
    /// The owner did not decide within the pending-registration TTL.
    Expired,
    /// Still pending when enrolment closed or the game was cancelled.
    Closed,
}

impl ApplicationStatus {
    pub const ALL: [ApplicationStatus; 6] = [
        ApplicationStatus::Pending,
        ApplicationStatus::Approved,
        ApplicationStatus::Rejected,
        ApplicationStatus::Withdrawn,
        ApplicationStatus::Expired,
        ApplicationStatus::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationStatus::Pending => "pending",
            ApplicationStatus::Approved => "approved",
            ApplicationStatus::Rejected => "rejected",
            ApplicationStatus::Withdrawn => "withdrawn",
            ApplicationStatus::Expired => "expired",
            ApplicationStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<ApplicationStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A seat's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeatStatus {
    Active,
    /// The player left after the start; the seat stays for history.
    Resigned,
}

impl SeatStatus {
    pub const ALL: [SeatStatus; 2] = [SeatStatus::Active, SeatStatus::Resigned];

    pub fn as_str(self) -> &'static str {
        match self {
            SeatStatus::Active => "active",
            SeatStatus::Resigned => "resigned",
        }
    }

    pub fn parse(text: &str) -> Option<SeatStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// How a race name is held in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameHold {
    /// Reserved by a pending application until it expires.
    Pending,
    /// Held by a seat for the game's life.
    Registered,
}

impl NameHold {
    pub const ALL: [NameHold; 2] = [NameHold::Pending, NameHold::Registered];

    pub fn as_str(self) -> &'static str {
        match self {
            NameHold::Pending => "pending",
            NameHold::Registered => "registered",
        }
    }

    pub fn parse(text: &str) -> Option<NameHold> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

macro_rules! text_state {
    ($($state:ty),*) => {$(
        impl TryFrom<String> for $state {
            type Error = String;

            fn try_from(text: String) -> Result<$state, String> {
                <$state>::parse(&text).ok_or_else(|| format!("unknown state {text:?}"))
            }
        }

        impl PartialEq<&str> for $state {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    )*};
}
text_state!(
    GameState,
    Visibility,
    ApplicationStatus,
    SeatStatus,
    NameHold
);

/// The columns of a game, in [`GameRow`]'s order.
pub(crate) const GAME_COLUMNS: &str = "g.id, g.owner_id, g.title, g.engine, g.engine_version, \
     g.settings, g.min_players, g.max_players, g.seats_taken, g.enrol_deadline, g.schedule, \
     g.visibility, g.invite_code, g.state, g.created_at, g.updated_at, g.started_at, g.ended_at, \
     g.start_error, g.rules";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GameRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub engine: String,
    pub engine_version: String,
    /// A JSON object.
    pub settings: String,
    pub min_players: i64,
    pub max_players: i64,
    /// Approved players and bots.
    pub seats_taken: i64,
    pub enrol_deadline: DateTime<Utc>,
    /// A JSON object.
    pub schedule: String,
    #[sqlx(try_from = "String")]
    pub visibility: Visibility,
    pub invite_code: Option<String>,
    #[sqlx(try_from = "String")]
    pub state: GameState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why the last start failed (in `start_failed`).
    pub start_error: Option<String>,
    /// A JSON object: the platform's play rules (early turns, bot delay,
    /// excused misses, bot takeover).
    pub rules: String,
}

/// A game to create (in `enrolling`).
#[derive(Debug, Clone)]
pub struct NewGame {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub engine: String,
    pub engine_version: String,
    pub settings: String,
    pub min_players: i64,
    pub max_players: i64,
    pub enrol_deadline: DateTime<Utc>,
    pub schedule: String,
    pub visibility: Visibility,
    pub invite_code: Option<String>,
    pub created_at: DateTime<Utc>,
    /// A JSON object (see [`GameRow::rules`]).
    pub rules: String,
}

/// What the owner may change while enrolling. `None` keeps a value.
#[derive(Debug, Clone, Default)]
pub struct GameEdit {
    pub title: Option<String>,
    pub settings: Option<String>,
    pub min_players: Option<i64>,
    pub max_players: Option<i64>,
    pub enrol_deadline: Option<DateTime<Utc>>,
    pub schedule: Option<String>,
    pub rules: Option<String>,
}

/// A page of games, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GameFilter {
    /// Only public games (the lobby's list); admins see all.
    pub public_only: bool,
    pub engine: Option<String>,
    pub state: Option<GameState>,
    /// At least this many seats free.
    pub min_free_seats: Option<i64>,
    /// A word of the title (case-insensitive).
    pub search: Option<String>,
    pub owner: Option<Uuid>,
    /// Games created before this one (the cursor).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// A state change to record: the game moves `from` → `to` only if it is
/// still in `from`.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub id: Uuid,
    pub game_id: Uuid,
    pub from: GameState,
    pub to: GameState,
    pub actor_id: Option<Uuid>,
    pub reason: String,
    pub at: DateTime<Utc>,
    /// What the move tells people, written with it.
    pub notices: Vec<crate::notify::NewNotice>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StateChangeRow {
    pub id: Uuid,
    pub game_id: Uuid,
    pub from_state: Option<String>,
    pub to_state: String,
    pub actor_id: Option<Uuid>,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// What a transition did besides moving the game.
#[derive(Debug, Clone)]
pub struct Transitioned {
    pub game: GameRow,
    /// Pending applications it closed (enrolment ended or the game was
    /// cancelled); their names were released.
    pub closed: Vec<ApplicationRow>,
    /// Seats of the game (for telling their holders).
    pub seats: Vec<SeatRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApplicationRow {
    pub id: Uuid,
    pub game_id: Uuid,
    pub account_id: Uuid,
    pub race_name: String,
    #[sqlx(try_from = "String")]
    pub status: ApplicationStatus,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// A substitute's application: the seat (open after the bot took it
    /// over) it would take over, race name and history included.
    pub seat_id: Option<Uuid>,
}

/// An application to record with its race-name reservation.
#[derive(Debug, Clone)]
pub struct NewApplication {
    pub id: Uuid,
    pub game_id: Uuid,
    pub account_id: Uuid,
    /// As the player wrote it (normalised to NFKC).
    pub race_name: String,
    /// The directory key (see the `race_names` table).
    pub name_key: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The invite code the applicant gave, checked against an unlisted
    /// game's own under the same lock as the rest.
    pub invite_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SeatRow {
    pub id: Uuid,
    pub game_id: Uuid,
    pub account_id: Option<Uuid>,
    pub is_bot: bool,
    pub race_name: String,
    #[sqlx(try_from = "String")]
    pub status: SeatStatus,
    pub joined_at: DateTime<Utc>,
    pub resigned_at: Option<DateTime<Utc>>,
    /// Consecutive turns let pass without orders.
    pub misses: i64,
    /// Excused misses spent.
    pub excuses_used: i64,
    /// The engine's bot plays the seat (after too many misses) until its
    /// player or a substitute sends orders; the seat is open for a
    /// substitute meanwhile.
    pub bot_control: bool,
}

/// A bot seat to add.
#[derive(Debug, Clone)]
pub struct NewBot {
    pub id: Uuid,
    pub game_id: Uuid,
    pub race_name: String,
    pub name_key: String,
    pub at: DateTime<Utc>,
}

/// A recorded application, with what telling the owner needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub application: ApplicationRow,
    pub owner_id: Uuid,
    pub title: String,
}

/// A name in the directory.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RaceNameRow {
    pub name_key: String,
    pub name: String,
    pub game_id: Uuid,
    pub account_id: Option<Uuid>,
    #[sqlx(try_from = "String")]
    pub status: NameHold,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A game as one of its players sees it in "my games".
#[derive(Debug, Clone)]
pub struct MyGame {
    pub game: GameRow,
    pub seat: Option<SeatRow>,
    /// A pending application, when there is no seat.
    pub application: Option<ApplicationRow>,
}

/// Why a seat could not be taken (applying, approving, adding a bot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeatRefusal {
    #[error("no such game")]
    NoGame,
    #[error("the game is {}; enrolment is closed", .0.as_str())]
    NotEnrolling(GameState),
    #[error("the game is full")]
    Full,
    #[error("the race name is {} in another game", match .0 { NameHold::Pending => "reserved", NameHold::Registered => "taken" })]
    NameHeld(NameHold),
    #[error("you already have an application for this game")]
    AlreadyApplied,
    #[error("the invite code is missing or wrong")]
    WrongInvite,
    #[error("the application is {}, not pending", .0.as_str())]
    NotPending(ApplicationStatus),
    #[error("no such application for this game")]
    NoApplication,
    #[error("the seat is not open for a substitute")]
    SeatNotOpen,
}

#[async_trait::async_trait]
pub trait LobbyStore: Send + Sync {
    /// Creates a game in `enrolling`, with its first state record.
    async fn create_game(&self, game: &NewGame, actor: Uuid) -> StoreResult<GameRow>;

    async fn game(&self, id: Uuid) -> StoreResult<GameRow>;

    async fn list_games(&self, filter: &GameFilter) -> StoreResult<Vec<GameRow>>;

    /// Games `account` owns, holds a seat in or has a pending application
    /// for, newest first.
    async fn my_games(
        &self,
        account: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<MyGame>>;

    /// Changes an enrolling game; `Conflict` names the state otherwise.
    /// A lower max than the seats taken is refused the same way.
    async fn edit_game(
        &self,
        id: Uuid,
        edit: &GameEdit,
        now: DateTime<Utc>,
    ) -> StoreResult<GameRow>;

    /// Moves the game if it is still in `change.from`; `None` when it was
    /// not (another change came first). Enrolment closing or a cancel also
    /// closes pending applications and releases their names; an ending
    /// releases every name of the game. Entering `starting` queues the
    /// runtime's start job and ending a game that had left enrolment its
    /// stop job, in the same transaction. `audit` is written with it; a
    /// failed start's reason is kept in `start_error`.
    async fn transition_game(
        &self,
        change: &StateChange,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<Option<Transitioned>>;

    async fn state_history(&self, game: Uuid) -> StoreResult<Vec<StateChangeRow>>;

    /// Gives an enrolling game another owner, audited.
    async fn transfer_game(
        &self,
        id: Uuid,
        owner: Uuid,
        audit: &AuditEntry,
    ) -> StoreResult<GameRow>;

    /// Records an application and reserves its race name, if the game is
    /// enrolling, has a free seat, the name is free and the player has no
    /// live application there.
    async fn apply(
        &self,
        application: &NewApplication,
        notices: &[NewNotice],
    ) -> StoreResult<Result<Applied, SeatRefusal>>;

    /// Records a substitute's application for a seat the bot took over in
    /// a running (or paused) game; the seat keeps its race name.
    async fn apply_substitute(
        &self,
        application: &NewApplication,
        seat: Uuid,
        notices: &[NewNotice],
    ) -> StoreResult<Result<Applied, SeatRefusal>>;

    /// Seats a pending applicant (a substitute takes its seat over): raises `seats_taken` only while below
    /// the maximum, in the same statement, so racing approvals never
    /// over-fill a game.
    async fn approve(
        &self,
        game: Uuid,
        application: Uuid,
        now: DateTime<Utc>,
        notices: &[NewNotice],
    ) -> StoreResult<Result<(ApplicationRow, SeatRow), SeatRefusal>>;

    /// Rejects a pending application and releases its name.
    async fn reject(
        &self,
        game: Uuid,
        application: Uuid,
        reason: Option<&str>,
        now: DateTime<Utc>,
        notices: &[NewNotice],
    ) -> StoreResult<Result<ApplicationRow, SeatRefusal>>;

    /// Takes back `account`'s live application before the start: a
    /// pending one, or an approved one while the game is enrolling (its
    /// seat goes); the name is released.
    async fn withdraw(
        &self,
        game: Uuid,
        account: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<ApplicationRow, SeatRefusal>>;

    /// Marks `account`'s seat resigned; `None` if it holds no active seat.
    async fn resign(
        &self,
        game: Uuid,
        account: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SeatRow>>;

    /// Seats a bot with a registered name, like an approval.
    async fn add_bot(&self, bot: &NewBot) -> StoreResult<Result<SeatRow, SeatRefusal>>;

    /// Removes a bot seat from an enrolling game and releases its name.
    async fn remove_bot(&self, game: Uuid, seat: Uuid)
    -> StoreResult<Result<SeatRow, SeatRefusal>>;

    async fn application(&self, id: Uuid) -> StoreResult<ApplicationRow>;

    async fn applications(
        &self,
        game: Uuid,
        status: Option<ApplicationStatus>,
    ) -> StoreResult<Vec<ApplicationRow>>;

    async fn seats(&self, game: Uuid) -> StoreResult<Vec<SeatRow>>;

    /// The directory entry for a key, if the name is held.
    async fn race_name(&self, key: &str) -> StoreResult<Option<RaceNameRow>>;

    /// Expires pending applications whose reservation ran out and
    /// releases their names; returns them.
    async fn expire_applications(&self, now: DateTime<Utc>) -> StoreResult<Vec<ApplicationRow>>;

    /// Enrolling games whose deadline is at or before `now`, oldest
    /// deadline first.
    async fn games_past_deadline(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<GameRow>>;

    /// How many games are in each state.
    async fn game_counts(&self) -> StoreResult<Vec<(GameState, i64)>>;
}

#[cfg(test)]
mod tests {
    use super::{GameState, Transition};

    #[test]
    fn every_state_and_transition_has_one_text() {
        for s in GameState::ALL {
            assert_eq!(GameState::parse(s.as_str()), Some(s));
        }
        assert_eq!(GameState::parse("Running"), None);
        let texts: std::collections::HashSet<_> =
            Transition::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(texts.len(), Transition::ALL.len());
    }
}
