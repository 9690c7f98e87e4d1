//! Database outages as requests meet them: answered 503
//! `database_unavailable` with `Retry-After`, and logged once per outage
//! (when the first request meets it, and when the database answers again)
//! rather than as an error line per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::metrics::{Counter, Meter};
use turnbase_store::Database;

/// Marks an answer given because the database could not be reached.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseUnavailable;

/// How often the database is tried while it is away.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the requests of this process currently find the database away.
pub struct Outage {
    db: Database,
    down: AtomicBool,
    outages: Counter<u64>,
}

impl Outage {
    pub fn new(db: Database, meter: &Meter) -> Arc<Outage> {
        Arc::new(Outage {
            db,
            down: AtomicBool::new(false),
            outages: meter
                .u64_counter("database_outages")
                .with_description("Times requests found the database unavailable (once per outage)")
                .build(),
        })
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// A request met the outage: the first one logs it and starts probing
    /// the database until it answers, which ends the outage.
    fn report(self: &Arc<Self>) {
        if self.down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.outages.add(1, &[]);
        tracing::warn!(
            "the database is unavailable; requests that need it are answered 503 database_unavailable until it is back"
        );
        let outage = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if let Ok(Ok(())) = tokio::time::timeout(PROBE_TIMEOUT, outage.db.ping()).await {
                    outage.down.store(false, Ordering::SeqCst);
                    tracing::info!(
                        after = ?started.elapsed(),
                        "the database answers again"
                    );
                    return;
                }
            }
        });
    }
}

/// Notes answers marked [`DatabaseUnavailable`].
pub async fn watch(State(outage): State<Arc<Outage>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.extensions().get::<DatabaseUnavailable>().is_some() {
        outage.report();
    }
    response
}
