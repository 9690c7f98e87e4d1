//! The runtime store on both backends: jobs queued with the lobby's moves,
//! one live job per game and kind, claims under a lease (a job whose
//! worker died is taken over when its lease ends: a backend killed with
//! jobs under way resumes them), outcomes recorded by the lease holder
//! only, hand-back without spending an attempt, and records.

use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use turnbase_store::Database;
use turnbase_store::lobby::{GameState, StateChange};
use turnbase_store::runtime::{JobEnd, JobKind, JobStatus, RecordState, RuntimeRecord};
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

const LEASE: Duration = Duration::from_secs(60);

async fn move_game(db: &Database, game: Uuid, from: GameState, to: GameState, at: i64) {
    db.lobby()
        .transition_game(
            &StateChange {
                id: Uuid::now_v7(),
                game_id: game,
                from,
                to,
                actor_id: None,
                reason: "test".into(),
                at: t(at),
                notices: Vec::new(),
            },
            None,
        )
        .await
        .expect("store")
        .expect("moved");
}

async fn jobs_follow_the_lobby_and_leases_hand_over(backend: DbKind) {
    let (_g, db) = TestDb::open_migrated(backend).await;
    let owner = crate::lobby::member(&db).await;
    let game = db
        .lobby()
        .create_game(&crate::lobby::new_game(owner, 4), owner)
        .await
        .expect("game")
        .id;
    let store = db.runtime();
    assert_eq!(store.runtime_queue_depth().await.expect("depth"), 0);
    move_game(&db, game, GameState::Enrolling, GameState::Starting, 10).await;
    assert_eq!(
        store.runtime_queue_depth().await.expect("depth"),
        1,
        "starting queues a start"
    );
    assert!(
        !store
            .queue_runtime_job(game, JobKind::Start, t(11), t(11))
            .await
            .expect("queue"),
        "one live start per game"
    );

    // Worker A claims and dies; B takes the job over when the lease ends.
    let a = store
        .claim_runtime_jobs(t(20), LEASE, "a", 10)
        .await
        .expect("claim");
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].game_id, a[0].kind, a[0].attempts),
        (game, JobKind::Start, 0)
    );
    assert!(
        store
            .claim_runtime_jobs(t(21), LEASE, "b", 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let b = store
        .claim_runtime_jobs(t(80), LEASE, "b", 10)
        .await
        .expect("claim");
    assert_eq!(b.iter().map(|j| j.id).collect::<Vec<_>>(), [a[0].id]);
    assert!(
        !store
            .finish_runtime_job(a[0].id, "a", &JobEnd::Done, t(81))
            .await
            .expect("finish"),
        "A no longer holds it"
    );
    // B hands it back at shutdown: no attempt spent.
    store
        .release_runtime_job(a[0].id, "b", t(82))
        .await
        .expect("release");
    let c = store
        .claim_runtime_jobs(t(82), LEASE, "c", 10)
        .await
        .expect("claim");
    assert_eq!(c[0].attempts, 0);
    let retry_at = t(200);
    assert!(
        store
            .finish_runtime_job(
                c[0].id,
                "c",
                &JobEnd::RetryAt(retry_at, "not yet".into()),
                t(83)
            )
            .await
            .expect("finish")
    );
    assert!(
        store
            .claim_runtime_jobs(t(199), LEASE, "c", 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let d = store
        .claim_runtime_jobs(t(200), LEASE, "d", 10)
        .await
        .expect("claim");
    assert_eq!(d[0].attempts, 1);
    assert!(
        store
            .finish_runtime_job(d[0].id, "d", &JobEnd::Done, t(201))
            .await
            .expect("finish")
    );
    let jobs = store.runtime_jobs(game).await.expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].status, jobs[0].attempts), (JobStatus::Done, 2));
    assert_eq!(jobs[0].finished_at, Some(t(201)));
    assert_eq!(store.runtime_queue_depth().await.expect("depth"), 0);

    // Records.
    let record = RuntimeRecord {
        game_id: game,
        engine: "conquest".into(),
        driver: "process".into(),
        placement: "per_game".into(),
        address: Some("http://127.0.0.1:1".into()),
        handle: Some("42".into()),
        state: RecordState::Ready,
        seed: -7,
        restarts: 0,
        last_health_at: Some(t(201)),
        last_error: None,
        created_at: t(100),
        updated_at: t(201),
    };
    store.put_runtime_record(&record).await.expect("put");
    let again = RuntimeRecord {
        restarts: 1,
        ..record.clone()
    };
    store.put_runtime_record(&again).await.expect("replace");
    assert_eq!(
        store.runtime_record(game).await.expect("read"),
        Some(again.clone())
    );
    assert_eq!(
        store
            .runtime_records(Some(RecordState::Ready), 10)
            .await
            .expect("list"),
        [again]
    );
    assert!(
        store
            .runtime_records(Some(RecordState::Failed), 10)
            .await
            .expect("list")
            .is_empty()
    );

    // Ending a game that started queues its stop; a failed start keeps
    // its reason on the game.
    move_game(&db, game, GameState::Starting, GameState::Running, 300).await;
    move_game(&db, game, GameState::Running, GameState::Cancelled, 301).await;
    let stop = store
        .claim_runtime_jobs(t(302), LEASE, "e", 10)
        .await
        .expect("claim");
    assert_eq!(stop[0].kind, JobKind::Stop);

    let other = db
        .lobby()
        .create_game(&crate::lobby::new_game(owner, 4), owner)
        .await
        .expect("game")
        .id;
    move_game(&db, other, GameState::Enrolling, GameState::Starting, 400).await;
    move_game(&db, other, GameState::Starting, GameState::StartFailed, 401).await;
    let failed = db.lobby().game(other).await.expect("game");
    assert_eq!(failed.start_error.as_deref(), Some("test"));
    move_game(
        &db,
        other,
        GameState::StartFailed,
        GameState::Cancelled,
        402,
    )
    .await;
    let stops: Vec<_> = store
        .runtime_jobs(other)
        .await
        .expect("jobs")
        .into_iter()
        .map(|j| j.kind)
        .collect();
    assert_eq!(stops, [JobKind::Start, JobKind::Stop]);
}

async fn one_backend_at_a_time_holds_a_worker_lease(backend: DbKind) {
    let (_g, db) = TestDb::open_migrated(backend).await;
    let store = db.runtime();
    let take = |owner: &'static str, now: i64| {
        let db = db.clone();
        async move {
            db.runtime()
                .take_worker_lease("reconciler", owner, t(now), t(now + 90))
                .await
                .expect("lease")
        }
    };
    assert!(take("a", 0).await);
    assert!(!take("b", 10).await, "a holds it");
    assert!(take("a", 30).await, "a renews it");
    assert!(!take("b", 119).await, "renewed until 120");
    assert!(take("b", 120).await, "run out: b takes over");
    assert!(!take("a", 121).await);
    assert!(
        store
            .take_worker_lease("other", "a", t(121), t(200))
            .await
            .expect("lease"),
        "leases are by name"
    );
}

turnbase_testkit::both_backends!(
    jobs_follow_the_lobby_and_leases_hand_over,
    one_backend_at_a_time_holds_a_worker_lease,
);
