//! The moment a turn is due, on a thread of its own.
//!
//! Turns claimed ahead wait for their due time and then send the engine its
//! resolve call. On the backend's runtime that wait ended late whenever
//! the runtime was busy — and it is busiest exactly when many turns fall
//! due together: recording the turns just resolved, reading games, writing
//! notices, answering players. A turn's lateness is the time from its due
//! time to its call being sent, so the waiting and the sending happen here
//! instead, on one thread that does nothing else: it sleeps until a turn is
//! due, sends its call over connections of its own, and reads the answer's
//! bytes. Decoding the answer and recording the turn stay with the caller,
//! on the backend's runtime.
//!
//! Being idle is not enough when the machine is busy: in the turns
//! benchmark (400 turns a second, up to ~120 of them due within 10 ms) the
//! thread woke on time but then queued behind the engines and the backend
//! for the CPU, and its p99 lateness stayed at ~60 ms. It therefore asks
//! for a higher priority (a lower nice value, `BACKEND_TURNS_DISPATCH_NICE`);
//! at -15 the same run gave p99 4 ms. The work it does at that priority is
//! small and bounded: one write per due turn.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use opentelemetry::metrics::Meter;
use tokio::sync::oneshot;
use turnbase_core::worker::Clock;
use turnbase_runtime::{CallError, EngineClient};
use uuid::Uuid;

/// The dispatch thread: a single-threaded runtime that runs until
/// [`Dispatcher::stop`] (the scheduler's last step) or until this value is
/// dropped. Calls still waiting or under way then are dropped, and their
/// turns come round again through their claims.
pub(crate) struct Dispatcher {
    handle: tokio::runtime::Handle,
    /// Engine connections opened here, so that their reading and writing
    /// run on this thread too.
    client: EngineClient,
    /// The thread, and the sender whose drop ends it (taken by `stop`).
    running: std::sync::Mutex<Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>>,
}

/// A resolve call handed to the dispatcher.
pub(crate) struct Dispatched {
    /// When the call went out (by the service's clock); never sent when the
    /// dispatcher stopped first.
    pub sent: oneshot::Receiver<DateTime<Utc>>,
    /// The answer: how long the engine took, and its bytes.
    pub answer: oneshot::Receiver<(Duration, Result<bytes::Bytes, CallError>)>,
}

impl Dispatcher {
    pub fn start(meter: &Meter, nice: i32) -> std::io::Result<Dispatcher> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("turn-dispatch".into())
            .spawn(move || {
                set_nice(nice);
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Dispatcher {
            handle,
            client: EngineClient::new(meter),
            running: std::sync::Mutex::new(Some((stop, thread))),
        })
    }

    /// Ends the thread and waits until it has ended, its engine
    /// connections closed. Calls handed over afterwards are never sent
    /// (their receivers see the senders dropped).
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((stop, thread)) = running {
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Sends the resolve call of `turn` of `game` to the engine at `base`
    /// once `wait` has passed.
    pub fn resolve_after(
        &self,
        wait: Duration,
        clock: Clock,
        base: String,
        game: Uuid,
        turn: u32,
    ) -> Dispatched {
        let (sent_tx, sent) = oneshot::channel();
        let (answer_tx, answer) = oneshot::channel();
        let client = self.client.clone();
        self.handle.spawn(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let started = Instant::now();
            let call = client.resolve_undecoded(&base, game, turn);
            // Stamped as the call is handed over: the request is written on
            // this same thread at the call's first poll, right after.
            let _ = sent_tx.send(clock());
            let bytes = call.await;
            let _ = answer_tx.send((started.elapsed(), bytes));
        });
        Dispatched { sent, answer }
    }
}

/// Gives the calling thread the nice value `nice` (on Linux nice values
/// belong to threads). Refused without the right to raise priority: the
/// thread then keeps the process's.
fn set_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        match rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
            Ok(()) => tracing::debug!(nice, "turn dispatch thread priority set"),
            Err(err) => {
                tracing::info!(nice, error = %err, "the turn dispatch thread keeps the process's priority (BACKEND_TURNS_DISPATCH_NICE needs CAP_SYS_NICE below the current value)")
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatch thread's own nice value, read back from /proc.
    #[cfg(target_os = "linux")]
    fn dispatch_thread_nice() -> Option<i32> {
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim() == "turn-dispatch" {
                let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                // Field 19 is the nice value; fields after the command
                // name (which is in parentheses) start at 3.
                let after = stat.rsplit_once(')')?.1;
                return after.split_whitespace().nth(16)?.parse().ok();
            }
        }
        None
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_dispatch_thread_takes_the_nice_value_it_is_given() {
        // Raising the value (lowering priority) needs no privilege.
        let meter = opentelemetry::global::meter("test");
        let dispatcher = Dispatcher::start(&meter, 7).expect("thread");
        let mut seen = None;
        for _ in 0..100 {
            seen = dispatch_thread_nice();
            if seen == Some(7) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(seen, Some(7));
        drop(dispatcher);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_stopped_dispatcher_has_no_thread_and_sends_nothing() {
        let meter = opentelemetry::global::meter("test");
        let dispatcher = Dispatcher::start(&meter, 0).expect("thread");
        // A call waiting for its time when the stop comes is dropped.
        let clock: Clock = std::sync::Arc::new(Utc::now);
        let waiting = dispatcher.resolve_after(
            Duration::from_secs(60),
            clock.clone(),
            "http://127.0.0.1:9".into(),
            Uuid::nil(),
            1,
        );
        // (The thread names itself once it runs.)
        for _ in 0..100 {
            if dispatch_thread_nice().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(dispatch_thread_nice().is_some(), "the thread runs");
        dispatcher.stop().await;
        assert_eq!(dispatch_thread_nice(), None, "the thread has ended");
        assert!(waiting.sent.await.is_err(), "never sent");
        assert!(waiting.answer.await.is_err());
        // Handed over after the stop: never sent either.
        let late = dispatcher.resolve_after(
            Duration::ZERO,
            clock,
            "http://127.0.0.1:9".into(),
            Uuid::nil(),
            2,
        );
        assert!(late.sent.await.is_err());
        // A second stop is harmless.
        dispatcher.stop().await;
    }
}
