//! Publisher and subscription tests, including the property test of the
//! resume rule against a model of the ring.

use std::time::Duration;

use proptest::prelude::*;
use prost::Message as _;
use uuid::Uuid;

use super::*;
use crate::proto::push_message::Kind as Msg;

const EPOCH: u64 = 0xfeed_0000_0000_0001;

fn config(capacity: usize, window_ms: u64) -> PushConfig {
    PushConfig {
        ring: RingLimits {
            capacity,
            max_bytes: usize::MAX,
            max_age: Duration::from_millis(window_ms),
        },
        max_payload_bytes: 1024,
        heartbeat_interval: Duration::from_secs(3600),
        batch_max_events: 7,
        batch_max_bytes: usize::MAX,
    }
}

fn event(n: u64) -> ClientEventInput {
    ClientEventInput {
        user_id: Uuid::from_u128(1),
        device_session_id: None,
        kind: "test".into(),
        payload: JsonPayload::from_value(&serde_json::json!({ "n": n })),
        event_id: n.to_string(),
        request_id: String::new(),
        trace_id: String::new(),
    }
}

/// What a subscriber saw: the opening, then event sequence numbers and
/// stale notices, without waiting.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    opening: Option<Msg>,
    seqs: Vec<u64>,
    stale: Vec<(i32, u64)>,
    /// Events (`Ok(seq)`) and lapped notices (`Err(lost)`) in arrival order.
    timeline: Vec<Result<u64, u64>>,
    end: Option<SubscriptionEnd>,
}

fn drain(sub: &mut Subscription, seen: &mut Seen) {
    while let Some(next) = sub.ready() {
        let frame = match next {
            Ok(frame) => frame,
            Err(end) => {
                seen.end = Some(end);
                return;
            }
        };
        let msg = proto::PushMessage::decode(frame.to_bytes()).expect("frames decode");
        match msg.kind.expect("kind is set") {
            Msg::Events(events) => {
                assert!(!events.events.is_empty(), "no empty batches");
                for e in events.events {
                    let c = Cursor::parse(&e.cursor).expect("event cursors parse");
                    assert_eq!(c.epoch, EPOCH);
                    seen.seqs.push(c.seq);
                    seen.timeline.push(Ok(c.seq));
                }
            }
            Msg::Stale(s) if seen.opening.is_some() => {
                assert_eq!(
                    s.reason,
                    StaleReason::Evicted as i32,
                    "only lapping happens mid-stream"
                );
                seen.stale.push((s.reason, s.lost));
                seen.timeline.push(Err(s.lost));
            }
            other => {
                assert!(seen.opening.is_none(), "one opening: {other:?}");
                seen.opening = Some(other);
            }
        }
    }
}

#[test]
fn publisher_validates_its_input() {
    let svc = PushService::with_epoch(config(10, 1000), EPOCH, &noop_meter());
    let mut e = event(1);
    e.user_id = Uuid::nil();
    assert_eq!(svc.publish_client_event(e), Err(PublishError::NilUser));
    let mut e = event(1);
    e.kind = "  ".into();
    assert_eq!(svc.publish_client_event(e), Err(PublishError::EmptyKind));
    let mut e = event(1);
    e.payload = JsonPayload::parse(
        vec![b' '; 1024]
            .into_iter()
            .chain(*b"0")
            .collect::<Vec<u8>>(),
    )
    .expect("a number after spaces");
    assert_eq!(
        svc.publish_client_event(e),
        Err(PublishError::PayloadTooLarge {
            size: 1025,
            max: 1024
        })
    );
    let mut e = event(1);
    e.kind = "k".repeat(129).into();
    assert!(matches!(
        svc.publish_client_event(e),
        Err(PublishError::FieldTooLong { field: "kind", .. })
    ));
    assert_eq!(
        svc.publish_session_invalidation(Uuid::nil(), None, "revoked"),
        Err(PublishError::NilUser)
    );
    assert_eq!(svc.head().seq, 0, "nothing was published");
    let c = svc.publish_client_event(event(1)).expect("valid");
    assert_eq!(c, Cursor::new(EPOCH, 1));
    let c = svc
        .publish_session_invalidation(Uuid::from_u128(2), Some(Uuid::from_u128(3)), "revoked")
        .expect("valid");
    assert_eq!(c.seq, 2);
    svc.close();
    assert_eq!(
        svc.publish_client_event(event(3)),
        Err(PublishError::Closed)
    );
}

#[test]
fn a_batch_is_published_in_order_and_bad_events_are_refused_alone() {
    let svc = PushService::with_epoch(config(100, 60_000), EPOCH, &noop_meter());
    svc.publish_client_event(event(1)).expect("publish");
    let mut sub = svc
        .subscribe("gw", &Cursor::new(EPOCH, 1).to_string())
        .expect("subscribe");
    let mut nil = event(3);
    nil.user_id = Uuid::nil();
    let batch = [event(2), nil, event(4), event(5)];
    let results = svc.publish_client_events(&batch);
    assert_eq!(
        results,
        vec![
            Ok(Cursor::new(EPOCH, 2)),
            Err(PublishError::NilUser),
            Ok(Cursor::new(EPOCH, 3)),
            Ok(Cursor::new(EPOCH, 4)),
        ]
    );
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen);
    assert_eq!(seen.seqs, vec![2, 3, 4]);
    // The events carry what was published, in the batch's order.
    let mut sub = svc
        .subscribe("gw2", &Cursor::new(EPOCH, 1).to_string())
        .expect("subscribe");
    let Some(Ok(_opening)) = sub.ready() else {
        panic!("an opening first")
    };
    let events = next_events(&mut sub);
    let payloads: Vec<String> = events
        .iter()
        .map(|e| match &e.kind {
            Some(proto::push_event::Kind::ClientEvent(c)) => {
                assert_eq!(c.user_id, Uuid::from_u128(1).to_string());
                String::from_utf8(c.payload.to_vec()).expect("utf-8")
            }
            other => panic!("a client event, not {other:?}"),
        })
        .collect();
    assert_eq!(payloads, [r#"{"n":2}"#, r#"{"n":4}"#, r#"{"n":5}"#]);
    assert!(svc.publish_client_events(&[]).is_empty());
    svc.close();
    assert_eq!(
        svc.publish_client_events(&[event(6), event(7)]),
        vec![Err(PublishError::Closed), Err(PublishError::Closed)]
    );
    assert_eq!(svc.head().seq, 4);
}

/// The events of the subscription's next frame, which must be a batch.
fn next_events(sub: &mut Subscription) -> Vec<proto::PushEvent> {
    let Some(Ok(frame)) = sub.ready() else {
        panic!("a batch")
    };
    match proto::PushMessage::decode(frame.to_bytes())
        .expect("decodes")
        .kind
    {
        Some(Msg::Events(events)) => events.events,
        other => panic!("events, not {other:?}"),
    }
}

#[test]
fn publish_times_are_the_system_clock_in_milliseconds() {
    let svc = PushService::with_epoch(config(100, 60_000), EPOCH, &noop_meter());
    let mut sub = svc.subscribe("gw", "").expect("subscribe");
    let before = system_ms();
    svc.publish_client_event(event(1)).expect("publish");
    std::thread::sleep(Duration::from_millis(1100));
    // Past the re-anchoring interval: the offset is taken again.
    svc.publish_client_event(event(2)).expect("publish");
    let after = system_ms();
    let _opening = sub.ready();
    let events = next_events(&mut sub);
    let times: Vec<i64> = events.iter().map(|e| e.published_at_ms).collect();
    assert_eq!(times.len(), 2);
    // The first time comes from the offset taken when the service started;
    // the monotonic clock and a system clock being slewed may part by up to
    // half a millisecond a second, so it may read one millisecond early.
    // The second was taken right after re-anchoring and is exact.
    assert!(
        before - 1 <= times[0] && times[0] + 1000 <= times[1] && times[1] <= after,
        "{before} <= {times:?} <= {after}"
    );
}

fn system_ms() -> i64 {
    system_ns().div_euclid(1_000_000)
}

#[test]
fn subscribe_rejects_bad_client_ids_and_a_closed_service() {
    let svc = PushService::with_epoch(config(10, 1000), EPOCH, &noop_meter());
    assert_eq!(
        svc.subscribe("", "").err(),
        Some(SubscribeError::InvalidClientId)
    );
    assert_eq!(
        svc.subscribe("a\nb", "").err(),
        Some(SubscribeError::InvalidClientId)
    );
    assert_eq!(
        svc.subscribe(&"g".repeat(257), "").err(),
        Some(SubscribeError::InvalidClientId)
    );
    svc.close();
    svc.close();
    assert_eq!(svc.subscribe("gw", "").err(), Some(SubscribeError::Closed));
}

#[tokio::test(start_paused = true)]
async fn stale_reasons() {
    let svc = PushService::with_epoch(config(3, 1000), EPOCH, &noop_meter());
    for n in 0..5 {
        svc.publish_client_event(event(n)).expect("publish");
    }
    let cases = [
        ("garbage", StaleReason::Malformed, 0),
        ("0000000000000001.2", StaleReason::UnknownEpoch, 0),
        (&*Cursor::new(EPOCH, 9).to_string(), StaleReason::Future, 0),
        (&*Cursor::new(EPOCH, 1).to_string(), StaleReason::Evicted, 4),
    ];
    for (cursor, reason, lost) in cases {
        let sub = svc.subscribe("gw", cursor).expect("subscribe");
        assert_eq!(sub.opening(), &Opening::Stale { reason, lost }, "{cursor}");
    }
    let sub = svc
        .subscribe("gw", &Cursor::new(EPOCH, 2).to_string())
        .expect("subscribe");
    assert_eq!(
        sub.opening(),
        &Opening::Resumed {
            head: Cursor::new(EPOCH, 5)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn replaced_and_closed_subscriptions_end() {
    let svc = PushService::with_epoch(config(100, 1000), EPOCH, &noop_meter());
    let mut first = svc.subscribe("gw", "").expect("first");
    let mut seen = Seen::default();
    drain(&mut first, &mut seen);
    let mut second = svc.subscribe("gw", "").expect("second");
    assert_eq!(first.next().await.err(), Some(SubscriptionEnd::Replaced));
    assert_eq!(svc.subscriber_count(), 1);
    drop(first);
    assert_eq!(
        svc.subscriber_count(),
        1,
        "dropping the replaced one keeps the new one"
    );

    svc.publish_client_event(event(1)).expect("publish");
    svc.publish_client_event(event(2)).expect("publish");
    svc.close();
    let mut seen = Seen::default();
    drain(&mut second, &mut seen);
    assert_eq!(
        seen.seqs,
        [1, 2],
        "events published before close are delivered"
    );
    assert_eq!(seen.end, Some(SubscriptionEnd::Closed));
    drop(second);
    assert_eq!(svc.subscriber_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn heartbeat_when_idle_names_the_subscriber_position() {
    let mut c = config(100, 60_000);
    c.heartbeat_interval = Duration::from_secs(5);
    let svc = PushService::with_epoch(c, EPOCH, &noop_meter());
    svc.publish_client_event(event(1)).expect("publish");
    let mut sub = svc.subscribe("gw", "").expect("subscribe");
    let _opening = sub.next().await.expect("opening");
    let began = Instant::now();
    let frame = sub.next().await.expect("heartbeat");
    assert_eq!(began.elapsed(), Duration::from_secs(5));
    let msg = proto::PushMessage::decode(frame.to_bytes()).expect("decode");
    assert_eq!(
        msg.kind,
        Some(Msg::Heartbeat(proto::Heartbeat {
            head: Cursor::new(EPOCH, 1).to_string()
        }))
    );
}

#[tokio::test(start_paused = true)]
async fn live_events_wake_a_waiting_subscriber() {
    let svc = PushService::with_epoch(config(100, 60_000), EPOCH, &noop_meter());
    let mut sub = svc.subscribe("gw", "").expect("subscribe");
    let _opening = sub.next().await.expect("opening");
    let publisher = svc.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        publisher.publish_client_event(event(1)).expect("publish");
    });
    let frame = sub.next().await.expect("events");
    let msg = proto::PushMessage::decode(frame.to_bytes()).expect("decode");
    assert!(matches!(msg.kind, Some(Msg::Events(e)) if e.events.len() == 1));
    task.await.expect("publisher task");
}

#[tokio::test(start_paused = true)]
async fn a_lapped_subscriber_gets_stale_and_continues_from_the_head() {
    let svc = PushService::with_epoch(config(10, 60_000), EPOCH, &noop_meter());
    let mut sub = svc.subscribe("gw", "").expect("subscribe");
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen);
    for n in 0..25 {
        svc.publish_client_event(event(n))
            .expect("publisher never waits");
    }
    drain(&mut sub, &mut seen);
    assert_eq!(seen.stale, [(StaleReason::Evicted as i32, 25)]);
    assert!(seen.seqs.is_empty());
    svc.publish_client_event(event(26)).expect("publish");
    drain(&mut sub, &mut seen);
    assert_eq!(seen.seqs, [26]);
}

#[tokio::test(start_paused = true)]
async fn a_lapped_subscriber_that_missed_an_invalidation_is_ended() {
    let svc = PushService::with_epoch(config(10, 60_000), EPOCH, &noop_meter());
    let mut sub = svc.subscribe("gw", "").expect("subscribe");
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen);
    svc.publish_session_invalidation(Uuid::from_u128(9), None, "blocked")
        .expect("publish");
    for n in 0..20 {
        svc.publish_client_event(event(n)).expect("publish");
    }
    drain(&mut sub, &mut seen);
    assert_eq!(
        seen.stale,
        [(StaleReason::Evicted as i32, 21)],
        "Stale first"
    );
    assert_eq!(
        seen.end,
        Some(SubscriptionEnd::InvalidationLost),
        "then the end"
    );
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Advance(u16),
    /// Resubscribe from the cursor of the published event at this index
    /// (modulo the history), or from the head when there is none.
    Resume(usize),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..20).prop_map(Op::Publish),
        (1u16..400).prop_map(Op::Advance),
        any::<usize>().prop_map(Op::Resume),
        Just(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For any interleaving, a subscriber resuming from a cursor gets
    /// exactly the events after it, in order, once — or a Stale whose
    /// reason and count match a model of the ring.
    #[test]
    fn resume_is_exact_or_stale(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async move {
            const CAPACITY: usize = 16;
            const WINDOW_MS: u64 = 1000;
            let svc = PushService::with_epoch(config(CAPACITY, WINDOW_MS), EPOCH, &noop_meter());
            // The model: publish time of every event, by seq - 1.
            let mut published: Vec<Instant> = Vec::new();
            let mut sub: Option<(Subscription, u64, Seen)> = None;
            for op in ops {
                match op {
                    Op::Publish(n) => {
                        for _ in 0..n {
                            svc.publish_client_event(event(0)).expect("publish");
                            published.push(Instant::now());
                        }
                    }
                    Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms.into())).await,
                    Op::Resume(i) => {
                        if let Some((mut s, from, mut seen)) = sub.take() {
                            drain(&mut s, &mut seen);
                            check(&seen, from, published.len() as u64);
                        }
                        let head = published.len() as u64;
                        let from = if published.is_empty() { 0 } else { (i % (published.len() + 1)) as u64 };
                        let s = svc.subscribe("gw", &Cursor::new(EPOCH, from).to_string()).expect("subscribe");
                        // The model of what the ring still holds.
                        let now = Instant::now();
                        let oldest_by_count = head.saturating_sub(CAPACITY as u64) + 1;
                        let oldest_by_age = published
                            .iter()
                            .position(|t| now.saturating_duration_since(*t) <= Duration::from_millis(WINDOW_MS))
                            .map_or(head + 1, |p| p as u64 + 1);
                        let oldest = oldest_by_count.max(oldest_by_age);
                        let covered = from + 1 >= oldest;
                        let expected = if covered {
                            Opening::Resumed { head: Cursor::new(EPOCH, head) }
                        } else {
                            Opening::Stale { reason: StaleReason::Evicted, lost: head - from }
                        };
                        assert_eq!(s.opening(), &expected, "from {from}, head {head}, oldest {oldest}");
                        let start = if covered { from } else { head };
                        sub = Some((s, start, Seen::default()));
                    }
                    Op::Drain => {
                        if let Some((s, _, seen)) = sub.as_mut() {
                            drain(s, seen);
                        }
                    }
                }
            }
            if let Some((mut s, from, mut seen)) = sub.take() {
                drain(&mut s, &mut seen);
                check(&seen, from, published.len() as u64);
            }
        });
    }
}

/// Events after `from` up to `head`, once and in order, except where the
/// subscriber was lapped: there a Stale counts exactly the events skipped.
fn check(seen: &Seen, from: u64, head: u64) {
    let mut next = from + 1;
    for item in &seen.timeline {
        match *item {
            Ok(seq) => {
                assert_eq!(seq, next, "in order, once: {seen:?}");
                next += 1;
            }
            Err(lost) => {
                assert!(lost > 0, "{seen:?}");
                next += lost;
            }
        }
    }
    assert_eq!(
        next,
        head + 1,
        "everything up to the head is accounted for: {seen:?}"
    );
}

/// A meter that records nothing.
fn noop_meter() -> opentelemetry::metrics::Meter {
    use opentelemetry::metrics::MeterProvider as _;
    opentelemetry::metrics::noop::NoopMeterProvider::new().meter("test")
}
