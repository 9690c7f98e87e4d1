//! Notifications as the store sees them.
//!
//! A notification is one person's row, written in the transaction of the
//! change it tells of ([`write_notices`](NotifyStore) is called by the
//! lobby, turn and account statements with the [`NewNotice`]s their caller
//! passed); the rows are that person's inbox. The router later turns each
//! into routes, one per channel the person's preferences choose, and the
//! routes are a leased queue (see `leased.rs`) the notification worker
//! dispatches: delivered, retried, or left `failed` as a dead letter.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreResult;
use crate::mail::NewMail;

/// What a notification tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ApplicationReceived,
    ApplicationApproved,
    ApplicationRejected,
    ApplicationWithdrawn,
    ApplicationExpired,
    ApplicationClosed,
    PlayerResigned,
    GameUpdated,
    GameOwnerChanged,
    GameStarting,
    GameStarted,
    GameCancelled,
    GameStartFailed,
    GameStateChanged,
    TurnOpened,
    TurnResolved,
    YourMove,
    OrdersDue,
    TurnExtended,
    SeatTakenOver,
    Eliminated,
    GameFinished,
    NewDevice,
    AdminNotice,
}

crate::runtime::texts!(Kind {
    ApplicationReceived => "application_received",
    ApplicationApproved => "application_approved",
    ApplicationRejected => "application_rejected",
    ApplicationWithdrawn => "application_withdrawn",
    ApplicationExpired => "application_expired",
    ApplicationClosed => "application_closed",
    PlayerResigned => "player_resigned",
    GameUpdated => "game_updated",
    GameOwnerChanged => "game_owner_changed",
    GameStarting => "game_starting",
    GameStarted => "game_started",
    GameCancelled => "game_cancelled",
    GameStartFailed => "game_start_failed",
    GameStateChanged => "game_state_changed",
    TurnOpened => "turn_opened",
    TurnResolved => "turn_resolved",
    YourMove => "your_move",
    OrdersDue => "orders_due",
    TurnExtended => "turn_extended",
    SeatTakenOver => "seat_taken_over",
    Eliminated => "eliminated",
    GameFinished => "game_finished",
    NewDevice => "new_device",
    AdminNotice => "admin_notice",
});

impl Kind {
    /// The live event's kind on the push path (`lobby.…`, `game.…`).
    pub fn event(self) -> &'static str {
        match self {
            Kind::ApplicationReceived => "lobby.application_received",
            Kind::ApplicationApproved => "lobby.application_approved",
            Kind::ApplicationRejected => "lobby.application_rejected",
            Kind::ApplicationWithdrawn => "lobby.application_withdrawn",
            Kind::ApplicationExpired => "lobby.application_expired",
            Kind::ApplicationClosed => "lobby.application_closed",
            Kind::PlayerResigned => "lobby.player_resigned",
            Kind::GameUpdated => "lobby.game_updated",
            Kind::GameOwnerChanged => "lobby.game_owner_changed",
            Kind::GameStarting => "lobby.game_starting",
            Kind::GameStarted => "lobby.game_started",
            Kind::GameCancelled => "lobby.game_cancelled",
            Kind::GameStartFailed => "lobby.game_start_failed",
            Kind::GameStateChanged => "lobby.game_state_changed",
            Kind::TurnOpened => "game.turn_opened",
            Kind::TurnResolved => "game.turn_resolved",
            Kind::YourMove => "game.your_move",
            Kind::OrdersDue => "game.orders_due",
            Kind::TurnExtended => "game.turn_extended",
            Kind::SeatTakenOver => "game.seat_taken_over",
            Kind::Eliminated => "game.eliminated",
            Kind::GameFinished => "game.finished",
            Kind::NewDevice => "account.new_device",
            Kind::AdminNotice => "admin.notice",
        }
    }
}

/// How a route reaches its person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Push,
    Email,
    Webhook,
}

crate::runtime::texts!(Channel {
    Push => "push",
    Email => "email",
    Webhook => "webhook",
});

/// A route's state; `Failed` is a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteStatus {
    Pending,
    Dispatching,
    Delivered,
    Failed,
}

crate::runtime::texts!(RouteStatus {
    Pending => "pending",
    Dispatching => "dispatching",
    Delivered => "delivered",
    Failed => "failed",
});

pub(crate) const PENDING: &str = "pending";
pub(crate) const DISPATCHING: &str = "dispatching";

/// Who a notice goes to; game audiences are read in the transaction
/// that writes the notice, so they are the people of that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Users(Vec<Uuid>),
    /// The game's owner.
    Owner(Uuid),
    /// The owner and every account holding a seat of the game.
    Members(Uuid),
    /// Whoever made this application.
    Applicant(Uuid),
}

/// A notice to write with a change: one notification per recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotice {
    pub kind: Kind,
    pub game_id: Option<Uuid>,
    /// A JSON object.
    pub payload: String,
    pub to: Audience,
}

impl NewNotice {
    pub fn new(kind: Kind, game_id: Option<Uuid>, payload: String, to: Audience) -> NewNotice {
        NewNotice {
            kind,
            game_id,
            payload,
            to,
        }
    }
}

/// A stored notification, with its game's title.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub kind: String,
    pub game_id: Option<Uuid>,
    pub game_title: Option<String>,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// A notification waiting for its routes, with what routing needs to
/// know of its recipient.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Unrouted {
    #[sqlx(flatten)]
    pub notification: NotificationRow,
    pub email: Option<String>,
    pub blocked: bool,
    pub settings: Option<String>,
    pub webhook_url: Option<String>,
    pub webhook_salt: Option<String>,
}

/// A route to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoute {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub account_id: Uuid,
    pub kind: Kind,
    pub channel: Channel,
    pub target: Option<String>,
    pub digest_key: Option<String>,
    /// When it may be dispatched (later when held by quiet hours or a
    /// digest).
    pub due_at: DateTime<Utc>,
    /// Already delivered by the router (push, published before the
    /// routes' commit): written as delivered, its one attempt counted.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A route as the worker claims it, with its notification.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedRoute {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub account_id: Uuid,
    pub kind: String,
    pub channel: String,
    pub target: Option<String>,
    pub digest_key: Option<String>,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOutcome {
    Delivered,
    /// Failed; tried again at the given time.
    Retry(DateTime<Utc>),
    /// Failed for good: a dead letter.
    Failed,
}

impl RouteOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteOutcome::Delivered => "delivered",
            RouteOutcome::Retry(_) => "retry",
            RouteOutcome::Failed => "failed",
        }
    }
}

/// One finished attempt of a held route.
#[derive(Debug, Clone)]
pub struct RouteAttempt {
    pub route_id: Uuid,
    pub outcome: RouteOutcome,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    /// A mail to hand to the outbox with the route's delivery (email).
    pub mail: Option<NewMail>,
}

/// A route as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RouteRecord {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub account_id: Uuid,
    pub kind: String,
    pub channel: String,
    pub target: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub attempts_total: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RouteAttemptRecord {
    pub attempt: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
}

/// Which routes an admin list or requeue means (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// One route.
    pub id: Option<Uuid>,
    pub status: Option<RouteStatus>,
    pub channel: Option<Channel>,
    pub kind: Option<Kind>,
    pub account_id: Option<Uuid>,
    /// Routes with a smaller id (paging, newest first).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// A person's stored preferences.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PreferencesRow {
    pub account_id: Uuid,
    pub settings: String,
    pub webhook_url: Option<String>,
    pub webhook_salt: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A clock whose reminder may be due: its open turn and deadline.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReminderCandidate {
    pub game_id: Uuid,
    pub turn: i64,
    pub opened_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub rules: String,
}

#[async_trait::async_trait]
pub trait NotifyStore: Send + Sync {
    /// Writes notices on their own (changes that tell after their commit,
    /// and admin notices); the notifications written.
    async fn write_notices(&self, notices: &[NewNotice], now: DateTime<Utc>) -> StoreResult<u64>;

    /// An admin notice to every account after `after` (by id), `limit` at
    /// a time in one short transaction; the last account written to, or
    /// `None` when there were none left.
    async fn notice_everyone(
        &self,
        notice: &NewNotice,
        after: Option<Uuid>,
        limit: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<(u64, Option<Uuid>)>;

    /// Notifications without routes yet, oldest first (after `after`,
    /// when given).
    async fn unrouted(&self, after: Option<Uuid>, limit: i64) -> StoreResult<Vec<Unrouted>>;

    /// Marks these notifications routed and writes their routes, unless
    /// another router did first. Returns the routes written.
    async fn save_routes(
        &self,
        notifications: &[Uuid],
        routes: &[NewRoute],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<NewRoute>>;

    /// Due routes (pending, or leased by a worker whose lease ran out),
    /// now held by `owner` for `lease`.
    async fn claim_routes(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        owner: &str,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedRoute>>;

    /// Records attempts of routes `owner` holds (with their mail, in one
    /// transaction); for each, whether it was still held.
    async fn finish_routes(&self, owner: &str, attempts: &[RouteAttempt])
    -> StoreResult<Vec<bool>>;

    /// Gives a held route back, due at `now`, without spending an attempt.
    async fn release_route(&self, id: Uuid, owner: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// The notifications a digest route stands for: the account's
    /// `kind` notifications of the game between `from` and `to`.
    async fn digest_items(
        &self,
        account: Uuid,
        game: Uuid,
        kind: Kind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<NotificationRow>>;

    async fn notification(&self, id: Uuid) -> StoreResult<NotificationRow>;

    /// The inbox, newest first, before a notification id.
    async fn inbox(
        &self,
        account: Uuid,
        before: Option<Uuid>,
        unread_only: bool,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRow>>;

    async fn unread_count(&self, account: Uuid) -> StoreResult<i64>;

    /// Unread counts of several accounts (absent: none unread).
    async fn unread_counts(&self, accounts: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>>;

    /// Marks one read; false when it is not this account's.
    async fn mark_read(&self, account: Uuid, id: Uuid, now: DateTime<Utc>) -> StoreResult<bool>;

    async fn mark_all_read(&self, account: Uuid, now: DateTime<Utc>) -> StoreResult<u64>;

    async fn preferences(&self, account: Uuid) -> StoreResult<Option<PreferencesRow>>;

    async fn put_preferences(&self, row: &PreferencesRow) -> StoreResult<()>;

    /// Uses an unsubscribe link once: records its id and stores the new
    /// preferences together; false (nothing changed) when it was used.
    async fn unsubscribe(
        &self,
        token_id: Uuid,
        kind: Kind,
        row: &PreferencesRow,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    async fn list_routes(&self, filter: &RouteFilter) -> StoreResult<Vec<RouteRecord>>;

    async fn route(&self, id: Uuid) -> StoreResult<(RouteRecord, Vec<RouteAttemptRecord>)>;

    /// Makes failed routes matching the filter pending again with a fresh
    /// budget (at most `filter.limit`); the ids requeued.
    async fn requeue_routes(
        &self,
        filter: &RouteFilter,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>>;

    /// Routes waiting per channel (pending or leased).
    async fn route_depths(&self) -> StoreResult<Vec<(String, i64)>>;

    /// Deletes notifications (and their routes) created before `before`.
    async fn prune_notifications(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;

    /// Running games whose open turn is due within `(now, until]`, still
    /// awaits someone and had no reminder.
    async fn reminder_candidates(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<ReminderCandidate>>;

    /// Sends the reminder of a game's open turn, once: if the clock still
    /// has `turn` open, due after `now` and not reminded, marks it and
    /// writes `notice` to the accounts of the awaited seats that have not
    /// sent orders. The number told, `None` when it was not due.
    async fn remind(
        &self,
        game: Uuid,
        turn: i64,
        notice: &NewNotice,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<u64>>;
}
