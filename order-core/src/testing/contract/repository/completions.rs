//! Checks of `transition_from`: a completion of the order the caller holds behaves
//! exactly as `transition` — alone, from a stale holder, and many at once (where an
//! adapter may batch them and skip reading the orders back).

use std::future::Future;
use std::pin::Pin;

use super::RepositoryFixture;
use super::helpers::*;
use crate::domain::{FailureReason, LeaseToken, Order, OrderStatus, StatusChange, Timestamp};
use crate::ports::{RepositoryError, TransitionOutcome};

async fn transition_from(
    f: &dyn RepositoryFixture,
    current: &Order,
    change: &StatusChange,
    now: Timestamp,
) -> TransitionOutcome {
    match f
        .repository()
        .transition_from(current, change.clone(), now)
        .await
    {
        Ok(o) => o,
        Err(e) => panic!(
            "transition_from({}, {change:?}) failed: {}",
            current.id(),
            crate::app::ErrorChain(&e)
        ),
    }
}

/// Checks that `outcome` applied `change` to `held` exactly as `Order::apply` does,
/// as returned, as stored, and as logged.
async fn assert_applied_from(
    f: &dyn RepositoryFixture,
    held: &Order,
    change: &StatusChange,
    now: Timestamp,
    outcome: TransitionOutcome,
) -> Order {
    let mut expected = held.clone();
    if let Err(e) = expected.apply(change, now) {
        panic!("contract bug: {change:?} is not legal on {held:?}: {e}");
    }
    let TransitionOutcome::Applied(actual, event) = outcome else {
        panic!(
            "{change:?} from the holder of order {} must apply, got {outcome:?}",
            held.id()
        );
    };
    assert_eq!(
        actual, expected,
        "{change:?} via transition_from must return the order exactly as Order::apply leaves it"
    );
    assert_eq!(
        get(f, held.id()).await.as_ref(),
        Some(&expected),
        "after {change:?} via transition_from the stored order must be what Order::apply leaves"
    );
    let Some(event) = event else {
        panic!("{change:?} changes the status: it must log its event");
    };
    assert_eq!(
        event,
        crate::ports::OrderEvent::logged(&actual, event.seq),
        "the returned event must be OrderEvent::logged of the order"
    );
    actual
}

/// Pay and Fail given the holder's order apply exactly as `transition` would: the
/// result as `Order::apply` leaves it, stored, logged, Fail's stock back once; a Cancel
/// given a Pending order too; a change the order does not allow loses and writes
/// nothing.
pub async fn transition_from_completes_exactly_as_transition(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("4.00"), 10).await;
    let paying = processing(f, user, "pay", a, 2, 11).await;
    let pay = StatusChange::Pay {
        lease: LeaseToken::from_raw(11),
    };
    let outcome = transition_from(f, &paying, &pay, at(20)).await;
    let paid = assert_applied_from(f, &paying, &pay, at(20), outcome).await;
    assert_eq!(paid.status(), OrderStatus::Paid);
    assert_stock(f, a, 8, "paying keeps the reservation").await;

    let failing = processing(f, user, "fail", a, 3, 12).await;
    assert_stock(f, a, 5, "both orders hold their units").await;
    let fail = StatusChange::Fail {
        lease: LeaseToken::from_raw(12),
        reason: FailureReason::new("declined"),
    };
    let outcome = transition_from(f, &failing, &fail, at(21)).await;
    assert_applied_from(f, &failing, &fail, at(21), outcome).await;
    assert_stock(f, a, 8, "a failed order's units come back").await;
    // Once terminal, the same completion loses and returns nothing more.
    let outcome = transition_from(f, &failing, &fail, at(22)).await;
    assert!(
        matches!(&outcome, TransitionOutcome::LostRace(o) if o.status() == OrderStatus::Failed),
        "a second Fail must lose to the first, got {outcome:?}"
    );
    assert_stock(f, a, 8, "stock is returned exactly once").await;

    let pending = placed(f, draft(user, "cancel", &[(a, 1)]), at(0)).await;
    let outcome = transition_from(f, &pending, &StatusChange::Cancel, at(23)).await;
    assert_applied_from(f, &pending, &StatusChange::Cancel, at(23), outcome).await;
    assert_stock(f, a, 8, "a cancelled order's unit comes back").await;
}

/// A holder whose lease was taken over completes nothing: its Pay (with the order it
/// still holds) loses and reports the order as stored; the new holder's Fail applies
/// and returns the stock once.
pub async fn a_completion_from_a_stale_holder_loses_to_the_new_one(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("4.00"), 10).await;
    let old = processing(f, user, "k", a, 4, 1).await;
    let taken = applied(
        f,
        &old,
        StatusChange::TakeOver {
            expired: LeaseToken::from_raw(1),
            lease: lease(2, at(500)),
        },
        at(100),
    )
    .await;
    let stale = StatusChange::Pay {
        lease: LeaseToken::from_raw(1),
    };
    match transition_from(f, &old, &stale, at(110)).await {
        TransitionOutcome::LostRace(current) => assert_eq!(
            current, taken,
            "a fenced completion must report the order as stored, not as its caller held it"
        ),
        other => {
            panic!("a completion by a holder whose lease was taken over must lose, got {other:?}")
        }
    }
    assert_eq!(
        get(f, old.id()).await.as_ref(),
        Some(&taken),
        "a lost completion writes nothing"
    );
    assert_stock(f, a, 6, "nothing returned by a lost completion").await;
    let fail = StatusChange::Fail {
        lease: LeaseToken::from_raw(2),
        reason: FailureReason::new("declined"),
    };
    let outcome = transition_from(f, &taken, &fail, at(120)).await;
    assert_applied_from(f, &taken, &fail, at(120), outcome).await;
    assert_stock(f, a, 10, "the new holder's Fail returns the units once").await;
}

/// Many Starts, Pays, Fails and fenced completions of several users, all at once: each
/// gets its own exact outcome (an adapter batching them must still tell the fenced ones
/// apart), the failed orders' units come back once, and every user's log runs 1..=n.
pub async fn concurrent_transitions_each_get_their_own_exact_outcome(f: &dyn RepositoryFixture) {
    const ORDERS: usize = 24;
    let users = [f.add_user().await, f.add_user().await, f.add_user().await];
    let a = f.add_product(price("2.50"), 1_000).await;
    let b = f.add_product(price("1.00"), 1_000).await;
    // Order i: Start (i % 4 == 0), Pay (1), Fail (2), a Pay by a holder whose lease was
    // taken over (3).
    let mut held = Vec::new();
    for i in 0..ORDERS {
        let user = users[i % users.len()];
        let units = 1 + (i % 3) as u32;
        let order = placed(
            f,
            draft(user, &format!("o{i}"), &[(a, units), (b, 1)]),
            at(0),
        )
        .await;
        let order = if i % 4 == 0 {
            order
        } else {
            let token = 100 + i as u64;
            applied(
                f,
                &order,
                StatusChange::Start {
                    lease: lease(token, at(50)),
                },
                at(10),
            )
            .await
        };
        let order = if i % 4 == 3 {
            let stale = order.clone();
            let taken = applied(
                f,
                &order,
                StatusChange::TakeOver {
                    expired: LeaseToken::from_raw(100 + i as u64),
                    lease: lease(900 + i as u64, at(5_000)),
                },
                at(60),
            )
            .await;
            (stale, Some(taken))
        } else {
            (order, None)
        };
        held.push(order);
    }
    let stock_before = (f.stock(a).await, f.stock(b).await);
    let change_of = |i: usize| match i % 4 {
        0 => StatusChange::Start {
            lease: lease(500 + i as u64, at(10_000)),
        },
        1 | 3 => StatusChange::Pay {
            lease: LeaseToken::from_raw(100 + i as u64),
        },
        _ => StatusChange::Fail {
            lease: LeaseToken::from_raw(100 + i as u64),
            reason: FailureReason::new(format!("declined {i}")),
        },
    };
    let repo = f.repository();
    type Changing<'a> =
        Pin<Box<dyn Future<Output = Result<TransitionOutcome, RepositoryError>> + Send + 'a>>;
    let futures: Vec<Changing<'_>> = held
        .iter()
        .enumerate()
        .map(|(i, (order, _))| {
            let repo = repo.clone();
            let order = order.clone();
            let change = change_of(i);
            let now = at(1_000 + i as u64);
            Box::pin(async move {
                if i % 4 == 0 {
                    repo.transition(order.id(), change, now).await
                } else {
                    repo.transition_from(&order, change, now).await
                }
            }) as Changing<'_>
        })
        .collect();
    let outcomes = join_all(futures).await;
    let mut returned = (0u64, 0u64);
    for (i, ((order, taken), outcome)) in held.iter().zip(outcomes).enumerate() {
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => panic!("transition {i} failed: {}", crate::app::ErrorChain(&e)),
        };
        let change = change_of(i);
        let now = at(1_000 + i as u64);
        match taken {
            Some(taken) => match outcome {
                TransitionOutcome::LostRace(current) => assert_eq!(
                    &current, taken,
                    "order {i}: a fenced completion among concurrent ones must lose and report the stored order"
                ),
                other => panic!(
                    "order {i}: a completion whose lease was taken over must lose, got {other:?}"
                ),
            },
            None => {
                assert_applied_from(f, order, &change, now, outcome).await;
            }
        }
        if i % 4 == 2 {
            returned.0 += 1 + (i % 3) as u64;
            returned.1 += 1;
        }
    }
    assert_eq!(
        (f.stock(a).await, f.stock(b).await),
        (stock_before.0 + returned.0, stock_before.1 + returned.1),
        "exactly the failed orders' units come back, once"
    );
    for user in users {
        let log = events_after(f, user, 0, 1_000).await;
        let seqs: Vec<u64> = log.events.iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(
            seqs, expected,
            "user {user}: the log must run 1..=n without a gap or repeat"
        );
        assert_eq!(log.last_seq, seqs.len() as u64);
    }
}
