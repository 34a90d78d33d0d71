//! The shared connection pool, the mapping of fred errors to port errors, and the Lua
//! script runner (EVALSHA with a reload on `NOSCRIPT`).
//!
//! fred types stay out of every signature: the public surface is [`RedisConnection`]
//! and [`ConnectError`]; every port error is built from [`Failure`], which keeps the
//! `fred::Error` as the port error's [`source`](std::error::Error::source) (behind
//! `anyhow`) instead of flattening it to text. Every `Display` is its own layer's
//! sentence without the cause, as the ports require.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use order_core::ports::{LockError, PublishError, QueueError};
use tokio::sync::watch;

use crate::config::RedisConfig;

/// Why an adapter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The settings are unusable (bad URL, zero pool size…).
    #[error("invalid Redis settings: {0}")]
    InvalidConfig(String),
    /// The server could not be reached in time (only [`RedisConnection::ping`],
    /// [`RedisConnection::wait_connected`] and the event subscriber report this: the
    /// pool and the lock and queue adapters are built without a server). The source is
    /// the cause (the `fred::Error`, when there is one).
    #[error("Redis unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The server answered with an unexpected error, which is the source.
    #[error("Redis setup failed")]
    Unexpected(#[source] anyhow::Error),
}

/// A pool of Redis connections (cheap to clone), with the settings the adapters built
/// from it share.
///
/// It is built without a server: [`connect`](Self::connect) only checks the settings and
/// starts connecting in the background, so a process starts while Redis is down. The
/// pool keeps trying, the first connection included (exponential backoff from 100 ms up
/// to [`RedisConfig::reconnect_max_delay`], forever), and reconnects the same way after
/// a loss; while it is disconnected every command fails with the port's `Unavailable`
/// after [`RedisConfig::command_timeout`]. Once connected the first time it reads the
/// server's `maxmemory-policy` and logs a warning when the server may evict keys.
#[derive(Clone)]
pub struct RedisConnection {
    pub(crate) pool: Pool,
    pub(crate) config: RedisConfig,
    /// Set by [`close`](Self::close): stops the background policy check.
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("url", &redact(&self.config.url))
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// Builds a pool of [`RedisConfig::pool_size`] connections to [`RedisConfig::url`]
    /// and starts connecting it in the background; returns at once, whether or not the
    /// server is up. Must be called inside a tokio runtime. Use
    /// [`wait_connected`](Self::wait_connected) to wait for the server.
    ///
    /// # Errors
    /// [`ConnectError::InvalidConfig`] for an unparsable URL, a zero pool size or zero
    /// timeouts; never for an unreachable server.
    pub async fn connect(config: RedisConfig) -> Result<Self, ConnectError> {
        if config.pool_size == 0 {
            return Err(ConnectError::InvalidConfig(
                "pool_size must be at least 1".into(),
            ));
        }
        if config.command_timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(ConnectError::InvalidConfig(
                "command_timeout and connect_timeout must not be zero".into(),
            ));
        }
        let builder = builder(&config, None)?;
        let pool = builder
            .build_pool(config.pool_size)
            .map_err(|e| ConnectError::InvalidConfig(e.to_string()))?;
        // The connection tasks run until `close`; their handles are not needed (errors
        // reach the callers of each command).
        drop(pool.connect());
        let (closed, closed_rx) = watch::channel(false);
        tokio::spawn(warn_if_the_server_evicts(
            pool.clone(),
            redact(&config.url),
            closed_rx,
        ));
        Ok(Self {
            pool,
            config,
            closed,
        })
    }

    /// The settings this pool was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Round-trips a `PING` (for health checks).
    ///
    /// # Errors
    /// [`ConnectError::Unavailable`] when the server does not answer within
    /// [`RedisConfig::command_timeout`].
    pub async fn ping(&self) -> Result<(), ConnectError> {
        let _: String = self
            .pool
            .ping(None)
            .await
            .map_err(|e| ConnectError::Unavailable(e.into()))?;
        Ok(())
    }

    /// Waits until the server answers a `PING`, at most `timeout`. Optional: the
    /// adapters work without it (their calls fail with `Unavailable` until the server is
    /// up); it is for a process that prefers to wait for Redis at start-up.
    ///
    /// # Errors
    /// [`ConnectError::Unavailable`] when no `PING` succeeded within `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ConnectError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            // Dropping a PING on the timeout is harmless: it changes nothing.
            let last = match tokio::time::timeout(remaining, self.ping()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => anyhow::Error::new(e),
                Err(_) => anyhow::Error::msg("no answer"),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ConnectError::Unavailable(
                    last.context(format!("Redis did not answer within {timeout:?}")),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50).min(remaining)).await;
        }
    }

    /// Deletes every key under [`RedisConfig::prefix`] (`SCAN MATCH prefix*` + `UNLINK`,
    /// in batches) and returns how many were deleted: the teardown of a test run or of
    /// a deployment's data. Never call it on a live deployment — it drops queued jobs
    /// and held locks (the reconciler would re-enqueue the orders, but nothing else).
    /// An empty prefix is refused, so it can never wipe a whole server.
    ///
    /// # Errors
    /// [`ConnectError::InvalidConfig`] for an empty prefix;
    /// [`ConnectError::Unavailable`] / [`ConnectError::Unexpected`] when a command
    /// failed (keys deleted so far stay deleted).
    pub async fn delete_prefix(&self) -> Result<u64, ConnectError> {
        if self.config.prefix.is_empty() {
            return Err(ConnectError::InvalidConfig(
                "delete_prefix needs a non-empty key prefix".into(),
            ));
        }
        let scan = CustomCommand::new_static("SCAN", ClusterHash::Random, false);
        let pattern = format!("{}*", self.config.prefix);
        let mut cursor = "0".to_owned();
        let mut deleted = 0u64;
        loop {
            let reply: Value = self
                .pool
                .custom(
                    scan.clone(),
                    vec![cursor.as_str(), "MATCH", pattern.as_str(), "COUNT", "1000"],
                )
                .await
                .map_err(|e| ConnectError::from(Failure::from(e)))?;
            let Value::Array(mut parts) = reply else {
                return Err(ConnectError::Unexpected(anyhow::anyhow!(
                    "SCAN replied {reply:?}"
                )));
            };
            let keys: Vec<String> = match parts.pop() {
                Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_string).collect(),
                _ => Vec::new(),
            };
            cursor = parts
                .pop()
                .and_then(|c| c.as_string())
                .unwrap_or_else(|| "0".to_owned());
            if !keys.is_empty() {
                let n: u64 = self
                    .pool
                    .unlink(keys)
                    .await
                    .map_err(|e| ConnectError::from(Failure::from(e)))?;
                deleted += n;
            }
            if cursor == "0" {
                return Ok(deleted);
            }
        }
    }

    /// Closes every connection of the pool and stops reconnecting, waiting at most
    /// 250 ms for the server's goodbye. Adapters built from this connection fail
    /// with `Unavailable` afterwards.
    pub async fn close(&self) {
        self.closed.send_replace(true);
        quit(&self.pool).await;
    }
}

/// How long closing waits for `QUIT` to be answered.
pub(crate) const QUIT_WAIT: Duration = Duration::from_millis(250);

/// `QUIT`, waiting at most [`QUIT_WAIT`]. Closing also interrupts the reconnect loop at
/// once, but a client that has not connected yet (fred waits one reconnect delay before
/// its first attempt) never answers the `QUIT`, which would otherwise hold the caller for
/// a whole command timeout. Giving up on the answer is harmless: the client stops
/// either way. An error only means it was closed already.
pub(crate) async fn quit<C: ClientLike>(client: &C) {
    let _ = tokio::time::timeout(QUIT_WAIT, client.quit()).await;
}

/// Reads `maxmemory-policy` once the pool can reach the server (retrying while it
/// cannot, until `closed`) and warns when it lets Redis evict keys: an evicted stream
/// entry is a lost job (the reconciler recovers the order, late) and an evicted lock lets
/// two workers contend on the database. Servers that refuse `CONFIG` (managed services
/// often do) are tolerated with a debug line.
async fn warn_if_the_server_evicts(pool: Pool, url: String, mut closed: watch::Receiver<bool>) {
    let command = CustomCommand::new_static("CONFIG", ClusterHash::Random, false);
    loop {
        if *closed.borrow() {
            return;
        }
        let reply: Result<HashMap<String, String>, Error> = pool
            .custom(command.clone(), vec!["GET", "maxmemory-policy"])
            .await;
        match reply {
            Ok(values) => {
                let policy = values
                    .get("maxmemory-policy")
                    .map_or("", String::as_str)
                    .to_owned();
                if maxmemory_policy_evicts(&policy) {
                    tracing::warn!(%url, policy = %policy,
                        "Redis may evict keys under memory pressure (maxmemory-policy is not \
                         noeviction): queued jobs and held locks can silently disappear; \
                         set maxmemory-policy noeviction");
                } else {
                    tracing::debug!(%url, "Redis maxmemory-policy is noeviction");
                }
                return;
            }
            Err(e) if matches!(Failure::from(e.clone()), Failure::Unavailable(_)) => {
                // Not connected yet (or the reply was lost): look again shortly.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = closed.changed() => return,
                }
            }
            Err(e) => {
                tracing::debug!(%url, error = %e,
                    "cannot read Redis maxmemory-policy (CONFIG refused?); not checked");
                return;
            }
        }
    }
}

/// Whether a `maxmemory-policy` value lets Redis delete keys on its own when memory runs
/// out: everything but `noeviction` does (`volatile-*` evicts keys with a TTL, such as
/// locks; `allkeys-*` evicts anything, queued jobs included). An empty or unknown value
/// counts as evicting, so the operator hears about it.
pub(crate) fn maxmemory_policy_evicts(policy: &str) -> bool {
    !policy.trim().eq_ignore_ascii_case("noeviction")
}

/// A fred builder with our timeouts, reconnect policy and broadcast buffer applied.
/// `broadcast_capacity` overrides the notification buffer (the subscriber needs a big one).
///
/// `fail_fast` is off: fred then applies the reconnect policy (forever) to the very first
/// connection too, instead of giving up when the server is down at start-up.
pub(crate) fn builder(
    config: &RedisConfig,
    broadcast_capacity: Option<usize>,
) -> Result<Builder, ConnectError> {
    let mut fred_config =
        Config::from_url(&config.url).map_err(|e| ConnectError::InvalidConfig(e.to_string()))?;
    fred_config.fail_fast = false;
    let mut builder = Builder::from_config(fred_config);
    let command_timeout = config.command_timeout;
    let connect_timeout = config.connect_timeout;
    builder
        .with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.internal_command_timeout = command_timeout;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
            if let Some(capacity) = broadcast_capacity {
                p.broadcast_channel_capacity = capacity;
            }
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            100,
            millis_u32(config.reconnect_max_delay).max(100),
            2,
        ));
    Ok(builder)
}

/// Connects `client` and waits for the connection, bounded by `within` (for the event
/// subscriber, which must confirm its subscription before it returns).
pub(crate) async fn init<C: ClientLike>(client: &C, within: Duration) -> Result<(), ConnectError> {
    match tokio::time::timeout(within, client.init()).await {
        Ok(Ok(_connection_task)) => Ok(()),
        Ok(Err(e)) => {
            quit(client).await;
            Err(ConnectError::Unavailable(e.into()))
        }
        Err(_) => {
            quit(client).await;
            Err(ConnectError::Unavailable(anyhow::anyhow!(
                "no connection within {within:?}"
            )))
        }
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`, for logs and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whole milliseconds of `d`, saturating (Redis takes `u32`/`u64` ms arguments).
pub(crate) fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// Error mapping
// ---------------------------------------------------------------------------------------

/// A fred error, classified: the server or the connection is (temporarily) out of
/// reach, or something else went wrong. Either way the fred error is kept, to become
/// the source of the port error.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connection lost, timed out, server loading/busy/read-only: retrying later may work.
    Unavailable(Error),
    /// A bug, a protocol surprise or data we cannot decode.
    Unexpected(anyhow::Error),
}

impl Failure {
    /// A failure for data this crate cannot make sense of.
    pub(crate) fn unexpected(message: impl std::fmt::Display) -> Self {
        Failure::Unexpected(anyhow::anyhow!("{message}"))
    }

    /// The same failure again, for one more of the callers a shared command served
    /// (a batched read or ack): the fred error is cloned; an unexpected error, which
    /// cannot be, is carried as its full message.
    pub(crate) fn share(&self) -> Self {
        match self {
            Failure::Unavailable(e) => Failure::Unavailable(e.clone()),
            Failure::Unexpected(e) => Failure::Unexpected(anyhow::anyhow!("{e:#}")),
        }
    }
}

/// Server error prefixes that mean "not now" rather than "never".
const TRANSIENT_SERVER_ERRORS: &[&str] = &[
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "READONLY",
];

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let transient_kind = matches!(
            e.kind(),
            ErrorKind::IO
                | ErrorKind::Timeout
                | ErrorKind::Canceled
                | ErrorKind::Backpressure
                | ErrorKind::Routing
                | ErrorKind::Cluster
        );
        let transient_reply = TRANSIENT_SERVER_ERRORS
            .iter()
            .any(|prefix| e.details().starts_with(prefix));
        if transient_kind || transient_reply {
            Failure::Unavailable(e)
        } else {
            Failure::Unexpected(anyhow::Error::new(e).context("Redis command failed"))
        }
    }
}

impl From<Failure> for LockError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(e) => LockError::unavailable(e),
            Failure::Unexpected(e) => LockError::Unexpected(e),
        }
    }
}

impl From<Failure> for QueueError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(e) => QueueError::unavailable(e),
            Failure::Unexpected(e) => QueueError::Unexpected(e),
        }
    }
}

impl From<Failure> for PublishError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(e) => PublishError::unavailable(e),
            Failure::Unexpected(e) => PublishError::Unexpected(e),
        }
    }
}

impl From<Failure> for ConnectError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unavailable(e) => ConnectError::Unavailable(e.into()),
            Failure::Unexpected(e) => ConnectError::Unexpected(e),
        }
    }
}

/// Whether the server said the consumer group (or its stream) does not exist.
pub(crate) fn is_nogroup(e: &Error) -> bool {
    e.details().contains("NOGROUP")
}

// ---------------------------------------------------------------------------------------
// Lua scripts
// ---------------------------------------------------------------------------------------

/// A Lua script run by SHA. Nothing is loaded up front (adapters are built without a
/// server): the first `EVALSHA` on a server that does not know the script (first use,
/// restart, `SCRIPT FLUSH`, failover) answers `NOSCRIPT`, which makes us load it and
/// retry once, so no caller ever sees that error.
#[derive(Debug, Clone)]
pub(crate) struct LuaScript {
    script: Script,
    lua: String,
}

impl LuaScript {
    /// Wraps the source (the SHA-1 is computed locally).
    pub(crate) fn new(lua: impl Into<String>) -> Self {
        let lua = lua.into();
        Self {
            script: Script::from_lua(lua.clone()),
            lua,
        }
    }

    /// `SCRIPT LOAD` (on every primary in a cluster).
    pub(crate) async fn load(&self, pool: &Pool) -> Result<(), Error> {
        let _: Value = pool.script_load_cluster(self.lua.clone()).await?;
        Ok(())
    }

    /// `EVALSHA`, reloading the script once on `NOSCRIPT`.
    pub(crate) async fn run<R: FromValue>(
        &self,
        pool: &Pool,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        match pool
            .evalsha(self.script.sha1().clone(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                tracing::debug!("Redis forgot a Lua script; loading it again");
                self.load(pool).await?;
                pool.evalsha(self.script.sha1().clone(), keys, args).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:6379/1"),
            "redis://user:***@host:6379/1"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn only_noeviction_keeps_every_key() {
        assert!(!maxmemory_policy_evicts("noeviction"));
        assert!(!maxmemory_policy_evicts("NoEviction"));
        for evicting in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "",
            "something-new",
        ] {
            assert!(maxmemory_policy_evicts(evicting), "{evicting:?} evicts");
        }
    }

    #[test]
    fn connection_errors_are_unavailable_and_replies_are_not() {
        let io = Failure::from(Error::new(ErrorKind::IO, "reset"));
        assert!(matches!(io, Failure::Unavailable(_)));
        let timeout = Failure::from(Error::new(ErrorKind::Timeout, "late"));
        assert!(matches!(timeout, Failure::Unavailable(_)));
        let loading = Failure::from(Error::new(ErrorKind::Unknown, "LOADING dataset"));
        assert!(matches!(loading, Failure::Unavailable(_)));
        let wrong = Failure::from(Error::new(ErrorKind::InvalidArgument, "WRONGTYPE x"));
        assert!(matches!(wrong, Failure::Unexpected(_)));
        assert!(matches!(
            LockError::from(Failure::Unavailable(Error::new(ErrorKind::IO, "x"))),
            LockError::Unavailable(_)
        ));
    }

    /// The fred error below `e` in its source chain, if any.
    fn fred_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
        std::iter::successors(Some(e), |e| (*e).source()).find_map(|e| e.downcast_ref())
    }

    #[test]
    fn port_errors_keep_the_fred_error_as_their_source() {
        use std::error::Error as _;
        let lock = LockError::from(Failure::from(Error::new(ErrorKind::IO, "reset")));
        assert!(matches!(lock, LockError::Unavailable(_)), "{lock:?}");
        assert_eq!(lock.to_string(), "lock service unavailable");
        let source = lock.source().and_then(|s| s.downcast_ref::<Error>());
        assert!(
            source.is_some_and(|e| *e.kind() == ErrorKind::IO && e.details() == "reset"),
            "the source is the fred error itself: {source:?}"
        );

        let queue = QueueError::from(Failure::from(Error::new(ErrorKind::Timeout, "late")));
        assert!(matches!(queue, QueueError::Unavailable(_)), "{queue:?}");
        assert!(fred_cause(&queue).is_some_and(|e| *e.kind() == ErrorKind::Timeout));

        let events = PublishError::from(Failure::from(Error::new(ErrorKind::IO, "gone")));
        assert!(fred_cause(&events).is_some_and(|e| e.details() == "gone"));

        let wrong = Error::new(ErrorKind::InvalidArgument, "WRONGTYPE x");
        let unexpected = QueueError::from(Failure::from(wrong));
        assert!(
            matches!(unexpected, QueueError::Unexpected(_)),
            "{unexpected:?}"
        );
        assert_eq!(unexpected.to_string(), "Redis command failed");
        assert!(fred_cause(&unexpected).is_some_and(|e| e.details() == "WRONGTYPE x"));

        let setup = ConnectError::from(Failure::from(Error::new(ErrorKind::IO, "refused")));
        assert!(matches!(setup, ConnectError::Unavailable(_)), "{setup:?}");
        assert!(fred_cause(&setup).is_some_and(|e| e.details() == "refused"));
    }
}
