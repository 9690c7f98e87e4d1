//! The mail worker inside the real backend process, killed with SIGKILL
//! again and again while it sends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use turnbase_store::Database;
use turnbase_store::mail::NewMail;
use turnbase_testkit::{DbKind, SmtpSink, TestDb};
use uuid::Uuid;

use crate::harness::Running;

const MAILS: usize = 1000;

async fn crash_test(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    db.migrate().await.expect("migrate");
    let mut tx = db.begin().await.expect("begin");
    let mut ids = Vec::with_capacity(MAILS);
    for i in 0..MAILS {
        let id = Uuid::now_v7();
        db.mail()
            .enqueue(
                &mut tx,
                &NewMail {
                    id,
                    idempotency_key: None,
                    to: format!("player{i}@example.org"),
                    subject: format!("Mail {i}"),
                    text_body: format!("Body {i}"),
                    html_body: None,
                    created_at: chrono::Utc::now(),
                    masked_subject: None,
                },
            )
            .await
            .expect("enqueue");
        ids.push(id);
    }
    tx.commit().await.expect("commit");

    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = crate::process::data_env(&dir);
    env.retain(|(k, _)| *k != "BACKEND_MAIL_DELIVERY");
    env.push(("BACKEND_SMTP_URL", sink.url()));
    env.push(("BACKEND_MAIL_LEASE", "1s".into()));
    env.push(("BACKEND_MAIL_WORKERS", "4".into()));
    // Small batches: each kill wastes at most a batch per slot.
    env.push(("BACKEND_MAIL_CLAIM_BATCH", "8".into()));
    env.push(("BACKEND_MAIL_POLL_INTERVAL", "100ms".into()));
    env.push(("BACKEND_LOG_LEVEL", "warn".into()));
    let database_url = match &test_db.url {
        Some(url) => url.clone(),
        None => format!("sqlite:{}", test_db.dir().join("turnbase.db").display()),
    };
    env.push(("BACKEND_DATABASE_URL", database_url));

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    loop {
        let mut backend_proc = Running::start(&["backend"], &env);
        // Let it work for a moment, then kill it mid-flight.
        std::thread::sleep(Duration::from_millis(500 + 150 * (kills % 4)));
        let depth = db.mail().mail_queue_stats().await.expect("stats").depth;
        if depth == 0 {
            backend_proc.signal("TERM");
            assert_eq!(backend_proc.wait(), 0);
            break;
        }
        backend_proc.signal("KILL");
        backend_proc.wait();
        kills += 1;
        assert!(
            Instant::now() < deadline,
            "the queue did not drain: {depth} left after {kills} kills"
        );
    }

    let received = sink.message_ids();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for id in &received {
        *counts.entry(id.clone()).or_default() += 1;
    }
    let domain = "turnbase.localhost";
    for id in &ids {
        let message_id = format!("<{}@{domain}>", id.simple());
        assert!(
            counts.contains_key(&message_id),
            "mail {id} was never delivered"
        );
    }
    assert_eq!(counts.len(), MAILS, "nothing but our mails arrived");
    let duplicates = received.len() - counts.len();
    println!(
        "crash test ({backend:?}): {MAILS} mails, {kills} SIGKILLs, {} deliveries, {duplicates} duplicates (each with its original Message-ID)",
        received.len()
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_sending_loses_nothing_on_sqlite() {
    crash_test(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_sending_loses_nothing_on_postgres() {
    crash_test(DbKind::Postgres).await;
}
