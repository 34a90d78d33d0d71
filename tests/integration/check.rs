//! The invariant checker (`order_engine::check` and `examples/check`) on the real
//! MariaDB/MySQL and Redis: a real run of orders through the engine to terminal passes
//! every invariant, and then each violation, planted by hand with SQL or Redis
//! commands, fails exactly its own invariant with a detail naming the planted row — a
//! check that cannot fail proves nothing. Each test has a fresh database and a unique
//! Redis prefix, deleted when it ends.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use order_core::app::CreateOrderRequest;
use order_core::domain::{Money, OrderId, OrderStatus, ProductId, UserId};
use order_core::ports::{DistributedLock, Job};
use order_core::ports::{JobQueue, LockToken, NackOutcome, OrderRepository};
use order_engine::check::{CheckOptions, CheckReport, check, names};
use order_engine::{Engine, Workers};
use order_mysql::MySqlOrderRepository;
use order_payment_sim::SimConfig;
use order_redis::{RedisConfig, RedisConnection, RedisLock, RedisQueue};
use sqlx::MySqlPool;
use std::sync::Arc;

use crate::http::harness::example_binary;
use crate::real::{Cleanup, redis_url, unique_prefix};

/// A deployment: the engine on the test's database and prefix, and what the checker
/// needs to look at it.
struct Deployment {
    engine: Engine,
    repository: Arc<MySqlOrderRepository>,
    pool: MySqlPool,
    redis: RedisConnection,
    prefix: String,
    _cleanup: Cleanup,
}

impl Deployment {
    async fn start(pool: MySqlPool, test: &str) -> Deployment {
        let prefix = unique_prefix(test);
        let cleanup = Cleanup::new(&prefix);
        let redis = RedisConnection::connect(RedisConfig::new(redis_url()).with_prefix(&prefix))
            .await
            .expect("Redis connection");
        redis
            .wait_connected(Duration::from_secs(5))
            .await
            .expect("Redis answers");
        // Half the charges declined, so the run ends with PAID and FAILED orders.
        let sim = SimConfig {
            min_delay: Duration::ZERO,
            max_delay: Duration::from_millis(2),
            approval_rate: 0.5,
            seed: 11,
            ..SimConfig::default()
        };
        let engine = Engine::builder()
            .mysql(pool.clone())
            .redis(&redis)
            .simulated_payments(sim)
            .build()
            .await
            .expect("engine");
        let repository = engine.mysql().expect("built with .mysql()").clone();
        Deployment {
            engine,
            repository,
            pool,
            redis,
            prefix,
            _cleanup: cleanup,
        }
    }

    async fn check(&self, options: &CheckOptions) -> CheckReport {
        check(&self.pool, &self.redis, options)
            .await
            .expect("the checker runs")
    }

    /// The report with no wait and no poison expected.
    async fn check_now(&self) -> CheckReport {
        self.check(&CheckOptions {
            terminal_wait: Duration::ZERO,
            ..CheckOptions::default()
        })
        .await
    }

    async fn status(&self, id: OrderId) -> OrderStatus {
        self.repository
            .get(id)
            .await
            .expect("get")
            .expect("the order exists")
            .status()
    }

    async fn exec(&self, sql: &'static str, binds: &[u64]) {
        let mut query = sqlx::query(sql);
        for b in binds {
            query = query.bind(*b);
        }
        query.execute(&self.pool).await.expect(sql);
    }

    async fn close(self) {
        self.redis.close().await;
    }
}

/// What a real run left: its user, products and orders by final status.
struct Run {
    user: UserId,
    products: Vec<ProductId>,
    accepted: Vec<OrderId>,
    paid: Vec<OrderId>,
    failed: Vec<OrderId>,
    cancelled: Vec<OrderId>,
}

/// Places 16 orders over three products, cancels two before any worker runs, then lets
/// two workers finish the rest, and stops them.
async fn real_run(d: &Deployment) -> Run {
    let user = d
        .repository
        .add_user("checked", "checked@example.test", "!")
        .await
        .expect("user");
    let mut products = Vec::new();
    for (name, stock) in [("a", 40), ("b", 30), ("c", 5)] {
        let price = Money::from_cents(250).expect("price");
        products.push(
            d.repository
                .add_product(name, price, stock)
                .await
                .expect("product"),
        );
    }
    // One restock, so "received" is more than the initial stock.
    d.repository
        .restock(products[2], 10)
        .await
        .expect("restock");
    let service = d.engine.service();
    let mut accepted = Vec::new();
    for n in 0..16u32 {
        let p = products[n as usize % 3];
        let q = products[(n as usize + 1) % 3];
        let request = CreateOrderRequest::new(user, [(p, 1 + n % 2), (q, 1)], format!("run-{n}"));
        accepted.push(
            service
                .create_order(request)
                .await
                .expect("create")
                .order
                .id(),
        );
    }
    for id in &accepted[..2] {
        service.cancel_order(user, *id).await.expect("cancel");
    }
    let workers: Workers = d.engine.spawn_workers(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut by_status = Vec::new();
    loop {
        by_status.clear();
        for id in &accepted {
            by_status.push((*id, d.status(*id).await));
        }
        if by_status.iter().all(|(_, s)| s.is_terminal()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orders still open: {by_status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers
        .stop(Duration::from_secs(10))
        .await
        .expect("workers stop");
    let with = |status: OrderStatus| -> Vec<OrderId> {
        by_status
            .iter()
            .filter(|(_, s)| *s == status)
            .map(|(id, _)| *id)
            .collect()
    };
    let run = Run {
        user,
        products,
        paid: with(OrderStatus::Paid),
        failed: with(OrderStatus::Failed),
        cancelled: with(OrderStatus::Cancelled),
        accepted,
    };
    assert!(
        !run.paid.is_empty() && !run.failed.is_empty() && run.cancelled.len() == 2,
        "the run must end with paid, failed and cancelled orders: {by_status:?}"
    );
    run
}

/// The names of the invariants that failed.
fn failed(report: &CheckReport) -> BTreeSet<&'static str> {
    report.failures().map(|r| r.name).collect()
}

/// Asserts that exactly the invariants `names` failed, and that each detail contains
/// its expected text; returns the report's text for context.
fn assert_fails(report: &CheckReport, expected: &[(&'static str, &str)]) {
    let names: BTreeSet<&'static str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(failed(report), names, "{report}");
    for (name, needle) in expected {
        let detail = &report.result(name).expect("a result").detail;
        assert!(
            detail.contains(needle),
            "{name}: {detail:?} should name {needle:?}\n{report}"
        );
    }
}

/// Appends an `order.*` event for `order` under its user's next seq, as the repository
/// does in its transactions.
async fn log_event(d: &Deployment, user: UserId, order: OrderId, kind: &str) {
    d.exec(
        "UPDATE users SET event_seq = event_seq + 1 WHERE id = ?",
        &[user.get()],
    )
    .await;
    sqlx::query(
        "INSERT INTO order_events (user_id, seq, order_id, kind, total_amount, reason, at) \
         SELECT id, event_seq, ?, ?, 1.00, ?, NOW(3) FROM users WHERE id = ?",
    )
    .bind(order.get())
    .bind(kind)
    .bind((kind == "order.failed").then_some("planted"))
    .bind(user.get())
    .execute(&d.pool)
    .await
    .expect("insert an event");
}

/// Undoes [`log_event`]: removes the user's newest event and takes its seq back.
async fn unlog_last_event(d: &Deployment, user: UserId) {
    sqlx::query(
        "DELETE e FROM order_events e JOIN users u ON u.id = e.user_id AND e.seq = u.event_seq \
         WHERE u.id = ?",
    )
    .bind(user.get())
    .execute(&d.pool)
    .await
    .expect("delete the planted event");
    d.exec(
        "UPDATE users SET event_seq = event_seq - 1 WHERE id = ?",
        &[user.get()],
    )
    .await;
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_real_run_passes_and_each_planted_violation_fails_exactly_its_invariant(pool: MySqlPool) {
    let d = Deployment::start(pool, "check-plants").await;
    let run = real_run(&d).await;

    // 1. The real run, at rest: every invariant holds, for every order and for the
    //    load generator's list.
    let report = d
        .check(&CheckOptions {
            terminal_wait: Duration::from_secs(5),
            accepted: Some(run.accepted.clone()),
            expected_dead_letters: Vec::new(),
        })
        .await;
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.results.len(), 9);
    assert_eq!(report.to_string().lines().count(), 9);
    assert!(d.check_now().await.passed());

    // 2. A unit of stock taken by hand.
    let product = run.products[0];
    d.exec(
        "UPDATE products SET stock = stock - 1 WHERE id = ?",
        &[product.get()],
    )
    .await;
    let report = d.check_now().await;
    assert_fails(
        &report,
        &[(
            names::STOCK_CONSERVED,
            &format!("product {product}: received 40, stock "),
        )],
    );
    d.exec(
        "UPDATE products SET stock = stock + 1 WHERE id = ?",
        &[product.get()],
    )
    .await;

    // 3. More units held than ever came in (an oversell the unsigned column hides):
    //    this also breaks conservation, which it implies.
    let restocked = run.products[2];
    d.exec(
        "UPDATE products SET stock_received = 1 WHERE id = ?",
        &[restocked.get()],
    )
    .await;
    let needle = format!("product {restocked}: received 1,");
    assert_fails(
        &d.check_now().await,
        &[
            (names::STOCK_CONSERVED, &needle),
            (names::NO_NEGATIVE_STOCK, &needle),
        ],
    );
    d.exec(
        "UPDATE products SET stock_received = 15 WHERE id = ?",
        &[restocked.get()],
    )
    .await;
    assert!(
        d.check_now().await.passed(),
        "the restock was recorded as received"
    );

    // 4. An approved charge on a FAILED order.
    let failed_order = run.failed[0];
    d.exec(
        "UPDATE payments SET outcome = 'APPROVED', decline_reason = NULL WHERE order_id = ?",
        &[failed_order.get()],
    )
    .await;
    assert_fails(
        &d.check_now().await,
        &[(
            names::CHARGES,
            &format!("order {failed_order} is FAILED but has an approved charge"),
        )],
    );
    d.exec(
        "UPDATE payments SET outcome = 'DECLINED', decline_reason = 'planted' \
         WHERE order_id = ?",
        &[failed_order.get()],
    )
    .await;

    // 5. An illegal event sequence: a PAID order "goes back" to processing.
    let paid_order = run.paid[0];
    log_event(&d, run.user, paid_order, "order.processing").await;
    assert_fails(
        &d.check_now().await,
        &[(
            names::LEGAL_HISTORY,
            &format!(
                "order {paid_order}: illegal history order.created → order.processing → order.paid → order.processing"
            ),
        )],
    );
    unlog_last_event(&d, run.user).await;

    // 6. Stock returned twice: a second order.cancelled (nothing may follow a terminal
    //    event either, so the history fails too).
    let cancelled_order = run.cancelled[0];
    log_event(&d, run.user, cancelled_order, "order.cancelled").await;
    assert_fails(
        &d.check_now().await,
        &[
            (
                names::RESTORED_ONCE,
                &format!("order {cancelled_order}: stock returned 2 times"),
            ),
            (names::LEGAL_HISTORY, &format!("order {cancelled_order}")),
        ],
    );
    unlog_last_event(&d, run.user).await;
    assert!(d.check_now().await.passed());

    // 7. A lock key left behind (a holder that never released).
    let lock = RedisLock::new(&d.redis).await.expect("lock");
    let token = LockToken::new("planted");
    let name = format!("product:{product}");
    assert!(
        lock.try_acquire(&name, &token, Duration::from_secs(60))
            .await
            .expect("acquire")
    );
    assert_fails(
        &d.check_now().await,
        &[(names::NO_LOCKS, &format!("{}lock:{name}", d.prefix))],
    );
    assert!(lock.release(&name, &token).await.expect("release"));

    // 8. A dead letter: passes when it is the injected poison, fails otherwise.
    let mut poison_config = RedisConfig::new(redis_url()).with_prefix(&d.prefix);
    poison_config.queue.max_attempts = 1;
    poison_config.queue.consumer = "poisoner".to_owned();
    let poison_redis = RedisConnection::connect(poison_config)
        .await
        .expect("connect");
    let queue = RedisQueue::new(&poison_redis).await.expect("queue");
    let ghost = OrderId::new(987_654).expect("id");
    queue
        .enqueue(Job::ProcessOrder(ghost))
        .await
        .expect("enqueue");
    // The workers are stopped and acked every job, so this is the only one waiting.
    let delivery = queue
        .reserve(Duration::from_secs(2))
        .await
        .expect("reserve")
        .expect("the poison job");
    assert_eq!(delivery.job, Job::ProcessOrder(ghost));
    assert_eq!(
        queue.nack(&delivery, "poisoned").await.expect("nack"),
        NackOutcome::DeadLettered
    );
    queue.close().await;
    poison_redis.close().await;
    let payload = format!("process_order:{ghost}");
    let expected = d
        .check(&CheckOptions {
            terminal_wait: Duration::ZERO,
            accepted: None,
            expected_dead_letters: vec![payload.clone()],
        })
        .await;
    assert!(
        expected.passed(),
        "the injected poison is expected: {expected}"
    );
    assert_fails(
        &d.check_now().await,
        &[(names::DEAD_LETTER, &format!("{payload:?} (poisoned)"))],
    );

    // 9. An order left open past the wait (no worker runs any more).
    let open = d
        .engine
        .service()
        .create_order(CreateOrderRequest::new(
            run.user,
            [(product, 1)],
            "left-open",
        ))
        .await
        .expect("create")
        .order
        .id();
    let started = Instant::now();
    let options = CheckOptions {
        terminal_wait: Duration::from_millis(600),
        accepted: None,
        expected_dead_letters: vec![payload.clone()],
    };
    let report = d.check(&options).await;
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "the checker waits before judging"
    );
    assert_fails(
        &report,
        &[(
            names::ACCEPTED_TERMINAL,
            &format!("order {open} is PENDING"),
        )],
    );
    // With a load generator's list: the open order, and an id that names no order.
    let missing = OrderId::new(5_555_555).expect("id");
    let mut accepted = run.accepted.clone();
    accepted.extend([open, missing]);
    let report = d
        .check(&CheckOptions {
            terminal_wait: Duration::ZERO,
            accepted: Some(accepted),
            expected_dead_letters: vec![payload.clone()],
        })
        .await;
    assert_fails(
        &report,
        &[(
            names::ACCEPTED_TERMINAL,
            &format!("order {open} is PENDING; order {missing} does not exist"),
        )],
    );
    d.engine
        .service()
        .cancel_order(run.user, open)
        .await
        .expect("cancel");
    assert!(d.check(&options).await.passed());

    // 10. A second order under one (user, key). The unique index `orders_user_key_unique`
    //     makes this impossible on a migrated schema (that is the structural guarantee),
    //     so the index is dropped first to show the check itself can fail.
    d.exec("ALTER TABLE orders DROP INDEX orders_user_key_unique", &[])
        .await;
    let twin = sqlx::query(
        "INSERT INTO orders (user_id, status, total_amount, idempotency_key, \
         request_fingerprint, attempts, created_at, updated_at, cancelled_at) \
         VALUES (?, 'CANCELLED', 0, 'run-5', 0, 0, NOW(3), NOW(3), NOW(3))",
    )
    .bind(run.user.get())
    .execute(&d.pool)
    .await
    .expect("the twin")
    .last_insert_id();
    let report = d.check(&options).await;
    assert_fails(
        &report,
        &[(
            names::ONE_ORDER_PER_KEY,
            &format!(
                "user {}, key \"run-5\": orders {}, {twin}",
                run.user, run.accepted[5]
            ),
        )],
    );
    // The twin has no event: its history is noted as not checkable, not failed.
    let history = report.result(names::LEGAL_HISTORY).expect("history");
    assert!(history.passed, "{report}");
    assert!(
        history
            .detail
            .contains(&format!("not checkable, their log was pruned: {twin}")),
        "{report}"
    );

    d.close().await;
}

/// The database URL of the test's own database: `DATABASE_URL` with its database name
/// replaced.
async fn own_database_url(pool: &MySqlPool) -> String {
    let name: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(pool)
        .await
        .expect("database name");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL must be set");
    let (rest, query) = match base.split_once('?') {
        Some((rest, query)) => (rest.to_owned(), format!("?{query}")),
        None => (base.clone(), String::new()),
    };
    let server = rest
        .rsplit_once('/')
        .map_or(rest.as_str(), |(server, _)| server);
    format!("{server}/{name}{query}")
}

/// Runs the `check` binary with the deployment's settings and `args`; returns its exit
/// code and stdout.
async fn run_cli(database_url: &str, prefix: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(example_binary("check"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url())
        .env("ORDERS_REDIS_PREFIX", prefix)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the check binary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "check {args:?} -> {:?}\n{stdout}{stderr}",
        output.status.code()
    );
    (output.status.code(), stdout)
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn the_cli_exits_0_when_every_invariant_holds_1_when_one_fails_and_2_when_it_cannot_judge(
    pool: MySqlPool,
) {
    let d = Deployment::start(pool.clone(), "check-cli").await;
    let run = real_run(&d).await;
    let url = own_database_url(&pool).await;

    let (code, stdout) = run_cli(&url, &d.prefix, &["--wait-secs", "1"]).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout.lines().count(), 9, "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("PASS  ")), "{stdout}");

    // A leftover lock: exit 1, the line names the key. An injected poison job is
    // accepted only with --expect-dead-letter.
    let lock = RedisLock::new(&d.redis).await.expect("lock");
    let token = LockToken::new("planted");
    let name = format!("product:{}", run.products[1]);
    assert!(
        lock.try_acquire(&name, &token, Duration::from_secs(60))
            .await
            .expect("acquire")
    );
    let (code, stdout) = run_cli(&url, &d.prefix, &["--wait-secs", "0"]).await;
    assert_eq!(code, Some(1), "{stdout}");
    let key = format!("{}lock:{name}", d.prefix);
    assert!(
        stdout.contains(&format!("FAIL  {}: {key}", names::NO_LOCKS)),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("FAIL")).count(),
        1,
        "{stdout}"
    );
    assert!(lock.release(&name, &token).await.expect("release"));

    // Nothing written: the run's orders and the schema are as they were.
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_one(&pool)
    .await
    .expect("tables");
    let (code, _) = run_cli(&url, &d.prefix, &["--wait-secs", "0"]).await;
    assert_eq!(code, Some(0));
    let after: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_one(&pool)
    .await
    .expect("tables");
    assert_eq!(tables, after);

    // Cannot judge: an unreachable database, an unknown flag.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dead = format!("mysql://nobody@127.0.0.1:{port}/none");
    let (code, stdout) = run_cli(&dead, &d.prefix, &["--wait-secs", "0"]).await;
    assert_eq!(code, Some(2), "{stdout}");
    let (code, _) = run_cli(&url, &d.prefix, &["--no-such-flag"]).await;
    assert_eq!(code, Some(2));
    // A database without the schema is not judged either, and stays empty: the checker
    // never migrates.
    // (Not derived from the test database's name, which is at the 64-character limit.)
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let name = format!("check_empty_{}_{nanos}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&pool)
        .await
        .expect("create an empty database");
    let (server, query) = match url.split_once('?') {
        Some((server, query)) => (server, format!("?{query}")),
        None => (url.as_str(), String::new()),
    };
    let server = server.rsplit_once('/').map_or(server, |(s, _)| s);
    let empty = format!("{server}/{name}{query}");
    let (code, _) = run_cli(&empty, &d.prefix, &["--wait-secs", "0"]).await;
    let created: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .expect("tables");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`")))
        .execute(&pool)
        .await
        .expect("drop the empty database");
    assert_eq!(code, Some(2));
    assert_eq!(created, 0, "the checker created nothing");
    d.close().await;
}
