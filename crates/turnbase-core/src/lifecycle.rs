//! Ordered start and reverse-ordered, deadline-bounded stop of a process's
//! components.
//!
//! Components are registered in the order they start. On shutdown they are
//! stopped in reverse, each under the smaller of its own deadline and what is
//! left of the global one. A component that misses its deadline is abandoned
//! and the shutdown is reported as failed, so the process exits non-zero at
//! the deadline rather than hanging.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type StopFn = Box<dyn FnOnce() -> BoxFuture<'static, anyhow::Result<()>> + Send>;

struct Entry {
    name: &'static str,
    deadline: Option<Duration>,
    stop: StopFn,
}

/// A failure of a running task, which ends the process.
#[derive(Debug)]
struct Fatal {
    component: &'static str,
    error: anyhow::Error,
}

/// The registry of started components.
pub struct Lifecycle {
    global_deadline: Duration,
    entries: Vec<Entry>,
    fatal_tx: mpsc::UnboundedSender<Fatal>,
    fatal_rx: mpsc::UnboundedReceiver<Fatal>,
    /// The failure `failure` saw, for the report of the shutdown after it.
    cause: Option<String>,
}

/// How one component stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped,
    Failed(String),
    DeadlineExceeded,
    /// The global deadline had already passed when its turn came.
    Abandoned,
}

#[derive(Debug, Clone)]
pub struct StoppedComponent {
    pub name: &'static str,
    pub took: Duration,
    pub outcome: StopOutcome,
}

/// What happened during shutdown, in stop order.
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    /// Why the shutdown began when it was not a signal: a task that failed.
    pub cause: Option<String>,
    pub components: Vec<StoppedComponent>,
}

impl ShutdownReport {
    /// True when every component stopped in time and nothing failed.
    pub fn is_clean(&self) -> bool {
        self.cause.is_none()
            && self
                .components
                .iter()
                .all(|c| c.outcome == StopOutcome::Stopped)
    }
}

impl Lifecycle {
    pub fn new(global_deadline: Duration) -> Self {
        let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
        Self {
            global_deadline,
            entries: Vec::new(),
            fatal_tx,
            fatal_rx,
            cause: None,
        }
    }

    /// Registers a started component whose `stop` runs at shutdown.
    pub fn add<F>(
        &mut self,
        name: &'static str,
        deadline: Option<Duration>,
        stop: impl FnOnce() -> F + Send + 'static,
    ) where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        tracing::debug!(component = name, "started");
        self.entries.push(Entry {
            name,
            deadline,
            stop: Box::new(move || Box::pin(stop())),
        });
    }

    /// Starts a long-running task and registers it. The task gets a token
    /// that is cancelled when its turn to stop comes; stopping waits for the
    /// task to return. A task that returns an error while the process is
    /// running triggers shutdown, and the process then exits non-zero.
    pub fn spawn<F>(
        &mut self,
        name: &'static str,
        deadline: Option<Duration>,
        task: impl FnOnce(CancellationToken) -> F,
    ) where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = CancellationToken::new();
        let fut = task(token.clone());
        let fatal = self.fatal_tx.clone();
        let stopping = token.clone();
        let handle = tokio::spawn(async move {
            let result = fut.await;
            if let Err(error) = &result
                && !stopping.is_cancelled()
            {
                let _ = fatal.send(Fatal {
                    component: name,
                    error: anyhow::anyhow!("{error:#}"),
                });
            }
            result
        });
        let abort = handle.abort_handle();
        self.add(name, deadline, move || async move {
            token.cancel();
            // Abort on drop, so a task that misses its deadline does not
            // linger once the lifecycle gives up on it.
            let guard = AbortOnDrop(abort);
            let result = match handle.await {
                Ok(result) => result,
                Err(join) if join.is_panic() => Err(anyhow::anyhow!("task panicked")),
                Err(_) => Ok(()),
            };
            drop(guard);
            result
        });
    }

    /// Waits until `signal` resolves or a task fails, then stops everything.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> ShutdownReport {
        tokio::select! {
            () = signal => {}
            _ = self.failure() => {}
        }
        self.shutdown().await
    }

    /// Resolves when a spawned task fails while the process runs, with
    /// why; the shutdown that follows reports it as its cause. For a
    /// process that waits on something else as well (`turnbase up` runs
    /// two of these).
    pub async fn failure(&mut self) -> String {
        // The sender lives in `self`, so the channel never closes.
        let Some(fatal) = self.fatal_rx.recv().await else {
            return std::future::pending().await;
        };
        tracing::error!(component = fatal.component, error = %format!("{:#}", fatal.error), "component failed; shutting down");
        let cause = format!("{} failed: {:#}", fatal.component, fatal.error);
        self.cause = Some(cause.clone());
        cause
    }

    /// Stops every component in reverse start order.
    pub async fn shutdown(self) -> ShutdownReport {
        let global_end = Instant::now() + self.global_deadline;
        let mut report = ShutdownReport {
            cause: self.cause,
            components: Vec::new(),
        };
        for entry in self.entries.into_iter().rev() {
            let started = Instant::now();
            let left = global_end.saturating_duration_since(started);
            if left.is_zero() {
                tracing::error!(
                    component = entry.name,
                    "not stopped: the global shutdown deadline has passed"
                );
                report.components.push(StoppedComponent {
                    name: entry.name,
                    took: Duration::ZERO,
                    outcome: StopOutcome::Abandoned,
                });
                continue;
            }
            let budget = entry.deadline.map_or(left, |d| d.min(left));
            let outcome = match tokio::time::timeout(budget, (entry.stop)()).await {
                Ok(Ok(())) => StopOutcome::Stopped,
                Ok(Err(err)) => StopOutcome::Failed(format!("{err:#}")),
                Err(_) => StopOutcome::DeadlineExceeded,
            };
            let took = started.elapsed();
            let took_ms = took.as_secs_f64() * 1000.0;
            match &outcome {
                StopOutcome::Stopped => {
                    tracing::info!(component = entry.name, took_ms, "stopped")
                }
                StopOutcome::Failed(error) => {
                    tracing::error!(
                        component = entry.name,
                        took_ms,
                        error,
                        "stopped with an error"
                    )
                }
                _ => tracing::error!(
                    component = entry.name,
                    took_ms,
                    deadline_ms = budget.as_millis() as u64,
                    "did not stop before its deadline; abandoned"
                ),
            }
            report.components.push(StoppedComponent {
                name: entry.name,
                took,
                outcome,
            });
        }
        report
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made. (tokio's
/// `ctrl_c()` installs its handler only when first polled, so a signal
/// right after a banner was printed could still kill the process instead
/// of stopping it.) Make it before announcing that the process is up.
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Starts catching the signals (inside a tokio runtime).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let catch = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(err) => {
                    tracing::error!(%err, "cannot listen for {name}");
                    None
                }
            };
            ShutdownSignals {
                interrupt: catch(SignalKind::interrupt(), "SIGINT"),
                terminate: catch(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignals {}
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn on(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = on(&mut self.interrupt) => tracing::info!("SIGINT received; shutting down"),
                () = on(&mut self.terminate) => tracing::info!("SIGTERM received; shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C received; shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Clone) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        (log, move |s: &str| {
            l.lock().expect("test log lock").push(s.to_string())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn stops_in_reverse_order() {
        let (log, rec) = recorder();
        let mut lc = Lifecycle::new(Duration::from_secs(30));
        for name in ["database", "push", "http"] {
            let rec = rec.clone();
            rec(&format!("start {name}"));
            lc.add(name, None, move || async move {
                rec(&format!("stop {name}"));
                Ok(())
            });
        }
        let report = lc.shutdown().await;
        assert!(report.is_clean());
        assert_eq!(
            *log.lock().expect("lock"),
            [
                "start database",
                "start push",
                "start http",
                "stop http",
                "stop push",
                "stop database"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn component_ignoring_stop_is_abandoned_at_its_deadline() {
        let (log, rec) = recorder();
        let mut lc = Lifecycle::new(Duration::from_secs(30));
        let r = rec.clone();
        lc.add("database", None, move || async move {
            r("stop database");
            Ok(())
        });
        lc.spawn("stubborn", Some(Duration::from_secs(2)), |_token| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let begun = Instant::now();
        let report = lc.shutdown().await;
        assert!(!report.is_clean());
        assert_eq!(report.components[0].outcome, StopOutcome::DeadlineExceeded);
        assert_eq!(report.components[0].took, Duration::from_secs(2));
        // The components after it still stop.
        assert_eq!(report.components[1].outcome, StopOutcome::Stopped);
        assert_eq!(*log.lock().expect("lock"), ["stop database"]);
        assert_eq!(begun.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn global_deadline_wins_over_a_longer_component_deadline() {
        let mut lc = Lifecycle::new(Duration::from_secs(3));
        lc.add("late", None, || async { Ok(()) });
        lc.spawn("stubborn", Some(Duration::from_secs(60)), |_t| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let begun = Instant::now();
        let report = lc.shutdown().await;
        assert_eq!(begun.elapsed(), Duration::from_secs(3));
        assert_eq!(report.components[0].outcome, StopOutcome::DeadlineExceeded);
        assert_eq!(report.components[1].outcome, StopOutcome::Abandoned);
    }

    #[tokio::test(start_paused = true)]
    async fn spawned_task_sees_cancellation() {
        let (log, rec) = recorder();
        let mut lc = Lifecycle::new(Duration::from_secs(30));
        lc.spawn("worker", None, move |token| async move {
            token.cancelled().await;
            rec("worker saw stop");
            Ok(())
        });
        let report = lc.shutdown().await;
        assert!(report.is_clean());
        assert_eq!(*log.lock().expect("lock"), ["worker saw stop"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_task_triggers_shutdown() {
        let mut lc = Lifecycle::new(Duration::from_secs(30));
        lc.spawn("listener", None, |_t| async {
            Err(anyhow::anyhow!("socket closed"))
        });
        let report = lc.run_until(std::future::pending()).await;
        assert_eq!(
            report.cause.as_deref(),
            Some("listener failed: socket closed")
        );
        assert!(!report.is_clean());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_seen_while_waiting_elsewhere_is_the_shutdown_cause() {
        let mut lc = Lifecycle::new(Duration::from_secs(30));
        lc.spawn("idle", None, |token| async move {
            token.cancelled().await;
            Ok(())
        });
        lc.spawn("worker", None, |_t| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Err(anyhow::anyhow!("database gone"))
        });
        // As `turnbase up` does: wait on a signal that never comes and on
        // this lifecycle's failures together.
        let cause = tokio::select! {
            () = std::future::pending() => unreachable!("no signal"),
            cause = lc.failure() => cause,
        };
        assert_eq!(cause, "worker failed: database gone");
        let report = lc.shutdown().await;
        assert_eq!(report.cause.as_deref(), Some(cause.as_str()));
        assert!(!report.is_clean());
    }
}
