//! The one retry schedule every retry of the engine follows — lock retries, payment
//! retries, the queues' redelivery backoff, the adapters' own — so that a retry budget
//! computed in one place ([`QueueTimings::retry_budget`](crate::ports::QueueTimings::retry_budget))
//! is the one every adapter actually waits.

use std::time::Duration;

use crate::ports::RandomSource;

/// An exponential retry schedule, capped and jittered.
///
/// The delay after failed attempt `n` (1-based) is `min(base · 2^(n-1), max)` — the
/// *nominal* delay, [`nominal`](Self::nominal) — scaled by a factor drawn uniformly from
/// `1 ± jitter` ([`delay`](Self::delay)). `jitter` lies in `0.0..=1.0` (0.25 = ±25 %), so
/// a delay is never longer than `nominal · (1 + jitter)` ([`longest`](Self::longest)),
/// which may exceed `max` by the jitter. A jitter of 0 gives a deterministic schedule
/// ([`Backoff::fixed_schedule`]).
///
/// ```
/// use std::time::Duration;
/// use order_core::app::Backoff;
///
/// let b = Backoff::fixed_schedule(Duration::from_millis(100), Duration::from_millis(500));
/// assert_eq!(b.nominal(1), Duration::from_millis(100));
/// assert_eq!(b.nominal(3), Duration::from_millis(400));
/// assert_eq!(b.nominal(4), Duration::from_millis(500), "capped at max");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failed attempt; doubles after each further one.
    pub base: Duration,
    /// The longest nominal delay (before jitter).
    pub max: Duration,
    /// Relative jitter applied to each delay, in `0.0..=1.0` (0.25 = ±25 %).
    pub jitter: f64,
}

/// Why a [`Backoff`] is unusable; each variant names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// `base` is zero.
    #[error("{0}: the backoff base must not be zero")]
    ZeroBase(&'static str),
    /// `max` is shorter than `base`.
    #[error("{0}: the backoff max must be at least its base")]
    MaxBelowBase(&'static str),
    /// `jitter` is outside `0.0..=1.0` (or not a number).
    #[error("{0}: the backoff jitter must be within 0.0..=1.0")]
    Jitter(&'static str),
}

impl Backoff {
    /// A deterministic schedule: `min(base · 2^(n-1), max)`, no jitter.
    pub const fn fixed_schedule(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: 0.0,
        }
    }

    /// The delay after failed attempt `attempt` (1-based; 0 counts as 1) without jitter:
    /// `min(base · 2^(attempt-1), max)`, saturating.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let doubled = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(31));
        doubled.min(self.max)
    }

    /// The delay after failed attempt `attempt` (1-based): the [`nominal`](Self::nominal)
    /// delay scaled by a factor drawn from `rng` uniformly in `1 ± jitter`. Exactly the
    /// nominal delay when `jitter` is 0 (no draw is made then).
    pub fn delay(&self, attempt: u32, rng: &dyn RandomSource) -> Duration {
        let nominal = self.nominal(attempt);
        if self.jitter == 0.0 {
            return nominal;
        }
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * rng.next_unit_f64() - 1.0);
        scale(nominal, factor)
    }

    /// The longest [`delay`](Self::delay) can be after failed attempt `attempt`:
    /// `nominal · (1 + jitter)`, saturating.
    pub fn longest(&self, attempt: u32) -> Duration {
        let nominal = self.nominal(attempt);
        if self.jitter == 0.0 {
            return nominal;
        }
        scale(nominal, 1.0 + self.jitter.clamp(0.0, 1.0))
    }

    /// Refuses a zero `base`, a `max` below `base` and a `jitter` outside `0.0..=1.0`.
    ///
    /// # Errors
    /// [`BackoffError`] carrying `name`, the setting this backoff is.
    pub fn validate(&self, name: &'static str) -> Result<(), BackoffError> {
        if self.base.is_zero() {
            return Err(BackoffError::ZeroBase(name));
        }
        if self.max < self.base {
            return Err(BackoffError::MaxBelowBase(name));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(BackoffError::Jitter(name));
        }
        Ok(())
    }
}

/// `d · factor` for a non-negative `factor`, saturating at `Duration::MAX`.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor.max(0.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::SeededRandom;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_nominal_delay_doubles_per_attempt_and_stops_at_max() {
        let b = Backoff::fixed_schedule(10 * MS, 100 * MS);
        assert_eq!(b.nominal(0), 10 * MS);
        assert_eq!(b.nominal(1), 10 * MS);
        assert_eq!(b.nominal(2), 20 * MS);
        assert_eq!(b.nominal(4), 80 * MS);
        assert_eq!(b.nominal(5), 100 * MS, "capped");
        assert_eq!(b.nominal(u32::MAX), 100 * MS);
        let unbounded = Backoff::fixed_schedule(Duration::MAX, Duration::MAX);
        assert_eq!(
            unbounded.nominal(5),
            Duration::MAX,
            "saturates instead of overflowing"
        );
        let wide = Backoff::fixed_schedule(Duration::from_secs(1), Duration::MAX);
        assert_eq!(wide.nominal(32), Duration::from_secs(1 << 31));
        assert_eq!(wide.nominal(u32::MAX), Duration::from_secs(1 << 31));
    }

    #[test]
    fn zero_jitter_is_exact_and_draws_nothing() {
        let b = Backoff::fixed_schedule(7 * MS, Duration::from_secs(1));
        let rng = SeededRandom::new(1);
        let untouched = SeededRandom::new(1);
        for attempt in 1..=12 {
            assert_eq!(b.delay(attempt, &rng), b.nominal(attempt));
            assert_eq!(b.longest(attempt), b.nominal(attempt));
        }
        assert_eq!(rng.next_u64(), untouched.next_u64(), "no draw was made");
    }

    #[test]
    fn jittered_delays_stay_within_one_plus_or_minus_jitter_and_spread() {
        let b = Backoff {
            base: 100 * MS,
            max: Duration::from_secs(1),
            jitter: 0.25,
        };
        let rng = SeededRandom::new(7);
        for attempt in 1..=6u32 {
            let nominal = b.nominal(attempt).as_secs_f64();
            let (mut lo, mut hi) = (f64::MAX, 0.0f64);
            for _ in 0..500 {
                let d = b.delay(attempt, &rng);
                assert!(d <= b.longest(attempt), "{attempt}: {d:?}");
                let s = d.as_secs_f64();
                assert!(
                    s >= nominal * 0.75 - 1e-9 && s <= nominal * 1.25 + 1e-9,
                    "{attempt}: {d:?}"
                );
                lo = lo.min(s);
                hi = hi.max(s);
            }
            assert!(lo < nominal * 0.8 && hi > nominal * 1.2, "the draws spread");
        }
        assert_eq!(b.longest(5), Duration::from_millis(1250), "max · 1.25");
        let huge = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
            jitter: 1.0,
        };
        assert_eq!(huge.longest(1), Duration::MAX, "saturates");
        let _ = huge.delay(1, &rng);
    }

    #[test]
    fn validation_refuses_zero_base_max_below_base_and_bad_jitter() {
        let ok = Backoff {
            base: 10 * MS,
            max: 10 * MS,
            jitter: 1.0,
        };
        assert_eq!(ok.validate("b"), Ok(()));
        let zero = Backoff {
            base: Duration::ZERO,
            ..ok
        };
        assert_eq!(zero.validate("b"), Err(BackoffError::ZeroBase("b")));
        let inverted = Backoff { max: 9 * MS, ..ok };
        assert_eq!(inverted.validate("b"), Err(BackoffError::MaxBelowBase("b")));
        for jitter in [-0.1, 1.01, f64::NAN] {
            let bad = Backoff { jitter, ..ok };
            assert_eq!(bad.validate("b"), Err(BackoffError::Jitter("b")));
        }
        assert_eq!(
            BackoffError::Jitter("lock.backoff").to_string(),
            "lock.backoff: the backoff jitter must be within 0.0..=1.0"
        );
    }
}
