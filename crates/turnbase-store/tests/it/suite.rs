//! The shared store suite: the same cases on SQLite and Postgres.

use chrono::{TimeZone as _, Utc};
use turnbase_store::{Database, StoreError};
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

async fn open(backend: DbKind) -> (TestDb, Database) {
    TestDb::open_migrated(backend).await
}

async fn instance_is_created_once_and_counted(backend: DbKind) {
    let (_guard, db) = open(backend).await;
    assert!(matches!(
        db.instance().instance().await,
        Err(StoreError::NotFound)
    ));

    let first_id = Uuid::now_v7();
    let t1 = Utc
        .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("valid time");
    let first = db
        .instance()
        .record_start(first_id, t1, "0.1.0")
        .await
        .expect("first start");
    assert_eq!(first.id, first_id);
    assert_eq!(first.created_at, t1);
    assert_eq!(first.start_count, 1);

    let t2 = t1 + chrono::Duration::hours(5);
    let second = db
        .instance()
        .record_start(Uuid::now_v7(), t2, "0.2.0")
        .await
        .expect("second start");
    assert_eq!(second.id, first_id, "the installation keeps its id");
    assert_eq!(second.created_at, t1);
    assert_eq!(second.last_started_at, t2);
    assert_eq!(second.last_version, "0.2.0");
    assert_eq!(second.start_count, 2);
    assert_eq!(db.instance().instance().await.expect("read back"), second);
    db.close().await;
}

async fn migrating_twice_applies_nothing_the_second_time(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    let all: Vec<String> = turnbase_store::SQLITE_MIGRATIONS
        .iter()
        .map(|m| m.label())
        .collect();
    let first = db.migrate().await.expect("first");
    assert_eq!(first.applied, all);
    assert!(first.already.is_empty());
    let second = db.migrate().await.expect("second");
    assert!(second.applied.is_empty());
    assert_eq!(second.already, all);
    db.close().await;
}

async fn concurrent_migrations_do_not_collide(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let a = Database::connect(&test_db.options)
        .await
        .expect("connect a");
    let b = Database::connect(&test_db.options)
        .await
        .expect("connect b");
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.expect("a migrates"), rb.expect("b migrates"));
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        turnbase_store::SQLITE_MIGRATIONS.len(),
        "each migration is applied by exactly one process: {ra:?} {rb:?}"
    );
    a.close().await;
    b.close().await;
}

async fn ping_answers_until_closed(backend: DbKind) {
    let (_guard, db) = open(backend).await;
    db.ping().await.expect("open database answers");
    db.close().await;
    assert!(db.ping().await.is_err(), "a closed pool does not answer");
}

turnbase_testkit::both_backends!(
    instance_is_created_once_and_counted,
    migrating_twice_applies_nothing_the_second_time,
    concurrent_migrations_do_not_collide,
    ping_answers_until_closed,
);

/// A pooled connection whose server process ended while it sat idle is
/// noticed and replaced before use, so the caller never sees it. (Only
/// connections idle for a while are pinged before use; one used a moment
/// ago is handed out at once.)
#[tokio::test]
async fn postgres_replaces_an_idle_connection_the_server_ended() {
    let test_db = TestDb::new(DbKind::Postgres).await;
    let db = Database::connect(&turnbase_store::DatabaseOptions::Postgres {
        url: test_db.url.clone().expect("a Postgres URL"),
        max_connections: 1,
        connect_timeout: std::time::Duration::from_secs(10),
        statement_timeout: std::time::Duration::from_secs(30),
    })
    .await
    .expect("connect");
    let Database::Postgres(pg) = &db else {
        unreachable!("connected to Postgres")
    };
    let pid = "SELECT pg_backend_pid()";
    let first: i32 = sqlx::query_scalar(pid)
        .fetch_one(pg.pool())
        .await
        .expect("pid");
    // The connection goes back to the pool in a task of its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pg.pool().num_idle() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never back in the pool"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let admin = Database::connect(&test_db.options).await.expect("connect");
    let Database::Postgres(admin_pg) = &admin else {
        unreachable!("connected to Postgres")
    };
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(admin_pg.pool())
        .await
        .expect("terminate");
    assert!(ended);
    // Idle for longer than the pool hands out connections unchecked.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let second: i32 = sqlx::query_scalar(pid)
        .fetch_one(pg.pool())
        .await
        .expect("the pool replaces the ended connection");
    assert_ne!(first, second);
    admin.close().await;
    db.close().await;
}
