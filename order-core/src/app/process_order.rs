//! The processing use case: a worker takes a placed order through payment to Paid or
//! Failed under a fenced lease, and settles each queue delivery (ack, defer or nack)
//! according to what happened. `run_worker` is the loop around it.

use std::future::Future;
use std::time::Duration;

use tracing::{Instrument, debug, warn};

use super::errors::{ErrorChain, ProcessOrderError};
use super::service::OrderService;
use super::stats::ServiceStats;
use crate::domain::{FailureReason, Lease, LeaseToken, Order, OrderId, OrderStatus, StatusChange};
use crate::ports::{Delivery, Job, NackOutcome, OrderEvent, PaymentOutcome, TransitionOutcome};
use crate::runtime::{Either, Fused, join, race, with_timeout};

/// Reason stored on orders failed because the provider never gave an answer.
const PROVIDER_UNAVAILABLE: &str = "Payment provider unavailable.";

/// Added to a lease's remaining time when a job is deferred behind it, so the
/// redelivery finds the lease expired rather than a few milliseconds short of it.
const DEFER_SLACK: Duration = Duration::from_millis(50);

/// What [`OrderService::process_order`] did. Every variant but `LeaseHeld` and `TooYoung`
/// means the job is finished and must be acknowledged; those two mean it must be
/// deferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessOutcome {
    /// No such order: `handle_delivery` dead-lettered the job ([`MISSING_ORDER`]).
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
    /// The order is Pending and younger than the configured
    /// [`grace_period`](crate::app::ServiceConfig::grace_period): nothing was written;
    /// look again when it has passed (the worker defers the job, using no attempt).
    TooYoung {
        /// How long until the grace period ends.
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
    /// Moved to the dead letter at once: the job can never succeed (its order does not
    /// exist), with the reason.
    DeadLettered(&'static str),
}

/// The dead-letter reason of a job whose order does not exist.
pub const MISSING_ORDER: &str = "the order does not exist";

impl OrderService {
    /// Takes a Pending order (or a Processing one whose lease expired) through payment to
    /// Paid or Failed. Safe under at-least-once delivery: a terminal order is skipped, a
    /// lost compare-and-set writes nothing, the charge is idempotent per order, and a
    /// worker whose lease was taken over is fenced off.
    ///
    /// # Errors
    /// [`ProcessOrderError`] when the store failed; the job should be retried.
    #[tracing::instrument(skip_all, fields(order = %id))]
    pub async fn process_order(&self, id: OrderId) -> Result<ProcessOutcome, ProcessOrderError> {
        let processed = self.process(id).await;
        if let Some(event) = processed.event {
            self.publish(event).await;
        }
        processed.result
    }

    /// [`process_order`](Self::process_order) without its last step: the completion's
    /// event is handed back unpublished (the worker publishes it when it settles the
    /// delivery).
    async fn process(&self, id: OrderId) -> Processed {
        match self.begin(id).await {
            Begun::Ended(processed) => processed,
            Begun::Started(mut started) => {
                let charged = self.charge_started(&mut started).await;
                self.finish(started, charged).await
            }
        }
    }

    /// The first part of processing: the order taken under a fresh lease (Start, or a
    /// take-over of an expired lease), or the outcome that ends the job without a charge.
    async fn begin(&self, id: OrderId) -> Begun {
        match self.start(id).await {
            Ok(Ok(started)) => Begun::Started(started),
            Ok(Err(outcome)) => Begun::Ended(Processed::without_event(Ok(outcome))),
            Err(e) => Begun::Ended(Processed::without_event(Err(e))),
        }
    }

    async fn start(
        &self,
        id: OrderId,
    ) -> Result<Result<Started, ProcessOutcome>, ProcessOrderError> {
        let repo = &self.ports.repository;
        let now = self.ports.clock.now();
        let lease = Lease {
            token: LeaseToken::from_raw(self.ports.rng.next_u64()),
            until: now.saturating_add(self.config.lease),
        };
        // Without a grace period the Start compare-and-set decides on its own (its WHERE
        // clause is the whole precondition), so the common case reads nothing first: a
        // lost Start reports the order as it is, and that decides the rest. With one, the
        // order's age must be known before anything is written.
        let mut seen = if self.config.grace_period.is_zero() {
            None
        } else {
            match repo.get(id).await? {
                Some(order) => Some(order),
                None => {
                    warn!(order = %id, "job for a missing order");
                    return Ok(Err(ProcessOutcome::Missing));
                }
            }
        };
        let (order, started, taking_over) = loop {
            let change = match &seen {
                None => StatusChange::Start { lease },
                Some(order) => match self.next_change(order, lease, now)? {
                    Ok(change) => change,
                    Err(outcome) => return Ok(Err(outcome)),
                },
            };
            let taking_over = matches!(change, StatusChange::TakeOver { .. });
            match repo.transition(id, change, now).await? {
                TransitionOutcome::Applied(o, event) => break (o, event, taking_over),
                // The blind Start lost: decide again from the order as it is.
                TransitionOutcome::LostRace(current) if seen.is_none() => seen = Some(current),
                TransitionOutcome::LostRace(current) => return Ok(Err(self.lost_to(&current))),
                TransitionOutcome::NotFound => {
                    warn!(order = %id, "job for a missing order");
                    return Ok(Err(ProcessOutcome::Missing));
                }
            }
        };
        crate::fail_point!("after_start", self.ports.clock);
        if taking_over {
            ServiceStats::bump(&self.stats.lease_takeovers);
        }
        // From here the order is ours. (A take-over changes only the lease: its
        // `order.processing` was logged by Start, so `started` is `None` then.)
        Ok(Ok(Started {
            order,
            lease: lease.token,
            event: started,
        }))
    }

    /// Charges a started order, publishing its Start's `order.processing` (if any, taken
    /// out of `started`) beside the charge: it adds nothing to the job's time, and it
    /// has finished before the completion's event can go out.
    async fn charge_started(&self, started: &mut Started) -> Option<PaymentOutcome> {
        let event = started.event.take();
        let announce = async {
            if let Some(event) = event {
                self.publish(event).await;
            }
        };
        join(self.charge(&started.order), announce).await.0
    }

    /// The last part of processing: the charged order moved to Paid or Failed, its
    /// event handed back unpublished. Every way out but a completion gives the lease
    /// back, so the retry can take over at once instead of finding our live lease.
    async fn finish(&self, started: Started, charged: Option<PaymentOutcome>) -> Processed {
        let id = started.order.id();
        match self.complete(&started.order, started.lease, charged).await {
            Ok((outcome, event)) => Processed {
                result: Ok(outcome),
                event,
            },
            Err(e) => {
                self.release_lease(id, started.lease).await;
                Processed::without_event(Err(e))
            }
        }
    }

    /// What to do with `order` as it was last seen: the change to apply under the fresh
    /// `lease` (`Ok(Ok)`), or the outcome that ends the job without a write (`Ok(Err)`).
    fn next_change(
        &self,
        order: &Order,
        lease: Lease,
        now: crate::domain::Timestamp,
    ) -> Result<Result<StatusChange, ProcessOutcome>, ProcessOrderError> {
        Ok(match (order.status(), order.lease()) {
            (OrderStatus::Pending, _) => {
                let ripe_at = order.created_at().saturating_add(self.config.grace_period);
                if now < ripe_at {
                    Err(ProcessOutcome::TooYoung {
                        retry_after: ripe_at.saturating_since(now),
                    })
                } else {
                    Ok(StatusChange::Start { lease })
                }
            }
            (OrderStatus::Processing, Some(current)) if current.until <= now => {
                Ok(StatusChange::TakeOver {
                    expired: current.token,
                    lease,
                })
            }
            (OrderStatus::Processing, Some(current)) => Err(ProcessOutcome::LeaseHeld {
                retry_after: current.until.saturating_since(now),
            }),
            (OrderStatus::Processing, None) => {
                return Err(ProcessOrderError::Unexpected(anyhow::anyhow!(
                    "order {} is Processing without a lease",
                    order.id()
                )));
            }
            (s @ (OrderStatus::Paid | OrderStatus::Failed | OrderStatus::Cancelled), _) => {
                Err(ProcessOutcome::AlreadyTerminal(s))
            }
        })
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

    /// Moves the order this worker holds under `lease` to Paid or Failed according to
    /// `charged`, returning the completion's event unpublished.
    async fn complete(
        &self,
        order: &Order,
        lease: LeaseToken,
        charged: Option<PaymentOutcome>,
    ) -> Result<(ProcessOutcome, Option<OrderEvent>), ProcessOrderError> {
        let id = order.id();
        let completion = match charged {
            Some(PaymentOutcome::Approved) => StatusChange::Pay { lease },
            Some(PaymentOutcome::Declined(reason)) => StatusChange::Fail { lease, reason },
            None => {
                ServiceStats::bump(&self.stats.payments_unresolved);
                return Err(ProcessOrderError::PaymentUnresolved(id));
            }
        };
        crate::fail_point!("after_charge", self.ports.clock);
        let now = self.ports.clock.now();
        // The completion's WHERE clause (status and our lease token) is its whole
        // precondition, and `order` is what our own Start returned: the store need not
        // read the order back.
        match self
            .ports
            .repository
            .transition_from(order, completion, now)
            .await?
        {
            TransitionOutcome::Applied(done, event) => {
                if done.status() == OrderStatus::Paid {
                    ServiceStats::bump(&self.stats.paid);
                } else {
                    ServiceStats::bump(&self.stats.failed);
                }
                Ok((ProcessOutcome::Completed(done), event))
            }
            TransitionOutcome::LostRace(current) => {
                ServiceStats::bump(&self.stats.fenced_writes);
                debug!(order = %id, "lease was taken over; this worker writes nothing");
                Ok((self.lost_to(&current), None))
            }
            TransitionOutcome::NotFound => Ok((ProcessOutcome::Missing, None)),
        }
    }

    /// Gives this worker's lease back (fenced by its token) after giving up on an order
    /// it started. If even that fails, the lease runs out on its own and the retry is
    /// deferred until then.
    async fn release_lease(&self, id: OrderId, lease: LeaseToken) {
        let now = self.ports.clock.now();
        let release = StatusChange::Release { lease };
        match self.ports.repository.transition(id, release, now).await {
            Ok(TransitionOutcome::Applied(..)) => {
                ServiceStats::bump(&self.stats.leases_released);
                debug!(order = %id, "gave the processing lease back for the retry");
            }
            Ok(TransitionOutcome::LostRace(_) | TransitionOutcome::NotFound) => {
                debug!(order = %id, "lease no longer ours; nothing to give back");
            }
            Err(e) => {
                warn!(order = %id, error = %ErrorChain(&e),
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
                    Some(Err(e)) => ErrorChain(&e).to_string(),
                    None => "timed out".to_owned(),
                };
            warn!(order = %order.id(), attempt, error, "charge attempt failed");
            if attempt < attempts {
                ServiceStats::bump(&self.stats.payment_retries);
                let wait = self.config.payment_backoff.delay(attempt, &*self.ports.rng);
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
                warn!(order = %order.id(), error = %ErrorChain(&e), "void failed; the payment outcome stays unknown");
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
        let span = job_span(id);
        let processed = self.process(id).instrument(span.clone()).await;
        self.settle(delivery, processed).instrument(span).await
    }

    /// The second half of [`handle_delivery`](Self::handle_delivery): publishes the
    /// completion's event, if any, then settles `delivery` with the queue according to
    /// `processed`.
    async fn settle(&self, delivery: &Delivery, processed: Processed) -> WorkerOutcome {
        let Job::ProcessOrder(id) = delivery.job;
        let queue = &self.ports.queue;
        if let Some(event) = processed.event {
            self.publish(event).await;
        }
        match processed.result {
            Ok(
                ProcessOutcome::LeaseHeld { retry_after }
                | ProcessOutcome::TooYoung { retry_after },
            ) => {
                ServiceStats::bump(&self.stats.deferred);
                let delay = retry_after.saturating_add(DEFER_SLACK);
                debug!(order = %id, ?delay, attempt = delivery.attempt,
                    "order held by a live processing lease or in its grace period; deferring the job");
                if let Err(e) = queue.defer(delivery, delay).await {
                    warn!(order = %id, error = %ErrorChain(&e), "defer failed; the job will be redelivered");
                }
                WorkerOutcome::Deferred(delay)
            }
            Ok(ProcessOutcome::Missing) => {
                // No order will ever exist under this id (ids are handed out at commit,
                // and jobs are enqueued after it): retrying cannot help, and acking
                // would erase the evidence. The dead letter keeps it for an operator.
                match queue.dead_letter(delivery, MISSING_ORDER).await {
                    Ok(NackOutcome::DeadLettered) => {
                        warn!(order = %id, "job for an order that does not exist; dead-lettered");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(order = %id, error = %ErrorChain(&e), "dead-lettering failed; the job will be redelivered");
                    }
                }
                WorkerOutcome::DeadLettered(MISSING_ORDER)
            }
            Ok(outcome) => {
                crate::fail_point!("before_ack", self.ports.clock);
                if let Err(e) = queue.ack(delivery).await {
                    warn!(order = %id, error = %ErrorChain(&e), "ack failed; the job will be redelivered");
                }
                WorkerOutcome::Acked(outcome)
            }
            Err(e) => {
                let reason = ErrorChain(&e).to_string();
                match queue.nack(delivery, &reason).await {
                    Ok(NackOutcome::DeadLettered) => {
                        warn!(order = %id, attempt = delivery.attempt, error = %reason,
                            "job dead-lettered; the reconciler hands the order out again");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(order = %id, error = %ErrorChain(&e), "nack failed; the job will be redelivered");
                    }
                }
                WorkerOutcome::Released(reason)
            }
        }
    }

    /// Runs one worker: reserves jobs and processes them one at a time until `shutdown`
    /// completes. Shutdown is checked between jobs, never during one, so in-flight work
    /// finishes and is settled with the queue. Run several concurrently for parallelism.
    ///
    /// One worker has at most one order whose charge runs, and at most one order it has
    /// started and not yet completed — except when a transition batch of the store
    /// falls back to one order at a time, which may commit the next Start a few
    /// milliseconds before the completion it was sent with. The steps of two jobs
    /// overlap where that holds:
    /// - once a job's charge has answered, the next job is taken from the queue if one is
    ///   ready (a look, without waiting: when none is, the worker waits for one after
    ///   the completion), and the completion is written while the next order is
    ///   started, so that the two go to the store together (one transition batch, for a
    ///   store that batches). The next charge begins once both are written;
    /// - a finished job's settlement — publishing its completion's event, then the ack
    ///   (or the defer, nack or dead letter) — runs beside the next job's charge, or
    ///   beside the wait for a next job.
    ///
    /// Once `shutdown` has completed no job is taken; the job in hand is finished and
    /// settled first.
    ///
    /// Returns how many deliveries it handled (processed and settled).
    pub async fn run_worker(&self, shutdown: impl Future<Output = ()>) -> u64 {
        let mut shutdown = Fused::new(shutdown);
        let mut handled = 0u64;
        // A job whose order is terminal (or that ended without a charge), to settle.
        let mut unsettled: Option<Box<Done>> = None;
        // A job whose Start committed, to charge.
        let mut in_hand: Option<Box<InHand>> = None;
        loop {
            let Some(job) = in_hand.take() else {
                // Nothing in hand: settle the last job beside the wait for the next one.
                let (settled, next) = join(
                    self.settle_done(unsettled.take()),
                    self.take_and_begin(&mut shutdown),
                )
                .await;
                handled += settled;
                match next {
                    Next::Stop => return handled,
                    Next::Idle => {}
                    Next::Started(job) => in_hand = Some(job),
                    Next::Ended(done) => unsettled = Some(done),
                }
                continue;
            };
            let InHand {
                delivery,
                mut started,
                span,
            } = *job;
            // Charge it, beside settling the job before it.
            let charge = self.charge_started(&mut started).instrument(span.clone());
            let (settled, charged) = join(self.settle_done(unsettled.take()), charge).await;
            handled += settled;
            // Take the next job if one is ready (unless shutting down), then complete this
            // one while starting that one: the two go to the store together.
            let next = if shutdown.completed_now() {
                None
            } else {
                self.look().await
            };
            let complete = self.finish(started, charged).instrument(span.clone());
            let begin_next = async {
                match next {
                    Some(delivery) => match self.begin_delivery(delivery).await {
                        Ok(job) => (0, Some(job)),
                        Err(done) => (self.settle_done(Some(done)).await, None),
                    },
                    None => (0, None),
                }
            };
            let (processed, (settled, next)) = join(complete, begin_next).await;
            handled += settled;
            unsettled = Some(Box::new(Done {
                delivery,
                processed,
                span,
            }));
            in_hand = next;
        }
    }

    /// Waits for a job (until `shutdown` completes) and begins it.
    async fn take_and_begin<F: Future<Output = ()>>(&self, shutdown: &mut Fused<F>) -> Next {
        let reserve = self.ports.queue.reserve(self.config.worker_poll);
        match race(&mut *shutdown, reserve).await {
            Either::Left(()) => Next::Stop,
            Either::Right(Ok(Some(delivery))) => match self.begin_delivery(delivery).await {
                Ok(job) => Next::Started(job),
                Err(done) => Next::Ended(done),
            },
            Either::Right(Ok(None)) => Next::Idle,
            Either::Right(Err(e)) => {
                warn!(error = %ErrorChain(&e), "queue unavailable; backing off");
                match race(
                    &mut *shutdown,
                    self.ports.clock.sleep(self.config.worker_poll),
                )
                .await
                {
                    Either::Left(()) => Next::Stop,
                    Either::Right(()) => Next::Idle,
                }
            }
        }
    }

    /// A job, if one is ready now (without waiting).
    async fn look(&self) -> Option<Delivery> {
        match self.ports.queue.reserve(Duration::ZERO).await {
            Ok(next) => next,
            Err(e) => {
                // The wait for a job that follows reports it and backs off.
                debug!(error = %ErrorChain(&e), "queue unavailable for a look");
                None
            }
        }
    }

    /// Begins `delivery`'s job: started (`Ok`), or ended without a charge (`Err`).
    async fn begin_delivery(&self, delivery: Delivery) -> Result<Box<InHand>, Box<Done>> {
        let Job::ProcessOrder(id) = delivery.job;
        let span = job_span(id);
        match self.begin(id).instrument(span.clone()).await {
            Begun::Started(started) => Ok(Box::new(InHand {
                delivery,
                started,
                span,
            })),
            Begun::Ended(processed) => Err(Box::new(Done {
                delivery,
                processed,
                span,
            })),
        }
    }

    /// Settles `done`, if any: 1 when there was one.
    async fn settle_done(&self, done: Option<Box<Done>>) -> u64 {
        match done {
            Some(done) => {
                let Done {
                    delivery,
                    processed,
                    span,
                } = *done;
                self.settle(&delivery, processed).instrument(span).await;
                1
            }
            None => 0,
        }
    }
}

/// The span of one job: what `process_order` runs in.
fn job_span(id: OrderId) -> tracing::Span {
    tracing::info_span!("process_order", order = %id)
}

/// A job processed but not yet settled with the queue: what
/// [`process_order`](OrderService::process_order) answered, and the completion's event,
/// not yet published.
struct Processed {
    result: Result<ProcessOutcome, ProcessOrderError>,
    event: Option<OrderEvent>,
}

impl Processed {
    /// A job that ended with no event to publish.
    fn without_event(result: Result<ProcessOutcome, ProcessOrderError>) -> Self {
        Self {
            result,
            event: None,
        }
    }
}

/// An order this worker took under its lease, not yet charged.
struct Started {
    order: Order,
    lease: LeaseToken,
    /// The Start's `order.processing`, to publish beside the charge (`None` after a
    /// take-over — it was logged by the first Start — and once taken for the charge).
    event: Option<OrderEvent>,
}

/// How a job's processing began.
enum Begun {
    /// The order is this worker's, to charge.
    Started(Started),
    /// The job ended without a charge.
    Ended(Processed),
}

/// A delivery whose order the worker started, to charge next.
struct InHand {
    delivery: Delivery,
    started: Started,
    span: tracing::Span,
}

/// A delivery processed, to settle.
struct Done {
    delivery: Delivery,
    processed: Processed,
    span: tracing::Span,
}

/// What waiting for a job ended with.
enum Next {
    /// Shutdown completed.
    Stop,
    /// Nothing was reserved (the wait ran out, or the queue failed).
    Idle,
    /// A job was reserved and its order started.
    Started(Box<InHand>),
    /// A job was reserved and ended without a charge.
    Ended(Box<Done>),
}
