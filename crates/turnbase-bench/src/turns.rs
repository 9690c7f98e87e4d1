//! The turns benchmark: Conquest games of four bots on a one-second
//! interval and Reversi games of two bots (`bot_delay` 1 s) on shared
//! engines, for a window; on SQLite and on Postgres. Printed: turns
//! resolved per second, lateness (resolve call sent minus due time,
//! p50/p99/max), the engines' resolve time, the backend's CPU, and missed
//! or doubled turns counted against the engines' own histories.
//!
//! The backend is a child process (the `api-backend` mode) whose engines
//! are this program's `engine-server` mode. The figures come from the
//! turns the backend recorded (read from its database afterwards) and
//! from each engine's state of each game.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use turnbase_store::turns::{Trigger, TurnPage, TurnStatus};
use uuid::Uuid;

use crate::api::{Conn, Started, request, round2, signup_request};
use crate::probe::{ChildProc, latency, usage};

#[derive(clap::Args)]
pub struct TurnsArgs {
    /// Conquest games (four bot seats each, a 1 s interval).
    #[arg(long, default_value_t = 300)]
    conquest_games: usize,
    /// Reversi games (two bots, bot_delay 1 s).
    #[arg(long, default_value_t = 100)]
    reversi_games: usize,
    /// The measured window, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// A Postgres server (a role that may create databases); default
    /// `TURNBASE_TEST_POSTGRES_URL`. Without one only SQLite is measured.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Measure only SQLite.
    #[arg(long)]
    sqlite_only: bool,
    /// Extra backend variables, `NAME=VALUE` (e.g. a larger pool).
    #[arg(long = "env")]
    env: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Figures {
    turns: usize,
    turns_per_sec: f64,
    lateness_p50_ms: f64,
    lateness_p99_ms: f64,
    lateness_max_ms: f64,
    resolve_p50_ms: f64,
    resolve_p99_ms: f64,
    backend_cpu: f64,
    /// The engine processes' CPU (cores), and the whole machine's.
    engines_cpu: f64,
    machine_cpu: f64,
    missed: usize,
    doubled: usize,
}

pub async fn run(args: TurnsArgs) -> anyhow::Result<()> {
    println!(
        "turns benchmark: {} Conquest games (4 bots, every 1 s) and {} Reversi games (2 bots, \
         bot_delay 1 s) on shared engines, {} s",
        args.conquest_games, args.reversi_games, args.seconds
    );
    let sqlite = measure(&args, None).await?;
    print("sqlite", &sqlite);
    let server = args
        .postgres_url
        .clone()
        .or_else(|| std::env::var(turnbase_testkit::POSTGRES_URL_VAR).ok())
        .filter(|_| !args.sqlite_only);
    let postgres = match server {
        Some(server) => {
            let scratch = crate::probe::ScratchDatabase::create(&server).await?;
            let result = measure(&args, Some(scratch.url.clone())).await;
            scratch.drop_now().await?;
            let figures = result?;
            print("postgres", &figures);
            Some(figures)
        }
        None => {
            println!("postgres: skipped (set TURNBASE_TEST_POSTGRES_URL or --postgres-url)");
            None
        }
    };
    println!("targets: lateness p99 <= 20 ms and max <= 100 ms; 0 missed, 0 doubled");
    let first = postgres.as_ref().unwrap_or(&sqlite);
    let mut line = json!({
        "bench": "turns",
        "turns_per_sec": round2(first.turns_per_sec),
        "lateness_p99_ms": round2(first.lateness_p99_ms),
        "lateness_max_ms": round2(first.lateness_max_ms),
        "missed": first.missed + postgres.as_ref().map_or(0, |_| sqlite.missed),
        "doubled": first.doubled + postgres.as_ref().map_or(0, |_| sqlite.doubled),
        "sqlite_turns_per_sec": round2(sqlite.turns_per_sec),
        "sqlite_lateness_p99_ms": round2(sqlite.lateness_p99_ms),
        "sqlite_lateness_max_ms": round2(sqlite.lateness_max_ms),
    });
    if let Some(pg) = &postgres {
        line["postgres_turns_per_sec"] = json!(round2(pg.turns_per_sec));
        line["postgres_lateness_p99_ms"] = json!(round2(pg.lateness_p99_ms));
        line["postgres_lateness_max_ms"] = json!(round2(pg.lateness_max_ms));
    }
    println!("{line}");
    Ok(())
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:>9}: {} turns, {:.1} turns/s; lateness p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         engine resolve p50 {:.2} ms, p99 {:.2} ms; CPU (cores): backend {:.2}, engines {:.2}, \
         machine {:.2} of {}; missed {}, doubled {}",
        f.turns,
        f.turns_per_sec,
        f.lateness_p50_ms,
        f.lateness_p99_ms,
        f.lateness_max_ms,
        f.resolve_p50_ms,
        f.resolve_p99_ms,
        f.backend_cpu,
        f.engines_cpu,
        f.machine_cpu,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        f.missed,
        f.doubled
    );
}

async fn call(
    conn: &mut Conn,
    r: http::Request<http_body_util::Full<bytes::Bytes>>,
    want: u16,
    what: &str,
) -> anyhow::Result<Value> {
    let (status, body) = conn.send(&r).await?;
    anyhow::ensure!(
        status == want,
        "{what}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Creates a started game of `bots` bots from `body`.
async fn bot_game(
    conn: &mut Conn,
    addr: std::net::SocketAddr,
    owner: &str,
    body: Value,
    bots: usize,
    tag: &str,
) -> anyhow::Result<String> {
    let r = request(
        http::Method::POST,
        addr,
        "/api/v1/user/games",
        owner,
        Some(&body),
    );
    let game = call(conn, r, 201, "create").await?;
    let id = game["id"].as_str().unwrap_or_default().to_string();
    for b in 0..bots {
        let path = format!("/api/v1/user/games/{id}/bots");
        let body = json!({ "name": format!("Bot {tag} {b}") });
        call(
            conn,
            request(http::Method::POST, addr, &path, owner, Some(&body)),
            201,
            "bot",
        )
        .await?;
    }
    let path = format!("/api/v1/user/games/{id}/start");
    call(
        conn,
        request(http::Method::POST, addr, &path, owner, Some(&json!({}))),
        200,
        "start",
    )
    .await?;
    Ok(id)
}

async fn measure(args: &TurnsArgs, database_url: Option<String>) -> anyhow::Result<Figures> {
    let mut child_args = vec!["api-backend".to_string()];
    if let Some(url) = &database_url {
        child_args.push("--database-url".into());
        child_args.push(url.clone());
    }
    let fixed = [
        "BACKEND_RUNTIME_PLACEMENT=shared",
        "BACKEND_LOBBY_MIN_TURN_STEP=1s",
    ];
    for pair in fixed
        .iter()
        .map(|p| p.to_string())
        .chain(args.env.iter().cloned())
    {
        child_args.push("--env".into());
        child_args.push(pair);
    }
    let mut child = ChildProc::spawn_self(&child_args)?;
    let started: Started = child.next().await?;
    let (addr, pid) = (started.addr, started.pid.to_string());
    let mut conn = Conn::open(addr).await?;
    let (status, body) = conn.send(&signup_request(addr)).await?;
    anyhow::ensure!(status == 201, "sign-up: {status}");
    let owner = serde_json::from_slice::<Value>(&body)?["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let deadline = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let mut games = Vec::new();
    for i in 0..args.conquest_games {
        let body = json!({
            "title": format!("Conquest {i}"), "engine": "conquest", "max_players": 4,
            "settings": { "planets": 16, "turn_limit": 1000 },
            "enrol_deadline": deadline,
            "schedule": { "kind": "interval", "every": "1s" },
        });
        games.push(bot_game(&mut conn, addr, &owner, body, 4, &format!("c{i}")).await?);
    }
    for i in 0..args.reversi_games {
        let body = json!({
            "title": format!("Reversi {i}"), "engine": "reversi", "enrol_deadline": deadline,
            "schedule": { "kind": "per_move", "limit": "1h" },
            "rules": { "bot_delay": "1s" },
        });
        games.push(bot_game(&mut conn, addr, &owner, body, 2, &format!("r{i}")).await?);
    }
    // Wait until every game runs, then measure a window of whole seconds.
    let give_up = Instant::now() + Duration::from_secs(180);
    loop {
        anyhow::ensure!(
            Instant::now() < give_up,
            "games did not all start within 180 s"
        );
        let mut running = 0;
        let mut next = None::<String>;
        loop {
            let path = match &next {
                Some(c) => format!("/api/v1/user/me/games?limit=100&before={c}"),
                None => "/api/v1/user/me/games?limit=100".into(),
            };
            let page = call(
                &mut conn,
                request(http::Method::GET, addr, &path, &owner, None),
                200,
                "my games",
            )
            .await?;
            running += page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| matches!(i["game"]["state"].as_str(), Some("running" | "finished")))
                .count();
            next = page["next"].as_str().map(String::from);
            if next.is_none() {
                break;
            }
        }
        if running == games.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let window_start = chrono::Utc::now();
    let cpu_before = usage(&pid).cpu_s;
    let engines_before = engines_cpu(&started.data_dir);
    let machine_before = machine_busy_s();
    let clock = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = clock.elapsed().as_secs_f64();
    let cpu = (usage(&pid).cpu_s - cpu_before) / elapsed;
    let engines = (engines_cpu(&started.data_dir) - engines_before) / elapsed;
    let machine = (machine_busy_s() - machine_before) / elapsed;
    let window_end = chrono::Utc::now();

    // The recorded turns, and each engine's own count.
    let options = match &database_url {
        Some(url) => turnbase_store::DatabaseOptions::Postgres {
            url: url.clone(),
            max_connections: 2,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
        },
        None => turnbase_store::DatabaseOptions::Sqlite {
            path: started.data_dir.join("turnbase.db"),
            busy_timeout: Duration::from_secs(10),
            max_connections: 2,
        },
    };
    let db = turnbase_store::Database::connect(&options).await?;
    let http = reqwest::Client::new();
    let mut lateness = Vec::new();
    let mut pickup = Vec::new();
    let mut claiming = Vec::new();
    let mut durations = Vec::new();
    let mut in_window = 0usize;
    // Due times of the measured turns: how bunched the load is.
    let mut due_ms: Vec<i64> = Vec::new();
    let (mut missed, mut doubled) = (0usize, 0usize);
    for id in &games {
        let game = Uuid::parse_str(id)?;
        let rows = db
            .turns()
            .turns(
                game,
                TurnPage {
                    before: None,
                    limit: 100_000,
                },
            )
            .await?;
        let resolved: Vec<_> = rows
            .iter()
            .filter(|r| r.status == TurnStatus::Resolved)
            .collect();
        // Two turns standing for one schedule slot would be a doubled
        // turn; a gap of more than a slot between schedule turns a
        // missed one.
        let mut slots: HashMap<i64, usize> = HashMap::new();
        for r in &resolved {
            if r.trigger == Trigger::Schedule {
                *slots.entry(r.due_at.timestamp_millis()).or_default() += 1;
            }
            let Some(sent) = r.sent_at else { continue };
            if sent >= window_start && sent <= window_end {
                in_window += 1;
                due_ms.push(r.due_at.timestamp_millis());
                if let Some(ms) = r.lateness_ms {
                    lateness.push(u64::try_from(ms).unwrap_or(0) * 1_000_000);
                    // Lateness in two parts: due → the claim begins (the
                    // scheduler's pick-up) and claim → resolve call sent.
                    let ns = |d: chrono::TimeDelta| {
                        u64::try_from(d.num_nanoseconds().unwrap_or(0).max(0)).unwrap_or(0)
                    };
                    pickup.push(ns(r.claimed_at - r.due_at));
                    claiming.push(ns(sent - r.claimed_at));
                }
                if let Some(ms) = r.duration_ms {
                    durations.push(u64::try_from(ms).unwrap_or(0) * 1_000_000);
                }
            }
        }
        doubled += slots
            .values()
            .filter(|n| **n > 1)
            .map(|n| n - 1)
            .sum::<usize>();
        let mut dues: Vec<i64> = slots.keys().copied().collect();
        dues.sort_unstable();
        for pair in dues.windows(2) {
            let gap = pair[1] - pair[0];
            if gap > 1500 {
                missed += usize::try_from(gap / 1000 - 1).unwrap_or(0);
            }
        }
        // The engine's history: turns it resolved, against those recorded.
        let record = db
            .runtime()
            .runtime_record(game)
            .await?
            .and_then(|r| r.address)
            .ok_or_else(|| anyhow::anyhow!("game {id} has no engine"))?;
        let state: Value = http
            .get(format!("{record}/games/{id}/state"))
            .send()
            .await?
            .json()
            .await?;
        let engine_turns = state["turn"].as_u64().unwrap_or(1) as usize
            - usize::from(!state["finished"].as_bool().unwrap_or(false));
        let recorded = resolved.len();
        // A turn the engine resolved whose record is still on its way is
        // neither: allow the one in flight.
        if engine_turns > recorded + 1 {
            missed += engine_turns - recorded - 1;
        }
        if recorded > engine_turns {
            doubled += recorded - engine_turns;
        }
    }
    db.close().await;
    child.finish();
    child.wait().await?;
    let late = latency(lateness.clone());
    let (p, c) = (latency(pickup), latency(claiming));
    println!(
        "           lateness parts: due → claim p50 {:.2} ms, p99 {:.2} ms; claim → sent p50 {:.2} ms, p99 {:.2} ms",
        p.p50_ms, p.p99_ms, c.p50_ms, c.p99_ms
    );
    due_ms.sort_unstable();
    let busiest = busiest_window(&due_ms, 10);
    println!(
        "           bunching: the busiest 10 ms held {busiest} due turns (an even spread would hold {:.1})",
        in_window as f64 / elapsed / 100.0
    );
    let engine = latency(durations);
    Ok(Figures {
        turns: in_window,
        turns_per_sec: in_window as f64 / elapsed,
        lateness_p50_ms: late.p50_ms,
        lateness_p99_ms: late.p99_ms,
        lateness_max_ms: lateness.iter().max().map_or(0.0, |m| *m as f64 / 1e6),
        resolve_p50_ms: engine.p50_ms,
        resolve_p99_ms: engine.p99_ms,
        backend_cpu: cpu,
        engines_cpu: engines,
        machine_cpu: machine,
        missed,
        doubled,
    })
}

/// The most of the sorted times `ms` that fall within any `width` ms.
fn busiest_window(ms: &[i64], width: i64) -> usize {
    let mut start = 0;
    let mut most = 0;
    for (end, t) in ms.iter().enumerate() {
        while *t - ms[start] >= width {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most
}

/// CPU seconds used so far by the engine processes (by their pid files).
fn engines_cpu(data_dir: &std::path::Path) -> f64 {
    let mut total = 0.0;
    if let Ok(entries) = std::fs::read_dir(data_dir.join("engines")) {
        for entry in entries.flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("engine.pid")) {
                total += usage(pid.trim()).cpu_s;
            }
        }
    }
    total
}

/// CPU seconds the whole machine has been busy (not idle, not waiting on
/// I/O), from `/proc/stat`.
pub(crate) fn machine_busy_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

#[cfg(test)]
mod tests {
    use super::busiest_window;

    #[test]
    fn the_busiest_window_counts_times_less_than_its_width_apart() {
        assert_eq!(busiest_window(&[], 10), 0);
        assert_eq!(busiest_window(&[5], 10), 1);
        assert_eq!(busiest_window(&[0, 9, 10, 11, 19, 40], 10), 3);
        assert_eq!(busiest_window(&[0, 100, 200], 10), 1);
    }
}
