//! The workspace's integration tests, compiled into ONE binary (link once, run all).
//!
//! - `state_machine`: the reference model against `OrderService` on the memory adapters,
//!   over random interleavings (proptest);
//! - `embedder`: a property test written only against the public API, as an embedder
//!   would write it for their own wiring;
//! - `concurrency`: true concurrency on a multi-threaded runtime;
//! - `worker`: the worker loop end to end on the memory queue;
//! - `delivery`: the delivery protocol's scenarios (outages, crashes, lost races, lost
//!   jobs) followed through every retry to the dead letter and the reconciler;
//! - `real`: two service instances on the real MariaDB/MySQL and Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod concurrency;
mod delivery;
mod embedder;
mod real;
mod state_machine;
mod support;
mod worker;
