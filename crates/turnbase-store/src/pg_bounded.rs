//! Postgres calls with a deadline. A server that vanishes without closing
//! its connections (a partition, a failover, a host that lost power) would
//! leave a query, and the pooled connection under it, waiting for ever:
//! sqlx sets no TCP keepalive and no timeout of its own, and on handing a
//! connection back it pings it, unbounded, too.
//!
//! So every statement the Postgres store runs — through [`BoundedPool`]
//! (pool-level queries) or [`BoundedConn`] (inside a transaction) — fails
//! with a timed-out I/O error (which the store reports as the database
//! being unavailable) once `BACKEND_DATABASE_STATEMENT_TIMEOUT` passes.
//! Connections handed back to the pool are pinged under the same deadline
//! ([`Suspect::answers`], from the pool's release hook) and closed when
//! they do not answer, which frees their slots. A statement abandoned
//! mid-way marks the pool [`Suspect`] for a while, which the before-use
//! check of idle connections heeds too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use sqlx::postgres::{PgConnection, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Connection as _, Either, Error, Execute, Executor, PgPool, Postgres, SqlStr};

/// When statements were last abandoned: while recent, connections handed
/// back to the pool are checked under a deadline.
#[derive(Debug)]
pub struct Suspect {
    origin: Instant,
    /// Milliseconds after `origin` until which the pool is suspect.
    until_ms: AtomicU64,
    timeout: Duration,
}

impl Suspect {
    pub fn new(timeout: Duration) -> Arc<Suspect> {
        Arc::new(Suspect {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A statement was abandoned: connections handed back in the next
    /// while (twice the deadline, at least ten seconds) are checked.
    pub fn mark(&self) {
        let spell = (self.timeout * 2).max(Duration::from_secs(10));
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(spell.as_millis()).unwrap_or(u64::MAX));
        self.until_ms.fetch_max(until, Ordering::SeqCst);
    }

    pub fn active(&self) -> bool {
        self.now_ms() < self.until_ms.load(Ordering::SeqCst)
    }

    /// Whether a connection answers a ping within the deadline.
    pub async fn answers(&self, conn: &mut PgConnection) -> Result<(), Error> {
        match tokio::time::timeout(self.timeout, conn.ping()).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(self.timeout)),
        }
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "no answer from the database within {timeout:?} (BACKEND_DATABASE_STATEMENT_TIMEOUT)"
        ),
    ))
}

/// Marks the pool suspect when dropped before [`Watch::done`]: its
/// statement was abandoned mid-way, by the deadline or by the caller.
struct Watch<'a>(Option<&'a Suspect>);

impl Watch<'_> {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Some(suspect) = self.0 {
            suspect.mark();
        }
    }
}

/// Runs `work` under the deadline.
pub(crate) async fn within<T>(
    suspect: &Suspect,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let watch = Watch(Some(suspect));
    let result = tokio::time::timeout(suspect.timeout, work).await;
    match result {
        Ok(result) => {
            watch.done();
            result
        }
        // The watch marks the pool on the way out.
        Err(_) => Err(timed_out(suspect.timeout)),
    }
}

/// The results of a statement, all read under the deadline, as the
/// stream sqlx's `fetch_many` hands out.
fn as_stream<'e>(
    rows: impl std::future::Future<Output = Result<Vec<Either<PgQueryResult, PgRow>>, Error>>
    + Send
    + 'e,
) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, Error>> {
    futures::stream::once(async move {
        let rows = rows.await?;
        Ok::<_, Error>(futures::stream::iter(rows.into_iter().map(Ok)))
    })
    .try_flatten()
    .boxed()
}

/// The pool, each statement run on it under the deadline.
#[derive(Debug, Clone)]
pub struct BoundedPool {
    pool: PgPool,
    suspect: Arc<Suspect>,
}

impl BoundedPool {
    pub fn new(pool: PgPool, suspect: Arc<Suspect>) -> Self {
        BoundedPool { pool, suspect }
    }

    pub fn suspect(&self) -> &Arc<Suspect> {
        &self.suspect
    }

    /// Begins a transaction whose statements run under the deadline.
    pub async fn begin(&self) -> Result<PgTx, Error> {
        let tx = within(&self.suspect, self.pool.begin()).await?;
        Ok(PgTx(BoundedConn {
            tx,
            suspect: self.suspect.clone(),
        }))
    }
}

impl std::ops::Deref for BoundedPool {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

impl<'p> Executor<'p> for &'_ BoundedPool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let (pool, suspect) = (self.pool.clone(), self.suspect.clone());
        as_stream(async move {
            within(&suspect, async {
                let mut conn = pool.acquire().await?;
                conn.fetch_many(query).try_collect().await
            })
            .await
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let (pool, suspect) = (self.pool.clone(), self.suspect.clone());
        async move {
            within(&suspect, async {
                let mut conn = pool.acquire().await?;
                conn.fetch_optional(query).await
            })
            .await
        }
        .boxed()
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, Error>>
    where
        'p: 'e,
    {
        let (pool, suspect) = (self.pool.clone(), self.suspect.clone());
        async move {
            within(&suspect, async {
                let mut conn = pool.acquire().await?;
                conn.prepare_with(sql, parameters).await
            })
            .await
        }
        .boxed()
    }
}

/// An open Postgres transaction: `&mut *tx` is where its statements run
/// (under the deadline, like its commit). Dropped without a commit, it
/// rolls back.
#[derive(Debug)]
pub struct PgTx(BoundedConn);

impl PgTx {
    pub async fn commit(self) -> Result<(), Error> {
        let PgTx(BoundedConn { tx, suspect }) = self;
        within(&suspect, tx.commit()).await
    }

    pub async fn rollback(self) -> Result<(), Error> {
        let PgTx(BoundedConn { tx, suspect }) = self;
        within(&suspect, tx.rollback()).await
    }
}

impl std::ops::Deref for PgTx {
    type Target = BoundedConn;

    fn deref(&self) -> &BoundedConn {
        &self.0
    }
}

impl std::ops::DerefMut for PgTx {
    fn deref_mut(&mut self) -> &mut BoundedConn {
        &mut self.0
    }
}

/// The statements side of a [`PgTx`].
#[derive(Debug)]
pub struct BoundedConn {
    tx: sqlx::Transaction<'static, Postgres>,
    suspect: Arc<Suspect>,
}

impl<'c> Executor<'c> for &'c mut BoundedConn {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        as_stream(async move {
            let suspect = self.suspect.clone();
            let conn: &mut PgConnection = &mut self.tx;
            within(&suspect, conn.fetch_many(query).try_collect()).await
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        async move {
            let suspect = self.suspect.clone();
            let conn: &mut PgConnection = &mut self.tx;
            within(&suspect, conn.fetch_optional(query)).await
        }
        .boxed()
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, Error>>
    where
        'c: 'e,
    {
        async move {
            let suspect = self.suspect.clone();
            let conn: &mut PgConnection = &mut self.tx;
            within(&suspect, conn.prepare_with(sql, parameters)).await
        }
        .boxed()
    }
}
