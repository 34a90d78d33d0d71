//! Read-only audits of the stored facts: one function per invariant the database can
//! answer for, each returning the violations it finds (empty = the invariant holds).
//!
//! These are raw facts for an invariant checker (`order_engine::check` runs them, with
//! a bounded wait, next to the Redis inspections), not a port: nothing on the request
//! path calls them and the service cannot depend on them. Every function is plain SQL
//! over the tables of `migrations/` — it writes nothing and takes no locks (plain
//! consistent reads), so it may run against a live deployment; what it reports is then a
//! snapshot per query, and a check meant to be exact runs at rest, when no order moves.
//! Several of them read whole tables (every product's lines, the whole retained event
//! log): they are operations tools, not hot paths.
//!
//! Like the rest of the crate, no `sqlx` type appears in a signature (the pool is the
//! re-exported [`MySqlPool`]) and a failed statement becomes an [`AuditError`] that keeps
//! the driver error as its source.

use std::collections::HashMap;
use std::fmt;

use order_core::ports::RepositoryError;
use order_core::{OrderId, OrderStatus, ProductId, UserId};
use sqlx::MySqlPool;

use crate::error::{Context, DbError};

/// Why an audit could not run. Nothing was written either way.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database cannot be reached, is overloaded or going away; a later run may
    /// succeed. The source is the failed step, with the driver error below it.
    #[error("database unavailable for the audit")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a failed statement (e.g. a schema without migration 0008) or data
    /// that cannot be a domain value. The source says which.
    #[error("audit query failed")]
    Unexpected(#[source] anyhow::Error),
}

impl From<DbError> for AuditError {
    fn from(e: DbError) -> Self {
        // The repository's classification is the crate's one rule for what counts as
        // "unavailable"; reuse it rather than keep a second list of server codes.
        match e.into_repository() {
            RepositoryError::Unavailable(source) => AuditError::Unavailable(source),
            RepositoryError::Unexpected(source) => AuditError::Unexpected(source),
        }
    }
}

// ---------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------

const OPEN_ORDERS: &str =
    "SELECT id, status FROM orders WHERE status IN ('PENDING', 'PROCESSING') ORDER BY id";

/// Prefix of the status lookup for a list of ids; the placeholders and `)` follow.
const STATUSES_OF: &str = "SELECT id, status FROM orders WHERE id IN (";

/// Per product: what came in, what is in stock, what its PENDING/PROCESSING/PAID lines
/// hold. The held units are summed once per product in a derived table (one pass over
/// `order_items` joined to `orders`), so the outer filter compares three numbers.
macro_rules! stock_levels {
    ($condition:literal) => {
        concat!(
            "SELECT p.id, p.stock_received, p.stock, ",
            "CAST(COALESCE(h.held, 0) AS UNSIGNED) AS held ",
            "FROM products p LEFT JOIN (",
            "SELECT i.product_id, SUM(i.quantity) AS held FROM order_items i ",
            "JOIN orders o ON o.id = i.order_id ",
            "WHERE o.status IN ('PENDING', 'PROCESSING', 'PAID') ",
            "GROUP BY i.product_id) h ON h.product_id = p.id ",
            "WHERE ",
            $condition,
            " ORDER BY p.id"
        )
    };
}

const STOCK_NOT_CONSERVED: &str =
    stock_levels!("p.stock_received <> p.stock + COALESCE(h.held, 0)");
const STOCK_OVERDRAWN: &str =
    stock_levels!("(COALESCE(h.held, 0) > p.stock_received OR p.stock > p.stock_received)");

/// Every order sharing its (user, key) with another, grouped by the pair.
const DUPLICATE_KEYS: &str = "SELECT o.user_id, o.idempotency_key, o.id FROM orders o \
     JOIN (SELECT user_id, idempotency_key FROM orders \
           GROUP BY user_id, idempotency_key HAVING COUNT(*) > 1) d \
       ON d.user_id = o.user_id AND d.idempotency_key = o.idempotency_key \
     ORDER BY o.user_id, o.idempotency_key, o.id";

/// PAID orders whose ledger row is missing or not an approval (the outcome, NULL when
/// there is no row).
const PAID_WITHOUT_APPROVAL: &str = "SELECT o.id, p.outcome FROM orders o \
     LEFT JOIN payments p ON p.order_id = o.id \
     WHERE o.status = 'PAID' AND (p.outcome IS NULL OR p.outcome <> 'APPROVED') \
     ORDER BY o.id";

/// Approved charges whose order is not PAID (the status, NULL when no such order).
const APPROVED_NOT_PAID: &str = "SELECT p.order_id, o.status FROM payments p \
     LEFT JOIN orders o ON o.id = p.order_id \
     WHERE p.outcome = 'APPROVED' AND (o.status IS NULL OR o.status <> 'PAID') \
     ORDER BY p.order_id";

const RESTORED_MORE_THAN_ONCE: &str = "SELECT order_id, COUNT(*) FROM order_events \
     WHERE kind IN ('order.cancelled', 'order.failed') \
     GROUP BY order_id HAVING COUNT(*) > 1 ORDER BY order_id";

/// The whole retained log, one order's events together in seq order, with the order's
/// current status (NULL when the order does not exist).
const HISTORIES: &str = "SELECT e.order_id, e.user_id, e.kind, o.status \
     FROM order_events e LEFT JOIN orders o ON o.id = e.order_id \
     ORDER BY e.order_id, e.seq";

/// Per user with a counter or a retained event: the counter, and the retained seqs'
/// range and count.
const USER_SEQS: &str = "SELECT u.id AS user_id, u.event_seq AS counter, MIN(e.seq) AS first, \
     MAX(e.seq) AS last, COUNT(e.seq) AS retained \
     FROM users u LEFT JOIN order_events e ON e.user_id = u.id \
     GROUP BY u.id, u.event_seq HAVING u.event_seq > 0 OR COUNT(e.seq) > 0 ORDER BY u.id";

const UNLOGGED_COUNT: &str = "SELECT COUNT(*) FROM orders o \
     WHERE NOT EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id)";

/// How many unlogged orders [`HistoryAudit::not_checkable_sample`] names.
const UNLOGGED_SAMPLE: u32 = 10;

const UNLOGGED_SAMPLE_IDS: &str = "SELECT o.id FROM orders o \
     WHERE NOT EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id) \
     ORDER BY o.id LIMIT ?";

/// Most ids bound in one `IN (…)` list (far below the 65 535 placeholders a statement
/// may have, and small enough to keep each statement cheap).
const IDS_PER_STATEMENT: usize = 1_000;

// ---------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------

fn order_id(raw: u64) -> Result<OrderId, DbError> {
    OrderId::new(raw).map_err(|e| DbError::data(format!("order id {raw}: {e}")))
}

fn product_id(raw: u64) -> Result<ProductId, DbError> {
    ProductId::new(raw).map_err(|e| DbError::data(format!("product id {raw}: {e}")))
}

fn user_id(raw: u64) -> Result<UserId, DbError> {
    UserId::new(raw).map_err(|e| DbError::data(format!("user id {raw}: {e}")))
}

fn status(text: &str) -> Result<OrderStatus, DbError> {
    OrderStatus::parse(text).map_err(|e| DbError::data(format!("order status {text:?}: {e}")))
}

fn count(raw: i64) -> Result<u64, DbError> {
    u64::try_from(raw).map_err(|_| DbError::data(format!("negative count {raw}")))
}

// ---------------------------------------------------------------------------------------
// Open orders
// ---------------------------------------------------------------------------------------

/// Every order that is not terminal (PENDING or PROCESSING), ascending by id, with its
/// status. At rest — every accepted order finished — it is empty.
///
/// # Errors
/// [`AuditError`] when the query failed or a row is not a valid order id or status.
pub async fn open_orders(pool: &MySqlPool) -> Result<Vec<(OrderId, OrderStatus)>, AuditError> {
    let rows: Vec<(u64, String)> = sqlx::query_as(OPEN_ORDERS)
        .fetch_all(pool)
        .await
        .ctx("reading the open orders")?;
    Ok(rows
        .into_iter()
        .map(|(id, text)| Ok((order_id(id)?, status(&text)?)))
        .collect::<Result<_, DbError>>()?)
}

/// The current status of each of `ids` that exists, ascending by id; an id with no order
/// is simply absent from the result (the caller compares). Runs one statement per 1 000
/// ids, so a load generator's whole list of accepted orders can be passed.
///
/// # Errors
/// [`AuditError`] when a query failed or a row is not a valid order id or status.
pub async fn order_statuses(
    pool: &MySqlPool,
    ids: &[OrderId],
) -> Result<Vec<(OrderId, OrderStatus)>, AuditError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        // Placeholders only, never data: as safe as a literal.
        let sql = sqlx::AssertSqlSafe(format!("{STATUSES_OF}{placeholders}) ORDER BY id"));
        let mut query = sqlx::query_as::<_, (u64, String)>(sql);
        for id in chunk {
            query = query.bind(id.get());
        }
        let rows = query
            .fetch_all(pool)
            .await
            .ctx("reading the statuses of orders")?;
        for (id, text) in rows {
            found.push((order_id(id)?, status(&text)?));
        }
    }
    found.sort_by_key(|(id, _)| *id);
    found.dedup_by_key(|(id, _)| *id);
    Ok(found)
}

// ---------------------------------------------------------------------------------------
// Stock
// ---------------------------------------------------------------------------------------

/// One product's stock figures, as the stock audits report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockMismatch {
    /// The product.
    pub product: ProductId,
    /// `stock_received`: its initial stock plus every restock (migration 0008).
    pub received: u64,
    /// Its current `stock`.
    pub stock: u64,
    /// Units held by the lines of its PENDING, PROCESSING and PAID orders.
    pub held: u64,
}

impl fmt::Display for StockMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "product {}: received {}, stock {}, held {}",
            self.product, self.received, self.stock, self.held
        )
    }
}

async fn stock_levels(
    pool: &MySqlPool,
    sql: &'static str,
    step: &'static str,
) -> Result<Vec<StockMismatch>, AuditError> {
    let rows: Vec<(u64, u64, u32, u64)> = sqlx::query_as(sql).fetch_all(pool).await.ctx(step)?;
    Ok(rows
        .into_iter()
        .map(|(id, received, stock, held)| {
            Ok(StockMismatch {
                product: product_id(id)?,
                received,
                stock: u64::from(stock),
                held,
            })
        })
        .collect::<Result<_, DbError>>()?)
}

/// Stock conservation (DESIGN §2): every product where `stock_received ≠ stock + held`,
/// held being the units of its lines in PENDING/PROCESSING/PAID orders, ascending by id.
///
/// Holds at rest. Placing moves units from stock to held, Cancel and Fail move them
/// back, Pay keeps them held (sold), restocking adds to both received and stock — each
/// in one transaction — so any mismatch is a unit leaked (failure that kept the stock),
/// returned twice, or written by hand. A check against a live system may see a
/// placement's order lines and stock in one snapshot per statement only: run it at
/// rest.
///
/// # Errors
/// [`AuditError`] when the query failed (a schema without migration 0008 has no
/// `stock_received`: `Unexpected`).
pub async fn stock_conservation(pool: &MySqlPool) -> Result<Vec<StockMismatch>, AuditError> {
    stock_levels(pool, STOCK_NOT_CONSERVED, "checking stock conservation").await
}

/// "No negative stock": every product whose held units or whose stock exceed what it
/// ever received, ascending by id.
///
/// `stock` is `INT UNSIGNED` and the server runs in strict mode, so a negative stock
/// cannot be stored at all (that half is structural). What can still go wrong is an
/// oversell the unsigned column hides: more units held by orders than ever came in
/// (`held > received`, i.e. a stock that "should" be negative), or stock appearing from
/// nowhere (`stock > received`). This reports both; it is implied by
/// [`stock_conservation`] whenever that holds.
///
/// # Errors
/// [`AuditError`] when the query failed.
pub async fn stock_overdrawn(pool: &MySqlPool) -> Result<Vec<StockMismatch>, AuditError> {
    stock_levels(pool, STOCK_OVERDRAWN, "checking for overdrawn stock").await
}

// ---------------------------------------------------------------------------------------
// Idempotency keys
// ---------------------------------------------------------------------------------------

/// Several orders recorded under one (user, idempotency key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The user.
    pub user: UserId,
    /// The key, as stored.
    pub key: String,
    /// The orders sharing it, ascending (at least two).
    pub orders: Vec<OrderId>,
}

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {}, key {:?}: orders ", self.user, self.key)?;
        for (n, order) in self.orders.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{order}")?;
        }
        Ok(())
    }
}

/// At most one order per (user, idempotency key): every pair that names more than one
/// order, ascending by user and key.
///
/// On a migrated schema this is structural — the unique index `orders_user_key_unique`
/// (migration 0003) refuses a second row — so the audit can only fail on a database
/// whose index was dropped or never built. It checks the rows anyway, so that the claim
/// rests on the data and not on the schema.
///
/// # Errors
/// [`AuditError`] when the query failed or a row holds an invalid id.
pub async fn duplicate_keys(pool: &MySqlPool) -> Result<Vec<DuplicateKey>, AuditError> {
    let rows: Vec<(u64, String, u64)> = sqlx::query_as(DUPLICATE_KEYS)
        .fetch_all(pool)
        .await
        .ctx("looking for duplicate idempotency keys")?;
    let mut duplicates: Vec<DuplicateKey> = Vec::new();
    for (user, key, order) in rows {
        let (user, order) = (user_id(user)?, order_id(order)?);
        match duplicates.last_mut() {
            // Rows come sorted by (user, key), so one pair's orders are adjacent.
            Some(last) if last.user == user && last.key == key => last.orders.push(order),
            _ => duplicates.push(DuplicateKey {
                user,
                key,
                orders: vec![order],
            }),
        }
    }
    Ok(duplicates)
}

// ---------------------------------------------------------------------------------------
// Charges
// ---------------------------------------------------------------------------------------

/// An order whose status and recorded charge disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeViolation {
    /// The order is PAID but the ledger has no approved charge for it: no row at all
    /// (`declined: false`), or a decline (`declined: true`).
    PaidWithoutApprovedCharge {
        /// The order.
        order: OrderId,
        /// Whether the ledger recorded a decline (rather than nothing).
        declined: bool,
    },
    /// The ledger approved a charge for an order that is not PAID — FAILED or CANCELLED
    /// (money taken for an order that will never ship), still open, or (`status:
    /// None`) no order at all.
    ApprovedButNotPaid {
        /// The charge key (the order id).
        order: OrderId,
        /// The order's status, `None` when no order has this id.
        status: Option<OrderStatus>,
    },
}

impl fmt::Display for ChargeViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChargeViolation::PaidWithoutApprovedCharge {
                order,
                declined: true,
            } => write!(f, "order {order} is PAID but its charge was declined"),
            ChargeViolation::PaidWithoutApprovedCharge {
                order,
                declined: false,
            } => write!(f, "order {order} is PAID but has no charge"),
            ChargeViolation::ApprovedButNotPaid {
                order,
                status: Some(status),
            } => write!(f, "order {order} is {status} but has an approved charge"),
            ChargeViolation::ApprovedButNotPaid {
                order,
                status: None,
            } => write!(f, "approved charge for order {order}, which does not exist"),
        }
    }
}

/// PAID ⇔ exactly one approved charge: every order that is PAID without an approved
/// charge, then every approved charge whose order is not PAID (FAILED and CANCELLED
/// orders with an approved charge among them), each ascending by order id.
///
/// "At most one charge per order" is structural: the ledger (`payments`, migration 0004)
/// has one row per order, keyed by the order id, and a charge repeated with the same key
/// returns that row's outcome instead of charging again. So "exactly one" reduces to
/// "the one row is an approval". An approved charge on a PROCESSING order is the
/// instant between the charge and the final compare-and-set: run the audit at rest.
///
/// # Errors
/// [`AuditError`] when a query failed or a row holds an invalid id or status.
pub async fn charges(pool: &MySqlPool) -> Result<Vec<ChargeViolation>, AuditError> {
    let paid: Vec<(u64, Option<String>)> = sqlx::query_as(PAID_WITHOUT_APPROVAL)
        .fetch_all(pool)
        .await
        .ctx("looking for paid orders without an approved charge")?;
    let approved: Vec<(u64, Option<String>)> = sqlx::query_as(APPROVED_NOT_PAID)
        .fetch_all(pool)
        .await
        .ctx("looking for approved charges on unpaid orders")?;
    let mut violations = Vec::with_capacity(paid.len() + approved.len());
    for (order, outcome) in paid {
        violations.push(ChargeViolation::PaidWithoutApprovedCharge {
            order: order_id(order)?,
            declined: outcome.is_some(),
        });
    }
    for (order, current) in approved {
        violations.push(ChargeViolation::ApprovedButNotPaid {
            order: order_id(order)?,
            status: current.as_deref().map(status).transpose()?,
        });
    }
    Ok(violations)
}

// ---------------------------------------------------------------------------------------
// The event log
// ---------------------------------------------------------------------------------------

/// An order whose stock the log says was returned more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatedRestore {
    /// The order.
    pub order: OrderId,
    /// How many `order.cancelled` / `order.failed` events it has (at least two).
    pub restores: u64,
}

impl fmt::Display for RepeatedRestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "order {}: stock returned {} times",
            self.order, self.restores
        )
    }
}

/// Stock restored at most once per order: every order with more than one
/// `order.cancelled`/`order.failed` event in the durable log (migration 0007), ascending.
///
/// Cancel and Fail are the only changes that return stock, and each is logged in the
/// transaction that returns it, so two such events are two returns. The log is pruned by
/// age; a return whose event was pruned is not counted (it was at least a week ago, and
/// [`stock_conservation`] still sees its effect).
///
/// # Errors
/// [`AuditError`] when the query failed or a row holds an invalid id.
pub async fn restored_more_than_once(pool: &MySqlPool) -> Result<Vec<RepeatedRestore>, AuditError> {
    let rows: Vec<(u64, i64)> = sqlx::query_as(RESTORED_MORE_THAN_ONCE)
        .fetch_all(pool)
        .await
        .ctx("counting stock returns per order")?;
    Ok(rows
        .into_iter()
        .map(|(order, n)| {
            Ok(RepeatedRestore {
                order: order_id(order)?,
                restores: count(n)?,
            })
        })
        .collect::<Result<_, DbError>>()?)
}

/// An event kind of the log, for the history check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Processing,
    Paid,
    Failed,
    Cancelled,
}

impl Kind {
    fn parse(text: &str) -> Result<Kind, DbError> {
        match text {
            "order.created" => Ok(Kind::Created),
            "order.processing" => Ok(Kind::Processing),
            "order.paid" => Ok(Kind::Paid),
            "order.failed" => Ok(Kind::Failed),
            "order.cancelled" => Ok(Kind::Cancelled),
            other => Err(DbError::data(format!("event kind {other:?}"))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Created => "order.created",
            Kind::Processing => "order.processing",
            Kind::Paid => "order.paid",
            Kind::Failed => "order.failed",
            Kind::Cancelled => "order.cancelled",
        }
    }

    /// The status an order has right after this event.
    fn status(self) -> OrderStatus {
        match self {
            Kind::Created => OrderStatus::Pending,
            Kind::Processing => OrderStatus::Processing,
            Kind::Paid => OrderStatus::Paid,
            Kind::Failed => OrderStatus::Failed,
            Kind::Cancelled => OrderStatus::Cancelled,
        }
    }

    /// Whether `next` may follow this event: exactly the legal transitions of DESIGN §2
    /// (Pending→Processing, Pending→Cancelled, Processing→Paid, Processing→Failed);
    /// nothing follows a terminal event, and `order.created` follows nothing.
    fn may_precede(self, next: Kind) -> bool {
        match (self, next) {
            (Kind::Created, Kind::Processing | Kind::Cancelled)
            | (Kind::Processing, Kind::Paid | Kind::Failed) => true,
            (Kind::Created | Kind::Processing, _)
            | (Kind::Paid | Kind::Failed | Kind::Cancelled, _) => false,
        }
    }
}

/// A row of [`USER_SEQS`].
#[derive(sqlx::FromRow)]
struct UserSeqs {
    user_id: u64,
    counter: u64,
    first: Option<u64>,
    last: Option<u64>,
    retained: i64,
}

/// A row of [`HISTORIES`].
#[derive(sqlx::FromRow)]
struct HistoryRow {
    order_id: u64,
    user_id: u64,
    kind: String,
    status: Option<String>,
}

/// One way the durable history breaks the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryViolation {
    /// The order's retained events, in seq order, are not a legal path: an event that
    /// may not follow the one before it, anything after a terminal event, or a history
    /// that does not start with `order.created` although nothing of its owner's log was
    /// pruned.
    IllegalPath {
        /// The order.
        order: OrderId,
        /// Its retained event kinds in seq order (e.g. `["order.created",
        /// "order.paid"]`).
        kinds: Vec<&'static str>,
    },
    /// The order's current status is not the one its last logged event left it in.
    StatusDisagrees {
        /// The order.
        order: OrderId,
        /// Its current status.
        status: OrderStatus,
        /// Its last logged event kind.
        last_event: &'static str,
    },
    /// Events are logged for an order that does not exist.
    UnknownOrder {
        /// The id the events name.
        order: OrderId,
    },
    /// A user's retained seqs are not consecutive, or do not end at the user's counter
    /// (`users.event_seq`, which hands out the next seq): a gap a reconnecting client
    /// would wait on forever, or a seq that could be handed out twice.
    SeqNotConsecutive {
        /// The user.
        user: UserId,
        /// Lowest retained seq (`None` when nothing is retained).
        first: Option<u64>,
        /// Highest retained seq (`None` when nothing is retained).
        last: Option<u64>,
        /// How many events are retained.
        retained: u64,
        /// The user's counter.
        counter: u64,
    },
}

impl fmt::Display for HistoryViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryViolation::IllegalPath { order, kinds } => {
                write!(f, "order {order}: illegal history {}", kinds.join(" → "))
            }
            HistoryViolation::StatusDisagrees {
                order,
                status,
                last_event,
            } => write!(
                f,
                "order {order} is {status} but its last event is {last_event}"
            ),
            HistoryViolation::UnknownOrder { order } => {
                write!(f, "events logged for order {order}, which does not exist")
            }
            HistoryViolation::SeqNotConsecutive {
                user,
                first,
                last,
                retained,
                counter,
            } => match (first, last) {
                (Some(first), Some(last)) => write!(
                    f,
                    "user {user}: seqs {first}..={last} with {retained} events retained, \
                     counter at {counter}"
                ),
                _ => write!(f, "user {user}: no events retained, counter at {counter}"),
            },
        }
    }
}

/// What [`illegal_histories`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryAudit {
    /// The violations: per order in id order, then per user in id order.
    pub violations: Vec<HistoryViolation>,
    /// Orders with no event at all: their log was pruned (older than the retention), so
    /// their history cannot be checked. Not a failure.
    pub not_checkable: u64,
    /// The lowest ids among them (at most 10), to name in a report.
    pub not_checkable_sample: Vec<OrderId>,
}

/// Only legal transitions in the durable history (the event log, migration 0007).
///
/// Per order, its retained events in seq order must be a prefix of a legal path:
/// `order.created`, then either `order.cancelled`, or `order.processing` then
/// `order.paid` | `order.failed`; nothing follows a terminal event. (A lease take-over
/// is not a status change and is not logged.) The log is pruned by age, oldest first,
/// so when the owner's log no longer starts at seq 1 the retained events may be the
/// tail of a history: they must then be a contiguous piece of a legal path (each event
/// may follow the one before it), not necessarily starting with `order.created`. Since
/// pruning always keeps the newest events, the last retained event must agree with the
/// order's current status; an order that has no event at all is *not checkable*
/// ([`HistoryAudit::not_checkable`]), not a violation. Events naming no existing order
/// are violations.
///
/// Per user, the retained seqs must be consecutive (`max − min + 1` events) and end at
/// the user's counter: the log is gap-free within what is retained.
///
/// Reads the whole retained log in one query: an offline check.
///
/// # Errors
/// [`AuditError`] when a query failed or a row holds an invalid id, status or kind.
pub async fn illegal_histories(pool: &MySqlPool) -> Result<HistoryAudit, AuditError> {
    let users: Vec<UserSeqs> = sqlx::query_as(USER_SEQS)
        .fetch_all(pool)
        .await
        .ctx("reading each user's event seqs")?;
    let mut violations = Vec::new();
    let mut user_violations = Vec::new();
    // Users whose log lost its head to pruning: their orders may have lost theirs.
    let mut pruned: HashMap<u64, bool> = HashMap::with_capacity(users.len());
    for seqs in users {
        let retained = count(seqs.retained)?;
        pruned.insert(seqs.user_id, seqs.first.is_none_or(|first| first > 1));
        let consecutive = match (seqs.first, seqs.last) {
            (Some(first), Some(last)) => {
                last.checked_sub(first).and_then(|d| d.checked_add(1)) == Some(retained)
                    && last == seqs.counter
            }
            // Everything pruned: nothing retained to disagree with.
            _ => true,
        };
        if !consecutive {
            user_violations.push(HistoryViolation::SeqNotConsecutive {
                user: user_id(seqs.user_id)?,
                first: seqs.first,
                last: seqs.last,
                retained,
                counter: seqs.counter,
            });
        }
    }

    let rows: Vec<HistoryRow> = sqlx::query_as(HISTORIES)
        .fetch_all(pool)
        .await
        .ctx("reading the event log")?;
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let mut kinds = vec![Kind::parse(&first.kind)?];
        while let Some(next) = rows.next_if(|next| next.order_id == first.order_id) {
            kinds.push(Kind::parse(&next.kind)?);
        }
        let id = order_id(first.order_id)?;
        let Some(current) = first.status.as_deref().map(status).transpose()? else {
            violations.push(HistoryViolation::UnknownOrder { order: id });
            continue;
        };
        let may_lack_head = pruned.get(&first.user_id).copied().unwrap_or(false);
        let starts_well = kinds.first() == Some(&Kind::Created) || may_lack_head;
        let steps_legal = kinds.windows(2).all(|w| w[0].may_precede(w[1]));
        if !(starts_well && steps_legal) {
            violations.push(HistoryViolation::IllegalPath {
                order: id,
                kinds: kinds.iter().map(|k| k.as_str()).collect(),
            });
        }
        if let Some(last) = kinds.last()
            && last.status() != current
        {
            violations.push(HistoryViolation::StatusDisagrees {
                order: id,
                status: current,
                last_event: last.as_str(),
            });
        }
    }
    violations.extend(user_violations);

    let not_checkable: i64 = sqlx::query_scalar(UNLOGGED_COUNT)
        .fetch_one(pool)
        .await
        .ctx("counting orders without events")?;
    let sample: Vec<u64> = sqlx::query_scalar(UNLOGGED_SAMPLE_IDS)
        .bind(UNLOGGED_SAMPLE)
        .fetch_all(pool)
        .await
        .ctx("naming orders without events")?;
    Ok(HistoryAudit {
        violations,
        not_checkable: count(not_checkable)?,
        not_checkable_sample: sample
            .into_iter()
            .map(order_id)
            .collect::<Result<_, DbError>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn only_the_legal_transitions_may_follow_each_other() {
        use Kind::*;
        let all = [Created, Processing, Paid, Failed, Cancelled];
        let legal = [
            (Created, Processing),
            (Created, Cancelled),
            (Processing, Paid),
            (Processing, Failed),
        ];
        for a in all {
            for b in all {
                assert_eq!(a.may_precede(b), legal.contains(&(a, b)), "{a:?} → {b:?}");
            }
        }
    }
}
