//! The migrations' indexes serve the adapter's read queries: `EXPLAIN` (through
//! [`MySqlOrderRepository::explain_reads`]) on a table with realistic statistics must
//! name an index for the user listing, the counts, the key lookup and the reconciler's
//! claim scan, and the listing and the claim must come out of the index already sorted
//! (no filesort: the claim locks what it reads, so it must stop at its LIMIT).

use order_core::IdempotencyKey;
use order_mysql::{MySqlOrderRepository, MySqlPool};

use crate::support::{at, money};

/// 3 000 orders over 30 users in every status, then `ANALYZE TABLE`.
async fn seed(pool: &MySqlPool, repo: &MySqlOrderRepository) -> order_core::UserId {
    let mut users = Vec::new();
    for n in 0..30 {
        users.push(
            repo.add_user(&format!("u{n}"), &format!("u{n}@example.test"), "h")
                .await
                .expect("user"),
        );
    }
    repo.add_product("P", money("1.00"), 10)
        .await
        .expect("product");
    let statuses = [
        // status, lease_token, lease_until, failure_reason, cancelled_at
        ("PAID", "NULL", "NULL", "NULL", "NULL"),
        ("PAID", "NULL", "NULL", "NULL", "NULL"),
        ("PAID", "NULL", "NULL", "NULL", "NULL"),
        ("PENDING", "NULL", "NULL", "NULL", "NULL"),
        (
            "PROCESSING",
            "7",
            "'2025-01-01 00:00:00.000'",
            "NULL",
            "NULL",
        ),
        ("FAILED", "NULL", "NULL", "'declined'", "NULL"),
        (
            "CANCELLED",
            "NULL",
            "NULL",
            "NULL",
            "'2025-01-01 00:00:00.000'",
        ),
    ];
    for chunk in 0..30 {
        let mut sql = String::from(
            "INSERT INTO orders (user_id, status, total_amount, idempotency_key, \
             request_fingerprint, lease_token, lease_until, attempts, failure_reason, \
             cancelled_at, created_at, updated_at) VALUES ",
        );
        for i in 0..100 {
            let n = chunk * 100 + i;
            let user = users[n % users.len()].get();
            let (status, token, until, reason, cancelled) = statuses[n % statuses.len()];
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "({user}, '{status}', 1.00, 'seed-{n}', 1, {token}, {until}, 1, {reason}, \
                 {cancelled}, TIMESTAMPADD(SECOND, {n}, '2025-01-01'), \
                 TIMESTAMPADD(SECOND, {n}, '2025-01-01'))"
            ));
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .expect("seed orders");
    }
    sqlx::query("ANALYZE TABLE orders")
        .execute(pool)
        .await
        .expect("analyze");
    users[3]
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn every_read_query_uses_an_index(pool: MySqlPool) {
    let repo = MySqlOrderRepository::new(pool.clone());
    let user = seed(&pool, &repo).await;
    let key = IdempotencyKey::new("seed-3").expect("key");
    let plans = repo
        .explain_reads(user, &key, at(0))
        .await
        .expect("explain");
    assert_eq!(plans.len(), 6, "{plans:#?}");
    for plan in &plans {
        println!("{plan:?}");
        assert_eq!(plan.table.as_deref(), Some("orders"), "{plan:?}");
        assert!(
            plan.key.is_some(),
            "{} must use an index: {plan:?}",
            plan.query
        );
        assert_ne!(
            plan.access.as_deref(),
            Some("ALL"),
            "{} scans the table",
            plan.query
        );
    }
    let by = |name: &str| {
        plans
            .iter()
            .find(|p| p.query == name)
            .unwrap_or_else(|| panic!("no plan for {name}"))
    };
    for (query, index) in [
        ("list_by_user", "orders_user_created"),
        ("list_by_user_status", "orders_user_status_created"),
        ("find_by_key", "orders_user_key_unique"),
        ("claim_stranded", "orders_open_hand_out"),
    ] {
        assert_eq!(by(query).key.as_deref(), Some(index), "{:?}", by(query));
    }
    for query in ["list_by_user", "list_by_user_status", "claim_stranded"] {
        let extra = by(query).extra.clone().unwrap_or_default();
        assert!(
            !extra.contains("filesort"),
            "{query} must read rows in index order: {extra}"
        );
    }
}
