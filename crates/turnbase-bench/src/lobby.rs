//! The lobby benchmark, on SQLite and on Postgres: 1,000 users browse the
//! open games (`GET /api/v1/user/games`, 1,000 of them listed) while 100
//! other games fill by concurrent applications and approvals. It prints
//! browse requests/s and enrolment actions/s with their latencies. The
//! backend is a child process (the hidden `api-backend` mode, with the
//! reference engines registered); this process is the load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{Conn, Started, request, round, round2, signup_request};
use crate::probe::{ChildProc, Latency, latency, usage};

#[derive(clap::Args)]
pub struct LobbyArgs {
    /// Users browsing (each a guest with its own session).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Open games listed in the lobby.
    #[arg(long, default_value_t = 1000)]
    open_games: usize,
    /// Games filled during the measurement.
    #[arg(long, default_value_t = 100)]
    fill_games: usize,
    /// Seats of each filled game (an application and an approval each).
    #[arg(long, default_value_t = 10)]
    seats: usize,
    /// Browsing connections (each with one request in flight).
    #[arg(long, default_value_t = 24)]
    browse_connections: usize,
    /// Enrolling connections (each filling one game at a time).
    #[arg(long, default_value_t = 8)]
    enrol_connections: usize,
    /// Browsing lasts at least this long (and until the games are full).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// A Postgres server where the benchmark may create a database; falls
    /// back to TURNBASE_TEST_POSTGRES_URL. Without one, Postgres is skipped.
    #[arg(long)]
    postgres_url: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Load {
    per_sec: f64,
    ok: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Result {
    browse: Load,
    enrol: Load,
    /// CPU seconds per second of the backend process over the window.
    backend_cpu: f64,
    load_cpu: f64,
}

pub async fn run(args: LobbyArgs) -> anyhow::Result<()> {
    println!(
        "lobby benchmark: {} users browsing {} open games ({} connections) while {} games of {} \
         seats fill ({} connections)",
        args.users,
        args.open_games,
        args.browse_connections,
        args.fill_games,
        args.seats,
        args.enrol_connections
    );
    let sqlite = measure(&args, None).await?;
    print("sqlite", &sqlite);
    let postgres = args
        .postgres_url
        .clone()
        .or_else(|| std::env::var(turnbase_testkit::POSTGRES_URL_VAR).ok());
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
        "targets on Postgres: >= 10000 browse requests/s at p99 <= 10 ms, >= 1000 enrolment \
         actions/s at p99 <= 50 ms"
    );
    let pg = pg.unwrap_or_default();
    let line = json!({
        "bench": "lobby",
        "sqlite_browse_per_sec": round(sqlite.browse.per_sec),
        "postgres_browse_per_sec": round(pg.browse.per_sec),
        "sqlite_enrol_per_sec": round(sqlite.enrol.per_sec),
        "postgres_enrol_per_sec": round(pg.enrol.per_sec),
        "postgres_browse_p99_ms": round2(pg.browse.p99_ms),
        "postgres_enrol_p99_ms": round2(pg.enrol.p99_ms),
        "sqlite_browse_p99_ms": round2(sqlite.browse.p99_ms),
        "sqlite_enrol_p99_ms": round2(sqlite.enrol.p99_ms),
    });
    println!("{line}");
    Ok(())
}

fn print(name: &str, r: &Result) {
    for (what, l) in [("browse", &r.browse), ("enrol", &r.enrol)] {
        println!(
            "{name:>8} {what:<6} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ok {}  errors {}",
            l.per_sec, l.p50_ms, l.p99_ms, l.ok, l.errors
        );
    }
    println!(
        "{name:>8} backend CPU {:.2} cores, load CPU {:.2} cores",
        r.backend_cpu, r.load_cpu
    );
}

fn game_body(title: &str, max_players: usize) -> Value {
    let deadline = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    json!({
        "title": title,
        "engine": "conquest",
        "max_players": max_players,
        "enrol_deadline": deadline,
        "schedule": { "kind": "cron", "cron": "0 18 * * *", "time_zone": "Europe/Berlin" },
    })
}

/// Runs `work(conn, index)` for `0..count` over `connections` connections.
async fn spread<F, Fut>(
    addr: SocketAddr,
    connections: usize,
    count: usize,
    work: F,
) -> anyhow::Result<Vec<Value>>
where
    F: Fn(Conn, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<(Conn, Value)>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, work) = (next.clone(), work.clone());
        let mut conn = Conn::open(addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let (c, v) = work(conn, i).await?;
                conn = c;
                out.push((i, v));
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, v)| v).collect())
}

async fn measure(args: &LobbyArgs, database_url: Option<String>) -> anyhow::Result<Result> {
    let mut child_args = vec!["api-backend".to_string()];
    if let Some(url) = database_url {
        child_args.push("--database-url".into());
        child_args.push(url);
    }
    let mut child = ChildProc::spawn_self(&child_args)?;
    let started: Started = child.next().await?;
    let (addr, pid) = (started.addr, started.pid.to_string());

    // Users (browsers, owners and applicants alike).
    let users = spread(addr, 8, args.users, move |mut conn, _| async move {
        let (status, body) = conn.send(&signup_request(addr)).await?;
        anyhow::ensure!(status == 201, "sign-up: {status}");
        let v: Value = serde_json::from_slice(&body)?;
        Ok((conn, v["token"].clone()))
    })
    .await?;
    let users: Arc<Vec<String>> = Arc::new(
        users
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
    );
    anyhow::ensure!(users.len() >= 2, "at least two users");

    // The open games the lobby lists, then the games to fill (newest, so
    // they head the list while they fill).
    let u = users.clone();
    spread(addr, 8, args.open_games, move |mut conn, i| {
        let u = u.clone();
        async move {
            let owner = &u[i % u.len()];
            let body = game_body(&format!("Open game {i}"), 16);
            let r = request(
                http::Method::POST,
                addr,
                "/api/v1/user/games",
                owner,
                Some(&body),
            );
            let (status, _) = conn.send(&r).await?;
            anyhow::ensure!(status == 201, "creating an open game: {status}");
            Ok((conn, Value::Null))
        }
    })
    .await?;
    let u = users.clone();
    let seats = args.seats;
    let fill = spread(addr, 8, args.fill_games, move |mut conn, i| {
        let u = u.clone();
        async move {
            let owner = u[i % u.len()].clone();
            let body = game_body(&format!("Filling game {i}"), seats);
            let r = request(
                http::Method::POST,
                addr,
                "/api/v1/user/games",
                &owner,
                Some(&body),
            );
            let (status, body) = conn.send(&r).await?;
            anyhow::ensure!(status == 201, "creating a game to fill: {status}");
            let v: Value = serde_json::from_slice(&body)?;
            Ok((conn, json!({ "id": v["id"], "owner": owner, "index": i })))
        }
    })
    .await?;

    // The measured window: browsing and enrolling at once.
    let stop = Arc::new(AtomicBool::new(false));
    let backend_before = usage(&pid);
    let load_before = usage("self");
    let window = Instant::now();
    let mut browsers = Vec::new();
    for c in 0..args.browse_connections {
        let (stop, users) = (stop.clone(), users.clone());
        let mut conn = Conn::open(addr).await?;
        browsers.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(200_000);
            let (mut ok, mut errors, mut n) = (0u64, 0u64, 0usize);
            let mut second_page: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                let token = &users[(c * 7919 + n * 31) % users.len()];
                // Most look at the first page; some turn to the second,
                // some filter by engine or free seats.
                let path = match n % 10 {
                    0 | 1 => match &second_page {
                        Some(next) => format!("/api/v1/user/games?before={next}"),
                        None => "/api/v1/user/games".to_string(),
                    },
                    2 => "/api/v1/user/games?engine=conquest".to_string(),
                    3 => "/api/v1/user/games?free_seats=5".to_string(),
                    _ => "/api/v1/user/games".to_string(),
                };
                n += 1;
                let r = request(http::Method::GET, addr, &path, token, None);
                let sent = Instant::now();
                match conn.send(&r).await {
                    Ok((200, body)) => {
                        ok += 1;
                        samples.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
                        if path == "/api/v1/user/games" && n % 50 == 1 {
                            second_page = serde_json::from_slice::<Value>(&body)
                                .ok()
                                .and_then(|v| v["next"].as_str().map(String::from));
                        }
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
    let enrol_started = Instant::now();
    let fill = Arc::new(fill);
    let u = users.clone();
    let enrolled = spread(
        addr,
        args.enrol_connections,
        fill.len(),
        move |mut conn, g| {
            let (u, fill) = (u.clone(), fill.clone());
            async move {
                let game = &fill[g];
                let id = game["id"].as_str().unwrap_or_default().to_string();
                let owner = game["owner"].as_str().unwrap_or_default().to_string();
                let mut samples = Vec::with_capacity(seats * 2);
                let mut errors = 0u64;
                for k in 0..seats {
                    // A player other than the owner, distinct within the game.
                    let player = &u[(g * seats + k + 1 + u.len() / 2) % u.len()];
                    let body = json!({ "race_name": format!("R{g}-{k}") });
                    let path = format!("/api/v1/user/games/{id}/applications");
                    let r = request(http::Method::POST, addr, &path, player, Some(&body));
                    let sent = Instant::now();
                    let (status, answer) = conn.send(&r).await?;
                    if status != 201 {
                        errors += 1;
                        continue;
                    }
                    samples.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    let a: Value = serde_json::from_slice(&answer)?;
                    let app = a["id"].as_str().unwrap_or_default();
                    let path = format!("/api/v1/user/games/{id}/applications/{app}/approve");
                    let r = request(http::Method::POST, addr, &path, &owner, Some(&json!({})));
                    let sent = Instant::now();
                    let (status, _) = conn.send(&r).await?;
                    if status == 200 {
                        samples.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    } else {
                        errors += 1;
                    }
                }
                Ok((conn, json!({ "samples": samples, "errors": errors })))
            }
        },
    )
    .await?;
    let enrol_elapsed = enrol_started.elapsed().as_secs_f64();
    let minimum = Duration::from_secs(args.seconds);
    if window.elapsed() < minimum {
        tokio::time::sleep(minimum - window.elapsed()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    let (mut ok, mut errors) = (0u64, 0u64);
    for b in browsers {
        let (s, o, e) = b.await?;
        samples.extend(s);
        ok += o;
        errors += e;
    }
    let elapsed = window.elapsed().as_secs_f64();
    let backend_after = usage(&pid);
    let load_after = usage("self");
    let Latency { p50_ms, p99_ms, .. } = latency(samples);
    let browse = Load {
        per_sec: ok as f64 / elapsed,
        ok,
        errors,
        p50_ms,
        p99_ms,
    };
    let mut enrol_samples = Vec::new();
    let mut enrol_errors = 0u64;
    for e in &enrolled {
        enrol_samples.extend(
            e["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64),
        );
        enrol_errors += e["errors"].as_u64().unwrap_or(0);
    }
    let enrol_ok = enrol_samples.len() as u64;
    let l = latency(enrol_samples);
    let enrol = Load {
        per_sec: enrol_ok as f64 / enrol_elapsed,
        ok: enrol_ok,
        errors: enrol_errors,
        p50_ms: l.p50_ms,
        p99_ms: l.p99_ms,
    };
    child.finish();
    child.wait().await?;
    Ok(Result {
        browse,
        enrol,
        backend_cpu: (backend_after.cpu_s - backend_before.cpu_s) / elapsed,
        load_cpu: (load_after.cpu_s - load_before.cpu_s) / elapsed,
    })
}
