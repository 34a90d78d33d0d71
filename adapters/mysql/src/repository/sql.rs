//! SQL. Static text wherever possible; the few statements with a variable number of rows
//! are built from these pieces and placeholders only (never from data), see
//! [`repeat_sql`].
//!
//! Kept apart from the code that runs the statements so the whole of what the adapter
//! asks of the server can be reviewed in one place (and against the migrations' indexes).

use crate::time::ms;

/// The columns of an order row, instants as epoch milliseconds (see
/// [`OrderRow`](super::rows::OrderRow)).
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

pub(super) const ORDER_BY_ID: &str = concat!(order_select!(), " WHERE id = ?");
pub(super) const ORDER_BY_KEY: &str = concat!(
    order_select!(),
    " WHERE user_id = ? AND idempotency_key = ?"
);
/// A locking read: sees the latest committed row (not the transaction's snapshot) and
/// keeps it from changing until commit. `LOCK IN SHARE MODE` because MariaDB 10.11 has
/// no `FOR SHARE`.
pub(super) const ORDER_BY_KEY_LOCKED: &str = concat!(
    order_select!(),
    " WHERE user_id = ? AND idempotency_key = ? LOCK IN SHARE MODE"
);
/// `ORDERS_WITH_ITEMS_HEAD` + `?, …` + `ORDERS_WITH_ITEMS_TAIL`: the orders with these
/// ids and their lines in one read, one row per line (ordered by order, then product),
/// the line's columns prefixed `item_` (NULL for an order without lines, which the
/// domain refuses).
pub(super) const ORDERS_WITH_ITEMS_HEAD: &str = concat!(
    "SELECT o.*, i.product_id AS item_product_id, i.quantity AS item_quantity, ",
    "i.unit_price AS item_unit_price FROM (",
    order_select!(),
    " WHERE id IN ("
);
pub(super) const ORDERS_WITH_ITEMS_TAIL: &str =
    ")) o LEFT JOIN order_items i ON i.order_id = o.id ORDER BY o.id, i.product_id";
/// `ITEMS_OF_ORDERS_HEAD` + `?, …` + `ITEMS_OF_ORDERS_TAIL`: the lines of these orders.
pub(super) const ITEMS_OF_ORDERS_HEAD: &str =
    "SELECT order_id, product_id, quantity, unit_price FROM order_items WHERE order_id IN (";
pub(super) const ITEMS_OF_ORDERS_TAIL: &str = ") ORDER BY order_id, product_id";
pub(super) const ITEMS_OF_ORDER: &str = "SELECT order_id, product_id, quantity, unit_price \
     FROM order_items WHERE order_id = ? ORDER BY product_id";
pub(super) const ITEMS_OF_ORDER_LOCKED: &str = "SELECT order_id, product_id, quantity, unit_price \
     FROM order_items WHERE order_id = ? ORDER BY product_id LOCK IN SHARE MODE";

/// The replay pre-check: does the user exist, and does it already own the key? One row
/// per existing user (the order columns NULL when the key is free), none otherwise.
pub(super) const USER_AND_KEY: &str = "SELECT u.id AS user_id, o.id AS order_id, \
     o.request_fingerprint AS fingerprint \
     FROM users u LEFT JOIN orders o ON o.user_id = u.id AND o.idempotency_key = ? \
     WHERE u.id = ?";

pub(super) const INSERT_ORDER: &str = "INSERT INTO orders (user_id, status, total_amount, \
     idempotency_key, request_fingerprint, attempts, created_at, updated_at) \
     VALUES (?, 'PENDING', ?, ?, ?, 0, ?, ?)";

// Served by `orders_user_created` / `orders_user_status_created` (checked by EXPLAIN in
// `explain_reads` and the crate's tests).
pub(super) const LIST_BY_USER: &str = concat!(
    order_select!(),
    " WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
);
pub(super) const LIST_BY_USER_STATUS: &str = concat!(
    order_select!(),
    " WHERE user_id = ? AND status = ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
);
pub(super) const COUNT_BY_USER: &str = "SELECT COUNT(*) FROM orders WHERE user_id = ?";
pub(super) const COUNT_BY_USER_STATUS: &str =
    "SELECT COUNT(*) FROM orders WHERE user_id = ? AND status = ?";

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
pub(super) const CLAIM_SCAN: &str = claim_scan!();
/// The scan as `claim_stranded` runs it: locking what it returns, skipping rows another
/// transaction holds (a concurrent reconciler's claim, a worker's transition).
pub(super) const CLAIM_SCAN_LOCKED: &str = concat!(claim_scan!(), " FOR UPDATE SKIP LOCKED");
/// `claim_stranded`'s transaction runs at READ COMMITTED: no gap locks (new orders are
/// inserted into the index while it runs), and the locks on rows the WHERE clause
/// rejects — PROCESSING orders with a live lease — are released at once. One round trip:
/// the characteristic applies to the transaction the `BEGIN` then starts, and only to it.
pub(super) const BEGIN_READ_COMMITTED: &str =
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN";

/// The most values bound to one `IN (…)` list: far below the protocol's 65 535
/// placeholders per statement, whatever else the statement binds.
pub(super) const IN_LIST_CHUNK: usize = 10_000;

// The compare-and-set statements, one per `StatusChange`, each the SQL twin of the
// matching arm of `Order::apply`: the WHERE clause is `apply`'s precondition (status and
// fence), the SET clause its effect. `attempts` saturates like `u32::saturating_add`.
pub(super) const CAS_START: &str = "UPDATE orders SET status = 'PROCESSING', lease_token = ?, \
     lease_until = ?, attempts = LEAST(attempts + 1, 4294967295), updated_at = ? \
     WHERE id = ? AND status = 'PENDING'";
pub(super) const CAS_TAKE_OVER: &str = "UPDATE orders SET lease_token = ?, lease_until = ?, \
     attempts = LEAST(attempts + 1, 4294967295), updated_at = ? \
     WHERE id = ? AND status = 'PROCESSING' AND lease_token = ? AND lease_until <= ?";
pub(super) const CAS_PAY: &str = "UPDATE orders SET status = 'PAID', lease_token = NULL, \
     lease_until = NULL, updated_at = ? \
     WHERE id = ? AND status = 'PROCESSING' AND lease_token = ?";
pub(super) const CAS_FAIL: &str = "UPDATE orders SET status = 'FAILED', lease_token = NULL, \
     lease_until = NULL, failure_reason = ?, updated_at = ? \
     WHERE id = ? AND status = 'PROCESSING' AND lease_token = ?";
pub(super) const CAS_CANCEL: &str = "UPDATE orders SET status = 'CANCELLED', cancelled_at = ?, \
     updated_at = ? WHERE id = ? AND status = 'PENDING'";
/// The token stays (the table's CHECK wants one while PROCESSING); the lease expires at
/// `now` unless it already had — `LEAST`, as `until.min(now)` in `Order::apply`.
pub(super) const CAS_RELEASE: &str = "UPDATE orders SET lease_until = LEAST(lease_until, ?), \
     updated_at = ? WHERE id = ? AND status = 'PROCESSING' AND lease_token = ?";

pub(super) const PRODUCTS: &str = "SELECT id, name, price, stock FROM products ORDER BY id";
pub(super) const PRODUCT_BY_ID: &str = "SELECT id, name, price, stock FROM products WHERE id = ?";

/// Units of one product held by its PENDING and PROCESSING orders (what Cancel and Fail
/// would put back), as BIGINT UNSIGNED.
pub(super) const RESERVED_UNITS: &str = "SELECT CAST(COALESCE(SUM(i.quantity), 0) AS UNSIGNED) \
     FROM order_items i JOIN orders o ON o.id = i.order_id \
     WHERE i.product_id = ? AND o.status IN ('PENDING', 'PROCESSING')";

/// `head` followed by `n` copies of `item` separated by `sep`, then `tail`.
///
/// Only ever called with static SQL fragments and placeholders, so the result is as safe
/// as a literal: that is what the `AssertSqlSafe` around each use asserts.
pub(super) fn repeat_sql(head: &str, item: &str, sep: &str, n: usize, tail: &str) -> String {
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

/// Bumps a user's event counter and hands the new value back through the OK packet's
/// last-insert id (see migration 0007); matches no row for an unknown user.
pub(super) const BUMP_EVENT_SEQ: &str =
    "UPDATE users SET event_seq = LAST_INSERT_ID(event_seq + 1) WHERE id = ?";
/// Gives back a bump whose change did not happen (a placement refused after it).
pub(super) const UNBUMP_EVENT_SEQ: &str =
    "UPDATE users SET event_seq = event_seq - 1 WHERE id = ? AND event_seq > 0";
pub(super) const INSERT_EVENT: &str = "INSERT INTO order_events \
     (user_id, seq, order_id, kind, total_amount, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?)";
/// `SELECT` of an `order_events` row as `events::EventRow` reads it, up to `FROM`.
macro_rules! event_select {
    () => {
        concat!(
            "SELECT user_id, seq, order_id, kind, total_amount, reason, ",
            ms!("at"),
            " AS at_ms FROM order_events"
        )
    };
}
pub(super) const EVENTS_AFTER: &str = concat!(
    event_select!(),
    " WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?"
);
/// `START_EVENT_OF` + order id: the order's `order.processing` event (over
/// `order_events_order`).
pub(super) const START_EVENT_OF: &str = concat!(
    event_select!(),
    " WHERE kind = 'order.processing' AND order_id = "
);
pub(super) const LAST_EVENT_SEQ: &str = "SELECT event_seq FROM users WHERE id = ?";
/// Oldest first over `order_events_at`, at most the limit per statement.
pub(super) const PRUNE_EVENTS: &str = "DELETE FROM order_events WHERE at < ? ORDER BY at LIMIT ?";
/// Moves each user's event counter past its new events: `ADD_TO_SEQS_HEAD` +
/// ` WHEN user THEN k`… + `CASE_END_IN` + users + `)`.
pub(super) const ADD_TO_SEQS_HEAD: &str = "UPDATE users SET event_seq = event_seq + CASE id";
/// Events whose seqs come from their users' counters: `INSERT_EVENTS_BY_COUNTER_HEAD` +
/// rows `SELECT user AS u, back AS b, order AS o, kind AS k, total AS t, reason AS w,
/// instant AS a` joined by `UNION_ALL` + `INSERT_EVENTS_BY_COUNTER_TAIL`; see
/// `events::log_changes_in`.
pub(super) const INSERT_EVENTS_BY_COUNTER_HEAD: &str = "INSERT INTO order_events \
     (user_id, seq, order_id, kind, total_amount, reason, at) \
     SELECT r.u, u.event_seq - r.b, r.o, r.k, r.t, r.w, r.a FROM (";
pub(super) const INSERT_EVENTS_BY_COUNTER_TAIL: &str = ") AS r LEFT JOIN users u ON u.id = r.u";
/// The users' counters: `USER_SEQS_HEAD` + users + `)`.
pub(super) const USER_SEQS_HEAD: &str = "SELECT id, event_seq FROM users WHERE id IN (";

// -- batched transitions ------------------------------------------------------------------
// The compare-and-sets of many orders in one statement each: the same WHERE clauses and
// SET effects as `CAS_START`, `CAS_PAY` and `CAS_FAIL`, with the per-order values
// (lease token, lease expiry, instant, reason) chosen by `CASE id WHEN ? THEN ? … END`.

/// `START_MANY_HEAD` + (`CASE_WHEN` × n) + `START_MANY_UNTIL` + (`CASE_WHEN` × n) +
/// `START_MANY_AT` + (`CASE_WHEN` × n) + `START_MANY_WHERE` + `?, …` + `)`.
pub(super) const START_MANY_HEAD: &str =
    "UPDATE orders SET status = 'PROCESSING', lease_token = CASE id";
pub(super) const START_MANY_UNTIL: &str = " END, lease_until = CASE id";
pub(super) const START_MANY_AT: &str =
    " END, attempts = LEAST(attempts + 1, 4294967295), updated_at = CASE id";
pub(super) const START_MANY_WHERE: &str = " END WHERE status = 'PENDING' AND id IN (";
/// `COMPLETE_MANY_HEAD` + (`CASE_WHEN` × n, statuses) + `COMPLETE_MANY_REASON` +
/// (`REASON_WHEN` × n, reasons; NULL keeps the column, as Pay does) +
/// `COMPLETE_MANY_AT` + (`CASE_WHEN` × n, instants) + `COMPLETE_MANY_WHERE` +
/// (`CASE_WHEN` × n, tokens) + `COMPLETE_MANY_IN` + `?, …` + `)`: the Pays and Fails of
/// a batch in one statement, each order to its own status.
pub(super) const COMPLETE_MANY_HEAD: &str = "UPDATE orders SET status = CASE id";
pub(super) const COMPLETE_MANY_REASON: &str =
    " END, lease_token = NULL, lease_until = NULL, failure_reason = CASE id";
pub(super) const COMPLETE_MANY_AT: &str = " END, updated_at = CASE id";
/// The WHERE clause is evaluated before the SET clause: it sees the lease token as it
/// was.
pub(super) const COMPLETE_MANY_WHERE: &str =
    " END WHERE status = 'PROCESSING' AND lease_token = CASE id";
pub(super) const COMPLETE_MANY_IN: &str = " END AND id IN (";
/// `RETURN_STOCK_HEAD` + `?, …` + `RETURN_STOCK_TAIL`: put back the quantities of these
/// orders' stored lines, summed per product (a multi-table UPDATE changes each product
/// row once, so the sum is taken first).
pub(super) const RETURN_STOCK_HEAD: &str = "UPDATE products p JOIN (SELECT product_id, \
     SUM(quantity) AS q FROM order_items WHERE order_id IN (";
pub(super) const RETURN_STOCK_TAIL: &str =
    ") GROUP BY product_id) r ON r.product_id = p.id SET p.stock = p.stock + r.q";

// -- placing ------------------------------------------------------------------------------
// The pieces of the statements with one row or one placeholder per product, draft or
// user; assembled with `repeat_sql`.

/// `LOCK_PRODUCTS_HEAD` + `?, ?, …` + `LOCK_PRODUCTS_TAIL`: lock product rows in
/// ascending id order, reading price and stock under the lock.
pub(super) const LOCK_PRODUCTS_HEAD: &str =
    "SELECT id, name, price, stock FROM products WHERE id IN (";
pub(super) const LOCK_PRODUCTS_TAIL: &str = ") ORDER BY id FOR UPDATE";

/// One order line per row (order id, product, quantity, unit price).
pub(super) const INSERT_ITEMS_HEAD: &str =
    "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES ";
pub(super) const INSERT_ITEMS_ROW: &str = "(?, ?, ?, ?)";

/// The orders holding some (user, key) pairs: `KEYS_HEAD` + `KEYS_PAIR` joined by
/// `KEYS_OR` + `)`. An OR of equalities on the unique index's two columns, which both
/// servers turn into one range per pair on `orders_user_key_unique` (a row-constructor
/// `IN` is not range-optimised by every version we support).
pub(super) const KEYS_HEAD: &str = "SELECT id, user_id, idempotency_key FROM orders WHERE (";
pub(super) const KEYS_PAIR: &str = "(user_id = ? AND idempotency_key = ?)";
pub(super) const KEYS_OR: &str = " OR ";
pub(super) const KEYS_TAIL: &str = ")";
/// The same as a locking read: the latest committed rows, not the transaction's
/// snapshot (MariaDB 10.11 has no `FOR SHARE`).
pub(super) const KEYS_TAIL_LOCKED: &str = ") LOCK IN SHARE MODE";

/// Lock the users of a batch, ascending, reading their event counters under the lock.
pub(super) const LOCK_USERS_HEAD: &str = "SELECT id, event_seq FROM users WHERE id IN (";
pub(super) const LOCK_USERS_TAIL: &str = ") ORDER BY id FOR UPDATE";

/// Many orders in one statement, written into a script (`script.rs`): this, then one
/// `(user, 'PENDING', total, key, fingerprint, 0, instant, instant)` per order.
pub(super) const INSERT_ORDERS_VALUES: &str = "INSERT INTO orders (user_id, status, \
     total_amount, idempotency_key, request_fingerprint, attempts, created_at, updated_at) \
     VALUES ";
/// Appended to the orders insert on MariaDB (10.5+): the new rows' ids come back with
/// the insert, keyed by (user, key) as [`KEYS_HEAD`] reads them.
pub(super) const INSERT_ORDERS_RETURNING: &str = " RETURNING id, user_id, idempotency_key";
/// The name of the orders' unique (user, key) index, as a duplicate-key error names it.
pub(super) const ORDERS_KEY_INDEX: &str = "orders_user_key_unique";

/// Many lines whose orders' ids are known, written into a script: this, then one
/// `(order id, product, quantity, unit price)` per line.
pub(super) const INSERT_LINES_VALUES: &str =
    "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES ";
/// Many `order.created` events whose orders' ids are known, written into a script: this,
/// then one `(user, seq, order id, 'order.created', total, NULL, instant)` per event.
pub(super) const INSERT_CREATED_EVENTS_VALUES: &str = "INSERT INTO order_events \
     (user_id, seq, order_id, kind, total_amount, reason, at) VALUES ";
/// The lines of orders inserted earlier in the same script: this, then rows
/// `SELECT user AS u, key AS k, product AS p, quantity AS q, unit price AS x` joined by
/// `UNION_ALL`, then [`JOINED_TAIL`], which finds each line's order by its (user, key)
/// on the unique index.
pub(super) const INSERT_LINES_JOINED_HEAD: &str = "INSERT INTO order_items (order_id, \
     product_id, quantity, unit_price) SELECT o.id, r.p, r.q, r.x FROM (";
/// The `order.created` events of orders inserted earlier in the same script: this, then
/// rows `SELECT user AS u, key AS k, seq AS s, total AS t, instant AS a` joined by
/// `UNION_ALL`, then [`JOINED_TAIL`].
pub(super) const INSERT_CREATED_EVENTS_JOINED_HEAD: &str = "INSERT INTO order_events \
     (user_id, seq, order_id, kind, total_amount, reason, at) \
     SELECT r.u, r.s, o.id, 'order.created', r.t, NULL, r.a FROM (";
/// Ends the joined inserts: the derived table's rows drive the join (`STRAIGHT_JOIN`),
/// each one finding its order with one lookup of the unique (user, key) index.
pub(super) const JOINED_TAIL: &str = ") AS r STRAIGHT_JOIN orders o \
     ON o.user_id = r.u AND o.idempotency_key = r.k";

pub(super) const UNION_ALL: &str = " UNION ALL ";

/// Set each user's event counter to the batch's last seq for it: `SET_SEQS_HEAD` +
/// `CASE_WHEN`… + `CASE_END_IN` + `?, …` + `)`.
pub(super) const SET_SEQS_HEAD: &str = "UPDATE users SET event_seq = CASE id";
/// Take stock from many products: `TAKE_STOCK_HEAD` + `CASE_WHEN`… + `CASE_END_IN` +
/// `?, …` + `)`.
pub(super) const TAKE_STOCK_HEAD: &str = "UPDATE products SET stock = stock - CASE id";
pub(super) const CASE_END_IN: &str = " END WHERE id IN (";

/// How many rows (or list items) a statement of `n` rows of `width` placeholders is
/// written for: `n` rounded up to a power of 4, unless that would bind more than the
/// protocol's 65 535 placeholders.
///
/// Why: sqlx prepares every statement text once per connection and keeps it in a cache
/// of 100; a batch statement written for its exact row count has a text per count, so
/// varied batch sizes overflow the cache, and every eviction sends a `COM_STMT_CLOSE`
/// the server never answers — with Nagle on the client socket (sqlx does not set
/// `TCP_NODELAY`), the next command then waits for the server's delayed ACK, tens to
/// hundreds of milliseconds, while the batch holds the hot row. Five sizes per statement
/// (1, 4, 16, 64, 256 for a batch of up to 256) keep every text cached. Lists are padded
/// by repeating their last item (a no-op in `IN`, `OR` and `CASE`), inserts by rows of
/// NULLs that their `WHERE` drops.
pub(super) fn padded(n: usize, width: usize) -> usize {
    let mut rows = 1;
    while rows < n {
        rows *= 4;
    }
    if rows * width.max(1) <= usize::from(u16::MAX) {
        rows
    } else {
        n
    }
}

/// `items`, then its last item repeated up to `rows` in all (see [`padded`]).
pub(super) fn pad<T>(items: &[T], rows: usize) -> impl Iterator<Item = &T> {
    let extra = rows.saturating_sub(items.len());
    items
        .iter()
        .chain(items.last().into_iter().cycle().take(extra))
}

#[cfg(test)]
mod tests {
    use super::padded;

    #[test]
    fn statements_are_written_for_powers_of_four_within_the_placeholder_limit() {
        let sizes: Vec<usize> = [0, 1, 2, 4, 5, 16, 17, 64, 65, 256]
            .iter()
            .map(|n| padded(*n, 7))
            .collect();
        assert_eq!(sizes, [1, 1, 4, 4, 16, 16, 64, 64, 256, 256]);
        // 256 drafts of 50 lines: 16 384 rows of 4 would bind 65 536 values, one too many.
        assert_eq!(padded(12_800, 4), 12_800);
        assert_eq!(padded(10_000, 1), 16_384);
    }
}
