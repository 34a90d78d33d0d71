//! True concurrency on a multi-threaded runtime: many tasks racing for scarce stock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use order_core::app::{
    CreateOrderError, CreateOrderRequest, LockMode, LockPolicy, OrderService, RequestedItem,
    SeededRandom, ServiceConfig,
};
use order_core::domain::{
    IdempotencyKey, Money, Order, OrderDraft, OrderId, Product, StatusChange, Timestamp, UserId,
};
use order_core::ports::{
    Clock, ListFilter, OrderPage, OrderRepository, PlaceOutcome, RepositoryError, TransitionOutcome,
};
use order_memory::{MemoryAdapters, MemoryOrderRepository, QueueConfig, SystemClock};
use order_payment_sim::{MemoryLedger, SimConfig, SimulatedGateway};

/// Yields to the scheduler around every call so that concurrent requests really
/// interleave inside the create path (memory ports never yield on their own).
struct Yielding(Arc<MemoryOrderRepository>);

#[async_trait]
impl OrderRepository for Yielding {
    async fn place(
        &self,
        d: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        tokio::task::yield_now().await;
        let r = self.0.place(d, now).await;
        tokio::task::yield_now().await;
        r
    }
    async fn transition(
        &self,
        id: OrderId,
        c: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        tokio::task::yield_now().await;
        self.0.transition(id, c, now).await
    }
    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError> {
        self.0.get(id).await
    }
    async fn find_by_key(
        &self,
        u: UserId,
        k: &IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError> {
        tokio::task::yield_now().await;
        self.0.find_by_key(u, k).await
    }
    async fn list_by_user(&self, u: UserId, f: ListFilter) -> Result<OrderPage, RepositoryError> {
        self.0.list_by_user(u, f).await
    }
    async fn products(&self) -> Result<Vec<Product>, RepositoryError> {
        self.0.products().await
    }
}

async fn race_for_stock(mode: LockMode) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let adapters = MemoryAdapters::new(clock.clone(), QueueConfig::default());
    let users: Vec<UserId> = (0..4).map(|_| adapters.repository.add_user()).collect();
    let product = adapters
        .repository
        .add_product("scarce", Money::parse("10.00").unwrap(), 50);
    let gateway = Arc::new(
        SimulatedGateway::new(SimConfig::default(), Arc::new(MemoryLedger::new()), clock).unwrap(),
    );
    let mut ports = adapters.ports(gateway, Arc::new(SeededRandom::new(3)));
    ports.repository = Arc::new(Yielding(adapters.repository.clone()));
    let config = ServiceConfig {
        lock: LockPolicy {
            mode,
            ..LockPolicy::default()
        },
        ..ServiceConfig::default()
    };
    let service = Arc::new(OrderService::new(ports, config).unwrap());

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let service = service.clone();
            let user = users[i % users.len()];
            tokio::spawn(async move {
                service
                    .create_order(CreateOrderRequest {
                        user,
                        items: vec![RequestedItem {
                            product_id: product.get() as i64,
                            quantity: 1,
                        }],
                        idempotency_key: format!("race-{i}"),
                    })
                    .await
            })
        })
        .collect();
    let (mut accepted, mut short, mut other) = (0, 0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(c) if !c.replayed => accepted += 1,
            Err(CreateOrderError::InsufficientStock { available: 0, .. }) => short += 1,
            r => other.push(format!("{r:?}")),
        }
    }
    assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    assert_eq!((accepted, short), (50, 150));
    assert_eq!(adapters.repository.stock(product), Some(0));
    assert_eq!(adapters.repository.orders().len(), 50);
    assert_eq!(adapters.queue.dead_letters().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_orders_for_fifty_units_accept_exactly_fifty_with_distributed_locks()
{
    tokio::time::timeout(
        Duration::from_secs(60),
        race_for_stock(LockMode::Distributed),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_orders_for_fifty_units_accept_exactly_fifty_on_the_store_guard_alone()
 {
    tokio::time::timeout(Duration::from_secs(60), race_for_stock(LockMode::None))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_requests_with_one_key_create_one_order_and_the_rest_replay() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let adapters = MemoryAdapters::new(clock.clone(), QueueConfig::default());
    let user = adapters.repository.add_user();
    let product = adapters
        .repository
        .add_product("p", Money::parse("1.00").unwrap(), 100);
    let gateway = Arc::new(
        SimulatedGateway::new(SimConfig::default(), Arc::new(MemoryLedger::new()), clock).unwrap(),
    );
    let mut ports = adapters.ports(gateway, Arc::new(SeededRandom::new(4)));
    ports.repository = Arc::new(Yielding(adapters.repository.clone()));
    let service = Arc::new(OrderService::new(ports, ServiceConfig::default()).unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .create_order(CreateOrderRequest {
                        user,
                        items: vec![RequestedItem {
                            product_id: product.get() as i64,
                            quantity: 2,
                        }],
                        idempotency_key: "same-key".into(),
                    })
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for t in tasks {
        let c = t.await.unwrap().unwrap();
        created += usize::from(!c.replayed);
        ids.push(c.order.id());
    }
    ids.dedup();
    assert_eq!((created, ids.len()), (1, 1));
    assert_eq!(adapters.repository.stock(product), Some(98));
}
