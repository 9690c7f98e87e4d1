//! The outbox statements that are the same text on both backends, written
//! once: listing, showing, retrying, releasing, erasing secret bodies and
//! the queue figures.
//! Numbered `$n` parameters and `CAST(… AS …) IS NULL` for optional
//! filters read alike on SQLite and Postgres. Each backend's `MailStore`
//! delegates to these and keeps in its own file only what truly differs:
//! enqueueing, claiming, recording attempts and purging.
//!
//! Reads go through the store's reader and writes through its write turn,
//! so on SQLite no write here can skip the write gate.

macro_rules! impl_shared_mail {
    ($store:ty, $row:ty) => {
        impl $store {
            fn mail_record(row: &$row) -> Result<$crate::mail::MailRecord, sqlx::Error> {
                sqlx::FromRow::from_row(row)
            }

            pub(crate) async fn shared_release_mail(
                &self,
                id: uuid::Uuid,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::StoreResult<()> {
                let turn = $crate::backend::SqlBackend::write_turn(self).await;
                sqlx::query(sqlx::AssertSqlSafe($crate::leased::mail::RELEASE.as_str()))
                    .bind(now)
                    .bind(id)
                    .bind(owner)
                    .execute(turn.pool())
                    .await?;
                Ok(())
            }

            pub(crate) async fn shared_list_mail(
                &self,
                filter: &$crate::mail::MailFilter,
            ) -> $crate::StoreResult<Vec<$crate::mail::MailRecord>> {
                let (status, retried) = match filter.status.map($crate::mail::ShownStatus::stored)
                {
                    Some((status, retried)) => (Some(status.as_str()), retried),
                    None => (None, None),
                };
                let sql = format!(
                    "SELECT {} FROM mail_outbox
                     WHERE (CAST($1 AS TEXT) IS NULL OR status = $1)
                       AND (CAST($2 AS BOOLEAN) IS NULL
                            OR ($2 AND attempts > 0) OR (NOT $2 AND attempts = 0))
                       AND (CAST($3 AS UUID) IS NULL OR id < $3)
                       AND (CAST($5 AS TEXT) IS NULL OR to_address = $5)
                     ORDER BY id DESC LIMIT $4",
                    $crate::mail::RECORD_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(status)
                    .bind(retried)
                    .bind(filter.before)
                    .bind(filter.limit)
                    .bind(&filter.to)
                    .fetch_all($crate::backend::SqlBackend::reader(self))
                    .await?;
                rows.iter()
                    .map(Self::mail_record)
                    .collect::<Result<_, _>>()
                    .map_err(Into::into)
            }

            pub(crate) async fn shared_mail(
                &self,
                id: uuid::Uuid,
            ) -> $crate::StoreResult<($crate::mail::MailRecord, Vec<$crate::mail::AttemptRecord>)>
            {
                let sql = format!(
                    "SELECT {} FROM mail_outbox WHERE id = $1",
                    $crate::mail::RECORD_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_one($crate::backend::SqlBackend::reader(self))
                    .await?;
                let attempts = sqlx::query(
                    "SELECT attempt, started_at, finished_at, outcome, smtp_code, error
                     FROM mail_attempts WHERE mail_id = $1 ORDER BY attempt",
                )
                .bind(id)
                .fetch_all($crate::backend::SqlBackend::reader(self))
                .await?;
                let attempts = attempts
                    .iter()
                    .map(<$crate::mail::AttemptRecord as sqlx::FromRow<'_, $row>>::from_row)
                    .collect::<Result<_, sqlx::Error>>()?;
                Ok((Self::mail_record(&row)?, attempts))
            }

            pub(crate) async fn shared_retry_mail(
                &self,
                id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::StoreResult<$crate::mail::MailRecord> {
                let sql = format!(
                    "UPDATE mail_outbox SET status = $1, attempts = 0, next_attempt_at = $2
                     WHERE id = $3 AND status = $4 AND erased_at IS NULL RETURNING {}",
                    $crate::mail::RECORD_COLUMNS
                );
                let row = {
                    let turn = $crate::backend::SqlBackend::write_turn(self).await;
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind($crate::mail::PENDING)
                        .bind(now)
                        .bind(id)
                        .bind($crate::mail::FAILED)
                        .fetch_optional(turn.pool())
                        .await?
                };
                match row {
                    Some(row) => Ok(Self::mail_record(&row)?),
                    None => {
                        let (current, _) = self.shared_mail(id).await?;
                        if current.erased_at.is_some() {
                            return Err($crate::StoreError::Conflict(
                                "this mail carried a secret and its body was erased; it cannot be sent again"
                                    .into(),
                            ));
                        }
                        Err($crate::StoreError::Conflict(format!(
                            "only failed mail can be retried; this one is {}",
                            current.shown_status().as_str()
                        )))
                    }
                }
            }

            pub(crate) async fn shared_erase_secret_bodies(
                &self,
                finished_before: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> $crate::StoreResult<u64> {
                let turn = $crate::backend::SqlBackend::write_turn(self).await;
                let done = sqlx::query($crate::mail::ERASE_SECRET_BODIES)
                    .bind(finished_before)
                    .bind(limit)
                    .bind(now)
                    .execute(turn.pool())
                    .await?;
                Ok(done.rows_affected())
            }

            pub(crate) async fn shared_mail_queue_stats(
                &self,
            ) -> $crate::StoreResult<$crate::mail::QueueStats> {
                use sqlx::Row as _;
                let row = sqlx::query(
                    "SELECT COUNT(*) AS depth, MIN(CASE WHEN status = $1 THEN created_at END) AS oldest
                     FROM mail_outbox WHERE status IN ($1, $2)",
                )
                .bind($crate::mail::PENDING)
                .bind($crate::mail::SENDING)
                .fetch_one($crate::backend::SqlBackend::reader(self))
                .await?;
                Ok($crate::mail::QueueStats {
                    depth: row.try_get("depth")?,
                    oldest_pending: row.try_get("oldest")?,
                })
            }
        }
    };
}

impl_shared_mail!(crate::SqliteStore, sqlx::sqlite::SqliteRow);
impl_shared_mail!(crate::PostgresStore, sqlx::postgres::PgRow);
