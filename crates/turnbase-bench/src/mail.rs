//! The mail benchmark: the outbox and its worker draining mail into a
//! local SMTP sink, on SQLite and on Postgres, against the sink's ceiling
//! (the same messages sent by a plain pooled lettre sender, no outbox),
//! with the CPU each run takes per mail (a local Postgres server's too).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use turnbase_mail::template::Template;
use turnbase_mail::{
    Email, MailSender, MailService, MailWorker, MessageSettings, OutgoingMail, SmtpSender,
    WorkerConfig,
};
use turnbase_store::{Database, DatabaseOptions};

use crate::probe::{cpu_of_named, latency, usage};

#[derive(clap::Args)]
pub struct MailArgs {
    /// Mails per run.
    #[arg(long, default_value_t = 20_000)]
    mails: usize,
    /// Worker slots (and pooled SMTP connections), for the outbox and the ceiling alike.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Mails a worker slot claims at a time (BACKEND_MAIL_CLAIM_BATCH, whose
    /// default this is).
    #[arg(long, default_value_t = 32)]
    claim_batch: usize,
    /// Drains per backend; the median is compared with the ceiling (one
    /// drain moves by several percent from run to run).
    #[arg(long, default_value_t = 3)]
    drains: usize,
    /// A Postgres server where the benchmark may create a database; falls
    /// back to TURNBASE_TEST_POSTGRES_URL. Without one, Postgres is skipped.
    #[arg(long)]
    postgres_url: Option<String>,
}

const NOTE: Template = Template {
    subject: "Turn {{turn}} has run",
    text: "Hello {{name}}, turn {{turn}} of your game has run. Send your orders for the next one.",
    html: Some("<p>Hello {{name}}, turn {{turn}} of your game has run.</p>"),
    secrets: &[],
};

/// A minimal, fast SMTP server on loopback that accepts everything and
/// notes when each Message-ID arrived.
pub(crate) struct Sink {
    pub(crate) port: u16,
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
}

impl Sink {
    pub(crate) async fn start() -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let (a, c) = (arrivals.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (a, c) = (a.clone(), c.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, a, c).await;
                });
            }
        });
        Ok(Sink {
            port,
            arrivals,
            changed,
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.arrivals.lock().map_or(0, |a| a.len())
    }

    async fn wait_for(&self, n: usize, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        while self.count() < n {
            let notified = self.changed.notified();
            if self.count() >= n {
                break;
            }
            anyhow::ensure!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "only {} of {n} mails arrived",
                self.count()
            );
        }
        Ok(())
    }

    pub(crate) fn take(&self) -> HashMap<String, Instant> {
        self.arrivals
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut reader = BufReader::new(read);
    let mut in_data = false;
    let mut message_id = String::new();
    let mut line = String::new();
    loop {
        // lettre writes a message and its closing dot in two writes without
        // TCP_NODELAY, so a delayed ACK here would stall every message for
        // ~40 ms; acknowledging at once keeps the sink from being the limit.
        let _ = socket2::SockRef::from(reader.get_ref().as_ref()).set_tcp_quickack(true);
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if in_data {
            if line == "." {
                in_data = false;
                if let Ok(mut a) = arrivals.lock() {
                    a.insert(std::mem::take(&mut message_id), Instant::now());
                }
                changed.notify_waiters();
                write.write_all(b"250 ok\r\n").await?;
            } else if message_id.is_empty()
                && line.len() > 11
                && line[..11].eq_ignore_ascii_case("message-id:")
            {
                message_id = line[11..].trim().to_string();
            }
            continue;
        }
        let upper = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match upper.as_str() {
            "EHLO" | "HELO" => write.write_all(b"250 sink\r\n").await?,
            "DATA" => {
                in_data = true;
                write.write_all(b"354 go on\r\n").await?;
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"250 ok\r\n").await?,
        }
    }
    Ok(())
}

fn outgoing(i: usize) -> anyhow::Result<OutgoingMail> {
    let values = BTreeMap::from([
        ("name", format!("player {i}")),
        ("turn", (i % 50).to_string()),
    ]);
    Ok(OutgoingMail {
        to: Email::parse(&format!("player{i}@example.org"))?,
        content: NOTE.render(&values)?,
        idempotency_key: Some(format!("bench:{i}")),
    })
}

struct Run {
    /// Drains (everything enqueued first, then the worker alone), slowest
    /// first.
    drains: Vec<Pass>,
    /// Enqueueing and sending at once, as in production.
    flow: Pass,
}

impl Run {
    fn median(&self) -> &Pass {
        &self.drains[self.drains.len() / 2]
    }
}

async fn outbox_run(
    options: DatabaseOptions,
    mails: usize,
    workers: usize,
    claim_batch: usize,
    drains: usize,
) -> anyhow::Result<Run> {
    // A Postgres server on this machine shares its cores: its CPU is
    // counted too.
    let server_cpu = matches!(options, DatabaseOptions::Postgres { .. });
    let mut passes = Vec::with_capacity(drains);
    for _ in 0..drains.max(1) {
        passes.push(outbox_pass(&options, mails, workers, claim_batch, true, server_cpu).await?);
    }
    passes.sort_by(|a, b| a.mails_per_sec.total_cmp(&b.mails_per_sec));
    let flow = outbox_pass(&options, mails, workers, claim_batch, false, false).await?;
    Ok(Run {
        drains: passes,
        flow,
    })
}

struct Pass {
    mails_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    enqueue_per_sec: f64,
    /// This process's CPU per mail while the mail was sent, in µs (the
    /// sink's included).
    cpu_us: f64,
    /// The database server's, when it runs on this machine.
    server_cpu_us: Option<f64>,
}

/// CPU per mail in µs, from two readings in seconds.
fn per_mail_us(before: f64, after: f64, mails: usize) -> f64 {
    (after - before) * 1e6 / mails as f64
}

/// This process's CPU seconds, and with `server` the Postgres server's.
fn cpu_now(server: bool) -> (f64, Option<f64>) {
    (
        usage("self").cpu_s,
        server.then(|| cpu_of_named("postgres")).flatten(),
    )
}

/// Enqueues `mails` in transactions of 100 as fast as it can, and waits
/// until the sink has them all. With `prefill`, the worker starts only
/// once everything is queued and the clock measures the drain alone.
async fn outbox_pass(
    options: &DatabaseOptions,
    mails: usize,
    workers: usize,
    claim_batch: usize,
    prefill: bool,
    server_cpu: bool,
) -> anyhow::Result<Pass> {
    let sink = Sink::start().await?;
    let db = Database::connect(options).await?;
    db.migrate().await?;
    let wake = Arc::new(Notify::new());
    let service = MailService::new(
        db.clone(),
        wake.clone(),
        &turnbase_core::telemetry::noop_meter(),
    );
    let sender: Arc<dyn MailSender> = Arc::new(
        SmtpSender::new(
            &format!("smtp://127.0.0.1:{}", sink.port),
            Duration::from_secs(10),
            u32::try_from(workers)?,
            None,
        )
        .map_err(anyhow::Error::msg)?,
    );
    let worker = Arc::new(MailWorker::new(
        db.clone(),
        sender,
        MessageSettings::new("Turnbase <noreply@turnbase.bench>".parse()?),
        WorkerConfig {
            lease: Duration::from_secs(300),
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            concurrency: workers,
            poll_interval: Duration::from_millis(50),
            claim_batch,
            retention: Duration::from_secs(30 * 86_400),
            secret_retention: Duration::from_secs(3600),
        },
        wake,
        &turnbase_core::telemetry::noop_meter(),
    ));
    let stop = CancellationToken::new();
    let mut running = None;
    if !prefill {
        running = Some(tokio::spawn(worker.clone().run(stop.clone())));
    }

    let started = Instant::now();
    let mut enqueued_at: HashMap<uuid::Uuid, Instant> = HashMap::with_capacity(mails);
    for chunk in (0..mails).collect::<Vec<_>>().chunks(100) {
        let mut tx = db.begin().await?;
        let mut ids = Vec::with_capacity(chunk.len());
        for &i in chunk {
            ids.push(service.enqueue(&mut tx, outgoing(i)?).await?.id());
        }
        tx.commit().await?;
        let now = Instant::now();
        enqueued_at.extend(ids.into_iter().map(|id| (id, now)));
        service.wake();
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    let cpu_before = cpu_now(server_cpu);
    let drain_started = Instant::now();
    let running = match running {
        Some(r) => r,
        None => tokio::spawn(worker.run(stop.clone())),
    };
    sink.wait_for(mails, Duration::from_secs(600)).await?;
    let cpu_after = cpu_now(server_cpu);
    let elapsed = if prefill {
        drain_started.elapsed().as_secs_f64()
    } else {
        started.elapsed().as_secs_f64()
    };
    stop.cancel();
    running.await??;
    // Each pass starts from an empty outbox.
    clear(&db).await?;
    db.close().await;
    let mut pass = finish(&sink, enqueued_at, mails, elapsed, enqueue_secs)?;
    pass.cpu_us = per_mail_us(cpu_before.0, cpu_after.0, mails);
    if let (Some(before), Some(after)) = (cpu_before.1, cpu_after.1) {
        pass.server_cpu_us = Some(per_mail_us(before, after, mails));
    }
    Ok(pass)
}

async fn clear(db: &Database) -> anyhow::Result<()> {
    match db {
        Database::Postgres(pg) => {
            sqlx_exec(pg.pool(), "TRUNCATE mail_attempts, mail_outbox").await?
        }
        Database::Sqlite(s) => {
            sqlx::query("DELETE FROM mail_attempts")
                .execute(s.write_turn().await.pool())
                .await?;
            sqlx::query("DELETE FROM mail_outbox")
                .execute(s.write_turn().await.pool())
                .await?;
        }
    }
    Ok(())
}

fn finish(
    sink: &Sink,
    enqueued_at: HashMap<uuid::Uuid, Instant>,
    mails: usize,
    elapsed: f64,
    enqueue_secs: f64,
) -> anyhow::Result<Pass> {
    let arrivals = sink.take();
    let samples: Vec<u64> = enqueued_at
        .iter()
        .filter_map(|(id, at)| {
            let arrived =
                arrivals.get(&turnbase_mail::sender::message_id(*id, "turnbase.bench"))?;
            Some(u64::try_from(arrived.duration_since(*at).as_nanos()).unwrap_or(u64::MAX))
        })
        .collect();
    anyhow::ensure!(
        samples.len() == mails,
        "{} of {mails} mails matched",
        samples.len()
    );
    let l = latency(samples);
    Ok(Pass {
        mails_per_sec: mails as f64 / elapsed,
        p50_ms: l.p50_ms,
        p99_ms: l.p99_ms,
        enqueue_per_sec: mails as f64 / enqueue_secs,
        cpu_us: 0.0,
        server_cpu_us: None,
    })
}

/// The same messages through a plain pooled lettre sender: what the sink
/// and SMTP itself allow.
/// What sends in a run without the outbox.
#[derive(Clone)]
enum Direct {
    /// lettre's own pooled transport: the ceiling.
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
    /// The sender the outbox uses, called directly.
    Ours(Arc<SmtpSender>),
}

impl Direct {
    fn new(lettre: bool, port: u16, workers: usize) -> anyhow::Result<Direct> {
        Ok(if lettre {
            Direct::Lettre(
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
                    .port(port)
                    .timeout(Some(Duration::from_secs(10)))
                    .pool_config(PoolConfig::new().max_size(u32::try_from(workers)?))
                    .build(),
            )
        } else {
            Direct::Ours(Arc::new(
                SmtpSender::new(
                    &format!("smtp://127.0.0.1:{port}"),
                    Duration::from_secs(10),
                    u32::try_from(workers)?,
                    None,
                )
                .map_err(anyhow::Error::msg)?,
            ))
        })
    }

    async fn send(&self, id: uuid::Uuid, message: lettre::Message) -> anyhow::Result<()> {
        match self {
            Direct::Lettre(t) => {
                t.send(message).await?;
            }
            Direct::Ours(s) => {
                s.send(id, message).await?;
            }
        }
        Ok(())
    }
}

/// The same messages as the outbox sends, built the same way, sent by
/// `workers` tasks with no outbox; mails/s once every one was accepted
/// (and, with our sink, has arrived).
async fn direct(
    sender: Direct,
    sink: Option<&Sink>,
    mails: usize,
    workers: usize,
) -> anyhow::Result<f64> {
    let settings = MessageSettings::new("Turnbase <noreply@turnbase.bench>".parse()?);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (sender, settings, next) = (sender.clone(), settings.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= mails {
                    return Ok::<(), anyhow::Error>(());
                }
                let o = outgoing(i)?;
                let claimed = turnbase_store::mail::ClaimedMail {
                    id: uuid::Uuid::now_v7(),
                    to: o.to.to_string(),
                    subject: o.content.subject,
                    text_body: o.content.text,
                    html_body: o.content.html,
                    attempts: 0,
                };
                let message = turnbase_mail::sender::build_message(&settings, &claimed)?;
                sender.send(claimed.id, message).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    if let Some(sink) = sink {
        sink.wait_for(mails, Duration::from_secs(60)).await?;
    }
    Ok(mails as f64 / started.elapsed().as_secs_f64())
}

/// Into our sink with no outbox: with `lettre`, lettre's own pooled
/// sender (the ceiling), otherwise the outbox's sender.
async fn into_sink(lettre: bool, mails: usize, workers: usize) -> anyhow::Result<Timed> {
    let sink = Sink::start().await?;
    let before = usage("self").cpu_s;
    let per_sec = direct(
        Direct::new(lettre, sink.port, workers)?,
        Some(&sink),
        mails,
        workers,
    )
    .await?;
    Ok(Timed {
        per_sec,
        cpu_us: per_mail_us(before, usage("self").cpu_s, mails),
    })
}

/// A run into the sink with no outbox: mails/s, and this process's CPU per
/// mail in µs (the sink's included).
#[derive(Debug, Clone, Copy)]
struct Timed {
    per_sec: f64,
    cpu_us: f64,
}

/// The run with the median rate.
fn median(mut runs: Vec<Timed>) -> (Timed, Vec<Timed>) {
    runs.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    (runs[runs.len() / 2], runs)
}

/// lettre's pool and our sender against a real SMTP server (aiosmtpd,
/// which like most servers delays its ACKs); `None` without python3 and
/// aiosmtpd.
async fn real_server(mails: usize, workers: usize) -> anyhow::Result<Option<(f64, f64)>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let python = std::env::var("TURNBASE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let Ok(mut child) = tokio::process::Command::new(&python)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Sink"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    else {
        return Ok(None);
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if child.try_wait()?.is_some() || Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lettre = direct(Direct::new(true, port, workers)?, None, mails, workers).await?;
    let ours = direct(Direct::new(false, port, workers)?, None, mails, workers).await?;
    child.kill().await?;
    Ok(Some((lettre, ours)))
}

pub async fn run(args: MailArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "mail benchmark: {} mails, {} worker slots, {cores} cores, local SMTP sink on loopback",
        args.mails, args.workers
    );
    // The ceiling moves from run to run on a shared machine, so it is
    // measured around each outbox run (after a warm-up) and the outbox is
    // compared with the median.
    into_sink(true, args.mails / 10, args.workers).await?;
    let mut ceilings = vec![into_sink(true, args.mails, args.workers).await?];
    println!(
        "ceiling (pooled lettre, no outbox): {:.0} mails/s",
        ceilings[0].per_sec
    );
    let mut alone = vec![into_sink(false, args.mails, args.workers).await?];
    println!(
        "our SMTP sender, no outbox: {:.0} mails/s",
        alone[0].per_sec
    );

    let dir = tempfile::tempdir()?;
    let sqlite = outbox_run(
        DatabaseOptions::Sqlite {
            path: dir.path().join("bench.db"),
            busy_timeout: Duration::from_secs(10),
            max_connections: u32::try_from(args.workers + 2)?,
        },
        args.mails,
        args.workers,
        args.claim_batch,
        args.drains,
    )
    .await?;
    ceilings.push(into_sink(true, args.mails, args.workers).await?);
    println!("ceiling again: {:.0} mails/s", ceilings[1].per_sec);
    alone.push(into_sink(false, args.mails, args.workers).await?);

    let postgres_url = args
        .postgres_url
        .or_else(|| std::env::var("TURNBASE_TEST_POSTGRES_URL").ok());
    let postgres = match postgres_url {
        Some(server) => {
            let name = format!("turnbase_bench_{}", uuid::Uuid::now_v7().simple());
            let admin = Database::connect(&DatabaseOptions::Postgres {
                url: server.clone(),
                max_connections: 1,
                connect_timeout: Duration::from_secs(10),
                statement_timeout: Duration::from_secs(30),
            })
            .await?;
            let Database::Postgres(pg) = &admin else {
                anyhow::bail!("not Postgres")
            };
            sqlx_exec(pg.pool(), &format!("CREATE DATABASE {name}")).await?;
            let url = turnbase_testkit::with_database(&server, &name);
            let run = outbox_run(
                DatabaseOptions::Postgres {
                    url,
                    max_connections: u32::try_from(args.workers + 2)?,
                    connect_timeout: Duration::from_secs(10),
                    statement_timeout: Duration::from_secs(30),
                },
                args.mails,
                args.workers,
                args.claim_batch,
                args.drains,
            )
            .await;
            sqlx_exec(
                pg.pool(),
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await?;
            admin.close().await;
            let run = run?;
            ceilings.push(into_sink(true, args.mails, args.workers).await?);
            println!("ceiling again: {:.0} mails/s", ceilings[2].per_sec);
            alone.push(into_sink(false, args.mails, args.workers).await?);
            Some(run)
        }
        None => {
            println!("postgres: skipped (pass --postgres-url or set TURNBASE_TEST_POSTGRES_URL)");
            None
        }
    };
    let (ceiling_run, ceilings) = median(ceilings);
    let ceiling = ceiling_run.per_sec;
    println!(
        "ceiling, median of {}: {ceiling:.0} mails/s (from {:.0} to {:.0}), {:.0} µs of CPU per mail",
        ceilings.len(),
        ceilings[0].per_sec,
        ceilings[ceilings.len() - 1].per_sec,
        ceiling_run.cpu_us
    );
    let (alone_run, _) = median(alone);
    let alone = alone_run.per_sec;
    println!(
        "our SMTP sender with no outbox, median: {alone:.0} mails/s, {:.0} µs of CPU per mail",
        alone_run.cpu_us
    );
    print_run("sqlite", &sqlite, ceiling);
    if let Some(run) = &postgres {
        print_run("postgres", run, ceiling);
        println!(
            "postgres drain against our sender with no outbox: {:.2}",
            run.median().mails_per_sec / alone
        );
    }
    // A real server delays its ACKs, which costs lettre's pool (no
    // TCP_NODELAY) about 40 ms per message and connection.
    let real = real_server(1000, args.workers).await?;
    match real {
        Some((lettre, ours)) => println!(
            "into aiosmtpd (a real server): pooled lettre {lettre:.0} mails/s, our sender {ours:.0} mails/s"
        ),
        None => println!("aiosmtpd: skipped (pip install aiosmtpd)"),
    }
    let json = serde_json::json!({
        "bench": "mail",
        "cores": cores,
        "mails": args.mails,
        "workers": args.workers,
        "claim_batch": args.claim_batch,
        "drains": args.drains,
        "ceiling_mails_per_sec": ceiling.round(),
        "ceiling_min_mails_per_sec": ceilings[0].per_sec.round(),
        "ceiling_max_mails_per_sec": ceilings[ceilings.len() - 1].per_sec.round(),
        "ceiling_cpu_us_per_mail": ceiling_run.cpu_us.round(),
        "sqlite_mails_per_sec": sqlite.median().mails_per_sec.round(),
        "sqlite_drains_mails_per_sec": sqlite.drains.iter().map(|d| d.mails_per_sec.round()).collect::<Vec<_>>(),
        "sqlite_ratio": ratio(sqlite.median().mails_per_sec, ceiling),
        "sqlite_cpu_us_per_mail": sqlite.median().cpu_us.round(),
        "sqlite_p99_ms": sqlite.flow.p99_ms,
        "sqlite_enqueue_per_sec": sqlite.median().enqueue_per_sec.round(),
        "sqlite_flow_mails_per_sec": sqlite.flow.mails_per_sec.round(),
        "postgres_mails_per_sec": postgres.as_ref().map(|r| r.median().mails_per_sec.round()),
        "postgres_drains_mails_per_sec": postgres.as_ref().map(|r| r.drains.iter().map(|d| d.mails_per_sec.round()).collect::<Vec<_>>()),
        "postgres_ratio": postgres.as_ref().map(|r| ratio(r.median().mails_per_sec, ceiling)),
        "postgres_cpu_us_per_mail": postgres.as_ref().map(|r| r.median().cpu_us.round()),
        "postgres_server_cpu_us_per_mail": postgres.as_ref().and_then(|r| r.median().server_cpu_us).map(f64::round),
        "postgres_p99_ms": postgres.as_ref().map(|r| r.flow.p99_ms),
        "postgres_enqueue_per_sec": postgres.as_ref().map(|r| r.median().enqueue_per_sec.round()),
        "postgres_flow_mails_per_sec": postgres.as_ref().map(|r| r.flow.mails_per_sec.round()),
        "sender_alone_mails_per_sec": alone.round(),
        "sender_alone_cpu_us_per_mail": alone_run.cpu_us.round(),
        "postgres_ratio_to_sender_alone": postgres.as_ref().map(|r| ratio(r.median().mails_per_sec, alone)),
        "aiosmtpd_lettre_mails_per_sec": real.map(|(l, _)| l.round()),
        "aiosmtpd_sender_mails_per_sec": real.map(|(_, o)| o.round()),
    });
    println!("{json}");
    Ok(())
}

/// `part / whole` to three places.
fn ratio(part: f64, whole: f64) -> f64 {
    (part / whole * 1000.0).round() / 1000.0
}

fn print_run(name: &str, run: &Run, ceiling: f64) {
    let drains: Vec<String> = run
        .drains
        .iter()
        .map(|d| format!("{:.0}", d.mails_per_sec))
        .collect();
    let m = run.median();
    let server = m
        .server_cpu_us
        .map(|us| format!(" + {us:.0} µs in Postgres"))
        .unwrap_or_default();
    println!(
        "{name}: drains {} mails/s, median {:.0} ({:.2} of the ceiling), CPU per mail {:.0} µs in this process{server}",
        drains.join(" / "),
        m.mails_per_sec,
        m.mails_per_sec / ceiling,
        m.cpu_us,
    );
    println!(
        "{name}: enqueueing and sending at once {:.0} mails/s, enqueue-to-accepted p50 {:.1} ms, p99 {:.1} ms; \
         enqueue alone {:.0} mails/s",
        run.flow.mails_per_sec, run.flow.p50_ms, run.flow.p99_ms, m.enqueue_per_sec
    );
}

pub(crate) async fn sqlx_exec(pool: &sqlx::PgPool, sql: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await?;
    Ok(())
}
