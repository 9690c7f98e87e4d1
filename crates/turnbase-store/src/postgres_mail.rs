//! `MailStore` for Postgres: claims use `FOR UPDATE SKIP LOCKED`, so any
//! number of workers in any number of backend processes claim disjoint rows
//! without waiting on each other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::mail::{
    AfterAttempt, AttemptRecord, ClaimedMail, Enqueued, FAILED, Finished, MailFilter, MailRecord,
    MailStore, NewMail, PENDING, QueueStats, SENDING, SENT, lease_end,
};
use crate::{PostgresStore, StoreError, StoreResult, Tx};

#[async_trait::async_trait]
impl MailStore for PostgresStore {
    async fn enqueue(&self, tx: &mut Tx, mail: &NewMail) -> StoreResult<Enqueued> {
        let crate::TxInner::Postgres(tx) = &mut tx.0 else {
            return Err(StoreError::Unsupported(
                "a SQLite transaction for Postgres".into(),
            ));
        };
        // ON CONFLICT keeps a concurrent duplicate from failing the
        // caller's transaction; the existing id is then read back.
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO mail_outbox (id, idempotency_key, to_address, subject, text_body, html_body,
                 status, attempts, next_attempt_at, created_at, masked_subject)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8, $9)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING id",
        )
        .bind(mail.id)
        .bind(&mail.idempotency_key)
        .bind(&mail.to)
        .bind(&mail.subject)
        .bind(&mail.text_body)
        .bind(&mail.html_body)
        .bind(PENDING)
        .bind(mail.created_at)
        .bind(&mail.masked_subject)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = inserted {
            return Ok(Enqueued::Created(id));
        }
        let existing: Uuid =
            sqlx::query_scalar("SELECT id FROM mail_outbox WHERE idempotency_key = $1")
                .bind(&mail.idempotency_key)
                .fetch_one(&mut **tx)
                .await?;
        Ok(Enqueued::Existing(existing))
    }

    async fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        owner: &str,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedMail>> {
        // The leased-queue claim (FOR UPDATE SKIP LOCKED; see leased.rs).
        let rows = sqlx::query(sqlx::AssertSqlSafe(
            crate::leased::mail::CLAIM_POSTGRES.as_str(),
        ))
        .bind(owner)
        .bind(lease_end(now, lease))
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(<ClaimedMail as sqlx::FromRow<'_, _>>::from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn finish_attempts(&self, owner: &str, items: &[Finished]) -> StoreResult<Vec<bool>> {
        // One statement for the whole batch: the rows still leased to
        // `owner` are updated, and only their attempts are recorded, each
        // numbered from its mail's running total (no count of earlier
        // attempt rows).
        let mut ids = Vec::with_capacity(items.len());
        let mut statuses = Vec::with_capacity(items.len());
        let mut next_at = Vec::with_capacity(items.len());
        let mut sent_at = Vec::with_capacity(items.len());
        let mut errors = Vec::with_capacity(items.len());
        let mut attempt_ids = Vec::with_capacity(items.len());
        let mut started = Vec::with_capacity(items.len());
        let mut finished = Vec::with_capacity(items.len());
        let mut outcomes = Vec::with_capacity(items.len());
        let mut codes = Vec::with_capacity(items.len());
        for item in items {
            let (status, next, sent) = match item.after {
                AfterAttempt::Sent => (SENT, None, Some(item.attempt.finished_at)),
                AfterAttempt::RetryAt(at) => (PENDING, Some(at), None),
                AfterAttempt::Failed => (FAILED, None, None),
            };
            ids.push(item.mail_id);
            statuses.push(status);
            next_at.push(next);
            sent_at.push(sent);
            errors.push(item.attempt.error.clone());
            attempt_ids.push(item.attempt.id);
            started.push(item.attempt.started_at);
            finished.push(item.attempt.finished_at);
            outcomes.push(item.attempt.outcome.as_str());
            codes.push(item.attempt.smtp_code);
        }
        let held: Vec<Uuid> = sqlx::query_scalar(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[])
                     AS t(id, status, next_at, sent_at, error)
             ), updated AS (
                 UPDATE mail_outbox m
                 SET status = i.status, attempts = m.attempts + 1,
                     attempts_total = m.attempts_total + 1,
                     next_attempt_at = COALESCE(i.next_at, m.next_attempt_at),
                     sent_at = i.sent_at, last_error = i.error,
                     lease_owner = NULL, lease_until = NULL
                 FROM input i
                 WHERE m.id = i.id AND m.status = $6 AND m.lease_owner = $7
                 RETURNING m.id, m.attempts_total
             )
             INSERT INTO mail_attempts (id, mail_id, attempt, started_at, finished_at, outcome, smtp_code, error)
             SELECT a.attempt_id, a.mail_id, u.attempts_total,
                    a.started_at, a.finished_at, a.outcome, a.smtp_code, a.error
             FROM unnest($8::uuid[], $1::uuid[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::bigint[], $5::text[])
                 AS a(attempt_id, mail_id, started_at, finished_at, outcome, smtp_code, error)
             JOIN updated u ON u.id = a.mail_id
             RETURNING mail_id",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&next_at)
        .bind(&sent_at)
        .bind(&errors)
        .bind(SENDING)
        .bind(owner)
        .bind(&attempt_ids)
        .bind(&started)
        .bind(&finished)
        .bind(&outcomes)
        .bind(&codes)
        .fetch_all(self.pool())
        .await?;
        Ok(ids.iter().map(|id| held.contains(id)).collect())
    }

    async fn purge_finished_mail(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        // Attempts go with their mail (ON DELETE CASCADE). The ids are
        // gathered first so that the plan stays a primary-key lookup.
        let done = sqlx::query(
            "DELETE FROM mail_outbox
             WHERE id = ANY(ARRAY(
                 SELECT id FROM mail_outbox
                 WHERE id < $1 AND status IN ('sent', 'failed')
                 ORDER BY id
                 LIMIT $2))",
        )
        .bind(crate::mail::first_id_at(before))
        .bind(limit)
        .execute(self.pool())
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
