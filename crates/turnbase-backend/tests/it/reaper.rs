//! The accounts service with an injected clock. The guest reaper's rule, on both backends: an
//! old guest without a seat goes with its sessions (and gateways hear of
//! it); a young guest, a seated guest and an email account stay. Last-seen
//! times are written at most once per resolution.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use prost::Message as _;
use turnbase_accounts::{AccountService, AccountsConfig, Client, GeoIp, Rate};
use turnbase_push::proto::PushEvent;
use turnbase_push::proto::push_event::Kind;
use turnbase_push::{PushConfig, PushService};
use turnbase_store::Database;
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

const RETENTION: Duration = Duration::from_secs(720 * 3600);

fn config() -> AccountsConfig {
    let generous = Rate {
        count: 1000,
        per: Duration::from_secs(1),
    };
    AccountsConfig {
        code_ttl: Duration::from_secs(600),
        code_tries: 5,
        email_rate: generous,
        ip_rate: generous,
        admin_email: None,
        session_cache_capacity: 100,
        last_seen_resolution: Duration::from_secs(300),
        code_key: turnbase_accounts::CodeKey::derive("reaper-test-installation-secret"),
    }
}

/// Seats `account` in a game of `owner` that is then cancelled: a seat,
/// even in a game that never ran, keeps a guest.
async fn seat(db: &Database, owner: Uuid, account: Uuid) {
    use turnbase_store::lobby::{GameState, NewApplication, NewGame, StateChange, Visibility};
    let now = Utc::now();
    let game = db
        .lobby()
        .create_game(
            &NewGame {
                id: Uuid::now_v7(),
                owner_id: owner,
                title: "Short-lived".into(),
                engine: "conquest".into(),
                engine_version: "1".into(),
                settings: "{}".into(),
                min_players: 2,
                max_players: 4,
                enrol_deadline: now + chrono::Duration::days(1),
                schedule: r#"{"kind":"interval","every":"1h"}"#.into(),
                visibility: Visibility::Public,
                invite_code: None,
                created_at: now,
                rules: "{}".into(),
            },
            owner,
        )
        .await
        .expect("a game");
    let application = db
        .lobby()
        .apply(
            &NewApplication {
                id: Uuid::now_v7(),
                game_id: game.id,
                account_id: account,
                race_name: "Seated".into(),
                name_key: "seated".into(),
                created_at: now,
                expires_at: now + chrono::Duration::days(3),
                invite_code: None,
            },
            &[],
        )
        .await
        .expect("store")
        .expect("applied")
        .application;
    db.lobby()
        .approve(game.id, application.id, now, &[])
        .await
        .expect("store")
        .expect("approved");
    db.lobby()
        .transition_game(
            &StateChange {
                id: Uuid::now_v7(),
                game_id: game.id,
                from: GameState::Enrolling,
                to: GameState::Cancelled,
                actor_id: Some(owner),
                reason: "test".into(),
                at: now,
                notices: Vec::new(),
            },
            None,
        )
        .await
        .expect("store")
        .expect("cancelled");
}

async fn old_seatless_guests_are_reaped(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    db.migrate().await.expect("migrate");
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("valid");
    let now = Arc::new(Mutex::new(start));
    let clock_now = now.clone();
    let push = PushService::new(
        PushConfig::with_window(Duration::from_secs(60)),
        &turnbase_core::telemetry::noop_meter(),
    );
    let mut sub = push.subscribe("test", "").expect("subscribe");
    let mail = turnbase_mail::MailService::new(
        db.clone(),
        Arc::default(),
        &turnbase_core::telemetry::noop_meter(),
    );
    let service = AccountService::new(
        db.clone(),
        mail,
        push.clone(),
        GeoIp::none(),
        config(),
        Arc::new(move || *clock_now.lock().expect("not poisoned")),
        &turnbase_core::telemetry::noop_meter(),
    );
    let client = Client {
        ip: "127.0.0.1".parse().expect("ip"),
    };
    let old = service
        .guest_sign_in("Old", None, client)
        .await
        .expect("guest");
    let seated = service
        .guest_sign_in("Seated", None, client)
        .await
        .expect("guest");
    // An email account made as old as the guests.
    let member = db
        .accounts()
        .sign_in_by_email(
            &turnbase_store::accounts::NewAccount {
                id: Uuid::now_v7(),
                email: Some("m@example.org".into()),
                display_name: "M".into(),
                role: turnbase_store::accounts::Role::Player,
                created_at: start,
            },
            &turnbase_store::accounts::NewSession {
                id: Uuid::now_v7(),
                token_hash: vec![7; 32],
                device_name: "d".into(),
                country: None,
                created_at: start,
            },
        )
        .await
        .expect("member");
    let turnbase_store::accounts::EmailSignIn::SignedIn {
        account: member, ..
    } = member
    else {
        panic!("not blocked");
    };
    seat(&db, member.id, seated.session.account.id).await;

    *now.lock().expect("not poisoned") = start + chrono::Duration::days(29);
    let young = service
        .guest_sign_in("Young", None, client)
        .await
        .expect("guest");
    assert_eq!(
        service.reap_guests(RETENTION).await.expect("reap"),
        0,
        "nobody is 30 days old yet"
    );

    *now.lock().expect("not poisoned") = start + chrono::Duration::days(31);
    assert_eq!(service.reap_guests(RETENTION).await.expect("reap"), 1);
    assert!(
        service.resolve(old.token.as_str()).await.is_err(),
        "the reaped guest's session is gone, from the cache too"
    );
    for kept in [&seated, &young] {
        service.resolve(kept.token.as_str()).await.expect("kept");
    }
    db.accounts()
        .account(member.id)
        .await
        .expect("the email account is kept");
    assert!(
        db.accounts()
            .session_by_token(&old.token.hash())
            .await
            .expect("lookup")
            .is_none()
    );
    let reaped = old.session.account.id.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("an invalidation is published")
            .expect("the subscription stays open");
        let turnbase_push::wire::Frame::Events(events) = frame else {
            continue;
        };
        let invalidations: Vec<_> = events
            .iter()
            .filter_map(
                |bytes| match PushEvent::decode(bytes.as_ref()).expect("an event").kind {
                    Some(Kind::SessionInvalidation(i)) => Some(i),
                    _ => None,
                },
            )
            .collect();
        if let Some(i) = invalidations.first() {
            assert_eq!(i.user_id, reaped);
            assert_eq!(i.device_session_id, None, "all of the account's sessions");
            assert_eq!(i.reason, "account_deleted");
            break;
        }
    }
}

async fn last_seen_is_written_once_per_resolution(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    db.migrate().await.expect("migrate");
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("valid");
    let now = Arc::new(Mutex::new(start));
    let clock_now = now.clone();
    let push = PushService::new(
        PushConfig::with_window(Duration::from_secs(60)),
        &turnbase_core::telemetry::noop_meter(),
    );
    let mail = turnbase_mail::MailService::new(
        db.clone(),
        Arc::default(),
        &turnbase_core::telemetry::noop_meter(),
    );
    let service = AccountService::new(
        db.clone(),
        mail,
        push,
        GeoIp::none(),
        config(),
        Arc::new(move || *clock_now.lock().expect("not poisoned")),
        &turnbase_core::telemetry::noop_meter(),
    );
    let client = Client {
        ip: "127.0.0.1".parse().expect("ip"),
    };
    let guest = service
        .guest_sign_in("G", None, client)
        .await
        .expect("guest");
    let last_seen = || async {
        db.accounts()
            .sessions(guest.session.account.id)
            .await
            .expect("sessions")[0]
            .last_seen_at
    };
    let set = |minutes: i64| {
        *now.lock().expect("not poisoned") = start + chrono::Duration::minutes(minutes)
    };

    set(2);
    service.resolve(guest.token.as_str()).await.expect("valid");
    service.flush().await.expect("flush");
    assert_eq!(
        last_seen().await,
        start,
        "within the 5 minute resolution nothing is written"
    );

    set(6);
    service.resolve(guest.token.as_str()).await.expect("valid");
    set(7);
    service.resolve(guest.token.as_str()).await.expect("valid");
    service.flush().await.expect("flush");
    assert_eq!(last_seen().await, start + chrono::Duration::minutes(6));

    set(12);
    service.resolve(guest.token.as_str()).await.expect("valid");
    service.flush().await.expect("flush");
    assert_eq!(last_seen().await, start + chrono::Duration::minutes(12));
}

turnbase_testkit::both_backends!(
    old_seatless_guests_are_reaped,
    last_seen_is_written_once_per_resolution
);
