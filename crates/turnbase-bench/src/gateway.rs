//! The gateway benchmark: REST forwarding through our gateway against
//! nginx's `proxy_pass` (a keep-alive upstream pool) to the same backend
//! process, in the same run, under the same load: `wrk` with two threads
//! and 32 connections sending `GET /api/v1/user/me` with a session token.
//! The backend alone is measured first, as the ceiling of both.
//!
//! Each process runs on its own (the backend and the gateway are child
//! processes of this program; nginx is Debian's, started here with a
//! configuration written for the run), so each side's CPU per request is
//! read from `/proc`: that is what explains the ratio.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{Conn, Started, round2, signup_request};
use crate::probe::{ChildProc, cpu_of_named, usage};

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// wrk's connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// wrk's threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rounds of (nginx, gateway), alternating, after the backend alone.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// nginx.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: std::path::PathBuf,
    /// Runtime threads of the gateway process (default: one per core, as
    /// `turnbase gateway` runs).
    #[arg(long)]
    gateway_threads: Option<usize>,
}

#[derive(clap::Args)]
pub struct GatewayServerArgs {
    #[arg(long)]
    backend: String,
    #[arg(long)]
    push: String,
    #[arg(long)]
    token: String,
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct GatewayUp {
    addr: SocketAddr,
    pid: u32,
}

/// One measurement: wrk's figures and the CPU each process spent.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// CPU µs per request of the proxy (nginx's workers, or our gateway).
    proxy_us: f64,
    /// CPU µs per request of the backend.
    backend_us: f64,
}

const SECRET: &str = "gateway-bench-internal-secret-0123456789";

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        which("wrk").is_some(),
        "wrk is missing: apt-get install wrk"
    );
    anyhow::ensure!(
        args.nginx.exists(),
        "{} is missing: apt-get install nginx (or pass --nginx)",
        args.nginx.display()
    );
    let push_port = free_port()?;
    let mut backend = ChildProc::spawn_self(&[
        "api-backend".into(),
        "--env".into(),
        format!("BACKEND_GRPC_PUSH_ADDR=127.0.0.1:{push_port}"),
        "--env".into(),
        format!("BACKEND_INTERNAL_TOKEN={SECRET}"),
    ])?;
    let started: Started = backend.next().await?;
    let backend_pid = started.pid.to_string();
    let mut conn = Conn::open(started.addr).await?;
    let (status, body) = conn.send(&signup_request(started.addr)).await?;
    anyhow::ensure!(status == 201, "sign-up: {status}");
    let token = serde_json::from_slice::<serde_json::Value>(&body)?["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut gateway = ChildProc::spawn_self(
        &[
            "gateway-server".into(),
            "--backend".into(),
            format!("http://{}", started.addr),
            "--push".into(),
            format!("http://127.0.0.1:{push_port}"),
            "--token".into(),
            SECRET.into(),
        ]
        .into_iter()
        .chain(
            args.gateway_threads
                .map(|n| ["--threads".to_string(), n.to_string()])
                .into_iter()
                .flatten(),
        )
        .collect::<Vec<String>>(),
    )?;
    let gw: GatewayUp = gateway.next().await?;
    let nginx = Nginx::start(&args.nginx, started.addr).await?;

    println!(
        "gateway benchmark: wrk -t{} -c{} -d{}s GET /api/v1/user/me (a guest's token), {} round(s)",
        args.threads, args.connections, args.seconds, args.rounds
    );
    let me = |addr: SocketAddr| format!("http://{addr}/api/v1/user/me");
    // Warm every path (pools, session caches) before measuring.
    for addr in [started.addr, nginx.addr, gw.addr] {
        wrk(&args, &me(addr), &token, 2).await?;
    }
    let alone = measure(&args, &me(started.addr), &token, None, &backend_pid).await?;
    print("backend alone", &alone, false);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..args.rounds {
        let n = measure(
            &args,
            &me(nginx.addr),
            &token,
            Some(Proxy::Nginx),
            &backend_pid,
        )
        .await?;
        print("nginx", &n, true);
        theirs.push(n);
        let g = measure(
            &args,
            &me(gw.addr),
            &token,
            Some(Proxy::Pid(gw.pid.to_string())),
            &backend_pid,
        )
        .await?;
        print("gateway", &g, true);
        ours.push(g);
    }
    let mean =
        |v: &[Figures], f: fn(&Figures) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (g_rate, n_rate) = (mean(&ours, |f| f.per_sec), mean(&theirs, |f| f.per_sec));
    println!(
        "mean: gateway {g_rate:.0} req/s, nginx {n_rate:.0} req/s: {:.2}x nginx; CPU per request: \
         gateway {:.1} µs, nginx {:.1} µs",
        g_rate / n_rate,
        mean(&ours, |f| f.proxy_us),
        mean(&theirs, |f| f.proxy_us)
    );
    println!("target: >= 1.0x nginx");
    drop(nginx);
    gateway.finish();
    backend.finish();
    let _ = gateway.wait().await;
    let _ = backend.wait().await;
    println!(
        "{}",
        json!({
            "bench": "gateway",
            "gateway_per_sec": round2(g_rate),
            "nginx_per_sec": round2(n_rate),
            "gateway_p99_ms": round2(mean(&ours, |f| f.p99_ms)),
            "nginx_p99_ms": round2(mean(&theirs, |f| f.p99_ms)),
            "backend_per_sec": round2(alone.per_sec),
            "gateway_cpu_us_per_request": round2(mean(&ours, |f| f.proxy_us)),
            "nginx_cpu_us_per_request": round2(mean(&theirs, |f| f.proxy_us)),
        })
    );
    Ok(())
}

fn print(name: &str, f: &Figures, proxied: bool) {
    let proxy = if proxied {
        format!("proxy {:.1} µs + ", f.proxy_us)
    } else {
        String::new()
    };
    println!(
        "{name:>14}: {:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors; CPU per request: {proxy}backend {:.1} µs",
        f.per_sec, f.p50_ms, f.p99_ms, f.errors, f.backend_us
    );
}

enum Proxy {
    Nginx,
    Pid(String),
}

impl Proxy {
    fn cpu(&self) -> f64 {
        match self {
            Proxy::Nginx => cpu_of_named("nginx").unwrap_or(0.0),
            Proxy::Pid(pid) => usage(pid).cpu_s,
        }
    }
}

async fn measure(
    args: &GatewayArgs,
    url: &str,
    token: &str,
    proxy: Option<Proxy>,
    backend_pid: &str,
) -> anyhow::Result<Figures> {
    let proxy_before = proxy.as_ref().map_or(0.0, Proxy::cpu);
    let backend_before = usage(backend_pid).cpu_s;
    let mut f = wrk(args, url, token, args.seconds).await?;
    let requests = f.per_sec * args.seconds as f64;
    if requests > 0.0 {
        f.proxy_us = proxy
            .as_ref()
            .map_or(0.0, |p| (p.cpu() - proxy_before) * 1e6 / requests);
        f.backend_us = (usage(backend_pid).cpu_s - backend_before) * 1e6 / requests;
    }
    Ok(f)
}

async fn wrk(args: &GatewayArgs, url: &str, token: &str, seconds: u64) -> anyhow::Result<Figures> {
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .arg(url)
        .output()
        .await
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

/// Requests/sec, the 50% and 99% latencies and the errors of wrk's report.
fn parse_wrk(text: &str) -> Option<Figures> {
    let mut f = Figures::default();
    for line in text.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            f.per_sec = rate.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            f.p50_ms = wrk_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            f.p99_ms = wrk_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            f.errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            f.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (f.per_sec > 0.0).then_some(f)
}

/// "812.00us", "3.21ms", "1.02s" → milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    Some(number.parse::<f64>().ok()? * scale)
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// nginx with a keep-alive upstream pool to the backend; two workers, as
/// our gateway has two runtime threads on this machine.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop of master and workers.
        let _ = std::process::Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Nginx {
    async fn start(program: &Path, backend: SocketAddr) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let d = dir.path().display();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let config = format!(
            "worker_processes {workers};\n\
             error_log {d}/error.log warn;\n\
             pid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               upstream backend {{ server {backend}; keepalive 64; }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{\n\
                   proxy_pass http://backend;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config)?;
        let child = std::process::Command::new(program)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&file)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(nginx)
    }
}

/// Child: a gateway in front of the benchmark's backend, on a runtime of
/// its own when `--threads` sets its size.
pub async fn server(args: GatewayServerArgs) -> anyhow::Result<()> {
    let Some(threads) = args.threads else {
        return serve(args).await;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    tokio::task::spawn_blocking(move || runtime.block_on(serve(args))).await?
}

async fn serve(args: GatewayServerArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let env: Vec<(String, String)> = vec![
        ("GATEWAY_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("GATEWAY_RATE_PER_IP".into(), "1000000000/1s".into()),
        ("GATEWAY_RATE_PER_SESSION".into(), "1000000000/1s".into()),
        ("GATEWAY_LOG_LEVEL".into(), "warn".into()),
    ];
    let defaults = [
        ("GATEWAY_BACKEND_URL", args.backend),
        ("GATEWAY_GRPC_PUSH_URL", args.push),
        ("GATEWAY_INTERNAL_TOKEN", args.token),
        (
            "GATEWAY_SIGNING_KEY_FILE",
            dir.path().join("key").display().to_string(),
        ),
    ];
    let config =
        turnbase_gateway::GatewayConfig::load(turnbase_gateway::Profile::Up, env, None, &defaults)?;
    let telemetry = turnbase_core::telemetry::Telemetry::init(&config.telemetry)?;
    let gateway = turnbase_gateway::Gateway::start(
        config,
        telemetry,
        turnbase_gateway::StartOptions::EMBEDDED,
    )
    .await?;
    crate::probe::report(&GatewayUp {
        addr: gateway.http_addr,
        pid: std::process::id(),
    })?;
    crate::probe::wait_for_parent().await;
    gateway.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_read() {
        let text = "Running 10s test @ http://127.0.0.1:1/api/v1/user/me
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.45ms  612.00us  21.30ms   85.00%
  Latency Distribution
     50%    1.31ms
     75%    1.70ms
     90%    2.10ms
     99%  812.00us
  220000 requests in 10.00s, 60.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  21999.50
Transfer/sec:      6.00MB
";
        let f = parse_wrk(text).expect("parsed");
        assert_eq!(f.per_sec, 21999.5);
        assert_eq!(f.p50_ms, 1.31);
        assert!((f.p99_ms - 0.812).abs() < 1e-9);
        assert_eq!(f.errors, 7);
        assert_eq!(wrk_ms("1.02s"), Some(1020.0));
        assert_eq!(wrk_ms("fast"), None);
    }
}
