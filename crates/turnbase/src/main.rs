//! The `turnbase` command: runs the whole stack (`up`), the backend alone
//! (`backend`), the gateway alone (`gateway`), or applies migrations
//! (`migrate`).
//!
//! Exit codes: 0 after a clean stop, 1 when starting or stopping failed
//! (including a missed shutdown deadline), 2 for invalid configuration or
//! command-line usage.

mod push_tail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use turnbase_backend::config::{EngineSource, Profile};
use turnbase_backend::{App, Config};
use turnbase_core::lifecycle::ShutdownSignals;
use turnbase_core::telemetry::Telemetry;
use turnbase_gateway::{Gateway, GatewayConfig, Profile as GatewayProfile};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser)]
#[command(
    name = "turnbase",
    version,
    about = "Turnbase: a platform for long-running turn-based multiplayer games"
)]
struct Cli {
    /// A TOML file with settings (keys are variable names without the
    /// prefix, in lower case); environment variables win over it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole stack on this machine with embedded defaults
    /// (SQLite in ./turnbase-data) and print the URLs to use.
    Up,
    /// Run the backend process (configured by BACKEND_* variables).
    Backend,
    /// Run the gateway process, the public edge (configured by GATEWAY_* variables).
    Gateway,
    /// Apply database migrations and exit.
    Migrate,
    /// Operator tools for the push stream.
    #[command(subcommand)]
    Push(PushCommand),
    /// Tools for game engines.
    #[command(subcommand)]
    Engine(EngineCommand),
}

#[derive(Subcommand)]
enum EngineCommand {
    /// Check that an engine keeps the engine protocol: prints a pass/fail
    /// table and exits non-zero when a check fails.
    Check {
        /// The running engine's base URL, e.g. http://127.0.0.1:7700.
        #[arg(required_unless_present = "spawn", conflicts_with = "spawn")]
        url: Option<String>,
        /// Start the engine with this shell command instead (it must print
        /// `listening on http://HOST:PORT`); the checker then also kills and
        /// restarts it to check that no game is lost.
        #[arg(long)]
        spawn: Option<String>,
    },
    /// Run one of the reference engines built into this binary (the
    /// lobby registers them; the runtime starts them this way).
    #[command(subcommand)]
    Serve(ServeCommand),
    /// Build a local Docker image of a reference engine from this binary
    /// (for BACKEND_RUNTIME_DRIVER=docker): the binary and the libraries it
    /// links, imported with the engine as the entry point.
    Image {
        /// conquest or reversi.
        kind: String,
        /// The image's name (default turnbase-engine-<kind>:latest, the
        /// name the docker driver runs the reference kinds from).
        #[arg(long)]
        tag: Option<String>,
        /// The Docker Engine API.
        #[arg(
            long,
            env = "BACKEND_DOCKER_HOST",
            default_value = "unix:///var/run/docker.sock"
        )]
        docker_host: String,
    },
}

#[derive(Subcommand)]
enum ServeCommand {
    /// Conquest: planets and fleets, 2 to 16 players, simultaneous turns.
    Conquest(turnbase_engine_kit::server::EngineArgs),
    /// Reversi: two players, one move at a time.
    Reversi(turnbase_engine_kit::server::EngineArgs),
}

#[derive(Subcommand)]
enum PushCommand {
    /// Subscribe to a backend's push stream and print each message as a JSON line.
    Tail {
        /// The backend's push listener, e.g. http://127.0.0.1:8081.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        url: String,
        /// Resume after this cursor instead of starting from now.
        #[arg(long)]
        cursor: Option<String>,
        /// The subscriber id; by default a fresh one, so that tailing never
        /// replaces a gateway's subscription.
        #[arg(long)]
        client_id: Option<String>,
        /// The data folder of a `turnbase up` whose internal secret to use
        /// when BACKEND_INTERNAL_TOKEN is not set.
        #[arg(long, default_value = "./turnbase-data")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = match cli.command {
        Command::Push(PushCommand::Tail {
            url,
            cursor,
            client_id,
            data_dir,
        }) => return tail(url, cursor, client_id, &data_dir),
        Command::Engine(EngineCommand::Check { url, spawn }) => return engine_check(url, spawn),
        Command::Engine(EngineCommand::Serve(game)) => return engine_serve(game),
        Command::Engine(EngineCommand::Image {
            kind,
            tag,
            docker_host,
        }) => return engine_image(&kind, tag, &docker_host),
        Command::Gateway => return gateway(cli.config),
        Command::Up => Run::Up,
        Command::Backend => Run::Backend,
        Command::Migrate => Run::Migrate,
    };
    // `up` and `migrate` run on embedded defaults; `backend` wants every
    // production choice made explicitly.
    let profile = match run {
        Run::Backend => Profile::Backend,
        Run::Up | Run::Migrate => Profile::Up,
    };
    let mut config = match Config::load(profile, std::env::vars(), cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("turnbase: {err}");
            return ExitCode::from(2);
        }
    };
    if let EngineSource::Builtin(registry) = &mut config.lobby.engines {
        match reference_engines() {
            Ok(reference) => *registry = reference,
            Err(err) => {
                eprintln!("turnbase: the reference engines: {err}");
                return ExitCode::from(1);
            }
        }
    }
    // `up` runs the gateway too: its configuration is checked before
    // anything starts, like the backend's.
    if matches!(run, Run::Up) {
        match gateway_config_for_up(&config, None, cli.config.as_deref()) {
            // One telemetry runtime serves both: keep a Prometheus
            // registry when either listener wants one.
            Ok(gateway) => config.telemetry.prometheus |= gateway.metrics_addr.is_some(),
            Err(err) => {
                eprintln!("turnbase: {err}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("turnbase: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(start(run, config, cli.config));
    // Do not wait for tasks abandoned at a missed deadline: exit now.
    std::process::exit(code);
}

/// The commands that run on the backend configuration.
enum Run {
    Up,
    Backend,
    Migrate,
}

/// The gateway's configuration inside `up`: pointed at this backend, with
/// its secret, and a signing key in the data folder. `started` gives the
/// backend's bound addresses once known.
fn gateway_config_for_up(
    backend: &Config,
    started: Option<&App>,
    file: Option<&std::path::Path>,
) -> Result<GatewayConfig, turnbase_core::config::ConfigError> {
    let (http, push) = match started {
        Some(app) => (app.http_addr, app.grpc_push_addr),
        None => (backend.http.addr, backend.grpc_push.addr),
    };
    let defaults = [
        ("GATEWAY_BACKEND_URL", format!("http://{http}")),
        ("GATEWAY_GRPC_PUSH_URL", format!("http://{push}")),
        (
            "GATEWAY_INTERNAL_TOKEN",
            backend.accounts.internal_token.expose().clone(),
        ),
        (
            "GATEWAY_SIGNING_KEY_FILE",
            backend
                .data_dir
                .join("gateway-signing.key")
                .display()
                .to_string(),
        ),
        // A machine of one's own: the admin console and API are served
        // (the edge still forwards admin calls only for admin sessions).
        ("GATEWAY_EXPOSE_ADMIN", "true".to_string()),
    ];
    GatewayConfig::load(GatewayProfile::Up, std::env::vars(), file, &defaults)
}

/// `turnbase gateway`.
fn gateway(file: Option<PathBuf>) -> ExitCode {
    let config = match GatewayConfig::load(
        GatewayProfile::Gateway,
        std::env::vars(),
        file.as_deref(),
        &[],
    ) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("turnbase: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("turnbase: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async move {
        let caught = ShutdownSignals::listen();
        let telemetry = match Telemetry::init(&config.telemetry) {
            Ok(t) => t,
            Err(err) => {
                eprintln!("turnbase: cannot start telemetry: {err:#}");
                return 1;
            }
        };
        let gateway = match Gateway::start(
            config,
            telemetry,
            turnbase_gateway::StartOptions::STANDALONE,
        )
        .await
        {
            Ok(g) => g,
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "startup failed");
                eprintln!("turnbase: {err:#}");
                return 1;
            }
        };
        finish(gateway.run_until(signals(caught)).await)
    });
    std::process::exit(code);
}

/// The first signal stops; a second while stopping exits at once.
async fn signals(mut caught: ShutdownSignals) {
    caught.next().await;
    tokio::spawn(async move {
        caught.next().await;
        eprintln!("turnbase: second signal; exiting without finishing shutdown");
        std::process::exit(1);
    });
}

fn finish(report: turnbase_core::lifecycle::ShutdownReport) -> i32 {
    if let Some(cause) = &report.cause {
        eprintln!("turnbase: {cause}");
    }
    if report.is_clean() {
        tracing::info!("stopped cleanly");
        0
    } else {
        tracing::error!("shutdown was not clean");
        1
    }
}

async fn start(run: Run, mut config: Config, file: Option<PathBuf>) -> i32 {
    // `up` keeps its metrics in memory even without a `/metrics` listener:
    // the admin console's live counters read them through the admin API.
    if matches!(run, Run::Up) {
        config.telemetry.prometheus = true;
    }
    let telemetry = match Telemetry::init(&config.telemetry) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("turnbase: cannot start telemetry: {err:#}");
            return 1;
        }
    };
    match run {
        Run::Migrate => migrate(&config, &telemetry).await,
        Run::Up => serve(config, telemetry, Stack::Up { config_file: file }).await,
        Run::Backend => serve(config, telemetry, Stack::BackendOnly).await,
    }
}

/// The reference engines, run as `turnbase engine serve <kind>` by this
/// very binary.
fn reference_engines() -> Result<turnbase_lobby::EngineRegistry, String> {
    let program = std::env::current_exe().map_err(|e| format!("where is this program: {e}"))?;
    turnbase_lobby::EngineRegistry::from_manifests(&turnbase_engines::manifests(), |m| {
        turnbase_lobby::EngineRun::Binary {
            program: program.clone(),
            args: vec!["engine".into(), "serve".into(), m.kind.clone()],
        }
    })
}

/// A multi-threaded async runtime, or the exit code after saying why not.
fn async_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("turnbase: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        })
}

/// `turnbase engine image`.
fn engine_image(kind: &str, tag: Option<String>, docker_host: &str) -> ExitCode {
    if !turnbase_engines::manifests().iter().any(|m| m.kind == kind) {
        eprintln!("turnbase: engine image: {kind:?} is not a reference engine (conquest, reversi)");
        return ExitCode::from(2);
    }
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let tag = tag.unwrap_or_else(|| format!("turnbase-engine-{kind}:latest"));
    let result = runtime.block_on(async {
        let program = std::env::current_exe()?;
        let entrypoint: Vec<String> = ["/turnbase", "engine", "serve", kind]
            .iter()
            .map(|w| w.to_string())
            .collect();
        turnbase_runtime::docker::build_image(docker_host, &program, &entrypoint, &tag).await
    });
    match result {
        Ok(()) => {
            println!("built {tag}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("turnbase: engine image: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `turnbase engine serve`.
fn engine_serve(game: ServeCommand) -> ExitCode {
    use turnbase_engine_kit::server::run;
    use turnbase_engines::{conquest::Conquest, reversi::Reversi};
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        match game {
            ServeCommand::Conquest(args) => run(Conquest, args).await,
            ServeCommand::Reversi(args) => run(Reversi, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("turnbase: engine: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `turnbase engine check`.
fn engine_check(url: Option<String>, spawn: Option<String>) -> ExitCode {
    use turnbase_engine_kit::check;
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let (report, spawned) = match (url, spawn) {
            (_, Some(command)) => {
                let mut spawned = match check::Spawned::start(&command).await {
                    Ok(spawned) => spawned,
                    Err(err) => {
                        eprintln!("turnbase: --spawn: {err:#}");
                        return ExitCode::from(2);
                    }
                };
                let url = spawned.url().to_string();
                println!("checking the engine started by {command:?} at {url}");
                (check::run(&url, Some(&mut spawned)).await, Some(spawned))
            }
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    eprintln!("turnbase: URL: {url:?} is not an http:// or https:// URL");
                    return ExitCode::from(2);
                }
                println!("checking the engine at {url}");
                (check::run(&url, None).await, None)
            }
            (None, None) => {
                eprintln!("turnbase: give the engine's URL or --spawn COMMAND");
                return ExitCode::from(2);
            }
        };
        if let Some(spawned) = spawned {
            spawned.stop().await;
        }
        print!("{}", report.table());
        if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

fn tail(
    url: String,
    cursor: Option<String>,
    client_id: Option<String>,
    data_dir: &std::path::Path,
) -> ExitCode {
    let url = match turnbase_gateway::config::parse_push_url(&url) {
        Ok(url) => url,
        Err(message) => {
            eprintln!("turnbase: --url: {message}");
            return ExitCode::from(2);
        }
    };
    // The secret comes from the environment or the file `up` keeps it in,
    // never the command line (where any user of the machine could read it).
    let file = data_dir.join(turnbase_backend::config::INTERNAL_TOKEN_FILE);
    let secret = match std::env::var("BACKEND_INTERNAL_TOKEN") {
        Ok(secret) if !secret.is_empty() => secret,
        _ => match std::fs::read_to_string(&file) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
            _ => {
                eprintln!(
                    "turnbase: BACKEND_INTERNAL_TOKEN: set it to the backend's internal secret (its push listener only streams to holders of it), or point --data-dir at the data folder of a `turnbase up` (no {} there)",
                    file.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let client_id = client_id
        .unwrap_or_else(|| format!("tail-{}", turnbase_gateway::config::default_client_id()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("turnbase: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(push_tail::tail(&url, &secret, cursor, client_id));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn migrate(config: &Config, telemetry: &Telemetry) -> i32 {
    let code = match turnbase_backend::open_database(config).await {
        Ok(db) => {
            db.close().await;
            println!("migrations applied; the database schema is current");
            0
        }
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "migration failed");
            eprintln!("turnbase: {err:#}");
            1
        }
    };
    let _ = telemetry.shutdown();
    code
}

/// What [`serve`] runs besides the backend.
enum Stack {
    /// `turnbase backend`: the backend alone.
    BackendOnly,
    /// `turnbase up`: the gateway beside it (configured from the same
    /// optional file) and the banner.
    Up { config_file: Option<PathBuf> },
}

/// Runs the backend, and the rest of the `stack`.
async fn serve(config: Config, telemetry: Telemetry, stack: Stack) -> i32 {
    let caught = ShutdownSignals::listen();
    let (banner, gateway_config_file) = match stack {
        Stack::BackendOnly => (false, None),
        Stack::Up { config_file } => (true, config_file),
    };
    let backend_config = config.clone();
    let data_dir = config.data_dir.clone();
    let admin = match &config.accounts.service.admin_email {
        Some(email) => format!("{email} (signs in by code)"),
        None => "none; set BACKEND_ADMIN_EMAIL to make one".into(),
    };
    let mail = match &config.mail.delivery {
        turnbase_backend::config::MailDelivery::Folder(dir) => {
            format!("written to {} (no SMTP relay configured)", dir.display())
        }
        turnbase_backend::config::MailDelivery::Smtp { .. } => {
            "sent through BACKEND_SMTP_URL".into()
        }
    };
    let token_file = config.internal_token_file.clone();
    if let Err(err) = turnbase_backend::config::write_internal_token_file(&config) {
        eprintln!(
            "turnbase: cannot keep the internal secret in {}: {err}",
            token_file
                .as_deref()
                .unwrap_or(data_dir.as_path())
                .display()
        );
        return 1;
    }
    let app = match App::start(config, telemetry.clone(), VERSION).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "startup failed");
            eprintln!("turnbase: {err:#}");
            return 1;
        }
    };
    let gateway = if banner {
        let gateway_config = match gateway_config_for_up(
            &backend_config,
            Some(&app),
            gateway_config_file.as_deref(),
        ) {
            Ok(c) => c,
            Err(err) => {
                eprintln!("turnbase: {err}");
                app.shutdown().await;
                return 2;
            }
        };
        match Gateway::start(
            gateway_config,
            telemetry.clone(),
            turnbase_gateway::StartOptions::EMBEDDED,
        )
        .await
        {
            Ok(g) => Some(g),
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "gateway startup failed");
                eprintln!("turnbase: {err:#}");
                app.shutdown().await;
                return 1;
            }
        }
    } else {
        None
    };
    if let Some(gateway) = &gateway {
        let base = format!("http://{}", app.http_addr);
        let edge = format!("http://{}", gateway.http_addr);
        println!("Turnbase {VERSION} is up. Use the gateway:");
        println!("  Play:     {edge}/  (the web client; operators: {edge}/admin/)");
        println!("  Gateway:  {edge}/api/v1/  (REST, and live events at {edge}/api/v1/events)");
        println!("  Keys:     {edge}/.well-known/turnbase-signing-keys");
        println!("  Backend:  {base}/api/v1/  (behind the gateway; admin API here)");
        println!("  OpenAPI:  {base}/api/v1/openapi.json");
        println!(
            "  Push:     http://{} (gRPC, for gateways)",
            app.grpc_push_addr
        );
        println!("  Health:   {base}/healthz  {base}/readyz");
        if let Some(metrics) = app.metrics_addr {
            println!("  Metrics:  http://{metrics}/metrics");
        }
        println!("  Data:     {}", data_dir.display());
        match &token_file {
            Some(file) => println!(
                "  Secret:   {} (the internal secret; `turnbase push tail` reads it there)",
                file.display()
            ),
            None => println!("  Secret:   BACKEND_INTERNAL_TOKEN, as you set it"),
        }
        println!("  Mail:     {mail}");
        println!("  Admin:    {admin}");
        println!("Sign in: POST {edge}/api/v1/public/auth/email/start {{\"email\": …}}, then");
        println!("         POST {edge}/api/v1/public/auth/email/verify with the mailed code.");
        println!("Press Ctrl-C to stop.");
    }
    match gateway {
        // The edge stops first (clients are told to reconnect), then the
        // backend: on a signal, when a gateway component fails, or when a
        // backend component does.
        Some(gateway) => {
            let mut app = app;
            let edge = gateway
                .run_until(async {
                    tokio::select! {
                        () = signals(caught) => {}
                        cause = app.failure() => {
                            eprintln!("turnbase: {cause}; stopping");
                        }
                    }
                })
                .await;
            let backend = app.shutdown().await;
            let edge_code = finish(edge);
            let backend_code = finish(backend);
            edge_code.max(backend_code)
        }
        None => finish(app.run_until(signals(caught)).await),
    }
}
