//! Bounded retries of whole transactions after a deadlock or a lock-wait timeout.
//!
//! InnoDB resolves a deadlock by rolling back one of the transactions (error 1213), and
//! a lock-wait timeout (1205) rolls back only the waiting statement; in both cases the
//! adapter has already rolled the transaction back explicitly, so running it again from
//! the start is safe. Retries are few and short, with jitter (drawn from the repository's
//! `RandomSource`) so that the contenders do not collide again in lockstep; after the
//! last one the failure surfaces as `Unavailable`. No sqlx type appears here.

use std::time::Duration;

use order_core::app::Backoff;
use order_core::ports::RandomSource;

/// How often and how patiently a transaction is retried after a deadlock or lock-wait
/// timeout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The pause after failed attempt `n`: `min(base · 2^(n-1), max)`, jittered by
    /// `± jitter` with draws from the repository's
    /// [`RandomSource`](order_core::ports::RandomSource).
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 5 attempts, pausing about 5, 10, 20 and 40 ms (± 50 %, at most 200 ms nominal)
    /// in between.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff {
                base: Duration::from_millis(5),
                max: Duration::from_millis(200),
                jitter: 0.5,
            },
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based), jittered with `rng`.
    pub(crate) fn delay(&self, attempt: u32, rng: &dyn RandomSource) -> Duration {
        self.backoff.delay(attempt, rng)
    }
}

#[cfg(test)]
mod tests {
    use order_core::SeededRandom;

    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered_within_half() {
        let p = RetryPolicy::default();
        let rng = SeededRandom::new(3);
        for attempt in 1..=10 {
            let nominal = (p.backoff.base * (1 << (attempt - 1))).min(p.backoff.max);
            for _ in 0..100 {
                let d = p.delay(attempt, &rng);
                assert!(d >= nominal / 2 && d <= nominal * 3 / 2, "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_pauses() {
        let p = RetryPolicy::default();
        let (a, b) = (SeededRandom::new(9), SeededRandom::new(9));
        let xs: Vec<Duration> = (1..=5).map(|n| p.delay(n, &a)).collect();
        let ys: Vec<Duration> = (1..=5).map(|n| p.delay(n, &b)).collect();
        assert_eq!(xs, ys);
    }
}
