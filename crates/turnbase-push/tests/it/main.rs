//! The push service over real gRPC on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use turnbase_push::proto::push_message::Kind as Msg;
use turnbase_push::proto::{self, GatewaySubscribeRequest, PushMessage, push_client::PushClient};
use turnbase_push::server::Liveness;
use turnbase_push::{ClientEventInput, Cursor, JsonPayload, PushConfig, PushService, RingLimits};
use uuid::Uuid;

/// How long a test waits for a message before failing.
const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    service: PushService,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

fn config(capacity: usize, window: Duration) -> PushConfig {
    PushConfig {
        ring: RingLimits {
            capacity,
            max_bytes: 64 * 1024 * 1024,
            max_age: window,
        },
        heartbeat_interval: Duration::from_secs(60),
        ..PushConfig::with_window(window)
    }
}

async fn start(config: PushConfig) -> Server {
    start_with(config, Liveness::default()).await
}

async fn start_with(config: PushConfig, liveness: Liveness) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = PushService::new(config, &noop_meter());
    let stop = CancellationToken::new();
    let task = tokio::spawn(turnbase_push::server::serve(
        service.clone(),
        listener,
        SECRET.to_string(),
        liveness,
        stop.clone().cancelled_owned(),
    ));
    Server {
        addr,
        service,
        stop,
        task,
    }
}

fn event(n: u64) -> ClientEventInput {
    ClientEventInput {
        user_id: Uuid::from_u128(7),
        device_session_id: None,
        kind: "game.turn".into(),
        payload: JsonPayload::from_value(&serde_json::json!({ "n": n })),
        event_id: format!("e{n}"),
        request_id: String::new(),
        trace_id: String::new(),
    }
}

/// The internal secret of the listeners these tests start.
const SECRET: &str = "push-test-internal-secret-0123456789";

/// A subscription request carrying `secret` (as a gateway sends it).
fn request(id: &str, cursor: &str, secret: &str) -> tonic::Request<GatewaySubscribeRequest> {
    let mut request = tonic::Request::new(GatewaySubscribeRequest {
        gateway_client_id: id.into(),
        cursor: cursor.into(),
    });
    request.metadata_mut().insert(
        "authorization",
        turnbase_push::server::authorization(secret).expect("ASCII"),
    );
    request
}

async fn subscribe(addr: SocketAddr, id: &str, cursor: &str) -> Streaming<PushMessage> {
    let mut client = PushClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    client
        .subscribe_push(request(id, cursor, SECRET))
        .await
        .expect("subscribe")
        .into_inner()
}

async fn next(stream: &mut Streaming<PushMessage>) -> Result<Msg, tonic::Status> {
    match tokio::time::timeout(PATIENCE, stream.message()).await {
        Ok(Ok(Some(m))) => Ok(m.kind.expect("kind is set")),
        Ok(Ok(None)) => panic!("stream ended without a status"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no message within {PATIENCE:?}"),
    }
}

/// Reads until `count` events arrived; returns their cursors.
async fn events(stream: &mut Streaming<PushMessage>, count: usize) -> Vec<Cursor> {
    let mut got = Vec::new();
    while got.len() < count {
        match next(stream).await.expect("stream stays open") {
            Msg::Events(e) => got.extend(
                e.events
                    .iter()
                    .map(|e| Cursor::parse(&e.cursor).expect("cursor")),
            ),
            Msg::Heartbeat(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

fn seqs(cursors: &[Cursor]) -> Vec<u64> {
    cursors.iter().map(|c| c.seq).collect()
}

#[tokio::test]
async fn resume_after_disconnect_replays_exactly_once() {
    let server = start(config(1000, Duration::from_secs(60))).await;
    let mut stream = subscribe(server.addr, "gw-1", "").await;
    assert!(matches!(next(&mut stream).await, Ok(Msg::Resumed(_))));
    for n in 1..=5 {
        server
            .service
            .publish_client_event(event(n))
            .expect("publish");
    }
    let first = events(&mut stream, 5).await;
    assert_eq!(seqs(&first), [1, 2, 3, 4, 5]);
    let last_handled = first[2];
    drop(stream);

    for n in 6..=8 {
        server
            .service
            .publish_client_event(event(n))
            .expect("publish");
    }
    let mut stream = subscribe(server.addr, "gw-1", &last_handled.to_string()).await;
    match next(&mut stream).await.expect("opening") {
        Msg::Resumed(r) => assert_eq!(r.head, Cursor::new(server.service.epoch(), 8).to_string()),
        other => panic!("expected Resumed, got {other:?}"),
    }
    assert_eq!(seqs(&events(&mut stream, 5).await), [4, 5, 6, 7, 8]);
    server
        .service
        .publish_client_event(event(9))
        .expect("publish");
    assert_eq!(
        seqs(&events(&mut stream, 1).await),
        [9],
        "then live, no duplicates"
    );
}

#[tokio::test]
async fn a_second_subscription_replaces_the_first() {
    let server = start(config(1000, Duration::from_secs(60))).await;
    let mut first = subscribe(server.addr, "gw-1", "").await;
    assert!(matches!(next(&mut first).await, Ok(Msg::Resumed(_))));
    let mut second = subscribe(server.addr, "gw-1", "").await;
    assert!(matches!(next(&mut second).await, Ok(Msg::Resumed(_))));
    let status = next(&mut first).await.expect_err("the first stream ends");
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(status.message().starts_with("replaced"), "{status:?}");
    server
        .service
        .publish_client_event(event(1))
        .expect("publish");
    assert_eq!(seqs(&events(&mut second, 1).await), [1]);
}

#[tokio::test]
async fn events_older_than_the_freshness_window_are_not_replayed() {
    let server = start(config(1000, Duration::from_millis(300))).await;
    let c1 = server
        .service
        .publish_client_event(event(1))
        .expect("publish");
    server
        .service
        .publish_client_event(event(2))
        .expect("publish");
    // Let the window pass: this is the precondition, not a wait for a result.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut stream = subscribe(server.addr, "gw-1", &c1.to_string()).await;
    match next(&mut stream).await.expect("opening") {
        Msg::Stale(s) => {
            assert_eq!(s.reason, proto::stale::Reason::Evicted as i32);
            assert_eq!(s.lost, 1);
            assert_eq!(s.oldest, "", "the ring is empty");
            assert_eq!(s.head, Cursor::new(server.service.epoch(), 2).to_string());
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    // The head itself still resumes, with nothing to replay.
    let head = server.service.head().to_string();
    let mut stream = subscribe(server.addr, "gw-2", &head).await;
    assert!(matches!(next(&mut stream).await, Ok(Msg::Resumed(_))));
}

#[tokio::test]
async fn a_restarted_backend_has_a_new_epoch() {
    let before = start(config(1000, Duration::from_secs(60))).await;
    let cursor = before
        .service
        .publish_client_event(event(1))
        .expect("publish");
    before.stop.cancel();
    before.task.await.expect("join").expect("clean stop");
    let after = start(config(1000, Duration::from_secs(60))).await;
    assert_ne!(after.service.epoch(), before.service.epoch());
    after
        .service
        .publish_client_event(event(1))
        .expect("publish");
    let mut stream = subscribe(after.addr, "gw-1", &cursor.to_string()).await;
    match next(&mut stream).await.expect("opening") {
        Msg::Stale(s) => assert_eq!(s.reason, proto::stale::Reason::UnknownEpoch as i32),
        other => panic!("expected Stale, got {other:?}"),
    }
    after
        .service
        .publish_client_event(event(2))
        .expect("publish");
    assert_eq!(
        seqs(&events(&mut stream, 1).await),
        [2],
        "live from the head"
    );
}

#[tokio::test]
async fn malformed_cursor_and_bad_client_id() {
    let server = start(config(1000, Duration::from_secs(60))).await;
    let mut stream = subscribe(server.addr, "gw-1", "../../etc/passwd").await;
    match next(&mut stream).await.expect("opening") {
        Msg::Stale(s) => {
            assert_eq!(s.reason, proto::stale::Reason::Malformed as i32);
            assert_eq!(s.requested, "../../etc/passwd");
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    let mut client = PushClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let status = client
        .subscribe_push(request("", "", SECRET))
        .await
        .expect_err("empty client id");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// The stream carries every user's events: without the internal secret
/// nothing is streamed and nobody is subscribed.
#[tokio::test]
async fn subscribing_needs_the_internal_secret() {
    let server = start(config(1000, Duration::from_secs(60))).await;
    let mut client = PushClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let status = client
        .subscribe_push(GatewaySubscribeRequest {
            gateway_client_id: "gw-1".into(),
            cursor: String::new(),
        })
        .await
        .expect_err("no secret");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = client
        .subscribe_push(request("gw-1", "", "not-the-secret-0123456789abcdef"))
        .await
        .expect_err("a wrong secret");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(server.service.subscriber_count(), 0);
    let mut stream = subscribe(server.addr, "gw-1", "").await;
    assert!(matches!(next(&mut stream).await, Ok(Msg::Resumed(_))));
}

/// Reads until the server closes the connection; fails the test if it
/// is still open after `patience`.
async fn closed_within(stream: &mut tokio::net::TcpStream, patience: Duration) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(patience, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {patience:?}"
    );
}

#[tokio::test]
async fn connections_without_an_authorized_request_are_closed_in_time() {
    use tokio::io::AsyncWriteExt as _;
    let server = start_with(
        config(1000, Duration::from_secs(60)),
        Liveness {
            handshake: Duration::from_secs(1),
            keepalive: Duration::from_secs(60),
        },
    )
    .await;
    // Silent from the start.
    let mut silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    // A complete HTTP/2 handshake (preface and settings), and then nothing:
    // the server answers, and still closes it when the time is up.
    let mut idle = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    // A subscription with the secret lifts the deadline for good.
    let mut stream = subscribe(server.addr, "gw-1", "").await;
    assert!(matches!(next(&mut stream).await, Ok(Msg::Resumed(_))));

    closed_within(&mut silent, PATIENCE).await;
    closed_within(&mut idle, PATIENCE).await;
    // Well past the deadline, the subscription still streams.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server
        .service
        .publish_client_event(event(1))
        .expect("publish");
    assert_eq!(seqs(&events(&mut stream, 1).await), [1]);
}

#[tokio::test]
async fn a_subscriber_gone_silent_is_dropped_when_pings_go_unanswered() {
    let server = start_with(
        config(1000, Duration::from_secs(60)),
        Liveness {
            handshake: Duration::from_secs(10),
            keepalive: Duration::from_millis(500),
        },
    )
    .await;
    let partition = turnbase_testkit::Partition::start(&server.addr.to_string())
        .await
        .expect("relay");
    let mut stream = subscribe(partition.addr(), "gw-1", "").await;
    assert!(matches!(next(&mut stream).await, Ok(Msg::Resumed(_))));
    assert_eq!(server.service.subscriber_count(), 1);
    // The gateway's host is gone without closing anything: only the
    // missing ping answers tell.
    partition.cut();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.service.subscriber_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent subscriber is still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapped_slow_subscriber_gets_stale_while_others_are_unaffected() {
    const EVENTS: u64 = 40_000;
    let server = start(config(8192, Duration::from_secs(60))).await;
    let mut slow = subscribe(server.addr, "slow", "").await;
    assert!(matches!(next(&mut slow).await, Ok(Msg::Resumed(_))));
    let mut fast = subscribe(server.addr, "fast", "").await;
    assert!(matches!(next(&mut fast).await, Ok(Msg::Resumed(_))));

    let publisher = server.service.clone();
    let fast_reader = tokio::spawn(async move { events(&mut fast, EVENTS as usize).await });
    // The slow subscriber reads nothing while all of this is published:
    // the publisher must never wait for it.
    for n in 1..=EVENTS {
        let mut e = event(n);
        e.payload = JsonPayload::from_value(&serde_json::json!({ "n": n, "pad": "x".repeat(200) }));
        publisher.publish_client_event(e).expect("publish");
        if n % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let fast_seen = fast_reader.await.expect("fast reader");
    assert_eq!(
        seqs(&fast_seen),
        (1..=EVENTS).collect::<Vec<_>>(),
        "fast got all, in order"
    );

    // Now the slow one reads: whatever was already in flight, then Stale.
    let mut delivered = Vec::new();
    let lost = loop {
        match next(&mut slow).await.expect("open") {
            Msg::Events(e) => delivered.extend(
                e.events
                    .iter()
                    .map(|e| Cursor::parse(&e.cursor).expect("c").seq),
            ),
            Msg::Stale(s) => {
                assert_eq!(s.reason, proto::stale::Reason::Evicted as i32);
                assert_eq!(s.head, server.service.head().to_string());
                break s.lost;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    let expected: Vec<u64> = (1..=delivered.len() as u64).collect();
    assert_eq!(delivered, expected, "what arrived before Stale is in order");
    assert_eq!(
        delivered.len() as u64 + lost,
        EVENTS,
        "Stale counts exactly what was skipped"
    );
    assert!(lost > 0);
    server
        .service
        .publish_client_event(event(0))
        .expect("publish");
    assert_eq!(seqs(&events(&mut slow, 1).await), [EVENTS + 1], "then live");
}

#[tokio::test]
async fn shutdown_delivers_what_was_published_then_ends_streams() {
    let server = start(config(1000, Duration::from_secs(60))).await;
    let mut stream = subscribe(server.addr, "gw-1", "").await;
    assert!(matches!(next(&mut stream).await, Ok(Msg::Resumed(_))));
    for n in 1..=3 {
        server
            .service
            .publish_client_event(event(n))
            .expect("publish");
    }
    server.stop.cancel();
    assert_eq!(seqs(&events(&mut stream, 3).await), [1, 2, 3]);
    let status = next(&mut stream).await.expect_err("stream ends");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("server stops in time")
        .expect("join")
        .expect("clean stop");
    // New subscriptions are refused.
    assert!(
        PushClient::connect(format!("http://{}", server.addr))
            .await
            .is_err()
    );
}

/// A meter that records nothing.
fn noop_meter() -> opentelemetry::metrics::Meter {
    use opentelemetry::metrics::MeterProvider as _;
    opentelemetry::metrics::noop::NoopMeterProvider::new().meter("test")
}
