//! Order coalescing: concurrent one-draft `place` calls in one process are combined into
//! one multi-row batch (`batch.rs`), so a hot product's row is locked once per batch
//! instead of once per order, and orders for different products share one transaction
//! of a constant number of statements.
//!
//! **Flush policy: group commit** (`group.rs`), one lane for every draft of the
//! repository. A draft arriving while nothing runs is placed at once, in its caller's
//! task, through the one-draft path; drafts arriving while a placement runs go together
//! as the next batch (or at `max_batch` drafts, or after `max_wait`), whatever their
//! products: the batch locks every product row it needs once, ascending, so drafts for
//! different products cost no more than drafts for one. (The first version queued per
//! product set; with 1 000 products the sets rarely met, nothing batched, and the
//! spread load ran at 0.49x the raw transaction. One lane measured 1.35x.)
//!
//! A queue of one is placed through the one-draft path; a batch that fails or races a
//! concurrent twin on an idempotency key is placed again draft by draft, so one draft's
//! problem never fails the others. Each caller waits on its own oneshot for its own
//! outcome.
//!
//! **Lock policy.** Coalescing needs placements that overlap in time. With the service's
//! `LockMode::Distributed`, the per-product locks keep concurrent creates of one product
//! apart, so a hot product's orders never batch, while orders for different products
//! still do; with `LockMode::None`, where the database row lock is the only guard, the
//! orders for a hot product arrive together and batch too.
//!
//! **Runtime.** See `group.rs`: a running batch keeps the coalescer alive, and when it
//! ends it hands its lane to the next queued batch, so dropping every handle to the
//! repository loses no queued draft. Should the runtime itself shut down first, the
//! callers of pending batches get [`RepositoryError::Unavailable`], never a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use order_core::Timestamp;
use order_core::domain::OrderDraft;
use order_core::ports::{PlaceOutcome, RepositoryError};
use sqlx::MySql;
use sqlx::pool::PoolConnection;
use tokio::sync::oneshot;

use super::MySqlOrderRepository;
use super::batch::{BatchAttempt, Entry, MAX_BATCH_DRAFTS};
use super::group::{Lane, Runner, join};
use super::script::Warm;

/// How [`MySqlOrderRepository`] coalesces concurrent placements (see
/// [`with_coalescing`](MySqlOrderRepository::with_coalescing)): a checked pair of limits.
///
/// The default — 64 drafts, 5 ms — is what [`MySqlOrderRepository::new`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    max_batch: usize,
    max_wait: Duration,
}

/// Why a [`CoalesceConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CoalesceConfigError {
    /// `max_batch` outside `2..=`[`CoalesceConfig::MAX_BATCH`].
    #[error("max_batch must be between 2 and {max}, got {got}")]
    MaxBatch {
        /// The value given.
        got: usize,
        /// [`CoalesceConfig::MAX_BATCH`].
        max: usize,
    },
    /// `max_wait` zero or above [`CoalesceConfig::MAX_WAIT`].
    #[error("max_wait must be above zero and at most {max:?}, got {got:?}")]
    MaxWait {
        /// The value given.
        got: Duration,
        /// [`CoalesceConfig::MAX_WAIT`].
        max: Duration,
    },
}

impl CoalesceConfig {
    /// The largest `max_batch`: the most drafts whose rows fit the batch's statements
    /// (the lines insert binds 4 values per line, 50 lines per draft, within the 65 535
    /// placeholders of one statement).
    pub const MAX_BATCH: usize = MAX_BATCH_DRAFTS;
    /// The largest `max_wait`. Coalescing is meant to cost a caller a few milliseconds at
    /// most; anything longer is a misconfiguration.
    pub const MAX_WAIT: Duration = Duration::from_secs(1);

    /// A batch flushes once it holds `max_batch` drafts, or once its first draft has
    /// waited `max_wait` (and, before either, when the batch ahead of it in its lane
    /// finishes).
    ///
    /// # Errors
    /// [`CoalesceConfigError::MaxBatch`] unless `2 <= max_batch <=`
    /// [`MAX_BATCH`](Self::MAX_BATCH) (turn coalescing off with
    /// [`without_coalescing`](MySqlOrderRepository::without_coalescing) instead of a
    /// batch of one); [`CoalesceConfigError::MaxWait`] unless `0 < max_wait <=`
    /// [`MAX_WAIT`](Self::MAX_WAIT).
    pub fn new(max_batch: usize, max_wait: Duration) -> Result<Self, CoalesceConfigError> {
        if !(2..=Self::MAX_BATCH).contains(&max_batch) {
            return Err(CoalesceConfigError::MaxBatch {
                got: max_batch,
                max: Self::MAX_BATCH,
            });
        }
        if max_wait.is_zero() || max_wait > Self::MAX_WAIT {
            return Err(CoalesceConfigError::MaxWait {
                got: max_wait,
                max: Self::MAX_WAIT,
            });
        }
        Ok(Self {
            max_batch,
            max_wait,
        })
    }

    /// The most drafts in one batch.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The longest a queued draft waits for the batch ahead of it before its own batch
    /// starts anyway.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

impl Default for CoalesceConfig {
    /// 64 drafts, 5 ms: measured on a hot product at 64 concurrent callers, 2 ms split batches that were still forming (1.05× the raw transaction), 5 ms let them fill (1.7×).
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait: Duration::from_millis(5),
        }
    }
}

/// What the coalescer did since it was made, from
/// [`coalescing_stats`](MySqlOrderRepository::coalescing_stats). All zero when coalescing
/// is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalescingStats {
    /// Batches of two drafts or more run through the multi-row path (including those
    /// that then fell back).
    pub batches: u64,
    /// Drafts in those batches.
    pub drafts: u64,
    /// Drafts placed alone: their lane was idle, or they were the only one queued.
    pub solo: u64,
    /// Batches that failed or raced a concurrent twin's key and were placed again draft
    /// by draft.
    pub fallbacks: u64,
    /// The largest batch so far.
    pub largest_batch: u64,
    /// Transition batches of two transitions or more (including those that then fell
    /// back).
    pub transition_batches: u64,
    /// Transitions in those batches.
    pub batched_transitions: u64,
    /// Transitions applied alone (nothing else was waiting).
    pub solo_transitions: u64,
    /// Transition batches that failed, or in which a completion had lost its lease, and
    /// were applied again one by one.
    pub transition_fallbacks: u64,
}

/// One caller's queued draft and where its outcome goes.
pub(super) struct Waiter {
    draft: OrderDraft,
    now: Timestamp,
    reply: oneshot::Sender<Result<PlaceOutcome, RepositoryError>>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    drafts: AtomicU64,
    solo: AtomicU64,
    fallbacks: AtomicU64,
    largest_batch: AtomicU64,
}

/// The lane of one repository (shared by its clones) and its counters.
pub(super) struct Coalescer {
    config: CoalesceConfig,
    lane: Lane<Waiter>,
    counters: Counters,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Coalescer {
    pub(super) fn new(config: CoalesceConfig) -> Self {
        Self {
            config,
            lane: Lane::new(config.max_batch, config.max_wait),
            counters: Counters::default(),
        }
    }

    pub(super) fn stats(&self) -> CoalescingStats {
        let c = &self.counters;
        CoalescingStats {
            batches: c.batches.load(Ordering::Relaxed),
            drafts: c.drafts.load(Ordering::Relaxed),
            solo: c.solo.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            ..CoalescingStats::default()
        }
    }
}

/// Places the batches of a [`Coalescer`]'s lane.
#[derive(Clone)]
struct PlaceRunner {
    /// A handle that never coalesces (what the batches place through).
    repo: MySqlOrderRepository,
    coalescer: Arc<Coalescer>,
}

impl Runner for PlaceRunner {
    type Item = Waiter;
    type Carry = PoolConnection<MySql>;

    fn lane(&self) -> &Lane<Waiter> {
        &self.coalescer.lane
    }

    async fn run(
        &self,
        batch: Vec<Waiter>,
        carry: Option<PoolConnection<MySql>>,
    ) -> Option<PoolConnection<MySql>> {
        self.repo.run_batch(&self.coalescer, batch, carry).await
    }
}

/// One outcome out of a one-draft `place`.
fn single(
    result: Result<Vec<PlaceOutcome>, RepositoryError>,
) -> Result<PlaceOutcome, RepositoryError> {
    result?.into_iter().next().ok_or_else(|| {
        RepositoryError::Unexpected(anyhow::Error::msg("a one-draft place returned no outcome"))
    })
}

impl MySqlOrderRepository {
    /// `place` of one draft with coalescing on: placed at once when the lane is idle,
    /// else queued and placed with what queued alongside it.
    pub(super) async fn place_coalesced(
        &self,
        coalescer: &Arc<Coalescer>,
        draft: &OrderDraft,
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        let runner = PlaceRunner {
            repo: self.uncoalesced(),
            coalescer: coalescer.clone(),
        };
        let (tx, reply) = oneshot::channel();
        // The draft is copied only if it has to queue: a lone caller places its own.
        let queued = || Waiter {
            draft: draft.clone(),
            now,
            reply: tx,
        };
        match join(&runner, queued) {
            Some(_slot) => {
                coalescer.counters.solo.fetch_add(1, Ordering::Relaxed);
                self.place_direct(std::slice::from_ref(draft), now).await
            }
            None => {
                let outcome = reply.await.map_err(|_| {
                    RepositoryError::unavailable_msg(
                        "the runtime shut down before this coalesced draft was placed",
                    )
                })?;
                outcome.map(|o| vec![o])
            }
        }
    }

    /// Places one batch of queued drafts and answers each caller: a batch of one through
    /// the one-draft path, more through the multi-row path (on `carry`, the connection
    /// the batch before it committed on, if any), falling back to one draft at a time
    /// when that fails or races. Returns the connection for the next batch.
    async fn run_batch(
        &self,
        coalescer: &Coalescer,
        mut batch: Vec<Waiter>,
        carry: Option<PoolConnection<MySql>>,
    ) -> Option<PoolConnection<MySql>> {
        let counters = &coalescer.counters;
        if batch.len() == 1 {
            // The one-draft path takes its connection from the pool: a carried one goes
            // back there first rather than sit idle beside it.
            drop(carry);
            if let Some(w) = batch.pop() {
                counters.solo.fetch_add(1, Ordering::Relaxed);
                let outcome = single(
                    self.place_direct(std::slice::from_ref(&w.draft), w.now)
                        .await,
                );
                // A caller that stopped waiting no longer needs the answer.
                let _ = w.reply.send(outcome);
            }
            return None;
        }
        let warm = Warm::new(carry);
        let n = batch.len() as u64;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.drafts.fetch_add(n, Ordering::Relaxed);
        counters.largest_batch.fetch_max(n, Ordering::Relaxed);
        let attempt = {
            let entries: Vec<Entry<'_>> = batch
                .iter()
                .map(|w| Entry {
                    draft: &w.draft,
                    now: w.now,
                })
                .collect();
            self.place_batch("place (coalesced batch)", &entries, &warm)
                .await
        };
        match attempt {
            Ok(BatchAttempt::Done(outcomes)) if outcomes.len() == batch.len() => {
                for (w, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = w.reply.send(Ok(outcome));
                }
            }
            other => {
                if let Err(e) = &other {
                    tracing::debug!(drafts = n, error = %order_core::app::ErrorChain(e), "a coalesced batch failed: placing its drafts one by one");
                }
                counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                // The drafts go through the pool; a connection kept for the next batch
                // goes back to it first (a pool of one would wait for it otherwise).
                drop(warm.take());
                for w in batch {
                    let outcome = single(
                        self.place_direct(std::slice::from_ref(&w.draft), w.now)
                            .await,
                    );
                    let _ = w.reply.send(outcome);
                }
            }
        }
        warm.into_inner()
    }
}
