//! Turnbase storage.
//!
//! Each domain area has one trait shaped around what the domain does
//! ([`InstanceStore::record_start`] rather than "upsert a row"), implemented
//! once for SQLite (the embedded default) and once for Postgres (production
//! and several replicas). Callers hold a [`Database`] and ask it for the
//! trait they need; nothing outside this crate writes SQL.
//!
//! Ids are UUIDv7 and times are UTC; both are chosen by the caller, so that
//! clocks and id generation can be injected in tests.

pub mod accounts;
mod accounts_sql;
mod backend;
mod leased;
pub mod lobby;
mod lobby_sql;
pub mod mail;
mod mail_sql;
mod migrate;
pub mod notify;
mod notify_sql;
pub mod pg_bounded;
mod postgres;
mod postgres_mail;
pub mod runtime;
mod runtime_sql;
pub mod schema;
mod sqlite;
mod sqlite_mail;
pub mod turns;
mod turns_sql;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use accounts::AccountStore;
pub use lobby::LobbyStore;
pub use mail::MailStore;
pub use migrate::{Migration, MigrationReport, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
pub use notify::NotifyStore;
pub use postgres::PostgresStore;
pub use runtime::RuntimeStore;
pub use sqlite::{SqliteStore, SqliteTx, WriteTurn};
pub use turns::TurnStore;

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("cannot open the database at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("migration {name} failed and was rolled back: {reason}")]
    MigrationFailed { name: String, reason: String },
    #[error(
        "migration {name} was changed after it was applied (its checksum differs); \
         a landed migration must never be edited"
    )]
    MigrationChanged { name: String },
    #[error(
        "the database is at migration {applied}, newer than this build of Turnbase knows \
         (up to {known}); run a newer Turnbase"
    )]
    SchemaTooNew { applied: String, known: String },
    #[error("unsupported database: {0}")]
    Unsupported(String),
    /// The row is not in a state that allows the change.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached (refused, reset, no connection free
    /// in time, shutting down) or did not answer in time: a passing
    /// condition, not a fault of the request.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            other if unreachable_database(&other) => StoreError::Unavailable(other.to_string()),
            other => StoreError::Unexpected(other.into()),
        }
    }
}

/// Whether an error means the database could not be reached rather than
/// that it refused what was asked.
fn unreachable_database(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions (08…), the server shutting down or not yet
        // accepting (57P01-57P03), out of connection slots (53300).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0") || c == "53300"),
        _ => false,
    }
}

impl StoreError {
    /// Whether `err`, or anything in its chain of causes, says the
    /// database is unavailable (so an answer is 503, not 500).
    pub fn in_chain_is_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(err);
        while let Some(e) = next {
            if matches!(
                e.downcast_ref::<StoreError>(),
                Some(StoreError::Unavailable(_))
            ) || e
                .downcast_ref::<sqlx::Error>()
                .is_some_and(unreachable_database)
            {
                return true;
            }
            next = e.source();
        }
        false
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `%term%` for a case-insensitive `LIKE … ESCAPE '\'` search: lower-cased,
/// with the wildcards in `term` escaped so they match themselves.
pub(crate) fn like_pattern(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub enum DatabaseOptions {
    Sqlite {
        path: PathBuf,
        busy_timeout: Duration,
        max_connections: u32,
    },
    Postgres {
        url: String,
        max_connections: u32,
        connect_timeout: Duration,
        /// The longest one statement may wait for the server.
        statement_timeout: Duration,
    },
}

impl DatabaseOptions {
    /// Where the database is, safe to log (a Postgres password is masked).
    pub fn describe(&self) -> String {
        match self {
            DatabaseOptions::Sqlite { path, .. } => format!("sqlite:{}", path.display()),
            DatabaseOptions::Postgres { url, .. } => redact_url(url),
        }
    }
}

/// Masks the password in a URL such as `postgres://user:pw@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// The installation's identity, recorded on every start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_started_at: DateTime<Utc>,
    pub last_version: String,
    pub start_count: i64,
}

/// Facts about the installation as a whole.
#[async_trait::async_trait]
pub trait InstanceStore: Send + Sync {
    /// Records a start of `version` at `now`. On the first start ever the
    /// installation gets `new_id`; later starts keep the id they found.
    async fn record_start(
        &self,
        new_id: Uuid,
        now: DateTime<Utc>,
        version: &str,
    ) -> StoreResult<InstanceInfo>;

    /// The installation, if it has ever started.
    async fn instance(&self) -> StoreResult<InstanceInfo>;
}

/// An open transaction of either backend, handed to stores whose writes
/// must commit or roll back with the caller's change. Opaque outside the
/// store: callers only pass it on, commit it or roll it back.
pub struct Tx(pub(crate) TxInner);

pub(crate) enum TxInner {
    Sqlite(SqliteTx),
    Postgres(pg_bounded::PgTx),
}

impl Tx {
    pub async fn commit(self) -> StoreResult<()> {
        match self.0 {
            TxInner::Sqlite(tx) => tx.commit().await?,
            TxInner::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> StoreResult<()> {
        match self.0 {
            TxInner::Sqlite(tx) => tx.rollback().await?,
            TxInner::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// An open database of either backend.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Database {
    /// Opens the pool. For Postgres this also checks the server version.
    pub async fn connect(options: &DatabaseOptions) -> StoreResult<Self> {
        match options {
            DatabaseOptions::Sqlite {
                path,
                busy_timeout,
                max_connections,
            } => Ok(Database::Sqlite(
                SqliteStore::connect(path, *busy_timeout, *max_connections).await?,
            )),
            DatabaseOptions::Postgres {
                url,
                max_connections,
                connect_timeout,
                statement_timeout,
            } => Ok(Database::Postgres(
                PostgresStore::connect(url, *max_connections, *connect_timeout, *statement_timeout)
                    .await?,
            )),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    /// Applies every embedded migration that has not been applied yet.
    pub async fn migrate(&self) -> StoreResult<MigrationReport> {
        match self {
            Database::Sqlite(s) => s.migrate(SQLITE_MIGRATIONS).await,
            Database::Postgres(p) => p.migrate(POSTGRES_MIGRATIONS).await,
        }
    }

    /// Answers whether the database takes queries right now.
    pub async fn ping(&self) -> StoreResult<()> {
        match self {
            Database::Sqlite(s) => s.ping().await,
            Database::Postgres(p) => p.ping().await,
        }
    }

    /// Starts a transaction. On SQLite it takes the write lock at once, so
    /// that two writers never deadlock upgrading from a read.
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(match self {
            Database::Sqlite(s) => Tx(TxInner::Sqlite(s.begin_write().await?)),
            Database::Postgres(p) => Tx(TxInner::Postgres(p.pool().begin().await?)),
        })
    }

    pub fn mail(&self) -> &dyn MailStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p,
        }
    }

    pub fn accounts(&self) -> &dyn AccountStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p,
        }
    }

    pub fn lobby(&self) -> &dyn LobbyStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p,
        }
    }

    pub fn runtime(&self) -> &dyn RuntimeStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p,
        }
    }

    pub fn turns(&self) -> &dyn TurnStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p,
        }
    }

    pub fn notify(&self) -> &dyn NotifyStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p,
        }
    }

    pub fn instance(&self) -> &dyn InstanceStore {
        match self {
            Database::Sqlite(s) => s,
            Database::Postgres(p) => p,
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Database::Sqlite(s) => s.close().await,
            Database::Postgres(p) => p.pool().close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h/db?x=a@b", "postgres://h/db?x=a@b"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
