//! The delivery protocol end to end on the real parts: MariaDB/MySQL orders, the
//! `RedisQueue`, the system clock and short timings. Each scenario follows the retry to
//! its end through `handle_delivery`, as the memory-queue versions in `delivery` do.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use order_core::app::{
    Backoff, CreateOrderRequest, LockMode, LockPolicy, OrderService, Ports, ProcessOutcome,
    ReconcilerConfig, SeededRandom, ServiceConfig, WorkerOutcome,
};
use order_core::domain::{Lease, LeaseToken, Money, OrderId, OrderStatus, StatusChange};
use order_core::ports::{Clock, Delivery, JobQueue, OrderRepository};
use order_memory::{MemoryEventBus, MemoryLock, SystemClock};
use order_mysql::MySqlOrderRepository;
use order_redis::{RedisConfig, RedisConnection, RedisQueue};
use sqlx::MySqlPool;

use super::{redis_url, unique_prefix};
use crate::support::Outage;

struct Rig {
    service: OrderService,
    repository: Arc<MySqlOrderRepository>,
    queue: Arc<RedisQueue>,
    gateway: Arc<Outage>,
    clock: Arc<SystemClock>,
    redis: RedisConnection,
    _cleanup: super::Cleanup,
}

impl Rig {
    async fn new(pool: MySqlPool, test: &str) -> Rig {
        let prefix = unique_prefix(test);
        let cleanup = super::Cleanup::new(&prefix);
        let mut config = RedisConfig::new(redis_url()).with_prefix(prefix);
        config.queue.visibility_timeout = Duration::from_millis(300);
        config.queue.max_attempts = 6;
        config.queue.retry_backoff.base = Duration::from_millis(100);
        config.queue.poll_interval = Duration::from_millis(20);
        config.queue.consumer = format!("{test}-worker");
        let redis = RedisConnection::connect(config).await.unwrap();
        redis.wait_connected(Duration::from_secs(5)).await.unwrap();
        let queue = Arc::new(RedisQueue::new(&redis).await.unwrap());
        let repository = Arc::new(MySqlOrderRepository::new(pool));
        let clock = Arc::new(SystemClock::new());
        let gateway = Arc::new(Outage::up());
        let ports = Ports {
            repository: repository.clone(),
            lock: Arc::new(MemoryLock::new(clock.clone())),
            payments: gateway.clone(),
            events: Arc::new(MemoryEventBus::new()),
            queue: queue.clone(),
            clock: clock.clone(),
            rng: Arc::new(SeededRandom::from_entropy()),
        };
        let config = ServiceConfig {
            lock: LockPolicy {
                mode: LockMode::None,
                ..LockPolicy::default()
            },
            lease: Duration::from_secs(2),
            payment_timeout: Duration::from_millis(100),
            payment_attempts: 2,
            payment_backoff: Backoff::fixed_schedule(
                Duration::from_millis(10),
                Duration::from_secs(1),
            ),
            reconciler: ReconcilerConfig {
                interval: Duration::from_millis(200),
                stale_after: Duration::from_secs(1),
                batch: 16,
                ..ReconcilerConfig::default()
            },
            ..ServiceConfig::default()
        };
        let service = OrderService::new(ports, config).unwrap();
        Rig {
            service,
            repository,
            queue,
            gateway,
            clock,
            redis,
            _cleanup: cleanup,
        }
    }

    async fn place(&self) -> OrderId {
        let user = self
            .repository
            .add_user("t", "t@example.test", "!")
            .await
            .unwrap();
        let product = self
            .repository
            .add_product("p", Money::from_cents(500).unwrap(), 10)
            .await
            .unwrap();
        let request = CreateOrderRequest::new(user, [(product, 1)], "k");
        self.service.create_order(request).await.unwrap().order.id()
    }

    async fn next(&self, within: Duration) -> Delivery {
        self.queue
            .reserve(within)
            .await
            .unwrap()
            .expect("a delivery within the wait")
    }

    async fn status(&self, id: OrderId) -> OrderStatus {
        self.repository.get(id).await.unwrap().unwrap().status()
    }

    async fn finish(self) {
        self.queue.close().await;
        self.redis.close().await;
    }
}

fn completed(outcome: &WorkerOutcome) -> OrderStatus {
    match outcome {
        WorkerOutcome::Acked(ProcessOutcome::Completed(o)) => o.status(),
        other => panic!("expected the order to be completed, got {other:?}"),
    }
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn redis_a_provider_outage_after_start_releases_the_lease_and_the_retry_pays(
    pool: MySqlPool,
) {
    let rig = Rig::new(pool, "outage").await;
    let id = rig.place().await;
    rig.gateway.down.store(true, Ordering::SeqCst);
    let first = rig.next(Duration::from_secs(2)).await;
    let out = rig.service.handle_delivery(&first).await;
    assert!(matches!(out, WorkerOutcome::Released(_)), "{out:?}");
    assert_eq!(rig.status(id).await, OrderStatus::Processing);
    rig.gateway.down.store(false, Ordering::SeqCst);
    let second = rig.next(Duration::from_secs(2)).await;
    assert_eq!(
        second.attempt, 2,
        "the nack's retry, well before the 2 s lease"
    );
    assert_eq!(
        completed(&rig.service.handle_delivery(&second).await),
        OrderStatus::Paid
    );
    let stats = rig.queue.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.in_flight, stats.dead), (0, 0, 0));
    rig.finish().await;
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn redis_a_crash_after_start_with_a_short_visibility_timeout_is_deferred_then_paid(
    pool: MySqlPool,
) {
    let rig = Rig::new(pool, "crash").await;
    let id = rig.place().await;
    // A worker reserves, starts the order and dies.
    let _dead = rig.next(Duration::from_secs(2)).await;
    let now = rig.clock.now();
    let start = StatusChange::Start {
        lease: Lease {
            token: LeaseToken::from_raw(1),
            until: now.saturating_add(Duration::from_secs(2)),
        },
    };
    rig.repository.transition(id, start, now).await.unwrap();
    // Redelivered after the 300 ms visibility timeout: deferred behind the live lease,
    // using no attempt, again and again until the lease runs out — then taken over.
    let mut attempts = Vec::new();
    let status = loop {
        let d = rig.next(Duration::from_secs(3)).await;
        attempts.push(d.attempt);
        match rig.service.handle_delivery(&d).await {
            WorkerOutcome::Deferred(_) => continue,
            done => break completed(&done),
        }
    };
    assert_eq!(status, OrderStatus::Paid);
    assert!(
        attempts.iter().all(|a| *a == 2),
        "only the visibility timeout used an attempt: {attempts:?}"
    );
    rig.finish().await;
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn redis_an_order_whose_job_was_lost_is_recovered_by_the_reconciler(pool: MySqlPool) {
    let rig = Rig::new(pool, "lost").await;
    let id = rig.place().await;
    // The job is lost (FLUSHALL, a restart without persistence): acked unprocessed.
    let lost = rig.next(Duration::from_secs(2)).await;
    rig.queue.ack(&lost).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let report = rig.service.reconcile().await.unwrap();
    assert_eq!(report.enqueued, 1);
    let again = rig.next(Duration::from_secs(2)).await;
    assert_eq!(
        completed(&rig.service.handle_delivery(&again).await),
        OrderStatus::Paid
    );
    assert_eq!(rig.status(id).await, OrderStatus::Paid);
    rig.finish().await;
}

/// A private `redis-server` on `port` (the shared server cannot be stopped), killed on
/// drop. Needs the binary (`REDIS_SERVER_BIN`, default `redis-server`): `tests/run`
/// checks it is installed.
struct PrivateRedis(std::process::Child);

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = std::process::Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{bin}`: {e}"));
        PrivateRedis(child)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn redis_down_while_orders_are_placed_then_back_the_reconciler_recovers_them(
    pool: MySqlPool,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis_config = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
    redis_config.command_timeout = Duration::from_millis(300);
    redis_config.queue.visibility_timeout = Duration::from_secs(1);
    redis_config.queue.poll_interval = Duration::from_millis(50);
    // The process starts while nothing listens on the port.
    let redis = RedisConnection::connect(redis_config).await.unwrap();
    let config = ServiceConfig {
        reconciler: ReconcilerConfig {
            interval: Duration::from_millis(200),
            stale_after: Duration::from_secs(1),
            batch: 16,
            ..ReconcilerConfig::default()
        },
        ..ServiceConfig::default()
    };
    let sim = order_payment_sim::SimConfig {
        min_delay: Duration::ZERO,
        max_delay: Duration::from_millis(2),
        ..order_payment_sim::SimConfig::default()
    };
    let engine = order_engine::Engine::builder()
        .mysql(pool)
        .redis(&redis)
        .simulated_payments(sim)
        .config(config)
        .build()
        .await
        .expect("the engine starts while Redis is down");
    let repository = engine.mysql().unwrap().clone();
    let user = repository
        .add_user("t", "t@example.test", "!")
        .await
        .unwrap();
    let product = repository
        .add_product("p", Money::from_cents(100).unwrap(), 10)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let request = CreateOrderRequest::new(user, [(product, 1)], format!("k{i}"));
        let created = engine.service().create_order(request).await;
        ids.push(
            created
                .expect("orders are taken while Redis is down")
                .order
                .id(),
        );
    }
    let stats = engine.service().stats();
    assert!(stats.lock_fail_open >= 3, "the lock failed open: {stats:?}");
    assert_eq!(stats.enqueue_failures, 3, "no job could be enqueued");

    // Redis comes back, empty; nothing is rebuilt.
    let _server = PrivateRedis::start(port);
    redis.wait_connected(Duration::from_secs(10)).await.unwrap();
    let workers = order_engine::Workers::spawn_with_reconciler(engine.service(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut open = 0;
        for id in &ids {
            let order = repository.get(*id).await.unwrap().unwrap();
            open += usize::from(!order.status().is_terminal());
        }
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} orders still open 20 s after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = workers.stop(Duration::from_secs(5)).await.unwrap();
    // At least once each (again after `stale_after` if a machine under load was slow).
    assert!(
        report.requeued >= 3,
        "the reconciler handed every order out: {report:?}"
    );
    redis.close().await;
}
