//! What the service needs from a runtime, without depending on one: the two clocks
//! ([`SystemClock`], [`ManualClock`]), a seedable random source ([`SeededRandom`]), the
//! one retry schedule ([`Backoff`]), and — for the core's own use — future
//! combinators that race a future against a sleep or join two.
//!
//! Everything here is pure `std`: no executor, no I/O crate. The clocks and the random
//! source implement the [`Clock`](crate::ports::Clock) and
//! [`RandomSource`](crate::ports::RandomSource) ports, so an embedder can use them as
//! they are or inject its own. `SystemClock` keeps its sleeps on a timer thread of its
//! own precisely because the core has no runtime whose timers it could use.

mod backoff;
mod future;
mod manual_clock;
mod rng;
mod system_clock;

pub use backoff::{Backoff, BackoffError};
pub(crate) use future::{Either, Fused, join, race, with_timeout};
pub use manual_clock::ManualClock;
pub use rng::SeededRandom;
pub use system_clock::SystemClock;
