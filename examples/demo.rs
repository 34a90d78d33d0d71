//! The main job: the reference shop under a burst of concurrent orders.
//!
//! Seeds the reference data (Alice, Bob, Charlie; the five products including "Limited
//! Edition Headphones" with stock 1), starts workers with the reference payment
//! simulation (50–200 ms, 80 % approval), fires a burst of concurrent orders — 50 of
//! them racing for the headphones — waits for every order to reach a terminal state, and
//! prints counts per status, throughput and the invariant check. Exits non-zero when an
//! invariant fails.
//!
//! By default everything runs in this process on the memory adapters. With
//! `DATABASE_URL` and `REDIS_URL` set it runs on MySQL/MariaDB (migrations applied first)
//! and Redis instead; each run then seeds its own users and products, so runs never see
//! each other's stock.
//!
//! ```text
//! cargo run --release --example demo -- [--orders N] [--workers N] [--seed S] [--lock redis|none]
//! DATABASE_URL=mysql://… REDIS_URL=redis://… cargo run --release --example demo --features mysql,redis
//! ```
#![allow(clippy::print_stdout)]

#[path = "support/telemetry.rs"]
mod telemetry;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use order_engine::core::app::{
    CreateOrderError, CreateOrderRequest, ErrorChain, LockMode, LockPolicy, OrderService,
    SeededRandom, ServiceConfig,
};
use order_engine::core::domain::{Order, OrderId, OrderStatus, ProductId, UserId};
use order_engine::core::ports::{PaymentOutcome, RandomSource};
use order_engine::memory::{ReferenceData, seed_reference_data};
use order_engine::payment_sim::{PaymentLedger, SimConfig};
use order_engine::{Engine, Workers};

type AnyError = Box<dyn std::error::Error>;

/// The reference shop under a burst of concurrent orders, with an invariant check.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// Create requests in the burst.
    #[arg(long, default_value_t = 1_000)]
    orders: usize,
    /// Worker tasks (plus one reconciler).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Seed of the burst and of the payment simulation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How create_order reduces contention in front of the database.
    #[arg(long, value_enum, default_value_t = Lock::Redis)]
    lock: Lock,
    /// MySQL/MariaDB URL: with --redis-url, run on the real adapters (needs the
    /// `mysql` and `redis` features).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Redis URL: with --database-url, run on the real adapters.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Redis key prefix (default: one of the run's own, deleted when it ends).
    #[arg(long, env = "ORDERS_REDIS_PREFIX")]
    redis_prefix: Option<String>,
}

/// `--lock`: the reference's per-product distributed locks, or the database alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lock {
    /// Per-product distributed locks (Redis in the real mode), as the reference does.
    Redis,
    /// The database's row locks only.
    None,
}

/// The shop the demo drives, on whichever adapters.
struct Shop {
    label: String,
    service: Arc<OrderService>,
    ledger: Arc<dyn PaymentLedger>,
    users: [UserId; 3],
    /// Laptop, mouse, hub, keyboard.
    catalogue: [ProductId; 4],
    headphones: ProductId,
    /// The Redis keys of this run, deleted when it ends (none for the embedded shop).
    #[cfg(feature = "redis")]
    redis_run_keys: Option<order_engine::redis::RedisConnection>,
}

fn simulation(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        ..SimConfig::default()
    }
}

async fn embedded(seed: u64, config: ServiceConfig) -> Result<Shop, AnyError> {
    let engine = Engine::builder()
        .memory()
        .simulated_payments(simulation(seed))
        .rng(Arc::new(SeededRandom::new(seed)))
        .config(config)
        .build()
        .await?;
    let memory = engine.memory().ok_or("built with .memory()")?;
    let r: ReferenceData = seed_reference_data(&memory.repository);
    let ledger = engine
        .simulated_payments()
        .ok_or("built with .simulated_payments()")?
        .ledger()
        .clone();
    Ok(Shop {
        label: "embedded: memory adapters".into(),
        service: engine.service().clone(),
        ledger,
        users: [r.alice, r.bob, r.charlie],
        catalogue: [r.laptop, r.mouse, r.hub, r.keyboard],
        headphones: r.headphones,
        #[cfg(feature = "redis")]
        redis_run_keys: None,
    })
}

#[cfg(all(feature = "mysql", feature = "redis"))]
async fn real(
    args: &Args,
    database_url: &str,
    redis_url: &str,
    config: ServiceConfig,
) -> Result<Shop, AnyError> {
    use order_engine::core::domain::Money;
    use order_engine::core::ports::Clock;
    use order_engine::memory::SystemClock;
    use order_engine::redis::{RedisConfig, RedisConnection};
    use sqlx::migrate::MigrateDatabase;

    if !sqlx::MySql::database_exists(database_url).await? {
        sqlx::MySql::create_database(database_url).await?;
    }
    let pool = order_engine::mysql::connect(database_url, 64).await?;
    order_engine::mysql::migrate(&pool).await?;
    // A run tag keeps this run's users, products and Redis keys apart from other runs'.
    let run = SystemClock::new().now().as_millis();
    // Without a prefix given, the run works under a prefix of its own and deletes it at
    // the end, so the shared server is left as it was found.
    let (prefix, own_prefix) = match &args.redis_prefix {
        Some(prefix) => (prefix.clone(), false),
        None => (format!("orders-demo:{run}:"), true),
    };
    let redis = RedisConnection::connect(RedisConfig::new(redis_url).with_prefix(prefix)).await?;
    let redis_run_keys = own_prefix.then(|| redis.clone());
    let engine = Engine::builder()
        .mysql(pool)
        .redis(&redis)
        .simulated_payments(simulation(args.seed))
        .config(config)
        .build()
        .await?;
    let repository = engine.mysql().ok_or("built with .mysql()")?;
    let mut users = Vec::new();
    for name in ["Alice", "Bob", "Charlie"] {
        let email = format!("{}+demo{run}@example.com", name.to_lowercase());
        // No login for demo users: the hash is not a valid argon2 string on purpose.
        users.push(repository.add_user(name, &email, "!demo").await?);
    }
    let mut products = Vec::new();
    for (name, cents, stock) in ReferenceData::PRODUCTS {
        let price = Money::from_cents(cents)?;
        products.push(repository.add_product(name, price, stock).await?);
    }
    let ledger = engine
        .simulated_payments()
        .ok_or("built with .simulated_payments()")?
        .ledger()
        .clone();
    Ok(Shop {
        label: "MySQL + Redis".into(),
        service: engine.service().clone(),
        ledger,
        users: [users[0], users[1], users[2]],
        catalogue: [products[0], products[1], products[2], products[3]],
        headphones: products[4],
        redis_run_keys,
    })
}

#[cfg(not(all(feature = "mysql", feature = "redis")))]
async fn real(_: &Args, _: &str, _: &str, _: ServiceConfig) -> Result<Shop, AnyError> {
    Err("the real adapters need the `mysql` and `redis` features: \
         cargo run --release --example demo --features mysql,redis"
        .into())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init();
    let config = ServiceConfig {
        lock: LockPolicy {
            mode: match args.lock {
                Lock::Redis => LockMode::Distributed,
                Lock::None => LockMode::None,
            },
            ..LockPolicy::default()
        },
        ..ServiceConfig::default()
    };
    // An empty variable counts as unset.
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let shop = match (&set(&args.database_url), &set(&args.redis_url)) {
        (Some(db), Some(redis)) => real(&args, db, redis, config).await,
        (Some(_), None) | (None, Some(_)) => {
            eprintln!(
                "demo: set both DATABASE_URL and REDIS_URL for the real adapters, or neither"
            );
            return ExitCode::from(2);
        }
        (None, None) => embedded(args.seed, config).await,
    };
    let result = match shop {
        Ok(shop) => run(&args, shop).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {}", ErrorChain(&*e));
            ExitCode::FAILURE
        }
    }
}

/// One request of the burst: (wants the headphones, user, lines).
type Planned = (bool, UserId, Vec<(ProductId, u32)>);

/// The burst, deterministic for a seed.
fn burst(args: &Args, shop: &Shop) -> Vec<Planned> {
    let rng = SeededRandom::new(args.seed);
    let next = || rng.next_u64();
    let every = (args.orders / 50).max(1);
    (0..args.orders)
        .map(|i| {
            let user = shop.users[i % 3];
            if i % every == 0 && i / every < 50 {
                (true, user, vec![(shop.headphones, 1)])
            } else {
                let lines = 1 + (next() % 2) as usize;
                (
                    false,
                    user,
                    (0..lines)
                        .map(|_| (shop.catalogue[(next() % 4) as usize], 1))
                        .collect(),
                )
            }
        })
        .collect()
}

async fn run(args: &Args, shop: Shop) -> Result<bool, AnyError> {
    let mut products = shop.catalogue.to_vec();
    products.push(shop.headphones);
    let stock_of = |list: Vec<order_engine::core::domain::Product>| -> BTreeMap<ProductId, u64> {
        list.into_iter()
            .filter(|p| products.contains(&p.id))
            .map(|p| (p.id, p.stock))
            .collect()
    };
    let initial = stock_of(shop.service.list_products().await?);
    let requests = burst(args, &shop);
    let racing = requests.iter().filter(|(h, _, _)| *h).count();

    let lock = match args.lock {
        Lock::Redis => "per-product distributed locks",
        Lock::None => "database row locks only",
    };
    println!(
        "order-engine demo ({}, {lock}; simulated payments 50-200 ms, 80 % approval)",
        shop.label
    );
    println!(
        "  {} orders incl. {racing} racing for 1 \"Limited Edition Headphones\", {} workers, seed {}",
        args.orders, args.workers, args.seed
    );

    let workers = Workers::spawn_with_reconciler(&shop.service, usize::from(args.workers));

    let started = Instant::now();
    let tasks: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, (headphones, user, items))| {
            let service = shop.service.clone();
            tokio::spawn(async move {
                let request = CreateOrderRequest::new(user, items, format!("demo-{i}"));
                (headphones, user, service.create_order(request).await)
            })
        })
        .collect();
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut headphones_won = 0;
    let mut placed: Vec<(UserId, OrderId)> = Vec::new();
    let mut first_error = None;
    for t in tasks {
        let (headphones, user, result) = t.await?;
        let label = match &result {
            Ok(c) => {
                placed.push((user, c.order.id()));
                "accepted"
            }
            Err(CreateOrderError::InsufficientStock { .. }) => "insufficient stock (409)",
            Err(CreateOrderError::LockConflict { .. }) => "lock conflict (409)",
            Err(e) => {
                first_error.get_or_insert_with(|| ErrorChain(e).to_string());
                "other error"
            }
        };
        headphones_won += usize::from(headphones && result.is_ok());
        *outcomes.entry(label).or_default() += 1;
    }
    let intake = started.elapsed();

    // Wait until every placed order is terminal.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pending = placed;
    let mut orders: HashMap<OrderId, Order> = HashMap::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (user, id) in pending {
            let order = shop.service.get_order(user, id).await?;
            if order.status().is_terminal() {
                orders.insert(id, order);
            } else {
                still.push((user, id));
            }
        }
        pending = still;
        if !pending.is_empty() {
            if Instant::now() > deadline {
                println!("FAIL: {} orders still in flight after 300 s", pending.len());
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let total = started.elapsed();
    workers.stop(Duration::from_secs(10)).await?;
    #[cfg(feature = "redis")]
    if let Some(redis) = &shop.redis_run_keys {
        redis.delete_prefix().await?;
    }

    let mut by_status: BTreeMap<OrderStatus, u64> = BTreeMap::new();
    for o in orders.values() {
        *by_status.entry(o.status()).or_default() += 1;
    }
    let join = |m: Vec<String>| m.join(", ");
    println!(
        "\nrequests: {}",
        join(outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect())
    );
    if let Some(e) = first_error {
        println!("  first other error: {e}");
    }
    println!(
        "orders:   {}",
        join(by_status.iter().map(|(k, v)| format!("{v} {k}")).collect())
    );
    println!(
        "throughput: intake {:.0} requests/s ({:.2} s); end to end {:.0} orders/s ({:.2} s, {} workers)",
        args.orders as f64 / intake.as_secs_f64(),
        intake.as_secs_f64(),
        orders.len() as f64 / total.as_secs_f64(),
        total.as_secs_f64(),
        args.workers
    );
    let stats = shop.service.stats();
    println!(
        "service: {} lock retries, {} lock conflicts, {} lock fail-open, {} payment retries, {} events not published",
        stats.lock_retries,
        stats.lock_conflicts,
        stats.lock_fail_open,
        stats.payment_retries,
        stats.publish_failures
    );

    // Invariants.
    let mut failures = Vec::new();
    let stock = stock_of(shop.service.list_products().await?);
    for (product, start) in &initial {
        let held: u64 = orders
            .values()
            .filter(|o| o.status().holds_stock())
            .flat_map(|o| o.lines().iter())
            .filter(|l| l.product == *product)
            .map(|l| u64::from(l.quantity.get()))
            .sum();
        let now = stock.get(product).copied().unwrap_or(0);
        if *start != now + held {
            failures.push(format!(
                "product {product}: initial {start} != stock {now} + held {held}"
            ));
        }
    }
    // A failed payment returns the unit, so a later racer may win it again: what must
    // hold is that at most one order ever keeps it, and that someone got it first.
    let headphones_kept = orders
        .values()
        .filter(|o| {
            o.status().holds_stock() && o.lines().iter().any(|l| l.product == shop.headphones)
        })
        .count();
    println!(
        "headphones: {headphones_won} of {racing} racers accepted over the run ({} returned after a failed payment), {headphones_kept} kept",
        headphones_won.saturating_sub(headphones_kept)
    );
    let released_otherwise = orders
        .values()
        .filter(|o| o.lines().iter().any(|l| l.product == shop.headphones))
        .filter(|o| !o.status().holds_stock() && o.status() != OrderStatus::Failed)
        .count();
    if headphones_won == 0 || headphones_kept > 1 || released_otherwise > 0 {
        failures.push(format!(
            "headphones: {headphones_won} accepted, {headphones_kept} kept, {released_otherwise} released other than by a failed payment"
        ));
    }
    let ledger: HashMap<OrderId, PaymentOutcome> = shop
        .ledger
        .entries()
        .await?
        .into_iter()
        .filter(|e| orders.contains_key(&e.key))
        .map(|e| (e.key, e.outcome))
        .collect();
    for o in orders.values() {
        let recorded = ledger.get(&o.id());
        let ok = match o.status() {
            OrderStatus::Paid => recorded == Some(&PaymentOutcome::Approved),
            OrderStatus::Failed => !matches!(recorded, Some(PaymentOutcome::Approved)),
            OrderStatus::Cancelled => recorded.is_none(),
            OrderStatus::Pending | OrderStatus::Processing => false,
        };
        if !ok {
            failures.push(format!(
                "order {} is {} but the ledger says {recorded:?}",
                o.id(),
                o.status()
            ));
        }
        if Ok(o.total()) != Order::total_of(o.lines()) {
            failures.push(format!(
                "order {}: total is not the sum of its lines",
                o.id()
            ));
        }
    }
    if failures.is_empty() {
        println!(
            "invariants: OK (stock conserved for {} products, headphones kept by at most one order, {} charges for {} orders, <= 1 per order by ledger key, totals exact)",
            initial.len(),
            ledger.len(),
            orders.len()
        );
        Ok(true)
    } else {
        for f in &failures {
            println!("invariant FAILED: {f}");
        }
        Ok(false)
    }
}
