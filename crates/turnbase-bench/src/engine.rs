//! `turnbase-bench engine`: one engine process hosting 1,000 games, turns
//! resolved back to back over HTTP on loopback.
//!
//! Conquest: 1,000 games of 16 bot seats on 200 planets; every resolve
//! makes the bots think, fights the battles and syncs the next turn's
//! state file. Reversi: 1,000 bot-against-bot games, one move per call.
//! The engine runs as a child process (this program's `engine-server`
//! mode, which is the kit's `server::run`, exactly what
//! `turnbase-engines` runs), so its memory and CPU are its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};
use turnbase_engine_kit::check::Spawned;
use turnbase_engine_kit::server::EngineArgs;

use crate::probe;

#[derive(clap::Args)]
pub struct EngineArgsBench {
    /// Games hosted by each engine.
    #[arg(long, default_value_t = 1000)]
    games: usize,
    /// Conquest turns resolved per game.
    #[arg(long, default_value_t = 10)]
    conquest_turns: usize,
    /// Reversi moves played per game.
    #[arg(long, default_value_t = 12)]
    reversi_moves: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[derive(clap::Subcommand)]
pub enum ServerGame {
    Conquest(EngineArgs),
    Reversi(EngineArgs),
}

/// Child: the engine under test.
pub async fn server(game: ServerGame) -> anyhow::Result<()> {
    use turnbase_engines::{conquest::Conquest, reversi::Reversi};
    match game {
        ServerGame::Conquest(args) => turnbase_engine_kit::server::run(Conquest, args).await,
        ServerGame::Reversi(args) => turnbase_engine_kit::server::run(Reversi, args).await,
    }
}

#[derive(Serialize)]
struct Summary {
    bench: &'static str,
    conquest_resolves_per_sec: f64,
    conquest_p50_ms: f64,
    conquest_p99_ms: f64,
    reversi_moves_per_sec: f64,
    reversi_p99_ms: f64,
    bytes_per_hosted_game: f64,
}

struct Phase {
    per_sec: f64,
    latency: probe::Latency,
    cpu_ms_per_call: f64,
}

pub async fn run(args: EngineArgsBench) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let exe = std::env::current_exe().context("cannot find this program")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;

    // Conquest.
    let command = format!(
        "{} engine-server conquest --listen 127.0.0.1:0 --data-dir {} --log warn",
        exe.display(),
        data.path().join("conquest").display()
    );
    let conquest = Spawned::start(&command).await?;
    let pid = conquest.pid().context("the engine's pid")?.to_string();
    let rss_empty = probe::rss(&pid);
    let players: Vec<Value> = (0..16)
        .map(|i| json!({"player_id": format!("p{i}"), "name": format!("Bot {i}"), "bot": true}))
        .collect();
    let settings = json!({"map_size": 200, "planets": 200, "range": 40, "turn_limit": 1000});
    let started = Instant::now();
    let init = each_game(
        &client,
        conquest.url(),
        args.games,
        args.concurrency,
        1,
        |url, g, _| {
            let body = json!({"seed": g as u64, "settings": settings, "players": players});
            (
                reqwest::Method::POST,
                format!("{url}/games/c{g}/init"),
                Some(body),
            )
        },
    )
    .await?;
    let rss_hosting = probe::settled_rss(&pid).await;
    let per_game_after_init = (rss_hosting.saturating_sub(rss_empty)) as f64 / args.games as f64;
    println!(
        "conquest: {} games set up in {:.1} s ({:.0}/s); engine RSS {:.1} MiB empty, {:.1} MiB hosting → {:.1} KiB per game",
        args.games,
        started.elapsed().as_secs_f64(),
        args.games as f64 / init.elapsed_s,
        rss_empty as f64 / 1048576.0,
        rss_hosting as f64 / 1048576.0,
        per_game_after_init / 1024.0,
    );
    let cpu_before = probe::usage(&pid).cpu_s;
    let resolves = each_game(
        &client,
        conquest.url(),
        args.games,
        args.concurrency,
        args.conquest_turns,
        |url, g, round| {
            (
                reqwest::Method::POST,
                format!("{url}/games/c{g}/turns/{}/resolve", round + 1),
                None,
            )
        },
    )
    .await?;
    let cpu = probe::usage(&pid).cpu_s - cpu_before;
    let conquest_phase = Phase {
        per_sec: resolves.calls as f64 / resolves.elapsed_s,
        latency: probe::latency(resolves.samples_ns),
        cpu_ms_per_call: cpu * 1000.0 / resolves.calls as f64,
    };
    let rss_played = probe::settled_rss(&pid).await;
    let per_game_after_play = (rss_played.saturating_sub(rss_empty)) as f64 / args.games as f64;
    println!(
        "conquest: {} resolves (16 bot seats, 200 planets, state file synced each) in {:.1} s: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, engine CPU {:.2} ms per resolve; RSS after play {:.1} KiB per game",
        resolves.calls,
        resolves.elapsed_s,
        conquest_phase.per_sec,
        conquest_phase.latency.p50_ms,
        conquest_phase.latency.p99_ms,
        conquest_phase.cpu_ms_per_call,
        per_game_after_play / 1024.0,
    );
    conquest.stop().await;

    // Reversi.
    let command = format!(
        "{} engine-server reversi --listen 127.0.0.1:0 --data-dir {} --log warn",
        exe.display(),
        data.path().join("reversi").display()
    );
    let reversi = Spawned::start(&command).await?;
    let pid = reversi.pid().context("the engine's pid")?.to_string();
    let two = json!([{"player_id": "a", "name": "A", "bot": true}, {"player_id": "b", "name": "B", "bot": true}]);
    each_game(
        &client,
        reversi.url(),
        args.games,
        args.concurrency,
        1,
        |url, g, _| {
            let body = json!({"seed": g as u64, "players": two});
            (
                reqwest::Method::POST,
                format!("{url}/games/r{g}/init"),
                Some(body),
            )
        },
    )
    .await?;
    let cpu_before = probe::usage(&pid).cpu_s;
    let moves = each_game(
        &client,
        reversi.url(),
        args.games,
        args.concurrency,
        args.reversi_moves,
        |url, g, round| {
            (
                reqwest::Method::POST,
                format!("{url}/games/r{g}/turns/{}/resolve", round + 1),
                None,
            )
        },
    )
    .await?;
    let cpu = probe::usage(&pid).cpu_s - cpu_before;
    let reversi_phase = Phase {
        per_sec: moves.calls as f64 / moves.elapsed_s,
        latency: probe::latency(moves.samples_ns),
        cpu_ms_per_call: cpu * 1000.0 / moves.calls as f64,
    };
    println!(
        "reversi: {} bot moves in {:.1} s: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, engine CPU {:.2} ms per move",
        moves.calls,
        moves.elapsed_s,
        reversi_phase.per_sec,
        reversi_phase.latency.p50_ms,
        reversi_phase.latency.p99_ms,
        reversi_phase.cpu_ms_per_call,
    );
    reversi.stop().await;

    probe::report(&Summary {
        bench: "engine",
        conquest_resolves_per_sec: round(conquest_phase.per_sec),
        conquest_p50_ms: round(conquest_phase.latency.p50_ms),
        conquest_p99_ms: round(conquest_phase.latency.p99_ms),
        reversi_moves_per_sec: round(reversi_phase.per_sec),
        reversi_p99_ms: round(reversi_phase.latency.p99_ms),
        bytes_per_hosted_game: per_game_after_init.max(per_game_after_play).round(),
    })
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

struct Calls {
    calls: usize,
    elapsed_s: f64,
    samples_ns: Vec<u64>,
}

/// Makes `rounds` calls per game, round by round (every game's call of a
/// round before the next round), `concurrency` at a time; each call must
/// answer 2xx.
async fn each_game(
    client: &reqwest::Client,
    url: &str,
    games: usize,
    concurrency: usize,
    rounds: usize,
    make: impl Fn(&str, usize, usize) -> (reqwest::Method, String, Option<Value>) + Send + Sync,
) -> anyhow::Result<Calls> {
    let make = Arc::new(make);
    let mut samples = Vec::with_capacity(games * rounds);
    let started = Instant::now();
    for round in 0..rounds {
        let next = Arc::new(AtomicUsize::new(0));
        let results = futures::future::join_all((0..concurrency).map(|_| {
            let (client, next, make) = (client.clone(), Arc::clone(&next), Arc::clone(&make));
            async move {
                let mut local = Vec::new();
                loop {
                    let game = next.fetch_add(1, Ordering::Relaxed);
                    if game >= games {
                        return anyhow::Ok(local);
                    }
                    let (method, target, body) = make(url, game, round);
                    let mut request = client.request(method, &target);
                    if let Some(body) = body {
                        request = request.json(&body);
                    }
                    let sent = Instant::now();
                    let answer = request.send().await?;
                    let status = answer.status();
                    let text = answer.text().await?;
                    if !status.is_success() {
                        anyhow::bail!("{target}: {status} {text}");
                    }
                    local.push(sent.elapsed().as_nanos() as u64);
                }
            }
        }))
        .await;
        for result in results {
            samples.extend(result?);
        }
    }
    Ok(Calls {
        calls: samples.len(),
        elapsed_s: started.elapsed().as_secs_f64(),
        samples_ns: samples,
    })
}
