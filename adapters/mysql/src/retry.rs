//! Bounded retries of whole transactions after a deadlock or a lock-wait timeout.
//!
//! InnoDB resolves a deadlock by rolling back one of the transactions (error 1213), and
//! a lock-wait timeout (1205) rolls back only the waiting statement; in both cases the
//! adapter has already rolled the transaction back explicitly, so running it again from
//! the start is safe. Retries are few and short, with jitter so that the contenders do
//! not collide again in lockstep; after the last one the failure surfaces as
//! `Unavailable`. No sqlx type appears here.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// How often and how patiently a transaction is retried after a deadlock or lock-wait
/// timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The pause before the first retry; it doubles for every further retry and is
    /// jittered by ±50 %.
    pub base_delay: Duration,
    /// The longest pause between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, pausing about 5, 10, 20 and 40 ms in between.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based): `base · 2^(attempt-1)`,
    /// capped at `max_delay`, times a random factor in [0.5, 1.5).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let nominal =
            order_core::app::exponential_backoff(self.base_delay, attempt).min(self.max_delay);
        // Jitter needs no quality: a fresh SipHash key per call (from `RandomState`) is
        // random enough and avoids a dependency on `rand`.
        let noise = RandomState::new().hash_one(attempt) % 1000;
        nominal.mul_f64(0.5 + noise as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered_within_half() {
        let p = RetryPolicy::default();
        for attempt in 1..=10 {
            let nominal = (p.base_delay * (1 << (attempt - 1))).min(p.max_delay);
            let d = p.delay(attempt);
            assert!(d >= nominal / 2 && d < nominal * 3 / 2, "{attempt}: {d:?}");
        }
    }
}
