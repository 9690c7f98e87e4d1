//! Where state lives: the data folder and the database.

use std::path::PathBuf;
use std::time::Duration;

use turnbase_core::config::{
    Reader, Secret, VarSpec, parse_duration, parse_positive_duration, parse_string,
    parse_u32_positive,
};
use turnbase_core::var;
use turnbase_store::DatabaseOptions;

/// The data folder and the database.
pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_DATA_DIR",
        Some(DEFAULT_DATA_DIR),
        "Folder for the SQLite database and other local state."
    ),
    var!(
        "BACKEND_DATABASE_URL",
        None,
        "Postgres URL (`postgres://user:pass@host/db`, TLS options such as `?sslmode=verify-full&sslrootcert=ca.pem`); unset means SQLite in the data folder. Secret."
    ),
    var!(
        "BACKEND_DATABASE_MAX_CONNECTIONS",
        Some("10"),
        "Largest number of pooled database connections."
    ),
    var!(
        "BACKEND_DATABASE_CONNECT_TIMEOUT",
        Some("5s"),
        "How long to wait for a database connection."
    ),
    var!(
        "BACKEND_DATABASE_STATEMENT_TIMEOUT",
        Some("10s"),
        "Postgres: the longest one statement may wait for the server. Past it the call fails as `database_unavailable` and a connection that stopped answering is closed, so a server that vanished without closing its connections (a partition, a failover) cannot hold requests, workers or pool slots."
    ),
    var!(
        "BACKEND_SQLITE_BUSY_TIMEOUT",
        Some("5s"),
        "How long a SQLite writer waits for the lock before failing."
    ),
];

pub(super) const DEFAULT_DATA_DIR: &str = "./turnbase-data";

#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    Sqlite { path: PathBuf },
    Postgres { url: Secret<String> },
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub target: DatabaseTarget,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub busy_timeout: Duration,
}

impl DatabaseConfig {
    pub fn options(&self) -> DatabaseOptions {
        match &self.target {
            DatabaseTarget::Sqlite { path } => DatabaseOptions::Sqlite {
                path: path.clone(),
                busy_timeout: self.busy_timeout,
                max_connections: self.max_connections,
            },
            DatabaseTarget::Postgres { url } => DatabaseOptions::Postgres {
                url: url.expose().clone(),
                max_connections: self.max_connections,
                connect_timeout: self.connect_timeout,
                statement_timeout: self.statement_timeout,
            },
        }
    }
}

enum DatabaseUrl {
    Postgres(Secret<String>),
    Sqlite(PathBuf),
}

fn parse_database_url(text: &str) -> Result<DatabaseUrl, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(DatabaseUrl::Postgres(Secret::new(text.to_string())));
    }
    if let Some(path) = text
        .strip_prefix("sqlite://")
        .or_else(|| text.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err("a sqlite: URL needs a file path, e.g. sqlite:./turnbase.db".into());
        }
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
    }
    // The value may hold a password, so it is not echoed back.
    Err("expected a postgres://… URL (or sqlite:PATH)".into())
}

pub(super) fn read(r: &mut Reader<'_>) -> (PathBuf, DatabaseConfig) {
    let data_dir = PathBuf::from(r.get("BACKEND_DATA_DIR", parse_string));
    let database_url = r.optional("BACKEND_DATABASE_URL", parse_database_url);
    let database = DatabaseConfig {
        target: match database_url {
            Some(DatabaseUrl::Postgres(url)) => DatabaseTarget::Postgres { url },
            Some(DatabaseUrl::Sqlite(path)) => DatabaseTarget::Sqlite { path },
            None => DatabaseTarget::Sqlite {
                path: data_dir.join("turnbase.db"),
            },
        },
        max_connections: r.get("BACKEND_DATABASE_MAX_CONNECTIONS", parse_u32_positive),
        connect_timeout: r.get("BACKEND_DATABASE_CONNECT_TIMEOUT", parse_positive_duration),
        statement_timeout: r.get(
            "BACKEND_DATABASE_STATEMENT_TIMEOUT",
            parse_positive_duration,
        ),
        busy_timeout: r.get("BACKEND_SQLITE_BUSY_TIMEOUT", parse_duration),
    };
    (data_dir, database)
}
