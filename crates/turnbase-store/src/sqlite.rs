//! The SQLite backend: one file in the data folder, WAL journal, a busy
//! timeout so that concurrent writers wait instead of failing, and foreign
//! keys enforced.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use turnbase_core::private_fs;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row as _, SqliteConnection};
use uuid::Uuid;

use crate::migrate::{self, Applied, Migration, MigrationReport};
use crate::{InstanceInfo, InstanceStore, StoreError, StoreResult};

#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Connections that can only read (`PRAGMA query_only`): a write that
    /// forgot to take this process's turn fails here instead of slipping
    /// past the gate.
    reader: SqlitePool,
    /// Connections for writing, reached only through [`Self::begin_write`]
    /// and [`Self::write_turn`].
    writer: SqlitePool,
    /// SQLite has one writer at a time. Writers in this process queue here
    /// instead of spinning in SQLite's busy handler, whose sleeps grow to
    /// tens of milliseconds under contention; other processes on the same
    /// file still meet the busy timeout.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

/// This process's turn to write, for single statements outside a
/// transaction: the only way to the writing connections besides
/// [`SqliteStore::begin_write`].
pub struct WriteTurn<'a> {
    writer: &'a SqlitePool,
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl WriteTurn<'_> {
    pub fn pool(&self) -> &SqlitePool {
        self.writer
    }
}

/// A write transaction holding this process's turn to write.
pub struct SqliteTx {
    pub(crate) tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl SqliteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl SqliteStore {
    pub async fn connect(
        path: &Path,
        busy_timeout: Duration,
        max_connections: u32,
    ) -> StoreResult<Self> {
        let target = path.display().to_string();
        let connect_error = |reason: String| StoreError::Connect {
            target: target.clone(),
            reason,
        };
        // The database holds sessions and codes in flight: its folder is
        // 0700 and its files 0600. SQLite gives the WAL and shared-memory
        // files the mode of the database file, so that one is made here.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            private_fs::create_private_dir(parent)
                .map_err(|e| connect_error(format!("cannot create {}: {e}", parent.display())))?;
        }
        if path.as_os_str() != ":memory:" {
            private_fs::touch_private(path)
                .map_err(|e| connect_error(format!("cannot create {}: {e}", path.display())))?;
            for suffix in ["-wal", "-shm"] {
                let mut side = path.as_os_str().to_owned();
                side.push(suffix);
                private_fs::tighten(Path::new(&side));
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            .foreign_keys(true);
        let pool = |options: SqliteConnectOptions, connections: u32| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                // A connection to a local file does not go stale; checking
                // it on every checkout costs a round trip to its worker
                // thread.
                .test_before_acquire(false)
                .acquire_timeout(busy_timeout.max(Duration::from_secs(5)))
                .connect_with(options)
        };
        // The writer first: it creates the file. Writes take turns at the
        // gate, so a second writing connection would only wait there.
        let writer = pool(options.clone(), 2)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let reader = pool(options.pragma("query_only", "ON"), max_connections)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(Self {
            reader,
            writer,
            write_gate: Arc::default(),
        })
    }

    /// Connections for reading; a write through them fails.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Begins a write transaction: this process's turn, then SQLite's
    /// write lock (`BEGIN IMMEDIATE`).
    pub async fn begin_write(&self) -> Result<SqliteTx, sqlx::Error> {
        let turn = self.write_gate.clone().lock_owned().await;
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(SqliteTx { tx, _turn: turn })
    }

    /// This process's turn to write, for single statements outside a
    /// transaction: write through the turn's [`WriteTurn::pool`].
    pub async fn write_turn(&self) -> WriteTurn<'_> {
        WriteTurn {
            writer: &self.writer,
            _turn: self.write_gate.lock().await,
        }
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Applies `migrations`, each in an immediate transaction together with
    /// its record.
    pub async fn migrate(&self, migrations: &[Migration]) -> StoreResult<MigrationReport> {
        let mut conn = self.writer.acquire().await?;
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
        let applied = applied(&mut conn).await?;
        let mut report = MigrationReport::default();
        for m in migrate::plan(migrations, &applied, &mut report)? {
            let failed = |e: sqlx::Error| StoreError::MigrationFailed {
                name: m.label(),
                reason: e.to_string(),
            };
            // The write lock is taken before looking again, so two processes
            // migrating one file at once apply each migration exactly once.
            let mut tx = self.begin_write().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                tx.rollback().await?;
                report.already.push(m.label());
                continue;
            }
            sqlx::raw_sql(m.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at)
                 VALUES (?, ?, ?, ?)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum())
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            tracing::info!(migration = %m.label(), backend = "sqlite", "migration applied");
            report.applied.push(m.label());
        }
        Ok(report)
    }
}

async fn applied(conn: &mut SqliteConnection) -> StoreResult<Vec<Applied>> {
    let rows =
        sqlx::query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get("version")?,
                name: r.try_get("name")?,
                checksum: r.try_get("checksum")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

fn instance_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<InstanceInfo, sqlx::Error> {
    Ok(InstanceInfo {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        last_started_at: row.try_get("last_started_at")?,
        last_version: row.try_get("last_version")?,
        start_count: row.try_get("start_count")?,
    })
}

#[async_trait::async_trait]
impl InstanceStore for SqliteStore {
    async fn record_start(
        &self,
        new_id: Uuid,
        now: DateTime<Utc>,
        version: &str,
    ) -> StoreResult<InstanceInfo> {
        let row = sqlx::query(
            "INSERT INTO instance (singleton, id, created_at, last_started_at, last_version, start_count)
             VALUES (1, ?1, ?2, ?2, ?3, 1)
             ON CONFLICT (singleton) DO UPDATE SET
                 last_started_at = excluded.last_started_at,
                 last_version = excluded.last_version,
                 start_count = instance.start_count + 1
             RETURNING id, created_at, last_started_at, last_version, start_count",
        )
        .bind(new_id)
        .bind(now)
        .bind(version)
        .fetch_one(self.write_turn().await.pool())
        .await?;
        Ok(instance_from_row(&row)?)
    }

    async fn instance(&self) -> StoreResult<InstanceInfo> {
        let row = sqlx::query(
            "SELECT id, created_at, last_started_at, last_version, start_count FROM instance",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(instance_from_row(&row)?)
    }
}
