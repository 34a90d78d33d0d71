//! # order-engine
//!
//! The facade over the order-processing engine: re-exports [`order_core`] (the hexagon)
//! and the adapters, and wires the embedded default — everything in one process, on the
//! memory adapters and the simulated payment provider — with [`Embedded`].
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

use order_core::app::{ConfigError, OrderService, SeededRandom, ServiceConfig};
use order_core::ports::{Clock, PaymentGateway, RandomSource};
use order_memory::{MemoryAdapters, QueueConfig};
use order_payment_sim::{MemoryLedger, PaymentLedger, SimConfig, SimConfigError, SimulatedGateway};

/// Why the embedded engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The service configuration is incoherent.
    #[error(transparent)]
    Service(#[from] ConfigError),
    /// The payment simulation configuration is invalid.
    #[error(transparent)]
    Payment(#[from] SimConfigError),
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
    /// [`EmbeddedError`] when a configuration is invalid.
    pub fn new(
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
        payment: SimConfig,
        queue: QueueConfig,
    ) -> Result<Self, EmbeddedError> {
        let rng: Arc<dyn RandomSource> = Arc::new(SeededRandom::new(payment.seed ^ 0x5eed));
        let ledger: Arc<dyn PaymentLedger> = Arc::new(MemoryLedger::new());
        let payments = Arc::new(SimulatedGateway::new(payment, ledger, clock.clone())?);
        let adapters = MemoryAdapters::new(clock, queue);
        let gateway: Arc<dyn PaymentGateway> = payments.clone();
        let service = Arc::new(OrderService::new(adapters.ports(gateway, rng), config)?);
        Ok(Self {
            service,
            adapters,
            payments,
        })
    }
}
