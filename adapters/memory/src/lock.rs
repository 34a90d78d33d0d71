//! [`MemoryLock`]: the [`DistributedLock`] port in one process, with Redis
//! `SET key token NX PX ttl` semantics and a compare-and-delete release.
//!
//! Expiry is measured on the injected [`Clock`], so a test on a
//! [`ManualClock`](crate::ManualClock) can let a lock lapse without waiting. Like the
//! Redis lock it stands in for, it is a contention reducer only: the repository is the
//! correctness guard.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use order_core::Timestamp;
use order_core::ports::{Clock, DistributedLock, LockError, LockToken};

/// The fewest entries at which expired locks are swept out of the map.
const MIN_SWEEP: usize = 1024;

/// A lock taken by `token` until `expires_at` (exclusive: at `expires_at` it is free).
#[derive(Debug, Clone)]
struct Held {
    token: LockToken,
    expires_at: Timestamp,
}

impl Held {
    fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }
}

#[derive(Debug)]
struct Locks {
    held: HashMap<String, Held>,
    /// When the map reaches this size, expired entries are dropped (Redis forgets an
    /// expired key on its own; here an abandoned lock would otherwise stay forever).
    sweep_at: usize,
}

/// An in-process [`DistributedLock`]: a map from key to (token, expiry) on an injected
/// clock.
///
/// `try_acquire` never blocks; `release` deletes only the caller's own live lock, so a
/// holder whose lock expired and was taken by someone else cannot free the new holder's
/// lock.
pub struct MemoryLock {
    clock: Arc<dyn Clock>,
    // A std mutex, not an async one: every critical section is a few map operations and
    // none is held across an `.await`, so it can never block the executor for long.
    locks: Mutex<Locks>,
}

impl fmt::Debug for MemoryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLock")
            .field("held", &self.guard().held.len())
            .finish_non_exhaustive()
    }
}

impl MemoryLock {
    /// An empty lock table whose expiries are measured on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            locks: Mutex::new(Locks {
                held: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// The token holding `key` right now, if the lock is held and has not expired.
    pub fn holder(&self, key: &str) -> Option<LockToken> {
        let now = self.clock.now();
        self.guard()
            .held
            .get(key)
            .filter(|h| h.is_live(now))
            .map(|h| h.token.clone())
    }

    fn guard(&self) -> MutexGuard<'_, Locks> {
        // A poisoned mutex means a thread panicked while holding it. Every critical
        // section makes at most one map insert or remove, which either happened or did
        // not, so the table is consistent and safe to keep using.
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl DistributedLock for MemoryLock {
    /// Takes `key` when it is free or its previous holder's TTL has run out
    /// (`expires_at <= now`), or when `token` itself holds it: a re-sent acquire finds
    /// its own token, succeeds and starts the TTL again (the port's idempotence per
    /// token). A zero TTL (or one under a millisecond) yields a lock that has already
    /// expired.
    ///
    /// # Errors
    /// Never: the table is in memory.
    async fn try_acquire(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        let now = self.clock.now();
        let mut locks = self.guard();
        if locks
            .held
            .get(key)
            .is_some_and(|h| h.is_live(now) && h.token != *token)
        {
            return Ok(false);
        }
        if locks.held.len() >= locks.sweep_at {
            locks.held.retain(|_, h| h.is_live(now));
            locks.sweep_at = locks.held.len().saturating_mul(2).max(MIN_SWEEP);
        }
        locks.held.insert(
            key.to_owned(),
            Held {
                token: token.clone(),
                expires_at: now.saturating_add(ttl),
            },
        );
        Ok(true)
    }

    /// Compare-and-delete: removes `key` only when `token` holds it and it has not
    /// expired. An expired lock counts as already gone (as in Redis), so releasing it
    /// returns `false` whoever the caller is.
    ///
    /// # Errors
    /// Never: the table is in memory.
    async fn release(&self, key: &str, token: &LockToken) -> Result<bool, LockError> {
        let now = self.clock.now();
        let mut locks = self.guard();
        let Some(held) = locks.held.get(key) else {
            return Ok(false);
        };
        if !held.is_live(now) {
            locks.held.remove(key);
            return Ok(false);
        }
        if held.token != *token {
            return Ok(false);
        }
        locks.held.remove(key);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn setup() -> (Arc<ManualClock>, MemoryLock) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000)));
        let lock = MemoryLock::new(clock.clone());
        (clock, lock)
    }

    fn token(s: &str) -> LockToken {
        LockToken::new(s)
    }

    const TTL: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn abandoned_expired_locks_are_swept_so_the_table_does_not_grow_forever() {
        let (clock, lock) = setup();
        for i in 0..MIN_SWEEP {
            let key = format!("idem:{i}");
            assert!(lock.try_acquire(&key, &token("t"), TTL).await.unwrap());
        }
        clock.advance(TTL);
        assert!(lock.try_acquire("live", &token("t"), TTL).await.unwrap());
        assert_eq!(lock.guard().held.len(), 1);
        assert_eq!(lock.holder("live"), Some(token("t")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_acquirers_of_one_key_get_exactly_one_lock() {
        let (_clock, lock) = setup();
        let lock = Arc::new(lock);
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let lock = lock.clone();
                tokio::spawn(async move {
                    lock.try_acquire("hot", &LockToken::new(format!("t{i}")), TTL)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1);
    }
}
