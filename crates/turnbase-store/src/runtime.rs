//! The game runtime as the store sees it: a record per game given an
//! engine, and the durable queue of start, stop and remove jobs (a leased
//! queue: a job is a row before any worker sees it, so a backend that dies
//! with jobs queued or under way finds them again at start).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::StoreResult;

/// What a runtime job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Give the game an engine and initialise it.
    Start,
    /// Stop the engine of a game that ended.
    Stop,
    /// Remove a stopped engine's data (after the keep period).
    Remove,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Queued,
    /// Claimed by a worker under a lease.
    Running,
    Done,
    /// Given up after its attempts (a dead letter, kept with its error).
    Failed,
}

/// Where a game's engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordState {
    Starting,
    Ready,
    Stopped,
    Removed,
    Failed,
}

macro_rules! texts {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),*
                }
            }

            pub fn parse(text: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|s| s.as_str() == text)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = String;

            fn try_from(text: String) -> Result<$ty, String> {
                <$ty>::parse(&text).ok_or_else(|| format!("unknown state {text:?}"))
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
pub(crate) use texts;
texts!(JobKind { Start => "start", Stop => "stop", Remove => "remove" });
texts!(JobStatus { Queued => "queued", Running => "running", Done => "done", Failed => "failed" });
texts!(RecordState {
    Starting => "starting",
    Ready => "ready",
    Stopped => "stopped",
    Removed => "removed",
    Failed => "failed",
});

/// A job a worker holds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub game_id: Uuid,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    /// Attempts before this one.
    pub attempts: i64,
}

/// How an attempt at a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Done,
    /// Try again at that time; the error is kept.
    RetryAt(DateTime<Utc>, String),
    /// Give up (a dead letter).
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub game_id: Uuid,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub(crate) const JOB_COLUMNS: &str =
    "id, game_id, kind, status, attempts, next_attempt_at, last_error, created_at, finished_at";

/// A game's engine, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RuntimeRecord {
    pub game_id: Uuid,
    pub engine: String,
    pub driver: String,
    pub placement: String,
    pub address: Option<String>,
    pub handle: Option<String>,
    #[sqlx(try_from = "String")]
    pub state: RecordState,
    /// The seed given to the engine (a u64, stored bit for bit).
    pub seed: i64,
    pub restarts: i64,
    pub last_health_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const RECORD_COLUMNS: &str = "game_id, engine, driver, placement, address, handle, \
     state, seed, restarts, last_health_at, last_error, created_at, updated_at";

#[async_trait::async_trait]
pub trait RuntimeStore: Send + Sync {
    /// Claims up to `limit` due jobs for `owner` until `now + lease`.
    async fn claim_runtime_jobs(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        owner: &str,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedJob>>;

    /// Records the end of an attempt, if `owner` still holds the job;
    /// whether it did.
    async fn finish_runtime_job(
        &self,
        id: Uuid,
        owner: &str,
        end: &JobEnd,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Hands a held job back, due now, without spending an attempt.
    async fn release_runtime_job(
        &self,
        id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Queues a job at `now`, due at `due`, unless one of that kind is
    /// live for the game; whether it queued one.
    async fn queue_runtime_job(
        &self,
        game: Uuid,
        kind: JobKind,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Jobs queued or under way.
    async fn runtime_queue_depth(&self) -> StoreResult<i64>;

    /// A game's jobs, oldest first.
    async fn runtime_jobs(&self, game: Uuid) -> StoreResult<Vec<JobRow>>;

    /// Writes (inserts or replaces) a record.
    async fn put_runtime_record(&self, record: &RuntimeRecord) -> StoreResult<()>;

    async fn runtime_record(&self, game: Uuid) -> StoreResult<Option<RuntimeRecord>>;

    /// Takes or renews the named lease for `owner` until `until`, if it is
    /// free, run out at `now`, or already `owner`'s; whether it holds it.
    async fn take_worker_lease(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// How many records are in each state.
    async fn runtime_counts(&self) -> StoreResult<Vec<(RecordState, i64)>>;

    /// Records, optionally of one state, by game id.
    async fn runtime_records(
        &self,
        state: Option<RecordState>,
        limit: i64,
    ) -> StoreResult<Vec<RuntimeRecord>>;
}
