//! Notifications end to end, on both backends: a real backend, a real SMTP
//! server (aiosmtpd), the real push stream and a real HTTP webhook
//! receiver on loopback. Quiet hours and digests run a notification worker
//! on an injected clock against the real database.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use turnbase_notify::keys::{DELIVERY_HEADER, KIND_HEADER, SIGNATURE_HEADER};
use turnbase_notify::{NotifyConfig, NotifyService};
use turnbase_store::notify::{Audience, Kind, NewNotice};
use turnbase_testkit::{DbKind, SmtpSink, TestDb};
use uuid::Uuid;

use crate::helpers::{ADMIN_EMAIL, TestApp, drain_push, spawn_app_with};

const PATIENCE: Duration = Duration::from_secs(30);

async fn until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::helpers::until(what, PATIENCE, probe).await
}

// ---- a webhook receiver ------------------------------------------------------

#[derive(Clone, Debug)]
struct Received {
    signature: String,
    delivery: String,
    kind: String,
    body: bytes::Bytes,
}

/// An HTTP server on loopback that records every request and answers
/// with the status set, after the delay set (a tarpit when long).
#[derive(Clone)]
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Receiver {
    async fn start() -> Receiver {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (s, st, d) = (seen.clone(), status.clone(), delay_ms.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
                let (s, st, d) = (s.clone(), st.clone(), d.clone());
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    s.lock().expect("not poisoned").push(Received {
                        signature: header(SIGNATURE_HEADER),
                        delivery: header(DELIVERY_HEADER),
                        kind: header(KIND_HEADER),
                        body,
                    });
                    let wait = d.load(Ordering::SeqCst);
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    http::StatusCode::from_u16(st.load(Ordering::SeqCst))
                        .unwrap_or(http::StatusCode::OK)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            seen,
            status,
            delay_ms,
        }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

// ---- helpers -----------------------------------------------------------------

/// An app that sends mail to `sink` and lets webhooks reach loopback.
async fn app(backend: DbKind, sink: &SmtpSink, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("BACKEND_SMTP_URL", sink.url()),
        ("BACKEND_MAIL_DELIVERY", "smtp".to_string()),
        ("BACKEND_WEBHOOK_ALLOW_PRIVATE", "true".to_string()),
        ("BACKEND_NOTIFICATION_POLL_INTERVAL", "100ms".to_string()),
        ("BACKEND_MAIL_POLL_INTERVAL", "100ms".to_string()),
        ("BACKEND_LOBBY_MIN_TURN_STEP", "1s".to_string()),
        ("BACKEND_RUNTIME_PLACEMENT", "shared".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_with(backend, &pairs).await
}

/// A mail's text with quoted-printable soft breaks and `=3D` undone.
fn unfold(raw: &str) -> String {
    raw.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

fn mails_to(sink: &SmtpSink, email: &str) -> Vec<String> {
    let to = format!("To: {email}");
    sink.messages()
        .into_iter()
        .filter(|m| m.lines().any(|l| l.eq_ignore_ascii_case(&to)))
        .map(|m| unfold(&m))
        .collect()
}

/// Signs in by the code the SMTP server received; the session token.
async fn sign_in(t: &TestApp, sink: &SmtpSink, email: &str) -> String {
    let old = mails_to(sink, email);
    let (status, body) = t
        .send(
            Method::POST,
            "/api/v1/public/auth/email/start",
            None,
            Some(json!({ "email": email })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let code = until("the sign-in code arrives", || async {
        mails_to(sink, email)
            .into_iter()
            .filter(|m| !old.contains(m))
            .find_map(|m| {
                m.find("sign-in code: ")
                    .map(|at| m[at + 14..at + 20].to_string())
            })
    })
    .await;
    let (status, body) = t
        .send(
            Method::POST,
            "/api/v1/public/auth/email/verify",
            None,
            Some(json!({ "email": email, "code": code, "device_name": "test" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().expect("token").to_string()
}

async fn me(t: &TestApp, token: &str) -> String {
    let (_, me) = t
        .send(Method::GET, "/api/v1/user/me", Some(token), None)
        .await;
    me["id"].as_str().expect("id").to_string()
}

async fn put_prefs(t: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    t.send(
        Method::PUT,
        "/api/v1/user/notification-preferences",
        Some(token),
        Some(body),
    )
    .await
}

async fn inbox(t: &TestApp, token: &str, query: &str) -> Value {
    let (status, body) = t
        .send(
            Method::GET,
            &format!("/api/v1/user/notifications{query}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn game_body(title: &str) -> Value {
    json!({
        "title": title, "engine": "conquest", "max_players": 4,
        // Every home planet has targets in range: both players always
        // have something to order, so both are awaited each turn.
        "settings": { "planets": 12, "turn_limit": 5, "range": 100 },
        "enrol_deadline": (Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        "schedule": { "kind": "interval", "every": "1h" },
    })
}

// ---- the tests -----------------------------------------------------------------

/// Each kind reaches its people on the channels they chose: push and the
/// inbox always, email by default for what matters (not for guests),
/// webhooks signed; game titles are escaped in mail; the unsubscribe link
/// works once and not when altered.
async fn events_reach_their_people_by_preference(backend: DbKind) {
    let sink = SmtpSink::start();
    let t = app(backend, &sink, &[]).await;
    let hook = Receiver::start().await;
    let mut push = crate::helpers::subscribe(&t, "notify-test").await;
    let owner = sign_in(&t, &sink, "owner@example.org").await;
    let owner_id = me(&t, &owner).await;
    let (guest, _) = t.guest("Gus").await;
    let guest_id = me(&t, &guest).await;

    // The owner wants applications by push and webhook, not by email.
    let (status, prefs) = put_prefs(
        &t,
        &owner,
        json!({
            "channels": { "application_received": ["push", "webhook"] },
            "webhook_url": hook.url,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{prefs}");
    let secret = prefs["webhook"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert_eq!(
        prefs["channels"]["application_received"],
        json!(["push", "webhook"])
    );
    assert_eq!(prefs["channels"]["your_move"], json!(["push", "email"]));

    let (status, game) = t
        .send(
            Method::POST,
            "/api/v1/user/games",
            Some(&owner),
            Some(game_body("<b>Orion</b> & Co")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{game}");
    let id = game["id"].as_str().expect("id").to_string();
    let (status, application) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/applications"),
            Some(&guest),
            Some(json!({ "race_name": "Gus Folk" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{application}");

    // The webhook: signed over its body and time, the route's id as the
    // delivery id; a changed body fails the check.
    let got = until("the webhook is called", || async {
        hook.seen().into_iter().next()
    })
    .await;
    assert_eq!(got.kind, "application_received");
    let now = Utc::now().timestamp();
    turnbase_notify::keys::verify(&secret, &got.signature, &got.body, now)
        .expect("the signature verifies");
    let mut tampered = got.body.to_vec();
    tampered[2] ^= 1;
    assert_eq!(
        turnbase_notify::keys::verify(&secret, &got.signature, &tampered, now),
        Err(turnbase_notify::keys::SignatureError::Mismatch)
    );
    let body: Value = serde_json::from_slice(&got.body).expect("JSON");
    assert_eq!(body["id"], got.delivery.as_str());
    assert_eq!(body["payload"]["race_name"], "Gus Folk");
    assert_eq!(body["title"], "<b>Orion</b> & Co");

    // Approve: the guest is told by push and in the inbox, never by mail.
    let (status, _) = t
        .send(
            Method::POST,
            &format!(
                "/api/v1/user/games/{id}/applications/{}/approve",
                application["id"].as_str().expect("id")
            ),
            Some(&owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let guest_inbox = until("the guest's approval is in the inbox", || async {
        let b = inbox(&t, &guest, "").await;
        (b["notifications"].as_array().is_some_and(|n| !n.is_empty())).then_some(b)
    })
    .await;
    assert_eq!(
        guest_inbox["notifications"][0]["kind"],
        "application_approved"
    );
    assert_eq!(
        guest_inbox["notifications"][0]["title"],
        "<b>Orion</b> & Co"
    );
    assert_eq!(guest_inbox["unread"], 1);

    // A guest cannot choose email; other bad preferences are named.
    let (status, err) = put_prefs(
        &t,
        &guest,
        json!({ "channels": { "your_move": ["email"] } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["path"], "/channels/your_move");

    // The game starts: everyone is told; the owner (email account) also by
    // mail, with the title escaped in the HTML part.
    let (status, _) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/bots"),
            Some(&owner),
            Some(json!({ "name": "Botty" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/start"),
            Some(&owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let started = until("the owner's game-started mail", || async {
        mails_to(&sink, "owner@example.org")
            .into_iter()
            .find(|m| m.contains("has started"))
    })
    .await;
    assert!(
        started.contains("&lt;b&gt;Orion&lt;/b&gt; &amp; Co"),
        "{started}"
    );
    assert!(!started.contains("<b>Orion</b> & Co has started. Good luck!</p>"));
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        drain_push(&mut push, &mut seen, Duration::from_millis(100)).await;
        let told: Vec<&String> = seen
            .iter()
            .filter(|(_, k, _)| k == "lobby.game_started")
            .map(|(u, _, _)| u)
            .collect();
        if told.contains(&&owner_id) && told.contains(&&guest_id) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the start never reached both: {seen:?}"
        );
    }
    let received: Vec<&Value> = seen
        .iter()
        .filter(|(u, k, _)| *u == owner_id && k == "lobby.application_received")
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(received.len(), 1, "{seen:?}");
    assert!(received[0]["notification_id"].is_string());
    // No mail for the application (the owner turned that off).
    assert!(
        !mails_to(&sink, "owner@example.org")
            .iter()
            .any(|m| m.contains("applied")),
        "an application mail went out"
    );

    // The unsubscribe link of the started mail: once, signed.
    let at = started
        .find("/api/v1/public/notifications/unsubscribe?token=")
        .expect("an unsubscribe link");
    let link: String = started[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<')
        .collect();
    let token = link.split("token=").nth(1).expect("token").to_string();
    let mut altered = token.clone().into_bytes();
    altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ASCII");
    let (status, err) = t
        .send(
            Method::GET,
            &format!("/api/v1/public/notifications/unsubscribe?token={altered}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "invalid_link");
    let (status, done) = t.send(Method::GET, &link, None, None).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["kind"], "game_started");
    let (status, err) = t.send(Method::GET, &link, None, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "link_used");
    let (_, prefs) = t
        .send(
            Method::GET,
            "/api/v1/user/notification-preferences",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(prefs["channels"]["game_started"], json!(["push"]));
    // The preferences kept the owner's other choices and webhook.
    assert_eq!(prefs["webhook"]["url"], hook.url.as_str());

    // A sign-in from a new device is told (mail and push by default); one
    // from a device it knows is not.
    let old = mails_to(&sink, "owner@example.org");
    let (status, _) = t
        .send(
            Method::POST,
            "/api/v1/public/auth/email/start",
            None,
            Some(json!({ "email": "owner@example.org" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let code = until("a second code", || async {
        mails_to(&sink, "owner@example.org")
            .into_iter()
            .filter(|m| !old.contains(m))
            .find_map(|m| {
                m.find("sign-in code: ")
                    .map(|at| m[at + 14..at + 20].to_string())
            })
    })
    .await;
    let (status, body) = t
        .send(
            Method::POST,
            "/api/v1/public/auth/email/verify",
            None,
            Some(json!({ "email": "owner@example.org", "code": code, "device_name": "Ship's laptop" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let told = until("the new-device mail", || async {
        mails_to(&sink, "owner@example.org")
            .into_iter()
            .find(|m| m.contains("New sign-in on"))
    })
    .await;
    assert!(told.contains("Ship's laptop"), "{told}");
    let kinds: Vec<String> = inbox(&t, &owner, "?limit=200").await["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["kind"].as_str().map(String::from))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "new_device").count(),
        1,
        "{kinds:?}"
    );
    t.app.shutdown().await;
}

/// A webhook receiver that fails (5xx, then a tarpit) uses up exactly its
/// attempts and becomes a dead letter, left alone afterwards, while other
/// routes keep flowing; admins list it with its attempts and requeue it.
async fn failing_webhooks_end_in_dead_letters_and_requeue(backend: DbKind) {
    let sink = SmtpSink::start();
    let operator = Receiver::start().await;
    let t = app(
        backend,
        &sink,
        &[
            (
                "BACKEND_NOTIFICATION_OPERATOR_WEBHOOK",
                operator.url.as_str(),
            ),
            ("BACKEND_NOTIFICATION_MAX_ATTEMPTS", "3"),
            ("BACKEND_NOTIFICATION_RETRY_BASE", "50ms"),
            ("BACKEND_NOTIFICATION_RETRY_MAX", "100ms"),
            ("BACKEND_NOTIFICATION_WEBHOOK_TIMEOUT", "300ms"),
        ],
    )
    .await;
    let admin = sign_in(&t, &sink, ADMIN_EMAIL).await;
    let hook = Receiver::start().await;
    hook.status.store(503, Ordering::SeqCst);
    let (user, _) = t.guest("Hooked").await;
    let user_id = me(&t, &user).await;
    let (status, body) = put_prefs(
        &t,
        &user,
        json!({ "channels": { "admin_notice": ["push", "webhook"] }, "webhook_url": hook.url }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut push = crate::helpers::subscribe(&t, "dead-test").await;

    let (status, sent) = t
        .send(
            Method::POST,
            "/api/v1/admin/notifications/notices",
            Some(&admin),
            Some(json!({ "account_id": user_id, "subject": "Maintenance", "message": "Tonight at 22:00." })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["recipients"], 1);
    // The operators' webhook gets the notice once, signed with its secret.
    let (status, hook_of_ops) = t
        .send(
            Method::GET,
            "/api/v1/admin/notifications/operator-webhook",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{hook_of_ops}");
    let copy = until("the operators' copy", || async {
        operator.seen().into_iter().next()
    })
    .await;
    let ops_secret = hook_of_ops["secret"].as_str().expect("secret");
    turnbase_notify::keys::verify(
        ops_secret,
        &copy.signature,
        &copy.body,
        Utc::now().timestamp(),
    )
    .expect("the operators' copy is signed");
    let copy: Value = serde_json::from_slice(&copy.body).expect("JSON");
    assert_eq!(copy["payload"]["subject"], "Maintenance");
    assert_eq!(copy["payload"]["recipients"], 1);
    // The third attempt times out in the receiver's tarpit.
    until("two refused attempts", || async {
        (hook.seen().len() >= 2).then_some(())
    })
    .await;
    hook.delay_ms.store(2_000, Ordering::SeqCst);
    let dead = until("the route is a dead letter", || async {
        let (_, list) = t
            .send(
                Method::GET,
                &format!("/api/v1/admin/notifications/dead-letters?account_id={user_id}"),
                Some(&admin),
                None,
            )
            .await;
        list["routes"].as_array().and_then(|r| r.first().cloned())
    })
    .await;
    assert_eq!(dead["channel"], "webhook");
    assert_eq!(dead["attempts"], 3);
    // The push route was not held up by the failing webhook.
    let mut seen = Vec::new();
    drain_push(&mut push, &mut seen, Duration::from_millis(300)).await;
    assert!(
        seen.iter()
            .any(|(u, k, p)| *u == user_id && k == "admin.notice" && p["subject"] == "Maintenance"),
        "{seen:?}"
    );
    // Left alone: no fourth attempt.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.seen().len(), 3, "attempts: {:?}", hook.seen().len());
    let deliveries: std::collections::HashSet<String> =
        hook.seen().iter().map(|r| r.delivery.clone()).collect();
    assert_eq!(deliveries.len(), 1, "one stable delivery id");
    let route = dead["id"].as_str().expect("id");
    let (status, shown) = t
        .send(
            Method::GET,
            &format!("/api/v1/admin/notifications/dead-letters/{route}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let attempts = shown["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status_code"], 503);
    assert_eq!(attempts[2]["outcome"], "failed");
    assert!(
        attempts[2]["error"]
            .as_str()
            .unwrap_or("")
            .contains("no answer"),
        "{}",
        attempts[2]
    );

    // Requeued, it goes through once the receiver is well again.
    hook.delay_ms.store(0, Ordering::SeqCst);
    hook.status.store(200, Ordering::SeqCst);
    let (status, requeued) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/notifications/dead-letters/{route}/requeue"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{requeued}");
    assert_eq!(requeued["requeued"], json!([route]));
    until("the requeued route is delivered", || async {
        let (_, shown) = t
            .send(
                Method::GET,
                &format!("/api/v1/admin/notifications/dead-letters/{route}"),
                Some(&admin),
                None,
            )
            .await;
        (shown["route"]["status"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(hook.seen().len(), 4);
    let (status, err) = t
        .send(
            Method::POST,
            &format!("/api/v1/admin/notifications/dead-letters/{route}/requeue"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    // Bad admin input is named.
    let (status, err) = t
        .send(
            Method::GET,
            "/api/v1/admin/notifications/dead-letters?channel=pigeon",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, _) = t
        .send(
            Method::POST,
            "/api/v1/admin/notifications/notices",
            Some(&admin),
            Some(json!({ "subject": "x", "message": "y" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, audit) = t
        .send(Method::GET, "/api/v1/admin/audit", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"notification.requeue"), "{actions:?}");
    assert!(actions.contains(&"notification.notice"), "{actions:?}");
    t.app.shutdown().await;
}

/// The inbox pages by a cursor that stays put while notifications arrive;
/// reading one or all updates the unread count, which is also pushed.
async fn inbox_paging_is_stable_while_notifications_arrive(backend: DbKind) {
    let sink = SmtpSink::start();
    let t = app(backend, &sink, &[]).await;
    let (user, _) = t.guest("Reader").await;
    let user_id: Uuid = me(&t, &user).await.parse().expect("uuid");
    let notice = |n: usize| {
        NewNotice::new(
            Kind::AdminNotice,
            None,
            json!({ "subject": format!("n{n}"), "message": "m" }).to_string(),
            Audience::Users(vec![user_id]),
        )
    };
    let store = t.app.database.notify();
    for n in 0..25 {
        store
            .write_notices(&[notice(n)], Utc::now())
            .await
            .expect("write");
    }
    let first = inbox(&t, &user, "?limit=10").await;
    assert_eq!(first["unread"], 25);
    let mut subjects: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        for n in page["notifications"].as_array().expect("list") {
            subjects.push(n["payload"]["subject"].as_str().expect("subject").into());
        }
        // New notifications arrive between pages.
        store
            .write_notices(&[notice(100)], Utc::now())
            .await
            .expect("write");
        let Some(next) = page["next_before"].as_str() else {
            break;
        };
        page = inbox(&t, &user, &format!("?limit=10&before={next}")).await;
    }
    let want: Vec<String> = (0..25).rev().map(|n| format!("n{n}")).collect();
    assert_eq!(subjects, want, "every original once, newest first");

    let mut push = crate::helpers::subscribe(&t, "inbox-test").await;
    let newest = inbox(&t, &user, "?limit=1").await;
    let id = newest["notifications"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, unread) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/notifications/{id}/read"),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{unread}");
    let total = unread["unread"].as_i64().expect("count");
    let only_unread = inbox(&t, &user, "?unread=true&limit=200").await;
    assert_eq!(
        only_unread["notifications"].as_array().map(Vec::len),
        Some(total as usize)
    );
    let (status, _) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/notifications/{}/read", Uuid::now_v7()),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, all) = t
        .send(
            Method::POST,
            "/api/v1/user/notifications/read-all",
            Some(&user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["unread"], 0);
    let mut seen = Vec::new();
    drain_push(&mut push, &mut seen, Duration::from_millis(300)).await;
    let counts: Vec<i64> = seen
        .iter()
        .filter(|(u, k, _)| *u == user_id.to_string() && k == "notifications.unread")
        .filter_map(|(_, _, p)| p["unread"].as_i64())
        .collect();
    assert_eq!(counts, vec![total, 0]);
    let (status, err) = t
        .send(
            Method::GET,
            "/api/v1/user/notifications?limit=0",
            Some(&user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    t.app.shutdown().await;
}

/// Preferences refuse what makes no sense, each problem named by field.
async fn bad_preferences_are_refused_precisely(backend: DbKind) {
    let sink = SmtpSink::start();
    // Without BACKEND_WEBHOOK_ALLOW_PRIVATE: loopback hooks are refused.
    let t = app(
        backend,
        &sink,
        &[("BACKEND_WEBHOOK_ALLOW_PRIVATE", "false")],
    )
    .await;
    let user = sign_in(&t, &sink, "prefs@example.org").await;
    let cases = [
        (
            json!({ "channels": { "nonsense": ["push"] } }),
            "/channels/nonsense",
        ),
        (
            json!({ "channels": { "your_move": ["pigeon"] } }),
            "/channels/your_move",
        ),
        (json!({ "time_zone": "Mars/Olympus" }), "/time_zone"),
        (
            json!({ "quiet_hours": { "start": "07:00", "end": "07:00" } }),
            "/quiet_hours",
        ),
        (
            json!({ "quiet_hours": { "start": "7am", "end": "09:00" } }),
            "/quiet_hours/start",
        ),
        (
            json!({ "webhook_url": "ftp://example.org/x" }),
            "/webhook_url",
        ),
        (
            json!({ "webhook_url": "http://127.0.0.1:9/hook" }),
            "/webhook_url",
        ),
        (
            json!({ "webhook_url": "http://169.254.169.254/latest" }),
            "/webhook_url",
        ),
    ];
    for (body, path) in cases {
        let (status, err) = put_prefs(&t, &user, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["code"], "invalid_input", "{err}");
        assert_eq!(err["error"]["details"][0]["path"], path, "{body}: {err}");
    }
    let (status, err) = put_prefs(&t, &user, json!({ "colour": "blue" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    // Nothing was stored by the refused changes.
    let (_, prefs) = t
        .send(
            Method::GET,
            "/api/v1/user/notification-preferences",
            Some(&user),
            None,
        )
        .await;
    assert_eq!(prefs["time_zone"], "UTC");
    assert!(prefs["quiet_hours"].is_null());
    // A valid change, and clearing it again.
    let (status, prefs) = put_prefs(
        &t,
        &user,
        json!({ "time_zone": "Europe/Berlin", "quiet_hours": { "start": "22:00", "end": "07:00" }, "digest": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{prefs}");
    assert_eq!(prefs["quiet_hours"]["start"], "22:00");
    let (status, prefs) = put_prefs(&t, &user, json!({ "quiet_hours": null })).await;
    assert_eq!(status, StatusCode::OK, "{prefs}");
    assert!(prefs["quiet_hours"].is_null());
    assert_eq!(prefs["time_zone"], "Europe/Berlin");
    t.app.shutdown().await;
}

/// Orders-due reminders go once per turn, a while before the deadline,
/// only to seats that have not sent orders.
async fn reminders_fire_once_per_turn_for_seats_still_to_act(backend: DbKind) {
    let sink = SmtpSink::start();
    // Clock changes wake the reminder job; it also looks every second.
    let t = app(
        backend,
        &sink,
        &[("BACKEND_NOTIFICATION_REMINDER_INTERVAL", "1s")],
    )
    .await;
    let (ann, _) = t.guest("Ann").await;
    let (bo, _) = t.guest("Bo").await;
    let (ann_id, bo_id) = (me(&t, &ann).await, me(&t, &bo).await);
    let mut body = game_body("Reminded");
    body["schedule"] = json!({ "kind": "interval", "every": "10s" });
    body["rules"] = json!({ "remind_before": "7s", "excused_misses": 0 });
    let (status, game) = t
        .send(Method::POST, "/api/v1/user/games", Some(&ann), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{game}");
    let id = game["id"].as_str().expect("id").to_string();
    for (token, name) in [(&ann, "Ann Folk"), (&bo, "Bo Folk")] {
        let (status, a) = t
            .send(
                Method::POST,
                &format!("/api/v1/user/games/{id}/applications"),
                Some(token),
                Some(json!({ "race_name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{a}");
        let (status, _) = t
            .send(
                Method::POST,
                &format!(
                    "/api/v1/user/games/{id}/applications/{}/approve",
                    a["id"].as_str().expect("id")
                ),
                Some(&ann),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = t
        .send(
            Method::POST,
            &format!("/api/v1/user/games/{id}/start"),
            Some(&ann),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let turn = until("turn 1 opens", || async {
        let (status, clock) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}/clock"),
                Some(&ann),
                None,
            )
            .await;
        (status == StatusCode::OK && clock["trigger"] != "open")
            .then(|| clock["turn"].as_i64().unwrap_or(0))
    })
    .await;
    // Ann sends (empty) orders; Bo does not.
    let (status, sent) = t
        .send(
            Method::PUT,
            &format!("/api/v1/user/games/{id}/orders"),
            Some(&ann),
            Some(json!({ "turn": turn, "orders": [] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let reminders = |token: String| {
        let t = &t;
        async move {
            inbox(t, &token, "?limit=200").await["notifications"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["kind"] == "orders_due")
                .map(|n| n["payload"]["turn"].as_i64().unwrap_or(0))
                .collect::<Vec<i64>>()
        }
    };
    until("Bo is reminded of turn 1", || async {
        reminders(bo.clone()).await.contains(&turn).then_some(())
    })
    .await;
    // Wait for the next turn to open, past turn 1's deadline.
    until("turn 2 opens", || async {
        let (_, clock) = t
            .send(
                Method::GET,
                &format!("/api/v1/user/games/{id}/clock"),
                Some(&ann),
                None,
            )
            .await;
        (clock["turn"].as_i64().unwrap_or(0) > turn).then_some(())
    })
    .await;
    let bo_turns = reminders(bo.clone()).await;
    assert_eq!(
        bo_turns.iter().filter(|n| **n == turn).count(),
        1,
        "{bo_turns:?}"
    );
    assert!(
        !reminders(ann.clone()).await.contains(&turn),
        "Ann had sent orders for turn {turn}"
    );
    let _ = (ann_id, bo_id);
    t.app.shutdown().await;
}

// ---- quiet hours and the digest, on an injected clock -----------------------

struct Clocked {
    _files: TestDb,
    db: turnbase_store::Database,
    now: Arc<Mutex<DateTime<Utc>>>,
    service: NotifyService,
    stop: tokio_util::sync::CancellationToken,
    account: Uuid,
}

impl Clocked {
    async fn new(backend: DbKind) -> Clocked {
        let (files, db) = TestDb::open_migrated(backend).await;
        let start = Utc
            .with_ymd_and_hms(2026, 3, 2, 21, 30, 0)
            .single()
            .expect("valid");
        let now = Arc::new(Mutex::new(start));
        let clock_now = now.clone();
        let clock: turnbase_core::worker::Clock =
            Arc::new(move || *clock_now.lock().expect("not poisoned"));
        let push = turnbase_push::PushService::new(
            turnbase_push::PushConfig::with_window(Duration::from_secs(600)),
            &turnbase_core::telemetry::noop_meter(),
        );
        let config = NotifyConfig {
            poll_interval: Duration::from_millis(20),
            ..NotifyConfig::default()
        };
        let service = NotifyService::new(
            db.clone(),
            push,
            Arc::new(tokio::sync::Notify::new()),
            config,
            turnbase_notify::Keys::derive("a secret for the clocked notification tests"),
            &turnbase_core::telemetry::noop_meter(),
        )
        .with_clock(clock);
        let account = Uuid::now_v7();
        db.accounts()
            .sign_in_by_email(
                &turnbase_store::accounts::NewAccount {
                    id: account,
                    email: Some("quiet@example.org".into()),
                    display_name: "Quiet".into(),
                    role: turnbase_store::accounts::Role::Player,
                    created_at: start,
                },
                &turnbase_store::accounts::NewSession {
                    id: Uuid::now_v7(),
                    token_hash: vec![7; 32],
                    device_name: "test".into(),
                    country: None,
                    created_at: start,
                },
            )
            .await
            .expect("account");
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(service.clone().run(stop.clone()));
        Clocked {
            _files: files,
            db,
            now,
            service,
            stop,
            account,
        }
    }

    fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().expect("not poisoned") = at;
    }

    async fn tell(&self, kind: Kind, game: Option<Uuid>, payload: Value) {
        let now = *self.now.lock().expect("not poisoned");
        self.db
            .notify()
            .write_notices(
                &[NewNotice::new(
                    kind,
                    game,
                    payload.to_string(),
                    Audience::Users(vec![self.account]),
                )],
                now,
            )
            .await
            .expect("write");
        self.service.wake();
    }

    /// Subjects of the mail in the outbox.
    async fn outbox(&self) -> Vec<String> {
        let mails = self
            .db
            .mail()
            .list_mail(&turnbase_store::mail::MailFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("list");
        mails.into_iter().map(|m| m.subject).collect()
    }

    async fn routes_settled(&self, n: usize) {
        until("the notifications are routed", || async {
            let routes = self
                .db
                .notify()
                .list_routes(&turnbase_store::notify::RouteFilter {
                    limit: 100,
                    ..Default::default()
                })
                .await
                .expect("routes");
            (routes.len() >= n).then_some(())
        })
        .await;
    }
}

fn at(h: u32, m: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, h, m, 0)
        .single()
        .expect("valid")
}

/// Quiet hours hold email (push stays immediate) until they end; turn
/// results by digest become one mail per game and day.
async fn quiet_hours_hold_email_and_digests_gather_a_day(backend: DbKind) {
    let w = Clocked::new(backend).await;
    w.service
        .put_preferences(
            w.account,
            true,
            serde_json::from_value(json!({
                "time_zone": "Europe/Berlin",
                "quiet_hours": { "start": "22:00", "end": "07:00" },
                "digest": true,
                "channels": { "turn_resolved": ["push", "email"] },
            }))
            .expect("change"),
        )
        .await
        .expect("preferences");
    // 21:30 UTC is 22:30 in Berlin: quiet.
    w.tell(
        Kind::YourMove,
        Some(Uuid::now_v7()),
        json!({ "turn": 3, "deadline": "tomorrow" }),
    )
    .await;
    w.routes_settled(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.outbox().await.is_empty(), "held by quiet hours");
    // 05:59 UTC is 06:59 in Berlin: still held; 06:00 UTC releases it.
    w.set(at(5, 59, 3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.outbox().await.is_empty(), "still quiet");
    w.set(at(6, 0, 3));
    until("the held mail goes out", || async {
        (w.outbox().await.len() == 1).then_some(())
    })
    .await;

    // The digest: three turn results of one game on one Berlin day.
    let game = Uuid::now_v7();
    for (h, turn) in [(9, 1), (12, 2), (15, 3)] {
        w.set(at(h, 0, 3));
        w.tell(Kind::TurnResolved, Some(game), json!({ "turn": turn }))
            .await;
    }
    w.routes_settled(2 + 3 + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.outbox().await.len(), 1, "no mail per turn");
    // The day ends at 23:00 UTC (midnight in Berlin), inside quiet hours:
    // the digest waits for 07:00 Berlin.
    w.set(at(23, 30, 3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.outbox().await.len(), 1);
    w.set(at(6, 1, 4));
    let subjects = until("the digest goes out", || async {
        let s = w.outbox().await;
        (s.len() == 2).then_some(s)
    })
    .await;
    assert!(
        subjects
            .iter()
            .any(|s| s.ends_with("3 turns resolved today")),
        "{subjects:?}"
    );
    w.stop.cancel();
}

turnbase_testkit::both_backends!(
    flavor = "multi_thread";
    events_reach_their_people_by_preference,
    failing_webhooks_end_in_dead_letters_and_requeue,
    inbox_paging_is_stable_while_notifications_arrive,
    bad_preferences_are_refused_precisely,
    reminders_fire_once_per_turn_for_seats_still_to_act,
    quiet_hours_hold_email_and_digests_gather_a_day,
);
