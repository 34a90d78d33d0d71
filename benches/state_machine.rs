//! `Order::apply`, the state machine every repository's compare-and-set mirrors: one
//! measurement per legal `StatusChange` (Start, Cancel, Pay, Fail, TakeOver, Release)
//! and for the refusals (an illegal transition, a terminal order, a stale lease).
//!
//! Each legal change runs on a fresh clone of an order in the change's `from` status
//! (`iter_batched_ref`: the clone and the drop are outside the timing). A refusal leaves
//! the order unchanged, so it runs on one order. The floor next to them,
//! `raw_can_transition_to`, is the bare legality table (`OrderStatus::can_transition_to`,
//! a `matches!` on two enums): what `apply` adds on top is the lease fence and the field
//! updates. Figures are from one run on a shared 2-core machine: read them as ratios
//! within the run, not as absolute numbers.
//!
//! ```text
//! cargo bench --bench state_machine
//! cargo bench --bench state_machine -- --measurement-time 3 --warm-up-time 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use order_engine::core::domain::{
    FailureReason, IdempotencyKey, Lease, LeaseToken, Money, Order, OrderDraft, OrderId,
    OrderStatus, ProductId, Quantity, StatusChange, Timestamp, UserId,
};

const PLACED_AT: Timestamp = Timestamp::from_millis(1_000);
const NOW: Timestamp = Timestamp::from_millis(2_000);

/// A Pending order of two lines, as the service places it.
fn pending() -> Order {
    let draft = OrderDraft::new(
        UserId::new(1).unwrap(),
        [
            (ProductId::new(2).unwrap(), Quantity::new(2).unwrap()),
            (ProductId::new(4).unwrap(), Quantity::new(1).unwrap()),
        ],
        IdempotencyKey::new("bench").unwrap(),
    )
    .unwrap();
    let prices = [
        Money::parse("29.99").unwrap(),
        Money::parse("149.99").unwrap(),
    ];
    Order::place(OrderId::new(9).unwrap(), &draft, &prices, PLACED_AT).unwrap()
}

/// `order` after `change`, asserting it applied.
fn after(mut order: Order, change: &StatusChange, now: Timestamp) -> Order {
    order.apply(change, now).unwrap();
    order
}

fn bench(c: &mut Criterion) {
    let holder = LeaseToken::from_raw(7);
    let pending = pending();
    // Processing, lease held by `holder` until 1.5 s: expired at NOW, so a take-over works.
    let processing = after(
        pending.clone(),
        &StatusChange::Start {
            lease: Lease {
                token: holder,
                until: Timestamp::from_millis(1_500),
            },
        },
        PLACED_AT,
    );
    let paid = after(
        processing.clone(),
        &StatusChange::Pay { lease: holder },
        PLACED_AT,
    );
    let new_lease = Lease {
        token: LeaseToken::from_raw(8),
        until: NOW.saturating_add(Duration::from_secs(30)),
    };

    let legal: [(&str, &Order, StatusChange); 6] = [
        (
            "start_pending_to_processing",
            &pending,
            StatusChange::Start { lease: new_lease },
        ),
        (
            "cancel_pending_to_cancelled",
            &pending,
            StatusChange::Cancel,
        ),
        (
            "pay_processing_to_paid",
            &processing,
            StatusChange::Pay { lease: holder },
        ),
        (
            "fail_processing_to_failed",
            &processing,
            StatusChange::Fail {
                lease: holder,
                reason: FailureReason::new("card declined"),
            },
        ),
        (
            "take_over_expired_lease",
            &processing,
            StatusChange::TakeOver {
                expired: holder,
                lease: new_lease,
            },
        ),
        (
            "release_processing_lease",
            &processing,
            StatusChange::Release { lease: holder },
        ),
    ];

    let mut group = c.benchmark_group("order_apply");
    for (name, template, change) in &legal {
        // Sanity: the change is legal on its template.
        after((*template).clone(), change, NOW);
        group.bench_function(*name, |b| {
            b.iter_batched_ref(
                || (*template).clone(),
                |order| order.apply(black_box(change), black_box(NOW)),
                BatchSize::SmallInput,
            )
        });
    }

    let refused: [(&str, &Order, StatusChange); 3] = [
        (
            "refuse_illegal_pay_pending",
            &pending,
            StatusChange::Pay { lease: holder },
        ),
        ("refuse_terminal_cancel_paid", &paid, StatusChange::Cancel),
        (
            "refuse_stale_lease_pay",
            &processing,
            StatusChange::Pay {
                lease: LeaseToken::from_raw(99),
            },
        ),
    ];
    for (name, template, change) in &refused {
        let mut order = (*template).clone();
        assert!(order.apply(change, NOW).is_err());
        group.bench_function(*name, |b| {
            b.iter(|| black_box(&mut order).apply(black_box(change), black_box(NOW)))
        });
    }

    group.bench_function("raw_can_transition_to", |b| {
        b.iter(|| {
            black_box(OrderStatus::Pending).can_transition_to(black_box(OrderStatus::Processing))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
