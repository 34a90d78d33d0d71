//! The adapter's own API beyond the port: connecting and migrating, seeding and
//! inspecting users and products, and the reconciler's scans.

use order_core::ProductId;
use order_core::domain::{Lease, LeaseToken, StatusChange};
use order_core::ports::{OrderRepository, RepositoryError, TransitionOutcome};
use order_mysql::{MySqlOrderRepository, MySqlPool, SetupError};

use crate::support::{at, draft, money};

/// `connect` opens a UTC pool, and refuses a malformed URL.
#[tokio::test]
async fn connect_opens_a_utc_pool_and_refuses_a_bad_url() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL must be set");
    let pool = order_mysql::connect(&url, 2).await.expect("connect");
    let zone: String = sqlx::query_scalar("SELECT @@session.time_zone")
        .fetch_one(&pool)
        .await
        .expect("time zone");
    assert_eq!(zone, "+00:00", "instants are stored as UTC");
    pool.close().await;
    let err = order_mysql::connect("not a url", 1)
        .await
        .expect_err("bad url");
    assert!(matches!(err, SetupError::InvalidUrl(_)), "{err:?}");
}

/// `migrate` creates every table on an empty database and is a no-op the second time.
#[sqlx::test(migrations = false)]
async fn migrate_creates_the_schema_and_is_idempotent(pool: MySqlPool) {
    order_mysql::migrate(&pool).await.expect("first run");
    order_mysql::migrate(&pool)
        .await
        .expect("second run is a no-op");
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    tables.sort();
    assert_eq!(
        tables,
        [
            "api_tokens",
            "order_items",
            "orders",
            "payments",
            "products",
            "users"
        ]
    );
}

/// The seeding helpers report what they could not do instead of pretending.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn seeding_helpers_refuse_what_the_schema_refuses(pool: MySqlPool) {
    let repo = MySqlOrderRepository::new(pool);
    repo.add_user("Alice", "alice@example.com", "h")
        .await
        .expect("alice");
    let dup = repo.add_user("Alice 2", "ALICE@example.com", "h").await;
    assert!(
        matches!(dup, Err(RepositoryError::Unexpected(_))),
        "e-mails are unique, case-insensitively: {dup:?}"
    );
    let too_much = repo
        .add_product("P", money("1.00"), u64::from(u32::MAX) + 1)
        .await;
    assert!(
        matches!(too_much, Err(RepositoryError::Unexpected(_))),
        "{too_much:?}"
    );
    let too_dear = repo.add_product("P", money("100000000.00"), 1).await;
    assert!(
        matches!(too_dear, Err(RepositoryError::Unexpected(_))),
        "{too_dear:?}"
    );

    let p = repo.add_product("P", money("1.00"), 5).await.expect("p");
    assert!(repo.restock(p, 3).await.expect("restock"));
    assert_eq!(repo.stock(p).await.expect("stock"), Some(8));
    let ghost = ProductId::new(p.get() + 100).expect("id");
    assert!(
        !repo.restock(ghost, 3).await.expect("restock"),
        "unknown product"
    );
    assert_eq!(repo.stock(ghost).await.expect("stock"), None);
    let overflow = repo.restock(p, u64::from(u32::MAX)).await;
    assert!(
        matches!(overflow, Err(RepositoryError::Unexpected(_))),
        "{overflow:?}"
    );
    assert_eq!(
        repo.stock(p).await.expect("stock"),
        Some(8),
        "a refused restock changes nothing"
    );
}

/// The reconciler's scans find PENDING orders untouched since a threshold and
/// PROCESSING orders whose lease expired, oldest first, bounded by `limit`.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn reconciler_scans_find_stale_pending_orders_and_expired_leases(pool: MySqlPool) {
    let repo = MySqlOrderRepository::new(pool);
    let user = repo
        .add_user("u", "u@example.test", "h")
        .await
        .expect("user");
    let p = repo.add_product("P", money("1.00"), 100).await.expect("p");
    let mut ids = Vec::new();
    for (n, created) in [0, 10, 20, 30].into_iter().enumerate() {
        let out = repo
            .place(&[draft(user, &format!("k{n}"), &[(p, 1)])], at(created))
            .await
            .expect("place");
        let order_core::ports::PlaceOutcome::Placed(o) = &out[0] else {
            panic!("{out:?}")
        };
        ids.push(o.id());
    }
    // ids[2] and ids[3] are started with leases expiring at 1000 and 500.
    for (id, token, until) in [(ids[2], 1, 1_000), (ids[3], 2, 500)] {
        let lease = Lease {
            token: LeaseToken::from_raw(token),
            until: at(until),
        };
        let out = repo
            .transition(id, StatusChange::Start { lease }, at(40))
            .await
            .expect("start");
        assert!(matches!(out, TransitionOutcome::Applied(_)), "{out:?}");
    }
    assert_eq!(
        repo.stale_pending(at(10), 100).await.expect("scan"),
        vec![ids[0], ids[1]]
    );
    assert_eq!(
        repo.stale_pending(at(9), 100).await.expect("scan"),
        vec![ids[0]]
    );
    assert_eq!(
        repo.stale_pending(at(10), 1).await.expect("scan"),
        vec![ids[0]]
    );
    assert_eq!(
        repo.expired_leases(at(499), 100).await.expect("scan"),
        vec![]
    );
    assert_eq!(
        repo.expired_leases(at(500), 100).await.expect("scan"),
        vec![ids[3]]
    );
    assert_eq!(
        repo.expired_leases(at(5_000), 100).await.expect("scan"),
        vec![ids[3], ids[2]],
        "earliest expiry first"
    );
}
