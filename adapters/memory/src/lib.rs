//! # order-memory
//!
//! In-memory implementations of every driven port of `order-core`. They serve twice:
//! as the **embedded default** (a newcomer runs API, worker and events in one process
//! with no database or Redis), and as the **test double** the real adapters are checked
//! against — so each keeps its port's contract faithfully, not approximately.
//!
//! | type | port | stands in for |
//! |---|---|---|
//! | [`MemoryOrderRepository`] | [`OrderRepository`](order_core::ports::OrderRepository) | MySQL: orders, stock, idempotency keys, one transaction per draft |
//! | [`MemoryLock`] | [`DistributedLock`](order_core::ports::DistributedLock) | Redis `SET NX PX` + compare-and-delete |
//! | [`MemoryQueue`] | [`JobQueue`](order_core::ports::JobQueue) | the Redis queue: visibility timeout, retries with backoff, dead letter |
//! | [`MemoryEventBus`] | [`EventPublisher`](order_core::ports::EventPublisher) | Redis pub/sub |
//! | [`SystemClock`], [`ManualClock`] (re-exported from `order_core::runtime`) | [`Clock`] | time, real or driven by a test |
//!
//! [`seed_reference_data`] loads the reference system's demo users and products, and
//! [`MemoryAdapters`] wires everything into [`order_core::app::Ports`] on one clock.
//!
//! This crate depends on `order-core` and Tokio's `sync`/`time` only; nothing here does
//! I/O. All state lives behind short std mutexes that are never held across an `.await`.

mod accounts;
mod clock;
mod events;
mod lock;
mod queue;
mod repository;
mod seed;

use std::sync::Arc;

use order_core::app::Ports;
use order_core::ports::{Clock, PaymentGateway, QueueTimingsError, RandomSource};

pub use accounts::MemoryAccounts;
pub use clock::{ManualClock, SystemClock};
pub use events::MemoryEventBus;
pub use lock::MemoryLock;
pub use order_core::domain::RestockError;
pub use queue::{DeadLetter, MemoryQueue, QueueConfig};
pub use repository::MemoryOrderRepository;
pub use seed::{ReferenceData, seed_reference_data};

/// One of each memory adapter, sharing one clock, ready to be turned into [`Ports`].
///
/// The fields are the concrete types, so a test or the embedded server can still seed
/// the repository, subscribe to the bus or read the dead letter after wiring.
#[derive(Clone)]
pub struct MemoryAdapters {
    /// Orders and stock.
    pub repository: Arc<MemoryOrderRepository>,
    /// The lock table, on `clock`.
    pub lock: Arc<MemoryLock>,
    /// The job queue, on `clock`.
    pub queue: Arc<MemoryQueue>,
    /// The event bus (default capacity).
    pub events: Arc<MemoryEventBus>,
    /// The clock every adapter above measures time on.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryAdapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAdapters")
            .field("repository", &self.repository)
            .field("lock", &self.lock)
            .field("queue", &self.queue)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl MemoryAdapters {
    /// Empty adapters on `clock`, the queue configured by `queue`.
    ///
    /// # Errors
    /// [`QueueTimingsError`] when `queue` has a zero timing or attempt count.
    pub fn new(clock: Arc<dyn Clock>, queue: QueueConfig) -> Result<Self, QueueTimingsError> {
        Ok(Self {
            repository: Arc::new(MemoryOrderRepository::new()),
            lock: Arc::new(MemoryLock::new(clock.clone())),
            queue: Arc::new(MemoryQueue::new(clock.clone(), queue)?),
            events: Arc::new(MemoryEventBus::new()),
            clock,
        })
    }

    /// The service's ports: these adapters plus the two that have no memory version
    /// here, the payment gateway and the random source.
    pub fn ports(&self, payments: Arc<dyn PaymentGateway>, rng: Arc<dyn RandomSource>) -> Ports {
        Ports {
            repository: self.repository.clone(),
            lock: self.lock.clone(),
            payments,
            events: self.events.clone(),
            queue: self.queue.clone(),
            clock: self.clock.clone(),
            rng,
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use order_core::app::{CreateOrderRequest, SeededRandom, ServiceConfig};
    use order_core::ports::{JobQueue, OrderEventKind, PaymentError, PaymentOutcome};
    use order_core::{Money, OrderId, OrderService, OrderStatus, Timestamp};

    use super::*;

    struct Approve;

    #[async_trait]
    impl PaymentGateway for Approve {
        async fn charge(&self, _: OrderId, _: Money) -> Result<PaymentOutcome, PaymentError> {
            Ok(PaymentOutcome::Approved)
        }

        async fn void(&self, _: OrderId) -> Result<PaymentOutcome, PaymentError> {
            Ok(PaymentOutcome::Approved)
        }
    }

    #[tokio::test]
    async fn the_wired_adapters_take_an_order_from_placed_to_paid() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        let adapters = MemoryAdapters::new(clock, QueueConfig::default()).unwrap();
        let data = seed_reference_data(&adapters.repository);
        let mut events = adapters.events.subscribe();
        let ports = adapters.ports(Arc::new(Approve), Arc::new(SeededRandom::new(1)));
        let service = OrderService::new(ports, ServiceConfig::default()).unwrap();

        let created = service
            .create_order(CreateOrderRequest::new(
                data.alice,
                [(data.mouse, 2), (data.keyboard, 1)],
                "first-order",
            ))
            .await
            .unwrap();
        assert!(!created.replayed);
        assert_eq!(created.order.total().to_string(), "209.97");
        assert_eq!(adapters.repository.stock(data.mouse), Some(198));
        // Every lock was released.
        assert_eq!(
            adapters.lock.holder(&format!("product:{}", data.mouse)),
            None
        );

        let delivery = adapters
            .queue
            .reserve(std::time::Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        service.handle_delivery(&delivery).await;
        let order = adapters.repository.orders().remove(0);
        assert_eq!(order.status(), OrderStatus::Paid);
        let stats = adapters.queue.stats().await.unwrap();
        assert_eq!((stats.waiting, stats.in_flight, stats.dead), (0, 0, 0));

        let kinds: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![
                OrderEventKind::Created,
                OrderEventKind::Processing,
                OrderEventKind::Paid
            ]
        );
        assert_eq!(adapters.events.published(), 3);
    }
}
