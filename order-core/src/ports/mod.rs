//! Every driven port of the hexagon, in one place.
//!
//! Each port is a whole external capability named for its role, held as `Arc<dyn Port>`.
//! Signatures use domain types and the port's own error enum only: no driver, serde or
//! HTTP types ever cross this boundary. Every method lists the promises an adapter MUST
//! keep; the contract suites run the same checks against the memory and real adapters.
//!
//! # Errors keep their cause
//!
//! Every port error enum follows one convention, and so do the use-case errors in
//! [`crate::app`]:
//!
//! - A variant that stands for a failure below this layer (`Unavailable`,
//!   `PaymentError::Transient`) holds its cause as `#[source] anyhow::Error`, and its
//!   `Display` is this layer's own sentence *without* the cause (`order store
//!   unavailable`). The cause — the driver error itself, e.g. a `sqlx::Error` or a
//!   `fred::Error` behind `anyhow` — is reached through
//!   [`std::error::Error::source`], so a reporter that walks the chain prints each
//!   part once. Render the whole chain with [`ErrorChain`](crate::app::ErrorChain)
//!   (`order store unavailable: pool timed out while waiting for an open connection`).
//! - `Unexpected(anyhow::Error)` is `#[error(transparent)]`: it adds no sentence of its
//!   own, so `Display` and `source()` are those of the `anyhow::Error` inside.
//! - Adapters build these variants with the constructors (`RepositoryError::unavailable(e)`
//!   for any error value, `RepositoryError::unavailable_msg("…")` for text), never by
//!   rendering a driver error to a string. Port *signatures* still name only these
//!   enums: a driver error appears only as a `dyn Error` in the source chain.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    FailureReason, IdempotencyKey, Money, Order, OrderDraft, OrderId, OrderStatus, Product,
    ProductId, StatusChange, Timestamp, UserId,
};
use crate::runtime::{Backoff, BackoffError};

// ---------------------------------------------------------------------------------------
// OrderRepository
// ---------------------------------------------------------------------------------------

/// Errors of [`OrderRepository`]. Business outcomes (stock, duplicates, lost races) are
/// not errors: they are variants of [`PlaceOutcome`] and [`TransitionOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The store cannot be reached or timed out; the operation wrote nothing and may be
    /// retried.
    #[error("order store unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else; the operation wrote nothing.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The two constructors of a variant that keeps its cause: `$name(e)` for an error value
/// (kept as the [`source`](std::error::Error::source)) and `$name_msg(text)` when all
/// there is to say is text.
macro_rules! cause_constructors {
    ($error:ident :: $variant:ident, $name:ident, $name_msg:ident) => {
        impl $error {
            #[doc = concat!("[`", stringify!($error), "::", stringify!($variant),
                                "`] caused by `cause`, which stays reachable through `source()`.")]
            pub fn $name<E>(cause: E) -> Self
            where
                E: std::error::Error + Send + Sync + 'static,
            {
                $error::$variant(anyhow::Error::new(cause))
            }

            #[doc = concat!("[`", stringify!($error), "::", stringify!($variant),
                                "`] with only a description of the cause.")]
            pub fn $name_msg<M>(message: M) -> Self
            where
                M: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
            {
                $error::$variant(anyhow::Error::msg(message))
            }
        }
    };
}

cause_constructors!(RepositoryError::Unavailable, unavailable, unavailable_msg);
cause_constructors!(LockError::Unavailable, unavailable, unavailable_msg);
cause_constructors!(PaymentError::Transient, transient, transient_msg);
cause_constructors!(PublishError::Unavailable, unavailable, unavailable_msg);
cause_constructors!(QueueError::Unavailable, unavailable, unavailable_msg);

/// What happened to one draft in [`OrderRepository::place`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceOutcome {
    /// A new order was stored and its stock reserved.
    Placed(Order),
    /// The (user, key) pair already names an order created from the same lines
    /// ([`OrderDraft::same_lines_as`]): this is it.
    Replayed(Order),
    /// The (user, key) pair names an order created from different lines.
    KeyReused {
        /// The order that owns the key.
        existing: OrderId,
    },
    /// A product has less stock than requested; nothing was written for this draft.
    InsufficientStock {
        /// The first product (ascending) that is short.
        product: ProductId,
        /// Units requested.
        requested: u32,
        /// Units available when checked.
        available: u64,
    },
    /// A product does not exist; nothing was written for this draft.
    UnknownProduct(ProductId),
    /// The user does not exist; nothing was written for this draft.
    UnknownUser(UserId),
    /// The order's total would exceed [`Money::max`] at the current prices; nothing was
    /// written for this draft.
    TotalTooLarge,
}

/// What happened to one [`OrderRepository::transition`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The change was applied (and stock returned if the change returns stock).
    Applied(Order),
    /// The order was not in the expected status or the fence did not match: someone else
    /// won. Nothing was written. Carries the order as it is now.
    LostRace(Order),
    /// No order has this id.
    NotFound,
}

/// A page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    /// The orders on this page (at most `per_page`).
    pub orders: Vec<Order>,
    /// How many orders match the filter in all.
    pub total: u64,
}

/// Filter and page for [`OrderRepository::list_by_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListFilter {
    /// Only orders in this status, if set.
    pub status: Option<OrderStatus>,
    /// 1-based page number.
    pub page: u32,
    /// Orders per page (the service bounds it to 1..=50).
    pub per_page: u32,
}

/// What [`OrderRepository::claim_stranded`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrandedQuery {
    /// An order counts as stranded when it was last handed out (placed, or claimed by a
    /// reconciler) at or before `now - stale_after` and is still Pending, or is
    /// Processing with a lease that expired at or before `now`.
    pub stale_after: Duration,
    /// Most orders claimed by one call.
    pub limit: u32,
}

/// Orders and stock, changed atomically. The database behind it is the correctness
/// guard: locks in front of it only reduce contention.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait OrderRepository: Send + Sync {
    /// Places a batch of drafts, each independently, stock allotted in arrival order.
    ///
    /// For each draft, in ONE atomic step: lock its product rows in ascending id order,
    /// check and decrement stock, insert the order and its lines priced at the products'
    /// current prices, and record the (user, idempotency key) — or return the order that
    /// already holds that key ([`PlaceOutcome::Replayed`] when it was created from the
    /// same lines, compared line by line with [`OrderDraft::same_lines_as`];
    /// [`PlaceOutcome::KeyReused`] otherwise).
    ///
    /// Each line MUST carry the product's price current at the moment its stock is
    /// taken (under the same row lock): a price change committed while the draft waited
    /// for the row is the price it pays.
    ///
    /// Returns exactly one outcome per draft, in the drafts' order.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the store failed; the adapter MUST have written
    /// nothing for any draft whose outcome is not returned. One draft's business failure
    /// never fails the others. Deadlocks and lock-wait timeouts MUST be retried inside the
    /// adapter a bounded number of times before surfacing as `Unavailable`.
    async fn place(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError>;

    /// Applies `change` to order `id` as a compare-and-set on status and lease token, at
    /// time `now`, exactly as [`Order::apply`] would. When the change returns stock
    /// (Cancel, Fail) the quantities go back in the same atomic step, so stock is returned
    /// exactly once however many callers race.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed; nothing was written. A lost race is
    /// [`TransitionOutcome::LostRace`], never an error.
    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError>;

    /// The order with this id, if any.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError>;

    /// The order `user` created with `key`, if any.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn find_by_key(
        &self,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError>;

    /// A user's orders, newest first (by creation time, then id), filtered and paged.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn list_by_user(
        &self,
        user: UserId,
        filter: ListFilter,
    ) -> Result<OrderPage, RepositoryError>;

    /// All products with their current price and stock, ascending by id.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn products(&self) -> Result<Vec<Product>, RepositoryError>;

    /// Claims up to `query.limit` stranded orders for the reconciler and returns their
    /// ids, oldest hand-out first. An order is stranded at `now` when its last hand-out
    /// — its placement, or its last claim by this method — is at or before `now -
    /// query.stale_after`, and it is Pending, or Processing with a lease that expired at
    /// or before `now`.
    ///
    /// Claiming stamps each returned order as handed out at `now`, atomically with the
    /// check: of several reconcilers calling at once, each order goes to exactly one,
    /// and it is not claimed again before another `stale_after` has passed. Claiming
    /// changes neither status nor lease.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed; nothing was claimed.
    async fn claim_stranded(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, RepositoryError>;
}

// ---------------------------------------------------------------------------------------
// DistributedLock
// ---------------------------------------------------------------------------------------

/// Errors of [`DistributedLock`].
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock service cannot be reached. The service then fails open to the database
    /// guard (and counts it).
    #[error("lock service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A random token naming one holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockToken(String);

impl LockToken {
    /// Wraps a token (the service makes them from 128 random bits, hex-encoded).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A short-lived mutual-exclusion lock keyed by name (e.g. `product:42`), with `SET key
/// token NX PX ttl` semantics. It reduces contention in front of the database; it is
/// never the correctness guard.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait DistributedLock: Send + Sync {
    /// Takes `key` for `token` for `ttl` if nobody holds it, or if `token` itself holds
    /// it (the TTL then starts again). Returns whether `token` holds it now.
    ///
    /// Acquisition MUST be idempotent per token: a client that re-sends the command
    /// after losing the reply (fred does after a reconnect) finds its own token and
    /// succeeds, instead of seeing its own lock as busy until the TTL runs out. A live
    /// lock held by another token MUST NOT be taken. The adapter MUST NOT block waiting
    /// for the lock (the service owns retries) and MUST let the lock expire after `ttl`
    /// on its own clock.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when the lock service is down.
    async fn try_acquire(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, LockError>;

    /// Releases `key` only if it is still held by `token` (compare-and-delete). Returns
    /// whether it was deleted. A lock that expired and was taken by another holder MUST
    /// NOT be deleted.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when the lock service is down.
    async fn release(&self, key: &str, token: &LockToken) -> Result<bool, LockError>;
}

// ---------------------------------------------------------------------------------------
// PaymentGateway
// ---------------------------------------------------------------------------------------

/// Errors of [`PaymentGateway`].
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The provider could not be reached or answered with a retryable failure. Whether
    /// the charge happened is unknown; retrying with the same key is safe.
    #[error("payment provider temporarily unavailable")]
    Transient(#[source] anyhow::Error),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The provider's answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The amount was charged.
    Approved,
    /// The charge was refused; nothing was charged.
    Declined(FailureReason),
}

/// Charges an order.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Charges `amount` for order `key`. A repeated call with the same key MUST return the
    /// first call's outcome and MUST NOT charge again.
    ///
    /// # Errors
    /// [`PaymentError::Transient`] when the outcome is unknown and a retry is safe.
    async fn charge(&self, key: OrderId, amount: Money) -> Result<PaymentOutcome, PaymentError>;

    /// Settles a key whose charges never gave an answer: if a charge for `key` already
    /// has an outcome, returns it (possibly `Approved` — the charge went through after
    /// all); otherwise records a decline for `key`, so that every later `charge` with
    /// this key returns that decline and charges nothing, and returns it. First outcome
    /// wins, atomically, exactly as for `charge`.
    ///
    /// The service calls it before failing an order whose payment stayed unknown, so a
    /// stalled worker that wakes up later cannot charge a Failed order.
    ///
    /// # Errors
    /// [`PaymentError::Transient`] when the provider cannot be reached; nothing is settled
    /// and the order must not be failed yet.
    async fn void(&self, key: OrderId) -> Result<PaymentOutcome, PaymentError>;
}

// ---------------------------------------------------------------------------------------
// EventPublisher
// ---------------------------------------------------------------------------------------

/// Errors of [`EventPublisher`].
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event bus cannot be reached; the event is lost (events are best effort).
    #[error("event bus unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What happened to an order, as broadcast to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEventKind {
    /// `order.created`.
    Created,
    /// `order.processing`.
    Processing,
    /// `order.paid`.
    Paid,
    /// `order.failed`, with the reason.
    Failed(FailureReason),
    /// `order.cancelled`.
    Cancelled,
}

impl OrderEventKind {
    /// The wire name: `order.created`, `order.processing`, `order.paid`, `order.failed`,
    /// `order.cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            OrderEventKind::Created => "order.created",
            OrderEventKind::Processing => "order.processing",
            OrderEventKind::Paid => "order.paid",
            OrderEventKind::Failed(_) => "order.failed",
            OrderEventKind::Cancelled => "order.cancelled",
        }
    }
}

/// A status change of one order, for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    /// What happened.
    pub kind: OrderEventKind,
    /// The order.
    pub order: OrderId,
    /// Its owner (the event goes to the owner's private channel).
    pub user: UserId,
    /// The order total.
    pub total: Money,
    /// When it happened.
    pub at: Timestamp,
}

/// Broadcasts order events. Best effort: a failure is logged and never undoes or blocks
/// a transition.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes one event. SHOULD return promptly (the service bounds it by a timeout).
    ///
    /// # Errors
    /// [`PublishError`] when the event could not be handed to the bus.
    async fn publish(&self, event: OrderEvent) -> Result<(), PublishError>;
}

// ---------------------------------------------------------------------------------------
// JobQueue
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Clock and RandomSource
// ---------------------------------------------------------------------------------------

/// A boxed future returned by [`Clock::sleep`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Time: now, and waiting. Injected so tests can run on a manual clock.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
    /// A future that completes after `d` on this clock.
    fn sleep(&self, d: Duration) -> Sleep<'_>;
}

/// A source of random 64-bit numbers (tokens, jitter). Injected so tests are seedable.
pub trait RandomSource: Send + Sync {
    /// The next random number.
    fn next_u64(&self) -> u64;

    /// A uniform draw in `[0, 1)`, from the top 53 bits of [`next_u64`](Self::next_u64).
    fn next_unit_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
