//! Settings of the service: the lock policy and the worker's timing. Libraries never read
//! the environment; binaries build these from their own typed settings.

use std::time::Duration;

use crate::ports::RandomSource;

/// How create_order reduces contention in front of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Take `product:{id}` locks (ascending) in the [`DistributedLock`](crate::ports::DistributedLock)
    /// before the transaction, like the reference (Redis `SET NX`).
    Distributed,
    /// No distributed lock: the database's row locks are the only guard.
    None,
}

/// The lock policy: mode, TTL and the retry schedule `base·2^(n-1) ± jitter`, floored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LockPolicy {
    /// Whether to take distributed locks at all.
    pub mode: LockMode,
    /// How long a lock lives if its holder never releases it.
    pub ttl: Duration,
    /// Attempts per key (the first try included) before `LockConflict`.
    pub attempts: u32,
    /// Wait after the first failed attempt; doubles after each further one.
    pub base_backoff: Duration,
    /// Relative jitter applied to each wait, in 0.0..=1.0 (0.25 = ±25 %).
    pub jitter: f64,
    /// No wait is shorter than this.
    pub min_backoff: Duration,
}

impl Default for LockPolicy {
    /// The reference's policy: distributed, 10 s TTL, 6 attempts, 100 ms·2^(n-1) ± 25 %,
    /// at least 10 ms.
    fn default() -> Self {
        Self {
            mode: LockMode::Distributed,
            ttl: Duration::from_secs(10),
            attempts: 6,
            base_backoff: Duration::from_millis(100),
            jitter: 0.25,
            min_backoff: Duration::from_millis(10),
        }
    }
}

/// `base · 2^(attempt-1)` for a 1-based `attempt`, saturating. The exponent stops
/// growing at 20 (a million times the base), so no attempt count overflows it. Every
/// exponential schedule of the engine — lock retries, payment retries, queue retries,
/// the adapters' own — is this one.
pub fn exponential_backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
}

impl LockPolicy {
    /// The wait after failed attempt `attempt` (1-based): `base·2^(attempt-1)` scaled by a
    /// factor drawn uniformly from `1 ± jitter`, at least `min_backoff`.
    pub fn backoff(&self, attempt: u32, rng: &dyn RandomSource) -> Duration {
        let nominal = exponential_backoff(self.base_backoff, attempt);
        let factor = 1.0 + self.jitter * (2.0 * rng.next_unit_f64() - 1.0);
        let waited = nominal.mul_f64(factor.max(0.0));
        waited.max(self.min_backoff)
    }
}

/// Why a [`ServiceConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A count that must be at least one is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Jitter outside 0.0..=1.0.
    #[error("lock jitter must be within 0.0..=1.0")]
    Jitter,
    /// The lease would expire while the worker may still be charging, letting a second
    /// worker start on the same order.
    #[error(
        "processing lease ({lease:?}) must exceed the worst-case payment time ({payment:?}) \
         = attempts x (timeout + backoff)"
    )]
    LeaseTooShort {
        /// Configured lease.
        lease: Duration,
        /// Worst-case time spent charging.
        payment: Duration,
    },
}

/// Everything the service needs besides its ports.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The create-order lock policy.
    pub lock: LockPolicy,
    /// How long a worker's processing lease lasts.
    pub lease: Duration,
    /// Bound on one charge call.
    pub payment_timeout: Duration,
    /// Charge attempts (the first included) on transient errors before Failed.
    pub payment_attempts: u32,
    /// Wait between charge attempts (doubles each time).
    pub payment_backoff: Duration,
    /// Bound on one event publish (events are best effort).
    pub publish_timeout: Duration,
    /// How long the worker loop waits for a job before checking for shutdown.
    pub worker_poll: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            lock: LockPolicy::default(),
            lease: Duration::from_secs(30),
            payment_timeout: Duration::from_secs(5),
            payment_attempts: 3,
            payment_backoff: Duration::from_millis(200),
            publish_timeout: Duration::from_secs(1),
            worker_poll: Duration::from_millis(500),
        }
    }
}

impl ServiceConfig {
    /// The longest a worker may spend charging one order.
    pub fn worst_case_payment(&self) -> Duration {
        // The attempts, their backoffs, and the closing void.
        let mut total = self.payment_timeout;
        for attempt in 1..=self.payment_attempts {
            total += self.payment_timeout;
            if attempt < self.payment_attempts {
                total += exponential_backoff(self.payment_backoff, attempt);
            }
        }
        total
    }

    /// Checks the settings are coherent.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lock.attempts == 0 {
            return Err(ConfigError::Zero("lock.attempts"));
        }
        if self.payment_attempts == 0 {
            return Err(ConfigError::Zero("payment_attempts"));
        }
        if !(0.0..=1.0).contains(&self.lock.jitter) {
            return Err(ConfigError::Jitter);
        }
        let payment = self.worst_case_payment();
        if self.lease <= payment {
            return Err(ConfigError::LeaseTooShort {
                lease: self.lease,
                payment,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::SeededRandom;

    #[test]
    fn backoff_doubles_within_jitter_and_respects_the_floor() {
        let p = LockPolicy::default();
        let rng = SeededRandom::new(7);
        for attempt in 1..=5u32 {
            let nominal = 100.0 * f64::from(1u32 << (attempt - 1));
            for _ in 0..200 {
                let ms = p.backoff(attempt, &rng).as_secs_f64() * 1000.0;
                assert!(
                    ms >= nominal * 0.75 - 1e-6 && ms <= nominal * 1.25 + 1e-6,
                    "{ms}"
                );
            }
        }
        let tiny = LockPolicy {
            base_backoff: Duration::from_millis(1),
            ..p
        };
        assert_eq!(tiny.backoff(1, &rng), Duration::from_millis(10));
    }

    #[test]
    fn defaults_are_valid_and_a_short_lease_is_refused() {
        assert_eq!(ServiceConfig::default().validate(), Ok(()));
        let short = ServiceConfig {
            lease: Duration::from_secs(1),
            ..ServiceConfig::default()
        };
        assert!(matches!(
            short.validate(),
            Err(ConfigError::LeaseTooShort { .. })
        ));
    }
}
