//! Counters the service keeps about what it did, for metrics exporters and tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters, updated lock-free by the service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    pub(crate) created: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) insufficient_stock: AtomicU64,
    pub(crate) lock_conflicts: AtomicU64,
    pub(crate) lock_retries: AtomicU64,
    pub(crate) lock_fail_open: AtomicU64,
    pub(crate) enqueue_failures: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) payment_retries: AtomicU64,
    pub(crate) payments_unresolved: AtomicU64,
    pub(crate) paid: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) lease_takeovers: AtomicU64,
    pub(crate) fenced_writes: AtomicU64,
    pub(crate) leases_released: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) reconciler_requeued: AtomicU64,
}

/// A copy of [`ServiceStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Orders placed.
    pub created: u64,
    /// Create requests answered with an existing order.
    pub replayed: u64,
    /// Create requests refused for lack of stock.
    pub insufficient_stock: u64,
    /// Create requests refused because a lock stayed busy after the last attempt.
    pub lock_conflicts: u64,
    /// Lock attempts that found the lock busy and backed off.
    pub lock_retries: u64,
    /// Times the lock service was down and the service fell back to the database guard.
    pub lock_fail_open: u64,
    /// Orders committed whose job could not be enqueued (the reconciler re-enqueues them
    /// once they are older than its `stale_after`).
    pub enqueue_failures: u64,
    /// Events that could not be published.
    pub publish_failures: u64,
    /// Payment calls retried after a transient error or timeout.
    pub payment_retries: u64,
    /// Orders left Processing because neither the charges nor the void got an answer.
    pub payments_unresolved: u64,
    /// Orders this service moved to Paid.
    pub paid: u64,
    /// Orders this service moved to Failed.
    pub failed: u64,
    /// Orders this service moved to Cancelled.
    pub cancelled: u64,
    /// Expired processing leases taken over.
    pub lease_takeovers: u64,
    /// Completions refused because the lease had been taken over (late writers fenced).
    pub fenced_writes: u64,
    /// Leases a worker gave back after giving up on an order it had started.
    pub leases_released: u64,
    /// Deliveries deferred (without using an attempt) because the order was leased.
    pub deferred: u64,
    /// Stranded orders the reconciler handed to the queue again.
    pub reconciler_requeued: u64,
}

impl ServiceStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            created: r(&self.created),
            replayed: r(&self.replayed),
            insufficient_stock: r(&self.insufficient_stock),
            lock_conflicts: r(&self.lock_conflicts),
            lock_retries: r(&self.lock_retries),
            lock_fail_open: r(&self.lock_fail_open),
            enqueue_failures: r(&self.enqueue_failures),
            publish_failures: r(&self.publish_failures),
            payment_retries: r(&self.payment_retries),
            payments_unresolved: r(&self.payments_unresolved),
            paid: r(&self.paid),
            failed: r(&self.failed),
            cancelled: r(&self.cancelled),
            lease_takeovers: r(&self.lease_takeovers),
            fenced_writes: r(&self.fenced_writes),
            leases_released: r(&self.leases_released),
            deferred: r(&self.deferred),
            reconciler_requeued: r(&self.reconciler_requeued),
        }
    }
}
