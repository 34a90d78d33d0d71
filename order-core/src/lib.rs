//! # order-core
//!
//! The hexagon of the order-processing engine: domain types, the driven ports every
//! adapter implements, and [`OrderService`], which takes an order
//! from *placed* to *paid* without overselling stock, losing an order or charging twice.
//!
//! This crate must never depend on an I/O crate (no tokio runtime, sqlx, fred, axum or
//! serde_json). Time and randomness come in through the [`ports::Clock`] and
//! [`ports::RandomSource`] ports so that tests and property tests are deterministic.
//!
//! Layout:
//! - [`domain`]: value objects, the [`domain::OrderStatus`] state machine and the
//!   [`domain::Order`] entity;
//! - [`ports`]: every driven port (`OrderRepository`, `DistributedLock`,
//!   `PaymentGateway`, `EventPublisher`, `JobQueue`, `Clock`, `RandomSource`);
//! - [`app`]: `OrderService` and its use cases;
//! - [`runtime`]: what the service needs from a runtime without depending on one —
//!   [`SystemClock`], [`ManualClock`], [`SeededRandom`] and the retry schedule;
//! - `testing` (feature `testing`): proptest strategies, the reference model and
//!   scripted test doubles for property-testing your own wiring;
//! - `failpoints` (feature `failpoints`, off by default): named fail points in the use
//!   cases that tests arm to crash, stall or panic at an exact step.

/// `fail_point!("name", clock)`: the fail point `name` (see [`failpoints`]) at this spot
/// of an async use case; `clock` is the service's `Clock`, on which a `sleep` action
/// waits (a blocking sleep would stall the executor). Expands to nothing unless the
/// `failpoints` feature is on.
#[cfg(feature = "failpoints")]
macro_rules! fail_point {
    ($name:literal, $clock:expr) => {
        if let ::core::option::Option::Some(delay) = $crate::failpoints::eval($name) {
            $clock.sleep(delay).await;
        }
    };
}

/// Without the `failpoints` feature a fail point is compiled out: no code, no cost.
#[cfg(not(feature = "failpoints"))]
macro_rules! fail_point {
    ($name:literal, $clock:expr) => {};
}

// Textual scoping would do inside this crate; the `use` lets call sites name it by path.
pub(crate) use fail_point;

pub mod app;
pub mod domain;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod ports;
pub mod runtime;
#[cfg(feature = "testing")]
pub mod testing;

pub use app::{
    CancelOrderError, CreateOrderError, CreateOrderRequest, CreatedOrder, ErrorChain,
    GetOrderError, ListOrdersError, ListProductsError, LockMode, LockPolicy, OrderQuery,
    OrderService, ProcessOrderError, ProcessOutcome, RequestedItem, ServiceConfig, ServiceStats,
    StatsSnapshot, WorkerOutcome,
};
pub use domain::{
    IdempotencyKey, Money, Order, OrderDraft, OrderId, OrderLine, OrderStatus, Product, ProductId,
    Quantity, Timestamp, UserId,
};
pub use runtime::{Backoff, BackoffError, ManualClock, SeededRandom, SystemClock};
