//! The fail points of `order_core::failpoints` on the memory adapters: each fires at
//! its exact step of the protocol — what the store, the payment provider and the queue
//! hold when it fires is what a process killed there leaves behind — and a disarmed
//! point does nothing.
//!
//! Fail points are process-global. Under nextest each test is a process of its own;
//! under `cargo test` these tests hold [`SERIAL`] so they never arm points under each
//! other, and every test disarms everything when its guard drops (even on failure).

use std::sync::Arc;
use std::time::Duration;

use order_core::app::{
    CreateOrderRequest, OrderService, ProcessOutcome, SeededRandom, WorkerOutcome,
};
use order_core::domain::{Money, Order, OrderId, OrderStatus, ProductId, Timestamp, UserId};
use order_core::failpoints::{self, Action, Trigger};
use order_core::ports::{Clock, Delivery, JobQueue};
use order_core::testing::scripted::ScriptedGateway;
use order_memory::{ManualClock, MemoryAdapters, QueueConfig};
use tokio::sync::{Mutex, MutexGuard};

/// Serialises the tests that arm fail points (a tokio mutex: the guard is held across
/// awaits).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Held for a whole test: the only armed points are this test's, and none outlive it.
struct Exclusive {
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        failpoints::disarm_all();
    }
}

async fn exclusive() -> Exclusive {
    let serial = SERIAL.lock().await;
    failpoints::disarm_all();
    Exclusive { _serial: serial }
}

struct World {
    clock: Arc<ManualClock>,
    adapters: MemoryAdapters,
    gateway: Arc<ScriptedGateway>,
    service: OrderService,
    user: UserId,
    product: ProductId,
}

impl World {
    fn new() -> Arc<Self> {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_764_000_000_000)));
        let adapters = MemoryAdapters::new(clock.clone(), QueueConfig::default()).unwrap();
        let gateway = Arc::new(ScriptedGateway::new());
        let ports = adapters.ports(gateway.clone(), Arc::new(SeededRandom::new(7)));
        let service = OrderService::new(ports, Default::default()).unwrap();
        let user = adapters.repository.add_user();
        let product = adapters
            .repository
            .add_product("p", Money::parse("10.00").unwrap(), 100);
        Arc::new(Self {
            clock,
            adapters,
            gateway,
            service,
            user,
            product,
        })
    }

    fn request(&self, key: &str) -> CreateOrderRequest {
        CreateOrderRequest::new(self.user, [(self.product, 2)], key)
    }

    async fn place(&self, key: &str) -> OrderId {
        let created = self.service.create_order(self.request(key)).await.unwrap();
        created.order.id()
    }

    async fn next(&self) -> Delivery {
        self.adapters
            .queue
            .reserve(Duration::ZERO)
            .await
            .unwrap()
            .expect("a delivery is due")
    }

    fn orders(&self) -> Vec<Order> {
        self.adapters.repository.orders()
    }

    fn order(&self, id: OrderId) -> Order {
        self.orders().into_iter().find(|o| o.id() == id).unwrap()
    }

    /// (waiting, in flight, dead) jobs.
    async fn queue(&self) -> (u64, u64, u64) {
        let s = self.adapters.queue.stats().await.unwrap();
        (s.waiting, s.in_flight, s.dead)
    }

    /// Handles `delivery` on a task of its own and returns whether that task panicked.
    async fn handle_panics(self: &Arc<Self>, delivery: Delivery) -> bool {
        let w = self.clone();
        let task = tokio::spawn(async move { w.service.handle_delivery(&delivery).await });
        match task.await {
            Ok(outcome) => {
                println!("handled without a panic: {outcome:?}");
                false
            }
            Err(e) => e.is_panic(),
        }
    }
}

fn fired_only(name: &str) {
    for point in failpoints::NAMES {
        let expected = u64::from(point == name);
        assert_eq!(failpoints::hits(point), expected, "hits of {point}");
    }
}

#[tokio::test]
async fn after_commit_before_enqueue_fires_with_the_order_committed_and_no_job_enqueued() {
    let _x = exclusive().await;
    let w = World::new();
    failpoints::arm("after_commit_before_enqueue", Action::Panic).unwrap();

    let ww = w.clone();
    let task = tokio::spawn(async move { ww.service.create_order(ww.request("k")).await });
    assert!(task.await.unwrap_err().is_panic(), "the point fired");

    fired_only("after_commit_before_enqueue");
    let orders = w.orders();
    assert_eq!(orders.len(), 1, "the order was committed");
    assert_eq!(orders[0].status(), OrderStatus::Pending);
    assert_eq!(w.queue().await, (0, 0, 0), "its job was never enqueued");
    assert_eq!(
        w.adapters.repository.stock(w.product),
        Some(98),
        "stock reserved"
    );
}

#[tokio::test]
async fn after_start_fires_with_the_order_processing_and_nothing_charged() {
    let _x = exclusive().await;
    let w = World::new();
    let id = w.place("k").await;
    let delivery = w.next().await;
    failpoints::arm("after_start", Action::Panic).unwrap();

    assert!(w.handle_panics(delivery).await, "the point fired");

    fired_only("after_start");
    let order = w.order(id);
    assert_eq!(
        order.status(),
        OrderStatus::Processing,
        "the start was applied"
    );
    assert!(order.lease().is_some(), "under this worker's lease");
    assert_eq!(w.gateway.calls(id), 0, "the provider was never called");
    assert_eq!(w.queue().await, (0, 1, 0), "the delivery was never settled");
}

#[tokio::test]
async fn after_charge_fires_with_the_charge_recorded_and_the_order_still_processing() {
    let _x = exclusive().await;
    let w = World::new();
    let id = w.place("k").await;
    let delivery = w.next().await;
    failpoints::arm_from_spec("after_charge=panic").unwrap();

    assert!(w.handle_panics(delivery).await, "the point fired");

    fired_only("after_charge");
    assert_eq!(
        w.gateway.new_charges(id),
        1,
        "the provider recorded the charge"
    );
    assert_eq!(
        w.order(id).status(),
        OrderStatus::Processing,
        "the final transition was not made"
    );
    assert_eq!(w.queue().await, (0, 1, 0), "the delivery was never settled");
}

#[tokio::test]
async fn before_ack_fires_with_the_order_terminal_and_its_delivery_unacked() {
    let _x = exclusive().await;
    let w = World::new();
    let id = w.place("k").await;
    let delivery = w.next().await;
    failpoints::arm_from_spec("before_ack=1*panic").unwrap();

    assert!(w.handle_panics(delivery).await, "the point fired");

    fired_only("before_ack");
    assert_eq!(
        w.order(id).status(),
        OrderStatus::Paid,
        "the order is terminal"
    );
    assert_eq!(w.queue().await, (0, 1, 0), "but its delivery was not acked");

    // Counted: it fired once and is off. The redelivery after the visibility timeout
    // finds the order terminal and is acked.
    w.clock.advance(QueueConfig::default().visibility_timeout);
    let again = w.next().await;
    let out = w.service.handle_delivery(&again).await;
    assert!(
        matches!(
            out,
            WorkerOutcome::Acked(ProcessOutcome::AlreadyTerminal(OrderStatus::Paid))
        ),
        "{out:?}"
    );
    assert_eq!(failpoints::hits("before_ack"), 1, "off after its one fire");
    assert_eq!(w.queue().await, (0, 0, 0));
}

#[tokio::test]
async fn a_sleep_waits_on_the_service_clock_and_a_counted_one_turns_off() {
    let _x = exclusive().await;
    let w = World::new();
    let first = w.place("a").await;
    let second = w.place("b").await;
    failpoints::arm(
        "after_start",
        Trigger::times(1, Action::Sleep(Duration::from_secs(5))),
    )
    .unwrap();

    // The manual clock's sleep advances it: the 5 s are seen on the service's clock.
    let before = w.clock.now();
    let out = w.service.handle_delivery(&w.next().await).await;
    assert!(
        matches!(out, WorkerOutcome::Acked(ProcessOutcome::Completed(_))),
        "{out:?}"
    );
    assert_eq!(w.clock.now(), before.saturating_add(Duration::from_secs(5)));

    let before = w.clock.now();
    let out = w.service.handle_delivery(&w.next().await).await;
    assert!(
        matches!(out, WorkerOutcome::Acked(ProcessOutcome::Completed(_))),
        "{out:?}"
    );
    assert_eq!(w.clock.now(), before, "off after one fire: no sleep");

    fired_only("after_start");
    assert_eq!(w.order(first).status(), OrderStatus::Paid);
    assert_eq!(w.order(second).status(), OrderStatus::Paid);
}

#[tokio::test]
async fn disarmed_fail_points_do_nothing() {
    let _x = exclusive().await;
    let w = World::new();
    for point in failpoints::NAMES {
        failpoints::arm(point, Action::Panic).unwrap();
    }
    for point in failpoints::NAMES {
        failpoints::arm(point, Action::Off).unwrap();
    }
    let id = w.place("off").await;
    let out = w.service.handle_delivery(&w.next().await).await;
    assert!(
        matches!(out, WorkerOutcome::Acked(ProcessOutcome::Completed(_))),
        "{out:?}"
    );

    failpoints::arm_from_spec("after_start=abort;before_ack=2*exit(3)").unwrap();
    failpoints::disarm_all();
    let other = w.place("all").await;
    let out = w.service.handle_delivery(&w.next().await).await;
    assert!(
        matches!(out, WorkerOutcome::Acked(ProcessOutcome::Completed(_))),
        "{out:?}"
    );

    for point in failpoints::NAMES {
        assert_eq!(failpoints::hits(point), 0, "{point} never fired");
    }
    assert_eq!(w.order(id).status(), OrderStatus::Paid);
    assert_eq!(w.order(other).status(), OrderStatus::Paid);
    assert_eq!(w.queue().await, (0, 0, 0));
}

#[tokio::test]
async fn a_bad_spec_is_refused_naming_its_part_and_arms_nothing() {
    let _x = exclusive().await;
    let err = failpoints::arm_from_spec("after_start=panic;before_ack=3*explode").unwrap_err();
    assert!(err.to_string().contains("`before_ack=3*explode`"), "{err}");
    let err = failpoints::arm_from_spec("after_strat=panic").unwrap_err();
    assert!(
        err.to_string().contains("unknown fail point `after_strat`"),
        "{err}"
    );

    let w = World::new();
    let id = w.place("k").await;
    let out = w.service.handle_delivery(&w.next().await).await;
    assert!(
        matches!(out, WorkerOutcome::Acked(ProcessOutcome::Completed(_))),
        "{out:?}"
    );
    assert_eq!(
        w.order(id).status(),
        OrderStatus::Paid,
        "after_start was not armed"
    );
}
