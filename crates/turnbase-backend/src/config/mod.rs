//! The backend's configuration: every `BACKEND_*` variable, its default and
//! meaning ([`VARIABLES`], which the README table mirrors), and the parsed,
//! validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use turnbase_core::config::{self, ConfigError, Reader, Secret, Source, VarSpec};
use turnbase_core::telemetry::TelemetryConfig;

mod accounts;
mod http;
mod lobby;
mod mail;
mod notify;
mod process;
mod push;
mod runtime;
mod storage;
mod turns;
pub use notify::NotifySettings;

pub use accounts::{AccountsSettings, INTERNAL_TOKEN_FILE, write_internal_token_file};
pub use http::HttpConfig;
pub use lobby::{EngineSource, LobbySettings};
pub use mail::{MailConfig, MailDelivery};
pub use push::GrpcPushConfig;
pub use runtime::{DockerSettings, RuntimeSettings};
pub use storage::{DatabaseConfig, DatabaseTarget};
pub use turnbase_core::cors::CorsOrigins;

pub const PREFIX: &str = "BACKEND_";

/// Every backend variable, area by area (each area's file owns its slice
/// and its reader). The README's configuration table is generated from
/// this list, and a test keeps the two equal.
pub static VARIABLES: LazyLock<Vec<VarSpec>> = LazyLock::new(|| {
    [
        storage::VARIABLES,
        http::VARIABLES,
        push::VARIABLES,
        process::VARIABLES,
        mail::VARIABLES,
        accounts::VARIABLES,
        lobby::VARIABLES,
        runtime::VARIABLES,
        turns::VARIABLES,
        notify::VARIABLES,
    ]
    .concat()
});

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
    pub lobby: LobbySettings,
    pub runtime: runtime::RuntimeSettings,
    pub turns: turnbase_turns::TurnsConfig,
    pub notify: NotifySettings,
}

impl Config {
    /// Reads the configuration from `env` layered over the optional TOML file.
    pub fn load(
        profile: Profile,
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut source = Source::load(PREFIX, &VARIABLES, env, file);
        let mut internal_token_file = None;
        if profile == Profile::Up {
            for (name, value) in UP_DEFAULTS.iter().chain(runtime::UP_DEFAULTS) {
                source.set_default(name, value);
            }
            if source.get("BACKEND_INTERNAL_TOKEN").is_none() {
                // `up` runs the gateway in the same process and makes the
                // secret itself, kept in a 0600 file of the data folder so
                // that `turnbase push tail` can read it and sign-in codes
                // (hashed under a key derived from it) outlive a restart.
                let dir = source
                    .get("BACKEND_DATA_DIR")
                    .unwrap_or(storage::DEFAULT_DATA_DIR);
                let file = Path::new(dir).join(INTERNAL_TOKEN_FILE);
                let token = accounts::read_internal_token_file(&file).unwrap_or_else(|| {
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
        let mut r = Reader::new(source, &VARIABLES);
        let (data_dir, database) = storage::read(&mut r);
        let http = http::read(&mut r);
        let grpc_push = push::read(&mut r);
        let (shutdown_timeout, telemetry, metrics_addr) = process::read(&mut r);
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
        let mail = mail::read(&mut r, &data_dir);
        let accounts = accounts::read(&mut r);
        let lobby = lobby::read(&mut r);
        let runtime = runtime::read(&mut r, &data_dir);
        let turns = turns::read(&mut r);
        let notify = notify::read(&mut r);
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
            lobby,
            runtime,
            turns,
            notify,
        })
    }
}

/// Whether two listen addresses would fight over one port.
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
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
    config::markdown_table(&VARIABLES)
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
            ("BACKEND_LOBBY_SWEEP_INTERVAL", "0s", "greater than zero"),
            (
                "BACKEND_LOBBY_PENDING_REGISTRATION_TTL",
                "soon",
                "is not a duration",
            ),
            (
                "BACKEND_ENGINES_FILE",
                "/nonexistent/engines.toml",
                "is not a readable file",
            ),
            (
                "BACKEND_RUNTIME_PLACEMENT",
                "everywhere",
                "is not one of per_game, shared",
            ),
            (
                "BACKEND_RUNTIME_DRIVER",
                "k8s",
                "is not one of process, docker",
            ),
            (
                "BACKEND_DOCKER_HOST",
                "tcp://docker:2375",
                "neither unix:///path nor http://host:port",
            ),
            (
                "BACKEND_RUNTIME_DOCKER_NETWORK",
                "my network",
                "is not a Docker network name",
            ),
            ("BACKEND_RUNTIME_CPUS", "0", "is not a number of CPUs"),
            ("BACKEND_RUNTIME_MEMORY", "lots", "is not a size"),
            ("BACKEND_RUNTIME_WORKER_POOL_SIZE", "0", "greater than zero"),
            ("BACKEND_RUNTIME_START_ATTEMPTS", "0", "greater than zero"),
            (
                "BACKEND_RUNTIME_KEEP_FINISHED",
                "forever",
                "is not a duration",
            ),
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
