//! # order-payment-sim
//!
//! A simulated payment provider implementing
//! [`PaymentGateway`](order_core::ports::PaymentGateway), as the reference system does:
//! a delay uniform in 50–200 ms, 80 % approval, both configurable (zero delay allowed),
//! seedable, and idempotent per key — a repeated charge for the same order returns the
//! first outcome and is not a new charge. The first outcome per key lives in a
//! [`PaymentLedger`]: [`MemoryLedger`] for the embedded default, a durable shared one
//! (the MySQL adapter's) in multi-process mode.

mod gateway;
mod ledger;

pub use gateway::{DECLINE_REASON, KeyReport, SimConfig, SimConfigError, SimulatedGateway};
pub use ledger::{LedgerEntry, LedgerError, MemoryLedger, PaymentLedger, Recorded};
