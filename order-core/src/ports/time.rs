//! The `Clock` and `RandomSource` ports: time and randomness, injected.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::domain::Timestamp;

/// A boxed future returned by [`Clock::sleep`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Time: now, and waiting. Injected so tests can run on a manual clock.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
    /// A future that completes after `d` on this clock.
    fn sleep(&self, d: Duration) -> Sleep<'_>;
}

/// A source of random 64-bit numbers (tokens, jitter). Injected so tests are seedable.
pub trait RandomSource: Send + Sync {
    /// The next random number.
    fn next_u64(&self) -> u64;

    /// A uniform draw in `[0, 1)`, from the top 53 bits of [`next_u64`](Self::next_u64).
    fn next_unit_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
