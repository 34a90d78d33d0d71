//! The reconciler (DESIGN §6): the repository, not the queue, says what is unfinished,
//! so stranded orders are claimed from it and handed out again. `run_reconciler` is the
//! loop around one pass.

use std::future::Future;

use tracing::{debug, info, warn};

use super::errors::{ErrorChain, ReconcileError};
use super::service::OrderService;
use super::stats::ServiceStats;
use crate::domain::Timestamp;
use crate::ports::{Job, StrandedQuery};
use crate::runtime::{Either, race};

/// What one [`OrderService::reconcile`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Stranded orders claimed from the repository.
    pub claimed: u64,
    /// Of those, orders whose job was enqueued again.
    pub enqueued: u64,
    /// Events deleted from the event log for being older than `event_retention`.
    pub pruned: u64,
}

/// Most events one prune statement deletes: a pass prunes in slices this size, so no
/// single statement holds locks for long.
const PRUNE_BATCH: u32 = 10_000;

impl OrderService {
    /// One reconciler pass (DESIGN §6): claims stranded orders from the repository — the
    /// source of truth — in batches of `reconciler.batch` (Pending and not handed out
    /// for `stale_after`, or Processing with an expired lease) and enqueues a job for
    /// each. Claiming stamps the orders, so several reconcilers running at once hand
    /// each order out once per `stale_after`, and a duplicate job is harmless anyway.
    ///
    /// This is what recovers an order whose job was never enqueued (a failed enqueue
    /// after commit, a crash between commit and enqueue), was lost with the queue's data
    /// (a Redis restart without persistence, `FLUSHALL`) or was dead-lettered while the
    /// order was still unfinished.
    ///
    /// # Errors
    /// [`ReconcileError`] when the store or the queue failed; orders claimed but not
    /// enqueued are claimed again after `stale_after`.
    pub async fn reconcile(&self) -> Result<ReconcileReport, ReconcileError> {
        let settings = self.config.reconciler;
        let query = StrandedQuery {
            stale_after: settings.stale_after,
            limit: settings.batch,
        };
        let mut report = ReconcileReport::default();
        loop {
            let now = self.ports.clock.now();
            let claimed = self.ports.repository.claim_stranded(query, now).await?;
            let full = claimed.len() >= settings.batch as usize;
            report.claimed += claimed.len() as u64;
            for id in claimed {
                self.ports.queue.enqueue(Job::ProcessOrder(id)).await?;
                ServiceStats::bump(&self.stats.reconciler_requeued);
                report.enqueued += 1;
                debug!(order = %id, "reconciler re-enqueued a stranded order");
            }
            if !full {
                break;
            }
        }
        let now = self.ports.clock.now();
        let retention_ms = u64::try_from(settings.event_retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = Timestamp::from_millis(now.as_millis().saturating_sub(retention_ms));
        loop {
            let pruned = self
                .ports
                .repository
                .prune_events(cutoff, PRUNE_BATCH)
                .await?;
            report.pruned += pruned;
            if pruned < u64::from(PRUNE_BATCH) {
                return Ok(report);
            }
        }
    }

    /// Runs the reconciler every `reconciler.interval` until `shutdown` completes (a
    /// pass in progress is dropped: it holds nothing that must be finished — claimed
    /// but not enqueued orders are claimed again after `stale_after`). Errors are logged
    /// and the next pass tries again. Returns how many orders it re-enqueued.
    pub async fn run_reconciler(&self, shutdown: impl Future<Output = ()>) -> u64 {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut requeued = 0u64;
        loop {
            let pass = async {
                match self.reconcile().await {
                    Ok(report) => {
                        if report.enqueued > 0 {
                            info!(
                                requeued = report.enqueued,
                                "reconciler re-enqueued stranded orders"
                            );
                        }
                        report.enqueued
                    }
                    Err(e) => {
                        warn!(error = %ErrorChain(&e), "reconciler pass failed; retrying next interval");
                        0
                    }
                }
            };
            match race(shutdown.as_mut(), pass).await {
                Either::Left(()) => return requeued,
                Either::Right(n) => requeued += n,
            }
            let pause = self.ports.clock.sleep(self.config.reconciler.interval);
            if let Either::Left(()) = race(shutdown.as_mut(), pause).await {
                return requeued;
            }
        }
    }
}
