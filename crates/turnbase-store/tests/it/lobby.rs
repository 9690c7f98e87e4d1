//! The lobby store on both backends: every statement of `LobbyStore` runs
//! here against SQLite and Postgres, with the invariants concurrency could
//! break (seat counts, name uniqueness, one move per state) checked under
//! racing writers.

use std::sync::Arc;

use chrono::{TimeZone as _, Utc};
use turnbase_store::accounts::{NewAccount, NewSession, Role};
use turnbase_store::lobby::{
    ApplicationStatus, GameEdit, GameFilter, GameState, NameHold, NewApplication, NewBot, NewGame,
    SeatRefusal, SeatStatus, StateChange, Transition, Visibility,
};
use turnbase_store::{Database, StoreError};
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

/// A new email account (unique address and token).
pub async fn member(db: &Database) -> Uuid {
    let id = Uuid::now_v7();
    let account = NewAccount {
        id,
        email: Some(format!("{id}@example.org")),
        display_name: "Member".into(),
        role: Role::Player,
        created_at: t(0),
    };
    let session = NewSession {
        id: Uuid::now_v7(),
        token_hash: Uuid::now_v7().as_bytes().repeat(2),
        device_name: "test".into(),
        country: None,
        created_at: t(0),
    };
    db.accounts()
        .sign_in_by_email(&account, &session)
        .await
        .expect("an account");
    id
}

pub fn new_game(owner: Uuid, max: i64) -> NewGame {
    NewGame {
        id: Uuid::now_v7(),
        owner_id: owner,
        title: "Test game".into(),
        engine: "conquest".into(),
        engine_version: "1.0.0".into(),
        settings: "{}".into(),
        min_players: 2,
        max_players: max,
        enrol_deadline: t(3600),
        schedule: r#"{"kind":"interval","every":"1h"}"#.into(),
        visibility: Visibility::Public,
        invite_code: None,
        created_at: t(0),
        rules: "{}".into(),
    }
}

fn application(game: Uuid, account: Uuid, name: &str) -> NewApplication {
    NewApplication {
        id: Uuid::now_v7(),
        game_id: game,
        account_id: account,
        race_name: name.into(),
        name_key: name.to_lowercase(),
        created_at: t(10),
        expires_at: t(1000),
        invite_code: None,
    }
}

/// Seats `account` in a new game of another owner: a real seat, as the
/// guest reaper's rule needs.
pub async fn seat_in_new_game(db: &Database, account: Uuid) -> Uuid {
    let owner = member(db).await;
    let game = db
        .lobby()
        .create_game(&new_game(owner, 4), owner)
        .await
        .expect("game");
    let name = format!("Seat {}", &account.simple().to_string()[..8]);
    let a = db
        .lobby()
        .apply(&application(game.id, account, &name), &[])
        .await
        .expect("store")
        .expect("applied")
        .application;
    db.lobby()
        .approve(game.id, a.id, t(20), &[])
        .await
        .expect("store")
        .expect("approved");
    game.id
}

async fn open(backend: DbKind) -> (TestDb, Database) {
    TestDb::open_migrated(backend).await
}

async fn games_are_created_listed_edited_and_moved_once(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.lobby();
    let owner = member(&db).await;
    let game = store
        .create_game(&new_game(owner, 4), owner)
        .await
        .expect("create");
    assert_eq!(game.state, GameState::Enrolling);
    assert_eq!(store.game(game.id).await.expect("read"), game);
    let mut hidden = new_game(owner, 2);
    hidden.visibility = Visibility::Unlisted;
    hidden.invite_code = Some("CODE".into());
    hidden.title = "Secret Cabal".into();
    let hidden = store.create_game(&hidden, owner).await.expect("create");

    let public = store
        .list_games(&GameFilter {
            public_only: true,
            limit: 10,
            ..GameFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(public.iter().map(|g| g.id).collect::<Vec<_>>(), [game.id]);
    let all = store
        .list_games(&GameFilter {
            search: Some("CABAL".into()),
            limit: 10,
            ..GameFilter::default()
        })
        .await
        .expect("search");
    assert_eq!(all.iter().map(|g| g.id).collect::<Vec<_>>(), [hidden.id]);
    let roomy = store
        .list_games(&GameFilter {
            min_free_seats: Some(3),
            state: Some(GameState::Enrolling),
            engine: Some("conquest".into()),
            owner: Some(owner),
            limit: 10,
            ..GameFilter::default()
        })
        .await
        .expect("filter");
    assert_eq!(roomy.iter().map(|g| g.id).collect::<Vec<_>>(), [game.id]);
    let older = store
        .list_games(&GameFilter {
            before: Some(hidden.id),
            limit: 10,
            ..GameFilter::default()
        })
        .await
        .expect("page");
    assert_eq!(older.iter().map(|g| g.id).collect::<Vec<_>>(), [game.id]);

    let edited = store
        .edit_game(
            game.id,
            &GameEdit {
                title: Some("Renamed".into()),
                max_players: Some(6),
                ..GameEdit::default()
            },
            t(5),
        )
        .await
        .expect("edit");
    assert_eq!((edited.title.as_str(), edited.max_players), ("Renamed", 6));
    assert_eq!(edited.min_players, 2, "unchanged values stay");

    let change = |from, to| StateChange {
        id: Uuid::now_v7(),
        game_id: game.id,
        from,
        to,
        actor_id: Some(owner),
        reason: "test".into(),
        at: t(50),
        notices: Vec::new(),
    };
    let moved = store
        .transition_game(&change(GameState::Enrolling, GameState::Starting), None)
        .await
        .expect("store")
        .expect("moved");
    assert_eq!(moved.game.state, GameState::Starting);
    assert!(
        store
            .transition_game(&change(GameState::Enrolling, GameState::Cancelled), None)
            .await
            .expect("store")
            .is_none(),
        "a game no longer enrolling is not moved from enrolling"
    );
    let running = store
        .transition_game(&change(GameState::Starting, GameState::Running), None)
        .await
        .expect("store")
        .expect("moved");
    assert_eq!(running.game.started_at, Some(t(50)));
    assert!(matches!(
        store.edit_game(game.id, &GameEdit::default(), t(60)).await,
        Err(StoreError::Conflict(m)) if m.contains("running")
    ));
    let history = store.state_history(game.id).await.expect("history");
    let steps: Vec<_> = history
        .iter()
        .map(|c| (c.from_state.clone(), c.to_state.clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (None, "enrolling".to_string()),
            (Some("enrolling".into()), "starting".into()),
            (Some("starting".into()), "running".into()),
        ]
    );
    let counts = store.game_counts().await.expect("counts");
    assert!(counts.contains(&(GameState::Running, 1)), "{counts:?}");
    assert!(counts.contains(&(GameState::Enrolling, 1)), "{counts:?}");

    let other = member(&db).await;
    let audit = turnbase_store::accounts::AuditEntry {
        id: Uuid::now_v7(),
        actor_id: owner,
        actor_email: None,
        action: "game.transfer".into(),
        target: game.id.to_string(),
        detail: "test".into(),
        at: t(70),
    };
    let moved = store
        .transfer_game(game.id, other, &audit)
        .await
        .expect("transfer");
    assert_eq!(moved.owner_id, other);
    let log = db.accounts().list_audit(None, 10).await.expect("audit");
    assert_eq!(log[0].action, "game.transfer");
}

async fn enrolment_keeps_names_unique_and_seats_counted(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.lobby();
    let owner = member(&db).await;
    let game = store
        .create_game(&new_game(owner, 2), owner)
        .await
        .expect("create");
    let (ann, bo, cy) = (member(&db).await, member(&db).await, member(&db).await);
    let a = store
        .apply(&application(game.id, ann, "Vega"), &[])
        .await
        .expect("store")
        .expect("applied")
        .application;
    assert_eq!(a.status, ApplicationStatus::Pending);
    assert_eq!(
        store
            .apply(&application(game.id, ann, "Other"), &[])
            .await
            .expect("store"),
        Err(SeatRefusal::AlreadyApplied)
    );
    assert_eq!(
        store
            .apply(&application(game.id, bo, "Vega"), &[])
            .await
            .expect("store"),
        Err(SeatRefusal::NameHeld(NameHold::Pending))
    );
    let held = store.race_name("vega").await.expect("read").expect("held");
    assert_eq!(
        (held.status, held.account_id),
        (NameHold::Pending, Some(ann))
    );
    let b = store
        .apply(&application(game.id, bo, "Lyra"), &[])
        .await
        .expect("store")
        .expect("applied")
        .application;
    let (approved, seat) = store
        .approve(game.id, a.id, t(20), &[])
        .await
        .expect("store")
        .expect("approved");
    assert_eq!(approved.status, ApplicationStatus::Approved);
    assert_eq!(
        (seat.account_id, seat.race_name.as_str()),
        (Some(ann), "Vega")
    );
    assert_eq!(
        store
            .race_name("vega")
            .await
            .expect("read")
            .map(|h| h.status),
        Some(NameHold::Registered)
    );
    assert_eq!(
        store
            .approve(game.id, a.id, t(21), &[])
            .await
            .expect("store"),
        Err(SeatRefusal::NotPending(ApplicationStatus::Approved))
    );
    let rejected = store
        .reject(game.id, b.id, Some("full of Lyras"), t(22), &[])
        .await
        .expect("store")
        .expect("rejected");
    assert_eq!(rejected.reason.as_deref(), Some("full of Lyras"));
    assert!(
        store.race_name("lyra").await.expect("read").is_none(),
        "released"
    );
    let bot = store
        .add_bot(&NewBot {
            id: Uuid::now_v7(),
            game_id: game.id,
            race_name: "Robo".into(),
            name_key: "robo".into(),
            at: t(23),
        })
        .await
        .expect("store")
        .expect("seated");
    assert!(bot.is_bot);
    assert_eq!(
        store
            .apply(&application(game.id, cy, "Cygnus"), &[])
            .await
            .expect("store"),
        Err(SeatRefusal::Full)
    );
    let removed = store
        .remove_bot(game.id, bot.id)
        .await
        .expect("store")
        .expect("removed");
    assert_eq!(removed.id, bot.id);
    assert!(store.race_name("robo").await.expect("read").is_none());
    // Ann withdraws her seat before the start; Cy's pending application
    // then expires.
    let withdrawn = store
        .withdraw(game.id, ann, t(24))
        .await
        .expect("store")
        .expect("withdrawn");
    assert_eq!(withdrawn.status, ApplicationStatus::Withdrawn);
    assert!(store.seats(game.id).await.expect("seats").is_empty());
    assert_eq!(store.game(game.id).await.expect("game").seats_taken, 0);
    assert_eq!(
        store.withdraw(game.id, ann, t(25)).await.expect("store"),
        Err(SeatRefusal::NoApplication)
    );
    let c = store
        .apply(&application(game.id, cy, "Cygnus"), &[])
        .await
        .expect("store")
        .expect("applied")
        .application;
    assert!(
        store
            .expire_applications(t(999))
            .await
            .expect("sweep")
            .is_empty()
    );
    let expired = store.expire_applications(t(1000)).await.expect("sweep");
    assert_eq!(expired.iter().map(|a| a.id).collect::<Vec<_>>(), [c.id]);
    assert_eq!(expired[0].status, ApplicationStatus::Expired);
    assert!(store.race_name("cygnus").await.expect("read").is_none());
    let all = store.applications(game.id, None).await.expect("list");
    assert_eq!(all.len(), 3, "refused applications leave no row");
    let pending = store
        .applications(game.id, Some(ApplicationStatus::Pending))
        .await
        .expect("list");
    assert!(pending.is_empty());
    assert_eq!(store.application(a.id).await.expect("one").id, a.id);
}

async fn closing_enrolment_closes_applications_and_ending_frees_names(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.lobby();
    let owner = member(&db).await;
    let game = store
        .create_game(&new_game(owner, 4), owner)
        .await
        .expect("create");
    let (ann, bo) = (member(&db).await, member(&db).await);
    let a = store
        .apply(&application(game.id, ann, "Vega"), &[])
        .await
        .expect("store")
        .expect("applied")
        .application;
    store
        .approve(game.id, a.id, t(20), &[])
        .await
        .expect("store")
        .expect("approved");
    store
        .apply(&application(game.id, bo, "Lyra"), &[])
        .await
        .expect("store")
        .expect("applied");
    let mine = store.my_games(bo, None, 10).await.expect("mine");
    assert_eq!(mine.len(), 1);
    assert!(mine[0].seat.is_none() && mine[0].application.is_some());
    let change = |from, to| StateChange {
        id: Uuid::now_v7(),
        game_id: game.id,
        from,
        to,
        actor_id: None,
        reason: "deadline".into(),
        at: t(100),
        notices: Vec::new(),
    };
    let started = store
        .transition_game(&change(GameState::Enrolling, GameState::Starting), None)
        .await
        .expect("store")
        .expect("moved");
    assert_eq!(started.closed.len(), 1, "Bo's pending application closed");
    assert_eq!(started.closed[0].status, ApplicationStatus::Closed);
    assert_eq!(started.seats.len(), 1);
    assert!(store.race_name("lyra").await.expect("read").is_none());
    assert!(store.race_name("vega").await.expect("read").is_some());
    assert!(store.my_games(bo, None, 10).await.expect("mine").is_empty());
    let ann_games = store.my_games(ann, None, 10).await.expect("mine");
    assert_eq!(
        ann_games[0].seat.as_ref().map(|s| s.race_name.as_str()),
        Some("Vega")
    );
    assert_eq!(
        store.my_games(owner, None, 10).await.expect("mine").len(),
        1
    );
    let resigned = store
        .resign(game.id, ann, t(110))
        .await
        .expect("store")
        .expect("a seat");
    assert_eq!(resigned.status, SeatStatus::Resigned);
    assert!(
        store
            .resign(game.id, ann, t(111))
            .await
            .expect("store")
            .is_none()
    );
    store
        .transition_game(&change(GameState::Starting, GameState::Cancelled), None)
        .await
        .expect("store")
        .expect("moved");
    assert!(
        store.race_name("vega").await.expect("read").is_none(),
        "the end frees names"
    );
    assert_eq!(
        store.seats(game.id).await.expect("seats").len(),
        1,
        "seats stay for history"
    );
}

async fn racing_approvals_never_overfill_and_a_name_is_held_once(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let owner = member(&db).await;
    let game = db
        .lobby()
        .create_game(&new_game(owner, 10), owner)
        .await
        .expect("create");
    // Twenty applicants, each pending, then twenty approvals at once.
    let mut ids = Vec::new();
    for i in 0..20 {
        let who = member(&db).await;
        let a = db
            .lobby()
            .apply(&application(game.id, who, &format!("Racer {i}")), &[])
            .await
            .expect("store");
        match a {
            Ok(a) => ids.push(a.application.id),
            Err(e) => panic!("applicant {i}: {e}"),
        }
    }
    let db = Arc::new(db);
    let approvals = ids.iter().map(|id| {
        let db = db.clone();
        let (game, id) = (game.id, *id);
        tokio::spawn(async move { db.lobby().approve(game, id, t(30), &[]).await })
    });
    let outcomes = futures::future::join_all(approvals).await;
    let (mut seated, mut full) = (0, 0);
    for outcome in outcomes {
        match outcome.expect("task").expect("store") {
            Ok(_) => seated += 1,
            Err(SeatRefusal::Full) => full += 1,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!((seated, full), (10, 10));
    assert_eq!(
        db.lobby().game(game.id).await.expect("game").seats_taken,
        10
    );
    assert_eq!(db.lobby().seats(game.id).await.expect("seats").len(), 10);

    // Ten players apply for one name in ten games at once: one gets it.
    let mut games = Vec::new();
    for _ in 0..10 {
        let g = db
            .lobby()
            .create_game(&new_game(owner, 4), owner)
            .await
            .expect("create");
        games.push((g.id, member(&db).await));
    }
    let applies = games.into_iter().map(|(game, who)| {
        let db = db.clone();
        tokio::spawn(async move {
            db.lobby()
                .apply(&application(game, who, "Unique"), &[])
                .await
        })
    });
    let outcomes = futures::future::join_all(applies).await;
    let mut won = 0;
    for outcome in outcomes {
        match outcome.expect("task").expect("store") {
            Ok(_) => won += 1,
            Err(SeatRefusal::NameHeld(NameHold::Pending)) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(won, 1);
}

async fn seats_need_a_real_game(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let who = member(&db).await;
    let sql =
        "INSERT INTO game_players (id, game_id, account_id, is_bot, race_name, status, joined_at)
               VALUES ($1, $2, $3, FALSE, 'X', 'active', $4)";
    let invented = turnbase_testkit::on_pool!(&db, |pool| sqlx::query(sql)
        .bind(Uuid::now_v7())
        .bind(Uuid::now_v7())
        .bind(who)
        .bind(t(0))
        .execute(pool)
        .await
        .map(drop));
    let err = invented.expect_err("a seat in a game that does not exist");
    assert!(
        err.to_string().to_lowercase().contains("foreign key"),
        "{err}"
    );
    let game = seat_in_new_game(&db, who).await;
    let seats = db.lobby().seats(game).await.expect("seats");
    assert_eq!(seats[0].account_id, Some(who));
}

#[test]
fn the_state_machine_allows_exactly_its_transitions() {
    use GameState as S;
    use Transition as T;
    let legal = [
        (S::Enrolling, T::CloseEnrolment, S::Starting),
        (S::Enrolling, T::Cancel, S::Cancelled),
        (S::Starting, T::Begin, S::Running),
        (S::Starting, T::FailStart, S::StartFailed),
        (S::Starting, T::Cancel, S::Cancelled),
        (S::StartFailed, T::RetryStart, S::Starting),
        (S::StartFailed, T::Cancel, S::Cancelled),
        (S::Running, T::Pause, S::Paused),
        (S::Running, T::Finish, S::Finished),
        (S::Running, T::Cancel, S::Cancelled),
        (S::Paused, T::Resume, S::Running),
        (S::Paused, T::Finish, S::Finished),
        (S::Paused, T::Cancel, S::Cancelled),
    ];
    for from in GameState::ALL {
        for transition in Transition::ALL {
            let want = legal
                .iter()
                .find(|(f, t, _)| *f == from && *t == transition)
                .map(|(_, _, to)| *to);
            match (from.apply(transition), want) {
                (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} {transition:?}"),
                (Err(e), None) => {
                    assert_eq!((e.from, e.transition), (from, transition));
                    assert!(e.to_string().contains(from.as_str()), "{e}");
                }
                (got, want) => panic!("{from:?} {transition:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}

turnbase_testkit::both_backends!(
    flavor = "multi_thread";
    games_are_created_listed_edited_and_moved_once,
    enrolment_keeps_names_unique_and_seats_counted,
    closing_enrolment_closes_applications_and_ending_frees_names,
    racing_approvals_never_overfill_and_a_name_is_held_once,
    seats_need_a_real_game,
);
