//! The invariant checker: says, for a deployment on MySQL/MariaDB and Redis (one
//! database, one Redis key prefix), whether every invariant of the engine holds, each
//! with PASS/FAIL and a detail naming what breaks it.
//!
//! It only reads: the database half is [`order_mysql::audit`] (plain SQL over the
//! tables), the Redis half [`order_redis::inspect`] (`XRANGE` of the dead letter, `SCAN`
//! for lock keys). Nothing is created, migrated, locked or repaired, so it can be pointed
//! at a production deployment. It is meant to run *at rest* — after a load or a fault
//! run, once the workers have drained the work — because several invariants (stock
//! conservation, PAID ⇔ approved charge, no lock keys) only hold between changes; the
//! first check therefore waits, bounded, for the open orders to finish.
//!
//! `examples/check.rs` is its command line; the fault-injection suite runs it after
//! healing.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use order_core::{OrderId, OrderStatus};
use order_mysql::{AuditError, MySqlPool, audit};
use order_redis::{InspectError, RedisConnection, inspect};

/// The names of the invariants, in the order [`check`] reports them.
pub mod names {
    /// Every accepted order exists and is terminal (PAID, FAILED or CANCELLED) after
    /// the bounded wait.
    pub const ACCEPTED_TERMINAL: &str = "every accepted order is terminal";
    /// Per product: received = stock + units held by PENDING/PROCESSING/PAID orders.
    pub const STOCK_CONSERVED: &str = "stock is conserved per product";
    /// Per product: neither the held units nor the stock exceed what was received.
    pub const NO_NEGATIVE_STOCK: &str = "no negative stock";
    /// At most one order per (user, idempotency key).
    pub const ONE_ORDER_PER_KEY: &str = "at most one order per (user, key)";
    /// At most one charge per order, and PAID ⇔ exactly one approved charge.
    pub const CHARGES: &str = "at most one charge per order and PAID ⇔ exactly one approved charge";
    /// At most one stock return (Cancel or Fail) per order.
    pub const RESTORED_ONCE: &str = "stock restored at most once per order";
    /// The durable event log holds only legal transitions.
    pub const LEGAL_HISTORY: &str = "only legal transitions in the durable history";
    /// The dead letter holds only the injected poison jobs.
    pub const DEAD_LETTER: &str = "the dead letter holds only the injected poison jobs";
    /// No lock key is left in Redis.
    pub const NO_LOCKS: &str = "no lock keys left behind";
}

/// How far a detail goes in naming culprits before it only counts the rest.
const NAMED: usize = 10;

/// How often the terminal wait looks at the open orders again.
const POLL: Duration = Duration::from_millis(250);

/// What the checker is told about the run it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// How long to wait for open orders to finish before the first invariant is judged
    /// (polled every 250 ms; zero judges at once). Workers and the reconciler must be
    /// running for orders to finish.
    pub terminal_wait: Duration,
    /// The orders a load generator saw accepted: each must exist and be terminal.
    /// `None` takes every order in the database as accepted: none may be open.
    pub accepted: Option<Vec<OrderId>>,
    /// The payloads injected as poison jobs (e.g. `not-a-job`): the dead letter may
    /// hold these (each any number of times, or not at all) and nothing else.
    pub expected_dead_letters: Vec<String>,
}

impl Default for CheckOptions {
    /// A 30 s wait, every order counted as accepted, no poison expected.
    fn default() -> Self {
        Self {
            terminal_wait: Duration::from_secs(30),
            accepted: None,
            expected_dead_letters: Vec::new(),
        }
    }
}

/// The verdict on one invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantResult {
    /// Which invariant (one of [`names`]).
    pub name: &'static str,
    /// Whether it holds.
    pub passed: bool,
    /// On failure, what breaks it (at most ten culprits named, the rest counted); on
    /// success, empty or a note (e.g. orders whose history could not be checked).
    pub detail: String,
}

/// The verdicts on every invariant, in the order of [`names`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// One result per invariant.
    pub results: Vec<InvariantResult>,
}

impl CheckReport {
    /// Whether every invariant holds.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    /// The result for the invariant called `name`, if the report has one.
    pub fn result(&self, name: &str) -> Option<&InvariantResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// The results that failed.
    pub fn failures(&self) -> impl Iterator<Item = &InvariantResult> {
        self.results.iter().filter(|r| !r.passed)
    }
}

impl fmt::Display for CheckReport {
    /// One line per invariant: `PASS  name`, `PASS  name (note)` or
    /// `FAIL  name: detail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            match (r.passed, r.detail.is_empty()) {
                (true, true) => writeln!(f, "PASS  {}", r.name)?,
                (true, false) => writeln!(f, "PASS  {} ({})", r.name, r.detail)?,
                (false, _) => writeln!(f, "FAIL  {}: {}", r.name, r.detail)?,
            }
        }
        Ok(())
    }
}

/// Why [`check`] could not judge the invariants (as opposed to judging them failed).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A database audit could not run; the source says which and why.
    #[error("cannot audit the database")]
    Database(#[source] AuditError),
    /// A Redis inspection could not run; the source says which and why.
    #[error("cannot inspect Redis")]
    Redis(#[source] InspectError),
}

impl From<AuditError> for CheckError {
    fn from(e: AuditError) -> Self {
        CheckError::Database(e)
    }
}

impl From<InspectError> for CheckError {
    fn from(e: InspectError) -> Self {
        CheckError::Redis(e)
    }
}

/// Judges the nine invariants of the deployment whose database is `pool` and whose
/// Redis keys are under `redis`'s prefix, in this order (the [`names`]):
///
/// 1. every accepted order is terminal — after waiting up to `options.terminal_wait`
///    for it; with `accepted: None`, no order may be PENDING or PROCESSING;
/// 2. stock is conserved per product: `stock_received = stock + held`
///    ([`audit::stock_conservation`]);
/// 3. no negative stock: `stock` is unsigned, so what is checked is that neither the
///    held units nor the stock exceed what was received ([`audit::stock_overdrawn`]);
/// 4. at most one order per (user, key) ([`audit::duplicate_keys`]; structural on a
///    migrated schema, checked on the rows anyway);
/// 5. at most one charge per order (structural: one ledger row per order) and PAID ⇔
///    exactly one approved charge ([`audit::charges`]);
/// 6. stock restored at most once per order ([`audit::restored_more_than_once`]);
/// 7. only legal transitions in the durable history ([`audit::illegal_histories`]);
///    orders whose log was pruned are noted as not checkable, not failed;
/// 8. the dead letter holds only `options.expected_dead_letters`
///    ([`inspect::dead_letters`]);
/// 9. no lock keys left behind ([`inspect::lock_keys`]).
///
/// Invariants 2–9 are judged once, right after the wait. Only reads: nothing is
/// written, locked or migrated.
///
/// # Errors
/// [`CheckError::Database`] when an audit query failed (unreachable server, a schema
/// without migration 0008…), [`CheckError::Redis`] when a Redis read failed. A failed
/// invariant is not an error: it is a `FAIL` in the report.
pub async fn check(
    pool: &MySqlPool,
    redis: &RedisConnection,
    options: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    let mut results = Vec::with_capacity(9);
    results.push(accepted_terminal(pool, options).await?);

    let mismatches = audit::stock_conservation(pool).await?;
    results.push(verdict(names::STOCK_CONSERVED, &mismatches));

    let overdrawn = audit::stock_overdrawn(pool).await?;
    results.push(verdict(names::NO_NEGATIVE_STOCK, &overdrawn));

    let duplicates = audit::duplicate_keys(pool).await?;
    results.push(verdict(names::ONE_ORDER_PER_KEY, &duplicates));

    let charges = audit::charges(pool).await?;
    results.push(verdict(names::CHARGES, &charges));

    let restored = audit::restored_more_than_once(pool).await?;
    results.push(verdict(names::RESTORED_ONCE, &restored));

    let histories = audit::illegal_histories(pool).await?;
    let mut history = verdict(names::LEGAL_HISTORY, &histories.violations);
    if histories.not_checkable > 0 {
        let note = format!(
            "{} order(s) not checkable, their log was pruned: {}",
            histories.not_checkable,
            named(&histories.not_checkable_sample, histories.not_checkable)
        );
        history.detail = if history.detail.is_empty() {
            note
        } else {
            format!("{}; {note}", history.detail)
        };
    }
    results.push(history);

    let expected: HashSet<&str> = options
        .expected_dead_letters
        .iter()
        .map(String::as_str)
        .collect();
    let unexpected: Vec<String> = inspect::dead_letters(redis)
        .await?
        .into_iter()
        .filter(|letter| !expected.contains(letter.payload.as_str()))
        .map(|letter| match letter.reason {
            Some(reason) => format!("entry {}: {:?} ({reason})", letter.id, letter.payload),
            None => format!("entry {}: {:?}", letter.id, letter.payload),
        })
        .collect();
    results.push(verdict(names::DEAD_LETTER, &unexpected));

    let locks = inspect::lock_keys(redis).await?;
    results.push(verdict(names::NO_LOCKS, &locks));

    Ok(CheckReport { results })
}

/// Invariant 1: polls until the accepted orders are all terminal or the wait ends.
async fn accepted_terminal(
    pool: &MySqlPool,
    options: &CheckOptions,
) -> Result<InvariantResult, CheckError> {
    let deadline = tokio::time::Instant::now() + options.terminal_wait;
    loop {
        let culprits = unfinished(pool, options.accepted.as_deref()).await?;
        let now = tokio::time::Instant::now();
        if culprits.is_empty() || now >= deadline {
            let mut result = verdict(names::ACCEPTED_TERMINAL, &culprits);
            if !result.passed {
                result.detail = format!(
                    "after waiting {:?}: {}",
                    options.terminal_wait, result.detail
                );
            }
            return Ok(result);
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

/// The accepted orders that are missing or open, described, ascending by id.
async fn unfinished(
    pool: &MySqlPool,
    accepted: Option<&[OrderId]>,
) -> Result<Vec<String>, CheckError> {
    let describe = |(id, status): (OrderId, OrderStatus)| format!("order {id} is {status}");
    let Some(accepted) = accepted else {
        let open = audit::open_orders(pool).await?;
        return Ok(open.into_iter().map(describe).collect());
    };
    let found = audit::order_statuses(pool, accepted).await?;
    let mut ids: Vec<OrderId> = accepted.to_vec();
    ids.sort();
    ids.dedup();
    let mut found = found.into_iter().peekable();
    let mut culprits = Vec::new();
    // Both are sorted by id: walk them together.
    for id in ids {
        while found.next_if(|(f, _)| *f < id).is_some() {}
        match found.next_if(|(f, _)| *f == id) {
            Some((_, status)) if status.is_terminal() => {}
            Some(open) => culprits.push(describe(open)),
            None => culprits.push(format!("order {id} does not exist")),
        }
    }
    Ok(culprits)
}

/// PASS when `culprits` is empty, else FAIL naming them.
fn verdict<T: fmt::Display>(name: &'static str, culprits: &[T]) -> InvariantResult {
    InvariantResult {
        name,
        passed: culprits.is_empty(),
        detail: if culprits.is_empty() {
            String::new()
        } else {
            named(culprits, culprits.len() as u64)
        },
    }
}

/// The first ten of `items`, joined with `; `, then how many more of `total` there are.
fn named<T: fmt::Display>(items: &[T], total: u64) -> String {
    let mut text = items
        .iter()
        .take(NAMED)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let shown = items.len().min(NAMED) as u64;
    if total > shown {
        text.push_str(&format!("; … and {} more", total - shown));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_names_ten_culprits_and_counts_the_rest() {
        let items: Vec<u32> = (1..=12).collect();
        assert_eq!(
            named(&items, 12),
            "1; 2; 3; 4; 5; 6; 7; 8; 9; 10; … and 2 more"
        );
        assert_eq!(named(&items[..2], 2), "1; 2");
        assert_eq!(named(&items[..3], 40), "1; 2; 3; … and 37 more");
    }

    #[test]
    fn the_report_prints_one_line_per_invariant() {
        let report = CheckReport {
            results: vec![
                InvariantResult {
                    name: names::ACCEPTED_TERMINAL,
                    passed: true,
                    detail: String::new(),
                },
                InvariantResult {
                    name: names::STOCK_CONSERVED,
                    passed: false,
                    detail: "product 3: received 50, stock 47, held 2".into(),
                },
            ],
        };
        assert!(!report.passed());
        assert_eq!(
            report.to_string(),
            "PASS  every accepted order is terminal\n\
             FAIL  stock is conserved per product: product 3: received 50, stock 47, held 2\n"
        );
    }
}
