//! `turnbase-bench`: Turnbase's benchmarks, one mode each.
//!
//! `turnbase-bench engine` measures an engine process hosting 1,000 games.
//! `turnbase-bench lobby` measures lobby browsing while games fill.
//! `turnbase-bench runtime` measures starting games' engines.
//! `turnbase-bench fanout` measures live-event fan-out through the gateway
//! against NATS. `turnbase-bench api` measures guest sign-ups and authenticated requests
//! through the backend's HTTP API. `turnbase-bench mail` measures the mail outbox and worker against a
//! plain pooled SMTP sender. `turnbase-bench push` measures the push pipeline (publisher → gRPC over
//! loopback → gateway push client) against NATS core pub/sub in the same
//! run, and prints its figures followed by one JSON line. The other modes
//! are the child processes it starts, so that each side's CPU and memory
//! are measured on their own.

mod api;
mod engine;
mod fanout;
mod gateway;
mod lobby;
mod mail;
mod nats;
mod notify;
mod probe;
mod push;
mod runtime;
mod turns;
mod web;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "turnbase-bench", about = "Turnbase benchmarks")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// The push pipeline against NATS core pub/sub.
    Push(push::PushArgs),
    /// The mail outbox and worker against a plain pooled SMTP sender.
    Mail(mail::MailArgs),
    /// Guest sign-ups and authenticated `GET /me` through the backend's HTTP API.
    Api(api::ApiArgs),
    /// 10,000 WebSocket clients fed through the gateway, against NATS over WebSocket.
    Fanout(fanout::FanoutArgs),
    /// One engine process hosting 1,000 games: Conquest resolves and Reversi moves over HTTP.
    Engine(engine::EngineArgsBench),
    /// 1,000 users browsing the lobby while 100 games fill by applications and approvals.
    Lobby(lobby::LobbyArgs),
    /// Games started on shared engines, per-game processes and Docker containers.
    Runtime(runtime::RuntimeArgs),
    /// 300 Conquest and 100 Reversi bot games resolving turns on time, on SQLite and Postgres.
    Turns(turns::TurnsArgs),
    /// A turn resolving in 1,000 games of 10: notifications by push, email and webhook.
    Notify(notify::NotifyArgs),
    /// REST through the gateway against nginx's proxy_pass to the same backend (wrk).
    Gateway(gateway::GatewayArgs),
    /// Cold loads of a Conquest game page in headless Chromium: bytes, requests, time to an interactive map.
    Web(web::WebArgs),
    /// Child: the engine under test.
    #[command(hide = true, subcommand)]
    EngineServer(engine::ServerGame),
    /// Child: a backend and gateway for the fan-out benchmark.
    #[command(hide = true)]
    FanoutServer(fanout::ServerArgs),
    /// Child: a NATS publisher for the fan-out benchmark.
    #[command(hide = true)]
    FanoutNatsPublisher(fanout::NatsPublisherArgs),
    /// Child: a gateway in front of the gateway benchmark's backend.
    #[command(hide = true)]
    GatewayServer(gateway::GatewayServerArgs),
    /// Child: a backend serving the API benchmark.
    #[command(hide = true)]
    ApiBackend(api::BackendArgs),
    /// Child: a push service publishing events (our backend side).
    #[command(hide = true)]
    PushPublisher(push::PublisherArgs),
    /// Child: a gateway push client counting events (our gateway side).
    #[command(hide = true)]
    PushSubscriber(push::SubscriberArgs),
    /// Child: a NATS publisher.
    #[command(hide = true)]
    NatsPublisher(nats::PublisherArgs),
    /// Child: a NATS subscriber.
    #[command(hide = true)]
    NatsSubscriber(nats::SubscriberArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("turnbase-bench: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.mode {
            Mode::Push(args) => push::run(args).await,
            Mode::Mail(args) => mail::run(args).await,
            Mode::Api(args) => api::run(args).await,
            Mode::Fanout(args) => fanout::run(args).await,
            Mode::Engine(args) => engine::run(args).await,
            Mode::Lobby(args) => lobby::run(args).await,
            Mode::Runtime(args) => runtime::run(args).await,
            Mode::Turns(args) => turns::run(args).await,
            Mode::Notify(args) => notify::run(args).await,
            Mode::Web(args) => web::run(args).await,
            Mode::Gateway(args) => gateway::run(args).await,
            Mode::GatewayServer(args) => gateway::server(args).await,
            Mode::EngineServer(game) => engine::server(game).await,
            Mode::FanoutServer(args) => fanout::server(args).await,
            Mode::FanoutNatsPublisher(args) => fanout::nats_publisher(args).await,
            Mode::ApiBackend(args) => api::backend(args).await,
            Mode::PushPublisher(args) => push::publisher(args).await,
            Mode::PushSubscriber(args) => push::subscriber(args).await,
            Mode::NatsPublisher(args) => nats::publisher(args).await,
            Mode::NatsSubscriber(args) => nats::subscriber(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("turnbase-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
