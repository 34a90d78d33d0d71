//! # order-mysql
//!
//! The MySQL/MariaDB adapters of the order engine, over `sqlx`:
//!
//! - [`MySqlOrderRepository`] implements [`OrderRepository`](order_core::ports::OrderRepository):
//!   orders and stock changed atomically with row locks taken in ascending product id
//!   order, idempotency through a unique (user, key) index, compare-and-set status
//!   changes fenced by the processing lease, the reconciler's claims of stranded orders
//!   (`FOR UPDATE SKIP LOCKED`), and deadlock retries. It also seeds and inspects users
//!   and products, and restocks within [`MAX_STOCK`](order_core::domain::MAX_STOCK).
//! - [`MySqlAccountStore`] implements [`AccountStore`](order_core::ports::AccountStore):
//!   accounts in `users` (unique e-mail, case-insensitively) and bearer-token digests with
//!   their expiry in `api_tokens`; its accounts are the users the repository on the same
//!   database takes orders from.
//! - [`MySqlPaymentLedger`] implements
//!   [`PaymentLedger`](order_payment_sim::PaymentLedger): the simulated provider's durable
//!   "first outcome per charge key" record, shared by every process.
//! - [`audit`]: read-only checks of the stored facts (stock conservation, duplicate
//!   keys, charges, the event log's histories), one function per invariant, each
//!   returning the violations it finds; the invariant checker's database half.
//! - [`MIGRATOR`] / [`migrate`] create the schema (read `migrations/` first: it is the
//!   tour's first stop) and [`connect`] opens a pool configured as the adapters expect.
//!
//! Every statement runs unchanged on MySQL 8.0 and MariaDB 10.11, and only the runtime
//! `sqlx::query` functions are used (no database is needed at build time).
//!
//! Architecture invariant: no `sqlx` type appears in a signature of this crate. Driver
//! failures become the ports' own errors (`Unavailable` for an unreachable or overloaded
//! server, `Unexpected` with context for the rest); setup failures become
//! [`SetupError`]. Each keeps the `sqlx::Error` as its cause, behind `anyhow`, reachable
//! through [`std::error::Error::source`] and never flattened to text.

mod accounts;
pub mod audit;
mod error;
mod ledger;
mod repository;
mod retry;
mod time;

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

pub use accounts::MySqlAccountStore;
pub use audit::AuditError;
pub use error::{MySqlRestockError, SetupError};
pub use ledger::{LedgerBatchingStats, MySqlPaymentLedger};
pub use repository::{
    CoalesceConfig, CoalesceConfigError, CoalescingStats, MySqlOrderRepository, QueryPlan,
};
pub use retry::RetryPolicy;
/// The connection pool the adapters run on (re-exported so embedders need not depend on
/// `sqlx` to hold one).
pub use sqlx::MySqlPool;

/// The schema migrations in `migrations/`, embedded at compile time.
///
/// Run them with [`migrate`], or hand them to `#[sqlx::test(migrator =
/// "order_mysql::MIGRATOR")]` for a fresh, migrated database per test.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Prepared statements kept per connection by pools from [`connect`].
const STATEMENT_CACHE: usize = 256;

/// Opens a pool of at most `max_connections` connections to the database at `url`
/// (`mysql://user:password@host:port/database`).
///
/// Connections run with `time_zone = '+00:00'`: instants are stored as UTC `DATETIME(3)`
/// and must read back exactly as written; each keeps up to 256 prepared statements, so
/// that none of the adapters' statement texts is ever evicted (a pool of your own should
/// keep as many). The pool is opened eagerly, so an unreachable server is reported here
/// rather than at the first query.
///
/// # Errors
/// [`SetupError::InvalidUrl`] when `url` does not parse; [`SetupError::Connect`] when
/// the server cannot be reached or refuses the login.
pub async fn connect(url: &str, max_connections: u32) -> Result<MySqlPool, SetupError> {
    let options = MySqlConnectOptions::from_str(url)
        .map_err(|e| SetupError::InvalidUrl(e.into()))?
        // sqlx's default already, stated here because the stored instants depend on it.
        .timezone(Some(String::from("+00:00")))
        // Each one-row statement is prepared once per connection, and the multi-row
        // reads in a few padded sizes (see `padded` in the repository's SQL); the batch
        // paths' multi-statement scripts prepare nothing. An eviction stalls the next
        // command, so the cache holds more than all of these texts; 256 per connection
        // stays far below the server's `max_prepared_stmt_count` (16 382 by default)
        // for the pool sizes the binaries use, since a connection prepares only what it
        // runs.
        .statement_cache_capacity(STATEMENT_CACHE);
    MySqlPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| SetupError::Connect(e.into()))
}

/// Applies every pending migration in [`MIGRATOR`] (idempotent: applied ones are
/// skipped, checked by checksum).
///
/// # Errors
/// [`SetupError::Migrate`] when a migration fails or an applied one was edited.
pub async fn migrate(pool: &MySqlPool) -> Result<(), SetupError> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| SetupError::Migrate(e.into()))
}
