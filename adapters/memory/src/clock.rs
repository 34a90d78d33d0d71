//! Clocks implementing [`order_core::ports::Clock`]: the real one and a manual one.
//!
//! [`SystemClock`] is what a running process uses: wall-clock time and Tokio timers.
//! [`ManualClock`] is for deterministic tests: time moves only when a test (or a
//! [`Clock::sleep`] call) moves it, so lock expiry, leases, visibility timeouts and
//! backoffs can be exercised without waiting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use order_core::Timestamp;
use order_core::ports::{Clock, Sleep};

/// Re-exported from the core, where it lives so every crate's tests can share it.
pub use order_core::app::ManualClock;

/// Wall-clock time (milliseconds since the Unix epoch) and Tokio timers.
///
/// [`Clock::sleep`] is `tokio::time::sleep`: it must be awaited inside a Tokio runtime
/// with the time driver enabled, and it honours `tokio::time::pause` in tests.
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
        Box::pin(tokio::time::sleep(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_wall_clock_milliseconds() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let now = SystemClock::new().now().as_millis();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_sleeps_on_tokio_time() {
        let start = tokio::time::Instant::now();
        SystemClock::new().sleep(Duration::from_secs(30)).await;
        assert!(start.elapsed() >= Duration::from_secs(30));
    }
}
