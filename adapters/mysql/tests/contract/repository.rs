//! Every check of order-core's repository contract against MySQL, each on a fresh
//! migrated database. (The memory adapter runs the same suite in `order-memory`.)

use order_mysql::MySqlPool;

use crate::support::MySqlFixture;

order_core::repository_contract!(
    #[sqlx::test(migrator = "order_mysql::MIGRATOR")]
    |pool: MySqlPool| MySqlFixture::new(pool)
);
