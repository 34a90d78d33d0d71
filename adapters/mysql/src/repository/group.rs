//! Group commit: the queueing policy shared by order coalescing (`coalesce.rs`) and
//! transition batching (`batched.rs`).
//!
//! Work items are queued per *lane* (a key; order coalescing and transition batching each
//! use one lane today). An item that finds its lane idle (nothing running, nothing queued)
//! *leads*: its caller runs it at once, in its own task, so a lone caller pays nothing
//! for batching. While something runs in a lane, arrivals queue; the queue is taken as
//! one batch
//!
//! - when the running batch (or lone item) finishes — the common case under load: the
//!   next batch is exactly what arrived while the previous one ran;
//! - when it reaches `max_batch` items, at once, even though another batch still runs;
//! - when its first item has waited `max_wait`, even though another batch still runs (a
//!   batch stuck behind another process's lock does not hold later items back longer).
//!
//! *Sequential* lanes ([`Lanes::sequential`]) keep only the first rule: one batch at a
//! time per lane, at most `max_batch` items each.
//!
//! **Runtime.** Queued batches run on tasks spawned on the current tokio runtime; the
//! lanes are a `std::sync::Mutex`, held only to move items in and out of a queue, never
//! across an `.await`. A running batch holds a [`Slot`]; however it ends — done,
//! failed, or dropped mid-way (a cancelled caller, a runtime shutting down) — dropping
//! the slot hands the lane to the next queued batch, so queued items are never stranded.
//! Should the runtime itself shut down first, pending batches' tasks are dropped, and
//! with them the items (whose reply channels then close: their callers get an error,
//! never a hang).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The items queued in one lane.
struct Lane<T> {
    /// Batches (or lone items) of this lane running right now.
    running: usize,
    /// Items waiting, in arrival order (never more than `max_batch`).
    queue: Vec<T>,
    /// Renewed (from [`LaneMap::next_generation`]) whenever the queue is taken, so a
    /// `max_wait` timer can tell whether the queue it was started for is still waiting.
    generation: u64,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Self {
            running: 0,
            queue: Vec::new(),
            generation: 0,
        }
    }
}

/// The lanes of one batcher and its flush limits.
pub(super) struct Lanes<K, T> {
    max_batch: usize,
    /// `None`: sequential lanes (see [`Lanes::sequential`]).
    max_wait: Option<Duration>,
    lanes: Mutex<LaneMap<K, T>>,
}

/// The lanes by key, and the source of their queue generations: one counter for all
/// lanes, so a lane forgotten when idle and made again later never reuses a generation
/// an old `max_wait` timer still holds (which would flush the new queue early).
struct LaneMap<K, T> {
    lanes: HashMap<K, Lane<T>>,
    generations: u64,
}

impl<K, T> LaneMap<K, T> {
    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }
}

/// What [`join`] did with an arriving item.
pub(super) enum Joined<R: Runner> {
    /// The lane was idle: the caller runs the item itself, now, holding the slot until
    /// it is done.
    Lead(Slot<R>, R::Item),
    /// Queued: the item's own reply channel will answer it.
    Queued,
}

/// Runs batches taken from a lane of [`Lanes`]: what a batcher plugs into the policy.
pub(super) trait Runner: Clone + Send + Sync + 'static {
    /// The lane key.
    type Key: Eq + Hash + Clone + Send + Sync + 'static;
    /// One queued item (it carries its own reply channel).
    type Item: Send + 'static;
    /// The lanes this runner's batches come from.
    fn lanes(&self) -> &Lanes<Self::Key, Self::Item>;
    /// Runs one batch of at least one item, answering every item.
    fn run(&self, batch: Vec<Self::Item>) -> impl Future<Output = ()> + Send;
}

impl<K: Eq + Hash + Clone, T> Lanes<K, T> {
    /// Lanes that flush at `max_batch` items or after `max_wait`.
    pub(super) fn new(max_batch: usize, max_wait: Duration) -> Self {
        Self {
            max_batch,
            max_wait: Some(max_wait),
            lanes: Mutex::new(LaneMap {
                lanes: HashMap::new(),
                generations: 0,
            }),
        }
    }

    /// Lanes that never run two batches at once: a queue is taken only when the running
    /// batch ends, at most `max_batch` items at a time (the rest wait for the next), and
    /// no timer starts one early. For work whose batches would only wait for each other's
    /// row locks if they ran at once.
    pub(super) fn sequential(max_batch: usize) -> Self {
        Self {
            max_batch,
            max_wait: None,
            lanes: Mutex::new(LaneMap {
                lanes: HashMap::new(),
                generations: 0,
            }),
        }
    }

    /// The lanes. Every critical section only moves values in and out of maps and
    /// vectors, so a panic cannot leave a lane half-changed: a poisoned lock is used as
    /// it is.
    fn lock(&self) -> MutexGuard<'_, LaneMap<K, T>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A running batch of `key`'s lane ended: the queued items are its successor (the
    /// lane stays running), or the lane has one batch fewer running (and is forgotten
    /// once idle).
    fn next_batch(&self, key: &K) -> Option<Vec<T>> {
        let mut map = self.lock();
        let generation = map.next_generation();
        let max_batch = self.max_batch;
        let sequential = self.max_wait.is_none();
        let lane = map.lanes.get_mut(key)?;
        if !lane.queue.is_empty() {
            lane.generation = generation;
            if sequential && lane.queue.len() > max_batch {
                return Some(lane.queue.drain(..max_batch).collect());
            }
            return Some(std::mem::take(&mut lane.queue));
        }
        lane.running = lane.running.saturating_sub(1);
        if lane.running == 0 {
            map.lanes.remove(key);
        }
        None
    }

    /// The `max_wait` timer of `generation` fired: the queue it was started for, if it
    /// is still waiting (the lane then counts one more batch running).
    fn take_if_still_waiting(&self, key: &K, generation: u64) -> Option<Vec<T>> {
        let mut map = self.lock();
        let next = map.next_generation();
        let lane = map.lanes.get_mut(key)?;
        if lane.generation != generation || lane.queue.is_empty() {
            return None;
        }
        lane.generation = next;
        lane.running += 1;
        Some(std::mem::take(&mut lane.queue))
    }
}

/// What an arrival must set going once the lanes' lock is released.
enum Start<T> {
    /// The caller leads: the lane was idle (and now counts it as running).
    Lead(T),
    /// Nothing: the queue already has a timer or will be taken by the running batch.
    Nothing,
    /// The first of a new queue: a `max_wait` timer for this generation.
    Timer(u64),
    /// The queue is full: this batch, now (the lane already counts it as running).
    Batch(Vec<T>),
}

/// Hands `item` to `key`'s lane of `runner`: the caller leads (runs it itself, now) when
/// the lane is idle; otherwise it is queued, and whatever the arrival sets going (a
/// `max_wait` timer, a full batch) is spawned.
pub(super) fn join<R: Runner>(runner: &R, key: R::Key, item: R::Item) -> Joined<R> {
    let start = {
        let lanes = runner.lanes();
        let max_batch = lanes.max_batch;
        let sequential = lanes.max_wait.is_none();
        let mut map = lanes.lock();
        let generation = map.next_generation();
        let lane = map.lanes.entry(key.clone()).or_default();
        if lane.running == 0 && lane.queue.is_empty() {
            lane.running = 1;
            lane.generation = generation;
            Start::Lead(item)
        } else {
            lane.queue.push(item);
            if sequential {
                Start::Nothing
            } else if lane.queue.len() >= max_batch {
                lane.running += 1;
                lane.generation = generation;
                Start::Batch(std::mem::take(&mut lane.queue))
            } else if lane.queue.len() == 1 {
                Start::Timer(lane.generation)
            } else {
                Start::Nothing
            }
        }
    };
    let slot = |key| Slot {
        runner: runner.clone(),
        key: Some(key),
    };
    match start {
        Start::Lead(item) => Joined::Lead(slot(key), item),
        Start::Nothing => Joined::Queued,
        Start::Batch(batch) => {
            spawn_batch(slot(key), batch);
            Joined::Queued
        }
        Start::Timer(generation) => {
            let runner = runner.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let wait = runner.lanes().max_wait.unwrap_or_default();
                runtime.spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(batch) = runner.lanes().take_if_still_waiting(&key, generation) {
                        let slot = Slot {
                            runner,
                            key: Some(key),
                        };
                        slot.runner.run(batch).await;
                    }
                });
            }
            // Without a runtime there is no timer: the queue still goes when the running
            // batch ends.
            Joined::Queued
        }
    }
}

/// One running batch's hold on its lane; dropping it hands the lane to the next queued
/// batch (see the module docs).
pub(super) struct Slot<R: Runner> {
    runner: R,
    key: Option<R::Key>,
}

impl<R: Runner> Drop for Slot<R> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        if let Some(next) = self.runner.lanes().next_batch(&key) {
            spawn_batch(
                Slot {
                    runner: self.runner.clone(),
                    key: Some(key),
                },
                next,
            );
        }
    }
}

/// Runs `batch` under `slot` on a task of its own. Outside a runtime (it is gone), the
/// batch is dropped: its callers' reply channels close and they get an error.
fn spawn_batch<R: Runner>(slot: Slot<R>, batch: Vec<R::Item>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                slot.runner.run(batch).await;
                drop(slot);
            });
        }
        Err(_) => {
            drop(batch);
            drop(slot);
        }
    }
}
