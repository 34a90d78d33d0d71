//! Every check of order-core's repository contract, against MySQL (a fresh migrated
//! database per check) and against the memory adapter.

use order_core::testing::contract::repository::{self as contract, CHECKS};
use order_mysql::MySqlPool;

use crate::support::{MemoryFixture, MySqlFixture};

macro_rules! contract_suite {
    ($($check:ident),* $(,)?) => {
        mod mysql {
            use super::*;
            $(
                #[sqlx::test(migrator = "order_mysql::MIGRATOR")]
                async fn $check(pool: MySqlPool) {
                    contract::$check(&MySqlFixture::new(pool)).await;
                }
            )*
        }

        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    contract::$check(&MemoryFixture::new()).await;
                }
            )*
        }

        #[test]
        fn every_contract_check_is_run() {
            assert_eq!(CHECKS, &[$(stringify!($check)),*], "contract checks and this list differ");
        }
    };
}

contract_suite!(
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
    find_by_key_is_scoped_to_the_user,
    release_expires_the_holders_lease_at_once,
    claim_stranded_hands_each_order_out_once_per_stale_after,
    claim_stranded_skips_live_leases_and_terminal_orders,
    restock_is_bounded_by_max_stock,
);
