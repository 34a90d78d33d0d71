//! The one exponential schedule every retry of the engine follows — lock retries, payment
//! retries, the queues' redelivery backoff, the adapters' own — so that a retry budget
//! computed in one place ([`QueueTimings::retry_budget`](crate::ports::QueueTimings::retry_budget))
//! is the one every adapter actually waits.

use std::time::Duration;

/// `base · 2^(attempt-1)` for a 1-based `attempt`, saturating. The exponent stops
/// growing at 20 (a million times the base), so no attempt count overflows it. Every
/// exponential schedule of the engine — lock retries, payment retries, queue retries,
/// the adapters' own — is this one.
pub fn exponential_backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_per_attempt_and_stops_growing_at_the_twentieth() {
        let base = Duration::from_millis(10);
        assert_eq!(exponential_backoff(base, 0), base);
        assert_eq!(exponential_backoff(base, 1), base);
        assert_eq!(exponential_backoff(base, 3), base * 4);
        assert_eq!(exponential_backoff(base, 21), base * (1 << 20));
        assert_eq!(exponential_backoff(base, u32::MAX), base * (1 << 20));
        assert_eq!(
            exponential_backoff(Duration::MAX, 5),
            Duration::MAX,
            "saturates instead of overflowing"
        );
    }
}
