//! The multi-row batch path: many drafts placed in ONE transaction with a constant number
//! of statements, whatever the number of drafts — so a hot product's row is locked once
//! per batch instead of once per order.
//!
//! The statements, in order (each one multi-row; `…` is one row or value per draft,
//! product or user), sent as three scripts (`script.rs`: values written in as numbers
//! and hex literals) — three round trips whatever the number of drafts:
//!
//! 1. only on a second attempt (see *Replays* below): before the transaction, one plain
//!    read of the orders already holding any of the drafts' (user, key) pairs (each one
//!    found is then loaded with its lines);
//! 2. first script: `BEGIN`;
//!    `SELECT … FROM products WHERE id IN (…) ORDER BY id FOR UPDATE` — prices and stock
//!    read under the row locks, ascending;
//!    `SELECT id, event_seq FROM users WHERE id IN (…) ORDER BY id FOR UPDATE` — unknown
//!    users are absent, the others' counters are held until commit;
//! 3. the decision, in memory ([`allocate`]); if some draft is refused (short, an
//!    unknown product, a total too large), one locking read of the refused drafts' keys,
//!    so that a key some order already holds — a replay, or a concurrent twin that took
//!    the stock and committed while this batch waited for the rows — is answered as the
//!    general path answers it (replay or key reused), not as a refusal;
//! 4. second script (MariaDB): `INSERT INTO orders … VALUES … RETURNING id, user_id,
//!    idempotency_key`;
//! 5. third script: `INSERT INTO order_items … VALUES …` and `INSERT INTO order_events
//!    … VALUES …` with the new ids written in, `UPDATE products SET stock = stock - CASE
//!    id … END WHERE id IN (…)`, `UPDATE users SET event_seq = CASE id … END WHERE id IN
//!    (…)`, `COMMIT` (or `ROLLBACK` when nothing is to be placed).
//!
//! On MySQL, which has no `RETURNING`, 4 and 5 are one script whose lines and events
//! find their order by a join on the unique (user, key) index, with one read of the new
//! ids before the `COMMIT` (a multi-row insert's ids need not be consecutive with
//! `innodb_autoinc_lock_mode = 2`, so they are never guessed). On MariaDB the joins cost
//! more than the round trip they save: 2.77–2.91 against 2.23–2.27 ms for a batch of 32,
//! timed by hand (the same statements sent one batch at a time, 300 batches a run).
//!
//! Nine statements for a batch of fresh drafts on MariaDB (ten on MySQL, one more with a
//! refusal), where placing the drafts one by one costs eight each. Lock order is the one
//! every other writer of the adapter follows: product rows (ascending), then user rows.
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
use sqlx::{AssertSqlSafe, FromRow, MySqlConnection, Row};

use super::MySqlOrderRepository;
use super::allocate::{Allocation, LockedProduct, Verdict, allocate, replay};
use super::rows::{ProductRow, Read, load_order, load_order_by_key, order_id};
use super::script::{Script, ScriptTx, Warm};
use super::sql::{
    CASE_END_IN, IN_LIST_CHUNK, INSERT_CREATED_EVENTS_JOINED_HEAD, INSERT_CREATED_EVENTS_VALUES,
    INSERT_LINES_JOINED_HEAD, INSERT_LINES_VALUES, INSERT_ORDERS_RETURNING, INSERT_ORDERS_VALUES,
    JOINED_TAIL, KEYS_HEAD, KEYS_OR, KEYS_PAIR, KEYS_TAIL, KEYS_TAIL_LOCKED, LOCK_PRODUCTS_HEAD,
    LOCK_PRODUCTS_TAIL, LOCK_USERS_HEAD, LOCK_USERS_TAIL, ORDERS_KEY_INDEX, SET_SEQS_HEAD,
    TAKE_STOCK_HEAD, UNION_ALL, pad, padded, repeat_sql,
};
use crate::error::{Context, DbError, code, server_code};
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

/// What the transaction came to.
enum Finish {
    /// Written and committed (by the writes' script).
    Committed(Vec<PlaceOutcome>),
    /// Nothing to write; the transaction is to be rolled back.
    Rollback(Vec<PlaceOutcome>),
    /// A held key refused the orders insert; the transaction is to be rolled back.
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
        warm: &Warm,
    ) -> Result<BatchAttempt, RepositoryError> {
        match self
            .retrying(op, || self.place_batch_once(entries, Precheck::Skip, warm))
            .await?
        {
            BatchAttempt::Raced => {
                self.retrying(op, || self.place_batch_once(entries, Precheck::Read, warm))
                    .await
            }
            done => Ok(done),
        }
    }

    /// One attempt at placing `entries` (at most [`MAX_BATCH_DRAFTS`]) through the
    /// multi-row path described above, on `warm`'s connection if it holds one; the
    /// transaction is rolled back explicitly on any error, so that a retry starts clean.
    /// An attempt that ends cleanly (committed or rolled back) leaves its connection in
    /// `warm`.
    pub(super) async fn place_batch_once(
        &self,
        entries: &[Entry<'_>],
        precheck: Precheck,
        warm: &Warm,
    ) -> Result<BatchAttempt, DbError> {
        if entries.len() > MAX_BATCH_DRAFTS {
            return Err(DbError::data(format!(
                "a batch of {} drafts; at most {MAX_BATCH_DRAFTS} fit its statements",
                entries.len()
            )));
        }
        let mut conn = self.acquire_warm(warm).await?;
        let mut tx = ScriptTx::new(&mut conn);
        let existing = match precheck {
            Precheck::Skip => HashMap::new(),
            Precheck::Read => existing_orders(tx.conn(), entries).await?,
        };
        let finish = batch_in_transaction(&mut tx, entries, &existing, &self.returning).await;
        let attempt = match finish {
            Ok(Finish::Committed(outcomes)) => BatchAttempt::Done(outcomes),
            Ok(Finish::Rollback(outcomes)) => {
                tx.rollback().await.ctx("rolling back")?;
                BatchAttempt::Done(outcomes)
            }
            Ok(Finish::Raced) => {
                tx.rollback().await.ctx("rolling back a raced batch")?;
                BatchAttempt::Raced
            }
            Err(e) => {
                // Explicitly, and before any retry: after a lock-wait timeout only the
                // statement was rolled back, and the locks must go now. Should the
                // rollback fail too, the connection is closed (`ScriptTx`).
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed batch");
                }
                return Err(e);
            }
        };
        drop(tx);
        self.keep_warm(warm, conn);
        Ok(attempt)
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

/// `user → event seq` from rows of `id, event_seq`.
fn user_seqs(rows: Vec<MySqlRow>) -> Result<BTreeMap<UserId, u64>, DbError> {
    let mut locked = BTreeMap::new();
    for row in rows {
        let id: u64 = row.try_get("id").ctx("reading a user id")?;
        let seq: u64 = row.try_get("event_seq").ctx("reading a user's event seq")?;
        let user = UserId::new(id).map_err(|e| DbError::data(format!("user id {id}: {e}")))?;
        locked.insert(user, seq);
    }
    Ok(locked)
}

/// The rows a batch locks, read under the locks.
struct Locked {
    products: BTreeMap<ProductId, LockedProduct>,
    users: BTreeMap<UserId, u64>,
}

/// The first script (one round trip): `BEGIN`, then the product rows and the users'
/// rows locked, each ascending (products first, the order every writer follows),
/// reading prices and stock, and event counters, under the locks.
async fn begin_and_lock(
    tx: &mut ScriptTx<'_>,
    products: &BTreeSet<ProductId>,
    users: &BTreeSet<UserId>,
) -> Result<Locked, DbError> {
    let mut script = Script::new();
    script.sql("BEGIN").end();
    let product_ids: Vec<u64> = products.iter().map(|p| p.get()).collect();
    let mut product_sets = Vec::new();
    for chunk in product_ids.chunks(IN_LIST_CHUNK) {
        script
            .sql(LOCK_PRODUCTS_HEAD)
            .uints(chunk.iter().copied())
            .sql(LOCK_PRODUCTS_TAIL);
        product_sets.push(script.end());
    }
    let user_set = (!users.is_empty()).then(|| {
        script
            .sql(LOCK_USERS_HEAD)
            .uints(users.iter().map(|u| u.get()))
            .sql(LOCK_USERS_TAIL);
        script.end()
    });
    let mut answers = tx
        .begin(script)
        .await
        .ctx("locking the batch's product and user rows")?;
    let mut locked = Locked {
        products: BTreeMap::new(),
        users: BTreeMap::new(),
    };
    for set in product_sets {
        for row in answers.take(set) {
            let product = ProductRow::from_row(&row)
                .ctx("reading a product row")?
                .into_product()?;
            locked.products.insert(
                product.id,
                LockedProduct {
                    price: product.price,
                    stock: product.stock,
                },
            );
        }
    }
    if let Some(set) = user_set {
        locked.users = user_seqs(answers.take(set))?;
    }
    Ok(locked)
}

/// The transactional part of [`MySqlOrderRepository::place_batch_once`].
async fn batch_in_transaction(
    tx: &mut ScriptTx<'_>,
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
    let user_ids: BTreeSet<UserId> = open.iter().map(|d| d.user()).collect();
    let locked = begin_and_lock(tx, &product_ids, &user_ids).await?;
    let Allocation {
        verdicts,
        taken,
        seqs,
    } = allocate(&drafts, existing, &locked.products, &locked.users);

    let mut outcomes: Vec<Option<PlaceOutcome>> = vec![None; entries.len()];
    let mut placing: Vec<Placing<'_>> = Vec::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    let mut refused: Vec<usize> = Vec::new();
    for (i, verdict) in verdicts.into_iter().enumerate() {
        match verdict {
            Verdict::Place { prices, seq } => {
                let draft = drafts[i];
                let total = draft.total_at(&prices).map_err(|e| {
                    DbError::data(format!(
                        "order for user {} with key {}: {e}",
                        draft.user(),
                        draft.idempotency_key()
                    ))
                })?;
                placing.push(Placing {
                    index: i,
                    draft,
                    prices,
                    total,
                    seq,
                    at: to_sql(entries[i].now),
                });
            }
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
    answer_held_keys_of_refused_drafts(tx.conn(), &drafts, &refused, &mut outcomes).await?;
    if placing.is_empty() {
        return finish(outcomes).map(Finish::Rollback);
    }

    let taken: Vec<(u64, u64)> = taken
        .into_iter()
        .map(|(p, units)| (p.get(), units))
        .collect();
    let seqs: Vec<(u64, u64)> = seqs.into_iter().map(|(u, seq)| (u.get(), seq)).collect();
    // The writes. On MariaDB (`returning`), two scripts: the orders insert, whose new
    // ids come back by `RETURNING`, then every other write with those ids written in as
    // numbers, and the COMMIT — cheaper than one script whose lines and events find
    // their order by a join (see the module docs). On MySQL one script that joins,
    // reading the ids back before the COMMIT. The first syntax error on `RETURNING`
    // clears `returning` for good, shared by the repository's clones: that statement
    // ran alone and failed, so the transaction is as it was; the joined script is sent
    // instead.
    let order_ids = loop {
        let result = if returning.load(Ordering::Relaxed) {
            match tx.run(insert_orders(&placing)).await {
                Ok(mut answers) => {
                    let ids = new_ids(&placing, &ids_by_key(answers.take(0))?)?;
                    let script = writes_by_id(&placing, &ids, &taken, &seqs);
                    tx.commit(script).await.map(|_| ids)
                }
                Err(e) if server_code(&e) == Some(code::PARSE_ERROR) => {
                    tracing::info!(
                        "the server has no INSERT … RETURNING: reading new order ids back"
                    );
                    returning.store(false, Ordering::Relaxed);
                    continue;
                }
                Err(e) => Err(e),
            }
        } else {
            let (script, ids_at) = writes_joined(&placing, &taken, &seqs);
            match tx.commit(script).await {
                Ok(mut answers) => Ok(new_ids(&placing, &ids_by_key(answers.take(ids_at))?)?),
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(ids) => break ids,
            Err(e) if holds_a_key(&e) => return Ok(Finish::Raced),
            Err(e) => {
                return Err(DbError::Sql {
                    context: "writing a batch of orders",
                    source: e,
                });
            }
        }
    };

    let mut placed: BTreeMap<usize, Order> = BTreeMap::new();
    for (p, raw) in placing.iter().zip(order_ids) {
        let id = order_id(raw)?;
        let order = Order::place(id, p.draft, &p.prices, entries[p.index].now)
            .map_err(|e| DbError::data(format!("order {id}: {e}")))?;
        let event = OrderEvent::logged(&order, p.seq);
        outcomes[p.index] = Some(PlaceOutcome::Placed(order.clone(), event));
        placed.insert(p.index, order);
    }
    for (i, first) in repeats {
        let order = placed.get(&first).cloned().ok_or_else(|| {
            DbError::data(format!(
                "draft {i} repeats draft {first}, which was not placed"
            ))
        })?;
        outcomes[i] = Some(replay(order, drafts[i]));
    }
    finish(outcomes).map(Finish::Committed)
}

/// The ids the orders insert gave the orders of `placing`, in order, from `ids` (by
/// user and key).
fn new_ids(
    placing: &[Placing<'_>],
    ids: &HashMap<(u64, String), u64>,
) -> Result<Vec<u64>, DbError> {
    placing
        .iter()
        .map(|p| {
            ids.get(&(
                p.draft.user().get(),
                p.draft.idempotency_key().as_str().to_owned(),
            ))
            .copied()
            .ok_or_else(|| {
                DbError::data(format!(
                    "order of user {} with key {} not among the new orders' ids",
                    p.draft.user(),
                    p.draft.idempotency_key()
                ))
            })
        })
        .collect()
}

/// One draft the batch places.
struct Placing<'a> {
    /// Its place among the batch's entries.
    index: usize,
    draft: &'a OrderDraft,
    /// Its lines' unit prices, read under the row locks.
    prices: Vec<Money>,
    total: Money,
    /// Its `order.created` event's seq.
    seq: u64,
    /// Its instant, as the server stores it.
    at: String,
}

/// Whether `e` is the orders' unique (user, key) index refusing a row: a key held
/// before the batch, or by a concurrent twin.
fn holds_a_key(e: &sqlx::Error) -> bool {
    server_code(e) == Some(code::DUPLICATE_KEY)
        && e.as_database_error()
            .is_some_and(|db| db.message().contains(ORDERS_KEY_INDEX))
}

/// `INSERT INTO orders … VALUES …` of `placing`, in one statement of `script`; its
/// index.
fn orders_values(script: &mut Script, placing: &[Placing<'_>], returning: bool) -> usize {
    script
        .sql(INSERT_ORDERS_VALUES)
        .list(placing, ", ", |script, p| {
            script
                .sql("(")
                .uint(p.draft.user().get())
                .sql(", 'PENDING', ")
                .decimal(p.total.as_decimal())
                .sql(", ")
                .key(p.draft.idempotency_key())
                .sql(", ")
                .uint(p.draft.fingerprint().raw())
                .sql(", 0, ")
                .text(&p.at)
                .sql(", ")
                .text(&p.at)
                .sql(")");
        });
    if returning {
        script.sql(INSERT_ORDERS_RETURNING);
    }
    script.end()
}

/// Each line of the drafts of `placed`, with its draft, what the draft came with (`x`),
/// its product, quantity and unit price.
fn lines<'p, 'a: 'p, X: Copy + 'p>(
    placed: impl IntoIterator<Item = (&'p Placing<'a>, X)> + 'p,
) -> impl Iterator<Item = (&'p Placing<'a>, X, ProductId, u32, Money)> + 'p {
    placed.into_iter().flat_map(|(p, x)| {
        p.draft
            .items()
            .iter()
            .zip(&p.prices)
            .map(move |((product, quantity), price)| (p, x, *product, quantity.get(), *price))
    })
}

/// The first write script on MariaDB: the orders, their new ids returned (statement 0:
/// `id, user_id, idempotency_key`).
fn insert_orders(placing: &[Placing<'_>]) -> Script {
    let mut script = Script::new();
    orders_values(&mut script, placing, true);
    script
}

/// The second write script on MariaDB, with the new orders' ids (`order_ids`, one per
/// draft of `placing`): their lines, the stock taken, the users' event counters set,
/// the `order.created` events, `COMMIT`.
fn writes_by_id(
    placing: &[Placing<'_>],
    order_ids: &[u64],
    taken: &[(u64, u64)],
    seqs: &[(u64, u64)],
) -> Script {
    let placed = || placing.iter().zip(order_ids.iter().copied());
    let mut script = Script::new();
    script
        .sql(INSERT_LINES_VALUES)
        .list(
            lines(placed()),
            ", ",
            |script, (_, id, product, quantity, price)| {
                script
                    .sql("(")
                    .uint(id)
                    .sql(", ")
                    .uint(product.get())
                    .sql(", ")
                    .uint(quantity)
                    .sql(", ")
                    .decimal(price.as_decimal())
                    .sql(")");
            },
        )
        .end();

    case_update(&mut script, TAKE_STOCK_HEAD, taken);
    case_update(&mut script, SET_SEQS_HEAD, seqs);

    script
        .sql(INSERT_CREATED_EVENTS_VALUES)
        .list(placed(), ", ", |script, (p, id)| {
            script
                .sql("(")
                .uint(p.draft.user().get())
                .sql(", ")
                .uint(p.seq)
                .sql(", ")
                .uint(id)
                .sql(", 'order.created', ")
                .decimal(p.total.as_decimal())
                .sql(", NULL, ")
                .text(&p.at)
                .sql(")");
        })
        .end();
    script.sql("COMMIT").end();
    script
}

/// The one write script on MySQL (no `RETURNING`): the orders, their lines, the stock
/// taken, the users' event counters set, the `order.created` events, the new ids read
/// back, `COMMIT`. Returns the script and the index of the statement whose rows are the
/// new ids (`id, user_id, idempotency_key`).
///
/// Lines and events find their order's id with a join on the unique (user, key) index
/// (`STRAIGHT_JOIN`: the batch's rows drive it), so no statement waits for another's
/// answer.
fn writes_joined(
    placing: &[Placing<'_>],
    taken: &[(u64, u64)],
    seqs: &[(u64, u64)],
) -> (Script, usize) {
    let mut script = Script::new();
    orders_values(&mut script, placing, false);

    script
        .sql(INSERT_LINES_JOINED_HEAD)
        .list(
            lines(placing.iter().map(|p| (p, ()))),
            UNION_ALL,
            |script, (p, (), product, quantity, price)| {
                script
                    .sql("SELECT ")
                    .uint(p.draft.user().get())
                    .sql(" AS u, ")
                    .key(p.draft.idempotency_key())
                    .sql(" AS k, ")
                    .uint(product.get())
                    .sql(" AS p, ")
                    .uint(quantity)
                    .sql(" AS q, ")
                    .decimal(price.as_decimal())
                    .sql(" AS x");
            },
        )
        .sql(JOINED_TAIL)
        .end();

    case_update(&mut script, TAKE_STOCK_HEAD, taken);
    case_update(&mut script, SET_SEQS_HEAD, seqs);

    script
        .sql(INSERT_CREATED_EVENTS_JOINED_HEAD)
        .list(placing, UNION_ALL, |script, p| {
            script
                .sql("SELECT ")
                .uint(p.draft.user().get())
                .sql(" AS u, ")
                .key(p.draft.idempotency_key())
                .sql(" AS k, ")
                .uint(p.seq)
                .sql(" AS s, ")
                .decimal(p.total.as_decimal())
                .sql(" AS t, ")
                .text(&p.at)
                .sql(" AS a");
        })
        .sql(JOINED_TAIL)
        .end();

    let ids = script
        .sql(KEYS_HEAD)
        .list(placing, KEYS_OR, |script, p| {
            script
                .sql("(user_id = ")
                .uint(p.draft.user().get())
                .sql(" AND idempotency_key = ")
                .key(p.draft.idempotency_key())
                .sql(")");
        })
        .sql(KEYS_TAIL)
        .end();
    script.sql("COMMIT").end();
    (script, ids)
}

/// `<head> CASE id WHEN … THEN … END WHERE id IN (…)` for `values` (id, value; ids
/// ascending and unique, so InnoDB visits the rows in ascending order).
fn case_update(script: &mut Script, head: &'static str, values: &[(u64, u64)]) {
    script.sql(head);
    for (id, value) in values {
        script.sql(" WHEN ").uint(*id).sql(" THEN ").uint(*value);
    }
    script
        .sql(CASE_END_IN)
        .uints(values.iter().map(|(id, _)| *id))
        .sql(")");
    script.end();
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

/// Every draft's outcome, or a data error if one was left undecided (a bug).
fn finish(outcomes: Vec<Option<PlaceOutcome>>) -> Result<Vec<PlaceOutcome>, DbError> {
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| DbError::data("a draft was left without an outcome")))
        .collect()
}
