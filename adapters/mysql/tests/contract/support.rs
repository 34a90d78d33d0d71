//! The repository contract's [`RepositoryFixture`] for MySQL, and small helpers shared
//! by the suites.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use order_core::domain::{OrderDraft, RestockError};
use order_core::ports::OrderRepository;
use order_core::testing::contract::repository::RepositoryFixture;
use order_core::{IdempotencyKey, Money, ProductId, Quantity, Timestamp, UserId};
use order_mysql::{MySqlOrderRepository, MySqlPool, MySqlRestockError};

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
