//! The lobby over the API, on both backends: creating games (and every
//! way to get it wrong), enrolment with approval and the race-name
//! directory, the state machine's 409s, authorisation, admin actions, the
//! live events a push subscriber sees, and racing clients.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tonic::Streaming;
use turnbase_push::proto::PushMessage;
use turnbase_push::proto::push_event::Kind as EventKind;
use turnbase_push::proto::push_message::Kind as Msg;
use turnbase_testkit::DbKind;

use crate::helpers::{TestApp, spawn_app};

fn deadline(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339()
}

fn conquest(title: &str) -> Value {
    json!({
        "title": title,
        "engine": "conquest",
        "settings": { "planets": 24 },
        "max_players": 6,
        "enrol_deadline": deadline(24),
        "schedule": { "kind": "cron", "cron": "0 18 * * *", "time_zone": "Europe/Berlin" },
    })
}

async fn post(t: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    t.send(Method::POST, path, Some(token), Some(body)).await
}

async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    t.send(Method::GET, path, Some(token), None).await
}

/// Creates a game and returns its id.
async fn create(t: &TestApp, token: &str, body: Value) -> String {
    let (status, game) = post(t, token, "/api/v1/user/games", body).await;
    assert_eq!(status, StatusCode::CREATED, "{game}");
    game["id"].as_str().expect("an id").to_string()
}

async fn apply(t: &TestApp, token: &str, game: &str, name: &str) -> (StatusCode, Value) {
    post(
        t,
        token,
        &format!("/api/v1/user/games/{game}/applications"),
        json!({ "race_name": name }),
    )
    .await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn subscribe(t: &TestApp) -> Streaming<PushMessage> {
    crate::helpers::subscribe(t, "lobby-test").await
}

/// Client events until one of `kind` arrives: (user, payload).
async fn event(stream: &mut Streaming<PushMessage>, kind: &str) -> (String, Value) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no {kind} within 10 s"))
            .expect("the stream stays open")
            .expect("a message");
        if let Some(Msg::Events(events)) = message.kind {
            for e in events.events {
                if let Some(EventKind::ClientEvent(c)) = e.kind
                    && c.kind == kind
                {
                    let payload = serde_json::from_slice(&c.payload).expect("JSON payload");
                    return (c.user_id, payload);
                }
            }
        }
    }
}

async fn user_id(t: &TestApp, token: &str) -> String {
    let (_, me) = get(t, token, "/api/v1/user/me").await;
    me["id"].as_str().expect("id").to_string()
}

async fn a_game_is_created_with_defaults_and_a_preview_and_bad_input_is_named(backend: DbKind) {
    let t = spawn_app(backend).await;
    let (owner, _) = t.guest("Owner").await;
    let (status, engines) = t
        .send(Method::GET, "/api/v1/public/engines", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = engines["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or(""),
                e["mode"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("conquest", "simultaneous"), ("reversi", "sequential")]
    );

    let (status, game) = post(&t, &owner, "/api/v1/user/games", conquest("Stars")).await;
    assert_eq!(status, StatusCode::CREATED, "{game}");
    assert_eq!(game["state"], "enrolling");
    assert_eq!(game["settings"]["planets"], 24);
    let defaults = game["settings"].as_object().expect("settings").len();
    assert!(defaults > 1, "defaults filled in: {game}");
    assert_eq!(game["min_players"], 2, "the kind's minimum by default");
    assert_eq!(
        (game["max_players"].as_i64(), game["free_seats"].as_i64()),
        (Some(6), Some(6))
    );
    let turns = game["next_turns"].as_array().expect("a preview");
    assert_eq!(turns.len(), 5);
    for turn in turns {
        let local = turn["local"].as_str().expect("local");
        assert!(local.contains("T18:00:00+0"), "18:00 in Berlin: {local}");
    }
    assert_eq!(game["visibility"], "public");
    assert!(game["invite_code"].is_null());

    let reversi = json!({
        "title": "Duel", "engine": "reversi", "enrol_deadline": deadline(2),
        "schedule": { "kind": "per_move", "limit": "12h" },
    });
    let (status, duel) = post(&t, &owner, "/api/v1/user/games", reversi).await;
    assert_eq!(status, StatusCode::CREATED, "{duel}");
    assert_eq!(
        duel["next_turns"],
        json!([]),
        "per-move games have no slots"
    );

    let with = |f: &dyn Fn(&mut Value)| {
        let mut body = conquest("Bad");
        f(&mut body);
        body
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with(&|b| b["engine"] = json!("chess")),
            "unknown_engine",
            "chess",
        ),
        (
            with(&|b| b["settings"] = json!({ "planets": 999 })),
            "invalid_settings",
            "/settings/planets",
        ),
        (
            with(&|b| b["settings"] = json!({ "colour": "red" })),
            "invalid_settings",
            "unknown setting",
        ),
        (
            with(&|b| b["min_players"] = json!(7)),
            "bad_request",
            "min_players (7) is more than max_players (6)",
        ),
        (
            with(&|b| b["max_players"] = json!(17)),
            "bad_request",
            "2 to 16 players",
        ),
        (
            with(&|b| b["enrol_deadline"] = json!("2020-01-01T00:00:00Z")),
            "bad_request",
            "enrol_deadline",
        ),
        (
            with(&|b| b["schedule"]["cron"] = json!("0 25 * * *")),
            "bad_request",
            "schedule.cron",
        ),
        (
            with(&|b| b["schedule"]["time_zone"] = json!("Mars/Base")),
            "bad_request",
            "schedule.time_zone",
        ),
        (
            with(&|b| b["schedule"] = json!({ "kind": "per_move", "limit": "1h" })),
            "bad_request",
            "schedule.kind",
        ),
        (with(&|b| b["title"] = json!("  ")), "bad_request", "title"),
        (
            with(&|b| b["visibility"] = json!("secret")),
            "bad_request",
            "visibility",
        ),
    ];
    for (body, want_code, want_text) in cases {
        let (status, err) = post(&t, &owner, "/api/v1/user/games", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(code(&err), want_code, "{err}");
        assert!(err.to_string().contains(want_text), "{want_text}: {err}");
    }
    let (status, err) = post(&t, &owner, "/api/v1/user/games", json!({ "title": "x" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");

    // Nothing was created by the refused requests.
    let (_, mine) = get(&t, &owner, "/api/v1/user/me/games").await;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(2), "{mine}");

    for bad in [
        "limit=0",
        "limit=101",
        "free_seats=-1",
        "free_seats=65",
        "state=lost",
        "before=not-a-uuid",
    ] {
        let (status, err) = get(&t, &owner, &format!("/api/v1/user/games?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
    }
    t.app.shutdown().await;
}

async fn the_whole_enrolment_flow_with_its_events(backend: DbKind) {
    let t = spawn_app(backend).await;
    let mut push = subscribe(&t).await;
    let (owner, _) = t.guest("Owner").await;
    let (ann, _) = t.guest("Ann").await;
    let (bo, _) = t.guest("Bo").await;
    let (cy, _) = t.guest("Cy").await;
    let (owner_id, ann_id, bo_id) = (
        user_id(&t, &owner).await,
        user_id(&t, &ann).await,
        user_id(&t, &bo).await,
    );
    let mut body = conquest("Flow");
    body["min_players"] = json!(3);
    body["max_players"] = json!(3);
    let game = create(&t, &owner, body).await;

    let (status, a) = apply(&t, &ann, &game, "Zoë").await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "pending");
    let (to, received) = event(&mut push, "lobby.application_received").await;
    assert_eq!(
        (to.as_str(), received["race_name"].as_str()),
        (owner_id.as_str(), Some("Zoë"))
    );

    // The name is reserved, however it is written.
    let (status, err) = apply(&t, &bo, &game, "ZOE").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "race_name_reserved"),
        "{err}"
    );
    let availability = |name: &str| {
        let path = format!("/api/v1/public/race-names/{name}/availability");
        let t = &t;
        async move { t.send(Method::GET, &path, None, None).await.1 }
    };
    assert_eq!(availability("zoe%CC%88").await["status"], "reserved");
    assert_eq!(availability("Vega").await["status"], "available");
    let invalid = availability("admin").await;
    assert_eq!(invalid["status"], "invalid");
    assert!(
        invalid["reason"]
            .as_str()
            .unwrap_or("")
            .contains("reserved"),
        "{invalid}"
    );
    assert_eq!(availability("x").await["status"], "invalid");

    let (status, err) = apply(&t, &ann, &game, "Another").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "already_applied")
    );
    let (status, err) = apply(&t, &bo, &game, "<script>").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, b) = apply(&t, &bo, &game, "Vega").await;
    assert_eq!(status, StatusCode::CREATED, "{b}");

    // Only the owner decides.
    let approve = |token: &str, app: &Value| {
        let path = format!(
            "/api/v1/user/games/{game}/applications/{}/approve",
            app["id"].as_str().unwrap_or("")
        );
        let (t, token) = (&t, token.to_string());
        async move { post(t, &token, &path, json!({})).await }
    };
    let (status, err) = approve(&bo, &b).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, approved) = approve(&owner, &a).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["seat"]["race_name"], "Zoë");
    let (to, ev) = event(&mut push, "lobby.application_approved").await;
    assert_eq!(
        (to.as_str(), ev["game_id"].as_str()),
        (ann_id.as_str(), Some(game.as_str()))
    );
    assert_eq!(availability("ZOE").await["status"], "taken");
    let (status, err) = approve(&owner, &a).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "application_not_pending")
    );

    let reject_path = format!(
        "/api/v1/user/games/{game}/applications/{}/reject",
        b["id"].as_str().expect("id")
    );
    let (status, rejected) = post(&t, &owner, &reject_path, json!({ "reason": "too late" })).await;
    assert_eq!(status, StatusCode::OK, "{rejected}");
    let (to, ev) = event(&mut push, "lobby.application_rejected").await;
    assert_eq!(
        (to.as_str(), ev["reason"].as_str()),
        (bo_id.as_str(), Some("too late"))
    );
    assert_eq!(
        availability("Vega").await["status"],
        "available",
        "released"
    );

    // Bo applies again; the owner seats a bot; the game is then full.
    let (status, b2) = apply(&t, &bo, &game, "Vega").await;
    assert_eq!(status, StatusCode::CREATED, "{b2}");
    let (status, bot) = post(
        &t,
        &owner,
        &format!("/api/v1/user/games/{game}/bots"),
        json!({ "name": "Robo Zoe" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bot}");
    assert_eq!(bot["is_bot"], true);
    let (status, _) = approve(&owner, &b2).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = apply(&t, &cy, &game, "Cygnus").await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "game_full"));

    // Bo leaves before the start; Cy takes the seat.
    let (status, w) = post(
        &t,
        &bo,
        &format!("/api/v1/user/games/{game}/withdraw"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, w["status"].as_str()),
        (StatusCode::OK, Some("withdrawn"))
    );
    let (status, c) = apply(&t, &cy, &game, "Cygnus").await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let (_, mine) = get(&t, &cy, "/api/v1/user/me/games").await;
    assert_eq!(
        mine["items"][0]["application"]["status"], "pending",
        "{mine}"
    );
    assert_eq!(mine["items"][0]["owner"], false);
    let (status, _) = approve(&owner, &c).await;
    assert_eq!(status, StatusCode::OK);

    let (status, started) = post(
        &t,
        &owner,
        &format!("/api/v1/user/games/{game}/start"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, started["state"].as_str()),
        (StatusCode::OK, Some("starting")),
        "{started}"
    );
    let (to, ev) = event(&mut push, "lobby.game_starting").await;
    assert!([&owner_id, &ann_id].contains(&&to), "{to}");
    assert_eq!(ev["players"], 3);

    // Past enrolment: no applications, no withdrawal, but resignation.
    let (status, err) = apply(&t, &bo, &game, "Latecomer").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "enrolment_closed"),
        "{err}"
    );
    let (status, err) = post(
        &t,
        &ann,
        &format!("/api/v1/user/games/{game}/withdraw"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "enrolment_closed"),
        "{err}"
    );
    let (status, seat) = post(
        &t,
        &ann,
        &format!("/api/v1/user/games/{game}/resign"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, seat["status"].as_str()),
        (StatusCode::OK, Some("resigned")),
        "{seat}"
    );
    let (_, mine) = get(&t, &ann, "/api/v1/user/me/games").await;
    assert_eq!(mine["items"][0]["seat"]["status"], "resigned", "{mine}");

    // The owner sees seats, applications and the history.
    let (status, detail) = get(&t, &owner, &format!("/api/v1/user/games/{game}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        detail["seats"].as_array().map(Vec::len),
        Some(3),
        "{detail}"
    );
    assert_eq!(
        detail["applications"].as_array().map(Vec::len),
        Some(4),
        "{detail}"
    );
    let history: Vec<_> = detail["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["to"].as_str().unwrap_or("").to_string())
        .collect();
    // The runtime may have started the engine meanwhile.
    assert_eq!(history[..2], ["enrolling", "starting"], "{history:?}");
    // A player sees the seats and only their own application.
    let (_, seen) = get(&t, &bo, &format!("/api/v1/user/games/{game}")).await;
    assert_eq!(
        seen["applications"].as_array().map(Vec::len),
        Some(2),
        "{seen}"
    );
    assert_eq!(seen["history"], json!([]));

    let metrics = t.metrics_text().await;
    assert!(metrics.contains("games_started_total 1"), "{metrics}");
    assert!(
        metrics.contains(r#"lobby_applications_total{outcome="approved""#),
        "{metrics}"
    );
    t.app.shutdown().await;
}

async fn illegal_moves_and_strangers_get_precise_refusals(backend: DbKind) {
    let t = spawn_app(backend).await;
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Owner").await;
    let (other, _) = t.guest("Other").await;
    let game = create(&t, &owner, conquest("Guarded")).await;
    let path = |tail: &str| format!("/api/v1/user/games/{game}{tail}");

    // Someone else's game.
    for (method, tail, body) in [
        (Method::PATCH, "", json!({ "title": "Mine now" })),
        (Method::POST, "/start", json!({})),
        (Method::POST, "/cancel", json!({})),
        (Method::POST, "/bots", json!({ "name": "Robo" })),
        (Method::GET, "/applications", Value::Null),
    ] {
        let body = (!body.is_null()).then_some(body);
        let (status, err) = t
            .send(method.clone(), &path(tail), Some(&other), body)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {tail}: {err}");
    }
    let (status, _) = get(&t, &other, &path("")).await;
    assert_eq!(status, StatusCode::OK, "a public game is visible");
    let missing = uuid::Uuid::now_v7();
    let (status, err) = get(&t, &other, &format!("/api/v1/user/games/{missing}")).await;
    assert_eq!((status, code(&err)), (StatusCode::NOT_FOUND, "not_found"));

    // Too few players to start; editing below the bounds.
    let (status, err) = post(&t, &owner, &path("/start"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("0 of at least 2"),
        "{err}"
    );
    let (status, err) = t
        .send(
            Method::PATCH,
            &path(""),
            Some(&owner),
            Some(json!({ "max_players": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, edited) = t
        .send(
            Method::PATCH,
            &path(""),
            Some(&owner),
            Some(json!({ "title": "Renamed", "settings": {} })),
        )
        .await;
    assert_eq!(
        (status, edited["title"].as_str()),
        (StatusCode::OK, Some("Renamed")),
        "{edited}"
    );

    // Reversi plays no more than two; bots are for kinds that play them.
    let (status, cancelled) = post(&t, &owner, &path("/cancel"), json!({})).await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    for tail in ["/start", "/cancel"] {
        let (status, err) = post(&t, &owner, &path(tail), json!({})).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::CONFLICT, "illegal_transition"),
            "{err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("the game is cancelled"),
            "{err}"
        );
    }
    let (status, err) = t
        .send(
            Method::PATCH,
            &path(""),
            Some(&owner),
            Some(json!({ "title": "Again" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    // Unlisted games: invisible to strangers, joined with the code only.
    let mut body = conquest("Hidden");
    body["visibility"] = json!("unlisted");
    let (status, hidden) = post(&t, &owner, "/api/v1/user/games", body).await;
    assert_eq!(status, StatusCode::CREATED);
    let code_text = hidden["invite_code"]
        .as_str()
        .expect("an invite code")
        .to_string();
    let hid = hidden["id"].as_str().expect("id").to_string();
    let (status, _) = get(&t, &other, &format!("/api/v1/user/games/{hid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, seen) = get(
        &t,
        &other,
        &format!("/api/v1/user/games/{hid}?invite_code={code_text}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        seen["game"]["invite_code"].is_null(),
        "only the owner sees the code"
    );
    let (_, listed) = get(&t, &other, "/api/v1/user/games").await;
    assert!(
        !listed.to_string().contains(&hid),
        "unlisted games are not listed"
    );
    let (status, err) = apply(&t, &other, &hid, "Sneaky").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::FORBIDDEN, "wrong_invite_code")
    );
    let (status, err) = post(
        &t,
        &other,
        &format!("/api/v1/user/games/{hid}/applications"),
        json!({ "race_name": "Sneaky", "invite_code": "WRONGWRONG" }),
    )
    .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::FORBIDDEN, "wrong_invite_code")
    );
    let (status, _) = post(
        &t,
        &other,
        &format!("/api/v1/user/games/{hid}/applications"),
        json!({ "race_name": "Invited", "invite_code": code_text }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Admin routes are for admins only; admins act on any game, audited.
    let (status, _) = get(&t, &other, "/api/v1/admin/games").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, all) = get(&t, &admin, "/api/v1/admin/games?q=hidd").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(all["items"][0]["invite_code"], code_text.as_str());
    let (_, cancelled_only) = get(&t, &admin, "/api/v1/admin/games?state=cancelled").await;
    assert_eq!(cancelled_only["items"].as_array().map(Vec::len), Some(1));
    let (status, shown) = get(&t, &admin, &format!("/api/v1/admin/games/{hid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["applications"].as_array().map(Vec::len), Some(1));
    let other_id = user_id(&t, &other).await;
    let (status, moved) = post(
        &t,
        &admin,
        &format!("/api/v1/admin/games/{hid}/transfer"),
        json!({ "owner_id": other_id }),
    )
    .await;
    assert_eq!(
        (status, moved["owner_id"].as_str()),
        (StatusCode::OK, Some(other_id.as_str()))
    );
    let (status, err) = post(
        &t,
        &admin,
        &format!("/api/v1/admin/games/{hid}/cancel"),
        json!({ "reason": "" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, gone) = post(
        &t,
        &admin,
        &format!("/api/v1/admin/games/{hid}/cancel"),
        json!({ "reason": "spam" }),
    )
    .await;
    assert_eq!(
        (status, gone["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{gone}"
    );
    let (_, audit) = get(&t, &admin, "/api/v1/admin/audit").await;
    let actions: Vec<_> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        actions.starts_with(&["game.cancel".into(), "game.transfer".into()]),
        "{actions:?}"
    );
    let (_, names) = t
        .send(
            Method::GET,
            "/api/v1/public/race-names/Invited/availability",
            None,
            None,
        )
        .await;
    assert_eq!(
        names["status"], "available",
        "cancelling released the names"
    );
    let metrics = t.metrics_text().await;
    assert!(metrics.contains("games_abandoned_total 2"), "{metrics}");
    assert!(
        metrics.contains(r#"lobby_applications_total{outcome="closed""#),
        "the invited application was closed: {metrics}"
    );
    t.app.shutdown().await;
}

async fn racing_clients_never_overfill_a_game_or_share_a_name(backend: DbKind) {
    let t = spawn_app(backend).await;
    let (owner, _) = t.guest("Owner").await;
    let mut body = conquest("Race");
    body["max_players"] = json!(10);
    let game = create(&t, &owner, body).await;
    let mut applications = Vec::new();
    for i in 0..20 {
        let (token, _) = t.guest(&format!("P{i}")).await;
        let (status, a) = apply(&t, &token, &game, &format!("Racer {i}")).await;
        assert_eq!(status, StatusCode::CREATED, "{a}");
        applications.push(a["id"].as_str().expect("id").to_string());
    }
    let approvals = applications.iter().map(|id| {
        let path = format!("/api/v1/user/games/{game}/applications/{id}/approve");
        let (t, owner) = (&t, owner.clone());
        async move { post(t, &owner, &path, json!({})).await }
    });
    let outcomes = futures::future::join_all(approvals).await;
    let ok = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    let full = outcomes
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && code(b) == "game_full")
        .count();
    assert_eq!((ok, full), (10, 10), "{outcomes:?}");
    let (_, detail) = get(&t, &owner, &format!("/api/v1/user/games/{game}")).await;
    assert_eq!(detail["game"]["seats_taken"], 10);
    assert_eq!(detail["seats"].as_array().map(Vec::len), Some(10));

    // One name, ten players, ten games, at once: one holds it.
    let mut tries = Vec::new();
    for i in 0..10 {
        let (token, _) = t.guest(&format!("Q{i}")).await;
        let g = create(&t, &owner, conquest("Name race")).await;
        tries.push((token, g));
    }
    let applies = tries
        .iter()
        .map(|(token, g)| apply(&t, token, g, "Highlander"));
    let outcomes = futures::future::join_all(applies).await;
    let won = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let held = outcomes
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && code(b) == "race_name_reserved")
        .count();
    assert_eq!((won, held), (1, 9), "{outcomes:?}");
    t.app.shutdown().await;
}

async fn browsing_pages_and_filters(backend: DbKind) {
    let t = spawn_app(backend).await;
    let (owner, _) = t.guest("Owner").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = conquest(&format!("Game {i}"));
        body["max_players"] = json!(2 + i);
        ids.push(create(&t, &owner, body).await);
    }
    let duel = json!({
        "title": "Duel", "engine": "reversi", "enrol_deadline": deadline(2),
        "schedule": { "kind": "per_move", "limit": "1h" },
    });
    create(&t, &owner, duel).await;
    let (_, first) = get(&t, &owner, "/api/v1/user/games?engine=conquest&limit=2").await;
    let titles = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|g| g["title"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(titles(&first), ["Game 4", "Game 3"], "newest first");
    let next = first["next"].as_str().expect("a next page");
    let (_, second) = get(
        &t,
        &owner,
        &format!("/api/v1/user/games?engine=conquest&limit=2&before={next}"),
    )
    .await;
    assert_eq!(titles(&second), ["Game 2", "Game 1"]);
    let (_, roomy) = get(&t, &owner, "/api/v1/user/games?free_seats=5").await;
    assert_eq!(titles(&roomy), ["Game 4", "Game 3"]);
    let (_, duels) = get(&t, &owner, "/api/v1/user/games?engine=reversi").await;
    assert_eq!(titles(&duels), ["Duel"]);
    let (_, none) = get(&t, &owner, "/api/v1/user/games?state=running").await;
    assert_eq!(none["items"], json!([]));
    assert!(none["next"].is_null());
    t.app.shutdown().await;
}

async fn a_blocked_player_loses_pending_applications_and_keeps_seats(backend: DbKind) {
    let t = spawn_app(backend).await;
    let admin = t.become_admin().await;
    let (owner, _) = t.guest("Owner").await;
    let (cheat, _) = t.guest("Cheat").await;
    let cheat_id = user_id(&t, &cheat).await;
    let seated = create(&t, &owner, conquest("Seated")).await;
    let pending = create(&t, &owner, conquest("Pending")).await;
    let (_, a) = apply(&t, &cheat, &seated, "Sly One").await;
    let path = format!(
        "/api/v1/user/games/{seated}/applications/{}/approve",
        a["id"].as_str().expect("id")
    );
    assert_eq!(post(&t, &owner, &path, json!({})).await.0, StatusCode::OK);
    let (status, _) = apply(&t, &cheat, &pending, "Sly Two").await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = post(
        &t,
        &admin,
        &format!("/api/v1/admin/accounts/{cheat_id}/block"),
        json!({ "reason": "cheating" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, apps) = get(
        &t,
        &owner,
        &format!("/api/v1/user/games/{pending}/applications"),
    )
    .await;
    assert_eq!(apps["items"][0]["status"], "rejected", "{apps}");
    assert_eq!(apps["items"][0]["reason"], "account blocked");
    let (_, name) = t
        .send(
            Method::GET,
            "/api/v1/public/race-names/Sly%20Two/availability",
            None,
            None,
        )
        .await;
    assert_eq!(name["status"], "available", "the reservation is released");
    let (_, detail) = get(&t, &owner, &format!("/api/v1/user/games/{seated}")).await;
    assert_eq!(
        detail["seats"].as_array().map(Vec::len),
        Some(1),
        "seats stay: {detail}"
    );
    t.app.shutdown().await;
}

turnbase_testkit::both_backends!(
    flavor = "multi_thread";
    a_blocked_player_loses_pending_applications_and_keeps_seats,
    a_game_is_created_with_defaults_and_a_preview_and_bad_input_is_named,
    the_whole_enrolment_flow_with_its_events,
    illegal_moves_and_strangers_get_precise_refusals,
    racing_clients_never_overfill_a_game_or_share_a_name,
    browsing_pages_and_filters,
);
