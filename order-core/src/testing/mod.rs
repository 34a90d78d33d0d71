//! Test support for embedders (feature `testing`).
//!
//! - [`contract`]: one suite per driven port, generic over the adapter, so any adapter
//!   (ours or yours) can be held to the port's promises — in one line per suite with
//!   [`repository_contract!`], [`lock_contract!`], [`queue_contract!`],
//!   [`events_contract!`] and [`accounts_contract!`];
//! - [`strategies`]: proptest strategies for domain values and command sequences;
//! - [`model`]: the reference model of the order state machine and [`model::run_commands`],
//!   which drives a real `OrderService` with generated commands and checks it against
//!   the model after every step;
//! - [`scripted`]: a payment gateway whose outcomes the test chooses.
//!
//! Everything here is pure (no runtime, no I/O), like the rest of the crate.

pub mod contract;
pub mod model;
pub mod scripted;
pub mod strategies;

/// The contract macros, also at the crate root (where `#[macro_export]` puts them).
pub use crate::{
    accounts_contract, events_contract, lock_contract, queue_contract, repository_contract,
};
