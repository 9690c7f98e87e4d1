//! The mail worker: claims due rows under a lease, sends them, records each
//! attempt, and retries transient failures with jittered exponential
//! backoff until the attempt budget is spent.
//!
//! Each of `concurrency` slots is a core worker [`Job`] run by a
//! [`Runner`]: a step either sent a batch of due mail (`Done`; the next
//! batch was claimed meanwhile when this one was full) or found nothing
//! due (`Idle`, so the slot sleeps until the poll interval passes or an
//! enqueue wakes it). On top of that shape sit the mail-only layers: the
//! claim ahead, and the recorder beside each slot that writes finished
//! attempts in chunks. Every send runs in a `mail.deliver` span with the
//! mail's id, so the SMTP client's log lines name the mail. A mail whose
//! send is interrupted by shutdown goes back to the queue without spending
//! an attempt; a mail whose worker died is claimed again when its lease
//! runs out. Time comes from the injected [`Clock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use turnbase_core::worker::{Clock, Job, Outcome, Runner, system_clock};
use turnbase_store::Database;
use turnbase_store::mail::{AfterAttempt, AttemptOutcome, Finished, NewAttempt};
use uuid::Uuid;

use turnbase_core::backoff::Backoff;

use crate::sender::{MailSender, MessageSettings, SendError, build_message};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub lease: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub concurrency: usize,
    pub poll_interval: Duration,
    /// Rows one slot claims at a time; more means fewer claim round trips.
    pub claim_batch: usize,
    /// How long finished mail (sent, or failed for good) is kept, with its
    /// attempts, before it is deleted.
    pub retention: Duration,
    /// How long a finished mail that carries a secret (a sign-in code)
    /// keeps its body; then the body is erased and the record stays.
    pub secret_retention: Duration,
}

/// Attempts are recorded once this many are done, or this long after the
/// last record, whichever comes first: few database round trips, and a
/// crash resends at most a chunk.
const RECORD_EVERY: usize = 16;
const RECORD_AFTER: Duration = Duration::from_millis(200);
/// Chunks waiting for the recorder before sending waits for it.
const RECORD_QUEUE: usize = 2;
/// How often finished mail past its retention is deleted, and how many
/// rows one statement deletes.
const PURGE_EVERY: Duration = Duration::from_secs(600);
const PURGE_BATCH: i64 = 1_000;

/// Mail one slot claimed together, and when.
pub struct Batch {
    mails: Vec<turnbase_store::mail::ClaimedMail>,
    claimed_at: Instant,
}

pub struct MailWorker {
    db: Database,
    sender: Arc<dyn MailSender>,
    settings: MessageSettings,
    config: WorkerConfig,
    wake: Arc<Notify>,
    metrics: Option<WorkerMetrics>,
    queue: Arc<QueueGauges>,
    /// Distinguishes this process's lease owners from other processes'.
    instance: String,
    clock: Clock,
    /// When finished mail is next purged (at the first upkeep step).
    next_purge: tokio::sync::Mutex<Option<DateTime<Utc>>>,
}

#[derive(Default)]
struct QueueGauges {
    depth: AtomicI64,
    oldest_age_ms: AtomicI64,
}

struct WorkerMetrics {
    sent: Counter<u64>,
    purged: Counter<u64>,
    failed: Counter<u64>,
    duration: Histogram<f64>,
    _depth: ObservableGauge<i64>,
    _oldest: ObservableGauge<f64>,
}

impl MailWorker {
    pub fn new(
        db: Database,
        sender: Arc<dyn MailSender>,
        settings: MessageSettings,
        config: WorkerConfig,
        wake: Arc<Notify>,
        meter: &Meter,
    ) -> Self {
        let queue = Arc::new(QueueGauges::default());
        Self {
            db,
            sender,
            settings,
            config,
            wake,
            metrics: Some(meter).map(|m| WorkerMetrics::new(m, queue.clone())),
            queue,
            instance: Uuid::now_v7().simple().to_string(),
            clock: system_clock(),
            next_purge: tokio::sync::Mutex::new(None),
        }
    }

    /// The same worker reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Runs every slot until `stop`; returns once each has put back or
    /// finished the mail in its hands.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            to = %self.sender.describe(),
            slots = self.config.concurrency,
            "mail worker started; draining pending mail"
        );
        let mut slots = tokio::task::JoinSet::new();
        let runner = Runner::new(self.config.poll_interval)
            .with_clock(self.clock.clone())
            .with_wake(self.wake.clone());
        for slot in 0..self.config.concurrency.max(1) {
            let job = Arc::new(Slot::open(
                self.clone(),
                format!("{}-{slot}", self.instance),
            ));
            let (runner, stop) = (runner.clone(), stop.clone());
            slots.spawn(async move { runner.run(job, stop).await });
        }
        let housekeeping = Arc::new(Housekeeping {
            worker: self.clone(),
        });
        // Its own wake: enqueues wake the sending slots only.
        let every = housekeeping.every();
        let runner = Runner::new(every)
            .with_clock(self.clock.clone())
            .with_wake(Arc::new(Notify::new()));
        slots.spawn(async move { runner.run(housekeeping, stop).await });
        while let Some(joined) = slots.join_next().await {
            joined??;
        }
        Ok(())
    }

    /// One step of a slot: sends the batch claimed ahead, or claims one
    /// (`Empty` when nothing is due). While a full batch is being sent the
    /// next one is claimed into `ahead`; a short batch means the queue is
    /// drained, and claiming ahead would only take rows other slots could
    /// send.
    async fn step(
        &self,
        now: DateTime<Utc>,
        owner: &str,
        ahead: &mut Option<Batch>,
        stop: &CancellationToken,
        records: &mpsc::Sender<Vec<Finished>>,
    ) -> anyhow::Result<Outcome> {
        let batch = match ahead.take() {
            Some(batch) => batch,
            None => self.claim(now, owner).await?,
        };
        if batch.mails.is_empty() {
            return Ok(Outcome::Idle { next_due: None });
        }
        if batch.mails.len() < self.claim_limit() {
            self.send_batch(batch, owner, stop, records).await?;
            return Ok(Outcome::Done);
        }
        let (sent, next) = tokio::join!(
            self.send_batch(batch, owner, stop, records),
            self.claim(now, owner)
        );
        match next {
            Ok(next) if !next.mails.is_empty() => *ahead = Some(next),
            Ok(_) => {}
            Err(err) => tracing::error!(error = %format!("{err:#}"), "cannot claim mail ahead"),
        }
        sent?;
        Ok(Outcome::Done)
    }

    fn claim_limit(&self) -> usize {
        self.config.claim_batch.max(1)
    }

    /// Claims up to a batch of due mail under this slot's lease.
    async fn claim(&self, now: DateTime<Utc>, owner: &str) -> anyhow::Result<Batch> {
        let claimed_at = Instant::now();
        let mails = self
            .db
            .mail()
            .claim_due_mail(
                now,
                self.config.lease,
                owner,
                i64::try_from(self.claim_limit()).unwrap_or(1),
            )
            .await?;
        Ok(Batch { mails, claimed_at })
    }

    /// Tries to deliver each mail of a claimed batch and hands the attempts
    /// to the recorder in chunks. (A crash before a record means those
    /// mails are sent again: delivery is at-least-once, and their
    /// Message-ID lets the receiver drop the copies.)
    async fn send_batch(
        &self,
        batch: Batch,
        owner: &str,
        stop: &CancellationToken,
        records: &mpsc::Sender<Vec<Finished>>,
    ) -> anyhow::Result<()> {
        let store = self.db.mail();
        let mut finished = Vec::with_capacity(RECORD_EVERY);
        let mut last_record = Instant::now();
        let mut rest = batch.mails.into_iter();
        while let Some(mail) = rest.next() {
            // Stop early, or before the lease is half gone (so that nobody
            // else can hold a row we are still sending): hand back the rest.
            let done = if stop.is_cancelled() || batch.claimed_at.elapsed() > self.config.lease / 2
            {
                store.release_mail(mail.id, owner, self.now()).await?;
                None
            } else {
                let span = tracing::info_span!(
                    "mail.deliver",
                    mail_id = %mail.id,
                    attempt = mail.attempts + 1
                );
                self.attempt(mail, owner, stop).instrument(span).await?
            };
            match done {
                Some(f) => finished.push(f),
                None => {
                    for mail in rest.by_ref() {
                        store.release_mail(mail.id, owner, self.now()).await?;
                    }
                }
            }
            // Record in chunks, so that a crash resends at most a chunk.
            if finished.len() >= RECORD_EVERY || last_record.elapsed() >= RECORD_AFTER {
                queue_record(records, &mut finished).await?;
                last_record = Instant::now();
            }
        }
        queue_record(records, &mut finished).await
    }

    async fn record(&self, owner: &str, finished: &[Finished]) -> anyhow::Result<()> {
        let held = self.db.mail().finish_attempts(owner, finished).await?;
        for (f, held) in finished.iter().zip(held) {
            self.report(f, held);
        }
        Ok(())
    }

    /// Sends one claimed mail. Returns `None` when shutdown interrupted the
    /// send and the mail went back unspent.
    async fn attempt(
        &self,
        mail: turnbase_store::mail::ClaimedMail,
        owner: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<Finished>> {
        let attempt = mail.attempts + 1;
        let started_at = self.now();
        let result = match build_message(&self.settings, &mail) {
            Ok(message) => tokio::select! {
                result = self.sender.send(mail.id, message) => result,
                () = stop.cancelled() => {
                    self.db.mail().release_mail(mail.id, owner, self.now()).await?;
                    tracing::info!(mail_id = %mail.id, "shutdown interrupted the send; the mail goes back without spending an attempt");
                    return Ok(None);
                }
            },
            Err(e) => Err(e),
        };
        let finished_at = self.now();
        let (outcome, after, code, error) = match result {
            Ok(accepted) => (
                AttemptOutcome::Sent,
                AfterAttempt::Sent,
                accepted.code,
                None,
            ),
            Err(SendError::Permanent { code, message }) => (
                AttemptOutcome::Permanent,
                AfterAttempt::Failed,
                code,
                Some(message),
            ),
            Err(SendError::Transient { code, message }) => {
                let after = if attempt >= i64::from(self.config.max_attempts) {
                    AfterAttempt::Failed
                } else {
                    AfterAttempt::RetryAt(
                        finished_at
                            + chrono::Duration::from_std(self.backoff(attempt))
                                .unwrap_or(chrono::Duration::hours(1)),
                    )
                };
                (AttemptOutcome::Transient, after, code, Some(message))
            }
        };
        Ok(Some(Finished {
            mail_id: mail.id,
            attempt: NewAttempt {
                id: Uuid::now_v7(),
                started_at,
                finished_at,
                outcome,
                smtp_code: code.map(i64::from),
                error,
            },
            after,
        }))
    }

    /// Logs and counts a recorded attempt.
    fn report(&self, f: &Finished, held: bool) {
        let a = &f.attempt;
        let span = tracing::info_span!("mail_delivery", mail_id = %f.mail_id);
        let _entered = span.enter();
        if !held {
            tracing::warn!(
                "the lease ran out before the attempt was recorded; another worker owns the mail now"
            );
        }
        if let Some(m) = &self.metrics {
            let elapsed = (a.finished_at - a.started_at)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1e6;
            m.duration
                .record(elapsed, &[KeyValue::new("outcome", a.outcome.as_str())]);
            match f.after {
                AfterAttempt::Sent => m.sent.add(1, &[]),
                AfterAttempt::Failed => {
                    let reason = if a.outcome == AttemptOutcome::Permanent {
                        "permanent"
                    } else {
                        "attempts_exhausted"
                    };
                    m.failed.add(1, &[KeyValue::new("reason", reason)]);
                }
                AfterAttempt::RetryAt(_) => {}
            }
        }
        match f.after {
            AfterAttempt::Sent => tracing::debug!(code = a.smtp_code, "mail sent"),
            AfterAttempt::RetryAt(at) => {
                tracing::warn!(code = a.smtp_code, error = a.error, %at, "mail send failed; will retry")
            }
            AfterAttempt::Failed => {
                tracing::error!(code = a.smtp_code, error = a.error, "mail failed for good")
            }
        }
    }

    /// The wait after the `attempt`-th failure: doubling from the base,
    /// capped, ±20% jitter.
    pub fn backoff(&self, attempt: i64) -> Duration {
        backoff(&self.config, attempt, &mut rand::rng())
    }

    /// How often finished mail is purged and secret bodies erased:
    /// [`PURGE_EVERY`], or more often when the secret retention is shorter,
    /// so that no body outlives it by more than half.
    fn purge_every(&self) -> Duration {
        PURGE_EVERY
            .min(self.config.secret_retention / 2)
            .max(Duration::from_millis(100))
    }

    /// Erases the bodies of secret-bearing mail past their retention and
    /// deletes finished mail past its own, a batch per statement so that no
    /// statement holds many rows at once.
    async fn purge(&self, now: DateTime<Utc>, stop: &CancellationToken) {
        // A retention reaching back before the calendar begins keeps
        // everything.
        let before = |retention: Duration| {
            chrono::Duration::from_std(retention)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
        };
        if let Some(before) = before(self.config.secret_retention) {
            let erased = in_batches(stop, "erase the bodies of secret-bearing mail", || {
                self.db.mail().erase_secret_bodies(before, now, PURGE_BATCH)
            })
            .await;
            if erased > 0 {
                tracing::info!(erased, retention = ?self.config.secret_retention, "erased the bodies of delivered secret-bearing mail");
            }
        }
        if let Some(before) = before(self.config.retention) {
            let purged = in_batches(stop, "delete old mail", || {
                self.db.mail().purge_finished_mail(before, PURGE_BATCH)
            })
            .await;
            if purged > 0 {
                tracing::info!(purged, retention = ?self.config.retention, "deleted finished mail past its retention");
                if let Some(m) = &self.metrics {
                    m.purged.add(purged, &[]);
                }
            }
        }
    }

    async fn refresh_queue_stats(&self, now: DateTime<Utc>) {
        match self.db.mail().mail_queue_stats().await {
            Ok(stats) => {
                self.queue.depth.store(stats.depth, Ordering::Relaxed);
                let age = stats
                    .oldest_pending
                    .map_or(0, |t| (now - t).num_milliseconds().max(0));
                self.queue.oldest_age_ms.store(age, Ordering::Relaxed);
            }
            Err(err) => tracing::warn!(%err, "cannot read mail queue stats"),
        }
    }
}

/// Runs a batched statement until a batch comes back short; returns how
/// many rows it changed in all.
async fn in_batches<F, Fut>(stop: &CancellationToken, what: &str, mut batch: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = turnbase_store::StoreResult<u64>>,
{
    let mut total = 0;
    while !stop.is_cancelled() {
        match batch().await {
            Ok(n) => {
                total += n;
                if n < u64::try_from(PURGE_BATCH).unwrap_or(u64::MAX) {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot {what}; trying again later");
                break;
            }
        }
    }
    total
}

/// How often the queue gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(5);

fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

/// One sending slot as a worker job: its lease owner, the batch it claimed
/// ahead, and the recorder beside it.
struct Slot {
    worker: Arc<MailWorker>,
    owner: String,
    ahead: tokio::sync::Mutex<Option<Batch>>,
    records: std::sync::Mutex<Option<mpsc::Sender<Vec<Finished>>>>,
    recorder: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Slot {
    fn open(worker: Arc<MailWorker>, owner: String) -> Slot {
        let (records, mut pending) = mpsc::channel::<Vec<Finished>>(RECORD_QUEUE);
        let recording = {
            let (worker, owner) = (worker.clone(), owner.clone());
            tokio::spawn(async move {
                while let Some(chunk) = pending.recv().await {
                    if let Err(err) = worker.record(&owner, &chunk).await {
                        // The rows stay leased; once the lease ends they
                        // are claimed and sent again (at-least-once).
                        tracing::error!(error = %format!("{err:#}"), "cannot record mail attempts");
                    }
                }
            })
        };
        Slot {
            worker,
            owner,
            ahead: tokio::sync::Mutex::new(None),
            records: std::sync::Mutex::new(Some(records)),
            recorder: tokio::sync::Mutex::new(Some(recording)),
        }
    }
}

#[async_trait::async_trait]
impl Job for Slot {
    fn name(&self) -> &'static str {
        "mail-worker"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let records = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(records) = records else {
            return Ok(Outcome::Idle { next_due: None });
        };
        let mut ahead = self.ahead.lock().await;
        self.worker
            .step(now, &self.owner, &mut ahead, stop, &records)
            .await
    }

    /// Hands back mail claimed ahead, unspent, and lets the recorder write
    /// what is queued.
    async fn stopped(&self, now: DateTime<Utc>) -> anyhow::Result<()> {
        if let Some(batch) = self.ahead.lock().await.take() {
            let store = self.worker.db.mail();
            for mail in batch.mails {
                if let Err(err) = store.release_mail(mail.id, &self.owner, now).await {
                    tracing::warn!(%err, mail_id = %mail.id, "cannot hand back mail; its lease will run out");
                }
            }
        }
        // Closing the channel lets the recorder finish what is queued.
        drop(
            self.records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let recorder = self.recorder.lock().await.take();
        if let Some(recorder) = recorder {
            recorder.await?;
        }
        Ok(())
    }
}

/// The worker's upkeep as a job: the queue gauges every few seconds,
/// purging and erasing when due.
struct Housekeeping {
    worker: Arc<MailWorker>,
}

impl Housekeeping {
    fn every(&self) -> Duration {
        STATS_EVERY.min(self.worker.purge_every())
    }
}

#[async_trait::async_trait]
impl Job for Housekeeping {
    fn name(&self) -> &'static str {
        "mail-housekeeping"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        self.worker.refresh_queue_stats(now).await;
        let mut next = self.worker.next_purge.lock().await;
        if next.is_none_or(|at| now >= at) {
            self.worker.purge(now, stop).await;
            *next = Some(later(now, self.worker.purge_every()));
        }
        Ok(Outcome::Idle {
            next_due: Some(later(now, self.every())),
        })
    }
}

/// Hands a chunk of finished attempts to the slot's recorder.
async fn queue_record(
    records: &mpsc::Sender<Vec<Finished>>,
    finished: &mut Vec<Finished>,
) -> anyhow::Result<()> {
    if finished.is_empty() {
        return Ok(());
    }
    records
        .send(std::mem::take(finished))
        .await
        .map_err(|_| anyhow::anyhow!("the attempt recorder stopped"))
}

/// The wait after the `attempt`-th failure of a mail: the one backoff of
/// every retrier, from the worker's base and cap.
pub fn backoff(config: &WorkerConfig, attempt: i64, rng: &mut impl rand::Rng) -> Duration {
    let failures = u32::try_from(attempt.max(0)).unwrap_or(u32::MAX);
    Backoff::new(config.retry_base, config.retry_max).delay(failures, rng)
}

impl WorkerMetrics {
    fn new(meter: &Meter, queue: Arc<QueueGauges>) -> Self {
        let depth_source = queue.clone();
        Self {
            sent: meter
                .u64_counter("mail_sent")
                .with_description("Mails the relay accepted")
                .build(),
            purged: meter
                .u64_counter("mail_purged")
                .with_description("Finished mails deleted after their retention")
                .build(),
            failed: meter
                .u64_counter("mail_failed")
                .with_description("Mails given up on, by reason")
                .build(),
            duration: meter
                .f64_histogram("mail_attempt_duration")
                .with_unit("s")
                .with_description("Time of one delivery attempt")
                .with_boundaries(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .build(),
            _depth: meter
                .i64_observable_gauge("mail_queue_depth")
                .with_description("Mails waiting or being sent")
                .with_callback(move |o| o.observe(depth_source.depth.load(Ordering::Relaxed), &[]))
                .build(),
            _oldest: meter
                .f64_observable_gauge("mail_oldest_pending_age")
                .with_unit("s")
                .with_description("Age of the oldest mail not yet sent")
                .with_callback(move |o| {
                    o.observe(
                        queue.oldest_age_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                        &[],
                    )
                })
                .build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let config = WorkerConfig {
            lease: Duration::from_secs(300),
            max_attempts: 10,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            concurrency: 1,
            poll_interval: Duration::from_secs(1),
            claim_batch: 1,
            retention: Duration::from_secs(86_400),
            secret_retention: Duration::from_secs(3600),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for (attempt, step) in [
            (1, 30u64),
            (2, 60),
            (3, 120),
            (7, 1920),
            (8, 3600),
            (50, 3600),
        ] {
            let d = backoff(&config, attempt, &mut rng).as_secs_f64();
            let step = step as f64;
            assert!(
                d >= step * 0.8 && d <= step * 1.2,
                "attempt {attempt}: {d} vs {step}"
            );
        }
    }
}
