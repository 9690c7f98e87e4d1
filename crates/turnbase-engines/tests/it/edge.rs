//! Bad input over HTTP: each a precise status with the JSON error body,
//! and the game unchanged. Also seat control and forgetting a game.

use std::sync::Arc;

use serde_json::{Value, json};
use turnbase_engine_kit::protocol::Limits;
use turnbase_engine_kit::{Host, server};
use turnbase_engines::conquest::Conquest;
use turnbase_engines::reversi::Reversi;

async fn serve<G: turnbase_engine_kit::Game>(rules: G, dir: &std::path::Path) -> String {
    let limits = Limits {
        max_body_bytes: 16 * 1024,
        max_orders_per_turn: 50,
    };
    let host = Arc::new(Host::open(rules, dir, limits).expect("host"));
    let router = server::router(host, &turnbase_core::telemetry::noop_meter());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn call(method: &str, url: &str, body: Option<String>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().expect("method"), url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let answer = request.send().await.expect("an answer");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_a_precise_json_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reversi = serve(Reversi, &dir.path().join("r")).await;
    let conquest = serve(Conquest, &dir.path().join("c")).await;
    let two = json!([{"player_id": "a", "name": "A"}, {"player_id": "b", "name": "B"}]);
    let (status, _) = call(
        "POST",
        &format!("{reversi}/games/r1/init"),
        Some(json!({"seed": 1, "settings": {"first": "first_seat"}, "players": two}).to_string()),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        "POST",
        &format!("{conquest}/games/c1/init"),
        Some(json!({"seed": 1, "players": two}).to_string()),
    )
    .await;
    assert_eq!(status, 201);
    let (_, before) = call("GET", &format!("{reversi}/games/r1/state"), None).await;

    let cases: Vec<(&str, &str, String, Option<String>)> = vec![
        ("broken JSON", "POST", format!("{reversi}/games/r2/init"), Some("{\"seed\": 1,".into())),
        ("unknown field", "POST", format!("{reversi}/games/r2/init"), Some(json!({"seed": 1, "players": two, "colour": 1}).to_string())),
        ("setting outside the schema", "POST", format!("{conquest}/games/c2/init"), Some(json!({"seed": 1, "players": two, "settings": {"planets": 9000, "range": "far"}}).to_string())),
        ("settings that do not fit together", "POST", format!("{conquest}/games/c2/init"), Some(json!({"seed": 1, "players": two, "settings": {"production_min": 9, "production_max": 2}}).to_string())),
        ("too few players", "POST", format!("{conquest}/games/c2/init"), Some(json!({"seed": 1, "players": [{"player_id": "a", "name": "A"}]}).to_string())),
        ("a player id twice", "POST", format!("{reversi}/games/r2/init"), Some(json!({"seed": 1, "players": [{"player_id": "a", "name": "A"}, {"player_id": "a", "name": "B"}]}).to_string())),
        ("a game id with a slash", "GET", format!("{reversi}/games/a%2Fb/state"), None),
        ("an unknown game", "GET", format!("{reversi}/games/nope/state"), None),
        ("an unknown player", "GET", format!("{reversi}/games/r1/players/zed/view"), None),
        ("a move on an occupied square", "PUT", format!("{reversi}/games/r1/players/a/orders"), Some(json!({"turn": 1, "orders": [{"square": "d4"}]}).to_string())),
        ("a move that flips nothing", "PUT", format!("{reversi}/games/r1/players/a/orders"), Some(json!({"turn": 1, "orders": [{"square": "a1"}]}).to_string())),
        ("not your move", "PUT", format!("{reversi}/games/r1/players/b/orders"), Some(json!({"turn": 1, "orders": [{"square": "d3"}]}).to_string())),
        ("the wrong turn", "PUT", format!("{reversi}/games/r1/players/a/orders"), Some(json!({"turn": 2, "orders": [{"square": "d3"}]}).to_string())),
        ("planets that are not yours", "PUT", format!("{conquest}/games/c1/players/a/orders"), Some(json!({"turn": 1, "orders": [{"from": 0, "to": 1, "ships": 1}, {"from": 0, "to": 1, "ships": 999999}]}).to_string())),
        ("too many orders", "PUT", format!("{conquest}/games/c1/players/a/orders"), Some(json!({"turn": 1, "orders": vec![json!({"from": 0, "to": 1, "ships": 1}); 51]}).to_string())),
        ("a dry_run that is not a boolean", "PUT", format!("{reversi}/games/r1/players/a/orders?dry_run=maybe"), Some(json!({"turn": 1, "orders": []}).to_string())),
        ("a turn that is not a number", "POST", format!("{reversi}/games/r1/turns/two/resolve"), None),
        ("a view of a turn not yet played", "GET", format!("{reversi}/games/r1/players/a/view?turn=5"), None),
        ("a view after the last possible turn", "GET", format!("{reversi}/games/r1/players/a/view?turn=4294967295"), None),
        ("deleting a game in play", "DELETE", format!("{reversi}/games/r1"), None),
        ("an oversized body", "PUT", format!("{reversi}/games/r1/players/a/orders"), Some(json!({"turn": 1, "orders": [{"square": "x".repeat(20_000)}]}).to_string())),
    ];
    let mut answers = Vec::new();
    for (what, method, url, body) in cases {
        let (status, body) = call(method, &url, body).await;
        assert!(body["error"]["code"].is_string(), "{what}: {status} {body}");
        answers.push(json!({"case": what, "status": status, "body": body}));
    }
    insta::assert_json_snapshot!(Value::Array(answers));
    let (_, after) = call("GET", &format!("{reversi}/games/r1/state"), None).await;
    assert_eq!(before, after, "refused requests changed the game");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_handed_to_the_bot_is_played_and_a_finished_game_forgotten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = serve(Reversi, dir.path()).await;
    let two = json!([{"player_id": "a", "name": "A"}, {"player_id": "b", "name": "B"}]);
    call("POST", &format!("{url}/games/g/init"), Some(json!({"seed": 4, "settings": {"first": "first_seat", "timeout": "forfeit"}, "players": two}).to_string())).await;
    let (status, state) = call(
        "PUT",
        &format!("{url}/games/g/players/a/control"),
        Some(json!({"bot": true}).to_string()),
    )
    .await;
    assert_eq!((status, state["bots"].clone()), (200, json!(["a"])));
    let (status, body) = call(
        "PUT",
        &format!("{url}/games/g/players/a/orders"),
        Some(json!({"turn": 1, "orders": [{"square": "d3"}]}).to_string()),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("seat_played_by_bot"))
    );
    // The clock of turn 1 runs out: the bot moves for a (no forfeit).
    let (status, resolution) = call("POST", &format!("{url}/games/g/turns/1/resolve"), None).await;
    assert_eq!(status, 200);
    assert_eq!(resolution["events"][0]["type"], "move", "{resolution}");
    assert_eq!(resolution["to_move"], json!(["b"]));
    // b times out under the forfeit rule: the game ends, a wins.
    let (_, resolution) = call("POST", &format!("{url}/games/g/turns/2/resolve"), None).await;
    assert_eq!(
        (
            resolution["finished"].clone(),
            resolution["winners"].clone()
        ),
        (json!(true), json!(["a"]))
    );
    let (status, body) = call("POST", &format!("{url}/games/g/turns/3/resolve"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("game_over"))
    );
    let (status, _) = call("DELETE", &format!("{url}/games/g"), None).await;
    assert_eq!(status, 204);
    let (status, body) = call("GET", &format!("{url}/games/g/state"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("game_not_found"))
    );
    assert!(!dir.path().join("games/g").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_is_continued_in_the_engines_spans() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = tokio::process::Command::new(crate::engines_bin())
        .args(["reversi", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the engine starts");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = stdout
        .next_line()
        .await
        .expect("a line")
        .expect("the startup line");
    let url = turnbase_engine_kit::check::listening_url(&line).expect("a URL");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = reqwest::Client::new()
        .post(format!("{url}/games/traced/init"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"seed": 1, "players": [{"player_id": "a", "name": "A"}, {"player_id": "b", "name": "B"}]}))
        .send()
        .await
        .expect("init");
    assert_eq!(answer.status(), 201);
    // The log (JSON lines on stderr) must show the rules' own span event
    // under the caller's trace id.
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let found = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("game set up") {
                return line.contains(trace);
            }
        }
        false
    })
    .await
    .expect("the engine logs the set-up within 10 s");
    assert!(found, "the set-up was logged outside the caller's trace");
}
