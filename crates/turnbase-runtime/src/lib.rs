//! Turnbase's game runtime: gives each game that closed its enrolment an
//! engine, initialises it with the seats, and keeps it running while the
//! game runs.
//!
//! Work arrives as rows of the durable job queue (the lobby's move to
//! `starting` queues a start job in the same transaction; an ending queues
//! a stop job). A pool of worker slots claims them under a lease
//! ([`worker::JobWorker`]); the [`reconciler::Reconciler`] compares the
//! engines with the records every interval and restarts engines of running
//! games that stopped answering. Outcomes go back to the lobby through
//! [`GameOutcomes`], which the backend's wiring implements.

pub mod client;
pub mod docker;
pub mod driver;
pub mod reconciler;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use turnbase_store::Database;
use turnbase_store::runtime::RuntimeRecord;
use uuid::Uuid;

pub use client::{Answer, CallError, EngineClient};
pub use driver::{DriverError, EngineCommand, Placement, ProcessDriver, Running};

/// Why an engine could not be had.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("the {0} engine kind is not registered, or not runnable by this driver")]
    NotRunnable(String),
    #[error(transparent)]
    Driver(#[from] DriverError),
}
pub use turnbase_core::worker::Clock;

/// How the runtime runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub placement: Placement,
    /// Where engines keep their folders.
    pub engines_dir: PathBuf,
    /// Jobs run at once.
    pub pool_size: usize,
    /// Jobs queued or running beyond which starting is refused (503).
    pub queue_size: i64,
    /// How long an engine may take to answer after it was started.
    pub start_timeout: Duration,
    /// Attempts at a start before the game is given back as failed.
    pub start_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub reconcile_interval: Duration,
    /// How long a worker holds a job before another may take it over.
    pub lease: Duration,
    /// How long a stopped game's engine data is kept before it is removed
    /// (the turn history stays in the backend).
    pub keep_finished: Duration,
}

/// What the runtime tells the lobby. The backend implements it over the
/// lobby service; the runtime never depends on the lobby crate.
#[async_trait::async_trait]
pub trait GameOutcomes: Send + Sync {
    /// The game's engine runs, initialised with its seats.
    async fn began(&self, game: Uuid) -> anyhow::Result<()>;
    /// The runtime gave up starting the game's engine.
    async fn start_failed(&self, game: Uuid, reason: &str) -> anyhow::Result<()>;
}

/// How the runtime runs an engine kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineSpec {
    /// A program (the `process` driver).
    Binary(EngineCommand),
    /// A local image (the `docker` driver).
    Image(String),
}

/// Engine kinds the runtime can run, by name.
pub type Commands = HashMap<String, EngineSpec>;

/// Which driver runs the engines.
#[derive(Clone)]
pub enum DriverChoice {
    Process,
    Docker(Arc<docker::DockerDriver>),
}

/// The driver in use.
pub(crate) enum Driver {
    Process(Arc<ProcessDriver>),
    Docker(Arc<docker::DockerDriver>),
}

pub(crate) struct Metrics {
    pub jobs: Counter<u64>,
    pub restarts: Counter<u64>,
    _depth: opentelemetry::metrics::ObservableGauge<i64>,
    _engines: opentelemetry::metrics::ObservableGauge<i64>,
}

/// Figures the reconciler refreshes each pass for the gauges.
#[derive(Default)]
pub(crate) struct Gauges {
    pub depth: std::sync::atomic::AtomicI64,
    pub engines: std::sync::Mutex<Vec<(turnbase_store::runtime::RecordState, i64)>>,
}

/// The runtime's parts, shared by the worker, the reconciler and the
/// admin API.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub db: Database,
    pub config: RuntimeConfig,
    pub commands: Commands,
    pub driver: Driver,
    pub client: EngineClient,
    pub outcomes: Arc<dyn GameOutcomes>,
    pub clock: Clock,
    pub metrics: Metrics,
    pub gauges: Arc<Gauges>,
    pub wake: Arc<tokio::sync::Notify>,
    /// Set while the Docker engine answers (the `docker` driver only).
    pub docker_ready: std::sync::OnceLock<turnbase_core::readiness::ReadyFlag>,
    /// Who holds leases: this process.
    pub owner: String,
}

impl Runtime {
    pub fn new(
        db: Database,
        config: RuntimeConfig,
        commands: Commands,
        driver: DriverChoice,
        outcomes: Arc<dyn GameOutcomes>,
        clock: Clock,
        meter: &Meter,
    ) -> Runtime {
        let client = EngineClient::new(meter);
        let driver = match driver {
            DriverChoice::Process => Driver::Process(ProcessDriver::new(
                config.engines_dir.clone(),
                client.clone(),
                config.start_timeout,
            )),
            DriverChoice::Docker(docker) => Driver::Docker(docker),
        };
        let gauges = Arc::new(Gauges::default());
        let (depth_source, engines_source) = (gauges.clone(), gauges.clone());
        let metrics = Metrics {
            jobs: meter
                .u64_counter("runtime_jobs")
                .with_description("Runtime job attempts, by kind and outcome")
                .build(),
            restarts: meter
                .u64_counter("runtime_engine_restarts")
                .with_description("Engines of running games restarted by the reconciler")
                .build(),
            _depth: meter
                .i64_observable_gauge("runtime_queue_depth")
                .with_description("Runtime jobs queued or running, as of the last reconcile")
                .with_callback(move |o| {
                    o.observe(
                        depth_source
                            .depth
                            .load(std::sync::atomic::Ordering::Relaxed),
                        &[],
                    )
                })
                .build(),
            _engines: meter
                .i64_observable_gauge("runtime_engines")
                .with_description("Game engine records by state, as of the last reconcile")
                .with_callback(move |o| {
                    let counts = engines_source
                        .engines
                        .lock()
                        .map(|c| c.clone())
                        .unwrap_or_default();
                    for state in turnbase_store::runtime::RecordState::ALL {
                        let n = counts
                            .iter()
                            .find(|(s, _)| s == state)
                            .map_or(0, |(_, n)| *n);
                        o.observe(n, &[KeyValue::new("state", state.as_str())]);
                    }
                })
                .build(),
        };
        Runtime {
            inner: Arc::new(Inner {
                db,
                config,
                commands,
                driver,
                client,
                outcomes,
                clock,
                metrics,
                gauges,
                wake: Arc::new(tokio::sync::Notify::new()),
                docker_ready: std::sync::OnceLock::new(),
                owner: format!("runtime-{}-{}", std::process::id(), Uuid::now_v7().simple()),
            }),
        }
    }

    /// With the Docker driver: a readiness flag the reconciler keeps set
    /// while the Docker engine answers (`/readyz` reports `docker`).
    pub fn watch_docker(&self, flag: turnbase_core::readiness::ReadyFlag) {
        if matches!(self.inner.driver, Driver::Docker(_)) {
            flag.set(true);
            let _ = self.inner.docker_ready.set(flag);
        }
    }

    /// Wakes the workers (a job was queued).
    pub fn wake(&self) {
        self.inner.wake.notify_waiters();
        self.inner.wake.notify_one();
    }

    /// The signal the workers' runner waits on.
    pub fn wake_signal(&self) -> Arc<tokio::sync::Notify> {
        self.inner.wake.clone()
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// How each engine kind is run.
    pub fn commands(&self) -> &Commands {
        &self.inner.commands
    }

    pub fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    /// Whether another start may be queued now.
    pub async fn has_room(&self) -> anyhow::Result<bool> {
        let depth = self.inner.db.runtime().runtime_queue_depth().await?;
        Ok(depth < self.inner.config.queue_size)
    }

    /// Where games run: the configured placement for processes; a
    /// container per game with Docker.
    pub fn placement(&self) -> Placement {
        match self.inner.driver {
            Driver::Process(_) => self.inner.config.placement,
            Driver::Docker(_) => Placement::PerGame,
        }
    }

    pub(crate) fn driver_name(&self) -> &'static str {
        match &self.inner.driver {
            Driver::Process(p) => p.name(),
            Driver::Docker(d) => d.name(),
        }
    }

    /// The engine of `engine`'s kind for `game`, started or found.
    pub(crate) async fn ensure_engine(
        &self,
        engine: &str,
        game: Uuid,
    ) -> Result<Running, EnsureError> {
        let spec = self
            .inner
            .commands
            .get(engine)
            .ok_or_else(|| EnsureError::NotRunnable(engine.to_string()))?;
        let running = match (&self.inner.driver, spec) {
            (Driver::Process(p), EngineSpec::Binary(command)) => {
                let key = match self.inner.config.placement {
                    Placement::Shared => engine.to_string(),
                    Placement::PerGame => game.to_string(),
                };
                p.ensure(&key, command).await?
            }
            (Driver::Docker(d), EngineSpec::Image(image)) => d.ensure(game, engine, image).await?,
            _ => return Err(EnsureError::NotRunnable(engine.to_string())),
        };
        Ok(running)
    }

    /// Stops a game's engine where it is the game's own (a shared process
    /// keeps serving its kind's other games).
    pub(crate) async fn stop_engine(&self, game: Uuid) {
        match &self.inner.driver {
            Driver::Process(p) if self.inner.config.placement == Placement::PerGame => {
                p.stop(&game.to_string()).await;
            }
            Driver::Process(_) => {}
            Driver::Docker(d) => d.stop(game).await,
        }
    }

    /// Removes a stopped game engine's data where it is the game's own.
    pub(crate) async fn remove_engine(&self, game: Uuid) -> Result<(), DriverError> {
        match &self.inner.driver {
            Driver::Process(p) if self.inner.config.placement == Placement::PerGame => {
                p.remove(&game.to_string()).await.map_err(DriverError::Io)
            }
            Driver::Process(_) => Ok(()),
            Driver::Docker(d) => d.remove(game).await,
        }
    }

    /// Forces the game's engine down so that the next ensure starts it
    /// again (an admin restart).
    async fn force_down(&self, engine: &str, game: Uuid) {
        match &self.inner.driver {
            Driver::Process(p) => {
                let key = match self.inner.config.placement {
                    Placement::Shared => engine.to_string(),
                    Placement::PerGame => game.to_string(),
                };
                p.stop(&key).await;
            }
            Driver::Docker(d) => d.stop(game).await,
        }
    }

    /// Stops every engine process this backend started (the backend is
    /// stopping). Containers keep running: Docker restarts them, and the
    /// next backend finds them by name.
    pub async fn shutdown(&self) {
        if let Driver::Process(p) = &self.inner.driver {
            p.shutdown().await;
        }
    }

    /// Records, optionally of one state (admins).
    pub async fn records(
        &self,
        state: Option<turnbase_store::runtime::RecordState>,
        limit: i64,
    ) -> anyhow::Result<Vec<RuntimeRecord>> {
        Ok(self
            .inner
            .db
            .runtime()
            .runtime_records(state, limit)
            .await?)
    }

    /// A game's record and its jobs, if it has one (admins).
    pub async fn record(
        &self,
        game: Uuid,
    ) -> anyhow::Result<Option<(RuntimeRecord, Vec<turnbase_store::runtime::JobRow>)>> {
        let store = self.inner.db.runtime();
        let Some(record) = store.runtime_record(game).await? else {
            return Ok(None);
        };
        Ok(Some((record, store.runtime_jobs(game).await?)))
    }

    /// Restarts a game's engine now and writes `audit` (admins): the same
    /// as the reconciler's repair, whether or not the engine answers.
    pub async fn restart_audited(
        &self,
        game: Uuid,
        audit: impl FnOnce(&RuntimeRecord) -> turnbase_store::accounts::AuditEntry,
    ) -> anyhow::Result<RuntimeRecord> {
        let record = self.restart(game).await?;
        self.inner
            .db
            .accounts()
            .record_audit(&audit(&record))
            .await?;
        Ok(record)
    }

    /// Restarts a game's engine now: the same as the reconciler's repair,
    /// whether or not it answers.
    pub async fn restart(&self, game: Uuid) -> anyhow::Result<RuntimeRecord> {
        let record = self
            .inner
            .db
            .runtime()
            .runtime_record(game)
            .await?
            .ok_or_else(|| anyhow::anyhow!("game {game} has no engine"))?;
        self.force_down(&record.engine, game).await;
        reconciler::repair(self, record).await
    }

    pub(crate) fn count_job(&self, kind: &'static str, outcome: &'static str) {
        self.inner.metrics.jobs.add(
            1,
            &[
                KeyValue::new("kind", kind),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}
