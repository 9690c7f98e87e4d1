//! The hub: every live connection by user, and per user a bounded window
//! of recent envelopes for resuming. The push client feeds it; WebSocket
//! and SSE handlers register connections and drain their queues.
//!
//! Registration and delivery for one user happen under that user's lock,
//! so a connection that resumes gets the missed envelopes and then the
//! live ones with nothing lost or repeated between the two.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use axum::extract::ws::Utf8Bytes;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, ObservableGauge, UpDownCounter};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::EdgeLimits;

/// Why the gateway closes a connection. Each maps to a documented
/// WebSocket close code and a final SSE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The session was revoked (or the account blocked or deleted).
    Revoked,
    /// The connection's queue overflowed; reconnect and resume.
    SlowConsumer,
    /// The gateway is stopping; reconnect (elsewhere).
    ShuttingDown,
}

impl CloseReason {
    /// WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Revoked => 4001,
            CloseReason::SlowConsumer => 4008,
            CloseReason::ShuttingDown => 1001,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Revoked => "session revoked",
            CloseReason::SlowConsumer => "slow consumer, resume",
            CloseReason::ShuttingDown => "gateway stopping, reconnect",
        }
    }

    /// The final SSE event's name.
    pub fn sse_event(self) -> &'static str {
        match self {
            CloseReason::Revoked => "revoked",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ShuttingDown => "reconnect",
        }
    }
}

/// A signed envelope ready to send, shared by every connection of its
/// user and by the resume window.
#[derive(Debug)]
pub struct Sealed {
    pub id: Arc<str>,
    pub frame: Utf8Bytes,
}

/// Something queued for a connection. Kept to two words, since every
/// connection's queue reserves room for a block of them.
#[derive(Debug, Clone)]
pub enum Outbound {
    Event(Arc<Sealed>),
    Resync(&'static str),
}

impl Outbound {
    fn size(&self) -> usize {
        match self {
            Outbound::Event(sealed) => sealed.frame.len(),
            Outbound::Resync(_) => 64,
        }
    }
}

/// The hub's side of a connection.
struct Conn {
    id: u64,
    session: Uuid,
    tx: mpsc::Sender<Outbound>,
    state: Arc<ConnState>,
}

/// Shared between the hub and the connection's task.
pub struct ConnState {
    /// Bytes queued and not yet written.
    pub queued: AtomicUsize,
    closed: OnceLock<CloseReason>,
    notify: Notify,
}

impl ConnState {
    /// Marks the connection for closing (the first reason wins).
    pub fn close(&self, reason: CloseReason) {
        if self.closed.set(reason).is_ok() {
            self.notify.notify_one();
        }
    }

    /// Why the connection is to be closed, if it is.
    pub fn reason(&self) -> Option<CloseReason> {
        self.closed.get().copied()
    }

    /// Resolves once the connection is to be closed, with why.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.closed.get() {
                return *reason;
            }
            self.notify.notified().await;
        }
    }
}

/// A registered connection, held by its handler: its queue, and it leaves
/// the hub when dropped.
pub struct Connection {
    pub rx: mpsc::Receiver<Outbound>,
    pub state: Arc<ConnState>,
    hub: Arc<Hub>,
    user: Uuid,
    id: u64,
}

impl Connection {
    /// Call when a queued message has been written.
    pub fn sent(&self, message: &Outbound) {
        self.state
            .queued
            .fetch_sub(message.size(), Ordering::Relaxed);
        if let (Some(m), Outbound::Event(_)) = (&self.hub.metrics, message) {
            m.sent.add(1, &[]);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.unregister(self.user, self.id);
    }
}

struct Stored {
    sealed: Arc<Sealed>,
    session: Option<Uuid>,
    at: Instant,
}

#[derive(Default)]
struct User {
    window: VecDeque<Stored>,
    window_bytes: usize,
    conns: Vec<Conn>,
}

struct Metrics {
    /// Held so that its callback stays registered.
    _resume_bytes: ObservableGauge<u64>,
    connections: UpDownCounter<i64>,
    sent: Counter<u64>,
    slow: Counter<u64>,
    closed: Counter<u64>,
}

const SHARDS: usize = 64;

pub struct Hub {
    shards: Vec<Mutex<HashMap<Uuid, User>>>,
    limits: EdgeLimits,
    next_id: AtomicU64,
    /// Registered connections, for `GATEWAY_MAX_CONNECTIONS`.
    total: AtomicUsize,
    /// Envelope bytes in every user's resume window, for
    /// `GATEWAY_RESUME_MAX_TOTAL_BYTES`.
    window_total: AtomicUsize,
    metrics: Option<Metrics>,
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The gateway holds `GATEWAY_MAX_CONNECTIONS` already.
    Full,
    /// The account holds `GATEWAY_MAX_CONNECTIONS_PER_USER` already.
    UserLimit,
}

/// How a registration starts.
pub enum Start {
    /// From now on.
    Fresh,
    /// After the envelope with this id.
    Resume(String),
}

impl Hub {
    pub fn new(limits: EdgeLimits, meter: &Meter) -> Arc<Hub> {
        Arc::new_cyclic(|hub: &Weak<Hub>| Hub {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            limits,
            next_id: AtomicU64::new(1),
            total: AtomicUsize::new(0),
            window_total: AtomicUsize::new(0),
            metrics: Some(meter).map(|m| Metrics {
                _resume_bytes: {
                    let hub = hub.clone();
                    m.u64_observable_gauge("edge_resume_window_bytes")
                        .with_description("Envelope bytes kept for resuming, all users together")
                        .with_callback(move |gauge| {
                            if let Some(hub) = hub.upgrade() {
                                gauge.observe(hub.resume_bytes() as u64, &[]);
                            }
                        })
                        .build()
                },
                connections: m
                    .i64_up_down_counter("edge_connections")
                    .with_description("Open live-event connections")
                    .build(),
                sent: m
                    .u64_counter("edge_events_sent")
                    .with_description("Envelopes written to clients")
                    .build(),
                slow: m
                    .u64_counter("edge_slow_client_closes")
                    .with_description("Connections closed because their queue overflowed")
                    .build(),
                closed: m
                    .u64_counter("edge_closes")
                    .with_description("Connections closed by the gateway, by reason")
                    .build(),
            }),
        })
    }

    fn shard(&self, user: Uuid) -> std::sync::MutexGuard<'_, HashMap<Uuid, User>> {
        let i = (user.as_u128() % SHARDS as u128) as usize;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection of `session` (of `user`) within the
    /// gateway's and the account's connection limits, and registers it.
    pub fn admit(
        self: &Arc<Self>,
        user: Uuid,
        session: Uuid,
        start: Start,
    ) -> Result<Connection, Refused> {
        // The global count is reserved first and given back on refusal, so
        // concurrent admissions can never exceed it together.
        if self.total.fetch_add(1, Ordering::SeqCst) >= self.limits.max_connections {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::Full);
        }
        self.add(
            user,
            session,
            start,
            Some(self.limits.max_connections_per_user),
        )
        .ok_or_else(|| {
            self.total.fetch_sub(1, Ordering::SeqCst);
            Refused::UserLimit
        })
    }

    /// Registers a connection of `session` (of `user`) without checking
    /// limits: for a connection that gave up its earlier registration (a
    /// WebSocket that resumes by message). Resuming queues what it missed,
    /// in order, or a resync when the id is no longer in the window.
    pub fn register(self: &Arc<Self>, user: Uuid, session: Uuid, start: Start) -> Connection {
        self.total.fetch_add(1, Ordering::SeqCst);
        match self.add(user, session, start, None) {
            Some(conn) => conn,
            None => unreachable!("a registration without a limit is never refused"),
        }
    }

    /// Registers a connection under the user's lock, unless the user holds
    /// `per_user` connections already.
    fn add(
        self: &Arc<Self>,
        user: Uuid,
        session: Uuid,
        start: Start,
        per_user: Option<usize>,
    ) -> Option<Connection> {
        let (tx, rx) = mpsc::channel(self.limits.queue_messages.max(1));
        let state = Arc::new(ConnState {
            queued: AtomicUsize::new(0),
            closed: OnceLock::new(),
            notify: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            id,
            session,
            tx,
            state: state.clone(),
        };
        {
            let mut shard = self.shard(user);
            let entry = shard.entry(user).or_default();
            if per_user.is_some_and(|cap| entry.conns.len() >= cap) {
                return None;
            }
            self.expire(entry);
            if let Start::Resume(after) = start {
                match entry.window.iter().position(|s| *s.sealed.id == *after) {
                    Some(at) => {
                        for stored in entry.window.iter().skip(at + 1) {
                            if stored.session.is_none_or(|s| s == session) {
                                self.offer(&conn, Outbound::Event(stored.sealed.clone()));
                            }
                        }
                    }
                    None => self.offer(&conn, Outbound::Resync("resume_unavailable")),
                }
            }
            entry.conns.push(conn);
        }
        if let Some(m) = &self.metrics {
            m.connections.add(1, &[]);
        }
        Some(Connection {
            rx,
            state,
            hub: self.clone(),
            user,
            id,
        })
    }

    fn unregister(&self, user: Uuid, id: u64) {
        self.total.fetch_sub(1, Ordering::SeqCst);
        let mut shard = self.shard(user);
        if let Some(entry) = shard.get_mut(&user) {
            entry.conns.retain(|c| c.id != id);
            if entry.conns.is_empty() && entry.window.is_empty() {
                shard.remove(&user);
            }
        }
        drop(shard);
        if let Some(m) = &self.metrics {
            m.connections.add(-1, &[]);
        }
    }

    /// Queues `message` for `conn`, or closes it as a slow consumer when
    /// its queue is full (by count or bytes). Never waits.
    fn offer(&self, conn: &Conn, message: Outbound) {
        if conn.state.closed.get().is_some() {
            return;
        }
        let size = message.size();
        let queued = conn.state.queued.fetch_add(size, Ordering::Relaxed) + size;
        let overflow = queued > self.limits.queue_bytes || conn.tx.try_send(message).is_err();
        if overflow {
            conn.state.queued.fetch_sub(size, Ordering::Relaxed);
            self.close(conn, CloseReason::SlowConsumer);
        }
    }

    fn close(&self, conn: &Conn, reason: CloseReason) {
        if conn.state.closed.get().is_none() {
            conn.state.close(reason);
            if let Some(m) = &self.metrics {
                if reason == CloseReason::SlowConsumer {
                    m.slow.add(1, &[]);
                }
                m.closed
                    .add(1, &[KeyValue::new("reason", reason.sse_event())]);
            }
        }
    }

    /// Drops envelopes older than the window or beyond its bounds.
    fn expire(&self, entry: &mut User) {
        let now = Instant::now();
        while let Some(front) = entry.window.front() {
            let too_old = now.duration_since(front.at) > self.limits.resume_window;
            let too_many = entry.window.len() > self.limits.resume_max_events;
            let too_big = entry.window_bytes > self.limits.resume_max_bytes;
            if !(too_old || too_many || too_big) {
                break;
            }
            self.drop_oldest(entry);
        }
    }

    /// Gives up the user's oldest resumable envelope.
    fn drop_oldest(&self, entry: &mut User) {
        if let Some(front) = entry.window.pop_front() {
            let size = front.sealed.frame.len();
            entry.window_bytes -= size;
            self.window_total.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Envelope bytes held for resuming, all users together.
    pub fn resume_bytes(&self) -> usize {
        self.window_total.load(Ordering::Relaxed)
    }

    /// Delivers an envelope to the user's connections (only those of
    /// `session` when it names one) and keeps it for resuming.
    pub fn deliver(&self, user: Uuid, session: Option<Uuid>, id: Arc<str>, frame: Utf8Bytes) {
        let size = frame.len();
        let sealed = Arc::new(Sealed { id, frame });
        let mut shard = self.shard(user);
        let entry = shard.entry(user).or_default();
        for conn in &entry.conns {
            if session.is_none_or(|s| s == conn.session) {
                self.offer(conn, Outbound::Event(sealed.clone()));
            }
        }
        entry.window_bytes += size;
        self.window_total.fetch_add(size, Ordering::Relaxed);
        entry.window.push_back(Stored {
            sealed,
            session,
            at: Instant::now(),
        });
        self.expire(entry);
        // Over the gateway-wide bound, the user receiving the event gives
        // up their oldest envelopes (never the one just delivered). So the
        // users with the most traffic pay first, quiet users keep theirs,
        // and the total stays within the bound plus one envelope per user.
        while self.window_total.load(Ordering::Relaxed) > self.limits.resume_max_total_bytes
            && entry.window.len() > 1
        {
            self.drop_oldest(entry);
        }
    }

    /// Drops envelopes that left the resume window and forgets users with
    /// neither connections nor a window. Windows otherwise shrink only when
    /// their user gets another event or connects, so a user who went
    /// offline for good would keep theirs for ever; the gateway runs this
    /// every few seconds.
    pub fn sweep(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, entry| {
                self.expire(entry);
                !(entry.conns.is_empty() && entry.window.is_empty())
            });
        }
    }

    /// Users the hub holds state for (connections or a resume window).
    pub fn user_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Closes the connections of a revoked session (or of every session
    /// of the user).
    pub fn revoke(&self, user: Uuid, session: Option<Uuid>) {
        let shard = self.shard(user);
        if let Some(entry) = shard.get(&user) {
            for conn in &entry.conns {
                if session.is_none_or(|s| s == conn.session) {
                    self.close(conn, CloseReason::Revoked);
                }
            }
        }
    }

    /// After events were lost upstream: forget every window (resuming
    /// across the hole would hide it) and tell every client to resync.
    pub fn resync_all(&self, reason: &'static str) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, entry| {
                self.window_total
                    .fetch_sub(entry.window_bytes, Ordering::Relaxed);
                entry.window.clear();
                entry.window_bytes = 0;
                for conn in &entry.conns {
                    self.offer(conn, Outbound::Resync(reason));
                }
                !entry.conns.is_empty()
            });
        }
    }

    /// Every connected (user, session), for revalidation.
    pub fn sessions(&self) -> Vec<(Uuid, Uuid)> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (user, entry) in shard.iter() {
                all.extend(entry.conns.iter().map(|c| (*user, c.session)));
            }
        }
        all.sort();
        all.dedup();
        all
    }

    /// Closes every connection (the gateway is stopping).
    pub fn close_all(&self) {
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for entry in shard.values() {
                for conn in &entry.conns {
                    self.close(conn, CloseReason::ShuttingDown);
                }
            }
        }
    }

    pub fn connection_count(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// Sweeps the hub's resume windows every `every`, as a core worker job.
pub struct Sweeper {
    hub: Arc<Hub>,
    every: chrono::Duration,
}

impl Sweeper {
    pub fn new(hub: Arc<Hub>, every: std::time::Duration) -> Sweeper {
        Sweeper {
            hub,
            every: chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX),
        }
    }
}

#[async_trait::async_trait]
impl turnbase_core::worker::Job for Sweeper {
    fn name(&self) -> &'static str {
        "gateway-hub-sweeper"
    }

    async fn try_execute(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        _stop: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<turnbase_core::worker::Outcome> {
        self.hub.sweep();
        Ok(turnbase_core::worker::Outcome::Idle {
            next_due: Some(now + self.every),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(queue: usize) -> EdgeLimits {
        EdgeLimits {
            resume_window: Duration::from_secs(60),
            resume_max_events: 3,
            resume_max_bytes: 1 << 20,
            resume_max_total_bytes: 1 << 20,
            queue_messages: queue,
            queue_bytes: 1 << 20,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_message: 1 << 16,
            max_connections: 5,
            max_connections_per_user: 3,
        }
    }

    fn frame(n: u32) -> (Arc<str>, Utf8Bytes) {
        (
            Arc::from(format!("e.{n}")),
            Utf8Bytes::from(format!("frame {n}")),
        )
    }

    fn ids(conn: &mut Connection) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = conn.rx.try_recv() {
            conn.sent(&m);
            out.push(match m {
                Outbound::Event(sealed) => sealed.id.to_string(),
                Outbound::Resync(reason) => format!("resync:{reason}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn resume_replays_exactly_the_missed_envelopes_then_live() {
        let hub = Hub::new(limits(16), &turnbase_core::telemetry::noop_meter());
        let (user, s1, s2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for n in 1..=3 {
            let (id, f) = frame(n);
            // Event 2 is for the other session only.
            hub.deliver(user, (n == 2).then_some(s2), id, f);
        }
        let mut c = hub.register(user, s1, Start::Resume("e.1".into()));
        let (id, f) = frame(4);
        hub.deliver(user, None, id, f);
        assert_eq!(ids(&mut c), ["e.3", "e.4"]);
        let mut gone = hub.register(user, s1, Start::Resume("e.0".into()));
        assert_eq!(
            ids(&mut gone),
            ["resync:resume_unavailable"],
            "e.0 left the window (max 3)"
        );
        let mut fresh = hub.register(user, s1, Start::Fresh);
        assert!(ids(&mut fresh).is_empty());
        assert_eq!(hub.connection_count(), 3);
        drop((c, gone, fresh));
        assert_eq!(hub.connection_count(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_closes_only_that_connection() {
        let hub = Hub::new(limits(2), &turnbase_core::telemetry::noop_meter());
        let user = Uuid::now_v7();
        let slow = hub.register(user, Uuid::now_v7(), Start::Fresh);
        let mut fast = hub.register(user, Uuid::now_v7(), Start::Fresh);
        for n in 1..=3 {
            let (id, f) = frame(n);
            hub.deliver(user, None, id, f);
            ids(&mut fast);
        }
        assert_eq!(slow.state.closed().await, CloseReason::SlowConsumer);
        assert!(fast.state.closed.get().is_none());
    }

    #[tokio::test]
    async fn connections_are_admitted_within_the_user_and_gateway_limits() {
        let hub = Hub::new(limits(8), &turnbase_core::telemetry::noop_meter());
        let (ann, bob, cy) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut anns: Vec<Connection> = (0..3)
            .map(|_| {
                hub.admit(ann, Uuid::now_v7(), Start::Fresh)
                    .expect("within Ann's three")
            })
            .collect();
        assert_eq!(
            hub.admit(ann, Uuid::now_v7(), Start::Fresh).err(),
            Some(Refused::UserLimit)
        );
        let bobs: Vec<Connection> = (0..2)
            .map(|_| hub.admit(bob, Uuid::now_v7(), Start::Fresh).expect("room"))
            .collect();
        assert_eq!(
            hub.admit(cy, Uuid::now_v7(), Start::Fresh).err(),
            Some(Refused::Full),
            "five connections is the gateway's limit"
        );
        assert_eq!(hub.connection_count(), 5, "refusals hold no slot");
        drop(anns.pop());
        let again = hub
            .admit(ann, Uuid::now_v7(), Start::Fresh)
            .expect("a slot was given back");
        assert_eq!(hub.connection_count(), 5);
        drop((anns, bobs, again));
        assert_eq!(hub.connection_count(), 0);
        hub.admit(cy, Uuid::now_v7(), Start::Fresh)
            .expect("room again");
    }

    #[tokio::test(start_paused = true)]
    async fn sweeping_forgets_windows_of_users_gone_for_longer_than_the_window() {
        let hub = Hub::new(limits(8), &turnbase_core::telemetry::noop_meter());
        let (offline, online) = (Uuid::now_v7(), Uuid::now_v7());
        let _conn = hub.register(online, Uuid::now_v7(), Start::Fresh);
        for (n, user) in [(1, offline), (2, online)] {
            let (id, f) = frame(n);
            hub.deliver(user, None, id, f);
        }
        hub.sweep();
        assert_eq!(hub.user_count(), 2, "both windows are still resumable");
        tokio::time::advance(Duration::from_secs(61)).await;
        hub.sweep();
        assert_eq!(
            hub.user_count(),
            1,
            "the offline user's window expired and the user was forgotten; the connected one stays"
        );
        let mut late = hub.register(offline, Uuid::now_v7(), Start::Resume("e.1".into()));
        assert_eq!(ids(&mut late), ["resync:resume_unavailable"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_busiest_user_gives_up_resume_history_when_all_windows_are_full() {
        // Every frame is "frame N" (7 bytes for N < 10): room for four.
        let hub = Hub::new(
            EdgeLimits {
                resume_max_total_bytes: 28,
                resume_max_events: 10,
                ..limits(8)
            },
            &turnbase_core::telemetry::noop_meter(),
        );
        let (quiet, busy) = (Uuid::now_v7(), Uuid::now_v7());
        let (id, f) = frame(1);
        hub.deliver(quiet, None, id, f);
        for n in 2..=4 {
            let (id, f) = frame(n);
            hub.deliver(busy, None, id, f);
        }
        assert_eq!(hub.resume_bytes(), 28, "exactly at the bound");
        for n in 5..=6 {
            let (id, f) = frame(n);
            hub.deliver(busy, None, id, f);
        }
        assert_eq!(hub.resume_bytes(), 28, "the bound holds");
        let mut q = hub.register(quiet, Uuid::now_v7(), Start::Resume("e.0".into()));
        assert_eq!(ids(&mut q), ["resync:resume_unavailable"]);
        let mut q = hub.register(quiet, Uuid::now_v7(), Start::Resume("e.1".into()));
        assert!(ids(&mut q).is_empty(), "the quiet user's window is whole");
        let mut b = hub.register(busy, Uuid::now_v7(), Start::Resume("e.4".into()));
        assert_eq!(
            ids(&mut b),
            ["e.5", "e.6"],
            "the busy user keeps the newest"
        );
        let mut b = hub.register(busy, Uuid::now_v7(), Start::Resume("e.3".into()));
        assert_eq!(
            ids(&mut b),
            ["resync:resume_unavailable"],
            "and gave up its oldest"
        );
        assert_eq!(hub.resume_bytes(), 28, "replays hold nothing extra");

        // Whoever receives the event pays, the quiet user too.
        let (id, f) = frame(7);
        hub.deliver(quiet, None, id, f);
        assert_eq!(hub.resume_bytes(), 28);
        let mut q = hub.register(quiet, Uuid::now_v7(), Start::Resume("e.1".into()));
        assert_eq!(ids(&mut q), ["resync:resume_unavailable"]);

        // Expiry and a resync give every byte back.
        tokio::time::advance(Duration::from_secs(61)).await;
        hub.sweep();
        assert_eq!(hub.resume_bytes(), 0);
        for n in 1..=2 {
            let (id, f) = frame(n);
            hub.deliver(busy, None, id, f);
        }
        hub.resync_all("stale");
        assert_eq!(hub.resume_bytes(), 0);
    }

    #[tokio::test]
    async fn revocation_closes_the_named_session_or_all() {
        let hub = Hub::new(limits(8), &turnbase_core::telemetry::noop_meter());
        let (user, s1, s2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let a = hub.register(user, s1, Start::Fresh);
        let b = hub.register(user, s2, Start::Fresh);
        hub.revoke(user, Some(s1));
        assert_eq!(a.state.closed().await, CloseReason::Revoked);
        assert!(b.state.closed.get().is_none());
        hub.revoke(user, None);
        assert_eq!(b.state.closed().await, CloseReason::Revoked);
    }
}
