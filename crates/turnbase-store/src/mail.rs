//! The mail outbox as the store sees it: rows to deliver, their leases and
//! their attempts. Addresses and bodies arrive already validated and
//! rendered; this module only keeps them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{StoreResult, Tx};

/// Where a mail is in the outbox, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailStatus {
    /// Due at `next_attempt_at` (new, or retrying).
    Pending,
    /// Claimed by a worker under a lease.
    Sending,
    Sent,
    /// Failed for good (a permanent refusal, or the attempts ran out).
    Failed,
}

impl MailStatus {
    pub const ALL: [MailStatus; 4] = [
        MailStatus::Pending,
        MailStatus::Sending,
        MailStatus::Sent,
        MailStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MailStatus::Pending => "pending",
            MailStatus::Sending => "sending",
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<MailStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The status operators see: a pending mail that has failed before is
/// `retrying`. Derived in [`MailRecord::shown_status`] and turned back
/// into a stored status in [`ShownStatus::stored`], and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShownStatus {
    Pending,
    Retrying,
    Sending,
    Sent,
    Failed,
}

impl ShownStatus {
    pub const ALL: [ShownStatus; 5] = [
        ShownStatus::Pending,
        ShownStatus::Retrying,
        ShownStatus::Sending,
        ShownStatus::Sent,
        ShownStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShownStatus::Pending => "pending",
            ShownStatus::Retrying => "retrying",
            ShownStatus::Sending => "sending",
            ShownStatus::Sent => "sent",
            ShownStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<ShownStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The stored status it selects, and whether it selects mail that was
    /// attempted before (`Some(true)`), never was (`Some(false)`), or
    /// either (`None`).
    pub fn stored(self) -> (MailStatus, Option<bool>) {
        match self {
            ShownStatus::Pending => (MailStatus::Pending, Some(false)),
            ShownStatus::Retrying => (MailStatus::Pending, Some(true)),
            ShownStatus::Sending => (MailStatus::Sending, None),
            ShownStatus::Sent => (MailStatus::Sent, None),
            ShownStatus::Failed => (MailStatus::Failed, None),
        }
    }
}

/// How one delivery attempt ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Sent,
    /// Worth trying again (a 4xx reply, a timeout, a connection error).
    Transient,
    /// Not worth trying again (a 5xx reply, a message that cannot be built).
    Permanent,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 3] = [
        AttemptOutcome::Sent,
        AttemptOutcome::Transient,
        AttemptOutcome::Permanent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Sent => "sent",
            AttemptOutcome::Transient => "transient",
            AttemptOutcome::Permanent => "permanent",
        }
    }

    pub fn parse(text: &str) -> Option<AttemptOutcome> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A state compares equal to its stored text, which keeps assertions on
/// rows short.
macro_rules! eq_text {
    ($($state:ty),*) => {$(
        impl PartialEq<&str> for $state {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    )*};
}
eq_text!(MailStatus, ShownStatus, AttemptOutcome);

/// A stored state text read into its state; anything else is an error.
macro_rules! from_text {
    ($($state:ty),*) => {$(
        impl TryFrom<String> for $state {
            type Error = String;

            fn try_from(text: String) -> Result<$state, String> {
                <$state>::parse(&text).ok_or_else(|| format!("unknown state {text:?}"))
            }
        }
    )*};
}
from_text!(MailStatus, AttemptOutcome);

// Stored texts, for the SQL below and the backends.
pub(crate) const PENDING: &str = "pending";
pub(crate) const SENDING: &str = "sending";
pub(crate) const SENT: &str = "sent";
pub(crate) const FAILED: &str = "failed";

/// A mail to add to the outbox.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub id: Uuid,
    /// A second enqueue with the same key is a no-op.
    pub idempotency_key: Option<String>,
    pub to: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: Option<String>,
    pub created_at: DateTime<Utc>,
    /// For mail carrying a secret: the subject with it masked, the only
    /// one shown after enqueue. Such mail has its body erased a while
    /// after it is finished ([`MailStore::erase_secret_bodies`]).
    pub masked_subject: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Created(Uuid),
    /// The idempotency key was seen before; nothing was added.
    Existing(Uuid),
}

impl Enqueued {
    pub fn id(self) -> Uuid {
        match self {
            Enqueued::Created(id) | Enqueued::Existing(id) => id,
        }
    }
}

/// A row claimed by a worker under a lease.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedMail {
    pub id: Uuid,
    #[sqlx(rename = "to_address")]
    pub to: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: Option<String>,
    /// Attempts already made before this one.
    pub attempts: i64,
}

/// One finished delivery attempt.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub smtp_code: Option<i64>,
    pub error: Option<String>,
}

/// A finished attempt on a claimed row and what follows from it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub mail_id: Uuid,
    pub attempt: NewAttempt,
    pub after: AfterAttempt,
}

/// What becomes of the row after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Sent,
    RetryAt(DateTime<Utc>),
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MailRecord {
    pub id: Uuid,
    pub idempotency_key: Option<String>,
    #[sqlx(rename = "to_address")]
    pub to: String,
    pub subject: String,
    #[sqlx(try_from = "String")]
    pub status: MailStatus,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The mail carries a secret; `subject` is then the masked one.
    pub carries_secret: bool,
    /// When the body of a secret-bearing mail was erased.
    pub erased_at: Option<DateTime<Utc>>,
}

/// The columns a [`MailRecord`] is read from, the same text on both
/// backends. A secret-bearing mail shows only its masked subject.
pub(crate) const RECORD_COLUMNS: &str = "id, idempotency_key, to_address, \
     COALESCE(masked_subject, subject) AS subject, status, attempts, next_attempt_at, \
     created_at, sent_at, last_error, masked_subject IS NOT NULL AS carries_secret, erased_at";

/// Erases the bodies of secret-bearing mail finished (sent, or failed for
/// good) before `$1`, at most `$2` of them, at `$3`; the same text on both
/// backends. A failed mail's `next_attempt_at` is the end of the lease of
/// its last attempt.
pub(crate) const ERASE_SECRET_BODIES: &str = "UPDATE mail_outbox
     SET text_body = '', html_body = NULL, subject = masked_subject, erased_at = $3
     WHERE id IN (
         SELECT id FROM mail_outbox
         WHERE masked_subject IS NOT NULL AND erased_at IS NULL
           AND ((status = 'sent' AND sent_at < $1) OR (status = 'failed' AND next_attempt_at < $1))
         ORDER BY id
         LIMIT $2)";

impl MailRecord {
    /// `retrying` is a pending row that has failed before.
    pub fn shown_status(&self) -> ShownStatus {
        match self.status {
            MailStatus::Pending if self.attempts > 0 => ShownStatus::Retrying,
            MailStatus::Pending => ShownStatus::Pending,
            MailStatus::Sending => ShownStatus::Sending,
            MailStatus::Sent => ShownStatus::Sent,
            MailStatus::Failed => ShownStatus::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptRecord {
    pub attempt: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub outcome: AttemptOutcome,
    pub smtp_code: Option<i64>,
    pub error: Option<String>,
}

/// Which deliveries to list: newest first, `limit` at a time, before the
/// id given (keyset paging).
#[derive(Debug, Clone, Default)]
pub struct MailFilter {
    pub status: Option<ShownStatus>,
    pub before: Option<Uuid>,
    /// Only mail to this address, exactly as stored (the parsed form).
    pub to: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Rows still to deliver (pending or being sent).
    pub depth: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// The outbox.
#[async_trait::async_trait]
pub trait MailStore: Send + Sync {
    /// Adds a mail inside the caller's transaction, so it exists if and
    /// only if the caller's change commits.
    async fn enqueue(&self, tx: &mut Tx, mail: &NewMail) -> StoreResult<Enqueued>;

    /// Claims up to `limit` rows that are due (or whose lease expired) for
    /// `owner` until `now + lease`. No two claims ever hold one row at once.
    async fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        owner: &str,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedMail>>;

    /// Records attempts and their consequences in one transaction, each
    /// only if `owner` still holds its lease; returns, per item, whether it
    /// did.
    async fn finish_attempts(&self, owner: &str, items: &[Finished]) -> StoreResult<Vec<bool>>;

    /// [`MailStore::finish_attempts`] for one attempt.
    async fn finish_attempt(
        &self,
        id: Uuid,
        owner: &str,
        attempt: &NewAttempt,
        after: AfterAttempt,
    ) -> StoreResult<bool> {
        let item = Finished {
            mail_id: id,
            attempt: attempt.clone(),
            after,
        };
        let held = self
            .finish_attempts(owner, std::slice::from_ref(&item))
            .await?;
        Ok(held.first().copied().unwrap_or(false))
    }

    /// Gives a claimed row back, due at `now`, without spending an attempt
    /// (shutdown).
    async fn release_mail(&self, id: Uuid, owner: &str, now: DateTime<Utc>) -> StoreResult<()>;

    async fn list_mail(&self, filter: &MailFilter) -> StoreResult<Vec<MailRecord>>;

    async fn mail(&self, id: Uuid) -> StoreResult<(MailRecord, Vec<AttemptRecord>)>;

    /// Makes a failed row due again with a fresh attempt budget; a
    /// secret-bearing mail whose body was erased cannot be (a conflict).
    async fn retry_mail(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<MailRecord>;

    async fn mail_queue_stats(&self) -> StoreResult<QueueStats>;

    /// Deletes up to `limit` finished mails (sent or failed for good)
    /// enqueued before `before`, with their attempts; returns how many
    /// went. Mail ids are UUIDv7 made at enqueue, so the primary key finds
    /// old mail without an index of its own.
    async fn purge_finished_mail(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64>;

    /// Blanks the bodies (and the subject, down to its masked form) of up
    /// to `limit` secret-bearing mails finished before `finished_before`,
    /// marking them erased at `now`; their delivery records stay. Returns
    /// how many were erased.
    async fn erase_secret_bodies(
        &self,
        finished_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<u64>;
}

/// The smallest UUIDv7 of the millisecond `at`: every id made before `at`
/// sorts below it, every id made from `at` on does not.
pub(crate) fn first_id_at(at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid()
}

pub(crate) fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::days(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Role;

    #[test]
    fn states_round_trip_through_their_stored_text_and_nothing_else_parses() {
        for s in MailStatus::ALL {
            assert_eq!(MailStatus::parse(s.as_str()), Some(s));
        }
        for s in ShownStatus::ALL {
            assert_eq!(ShownStatus::parse(s.as_str()), Some(s));
        }
        for o in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(o.as_str()), Some(o));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        for bad in ["", "Pending", "retrying ", "sent\n", "admin?"] {
            assert_eq!(MailStatus::parse(bad), None, "{bad:?}");
            assert_eq!(AttemptOutcome::parse(bad), None, "{bad:?}");
            assert_eq!(Role::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            MailStatus::parse("retrying"),
            None,
            "shown only, never stored"
        );
    }

    #[test]
    fn retrying_is_a_pending_mail_with_attempts_both_ways() {
        assert_eq!(
            ShownStatus::Retrying.stored(),
            (MailStatus::Pending, Some(true))
        );
        assert_eq!(
            ShownStatus::Pending.stored(),
            (MailStatus::Pending, Some(false))
        );
        for shown in ShownStatus::ALL {
            let (status, retried) = shown.stored();
            let record = |attempts| MailRecord {
                id: uuid::Uuid::nil(),
                idempotency_key: None,
                to: String::new(),
                subject: String::new(),
                status,
                attempts,
                next_attempt_at: DateTime::<Utc>::MIN_UTC,
                created_at: DateTime::<Utc>::MIN_UTC,
                sent_at: None,
                last_error: None,
                carries_secret: false,
                erased_at: None,
            };
            let attempts = if retried == Some(true) { 2 } else { 0 };
            assert_eq!(record(attempts).shown_status(), shown);
        }
    }
}
