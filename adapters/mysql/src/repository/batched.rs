//! Transition batching: the worker's status changes — Start, and Pay / Fail of an order
//! the caller holds ([`transition_from`](order_core::ports::OrderRepository::transition_from))
//! — applied many orders at a time, with a constant number of statements per batch.
//!
//! **One batch, one transaction:**
//! - one compare-and-set `UPDATE` for the Starts and one for the Pays and Fails, each the
//!   exact twin of the one-order statements (`CAS_START`; `CAS_PAY` and `CAS_FAIL`) with
//!   the per-order values (status too, for completions) chosen by `CASE id`;
//! - for Fail, one `UPDATE products … JOIN` putting back the stored lines' quantities;
//! - for Start, one read of the started orders with their lines (the caller does not
//!   hold them yet); a Start matched when its row now carries the item's own lease
//!   token, else it lost (`LostRace` with the row as read) or the order does not exist —
//!   unless more rows carry their items' tokens than the compare-and-set matched: an
//!   earlier attempt of the same item committed although its connection failed, and its
//!   Start is logged already. A batch of one then reports it applied with the event that
//!   attempt logged (read back, not written again); a larger batch is rolled back and
//!   goes one by one;
//! - for Pay / Fail, no read at all: the statement's WHERE clause (status and the
//!   caller's lease token) is the whole precondition of `Order::apply`, and nothing but
//!   the token's holder changes an order while its token stands, so a match means the
//!   stored order is the caller's `current` with the change applied — computed in
//!   memory. If the matched count is short (a completion lost its lease), the batch is
//!   rolled back and its items go one by one, through the one-order path that re-reads;
//! - the events: each applied change takes its owner's next seq
//!   (`events::log_changes`: one bump when the batch has one user, else the users' rows
//!   locked ascending and set in one statement), appended in one insert;
//! - `BEGIN` and `COMMIT`.
//!
//! A worker's Start costs `BEGIN`, the compare-and-set, one read, two log statements and
//! `COMMIT`, shared by every order of the batch; a Pay or Fail the same without the
//! read. A batch of one is the same path with one item.
//!
//! **When batches form:** the group-commit policy of `group.rs`, one lane for every
//! transition of the repository (Starts and completions share a batch: they share the
//! users' rows whose event counters every batch locks, so two batches at once would
//! mostly wait for each other — measured, a lane each doubled the Start's latency): a
//! transition arriving while none runs goes at once, in its caller's task; transitions
//! arriving while one runs go together when it ends, at most `max_batch` (256) at a
//! time — never two batches at once, for the same reason (`Lane::sequential`) — under a worker's load, batches size themselves
//! to the arrival rate times one transaction's duration. Deadlocks and lock-wait
//! timeouts retry the whole batch; any other failure of a batch sends its items through
//! the one-by-one path, so one item's problem never fails the others.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use order_core::domain::{Lease, StatusChange};
use order_core::ports::{RepositoryError, TransitionOutcome};
use order_core::{Order, OrderId, OrderStatus, Timestamp};
use sqlx::MySql;
use sqlx::pool::PoolConnection;
use tokio::sync::oneshot;

use super::MySqlOrderRepository;
use super::events;
use super::group::{Lane, Runner, join};
use super::rows::orders_with_items;
use super::script::{Script, ScriptTx, Warm};
use super::sql::{
    COMPLETE_MANY_AT, COMPLETE_MANY_HEAD, COMPLETE_MANY_IN, COMPLETE_MANY_REASON,
    COMPLETE_MANY_WHERE, ORDERS_WITH_ITEMS_HEAD, ORDERS_WITH_ITEMS_TAIL, RETURN_STOCK_HEAD,
    RETURN_STOCK_TAIL, START_MANY_AT, START_MANY_HEAD, START_MANY_UNTIL, START_MANY_WHERE,
};
use crate::error::{Context, DbError};
use crate::time::to_sql;

/// The most transitions in one batch: statement shapes for 1, 4, 16, 64 and 256 orders
/// (see [`padded`]), so they stay in sqlx's statement cache.
pub(super) const MAX_TRANSITION_BATCH: usize = 256;

/// One transition to apply: `change` to order `id` at `now`; `current` is the caller's
/// order for a Pay or Fail (see [`batchable`]).
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) id: OrderId,
    pub(super) change: StatusChange,
    pub(super) current: Option<Order>,
    pub(super) now: Timestamp,
}

/// Whether `change` can go through the batch path: a Start, or a Pay / Fail with the
/// caller's `current` order holding the change's lease token while Processing.
pub(super) fn batchable(change: &StatusChange, current: Option<&Order>) -> bool {
    match change {
        StatusChange::Start { .. } => true,
        StatusChange::Pay { lease } | StatusChange::Fail { lease, .. } => {
            current.is_some_and(|o| {
                o.status() == OrderStatus::Processing && o.lease().map(|l| l.token) == Some(*lease)
            })
        }
        StatusChange::TakeOver { .. } | StatusChange::Cancel | StatusChange::Release { .. } => {
            false
        }
    }
}

/// One queued transition and where its outcome goes.
pub(super) struct Waiter {
    item: Item,
    reply: oneshot::Sender<Result<TransitionOutcome, RepositoryError>>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    transitions: AtomicU64,
    solo: AtomicU64,
    fallbacks: AtomicU64,
}

/// The transition lane of one repository (shared by its clones) and its counters.
pub(super) struct Batcher {
    lane: Lane<Waiter>,
    counters: Counters,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// What a [`Batcher`] did, as counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct BatcherStats {
    pub(super) batches: u64,
    pub(super) transitions: u64,
    pub(super) solo: u64,
    pub(super) fallbacks: u64,
}

impl Batcher {
    pub(super) fn new(max_batch: usize) -> Self {
        Self {
            lane: Lane::sequential(max_batch),
            counters: Counters::default(),
        }
    }

    pub(super) fn stats(&self) -> BatcherStats {
        let c = &self.counters;
        BatcherStats {
            batches: c.batches.load(Ordering::Relaxed),
            transitions: c.transitions.load(Ordering::Relaxed),
            solo: c.solo.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
        }
    }
}

/// Runs the batches of a [`Batcher`]'s lane.
#[derive(Clone)]
struct TransitionRunner {
    /// A handle that never batches (what the batches run through).
    repo: MySqlOrderRepository,
    batcher: Arc<Batcher>,
}

impl Runner for TransitionRunner {
    type Item = Waiter;
    type Carry = PoolConnection<MySql>;

    fn lane(&self) -> &Lane<Waiter> {
        &self.batcher.lane
    }

    async fn run(
        &self,
        batch: Vec<Waiter>,
        carry: Option<PoolConnection<MySql>>,
    ) -> Option<PoolConnection<MySql>> {
        self.repo.run_transitions(&self.batcher, batch, carry).await
    }
}

/// What became of one item's change in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Applied by this batch, and logged in it.
    Applied,
    /// Applied, with its event, by an earlier attempt of the same item that committed
    /// although its caller saw an error: nothing to write again.
    AppliedBefore,
    /// Not applied: the order is not in the change's status, or not under its lease.
    Lost,
}

/// What one attempt at a batch did.
enum Attempt {
    /// Committed: one outcome per item.
    Done(Vec<TransitionOutcome>),
    /// A completion's compare-and-set matched fewer orders than it named: rolled back.
    Short,
}

impl MySqlOrderRepository {
    /// `item` through the batcher: applied at once when nothing runs, else with what
    /// queued alongside it.
    pub(super) async fn transition_batched(
        &self,
        batcher: &Arc<Batcher>,
        item: Item,
    ) -> Result<TransitionOutcome, RepositoryError> {
        let runner = TransitionRunner {
            repo: self.unbatched(),
            batcher: batcher.clone(),
        };
        let (tx, reply) = oneshot::channel();
        // Moved into the queue only if it has to wait: a lone caller applies its own.
        let queued = || Waiter {
            item: item.clone(),
            reply: tx,
        };
        match join(&runner, queued) {
            Some(_slot) => {
                batcher.counters.solo.fetch_add(1, Ordering::Relaxed);
                self.transition_item(&item).await
            }
            None => reply.await.map_err(|_| {
                RepositoryError::unavailable_msg(
                    "the runtime shut down before this batched transition was applied",
                )
            })?,
        }
    }

    /// One batchable item alone: the batch path with one item, or the one-order path
    /// (which re-reads) when its completion lost its lease.
    pub(super) async fn transition_item(
        &self,
        item: &Item,
    ) -> Result<TransitionOutcome, RepositoryError> {
        let warm = Warm::default();
        let attempt = self
            .retrying("transition", || {
                self.transitions_once(std::slice::from_ref(item), &warm)
            })
            .await?;
        // Back to the pool before the one-order path acquires one.
        drop(warm);
        match attempt {
            Attempt::Done(mut outcomes) if outcomes.len() == 1 => outcomes.pop().ok_or_else(|| {
                RepositoryError::Unexpected(anyhow::Error::msg("a batch of one lost its outcome"))
            }),
            Attempt::Done(_) | Attempt::Short => {
                self.retrying("transition", || {
                    self.transition_once(item.id, &item.change, item.now)
                })
                .await
            }
        }
    }

    /// Applies one batch of queued transitions and answers each caller, falling back to
    /// one at a time when the batch fails or a completion in it lost its lease.
    async fn run_transitions(
        &self,
        batcher: &Batcher,
        waiters: Vec<Waiter>,
        carry: Option<PoolConnection<MySql>>,
    ) -> Option<PoolConnection<MySql>> {
        let warm = Warm::new(carry);
        let counters = &batcher.counters;
        let n = waiters.len() as u64;
        if n == 1 {
            counters.solo.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.transitions.fetch_add(n, Ordering::Relaxed);
        }
        let (items, replies): (Vec<Item>, Vec<_>) =
            waiters.into_iter().map(|w| (w.item, w.reply)).unzip();
        let attempt = self
            .retrying("transition (batch)", || {
                self.transitions_once(&items, &warm)
            })
            .await;
        match attempt {
            Ok(Attempt::Done(outcomes)) if outcomes.len() == items.len() => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that stopped waiting no longer needs the answer.
                    let _ = reply.send(Ok(outcome));
                }
            }
            other => {
                if let Err(e) = &other {
                    tracing::debug!(transitions = n, error = %order_core::app::ErrorChain(e),
                        "a transition batch failed: applying its items one by one");
                }
                counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                // Each on a task of its own, so they run side by side over the pool: a
                // batch of 256 whose connection was killed must not wait 256 round
                // trips for its last item. (Should the runtime be gone, the items are
                // dropped, and their callers get an error, never a hang.)
                for (item, reply) in items.into_iter().zip(replies) {
                    let repo = self.clone();
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        runtime.spawn(async move {
                            let outcome = repo.transition_item(&item).await;
                            let _ = reply.send(outcome);
                        });
                    }
                }
            }
        }
        warm.into_inner()
    }

    /// One attempt at a batch, as one transaction (see the module docs), rolled back on
    /// any error or a short completion; on `warm`'s connection if it holds one, which an
    /// attempt that ends cleanly (committed or rolled back) leaves there.
    async fn transitions_once(&self, items: &[Item], warm: &Warm) -> Result<Attempt, DbError> {
        let mut conn = self.acquire_warm(warm).await?;
        let mut tx = ScriptTx::new(&mut conn);
        let result = batch_in_transaction(&mut tx, items).await;
        let attempt = match result {
            Ok(Some(outcomes)) => Attempt::Done(outcomes),
            Ok(None) => {
                tx.rollback().await.ctx("rolling back")?;
                Attempt::Short
            }
            Err(e) => {
                // Should the rollback fail too, the connection is closed (`ScriptTx`).
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed transition batch");
                }
                return Err(e);
            }
        };
        drop(tx);
        self.keep_warm(warm, conn);
        Ok(attempt)
    }
}

/// The two scripts of one batch (see the module docs); `None` when a completion matched
/// short (the caller rolls back). Committed when it returns outcomes.
async fn batch_in_transaction(
    tx: &mut ScriptTx<'_>,
    items: &[Item],
) -> Result<Option<Vec<TransitionOutcome>>, DbError> {
    let mut starts = Vec::new();
    let mut completions = Vec::new();
    for item in items {
        match &item.change {
            StatusChange::Start { .. } => starts.push(item),
            StatusChange::Pay { .. } | StatusChange::Fail { .. } => completions.push(item),
            other => {
                return Err(DbError::data(format!(
                    "{other:?} cannot go through the batch path"
                )));
            }
        }
    }
    // Two completions of one order: at most one can match, so the count cannot tell
    // which; the one-by-one path decides.
    let mut completed = HashSet::new();
    if !completions.iter().all(|i| completed.insert(i.id)) {
        return Ok(None);
    }

    // The first script: BEGIN, the compare-and-sets, the started orders read back.
    let mut script = Script::new();
    script.sql("BEGIN").end();
    let started_at = (!starts.is_empty()).then(|| start_many(&mut script, &starts));
    let completed_at = (!completions.is_empty()).then(|| complete_many(&mut script, &completions));
    let read_at = (!starts.is_empty()).then(|| {
        script
            .sql(ORDERS_WITH_ITEMS_HEAD)
            .uints(starts.iter().map(|i| i.id.get()))
            .sql(ORDERS_WITH_ITEMS_TAIL);
        script.end()
    });
    let mut answers = tx.begin(script).await.ctx("applying a transition batch")?;
    if let Some(at) = completed_at
        && answers.matched(at) != completions.len() as u64
    {
        return Ok(None);
    }
    let matched_starts = started_at.map_or(0, |at| answers.matched(at));
    let started = match read_at {
        Some(at) => orders_with_items(answers.take(at))?,
        None => Default::default(),
    };

    // Each item's resulting order, and what became of its change.
    let mut results: Vec<Option<(Order, Fate)>> = Vec::with_capacity(items.len());
    for item in items {
        results.push(match (&item.change, &item.current) {
            (StatusChange::Start { lease }, _) => started.get(&item.id.get()).map(|row| {
                let ours = row.status() == OrderStatus::Processing
                    && row.lease().map(|l| l.token) == Some(lease.token);
                (row.clone(), if ours { Fate::Applied } else { Fate::Lost })
            }),
            (change, Some(current)) => {
                let mut order = current.clone();
                order.apply(change, item.now).map_err(|e| {
                    DbError::data(format!(
                        "order {} matched a completion its held copy refuses: {e}",
                        item.id
                    ))
                })?;
                Some((order, Fate::Applied))
            }
            (change, None) => {
                return Err(DbError::data(format!(
                    "{change:?} of order {} without the caller's order",
                    item.id
                )));
            }
        });
    }
    // A Start whose order already carries its token although this compare-and-set did
    // not match it was applied by an earlier attempt of the same item, whose commit went
    // through while its connection failed (a killed connection, a retried batch): its
    // event is logged already, and logging it again would record the Start twice. The
    // compare-and-set's matched count tells whether any such item is in the batch, not
    // which: a batch of one knows (its Start applied before; its logged event is read
    // back below); a larger batch is rolled back and goes one by one.
    let ours = items
        .iter()
        .zip(&results)
        .filter(|(item, result)| {
            matches!(item.change, StatusChange::Start { .. })
                && matches!(result, Some((_, Fate::Applied)))
        })
        .count() as u64;
    if ours > matched_starts {
        if items.len() > 1 {
            return Ok(None);
        }
        for (_, fate) in results.iter_mut().flatten() {
            if *fate == Fate::Applied {
                *fate = Fate::AppliedBefore;
            }
        }
    }
    // Two Starts of one order: the first in the batch took it (`CASE` picks the first
    // match), and the row read carries that one's token — the others see a lost race.
    let applied: Vec<&Order> = results
        .iter()
        .filter_map(|r| match r {
            Some((order, Fate::Applied)) => Some(order),
            _ => None,
        })
        .collect();

    // The second script: the failed orders' stock put back, the log, COMMIT.
    let mut script = Script::new();
    let fails: Vec<u64> = completions
        .iter()
        .filter(|i| matches!(i.change, StatusChange::Fail { .. }))
        .map(|i| i.id.get())
        .collect();
    if !fails.is_empty() {
        script
            .sql(RETURN_STOCK_HEAD)
            .uints(fails)
            .sql(RETURN_STOCK_TAIL);
        script.end();
    }
    let logged = events::log_changes_in(&mut script, &applied);
    // The event an earlier attempt logged (only ever in a batch of one: see above).
    let mut logged_before = match results.as_slice() {
        [Some((order, Fate::AppliedBefore))] => {
            Some(events::start_event_in(&mut script, order.id()))
        }
        _ => None,
    };
    script.sql("COMMIT").end();
    let mut answers = tx
        .commit(script)
        .await
        .ctx("logging and committing a transition batch")?;
    let mut logged = logged.events(&mut answers)?.into_iter();

    let mut outcomes = Vec::with_capacity(items.len());
    for result in results {
        outcomes.push(match result {
            None => TransitionOutcome::NotFound,
            Some((order, Fate::Applied)) => {
                let event = logged
                    .next()
                    .ok_or_else(|| DbError::data("an applied transition was left unlogged"))?;
                TransitionOutcome::Applied(order, Some(event))
            }
            Some((order, Fate::AppliedBefore)) => {
                let at = logged_before
                    .take()
                    .ok_or_else(|| DbError::data("a Start applied before was not read back"))?;
                let event = events::start_event(order.id(), answers.take(at))?;
                TransitionOutcome::Applied(order, Some(event))
            }
            Some((order, Fate::Lost)) => TransitionOutcome::LostRace(order),
        });
    }
    Ok(Some(outcomes))
}

/// The Start compare-and-sets of `items` in one statement.
fn start_many(script: &mut Script, items: &[&Item]) -> usize {
    let leases: Vec<(u64, Lease)> = items
        .iter()
        .filter_map(|item| match &item.change {
            StatusChange::Start { lease } => Some((item.id.get(), *lease)),
            _ => None,
        })
        .collect();
    script.sql(START_MANY_HEAD);
    for (id, lease) in &leases {
        script
            .sql(" WHEN ")
            .uint(*id)
            .sql(" THEN ")
            .uint(lease.token.raw());
    }
    script.sql(START_MANY_UNTIL);
    for (id, lease) in &leases {
        script
            .sql(" WHEN ")
            .uint(*id)
            .sql(" THEN ")
            .text(&to_sql(lease.until));
    }
    script.sql(START_MANY_AT);
    for item in items {
        script
            .sql(" WHEN ")
            .uint(item.id.get())
            .sql(" THEN ")
            .text(&to_sql(item.now));
    }
    script
        .sql(START_MANY_WHERE)
        .uints(items.iter().map(|i| i.id.get()))
        .sql(")");
    script.end()
}

/// The Pay and Fail compare-and-sets of `items` in one statement; its matched count is
/// how many orders matched (sqlx connects with `CLIENT_FOUND_ROWS`).
fn complete_many(script: &mut Script, items: &[&Item]) -> usize {
    script.sql(COMPLETE_MANY_HEAD);
    for item in items {
        script
            .sql(" WHEN ")
            .uint(item.id.get())
            .sql(" THEN ")
            .text(item.change.to().as_str());
    }
    script.sql(COMPLETE_MANY_REASON);
    for item in items {
        script
            .sql(" WHEN ")
            .uint(item.id.get())
            .sql(" THEN COALESCE(");
        match &item.change {
            StatusChange::Fail { reason, .. } => script.text(reason.as_str()),
            _ => script.sql("NULL"),
        };
        script.sql(", failure_reason)");
    }
    script.sql(COMPLETE_MANY_AT);
    for item in items {
        script
            .sql(" WHEN ")
            .uint(item.id.get())
            .sql(" THEN ")
            .text(&to_sql(item.now));
    }
    script.sql(COMPLETE_MANY_WHERE);
    for item in items {
        script.sql(" WHEN ").uint(item.id.get()).sql(" THEN ");
        match &item.change {
            StatusChange::Pay { lease } | StatusChange::Fail { lease, .. } => {
                script.uint(lease.raw())
            }
            _ => script.sql("NULL"),
        };
    }
    script
        .sql(COMPLETE_MANY_IN)
        .uints(items.iter().map(|i| i.id.get()))
        .sql(")");
    script.end()
}
