//! Order coalescing: concurrent one-draft `place` calls in one process that touch the
//! same products are combined into one multi-row batch (`batch.rs`), so a hot product's
//! row is locked once per batch instead of once per order.
//!
//! **Flush policy: group commit.** Drafts are queued per *lane* — the sorted product ids
//! of the draft, so only drafts touching exactly the same rows wait for each other. A
//! draft that finds its lane idle (nothing running, nothing queued) is placed at once, in
//! its caller's task, through the one-draft path: a lone caller pays nothing for
//! coalescing. While something runs in a lane, arrivals queue; the queue is flushed as
//! one batch
//!
//! - when the running batch (or lone draft) finishes — the common case under load: the
//!   next batch is exactly what arrived while the previous one held the row;
//! - when it reaches `max_batch` drafts, at once, even though another batch is still
//!   running (it then queues on the row lock behind it);
//! - when its first draft has waited `max_wait`, even though another batch is still
//!   running (a batch stuck behind another process's lock does not hold later drafts
//!   back for longer than that).
//!
//! A queue of one is placed through the one-draft path; a batch that fails or races a
//! concurrent twin on an idempotency key is placed again draft by draft, so one draft's
//! problem never fails the others. Each caller waits on its own oneshot for its own
//! outcome.
//!
//! **Lock policy.** Coalescing needs placements that overlap in time. With the service's
//! `LockMode::Redis`, per-product distributed locks keep concurrent creates of one
//! product apart, so nothing ever queues and every draft goes alone (at no cost); it pays
//! with `LockMode::None`, where the database row lock is the only guard and the orders
//! for a hot product arrive together.
//!
//! **Runtime.** Queued batches run on tasks spawned on the current tokio runtime; the
//! lanes are a `std::sync::Mutex`, held only to move drafts in and out of a queue, never
//! across an `.await`. A running batch keeps the coalescer alive, and when it ends it
//! hands its lane to the next queued batch, so dropping every handle to the repository
//! loses no queued draft: it is still placed. Should the runtime itself shut down first,
//! the pending batches' tasks are dropped, and with them the reply channels: their
//! callers get [`RepositoryError::Unavailable`], never a hang.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use order_core::domain::OrderDraft;
use order_core::ports::{PlaceOutcome, RepositoryError};
use order_core::{ProductId, Timestamp};
use tokio::sync::oneshot;

use super::MySqlOrderRepository;
use super::batch::{BatchAttempt, Entry, MAX_BATCH_DRAFTS};

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
}

/// One caller's queued draft and where its outcome goes.
struct Waiter {
    draft: OrderDraft,
    now: Timestamp,
    reply: oneshot::Sender<Result<PlaceOutcome, RepositoryError>>,
}

/// The drafts touching one set of products.
#[derive(Default)]
struct Lane {
    /// Batches (or lone drafts) of this lane being placed right now.
    running: usize,
    /// Drafts waiting, in arrival order (never more than `max_batch`).
    queue: Vec<Waiter>,
    /// Bumped whenever the queue is taken, so a `max_wait` timer can tell whether the
    /// queue it was started for is still waiting.
    generation: u64,
}

/// What an arriving draft does.
enum Arrival {
    /// The lane was idle: place it now, in the caller's task (the lane is marked
    /// running).
    Lead,
    /// Queued: wait for the outcome. `start` says what the arrival must set going.
    Queued {
        reply: oneshot::Receiver<Result<PlaceOutcome, RepositoryError>>,
        start: Start,
    },
}

/// What a queued arrival sets going, after the lanes' lock is released.
enum Start {
    /// Nothing: the queue already has a timer or will be taken by the running batch.
    Nothing,
    /// The first of a new queue: a `max_wait` timer for this generation.
    Timer(u64),
    /// The queue is full: this batch, now (the lane already counts it as running).
    Batch(Vec<Waiter>),
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    drafts: AtomicU64,
    solo: AtomicU64,
    fallbacks: AtomicU64,
    largest_batch: AtomicU64,
}

/// The lanes of one repository (shared by its clones) and their counters.
pub(super) struct Coalescer {
    config: CoalesceConfig,
    lanes: Mutex<HashMap<Vec<ProductId>, Lane>>,
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
            lanes: Mutex::new(HashMap::new()),
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
        }
    }

    /// The lanes. Every critical section only moves values in and out of maps and
    /// vectors, so a panic cannot leave a lane half-changed: a poisoned lock is used
    /// as it is.
    fn lanes(&self) -> MutexGuard<'_, HashMap<Vec<ProductId>, Lane>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn arrive(&self, key: &[ProductId], draft: &OrderDraft, now: Timestamp) -> Arrival {
        let mut lanes = self.lanes();
        let lane = lanes.entry(key.to_vec()).or_default();
        if lane.running == 0 && lane.queue.is_empty() {
            lane.running = 1;
            return Arrival::Lead;
        }
        let (tx, rx) = oneshot::channel();
        lane.queue.push(Waiter {
            draft: draft.clone(),
            now,
            reply: tx,
        });
        let start = if lane.queue.len() >= self.config.max_batch {
            lane.running += 1;
            lane.generation += 1;
            Start::Batch(std::mem::take(&mut lane.queue))
        } else if lane.queue.len() == 1 {
            Start::Timer(lane.generation)
        } else {
            Start::Nothing
        };
        Arrival::Queued { reply: rx, start }
    }

    /// A running batch of `key`'s lane ended: the queued drafts are its successor (the
    /// lane stays running), or the lane has one batch fewer running (and is forgotten
    /// once idle).
    fn next_batch(&self, key: &[ProductId]) -> Option<Vec<Waiter>> {
        let mut lanes = self.lanes();
        let lane = lanes.get_mut(key)?;
        if !lane.queue.is_empty() {
            lane.generation += 1;
            return Some(std::mem::take(&mut lane.queue));
        }
        lane.running = lane.running.saturating_sub(1);
        if lane.running == 0 {
            lanes.remove(key);
        }
        None
    }

    /// The `max_wait` timer of `generation` fired: the queue it was started for, if it
    /// is still waiting (the lane then counts one more batch running).
    fn take_if_still_waiting(&self, key: &[ProductId], generation: u64) -> Option<Vec<Waiter>> {
        let mut lanes = self.lanes();
        let lane = lanes.get_mut(key)?;
        if lane.generation != generation || lane.queue.is_empty() {
            return None;
        }
        lane.generation += 1;
        lane.running += 1;
        Some(std::mem::take(&mut lane.queue))
    }
}

/// One running batch's hold on its lane. However the holder ends — done, failed, or
/// dropped mid-way (a cancelled caller, a runtime shutting down) — dropping it hands the
/// lane to the next queued batch, so queued drafts are never stranded.
struct Slot {
    repo: MySqlOrderRepository,
    coalescer: Arc<Coalescer>,
    key: Vec<ProductId>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(next) = self.coalescer.next_batch(&self.key) {
            let slot = Slot {
                repo: self.repo.clone(),
                coalescer: self.coalescer.clone(),
                key: std::mem::take(&mut self.key),
            };
            spawn_batch(slot, next);
        }
    }
}

/// Runs `batch` under `slot` on a task of its own. Outside a runtime (it is gone), the
/// batch is dropped: its callers' reply channels close and they get an error.
fn spawn_batch(slot: Slot, batch: Vec<Waiter>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                slot.repo.run_batch(&slot.coalescer, batch).await;
                drop(slot);
            });
        }
        Err(_) => {
            drop(batch);
            drop(slot);
        }
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
    /// `place` of one draft with coalescing on: placed at once when its lane is idle,
    /// else queued and placed with what queued alongside it.
    pub(super) async fn place_coalesced(
        &self,
        coalescer: &Arc<Coalescer>,
        draft: &OrderDraft,
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        let key: Vec<ProductId> = draft.product_ids().collect();
        match coalescer.arrive(&key, draft, now) {
            Arrival::Lead => {
                let _slot = Slot {
                    repo: self.uncoalesced(),
                    coalescer: coalescer.clone(),
                    key,
                };
                coalescer.counters.solo.fetch_add(1, Ordering::Relaxed);
                self.place_direct(std::slice::from_ref(draft), now).await
            }
            Arrival::Queued { reply, start } => {
                match start {
                    Start::Nothing => {}
                    Start::Timer(generation) => {
                        let repo = self.uncoalesced();
                        let coalescer = coalescer.clone();
                        let wait = coalescer.config.max_wait;
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            if let Some(batch) = coalescer.take_if_still_waiting(&key, generation) {
                                let slot = Slot {
                                    repo,
                                    coalescer,
                                    key,
                                };
                                slot.repo.run_batch(&slot.coalescer, batch).await;
                            }
                        });
                    }
                    Start::Batch(batch) => spawn_batch(
                        Slot {
                            repo: self.uncoalesced(),
                            coalescer: coalescer.clone(),
                            key,
                        },
                        batch,
                    ),
                }
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
    /// the one-draft path, more through the multi-row path, falling back to one draft at
    /// a time when that fails or races.
    async fn run_batch(&self, coalescer: &Coalescer, mut batch: Vec<Waiter>) {
        let counters = &coalescer.counters;
        if batch.len() == 1 {
            if let Some(w) = batch.pop() {
                counters.solo.fetch_add(1, Ordering::Relaxed);
                let outcome = single(
                    self.place_direct(std::slice::from_ref(&w.draft), w.now)
                        .await,
                );
                // A caller that stopped waiting no longer needs the answer.
                let _ = w.reply.send(outcome);
            }
            return;
        }
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
            self.retrying("place (coalesced batch)", || {
                self.place_batch_once(&entries)
            })
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
                for w in batch {
                    let outcome = single(
                        self.place_direct(std::slice::from_ref(&w.draft), w.now)
                            .await,
                    );
                    let _ = w.reply.send(outcome);
                }
            }
        }
    }
}
