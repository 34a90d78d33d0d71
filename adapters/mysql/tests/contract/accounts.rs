//! Every check of order-core's accounts contract against MySQL, each on a fresh migrated
//! database (the memory adapter runs the same suite in `order-memory`), and what only
//! this adapter promises: how a token is stored, and migration 0006 on existing tokens.

use std::sync::Arc;

use async_trait::async_trait;
use order_core::ports::{AccountStore, NewAccount, OrderRepository, TokenDigest};
use order_core::testing::contract::accounts::AccountsFixture;
use order_core::{Money, ProductId, Timestamp};
use order_mysql::{MySqlAccountStore, MySqlOrderRepository, MySqlPool};

use crate::support::at;

/// The account store and the order repository over one fresh database.
pub struct MySqlAccountsFixture {
    accounts: MySqlAccountStore,
    repo: Arc<MySqlOrderRepository>,
}

impl MySqlAccountsFixture {
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            accounts: MySqlAccountStore::new(pool.clone()),
            repo: Arc::new(MySqlOrderRepository::new(pool)),
        }
    }
}

#[async_trait]
impl AccountsFixture for MySqlAccountsFixture {
    fn accounts(&self) -> &dyn AccountStore {
        &self.accounts
    }

    fn repository(&self) -> Arc<dyn OrderRepository> {
        self.repo.clone()
    }

    async fn add_product(&self, price: Money, stock: u64) -> ProductId {
        self.repo
            .add_product("Contract product", price, stock)
            .await
            .expect("add_product")
    }
}

mod contract {
    use order_mysql::MySqlPool;

    use super::MySqlAccountsFixture;

    order_core::accounts_contract!(
        #[sqlx::test(migrator = "order_mysql::MIGRATOR")]
        |pool: MySqlPool| MySqlAccountsFixture::new(pool)
    );
}

fn alice() -> NewAccount {
    NewAccount {
        name: String::from("Alice"),
        email: String::from("alice@example.com"),
        password_hash: String::from("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
    }
}

/// A token is stored as its digest's 64 lowercase hex characters with its expiry to the
/// millisecond, and never as anything else.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_token_is_stored_as_its_hex_digest_with_its_expiry(pool: MySqlPool) {
    let store = MySqlAccountStore::new(pool.clone());
    let account = store.create_account(alice()).await.expect("create");
    let mut bytes = [0_u8; 32];
    bytes[0] = 0x0a;
    bytes[31] = 0xff;
    let digest = TokenDigest::from_bytes(bytes);
    let expires_at = at(1_234);
    store
        .issue_token(account.id, digest, expires_at)
        .await
        .expect("issue");
    let (user, hash, expires_ms): (u64, String, i64) = sqlx::query_as(
        "SELECT user_id, token_hash, \
         CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', expires_at) DIV 1000 AS SIGNED) \
         FROM api_tokens",
    )
    .fetch_one(&pool)
    .await
    .expect("token row");
    assert_eq!(user, account.id.get());
    assert_eq!(hash, digest.to_hex());
    assert_eq!(
        hash,
        format!("0a{}ff", "0".repeat(60)),
        "lowercase hex, leading zeros kept"
    );
    assert_eq!(
        Timestamp::from_millis(u64::try_from(expires_ms).expect("after 1970")),
        expires_at
    );
}

/// After 0006 every token must state its expiry: the column has no default.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn a_token_without_an_expiry_is_refused_by_the_schema(pool: MySqlPool) {
    let store = MySqlAccountStore::new(pool.clone());
    let account = store.create_account(alice()).await.expect("create");
    let insert = sqlx::query("INSERT INTO api_tokens (user_id, token_hash) VALUES (?, ?)")
        .bind(account.id.get())
        .bind("ab".repeat(32))
        .execute(&pool)
        .await;
    assert!(
        insert.is_err(),
        "expires_at must have no default: {insert:?}"
    );
}

/// Migration 0006 on a database that already holds tokens (issued before expiries
/// existed): it applies, and expires them at once.
#[sqlx::test(migrations = false)]
async fn migration_0006_expires_the_tokens_issued_before_it(pool: MySqlPool) {
    let before: Vec<_> = order_mysql::MIGRATOR
        .iter()
        .filter(|m| m.version < 6)
        .cloned()
        .collect();
    assert_eq!(before.len(), 5, "migrations 0001..=0005");
    sqlx::migrate::Migrator::with_migrations(before)
        .run(&pool)
        .await
        .expect("migrations before 0006");
    sqlx::query(
        "INSERT INTO users (name, email, password_hash) VALUES ('Old', 'old@example.com', 'h')",
    )
    .execute(&pool)
    .await
    .expect("old user");
    sqlx::query(
        "INSERT INTO api_tokens (user_id, token_hash) \
         SELECT id, REPEAT('c', 64) FROM users",
    )
    .execute(&pool)
    .await
    .expect("old token");

    order_mysql::migrate(&pool)
        .await
        .expect("0006 on existing rows");

    let expired: i64 = sqlx::query_scalar(
        "SELECT CAST(expires_at <= CURRENT_TIMESTAMP(3) AS SIGNED) FROM api_tokens",
    )
    .fetch_one(&pool)
    .await
    .expect("expires_at");
    assert_eq!(expired, 1, "a token from before 0006 is expired by it");
    let store = MySqlAccountStore::new(pool);
    let digest = TokenDigest::from_bytes([0xcc; 32]);
    assert_eq!(digest.to_hex(), "c".repeat(64));
    let now = Timestamp::from_millis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis(),
        )
        .expect("millis"),
    );
    assert_eq!(
        store
            .authenticate(&digest, now)
            .await
            .expect("authenticate"),
        None,
        "the old token authenticates nobody"
    );
}
