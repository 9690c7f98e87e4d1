//! Test support: every test gets a database of its own; a relay that
//! falls silent on demand ([`Partition`]).
//!
//! SQLite databases live in a temporary folder removed with the guard.
//! Postgres databases are created on the server named by
//! `TURNBASE_TEST_POSTGRES_URL` (the test command, `scripts/test`, starts a
//! throwaway cluster and sets it) and dropped with the guard.

mod partition;

pub use partition::Partition;

use std::time::Duration;

use sqlx::Connection as _;
use turnbase_store::DatabaseOptions;

/// The variable naming the Postgres server tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "TURNBASE_TEST_POSTGRES_URL";

/// Which database a test runs on (a name that engines and their drivers
/// will not collide with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A database owned by one test.
pub struct TestDb {
    pub options: DatabaseOptions,
    /// For Postgres, the URL of the database (`None` for SQLite).
    pub url: Option<String>,
    dir: tempfile::TempDir,
    cleanup: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: DbKind) -> TestDb {
        match backend {
            DbKind::Sqlite => Self::sqlite(),
            DbKind::Postgres => Self::postgres().await,
        }
    }

    /// A fresh database of `kind`, connected and migrated; keep the
    /// `TestDb` alive as long as the `Database` is used.
    pub async fn open_migrated(kind: DbKind) -> (TestDb, turnbase_store::Database) {
        let test_db = TestDb::new(kind).await;
        let db = turnbase_store::Database::connect(&test_db.options)
            .await
            .expect("the test database opens");
        db.migrate().await.expect("the test database migrates");
        (test_db, db)
    }

    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary folder can be created");
        TestDb {
            options: DatabaseOptions::Sqlite {
                path: dir.path().join("turnbase.db"),
                busy_timeout: Duration::from_secs(5),
                max_connections: 4,
            },
            url: None,
            dir,
            cleanup: None,
        }
    }

    pub async fn postgres() -> TestDb {
        let server = postgres_server_url();
        let name = format!("turnbase_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test Postgres at {server}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("the test database can be created");
        let url = with_database(&server, &name);
        TestDb {
            options: DatabaseOptions::Postgres {
                url: url.clone(),
                max_connections: 5,
                connect_timeout: Duration::from_secs(10),
                statement_timeout: Duration::from_secs(30),
            },
            url: Some(url),
            dir: tempfile::tempdir().expect("a temporary folder can be created"),
            cleanup: Some((server, name)),
        }
    }

    /// A folder owned by the test (the SQLite file lives in it).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropping the database needs a connection of its own; do it on a
        // separate thread so that a guard dropped inside a runtime is fine.
        if let Some((server, name)) = self.cleanup.take() {
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The server URL, or a panic that says how to provide one.
pub fn postgres_server_url() -> String {
    std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_URL_VAR} is not set: run the tests with scripts/test, which starts a \
             throwaway Postgres, or set it to a server where tests may create databases"
        )
    })
}

/// Replaces the database name in a Postgres URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// aiosmtpd with an authenticator: arguments port, user, password, maildir.
const LOGIN_SERVER: &str = r#"
import sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword
port, user, password, maildir = sys.argv[1:5]
def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
    return AuthResult(success=ok, handled=False)
controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=int(port),
    authenticator=check, auth_required=True, auth_require_tls=False)
controller.start()
threading.Event().wait()
"#;

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// How a [`SmtpSink`] speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    Starttls,
    Smtps,
}

/// A real SMTP server for tests: aiosmtpd (`pip install aiosmtpd`, or
/// Debian's `python3-aiosmtpd`) on a loopback port, storing what it
/// accepts in a Maildir that the test reads back.
pub struct SmtpSink {
    child: std::process::Child,
    pub port: u16,
    maildir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let port = free_port();
        Self::start_on(port)
    }

    /// Starts on a chosen port (to bring a "down" server back up).
    pub fn start_on(port: u16) -> SmtpSink {
        Self::start_with(port, &[])
    }

    /// Starts with STARTTLS required (`tls = Starttls`) or TLS from the
    /// first byte (`Smtps`), using the given certificate and key files.
    pub fn start_tls(tls: SinkTls, cert: &std::path::Path, key: &std::path::Path) -> SmtpSink {
        let port = free_port();
        let (cert_flag, key_flag) = match tls {
            SinkTls::Starttls => ("--tlscert", "--tlskey"),
            SinkTls::Smtps => ("--smtpscert", "--smtpskey"),
        };
        let args = [
            cert_flag.to_string(),
            cert.display().to_string(),
            key_flag.to_string(),
            key.display().to_string(),
        ];
        Self::start_with(port, &args)
    }

    /// Starts a server that takes mail only after `AUTH` with this user
    /// name and password (over plain text, as a relay on a private network
    /// may allow).
    pub fn start_with_login(user: &str, password: &str) -> SmtpSink {
        let port = free_port();
        Self::spawn(port, |python, maildir| {
            let mut command = std::process::Command::new(python);
            command
                .args(["-c", LOGIN_SERVER, &port.to_string(), user, password])
                .arg(maildir);
            command
        })
    }

    fn start_with(port: u16, extra: &[String]) -> SmtpSink {
        Self::spawn(port, |python, maildir| {
            let mut command = std::process::Command::new(python);
            command
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(extra)
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(maildir);
            command
        })
    }

    fn spawn(
        port: u16,
        command: impl FnOnce(&str, &std::path::Path) -> std::process::Command,
    ) -> SmtpSink {
        let dir = tempfile::tempdir().expect("a temporary folder can be created");
        let maildir = dir.path().join("maildir");
        let python = std::env::var("TURNBASE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let child = command(&python, &maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} -m aiosmtpd: {e}"));
        let mut sink = SmtpSink {
            child,
            port,
            maildir,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!("aiosmtpd exited ({status}); install it with `pip install aiosmtpd`");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for entry in entries.flatten() {
                    if let Ok(text) = std::fs::read_to_string(entry.path()) {
                        out.push(text);
                    }
                }
            }
        }
        out
    }

    /// The Message-ID header of every accepted message.
    pub fn message_ids(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                    .map(|l| l["message-id:".len()..].trim().to_string())
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Defines each named async test once per backend, in modules `sqlite` and
/// `postgres`; each function takes the [`DbKind`] to run on. Optionally
/// `flavor = "multi_thread";` first, for tests that need a second thread.
#[macro_export]
macro_rules! both_backends {
    (flavor = $flavor:literal; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = $flavor)]
                async fn $name() {
                    super::$name($crate::DbKind::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = $flavor)]
                async fn $name() {
                    super::$name($crate::DbKind::Postgres).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::both_backends!(flavor = "current_thread"; $($name),*);
    };
}

/// Runs raw SQL that a test needs (to set up a state no API makes, or to
/// look at a stored value) on either backend: `$body` is compiled once per
/// backend with `$pool` naming where to run it. On SQLite that is the
/// writing pool under the store's write turn, so even a test's write keeps
/// the write gate. `$db` is a `&turnbase_store::Database`.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            ::turnbase_store::Database::Sqlite(store) => {
                let turn = store.write_turn().await;
                let $pool = turn.pool();
                $body
            }
            ::turnbase_store::Database::Postgres(store) => {
                let $pool = store.pool();
                $body
            }
        }
    };
}
