//! The Postgres backend: a connection pool, migrations serialised across
//! replicas by an advisory lock, and a server version check.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection as _, Row as _};
use uuid::Uuid;

use crate::migrate::{self, Applied, Migration, MigrationReport};
use crate::pg_bounded::{BoundedPool, PgTx, Suspect};
use crate::{InstanceInfo, InstanceStore, StoreError, StoreResult, redact_url};

/// The oldest PostgreSQL release supported: the oldest one still maintained
/// by the PostgreSQL project when this was written.
const MIN_SERVER_VERSION: i32 = 130_000;

/// Advisory lock key held while migrating, so replicas starting together
/// apply migrations one at a time ("turnbase" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x7475_726e_6261_7365;

#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: BoundedPool,
}

/// What [`PostgresStore::write_turn`] hands out: the pool, as every
/// writer may go at once.
pub struct PgWriteTurn<'a> {
    pool: &'a BoundedPool,
}

impl PgWriteTurn<'_> {
    pub fn pool(&self) -> &BoundedPool {
        self.pool
    }
}

/// A pooled connection idle for longer than this is pinged before use.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

impl PostgresStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
        statement_timeout: Duration,
    ) -> StoreResult<Self> {
        let connect_error = |reason: String| StoreError::Connect {
            target: redact_url(url),
            reason,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| connect_error(format!("not a valid Postgres URL: {e}")))?;
        let suspect = Suspect::new(statement_timeout);
        let (on_acquire, on_release) = (suspect.clone(), suspect.clone());
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(connect_timeout)
            // sqlx pings every connection it hands out and again every
            // one handed back: three round trips per pooled query. The
            // ping on release stays (it also flushes a cancelled query);
            // on acquire only a connection that sat idle for a while is
            // pinged, as connection pools commonly do, since one used a
            // moment ago was answering then.
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let suspect = on_acquire.clone();
                Box::pin(async move {
                    // Also while statements are being abandoned: the
                    // server may be gone for connections used a moment ago.
                    if meta.idle_for > PING_IDLE_AFTER || suspect.active() {
                        suspect.answers(conn).await?;
                    }
                    Ok(true)
                })
            })
            // sqlx's own ping on release has no deadline: a connection
            // handed back after the server vanished would hold its slot
            // until the kernel gives up on the socket (many minutes). So
            // it is first pinged under the deadline, and closed (its slot
            // freed) when it does not answer. That costs a round trip per
            // release; the hot paths batch their statements, and a pool
            // that leaks a slot per partition is worse.
            .after_release(move |conn, _| {
                let suspect = on_release.clone();
                Box::pin(async move {
                    suspect.answers(conn).await?;
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let version: String = sqlx::query_scalar("SHOW server_version_num")
            .fetch_one(&pool)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let number: i32 = version.trim().parse().unwrap_or(0);
        if number < MIN_SERVER_VERSION {
            pool.close().await;
            return Err(StoreError::Unsupported(format!(
                "PostgreSQL {} or newer is required; the server reports version number {version}",
                MIN_SERVER_VERSION / 10_000
            )));
        }
        Ok(Self {
            pool: BoundedPool::new(pool, suspect),
        })
    }

    /// Begins a transaction (Postgres needs no write lock up front).
    pub async fn begin_write(&self) -> Result<PgTx, sqlx::Error> {
        self.pool.begin().await
    }

    /// Postgres takes concurrent writers as they come (see
    /// [`crate::SqliteStore::write_turn`]): the turn is the pool itself.
    pub async fn write_turn(&self) -> PgWriteTurn<'_> {
        PgWriteTurn { pool: &self.pool }
    }

    /// Where statements that only read run: the pool.
    pub fn reader(&self) -> &BoundedPool {
        &self.pool
    }

    /// The pool; statements run on it have the deadline.
    pub fn pool(&self) -> &BoundedPool {
        &self.pool
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies `migrations` under the migration advisory lock, each in its
    /// own transaction together with its record.
    pub async fn migrate(&self, migrations: &[Migration]) -> StoreResult<MigrationReport> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
        let result = migrate_locked(&mut conn, migrations).await;
        let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
        if unlock.is_err() {
            // The lock dies with the session; make sure this one is not reused.
            conn.detach();
        }
        result
    }
}

async fn migrate_locked(
    conn: &mut PgConnection,
    migrations: &[Migration],
) -> StoreResult<MigrationReport> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL,
            checksum TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL
        )",
    )
    .execute(&mut *conn)
    .await?;
    let rows =
        sqlx::query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    let applied = rows
        .iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get("version")?,
                name: r.try_get("name")?,
                checksum: r.try_get("checksum")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let mut report = MigrationReport::default();
    for m in migrate::plan(migrations, &applied, &mut report)? {
        let failed = |e: sqlx::Error| StoreError::MigrationFailed {
            name: m.label(),
            reason: e.to_string(),
        };
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .bind(Utc::now())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(migration = %m.label(), backend = "postgres", "migration applied");
        report.applied.push(m.label());
    }
    Ok(report)
}

fn instance_from_row(row: &sqlx::postgres::PgRow) -> Result<InstanceInfo, sqlx::Error> {
    Ok(InstanceInfo {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        last_started_at: row.try_get("last_started_at")?,
        last_version: row.try_get("last_version")?,
        start_count: row.try_get("start_count")?,
    })
}

#[async_trait::async_trait]
impl InstanceStore for PostgresStore {
    async fn record_start(
        &self,
        new_id: Uuid,
        now: DateTime<Utc>,
        version: &str,
    ) -> StoreResult<InstanceInfo> {
        let row = sqlx::query(
            "INSERT INTO instance (singleton, id, created_at, last_started_at, last_version, start_count)
             VALUES (1, $1, $2, $2, $3, 1)
             ON CONFLICT (singleton) DO UPDATE SET
                 last_started_at = excluded.last_started_at,
                 last_version = excluded.last_version,
                 start_count = instance.start_count + 1
             RETURNING id, created_at, last_started_at, last_version, start_count",
        )
        .bind(new_id)
        .bind(now)
        .bind(version)
        .fetch_one(&self.pool)
        .await?;
        Ok(instance_from_row(&row)?)
    }

    async fn instance(&self) -> StoreResult<InstanceInfo> {
        let row = sqlx::query(
            "SELECT id, created_at, last_started_at, last_version, start_count FROM instance",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(instance_from_row(&row)?)
    }
}
