//! [`OrderService`] itself: the ports it runs on, its construction and accessors, and
//! what every use case shares (publishing events). The use cases are `impl OrderService`
//! blocks of their own, one file each: [`create_order`](super::create_order),
//! [`process_order`](super::process_order), [`reconcile`](super::reconcile) and
//! [`queries`](super::queries).

use std::sync::Arc;

use tracing::warn;

use super::config::ServiceConfig;
use super::errors::ErrorChain;
use super::stats::{ServiceStats, StatsSnapshot};
use crate::ports::{
    Clock, DistributedLock, EventPublisher, JobQueue, OrderEvent, OrderRepository, PaymentGateway,
    RandomSource,
};
use crate::runtime::with_timeout;

/// The driven ports an [`OrderService`] runs on.
#[derive(Clone)]
pub struct Ports {
    /// Orders and stock.
    pub repository: Arc<dyn OrderRepository>,
    /// Contention reducer for create_order.
    pub lock: Arc<dyn DistributedLock>,
    /// The payment provider.
    pub payments: Arc<dyn PaymentGateway>,
    /// Where status changes are broadcast.
    pub events: Arc<dyn EventPublisher>,
    /// Where placed orders wait for a worker.
    pub queue: Arc<dyn JobQueue>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Tokens and jitter.
    pub rng: Arc<dyn RandomSource>,
}

impl std::fmt::Debug for Ports {
    /// The ports are trait objects without a `Debug` bound: only the queue's timings,
    /// which are plain data, are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("queue_timings", &self.queue.timings())
            .finish_non_exhaustive()
    }
}

/// The order-processing use cases over a set of [`Ports`].
///
/// Holds no state of its own besides counters: every fact lives behind a port, so any
/// number of services (in one process or many) may run over the same ports.
pub struct OrderService {
    pub(super) ports: Ports,
    pub(super) config: ServiceConfig,
    pub(super) stats: ServiceStats,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OrderService {
    /// A service over `ports`.
    ///
    /// # Errors
    /// [`ConfigError`](super::ConfigError) when `config` is incoherent, alone or with the
    /// timings of `ports.queue` ([`ServiceConfig::validate_with`]).
    pub fn new(ports: Ports, config: ServiceConfig) -> Result<Self, super::ConfigError> {
        config.validate_with(ports.queue.timings())?;
        Ok(Self {
            ports,
            config,
            stats: ServiceStats::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The ports in use.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// Counters of what this service instance has done.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Broadcasts `event` (as the repository logged it), best effort: bounded by
    /// `publish_timeout`, and a failure is counted and logged, never returned — the
    /// order's state and its event are already committed to the log, which is what a
    /// client that missed the broadcast reads.
    pub(super) async fn publish(&self, event: OrderEvent) {
        let order = event.order;
        let name = event.kind.name();
        let sent = with_timeout(
            &*self.ports.clock,
            self.config.publish_timeout,
            self.ports.events.publish(event),
        );
        match sent.await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                ServiceStats::bump(&self.stats.publish_failures);
                warn!(order = %order, event = name, error = %ErrorChain(&e), "event not published");
            }
            None => {
                ServiceStats::bump(&self.stats.publish_failures);
                warn!(order = %order, event = name, "event publish timed out");
            }
        }
    }
}
