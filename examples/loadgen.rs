//! Load generator: measures a path of the engine against the raw database limit in the
//! SAME run, and reports the ratio (figures on a shared 2-core machine move ±10 % run to
//! run; only same-run ratios mean anything).
//!
//! Scenario `place` (the default): one hot product, `--concurrency` tasks (32), each
//! placing single-line orders for `--seconds` per round, alternating
//! - `raw`: the three-statement transaction a team would hand-roll — conditional
//!   `UPDATE products SET stock = stock - 1 WHERE id = ? AND stock >= 1`, `INSERT INTO
//!   orders`, `INSERT INTO order_items`, `COMMIT`;
//! - `adapter`: `MySqlOrderRepository::place` with one draft — row lock, stock check,
//!   order + lines + idempotency record, deadlock/lock-wait retries.
//!
//! ```text
//! DATABASE_URL=mysql://orders:orders@127.0.0.1:3306/orders_loadgen \
//!   cargo run --release --example loadgen -- [--concurrency 32] [--seconds 10] [--rounds 3]
//! ```
#![allow(clippy::print_stdout)]

#[path = "support/telemetry.rs"]
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use order_engine::core::app::ErrorChain;
use order_engine::core::domain::{IdempotencyKey, Money, OrderDraft, ProductId, Quantity, UserId};
use order_engine::core::ports::{Clock, OrderRepository, PlaceOutcome};
use order_engine::memory::SystemClock;
use order_mysql::{MySqlOrderRepository, MySqlPool};
use sqlx::migrate::MigrateDatabase;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Measures `MySqlOrderRepository::place` against the raw database limit, same run.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Place)]
    scenario: Scenario,
    /// Concurrent tasks per path.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Seconds per path and round.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Rounds (the paths alternate; the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// A MySQL/MariaDB database the load generator may create and migrate.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

/// `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One hot product: `place` vs the hand-rolled 3-statement transaction.
    Place,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init();
    let url = args.database_url.clone();
    match run(&args, &url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {}", ErrorChain(&*e));
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Raw,
    Adapter,
}

struct Shop {
    pool: MySqlPool,
    repository: Arc<MySqlOrderRepository>,
    user: UserId,
    product: ProductId,
}

async fn run(args: &Args, url: &str) -> Result<(), AnyError> {
    if !sqlx::MySql::database_exists(url).await? {
        sqlx::MySql::create_database(url).await?;
    }
    let pool = order_mysql::connect(url, args.concurrency as u32 + 2).await?;
    order_mysql::migrate(&pool).await?;
    let repository = Arc::new(MySqlOrderRepository::new(pool.clone()));
    let run_tag = SystemClock::new().now().as_millis();
    let user = repository
        .add_user("loadgen", &format!("loadgen+{run_tag}@example.com"), "!")
        .await?;
    let product = repository
        .add_product("hot", Money::parse("9.99")?, 4_000_000_000)
        .await?;
    let shop = Arc::new(Shop {
        pool,
        repository,
        user,
        product,
    });

    println!(
        "loadgen place: one hot product, concurrency {}, {} rounds x {} s per path (alternating)",
        args.concurrency, args.rounds, args.seconds
    );
    let mut raw = Vec::new();
    let mut adapter = Vec::new();
    for round in 0..args.rounds {
        for path in [Path::Raw, Path::Adapter] {
            let (rate, p99) = measure(&shop, path, args, run_tag, usize::from(round)).await?;
            let name = if path == Path::Raw {
                "raw    "
            } else {
                "adapter"
            };
            println!(
                "  round {} {name}: {rate:>7.0} orders/s  p99 {:>6.1} ms",
                round + 1,
                p99.as_secs_f64() * 1e3
            );
            if path == Path::Raw {
                raw.push(rate)
            } else {
                adapter.push(rate)
            }
        }
    }
    let (raw_median, adapter_median) = (median(&mut raw), median(&mut adapter));
    println!(
        "median: raw {raw_median:.0} orders/s, adapter {adapter_median:.0} orders/s, adapter/raw = {:.2}",
        adapter_median / raw_median
    );
    println!(
        "adapter deadlock/lock-wait retries: {}",
        shop.repository.retry_count()
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(
    shop: &Arc<Shop>,
    path: Path,
    args: &Args,
    tag: u64,
    round: usize,
) -> Result<(f64, Duration), AnyError> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|task| {
            let (shop, stop, done) = (shop.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!(
                        "{tag}-{round}-{task}-{n}-{}",
                        if path == Path::Raw { "r" } else { "a" }
                    );
                    let t = Instant::now();
                    match path {
                        Path::Raw => raw_order(&shop, &key).await?,
                        Path::Adapter => adapter_order(&shop, &key).await?,
                    }
                    latencies.push(t.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, AnyError>(latencies)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    Ok((done.load(Ordering::Relaxed) as f64 / elapsed, p99))
}

/// The hand-rolled transaction: what the adapter is measured against.
async fn raw_order(shop: &Shop, key: &str) -> Result<(), AnyError> {
    let mut tx = shop.pool.begin().await?;
    let updated = sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = ? AND stock >= 1")
        .bind(shop.product.get())
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() != 1 {
        return Err("raw: out of stock".into());
    }
    let order = sqlx::query(
        "INSERT INTO orders (user_id, status, total_amount, idempotency_key, request_fingerprint, \
         attempts, created_at, updated_at) VALUES (?, 'PENDING', 9.99, ?, 0, 0, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(shop.user.get())
    .bind(key)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (?, ?, 1, 9.99)")
        .bind(order.last_insert_id())
        .bind(shop.product.get())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn adapter_order(shop: &Shop, key: &str) -> Result<(), AnyError> {
    let draft = OrderDraft::new(
        shop.user,
        [(shop.product, Quantity::new(1)?)],
        IdempotencyKey::new(key)?,
    )?;
    let now = SystemClock::new().now();
    match shop
        .repository
        .place(std::slice::from_ref(&draft), now)
        .await?
        .pop()
    {
        Some(PlaceOutcome::Placed(..)) => Ok(()),
        other => Err(format!("adapter: unexpected outcome {other:?}").into()),
    }
}
