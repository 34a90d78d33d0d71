//! The delivery protocol end to end on the memory adapters: `handle_delivery` → nack /
//! defer → redelivery → dead letter → reconciler, following every retry to its end
//! (nothing is stubbed: the queue, the repository and the clock are the real memory
//! ones; only faults are injected, by thin wrappers).
//!
//! Each test is a scenario of the "Nothing stranded" review in which an order used to
//! stay Pending or Processing forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use order_core::app::{
    CreateOrderRequest, OrderService, ProcessOutcome, SeededRandom, ServiceConfig, WorkerOutcome,
};
use order_core::domain::{
    Lease, LeaseToken, Money, Order, OrderId, OrderStatus, ProductId, StatusChange, Timestamp,
    UserId,
};
use order_core::ports::{
    Clock, Delivery, Job, JobQueue, NackOutcome, OrderRepository, QueueError, QueueStats,
    QueueTimings, RepositoryError, StrandedQuery, TransitionOutcome,
};
use order_core::testing::scripted::ScriptedGateway;

use crate::support::Outage;
use order_memory::{ManualClock, MemoryAdapters, QueueConfig};

/// A repository whose next `fail_completions` Pay/Fail transitions fail, and whose
/// next Start first lets a rival worker's Start commit (the rival then vanishes).
struct Faulty {
    inner: Arc<dyn OrderRepository>,
    fail_completions: AtomicU32,
    rival_start: AtomicBool,
}

#[async_trait]
impl OrderRepository for Faulty {
    async fn place(
        &self,
        drafts: &[order_core::domain::OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<order_core::ports::PlaceOutcome>, RepositoryError> {
        self.inner.place(drafts, now).await
    }
    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        let completion = matches!(change, StatusChange::Pay { .. } | StatusChange::Fail { .. });
        if completion
            && self
                .fail_completions
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(RepositoryError::unavailable_msg("connection reset"));
        }
        if matches!(change, StatusChange::Start { .. })
            && self.rival_start.swap(false, Ordering::SeqCst)
        {
            let rival = StatusChange::Start {
                lease: Lease {
                    token: LeaseToken::from_raw(0xdead),
                    until: now.saturating_add(Duration::from_secs(30)),
                },
            };
            let won = self.inner.transition(id, rival, now).await?;
            assert!(matches!(won, TransitionOutcome::Applied(..)), "{won:?}");
        }
        self.inner.transition(id, change, now).await
    }
    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError> {
        self.inner.get(id).await
    }
    async fn find_by_key(
        &self,
        user: UserId,
        key: &order_core::domain::IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError> {
        self.inner.find_by_key(user, key).await
    }
    async fn list_by_user(
        &self,
        user: UserId,
        filter: order_core::ports::ListFilter,
    ) -> Result<order_core::ports::OrderPage, RepositoryError> {
        self.inner.list_by_user(user, filter).await
    }
    async fn products(&self) -> Result<Vec<order_core::domain::Product>, RepositoryError> {
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
        self.inner.claim_stranded(query, now).await
    }
}

/// A queue whose enqueues can be made to fail, and whose jobs can be lost (as Redis
/// loses them on a restart without persistence).
struct Lossy {
    inner: Arc<dyn JobQueue>,
    refuse_enqueue: AtomicBool,
}

#[async_trait]
impl JobQueue for Lossy {
    async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        if self.refuse_enqueue.load(Ordering::SeqCst) {
            return Err(QueueError::unavailable_msg("connection refused"));
        }
        self.inner.enqueue(job).await
    }
    async fn reserve(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        self.inner.reserve(wait).await
    }
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.inner.ack(delivery).await
    }
    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<NackOutcome, QueueError> {
        self.inner.nack(delivery, error).await
    }
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<NackOutcome, QueueError> {
        self.inner.dead_letter(delivery, reason).await
    }
    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<NackOutcome, QueueError> {
        self.inner.defer(delivery, delay).await
    }
    fn timings(&self) -> QueueTimings {
        self.inner.timings()
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.stats().await
    }
}

struct World {
    clock: Arc<ManualClock>,
    adapters: MemoryAdapters,
    gateway: Arc<Outage>,
    repo: Arc<Faulty>,
    queue: Arc<Lossy>,
    service: OrderService,
    user: UserId,
    product: ProductId,
}

impl World {
    fn new(queue: QueueConfig) -> Self {
        Self::with_config(queue, ServiceConfig::default())
    }

    fn with_config(queue: QueueConfig, config: ServiceConfig) -> Self {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_764_000_000_000)));
        let adapters = MemoryAdapters::new(clock.clone(), queue).unwrap();
        let gateway = Arc::new(Outage {
            down: AtomicBool::new(false),
            inner: ScriptedGateway::new(),
        });
        let repo = Arc::new(Faulty {
            inner: adapters.repository.clone(),
            fail_completions: AtomicU32::new(0),
            rival_start: AtomicBool::new(false),
        });
        let lossy = Arc::new(Lossy {
            inner: adapters.queue.clone(),
            refuse_enqueue: AtomicBool::new(false),
        });
        let mut ports = adapters.ports(gateway.clone(), Arc::new(SeededRandom::new(7)));
        ports.repository = repo.clone();
        ports.queue = lossy.clone();
        let service = OrderService::new(ports, config).unwrap();
        let user = adapters.repository.add_user();
        let product = adapters
            .repository
            .add_product("p", Money::parse("10.00").unwrap(), 100);
        Self {
            clock,
            adapters,
            gateway,
            repo,
            queue: lossy,
            service,
            user,
            product,
        }
    }

    async fn place(&self, key: &str) -> OrderId {
        let request = CreateOrderRequest::new(self.user, [(self.product, 2)], key);
        self.service.create_order(request).await.unwrap().order.id()
    }

    async fn next(&self) -> Delivery {
        self.adapters
            .queue
            .reserve(Duration::ZERO)
            .await
            .unwrap()
            .expect("a delivery is due")
    }

    async fn nothing_due(&self) {
        let got = self.adapters.queue.reserve(Duration::ZERO).await.unwrap();
        assert_eq!(got, None, "no delivery may be due yet");
    }

    fn order(&self, id: OrderId) -> Order {
        self.adapters
            .repository
            .orders()
            .into_iter()
            .find(|o| o.id() == id)
            .unwrap()
    }

    async fn stats(&self) -> (u64, u64, u64) {
        let s = self.adapters.queue.stats().await.unwrap();
        (s.waiting, s.in_flight, s.dead)
    }

    /// Conservation for the one product: 100 = stock + units held by live orders.
    fn assert_stock_conserved(&self) {
        let held: u64 = self
            .adapters
            .repository
            .orders()
            .iter()
            .filter(|o| o.status().holds_stock())
            .map(|o| u64::from(o.lines()[0].quantity.get()))
            .sum();
        let stock = self.adapters.repository.stock(self.product).unwrap();
        assert_eq!(stock + held, 100, "stock conserved");
    }
}

fn completed(outcome: &WorkerOutcome) -> OrderStatus {
    match outcome {
        WorkerOutcome::Acked(ProcessOutcome::Completed(o)) => o.status(),
        other => panic!("expected the order to be completed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_provider_outage_after_start_releases_the_lease_and_the_retry_completes_the_order() {
    let w = World::new(QueueConfig::default());
    let id = w.place("outage").await;
    w.gateway.down.store(true, Ordering::SeqCst);
    let first = w.next().await;
    let out = w.service.handle_delivery(&first).await;
    assert!(matches!(out, WorkerOutcome::Released(_)), "{out:?}");
    let order = w.order(id);
    assert_eq!(
        order.status(),
        OrderStatus::Processing,
        "outcome unknown: stays Processing"
    );
    assert!(
        order.lease().unwrap().until <= w.clock.now(),
        "the worker that gave up released its own lease"
    );
    // The provider is back; the retry comes after the queue's 1 s backoff and takes
    // over at once (before the fix it found a live 30 s lease, burnt its attempts on
    // LeaseHeld and was dead-lettered with the order still Processing).
    w.gateway.down.store(false, Ordering::SeqCst);
    w.clock.advance(Duration::from_secs(1));
    let second = w.next().await;
    assert_eq!(second.attempt, 2);
    assert_eq!(
        completed(&w.service.handle_delivery(&second).await),
        OrderStatus::Paid
    );
    assert_eq!(w.stats().await, (0, 0, 0));
    assert_eq!(w.gateway.inner.new_charges(id), 1, "charged exactly once");
    w.assert_stock_conserved();
}

#[tokio::test]
async fn a_database_error_on_completion_releases_the_lease_and_the_retry_completes_the_order() {
    let w = World::new(QueueConfig::default());
    let id = w.place("db-error").await;
    w.repo.fail_completions.store(1, Ordering::SeqCst);
    let first = w.next().await;
    let out = w.service.handle_delivery(&first).await;
    assert!(matches!(out, WorkerOutcome::Released(_)), "{out:?}");
    assert!(w.order(id).lease().unwrap().until <= w.clock.now());
    w.clock.advance(Duration::from_secs(1));
    let second = w.next().await;
    assert_eq!(
        completed(&w.service.handle_delivery(&second).await),
        OrderStatus::Paid
    );
    assert_eq!(
        w.gateway.inner.new_charges(id),
        1,
        "the retry's charge is recognised"
    );
    assert_eq!(w.stats().await, (0, 0, 0));
}

#[tokio::test]
async fn a_crash_after_start_with_a_visibility_timeout_shorter_than_the_lease_is_deferred_not_dead_lettered()
 {
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(5),
        max_attempts: 8,
        ..QueueConfig::default()
    };
    let w = World::new(config);
    let id = w.place("crash").await;
    // The first worker starts the order and dies: its delivery is never settled.
    let _dead = w.next().await;
    let start = StatusChange::Start {
        lease: Lease {
            token: LeaseToken::from_raw(1),
            until: w.clock.now().saturating_add(Duration::from_secs(30)),
        },
    };
    let now = w.clock.now();
    w.adapters
        .repository
        .transition(id, start, now)
        .await
        .unwrap();
    // Each redelivery finds the dead worker's live lease: it is deferred, using no
    // attempt, until the lease runs out — never dead-lettered meanwhile.
    w.clock.advance(Duration::from_secs(5));
    let second = w.next().await;
    assert_eq!(second.attempt, 2);
    let out = w.service.handle_delivery(&second).await;
    let WorkerOutcome::Deferred(delay) = out else {
        panic!("expected a deferral, got {out:?}");
    };
    assert!(delay >= Duration::from_secs(25), "{delay:?}");
    w.clock.advance(delay - Duration::from_millis(100));
    w.nothing_due().await;
    w.clock.advance(Duration::from_millis(100));
    let third = w.next().await;
    assert_eq!(third.attempt, 2, "a deferral uses no attempt");
    assert_eq!(
        completed(&w.service.handle_delivery(&third).await),
        OrderStatus::Paid
    );
    assert_eq!(w.stats().await, (0, 0, 0));
}

#[tokio::test]
async fn a_lost_start_race_defers_the_job_until_the_winners_lease_expires() {
    let w = World::new(QueueConfig::default());
    let id = w.place("race").await;
    // While this worker read Pending, a rival's stalled Start committed; the rival then
    // dies holding a stale receipt. Acking here would leave the order to nobody.
    w.repo.rival_start.store(true, Ordering::SeqCst);
    let delivery = w.next().await;
    let out = w.service.handle_delivery(&delivery).await;
    let WorkerOutcome::Deferred(delay) = out else {
        panic!("a lost start must defer the live delivery, got {out:?}");
    };
    assert_eq!(w.stats().await, (1, 0, 0), "the job is kept, not acked");
    w.clock.advance(delay);
    let retry = w.next().await;
    assert_eq!(
        completed(&w.service.handle_delivery(&retry).await),
        OrderStatus::Paid
    );
    assert_eq!(w.order(id).status(), OrderStatus::Paid);
}

#[tokio::test]
async fn inside_the_grace_period_the_job_waits_without_an_attempt_and_a_cancel_wins() {
    let grace = Duration::from_secs(5);
    let config = ServiceConfig {
        grace_period: grace,
        ..ServiceConfig::default()
    };
    let w = World::with_config(QueueConfig::default(), config);
    let cancelled = w.place("change-of-mind").await;
    let kept = w.place("kept").await;
    for expected in [cancelled, kept] {
        let delivery = w.next().await;
        assert_eq!(delivery.job, Job::ProcessOrder(expected));
        let out = w.service.handle_delivery(&delivery).await;
        let WorkerOutcome::Deferred(delay) = out else {
            panic!("a job inside the grace period must be deferred, got {out:?}");
        };
        assert!(
            delay >= grace && delay < grace + Duration::from_secs(1),
            "{delay:?}"
        );
        assert_eq!(
            w.order(expected).status(),
            OrderStatus::Pending,
            "nothing written"
        );
    }
    assert_eq!(
        w.gateway.inner.calls(cancelled) + w.gateway.inner.calls(kept),
        0,
        "no charge inside the window"
    );
    w.nothing_due().await;
    // The customer changes their mind inside the window: the cancel always wins.
    w.clock.advance(Duration::from_secs(2));
    let order = w.service.cancel_order(w.user, cancelled).await.unwrap();
    assert_eq!(order.status(), OrderStatus::Cancelled);
    w.nothing_due().await;
    // The window ends: the deferred jobs come back with their first attempt unused.
    w.clock.advance(grace);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let retry = w.next().await;
        assert_eq!(retry.attempt, 1, "a deferral uses no attempt");
        let out = w.service.handle_delivery(&retry).await;
        statuses.push(match out {
            WorkerOutcome::Acked(ProcessOutcome::AlreadyTerminal(s)) => s,
            other => completed(&other),
        });
    }
    statuses.sort_by_key(|s| s.to_string());
    assert_eq!(statuses, vec![OrderStatus::Cancelled, OrderStatus::Paid]);
    assert_eq!(w.order(kept).status(), OrderStatus::Paid);
    assert_eq!(w.stats().await, (0, 0, 0), "both jobs finished");
    w.assert_stock_conserved();
}

#[tokio::test]
async fn a_failed_enqueue_after_commit_is_recovered_by_the_reconciler() {
    let w = World::new(QueueConfig::default());
    w.queue.refuse_enqueue.store(true, Ordering::SeqCst);
    let id = w.place("no-job").await;
    w.queue.refuse_enqueue.store(false, Ordering::SeqCst);
    assert_eq!(
        w.stats().await,
        (0, 0, 0),
        "the enqueue after commit failed"
    );
    assert_eq!(w.service.stats().enqueue_failures, 1);
    let stale_after = w.service.config().reconciler.stale_after;
    w.clock.advance(stale_after - Duration::from_millis(1));
    assert_eq!(
        w.service.reconcile().await.unwrap().enqueued,
        0,
        "too young"
    );
    w.clock.advance(Duration::from_millis(1));
    assert_eq!(w.service.reconcile().await.unwrap().enqueued, 1);
    assert_eq!(
        w.service.reconcile().await.unwrap().enqueued,
        0,
        "a claimed order is not handed out twice in one stale_after"
    );
    let job = w.next().await;
    assert_eq!(job.job, Job::ProcessOrder(id));
    assert_eq!(
        completed(&w.service.handle_delivery(&job).await),
        OrderStatus::Paid
    );
}

#[tokio::test]
async fn jobs_lost_with_the_queue_are_recovered_by_the_reconciler() {
    let w = World::new(QueueConfig::default());
    let ids = [w.place("a").await, w.place("b").await, w.place("c").await];
    // Redis restarted without persistence: every job is gone.
    for _ in 0..3 {
        let d = w.next().await;
        w.adapters.queue.ack(&d).await.unwrap();
    }
    assert_eq!(w.stats().await, (0, 0, 0));
    w.clock.advance(w.service.config().reconciler.stale_after);
    assert_eq!(w.service.reconcile().await.unwrap().enqueued, 3);
    for _ in 0..3 {
        let d = w.next().await;
        assert_eq!(
            completed(&w.service.handle_delivery(&d).await),
            OrderStatus::Paid
        );
    }
    for id in ids {
        assert_eq!(w.order(id).status(), OrderStatus::Paid);
    }
}

#[tokio::test]
async fn a_dead_lettered_order_is_handed_out_again_by_the_reconciler() {
    let config = QueueConfig {
        max_attempts: 8,
        ..QueueConfig::default()
    };
    let w = World::new(config);
    let id = w.place("long-outage").await;
    w.gateway.down.store(true, Ordering::SeqCst);
    for attempt in 1..=8 {
        let d = w.next().await;
        assert_eq!(d.attempt, attempt, "every retry is followed");
        let out = w.service.handle_delivery(&d).await;
        assert!(matches!(out, WorkerOutcome::Released(_)), "{out:?}");
        w.clock.advance(Duration::from_secs(1 << (attempt - 1)));
    }
    assert_eq!(
        w.stats().await,
        (0, 0, 1),
        "dead-lettered after the last attempt"
    );
    assert_eq!(w.order(id).status(), OrderStatus::Processing);
    w.gateway.down.store(false, Ordering::SeqCst);
    w.clock.advance(w.service.config().reconciler.stale_after);
    assert_eq!(w.service.reconcile().await.unwrap().enqueued, 1);
    let d = w.next().await;
    assert_eq!(
        completed(&w.service.handle_delivery(&d).await),
        OrderStatus::Paid
    );
    w.assert_stock_conserved();
}

#[tokio::test]
async fn the_reconciler_prunes_events_past_their_retention_and_seq_goes_on() {
    let w = World::new(QueueConfig::default());
    let first = w.place("old").await;
    let retention = w.service.config().reconciler.event_retention;
    let log = w.service.events_after(w.user, 0, 100).await.unwrap();
    assert_eq!(log.events.len(), 1, "order.created of {first} is logged");
    w.clock.advance(retention);
    assert_eq!(
        w.service.reconcile().await.unwrap().pruned,
        0,
        "an event exactly the retention old is kept"
    );
    w.clock.advance(Duration::from_millis(1));
    let second = w.place("new").await;
    assert_eq!(
        w.service.reconcile().await.unwrap().pruned,
        1,
        "the first event is now older than the retention"
    );
    let log = w.service.events_after(w.user, 0, 100).await.unwrap();
    assert_eq!(
        log.events
            .iter()
            .map(|e| (e.seq, e.order, e.kind.name()))
            .collect::<Vec<_>>(),
        vec![(2, second, "order.created")],
        "only the young event is left, and it kept its seq"
    );
    assert_eq!(log.last_seq, 2);
}

#[tokio::test]
async fn every_published_event_is_the_logged_one_with_its_seq() {
    let w = World::new(QueueConfig::default());
    let mut live = w.adapters.events.subscribe();
    let id = w.place("seq").await;
    let job = w.next().await;
    assert_eq!(
        completed(&w.service.handle_delivery(&job).await),
        OrderStatus::Paid
    );
    let log = w.service.events_after(w.user, 0, 100).await.unwrap();
    let names: Vec<_> = log.events.iter().map(|e| (e.seq, e.kind.name())).collect();
    assert_eq!(
        names,
        vec![
            (1, "order.created"),
            (2, "order.processing"),
            (3, "order.paid")
        ],
        "order {id}"
    );
    for logged in &log.events {
        assert_eq!(
            &live.try_recv().unwrap(),
            logged,
            "published exactly as logged"
        );
    }
    let limited = w.service.events_after(w.user, 1, 0).await.unwrap();
    assert_eq!(limited.events.len(), 1, "a limit of 0 reads as 1");
}

#[tokio::test]
async fn a_job_for_an_order_that_does_not_exist_is_dead_lettered_at_once() {
    let w = World::new(QueueConfig::default());
    let ghost = OrderId::new(999_999).unwrap();
    w.adapters
        .queue
        .enqueue(Job::ProcessOrder(ghost))
        .await
        .unwrap();
    let real = w.place("real").await;
    let d = w.next().await;
    assert_eq!(d.job, Job::ProcessOrder(ghost));
    assert_eq!(
        w.service.handle_delivery(&d).await,
        WorkerOutcome::DeadLettered(order_engine::core::app::MISSING_ORDER)
    );
    let dead = w.adapters.queue.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].job, dead[0].attempts, dead[0].last_error.as_str()),
        (Job::ProcessOrder(ghost), 1, "the order does not exist"),
        "buried on its first attempt, with the reason"
    );
    // The poison never blocks the real order behind it.
    let next = w.next().await;
    assert_eq!(next.job, Job::ProcessOrder(real));
    assert_eq!(
        completed(&w.service.handle_delivery(&next).await),
        OrderStatus::Paid
    );
}
