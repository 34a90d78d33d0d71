//! The `hot` and `spread` cells: C clients placing single-line orders for `--duration`
//! seconds through one path, on products of their own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use order_engine::Engine;
use order_engine::core::app::{
    CreateOrderError, CreateOrderRequest, ErrorChain, LockMode, LockPolicy, OrderService,
    ServiceConfig,
};
use order_engine::core::domain::{ProductId, UserId};
use order_engine::mysql::{CoalesceConfig, MySqlOrderRepository, MySqlPool};
use order_engine::payment_sim::SimConfig;
use order_engine::redis::{RedisConfig, RedisConnection};

use crate::db::{self, Counters};
use crate::http::{self, HttpConn};
use crate::report::Cell;
use crate::{AnyError, PathKind, Run, Scenario, micros, percentiles};

/// What every create cell shares.
pub(crate) struct Shared {
    /// Setup and checks.
    pub admin: MySqlPool,
    /// One user per client (index = client number).
    pub users: Arc<Vec<u64>>,
    /// Bearer tokens of the first users, for `http`.
    pub tokens: Arc<Vec<String>>,
    /// The running servers, for `http` (a cell of N processes uses the first N).
    pub server_addrs: Vec<SocketAddr>,
}

/// How one order goes out.
enum Target {
    Raw(MySqlPool),
    Service(Arc<OrderService>),
    /// The servers (client `i` uses `i % len`) and the clients' tokens.
    Http(Vec<SocketAddr>, Arc<Vec<String>>),
}

/// One order's outcome.
enum Outcome {
    Accepted,
    Rejected,
    Error(String),
}

/// Measures one cell: fresh products, the path's engine (if any), C clients for the
/// duration (over `processes` servers for `http`), then the invariant check.
pub(crate) async fn measure(
    run: &Arc<Run>,
    shared: &Shared,
    scenario: Scenario,
    path: PathKind,
    concurrency: u16,
    processes: u16,
) -> Result<Cell, AnyError> {
    let args = &run.args;
    let cell = run.next_cell();
    let products = match scenario {
        Scenario::Hot => db::create_products(&shared.admin, cell, 1, args.hot_stock).await?,
        _ => {
            db::create_products(&shared.admin, cell, args.spread_products, args.spread_stock)
                .await?
        }
    };
    let c = usize::from(concurrency);
    let pool_size = u32::from(concurrency) + 2;
    let mut pool = None;
    let mut redis = None;
    let mut repository = None;
    let target = match path {
        PathKind::Raw => {
            let p = order_engine::mysql::connect(&run.main_url, pool_size).await?;
            pool = Some(p.clone());
            Target::Raw(p)
        }
        PathKind::Http => {
            let n = usize::from(processes);
            if shared.server_addrs.len() < n {
                return Err(format!(
                    "{} servers for a cell of {n} API processes",
                    shared.server_addrs.len()
                )
                .into());
            }
            if shared.tokens.len() < c {
                return Err(format!("{} tokens for {c} clients", shared.tokens.len()).into());
            }
            Target::Http(shared.server_addrs[..n].to_vec(), shared.tokens.clone())
        }
        PathKind::ServiceRedis | PathKind::ServiceNone | PathKind::ServiceCoalesced => {
            let p = order_engine::mysql::connect(&run.main_url, pool_size).await?;
            pool = Some(p.clone());
            let config =
                RedisConfig::new(args.redis_url.clone()).with_prefix(run.cell_prefix(cell));
            let connection = RedisConnection::connect(config).await?;
            let repo = MySqlOrderRepository::new(p);
            let (repo, mode) = match path {
                // The server's configuration: the reference's Redis locks, the repository
                // as `new` makes it.
                PathKind::ServiceRedis => (repo, LockMode::Distributed),
                PathKind::ServiceNone => (repo.without_coalescing(), LockMode::None),
                _ => (
                    repo.with_coalescing(CoalesceConfig::default()),
                    LockMode::None,
                ),
            };
            let repo = Arc::new(repo);
            repository = Some(repo.clone());
            let engine = Engine::builder()
                .repository(repo)
                .redis(&connection)
                .simulated_payments(SimConfig::default())
                .config(ServiceConfig {
                    lock: LockPolicy {
                        mode,
                        ..LockPolicy::default()
                    },
                    ..ServiceConfig::default()
                })
                .build()
                .await?;
            redis = Some(connection);
            Target::Service(engine.service().clone())
        }
    };
    let target = Arc::new(target);
    let label = format!("{} c={concurrency} {}", scenario.name(), path.name());
    run.progress(&format!("{label}: {} s ...", args.duration));

    let before = Counters::read(&shared.admin).await.ok();
    let measured = drive(
        run,
        &label,
        target.clone(),
        scenario,
        Arc::new(products),
        shared.users.clone(),
        c,
        cell,
    )
    .await;
    let after = Counters::read(&shared.admin).await.ok();

    let mut note = String::new();
    if let Some(repo) = &repository {
        let stats = repo.coalescing_stats();
        if stats.batches == 0 && stats.solo > 0 {
            note.push_str(&format!(
                "coalescing on, every draft placed alone ({}); ",
                stats.solo
            ));
        } else if stats.batches > 0 {
            note.push_str(&format!(
                "coalescing: {} batches of {} drafts (mean {:.1}, largest {}), {} alone, {} fallbacks; ",
                stats.batches,
                stats.drafts,
                stats.drafts as f64 / stats.batches.max(1) as f64,
                stats.largest_batch,
                stats.solo,
                stats.fallbacks
            ));
        }
        let retries = repo.retry_count();
        if retries > 0 {
            note.push_str(&format!("{retries} deadlock/lock-wait retries; "));
        }
    }
    if let Target::Service(service) = &*target {
        let stats = service.stats();
        if stats.lock_conflicts > 0 || stats.lock_retries > 0 || stats.lock_fail_open > 0 {
            note.push_str(&format!(
                "lock retries {}, lock conflicts {}, lock fail-open {}; ",
                stats.lock_retries, stats.lock_conflicts, stats.lock_fail_open
            ));
        }
    }
    let mut measured = measured?;
    if let Some(e) = &measured.first_error {
        note.push_str(&format!("first error: {e}"));
    }
    drop(target);
    if let Some(p) = pool {
        p.close().await;
    }
    if let Some(connection) = redis {
        // The cell's queued jobs and event channels: nothing consumes them.
        let _ = connection.delete_prefix().await;
    }

    let invariants = db::check_cell(&shared.admin, cell, Some(measured.accepted)).await?;
    let (p50, p99, max) = percentiles(&mut measured.latencies);
    let statements = match (before, after) {
        (Some(b), Some(a)) => Some(a.per_order(&b, 1, measured.accepted)),
        _ => None,
    };
    Ok(Cell {
        scenario: scenario.name(),
        path: path.name(),
        concurrency: u32::from(concurrency),
        payment: None,
        runner: None,
        processes: if path == PathKind::Http {
            u32::from(processes)
        } else {
            1
        },
        throughput: measured.accepted as f64 / measured.seconds,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        accepted: measured.accepted,
        rejected: measured.rejected,
        errors: measured.errors,
        seconds: measured.seconds,
        ratio: None,
        statements_per_order: statements.as_ref().map(|s| s.statements()),
        statements_breakdown: statements.as_ref().map(|s| s.breakdown()),
        ideal_fraction: None,
        steady_fraction: None,
        invariants_ok: invariants.ok,
        invariants: invariants.summary,
        note: note.trim_end_matches("; ").to_owned(),
    })
}

/// What the clients of one cell saw.
struct Measured {
    accepted: u64,
    rejected: u64,
    errors: u64,
    first_error: Option<String>,
    /// Per order, accepted or not, µs.
    latencies: Vec<u32>,
    seconds: f64,
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    run: &Arc<Run>,
    label: &str,
    target: Arc<Target>,
    scenario: Scenario,
    products: Arc<Vec<u64>>,
    users: Arc<Vec<u64>>,
    concurrency: usize,
    cell: u32,
) -> Result<Measured, AnyError> {
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for client in 0..concurrency {
        let (target, products, stop, accepted) = (
            target.clone(),
            products.clone(),
            stop.clone(),
            accepted.clone(),
        );
        let user = *users.get(client).ok_or("fewer users than clients")?;
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((client as u64 + 1) << 17) ^ u64::from(cell);
            let mut latencies = Vec::with_capacity(4096);
            let (mut ok, mut rejected, mut errors, mut first_error) = (0u64, 0u64, 0u64, None);
            let mut conn: Option<HttpConn> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let product = match scenario {
                    Scenario::Hot => products[0],
                    _ => {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        products[(rng % products.len() as u64) as usize]
                    }
                };
                let key = format!("lg{cell}-{client}-{n}");
                let t = Instant::now();
                let outcome = match &*target {
                    Target::Raw(pool) => raw_order(pool, user, product, &key).await,
                    Target::Service(service) => service_order(service, user, product, key).await,
                    Target::Http(addrs, tokens) => {
                        let addr = addrs[client % addrs.len()];
                        http_order(&mut conn, addr, &tokens[client], product, &key).await
                    }
                };
                latencies.push(micros(t.elapsed()));
                match outcome {
                    Outcome::Accepted => {
                        ok += 1;
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Rejected => rejected += 1,
                    Outcome::Error(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        // Don't spin on a dead backend.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, rejected, errors, first_error, latencies)
        }));
    }
    let deadline = started + Duration::from_secs(run.args.duration);
    let live = run.live();
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        if live {
            eprint!(
                "\r    {label}: {:>4.1} s, {} accepted   ",
                started.elapsed().as_secs_f64(),
                accepted.load(Ordering::Relaxed)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut out = Measured {
        accepted: 0,
        rejected: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
        seconds: 0.0,
    };
    for task in tasks {
        let (ok, rejected, errors, first_error, latencies) = task.await?;
        out.accepted += ok;
        out.rejected += rejected;
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
        out.latencies.extend(latencies);
    }
    out.seconds = started.elapsed().as_secs_f64();
    if live {
        eprint!("\r{:60}\r", "");
    }
    Ok(out)
}

/// The hand-rolled transaction the engine is measured against: conditional decrement,
/// order, line, commit.
async fn raw_order(pool: &MySqlPool, user: u64, product: u64, key: &str) -> Outcome {
    match raw_order_tx(pool, user, product, key).await {
        Ok(true) => Outcome::Accepted,
        Ok(false) => Outcome::Rejected,
        Err(e) => Outcome::Error(format!("raw: {e}")),
    }
}

async fn raw_order_tx(
    pool: &MySqlPool,
    user: u64,
    product: u64,
    key: &str,
) -> Result<bool, sqlx::Error> {
    const QUANTITY: u32 = 1;
    let mut tx = pool.begin().await?;
    let updated = sqlx::query("UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ?")
        .bind(QUANTITY)
        .bind(product)
        .bind(QUANTITY)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    let order = sqlx::query(
        "INSERT INTO orders (user_id, status, total_amount, idempotency_key, \
         request_fingerprint, attempts, created_at, updated_at) \
         VALUES (?, 'PENDING', 9.99, ?, 0, 0, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(user)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
         VALUES (?, ?, ?, 9.99)",
    )
    .bind(order.last_insert_id())
    .bind(product)
    .bind(QUANTITY)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

async fn service_order(service: &OrderService, user: u64, product: u64, key: String) -> Outcome {
    let (Ok(user), Ok(product)) = (UserId::new(user), ProductId::new(product)) else {
        return Outcome::Error("invalid id".to_owned());
    };
    let request = CreateOrderRequest::new(user, [(product, 1)], key);
    match service.create_order(request).await {
        Ok(_) => Outcome::Accepted,
        Err(
            CreateOrderError::InsufficientStock { .. }
            | CreateOrderError::LockConflict { .. }
            | CreateOrderError::IdempotencyKeyInFlight,
        ) => Outcome::Rejected,
        Err(e) => Outcome::Error(ErrorChain(&e).to_string()),
    }
}

async fn http_order(
    conn: &mut Option<HttpConn>,
    addr: SocketAddr,
    token: &str,
    product: u64,
    key: &str,
) -> Outcome {
    let body = format!(
        r#"{{"items":[{{"product_id":{product},"quantity":1}}],"idempotency_key":"{key}"}}"#
    );
    let connection = match conn {
        Some(c) => c,
        None => match HttpConn::open(addr).await {
            Ok(c) => conn.insert(c),
            Err(e) => return Outcome::Error(format!("http connect: {e}")),
        },
    };
    match connection.post("/api/orders", Some(token), body).await {
        Ok((201, _)) => Outcome::Accepted,
        Ok((409 | 422 | 429, _)) => Outcome::Rejected,
        Ok((status, body)) => Outcome::Error(format!("http {status}: {}", http::excerpt(&body))),
        Err(e) => {
            *conn = None;
            Outcome::Error(format!("http: {e}"))
        }
    }
}
