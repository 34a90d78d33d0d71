//! The one test binary of `order-redis`: every contract check of `order_core::testing::
//! contract::{lock, queue, events}` against the Redis adapters (modules [`lock`],
//! [`queue`], [`events`]; the memory adapters, the reference, run the same suites in
//! `order-memory`'s tests), plus Redis-only tests: an event burst,
//! racing lock holders, a flush under load, redelivery across consumers, the dead
//! letter's content and an unreachable server; the queue's shared reads and batched
//! acks (module [`batching`]); and the read-only inspections (module [`inspect`]).
//!
//! Needs a Redis server: `REDIS_URL` (default `redis://127.0.0.1:6379`). When it is
//! unreachable the Redis tests FAIL, they never skip. Every test works under a unique key
//! prefix and channel, so tests run in parallel and never see each other's data, and
//! deletes every key under its prefix when it ends, passing or failing ([`Cleanup`]):
//! the shared server is left as it was found. The one
//! test that wipes data uses `FLUSHDB` on a separate logical database (`REDIS_FLUSH_DB`,
//! default 9) rather than `FLUSHALL`, which would wipe the keys of every test running
//! beside it; it also runs `SCRIPT FLUSH`, which is server-wide like a restart — harmless
//! to the parallel tests precisely because every adapter reloads its scripts on
//! `NOSCRIPT`. A real restart and a real `FLUSHALL` run on a private `redis-server`
//! (module `restart`).

// A test binary reports failure by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests read their servers and seeds from the environment (libraries never do).
#![allow(clippy::disallowed_methods)]
// A test binary: `pub` marks what its modules share, not a public API.
#![allow(unreachable_pub)]

mod batching;
mod events;
mod inspect;
mod lock;
mod queue;
mod restart;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use fred::prelude::*;
use order_core::domain::{Money, OrderId, Timestamp, UserId};
use order_core::ports::{
    DistributedLock, EventPublisher, Job, JobQueue, LockToken, NackOutcome, OrderEvent,
    OrderEventKind, QueueStats,
};
use order_redis::{
    RedisConfig, RedisConnection, RedisEventSubscriber, RedisEvents, RedisLock, RedisQueue,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Deletes every key under a test's prefix when dropped: at the end of the test, and
/// also while a failing test unwinds, so no run leaves keys on the shared server. The
/// deletion runs on its own thread and runtime because `Drop` cannot await.
struct Cleanup {
    url: String,
    prefix: String,
}

impl Cleanup {
    fn new(config: &RedisConfig) -> Cleanup {
        Cleanup {
            url: config.url.clone(),
            prefix: config.prefix.clone(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(delete_prefix(&url, &prefix))
                .map_err(|e| e.to_string())
        })
        .join();
        let failure = match outcome {
            Ok(Ok(_deleted)) => return,
            Ok(Err(e)) => e,
            Err(_) => "the cleanup thread panicked".to_owned(),
        };
        // Panicking again while a failed test unwinds would abort the whole binary.
        if !std::thread::panicking() {
            panic!("cannot delete the keys under {:?}: {failure}", self.prefix);
        }
    }
}

/// Deletes every key under `prefix` with the adapter's own
/// [`RedisConnection::delete_prefix`]; returns how many were deleted.
async fn delete_prefix(url: &str, prefix: &str) -> Result<u64, order_redis::ConnectError> {
    let redis = RedisConnection::connect(RedisConfig::new(url).with_prefix(prefix)).await?;
    redis.wait_connected(Duration::from_secs(5)).await?;
    let deleted = redis.delete_prefix().await;
    redis.close().await;
    deleted
}

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
    config.queue.retry_backoff.base = Duration::from_millis(200);
    config.queue.max_len = 16;
    config.queue.poll_interval = Duration::from_millis(50);
    config.queue.blocking_connections = 1;
    config
}

/// A test's settings for another consumer of the same queue (same prefix).
fn as_consumer(config: &RedisConfig, consumer: &str) -> RedisConfig {
    let mut config = config.clone();
    config.queue.consumer = consumer.to_owned();
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
        seq: n,
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

// ---------------------------------------------------------------------------------------
// Redis-only tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_still_builds_the_adapters_and_their_calls_fail_as_unavailable_in_time()
 {
    let mut config = test_config("redis://127.0.0.1:1".to_owned(), "unreachable");
    config.command_timeout = Duration::from_millis(500);
    config.reconnect_max_delay = Duration::from_millis(200);
    let connection = RedisConnection::connect(config)
        .await
        .expect("building the pool needs no server");
    let lock = RedisLock::new(&connection)
        .await
        .expect("building the lock needs no server");
    let queue = RedisQueue::new(&connection)
        .await
        .expect("building the queue needs no server");
    // Each call gives up within the command timeout (plus scheduling slack).
    let bound = Duration::from_millis(500 + 700);

    let started = std::time::Instant::now();
    let pinged = connection.ping().await;
    assert!(
        matches!(pinged, Err(order_redis::ConnectError::Unavailable(_))),
        "{pinged:?}"
    );
    assert!(
        started.elapsed() < bound,
        "ping took {:?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    let acquired = lock
        .try_acquire("p:1", &LockToken::new("t"), Duration::from_secs(1))
        .await;
    assert!(
        matches!(acquired, Err(order_core::ports::LockError::Unavailable(_))),
        "{acquired:?}"
    );
    assert!(
        started.elapsed() < bound,
        "acquire took {:?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    let enqueued = queue.enqueue(job(1)).await;
    assert!(
        matches!(enqueued, Err(order_core::ports::QueueError::Unavailable(_))),
        "{enqueued:?}"
    );
    assert!(
        started.elapsed() < bound,
        "enqueue took {:?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    let reserved = queue.reserve(Duration::from_secs(5)).await;
    assert!(
        matches!(reserved, Err(order_core::ports::QueueError::Unavailable(_))),
        "{reserved:?}"
    );
    assert!(
        started.elapsed() < bound,
        "reserve took {:?}",
        started.elapsed()
    );

    let waited = connection.wait_connected(Duration::from_millis(300)).await;
    assert!(
        matches!(waited, Err(order_redis::ConnectError::Unavailable(_))),
        "{waited:?}"
    );
    queue.close().await;
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timings_refused_by_the_port_rule_are_invalid_config() {
    for broken in ["visibility_timeout", "max_attempts", "retry_backoff"] {
        let mut config = test_config(redis_url(), "timings");
        match broken {
            "visibility_timeout" => config.queue.visibility_timeout = Duration::ZERO,
            "max_attempts" => config.queue.max_attempts = 0,
            _ => config.queue.retry_backoff.base = Duration::ZERO,
        }
        let connection = connect(config).await;
        let built = RedisQueue::new(&connection).await;
        assert!(
            matches!(&built, Err(order_redis::ConnectError::InvalidConfig(m)) if m.contains(broken)),
            "a zero {broken} must be refused as invalid settings, got {:?}",
            built.map(|_| ())
        );
        connection.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_queue_settings_allow_eight_attempts() {
    let config = RedisConfig::new(redis_url());
    assert_eq!(config.queue.max_attempts, 8);
    let connection = connect(config.with_prefix(unique_prefix("defaults"))).await;
    let queue = RedisQueue::new(&connection).await.expect("setup");
    let timings = queue.timings();
    assert_eq!(timings.max_attempts, 8);
    assert_eq!(timings.retry_budget(), Duration::from_secs(127));
    assert!(timings.retry_budget() > timings.visibility_timeout);
    queue.close().await;
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_acquire_with_the_same_token_succeeds_and_another_token_is_refused() {
    let config = test_config(redis_url(), "resent-acquire");
    let _cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
    let lock = RedisLock::new(&connection).await.expect("lock setup");
    let (mine, theirs) = (LockToken::new("mine"), LockToken::new("theirs"));
    let ttl = Duration::from_secs(10);
    assert!(
        lock.try_acquire("product:7", &mine, ttl)
            .await
            .expect("acquire")
    );
    // The same command again, as fred re-sends it after a reconnect.
    assert!(
        lock.try_acquire("product:7", &mine, ttl)
            .await
            .expect("re-sent acquire"),
        "a re-sent acquire must find its own token and succeed"
    );
    assert!(
        !lock
            .try_acquire("product:7", &theirs, ttl)
            .await
            .expect("acquire"),
        "another token must still be refused"
    );
    assert!(lock.release("product:7", &mine).await.expect("release"));
    assert!(
        lock.try_acquire("product:7", &theirs, ttl)
            .await
            .expect("acquire"),
        "one release frees the key"
    );
    assert!(lock.release("product:7", &theirs).await.expect("release"));
    connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_ack_by_a_stalled_worker_leaves_the_redelivery_in_flight_and_it_is_redelivered() {
    let config = test_config(redis_url(), "stale-ack");
    let _cleanup = Cleanup::new(&config);
    let visibility = config.queue.visibility_timeout;
    let a_connection = connect(as_consumer(&config, "worker-a")).await;
    let a = RedisQueue::new(&a_connection).await.expect("setup");
    let b_connection = connect(as_consumer(&config, "worker-b")).await;
    let b = RedisQueue::new(&b_connection).await.expect("setup");

    a.enqueue(job(7)).await.expect("enqueue");
    let stalled = a
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("A gets the job");
    assert_eq!(stalled.attempt, 1);
    // A stalls past its visibility timeout; B receives the redelivery (same entry id).
    tokio::time::sleep(visibility + Duration::from_millis(150)).await;
    let live = b
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("B gets the redelivery");
    assert_eq!((live.job, live.attempt), (job(7), 2));
    assert_ne!(stalled.receipt, live.receipt, "receipts name deliveries");

    // A wakes up and acks its stale receipt: B's delivery must survive it.
    a.ack(&stalled).await.expect("a stale ack is harmless");
    assert_eq!(
        b.stats().await.expect("stats"),
        stats(0, 1, 0),
        "the stale ack must leave B's delivery in flight"
    );
    // B dies without acking: the job comes back as attempt 3.
    tokio::time::sleep(visibility + Duration::from_millis(150)).await;
    let third = a
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("B's delivery must be redelivered after its visibility timeout");
    assert_eq!((third.job, third.attempt), (job(7), 3));
    a.ack(&third).await.expect("ack");
    assert_eq!(a.stats().await.expect("stats"), stats(0, 0, 0));
    for (queue, connection) in [(&a, &a_connection), (&b, &b_connection)] {
        queue.close().await;
        connection.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reserve_leaves_the_next_job_to_another_consumer_at_once_on_attempt_1() {
    let mut config = test_config(redis_url(), "dropped-reserve");
    // A long poll interval: the dropped reserve's XREADGROUP blocks on the server for
    // the whole 5 s, so it is still there when the job arrives.
    config.queue.poll_interval = Duration::from_secs(5);
    let _cleanup = Cleanup::new(&config);
    let a_connection = connect(as_consumer(&config, "stopping-worker")).await;
    let a = RedisQueue::new(&a_connection).await.expect("setup");
    let b_connection = connect(as_consumer(&config, "other-worker")).await;
    let b = RedisQueue::new(&b_connection).await.expect("setup");
    // Both consumers exist before the drop (the group is created on first use).
    assert_eq!(b.reserve(Duration::ZERO).await.expect("reserve"), None);

    // A worker loop that stops drops its pending reserve.
    let dropped = tokio::time::timeout(
        Duration::from_millis(100),
        a.reserve(Duration::from_secs(5)),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the reserve must still be waiting when dropped"
    );
    a.enqueue(job(9)).await.expect("enqueue");

    let started = std::time::Instant::now();
    let delivery = b
        .reserve(Duration::from_secs(1))
        .await
        .expect("reserve")
        .expect("the job must reach the other consumer within a second");
    assert!(started.elapsed() < Duration::from_millis(1_200));
    assert_eq!(
        (delivery.job, delivery.attempt),
        (job(9), 1),
        "the dropped reserve must not use an attempt"
    );
    b.ack(&delivery).await.expect("ack");
    assert_eq!(b.stats().await.expect("stats"), stats(0, 0, 0));
    for (queue, connection) in [(&a, &a_connection), (&b, &b_connection)] {
        queue.close().await;
        connection.close().await;
    }
}

/// The names of the consumers of `config`'s queue group (`XINFO CONSUMERS`).
async fn consumer_names(raw: &Client, config: &RedisConfig) -> BTreeSet<String> {
    let command =
        fred::types::CustomCommand::new_static("XINFO", fred::types::ClusterHash::Random, false);
    let stream = config.queue_keys().stream;
    let reply: Value = raw
        .custom(
            command,
            vec!["CONSUMERS", stream.as_str(), config.queue.group.as_str()],
        )
        .await
        .expect("XINFO CONSUMERS");
    let Value::Array(consumers) = reply else {
        panic!("XINFO CONSUMERS returned {reply:?}");
    };
    consumers
        .into_iter()
        .filter_map(|consumer| match consumer {
            Value::Array(fields) => fields
                .chunks(2)
                .find(|pair| pair[0].as_string().as_deref() == Some("name"))
                .and_then(|pair| pair[1].as_string()),
            Value::Map(map) => map
                .inner()
                .into_iter()
                .find(|(k, _)| k.as_str() == Some("name"))
                .and_then(|(_, v)| v.as_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumers_without_pending_entries_are_deleted_and_holders_are_kept() {
    let mut config = test_config(redis_url(), "prune");
    // Long enough that nobody's reservation is taken over during the test.
    config.queue.visibility_timeout = Duration::from_secs(30);
    config.queue.idle_consumer_timeout = Duration::from_millis(500);
    let _cleanup = Cleanup::new(&config);
    let mut queues = Vec::new();
    for name in ["ghost", "holder", "live"] {
        let connection = connect(as_consumer(&config, name)).await;
        let queue = RedisQueue::new(&connection).await.expect("setup");
        queues.push((connection, queue));
    }
    let (ghost, holder, live) = (&queues[0].1, &queues[1].1, &queues[2].1);

    // The ghost finished a job and went away (Redis 7.0 only records a consumer that
    // received something); the holder holds a job.
    ghost.enqueue(job(4)).await.expect("enqueue");
    let done = ghost
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("the ghost gets a job");
    ghost.ack(&done).await.expect("ack");
    holder.enqueue(job(5)).await.expect("enqueue");
    let held = holder
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("the holder gets the job");
    let raw = raw_client(&config.url).await;
    let before = consumer_names(&raw, &config).await;
    assert!(
        before.contains("ghost") && before.contains("holder"),
        "{before:?}"
    );

    // Both go idle past the bound; the live consumer's reserve runs the housekeeping.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(live.reserve(Duration::ZERO).await.expect("reserve"), None);
    let after = consumer_names(&raw, &config).await;
    assert!(
        !after.contains("ghost"),
        "an idle consumer without pending entries must be deleted: {after:?}"
    );
    assert!(
        after.contains("holder"),
        "a consumer with pending entries must never be deleted: {after:?}"
    );
    assert_eq!(
        live.stats().await.expect("stats"),
        stats(0, 1, 0),
        "the holder's reservation must survive the housekeeping"
    );
    holder.ack(&held).await.expect("the holder can still ack");
    let _ = raw.quit().await;
    for (connection, queue) in &queues {
        queue.close().await;
        connection.close().await;
    }
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
    let config = test_config(redis_url(), "race");
    let _cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
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
    let config = test_config(url.clone(), "flush");
    let _cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
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
    let mut config = test_config(redis_url(), "redeliver");
    // Long enough that building the survivor's connections on a loaded machine stays
    // well inside it.
    config.queue.visibility_timeout = Duration::from_secs(1);
    let _cleanup = Cleanup::new(&config);
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
        .reserve(Duration::from_secs(3))
        .await
        .expect("reserve")
        .expect("the dead worker's job must be redelivered after the visibility timeout");
    assert_eq!((again.job, again.attempt), (job(42), 2));
    survivor.ack(&again).await.expect("ack");
    assert_eq!(survivor.stats().await.expect("stats"), stats(0, 0, 0));
    survivor.close().await;
    survivor_connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_lands_in_the_dead_letter_after_its_last_attempt() {
    let config = test_config(redis_url(), "dead");
    let _cleanup = Cleanup::new(&config);
    let connection = connect(config).await;
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
