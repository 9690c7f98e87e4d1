//! The engine protocol over HTTP: routes, request parsing with precise
//! errors, the mapping of [`HostError`] to statuses, and the process around
//! them (`--listen`, `--data-dir`, the startup line, graceful shutdown).
//!
//! Only this module knows HTTP status codes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::host::{DEFAULT_LIMITS, Host, HostError};
use crate::protocol::{
    ControlRequest, ErrorBody, ErrorDetail, InitRequest, Limits, OrdersRequest, Problem,
};
use crate::{Game, protocol};

/// How an engine process is started; every kit engine takes these flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Where to listen, e.g. 127.0.0.1:7700 (port 0: any free port; the
    /// startup line names it).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Where the games' files live (created when missing).
    #[arg(long, default_value = "engine-data")]
    pub data_dir: PathBuf,
    /// The largest request body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_LIMITS.max_body_bytes)]
    pub max_body_bytes: u64,
    /// The most orders one player may send for one turn.
    #[arg(long, default_value_t = DEFAULT_LIMITS.max_orders_per_turn)]
    pub max_orders_per_turn: u32,
    /// Log filter, e.g. info or debug.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Where traces go: none, stdout or otlp.
    #[arg(long, default_value = "none", value_parser = turnbase_core::telemetry::parse_exporter)]
    pub traces: turnbase_core::telemetry::Exporter,
    /// The OTLP/HTTP collector for `--traces otlp`.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    pub otlp_endpoint: String,
}

impl EngineArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_orders_per_turn: self.max_orders_per_turn,
        }
    }
}

/// Runs an engine for `rules` until SIGINT or SIGTERM: prints one startup
/// line on stdout (`… listening on http://ADDR …`), serves, then finishes
/// the requests under way (each of which has already synced its files).
pub async fn run<G: Game>(rules: G, args: EngineArgs) -> anyhow::Result<()> {
    let kind = rules.describe().kind;
    let telemetry =
        turnbase_core::telemetry::Telemetry::init(&turnbase_core::telemetry::TelemetryConfig {
            service_name: "turnbase-engine",
            log_format: turnbase_core::telemetry::LogFormat::Auto,
            log_level: args.log.clone(),
            traces: args.traces,
            metrics: turnbase_core::telemetry::Exporter::None,
            otlp_endpoint: args.otlp_endpoint.clone(),
            metrics_interval: std::time::Duration::from_secs(60),
            prometheus: false,
        })?;
    let mut signals = turnbase_core::lifecycle::ShutdownSignals::listen();
    let host = Host::open(rules, &args.data_dir, args.limits()).map_err(|err| {
        anyhow::anyhow!("cannot use --data-dir {}: {err}", args.data_dir.display())
    })?;
    let host = Arc::new(host);
    let listener = turnbase_core::http::bind(args.listen, "--listen").await?;
    let address = listener.local_addr()?;
    let manifest = host.manifest();
    println!(
        "turnbase engine {} {} (protocol {}, {}) listening on http://{address}, data in {}, {} games on disk",
        manifest.kind,
        manifest.version,
        manifest.protocol,
        match manifest.mode {
            protocol::Mode::Simultaneous => "simultaneous",
            protocol::Mode::Sequential => "sequential",
        },
        args.data_dir.display(),
        host.games_on_disk(),
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let app = router(host, telemetry.meter());
    turnbase_core::serve::serve(
        listener,
        app,
        async move { signals.next().await },
        turnbase_core::serve::ServeOptions::default(),
    )
    .await?;
    tracing::info!(kind, "engine stopped");
    let _ = telemetry.shutdown();
    Ok(())
}

/// The protocol's routes for `host`.
pub fn router<G: Game>(host: Arc<Host<G>>, meter: &opentelemetry::metrics::Meter) -> Router {
    let limit = usize::try_from(host.manifest().limits.max_body_bytes).unwrap_or(usize::MAX);
    let metrics = turnbase_core::http::HttpMetrics::new(meter);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/manifest", get(manifest::<G>))
        .route("/games/{game}", axum::routing::delete(delete::<G>))
        .route("/games/{game}/init", post(init::<G>))
        .route("/games/{game}/state", get(state::<G>))
        .route("/games/{game}/turns/{turn}/resolve", post(resolve::<G>))
        .route("/games/{game}/players/{player}/orders", put(orders::<G>))
        .route("/games/{game}/players/{player}/view", get(view::<G>))
        .route("/games/{game}/players/{player}/options", get(options::<G>))
        .route("/games/{game}/players/{player}/control", put(control::<G>))
        .with_state(host)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(
            turnbase_core::http::normalize_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            turnbase_core::http::observe,
        ))
}

/// An error answer.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<Problem>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<HostError> for Failure {
    fn from(err: HostError) -> Self {
        let message = err.to_string();
        match err {
            HostError::UnknownGame(_) => {
                Failure::new(StatusCode::NOT_FOUND, "game_not_found", message)
            }
            HostError::UnknownPlayer { .. } => {
                Failure::new(StatusCode::NOT_FOUND, "player_not_found", message)
            }
            HostError::InvalidId(_) => Failure::new(StatusCode::BAD_REQUEST, "invalid_id", message),
            HostError::Conflict { code, .. } => Failure::new(StatusCode::CONFLICT, code, message),
            HostError::Invalid { code, details, .. } => Failure {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code,
                message,
                details,
            },
            HostError::Storage(err) => {
                tracing::error!(%err, "engine storage failed");
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_failed",
                    "the engine could not read or write its files",
                )
            }
        }
    }
}

/// Parses a JSON body: broken JSON is 400 `malformed_json`, JSON of the
/// wrong shape 422 `invalid_body`, each naming line and column.
fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|err| {
        use serde_json::error::Category;
        match err.classify() {
            Category::Data => Failure {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_body",
                message: format!("the body does not fit the request: {err}"),
                details: vec![Problem::new("", err.to_string())],
            },
            _ => Failure::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {err}"),
            ),
        }
    })
}

/// Runs a host operation on the blocking pool (it syncs files), inside the
/// request's span.
async fn blocking<G: Game, T: Send + 'static>(
    host: Arc<Host<G>>,
    op: impl FnOnce(&Host<G>) -> Result<T, HostError> + Send + 'static,
) -> Result<T, Failure> {
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| op(&host))).await {
        Ok(result) => result.map_err(Failure::from),
        Err(err) => {
            tracing::error!(%err, "the game's rules failed");
            Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "engine_failed",
                "the engine failed while handling the request; the game is unchanged",
            ))
        }
    }
}

type Shared<G> = State<Arc<Host<G>>>;
type Params = Query<HashMap<String, String>>;

async fn manifest<G: Game>(State(host): Shared<G>) -> Response {
    axum::Json(host.manifest().clone()).into_response()
}

async fn init<G: Game>(
    State(host): Shared<G>,
    Path(game): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    let request: InitRequest = parse_body(&body)?;
    let (created, state) = blocking(host, move |h| h.init(&game, request)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(state)).into_response())
}

async fn orders<G: Game>(
    State(host): Shared<G>,
    Path((game, player)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Result<Response, Failure> {
    let dry_run = match params.get("dry_run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("dry_run must be true or false, not {other:?}"),
            ));
        }
    };
    let request: OrdersRequest = parse_body(&body)?;
    let answer = blocking(host, move |h| {
        h.orders(&game, &player, request.turn, request.orders, dry_run)
    })
    .await?;
    Ok(axum::Json(answer).into_response())
}

async fn resolve<G: Game>(
    State(host): Shared<G>,
    Path((game, turn)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let turn = parse_turn(&turn, "the turn in the path")?;
    let resolution = blocking(host, move |h| h.resolve(&game, turn)).await?;
    Ok(axum::Json(resolution).into_response())
}

async fn view<G: Game>(
    State(host): Shared<G>,
    Path((game, player)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response, Failure> {
    let after = params
        .get("turn")
        .map(|t| parse_turn(t, "the turn query parameter"))
        .transpose()?;
    let view = blocking(host, move |h| h.view(&game, &player, after)).await?;
    Ok(axum::Json(view).into_response())
}

async fn state<G: Game>(
    State(host): Shared<G>,
    Path(game): Path<String>,
) -> Result<Response, Failure> {
    let state = blocking(host, move |h| h.state(&game)).await?;
    Ok(axum::Json(state).into_response())
}

async fn options<G: Game>(
    State(host): Shared<G>,
    Path((game, player)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let options = blocking(host, move |h| h.options(&game, &player)).await?;
    Ok(axum::Json(options).into_response())
}

async fn control<G: Game>(
    State(host): Shared<G>,
    Path((game, player)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Failure> {
    let request: ControlRequest = parse_body(&body)?;
    let state = blocking(host, move |h| h.control(&game, &player, request.bot)).await?;
    Ok(axum::Json(state).into_response())
}

async fn delete<G: Game>(
    State(host): Shared<G>,
    Path(game): Path<String>,
) -> Result<Response, Failure> {
    blocking(host, move |h| h.delete(&game)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn parse_turn(text: &str, what: &str) -> Result<u32, Failure> {
    text.parse::<u32>().map_err(|_| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_turn",
            format!("{what} must be a whole number from 0 to 4294967295, not {text:?}"),
        )
    })
}
