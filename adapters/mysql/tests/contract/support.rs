//! The repository contract's [`RepositoryFixture`] for MySQL, and small helpers shared
//! by the suites.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use order_core::domain::{OrderDraft, RestockError};
use order_core::ports::OrderRepository;
use order_core::testing::contract::repository::RepositoryFixture;
use order_core::{IdempotencyKey, Money, ProductId, Quantity, Timestamp, UserId};
use order_mysql::{CoalesceConfig, MySqlOrderRepository, MySqlPool, MySqlRestockError};
use sqlx::Row;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

/// The MySQL repository over a fresh test database.
pub struct MySqlFixture {
    pub repo: Arc<MySqlOrderRepository>,
    users: AtomicU64,
}

impl MySqlFixture {
    pub fn new(pool: MySqlPool) -> Self {
        Self::from_repository(MySqlOrderRepository::new(pool))
    }

    pub fn from_repository(repo: MySqlOrderRepository) -> Self {
        Self {
            repo: Arc::new(repo),
            users: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl RepositoryFixture for MySqlFixture {
    fn repository(&self) -> Arc<dyn OrderRepository> {
        self.repo.clone()
    }

    async fn add_user(&self) -> UserId {
        let n = self.users.fetch_add(1, Ordering::Relaxed);
        self.repo
            .add_user(
                &format!("User {n}"),
                &format!("user{n}@example.test"),
                "$argon2id$test",
            )
            .await
            .expect("add_user")
    }

    async fn add_product(&self, price: Money, stock: u64) -> ProductId {
        self.repo
            .add_product("Contract product", price, stock)
            .await
            .expect("add_product")
    }

    async fn stock(&self, product: ProductId) -> u64 {
        self.repo
            .stock(product)
            .await
            .expect("stock")
            .unwrap_or_else(|| panic!("product {product} does not exist"))
    }

    async fn restock(&self, product: ProductId, units: u64) -> Result<(), RestockError> {
        match self.repo.restock(product, units).await {
            Ok(()) => Ok(()),
            Err(MySqlRestockError::Refused(refused)) => Err(refused),
            Err(MySqlRestockError::Store(e)) => panic!("restock: store failed: {e}"),
        }
    }
}

pub fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_760_000_000_000 + ms)
}

pub fn money(text: &str) -> Money {
    Money::parse(text).expect("money")
}

pub fn draft(user: UserId, key: &str, items: &[(ProductId, u32)]) -> OrderDraft {
    OrderDraft::new(
        user,
        items
            .iter()
            .map(|(p, q)| (*p, Quantity::new(i64::from(*q)).expect("quantity"))),
        IdempotencyKey::new(key).expect("key"),
    )
    .expect("draft")
}

/// A pool of at most `max` connections to the test database.
pub async fn pool(options: &MySqlConnectOptions, max: u32) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(max)
        .connect_with(options.clone())
        .await
        .expect("test pool")
}

/// Waits until at least `n` transactions on this test's database are blocked on a row
/// lock. InnoDB refreshes `information_schema.innodb_trx` at most every 100 ms.
pub async fn until_transactions_wait_for_locks(pool: &MySqlPool, n: i64) {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.innodb_trx t \
             JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
             WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()",
        )
        .fetch_one(pool)
        .await
        .expect("innodb_trx");
        if waiting >= n {
            return;
        }
    }
    panic!("no transaction ever waited for the row lock");
}

/// A repository that coalesces with a long `max_wait`, so that only the end of the
/// running placement flushes a queue (the tests decide when that is).
pub fn patient(pool: &MySqlPool) -> Arc<MySqlOrderRepository> {
    Arc::new(
        MySqlOrderRepository::new(pool.clone())
            .with_coalescing(CoalesceConfig::new(64, Duration::from_secs(1)).expect("config")),
    )
}

/// The session counters of the pool's one connection, `Com_*` only.
pub async fn counters(pool: &MySqlPool) -> BTreeMap<String, u64> {
    let rows = sqlx::query("SHOW SESSION STATUS LIKE 'Com\\_%'")
        .fetch_all(pool)
        .await
        .expect("status");
    rows.into_iter()
        .map(|r| {
            let name: String = r.try_get(0).expect("name");
            let value: String = r.try_get(1).expect("value");
            (name, value.parse().expect("number"))
        })
        .collect()
}
