//! Turns with the real reference engines on the process driver, on both
//! backends: whole games to their end checked against the engines' own
//! history, orders and their refusals, early turns, force, pause, resume,
//! extend, excused misses and the bot taking a seat over (and giving it
//! back), two schedulers on one database, and a catch-up turn after
//! downtime seen through an injected clock.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use turnbase_store::turns::TurnPage;
use turnbase_testkit::DbKind;
use uuid::Uuid;

use crate::helpers::{TestApp, drain_push, spawn_app_with};

const PATIENCE: Duration = Duration::from_secs(60);

/// Settings every test app here runs with: one-second turns are allowed.
const FAST: &[(&str, &str)] = &[
    ("BACKEND_LOBBY_MIN_TURN_STEP", "1s"),
    ("BACKEND_RUNTIME_PLACEMENT", "shared"),
];

async fn app(backend: DbKind) -> TestApp {
    spawn_app_with(backend, FAST).await
}

/// Creates a game from `body`, seats each token's player (approved by
/// the owner, the first token) and `bots` bots, starts it, and waits
/// until its first turn is open. Returns the game id and the seat id of
/// each player, in order.
async fn running_game(
    t: &TestApp,
    players: &[&str],
    bots: usize,
    body: Value,
) -> (String, Vec<String>) {
    let owner = players[0];
    let (status, game) = t
        .send(Method::POST, "/api/v1/user/games", Some(owner), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{game}");
    let id = game["id"].as_str().expect("id").to_string();
    let tag = &id[id.len() - 6..];
    for (i, token) in players.iter().enumerate() {
        let (status, a) = t
            .send(
                Method::POST,
                &format!("/api/v1/user/games/{id}/applications"),
                Some(token),
                Some(json!({ "race_name": format!("P{i} {tag}") })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{a}");
        let (status, body) = t
            .send(
                Method::POST,
                &format!(
                    "/api/v1/user/games/{id}/applications/{}/approve",
                    a["id"].as_str().expect("id")
                ),
                Some(owner),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for b in 0..bots {
        let (status, body) = t
            .send(
                Method::POST,
                &format!("/api/v1/user/games/{id}/bots"),
                Some(owner),
                Some(json!({ "name": format!("B{b} {tag}") })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/start"),
            Some(owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, detail) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}"),
            Some(owner),
            None,
        )
        .await;
    let seats: Vec<String> = players
        .iter()
        .enumerate()
        .map(|(i, _)| {
            detail["seats"]
                .as_array()
                .expect("seats")
                .iter()
                .find(|s| s["race_name"] == format!("P{i} {tag}"))
                .expect("the player's seat")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    until(&format!("game {id}'s first turn opens"), || async {
        let (status, clock) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}/clock"),
                Some(owner),
                None,
            )
            .await;
        (status == StatusCode::OK && clock["trigger"] != "open").then_some(())
    })
    .await;
    (id, seats)
}

async fn until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::helpers::until(what, PATIENCE, probe).await
}

fn conquest(every: &str, turn_limit: u32, rules: Value) -> Value {
    json!({
        "title": "Turns", "engine": "conquest", "max_players": 6,
        "settings": { "planets": 12, "turn_limit": turn_limit },
        "enrol_deadline": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        "schedule": { "kind": "interval", "every": every },
        "rules": rules,
    })
}

async fn clock(t: &TestApp, token: &str, id: &str) -> Value {
    let (status, clock) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/clock"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{clock}");
    clock
}

async fn game_state(t: &TestApp, token: &str, id: &str) -> String {
    let (_, detail) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}"),
            Some(token),
            None,
        )
        .await;
    detail["game"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The engine's address for the game (admins' runtime record).
async fn engine_address(t: &TestApp, admin: &str, id: &str) -> String {
    let (status, body) = t
        .send(
            Method::GET,
            &format!("/api/v1/admin/runtime/{id}"),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["record"]["address"]
        .as_str()
        .expect("address")
        .to_string()
}

/// Every recorded turn (admin view), oldest first.
async fn recorded(t: &TestApp, admin: &str, id: &str) -> Vec<Value> {
    let (status, body) = t
        .send(
            Method::GET,
            &format!("/api/v1/admin/games/{id}/turns?limit=100"),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Recorded ones only: the admin list shows claims under way too.
    let mut turns: Vec<Value> = body["turns"]
        .as_array()
        .expect("turns")
        .iter()
        .filter(|t| t["resolved_at"].is_string())
        .cloned()
        .collect();
    turns.reverse();
    turns
}

/// Checks the recorded turns against the engine's own history: turns 1..n
/// each once, each resolution the one the engine stored (asking the
/// engine to resolve a resolved turn returns its stored result).
async fn matches_engine_history(t: &TestApp, admin: &str, id: &str) -> usize {
    let turns = recorded(t, admin, id).await;
    let numbers: Vec<i64> = turns
        .iter()
        .map(|x| x["turn"].as_i64().expect("n"))
        .collect();
    let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
    assert_eq!(numbers, expected, "each turn once, none missing");
    let address = engine_address(t, admin, id).await;
    let http = reqwest::Client::new();
    for turn in &turns {
        let n = turn["turn"].as_i64().expect("n");
        let stored: Value = http
            .post(format!("{address}/games/{id}/turns/{n}/resolve"))
            .send()
            .await
            .expect("engine")
            .json()
            .await
            .expect("JSON");
        assert_eq!(turn["standings"], stored["standings"], "turn {n}");
        assert_eq!(turn["events"], stored["events"], "turn {n}");
    }
    let state: Value = http
        .get(format!("{address}/games/{id}/state"))
        .send()
        .await
        .expect("engine")
        .json()
        .await
        .expect("JSON");
    assert!(
        state["finished"].as_bool().unwrap_or(false)
            || state["turn"].as_i64() == Some(turns.len() as i64 + 1),
        "{state}"
    );
    turns.len()
}

/// Sends empty orders for the open turn; whether they were taken.
async fn empty_orders_taken(t: &TestApp, token: &str, id: &str) -> bool {
    let c = clock(t, token, id).await;
    let (status, _) = t
        .send(
            Method::PUT,
            &format!("/api/v1/user/games/{id}/orders"),
            Some(token),
            Some(json!({"turn": c["turn"], "orders": []})),
        )
        .await;
    status == StatusCode::OK
}

/// One seat of a game, as its detail shows it.
async fn seat_of(t: &TestApp, token: &str, id: &str, seat: &str) -> Value {
    let (_, detail) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}"),
            Some(token),
            None,
        )
        .await;
    detail["seats"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == seat))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The seats the engine's bot plays, from the engine's state.
async fn engine_bots(address: &str, id: &str) -> Vec<String> {
    let state: Value = reqwest::get(format!("{address}/games/{id}/state"))
        .await
        .expect("engine")
        .json()
        .await
        .expect("JSON");
    state["bots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str().map(String::from))
        .collect()
}

/// Client events of one user seen on a push subscription, by kind.
fn events_of(seen: &[(String, String, Value)], user: &str, kind: &str) -> Vec<Value> {
    seen.iter()
        .filter(|(u, k, _)| u == user && k == kind)
        .map(|(_, _, p)| p.clone())
        .collect()
}

async fn a_conquest_game_with_bots_plays_to_its_end(backend: DbKind) {
    let t = app(backend).await;
    let admin = t.become_admin().await;
    let (owner, me) = t.guest("Ann").await;
    let user = me["account"]["id"].as_str().expect("id").to_string();
    let mut push = crate::helpers::subscribe(&t, "turns-test").await;
    let rules = json!({ "excused_misses": 0, "bot_takeover_after": 0 });
    let mut body = conquest("1s", 5, rules);
    body["settings"]["range"] = json!(100);
    let (id, seats) = running_game(&t, &[&owner], 3, body).await;
    // The player sends the engine's example orders each turn it has some.
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let finished = until("the game finishes", || async {
        if game_state(&t, &owner, &id).await == "finished" {
            return Some(());
        }
        let (status, c) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}/clock"),
                Some(&owner),
                None,
            )
            .await;
        if status != StatusCode::OK || c["submitted"].as_array().is_some_and(|s| !s.is_empty()) {
            return None;
        }
        let (_, options) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}/options"),
                Some(&owner),
                None,
            )
            .await;
        if let Some(example) = options.get("example").filter(|e| !e.is_null()) {
            let (status, body) = t
                .send(
                    Method::PUT,
                    &format!("/api/v1/user/games/{id}/orders"),
                    Some(&owner),
                    Some(json!({ "turn": c["turn"], "orders": example })),
                )
                .await;
            assert!(
                status == StatusCode::OK || body["error"]["code"] == "turn_closed",
                "{status} {body}"
            );
            if status == StatusCode::OK {
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        None
    });
    finished.await;
    assert!(sent.into_inner() > 0, "the player's orders went through");
    let turns = matches_engine_history(&t, &admin, &id).await;
    assert!(
        (1..=5).contains(&turns),
        "turn_limit 5 (or a player left alone sooner): {turns}"
    );
    // The player heard each turn and the end, once each.
    let mut seen = Vec::new();
    drain_push(&mut push, &mut seen, Duration::from_millis(500)).await;
    let resolved = events_of(&seen, &user, "game.turn_resolved");
    let numbers: Vec<i64> = resolved
        .iter()
        .map(|p| p["turn"].as_i64().expect("n"))
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5], "{resolved:?}");
    assert!(resolved[0]["summary"].is_string(), "{}", resolved[0]);
    let finished = events_of(&seen, &user, "game.finished");
    assert_eq!(finished.len(), 1, "{seen:?}");
    // History as the player sees it, with a replay view.
    let (status, history) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/turns"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["turns"].as_array().map(Vec::len), Some(turns));
    assert!(
        history["turns"][0].get("lateness_ms").is_none(),
        "admins only"
    );
    let (status, turn1) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/turns/1"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{turn1}");
    assert_eq!(
        turn1["view"]["you"]["player_id"],
        seats[0].as_str(),
        "{turn1}"
    );
    // The finished game released its names and queued its engine's stop.
    let (_, detail) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(detail["game"]["state"], "finished");
    let (status, closed) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/clock"),
            Some(&owner),
            None,
        )
        .await;
    // Its clock stands at the last turn played, with no one to move.
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["state"], "finished", "{closed}");
    assert!(closed["deadline"].is_null(), "{closed}");
    assert_eq!(closed["to_move"], json!([]), "{closed}");
    let (_, history) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/turns?limit=1"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(closed["turn"], history["turns"][0]["turn"], "{history}");
    assert_eq!(history["turns"][0]["finished"], true, "{history}");
    let metrics = t.metrics_text().await;
    assert!(metrics.contains("game_turns_total"), "{metrics}");
    assert!(
        metrics.contains("game_turn_lateness_seconds_bucket"),
        "{metrics}"
    );
    t.app.shutdown().await;
}

async fn a_reversi_game_against_the_bot_to_its_end(backend: DbKind) {
    let t = app(backend).await;
    let admin = t.become_admin().await;
    let (owner, me) = t.guest("Rev").await;
    let user = me["account"]["id"].as_str().expect("id").to_string();
    let mut push = crate::helpers::subscribe(&t, "reversi-test").await;
    let body = json!({
        "title": "Reversi", "engine": "reversi",
        "enrol_deadline": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        "schedule": { "kind": "per_move", "limit": "1h" },
        "rules": { "bot_delay": "0s" },
    });
    let (id, _) = running_game(&t, &[&owner], 1, body).await;
    let moved = std::sync::atomic::AtomicUsize::new(0);
    until("the reversi game ends", || async {
        if game_state(&t, &owner, &id).await == "finished" {
            return Some(());
        }
        let (_, options) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}/options"),
                Some(&owner),
                None,
            )
            .await;
        if options["to_move"] != true {
            return None;
        }
        let example = options.get("example").filter(|e| !e.is_null())?;
        let (status, body) = t
            .send(
                Method::PUT,
                &format!("/api/v1/user/games/{id}/orders"),
                Some(&owner),
                Some(json!({ "turn": options["turn"], "orders": example })),
            )
            .await;
        if status == StatusCode::OK {
            moved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(
                body["next_turn"].as_i64(),
                options["turn"]
                    .as_i64()
                    .map(|n| n + 1)
                    .filter(|_| body["finished"] == false),
                "{body}"
            );
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
        }
        None
    })
    .await;
    let moves = moved.into_inner();
    assert!(moves >= 2, "the player moved");
    let turns = matches_engine_history(&t, &admin, &id).await;
    let all = recorded(&t, &admin, &id).await;
    let by_move = all.iter().filter(|x| x["trigger"] == "move").count();
    let by_bot = all.iter().filter(|x| x["trigger"] == "bot").count();
    assert_eq!(by_move, moves, "every move of the player recorded once");
    // Passing is automatic in Reversi, so either side may move twice in a
    // row; no turn timed out.
    assert_eq!(by_move + by_bot, turns, "{all:?}");
    assert!(by_bot >= 2, "{by_bot} bot moves");
    assert!(turns >= 8, "{turns}");
    let mut seen = Vec::new();
    drain_push(&mut push, &mut seen, Duration::from_millis(500)).await;
    assert!(!events_of(&seen, &user, "game.your_move").is_empty());
    assert_eq!(events_of(&seen, &user, "game.finished").len(), 1);
    t.app.shutdown().await;
}

async fn orders_are_checked_and_refusals_are_precise(backend: DbKind) {
    let t = app(backend).await;
    let (owner, _) = t.guest("Own").await;
    let (stranger, _) = t.guest("Str").await;
    let rules = json!({ "early_turns": false });
    let mut body = conquest("1h", 20, rules);
    body["settings"]["range"] = json!(100);
    let (id, _) = running_game(&t, &[&owner], 1, body).await;
    let orders = format!("/api/v1/user/games/{id}/orders");
    let (status, body) = t
        .send(
            Method::PUT,
            &orders,
            Some(&stranger),
            Some(json!({"turn": 1, "orders": []})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    for path in ["view", "options", "clock", "turns"] {
        let (status, body) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}/{path}"),
                Some(&stranger),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    let (status, body) = t
        .send(
            Method::PUT,
            &orders,
            Some(&owner),
            Some(json!({"turn": 7, "orders": []})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "turn_closed");
    assert_eq!(body["error"]["turn"], 1);
    // The engine's 422 with its details, unchanged.
    let (status, body) = t
        .send(
            Method::PUT,
            &orders,
            Some(&owner),
            Some(json!({"turn": 1, "orders": [{"from": 9999, "to": 0, "ships": 1}, {"nope": 1}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_orders");
    assert_eq!(body["error"]["details"][0]["path"], "/orders/1", "{body}");
    let (status, body) = t
        .send(
            Method::PUT,
            &orders,
            Some(&owner),
            Some(json!({"turn": 1, "orders": {"a": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Nothing was recorded by the refusals.
    let c = clock(&t, &owner, &id).await;
    assert_eq!(c["submitted"], json!([]), "{c}");
    // Valid orders, replaced by others before the turn resolves.
    let (_, options) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/options"),
            Some(&owner),
            None,
        )
        .await;
    for _ in 0..2 {
        let (status, body) = t
            .send(
                Method::PUT,
                &orders,
                Some(&owner),
                Some(json!({"turn": 1, "orders": options["example"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let c = clock(&t, &owner, &id).await;
    assert_eq!(c["submitted"].as_array().map(Vec::len), Some(1), "{c}");
    let (status, view) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/view"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["turn"], 1);
    assert!(view["deadline"].is_string(), "{view}");
    assert_eq!(view["view"]["you"]["orders"], options["example"], "{view}");
    t.app.shutdown().await;
}

async fn owners_force_pause_resume_and_extend(backend: DbKind) {
    let t = app(backend).await;
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Boss").await;
    let (player, _) = t.guest("Pl").await;
    let (id, _) = running_game(&t, &[&owner, &player], 1, conquest("1h", 20, json!({}))).await;
    let user = |p: &str| format!("/api/v1/user/games/{id}/{p}");
    let (status, body) = t
        .send(Method::POST, &user("force-turn"), Some(&player), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = t
        .send(Method::POST, &user("force-turn"), Some(&owner), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until("the forced turn resolves", || async {
        (clock(&t, &owner, &id).await["turn"] == 2).then_some(())
    })
    .await;
    let turns = recorded(&t, &admin, &id).await;
    assert_eq!(turns.len(), 1, "one-shot: {turns:?}");
    assert_eq!(turns[0]["trigger"], "forced");
    assert!(turns[0]["lateness_ms"].is_i64(), "{}", turns[0]);
    let before = clock(&t, &owner, &id).await;
    let due = |c: &Value| {
        chrono::DateTime::parse_from_rfc3339(c["deadline"].as_str().expect("due")).expect("time")
    };
    let (status, after) = t
        .send(
            Method::POST,
            &user("extend"),
            Some(&owner),
            Some(json!({"by": "2h"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(due(&after) - due(&before), chrono::Duration::hours(2));
    let (status, body) = t
        .send(
            Method::POST,
            &user("extend"),
            Some(&owner),
            Some(json!({"by": "1h"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "already_extended");
    let (status, body) = t
        .send(
            Method::POST,
            &user("extend"),
            Some(&owner),
            Some(json!({"by": "soon"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, again) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/games/{id}/extend"),
            Some(&admin),
            Some(json!({"by": "1h", "reason": "server maintenance"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "admins extend again: {again}");
    assert_eq!(due(&again) - due(&after), chrono::Duration::hours(1));
    // Pause: nothing is taken or fired.
    let (status, body) = t
        .send(Method::POST, &user("pause"), Some(&owner), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "paused");
    let c = clock(&t, &owner, &id).await;
    assert_eq!(c["paused"], true, "{c}");
    assert!(c["deadline"].is_null(), "{c}");
    let (status, body) = t
        .send(
            Method::PUT,
            &user("orders"),
            Some(&player),
            Some(json!({"turn": 2, "orders": []})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "game_paused");
    let (status, body) = t
        .send(Method::POST, &user("force-turn"), Some(&owner), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Resume: at least a whole interval from now.
    let resumed_at = chrono::Utc::now();
    let (status, body) = t
        .send(Method::POST, &user("resume"), Some(&owner), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c = until("the resumed turn has a deadline", || async {
        let c = clock(&t, &owner, &id).await;
        (c["trigger"] != "resume").then_some(c)
    })
    .await;
    assert!(due(&c) >= resumed_at + chrono::Duration::hours(1), "{c}");
    assert_eq!(c["paused"], false, "{c}");
    assert_eq!(c["turn"], 2);
    // Admin actions are audited.
    let (status, body) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/games/{id}/force-turn"),
            Some(&admin),
            Some(json!({"reason": "stuck"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, audit) = t
        .send(
            Method::GET,
            "/api/v1/admin/audit?limit=50",
            Some(&admin),
            None,
        )
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        actions.contains(&"game.force_turn") && actions.contains(&"game.extend_turn"),
        "{audit}"
    );
    t.app.shutdown().await;
}

async fn a_turn_resolves_early_once_everyone_sent_orders(backend: DbKind) {
    let t = app(backend).await;
    let admin = t.become_admin().await;
    let (a, _) = t.guest("A").await;
    let (b, _) = t.guest("B").await;
    // Every planet in range: both players have orders to give (a seat with
    // nothing to order is not waited for, which a random map can make so).
    let mut body = conquest("1h", 20, json!({}));
    body["settings"]["range"] = json!(100);
    let (id, _) = running_game(&t, &[&a, &b], 1, body).await;
    let due_before = clock(&t, &a, &id).await["deadline"].clone();
    for token in [&a, &b] {
        let (_, options) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}/options"),
                Some(token),
                None,
            )
            .await;
        let (status, body) = t
            .send(
                Method::PUT,
                &format!("/api/v1/user/games/{id}/orders"),
                Some(token),
                Some(json!({"turn": 1, "orders": options["example"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["resolves_early"], *token == b, "{body}");
    }
    until("the early turn resolves", || async {
        (clock(&t, &a, &id).await["turn"] == 2).then_some(())
    })
    .await;
    let turns = recorded(&t, &admin, &id).await;
    assert_eq!(turns[0]["trigger"], "early");
    // The early turn used up its slot: turn 2 is due an interval later.
    let c = clock(&t, &a, &id).await;
    let parse =
        |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().expect("t")).expect("time");
    assert_eq!(
        parse(&c["deadline"]) - parse(&due_before),
        chrono::Duration::hours(1)
    );
    t.app.shutdown().await;
}

async fn absent_players_are_excused_then_replaced_by_the_bot(backend: DbKind) {
    let t = app(backend).await;
    let admin = t.become_admin().await;
    let (owner, me) = t.guest("Away").await;
    let user = me["account"]["id"].as_str().expect("id").to_string();
    let mut push = crate::helpers::subscribe(&t, "absent-test").await;
    let rules = json!({ "excused_misses": 1, "bot_takeover_after": 2, "early_turns": true });
    let mut body = conquest("1s", 50, rules);
    body["settings"]["range"] = json!(100);
    let (id, seats) = running_game(&t, &[&owner], 1, body).await;
    let seat = seats[0].clone();
    // Nobody sends anything: turn 1 is extended once (excused), then
    // turns 1 and 2 are missed and the bot takes the seat.
    let address = engine_address(&t, &admin, &id).await;
    until("the bot plays the seat", || async {
        engine_bots(&address, &id)
            .await
            .contains(&seat)
            .then_some(())
    })
    .await;
    let mine = seat_of(&t, &owner, &id, &seat).await;
    assert_eq!(mine["open_for_substitute"], true, "{mine}");
    let mut seen = Vec::new();
    drain_push(&mut push, &mut seen, Duration::from_millis(300)).await;
    let extended = events_of(&seen, &user, "game.turn_extended");
    assert_eq!(extended.len(), 1, "one excused miss: {seen:?}");
    assert_eq!(extended[0]["reason"], "excused_miss");
    assert_eq!(events_of(&seen, &user, "game.seat_taken_over").len(), 1);
    // The player comes back: orders hand the seat back.
    until("the returning player's orders are taken", || async {
        empty_orders_taken(&t, &owner, &id).await.then_some(())
    })
    .await;
    assert!(
        !engine_bots(&address, &id).await.contains(&seat),
        "the seat is the player's"
    );
    let mine = seat_of(&t, &owner, &id, &seat).await;
    assert_eq!(mine["open_for_substitute"], false, "{mine}");
    assert_eq!(mine["misses"], 0, "{mine}");
    // Away again (the excuse is spent): two misses, and the bot again.
    // A substitute applies for the open seat and the owner approves.
    let open = until("the seat is open for a substitute again", || async {
        let s = seat_of(&t, &owner, &id, &seat).await;
        (s["open_for_substitute"] == true).then_some(s)
    })
    .await;
    let race_name = open["race_name"].clone();
    let (sub, sub_me) = t.guest("Sub").await;
    let (status, body) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/seats/{}/substitute", seats[0]),
            Some(&sub),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["race_name"], race_name, "{body}");
    let (status, twice) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/seats/{}/substitute", seats[0]),
            Some(&sub),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{twice}");
    let (status, approved) = t
        .send(
            Method::POST,
            &format!(
                "/api/v1/user/games/{id}/applications/{}/approve",
                body["id"].as_str().expect("id")
            ),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["seat"]["id"], seat.as_str());
    assert_eq!(approved["seat"]["account_id"], sub_me["account"]["id"]);
    assert_eq!(approved["seat"]["race_name"], race_name);
    // The seat is the substitute's now; its old player holds none.
    until("the substitute's orders are taken", || async {
        empty_orders_taken(&t, &sub, &id).await.then_some(())
    })
    .await;
    let (status, body) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/view"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        !engine_bots(&address, &id).await.contains(&seat),
        "the seat is the player's"
    );
    t.app.shutdown().await;
}

/// A second scheduler (another backend's, on the same database and
/// engines) runs beside the app's: every turn is resolved once, none is
/// missed, and both did some of the work.
async fn two_schedulers_share_the_turns(backend: DbKind) {
    let t = app(backend).await;
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Own").await;
    let other = turnbase_turns::TurnService::new(
        t.app.database.clone(),
        crate::helpers::reference_engines(),
        turnbase_turns::TurnsConfig::default(),
        turnbase_core::worker::system_clock(),
        &turnbase_core::telemetry::noop_meter(),
    );
    other.set_notifier(t.app.notify.wake_handle());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(turnbase_turns::scheduler::run_scheduler(
        other,
        stop.clone(),
    ));
    let mut games = Vec::new();
    for _ in 0..4 {
        let (id, _) = running_game(&t, &[&owner], 2, conquest("1s", 6, json!({}))).await;
        games.push(id);
    }
    // The owner's seat sits out; it is excused once, then counted.
    for id in &games {
        until("the game finishes", || async {
            (game_state(&t, &owner, id).await == "finished").then_some(())
        })
        .await;
    }
    stop.cancel();
    running.await.expect("joined").expect("stopped cleanly");
    let mut owners = std::collections::HashSet::new();
    for id in &games {
        assert_eq!(matches_engine_history(&t, &admin, id).await, 6);
        let rows = t
            .app
            .database
            .turns()
            .turns(
                Uuid::parse_str(id).expect("uuid"),
                TurnPage {
                    before: None,
                    limit: 100,
                },
            )
            .await
            .expect("turns");
        owners.extend(rows.into_iter().filter_map(|r| r.claimed_by));
    }
    assert!(
        owners.len() >= 2,
        "both schedulers claimed turns: {owners:?}"
    );
    t.app.shutdown().await;
}

/// After downtime a game whose slots passed gets one catch-up turn, not
/// a burst: a scheduler whose clock reads five and a half hours later
/// stands for a backend that was down that long.
async fn after_downtime_one_catch_up_turn(backend: DbKind) {
    let t = app(backend).await;
    let admin = t.become_admin().await;
    let (owner, me) = t.guest("Late").await;
    let user = me["account"]["id"].as_str().expect("id").to_string();
    let rules = json!({ "excused_misses": 0 });
    let (id, _) = running_game(&t, &[&owner], 1, conquest("1h", 50, rules)).await;
    let mut push = crate::helpers::subscribe(&t, "late-test").await;
    let later = chrono::Utc::now() + chrono::Duration::minutes(330);
    let clock_fn: turnbase_core::worker::Clock = Arc::new(move || later);
    let late = turnbase_turns::TurnService::new(
        t.app.database.clone(),
        crate::helpers::reference_engines(),
        turnbase_turns::TurnsConfig::default(),
        clock_fn,
        &turnbase_core::telemetry::noop_meter(),
    );
    late.set_notifier(t.app.notify.wake_handle());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(turnbase_turns::scheduler::run_scheduler(late, stop.clone()));
    until("the late turn resolves", || async {
        (clock(&t, &owner, &id).await["turn"] == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    running.await.expect("joined").expect("stopped");
    let turns = recorded(&t, &admin, &id).await;
    assert_eq!(turns.len(), 1, "one turn, not five: {turns:?}");
    assert_eq!(turns[0]["trigger"], "catch_up");
    let c = clock(&t, &owner, &id).await;
    let due =
        chrono::DateTime::parse_from_rfc3339(c["deadline"].as_str().expect("due")).expect("t");
    assert!(
        due > later,
        "the next turn is on the schedule after the late one: {c}"
    );
    let mut seen = Vec::new();
    drain_push(&mut push, &mut seen, Duration::from_millis(300)).await;
    let told = events_of(&seen, &user, "game.turn_resolved");
    assert_eq!(told.len(), 1, "{seen:?}");
    assert_eq!(told[0]["late"], true, "{}", told[0]);
    t.app.shutdown().await;
}

/// Orders racing the turn's claim: each answer is 200 (the orders count in
/// that turn) or 409 `turn_closed`; never a silent loss. A 200 for turn 1
/// means the fleet it launched is in the player's view after turn 1.
async fn orders_racing_a_claim_are_counted_or_refused(backend: DbKind) {
    let t = app(backend).await;
    let (owner, _) = t.guest("Racer").await;
    let rules = json!({ "early_turns": false });
    let mut body = conquest("1h", 20, rules);
    body["settings"]["range"] = json!(100);
    let (id, _) = running_game(&t, &[&owner], 1, body).await;
    let (_, options) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/options"),
            Some(&owner),
            None,
        )
        .await;
    let example = options["example"].clone();
    assert!(example.is_array(), "{options}");
    let mut senders = Vec::new();
    for i in 0..24u64 {
        let (base, client, token, id, example) = (
            t.base.clone(),
            t.client.clone(),
            owner.clone(),
            id.clone(),
            example.clone(),
        );
        senders.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 4)).await;
            let response = client
                .put(format!("{base}/api/v1/user/games/{id}/orders"))
                .bearer_auth(token)
                .json(&json!({"turn": 1, "orders": example}))
                .send()
                .await
                .expect("request");
            let status = response.status();
            (status, response.json::<Value>().await.expect("JSON"))
        }));
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    let (status, body) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/force-turn"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut taken = 0;
    for sender in senders {
        let (status, body) = sender.await.expect("joined");
        match status {
            StatusCode::OK => taken += 1,
            StatusCode::CONFLICT => {
                assert_eq!(body["error"]["code"], "turn_closed", "{body}");
                assert_eq!(body["error"]["turn"], 2, "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    until("turn 1 is recorded", || async {
        (clock(&t, &owner, &id).await["turn"] == 2).then_some(())
    })
    .await;
    let (status, turn1) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{id}/turns/1"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{turn1}");
    let fleets = turn1["view"]["you"]["fleets"]
        .as_array()
        .map_or(0, Vec::len);
    if taken > 0 {
        assert!(
            fleets > 0,
            "{taken} orders taken but no fleet launched: {turn1}"
        );
    } else {
        assert_eq!(fleets, 0, "{turn1}");
    }
    t.app.shutdown().await;
}

/// An engine that is down when its turn comes: the turn is retried with
/// backoff while the reconciler restarts the engine, and resolves once,
/// late, with its lateness recorded.
async fn a_turn_survives_its_engine_dying(backend: DbKind) {
    let t = spawn_app_with(
        backend,
        &[
            ("BACKEND_LOBBY_MIN_TURN_STEP", "1s"),
            ("BACKEND_RUNTIME_PLACEMENT", "shared"),
            ("BACKEND_RUNTIME_RECONCILE_INTERVAL", "300ms"),
            ("BACKEND_TURNS_RETRY_BASE", "200ms"),
            ("BACKEND_TURNS_RETRY_MAX", "1s"),
        ],
    )
    .await;
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Crash").await;
    let (id, _) = running_game(&t, &[&owner], 1, conquest("1h", 20, json!({}))).await;
    let folder = std::path::Path::new(&t.app_data_dir())
        .join("engines")
        .join("conquest");
    let pid = std::fs::read_to_string(folder.join("engine.pid")).expect("engine.pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let (status, body) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/force-turn"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until("the turn resolves on the restarted engine", || async {
        (clock(&t, &owner, &id).await["turn"] == 2).then_some(())
    })
    .await;
    let turns = recorded(&t, &admin, &id).await;
    assert_eq!(turns.len(), 1, "{turns:?}");
    assert!(
        turns[0]["lateness_ms"].as_i64().unwrap_or(0) > 0,
        "{}",
        turns[0]
    );
    assert_eq!(matches_engine_history(&t, &admin, &id).await, 1);
    let new_pid = std::fs::read_to_string(folder.join("engine.pid")).expect("engine.pid");
    assert_ne!(
        new_pid.trim(),
        pid.trim(),
        "the reconciler started another engine"
    );
    t.app.shutdown().await;
}

/// Move clocks: a Reversi player who lets a one-second clock run out
/// passes (`pass`: the bot moves, the clock comes back) or loses
/// (`forfeit`: the game ends with the bot the winner).
async fn move_clocks_apply_the_pass_and_forfeit_rules(backend: DbKind) {
    let t = app(backend).await;
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Slow").await;
    let reversi = |rule: &str| {
        json!({
            "title": "Clock", "engine": "reversi",
            "settings": { "first": "first_seat", "timeout": rule },
            "enrol_deadline": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
            "schedule": { "kind": "per_move", "limit": "1s" },
            "rules": { "bot_delay": "0s", "excused_misses": 0, "bot_takeover_after": 0 },
        })
    };
    let (passing, seats) = running_game(&t, &[&owner], 1, reversi("pass")).await;
    until("two of the player's moves time out", || async {
        let turns = recorded(&t, &admin, &passing).await;
        // Recorded ones: the admin list shows claims under way too.
        let timed_out = turns
            .iter()
            .filter(|x| x["trigger"] == "timeout" && x["resolved_at"].is_string())
            .count();
        (timed_out >= 2).then_some(turns)
    })
    .await;
    let turns = recorded(&t, &admin, &passing).await;
    assert_eq!(turns[0]["trigger"], "timeout", "{turns:?}");
    assert_eq!(turns[1]["trigger"], "bot", "{turns:?}");
    assert!(
        turns[0]["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["rule"] == "pass")),
        "{}",
        turns[0]
    );
    // (The bot, moving alone, may well win soon after: no assertion on
    // the game's state here.)
    let (_, detail) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/games/{passing}"),
            Some(&owner),
            None,
        )
        .await;
    let misses = detail["seats"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == seats[0].as_str()))
        .map(|s| s["misses"].as_i64().unwrap_or(0))
        .unwrap_or(0);
    assert!(misses >= 2, "{detail}");

    let (forfeit, _) = running_game(&t, &[&owner], 1, reversi("forfeit")).await;
    until("the forfeit ends the game", || async {
        (game_state(&t, &owner, &forfeit).await == "finished").then_some(())
    })
    .await;
    let turns = recorded(&t, &admin, &forfeit).await;
    assert_eq!(turns.len(), 1, "{turns:?}");
    assert_eq!(turns[0]["trigger"], "timeout");
    assert!(
        turns[0]["finished"].as_bool().unwrap_or(false),
        "{}",
        turns[0]
    );
    t.app.shutdown().await;
}

turnbase_testkit::both_backends!(
    flavor = "multi_thread";
    a_conquest_game_with_bots_plays_to_its_end,
    a_reversi_game_against_the_bot_to_its_end,
    orders_are_checked_and_refusals_are_precise,
    owners_force_pause_resume_and_extend,
    a_turn_resolves_early_once_everyone_sent_orders,
    absent_players_are_excused_then_replaced_by_the_bot,
    two_schedulers_share_the_turns,
    after_downtime_one_catch_up_turn,
    orders_racing_a_claim_are_counted_or_refused,
    a_turn_survives_its_engine_dying,
    move_clocks_apply_the_pass_and_forfeit_rules,
);
