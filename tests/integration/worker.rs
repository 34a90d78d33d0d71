//! The worker loop end to end on the memory queue, and redelivery after a crash.

use std::sync::Arc;
use std::time::Duration;

use order_core::app::{CreateOrderRequest, ServiceConfig, WorkerOutcome};
use order_core::domain::{Money, OrderStatus};
use order_core::ports::{Clock, JobQueue};
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
