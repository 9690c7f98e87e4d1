//! The lobby sweeper as a core worker job: every
//! `BACKEND_LOBBY_SWEEP_INTERVAL` it releases expired name reservations and
//! closes games whose enrolment deadline passed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use turnbase_core::worker::{Job, Outcome, Runner};

use crate::LobbyService;

pub struct Sweeper {
    service: LobbyService,
}

#[async_trait::async_trait]
impl Job for Sweeper {
    fn name(&self) -> &'static str {
        "lobby-sweeper"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        _stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let report = self.service.sweep().await?;
        if report.expired + report.started + report.cancelled > 0 {
            tracing::info!(
                expired = report.expired,
                started = report.started,
                cancelled = report.cancelled,
                "lobby sweep"
            );
        }
        let every = chrono::Duration::from_std(self.service.config().sweep_interval)
            .unwrap_or(chrono::Duration::MAX);
        Ok(Outcome::Idle {
            next_due: Some(now + every),
        })
    }
}

/// Sweeps now and then every interval until stopped.
pub async fn run_sweeper(service: LobbyService, stop: CancellationToken) -> anyhow::Result<()> {
    let interval = service.config().sweep_interval;
    let clock = service.clock();
    let job = Arc::new(Sweeper { service });
    Runner::new(interval).with_clock(clock).run(job, stop).await
}
