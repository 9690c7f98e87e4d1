//! The push service: the publisher API used by domain services, and the
//! subscriptions that gateways read through `SubscribePush`.
//!
//! A subscription is a position in the ring, not a queue: it reads the
//! events after its position, so replay and live tail are one loop, and the
//! publisher never waits for anyone. A subscriber that falls behind further
//! than the ring holds is told so (`Stale{evicted}`) and continues from the
//! head.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, ObservableGauge};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cursor::Cursor;
use crate::payload::JsonPayload;
use crate::proto;
use crate::proto::stale::Reason as StaleReason;
use crate::ring::{Entry, EventKind, Evicted, Ring, RingLimits};
use crate::wire::{ClientEventFields, Frame, finish_event, reserve_client_event, reserve_event};

/// Longest event kind, id and reason texts accepted from producers.
const MAX_KIND_LEN: usize = 128;
const MAX_ID_LEN: usize = 256;
/// Longest gateway client id accepted from subscribers.
const MAX_CLIENT_ID_LEN: usize = 256;

#[derive(Debug, Clone)]
pub struct PushConfig {
    pub ring: RingLimits,
    pub max_payload_bytes: usize,
    pub heartbeat_interval: Duration,
    /// Most events and (beyond the first event) bytes in one frame.
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
}

impl PushConfig {
    /// Settings for a given freshness window, with the documented defaults
    /// for everything else.
    pub fn with_window(freshness_window: Duration) -> Self {
        Self {
            ring: RingLimits {
                capacity: 65_536,
                max_bytes: 64 * 1024 * 1024,
                max_age: freshness_window,
            },
            max_payload_bytes: 64 * 1024,
            heartbeat_interval: Duration::from_secs(15),
            batch_max_events: 512,
            // Below glibc's threshold for serving an allocation with its
            // own mapping (128 KiB): frames of up to 1 MiB were each
            // mapped and unmapped as they were encoded and sent, and the
            // publishing process took ~15,000 page faults a second at full
            // rate (~2,000 with 64 KiB).
            batch_max_bytes: 64 * 1024,
        }
    }
}

/// A client event to publish.
#[derive(Debug, Clone)]
pub struct ClientEventInput {
    pub user_id: Uuid,
    /// Only this device session receives it, when set.
    pub device_session_id: Option<Uuid>,
    /// The event's kind; usually a constant, so borrowed, not allocated.
    pub kind: Cow<'static, str>,
    /// A JSON document, checked where it was made.
    pub payload: JsonPayload,
    pub event_id: String,
    pub request_id: String,
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("a user id is required")]
    NilUser,
    #[error("an event kind is required")]
    EmptyKind,
    #[error("the payload is {size} bytes, more than the {max} allowed")]
    PayloadTooLarge { size: usize, max: usize },
    #[error("{field} is longer than {max} bytes")]
    FieldTooLong { field: &'static str, max: usize },
    #[error("the push service is closed")]
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("gateway_client_id must be 1 to {MAX_CLIENT_ID_LEN} printable characters")]
    InvalidClientId,
    #[error("the push service is closed")]
    Closed,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// A newer subscription with the same gateway client id took over.
    Replaced,
    /// The service closed; every event up to the head was delivered first.
    Closed,
    /// The subscriber was lapped and what it missed included a session
    /// invalidation: after the `Stale` saying so, the stream ends, so that
    /// the loss cannot go unnoticed.
    InvalidationLost,
}

/// What the first message of a subscription said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    Resumed { head: Cursor },
    Stale { reason: StaleReason, lost: u64 },
}

#[derive(Clone)]
pub struct PushService {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: u64,
    config: PushConfig,
    state: Mutex<State>,
    /// Wakes subscribers waiting for events; only signalled when `waiting`
    /// says someone is, so a publish nobody waits for costs no wakeup.
    wake: Notify,
    waiting: AtomicUsize,
    closed: CancellationToken,
    metrics: Option<Metrics>,
    clock: WallClock,
}

struct State {
    ring: Ring,
    subscribers: HashMap<String, Registration>,
    next_id: u64,
    closed: bool,
}

struct Registration {
    id: u64,
    replaced: CancellationToken,
    position: u64,
}

struct Metrics {
    events: Counter<u64>,
    stale: Counter<u64>,
    replaced: Counter<u64>,
    _subscribers: ObservableGauge<u64>,
    _lag: ObservableGauge<u64>,
}

/// A random epoch; zero is avoided so that an all-zero cursor is never
/// valid.
fn fresh_epoch() -> u64 {
    loop {
        let e: u64 = rand::random();
        if e != 0 {
            return e;
        }
    }
}

impl PushService {
    /// A service with a fresh random epoch.
    pub fn new(config: PushConfig, meter: &Meter) -> Self {
        Self::build(config, fresh_epoch(), Some(meter))
    }

    /// A service that records no metrics at all: for the push benchmark,
    /// which compares the pipeline itself with a peer that has none (even
    /// a no-op meter costs the attributes built for each event).
    pub fn without_metrics(config: PushConfig) -> Self {
        Self::build(config, fresh_epoch(), None)
    }

    pub fn with_epoch(config: PushConfig, epoch: u64, meter: &Meter) -> Self {
        Self::build(config, epoch, Some(meter))
    }

    fn build(config: PushConfig, epoch: u64, meter: Option<&Meter>) -> Self {
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            epoch,
            state: Mutex::new(State {
                ring: Ring::new(config.ring),
                subscribers: HashMap::new(),
                next_id: 0,
                closed: false,
            }),
            config,
            wake: Notify::new(),
            waiting: AtomicUsize::new(0),
            closed: CancellationToken::new(),
            metrics: meter.map(|m| Metrics::new(m, weak.clone())),
            clock: WallClock::new(),
        });
        Self { inner }
    }

    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// The cursor of the newest event (seq 0 before the first).
    pub fn head(&self) -> Cursor {
        Cursor::new(self.inner.epoch, self.inner.lock().ring.head())
    }

    pub fn subscriber_count(&self) -> usize {
        self.inner.lock().subscribers.len()
    }

    pub fn publish_client_event(&self, input: ClientEventInput) -> Result<Cursor, PublishError> {
        let now = Instant::now();
        let encoded = self.encode_client_event(&input, self.inner.clock.millis_at(now))?;
        self.commit(EventKind::ClientEvent, encoded, now)
    }

    /// Publishes several client events at once: one clock reading, one
    /// turn of the ring's lock and one wake-up for the lot, in order. Each
    /// event is checked on its own; an invalid one is refused (its slot in
    /// the answer says why) and the others are published.
    pub fn publish_client_events(
        &self,
        inputs: &[ClientEventInput],
    ) -> Vec<Result<Cursor, PublishError>> {
        let now = Instant::now();
        let at = self.inner.clock.millis_at(now);
        let mut results: Vec<Result<Cursor, PublishError>> = Vec::with_capacity(inputs.len());
        // The valid events, with their place in `results`.
        let mut encoded = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            match self.encode_client_event(input, at) {
                Ok(bytes) => {
                    // What a valid event gets if the service has closed;
                    // replaced by its cursor once it is in the ring.
                    results.push(Err(PublishError::Closed));
                    encoded.push((i, bytes));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if encoded.is_empty() {
            return results;
        }
        let count = encoded.len();
        {
            let mut state = self.inner.lock();
            if state.closed {
                return results;
            }
            for (i, reserved) in encoded {
                results[i] = Ok(self.inner.append(&mut state, reserved, now, false));
            }
            state.ring.expire(now);
        }
        self.published(EventKind::ClientEvent, count);
        results
    }

    /// Checks a client event and encodes everything but its cursor.
    fn encode_client_event(
        &self,
        input: &ClientEventInput,
        published_at_ms: i64,
    ) -> Result<BytesMut, PublishError> {
        if input.user_id.is_nil() {
            return Err(PublishError::NilUser);
        }
        if input.kind.trim().is_empty() {
            return Err(PublishError::EmptyKind);
        }
        check_len("kind", &input.kind, MAX_KIND_LEN)?;
        check_len("event_id", &input.event_id, MAX_ID_LEN)?;
        check_len("request_id", &input.request_id, MAX_ID_LEN)?;
        check_len("trace_id", &input.trace_id, MAX_ID_LEN)?;
        let max = self.inner.config.max_payload_bytes;
        if input.payload.len() > max {
            return Err(PublishError::PayloadTooLarge {
                size: input.payload.len(),
                max,
            });
        }
        Ok(reserve_client_event(&ClientEventFields {
            published_at_ms,
            user_id: input.user_id,
            device_session_id: input.device_session_id,
            kind: &input.kind,
            payload: input.payload.as_bytes(),
            event_id: &input.event_id,
            request_id: &input.request_id,
            trace_id: &input.trace_id,
        }))
    }

    /// Tells gateways that a session (or, with `None`, every session of the
    /// user) was revoked.
    pub fn publish_session_invalidation(
        &self,
        user_id: Uuid,
        device_session_id: Option<Uuid>,
        reason: &str,
    ) -> Result<Cursor, PublishError> {
        if user_id.is_nil() {
            return Err(PublishError::NilUser);
        }
        check_len("reason", reason, MAX_KIND_LEN)?;
        let body = proto::push_event::Kind::SessionInvalidation(proto::SessionInvalidation {
            user_id: user_id.to_string(),
            device_session_id: device_session_id.map(|s| s.to_string()),
            reason: reason.to_string(),
        });
        // Everything but the cursor is encoded outside the lock.
        let now = Instant::now();
        let reserved = reserve_event(&proto::PushEvent {
            cursor: String::new(),
            published_at_ms: self.inner.clock.millis_at(now),
            kind: Some(body),
        });
        self.commit(EventKind::SessionInvalidation, reserved, now)
    }

    /// Gives an encoded event its cursor and puts it in the ring.
    fn commit(
        &self,
        kind: EventKind,
        reserved: BytesMut,
        now: Instant,
    ) -> Result<Cursor, PublishError> {
        let cursor = {
            let mut state = self.inner.lock();
            if state.closed {
                return Err(PublishError::Closed);
            }
            let invalidation = kind == EventKind::SessionInvalidation;
            let cursor = self.inner.append(&mut state, reserved, now, invalidation);
            state.ring.expire(now);
            cursor
        };
        self.published(kind, 1);
        Ok(cursor)
    }

    /// Wakes waiting subscribers and counts what was just published.
    fn published(&self, kind: EventKind, count: usize) {
        // Paired with the waiter's count-then-look in `Subscription::next`:
        // either the waiter sees these events when it looks, or it is
        // counted here and woken.
        if self.inner.waiting.load(Ordering::SeqCst) > 0 {
            self.inner.wake.notify_waiters();
        }
        if let Some(m) = &self.inner.metrics {
            m.events
                .add(count as u64, &[KeyValue::new("kind", kind.label())]);
        }
    }

    /// Opens a subscription from `cursor` (empty: from now on). A previous
    /// subscription with the same client id ends as replaced.
    pub fn subscribe(
        &self,
        gateway_client_id: &str,
        cursor: &str,
    ) -> Result<Subscription, SubscribeError> {
        if gateway_client_id.is_empty()
            || gateway_client_id.len() > MAX_CLIENT_ID_LEN
            || gateway_client_id.chars().any(char::is_control)
        {
            return Err(SubscribeError::InvalidClientId);
        }
        let epoch = self.inner.epoch;
        let mut state = self.inner.lock();
        if state.closed {
            return Err(SubscribeError::Closed);
        }
        state.ring.expire(Instant::now());
        let head = state.ring.head();
        let oldest = state.ring.oldest();
        let stale = |reason: StaleReason, lost: u64| Opening::Stale { reason, lost };
        let (opening, position) = if cursor.is_empty() {
            (
                Opening::Resumed {
                    head: Cursor::new(epoch, head),
                },
                head,
            )
        } else {
            match Cursor::parse(cursor) {
                Err(_) => (stale(StaleReason::Malformed, 0), head),
                // Nothing is known about another history, so nothing is counted.
                Ok(c) if c.epoch != epoch => (stale(StaleReason::UnknownEpoch, 0), head),
                Ok(c) if c.seq > head => (stale(StaleReason::Future, 0), head),
                Ok(c) if !state.ring.covers(c.seq) => {
                    (stale(StaleReason::Evicted, head - c.seq), head)
                }
                Ok(c) => (
                    Opening::Resumed {
                        head: Cursor::new(epoch, head),
                    },
                    c.seq,
                ),
            }
        };
        let id = state.next_id;
        state.next_id += 1;
        let replaced = CancellationToken::new();
        let previous = state.subscribers.insert(
            gateway_client_id.to_string(),
            Registration {
                id,
                replaced: replaced.clone(),
                position,
            },
        );
        drop(state);

        if let Some(previous) = previous {
            previous.replaced.cancel();
            if let Some(m) = &self.inner.metrics {
                m.replaced.add(1, &[]);
            }
            tracing::info!(
                gateway_client_id,
                "push subscription replaced by a newer one"
            );
        }
        let first = match &opening {
            Opening::Resumed { head: h } => {
                tracing::info!(
                    gateway_client_id,
                    cursor,
                    head = %h,
                    replay = head - position,
                    "push subscription opened"
                );
                Frame::message(&proto::PushMessage {
                    kind: Some(proto::push_message::Kind::Resumed(proto::Resumed {
                        head: h.to_string(),
                    })),
                })
            }
            Opening::Stale { reason, lost } => {
                self.count_stale(*reason);
                tracing::warn!(
                    gateway_client_id,
                    cursor,
                    reason = reason.as_str_name(),
                    lost,
                    "push subscription opened stale; live from the head"
                );
                stale_frame(*reason, cursor, epoch, oldest, head, *lost)
            }
        };
        Ok(Subscription {
            service: self.clone(),
            id,
            client_id: gateway_client_id.to_string(),
            opening,
            first: Some(first),
            position,
            replaced,
            batch: Vec::new(),
            end: None,
        })
    }

    /// Ends every subscription (after each has delivered the events
    /// published so far) and refuses new publishes and subscriptions.
    /// Calling it again does nothing.
    pub fn close(&self) {
        {
            let mut state = self.inner.lock();
            if state.closed {
                return;
            }
            state.closed = true;
        }
        self.inner.closed.cancel();
        self.inner.wake.notify_waiters();
        tracing::info!("push service closed");
    }

    fn count_stale(&self, reason: StaleReason) {
        if let Some(m) = &self.inner.metrics {
            m.stale
                .add(1, &[KeyValue::new("reason", stale_label(reason))]);
        }
    }
}

impl Inner {
    /// Gives an encoded event the next cursor and appends it to the ring
    /// (the caller holds the lock and expires old entries afterwards).
    fn append(
        &self,
        state: &mut State,
        reserved: BytesMut,
        at: Instant,
        invalidation: bool,
    ) -> Cursor {
        let seq = state.ring.next_seq();
        let cursor = Cursor::new(self.epoch, seq);
        state.ring.push(Entry {
            seq,
            at,
            invalidation,
            encoded: finish_event(reserved, cursor),
        });
        cursor
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the ring consistent (every
        // mutation is a single push/pop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Nanoseconds since the Unix epoch (0 for a clock set before it).
fn system_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Publish times in wall-clock milliseconds, taken from the monotonic
/// reading each publish makes anyway for the ring, so that a publish reads
/// the clock once rather than twice. The offset to the system clock is
/// taken again whenever a second has passed since it was last taken, so an
/// adjusted system clock shows within a second. The offset is kept in
/// nanoseconds and the sum cut to milliseconds last: offsets between two
/// already-truncated readings were off by up to a millisecond.
struct WallClock {
    origin: Instant,
    /// System nanoseconds minus monotonic nanoseconds since `origin`.
    offset_ns: AtomicI64,
    /// When (monotonic nanoseconds since `origin`) the offset was taken.
    taken_at_ns: AtomicI64,
}

/// How often the offset to the system clock is taken again.
const REANCHOR_NS: i64 = 1_000_000_000;

impl WallClock {
    fn new() -> Self {
        let origin = Instant::now();
        Self {
            origin,
            offset_ns: AtomicI64::new(system_ns()),
            taken_at_ns: AtomicI64::new(0),
        }
    }

    fn millis_at(&self, now: Instant) -> i64 {
        let mono = i64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(i64::MAX);
        if mono.saturating_sub(self.taken_at_ns.load(Ordering::Relaxed)) >= REANCHOR_NS {
            self.offset_ns
                .store(system_ns().saturating_sub(mono), Ordering::Relaxed);
            self.taken_at_ns.store(mono, Ordering::Relaxed);
        }
        mono.saturating_add(self.offset_ns.load(Ordering::Relaxed))
            .div_euclid(1_000_000)
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), PublishError> {
    if value.len() > max {
        return Err(PublishError::FieldTooLong { field, max });
    }
    Ok(())
}

fn stale_label(reason: StaleReason) -> &'static str {
    match reason {
        StaleReason::Malformed => "malformed",
        StaleReason::UnknownEpoch => "unknown_epoch",
        StaleReason::Evicted => "evicted",
        StaleReason::Future => "future",
        StaleReason::Unspecified => "unspecified",
    }
}

fn stale_frame(
    reason: StaleReason,
    requested: &str,
    epoch: u64,
    oldest: u64,
    head: u64,
    lost: u64,
) -> Frame {
    Frame::message(&proto::PushMessage {
        kind: Some(proto::push_message::Kind::Stale(proto::Stale {
            reason: reason as i32,
            requested: requested.to_string(),
            oldest: if oldest <= head {
                Cursor::new(epoch, oldest).to_string()
            } else {
                String::new()
            },
            head: Cursor::new(epoch, head).to_string(),
            lost,
        })),
    })
}

/// One gateway's subscription: a position in the ring.
pub struct Subscription {
    service: PushService,
    id: u64,
    client_id: String,
    opening: Opening,
    first: Option<Frame>,
    /// The sequence number of the last event handed out.
    position: u64,
    replaced: CancellationToken,
    batch: Vec<Bytes>,
    /// An end decided earlier, delivered after the frame that explains it.
    end: Option<SubscriptionEnd>,
}

impl Subscription {
    pub fn opening(&self) -> &Opening {
        &self.opening
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The next frame: the opening message first, then batches of events,
    /// a `Stale` if the ring lapped this subscriber, or a heartbeat when
    /// idle. Returns why the subscription ended once it has.
    pub async fn next(&mut self) -> Result<Frame, SubscriptionEnd> {
        let inner = self.service.inner.clone();
        loop {
            if let Some(ready) = self.ready() {
                return ready;
            }
            // Register for a wakeup, count ourselves as waiting, then look
            // again: a publish between the two looks is either seen by the
            // second or wakes us.
            let woken = inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let _waiting = Waiting::new(&inner.waiting);
            if let Some(ready) = self.ready() {
                return ready;
            }
            tokio::select! {
                () = woken => {}
                () = self.replaced.cancelled() => {}
                () = inner.closed.cancelled() => {}
                () = tokio::time::sleep(inner.config.heartbeat_interval) => {
                    return Ok(Frame::message(&proto::PushMessage {
                        kind: Some(proto::push_message::Kind::Heartbeat(proto::Heartbeat {
                            head: Cursor::new(inner.epoch, self.position).to_string(),
                        })),
                    }));
                }
            }
        }
    }

    /// What can be sent right now without waiting: the opening, a batch,
    /// a `Stale` after being lapped, or the end; `None` when caught up.
    pub fn ready(&mut self) -> Option<Result<Frame, SubscriptionEnd>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if let Some(end) = self.end {
            return Some(Err(end));
        }
        if self.replaced.is_cancelled() {
            return Some(Err(SubscriptionEnd::Replaced));
        }
        let inner = &self.service.inner;
        let mut state = inner.lock();
        state.ring.expire(Instant::now());
        let head = state.ring.head();
        if self.position >= head {
            return state.closed.then_some(Err(SubscriptionEnd::Closed));
        }
        self.batch.clear();
        let read = state.ring.read_after(
            self.position,
            inner.config.batch_max_events,
            inner.config.batch_max_bytes,
            &mut self.batch,
        );
        let lapped = match read {
            Ok(()) => {
                self.position += self.batch.len() as u64;
                None
            }
            Err(Evicted { oldest }) => {
                let lost = head - self.position;
                if state.ring.invalidation_after(self.position) {
                    self.end = Some(SubscriptionEnd::InvalidationLost);
                }
                self.position = head;
                Some((oldest, lost))
            }
        };
        if let Some(reg) = state.subscribers.get_mut(&self.client_id)
            && reg.id == self.id
        {
            reg.position = self.position;
        }
        drop(state);
        Some(Ok(match lapped {
            None => Frame::events(std::mem::take(&mut self.batch)),
            Some((oldest, lost)) => {
                self.service.count_stale(StaleReason::Evicted);
                tracing::warn!(
                    gateway_client_id = %self.client_id,
                    lost,
                    "push subscriber fell behind the ring; continuing from the head"
                );
                stale_frame(StaleReason::Evicted, "", inner.epoch, oldest, head, lost)
            }
        }))
    }
}

/// Counts a waiting subscriber for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.service.inner.lock();
        if state
            .subscribers
            .get(&self.client_id)
            .is_some_and(|r| r.id == self.id)
        {
            state.subscribers.remove(&self.client_id);
        }
        drop(state);
        tracing::info!(
            gateway_client_id = %self.client_id,
            position = self.position,
            "push subscription closed"
        );
    }
}

impl Metrics {
    fn new(meter: &Meter, inner: Weak<Inner>) -> Self {
        let for_count = inner.clone();
        let subscribers = meter
            .u64_observable_gauge("grpc_push_subscribers")
            .with_description("Gateways subscribed to the push stream")
            .with_callback(move |observer| {
                if let Some(inner) = for_count.upgrade() {
                    observer.observe(inner.lock().subscribers.len() as u64, &[]);
                }
            })
            .build();
        let lag = meter
            .u64_observable_gauge("grpc_push_subscriber_lag")
            .with_description("Events published but not yet handed to a subscriber")
            .with_callback(move |observer| {
                if let Some(inner) = inner.upgrade() {
                    let state = inner.lock();
                    let head = state.ring.head();
                    for (client, reg) in &state.subscribers {
                        observer.observe(
                            head.saturating_sub(reg.position),
                            &[KeyValue::new("gateway_client_id", client.clone())],
                        );
                    }
                }
            })
            .build();
        Self {
            events: meter
                .u64_counter("grpc_push_events")
                .with_description("Events published, by kind")
                .build(),
            stale: meter
                .u64_counter("grpc_push_stale")
                .with_description("Stale messages sent, by reason")
                .build(),
            replaced: meter
                .u64_counter("grpc_push_replaced")
                .with_description("Subscriptions replaced by a newer one with the same client id")
                .build(),
            _subscribers: subscribers,
            _lag: lag,
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
