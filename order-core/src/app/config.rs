//! Settings of the service: the lock policy and the worker's timing. Libraries never read
//! the environment; binaries build these from their own typed settings.

use std::time::Duration;

use crate::ports::{QueueTimings, QueueTimingsError, RandomSource};
use crate::runtime::exponential_backoff;

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

/// Why a [`ServiceConfig`] is unusable, alone or with the queue it runs on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A count or duration that must be positive is zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// The queue's own timings are unusable.
    #[error(transparent)]
    Queue(#[from] QueueTimingsError),
    /// A job whose attempts all fail would be dead-lettered while the lease of its own
    /// first attempt may still be live: its retries could never take the order over.
    #[error(
        "the queue's retry budget ({budget:?} = the backoffs of max_attempts - 1 retries) \
         must exceed the processing lease ({lease:?})"
    )]
    RetryBudgetTooShort {
        /// Sum of the queue's retry backoffs.
        budget: Duration,
        /// Configured lease.
        lease: Duration,
    },
    /// The reconciler would re-enqueue orders whose job may still be legitimately
    /// invisible in the queue, flooding it with duplicates.
    #[error(
        "reconciler stale_after ({stale_after:?}) must be at least the queue's visibility \
         timeout ({visibility:?})"
    )]
    StaleAfterTooShort {
        /// Configured `stale_after`.
        stale_after: Duration,
        /// The queue's visibility timeout.
        visibility: Duration,
    },
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

/// How the reconciler (DESIGN §6) finds stranded orders: every `interval` it claims up
/// to `batch` orders not handed out for `stale_after` that are still Pending, or
/// Processing with an expired lease, and enqueues them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilerConfig {
    /// Pause between two passes (default 10 s).
    pub interval: Duration,
    /// How long an order may go without being handed out before it counts as stranded
    /// (default 60 s). Must be at least the queue's visibility timeout.
    pub stale_after: Duration,
    /// Most orders one claim takes; a pass claims again while batches come back full
    /// (default 256).
    pub batch: u32,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
            batch: 256,
        }
    }
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
    /// The reconciler's schedule.
    pub reconciler: ReconcilerConfig,
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
            reconciler: ReconcilerConfig::default(),
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
        let durations = [
            ("lock.ttl", self.lock.ttl),
            ("lock.base_backoff", self.lock.base_backoff),
            ("lease", self.lease),
            ("payment_timeout", self.payment_timeout),
            ("payment_backoff", self.payment_backoff),
            ("publish_timeout", self.publish_timeout),
            ("worker_poll", self.worker_poll),
            ("reconciler.interval", self.reconciler.interval),
            ("reconciler.stale_after", self.reconciler.stale_after),
        ];
        let counts = [
            ("lock.attempts", self.lock.attempts),
            ("payment_attempts", self.payment_attempts),
            ("reconciler.batch", self.reconciler.batch),
        ];
        let zero_duration = durations.iter().find(|(_, d)| d.is_zero()).map(|(n, _)| n);
        let zero_count = counts.iter().find(|(_, c)| *c == 0).map(|(n, _)| n);
        if let Some(name) = zero_duration.or(zero_count) {
            return Err(ConfigError::Zero(name));
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

    /// Checks these settings together with the timings of the queue they will run on:
    /// the queue's own rule ([`QueueTimings::validate`]), a retry budget that outlives
    /// the lease, and a reconciler that never re-enqueues a job the queue may still be
    /// holding invisibly.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first problem.
    pub fn validate_with(&self, queue: QueueTimings) -> Result<(), ConfigError> {
        self.validate()?;
        queue.validate()?;
        let budget = queue.retry_budget();
        if budget <= self.lease {
            return Err(ConfigError::RetryBudgetTooShort {
                budget,
                lease: self.lease,
            });
        }
        if self.reconciler.stale_after < queue.visibility_timeout {
            return Err(ConfigError::StaleAfterTooShort {
                stale_after: self.reconciler.stale_after,
                visibility: queue.visibility_timeout,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::SeededRandom;

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

    fn queue() -> QueueTimings {
        QueueTimings {
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 8,
            retry_backoff: Duration::from_secs(1),
        }
    }

    #[test]
    fn zero_durations_and_counts_are_refused_by_name() {
        let zero_poll = ServiceConfig {
            worker_poll: Duration::ZERO,
            ..ServiceConfig::default()
        };
        assert_eq!(zero_poll.validate(), Err(ConfigError::Zero("worker_poll")));
        let zero_backoff = ServiceConfig {
            payment_backoff: Duration::ZERO,
            ..ServiceConfig::default()
        };
        assert_eq!(
            zero_backoff.validate(),
            Err(ConfigError::Zero("payment_backoff"))
        );
        let mut zero_attempts = ServiceConfig::default();
        zero_attempts.lock.attempts = 0;
        assert_eq!(
            zero_attempts.validate(),
            Err(ConfigError::Zero("lock.attempts"))
        );
        let zero_queue = QueueTimings {
            max_attempts: 0,
            ..queue()
        };
        assert_eq!(
            ServiceConfig::default().validate_with(zero_queue),
            Err(ConfigError::Queue(QueueTimingsError::Zero("max_attempts")))
        );
    }

    #[test]
    fn a_retry_budget_that_ends_inside_the_lease_is_refused() {
        let config = ServiceConfig::default();
        assert_eq!(config.validate_with(queue()), Ok(()));
        // The old defaults: 5 attempts at 1 s doubling = 15 s of retries < a 30 s lease.
        let short = QueueTimings {
            max_attempts: 5,
            ..queue()
        };
        assert_eq!(short.retry_budget(), Duration::from_secs(15));
        assert_eq!(
            config.validate_with(short),
            Err(ConfigError::RetryBudgetTooShort {
                budget: Duration::from_secs(15),
                lease: Duration::from_secs(30)
            })
        );
    }

    #[test]
    fn a_reconciler_faster_than_the_visibility_timeout_is_refused() {
        let mut config = ServiceConfig::default();
        config.reconciler.stale_after = Duration::from_secs(5);
        assert!(matches!(
            config.validate_with(queue()),
            Err(ConfigError::StaleAfterTooShort { .. })
        ));
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
