//! Contract suites: one per driven port, generic over the adapter, so the memory adapters
//! and the real ones are held to the same promises. Run them from your own adapter's
//! tests to prove it faithful.
//!
//! # In one line
//!
//! Each suite has a macro that writes one test per check, so your crate never lists the
//! checks (and cannot miss one that a new release adds):
//!
//! | port | fixture trait | macro |
//! |---|---|---|
//! | `OrderRepository` | [`repository::RepositoryFixture`] | [`repository_contract!`](crate::repository_contract) |
//! | `DistributedLock` | [`lock::LockFixture`] | [`lock_contract!`](crate::lock_contract) |
//! | `JobQueue` | [`queue::QueueFixture`] | [`queue_contract!`](crate::queue_contract) |
//! | `EventPublisher` | [`events::EventsFixture`] | [`events_contract!`](crate::events_contract) |
//! | `AccountStore` | [`accounts::AccountsFixture`] | [`accounts_contract!`](crate::accounts_contract) |
//!
//! ```ignore
//! // tests/contract.rs of your adapter crate
//! async fn my_lock() -> MyLockFixture { MyLockFixture::connect().await }
//!
//! order_core::lock_contract!(my_lock);
//! ```
//!
//! Every macro accepts the same three forms of fixture, each optionally preceded by the
//! test attribute(s) to put on every generated test:
//!
//! - `suite_contract!(path::to::make_fixture)`: an `async fn() -> F`; each test runs
//!   `make_fixture().await`;
//! - `suite_contract!(|| expression)`: each test evaluates `expression` (inside the
//!   async test, so it may `.await`) to get the fixture;
//! - `suite_contract!(#[attr] |arg: Type, ..| expression)`: the generated tests take
//!   these parameters, for test attributes that inject them, e.g.
//!   `#[sqlx::test] |pool: MySqlPool| MyFixture::new(pool)`.
//!
//! Without an attribute every test is `#[tokio::test]` (a current-thread runtime), so
//! the calling crate needs `tokio` as a dev-dependency with the `macros` and `rt`
//! features. Pass your own attribute(s) instead — e.g.
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`, which needs
//! `rt-multi-thread` too — and they replace the default.
//!
//! Each generated test is named after its check, builds a fresh fixture, runs the check
//! and then awaits the fixture's `teardown` (a provided method on every fixture trait,
//! a no-op unless you override it). A check that fails panics before `teardown`, so
//! clean-up that must also happen on failure belongs in a `Drop` of the fixture.
//! The tests are written where the macro is invoked: invoke two suites in one module
//! only if their check names differ (they do for the five suites here), and run one
//! suite against two adapters from two modules.
//!
//! # One list per suite
//!
//! Each suite's checks are listed once, in the macro next to its functions (e.g.
//! `lock.rs`): the generated tests and the suite's `CHECKS` both come from that list,
//! and this crate's tests fail when a `pub async fn` check is missing from it.

pub mod accounts;
pub mod events;
pub mod lock;
pub mod queue;
pub mod repository;

/// Turns a suite's check list into `&[&str]` of their names (for `CHECKS`).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_check_names {
    ([$($check:ident),* $(,)?]) => {
        &[$(::core::stringify!($check)),*]
    };
}

/// Parses a contract macro's input into the form [`__contract_emit!`] writes tests from,
/// then asks the suite's list macro to call it with the checks.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_parse {
    // With the caller's test attribute(s).
    ($list:ident, $suite:ident, $fixture:ident; $(#[$attr:meta])+ || $make:expr $(,)?) => {
        $crate::$list! { [$crate::__contract_emit]
            $suite, $fixture; [$(#[$attr])+] []; $make
        }
    };
    ($list:ident, $suite:ident, $fixture:ident;
        $(#[$attr:meta])+ | $($arg:ident : $ty:ty),* | $make:expr $(,)?) => {
        $crate::$list! { [$crate::__contract_emit]
            $suite, $fixture; [$(#[$attr])+] [$($arg: $ty),*]; $make
        }
    };
    ($list:ident, $suite:ident, $fixture:ident; $(#[$attr:meta])+ $make:path $(,)?) => {
        $crate::$list! { [$crate::__contract_emit]
            $suite, $fixture; [$(#[$attr])+] []; $make().await
        }
    };
    ($list:ident, $suite:ident, $fixture:ident; # $($input:tt)*) => {
        ::core::compile_error! {
            "expected `#[test_attribute]` followed by a fixture: `path::to::async_fn`, \
             `|| expression` or `|arg: Type, ..| expression`"
        }
    };
    // Without: the default attribute.
    ($list:ident, $suite:ident, $fixture:ident; $($input:tt)+) => {
        $crate::__contract_parse! { $list, $suite, $fixture; #[::tokio::test] $($input)+ }
    };
}

/// Writes one test per check, one check at a time (the attributes and parameters are
/// repeated for every check, which one nested repetition cannot express).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_emit {
    ([] $($ignored:tt)*) => {};
    (
        [$check:ident $(, $($rest:tt)*)?]
        $suite:ident, $fixture:ident; $attrs:tt $args:tt; $make:expr
    ) => {
        $crate::__contract_emit_one! { $check, $suite, $fixture; $attrs $args; $make }
        $crate::__contract_emit! { [$($($rest)*)?] $suite, $fixture; $attrs $args; $make }
    };
}

/// One test: a fresh fixture, the check, the fixture's teardown.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_emit_one {
    (
        $check:ident, $suite:ident, $fixture:ident;
        [$(#[$attr:meta])+] [$($arg:ident : $ty:ty),*]; $make:expr
    ) => {
        $(#[$attr])+
        async fn $check($($arg: $ty),*) {
            let fixture = $make;
            $crate::testing::contract::$suite::$check(&fixture).await;
            $crate::testing::contract::$suite::$fixture::teardown(&fixture).await;
        }
    };
}

/// Proves, when this crate compiles, that every listed check is a function of its
/// suite taking the suite's fixture.
#[cfg(test)]
macro_rules! assert_checks_are_functions {
    ([$($check:ident),* $(,)?] $suite:ident, $fixture:ident) => {
        #[allow(dead_code)]
        fn checks_are_functions(f: &dyn $suite::$fixture) {
            $(
                drop($suite::$check(f));
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{accounts, events, lock, queue, repository};

    mod lock_fns {
        use super::lock;
        crate::__lock_checks! { [assert_checks_are_functions] lock, LockFixture }
    }
    mod queue_fns {
        use super::queue;
        crate::__queue_checks! { [assert_checks_are_functions] queue, QueueFixture }
    }
    mod events_fns {
        use super::events;
        crate::__events_checks! { [assert_checks_are_functions] events, EventsFixture }
    }
    mod accounts_fns {
        use super::accounts;
        crate::__accounts_checks! { [assert_checks_are_functions] accounts, AccountsFixture }
    }
    mod repository_fns {
        use super::repository;
        crate::__repository_checks! {
            [assert_checks_are_functions] repository, RepositoryFixture
        }
    }

    /// The names of the `pub async fn`s of a suite's source: its checks (helpers are
    /// private).
    fn public_async_fns(source: &str) -> BTreeSet<&str> {
        source
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .map(|rest| {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    fn assert_list_is_complete(suite: &str, source: &str, checks: &[&str]) {
        let listed: BTreeSet<&str> = checks.iter().copied().collect();
        assert_eq!(
            listed.len(),
            checks.len(),
            "{suite}: a check is listed twice"
        );
        assert_eq!(
            public_async_fns(source),
            listed,
            "{suite}: the `pub async fn` checks and the suite's check list differ; add the \
             new check to the list macro next to CHECKS"
        );
    }

    #[test]
    fn every_public_check_is_in_its_suites_one_list() {
        assert_list_is_complete("lock", include_str!("lock.rs"), lock::CHECKS);
        assert_list_is_complete("queue", include_str!("queue.rs"), queue::CHECKS);
        assert_list_is_complete("events", include_str!("events.rs"), events::CHECKS);
        assert_list_is_complete("accounts", include_str!("accounts.rs"), accounts::CHECKS);
        let repository_sources = [
            include_str!("repository/place.rs"),
            include_str!("repository/transitions.rs"),
            include_str!("repository/reads.rs"),
            include_str!("repository/protocol.rs"),
            include_str!("repository/event_log.rs"),
            include_str!("repository/completions.rs"),
        ]
        .concat();
        assert_list_is_complete("repository", &repository_sources, repository::CHECKS);
    }

    #[test]
    fn the_suites_check_names_are_distinct_so_they_can_share_a_module() {
        let all: Vec<&str> = [
            lock::CHECKS,
            queue::CHECKS,
            events::CHECKS,
            repository::CHECKS,
            accounts::CHECKS,
        ]
        .concat();
        let distinct: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "two suites share a check name");
    }
}
