//! The payment-ledger contract, against [`MemoryLedger`] and [`MySqlPaymentLedger`]:
//! the first outcome per key wins, atomically, however many charges race.

use std::sync::Arc;

use order_core::OrderId;
use order_core::domain::FailureReason;
use order_core::ports::PaymentOutcome;
use order_mysql::{MySqlPaymentLedger, MySqlPool};
use order_payment_sim::{LedgerEntry, MemoryLedger, PaymentLedger, Recorded};
use tokio::task::JoinSet;

use crate::support::money;

fn entry(key: u64, n: u64) -> LedgerEntry {
    LedgerEntry {
        key: OrderId::new(key).expect("key"),
        amount: money(&format!("{n}.{:02}", n % 100)),
        outcome: if n.is_multiple_of(2) {
            PaymentOutcome::Approved
        } else {
            PaymentOutcome::Declined(FailureReason::new(format!("declined by racer {n}")))
        },
    }
}

/// 20 concurrent `record_first` calls for one key: exactly one is `New`, the 19 others
/// are `Existing` with that same entry; `get` and `entries` agree; another key is
/// independent; both outcomes round-trip.
async fn first_outcome_wins_under_concurrency(ledger: Arc<dyn PaymentLedger>) {
    let mut racers = JoinSet::new();
    for n in 0..20 {
        let ledger = ledger.clone();
        racers.spawn(async move {
            ledger
                .record_first(entry(42, n))
                .await
                .expect("record_first")
        });
    }
    let results = racers.join_all().await;
    let winners: Vec<&LedgerEntry> = results
        .iter()
        .filter_map(|r| match r {
            Recorded::New(e) => Some(e),
            Recorded::Existing(_) => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one first outcome: {results:?}");
    let winner = winners[0].clone();
    for r in &results {
        match r {
            Recorded::New(e) | Recorded::Existing(e) => {
                assert_eq!(e, &winner, "every racer must see the first outcome")
            }
        }
    }
    let key = OrderId::new(42).expect("key");
    assert_eq!(ledger.get(key).await.expect("get"), Some(winner.clone()));
    assert_eq!(
        ledger
            .get(OrderId::new(7).expect("key"))
            .await
            .expect("get"),
        None
    );

    // Another key is independent, and a later charge with the first key changes nothing.
    let other = entry(7, 3);
    assert_eq!(
        ledger.record_first(other.clone()).await.expect("record"),
        Recorded::New(other.clone())
    );
    assert_eq!(
        ledger.record_first(entry(42, 99)).await.expect("record"),
        Recorded::Existing(winner.clone())
    );
    assert_eq!(
        ledger.entries().await.expect("entries"),
        vec![other, winner]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_ledger_first_outcome_wins() {
    first_outcome_wins_under_concurrency(Arc::new(MemoryLedger::new())).await;
}

#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn mysql_ledger_first_outcome_wins(pool: MySqlPool) {
    first_outcome_wins_under_concurrency(Arc::new(MySqlPaymentLedger::new(pool))).await;
}

/// Another connection inserting `key` in an open transaction: a `record_first` of `key`
/// waits for it.
async fn hold_key(pool: &MySqlPool, key: u64) -> sqlx::pool::PoolConnection<sqlx::MySql> {
    let mut holder = pool.acquire().await.expect("holder");
    sqlx::query("BEGIN")
        .execute(&mut *holder)
        .await
        .expect("begin");
    sqlx::query("INSERT INTO payments (order_id, amount, outcome) VALUES (?, 1, 'APPROVED')")
        .bind(key)
        .execute(&mut *holder)
        .await
        .expect("hold the key");
    holder
}

/// Records `entries` at once, behind a first call (key `leader`) that waits for another
/// connection's lock, so that they queue and go as a batch; then lets the leader finish.
/// Returns each entry's result, in order, and the leader's.
async fn record_behind_a_blocked_call(
    pool: &MySqlPool,
    ledger: &MySqlPaymentLedger,
    leader: u64,
    entries: Vec<LedgerEntry>,
) -> (Vec<Recorded>, Recorded) {
    let mut holder = hold_key(pool, leader).await;
    let first = {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.record_first(entry(leader, 2)).await })
    };
    crate::support::until_transactions_wait_for_locks(pool, 1).await;
    let calls: Vec<_> = entries
        .into_iter()
        .map(|e| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.record_first(e).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.expect("task").expect("record_first"));
    }
    sqlx::query("ROLLBACK")
        .execute(&mut *holder)
        .await
        .expect("release the key");
    let first = first.await.expect("task").expect("leader");
    (results, first)
}

/// Batched `record_first` keeps first-writer-wins exact: queued calls go as one insert;
/// a key twice in one batch is inserted once (the later call gets `Existing` with the
/// earlier entry); a batch holding a key recorded before falls back to one call at a
/// time, which answers that key with its stored entry and records the rest.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn batched_records_keep_the_first_writer_exactly(pool: MySqlPool) {
    let ledger = MySqlPaymentLedger::new(pool.clone());
    let held = entry(1000, 4);
    assert_eq!(
        ledger
            .clone()
            .without_batching()
            .record_first(held.clone())
            .await
            .expect("held"),
        Recorded::New(held.clone())
    );

    // A batch whose insert succeeds, with one key twice.
    let (a, b, b2) = (entry(1, 2), entry(2, 4), entry(2, 5));
    let (results, leader) =
        record_behind_a_blocked_call(&pool, &ledger, 500, vec![a.clone(), b.clone(), b2.clone()])
            .await;
    assert_eq!(leader, Recorded::New(entry(500, 2)));
    assert_eq!(results[0], Recorded::New(a.clone()));
    // Which of the two calls with key 2 is first in the batch is the scheduler's choice.
    assert!(
        (results[1] == Recorded::New(b.clone()) && results[2] == Recorded::Existing(b.clone()))
            || (results[2] == Recorded::New(b2.clone())
                && results[1] == Recorded::Existing(b2.clone())),
        "{results:?}"
    );
    let stats = ledger.batching_stats();
    assert!(stats.batches >= 1, "no batch formed: {stats:?}");
    assert_eq!(stats.fallbacks, 0, "{stats:?}");

    // A batch holding a recorded key: one at a time, each answer exact.
    let (c, d) = (entry(3, 6), entry(4, 7));
    let (results, leader) = record_behind_a_blocked_call(
        &pool,
        &ledger,
        501,
        vec![c.clone(), entry(1000, 9), d.clone()],
    )
    .await;
    assert_eq!(leader, Recorded::New(entry(501, 2)));
    assert_eq!(
        results,
        vec![
            Recorded::New(c.clone()),
            Recorded::Existing(held.clone()),
            Recorded::New(d.clone())
        ]
    );
    assert!(
        ledger.batching_stats().fallbacks >= 1,
        "{:?}",
        ledger.batching_stats()
    );

    let stored = ledger.entries().await.expect("entries");
    let keys: Vec<u64> = stored.iter().map(|e| e.key.get()).collect();
    assert_eq!(keys, vec![1, 2, 3, 4, 500, 501, 1000]);
    assert!(stored.contains(&a) && stored.contains(&c) && stored.contains(&d));
    assert!(stored.contains(&held));
}

/// The batching lane is paced: calls made together go as one insert even when nothing
/// was running before them (none of them is recorded alone first), and a lone call is
/// still recorded, alone, once its wait is over.
#[sqlx::test(migrator = "order_mysql::MIGRATOR")]
async fn calls_made_together_go_as_one_batch_with_none_recorded_alone_first(pool: MySqlPool) {
    let ledger = MySqlPaymentLedger::new(pool);
    let calls: Vec<_> = (1..=8)
        .map(|key| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.record_first(entry(key, 3)).await })
        })
        .collect();
    for (key, call) in (1..=8).zip(calls) {
        assert_eq!(
            call.await.expect("task").expect("record_first"),
            Recorded::New(entry(key, 3))
        );
    }
    let stats = ledger.batching_stats();
    assert_eq!(
        (stats.batches, stats.entries, stats.solo, stats.fallbacks),
        (1, 8, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        ledger.record_first(entry(9, 3)).await.expect("lone call"),
        Recorded::New(entry(9, 3))
    );
    assert_eq!(ledger.batching_stats().solo, 1);
    assert_eq!(ledger.entries().await.expect("entries").len(), 9);
}
