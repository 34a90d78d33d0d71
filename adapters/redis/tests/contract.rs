//! The one test binary of `order-redis`: every contract check of `order_core::testing::
//! contract::{lock, queue, events}` against the Redis adapters AND the memory adapters
//! (so both are held to the same promises), plus Redis-only tests: an event burst,
//! racing lock holders, a flush under load, redelivery across consumers, the dead
//! letter's content and an unreachable server.
//!
//! Needs a Redis server: `REDIS_URL` (default `redis://127.0.0.1:6379`). When it is
//! unreachable the Redis tests FAIL, they never skip. Every test works under a unique key
//! prefix and channel, so tests run in parallel and never see each other's data. The one
//! test that wipes data uses `FLUSHDB` on a separate logical database (`REDIS_FLUSH_DB`,
//! default 9) rather than `FLUSHALL`, which would wipe the keys of every test running
//! beside it; it also runs `SCRIPT FLUSH`, which is server-wide like a restart — harmless
//! to the parallel tests precisely because every adapter reloads its scripts on
//! `NOSCRIPT`. A real restart and a real `FLUSHALL` run on a private `redis-server`
//! (module `restart`).

// A test binary reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "contract/restart.rs"]
mod restart;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use order_core::domain::{Money, OrderId, Timestamp, UserId};
use order_core::ports::{
    DistributedLock, EventPublisher, Job, JobQueue, LockToken, NackOutcome, OrderEvent,
    OrderEventKind, QueueStats,
};
use order_core::testing::contract::events::EventsFixture;
use order_core::testing::contract::lock::LockFixture;
use order_core::testing::contract::queue::{QueueContractConfig, QueueFixture};
use order_core::testing::contract::{events, lock, queue};
use order_memory::{ManualClock, MemoryEventBus, MemoryLock, MemoryQueue, QueueConfig};
use order_redis::{
    RedisConfig, RedisConnection, RedisEventSubscriber, RedisEvents, RedisLock, RedisQueue,
};
use tokio::sync::{Mutex, broadcast};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The URL of the logical database the flush test may wipe.
fn flush_db_url() -> String {
    let db = std::env::var("REDIS_FLUSH_DB").unwrap_or_else(|_| "9".to_owned());
    format!("{}/{db}", redis_url().trim_end_matches('/'))
}

/// A prefix no other test (in this run or a concurrent one) uses.
fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("test:{}:{n}:{nanos:x}:{test}:", std::process::id())
}

/// Small timings, so time-dependent checks run in about a second against a real server.
fn test_config(url: String, test: &str) -> RedisConfig {
    let mut config = RedisConfig::new(url).with_prefix(unique_prefix(test));
    config.pool_size = 2;
    config.queue.consumer = format!("{test}-consumer");
    config.queue.visibility_timeout = Duration::from_millis(300);
    config.queue.max_attempts = 3;
    config.queue.retry_backoff = Duration::from_millis(200);
    config.queue.max_len = 16;
    config.queue.poll_interval = Duration::from_millis(50);
    config.queue.blocking_connections = 1;
    config
}

async fn connect(config: RedisConfig) -> RedisConnection {
    let url = config.url.clone();
    match RedisConnection::connect(config).await {
        Ok(c) => c,
        Err(e) => panic!("Redis at {url} is unreachable ({e}); start it or set REDIS_URL"),
    }
}

/// A plain fred client for what the adapters never do (FLUSHDB, reading raw keys).
async fn raw_client(url: &str) -> Client {
    let config = Config::from_url(url).expect("REDIS_URL is not a valid Redis URL");
    let client = Builder::from_config(config)
        .build()
        .expect("cannot build a raw client");
    client
        .init()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable ({e})"));
    client
}

/// `FLUSHDB` (fred has no typed call for it).
async fn flushdb(client: &Client) {
    let command =
        fred::types::CustomCommand::new_static("FLUSHDB", fred::types::ClusterHash::Random, false);
    let _: Value = client
        .custom(command, Vec::<Value>::new())
        .await
        .expect("FLUSHDB failed");
}

fn job(n: u64) -> Job {
    Job::ProcessOrder(OrderId::new(n).unwrap())
}

fn paid(n: u64) -> OrderEvent {
    OrderEvent {
        kind: OrderEventKind::Paid,
        order: OrderId::new(n).unwrap(),
        user: UserId::new(1).unwrap(),
        total: Money::from_cents(n).unwrap(),
        at: Timestamp::from_millis(1_700_000_000_000 + n),
    }
}

fn stats(waiting: u64, in_flight: u64, dead: u64) -> QueueStats {
    QueueStats {
        waiting,
        in_flight,
        dead,
    }
}

/// Releases what a fixture holds on the server once a check passed.
#[async_trait]
trait Teardown {
    async fn teardown(&self) {}
}

// ---------------------------------------------------------------------------------------
// Redis fixtures
// ---------------------------------------------------------------------------------------

struct RedisLockFixture {
    connection: RedisConnection,
    lock: RedisLock,
}

async fn redis_lock_fixture() -> RedisLockFixture {
    let connection = connect(test_config(redis_url(), "lock")).await;
    let lock = RedisLock::new(&connection)
        .await
        .expect("lock setup failed");
    RedisLockFixture { connection, lock }
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
}

#[async_trait]
impl Teardown for RedisLockFixture {
    async fn teardown(&self) {
        self.connection.close().await;
    }
}

struct RedisQueueFixture {
    connection: RedisConnection,
    queue: RedisQueue,
}

async fn redis_queue_fixture() -> RedisQueueFixture {
    let connection = connect(test_config(redis_url(), "queue")).await;
    let queue = RedisQueue::new(&connection)
        .await
        .expect("queue setup failed");
    RedisQueueFixture { connection, queue }
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
}

#[async_trait]
impl Teardown for RedisQueueFixture {
    async fn teardown(&self) {
        let keys = self.queue.keys().clone();
        let _: i64 = self
            .connection_raw()
            .await
            .del(vec![keys.stream, keys.retry, keys.dead])
            .await
            .expect("cleanup failed");
        self.queue.close().await;
        self.connection.close().await;
    }
}

impl RedisQueueFixture {
    async fn connection_raw(&self) -> Client {
        raw_client(&self.connection.config().url).await
    }
}

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
}

#[async_trait]
impl Teardown for RedisEventsFixture {
    async fn teardown(&self) {
        self.connection.close().await;
    }
}

// ---------------------------------------------------------------------------------------
// Memory fixtures (the same checks, on a manual clock)
// ---------------------------------------------------------------------------------------

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)))
}

struct MemoryLockFixture {
    clock: Arc<ManualClock>,
    lock: MemoryLock,
}

async fn memory_lock_fixture() -> MemoryLockFixture {
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

impl Teardown for MemoryLockFixture {}

const MEMORY_QUEUE: QueueConfig = QueueConfig {
    visibility_timeout: Duration::from_secs(30),
    max_attempts: 3,
    retry_backoff: Duration::from_secs(1),
    capacity: 16,
};

struct MemoryQueueFixture {
    clock: Arc<ManualClock>,
    queue: MemoryQueue,
}

async fn memory_queue_fixture() -> MemoryQueueFixture {
    let clock = manual_clock();
    MemoryQueueFixture {
        queue: MemoryQueue::new(clock.clone(), MEMORY_QUEUE),
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
            visibility_timeout: MEMORY_QUEUE.visibility_timeout,
            max_attempts: MEMORY_QUEUE.max_attempts,
            retry_backoff: MEMORY_QUEUE.retry_backoff,
            capacity: MEMORY_QUEUE.capacity,
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

impl Teardown for MemoryQueueFixture {}

struct MemoryEventsFixture {
    bus: MemoryEventBus,
    receiver: Mutex<broadcast::Receiver<OrderEvent>>,
}

async fn memory_events_fixture() -> MemoryEventsFixture {
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

impl Teardown for MemoryEventsFixture {}

// ---------------------------------------------------------------------------------------
// Every contract check, against both adapters
// ---------------------------------------------------------------------------------------

/// One test per check: `mod $name { fn $check() { $suite::$check(&fixture) } }`, plus
/// `$name::CHECKS` to prove none was forgotten.
macro_rules! contract_tests {
    ($name:ident, $suite:ident, $fixture:path, [$($check:ident),* $(,)?]) => {
        mod $name {
            use super::*;

            pub const CHECKS: &[&str] = &[$(stringify!($check)),*];

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let fixture = $fixture().await;
                    $suite::$check(&fixture).await;
                    fixture.teardown().await;
                }
            )*
        }
    };
}

macro_rules! lock_checks {
    ($name:ident, $fixture:path) => {
        contract_tests!(
            $name,
            lock,
            $fixture,
            [
                acquire_contend_release,
                release_refuses_a_foreign_token,
                lock_is_held_until_its_ttl,
                expired_lock_can_be_taken_and_the_old_release_is_refused,
            ]
        );
    };
}

macro_rules! queue_checks {
    ($name:ident, $fixture:path) => {
        contract_tests!(
            $name,
            queue,
            $fixture,
            [
                delivers_enqueued_jobs_in_order,
                ack_removes_the_job,
                unacked_job_is_redelivered_after_the_visibility_timeout,
                nack_retries_after_the_backoff,
                dead_letters_after_max_attempts_via_nack,
                dead_letters_after_max_attempts_via_visibility_timeout,
                stale_receipts_are_harmless,
                stats_count_waiting_in_flight_and_dead,
                enqueue_beyond_capacity_is_refused,
            ]
        );
    };
}

macro_rules! events_checks {
    ($name:ident, $fixture:path) => {
        contract_tests!(
            $name,
            events,
            $fixture,
            [
                every_kind_arrives_with_every_field_intact,
                events_arrive_in_publish_order_exactly_once,
            ]
        );
    };
}

lock_checks!(redis_lock_contract, redis_lock_fixture);
lock_checks!(memory_lock_contract, memory_lock_fixture);
queue_checks!(redis_queue_contract, redis_queue_fixture);
queue_checks!(memory_queue_contract, memory_queue_fixture);
events_checks!(redis_events_contract, redis_events_fixture);
events_checks!(memory_events_contract, memory_events_fixture);

#[test]
fn every_contract_check_runs_against_both_adapters() {
    for (suite, ours) in [
        (
            lock::CHECKS,
            [redis_lock_contract::CHECKS, memory_lock_contract::CHECKS],
        ),
        (
            queue::CHECKS,
            [redis_queue_contract::CHECKS, memory_queue_contract::CHECKS],
        ),
        (
            events::CHECKS,
            [
                redis_events_contract::CHECKS,
                memory_events_contract::CHECKS,
            ],
        ),
    ] {
        for run in ours {
            assert_eq!(run, suite, "a contract check is not wired into this binary");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Redis-only tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_fast_as_unavailable() {
    let mut config = RedisConfig::new("redis://127.0.0.1:1");
    config.connect_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let result = RedisConnection::connect(config).await;
    assert!(
        matches!(result, Err(order_redis::ConnectError::Unavailable(_))),
        "connecting to a closed port must be Unavailable, got {result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "connecting must give up within the connect timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_10_000_events_is_received_in_full() {
    const EVENTS: u64 = 10_000;
    const PUBLISHERS: u64 = 8;
    let config = test_config(redis_url(), "burst");
    let mut subscriber = RedisEventSubscriber::subscribe(&config)
        .await
        .expect("subscriber cannot connect");
    let connection = connect(config).await;
    let publisher = RedisEvents::new(&connection);

    let reader = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        while (seen.len() as u64) < EVENTS {
            match tokio::time::timeout(Duration::from_secs(10), subscriber.recv()).await {
                Ok(Ok(event)) => {
                    assert!(
                        seen.insert(event.order.get()),
                        "event {} arrived twice",
                        event.order
                    );
                }
                Ok(Err(e)) => panic!("subscriber failed after {} events: {e}", seen.len()),
                Err(_) => panic!(
                    "only {} of {EVENTS} events arrived (the rest were dropped)",
                    seen.len()
                ),
            }
        }
        subscriber.close().await;
        seen
    });
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let publisher = publisher.clone();
        publishers.push(tokio::spawn(async move {
            let mut n = p + 1;
            while n <= EVENTS {
                publisher.publish(paid(n)).await.expect("publish failed");
                n += PUBLISHERS;
            }
        }));
    }
    for p in publishers {
        p.await.expect("a publisher panicked");
    }
    let seen = reader.await.expect("the reader panicked");
    assert_eq!(
        seen.len() as u64,
        EVENTS,
        "every published event must arrive"
    );
    assert_eq!(seen.first(), Some(&1));
    assert_eq!(seen.last(), Some(&EVENTS));
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_tasks_never_hold_one_lock_together() {
    const TASKS: usize = 64;
    const ROUNDS: usize = 5;
    let connection = connect(test_config(redis_url(), "race")).await;
    let lock = Arc::new(RedisLock::new(&connection).await.expect("lock setup"));
    let holders = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (lock, holders, overlaps) = (lock.clone(), holders.clone(), overlaps.clone());
        tasks.push(tokio::spawn(async move {
            let token = LockToken::new(format!("task-{t}"));
            let mut won = 0;
            let mut tries = 0u32;
            while won < ROUNDS {
                tries += 1;
                assert!(tries < 100_000, "task {t} starved");
                if lock
                    .try_acquire("product:1", &token, Duration::from_secs(10))
                    .await
                    .expect("try_acquire failed")
                {
                    if holders.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::task::yield_now().await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    assert!(
                        lock.release("product:1", &token)
                            .await
                            .expect("release failed"),
                        "the holder's release must delete its lock"
                    );
                    won += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a racing task panicked");
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two tasks held the lock at the same time"
    );
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_and_locks_keep_working_after_the_data_is_flushed() {
    let url = flush_db_url();
    let connection = connect(test_config(url.clone(), "flush")).await;
    let lock = RedisLock::new(&connection).await.expect("lock setup");
    let queue = RedisQueue::new(&connection).await.expect("queue setup");
    let raw = raw_client(&url).await;

    // In use: a reserved job, a held lock, and a reserve blocked waiting for more.
    queue.enqueue(job(1)).await.expect("enqueue");
    let before = queue
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("the enqueued job must be delivered");
    let holder = LockToken::new("before-flush");
    assert!(
        lock.try_acquire("product:1", &holder, Duration::from_secs(30))
            .await
            .expect("try_acquire")
    );
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.reserve(Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Redis loses everything: keys (FLUSHDB on this test's own database) and the script
    // cache (SCRIPT FLUSH), as after a restart without persistence.
    flushdb(&raw).await;
    let _: () = raw.script_flush(false).await.expect("SCRIPT FLUSH");

    // Same adapter objects, no rebuild: the stream, group and scripts come back.
    queue
        .enqueue(job(2))
        .await
        .expect("enqueue after the flush");
    let after = waiting
        .await
        .expect("the waiting reserve panicked")
        .expect("reserve after the flush")
        .expect("the job enqueued after the flush must reach the waiting worker");
    assert_eq!((after.job, after.attempt), (job(2), 1));
    queue.ack(&after).await.expect("ack after the flush");
    queue
        .ack(&before)
        .await
        .expect("acking a delivery lost in the flush must be harmless");
    assert_eq!(
        queue
            .nack(&before, "late")
            .await
            .expect("nack of a lost delivery"),
        NackOutcome::Stale
    );
    assert_eq!(queue.stats().await.expect("stats"), stats(0, 0, 0));

    let other = LockToken::new("after-flush");
    assert!(
        lock.try_acquire("product:1", &other, Duration::from_secs(30))
            .await
            .expect("try_acquire after the flush"),
        "the flushed lock must be free"
    );
    assert!(
        !lock.release("product:1", &holder).await.expect("release"),
        "the pre-flush holder must not release the new lock"
    );
    assert!(
        lock.release("product:1", &other)
            .await
            .expect("release after SCRIPT FLUSH"),
        "the release script must be reloaded after SCRIPT FLUSH"
    );

    // The queue still does its whole job after the flush.
    queue.enqueue(job(3)).await.expect("enqueue");
    let d = queue
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("job 3 must be delivered");
    assert_eq!(
        queue.nack(&d, "boom").await.expect("nack"),
        NackOutcome::Retried(Duration::from_millis(200))
    );
    let d = queue
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("job 3 must come back after its backoff");
    assert_eq!((d.job, d.attempt), (job(3), 2));
    queue.ack(&d).await.expect("ack");

    flushdb(&raw).await;
    let _ = raw.quit().await;
    queue.close().await;
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_never_acked_by_a_dead_worker_is_redelivered_to_another() {
    let config = test_config(redis_url(), "redeliver");
    let mut crashed_config = config.clone();
    crashed_config.queue.consumer = "worker-that-dies".into();
    let mut survivor_config = config;
    survivor_config.queue.consumer = "worker-that-lives".into();

    let crashed_connection = connect(crashed_config).await;
    let crashed = RedisQueue::new(&crashed_connection).await.expect("setup");
    crashed.enqueue(job(42)).await.expect("enqueue");
    let lost = crashed
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("the job must be delivered");
    assert_eq!(lost.attempt, 1);
    // The worker dies holding the job: its connections go, nothing is acked.
    crashed.close().await;
    crashed_connection.close().await;

    let survivor_connection = connect(survivor_config).await;
    let survivor = RedisQueue::new(&survivor_connection).await.expect("setup");
    assert_eq!(
        survivor.reserve(Duration::ZERO).await.expect("reserve"),
        None,
        "the job must stay invisible during its visibility timeout"
    );
    assert_eq!(survivor.stats().await.expect("stats"), stats(0, 1, 0));
    let again = survivor
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("the dead worker's job must be redelivered after the visibility timeout");
    assert_eq!((again.job, again.attempt), (job(42), 2));
    survivor.ack(&again).await.expect("ack");
    assert_eq!(survivor.stats().await.expect("stats"), stats(0, 0, 0));

    let keys = survivor.keys().clone();
    let raw = raw_client(&survivor_connection.config().url).await;
    let _: i64 = raw
        .del(vec![keys.stream, keys.retry, keys.dead])
        .await
        .expect("cleanup");
    let _ = raw.quit().await;
    survivor.close().await;
    survivor_connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_lands_in_the_dead_letter_after_its_last_attempt() {
    let connection = connect(test_config(redis_url(), "dead")).await;
    let queue = RedisQueue::new(&connection).await.expect("setup");
    queue.enqueue(job(13)).await.expect("enqueue");
    queue.enqueue(job(14)).await.expect("enqueue");

    // A worker loop whose handler fails for order 13 and succeeds for the rest.
    let mut attempts_of_13 = Vec::new();
    let mut done = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let Some(d) = queue
            .reserve(Duration::from_millis(500))
            .await
            .expect("reserve")
        else {
            if queue.stats().await.expect("stats") == stats(0, 0, 1) {
                break;
            }
            continue;
        };
        if d.job == job(13) {
            attempts_of_13.push(d.attempt);
            match queue
                .nack(&d, "card processor on fire")
                .await
                .expect("nack")
            {
                NackOutcome::Retried(delay) => {
                    assert_eq!(delay, Duration::from_millis(200) * 2u32.pow(d.attempt - 1));
                }
                NackOutcome::DeadLettered => assert_eq!(d.attempt, 3),
                NackOutcome::Stale => panic!("the holder's own nack was reported stale"),
            }
        } else {
            done.push(d.job);
            queue.ack(&d).await.expect("ack");
        }
    }
    assert_eq!(
        attempts_of_13,
        vec![1, 2, 3],
        "three attempts, then the dead letter"
    );
    assert_eq!(done, vec![job(14)], "the healthy job is processed once");
    assert_eq!(queue.stats().await.expect("stats"), stats(0, 0, 1));

    // The dead letter keeps what an operator needs: the job, its attempts, the error.
    let keys = queue.keys().clone();
    let raw = raw_client(&connection.config().url).await;
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = raw
        .xrange_values(&keys.dead, "-", "+", None)
        .await
        .expect("XRANGE of the dead letter");
    assert_eq!(entries.len(), 1, "one dead letter");
    let fields = &entries[0].1;
    assert_eq!(
        fields.get("job").map(String::as_str),
        Some("process_order:13")
    );
    assert_eq!(fields.get("attempts").map(String::as_str), Some("3"));
    assert_eq!(
        fields.get("error").map(String::as_str),
        Some("card processor on fire")
    );
    let _: i64 = raw
        .del(vec![keys.stream, keys.retry, keys.dead])
        .await
        .expect("cleanup");
    let _ = raw.quit().await;
    queue.close().await;
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_subscribes_again_after_its_connection_is_killed() {
    let config = test_config(redis_url(), "resubscribe");
    let mut subscriber = RedisEventSubscriber::subscribe(&config)
        .await
        .expect("subscriber cannot connect");
    let connection = connect(config).await;
    let publisher = RedisEvents::new(&connection);
    publisher.publish(paid(1)).await.expect("publish");
    let first = tokio::time::timeout(Duration::from_secs(5), subscriber.recv())
        .await
        .expect("no event before the kill")
        .expect("subscriber failed");
    assert_eq!(first, paid(1));

    // The server drops the subscriber's connection (as a restart or a network cut would).
    let raw = raw_client(&redis_url()).await;
    let list: String = raw
        .custom(
            fred::types::CustomCommand::new_static(
                "CLIENT",
                fred::types::ClusterHash::Random,
                false,
            ),
            vec!["LIST"],
        )
        .await
        .expect("CLIENT LIST");
    let name = format!("name={}", subscriber.connection_name());
    let id = list
        .lines()
        .find(|line| line.split(' ').any(|field| field == name))
        .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("the subscriber's connection ({name}) is not in CLIENT LIST"))
        .to_owned();
    let killed: i64 = raw
        .custom(
            fred::types::CustomCommand::new_static(
                "CLIENT",
                fred::types::ClusterHash::Random,
                false,
            ),
            vec!["KILL", "ID", id.as_str()],
        )
        .await
        .expect("CLIENT KILL");
    assert_eq!(
        killed, 1,
        "the subscriber's connection must have been killed"
    );

    // Publish until the re-subscribed client hears one (events in the gap are lost:
    // pub/sub is best effort).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut n = 2;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscriber never received an event after its connection was killed"
        );
        publisher.publish(paid(n)).await.expect("publish");
        match tokio::time::timeout(Duration::from_millis(200), subscriber.recv()).await {
            Ok(Ok(event)) => {
                assert!(event.order.get() >= 2, "an old event arrived again");
                break;
            }
            Ok(Err(e)) => panic!("subscriber failed after the kill: {e}"),
            Err(_) => n += 1,
        }
    }
    let _ = raw.quit().await;
    subscriber.close().await;
    connection.close().await;
}
