//! Accounts through the real HTTP stack: sign-in by mailed code (read back
//! from the delivered mail), guests and upgrades, sessions and their
//! revocation (seen by a real push subscriber over gRPC), admin actions,
//! the internal API, limits, and bad input.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tonic::Streaming;
use turnbase_push::proto::PushMessage;
use turnbase_push::proto::push_event::Kind as EventKind;
use turnbase_push::proto::push_message::Kind as Msg;
use turnbase_testkit::DbKind;

use crate::helpers::{ADMIN_EMAIL, INTERNAL_TOKEN, TestApp, spawn_app, spawn_app_with};

const START: &str = "/api/v1/public/auth/email/start";
const VERIFY: &str = "/api/v1/public/auth/email/verify";
const GUEST: &str = "/api/v1/public/auth/guest";

fn token(body: &Value) -> String {
    body["token"].as_str().expect("a token").to_string()
}

async fn me(t: &TestApp, token: &str) -> (StatusCode, Value) {
    t.send(Method::GET, "/api/v1/user/me", Some(token), None)
        .await
}

async fn subscribe(t: &TestApp) -> Streaming<PushMessage> {
    crate::helpers::subscribe(t, "test-gateway").await
}

/// The next session invalidation: (user, device session, reason).
async fn invalidation(stream: &mut Streaming<PushMessage>) -> (String, Option<String>, String) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an invalidation within 10 s")
            .expect("the stream stays open")
            .expect("a message");
        if let Some(Msg::Events(events)) = message.kind {
            for event in events.events {
                if let Some(EventKind::SessionInvalidation(i)) = event.kind {
                    return (i.user_id, i.device_session_id, i.reason);
                }
            }
        }
    }
}

async fn email_sign_in_with_the_mailed_code(backend: DbKind) {
    let t = spawn_app(backend).await;
    let first = t.sign_in("Ann@Example.org").await;
    assert_eq!(first["created"], true);
    assert_eq!(first["account"]["email"], "ann@example.org");
    assert_eq!(first["account"]["display_name"], "ann");
    assert_eq!(first["account"]["is_guest"], false);
    assert_eq!(first["account"]["role"], "player");
    assert_eq!(first["session"]["device_name"], "test");
    let (status, body) = me(&t, &token(&first)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], first["account"]["id"]);

    // The mail itself: to the address as typed, with the code in both
    // bodies and a Message-ID.
    let mail = std::fs::read_dir(t.mail_dir())
        .expect("mail folder")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).expect("readable"))
        .find(|m| m.contains("To: Ann@example.org"))
        .expect("the code mail");
    assert!(
        mail.contains("Subject: Your Turnbase sign-in code: "),
        "{mail}"
    );
    assert!(mail.contains("Message-ID: <"), "{mail}");
    assert!(mail.contains("text/html"), "{mail}");

    let again = t.sign_in("ann@example.org").await;
    assert_eq!(again["created"], false);
    assert_eq!(
        again["account"]["id"], first["account"]["id"],
        "the same account"
    );
    assert_ne!(token(&again), token(&first), "a session per device");

    // A code is good once.
    let seen = t.mails_to("bo@example.org");
    t.send(
        Method::POST,
        START,
        None,
        Some(json!({"email": "bo@example.org"})),
    )
    .await;
    let code = t.code_for("bo@example.org", seen).await;
    let verify = |email: &str, code: &str| {
        t.send(
            Method::POST,
            VERIFY,
            None,
            Some(json!({"email": email, "code": code})),
        )
    };
    let (status, body) = verify("ann@example.org", &code).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a code for another address: {body}"
    );
    assert_eq!(body["error"]["code"], "invalid_code");
    let (status, body) = verify("bo@example.org", &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["session"]["device_name"], "Unknown device");
    let (status, body) = verify("bo@example.org", &code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "used up: {body}");
    assert_eq!(body["error"]["code"], "invalid_code");
    t.app.shutdown().await;
}

async fn start_does_not_reveal_whether_an_account_exists(backend: DbKind) {
    let t = spawn_app(backend).await;
    t.sign_in("known@example.org").await;
    let known = t
        .send(
            Method::POST,
            START,
            None,
            Some(json!({"email": "known@example.org"})),
        )
        .await;
    let unknown = t
        .send(
            Method::POST,
            START,
            None,
            Some(json!({"email": "nobody@example.org"})),
        )
        .await;
    assert_eq!(known, unknown);
    assert_eq!(known.0, StatusCode::ACCEPTED);
    // A wrong code reads the same for both, too.
    let wrong = |email: &str| {
        t.send(
            Method::POST,
            VERIFY,
            None,
            Some(json!({"email": email, "code": "000000"})),
        )
    };
    let (a, b) = (
        wrong("known@example.org").await,
        wrong("never@example.org").await,
    );
    assert_eq!(a, b);
    assert_eq!(a.0, StatusCode::BAD_REQUEST);
    t.app.shutdown().await;
}

async fn guest_upgrade_keeps_the_account(backend: DbKind) {
    let t = spawn_app(backend).await;
    let (guest, body) = t.guest("Wanderer").await;
    let id = body["account"]["id"].clone();
    assert_eq!(body["account"]["is_guest"], true);
    assert_eq!(body["account"]["email"], Value::Null);
    let (status, renamed) = t
        .send(
            Method::PATCH,
            "/api/v1/user/me",
            Some(&guest),
            Some(json!({"display_name": "  Admiral Ærø "})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["display_name"], "Admiral Ærø");
    assert_eq!(
        me(&t, &guest).await.1["display_name"],
        "Admiral Ærø",
        "the cache follows"
    );

    // An address that belongs to someone else cannot be taken.
    t.sign_in("taken@example.org").await;
    let (t_ref, guest_ref) = (&t, &guest);
    let upgrade = move |email: &'static str| async move {
        let (t, guest) = (t_ref, guest_ref);
        let seen = t.mails_to(email);
        t.send(Method::POST, START, None, Some(json!({ "email": email })))
            .await;
        let code = t.code_for(email, seen).await;
        t.send(
            Method::POST,
            "/api/v1/user/me/upgrade",
            Some(guest.as_str()),
            Some(json!({ "email": email, "code": code })),
        )
        .await
    };
    let (status, body) = upgrade("taken@example.org").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, up) = upgrade("wanderer@example.org").await;
    assert_eq!(status, StatusCode::OK, "{up}");
    assert_eq!(up["id"], id, "the account id is kept");
    assert_eq!(up["is_guest"], false);
    assert_eq!(up["email"], "wanderer@example.org");
    assert_eq!(
        me(&t, &guest).await.1["is_guest"],
        false,
        "the session lives on"
    );
    let signed_in = t.sign_in("wanderer@example.org").await;
    assert_eq!(signed_in["account"]["id"], id);
    assert_eq!(signed_in["created"], false);

    let (status, body) = upgrade("again@example.org").await;
    assert_eq!(status, StatusCode::CONFLICT, "no longer a guest: {body}");
    t.app.shutdown().await;
}

async fn sessions_are_listed_and_revoked_at_once(backend: DbKind) {
    let t = spawn_app(backend).await;
    let mut push = subscribe(&t).await;
    let a = t.sign_in("cy@example.org").await;
    let b = t.sign_in("cy@example.org").await;
    let c = t.sign_in("cy@example.org").await;
    let (other, _) = t.guest("Other").await;
    let user = a["account"]["id"].as_str().expect("id").to_string();
    let (ta, tb, tc) = (token(&a), token(&b), token(&c));

    let (status, list) = t
        .send(Method::GET, "/api/v1/user/sessions", Some(&ta), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{list}");
    let current: Vec<&Value> = items.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], a["session"]["id"]);

    // Another user cannot revoke it, and learns nothing.
    let b_id = b["session"]["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/user/sessions/{b_id}");
    let (status, body) = t.send(Method::DELETE, &path, Some(&other), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(me(&t, &tb).await.0, StatusCode::OK);

    let (status, _) = t.send(Method::DELETE, &path, Some(&ta), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = me(&t, &tb).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once: {body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        invalidation(&mut push).await,
        (user.clone(), Some(b_id), "revoked".into())
    );

    let (status, body) = t
        .send(
            Method::POST,
            "/api/v1/user/sessions/revoke-others",
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["revoked"], 1);
    assert_eq!(me(&t, &tc).await.0, StatusCode::UNAUTHORIZED);
    let c_id = c["session"]["id"].as_str().map(String::from);
    assert_eq!(
        invalidation(&mut push).await,
        (user.clone(), c_id, "revoked".into())
    );
    assert_eq!(
        me(&t, &ta).await.0,
        StatusCode::OK,
        "the caller's own session stays"
    );

    let (status, _) = t
        .send(Method::POST, "/api/v1/user/logout", Some(&ta), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me(&t, &ta).await.0, StatusCode::UNAUTHORIZED);
    let a_id = a["session"]["id"].as_str().map(String::from);
    assert_eq!(invalidation(&mut push).await, (user, a_id, "logout".into()));
    assert_eq!(
        me(&t, &other).await.0,
        StatusCode::OK,
        "other users are untouched"
    );
    t.app.shutdown().await;
}

async fn admin_blocks_and_unblocks(backend: DbKind) {
    let t = spawn_app(backend).await;
    let admin = t.become_admin().await;
    let mut push = subscribe(&t).await;
    let one = t.sign_in("dee@example.org").await;
    let two = t.sign_in("dee@example.org").await;
    let id = one["account"]["id"].as_str().expect("id").to_string();
    t.guest("Someone").await;

    let (status, page) = t.get_json("/api/v1/admin/accounts?q=DEE").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (_, guests) = t.get_json("/api/v1/admin/accounts?kind=guest").await;
    assert_eq!(
        guests["items"].as_array().map(Vec::len),
        Some(1),
        "{guests}"
    );
    let (_, admins) = t.get_json("/api/v1/admin/accounts?role=admin").await;
    assert_eq!(admins["items"][0]["email"], ADMIN_EMAIL);
    let (_, first) = t.get_json("/api/v1/admin/accounts?limit=2").await;
    let next = first["next"].as_str().expect("a next page").to_string();
    let (_, rest) = t
        .get_json(&format!("/api/v1/admin/accounts?limit=2&before={next}"))
        .await;
    assert_eq!(
        rest["items"].as_array().map(Vec::len),
        Some(1),
        "3 accounts in all"
    );
    let (status, shown) = t.get_json(&format!("/api/v1/admin/accounts/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["sessions"].as_array().map(Vec::len), Some(2));

    let block = format!("/api/v1/admin/accounts/{id}/block");
    let (status, blocked) = t
        .send(
            Method::POST,
            &block,
            Some(&admin),
            Some(json!({"reason": "cheating"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{blocked}");
    assert_eq!(blocked["blocked_reason"], "cheating");
    for session in [&one, &two] {
        assert_eq!(me(&t, &token(session)).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        invalidation(&mut push).await,
        (id.clone(), None, "blocked".into())
    );
    // Signing in again is refused, after the code (nothing to probe).
    let seen = t.mails_to("dee@example.org");
    t.send(
        Method::POST,
        START,
        None,
        Some(json!({"email": "dee@example.org"})),
    )
    .await;
    let code = t.code_for("dee@example.org", seen).await;
    let (status, body) = t
        .send(
            Method::POST,
            VERIFY,
            None,
            Some(json!({"email": "dee@example.org", "code": code})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "account_blocked");

    let admin_id = t.get_json("/api/v1/user/me").await.1["id"].clone();
    let self_block = format!(
        "/api/v1/admin/accounts/{}/block",
        admin_id.as_str().expect("id")
    );
    let (status, _) = t
        .send(
            Method::POST,
            &self_block,
            Some(&admin),
            Some(json!({"reason": "oops"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/accounts/{}/block", uuid::Uuid::now_v7()),
            Some(&admin),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/accounts/{id}/unblock"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let back = t.sign_in("dee@example.org").await;
    assert_eq!(back["account"]["id"], id.as_str());

    let (_, audit) = t.get_json("/api/v1/admin/audit").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["account.unblock", "account.block"], "{audit}");
    assert_eq!(audit["items"][1]["actor_email"], ADMIN_EMAIL);
    assert_eq!(audit["items"][1]["detail"]["reason"], "cheating");
    assert_eq!(audit["items"][1]["target"], id.as_str());
    t.app.shutdown().await;
}

#[tokio::test]
async fn every_admin_route_needs_an_admin() {
    let t = spawn_app(DbKind::Sqlite).await;
    let (player, _) = t.guest("Player").await;
    let (_, doc) = t.get_json("/api/v1/openapi.json").await;
    let paths = doc["paths"].as_object().expect("paths");
    let mut walked = 0;
    for (path, item) in paths {
        if !path.starts_with("/api/v1/admin/") && path != "/api/v1/admin" {
            continue;
        }
        let concrete = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    uuid::Uuid::now_v7().to_string()
                } else {
                    seg.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().expect("operations").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let body = Some(json!({}));
            let (status, reply) = t
                .send(method.clone(), &concrete, Some(&player), body.clone())
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {reply}");
            assert_eq!(reply["error"]["code"], "forbidden");
            let (status, reply) = t.send(method.clone(), &concrete, None, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {reply}");
            let (status, _) = t
                .send(method.clone(), &concrete, Some("tbs_garbage"), body)
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            walked += 1;
        }
    }
    assert!(
        walked >= 9,
        "the table has the mail, account, audit and geo routes: {walked}"
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn the_internal_api_needs_the_shared_secret() {
    let t = spawn_app(DbKind::Sqlite).await;
    let (player, body) = t.guest("Player").await;
    let resolve = |secret: Option<&'static str>, token: String| {
        t.send(
            Method::POST,
            "/api/v1/internal/sessions/resolve",
            secret,
            Some(json!({ "token": token })),
        )
    };
    assert_eq!(
        resolve(None, player.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        resolve(Some("internal-secret-for-tests-0123456788"), player.clone())
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        resolve(Some("short"), player.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, resolved) = resolve(Some(INTERNAL_TOKEN), player.clone()).await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["account_id"], body["account"]["id"]);
    assert_eq!(resolved["session_id"], body["session"]["id"]);
    assert_eq!(resolved["display_name"], "Player");
    assert_eq!(resolved["is_guest"], true);
    let (status, _) = resolve(Some(INTERNAL_TOKEN), "tbs_nope".into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A player's token does not open the internal API.
    let (status, _) = t
        .send(
            Method::POST,
            "/api/v1/internal/sessions/resolve",
            Some(&player),
            Some(json!({ "token": player })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    t.app.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_4xx_json_and_never_500() {
    let t = spawn_app_with(DbKind::Sqlite, &[("BACKEND_HTTP_BODY_LIMIT", "4KiB")]).await;
    let (player, _) = t.guest("Player").await;
    let big = "x".repeat(8 * 1024);
    type Case<'a> = (Method, &'a str, Option<&'a str>, Option<Value>, StatusCode);
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            START,
            None,
            Some(json!({"email": "not-an-address"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            START,
            None,
            Some(json!({"email": ""})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            START,
            None,
            Some(json!({"mail": "a@example.org"})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            START,
            None,
            Some(json!("a@example.org")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            START,
            None,
            Some(json!({"email": big})),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            VERIFY,
            None,
            Some(json!({"email": "a@example.org", "code": "12ab56"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            VERIFY,
            None,
            Some(
                json!({"email": "a@example.org", "code": "123456", "device_name": "x".repeat(65)}),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            GUEST,
            None,
            Some(json!({"display_name": "x".repeat(33)})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            GUEST,
            None,
            Some(json!({"display_name": "bell\u{7}"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            GUEST,
            None,
            Some(json!({"display_name": "   "})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            GUEST,
            None,
            Some(json!({"display_name": 42})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/api/v1/user/me",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/user/me",
            Some("garbage"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/user/me",
            Some("tbs_0000000000000000000000000000000000000000000000000000000000000000"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::PATCH,
            "/api/v1/user/me",
            Some(&player),
            Some(json!({"display_name": "a\nb"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            "/api/v1/user/sessions/not-a-uuid",
            Some(&player),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/user/me/upgrade",
            Some(&player),
            Some(json!({"email": "bad", "code": "123456"})),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, token, body, want) in cases {
        let (status, reply) = t.send(method.clone(), path, token, body.clone()).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {reply}");
        assert!(
            reply["error"]["code"].is_string(),
            "{method} {path}: {reply}"
        );
        assert!(
            reply["error"]["message"].is_string(),
            "{method} {path}: {reply}"
        );
    }
    // A header that is not Bearer.
    let response = t
        .client
        .get(t.url("/api/v1/user/me"))
        .basic_auth("user", Some("pw"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    t.app.shutdown().await;
}

#[tokio::test]
async fn wrong_codes_void_the_code_and_requests_are_rate_limited() {
    let t = spawn_app_with(
        DbKind::Sqlite,
        &[
            ("BACKEND_LOGIN_CODE_TRIES", "3"),
            ("BACKEND_LOGIN_EMAIL_RATE", "2/1h"),
            ("BACKEND_LOGIN_IP_RATE", "12/1h"),
        ],
    )
    .await;
    let email = "eve@example.org";
    t.send(Method::POST, START, None, Some(json!({ "email": email })))
        .await;
    let code = t.code_for(email, 0).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..3 {
        let (status, body) = t
            .send(
                Method::POST,
                VERIFY,
                None,
                Some(json!({"email": email, "code": wrong})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, body) = t
        .send(
            Method::POST,
            VERIFY,
            None,
            Some(json!({"email": email, "code": code})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the right code after 3 wrong ones: {body}"
    );
    assert_eq!(body["error"]["code"], "invalid_code");

    // Per address: the second code request passes, the third waits.
    let (status, _) = t
        .send(Method::POST, START, None, Some(json!({ "email": email })))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let response = t
        .client
        .post(t.url(START))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=1800).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another address is not held back by this one's limit...
    let (status, _) = t
        .send(
            Method::POST,
            START,
            None,
            Some(json!({"email": "fay@example.org"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // ...but the client address has spent its 12 requests by now.
    let mut limited = false;
    for _ in 0..12 {
        let (status, _) = t
            .send(
                Method::POST,
                GUEST,
                None,
                Some(json!({"display_name": "G"})),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(status, StatusCode::CREATED);
    }
    assert!(limited, "the per-address limit holds");
    t.app.shutdown().await;
}

#[tokio::test]
async fn countries_from_trusted_proxies_and_counts_flushed_at_shutdown() {
    let geo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/geo/GeoLite2-Country-Test.mmdb"
    );
    let t = spawn_app_with(
        DbKind::Sqlite,
        &[
            ("BACKEND_GEOIP_DB", geo),
            ("BACKEND_TRUSTED_PROXIES", "127.0.0.1"),
            // Only the shutdown flush can write the counts.
            ("BACKEND_ACCOUNTS_FLUSH_INTERVAL", "1h"),
        ],
    )
    .await;
    let t_ref = &t;
    let guest_from = move |forwarded: Option<&'static str>| async move {
        let t = t_ref;
        let mut request = t
            .client
            .post(t.url(GUEST))
            .json(&json!({"display_name": "Traveller"}));
        if let Some(ip) = forwarded {
            request = request.header("x-forwarded-for", ip);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["session"]["country"].clone()
    };
    assert_eq!(guest_from(Some("81.2.69.160")).await, "GB");
    assert_eq!(guest_from(Some("6.6.6.6, 2.125.160.216")).await, "GB");
    assert_eq!(guest_from(Some("89.160.20.112")).await, "SE");
    assert_eq!(
        guest_from(Some("10.0.0.1")).await,
        Value::Null,
        "unknown, not an error"
    );
    assert_eq!(guest_from(None).await, Value::Null, "loopback is unknown");

    let db = t.app.database.clone();
    let data_dir = t.app_data_dir();
    let report = t.app.shutdown().await;
    assert!(report.is_clean(), "{report:?}");
    let reopened = turnbase_store::Database::connect(&turnbase_store::DatabaseOptions::Sqlite {
        path: std::path::Path::new(&data_dir).join("turnbase.db"),
        busy_timeout: Duration::from_secs(5),
        max_connections: 1,
    })
    .await
    .expect("reopen");
    drop(db);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let mut counts: Vec<(String, i64)> = reopened
        .accounts()
        .login_counts(&today, &today)
        .await
        .expect("counts")
        .into_iter()
        .map(|c| (c.country, c.logins))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![("GB".into(), 2), ("SE".into(), 1), ("ZZ".into(), 2)],
        "every sign-in counted, flushed at shutdown"
    );
}

#[tokio::test]
async fn login_counts_are_served_to_admins() {
    let t = spawn_app_with(
        DbKind::Sqlite,
        &[("BACKEND_ACCOUNTS_FLUSH_INTERVAL", "50ms")],
    )
    .await;
    t.become_admin().await;
    t.guest("One").await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = t.get_json("/api/v1/admin/geo/logins").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["items"] == json!([{"day": today, "country": "ZZ", "logins": 2}]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not flushed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for bad in [
        "/api/v1/admin/geo/logins?from=2026-13-01",
        "/api/v1/admin/geo/logins?from=2026-11-25&to=2026-11-01",
        "/api/v1/admin/geo/logins?from=2000-01-01&to=2026-01-01",
    ] {
        let (status, body) = t.get_json(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (_, ready) = t.get_json("/readyz").await;
    assert_eq!(
        ready["status"], "ready",
        "the session cache reports ready: {ready}"
    );
    t.app.shutdown().await;
}

/// The stored code hash of an address, read with SQL.
async fn stored_code_hash(t: &TestApp, email: &str) -> Vec<u8> {
    let sql = "SELECT code_hash FROM login_codes WHERE email = $1";
    turnbase_testkit::on_pool!(&t.app.database, |pool| sqlx::query_scalar(sql)
        .bind(email)
        .fetch_one(pool)
        .await)
    .expect("a stored code")
}

/// Codes are stored as HMAC-SHA-256 under the installation's key, not as a
/// plain hash that a leaked table would give up in a million guesses; a
/// row written the old way before an upgrade still verifies.
async fn codes_are_stored_keyed_and_old_rows_still_verify(backend: DbKind) {
    use turnbase_accounts::{CodeKey, LoginCode};
    let t = spawn_app(backend).await;
    let seen = t.mails_to("cy@example.org");
    let (status, _) = t
        .send(
            Method::POST,
            START,
            None,
            Some(json!({"email": "cy@example.org"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let code = t.code_for("cy@example.org", seen).await;
    let parsed = LoginCode::parse(&code).expect("six digits");
    let stored = stored_code_hash(&t, "cy@example.org").await;
    assert_ne!(
        stored,
        parsed.legacy_hash("cy@example.org"),
        "not sha256(address, code)"
    );
    assert_eq!(
        stored,
        parsed.hash(&CodeKey::derive(INTERNAL_TOKEN), "cy@example.org"),
        "HMAC-SHA-256 under the key derived from the installation's secret"
    );
    let (status, body) = t
        .send(
            Method::POST,
            VERIFY,
            None,
            Some(json!({"email": "cy@example.org", "code": code})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A code stored by an earlier version, within its lifetime.
    let old = LoginCode::parse("424242").expect("six digits");
    let now = chrono::Utc::now();
    let mut tx = t.app.database.begin().await.expect("begin");
    t.app
        .database
        .accounts()
        .put_login_code(
            &mut tx,
            &turnbase_store::accounts::NewLoginCode {
                email: "dee@example.org".into(),
                code_hash: old.legacy_hash("dee@example.org").to_vec(),
                tries: 3,
                created_at: now,
                expires_at: now + chrono::Duration::minutes(10),
            },
        )
        .await
        .expect("an old-style code");
    tx.commit().await.expect("commit");
    let (status, body) = t
        .send(
            Method::POST,
            VERIFY,
            None,
            Some(json!({"email": "dee@example.org", "code": "424242"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    t.app.shutdown().await;
}

turnbase_testkit::both_backends!(
    codes_are_stored_keyed_and_old_rows_still_verify,
    email_sign_in_with_the_mailed_code,
    start_does_not_reveal_whether_an_account_exists,
    guest_upgrade_keeps_the_account,
    sessions_are_listed_and_revoked_at_once,
    admin_blocks_and_unblocks,
);
