//! The accounts service's background loops: the guest reaper and the
//! flusher of in-memory counters and last-seen times.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::AccountService;

/// Deletes abandoned guests now and then every `interval` until stopped.
pub async fn run_guest_reaper(
    service: AccountService,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match service.reap_guests(retention).await {
            Ok(0) => tracing::debug!("guest reaper: nothing to delete"),
            Ok(n) => tracing::info!(count = n, "guest reaper deleted abandoned guest accounts"),
            Err(err) => tracing::warn!(error = %err, "guest reaper failed; will try again"),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Flushes every `interval`, and once more when stopped, so that a clean
/// shutdown loses no count.
pub async fn run_flusher(
    service: AccountService,
    interval: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(err) = service.flush().await {
            tracing::warn!(error = %err, "flushing sign-in counters failed; kept for the next try");
        }
    }
    service
        .flush()
        .await
        .map_err(|e| anyhow::anyhow!("final flush of sign-in counters: {e}"))
}
