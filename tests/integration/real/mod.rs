//! Two independent `OrderService` instances — separate MySQL pools, separate Redis
//! connections, as two API processes would have — on the machine's real MariaDB/MySQL and
//! Redis. Each test gets a fresh database (`#[sqlx::test]`) and a unique Redis key prefix.

mod races;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use order_core::app::{LockMode, LockPolicy, OrderService, Ports, SeededRandom, ServiceConfig};
use order_core::domain::{Money, ProductId, UserId};
use order_core::ports::{Clock, PaymentGateway};
use order_memory::SystemClock;
use order_mysql::{MySqlOrderRepository, MySqlPaymentLedger};
use order_payment_sim::{SimConfig, SimulatedGateway};
use order_redis::{RedisConfig, RedisConnection, RedisEvents, RedisLock, RedisQueue};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

/// The Redis URL the suite runs against (`tests/run` always sets it).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or concurrent run) uses.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "it:{test}:{}:{nanos:x}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One "process": its own pool and Redis connection, the shared database and prefix.
pub struct Node {
    pub service: Arc<OrderService>,
    pub repository: Arc<MySqlOrderRepository>,
    _redis: RedisConnection,
}

impl Node {
    pub async fn start(connect: &MySqlConnectOptions, prefix: &str, mode: LockMode) -> Node {
        let pool = MySqlPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await
            .expect("MySQL pool (is DATABASE_URL reachable?)");
        let repository = Arc::new(MySqlOrderRepository::new(pool.clone()));
        let redis = RedisConnection::connect(RedisConfig::new(redis_url()).with_prefix(prefix))
            .await
            .expect("Redis connection (is REDIS_URL reachable?)");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let sim = SimConfig {
            min_delay: Duration::ZERO,
            max_delay: Duration::from_millis(2),
            seed: 7,
            ..SimConfig::default()
        };
        let payments: Arc<dyn PaymentGateway> = Arc::new(
            SimulatedGateway::new(sim, Arc::new(MySqlPaymentLedger::new(pool)), clock.clone())
                .unwrap(),
        );
        let ports = Ports {
            repository: repository.clone(),
            lock: Arc::new(RedisLock::new(&redis).await.unwrap()),
            payments,
            events: Arc::new(RedisEvents::new(&redis)),
            queue: Arc::new(RedisQueue::new(&redis).await.unwrap()),
            clock,
            rng: Arc::new(SeededRandom::from_entropy()),
        };
        let config = ServiceConfig {
            lock: LockPolicy {
                mode,
                ..LockPolicy::default()
            },
            ..ServiceConfig::default()
        };
        Node {
            service: Arc::new(OrderService::new(ports, config).unwrap()),
            repository,
            _redis: redis,
        }
    }

    /// A user and one product per entry of `stocks` (price 1.00, that stock).
    pub async fn seed(&self, stocks: &[u64]) -> (UserId, Vec<ProductId>) {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let user = self
            .repository
            .add_user("tester", &format!("tester{n}@example.test"), "!")
            .await
            .unwrap();
        let mut products = Vec::new();
        for (i, stock) in stocks.iter().enumerate() {
            let price = Money::from_cents(100).unwrap();
            products.push(
                self.repository
                    .add_product(&format!("p{i}"), price, *stock)
                    .await
                    .unwrap(),
            );
        }
        (user, products)
    }

    /// Two nodes on one database and one prefix.
    pub async fn pair(connect: &MySqlConnectOptions, test: &str, mode: LockMode) -> (Node, Node) {
        let prefix = unique_prefix(test);
        (
            Node::start(connect, &prefix, mode).await,
            Node::start(connect, &prefix, mode).await,
        )
    }
}
