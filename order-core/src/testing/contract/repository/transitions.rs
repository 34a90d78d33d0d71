//! Checks of `transition`: the compare-and-set state machine and its fences.

use super::RepositoryFixture;
use super::helpers::*;
use crate::domain::{FailureReason, LeaseToken, OrderStatus, StatusChange};
use crate::ports::TransitionOutcome;

// ---------------------------------------------------------------------------------------
// transition
// ---------------------------------------------------------------------------------------

/// Start takes a Pending order to Processing with the given lease, counts an attempt
/// and stamps `updated_at`; a second Start (another worker) loses the race.
pub async fn start_moves_pending_to_processing_with_a_lease(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("4.00"), 3).await;
    let order = placed(f, draft(user, "k", &[(a, 1)]), at(0)).await;
    let first = lease(7, at(30_000));
    let started = applied(f, &order, StatusChange::Start { lease: first }, at(10)).await;
    assert_eq!(started.status(), OrderStatus::Processing);
    assert_eq!(
        started.lease(),
        Some(first),
        "the lease must be stored exactly"
    );
    assert_eq!(started.attempts(), 1);
    lost(
        f,
        &started,
        StatusChange::Start {
            lease: lease(8, at(30_001)),
        },
        at(11),
    )
    .await;
    assert_stock(f, a, 2, "starting keeps the reservation").await;
}

/// TakeOver replaces the lease only when the caller names the current token and the
/// lease has expired (its `until` is not after now); a live lease, a wrong token, or a
/// non-Processing order lose the race.
pub async fn take_over_only_after_the_lease_expired(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("4.00"), 3).await;
    let order = processing(f, user, "k", a, 1, 1).await;
    let second = lease(2, at(300));
    let take_over = StatusChange::TakeOver {
        expired: LeaseToken::from_raw(1),
        lease: second,
    };
    lost(f, &order, take_over.clone(), at(99)).await;
    let wrong = StatusChange::TakeOver {
        expired: LeaseToken::from_raw(999),
        lease: second,
    };
    lost(f, &order, wrong, at(200)).await;
    let taken = applied(f, &order, take_over.clone(), at(100)).await;
    assert_eq!(taken.lease(), Some(second));
    assert_eq!(taken.attempts(), 2, "a take-over counts an attempt");
    // The first lease is gone for good, even after the second expires.
    lost(f, &taken, take_over, at(1_000)).await;
    let pending = placed(f, draft(user, "p", &[(a, 1)]), at(0)).await;
    lost(
        f,
        &pending,
        StatusChange::TakeOver {
            expired: LeaseToken::from_raw(1),
            lease: second,
        },
        at(1_000),
    )
    .await;
}

/// Pay completes a Processing order only for the lease holder; the stock stays reserved.
pub async fn pay_is_fenced_by_the_lease(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("4.00"), 3).await;
    let order = processing(f, user, "k", a, 2, 5).await;
    lost(
        f,
        &order,
        StatusChange::Pay {
            lease: LeaseToken::from_raw(6),
        },
        at(20),
    )
    .await;
    let pay = StatusChange::Pay {
        lease: LeaseToken::from_raw(5),
    };
    let paid = applied(f, &order, pay.clone(), at(21)).await;
    assert_eq!(paid.status(), OrderStatus::Paid);
    assert_eq!(paid.lease(), None, "a paid order holds no lease");
    assert_stock(f, a, 1, "paying keeps the reservation").await;
    lost(f, &paid, pay, at(22)).await;
    let pending = placed(f, draft(user, "p", &[(a, 1)]), at(0)).await;
    lost(
        f,
        &pending,
        StatusChange::Pay {
            lease: LeaseToken::from_raw(5),
        },
        at(23),
    )
    .await;
}

/// Fail completes a Processing order only for the lease holder, stores the reason, and
/// returns the stock in the same step, exactly once.
pub async fn fail_is_fenced_by_the_lease_and_returns_stock_once(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("4.00"), 5).await;
    let order = processing(f, user, "k", a, 3, 9).await;
    assert_stock(f, a, 2, "3 reserved").await;
    let reason = FailureReason::new("Simulated payment decline.");
    lost(
        f,
        &order,
        StatusChange::Fail {
            lease: LeaseToken::from_raw(10),
            reason: reason.clone(),
        },
        at(20),
    )
    .await;
    assert_stock(f, a, 2, "a fenced-off Fail must not return stock").await;
    let fail = StatusChange::Fail {
        lease: LeaseToken::from_raw(9),
        reason: reason.clone(),
    };
    let failed = applied(f, &order, fail.clone(), at(21)).await;
    assert_eq!(failed.status(), OrderStatus::Failed);
    assert_eq!(failed.failure_reason(), Some(&reason));
    assert_stock(f, a, 5, "Fail must return the stock").await;
    lost(f, &failed, fail, at(22)).await;
    assert_stock(f, a, 5, "a second Fail must not return the stock again").await;
    let pending = placed(f, draft(user, "p", &[(a, 1)]), at(0)).await;
    lost(
        f,
        &pending,
        StatusChange::Fail {
            lease: LeaseToken::from_raw(9),
            reason,
        },
        at(23),
    )
    .await;
    assert_stock(f, a, 4, "Fail on a Pending order must not return stock").await;
}

/// Cancel takes a Pending order to Cancelled, stamps `cancelled_at`, and returns every
/// line's stock in the same step, exactly once.
pub async fn cancel_returns_stock_exactly_once(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let b = f.add_product(price("2.00"), 4).await;
    let order = placed(f, draft(user, "k", &[(a, 3), (b, 2)]), at(0)).await;
    assert_stock(f, a, 7, "3 reserved").await;
    let cancelled = applied(f, &order, StatusChange::Cancel, at(50)).await;
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    assert_eq!(cancelled.cancelled_at(), Some(at(50)));
    assert_stock(f, a, 10, "Cancel must return every line").await;
    assert_stock(f, b, 4, "Cancel must return every line").await;
    lost(f, &cancelled, StatusChange::Cancel, at(51)).await;
    assert_stock(f, a, 10, "a second Cancel must not return the stock again").await;
    assert_stock(f, b, 4, "a second Cancel must not return the stock again").await;
}

/// Cancel only applies to Pending orders: a Processing order (a worker is charging it)
/// loses the race and keeps its stock.
pub async fn cancel_only_from_pending(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let order = processing(f, user, "k", a, 4, 3).await;
    lost(f, &order, StatusChange::Cancel, at(20)).await;
    assert_stock(f, a, 6, "a refused Cancel must not return stock").await;
}

/// Paid, Failed and Cancelled are terminal: every change loses the race and nothing —
/// order or stock — moves.
pub async fn terminal_statuses_are_absorbing(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let paid = {
        let o = processing(f, user, "paid", a, 1, 1).await;
        applied(
            f,
            &o,
            StatusChange::Pay {
                lease: LeaseToken::from_raw(1),
            },
            at(20),
        )
        .await
    };
    let failed = {
        let o = processing(f, user, "failed", a, 2, 2).await;
        applied(
            f,
            &o,
            StatusChange::Fail {
                lease: LeaseToken::from_raw(2),
                reason: FailureReason::new("declined"),
            },
            at(20),
        )
        .await
    };
    let cancelled = {
        let o = placed(f, draft(user, "cancelled", &[(a, 3)]), at(0)).await;
        applied(f, &o, StatusChange::Cancel, at(20)).await
    };
    assert_stock(f, a, 9, "only the paid order holds stock").await;
    // Every change, with each token that ever held a lease here.
    let changes = |t: u64| {
        let tok = LeaseToken::from_raw(t);
        [
            StatusChange::Start {
                lease: lease(t + 10, at(10_000)),
            },
            StatusChange::TakeOver {
                expired: tok,
                lease: lease(t + 20, at(10_000)),
            },
            StatusChange::Pay { lease: tok },
            StatusChange::Fail {
                lease: tok,
                reason: FailureReason::new("late"),
            },
            StatusChange::Cancel,
        ]
    };
    for order in [&paid, &failed, &cancelled] {
        for change in [1, 2].into_iter().flat_map(changes) {
            lost(f, order, change, at(5_000)).await;
        }
    }
    assert_stock(f, a, 9, "changes on terminal orders must not move stock").await;
}

/// A transition of an id that names no order is `NotFound`, whatever the change.
pub async fn unknown_order_is_not_found(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let order = placed(f, draft(user, "k", &[(a, 1)]), at(0)).await;
    let ghost = missing_order(order.id());
    let tok = LeaseToken::from_raw(1);
    for change in [
        StatusChange::Start {
            lease: lease(1, at(100)),
        },
        StatusChange::TakeOver {
            expired: tok,
            lease: lease(2, at(100)),
        },
        StatusChange::Pay { lease: tok },
        StatusChange::Fail {
            lease: tok,
            reason: FailureReason::new("x"),
        },
        StatusChange::Cancel,
    ] {
        let outcome = transition(f, ghost, &change, at(1)).await;
        assert_eq!(
            outcome,
            TransitionOutcome::NotFound,
            "{change:?} on a missing order"
        );
    }
    assert_eq!(get(f, ghost).await, None, "get of a missing order");
    assert_stock(f, a, 9, "nothing moves").await;
}
