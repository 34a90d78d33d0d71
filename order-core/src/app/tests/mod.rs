//! Interaction tests of `OrderService` with mockall ports: what it calls, in which order,
//! and what it must never call, one file per use case. Behaviour against faithful
//! adapters is tested in the workspace's integration tests on the memory adapters.
//!
//! This file holds what the use cases' tests share: the mocks, and orders to answer with.

mod create_order;
mod process_order;
mod queries;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mockall::Sequence;
use mockall::predicate::{always, eq};

use super::*;
use crate::domain::*;
use crate::ports::*;

struct Mocks {
    repo: MockOrderRepository,
    lock: MockDistributedLock,
    pay: MockPaymentGateway,
    events: MockEventPublisher,
    queue: MockJobQueue,
}

impl Mocks {
    fn new() -> Self {
        let mut events = MockEventPublisher::new();
        events.expect_publish().returning(|_| Ok(()));
        Self {
            repo: MockOrderRepository::new(),
            lock: MockDistributedLock::new(),
            pay: MockPaymentGateway::new(),
            events,
            queue: MockJobQueue::new(),
        }
    }

    fn service(self) -> OrderService {
        self.service_with(ServiceConfig::default())
    }

    fn service_with(self, config: ServiceConfig) -> OrderService {
        let Self {
            repo,
            lock,
            pay,
            events,
            queue,
        } = self;
        service_of(repo, lock, queue, config, Arc::new(pay), Arc::new(events))
    }

    /// The service over these mocks, but with `payments` and `events` in place of the
    /// payment and publisher mocks (for ports a test writes by hand).
    fn service_on(
        self,
        config: ServiceConfig,
        payments: Arc<dyn PaymentGateway>,
        events: Arc<dyn EventPublisher>,
    ) -> OrderService {
        let Self {
            repo, lock, queue, ..
        } = self;
        service_of(repo, lock, queue, config, payments, events)
    }
}

/// The service over these ports, with a manual clock and a seeded random source.
fn service_of(
    repo: MockOrderRepository,
    lock: MockDistributedLock,
    mut queue: MockJobQueue,
    config: ServiceConfig,
    payments: Arc<dyn PaymentGateway>,
    events: Arc<dyn EventPublisher>,
) -> OrderService {
    queue.expect_timings().return_const(QueueTimings {
        visibility_timeout: Duration::from_secs(30),
        max_attempts: 8,
        retry_backoff: Backoff::fixed_schedule(Duration::from_secs(1), Duration::from_secs(600)),
    });
    let ports = Ports {
        repository: Arc::new(repo),
        lock: Arc::new(lock),
        payments,
        events,
        queue: Arc::new(queue),
        clock: Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000))),
        rng: Arc::new(SeededRandom::new(1)),
    };
    OrderService::new(ports, config).unwrap()
}

fn user() -> UserId {
    UserId::new(1).unwrap()
}

fn request(products: &[i64]) -> CreateOrderRequest {
    CreateOrderRequest {
        user: user(),
        items: products
            .iter()
            .map(|p| RequestedItem {
                product_id: *p,
                quantity: 1,
            })
            .collect(),
        idempotency_key: "key-1".into(),
    }
}

fn pending_order(products: &[u64]) -> Order {
    let items = products
        .iter()
        .map(|p| (ProductId::new(*p).unwrap(), Quantity::new(1).unwrap()));
    let draft = OrderDraft::new(user(), items, IdempotencyKey::new("key-1").unwrap()).unwrap();
    let prices = vec![Money::from_cents(1000).unwrap(); products.len()];
    Order::place(
        OrderId::new(42).unwrap(),
        &draft,
        &prices,
        Timestamp::from_millis(1),
    )
    .unwrap()
}

/// `order` placed, with the event a repository would log for it.
fn placed(order: Order) -> PlaceOutcome {
    let event = OrderEvent::logged(&order, 1);
    PlaceOutcome::Placed(order, event)
}

/// `order` changed, with the event a repository logs for a status change.
fn applied(order: Order) -> TransitionOutcome {
    let event = OrderEvent::logged(&order, 2);
    TransitionOutcome::Applied(order, Some(event))
}

fn processing(order: &Order, token: u64) -> Order {
    let mut o = order.clone();
    let lease = Lease {
        token: LeaseToken::from_raw(token),
        until: Timestamp::from_millis(u64::MAX / 2),
    };
    o.apply(&StatusChange::Start { lease }, Timestamp::from_millis(2))
        .unwrap();
    o
}

/// Expects the create path up to `place` with all locks granted, in order: ONE key
/// lookup before locking (a key committed while we wait is `place`'s to answer).
fn expect_locked_create(m: &mut Mocks, seq: &mut Sequence, keys: &[&'static str]) {
    m.repo
        .expect_find_by_key()
        .times(1)
        .returning(|_, _| Ok(None));
    for key in keys {
        m.lock
            .expect_try_acquire()
            .with(eq(*key), always(), eq(Duration::from_secs(10)))
            .times(1)
            .in_sequence(seq)
            .returning(|_, _, _| Ok(true));
    }
}

fn expect_releases(m: &mut Mocks, seq: &mut Sequence, keys: &[&'static str]) {
    for key in keys.iter().rev() {
        m.lock
            .expect_release()
            .with(eq(*key), always())
            .times(1)
            .in_sequence(seq)
            .returning(|_, _| Ok(true));
    }
}
