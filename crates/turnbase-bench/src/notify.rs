//! The notification benchmark: a turn resolving in 1,000 games of 10
//! seats at once — 10,000 notifications written in 1,000 transactions the
//! way a turn's record writes them — each to push and the inbox, and a
//! tenth (the players with an email address and a webhook) also by email
//! (through the outbox and the mail worker to an SMTP sink) and to a
//! webhook receiver on loopback. On SQLite and on Postgres; it prints the
//! deliveries per second per channel and the latency from each game's
//! write to each push delivery, and the CPU the process took.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use turnbase_mail::{MailWorker, MessageSettings, SmtpSender, WorkerConfig};
use turnbase_notify::{NotifyConfig, NotifyService, PreferencesChange};
use turnbase_push::{PushConfig, PushService};
use turnbase_store::accounts::{NewAccount, NewSession, Role};
use turnbase_store::notify::{Audience, Kind, NewNotice};
use turnbase_store::{Database, DatabaseOptions};
use uuid::Uuid;

use crate::probe::{latency, now_ns, usage};

#[derive(clap::Args)]
pub struct NotifyArgs {
    /// Games whose turn resolves at once.
    #[arg(long, default_value_t = 1_000)]
    games: usize,
    /// Seats (people) per game.
    #[arg(long, default_value_t = 10)]
    seats: usize,
    /// Every this many people has an email address and a webhook.
    #[arg(long, default_value_t = 10)]
    every: usize,
    /// Route worker slots (BACKEND_NOTIFICATION_WORKERS).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Notifications routed per transaction (BACKEND_NOTIFICATION_BATCH).
    #[arg(long, default_value_t = 2_000)]
    batch: i64,
    /// A Postgres server where the benchmark may create a database; falls
    /// back to TURNBASE_TEST_POSTGRES_URL. Without one, Postgres is skipped.
    #[arg(long)]
    postgres_url: Option<String>,
    #[arg(long)]
    sqlite_only: bool,
}

#[derive(serde::Serialize, Default, Clone, Copy)]
struct Figures {
    push_per_sec: f64,
    push_p50_ms: f64,
    push_p99_ms: f64,
    push_max_ms: f64,
    email_per_sec: f64,
    webhook_per_sec: f64,
    /// Over each channel's own window, first delivery to last.
    email_window_per_sec: f64,
    webhook_window_per_sec: f64,
    cpu_s: f64,
}

pub async fn run(args: NotifyArgs) -> anyhow::Result<()> {
    let mut all: Vec<(&str, Figures)> = Vec::new();
    let dir = tempfile::tempdir()?;
    let sqlite = DatabaseOptions::Sqlite {
        path: dir.path().join("bench.db"),
        busy_timeout: Duration::from_secs(30),
        max_connections: 8,
    };
    all.push(("sqlite", measure(&args, sqlite).await?));
    let server = args
        .postgres_url
        .clone()
        .or_else(|| std::env::var("TURNBASE_TEST_POSTGRES_URL").ok())
        .filter(|_| !args.sqlite_only);
    if let Some(server) = server {
        let scratch = crate::probe::ScratchDatabase::create(&server).await?;
        let options = DatabaseOptions::Postgres {
            url: scratch.url.clone(),
            max_connections: 20,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
        };
        let figures = measure(&args, options).await;
        scratch.drop_now().await?;
        all.push(("postgres", figures?));
    } else {
        println!("postgres: skipped (no --postgres-url or TURNBASE_TEST_POSTGRES_URL)");
    }
    let last = all.last().map(|(_, f)| *f).unwrap_or_default();
    let mut line = serde_json::Map::new();
    line.insert("bench".into(), json!("notify"));
    line.insert("push_per_sec".into(), json!(last.push_per_sec.round()));
    line.insert("push_p99_ms".into(), json!(last.push_p99_ms));
    line.insert("email_per_sec".into(), json!(last.email_per_sec.round()));
    line.insert(
        "webhook_per_sec".into(),
        json!(last.webhook_per_sec.round()),
    );
    line.insert(
        "email_window_per_sec".into(),
        json!(last.email_window_per_sec.round()),
    );
    line.insert(
        "webhook_window_per_sec".into(),
        json!(last.webhook_window_per_sec.round()),
    );
    for (name, f) in &all {
        line.insert(
            format!("{name}_push_per_sec"),
            json!(f.push_per_sec.round()),
        );
        line.insert(format!("{name}_push_p99_ms"), json!(f.push_p99_ms));
        line.insert(
            format!("{name}_email_per_sec"),
            json!(f.email_per_sec.round()),
        );
        line.insert(
            format!("{name}_webhook_per_sec"),
            json!(f.webhook_per_sec.round()),
        );
    }
    crate::probe::report(&serde_json::Value::Object(line))
}

/// When a channel's first and last deliveries arrived.
type Window = Arc<Mutex<(Option<Instant>, Option<Instant>)>>;

/// A webhook receiver: counts requests and notes the first and last
/// arrivals.
async fn receiver() -> anyhow::Result<(String, Arc<AtomicU64>, Window)> {
    let count = Arc::new(AtomicU64::new(0));
    let last: Window = Arc::default();
    let (c, l) = (count.clone(), last.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (c, l) = (c.clone(), l.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let (c, l) = (c.clone(), l.clone());
                        async move {
                            use http_body_util::BodyExt as _;
                            let _ = request.into_body().collect().await;
                            c.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut l) = l.lock() {
                                let now = Instant::now();
                                l.0.get_or_insert(now);
                                l.1 = Some(now);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((url, count, last))
}

async fn measure(args: &NotifyArgs, options: DatabaseOptions) -> anyhow::Result<Figures> {
    let backend = match &options {
        DatabaseOptions::Sqlite { .. } => "sqlite",
        DatabaseOptions::Postgres { .. } => "postgres",
    };
    let db = Database::connect(&options).await?;
    db.migrate().await?;
    let people = args.games * args.seats;
    let mailed = people / args.every.max(1);

    // The people: guests, and every `every`-th with an email address.
    let now = chrono::Utc::now();
    let mut accounts = Vec::with_capacity(people);
    let mut guests = Vec::new();
    for i in 0..people {
        let account = NewAccount {
            id: Uuid::now_v7(),
            email: (i % args.every == 0).then(|| format!("p{i}@bench.example")),
            display_name: format!("P{i}"),
            role: Role::Player,
            created_at: now,
        };
        let session = NewSession {
            id: Uuid::now_v7(),
            token_hash: Uuid::now_v7().as_bytes().to_vec(),
            device_name: "bench".into(),
            country: None,
            created_at: now,
        };
        accounts.push(account.id);
        if account.email.is_some() {
            db.accounts().sign_in_by_email(&account, &session).await?;
        } else {
            guests.push((account, session));
        }
    }
    for chunk in guests.chunks(500) {
        db.accounts().create_guests(chunk).await?;
    }

    let push = PushService::new(
        PushConfig::with_window(Duration::from_secs(600)),
        &turnbase_core::telemetry::noop_meter(),
    );
    let mail_wake = Arc::new(tokio::sync::Notify::new());
    let service = NotifyService::new(
        db.clone(),
        push.clone(),
        mail_wake.clone(),
        NotifyConfig {
            workers: args.workers,
            batch: args.batch,
            allow_private: true,
            poll_interval: Duration::from_millis(100),
            ..NotifyConfig::default()
        },
        turnbase_notify::Keys::derive("the notification benchmark's installation secret"),
        &turnbase_core::telemetry::noop_meter(),
    );
    let (hook_url, hooks, hook_last) = receiver().await?;
    for (i, account) in accounts.iter().enumerate() {
        if i % args.every != 0 {
            continue;
        }
        let change: PreferencesChange = serde_json::from_value(json!({
            "channels": { "turn_resolved": ["push", "email", "webhook"] },
            "webhook_url": hook_url,
        }))?;
        service.put_preferences(*account, true, change).await?;
    }

    // The mail worker, to a fast SMTP sink.
    let sink = crate::mail::Sink::start().await?;
    let sender: Arc<dyn turnbase_mail::MailSender> = Arc::new(
        SmtpSender::new(
            &format!("smtp://127.0.0.1:{}", sink.port),
            Duration::from_secs(10),
            8,
            None,
        )
        .map_err(anyhow::Error::msg)?,
    );
    let mail_worker = Arc::new(MailWorker::new(
        db.clone(),
        sender,
        MessageSettings::new("Turnbase <noreply@turnbase.bench>".parse()?),
        WorkerConfig {
            lease: Duration::from_secs(300),
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            concurrency: 8,
            poll_interval: Duration::from_millis(50),
            claim_batch: 32,
            retention: Duration::from_secs(30 * 86_400),
            secret_retention: Duration::from_secs(3600),
        },
        mail_wake,
        &turnbase_core::telemetry::noop_meter(),
    ));

    // The push subscriber: when each event arrived after its game's write.
    let mut subscription = push
        .subscribe("bench", "")
        .map_err(|e| anyhow::anyhow!("subscribe: {e:?}"))?;
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let pushed_last: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (lat, last) = (latencies.clone(), pushed_last.clone());
    let subscriber = tokio::spawn(async move {
        while let Ok(frame) = subscription.next().await {
            let turnbase_push::wire::Frame::Events(events) = frame else {
                continue;
            };
            let arrived = now_ns();
            for bytes in events {
                let Ok(event) = turnbase_push::proto::PushEvent::decode(bytes.as_ref()) else {
                    continue;
                };
                let Some(turnbase_push::proto::push_event::Kind::ClientEvent(c)) = event.kind
                else {
                    continue;
                };
                if c.kind != "game.turn_resolved" {
                    continue;
                }
                let payload: serde_json::Value =
                    serde_json::from_slice(&c.payload).unwrap_or_default();
                if let Some(sent) = payload["bench_ns"].as_u64()
                    && let Ok(mut l) = lat.lock()
                {
                    l.push(arrived.saturating_sub(sent));
                }
            }
            if let Ok(mut l) = last.lock() {
                *l = Some(Instant::now());
            }
        }
    });

    let stop = CancellationToken::new();
    let workers = tokio::spawn(service.clone().run(stop.clone()));
    let mails = tokio::spawn(mail_worker.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = std::process::id().to_string();
    let cpu_before = usage(&pid).cpu_s;
    let postgres_before = crate::probe::cpu_of_named("postgres").unwrap_or(0.0);
    let machine_before = crate::turns::machine_busy_s();
    let started = Instant::now();
    // The turn resolves in every game at once: one transaction per game,
    // each with a notice per seat, as a turn's record writes them.
    let mut writes = tokio::task::JoinSet::new();
    for game in 0..args.games {
        let db = db.clone();
        let wake = service.wake_handle();
        let seats: Vec<Uuid> = accounts[game * args.seats..(game + 1) * args.seats].to_vec();
        writes.spawn(async move {
            let game_id = Uuid::now_v7();
            let sent = now_ns();
            let notices: Vec<NewNotice> = seats
                .iter()
                .map(|seat| {
                    NewNotice::new(
                        Kind::TurnResolved,
                        Some(game_id),
                        json!({
                            "game_id": game_id,
                            "turn": 7,
                            "next_turn": 8,
                            "summary": "Your fleet took two planets; one of yours was lost.",
                            "bench_ns": sent,
                        })
                        .to_string(),
                        Audience::Users(vec![*seat]),
                    )
                })
                .collect();
            let result = db
                .notify()
                .write_notices(&notices, chrono::Utc::now())
                .await;
            wake.notify_one();
            result
        });
    }
    while let Some(done) = writes.join_next().await {
        done??;
    }
    let written = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pushed = latencies.lock().map_or(0, |l| l.len());
        let hooked = hooks.load(Ordering::Relaxed) as usize;
        let mailed_now = sink.count();
        if pushed >= people && hooked >= mailed && mailed_now >= mailed {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{backend}: after 120 s only {pushed} of {people} pushed, {hooked} of {mailed} webhooks, {mailed_now} of {mailed} mails"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = usage(&pid).cpu_s - cpu_before;
    let postgres_cpu = crate::probe::cpu_of_named("postgres").unwrap_or(0.0) - postgres_before;
    let machine = crate::turns::machine_busy_s() - machine_before;
    let span = started.elapsed().as_secs_f64();
    let since = |at: Option<Instant>| at.map_or(f64::NAN, |t| (t - started).as_secs_f64());
    let push_s = since(*pushed_last.lock().expect("not poisoned"));
    let (hook_first, hook_end) = *hook_last.lock().expect("not poisoned");
    let hook_s = since(hook_end);
    let mail_times = sink.take();
    let mail_s = since(mail_times.values().max().copied());
    let window = |first: Option<Instant>, last: Option<Instant>| match (first, last) {
        (Some(a), Some(b)) if b > a => mailed.saturating_sub(1) as f64 / (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    let email_window = window(
        mail_times.values().min().copied(),
        mail_times.values().max().copied(),
    );
    let hook_window = window(hook_first, hook_end);
    stop.cancel();
    let _ = workers.await;
    let _ = mails.await;
    subscriber.abort();
    let samples = std::mem::take(&mut *latencies.lock().expect("not poisoned"));
    let max_ms = samples.iter().max().copied().unwrap_or(0) as f64 / 1e6;
    let l = latency(samples);
    let figures = Figures {
        push_per_sec: people as f64 / push_s,
        push_p50_ms: l.p50_ms,
        push_p99_ms: l.p99_ms,
        push_max_ms: max_ms,
        email_per_sec: mailed as f64 / mail_s,
        webhook_per_sec: mailed as f64 / hook_s,
        email_window_per_sec: email_window,
        webhook_window_per_sec: hook_window,
        cpu_s: cpu,
    };
    println!(
        "{backend}: {people} notifications in {} transactions written in {:.2} s; \
         push: all {people} in {push_s:.2} s ({:.0}/s), write → delivery p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         email: {mailed} at the SMTP sink in {mail_s:.2} s ({:.0}/s; {:.0}/s from its first to its last); \
         webhook: {mailed} in {hook_s:.2} s ({:.0}/s; {:.0}/s from first to last); \
         CPU {cpu:.2} s ({:.0} µs per notification), the database server's {postgres_cpu:.2} s; \
         the machine busy {:.2} of its cores over the {span:.2} s",
        args.games,
        written.as_secs_f64(),
        figures.push_per_sec,
        figures.push_p50_ms,
        figures.push_p99_ms,
        figures.push_max_ms,
        figures.email_per_sec,
        figures.email_window_per_sec,
        figures.webhook_per_sec,
        figures.webhook_window_per_sec,
        cpu * 1e6 / people as f64,
        machine / span,
    );
    db.close().await;
    Ok(figures)
}
