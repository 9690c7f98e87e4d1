//! Delivery, retries, failures, leases and shutdown.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use turnbase_mail::template::Template;
use turnbase_mail::{
    Email, FileSender, MailSender, MailService, MailWorker, MessageSettings, OutgoingMail,
    SmtpSender, WorkerConfig,
};
use turnbase_store::Database;
use turnbase_store::mail::{MailFilter, MailRecord};
use turnbase_testkit::{DbKind, SmtpSink, TestDb};
use uuid::Uuid;

use crate::faulty_smtp::{Behaviour, FaultySmtp};

const PATIENCE: Duration = Duration::from_secs(60);

const TURN: Template = Template {
    subject: "Turn {{turn}} has run",
    text: "Hello {{name}}, turn {{turn}} has run.",
    html: Some("<p>Hello {{name}}, turn {{turn}} has run.</p>"),
    secrets: &[],
};

struct World {
    _guard: TestDb,
    db: Database,
    service: MailService,
    wake: Arc<Notify>,
}

async fn world(backend: DbKind) -> World {
    world_with(TestDb::new(backend).await).await
}

/// A world on `guard`'s database, with its own connection options.
async fn world_with(guard: TestDb) -> World {
    let db = Database::connect(&guard.options).await.expect("connect");
    db.migrate().await.expect("migrate");
    let wake = Arc::new(Notify::new());
    World {
        service: MailService::new(
            db.clone(),
            wake.clone(),
            &turnbase_core::telemetry::noop_meter(),
        ),
        _guard: guard,
        db,
        wake,
    }
}

fn mail(name: &str) -> OutgoingMail {
    let values = BTreeMap::from([("name", name.to_string()), ("turn", "3".to_string())]);
    OutgoingMail {
        to: Email::parse("player@example.org").expect("valid"),
        content: TURN.render(&values).expect("renders"),
        idempotency_key: None,
    }
}

impl World {
    async fn enqueue(&self, n: usize) -> Vec<Uuid> {
        let mut tx = self.db.begin().await.expect("begin");
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(
                self.service
                    .enqueue(&mut tx, mail(&format!("player {i}")))
                    .await
                    .expect("enqueue")
                    .id(),
            );
        }
        tx.commit().await.expect("commit");
        self.service.wake();
        ids
    }

    fn start(&self, sender: Arc<dyn MailSender>, config: WorkerConfig) -> Running {
        let worker = Arc::new(MailWorker::new(
            self.db.clone(),
            sender,
            MessageSettings::new("Turnbase <noreply@turnbase.test>".parse().expect("mailbox")),
            config,
            self.wake.clone(),
            &turnbase_core::telemetry::noop_meter(),
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        Running { stop, task }
    }

    async fn all(&self) -> Vec<MailRecord> {
        self.db
            .mail()
            .list_mail(&MailFilter {
                limit: 100_000,
                ..MailFilter::default()
            })
            .await
            .expect("list")
    }

    /// Waits until every mail has the status, or fails.
    async fn wait_all(&self, status: &str) -> Vec<MailRecord> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // The cheap question first: is anything still queued?
            let queued = self
                .db
                .mail()
                .mail_queue_stats()
                .await
                .expect("stats")
                .depth;
            let all = if queued == 0 || status != "sent" {
                self.all().await
            } else {
                Vec::new()
            };
            if queued == 0 && all.iter().all(|m| m.status == status) {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {status}: {:?}",
                all.iter()
                    .map(|m| (&m.status, m.attempts, &m.last_error))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the worker stops")
            .expect("join")
            .expect("clean stop");
    }
}

fn config(retry_base_ms: u64, max_attempts: u32) -> WorkerConfig {
    WorkerConfig {
        lease: Duration::from_secs(300),
        max_attempts,
        retry_base: Duration::from_millis(retry_base_ms),
        retry_max: Duration::from_secs(5),
        concurrency: 2,
        poll_interval: Duration::from_millis(50),
        claim_batch: 8,
        retention: Duration::from_secs(30 * 86_400),
        secret_retention: Duration::from_secs(3600),
    }
}

fn smtp(url: &str, timeout_ms: u64) -> Arc<dyn MailSender> {
    Arc::new(SmtpSender::new(url, Duration::from_millis(timeout_ms), 4, None).expect("valid URL"))
}

async fn delivers_to_a_real_smtp_server(backend: DbKind) {
    let w = world(backend).await;
    let sink = SmtpSink::start();
    let ids = w.enqueue(3).await;
    let running = w.start(smtp(&sink.url(), 5000), config(50, 10));
    let sent = w.wait_all("sent").await;
    running.stop().await;
    assert!(sent.iter().all(|m| m.attempts == 1 && m.sent_at.is_some()));
    let messages = sink.messages();
    assert_eq!(messages.len(), 3);
    let expected: HashSet<String> = ids
        .iter()
        .map(|id| format!("<{}@turnbase.test>", id.simple()))
        .collect();
    let got: HashSet<String> = sink.message_ids().into_iter().collect();
    assert_eq!(got, expected, "Message-ID derives from the outbox id");
    let one = &messages[0];
    for needle in [
        "From: Turnbase <noreply@turnbase.test>",
        "To: player@example.org",
        "Subject: Turn 3 has run",
        "multipart/alternative",
        "turn 3 has run.",
        "<p>Hello player",
    ] {
        assert!(one.contains(needle), "missing {needle:?} in\n{one}");
    }
    let (_, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!(
        (attempts[0].outcome.as_str(), attempts[0].smtp_code),
        ("sent", Some(250))
    );
}

async fn transient_failure_then_success(backend: DbKind) {
    let w = world(backend).await;
    let server = FaultySmtp::start(vec![
        Behaviour::Transient,
        Behaviour::Transient,
        Behaviour::Accept,
    ])
    .await;
    let ids = w.enqueue(1).await;
    let running = w.start(
        smtp(&server.url(), 5000),
        WorkerConfig {
            concurrency: 1,
            ..config(200, 10)
        },
    );
    // After the first failure the retry is scheduled within the jitter bounds.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (first, attempts) = loop {
        let (m, a) = w.db.mail().mail(ids[0]).await.expect("show");
        // A consistent look: the row and its attempts agree on one attempt.
        let (again, _) = w.db.mail().mail(ids[0]).await.expect("show");
        if a.len() == 1 && m.attempts == 1 && again == m {
            break (m, a);
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let wait = (first.next_attempt_at - attempts[0].finished_at).num_milliseconds();
    assert!(
        (160..=240).contains(&wait),
        "first retry after {wait} ms, expected 200 ± 20%"
    );
    w.wait_all("sent").await;
    running.stop().await;
    let (m, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!(m.attempts, 3);
    let outcomes: Vec<(&str, Option<i64>)> = attempts
        .iter()
        .map(|a| (a.outcome.as_str(), a.smtp_code))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("transient", Some(451)),
            ("transient", Some(451)),
            ("sent", Some(250))
        ]
    );
    assert!(
        attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("try again later"))
    );
    assert_eq!(*server.accepted.lock().expect("lock"), 1);
}

async fn permanent_failure_after_exactly_one_attempt(backend: DbKind) {
    let w = world(backend).await;
    let server = FaultySmtp::start(vec![Behaviour::Permanent]).await;
    let ids = w.enqueue(1).await;
    let running = w.start(smtp(&server.url(), 5000), config(50, 10));
    w.wait_all("failed").await;
    running.stop().await;
    let (m, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!((m.attempts, attempts.len()), (1, 1));
    assert_eq!(
        (attempts[0].outcome.as_str(), attempts[0].smtp_code),
        ("permanent", Some(550))
    );
}

async fn attempts_run_out(backend: DbKind) {
    let w = world(backend).await;
    let server = FaultySmtp::start(vec![Behaviour::Drop]).await;
    let ids = w.enqueue(1).await;
    let running = w.start(smtp(&server.url(), 5000), config(20, 3));
    w.wait_all("failed").await;
    running.stop().await;
    let (_, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a.outcome == "transient"));
}

async fn server_down_then_up_drains_the_queue(backend: DbKind) {
    let w = world(backend).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let ids = w.enqueue(20).await;
    let running = w.start(
        smtp(&format!("smtp://127.0.0.1:{port}"), 2000),
        config(100, 20),
    );
    // Wait for failed attempts against the absent server.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.all().await.iter().all(|m| m.attempts == 0) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sink = SmtpSink::start_on(port);
    w.wait_all("sent").await;
    running.stop().await;
    let got: HashSet<String> = sink.message_ids().into_iter().collect();
    assert_eq!(got.len(), ids.len(), "nothing lost");
}

async fn send_timeout_is_a_transient_failure(backend: DbKind) {
    let w = world(backend).await;
    let server = FaultySmtp::start(vec![Behaviour::Hang, Behaviour::Accept]).await;
    let ids = w.enqueue(1).await;
    let running = w.start(
        smtp(&server.url(), 300),
        WorkerConfig {
            concurrency: 1,
            ..config(50, 10)
        },
    );
    w.wait_all("sent").await;
    running.stop().await;
    let (_, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, "transient");
    let took = (attempts[0].finished_at - attempts[0].started_at).num_milliseconds();
    assert!(
        (250..5000).contains(&took),
        "the hung attempt ended by timeout after {took} ms"
    );
}

async fn an_expired_lease_is_reclaimed(backend: DbKind) {
    let w = world(backend).await;
    let sink = SmtpSink::start();
    let ids = w.enqueue(1).await;
    // A worker that claimed the mail and vanished.
    let ghost =
        w.db.mail()
            .claim_due_mail(chrono::Utc::now(), Duration::from_millis(500), "ghost", 10)
            .await
            .expect("claim");
    assert_eq!(ghost.len(), 1);
    let running = w.start(smtp(&sink.url(), 5000), config(50, 10));
    w.wait_all("sent").await;
    running.stop().await;
    let (m, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!(
        (m.attempts, attempts.len()),
        (1, 1),
        "the ghost's claim spent nothing"
    );
    assert_eq!(sink.message_ids().len(), 1);
}

async fn shutdown_mid_send_does_not_spend_an_attempt(backend: DbKind) {
    let w = world(backend).await;
    let server = FaultySmtp::start(vec![Behaviour::Hang]).await;
    let ids = w.enqueue(1).await;
    let running = w.start(smtp(&server.url(), 60_000), config(50, 10));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.all().await[0].status != "sending" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;
    let (m, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!((m.status.as_str(), m.attempts), ("pending", 0));
    assert!(attempts.is_empty());
}

/// A slot sending a full batch claims the next one meanwhile; stopping
/// hands back both the unsent rest and the batch claimed ahead.
async fn shutdown_hands_back_mail_claimed_ahead(backend: DbKind) {
    let w = world(backend).await;
    let server = FaultySmtp::start(vec![Behaviour::Hang]).await;
    let ids = w.enqueue(20).await;
    let running = w.start(
        smtp(&server.url(), 60_000),
        WorkerConfig {
            concurrency: 1,
            ..config(50, 10)
        },
    );
    // One slot, batches of 8: the first batch is being sent (and hangs),
    // the second is claimed ahead, the last 4 wait.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let sending = w
            .all()
            .await
            .iter()
            .filter(|m| m.status == "sending")
            .count();
        if sending == 16 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sending} of 20 mails are being sent; expected a batch and one claimed ahead"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;
    for id in ids {
        let (m, attempts) = w.db.mail().mail(id).await.expect("show");
        assert_eq!((m.status.as_str(), m.attempts), ("pending", 0), "{id}");
        assert!(attempts.is_empty());
    }
}

async fn four_workers_over_many_rows_send_each_once(backend: DbKind) {
    const ROWS: usize = 10_000;
    let w = world(backend).await;
    w.enqueue(ROWS).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sender: Arc<dyn MailSender> =
        Arc::new(FileSender::new(dir.path().to_path_buf()).expect("folder"));
    let workers: Vec<Running> = (0..4)
        .map(|_| {
            w.start(
                sender.clone(),
                WorkerConfig {
                    concurrency: 2,
                    ..config(50, 10)
                },
            )
        })
        .collect();
    let sent = w.wait_all("sent").await;
    for r in workers {
        r.stop().await;
    }
    assert_eq!(sent.len(), ROWS);
    assert!(
        sent.iter().all(|m| m.attempts == 1),
        "no row was sent twice"
    );
    let files = std::fs::read_dir(dir.path())
        .expect("read")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        })
        .count();
    assert_eq!(files, ROWS, "one file per mail, none left");
}

/// Finished mail past its retention is deleted when the worker starts (and
/// every few minutes after); recent and unfinished mail stays.
async fn finished_mail_past_its_retention_is_deleted(backend: DbKind) {
    let w = world(backend).await;
    let store = w.db.mail();
    // Sent 40 days ago, with a 30-day retention.
    let at = chrono::Utc::now() - chrono::Duration::days(40);
    let secs = u64::try_from(at.timestamp()).expect("after 1970");
    let old = turnbase_store::mail::NewMail {
        id: Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, 0)),
        idempotency_key: Some("old".into()),
        to: "player@example.org".into(),
        subject: "Long ago".into(),
        text_body: "Turn 1 has run.".into(),
        html_body: None,
        created_at: at,
        masked_subject: None,
    };
    let mut tx = w.db.begin().await.expect("begin");
    let old_id = store.enqueue(&mut tx, &old).await.expect("enqueue").id();
    tx.commit().await.expect("commit");
    let claimed = store
        .claim_due_mail(chrono::Utc::now(), Duration::from_secs(60), "earlier", 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let attempt = turnbase_store::mail::NewAttempt {
        id: Uuid::now_v7(),
        started_at: at,
        finished_at: at,
        outcome: turnbase_store::mail::AttemptOutcome::Sent,
        smtp_code: Some(250),
        error: None,
    };
    assert!(
        store
            .finish_attempt(
                old_id,
                "earlier",
                &attempt,
                turnbase_store::mail::AfterAttempt::Sent
            )
            .await
            .expect("finish")
    );
    let recent = w.enqueue(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = w.start(
        Arc::new(FileSender::new(dir.path().to_path_buf()).expect("folder")),
        config(50, 10),
    );
    let sent = w.wait_all("sent").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.all().await.iter().any(|m| m.id == old_id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old mail was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    running.stop().await;
    let left: Vec<Uuid> = w.all().await.iter().map(|m| m.id).collect();
    assert_eq!(left, recent, "the recent mail stays");
    assert!(sent.iter().any(|m| m.id == recent[0]));
}

async fn enqueue_in_a_rolled_back_transaction_leaves_no_mail(backend: DbKind) {
    let w = world(backend).await;
    let mut tx = w.db.begin().await.expect("begin");
    w.service
        .enqueue(&mut tx, mail("Ann"))
        .await
        .expect("enqueue");
    tx.rollback().await.expect("rollback");
    assert!(w.all().await.is_empty());
    let mut bad = mail("Ann");
    bad.content.subject = "two\nlines".into();
    let mut tx = w.db.begin().await.expect("begin");
    assert!(matches!(
        w.service.enqueue(&mut tx, bad).await,
        Err(turnbase_mail::MailError::Invalid(_))
    ));
    tx.rollback().await.expect("rollback");
}

turnbase_testkit::both_backends!(
    flavor = "multi_thread";
    delivers_to_a_real_smtp_server,
    transient_failure_then_success,
    permanent_failure_after_exactly_one_attempt,
    attempts_run_out,
    server_down_then_up_drains_the_queue,
    send_timeout_is_a_transient_failure,
    an_expired_lease_is_reclaimed,
    shutdown_mid_send_does_not_spend_an_attempt,
    shutdown_hands_back_mail_claimed_ahead,
    four_workers_over_many_rows_send_each_once,
    finished_mail_past_its_retention_is_deleted,
    enqueue_in_a_rolled_back_transaction_leaves_no_mail,
);

/// A private CA and a certificate it signed for `localhost`, made with the
/// openssl tool. Returns the CA certificate, and the server's certificate
/// and key.
fn private_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let path = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost\n",
    )
    .expect("write");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=Test CA",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &path("key.pem"),
        "-out",
        &path("leaf.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("leaf.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &path("leaf.ext"),
        "-out",
        &path("cert.pem"),
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

async fn tls_delivery(tls: turnbase_testkit::SinkTls, url_for: fn(u16) -> String) {
    let w = world(DbKind::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path());
    let sink = SmtpSink::start_tls(tls, &cert, &key);
    let pem = std::fs::read(&ca).expect("CA certificate");
    let url = url_for(sink.port);

    // Without trusting the certificate, the handshake fails: a transient
    // failure, recorded (with a budget of one attempt, the mail then fails),
    // nothing delivered.
    let untrusting: Arc<dyn MailSender> =
        Arc::new(SmtpSender::new(&url, Duration::from_secs(5), 2, None).expect("valid URL"));
    let ids = w.enqueue(1).await;
    let running = w.start(untrusting, config(50, 1));
    w.wait_all("failed").await;
    running.stop().await;
    let (_, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!(attempts[0].outcome, "transient", "{attempts:?}");
    assert!(sink.messages().is_empty());

    // Trusting it, the retried mail goes through over TLS.
    w.db.mail()
        .retry_mail(ids[0], chrono::Utc::now())
        .await
        .expect("retry");
    let trusting: Arc<dyn MailSender> =
        Arc::new(SmtpSender::new(&url, Duration::from_secs(5), 2, Some(&pem)).expect("valid URL"));
    let running = w.start(trusting, config(50, 10));
    w.wait_all("sent").await;
    running.stop().await;
    assert_eq!(
        sink.message_ids(),
        [format!("<{}@turnbase.test>", ids[0].simple())]
    );

    // One secured connection carries message after message.
    let direct = SmtpSender::new(&url, Duration::from_secs(5), 1, Some(&pem)).expect("valid URL");
    let settings =
        MessageSettings::new("Turnbase <noreply@turnbase.test>".parse().expect("mailbox"));
    for n in 0..3 {
        let mail = turnbase_store::mail::ClaimedMail {
            id: Uuid::now_v7(),
            to: format!("player{n}@example.org"),
            subject: "Over TLS".into(),
            text_body: "One connection.".into(),
            html_body: None,
            attempts: 0,
        };
        let message = turnbase_mail::sender::build_message(&settings, &mail).expect("builds");
        direct.send(mail.id, message).await.expect("accepted");
    }
    assert_eq!(direct.connections_opened(), 1);
    assert_eq!(sink.message_ids().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_with_a_private_ca() {
    tls_delivery(turnbase_testkit::SinkTls::Starttls, |port| {
        format!("smtp://localhost:{port}?tls=required")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smtps_with_a_private_ca() {
    tls_delivery(turnbase_testkit::SinkTls::Smtps, |port| {
        format!("smtps://localhost:{port}")
    })
    .await;
}

/// Records, for every log line about a written mail, the `mail_id` of the
/// `mail.deliver` span it was logged in.
#[derive(Clone, Default)]
struct DeliverySpans(Arc<std::sync::Mutex<Vec<Option<String>>>>);

struct MailId(String);

impl<S> tracing_subscriber::Layer<S> for DeliverySpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "mail.deliver" {
            return;
        }
        struct Visit(Option<String>);
        impl tracing::field::Visit for Visit {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "mail_id" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut visit = Visit(None);
        attrs.record(&mut visit);
        if let (Some(span), Some(mail)) = (ctx.span(id), visit.0) {
            span.extensions_mut().insert(MailId(mail));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if !message.0.contains("mail written") {
            return;
        }
        let mail = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<MailId>().map(|m| m.0.clone()))
        });
        self.0.lock().expect("not poisoned").push(mail);
    }
}

/// What a sender logs while delivering a mail is inside a span naming the
/// mail (it used to open only after the attempt, so the sender's lines
/// carried no id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_logs_inside_a_span_with_the_mail_id() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let seen = DeliverySpans::default();
    // Each test runs in a process of its own under nextest.
    let installed = tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(seen.clone())
            .with(tracing_subscriber::filter::LevelFilter::INFO),
    );
    assert!(installed.is_ok(), "run under nextest: one process per test");
    let w = world(DbKind::Sqlite).await;
    let ids = w.enqueue(5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sender: Arc<dyn MailSender> =
        Arc::new(FileSender::new(dir.path().to_path_buf()).expect("folder"));
    let running = w.start(sender, config(50, 3));
    w.wait_all("sent").await;
    running.stop().await;
    let mut logged: Vec<String> = seen
        .0
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|m| m.clone().expect("inside a mail.deliver span"))
        .collect();
    logged.sort();
    let mut expected: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(logged, expected, "one line per mail, each naming its mail");
}

/// Fails its first `failures` sends as a relay answering 451 would, then
/// accepts: the fault injected, with no clock or socket of its own.
struct FailsAtFirst {
    failures: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl MailSender for FailsAtFirst {
    async fn send(
        &self,
        _id: Uuid,
        _message: lettre::Message,
    ) -> Result<turnbase_mail::sender::Accepted, turnbase_mail::SendError> {
        let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(turnbase_mail::SendError::Transient {
                code: Some(451),
                message: "try again later".into(),
            });
        }
        Ok(turnbase_mail::sender::Accepted { code: Some(250) })
    }

    fn describe(&self) -> String {
        "a sender that fails at first".into()
    }
}

/// The worker under paused time, reading the injected clock: retries a
/// minute and two minutes apart take no real time, and each attempt starts
/// no earlier than the retry time the one before it set.
#[tokio::test]
async fn retries_follow_the_backoff_on_the_injected_clock_under_paused_time() {
    // Under paused time the runtime jumps to its next timer whenever it
    // waits on anything else (here SQLite's threads): the pool's acquire
    // timeout and the lease are made longer than any such jump can reach,
    // and every reading connection is open before time stops.
    let mut guard = TestDb::new(DbKind::Sqlite).await;
    if let turnbase_store::DatabaseOptions::Sqlite { busy_timeout, .. } = &mut guard.options {
        *busy_timeout = Duration::from_secs(86_400);
    }
    let w = world_with(guard).await;
    let ids = w.enqueue(1).await;
    let reads: Vec<_> = (0..4).map(|_| w.db.mail().mail_queue_stats()).collect();
    for read in futures::future::join_all(reads).await {
        read.expect("a warm connection");
    }
    tokio::time::pause();
    let clock = turnbase_core::worker::tokio_clock(chrono::Utc::now());
    let worker = Arc::new(
        MailWorker::new(
            w.db.clone(),
            Arc::new(FailsAtFirst {
                failures: std::sync::atomic::AtomicUsize::new(2),
            }),
            MessageSettings::new("Turnbase <noreply@turnbase.test>".parse().expect("mailbox")),
            WorkerConfig {
                retry_base: Duration::from_secs(60),
                retry_max: Duration::from_secs(3600),
                poll_interval: Duration::from_secs(5),
                lease: Duration::from_secs(86_400),
                concurrency: 1,
                ..config(60_000, 10)
            },
            w.wake.clone(),
            &turnbase_core::telemetry::noop_meter(),
        )
        .with_clock(clock),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    let mut sent = false;
    for _ in 0..10_000 {
        let (m, _) = w.db.mail().mail(ids[0]).await.expect("show");
        if m.status == "sent" {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    task.await.expect("join").expect("clean stop");
    assert!(sent, "sent after two retries");
    let (m, attempts) = w.db.mail().mail(ids[0]).await.expect("show");
    assert_eq!(m.attempts, 3);
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["transient", "transient", "sent"]);
    for (before, after, step) in [
        (&attempts[0], &attempts[1], 60),
        (&attempts[1], &attempts[2], 120),
    ] {
        let gap = (after.started_at - before.finished_at).num_milliseconds();
        let least = (step * 1000) * 8 / 10;
        assert!(
            gap >= least,
            "{gap} ms between attempts, at least {least} ms"
        );
    }
}
