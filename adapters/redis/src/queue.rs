//! [`JobQueue`] on a Redis Stream read by one consumer group.
//!
//! Layout (see [`RedisConfig::queue_keys`](crate::RedisConfig::queue_keys)):
//! - the stream holds ready jobs and reserved ones (the group's pending entries list,
//!   PEL, is the set of reservations);
//! - a sorted set holds delayed retries and deferrals, scored by due time on the
//!   server's clock;
//! - a second stream is the dead letter.
//!
//! `reserve` first takes over a reservation whose visibility timeout expired (`XPENDING
//! IDLE` + `XCLAIM`, which bumps the entry's delivery count: the attempt counter survives
//! redelivery because Redis keeps it), then moves due retries back into the stream, then
//! reads new entries with `XREADGROUP … BLOCK` on a dedicated connection, waking up every
//! `poll_interval` (or when the next retry is due) to look again.
//!
//! Receipts name one delivery, `<entry id>/<attempt>`: `XCLAIM` keeps the entry id, so
//! the id alone would let a worker that stalled past its visibility timeout ack the
//! redelivery someone else now holds. `ack` (`XACK` + `XDEL`), `nack` (a new entry after
//! `retry_backoff · 2^(attempt-1)`, or the dead letter) and `defer` (a new entry after
//! the delay, written so that its next delivery carries the same attempt) act only
//! while the entry is still pending with exactly that delivery; otherwise they change
//! nothing. Every multi-step change is one Lua script, so a crash never leaves a job in
//! two places or none.
//!
//! Cancel safety: the steps of `reserve` that hand out an entry run in a spawned task
//! that sends its result over a oneshot channel. If the caller dropped the `reserve`
//! future meanwhile (a worker loop that stops), the task stops at its next step, and a
//! delivery it got after the caller left is given straight back (the `defer` script
//! with no delay: a new entry, same attempt, deliverable to others at once). Dropping a
//! fred command future would not cancel the command on the server: a dropped
//! `XREADGROUP … BLOCK` still reads the next entry, and nobody would hold it.
//!
//! Bound: `enqueue` counts every job the queue holds (ready, in flight, delayed) and
//! refuses with `QueueError::Full` at [`QueueSettings::max_len`] instead of trimming the
//! stream, which would silently drop jobs. Only the dead letter is trimmed (`MAXLEN ~`,
//! oldest first). The three keys share a hash tag, so the scripts run on Redis Cluster.
//!
//! Consumers: each process reads under its own consumer name; a consumer that dies keeps
//! its name in the group until housekeeping deletes it, and its reservations are taken
//! over by the others after the visibility timeout. Housekeeping (at most once per
//! `min(`[`QueueSettings::idle_consumer_timeout`]`, 1 min)` per queue, inside
//! `reserve`) deletes consumers without pending entries idle longer than
//! `idle_consumer_timeout`.
//!
//! Nothing is sent to Redis when the queue is built: the consumer group (and the
//! stream, `MKSTREAM`) is created on the first `NOGROUP` reply of any command that
//! needs it, and the scripts are loaded on their first `NOSCRIPT`. The same replies
//! after Redis lost its data (restart without persistence, `FLUSHALL`) re-create them
//! without rebuilding the adapter. Jobs lost with the data are re-enqueued by the
//! reconciler (`OrderService::reconcile`) from the database, the source of truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::ExclusivePool;
use fred::prelude::*;
use fred::types::streams::XReadResponse;
use order_core::domain::OrderId;
use order_core::ports::{
    Delivery, Job, JobQueue, NackOutcome, QueueError, QueueStats, QueueTimings,
};
use tokio::sync::oneshot;
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
/// Longest pause between two housekeeping runs of one queue.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

/// One stream entry: its id and fields.
type Entry = (String, HashMap<String, String>);

/// A reliable job queue on Redis Streams. Cheap to clone; clones share connections and
/// the housekeeping schedule.
#[derive(Clone)]
pub struct RedisQueue {
    inner: Arc<Inner>,
}

struct Inner {
    connection: RedisConnection,
    keys: QueueKeys,
    settings: QueueSettings,
    blocking: ExclusivePool,
    scripts: Scripts,
    /// When housekeeping is due next (`None`: at the first `reserve`).
    next_housekeeping: Mutex<Option<Instant>>,
}

struct Scripts {
    enqueue: LuaScript,
    reclaim: LuaScript,
    promote: LuaScript,
    ack: LuaScript,
    nack: LuaScript,
    defer: LuaScript,
    bury: LuaScript,
    stats: LuaScript,
    prune: LuaScript,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("keys", &self.inner.keys)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// A receipt, split: the stream entry and the attempt of the delivery it names.
struct Receipt<'a> {
    id: &'a str,
    attempt: u32,
}

impl RedisQueue {
    /// Builds the queue on `connection` with the settings in its
    /// [`RedisConfig::queue`](crate::RedisConfig::queue), and starts connecting its
    /// [`QueueSettings::blocking_connections`] dedicated connections for blocking reads
    /// in the background. Needs no server: the consumer group and the scripts are
    /// created on first use, so a process starts while Redis is down and its calls fail
    /// with `QueueError::Unavailable` until Redis is back. Must be called inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// [`ConnectError::InvalidConfig`] for unusable settings: timings refused by
    /// [`QueueTimings::validate`] (zero visibility timeout, attempts or backoff), a zero
    /// bound, poll interval or number of blocking connections, empty names, or an
    /// `idle_consumer_timeout` shorter than twice the poll interval.
    pub async fn new(connection: &RedisConnection) -> Result<Self, ConnectError> {
        let config = &connection.config;
        let settings = config.queue.clone();
        validate(&settings)?;
        let scripts = Scripts {
            enqueue: LuaScript::new(scripts::ENQUEUE),
            reclaim: LuaScript::new(scripts::reclaim()),
            promote: LuaScript::new(scripts::PROMOTE),
            ack: LuaScript::new(scripts::ack()),
            nack: LuaScript::new(scripts::nack()),
            defer: LuaScript::new(scripts::defer()),
            bury: LuaScript::new(scripts::BURY),
            stats: LuaScript::new(scripts::STATS),
            prune: LuaScript::new(scripts::PRUNE_CONSUMERS),
        };
        let blocking = connection::builder(config, None)?
            .build_exclusive_pool(settings.blocking_connections)
            .map_err(|e| ConnectError::InvalidConfig(e.to_string()))?;
        // Runs until `close`, retrying while the server is down; see `builder`.
        drop(blocking.connect().await);
        Ok(Self {
            inner: Arc::new(Inner {
                connection: connection.clone(),
                keys: config.queue_keys(),
                settings,
                blocking,
                scripts,
                next_housekeeping: Mutex::new(None),
            }),
        })
    }

    /// The keys this queue lives in.
    pub fn keys(&self) -> &QueueKeys {
        &self.inner.keys
    }

    /// Closes the dedicated blocking connections (the shared pool belongs to the
    /// [`RedisConnection`]). `reserve` fails with `Unavailable` afterwards.
    pub async fn close(&self) {
        // The same bounded wait as `RedisConnection::close`, for the same reason.
        let _ = tokio::time::timeout(connection::QUIT_WAIT, self.inner.blocking.quit()).await;
    }
}

impl Inner {
    fn pool(&self) -> &Pool {
        &self.connection.pool
    }

    /// `XGROUP CREATE stream group 0 MKSTREAM`, tolerating `BUSYGROUP`. Starting at `0`
    /// matters after a data loss and at first use: jobs enqueued before the group
    /// existed are still delivered (acked entries are deleted, so `0` never replays
    /// finished work).
    async fn ensure_group(&self) -> Result<(), Error> {
        let created: Result<Value, Error> = self
            .pool()
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

    /// Runs a script touching the consumer group, creating the group once on
    /// `NOGROUP` (first use, or Redis restarted empty or was flushed).
    async fn run_grouped(
        &self,
        script: &LuaScript,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, Failure> {
        match script.run(self.pool(), keys.clone(), args.clone()).await {
            Err(e) if is_nogroup(&e) => {
                tracing::info!(stream = %self.keys.stream,
                    "the job queue's consumer group does not exist; creating it");
                self.ensure_group().await?;
                Ok(script.run(self.pool(), keys, args).await?)
            }
            other => Ok(other?),
        }
    }

    /// One `reserve`, run in its own task (see the module docs): passes of reclaim,
    /// promote and a bounded blocking read until something is delivered, `wait` has
    /// passed, or the caller has gone (`caller` closed).
    async fn reserve_for(
        &self,
        wait: Duration,
        caller: &oneshot::Sender<Result<Option<Handoff>, QueueError>>,
    ) -> Result<Option<Delivery>, Failure> {
        let deadline = Instant::now() + wait;
        loop {
            if caller.is_closed() {
                return Ok(None);
            }
            if let Some(delivery) = self.reclaim().await? {
                return Ok(Some(delivery));
            }
            let next_retry = self.promote().await?;
            // After the first commands answered: while Redis is down, reserve fails
            // after one command timeout, not two.
            self.housekeeping_if_due().await;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut block = remaining.min(self.settings.poll_interval);
            if let Some(due) = next_retry {
                block = block.min(due);
            }
            if let Some(delivery) = self.read(block, caller).await? {
                return Ok(Some(delivery));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Deletes idle consumers without pending entries, at most once per
    /// `min(idle_consumer_timeout, 1 min)` for all clones of this queue. Failures are
    /// logged and ignored: housekeeping never fails a `reserve`.
    async fn housekeeping_if_due(&self) {
        let every = self.settings.idle_consumer_timeout.min(HOUSEKEEPING_EVERY);
        {
            let mut next = self
                .next_housekeeping
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if next.is_some_and(|due| now < due) {
                return;
            }
            // Claim this run before it starts, so concurrent reserves skip it.
            *next = Some(now + every);
        }
        let pruned: Result<i64, Error> = self
            .scripts
            .prune
            .run(
                self.pool(),
                vec![self.keys.stream.clone()],
                vec![
                    self.settings.group.as_str().into(),
                    self.settings.consumer.as_str().into(),
                    int(millis_u64(self.settings.idle_consumer_timeout)),
                ],
            )
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(stream = %self.keys.stream, deleted = n,
                "deleted idle consumers without pending entries from the job queue's group"),
            // No group yet (or the stream is gone): no consumers to delete.
            Err(e) if is_nogroup(&e) || e.details().contains("no such key") => {}
            Err(e) => tracing::debug!(stream = %self.keys.stream, error = %e,
                "job queue housekeeping failed; trying again later"),
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
                self.pool(),
                vec![self.keys.stream.clone(), self.keys.retry.clone()],
                vec![int(u64::from(PROMOTE_BATCH))],
            )
            .await?;
        Ok(u64::try_from(wait).ok().map(Duration::from_millis))
    }

    /// Reads one new entry, blocking up to `block` on a dedicated connection
    /// (non-blocking on the shared pool when `block` is zero).
    async fn read(
        &self,
        block: Duration,
        caller: &oneshot::Sender<Result<Option<Handoff>, QueueError>>,
    ) -> Result<Option<Delivery>, Failure> {
        let entry = match self.xreadgroup(block).await {
            // The caller left while we blocked (a worker that stopped): write nothing
            // more for it — re-creating a deleted stream now would resurrect keys a
            // teardown (`delete_prefix`) has just removed.
            Err(e) if caller.is_closed() => {
                tracing::debug!(error = %e, "blocking read failed after its caller left");
                return Ok(None);
            }
            // NOGROUP: the group does not exist (first use, or Redis lost our data).
            // UNBLOCKED: the stream was deleted while we waited on it (Redis ≥ 7.0
            // unblocks readers with this error). Create the group and look again.
            Err(e) if is_nogroup(&e) || e.details().starts_with("UNBLOCKED") => {
                tracing::info!(stream = %self.keys.stream,
                    "the job queue's stream or consumer group does not exist; creating it");
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
            self.pool()
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
            self.pool()
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
                receipt: format!("{id}/{attempt}"),
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

    /// Runs the defer script for `receipt`: `Some(delay)` when it was given back,
    /// `None` when the receipt is stale.
    async fn defer(
        &self,
        receipt: &Receipt<'_>,
        delay: Duration,
    ) -> Result<Option<Duration>, Failure> {
        let reply = self
            .run_grouped(
                &self.scripts.defer,
                vec![self.keys.stream.clone(), self.keys.retry.clone()],
                vec![
                    self.settings.group.as_str().into(),
                    receipt.id.into(),
                    int(u64::from(receipt.attempt)),
                    int(millis_u64(delay)),
                ],
            )
            .await?;
        match reply.as_i64() {
            Some(-2 | -3) => Ok(None),
            Some(ms) if ms >= 0 => Ok(Some(delay)),
            _ => Err(Failure::unexpected(format!(
                "defer script returned {reply:?}"
            ))),
        }
    }

    /// `retry_backoff · 2^(attempt-1)`, saturating.
    fn backoff(&self, attempt: u32) -> Duration {
        order_core::app::exponential_backoff(self.settings.retry_backoff, attempt)
    }
}

/// A delivery on its way from the reserve task to the caller. If it is dropped before
/// the caller took it (the caller dropped its `reserve` future: the send failed, or the
/// value was left in the channel), it gives the delivery back without using an attempt,
/// so others can have the job at once.
struct Handoff {
    queue: Arc<Inner>,
    delivery: Option<Delivery>,
}

impl Handoff {
    fn take(&mut self) -> Option<Delivery> {
        self.delivery.take()
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let Some(delivery) = self.delivery.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run the script on (it is shutting down): the entry stays
            // reserved and is redelivered after the visibility timeout.
            tracing::warn!(receipt = %delivery.receipt,
                "a reserved job was abandoned without a runtime; it comes back after the visibility timeout");
            return;
        };
        let queue = self.queue.clone();
        runtime.spawn(async move {
            let given_back = match parse_receipt(&delivery.receipt) {
                Some(receipt) => queue.defer(&receipt, Duration::ZERO).await,
                None => Ok(None),
            };
            match given_back {
                Ok(_) => tracing::debug!(receipt = %delivery.receipt,
                    "gave back a job reserved after its caller had gone"),
                Err(e) => tracing::warn!(receipt = %delivery.receipt, error = ?e,
                    "could not give back a job reserved after its caller had gone; \
                     it comes back after the visibility timeout"),
            }
        });
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    /// Adds the job at the tail of the stream (one script: count, then `XADD`).
    ///
    /// fred re-sends a command whose reply was lost to a reconnect, so the script may
    /// run twice and add the job twice; the port allows that (processing treats a
    /// duplicate as harmless), and it costs one extra delivery. A call that fails with
    /// `Unavailable` may also have added the job.
    ///
    /// # Errors
    /// [`QueueError::Full`] when the queue already holds [`QueueSettings::max_len`] jobs
    /// (ready, delayed or in flight); nothing is written then.
    /// [`QueueError::Unavailable`] when Redis cannot be reached within the command
    /// timeout.
    async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        let q = &self.inner;
        let reply: Value = q
            .scripts
            .enqueue
            .run(
                q.pool(),
                vec![q.keys.stream.clone(), q.keys.retry.clone()],
                vec![encode_job(job).into(), int(q.settings.max_len)],
            )
            .await
            .map_err(Failure::from)?;
        match reply {
            Value::Array(items) => match items.as_slice() {
                [status, _] if status.as_str().as_deref() == Some("ok") => Ok(()),
                [status, held] if status.as_str().as_deref() == Some("full") => Err(
                    QueueError::Full(held.as_u64().unwrap_or(q.settings.max_len)),
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
    /// Cancel-safe: the work runs in a spawned task. Dropping the returned future stops
    /// that task at its next step (at most one `poll_interval` later), and a delivery it
    /// obtains after the caller has gone is given back at once without using an
    /// attempt. Only if the runtime itself shuts down mid-step can a job stay reserved
    /// until its visibility timeout.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when Redis cannot be reached.
    async fn reserve(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let (tx, rx) = oneshot::channel();
        let queue = self.inner.clone();
        tokio::spawn(async move {
            let result = match queue.reserve_for(wait, &tx).await {
                Ok(delivery) => Ok(delivery.map(|delivery| Handoff {
                    queue: queue.clone(),
                    delivery: Some(delivery),
                })),
                Err(failure) => Err(QueueError::from(failure)),
            };
            // A failed send drops the handoff, which gives the delivery back.
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(Ok(Some(mut handoff))) => Ok(handoff.take()),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QueueError::Unexpected(anyhow::anyhow!(
                "the reserve task ended without an answer (it panicked)"
            ))),
        }
    }

    /// `XACK` + `XDEL` of the receipt's entry, atomically, only while the entry is still
    /// pending with exactly this delivery. A stale receipt (the job was delivered again
    /// since) changes nothing: the live delivery stays in flight and is still
    /// redelivered if its holder dies.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable; [`QueueError::Unexpected`] for a
    /// receipt this queue never issued.
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let receipt = check_receipt(&delivery.receipt)?;
        let q = &self.inner;
        let reply = q
            .run_grouped(
                &q.scripts.ack,
                vec![q.keys.stream.clone()],
                vec![
                    q.settings.group.as_str().into(),
                    receipt.id.into(),
                    int(u64::from(receipt.attempt)),
                ],
            )
            .await?;
        match reply.as_i64() {
            Some(1) => Ok(()),
            Some(-2 | -3) => {
                tracing::debug!(receipt = %delivery.receipt, "ack of a delivery no longer held; ignored");
                Ok(())
            }
            _ => Err(Failure::unexpected(format!("ack script returned {reply:?}")).into()),
        }
    }

    /// Retries after `retry_backoff · 2^(attempt-1)`, or dead-letters once the
    /// receipt's attempt reaches `max_attempts`. A delivery the queue no longer holds
    /// under this receipt (redelivered since, acked, dead-lettered, lost with Redis data)
    /// is left alone and reported as [`NackOutcome::Stale`]: the job is, or was, someone
    /// else's.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable; [`QueueError::Unexpected`] for a
    /// receipt this queue never issued.
    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<NackOutcome, QueueError> {
        let receipt = check_receipt(&delivery.receipt)?;
        let q = &self.inner;
        let delay = q.backoff(receipt.attempt);
        let reply = q
            .run_grouped(
                &q.scripts.nack,
                vec![
                    q.keys.stream.clone(),
                    q.keys.retry.clone(),
                    q.keys.dead.clone(),
                ],
                vec![
                    q.settings.group.as_str().into(),
                    receipt.id.into(),
                    int(u64::from(receipt.attempt)),
                    int(u64::from(q.settings.max_attempts)),
                    int(millis_u64(delay)),
                    error.into(),
                    int(q.settings.max_len),
                ],
            )
            .await?;
        match reply.as_i64() {
            Some(-1) => Ok(NackOutcome::DeadLettered),
            Some(-2 | -3) => {
                tracing::debug!(receipt = %delivery.receipt, "nack of a delivery no longer held; ignored");
                Ok(NackOutcome::Stale)
            }
            Some(ms) if ms >= 0 => Ok(NackOutcome::Retried(delay)),
            _ => Err(Failure::unexpected(format!("nack script returned {reply:?}")).into()),
        }
    }

    /// Gives the delivery back to be delivered again after `delay` with the same
    /// attempt number (the job is written again with `base = attempt - 1`); never
    /// dead-letters. A zero delay makes it deliverable at once. A stale receipt changes
    /// nothing ([`NackOutcome::Stale`]).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable; [`QueueError::Unexpected`] for a
    /// receipt this queue never issued.
    async fn defer(&self, delivery: &Delivery, delay: Duration) -> Result<NackOutcome, QueueError> {
        let receipt = check_receipt(&delivery.receipt)?;
        match self.inner.defer(&receipt, delay).await? {
            Some(delay) => Ok(NackOutcome::Retried(delay)),
            None => {
                tracing::debug!(receipt = %delivery.receipt, "defer of a delivery no longer held; ignored");
                Ok(NackOutcome::Stale)
            }
        }
    }

    /// The configured [`QueueSettings::visibility_timeout`],
    /// [`QueueSettings::max_attempts`] and [`QueueSettings::retry_backoff`].
    fn timings(&self) -> QueueTimings {
        timings(&self.inner.settings)
    }

    /// `waiting` = stream entries not yet delivered + delayed retries; `in_flight` = the
    /// group's pending entries; `dead` = length of the dead-letter stream. One atomic
    /// snapshot.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable.
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let q = &self.inner;
        let reply = q
            .run_grouped(
                &q.scripts.stats,
                vec![
                    q.keys.stream.clone(),
                    q.keys.retry.clone(),
                    q.keys.dead.clone(),
                ],
                vec![q.settings.group.as_str().into()],
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

fn timings(settings: &QueueSettings) -> QueueTimings {
    QueueTimings {
        visibility_timeout: settings.visibility_timeout,
        max_attempts: settings.max_attempts,
        retry_backoff: settings.retry_backoff,
    }
}

/// The port's rule ([`QueueTimings::validate`]) plus this adapter's own.
fn validate(settings: &QueueSettings) -> Result<(), ConnectError> {
    timings(settings)
        .validate()
        .map_err(|e| ConnectError::InvalidConfig(e.to_string()))?;
    let problem = if settings.max_len == 0 {
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
    } else if settings.idle_consumer_timeout < settings.poll_interval.saturating_mul(2) {
        // A live consumer touches the group about every poll_interval; a shorter bound
        // would keep deleting (harmlessly, but pointlessly) consumers that are alive.
        "idle_consumer_timeout must be at least twice poll_interval"
    } else {
        return Ok(());
    };
    Err(ConnectError::InvalidConfig(problem.into()))
}

/// An integer script argument.
fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Splits a receipt, `<ms>-<seq>/<attempt>` (a stream entry id and the attempt of the
/// delivery), or `None` when this queue could not have issued it.
fn parse_receipt(receipt: &str) -> Option<Receipt<'_>> {
    let (id, attempt) = receipt.split_once('/')?;
    let (ms, seq) = id.split_once('-')?;
    if !(is_digits(ms) && is_digits(seq) && is_digits(attempt)) {
        return None;
    }
    let attempt = attempt.parse::<u32>().ok().filter(|a| *a >= 1)?;
    Some(Receipt { id, attempt })
}

/// [`parse_receipt`], as the port's error for a receipt this queue never issued.
fn check_receipt(receipt: &str) -> Result<Receipt<'_>, QueueError> {
    parse_receipt(receipt).ok_or_else(|| {
        QueueError::Unexpected(anyhow::anyhow!("not a receipt of this queue: {receipt:?}"))
    })
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
    fn receipts_name_an_entry_and_an_attempt() {
        let receipt = check_receipt("1700000000000-0/3").unwrap();
        assert_eq!((receipt.id, receipt.attempt), ("1700000000000-0", 3));
        // A bare entry id names a job, not a delivery: refused.
        assert!(check_receipt("1700000000000-0").is_err());
        assert!(check_receipt("1700000000000-0/0").is_err());
        assert!(check_receipt("1700000000000-0/x").is_err());
        assert!(check_receipt("1-2-3/1").is_err());
        assert!(check_receipt("abc/1").is_err());
        assert!(check_receipt("-1/1").is_err());
        assert!(check_receipt("1-1/99999999999").is_err());
    }

    #[test]
    fn settings_are_validated_with_the_port_rule_and_ours() {
        assert!(validate(&QueueSettings::default()).is_ok());
        let zero_backoff = QueueSettings {
            retry_backoff: Duration::ZERO,
            ..QueueSettings::default()
        };
        assert!(matches!(
            validate(&zero_backoff),
            Err(ConnectError::InvalidConfig(m)) if m.contains("retry_backoff")
        ));
        let zero_visibility = QueueSettings {
            visibility_timeout: Duration::ZERO,
            ..QueueSettings::default()
        };
        assert!(validate(&zero_visibility).is_err());
        let short_idle = QueueSettings {
            idle_consumer_timeout: Duration::from_millis(900),
            ..QueueSettings::default()
        };
        assert!(validate(&short_idle).is_err());
    }

    #[test]
    fn the_default_retry_budget_outlives_the_default_lease() {
        let budget = timings(&QueueSettings::default()).retry_budget();
        assert_eq!(budget, Duration::from_secs(127));
        assert!(budget > Duration::from_secs(30));
    }
}
