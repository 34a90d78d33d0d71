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
