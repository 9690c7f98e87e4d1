//! Wiring: starts the backend's components in the order of DESIGN section 2
//! and registers each with the lifecycle, which stops them in reverse.
//!
//! Adding a component is one `lifecycle.add(…)` or `lifecycle.spawn(…)` at
//! its place in the start order.

use std::net::SocketAddr;
use std::sync::Arc;

use turnbase_core::http::{HttpMetrics, bind};
use turnbase_core::lifecycle::{Lifecycle, ShutdownReport};
use turnbase_core::readiness::Readiness;
use turnbase_core::telemetry::Telemetry;
use turnbase_push::PushService;
use turnbase_store::{Database, InstanceInfo};

use crate::api::{self, AppState};
use crate::config::{Config, EngineSource, MailDelivery};

/// A started backend.
pub struct App {
    pub http_addr: SocketAddr,
    pub grpc_push_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub instance: InstanceInfo,
    pub readiness: Readiness,
    pub database: Database,
    pub push: PushService,
    pub mail: turnbase_mail::MailService,
    pub accounts: turnbase_accounts::AccountService,
    pub lobby: turnbase_lobby::LobbyService,
    pub runtime: turnbase_runtime::Runtime,
    pub turns: turnbase_turns::TurnService,
    pub notify: turnbase_notify::NotifyService,
    /// Whether requests find the database away right now.
    pub outage: Arc<api::outage::Outage>,
    lifecycle: Lifecycle,
}

/// Opens the database and applies migrations; used by `turnbase migrate`
/// and as the first storage step of [`App::start`].
pub async fn open_database(config: &Config) -> anyhow::Result<Database> {
    let options = config.database.options();
    tracing::info!(database = %options.describe(), "opening database");
    let db = Database::connect(&options).await?;
    match db.migrate().await {
        Ok(report) => {
            tracing::info!(
                applied = report.applied.len(),
                already = report.already.len(),
                "database schema is current"
            );
            Ok(db)
        }
        Err(err) => {
            db.close().await;
            Err(err.into())
        }
    }
}

impl App {
    /// Starts every component. On failure, whatever had started is stopped
    /// again before the error is returned.
    pub async fn start(
        config: Config,
        telemetry: Telemetry,
        version: &'static str,
    ) -> anyhow::Result<App> {
        let mut lifecycle = Lifecycle::new(config.shutdown_timeout);
        match Self::start_components(&config, telemetry, version, &mut lifecycle).await {
            Ok(parts) => Ok(App {
                http_addr: parts.http_addr,
                grpc_push_addr: parts.grpc_push_addr,
                push: parts.push,
                mail: parts.mail,
                accounts: parts.accounts,
                lobby: parts.lobby,
                runtime: parts.runtime,
                turns: parts.turns,
                notify: parts.notify,
                metrics_addr: parts.metrics_addr,
                instance: parts.instance,
                readiness: parts.readiness,
                database: parts.database,
                outage: parts.outage,
                lifecycle,
            }),
            Err(err) => {
                lifecycle.shutdown().await;
                Err(err)
            }
        }
    }

    async fn start_components(
        config: &Config,
        telemetry: Telemetry,
        version: &'static str,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<Started> {
        // Telemetry first, so it is flushed last.
        let t = telemetry.clone();
        lifecycle.add("telemetry", None, move || async move {
            tokio::task::spawn_blocking(move || t.shutdown()).await?
        });

        let (database, instance) = Self::start_storage(config, version, lifecycle).await?;
        let push = Self::start_push_service(config, &telemetry, lifecycle);
        // Domain services, in dependency order (geo, user, mail, auth, …),
        // and their workers read one clock.
        let clock = turnbase_core::worker::system_clock();
        let (mail, wake_mail) = Self::start_mail_service(&database, clock.clone(), &telemetry);
        let accounts = Self::start_accounts(
            config,
            &database,
            &mail,
            &push,
            clock.clone(),
            &telemetry,
            lifecycle,
        )
        .await?;
        let lobby = Self::start_lobby(config, &database, clock.clone(), &telemetry).await?;
        let runtime = Self::start_runtime(
            config,
            &database,
            &instance,
            &lobby,
            clock.clone(),
            &telemetry,
            lifecycle,
        )
        .await?;
        let turns = turnbase_turns::TurnService::new(
            database.clone(),
            lobby.engines().clone(),
            config.turns.clone(),
            clock.clone(),
            telemetry.meter(),
        );
        turns.set_runtime(Arc::new(crate::runtime_wiring::RuntimeQueue(
            runtime.clone(),
        )));
        // Notifications last: the domains write notices through the store
        // and only nudge its router.
        let notify = turnbase_notify::NotifyService::new(
            database.clone(),
            push.clone(),
            wake_mail.clone(),
            config.notify.service.clone(),
            turnbase_notify::Keys::derive(config.accounts.internal_token.expose()),
            telemetry.meter(),
        )
        .with_clock(clock.clone());
        accounts.set_notifier(notify.wake_handle());
        lobby.set_notifier(notify.wake_handle());
        turns.set_notifier(notify.wake_handle());
        let readiness = Self::warm_caches(&accounts).await;
        if config.runtime.docker.is_some() {
            runtime.watch_docker(readiness.register("docker"));
        }
        let outage = api::outage::Outage::new(database.clone(), telemetry.meter());
        let state = AppState {
            db: database.clone(),
            readiness: readiness.clone(),
            instance: Arc::new(instance.clone()),
            version,
            mail: mail.clone(),
            accounts: accounts.clone(),
            lobby: lobby.clone(),
            runtime: runtime.clone(),
            turns: turns.clone(),
            notify: notify.clone(),
            internal_token: Arc::new(config.accounts.internal_token.clone()),
            trusted_proxies: Arc::new(config.accounts.trusted_proxies.clone()),
            outage: outage.clone(),
            telemetry: telemetry.clone(),
        };
        let router = api::router(state, &config.http, HttpMetrics::new(telemetry.meter()));

        // Listeners. The push listener starts before HTTP so that it stops
        // after it: requests still draining may publish events, and push
        // streams deliver everything published before they end.
        let grpc_push_addr = Self::start_push_listener(config, &push, lifecycle).await?;
        let http_addr = Self::start_http(config, router, lifecycle).await?;
        // Workers, after the listeners: at shutdown they stop first.
        Self::start_mail_worker(config, &database, wake_mail, clock, &telemetry, lifecycle)?;
        let worker = notify.clone();
        lifecycle.spawn("notification-worker", None, move |stop| worker.run(stop));
        Self::start_guest_reaper(config, &accounts, lifecycle);
        Self::start_lobby_sweeper(&lobby, lifecycle);
        Self::start_runtime_workers(&runtime, &turns, config, lifecycle);
        let metrics_addr = Self::start_metrics(config, &telemetry, lifecycle).await?;

        Ok(Started {
            http_addr,
            grpc_push_addr,
            push,
            mail,
            accounts,
            lobby,
            runtime,
            turns,
            notify,
            metrics_addr,
            instance,
            readiness,
            database,
            outage,
        })
    }

    /// Runs until `signal` resolves (or a component fails), then stops.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> ShutdownReport {
        self.lifecycle.run_until(signal).await
    }

    /// Resolves when one of the running components fails, with why (the
    /// shutdown after it reports that as its cause).
    pub async fn failure(&mut self) -> String {
        self.lifecycle.failure().await
    }

    /// The database, migrated, with this start recorded.
    async fn start_storage(
        config: &Config,
        version: &'static str,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<(Database, InstanceInfo)> {
        // A data folder left open to other users (an older version made it
        // 0755) is narrowed before anything is written in it.
        if config.data_dir.is_dir() {
            turnbase_core::private_fs::tighten(&config.data_dir);
        }
        let database = open_database(config).await?;
        let db = database.clone();
        lifecycle.add("database", None, move || async move {
            db.close().await;
            Ok(())
        });
        let instance = database
            .instance()
            .record_start(uuid::Uuid::now_v7(), chrono::Utc::now(), version)
            .await?;
        tracing::info!(instance_id = %instance.id, start = instance.start_count, "instance recorded");

        Ok((database, instance))
    }

    /// The push service, before any domain service, so that each gets a real
    /// publisher; its listener starts with the others.
    fn start_push_service(
        config: &Config,
        telemetry: &Telemetry,
        lifecycle: &mut Lifecycle,
    ) -> PushService {
        let push = PushService::new(config.grpc_push.service.clone(), telemetry.meter());
        let closing = push.clone();
        lifecycle.add("push", None, move || async move {
            closing.close();
            Ok(())
        });
        push
    }

    /// The mail service, and the signal that wakes the mail worker.
    fn start_mail_service(
        database: &Database,
        clock: turnbase_core::worker::Clock,
        telemetry: &Telemetry,
    ) -> (turnbase_mail::MailService, Arc<tokio::sync::Notify>) {
        let wake_mail = Arc::new(tokio::sync::Notify::new());
        let mail =
            turnbase_mail::MailService::new(database.clone(), wake_mail.clone(), telemetry.meter())
                .with_clock(clock);
        (mail, wake_mail)
    }

    /// Accounts: geo, the service, the configured admin, and the flusher.
    async fn start_accounts(
        config: &Config,
        database: &Database,
        mail: &turnbase_mail::MailService,
        push: &PushService,
        clock: turnbase_core::worker::Clock,
        telemetry: &Telemetry,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<turnbase_accounts::AccountService> {
        let geo = match &config.accounts.geoip_db {
            Some(path) => turnbase_accounts::GeoIp::open(path)
                .map_err(|e| anyhow::anyhow!("BACKEND_GEOIP_DB: {e}"))?,
            None => turnbase_accounts::GeoIp::none(),
        };
        let accounts = turnbase_accounts::AccountService::new(
            database.clone(),
            mail.clone(),
            push.clone(),
            geo,
            config.accounts.service.clone(),
            clock.clone(),
            telemetry.meter(),
        );
        if let Some(admin) = accounts.ensure_admin().await? {
            tracing::info!(account = %admin.id, "the configured admin account is ready");
        }
        // Registered before the listeners so that it stops after them: the
        // final flush then holds every sign-in, including those of requests
        // drained at shutdown.
        let flusher = accounts.clone();
        let interval = config.accounts.flush_interval;
        lifecycle.spawn("accounts-flusher", None, move |stop| {
            turnbase_accounts::workers::run_flusher(flusher, interval, stop)
        });

        Ok(accounts)
    }

    /// The lobby, with its engine kinds: the file's, or those built in.
    async fn start_lobby(
        config: &Config,
        database: &Database,
        clock: turnbase_core::worker::Clock,
        telemetry: &Telemetry,
    ) -> anyhow::Result<turnbase_lobby::LobbyService> {
        let engines = match &config.lobby.engines {
            EngineSource::File(path) => turnbase_lobby::EngineRegistry::load(path)
                .await
                .map_err(|e| anyhow::anyhow!("BACKEND_ENGINES_FILE: {e}"))?,
            EngineSource::Builtin(registry) => registry.clone(),
        };
        let names: Vec<&str> = engines.kinds().map(|k| k.name.as_str()).collect();
        if names.is_empty() {
            tracing::warn!("no engine kinds are registered: games cannot be created");
        } else {
            tracing::info!(kinds = ?names, "engine kinds registered");
        }
        Ok(turnbase_lobby::LobbyService::new(
            database.clone(),
            engines,
            config.lobby.service.clone(),
            clock,
            telemetry.meter(),
        ))
    }

    /// The game runtime, joined to the lobby both ways by the adapters in
    /// `crate::runtime_wiring` (outcomes to the lobby, the start queue to
    /// the runtime). Its engines are stopped after its workers.
    async fn start_runtime(
        config: &Config,
        database: &Database,
        instance: &InstanceInfo,
        lobby: &turnbase_lobby::LobbyService,
        clock: turnbase_core::worker::Clock,
        telemetry: &Telemetry,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<turnbase_runtime::Runtime> {
        let driver = match &config.runtime.docker {
            None => turnbase_runtime::DriverChoice::Process,
            Some(docker) => {
                let driver = turnbase_runtime::docker::DockerDriver::connect(
                    &docker.host,
                    instance.id,
                    &docker.network,
                    docker.limits,
                )
                .await
                .map_err(|e| {
                    anyhow::anyhow!("BACKEND_RUNTIME_DRIVER=docker, BACKEND_DOCKER_HOST: {e}")
                })?;
                tracing::info!(host = %docker.host, network = %docker.network, "engines run as Docker containers");
                turnbase_runtime::DriverChoice::Docker(Arc::new(driver))
            }
        };
        let commands =
            crate::runtime_wiring::commands(lobby.engines(), config.runtime.docker.is_some());
        let runtime = turnbase_runtime::Runtime::new(
            database.clone(),
            config.runtime.service.clone(),
            commands,
            driver,
            Arc::new(crate::runtime_wiring::LobbyOutcomes(lobby.clone())),
            clock,
            telemetry.meter(),
        );
        lobby.set_start_queue(Arc::new(crate::runtime_wiring::RuntimeQueue(
            runtime.clone(),
        )));
        let engines = runtime.clone();
        lifecycle.add("runtime-engines", None, move || async move {
            engines.shutdown().await;
            Ok(())
        });
        Ok(runtime)
    }

    /// The caches, each reporting to /readyz until warm.
    async fn warm_caches(accounts: &turnbase_accounts::AccountService) -> Readiness {
        let readiness = Readiness::default();
        let session_cache_ready = readiness.register("session-cache");
        match accounts.warm_cache().await {
            Ok(n) => tracing::info!(sessions = n, "session cache warmed"),
            Err(err) => {
                tracing::warn!(error = %err, "session cache not warmed; it fills as sessions are used");
            }
        }
        session_cache_ready.set(true);

        readiness
    }

    /// The gRPC push listener.
    async fn start_push_listener(
        config: &Config,
        push: &PushService,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<SocketAddr> {
        let listener = bind(config.grpc_push.addr, "BACKEND_GRPC_PUSH_ADDR").await?;
        let grpc_push_addr = listener.local_addr()?;
        let service = push.clone();
        let secret = config.accounts.internal_token.expose().clone();
        lifecycle.spawn(
            "grpc-push",
            Some(config.grpc_push.shutdown_timeout),
            move |stop| async move {
                turnbase_push::server::serve(
                    service,
                    listener,
                    secret,
                    turnbase_push::server::Liveness::default(),
                    stop.cancelled_owned(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("gRPC push server: {e}"))
            },
        );
        tracing::info!(addr = %grpc_push_addr, "gRPC push listening");

        Ok(grpc_push_addr)
    }

    /// The HTTP API listener.
    async fn start_http(
        config: &Config,
        router: axum::Router,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<SocketAddr> {
        let listener = bind(config.http.addr, "BACKEND_HTTP_ADDR").await?;
        let http_addr = listener.local_addr()?;
        let serve_options = config.http.serve;
        lifecycle.spawn(
            "http",
            Some(config.http.shutdown_timeout),
            move |stop| async move {
                turnbase_core::serve::serve(listener, router, stop.cancelled_owned(), serve_options)
                    .await
                    .map_err(|e| anyhow::anyhow!("HTTP server: {e}"))
            },
        );
        tracing::info!(addr = %http_addr, "HTTP API listening");

        Ok(http_addr)
    }

    /// The mail worker, sending through SMTP or into the mail folder.
    fn start_mail_worker(
        config: &Config,
        database: &Database,
        wake_mail: Arc<tokio::sync::Notify>,
        clock: turnbase_core::worker::Clock,
        telemetry: &Telemetry,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<()> {
        let sender: Arc<dyn turnbase_mail::MailSender> = match &config.mail.delivery {
            MailDelivery::Smtp {
                url,
                timeout,
                extra_roots,
            } => Arc::new(
                turnbase_mail::SmtpSender::new(
                    url.expose(),
                    *timeout,
                    u32::try_from(config.mail.worker.concurrency).unwrap_or(u32::MAX),
                    extra_roots.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("BACKEND_SMTP_URL: {e}"))?,
            ),
            MailDelivery::Folder(dir) => {
                Arc::new(turnbase_mail::FileSender::new(dir.clone()).map_err(|e| {
                    anyhow::anyhow!("cannot create the mail folder {}: {e}", dir.display())
                })?)
            }
        };
        let worker = Arc::new(
            turnbase_mail::MailWorker::new(
                database.clone(),
                sender,
                turnbase_mail::MessageSettings::new(config.mail.from.clone()),
                config.mail.worker.clone(),
                wake_mail,
                telemetry.meter(),
            )
            .with_clock(clock),
        );
        lifecycle.spawn("mail-worker", None, move |stop| worker.run(stop));
        Ok(())
    }

    /// The guest reaper.
    fn start_guest_reaper(
        config: &Config,
        accounts: &turnbase_accounts::AccountService,
        lifecycle: &mut Lifecycle,
    ) {
        let reaper = accounts.clone();
        let (retention, every) = (
            config.accounts.guest_retention,
            config.accounts.guest_reap_interval,
        );
        lifecycle.spawn("guest-reaper", None, move |stop| {
            turnbase_accounts::workers::run_guest_reaper(reaper, retention, every, stop)
        });
    }

    /// The lobby sweeper.
    fn start_lobby_sweeper(lobby: &turnbase_lobby::LobbyService, lifecycle: &mut Lifecycle) {
        let sweeper = lobby.clone();
        lifecycle.spawn("lobby-sweeper", None, move |stop| {
            turnbase_lobby::sweeper::run_sweeper(sweeper, stop)
        });
    }

    /// The runtime's worker pool, the turn scheduler and the reconciler
    /// (DESIGN's start order).
    fn start_runtime_workers(
        runtime: &turnbase_runtime::Runtime,
        turns: &turnbase_turns::TurnService,
        config: &Config,
        lifecycle: &mut Lifecycle,
    ) {
        let workers = runtime.clone();
        lifecycle.spawn("runtime-workers", None, move |stop| {
            turnbase_runtime::worker::run_workers(workers, stop)
        });
        let scheduler = turns.clone();
        lifecycle.spawn("turn-scheduler", None, move |stop| {
            turnbase_turns::scheduler::run_scheduler(scheduler, stop)
        });
        let reminders = turns.clone();
        let every = config.notify.reminder_interval;
        lifecycle.spawn("turn-reminders", None, move |stop| {
            reminders.run_reminders(every, stop)
        });
        let reconciler = runtime.clone();
        lifecycle.spawn("runtime-reconciler", None, move |stop| {
            turnbase_runtime::reconciler::run_reconciler(reconciler, stop)
        });
    }

    /// The Prometheus listener, when configured.
    async fn start_metrics(
        config: &Config,
        telemetry: &Telemetry,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<Option<SocketAddr>> {
        let serve_options = config.http.serve;
        Ok(match config.metrics_addr {
            Some(addr) => {
                let listener = bind(addr, "BACKEND_METRICS_ADDR").await?;
                let local = listener.local_addr()?;
                let t = telemetry.clone();
                lifecycle.spawn(
                    "metrics",
                    Some(config.http.shutdown_timeout),
                    move |stop| async move {
                        turnbase_core::serve::serve_metrics(
                            listener,
                            t,
                            stop.cancelled_owned(),
                            serve_options,
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("metrics server: {e}"))
                    },
                );
                tracing::info!(addr = %local, "metrics listening");
                Some(local)
            }
            None => None,
        })
    }

    /// Stops every component in reverse start order.
    pub async fn shutdown(self) -> ShutdownReport {
        self.lifecycle.shutdown().await
    }
}

struct Started {
    http_addr: SocketAddr,
    grpc_push_addr: SocketAddr,
    push: PushService,
    mail: turnbase_mail::MailService,
    accounts: turnbase_accounts::AccountService,
    lobby: turnbase_lobby::LobbyService,
    runtime: turnbase_runtime::Runtime,
    turns: turnbase_turns::TurnService,
    notify: turnbase_notify::NotifyService,
    metrics_addr: Option<SocketAddr>,
    instance: InstanceInfo,
    readiness: Readiness,
    database: Database,
    outage: Arc<api::outage::Outage>,
}
