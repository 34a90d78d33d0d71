//! The black-box suite: the real `server` binary, started per test on a fresh MySQL
//! database and a unique Redis prefix, driven over HTTP only (issue 8's test points).
//!
//! - `harness`: the database, the prefix, the processes, and their teardown;
//! - `client`: a small HTTP/1.1 client (one connection per request);
//! - `scenarios`: the reference's feature scenarios, ownership, health, SIGTERM;
//! - `races`: true concurrency, on one process and across two API processes;
//! - `bad_input`: a table of bad requests, each refused exactly, none writing anything;
//! - `edge_cases`: edge inputs that are accepted (and what they write), expired tokens.
//!
//! Build the server first: `cargo build --examples --all-features` (tests/run does).

mod bad_input;
pub(crate) mod client;
mod edge_cases;
pub(crate) mod harness;
mod processes;
mod races;
mod scenarios;
