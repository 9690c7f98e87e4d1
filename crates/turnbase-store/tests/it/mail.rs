//! The mail outbox store on both backends.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use turnbase_store::mail::{
    AfterAttempt, AttemptOutcome, MailFilter, NewAttempt, NewMail, ShownStatus,
};
use turnbase_store::{Database, StoreError};
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(300);

fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

fn new_mail(key: Option<&str>, at: i64) -> NewMail {
    NewMail {
        id: Uuid::now_v7(),
        idempotency_key: key.map(String::from),
        to: "player@example.org".into(),
        subject: "Your turn".into(),
        text_body: "Turn 3 has run.".into(),
        html_body: Some("<p>Turn 3 has run.</p>".into()),
        created_at: t(at),
        masked_subject: None,
    }
}

async fn open(backend: DbKind) -> (TestDb, Database) {
    TestDb::open_migrated(backend).await
}

async fn enqueue(db: &Database, mail: &NewMail) -> Uuid {
    let mut tx = db.begin().await.expect("begin");
    let id = db
        .mail()
        .enqueue(&mut tx, mail)
        .await
        .expect("enqueue")
        .id();
    tx.commit().await.expect("commit");
    id
}

fn attempt(outcome: &'static str, at: i64) -> NewAttempt {
    NewAttempt {
        id: Uuid::now_v7(),
        started_at: t(at),
        finished_at: t(at),
        outcome: AttemptOutcome::parse(outcome).expect("an outcome"),
        smtp_code: Some(if outcome == "sent" { 250 } else { 451 }),
        error: (outcome != "sent").then(|| "try later".to_string()),
    }
}

async fn enqueue_commits_or_rolls_back_with_the_caller(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let kept = new_mail(None, 0);
    let dropped = new_mail(None, 0);
    enqueue(&db, &kept).await;
    let mut tx = db.begin().await.expect("begin");
    db.mail().enqueue(&mut tx, &dropped).await.expect("enqueue");
    tx.rollback().await.expect("rollback");
    let all = db
        .mail()
        .list_mail(&MailFilter {
            limit: 10,
            ..MailFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), [kept.id]);
    assert!(matches!(
        db.mail().mail(dropped.id).await,
        Err(StoreError::NotFound)
    ));
    db.close().await;
}

async fn idempotency_key_makes_a_second_enqueue_a_no_op(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let first = new_mail(Some("login-code:42"), 0);
    let second = new_mail(Some("login-code:42"), 1);
    let mut tx = db.begin().await.expect("begin");
    let a = db.mail().enqueue(&mut tx, &first).await.expect("first");
    let b = db.mail().enqueue(&mut tx, &second).await.expect("second");
    tx.commit().await.expect("commit");
    assert_eq!(a, turnbase_store::mail::Enqueued::Created(first.id));
    assert_eq!(b, turnbase_store::mail::Enqueued::Existing(first.id));
    assert_eq!(db.mail().mail_queue_stats().await.expect("stats").depth, 1);
    db.close().await;
}

async fn claims_lease_and_reclaim_after_expiry(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let a = enqueue(&db, &new_mail(None, 0)).await;
    let b = enqueue(&db, &new_mail(None, 1)).await;
    let store = db.mail();
    let first = store
        .claim_due_mail(t(10), LEASE, "w1", 1)
        .await
        .expect("claim");
    assert_eq!(
        first.iter().map(|m| m.id).collect::<Vec<_>>(),
        [a],
        "oldest due first"
    );
    let second = store
        .claim_due_mail(t(10), LEASE, "w2", 10)
        .await
        .expect("claim");
    assert_eq!(
        second.iter().map(|m| m.id).collect::<Vec<_>>(),
        [b],
        "a leased row is not claimed again"
    );
    assert!(
        store
            .claim_due_mail(t(20), LEASE, "w3", 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // w1 vanished: once its lease is over, the row is claimable again.
    let reclaimed = store
        .claim_due_mail(t(10 + 301), LEASE, "w3", 10)
        .await
        .expect("claim");
    let ids: HashSet<Uuid> = reclaimed.iter().map(|m| m.id).collect();
    assert_eq!(ids, HashSet::from([a, b]));
    // The old owner cannot finish what it no longer holds.
    assert!(
        !store
            .finish_attempt(a, "w1", &attempt("sent", 11), AfterAttempt::Sent)
            .await
            .expect("finish")
    );
    assert!(
        store
            .finish_attempt(a, "w3", &attempt("sent", 312), AfterAttempt::Sent)
            .await
            .expect("finish")
    );
    db.close().await;
}

async fn attempts_retries_failures_and_release(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let id = enqueue(&db, &new_mail(None, 0)).await;
    let store = db.mail();
    store
        .claim_due_mail(t(0), LEASE, "w", 1)
        .await
        .expect("claim");
    assert!(
        store
            .finish_attempt(
                id,
                "w",
                &attempt("transient", 1),
                AfterAttempt::RetryAt(t(60))
            )
            .await
            .expect("finish")
    );
    let (m, attempts) = store.mail(id).await.expect("show");
    assert_eq!(
        (m.shown_status().as_str(), m.attempts, m.next_attempt_at),
        ("retrying", 1, t(60))
    );
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0].attempt,
            attempts[0].outcome.as_str(),
            attempts[0].smtp_code
        ),
        (1, "transient", Some(451))
    );
    assert!(
        store
            .claim_due_mail(t(59), LEASE, "w", 1)
            .await
            .expect("claim")
            .is_empty(),
        "not due yet"
    );
    let claimed = store
        .claim_due_mail(t(60), LEASE, "w", 1)
        .await
        .expect("claim");
    assert_eq!(claimed[0].attempts, 1);
    // Shutdown: the row goes back without spending an attempt.
    store.release_mail(id, "w", t(60)).await.expect("release");
    let (m, _) = store.mail(id).await.expect("show");
    assert_eq!((m.shown_status().as_str(), m.attempts), ("retrying", 1));
    store
        .claim_due_mail(t(61), LEASE, "w", 1)
        .await
        .expect("claim");
    assert!(
        store
            .finish_attempt(id, "w", &attempt("permanent", 62), AfterAttempt::Failed)
            .await
            .expect("finish")
    );
    let (m, attempts) = store.mail(id).await.expect("show");
    assert_eq!(
        (m.status.as_str(), m.attempts, attempts.len()),
        ("failed", 2, 2)
    );
    assert_eq!(m.last_error.as_deref(), Some("try later"));
    let failed = store
        .list_mail(&MailFilter {
            status: ShownStatus::parse("failed"),
            limit: 10,
            ..MailFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(failed.len(), 1);
    // An admin retry makes it due with a fresh budget; attempts keep counting.
    let retried = store.retry_mail(id, t(100)).await.expect("retry");
    assert_eq!((retried.status.as_str(), retried.attempts), ("pending", 0));
    assert!(matches!(
        store.retry_mail(id, t(100)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.retry_mail(Uuid::now_v7(), t(100)).await,
        Err(StoreError::NotFound)
    ));
    store
        .claim_due_mail(t(100), LEASE, "w", 1)
        .await
        .expect("claim");
    assert!(
        store
            .finish_attempt(id, "w", &attempt("sent", 101), AfterAttempt::Sent)
            .await
            .expect("finish")
    );
    let (m, attempts) = store.mail(id).await.expect("show");
    assert_eq!((m.status.as_str(), m.sent_at), ("sent", Some(t(101))));
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    db.close().await;
}

async fn listing_filters_and_pages(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut mail = new_mail(None, i);
        if i == 3 {
            mail.to = "cy@example.org".into();
        }
        ids.push(enqueue(&db, &mail).await);
    }
    let store = db.mail();
    let to_cy = store
        .list_mail(&MailFilter {
            to: Some("cy@example.org".into()),
            limit: 10,
            ..MailFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        to_cy.iter().map(|m| m.id).collect::<Vec<_>>(),
        [ids[3]],
        "only the mail to that address"
    );
    let page1 = store
        .list_mail(&MailFilter {
            limit: 2,
            ..MailFilter::default()
        })
        .await
        .expect("list");
    let page2 = store
        .list_mail(&MailFilter {
            limit: 2,
            before: page1.last().map(|m| m.id),
            ..MailFilter::default()
        })
        .await
        .expect("list");
    let page3 = store
        .list_mail(&MailFilter {
            limit: 2,
            before: page2.last().map(|m| m.id),
            ..MailFilter::default()
        })
        .await
        .expect("list");
    let seen: Vec<Uuid> = page1
        .iter()
        .chain(&page2)
        .chain(&page3)
        .map(|m| m.id)
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let pending = store
        .list_mail(&MailFilter {
            status: ShownStatus::parse("pending"),
            limit: 10,
            ..MailFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(pending.len(), 5);
    let stats = store.mail_queue_stats().await.expect("stats");
    assert_eq!((stats.depth, stats.oldest_pending), (5, Some(t(0))));
    db.close().await;
}

async fn concurrent_claimers_never_share_a_row(backend: DbKind) {
    const ROWS: usize = 2_000;
    let (_g, db) = open(backend).await;
    let mut tx = db.begin().await.expect("begin");
    for i in 0..ROWS {
        db.mail()
            .enqueue(&mut tx, &new_mail(None, i as i64 % 100))
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let mut workers = Vec::new();
    for w in 0..4 {
        let db = db.clone();
        workers.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let claimed = db
                    .mail()
                    .claim_due_mail(t(1000), LEASE, &owner, 25)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return mine;
                }
                for m in claimed {
                    assert!(
                        db.mail()
                            .finish_attempt(
                                m.id,
                                &owner,
                                &attempt("sent", 1001),
                                AfterAttempt::Sent
                            )
                            .await
                            .expect("finish")
                    );
                    mine.push(m.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let unique: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), ROWS, "every row claimed exactly once");
    assert_eq!(unique.len(), ROWS);
    assert_eq!(
        db.mail().mail_queue_stats().await.expect("stats").depth,
        0,
        "none left"
    );
    db.close().await;
}

/// An id made at `t(secs)`, as the mail service makes them at enqueue.
fn id_at(secs: i64) -> Uuid {
    let secs = u64::try_from(1_800_000_000 + secs).expect("after 1970");
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, 0))
}

async fn attempt_rows(db: &Database) -> i64 {
    let sql = "SELECT COUNT(*) FROM mail_attempts";
    turnbase_testkit::on_pool!(db, |pool| sqlx::query_scalar(sql).fetch_one(pool).await)
        .expect("count")
}

async fn old_finished_mail_is_purged_with_its_attempts(backend: DbKind) {
    const DAY: i64 = 86_400;
    let (_guard, db) = open(backend).await;
    let mut ids = Vec::new();
    for (at, key) in [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (10 * DAY, "e")] {
        let mail = NewMail {
            id: id_at(at),
            ..new_mail(Some(key), at)
        };
        ids.push(enqueue(&db, &mail).await);
    }
    let [sent_old, failed_old, pending_old, sending_old, sent_new] = ids[..] else {
        unreachable!("five mails")
    };
    let now = 10 * DAY + 1;
    let claimed = db
        .mail()
        .claim_due_mail(t(now), LEASE, "w", 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 5);
    for (id, outcome, after) in [
        (sent_old, "sent", AfterAttempt::Sent),
        (failed_old, "permanent", AfterAttempt::Failed),
        (sent_new, "sent", AfterAttempt::Sent),
    ] {
        assert!(
            db.mail()
                .finish_attempt(id, "w", &attempt(outcome, now), after)
                .await
                .expect("finish")
        );
    }
    db.mail()
        .release_mail(pending_old, "w", t(now))
        .await
        .expect("release");
    assert_eq!(attempt_rows(&db).await, 3);

    // Finished mail enqueued more than five days ago goes, in batches.
    let before = t(5 * DAY);
    assert_eq!(
        db.mail()
            .purge_finished_mail(before, 1)
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        db.mail()
            .purge_finished_mail(before, 100)
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        db.mail()
            .purge_finished_mail(before, 100)
            .await
            .expect("purge"),
        0
    );
    let left: HashSet<Uuid> = db
        .mail()
        .list_mail(&MailFilter {
            limit: 100,
            ..MailFilter::default()
        })
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        left,
        HashSet::from([pending_old, sending_old, sent_new]),
        "unfinished and recent mail stays"
    );
    assert!(matches!(
        db.mail().mail(sent_old).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        attempt_rows(&db).await,
        1,
        "only the recent mail's attempt is left"
    );
    db.close().await;
}

/// Runs SQL with no parameters, on either backend.
async fn execute(db: &Database, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql);
    turnbase_testkit::on_pool!(db, |pool| sqlx::raw_sql(sql).execute(pool).await.map(drop))
        .expect("execute");
}

/// A mail with attempts recorded before attempts were counted on the mail
/// itself (migration 0004) keeps numbering on from its last attempt.
async fn attempt_numbers_continue_across_the_count_migration(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    let (all, before) = match &db {
        Database::Sqlite(s) => (
            turnbase_store::SQLITE_MIGRATIONS,
            s.migrate(&turnbase_store::SQLITE_MIGRATIONS[..3]).await,
        ),
        Database::Postgres(p) => (
            turnbase_store::POSTGRES_MIGRATIONS,
            p.migrate(&turnbase_store::POSTGRES_MIGRATIONS[..3]).await,
        ),
    };
    before.expect("migrate to 0003");
    assert_eq!(all[3].label(), "0004_mail_attempt_count");
    let id = Uuid::now_v7();
    // SQLite keeps UUIDs as 16-byte blobs, Postgres as its own type.
    let uuid = |u: Uuid| match &db {
        Database::Sqlite(_) => format!("X'{}'", u.simple()),
        Database::Postgres(_) => format!("'{u}'"),
    };
    // Written as 0003 knew the outbox (enqueue writes later columns).
    execute(
        &db,
        &format!(
            "INSERT INTO mail_outbox (id, to_address, subject, text_body, status, attempts, next_attempt_at, created_at)
             VALUES ({}, 'player@example.org', 'Your turn', 'Turn 3 has run.', 'pending', 0,
                     '2027-01-15T08:00:00Z', '2027-01-15T08:00:00Z')",
            uuid(id),
        ),
    )
    .await;
    for n in 1..=2 {
        execute(
            &db,
            &format!(
                "INSERT INTO mail_attempts (id, mail_id, attempt, started_at, finished_at, outcome, smtp_code, error)
                 VALUES ({}, {}, {n}, '2027-01-15T08:00:0{n}Z', '2027-01-15T08:00:0{n}Z', 'transient', 451, 'later')",
                uuid(Uuid::now_v7()),
                uuid(id),
            ),
        )
        .await;
    }
    let report = db.migrate().await.expect("migrate to the last");
    assert_eq!(
        report.applied,
        [
            "0004_mail_attempt_count",
            "0005_mail_secrets",
            "0006_lobby",
            "0007_runtime",
            "0008_turns",
            "0009_notifications"
        ]
    );
    let store = db.mail();
    assert_eq!(
        store
            .claim_due_mail(t(10), LEASE, "w", 1)
            .await
            .expect("claim")
            .len(),
        1
    );
    assert!(
        store
            .finish_attempt(id, "w", &attempt("sent", 11), AfterAttempt::Sent)
            .await
            .expect("finish")
    );
    let (_, attempts) = store.mail(id).await.expect("show");
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.attempt, a.outcome.as_str()))
            .collect::<Vec<_>>(),
        [(1, "transient"), (2, "transient"), (3, "sent")]
    );
    db.close().await;
}

/// Only finished secret-bearing mail past the cut-off loses its body (and
/// the unmasked subject); its record stays, and it can no longer be retried.
async fn secret_bodies_are_erased_after_delivery_only(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let secret = |at| NewMail {
        subject: "Code 123456".into(),
        text_body: "Your code is 123456".into(),
        masked_subject: Some("Code ******".into()),
        ..new_mail(None, at)
    };
    let sent = enqueue(&db, &secret(0)).await;
    let failed = enqueue(&db, &secret(0)).await;
    let sent_late = enqueue(&db, &secret(0)).await;
    let pending = enqueue(&db, &secret(0)).await;
    let plain = enqueue(&db, &new_mail(None, 0)).await;
    let claimed = db
        .mail()
        .claim_due_mail(t(1), LEASE, "w", 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 5);
    assert_eq!(
        claimed
            .iter()
            .find(|m| m.id == sent)
            .map(|m| m.subject.as_str()),
        Some("Code 123456"),
        "the worker sends the real subject"
    );
    for (id, at, after) in [
        (sent, 10, AfterAttempt::Sent),
        (failed, 10, AfterAttempt::Failed),
        (sent_late, 500, AfterAttempt::Sent),
        (plain, 10, AfterAttempt::Sent),
    ] {
        let done = db
            .mail()
            .finish_attempt(id, "w", &attempt("sent", at), after)
            .await
            .expect("finish");
        assert!(done);
    }
    db.mail()
        .release_mail(pending, "w", t(2))
        .await
        .expect("release");
    let listed = db
        .mail()
        .list_mail(&MailFilter {
            limit: 10,
            ..MailFilter::default()
        })
        .await
        .expect("list");
    for m in &listed {
        let masked = m.id != plain;
        assert_eq!(m.carries_secret, masked, "{m:?}");
        if masked {
            assert_eq!(m.subject, "Code ******", "shown masked: {m:?}");
        }
    }
    // The failed mail's last lease ended at 1 + 300 s: past a cut-off at 400.
    let erased = db
        .mail()
        .erase_secret_bodies(t(400), t(1000), 100)
        .await
        .expect("erase");
    assert_eq!(erased, 2, "the sent and the failed mail before the cut-off");
    let again = db
        .mail()
        .erase_secret_bodies(t(400), t(1000), 100)
        .await
        .expect("erase");
    assert_eq!(again, 0, "each body is erased once");
    for id in [sent, failed] {
        let (record, attempts) = db.mail().mail(id).await.expect("the record stays");
        assert_eq!(record.erased_at, Some(t(1000)));
        assert_eq!(attempts.len(), 1);
    }
    for id in [sent_late, pending, plain] {
        let (record, _) = db.mail().mail(id).await.expect("record");
        assert_eq!(record.erased_at, None, "{record:?}");
    }
    // What a worker would send for the pending one is still whole.
    let reclaimed = db
        .mail()
        .claim_due_mail(t(3), LEASE, "w", 10)
        .await
        .expect("claim");
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].text_body, "Your code is 123456");
    assert!(matches!(
        db.mail().retry_mail(failed, t(1000)).await,
        Err(StoreError::Conflict(m)) if m.contains("erased")
    ));
    db.close().await;
}

turnbase_testkit::both_backends!(
    secret_bodies_are_erased_after_delivery_only,
    enqueue_commits_or_rolls_back_with_the_caller,
    idempotency_key_makes_a_second_enqueue_a_no_op,
    claims_lease_and_reclaim_after_expiry,
    attempts_retries_failures_and_release,
    listing_filters_and_pages,
    concurrent_claimers_never_share_a_row,
    old_finished_mail_is_purged_with_its_attempts,
    attempt_numbers_continue_across_the_count_migration,
);

/// The number of sequential scans Postgres has counted on `mail_outbox`.
async fn outbox_seq_scans(pool: &sqlx::PgPool) -> i64 {
    // Statistics reach the shared counters when a session goes idle; make
    // this session's reach them now.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .expect("flush");
    sqlx::query_scalar("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'mail_outbox'")
        .fetch_one(pool)
        .await
        .expect("stats")
}

/// A claim finds its rows through indexes whatever plan Postgres caches
/// for it. (With `id IN (subquery)`, the generic plan for a large backlog
/// joined the claimed ids against a sequential scan of the whole outbox,
/// sent rows and all, so each claim cost time in proportion to the table.)
#[tokio::test]
async fn postgres_claims_never_scan_the_whole_outbox() {
    let test_db = TestDb::new(DbKind::Postgres).await;
    let url = test_db.url.clone().expect("a Postgres URL");
    let separator = if url.contains('?') { '&' } else { '?' };
    let db = Database::connect(&turnbase_store::DatabaseOptions::Postgres {
        url: format!("{url}{separator}options=-c%20plan_cache_mode%3Dforce_generic_plan"),
        max_connections: 1,
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(30),
    })
    .await
    .expect("connect");
    db.migrate().await.expect("migrate");
    let Database::Postgres(pg) = &db else {
        unreachable!("connected to Postgres")
    };
    // A backlog: 20,000 mails due at once (written in one statement to keep
    // the test quick), with statistics that know it.
    sqlx::query(
        "INSERT INTO mail_outbox (id, to_address, subject, text_body, html_body, status,
                                  attempts, next_attempt_at, created_at)
         SELECT gen_random_uuid(), 'player@example.org', 'Your turn', 'Turn 3 has run.',
                NULL, 'pending', 0, $1, $1
         FROM generate_series(1, 20000)",
    )
    .bind(t(0))
    .execute(pg.pool())
    .await
    .expect("backlog");
    sqlx::query("ANALYZE mail_outbox")
        .execute(pg.pool())
        .await
        .expect("analyze");

    let before = outbox_seq_scans(pg.pool()).await;
    for _ in 0..5 {
        let claimed = db
            .mail()
            .claim_due_mail(t(3_000), LEASE, "w", 10)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 10);
    }
    assert_eq!(
        outbox_seq_scans(pg.pool()).await,
        before,
        "claims scanned the outbox sequentially"
    );
    db.close().await;
}

/// On SQLite every write waits for this process's turn: a statement that
/// does not take it fails (its connections only read), and those that do
/// (releasing, retrying, purging mail) wait behind a write transaction
/// longer than the busy timeout instead of failing with "database is
/// locked" (they used to skip the turn).
#[tokio::test]
async fn sqlite_writes_cannot_skip_the_write_turn() {
    let test_db = TestDb::new(DbKind::Sqlite).await;
    let turnbase_store::DatabaseOptions::Sqlite { path, .. } = &test_db.options else {
        unreachable!("a SQLite database")
    };
    let db = Database::connect(&turnbase_store::DatabaseOptions::Sqlite {
        path: path.clone(),
        busy_timeout: Duration::from_millis(100),
        max_connections: 4,
    })
    .await
    .expect("connect");
    db.migrate().await.expect("migrate");
    let Database::Sqlite(lite) = &db else {
        unreachable!("SQLite")
    };
    let refused = sqlx::query("DELETE FROM mail_outbox")
        .execute(lite.reader())
        .await
        .expect_err("the reading connections cannot write");
    assert!(
        refused.to_string().contains("readonly") || refused.to_string().contains("read-only"),
        "{refused}"
    );

    let sent = enqueue(&db, &new_mail(None, 0)).await;
    let failed = enqueue(&db, &new_mail(None, 0)).await;
    let held = enqueue(&db, &new_mail(None, 0)).await;
    db.mail()
        .claim_due_mail(t(1), LEASE, "w", 10)
        .await
        .expect("claim");
    for (id, after) in [(sent, AfterAttempt::Sent), (failed, AfterAttempt::Failed)] {
        db.mail()
            .finish_attempt(id, "w", &attempt("sent", 2), after)
            .await
            .expect("finish");
    }
    // A long write transaction holds the turn for five busy timeouts.
    let tx = db.begin().await.expect("begin");
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.commit().await.expect("commit");
    });
    let (released, retried, purged) = tokio::join!(
        db.mail().release_mail(held, "w", t(3)),
        db.mail().retry_mail(failed, t(3)),
        db.mail().purge_finished_mail(t(10 * 86_400), 10),
    );
    released.expect("release waits its turn");
    retried.expect("retry waits its turn");
    assert_eq!(purged.expect("purge waits its turn"), 1, "the sent mail");
    holder.await.expect("holder");
    db.close().await;
}
