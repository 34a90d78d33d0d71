//! The fault-injection suite (issue 10): the running system — two `server --role api`
//! and two `worker` processes on MariaDB and on a `redis-server` this suite starts on a
//! free port (so it may kill it) — under continuous HTTP load, hurt in every way the
//! reference loses or strands orders, then healed and checked by the invariant checker
//! (`order_engine::check`), which must pass every invariant.
//!
//! Faults, in order, while the load runs: `kill -9` of a worker in the middle of
//! payments (three times, alternating, each time measuring how long its orders take to
//! finish elsewhere); `SIGSTOP` of a worker for longer than its lease, then `SIGCONT`;
//! `kill -9` of an API process at the fail point between commit and enqueue (armed
//! with `ORDERS_FAILPOINTS`); Redis killed and restarted empty while jobs are queued
//! and in flight; MariaDB connections killed mid-transaction (`KILL CONNECTION` of the
//! suite's own database's connections); cancels racing the workers all along; poison
//! jobs pushed straight into the queue. The settings are short (lease 6 s, visibility
//! 5 s, reconciler every second for orders 5 s stale) so the whole suite stays within a
//! few minutes; the summary table says what each fault cost.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use order_engine::check::{CheckOptions, check};
use order_engine::core::OrderId;
use order_engine::redis::{RedisConfig, RedisConnection};
use sqlx::{MySqlPool, Row};
use tokio::task::JoinHandle;

use crate::http::client::{Client, Reply, Request, Session, create_request};
use crate::http::harness::{PrivateRedis, Server, Stack, free_port, send_signal};

/// The processing lease, and what it implies (see the module docs).
const LEASE: Duration = Duration::from_secs(6);

/// The deployment's settings: short enough for a test, valid together (the lease
/// outlives the worst-case payment of 1 s × 3 attempts plus back-offs; the queue's
/// retry budget outlives the lease; `stale_after` is not below the visibility timeout).
fn settings(redis_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_URL", redis_url.to_owned()),
        ("ORDERS_LEASE_MS", LEASE.as_millis().to_string()),
        ("ORDERS_PAYMENT_TIMEOUT_MS", "1000".into()),
        ("ORDERS_QUEUE_VISIBILITY_TIMEOUT_MS", "5000".into()),
        ("ORDERS_RECONCILER_INTERVAL_MS", "1000".into()),
        ("ORDERS_RECONCILER_STALE_AFTER_MS", "5000".into()),
        // The reference's payments: 50–200 ms, 80 % approved.
        ("ORDERS_PAYMENT_APPROVAL_RATE", "0.8".into()),
        ("ORDERS_DB_MAX_CONNECTIONS", "24".into()),
    ]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `updated_at` as epoch milliseconds, in SQL (instants are stored as UTC text).
const UPDATED_MS: &str =
    "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', updated_at) DIV 1000 AS SIGNED)";
const CREATED_MS: &str =
    "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', created_at) DIV 1000 AS SIGNED)";

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    /// Create requests sent (each key once, retries not counted).
    placed: u64,
    /// Orders the API accepted (201, or 200 for a retried key), by id.
    accepted: Vec<u64>,
    /// Refused for stock.
    refused_stock: u64,
    /// Other answers, by status and code.
    other: BTreeMap<String, u64>,
    /// Requests re-sent after a transport error or a 503 (same key).
    resent: u64,
    /// Keys given up after every retry (the order may or may not exist: the checker
    /// reads the database, not this list, for "every order terminal").
    gave_up: u64,
    /// Cancels that won the race (200 CANCELLED), by order.
    cancels_won: Vec<u64>,
    /// Cancels that lost it (409: the worker got there first).
    cancels_lost: u64,
}

/// The continuous load: `tasks` clients placing orders round-robin on the API
/// processes, and one client placing orders and cancelling them at once.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Sends `request` until an answer that is not a 503 comes back, rotating over `apis`
/// (a refused connection, a broken one, a timeout or a 503 is retried with the same
/// request — for a create, the same idempotency key, so a lost answer turns into a
/// replay). `None` after 40 tries (about 20 s).
async fn send_retrying(apis: &[Client], request: &Request, tally: &Mutex<Tally>) -> Option<Reply> {
    for attempt in 0..40usize {
        let api = apis[attempt % apis.len()];
        match api.try_send(request.clone(), Duration::from_secs(15)).await {
            Ok(reply) if reply.status != 503 => return Some(reply),
            Ok(_) | Err(_) => {
                tally.lock().unwrap().resent += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    None
}

impl Load {
    fn start(apis: Vec<Client>, sessions: Vec<Session>, bulk: u64, tasks: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let n = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for task in 0..tasks {
            let (stop, tally, n, apis) = (stop.clone(), tally.clone(), n.clone(), apis.clone());
            let session = sessions[task % sessions.len()].clone();
            handles.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = n.fetch_add(1, Ordering::Relaxed);
                    // Mostly the bulk product, now and then the demo ones (their stock
                    // runs out: refusals are part of the load).
                    let items: Vec<(u64, i64)> = match i % 10 {
                        0 => vec![(2, 1)],
                        1 => vec![(3, 1), (bulk, 2)],
                        _ => vec![(bulk, 1 + (i % 3) as i64)],
                    };
                    let request = create_request(&session.token, &items, &format!("load-{i}"));
                    tally.lock().unwrap().placed += 1;
                    let reply = send_retrying(&apis, &request, &tally).await;
                    {
                        let mut t = tally.lock().unwrap();
                        match reply {
                            Some(r) if r.status == 201 || r.status == 200 => {
                                t.accepted.push(r.data()["id"].as_u64().unwrap());
                            }
                            Some(r) if r.status == 409 && r.code() == "INSUFFICIENT_STOCK" => {
                                t.refused_stock += 1;
                            }
                            Some(r) => {
                                *t.other
                                    .entry(format!("{} {}", r.status, r.code()))
                                    .or_default() += 1;
                            }
                            None => t.gave_up += 1,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        // The cancel racer: place on one API, cancel at once on the other.
        let (stop2, tally2, apis2) = (stop.clone(), tally.clone(), apis.clone());
        let session = sessions[sessions.len() - 1].clone();
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                i += 1;
                let request = create_request(&session.token, &[(bulk, 1)], &format!("race-{i}"));
                tally2.lock().unwrap().placed += 1;
                let Some(reply) = send_retrying(&apis2, &request, &tally2).await else {
                    tally2.lock().unwrap().gave_up += 1;
                    continue;
                };
                if reply.status != 201 && reply.status != 200 {
                    continue;
                }
                let id = reply.data()["id"].as_u64().unwrap();
                tally2.lock().unwrap().accepted.push(id);
                let cancel =
                    Request::new("POST", format!("/api/orders/{id}/cancel")).bearer(&session.token);
                let flipped: Vec<Client> = apis2.iter().rev().copied().collect();
                match send_retrying(&flipped, &cancel, &tally2).await {
                    Some(r) if r.status == 200 => tally2.lock().unwrap().cancels_won.push(id),
                    Some(r) if r.status == 409 => tally2.lock().unwrap().cancels_lost += 1,
                    Some(r) => panic!("cancel of order {id} answered {} {}", r.status, r.code()),
                    None => tally2.lock().unwrap().gave_up += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
        Load {
            stop,
            tally,
            tasks: handles,
        }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a load task panicked");
        }
        Arc::try_unwrap(self.tally)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

/// How long the orders a killed worker was processing took to finish elsewhere.
#[derive(Debug)]
struct Recovery {
    fault: String,
    orders: usize,
    first: Option<Duration>,
    last: Option<Duration>,
}

/// Orders Processing since before `at_ms`: a second and a half after a worker died,
/// the other worker has finished whatever it was paying then (50–200 ms each), so what
/// is still Processing and was started before the kill is the dead worker's.
async fn held_since(pool: &MySqlPool, at_ms: i64) -> Vec<u64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM orders WHERE status = 'PROCESSING' AND {UPDATED_MS} <= ?"
    )))
    .bind(at_ms)
    .fetch_all(pool)
    .await
    .expect("orders held by the killed worker")
}

/// Waits until every order of `ids` is terminal and says when the first and the last
/// finished, from `at_ms`.
async fn recovered(pool: &MySqlPool, fault: String, at_ms: i64, ids: Vec<u64>) -> Recovery {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut open = 0usize;
        let mut done: Vec<i64> = Vec::new();
        for id in &ids {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT status, {UPDATED_MS} AS at FROM orders WHERE id = ?"
            )))
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("a held order");
            let status: String = row.get("status");
            if matches!(status.as_str(), "PAID" | "FAILED" | "CANCELLED") {
                done.push(row.get::<i64, _>("at"));
            } else {
                open += 1;
            }
        }
        if open == 0 {
            let since = |ms: i64| Duration::from_millis(u64::try_from(ms - at_ms).unwrap_or(0));
            return Recovery {
                fault,
                orders: ids.len(),
                first: done.iter().min().map(|m| since(*m)),
                last: done.iter().max().map(|m| since(*m)),
            };
        }
        assert!(
            Instant::now() < deadline,
            "{fault}: {open} of its {} orders still open after 90 s",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kill -9` of `worker`, a replacement started right away (as a supervisor would),
/// and the recovery of the orders it held.
async fn kill_worker(stack: &Stack, pool: &MySqlPool, worker: &mut Server, n: usize) -> Recovery {
    let at = now_ms();
    worker.kill9();
    *worker = stack.spawn_with("worker", "worker", &["--concurrency", "64"], &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = held_since(pool, at).await;
    recovered(pool, format!("kill -9 worker #{n}"), at, held).await
}

/// `KILL CONNECTION` of every connection to the suite's database but this one's.
async fn kill_db_connections(pool: &MySqlPool, database: &str) -> usize {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind(database)
    .fetch_all(pool)
    .await
    .expect("the process list");
    for id in &ids {
        // A connection may have gone by itself meanwhile.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
            .execute(pool)
            .await;
    }
    ids.len()
}

/// Pushes a raw entry into the job stream with `redis-cli` (what a buggy or hostile
/// producer would write), bypassing the queue's own encoder.
fn push_raw_job(port: u16, stream: &str, job: &str) {
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "XADD",
            stream,
            "*",
            "job",
            job,
            "base",
            "0",
        ])
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "XADD: {out:?}");
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_under_real_faults() {
    let started = Instant::now();
    let port = free_port();
    let mut redis = Some(PrivateRedis::start(port));
    let redis_url = format!("redis://127.0.0.1:{port}");
    let env = settings(&redis_url);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stack = Stack::with_role("api", &env_refs).await;
    let second_api = stack.spawn_api();
    let mut workers = [
        stack.spawn_with("worker", "worker a", &["--concurrency", "64"], &[]),
        stack.spawn_with("worker", "worker b", &["--concurrency", "64"], &[]),
    ];
    let pool = MySqlPool::connect(stack.database_url()).await.unwrap();
    let database: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let bulk = order_engine::mysql::MySqlOrderRepository::new(pool.clone())
        .add_product(
            "Fault-suite stock",
            order_engine::core::Money::parse("1.00").unwrap(),
            100_000,
        )
        .await
        .unwrap()
        .get();
    let apis = vec![stack.client, second_api.client()];
    let sessions = apis[0].login_all().await.to_vec();
    let stream = RedisConfig::new(&redis_url)
        .with_prefix(stack.redis_prefix().to_owned())
        .queue_keys()
        .stream;

    let load = Load::start(apis.clone(), sessions.clone(), bulk, 6);
    let mut faults: Vec<String> = Vec::new();
    let mut recoveries: Vec<Recovery> = Vec::new();
    tokio::time::sleep(Duration::from_secs(4)).await;

    // 1. kill -9 of a worker in the middle of payments, three times, alternating.
    for n in 0..3 {
        let (stack_ref, pool_ref) = (&stack, &pool);
        let recovery = kill_worker(stack_ref, pool_ref, &mut workers[n % 2], n + 1).await;
        faults.push(format!(
            "kill -9 worker #{} (held {} orders)",
            n + 1,
            recovery.orders
        ));
        recoveries.push(recovery);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // 2. SIGSTOP a worker past its lease, then SIGCONT: its late writes must change
    //    nothing (the checker finds any double payment or restock).
    let pid = workers[1].pid().expect("worker b runs");
    send_signal(pid, "STOP");
    tokio::time::sleep(LEASE + Duration::from_secs(3)).await;
    send_signal(pid, "CONT");
    faults.push(format!(
        "SIGSTOP worker for {:?}, then SIGCONT",
        LEASE + Duration::from_secs(3)
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 3. kill -9 of an API process at the fail point between commit and enqueue.
    let mut doomed = stack.spawn_with(
        "server",
        "server --role api (fail point armed)",
        &["--role", "api"],
        &[("ORDERS_FAILPOINTS", "after_commit_before_enqueue=abort")],
    );
    let request = create_request(&sessions[0].token, &[(bulk, 1)], "fail-point-1");
    let lost = doomed
        .client()
        .try_send(request.clone(), Duration::from_secs(15))
        .await;
    assert!(
        lost.is_err(),
        "the armed API must die before answering: {lost:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while doomed.exited().is_none() {
        assert!(Instant::now() < deadline, "the armed API did not die");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replay = apis[0].send(request).await;
    assert_eq!(
        replay.status, 200,
        "the order was committed before the crash: {replay:?}"
    );
    let committed = replay.data()["id"].as_u64().unwrap();
    faults.push(format!(
        "kill -9 of an API process between commit and enqueue (order {committed})"
    ));
    drop(doomed);

    // 4. Redis killed and restarted empty while jobs are queued and in flight.
    if let Some(r) = redis.take() {
        r.kill();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis = Some(PrivateRedis::start(port));
    faults.push("Redis killed, restarted empty 2 s later".into());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 5. MariaDB connections killed mid-transaction, three rounds.
    for round in 1..=3 {
        let killed = kill_db_connections(&pool, &database).await;
        faults.push(format!(
            "KILL CONNECTION round {round}: {killed} connections"
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // 6. Poison jobs straight into the queue: undecodable, and for no order. Both go
    //    to the dead letter (undecodable at reserve; the missing order at once, by the
    //    worker), and neither holds up the jobs behind them.
    let poison = ["garbage: not a job", "process_order:999999999"];
    for job in poison {
        push_raw_job(port, &stream, job);
    }
    faults.push(format!(
        "{} poison jobs pushed into the stream",
        poison.len()
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Heal: stop the load, let everything finish, check.
    let tally = load.finish().await;
    let redis_connection = RedisConnection::connect(
        RedisConfig::new(&redis_url).with_prefix(stack.redis_prefix().to_owned()),
    )
    .await
    .unwrap();
    let mut accepted: Vec<OrderId> = tally
        .accepted
        .iter()
        .map(|id| OrderId::new(*id).unwrap())
        .collect();
    accepted.push(OrderId::new(committed).unwrap());
    let options = CheckOptions {
        terminal_wait: Duration::from_secs(90),
        accepted: Some(accepted),
        expected_dead_letters: poison.iter().map(|p| (*p).to_owned()).collect(),
    };
    let report = check(&pool, &redis_connection, &options)
        .await
        .expect("the checker ran");

    // The summary.
    let counts: Vec<(String, i64)> =
        sqlx::query("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get::<String, _>("status"), r.get::<i64, _>("n")))
            .collect();
    let count = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    let mut to_terminal: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {UPDATED_MS} - {CREATED_MS} FROM orders WHERE status IN ('PAID', 'FAILED')"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    to_terminal.sort_unstable();
    let dead = order_engine::redis::inspect::dead_letters(&redis_connection)
        .await
        .map(|d| d.len())
        .unwrap_or(0);
    for cancelled in &tally.cancels_won {
        let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = ?")
            .bind(cancelled)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            status, "CANCELLED",
            "order {cancelled}: its cancel won, it must stay cancelled"
        );
    }

    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "\n=== fault suite summary ({:.0?}) ===",
        started.elapsed()
    );
    let _ = writeln!(summary, "faults injected ({}):", faults.len());
    for f in &faults {
        let _ = writeln!(summary, "  - {f}");
    }
    let _ = writeln!(summary, "| orders placed | {} |", tally.placed);
    let _ = writeln!(summary, "| accepted | {} |", tally.accepted.len() + 1);
    let _ = writeln!(summary, "| refused for stock | {} |", tally.refused_stock);
    let _ = writeln!(summary, "| other answers | {:?} |", tally.other);
    let _ = writeln!(
        summary,
        "| requests re-sent (transport error or 503) | {} |",
        tally.resent
    );
    let _ = writeln!(summary, "| keys given up | {} |", tally.gave_up);
    let _ = writeln!(
        summary,
        "| paid / failed / cancelled | {} / {} / {} |",
        count("PAID"),
        count("FAILED"),
        count("CANCELLED")
    );
    let _ = writeln!(
        summary,
        "| cancel races won / lost | {} / {} |",
        tally.cancels_won.len(),
        tally.cancels_lost
    );
    let _ = writeln!(summary, "| dead-lettered | {dead} |");
    let _ = writeln!(
        summary,
        "| time to terminal p50 / p99 / max | {} / {} / {} ms |",
        percentile(&to_terminal, 0.5),
        percentile(&to_terminal, 0.99),
        to_terminal.last().copied().unwrap_or(0)
    );
    for r in &recoveries {
        let _ = writeln!(
            summary,
            "| {}: {} orders; first finished elsewhere after {:?}, last after {:?} |",
            r.fault, r.orders, r.first, r.last
        );
    }
    let _ = writeln!(summary, "{report}");
    eprintln!("{summary}");
    println!("{summary}");

    assert!(report.passed(), "an invariant failed:{summary}");
    assert!(
        tally.accepted.len() > 100,
        "the load placed too few orders:{summary}"
    );
    assert_eq!(
        tally.gave_up, 0,
        "a request found no API process for 20 s:{summary}"
    );
    drop(workers);
    drop(redis);
}
