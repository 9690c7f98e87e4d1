//! The gateway's client of the backend's `SubscribePush` stream.
//!
//! It runs until closed: subscribes, hands every event to its handler in
//! order, remembers the cursor of the last event the handler finished, and
//! when the stream breaks reconnects with doubling, jittered backoff and
//! resumes from that cursor. The owner hears about everything that changes
//! what its clients may have missed: `Stale` (resync), a sequence gap
//! (treated like `Stale`), and being replaced by another subscription with
//! the same client id (backs off; not an error).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng as _};
use tokio_util::sync::CancellationToken;
use turnbase_core::backoff::{Backoff, Retries};
use turnbase_push::Cursor;
use turnbase_push::proto::GatewaySubscribeRequest;
use turnbase_push::proto::stale::Reason as StaleReason;
use turnbase_push::received::{self, Event, Received};

use crate::config::PushClientConfig;

/// How long to wait for the backend to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many bytes of the push stream the backend may send ahead of what
/// the gateway has read (HTTP/2 flow control; the protocol's default is
/// 64 KiB). The stream is the gateway's one input, and at a high event rate
/// a small window makes the backend wait for the gateway's window updates
/// every ~200 events.
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;

/// What the client tells its owner besides events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Subscribed; every event after the client's cursor follows.
    Resumed { head: String },
    /// The backend could not resume from the client's cursor: events were
    /// lost. Revalidate sessions and tell clients to resync.
    Stale {
        reason: StaleReason,
        lost: u64,
        head: String,
    },
    /// An event arrived out of sequence; treated like `Stale` and the
    /// client resubscribes from the last event it handled.
    Gap { expected: String, got: String },
    /// Another subscription with this client id took over; backing off.
    Replaced { retry_in: Duration },
    /// The stream failed or ended; reconnecting after `retry_in`.
    Disconnected { error: String, retry_in: Duration },
}

/// The owner's side: receives events in order, one at a time, and notices.
pub trait PushHandler: Send + Sync + 'static {
    /// Handles one event. The client's cursor moves past the event only
    /// when this returns, so an event whose handling was cut short by a
    /// disconnect is delivered again.
    fn on_event(&self, event: Event) -> impl Future<Output = ()> + Send;
    fn on_notice(&self, notice: Notice) -> impl Future<Output = ()> + Send;
}

/// A shared handler handles like the one it shares.
impl<H: PushHandler> PushHandler for Arc<H> {
    fn on_event(&self, event: Event) -> impl Future<Output = ()> + Send {
        self.as_ref().on_event(event)
    }

    fn on_notice(&self, notice: Notice) -> impl Future<Output = ()> + Send {
        self.as_ref().on_notice(notice)
    }
}

/// How one subscription ended.
enum Ended {
    Replaced,
    Gap,
    Failed(String),
    Closed,
}

/// The running client. Cheap to share: clone the `Arc` it lives in.
pub struct PushClient<H> {
    config: PushClientConfig,
    handler: H,
    cursor: Mutex<Position>,
    stop: CancellationToken,
}

/// Where the client resumes from. Kept as two integers once known, so that
/// moving past an event costs no parse, copy or allocation.
#[derive(Debug, Clone)]
enum Position {
    /// Nothing yet: subscribe from now on.
    Unset,
    At(Cursor),
    /// A cursor kept elsewhere that does not parse; it is sent as it is,
    /// and the backend answers `Stale` (malformed).
    Text(String),
}

impl Position {
    fn from_text(text: String) -> Position {
        if text.is_empty() {
            Position::Unset
        } else {
            Cursor::parse(&text).map_or(Position::Text(text), Position::At)
        }
    }

    fn to_text(&self) -> String {
        match self {
            Position::Unset => String::new(),
            Position::At(c) => c.to_string(),
            Position::Text(t) => t.clone(),
        }
    }
}

impl<H: PushHandler> PushClient<H> {
    pub fn new(config: PushClientConfig, handler: H) -> Arc<Self> {
        Arc::new(Self {
            config,
            handler,
            cursor: Mutex::new(Position::Unset),
            stop: CancellationToken::new(),
        })
    }

    /// Starts from a cursor kept elsewhere instead of "from now on".
    pub fn set_cursor(&self, cursor: String) {
        *self.lock_cursor() = Position::from_text(cursor);
    }

    /// The cursor of the last event handled (or position announced), or
    /// empty before the first subscription.
    pub fn cursor(&self) -> String {
        self.lock_cursor().to_text()
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Stops `run`; calling it again does nothing.
    pub fn close(&self) {
        self.stop.cancel();
    }

    fn move_to(&self, cursor: Cursor) {
        *self.lock_cursor() = Position::At(cursor);
    }

    fn lock_cursor(&self) -> std::sync::MutexGuard<'_, Position> {
        self.cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes and resubscribes until [`PushClient::close`].
    pub async fn run(&self) {
        self.run_with_rng(rand::rngs::StdRng::from_os_rng()).await;
    }

    /// `run` with a chosen source of jitter (tests seed it).
    pub async fn run_with_rng(&self, mut rng: impl Rng + Send) {
        let mut backoff = Retries::new(Backoff::new(
            self.config.base_backoff,
            self.config.max_backoff,
        ));
        loop {
            let mut healthy = false;
            let ended = tokio::select! {
                () = self.stop.cancelled() => Ended::Closed,
                ended = self.subscribe_once(&mut healthy) => ended,
            };
            if healthy {
                backoff.reset();
            }
            let delay = match ended {
                Ended::Closed => return,
                Ended::Gap => Duration::ZERO,
                Ended::Replaced => {
                    let retry_in = backoff.next_delay(&mut rng);
                    tracing::info!(
                        ?retry_in,
                        "push subscription replaced by another; backing off"
                    );
                    self.handler.on_notice(Notice::Replaced { retry_in }).await;
                    retry_in
                }
                Ended::Failed(error) => {
                    let retry_in = backoff.next_delay(&mut rng);
                    tracing::warn!(%error, ?retry_in, "push stream lost; reconnecting");
                    self.handler
                        .on_notice(Notice::Disconnected { error, retry_in })
                        .await;
                    retry_in
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn subscribe_once(&self, healthy: &mut bool) -> Ended {
        let endpoint = match tonic::transport::Endpoint::from_shared(self.config.url.clone()) {
            // Pings find a backend that is gone without having closed the
            // connection (a crashed host, a partition): the stream would
            // otherwise wait for events for ever.
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(self.config.keepalive)
                .keep_alive_timeout(self.config.keepalive)
                .keep_alive_while_idle(true)
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(STREAM_WINDOW),
            Err(e) => return Ended::Failed(format!("invalid push URL: {e}")),
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return Ended::Failed(format!("cannot connect to {}: {e}", self.config.url)),
        };
        let requested = self.cursor();
        let mut request = tonic::Request::new(GatewaySubscribeRequest {
            gateway_client_id: self.config.client_id.clone(),
            cursor: requested.clone(),
        });
        match turnbase_push::server::authorization(self.config.secret.expose()) {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            Err(e) => return Ended::Failed(format!("GATEWAY_INTERNAL_TOKEN: {e}")),
        }
        let mut stream = match received::subscribe(channel, request, 16 * 1024 * 1024).await {
            Ok(stream) => stream,
            Err(status) => return ended_by(status),
        };
        // The position of the last event handled: events must follow it
        // one by one within its epoch.
        let mut position: Option<Cursor> = None;
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ended::Failed("the backend ended the stream".into()),
                Err(status) => return ended_by(status),
            };
            match message {
                Received::Resumed(r) => {
                    *healthy = true;
                    position = match Cursor::parse(&requested) {
                        Ok(c) => Some(c),
                        Err(_) => {
                            // Subscribed "from now on": the head is where we are.
                            self.set_cursor(r.head.clone());
                            Cursor::parse(&r.head).ok()
                        }
                    };
                    tracing::info!(head = %r.head, cursor = %requested, "push stream resumed");
                    self.handler
                        .on_notice(Notice::Resumed { head: r.head })
                        .await;
                }
                Received::Stale(s) => {
                    *healthy = true;
                    let reason =
                        StaleReason::try_from(s.reason).unwrap_or(StaleReason::Unspecified);
                    tracing::warn!(
                        reason = reason.as_str_name(),
                        lost = s.lost,
                        "push stream stale; clients must resync"
                    );
                    position = Cursor::parse(&s.head).ok();
                    self.set_cursor(s.head.clone());
                    self.handler
                        .on_notice(Notice::Stale {
                            reason,
                            lost: s.lost,
                            head: s.head,
                        })
                        .await;
                }
                Received::Events(batch) => {
                    for event in batch {
                        // Events before it were handled: the next
                        // subscription resumes after the last of them.
                        let event = match event {
                            Ok(event) => event,
                            Err(e) => return Ended::Failed(e.to_string()),
                        };
                        let got = event.cursor;
                        let in_sequence =
                            position.is_some_and(|p| got.epoch == p.epoch && got.seq == p.seq + 1);
                        if !in_sequence {
                            let expected = position
                                .map(|p| Cursor::new(p.epoch, p.seq + 1).to_string())
                                .unwrap_or_default();
                            let got = got.to_string();
                            tracing::warn!(%expected, %got, "push event out of sequence; resubscribing");
                            self.handler.on_notice(Notice::Gap { expected, got }).await;
                            return Ended::Gap;
                        }
                        self.handler.on_event(event).await;
                        position = Some(got);
                        self.move_to(got);
                    }
                }
                Received::Heartbeat(_) | Received::Unknown => {}
            }
        }
    }
}

fn ended_by(status: tonic::Status) -> Ended {
    if status.code() == tonic::Code::Aborted && status.message().starts_with("replaced") {
        Ended::Replaced
    } else {
        Ended::Failed(format!("{:?}: {}", status.code(), status.message()))
    }
}
