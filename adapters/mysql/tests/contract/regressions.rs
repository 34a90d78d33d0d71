//! Regression tests, each named after the scenario that used to go wrong: prices read
//! before the row lock, stock raised past what `INT UNSIGNED` can take back, replays
//! decided by a fingerprint alone, and batches binding more placeholders than one
//! statement may.

use std::time::Duration;

use order_core::domain::{Lease, LeaseToken, MAX_STOCK, OrderDraft, RestockError, StatusChange};
use order_core::ports::{OrderRepository, PlaceOutcome, TransitionOutcome};
use order_core::{Money, Order, OrderStatus, ProductId, UserId};
use order_mysql::{MySqlOrderRepository, MySqlRestockError};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySqlConnection, MySqlPool};

use crate::support::{at, draft, money};

fn placed(outcomes: &[PlaceOutcome]) -> Vec<Order> {
    outcomes
        .iter()
        .map(|o| match o {
            PlaceOutcome::Placed(order, _) => order.clone(),
            other => panic!("expected Placed, got {other:?}"),
        })
        .collect()
}

/// Waits until a transaction on this test's database is blocked on a row lock.
///
/// InnoDB serves `information_schema.innodb_trx` from a cache that is not refreshed
/// while it is read more often than every 100 ms, hence the slower poll.
async fn until_a_transaction_waits_for_a_lock(pool: &MySqlPool) {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.innodb_trx t \
             JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
             WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()",
        )
        .fetch_one(pool)
        .await
        .expect("innodb_trx");
        if waiting > 0 {
            return;
        }
    }
    panic!("place never waited for the row lock");
}

/// Which path the price-change scenario places through.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// One draft, one product: the fast path.
    OneProduct,
    /// One draft, two products, the second one repriced: the fast path over two rows.
    TwoProducts,
    /// Two drafts in one call: the general (batch) path.
    Batch,
}

/// Connection X locks product B's row, `place` queues behind it, X changes B's price
/// and commits: the order placed must carry the NEW price in its line and its total,
/// as stored and as returned.
async fn a_price_change_while_place_waits_is_the_price_paid(
    options: MySqlConnectOptions,
    shape: Shape,
) {
    let pool = MySqlPoolOptions::new()
        .max_connections(8)
        .connect_with(options.clone())
        .await
        .expect("pool");
    let repo = MySqlOrderRepository::new(pool.clone());
    let user = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    let a = repo.add_product("A", money("1.00"), 10).await.expect("a");
    let b = repo.add_product("B", money("10.00"), 10).await.expect("b");

    let mut x = MySqlConnection::connect_with(&options).await.expect("x");
    x.execute("BEGIN").await.expect("begin");
    sqlx::query("SELECT stock FROM products WHERE id = ? FOR UPDATE")
        .bind(b.get())
        .fetch_one(&mut x)
        .await
        .expect("lock B");

    let drafts: Vec<OrderDraft> = match shape {
        Shape::OneProduct => vec![draft(user, "k", &[(b, 2)])],
        Shape::TwoProducts => vec![draft(user, "k", &[(a, 1), (b, 2)])],
        Shape::Batch => vec![draft(user, "k", &[(b, 2)]), draft(user, "k2", &[(a, 1)])],
    };
    let placing = {
        let repo = repo.clone();
        let drafts = drafts.clone();
        tokio::spawn(async move { repo.place(&drafts, at(0)).await })
    };
    until_a_transaction_waits_for_a_lock(&pool).await;
    sqlx::query("UPDATE products SET price = 12.50 WHERE id = ?")
        .bind(b.get())
        .execute(&mut x)
        .await
        .expect("reprice B");
    x.execute("COMMIT").await.expect("commit");

    let outcomes = placing.await.expect("task").expect("place");
    let orders = placed(&outcomes);
    let first = &orders[0];
    let line_b = first
        .lines()
        .iter()
        .find(|l| l.product == b)
        .expect("a line for B");
    assert_eq!(line_b.unit_price, money("12.50"), "{shape:?}: {first:?}");
    let expected_total = match shape {
        Shape::OneProduct | Shape::Batch => money("25.00"),
        Shape::TwoProducts => money("26.00"),
    };
    assert_eq!(first.total(), expected_total, "{shape:?}");
    let stored = repo.get(first.id()).await.expect("get").expect("stored");
    assert_eq!(&stored, first, "{shape:?}: stored as returned");
    assert_eq!(repo.stock(b).await.expect("b"), Some(8), "{shape:?}");
    pool.close().await;
}

/// Fast path, one product (this is what used to mis-price: prices were read before the
/// transaction and never checked again).
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_price_change_committed_while_a_one_product_order_waits_for_the_row_is_the_price_paid(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    a_price_change_while_place_waits_is_the_price_paid(options, Shape::OneProduct).await;
}

/// Fast path, two products: the first row is locked and taken, the second is repriced
/// while the order waits for it.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_price_change_committed_while_a_two_product_order_waits_for_the_row_is_the_price_paid(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    a_price_change_while_place_waits_is_the_price_paid(options, Shape::TwoProducts).await;
}

/// The general (batch) path reads prices with its `FOR UPDATE`.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_price_change_committed_while_a_batch_waits_for_the_row_is_the_price_paid(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    a_price_change_while_place_waits_is_the_price_paid(options, Shape::Batch).await;
}

async fn place_one(repo: &MySqlOrderRepository, d: OrderDraft, ms: u64) -> Order {
    let outcomes = repo.place(&[d], at(ms)).await.expect("place");
    placed(&outcomes).remove(0)
}

/// Stock plus reservations is bounded by `MAX_STOCK`: a restock to exactly the limit
/// works, one unit more is refused with `AboveMaximum` and changes nothing, the units of
/// PENDING and PROCESSING orders count, and cancelling / failing those orders can then
/// always put their units back (it used to fail with error 1264, out of range).
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_restock_up_to_the_maximum_leaves_room_to_cancel_and_fail_the_open_orders(
    pool: MySqlPool,
) {
    let repo = MySqlOrderRepository::new(pool);
    let user = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    let p = repo.add_product("P", money("1.00"), 10).await.expect("p");
    let pending = place_one(&repo, draft(user, "pending", &[(p, 4)]), 0).await;
    let processing = place_one(&repo, draft(user, "processing", &[(p, 3)]), 1).await;
    let lease = Lease {
        token: LeaseToken::from_raw(7),
        until: at(10_000),
    };
    let started = repo
        .transition(processing.id(), StatusChange::Start { lease }, at(2))
        .await
        .expect("start");
    assert!(
        matches!(started, TransitionOutcome::Applied(..)),
        "{started:?}"
    );
    // A paid order's units are gone for good: they do not count.
    let paid = place_one(&repo, draft(user, "paid", &[(p, 2)]), 3).await;
    let paid_lease = Lease {
        token: LeaseToken::from_raw(8),
        until: at(10_000),
    };
    for change in [
        StatusChange::Start { lease: paid_lease },
        StatusChange::Pay {
            lease: paid_lease.token,
        },
    ] {
        let out = repo
            .transition(paid.id(), change, at(4))
            .await
            .expect("pay");
        assert!(matches!(out, TransitionOutcome::Applied(..)), "{out:?}");
    }
    // stock 1, reserved 4 + 3 = 7: room for MAX_STOCK - 8 more units, exactly.
    assert_eq!(repo.stock(p).await.expect("stock"), Some(1));
    let room = MAX_STOCK - 8;

    let refused = repo.restock(p, room + 1).await;
    assert!(
        matches!(
            refused,
            Err(MySqlRestockError::Refused(RestockError::AboveMaximum { product, max }))
                if product == p && max == MAX_STOCK
        ),
        "{refused:?}"
    );
    assert_eq!(
        repo.stock(p).await.expect("stock"),
        Some(1),
        "nothing changed"
    );

    repo.restock(p, room)
        .await
        .expect("up to the limit exactly");
    assert_eq!(repo.stock(p).await.expect("stock"), Some(MAX_STOCK - 7));
    let one_more = repo.restock(p, 1).await;
    assert!(
        matches!(
            one_more,
            Err(MySqlRestockError::Refused(
                RestockError::AboveMaximum { .. }
            ))
        ),
        "{one_more:?}"
    );
    assert_eq!(repo.stock(p).await.expect("stock"), Some(MAX_STOCK - 7));

    let cancelled = repo
        .transition(pending.id(), StatusChange::Cancel, at(5))
        .await
        .expect("cancel must not overflow the column");
    assert!(
        matches!(&cancelled, TransitionOutcome::Applied(o, _) if o.status() == OrderStatus::Cancelled),
        "{cancelled:?}"
    );
    let failed = repo
        .transition(
            processing.id(),
            StatusChange::Fail {
                lease: lease.token,
                reason: order_core::domain::FailureReason::new("declined"),
            },
            at(6),
        )
        .await
        .expect("fail must not overflow the column");
    assert!(
        matches!(&failed, TransitionOutcome::Applied(o, _) if o.status() == OrderStatus::Failed),
        "{failed:?}"
    );
    assert_eq!(repo.stock(p).await.expect("stock"), Some(MAX_STOCK));
    repo.restock(p, 0)
        .await
        .expect("a zero restock at the limit");
    let ghost = ProductId::new(p.get() + 1).expect("id");
    let unknown = repo.restock(ghost, 0).await;
    assert!(
        matches!(
            unknown,
            Err(MySqlRestockError::Refused(RestockError::UnknownProduct(id))) if id == ghost
        ),
        "{unknown:?}"
    );
}

/// Two drafts with one key and different lines whose fingerprints are equal (forced
/// here by rewriting the stored fingerprint, as a 64-bit collision would): the second is
/// `KeyReused`, never a replay of an order it did not create — through the fast path's
/// duplicate-key answer and through the batch path's pre-check alike.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn equal_fingerprints_with_other_lines_are_a_reused_key_not_a_replay(pool: MySqlPool) {
    let repo = MySqlOrderRepository::new(pool.clone());
    let user = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    let a = repo.add_product("A", money("1.00"), 10).await.expect("a");
    let b = repo.add_product("B", money("2.00"), 10).await.expect("b");
    let first = place_one(&repo, draft(user, "k", &[(a, 1)]), 0).await;
    let other_lines = draft(user, "k", &[(b, 1)]);
    sqlx::query("UPDATE orders SET request_fingerprint = ? WHERE id = ?")
        .bind(other_lines.fingerprint().raw())
        .bind(first.id().get())
        .execute(&pool)
        .await
        .expect("collide");

    // Fast path (one draft): the insert hits the unique key, the stored order is read.
    let fast = repo
        .place(std::slice::from_ref(&other_lines), at(1))
        .await
        .expect("fast");
    assert_eq!(
        fast,
        vec![PlaceOutcome::KeyReused {
            existing: first.id()
        }]
    );
    // General path (a batch): the pre-check finds the key.
    let filler = draft(user, "filler", &[(a, 1)]);
    let batch = repo
        .place(&[other_lines, filler], at(2))
        .await
        .expect("batch");
    assert_eq!(
        batch[0],
        PlaceOutcome::KeyReused {
            existing: first.id()
        }
    );
    assert!(matches!(batch[1], PlaceOutcome::Placed(..)), "{batch:?}");
    assert_eq!(repo.stock(b).await.expect("b"), Some(10), "B never taken");
    assert_eq!(repo.stock(a).await.expect("a"), Some(8));
}

/// One `place` call whose drafts name 65 600 distinct products (1 312 drafts of 50
/// lines): more ids than the 65 535 placeholders one statement may bind. The row locks
/// are taken in ascending chunks and every draft is placed (it used to fail outright).
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_batch_naming_more_products_than_one_statement_can_bind_is_placed(pool: MySqlPool) {
    const DRAFTS: usize = 1_312;
    let lines = OrderDraft::MAX_LINES;
    let products = DRAFTS * lines;
    assert!(products > usize::from(u16::MAX));
    let repo = MySqlOrderRepository::new(pool.clone());
    let user: UserId = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    let mut inserted = 0;
    while inserted < products {
        let n = (products - inserted).min(5_000);
        let mut sql = String::from("INSERT INTO products (name, price, stock) VALUES ");
        sql.push_str(&vec!["('bulk', 1.00, 1)"; n].join(", "));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("bulk products");
        inserted += n;
    }
    let first: u64 = sqlx::query_scalar("SELECT MIN(id) FROM products")
        .fetch_one(&pool)
        .await
        .expect("first id");
    let drafts: Vec<OrderDraft> = (0..DRAFTS)
        .map(|d| {
            let items: Vec<(ProductId, u32)> = (0..lines)
                .map(|l| {
                    let id = first + (d * lines + l) as u64;
                    (ProductId::new(id).expect("id"), 1)
                })
                .collect();
            draft(user, &format!("bulk-{d}"), &items)
        })
        .collect();
    let outcomes = repo.place(&drafts, at(0)).await.expect("place");
    assert_eq!(placed(&outcomes).len(), DRAFTS);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE stock <> 0")
        .fetch_one(&pool)
        .await
        .expect("left");
    assert_eq!(left, 0, "every product's one unit was taken");
    let total: Money = outcomes
        .iter()
        .filter_map(|o| match o {
            PlaceOutcome::Placed(order, _) => Some(order.total()),
            _ => None,
        })
        .try_fold(Money::ZERO, |acc, t| acc.checked_add(t))
        .expect("sum");
    assert_eq!(total, money("65600.00"));
}
