//! # order-engine
//!
//! The facade over the order-processing engine: re-exports [`order_core`] (the hexagon)
//! and the adapters, and wires them:
//! - [`Embedded`]: everything in one process, on the memory adapters and the simulated
//!   payment provider (the embedded default);
//! - [`Networked`]: MySQL/MariaDB and Redis, for processes that share one database;
//! - [`Workers`]: worker tasks over either, stopped gracefully.
//!
//! Embedders who want only some parts depend on `order-core` and the adapter crates
//! directly; this crate exists for the examples, benches and integration tests, and for
//! a quick start:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use order_engine::Embedded;
//! use order_engine::core::app::{CreateOrderRequest, ProcessOutcome, ServiceConfig};
//! use order_engine::memory::{QueueConfig, SystemClock, seed_reference_data};
//! use order_engine::payment_sim::SimConfig;
//!
//! let engine = Embedded::new(
//!     Arc::new(SystemClock::new()),
//!     ServiceConfig::default(),
//!     SimConfig::default(),
//!     QueueConfig::default(),
//! )?;
//! let shop = seed_reference_data(&engine.adapters.repository);
//! let created = engine
//!     .service
//!     .create_order(CreateOrderRequest::new(shop.alice, [(shop.mouse, 2)], "checkout-42"))
//!     .await?;
//! assert_eq!(created.order.total().to_string(), "59.98");
//!
//! // A worker would do this for every job: `engine.service.run_worker(shutdown)`.
//! let outcome = engine.service.process_order(created.order.id()).await?;
//! assert!(matches!(outcome, ProcessOutcome::Completed(o) if o.status().is_terminal()));
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

pub use order_core as core;
pub use order_memory as memory;
pub use order_mysql as mysql;
pub use order_payment_sim as payment_sim;
pub use order_redis as redis;

use order_core::app::{ConfigError, OrderService, Ports, SeededRandom, ServiceConfig};
use order_core::ports::{Clock, PaymentGateway, QueueTimingsError, RandomSource};
use order_memory::{MemoryAdapters, QueueConfig, SystemClock};
use order_mysql::{MySqlOrderRepository, MySqlPaymentLedger, MySqlPool};
use order_payment_sim::{MemoryLedger, PaymentLedger, SimConfig, SimConfigError, SimulatedGateway};
use order_redis::{ConnectError, RedisConnection, RedisEvents, RedisLock, RedisQueue};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

/// Why an engine ([`Embedded`] or [`Networked`]) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The service configuration is incoherent.
    #[error(transparent)]
    Service(#[from] ConfigError),
    /// The payment simulation configuration is invalid.
    #[error(transparent)]
    Payment(#[from] SimConfigError),
    /// The Redis settings are unusable.
    #[error(transparent)]
    Redis(#[from] ConnectError),
    /// The memory queue's timings are unusable.
    #[error(transparent)]
    Queue(#[from] QueueTimingsError),
}

/// The whole engine in one process: an [`OrderService`] over the memory adapters and the
/// simulated payment provider, with handles to each part for seeding and inspection.
pub struct Embedded {
    /// The use cases.
    pub service: Arc<OrderService>,
    /// The memory adapters behind it.
    pub adapters: MemoryAdapters,
    /// The simulated provider (its ledger records every charge).
    pub payments: Arc<SimulatedGateway>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Embedded {
    /// Builds the embedded engine on `clock`, with `payment` simulation settings, a
    /// memory queue configured by `queue`, and the service settings `config`. The RNG is
    /// seeded from `payment.seed` for reproducible runs.
    ///
    /// # Errors
    /// [`EngineError`] when a configuration is invalid.
    pub fn new(
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
        payment: SimConfig,
        queue: QueueConfig,
    ) -> Result<Self, EngineError> {
        let rng: Arc<dyn RandomSource> = Arc::new(SeededRandom::new(payment.seed ^ 0x5eed));
        let ledger: Arc<dyn PaymentLedger> = Arc::new(MemoryLedger::new());
        let payments = Arc::new(SimulatedGateway::new(payment, ledger, clock.clone())?);
        let adapters = MemoryAdapters::new(clock, queue)?;
        let gateway: Arc<dyn PaymentGateway> = payments.clone();
        let service = Arc::new(OrderService::new(adapters.ports(gateway, rng), config)?);
        Ok(Self {
            service,
            adapters,
            payments,
        })
    }
}

/// The engine across processes: MySQL/MariaDB for orders, stock and the payment ledger,
/// Redis for the locks, the job queue and the events. Every process (API, worker) builds
/// one over its own pool and Redis connection; they share the database and key prefix.
pub struct Networked {
    /// The use cases.
    pub service: Arc<OrderService>,
    /// The MySQL repository behind it (seeding, inspection, reconciler scans).
    pub repository: Arc<MySqlOrderRepository>,
    /// The simulated provider, over the shared MySQL ledger.
    pub payments: Arc<SimulatedGateway>,
    /// The Redis connection the lock, queue and events use.
    pub redis: RedisConnection,
}

impl std::fmt::Debug for Networked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networked")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Networked {
    /// Wires the service over `pool` (already migrated) and `redis`, with the system
    /// clock, an entropy-seeded RNG and the simulated provider configured by `payment`.
    /// It does not wait for Redis: a process starts while Redis is down (locks fail open
    /// to the database guard, failed enqueues are recovered by the reconciler) and the
    /// adapters reconnect by themselves.
    ///
    /// # Errors
    /// [`EngineError`] when a configuration is invalid (the service's, the payment
    /// simulation's, or the Redis adapters').
    pub async fn new(
        pool: MySqlPool,
        redis: RedisConnection,
        config: ServiceConfig,
        payment: SimConfig,
    ) -> Result<Self, EngineError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let repository = Arc::new(MySqlOrderRepository::new(pool.clone()));
        let ledger: Arc<dyn PaymentLedger> = Arc::new(MySqlPaymentLedger::new(pool));
        let payments = Arc::new(SimulatedGateway::new(payment, ledger, clock.clone())?);
        let ports = Ports {
            repository: repository.clone(),
            lock: Arc::new(RedisLock::new(&redis).await?),
            payments: payments.clone(),
            events: Arc::new(RedisEvents::new(&redis)),
            queue: Arc::new(RedisQueue::new(&redis).await?),
            clock,
            rng: Arc::new(SeededRandom::from_entropy()),
        };
        Ok(Self {
            service: Arc::new(OrderService::new(ports, config)?),
            repository,
            payments,
            redis,
        })
    }
}

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
