//! The read path of `reserve`: reclaiming expired reservations, promoting due retries,
//! the blocking read, and the cancel-safe hand-off of a delivery to its caller (see the
//! module docs of [`queue`](super)).

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::streams::XReadResponse;
use order_core::ports::{Delivery, QueueError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::codec::{decode_job, parse_receipt};
use super::{Entry, Inner, PROMOTE_BATCH, RECLAIM_SCAN_LIMIT, int};
use crate::connection::{Failure, is_nogroup, millis_u64};

/// One cancel-safe `reserve` (see the module docs): [`Inner::reserve_for`] runs in a
/// spawned task and hands its delivery over in a [`Handoff`], which gives it back if the
/// caller has gone.
pub(super) async fn reserve(
    queue: Arc<Inner>,
    wait: Duration,
) -> Result<Option<Delivery>, QueueError> {
    let (tx, rx) = oneshot::channel();
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

impl Inner {
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
                self.bury(&id, job, attempt).await?;
                Ok(None)
            }
        }
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
