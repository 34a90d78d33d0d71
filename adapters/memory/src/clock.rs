//! Clocks implementing [`order_core::ports::Clock`], both re-exported from the core.
//!
//! [`SystemClock`] is what a running process uses: wall-clock time, and sleeps kept by the
//! core's own timer thread, so they work on any executor (the core has no runtime whose
//! timers it could borrow). [`ManualClock`] is for deterministic tests: time moves only
//! when a test (or a [`Clock::sleep`](order_core::ports::Clock::sleep) call) moves it, so
//! lock expiry, leases, visibility timeouts and backoffs can be exercised without waiting.
//! Both live in `order_core::runtime`; the names stay here so every user of
//! `order_memory::{SystemClock, ManualClock}` keeps compiling.

pub use order_core::runtime::{ManualClock, SystemClock};

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use order_core::ports::Clock;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_system_clock_sleeps_for_real_inside_a_tokio_runtime() {
        let start = Instant::now();
        SystemClock::new().sleep(Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
