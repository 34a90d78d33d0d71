//! [`MemoryQueue`]: the [`JobQueue`] port in one process, with the reliability
//! semantics the Redis queue must have: at-least-once delivery, a visibility timeout
//! after which an un-acknowledged job is delivered again, bounded retries with
//! exponential backoff, and a dead letter after the last attempt.
//!
//! Deadlines and backoffs are measured on the injected [`Clock`], so a test on a
//! [`ManualClock`](crate::ManualClock) exercises redelivery by advancing time. Only the
//! wait of [`JobQueue::reserve`] for a new job is real (Tokio) time: it is a poll
//! interval, not part of the queue's semantics.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use order_core::Timestamp;
use order_core::app::Backoff;
use order_core::ports::{
    Clock, Delivery, Job, JobQueue, NackOutcome, QueueError, QueueStats, QueueTimings,
    QueueTimingsError,
};
use tokio::sync::Notify;
use tracing::{debug, warn};

/// Settings of a [`MemoryQueue`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// How long a reserved job stays invisible before it is delivered again
    /// (default 30 s).
    pub visibility_timeout: Duration,
    /// Deliveries per job, the first included, before it goes to the dead letter
    /// (default 8: the retries' backoffs then add up to 127 s, past the service's
    /// default 30 s lease). Zero is refused.
    pub max_attempts: u32,
    /// The retry schedule after a nack: its base (default 1 s) doubles with each
    /// attempt, up to its max (default 10 min). Deterministic — the delay is reported
    /// ([`NackOutcome::Retried`]) and checked — so a jitter other than 0 is refused, as
    /// are a zero base and a max below the base.
    pub retry_backoff: Backoff,
    /// Most jobs waiting and in flight together (default 1 000 000); dead letters do
    /// not count.
    pub capacity: u64,
    /// Most dead letters kept; beyond it the oldest are dropped (default 10 000), as
    /// the Redis queue trims its dead-letter stream.
    pub dead_letter_capacity: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 8,
            retry_backoff: Backoff::fixed_schedule(
                Duration::from_secs(1),
                Duration::from_secs(600),
            ),
            capacity: 1_000_000,
            dead_letter_capacity: 10_000,
        }
    }
}

impl QueueConfig {
    /// The delay before the retry that follows failed attempt `attempt` (1-based):
    /// `retry_backoff.nominal(attempt)`: `min(base · 2^(attempt-1), max)`, saturating.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retry_backoff.nominal(attempt)
    }

    /// The timings of the port, as [`JobQueue::timings`] reports them.
    pub fn timings(&self) -> QueueTimings {
        QueueTimings {
            visibility_timeout: self.visibility_timeout,
            max_attempts: self.max_attempts,
            retry_backoff: self.retry_backoff,
        }
    }

    fn last_attempt(&self) -> u32 {
        self.max_attempts
    }
}

/// A job that used up its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job.
    pub job: Job,
    /// How many times it was delivered.
    pub attempts: u32,
    /// The error of the last attempt (the nack's message, or a note that the visibility
    /// timeout ran out).
    pub last_error: String,
}

/// A job waiting for a worker: `attempt` is the number its next delivery will carry.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    job: Job,
    attempt: u32,
}

/// A delivered job whose receipt has not been acked or nacked yet.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    job: Job,
    attempt: u32,
    deadline: Timestamp,
}

#[derive(Debug, Default)]
struct State {
    /// By (ready at, sequence): the first entry is the earliest ready, FIFO among equals.
    waiting: BTreeMap<(Timestamp, u64), Waiting>,
    /// By receipt.
    in_flight: HashMap<String, InFlight>,
    /// (deadline, receipt) of every in-flight delivery, to find the expired ones.
    deadlines: BTreeSet<(Timestamp, String)>,
    dead: VecDeque<DeadLetter>,
    next_seq: u64,
}

/// An in-process, at-least-once [`JobQueue`].
///
/// A delivery not acked or nacked within the visibility timeout is delivered again with
/// `attempt + 1`; a nack retries after an exponential backoff; a job whose last attempt
/// fails either way goes to the dead letter ([`MemoryQueue::dead_letters`]). Deadlines
/// and backoffs run on the injected clock; only `reserve`'s wait is real time.
pub struct MemoryQueue {
    config: QueueConfig,
    clock: Arc<dyn Clock>,
    // A std mutex, not an async one: critical sections are a few map operations and are
    // never held across an `.await` (reserve waits on `available`, outside the lock).
    state: Mutex<State>,
    /// Woken (one waiter per job) when a job becomes ready now.
    available: Notify,
}

impl fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.guard();
        f.debug_struct("MemoryQueue")
            .field("config", &self.config)
            .field("waiting", &state.waiting.len())
            .field("in_flight", &state.in_flight.len())
            .field("dead", &state.dead.len())
            .finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// An empty queue with `config`, measuring deadlines and backoffs on `clock`.
    ///
    /// # Errors
    /// [`QueueTimingsError`] for a zero visibility timeout or attempt count, or an
    /// unusable or jittered backoff (the rule every queue adapter applies).
    pub fn new(clock: Arc<dyn Clock>, config: QueueConfig) -> Result<Self, QueueTimingsError> {
        config.timings().validate()?;
        Ok(Self {
            config,
            clock,
            state: Mutex::new(State::default()),
            available: Notify::new(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Every job in the dead letter, oldest first (at most
    /// [`QueueConfig::dead_letter_capacity`]).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.guard().dead.iter().cloned().collect()
    }

    /// Appends to the dead letter, dropping the oldest beyond its capacity.
    fn bury(&self, state: &mut State, letter: DeadLetter) {
        state.dead.push_back(letter);
        while state.dead.len() > self.config.dead_letter_capacity {
            state.dead.pop_front();
        }
    }

    fn guard(&self) -> MutexGuard<'_, State> {
        // A poisoned mutex means a thread panicked while holding it. Each critical
        // section moves a job between collections with map operations that cannot fail
        // (allocation failure aborts rather than unwinds), so the state is consistent
        // and safe to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requeues or dead-letters expired deliveries, then hands out the earliest ready
    /// job. Otherwise returns how long (on the injected clock) until something may
    /// become ready, if anything is scheduled.
    fn try_reserve(&self) -> Result<Delivery, Option<Duration>> {
        let now = self.clock.now();
        let mut state = self.guard();
        self.expire(&mut state, now);
        let ready = state
            .waiting
            .first_key_value()
            .is_some_and(|((ready_at, _), _)| *ready_at <= now);
        if !ready {
            let next_ready = state.waiting.keys().next().map(|(t, _)| *t);
            let next_deadline = state.deadlines.iter().next().map(|(t, _)| *t);
            let next = next_ready.into_iter().chain(next_deadline).min();
            return Err(next.map(|t| t.saturating_since(now)));
        }
        let Some((_, waiting)) = state.waiting.pop_first() else {
            return Err(None);
        };
        state.next_seq = state.next_seq.wrapping_add(1);
        let receipt = format!("r{}", state.next_seq);
        let deadline = now.saturating_add(self.config.visibility_timeout);
        state.deadlines.insert((deadline, receipt.clone()));
        state.in_flight.insert(
            receipt.clone(),
            InFlight {
                job: waiting.job,
                attempt: waiting.attempt,
                deadline,
            },
        );
        Ok(Delivery {
            job: waiting.job,
            receipt,
            attempt: waiting.attempt,
        })
    }

    /// Takes back every delivery whose visibility deadline is `<= now`: delivered again
    /// with attempt + 1 (ready from its deadline), or dead-lettered when that was its
    /// last attempt.
    fn expire(&self, state: &mut State, now: Timestamp) {
        while let Some((deadline, _)) = state.deadlines.first()
            && *deadline <= now
        {
            let Some((deadline, receipt)) = state.deadlines.pop_first() else {
                break;
            };
            let Some(flight) = state.in_flight.remove(&receipt) else {
                continue;
            };
            if flight.attempt >= self.config.last_attempt() {
                warn!(job = ?flight.job, attempts = flight.attempt, "job dead-lettered: visibility timeout expired on its last attempt");
                let last_error = format!(
                    "visibility timeout expired on attempt {} (not acknowledged within {:?})",
                    flight.attempt, self.config.visibility_timeout
                );
                self.bury(
                    state,
                    DeadLetter {
                        job: flight.job,
                        attempts: flight.attempt,
                        last_error,
                    },
                );
            } else {
                debug!(job = ?flight.job, attempt = flight.attempt, "delivery not acknowledged in time; redelivering");
                Self::push_waiting(
                    state,
                    deadline,
                    flight.job,
                    flight.attempt.saturating_add(1),
                );
            }
        }
    }

    fn push_waiting(state: &mut State, ready_at: Timestamp, job: Job, attempt: u32) {
        state.next_seq = state.next_seq.wrapping_add(1);
        let seq = state.next_seq;
        state
            .waiting
            .insert((ready_at, seq), Waiting { job, attempt });
    }

    fn remove_in_flight(state: &mut State, receipt: &str) -> Option<InFlight> {
        let flight = state.in_flight.remove(receipt)?;
        state
            .deadlines
            .remove(&(flight.deadline, receipt.to_owned()));
        Some(flight)
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    /// Adds `job`, ready now, as attempt 1.
    ///
    /// # Errors
    /// [`QueueError::Full`] (carrying the capacity) when waiting + in-flight jobs already
    /// number `capacity`; nothing is enqueued.
    async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        let now = self.clock.now();
        {
            let mut state = self.guard();
            let held = (state.waiting.len() as u64).saturating_add(state.in_flight.len() as u64);
            if held >= self.config.capacity {
                return Err(QueueError::Full(self.config.capacity));
            }
            Self::push_waiting(&mut state, now, job, 1);
        }
        self.available.notify_one();
        Ok(())
    }

    /// First takes back expired deliveries (redelivered with attempt + 1, or
    /// dead-lettered after the last attempt), then hands out the earliest ready job with
    /// a fresh receipt, invisible to others for the visibility timeout.
    ///
    /// When none is ready it waits — in real time, never moving the injected clock — for
    /// an enqueue, at most `wait` (and no longer than until the next scheduled retry or
    /// deadline falls due on the injected clock), then checks once more and returns
    /// `None` if there is still nothing. It may also return `None` early after a wake-up
    /// meant for a job another worker took first; callers poll in a loop anyway.
    ///
    /// # Errors
    /// Never: the queue is in memory.
    async fn reserve(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        // Register interest before looking, so an enqueue between the look and the wait
        // is not missed.
        let notified = self.available.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        let due = match self.try_reserve() {
            Ok(delivery) => return Ok(Some(delivery)),
            Err(due) => due,
        };
        let wait = due.map_or(wait, |d| wait.min(d));
        if !wait.is_zero() {
            // Either outcome (woken or timed out) leads to the one re-check below.
            let _woken = tokio::time::timeout(wait, notified).await;
        }
        Ok(self.try_reserve().ok())
    }

    /// Removes the in-flight delivery with this receipt: it will not be delivered again.
    /// A stale receipt (its delivery already timed out and was requeued, redelivered or
    /// dead-lettered, or it was already acked) is a harmless no-op.
    ///
    /// # Errors
    /// Never: the queue is in memory.
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let mut state = self.guard();
        if Self::remove_in_flight(&mut state, &delivery.receipt).is_none() {
            debug!(receipt = %delivery.receipt, "ack of a stale receipt ignored");
        }
        Ok(())
    }

    /// Gives a delivery back after a failure. On its last attempt (`attempt >=
    /// max_attempts`) the job goes to the dead letter with `error` →
    /// [`NackOutcome::DeadLettered`]; otherwise it is delivered again after
    /// [`QueueConfig::backoff`]`(attempt)` as attempt + 1 → [`NackOutcome::Retried`] with
    /// that delay.
    ///
    /// A stale receipt (see [`JobQueue::ack`]) changes nothing and returns
    /// [`NackOutcome::Stale`]: the job is already back in the queue's hands, so it will be
    /// delivered again (or was dead-lettered) without further action.
    ///
    /// # Errors
    /// Never: the queue is in memory.
    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<NackOutcome, QueueError> {
        Ok(self.give_back(delivery, error, false))
    }

    /// Dead-letters the delivery at once; see the port.
    ///
    /// # Errors
    /// Never: the queue is in memory.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<NackOutcome, QueueError> {
        Ok(self.give_back(delivery, reason, true))
    }

    /// Delivered again after `delay` with the same attempt number; see the port.
    ///
    /// # Errors
    /// Never: the queue is in memory.
    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<NackOutcome, QueueError> {
        let now = self.clock.now();
        {
            let mut state = self.guard();
            let Some(flight) = Self::remove_in_flight(&mut state, &delivery.receipt) else {
                debug!(receipt = %delivery.receipt, "defer of a stale receipt ignored");
                return Ok(NackOutcome::Stale);
            };
            Self::push_waiting(
                &mut state,
                now.saturating_add(delay),
                flight.job,
                flight.attempt,
            );
        }
        if delay.is_zero() {
            self.available.notify_one();
        }
        Ok(NackOutcome::Retried(delay))
    }

    fn timings(&self) -> QueueTimings {
        self.config.timings()
    }

    /// Waiting (ready or delayed), in flight (delivered, not acked or nacked — including
    /// expired deliveries not yet taken back by a `reserve`) and dead-lettered counts.
    ///
    /// # Errors
    /// Never: the queue is in memory.
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let state = self.guard();
        Ok(QueueStats {
            waiting: state.waiting.len() as u64,
            in_flight: state.in_flight.len() as u64,
            dead: state.dead.len() as u64,
        })
    }
}

impl MemoryQueue {
    /// `nack` (`bury_now` false: retried, or dead-lettered after the last attempt) and
    /// `dead_letter` (`bury_now` true), acting only on the live delivery of a receipt.
    fn give_back(&self, delivery: &Delivery, error: &str, bury_now: bool) -> NackOutcome {
        let now = self.clock.now();
        let outcome = {
            let mut state = self.guard();
            let Some(flight) = Self::remove_in_flight(&mut state, &delivery.receipt) else {
                debug!(receipt = %delivery.receipt, "nack of a stale receipt ignored");
                return NackOutcome::Stale;
            };
            if bury_now || flight.attempt >= self.config.last_attempt() {
                warn!(job = ?flight.job, attempts = flight.attempt, error, "job dead-lettered");
                self.bury(
                    &mut state,
                    DeadLetter {
                        job: flight.job,
                        attempts: flight.attempt,
                        last_error: error.to_owned(),
                    },
                );
                return NackOutcome::DeadLettered;
            }
            let delay = self.config.backoff(flight.attempt);
            Self::push_waiting(
                &mut state,
                now.saturating_add(delay),
                flight.job,
                flight.attempt.saturating_add(1),
            );
            NackOutcome::Retried(delay)
        };
        if outcome == NackOutcome::Retried(Duration::ZERO) {
            self.available.notify_one();
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
