//! The deterministic machinery: a seeded RNG, a trace hash, a simulated clock whose
//! sleeps complete only when the scheduler moves time, and a single-threaded executor
//! that picks the next ready task with the seeded RNG.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use order_core::Timestamp;
use order_core::ports::{Clock, Sleep};

/// A task of the simulation (single-threaded: no `Send` needed).
pub type BoxFut = Pin<Box<dyn Future<Output = ()>>>;
/// A task spawned from inside a port (it must be `Send` to sit in a shared context).
pub type SendFut = Pin<Box<dyn Future<Output = ()> + Send>>;

std::thread_local! {
    /// The task the executor is polling right now (the simulation is single-threaded).
    static CURRENT: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The id of the task being polled, if the caller runs inside the executor.
pub fn current_task() -> Option<u64> {
    CURRENT.with(std::cell::Cell::get)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SplitMix64: small, fast, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// An independent stream derived from this one.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// A running hash of every scheduling decision and port outcome.
#[derive(Debug, Default)]
pub struct Trace {
    state: Mutex<(u64, u64)>,
}

impl Trace {
    pub fn record(&self, tag: u64, value: u64) {
        let mut s = lock(&self.state);
        let mut z = s.0 ^ tag.wrapping_mul(0x100_0000_01b3) ^ value.rotate_left(17);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        s.0 = z ^ (z >> 31);
        s.1 += 1;
    }

    /// (hash, number of recorded events).
    pub fn finish(&self) -> (u64, u64) {
        *lock(&self.state)
    }
}

#[derive(Debug, Default)]
struct ClockState {
    now: u64,
    timers: BTreeMap<(u64, u64), Waker>,
    seq: u64,
}

/// Simulated time: `sleep` completes only when [`SimClock::advance`] reaches its
/// deadline. Millisecond resolution (sub-millisecond sleeps round up).
#[derive(Debug, Default)]
pub struct SimClock {
    state: Mutex<ClockState>,
}

impl SimClock {
    pub fn new(start_ms: u64) -> Self {
        Self {
            state: Mutex::new(ClockState {
                now: start_ms,
                ..ClockState::default()
            }),
        }
    }

    pub fn now_ms(&self) -> u64 {
        lock(&self.state).now
    }

    /// Moves time to the earliest timer and wakes every sleeper due then. `None` when
    /// no timer is registered.
    pub fn advance(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        let (&(deadline, _), _) = s.timers.first_key_value()?;
        s.now = s.now.max(deadline);
        let now = s.now;
        let mut due = Vec::new();
        while let Some(entry) = s.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        drop(s);
        for w in due {
            w.wake();
        }
        Some(now)
    }
}

fn millis_ceil(d: Duration) -> u64 {
    let ms = d.as_millis();
    let ms = if d > Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)) {
        ms + 1
    } else {
        ms
    };
    u64::try_from(ms).unwrap_or(u64::MAX)
}

struct SimSleep<'a> {
    clock: &'a SimClock,
    deadline: u64,
    key: Option<(u64, u64)>,
}

impl Future for SimSleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.clock.state);
        if s.now >= self.deadline {
            if let Some(key) = self.key.take() {
                s.timers.remove(&key);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                s.seq += 1;
                (self.deadline, s.seq)
            }
        };
        s.timers.insert(key, cx.waker().clone());
        drop(s);
        self.key = Some(key);
        Poll::Pending
    }
}

impl Drop for SimSleep<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.clock.state).timers.remove(&key);
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.now_ms())
    }

    fn sleep(&self, d: Duration) -> Sleep<'_> {
        let deadline = self.now_ms().saturating_add(millis_ceil(d));
        Box::pin(SimSleep {
            clock: self,
            deadline,
            key: None,
        })
    }
}

/// Gives the scheduler a chance to run someone else (and to crash this task).
pub fn yield_now() -> impl Future<Output = ()> + Send {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// What a task is, for crash injection and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A client request (create or cancel) against an API instance.
    Client,
    /// Worker instance `n`.
    Worker(usize),
    /// Reconciler instance `n`.
    Reconciler(usize),
    /// The chaos monkey (wipes, outages) and other background tasks.
    Background,
}

#[derive(Default)]
struct Ready {
    list: Vec<u64>,
    set: HashSet<u64>,
}

struct TaskWaker {
    id: u64,
    ready: Arc<Mutex<Ready>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut r = lock(&self.ready);
        if r.set.insert(self.id) {
            r.list.push(self.id);
        }
    }
}

struct Task {
    fut: BoxFut,
    kind: Kind,
    waker: Waker,
}

/// A seeded single-threaded executor.
pub struct Executor {
    tasks: BTreeMap<u64, Task>,
    ready: Arc<Mutex<Ready>>,
    next_id: u64,
    rng: Rng,
}

impl Executor {
    pub fn new(rng: Rng) -> Self {
        Self {
            tasks: BTreeMap::new(),
            ready: Arc::default(),
            next_id: 0,
            rng,
        }
    }

    pub fn spawn(&mut self, kind: Kind, fut: BoxFut) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            ready: self.ready.clone(),
        }));
        waker.wake_by_ref();
        self.tasks.insert(id, Task { fut, kind, waker });
        id
    }

    /// Picks the next ready task with the seeded RNG.
    pub fn pick(&mut self) -> Option<(u64, Kind)> {
        loop {
            let id = {
                let mut r = lock(&self.ready);
                if r.list.is_empty() {
                    return None;
                }
                let i = self.rng.below(r.list.len() as u64) as usize;
                let id = r.list.swap_remove(i);
                r.set.remove(&id);
                id
            };
            if let Some(t) = self.tasks.get(&id) {
                return Some((id, t.kind));
            }
        }
    }

    /// Polls task `id`; `true` when it finished (and was removed).
    pub fn poll(&mut self, id: u64) -> bool {
        let Some(task) = self.tasks.get_mut(&id) else {
            return true;
        };
        let waker = task.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let previous = CURRENT.with(|c| c.replace(Some(id)));
        let ready = task.fut.as_mut().poll(&mut cx).is_ready();
        CURRENT.with(|c| c.set(previous));
        if ready {
            self.tasks.remove(&id);
            true
        } else {
            false
        }
    }

    /// Drops task `id` wherever it is suspended (a crash).
    pub fn kill(&mut self, id: u64) {
        self.tasks.remove(&id);
    }

    pub fn count(&self, kind: impl Fn(Kind) -> bool) -> usize {
        self.tasks.values().filter(|t| kind(t.kind)).count()
    }

    /// Drops every task (the end of a run).
    pub fn clear(&mut self) {
        self.tasks.clear();
    }
}
