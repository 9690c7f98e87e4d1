//! `NotifyStore` for both backends, written once; only the route claim
//! differs (the leased queue's statement per backend, see leased.rs).

/// The columns of a [`crate::notify::NotificationRow`], `n` being the
/// notification and `g` its game (left-joined).
pub(crate) const NOTIFICATION: &str = "n.id, n.account_id, n.kind, n.game_id, g.title AS game_title, \
     n.payload, n.created_at, n.read_at";
const ROUTE: &str = "id, notification_id, account_id, kind, channel, target, status, attempts, \
     attempts_total, next_attempt_at, created_at, delivered_at, last_error";

macro_rules! impl_notify_store {
    ($module:ident, $store:ty, $row:ty, $claim:expr) => {
        pub(crate) mod $module {
            use std::time::Duration;

            use chrono::{DateTime, Utc};
            use sqlx::Row as _;
            use uuid::Uuid;

            use super::{NOTIFICATION, ROUTE};
            use crate::backend::SqlBackend;
            use crate::notify::{
                Audience, ClaimedRoute, Kind, NewNotice, NewRoute, NotificationRow,
                NotifyStore, PreferencesRow, ReminderCandidate, RouteAttempt, RouteAttemptRecord,
                RouteFilter, RouteOutcome, RouteRecord, Unrouted, DISPATCHING, PENDING,
            };
            use crate::{StoreError, StoreResult};

            type Db = <$row as sqlx::Row>::Database;

            fn all<T>(rows: &[$row]) -> StoreResult<Vec<T>>
            where
                T: for<'r> sqlx::FromRow<'r, $row>,
            {
                rows.iter()
                    .map(|r| T::from_row(r))
                    .collect::<Result<_, _>>()
                    .map_err(Into::into)
            }

            /// Rows one multi-row statement carries: at most 13 parameters
            /// a row, 26,000 in all, under SQLite's limit (32,766) and
            /// Postgres's (65,535); a turn of a large game or a router's
            /// batch is then one statement.
            const CHUNK: usize = 2_000;

            /// Writes `notices` in the caller's transaction: each audience
            /// read there, one notification per recipient.
            pub(crate) async fn write_in(
                tx: &mut <$store as SqlBackend>::WriteTx,
                notices: &[NewNotice],
                now: DateTime<Utc>,
            ) -> StoreResult<u64> {
                let mut rows: Vec<(Uuid, &NewNotice)> = Vec::new();
                for notice in notices {
                    let mut to: Vec<Uuid> = match &notice.to {
                        Audience::Users(users) => users.clone(),
                        Audience::Owner(game) => {
                            sqlx::query_scalar("SELECT owner_id FROM games WHERE id = $1")
                                .bind(game)
                                .fetch_all(&mut **tx)
                                .await?
                        }
                        Audience::Applicant(application) => {
                            sqlx::query_scalar(
                                "SELECT account_id FROM game_applications WHERE id = $1",
                            )
                            .bind(application)
                            .fetch_all(&mut **tx)
                            .await?
                        }
                        Audience::Members(game) => {
                            sqlx::query_scalar(
                                "SELECT owner_id FROM games WHERE id = $1
                                 UNION
                                 SELECT account_id FROM game_players
                                 WHERE game_id = $1 AND account_id IS NOT NULL",
                            )
                            .bind(game)
                            .fetch_all(&mut **tx)
                            .await?
                        }
                    };
                    to.sort();
                    to.dedup();
                    rows.extend(to.into_iter().map(|user| (user, notice)));
                }
                for chunk in rows.chunks(CHUNK) {
                    let mut insert = sqlx::QueryBuilder::<Db>::new(
                        "INSERT INTO notifications (id, account_id, kind, game_id, payload, created_at) ",
                    );
                    insert.push_values(chunk, |mut row, (user, notice)| {
                        row.push_bind(Uuid::now_v7())
                            .push_bind(*user)
                            .push_bind(notice.kind.as_str())
                            .push_bind(notice.game_id)
                            .push_bind(notice.payload.clone())
                            .push_bind(now);
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                Ok(rows.len() as u64)
            }

            fn record(row: &$row) -> Result<RouteRecord, sqlx::Error> {
                sqlx::FromRow::from_row(row)
            }

            /// `WHERE` conditions of a route filter, binds in order.
            fn filtered(q: &mut sqlx::QueryBuilder<Db>, f: &RouteFilter) {
                q.push(" WHERE 1 = 1");
                if let Some(id) = f.id {
                    q.push(" AND id = ").push_bind(id);
                }
                if let Some(s) = f.status {
                    q.push(" AND status = ").push_bind(s.as_str());
                }
                if let Some(c) = f.channel {
                    q.push(" AND channel = ").push_bind(c.as_str());
                }
                if let Some(k) = f.kind {
                    q.push(" AND kind = ").push_bind(k.as_str());
                }
                if let Some(a) = f.account_id {
                    q.push(" AND account_id = ").push_bind(a);
                }
                if let Some(b) = f.before {
                    q.push(" AND id < ").push_bind(b);
                }
            }

            #[async_trait::async_trait]
            impl NotifyStore for $store {
                async fn write_notices(
                    &self,
                    notices: &[NewNotice],
                    now: DateTime<Utc>,
                ) -> StoreResult<u64> {
                    if notices.is_empty() {
                        return Ok(0);
                    }
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let n = write_in(&mut tx, notices, now).await?;
                    tx.commit().await?;
                    Ok(n)
                }

                async fn notice_everyone(
                    &self,
                    notice: &NewNotice,
                    after: Option<Uuid>,
                    limit: i64,
                    now: DateTime<Utc>,
                ) -> StoreResult<(u64, Option<Uuid>)> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let ids: Vec<Uuid> = sqlx::query_scalar(
                        "SELECT id FROM accounts
                         WHERE (CAST($1 AS UUID) IS NULL OR id > $1) AND blocked_at IS NULL
                         ORDER BY id LIMIT $2",
                    )
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(last) = ids.last().copied() else {
                        tx.rollback().await?;
                        return Ok((0, None));
                    };
                    let mut one = notice.clone();
                    one.to = Audience::Users(ids);
                    let n = write_in(&mut tx, std::slice::from_ref(&one), now).await?;
                    tx.commit().await?;
                    Ok((n, Some(last)))
                }

                async fn unrouted(
                    &self,
                    after: Option<Uuid>,
                    limit: i64,
                ) -> StoreResult<Vec<Unrouted>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {NOTIFICATION}, a.email,
                             CASE WHEN a.blocked_at IS NULL THEN FALSE ELSE TRUE END AS blocked,
                             p.settings, p.webhook_url, p.webhook_salt
                         FROM notifications n
                         JOIN accounts a ON a.id = n.account_id
                         LEFT JOIN games g ON g.id = n.game_id
                         LEFT JOIN notification_preferences p ON p.account_id = n.account_id
                         WHERE n.routed_at IS NULL AND (CAST($2 AS UUID) IS NULL OR n.id > $2)
                         ORDER BY n.id LIMIT $1"
                    )))
                    .bind(limit)
                    .bind(after)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows)
                }

                async fn save_routes(
                    &self,
                    notifications: &[Uuid],
                    routes: &[NewRoute],
                    now: DateTime<Utc>,
                ) -> StoreResult<Vec<NewRoute>> {
                    if notifications.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut tx = SqlBackend::begin_write(self).await?;
                    // Only the notifications still unrouted are this
                    // router's: another router's commit (or, on Postgres,
                    // its row locks until then) settles the rest.
                    let mut mine: Vec<Uuid> = Vec::with_capacity(notifications.len());
                    for chunk in notifications.chunks(CHUNK) {
                        let mut q = sqlx::QueryBuilder::<Db>::new(
                            "UPDATE notifications SET routed_at = ",
                        );
                        q.push_bind(now).push(" WHERE routed_at IS NULL AND id IN (");
                        let mut ids = q.separated(", ");
                        for id in chunk {
                            ids.push_bind(*id);
                        }
                        q.push(") RETURNING id");
                        let rows = q.build().fetch_all(&mut *tx).await?;
                        for row in rows {
                            mine.push(row.try_get("id")?);
                        }
                    }
                    mine.sort();
                    let wanted: Vec<&NewRoute> = routes
                        .iter()
                        .filter(|r| mine.binary_search(&r.notification_id).is_ok())
                        .collect();
                    let mut written: Vec<Uuid> = Vec::with_capacity(wanted.len());
                    for chunk in wanted.chunks(CHUNK) {
                        let mut q = sqlx::QueryBuilder::<Db>::new(
                            "INSERT INTO notification_routes (id, notification_id, account_id, kind,
                                 channel, target, digest_key, status, attempts, attempts_total,
                                 next_attempt_at, created_at, delivered_at) ",
                        );
                        q.push_values(chunk, |mut row, r| {
                            let done = r.delivered_at.is_some();
                            row.push_bind(r.id)
                                .push_bind(r.notification_id)
                                .push_bind(r.account_id)
                                .push_bind(r.kind.as_str())
                                .push_bind(r.channel.as_str())
                                .push_bind(r.target.clone())
                                .push_bind(r.digest_key.clone())
                                .push_bind(if done { "delivered" } else { PENDING })
                                .push(if done { "1" } else { "0" })
                                .push(if done { "1" } else { "0" })
                                .push_bind(r.due_at)
                                .push_bind(now)
                                .push_bind(r.delivered_at);
                        });
                        q.push(" ON CONFLICT DO NOTHING RETURNING id");
                        for row in q.build().fetch_all(&mut *tx).await? {
                            written.push(row.try_get("id")?);
                        }
                    }
                    tx.commit().await?;
                    written.sort();
                    Ok(wanted
                        .into_iter()
                        .filter(|r| written.binary_search(&r.id).is_ok())
                        .cloned()
                        .collect())
                }

                async fn claim_routes(
                    &self,
                    now: DateTime<Utc>,
                    lease: Duration,
                    owner: &str,
                    limit: i64,
                ) -> StoreResult<Vec<ClaimedRoute>> {
                    let until = now
                        + chrono::Duration::from_std(lease)
                            .map_err(|e| StoreError::Unexpected(e.into()))?;
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let rows = sqlx::query(sqlx::AssertSqlSafe($claim.as_str()))
                        .bind(owner)
                        .bind(until)
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    all(&rows)
                }

                async fn finish_routes(
                    &self,
                    owner: &str,
                    attempts: &[RouteAttempt],
                ) -> StoreResult<Vec<bool>> {
                    let mut held = Vec::with_capacity(attempts.len());
                    if attempts.is_empty() {
                        return Ok(held);
                    }
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let mut records: Vec<(&RouteAttempt, i64)> = Vec::with_capacity(attempts.len());
                    // Deliveries are the bulk: one statement per chunk marks
                    // them (and one hands their mail to the outbox); the
                    // failures go one by one.
                    let plain: Vec<&RouteAttempt> = attempts
                        .iter()
                        .filter(|a| a.outcome == RouteOutcome::Delivered)
                        .collect();
                    let mut delivered: std::collections::HashMap<Uuid, i64> =
                        std::collections::HashMap::with_capacity(plain.len());
                    for chunk in plain.chunks(CHUNK) {
                        let at = chunk.iter().map(|a| a.finished_at).max();
                        let mut q = sqlx::QueryBuilder::<Db>::new(
                            "UPDATE notification_routes
                             SET status = 'delivered', attempts = attempts + 1,
                                 attempts_total = attempts_total + 1, delivered_at = ",
                        );
                        q.push_bind(at);
                        q.push(
                            ", last_error = NULL, lease_owner = NULL, lease_until = NULL
                             WHERE status = 'dispatching' AND lease_owner = ",
                        );
                        q.push_bind(owner.to_string());
                        q.push(" AND id IN (");
                        let mut ids = q.separated(", ");
                        for a in chunk {
                            ids.push_bind(a.route_id);
                        }
                        q.push(") RETURNING id, attempts_total");
                        for row in q.build().fetch_all(&mut *tx).await? {
                            delivered.insert(row.try_get("id")?, row.try_get("attempts_total")?);
                        }
                    }
                    // The outbox's own rows, keyed by their routes so that a
                    // retried route never mails twice.
                    let mails: Vec<&crate::mail::NewMail> = plain
                        .iter()
                        .filter(|a| delivered.contains_key(&a.route_id))
                        .filter_map(|a| a.mail.as_ref())
                        .collect();
                    for chunk in mails.chunks(CHUNK) {
                        let mut q = sqlx::QueryBuilder::<Db>::new(
                            "INSERT INTO mail_outbox (id, idempotency_key, to_address, subject,
                                 text_body, html_body, status, attempts, next_attempt_at,
                                 created_at) ",
                        );
                        q.push_values(chunk, |mut row, m| {
                            row.push_bind(m.id)
                                .push_bind(m.idempotency_key.clone())
                                .push_bind(m.to.clone())
                                .push_bind(m.subject.clone())
                                .push_bind(m.text_body.clone())
                                .push_bind(m.html_body.clone())
                                .push("'pending'")
                                .push("0")
                                .push_bind(m.created_at)
                                .push_bind(m.created_at);
                        });
                        q.push(" ON CONFLICT DO NOTHING");
                        q.build().execute(&mut *tx).await?;
                    }
                    for a in attempts {
                        if a.outcome == RouteOutcome::Delivered {
                            let total = delivered.get(&a.route_id).copied();
                            held.push(total.is_some());
                            if let Some(total) = total {
                                records.push((a, total));
                            }
                            continue;
                        }
                        let (status, next, delivered) = match a.outcome {
                            RouteOutcome::Delivered => ("delivered", None, Some(a.finished_at)),
                            RouteOutcome::Retry(at) => (PENDING, Some(at), None),
                            RouteOutcome::Failed => ("failed", None, None),
                        };
                        let total: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                            "UPDATE notification_routes
                             SET status = $2, attempts = attempts + 1,
                                 attempts_total = attempts_total + 1,
                                 next_attempt_at = COALESCE($3, next_attempt_at),
                                 delivered_at = $4, last_error = $5,
                                 lease_owner = NULL, lease_until = NULL
                             WHERE id = $1 AND status = '{DISPATCHING}' AND lease_owner = $6
                             RETURNING attempts_total"
                        )))
                        .bind(a.route_id)
                        .bind(status)
                        .bind(next)
                        .bind(delivered)
                        .bind(&a.error)
                        .bind(owner)
                        .fetch_optional(&mut *tx)
                        .await?;
                        held.push(total.is_some());
                        let Some(total) = total else { continue };
                        records.push((a, total));
                    }
                    for chunk in records.chunks(CHUNK) {
                        let mut q = sqlx::QueryBuilder::<Db>::new(
                            "INSERT INTO notification_attempts (id, route_id, attempt, started_at,
                                 finished_at, outcome, status_code, error) ",
                        );
                        q.push_values(chunk, |mut row, (a, total)| {
                            row.push_bind(Uuid::now_v7())
                                .push_bind(a.route_id)
                                .push_bind(*total)
                                .push_bind(a.started_at)
                                .push_bind(a.finished_at)
                                .push_bind(a.outcome.as_str())
                                .push_bind(a.status_code)
                                .push_bind(a.error.clone());
                        });
                        q.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(held)
                }

                async fn release_route(
                    &self,
                    id: Uuid,
                    owner: &str,
                    now: DateTime<Utc>,
                ) -> StoreResult<()> {
                    let turn = SqlBackend::write_turn(self).await;
                    sqlx::query(sqlx::AssertSqlSafe(crate::leased::notify::RELEASE.as_str()))
                        .bind(now)
                        .bind(id)
                        .bind(owner)
                        .execute(turn.pool())
                        .await?;
                    Ok(())
                }

                async fn digest_items(
                    &self,
                    account: Uuid,
                    game: Uuid,
                    kind: Kind,
                    from: DateTime<Utc>,
                    to: DateTime<Utc>,
                ) -> StoreResult<Vec<NotificationRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {NOTIFICATION} FROM notifications n
                         LEFT JOIN games g ON g.id = n.game_id
                         WHERE n.account_id = $1 AND n.game_id = $2 AND n.kind = $3
                           AND n.created_at >= $4 AND n.created_at < $5
                         ORDER BY n.id"
                    )))
                    .bind(account)
                    .bind(game)
                    .bind(kind.as_str())
                    .bind(from)
                    .bind(to)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows)
                }

                async fn notification(&self, id: Uuid) -> StoreResult<NotificationRow> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {NOTIFICATION} FROM notifications n
                         LEFT JOIN games g ON g.id = n.game_id WHERE n.id = $1"
                    )))
                    .bind(id)
                    .fetch_optional(SqlBackend::reader(self))
                    .await?
                    .ok_or(StoreError::NotFound)?;
                    Ok(sqlx::FromRow::from_row(&row)?)
                }

                async fn inbox(
                    &self,
                    account: Uuid,
                    before: Option<Uuid>,
                    unread_only: bool,
                    limit: i64,
                ) -> StoreResult<Vec<NotificationRow>> {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {NOTIFICATION} FROM notifications n
                         LEFT JOIN games g ON g.id = n.game_id
                         WHERE n.account_id = $1
                           AND (CAST($2 AS UUID) IS NULL OR n.id < $2)
                           AND ($3 = FALSE OR n.read_at IS NULL)
                         ORDER BY n.id DESC LIMIT $4"
                    )))
                    .bind(account)
                    .bind(before)
                    .bind(unread_only)
                    .bind(limit)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows)
                }

                async fn unread_count(&self, account: Uuid) -> StoreResult<i64> {
                    Ok(sqlx::query_scalar(
                        "SELECT COUNT(*) FROM notifications WHERE account_id = $1 AND read_at IS NULL",
                    )
                    .bind(account)
                    .fetch_one(SqlBackend::reader(self))
                    .await?)
                }

                async fn unread_counts(&self, accounts: &[Uuid]) -> StoreResult<Vec<(Uuid, i64)>> {
                    let mut out = Vec::with_capacity(accounts.len());
                    for chunk in accounts.chunks(CHUNK) {
                        let mut q = sqlx::QueryBuilder::<Db>::new(
                            "SELECT account_id, COUNT(*) AS n FROM notifications
                             WHERE read_at IS NULL AND account_id IN (",
                        );
                        let mut ids = q.separated(", ");
                        for id in chunk {
                            ids.push_bind(*id);
                        }
                        q.push(") GROUP BY account_id");
                        for row in q.build().fetch_all(SqlBackend::reader(self)).await? {
                            out.push((row.try_get("account_id")?, row.try_get("n")?));
                        }
                    }
                    Ok(out)
                }

                async fn mark_read(
                    &self,
                    account: Uuid,
                    id: Uuid,
                    now: DateTime<Utc>,
                ) -> StoreResult<bool> {
                    let turn = SqlBackend::write_turn(self).await;
                    let found: Option<Uuid> = sqlx::query_scalar(
                        "UPDATE notifications SET read_at = COALESCE(read_at, $3)
                         WHERE id = $1 AND account_id = $2 RETURNING id",
                    )
                    .bind(id)
                    .bind(account)
                    .bind(now)
                    .fetch_optional(turn.pool())
                    .await?;
                    Ok(found.is_some())
                }

                async fn mark_all_read(&self, account: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
                    let turn = SqlBackend::write_turn(self).await;
                    let done = sqlx::query(
                        "UPDATE notifications SET read_at = $2
                         WHERE account_id = $1 AND read_at IS NULL",
                    )
                    .bind(account)
                    .bind(now)
                    .execute(turn.pool())
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn preferences(&self, account: Uuid) -> StoreResult<Option<PreferencesRow>> {
                    let row = sqlx::query(
                        "SELECT account_id, settings, webhook_url, webhook_salt, updated_at
                         FROM notification_preferences WHERE account_id = $1",
                    )
                    .bind(account)
                    .fetch_optional(SqlBackend::reader(self))
                    .await?;
                    row.map(|r| sqlx::FromRow::from_row(&r))
                        .transpose()
                        .map_err(Into::into)
                }

                async fn put_preferences(&self, p: &PreferencesRow) -> StoreResult<()> {
                    let turn = SqlBackend::write_turn(self).await;
                    upsert_preferences(turn.pool(), p).await
                }

                async fn unsubscribe(
                    &self,
                    token_id: Uuid,
                    kind: Kind,
                    p: &PreferencesRow,
                    now: DateTime<Utc>,
                ) -> StoreResult<bool> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    let fresh = sqlx::query(
                        "INSERT INTO notification_unsubscribes (token_id, account_id, kind, used_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(token_id)
                    .bind(p.account_id)
                    .bind(kind.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    if !fresh {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    upsert_preferences(&mut *tx, p).await?;
                    tx.commit().await?;
                    Ok(true)
                }

                async fn list_routes(&self, f: &RouteFilter) -> StoreResult<Vec<RouteRecord>> {
                    let mut q = sqlx::QueryBuilder::<Db>::new(format!(
                        "SELECT {ROUTE} FROM notification_routes"
                    ));
                    filtered(&mut q, f);
                    q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
                    let rows = q.build().fetch_all(SqlBackend::reader(self)).await?;
                    Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
                }

                async fn route(
                    &self,
                    id: Uuid,
                ) -> StoreResult<(RouteRecord, Vec<RouteAttemptRecord>)> {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ROUTE} FROM notification_routes WHERE id = $1"
                    )))
                    .bind(id)
                    .fetch_optional(SqlBackend::reader(self))
                    .await?
                    .ok_or(StoreError::NotFound)?;
                    let attempts = sqlx::query(
                        "SELECT attempt, started_at, finished_at, outcome, status_code, error
                         FROM notification_attempts WHERE route_id = $1 ORDER BY attempt",
                    )
                    .bind(id)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    Ok((record(&row)?, all(&attempts)?))
                }

                async fn requeue_routes(
                    &self,
                    f: &RouteFilter,
                    now: DateTime<Utc>,
                ) -> StoreResult<Vec<Uuid>> {
                    let mut only_dead = f.clone();
                    only_dead.status = Some(crate::notify::RouteStatus::Failed);
                    let turn = SqlBackend::write_turn(self).await;
                    let mut q = sqlx::QueryBuilder::<Db>::new(
                        "UPDATE notification_routes SET status = 'pending', attempts = 0, next_attempt_at = ",
                    );
                    q.push_bind(now);
                    q.push(", last_error = NULL WHERE id IN (SELECT id FROM notification_routes");
                    filtered(&mut q, &only_dead);
                    q.push(" ORDER BY id LIMIT ").push_bind(f.limit);
                    q.push(") RETURNING id");
                    let rows = q.build().fetch_all(turn.pool()).await?;
                    Ok(rows
                        .iter()
                        .map(|r| r.try_get("id"))
                        .collect::<Result<_, _>>()?)
                }

                async fn route_depths(&self) -> StoreResult<Vec<(String, i64)>> {
                    let rows = sqlx::query(
                        "SELECT channel, COUNT(*) AS n FROM notification_routes
                         WHERE status IN ('pending', 'dispatching') GROUP BY channel",
                    )
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    rows.iter()
                        .map(|r| Ok((r.try_get("channel")?, r.try_get("n")?)))
                        .collect()
                }

                async fn prune_notifications(
                    &self,
                    before: DateTime<Utc>,
                    limit: i64,
                ) -> StoreResult<u64> {
                    let turn = SqlBackend::write_turn(self).await;
                    // Ids are UUIDv7 made at the write, so the oldest come
                    // first by key; only routed ones go.
                    let done = sqlx::query(
                        "DELETE FROM notifications WHERE id IN (
                             SELECT id FROM notifications
                             WHERE created_at < $1 AND routed_at IS NOT NULL
                             ORDER BY id LIMIT $2)",
                    )
                    .bind(before)
                    .bind(limit)
                    .execute(turn.pool())
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn reminder_candidates(
                    &self,
                    now: DateTime<Utc>,
                    until: DateTime<Utc>,
                    limit: i64,
                ) -> StoreResult<Vec<ReminderCandidate>> {
                    let rows = sqlx::query(
                        "SELECT c.game_id, c.turn, c.opened_at, c.due_at, g.rules
                         FROM game_clocks c JOIN games g ON g.id = c.game_id
                         WHERE c.due_at > $1 AND c.due_at <= $2
                           AND (c.reminded_turn IS NULL OR c.reminded_turn < c.turn)
                           AND c.awaiting <> '[]' AND c.paused_at IS NULL
                         ORDER BY c.due_at LIMIT $3",
                    )
                    .bind(now)
                    .bind(until)
                    .bind(limit)
                    .fetch_all(SqlBackend::reader(self))
                    .await?;
                    all(&rows)
                }

                async fn remind(
                    &self,
                    game: Uuid,
                    turn: i64,
                    notice: &NewNotice,
                    now: DateTime<Utc>,
                ) -> StoreResult<Option<u64>> {
                    let mut tx = SqlBackend::begin_write(self).await?;
                    // Marking the clock takes its row (Postgres) as a
                    // turn's record does, so a reminder and the turn's
                    // resolution are ordered: never a reminder after it.
                    let awaiting: Option<String> = sqlx::query_scalar(
                        "UPDATE game_clocks SET reminded_turn = turn
                         WHERE game_id = $1 AND turn = $2 AND due_at > $3
                           AND (reminded_turn IS NULL OR reminded_turn < turn)
                         RETURNING awaiting",
                    )
                    .bind(game)
                    .bind(turn)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(awaiting) = awaiting else {
                        tx.rollback().await?;
                        return Ok(None);
                    };
                    let seats: Vec<Uuid> = awaiting
                        .trim_matches(|c| c == '[' || c == ']')
                        .split(',')
                        .filter_map(|s| s.trim().trim_matches('"').parse().ok())
                        .collect();
                    let acted: Vec<Uuid> = sqlx::query_scalar(
                        "SELECT seat_id FROM turn_submissions WHERE game_id = $1 AND turn = $2",
                    )
                    .bind(game)
                    .bind(turn)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut users = Vec::new();
                    for seat in seats.iter().filter(|s| !acted.contains(s)) {
                        let user: Option<Option<Uuid>> = sqlx::query_scalar(
                            "SELECT account_id FROM game_players
                             WHERE id = $1 AND status = 'active' AND bot_control = FALSE",
                        )
                        .bind(seat)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(Some(user)) = user {
                            users.push(user);
                        }
                    }
                    let mut one = notice.clone();
                    one.to = Audience::Users(users);
                    let n = write_in(&mut tx, std::slice::from_ref(&one), now).await?;
                    tx.commit().await?;
                    Ok(Some(n))
                }
            }

            async fn upsert_preferences<'c, E>(conn: E, p: &PreferencesRow) -> StoreResult<()>
            where
                E: sqlx::Executor<'c, Database = Db>,
            {
                sqlx::query(
                    "INSERT INTO notification_preferences
                         (account_id, settings, webhook_url, webhook_salt, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (account_id) DO UPDATE
                     SET settings = excluded.settings, webhook_url = excluded.webhook_url,
                         webhook_salt = excluded.webhook_salt, updated_at = excluded.updated_at",
                )
                .bind(p.account_id)
                .bind(&p.settings)
                .bind(&p.webhook_url)
                .bind(&p.webhook_salt)
                .bind(p.updated_at)
                .execute(conn)
                .await?;
                Ok(())
            }
        }
    };
}

impl_notify_store!(
    sqlite_notify,
    crate::SqliteStore,
    sqlx::sqlite::SqliteRow,
    crate::leased::notify::CLAIM_SQLITE
);
impl_notify_store!(
    postgres_notify,
    crate::PostgresStore,
    sqlx::postgres::PgRow,
    crate::leased::notify::CLAIM_POSTGRES
);
