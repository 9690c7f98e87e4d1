//! The mail service domain code calls: checks and enqueues a mail inside
//! the caller's transaction.

use std::sync::Arc;

use opentelemetry::metrics::{Counter, Meter};
use tokio::sync::Notify;
use turnbase_core::worker::{Clock, system_clock};
use turnbase_store::mail::{Enqueued, NewMail};
use turnbase_store::{Database, StoreError, Tx};
use uuid::Uuid;

use crate::email::Email;
use crate::template::Rendered;

/// Bounds that keep one mail from clogging the queue.
const MAX_SUBJECT: usize = 998;
const MAX_BODY: usize = 1024 * 1024;
const MAX_KEY: usize = 256;

/// A mail ready to queue.
#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub to: Email,
    pub content: Rendered,
    /// The same key twice enqueues once (e.g. `login-code:<request id>`).
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct MailService {
    db: Database,
    wake: Arc<Notify>,
    enqueued: Option<Counter<u64>>,
    clock: Clock,
}

impl MailService {
    pub fn new(db: Database, wake: Arc<Notify>, meter: &Meter) -> Self {
        Self {
            db,
            wake,
            enqueued: Some(meter).map(|m| {
                m.u64_counter("mail_enqueued")
                    .with_description("Mails added to the outbox")
                    .build()
            }),
            clock: system_clock(),
        }
    }

    /// The same service reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Adds the mail to the outbox inside `tx`. Call [`MailService::wake`]
    /// after committing so a worker picks it up at once.
    pub async fn enqueue(&self, tx: &mut Tx, mail: OutgoingMail) -> Result<Enqueued, MailError> {
        let c = &mail.content;
        if c.subject.len() > MAX_SUBJECT || c.subject.contains(['\r', '\n']) {
            return Err(MailError::Invalid(
                "the subject must be one line of at most 998 bytes".into(),
            ));
        }
        if c.text.len() > MAX_BODY || c.html.as_ref().is_some_and(|h| h.len() > MAX_BODY) {
            return Err(MailError::Invalid(
                "a mail body is larger than 1 MiB".into(),
            ));
        }
        if mail
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY)
        {
            return Err(MailError::Invalid(
                "an idempotency key must be 1 to 256 bytes".into(),
            ));
        }
        let new = NewMail {
            id: Uuid::now_v7(),
            idempotency_key: mail.idempotency_key,
            to: mail.to.as_str().to_string(),
            subject: c.subject.clone(),
            text_body: c.text.clone(),
            html_body: c.html.clone(),
            created_at: (self.clock)(),
            masked_subject: c.masked_subject.clone(),
        };
        let enqueued = self.db.mail().enqueue(tx, &new).await?;
        if let (Some(counter), Enqueued::Created(_)) = (&self.enqueued, enqueued) {
            counter.add(1, &[]);
        }
        Ok(enqueued)
    }

    /// Wakes an idle worker slot.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}
