//! A keyed rate limiter (the generic cell rate algorithm): each key may
//! spend `count` requests at once and then one per `per / count`. A refusal
//! says how long until the next request would pass (`Retry-After`).
//!
//! State lives in this process; with several backend replicas each keeps
//! its own, so the effective limit is the per-replica limit times the
//! replica count.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// How many keys may be remembered before idle ones are dropped.
const PRUNE_ABOVE: usize = 65_536;

pub struct RateLimiter<K> {
    interval: Duration,
    burst: Duration,
    /// Per key, the time at which its bucket is empty again.
    state: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        let interval = rate.per / rate.count;
        Self {
            interval,
            burst: rate.per.saturating_sub(interval),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one request of `key`, or says how long to wait.
    pub fn check(&self, key: K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.len() >= PRUNE_ABOVE {
            state.retain(|_, tat| *tat > now);
        }
        let tat = state.get(&key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.burst {
            // Whole seconds, rounded up, as Retry-After carries them.
            let wait = ahead - self.burst;
            return Err(Duration::from_secs(
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            ));
        }
        state.insert(key, tat + self.interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces_per_key() {
        let limiter = RateLimiter::new(Rate {
            count: 3,
            per: Duration::from_secs(60),
        });
        for _ in 0..3 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        assert_eq!(limiter.check("a"), Err(Duration::from_secs(20)));
        assert_eq!(limiter.check("b"), Ok(()), "keys are independent");
        tokio::time::advance(Duration::from_secs(19)).await;
        assert_eq!(limiter.check("a"), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.check("a"), Ok(()));
        assert!(limiter.check("a").is_err());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(limiter.check("a"), Ok(()), "the burst refills");
        }
    }
}
