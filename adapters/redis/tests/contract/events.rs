//! Every check of order-core's events contract against [`RedisEvents`] and
//! [`RedisEventSubscriber`], each on its own channel. (The memory bus runs the same suite
//! in `order-memory`.)

use std::time::Duration;

use async_trait::async_trait;
use order_core::ports::{EventPublisher, OrderEvent};
use order_core::testing::contract::events::EventsFixture;
use order_redis::{RedisConnection, RedisEventSubscriber, RedisEvents};
use tokio::sync::Mutex;

use crate::{connect, redis_url, test_config};

order_core::events_contract!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    redis_events_fixture
);

struct RedisEventsFixture {
    connection: RedisConnection,
    publisher: RedisEvents,
    subscriber: Mutex<RedisEventSubscriber>,
}

async fn redis_events_fixture() -> RedisEventsFixture {
    let config = test_config(redis_url(), "events");
    let subscriber = RedisEventSubscriber::subscribe(&config)
        .await
        .unwrap_or_else(|e| panic!("Redis subscriber cannot connect: {e}"));
    let connection = connect(config).await;
    RedisEventsFixture {
        publisher: RedisEvents::new(&connection),
        connection,
        subscriber: Mutex::new(subscriber),
    }
}

#[async_trait]
impl EventsFixture for RedisEventsFixture {
    fn publisher(&self) -> &dyn EventPublisher {
        &self.publisher
    }
    async fn next_event(&self, timeout: Duration) -> Option<OrderEvent> {
        let mut subscriber = self.subscriber.lock().await;
        match tokio::time::timeout(timeout, subscriber.recv()).await {
            Ok(Ok(event)) => Some(event),
            Ok(Err(e)) => panic!("the Redis subscriber failed: {e}"),
            Err(_) => None,
        }
    }

    async fn teardown(&self) {
        self.connection.close().await;
    }
}
