//! Order coalescing and the multi-row batch path against a real server: many concurrent
//! one-draft placements on a hot product (no oversell, keys honoured once, gap-free event
//! logs, batches actually formed), one draft's failure inside a batch, the second attempt
//! after a duplicate-key race and the fallback after two, the constant statement count of
//! a batch, and queued drafts outliving the repository handle.
//!
//! Batches are formed deterministically where the test needs one: another connection
//! holds the product's row lock, so the first placement (which goes alone, at once)
//! blocks on it and the drafts sent meanwhile queue behind it; releasing the lock lets
//! the first finish and the queue go as one batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use order_core::ports::{OrderRepository, PlaceOutcome, RepositoryError};
use order_core::{Order, OrderId, ProductId, UserId};
use order_mysql::{CoalesceConfig, CoalescingStats, MySqlOrderRepository};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySqlConnection, MySqlPool};
use tokio::task::{JoinHandle, JoinSet};

use crate::support::{
    at, counters, draft, money, patient, pool, until_transactions_wait_for_locks,
};

async fn users(repo: &MySqlOrderRepository, n: usize) -> Vec<UserId> {
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        users.push(
            repo.add_user(&format!("u{i}"), &format!("u{i}@example.test"), "h")
                .await
                .expect("user"),
        );
    }
    users
}

/// Another connection holding `product`'s row lock in an open transaction.
async fn hold_row(options: &MySqlConnectOptions, product: ProductId) -> MySqlConnection {
    let mut x = MySqlConnection::connect_with(options).await.expect("x");
    x.execute("BEGIN").await.expect("begin");
    sqlx::query("SELECT stock FROM products WHERE id = ? FOR UPDATE")
        .bind(product.get())
        .fetch_one(&mut x)
        .await
        .expect("lock the row");
    x
}

type Placing = JoinHandle<Result<Vec<PlaceOutcome>, RepositoryError>>;

fn spawn_place(
    repo: &Arc<MySqlOrderRepository>,
    d: order_core::domain::OrderDraft,
    ms: u64,
) -> Placing {
    let repo = repo.clone();
    tokio::spawn(async move { repo.place(&[d], at(ms)).await })
}

async fn outcome(task: Placing) -> PlaceOutcome {
    let mut outcomes = task.await.expect("task").expect("place");
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

/// Sends `drafts` one at a time (a short pause between them fixes their arrival order)
/// while the lane's first placement is blocked; they queue.
async fn queue_up(
    repo: &Arc<MySqlOrderRepository>,
    drafts: Vec<order_core::domain::OrderDraft>,
) -> Vec<Placing> {
    let mut tasks = Vec::new();
    for (i, d) in drafts.into_iter().enumerate() {
        tasks.push(spawn_place(repo, d, 100 + i as u64));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tasks
}

/// 400 concurrent one-draft placements by 40 users — most for a hot product with 150
/// units, some for it and a second product, some for the second alone, every eighth one
/// repeating an earlier (user, key) with the same lines — through the default coalescer:
/// exactly 150 units of the hot product are sold, nothing errors, each key is held by
/// one order and every replay returns it, each user's event log is 1..n without gaps,
/// one `order.created` per order, and batches were formed.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn four_hundred_concurrent_placements_coalesce_without_oversell_and_keep_every_promise(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(&options, 16).await;
    let repo = Arc::new(MySqlOrderRepository::new(pool.clone()));
    let users = users(&repo, 40).await;
    let hot = repo
        .add_product("hot", money("9.99"), 150)
        .await
        .expect("hot");
    let second = repo
        .add_product("second", money("2.50"), 100_000)
        .await
        .expect("second");

    let mut tasks = JoinSet::new();
    let mut sent = Vec::new();
    for i in 0..400_usize {
        let user = users[i % 40];
        // Every eighth call from the second round on repeats call i - 40's key (same
        // user, same lines): a twin racing or following the original.
        let (key_of, lines_of) = if i >= 40 && i % 8 == 0 {
            (i - 40, i - 40)
        } else {
            (i, i)
        };
        let items: Vec<(ProductId, u32)> = match lines_of % 10 {
            0 | 1 => vec![(hot, 1), (second, 2)],
            2 => vec![(second, 1)],
            _ => vec![(hot, 1)],
        };
        let d = draft(user, &format!("k{key_of}"), &items);
        sent.push(d.clone());
        let repo = repo.clone();
        tasks.spawn(async move { (i, repo.place(&[d], at(i as u64)).await) });
    }
    let mut outcomes: BTreeMap<usize, PlaceOutcome> = BTreeMap::new();
    for (i, result) in tasks.join_all().await {
        let mut result = result.unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        assert_eq!(result.len(), 1);
        outcomes.insert(i, result.remove(0));
    }

    // Every key is held by at most one order; each replay is that order.
    let mut by_key: HashMap<(UserId, String), Order> = HashMap::new();
    let mut hot_sold = 0_u64;
    let mut second_sold = 0_u64;
    let mut orders_of: BTreeMap<UserId, Vec<OrderId>> = BTreeMap::new();
    for (i, o) in &outcomes {
        if let PlaceOutcome::Placed(order, event) = o {
            let key = (order.user(), order.idempotency_key().as_str().to_owned());
            assert!(
                by_key.insert(key, order.clone()).is_none(),
                "call {i}: a key placed twice"
            );
            assert_eq!(event.order, order.id());
            for line in order.lines() {
                if line.product == hot {
                    hot_sold += u64::from(line.quantity.get());
                } else {
                    second_sold += u64::from(line.quantity.get());
                }
            }
            orders_of.entry(order.user()).or_default().push(order.id());
        }
    }
    let mut replays = 0;
    for (i, o) in &outcomes {
        match o {
            PlaceOutcome::Placed(..) => {}
            PlaceOutcome::Replayed(order) => {
                replays += 1;
                let key = (order.user(), order.idempotency_key().as_str().to_owned());
                assert_eq!(
                    by_key.get(&key),
                    Some(order),
                    "call {i}: a replay of the key's order"
                );
                assert!(sent[*i].same_lines_as(order));
            }
            PlaceOutcome::InsufficientStock { product, .. } => {
                assert_eq!(*product, hot, "call {i}: only the hot product runs out")
            }
            other => panic!("call {i}: {other:?}"),
        }
    }
    assert_eq!(hot_sold, 150, "exactly the hot product's stock is sold");
    assert_eq!(
        repo.stock(hot).await.expect("stock"),
        Some(0),
        "no oversell"
    );
    assert_eq!(
        repo.stock(second).await.expect("stock"),
        Some(100_000 - second_sold)
    );
    for (key, order) in &by_key {
        let stored = repo
            .find_by_key(
                key.0,
                &order_core::IdempotencyKey::new(&key.1).expect("key"),
            )
            .await
            .expect("find");
        assert_eq!(stored.as_ref(), Some(order), "stored as returned");
    }
    let stored_orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        stored_orders as usize,
        by_key.len(),
        "one stored order per placed outcome"
    );

    // Each user's log: seqs 1..n, one order.created per order placed.
    for user in &users {
        let page = repo.events_after(*user, 0, 1_000).await.expect("events");
        let mine = orders_of.get(user).cloned().unwrap_or_default();
        let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=mine.len() as u64).collect::<Vec<_>>(),
            "user {user}"
        );
        assert_eq!(page.last_seq, mine.len() as u64);
        let mut logged: Vec<OrderId> = page.events.iter().map(|e| e.order).collect();
        let mut mine = mine;
        logged.sort();
        mine.sort();
        assert_eq!(logged, mine, "user {user}: one event per order");
    }

    let stats = repo.coalescing_stats();
    eprintln!("coalescing: {stats:?}, {replays} replays");
    assert!(stats.batches > 0, "batches were formed: {stats:?}");
    assert!(stats.drafts > stats.batches, "{stats:?}");
    assert_eq!(
        stats.drafts + stats.solo,
        400,
        "every draft went through the coalescer once: {stats:?}"
    );
    pool.close().await;
}

/// One batch mixing every outcome — placed, unknown user, a key repeated with other
/// lines, a replay of a key placed earlier in the batch, short — gives each draft its own
/// outcome, in arrival order, and fails none of the others.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn one_drafts_failure_in_a_coalesced_batch_fails_none_of_the_others(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(&options, 8).await;
    let repo = patient(&pool);
    let u = users(&repo, 3).await;
    let p = repo.add_product("P", money("3.00"), 5).await.expect("p");
    let ghost = UserId::new(u[2].get() + 1_000).expect("ghost");

    let mut x = hold_row(&options, p).await;
    let first = spawn_place(&repo, draft(u[0], "first", &[(p, 1)]), 0);
    until_transactions_wait_for_locks(&pool, 1).await;
    let queued = queue_up(
        &repo,
        vec![
            draft(u[1], "a", &[(p, 2)]),
            draft(ghost, "ghost", &[(p, 1)]),
            draft(u[1], "a", &[(p, 3)]),
            draft(u[1], "a", &[(p, 2)]),
            draft(u[2], "big", &[(p, 3)]),
            draft(u[2], "fits", &[(p, 2)]),
        ],
    )
    .await;
    x.execute("COMMIT").await.expect("release the row");

    assert!(matches!(outcome(first).await, PlaceOutcome::Placed(..)));
    let mut got = Vec::new();
    for task in queued {
        got.push(outcome(task).await);
    }
    let PlaceOutcome::Placed(a, _) = &got[0] else {
        panic!("draft 0 is placed: {:?}", got[0])
    };
    assert_eq!(got[1], PlaceOutcome::UnknownUser(ghost));
    assert_eq!(got[2], PlaceOutcome::KeyReused { existing: a.id() });
    assert_eq!(got[3], PlaceOutcome::Replayed(a.clone()));
    assert_eq!(
        got[4],
        PlaceOutcome::InsufficientStock {
            product: p,
            requested: 3,
            available: 2
        },
        "after the first (1) and draft 0 (2), two units are left"
    );
    assert!(
        matches!(&got[5], PlaceOutcome::Placed(o, _) if o.user() == u[2]),
        "{:?}",
        got[5]
    );
    assert_eq!(repo.stock(p).await.expect("stock"), Some(0));
    let stats = repo.coalescing_stats();
    assert_eq!(
        stats,
        CoalescingStats {
            batches: 1,
            drafts: 6,
            solo: 1,
            fallbacks: 0,
            largest_batch: 6,
            ..CoalescingStats::default()
        }
    );
    let log = repo.events_after(u[2], 0, 10).await.expect("events");
    assert_eq!(
        log.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1]
    );
    pool.close().await;
}

/// A twin commits a batch draft's key while the batch waits for the user's row (the
/// first attempt reads no key beforehand): the multi-row insert hits the unique key, the
/// attempt is rolled back, and the second attempt's pre-read answers the raced draft by
/// the twin's order (its key reused for other lines) while the others are placed in the
/// same batch — no draft falls back to the one-by-one path, nothing is written twice.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_batch_that_races_a_twin_on_a_key_is_attempted_again_with_the_key_pre_read(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let (pool, repo, u, p, q) = race_setup(&options, 3).await;

    let (mut y, queued) = batch_waiting_for_a_user(
        &repo,
        &pool,
        &options,
        (u[0], u[1], p),
        vec![
            draft(u[1], "raced", &[(p, 2)]),
            draft(u[2], "other", &[(p, 3)]),
        ],
    )
    .await;
    // The twin commits the key meanwhile (with other lines, on Q, which the batch does
    // not hold).
    let twin = twin_order(&mut y, u[1], "raced", q).await;
    y.execute("COMMIT").await.expect("commit the twin");

    let mut queued = queued.into_iter();
    let raced = outcome(queued.next().expect("task")).await;
    assert_eq!(
        raced,
        PlaceOutcome::KeyReused {
            existing: OrderId::new(twin).expect("id")
        }
    );
    let PlaceOutcome::Placed(other, _) = outcome(queued.next().expect("task")).await else {
        panic!("the other draft of the batch is placed")
    };
    let stats = repo.coalescing_stats();
    assert_eq!((stats.batches, stats.fallbacks), (1, 0), "{stats:?}");
    assert_eq!(other.total(), money("9.00"));
    assert_eq!(
        repo.stock(p).await.expect("p"),
        Some(10 - 1 - 3),
        "the raced draft took nothing"
    );
    let keys: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE idempotency_key = 'raced'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(keys, 1);
    pool.close().await;
}

/// The race tests' store: a patient repository over 8 connections, `n` users, P (3.00,
/// 10 units) which the batches take, and Q (1.00, 10 units) which only the twins take.
async fn race_setup(
    options: &MySqlConnectOptions,
    n: usize,
) -> (
    MySqlPool,
    Arc<MySqlOrderRepository>,
    Vec<UserId>,
    ProductId,
    ProductId,
) {
    let pool = pool(options, 8).await;
    let repo = patient(&pool);
    let u = users(&repo, n).await;
    let p = repo.add_product("P", money("3.00"), 10).await.expect("p");
    let q = repo.add_product("Q", money("1.00"), 10).await.expect("q");
    (pool, repo, u, p, q)
}

/// A batch that holds `product`'s row and waits for `user`'s: Y (returned) holds the
/// user's row; X holds the product's while a first draft (for `first`) goes alone and
/// blocks on it, and `drafts` queue behind that one; X lets go, the first is placed, and
/// the queue goes as one batch — which locks the product, then waits for Y.
async fn batch_waiting_for_a_user(
    repo: &Arc<MySqlOrderRepository>,
    pool: &MySqlPool,
    options: &MySqlConnectOptions,
    (first, user, product): (UserId, UserId, ProductId),
    drafts: Vec<order_core::domain::OrderDraft>,
) -> (MySqlConnection, Vec<Placing>) {
    let mut y = MySqlConnection::connect_with(options).await.expect("y");
    y.execute("BEGIN").await.expect("begin");
    sqlx::query("SELECT id FROM users WHERE id = ? FOR UPDATE")
        .bind(user.get())
        .fetch_one(&mut y)
        .await
        .expect("lock the user");
    let mut x = hold_row(options, product).await;
    let placing = spawn_place(repo, draft(first, "first", &[(product, 1)]), 0);
    until_transactions_wait_for_locks(pool, 1).await;
    let queued = queue_up(repo, drafts).await;
    x.execute("COMMIT").await.expect("release the product");
    assert!(matches!(outcome(placing).await, PlaceOutcome::Placed(..)));
    until_transactions_wait_for_locks(pool, 1).await;
    (y, queued)
}

/// An order for `user` holding `key`, with one line of `product`, written by `conn` in
/// its open transaction (another client's twin request): its id.
async fn twin_order(
    conn: &mut MySqlConnection,
    user: UserId,
    key: &str,
    product: ProductId,
) -> u64 {
    let twin_draft = draft(user, key, &[(product, 1)]);
    let id = sqlx::query(
        "INSERT INTO orders (user_id, status, total_amount, idempotency_key, \
         request_fingerprint, attempts, created_at, updated_at) \
         VALUES (?, 'PENDING', 1.00, ?, ?, 0, NOW(3), NOW(3))",
    )
    .bind(user.get())
    .bind(key)
    .bind(twin_draft.fingerprint().raw())
    .execute(&mut *conn)
    .await
    .expect("twin order")
    .last_insert_id();
    sqlx::query(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
         VALUES (?, ?, 1, 1.00)",
    )
    .bind(id)
    .bind(product.get())
    .execute(&mut *conn)
    .await
    .expect("twin line");
    id
}

/// Twins race a batch on BOTH of its attempts: the first attempt (no key read) hits the
/// key one twin committed while it waited for a user's row; the second attempt reads
/// that key beforehand, but while it waits for the product's row another twin commits a
/// second key, so its insert hits the unique index too. The batch then falls back to
/// the one-by-one path: each raced draft is answered by its twin's order (a key reused
/// with other lines), the other draft is placed, nothing is written twice, and the
/// raced drafts take no stock.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_batch_raced_on_both_attempts_falls_back_to_one_draft_at_a_time(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let (pool, repo, u, p, q) = race_setup(&options, 4).await;

    let (mut y, queued) = batch_waiting_for_a_user(
        &repo,
        &pool,
        &options,
        (u[0], u[1], p),
        vec![
            draft(u[1], "raced-1", &[(p, 2)]),
            draft(u[2], "raced-2", &[(p, 1)]),
            draft(u[3], "other", &[(p, 3)]),
        ],
    )
    .await;
    // The first attempt holds P and waits for u[1]. W asks for P now: it queues behind
    // the first attempt and is granted P the moment that attempt rolls back — before
    // the second attempt, which asks for P only after its key read, can.
    let mut w = MySqlConnection::connect_with(&options).await.expect("w");
    w.execute("BEGIN").await.expect("begin");
    let w_locks = tokio::spawn(async move {
        sqlx::query("SELECT stock FROM products WHERE id = ? FOR UPDATE")
            .bind(p.get())
            .fetch_one(&mut w)
            .await
            .expect("W locks P");
        w
    });
    until_transactions_wait_for_locks(&pool, 2).await;
    // Twin 1 commits: the first attempt gets u[1], hits "raced-1" and rolls back.
    let twin_1 = twin_order(&mut y, u[1], "raced-1", q).await;
    y.execute("COMMIT").await.expect("commit twin 1");
    let mut w = w_locks.await.expect("W holds P");
    // The second attempt read both keys before twin 2 exists, and now waits for P.
    until_transactions_wait_for_locks(&pool, 1).await;
    let twin_2 = twin_order(&mut w, u[2], "raced-2", q).await;
    w.execute("COMMIT").await.expect("commit twin 2");

    let mut queued = queued.into_iter();
    for (key, twin) in [("raced-1", twin_1), ("raced-2", twin_2)] {
        assert_eq!(
            outcome(queued.next().expect("task")).await,
            PlaceOutcome::KeyReused {
                existing: OrderId::new(twin).expect("id")
            },
            "{key} is answered by its twin"
        );
    }
    let PlaceOutcome::Placed(other, _) = outcome(queued.next().expect("task")).await else {
        panic!("the other draft of the batch is placed")
    };
    assert_eq!(other.total(), money("9.00"));
    let stats = repo.coalescing_stats();
    assert_eq!(
        (stats.batches, stats.fallbacks),
        (1, 1),
        "one batch, raced twice, placed one by one: {stats:?}"
    );
    assert_eq!(
        repo.stock(p).await.expect("p"),
        Some(10 - 1 - 3),
        "the raced drafts took nothing"
    );
    let held: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders WHERE idempotency_key IN ('raced-1', 'raced-2')",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(held, 2, "each raced key is held once, by its twin");
    pool.close().await;
}

/// The statements one `place` of `drafts` runs, from the session counters of a pool of
/// ONE connection (so the counters see exactly this call, and the reads of the counters
/// themselves are subtracted).
async fn statements_of(
    repo: &MySqlOrderRepository,
    pool: &MySqlPool,
    drafts: &[order_core::domain::OrderDraft],
) -> BTreeMap<String, u64> {
    let idle_before = counters(pool).await;
    let idle_after = counters(pool).await;
    let before = counters(pool).await;
    let outcomes = repo.place(drafts, at(0)).await.expect("place");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PlaceOutcome::Placed(..)))
    );
    let after = counters(pool).await;
    after
        .iter()
        .filter_map(|(name, v)| {
            let noise = idle_after[name] - idle_before[name];
            let delta = v - before[name] - noise;
            (delta > 0).then(|| (name.clone(), delta))
        })
        .collect()
}

/// A batch of 64 drafts on one product costs the same statements as a batch of 2: the
/// count does not grow with the batch. Nine with the new ids returned by the insert
/// (MariaDB's `INSERT … RETURNING`, the default), ten with them read back (the MySQL
/// path, forced here by `without_insert_returning`); no key is read before the first
/// attempt.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_batch_costs_a_constant_number_of_statements(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(&options, 1).await;
    let returning = MySqlOrderRepository::new(pool.clone());
    let u = users(&returning, 64).await;
    let p = returning
        .add_product("P", money("1.00"), 1_000)
        .await
        .expect("p");
    let batch = |n: usize, round: &str| -> Vec<_> {
        (0..n)
            .map(|i| draft(u[i], &format!("{round}-{i}"), &[(p, 1)]))
            .collect()
    };
    // What the server ran. Left out: `Com_stmt_prepare` (the client's statement cache:
    // a new statement text is prepared once) and `Com_admin_commands` (the pool's ping
    // on acquire).
    let ran = |c: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        c.iter()
            .filter(|(name, _)| !matches!(name.as_str(), "Com_stmt_prepare" | "Com_admin_commands"))
            .map(|(n, v)| (n.clone(), *v))
            .collect()
    };
    let read_back = returning.clone().without_insert_returning();
    for (repo, expected, what) in [
        (
            &returning,
            9,
            "BEGIN, 2 locking reads, 5 writes (the orders' ids returned), COMMIT",
        ),
        (
            &read_back,
            10,
            "BEGIN, 2 locking reads, 5 writes, 1 id read, COMMIT",
        ),
    ] {
        let round = expected.to_string();
        let two = statements_of(repo, &pool, &batch(2, &format!("two-{round}"))).await;
        let sixty_four =
            statements_of(repo, &pool, &batch(64, &format!("sixty-four-{round}"))).await;
        eprintln!("2 drafts: {two:?}\n64 drafts: {sixty_four:?}");
        assert_eq!(
            ran(&two),
            ran(&sixty_four),
            "the same statements for 2 and for 64 drafts"
        );
        // Every statement the server ran, whichever protocol carried it (the batch's
        // two scripts are text; the one-draft path's statements are prepared).
        let statements = ran(&sixty_four).values().sum::<u64>();
        assert_eq!(statements, expected, "{what}: {sixty_four:?}");
    }
    pool.close().await;
}

/// A batch whose caller gives up while the batch's first script (`BEGIN` and the
/// locking reads, sent as one text) waits for a row lock leaves no transaction behind:
/// its connection is closed instead of going back to the pool with that transaction
/// open. Once the lock's holder lets go, the product row is free at once (`NOWAIT`),
/// nothing was written, and the pool places again.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_batch_given_up_inside_its_transaction_leaves_no_lock_behind(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(&options, 2).await;
    let repo = MySqlOrderRepository::new(pool.clone()).without_coalescing();
    let u = users(&repo, 2).await;
    let p = repo.add_product("P", money("1.00"), 10).await.expect("p");
    let mut holder = hold_row(&options, p).await;
    let drafts = [
        draft(u[0], "given-up-0", &[(p, 1)]),
        draft(u[1], "given-up-1", &[(p, 1)]),
    ];
    tokio::select! {
        outcome = repo.place(&drafts, at(0)) => {
            panic!("the batch cannot end while the row is held: {outcome:?}")
        }
        () = until_transactions_wait_for_locks(&pool, 1) => {}
    }
    holder.execute("ROLLBACK").await.expect("release the row");

    let mut probe = MySqlConnection::connect_with(&options)
        .await
        .expect("probe");
    let mut free = false;
    for _ in 0..50 {
        probe.execute("BEGIN").await.expect("begin");
        let locked = sqlx::query("SELECT stock FROM products WHERE id = ? FOR UPDATE NOWAIT")
            .bind(p.get())
            .fetch_one(&mut probe)
            .await;
        probe.execute("ROLLBACK").await.expect("rollback");
        if locked.is_ok() {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        free,
        "the given-up batch's transaction still holds the product row"
    );
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        orders, 0,
        "a batch given up before its writes wrote nothing"
    );

    let outcomes = repo.place(&drafts, at(1)).await.expect("place again");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PlaceOutcome::Placed(..))),
        "{outcomes:?}"
    );
    let stock: u32 = sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
        .bind(p.get())
        .fetch_one(&pool)
        .await
        .expect("stock");
    assert_eq!(stock, 8);
    pool.close().await;
}

/// A batch hands the connection it has just committed on to the batch that follows it
/// at once (no trip through the pool, no ping) — but never the pool's only connection
/// while every other one is out: with a pool of one and 32 callers keeping the lane
/// busy, another caller of the pool still gets the connection, every time, well within
/// the acquire timeout.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_busy_lane_never_keeps_the_pools_only_connection_from_other_callers(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.clone())
        .await
        .expect("a pool of one");
    let repo = Arc::new(MySqlOrderRepository::new(pool.clone()));
    let u = users(&repo, 32).await;
    let p = repo
        .add_product("P", money("1.00"), 1_000_000)
        .await
        .expect("p");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = JoinSet::new();
    for (c, user) in u.iter().copied().enumerate() {
        let (repo, stop) = (repo.clone(), stop.clone());
        callers.spawn(async move {
            let mut n = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("busy-{c}-{n}");
                repo.place(&[draft(user, &key, &[(p, 1)])], at(n))
                    .await
                    .expect("place");
                n += 1;
            }
            n
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batches_before = repo.coalescing_stats().batches;
    for i in 0..20 {
        let one: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("read {i}: the lane kept the only connection: {e}"));
        assert_eq!(one, 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let batches = repo.coalescing_stats().batches - batches_before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut placed = 0;
    while let Some(n) = callers.join_next().await {
        placed += n.expect("caller");
    }
    assert!(
        batches >= 10,
        "the lane was not busy while the reads ran ({batches} batches)"
    );
    let stock: u32 = sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
        .bind(p.get())
        .fetch_one(&pool)
        .await
        .expect("stock");
    assert_eq!(u64::from(1_000_000 - stock), placed);
    pool.close().await;
}

/// Drafts queued behind a running placement are still placed after the last handle on
/// the repository is dropped: the running placement hands its lane to them.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn queued_drafts_are_placed_after_the_repository_is_dropped(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(&options, 8).await;
    let repo = patient(&pool);
    let u = users(&repo, 4).await;
    let p = repo.add_product("P", money("1.00"), 10).await.expect("p");
    let mut x = hold_row(&options, p).await;
    let first = spawn_place(&repo, draft(u[0], "first", &[(p, 1)]), 0);
    until_transactions_wait_for_locks(&pool, 1).await;
    let queued = queue_up(&repo, (1..4).map(|i| draft(u[i], "q", &[(p, 1)])).collect()).await;
    drop(repo);
    x.execute("COMMIT").await.expect("release");
    assert!(matches!(outcome(first).await, PlaceOutcome::Placed(..)));
    for task in queued {
        assert!(matches!(outcome(task).await, PlaceOutcome::Placed(..)));
    }
    let left: u32 = sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
        .bind(p.get())
        .fetch_one(&pool)
        .await
        .expect("stock");
    assert_eq!(left, 6);
    pool.close().await;
}

/// Coalescing is on by default and can be turned off; its configuration is checked.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn coalescing_is_on_by_default_and_can_be_turned_off(pool: MySqlPool) {
    let repo = MySqlOrderRepository::new(pool.clone());
    let u = users(&repo, 1).await;
    let p = repo.add_product("P", money("1.00"), 10).await.expect("p");
    repo.place(&[draft(u[0], "a", &[(p, 1)])], at(0))
        .await
        .expect("place");
    assert_eq!(
        repo.coalescing_stats().solo,
        1,
        "a lone draft goes alone, through the coalescer"
    );
    let off = repo.clone().without_coalescing();
    off.place(&[draft(u[0], "b", &[(p, 1)])], at(1))
        .await
        .expect("place");
    assert_eq!(off.coalescing_stats(), CoalescingStats::default());
    assert_eq!(
        repo.coalescing_stats().solo,
        1,
        "the clone without coalescing bypassed it"
    );
    assert!(CoalesceConfig::new(1, Duration::from_millis(2)).is_err());
    assert!(CoalesceConfig::new(CoalesceConfig::MAX_BATCH + 1, Duration::from_millis(2)).is_err());
    assert!(CoalesceConfig::new(64, Duration::ZERO).is_err());
    assert!(CoalesceConfig::new(64, Duration::from_secs(2)).is_err());
    assert_eq!(CoalesceConfig::default().max_batch(), 64);
    assert_eq!(
        CoalesceConfig::default().max_wait(),
        Duration::from_millis(5)
    );
}

/// The runtime running a lane's placement shuts down while a draft from another runtime
/// waits in that lane: the waiting caller gets `Unavailable` at once — an error, never a
/// hang — and its draft is not placed.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_queued_draft_gets_an_error_not_a_hang_when_the_runtime_running_its_lane_stops(
    _: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    let pool = pool(&options, 4).await;
    let setup = MySqlOrderRepository::new(pool.clone());
    let u = users(&setup, 2).await;
    let p = setup.add_product("P", money("1.00"), 10).await.expect("p");
    let mut x = hold_row(&options, p).await;

    // A second runtime, with its own pool, runs the lane's first placement.
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let repo = {
        let options = options.clone();
        other
            .spawn(async move {
                let own = self::pool(&options, 4).await;
                Arc::new(MySqlOrderRepository::new(own).with_coalescing(
                    CoalesceConfig::new(64, CoalesceConfig::MAX_WAIT).expect("config"),
                ))
            })
            .await
            .expect("repository")
    };
    let lead = {
        let repo = repo.clone();
        let d = draft(u[0], "lead", &[(p, 1)]);
        other.spawn(async move { repo.place(&[d], at(0)).await })
    };
    until_transactions_wait_for_locks(&pool, 1).await;
    let waiting = spawn_place(&repo, draft(u[1], "waiting", &[(p, 1)]), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    other.shutdown_background();

    let result = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting caller is answered, not left hanging")
        .expect("task");
    assert!(
        matches!(result, Err(RepositoryError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        lead.await.is_err(),
        "the first placement was cancelled with its runtime"
    );
    x.execute("COMMIT").await.expect("release");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, 0, "neither draft was placed");
    pool.close().await;
}
