//! `RuntimeStore` for both backends, written once; only the claim differs
//! (the leased queue's `SKIP LOCKED` on Postgres, an immediate transaction
//! on SQLite), and each backend names its claim statement.

use std::sync::LazyLock;

use crate::leased::LeasedQueue;

/// The runtime's jobs as a leased queue.
pub(crate) const JOBS: LeasedQueue = LeasedQueue {
    table: "runtime_jobs",
    pending: "queued",
    leased: "running",
    claimed_columns: "id, game_id, kind, attempts",
};

pub(crate) static CLAIM_POSTGRES: LazyLock<String> = LazyLock::new(|| JOBS.claim_postgres());
pub(crate) static CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| JOBS.claim_sqlite());
pub(crate) static RELEASE: LazyLock<String> = LazyLock::new(|| JOBS.release());
static HELD: LazyLock<String> = LazyLock::new(|| JOBS.held("$2"));

/// The statement finishing a held job (`$1` id, `$2` owner, `$3` status,
/// `$4` next attempt, `$5` error, `$6` finished at).
pub(crate) static FINISH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE runtime_jobs SET status = $3, attempts = attempts + 1,
             next_attempt_at = COALESCE($4, next_attempt_at), last_error = $5,
             finished_at = $6, lease_owner = NULL, lease_until = NULL
         WHERE id = $1 AND {}
         RETURNING id",
        HELD.as_str()
    )
});

macro_rules! impl_runtime_store {
    ($module:ident, $store:ty, $row:ty, $claim:expr, $claim_in_tx:literal) => {
        pub(crate) mod $module {
            use std::time::Duration;

            use chrono::{DateTime, Utc};
            use uuid::Uuid;

            use crate::backend::SqlBackend;
            use crate::runtime::{
                ClaimedJob, JOB_COLUMNS, JobEnd, JobKind, JobRow, JobStatus, RECORD_COLUMNS,
                RecordState, RuntimeRecord, RuntimeStore,
            };
            use crate::{StoreError, StoreResult};

            /// Queues a job unless one of its kind is live for the game
            /// (the partial unique index decides); whether it did. Runs on
            /// the caller's connection, so a state change and its job
            /// commit together.
            pub(crate) async fn queue_job<'c, E>(
                conn: E,
                game: Uuid,
                kind: &str,
                due: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> StoreResult<bool>
            where
                E: sqlx::Executor<'c, Database = <$row as sqlx::Row>::Database>,
            {
                let queued = sqlx::query(
                    "INSERT INTO runtime_jobs
                         (id, game_id, kind, status, attempts, next_attempt_at, created_at)
                     VALUES ($1, $2, $3, 'queued', 0, $4, $5)
                     ON CONFLICT (game_id, kind) WHERE status IN ('queued', 'running')
                     DO NOTHING
                     RETURNING id",
                )
                .bind(Uuid::now_v7())
                .bind(game)
                .bind(kind)
                .bind(due)
                .bind(now)
                .fetch_optional(conn)
                .await?;
                Ok(queued.is_some())
            }

            fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
                now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
            }

            #[async_trait::async_trait]
            impl RuntimeStore for $store {
                async fn claim_runtime_jobs(
                    &self,
                    now: DateTime<Utc>,
                    lease: Duration,
                    owner: &str,
                    limit: i64,
                ) -> StoreResult<Vec<ClaimedJob>> {
                    let claim = sqlx::query(sqlx::AssertSqlSafe($claim.as_str()))
                        .bind(owner)
                        .bind(lease_end(now, lease))
                        .bind(now)
                        .bind(limit);
                    let rows = if $claim_in_tx {
                        // SQLite: in an immediate transaction, which holds
                        // the write lock (see leased.rs).
                        let mut tx = SqlBackend::begin_write(self).await?;
                        let rows = claim.fetch_all(&mut *tx).await?;
                        tx.commit().await?;
                        rows
                    } else {
                        let turn = SqlBackend::write_turn(self).await;
                        claim.fetch_all(turn.pool()).await?
                    };
                    rows.iter()
                        .map(sqlx::FromRow::from_row)
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(Into::into)
                }

                async fn finish_runtime_job(
                    &self,
                    id: Uuid,
                    owner: &str,
                    end: &JobEnd,
                    now: DateTime<Utc>,
                ) -> StoreResult<bool> {
                    let (status, next, error, finished) = match end {
                        JobEnd::Done => (JobStatus::Done, None, None, Some(now)),
                        JobEnd::RetryAt(at, e) => (JobStatus::Queued, Some(*at), Some(e.as_str()), None),
                        JobEnd::Failed(e) => (JobStatus::Failed, None, Some(e.as_str()), Some(now)),
                    };
                    let turn = SqlBackend::write_turn(self).await;
                    let row = sqlx::query(sqlx::AssertSqlSafe(super::FINISH.as_str()))
                        .bind(id)
                        .bind(owner)
                        .bind(status.as_str())
                        .bind(next)
                        .bind(error)
                        .bind(finished)
                        .fetch_optional(turn.pool())
                        .await?;
                    Ok(row.is_some())
                }

                async fn release_runtime_job(
                    &self,
                    id: Uuid,
                    owner: &str,
                    now: DateTime<Utc>,
                ) -> StoreResult<()> {
                    let turn = SqlBackend::write_turn(self).await;
                    sqlx::query(sqlx::AssertSqlSafe(super::RELEASE.as_str()))
                        .bind(now)
                        .bind(id)
                        .bind(owner)
                        .execute(turn.pool())
                        .await?;
                    Ok(())
                }

                async fn queue_runtime_job(
                    &self,
                    game: Uuid,
                    kind: JobKind,
                    due: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> StoreResult<bool> {
                    let turn = SqlBackend::write_turn(self).await;
                    queue_job(turn.pool(), game, kind.as_str(), due, now).await
                }

                async fn runtime_queue_depth(&self) -> StoreResult<i64> {
                    Ok(sqlx::query_scalar(
                        "SELECT COUNT(*) FROM runtime_jobs WHERE status IN ('queued', 'running')",
                    )
                    .fetch_one(SqlBackend::reader(self))
                    .await?)
                }

                async fn runtime_jobs(&self, game: Uuid) -> StoreResult<Vec<JobRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {JOB_COLUMNS} FROM runtime_jobs WHERE game_id = $1 ORDER BY id"
                    )))
                    .bind(game)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    rows.iter()
                        .map(sqlx::FromRow::from_row)
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(Into::into)
                }

                async fn put_runtime_record(&self, r: &RuntimeRecord) -> StoreResult<()> {
                    let turn = SqlBackend::write_turn(self).await;
                    sqlx::query(
                        "INSERT INTO runtime_records (game_id, engine, driver, placement, address,
                             handle, state, seed, restarts, last_health_at, last_error,
                             created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                         ON CONFLICT (game_id) DO UPDATE SET
                             engine = excluded.engine, driver = excluded.driver,
                             placement = excluded.placement, address = excluded.address,
                             handle = excluded.handle, state = excluded.state,
                             seed = excluded.seed, restarts = excluded.restarts,
                             last_health_at = excluded.last_health_at,
                             last_error = excluded.last_error, updated_at = excluded.updated_at",
                    )
                    .bind(r.game_id)
                    .bind(&r.engine)
                    .bind(&r.driver)
                    .bind(&r.placement)
                    .bind(&r.address)
                    .bind(&r.handle)
                    .bind(r.state.as_str())
                    .bind(r.seed)
                    .bind(r.restarts)
                    .bind(r.last_health_at)
                    .bind(&r.last_error)
                    .bind(r.created_at)
                    .bind(r.updated_at)
                    .execute(turn.pool())
                    .await
                    .map_err(|e| match e {
                        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                            StoreError::NotFound
                        }
                        other => other.into(),
                    })?;
                    Ok(())
                }

                async fn runtime_record(&self, game: Uuid) -> StoreResult<Option<RuntimeRecord>> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {RECORD_COLUMNS} FROM runtime_records WHERE game_id = $1"
                    )))
                    .bind(game)
                    .fetch_optional(SqlBackend::reader(self))
                    .await?;
                    row.as_ref()
                        .map(sqlx::FromRow::from_row)
                        .transpose()
                        .map_err(Into::into)
                }

                async fn take_worker_lease(
                    &self,
                    name: &str,
                    owner: &str,
                    now: DateTime<Utc>,
                    until: DateTime<Utc>,
                ) -> StoreResult<bool> {
                    let turn = SqlBackend::write_turn(self).await;
                    let held = sqlx::query(
                        "INSERT INTO worker_leases (name, owner, until_at) VALUES ($1, $2, $3)
                         ON CONFLICT (name) DO UPDATE
                         SET owner = excluded.owner, until_at = excluded.until_at
                         WHERE worker_leases.until_at <= $4
                            OR worker_leases.owner = excluded.owner
                         RETURNING owner",
                    )
                    .bind(name)
                    .bind(owner)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(turn.pool())
                    .await?;
                    Ok(held.is_some())
                }

                async fn runtime_counts(&self) -> StoreResult<Vec<(RecordState, i64)>> {
                    let rows: Vec<(String, i64)> = sqlx::query_as(
                        "SELECT state, COUNT(*) FROM runtime_records GROUP BY state",
                    )
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    rows.into_iter()
                        .map(|(state, n)| {
                            RecordState::try_from(state)
                                .map(|s| (s, n))
                                .map_err(|e| StoreError::Unexpected(anyhow::anyhow!(e)))
                        })
                        .collect()
                }

                async fn runtime_records(
                    &self,
                    state: Option<RecordState>,
                    limit: i64,
                ) -> StoreResult<Vec<RuntimeRecord>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {RECORD_COLUMNS} FROM runtime_records
                         WHERE ($1 IS NULL OR state = $1) ORDER BY game_id LIMIT $2"
                    )))
                    .bind(state.map(RecordState::as_str))
                    .bind(limit)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    rows.iter()
                        .map(sqlx::FromRow::from_row)
                        .collect::<Result<_, sqlx::Error>>()
                        .map_err(Into::into)
                }
            }
        }
    };
}

impl_runtime_store!(
    sqlite_runtime,
    crate::SqliteStore,
    sqlx::sqlite::SqliteRow,
    super::CLAIM_SQLITE,
    true
);
impl_runtime_store!(
    postgres_runtime,
    crate::PostgresStore,
    sqlx::postgres::PgRow,
    super::CLAIM_POSTGRES,
    false
);
