//! The runtime's worker pool: `pool_size` slots of one core worker `Job`,
//! each claiming one job at a time from the durable queue under a lease.
//!
//! A start job: the game must still be `starting`; its record (with the
//! seed, chosen once) is written before the engine is touched; the engine
//! is started or found, must answer `/healthz` within the start timeout and
//! serve a manifest of this protocol and kind; `init` gets the seats (a
//! retry sends the same body, which the engine answers the same way); the
//! record becomes `ready` and the lobby hears the game began. A failure is
//! retried with backoff until the attempts run out; then the record is
//! `failed` and the lobby gives the game back to its owner as
//! `start_failed` with the reason. A stop job stops a `per_game` engine
//! (a shared one keeps serving the kind's other games).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;
use turnbase_core::backoff::Backoff;
use turnbase_core::worker::{Job, Outcome, Runner};
use turnbase_engine_kit::protocol::{InitRequest, PROTOCOL_VERSION, Player};
use turnbase_store::lobby::{GameState, SeatStatus};
use turnbase_store::runtime::{ClaimedJob, JobEnd, JobKind, RecordState, RuntimeRecord};
use uuid::Uuid;

use crate::Runtime;

/// Why an attempt failed, and whether trying again can help.
#[derive(Debug)]
pub(crate) enum Failure {
    Retry(String),
    Permanent(String),
}

pub struct JobWorker {
    runtime: Runtime,
}

#[async_trait::async_trait]
impl Job for JobWorker {
    fn name(&self) -> &'static str {
        "runtime-worker"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let inner = &self.runtime.inner;
        let store = inner.db.runtime();
        let claimed = store
            .claim_runtime_jobs(now, inner.config.lease, &inner.owner, 1)
            .await?;
        let Some(job) = claimed.into_iter().next() else {
            return Ok(Outcome::Idle { next_due: None });
        };
        let span = tracing::info_span!("runtime.job", job = %job.id, game = %job.game_id, kind = job.kind.as_str());
        let run = tracing::Instrument::instrument(self.run(&job), span);
        let end = tokio::select! {
            end = run => end,
            () = stop.cancelled() => {
                // Handed back without spending an attempt.
                store.release_runtime_job(job.id, &inner.owner, (inner.clock)()).await?;
                return Ok(Outcome::Done);
            }
        };
        let finished_at = (inner.clock)();
        let (end, outcome) = match end {
            Ok(()) => (JobEnd::Done, "done"),
            Err(Failure::Retry(reason)) if job.attempts + 1 < i64::from(self.attempts()) => {
                let delay = self.backoff(job.attempts);
                let at = finished_at + chrono::Duration::from_std(delay).unwrap_or_default();
                tracing::warn!(game = %job.game_id, error = %reason, retry_in = ?delay, "runtime job failed; retrying");
                (JobEnd::RetryAt(at, reason), "retry")
            }
            Err(Failure::Retry(reason) | Failure::Permanent(reason)) => {
                tracing::error!(game = %job.game_id, error = %reason, "runtime job failed for good");
                self.gave_up(&job, &reason).await;
                (JobEnd::Failed(reason), "failed")
            }
        };
        self.runtime.count_job(job.kind.as_str(), outcome);
        if !store
            .finish_runtime_job(job.id, &inner.owner, &end, finished_at)
            .await?
        {
            tracing::warn!(job = %job.id, "the job's lease ran out before it finished; another worker has it");
        }
        Ok(Outcome::Done)
    }
}

impl JobWorker {
    fn attempts(&self) -> u32 {
        self.runtime.inner.config.start_attempts.max(1)
    }

    fn backoff(&self, attempts: i64) -> Duration {
        let config = &self.runtime.inner.config;
        let backoff = Backoff::new(config.retry_base, config.retry_max);
        backoff.delay(
            u32::try_from(attempts).unwrap_or(u32::MAX),
            &mut rand::rng(),
        )
    }

    async fn run(&self, job: &ClaimedJob) -> Result<(), Failure> {
        match job.kind {
            JobKind::Start => self.start(job.game_id).await,
            JobKind::Stop => self.stop(job.game_id).await,
            JobKind::Remove => self.remove(job.game_id).await,
        }
    }

    /// What follows a job that ran out of attempts.
    async fn gave_up(&self, job: &ClaimedJob, reason: &str) {
        if job.kind != JobKind::Start {
            return;
        }
        let inner = &self.runtime.inner;
        // Nothing is left running for a game that did not start.
        self.runtime.stop_engine(job.game_id).await;
        if let Ok(Some(mut record)) = inner.db.runtime().runtime_record(job.game_id).await {
            record.state = RecordState::Failed;
            record.last_error = Some(reason.to_string());
            record.updated_at = (inner.clock)();
            if let Err(err) = inner.db.runtime().put_runtime_record(&record).await {
                tracing::warn!(error = %err, "the failed record was not written");
            }
        }
        if let Err(err) = inner.outcomes.start_failed(job.game_id, reason).await {
            tracing::warn!(game = %job.game_id, error = %err, "the lobby did not take the failed start");
        }
    }

    async fn start(&self, game_id: Uuid) -> Result<(), Failure> {
        let inner = &self.runtime.inner;
        let lobby = inner.db.lobby();
        let game = lobby.game(game_id).await.map_err(retry)?;
        if game.state != GameState::Starting {
            // Cancelled (or started) meanwhile: nothing to do.
            return Ok(());
        }
        let now = (inner.clock)();
        let mut record = match inner
            .db
            .runtime()
            .runtime_record(game_id)
            .await
            .map_err(retry)?
        {
            Some(r) => r,
            None => RuntimeRecord {
                game_id,
                engine: game.engine.clone(),
                driver: self.runtime.driver_name().to_string(),
                placement: self.runtime.placement().as_str().to_string(),
                address: None,
                handle: None,
                state: RecordState::Starting,
                seed: rand::rng().random::<i64>(),
                restarts: 0,
                last_health_at: None,
                last_error: None,
                created_at: now,
                updated_at: now,
            },
        };
        record.state = RecordState::Starting;
        record.updated_at = now;
        inner
            .db
            .runtime()
            .put_runtime_record(&record)
            .await
            .map_err(retry)?;

        let running = self
            .runtime
            .ensure_engine(&game.engine, game_id)
            .await
            .map_err(|e| match e {
                crate::EnsureError::NotRunnable(_) => Failure::Permanent(e.to_string()),
                crate::EnsureError::Driver(d) => Failure::Retry(d.to_string()),
            })?;
        let deadline = tokio::time::Instant::now() + inner.config.start_timeout;
        while !inner.client.healthy(&running.url).await {
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::Retry(format!(
                    "the engine at {} did not answer /healthz within {:?}",
                    running.url, inner.config.start_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let manifest = inner
            .client
            .manifest(&running.url)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        if manifest.protocol != PROTOCOL_VERSION || manifest.kind != game.engine {
            return Err(Failure::Permanent(format!(
                "the engine serves {} (protocol {}), not {} (protocol {PROTOCOL_VERSION})",
                manifest.kind, manifest.protocol, game.engine
            )));
        }
        let seats = lobby.seats(game_id).await.map_err(retry)?;
        let players = seats
            .iter()
            .filter(|s| s.status == SeatStatus::Active || s.is_bot)
            .map(|s| Player {
                player_id: s.id.to_string(),
                name: s.race_name.clone(),
                bot: s.is_bot,
            })
            .collect();
        let settings = serde_json::from_str(&game.settings)
            .map_err(|e| Failure::Permanent(format!("the stored settings do not parse: {e}")))?;
        let body = InitRequest {
            seed: record.seed as u64,
            settings,
            players,
        };
        inner
            .client
            .init(&running.url, game_id, &body)
            .await
            .map_err(|e| match e {
                crate::CallError::Refused { status, .. } if (400..500).contains(&status) => {
                    Failure::Permanent(e.to_string())
                }
                other => Failure::Retry(other.to_string()),
            })?;
        let now = (inner.clock)();
        record.state = RecordState::Ready;
        record.address = Some(running.url);
        record.handle = Some(running.handle);
        record.last_health_at = Some(now);
        record.last_error = None;
        record.updated_at = now;
        inner
            .db
            .runtime()
            .put_runtime_record(&record)
            .await
            .map_err(retry)?;
        inner
            .outcomes
            .began(game_id)
            .await
            .map_err(|e| Failure::Retry(format!("the lobby did not take the start: {e:#}")))?;
        tracing::info!(game = %game_id, "game started");
        Ok(())
    }

    async fn stop(&self, game_id: Uuid) -> Result<(), Failure> {
        let inner = &self.runtime.inner;
        let Some(mut record) = inner
            .db
            .runtime()
            .runtime_record(game_id)
            .await
            .map_err(retry)?
        else {
            return Ok(());
        };
        self.runtime.stop_engine(game_id).await;
        let now = (inner.clock)();
        record.state = RecordState::Stopped;
        record.updated_at = now;
        inner
            .db
            .runtime()
            .put_runtime_record(&record)
            .await
            .map_err(retry)?;
        // The engine's data goes after the keep period.
        let keep =
            chrono::Duration::from_std(inner.config.keep_finished).unwrap_or(chrono::Duration::MAX);
        inner
            .db
            .runtime()
            .queue_runtime_job(game_id, JobKind::Remove, now + keep, now)
            .await
            .map_err(retry)?;
        Ok(())
    }

    async fn remove(&self, game_id: Uuid) -> Result<(), Failure> {
        let inner = &self.runtime.inner;
        let Some(mut record) = inner
            .db
            .runtime()
            .runtime_record(game_id)
            .await
            .map_err(retry)?
        else {
            return Ok(());
        };
        self.runtime
            .remove_engine(game_id)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        record.state = RecordState::Removed;
        record.updated_at = (inner.clock)();
        inner
            .db
            .runtime()
            .put_runtime_record(&record)
            .await
            .map_err(retry)?;
        Ok(())
    }
}

fn retry(err: impl std::fmt::Display) -> Failure {
    Failure::Retry(err.to_string())
}

/// Runs the pool until stopped: `pool_size` slots, woken when a job is
/// queued and polling every second otherwise.
pub async fn run_workers(runtime: Runtime, stop: CancellationToken) -> anyhow::Result<()> {
    let slots = runtime.inner.config.pool_size.max(1);
    let clock = runtime.clock();
    let wake = runtime.wake_signal();
    let job = Arc::new(JobWorker { runtime });
    Runner::new(Duration::from_secs(1))
        .with_clock(clock)
        .with_slots(slots)
        .with_wake(wake)
        .run(job, stop)
        .await
}
