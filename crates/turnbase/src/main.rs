//! The `turnbase` command: runs the whole stack (`up`), the backend alone
//! (`backend`), or applies migrations (`migrate`).
//!
//! Exit codes: 0 after a clean stop, 1 when starting or stopping failed
//! (including a missed shutdown deadline), 2 for invalid configuration or
//! command-line usage.

mod push_tail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use turnbase_backend::config::Profile;
use turnbase_backend::{App, Config};
use turnbase_core::lifecycle::shutdown_signal;
use turnbase_core::telemetry::Telemetry;

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
    /// Apply database migrations and exit.
    Migrate,
    /// Operator tools for the push stream.
    #[command(subcommand)]
    Push(PushCommand),
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = match cli.command {
        Command::Push(PushCommand::Tail {
            url,
            cursor,
            client_id,
        }) => return tail(url, cursor, client_id),
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
    let config = match Config::load(profile, std::env::vars(), cli.config.as_deref()) {
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
    let code = runtime.block_on(start(run, config));
    // Do not wait for tasks abandoned at a missed deadline: exit now.
    std::process::exit(code);
}

/// The commands that run on the backend configuration.
enum Run {
    Up,
    Backend,
    Migrate,
}

async fn start(run: Run, config: Config) -> i32 {
    let telemetry = match Telemetry::init(&config.telemetry) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("turnbase: cannot start telemetry: {err:#}");
            return 1;
        }
    };
    match run {
        Run::Migrate => migrate(&config, &telemetry).await,
        Run::Up => serve(config, telemetry, true).await,
        Run::Backend => serve(config, telemetry, false).await,
    }
}

fn tail(url: String, cursor: Option<String>, client_id: Option<String>) -> ExitCode {
    let url = match turnbase_gateway::config::parse_push_url(&url) {
        Ok(url) => url,
        Err(message) => {
            eprintln!("turnbase: --url: {message}");
            return ExitCode::from(2);
        }
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
    let code = runtime.block_on(push_tail::tail(&url, cursor, client_id));
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

async fn serve(config: Config, telemetry: Telemetry, banner: bool) -> i32 {
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
    let app = match App::start(config, telemetry.clone(), VERSION).await {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "startup failed");
            eprintln!("turnbase: {err:#}");
            return 1;
        }
    };
    if banner {
        let base = format!("http://{}", app.http_addr);
        println!("Turnbase {VERSION} is up.");
        println!("  API:      {base}/api/v1/");
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
        println!("  Mail:     {mail}");
        println!("  Admin:    {admin}");
        println!("Sign in: POST {base}/api/v1/public/auth/email/start {{\"email\": …}}, then");
        println!("         POST {base}/api/v1/public/auth/email/verify with the mailed code.");
        println!("Press Ctrl-C to stop.");
    }
    let report = app
        .run_until(async {
            shutdown_signal().await;
            // A second signal while stopping means "stop now".
            tokio::spawn(async {
                shutdown_signal().await;
                eprintln!("turnbase: second signal; exiting without finishing shutdown");
                std::process::exit(1);
            });
        })
        .await;
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
