//! The use cases: one [`OrderService`] holding every driven port, with methods for
//! creating, processing, cancelling and reading orders, a worker loop and a reconciler.
//! Each use case is an `impl OrderService` block in a file of its own (`create_order`,
//! `process_order`, `reconcile`, `queries`); `service` holds the struct they share.
//!
//! Nothing here performs I/O itself or spawns tasks: the service only awaits its ports,
//! so it runs on whatever executor the embedder chooses. Clocks, the random source and
//! the backoff schedule live in [`crate::runtime`]; they are re-exported here under their
//! old paths.

mod config;
mod create_order;
mod errors;
mod process_order;
mod queries;
mod reconcile;
mod service;
mod stats;

pub use config::{ConfigError, LockMode, LockPolicy, ReconcilerConfig, ServiceConfig};
pub use create_order::{CreateOrderRequest, CreatedOrder, MAX_LINES, RequestedItem};
pub use errors::{
    CancelOrderError, CreateOrderError, ErrorChain, GetOrderError, ListOrdersError,
    ListProductsError, ProcessOrderError, ReconcileError, ValidationErrors,
};
pub use process_order::{MISSING_ORDER, ProcessOutcome, WorkerOutcome};
pub use queries::{MAX_EVENTS_PAGE, OrderQuery};
pub use reconcile::ReconcileReport;
pub use service::{OrderService, Ports};
pub use stats::{ServiceStats, StatsSnapshot};

pub use crate::runtime::{Backoff, BackoffError, ManualClock, SeededRandom};

#[cfg(test)]
mod tests;
