//! `MailStore` for SQLite: claims run in an immediate transaction, which
//! holds the database's write lock, so two claims never take one row.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::mail::{
    AfterAttempt, AttemptRecord, ClaimedMail, Enqueued, FAILED, Finished, MailFilter, MailRecord,
    MailStore, NewMail, PENDING, QueueStats, SENDING, SENT, lease_end,
};
use crate::{SqliteStore, StoreError, StoreResult, Tx};

#[async_trait::async_trait]
impl MailStore for SqliteStore {
    async fn enqueue(&self, tx: &mut Tx, mail: &NewMail) -> StoreResult<Enqueued> {
        let crate::TxInner::Sqlite(tx) = &mut tx.0 else {
            return Err(StoreError::Unsupported(
                "a Postgres transaction for SQLite".into(),
            ));
        };
        if let Some(key) = &mail.idempotency_key {
            let existing: Option<Uuid> =
                sqlx::query_scalar("SELECT id FROM mail_outbox WHERE idempotency_key = ?")
                    .bind(key)
                    .fetch_optional(&mut **tx)
                    .await?;
            if let Some(id) = existing {
                return Ok(Enqueued::Existing(id));
            }
        }
        sqlx::query(
            "INSERT INTO mail_outbox (id, idempotency_key, to_address, subject, text_body, html_body,
                 status, attempts, next_attempt_at, created_at, masked_subject)
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        )
        .bind(mail.id)
        .bind(&mail.idempotency_key)
        .bind(&mail.to)
        .bind(&mail.subject)
        .bind(&mail.text_body)
        .bind(&mail.html_body)
        .bind(PENDING)
        .bind(mail.created_at)
        .bind(mail.created_at)
        .bind(&mail.masked_subject)
        .execute(&mut **tx)
        .await?;
        Ok(Enqueued::Created(mail.id))
    }

    async fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        owner: &str,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedMail>> {
        let mut tx = self.begin_write().await?;
        // The leased-queue claim, in the immediate transaction that holds
        // the write lock (see leased.rs).
        let rows = sqlx::query(sqlx::AssertSqlSafe(
            crate::leased::mail::CLAIM_SQLITE.as_str(),
        ))
        .bind(owner)
        .bind(lease_end(now, lease))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(<ClaimedMail as sqlx::FromRow<'_, _>>::from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn finish_attempts(&self, owner: &str, items: &[Finished]) -> StoreResult<Vec<bool>> {
        let mut tx = self.begin_write().await?;
        let mut held = Vec::with_capacity(items.len());
        for item in items {
            let (status, next, sent_at) = match item.after {
                AfterAttempt::Sent => (SENT, None, Some(item.attempt.finished_at)),
                AfterAttempt::RetryAt(at) => (PENDING, Some(at), None),
                AfterAttempt::Failed => (FAILED, None, None),
            };
            // The mail's running total numbers the attempt.
            let number: Option<i64> = sqlx::query_scalar(
                "UPDATE mail_outbox SET status = ?, attempts = attempts + 1,
                     attempts_total = attempts_total + 1,
                     next_attempt_at = COALESCE(?, next_attempt_at), sent_at = ?,
                     last_error = ?, lease_owner = NULL, lease_until = NULL
                 WHERE id = ? AND status = ? AND lease_owner = ?
                 RETURNING attempts_total",
            )
            .bind(status)
            .bind(next)
            .bind(sent_at)
            .bind(&item.attempt.error)
            .bind(item.mail_id)
            .bind(SENDING)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
            held.push(number.is_some());
            let Some(number) = number else {
                continue;
            };
            sqlx::query(
                "INSERT INTO mail_attempts (id, mail_id, attempt, started_at, finished_at, outcome, smtp_code, error)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(item.attempt.id)
            .bind(item.mail_id)
            .bind(number)
            .bind(item.attempt.started_at)
            .bind(item.attempt.finished_at)
            .bind(item.attempt.outcome.as_str())
            .bind(item.attempt.smtp_code)
            .bind(&item.attempt.error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn purge_finished_mail(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        // Attempts go with their mail (ON DELETE CASCADE).
        let done = sqlx::query(
            "DELETE FROM mail_outbox
             WHERE id IN (
                 SELECT id FROM mail_outbox
                 WHERE id < ?1 AND status IN ('sent', 'failed')
                 ORDER BY id
                 LIMIT ?2)",
        )
        .bind(crate::mail::first_id_at(before))
        .bind(limit)
        .execute(self.write_turn().await.pool())
        .await?;
        Ok(done.rows_affected())
    }

    async fn release_mail(&self, id: Uuid, owner: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.shared_release_mail(id, owner, now).await
    }

    async fn list_mail(&self, filter: &MailFilter) -> StoreResult<Vec<MailRecord>> {
        self.shared_list_mail(filter).await
    }

    async fn mail(&self, id: Uuid) -> StoreResult<(MailRecord, Vec<AttemptRecord>)> {
        self.shared_mail(id).await
    }

    async fn retry_mail(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<MailRecord> {
        self.shared_retry_mail(id, now).await
    }

    async fn mail_queue_stats(&self) -> StoreResult<QueueStats> {
        self.shared_mail_queue_stats().await
    }

    async fn erase_secret_bodies(
        &self,
        finished_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<u64> {
        self.shared_erase_secret_bodies(finished_before, now, limit)
            .await
    }
}
