//! create_order through `OrderService` on the embedded default, against the raw limit of
//! the same store measured in the same run: `MemoryOrderRepository::place` called
//! directly with pre-validated drafts (no validation, no idempotency lookup, no locks, no
//! queue, no events). The ratio service/raw is what the service's machinery costs.
//!
//! ```text
//! cargo bench --bench create_order
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use order_engine::Engine;
use order_engine::core::app::{CreateOrderRequest, LockMode, LockPolicy, ServiceConfig};
use order_engine::core::domain::{IdempotencyKey, Money, OrderDraft, Quantity, Timestamp};
use order_engine::core::ports::OrderRepository;
use order_engine::payment_sim::SimConfig;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("create_order_hot_product");
    group.throughput(Throughput::Elements(1));
    let counter = AtomicU64::new(0);

    for (name, mode) in [
        ("service_distributed_lock", LockMode::Distributed),
        ("service_no_lock", LockMode::None),
    ] {
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
                    .simulated_payments(SimConfig::default())
                    .config(config)
                    .build(),
            )
            .unwrap();
        let repository = &engine.memory().unwrap().repository;
        let user = repository.add_user();
        let product = repository.add_product("hot", Money::parse("9.99").unwrap(), u64::MAX / 4);
        group.bench_function(name, |b| {
            b.iter(|| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let request = CreateOrderRequest::new(user, [(product, 1)], format!("k{n}"));
                rt.block_on(engine.service().create_order(request)).unwrap()
            })
        });
    }

    let repo = Arc::new(order_engine::memory::MemoryOrderRepository::new());
    let user = repo.add_user();
    let product = repo.add_product("hot", Money::parse("9.99").unwrap(), u64::MAX / 4);
    group.bench_function("raw_repository_place", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let key = IdempotencyKey::new(format!("r{n}")).unwrap();
            let draft = OrderDraft::new(user, [(product, Quantity::new(1).unwrap())], key).unwrap();
            rt.block_on(repo.place(std::slice::from_ref(&draft), Timestamp::from_millis(n)))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
