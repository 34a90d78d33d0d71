//! Transition batching against a real server: concurrent Starts, and Pays / Fails given
//! the caller's order, go as one transaction whose statements do not grow with the
//! batch; a batch holding a completion whose lease was taken over is applied again one
//! by one, each item still getting its own outcome.
//!
//! Batches are formed deterministically: another connection holds the first order's
//! row lock, so the first transition (which goes alone, at once) blocks on it, and the
//! ones sent meanwhile queue behind it; releasing the lock lets the first finish and
//! the queue go as one batch. The pool has ONE connection, so the session counters see
//! exactly the repository's statements.

use std::sync::Arc;
use std::time::Duration;

use order_core::domain::{FailureReason, Lease, LeaseToken, StatusChange};
use order_core::ports::{OrderRepository, PlaceOutcome, TransitionOutcome};
use order_core::{Order, OrderStatus};
use order_mysql::MySqlOrderRepository;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySqlConnection, MySqlPool};
use tokio::task::JoinHandle;

use crate::support::{
    at, counters, draft, money, patient, pool, until_transactions_wait_for_locks,
};

/// The session counters that count statements the server ran: prepared statements
/// (the one-order path) count under `Com_stmt_execute`, text ones (a batch's scripts)
/// under their kind.
const RAN: [&str; 10] = [
    "Com_stmt_execute",
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Com_select",
    "Com_insert",
    "Com_insert_select",
    "Com_update",
    "Com_update_multi",
    "Com_delete",
];

/// The statements the pool's one connection has run so far.
async fn statements(pool: &MySqlPool) -> u64 {
    let all = counters(pool).await;
    RAN.iter().map(|c| all.get(*c).copied().unwrap_or(0)).sum()
}

/// The one-connection pool and the patient repository of a batching test.
async fn one_connection(options: &MySqlConnectOptions) -> (MySqlPool, Arc<MySqlOrderRepository>) {
    let pool = pool(options, 1).await;
    let repo = patient(&pool);
    (pool, repo)
}

/// Another connection holding order `id`'s row lock in an open transaction.
async fn hold_order(options: &MySqlConnectOptions, id: u64) -> MySqlConnection {
    let mut x = MySqlConnection::connect_with(options).await.expect("x");
    x.execute("BEGIN").await.expect("begin");
    sqlx::query("SELECT id FROM orders WHERE id = ? FOR UPDATE")
        .bind(id)
        .fetch_one(&mut x)
        .await
        .expect("lock the row");
    x
}

type Changing = JoinHandle<TransitionOutcome>;

fn spawn_change(
    repo: &Arc<MySqlOrderRepository>,
    order: &Order,
    change: StatusChange,
    held: bool,
) -> Changing {
    let (repo, order) = (repo.clone(), order.clone());
    tokio::spawn(async move {
        let result = if held {
            repo.transition_from(&order, change, at(5_000)).await
        } else {
            repo.transition(order.id(), change, at(5_000)).await
        };
        result.expect("transition")
    })
}

/// `n` Pending orders of distinct users (one unit each of one product).
async fn pending(repo: &MySqlOrderRepository, n: usize, round: &str) -> Vec<Order> {
    let p = repo
        .add_product(&format!("P-{round}"), money("1.00"), 1_000)
        .await
        .expect("product");
    let mut orders = Vec::with_capacity(n);
    for i in 0..n {
        let user = repo
            .add_user(
                &format!("{round}{i}"),
                &format!("{round}{i}@example.test"),
                "h",
            )
            .await
            .expect("user");
        match repo
            .place(&[draft(user, "k", &[(p, 1)])], at(0))
            .await
            .expect("place")
            .as_slice()
        {
            [PlaceOutcome::Placed(o, _)] => orders.push(o.clone()),
            other => panic!("{other:?}"),
        }
    }
    orders
}

/// The statements of: the first change alone (blocked by a held row lock), then every
/// other change of `changes` queued behind it and flushed as one batch. Returns them
/// with every outcome.
async fn blocked_then_batched(
    repo: &Arc<MySqlOrderRepository>,
    pool: &MySqlPool,
    options: &MySqlConnectOptions,
    changes: Vec<(Order, StatusChange, bool)>,
) -> (u64, Vec<TransitionOutcome>) {
    let idle = statements(pool).await;
    let before = statements(pool).await;
    let noise = before - idle;
    let x = hold_order(options, changes[0].0.id().get()).await;
    let mut tasks = Vec::new();
    let mut changes = changes.into_iter();
    if let Some((order, change, held)) = changes.next() {
        tasks.push(spawn_change(repo, &order, change, held));
    }
    // Probed from a pool of its own: the test pool's one connection is blocked.
    let probe = crate::support::pool(options, 1).await;
    until_transactions_wait_for_locks(&probe, 1).await;
    probe.close().await;
    for (order, change, held) in changes {
        tasks.push(spawn_change(repo, &order, change, held));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    x.close().await.expect("release the row");
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    let after = statements(pool).await;
    (after - before - noise, outcomes)
}

/// A completion of each of `held` (started with lease tokens `base`, `base + 1`, …): Pay
/// for the even ones, Fail for the odd ones, given the held order.
fn pay_even_fail_odd(held: &[Order], base: u64) -> Vec<(Order, StatusChange, bool)> {
    held.iter()
        .enumerate()
        .map(|(i, o)| {
            let lease = LeaseToken::from_raw(base + i as u64);
            let change = if i % 2 == 0 {
                StatusChange::Pay { lease }
            } else {
                StatusChange::Fail {
                    lease,
                    reason: FailureReason::new("declined"),
                }
            };
            (o.clone(), change, true)
        })
        .collect()
}

fn started(outcome: &TransitionOutcome) -> Order {
    match outcome {
        TransitionOutcome::Applied(o, Some(_)) if o.status() == OrderStatus::Processing => {
            o.clone()
        }
        other => panic!("a Start must apply with its event, got {other:?}"),
    }
}

/// Starts, then Pays and Fails, of 4 and of 16 orders: each batch runs a constant
/// number of statements whatever its size, in two round trips (two scripts) — 7 for a
/// batch of Starts (BEGIN, the compare-and-set, the orders with their lines read back in
/// one statement; then the users' counters moved, the events inserted, the counters
/// read, COMMIT) and 7 for a batch of Pays and Fails (BEGIN, one compare-and-set for
/// all; then the failed orders' stock returned in one statement, the three log
/// statements, COMMIT; nothing read back) — on top of the first change, which went
/// alone.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_transition_batch_costs_a_constant_number_of_statements(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let (pool, repo) = one_connection(&options).await;
    let mut counts = Vec::new();
    for (n, round) in [(4usize, "a"), (16, "b")] {
        let orders = pending(&repo, n + 1, round).await;
        let starts = orders
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let lease = Lease {
                    token: LeaseToken::from_raw(1_000 + i as u64),
                    until: at(60_000),
                };
                (o.clone(), StatusChange::Start { lease }, false)
            })
            .collect();
        let (start_statements, outcomes) =
            blocked_then_batched(&repo, &pool, &options, starts).await;
        let processing: Vec<Order> = outcomes.iter().map(started).collect();
        let completions = pay_even_fail_odd(&processing, 1_000);
        let (complete_statements, outcomes) =
            blocked_then_batched(&repo, &pool, &options, completions).await;
        for (i, (outcome, held)) in outcomes.iter().zip(&processing).enumerate() {
            let TransitionOutcome::Applied(done, Some(_)) = outcome else {
                panic!("completion {i} must apply, got {outcome:?}");
            };
            assert_eq!(
                Some(done),
                repo.get(held.id()).await.expect("get").as_ref(),
                "completion {i}: what a batch returns is what is stored"
            );
        }
        counts.push((n, start_statements, complete_statements));
    }
    eprintln!("(batch size, statements of Starts, of completions): {counts:?}");
    let stats = repo.coalescing_stats();
    assert_eq!(
        (
            stats.transition_batches,
            stats.batched_transitions,
            stats.transition_fallbacks
        ),
        (4, 40, 0),
        "two rounds of a Start batch and a completion batch, of 4 and of 16: {stats:?}"
    );
    // The first change of each round went alone, through the same path with one item:
    // Start 7, Pay 6 (no stock to return).
    assert_eq!(
        counts,
        vec![(4, 7 + 7, 6 + 7), (16, 7 + 7, 6 + 7)],
        "a batch's statements must not grow with its size"
    );
    pool.close().await;
}

/// A batch of completions in which one holder's lease was taken over meanwhile: the
/// batch matches short, is rolled back and applied one by one — the fenced one loses
/// and reports the stored order, the others are applied once, their stock right.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_batch_with_a_fenced_completion_falls_back_and_each_gets_its_own_outcome(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let (pool, repo) = one_connection(&options).await;
    let orders = pending(&repo, 6, "f").await;
    let mut held = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        let lease = Lease {
            token: LeaseToken::from_raw(10 + i as u64),
            until: at(100),
        };
        match repo
            .transition(o.id(), StatusChange::Start { lease }, at(10))
            .await
            .expect("start")
        {
            TransitionOutcome::Applied(o, _) => held.push(o),
            other => panic!("{other:?}"),
        }
    }
    // Order 3's lease expires and another worker takes it over.
    let taken = match repo
        .transition(
            held[3].id(),
            StatusChange::TakeOver {
                expired: LeaseToken::from_raw(13),
                lease: Lease {
                    token: LeaseToken::from_raw(99),
                    until: at(90_000),
                },
            },
            at(200),
        )
        .await
        .expect("take over")
    {
        TransitionOutcome::Applied(o, None) => o,
        other => panic!("{other:?}"),
    };
    let product = held[0].lines()[0].product;
    let stock_before = repo.stock(product).await.expect("stock").expect("product");
    let completions = pay_even_fail_odd(&held, 10);
    let (_, outcomes) = blocked_then_batched(&repo, &pool, &options, completions).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 3 {
            assert_eq!(
                outcome,
                &TransitionOutcome::LostRace(taken.clone()),
                "the fenced completion loses and reports the stored order"
            );
        } else {
            let TransitionOutcome::Applied(done, Some(_)) = outcome else {
                panic!("completion {i} must apply, got {outcome:?}");
            };
            assert_eq!(Some(done), repo.get(done.id()).await.expect("get").as_ref());
        }
    }
    // Orders 1 and 5 failed (order 3's Fail was fenced): two units back.
    assert_eq!(
        repo.stock(product).await.expect("stock"),
        Some(stock_before + 2)
    );
    let stats = repo.coalescing_stats();
    assert_eq!(stats.transition_fallbacks, 1, "{stats:?}");
    pool.close().await;
}

/// How many `order.processing` events each of `orders` has in the log.
async fn processing_events(pool: &MySqlPool, orders: &[Order]) -> Vec<i64> {
    let mut counts = Vec::with_capacity(orders.len());
    for o in orders {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM order_events WHERE order_id = ? AND kind = 'order.processing'",
        )
        .bind(o.id().get())
        .fetch_one(pool)
        .await
        .expect("count events");
        counts.push(n);
    }
    counts
}

/// A Start sent again after its first attempt committed — what a batch retried after
/// its connection broke during `COMMIT` sends — finds its order under its own token
/// and must not log the Start a second time: alone, it is applied with the event its
/// first attempt logged; in a batch, the batch is rolled back and its items go one by
/// one, the fresh Starts applied with events of their own.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_start_already_applied_by_an_earlier_attempt_is_not_logged_again(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let (pool, repo) = one_connection(&options).await;
    let orders = pending(&repo, 5, "again").await;
    let start = |i: usize| StatusChange::Start {
        lease: Lease {
            token: LeaseToken::from_raw(500 + i as u64),
            until: at(60_000),
        },
    };
    // The first attempts of orders 0, 1 and 2 commit.
    let mut first = Vec::new();
    for (i, o) in orders.iter().enumerate().take(3) {
        let outcome = repo
            .transition(o.id(), start(i), at(5_000))
            .await
            .expect("start");
        started(&outcome);
        first.push(outcome);
    }

    // Order 0 again, alone.
    assert_eq!(
        repo.transition(orders[0].id(), start(0), at(5_000))
            .await
            .expect("start again"),
        first[0],
        "a Start applied before answers with its order and the event logged then"
    );

    // Orders 1 and 2 again, in one batch with the fresh Starts of orders 3 and 4 (order 3
    // leads, blocked, so the other three queue and go as one batch).
    let changes = [3, 1, 2, 4]
        .into_iter()
        .map(|i| (orders[i].clone(), start(i), false))
        .collect();
    let (_, outcomes) = blocked_then_batched(&repo, &pool, &options, changes).await;
    assert_eq!(outcomes[1], first[1]);
    assert_eq!(outcomes[2], first[2]);
    for i in [0, 3] {
        let order = started(&outcomes[i]);
        assert_eq!(
            Some(&order),
            repo.get(order.id()).await.expect("get").as_ref()
        );
    }
    let stats = repo.coalescing_stats();
    assert_eq!(
        (stats.transition_batches, stats.transition_fallbacks),
        (1, 1),
        "the batch of three was rolled back and went one by one: {stats:?}"
    );
    assert_eq!(
        processing_events(&pool, &orders).await,
        vec![1; 5],
        "each order's Start is logged once"
    );
    pool.close().await;
}
