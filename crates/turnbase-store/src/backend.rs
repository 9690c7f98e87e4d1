//! What the SQL written once for both backends (`accounts_sql.rs`,
//! `mail_sql.rs`) needs of a store: where it reads, how it takes its turn
//! to write one statement, and how it begins a write transaction. Both
//! stores implement it, so the shared code names this contract instead of
//! counting on both happening to have methods of the same names.

use std::future::Future;

use crate::pg_bounded::{BoundedPool, PgTx};
use crate::postgres::PgWriteTurn;
use crate::sqlite::{SqliteTx, WriteTurn};
use crate::{PostgresStore, SqliteStore};

pub(crate) trait SqlBackend {
    /// Where statements that only read run.
    type Reader;
    /// A turn to write single statements, through its `pool()`.
    type Turn<'a>
    where
        Self: 'a;
    /// An open write transaction; `&mut *tx` is where its statements run.
    type WriteTx;

    fn reader(&self) -> &Self::Reader;

    fn write_turn(&self) -> impl Future<Output = Self::Turn<'_>> + Send;

    fn begin_write(&self) -> impl Future<Output = Result<Self::WriteTx, sqlx::Error>> + Send;
}

impl SqlBackend for SqliteStore {
    type Reader = sqlx::SqlitePool;
    type Turn<'a> = WriteTurn<'a>;
    type WriteTx = SqliteTx;

    fn reader(&self) -> &sqlx::SqlitePool {
        SqliteStore::reader(self)
    }

    fn write_turn(&self) -> impl Future<Output = WriteTurn<'_>> + Send {
        SqliteStore::write_turn(self)
    }

    fn begin_write(&self) -> impl Future<Output = Result<SqliteTx, sqlx::Error>> + Send {
        SqliteStore::begin_write(self)
    }
}

impl SqlBackend for PostgresStore {
    type Reader = BoundedPool;
    type Turn<'a> = PgWriteTurn<'a>;
    type WriteTx = PgTx;

    fn reader(&self) -> &BoundedPool {
        PostgresStore::reader(self)
    }

    fn write_turn(&self) -> impl Future<Output = PgWriteTurn<'_>> + Send {
        PostgresStore::write_turn(self)
    }

    fn begin_write(&self) -> impl Future<Output = Result<PgTx, sqlx::Error>> + Send {
        PostgresStore::begin_write(self)
    }
}
