//! The `DistributedLock` port: a contention reducer in front of the database.

use std::time::Duration;

use async_trait::async_trait;

/// Errors of [`DistributedLock`].
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock service cannot be reached. The service then fails open to the database
    /// guard (and counts it).
    #[error("lock service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A random token naming one holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockToken(String);

impl LockToken {
    /// Wraps a token (the service makes them from 128 random bits, hex-encoded).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A short-lived mutual-exclusion lock keyed by name (e.g. `product:42`), with `SET key
/// token NX PX ttl` semantics. It reduces contention in front of the database; it is
/// never the correctness guard.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait DistributedLock: Send + Sync {
    /// Takes `key` for `token` for `ttl` if nobody holds it, or if `token` itself holds
    /// it (the TTL then starts again). Returns whether `token` holds it now.
    ///
    /// Acquisition MUST be idempotent per token: a client that re-sends the command
    /// after losing the reply (fred does after a reconnect) finds its own token and
    /// succeeds, instead of seeing its own lock as busy until the TTL runs out. A live
    /// lock held by another token MUST NOT be taken. The adapter MUST NOT block waiting
    /// for the lock (the service owns retries) and MUST let the lock expire after `ttl`
    /// on its own clock.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when the lock service is down.
    async fn try_acquire(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, LockError>;

    /// Releases `key` only if it is still held by `token` (compare-and-delete). Returns
    /// whether it was deleted. A lock that expired and was taken by another holder MUST
    /// NOT be deleted.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when the lock service is down.
    async fn release(&self, key: &str, token: &LockToken) -> Result<bool, LockError>;
}
