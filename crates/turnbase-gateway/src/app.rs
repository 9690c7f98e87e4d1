//! Wiring of the gateway process: the push client feeding the hub, the
//! edge's HTTP listener, the optional metrics listener. Started in that
//! order and stopped in reverse, so clients are told to reconnect before
//! the push stream closes.

use std::net::SocketAddr;
use std::sync::Arc;
use turnbase_core::worker::Runner;

use turnbase_core::http::{HttpMetrics, bind};
use turnbase_core::lifecycle::{Lifecycle, ShutdownReport};
use turnbase_core::readiness::{Readiness, ReadyFlag};
use turnbase_core::telemetry::Telemetry;
use turnbase_push::received::{Event, EventBody};

use crate::backend::Resolver;
use crate::config::GatewayConfig;
use crate::edge::{Edge, EdgeService};
use crate::envelope::signed_frame;
use crate::hub::Hub;
use crate::push_client::{Notice, PushClient, PushHandler};
use crate::signing::Signer;

/// A started gateway.
pub struct Gateway {
    pub http_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub readiness: Readiness,
    pub hub: Arc<Hub>,
    pub signer: Arc<Signer>,
    lifecycle: Lifecycle,
}

/// Feeds the hub from the push stream.
struct Feed {
    hub: Arc<Hub>,
    resolver: Arc<Resolver>,
    signer: Arc<Signer>,
    ready: ReadyFlag,
}

impl PushHandler for Feed {
    async fn on_event(&self, event: Event) {
        match event.body {
            EventBody::Client(e) => {
                let id = event.cursor.to_string();
                match signed_frame(&self.signer, &id, &e, event.published_at_ms) {
                    Some(frame) => {
                        self.hub
                            .deliver(e.user_id, e.device_session_id, Arc::from(id), frame)
                    }
                    None => {
                        tracing::warn!(cursor = %id, "client event with a payload that is not JSON; dropped")
                    }
                }
            }
            EventBody::SessionInvalidation {
                user_id,
                device_session_id,
                ..
            } => {
                self.resolver.forget(user_id, device_session_id);
                self.hub.revoke(user_id, device_session_id);
            }
            EventBody::Malformed(error) => {
                tracing::warn!(cursor = %event.cursor, %error, "push event that does not decode; skipped");
            }
            EventBody::Unknown => {}
        }
    }

    async fn on_notice(&self, notice: Notice) {
        match notice {
            Notice::Resumed { .. } => self.ready.set(true),
            Notice::Stale { .. } | Notice::Gap { .. } => {
                self.ready.set(true);
                self.resolver.clear();
                self.hub.resync_all("events_lost");
            }
            Notice::Disconnected { .. } => self.ready.set(false),
            Notice::Replaced { .. } => {}
        }
    }
}

/// How a gateway process is set up around its configuration.
#[derive(Debug, Clone, Copy)]
pub struct StartOptions {
    /// The gateway flushes telemetry last at shutdown: true for `turnbase
    /// gateway`, false inside `turnbase up`, whose backend owns it.
    pub owns_telemetry: bool,
    /// A missing signing key file is made with a fresh key (`turnbase up`
    /// and tests); a production gateway insists on its key.
    pub create_key: bool,
}

impl StartOptions {
    /// `turnbase gateway`: its own telemetry, an existing key.
    pub const STANDALONE: StartOptions = StartOptions {
        owns_telemetry: true,
        create_key: false,
    };
    /// Beside a backend in one process (`turnbase up`, tests, benchmarks).
    pub const EMBEDDED: StartOptions = StartOptions {
        owns_telemetry: false,
        create_key: true,
    };
}

impl Gateway {
    /// Starts every component.
    pub async fn start(
        config: GatewayConfig,
        telemetry: Telemetry,
        options: StartOptions,
    ) -> anyhow::Result<Gateway> {
        let mut lifecycle = Lifecycle::new(config.shutdown_timeout);
        match Self::start_components(
            &config,
            telemetry,
            options.owns_telemetry,
            options.create_key,
            &mut lifecycle,
        )
        .await
        {
            Ok((http_addr, metrics_addr, readiness, hub, signer)) => Ok(Gateway {
                http_addr,
                metrics_addr,
                readiness,
                hub,
                signer,
                lifecycle,
            }),
            Err(err) => {
                lifecycle.shutdown().await;
                Err(err)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn start_components(
        config: &GatewayConfig,
        telemetry: Telemetry,
        own_telemetry: bool,
        create_key: bool,
        lifecycle: &mut Lifecycle,
    ) -> anyhow::Result<(
        SocketAddr,
        Option<SocketAddr>,
        Readiness,
        Arc<Hub>,
        Arc<Signer>,
    )> {
        if own_telemetry {
            let t = telemetry.clone();
            lifecycle.add("gateway-telemetry", None, move || async move {
                tokio::task::spawn_blocking(move || t.shutdown()).await?
            });
        }
        let signer = Arc::new(
            Signer::load(&config.signing_key_file, create_key)
                .map_err(|e| anyhow::anyhow!("GATEWAY_SIGNING_KEY_FILE: {e}"))?,
        );
        tracing::info!(kid = %signer.kid(), "envelope signing key loaded");
        let readiness = Readiness::default();
        let upstream = crate::upstream::Upstream::new(&config.backend_url)
            .map_err(|e| anyhow::anyhow!("GATEWAY_BACKEND_URL: {e}"))?;
        let resolver = Arc::new(Resolver::new(
            upstream.clone(),
            config.internal_token.clone(),
            config.session_cache_ttl,
        ));
        let hub = Hub::new(config.limits.clone(), telemetry.meter());

        // The push stream first, so that it closes last.
        let feed = Feed {
            hub: hub.clone(),
            resolver: resolver.clone(),
            signer: signer.clone(),
            ready: readiness.register("push-stream"),
        };
        let push = PushClient::new(config.push.clone(), feed);
        let running = push.clone();
        let task = tokio::spawn(async move { running.run().await });
        lifecycle.add("gateway-push-client", None, move || async move {
            push.close();
            task.await?;
            Ok(())
        });

        // Resume windows of users who went away expire without an event
        // to trigger it.
        let sweeping = hub.clone();
        let every = (config.limits.resume_window / 4).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        );
        lifecycle.spawn("gateway-hub-sweeper", None, move |stop| async move {
            let job = Arc::new(crate::hub::Sweeper::new(sweeping, every));
            Runner::new(every).run(job, stop).await
        });

        let edge = Edge::new(
            config,
            hub.clone(),
            resolver,
            signer.clone(),
            upstream,
            readiness.clone(),
            telemetry.meter(),
        );
        let app = EdgeService::new(
            edge.clone(),
            HttpMetrics::new(telemetry.meter()),
            config.body_limit,
        );
        let listener = bind(config.http_addr, "GATEWAY_HTTP_ADDR").await?;
        let http_addr = listener.local_addr()?;
        let serve_options = config.serve;
        let draining = hub.clone();
        lifecycle.spawn("gateway-http", None, move |stop| async move {
            let closing = edge.clone();
            // (Envelopes are small writes that must leave at once: `serve`
            // turns Nagle off.)
            turnbase_core::serve::serve(
                listener,
                app,
                async move {
                    stop.cancelled().await;
                    closing.begin_closing();
                },
                serve_options,
            )
            .await
            .map_err(|e| anyhow::anyhow!("HTTP server: {e}"))?;
            // WebSockets outlive the HTTP server's own draining; wait for
            // them to say goodbye.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while draining.connection_count() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(())
        });
        tracing::info!(addr = %http_addr, "gateway listening");

        let metrics_addr = match config.metrics_addr {
            Some(addr) => {
                let listener = bind(addr, "GATEWAY_METRICS_ADDR").await?;
                let local = listener.local_addr()?;
                let t = telemetry.clone();
                lifecycle.spawn("gateway-metrics", None, move |stop| async move {
                    turnbase_core::serve::serve_metrics(
                        listener,
                        t,
                        stop.cancelled_owned(),
                        serve_options,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("metrics server: {e}"))
                });
                Some(local)
            }
            None => None,
        };
        Ok((http_addr, metrics_addr, readiness, hub, signer))
    }

    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) -> ShutdownReport {
        self.lifecycle.run_until(signal).await
    }

    pub async fn shutdown(self) -> ShutdownReport {
        self.lifecycle.shutdown().await
    }
}
