//! The backend's configuration: every `BACKEND_*` variable, its default and
//! meaning ([`VARIABLES`], which the README table mirrors), and the parsed,
//! validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use turnbase_core::config::{
    self, ConfigError, Reader, Secret, Source, VarSpec, parse_byte_size, parse_duration,
    parse_positive_duration, parse_rate, parse_socket_addr, parse_string, parse_u32_positive,
};
use turnbase_core::telemetry::{
    TelemetryConfig, parse_exporter, parse_log_format, parse_log_level,
};
use turnbase_push::{PushConfig, RingLimits};
use turnbase_store::DatabaseOptions;

pub const PREFIX: &str = "BACKEND_";

use turnbase_core::var;

/// Every backend variable. The README's configuration table is generated
/// from this list, and a test keeps the two equal.
pub const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_DATA_DIR",
        Some(DEFAULT_DATA_DIR),
        "Folder for the SQLite database and other local state."
    ),
    var!(
        "BACKEND_DATABASE_URL",
        None,
        "Postgres URL (`postgres://user:pass@host/db`, TLS options such as `?sslmode=verify-full&sslrootcert=ca.pem`); unset means SQLite in the data folder. Secret."
    ),
    var!(
        "BACKEND_DATABASE_MAX_CONNECTIONS",
        Some("10"),
        "Largest number of pooled database connections."
    ),
    var!(
        "BACKEND_DATABASE_CONNECT_TIMEOUT",
        Some("5s"),
        "How long to wait for a database connection."
    ),
    var!(
        "BACKEND_DATABASE_STATEMENT_TIMEOUT",
        Some("10s"),
        "Postgres: the longest one statement may wait for the server. Past it the call fails as `database_unavailable` and a connection that stopped answering is closed, so a server that vanished without closing its connections (a partition, a failover) cannot hold requests, workers or pool slots."
    ),
    var!(
        "BACKEND_SQLITE_BUSY_TIMEOUT",
        Some("5s"),
        "How long a SQLite writer waits for the lock before failing."
    ),
    var!(
        "BACKEND_HTTP_ADDR",
        Some("127.0.0.1:8080"),
        "Address of the HTTP API."
    ),
    var!(
        "BACKEND_HTTP_BODY_LIMIT",
        Some("1MiB"),
        "Largest request body accepted (413 above it)."
    ),
    var!(
        "BACKEND_HTTP_REQUEST_TIMEOUT",
        Some("30s"),
        "Longest time a request may take (503 after it)."
    ),
    var!(
        "BACKEND_HTTP_CORS_ORIGINS",
        None,
        "Comma-separated origins allowed by CORS, or `*`; unset sends no CORS headers."
    ),
    var!(
        "BACKEND_HTTP_SHUTDOWN_TIMEOUT",
        Some("10s"),
        "Deadline for draining in-flight HTTP requests at shutdown."
    ),
    var!(
        "BACKEND_HTTP_DRAIN_GRACE",
        Some("500ms"),
        "After a stop signal, requests arriving on open keep-alive connections are still answered this long (with `Connection: close`) instead of being dropped."
    ),
    var!(
        "BACKEND_HTTP_WRITE_TIMEOUT",
        Some("30s"),
        "A write to a client that makes no progress this long resets the connection."
    ),
    var!(
        "BACKEND_GRPC_PUSH_ADDR",
        Some("127.0.0.1:8081"),
        "Address of the gRPC push listener that gateways subscribe to."
    ),
    var!(
        "BACKEND_GRPC_PUSH_SHUTDOWN_TIMEOUT",
        Some("5s"),
        "Deadline for push streams to deliver what was published and end at shutdown."
    ),
    var!(
        "BACKEND_FRESHNESS_WINDOW",
        None,
        "How long published events stay resumable in the push ring. Required (`turnbase up` uses `5m`)."
    ),
    var!(
        "BACKEND_PUSH_RING_CAPACITY",
        Some("65536"),
        "Most events the push ring holds."
    ),
    var!(
        "BACKEND_PUSH_RING_MAX_BYTES",
        Some("64MiB"),
        "Most encoded bytes the push ring holds."
    ),
    var!(
        "BACKEND_PUSH_MAX_PAYLOAD_BYTES",
        Some("64KiB"),
        "Largest JSON payload of one push event."
    ),
    var!(
        "BACKEND_PUSH_HEARTBEAT_INTERVAL",
        Some("15s"),
        "Idle time after which a push stream gets a heartbeat."
    ),
    var!(
        "BACKEND_SHUTDOWN_TIMEOUT",
        Some("30s"),
        "Deadline for the whole shutdown; the smaller of this and a component's own deadline wins."
    ),
    var!(
        "BACKEND_LOG_FORMAT",
        Some("auto"),
        "`text`, `json`, or `auto` (text on a terminal, JSON otherwise)."
    ),
    var!(
        "BACKEND_LOG_LEVEL",
        Some("info"),
        "Log filter, e.g. `info` or `info,turnbase_store=debug`."
    ),
    var!(
        "BACKEND_OTEL_TRACES_EXPORTER",
        Some("none"),
        "Trace exporter: `none`, `stdout` or `otlp`."
    ),
    var!(
        "BACKEND_OTEL_METRICS_EXPORTER",
        Some("none"),
        "Metrics exporter: `none`, `stdout` or `otlp`."
    ),
    var!(
        "BACKEND_OTEL_EXPORTER_OTLP_ENDPOINT",
        Some("http://127.0.0.1:4318"),
        "OTLP/HTTP collector base URL for the `otlp` exporters."
    ),
    var!(
        "BACKEND_OTEL_METRICS_INTERVAL",
        Some("60s"),
        "How often the metrics exporter sends."
    ),
    var!(
        "BACKEND_METRICS_ADDR",
        None,
        "Address of the Prometheus `/metrics` listener; unset means no listener."
    ),
    var!(
        "BACKEND_MAIL_DELIVERY",
        None,
        "`smtp` or `file` (one `.eml` per mail in `BACKEND_MAIL_DIR`). Unset: `smtp` when `BACKEND_SMTP_URL` is set; `turnbase up` falls back to `file`, `turnbase backend` refuses to start."
    ),
    var!(
        "BACKEND_SMTP_URL",
        None,
        "SMTP relay: `smtp://host:25`, `smtps://user:pass@host:465`, or `smtp://user:pass@host:587?tls=required` for STARTTLS. Secret."
    ),
    var!(
        "BACKEND_SMTP_CA_FILE",
        None,
        "PEM file of certificates to trust for the relay besides the public roots (a private CA)."
    ),
    var!(
        "BACKEND_SMTP_TIMEOUT",
        Some("30s"),
        "Timeout of each SMTP step; a whole send may take three times this."
    ),
    var!(
        "BACKEND_MAIL_FROM",
        Some("Turnbase <noreply@turnbase.localhost>"),
        "Sender of every mail; its domain also names the Message-IDs."
    ),
    var!(
        "BACKEND_MAIL_DIR",
        None,
        "Folder for `file` delivery; unset means `mail` in the data folder."
    ),
    var!(
        "BACKEND_MAIL_WORKERS",
        Some("4"),
        "Mails sent at once (worker slots, and SMTP connections pooled)."
    ),
    var!(
        "BACKEND_MAIL_LEASE",
        Some("5m"),
        "How long a claimed mail is reserved for its worker; after that another worker may take it."
    ),
    var!(
        "BACKEND_MAIL_MAX_ATTEMPTS",
        Some("10"),
        "Attempts before a transiently failing mail is given up."
    ),
    var!(
        "BACKEND_MAIL_RETRY_BASE",
        Some("30s"),
        "Wait after the first failed attempt; doubles per attempt, ±20% jitter."
    ),
    var!(
        "BACKEND_MAIL_RETRY_MAX",
        Some("1h"),
        "Longest wait between attempts."
    ),
    var!(
        "BACKEND_MAIL_POLL_INTERVAL",
        Some("1s"),
        "How often idle workers look for due mail (new mail wakes them at once)."
    ),
    var!(
        "BACKEND_MAIL_CLAIM_BATCH",
        Some("32"),
        "Mails a worker slot claims at a time; their attempts are recorded together."
    ),
    var!(
        "BACKEND_MAIL_RETENTION",
        Some("720h"),
        "How long sent and failed mail is kept (with its attempts, for the admin API) before it is deleted; an idempotency key can be reused after that."
    ),
    var!(
        "BACKEND_MAIL_SECRET_RETENTION",
        Some("1h"),
        "How long a sent (or failed) mail that carries a secret, such as a sign-in code, keeps its body; then the body is erased and the delivery record stays for `BACKEND_MAIL_RETENTION`."
    ),
    var!(
        "BACKEND_INTERNAL_TOKEN",
        None,
        "Shared secret gateways send to `/api/v1/internal/*` and the push listener (at least 32 characters). Required (`turnbase up` makes one per start). Secret."
    ),
    var!(
        "BACKEND_ADMIN_EMAIL",
        None,
        "Address of the first admin: created (or promoted) at startup; signs in by code like anyone."
    ),
    var!(
        "BACKEND_LOGIN_CODE_TTL",
        Some("10m"),
        "How long a mailed sign-in code stays valid."
    ),
    var!(
        "BACKEND_LOGIN_CODE_TRIES",
        Some("5"),
        "Wrong codes allowed before a code is void."
    ),
    var!(
        "BACKEND_LOGIN_EMAIL_RATE",
        Some("5/15m"),
        "Sign-in codes mailed per address: `count/period`."
    ),
    var!(
        "BACKEND_LOGIN_IP_RATE",
        Some("60/1m"),
        "Sign-in requests (codes, verifications, guests, upgrades) per client address: `count/period`."
    ),
    var!(
        "BACKEND_SESSION_CACHE_CAPACITY",
        Some("100000"),
        "Sessions kept in the in-memory session cache."
    ),
    var!(
        "BACKEND_SESSION_LAST_SEEN_RESOLUTION",
        Some("5m"),
        "A session's last-seen time is written at most this often."
    ),
    var!(
        "BACKEND_GUEST_RETENTION",
        Some("720h"),
        "Guest accounts older than this holding no seat in any game are deleted."
    ),
    var!(
        "BACKEND_GUEST_REAP_INTERVAL",
        Some("1h"),
        "How often the guest reaper runs."
    ),
    var!(
        "BACKEND_GEOIP_DB",
        None,
        "MaxMind-format country database (e.g. GeoLite2-Country.mmdb); unset means countries are unknown."
    ),
    var!(
        "BACKEND_TRUSTED_PROXIES",
        None,
        "Comma-separated addresses or CIDR networks whose `X-Forwarded-For` is believed (e.g. the gateways)."
    ),
    var!(
        "BACKEND_ACCOUNTS_FLUSH_INTERVAL",
        Some("30s"),
        "How often sign-in counts per country and last-seen times are written (and at shutdown)."
    ),
];

#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    Sqlite { path: PathBuf },
    Postgres { url: Secret<String> },
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub target: DatabaseTarget,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub busy_timeout: Duration,
}

impl DatabaseConfig {
    pub fn options(&self) -> DatabaseOptions {
        match &self.target {
            DatabaseTarget::Sqlite { path } => DatabaseOptions::Sqlite {
                path: path.clone(),
                busy_timeout: self.busy_timeout,
                max_connections: self.max_connections,
            },
            DatabaseTarget::Postgres { url } => DatabaseOptions::Postgres {
                url: url.expose().clone(),
                max_connections: self.max_connections,
                connect_timeout: self.connect_timeout,
                statement_timeout: self.statement_timeout,
            },
        }
    }
}

pub use turnbase_core::cors::CorsOrigins;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub cors: CorsOrigins,
    pub shutdown_timeout: Duration,
    /// Header and write deadlines and the drain grace of the listener.
    pub serve: turnbase_core::serve::ServeOptions,
}

#[derive(Debug, Clone)]
pub struct GrpcPushConfig {
    pub addr: SocketAddr,
    pub shutdown_timeout: Duration,
    pub service: PushConfig,
}

/// Which command the configuration is for: `turnbase up` fills in
/// embedded defaults that production must set deliberately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Backend,
    Up,
}

/// What `turnbase up` uses where `turnbase backend` insists on a choice.
/// The gateway of `up` runs on this machine, so its `X-Forwarded-For` is
/// believed.
const UP_DEFAULTS: &[(&str, &str)] = &[
    ("BACKEND_FRESHNESS_WINDOW", "5m"),
    ("BACKEND_TRUSTED_PROXIES", "127.0.0.1, ::1"),
];

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum MailDelivery {
    Smtp {
        url: Secret<String>,
        timeout: Duration,
        /// PEM certificates trusted besides the public roots.
        extra_roots: Option<Vec<u8>>,
    },
    Folder(PathBuf),
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub delivery: MailDelivery,
    pub from: turnbase_mail::Mailbox,
    pub worker: turnbase_mail::WorkerConfig,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Under `up` without `BACKEND_INTERNAL_TOKEN`: the file that keeps
    /// the secret `up` made (see [`write_internal_token_file`]).
    pub internal_token_file: Option<PathBuf>,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub grpc_push: GrpcPushConfig,
    pub shutdown_timeout: Duration,
    pub telemetry: TelemetryConfig,
    pub metrics_addr: Option<SocketAddr>,
    pub mail: MailConfig,
    pub accounts: AccountsSettings,
}

/// Accounts, sessions, the reaper and geo.
#[derive(Debug, Clone)]
pub struct AccountsSettings {
    pub service: turnbase_accounts::AccountsConfig,
    pub internal_token: Secret<String>,
    pub geoip_db: Option<PathBuf>,
    pub trusted_proxies: turnbase_accounts::TrustedProxies,
    pub guest_retention: Duration,
    pub guest_reap_interval: Duration,
    pub flush_interval: Duration,
}

impl Config {
    /// Reads the configuration from `env` layered over the optional TOML file.
    pub fn load(
        profile: Profile,
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut source = Source::load(PREFIX, VARIABLES, env, file);
        let mut internal_token_file = None;
        if profile == Profile::Up {
            for (name, value) in UP_DEFAULTS {
                source.set_default(name, value);
            }
            if source.get("BACKEND_INTERNAL_TOKEN").is_none() {
                // `up` runs the gateway in the same process and makes the
                // secret itself, kept in a 0600 file of the data folder so
                // that `turnbase push tail` can read it and sign-in codes
                // (hashed under a key derived from it) outlive a restart.
                let dir = source.get("BACKEND_DATA_DIR").unwrap_or(DEFAULT_DATA_DIR);
                let file = Path::new(dir).join(INTERNAL_TOKEN_FILE);
                let token = read_internal_token_file(&file).unwrap_or_else(|| {
                    Secret::new(
                        turnbase_accounts::SessionToken::generate()
                            .as_str()
                            .to_string(),
                    )
                });
                source.set_default("BACKEND_INTERNAL_TOKEN", token.expose());
                internal_token_file = Some(file);
            }
            if source.get("BACKEND_SMTP_URL").is_none() {
                source.set_default("BACKEND_MAIL_DELIVERY", "file");
            }
        }
        let mut config = Self::from_source(&source)?;
        config.internal_token_file = internal_token_file;
        Ok(config)
    }

    pub fn from_source(source: &Source) -> Result<Config, ConfigError> {
        let mut r = Reader::new(source, VARIABLES);
        let data_dir = PathBuf::from(r.get("BACKEND_DATA_DIR", parse_string));
        let database_url = r.optional("BACKEND_DATABASE_URL", parse_database_url);
        let database = DatabaseConfig {
            target: match database_url {
                Some(DatabaseUrl::Postgres(url)) => DatabaseTarget::Postgres { url },
                Some(DatabaseUrl::Sqlite(path)) => DatabaseTarget::Sqlite { path },
                None => DatabaseTarget::Sqlite {
                    path: data_dir.join("turnbase.db"),
                },
            },
            max_connections: r.get("BACKEND_DATABASE_MAX_CONNECTIONS", parse_u32_positive),
            connect_timeout: r.get("BACKEND_DATABASE_CONNECT_TIMEOUT", parse_positive_duration),
            statement_timeout: r.get(
                "BACKEND_DATABASE_STATEMENT_TIMEOUT",
                parse_positive_duration,
            ),
            busy_timeout: r.get("BACKEND_SQLITE_BUSY_TIMEOUT", parse_duration),
        };
        let http = HttpConfig {
            addr: r.get("BACKEND_HTTP_ADDR", parse_socket_addr),
            body_limit: r.get("BACKEND_HTTP_BODY_LIMIT", parse_body_limit),
            request_timeout: r.get("BACKEND_HTTP_REQUEST_TIMEOUT", parse_positive_duration),
            cors: r
                .optional("BACKEND_HTTP_CORS_ORIGINS", turnbase_core::cors::parse_cors)
                .unwrap_or(CorsOrigins::None),
            shutdown_timeout: r.get("BACKEND_HTTP_SHUTDOWN_TIMEOUT", parse_positive_duration),
            serve: turnbase_core::serve::ServeOptions {
                write_timeout: r.get("BACKEND_HTTP_WRITE_TIMEOUT", parse_positive_duration),
                drain_grace: r.get("BACKEND_HTTP_DRAIN_GRACE", parse_duration),
                ..turnbase_core::serve::ServeOptions::default()
            },
        };
        let freshness_window = r.required("BACKEND_FRESHNESS_WINDOW", parse_positive_duration);
        let grpc_push = GrpcPushConfig {
            addr: r.get("BACKEND_GRPC_PUSH_ADDR", parse_socket_addr),
            shutdown_timeout: r.get(
                "BACKEND_GRPC_PUSH_SHUTDOWN_TIMEOUT",
                parse_positive_duration,
            ),
            service: PushConfig {
                ring: RingLimits {
                    capacity: r.get("BACKEND_PUSH_RING_CAPACITY", parse_usize_positive),
                    max_bytes: r.get("BACKEND_PUSH_RING_MAX_BYTES", parse_size_positive),
                    max_age: freshness_window.unwrap_or(Duration::from_secs(1)),
                },
                max_payload_bytes: r.get("BACKEND_PUSH_MAX_PAYLOAD_BYTES", parse_size_positive),
                heartbeat_interval: r
                    .get("BACKEND_PUSH_HEARTBEAT_INTERVAL", parse_positive_duration),
                ..PushConfig::with_window(Duration::from_secs(1))
            },
        };
        let shutdown_timeout = r.get("BACKEND_SHUTDOWN_TIMEOUT", parse_positive_duration);
        let metrics_addr = r.optional("BACKEND_METRICS_ADDR", parse_socket_addr);
        let telemetry = TelemetryConfig {
            service_name: "turnbase-backend",
            log_format: r.get("BACKEND_LOG_FORMAT", parse_log_format),
            log_level: r.get("BACKEND_LOG_LEVEL", parse_log_level),
            traces: r.get("BACKEND_OTEL_TRACES_EXPORTER", parse_exporter),
            metrics: r.get("BACKEND_OTEL_METRICS_EXPORTER", parse_exporter),
            otlp_endpoint: r.get("BACKEND_OTEL_EXPORTER_OTLP_ENDPOINT", parse_http_url),
            metrics_interval: r.get("BACKEND_OTEL_METRICS_INTERVAL", parse_positive_duration),
            prometheus: metrics_addr.is_some(),
        };
        let mut listeners = vec![
            ("BACKEND_HTTP_ADDR", http.addr),
            ("BACKEND_GRPC_PUSH_ADDR", grpc_push.addr),
        ];
        listeners.extend(metrics_addr.map(|a| ("BACKEND_METRICS_ADDR", a)));
        for (i, (name, addr)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| clashes(*a, *addr)) {
                r.report(
                    name,
                    format!("{addr} is also {other}; the two listeners need different ports"),
                );
            }
        }
        let mail = mail_config(&mut r, &data_dir);
        let accounts = accounts_config(&mut r);
        r.finish()?;
        Ok(Config {
            data_dir,
            internal_token_file: None,
            database,
            http,
            grpc_push,
            shutdown_timeout,
            telemetry,
            metrics_addr,
            mail,
            accounts,
        })
    }
}

fn mail_config(r: &mut Reader<'_>, data_dir: &Path) -> MailConfig {
    let url = r.optional("BACKEND_SMTP_URL", parse_smtp_url);
    let timeout = r.get("BACKEND_SMTP_TIMEOUT", parse_positive_duration);
    let choice = r.optional("BACKEND_MAIL_DELIVERY", |t| {
        config::parse_choice(t, &[("smtp", true), ("file", false)])
    });
    let dir = r
        .optional("BACKEND_MAIL_DIR", parse_string)
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("mail"));
    let delivery = match (choice, url) {
        (Some(false), Some(_)) => {
            r.report(
                "BACKEND_MAIL_DELIVERY",
                "is file, but BACKEND_SMTP_URL is set too; choose one".into(),
            );
            MailDelivery::Folder(dir)
        }
        (Some(false), None) => MailDelivery::Folder(dir),
        (_, Some(url)) => MailDelivery::Smtp {
            url,
            timeout,
            extra_roots: r.optional("BACKEND_SMTP_CA_FILE", parse_pem_file),
        },
        (_, None) => {
            if !r.has_problem("BACKEND_SMTP_URL") && !r.has_problem("BACKEND_MAIL_DELIVERY") {
                r.report(
                    "BACKEND_SMTP_URL",
                    "is required to send mail; set it, or set BACKEND_MAIL_DELIVERY=file to write mail to a folder".into(),
                );
            }
            MailDelivery::Folder(dir)
        }
    };
    let from = r.get("BACKEND_MAIL_FROM", parse_mailbox);
    let retry_base = r.get("BACKEND_MAIL_RETRY_BASE", parse_positive_duration);
    let retry_max = r.get("BACKEND_MAIL_RETRY_MAX", parse_positive_duration);
    if retry_base > retry_max {
        r.report(
            "BACKEND_MAIL_RETRY_BASE",
            "must not be longer than BACKEND_MAIL_RETRY_MAX".into(),
        );
    }
    let worker = turnbase_mail::WorkerConfig {
        lease: r.get("BACKEND_MAIL_LEASE", parse_positive_duration),
        max_attempts: r.get("BACKEND_MAIL_MAX_ATTEMPTS", parse_u32_positive),
        retry_base,
        retry_max,
        concurrency: r.get("BACKEND_MAIL_WORKERS", parse_usize_positive),
        poll_interval: r.get("BACKEND_MAIL_POLL_INTERVAL", parse_positive_duration),
        claim_batch: r.get("BACKEND_MAIL_CLAIM_BATCH", parse_usize_positive),
        retention: r.get("BACKEND_MAIL_RETENTION", parse_positive_duration),
        secret_retention: r.get("BACKEND_MAIL_SECRET_RETENTION", parse_positive_duration),
    };
    MailConfig {
        delivery,
        from,
        worker,
    }
}

fn accounts_config(r: &mut Reader<'_>) -> AccountsSettings {
    let internal_token = r
        .required("BACKEND_INTERNAL_TOKEN", parse_internal_token)
        .unwrap_or_else(|| Secret::new(String::new()));
    let service = turnbase_accounts::AccountsConfig {
        code_key: turnbase_accounts::CodeKey::derive(internal_token.expose()),
        code_ttl: r.get("BACKEND_LOGIN_CODE_TTL", parse_positive_duration),
        code_tries: r.get("BACKEND_LOGIN_CODE_TRIES", parse_u32_positive),
        email_rate: r.get("BACKEND_LOGIN_EMAIL_RATE", parse_rate),
        ip_rate: r.get("BACKEND_LOGIN_IP_RATE", parse_rate),
        admin_email: r.optional("BACKEND_ADMIN_EMAIL", |t| {
            turnbase_mail::Email::parse(t).map_err(|e| e.to_string())
        }),
        session_cache_capacity: r.get("BACKEND_SESSION_CACHE_CAPACITY", parse_usize_positive),
        last_seen_resolution: r.get("BACKEND_SESSION_LAST_SEEN_RESOLUTION", parse_duration),
    };
    AccountsSettings {
        service,
        internal_token,
        geoip_db: r.optional("BACKEND_GEOIP_DB", parse_geoip_db),
        trusted_proxies: r
            .optional(
                "BACKEND_TRUSTED_PROXIES",
                turnbase_accounts::TrustedProxies::parse,
            )
            .unwrap_or_default(),
        guest_retention: r.get("BACKEND_GUEST_RETENTION", parse_positive_duration),
        guest_reap_interval: r.get("BACKEND_GUEST_REAP_INTERVAL", parse_positive_duration),
        flush_interval: r.get("BACKEND_ACCOUNTS_FLUSH_INTERVAL", parse_positive_duration),
    }
}

const DEFAULT_DATA_DIR: &str = "./turnbase-data";

/// Where `up` keeps the internal secret it made, in the data folder.
pub const INTERNAL_TOKEN_FILE: &str = "internal-token";

fn read_internal_token_file(path: &Path) -> Option<Secret<String>> {
    turnbase_core::private_fs::tighten(path);
    let text = std::fs::read_to_string(path).ok()?;
    parse_internal_token(text.trim()).ok()
}

/// Keeps the secret `up` uses in its 0600 file (in a 0700 data folder),
/// when the configuration says where.
pub fn write_internal_token_file(config: &Config) -> std::io::Result<()> {
    let Some(path) = &config.internal_token_file else {
        return Ok(());
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        turnbase_core::private_fs::create_private_dir(dir)?;
    }
    let token = config.accounts.internal_token.expose();
    if read_internal_token_file(path).is_some_and(|t| t.expose() == token) {
        return Ok(());
    }
    turnbase_core::private_fs::write_private(path, format!("{token}\n").as_bytes())
}

fn parse_internal_token(text: &str) -> Result<Secret<String>, String> {
    // The value is secret, so it is not echoed back.
    if text.chars().count() < 32 {
        return Err("must be at least 32 characters (e.g. `openssl rand -hex 32`)".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(Secret::new(text.to_string()))
}

fn parse_geoip_db(text: &str) -> Result<PathBuf, String> {
    // Opened here too, so that a bad file stops the start with the
    // variable's name rather than later.
    let path = PathBuf::from(text);
    turnbase_accounts::GeoIp::open(&path)?;
    Ok(path)
}

fn parse_pem_file(text: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(text).map_err(|e| format!("cannot read {text:?}: {e}"))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(format!("{text:?} holds no PEM certificate"));
    }
    Ok(pem)
}

fn parse_smtp_url(text: &str) -> Result<Secret<String>, String> {
    // The value may hold a password, so it is not echoed back (the reasons
    // `check_smtp_url` gives never quote it).
    match turnbase_mail::smtp::check_smtp_url(text) {
        Ok(()) => Ok(Secret::new(text.to_string())),
        Err(reason) => Err(format!(
            "{reason}; expected smtp://host:port, smtps://user:password@host:port or smtp://…?tls=required"
        )),
    }
}

fn parse_mailbox(text: &str) -> Result<turnbase_mail::Mailbox, String> {
    text.parse().map_err(|e| {
        format!("{text:?} is not a mailbox like `Turnbase <noreply@example.org>` ({e})")
    })
}

/// Whether two listen addresses would fight over one port.
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

enum DatabaseUrl {
    Postgres(Secret<String>),
    Sqlite(PathBuf),
}

fn parse_database_url(text: &str) -> Result<DatabaseUrl, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(DatabaseUrl::Postgres(Secret::new(text.to_string())));
    }
    if let Some(path) = text
        .strip_prefix("sqlite://")
        .or_else(|| text.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err("a sqlite: URL needs a file path, e.g. sqlite:./turnbase.db".into());
        }
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
    }
    // The value may hold a password, so it is not echoed back.
    Err("expected a postgres://… URL (or sqlite:PATH)".into())
}

fn parse_body_limit(text: &str) -> Result<usize, String> {
    let bytes = parse_byte_size(text)?;
    if bytes < 1024 {
        return Err(format!("{text:?} is too small; use at least 1KiB"));
    }
    usize::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

fn parse_usize_positive(text: &str) -> Result<usize, String> {
    let n = parse_u32_positive(text)?;
    usize::try_from(n).map_err(|_| format!("{text:?} is too large"))
}

fn parse_size_positive(text: &str) -> Result<usize, String> {
    match parse_byte_size(text)? {
        0 => Err("must be greater than zero".into()),
        n => usize::try_from(n).map_err(|_| format!("{text:?} is too large")),
    }
}

fn parse_http_url(text: &str) -> Result<String, String> {
    if (text.starts_with("http://") || text.starts_with("https://"))
        && text.len() > "https://".len()
    {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not an http:// or https:// URL"))
    }
}

/// The README's configuration table for the backend.
pub fn markdown_table() -> String {
    config::markdown_table(VARIABLES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnbase_core::telemetry::{Exporter, LogFormat};

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(
            Profile::Up,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            None,
        )
    }

    fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
        load(pairs)
            .expect_err("should be refused")
            .problems
            .into_iter()
            .map(|p| format!("{}: {}", p.subject, p.message))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(&[]).expect("the defaults are a valid config");
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.http.body_limit, 1024 * 1024);
        assert_eq!(c.telemetry.traces, Exporter::None);
        assert_eq!(c.telemetry.log_format, LogFormat::Auto);
        assert!(c.metrics_addr.is_none());
        assert!(matches!(
            &c.database.target,
            DatabaseTarget::Sqlite { path } if path == Path::new("./turnbase-data/turnbase.db")
        ));
    }

    #[test]
    fn valid_values() {
        let c = load(&[
            ("BACKEND_HTTP_ADDR", "0.0.0.0:9000"),
            ("BACKEND_SHUTDOWN_TIMEOUT", "500ms"),
            ("BACKEND_HTTP_SHUTDOWN_TIMEOUT", "720h"),
            ("BACKEND_HTTP_BODY_LIMIT", "64KiB"),
            (
                "BACKEND_HTTP_CORS_ORIGINS",
                "https://a.example, http://localhost:3000",
            ),
            ("BACKEND_DATABASE_URL", "postgres://u:pw@db/turnbase"),
            ("BACKEND_OTEL_TRACES_EXPORTER", "OTLP"),
            ("BACKEND_LOG_FORMAT", "json"),
            ("BACKEND_METRICS_ADDR", "127.0.0.1:9100"),
        ])
        .expect("valid");
        assert_eq!(c.shutdown_timeout, Duration::from_millis(500));
        assert_eq!(c.http.shutdown_timeout, Duration::from_secs(720 * 3600));
        assert_eq!(c.http.body_limit, 65_536);
        assert_eq!(
            c.http.cors,
            CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ])
        );
        assert_eq!(c.telemetry.traces, Exporter::Otlp);
        assert!(c.telemetry.prometheus);
        match &c.database.target {
            DatabaseTarget::Postgres { url } => {
                assert_eq!(url.expose(), "postgres://u:pw@db/turnbase");
                assert!(!format!("{c:?}").contains("pw@"), "the URL is secret");
            }
            other => panic!("expected postgres, got {other:?}"),
        }
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("BACKEND_SHUTDOWN_TIMEOUT", "nonsense", "is not a duration"),
            ("BACKEND_SHUTDOWN_TIMEOUT", "0s", "greater than zero"),
            ("BACKEND_HTTP_ADDR", "localhost", "is not a socket address"),
            ("BACKEND_HTTP_BODY_LIMIT", "12", "too small"),
            ("BACKEND_HTTP_BODY_LIMIT", "lots", "is not a size"),
            (
                "BACKEND_HTTP_CORS_ORIGINS",
                "*,https://a.example",
                "cannot be combined",
            ),
            ("BACKEND_HTTP_CORS_ORIGINS", "a.example", "is not an origin"),
            (
                "BACKEND_DATABASE_URL",
                "mysql://x",
                "expected a postgres://",
            ),
            ("BACKEND_DATABASE_URL", "sqlite:", "needs a file path"),
            ("BACKEND_DATABASE_MAX_CONNECTIONS", "0", "greater than zero"),
            (
                "BACKEND_OTEL_TRACES_EXPORTER",
                "carrier-pigeon",
                "is not one of none, stdout, otlp",
            ),
            (
                "BACKEND_OTEL_METRICS_EXPORTER",
                "prometheus",
                "is not one of",
            ),
            (
                "BACKEND_OTEL_EXPORTER_OTLP_ENDPOINT",
                "collector:4318",
                "is not an http",
            ),
            (
                "BACKEND_LOG_FORMAT",
                "xml",
                "is not one of auto, text, json",
            ),
            ("BACKEND_LOG_LEVEL", "info,[", "is not a log filter"),
            (
                "BACKEND_METRICS_ADDR",
                "127.0.0.1:8080",
                "is also BACKEND_HTTP_ADDR",
            ),
            (
                "BACKEND_GRPC_PUSH_ADDR",
                "0.0.0.0:8080",
                "is also BACKEND_HTTP_ADDR",
            ),
            ("BACKEND_FRESHNESS_WINDOW", "0s", "greater than zero"),
            ("BACKEND_PUSH_RING_CAPACITY", "0", "greater than zero"),
            ("BACKEND_PUSH_RING_MAX_BYTES", "huge", "is not a size"),
            ("BACKEND_PUSH_MAX_PAYLOAD_BYTES", "0", "greater than zero"),
            ("BACKEND_SMTP_URL", "mail.example:25", "expected smtp://"),
            (
                "BACKEND_SMTP_URL",
                "smtp://mail.example?tls=always",
                "not a TLS mode",
            ),
            (
                "BACKEND_SMTP_URL",
                "smtp://game@mail.example",
                "no password",
            ),
            (
                "BACKEND_MAIL_DELIVERY",
                "pigeon",
                "is not one of smtp, file",
            ),
            ("BACKEND_MAIL_FROM", "not a mailbox", "is not a mailbox"),
            ("BACKEND_MAIL_WORKERS", "0", "greater than zero"),
            ("BACKEND_MAIL_RETRY_BASE", "2h", "must not be longer"),
            ("BACKEND_INTERNAL_TOKEN", "short", "at least 32 characters"),
            ("BACKEND_ADMIN_EMAIL", "root", "not a valid email"),
            ("BACKEND_LOGIN_EMAIL_RATE", "5", "is not a rate"),
            ("BACKEND_LOGIN_IP_RATE", "0/1m", "above zero"),
            ("BACKEND_LOGIN_IP_RATE", "5/0s", "greater than zero"),
            (
                "BACKEND_GEOIP_DB",
                "/nonexistent.mmdb",
                "cannot open the GeoIP database",
            ),
            (
                "BACKEND_TRUSTED_PROXIES",
                "10.0.0.0/33",
                "not an IP address",
            ),
            ("BACKEND_GUEST_RETENTION", "0s", "greater than zero"),
            (
                "BACKEND_HTTP_ADR",
                "127.0.0.1:1",
                "did you mean BACKEND_HTTP_ADDR",
            ),
        ];
        for (name, value, expected) in cases {
            let got = problems(&[(name, value)]);
            assert_eq!(got.len(), 1, "{name}={value}: {got:?}");
            assert!(
                got[0].starts_with(&format!("{name}: ")) && got[0].contains(expected),
                "{name}={value}: got {got:?}, expected it to mention {expected:?}"
            );
        }
    }

    #[test]
    fn mail_delivery_needs_a_choice_in_production() {
        let base = || {
            vec![
                ("BACKEND_FRESHNESS_WINDOW".to_string(), "1m".to_string()),
                ("BACKEND_INTERNAL_TOKEN".to_string(), TOKEN.to_string()),
            ]
        };
        let err = Config::load(Profile::Backend, base(), None).expect_err("no SMTP");
        assert_eq!(err.problems[0].subject, "BACKEND_SMTP_URL", "{err}");
        let mut env = base();
        env.push(("BACKEND_MAIL_DELIVERY".into(), "file".into()));
        let c = Config::load(Profile::Backend, env, None).expect("file chosen explicitly");
        assert!(matches!(c.mail.delivery, MailDelivery::Folder(ref d) if d.ends_with("mail")));
        let mut env = base();
        env.push((
            "BACKEND_SMTP_URL".into(),
            "smtps://u:pw@mail.example:465".into(),
        ));
        let c = Config::load(Profile::Backend, env, None).expect("smtp");
        assert!(matches!(c.mail.delivery, MailDelivery::Smtp { .. }));
        assert!(!format!("{c:?}").contains("pw@"), "the SMTP URL is secret");
        let mut env = base();
        env.push((
            "BACKEND_SMTP_URL".into(),
            "smtp://mail.example:587?tls=required".into(),
        ));
        env.push(("BACKEND_SMTP_CA_FILE".into(), "/nonexistent/ca.pem".into()));
        let err = Config::load(Profile::Backend, env, None).expect_err("missing CA file");
        assert_eq!(err.problems[0].subject, "BACKEND_SMTP_CA_FILE", "{err}");
        assert!(err.problems[0].message.contains("cannot read"), "{err}");
        let up = load(&[]).expect("up writes mail to a folder");
        assert!(matches!(up.mail.delivery, MailDelivery::Folder(_)));
    }

    #[test]
    fn the_freshness_window_is_required_outside_up() {
        let file_mail = ("BACKEND_MAIL_DELIVERY".to_string(), "file".to_string());
        let token = ("BACKEND_INTERNAL_TOKEN".to_string(), TOKEN.to_string());
        let err = Config::load(
            Profile::Backend,
            vec![file_mail.clone(), token.clone()],
            None,
        )
        .expect_err("required");
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].subject, "BACKEND_FRESHNESS_WINDOW");
        assert!(err.problems[0].message.contains("required"), "{err}");
        let c = Config::load(
            Profile::Backend,
            vec![
                ("BACKEND_FRESHNESS_WINDOW".to_string(), "90s".to_string()),
                file_mail,
                token,
            ],
            None,
        )
        .expect("set");
        assert_eq!(c.grpc_push.service.ring.max_age, Duration::from_secs(90));
        let up = load(&[]).expect("up has a default");
        assert_eq!(up.grpc_push.service.ring.max_age, Duration::from_secs(300));
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_internal_token_is_required_outside_up_and_secret() {
        let env = vec![
            ("BACKEND_FRESHNESS_WINDOW".to_string(), "1m".to_string()),
            ("BACKEND_MAIL_DELIVERY".to_string(), "file".to_string()),
        ];
        let err = Config::load(Profile::Backend, env.clone(), None).expect_err("required");
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].subject, "BACKEND_INTERNAL_TOKEN");
        let mut with = env;
        with.push(("BACKEND_INTERNAL_TOKEN".into(), TOKEN.into()));
        let c = Config::load(Profile::Backend, with, None).expect("set");
        assert_eq!(c.accounts.internal_token.expose(), TOKEN);
        assert!(!format!("{c:?}").contains(TOKEN), "the token is secret");
        let a = load(&[]).expect("up makes one");
        let b = load(&[]).expect("up makes one");
        assert!(a.accounts.internal_token.expose().len() >= 32);
        assert_ne!(
            a.accounts.internal_token.expose(),
            b.accounts.internal_token.expose(),
            "a fresh secret per start"
        );
        let problems = problems(&[("BACKEND_INTERNAL_TOKEN", "x")]);
        assert!(!problems[0].contains("\"x\""), "not echoed: {problems:?}");
    }

    #[test]
    fn accounts_settings() {
        let geo = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/geo/GeoLite2-Country-Test.mmdb"
        );
        let c = load(&[
            ("BACKEND_LOGIN_EMAIL_RATE", "3/1h"),
            ("BACKEND_ADMIN_EMAIL", "Boss@Example.org"),
            ("BACKEND_GEOIP_DB", geo),
            ("BACKEND_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8"),
        ])
        .expect("valid");
        let s = &c.accounts.service;
        assert_eq!(s.email_rate.count, 3);
        assert_eq!(s.email_rate.per, Duration::from_secs(3600));
        assert_eq!(s.ip_rate.count, 60);
        assert_eq!(s.code_ttl, Duration::from_secs(600));
        assert_eq!(
            s.admin_email.as_ref().map(|e| e.as_str()),
            Some("Boss@example.org")
        );
        assert_eq!(c.accounts.guest_retention, Duration::from_secs(720 * 3600));
        assert_eq!(c.accounts.guest_reap_interval, Duration::from_secs(3600));
        assert!(c.accounts.geoip_db.is_some());
    }

    #[test]
    fn database_url_is_not_echoed_when_invalid() {
        let got = problems(&[("BACKEND_DATABASE_URL", "mysql://root:hunter2@db")]);
        assert!(!got[0].contains("hunter2"), "{got:?}");
    }

    #[test]
    fn smtp_url_passwords_are_not_echoed_when_invalid() {
        for url in [
            "smtp://game:hunter2@mail.example?tls=always",
            "smtps://game:hunter2@",
            "smtp://game:hunter2@mail.example:99999",
            "ftp://game:hunter2@mail.example",
        ] {
            let got = problems(&[("BACKEND_SMTP_URL", url)]);
            assert!(!got[0].contains("hunter2"), "{url}: {got:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = load(&[
            ("BACKEND_SHUTDOWN_TIMEOUT", "nonsense"),
            ("BACKEND_OTEL_TRACES_EXPORTER", "carrier-pigeon"),
        ])
        .expect_err("two problems");
        let text = err.to_string();
        assert!(text.contains("BACKEND_SHUTDOWN_TIMEOUT"), "{text}");
        assert!(text.contains("BACKEND_OTEL_TRACES_EXPORTER"), "{text}");
        assert!(
            text.starts_with("invalid configuration (2 problems)"),
            "{text}"
        );
    }

    #[test]
    fn readme_table_matches_the_variable_list() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
                .expect("README.md at the repository root");
        let begin = "<!-- backend-config:begin -->\n";
        let end = "<!-- backend-config:end -->";
        let start = readme
            .find(begin)
            .expect("README has the backend-config markers")
            + begin.len();
        let stop = readme[start..].find(end).expect("end marker") + start;
        let expected = markdown_table();
        assert!(
            readme[start..stop] == expected,
            "the README's backend configuration table differs from VARIABLES; \
             put this between the markers:\n{expected}"
        );
    }
}
