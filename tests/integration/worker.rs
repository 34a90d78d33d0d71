//! The worker loop end to end on the memory queue, and redelivery after a crash.

use std::sync::Arc;
use std::time::Duration;

use order_core::app::{CreateOrderRequest, ServiceConfig, WorkerOutcome};
use order_core::domain::{Money, OrderStatus};
use order_core::ports::{
    Clock, Delivery, Job, JobQueue, NackOutcome, QueueError, QueueStats, QueueTimings,
};
use order_engine::{Engine, Workers};
use order_memory::{QueueConfig, SystemClock};
use order_payment_sim::SimConfig;

use crate::support::ManualWorld;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_take_every_order_to_a_terminal_state_and_stop_on_shutdown() {
    let sim = SimConfig {
        min_delay: Duration::ZERO,
        max_delay: Duration::from_millis(5),
        ..SimConfig::default()
    };
    let engine = Engine::builder()
        .memory()
        .simulated_payments(sim)
        .build()
        .await
        .unwrap();
    let memory = engine.memory().unwrap();
    let user = memory.repository.add_user();
    let product = memory
        .repository
        .add_product("p", Money::parse("5.00").unwrap(), 1_000);
    for i in 0..100 {
        engine
            .service()
            .create_order(CreateOrderRequest::new(
                user,
                [(product, 1)],
                format!("k{i}"),
            ))
            .await
            .unwrap();
    }
    let workers = Workers::spawn(engine.service(), 8);
    tokio::time::timeout(Duration::from_secs(30), async {
        while memory
            .repository
            .orders()
            .iter()
            .any(|o| !o.status().is_terminal())
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("all orders terminal within 30 s");
    let report = workers.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.aborted, 0, "every worker stops within 5 s");
    assert_eq!(report.handled, 100);
    let stats = memory.queue.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.in_flight, stats.dead), (0, 0, 0));
    let orders = memory.repository.orders();
    let paid = orders
        .iter()
        .filter(|o| o.status() == OrderStatus::Paid)
        .count() as u64;
    let failed = orders
        .iter()
        .filter(|o| o.status() == OrderStatus::Failed)
        .count() as u64;
    assert_eq!(paid + failed, 100);
    // Failed orders gave their stock back; paid ones keep it.
    assert_eq!(memory.repository.stock(product), Some(1_000 - paid));
    assert_eq!(
        engine
            .simulated_payments()
            .unwrap()
            .ledger()
            .entries()
            .await
            .unwrap()
            .len(),
        100
    );
}

#[tokio::test]
async fn a_job_whose_worker_died_is_redelivered_and_finished_by_another() {
    let world = ManualWorld::new(5);
    let user = world.adapters.repository.add_user();
    let product = world
        .adapters
        .repository
        .add_product("p", Money::parse("5.00").unwrap(), 10);
    let created = world
        .service
        .create_order(CreateOrderRequest::new(user, [(product, 1)], "k"))
        .await
        .unwrap();
    let queue = &world.adapters.queue;
    // Worker 1 reserves the job and dies without acking.
    let lost = queue.reserve(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(lost.attempt, 1);
    assert!(
        queue.reserve(Duration::ZERO).await.unwrap().is_none(),
        "invisible while reserved"
    );
    world
        .clock
        .advance(QueueConfig::default().visibility_timeout + Duration::from_millis(1));
    let again = queue.reserve(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(again.attempt, 2);
    let out = world.service.handle_delivery(&again).await;
    assert!(matches!(out, WorkerOutcome::Acked(_)), "{out:?}");
    let order = world
        .adapters
        .repository
        .orders()
        .into_iter()
        .find(|o| o.id() == created.order.id())
        .unwrap();
    assert_eq!(order.status(), OrderStatus::Paid);
    assert_eq!(world.gateway.new_charges(order.id()), 1);
    // The dead worker's late ack is harmless and nothing is left.
    queue.ack(&lost).await.unwrap();
    assert_eq!(queue.stats().await.unwrap().in_flight, 0);
}

/// A provider that never answers (in real time).
struct Silent;

#[async_trait::async_trait]
impl order_core::ports::PaymentGateway for Silent {
    async fn charge(
        &self,
        _key: order_core::domain::OrderId,
        _amount: Money,
    ) -> Result<order_core::ports::PaymentOutcome, order_core::ports::PaymentError> {
        std::future::pending().await
    }
    async fn void(
        &self,
        _key: order_core::domain::OrderId,
    ) -> Result<order_core::ports::PaymentOutcome, order_core::ports::PaymentError> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_workers_has_a_deadline_and_aborts_a_stuck_job_which_is_redelivered() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let adapters = order_memory::MemoryAdapters::new(clock, QueueConfig::default()).unwrap();
    let ports = adapters.ports(
        Arc::new(Silent),
        Arc::new(order_core::app::SeededRandom::new(3)),
    );
    let service = Arc::new(order_core::OrderService::new(ports, ServiceConfig::default()).unwrap());
    let user = adapters.repository.add_user();
    let product = adapters
        .repository
        .add_product("p", Money::parse("5.00").unwrap(), 10);
    service
        .create_order(CreateOrderRequest::new(user, [(product, 1)], "stuck"))
        .await
        .unwrap();
    let workers = Workers::spawn_with_reconciler(&service, 2);
    // Wait until a worker holds the job (it then waits on the silent provider for 5 s).
    tokio::time::timeout(Duration::from_secs(5), async {
        while adapters.queue.stats().await.unwrap().in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a worker reserves the job");
    let started = std::time::Instant::now();
    let report = workers.stop(Duration::from_millis(300)).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "stop kept its deadline: {took:?}"
    );
    assert_eq!(
        report.aborted, 1,
        "the stuck worker was aborted: {report:?}"
    );
    // Its delivery was neither acked nor nacked: it is still the queue's, in flight, and
    // comes back after the visibility timeout.
    assert_eq!(adapters.queue.stats().await.unwrap().in_flight, 1);
}

/// The memory queue, watched: it counts the deliveries it hands out, and those it hands
/// out while an order of `repository` (once set) is Processing; and an ack holds until
/// it has handed out `ack_after` deliveries in all.
struct Watched {
    inner: order_memory::MemoryQueue,
    repository: std::sync::OnceLock<Arc<order_memory::MemoryOrderRepository>>,
    handed_out: tokio::sync::watch::Sender<usize>,
    reserved_while_processing: std::sync::atomic::AtomicU64,
    ack_after: usize,
}

impl Watched {
    fn new(clock: Arc<dyn Clock>, ack_after: usize) -> Self {
        Self {
            inner: order_memory::MemoryQueue::new(clock, QueueConfig::default()).unwrap(),
            repository: std::sync::OnceLock::new(),
            handed_out: tokio::sync::watch::Sender::new(0),
            reserved_while_processing: std::sync::atomic::AtomicU64::new(0),
            ack_after,
        }
    }

    /// The statuses of the repository's orders (none before it is set).
    fn statuses(&self) -> Vec<OrderStatus> {
        self.repository.get().map_or_else(Vec::new, |r| {
            r.orders().iter().map(|o| o.status()).collect()
        })
    }

    fn processing(&self) -> usize {
        self.statuses()
            .into_iter()
            .filter(|s| *s == OrderStatus::Processing)
            .count()
    }

    /// Until every job is settled (none waiting, none in flight).
    async fn until_drained(&self) {
        loop {
            let stats = self.inner.stats().await.unwrap();
            if (stats.waiting, stats.in_flight) == (0, 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait::async_trait]
impl JobQueue for Watched {
    async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        self.inner.enqueue(job).await
    }
    async fn reserve(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let delivery = self.inner.reserve(wait).await?;
        if delivery.is_some() {
            if self.processing() > 0 {
                self.reserved_while_processing
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            self.handed_out.send_modify(|n| *n += 1);
        }
        Ok(delivery)
    }
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let mut handed_out = self.handed_out.subscribe();
        let enough = self.ack_after;
        let _ = handed_out.wait_for(|n| *n >= enough).await;
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

/// One worker loop over `engine`, stopped once `queue` is drained (within 10 s, else
/// `stuck` is the panic message); returns how many deliveries it handled.
async fn run_one_loop_until_drained(engine: &Engine, queue: &Watched, stuck: &str) -> u64 {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = engine.service().clone();
    let worker = tokio::spawn(async move {
        service
            .run_worker(async {
                let _ = stopped.await;
            })
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), queue.until_drained())
        .await
        .expect(stuck);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker stops once shut down")
        .unwrap()
}

/// An engine over memory adapters, `queue` and `payments` (the simulation with delays of
/// 0–2 ms if `None`), with `orders` placed (one unit each, a key each); `queue` watches
/// its repository.
async fn engine_with(
    clock: Arc<dyn Clock>,
    queue: &Arc<Watched>,
    payments: Option<Arc<dyn order_core::ports::PaymentGateway>>,
    orders: &[&str],
) -> Engine {
    let builder = Engine::builder().clock(clock).memory().queue(queue.clone());
    let builder = match payments {
        Some(payments) => builder.payments(payments),
        None => builder.simulated_payments(SimConfig {
            min_delay: Duration::ZERO,
            max_delay: Duration::from_millis(2),
            ..SimConfig::default()
        }),
    };
    let engine = builder.build().await.unwrap();
    let memory = engine.memory().unwrap();
    let _ = queue.repository.set(memory.repository.clone());
    let user = memory.repository.add_user();
    let product = memory
        .repository
        .add_product("p", Money::parse("5.00").unwrap(), 10);
    for key in orders {
        engine
            .service()
            .create_order(CreateOrderRequest::new(user, [(product, 1)], *key))
            .await
            .unwrap();
    }
    engine
}

/// One worker loop settles a finished job (publish, then ack) beside what comes next:
/// here the first job's ack holds until the second job has been handed out, which would
/// never happen if the loop acked before it reserved again. It still settles every job,
/// the last one before it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_settles_a_finished_job_beside_the_next_and_settles_the_last_before_stopping() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let queue = Arc::new(Watched::new(clock.clone(), 2));
    let engine = engine_with(clock, &queue, None, &["a", "b"]).await;
    let handled = run_one_loop_until_drained(
        &engine,
        &queue,
        "the first job's ack held until the next job was reserved: the loop acked first",
    )
    .await;
    assert_eq!(handled, 2);
    assert!(queue.statuses().iter().all(|s| s.is_terminal()));
}

/// A provider that approves after 2 ms, checking at every charge that the order it
/// charges is the only one Processing, and that no other charge runs.
struct OneAtATime {
    queue: Arc<Watched>,
    charging: std::sync::atomic::AtomicU32,
    violations: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl order_core::ports::PaymentGateway for OneAtATime {
    async fn charge(
        &self,
        order: order_core::domain::OrderId,
        _: Money,
    ) -> Result<order_core::ports::PaymentOutcome, order_core::ports::PaymentError> {
        use std::sync::atomic::Ordering::SeqCst;
        let others = self.charging.fetch_add(1, SeqCst);
        let processing = self.queue.processing();
        if others != 0 || processing != 1 {
            self.violations.lock().unwrap().push(format!(
                "order {order}: {others} other charges running, {processing} orders Processing"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.charging.fetch_sub(1, SeqCst);
        Ok(order_core::ports::PaymentOutcome::Approved)
    }
    async fn void(
        &self,
        _: order_core::domain::OrderId,
    ) -> Result<order_core::ports::PaymentOutcome, order_core::ports::PaymentError> {
        Ok(order_core::ports::PaymentOutcome::Approved)
    }
}

/// One worker loop takes its next job while the order it has charged is still
/// Processing — its completion and the next Start then go to the store together —
/// and yet charges one order at a time, each the only order Processing when its charge
/// begins. (A loop that takes its next job only after the completion never reserves
/// while an order is Processing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_starts_its_next_job_beside_a_completion_and_charges_one_order_at_a_time() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let queue = Arc::new(Watched::new(clock.clone(), 0));
    let payments = Arc::new(OneAtATime {
        queue: queue.clone(),
        charging: std::sync::atomic::AtomicU32::new(0),
        violations: std::sync::Mutex::new(Vec::new()),
    });
    let engine = engine_with(clock, &queue, Some(payments.clone()), &["a", "b", "c", "d"]).await;
    let handled = run_one_loop_until_drained(&engine, &queue, "all four jobs settled").await;
    assert_eq!(handled, 4);
    assert_eq!(queue.statuses(), vec![OrderStatus::Paid; 4]);
    assert_eq!(*payments.violations.lock().unwrap(), Vec::<String>::new());
    // The first job is taken with nothing Processing; each of the next three while the
    // order before it was.
    assert_eq!(
        queue
            .reserved_while_processing
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}
