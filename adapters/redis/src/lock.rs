//! [`DistributedLock`] on Redis: `SET key token NX PX ttl` to take, a compare-and-delete
//! Lua script (run by SHA) to release.
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
    release: LuaScript,
}

impl RedisLock {
    /// Builds the lock on `connection` and loads its release script.
    ///
    /// # Errors
    /// [`ConnectError::Unavailable`] when the script cannot be loaded because the server
    /// is unreachable; [`ConnectError::Unexpected`] when the server refuses it.
    pub async fn new(connection: &RedisConnection) -> Result<Self, ConnectError> {
        let release = LuaScript::new(scripts::RELEASE_LOCK);
        release
            .load(&connection.pool)
            .await
            .map_err(|e| ConnectError::from(Failure::from(e)))?;
        Ok(Self {
            connection: connection.clone(),
            release,
        })
    }
}

#[async_trait]
impl DistributedLock for RedisLock {
    async fn try_acquire(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        let key = self.connection.config.lock_key(key);
        // PX takes whole milliseconds ≥ 1; round a sub-millisecond TTL up rather than fail.
        let ttl_ms = i64::try_from(millis_u64(ttl).max(1)).unwrap_or(i64::MAX);
        let reply: Option<String> = self
            .connection
            .pool
            .set(
                key,
                token.as_str(),
                Some(Expiration::PX(ttl_ms)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(Failure::from)?;
        Ok(reply.is_some())
    }

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
