//! How long to wait before trying again: doubling from a base step,
//! capped, spread by a random factor so that many retriers that failed
//! together do not all come back together. One formula for every retrier
//! (the mail worker, the gateway's push client, and the workers to come).

use std::time::Duration;

use rand::Rng;

/// Doubling steps from `base`, at most `max`, each multiplied by a random
/// factor within `1 ± jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Between 0 (none) and 1; 0.2 spreads each wait over ±20%.
    pub jitter: f64,
}

impl Backoff {
    /// The spread every retrier here uses.
    pub const JITTER: f64 = 0.2;

    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            jitter: Self::JITTER,
        }
    }

    /// The step before jitter after `failures` failures in a row (the
    /// first failure waits `base`).
    pub fn step(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.base
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max)
    }

    /// The wait after `failures` failures in a row.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rng.random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        self.step(failures).mul_f64(factor)
    }
}

/// A retrier's running count of failures in a row.
#[derive(Debug, Clone)]
pub struct Retries {
    backoff: Backoff,
    failures: u32,
}

impl Retries {
    pub fn new(backoff: Backoff) -> Retries {
        Retries {
            backoff,
            failures: 0,
        }
    }

    /// Counts a failure and says how long to wait before the next try.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures, rng)
    }

    /// After a success: the next failure waits the base step again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng as _;

    #[test]
    fn steps_double_to_the_cap_and_a_reset_starts_over() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let steps: Vec<u64> = (1..=9).map(|n| b.step(n).as_millis() as u64).collect();
        assert_eq!(
            steps,
            [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(b.step(0), Duration::from_millis(500));
        assert_eq!(b.step(u32::MAX), Duration::from_secs(30), "no overflow");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut r = Retries::new(b);
        for step in steps {
            let d = r.next_delay(&mut rng).as_secs_f64() * 1000.0;
            let step = step as f64;
            assert!(
                d >= step * 0.8 - 1e-6 && d <= step * 1.2 + 1e-6,
                "{d} vs {step}"
            );
        }
        r.reset();
        let d = r.next_delay(&mut rng);
        assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(600));
        let exact = Backoff { jitter: 0.0, ..b };
        assert_eq!(exact.delay(3, &mut rng), Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn every_wait_stays_within_the_jittered_bounds(
            seed: u64,
            base_ms in 1u64..5000,
            extra_ms in 0u64..100_000,
            failures in 0u32..80,
            jitter in 0.0f64..1.0,
        ) {
            let base = Duration::from_millis(base_ms);
            let max = base + Duration::from_millis(extra_ms);
            let b = Backoff { base, max, jitter };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let d = b.delay(failures, &mut rng);
            let step = b.step(failures);
            prop_assert!(step >= base && step <= max);
            prop_assert!(d >= step.mul_f64(1.0 - jitter) - Duration::from_nanos(1));
            prop_assert!(d <= step.mul_f64(1.0 + jitter) + Duration::from_nanos(1));
            // Never shorter for more failures, before jitter.
            prop_assert!(b.step(failures + 1) >= step);
        }
    }
}
