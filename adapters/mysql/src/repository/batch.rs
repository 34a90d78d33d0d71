//! The multi-row batch path: many drafts placed in ONE transaction with a constant number
//! of statements, whatever the number of drafts — so a hot product's row is locked once
//! per batch instead of once per order.
//!
//! The statements, in order (each one multi-row; `…` is one row or placeholder per draft,
//! product or user):
//!
//! 1. only on a second attempt (see *Replays* below): before the transaction, one plain
//!    read of the orders already holding any of the drafts' (user, key) pairs (each one
//!    found is then loaded with its lines);
//! 2. `BEGIN`;
//! 3. `SELECT … FROM products WHERE id IN (…) ORDER BY id FOR UPDATE` — prices and stock
//!    read under the row locks, ascending;
//! 4. `SELECT id, event_seq FROM users WHERE id IN (…) ORDER BY id FOR UPDATE` — unknown
//!    users are absent, the others' counters are held until commit;
//! 5. the decision, in memory ([`allocate`]); if some draft is refused (short, an
//!    unknown product, a total too large), one locking read of the refused drafts' keys,
//!    so that a key some order already holds — a replay, or a concurrent twin that took
//!    the stock and committed while this batch waited for the rows — is answered as the
//!    general path answers it (replay or key reused), not as a refusal;
//! 6. `INSERT INTO orders … SELECT … FROM (SELECT ?, … UNION ALL …) RETURNING id,
//!    user_id, idempotency_key` on MariaDB; on MySQL, which has no `RETURNING`, the plain
//!    insert and then one read of the new ids by (user, key) (a multi-row insert's ids
//!    need not be consecutive with `innodb_autoinc_lock_mode = 2`, so they are never
//!    guessed);
//! 7. `INSERT INTO order_items … SELECT …` likewise;
//! 8. `UPDATE products SET stock = stock - CASE id … END WHERE id IN (…)`;
//! 9. `UPDATE users SET event_seq = CASE id … END WHERE id IN (…)`;
//! 10. `INSERT INTO order_events … SELECT …` likewise;
//! 11. `COMMIT` (or `ROLLBACK` when nothing is to be placed).
//!
//! Nine statements for a batch of fresh drafts on MariaDB (ten on MySQL, one more with a
//! refusal), where placing the drafts one by one costs eight each. Lock order is the one
//! every other writer of the adapter follows: product rows (ascending), then user rows. Every statement is
//! written for a row count rounded up to a power of 4 ([`padded`]: lists repeat their
//! last item, inserts select from a derived table whose padding rows are NULL and
//! filtered out), so that all batch sizes share a few statement texts and sqlx's
//! per-connection statement cache never has to evict one in the middle of a batch.
//!
//! Everything is decided before the first write, so a batch either writes what it decided
//! or nothing: a duplicate key on the orders insert comes back as [`BatchAttempt::Raced`]
//! with the transaction rolled back.
//!
//! **Replays.** Fresh keys are the common case, so the first attempt reads no key before
//! the transaction ([`Precheck::Skip`]): the orders' unique (user, key) index is the
//! check. A draft whose key an order already holds and that would be placed hits that
//! index; the batch is then rolled back and attempted once more with the pre-read
//! ([`place_batch`](MySqlOrderRepository::place_batch)), which answers it as a replay
//! or a reused key. Only a key committed by a concurrent twin after that pre-read
//! makes the second attempt `Raced` too; the caller then places the drafts another way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use order_core::domain::OrderDraft;
use order_core::ports::{OrderEvent, PlaceOutcome, RepositoryError};
use order_core::{IdempotencyKey, Money, Order, ProductId, Timestamp, UserId};
use sqlx::mysql::MySqlRow;
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, Row};

use super::MySqlOrderRepository;
use super::allocate::{Allocation, Verdict, allocate, replay};
use super::events;
use super::place::lock_product_rows;
use super::rows::{Read, load_order, load_order_by_key, order_id};
use super::sql::{
    CASE_END_IN, CASE_WHEN, INSERT_EVENTS_HEAD, INSERT_EVENTS_ROW, INSERT_EVENTS_TAIL,
    INSERT_LINES_HEAD, INSERT_LINES_ROW, INSERT_LINES_TAIL, INSERT_ORDERS_HEAD,
    INSERT_ORDERS_RETURNING, INSERT_ORDERS_ROW, INSERT_ORDERS_TAIL, KEYS_HEAD, KEYS_OR, KEYS_PAIR,
    KEYS_TAIL, KEYS_TAIL_LOCKED, LOCK_USERS_HEAD, LOCK_USERS_TAIL, SET_SEQS_HEAD, TAKE_STOCK_HEAD,
    UNION_ALL, pad, padded, repeat_sql,
};
use crate::error::{Context, DbError, code};
use crate::time::to_sql;

/// The most drafts one batch statement set takes. The widest statement, the lines
/// insert, binds 4 values per line: 256 drafts of [`OrderDraft::MAX_LINES`] lines bind
/// 51 200, under the protocol's 65 535 placeholders.
pub(super) const MAX_BATCH_DRAFTS: usize = 256;

/// One draft of a batch, with the instant it was placed at (coalesced drafts each keep
/// their caller's).
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry<'a> {
    pub(super) draft: &'a OrderDraft,
    pub(super) now: Timestamp,
}

/// What one attempt of the batch path came to.
#[derive(Debug)]
pub(super) enum BatchAttempt {
    /// Every draft's outcome, in order; written (or, with nothing to place, not).
    Done(Vec<PlaceOutcome>),
    /// The orders insert hit the unique (user, key) index — a key held before the
    /// batch when the attempt skipped the pre-read, or one a concurrent twin committed
    /// after it — and the transaction was rolled back. Nothing was written.
    Raced,
}

/// Whether an attempt reads the drafts' keys before its transaction (step 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precheck {
    /// No pre-read: the unique index catches a held key (the first attempt).
    Skip,
    /// The pre-read: held keys are answered as replays or reused keys.
    Read,
}

/// What the transaction decided to do at its end.
enum Finish {
    Commit(Vec<PlaceOutcome>),
    Rollback(Vec<PlaceOutcome>),
    Raced,
}

impl MySqlOrderRepository {
    /// Places `entries` through the multi-row path: first without the key pre-read,
    /// then — only if that attempt hit a held key — once more with it (see *Replays* in
    /// the module docs). Lock conflicts retry each attempt (`retrying`).
    pub(super) async fn place_batch(
        &self,
        op: &'static str,
        entries: &[Entry<'_>],
    ) -> Result<BatchAttempt, RepositoryError> {
        match self
            .retrying(op, || self.place_batch_once(entries, Precheck::Skip))
            .await?
        {
            BatchAttempt::Raced => {
                self.retrying(op, || self.place_batch_once(entries, Precheck::Read))
                    .await
            }
            done => Ok(done),
        }
    }

    /// One attempt at placing `entries` (at most [`MAX_BATCH_DRAFTS`]) through the
    /// multi-row path described above; the transaction is rolled back explicitly on any
    /// error, so that a retry starts clean.
    pub(super) async fn place_batch_once(
        &self,
        entries: &[Entry<'_>],
        precheck: Precheck,
    ) -> Result<BatchAttempt, DbError> {
        if entries.len() > MAX_BATCH_DRAFTS {
            return Err(DbError::data(format!(
                "a batch of {} drafts; at most {MAX_BATCH_DRAFTS} fit its statements",
                entries.len()
            )));
        }
        let mut conn = self.acquire().await?;
        let existing = match precheck {
            Precheck::Skip => HashMap::new(),
            Precheck::Read => existing_orders(&mut conn, entries).await?,
        };
        let mut tx = conn.begin().await.ctx("starting a transaction")?;
        match batch_in_transaction(&mut tx, entries, &existing, &self.returning).await {
            Ok(Finish::Commit(outcomes)) => {
                tx.commit().await.ctx("committing a batch of orders")?;
                Ok(BatchAttempt::Done(outcomes))
            }
            Ok(Finish::Rollback(outcomes)) => {
                tx.rollback().await.ctx("rolling back")?;
                Ok(BatchAttempt::Done(outcomes))
            }
            Ok(Finish::Raced) => {
                tx.rollback().await.ctx("rolling back a raced batch")?;
                Ok(BatchAttempt::Raced)
            }
            Err(e) => {
                // Explicitly, and before any retry: after a lock-wait timeout only the
                // statement was rolled back, and the locks must go now.
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed batch");
                }
                Err(e)
            }
        }
    }
}

/// The distinct (user, key) pairs of `entries`, in first-seen order.
fn distinct_keys<'a>(
    entries: impl Iterator<Item = &'a OrderDraft>,
) -> Vec<(UserId, &'a IdempotencyKey)> {
    let mut seen = BTreeSet::new();
    entries
        .map(|d| (d.user(), d.idempotency_key()))
        .filter(|pair| seen.insert(*pair))
        .collect()
}

/// The ids of the orders holding any of `keys`: one statement, a plain read or a shared
/// locking read.
async fn order_ids_by_key(
    conn: &mut MySqlConnection,
    keys: &[(UserId, &IdempotencyKey)],
    read: Read,
) -> Result<HashMap<(u64, String), u64>, DbError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let tail = match read {
        Read::Plain => KEYS_TAIL,
        Read::Shared => KEYS_TAIL_LOCKED,
    };
    let rows = padded(keys.len(), 2);
    let sql = repeat_sql(KEYS_HEAD, KEYS_PAIR, KEYS_OR, rows, tail);
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (user, key) in pad(keys, rows) {
        query = query.bind(user.get()).bind(key.as_str());
    }
    let rows = query
        .fetch_all(&mut *conn)
        .await
        .ctx("reading orders by idempotency key")?;
    ids_by_key(rows)
}

/// `(user, key) → id` from rows of `id, user_id, idempotency_key`.
fn ids_by_key(rows: Vec<MySqlRow>) -> Result<HashMap<(u64, String), u64>, DbError> {
    let mut ids = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: u64 = row.try_get("id").ctx("reading an order id")?;
        let user: u64 = row.try_get("user_id").ctx("reading an order's user")?;
        let key: String = row
            .try_get("idempotency_key")
            .ctx("reading an order's key")?;
        ids.insert((user, key), id);
    }
    Ok(ids)
}

/// What the orders insert of a batch came to.
enum Inserted {
    /// Written, with the new ids by (user, key) (`RETURNING`).
    Ids(HashMap<(u64, String), u64>),
    /// Written; the ids are to be read back.
    Written,
    /// Nothing written: a key is held (the unique index refused a row).
    HeldKey,
}

/// The orders of `rows` (draft, total, instant) in one statement — ending in
/// `RETURNING` while `returning` holds (MariaDB 10.5+). The first syntax error (MySQL)
/// clears it for good, shared by the repository's clones; it leaves the transaction as
/// it was (only the statement failed, at prepare), so the plain insert follows at once.
async fn insert_orders(
    conn: &mut MySqlConnection,
    rows: &[(&OrderDraft, Money, String)],
    returning: &AtomicBool,
) -> Result<Inserted, DbError> {
    let written = padded(rows.len(), 5);
    let sql = || {
        repeat_sql(
            INSERT_ORDERS_HEAD,
            INSERT_ORDERS_ROW,
            UNION_ALL,
            written,
            INSERT_ORDERS_TAIL,
        )
    };
    let bind = |sql: String| {
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (draft, total, at) in rows {
            query = query
                .bind(draft.user().get())
                .bind(total.as_decimal())
                .bind(draft.idempotency_key().as_str())
                .bind(draft.fingerprint().raw())
                .bind(at.as_str());
        }
        for _ in rows.len()..written {
            query = query
                .bind(None::<u64>)
                .bind(None::<rust_decimal::Decimal>)
                .bind(None::<&str>)
                .bind(None::<u64>)
                .bind(None::<&str>);
        }
        query
    };
    let failed = |e: sqlx::Error| match crate::error::server_code(&e) {
        Some(code::DUPLICATE_KEY) => Ok(Inserted::HeldKey),
        _ => Err(DbError::Sql {
            context: "inserting a batch of orders",
            source: e,
        }),
    };
    if returning.load(Ordering::Relaxed) {
        let mut text = sql();
        text.push_str(INSERT_ORDERS_RETURNING);
        match bind(text).fetch_all(&mut *conn).await {
            Ok(rows) => return Ok(Inserted::Ids(ids_by_key(rows)?)),
            Err(e) if crate::error::server_code(&e) == Some(code::PARSE_ERROR) => {
                tracing::info!("the server has no INSERT … RETURNING: reading new order ids back");
                returning.store(false, Ordering::Relaxed);
            }
            Err(e) => return failed(e),
        }
    }
    match bind(sql()).execute(&mut *conn).await {
        Ok(_) => Ok(Inserted::Written),
        Err(e) => failed(e),
    }
}

/// The pre-check, outside the transaction: the orders that already hold a draft's key,
/// with their lines.
async fn existing_orders(
    conn: &mut MySqlConnection,
    entries: &[Entry<'_>],
) -> Result<HashMap<(UserId, IdempotencyKey), Order>, DbError> {
    let keys = distinct_keys(entries.iter().map(|e| e.draft));
    let ids = order_ids_by_key(conn, &keys, Read::Plain).await?;
    let mut existing = HashMap::with_capacity(ids.len());
    for id in ids.into_values() {
        // Orders are never deleted; should one vanish in between, placing the draft is
        // the honest answer (and the insert will tell if the key is still taken).
        if let Some(order) = load_order(conn, id).await? {
            existing.insert((order.user(), order.idempotency_key().clone()), order);
        }
    }
    Ok(existing)
}

/// Locks the users' rows, ascending, and returns their event counters; unknown users
/// are absent.
pub(super) async fn lock_users(
    conn: &mut MySqlConnection,
    users: &BTreeSet<UserId>,
) -> Result<BTreeMap<UserId, u64>, DbError> {
    if users.is_empty() {
        return Ok(BTreeMap::new());
    }
    let users: Vec<UserId> = users.iter().copied().collect();
    let rows = padded(users.len(), 1);
    let sql = repeat_sql(LOCK_USERS_HEAD, "?", ", ", rows, LOCK_USERS_TAIL);
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for user in pad(&users, rows) {
        query = query.bind(user.get());
    }
    let rows = query
        .fetch_all(&mut *conn)
        .await
        .ctx("locking the users' rows")?;
    let mut locked = BTreeMap::new();
    for row in rows {
        let id: u64 = row.try_get("id").ctx("reading a user id")?;
        let seq: u64 = row.try_get("event_seq").ctx("reading a user's event seq")?;
        let user = UserId::new(id).map_err(|e| DbError::data(format!("user id {id}: {e}")))?;
        locked.insert(user, seq);
    }
    Ok(locked)
}

/// The transactional part of [`MySqlOrderRepository::place_batch_once`].
async fn batch_in_transaction(
    conn: &mut MySqlConnection,
    entries: &[Entry<'_>],
    existing: &HashMap<(UserId, IdempotencyKey), Order>,
    returning: &AtomicBool,
) -> Result<Finish, DbError> {
    let drafts: Vec<&OrderDraft> = entries.iter().map(|e| e.draft).collect();
    // Drafts answered by the pre-check need no rows.
    let open: Vec<&OrderDraft> = drafts
        .iter()
        .copied()
        .filter(|d| !existing.contains_key(&(d.user(), d.idempotency_key().clone())))
        .collect();
    let product_ids: BTreeSet<ProductId> = open.iter().flat_map(|d| d.product_ids()).collect();
    let products = lock_product_rows(conn, &product_ids).await?;
    let user_ids: BTreeSet<UserId> = open.iter().map(|d| d.user()).collect();
    let users = lock_users(conn, &user_ids).await?;
    let Allocation {
        verdicts,
        taken,
        seqs,
    } = allocate(&drafts, existing, &products, &users);

    let mut outcomes: Vec<Option<PlaceOutcome>> = vec![None; entries.len()];
    let mut placing: Vec<(usize, Vec<Money>, u64)> = Vec::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    let mut refused: Vec<usize> = Vec::new();
    for (i, verdict) in verdicts.into_iter().enumerate() {
        match verdict {
            Verdict::Place { prices, seq } => placing.push((i, prices, seq)),
            Verdict::Repeat { first, .. } => repeats.push((i, first)),
            Verdict::Done(outcome) => {
                if matches!(
                    outcome,
                    PlaceOutcome::InsufficientStock { .. }
                        | PlaceOutcome::UnknownProduct(_)
                        | PlaceOutcome::TotalTooLarge
                ) {
                    refused.push(i);
                }
                outcomes[i] = Some(outcome);
            }
        }
    }
    answer_held_keys_of_refused_drafts(conn, &drafts, &refused, &mut outcomes).await?;
    if placing.is_empty() {
        return finish(outcomes).map(Finish::Rollback);
    }

    // The orders, with their ids (returned by the insert, or read back by (user, key)).
    let mut rows = Vec::with_capacity(placing.len());
    for (i, prices, _) in &placing {
        let draft = drafts[*i];
        let total = draft.total_at(prices).map_err(|e| {
            DbError::data(format!(
                "order for user {} with key {}: {e}",
                draft.user(),
                draft.idempotency_key()
            ))
        })?;
        rows.push((draft, total, to_sql(entries[*i].now)));
    }
    let ids = match insert_orders(conn, &rows, returning).await? {
        Inserted::Ids(ids) => ids,
        Inserted::Written => {
            let keys = distinct_keys(placing.iter().map(|(i, _, _)| drafts[*i]));
            order_ids_by_key(conn, &keys, Read::Plain).await?
        }
        Inserted::HeldKey => return Ok(Finish::Raced),
    };

    let mut placed: BTreeMap<usize, Order> = BTreeMap::new();
    let mut logged: Vec<OrderEvent> = Vec::with_capacity(placing.len());
    for (i, prices, seq) in &placing {
        let draft = drafts[*i];
        let raw = ids
            .get(&(
                draft.user().get(),
                draft.idempotency_key().as_str().to_owned(),
            ))
            .copied()
            .ok_or_else(|| {
                DbError::data(format!(
                    "order of user {} with key {} not found after its insert",
                    draft.user(),
                    draft.idempotency_key()
                ))
            })?;
        let id = order_id(raw)?;
        let order = Order::place(id, draft, prices, entries[*i].now)
            .map_err(|e| DbError::data(format!("order {id}: {e}")))?;
        let event = OrderEvent::logged(&order, *seq);
        outcomes[*i] = Some(PlaceOutcome::Placed(order.clone(), event.clone()));
        logged.push(event);
        placed.insert(*i, order);
    }
    for (i, first) in repeats {
        let order = placed.get(&first).cloned().ok_or_else(|| {
            DbError::data(format!(
                "draft {i} repeats draft {first}, which was not placed"
            ))
        })?;
        outcomes[i] = Some(replay(order, drafts[i]));
    }

    insert_lines(conn, placed.values()).await?;
    let taken: Vec<(u64, u64)> = taken
        .into_iter()
        .map(|(p, units)| (p.get(), units))
        .collect();
    update_by_case(conn, TAKE_STOCK_HEAD, &taken, "taking a batch's stock").await?;
    let seqs: Vec<(u64, u64)> = seqs.into_iter().map(|(u, seq)| (u.get(), seq)).collect();
    update_by_case(
        conn,
        SET_SEQS_HEAD,
        &seqs,
        "advancing the users' event seqs",
    )
    .await?;
    insert_events(conn, &logged).await?;
    finish(outcomes).map(Finish::Commit)
}

/// A refused draft (short, an unknown product, a total too large) whose key an order
/// holds by now — an earlier request's (the first attempt reads no key beforehand), or a
/// concurrent twin that took the stock and committed while this batch waited for the
/// rows — is answered as the general path answers it: a replay of that order, or a
/// reused key. One locking read for all of them (it sees the latest committed rows, not
/// a snapshot); each one found is loaded (rare).
async fn answer_held_keys_of_refused_drafts(
    conn: &mut MySqlConnection,
    drafts: &[&OrderDraft],
    refused: &[usize],
    outcomes: &mut [Option<PlaceOutcome>],
) -> Result<(), DbError> {
    if refused.is_empty() {
        return Ok(());
    }
    let keys = distinct_keys(refused.iter().map(|i| drafts[*i]));
    let held = order_ids_by_key(conn, &keys, Read::Shared).await?;
    if held.is_empty() {
        return Ok(());
    }
    for &i in refused {
        let draft = drafts[i];
        if !held.contains_key(&(
            draft.user().get(),
            draft.idempotency_key().as_str().to_owned(),
        )) {
            continue;
        }
        if let Some(twin) =
            load_order_by_key(conn, draft.user(), draft.idempotency_key(), Read::Shared).await?
        {
            outcomes[i] = Some(replay(twin, draft));
        }
    }
    Ok(())
}

/// Every line of `orders`: one statement.
async fn insert_lines<'a>(
    conn: &mut MySqlConnection,
    orders: impl Iterator<Item = &'a Order> + Clone,
) -> Result<(), DbError> {
    let n: usize = orders.clone().map(|o| o.lines().len()).sum();
    let written = padded(n, 4);
    let sql = repeat_sql(
        INSERT_LINES_HEAD,
        INSERT_LINES_ROW,
        UNION_ALL,
        written,
        INSERT_LINES_TAIL,
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for order in orders {
        for line in order.lines() {
            query = query
                .bind(order.id().get())
                .bind(line.product.get())
                .bind(line.quantity.get())
                .bind(line.unit_price.as_decimal());
        }
    }
    for _ in n..written {
        query = query
            .bind(None::<u64>)
            .bind(None::<u64>)
            .bind(None::<u32>)
            .bind(None::<rust_decimal::Decimal>);
    }
    query
        .execute(&mut *conn)
        .await
        .ctx("inserting a batch of order lines")?;
    Ok(())
}

/// `UPDATE … SET column = <head> CASE id WHEN ? THEN ? … END WHERE id IN (…)` for
/// `values` (id, value; ids ascending and unique, so InnoDB visits and locks the rows in
/// ascending order): one statement.
pub(super) async fn update_by_case(
    conn: &mut MySqlConnection,
    head: &str,
    values: &[(u64, u64)],
    context: &'static str,
) -> Result<(), DbError> {
    let rows = padded(values.len(), 3);
    let mut sql = repeat_sql(head, CASE_WHEN, "", rows, CASE_END_IN);
    sql.push_str(&repeat_sql("", "?", ", ", rows, ")"));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (id, value) in pad(values, rows) {
        query = query.bind(*id).bind(*value);
    }
    for (id, _) in pad(values, rows) {
        query = query.bind(*id);
    }
    query.execute(&mut *conn).await.ctx(context)?;
    Ok(())
}

/// Every placed order's `order.created` event: one statement.
pub(super) async fn insert_events(
    conn: &mut MySqlConnection,
    logged: &[OrderEvent],
) -> Result<(), DbError> {
    let written = padded(logged.len(), 7);
    let sql = repeat_sql(
        INSERT_EVENTS_HEAD,
        INSERT_EVENTS_ROW,
        UNION_ALL,
        written,
        INSERT_EVENTS_TAIL,
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for event in logged {
        query = query
            .bind(event.user.get())
            .bind(event.seq)
            .bind(event.order.get())
            .bind(event.kind.name())
            .bind(event.total.as_decimal())
            .bind(events::reason_of(event))
            .bind(to_sql(event.at));
    }
    for _ in logged.len()..written {
        query = query
            .bind(None::<u64>)
            .bind(None::<u64>)
            .bind(None::<u64>)
            .bind(None::<&str>)
            .bind(None::<rust_decimal::Decimal>)
            .bind(None::<&str>)
            .bind(None::<String>);
    }
    query
        .execute(&mut *conn)
        .await
        .ctx("appending a batch to the event log")?;
    Ok(())
}

/// Every draft's outcome, or a data error if one was left undecided (a bug).
fn finish(outcomes: Vec<Option<PlaceOutcome>>) -> Result<Vec<PlaceOutcome>, DbError> {
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| DbError::data("a draft was left without an outcome")))
        .collect()
}
