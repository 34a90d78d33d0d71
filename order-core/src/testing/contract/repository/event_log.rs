//! Checks of the durable event log: every status change appended with the owner's next
//! `seq` in the same atomic step, read back by `events_after`, bounded by `prune_events`.

use std::future::Future;
use std::pin::Pin;

use super::RepositoryFixture;
use super::helpers::*;
use crate::domain::{FailureReason, Order, StatusChange};
use crate::ports::{OrderEvent, OrderEventKind, PlaceOutcome, RepositoryError};

/// The kinds of a log slice, for readable assertions.
fn kinds(events: &[OrderEvent]) -> Vec<(u64, u64, &'static str)> {
    events
        .iter()
        .map(|e| (e.seq, e.order.get(), e.kind.name()))
        .collect()
}

/// Every status change of a user's orders is in the user's log, in commit order, with
/// seq 1, 2, 3, … and exactly the fields `OrderEvent::logged` gives; another user's log
/// counts on its own from 1.
pub async fn every_status_change_is_logged_with_consecutive_seq_per_user(
    f: &dyn RepositoryFixture,
) {
    let alice = f.add_user().await;
    let bob = f.add_user().await;
    let a = f.add_product(price("10.00"), 10).await;
    let o1 = placed(f, draft(alice, "a1", &[(a, 1)]), at(0)).await;
    let o2 = placed(f, draft(alice, "a2", &[(a, 2)]), at(1)).await;
    let b1 = placed(f, draft(bob, "b1", &[(a, 1)]), at(2)).await;
    let s1 = applied(
        f,
        &o1,
        StatusChange::Start {
            lease: lease(1, at(9_000)),
        },
        at(3),
    )
    .await;
    let p1 = applied(
        f,
        &s1,
        StatusChange::Pay {
            lease: lease(1, at(0)).token,
        },
        at(4),
    )
    .await;
    let s2 = applied(
        f,
        &o2,
        StatusChange::Start {
            lease: lease(2, at(9_000)),
        },
        at(5),
    )
    .await;
    let reason = FailureReason::new("Simulated payment decline.");
    let f2 = applied(
        f,
        &s2,
        StatusChange::Fail {
            lease: lease(2, at(0)).token,
            reason: reason.clone(),
        },
        at(6),
    )
    .await;
    let c1 = applied(f, &b1, StatusChange::Cancel, at(7)).await;

    let log = events_after(f, alice, 0, 100).await;
    let expected: Vec<OrderEvent> = [&o1, &o2, &s1, &p1, &s2, &f2]
        .iter()
        .zip(1..)
        .map(|(o, seq)| OrderEvent::logged(o, seq))
        .collect();
    assert_eq!(
        log.events, expected,
        "alice's log must hold her six changes in commit order, seq 1..=6"
    );
    assert_eq!(log.last_seq, 6);
    assert_eq!(
        log.events[5].kind,
        OrderEventKind::Failed(reason),
        "order.failed carries the failure reason"
    );
    assert_eq!(log.events[0].at, at(0), "order.created is at created_at");
    assert_eq!(
        log.events[3].at,
        at(4),
        "order.paid is at the change's time"
    );
    let bobs = events_after(f, bob, 0, 100).await;
    assert_eq!(
        bobs.events,
        vec![OrderEvent::logged(&b1, 1), OrderEvent::logged(&c1, 2)],
        "bob's log counts on its own from 1"
    );
    assert_eq!(
        bobs.events[1].at,
        at(7),
        "order.cancelled is at cancelled_at"
    );
}

/// `events_after` returns the events above `after`, ascending, at most `limit`, with
/// the user's latest seq; a user without events has an empty log and `last_seq` 0.
pub async fn events_after_pages_ascending_above_after(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let quiet = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    for n in 0..5u64 {
        placed(f, draft(user, &format!("k{n}"), &[(a, 1)]), at(n)).await;
    }
    let page = events_after(f, user, 1, 2).await;
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3],
        "after=1, limit=2 must give seq 2 and 3"
    );
    assert_eq!(
        page.last_seq, 5,
        "last_seq is the latest seq, not the page's"
    );
    let rest = events_after(f, user, 3, 100).await;
    assert_eq!(
        rest.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    let none = events_after(f, user, 5, 100).await;
    assert!(none.events.is_empty(), "nothing above the latest seq");
    assert_eq!(none.last_seq, 5);
    let beyond = events_after(f, user, 99, 100).await;
    assert!(
        beyond.events.is_empty(),
        "an `after` beyond the log reads nothing"
    );
    let empty = events_after(f, quiet, 0, 100).await;
    assert!(empty.events.is_empty());
    assert_eq!(empty.last_seq, 0, "a user without events has last_seq 0");
}

/// A replay, a refused draft, a lost race and a lease-only change log nothing.
pub async fn refusals_replays_and_lost_races_log_nothing(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 2).await;
    let o = placed(f, draft(user, "k", &[(a, 1)]), at(0)).await;
    match place_one(f, draft(user, "k", &[(a, 1)]), at(1)).await {
        PlaceOutcome::Replayed(_) => {}
        other => panic!("the same key and lines must replay, got {other:?}"),
    }
    match place_one(f, draft(user, "short", &[(a, 5)]), at(2)).await {
        PlaceOutcome::InsufficientStock { .. } => {}
        other => panic!("5 of 1 left must be refused, got {other:?}"),
    }
    let started = applied(
        f,
        &o,
        StatusChange::Start {
            lease: lease(1, at(100)),
        },
        at(3),
    )
    .await;
    lost(f, &started, StatusChange::Cancel, at(4)).await;
    lost(
        f,
        &started,
        StatusChange::Pay {
            lease: lease(9, at(0)).token,
        },
        at(5),
    )
    .await;
    applied(
        f,
        &started,
        StatusChange::Release {
            lease: lease(1, at(0)).token,
        },
        at(6),
    )
    .await;
    let log = events_after(f, user, 0, 100).await;
    assert_eq!(
        kinds(&log.events),
        vec![
            (1, o.id().get(), "order.created"),
            (2, o.id().get(), "order.processing")
        ],
        "only the placement and the Start are logged"
    );
}

/// `prune_events` deletes the events before its cutoff (at most `limit` per call) and
/// nothing else; a later change continues the user's seq where it was.
pub async fn prune_deletes_only_old_events_and_seq_continues(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let mut orders: Vec<Order> = Vec::new();
    for n in 0..4u64 {
        orders.push(placed(f, draft(user, &format!("k{n}"), &[(a, 1)]), at(n * 1_000)).await);
    }
    let deleted = match f.repository().prune_events(at(2_000), 1).await {
        Ok(n) => n,
        Err(e) => panic!("prune_events failed: {}", crate::app::ErrorChain(&e)),
    };
    assert_eq!(deleted, 1, "limit 1 deletes one event");
    let deleted = match f.repository().prune_events(at(2_000), 100).await {
        Ok(n) => n,
        Err(e) => panic!("prune_events failed: {}", crate::app::ErrorChain(&e)),
    };
    assert_eq!(
        deleted, 1,
        "only the events before the cutoff go (at(0), at(1000))"
    );
    let log = events_after(f, user, 0, 100).await;
    assert_eq!(
        log.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4],
        "the events at and after the cutoff stay"
    );
    let cancelled = applied(f, &orders[3], StatusChange::Cancel, at(5_000)).await;
    let log = events_after(f, user, 4, 100).await;
    assert_eq!(
        log.events,
        vec![OrderEvent::logged(&cancelled, 5)],
        "seq continues after pruning; it never restarts"
    );
}

/// Many changes of one user committed concurrently get distinct, consecutive seqs: the
/// log has exactly 1..=n, one event per change.
pub async fn concurrent_changes_of_one_user_get_consecutive_seqs(f: &dyn RepositoryFixture) {
    const N: usize = 24;
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 1_000).await;
    let repo = f.repository();
    type Placing<'a> =
        Pin<Box<dyn Future<Output = Result<Vec<PlaceOutcome>, RepositoryError>> + Send + 'a>>;
    let futures: Vec<Placing<'_>> = (0..N)
        .map(|n| {
            let repo = repo.clone();
            let d = draft(user, &format!("c{n}"), &[(a, 1)]);
            Box::pin(async move { repo.place(&[d], at(n as u64)).await }) as Placing<'_>
        })
        .collect();
    let mut seqs: Vec<u64> = Vec::new();
    for result in join_all(futures).await {
        match result.as_deref() {
            Ok([PlaceOutcome::Placed(_, event)]) => seqs.push(event.seq),
            other => panic!("each concurrent draft must be placed, got {other:?}"),
        }
    }
    seqs.sort_unstable();
    let expected: Vec<u64> = (1..=N as u64).collect();
    assert_eq!(
        seqs, expected,
        "concurrent placements must get seqs 1..={N}, no repeat"
    );
    let log = events_after(f, user, 0, 1_000).await;
    assert_eq!(
        log.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        expected,
        "the log must hold 1..={N} in order"
    );
}
