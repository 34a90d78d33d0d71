//! Placing orders: the one-draft fast path, the general (batch) path with its lock-free
//! pre-check, the product row locks, the order inserts, and the stock decrements.
//!
//! How the two paths keep the port's promises is documented on
//! [`MySqlOrderRepository`]; the functions here follow that description step by step.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use order_core::domain::{OrderDraft, OrderLine};
use order_core::ports::PlaceOutcome;
use order_core::{IdempotencyKey, Money, Order, ProductId, Quantity, Timestamp, UserId};
use sqlx::{AssertSqlSafe, MySqlConnection, Row};

use super::MySqlOrderRepository;
use super::allocate::{Decision, LockedProduct, decide, replay};
use super::events;
use super::rows::{ProductRow, Read, load_order, load_order_by_key, order_id};
use super::sql::{
    IN_LIST_CHUNK, INSERT_ITEMS_HEAD, INSERT_ITEMS_ROW, INSERT_ORDER, LOCK_PRODUCTS_HEAD,
    LOCK_PRODUCTS_TAIL, UNBUMP_EVENT_SEQ, USER_AND_KEY, padded, repeat_sql,
};
use crate::error::{Context, DbError, code};
use crate::time::to_sql;

impl MySqlOrderRepository {
    /// One attempt at placing `drafts` (the layout is described on the type): the
    /// lock-free pre-check, then one transaction, rolled back explicitly on any error so
    /// that a retry starts clean.
    pub(super) async fn place_once(
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
            Ok(Some(placed @ PlaceOutcome::Placed(..))) => {
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
                if let PlaceOutcome::Placed(order, _) = &outcome {
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
async fn lock_products(
    conn: &mut MySqlConnection,
    drafts: &[OrderDraft],
    pending: &[usize],
) -> Result<BTreeMap<ProductId, LockedProduct>, DbError> {
    let ids: BTreeSet<ProductId> = pending
        .iter()
        .flat_map(|&i| drafts[i].product_ids())
        .collect();
    lock_product_rows(conn, &ids).await
}

/// Locks the rows of `ids` with `SELECT … ORDER BY id FOR UPDATE` and returns them
/// with their price and stock. Products that do not exist are simply absent.
///
/// A batch may name any number of products (each draft up to
/// [`OrderDraft::MAX_LINES`]), more than the 65 535 placeholders one statement can bind:
/// the ids go in consecutive ascending chunks of [`IN_LIST_CHUNK`], one statement each,
/// so the rows are still locked in ascending id order across the whole batch.
pub(super) async fn lock_product_rows(
    conn: &mut MySqlConnection,
    ids: &BTreeSet<ProductId>,
) -> Result<BTreeMap<ProductId, LockedProduct>, DbError> {
    let ids: Vec<ProductId> = ids.iter().copied().collect();
    let mut locked = BTreeMap::new();
    for chunk in ids.chunks(IN_LIST_CHUNK) {
        // Written for a padded count (the last id repeated; see `padded`), so that
        // batches of varied sizes share a few statement texts.
        let rows = padded(chunk.len(), 1);
        let sql = repeat_sql(LOCK_PRODUCTS_HEAD, "?", ", ", rows, LOCK_PRODUCTS_TAIL);
        let mut query = sqlx::query_as::<_, ProductRow>(AssertSqlSafe(sql));
        for i in 0..rows {
            query = query.bind(chunk[i.min(chunk.len() - 1)].get());
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
    // The user's next event seq first: the bump locks the user's row before the order's
    // foreign-key check would take a shared lock on it, so two placements of one user
    // queue on the row instead of deadlocking on a shared-to-exclusive upgrade. An
    // unknown user matches no row.
    let Some(seq) = events::next_seq(conn, draft.user()).await? else {
        return Ok(PlaceOutcome::UnknownUser(draft.user()));
    };
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
            // No order, so no event: give the seq back (the rest of the transaction may
            // still commit other drafts, and the log must not show a gap).
            sqlx::query(UNBUMP_EVENT_SEQ)
                .bind(draft.user().get())
                .execute(&mut *conn)
                .await
                .ctx("giving back an unused event seq")?;
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

    let sql = repeat_sql(INSERT_ITEMS_HEAD, INSERT_ITEMS_ROW, ", ", lines.len(), "");
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
    let event = events::append(conn, &order, seq).await?;
    Ok(PlaceOutcome::Placed(order, event))
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
pub(super) enum Adjust {
    /// Reserve units for a new order.
    Take,
    /// Put a cancelled or failed order's units back.
    Return,
}

/// One `UPDATE` for all `deltas` (ascending product ids, unique). With `WHERE id IN`
/// on the primary key InnoDB visits, and locks, the rows in ascending id order.
pub(super) async fn adjust_stock(
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
