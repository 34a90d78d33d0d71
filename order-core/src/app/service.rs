//! `OrderService`: the use cases of DESIGN §4, over the driven ports.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{LockMode, ServiceConfig, exponential_backoff};
use super::errors::{
    CancelOrderError, CreateOrderError, GetOrderError, ListOrdersError, ProcessOrderError,
    ValidationErrors,
};
use super::future::{Either, race, with_timeout};
use super::stats::{ServiceStats, StatsSnapshot};
use crate::domain::{
    FailureReason, IdempotencyKey, Lease, LeaseToken, Order, OrderDraft, OrderId, OrderStatus,
    Product, ProductId, Quantity, StatusChange, UserId,
};
use crate::ports::{
    Clock, Delivery, DistributedLock, EventPublisher, Job, JobQueue, ListFilter, LockError,
    LockToken, NackOutcome, OrderEvent, OrderEventKind, OrderPage, OrderRepository, PaymentError,
    PaymentGateway, PaymentOutcome, PlaceOutcome, RandomSource, StrandedQuery, TransitionOutcome,
};

/// The most lines one create request may send (counted before merging duplicates): the
/// domain's [`OrderDraft::MAX_LINES`].
pub const MAX_LINES: usize = OrderDraft::MAX_LINES;

/// Reason stored on orders failed because the provider never gave an answer.
const PROVIDER_UNAVAILABLE: &str = "Payment provider unavailable.";

/// Added to a lease's remaining time when a job is deferred behind it, so the
/// redelivery finds the lease expired rather than a few milliseconds short of it.
const DEFER_SLACK: Duration = Duration::from_millis(50);

/// The driven ports an [`OrderService`] runs on.
#[derive(Clone)]
pub struct Ports {
    /// Orders and stock.
    pub repository: Arc<dyn OrderRepository>,
    /// Contention reducer for create_order.
    pub lock: Arc<dyn DistributedLock>,
    /// The payment provider.
    pub payments: Arc<dyn PaymentGateway>,
    /// Where status changes are broadcast.
    pub events: Arc<dyn EventPublisher>,
    /// Where placed orders wait for a worker.
    pub queue: Arc<dyn JobQueue>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Tokens and jitter.
    pub rng: Arc<dyn RandomSource>,
}

/// One line of a create request as the caller sent it (unvalidated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedItem {
    /// The product id as sent.
    pub product_id: i64,
    /// The quantity as sent.
    pub quantity: i64,
}

/// A create request as the caller sent it; [`OrderService::create_order`] validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOrderRequest {
    /// The authenticated caller.
    pub user: UserId,
    /// Lines as sent (1..=50, duplicates allowed and merged).
    pub items: Vec<RequestedItem>,
    /// The caller's idempotency key as sent.
    pub idempotency_key: String,
}

impl CreateOrderRequest {
    /// A request for known products, as a program (rather than a client's JSON) builds
    /// one: `(product, quantity)` lines. Quantities are still validated by
    /// `create_order`. A product id above `i64::MAX` (which no store hands out) is sent
    /// as `i64::MAX` and refused as unknown.
    pub fn new(
        user: UserId,
        items: impl IntoIterator<Item = (ProductId, u32)>,
        idempotency_key: impl Into<String>,
    ) -> Self {
        Self {
            user,
            items: items
                .into_iter()
                .map(|(product, quantity)| RequestedItem {
                    product_id: i64::try_from(product.get()).unwrap_or(i64::MAX),
                    quantity: i64::from(quantity),
                })
                .collect(),
            idempotency_key: idempotency_key.into(),
        }
    }
}

/// A created or replayed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedOrder {
    /// The order.
    pub order: Order,
    /// `true` when this is an earlier request's order returned again (HTTP 200 with
    /// `Idempotent-Replayed: true`), `false` when it was created now (201).
    pub replayed: bool,
}

/// Filter and page for [`OrderService::list_orders`], as the caller sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderQuery {
    /// Only this status, if set.
    pub status: Option<OrderStatus>,
    /// 1-based page (default 1).
    pub page: i64,
    /// 1..=50 (default 15).
    pub per_page: i64,
}

impl Default for OrderQuery {
    fn default() -> Self {
        Self {
            status: None,
            page: 1,
            per_page: 15,
        }
    }
}

/// What [`OrderService::process_order`] did. Every variant but `LeaseHeld` means the job
/// is finished and must be acknowledged; `LeaseHeld` means it must be deferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessOutcome {
    /// No such order (acked and logged).
    Missing,
    /// The order was already terminal: an idempotent skip.
    AlreadyTerminal(OrderStatus),
    /// This call took the order to Paid or Failed.
    Completed(Order),
    /// A compare-and-set (start, take-over or completion) lost to a change that made
    /// the order terminal: the job is finished.
    LostRace(OrderStatus),
    /// The order is Processing under a live lease — another delivery's, or this job's
    /// own earlier attempt's: look again once it may have expired (the worker defers
    /// the job, using no attempt).
    LeaseHeld {
        /// How long until the lease expires.
        retry_after: Duration,
    },
}

/// What the worker did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerOutcome {
    /// Processed and acknowledged.
    Acked(ProcessOutcome),
    /// Handed back to be delivered again after this delay, using no attempt: the order
    /// was held by a live lease.
    Deferred(Duration),
    /// Given back to the queue as a failed attempt (a retry, or the dead letter), with
    /// the reason.
    Released(String),
}

/// What one [`OrderService::reconcile`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Stranded orders claimed from the repository.
    pub claimed: u64,
    /// Of those, orders whose job was enqueued again.
    pub enqueued: u64,
}

/// The order-processing use cases over a set of [`Ports`].
pub struct OrderService {
    ports: Ports,
    config: ServiceConfig,
    stats: ServiceStats,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a create request locks, in this order: its idempotency key, then every product
/// ascending. Everyone takes them in this order, so two requests never wait on each
/// other in a cycle.
#[derive(Debug, Clone, Copy)]
enum LockTarget<'a> {
    Key(&'a OrderDraft),
    Product(ProductId),
}

impl LockTarget<'_> {
    /// The lock's name in the [`DistributedLock`].
    fn name(&self) -> String {
        match self {
            LockTarget::Key(d) => format!("idem:{}:{}", d.user(), d.idempotency_key()),
            LockTarget::Product(p) => format!("product:{p}"),
        }
    }
}

/// Locks held by one create request (released in reverse), and the target that stayed
/// busy through every attempt, if one did.
struct HeldLocks<'a> {
    names: Vec<String>,
    token: LockToken,
    busy: Option<LockTarget<'a>>,
}

impl OrderService {
    /// A service over `ports`.
    ///
    /// # Errors
    /// [`ConfigError`](super::ConfigError) when `config` is incoherent, alone or with the
    /// timings of `ports.queue` ([`ServiceConfig::validate_with`]).
    pub fn new(ports: Ports, config: ServiceConfig) -> Result<Self, super::ConfigError> {
        config.validate_with(ports.queue.timings())?;
        Ok(Self {
            ports,
            config,
            stats: ServiceStats::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The ports in use.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// Counters of what this service instance has done.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    // -----------------------------------------------------------------------------------
    // create_order
    // -----------------------------------------------------------------------------------

    /// Validates a request, then replays, refuses or places the order, enqueues its job
    /// and publishes `order.created`. Every lock taken is released on every path.
    ///
    /// # Errors
    /// See [`CreateOrderError`]; on every error nothing was written.
    pub async fn create_order(
        &self,
        request: CreateOrderRequest,
    ) -> Result<CreatedOrder, CreateOrderError> {
        let span = info_span!("create_order", user = %request.user, lines = request.items.len());
        self.create_order_in_span(request).instrument(span).await
    }

    async fn create_order_in_span(
        &self,
        request: CreateOrderRequest,
    ) -> Result<CreatedOrder, CreateOrderError> {
        let draft = validate(&request)?;

        if let Some(found) = self.replay(&draft).await? {
            return Ok(found);
        }

        // No second lookup of the key after locking: if a request with our key commits
        // while we wait, `place` answers with its order (replay or key reuse) atomically.
        let locks = self.lock_for(&draft).await;
        let result = match locks.busy {
            None => self.place(&draft).await,
            Some(LockTarget::Key(_)) => {
                // The request holding our key may have finished just now: replay if so.
                match self.replay(&draft).await {
                    Ok(Some(found)) => Ok(found),
                    Ok(None) => Err(CreateOrderError::IdempotencyKeyInFlight),
                    Err(e) => Err(e),
                }
            }
            Some(LockTarget::Product(product)) => {
                ServiceStats::bump(&self.stats.lock_conflicts);
                Err(CreateOrderError::LockConflict { product })
            }
        };
        self.release(locks).await;

        if let Ok(created) = &result
            && !created.replayed
        {
            self.after_commit(&created.order).await;
        }
        result
    }

    async fn replay(&self, draft: &OrderDraft) -> Result<Option<CreatedOrder>, CreateOrderError> {
        let found = self
            .ports
            .repository
            .find_by_key(draft.user(), draft.idempotency_key())
            .await?;
        match found {
            None => Ok(None),
            Some(order) if draft.same_lines_as(&order) => {
                ServiceStats::bump(&self.stats.replayed);
                Ok(Some(CreatedOrder {
                    order,
                    replayed: true,
                }))
            }
            Some(order) => Err(CreateOrderError::IdempotencyKeyReused {
                existing: order.id(),
            }),
        }
    }

    async fn place(&self, draft: &OrderDraft) -> Result<CreatedOrder, CreateOrderError> {
        let now = self.ports.clock.now();
        let mut outcomes = self
            .ports
            .repository
            .place(std::slice::from_ref(draft), now)
            .await?;
        let outcome = match (outcomes.pop(), outcomes.is_empty()) {
            (Some(o), true) => o,
            _ => {
                return Err(CreateOrderError::Unexpected(anyhow::anyhow!(
                    "repository returned the wrong number of outcomes for one draft"
                )));
            }
        };
        match outcome {
            PlaceOutcome::Placed(order) => {
                ServiceStats::bump(&self.stats.created);
                Ok(CreatedOrder {
                    order,
                    replayed: false,
                })
            }
            PlaceOutcome::Replayed(order) => {
                ServiceStats::bump(&self.stats.replayed);
                Ok(CreatedOrder {
                    order,
                    replayed: true,
                })
            }
            PlaceOutcome::KeyReused { existing } => {
                Err(CreateOrderError::IdempotencyKeyReused { existing })
            }
            PlaceOutcome::InsufficientStock {
                product,
                requested,
                available,
            } => {
                ServiceStats::bump(&self.stats.insufficient_stock);
                Err(CreateOrderError::InsufficientStock {
                    product,
                    requested,
                    available,
                })
            }
            PlaceOutcome::UnknownProduct(p) => Err(CreateOrderError::UnknownProduct(p)),
            PlaceOutcome::UnknownUser(u) => Err(CreateOrderError::UnknownUser(u)),
            PlaceOutcome::TotalTooLarge => {
                let mut errors = ValidationErrors::new();
                errors.add(
                    "items",
                    format!(
                        "the order total would exceed {}",
                        crate::domain::Money::max()
                    ),
                );
                Err(CreateOrderError::Validation(errors))
            }
        }
    }

    /// Enqueue and announce a freshly committed order. Neither may fail the request: the
    /// order exists. A failed enqueue is counted; the reconciler claims the order once it
    /// is `stale_after` old and enqueues it again.
    async fn after_commit(&self, order: &Order) {
        if let Err(e) = self
            .ports
            .queue
            .enqueue(Job::ProcessOrder(order.id()))
            .await
        {
            ServiceStats::bump(&self.stats.enqueue_failures);
            warn!(order = %order.id(), error = %e,
                "order committed but its job was not enqueued; the reconciler will hand it out");
        }
        self.publish(order, OrderEventKind::Created).await;
    }

    /// Takes every lock of `draft` in [`LockTarget`] order, stopping at the first one that
    /// stays busy. With [`LockMode::None`], or when the lock service is down (fail open
    /// to the database guard, counted), it takes none.
    async fn lock_for<'a>(&self, draft: &'a OrderDraft) -> HeldLocks<'a> {
        let token = LockToken::new(format!(
            "{:016x}{:016x}",
            self.ports.rng.next_u64(),
            self.ports.rng.next_u64()
        ));
        let mut held = HeldLocks {
            names: Vec::new(),
            token,
            busy: None,
        };
        if self.config.lock.mode == LockMode::None {
            return held;
        }
        let targets = std::iter::once(LockTarget::Key(draft))
            .chain(draft.product_ids().map(LockTarget::Product));
        for target in targets {
            let name = target.name();
            match self.acquire_one(&name, &held.token).await {
                Ok(true) => held.names.push(name),
                Ok(false) => {
                    held.busy = Some(target);
                    break;
                }
                Err(e) => {
                    ServiceStats::bump(&self.stats.lock_fail_open);
                    warn!(error = %e, "lock service unavailable; falling back to the database guard");
                    break;
                }
            }
        }
        held
    }

    async fn acquire_one(&self, key: &str, token: &LockToken) -> Result<bool, LockError> {
        let policy = &self.config.lock;
        for attempt in 1..=policy.attempts {
            if self.ports.lock.try_acquire(key, token, policy.ttl).await? {
                return Ok(true);
            }
            if attempt < policy.attempts {
                ServiceStats::bump(&self.stats.lock_retries);
                self.ports
                    .clock
                    .sleep(policy.backoff(attempt, &*self.ports.rng))
                    .await;
            }
        }
        Ok(false)
    }

    async fn release(&self, held: HeldLocks<'_>) {
        // Release in reverse order of acquisition; a failed release only delays others
        // until the TTL, so it is logged, never returned.
        for key in held.names.iter().rev() {
            if let Err(e) = self.ports.lock.release(key, &held.token).await {
                warn!(key, error = %e, "lock release failed; it will expire with its TTL");
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // process_order
    // -----------------------------------------------------------------------------------

    /// Takes a Pending order (or a Processing one whose lease expired) through payment to
    /// Paid or Failed. Safe under at-least-once delivery: a terminal order is skipped, a
    /// lost compare-and-set writes nothing, the charge is idempotent per order, and a
    /// worker whose lease was taken over is fenced off.
    ///
    /// # Errors
    /// [`ProcessOrderError`] when the store failed; the job should be retried.
    pub async fn process_order(&self, id: OrderId) -> Result<ProcessOutcome, ProcessOrderError> {
        self.process_order_in_span(id)
            .instrument(info_span!("process_order", order = %id))
            .await
    }

    async fn process_order_in_span(
        &self,
        id: OrderId,
    ) -> Result<ProcessOutcome, ProcessOrderError> {
        let repo = &self.ports.repository;
        let Some(order) = repo.get(id).await? else {
            warn!(order = %id, "job for a missing order; acknowledging");
            return Ok(ProcessOutcome::Missing);
        };
        let now = self.ports.clock.now();
        let lease = Lease {
            token: LeaseToken::from_raw(self.ports.rng.next_u64()),
            until: now.saturating_add(self.config.lease),
        };
        let change = match (order.status(), order.lease()) {
            (OrderStatus::Pending, _) => StatusChange::Start { lease },
            (OrderStatus::Processing, Some(current)) if current.until <= now => {
                StatusChange::TakeOver {
                    expired: current.token,
                    lease,
                }
            }
            (OrderStatus::Processing, Some(current)) => {
                return Ok(ProcessOutcome::LeaseHeld {
                    retry_after: current.until.saturating_since(now),
                });
            }
            (OrderStatus::Processing, None) => {
                return Err(ProcessOrderError::Unexpected(anyhow::anyhow!(
                    "order {id} is Processing without a lease"
                )));
            }
            (s @ (OrderStatus::Paid | OrderStatus::Failed | OrderStatus::Cancelled), _) => {
                return Ok(ProcessOutcome::AlreadyTerminal(s));
            }
        };
        let taking_over = matches!(change, StatusChange::TakeOver { .. });
        let order = match repo.transition(id, change, now).await? {
            TransitionOutcome::Applied(o) => o,
            TransitionOutcome::LostRace(current) => return Ok(self.lost_to(&current)),
            TransitionOutcome::NotFound => return Ok(ProcessOutcome::Missing),
        };
        if taking_over {
            ServiceStats::bump(&self.stats.lease_takeovers);
        }
        self.publish(&order, OrderEventKind::Processing).await;

        // From here the order is ours. Every way out but a completion gives the lease
        // back, so the retry can take over at once instead of finding our live lease.
        let result = self.complete(&order, lease.token).await;
        if result.is_err() {
            self.release_lease(id, lease.token).await;
        }
        result
    }

    /// What a lost compare-and-set means for the job: a terminal order is finished (ack);
    /// an order some other delivery is processing must be looked at again when that
    /// lease may have run out — acking would leave nobody to recover it if that holder
    /// dies.
    fn lost_to(&self, current: &Order) -> ProcessOutcome {
        match (current.status(), current.lease()) {
            (OrderStatus::Processing | OrderStatus::Pending, lease) => ProcessOutcome::LeaseHeld {
                retry_after: lease.map_or(Duration::ZERO, |l| {
                    l.until.saturating_since(self.ports.clock.now())
                }),
            },
            (s @ (OrderStatus::Paid | OrderStatus::Failed | OrderStatus::Cancelled), _) => {
                ProcessOutcome::LostRace(s)
            }
        }
    }

    /// Charges the order this worker holds under `lease` and moves it to Paid or Failed.
    async fn complete(
        &self,
        order: &Order,
        lease: LeaseToken,
    ) -> Result<ProcessOutcome, ProcessOrderError> {
        let id = order.id();
        let completion = match self.charge(order).await {
            Some(PaymentOutcome::Approved) => StatusChange::Pay { lease },
            Some(PaymentOutcome::Declined(reason)) => StatusChange::Fail { lease, reason },
            None => {
                ServiceStats::bump(&self.stats.payments_unresolved);
                return Err(ProcessOrderError::PaymentUnresolved(id));
            }
        };
        let now = self.ports.clock.now();
        match self
            .ports
            .repository
            .transition(id, completion, now)
            .await?
        {
            TransitionOutcome::Applied(done) => {
                let kind = match (done.status(), done.failure_reason()) {
                    (OrderStatus::Paid, _) => {
                        ServiceStats::bump(&self.stats.paid);
                        OrderEventKind::Paid
                    }
                    (_, reason) => {
                        ServiceStats::bump(&self.stats.failed);
                        OrderEventKind::Failed(
                            reason
                                .cloned()
                                .unwrap_or_else(|| FailureReason::new("unknown")),
                        )
                    }
                };
                self.publish(&done, kind).await;
                Ok(ProcessOutcome::Completed(done))
            }
            TransitionOutcome::LostRace(current) => {
                ServiceStats::bump(&self.stats.fenced_writes);
                debug!(order = %id, "lease was taken over; this worker writes nothing");
                Ok(self.lost_to(&current))
            }
            TransitionOutcome::NotFound => Ok(ProcessOutcome::Missing),
        }
    }

    /// Gives this worker's lease back (fenced by its token) after giving up on an order
    /// it started. If even that fails, the lease runs out on its own and the retry is
    /// deferred until then.
    async fn release_lease(&self, id: OrderId, lease: LeaseToken) {
        let now = self.ports.clock.now();
        let release = StatusChange::Release { lease };
        match self.ports.repository.transition(id, release, now).await {
            Ok(TransitionOutcome::Applied(_)) => {
                ServiceStats::bump(&self.stats.leases_released);
                debug!(order = %id, "gave the processing lease back for the retry");
            }
            Ok(TransitionOutcome::LostRace(_) | TransitionOutcome::NotFound) => {
                debug!(order = %id, "lease no longer ours; nothing to give back");
            }
            Err(e) => {
                warn!(order = %id, error = %e,
                    "could not give the processing lease back; the retry waits for it to expire");
            }
        }
    }

    /// Charges with a timeout per call and bounded retries. When every attempt leaves the
    /// outcome unknown, the key is voided: the provider answers with the key's settled
    /// outcome — a decline it now records, or `Approved` if a charge went through after
    /// all — so no later charge for this order can succeed behind a Failed status.
    /// `None` when even the void could not reach the provider: the outcome is unknown
    /// and the order must stay Processing.
    async fn charge(&self, order: &Order) -> Option<PaymentOutcome> {
        let attempts = self.config.payment_attempts;
        for attempt in 1..=attempts {
            let call = self.ports.payments.charge(order.id(), order.total());
            let error =
                match with_timeout(&*self.ports.clock, self.config.payment_timeout, call).await {
                    Some(Ok(outcome)) => return Some(outcome),
                    Some(Err(PaymentError::Transient(e))) => e,
                    Some(Err(PaymentError::Unexpected(e))) => format!("{e:#}"),
                    None => "timed out".to_owned(),
                };
            warn!(order = %order.id(), attempt, error, "charge attempt failed");
            if attempt < attempts {
                ServiceStats::bump(&self.stats.payment_retries);
                let wait = exponential_backoff(self.config.payment_backoff, attempt);
                self.ports.clock.sleep(wait).await;
            }
        }
        let void = self.ports.payments.void(order.id());
        match with_timeout(&*self.ports.clock, self.config.payment_timeout, void).await {
            Some(Ok(PaymentOutcome::Declined(_))) => Some(PaymentOutcome::Declined(
                FailureReason::new(PROVIDER_UNAVAILABLE),
            )),
            Some(Ok(PaymentOutcome::Approved)) => Some(PaymentOutcome::Approved),
            Some(Err(e)) => {
                warn!(order = %order.id(), error = %e, "void failed; the payment outcome stays unknown");
                None
            }
            None => {
                warn!(order = %order.id(), "void timed out; the payment outcome stays unknown");
                None
            }
        }
    }

    /// Processes one delivery, then settles it with the queue: acknowledged when the
    /// job is finished; deferred (without using an attempt) until the lease may have
    /// run out when the order is leased; given back as a failed attempt (retried, then
    /// dead-lettered) on an error. Queue errors are logged: an unsettled job is
    /// redelivered after the visibility timeout anyway.
    pub async fn handle_delivery(&self, delivery: &Delivery) -> WorkerOutcome {
        let Job::ProcessOrder(id) = delivery.job;
        let queue = &self.ports.queue;
        match self.process_order(id).await {
            Ok(ProcessOutcome::LeaseHeld { retry_after }) => {
                ServiceStats::bump(&self.stats.deferred);
                let delay = retry_after.saturating_add(DEFER_SLACK);
                debug!(order = %id, ?delay, attempt = delivery.attempt,
                    "order held by a live processing lease; deferring the job");
                if let Err(e) = queue.defer(delivery, delay).await {
                    warn!(order = %id, error = %e, "defer failed; the job will be redelivered");
                }
                WorkerOutcome::Deferred(delay)
            }
            Ok(outcome) => {
                if let Err(e) = queue.ack(delivery).await {
                    warn!(order = %id, error = %e, "ack failed; the job will be redelivered");
                }
                WorkerOutcome::Acked(outcome)
            }
            Err(e) => {
                let reason = format!("{e:#}");
                match queue.nack(delivery, &reason).await {
                    Ok(NackOutcome::DeadLettered) => {
                        warn!(order = %id, attempt = delivery.attempt, error = %reason,
                            "job dead-lettered; the reconciler hands the order out again");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(order = %id, error = %e, "nack failed; the job will be redelivered");
                    }
                }
                WorkerOutcome::Released(reason)
            }
        }
    }

    /// Runs one worker: reserves jobs and handles them one at a time until `shutdown`
    /// completes. Shutdown is checked between jobs, never during one, so in-flight work
    /// finishes and is acknowledged. Run several concurrently for parallelism.
    ///
    /// Returns how many deliveries it handled.
    pub async fn run_worker(&self, shutdown: impl Future<Output = ()>) -> u64 {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut handled = 0u64;
        loop {
            let next = race(
                shutdown.as_mut(),
                self.ports.queue.reserve(self.config.worker_poll),
            );
            match next.await {
                Either::Left(()) => return handled,
                Either::Right(Ok(Some(delivery))) => {
                    self.handle_delivery(&delivery).await;
                    handled += 1;
                }
                Either::Right(Ok(None)) => {}
                Either::Right(Err(e)) => {
                    warn!(error = %e, "queue unavailable; backing off");
                    if let Either::Left(()) = race(
                        shutdown.as_mut(),
                        self.ports.clock.sleep(self.config.worker_poll),
                    )
                    .await
                    {
                        return handled;
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // reconciler
    // -----------------------------------------------------------------------------------

    /// One reconciler pass (DESIGN §6): claims stranded orders from the repository — the
    /// source of truth — in batches of `reconciler.batch` (Pending and not handed out
    /// for `stale_after`, or Processing with an expired lease) and enqueues a job for
    /// each. Claiming stamps the orders, so several reconcilers running at once hand
    /// each order out once per `stale_after`, and a duplicate job is harmless anyway.
    ///
    /// This is what recovers an order whose job was never enqueued (a failed enqueue
    /// after commit, a crash between commit and enqueue), was lost with the queue's data
    /// (a Redis restart without persistence, `FLUSHALL`) or was dead-lettered while the
    /// order was still unfinished.
    ///
    /// # Errors
    /// [`ReconcileError`](super::ReconcileError) when the store or the queue failed; orders claimed but not
    /// enqueued are claimed again after `stale_after`.
    pub async fn reconcile(&self) -> Result<ReconcileReport, super::ReconcileError> {
        let settings = self.config.reconciler;
        let query = StrandedQuery {
            stale_after: settings.stale_after,
            limit: settings.batch,
        };
        let mut report = ReconcileReport::default();
        loop {
            let now = self.ports.clock.now();
            let claimed = self.ports.repository.claim_stranded(query, now).await?;
            let full = claimed.len() >= settings.batch as usize;
            report.claimed += claimed.len() as u64;
            for id in claimed {
                self.ports.queue.enqueue(Job::ProcessOrder(id)).await?;
                ServiceStats::bump(&self.stats.reconciler_requeued);
                report.enqueued += 1;
                debug!(order = %id, "reconciler re-enqueued a stranded order");
            }
            if !full {
                return Ok(report);
            }
        }
    }

    /// Runs the reconciler every `reconciler.interval` until `shutdown` completes (a
    /// pass in progress is dropped: it holds nothing that must be finished — claimed
    /// but not enqueued orders are claimed again after `stale_after`). Errors are logged
    /// and the next pass tries again. Returns how many orders it re-enqueued.
    pub async fn run_reconciler(&self, shutdown: impl Future<Output = ()>) -> u64 {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut requeued = 0u64;
        loop {
            let pass = async {
                match self.reconcile().await {
                    Ok(report) => {
                        if report.enqueued > 0 {
                            info!(
                                requeued = report.enqueued,
                                "reconciler re-enqueued stranded orders"
                            );
                        }
                        report.enqueued
                    }
                    Err(e) => {
                        warn!(error = %e, "reconciler pass failed; retrying next interval");
                        0
                    }
                }
            };
            match race(shutdown.as_mut(), pass).await {
                Either::Left(()) => return requeued,
                Either::Right(n) => requeued += n,
            }
            let pause = self.ports.clock.sleep(self.config.reconciler.interval);
            if let Either::Left(()) = race(shutdown.as_mut(), pause).await {
                return requeued;
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // cancel, reads
    // -----------------------------------------------------------------------------------

    /// Cancels `user`'s Pending order, returning its stock exactly once. Cancelling an
    /// already cancelled order returns it unchanged. A cancel racing the worker: exactly
    /// one of them wins.
    ///
    /// # Errors
    /// [`CancelOrderError::NotFound`] for a missing or foreign order;
    /// [`CancelOrderError::InvalidTransition`] past Pending.
    pub async fn cancel_order(&self, user: UserId, id: OrderId) -> Result<Order, CancelOrderError> {
        let span = info_span!("cancel_order", user = %user, order = %id);
        self.cancel_order_in_span(user, id).instrument(span).await
    }

    async fn cancel_order_in_span(
        &self,
        user: UserId,
        id: OrderId,
    ) -> Result<Order, CancelOrderError> {
        let repo = &self.ports.repository;
        let order = match repo.get(id).await? {
            Some(o) if o.user() == user => o,
            _ => return Err(CancelOrderError::NotFound),
        };
        match order.status() {
            OrderStatus::Cancelled => return Ok(order),
            OrderStatus::Pending => {}
            current @ (OrderStatus::Processing | OrderStatus::Paid | OrderStatus::Failed) => {
                return Err(CancelOrderError::InvalidTransition { current });
            }
        }
        let now = self.ports.clock.now();
        match repo.transition(id, StatusChange::Cancel, now).await? {
            TransitionOutcome::Applied(o) => {
                ServiceStats::bump(&self.stats.cancelled);
                self.publish(&o, OrderEventKind::Cancelled).await;
                Ok(o)
            }
            TransitionOutcome::LostRace(o) if o.status() == OrderStatus::Cancelled => Ok(o),
            TransitionOutcome::LostRace(o) => Err(CancelOrderError::InvalidTransition {
                current: o.status(),
            }),
            TransitionOutcome::NotFound => Err(CancelOrderError::NotFound),
        }
    }

    /// `user`'s order `id`.
    ///
    /// # Errors
    /// [`GetOrderError::NotFound`] for a missing order or another user's.
    pub async fn get_order(&self, user: UserId, id: OrderId) -> Result<Order, GetOrderError> {
        match self.ports.repository.get(id).await? {
            Some(o) if o.user() == user => Ok(o),
            _ => Err(GetOrderError::NotFound),
        }
    }

    /// `user`'s orders, newest first, filtered and paged.
    ///
    /// # Errors
    /// [`ListOrdersError::Validation`] for a page < 1 or per_page outside 1..=50.
    pub async fn list_orders(
        &self,
        user: UserId,
        query: OrderQuery,
    ) -> Result<OrderPage, ListOrdersError> {
        let mut errors = ValidationErrors::new();
        let page = u32::try_from(query.page).ok().filter(|p| *p >= 1);
        if page.is_none() {
            errors.add("page", "page must be a positive integer");
        }
        let per_page = u32::try_from(query.per_page)
            .ok()
            .filter(|p| (1..=50).contains(p));
        if per_page.is_none() {
            errors.add("per_page", "per_page must be between 1 and 50");
        }
        let (Some(page), Some(per_page)) = (page, per_page) else {
            return Err(ListOrdersError::Validation(errors));
        };
        let filter = ListFilter {
            status: query.status,
            page,
            per_page,
        };
        Ok(self.ports.repository.list_by_user(user, filter).await?)
    }

    /// Every product with its price and stock, ascending by id.
    ///
    /// # Errors
    /// [`ListOrdersError::Unavailable`] / `Unexpected` when the store failed.
    pub async fn list_products(&self) -> Result<Vec<Product>, ListOrdersError> {
        Ok(self.ports.repository.products().await?)
    }

    async fn publish(&self, order: &Order, kind: OrderEventKind) {
        let event = OrderEvent {
            kind,
            order: order.id(),
            user: order.user(),
            total: order.total(),
            at: order.updated_at(),
        };
        let name = event.kind.name();
        let sent = with_timeout(
            &*self.ports.clock,
            self.config.publish_timeout,
            self.ports.events.publish(event),
        );
        match sent.await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                ServiceStats::bump(&self.stats.publish_failures);
                warn!(order = %order.id(), event = name, error = %e, "event not published");
            }
            None => {
                ServiceStats::bump(&self.stats.publish_failures);
                warn!(order = %order.id(), event = name, "event publish timed out");
            }
        }
    }
}

/// Parses the raw request into a draft, collecting every field at fault.
fn validate(request: &CreateOrderRequest) -> Result<OrderDraft, CreateOrderError> {
    let mut errors = ValidationErrors::new();
    if request.items.is_empty() {
        errors.add("items", "at least one item is required");
    }
    if request.items.len() > MAX_LINES {
        errors.add(
            "items",
            format!(
                "at most {MAX_LINES} items are allowed, got {}",
                request.items.len()
            ),
        );
    }
    let key = IdempotencyKey::new(request.idempotency_key.clone())
        .map_err(|e| errors.add("idempotency_key", e.to_string()))
        .ok();
    let mut items = Vec::with_capacity(request.items.len());
    for (i, item) in request.items.iter().enumerate() {
        let product = ProductId::from_i64(item.product_id)
            .map_err(|e| errors.add(format!("items.{i}.product_id"), e.to_string()))
            .ok();
        let quantity = Quantity::new(item.quantity)
            .map_err(|e| errors.add(format!("items.{i}.quantity"), e.to_string()))
            .ok();
        if let (Some(p), Some(q)) = (product, quantity) {
            items.push((p, q));
        }
    }
    match key {
        Some(key) if errors.is_empty() => OrderDraft::new(request.user, items, key).map_err(|e| {
            errors.add("items", e.to_string());
            CreateOrderError::Validation(errors)
        }),
        _ => Err(CreateOrderError::Validation(errors)),
    }
}
