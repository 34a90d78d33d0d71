//! The races the reference system loses, run for real across two service instances.

use std::collections::HashSet;
use std::time::Instant;

use order_core::app::{
    CancelOrderError, CreateOrderError, CreateOrderRequest, LockMode, ProcessOutcome,
};
use order_core::domain::OrderStatus;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use super::Node;
use crate::support::all_at_once;

async fn oversell_race(connect: MySqlConnectOptions, mode: LockMode, label: &str) {
    let (a, b) = Node::pair(&connect, label, mode).await;
    let (user, products) = a.seed(&[100]).await;
    let product = products[0];
    let started = Instant::now();
    let results = all_at_once(&[&a.service, &b.service], 500, |i| {
        CreateOrderRequest::new(user, [(product, 1)], format!("o{i}"))
    })
    .await;
    let (mut accepted, mut short, mut conflicts, mut other) = (0, 0, 0, Vec::new());
    for result in results {
        match result {
            Ok(c) if !c.replayed => accepted += 1,
            Err(CreateOrderError::InsufficientStock { .. }) => short += 1,
            Err(CreateOrderError::LockConflict { .. }) => conflicts += 1,
            r => other.push(format!("{r:?}")),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{label}: 500 requests for stock 100 -> {accepted} accepted, {short} insufficient stock, {conflicts} lock conflicts in {elapsed:?}"
    );
    assert!(
        other.is_empty(),
        "unexpected outcomes: {:?}",
        &other[..other.len().min(5)]
    );
    assert_eq!(
        accepted, 100,
        "exactly the stock is sold ({conflicts} lock conflicts)"
    );
    assert_eq!(short + conflicts, 400);
    assert_eq!(a.repository.stock(product).await.unwrap(), Some(0));
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn five_hundred_orders_across_two_instances_sell_exactly_the_hundred_in_stock_with_redis_locks(
    _pool: MySqlPoolOptions,
    connect: MySqlConnectOptions,
) {
    oversell_race(connect, LockMode::Distributed, "oversell-redis").await;
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn five_hundred_orders_across_two_instances_sell_exactly_the_hundred_in_stock_on_row_locks_alone(
    _pool: MySqlPoolOptions,
    connect: MySqlConnectOptions,
) {
    oversell_race(connect, LockMode::None, "oversell-rows").await;
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn crossed_two_product_orders_never_surface_a_deadlock(
    _pool: MySqlPoolOptions,
    connect: MySqlConnectOptions,
) {
    // Row locks only, so both instances really meet inside the database.
    let (a, b) = Node::pair(&connect, "crossed", LockMode::None).await;
    let (user, products) = a.seed(&[150, 150]).await;
    let (pa, pb) = (products[0], products[1]);
    let started = Instant::now();
    let results = all_at_once(&[&a.service, &b.service], 400, |i| {
        // Sent as {A,B} and {B,A}: the service and the repository sort them.
        let items = if i % 2 == 0 {
            [(pa, 1), (pb, 1)]
        } else {
            [(pb, 1), (pa, 1)]
        };
        CreateOrderRequest::new(user, items, format!("x{i}"))
    })
    .await;
    let (mut accepted, mut short) = (0u64, 0u64);
    for result in results {
        match result {
            Ok(_) => accepted += 1,
            Err(CreateOrderError::InsufficientStock { .. }) => short += 1,
            Err(e) => panic!("a crossed order surfaced {e:?}"),
        }
    }
    println!(
        "crossed: 400 orders {{A,B}}/{{B,A}} -> {accepted} accepted, {short} short in {:?}; adapter retries: {}",
        started.elapsed(),
        a.repository.retry_count() + b.repository.retry_count()
    );
    assert_eq!(accepted, 150);
    assert_eq!(a.repository.stock(pa).await.unwrap(), Some(0));
    assert_eq!(a.repository.stock(pb).await.unwrap(), Some(0));
}

async fn one_key_race(connect: MySqlConnectOptions, mode: LockMode, label: &str) {
    let (a, b) = Node::pair(&connect, label, mode).await;
    let (user, products) = a.seed(&[50]).await;
    let product = products[0];
    let results = all_at_once(&[&a.service, &b.service], 20, |_| {
        CreateOrderRequest::new(user, [(product, 2)], "one-key")
    })
    .await;
    let (mut created, mut ids) = (0, HashSet::new());
    for result in results {
        let c = result.unwrap_or_else(|e| panic!("{label}: a same-key request failed: {e:?}"));
        created += usize::from(!c.replayed);
        ids.insert(c.order.id());
    }
    assert_eq!((created, ids.len()), (1, 1), "{label}");
    assert_eq!(a.repository.stock(product).await.unwrap(), Some(48));
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn twenty_requests_with_one_key_make_one_order_and_nineteen_replays_with_redis_locks(
    _pool: MySqlPoolOptions,
    connect: MySqlConnectOptions,
) {
    one_key_race(connect, LockMode::Distributed, "one-key-redis").await;
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn twenty_requests_with_one_key_make_one_order_and_nineteen_replays_on_the_unique_index(
    _pool: MySqlPoolOptions,
    connect: MySqlConnectOptions,
) {
    one_key_race(connect, LockMode::None, "one-key-rows").await;
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_cancel_racing_the_worker_has_exactly_one_winner_two_hundred_times(
    _pool: MySqlPoolOptions,
    connect: MySqlConnectOptions,
) {
    let (a, b) = Node::pair(&connect, "cancel-race", LockMode::Distributed).await;
    let (user, products) = a.seed(&[200]).await;
    let product = products[0];
    let (mut cancels, mut worker_wins) = (0u64, 0u64);
    let mut held = 0u64;
    for i in 0..200 {
        let order = a
            .service
            .create_order(CreateOrderRequest::new(
                user,
                [(product, 1)],
                format!("c{i}"),
            ))
            .await
            .unwrap()
            .order
            .id();
        let (svc_a, svc_b) = (a.service.clone(), b.service.clone());
        let cancel = tokio::spawn(async move { svc_a.cancel_order(user, order).await });
        let process = tokio::spawn(async move { svc_b.process_order(order).await });
        let (cancel, process) = (cancel.await.unwrap(), process.await.unwrap().unwrap());
        let stored = a.service.get_order(user, order).await.unwrap();
        match (&cancel, &process) {
            (Ok(c), ProcessOutcome::LostRace(_) | ProcessOutcome::AlreadyTerminal(_)) => {
                assert_eq!(c.status(), OrderStatus::Cancelled);
                assert_eq!(stored.status(), OrderStatus::Cancelled);
                cancels += 1;
            }
            (Err(CancelOrderError::InvalidTransition { .. }), ProcessOutcome::Completed(done)) => {
                assert_eq!(stored.status(), done.status());
                worker_wins += 1;
                held += u64::from(stored.status() == OrderStatus::Paid);
            }
            other => panic!("round {i}: not exactly one winner: {other:?}"),
        }
    }
    println!("cancel race: 200 rounds -> {cancels} cancels won, {worker_wins} worker wins");
    assert_eq!(cancels + worker_wins, 200);
    // Stock came back exactly once for each cancelled or failed order, never twice.
    assert_eq!(a.repository.stock(product).await.unwrap(), Some(200 - held));
}
