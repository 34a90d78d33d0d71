//! The use cases: one [`OrderService`] holding every driven port, with methods for
//! creating, processing, cancelling and reading orders, and a worker loop.
//!
//! Nothing here performs I/O itself or spawns tasks: the service only awaits its ports,
//! so it runs on whatever executor the embedder chooses.

mod clock;
mod config;
mod errors;
mod future;
mod rng;
mod service;
mod stats;

pub use clock::ManualClock;
pub use config::{
    ConfigError, LockMode, LockPolicy, ReconcilerConfig, ServiceConfig, exponential_backoff,
};
pub use errors::{
    CancelOrderError, CreateOrderError, GetOrderError, ListOrdersError, ProcessOrderError,
    ReconcileError, ValidationErrors,
};
pub use future::{Either, race, with_timeout};
pub use rng::SeededRandom;
pub use service::{
    CreateOrderRequest, CreatedOrder, MAX_LINES, OrderQuery, OrderService, Ports, ProcessOutcome,
    ReconcileReport, RequestedItem, WorkerOutcome,
};
pub use stats::{ServiceStats, StatsSnapshot};

#[cfg(test)]
mod tests;
