//! Fault-injecting wrappers around the memory adapters, and the simulated payment
//! provider with its durable ledger.
//!
//! Every port call is a scheduling point (a yield before the call and one after it), so
//! the scheduler interleaves tasks at every port call and may crash a task at any of
//! them. While the fault window is open each call may fail before doing anything
//! (`Unavailable`), stall past the lease and the visibility timeout and then proceed, or
//! happen and lose its reply.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use order_core::domain::{FailureReason, OrderDraft, StatusChange};
use order_core::ports::{
    Clock, Delivery, DistributedLock, EventPublisher, Job, JobQueue, ListFilter, LockError,
    LockToken, NackOutcome, OrderEvent, OrderPage, OrderRepository, PaymentError, PaymentGateway,
    PaymentOutcome, PlaceOutcome, PublishError, QueueError, QueueStats, QueueTimings,
    RepositoryError, StrandedQuery, TransitionOutcome,
};
use order_core::{IdempotencyKey, Money, Order, OrderId, OrderStatus, Product, Timestamp, UserId};
use order_memory::{MemoryEventBus, MemoryLock, MemoryOrderRepository, MemoryQueue, QueueConfig};

use crate::exec::{Rng, SendFut, SimClock, Trace, yield_now};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A deliberate bug in a wrapper, to prove the simulation catches regressions
/// (`ORDERS_SIM_SABOTAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    None,
    /// `defer` nacks instead (uses an attempt).
    DeferNacks,
    /// `ack` of a stale receipt acks the job's live delivery.
    AckIgnoresStaleness,
    /// `claim_stranded` returns nothing: the reconciler is disabled.
    NoReconciler,
    /// `void` answers a decline without recording it.
    VoidForgets,
    /// `transition` ignores the lease fence of Pay/Fail/Release.
    NoFence,
}

impl Sabotage {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "none" => Sabotage::None,
            "defer-nacks" => Sabotage::DeferNacks,
            "ack-ignores-staleness" => Sabotage::AckIgnoresStaleness,
            "no-reconciler" => Sabotage::NoReconciler,
            "void-forgets" => Sabotage::VoidForgets,
            "no-fence" => Sabotage::NoFence,
            _ => return None,
        })
    }
}

/// Per-seed fault probabilities (per port call, while the fault window is open).
#[derive(Debug, Clone, Copy, Default)]
pub struct Profile {
    pub err: f64,
    pub drop_reply: f64,
    pub stall: f64,
    pub crash: f64,
    pub pay_transient: f64,
    pub pay_hang: f64,
    pub pay_late: f64,
    pub decline: f64,
}

impl Profile {
    pub fn draw(rng: &mut Rng) -> Self {
        // One seed in eight runs without per-call faults (outages and crashes only).
        let calm = rng.below(8) == 0;
        let scale = if calm { 0.0 } else { 1.0 };
        Profile {
            err: scale * rng.unit() * 0.08,
            drop_reply: scale * rng.unit() * 0.05,
            stall: scale * rng.unit() * 0.015,
            crash: rng.unit() * 0.004,
            pay_transient: scale * rng.unit() * 0.15,
            pay_hang: scale * rng.unit() * 0.05,
            pay_late: scale * rng.unit() * 0.08,
            decline: rng.unit() * 0.4,
        }
    }
}

/// Which service an outage window takes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Repository,
    Lock,
    Payments,
    Queue,
}

/// What every wrapper shares: the clock, the fault dice, the trace.
pub struct Ctx {
    pub clock: Arc<SimClock>,
    pub trace: Trace,
    pub profile: Profile,
    pub sabotage: Sabotage,
    /// How long a stall lasts at least (past the lease and the visibility timeout).
    pub stall_base: Duration,
    /// No reconciler in this run: faults that only the reconciler can repair (lost
    /// enqueues, committed places whose caller never learns of them) are not injected.
    pub net_free: bool,
    /// `ORDERS_SIM_WATCH=<order id>`: print every port call about that order.
    watch: Option<u64>,
    active: AtomicBool,
    rng: Mutex<Rng>,
    outages: Mutex<BTreeMap<Service, u64>>,
    spawned: Mutex<Vec<SendFut>>,
    /// The injected faults (error, outage, stall, lost reply, payment fault) met so
    /// far, numbered, and per task the number of the last one it met.
    provoked: Mutex<Provoked>,
    /// Nacks no injected fault explains: the protocol gave up on a job for no reason
    /// (e.g. a leased order nacked instead of deferred, burning its attempts).
    unprovoked_nacks: Mutex<Vec<String>>,
}

/// The injected faults met, for telling whether a nack is explained.
#[derive(Default)]
struct Provoked {
    /// Faults met so far.
    count: u64,
    /// Per task, the number of the last fault it met.
    last_by_task: BTreeMap<u64, u64>,
    /// Per delivery (its receipt), how many faults had been met when it was handed out.
    handed_out: BTreeMap<String, u64>,
}

impl Ctx {
    pub fn new(
        clock: Arc<SimClock>,
        rng: Rng,
        profile: Profile,
        sabotage: Sabotage,
        stall_base: Duration,
        net_free: bool,
    ) -> Self {
        Self {
            clock,
            trace: Trace::default(),
            profile,
            sabotage,
            stall_base,
            net_free,
            watch: std::env::var("ORDERS_SIM_WATCH")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            active: AtomicBool::new(true),
            rng: Mutex::new(rng),
            outages: Mutex::default(),
            spawned: Mutex::default(),
            provoked: Mutex::default(),
            unprovoked_nacks: Mutex::default(),
        }
    }

    pub fn watch(&self, order: OrderId, what: impl FnOnce() -> String) {
        if self.watch == Some(order.get()) {
            eprintln!(
                "[{:>6} ms] order {order}: {}",
                self.clock.now_ms() % 1_000_000,
                what()
            );
        }
    }

    pub fn faults_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub fn stop_faults(&self) {
        self.active.store(false, Ordering::Relaxed);
        lock(&self.outages).clear();
    }

    /// A fault roll: never fires outside the fault window. A fault that fires is
    /// charged to the task being polled.
    pub fn roll(&self, p: f64) -> bool {
        let fired = self.faults_active() && lock(&self.rng).chance(p);
        if fired {
            self.provoke();
        }
        fired
    }

    fn provoke(&self) {
        if let Some(task) = crate::exec::current_task() {
            let mut provoked = lock(&self.provoked);
            provoked.count += 1;
            let n = provoked.count;
            provoked.last_by_task.insert(task, n);
        }
    }

    /// The delivery with `receipt` was handed out: only faults met after this explain
    /// its nack. (A worker holds up to two deliveries at once — it takes its next job
    /// while it completes and settles one — so the faults are counted per delivery,
    /// not cleared per task: a fault its task met after it was handed out explains it,
    /// whichever of the two jobs met it.)
    fn fresh_delivery(&self, receipt: &str) {
        let mut provoked = lock(&self.provoked);
        let n = provoked.count;
        provoked.handed_out.insert(receipt.to_owned(), n);
    }

    /// Records a nack that no fault met by the nacking task explains.
    fn check_nack(&self, delivery: &Delivery, error: &str) {
        let Some(task) = crate::exec::current_task() else {
            return;
        };
        let explained = {
            let provoked = lock(&self.provoked);
            let since = provoked
                .handed_out
                .get(&delivery.receipt)
                .copied()
                .unwrap_or(0);
            provoked
                .last_by_task
                .get(&task)
                .is_some_and(|&last| last > since)
        };
        if !explained {
            lock(&self.unprovoked_nacks).push(format!(
                "{:?} attempt {} nacked with no injected fault: {error}",
                delivery.job, delivery.attempt
            ));
        }
    }

    /// Every nack no injected fault explains.
    pub fn unprovoked_nacks(&self) -> Vec<String> {
        lock(&self.unprovoked_nacks).clone()
    }

    pub fn random(&self, lo: u64, hi: u64) -> u64 {
        lock(&self.rng).range(lo, hi)
    }

    pub fn outage(&self, service: Service, until_ms: u64) {
        if self.faults_active() {
            lock(&self.outages).insert(service, until_ms);
        }
    }

    pub fn is_down(&self, service: Service) -> bool {
        let now = self.clock.now_ms();
        let down = lock(&self.outages).get(&service).is_some_and(|&u| now < u);
        if down {
            self.provoke();
        }
        down
    }

    pub fn spawn(&self, fut: SendFut) {
        lock(&self.spawned).push(fut);
    }

    pub fn take_spawned(&self) -> Vec<SendFut> {
        std::mem::take(&mut *lock(&self.spawned))
    }

    fn stall_time(&self) -> Duration {
        self.stall_base + Duration::from_millis(self.random(0, 1500))
    }

    /// The common prelude of a port call: a scheduling point, then maybe an injected
    /// error (`true`: fail without doing anything) or a stall.
    async fn before(&self, tag: u64, service: Service) -> bool {
        yield_now().await;
        if self.is_down(service) || self.roll(self.profile.err) {
            self.trace.record(tag, 0xe11);
            return true;
        }
        if self.roll(self.profile.stall) {
            self.trace.record(tag, 0x57a);
            self.clock.sleep(self.stall_time()).await;
        }
        false
    }

    /// A scheduling point and maybe a stall, never an error.
    async fn stall_only(&self, tag: u64) {
        yield_now().await;
        if self.roll(self.profile.stall) {
            self.trace.record(tag, 0x57a);
            self.clock.sleep(self.stall_time()).await;
        }
    }

    /// The common epilogue of a mutating call: maybe lose the reply (`true`), then a
    /// scheduling point.
    async fn after(&self, tag: u64) -> bool {
        let dropped = self.roll(self.profile.drop_reply);
        if dropped {
            self.trace.record(tag, 0xd0d);
        }
        yield_now().await;
        dropped
    }
}

fn unavailable_repo() -> RepositoryError {
    RepositoryError::unavailable_msg("injected fault")
}

/// One transition applied by the repository, as seen by the wrapper.
#[derive(Debug, Clone)]
pub struct Applied {
    pub order: OrderId,
    pub before: OrderStatus,
    pub after: OrderStatus,
    pub change: &'static str,
    pub expected_from: OrderStatus,
}

fn change_name(c: &StatusChange) -> &'static str {
    match c {
        StatusChange::Start { .. } => "Start",
        StatusChange::TakeOver { .. } => "TakeOver",
        StatusChange::Pay { .. } => "Pay",
        StatusChange::Fail { .. } => "Fail",
        StatusChange::Cancel => "Cancel",
        StatusChange::Release { .. } => "Release",
    }
}

fn status_code(s: OrderStatus) -> u64 {
    s as u64
}

/// The repository with faults, recording every applied transition.
pub struct SimRepo {
    pub inner: Arc<MemoryOrderRepository>,
    ctx: Arc<Ctx>,
    pub applied: Mutex<Vec<Applied>>,
    /// Each order's status history: Pending at placement, then every applied change.
    pub history: Mutex<BTreeMap<OrderId, Vec<OrderStatus>>>,
}

impl SimRepo {
    pub fn new(inner: Arc<MemoryOrderRepository>, ctx: Arc<Ctx>) -> Self {
        Self {
            inner,
            ctx,
            applied: Mutex::default(),
            history: Mutex::default(),
        }
    }
}

#[async_trait]
impl OrderRepository for SimRepo {
    async fn place(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        if self.ctx.before(1, Service::Repository).await {
            return Err(unavailable_repo());
        }
        let out = self.inner.place(drafts, now).await?;
        for o in &out {
            match o {
                PlaceOutcome::Placed(order, _) => {
                    self.ctx.trace.record(2, order.id().get());
                    lock(&self.history).insert(order.id(), vec![OrderStatus::Pending]);
                }
                PlaceOutcome::Replayed(order) => self.ctx.trace.record(3, order.id().get()),
                _ => self.ctx.trace.record(4, 0),
            }
        }
        if self.ctx.after(1).await && !self.ctx.net_free {
            return Err(unavailable_repo());
        }
        Ok(out)
    }

    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        if self.ctx.before(5, Service::Repository).await {
            self.ctx
                .watch(id, || format!("transition {change:?} failed before"));
            return Err(unavailable_repo());
        }
        // The memory repository never suspends, so nothing runs between the read and the
        // compare-and-set below.
        let before = self.inner.get(id).await?;
        let change = match (&change, self.ctx.sabotage, &before) {
            (
                StatusChange::Pay { .. } | StatusChange::Fail { .. } | StatusChange::Release { .. },
                Sabotage::NoFence,
                Some(o),
            ) => {
                let current = o.lease().map(|l| l.token);
                match (change, current) {
                    (StatusChange::Pay { .. }, Some(t)) => StatusChange::Pay { lease: t },
                    (StatusChange::Fail { reason, .. }, Some(t)) => {
                        StatusChange::Fail { lease: t, reason }
                    }
                    (StatusChange::Release { .. }, Some(t)) => StatusChange::Release { lease: t },
                    (c, _) => c,
                }
            }
            _ => change,
        };
        let out = self.inner.transition(id, change.clone(), now).await?;
        self.ctx
            .watch(id, || format!("transition {change:?} -> {out:?}"));
        match &out {
            TransitionOutcome::Applied(after, _) => {
                let before = before.map_or(OrderStatus::Pending, |o| o.status());
                self.ctx
                    .trace
                    .record(6, id.get() << 8 | status_code(after.status()));
                lock(&self.applied).push(Applied {
                    order: id,
                    before,
                    after: after.status(),
                    change: change_name(&change),
                    expected_from: change.from(),
                });
                if before != after.status() {
                    lock(&self.history)
                        .entry(id)
                        .or_default()
                        .push(after.status());
                }
            }
            TransitionOutcome::LostRace(o) => {
                self.ctx
                    .trace
                    .record(7, id.get() << 8 | status_code(o.status()));
            }
            TransitionOutcome::NotFound => self.ctx.trace.record(8, id.get()),
        }
        if self.ctx.after(5).await {
            self.ctx.watch(id, || "transition reply lost".into());
            return Err(unavailable_repo());
        }
        Ok(out)
    }

    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError> {
        if self.ctx.before(9, Service::Repository).await {
            self.ctx.watch(id, || "get failed".into());
            return Err(unavailable_repo());
        }
        let got = self.inner.get(id).await;
        self.ctx.watch(id, || {
            format!(
                "get -> {:?}",
                got.as_ref()
                    .ok()
                    .and_then(|o| o.as_ref())
                    .map(|o| (o.status(), o.lease()))
            )
        });
        got
    }

    async fn find_by_key(
        &self,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError> {
        if self.ctx.before(10, Service::Repository).await {
            return Err(unavailable_repo());
        }
        self.inner.find_by_key(user, key).await
    }

    async fn list_by_user(
        &self,
        user: UserId,
        filter: ListFilter,
    ) -> Result<OrderPage, RepositoryError> {
        self.inner.list_by_user(user, filter).await
    }

    async fn products(&self) -> Result<Vec<Product>, RepositoryError> {
        self.inner.products().await
    }

    async fn events_after(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<order_core::ports::EventPage, RepositoryError> {
        self.inner.events_after(user, after, limit).await
    }
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, RepositoryError> {
        self.inner.prune_events(before, limit).await
    }

    async fn claim_stranded(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, RepositoryError> {
        if self.ctx.before(11, Service::Repository).await {
            return Err(unavailable_repo());
        }
        if self.ctx.sabotage == Sabotage::NoReconciler {
            return Ok(Vec::new());
        }
        let claimed = self.inner.claim_stranded(query, now).await?;
        for id in &claimed {
            self.ctx.trace.record(12, id.get());
        }
        if self.ctx.after(11).await {
            return Err(unavailable_repo());
        }
        Ok(claimed)
    }
}

fn unavailable_queue() -> QueueError {
    QueueError::unavailable_msg("injected fault")
}

/// The queue with faults and wipes. Receipts carry the queue's generation, so a receipt
/// from before a wipe is stale for the fresh queue (as a Redis stream id would be).
pub struct SimQueue {
    ctx: Arc<Ctx>,
    config: QueueConfig,
    current: Mutex<(u64, Arc<MemoryQueue>)>,
    /// The latest delivery of each job (for the ack-ignores-staleness sabotage).
    latest: Mutex<HashMap<Job, Delivery>>,
    /// Jobs a sabotaged stale ack deleted: their next delivery is swallowed.
    doomed: Mutex<std::collections::HashSet<Job>>,
    pub wipes: Mutex<u32>,
    /// Orders whose job a service nack sent to the dead letter (a genuine last failure).
    nacked_dead: Mutex<BTreeSet<OrderId>>,
    /// The store behind the repository wrapper, to see what an ack finishes.
    orders: Arc<dyn OrderRepository>,
    /// Acks of a job whose order was still open: the worker gave the job up while the
    /// order still needed it (e.g. acked after losing a race to a worker that may die).
    open_acks: Mutex<Vec<String>>,
}

impl SimQueue {
    /// Acks of jobs whose order was still Pending or Processing.
    pub fn open_acks(&self) -> Vec<String> {
        lock(&self.open_acks).clone()
    }

    pub fn new(ctx: Arc<Ctx>, config: QueueConfig, orders: Arc<dyn OrderRepository>) -> Self {
        let queue = MemoryQueue::new(ctx.clock.clone(), config).expect("valid queue config");
        Self {
            ctx,
            config,
            current: Mutex::new((0, Arc::new(queue))),
            latest: Mutex::default(),
            doomed: Mutex::default(),
            wipes: Mutex::new(0),
            nacked_dead: Mutex::default(),
            orders,
            open_acks: Mutex::default(),
        }
    }

    fn queue(&self) -> (u64, Arc<MemoryQueue>) {
        let c = lock(&self.current);
        (c.0, c.1.clone())
    }

    /// Forgets every job, as Redis losing its data would.
    pub fn wipe(&self) {
        let fresh =
            MemoryQueue::new(self.ctx.clock.clone(), self.config).expect("valid queue config");
        let mut c = lock(&self.current);
        c.0 += 1;
        c.1 = Arc::new(fresh);
        *lock(&self.wipes) += 1;
        self.ctx.trace.record(20, c.0);
    }

    /// Orders whose job was dead-lettered legitimately: by a nack on its last attempt,
    /// or by its last delivery's visibility timeout.
    pub fn legitimately_dead(&self) -> BTreeSet<OrderId> {
        let mut dead = lock(&self.nacked_dead).clone();
        for letter in self.queue().1.dead_letters() {
            let Job::ProcessOrder(id) = letter.job;
            if letter.last_error.contains("visibility timeout") {
                dead.insert(id);
            }
        }
        dead
    }

    /// The inner delivery of `d`, or `None` when it is from an earlier generation.
    fn unwrap_delivery(&self, d: &Delivery, generation: u64) -> Option<Delivery> {
        let (g, receipt) = d.receipt.split_once('/')?;
        if g.parse::<u64>().ok()? != generation {
            return None;
        }
        Some(Delivery {
            job: d.job,
            receipt: receipt.to_owned(),
            attempt: d.attempt,
        })
    }
}

#[async_trait]
impl JobQueue for SimQueue {
    async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        if self.ctx.net_free {
            self.ctx.stall_only(21).await;
        } else if self.ctx.before(21, Service::Queue).await {
            return Err(unavailable_queue());
        }
        let Job::ProcessOrder(id) = job;
        self.ctx.watch(id, || "enqueue".into());
        self.ctx.trace.record(22, id.get());
        self.queue().1.enqueue(job).await?;
        if self.ctx.after(21).await {
            return Err(unavailable_queue());
        }
        Ok(())
    }

    async fn reserve(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        for first in [true, false] {
            if self.ctx.before(23, Service::Queue).await {
                return Err(unavailable_queue());
            }
            let (generation, queue) = self.queue();
            // Never a real-time wait: the sim waits on its own clock below.
            if let Some(d) = queue.reserve(Duration::ZERO).await? {
                if lock(&self.doomed).remove(&d.job) {
                    queue.ack(&d).await?;
                    continue;
                }
                let Job::ProcessOrder(id) = d.job;
                self.ctx
                    .watch(id, || format!("reserved {d:?} gen {generation}"));
                self.ctx
                    .trace
                    .record(24, id.get() << 8 | u64::from(d.attempt));
                lock(&self.latest).insert(d.job, d.clone());
                let receipt = format!("{generation}/{}", d.receipt);
                self.ctx.fresh_delivery(&receipt);
                if self.ctx.after(23).await {
                    return Err(unavailable_queue());
                }
                return Ok(Some(Delivery {
                    job: d.job,
                    receipt,
                    attempt: d.attempt,
                }));
            }
            if !first || wait.is_zero() {
                break;
            }
            self.ctx.clock.sleep(wait).await;
        }
        Ok(None)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        // A worker acks only a finished job: the order is terminal (absorbing) or gone.
        let Job::ProcessOrder(order) = delivery.job;
        if let Ok(Some(o)) = self.orders.get(order).await
            && !o.status().is_terminal()
        {
            lock(&self.open_acks).push(format!(
                "{:?} attempt {} acked while the order is {}",
                delivery.job,
                delivery.attempt,
                o.status()
            ));
        }
        if self.ctx.before(25, Service::Queue).await {
            return Err(unavailable_queue());
        }
        let (generation, queue) = self.queue();
        let target = self.unwrap_delivery(delivery, generation);
        if self.ctx.sabotage == Sabotage::AckIgnoresStaleness {
            // The bug: ack by job, not by delivery. A stale ack deletes the job's live
            // delivery (in flight or waiting to be redelivered).
            let latest = lock(&self.latest).get(&delivery.job).cloned();
            if let (Some(mine), Some(latest)) = (&target, latest)
                && latest.receipt != mine.receipt
            {
                queue.ack(&latest).await?;
                lock(&self.doomed).insert(delivery.job);
            }
        }
        let Job::ProcessOrder(id) = delivery.job;
        self.ctx
            .watch(id, || format!("ack {delivery:?} -> {target:?}"));
        if let Some(d) = target {
            queue.ack(&d).await?;
        }
        if self.ctx.after(25).await {
            return Err(unavailable_queue());
        }
        Ok(())
    }

    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<NackOutcome, QueueError> {
        self.ctx.check_nack(delivery, error);
        if self.ctx.before(26, Service::Queue).await {
            return Err(unavailable_queue());
        }
        let (generation, queue) = self.queue();
        let out = match self.unwrap_delivery(delivery, generation) {
            Some(d) => queue.nack(&d, error).await?,
            None => NackOutcome::Stale,
        };
        if out == NackOutcome::DeadLettered {
            let Job::ProcessOrder(id) = delivery.job;
            lock(&self.nacked_dead).insert(id);
        }
        let Job::ProcessOrder(id) = delivery.job;
        self.ctx
            .watch(id, || format!("nack {delivery:?} {error} -> {out:?}"));
        self.ctx.trace.record(27, out_code(out));
        if self.ctx.after(26).await {
            return Err(unavailable_queue());
        }
        Ok(out)
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<NackOutcome, QueueError> {
        // Every order of the simulation exists before its job: a job dead-lettered for a
        // missing order is a bug, reported like an unprovoked nack.
        lock(&self.ctx.unprovoked_nacks).push(format!(
            "{:?} attempt {} dead-lettered: {reason}",
            delivery.job, delivery.attempt
        ));
        let (generation, queue) = self.queue();
        match self.unwrap_delivery(delivery, generation) {
            Some(d) => queue.dead_letter(&d, reason).await,
            None => Ok(NackOutcome::Stale),
        }
    }

    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<NackOutcome, QueueError> {
        if self.ctx.before(28, Service::Queue).await {
            return Err(unavailable_queue());
        }
        let (generation, queue) = self.queue();
        let out = match self.unwrap_delivery(delivery, generation) {
            Some(d) if self.ctx.sabotage == Sabotage::DeferNacks => {
                queue.nack(&d, "deferred").await?
            }
            Some(d) => queue.defer(&d, delay).await?,
            None => NackOutcome::Stale,
        };
        let Job::ProcessOrder(id) = delivery.job;
        self.ctx
            .watch(id, || format!("defer {delivery:?} {delay:?} -> {out:?}"));
        self.ctx.trace.record(29, out_code(out));
        if self.ctx.after(28).await {
            return Err(unavailable_queue());
        }
        Ok(out)
    }

    fn timings(&self) -> QueueTimings {
        self.config.timings()
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.queue().1.stats().await
    }
}

fn out_code(o: NackOutcome) -> u64 {
    match o {
        NackOutcome::Retried(d) => 1 + u64::try_from(d.as_millis()).unwrap_or(u64::MAX >> 1),
        NackOutcome::DeadLettered => 0,
        NackOutcome::Stale => u64::MAX,
    }
}

/// The lock with faults and outages.
pub struct SimLock {
    pub inner: Arc<MemoryLock>,
    ctx: Arc<Ctx>,
}

impl SimLock {
    pub fn new(inner: Arc<MemoryLock>, ctx: Arc<Ctx>) -> Self {
        Self { inner, ctx }
    }
}

fn unavailable_lock() -> LockError {
    LockError::unavailable_msg("injected fault")
}

#[async_trait]
impl DistributedLock for SimLock {
    async fn try_acquire(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        if self.ctx.before(30, Service::Lock).await {
            return Err(unavailable_lock());
        }
        let got = self.inner.try_acquire(key, token, ttl).await?;
        self.ctx.trace.record(31, u64::from(got));
        if self.ctx.after(30).await {
            return Err(unavailable_lock());
        }
        Ok(got)
    }

    async fn release(&self, key: &str, token: &LockToken) -> Result<bool, LockError> {
        if self.ctx.before(32, Service::Lock).await {
            return Err(unavailable_lock());
        }
        let released = self.inner.release(key, token).await?;
        if self.ctx.after(32).await {
            return Err(unavailable_lock());
        }
        Ok(released)
    }
}

/// The event bus with faults (events are best effort).
pub struct SimEvents {
    inner: Arc<MemoryEventBus>,
    ctx: Arc<Ctx>,
}

impl SimEvents {
    pub fn new(inner: Arc<MemoryEventBus>, ctx: Arc<Ctx>) -> Self {
        Self { inner, ctx }
    }
}

#[async_trait]
impl EventPublisher for SimEvents {
    async fn publish(&self, event: OrderEvent) -> Result<(), PublishError> {
        if self.ctx.before(40, Service::Queue).await {
            return Err(PublishError::unavailable_msg("injected fault"));
        }
        if self.ctx.roll(self.ctx.profile.pay_hang) {
            self.ctx.clock.sleep(Duration::from_secs(5)).await;
        }
        self.inner.publish(event).await
    }
}

/// What the provider knows about one key.
#[derive(Debug, Clone, Default)]
pub struct LedgerEntry {
    /// The key's settled outcome (first wins).
    pub outcome: Option<PaymentOutcome>,
    /// Times money actually moved for this key (a faithful provider: 0 or 1).
    pub charged: u32,
    /// The amount charged, if any.
    pub amount: Option<Money>,
    pub charge_calls: u32,
    pub voids: u32,
}

/// The payment provider: a durable per-order ledger, first outcome wins, `void` records
/// a decline when nothing is settled yet. Faults: outages (Transient or a hang), transient
/// errors, hangs past the service's timeout, lost replies, and late charges (the request
/// reaches the provider after the caller gave up).
pub struct SimPayments {
    ctx: Arc<Ctx>,
    pub ledger: Arc<Mutex<BTreeMap<OrderId, LedgerEntry>>>,
    decide: Arc<Mutex<Rng>>,
}

pub const VOIDED: &str = "Voided by the simulation provider.";
pub const DECLINED: &str = "Declined by the simulation provider.";

fn settle_charge(
    ledger: &Mutex<BTreeMap<OrderId, LedgerEntry>>,
    decide: &Mutex<Rng>,
    decline: f64,
    key: OrderId,
    amount: Money,
) -> PaymentOutcome {
    let mut l = lock(ledger);
    let e = l.entry(key).or_default();
    if let Some(o) = &e.outcome {
        return o.clone();
    }
    let outcome = if lock(decide).chance(decline) {
        PaymentOutcome::Declined(FailureReason::new(DECLINED))
    } else {
        e.charged += 1;
        e.amount = Some(amount);
        PaymentOutcome::Approved
    };
    e.outcome = Some(outcome.clone());
    outcome
}

impl SimPayments {
    pub fn new(ctx: Arc<Ctx>, decide: Rng) -> Self {
        Self {
            ctx,
            ledger: Arc::default(),
            decide: Arc::new(Mutex::new(decide)),
        }
    }

    fn transient() -> PaymentError {
        PaymentError::transient_msg("injected provider fault")
    }

    /// Outage or transient error before anything happens: maybe hang first.
    async fn refuse(&self, tag: u64) -> bool {
        yield_now().await;
        if self.ctx.is_down(Service::Payments) {
            self.ctx.trace.record(tag, 0xd0);
            if self.ctx.random(0, 1) == 0 {
                self.ctx.clock.sleep(Duration::from_secs(3)).await;
            }
            return true;
        }
        if self.ctx.roll(self.ctx.profile.pay_transient) {
            self.ctx.trace.record(tag, 0xe1);
            return true;
        }
        false
    }
}

#[async_trait]
impl PaymentGateway for SimPayments {
    async fn charge(&self, key: OrderId, amount: Money) -> Result<PaymentOutcome, PaymentError> {
        if self.refuse(50).await {
            return Err(Self::transient());
        }
        lock(&self.ledger).entry(key).or_default().charge_calls += 1;
        let p = self.ctx.profile;
        if self.ctx.roll(p.pay_late) {
            // The request is in the network: it reaches the provider later, whatever the
            // caller does meanwhile; the caller hears nothing.
            let delay = Duration::from_millis(self.ctx.random(0, 3000));
            let (ledger, decide, clock) = (
                self.ledger.clone(),
                self.decide.clone(),
                self.ctx.clock.clone(),
            );
            self.ctx.trace.record(51, key.get());
            self.ctx.spawn(Box::pin(async move {
                clock.sleep(delay).await;
                settle_charge(&ledger, &decide, p.decline, key, amount);
            }));
            self.ctx.clock.sleep(Duration::from_secs(30)).await;
            return Err(Self::transient());
        }
        if self.ctx.roll(p.pay_hang) {
            self.ctx.trace.record(52, key.get());
            self.ctx.clock.sleep(Duration::from_secs(2)).await;
        }
        let outcome = settle_charge(&self.ledger, &self.decide, p.decline, key, amount);
        self.ctx.trace.record(
            53,
            key.get() << 1 | u64::from(outcome == PaymentOutcome::Approved),
        );
        if self.ctx.after(54).await {
            return Err(Self::transient());
        }
        Ok(outcome)
    }

    async fn void(&self, key: OrderId) -> Result<PaymentOutcome, PaymentError> {
        if self.refuse(55).await {
            return Err(Self::transient());
        }
        let outcome = {
            let mut l = lock(&self.ledger);
            let e = l.entry(key).or_default();
            e.voids += 1;
            match &e.outcome {
                Some(o) => o.clone(),
                None if self.ctx.sabotage == Sabotage::VoidForgets => {
                    PaymentOutcome::Declined(FailureReason::new(VOIDED))
                }
                None => {
                    let o = PaymentOutcome::Declined(FailureReason::new(VOIDED));
                    e.outcome = Some(o.clone());
                    o
                }
            }
        };
        self.ctx.trace.record(
            56,
            key.get() << 1 | u64::from(outcome == PaymentOutcome::Approved),
        );
        if self.ctx.after(57).await {
            return Err(Self::transient());
        }
        Ok(outcome)
    }
}
