//! Every check of order-core's five contract suites against the memory adapters — the
//! reference the MySQL and Redis adapters are held to — with no server: time-dependent
//! checks run on a [`ManualClock`], so none of them sleeps.
//!
//! One line per suite: the checks come from `order_core::testing::contract`, so a check
//! added there runs here without an edit.

// A test binary reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use order_core::app::Backoff;
use order_core::domain::RestockError;
use order_core::ports::{
    AccountStore, DistributedLock, EventPublisher, JobQueue, OrderEvent, OrderRepository,
};
use order_core::testing::contract::accounts::AccountsFixture;
use order_core::testing::contract::events::EventsFixture;
use order_core::testing::contract::lock::LockFixture;
use order_core::testing::contract::queue::{QueueContractConfig, QueueFixture};
use order_core::testing::contract::repository::RepositoryFixture;
use order_core::{Money, ProductId, Timestamp, UserId};
use order_memory::{
    ManualClock, MemoryAccounts, MemoryEventBus, MemoryLock, MemoryOrderRepository, MemoryQueue,
    QueueConfig,
};
use tokio::sync::{Mutex, broadcast};

mod repository {
    order_core::repository_contract!(super::repository_fixture);
}

mod lock {
    order_core::lock_contract!(super::lock_fixture);
}

mod queue {
    order_core::queue_contract!(super::queue_fixture);
}

mod events {
    // The fixture may also be an expression (evaluated inside each async test).
    order_core::events_contract!(|| super::events_fixture().await);
}

mod accounts {
    order_core::accounts_contract!(super::accounts_fixture);
}

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)))
}

// ---------------------------------------------------------------------------------------
// Repository
// ---------------------------------------------------------------------------------------

struct MemoryRepositoryFixture {
    repo: Arc<MemoryOrderRepository>,
}

async fn repository_fixture() -> MemoryRepositoryFixture {
    MemoryRepositoryFixture {
        repo: Arc::new(MemoryOrderRepository::new()),
    }
}

#[async_trait]
impl RepositoryFixture for MemoryRepositoryFixture {
    fn repository(&self) -> Arc<dyn OrderRepository> {
        self.repo.clone()
    }

    async fn add_user(&self) -> UserId {
        self.repo.add_user()
    }

    async fn add_product(&self, price: Money, stock: u64) -> ProductId {
        self.repo.add_product("Contract product", price, stock)
    }

    async fn stock(&self, product: ProductId) -> u64 {
        self.repo
            .stock(product)
            .unwrap_or_else(|| panic!("product {product} does not exist"))
    }

    async fn restock(&self, product: ProductId, units: u64) -> Result<(), RestockError> {
        self.repo.restock(product, units)
    }
}

// ---------------------------------------------------------------------------------------
// Lock
// ---------------------------------------------------------------------------------------

struct MemoryLockFixture {
    clock: Arc<ManualClock>,
    lock: MemoryLock,
}

async fn lock_fixture() -> MemoryLockFixture {
    let clock = manual_clock();
    MemoryLockFixture {
        lock: MemoryLock::new(clock.clone()),
        clock,
    }
}

#[async_trait]
impl LockFixture for MemoryLockFixture {
    fn lock(&self) -> &dyn DistributedLock {
        &self.lock
    }
    fn ttl(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn slack(&self) -> Duration {
        Duration::from_millis(1)
    }
    async fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

// ---------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------

const QUEUE: QueueConfig = QueueConfig {
    visibility_timeout: Duration::from_secs(30),
    max_attempts: 3,
    retry_backoff: Backoff::fixed_schedule(Duration::from_secs(1), Duration::from_secs(600)),
    capacity: 16,
    dead_letter_capacity: 16,
};

struct MemoryQueueFixture {
    clock: Arc<ManualClock>,
    queue: MemoryQueue,
}

async fn queue_fixture() -> MemoryQueueFixture {
    let clock = manual_clock();
    MemoryQueueFixture {
        queue: MemoryQueue::new(clock.clone(), QUEUE).expect("the queue settings are valid"),
        clock,
    }
}

#[async_trait]
impl QueueFixture for MemoryQueueFixture {
    fn queue(&self) -> &dyn JobQueue {
        &self.queue
    }
    fn config(&self) -> QueueContractConfig {
        QueueContractConfig {
            visibility_timeout: QUEUE.visibility_timeout,
            max_attempts: QUEUE.max_attempts,
            retry_backoff: QUEUE.retry_backoff,
            capacity: QUEUE.capacity,
        }
    }
    fn slack(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn reserve_wait(&self) -> Duration {
        Duration::ZERO
    }
    async fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

struct MemoryEventsFixture {
    bus: MemoryEventBus,
    receiver: Mutex<broadcast::Receiver<OrderEvent>>,
}

async fn events_fixture() -> MemoryEventsFixture {
    let bus = MemoryEventBus::new();
    let receiver = Mutex::new(bus.subscribe());
    MemoryEventsFixture { bus, receiver }
}

#[async_trait]
impl EventsFixture for MemoryEventsFixture {
    fn publisher(&self) -> &dyn EventPublisher {
        &self.bus
    }
    async fn next_event(&self, timeout: Duration) -> Option<OrderEvent> {
        let mut receiver = self.receiver.lock().await;
        match tokio::time::timeout(timeout, receiver.recv()).await {
            Ok(Ok(event)) => Some(event),
            Ok(Err(e)) => panic!("the memory bus receiver failed: {e}"),
            Err(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------

/// The accounts store over the repository its accounts are users of.
struct MemoryAccountsFixture {
    repo: Arc<MemoryOrderRepository>,
    accounts: MemoryAccounts,
}

async fn accounts_fixture() -> MemoryAccountsFixture {
    let repo = Arc::new(MemoryOrderRepository::new());
    MemoryAccountsFixture {
        accounts: MemoryAccounts::new(repo.clone()),
        repo,
    }
}

#[async_trait]
impl AccountsFixture for MemoryAccountsFixture {
    fn accounts(&self) -> &dyn AccountStore {
        &self.accounts
    }
    fn repository(&self) -> Arc<dyn OrderRepository> {
        self.repo.clone()
    }
    async fn add_product(&self, price: Money, stock: u64) -> ProductId {
        self.repo.add_product("Contract product", price, stock)
    }
}
