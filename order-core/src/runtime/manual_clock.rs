//! [`ManualClock`]: a [`Clock`] that moves only when told to. Pure code (an atomic
//! counter), so it lives in the core and serves every crate's deterministic tests —
//! the core's own, the adapters', and embedders'.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::Timestamp;
use crate::ports::{Clock, Sleep};

/// A clock that only moves when told to, for deterministic tests.
///
/// Its [`Clock::sleep`] does not wait: it *advances the clock* by the requested duration
/// and completes at once, so retries, backoffs and timeouts in tests take no real time
/// while every timestamp they produce stays consistent. The advance happens when the
/// sleep future is first polled, not when it is created: a sleep that loses a race (a
/// timeout whose operation finished first) never moves time.
///
/// Shared between threads; every read and advance is a single atomic operation.
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start` until it is moved.
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: AtomicU64::new(start.as_millis()),
        }
    }

    /// Moves the clock forward by `d` (millisecond precision, saturating at the far
    /// future) and returns the new time.
    pub fn advance(&self, d: Duration) -> Timestamp {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let previous = self
            .millis
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
                Some(m.saturating_add(add))
            })
            // The closure always returns `Some`, so `fetch_update` cannot fail; both arms
            // carry the previous value.
            .unwrap_or_else(|m| m);
        Timestamp::from_millis(previous.saturating_add(add))
    }

    /// Sets the clock to `t`, forwards or backwards (backwards only to simulate a clock
    /// step; the adapters never assume monotonic time for correctness).
    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.as_millis(), Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.millis.load(Ordering::Acquire))
    }

    /// Advances the clock by `d` when first polled and completes immediately.
    fn sleep(&self, d: Duration) -> Sleep<'_> {
        Box::pin(async move {
            self.advance(d);
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;
    use crate::runtime::with_timeout;

    #[tokio::test]
    async fn a_manual_sleep_advances_the_clock_and_returns_at_once() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let real = std::time::Instant::now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), Timestamp::from_millis(3_601_000));
        assert!(real.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_manual_sleep_that_is_never_polled_does_not_move_time() {
        let clock = ManualClock::new(Timestamp::from_millis(10));
        let sleep = clock.sleep(Duration::from_secs(5));
        drop(sleep);
        assert_eq!(clock.now(), Timestamp::from_millis(10));
        // A timeout whose operation is already done loses the race and moves nothing.
        let done = with_timeout(&clock, Duration::from_secs(5), async { 7 }).await;
        assert_eq!(done, Some(7));
        assert_eq!(clock.now(), Timestamp::from_millis(10));
        // A timeout whose operation never finishes fires at once and moves time by it.
        let never = with_timeout(&clock, Duration::from_secs(5), pending::<()>()).await;
        assert_eq!(never, None);
        assert_eq!(clock.now(), Timestamp::from_millis(5_010));
    }

    #[test]
    fn advance_and_set_move_the_manual_clock_and_advance_saturates() {
        let clock = ManualClock::new(Timestamp::from_millis(5));
        assert_eq!(
            clock.advance(Duration::from_millis(7)),
            Timestamp::from_millis(12)
        );
        clock.set(Timestamp::from_millis(2));
        assert_eq!(clock.now(), Timestamp::from_millis(2));
        clock.set(Timestamp::from_millis(u64::MAX - 1));
        assert_eq!(
            clock.advance(Duration::from_secs(1)),
            Timestamp::from_millis(u64::MAX)
        );
        assert_eq!(clock.now(), Timestamp::from_millis(u64::MAX));
    }
}
