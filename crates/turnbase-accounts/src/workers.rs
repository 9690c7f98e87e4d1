//! The accounts service's background jobs, run by the core worker
//! [`Runner`]: the guest reaper and the flusher of in-memory counters and
//! last-seen times.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use turnbase_core::worker::{Job, Outcome, Runner};

use crate::AccountService;

/// Deletes guests older than the retention that hold no seat, at start and
/// then every interval.
pub struct GuestReaper {
    service: AccountService,
    retention: Duration,
    interval: Duration,
}

#[async_trait::async_trait]
impl Job for GuestReaper {
    fn name(&self) -> &'static str {
        "guest-reaper"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        _stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        match self.service.reap_guests(self.retention).await? {
            0 => tracing::debug!("guest reaper: nothing to delete"),
            n => tracing::info!(count = n, "guest reaper deleted abandoned guest accounts"),
        }
        Ok(Outcome::Idle {
            next_due: Some(now + every(self.interval)),
        })
    }
}

/// Writes sign-in counts and last-seen times every interval, and once
/// more when stopped, so that a clean shutdown loses no count.
pub struct Flusher {
    service: AccountService,
    interval: Duration,
    /// The first step only schedules: nothing was counted yet.
    started: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Job for Flusher {
    fn name(&self) -> &'static str {
        "accounts-flusher"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        _stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        if self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Counts that could not be written are kept for the next try.
            self.service.flush().await?;
        }
        Ok(Outcome::Idle {
            next_due: Some(now + every(self.interval)),
        })
    }

    async fn stopped(&self, _now: DateTime<Utc>) -> anyhow::Result<()> {
        self.service
            .flush()
            .await
            .map_err(|e| anyhow::anyhow!("final flush of sign-in counters: {e}"))
    }
}

fn every(interval: Duration) -> chrono::Duration {
    chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX)
}

/// Deletes abandoned guests now and then every `interval` until stopped.
pub async fn run_guest_reaper(
    service: AccountService,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let clock = service.clock();
    let job = Arc::new(GuestReaper {
        service,
        retention,
        interval,
    });
    Runner::new(interval).with_clock(clock).run(job, stop).await
}

/// Flushes every `interval`, and once more when stopped.
pub async fn run_flusher(
    service: AccountService,
    interval: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let clock = service.clock();
    let job = Arc::new(Flusher {
        service,
        interval,
        started: std::sync::atomic::AtomicBool::new(false),
    });
    Runner::new(interval).with_clock(clock).run(job, stop).await
}
