//! `order_mysql::audit` and migration 0008: each audit is silent on a healthy history
//! made by the repository itself, and names exactly the row planted by hand to break
//! its invariant — a check that cannot fail proves nothing.

use order_core::domain::{FailureReason, Lease, LeaseToken, StatusChange};
use order_core::ports::{OrderRepository, TransitionOutcome};
use order_core::{Order, OrderId, OrderStatus, ProductId, UserId};
use order_mysql::audit::{
    self, ChargeViolation, DuplicateKey, HistoryViolation, RepeatedRestore, StockMismatch,
};
use order_mysql::{MySqlOrderRepository, MySqlPool};

use crate::support::{at, draft, money};

/// A repository with one user, two products and one order in each status: paid (with
/// an approved charge), failed (with a declined one), cancelled, processing, pending.
struct Shop {
    repo: MySqlOrderRepository,
    user: UserId,
    apples: ProductId,
    pears: ProductId,
    paid: OrderId,
    failed: OrderId,
    cancelled: OrderId,
    processing: OrderId,
    pending: OrderId,
}

async fn place(
    repo: &MySqlOrderRepository,
    user: UserId,
    key: &str,
    items: &[(ProductId, u32)],
    ms: u64,
) -> Order {
    let outcomes = repo
        .place(&[draft(user, key, items)], at(ms))
        .await
        .expect("place");
    match outcomes.into_iter().next() {
        Some(order_core::ports::PlaceOutcome::Placed(order, _)) => order,
        other => panic!("not placed: {other:?}"),
    }
}

async fn apply(repo: &MySqlOrderRepository, order: OrderId, change: StatusChange, ms: u64) {
    let outcome = repo
        .transition(order, change, at(ms))
        .await
        .expect("transition");
    assert!(
        matches!(outcome, TransitionOutcome::Applied(..)),
        "{outcome:?}"
    );
}

fn lease(token: u64) -> Lease {
    Lease {
        token: LeaseToken::from_raw(token),
        until: at(60_000),
    }
}

async fn charge(pool: &MySqlPool, order: OrderId, outcome: &str) {
    let reason = (outcome == "DECLINED").then_some("card declined");
    sqlx::query(
        "INSERT INTO payments (order_id, amount, outcome, decline_reason) VALUES (?, 1.00, ?, ?)",
    )
    .bind(order.get())
    .bind(outcome)
    .bind(reason)
    .execute(pool)
    .await
    .expect("insert a payment");
}

async fn exec(pool: &MySqlPool, sql: &'static str, binds: &[u64]) {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(*b);
    }
    query.execute(pool).await.expect(sql);
}

/// Appends an event for `order` under its user's next seq, as `place`/`transition` do.
async fn log_event(pool: &MySqlPool, user: UserId, order: u64, kind: &str) {
    exec(
        pool,
        "UPDATE users SET event_seq = event_seq + 1 WHERE id = ?",
        &[user.get()],
    )
    .await;
    let reason = (kind == "order.failed").then_some("planted");
    sqlx::query(
        "INSERT INTO order_events (user_id, seq, order_id, kind, total_amount, reason, at) \
         SELECT id, event_seq, ?, ?, 1.00, ?, NOW(3) FROM users WHERE id = ?",
    )
    .bind(order)
    .bind(kind)
    .bind(reason)
    .bind(user.get())
    .execute(pool)
    .await
    .expect("insert an event");
}

impl Shop {
    async fn open(pool: MySqlPool) -> Shop {
        let repo = MySqlOrderRepository::new(pool.clone());
        let user = repo
            .add_user("u", "u@example.test", "h")
            .await
            .expect("user");
        let apples = repo
            .add_product("apples", money("1.00"), 20)
            .await
            .expect("apples");
        let pears = repo
            .add_product("pears", money("2.00"), 10)
            .await
            .expect("pears");
        let paid = place(&repo, user, "paid", &[(apples, 2), (pears, 1)], 0)
            .await
            .id();
        apply(&repo, paid, StatusChange::Start { lease: lease(1) }, 1).await;
        charge(&pool, paid, "APPROVED").await;
        apply(
            &repo,
            paid,
            StatusChange::Pay {
                lease: LeaseToken::from_raw(1),
            },
            2,
        )
        .await;
        let failed = place(&repo, user, "failed", &[(apples, 3)], 3).await.id();
        apply(&repo, failed, StatusChange::Start { lease: lease(2) }, 4).await;
        charge(&pool, failed, "DECLINED").await;
        let reason = FailureReason::new("card declined".to_owned());
        apply(
            &repo,
            failed,
            StatusChange::Fail {
                lease: LeaseToken::from_raw(2),
                reason,
            },
            5,
        )
        .await;
        let cancelled = place(&repo, user, "cancelled", &[(pears, 4)], 6).await.id();
        apply(&repo, cancelled, StatusChange::Cancel, 7).await;
        let processing = place(&repo, user, "processing", &[(apples, 1)], 8)
            .await
            .id();
        apply(
            &repo,
            processing,
            StatusChange::Start { lease: lease(3) },
            9,
        )
        .await;
        let pending = place(&repo, user, "pending", &[(pears, 2)], 10).await.id();
        Shop {
            repo,
            user,
            apples,
            pears,
            paid,
            failed,
            cancelled,
            processing,
            pending,
        }
    }
}

/// A history made only by the repository breaks nothing; the open orders are listed,
/// and the status lookup skips ids that name no order.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_history_made_by_the_repository_has_no_violations(pool: MySqlPool) {
    let shop = Shop::open(pool.clone()).await;
    assert_eq!(
        audit::open_orders(&pool).await.expect("open"),
        vec![
            (shop.processing, OrderStatus::Processing),
            (shop.pending, OrderStatus::Pending)
        ]
    );
    let missing = OrderId::new(999_999).expect("id");
    assert_eq!(
        audit::order_statuses(&pool, &[missing, shop.cancelled, shop.paid])
            .await
            .expect("statuses"),
        vec![
            (shop.paid, OrderStatus::Paid),
            (shop.cancelled, OrderStatus::Cancelled)
        ]
    );
    assert_eq!(audit::stock_conservation(&pool).await.expect("stock"), []);
    assert_eq!(audit::stock_overdrawn(&pool).await.expect("overdrawn"), []);
    assert_eq!(audit::duplicate_keys(&pool).await.expect("keys"), []);
    assert_eq!(audit::charges(&pool).await.expect("charges"), []);
    assert_eq!(
        audit::restored_more_than_once(&pool)
            .await
            .expect("restores"),
        []
    );
    let histories = audit::illegal_histories(&pool).await.expect("histories");
    assert_eq!(histories.violations, []);
    assert_eq!(histories.not_checkable, 0);
}

/// `add_product` records the initial stock as received and `restock` adds to it;
/// placing, cancelling and paying never touch it.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn add_product_and_restock_keep_stock_received_up_to_date(pool: MySqlPool) {
    let shop = Shop::open(pool.clone()).await;
    let received = |p: ProductId| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, u64>("SELECT stock_received FROM products WHERE id = ?")
                .bind(p.get())
                .fetch_one(&pool)
                .await
                .expect("stock_received")
        }
    };
    assert_eq!(received(shop.apples).await, 20);
    assert_eq!(received(shop.pears).await, 10);
    shop.repo.restock(shop.apples, 5).await.expect("restock");
    assert_eq!(received(shop.apples).await, 25);
    // apples: 25 in, 2 paid + 1 processing held, 3 failed (returned).
    assert_eq!(shop.repo.stock(shop.apples).await.expect("stock"), Some(22));
    assert_eq!(audit::stock_conservation(&pool).await.expect("stock"), []);
    // A row inserted without the column gets its initial stock (the expression default).
    exec(
        &pool,
        "INSERT INTO products (name, price, stock) VALUES ('raw', 1.00, 7)",
        &[],
    )
    .await;
    let raw: u64 = sqlx::query_scalar("SELECT stock_received FROM products WHERE name = 'raw'")
        .fetch_one(&pool)
        .await
        .expect("raw product");
    assert_eq!(raw, 7);
}

/// A unit taken from the stock by hand breaks conservation, naming the product and its
/// three figures; a product that held more than it ever received is overdrawn.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn stock_changed_by_hand_is_named_with_its_figures(pool: MySqlPool) {
    let shop = Shop::open(pool.clone()).await;
    exec(
        &pool,
        "UPDATE products SET stock = stock - 1 WHERE id = ?",
        &[shop.pears.get()],
    )
    .await;
    // pears: 10 in; held 1 (paid) + 2 (pending); cancelled 4 returned: stock 7, now 6.
    let expected = StockMismatch {
        product: shop.pears,
        received: 10,
        stock: 6,
        held: 3,
    };
    assert_eq!(
        audit::stock_conservation(&pool).await.expect("stock"),
        [expected]
    );
    assert_eq!(
        expected.to_string(),
        format!("product {}: received 10, stock 6, held 3", shop.pears)
    );
    assert_eq!(
        audit::stock_overdrawn(&pool).await.expect("overdrawn"),
        [],
        "fewer units than received is a leak, not an overdraft"
    );

    exec(
        &pool,
        "UPDATE products SET stock_received = 2 WHERE id = ?",
        &[shop.pears.get()],
    )
    .await;
    assert_eq!(
        audit::stock_overdrawn(&pool).await.expect("overdrawn"),
        [StockMismatch {
            product: shop.pears,
            received: 2,
            stock: 6,
            held: 3,
        }]
    );
}

/// Two orders under one (user, key) cannot be stored while the unique index exists;
/// without it, the audit finds them on the rows.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_second_order_under_one_key_is_found_once_the_unique_index_is_gone(pool: MySqlPool) {
    let shop = Shop::open(pool.clone()).await;
    exec(
        &pool,
        "ALTER TABLE orders DROP INDEX orders_user_key_unique",
        &[],
    )
    .await;
    let twin = sqlx::query(
        "INSERT INTO orders (user_id, status, total_amount, idempotency_key, \
         request_fingerprint, attempts, created_at, updated_at, cancelled_at) \
         VALUES (?, 'CANCELLED', 0, 'paid', 0, 0, NOW(3), NOW(3), NOW(3))",
    )
    .bind(shop.user.get())
    .execute(&pool)
    .await
    .expect("the twin")
    .last_insert_id();
    let twin = OrderId::new(twin).expect("id");
    let found = audit::duplicate_keys(&pool).await.expect("keys");
    assert_eq!(
        found,
        [DuplicateKey {
            user: shop.user,
            key: "paid".to_owned(),
            orders: vec![shop.paid, twin],
        }]
    );
    assert_eq!(
        found[0].to_string(),
        format!(
            "user {}, key \"paid\": orders {}, {twin}",
            shop.user, shop.paid
        )
    );
}

/// Every way a status and the ledger can disagree is named: an approved charge on a
/// FAILED order, a PAID order whose charge is gone, an approval for no order.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn charges_that_disagree_with_the_order_status_are_named(pool: MySqlPool) {
    let shop = Shop::open(pool.clone()).await;
    exec(
        &pool,
        "UPDATE payments SET outcome = 'APPROVED', decline_reason = NULL WHERE order_id = ?",
        &[shop.failed.get()],
    )
    .await;
    exec(
        &pool,
        "DELETE FROM payments WHERE order_id = ?",
        &[shop.paid.get()],
    )
    .await;
    let ghost = OrderId::new(424_242).expect("id");
    charge(&pool, ghost, "APPROVED").await;
    let found = audit::charges(&pool).await.expect("charges");
    assert_eq!(
        found,
        [
            ChargeViolation::PaidWithoutApprovedCharge {
                order: shop.paid,
                declined: false
            },
            ChargeViolation::ApprovedButNotPaid {
                order: shop.failed,
                status: Some(OrderStatus::Failed)
            },
            ChargeViolation::ApprovedButNotPaid {
                order: ghost,
                status: None
            },
        ]
    );
    assert_eq!(
        found[1].to_string(),
        format!("order {} is FAILED but has an approved charge", shop.failed)
    );
}

/// A second `order.failed` in the log is a second return of the order's stock.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_second_stock_return_in_the_log_is_named(pool: MySqlPool) {
    let shop = Shop::open(pool.clone()).await;
    log_event(&pool, shop.user, shop.failed.get(), "order.failed").await;
    assert_eq!(
        audit::restored_more_than_once(&pool)
            .await
            .expect("restores"),
        [RepeatedRestore {
            order: shop.failed,
            restores: 2
        }]
    );
    // Nothing may follow a terminal event either.
    let histories = audit::illegal_histories(&pool).await.expect("histories");
    assert_eq!(
        histories.violations,
        [HistoryViolation::IllegalPath {
            order: shop.failed,
            kinds: vec![
                "order.created",
                "order.processing",
                "order.failed",
                "order.failed"
            ],
        }]
    );
}

/// An event after a terminal one, a status that disagrees with the last event, events
/// for no order, a history without its head in an unpruned log, and a seq gap are each
/// named.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn illegal_histories_are_named(pool: MySqlPool) {
    let shop = Shop::open(pool.clone()).await;
    // The paid order "goes back" to processing.
    log_event(&pool, shop.user, shop.paid.get(), "order.processing").await;
    let histories = audit::illegal_histories(&pool).await.expect("histories");
    assert_eq!(
        histories.violations,
        [
            HistoryViolation::IllegalPath {
                order: shop.paid,
                kinds: vec![
                    "order.created",
                    "order.processing",
                    "order.paid",
                    "order.processing"
                ],
            },
            HistoryViolation::StatusDisagrees {
                order: shop.paid,
                status: OrderStatus::Paid,
                last_event: "order.processing",
            },
        ]
    );
    assert_eq!(
        histories.violations[1].to_string(),
        format!(
            "order {} is PAID but its last event is order.processing",
            shop.paid
        )
    );

    // Events for an order that does not exist.
    log_event(&pool, shop.user, 777_777, "order.created").await;
    // The cancelled order loses its `order.created` (seq 7) although nothing of the
    // user's log was pruned: an illegal head, and a gap in the user's seqs.
    exec(
        &pool,
        "DELETE FROM order_events WHERE order_id = ? AND kind = 'order.created'",
        &[shop.cancelled.get()],
    )
    .await;
    let histories = audit::illegal_histories(&pool).await.expect("histories");
    let found: Vec<String> = histories
        .violations
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        histories
            .violations
            .contains(&HistoryViolation::IllegalPath {
                order: shop.cancelled,
                kinds: vec!["order.cancelled"],
            }),
        "{found:?}"
    );
    assert!(
        histories
            .violations
            .contains(&HistoryViolation::UnknownOrder {
                order: OrderId::new(777_777).expect("id"),
            }),
        "{found:?}"
    );
    // Seqs 1..=13 were handed out (11 by the repository, 2 planted); 12 retained.
    assert!(
        histories
            .violations
            .contains(&HistoryViolation::SeqNotConsecutive {
                user: shop.user,
                first: Some(1),
                last: Some(13),
                retained: 12,
                counter: 13,
            }),
        "{found:?}"
    );
}

/// Pruning by age (the reconciler's `prune_events`) breaks nothing: an order with no
/// event left is "not checkable", an order that lost only its head is still legal.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_pruned_log_is_not_checkable_rather_than_illegal(pool: MySqlPool) {
    let shop = Shop::open(pool.clone()).await;
    // Events are stamped with the instants given to the repository: the paid order's
    // (at 0, 1, 2) and the failed order's creation (at 3) are older than 4.
    let pruned = shop.repo.prune_events(at(4), 100).await.expect("prune");
    assert_eq!(pruned, 4);
    let histories = audit::illegal_histories(&pool).await.expect("histories");
    assert_eq!(histories.violations, [], "the failed order's tail is legal");
    assert_eq!(histories.not_checkable, 1);
    assert_eq!(histories.not_checkable_sample, [shop.paid]);
}

/// Migration 0008 backfills what came in as stock plus the units held by
/// PENDING/PROCESSING/PAID orders, so an existing deployment starts consistent.
#[sqlx::test(migrations = false)]
async fn migration_0008_backfills_received_stock_from_stock_and_held_units(pool: MySqlPool) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let (before, after): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| {
        f.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n < "0008")
    });
    let run = |file: std::path::PathBuf| {
        let pool = pool.clone();
        async move {
            let text = std::fs::read_to_string(&file).expect("migration text");
            sqlx::raw_sql(sqlx::AssertSqlSafe(text))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    };
    for file in before {
        run(file).await;
    }
    // The schema of 0007: a product with stock 5 and orders holding 2 (paid) + 1
    // (pending) of it, and 4 that were returned (failed).
    exec(
        &pool,
        "INSERT INTO users (name, email, password_hash) VALUES ('u', 'u@x', 'h')",
        &[],
    )
    .await;
    exec(
        &pool,
        "INSERT INTO products (name, price, stock) VALUES ('p', 1.00, 5), ('q', 1.00, 9)",
        &[],
    )
    .await;
    exec(
        &pool,
        "INSERT INTO orders (user_id, status, total_amount, idempotency_key, request_fingerprint, \
         created_at, updated_at, failure_reason) VALUES \
         (1, 'PAID', 2, 'a', 0, NOW(3), NOW(3), NULL), \
         (1, 'PENDING', 1, 'b', 0, NOW(3), NOW(3), NULL), \
         (1, 'FAILED', 4, 'c', 0, NOW(3), NOW(3), 'declined')",
        &[],
    )
    .await;
    exec(
        &pool,
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES \
         (1, 1, 2, 1.00), (2, 1, 1, 1.00), (3, 1, 4, 1.00)",
        &[],
    )
    .await;
    for file in after {
        run(file).await;
    }
    let received: Vec<(u64, u64)> =
        sqlx::query_as("SELECT id, stock_received FROM products ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("received");
    assert_eq!(received, [(1, 8), (2, 9)]);
    assert_eq!(audit::stock_conservation(&pool).await.expect("stock"), []);
}
