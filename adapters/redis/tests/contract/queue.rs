//! Every check of order-core's queue contract against [`RedisQueue`], each under its own
//! key prefix, deleted when the check ends ([`Cleanup`]). (The memory queue runs the same
//! suite in `order-memory`.)

use std::time::Duration;

use async_trait::async_trait;
use order_core::ports::JobQueue;
use order_core::testing::contract::queue::{QueueContractConfig, QueueFixture};
use order_redis::{RedisConnection, RedisQueue};

use crate::{Cleanup, connect, redis_url, test_config};

order_core::queue_contract!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    redis_queue_fixture
);

struct RedisQueueFixture {
    connection: RedisConnection,
    queue: RedisQueue,
    _cleanup: Cleanup,
}

async fn redis_queue_fixture() -> RedisQueueFixture {
    let config = test_config(redis_url(), "queue");
    let cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
    let queue = RedisQueue::new(&connection)
        .await
        .expect("queue setup failed");
    RedisQueueFixture {
        connection,
        queue,
        _cleanup: cleanup,
    }
}

#[async_trait]
impl QueueFixture for RedisQueueFixture {
    fn queue(&self) -> &dyn JobQueue {
        &self.queue
    }
    fn config(&self) -> QueueContractConfig {
        let q = &self.connection.config().queue;
        QueueContractConfig {
            visibility_timeout: q.visibility_timeout,
            max_attempts: q.max_attempts,
            retry_backoff: q.retry_backoff,
            capacity: q.max_len,
        }
    }
    fn slack(&self) -> Duration {
        Duration::from_millis(150)
    }
    fn reserve_wait(&self) -> Duration {
        Duration::from_secs(2)
    }
    async fn advance(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Closes the connections; the keys go with the fixture's [`Cleanup`].
    async fn teardown(&self) {
        self.queue.close().await;
        self.connection.close().await;
    }
}
