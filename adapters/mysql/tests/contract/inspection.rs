//! The adapter's own API beyond the port: connecting and migrating, seeding and
//! inspecting users and products.

use order_core::ProductId;
use order_core::domain::{MAX_STOCK, RestockError};
use order_core::ports::RepositoryError;
use order_mysql::{MySqlOrderRepository, MySqlPool, MySqlRestockError, SetupError};

use crate::support::money;

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
            "order_events",
            "order_items",
            "orders",
            "payments",
            "products",
            "users"
        ]
    );
}

/// `ping` answers on a live database, and reports an unreachable one as `Unavailable`.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn ping_answers_and_an_unreachable_server_is_unavailable(pool: MySqlPool) {
    MySqlOrderRepository::new(pool)
        .ping()
        .await
        .expect("a live database answers");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dead = sqlx::mysql::MySqlPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(300))
        .connect_lazy(&format!("mysql://nobody@127.0.0.1:{port}/none"))
        .expect("lazy pool");
    let err = MySqlOrderRepository::new(dead)
        .ping()
        .await
        .expect_err("nobody listens there");
    assert!(matches!(err, RepositoryError::Unavailable(_)), "{err:?}");
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
    let too_much = repo.add_product("P", money("1.00"), MAX_STOCK + 1).await;
    match &too_much {
        Err(RepositoryError::Unexpected(e)) => assert!(
            e.to_string().contains("above the maximum"),
            "refused by the adapter, not by the driver: {e}"
        ),
        other => panic!("{other:?}"),
    }
    let at_max = repo
        .add_product("P", money("1.00"), MAX_STOCK)
        .await
        .expect("exactly MAX_STOCK is allowed");
    assert_eq!(repo.stock(at_max).await.expect("stock"), Some(MAX_STOCK));
    let too_dear = repo.add_product("P", money("100000000.00"), 1).await;
    assert!(
        matches!(too_dear, Err(RepositoryError::Unexpected(_))),
        "{too_dear:?}"
    );

    let p = repo.add_product("P", money("1.00"), 5).await.expect("p");
    repo.restock(p, 3).await.expect("restock");
    assert_eq!(repo.stock(p).await.expect("stock"), Some(8));
    let ghost = ProductId::new(p.get() + 100).expect("id");
    let unknown = repo.restock(ghost, 3).await;
    assert!(
        matches!(
            unknown,
            Err(MySqlRestockError::Refused(RestockError::UnknownProduct(id))) if id == ghost
        ),
        "{unknown:?}"
    );
    assert_eq!(repo.stock(ghost).await.expect("stock"), None);
    let overflow = repo.restock(p, u64::from(u32::MAX)).await;
    assert!(
        matches!(
            overflow,
            Err(MySqlRestockError::Refused(RestockError::AboveMaximum { product, max }))
                if product == p && max == MAX_STOCK
        ),
        "{overflow:?}"
    );
    assert_eq!(
        repo.stock(p).await.expect("stock"),
        Some(8),
        "a refused restock changes nothing"
    );
}
