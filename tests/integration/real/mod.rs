//! Two independent `OrderService` instances — separate MySQL pools, separate Redis
//! connections, as two API processes would have — on the machine's real MariaDB/MySQL and
//! Redis. Each test gets a fresh database (`#[sqlx::test]`) and a unique Redis key prefix.

mod delivery;
pub(crate) mod embedder_program;
mod races;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use order_core::app::{LockMode, LockPolicy, OrderService, ServiceConfig};
use order_core::domain::{Money, ProductId, UserId};
use order_engine::Engine;
use order_mysql::MySqlOrderRepository;
use order_payment_sim::SimConfig;
use order_redis::{RedisConfig, RedisConnection};
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

/// Deletes every Redis key under `prefix` when dropped — when the test ends, passing or
/// failing — so the shared server is left as it was found.
pub struct Cleanup {
    prefix: String,
}

impl Cleanup {
    pub fn new(prefix: &str) -> Cleanup {
        Cleanup {
            prefix: prefix.to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        // Drop cannot await, and the test's runtime may be shutting down: use a thread
        // with a runtime of its own.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let redis =
                    RedisConnection::connect(RedisConfig::new(redis_url()).with_prefix(prefix))
                        .await
                        .map_err(|e| e.to_string())?;
                redis
                    .wait_connected(Duration::from_secs(5))
                    .await
                    .map_err(|e| e.to_string())?;
                let deleted = redis.delete_prefix().await.map_err(|e| e.to_string());
                redis.close().await;
                deleted
            })
        })
        .join();
        let failure = match outcome {
            Ok(Ok(_deleted)) => return,
            Ok(Err(e)) => e,
            Err(_) => "the cleanup thread panicked".to_owned(),
        };
        if !std::thread::panicking() {
            panic!(
                "cannot delete the Redis keys under {:?}: {failure}",
                self.prefix
            );
        }
    }
}

/// One "process": its own pool and Redis connection, the shared database and prefix.
pub struct Node {
    pub service: Arc<OrderService>,
    pub repository: Arc<MySqlOrderRepository>,
    _cleanup: Cleanup,
}

impl Node {
    pub async fn start(connect: &MySqlConnectOptions, prefix: &str, mode: LockMode) -> Node {
        let pool = MySqlPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await
            .expect("MySQL pool (is DATABASE_URL reachable?)");
        let redis = RedisConnection::connect(RedisConfig::new(redis_url()).with_prefix(prefix))
            .await
            .expect("Redis connection (is REDIS_URL reachable?)");
        let sim = SimConfig {
            min_delay: Duration::ZERO,
            max_delay: Duration::from_millis(2),
            seed: 7,
            ..SimConfig::default()
        };
        let config = ServiceConfig {
            lock: LockPolicy {
                mode,
                ..LockPolicy::default()
            },
            ..ServiceConfig::default()
        };
        let engine = Engine::builder()
            .mysql(pool)
            .redis(&redis)
            .simulated_payments(sim)
            .config(config)
            .build()
            .await
            .unwrap();
        Node {
            service: engine.service().clone(),
            repository: engine.mysql().unwrap().clone(),
            _cleanup: Cleanup::new(prefix),
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
