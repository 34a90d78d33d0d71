//! [`SystemClock`]: wall-clock time, and sleeps that work on any executor.
//!
//! The core has no async runtime, so it cannot borrow one's timers. Its sleeps are kept
//! by one timer thread of its own instead: a sleep registers its deadline and waker in a
//! table ordered by deadline, and the thread wakes each waker when its deadline passes.
//! A waker is all any executor needs, so the same clock runs under Tokio, a hand-written
//! `block_on` or anything else, and the core stays free of I/O crates.
//!
//! The thread is started lazily, on the first sleep that has to wait, and is shared by
//! every `SystemClock` of the process. It sleeps on a condition variable until the
//! earliest deadline (or until an earlier one is registered), so it costs nothing while
//! no sleep is pending. It is never joined: it holds no state that must be finished, and
//! ends with the process.
//!
//! The table is a `BTreeMap` keyed by `(deadline, id)` rather than a binary heap so that a
//! dropped sleep removes its entry at once: the service drops a sleep every time an
//! operation beats its timeout, and a heap would keep each of those until its deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::domain::Timestamp;
use crate::ports::{Clock, Sleep};

/// Wall-clock time (milliseconds since the Unix epoch) and real sleeps on a timer thread.
///
/// [`Clock::sleep`] completes once at least the requested duration has passed, measured
/// on the monotonic clock (`std::time::Instant`) from the moment `sleep` is called, so a
/// wall-clock step moves [`Clock::now`] but never lengthens or shortens a sleep. It needs
/// no particular executor: the wake-up comes from the core's own timer thread (see the
/// module documentation), which is why it does not follow `tokio::time::pause` — tests
/// that want controlled time use [`ManualClock`](super::ManualClock).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock.
    pub fn new() -> Self {
        Self
    }
}

impl Clock for SystemClock {
    /// The current wall-clock time; an instant before 1970 (a badly set clock) reads as
    /// the epoch rather than failing.
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp::from_millis(millis)
    }

    fn sleep(&self, d: Duration) -> Sleep<'_> {
        Box::pin(TimerSleep::new(Timer::shared(), d))
    }
}

/// Locks `m`, carrying on through poisoning: the timer's data stays consistent because
/// nothing that can panic runs while it is locked (wakers are woken after unlocking).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pending sleeps, and the condition variable the timer thread waits on.
#[derive(Debug, Default)]
struct Timer {
    pending: Mutex<BTreeMap<(Instant, u64), Waker>>,
    changed: Condvar,
    next_id: AtomicU64,
}

impl Timer {
    /// The process-wide timer, its thread started on first use. `None` if the thread
    /// could not be started (the OS refused a thread): sleeps then fall back to polling.
    fn shared() -> Option<Arc<Timer>> {
        static SHARED: OnceLock<Option<Arc<Timer>>> = OnceLock::new();
        SHARED.get_or_init(Timer::start).clone()
    }

    /// A new timer with its own thread.
    fn start() -> Option<Arc<Timer>> {
        let timer = Arc::new(Timer::default());
        let run = timer.clone();
        match std::thread::Builder::new()
            .name("order-core-timer".into())
            .spawn(move || run.run())
        {
            Ok(_) => Some(timer),
            Err(e) => {
                tracing::warn!(error = %e,
                    "could not start the timer thread; SystemClock sleeps will poll");
                None
            }
        }
    }

    /// The timer thread: wakes every sleep whose deadline has passed, then waits until
    /// the next deadline or a new, earlier registration.
    fn run(&self) {
        let mut pending = lock(&self.pending);
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = pending.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                // Wake outside the lock: a waker may run arbitrary executor code, which
                // may poll (and so lock) right away.
                drop(pending);
                due.into_iter().for_each(Waker::wake);
                pending = lock(&self.pending);
                continue;
            }
            pending = match pending.first_key_value().map(|((at, _), _)| *at) {
                None => self
                    .changed
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    self.changed
                        .wait_timeout(pending, at.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Registers (or refreshes) the waker of sleep `key`, waking the thread when `key` is
    /// now the earliest deadline.
    fn register(&self, key: (Instant, u64), waker: &Waker) {
        let mut pending = lock(&self.pending);
        match pending.get_mut(&key) {
            Some(held) if held.will_wake(waker) => return,
            Some(held) => held.clone_from(waker),
            None => {
                pending.insert(key, waker.clone());
            }
        }
        let earliest = pending.first_key_value().is_some_and(|(k, _)| *k == key);
        drop(pending);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Forgets sleep `key` (dropped before, or after, its deadline).
    fn deregister(&self, key: (Instant, u64)) {
        lock(&self.pending).remove(&key);
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        lock(&self.pending).len()
    }
}

/// One sleep on a [`Timer`]: ready once `Instant::now()` reaches its deadline.
#[derive(Debug)]
struct TimerSleep {
    timer: Option<Arc<Timer>>,
    /// `None` when the deadline is too far away to represent: the sleep never ends.
    deadline: Option<Instant>,
    id: u64,
    registered: bool,
}

impl TimerSleep {
    fn new(timer: Option<Arc<Timer>>, d: Duration) -> Self {
        let id = timer
            .as_ref()
            .map_or(0, |t| t.next_id.fetch_add(1, Ordering::Relaxed));
        Self {
            timer,
            deadline: Instant::now().checked_add(d),
            id,
            registered: false,
        }
    }
}

impl Future for TimerSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        // The timer thread wakes a sleep only once its deadline has passed on the same
        // monotonic clock, so this check alone decides readiness; a wake-up that races a
        // re-registration merely fires once more.
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        match &self.timer {
            Some(timer) => {
                timer.register((deadline, self.id), cx.waker());
                self.registered = true;
            }
            // No timer thread: ask to be polled again. Correct, if wasteful; it only
            // happens when the OS would not give the process one more thread.
            None => cx.waker().wake_by_ref(),
        }
        Poll::Pending
    }
}

impl Drop for TimerSleep {
    fn drop(&mut self) {
        if let (true, Some(timer), Some(deadline)) = (self.registered, &self.timer, self.deadline) {
            timer.deregister((deadline, self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;
    use std::thread::{self, Thread};

    use super::*;
    use crate::runtime::{Either, race};

    /// Wakes a parked thread: the smallest executor there is.
    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Runs `f` to completion on this thread, parking between polls. No runtime crate is
    /// involved, so a completion proves the timer thread did the waking.
    fn block_on<F: Future>(f: F) -> F::Output {
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            thread::park();
        }
    }

    #[test]
    fn the_system_clock_reads_wall_clock_milliseconds() {
        let millis = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        };
        let before = millis();
        let now = u128::from(SystemClock::new().now().as_millis());
        let after = millis();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn a_sleep_completes_after_its_duration_without_any_runtime() {
        let start = Instant::now();
        block_on(SystemClock::new().sleep(Duration::from_millis(50)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(50), "woke after {took:?}");
        assert!(took < Duration::from_secs(5), "woke after {took:?}");
    }

    #[tokio::test]
    async fn a_sleep_completes_under_tokio_and_the_shorter_of_two_wins() {
        let clock = SystemClock::new();
        let start = Instant::now();
        clock.sleep(Duration::from_millis(50)).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
        let first = race(
            clock.sleep(Duration::from_secs(30)),
            clock.sleep(Duration::from_millis(20)),
        )
        .await;
        assert_eq!(first, Either::Right(()));
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn concurrent_sleeps_on_many_threads_all_wake() {
        let sleepers: Vec<_> = (0..8u64)
            .map(|i| {
                thread::spawn(move || {
                    let d = Duration::from_millis(10 * (8 - i));
                    let start = Instant::now();
                    block_on(SystemClock::new().sleep(d));
                    start.elapsed() >= d
                })
            })
            .collect();
        for s in sleepers {
            assert!(s.join().is_ok_and(|on_time| on_time));
        }
    }

    #[test]
    fn a_dropped_sleep_leaves_nothing_behind_and_a_zero_sleep_never_registers() {
        let timer = Timer::start();
        let Some(t) = timer.clone() else {
            panic!("no timer thread");
        };
        block_on(TimerSleep::new(timer.clone(), Duration::ZERO));
        assert_eq!(t.pending(), 0);

        let mut long = Box::pin(TimerSleep::new(timer.clone(), Duration::from_secs(3600)));
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        assert!(
            long.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(t.pending(), 1);
        drop(long);
        assert_eq!(t.pending(), 0);

        // A registered sleep that fired is removed by the thread; dropping it is a no-op.
        block_on(TimerSleep::new(timer, Duration::from_millis(5)));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_sleep_too_long_to_represent_never_ends_and_never_panics() {
        let clock = SystemClock::new();
        let mut forever = clock.sleep(Duration::MAX);
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        assert!(
            forever
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }

    #[test]
    fn without_a_timer_thread_a_sleep_still_completes_by_polling() {
        let start = Instant::now();
        block_on(TimerSleep::new(None, Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
