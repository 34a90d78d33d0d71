//! Group commit: the queueing policy shared by order coalescing (`coalesce.rs`) and
//! transition batching (`batched.rs`), each of which queues all its work in one
//! [`Lane`].
//!
//! An item arriving while the lane is idle (nothing running, nothing queued) *leads*: its
//! caller runs it at once, in its own task, so a lone caller pays nothing for batching.
//! While something runs, arrivals queue; the queue is taken as one batch
//!
//! - when the running batch (or lone item) finishes — the common case under load: the
//!   next batch is exactly what arrived while the previous one ran;
//! - when it reaches `max_batch` items, at once, even though another batch still runs;
//! - when its first item has waited `max_wait`, even though another batch still runs (a
//!   batch stuck behind another process's lock does not hold later items back longer).
//!
//! A *sequential* lane ([`Lane::sequential`]) keeps only the first rule: one batch at a
//! time, at most `max_batch` items each. A *paced* lane ([`Lane::paced`]) keeps only the
//! last two: nobody leads, and a running batch's end takes nothing — every item waits
//! for its queue's `max_wait` (or for `max_batch` items), so batches go about once per
//! `max_wait`, plus one per `max_batch` items.
//!
//! **Carry.** A batch that ends while another is queued hands that batch what it leaves
//! ([`Runner::Carry`]: for the MySQL batchers, the connection it has just committed on,
//! which spares the next batch the pool's acquire and ping); with nothing queued the
//! carry is dropped.
//!
//! **Runtime.** Queued batches run on tasks spawned on the current tokio runtime; the
//! lane is a `std::sync::Mutex`, held only to move items in and out of the queue, never
//! across an `.await`. A running batch holds a [`Slot`]; however it ends — done,
//! failed, or dropped mid-way (a cancelled caller, a runtime shutting down) — dropping
//! the slot hands the lane to the next queued batch, so queued items are never stranded.
//! Should the runtime itself shut down first, pending batches' tasks are dropped, and
//! with them the items (whose reply channels then close: their callers get an error,
//! never a hang).

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// What the lane holds between batches.
struct State<T> {
    /// Batches (or lone items) running right now.
    running: usize,
    /// Items waiting, in arrival order.
    queue: Vec<T>,
    /// Bumped whenever the queue is taken, so a `max_wait` timer can tell whether the
    /// queue it was started for is still waiting.
    generation: u64,
}

/// When a lane's queue goes (besides at `max_batch` items).
#[derive(Debug, Clone, Copy)]
enum Flush {
    /// When the running batch ends, or once its first item has waited this long
    /// ([`Lane::new`]); a lone arrival leads.
    EndOrWait(Duration),
    /// Only when the running batch ends: one batch at a time ([`Lane::sequential`]).
    End,
    /// Only once its first item has waited this long; nobody leads ([`Lane::paced`]).
    Wait(Duration),
}

/// One batcher's queue and its flush limits.
pub(crate) struct Lane<T> {
    max_batch: usize,
    flush: Flush,
    state: Mutex<State<T>>,
}

/// Runs batches taken from a [`Lane`]: what a batcher plugs into the policy.
pub(crate) trait Runner: Clone + Send + Sync + 'static {
    /// One queued item (it carries its own reply channel).
    type Item: Send + 'static;
    /// What a batch that ends hands to the batch that follows it at once (see
    /// [`Slot`]): for the MySQL batchers, the connection it has just committed on.
    type Carry: Send + 'static;
    /// The lane this runner's batches come from.
    fn lane(&self) -> &Lane<Self::Item>;
    /// Runs one batch of at least one item, answering every item, with what the batch
    /// before it left (`None` when this batch did not follow one at once); returns what
    /// it leaves to the next.
    fn run(
        &self,
        batch: Vec<Self::Item>,
        carry: Option<Self::Carry>,
    ) -> impl Future<Output = Option<Self::Carry>> + Send;
}

impl<T> Lane<T> {
    /// A lane that flushes at `max_batch` items or after `max_wait`.
    pub(crate) fn new(max_batch: usize, max_wait: Duration) -> Self {
        Self::with(max_batch, Flush::EndOrWait(max_wait))
    }

    /// A lane whose items always queue, and whose queue goes when its first item has
    /// waited `max_wait` or when it holds `max_batch` items — never earlier because the
    /// lane is idle or a batch ended. For work that is cheap to delay but costs the
    /// server per batch (a commit each): it trades up to `max_wait` per item for fewer,
    /// larger batches.
    pub(crate) fn paced(max_batch: usize, max_wait: Duration) -> Self {
        Self::with(max_batch, Flush::Wait(max_wait))
    }

    /// A lane that never runs two batches at once: the queue is taken only when the
    /// running batch ends, at most `max_batch` items at a time (the rest wait for the
    /// next), and no timer starts one early. For work whose batches would only wait for
    /// each other's row locks if they ran at once.
    pub(crate) fn sequential(max_batch: usize) -> Self {
        Self::with(max_batch, Flush::End)
    }

    fn with(max_batch: usize, flush: Flush) -> Self {
        Self {
            max_batch,
            flush,
            state: Mutex::new(State {
                running: 0,
                queue: Vec::new(),
                generation: 0,
            }),
        }
    }

    /// How long a queue's first item waits before the queue goes anyway (`None`: it
    /// waits for the running batch to end).
    fn max_wait(&self) -> Option<Duration> {
        match self.flush {
            Flush::EndOrWait(wait) | Flush::Wait(wait) => Some(wait),
            Flush::End => None,
        }
    }

    /// The lane's state. Every critical section only moves values in and out of the
    /// queue, so a panic cannot leave it half-changed: a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A running batch ended: the queued items are its successor (the lane stays
    /// running), or the lane has one batch fewer running.
    fn next_batch(&self) -> Option<Vec<T>> {
        let mut state = self.lock();
        if state.queue.is_empty() || matches!(self.flush, Flush::Wait(_)) {
            state.running = state.running.saturating_sub(1);
            return None;
        }
        state.generation += 1;
        if matches!(self.flush, Flush::End) && state.queue.len() > self.max_batch {
            return Some(state.queue.drain(..self.max_batch).collect());
        }
        Some(std::mem::take(&mut state.queue))
    }

    /// The `max_wait` timer of `generation` fired: the queue it was started for, if it
    /// is still waiting (the lane then counts one more batch running).
    fn take_if_still_waiting(&self, generation: u64) -> Option<Vec<T>> {
        let mut state = self.lock();
        if state.generation != generation || state.queue.is_empty() {
            return None;
        }
        state.generation += 1;
        state.running += 1;
        Some(std::mem::take(&mut state.queue))
    }
}

/// What an arrival must set going once the lane's lock is released.
enum Start<T> {
    /// The caller leads: the lane was idle (and now counts it as running).
    Lead,
    /// Nothing: the queue already has a timer or will be taken by the running batch.
    Nothing,
    /// The first of a new queue: a `max_wait` timer for this generation.
    Timer(u64),
    /// The queue is full: this batch, now (the lane already counts it as running).
    Batch(Vec<T>),
}

/// An arrival at `runner`'s lane. When the lane is idle the caller leads: it gets the
/// [`Slot`] and runs its work itself, now, holding the slot until it is done — and
/// `queued` is never called. Otherwise the item `queued` builds is queued (`None` is
/// returned: the item's own reply channel answers it), and whatever the arrival sets
/// going (a `max_wait` timer, a full batch) is spawned.
pub(crate) fn join<R: Runner>(runner: &R, queued: impl FnOnce() -> R::Item) -> Option<Slot<R>> {
    let start = {
        let lane = runner.lane();
        let mut state = lane.lock();
        let leads = !matches!(lane.flush, Flush::Wait(_));
        if leads && state.running == 0 && state.queue.is_empty() {
            state.running = 1;
            Start::Lead
        } else {
            state.queue.push(queued());
            match lane.max_wait() {
                None => Start::Nothing,
                Some(_) if state.queue.len() >= lane.max_batch => {
                    state.running += 1;
                    state.generation += 1;
                    Start::Batch(std::mem::take(&mut state.queue))
                }
                Some(_) if state.queue.len() == 1 => Start::Timer(state.generation),
                Some(_) => Start::Nothing,
            }
        }
    };
    let slot = || Slot {
        runner: runner.clone(),
        carry: None,
    };
    match start {
        Start::Lead => return Some(slot()),
        Start::Nothing => {}
        Start::Batch(batch) => spawn_batch(slot(), batch),
        Start::Timer(generation) => {
            let runner = runner.clone();
            let wait = runner.lane().max_wait().unwrap_or_default();
            // Without a runtime there is no timer: the queue still goes when the running
            // batch ends.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(batch) = runner.lane().take_if_still_waiting(generation) {
                        let mut slot = Slot {
                            runner,
                            carry: None,
                        };
                        slot.carry = slot.runner.run(batch, None).await;
                    }
                });
            }
        }
    }
    None
}

/// One running batch's hold on the lane; dropping it hands the lane to the next queued
/// batch (see the module docs), together with what the batch left (its `carry`); with
/// no batch queued, the carry is dropped.
pub(crate) struct Slot<R: Runner> {
    runner: R,
    carry: Option<R::Carry>,
}

impl<R: Runner> Drop for Slot<R> {
    fn drop(&mut self) {
        if let Some(next) = self.runner.lane().next_batch() {
            spawn_batch(
                Slot {
                    runner: self.runner.clone(),
                    carry: self.carry.take(),
                },
                next,
            );
        }
    }
}

/// Runs `batch` under `slot` on a task of its own. Outside a runtime (it is gone), the
/// batch is dropped: its callers' reply channels close and they get an error.
fn spawn_batch<R: Runner>(mut slot: Slot<R>, batch: Vec<R::Item>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let carry = slot.carry.take();
                slot.carry = slot.runner.run(batch, carry).await;
                drop(slot);
            });
        }
        Err(_) => {
            drop(batch);
            drop(slot);
        }
    }
}
