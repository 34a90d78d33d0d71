//! The REST API end to end: requests through `Router::oneshot` against the memory
//! adapters, one test binary. Every response is checked for `X-Trace-Id` by the
//! helpers; each module covers one part of the API.

// Test code: a failed setup step should panic right there, with its message. Clippy's
// `allow-expect-in-tests` covers `#[test]` bodies only, not the helpers they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod auth;
mod create_order;
mod events;
mod faults;
mod ops;
mod protocol;
mod read_orders;
