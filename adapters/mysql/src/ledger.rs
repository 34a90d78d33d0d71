//! [`MySqlPaymentLedger`]: the simulated payment provider's durable ledger, in the
//! `payments` table.
//!
//! It records the first outcome per charge key (the order id) so that a retried charge
//! after any crash — even a total Redis loss — is recognised, and so that "at most one
//! charge per order" can be checked. "First writer wins" is enforced by the table's
//! primary key, atomically across every process sharing the database: a plain `INSERT`
//! either stores the caller's entry or fails with a duplicate key, and then the winner is
//! read back. (`INSERT IGNORE` would also silence unrelated errors such as truncation.)
//! No sqlx error leaves this module.
//!
//! **Batching** (on by default): `record_first` calls in one process go through a paced
//! group-commit lane (`group.rs`): every call waits until the first call queued has
//! waited `MAX_WAIT` (5 ms), or until `MAX_BATCH` (256) calls are queued, and the calls
//! queued then go as one multi-row `INSERT` — one autocommitted statement, one commit,
//! for the whole batch. So a lone call takes up to 5 ms longer than an insert of its
//! own; the simulated provider records during its 50–200 ms delay, where that costs a
//! charge nothing, and the server commits (and syncs its log) about once per 5 ms for
//! the ledger instead of once per batch run back to back (measured on the worker
//! drain: 0.1 ledger inserts per order instead of 0.3, and the worker's transition
//! commits, which share that log, waited less). Fresh keys
//! are the common case (a key is recorded again only when a charge is retried), so no
//! key is read first: should the insert hit a held key, nothing of it was written, and
//! every entry of the batch is recorded again alone, as above, which reads the winner
//! back. A key twice in one batch is inserted once; its later calls get `Existing`.
//! Measured on the worker drain: one autocommitted insert per charge was the largest
//! share of the server's commits.

use async_trait::async_trait;
use order_core::domain::FailureReason;
use order_core::ports::PaymentOutcome;
use order_core::{Money, OrderId};
use order_payment_sim::{LedgerEntry, LedgerError, PaymentLedger, Recorded};
use rust_decimal::Decimal;
use sqlx::MySqlPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

use crate::error::{Context, DbError, code};
use crate::repository::group::{Lane, Runner, join};
use crate::repository::script::Script;

const APPROVED: &str = "APPROVED";
const DECLINED: &str = "DECLINED";

const INSERT: &str =
    "INSERT INTO payments (order_id, amount, outcome, decline_reason) VALUES (?, ?, ?, ?)";
/// Many entries in one statement, written into a script: this, then one
/// `(key, amount, outcome, reason)` per entry.
const INSERT_VALUES: &str =
    "INSERT INTO payments (order_id, amount, outcome, decline_reason) VALUES ";
const BY_KEY: &str =
    "SELECT order_id, amount, outcome, decline_reason FROM payments WHERE order_id = ?";
const ALL: &str =
    "SELECT order_id, amount, outcome, decline_reason FROM payments ORDER BY order_id";

/// One `payments` row.
#[derive(sqlx::FromRow)]
struct PaymentRow {
    order_id: u64,
    amount: Decimal,
    outcome: String,
    decline_reason: Option<String>,
}

impl PaymentRow {
    fn into_entry(self) -> Result<LedgerEntry, DbError> {
        let key = OrderId::new(self.order_id)
            .map_err(|e| DbError::data(format!("payment key {}: {e}", self.order_id)))?;
        let amount = Money::new(self.amount)
            .map_err(|e| DbError::data(format!("payment {key} amount: {e}")))?;
        let outcome = match (self.outcome.as_str(), self.decline_reason) {
            (APPROVED, None) => PaymentOutcome::Approved,
            (DECLINED, Some(reason)) => PaymentOutcome::Declined(FailureReason::new(reason)),
            (other, reason) => {
                return Err(DbError::data(format!(
                    "payment {key}: outcome {other:?} with decline reason {reason:?}"
                )));
            }
        };
        Ok(LedgerEntry {
            key,
            amount,
            outcome,
        })
    }
}

/// The most entries one batched insert takes.
const MAX_BATCH: usize = 256;
/// How long the first entry queued waits for others before their batch goes.
const MAX_WAIT: Duration = Duration::from_millis(5);

/// The simulated provider's ledger in the `payments` table: at most one entry per charge
/// key, first writer wins across every process sharing the database (the table's
/// primary key decides; the loser reads the winner back). Concurrent calls are batched
/// (see the module docs) unless [`without_batching`](Self::without_batching).
#[derive(Debug, Clone)]
pub struct MySqlPaymentLedger {
    pool: MySqlPool,
    batcher: Option<Arc<Batcher>>,
}

/// What the ledger's batching did since the ledger was made, from
/// [`batching_stats`](MySqlPaymentLedger::batching_stats). All zero without batching.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerBatchingStats {
    /// Batched inserts of two entries or more (including those that then fell back).
    pub batches: u64,
    /// Entries in those batches.
    pub entries: u64,
    /// Entries recorded alone (nothing else was waiting).
    pub solo: u64,
    /// Batches whose insert failed (a held key, or any error) and whose entries were
    /// recorded again one by one.
    pub fallbacks: u64,
}

/// One queued `record_first` call.
struct Waiter {
    entry: LedgerEntry,
    reply: oneshot::Sender<Result<Recorded, LedgerError>>,
}

/// The lane of one ledger (shared by its clones) and its counters.
struct Batcher {
    lane: Lane<Waiter>,
    batches: AtomicU64,
    entries: AtomicU64,
    solo: AtomicU64,
    fallbacks: AtomicU64,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Records the batches of a [`Batcher`]'s lane.
#[derive(Clone)]
struct LedgerRunner {
    /// A handle that never batches (what the batches record through).
    ledger: MySqlPaymentLedger,
    batcher: Arc<Batcher>,
}

impl Runner for LedgerRunner {
    type Item = Waiter;
    type Carry = ();

    fn lane(&self) -> &Lane<Waiter> {
        &self.batcher.lane
    }

    async fn run(&self, batch: Vec<Waiter>, _: Option<()>) -> Option<()> {
        self.ledger.record_batch(&self.batcher, batch).await;
        None
    }
}

impl MySqlPaymentLedger {
    /// A ledger over `pool`, whose database has been migrated with
    /// [`migrate`](crate::migrate); concurrent calls are batched.
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            batcher: Some(Arc::new(Batcher {
                lane: Lane::paced(MAX_BATCH, MAX_WAIT),
                batches: AtomicU64::new(0),
                entries: AtomicU64::new(0),
                solo: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
            })),
        }
    }

    /// The same ledger, recording every call alone (one autocommitted `INSERT` each).
    pub fn without_batching(mut self) -> Self {
        self.batcher = None;
        self
    }

    /// What batching did so far (all zero without it).
    pub fn batching_stats(&self) -> LedgerBatchingStats {
        self.batcher
            .as_ref()
            .map(|b| LedgerBatchingStats {
                batches: b.batches.load(Ordering::Relaxed),
                entries: b.entries.load(Ordering::Relaxed),
                solo: b.solo.load(Ordering::Relaxed),
                fallbacks: b.fallbacks.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }

    /// `record_first` through the paced lane: with whatever queued alongside it within
    /// `MAX_WAIT`.
    async fn record_batched(
        &self,
        batcher: &Arc<Batcher>,
        entry: LedgerEntry,
    ) -> Result<Recorded, LedgerError> {
        let runner = LedgerRunner {
            ledger: self.clone().without_batching(),
            batcher: batcher.clone(),
        };
        let (tx, reply) = oneshot::channel();
        let queued = || Waiter {
            entry: entry.clone(),
            reply: tx,
        };
        match join(&runner, queued) {
            Some(_slot) => {
                batcher.solo.fetch_add(1, Ordering::Relaxed);
                self.insert_first(entry).await.map_err(DbError::into_ledger)
            }
            None => reply.await.map_err(|_| {
                LedgerError::Unavailable(anyhow::Error::msg(
                    "the runtime shut down before this batched payment was recorded",
                ))
            })?,
        }
    }

    /// Records one batch (see the module docs) and answers every caller.
    async fn record_batch(&self, batcher: &Batcher, mut batch: Vec<Waiter>) {
        if batch.len() == 1 {
            if let Some(w) = batch.pop() {
                batcher.solo.fetch_add(1, Ordering::Relaxed);
                let outcome = self.insert_first(w.entry).await;
                // A caller that stopped waiting no longer needs the answer.
                let _ = w.reply.send(outcome.map_err(DbError::into_ledger));
            }
            return;
        }
        batcher.batches.fetch_add(1, Ordering::Relaxed);
        batcher
            .entries
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // The first call per key is inserted; a later one with the same key gets it.
        let mut first: HashMap<OrderId, usize> = HashMap::with_capacity(batch.len());
        let mut repeated: HashMap<OrderId, Option<LedgerEntry>> = HashMap::new();
        for (i, w) in batch.iter().enumerate() {
            if *first.entry(w.entry.key).or_insert(i) != i {
                repeated.insert(w.entry.key, None);
            }
        }
        let inserting = batch
            .iter()
            .enumerate()
            .filter(|(i, w)| first.get(&w.entry.key) == Some(i))
            .map(|(_, w)| &w.entry);
        let mut script = Script::new();
        script
            .sql(INSERT_VALUES)
            .list(inserting, ", ", |script, e| {
                script
                    .sql("(")
                    .uint(e.key.get())
                    .sql(", ")
                    .decimal(e.amount.as_decimal());
                match &e.outcome {
                    PaymentOutcome::Approved => script.sql(", 'APPROVED', NULL)"),
                    PaymentOutcome::Declined(reason) => {
                        script.sql(", 'DECLINED', ").text(reason.as_str()).sql(")")
                    }
                };
            })
            .end();
        let inserted = match self.pool.acquire().await {
            Ok(mut conn) => script.run(&mut conn).await.ctx("recording payments"),
            Err(e) => Err(e).ctx("acquiring a connection"),
        };
        match inserted {
            Ok(_) => {
                for w in batch {
                    // Only a key the batch holds more than once keeps a copy of its
                    // first entry, for the calls after it.
                    let outcome = match repeated.get_mut(&w.entry.key) {
                        None => Recorded::New(w.entry),
                        Some(winner @ None) => {
                            *winner = Some(w.entry.clone());
                            Recorded::New(w.entry)
                        }
                        Some(Some(winner)) => Recorded::Existing(winner.clone()),
                    };
                    let _ = w.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::debug!(entries = batch.len(), error = %order_core::app::ErrorChain(&e),
                    "a batched payments insert failed: recording its entries one by one");
                batcher.fallbacks.fetch_add(1, Ordering::Relaxed);
                // Each on a task of its own, side by side over the pool (as the
                // repository's transition batches fall back): a batch of 256 whose
                // connection was killed must not wait 256 round trips for its last entry.
                // Without a runtime the entries are dropped: their callers get an error.
                for w in batch {
                    let ledger = self.clone();
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        runtime.spawn(async move {
                            let outcome = ledger.insert_first(w.entry).await;
                            let _ = w.reply.send(outcome.map_err(DbError::into_ledger));
                        });
                    }
                }
            }
        }
    }

    async fn fetch(&self, key: OrderId) -> Result<Option<LedgerEntry>, DbError> {
        sqlx::query_as::<_, PaymentRow>(BY_KEY)
            .bind(key.get())
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a payment")?
            .map(PaymentRow::into_entry)
            .transpose()
    }

    async fn insert_first(&self, entry: LedgerEntry) -> Result<Recorded, DbError> {
        let (outcome, reason) = match &entry.outcome {
            PaymentOutcome::Approved => (APPROVED, None),
            PaymentOutcome::Declined(reason) => (DECLINED, Some(reason.as_str())),
        };
        // Autocommit: the row is durable (or refused) when the statement returns.
        let inserted = sqlx::query(INSERT)
            .bind(entry.key.get())
            .bind(entry.amount.as_decimal())
            .bind(outcome)
            .bind(reason)
            .execute(&self.pool)
            .await
            .ctx("recording a payment");
        match inserted {
            Ok(_) => Ok(Recorded::New(entry)),
            Err(e) if e.server_code() == Some(code::DUPLICATE_KEY) => {
                // The duplicate error is only reported once the winner has committed,
                // so a fresh read sees it.
                match self.fetch(entry.key).await? {
                    Some(winner) => Ok(Recorded::Existing(winner)),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl PaymentLedger for MySqlPaymentLedger {
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached;
    /// [`LedgerError::Unexpected`] otherwise.
    async fn get(&self, key: OrderId) -> Result<Option<LedgerEntry>, LedgerError> {
        self.fetch(key).await.map_err(DbError::into_ledger)
    }

    /// First writer wins, enforced by the primary key on the charge key.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached;
    /// [`LedgerError::Unexpected`] otherwise (e.g. an amount beyond `DECIMAL(15,2)`).
    async fn record_first(&self, entry: LedgerEntry) -> Result<Recorded, LedgerError> {
        match &self.batcher {
            Some(batcher) => self.record_batched(batcher, entry).await,
            None => self.insert_first(entry).await.map_err(DbError::into_ledger),
        }
    }

    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached;
    /// [`LedgerError::Unexpected`] otherwise.
    async fn entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        async {
            sqlx::query_as::<_, PaymentRow>(ALL)
                .fetch_all(&self.pool)
                .await
                .ctx("listing payments")?
                .into_iter()
                .map(PaymentRow::into_entry)
                .collect::<Result<Vec<_>, _>>()
        }
        .await
        .map_err(DbError::into_ledger)
    }
}
