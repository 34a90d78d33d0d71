//! Typed settings of the Redis adapters, and the key names derived from them.
//!
//! Every key and channel this crate touches is derived here, from one prefix, so two
//! deployments (or two test runs) can share a Redis server without seeing each other.
//! Nothing here reads the environment: binaries load settings once and pass them in.

use std::time::Duration;

use order_core::app::Backoff;

/// Settings of every Redis adapter in this crate.
///
/// `Default` gives the production defaults except `url`, which points at a local server.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// Server address, e.g. `redis://127.0.0.1:6379` or `redis://127.0.0.1:6379/2` for a
    /// logical database. `redis-cluster://…` selects cluster mode.
    pub url: String,
    /// Prepended to every key and channel this crate creates (default `orders:`).
    pub prefix: String,
    /// Connections in the shared pool used by every non-blocking command (default 4).
    pub pool_size: usize,
    /// Bound on one command, including time spent waiting for a reconnection; past it
    /// the call fails as `Unavailable` (default 2 s).
    pub command_timeout: Duration,
    /// Bound on one connection attempt (default 5 s). A failed attempt is retried with
    /// backoff, the first one included: a server that is down at start-up is waited for
    /// in the background, never reported as a construction error.
    pub connect_timeout: Duration,
    /// Longest pause between two connection attempts; attempts never stop and back off
    /// exponentially from 100 ms (plus up to 100 ms of jitter, which fred also waits
    /// before the very first attempt) up to this (default 5 s).
    pub reconnect_max_delay: Duration,
    /// Lock settings.
    pub lock: LockConfig,
    /// Job queue settings.
    pub queue: QueueConfig,
    /// Event bus settings.
    pub events: EventsConfig,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "orders:".to_owned(),
            pool_size: 4,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(5),
            lock: LockConfig::default(),
            queue: QueueConfig::default(),
            events: EventsConfig::default(),
        }
    }
}

impl RedisConfig {
    /// The default settings for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The same settings with another key prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The Redis key holding lock `name`: `{prefix}{namespace}{name}`, e.g.
    /// `orders:lock:product:42`.
    ///
    /// Lock operations touch one key each, so in Redis Cluster any key works and no
    /// hash tag is needed.
    pub fn lock_key(&self, name: &str) -> String {
        format!("{}{}{}", self.prefix, self.lock.namespace, name)
    }

    /// The three keys of the job queue, sharing the hash tag `{stream}` so that the Lua
    /// scripts that touch several of them stay on one Redis Cluster slot.
    pub fn queue_keys(&self) -> QueueKeys {
        let base = format!("{}queue:{{{}}}", self.prefix, self.queue.stream);
        QueueKeys {
            retry: format!("{base}:retry"),
            dead: format!("{base}:dead"),
            stream: base,
        }
    }

    /// The pub/sub channel order events go to: the configured one, or `{prefix}events`.
    pub fn events_channel(&self) -> String {
        match &self.events.channel {
            Some(channel) => channel.clone(),
            None => format!("{}events", self.prefix),
        }
    }
}

/// Settings of [`RedisLock`](crate::RedisLock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// Inserted between the prefix and the lock name (default `lock:`).
    pub namespace: String,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            namespace: "lock:".to_owned(),
        }
    }
}

/// Settings of [`RedisQueue`](crate::RedisQueue).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Name of the stream; the keys are `{prefix}queue:{<stream>}`, plus `:retry` (the
    /// delayed retries) and `:dead` (the dead letter). Default `jobs`.
    pub stream: String,
    /// Consumer group shared by every worker (default `workers`).
    pub group: String,
    /// This process's consumer name in the group. Must be unique per live process; the
    /// default is derived from the process id and the start time. Pending entries of a
    /// consumer that died are reclaimed by the others after the visibility timeout, and
    /// its name is deleted once it is idle and holds nothing (see
    /// [`idle_consumer_timeout`](Self::idle_consumer_timeout)).
    pub consumer: String,
    /// How long a reserved job stays invisible before it is delivered again (default
    /// 30 s).
    pub visibility_timeout: Duration,
    /// Deliveries before a job goes to the dead letter (default 8: the retry budget
    /// `retry_backoff.base · (1 + 2 + … + 64)` = 127 s at the default backoff outlives the
    /// service's default 30 s processing lease, which the service requires).
    pub max_attempts: u32,
    /// The retry schedule after a nack: `retry_backoff.nominal(attempt)` =
    /// `min(base · 2^(attempt-1), max)` (default base 1 s, max 10 min). Deterministic —
    /// the delay is reported ([`NackOutcome::Retried`](order_core::ports::NackOutcome::Retried))
    /// and checked — so a jitter other than 0 is refused, as are a zero base and a max
    /// below the base.
    pub retry_backoff: Backoff,
    /// Most jobs the queue holds (ready, delayed and in flight; dead letters are not
    /// counted). At the bound `enqueue` fails with `QueueError::Full` and writes
    /// nothing: trimming would silently drop jobs. The dead letter is trimmed to about
    /// the same length, oldest first. Default 1 000 000.
    pub max_len: u64,
    /// While any `reserve` of the queue waits, how often its shared reads look for
    /// expired reservations and for due retries written by other processes (a new job
    /// wakes them at once, a retry this process scheduled is promoted when due, and
    /// expired reservations are reclaimed back to back while more are found). Default
    /// 500 ms.
    pub poll_interval: Duration,
    /// Dedicated connections for `XREADGROUP … BLOCK`, so blocking reads never stall
    /// the shared pool. The concurrent `reserve` calls of a queue share one blocking
    /// read at a time, so one connection is in use at a time (default 2).
    pub blocking_connections: usize,
    /// A consumer name of the group that has no pending entries and has not touched the
    /// group for this long is deleted (`XGROUP DELCONSUMER`) by the housekeeping step of
    /// the reads of `reserve`, which runs at most once per `min(this, 1 min)` per queue. Every process
    /// start adds a name, so without this the group's consumer list grows forever. A
    /// consumer that still holds pending entries is never deleted (that would drop its
    /// reservations), and neither is this process's own name. A live consumer touches
    /// the group at least every `poll_interval`, so it is never idle this long; must be
    /// at least twice `poll_interval`. Default 1 h.
    pub idle_consumer_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            stream: "jobs".to_owned(),
            group: "workers".to_owned(),
            consumer: default_consumer_name(),
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 8,
            retry_backoff: Backoff::fixed_schedule(
                Duration::from_secs(1),
                Duration::from_secs(600),
            ),
            max_len: 1_000_000,
            poll_interval: Duration::from_millis(500),
            blocking_connections: 2,
            idle_consumer_timeout: Duration::from_secs(3600),
        }
    }
}

/// A consumer name unlikely to collide with another live process: pid + start time.
fn default_consumer_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("consumer-{}-{nanos:x}", std::process::id())
}

/// Settings of [`RedisEvents`](crate::RedisEvents) and
/// [`RedisEventSubscriber`](crate::RedisEventSubscriber).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The pub/sub channel; `None` means `{prefix}events`.
    pub channel: Option<String>,
    /// Messages a subscriber buffers before a slow reader starts losing them (default
    /// 65 536; fred's own default of 32 drops messages under load).
    pub subscriber_buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            channel: None,
            subscriber_buffer: 65_536,
        }
    }
}

/// The Redis keys of one job queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// The stream of ready and in-flight jobs, read by the consumer group.
    pub stream: String,
    /// Sorted set of delayed retries, scored by due time (ms since the epoch, server
    /// clock).
    pub retry: String,
    /// The dead-letter stream.
    pub dead: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_starts_with_the_prefix() {
        let config = RedisConfig::default().with_prefix("t1:");
        assert_eq!(config.lock_key("product:7"), "t1:lock:product:7");
        let keys = config.queue_keys();
        assert_eq!(keys.stream, "t1:queue:{jobs}");
        assert_eq!(keys.retry, "t1:queue:{jobs}:retry");
        assert_eq!(keys.dead, "t1:queue:{jobs}:dead");
        assert_eq!(config.events_channel(), "t1:events");
    }

    #[test]
    fn an_explicit_channel_wins() {
        let mut config = RedisConfig::default();
        config.events.channel = Some("elsewhere".into());
        assert_eq!(config.events_channel(), "elsewhere");
    }
}
