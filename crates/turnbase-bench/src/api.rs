//! The API benchmark: guest sign-ups per second and authenticated
//! `GET /api/v1/user/me` per second, with latency percentiles, on SQLite
//! and on Postgres. The backend runs in a child process (this program in
//! the hidden `api-backend` mode); this process is the load, over loopback,
//! on keep-alive HTTP/1.1 connections, each sending one request at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde::{Deserialize, Serialize};

use crate::probe::{ChildProc, Latency, latency, usage, wait_for_parent};

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Connections (each with one request in flight).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Distinct sessions the `/me` phase spreads its requests over.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// A Postgres server where the benchmark may create a database; falls
    /// back to TURNBASE_TEST_POSTGRES_URL. Without one, Postgres is skipped.
    #[arg(long)]
    postgres_url: Option<String>,
}

#[derive(clap::Args)]
pub struct BackendArgs {
    /// Postgres URL; SQLite in a temporary folder when absent.
    #[arg(long)]
    database_url: Option<String>,
    /// Extra backend variables, `NAME=VALUE`.
    #[arg(long = "env")]
    env: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Started {
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    /// The backend's data folder (engines keep theirs under it).
    #[serde(default)]
    pub(crate) data_dir: std::path::PathBuf,
}

/// The child: a backend with sign-in limits lifted, until stdin closes.
pub async fn backend(args: BackendArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut env: Vec<(String, String)> = vec![
        ("BACKEND_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_GRPC_PUSH_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_DATA_DIR".into(), dir.path().display().to_string()),
        ("BACKEND_LOG_LEVEL".into(), "warn".into()),
        ("BACKEND_LOG_FORMAT".into(), "text".into()),
        ("BACKEND_LOGIN_IP_RATE".into(), "1000000000/1s".into()),
    ];
    if let Some(url) = args.database_url {
        env.push(("BACKEND_DATABASE_URL".into(), url));
    }
    for pair in &args.env {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--env {pair:?}: expected NAME=VALUE"))?;
        env.push((name.to_string(), value.to_string()));
    }
    let mut config =
        turnbase_backend::Config::load(turnbase_backend::config::Profile::Up, env, None)?;
    // The reference engines, as `turnbase` registers them (the lobby
    // benchmark creates games for them; nothing here starts an engine).
    // The engines are this program's `engine-server` mode.
    let program = std::env::current_exe()?;
    let engines =
        turnbase_lobby::EngineRegistry::from_manifests(&turnbase_engines::manifests(), |m| {
            turnbase_lobby::EngineRun::Binary {
                program: program.clone(),
                args: vec!["engine-server".into(), m.kind.clone()],
            }
        })
        .map_err(anyhow::Error::msg)?;
    config.lobby.engines = turnbase_backend::config::EngineSource::Builtin(engines);
    let telemetry = turnbase_core::telemetry::Telemetry::init(&config.telemetry)?;
    let app = turnbase_backend::App::start(config, telemetry, "bench").await?;
    crate::probe::report(&Started {
        addr: app.http_addr,
        pid: std::process::id(),
        data_dir: dir.path().to_path_buf(),
    })?;
    wait_for_parent().await;
    app.shutdown().await;
    Ok(())
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Phase {
    per_sec: f64,
    ok: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// CPU seconds per second of the backend process (1.0 = one core).
    backend_cpu: f64,
    /// The same for this load process.
    load_cpu: f64,
}

#[derive(Debug, Default, Serialize)]
struct BackendResult {
    signups: Phase,
    me: Phase,
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let postgres = args
        .postgres_url
        .clone()
        .or_else(|| std::env::var(turnbase_testkit::POSTGRES_URL_VAR).ok());
    println!(
        "api benchmark: {} s per phase, {} connections, /me over {} sessions",
        args.seconds, args.connections, args.sessions
    );
    let sqlite = measure(&args, None).await?;
    print("sqlite", &sqlite);
    let pg = match postgres {
        Some(server) => {
            let scratch = crate::probe::ScratchDatabase::create(&server).await?;
            let result = measure(&args, Some(scratch.url.clone())).await;
            scratch.drop_now().await?;
            let result = result?;
            print("postgres", &result);
            Some(result)
        }
        None => {
            println!("postgres: skipped (set TURNBASE_TEST_POSTGRES_URL or --postgres-url)");
            None
        }
    };
    println!(
        "targets: >= 5000 sign-ups/s, >= 20000 /me/s at p99 <= 10 ms; for scale, Nakama publishes \
         about 500 authentications/s at 24.6 ms mean on 1 CPU (different hardware and work)"
    );
    let pg_or_zero = |f: fn(&BackendResult) -> f64| pg.as_ref().map_or(0.0, f);
    let line = serde_json::json!({
        "bench": "api",
        "sqlite_signups_per_sec": round(sqlite.signups.per_sec),
        "postgres_signups_per_sec": round(pg_or_zero(|r| r.signups.per_sec)),
        "sqlite_me_per_sec": round(sqlite.me.per_sec),
        "postgres_me_per_sec": round(pg_or_zero(|r| r.me.per_sec)),
        "sqlite_me_p99_ms": round2(sqlite.me.p99_ms),
        "postgres_me_p99_ms": round2(pg_or_zero(|r| r.me.p99_ms)),
        "sqlite_signups_p99_ms": round2(sqlite.signups.p99_ms),
        "postgres_signups_p99_ms": round2(pg_or_zero(|r| r.signups.p99_ms)),
        "sqlite_me_backend_cpu": round2(sqlite.me.backend_cpu),
        "postgres_me_backend_cpu": round2(pg_or_zero(|r| r.me.backend_cpu)),
        "connections": args.connections,
    });
    println!("{line}");
    Ok(())
}

pub(crate) fn round(x: f64) -> f64 {
    x.round()
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn print(name: &str, r: &BackendResult) {
    for (phase, p) in [("sign-ups", &r.signups), ("GET /me", &r.me)] {
        println!(
            "{name:>8} {phase:<9} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  \
             errors {}  backend CPU {:.2} cores  load CPU {:.2} cores",
            p.per_sec, p.p50_ms, p.p99_ms, p.p999_ms, p.errors, p.backend_cpu, p.load_cpu
        );
    }
}

async fn measure(args: &ApiArgs, database_url: Option<String>) -> anyhow::Result<BackendResult> {
    let mut child_args = vec!["api-backend".to_string()];
    if let Some(url) = database_url {
        child_args.push("--database-url".into());
        child_args.push(url);
    }
    let mut child = ChildProc::spawn_self(&child_args)?;
    let started: Started = child.next().await?;
    let pid = started.pid.to_string();
    let addr = started.addr;

    // Warm-up: open the connections and make the sessions /me will use.
    let mut tokens = Vec::with_capacity(args.sessions);
    {
        let mut conn = Conn::open(addr).await?;
        while tokens.len() < args.sessions {
            let (status, body) = conn.send(&signup_request(addr)).await?;
            anyhow::ensure!(status == 201, "warm-up sign-up failed: {status}");
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            tokens.push(v["token"].as_str().context("a token")?.to_string());
        }
    }
    let signups = phase(args, addr, &pid, Arc::new(|_i, _n| Request::Signup)).await?;
    let tokens = Arc::new(tokens);
    let t = tokens.clone();
    let me = phase(
        args,
        addr,
        &pid,
        Arc::new(move |conn, n| Request::Me(t[(conn * 7919 + n) % t.len()].clone())),
    )
    .await?;
    child.finish();
    child.wait().await?;
    Ok(BackendResult { signups, me })
}

enum Request {
    Signup,
    Me(String),
}

/// A request with a bearer token and, when given, a JSON body.
pub(crate) fn request(
    method: http::Method,
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> http::Request<Full<Bytes>> {
    let builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    match body {
        Some(b) => builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(b.to_string()))),
        None => builder.body(Full::new(Bytes::new())),
    }
    .expect("a valid request")
}

pub(crate) fn signup_request(addr: SocketAddr) -> http::Request<Full<Bytes>> {
    http::Request::post("/api/v1/public/auth/guest")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"display_name":"Bench Guest","device_name":"bench"}"#,
        )))
        .expect("a valid request")
}

fn me_request(addr: SocketAddr, token: &str) -> http::Request<Full<Bytes>> {
    http::Request::get("/api/v1/user/me")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Conn { sender })
    }

    pub(crate) async fn send(
        &mut self,
        request: &http::Request<Full<Bytes>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request.clone()).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

type Pick = Arc<dyn Fn(usize, usize) -> Request + Send + Sync>;

/// Runs `connections` closed loops for `seconds`.
async fn phase(args: &ApiArgs, addr: SocketAddr, pid: &str, pick: Pick) -> anyhow::Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::new();
    for _ in 0..args.connections {
        conns.push(Conn::open(addr).await?);
    }
    let backend_before = usage(pid);
    let load_before = usage("self");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (stop, pick) = (stop.clone(), pick.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(100_000);
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut n = 0;
            let signup = signup_request(addr);
            while !stop.load(Ordering::Relaxed) {
                let request = match pick(i, n) {
                    Request::Signup => signup.clone(),
                    Request::Me(token) => me_request(addr, &token),
                };
                n += 1;
                let sent = Instant::now();
                match conn.send(&request).await {
                    Ok((200 | 201, _)) => {
                        ok += 1;
                        samples.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match Conn::open(addr).await {
                            Ok(fresh) => conn = fresh,
                            Err(_) => break,
                        }
                    }
                }
            }
            (samples, ok, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    let (mut ok, mut errors) = (0, 0);
    for task in tasks {
        let (s, o, e) = task.await?;
        samples.extend(s);
        ok += o;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let backend_after = usage(pid);
    let load_after = usage("self");
    let Latency {
        p50_ms,
        p99_ms,
        p999_ms,
    } = latency(samples);
    Ok(Phase {
        per_sec: ok as f64 / elapsed,
        ok,
        errors,
        p50_ms,
        p99_ms,
        p999_ms,
        backend_cpu: (backend_after.cpu_s - backend_before.cpu_s) / elapsed,
        load_cpu: (load_after.cpu_s - load_before.cpu_s) / elapsed,
    })
}
