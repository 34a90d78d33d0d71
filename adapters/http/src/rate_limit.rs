//! The per-user rate limits: a `governor` GCRA limiter keyed by [`UserId`] on the
//! authenticated routes, and one keyed by the (lowercased) e-mail on `POST /api/tokens`
//! so that guessing one account's password is throttled too; `Quota::per_minute(n)` (a burst of `n`, then one request every
//! `60/n` s), measured on the service's own [`Clock`] — so a test on a `ManualClock`
//! controls it, and every instance of the API agrees with the service on what time it
//! is. The state is per process: behind a load balancer each instance allows `n`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use order_core::UserId;
use order_core::ports::Clock;

/// governor's view of the service clock: time since the Unix epoch.
#[derive(Clone)]
struct ServiceClock(Arc<dyn Clock>);

impl governor::clock::Clock for ServiceClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now().as_millis())
    }
}

type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, ServiceClock, NoOpMiddleware<Duration>>;

/// The limit of the authenticated routes, per user.
pub(crate) type UserRateLimit = RateLimit<UserId>;

/// The limit of login attempts, per lowercased e-mail.
pub(crate) type LoginRateLimit = RateLimit<String>;

/// How often (in checks) stale users are dropped from the limiter's table.
const HOUSEKEEPING_EVERY: u64 = 4096;

/// The limiter, or nothing when the limit is disabled (0 per minute).
pub(crate) struct RateLimit<K: std::hash::Hash + Eq + Clone> {
    limiter: Option<Keyed<K>>,
    clock: Arc<dyn Clock>,
    checks: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> std::fmt::Debug for RateLimit<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("enabled", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl<K: std::hash::Hash + Eq + Clone> RateLimit<K> {
    /// `per_minute` requests per minute and key on `clock`; `0` disables the limit.
    pub(crate) fn new(per_minute: u32, clock: Arc<dyn Clock>) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| {
            RateLimiter::new(
                Quota::per_minute(n),
                HashMapStateStore::default(),
                ServiceClock(clock.clone()),
            )
        });
        Self {
            limiter,
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `key`: `Ok` when allowed, else `Err(seconds)` until the
    /// next one is (rounded up, at least 1: what `Retry-After` says).
    pub(crate) fn check(&self, key: K) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % HOUSEKEEPING_EVERY
            == HOUSEKEEPING_EVERY - 1
        {
            limiter.retain_recent();
        }
        limiter.check_key(&key).map_err(|not_until| {
            let now = Duration::from_millis(self.clock.now().as_millis());
            let wait = not_until.wait_time_from(now);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            secs.max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use order_core::{ManualClock, Timestamp};

    use super::*;

    fn user(n: u64) -> UserId {
        UserId::new(n).unwrap()
    }

    #[test]
    fn the_third_request_of_a_two_per_minute_user_waits_thirty_seconds() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
        let limit = UserRateLimit::new(2, clock.clone());
        assert_eq!(limit.check(user(1)), Ok(()));
        assert_eq!(limit.check(user(1)), Ok(()));
        assert_eq!(limit.check(user(1)), Err(30));
        // Another user has a budget of their own.
        assert_eq!(limit.check(user(2)), Ok(()));
        clock.advance(Duration::from_millis(29_500));
        assert_eq!(limit.check(user(1)), Err(1), "half a second rounds up");
        clock.advance(Duration::from_millis(500));
        assert_eq!(limit.check(user(1)), Ok(()));
    }

    #[test]
    fn zero_disables_the_limit() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let limit = UserRateLimit::new(0, clock);
        for _ in 0..1000 {
            assert_eq!(limit.check(user(1)), Ok(()));
        }
    }
}
