//! [`JobQueue`] on a Redis Stream read by one consumer group.
//!
//! Layout (see [`RedisConfig::queue_keys`](crate::RedisConfig::queue_keys)):
//! - the stream holds ready jobs and reserved ones (the group's pending entries list,
//!   PEL, is the set of reservations);
//! - a sorted set holds delayed retries, scored by due time on the server's clock;
//! - a second stream is the dead letter.
//!
//! `reserve` first takes over a reservation whose visibility timeout expired (`XPENDING
//! IDLE` + `XCLAIM`, which bumps the entry's delivery count: the attempt counter survives
//! redelivery because Redis keeps it), then moves due retries back into the stream, then
//! reads new entries with `XREADGROUP … BLOCK` on a dedicated connection, waking up every
//! `poll_interval` (or when the next retry is due) to look again. `ack` is `XACK` +
//! `XDEL`; `nack` either schedules a new entry after `retry_backoff · 2^(attempt-1)` or
//! moves the job to the dead letter. Every multi-step change is one Lua script, so a
//! crash never leaves a job in two places or none.
//!
//! Bound: `enqueue` counts every job the queue holds (ready, in flight, delayed) and
//! refuses with `QueueError::Full` at [`QueueSettings::max_len`] instead of trimming the
//! stream, which would silently drop jobs. Only the dead letter is trimmed (`MAXLEN ~`,
//! oldest first). The three keys share a hash tag, so the scripts run on Redis Cluster.
//!
//! Consumers: each process reads under its own consumer name; a consumer that dies keeps
//! its name in the group (harmless) and its reservations are taken over by the others
//! after the visibility timeout.
//!
//! If Redis loses its data (restart without persistence, `FLUSHALL`), the consumer group
//! is re-created on the first `NOGROUP` reply and the scripts on the first `NOSCRIPT`,
//! without rebuilding the adapter. Jobs lost with the data are re-enqueued by the
//! reconciler from the database, the source of truth.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::ExclusivePool;
use fred::prelude::*;
use fred::types::streams::XReadResponse;
use order_core::domain::OrderId;
use order_core::ports::{Delivery, Job, JobQueue, NackOutcome, QueueError, QueueStats};
use tokio::time::Instant;

use crate::config::{QueueKeys, QueueSettings};
use crate::connection::{
    self, ConnectError, Failure, LuaScript, RedisConnection, is_nogroup, millis_u64,
};
use crate::scripts;

/// Pending entries the reclaim script looks at per `reserve` pass (dead-lettering
/// exhausted ones on the way) before it gives the turn to new jobs.
const RECLAIM_SCAN_LIMIT: u32 = 16;
/// Due retries moved back into the stream per `reserve` pass.
const PROMOTE_BATCH: u32 = 100;

/// One stream entry: its id and fields.
type Entry = (String, HashMap<String, String>);

/// A reliable job queue on Redis Streams. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisQueue {
    connection: RedisConnection,
    keys: QueueKeys,
    settings: QueueSettings,
    blocking: ExclusivePool,
    scripts: Scripts,
}

#[derive(Clone)]
struct Scripts {
    enqueue: LuaScript,
    reclaim: LuaScript,
    promote: LuaScript,
    ack: LuaScript,
    nack: LuaScript,
    bury: LuaScript,
    stats: LuaScript,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("keys", &self.keys)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Builds the queue on `connection` with the settings in its
    /// [`RedisConfig::queue`](crate::RedisConfig::queue): loads the scripts, creates the
    /// consumer group (and the stream, `MKSTREAM`) if missing, and opens
    /// [`QueueSettings::blocking_connections`] dedicated connections for blocking reads.
    ///
    /// # Errors
    /// [`ConnectError::InvalidConfig`] for unusable settings (zero attempts, bound or
    /// blocking connections; empty names); [`ConnectError::Unavailable`] when the server
    /// is unreachable; [`ConnectError::Unexpected`] when it refuses the setup.
    pub async fn new(connection: &RedisConnection) -> Result<Self, ConnectError> {
        let config = &connection.config;
        let settings = config.queue.clone();
        validate(&settings)?;
        let scripts = Scripts {
            enqueue: LuaScript::new(scripts::ENQUEUE),
            reclaim: LuaScript::new(scripts::reclaim()),
            promote: LuaScript::new(scripts::PROMOTE),
            ack: LuaScript::new(scripts::ACK),
            nack: LuaScript::new(scripts::nack()),
            bury: LuaScript::new(scripts::BURY),
            stats: LuaScript::new(scripts::STATS),
        };
        for script in [
            &scripts.enqueue,
            &scripts.reclaim,
            &scripts.promote,
            &scripts.ack,
            &scripts.nack,
            &scripts.bury,
            &scripts.stats,
        ] {
            script
                .load(&connection.pool)
                .await
                .map_err(|e| ConnectError::from(Failure::from(e)))?;
        }
        let blocking = connection::builder(config, None)?
            .build_exclusive_pool(settings.blocking_connections)
            .map_err(|e| ConnectError::InvalidConfig(e.to_string()))?;
        match tokio::time::timeout(config.connect_timeout, blocking.init()).await {
            Ok(Ok(_connection_task)) => {}
            Ok(Err(e)) => {
                let _ = blocking.quit().await;
                return Err(ConnectError::Unavailable(e.to_string()));
            }
            Err(_) => {
                let _ = blocking.quit().await;
                return Err(ConnectError::Unavailable(
                    "blocking connections not ready in time".into(),
                ));
            }
        }
        let queue = Self {
            connection: connection.clone(),
            keys: config.queue_keys(),
            settings,
            blocking,
            scripts,
        };
        queue
            .ensure_group()
            .await
            .map_err(|e| ConnectError::from(Failure::from(e)))?;
        Ok(queue)
    }

    /// The keys this queue lives in.
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// Closes the dedicated blocking connections (the shared pool belongs to the
    /// [`RedisConnection`]). `reserve` fails with `Unavailable` afterwards.
    pub async fn close(&self) {
        let _ = self.blocking.quit().await;
    }

    /// `XGROUP CREATE stream group 0 MKSTREAM`, tolerating `BUSYGROUP`. Starting at `0`
    /// matters after a data loss: jobs enqueued before the group came back are still
    /// delivered (acked entries are deleted, so `0` never replays finished work).
    async fn ensure_group(&self) -> Result<(), Error> {
        let created: Result<Value, Error> = self
            .connection
            .pool
            .xgroup_create(&self.keys.stream, &self.settings.group, "0", true)
            .await;
        match created {
            Err(e) if e.details().starts_with("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
            Ok(_) => {
                tracing::info!(stream = %self.keys.stream, group = %self.settings.group,
                    "created the job queue's consumer group");
                Ok(())
            }
        }
    }

    /// Runs a script touching the consumer group, re-creating the group once on
    /// `NOGROUP` (Redis restarted empty or was flushed).
    async fn run_grouped(
        &self,
        script: &LuaScript,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, Failure> {
        let pool = &self.connection.pool;
        match script.run(pool, keys.clone(), args.clone()).await {
            Err(e) if is_nogroup(&e) => {
                tracing::warn!(stream = %self.keys.stream,
                    "the job queue's consumer group is gone; re-creating it");
                self.ensure_group().await?;
                Ok(script.run(pool, keys, args).await?)
            }
            other => Ok(other?),
        }
    }

    /// Takes over one expired reservation, if any (dead-lettering exhausted ones).
    async fn reclaim(&self) -> Result<Option<Delivery>, Failure> {
        let reply = self
            .run_grouped(
                &self.scripts.reclaim,
                vec![self.keys.stream.clone(), self.keys.dead.clone()],
                vec![
                    self.settings.group.as_str().into(),
                    self.settings.consumer.as_str().into(),
                    int(millis_u64(self.settings.visibility_timeout)),
                    int(u64::from(self.settings.max_attempts)),
                    int(u64::from(RECLAIM_SCAN_LIMIT)),
                    int(self.settings.max_len),
                ],
            )
            .await?;
        let Value::Array(items) = reply else {
            return Ok(None);
        };
        let [id, job, attempt] = items.as_slice() else {
            return Err(Failure::unexpected(format!(
                "reclaim script returned {items:?}"
            )));
        };
        let (Some(id), Some(job), Some(attempt)) =
            (id.as_string(), job.as_string(), attempt.as_u64())
        else {
            return Err(Failure::unexpected(format!(
                "reclaim script returned {items:?}"
            )));
        };
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        tracing::debug!(entry = %id, attempt, "redelivering a job whose visibility timeout expired");
        self.delivery(id, &job, attempt).await
    }

    /// Moves due retries into the stream; returns the time until the next one is due.
    async fn promote(&self) -> Result<Option<Duration>, Failure> {
        let wait: i64 = self
            .scripts
            .promote
            .run(
                &self.connection.pool,
                vec![self.keys.stream.clone(), self.keys.retry.clone()],
                vec![int(u64::from(PROMOTE_BATCH))],
            )
            .await?;
        Ok(u64::try_from(wait).ok().map(Duration::from_millis))
    }

    /// Reads one new entry, blocking up to `block` on a dedicated connection
    /// (non-blocking on the shared pool when `block` is zero).
    async fn read(&self, block: Duration) -> Result<Option<Delivery>, Failure> {
        let entry = match self.xreadgroup(block).await {
            // NOGROUP: the group is gone. UNBLOCKED: the stream was deleted while we
            // waited on it (Redis ≥ 7.0 unblocks readers with this error). Both mean
            // Redis lost our data: re-create the group and look again.
            Err(e) if is_nogroup(&e) || e.details().starts_with("UNBLOCKED") => {
                tracing::warn!(stream = %self.keys.stream,
                    "the job queue's stream or consumer group is gone; re-creating it");
                self.ensure_group().await?;
                self.xreadgroup(Duration::ZERO).await?
            }
            other => other?,
        };
        let Some((id, fields)) = entry else {
            return Ok(None);
        };
        let job = fields.get("job").cloned().unwrap_or_default();
        let base = fields
            .get("base")
            .and_then(|b| b.parse::<u32>().ok())
            .unwrap_or(0);
        // A new entry is on its first delivery in the group: attempt = base + 1.
        self.delivery(id, &job, base.saturating_add(1)).await
    }

    /// `XREADGROUP GROUP g c COUNT 1 [BLOCK ms] STREAMS stream >`: at most one new entry.
    async fn xreadgroup(&self, block: Duration) -> Result<Option<Entry>, Error> {
        let group = self.settings.group.as_str();
        let consumer = self.settings.consumer.as_str();
        let stream = self.keys.stream.as_str();
        let reply: Value = if block.is_zero() {
            self.connection
                .pool
                .xreadgroup(group, consumer, Some(1), None, false, stream, ">")
                .await?
        } else if let Ok(client) = tokio::time::timeout(block, self.blocking.acquire()).await {
            let block_ms = millis_u64(block).max(1);
            let options = Options {
                timeout: Some(block + self.connection.config.command_timeout),
                ..Options::default()
            };
            client
                .with_options(&options)
                .xreadgroup(group, consumer, Some(1), Some(block_ms), false, stream, ">")
                .await?
        } else {
            // Every dedicated connection is busy and we have waited our slice already:
            // look once without blocking instead.
            self.connection
                .pool
                .xreadgroup(group, consumer, Some(1), None, false, stream, ">")
                .await?
        };
        // Nothing new (or the BLOCK timed out): a nil reply.
        if reply.is_null() {
            return Ok(None);
        }
        let response: XReadResponse<String, String, String, String> =
            reply.into_xread_response()?;
        Ok(response.into_values().flatten().next())
    }

    /// Turns a stream entry into a delivery, or buries it when its job is unreadable.
    async fn delivery(
        &self,
        id: String,
        job: &str,
        attempt: u32,
    ) -> Result<Option<Delivery>, Failure> {
        match decode_job(job) {
            Some(job) => Ok(Some(Delivery {
                job,
                receipt: id,
                attempt,
            })),
            None => {
                tracing::error!(entry = %id, job, "undecodable job moved to the dead letter");
                self.run_grouped(
                    &self.scripts.bury,
                    vec![self.keys.stream.clone(), self.keys.dead.clone()],
                    vec![
                        self.settings.group.as_str().into(),
                        id.as_str().into(),
                        job.into(),
                        int(u64::from(attempt)),
                        "undecodable job".into(),
                        int(self.settings.max_len),
                    ],
                )
                .await?;
                Ok(None)
            }
        }
    }

    /// `retry_backoff · 2^(attempt-1)`, saturating.
    fn backoff(&self, attempt: u32) -> Duration {
        order_core::app::exponential_backoff(self.settings.retry_backoff, attempt)
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    /// Adds the job at the tail of the stream.
    ///
    /// # Errors
    /// [`QueueError::Full`] when the queue already holds [`QueueSettings::max_len`] jobs
    /// (ready, delayed or in flight); nothing is written then.
    async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        let reply: Value = self
            .scripts
            .enqueue
            .run(
                &self.connection.pool,
                vec![self.keys.stream.clone(), self.keys.retry.clone()],
                vec![encode_job(job).into(), int(self.settings.max_len)],
            )
            .await
            .map_err(Failure::from)?;
        match reply {
            Value::Array(items) => match items.as_slice() {
                [status, _] if status.as_str().as_deref() == Some("ok") => Ok(()),
                [status, held] if status.as_str().as_deref() == Some("full") => Err(
                    QueueError::Full(held.as_u64().unwrap_or(self.settings.max_len)),
                ),
                _ => Err(Failure::unexpected(format!("enqueue script returned {items:?}")).into()),
            },
            other => Err(Failure::unexpected(format!("enqueue script returned {other:?}")).into()),
        }
    }

    /// Expired reservations first (attempt = `base` + delivery count), then due
    /// retries, then new jobs; waits up to `wait`, looking again every `poll_interval`
    /// or when the next retry falls due.
    ///
    /// Dropping the returned future while it blocks is safe but may leave a job that
    /// arrived in that instant reserved for this consumer: it is redelivered after the
    /// visibility timeout, like any un-acked job.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when Redis cannot be reached.
    async fn reserve(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(delivery) = self.reclaim().await? {
                return Ok(Some(delivery));
            }
            let next_retry = self.promote().await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut block = remaining.min(self.settings.poll_interval);
            if let Some(due) = next_retry {
                block = block.min(due);
            }
            if let Some(delivery) = self.read(block).await? {
                return Ok(Some(delivery));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// `XACK` + `XDEL` of the receipt's entry, atomically. A stale receipt (the entry
    /// was redelivered since) still names the same job, so acking it finishes the job;
    /// the other holder's later ack or nack then finds nothing and changes nothing.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable; [`QueueError::Unexpected`] for a
    /// receipt this queue never issued.
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        check_receipt(&delivery.receipt)?;
        self.scripts
            .ack
            .run::<Value>(
                &self.connection.pool,
                vec![self.keys.stream.clone()],
                vec![
                    self.settings.group.as_str().into(),
                    delivery.receipt.as_str().into(),
                ],
            )
            .await
            .map_err(Failure::from)?;
        Ok(())
    }

    /// Retries after `retry_backoff · 2^(attempt-1)`, or dead-letters once `attempt`
    /// reaches `max_attempts`. A delivery the queue no longer holds under this receipt
    /// (redelivered since, acked, dead-lettered, lost with Redis data) is left alone and
    /// reported as [`NackOutcome::Stale`]: the job is, or was, someone else's.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable; [`QueueError::Unexpected`] for a
    /// receipt this queue never issued.
    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<NackOutcome, QueueError> {
        check_receipt(&delivery.receipt)?;
        let delay = self.backoff(delivery.attempt);
        let reply = self
            .run_grouped(
                &self.scripts.nack,
                vec![
                    self.keys.stream.clone(),
                    self.keys.retry.clone(),
                    self.keys.dead.clone(),
                ],
                vec![
                    self.settings.group.as_str().into(),
                    delivery.receipt.as_str().into(),
                    int(u64::from(delivery.attempt)),
                    int(u64::from(self.settings.max_attempts)),
                    int(millis_u64(delay)),
                    error.into(),
                    int(self.settings.max_len),
                ],
            )
            .await?;
        match reply.as_i64() {
            Some(-1) => Ok(NackOutcome::DeadLettered),
            Some(-2 | -3) => {
                tracing::debug!(entry = %delivery.receipt, "nack of a delivery no longer held; ignored");
                Ok(NackOutcome::Stale)
            }
            Some(ms) if ms >= 0 => Ok(NackOutcome::Retried(delay)),
            _ => Err(Failure::unexpected(format!("nack script returned {reply:?}")).into()),
        }
    }

    /// `waiting` = stream entries not yet delivered + delayed retries; `in_flight` = the
    /// group's pending entries; `dead` = length of the dead-letter stream. One atomic
    /// snapshot.
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let reply = self
            .run_grouped(
                &self.scripts.stats,
                vec![
                    self.keys.stream.clone(),
                    self.keys.retry.clone(),
                    self.keys.dead.clone(),
                ],
                vec![self.settings.group.as_str().into()],
            )
            .await?;
        let counts: Option<Vec<u64>> = match &reply {
            Value::Array(items) => items.iter().map(Value::as_u64).collect(),
            _ => None,
        };
        match counts.as_deref() {
            Some(&[waiting, in_flight, dead]) => Ok(QueueStats {
                waiting,
                in_flight,
                dead,
            }),
            _ => Err(Failure::unexpected(format!("stats script returned {reply:?}")).into()),
        }
    }
}

fn validate(settings: &QueueSettings) -> Result<(), ConnectError> {
    let problem = if settings.max_attempts == 0 {
        "max_attempts must be at least 1"
    } else if settings.max_len == 0 {
        "max_len must be at least 1"
    } else if settings.blocking_connections == 0 {
        "blocking_connections must be at least 1"
    } else if settings.stream.is_empty()
        || settings.group.is_empty()
        || settings.consumer.is_empty()
    {
        "stream, group and consumer names must not be empty"
    } else if settings.poll_interval.is_zero() {
        "poll_interval must not be zero"
    } else {
        return Ok(());
    };
    Err(ConnectError::InvalidConfig(problem.into()))
}

/// An integer script argument.
fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Receipts are stream entry ids, `<ms>-<seq>`.
fn check_receipt(receipt: &str) -> Result<(), QueueError> {
    let valid = receipt
        .split_once('-')
        .is_some_and(|(ms, seq)| is_digits(ms) && is_digits(seq));
    if valid {
        Ok(())
    } else {
        Err(QueueError::Unexpected(anyhow::anyhow!(
            "not a receipt of this queue: {receipt:?}"
        )))
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The wire form of a job in a stream entry: `process_order:<id>`.
pub(crate) fn encode_job(job: Job) -> String {
    match job {
        Job::ProcessOrder(id) => format!("process_order:{id}"),
    }
}

/// Parses [`encode_job`]'s output; `None` for anything else.
pub(crate) fn decode_job(text: &str) -> Option<Job> {
    let (kind, rest) = text.split_once(':')?;
    match kind {
        "process_order" => {
            let id = rest.parse::<u64>().ok()?;
            OrderId::new(id).ok().map(Job::ProcessOrder)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_garbage_is_rejected() {
        let job = Job::ProcessOrder(OrderId::new(42).unwrap());
        assert_eq!(encode_job(job), "process_order:42");
        assert_eq!(decode_job("process_order:42"), Some(job));
        assert_eq!(decode_job("process_order:0"), None);
        assert_eq!(decode_job("process_order:x"), None);
        assert_eq!(decode_job("other:1"), None);
        assert_eq!(decode_job(""), None);
    }

    #[test]
    fn receipts_must_be_stream_ids() {
        assert!(check_receipt("1700000000000-0").is_ok());
        assert!(check_receipt("1-2-3").is_err());
        assert!(check_receipt("abc").is_err());
        assert!(check_receipt("-1").is_err());
    }
}
