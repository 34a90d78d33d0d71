//! Settling a delivery: the scripts behind `ack`, `nack` and `defer`, which act only
//! while the entry is still pending with exactly the receipt's delivery, and `bury`,
//! which dead-letters an entry whose job cannot be read (see the module docs of
//! [`queue`](super)).

use std::time::Duration;

use order_core::ports::NackOutcome;

use super::codec::Receipt;
use super::{Inner, int};
use crate::connection::{Failure, millis_u64};

impl Inner {
    /// Runs the ack script (`XACK` + `XDEL`) for `receipt`: `true` when the delivery
    /// was acked, `false` when the receipt is stale.
    pub(super) async fn ack(&self, receipt: &Receipt<'_>) -> Result<bool, Failure> {
        let reply = self
            .run_grouped(
                &self.scripts.ack,
                vec![self.keys.stream.clone()],
                vec![
                    self.settings.group.as_str().into(),
                    receipt.id.into(),
                    int(u64::from(receipt.attempt)),
                ],
            )
            .await?;
        match reply.as_i64() {
            Some(1) => Ok(true),
            Some(-2 | -3) => Ok(false),
            _ => Err(Failure::unexpected(format!(
                "ack script returned {reply:?}"
            ))),
        }
    }

    /// Runs the nack script for `receipt`: a retry after [`backoff`](Self::backoff),
    /// the dead letter once the attempt reaches `last_attempt` (`max_attempts` for a
    /// nack; the receipt's own attempt to dead-letter at once), or
    /// [`NackOutcome::Stale`] when the receipt is stale.
    pub(super) async fn nack(
        &self,
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
            Some(ms) if ms >= 0 => Ok(NackOutcome::Retried(delay)),
            _ => Err(Failure::unexpected(format!(
                "nack script returned {reply:?}"
            ))),
        }
    }

    /// Runs the defer script for `receipt`: `Some(delay)` when it was given back,
    /// `None` when the receipt is stale.
    pub(super) async fn defer(
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
