//! [`MySqlOrderRepository`]: the [`OrderRepository`] port on MySQL/MariaDB, plus its
//! seeding, inspection and reconciler queries.
//!
//! How each promise of the port is kept is documented on the type (it is the public
//! face of this module). Rows become domain values only through [`Order::from_parts`] and
//! the value-object constructors; a row that fails them is reported as `Unexpected`. No
//! sqlx error leaves this module: every driver failure is converted by [`DbError`].
//!
//! The module is cut along the seams of the work it does, so each file can be read on its
//! own: [`sql`] holds every statement's text, [`rows`] the row types and their checked
//! conversion to domain values (and the reads built on them), `place` and `transition`
//! the two write paths of the port, and `admin` the operator API that is not part of the
//! port (seeding, restocking, inspection, `EXPLAIN`). This file keeps the type, its
//! constructor, the retry wrapper every transaction runs under, and the port
//! implementation, which delegates to those modules.

mod admin;
mod allocate;
mod batch;
mod batched;
mod coalesce;
mod events;
pub(crate) mod group;
mod place;
mod rows;
pub(crate) mod script;
mod sql;
mod transition;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use order_core::domain::{OrderDraft, StatusChange};
use order_core::ports::{
    EventPage, ListFilter, OrderPage, OrderRepository, PlaceOutcome, RandomSource, RepositoryError,
    StrandedQuery, TransitionOutcome,
};
use order_core::{
    IdempotencyKey, Order, OrderId, Product, ProductId, SeededRandom, Timestamp, UserId,
};
use sqlx::MySqlPool;

use crate::error::{Context, DbError};
use crate::retry::RetryPolicy;

pub use admin::QueryPlan;
pub use coalesce::{CoalesceConfig, CoalesceConfigError, CoalescingStats};

use batch::{BatchAttempt, Entry, MAX_BATCH_DRAFTS};
use batched::{Batcher, MAX_TRANSITION_BATCH};
use coalesce::Coalescer;

use rows::{ProductRow, Read, load_order, load_order_by_key, load_page};
use sql::{PRODUCT_BY_ID, PRODUCTS};

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
///   transaction and returned as `Applied` — except a Pay or Fail given the caller's
///   order ([`transition_from`](OrderRepository::transition_from)), computed from it
///   instead; a 0-row update rolls back and re-reads: `NotFound` or `LostRace(current)`.
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
/// **Batches** (`place` with 2 to 256 drafts, and coalesced ones): the multi-row path
/// decides every draft in memory under the row locks and writes them all with a
/// constant number of statements — `BEGIN`, the product rows and the users' rows locked
/// (`FOR UPDATE`, ascending), one multi-row insert each for orders (its new ids returned
/// by `INSERT … RETURNING` on MariaDB, read back in one more statement on MySQL), lines
/// and events, one `UPDATE` each for the stock and the users' event counters, `COMMIT`:
/// nine in all on MariaDB, however many drafts. Stock is allotted in arrival order (a
/// later draft sees what earlier ones took), a second draft with a key claimed earlier
/// in the batch replays it (or is refused), and each placed order takes its user's next
/// event seq in arrival order. No key is read beforehand: a draft whose key an order
/// already holds makes the orders insert hit the unique index, and the batch is
/// attempted once more with a pre-read of the keys, which answers it as a replay or a
/// reused key. Nothing is written before every draft is decided; if the second
/// attempt's insert hits the unique key too (a concurrent twin committed a key after the
/// pre-read) or the transaction fails for good, it is rolled back and the drafts go
/// through the general path below instead.
///
/// **The general path** (larger batches, and the fallback): one plain read per draft
/// answers replays and unknown users without locks; then ONE transaction locks every
/// product row any of the remaining drafts needs, once, in ascending id order (at most
/// 10 000 ids per statement, so no batch exceeds the 65 535 placeholders one statement
/// may bind), and decides the drafts in arrival order against the locked stock, writing
/// order, lines and stock decrement for each draft that can be placed. It commits if
/// anything was written, else rolls back. There is no savepoint per draft, deliberately:
/// every business failure is decided before the draft's first write (unknown or short
/// product, key claimed earlier in the batch) or by that first write itself (`INSERT
/// INTO orders` refused by the unique key or the user's foreign key), and InnoDB rolls a
/// failed statement back on its own. Anything failing after that first write is not a
/// business outcome: the whole transaction is rolled back and the call fails, having
/// written nothing. A single draft first tries a shorter fast path (`BEGIN`, conditional
/// decrement, insert order, insert lines, `COMMIT`), and falls back to this one whenever
/// that path cannot decide exactly (a missing or short product, a changed price, a total
/// too large).
///
/// **Coalescing** (on by default, see [`with_coalescing`](Self::with_coalescing)):
/// concurrent one-draft `place` calls are queued while one runs, and the queue then goes
/// through the multi-row path as one batch, whatever their products, so a hot product's
/// row is locked once per batch and orders for many products share a transaction; a
/// lone call goes alone, at once, through the fast path. With it, concurrent Start transitions and Pay / Fail
/// completions ([`transition_from`](OrderRepository::transition_from)) are batched the
/// same way, one transaction of a constant number of statements per batch (see
/// `batched.rs`); a Pay or Fail is never read back, coalescing on or off.
///
/// Instants are stored as UTC `DATETIME(3)`, exact to the millisecond; the pool's
/// connections must run with `time_zone = '+00:00'` (sqlx's default, and what
/// [`connect`](crate::connect) sets). Cheap to clone: the pool, the random source the
/// retry jitter is drawn from and the retry counter are shared.
#[derive(Clone)]
pub struct MySqlOrderRepository {
    pool: MySqlPool,
    retry: RetryPolicy,
    random: Arc<dyn RandomSource>,
    retries: Arc<AtomicU64>,
    /// `None` when coalescing is off.
    coalescer: Option<Arc<Coalescer>>,
    /// Transition batching; `None` when coalescing is off.
    batcher: Option<Arc<Batcher>>,
    /// Whether the batch path's orders insert may end in `RETURNING`: on until the
    /// server refuses the syntax once (see
    /// [`without_insert_returning`](Self::without_insert_returning)).
    returning: Arc<AtomicBool>,
}

impl std::fmt::Debug for MySqlOrderRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlOrderRepository")
            .field("pool", &self.pool)
            .field("retry", &self.retry)
            .field("retries", &self.retries)
            .field("coalescer", &self.coalescer)
            .field("batcher", &self.batcher)
            .finish_non_exhaustive()
    }
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

    /// A repository over `pool` retrying deadlocks and lock-wait timeouts under `retry`,
    /// its jitter drawn from [`SeededRandom::from_entropy`] (see
    /// [`with_random_source`](Self::with_random_source)).
    pub fn with_retry_policy(pool: MySqlPool, retry: RetryPolicy) -> Self {
        Self {
            pool,
            retry: RetryPolicy {
                max_attempts: retry.max_attempts.max(1),
                ..retry
            },
            random: Arc::new(SeededRandom::from_entropy()),
            retries: Arc::new(AtomicU64::new(0)),
            coalescer: None,
            batcher: None,
            returning: Arc::new(AtomicBool::new(true)),
        }
        .with_coalescing(CoalesceConfig::default())
    }

    /// The same repository coalescing concurrent one-draft placements under `config`,
    /// with fresh queues and [`coalescing_stats`](Self::coalescing_stats) (its clones
    /// share them). On by default, with [`CoalesceConfig::default`].
    ///
    /// Concurrent `place` calls with ONE draft each, in this process, are combined into
    /// one transaction of a constant number of statements (see the type's
    /// documentation), so a hot product's row is locked once per batch instead of once
    /// per order, and orders for different products share a transaction; every caller
    /// still gets its own outcome, exactly as if the drafts had been placed one after
    /// the other in arrival order.
    ///
    /// Flush policy ("group commit"): a draft arriving while no placement runs is placed
    /// at once, alone — a lone caller never waits for company; drafts arriving while one
    /// runs queue up, and the queue is placed as one batch as soon as that placement
    /// ends, or at once when it reaches [`max_batch`](CoalesceConfig::max_batch), or when
    /// its first draft has waited [`max_wait`](CoalesceConfig::max_wait).
    ///
    /// Coalescing needs placements that overlap in time. With the service's
    /// `LockMode::Distributed` the per-product locks keep concurrent creates of one
    /// product apart (a hot product's orders never batch; orders for different products
    /// do); with `LockMode::None`, where the database row lock is the guard, the orders
    /// for a hot product arrive together and batch too. The same switch batches the
    /// worker's transitions (see the type's documentation). Queued batches run on tasks
    /// spawned on the current tokio runtime.
    #[must_use]
    pub fn with_coalescing(mut self, config: CoalesceConfig) -> Self {
        self.coalescer = Some(Arc::new(Coalescer::new(config)));
        self.batcher = Some(Arc::new(Batcher::new(MAX_TRANSITION_BATCH)));
        self
    }

    /// The same repository placing every one-draft `place` call on its own (the fast
    /// path), as before coalescing existed. Batches given to `place` directly still use
    /// the multi-row path.
    #[must_use]
    pub fn without_coalescing(mut self) -> Self {
        self.coalescer = None;
        self.batcher = None;
        self
    }

    /// The same repository reading the ids of a batch's new orders back with a `SELECT`
    /// by (user, key), as on MySQL, instead of taking them from `INSERT … RETURNING`.
    /// By default the batch path tries `RETURNING` (MariaDB 10.5+) and, when the server
    /// refuses its syntax, falls back to the read for good; this forces the read from
    /// the start — for tests of that path on MariaDB.
    #[must_use]
    pub fn without_insert_returning(mut self) -> Self {
        self.returning = Arc::new(AtomicBool::new(false));
        self
    }

    /// What the coalescer did so far (shared by this repository's clones); all zero
    /// when coalescing is off. A metric: `drafts / batches` is the mean batch size.
    pub fn coalescing_stats(&self) -> CoalescingStats {
        let mut stats = self
            .coalescer
            .as_ref()
            .map(|c| c.stats())
            .unwrap_or_default();
        if let Some(batcher) = &self.batcher {
            let b = batcher.stats();
            stats.transition_batches = b.batches;
            stats.batched_transitions = b.transitions;
            stats.solo_transitions = b.solo;
            stats.transition_fallbacks = b.fallbacks;
        }
        stats
    }

    /// A handle on the same pool, retry policy and counters that never coalesces: what
    /// the coalescer itself places through.
    fn uncoalesced(&self) -> Self {
        Self {
            coalescer: None,
            ..self.clone()
        }
    }

    /// A handle on the same pool, retry policy and counters that never batches
    /// transitions: what the transition batcher itself applies them through.
    fn unbatched(&self) -> Self {
        Self {
            batcher: None,
            ..self.clone()
        }
    }

    /// The same repository drawing its retry jitter from `random` (e.g. the service's
    /// own source, or a seeded one for reproducible runs).
    #[must_use]
    pub fn with_random_source(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.random = random;
        self
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
                    let pause = self.retry.delay(n, &*self.random);
                    tracing::debug!(op, attempt = n, ?pause, error = %order_core::app::ErrorChain(&e), "retrying after a lock conflict");
                    tokio::time::sleep(pause).await;
                    n += 1;
                }
                Err(e) => return Err(e.into_repository()),
            }
        }
    }

    /// `place` without coalescing and without the multi-row batch path: the one-draft
    /// fast path, or the general path (one transaction, draft by draft).
    async fn place_direct(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        self.retrying("place", || self.place_once(drafts, now))
            .await
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>, DbError> {
        self.pool.acquire().await.ctx("acquiring a connection")
    }

    /// Leaves `conn`, which has just ended a transaction cleanly, in `warm` for the
    /// next batch — unless every connection the pool may open is out and none idles,
    /// when a caller may be waiting for one: it then goes back to the pool, so a lane
    /// that stays busy never keeps a connection from the rest of the process.
    fn keep_warm(&self, warm: &script::Warm, conn: sqlx::pool::PoolConnection<sqlx::MySql>) {
        let max = self.pool.options().get_max_connections();
        if self.pool.size() < max || self.pool.num_idle() > 0 {
            warm.put(conn);
        }
    }

    /// The connection `warm` holds, else one from the pool.
    async fn acquire_warm(
        &self,
        warm: &script::Warm,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>, DbError> {
        match warm.take() {
            Some(conn) => Ok(conn),
            None => self.acquire().await,
        }
    }
}

#[async_trait]
impl OrderRepository for MySqlOrderRepository {
    /// Places each draft in arrival order, in one transaction; see
    /// [`MySqlOrderRepository`] for the layout (the fast path for one draft — coalesced
    /// with concurrent calls for the same products unless coalescing is off — the
    /// multi-row path for up to 256, the general path beyond, or when the multi-row path
    /// fails). A second draft with the same (user, key) in one call replays (or refuses)
    /// the first.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the database cannot be reached or a
    /// deadlock / lock-wait timeout persisted through every retry;
    /// [`RepositoryError::Unexpected`] for anything else, including a draft whose total
    /// would exceed [`Money::max`]. Nothing was written — with one exception no database
    /// client can rule out: if the connection breaks while `COMMIT` is in flight, the
    /// commit may have happened. Placing the same drafts again is then safe: the
    /// idempotency keys turn it into replays. A coalesced draft gets its own result: a
    /// batch that fails is placed again draft by draft, so only that draft's own failure
    /// reaches its caller; if the tokio runtime shuts down before its queued batch runs,
    /// the caller gets [`RepositoryError::Unavailable`] (never a hang).
    ///
    /// [`Money::max`]: order_core::Money::max
    async fn place(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        match (drafts, &self.coalescer) {
            ([], _) => Ok(Vec::new()),
            ([draft], Some(coalescer)) => self.place_coalesced(coalescer, draft, now).await,
            ([_], None) => self.place_direct(drafts, now).await,
            (_, _) if drafts.len() <= MAX_BATCH_DRAFTS => {
                let entries: Vec<Entry<'_>> =
                    drafts.iter().map(|draft| Entry { draft, now }).collect();
                match self
                    .place_batch("place (batch)", &entries, &script::Warm::default())
                    .await
                {
                    Ok(BatchAttempt::Done(outcomes)) => Ok(outcomes),
                    // A concurrent twin took a key after the second attempt's pre-read:
                    // the general path answers each draft, the twin's as a replay.
                    Ok(BatchAttempt::Raced) => self.place_direct(drafts, now).await,
                    Err(e) => {
                        tracing::debug!(drafts = drafts.len(), error = %order_core::app::ErrorChain(&e), "the batch path failed: placing through the general path");
                        self.place_direct(drafts, now).await
                    }
                }
            }
            _ => self.place_direct(drafts, now).await,
        }
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
    ///
    /// [`MAX_STOCK`]: order_core::domain::MAX_STOCK
    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        match &self.batcher {
            Some(batcher) if batched::batchable(&change, None) => {
                let item = batched::Item {
                    id,
                    change,
                    current: None,
                    now,
                };
                self.transition_batched(batcher, item).await
            }
            _ => {
                self.retrying("transition", || self.transition_once(id, &change, now))
                    .await
            }
        }
    }

    /// A Pay or Fail of an order `current` holds the lease of is applied without
    /// reading the order back (see the port): the compare-and-set's WHERE clause is the
    /// whole precondition, so a match means the stored order is `current` with the
    /// change applied. Batched with concurrent transitions unless coalescing is off; a
    /// completion that lost its lease is re-read as `transition` does. Any other change
    /// is [`transition`](OrderRepository::transition).
    ///
    /// # Errors
    /// As [`transition`](OrderRepository::transition).
    async fn transition_from(
        &self,
        current: &Order,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        if !batched::batchable(&change, Some(current)) {
            return self.transition(current.id(), change, now).await;
        }
        let item = batched::Item {
            id: current.id(),
            change,
            current: Some(current.clone()),
            now,
        };
        match &self.batcher {
            Some(batcher) => self.transition_batched(batcher, item).await,
            None => self.transition_item(&item).await,
        }
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
            load_page(&mut conn, user, filter).await
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

    /// `SELECT … FROM order_events WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?`
    /// over the primary key, then the user's counter (`users.event_seq`).
    ///
    /// # Errors
    /// [`RepositoryError`] when the database failed or a row is not a valid event.
    async fn events_after(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<EventPage, RepositoryError> {
        self.events_after_once(user, after, limit)
            .await
            .map_err(DbError::into_repository)
    }

    /// `DELETE … WHERE at < ? ORDER BY at LIMIT ?` over the `order_events_at` index: the
    /// oldest events first, one statement (its own transaction). The user counters are
    /// not touched.
    ///
    /// # Errors
    /// [`RepositoryError`] when the database failed; nothing was deleted.
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, RepositoryError> {
        self.retrying("prune_events", || self.prune_events_once(before, limit))
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

    /// One row by primary key (`SELECT … WHERE id = ?`), read as
    /// [`products`](OrderRepository::products) reads each row.
    ///
    /// # Errors
    /// [`RepositoryError`] when the database failed or the row is not a valid product.
    async fn product(&self, id: ProductId) -> Result<Option<Product>, RepositoryError> {
        let row = sqlx::query_as::<_, ProductRow>(PRODUCT_BY_ID)
            .bind(id.get())
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a product")
            .map_err(DbError::into_repository)?;
        row.map(ProductRow::into_product)
            .transpose()
            .map_err(DbError::into_repository)
    }
}
