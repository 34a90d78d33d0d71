//! The `JobQueue` port: at-least-once delivery of jobs to workers.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::OrderId;
use crate::runtime::{Backoff, BackoffError};

/// Errors of [`JobQueue`].
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue cannot be reached. Nothing was enqueued or acknowledged.
    #[error("job queue unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The queue holds its maximum number of jobs; nothing was enqueued.
    #[error("job queue is full ({0} jobs)")]
    Full(u64),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Work for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    /// Take a Pending order through payment to Paid or Failed.
    ProcessOrder(OrderId),
}

/// A job handed to a worker, to be acknowledged or released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The job.
    pub job: Job,
    /// The queue's handle for this delivery (opaque to the service).
    pub receipt: String,
    /// 1 for the first delivery, then one more per redelivery or retry.
    pub attempt: u32,
}

/// What [`JobQueue::nack`] did with a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackOutcome {
    /// It will be delivered again after this delay.
    Retried(Duration),
    /// It was the last attempt: the job moved to the dead letter.
    DeadLettered,
    /// The receipt no longer names a delivery this queue holds (the job was redelivered
    /// to someone else, acked, dead-lettered, or lost with the queue's data): nothing
    /// changed.
    Stale,
}

/// The timings a queue runs on, which the service checks its own settings against
/// ([`QueueTimings::validate`] is the one rule every queue adapter applies too).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueTimings {
    /// How long a reserved, un-acknowledged delivery stays invisible before it is
    /// delivered again.
    pub visibility_timeout: Duration,
    /// Deliveries per job (the first included) before the dead letter.
    pub max_attempts: u32,
    /// The delay after a nack of attempt `n` is `retry_backoff.nominal(n)`:
    /// `min(base · 2^(n-1), max)`. Queue backoffs are deterministic — the delay is
    /// reported ([`NackOutcome::Retried`]) and checked — so their jitter must be 0.
    pub retry_backoff: Backoff,
}

/// Why queue timings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueTimingsError {
    /// A duration or count that must be positive is zero.
    #[error("queue {0} must not be zero")]
    Zero(&'static str),
    /// The retry backoff is unusable (zero base, max below base, jitter out of range).
    #[error("queue {0}")]
    Backoff(#[from] BackoffError),
    /// The retry backoff has a jitter: a queue reports its retry delay exactly, so its
    /// schedule must be deterministic.
    #[error("queue {0}: the backoff jitter must be 0 (a queue reports its retry delay exactly)")]
    Jittered(&'static str),
}

impl QueueTimings {
    /// The total delay a job's nacks add before its last attempt:
    /// `Σ retry_backoff.nominal(n)` for n in `1..max_attempts`. A job whose every attempt
    /// fails at once is dead-lettered after this long.
    pub fn retry_budget(&self) -> Duration {
        (1..self.max_attempts).fold(Duration::ZERO, |acc, n| {
            acc.saturating_add(self.retry_backoff.nominal(n))
        })
    }

    /// Refuses zero visibility timeouts and attempts, and an unusable or jittered
    /// backoff.
    ///
    /// # Errors
    /// [`QueueTimingsError`] naming the field.
    pub fn validate(&self) -> Result<(), QueueTimingsError> {
        if self.visibility_timeout.is_zero() {
            return Err(QueueTimingsError::Zero("visibility_timeout"));
        }
        if self.max_attempts == 0 {
            return Err(QueueTimingsError::Zero("max_attempts"));
        }
        self.retry_backoff.validate("retry_backoff")?;
        if self.retry_backoff.jitter != 0.0 {
            return Err(QueueTimingsError::Jittered("retry_backoff"));
        }
        Ok(())
    }
}

/// Counts a queue reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs waiting (ready or delayed).
    pub waiting: u64,
    /// Jobs delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Jobs in the dead letter.
    pub dead: u64,
}

/// Hands jobs to workers: at-least-once delivery.
///
/// Receipts name one *delivery*, not one job: when a job is delivered again (visibility
/// timeout, retry), the earlier receipt becomes stale, and a stale receipt MUST NOT ack,
/// nack or defer the live delivery.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Adds a job.
    ///
    /// A job may be enqueued more than once (a re-sent command after a lost reply, a
    /// reconciler re-enqueueing an order whose first job still waits). A duplicate costs
    /// one extra delivery, which finds the order terminal (acked) or leased (deferred):
    /// processing is idempotent, so it is harmless.
    ///
    /// # Errors
    /// [`QueueError::Full`] at the bound; [`QueueError::Unavailable`] when unreachable.
    async fn enqueue(&self, job: Job) -> Result<(), QueueError>;

    /// Waits up to `wait` for a job and reserves it for the queue's visibility timeout.
    /// A reserved job that is neither acked nor nacked in time MUST be delivered again
    /// (with `attempt` + 1); after the last attempt it MUST go to the dead letter.
    ///
    /// MUST be cancel-safe: dropping the future before it completes (a worker loop that
    /// stops) loses no job and uses no attempt — a job the queue hands out after the
    /// caller has gone MUST become deliverable to others at once.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable.
    async fn reserve(&self, wait: Duration) -> Result<Option<Delivery>, QueueError>;

    /// Acknowledges a delivery: the job is done and MUST NOT be delivered again.
    /// Acking a stale receipt (its job was delivered again since, to anyone) MUST change
    /// nothing: the live delivery stays in flight and is still redelivered if its holder
    /// dies.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable.
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Gives a delivery back after a failure: retried with backoff, or dead-lettered after
    /// the last attempt. A stale receipt changes nothing ([`NackOutcome::Stale`]).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable.
    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<NackOutcome, QueueError>;

    /// Moves a delivery to the dead letter at once, whatever its attempt, with `reason`:
    /// for a job that can never succeed (its order does not exist), which retrying
    /// would only delay on its way there. Returns [`NackOutcome::DeadLettered`], or
    /// [`NackOutcome::Stale`] for a stale receipt — which MUST change nothing: the live
    /// delivery stays in flight.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<NackOutcome, QueueError>;

    /// Gives a delivery back to be delivered again after `delay` *without using an
    /// attempt*: the next delivery carries the same `attempt` number. For jobs that
    /// cannot run yet through no fault of their own (the order is leased by a live
    /// worker). Returns [`NackOutcome::Retried`] with `delay`, or [`NackOutcome::Stale`]
    /// (nothing changed) for a stale receipt.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable.
    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<NackOutcome, QueueError>;

    /// The timings this queue runs on.
    fn timings(&self) -> QueueTimings;

    /// Current counts.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable.
    async fn stats(&self) -> Result<QueueStats, QueueError>;
}
