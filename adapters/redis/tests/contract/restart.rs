//! A real Redis restart and a real `FLUSHALL`, and a process that starts while Redis is
//! down, on a PRIVATE `redis-server` these tests start on a free port (the shared server
//! serves the tests running in parallel, so it can be neither restarted nor flushed).
//! The adapters are built once and must keep working without being rebuilt: the pool
//! connects (or reconnects) in the background, the consumer group and the scripts are
//! created on demand. A private server's data dies with it, so nothing is left behind.
//!
//! Needs the `redis-server` binary (`REDIS_SERVER_BIN`, default `redis-server` on PATH);
//! without it this test FAILS with a message saying so.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use order_core::ports::{DistributedLock, JobQueue, LockToken, QueueError};
use order_redis::{RedisConnection, RedisLock, RedisQueue};

use super::{connect, job, test_config};

/// A private server on `port`; killed on drop.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{bin}` ({e}): install redis-server or set REDIS_SERVER_BIN")
            });
        let server = PrivateRedis { child, port };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no save — everything in memory is gone.
    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Retries `op` until it succeeds or `limit` passes (the pool reconnects with backoff).
async fn eventually<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    limit: Duration,
    mut op: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{what}: still failing after {limit:?}: {e:?}"),
        }
    }
}

async fn reserve_job(queue: &RedisQueue, what: &str) -> order_core::ports::Delivery {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = queue
            .reserve(Duration::from_millis(200))
            .await
            .unwrap_or(None)
        {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: no delivery within 10 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapters_survive_a_real_restart_and_a_flushall_without_being_rebuilt() {
    let server = PrivateRedis::start(free_port());
    let config = test_config(server.url(), "restart");
    let connection = connect(config).await;
    let queue = RedisQueue::new(&connection).await.expect("queue");
    let lock = RedisLock::new(&connection).await.expect("lock");
    let token = LockToken::new("holder-1");

    // In use before the restart: a job reserved, a lock held, the release script loaded.
    queue.enqueue(job(1)).await.expect("enqueue before restart");
    let before = reserve_job(&queue, "before restart").await;
    assert!(
        lock.try_acquire("p:1", &token, Duration::from_secs(30))
            .await
            .expect("lock")
    );

    // SIGKILL and start again on the same port: all data, groups and scripts are gone.
    let port = server.kill();
    let server = PrivateRedis::start(port);

    // The same adapter objects, after the restart.
    eventually("enqueue after restart", Duration::from_secs(15), || {
        queue.enqueue(job(2))
    })
    .await;
    let after = reserve_job(&queue, "after restart (consumer group re-created)").await;
    assert_eq!(after.job, job(2), "the job enqueued after the restart");
    queue.ack(&after).await.expect("ack after restart");
    // The delivery reserved before the restart was lost with the data: acking it is harmless.
    queue.ack(&before).await.expect("stale ack after restart");
    assert!(
        lock.try_acquire("p:1", &LockToken::new("holder-2"), Duration::from_secs(30))
            .await
            .expect("lock after restart"),
        "the lock vanished with the data, so a new holder gets it"
    );
    assert!(
        !lock
            .release("p:1", &token)
            .await
            .expect("release after restart (script reloaded)"),
        "the old holder's release must not delete the new holder's lock"
    );

    // FLUSHALL on the live server, adapters still not rebuilt.
    let raw = super::raw_client(&server.url()).await;
    command(&raw, "FLUSHALL", &[]).await;
    command(&raw, "SCRIPT", &["FLUSH"]).await;
    queue.enqueue(job(3)).await.expect("enqueue after FLUSHALL");
    let third = reserve_job(&queue, "after FLUSHALL").await;
    assert_eq!(third.job, job(3));
    queue.ack(&third).await.expect("ack after FLUSHALL");
    let holder3 = LockToken::new("holder-3");
    assert!(
        lock.try_acquire("p:1", &holder3, Duration::from_secs(30))
            .await
            .expect("lock after FLUSHALL")
    );
    assert!(
        lock.release("p:1", &holder3)
            .await
            .expect("release after FLUSHALL"),
        "compare-and-delete works again"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapters_start_while_redis_is_down_and_work_once_it_is_up() {
    let port = free_port();
    let mut config = test_config(format!("redis://127.0.0.1:{port}"), "start-down");
    config.command_timeout = Duration::from_millis(500);
    config.reconnect_max_delay = Duration::from_millis(200);

    // Nothing listens on the port: the process still starts.
    let connection = RedisConnection::connect(config)
        .await
        .expect("the pool must be built while Redis is down");
    let lock = RedisLock::new(&connection)
        .await
        .expect("the lock must be built while Redis is down");
    let queue = RedisQueue::new(&connection)
        .await
        .expect("the queue must be built while Redis is down");
    let refused = queue.enqueue(job(1)).await;
    assert!(
        matches!(refused, Err(QueueError::Unavailable(_))),
        "an enqueue while Redis is down must be Unavailable, got {refused:?}"
    );

    // Redis comes up on that port; nothing is rebuilt.
    let server = PrivateRedis::start(port);
    connection
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("the pool must connect once Redis is up");
    eventually("enqueue once Redis is up", Duration::from_secs(10), || {
        queue.enqueue(job(2))
    })
    .await;
    let delivery = reserve_job(&queue, "once Redis is up").await;
    assert_eq!((delivery.job, delivery.attempt), (job(2), 1));
    queue.ack(&delivery).await.expect("ack once Redis is up");
    let token = LockToken::new("first-holder");
    let acquired = eventually("lock once Redis is up", Duration::from_secs(10), || {
        lock.try_acquire("p:1", &token, Duration::from_secs(30))
    })
    .await;
    assert!(acquired, "the free lock must be taken");
    assert!(lock.release("p:1", &token).await.expect("release"));
    queue.close().await;
    connection.close().await;
    drop(server);
}

/// `RedisQueue::wait_connected` answers for every connection the queue reads through:
/// `Unavailable` within its timeout while nothing listens; `Ok` once the server is up;
/// for a queue built on an already connected pool, `Ok` only once the server counts
/// its dedicated blocking connection too (a wait for the pool alone would return while
/// that one still shakes hands); after which a `reserve` waits for nothing but jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_wait_connected_reports_a_down_server_then_a_ready_one() {
    let port = free_port();
    let mut config = test_config(format!("redis://127.0.0.1:{port}"), "wait-connected");
    config.reconnect_max_delay = Duration::from_millis(200);
    let blocking = config.queue.blocking_connections;
    let ours = config.pool_size + blocking;
    let connection = RedisConnection::connect(config)
        .await
        .expect("the pool must be built while Redis is down");
    let queue = RedisQueue::new(&connection)
        .await
        .expect("the queue must be built while Redis is down");

    let started = Instant::now();
    let down = queue.wait_connected(Duration::from_millis(300)).await;
    assert!(
        matches!(down, Err(order_redis::ConnectError::Unavailable(_))),
        "nothing listens: wait_connected must report Unavailable, got {down:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "wait_connected must give up at its timeout, took {:?}",
        started.elapsed()
    );

    let server = PrivateRedis::start(port);
    queue
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("every connection of the queue must be up once Redis is");
    // A second queue built once the shared pool is up: its own blocking connection
    // still shakes hands when it is made, so only a wait that covers it sees the
    // server count it. (The counting client is one more.)
    let late = RedisQueue::new(&connection).await.expect("a second queue");
    late.wait_connected(Duration::from_secs(10))
        .await
        .expect("the second queue's connections must come up");
    use fred::prelude::*;
    let raw = super::raw_client(&server.url()).await;
    let list =
        fred::types::CustomCommand::new_static("CLIENT", fred::types::ClusterHash::Random, false);
    let clients: String = raw
        .custom(list, vec![Value::from("LIST")])
        .await
        .expect("CLIENT LIST");
    assert_eq!(
        clients.lines().count(),
        ours + blocking + 1,
        "the shared pool and both queues' blocking connections must all be up: {clients}"
    );
    raw.quit().await.expect("quit");
    late.close().await;
    let looked = Instant::now();
    let empty = queue
        .reserve(Duration::ZERO)
        .await
        .expect("a reserve once connected");
    assert!(empty.is_none(), "nothing was enqueued, got {empty:?}");
    assert!(
        looked.elapsed() < Duration::from_secs(1),
        "a look at an empty queue once connected must not wait for a handshake, took {:?}",
        looked.elapsed()
    );
    queue.close().await;
    connection.close().await;
    drop(server);
}

async fn command(client: &fred::prelude::Client, name: &'static str, args: &[&str]) {
    use fred::prelude::*;
    let cmd = fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::Random, false);
    let args: Vec<Value> = args.iter().map(|a| Value::from(*a)).collect();
    let _: Value = client
        .custom(cmd, args)
        .await
        .unwrap_or_else(|e| panic!("{name} failed: {e}"));
}
