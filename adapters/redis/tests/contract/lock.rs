//! Every check of order-core's lock contract against [`RedisLock`], each under its own
//! key prefix, deleted when the check ends ([`Cleanup`]). (The memory lock runs the same
//! suite in `order-memory`.)

use std::time::Duration;

use async_trait::async_trait;
use order_core::ports::DistributedLock;
use order_core::testing::contract::lock::LockFixture;
use order_redis::{RedisConnection, RedisLock};

use crate::{Cleanup, connect, redis_url, test_config};

order_core::lock_contract!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    redis_lock_fixture
);

struct RedisLockFixture {
    connection: RedisConnection,
    lock: RedisLock,
    _cleanup: Cleanup,
}

async fn redis_lock_fixture() -> RedisLockFixture {
    let config = test_config(redis_url(), "lock");
    let cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
    let lock = RedisLock::new(&connection)
        .await
        .expect("lock setup failed");
    RedisLockFixture {
        connection,
        lock,
        _cleanup: cleanup,
    }
}

#[async_trait]
impl LockFixture for RedisLockFixture {
    fn lock(&self) -> &dyn DistributedLock {
        &self.lock
    }
    fn ttl(&self) -> Duration {
        Duration::from_millis(200)
    }
    fn slack(&self) -> Duration {
        Duration::from_millis(100)
    }
    async fn advance(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    async fn teardown(&self) {
        self.connection.close().await;
    }
}
