//! [`DistributedLock`] on Redis: a small Lua script to take (the holder's own token
//! restarts the TTL, a free key is taken with `SET key token NX PX ttl`), a
//! compare-and-delete Lua script to release; both run by SHA.
//!
//! Taking is idempotent per token because fred re-sends in-flight commands after a
//! reconnect: a bare `SET NX` whose first copy ran would answer "busy" to its own
//! holder and block the key for the whole TTL.
//!
//! The lock only reduces contention in front of the database, which stays the
//! correctness guard; so one Redis primary is enough and no Redlock quorum is attempted.
//! Each operation touches a single key, so the adapter works unchanged on Redis Cluster.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use order_core::ports::{DistributedLock, LockError, LockToken};

use crate::connection::{ConnectError, Failure, LuaScript, RedisConnection, millis_u64};
use crate::scripts;

/// A distributed lock on the keys `{prefix}{namespace}{name}` (default
/// `orders:lock:{name}`).
#[derive(Debug, Clone)]
pub struct RedisLock {
    connection: RedisConnection,
    acquire: LuaScript,
    release: LuaScript,
}

impl RedisLock {
    /// Builds the lock on `connection`. Needs no server: nothing is sent until the first
    /// call (the scripts are loaded on their first `NOSCRIPT`), so a process starts
    /// while Redis is down and its calls fail with `LockError::Unavailable` until it is
    /// back.
    ///
    /// # Errors
    /// None today; the `Result` keeps the constructors of this crate uniform.
    pub async fn new(connection: &RedisConnection) -> Result<Self, ConnectError> {
        Ok(Self {
            connection: connection.clone(),
            acquire: LuaScript::new(scripts::ACQUIRE_LOCK),
            release: LuaScript::new(scripts::RELEASE_LOCK),
        })
    }
}

#[async_trait]
impl DistributedLock for RedisLock {
    /// Takes `key` for `token` if it is free or already `token`'s (restarting the TTL),
    /// in one atomic script; a live lock of another token is left alone.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when Redis cannot be reached within the command
    /// timeout.
    async fn try_acquire(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        let key = self.connection.config.lock_key(key);
        // PX takes whole milliseconds ≥ 1; round a sub-millisecond TTL up rather than fail.
        let ttl_ms = i64::try_from(millis_u64(ttl).max(1)).unwrap_or(i64::MAX);
        let held: i64 = self
            .acquire
            .run(
                &self.connection.pool,
                vec![key],
                vec![Value::from(token.as_str()), Value::Integer(ttl_ms)],
            )
            .await
            .map_err(Failure::from)?;
        Ok(held == 1)
    }

    /// Compare-and-delete: deletes `key` only while `token` holds it.
    ///
    /// # Errors
    /// [`LockError::Unavailable`] when Redis cannot be reached within the command
    /// timeout.
    async fn release(&self, key: &str, token: &LockToken) -> Result<bool, LockError> {
        let key = self.connection.config.lock_key(key);
        let deleted: i64 = self
            .release
            .run(
                &self.connection.pool,
                vec![key],
                vec![Value::from(token.as_str())],
            )
            .await
            .map_err(Failure::from)?;
        Ok(deleted == 1)
    }
}
