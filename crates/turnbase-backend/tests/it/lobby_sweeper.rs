//! The lobby sweeper with an injected clock, on both backends: games past
//! their enrolment deadline start or are cancelled, expired reservations
//! are released, each exactly once even with two sweepers on one
//! database, and the people concerned hear of it (their notifications).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use serde_json::json;
use turnbase_lobby::{Caller, GameDraft, LobbyConfig, LobbyService, ScheduleSpec, SweepReport};
use turnbase_store::Database;
use turnbase_store::accounts::{EmailSignIn, NewAccount, NewSession, Role};
use turnbase_store::lobby::{ApplicationStatus, GameState, Visibility};
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid")
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

struct World {
    _db_files: TestDb,
    db: Database,
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl World {
    async fn new(backend: DbKind) -> World {
        let files = TestDb::new(backend).await;
        let db = Database::connect(&files.options).await.expect("connect");
        db.migrate().await.expect("migrate");
        World {
            _db_files: files,
            db,
            now: Arc::new(Mutex::new(start())),
        }
    }

    /// A lobby service on this world's database and clock (two of them
    /// are two backends sweeping one database).
    fn lobby(&self) -> LobbyService {
        let now = self.now.clone();
        LobbyService::new(
            self.db.clone(),
            crate::helpers::reference_engines(),
            LobbyConfig {
                pending_ttl: Duration::from_secs(72 * 3600),
                sweep_interval: Duration::from_secs(60),
                min_turn_step: Duration::from_secs(10),
            },
            Arc::new(move || *now.lock().expect("not poisoned")),
            &turnbase_core::telemetry::noop_meter(),
        )
    }

    fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().expect("not poisoned") = at;
    }

    async fn member(&self) -> Caller {
        let id = Uuid::now_v7();
        let signed = self
            .db
            .accounts()
            .sign_in_by_email(
                &NewAccount {
                    id,
                    email: Some(format!("{id}@example.org")),
                    display_name: "M".into(),
                    role: Role::Player,
                    created_at: start(),
                },
                &NewSession {
                    id: Uuid::now_v7(),
                    token_hash: id.as_bytes().repeat(2),
                    device_name: "d".into(),
                    country: None,
                    created_at: start(),
                },
            )
            .await
            .expect("account");
        assert!(matches!(signed, EmailSignIn::SignedIn { .. }));
        Caller { id, admin: false }
    }
}

fn draft(title: &str, deadline: DateTime<Utc>) -> GameDraft {
    GameDraft {
        title: title.into(),
        engine: "conquest".into(),
        settings: json!({}),
        min_players: Some(2),
        max_players: Some(4),
        enrol_deadline: deadline,
        schedule: ScheduleSpec::Interval { every: "1h".into() },
        visibility: Visibility::Public,
        rules: turnbase_lobby::PlayRules::default(),
    }
}

/// The notifications written since the last call, as the live events
/// they become: (user, event kind, payload).
async fn drain(db: &Database, after: &mut Uuid) -> Vec<(String, String, serde_json::Value)> {
    let rows: Vec<(Uuid, Uuid, String, String)> = turnbase_testkit::on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, account_id, kind, payload FROM notifications WHERE id > $1 ORDER BY id",
        )
        .bind(*after)
        .fetch_all(pool)
        .await
    })
    .expect("notifications");
    if let Some((last, ..)) = rows.last() {
        *after = *last;
    }
    rows.into_iter()
        .map(|(_, user, kind, payload)| {
            let event = turnbase_store::notify::Kind::parse(&kind)
                .expect("a known kind")
                .event()
                .to_string();
            (
                user.to_string(),
                event,
                serde_json::from_str(&payload).expect("JSON"),
            )
        })
        .collect()
}

async fn the_sweeper_starts_cancels_and_expires_on_time(backend: DbKind) {
    let w = World::new(backend).await;
    let lobby = w.lobby();
    let mut seen = Uuid::nil();
    let owner = w.member().await;
    let (ann, bo, cy) = (w.member().await, w.member().await, w.member().await);

    let full = lobby
        .create_game(owner, draft("Enough", start() + hours(1)))
        .await
        .expect("game");
    let thin = lobby
        .create_game(owner, draft("Too few", start() + hours(1)))
        .await
        .expect("game");
    let later = lobby
        .create_game(owner, draft("Later", start() + hours(100)))
        .await
        .expect("game");
    for (who, game, name) in [
        (ann, &full, "Ann"),
        (bo, &full, "Bo"),
        (ann, &thin, "Ann Two"),
    ] {
        let a = lobby
            .apply(who, game.row.id, name, None)
            .await
            .expect("apply");
        lobby
            .approve(owner, game.row.id, a.id)
            .await
            .expect("approve");
    }
    let pending = lobby
        .apply(cy, later.row.id, "Cygnus", None)
        .await
        .expect("apply");
    drain(&w.db, &mut seen).await;

    assert_eq!(
        lobby.sweep().await.expect("sweep"),
        SweepReport::default(),
        "nothing is due"
    );
    w.set(start() + hours(1));
    let report = lobby.sweep().await.expect("sweep");
    assert_eq!(
        report,
        SweepReport {
            expired: 0,
            started: 1,
            cancelled: 1
        }
    );
    let state = |id| {
        let db = w.db.clone();
        async move { db.lobby().game(id).await.expect("game").state }
    };
    assert_eq!(state(full.row.id).await, GameState::Starting);
    assert_eq!(state(thin.row.id).await, GameState::Cancelled);
    assert_eq!(state(later.row.id).await, GameState::Enrolling);
    let events = drain(&w.db, &mut seen).await;
    let of = |kind: &str| -> Vec<String> {
        let mut users: Vec<String> = events
            .iter()
            .filter(|(_, k, _)| k == kind)
            .map(|(u, _, _)| u.clone())
            .collect();
        users.sort();
        users
    };
    let mut told = vec![owner.id.to_string(), ann.id.to_string(), bo.id.to_string()];
    told.sort();
    assert_eq!(of("lobby.game_starting"), told);
    let mut told = vec![owner.id.to_string(), ann.id.to_string()];
    told.sort();
    assert_eq!(of("lobby.game_cancelled"), told);
    let history =
        w.db.lobby()
            .state_history(thin.row.id)
            .await
            .expect("history");
    assert_eq!(
        history.last().map(|h| h.actor_id),
        Some(None),
        "the platform moved it"
    );
    assert!(
        history
            .last()
            .map(|h| h.reason.contains("without enough players"))
            .unwrap_or(false)
    );
    // The cancelled game's names are free again; the starting game's kept.
    let available = |name: &'static str| {
        let lobby = lobby.clone();
        async move { lobby.availability(name).await.expect("availability") }
    };
    assert!(matches!(
        available("Ann Two").await,
        turnbase_lobby::Availability::Available { .. }
    ));
    assert!(matches!(
        available("Bo").await,
        turnbase_lobby::Availability::Taken { .. }
    ));

    // A pending reservation lapses after the TTL, once.
    w.set(start() + hours(72) - chrono::Duration::seconds(1));
    assert_eq!(lobby.sweep().await.expect("sweep").expired, 0);
    w.set(start() + hours(72));
    assert_eq!(lobby.sweep().await.expect("sweep").expired, 1);
    assert_eq!(lobby.sweep().await.expect("sweep").expired, 0);
    let lapsed =
        w.db.lobby()
            .application(pending.id)
            .await
            .expect("application");
    assert_eq!(lapsed.status, ApplicationStatus::Expired);
    assert!(matches!(
        available("Cygnus").await,
        turnbase_lobby::Availability::Available { .. }
    ));
    let events = drain(&w.db, &mut seen).await;
    assert!(
        events
            .iter()
            .any(|(u, k, p)| k == "lobby.application_expired"
                && *u == cy.id.to_string()
                && p["application_id"] == pending.id.to_string()),
        "{events:?}"
    );
    // Cy may apply again with the same name.
    lobby
        .apply(cy, later.row.id, "Cygnus", None)
        .await
        .expect("apply again");
}

async fn two_sweepers_close_each_game_once(backend: DbKind) {
    let w = World::new(backend).await;
    let (one, two) = (w.lobby(), w.lobby());
    let owner = w.member().await;
    let players = [w.member().await, w.member().await];
    let mut games = Vec::new();
    for i in 0..30 {
        let game = one
            .create_game(owner, draft(&format!("G{i}"), start() + hours(1)))
            .await
            .expect("game");
        // Even games get their two players and start; odd ones are cancelled.
        if i % 2 == 0 {
            for (n, p) in players.iter().enumerate() {
                let a = one
                    .apply(*p, game.row.id, &format!("P{n} G{i}"), None)
                    .await
                    .expect("apply");
                one.approve(owner, game.row.id, a.id)
                    .await
                    .expect("approve");
            }
        }
        games.push(game.row.id);
    }
    w.set(start() + hours(2));
    let (a, b) = tokio::join!(one.sweep(), two.sweep());
    let (a, b) = (a.expect("sweep one"), b.expect("sweep two"));
    assert_eq!(a.started + b.started, 15, "{a:?} {b:?}");
    assert_eq!(a.cancelled + b.cancelled, 15, "{a:?} {b:?}");
    for id in games {
        let history = w.db.lobby().state_history(id).await.expect("history");
        assert_eq!(history.len(), 2, "created and closed once: {history:?}");
    }
}

turnbase_testkit::both_backends!(
    flavor = "multi_thread";
    the_sweeper_starts_cancels_and_expires_on_time,
    two_sweepers_close_each_game_once,
);
