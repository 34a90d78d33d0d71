//! [`JobQueue`] on a Redis Stream read by one consumer group.
//!
//! Layout (see [`RedisConfig::queue_keys`](crate::RedisConfig::queue_keys)):
//! - the stream holds ready jobs and reserved ones (the group's pending entries list,
//!   PEL, is the set of reservations);
//! - a sorted set holds delayed retries and deferrals, scored by due time on the
//!   server's clock;
//! - a second stream is the dead letter.
//!
//! Reading: concurrent `reserve` calls of one queue (and its clones) share their reads.
//! Each waits in a queue of reservers served, oldest first, by one fetcher task, which
//! runs *rounds* while anyone waits. A round for the `n` reservers waiting when it
//! starts (at most 64, never more: nothing is read ahead of demand) takes over up to
//! `n` reservations whose visibility timeout expired (`XPENDING IDLE` + `XCLAIM` in one
//! script, which bumps each entry's delivery count: the attempt counter survives
//! redelivery because Redis keeps it) when reclaim is due, moves due retries back into
//! the stream when promote is due, then reads the rest with one `XREADGROUP … COUNT`
//! (blocking on a dedicated connection until a new entry arrives, the earliest
//! reserver's `wait` runs out, reclaim or promote falls due, or `poll_interval` has
//! passed). The deliveries go to the waiting reservers, one each; a reserver whose
//! `wait` ran out is answered with nothing at the end of a round that started after it
//! arrived (so even a zero `wait` gets one look). A `reserve` whose `wait` ends before
//! the fetcher's blocking read in flight does gets one non-blocking round of its own
//! instead of waiting for it.
//!
//! Timing bounds: reclaim runs at the first round, again at once while the script
//! reports more expired reservations than it claimed or scanned (recovery after a crash
//! drains in back-to-back rounds of up to 64), otherwise at most once per
//! `poll_interval` while someone waits — an expired reservation is redelivered within
//! about `poll_interval` of its expiry to a waiting reserver, as before. Promote runs
//! when the next retry is due: as the promote script reports it (whoever wrote the
//! retry), as a `nack` or `defer` of this process schedules it (a timer promotes it on
//! time and so wakes a blocking read in flight), and at least once per `poll_interval`
//! while someone waits. A retry is therefore delivered at its due time (plus a round
//! trip) to a reserver waiting in any process that knows it is due, and at most
//! `poll_interval` late anywhere. Idle, a queue sends one blocking read per
//! `poll_interval` and one reclaim and one promote per `poll_interval`, however many
//! reservers wait.
//!
//! Acking: concurrent `ack` calls are flushed together (group commit): a lone ack runs
//! the ack script at once; acks arriving while one is in flight queue and go as the
//! next batch (one script call for up to 256 receipts). Each receipt is still judged on
//! its own (a stale one in a batch changes nothing, the others are acked), and each
//! `ack` returns only once Redis applied the batch holding it.
//!
//! Receipts name one delivery, `<entry id>/<attempt>`: `XCLAIM` keeps the entry id, so
//! the id alone would let a worker that stalled past its visibility timeout ack the
//! redelivery someone else now holds. `ack` (`XACK` + `XDEL`), `nack` (a new entry after
//! `retry_backoff.nominal(attempt)`, or the dead letter) and `defer` (a new entry after
//! the delay, written so that its next delivery carries the same attempt) act only
//! while the entry is still pending with exactly that delivery; otherwise they change
//! nothing. Every multi-step change is one Lua script, so a crash never leaves a job in
//! two places or none.
//!
//! Cancel safety: rounds run in spawned tasks, never in the caller's future, and hand
//! each delivery over a oneshot channel wrapped in a `Handoff`. A delivery read for a
//! reserver that has gone (it dropped its `reserve` future, or its `wait` ran out) goes
//! to the next waiting reserver, or, with none left, is given straight back (the
//! `defer` script with no delay: a new entry, same attempt, deliverable to others at
//! once); the same happens to a delivery left unread in a dropped caller's channel.
//! Nothing is ever kept in-process for no one. A round only counts waiters still
//! there, so a reserver that left costs at most one give-back. Dropping a fred command
//! future would not cancel the command on the server: a dropped `XREADGROUP … BLOCK`
//! still reads the next entry, and nobody would hold it. The ack batches run in a
//! spawned task too, so a dropped `ack` never strands the acks queued behind it.
//!
//! Bound: `enqueue` counts every job the queue holds (ready, in flight, delayed) and
//! refuses with `QueueError::Full` at [`QueueConfig::max_len`] instead of trimming the
//! stream, which would silently drop jobs. Only the dead letter is trimmed (`MAXLEN ~`,
//! oldest first). The three keys share a hash tag, so the scripts run on Redis Cluster.
//!
//! Consumers: each process reads under its own consumer name; a consumer that dies keeps
//! its name in the group until housekeeping deletes it, and its reservations are taken
//! over by the others after the visibility timeout. Housekeeping (at most once per
//! `min(`[`QueueConfig::idle_consumer_timeout`]`, 1 min)` per queue, inside a read
//! round) deletes consumers without pending entries idle longer than
//! `idle_consumer_timeout`.
//!
//! Nothing is sent to Redis when the queue is built: the consumer group (and the
//! stream, `MKSTREAM`) is created on the first `NOGROUP` reply of any command that
//! needs it, and the scripts are loaded on their first `NOSCRIPT`. The same replies
//! after Redis lost its data (restart without persistence, `FLUSHALL`) re-create them
//! without rebuilding the adapter. Jobs lost with the data are re-enqueued by the
//! reconciler (`OrderService::reconcile`) from the database, the source of truth.
//!
//! Code layout: this file holds the adapter and its [`JobQueue`] impl; `reserve` the
//! waiting reservers, the read rounds, the schedule of reclaim and promote, and the
//! cancel-safe hand-off of a delivery to its caller; `settle` the ack batches and the
//! scripts that end or hand back a delivery (ack, nack, defer, bury); `housekeeping` the
//! pruning of idle consumers; `codec` the wire forms of jobs and receipts; `validate`
//! the checks of the settings.

mod codec;
mod housekeeping;
mod reserve;
mod settle;
mod validate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::ExclusivePool;
use fred::prelude::*;
use order_core::ports::{
    Delivery, Job, JobQueue, NackOutcome, QueueError, QueueStats, QueueTimings,
};
use tokio::time::Instant;

use self::codec::{check_receipt, encode_job};
use self::validate::{timings, validate};
use crate::config::{QueueConfig, QueueKeys};
use crate::connection::{self, ConnectError, Failure, LuaScript, RedisConnection, is_nogroup};
use crate::scripts;

/// Expired entries the reclaim script may look at per call beyond those it claims
/// (dead-lettering exhausted ones on the way) before it gives the turn to new jobs.
const RECLAIM_SCAN_LIMIT: u32 = 16;
/// Due retries moved back into the stream per promote call.
const PROMOTE_BATCH: u32 = 100;

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
    settings: QueueConfig,
    blocking: ExclusivePool,
    scripts: Scripts,
    /// When housekeeping is due next (`None`: at the first `reserve`).
    next_housekeeping: Mutex<Option<Instant>>,
    /// The waiting reservers and the schedule of reclaim and promote.
    read: Mutex<reserve::ReadState>,
    /// The acks waiting for the next batch.
    acks: Mutex<settle::AckQueue>,
    counters: Counters,
}

/// Script and read calls made so far (see [`RedisQueue::round_trips`]).
#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    reclaims: AtomicU64,
    promotes: AtomicU64,
    ack_batches: AtomicU64,
}

/// How many commands of each kind a [`RedisQueue`] has sent on its read and ack
/// paths since it was built: for tests and benchmarks that check the batching, not
/// part of the supported API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueRoundTrips {
    /// `XREADGROUP` calls (blocking or not).
    pub reads: u64,
    /// Reclaim script calls.
    pub reclaims: u64,
    /// Promote script calls.
    pub promotes: u64,
    /// Ack script calls (each settles a batch of receipts).
    pub ack_batches: u64,
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

impl RedisQueue {
    /// Builds the queue on `connection` with the settings in its
    /// [`RedisConfig::queue`](crate::RedisConfig::queue), and starts connecting its
    /// [`QueueConfig::blocking_connections`] dedicated connections for blocking reads
    /// in the background. Needs no server: the consumer group and the scripts are
    /// created on first use, so a process starts while Redis is down and its calls fail
    /// with `QueueError::Unavailable` until Redis is back. Must be called inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// [`ConnectError::InvalidConfig`] for unusable settings: timings refused by
    /// [`QueueTimings::validate`] (zero visibility timeout or attempts, an unusable or
    /// jittered backoff), a zero
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
                read: Mutex::new(reserve::ReadState::new()),
                acks: Mutex::new(settle::AckQueue::default()),
                counters: Counters::default(),
            }),
        })
    }

    /// The keys this queue lives in.
    pub fn keys(&self) -> &QueueKeys {
        &self.inner.keys
    }

    /// The commands sent on the read and ack paths so far (for tests and benchmarks).
    #[doc(hidden)]
    pub fn round_trips(&self) -> QueueRoundTrips {
        let c = &self.inner.counters;
        QueueRoundTrips {
            reads: c.reads.load(Ordering::Relaxed),
            reclaims: c.reclaims.load(Ordering::Relaxed),
            promotes: c.promotes.load(Ordering::Relaxed),
            ack_batches: c.ack_batches.load(Ordering::Relaxed),
        }
    }

    /// Waits until every connection this queue reads through is up — each of the shared
    /// pool's and each dedicated blocking one — at most `timeout`. Optional, like
    /// [`RedisConnection::wait_connected`]: the queue works without it (a `reserve`
    /// made before then waits for the handshake, about 150 ms measured on loopback for
    /// the blocking connections); it is for a worker that should report ready only
    /// once its first `reserve` waits for nothing but jobs.
    ///
    /// # Errors
    /// [`ConnectError::Unavailable`] when not every connection was up within `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ConnectError> {
        let q = &self.inner;
        let all = async {
            q.pool().wait_for_connect().await?;
            q.blocking.wait_for_connect().await
        };
        match tokio::time::timeout(timeout, all).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ConnectError::Unavailable(e.into())),
            Err(_) => Err(ConnectError::Unavailable(anyhow::anyhow!(
                "the queue's connections were not all up within {timeout:?}"
            ))),
        }
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
    /// [`QueueError::Full`] when the queue already holds [`QueueConfig::max_len`] jobs
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
    /// retries, then new jobs, read in rounds shared by every concurrent `reserve` of
    /// this queue (see the module docs); waits up to `wait`, looking again at least
    /// every `poll_interval` and when the next retry falls due.
    ///
    /// Cancel-safe: the reads run in a spawned task. Dropping the returned future
    /// withdraws the caller from the next round, and a delivery read for it after it
    /// has gone goes to another waiting caller or is given back at once without using
    /// an attempt. Only if the runtime itself shuts down mid-round can a job stay
    /// reserved until its visibility timeout.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when Redis cannot be reached.
    async fn reserve(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        reserve::reserve(self.inner.clone(), wait).await
    }

    /// `XACK` + `XDEL` of the receipt's entry, atomically, only while the entry is still
    /// pending with exactly this delivery, in one script call with the acks of
    /// concurrent callers (group commit; returns once Redis applied it). A stale
    /// receipt (the job was delivered again since) changes nothing, whatever else its
    /// batch holds: the live delivery stays in flight and is still redelivered if its
    /// holder dies.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable; [`QueueError::Unexpected`] for a
    /// receipt this queue never issued.
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let receipt = check_receipt(&delivery.receipt)?;
        if !self.inner.ack(&receipt).await? {
            tracing::debug!(receipt = %delivery.receipt, "ack of a delivery no longer held; ignored");
        }
        Ok(())
    }

    /// Retries after `retry_backoff.nominal(attempt)`, or dead-letters once the
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
        let last_attempt = self.inner.settings.max_attempts;
        let outcome = self.inner.nack(&receipt, error, last_attempt).await?;
        if outcome == NackOutcome::Stale {
            tracing::debug!(receipt = %delivery.receipt, "nack of a delivery no longer held; ignored");
        }
        Ok(outcome)
    }

    /// The nack script with the receipt's own attempt as the last one: the entry goes
    /// to the dead letter at once, with `reason`, only while the receipt names its live
    /// delivery ([`NackOutcome::Stale`] otherwise, nothing changed).
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when unreachable; [`QueueError::Unexpected`] for a
    /// receipt this queue never issued.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<NackOutcome, QueueError> {
        let receipt = check_receipt(&delivery.receipt)?;
        let outcome = self.inner.nack(&receipt, reason, receipt.attempt).await?;
        if outcome == NackOutcome::Stale {
            tracing::debug!(receipt = %delivery.receipt, "dead-lettering a delivery no longer held; ignored");
        }
        Ok(outcome)
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

    /// The configured [`QueueConfig::visibility_timeout`],
    /// [`QueueConfig::max_attempts`] and [`QueueConfig::retry_backoff`].
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

/// An integer script argument.
fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}
