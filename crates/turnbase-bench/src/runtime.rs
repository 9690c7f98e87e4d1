//! The runtime benchmark: games started on the `shared` placement (one
//! engine process per kind), on `per_game` processes and on Docker
//! containers. For each: games started per second, the time from the
//! start request (`starting`) to `running` as the owner sees it, and the
//! memory each running game adds (backend plus engines, by RSS).
//!
//! The backend is a child process (the `api-backend` mode) whose engines
//! are this program's `engine-server` mode; SQLite in a temporary folder.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::api::{Conn, Started, request, round, round2, signup_request};
use crate::probe::{ChildProc, latency};

#[derive(clap::Args)]
pub struct RuntimeArgs {
    /// Games started on the shared placement.
    #[arg(long, default_value_t = 100)]
    shared_games: usize,
    /// Games started on per-game processes, and on Docker.
    #[arg(long, default_value_t = 20)]
    per_game_games: usize,
    /// Skip the Docker measurement.
    #[arg(long)]
    no_docker: bool,
    /// BACKEND_RUNTIME_WORKER_POOL_SIZE for every measurement.
    #[arg(long, default_value_t = 4)]
    pool_size: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    starts_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// `None` where it is not measured (Docker: the containers' memory is
    /// not this machine's processes').
    bytes_per_game: Option<f64>,
}

pub async fn run(args: RuntimeArgs) -> anyhow::Result<()> {
    println!(
        "runtime benchmark: {} games on shared engines, {} on per-game processes{}",
        args.shared_games,
        args.per_game_games,
        if args.no_docker { "" } else { " and on Docker" }
    );
    let pool = format!("BACKEND_RUNTIME_WORKER_POOL_SIZE={}", args.pool_size);
    println!(
        "worker pool: {} (BACKEND_RUNTIME_WORKER_POOL_SIZE)",
        args.pool_size
    );
    let shared = measure(
        args.shared_games,
        &["BACKEND_RUNTIME_PLACEMENT=shared", pool.as_str()],
        None,
    )
    .await?;
    print("shared, all at once", &shared);
    let paced = measure(
        args.shared_games,
        &["BACKEND_RUNTIME_PLACEMENT=shared", pool.as_str()],
        Some(50.0),
    )
    .await?;
    print("shared, 50 starts/s", &paced);
    let process = measure(
        args.per_game_games,
        &["BACKEND_RUNTIME_PLACEMENT=per_game", pool.as_str()],
        None,
    )
    .await?;
    print("per_game", &process);
    let docker = if args.no_docker || !std::path::Path::new("/var/run/docker.sock").exists() {
        println!("{:>20}: skipped", "docker");
        Figures::default()
    } else {
        let program = std::env::current_exe()?;
        let entrypoint: Vec<String> = ["/turnbase-bench", "engine-server", "reversi"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        turnbase_runtime::docker::build_image(
            "unix:///var/run/docker.sock",
            &program,
            &entrypoint,
            "turnbase-engine-reversi:latest",
        )
        .await?;
        let network = format!("turnbase-bench-{}", uuid::Uuid::now_v7().simple());
        let network_var = format!("BACKEND_RUNTIME_DOCKER_NETWORK={network}");
        let result = measure(
            args.per_game_games,
            &[
                "BACKEND_RUNTIME_DRIVER=docker",
                network_var.as_str(),
                pool.as_str(),
            ],
            None,
        )
        .await;
        clean_docker(&network);
        let figures = result?;
        print("docker", &figures);
        figures
    };
    println!(
        "targets: shared >= 50 games started/s with p99 <= 200 ms (paced at 50/s; all at once \
         the p99 is the queue's length) and <= 256 KiB per running idle game; per-game \
         processes p99 <= 1 s"
    );
    let line = json!({
        "bench": "runtime",
        "shared_starts_per_sec": round2(shared.starts_per_sec),
        "shared_p99_ms": round2(paced.p99_ms),
        "shared_burst_p99_ms": round2(shared.p99_ms),
        "shared_bytes_per_game": round(shared.bytes_per_game.unwrap_or(0.0)),
        "process_p99_ms": round2(process.p99_ms),
        "process_bytes_per_game": round(process.bytes_per_game.unwrap_or(0.0)),
        "docker_p99_ms": round2(docker.p99_ms),
    });
    println!("{line}");
    Ok(())
}

fn print(name: &str, f: &Figures) {
    let memory = f
        .bytes_per_game
        .map(|b| format!("{:.1} KiB per running game", b / 1024.0))
        .unwrap_or_else(|| "memory not measured".into());
    println!(
        "{name:>20}: {:>7.1} games started/s, starting → running p50 {:.1} ms, p99 {:.1} ms, {memory}",
        f.starts_per_sec, f.p50_ms, f.p99_ms
    );
}

/// Removes what the Docker measurement made.
fn clean_docker(network: &str) {
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    };
    let ours = docker(&["ps", "-aq", "--filter", "name=turnbase-game-"]);
    for id in ours.lines() {
        docker(&["rm", "-f", id]);
    }
    let volumes = docker(&["volume", "ls", "-q", "--filter", "name=turnbase-game-"]);
    for v in volumes.lines() {
        docker(&["volume", "rm", "-f", v]);
    }
    docker(&["network", "rm", network]);
}

async fn call(
    conn: &mut Conn,
    r: http::Request<Full<Bytes>>,
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

/// RSS of the backend and every engine process it runs (by their pid
/// files), in bytes.
fn memory(pid: &str, data_dir: &std::path::Path) -> u64 {
    let mut total = crate::probe::rss(pid);
    if let Ok(entries) = std::fs::read_dir(data_dir.join("engines")) {
        for entry in entries.flatten() {
            if let Ok(engine) = std::fs::read_to_string(entry.path().join("engine.pid")) {
                total += crate::probe::rss(engine.trim());
            }
        }
    }
    total
}

/// Starts `games` games: all at once (`pace` `None`), or one every
/// `1/pace` seconds.
async fn measure(games: usize, env: &[&str], pace: Option<f64>) -> anyhow::Result<Figures> {
    let mut child_args = vec!["api-backend".to_string()];
    for pair in env {
        child_args.push("--env".into());
        child_args.push((*pair).to_string());
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

    // Games of two seats (the owner and a bot), enrolled, not started.
    let deadline = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let mut ids = Vec::with_capacity(games);
    for i in 0..games {
        let body = json!({
            "title": format!("Runtime {i}"), "engine": "reversi", "enrol_deadline": deadline,
            "schedule": { "kind": "per_move", "limit": "1h" },
        });
        let r = request(
            http::Method::POST,
            addr,
            "/api/v1/user/games",
            &owner,
            Some(&body),
        );
        let game = call(&mut conn, r, 201, "create").await?;
        let id = game["id"].as_str().unwrap_or_default().to_string();
        let path = format!("/api/v1/user/games/{id}/applications");
        let body = json!({ "race_name": format!("Owner {i}") });
        let a = call(
            &mut conn,
            request(http::Method::POST, addr, &path, &owner, Some(&body)),
            201,
            "apply",
        )
        .await?;
        let path = format!(
            "/api/v1/user/games/{id}/applications/{}/approve",
            a["id"].as_str().unwrap_or_default()
        );
        call(
            &mut conn,
            request(http::Method::POST, addr, &path, &owner, Some(&json!({}))),
            200,
            "approve",
        )
        .await?;
        let path = format!("/api/v1/user/games/{id}/bots");
        let body = json!({ "name": format!("Bot {i}") });
        call(
            &mut conn,
            request(http::Method::POST, addr, &path, &owner, Some(&body)),
            201,
            "bot",
        )
        .await?;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = memory(&pid, &started.data_dir);

    // Start them all, then watch them reach `running`.
    let window = Instant::now();
    // The starts go on their own connection while this one watches, so
    // that a game's running is seen as it happens.
    let starter = {
        let (ids, owner) = (ids.clone(), owner.clone());
        let mut conn = Conn::open(addr).await?;
        tokio::spawn(async move {
            let mut asked = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                if let Some(rate) = pace {
                    let due = window + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let path = format!("/api/v1/user/games/{id}/start");
                asked.push(Instant::now());
                let r = request(http::Method::POST, addr, &path, &owner, Some(&json!({})));
                call(&mut conn, r, 200, "start").await?;
            }
            anyhow::Ok(asked)
        })
    };
    let mut running_at: Vec<Option<Instant>> = vec![None; games];
    let give_up = Instant::now() + Duration::from_secs(120);
    while running_at.iter().any(Option::is_none) {
        anyhow::ensure!(
            Instant::now() < give_up,
            "games did not all start within 120 s"
        );
        let r = request(
            http::Method::GET,
            addr,
            "/api/v1/user/me/games?limit=100",
            &owner,
            None,
        );
        let mut pages = vec![call(&mut conn, r, 200, "my games").await?];
        let mut next = pages[0]["next"].as_str().map(String::from);
        while let Some(cursor) = next {
            let path = format!("/api/v1/user/me/games?limit=100&before={cursor}");
            let page = call(
                &mut conn,
                request(http::Method::GET, addr, &path, &owner, None),
                200,
                "my games",
            )
            .await?;
            next = page["next"].as_str().map(String::from);
            pages.push(page);
        }
        let now = Instant::now();
        for page in &pages {
            for item in page["items"].as_array().into_iter().flatten() {
                let state = item["game"]["state"].as_str().unwrap_or_default();
                anyhow::ensure!(
                    state != "start_failed",
                    "a start failed: {}",
                    item["game"]["start_error"]
                );
                if state == "running"
                    && let Some(i) = ids.iter().position(|id| item["game"]["id"] == id.as_str())
                    && running_at[i].is_none()
                {
                    running_at[i] = Some(now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = window.elapsed().as_secs_f64();
    let asked = starter.await??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = memory(&pid, &started.data_dir);
    let samples: Vec<u64> = asked
        .iter()
        .zip(&running_at)
        .filter_map(|(a, r)| {
            r.map(|r| u64::try_from(r.duration_since(*a).as_nanos()).unwrap_or(u64::MAX))
        })
        .collect();
    let l = latency(samples);
    let docker = env.iter().any(|e| e.ends_with("=docker"));
    child.finish();
    child.wait().await?;
    Ok(Figures {
        starts_per_sec: games as f64 / elapsed,
        p50_ms: l.p50_ms,
        p99_ms: l.p99_ms,
        bytes_per_game: (!docker).then(|| after.saturating_sub(before) as f64 / games as f64),
    })
}
