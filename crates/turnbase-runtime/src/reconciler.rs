//! The reconciler: every `BACKEND_RUNTIME_RECONCILE_INTERVAL` it walks the
//! `ready` records. An engine whose game ended gets a stop job; an engine
//! of a running game that does not answer is started again (found through
//! its pid file, or a new process on the same data folder, where the
//! engine finds every game it hosted: no turn is lost or doubled, as each
//! answered change was on disk first), its new address recorded and the
//! restart counted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use turnbase_core::worker::{Job, Outcome, Runner};
use turnbase_store::runtime::{JobKind, RecordState, RuntimeRecord};

use crate::Runtime;

/// Records looked at per pass.
const BATCH: i64 = 10_000;

pub struct Reconciler {
    runtime: Runtime,
}

#[async_trait::async_trait]
impl Job for Reconciler {
    fn name(&self) -> &'static str {
        "runtime-reconciler"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        _stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        pass(&self.runtime).await?;
        let every = chrono::Duration::from_std(self.runtime.inner.config.reconcile_interval)
            .unwrap_or(chrono::Duration::MAX);
        Ok(Outcome::Idle {
            next_due: Some(now + every),
        })
    }
}

/// With the Docker driver, the containers labelled as ours against the
/// records: a container of a known game without a record is adopted (its
/// record written; stopped if the game has ended), and a `ready` record
/// whose container is gone (removed by hand) is repaired when its game
/// runs — a new container on the game's volume — or marked removed.
async fn containers(runtime: &Runtime) -> anyhow::Result<()> {
    let crate::Driver::Docker(docker) = &runtime.inner.driver else {
        return Ok(());
    };
    let inner = &runtime.inner;
    let listed = docker.list().await;
    if let Some(flag) = inner.docker_ready.get() {
        flag.set(listed.is_ok());
    }
    let listed = listed?;
    let store = inner.db.runtime();
    for container in &listed {
        if store.runtime_record(container.game).await?.is_some() {
            continue;
        }
        let Ok(game) = inner.db.lobby().game(container.game).await else {
            tracing::warn!(game = %container.game, "reconciler: a container of ours for a game this database does not know; left alone");
            continue;
        };
        let now = (inner.clock)();
        let record = RuntimeRecord {
            game_id: game.id,
            engine: container.engine.clone(),
            driver: "docker".into(),
            placement: "per_game".into(),
            address: None,
            handle: None,
            state: if game.state.is_over() {
                RecordState::Stopped
            } else {
                RecordState::Ready
            },
            seed: 0,
            restarts: 0,
            last_health_at: None,
            last_error: Some("adopted by the reconciler".into()),
            created_at: now,
            updated_at: now,
        };
        store.put_runtime_record(&record).await?;
        if game.state.is_over() {
            docker.stop(game.id).await;
        }
        tracing::warn!(game = %game.id, "reconciler: adopted an unrecorded container");
    }
    for record in store
        .runtime_records(Some(RecordState::Ready), BATCH)
        .await?
    {
        if record.driver != "docker" || listed.iter().any(|c| c.game == record.game_id) {
            continue;
        }
        let game = inner.db.lobby().game(record.game_id).await?;
        if game.state.is_over() {
            let mut gone = record;
            gone.state = RecordState::Removed;
            gone.updated_at = (inner.clock)();
            store.put_runtime_record(&gone).await?;
            tracing::warn!(game = %game.id, "reconciler: the container of an ended game is gone; marked removed");
        } else {
            tracing::warn!(game = %game.id, "reconciler: the container of a running game is gone; making a new one");
            repair(runtime, record).await?;
        }
    }
    Ok(())
}

/// One pass over the ready records (and the gauges' figures), by the one
/// backend holding the reconciler's lease: two reconcilers on one
/// database would both repair the same engine.
pub async fn pass(runtime: &Runtime) -> anyhow::Result<()> {
    let inner = &runtime.inner;
    let now = (inner.clock)();
    let hold = chrono::Duration::from_std(inner.config.reconcile_interval * 3)
        .unwrap_or(chrono::Duration::MAX);
    if !inner
        .db
        .runtime()
        .take_worker_lease("runtime-reconciler", &inner.owner, now, now + hold)
        .await?
    {
        tracing::debug!("reconciler: another backend holds the lease");
        return Ok(());
    }
    if let Err(err) = containers(runtime).await {
        tracing::error!(error = %format!("{err:#}"), "reconciler: comparing containers with records failed");
    }
    let store = inner.db.runtime();
    inner.gauges.depth.store(
        store.runtime_queue_depth().await?,
        std::sync::atomic::Ordering::Relaxed,
    );
    let counts = store.runtime_counts().await?;
    if let Ok(mut engines) = inner.gauges.engines.lock() {
        *engines = counts;
    }
    let records = inner
        .db
        .runtime()
        .runtime_records(Some(RecordState::Ready), BATCH)
        .await?;
    for record in records {
        let game = match inner.db.lobby().game(record.game_id).await {
            Ok(game) => game,
            Err(err) => {
                tracing::warn!(game = %record.game_id, error = %err, "reconciler: the game cannot be read");
                continue;
            }
        };
        if game.state.is_over() {
            let now = (inner.clock)();
            if inner
                .db
                .runtime()
                .queue_runtime_job(record.game_id, JobKind::Stop, now, now)
                .await?
            {
                runtime.wake();
            }
            continue;
        }
        let answers = match &record.address {
            Some(url) => inner.client.healthy(url).await,
            None => false,
        };
        if answers {
            continue;
        }
        match repair(runtime, record).await {
            Ok(record) => {
                tracing::warn!(game = %record.game_id, url = ?record.address, restarts = record.restarts, "engine restarted");
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "reconciler: the engine could not be restarted")
            }
        }
    }
    Ok(())
}

/// Starts a game's engine again (or finds it already restarted for
/// another game of a shared engine) and records where it is now.
pub(crate) async fn repair(
    runtime: &Runtime,
    mut record: RuntimeRecord,
) -> anyhow::Result<RuntimeRecord> {
    let inner = &runtime.inner;
    let running = runtime
        .ensure_engine(&record.engine, record.game_id)
        .await?;
    let deadline = tokio::time::Instant::now() + inner.config.start_timeout;
    while !inner.client.healthy(&running.url).await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the restarted engine did not answer within {:?}",
            inner.config.start_timeout
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = (inner.clock)();
    // Called only for an engine that did not answer (or an admin's
    // restart): the game's engine was down, whatever it is now.
    record.restarts += 1;
    inner.metrics.restarts.add(1, &[]);
    record.address = Some(running.url);
    record.handle = Some(running.handle);
    record.last_health_at = Some(now);
    record.updated_at = now;
    inner.db.runtime().put_runtime_record(&record).await?;
    Ok(record)
}

/// Reconciles now and then every interval until stopped.
pub async fn run_reconciler(runtime: Runtime, stop: CancellationToken) -> anyhow::Result<()> {
    let interval = runtime.inner.config.reconcile_interval;
    let clock = runtime.clock();
    let job = Arc::new(Reconciler { runtime });
    Runner::new(interval).with_clock(clock).run(job, stop).await
}
