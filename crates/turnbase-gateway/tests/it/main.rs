//! The gateway push client against a real push server over loopback, and
//! the gateway edge against a real backend (`edge`).

mod edge;
mod web;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng as _;
use tokio::sync::Notify;
use turnbase_core::backoff::{Backoff, Retries};
use turnbase_gateway::{Notice, PushClient, PushClientConfig, PushHandler};
use turnbase_push::received::Event;
use turnbase_push::{ClientEventInput, Cursor, JsonPayload, PushConfig, PushService};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Event(u64),
    Notice(Notice),
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    changed: Notify,
}

impl PushHandler for Recorder {
    async fn on_event(&self, event: Event) {
        let seq = event.cursor.seq;
        self.seen.lock().expect("lock").push(Seen::Event(seq));
        self.changed.notify_waiters();
    }

    async fn on_notice(&self, notice: Notice) {
        self.seen.lock().expect("lock").push(Seen::Notice(notice));
        self.changed.notify_waiters();
    }
}

impl Recorder {
    /// Waits until `done` holds for what was seen, or fails the test.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        self.wait_for_within(PATIENCE, what, done).await
    }

    async fn wait_for_within(
        &self,
        patience: Duration,
        what: &str,
        done: impl Fn(&[Seen]) -> bool,
    ) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.changed.notified();
            {
                let seen = self.seen.lock().expect("lock");
                if done(&seen) {
                    return seen.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; seen {:?}",
                    self.seen.lock().expect("lock")
                );
            }
        }
    }

    fn events(&self) -> Vec<u64> {
        events(&self.seen.lock().expect("lock"))
    }
}

fn events(seen: &[Seen]) -> Vec<u64> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Event(n) => Some(*n),
            Seen::Notice(_) => None,
        })
        .collect()
}

fn event() -> ClientEventInput {
    ClientEventInput {
        user_id: Uuid::from_u128(1),
        device_session_id: None,
        kind: "k".into(),
        payload: JsonPayload::from_value(&serde_json::json!({})),
        event_id: String::new(),
        request_id: String::new(),
        trace_id: String::new(),
    }
}

async fn server() -> (String, PushService) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let service = PushService::new(
        PushConfig::with_window(Duration::from_secs(60)),
        &turnbase_core::telemetry::noop_meter(),
    );
    tokio::spawn(turnbase_push::server::serve(
        service.clone(),
        listener,
        PUSH_SECRET.to_string(),
        turnbase_push::server::Liveness::default(),
        std::future::pending(),
    ));
    (url, service)
}

/// The internal secret of the push listeners these tests start.
const PUSH_SECRET: &str = "push-client-test-secret-0123456789";

fn config(url: &str, base_ms: u64, max_ms: u64) -> PushClientConfig {
    PushClientConfig {
        url: url.into(),
        secret: turnbase_core::config::Secret::new(PUSH_SECRET.to_string()),
        client_id: "gw-test".into(),
        base_backoff: Duration::from_millis(base_ms),
        max_backoff: Duration::from_millis(max_ms),
        keepalive: Duration::from_secs(10),
    }
}

/// Runs `client` and waits until its subscription is up.
async fn run_until_resumed(
    client: &Arc<PushClient<Arc<Recorder>>>,
    recorder: &Recorder,
) -> tokio::task::JoinHandle<()> {
    let runner = tokio::spawn({
        let client = client.clone();
        async move { client.run().await }
    });
    recorder
        .wait_for("resumed", |s| {
            s.iter()
                .any(|s| matches!(s, Seen::Notice(Notice::Resumed { .. })))
        })
        .await;
    runner
}

#[tokio::test]
async fn events_arrive_in_order_and_the_cursor_follows_the_handler() {
    let (url, service) = server().await;
    let recorder = Arc::new(Recorder::default());
    let client = PushClient::new(config(&url, 50, 1000), recorder.clone());
    let runner = run_until_resumed(&client, &recorder).await;
    assert_eq!(
        client.cursor(),
        Cursor::new(service.epoch(), 0).to_string(),
        "positioned at the head"
    );
    for _ in 0..5 {
        service.publish_client_event(event()).expect("publish");
    }
    recorder.wait_for("five events", |s| s.len() >= 6).await;
    assert_eq!(recorder.events(), [1, 2, 3, 4, 5]);
    assert_eq!(client.cursor(), Cursor::new(service.epoch(), 5).to_string());
    client.close();
    client.close();
    tokio::time::timeout(PATIENCE, runner)
        .await
        .expect("run returns after close")
        .expect("join");
}

#[tokio::test]
async fn replaced_client_backs_off_and_resumes_from_its_cursor() {
    let (url, service) = server().await;
    let recorder = Arc::new(Recorder::default());
    let client = PushClient::new(config(&url, 200, 1000), recorder.clone());
    run_until_resumed(&client, &recorder).await;
    for _ in 0..3 {
        service.publish_client_event(event()).expect("publish");
    }
    recorder
        .wait_for("three events", |s| events(s).len() == 3)
        .await;

    // Someone else takes the client id: our client is told, backs off, and
    // then takes it back, resuming after event 3.
    let intruder = service.subscribe("gw-test", "").expect("subscribe");
    recorder
        .wait_for("replaced", |s| {
            s.iter()
                .any(|s| matches!(s, Seen::Notice(Notice::Replaced { .. })))
        })
        .await;
    for _ in 0..2 {
        service.publish_client_event(event()).expect("publish");
    }
    recorder
        .wait_for("events after resume", |s| events(s).len() == 5)
        .await;
    assert_eq!(recorder.events(), [1, 2, 3, 4, 5], "exactly once, in order");
    let seen = recorder.seen.lock().expect("lock").clone();
    let resumed = seen
        .iter()
        .filter(|s| matches!(s, Seen::Notice(Notice::Resumed { .. })))
        .count();
    assert_eq!(resumed, 2, "{seen:?}");
    match seen
        .iter()
        .find(|s| matches!(s, Seen::Notice(Notice::Replaced { .. })))
    {
        Some(Seen::Notice(Notice::Replaced { retry_in })) => {
            assert!(
                *retry_in >= Duration::from_millis(160) && *retry_in <= Duration::from_millis(240)
            );
        }
        other => panic!("{other:?}"),
    }
    drop(intruder);
    client.close();
}

#[tokio::test]
async fn stale_after_a_restart_is_reported_and_the_client_carries_on() {
    let (url, first) = server().await;
    let recorder = Arc::new(Recorder::default());
    let client = PushClient::new(config(&url, 50, 200), recorder.clone());
    // The client kept a cursor of an earlier backend life.
    first.publish_client_event(event()).expect("publish");
    client.set_cursor(Cursor::new(first.epoch() ^ 1, 1).to_string());
    tokio::spawn({
        let client = client.clone();
        async move { client.run().await }
    });
    let seen = recorder
        .wait_for("stale", |s| {
            s.iter()
                .any(|s| matches!(s, Seen::Notice(Notice::Stale { .. })))
        })
        .await;
    assert!(
        seen.iter()
            .any(|s| matches!(s, Seen::Notice(Notice::Stale { reason, .. })
            if *reason == turnbase_push::proto::stale::Reason::UnknownEpoch)),
        "{seen:?}"
    );
    first.publish_client_event(event()).expect("publish");
    recorder.wait_for("live event", |s| events(s) == [2]).await;
    client.close();
}

#[tokio::test]
async fn a_backend_gone_silent_is_noticed_by_pings_and_the_client_resumes() {
    let (url, service) = server().await;
    let partition = turnbase_testkit::Partition::start(url.trim_start_matches("http://"))
        .await
        .expect("relay");
    let relayed = format!("http://{}", partition.addr());
    let recorder = Arc::new(Recorder::default());
    let client = PushClient::new(
        PushClientConfig {
            keepalive: Duration::from_millis(500),
            ..config(&relayed, 50, 200)
        },
        recorder.clone(),
    );
    run_until_resumed(&client, &recorder).await;
    service.publish_client_event(event()).expect("publish");
    recorder.wait_for("event 1", |s| events(s) == [1]).await;

    // The connection stays open but carries nothing: only the missing
    // ping answers show that the backend is gone.
    partition.cut();
    service.publish_client_event(event()).expect("publish");
    let seen = recorder
        .wait_for("event 2 after reconnecting", |s| events(s) == [1, 2])
        .await;
    assert!(
        seen.iter()
            .any(|s| matches!(s, Seen::Notice(Notice::Disconnected { .. }))),
        "{seen:?}"
    );
    let resumed = seen
        .iter()
        .filter(|s| matches!(s, Seen::Notice(Notice::Resumed { .. })))
        .count();
    assert!(
        resumed >= 2,
        "resumed from its cursor, nothing lost: {seen:?}"
    );
    client.close();
}

#[tokio::test(start_paused = true)]
async fn reconnects_follow_the_backoff_sequence() {
    // Nothing listens here: every attempt fails at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let recorder = Arc::new(Recorder::default());
    let client = PushClient::new(config(&url, 500, 4000), recorder.clone());
    let seed = 42;
    tokio::spawn({
        let client = client.clone();
        async move {
            client
                .run_with_rng(rand::rngs::StdRng::seed_from_u64(seed))
                .await
        }
    });
    // Time is paused and jumps ahead while the client sleeps.
    let seen = recorder
        .wait_for_within(Duration::from_secs(600), "six failures", |s| s.len() >= 6)
        .await;
    let delays: Vec<Duration> = seen
        .iter()
        .map(|s| match s {
            Seen::Notice(Notice::Disconnected { retry_in, .. }) => *retry_in,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let mut model = Retries::new(Backoff::new(
        Duration::from_millis(500),
        Duration::from_millis(4000),
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let expected: Vec<Duration> = (0..delays.len())
        .map(|_| model.next_delay(&mut rng))
        .collect();
    assert_eq!(delays, expected);
    for (delay, step) in delays.iter().zip([500u64, 1000, 2000, 4000, 4000, 4000]) {
        let step = Duration::from_millis(step);
        assert!(
            *delay >= step.mul_f64(0.8) && *delay <= step.mul_f64(1.2),
            "{delay:?} vs {step:?}"
        );
    }
    client.close();
}
