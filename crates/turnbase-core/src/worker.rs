//! One shape for every background worker: a [`Job`] says what one step
//! is (`try_execute(now)`: did some work, or is idle until some time), and
//! a [`Runner`] owns everything around it — the slots that run steps
//! concurrently, the wake signal, the poll interval, backing off after
//! errors, stopping, and a tracing span per step.
//!
//! Time is injected: the job is handed `now` from the runner's [`Clock`],
//! and the runner waits with tokio's timers, so tests run under paused
//! time with a clock that follows it ([`tokio_clock`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::backoff::{Backoff, Retries};

/// The current time, injected so that schedules, TTLs and backoff are
/// tested without waiting.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A clock that starts at `start` and moves with tokio's time, so that a
/// test under `tokio::time::pause()` sees the time it advances.
pub fn tokio_clock(start: DateTime<Utc>) -> Clock {
    let origin = tokio::time::Instant::now();
    Arc::new(move || {
        let elapsed = chrono::Duration::from_std(origin.elapsed()).unwrap_or(chrono::Duration::MAX);
        start.checked_add_signed(elapsed).unwrap_or(start)
    })
}

/// What one step of a job found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Work was done; step again at once.
    Done,
    /// Nothing to do now: step again at `next_due` (or when woken, or
    /// after the poll interval, whichever comes first).
    Idle { next_due: Option<DateTime<Utc>> },
}

/// A background worker's step.
#[async_trait::async_trait]
pub trait Job: Send + Sync + 'static {
    /// Names the worker in spans and log lines.
    fn name(&self) -> &'static str;

    /// One step at `now`. `stop` is cancelled when the worker is to stop:
    /// a long step finishes, or hands back the work in hand, and returns.
    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Outcome>;

    /// Runs once after every slot stopped (a final flush, say); its error
    /// is the runner's.
    async fn stopped(&self, _now: DateTime<Utc>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Runs a [`Job`] in `slots` concurrent loops until stopped.
#[derive(Clone)]
pub struct Runner {
    pub slots: usize,
    /// The longest an idle slot sleeps before looking again.
    pub poll_interval: Duration,
    /// The wait after failed steps in a row.
    pub on_error: Backoff,
    pub wake: Arc<Notify>,
    pub clock: Clock,
}

impl Runner {
    /// One slot, waking at least every `poll_interval`, on the wall clock.
    pub fn new(poll_interval: Duration) -> Runner {
        Runner {
            slots: 1,
            poll_interval,
            on_error: Backoff::new(
                Duration::from_millis(100).min(poll_interval),
                poll_interval.max(Duration::from_secs(30)),
            ),
            wake: Arc::new(Notify::new()),
            clock: system_clock(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Runner {
        self.clock = clock;
        self
    }

    pub fn with_slots(mut self, slots: usize) -> Runner {
        self.slots = slots.max(1);
        self
    }

    pub fn with_wake(mut self, wake: Arc<Notify>) -> Runner {
        self.wake = wake;
        self
    }

    /// Runs until `stop`; returns once every slot has finished its step
    /// in hand and [`Job::stopped`] has run.
    pub async fn run(&self, job: Arc<dyn Job>, stop: CancellationToken) -> anyhow::Result<()> {
        let mut slots = tokio::task::JoinSet::new();
        for slot in 0..self.slots.max(1) {
            let (runner, job, stop) = (self.clone(), job.clone(), stop.clone());
            slots.spawn(async move { runner.slot(job, slot, stop).await });
        }
        while let Some(joined) = slots.join_next().await {
            joined?;
        }
        job.stopped((self.clock)()).await
    }

    async fn slot(&self, job: Arc<dyn Job>, slot: usize, stop: CancellationToken) {
        let mut failures = Retries::new(self.on_error);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let mut step = 0u64;
        while !stop.is_cancelled() {
            step += 1;
            let now = (self.clock)();
            let span = tracing::info_span!("job", worker = job.name(), slot, step);
            let outcome = job.try_execute(now, &stop).instrument(span).await;
            let wait = match outcome {
                Ok(Outcome::Done) => {
                    failures.reset();
                    // Others get the thread between steps of a busy job.
                    tokio::task::yield_now().await;
                    continue;
                }
                Ok(Outcome::Idle { next_due }) => {
                    failures.reset();
                    let until = next_due
                        .and_then(|due| (due - (self.clock)()).to_std().ok())
                        .unwrap_or(Duration::ZERO);
                    match next_due {
                        Some(_) => until.min(self.poll_interval),
                        None => self.poll_interval,
                    }
                }
                Err(err) => {
                    let wait = failures.next_delay(&mut rng);
                    tracing::warn!(
                        worker = job.name(),
                        slot,
                        error = %format!("{err:#}"),
                        retry_in = ?wait,
                        "worker step failed"
                    );
                    wait
                }
            };
            tokio::select! {
                () = stop.cancelled() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2027-01-15T08:00:00Z")
            .expect("a time")
            .with_timezone(&Utc)
    }

    /// Records the time of each step; idle until `every` after it.
    struct Ticker {
        every: chrono::Duration,
        steps: Mutex<Vec<DateTime<Utc>>>,
        stopped: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Job for Ticker {
        fn name(&self) -> &'static str {
            "ticker"
        }

        async fn try_execute(
            &self,
            now: DateTime<Utc>,
            _stop: &CancellationToken,
        ) -> anyhow::Result<Outcome> {
            self.steps.lock().expect("not poisoned").push(now);
            Ok(Outcome::Idle {
                next_due: Some(now + self.every),
            })
        }

        async fn stopped(&self, _now: DateTime<Utc>) -> anyhow::Result<()> {
            self.stopped.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn ticker(every_secs: i64) -> Arc<Ticker> {
        Arc::new(Ticker {
            every: chrono::Duration::seconds(every_secs),
            steps: Mutex::new(Vec::new()),
            stopped: AtomicUsize::new(0),
        })
    }

    /// Waits (in paused time) until `f` holds.
    async fn until(f: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the condition never held");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_job_sleeps_until_its_next_due_time_not_the_poll() {
        let job = ticker(7);
        let runner = Runner::new(Duration::from_secs(60)).with_clock(tokio_clock(start()));
        let stop = CancellationToken::new();
        let running = {
            let (job, stop) = (job.clone(), stop.clone());
            tokio::spawn(async move { runner.run(job, stop).await })
        };
        until(|| job.steps.lock().expect("lock").len() >= 4).await;
        stop.cancel();
        running.await.expect("joined").expect("ran");
        let steps = job.steps.lock().expect("lock").clone();
        let gaps: Vec<i64> = steps
            .windows(2)
            .map(|w| (w[1] - w[0]).num_seconds())
            .collect();
        assert_eq!(steps[0], start(), "the first step at once");
        assert!(gaps.iter().all(|g| *g == 7), "every 7 s: {gaps:?}");
        assert_eq!(job.stopped.load(Ordering::SeqCst), 1, "stopped runs once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_poll_interval_caps_a_far_next_due_and_a_wake_steps_at_once() {
        let job = ticker(3600);
        let wake = Arc::new(Notify::new());
        let runner = Runner::new(Duration::from_secs(10))
            .with_clock(tokio_clock(start()))
            .with_wake(wake.clone());
        let stop = CancellationToken::new();
        let running = {
            let (job, stop) = (job.clone(), stop.clone());
            tokio::spawn(async move { runner.run(job, stop).await })
        };
        until(|| job.steps.lock().expect("lock").len() >= 2).await;
        let second = job.steps.lock().expect("lock")[1];
        assert_eq!(
            (second - start()).num_seconds(),
            10,
            "the poll interval caps the sleep"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        wake.notify_one();
        until(|| job.steps.lock().expect("lock").len() >= 3).await;
        let third = job.steps.lock().expect("lock")[2];
        assert_eq!((third - start()).num_seconds(), 13, "woken, not polled");
        stop.cancel();
        running.await.expect("joined").expect("ran");
    }

    /// A step under way when the stop comes finishes (hands back its work)
    /// and no step starts after it.
    struct Slow {
        started: AtomicUsize,
        finished: AtomicUsize,
        handed_back: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Job for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }

        async fn try_execute(
            &self,
            _now: DateTime<Utc>,
            stop: &CancellationToken,
        ) -> anyhow::Result<Outcome> {
            self.started.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = stop.cancelled() => {
                    self.handed_back.fetch_add(1, Ordering::SeqCst);
                }
            }
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(Outcome::Done)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_mid_step_lets_the_step_hand_back_and_starts_no_other() {
        let job = Arc::new(Slow {
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            handed_back: AtomicUsize::new(0),
        });
        let runner = Runner::new(Duration::from_secs(1)).with_slots(2);
        let stop = CancellationToken::new();
        let running = {
            let (job, stop) = (job.clone(), stop.clone());
            tokio::spawn(async move { runner.run(job, stop).await })
        };
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(
            job.started.load(Ordering::SeqCst),
            6,
            "two slots, three 5 s steps each"
        );
        stop.cancel();
        running.await.expect("joined").expect("ran");
        assert_eq!(
            job.started.load(Ordering::SeqCst),
            6,
            "nothing started after the stop"
        );
        assert_eq!(job.finished.load(Ordering::SeqCst), 6);
        assert_eq!(
            job.handed_back.load(Ordering::SeqCst),
            2,
            "both steps in hand"
        );
    }

    /// Fails twice, then idles: the waits after the failures follow the
    /// error backoff.
    struct Flaky {
        steps: Mutex<Vec<tokio::time::Instant>>,
    }

    #[async_trait::async_trait]
    impl Job for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }

        async fn try_execute(
            &self,
            _now: DateTime<Utc>,
            _stop: &CancellationToken,
        ) -> anyhow::Result<Outcome> {
            let mut steps = self.steps.lock().expect("lock");
            steps.push(tokio::time::Instant::now());
            if steps.len() <= 2 {
                anyhow::bail!("not yet");
            }
            Ok(Outcome::Idle { next_due: None })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_steps_back_off_and_a_success_resets() {
        let job = Arc::new(Flaky {
            steps: Mutex::new(Vec::new()),
        });
        let mut runner = Runner::new(Duration::from_secs(60));
        runner.on_error = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.0,
        };
        let stop = CancellationToken::new();
        let running = {
            let (job, stop) = (job.clone(), stop.clone());
            tokio::spawn(async move { runner.run(job, stop).await })
        };
        until(|| job.steps.lock().expect("lock").len() >= 4).await;
        stop.cancel();
        running.await.expect("joined").expect("ran");
        let steps = job.steps.lock().expect("lock").clone();
        let gaps: Vec<u64> = steps.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(
            gaps[..3],
            [1, 2, 60],
            "1 s, 2 s, then the poll interval: {gaps:?}"
        );
    }

    /// Counts the spans named `job` that are entered, with their worker.
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _id: &tracing::span::Id,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attrs.metadata().name() == "job" {
                struct Worker(String);
                impl tracing::field::Visit for Worker {
                    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                        if field.name() == "worker" {
                            self.0 = value.to_string();
                        }
                    }
                    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {
                    }
                }
                let mut worker = Worker(String::new());
                attrs.record(&mut worker);
                self.0.lock().expect("lock").push(worker.0);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_step_runs_in_its_own_span_naming_the_worker() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let job = ticker(1);
        let runner = Runner::new(Duration::from_secs(60)).with_clock(tokio_clock(start()));
        let stop = CancellationToken::new();
        // On this task, so that the subscriber set here sees the spans.
        let steps = job.clone();
        let watcher = async {
            until(|| steps.steps.lock().expect("lock").len() >= 5).await;
            stop.cancel();
        };
        let (ran, ()) = tokio::join!(runner.slot_for_test(job.clone(), stop.clone()), watcher);
        ran.expect("ran");
        let seen = spans.0.lock().expect("lock").clone();
        assert_eq!(
            seen.len(),
            job.steps.lock().expect("lock").len(),
            "one span per step"
        );
        assert!(seen.iter().all(|w| w == "ticker"), "{seen:?}");
    }

    impl Runner {
        /// One slot on the calling task (spawned tasks would not see a
        /// subscriber set for this thread only).
        async fn slot_for_test(
            &self,
            job: Arc<dyn Job>,
            stop: CancellationToken,
        ) -> anyhow::Result<()> {
            self.slot(job.clone(), 0, stop).await;
            job.stopped((self.clock)()).await
        }
    }
}
