//! The repository under contention: no oversell, ascending lock order, and deadlocks and
//! lock-wait timeouts retried inside the adapter instead of surfacing.

use std::sync::Arc;
use std::time::Duration;

use order_core::domain::{Lease, LeaseToken, StatusChange, UserId};
use order_core::ports::{OrderRepository, PlaceOutcome, RepositoryError, TransitionOutcome};
use order_core::{OrderStatus, SeededRandom};
use order_mysql::{MySqlOrderRepository, RetryPolicy};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySqlPool};
use tokio::task::JoinSet;

use crate::support::{at, draft, money};

/// A pool of `max` connections on the test database (the one `#[sqlx::test]` hands out
/// allows only 5), optionally with a short lock-wait timeout.
async fn pool(
    options: MySqlConnectOptions,
    max: u32,
    lock_wait_timeout_s: Option<u32>,
) -> MySqlPool {
    let mut pool = MySqlPoolOptions::new().max_connections(max);
    if let Some(seconds) = lock_wait_timeout_s {
        pool = pool.after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "SET SESSION innodb_lock_wait_timeout = {seconds}"
                )))
                .await?;
                Ok(())
            })
        });
    }
    pool.connect_with(options).await.expect("test pool")
}

/// The repository over `pool`, and one user to order as.
async fn repo_with_user(pool: &MySqlPool) -> (Arc<MySqlOrderRepository>, UserId) {
    let repo = Arc::new(MySqlOrderRepository::new(pool.clone()));
    let user = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    (repo, user)
}

/// 500 concurrent single-draft orders for a product with 100 units: exactly 100 are
/// placed, 400 are refused as short, the stock ends at 0, and nothing errors.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn five_hundred_racing_orders_never_oversell_a_hundred_units(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(options, 16, None).await;
    let repo = Arc::new(MySqlOrderRepository::new(pool.clone()));
    let mut users = Vec::new();
    for n in 0..10 {
        users.push(
            repo.add_user(&format!("u{n}"), &format!("u{n}@example.test"), "h")
                .await
                .expect("user"),
        );
    }
    let hot = repo
        .add_product("Limited Edition Headphones", money("299.99"), 100)
        .await
        .expect("product");
    let mut tasks = JoinSet::new();
    for i in 0..500 {
        let repo = repo.clone();
        let d = draft(users[i % users.len()], &format!("race-{i}"), &[(hot, 1)]);
        tasks.spawn(async move { repo.place(&[d], at(i as u64)).await });
    }
    let (mut placed, mut short) = (0, 0);
    for result in tasks.join_all().await {
        let outcomes = result.expect("no place may fail under contention");
        match &outcomes[..] {
            [PlaceOutcome::Placed(..)] => placed += 1,
            [PlaceOutcome::InsufficientStock { product, .. }] if *product == hot => short += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((placed, short), (100, 400));
    assert_eq!(repo.stock(hot).await.expect("stock"), Some(0));
    let (orders, units): (i64, Option<rust_decimal::Decimal>) =
        sqlx::query_as("SELECT COUNT(*), SUM(quantity) FROM order_items WHERE product_id = ?")
            .bind(hot.get())
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        (orders, units.map(|u| u.to_string())),
        (100, Some("100".into()))
    );
    pool.close().await;
}

/// Orders for {A, B} sent as [A, B] and as [B, A] at the same time never surface an
/// error: rows are locked in ascending id order, so they queue instead of deadlocking
/// (and any deadlock would be retried).
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn crossed_orders_for_two_products_never_surface_an_error(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(options, 16, None).await;
    let (repo, user) = repo_with_user(&pool).await;
    let a = repo
        .add_product("A", money("1.00"), 1_000)
        .await
        .expect("a");
    let b = repo
        .add_product("B", money("2.00"), 1_000)
        .await
        .expect("b");
    let mut tasks = JoinSet::new();
    for i in 0..200_u64 {
        let repo = repo.clone();
        let items = if i % 2 == 0 {
            [(a, 1), (b, 2)]
        } else {
            [(b, 2), (a, 1)]
        };
        let d = draft(user, &format!("cross-{i}"), &items);
        tasks.spawn(async move { repo.place(&[d], at(i)).await });
    }
    for result in tasks.join_all().await {
        let outcomes = result.expect("crossed orders must never fail");
        assert!(
            matches!(outcomes[..], [PlaceOutcome::Placed(..)]),
            "{outcomes:?}"
        );
    }
    assert_eq!(repo.stock(a).await.expect("a"), Some(800));
    assert_eq!(repo.stock(b).await.expect("b"), Some(600));
    pool.close().await;
}

/// A real deadlock: another transaction holds B and then asks for A while `place` holds
/// A and waits for B. InnoDB rolls back the lighter transaction — `place`, since the
/// other one has written many rows — and the adapter retries it, so the caller only sees
/// the order placed once the other transaction commits.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_deadlocked_place_is_retried_and_succeeds(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(options.clone(), 4, None).await;
    let repo = MySqlOrderRepository::new(pool.clone());
    let user = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    let a = repo.add_product("A", money("1.00"), 10).await.expect("a");
    let b = repo.add_product("B", money("2.00"), 10).await.expect("b");

    let mut other = sqlx::MySqlConnection::connect_with(&options)
        .await
        .expect("conn");
    other.execute("BEGIN").await.expect("begin");
    // Make the other transaction heavy so that InnoDB picks `place` as the victim.
    for n in 0..50 {
        sqlx::query("INSERT INTO users (name, email, password_hash) VALUES ('x', ?, 'h')")
            .bind(format!("heavy{n}@example.test"))
            .execute(&mut other)
            .await
            .expect("heavy insert");
    }
    sqlx::query("SELECT stock FROM products WHERE id = ? FOR UPDATE")
        .bind(b.get())
        .fetch_one(&mut other)
        .await
        .expect("lock B");

    let placing = {
        let repo = repo.clone();
        let d = draft(user, "deadlock", &[(a, 1), (b, 1)]);
        tokio::spawn(async move { repo.place(&[d], at(0)).await })
    };
    // Let `place` lock A and queue on B, then close the cycle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("SELECT stock FROM products WHERE id = ? FOR UPDATE")
        .bind(a.get())
        .fetch_one(&mut other)
        .await
        .expect("the heavy transaction must survive the deadlock");
    tokio::time::sleep(Duration::from_millis(100)).await;
    other.execute("COMMIT").await.expect("commit");

    let outcomes = placing.await.expect("task").expect("place must not fail");
    assert!(
        matches!(outcomes[..], [PlaceOutcome::Placed(..)]),
        "{outcomes:?}"
    );
    assert!(
        repo.retry_count() >= 1,
        "the deadlock must have been retried"
    );
    assert_eq!(repo.stock(a).await.expect("a"), Some(9));
    assert_eq!(repo.stock(b).await.expect("b"), Some(9));
    pool.close().await;
}

/// A lock-wait timeout (1205) rolls back only the statement: the adapter rolls back the
/// transaction itself and retries; while the lock is held past every retry, the caller
/// gets `Unavailable` and nothing is written; once it is released, the order goes through.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn lock_wait_timeouts_are_retried_then_reported_unavailable(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(options.clone(), 4, Some(1)).await;
    let policy = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    // A seeded source: the retry pauses are the same on every run.
    let repo = MySqlOrderRepository::with_retry_policy(pool.clone(), policy)
        .with_random_source(Arc::new(SeededRandom::new(5)));
    let user = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    let a = repo.add_product("A", money("1.00"), 10).await.expect("a");

    let mut holder = sqlx::MySqlConnection::connect_with(&options)
        .await
        .expect("conn");
    holder.execute("BEGIN").await.expect("begin");
    sqlx::query("SELECT stock FROM products WHERE id = ? FOR UPDATE")
        .bind(a.get())
        .fetch_one(&mut holder)
        .await
        .expect("lock A");

    // Held past both attempts (1 s each): Unavailable, nothing written.
    let err = repo
        .place(&[draft(user, "blocked", &[(a, 1)])], at(0))
        .await
        .expect_err("a lock held past every retry must surface");
    assert!(matches!(err, RepositoryError::Unavailable(_)), "{err:?}");
    assert_eq!(repo.retry_count(), 1, "one retry between two attempts");

    // Released during the first wait: the retry succeeds.
    let placing = {
        let repo = repo.clone();
        tokio::spawn(async move { repo.place(&[draft(user, "later", &[(a, 1)])], at(1)).await })
    };
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    holder.execute("COMMIT").await.expect("commit");
    let outcomes = placing
        .await
        .expect("task")
        .expect("the retry must succeed");
    assert!(
        matches!(outcomes[..], [PlaceOutcome::Placed(..)]),
        "{outcomes:?}"
    );
    assert_eq!(repo.retry_count(), 2);
    assert_eq!(
        repo.stock(a).await.expect("a"),
        Some(9),
        "only the later order holds stock"
    );
    let blocked = repo
        .find_by_key(
            user,
            &order_core::IdempotencyKey::new("blocked").expect("key"),
        )
        .await
        .expect("find");
    assert_eq!(blocked, None, "the timed-out order wrote nothing");
    pool.close().await;
}

/// 16 concurrent cancels of one order: exactly one applies, the others lose the race
/// seeing it Cancelled, and the stock comes back exactly once.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn racing_cancels_return_the_stock_exactly_once(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(options, 16, None).await;
    let (repo, user) = repo_with_user(&pool).await;
    let a = repo.add_product("A", money("1.00"), 20).await.expect("a");
    let b = repo.add_product("B", money("1.00"), 20).await.expect("b");
    let out = repo
        .place(&[draft(user, "k", &[(a, 5), (b, 7)])], at(0))
        .await
        .expect("place");
    let [PlaceOutcome::Placed(order, _)] = &out[..] else {
        panic!("{out:?}")
    };
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let repo = repo.clone();
        let id = order.id();
        tasks.spawn(async move { repo.transition(id, StatusChange::Cancel, at(10 + i)).await });
    }
    let mut applied = 0;
    for result in tasks.join_all().await {
        match result.expect("no cancel may fail") {
            TransitionOutcome::Applied(..) => applied += 1,
            TransitionOutcome::LostRace(o) => assert_eq!(o.status(), OrderStatus::Cancelled),
            TransitionOutcome::NotFound => panic!("order vanished"),
        }
    }
    assert_eq!(applied, 1, "exactly one cancel wins");
    assert_eq!(repo.stock(a).await.expect("a"), Some(20));
    assert_eq!(repo.stock(b).await.expect("b"), Some(20));
    pool.close().await;
}

/// A cancel racing a worker's start, 20 times: exactly one wins each time, and the stock
/// matches the winner (returned after a cancel, still reserved after a start).
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_cancel_racing_a_start_has_exactly_one_winner(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(options, 8, None).await;
    let (repo, user) = repo_with_user(&pool).await;
    let a = repo
        .add_product("A", money("1.00"), 1_000)
        .await
        .expect("a");
    let mut reserved = 0;
    for round in 0..20_u64 {
        let out = repo
            .place(&[draft(user, &format!("r{round}"), &[(a, 2)])], at(round))
            .await
            .expect("place");
        let [PlaceOutcome::Placed(order, _)] = &out[..] else {
            panic!("{out:?}")
        };
        let id = order.id();
        let (r1, r2) = (repo.clone(), repo.clone());
        let cancel =
            tokio::spawn(async move { r1.transition(id, StatusChange::Cancel, at(50)).await });
        let start = tokio::spawn(async move {
            let lease = Lease {
                token: LeaseToken::from_raw(round + 1),
                until: at(10_000),
            };
            r2.transition(id, StatusChange::Start { lease }, at(50))
                .await
        });
        let c = cancel.await.expect("task").expect("cancel");
        let s = start.await.expect("task").expect("start");
        match (c, s) {
            (TransitionOutcome::Applied(..), TransitionOutcome::LostRace(o)) => {
                assert_eq!(o.status(), OrderStatus::Cancelled, "round {round}");
            }
            (TransitionOutcome::LostRace(o), TransitionOutcome::Applied(..)) => {
                assert_eq!(o.status(), OrderStatus::Processing, "round {round}");
                reserved += 2;
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        }
        assert_eq!(
            repo.stock(a).await.expect("a"),
            Some(1_000 - reserved),
            "round {round}"
        );
    }
    pool.close().await;
}

/// 20 concurrent requests with one (user, key): exactly one order is created and every
/// other request replays it — even when the winner took the last unit, the losers see a
/// replay, never a shortage — and a racer with other lines gets `KeyReused`.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn concurrent_twins_create_one_order_and_the_others_replay(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(options, 16, None).await;
    let (repo, user) = repo_with_user(&pool).await;
    for (round, stock) in [(0_u64, 1_u64), (1, 1_000)] {
        let p = repo
            .add_product("P", money("9.99"), stock)
            .await
            .expect("p");
        let other = repo
            .add_product("Q", money("1.00"), 1_000)
            .await
            .expect("q");
        let key = format!("twin-{round}");
        let mut tasks = JoinSet::new();
        for i in 0..20_u64 {
            let repo = repo.clone();
            // Racer 7 reuses the key for other lines.
            let d = if i == 7 {
                draft(user, &key, &[(other, 1)])
            } else {
                draft(user, &key, &[(p, 1)])
            };
            tasks.spawn(async move { (i, repo.place(&[d], at(i)).await) });
        }
        let mut placed = Vec::new();
        let mut replayed = Vec::new();
        let mut reused = 0;
        for (i, result) in tasks.join_all().await {
            match result.expect("a twin must never fail").pop() {
                Some(PlaceOutcome::Placed(o, _)) => placed.push(o),
                Some(PlaceOutcome::Replayed(o)) => replayed.push(o),
                Some(PlaceOutcome::KeyReused { .. }) => reused += 1,
                other => panic!("round {round}, racer {i}: {other:?}"),
            }
        }
        assert_eq!(placed.len() + replayed.len() + reused, 20);
        assert_eq!(placed.len(), 1, "round {round}: exactly one order per key");
        let winner = &placed[0];
        assert!(
            replayed.iter().all(|o| o == winner),
            "round {round}: replays see the winner"
        );
        // Whoever won, everyone with the winner's lines replays and everyone with other
        // lines is refused; stock moved for the winner's product only.
        let racer_7_won = winner.lines()[0].product == other;
        let (reused_expected, p_left, q_left) = if racer_7_won {
            (19, stock, 999)
        } else {
            (1, stock - 1, 1_000)
        };
        assert_eq!(
            reused, reused_expected,
            "round {round} (racer 7 won: {racer_7_won})"
        );
        assert_eq!(
            repo.stock(p).await.expect("p"),
            Some(p_left),
            "round {round}"
        );
        assert_eq!(
            repo.stock(other).await.expect("q"),
            Some(q_left),
            "round {round}"
        );
    }
    pool.close().await;
}
