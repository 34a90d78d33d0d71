//! Settings of the service: the lock policy and the worker's timing. Libraries never read
//! the environment; binaries build these from their own typed settings.

use std::time::Duration;

use crate::ports::{QueueTimings, QueueTimingsError};
use crate::runtime::{Backoff, BackoffError};

/// How create_order reduces contention in front of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Take `product:{id}` locks (ascending) in the [`DistributedLock`](crate::ports::DistributedLock)
    /// before the transaction, like the reference (Redis `SET NX`).
    Distributed,
    /// No distributed lock: the database's row locks are the only guard.
    None,
}

/// The lock policy: mode, TTL, attempts and the retry [`Backoff`] between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LockPolicy {
    /// Whether to take distributed locks at all.
    pub mode: LockMode,
    /// How long a lock lives if its holder never releases it.
    pub ttl: Duration,
    /// Attempts per key (the first try included) before `LockConflict`.
    pub attempts: u32,
    /// The wait after each failed attempt (jittered, so contenders spread out).
    pub backoff: Backoff,
}

impl Default for LockPolicy {
    /// The reference's policy: distributed, 10 s TTL, 6 attempts, 100 ms·2^(n-1) ± 25 %
    /// capped at 5 s. (The reference's 10 ms floor only matters for bases below 13 ms;
    /// a [`Backoff`] has none.)
    fn default() -> Self {
        Self {
            mode: LockMode::Distributed,
            ttl: Duration::from_secs(10),
            attempts: 6,
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(5),
                jitter: 0.25,
            },
        }
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
    /// A retry backoff is unusable (zero base, max below base, jitter out of range).
    #[error(transparent)]
    Backoff(#[from] BackoffError),
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
    /// How long the durable event log keeps an event (default 7 days): each pass
    /// deletes older ones ([`OrderRepository::prune_events`]), so the log is bounded by
    /// what a week of changes writes. A client whose last seen `seq` is older re-reads
    /// its orders instead of the events it missed.
    ///
    /// [`OrderRepository::prune_events`]: crate::ports::OrderRepository::prune_events
    pub event_retention: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
            batch: 256,
            event_retention: Duration::from_secs(7 * 24 * 60 * 60),
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
    /// Wait between charge attempts (doubles each time, up to its max; default 200 ms,
    /// max 5 s, no jitter). A jitter is drawn from the service's random source, and
    /// [`worst_case_payment`](Self::worst_case_payment) counts it at its longest.
    pub payment_backoff: Backoff,
    /// Bound on one event publish (events are best effort).
    pub publish_timeout: Duration,
    /// How long the worker loop waits for a job before checking for shutdown.
    pub worker_poll: Duration,
    /// The reconciler's schedule.
    pub reconciler: ReconcilerConfig,
    /// A worker does not start an order younger than this (DESIGN §6, default zero: no
    /// wait): its job is deferred, using no attempt, until the order is this old, so a
    /// cancel inside the window always wins. Shops use it as a change-of-mind window;
    /// tests and demos use it to make a cancel deterministic.
    pub grace_period: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            lock: LockPolicy::default(),
            lease: Duration::from_secs(30),
            payment_timeout: Duration::from_secs(5),
            payment_attempts: 3,
            payment_backoff: Backoff::fixed_schedule(
                Duration::from_millis(200),
                Duration::from_secs(5),
            ),
            publish_timeout: Duration::from_secs(1),
            worker_poll: Duration::from_millis(500),
            reconciler: ReconcilerConfig::default(),
            grace_period: Duration::ZERO,
        }
    }
}

impl ServiceConfig {
    /// The longest a worker may spend charging one order: every backoff counted at its
    /// longest (`nominal · (1 + jitter)`).
    pub fn worst_case_payment(&self) -> Duration {
        // The attempts, their backoffs, and the closing void.
        let mut total = self.payment_timeout;
        for attempt in 1..=self.payment_attempts {
            total = total.saturating_add(self.payment_timeout);
            if attempt < self.payment_attempts {
                total = total.saturating_add(self.payment_backoff.longest(attempt));
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
            ("lease", self.lease),
            ("payment_timeout", self.payment_timeout),
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
        self.lock.backoff.validate("lock.backoff")?;
        self.payment_backoff.validate("payment_backoff")?;
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
    fn backoff_doubles_within_jitter_and_is_capped() {
        let p = LockPolicy::default();
        let rng = SeededRandom::new(7);
        for attempt in 1..=5u32 {
            let nominal = 100.0 * f64::from(1u32 << (attempt - 1));
            for _ in 0..200 {
                let ms = p.backoff.delay(attempt, &rng).as_secs_f64() * 1000.0;
                assert!(
                    ms >= nominal * 0.75 - 1e-6 && ms <= nominal * 1.25 + 1e-6,
                    "{ms}"
                );
            }
        }
        // No floor: a tiny base stays tiny (within its jitter); the max caps the growth.
        let tiny = Backoff {
            base: Duration::from_millis(1),
            ..p.backoff
        };
        let ms = tiny.delay(1, &rng).as_secs_f64() * 1000.0;
        assert!((0.75 - 1e-6..=1.25 + 1e-6).contains(&ms), "{ms}");
        for _ in 0..200 {
            let ms = p.backoff.delay(20, &rng).as_secs_f64() * 1000.0;
            assert!(
                (5000.0 * 0.75 - 1e-6..=5000.0 * 1.25 + 1e-6).contains(&ms),
                "{ms}"
            );
        }
    }

    #[test]
    fn the_worst_case_payment_counts_each_backoff_at_its_longest() {
        let fixed = ServiceConfig::default();
        // 3 attempts: the void and 3 charges of 5 s, plus 200 + 400 ms of backoff.
        assert_eq!(fixed.worst_case_payment(), Duration::from_millis(20_600));
        let jittered = ServiceConfig {
            payment_backoff: Backoff {
                jitter: 0.5,
                ..fixed.payment_backoff
            },
            ..fixed.clone()
        };
        assert_eq!(jittered.worst_case_payment(), Duration::from_millis(20_900));
    }

    #[test]
    fn unusable_backoffs_are_refused_by_name() {
        let mut bad_jitter = ServiceConfig::default();
        bad_jitter.lock.backoff.jitter = 1.5;
        assert_eq!(
            bad_jitter.validate(),
            Err(ConfigError::Backoff(BackoffError::Jitter("lock.backoff")))
        );
        let mut inverted = ServiceConfig::default();
        inverted.payment_backoff.max = Duration::from_millis(1);
        assert_eq!(
            inverted.validate(),
            Err(ConfigError::Backoff(BackoffError::MaxBelowBase(
                "payment_backoff"
            )))
        );
        let jittered_queue = QueueTimings {
            retry_backoff: Backoff {
                jitter: 0.1,
                ..queue().retry_backoff
            },
            ..queue()
        };
        assert_eq!(
            ServiceConfig::default().validate_with(jittered_queue),
            Err(ConfigError::Queue(QueueTimingsError::Jittered(
                "retry_backoff"
            )))
        );
    }

    fn queue() -> QueueTimings {
        QueueTimings {
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 8,
            retry_backoff: Backoff::fixed_schedule(
                Duration::from_secs(1),
                Duration::from_secs(600),
            ),
        }
    }

    #[test]
    fn zero_durations_and_counts_are_refused_by_name() {
        let zero_poll = ServiceConfig {
            worker_poll: Duration::ZERO,
            ..ServiceConfig::default()
        };
        assert_eq!(zero_poll.validate(), Err(ConfigError::Zero("worker_poll")));
        let mut zero_backoff = ServiceConfig::default();
        zero_backoff.payment_backoff.base = Duration::ZERO;
        assert_eq!(
            zero_backoff.validate(),
            Err(ConfigError::Backoff(BackoffError::ZeroBase(
                "payment_backoff"
            )))
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
