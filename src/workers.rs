//! [`Workers`]: worker tasks and a reconciler on the current Tokio runtime, stopped
//! within a deadline.

use std::sync::Arc;

use order_core::OrderService;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

/// Worker tasks running [`OrderService::run_worker`], plus one reconciler task
/// ([`OrderService::run_reconciler`]), on the current Tokio runtime until
/// [`Workers::stop`]: each worker finishes and acknowledges its job in flight before it
/// exits, within the stop's deadline.
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<u64>>,
    reconciler: Option<JoinHandle<u64>>,
}

/// What [`Workers::stop`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Deliveries the workers that stopped in time handled in all.
    pub handled: u64,
    /// Orders the reconciler re-enqueued (0 without one).
    pub requeued: u64,
    /// Tasks still busy at the deadline, aborted: a worker's job was neither acked nor
    /// nacked and is delivered again after the visibility timeout.
    pub aborted: usize,
}

impl Workers {
    /// Spawns `count` workers (at least one) over `service`, and no reconciler.
    pub fn spawn(service: &Arc<OrderService>, count: usize) -> Self {
        Self::start(service, count, false)
    }

    /// Spawns `count` workers (at least one) and one reconciler over `service`: the
    /// worker role of DESIGN §6. Run one reconciler per worker process; several at once
    /// are safe.
    pub fn spawn_with_reconciler(service: &Arc<OrderService>, count: usize) -> Self {
        Self::start(service, count, true)
    }

    fn start(service: &Arc<OrderService>, count: usize, reconcile: bool) -> Self {
        let (stop, stopped) = watch::channel(false);
        let stopped_future = |mut stopped: watch::Receiver<bool>| async move {
            // An error means the sender is gone: stop as well.
            let _ = stopped.wait_for(|s| *s).await;
        };
        let handles = (0..count.max(1))
            .map(|_| {
                let service = service.clone();
                let shutdown = stopped_future(stopped.clone());
                tokio::spawn(async move { service.run_worker(shutdown).await })
            })
            .collect();
        let reconciler = reconcile.then(|| {
            let service = service.clone();
            let shutdown = stopped_future(stopped.clone());
            tokio::spawn(async move { service.run_reconciler(shutdown).await })
        });
        Self {
            stop,
            handles,
            reconciler,
        }
    }

    /// Asks every worker to stop after its current job and waits for them, at most
    /// `deadline` (DESIGN §6: finish in-flight work within a deadline). Workers still
    /// busy then are aborted; their jobs come back after the visibility timeout, and
    /// the lease they hold expires on its own.
    ///
    /// # Errors
    /// The [`JoinError`] of a task that panicked.
    pub async fn stop(self, deadline: std::time::Duration) -> Result<StopReport, JoinError> {
        // Receivers only disappear when their task has already exited.
        let _ = self.stop.send(true);
        let until = tokio::time::Instant::now() + deadline;
        let mut report = StopReport {
            handled: 0,
            requeued: 0,
            aborted: 0,
        };
        for handle in self.handles {
            match join_by(until, handle).await? {
                Some(n) => report.handled += n,
                None => report.aborted += 1,
            }
        }
        if let Some(handle) = self.reconciler {
            match join_by(until, handle).await? {
                Some(n) => report.requeued = n,
                None => report.aborted += 1,
            }
        }
        Ok(report)
    }
}

/// Joins `handle` by `until`, or aborts it then (`None`).
async fn join_by(
    until: tokio::time::Instant,
    mut handle: JoinHandle<u64>,
) -> Result<Option<u64>, JoinError> {
    match tokio::time::timeout_at(until, &mut handle).await {
        Ok(joined) => joined.map(Some),
        Err(_elapsed) => {
            handle.abort();
            Ok(None)
        }
    }
}
