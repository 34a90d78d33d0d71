//! The main job on the embedded default: the reference shop in one process.
//!
//! Seeds the reference data (Alice, Bob, Charlie; the five products including "Limited
//! Edition Headphones" with stock 1), starts workers with the reference payment
//! simulation (50–200 ms, 80 % approval), fires a burst of concurrent orders — 50 of
//! them racing for the headphones — waits for every order to reach a terminal state, and
//! prints counts per status, throughput and the invariant check. Exits non-zero when an
//! invariant fails.
//!
//! ```text
//! cargo run --release --example demo -- [--orders N] [--workers N] [--seed S]
//! ```
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use order_engine::Embedded;
use order_engine::core::app::{
    CreateOrderError, CreateOrderRequest, OrderService, RequestedItem, ServiceConfig,
};
use order_engine::core::domain::{OrderStatus, ProductId};
use order_engine::core::ports::{Clock, PaymentOutcome};
use order_engine::memory::{QueueConfig, SystemClock, seed_reference_data};
use order_engine::payment_sim::SimConfig;

struct Args {
    orders: usize,
    workers: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        orders: 1_000,
        workers: 128,
        seed: 42,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--orders" => args.orders = n as usize,
            "--workers" => args.workers = (n as usize).max(1),
            "--seed" => args.seed = n,
            _ => {
                return Err(format!(
                    "unknown flag {flag} (use --orders, --workers, --seed)"
                ));
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let sim = SimConfig {
        seed: args.seed,
        ..SimConfig::default()
    };
    let engine = Embedded::new(clock, ServiceConfig::default(), sim, QueueConfig::default())?;
    let refdata = seed_reference_data(&engine.adapters.repository);
    let users = [refdata.alice, refdata.bob, refdata.charlie];
    let catalogue = [refdata.laptop, refdata.mouse, refdata.hub, refdata.keyboard];
    let initial: BTreeMap<ProductId, u64> = engine
        .service
        .list_products()
        .await?
        .into_iter()
        .map(|p| (p.id, p.stock))
        .collect();

    println!(
        "order-engine demo (embedded: memory adapters + simulated payments 50-200 ms, 80 % approval)"
    );
    println!(
        "  {} orders incl. 50 racing for 1 \"Limited Edition Headphones\", {} workers, seed {}",
        args.orders, args.workers, args.seed
    );

    // Workers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..args.workers)
        .map(|_| {
            let service: Arc<OrderService> = engine.service.clone();
            let mut rx = stop_rx.clone();
            tokio::spawn(async move {
                service
                    .run_worker(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await
            })
        })
        .collect();

    // The burst: every request is its own task; 50 of them want the headphones.
    let started = Instant::now();
    let mut requests = Vec::with_capacity(args.orders);
    let mut rng = args.seed | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..args.orders {
        let user = users[i % users.len()];
        let items = if i % (args.orders / 50).max(1) == 0
            && requests.iter().filter(|(h, _, _)| *h).count() < 50
        {
            (true, vec![(refdata.headphones, 1)])
        } else {
            let lines = 1 + (next() % 2) as usize;
            (
                false,
                (0..lines)
                    .map(|_| (catalogue[(next() % 4) as usize], 1))
                    .collect(),
            )
        };
        requests.push((items.0, user, items.1));
    }
    let tasks: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, (headphones, user, items))| {
            let service = engine.service.clone();
            tokio::spawn(async move {
                let request = CreateOrderRequest {
                    user,
                    items: items
                        .iter()
                        .map(|(p, q): &(ProductId, i64)| RequestedItem {
                            product_id: p.get() as i64,
                            quantity: *q,
                        })
                        .collect(),
                    idempotency_key: format!("demo-{i}"),
                };
                (headphones, service.create_order(request).await)
            })
        })
        .collect();
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut headphones_won = 0;
    for t in tasks {
        let (headphones, result) = t.await?;
        let label = match &result {
            Ok(_) => "accepted",
            Err(CreateOrderError::InsufficientStock { .. }) => "insufficient stock (409)",
            Err(CreateOrderError::LockConflict { .. }) => "lock conflict (409)",
            Err(_) => "other error",
        };
        if headphones && result.is_ok() {
            headphones_won += 1;
        }
        *outcomes.entry(label).or_default() += 1;
    }
    let intake = started.elapsed();

    // Wait for the workers to drain everything.
    let deadline = Instant::now() + Duration::from_secs(120);
    while engine
        .adapters
        .repository
        .orders()
        .iter()
        .any(|o| !o.status().is_terminal())
    {
        if Instant::now() > deadline {
            println!("FAIL: orders still in flight after 120 s");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    let _ = stop_tx.send(true);
    for w in workers {
        w.await?;
    }

    let orders = engine.adapters.repository.orders();
    let mut by_status: BTreeMap<OrderStatus, u64> = BTreeMap::new();
    for o in &orders {
        *by_status.entry(o.status()).or_default() += 1;
    }
    println!(
        "\nrequests: {}",
        outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "orders:   {}",
        by_status
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "throughput: intake {:.0} requests/s ({:.2} s); end to end {:.0} orders/s ({:.2} s, {} workers)",
        args.orders as f64 / intake.as_secs_f64(),
        intake.as_secs_f64(),
        orders.len() as f64 / total.as_secs_f64(),
        total.as_secs_f64(),
        args.workers
    );

    let stats = engine.service.stats();
    println!(
        "service: {} lock retries, {} lock conflicts, {} payment retries, {} events not published",
        stats.lock_retries, stats.lock_conflicts, stats.payment_retries, stats.publish_failures
    );

    // Invariants.
    let mut failures = Vec::new();
    let stock: BTreeMap<ProductId, u64> = engine
        .service
        .list_products()
        .await?
        .into_iter()
        .map(|p| (p.id, p.stock))
        .collect();
    for (product, start) in &initial {
        let held: u64 = orders
            .iter()
            .filter(|o| o.status().holds_stock())
            .flat_map(|o| o.lines().iter())
            .filter(|l| l.product == *product)
            .map(|l| u64::from(l.quantity.get()))
            .sum();
        let now = stock.get(product).copied().unwrap_or(0);
        if start != &(now + held) {
            failures.push(format!(
                "product {product}: initial {start} != stock {now} + held {held}"
            ));
        }
    }
    if headphones_won != 1 {
        failures.push(format!(
            "{headphones_won} orders won the single pair of headphones"
        ));
    }
    let ledger = engine.payments.ledger().entries().await?;
    let mut charges: BTreeMap<_, u32> = BTreeMap::new();
    for e in &ledger {
        *charges.entry(e.key).or_default() += 1;
    }
    for o in &orders {
        let recorded = ledger.iter().find(|e| e.key == o.id()).map(|e| &e.outcome);
        let ok = match o.status() {
            OrderStatus::Paid => recorded == Some(&PaymentOutcome::Approved),
            OrderStatus::Failed => matches!(recorded, Some(PaymentOutcome::Declined(_)) | None),
            OrderStatus::Cancelled | OrderStatus::Pending | OrderStatus::Processing => true,
        };
        if !ok || charges.get(&o.id()).copied().unwrap_or(0) > 1 {
            failures.push(format!(
                "order {} is {} but the ledger says {recorded:?}",
                o.id(),
                o.status()
            ));
        }
        if o.total() != order_engine::core::domain::Order::total_of(o.lines())? {
            failures.push(format!(
                "order {}: total is not the sum of its lines",
                o.id()
            ));
        }
    }
    if orders.iter().any(|o| !users.contains(&o.user())) {
        failures.push("an order belongs to an unknown user".into());
    }
    if failures.is_empty() {
        println!(
            "invariants: OK (stock conserved for {} products, headphones sold once, {} charges for {} orders, <= 1 per order, totals exact)",
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
