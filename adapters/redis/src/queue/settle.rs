//! Settling a delivery: the scripts behind `ack` (batched: group commit), `nack` and
//! `defer`, which act only while the entry is still pending with exactly the receipt's
//! delivery, and `bury`, which dead-letters an entry whose job cannot be read (see the
//! module docs of [`queue`](super)).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use fred::prelude::*;
use order_core::ports::NackOutcome;
use tokio::sync::oneshot;

use super::codec::Receipt;
use super::{Inner, int};
use crate::connection::{Failure, millis_u64};

/// Most receipts one ack script call settles; more waiting acks go in the next call.
const ACK_BATCH_MAX: usize = 256;

/// One `ack` waiting for its batch: the receipt and where its own answer goes.
struct PendingAck {
    id: String,
    attempt: u32,
    answer: oneshot::Sender<Result<bool, Failure>>,
}

/// The acks waiting to be flushed (group commit, see the module docs of
/// [`queue`](super)).
#[derive(Default)]
pub(super) struct AckQueue {
    waiting: Vec<PendingAck>,
    /// A flush task is running: it takes everything queued before it finishes.
    flushing: bool,
}

impl Inner {
    /// Acks `receipt` in the next batch (group commit): `true` when the delivery was
    /// acked, `false` when the receipt is stale. A lone ack is sent at once; acks that
    /// arrive while a batch is in flight go together in the next one. Returns once
    /// Redis has applied this receipt's ack, or the batch failed.
    pub(super) async fn ack(self: &Arc<Self>, receipt: &Receipt<'_>) -> Result<bool, Failure> {
        let (answer, answered) = oneshot::channel();
        let start_flush = {
            let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
            acks.waiting.push(PendingAck {
                id: receipt.id.to_owned(),
                attempt: receipt.attempt,
                answer,
            });
            !std::mem::replace(&mut acks.flushing, true)
        };
        if start_flush {
            // A task of its own, so a caller that drops its `ack` future never strands
            // the acks queued behind it.
            tokio::spawn(self.clone().flush_acks());
        }
        answered.await.unwrap_or_else(|_| {
            Err(Failure::unexpected(
                "the ack flush task ended without an answer (it panicked)",
            ))
        })
    }

    /// Runs batches of the ack script until no ack is waiting.
    async fn flush_acks(self: Arc<Self>) {
        loop {
            let batch: Vec<PendingAck> = {
                let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
                if acks.waiting.is_empty() {
                    acks.flushing = false;
                    return;
                }
                let n = acks.waiting.len().min(ACK_BATCH_MAX);
                acks.waiting.drain(..n).collect()
            };
            match self.ack_batch(&batch).await {
                Ok(acked) => {
                    for (pending, acked) in batch.into_iter().zip(acked) {
                        let _ = pending.answer.send(Ok(acked));
                    }
                }
                Err(failure) => {
                    for pending in batch {
                        let _ = pending.answer.send(Err(failure.share()));
                    }
                }
            }
        }
    }

    /// One ack script call for `batch`: per receipt, `true` when acked, `false` when
    /// stale.
    async fn ack_batch(&self, batch: &[PendingAck]) -> Result<Vec<bool>, Failure> {
        let mut args = Vec::with_capacity(1 + 2 * batch.len());
        args.push(self.settings.group.as_str().into());
        for pending in batch {
            args.push(pending.id.as_str().into());
            args.push(int(u64::from(pending.attempt)));
        }
        self.counters.ack_batches.fetch_add(1, Ordering::Relaxed);
        let reply = self
            .run_grouped(&self.scripts.ack, vec![self.keys.stream.clone()], args)
            .await?;
        let codes: Option<Vec<bool>> = match &reply {
            Value::Array(codes) if codes.len() == batch.len() => codes
                .iter()
                .map(|code| match code.as_i64() {
                    Some(1) => Some(true),
                    Some(-2 | -3) => Some(false),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        codes.ok_or_else(|| {
            Failure::unexpected(format!(
                "ack script returned {reply:?} for {} receipts",
                batch.len()
            ))
        })
    }

    /// Runs the nack script for `receipt`: a retry after [`backoff`](Self::backoff),
    /// the dead letter once the attempt reaches `last_attempt` (`max_attempts` for a
    /// nack; the receipt's own attempt to dead-letter at once), or
    /// [`NackOutcome::Stale`] when the receipt is stale.
    pub(super) async fn nack(
        self: &Arc<Self>,
        receipt: &Receipt<'_>,
        error: &str,
        last_attempt: u32,
    ) -> Result<NackOutcome, Failure> {
        let delay = self.backoff(receipt.attempt);
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
                    receipt.id.into(),
                    int(u64::from(receipt.attempt)),
                    int(u64::from(last_attempt)),
                    int(millis_u64(delay)),
                    error.into(),
                    int(self.settings.max_len),
                ],
            )
            .await?;
        match reply.as_i64() {
            Some(-1) => Ok(NackOutcome::DeadLettered),
            Some(-2 | -3) => Ok(NackOutcome::Stale),
            Some(ms) if ms >= 0 => {
                self.retry_scheduled(delay);
                Ok(NackOutcome::Retried(delay))
            }
            _ => Err(Failure::unexpected(format!(
                "nack script returned {reply:?}"
            ))),
        }
    }

    /// Runs the defer script for `receipt`: `Some(delay)` when it was given back,
    /// `None` when the receipt is stale.
    pub(super) async fn defer(
        self: &Arc<Self>,
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
            Some(ms) if ms >= 0 => {
                // A zero delay wrote the job straight into the stream: nothing to promote.
                if !delay.is_zero() {
                    self.retry_scheduled(delay);
                }
                Ok(Some(delay))
            }
            _ => Err(Failure::unexpected(format!(
                "defer script returned {reply:?}"
            ))),
        }
    }

    /// Moves entry `id`, whose job text cannot be decoded, to the dead letter.
    pub(super) async fn bury(&self, id: &str, job: &str, attempt: u32) -> Result<(), Failure> {
        self.run_grouped(
            &self.scripts.bury,
            vec![self.keys.stream.clone(), self.keys.dead.clone()],
            vec![
                self.settings.group.as_str().into(),
                id.into(),
                job.into(),
                int(u64::from(attempt)),
                "undecodable job".into(),
                int(self.settings.max_len),
            ],
        )
        .await?;
        Ok(())
    }

    /// `retry_backoff.nominal(attempt)`: `min(base · 2^(attempt-1), max)`, saturating.
    fn backoff(&self, attempt: u32) -> Duration {
        self.settings.retry_backoff.nominal(attempt)
    }
}
