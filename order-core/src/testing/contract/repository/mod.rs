//! Contract suite for [`OrderRepository`]: stock, idempotency and compare-and-set
//! transitions, held to the same promises in every adapter.
//!
//! Each check is a `pub async fn` taking a [`RepositoryFixture`] over a **fresh, empty
//! store** (no users, products or orders), and panics with a message naming the broken
//! promise. Run every check in [`CHECKS`] against your adapter, one test per check, with
//! [`repository_contract!`](crate::repository_contract):
//!
//! ```ignore
//! async fn my_fixture() -> MyFixture {
//!     MyFixture::over_an_empty_store().await
//! }
//!
//! order_core::repository_contract!(my_fixture);
//! ```
//!
//! Transitions are checked against [`Order::apply`](crate::domain::Order::apply) itself: whatever the adapter returns
//! as `Applied` must equal what `apply` makes of the order it started from, and a lost
//! race must leave the order exactly as it was. Instants carry milliseconds, so a store
//! that rounds them fails the equality checks.
//!
//! Pure code like the rest of the crate: no runtime, no I/O of its own.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Money, ProductId, RestockError, UserId};
use crate::ports::OrderRepository;

/// What a repository check needs from the adapter under test.
#[async_trait]
pub trait RepositoryFixture: Send + Sync {
    /// The adapter under test, over a store that was empty when the fixture was made.
    fn repository(&self) -> Arc<dyn OrderRepository>;

    /// Creates a user who may place orders and returns its id.
    async fn add_user(&self) -> UserId;

    /// Creates a product with this unit price and stock and returns its id. Prices used
    /// by the checks stay within `DECIMAL(10,2)` (at most 99 999 999.99) and stocks at or
    /// below 10 000.
    async fn add_product(&self, price: Money, stock: u64) -> ProductId;

    /// A product's current stock (the fixture panics if the product does not exist).
    async fn stock(&self, product: ProductId) -> u64;

    /// Restocks through the adapter's own restock operation (not part of the port; the
    /// fixture panics on a store failure and returns the adapter's refusal).
    async fn restock(&self, product: ProductId, units: u64) -> Result<(), RestockError>;

    /// Releases what the fixture holds (connections, server-side state) once a check
    /// passed: [`repository_contract!`](crate::repository_contract) awaits it after every check. A
    /// no-op unless overridden. A failing check panics before it, so clean-up that must
    /// happen then too belongs in a `Drop` of the fixture.
    async fn teardown(&self) {}
}

/// The names of every check, in the order they are meant to run (from the suite's one
/// list, like the tests [`repository_contract!`](crate::repository_contract) writes).
pub const CHECKS: &[&str] = crate::__repository_checks! { [crate::__contract_check_names] };

/// THE list of this suite's checks, in the order they are meant to run: every check
/// function must be here (order-core's tests fail otherwise), and nowhere else.
/// `__repository_checks! { [callback] args.. }` expands to `callback! { [checks..] args.. }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __repository_checks {
    ([$($callback:tt)*] $($args:tt)*) => {
        $($callback)*! {
            [
            place_reserves_stock_and_prices_lines,
            place_is_atomic_across_products,
            insufficient_stock_reports_the_first_short_product,
            unknown_product_writes_nothing,
            unknown_user_writes_nothing,
            replay_returns_the_stored_order_and_reserves_nothing,
            reused_key_with_other_lines_is_refused,
            keys_are_scoped_per_user_and_case_sensitive,
            batch_allots_stock_in_arrival_order,
            batch_outcomes_are_independent,
            a_held_key_answers_before_stock_and_products,
            a_total_above_the_maximum_refuses_only_that_draft,
            start_moves_pending_to_processing_with_a_lease,
            take_over_only_after_the_lease_expired,
            pay_is_fenced_by_the_lease,
            fail_is_fenced_by_the_lease_and_returns_stock_once,
            cancel_returns_stock_exactly_once,
            cancel_only_from_pending,
            terminal_statuses_are_absorbing,
            unknown_order_is_not_found,
            list_by_user_is_newest_first_filtered_and_paged,
            products_are_listed_ascending_with_current_stock,
            product_reads_one_product_as_products_lists_it,
            find_by_key_is_scoped_to_the_user,
            release_expires_the_holders_lease_at_once,
            claim_stranded_hands_each_order_out_once_per_stale_after,
            claim_stranded_skips_live_leases_and_terminal_orders,
            restock_is_bounded_by_max_stock,
            every_status_change_is_logged_with_consecutive_seq_per_user,
            events_after_pages_ascending_above_after,
            refusals_replays_and_lost_races_log_nothing,
            prune_deletes_only_old_events_and_seq_continues,
            concurrent_changes_of_one_user_get_consecutive_seqs,
            transition_from_completes_exactly_as_transition,
            a_completion_from_a_stale_holder_loses_to_the_new_one,
            concurrent_transitions_each_get_their_own_exact_outcome,
            ]
            $($args)*
        }
    };
}

/// One test per check of the [`OrderRepository`](crate::ports::OrderRepository)
/// contract ([`testing::contract::repository`](crate::testing::contract::repository)),
/// each on a fresh
/// [`RepositoryFixture`](crate::testing::contract::repository::RepositoryFixture), torn
/// down after its check passed.
///
/// The input is an optional test attribute and a fixture: `path::to::async_fn`,
/// `|| expression` or `|arg: Type, ..| expression` (see the [module
/// docs](crate::testing::contract#in-one-line)). Without an attribute the tests are
/// `#[tokio::test]`: the calling crate needs `tokio` as a dev-dependency with the
/// `macros` and `rt` features. The tests are named after the checks and written where
/// the macro is invoked.
///
/// ```ignore
/// // `#[sqlx::test]` hands each test a fresh database's pool: the tests take it as a
/// // parameter and the fixture is built from it.
/// order_core::repository_contract!(
///     #[sqlx::test(migrator = "my_adapter::MIGRATOR")]
///     |pool: MySqlPool| MyFixture::new(pool)
/// );
/// ```
#[macro_export]
macro_rules! repository_contract {
    ($($fixture:tt)+) => {
        $crate::__contract_parse! {
            __repository_checks, repository, RepositoryFixture; $($fixture)+
        }
    };
}

mod completions;
mod event_log;
mod helpers;
mod place;
mod protocol;
mod reads;
mod transitions;

pub use completions::*;
pub use event_log::*;
pub use place::*;
pub use protocol::*;
pub use reads::*;
pub use transitions::*;
