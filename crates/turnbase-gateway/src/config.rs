//! The gateway's configuration: every `GATEWAY_*` variable ([`VARIABLES`],
//! mirrored by the README table) and the parsed [`GatewayConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use turnbase_core::config::{
    ConfigError, Reader, Secret, Source, VarSpec, parse_bool, parse_duration,
    parse_positive_duration, parse_rate, parse_secret, parse_size_positive, parse_socket_addr,
    parse_string, parse_usize_positive,
};
use turnbase_core::limiter::Rate;
use turnbase_core::telemetry::{
    TelemetryConfig, parse_exporter, parse_log_format, parse_log_level,
};

pub const PREFIX: &str = "GATEWAY_";

use turnbase_core::var;

/// Every gateway variable; the README table is checked against it.
pub const VARIABLES: &[VarSpec] = &[
    var!(
        "GATEWAY_HTTP_ADDR",
        Some("127.0.0.1:8090"),
        "Address of the public edge: the REST API, live events and the signing keys."
    ),
    var!(
        "GATEWAY_BACKEND_URL",
        Some("http://127.0.0.1:8080"),
        "The backend's HTTP API (`BACKEND_HTTP_ADDR`) as an `http://` URL."
    ),
    var!(
        "GATEWAY_GRPC_PUSH_URL",
        Some("http://127.0.0.1:8081"),
        "The backend's push listener (`BACKEND_GRPC_PUSH_ADDR`) as an `http://` URL."
    ),
    var!(
        "GATEWAY_INTERNAL_TOKEN",
        None,
        "The backend's `BACKEND_INTERNAL_TOKEN`, for resolving sessions and subscribing to the push stream. Required (`turnbase up` shares its own). Secret."
    ),
    var!(
        "GATEWAY_SIGNING_KEY_FILE",
        None,
        "File holding the Ed25519 keys of event envelopes, 64 hex digits per line: the first signs, all are published (for rotation). Required; `turnbase up` generates one in the data folder."
    ),
    var!(
        "GATEWAY_CLIENT_ID",
        None,
        "This gateway's id on the push stream; unset means the host name plus a random suffix. Two gateways must not share one."
    ),
    var!(
        "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
        Some("500ms"),
        "First wait before reconnecting to the push stream; doubles per failure, ±20% jitter."
    ),
    var!(
        "GATEWAY_PUSH_RECONNECT_MAX_BACKOFF",
        Some("30s"),
        "Longest wait between push reconnects."
    ),
    var!(
        "GATEWAY_PUSH_KEEPALIVE",
        Some("10s"),
        "How often the gateway pings the backend over the push stream; without an answer within as long again it reconnects (a backend that vanished without closing the connection)."
    ),
    var!(
        "GATEWAY_HTTP_CORS_ORIGINS",
        None,
        "Comma-separated origins allowed to call the edge from a browser, or `*`; the edge then answers CORS for every route (forwarded ones included, whose own CORS headers it drops). Unset sends no CORS headers and passes the backend's through."
    ),
    var!(
        "GATEWAY_EXPOSE_ADMIN",
        Some("false"),
        "Forward `/api/v1/admin/*` (for admin sessions only: 401/403 at the edge otherwise) and `/api/v1/internal/*`, and serve the admin console at `/admin/`; unset, all three are 404 at the edge. `turnbase up` sets it."
    ),
    var!(
        "GATEWAY_HTTP_BODY_LIMIT",
        Some("1MiB"),
        "Largest request body forwarded (413 above it)."
    ),
    var!(
        "GATEWAY_HTTP_REQUEST_TIMEOUT",
        Some("30s"),
        "Longest time a forwarded request may take (504 after it)."
    ),
    var!(
        "GATEWAY_HTTP_DRAIN_GRACE",
        Some("500ms"),
        "After a stop signal, requests arriving on open keep-alive connections are still answered this long (with `Connection: close`) instead of being dropped."
    ),
    var!(
        "GATEWAY_WRITE_TIMEOUT",
        Some("10s"),
        "A write to a client (a REST answer, SSE or WebSocket events) that makes no progress this long drops the connection, freeing its slot: a client that stopped reading cannot hold the gateway's memory."
    ),
    var!(
        "GATEWAY_RATE_PER_IP",
        Some("100/1s"),
        "Requests (and event connections) per client address: `count/period`."
    ),
    var!(
        "GATEWAY_RATE_PER_SESSION",
        Some("50/1s"),
        "Requests per session token on `/api/v1/user/*`: `count/period`."
    ),
    var!(
        "GATEWAY_SESSION_CACHE_TTL",
        Some("10s"),
        "How long a resolved session is reused before asking the backend again (revocations drop it at once)."
    ),
    var!(
        "GATEWAY_TICKET_TTL",
        Some("30s"),
        "Lifetime of a one-use event ticket from `POST /api/v1/user/events/ticket`."
    ),
    var!(
        "GATEWAY_RESUME_WINDOW",
        Some("2m"),
        "How long delivered envelopes stay resumable per user."
    ),
    var!(
        "GATEWAY_RESUME_MAX_EVENTS",
        Some("256"),
        "Most envelopes kept per user for resuming."
    ),
    var!(
        "GATEWAY_RESUME_MAX_BYTES",
        Some("256KiB"),
        "Most envelope bytes kept per user for resuming."
    ),
    var!(
        "GATEWAY_RESUME_MAX_TOTAL_BYTES",
        Some("256MiB"),
        "Most envelope bytes kept for resuming across all users; above it, a user receiving an event gives up their oldest ones first."
    ),
    var!(
        "GATEWAY_MAX_CONNECTIONS",
        Some("100000"),
        "Most live-event connections this gateway holds; further ones get 503 with `Retry-After`."
    ),
    var!(
        "GATEWAY_MAX_CONNECTIONS_PER_USER",
        Some("32"),
        "Most live-event connections one account holds at once; further ones get 429."
    ),
    var!(
        "GATEWAY_CLIENT_QUEUE_MESSAGES",
        Some("256"),
        "Messages queued for one connection before it is closed as a slow consumer."
    ),
    var!(
        "GATEWAY_CLIENT_QUEUE_BYTES",
        Some("1MiB"),
        "Bytes queued for one connection before it is closed as a slow consumer."
    ),
    var!(
        "GATEWAY_WS_PING_INTERVAL",
        Some("20s"),
        "How often an idle WebSocket is pinged (SSE gets a comment line)."
    ),
    var!(
        "GATEWAY_WS_IDLE_TIMEOUT",
        Some("60s"),
        "A WebSocket that sends nothing (not even a pong) this long is closed."
    ),
    var!(
        "GATEWAY_WS_MAX_MESSAGE",
        Some("64KiB"),
        "Largest WebSocket message or frame accepted from a client (close 1009 above it)."
    ),
    var!(
        "GATEWAY_SHUTDOWN_TIMEOUT",
        Some("15s"),
        "Deadline for the whole shutdown."
    ),
    var!(
        "GATEWAY_LOG_FORMAT",
        Some("auto"),
        "`text`, `json`, or `auto` (text on a terminal, JSON otherwise)."
    ),
    var!(
        "GATEWAY_LOG_LEVEL",
        Some("info"),
        "Log filter, e.g. `info` or `info,turnbase_gateway=debug`."
    ),
    var!(
        "GATEWAY_OTEL_TRACES_EXPORTER",
        Some("none"),
        "Trace exporter: `none`, `stdout` or `otlp`."
    ),
    var!(
        "GATEWAY_OTEL_METRICS_EXPORTER",
        Some("none"),
        "Metrics exporter: `none`, `stdout` or `otlp`."
    ),
    var!(
        "GATEWAY_OTEL_EXPORTER_OTLP_ENDPOINT",
        Some("http://127.0.0.1:4318"),
        "OTLP/HTTP collector base URL for the `otlp` exporters."
    ),
    var!(
        "GATEWAY_OTEL_METRICS_INTERVAL",
        Some("60s"),
        "How often the metrics exporter sends."
    ),
    var!(
        "GATEWAY_METRICS_ADDR",
        None,
        "Address of the Prometheus `/metrics` listener; unset means no listener."
    ),
];

#[derive(Debug, Clone)]
pub struct PushClientConfig {
    pub url: String,
    /// The backend's internal secret (`GATEWAY_INTERNAL_TOKEN`), which
    /// the push listener asks of every subscriber.
    pub secret: Secret<String>,
    pub client_id: String,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// HTTP/2 ping interval on the push connection, and how long an
    /// answer may take before the connection counts as dead.
    pub keepalive: Duration,
}

/// Which command the configuration is for: `turnbase up` supplies what
/// production must set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Gateway,
    Up,
}

/// Bounds of one connection and of the per-user resume window.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    pub resume_window: Duration,
    pub resume_max_events: usize,
    pub resume_max_bytes: usize,
    pub resume_max_total_bytes: usize,
    pub queue_messages: usize,
    pub queue_bytes: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub max_message: usize,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    /// Header and write deadlines and the drain grace of the edge.
    pub serve: turnbase_core::serve::ServeOptions,
    pub backend_url: String,
    pub internal_token: Secret<String>,
    pub signing_key_file: PathBuf,
    pub push: PushClientConfig,
    pub expose_admin: bool,
    pub cors: turnbase_core::cors::CorsOrigins,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub rate_per_ip: Rate,
    pub rate_per_session: Rate,
    pub session_cache_ttl: Duration,
    pub ticket_ttl: Duration,
    pub limits: EdgeLimits,
    pub shutdown_timeout: Duration,
    pub telemetry: TelemetryConfig,
    pub metrics_addr: Option<SocketAddr>,
}

impl GatewayConfig {
    /// Reads `GATEWAY_*` from `env` over the optional TOML file. For
    /// `up`, `defaults` fills what production must set (the backend's
    /// addresses, the shared secret, the key file in the data folder).
    pub fn load(
        profile: Profile,
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
        defaults: &[(&str, String)],
    ) -> Result<GatewayConfig, ConfigError> {
        let mut source = Source::load(PREFIX, VARIABLES, env, file);
        if profile == Profile::Up {
            for (name, value) in defaults {
                source.set_default(name, value);
            }
        }
        let mut r = Reader::new(&source, VARIABLES);
        let http_addr = r.get("GATEWAY_HTTP_ADDR", parse_socket_addr);
        let backend_url = r.get("GATEWAY_BACKEND_URL", parse_push_url);
        let internal_token = r
            .required("GATEWAY_INTERNAL_TOKEN", parse_secret)
            .unwrap_or_else(|| Secret::new(String::new()));
        let push = push_config(&mut r, internal_token.clone());
        let signing_key_file = r
            .required("GATEWAY_SIGNING_KEY_FILE", parse_string)
            .map(PathBuf::from)
            .unwrap_or_default();
        let limits = EdgeLimits {
            resume_window: r.get("GATEWAY_RESUME_WINDOW", parse_positive_duration),
            resume_max_events: r.get("GATEWAY_RESUME_MAX_EVENTS", parse_usize_positive),
            resume_max_bytes: r.get("GATEWAY_RESUME_MAX_BYTES", parse_size_positive),
            resume_max_total_bytes: r.get("GATEWAY_RESUME_MAX_TOTAL_BYTES", parse_size_positive),
            queue_messages: r.get("GATEWAY_CLIENT_QUEUE_MESSAGES", parse_usize_positive),
            queue_bytes: r.get("GATEWAY_CLIENT_QUEUE_BYTES", parse_size_positive),
            ping_interval: r.get("GATEWAY_WS_PING_INTERVAL", parse_positive_duration),
            idle_timeout: r.get("GATEWAY_WS_IDLE_TIMEOUT", parse_positive_duration),
            max_message: r.get("GATEWAY_WS_MAX_MESSAGE", parse_size_positive),
            max_connections: r.get("GATEWAY_MAX_CONNECTIONS", parse_usize_positive),
            max_connections_per_user: r
                .get("GATEWAY_MAX_CONNECTIONS_PER_USER", parse_usize_positive),
        };
        if limits.ping_interval >= limits.idle_timeout
            && !r.has_problem("GATEWAY_WS_PING_INTERVAL")
            && !r.has_problem("GATEWAY_WS_IDLE_TIMEOUT")
        {
            r.report(
                "GATEWAY_WS_PING_INTERVAL",
                "must be shorter than GATEWAY_WS_IDLE_TIMEOUT".into(),
            );
        }
        let metrics_addr = r.optional("GATEWAY_METRICS_ADDR", parse_socket_addr);
        let serve = turnbase_core::serve::ServeOptions {
            write_timeout: r.get("GATEWAY_WRITE_TIMEOUT", parse_positive_duration),
            drain_grace: r.get("GATEWAY_HTTP_DRAIN_GRACE", parse_duration),
            ..turnbase_core::serve::ServeOptions::default()
        };
        let config = GatewayConfig {
            http_addr,
            serve,
            backend_url,
            internal_token,
            signing_key_file,
            push,
            expose_admin: r.get("GATEWAY_EXPOSE_ADMIN", parse_bool),
            cors: r
                .optional("GATEWAY_HTTP_CORS_ORIGINS", turnbase_core::cors::parse_cors)
                .unwrap_or(turnbase_core::cors::CorsOrigins::None),
            body_limit: r.get("GATEWAY_HTTP_BODY_LIMIT", parse_size_positive),
            request_timeout: r.get("GATEWAY_HTTP_REQUEST_TIMEOUT", parse_positive_duration),
            rate_per_ip: r.get("GATEWAY_RATE_PER_IP", parse_rate),
            rate_per_session: r.get("GATEWAY_RATE_PER_SESSION", parse_rate),
            session_cache_ttl: r.get("GATEWAY_SESSION_CACHE_TTL", parse_duration),
            ticket_ttl: r.get("GATEWAY_TICKET_TTL", parse_positive_duration),
            limits,
            shutdown_timeout: r.get("GATEWAY_SHUTDOWN_TIMEOUT", parse_positive_duration),
            telemetry: TelemetryConfig {
                service_name: "turnbase-gateway",
                log_format: r.get("GATEWAY_LOG_FORMAT", parse_log_format),
                log_level: r.get("GATEWAY_LOG_LEVEL", parse_log_level),
                traces: r.get("GATEWAY_OTEL_TRACES_EXPORTER", parse_exporter),
                metrics: r.get("GATEWAY_OTEL_METRICS_EXPORTER", parse_exporter),
                otlp_endpoint: r.get("GATEWAY_OTEL_EXPORTER_OTLP_ENDPOINT", parse_push_url),
                metrics_interval: r.get("GATEWAY_OTEL_METRICS_INTERVAL", parse_positive_duration),
                prometheus: metrics_addr.is_some(),
            },
            metrics_addr,
        };
        if let Some(m) = metrics_addr
            && m.port() != 0
            && m.port() == config.http_addr.port()
        {
            r.report(
                "GATEWAY_METRICS_ADDR",
                format!("{m} is also GATEWAY_HTTP_ADDR; the two listeners need different ports"),
            );
        }
        r.finish()?;
        Ok(config)
    }
}

impl PushClientConfig {
    /// Only the push client's variables (used by `turnbase push tail`
    /// and tests).
    pub fn load(
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let source = Source::load(PREFIX, VARIABLES, env, file);
        let mut r = Reader::new(&source, VARIABLES);
        let secret = r
            .required("GATEWAY_INTERNAL_TOKEN", parse_secret)
            .unwrap_or_else(|| Secret::new(String::new()));
        let push = push_config(&mut r, secret);
        r.finish()?;
        Ok(push)
    }
}

fn push_config(r: &mut Reader<'_>, secret: Secret<String>) -> PushClientConfig {
    let url = r.get("GATEWAY_GRPC_PUSH_URL", parse_push_url);
    let client_id = r
        .optional("GATEWAY_CLIENT_ID", parse_client_id)
        .unwrap_or_else(default_client_id);
    let base_backoff = r.get(
        "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
        parse_positive_duration,
    );
    let max_backoff = r.get(
        "GATEWAY_PUSH_RECONNECT_MAX_BACKOFF",
        parse_positive_duration,
    );
    if base_backoff > max_backoff
        && !r.has_problem("GATEWAY_PUSH_RECONNECT_BASE_BACKOFF")
        && !r.has_problem("GATEWAY_PUSH_RECONNECT_MAX_BACKOFF")
    {
        r.report(
            "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
            "must not be longer than GATEWAY_PUSH_RECONNECT_MAX_BACKOFF".into(),
        );
    }
    PushClientConfig {
        url,
        secret,
        client_id,
        base_backoff,
        max_backoff,
        keepalive: r.get("GATEWAY_PUSH_KEEPALIVE", parse_positive_duration),
    }
}

/// An `http://host:port` URL (TLS to the backend is not supported yet).
pub fn parse_push_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text:?} is not an http:// URL"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
        return Err(format!("{text:?} is not an http://host:port URL"));
    }
    Ok(format!("http://{authority}"))
}

fn parse_client_id(text: &str) -> Result<String, String> {
    if text.len() > 256 || text.chars().any(char::is_control) {
        return Err("must be at most 256 printable characters".into());
    }
    parse_string(text)
}

/// The host name plus a random suffix, so that two gateways on one host
/// (or a restarted one racing its predecessor) do not replace each other.
pub fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// The README's configuration table for the gateway.
pub fn markdown_table() -> String {
    turnbase_core::config::markdown_table(VARIABLES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The push client's configuration from `pairs` and a valid secret.
    fn load(pairs: &[(&str, &str)]) -> Result<PushClientConfig, ConfigError> {
        PushClientConfig::load(
            std::iter::once((
                "GATEWAY_INTERNAL_TOKEN",
                "push-client-secret-0123456789abcdef",
            ))
            .chain(pairs.iter().copied())
            .map(|(k, v)| (k.to_string(), v.to_string())),
            None,
        )
    }

    #[test]
    fn the_push_client_needs_the_internal_secret() {
        let err = PushClientConfig::load(std::iter::empty(), None).expect_err("no secret");
        assert!(err.to_string().contains("GATEWAY_INTERNAL_TOKEN"), "{err}");
    }

    #[test]
    fn defaults() {
        let c = load(&[]).expect("defaults are valid");
        assert_eq!(c.url, "http://127.0.0.1:8081");
        assert_eq!(c.base_backoff, Duration::from_millis(500));
        assert_eq!(c.max_backoff, Duration::from_secs(30));
        let (host, suffix) = c.client_id.rsplit_once('-').expect("host-suffix");
        assert!(!host.is_empty());
        assert_eq!(suffix.len(), 8);
        assert_ne!(
            c.client_id,
            load(&[]).expect("valid").client_id,
            "random suffix"
        );
    }

    #[test]
    fn invalid_values_name_their_variable() {
        type Env<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Env<'_>, &str, &str)] = &[
            (
                &[("GATEWAY_GRPC_PUSH_URL", "127.0.0.1:8081")],
                "GATEWAY_GRPC_PUSH_URL",
                "not an http://",
            ),
            (
                &[("GATEWAY_GRPC_PUSH_URL", "https://backend:8081")],
                "GATEWAY_GRPC_PUSH_URL",
                "not an http://",
            ),
            (
                &[("GATEWAY_GRPC_PUSH_URL", "http://a/b")],
                "GATEWAY_GRPC_PUSH_URL",
                "host:port",
            ),
            (
                &[("GATEWAY_PUSH_RECONNECT_BASE_BACKOFF", "0s")],
                "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
                "greater than zero",
            ),
            (
                &[("GATEWAY_PUSH_RECONNECT_MAX_BACKOFF", "soon")],
                "GATEWAY_PUSH_RECONNECT_MAX_BACKOFF",
                "not a duration",
            ),
            (
                &[
                    ("GATEWAY_PUSH_RECONNECT_BASE_BACKOFF", "1m"),
                    ("GATEWAY_PUSH_RECONNECT_MAX_BACKOFF", "30s"),
                ],
                "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
                "must not be longer",
            ),
            (
                &[("GATEWAY_CLIENT_ID", "a\u{7}b")],
                "GATEWAY_CLIENT_ID",
                "printable",
            ),
        ];
        for (env, name, expected) in cases {
            let err = load(env).expect_err("refused");
            assert_eq!(err.problems.len(), 1, "{env:?}: {err}");
            assert_eq!(err.problems[0].subject, *name, "{env:?}: {err}");
            assert!(err.problems[0].message.contains(expected), "{env:?}: {err}");
        }
    }

    fn gateway(profile: Profile, pairs: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        let defaults = [
            ("GATEWAY_INTERNAL_TOKEN", "shared-secret".to_string()),
            ("GATEWAY_SIGNING_KEY_FILE", "/data/key".to_string()),
        ];
        GatewayConfig::load(
            profile,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            None,
            &defaults,
        )
    }

    #[test]
    fn the_gateway_needs_its_secret_and_key_outside_up() {
        let err = gateway(Profile::Gateway, &[]).expect_err("required");
        let subjects: Vec<&str> = err.problems.iter().map(|p| p.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["GATEWAY_INTERNAL_TOKEN", "GATEWAY_SIGNING_KEY_FILE"]
        );
        let c = gateway(Profile::Up, &[]).expect("up fills them");
        assert_eq!(c.internal_token.expose(), "shared-secret");
        assert!(
            !format!("{c:?}").contains("shared-secret"),
            "the secret is not printed"
        );
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8090");
        assert_eq!(c.backend_url, "http://127.0.0.1:8080");
        assert_eq!(c.rate_per_ip.count, 100);
        assert_eq!(c.limits.queue_bytes, 1024 * 1024);
        assert!(!c.expose_admin);
    }

    #[test]
    fn invalid_edge_values_name_their_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("GATEWAY_RATE_PER_IP", "fast", "is not a rate"),
            ("GATEWAY_RATE_PER_SESSION", "0/1s", "above zero"),
            ("GATEWAY_CLIENT_QUEUE_BYTES", "0", "greater than zero"),
            ("GATEWAY_RESUME_MAX_EVENTS", "many", "not"),
            (
                "GATEWAY_WS_PING_INTERVAL",
                "2m",
                "shorter than GATEWAY_WS_IDLE_TIMEOUT",
            ),
            ("GATEWAY_BACKEND_URL", "backend:8080", "not an http://"),
            ("GATEWAY_EXPOSE_ADMIN", "perhaps", "is not a boolean"),
            (
                "GATEWAY_HTTP_CORS_ORIGINS",
                "play.example.org",
                "is not an origin",
            ),
            (
                "GATEWAY_METRICS_ADDR",
                "127.0.0.1:8090",
                "is also GATEWAY_HTTP_ADDR",
            ),
        ];
        for (name, value, expected) in cases {
            let err = gateway(Profile::Up, &[(name, value)]).expect_err("refused");
            assert_eq!(err.problems.len(), 1, "{name}={value}: {err}");
            assert_eq!(err.problems[0].subject, *name, "{err}");
            assert!(
                err.problems[0].message.contains(expected),
                "{name}={value}: {err}"
            );
        }
    }

    #[test]
    fn readme_table_matches_the_variable_list() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
                .expect("README.md at the repository root");
        let begin = "<!-- gateway-config:begin -->\n";
        let start = readme
            .find(begin)
            .expect("README has the gateway-config markers")
            + begin.len();
        let stop = readme[start..]
            .find("<!-- gateway-config:end -->")
            .expect("end marker")
            + start;
        let expected = markdown_table();
        assert!(
            readme[start..stop] == expected,
            "the README's gateway configuration table differs from VARIABLES; \
             put this between the markers:\n{expected}"
        );
    }
}
