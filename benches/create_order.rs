//! create_order through `OrderService` on the embedded default, against the raw limit of
//! the same store measured in the same run: `MemoryOrderRepository::place` called
//! directly with pre-validated drafts (no validation, no idempotency lookup, no locks, no
//! queue, no events). The ratio service/raw is what the service's machinery costs. The
//! service runs with lock policy `Distributed` (the reference's `SET NX` locks, here on
//! the memory lock) and `None`.
//!
//! Every order is placed with a fresh idempotency key (a reused key would measure the
//! replay path instead), so every measured call grows the store. To keep the figures
//! comparable, the measured loop (`iter_custom`) starts a fresh engine, or a fresh
//! repository for the raw path, every `CHUNK` orders: each measured call meets a store of
//! 0 to `CHUNK` orders, whatever the sample size. Building the engine, the requests and
//! the drafts, and dropping the store, stay outside the timing; each chunk runs in one
//! `block_on`. Figures are from one run on a shared 2-core machine: read the ratios.
//!
//! ```text
//! cargo bench --bench create_order
//! cargo bench --bench create_order -- --measurement-time 3 --warm-up-time 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use order_engine::Engine;
use order_engine::core::app::{CreateOrderRequest, LockMode, LockPolicy, ServiceConfig};
use order_engine::core::domain::{IdempotencyKey, Money, OrderDraft, Quantity, Timestamp};
use order_engine::core::ports::{Clock, OrderRepository};
use order_engine::core::runtime::SystemClock;
use order_engine::memory::MemoryOrderRepository;
use order_engine::payment_sim::SimConfig;
use tokio::runtime::Runtime;

/// Orders placed on one store before it is replaced by a fresh one.
const CHUNK: u64 = 1024;

/// A fresh engine with one user and one hot product holding `CHUNK` units.
fn fresh_engine(
    rt: &Runtime,
    mode: LockMode,
    clock: &Arc<dyn Clock>,
) -> (Engine, Vec<CreateOrderRequest>) {
    let config = ServiceConfig {
        lock: LockPolicy {
            mode,
            ..LockPolicy::default()
        },
        ..ServiceConfig::default()
    };
    let engine = rt
        .block_on(
            Engine::builder()
                .memory()
                .clock(clock.clone())
                .simulated_payments(SimConfig::default())
                .config(config)
                .build(),
        )
        .unwrap();
    let repository = &engine.memory().unwrap().repository;
    let user = repository.add_user();
    let product = repository.add_product("hot", Money::parse("9.99").unwrap(), CHUNK);
    let requests = (0..CHUNK)
        .map(|n| CreateOrderRequest::new(user, [(product, 1)], format!("k{n}")))
        .collect();
    (engine, requests)
}

/// A fresh repository with one user, one hot product holding `CHUNK` units, and the
/// drafts to place on it.
fn fresh_repository() -> (MemoryOrderRepository, Vec<OrderDraft>) {
    let repo = MemoryOrderRepository::new();
    let user = repo.add_user();
    let product = repo.add_product("hot", Money::parse("9.99").unwrap(), CHUNK);
    let drafts = (0..CHUNK)
        .map(|n| {
            let key = IdempotencyKey::new(format!("r{n}")).unwrap();
            OrderDraft::new(user, [(product, Quantity::new(1).unwrap())], key).unwrap()
        })
        .collect();
    (repo, drafts)
}

/// Runs `iters` measured calls in chunks of at most `CHUNK`, each chunk on a fresh
/// `setup()`; returns the time spent in `run` only.
fn chunked<S>(
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut run: impl FnMut(&mut S, usize),
) -> Duration {
    let mut measured = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(CHUNK);
        let mut state = setup();
        let start = Instant::now();
        run(&mut state, usize::try_from(n).unwrap());
        measured += start.elapsed();
        drop(state);
        done += n;
    }
    measured
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let mut group = c.benchmark_group("create_order_hot_product");
    group.throughput(Throughput::Elements(1));

    for (name, mode) in [
        ("service_distributed_lock", LockMode::Distributed),
        ("service_no_lock", LockMode::None),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    || fresh_engine(&rt, mode, &clock),
                    |(engine, requests), n| {
                        rt.block_on(async {
                            for request in requests.drain(..n) {
                                engine.service().create_order(request).await.unwrap();
                            }
                        })
                    },
                )
            })
        });
    }

    group.bench_function("raw_repository_place", |b| {
        b.iter_custom(|iters| {
            chunked(iters, fresh_repository, |(repo, drafts), n| {
                rt.block_on(async {
                    for (i, draft) in drafts[..n].iter().enumerate() {
                        let now = Timestamp::from_millis(u64::try_from(i).unwrap());
                        repo.place(std::slice::from_ref(draft), now).await.unwrap();
                    }
                })
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
