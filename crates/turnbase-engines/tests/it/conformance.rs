//! The conformance checker against the reference engines (they pass), and
//! against engines broken on purpose (each fails on the precise line).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use turnbase_engine_kit::check::{self, Outcome, Spawned};
use turnbase_engine_kit::host::DEFAULT_LIMITS;
use turnbase_engine_kit::{Game, Host, server};
use turnbase_engines::conquest::{Conquest, Send, State};
use turnbase_engines::reversi::Reversi;

use crate::engines_bin;

async fn check_spawned(game: &str) -> (check::Report, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let command = format!(
        "{} {game} --listen 127.0.0.1:0 --data-dir {}",
        engines_bin(),
        dir.path().display()
    );
    let mut spawned = Spawned::start(&command).await.expect("the engine starts");
    let url = spawned.url().to_string();
    let report = check::run(&url, Some(&mut spawned)).await;
    spawned.stop().await;
    (report, dir)
}

fn outcome<'a>(report: &'a check::Report, name: &str) -> &'a Outcome {
    &report
        .results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no check named {name:?} in\n{}", report.table()))
        .outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reference_engines_pass_including_a_sigkill_restart() {
    for game in ["conquest", "reversi"] {
        let (report, _dir) = check_spawned(game).await;
        assert!(report.passed(), "{game}:\n{}", report.table());
        assert_eq!(
            outcome(&report, "a restart (SIGKILL) keeps every game"),
            &Outcome::Pass,
            "{game}"
        );
        assert_eq!(
            outcome(&report, "resolve is idempotent by turn number"),
            &Outcome::Pass
        );
    }
    let (report, _dir) = check_spawned("conquest").await;
    assert_eq!(
        outcome(&report, "views keep each player's secrets"),
        &Outcome::Pass
    );
}

/// Serves `host` on a loopback port; the server lives as long as the test.
async fn serve<G: Game>(rules: G, dir: &std::path::Path) -> String {
    let host = Arc::new(Host::open(rules, dir, DEFAULT_LIMITS).expect("host"));
    let router = server::router(host, &turnbase_core::telemetry::noop_meter());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// Fault injection: Conquest whose views also show every other player's
/// fleets.
struct LeakyConquest;

impl Game for LeakyConquest {
    type Settings = <Conquest as Game>::Settings;
    type State = State;
    type Order = Send;
    fn describe(&self) -> turnbase_engine_kit::Description {
        Conquest.describe()
    }
    fn init(
        &self,
        s: &Self::Settings,
        p: &[turnbase_engine_kit::Player],
        r: &mut turnbase_engine_kit::Rng,
    ) -> Result<State, Vec<turnbase_engine_kit::Problem>> {
        Conquest.init(s, p, r)
    }
    fn to_move(&self, s: &State) -> Vec<usize> {
        Conquest.to_move(s)
    }
    fn validate(&self, s: &State, seat: usize, o: &[Send]) -> Vec<turnbase_engine_kit::Problem> {
        Conquest.validate(s, seat, o)
    }
    fn resolve(
        &self,
        s: &mut State,
        o: &[Option<Vec<Send>>],
        r: &mut turnbase_engine_kit::Rng,
    ) -> turnbase_engine_kit::Report {
        Conquest.resolve(s, o, r)
    }
    fn winners(&self, s: &State) -> Option<Vec<usize>> {
        Conquest.winners(s)
    }
    fn standings(&self, s: &State) -> Vec<turnbase_engine_kit::SeatStanding> {
        Conquest.standings(s)
    }
    fn view(&self, s: &State, seat: usize, pending: Option<&[Send]>) -> Value {
        let mut view = Conquest.view(s, seat, pending);
        let others: Vec<Value> = (0..s.players.len())
            .filter(|&o| o != seat)
            .map(|o| Conquest.view(s, o, None)["you"]["fleets"].clone())
            .collect();
        view["allies"] = json!(others);
        view
    }
    fn options(&self, s: &State, seat: usize) -> turnbase_engine_kit::SeatOptions<Send> {
        Conquest.options(s, seat)
    }
    fn bot_orders(&self, s: &State, seat: usize, r: &mut turnbase_engine_kit::Rng) -> Vec<Send> {
        Conquest.bot_orders(s, seat, r)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_leaking_another_players_fleets_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = serve(LeakyConquest, dir.path()).await;
    let report = check::run(&url, None).await;
    match outcome(&report, "views keep each player's secrets") {
        Outcome::Fail(why) => assert!(
            why.contains("view shows") && why.contains("private /you/fleets"),
            "{why}"
        ),
        other => panic!("expected a failure, got {other:?}\n{}", report.table()),
    }
    assert_eq!(report.failures().len(), 1, "{}", report.table());
}

type Rewrite = fn(&http::Method, &str, u16, &mut Value, &mut u32) -> u16;

/// Fault injection: a proxy in front of a real engine that rewrites some
/// answers.
async fn faulty_proxy(upstream: String, rewrite: Rewrite) -> String {
    let client = reqwest::Client::new();
    let seen = Arc::new(std::sync::Mutex::new(0u32));
    let router = axum::Router::new().fallback(move |request: Request| {
        let (client, upstream, seen) = (client.clone(), upstream.clone(), Arc::clone(&seen));
        async move {
            let method = request.method().clone();
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let answer = client
                .request(method.clone(), format!("{upstream}{path}"))
                .body(body)
                .send()
                .await
                .expect("the real engine answers");
            let status = answer.status().as_u16();
            let mut value: Value = answer.json().await.unwrap_or(Value::Null);
            let mut count = seen.lock().expect("counter");
            let status = rewrite(&method, &path, status, &mut value, &mut count);
            let status = http::StatusCode::from_u16(status).expect("a status");
            Response::from((status, axum::Json(value)).into_response())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_that_runs_again_on_retry_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = serve(Reversi, dir.path()).await;
    // The second answer for a resolve differs, as if the turn ran twice.
    let url = faulty_proxy(engine, |method, path, status, body, resolves| {
        if method == http::Method::POST && path.ends_with("/resolve") && status == 200 {
            *resolves += 1;
            if *resolves > 1 {
                body["events"] = json!([{"type": "ran_again"}]);
            }
        }
        status
    })
    .await;
    let report = check::run(&url, None).await;
    match outcome(&report, "resolve is idempotent by turn number") {
        Outcome::Fail(why) => assert!(
            why.starts_with("a retried resolve answered differently"),
            "{why}"
        ),
        other => panic!("expected a failure, got {other:?}\n{}", report.table()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_orders_answered_without_details_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = serve(Conquest, dir.path()).await;
    let url = faulty_proxy(engine, |method, path, status, body, _| {
        if method == http::Method::PUT && path.contains("/orders") && status == 422 {
            *body = json!({"error": {"code": "bad_request", "message": "no"}});
            return 400;
        }
        status
    })
    .await;
    let report = check::run(&url, None).await;
    match outcome(&report, "invalid orders are 422 with details") {
        Outcome::Fail(why) => assert!(
            why.starts_with(
                "an order of no known shape: expected 422 Unprocessable Entity, got 400 Bad Request"
            ),
            "{why}"
        ),
        other => panic!("expected a failure, got {other:?}\n{}", report.table()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_forgets_its_games_on_restart_fails() {
    // Every start gets a fresh, empty data folder.
    let command = format!(
        "{} reversi --listen 127.0.0.1:0 --data-dir \"$(mktemp -d)\"",
        engines_bin()
    );
    let mut spawned = Spawned::start(&command).await.expect("the engine starts");
    let url = spawned.url().to_string();
    let report = check::run(&url, Some(&mut spawned)).await;
    spawned.stop().await;
    match outcome(&report, "a restart (SIGKILL) keeps every game") {
        Outcome::Fail(why) => assert!(
            why.starts_with("after the restart: GET state: expected 200 OK, got 404 Not Found"),
            "{why}"
        ),
        other => panic!("expected a failure, got {other:?}\n{}", report.table()),
    }
}
