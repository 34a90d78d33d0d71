//! The operator API that is not part of the port: seeding users and products,
//! restocking, reading stock, and checking the read queries' plans with `EXPLAIN`.
//!
//! None of it is on the request path; it is here for setup, operations and the crate's
//! tests, and kept out of the port so the service cannot depend on it.

use order_core::domain::{MAX_STOCK, RestockError};
use order_core::ports::RepositoryError;
use order_core::{IdempotencyKey, Money, OrderStatus, ProductId, Timestamp, UserId};
use sqlx::{AssertSqlSafe, Row};

use super::MySqlOrderRepository;
use super::rows::product_id;
use super::sql::{
    CLAIM_SCAN, COUNT_BY_USER, COUNT_BY_USER_STATUS, LIST_BY_USER, LIST_BY_USER_STATUS,
    ORDER_BY_KEY, RESERVED_UNITS,
};
use crate::error::{Context, DbError, MySqlRestockError};
use crate::time::to_sql;

/// The plan an `EXPLAIN` reports for one of the adapter's read queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    /// Which query: `list_by_user`, `list_by_user_status`, `count_by_user`,
    /// `count_by_user_status`, `find_by_key` or `claim_stranded` (its scan).
    pub query: &'static str,
    /// The table of the plan's first row.
    pub table: Option<String>,
    /// The access type (`ref`, `range`, `ALL`, …).
    pub access: Option<String>,
    /// The index used, `None` for a full scan.
    pub key: Option<String>,
    /// The `Extra` column (e.g. whether a filesort is needed).
    pub extra: Option<String>,
}

impl MySqlOrderRepository {
    /// Inserts a user and returns its id. `password_hash` is stored as given (an argon2id
    /// PHC string, hashed by whoever authenticates).
    ///
    /// # Errors
    /// [`RepositoryError::Unexpected`] when the e-mail is taken (unique, compared
    /// case-insensitively) or a value does not fit its column;
    /// [`RepositoryError::Unavailable`] when the database cannot be reached.
    pub async fn add_user(
        &self,
        name: &str,
        email: &str,
        password_hash: &str,
    ) -> Result<UserId, RepositoryError> {
        let done = sqlx::query("INSERT INTO users (name, email, password_hash) VALUES (?, ?, ?)")
            .bind(name)
            .bind(email)
            .bind(password_hash)
            .execute(&self.pool)
            .await
            .ctx("inserting a user")
            .map_err(DbError::into_repository)?;
        UserId::new(done.last_insert_id())
            .map_err(|e| DbError::data(format!("new user id: {e}")).into_repository())
    }

    /// Inserts a product with its unit price and initial stock and returns its id. The
    /// initial stock is also its first receipt: `stock_received` starts equal to it
    /// (migration 0008), which the stock-conservation check compares against.
    ///
    /// # Errors
    /// [`RepositoryError::Unexpected`] when the stock exceeds [`MAX_STOCK`] (refused
    /// before anything is sent, with a message saying so) or the price exceeds
    /// `DECIMAL(10,2)`; [`RepositoryError::Unavailable`] when the database cannot be
    /// reached. Nothing is written on error.
    pub async fn add_product(
        &self,
        name: &str,
        price: Money,
        stock: u64,
    ) -> Result<ProductId, RepositoryError> {
        let stock = u32::try_from(stock)
            .ok()
            .filter(|s| u64::from(*s) <= MAX_STOCK)
            .ok_or_else(|| {
                DbError::data(format!(
                    "initial stock {stock} is above the maximum of {MAX_STOCK} units"
                ))
                .into_repository()
            })?;
        let done = sqlx::query(
            "INSERT INTO products (name, price, stock, stock_received) VALUES (?, ?, ?, ?)",
        )
        .bind(name)
        .bind(price.as_decimal())
        .bind(stock)
        .bind(u64::from(stock))
        .execute(&self.pool)
        .await
        .ctx("inserting a product")
        .map_err(DbError::into_repository)?;
        product_id(done.last_insert_id()).map_err(DbError::into_repository)
    }

    /// Adds `units` to a product's stock, within the engine's one limit: its stock plus
    /// the units reserved by its PENDING and PROCESSING orders plus `units` may not exceed
    /// [`MAX_STOCK`] (= `INT UNSIGNED`'s maximum), so that cancelling or failing those
    /// orders can always put their units back. Same rule as the memory adapter. The
    /// units are also added to `stock_received` (migration 0008) in the same statement,
    /// so the record of what came in never disagrees with the stock, even for a moment.
    ///
    /// Atomic: one transaction locks the product row (`FOR UPDATE`), then sums the
    /// reservations and adds the units. Every write that moves units between stock and
    /// reservations (placing, cancelling, failing) also changes that row, so it waits for
    /// the restock or is seen complete by it; paying only shrinks the sum, so a payment
    /// racing the check can only make it stricter than necessary. The sum reads every
    /// line of the product ever ordered (`order_items_product`): a seeding and
    /// operations call, not a hot path. Deadlocks and lock-wait timeouts are retried like
    /// every transaction of the repository.
    ///
    /// # Errors
    /// [`MySqlRestockError::Refused`] with [`RestockError::UnknownProduct`] when no product
    /// has this id, or [`RestockError::AboveMaximum`] past the limit;
    /// [`MySqlRestockError::Store`] when the database failed. Nothing changes on error.
    pub async fn restock(&self, product: ProductId, units: u64) -> Result<(), MySqlRestockError> {
        match self
            .retrying("restock", || self.restock_once(product, units))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(MySqlRestockError::Refused(refused)),
            Err(store) => Err(MySqlRestockError::Store(store)),
        }
    }

    async fn restock_once(
        &self,
        product: ProductId,
        units: u64,
    ) -> Result<Result<(), RestockError>, DbError> {
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        let result = async {
            let stock: Option<u32> =
                sqlx::query_scalar("SELECT stock FROM products WHERE id = ? FOR UPDATE")
                    .bind(product.get())
                    .fetch_optional(&mut *tx)
                    .await
                    .ctx("locking the product to restock")?;
            let Some(stock) = stock else {
                return Ok(Err(RestockError::UnknownProduct(product)));
            };
            // A plain read: its snapshot is taken now, after the lock, so it sees every
            // placement and return that committed before the lock was granted.
            let reserved: u64 = sqlx::query_scalar(RESERVED_UNITS)
                .bind(product.get())
                .fetch_one(&mut *tx)
                .await
                .ctx("summing the product's reserved units")?;
            let within = u64::from(stock)
                .checked_add(reserved)
                .and_then(|t| t.checked_add(units))
                .is_some_and(|t| t <= MAX_STOCK);
            if !within {
                return Ok(Err(RestockError::AboveMaximum {
                    product,
                    max: MAX_STOCK,
                }));
            }
            sqlx::query(
                "UPDATE products SET stock = stock + ?, stock_received = stock_received + ? \
                 WHERE id = ?",
            )
            .bind(units)
            .bind(units)
            .bind(product.get())
            .execute(&mut *tx)
            .await
            .ctx("restocking a product")?;
            Ok(Ok(()))
        }
        .await;
        match result {
            Ok(Ok(())) => {
                tx.commit().await.ctx("committing a restock")?;
                Ok(Ok(()))
            }
            Ok(Err(refused)) => {
                tx.rollback().await.ctx("rolling back")?;
                Ok(Err(refused))
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed restock");
                }
                Err(e)
            }
        }
    }

    /// Checks that the database answers: one `SELECT 1` on the pool, for health checks
    /// (it takes a connection from the pool, opening one if none is idle).
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the database cannot be reached or the pool
    /// timed out; [`RepositoryError::Unexpected`] for any other failure.
    pub async fn ping(&self) -> Result<(), RepositoryError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .ctx("pinging the database")
            .map_err(DbError::into_repository)?;
        Ok(())
    }

    /// A product's current stock, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`RepositoryError`] when the database failed.
    pub async fn stock(&self, product: ProductId) -> Result<Option<u64>, RepositoryError> {
        let stock: Option<u32> = sqlx::query_scalar("SELECT stock FROM products WHERE id = ?")
            .bind(product.get())
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a product's stock")
            .map_err(DbError::into_repository)?;
        Ok(stock.map(u64::from))
    }

    /// Runs `EXPLAIN` on every indexed read query of the adapter (listing, counting,
    /// lookup by key and the reconciler's claim scan) with `user`, `key` and `now` as
    /// parameters, and returns the plans: an operational check that the indexes of the
    /// migrations serve the queries (`key` is `None` for a full scan). The plans depend
    /// on the table statistics; run `ANALYZE TABLE orders` after bulk loads.
    ///
    /// # Errors
    /// [`RepositoryError`] when the database failed.
    pub async fn explain_reads(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Vec<QueryPlan>, RepositoryError> {
        let pending = OrderStatus::Pending.as_str();
        let at = to_sql(now);
        let mut plans = Vec::new();
        for (name, sql) in [
            ("list_by_user", LIST_BY_USER),
            ("list_by_user_status", LIST_BY_USER_STATUS),
            ("count_by_user", COUNT_BY_USER),
            ("count_by_user_status", COUNT_BY_USER_STATUS),
            ("find_by_key", ORDER_BY_KEY),
            ("claim_stranded", CLAIM_SCAN),
        ] {
            // Static SQL with a static prefix: nothing here comes from data.
            let explain = sqlx::query(AssertSqlSafe(format!("EXPLAIN {sql}")));
            let explain = match name {
                "list_by_user" => explain.bind(user.get()).bind(10_u32).bind(0_u32),
                "list_by_user_status" => explain
                    .bind(user.get())
                    .bind(pending)
                    .bind(10_u32)
                    .bind(0_u32),
                "count_by_user" => explain.bind(user.get()),
                "count_by_user_status" => explain.bind(user.get()).bind(pending),
                "find_by_key" => explain.bind(user.get()).bind(key.as_str()),
                _ => explain.bind(at.clone()).bind(at.clone()).bind(100_u32),
            };
            let rows = explain
                .fetch_all(&self.pool)
                .await
                .ctx("explaining a query")
                .map_err(DbError::into_repository)?;
            let first = rows.first().ok_or_else(|| {
                DbError::data(format!("EXPLAIN {name} returned no rows")).into_repository()
            })?;
            let text = |column: &str| -> Result<Option<String>, RepositoryError> {
                first
                    .try_get::<Option<String>, _>(column)
                    .ctx("reading an EXPLAIN row")
                    .map_err(DbError::into_repository)
            };
            plans.push(QueryPlan {
                query: name,
                table: text("table")?,
                access: text("type")?,
                key: text("key")?,
                extra: text("Extra")?,
            });
        }
        Ok(plans)
    }
}
