//! [`MySqlOrderRepository`]: the [`OrderRepository`] port on MySQL/MariaDB, plus its
//! seeding, inspection and reconciler queries.
//!
//! How each promise of the port is kept is documented on the type (it is the public
//! face of this module). Rows become domain values only through [`Order::from_parts`] and
//! the value-object constructors; a row that fails them is reported as `Unexpected`. No
//! sqlx error leaves this module: every driver failure is converted by [`DbError`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use order_core::domain::{
    FailureReason, Lease, LeaseToken, MAX_STOCK, OrderDraft, OrderLine, OrderParts,
    RequestFingerprint, RestockError, StatusChange,
};
use order_core::ports::{
    ListFilter, OrderPage, OrderRepository, PlaceOutcome, RepositoryError, StrandedQuery,
    TransitionOutcome,
};
use order_core::{
    IdempotencyKey, Money, Order, OrderId, OrderStatus, Product, ProductId, Quantity, Timestamp,
    UserId,
};
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, MySqlConnection, MySqlPool, Row};

use crate::error::{Context, DbError, MySqlRestockError, code};
use crate::retry::RetryPolicy;
use crate::time::{from_sql, ms, to_sql};

// ---------------------------------------------------------------------------------------
// SQL. Static text wherever possible; the few statements with a variable number of rows
// are built from these pieces and placeholders only (never from data), see `repeat_sql`.
// ---------------------------------------------------------------------------------------

/// The columns of an order row, instants as epoch milliseconds (see [`OrderRow`]).
macro_rules! order_select {
    () => {
        concat!(
            "SELECT id, user_id, status, total_amount, idempotency_key, request_fingerprint, ",
            "lease_token, ",
            ms!("lease_until"),
            " AS lease_until_ms, attempts, failure_reason, ",
            ms!("cancelled_at"),
            " AS cancelled_at_ms, ",
            ms!("created_at"),
            " AS created_at_ms, ",
            ms!("updated_at"),
            " AS updated_at_ms FROM orders"
        )
    };
}

const ORDER_BY_ID: &str = concat!(order_select!(), " WHERE id = ?");
const ORDER_BY_KEY: &str = concat!(
    order_select!(),
    " WHERE user_id = ? AND idempotency_key = ?"
);
/// A locking read: sees the latest committed row (not the transaction's snapshot) and
/// keeps it from changing until commit. `LOCK IN SHARE MODE` because MariaDB 10.11 has
/// no `FOR SHARE`.
const ORDER_BY_KEY_LOCKED: &str = concat!(
    order_select!(),
    " WHERE user_id = ? AND idempotency_key = ? LOCK IN SHARE MODE"
);
const ITEMS_OF_ORDER: &str = "SELECT order_id, product_id, quantity, unit_price \
     FROM order_items WHERE order_id = ? ORDER BY product_id";
const ITEMS_OF_ORDER_LOCKED: &str = "SELECT order_id, product_id, quantity, unit_price \
     FROM order_items WHERE order_id = ? ORDER BY product_id LOCK IN SHARE MODE";

/// The replay pre-check: does the user exist, and does it already own the key? One row
/// per existing user (the order columns NULL when the key is free), none otherwise.
const USER_AND_KEY: &str = "SELECT u.id AS user_id, o.id AS order_id, \
     o.request_fingerprint AS fingerprint \
     FROM users u LEFT JOIN orders o ON o.user_id = u.id AND o.idempotency_key = ? \
     WHERE u.id = ?";

const INSERT_ORDER: &str = "INSERT INTO orders (user_id, status, total_amount, \
     idempotency_key, request_fingerprint, attempts, created_at, updated_at) \
     VALUES (?, 'PENDING', ?, ?, ?, 0, ?, ?)";

// Served by `orders_user_created` / `orders_user_status_created` (checked by EXPLAIN in
// `explain_reads` and the crate's tests).
const LIST_BY_USER: &str = concat!(
    order_select!(),
    " WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
);
const LIST_BY_USER_STATUS: &str = concat!(
    order_select!(),
    " WHERE user_id = ? AND status = ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
);
const COUNT_BY_USER: &str = "SELECT COUNT(*) FROM orders WHERE user_id = ?";
const COUNT_BY_USER_STATUS: &str = "SELECT COUNT(*) FROM orders WHERE user_id = ? AND status = ?";

/// The reconciler's scan (parameters: the hand-out cutoff, `now`, the limit): open orders
/// handed out at or before the cutoff that are PENDING, or PROCESSING with an expired
/// lease, oldest hand-out first. Served by `orders_open_hand_out` in index order (see
/// migration 0005), so the scan stops at the limit.
macro_rules! claim_scan {
    () => {
        "SELECT id FROM orders WHERE open_hand_out_at <= ? \
         AND (status = 'PENDING' OR lease_until <= ?) \
         ORDER BY open_hand_out_at, id LIMIT ?"
    };
}
const CLAIM_SCAN: &str = claim_scan!();
/// The scan as `claim_stranded` runs it: locking what it returns, skipping rows another
/// transaction holds (a concurrent reconciler's claim, a worker's transition).
const CLAIM_SCAN_LOCKED: &str = concat!(claim_scan!(), " FOR UPDATE SKIP LOCKED");
/// `claim_stranded`'s transaction runs at READ COMMITTED: no gap locks (new orders are
/// inserted into the index while it runs), and the locks on rows the WHERE clause
/// rejects — PROCESSING orders with a live lease — are released at once. One round trip:
/// the characteristic applies to the transaction the `BEGIN` then starts, and only to it.
const BEGIN_READ_COMMITTED: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN";

/// The most values bound to one `IN (…)` list: far below the protocol's 65 535
/// placeholders per statement, whatever else the statement binds.
const IN_LIST_CHUNK: usize = 10_000;

// The compare-and-set statements, one per `StatusChange`, each the SQL twin of the
// matching arm of `Order::apply`: the WHERE clause is `apply`'s precondition (status and
// fence), the SET clause its effect. `attempts` saturates like `u32::saturating_add`.
const CAS_START: &str = "UPDATE orders SET status = 'PROCESSING', lease_token = ?, \
     lease_until = ?, attempts = LEAST(attempts + 1, 4294967295), updated_at = ? \
     WHERE id = ? AND status = 'PENDING'";
const CAS_TAKE_OVER: &str = "UPDATE orders SET lease_token = ?, lease_until = ?, \
     attempts = LEAST(attempts + 1, 4294967295), updated_at = ? \
     WHERE id = ? AND status = 'PROCESSING' AND lease_token = ? AND lease_until <= ?";
const CAS_PAY: &str = "UPDATE orders SET status = 'PAID', lease_token = NULL, \
     lease_until = NULL, updated_at = ? \
     WHERE id = ? AND status = 'PROCESSING' AND lease_token = ?";
const CAS_FAIL: &str = "UPDATE orders SET status = 'FAILED', lease_token = NULL, \
     lease_until = NULL, failure_reason = ?, updated_at = ? \
     WHERE id = ? AND status = 'PROCESSING' AND lease_token = ?";
const CAS_CANCEL: &str = "UPDATE orders SET status = 'CANCELLED', cancelled_at = ?, \
     updated_at = ? WHERE id = ? AND status = 'PENDING'";
/// The token stays (the table's CHECK wants one while PROCESSING); the lease expires at
/// `now` unless it already had — `LEAST`, as `until.min(now)` in `Order::apply`.
const CAS_RELEASE: &str = "UPDATE orders SET lease_until = LEAST(lease_until, ?), \
     updated_at = ? WHERE id = ? AND status = 'PROCESSING' AND lease_token = ?";

const PRODUCTS: &str = "SELECT id, name, price, stock FROM products ORDER BY id";

/// Units of one product held by its PENDING and PROCESSING orders (what Cancel and Fail
/// would put back), as BIGINT UNSIGNED.
const RESERVED_UNITS: &str = "SELECT CAST(COALESCE(SUM(i.quantity), 0) AS UNSIGNED) \
     FROM order_items i JOIN orders o ON o.id = i.order_id \
     WHERE i.product_id = ? AND o.status IN ('PENDING', 'PROCESSING')";

/// `head` followed by `n` copies of `item` separated by `sep`, then `tail`.
///
/// Only ever called with static SQL fragments and placeholders, so the result is as safe
/// as a literal: that is what the `AssertSqlSafe` around each use asserts.
fn repeat_sql(head: &str, item: &str, sep: &str, n: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + n * (item.len() + sep.len()) + tail.len());
    sql.push_str(head);
    for i in 0..n {
        if i > 0 {
            sql.push_str(sep);
        }
        sql.push_str(item);
    }
    sql.push_str(tail);
    sql
}

// ---------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------

/// One `orders` row as read by `order_select!`.
#[derive(sqlx::FromRow)]
struct OrderRow {
    id: u64,
    user_id: u64,
    status: String,
    total_amount: Decimal,
    idempotency_key: String,
    request_fingerprint: u64,
    lease_token: Option<u64>,
    lease_until_ms: Option<i64>,
    attempts: u32,
    failure_reason: Option<String>,
    cancelled_at_ms: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

/// One `order_items` row.
#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: u64,
    product_id: u64,
    quantity: u32,
    unit_price: Decimal,
}

/// One `products` row.
#[derive(sqlx::FromRow)]
struct ProductRow {
    id: u64,
    name: String,
    price: Decimal,
    stock: u32,
}

fn money(value: Decimal, column: &str) -> Result<Money, DbError> {
    Money::new(value).map_err(|e| DbError::data(format!("{column} {value}: {e}")))
}

fn order_id(raw: u64) -> Result<OrderId, DbError> {
    OrderId::new(raw).map_err(|e| DbError::data(format!("order id {raw}: {e}")))
}

fn product_id(raw: u64) -> Result<ProductId, DbError> {
    ProductId::new(raw).map_err(|e| DbError::data(format!("product id {raw}: {e}")))
}

impl ItemRow {
    fn into_line(self) -> Result<OrderLine, DbError> {
        Ok(OrderLine {
            product: product_id(self.product_id)?,
            quantity: Quantity::new(i64::from(self.quantity)).map_err(|e| {
                DbError::data(format!("order {} line quantity: {e}", self.order_id))
            })?,
            unit_price: money(self.unit_price, "order_items.unit_price")?,
        })
    }
}

impl ProductRow {
    fn into_product(self) -> Result<Product, DbError> {
        Ok(Product {
            id: product_id(self.id)?,
            name: self.name,
            price: money(self.price, "products.price")?,
            stock: u64::from(self.stock),
        })
    }
}

impl OrderRow {
    /// Rebuilds the domain order; every check of [`Order::from_parts`] applies.
    fn into_order(self, items: Vec<ItemRow>) -> Result<Order, DbError> {
        let id = order_id(self.id)?;
        let lease = match (self.lease_token, self.lease_until_ms) {
            (None, None) => None,
            (Some(token), Some(until)) => Some(Lease {
                token: LeaseToken::from_raw(token),
                until: from_sql(until, "orders.lease_until")?,
            }),
            _ => {
                return Err(DbError::data(format!(
                    "order {id}: lease_token and lease_until must be set together"
                )));
            }
        };
        let parts = OrderParts {
            id,
            user: UserId::new(self.user_id)
                .map_err(|e| DbError::data(format!("order {id} user: {e}")))?,
            lines: items
                .into_iter()
                .map(ItemRow::into_line)
                .collect::<Result<_, _>>()?,
            total: money(self.total_amount, "orders.total_amount")?,
            status: OrderStatus::parse(&self.status)
                .map_err(|e| DbError::data(format!("order {id}: {e}")))?,
            idempotency_key: IdempotencyKey::new(self.idempotency_key)
                .map_err(|e| DbError::data(format!("order {id} idempotency key: {e}")))?,
            fingerprint: RequestFingerprint::from_raw(self.request_fingerprint),
            created_at: from_sql(self.created_at_ms, "orders.created_at")?,
            updated_at: from_sql(self.updated_at_ms, "orders.updated_at")?,
            cancelled_at: self
                .cancelled_at_ms
                .map(|ms| from_sql(ms, "orders.cancelled_at"))
                .transpose()?,
            lease,
            attempts: self.attempts,
            failure_reason: self.failure_reason.map(FailureReason::new),
        };
        Order::from_parts(parts).map_err(|e| DbError::Data(anyhow::Error::new(e)))
    }
}

/// Whether a read inside a transaction locks what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// A plain (snapshot) read.
    Plain,
    /// A shared locking read: the latest committed version, held until commit.
    Shared,
}

async fn load_items(
    conn: &mut MySqlConnection,
    id: u64,
    read: Read,
) -> Result<Vec<ItemRow>, DbError> {
    let sql = match read {
        Read::Plain => ITEMS_OF_ORDER,
        Read::Shared => ITEMS_OF_ORDER_LOCKED,
    };
    sqlx::query_as::<_, ItemRow>(sql)
        .bind(id)
        .fetch_all(conn)
        .await
        .ctx("reading order lines")
}

async fn load_order(conn: &mut MySqlConnection, id: u64) -> Result<Option<Order>, DbError> {
    let Some(row) = sqlx::query_as::<_, OrderRow>(ORDER_BY_ID)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .ctx("reading an order")?
    else {
        return Ok(None);
    };
    let items = load_items(conn, id, Read::Plain).await?;
    row.into_order(items).map(Some)
}

async fn load_order_by_key(
    conn: &mut MySqlConnection,
    user: UserId,
    key: &IdempotencyKey,
    read: Read,
) -> Result<Option<Order>, DbError> {
    let sql = match read {
        Read::Plain => ORDER_BY_KEY,
        Read::Shared => ORDER_BY_KEY_LOCKED,
    };
    let Some(row) = sqlx::query_as::<_, OrderRow>(sql)
        .bind(user.get())
        .bind(key.as_str())
        .fetch_optional(&mut *conn)
        .await
        .ctx("reading an order by idempotency key")?
    else {
        return Ok(None);
    };
    let items = load_items(conn, row.id, read).await?;
    row.into_order(items).map(Some)
}

/// The outcome for a draft whose (user, key) already names `existing` (loaded with its
/// lines): `Replayed` only when the lines are the same, compared line by line — equal
/// fingerprints alone prove nothing.
fn replay(existing: Order, draft: &OrderDraft) -> PlaceOutcome {
    if draft.same_lines_as(&existing) {
        PlaceOutcome::Replayed(existing)
    } else {
        PlaceOutcome::KeyReused {
            existing: existing.id(),
        }
    }
}

/// A product row locked by `place`: its price and the stock still free in this
/// transaction.
struct LockedProduct {
    price: Money,
    stock: u64,
}

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

// ---------------------------------------------------------------------------------------
// The repository
// ---------------------------------------------------------------------------------------

/// Orders and stock in MySQL/MariaDB, changed atomically.
///
/// The database is the correctness guard, so every promise of the port is kept by the
/// server itself:
///
/// - **No oversell.** `place` locks the product rows it needs with `SELECT … WHERE id IN
///   (…) ORDER BY id FOR UPDATE` (ascending ids, so orders for {A, B} and {B, A} queue
///   instead of deadlocking), checks the stock it read under that lock and decrements it
///   in the same transaction. `stock` is `INT UNSIGNED`, so the server refuses a negative
///   value even from a buggy writer.
/// - **Idempotency.** The unique (user_id, idempotency_key) index is the idempotency
///   record. A replay is recognised by a plain read before any lock is taken; a
///   concurrent twin that slips past that read loses on the index (error 1062) and reads
///   the winner back (a locking read, which sees the latest committed row). A twin that
///   finds the stock gone because the winner took it also checks the key before
///   reporting a shortage, so it replays instead.
/// - **Compare-and-set transitions.** `transition` is one `UPDATE … WHERE id = ? AND
///   status = ? AND <fence>` mirroring [`Order::apply`] arm by arm; when the change
///   returns stock (Cancel, Fail) the quantities go back, ascending by product id, in the
///   same transaction, so they are returned exactly once. The order is re-read in that
///   transaction and returned as `Applied`; a 0-row update rolls back and re-reads:
///   `NotFound` or `LostRace(current)`.
/// - **Prices.** Every line carries the price its product has when its stock is taken,
///   under the same row lock: the general path reads price and stock with its `FOR
///   UPDATE`; the one-draft fast path's conditional decrement matches a row only if its
///   price is still the one read before the transaction, and otherwise leaves the draft
///   to the general path.
/// - **Reconciler claims.** [`claim_stranded`](OrderRepository::claim_stranded) selects
///   the stranded orders with `FOR UPDATE SKIP LOCKED` and stamps them
///   (`dispatched_at`) in the same transaction, so concurrent reconcilers get disjoint
///   orders; see migration 0005 for the index behind it.
/// - **Deadlocks (1213) and lock-wait timeouts (1205)** are rolled back explicitly and
///   the whole transaction is retried under a [`RetryPolicy`]; only then do they surface
///   as [`RepositoryError::Unavailable`]. [`retry_count`](Self::retry_count) counts them.
///
/// **Batches** (`place` with several drafts): one plain read per draft answers replays
/// and unknown users without locks; then ONE transaction locks every product row any of
/// the remaining drafts needs, once, in ascending id order (at most 10 000 ids per
/// statement, so no batch exceeds the 65 535 placeholders one statement may bind), and
/// decides the drafts in arrival order against the locked stock (a later draft sees what
/// earlier ones took),
/// writing order, lines and stock decrement for each draft that can be placed; a second
/// draft with a key claimed earlier in the batch replays it. It commits if anything was
/// written, else rolls back. There is no savepoint per draft, deliberately: every
/// business failure is decided before the draft's first write (unknown or short
/// product, key claimed earlier in the batch) or by that first write itself (`INSERT
/// INTO orders` refused by the unique key or the user's foreign key), and InnoDB rolls a
/// failed statement back on its own. Anything failing after that first write is not a
/// business outcome: the whole transaction is rolled back and the call fails, having
/// written nothing. A single draft first tries a shorter fast path (`BEGIN`, conditional
/// decrement, insert order, insert lines, `COMMIT`), and falls back to this one whenever
/// that path cannot decide exactly (a missing or short product, a changed price, a total
/// too large).
///
/// Instants are stored as UTC `DATETIME(3)`, exact to the millisecond; the pool's
/// connections must run with `time_zone = '+00:00'` (sqlx's default, and what
/// [`connect`](crate::connect) sets). Cheap to clone: the pool and the retry counter are
/// shared.
#[derive(Debug, Clone)]
pub struct MySqlOrderRepository {
    pool: MySqlPool,
    retry: RetryPolicy,
    retries: Arc<AtomicU64>,
}

impl MySqlOrderRepository {
    /// A repository over `pool`, whose database has been migrated with
    /// [`migrate`](crate::migrate), retrying deadlocks with [`RetryPolicy::default`].
    ///
    /// The pool's connections must run with `time_zone = '+00:00'` (sqlx's default, and
    /// what [`connect`](crate::connect) sets).
    pub fn new(pool: MySqlPool) -> Self {
        Self::with_retry_policy(pool, RetryPolicy::default())
    }

    /// A repository over `pool` retrying deadlocks and lock-wait timeouts under `retry`.
    pub fn with_retry_policy(pool: MySqlPool, retry: RetryPolicy) -> Self {
        Self {
            pool,
            retry: RetryPolicy {
                max_attempts: retry.max_attempts.max(1),
                ..retry
            },
            retries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The pool the repository runs on.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// How many times a transaction was rolled back and run again after a deadlock or a
    /// lock-wait timeout, since this repository (or the one it was cloned from) was made.
    /// A metric: a rising count means hot rows.
    pub fn retry_count(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    // -- seeding and inspection -----------------------------------------------------------

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

    /// Inserts a product with its unit price and initial stock and returns its id.
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
        let done = sqlx::query("INSERT INTO products (name, price, stock) VALUES (?, ?, ?)")
            .bind(name)
            .bind(price.as_decimal())
            .bind(stock)
            .execute(&self.pool)
            .await
            .ctx("inserting a product")
            .map_err(DbError::into_repository)?;
        product_id(done.last_insert_id()).map_err(DbError::into_repository)
    }

    /// Adds `units` to a product's stock, within the engine's one limit: its stock plus
    /// the units reserved by its PENDING and PROCESSING orders plus `units` may not exceed
    /// [`MAX_STOCK`] (= `INT UNSIGNED`'s maximum), so that cancelling or failing those
    /// orders can always put their units back. Same rule as the memory adapter.
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
            sqlx::query("UPDATE products SET stock = stock + ? WHERE id = ?")
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

    // -- plumbing -------------------------------------------------------------------------

    /// Runs `attempt` until it succeeds, fails for good, or has deadlocked / timed out on
    /// a lock `max_attempts` times. Each attempt is a whole transaction that has already
    /// been rolled back when it returns an error.
    async fn retrying<T, F, Fut>(
        &self,
        op: &'static str,
        mut attempt: F,
    ) -> Result<T, RepositoryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retryable() && n < self.retry.max_attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    let pause = self.retry.delay(n);
                    tracing::debug!(op, attempt = n, ?pause, error = %e, "retrying after a lock conflict");
                    tokio::time::sleep(pause).await;
                    n += 1;
                }
                Err(e) => return Err(e.into_repository()),
            }
        }
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>, DbError> {
        self.pool.acquire().await.ctx("acquiring a connection")
    }

    // -- place ----------------------------------------------------------------------------

    /// One attempt at placing `drafts` (the layout is described on the type): the
    /// lock-free pre-check, then one transaction, rolled back explicitly on any error so
    /// that a retry starts clean.
    async fn place_once(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, DbError> {
        if let [draft] = drafts
            && let Some(outcome) = self.place_one_fast(draft, now).await?
        {
            return Ok(vec![outcome]);
        }
        let mut outcomes: Vec<Option<PlaceOutcome>> = vec![None; drafts.len()];
        {
            let mut conn = self.acquire().await?;
            for (slot, draft) in outcomes.iter_mut().zip(drafts) {
                *slot = precheck(&mut conn, draft).await?;
            }
        }
        let pending: Vec<usize> = (0..drafts.len())
            .filter(|i| outcomes[*i].is_none())
            .collect();
        if !pending.is_empty() {
            let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
            match place_in_transaction(&mut tx, drafts, &pending, &mut outcomes, now).await {
                Ok(true) => tx.commit().await.ctx("committing placed orders")?,
                Ok(false) => tx.rollback().await.ctx("rolling back")?,
                Err(e) => {
                    // Explicitly, and before any retry: after a lock-wait timeout only the
                    // statement was rolled back, and the locks must go now.
                    if let Err(rollback) = tx.rollback().await {
                        tracing::debug!(error = %rollback, "rollback after a failed place");
                    }
                    return Err(e);
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| DbError::data("a draft was left without an outcome")))
            .collect()
    }

    /// The one-draft fast path — the common case — holding the hot product rows for no
    /// longer than a hand-rolled transaction would: prices are read before the
    /// transaction (without locks), and the transaction opens with a conditional
    /// decrement that locks the rows (ascending) and checks stock and price in one
    /// statement, followed by the two inserts and the commit. The general path instead runs a replay
    /// pre-check, then locks with `SELECT … FOR UPDATE` and decrements later: one more
    /// round trip under the hot row lock and one more before it.
    ///
    /// There is no replay pre-check here: the service already looked the key up, so a
    /// replay reaching the repository is rare, and the order insert's unique (user, key)
    /// index still answers it — the insert fails, the stored order is read, and the
    /// transaction rolls back, decrement included. An unknown user is answered the same
    /// way by the user foreign key.
    ///
    /// The unit prices are read just before the transaction, and the decrement checks them
    /// under its row lock: it matches a row only while `price` is still the price read, so
    /// a price change committed in between — say while the draft queued behind the hot
    /// row's lock — leaves the row unmatched, and the draft goes to the general path,
    /// which reads the new price with `FOR UPDATE`. Lines always carry the price current
    /// when their stock is taken, at no extra round trip in the common case.
    ///
    /// Returns `None` — nothing written — for every draft whose outcome needs the general
    /// path to be decided exactly as the contract says (a missing product, a short one, a
    /// changed price, a total too large): those are rare, and the general path answers
    /// them under row locks with the first offending product in ascending order.
    async fn place_one_fast(
        &self,
        draft: &OrderDraft,
        now: Timestamp,
    ) -> Result<Option<PlaceOutcome>, DbError> {
        let prices = {
            let mut conn = self.acquire().await?;
            match current_prices(&mut conn, draft).await? {
                Some(prices) => prices,
                None => return Ok(None),
            }
        };
        if draft.total_at(&prices).is_err() {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        let result = async {
            if !take_stock_if_available(&mut tx, draft.items(), &prices).await? {
                return Ok(None);
            }
            insert_order(&mut tx, draft, &prices, now, Stock::AlreadyTaken)
                .await
                .map(Some)
        }
        .await;
        match result {
            Ok(Some(placed @ PlaceOutcome::Placed(_))) => {
                tx.commit().await.ctx("committing a placed order")?;
                Ok(Some(placed))
            }
            // A concurrent twin's replay, a key reuse or an unknown user (nothing of this
            // draft may stay: undo the decrement), or the general path's turn.
            Ok(other) => {
                tx.rollback().await.ctx("rolling back")?;
                Ok(other)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed fast place");
                }
                Err(e)
            }
        }
    }

    // -- reconciler -----------------------------------------------------------------------

    /// One attempt at [`claim_stranded`](OrderRepository::claim_stranded), rolled back
    /// explicitly on any error.
    async fn claim_stranded_once(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, DbError> {
        let stale_ms = u64::try_from(query.stale_after.as_millis()).unwrap_or(u64::MAX);
        let cutoff = Timestamp::from_millis(now.as_millis().saturating_sub(stale_ms));
        let at = to_sql(now);
        let mut tx = self
            .pool
            .begin_with(BEGIN_READ_COMMITTED)
            .await
            .ctx("starting a READ COMMITTED transaction")?;
        let result = async {
            let ids: Vec<u64> = sqlx::query_scalar(CLAIM_SCAN_LOCKED)
                .bind(to_sql(cutoff))
                .bind(&at)
                .bind(query.limit)
                .fetch_all(&mut *tx)
                .await
                .ctx("selecting stranded orders")?;
            for chunk in ids.chunks(IN_LIST_CHUNK) {
                let sql = repeat_sql(
                    "UPDATE orders SET dispatched_at = ? WHERE id IN (",
                    "?",
                    ", ",
                    chunk.len(),
                    ")",
                );
                let mut stamp = sqlx::query(AssertSqlSafe(sql)).bind(&at);
                for id in chunk {
                    stamp = stamp.bind(*id);
                }
                stamp
                    .execute(&mut *tx)
                    .await
                    .ctx("stamping claimed orders")?;
            }
            ids.into_iter().map(order_id).collect::<Result<Vec<_>, _>>()
        }
        .await;
        match result {
            Ok(ids) => {
                tx.commit().await.ctx("committing a claim")?;
                Ok(ids)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed claim");
                }
                Err(e)
            }
        }
    }

    // -- transition -----------------------------------------------------------------------

    async fn transition_once(
        &self,
        id: OrderId,
        change: &StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, DbError> {
        let at = to_sql(now);
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        let result = async {
            let cas = match change {
                StatusChange::Start { lease } => sqlx::query(CAS_START)
                    .bind(lease.token.raw())
                    .bind(to_sql(lease.until))
                    .bind(&at)
                    .bind(id.get()),
                StatusChange::TakeOver { expired, lease } => sqlx::query(CAS_TAKE_OVER)
                    .bind(lease.token.raw())
                    .bind(to_sql(lease.until))
                    .bind(&at)
                    .bind(id.get())
                    .bind(expired.raw())
                    .bind(&at),
                StatusChange::Pay { lease } => sqlx::query(CAS_PAY)
                    .bind(&at)
                    .bind(id.get())
                    .bind(lease.raw()),
                StatusChange::Fail { lease, reason } => sqlx::query(CAS_FAIL)
                    .bind(reason.as_str())
                    .bind(&at)
                    .bind(id.get())
                    .bind(lease.raw()),
                StatusChange::Cancel => sqlx::query(CAS_CANCEL).bind(&at).bind(&at).bind(id.get()),
                StatusChange::Release { lease } => sqlx::query(CAS_RELEASE)
                    .bind(&at)
                    .bind(&at)
                    .bind(id.get())
                    .bind(lease.raw()),
            };
            // `rows_affected` is the number of rows MATCHED, not changed: sqlx connects
            // with CLIENT_FOUND_ROWS. That is the count a compare-and-set needs — the
            // WHERE clause is the whole precondition of `Order::apply` — and it matters
            // for Release, which may change nothing (a holder releasing an already
            // expired lease at the instant of its last change) and must still apply.
            let matched = cas
                .execute(&mut *tx)
                .await
                .ctx("compare-and-set on the order status")?
                .rows_affected();
            if matched == 0 {
                return Ok(None);
            }
            if change.returns_stock() {
                return_stock(&mut tx, id).await?;
            }
            // Re-read inside the transaction: exactly the state this change produced.
            let order = load_order(&mut tx, id.get())
                .await?
                .ok_or_else(|| DbError::data(format!("order {id} vanished after its update")))?;
            Ok(Some(order))
        }
        .await;
        match result {
            Ok(Some(order)) => {
                tx.commit().await.ctx("committing a transition")?;
                Ok(TransitionOutcome::Applied(order))
            }
            Ok(None) => {
                tx.rollback().await.ctx("rolling back")?;
                let mut conn = self.acquire().await?;
                Ok(match load_order(&mut conn, id.get()).await? {
                    Some(current) => TransitionOutcome::LostRace(current),
                    None => TransitionOutcome::NotFound,
                })
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed transition");
                }
                Err(e)
            }
        }
    }
}

/// The replay pre-check for one draft, outside any transaction: `UnknownUser`,
/// `Replayed`/`KeyReused`, or `None` to go on and place it.
async fn precheck(
    conn: &mut MySqlConnection,
    draft: &OrderDraft,
) -> Result<Option<PlaceOutcome>, DbError> {
    let row = sqlx::query(USER_AND_KEY)
        .bind(draft.idempotency_key().as_str())
        .bind(draft.user().get())
        .fetch_optional(&mut *conn)
        .await
        .ctx("checking the user and idempotency key")?;
    let Some(row) = row else {
        return Ok(Some(PlaceOutcome::UnknownUser(draft.user())));
    };
    let existing: Option<u64> = row.try_get("order_id").ctx("reading the key's order")?;
    let fingerprint: Option<u64> = row.try_get("fingerprint").ctx("reading the fingerprint")?;
    match (existing, fingerprint) {
        (Some(existing), Some(fp)) if fp != draft.fingerprint().raw() => {
            Ok(Some(PlaceOutcome::KeyReused {
                existing: order_id(existing)?,
            }))
        }
        (Some(existing), _) => match load_order(conn, existing).await? {
            Some(order) => Ok(Some(replay(order, draft))),
            // Orders are never deleted; if one were, placing the draft is the honest
            // answer (and the insert will tell if the key is still taken).
            None => Ok(None),
        },
        (None, _) => Ok(None),
    }
}

/// The transactional part of `place_once`. Returns whether anything was written.
async fn place_in_transaction(
    conn: &mut MySqlConnection,
    drafts: &[OrderDraft],
    pending: &[usize],
    outcomes: &mut [Option<PlaceOutcome>],
    now: Timestamp,
) -> Result<bool, DbError> {
    let mut locked = lock_products(conn, drafts, pending).await?;
    // Keys claimed by drafts placed earlier in this call: a later twin replays them.
    let mut claimed: HashMap<(UserId, IdempotencyKey), Order> = HashMap::new();
    let mut wrote = false;
    for &i in pending {
        let draft = &drafts[i];
        let key = (draft.user(), draft.idempotency_key().clone());
        if let Some(first) = claimed.get(&key) {
            outcomes[i] = Some(replay(first.clone(), draft));
            continue;
        }
        match decide(draft, &locked) {
            Decision::Refuse(outcome @ PlaceOutcome::InsufficientStock { .. }) => {
                // A concurrent twin with this key may have taken the stock and committed
                // while we waited for the row locks: it is a replay, not a shortage. The
                // locking read sees the latest committed row, not our snapshot.
                outcomes[i] = Some(
                    match load_order_by_key(conn, key.0, &key.1, Read::Shared).await? {
                        Some(existing) => replay(existing, draft),
                        None => outcome,
                    },
                );
            }
            Decision::Refuse(outcome) => outcomes[i] = Some(outcome),
            Decision::Place(prices) => {
                let outcome = insert_order(conn, draft, &prices, now, Stock::Take).await?;
                if let PlaceOutcome::Placed(order) = &outcome {
                    for (product, quantity) in draft.items() {
                        if let Some(p) = locked.get_mut(product) {
                            p.stock -= u64::from(quantity.get());
                        }
                    }
                    claimed.insert(key, order.clone());
                    wrote = true;
                }
                outcomes[i] = Some(outcome);
            }
        }
    }
    Ok(wrote)
}

/// Locks the product rows every pending draft needs, in ascending id order, and returns
/// them. Products that do not exist are simply absent.
///
/// A batch may name any number of products (each draft up to
/// [`OrderDraft::MAX_LINES`]), more than the 65 535 placeholders one statement can bind:
/// the ids go in consecutive ascending chunks of [`IN_LIST_CHUNK`], one statement each,
/// so the rows are still locked in ascending id order across the whole batch.
async fn lock_products(
    conn: &mut MySqlConnection,
    drafts: &[OrderDraft],
    pending: &[usize],
) -> Result<BTreeMap<ProductId, LockedProduct>, DbError> {
    let ids: Vec<ProductId> = pending
        .iter()
        .flat_map(|&i| drafts[i].product_ids())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut locked = BTreeMap::new();
    for chunk in ids.chunks(IN_LIST_CHUNK) {
        let sql = repeat_sql(
            "SELECT id, name, price, stock FROM products WHERE id IN (",
            "?",
            ", ",
            chunk.len(),
            ") ORDER BY id FOR UPDATE",
        );
        let mut query = sqlx::query_as::<_, ProductRow>(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.get());
        }
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .ctx("locking product rows")?;
        for row in rows {
            let product = row.into_product()?;
            locked.insert(
                product.id,
                LockedProduct {
                    price: product.price,
                    stock: product.stock,
                },
            );
        }
    }
    Ok(locked)
}

/// What to do with one draft, given the locked products.
enum Decision {
    /// Place it at these unit prices (one per line, in the draft's order).
    Place(Vec<Money>),
    /// Do not: this is its outcome.
    Refuse(PlaceOutcome),
}

/// Checks the draft's products in ascending id order (the draft keeps them so); the
/// first one that is missing or short decides, like the memory adapter.
fn decide(draft: &OrderDraft, locked: &BTreeMap<ProductId, LockedProduct>) -> Decision {
    let mut prices = Vec::with_capacity(draft.items().len());
    for (product, quantity) in draft.items() {
        let Some(p) = locked.get(product) else {
            return Decision::Refuse(PlaceOutcome::UnknownProduct(*product));
        };
        if u64::from(quantity.get()) > p.stock {
            return Decision::Refuse(PlaceOutcome::InsufficientStock {
                product: *product,
                requested: quantity.get(),
                available: p.stock,
            });
        }
        prices.push(p.price);
    }
    if draft.total_at(&prices).is_err() {
        return Decision::Refuse(PlaceOutcome::TotalTooLarge);
    }
    Decision::Place(prices)
}

/// Whether [`insert_order`] must still decrement the stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stock {
    /// Decrement it after the lines (the general path: rows locked, stock checked).
    Take,
    /// The caller already took it with a conditional decrement (the one-draft fast path).
    AlreadyTaken,
}

/// Writes one order (row, lines, and — unless already taken — the stock decrement) whose
/// products are locked and sufficient. The `INSERT INTO orders` is the draft's first
/// write: when the unique key or the user's foreign key refuses it, that statement alone
/// is rolled back and the draft gets its business outcome.
async fn insert_order(
    conn: &mut MySqlConnection,
    draft: &OrderDraft,
    prices: &[Money],
    now: Timestamp,
    stock: Stock,
) -> Result<PlaceOutcome, DbError> {
    let lines: Vec<OrderLine> = draft.priced_lines(prices);
    let total = Order::total_of(&lines).map_err(|e| {
        DbError::data(format!(
            "order for user {} with key {}: {e}",
            draft.user(),
            draft.idempotency_key()
        ))
    })?;
    let at = to_sql(now);
    let inserted = sqlx::query(INSERT_ORDER)
        .bind(draft.user().get())
        .bind(total.as_decimal())
        .bind(draft.idempotency_key().as_str())
        .bind(draft.fingerprint().raw())
        .bind(&at)
        .bind(&at)
        .execute(&mut *conn)
        .await
        .ctx("inserting an order");
    let done = match inserted {
        Ok(done) => done,
        Err(e) => {
            return match e.server_code() {
                Some(code::DUPLICATE_KEY) => {
                    // A concurrent twin (another transaction) committed this key while we
                    // were deciding. The failed insert already holds a shared lock on its
                    // row; read it as committed.
                    match load_order_by_key(
                        conn,
                        draft.user(),
                        draft.idempotency_key(),
                        Read::Shared,
                    )
                    .await?
                    {
                        Some(existing) => Ok(replay(existing, draft)),
                        None => Err(e),
                    }
                }
                Some(code::NO_REFERENCED_ROW) => Ok(PlaceOutcome::UnknownUser(draft.user())),
                _ => Err(e),
            };
        }
    };
    let id = order_id(done.last_insert_id())?;

    let sql = repeat_sql(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES ",
        "(?, ?, ?, ?)",
        ", ",
        lines.len(),
        "",
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for line in &lines {
        query = query
            .bind(id.get())
            .bind(line.product.get())
            .bind(line.quantity.get())
            .bind(line.unit_price.as_decimal());
    }
    query
        .execute(&mut *conn)
        .await
        .ctx("inserting order lines")?;

    if stock == Stock::Take {
        let deltas: Vec<(ProductId, u32)> = lines
            .iter()
            .map(|l| (l.product, l.quantity.get()))
            .collect();
        adjust_stock(conn, &deltas, Adjust::Take).await?;
    }

    let order = Order::place(id, draft, prices, now)
        .map_err(|e| DbError::data(format!("order {id}: {e}")))?;
    Ok(PlaceOutcome::Placed(order))
}

/// The current unit price of each of the draft's products, in the draft's order; `None`
/// when one of them does not exist. A plain read: no lock is taken.
async fn current_prices(
    conn: &mut MySqlConnection,
    draft: &OrderDraft,
) -> Result<Option<Vec<Money>>, DbError> {
    let n = draft.items().len();
    let sql = repeat_sql(
        "SELECT id, name, price, stock FROM products WHERE id IN (",
        "?",
        ", ",
        n,
        ") ORDER BY id",
    );
    let mut query = sqlx::query_as::<_, ProductRow>(AssertSqlSafe(sql));
    for product in draft.product_ids() {
        query = query.bind(product.get());
    }
    let rows = query.fetch_all(&mut *conn).await.ctx("reading prices")?;
    if rows.len() != n {
        return Ok(None);
    }
    // Both are ascending by product id with unique ids, so they pair up in order.
    let mut prices = Vec::with_capacity(n);
    for (row, product) in rows.into_iter().zip(draft.product_ids()) {
        let stored = row.into_product()?;
        if stored.id != product {
            return Ok(None);
        }
        prices.push(stored.price);
    }
    Ok(Some(prices))
}

/// Decrements every line's product by its quantity if, and only if, each has enough
/// stock and still costs `prices` (one per item, in order): one `UPDATE` over the
/// primary key, which InnoDB visits — and locks — in ascending id order, evaluating the
/// conditions on the latest committed row once it holds the lock. Returns whether every
/// row was taken; when not (short, or repriced), the caller rolls back (some rows may
/// have been decremented).
///
/// `rows_affected` counts MATCHED rows under sqlx's connection flags, which is exactly
/// "rows with enough stock at the expected price" here. At most 50 lines
/// ([`OrderDraft::MAX_LINES`]) bind 350 values.
async fn take_stock_if_available(
    conn: &mut MySqlConnection,
    items: &[(ProductId, Quantity)],
    prices: &[Money],
) -> Result<bool, DbError> {
    let n = items.len();
    if prices.len() != n {
        return Err(DbError::data(format!(
            "{} prices for {n} lines",
            prices.len()
        )));
    }
    let case = repeat_sql("CASE id", " WHEN ? THEN ?", "", n, " END");
    let mut sql = format!("UPDATE products SET stock = stock - {case} WHERE id IN (");
    sql.push_str(&repeat_sql("", "?", ", ", n, ")"));
    sql.push_str(&format!(" AND stock >= {case} AND price = {case}"));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (product, quantity) in items {
        query = query.bind(product.get()).bind(quantity.get());
    }
    for (product, _) in items {
        query = query.bind(product.get());
    }
    for (product, quantity) in items {
        query = query.bind(product.get()).bind(quantity.get());
    }
    for ((product, _), price) in items.iter().zip(prices) {
        query = query.bind(product.get()).bind(price.as_decimal());
    }
    let matched = query
        .execute(&mut *conn)
        .await
        .ctx("taking stock")?
        .rows_affected();
    Ok(matched == n as u64)
}

/// Which way [`adjust_stock`] moves the stock.
#[derive(Debug, Clone, Copy)]
enum Adjust {
    /// Reserve units for a new order.
    Take,
    /// Put a cancelled or failed order's units back.
    Return,
}

/// One `UPDATE` for all `deltas` (ascending product ids, unique). With `WHERE id IN`
/// on the primary key InnoDB visits, and locks, the rows in ascending id order.
async fn adjust_stock(
    conn: &mut MySqlConnection,
    deltas: &[(ProductId, u32)],
    direction: Adjust,
) -> Result<(), DbError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let head = match direction {
        Adjust::Take => "UPDATE products SET stock = stock - CASE id",
        Adjust::Return => "UPDATE products SET stock = stock + CASE id",
    };
    let mut sql = repeat_sql(
        head,
        " WHEN ? THEN ?",
        "",
        deltas.len(),
        " END WHERE id IN (",
    );
    sql.push_str(&repeat_sql("", "?", ", ", deltas.len(), ")"));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (product, units) in deltas {
        query = query.bind(product.get()).bind(*units);
    }
    for (product, _) in deltas {
        query = query.bind(product.get());
    }
    let context = match direction {
        Adjust::Take => "reserving stock",
        Adjust::Return => "returning stock",
    };
    query.execute(&mut *conn).await.ctx(context)?;
    Ok(())
}

/// Puts order `id`'s quantities back, in the transaction that cancelled or failed it.
async fn return_stock(conn: &mut MySqlConnection, id: OrderId) -> Result<(), DbError> {
    let items = load_items(conn, id.get(), Read::Plain).await?;
    let deltas: Vec<(ProductId, u32)> = items
        .into_iter()
        .map(|item| Ok((product_id(item.product_id)?, item.quantity)))
        .collect::<Result<_, DbError>>()?;
    adjust_stock(conn, &deltas, Adjust::Return).await
}

#[async_trait]
impl OrderRepository for MySqlOrderRepository {
    /// Places each draft in arrival order, in one transaction; see
    /// [`MySqlOrderRepository`] for the layout. A second draft with the same (user, key)
    /// in one call replays (or refuses) the first.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the database cannot be reached or a
    /// deadlock / lock-wait timeout persisted through every retry;
    /// [`RepositoryError::Unexpected`] for anything else, including a draft whose total
    /// would exceed [`Money::max`]. Nothing was written — with one exception no database
    /// client can rule out: if the connection breaks while `COMMIT` is in flight, the
    /// commit may have happened. Placing the same drafts again is then safe: the
    /// idempotency keys turn it into replays.
    async fn place(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying("place", || self.place_once(drafts, now))
            .await
    }

    /// Compare-and-set exactly as [`Order::apply`], stock returned in the same
    /// transaction for Cancel and Fail.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the database cannot be reached or a
    /// deadlock persisted through every retry; [`RepositoryError::Unexpected`] otherwise
    /// (e.g. a row that fails the domain checks, or — only if stock was raised outside
    /// [`restock`](MySqlOrderRepository::restock) and [`MAX_STOCK`] — returned stock
    /// exceeding `INT UNSIGNED`). Nothing was written.
    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        self.retrying("transition", || self.transition_once(id, &change, now))
            .await
    }

    /// # Errors
    /// [`RepositoryError`] when the database failed or the row is not a valid order.
    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError> {
        async {
            let mut conn = self.acquire().await?;
            load_order(&mut conn, id.get()).await
        }
        .await
        .map_err(DbError::into_repository)
    }

    /// # Errors
    /// [`RepositoryError`] when the database failed or the row is not a valid order.
    async fn find_by_key(
        &self,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError> {
        async {
            let mut conn = self.acquire().await?;
            load_order_by_key(&mut conn, user, key, Read::Plain).await
        }
        .await
        .map_err(DbError::into_repository)
    }

    /// Newest first (`created_at DESC, id DESC`), `LIMIT`/`OFFSET` paging, the total from
    /// `COUNT(*)`. Page 0 reads as page 1; `per_page` 0 gives an empty page with the
    /// right total. The page and the count are two statements, so under concurrent
    /// inserts the total may be a moment newer than the page.
    ///
    /// # Errors
    /// [`RepositoryError`] when the database failed or a row is not a valid order.
    async fn list_by_user(
        &self,
        user: UserId,
        filter: ListFilter,
    ) -> Result<OrderPage, RepositoryError> {
        async {
            let mut conn = self.acquire().await?;
            let limit = u64::from(filter.per_page);
            let offset = u64::from(filter.page.max(1) - 1) * limit;
            let (rows, total) = match filter.status {
                None => {
                    let rows = sqlx::query_as::<_, OrderRow>(LIST_BY_USER)
                        .bind(user.get())
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(&mut *conn)
                        .await
                        .ctx("listing a user's orders")?;
                    let total: i64 = sqlx::query_scalar(COUNT_BY_USER)
                        .bind(user.get())
                        .fetch_one(&mut *conn)
                        .await
                        .ctx("counting a user's orders")?;
                    (rows, total)
                }
                Some(status) => {
                    let rows = sqlx::query_as::<_, OrderRow>(LIST_BY_USER_STATUS)
                        .bind(user.get())
                        .bind(status.as_str())
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(&mut *conn)
                        .await
                        .ctx("listing a user's orders")?;
                    let total: i64 = sqlx::query_scalar(COUNT_BY_USER_STATUS)
                        .bind(user.get())
                        .bind(status.as_str())
                        .fetch_one(&mut *conn)
                        .await
                        .ctx("counting a user's orders")?;
                    (rows, total)
                }
            };
            let mut lines: HashMap<u64, Vec<ItemRow>> = HashMap::new();
            if !rows.is_empty() {
                let sql = repeat_sql(
                    "SELECT order_id, product_id, quantity, unit_price FROM order_items \
                     WHERE order_id IN (",
                    "?",
                    ", ",
                    rows.len(),
                    ") ORDER BY order_id, product_id",
                );
                let mut query = sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql));
                for row in &rows {
                    query = query.bind(row.id);
                }
                for item in query
                    .fetch_all(&mut *conn)
                    .await
                    .ctx("reading order lines")?
                {
                    lines.entry(item.order_id).or_default().push(item);
                }
            }
            let orders = rows
                .into_iter()
                .map(|row| {
                    let items = lines.remove(&row.id).unwrap_or_default();
                    row.into_order(items)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let total = u64::try_from(total)
                .map_err(|_| DbError::data(format!("negative order count {total}")))?;
            Ok(OrderPage { orders, total })
        }
        .await
        .map_err(DbError::into_repository)
    }

    /// One transaction at READ COMMITTED: `SELECT id … FOR UPDATE SKIP LOCKED` over the
    /// `orders_open_hand_out` index (open orders handed out at or before `now -
    /// stale_after`, PENDING or with a lease expired at or before `now`, oldest hand-out
    /// then id first, at most `limit`), then `UPDATE orders SET dispatched_at = now` for
    /// exactly those ids, then `COMMIT`. A concurrent claim skips the rows this one holds
    /// and, after its commit, no longer finds them stale, so the claims are disjoint; an
    /// order being changed by a worker at that instant is skipped this time. Status,
    /// lease and `updated_at` are left alone. `limit` 0 claims nothing without a query.
    ///
    /// # Errors
    /// [`RepositoryError`] when the database failed; the transaction was rolled back and
    /// nothing was claimed.
    async fn claim_stranded(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, RepositoryError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        self.retrying("claim_stranded", || self.claim_stranded_once(query, now))
            .await
    }

    /// # Errors
    /// [`RepositoryError`] when the database failed or a row is not a valid product.
    async fn products(&self) -> Result<Vec<Product>, RepositoryError> {
        let rows = sqlx::query_as::<_, ProductRow>(PRODUCTS)
            .fetch_all(&self.pool)
            .await
            .ctx("listing products")
            .map_err(DbError::into_repository)?;
        rows.into_iter()
            .map(|row| row.into_product().map_err(DbError::into_repository))
            .collect()
    }
}
