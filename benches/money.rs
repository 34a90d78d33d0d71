//! `Money` arithmetic against the raw `rust_decimal` operations it wraps, measured in the
//! same run: parse (`Money::parse` vs `Decimal::from_str`), add (`checked_add`), multiply
//! by a quantity (`checked_mul(u32)` vs `Decimal::checked_mul(Decimal::from(n))`), and an
//! order's total, `Order::total_of`, for 1 and 50 lines (vs a fold of
//! `price × quantity` over bare decimals with the same checked operations).
//!
//! What `Money` adds is its validation after every step (non-negative, at most two
//! places after normalising, at most `Money::max`): the ratio Money/raw is its price.
//! Figures are from one run on a shared 2-core machine: compare within the run.
//!
//! ```text
//! cargo bench --bench money
//! cargo bench --bench money -- --measurement-time 3 --warm-up-time 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::str::FromStr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use order_engine::core::domain::{Money, Order, OrderLine, ProductId, Quantity};
use rust_decimal::Decimal;

/// `n` order lines, prices 1.99, 2.99, … and quantities 1, 2, 3, … (cycling at 7).
fn lines(n: u64) -> Vec<OrderLine> {
    (1..=n)
        .map(|i| OrderLine {
            product: ProductId::new(i).unwrap(),
            quantity: Quantity::new(i64::try_from(i % 7 + 1).unwrap()).unwrap(),
            unit_price: Money::from_cents(i * 100 + 99).unwrap(),
        })
        .collect()
}

/// The same lines as bare `(price, quantity)` pairs.
fn raw_lines(lines: &[OrderLine]) -> Vec<(Decimal, u32)> {
    lines
        .iter()
        .map(|l| (l.unit_price.as_decimal(), l.quantity.get()))
        .collect()
}

/// The raw total: Σ price × quantity with checked decimal operations, no validation.
fn raw_total(lines: &[(Decimal, u32)]) -> Option<Decimal> {
    lines.iter().try_fold(Decimal::ZERO, |acc, (price, qty)| {
        acc.checked_add(price.checked_mul(Decimal::from(*qty))?)
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("money");

    let text = "149.99";
    group.bench_function("parse/money", |b| b.iter(|| Money::parse(black_box(text))));
    group.bench_function("parse/raw_decimal", |b| {
        b.iter(|| Decimal::from_str(black_box(text)))
    });

    let (a, b_) = (
        Money::parse("29.99").unwrap(),
        Money::parse("149.99").unwrap(),
    );
    let (ra, rb) = (a.as_decimal(), b_.as_decimal());
    group.bench_function("add/money", |b| {
        b.iter(|| black_box(a).checked_add(black_box(b_)))
    });
    group.bench_function("add/raw_decimal", |b| {
        b.iter(|| black_box(ra).checked_add(black_box(rb)))
    });

    let qty = 3u32;
    group.bench_function("mul_quantity/money", |b| {
        b.iter(|| black_box(a).checked_mul(black_box(qty)))
    });
    group.bench_function("mul_quantity/raw_decimal", |b| {
        b.iter(|| black_box(ra).checked_mul(Decimal::from(black_box(qty))))
    });
    group.finish();

    let mut group = c.benchmark_group("money_total_of");
    for n in [1u64, 50] {
        let lines = lines(n);
        let raw = raw_lines(&lines);
        assert_eq!(
            Order::total_of(&lines).unwrap().as_decimal(),
            raw_total(&raw).unwrap()
        );
        group.bench_with_input(BenchmarkId::new("order_total_of", n), &lines, |b, l| {
            b.iter(|| Order::total_of(black_box(l)))
        });
        group.bench_with_input(BenchmarkId::new("raw_decimal_fold", n), &raw, |b, r| {
            b.iter(|| raw_total(black_box(r)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
