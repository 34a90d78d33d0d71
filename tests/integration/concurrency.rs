//! True concurrency on a multi-threaded runtime: many tasks racing for scarce stock.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use order_core::app::{
    CreateOrderError, CreateOrderRequest, LockMode, LockPolicy, OrderService, SeededRandom,
    ServiceConfig,
};
use order_core::domain::{
    IdempotencyKey, Money, Order, OrderDraft, OrderId, Product, StatusChange, Timestamp, UserId,
};
use order_core::ports::{
    Clock, ListFilter, OrderPage, OrderRepository, PlaceOutcome, RepositoryError, StrandedQuery,
    TransitionOutcome,
};
use order_memory::{MemoryAdapters, MemoryOrderRepository, QueueConfig, SystemClock};
use order_payment_sim::{MemoryLedger, SimConfig, SimulatedGateway};

use crate::support::all_at_once;

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
    async fn events_after(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<order_core::ports::EventPage, RepositoryError> {
        self.0.events_after(user, after, limit).await
    }
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, RepositoryError> {
        self.0.prune_events(before, limit).await
    }

    async fn claim_stranded(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, RepositoryError> {
        self.0.claim_stranded(query, now).await
    }
}

/// The embedded engine with its repository wrapped in [`Yielding`], under `mode`.
fn yielding_engine(mode: LockMode, seed: u64) -> (MemoryAdapters, Arc<OrderService>) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let adapters = MemoryAdapters::new(clock.clone(), QueueConfig::default()).unwrap();
    let gateway = Arc::new(
        SimulatedGateway::new(SimConfig::default(), Arc::new(MemoryLedger::new()), clock).unwrap(),
    );
    let mut ports = adapters.ports(gateway, Arc::new(SeededRandom::new(seed)));
    ports.repository = Arc::new(Yielding(adapters.repository.clone()));
    let config = ServiceConfig {
        lock: LockPolicy {
            mode,
            ..LockPolicy::default()
        },
        ..ServiceConfig::default()
    };
    (
        adapters,
        Arc::new(OrderService::new(ports, config).unwrap()),
    )
}

async fn race_for_stock(mode: LockMode) {
    let (adapters, service) = yielding_engine(mode, 3);
    let users: Vec<UserId> = (0..4).map(|_| adapters.repository.add_user()).collect();
    let product = adapters
        .repository
        .add_product("scarce", Money::parse("10.00").unwrap(), 50);
    let results = all_at_once(&[&service], 200, |i| {
        CreateOrderRequest::new(users[i % users.len()], [(product, 1)], format!("race-{i}"))
    })
    .await;
    let (mut accepted, mut short, mut other) = (0, 0, Vec::new());
    for result in results {
        match result {
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
    let (adapters, service) = yielding_engine(LockMode::Distributed, 4);
    let user = adapters.repository.add_user();
    let product = adapters
        .repository
        .add_product("p", Money::parse("1.00").unwrap(), 100);
    let results = all_at_once(&[&service], 20, |_| {
        CreateOrderRequest::new(user, [(product, 2)], "same-key")
    })
    .await;
    let mut ids = HashSet::new();
    let mut created = 0;
    for result in results {
        let c = result.unwrap();
        created += usize::from(!c.replayed);
        ids.insert(c.order.id());
    }
    assert_eq!((created, ids.len()), (1, 1));
    assert_eq!(adapters.repository.stock(product), Some(98));
}
