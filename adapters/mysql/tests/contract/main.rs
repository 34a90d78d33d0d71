//! The crate's one test binary: the adapters against a real MariaDB/MySQL server.
//!
//! Needs `DATABASE_URL` (e.g. `mysql://orders:orders@127.0.0.1:3306/orders_test`) naming
//! a user with global CREATE/DROP rights: every `#[sqlx::test]` runs in a fresh database
//! created from [`order_mysql::MIGRATOR`] and dropped afterwards. Without it the tests
//! fail ("DATABASE_URL must be set"); they never skip.
//!
//! - [`repository`]: order-core's repository contract suite, every check against MySQL
//!   (the memory adapter, the reference, runs the same suite in `order-memory`'s tests);
//! - [`accounts`]: order-core's accounts contract suite against MySQL, and how tokens
//!   are stored (hex digest, expiry; migration 0006 on tokens issued before it);
//! - [`ledger`]: the payment-ledger contract against both ledgers;
//! - [`batched`]: transition batching: the constant statements of a batch, and the
//!   one-by-one fallback when a completion in it was fenced;
//! - [`coalescing`]: order coalescing and the multi-row batch path: hundreds of
//!   concurrent placements on a hot product, one draft's failure in a batch, the
//!   fallback after a duplicate-key race, the constant statement count of a batch;
//! - [`concurrency`]: oversell, lock ordering, deadlock and lock-wait retries under load;
//! - [`claims`]: the reconciler's claims of stranded orders and the lease release;
//! - [`inspection`]: connect/migrate, the health check and the seeding helpers;
//! - [`regressions`]: defects that were fixed, each named after its scenario;
//! - [`explain`]: the indexes of the migrations serve the adapter's read queries;
//! - [`audit`]: the invariant audits, each silent on a healthy history and naming a
//!   planted violation, and migration 0008's backfill.

// Test code: a failed setup step should panic right there, with its message. Clippy's
// `allow-expect-in-tests` covers `#[test]` bodies only, not the helpers they share.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests read their servers and seeds from the environment (libraries never do).
#![allow(clippy::disallowed_methods)]
// A test binary: `pub` marks what its modules share, not a public API.
#![allow(unreachable_pub)]

mod accounts;
mod audit;
mod batched;
mod claims;
mod coalescing;
mod concurrency;
mod explain;
mod inspection;
mod ledger;
mod regressions;
mod repository;
mod support;
