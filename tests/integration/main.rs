//! The workspace's integration tests, compiled into ONE binary (link once, run all).
//!
//! - `builder`: `Engine::builder()` — missing ports, precedence, one validation;
//! - `state_machine`: the reference model against `OrderService` on the memory adapters,
//!   over random interleavings (proptest);
//! - `embedder`: a property test written only against the public API, as an embedder
//!   would write it for their own wiring;
//! - `concurrency`: true concurrency on a multi-threaded runtime;
//! - `worker`: the worker loop end to end on the memory queue;
//! - `delivery`: the delivery protocol's scenarios (outages, crashes, lost races, lost
//!   jobs) followed through every retry to the dead letter and the reconciler;
//! - `user_repository`: the embedder example's own repository, held to the repository
//!   contract by `order_core::repository_contract!` in one line;
//! - `real`: two service instances on the real MariaDB/MySQL and Redis, the delivery
//!   protocol on RedisQueue, and the embedder example's program.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests read their servers and seeds from the environment (libraries never do).
#![allow(clippy::disallowed_methods)]
// A test binary: `pub` marks what its modules share, not a public API.
#![allow(unreachable_pub)]

mod builder;
mod check;
mod concurrency;
mod delivery;
mod embedder;
#[cfg(feature = "failpoints")]
mod failpoints;
#[cfg(feature = "failpoints")]
mod faults;
mod http;
mod real;
mod state_machine;
mod support;
mod user_repository;
mod worker;
