//! Checks of the delivery protocol's store side: lease release, the reconciler's
//! claims, and the stock limit.

use std::time::Duration;

use super::RepositoryFixture;
use super::helpers::*;
use crate::domain::{
    FailureReason, LeaseToken, MAX_STOCK, OrderId, OrderStatus, RestockError, StatusChange,
    Timestamp,
};
use crate::ports::StrandedQuery;

// ---------------------------------------------------------------------------------------
// Delivery protocol: lease release and the reconciler's claims
// ---------------------------------------------------------------------------------------

/// Release gives the holder's lease back at once (the order stays Processing, its lease
/// now expired, so a take-over with that token succeeds at the same instant); a foreign
/// token, or a Pending order, loses.
pub async fn release_expires_the_holders_lease_at_once(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("4.00"), 3).await;
    let order = processing(f, user, "k", a, 1, 7).await;
    lost(
        f,
        &order,
        StatusChange::Release {
            lease: LeaseToken::from_raw(8),
        },
        at(20),
    )
    .await;
    let released = applied(
        f,
        &order,
        StatusChange::Release {
            lease: LeaseToken::from_raw(7),
        },
        at(20),
    )
    .await;
    assert_eq!(released.status(), OrderStatus::Processing);
    assert_eq!(
        released.lease(),
        Some(lease(7, at(20))),
        "a released lease keeps its token and expires at the release"
    );
    assert_stock(f, a, 2, "a release keeps the reservation").await;
    let next = lease(9, at(400));
    let taken = applied(
        f,
        &released,
        StatusChange::TakeOver {
            expired: LeaseToken::from_raw(7),
            lease: next,
        },
        at(20),
    )
    .await;
    assert_eq!(taken.lease(), Some(next), "the retry takes over at once");
    let pending = placed(f, draft(user, "p", &[(a, 1)]), at(0)).await;
    lost(
        f,
        &pending,
        StatusChange::Release {
            lease: LeaseToken::from_raw(7),
        },
        at(30),
    )
    .await;
}

pub(super) async fn claim(
    f: &dyn RepositoryFixture,
    stale_after: u64,
    limit: u32,
    now: Timestamp,
) -> Vec<OrderId> {
    let query = StrandedQuery {
        stale_after: Duration::from_millis(stale_after),
        limit,
    };
    match f.repository().claim_stranded(query, now).await {
        Ok(ids) => ids,
        Err(e) => panic!(
            "claim_stranded at {now} failed: {}",
            crate::app::ErrorChain(&e)
        ),
    }
}

/// A Pending order is claimed once it has gone `stale_after` without a hand-out
/// (placement counts as one), oldest first, at most `limit` per call; a claim counts as
/// a hand-out, so the same order comes back only after another `stale_after`.
pub async fn claim_stranded_hands_each_order_out_once_per_stale_after(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let first = placed(f, draft(user, "a", &[(a, 1)]), at(0)).await;
    let second = placed(f, draft(user, "b", &[(a, 1)]), at(100)).await;
    let third = placed(f, draft(user, "c", &[(a, 1)]), at(200)).await;
    assert_eq!(
        claim(f, 1_000, 10, at(999)).await,
        Vec::<OrderId>::new(),
        "nothing is stranded before stale_after has passed since placement"
    );
    assert_eq!(
        claim(f, 1_000, 2, at(1_150)).await,
        vec![first.id(), second.id()],
        "orders placed at or before now - stale_after are claimed, oldest first, up to the limit"
    );
    assert_eq!(
        claim(f, 1_000, 10, at(1_200)).await,
        vec![third.id()],
        "claimed orders are not claimed again before another stale_after"
    );
    assert_eq!(
        claim(f, 1_000, 10, at(2_149)).await,
        Vec::<OrderId>::new(),
        "a claim counts as a hand-out"
    );
    assert_eq!(
        claim(f, 1_000, 10, at(2_150)).await,
        vec![first.id(), second.id()],
        "still Pending after another stale_after: claimed again"
    );
    for o in [&first, &second, &third] {
        assert_eq!(
            get(f, o.id()).await.as_ref(),
            Some(o),
            "claiming must change neither status, lease nor timestamps"
        );
    }
}

/// Processing orders are claimed only once their lease has expired; terminal orders
/// never.
pub async fn claim_stranded_skips_live_leases_and_terminal_orders(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    // Leased until at(100) by `processing`.
    let leased = processing(f, user, "leased", a, 1, 1).await;
    let paid = processing(f, user, "paid", a, 1, 2).await;
    applied(
        f,
        &paid,
        StatusChange::Pay {
            lease: LeaseToken::from_raw(2),
        },
        at(20),
    )
    .await;
    let cancelled = placed(f, draft(user, "cancelled", &[(a, 1)]), at(0)).await;
    applied(f, &cancelled, StatusChange::Cancel, at(5)).await;
    let failed = processing(f, user, "failed", a, 1, 3).await;
    applied(
        f,
        &failed,
        StatusChange::Fail {
            lease: LeaseToken::from_raw(3),
            reason: FailureReason::new("declined"),
        },
        at(30),
    )
    .await;
    assert_eq!(
        claim(f, 50, 10, at(99)).await,
        Vec::<OrderId>::new(),
        "a Processing order with a live lease is never stranded, nor is a terminal one"
    );
    assert_eq!(
        claim(f, 50, 10, at(100)).await,
        vec![leased.id()],
        "a Processing order whose lease expired at or before now is stranded"
    );
}

/// Stock plus reservations may reach [`MAX_STOCK`] and never pass it: a restock beyond
/// is refused with `AboveMaximum` and changes nothing, reserved units count, and
/// returning a reservation at the limit works.
pub async fn restock_is_bounded_by_max_stock(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let order = placed(f, draft(user, "k", &[(a, 4)]), at(0)).await;
    assert_stock(f, a, 6, "placing reserves 4").await;
    assert_eq!(
        f.restock(a, MAX_STOCK - 9).await,
        Err(RestockError::AboveMaximum {
            product: a,
            max: MAX_STOCK
        }),
        "stock 6 + reserved 4 + restock must stay within MAX_STOCK"
    );
    assert_stock(f, a, 6, "a refused restock changes nothing").await;
    assert_eq!(
        f.restock(a, MAX_STOCK - 10).await,
        Ok(()),
        "a restock up to exactly MAX_STOCK (stock + reserved) is accepted"
    );
    assert_stock(f, a, MAX_STOCK - 4, "restocked to the limit").await;
    applied(f, &order, StatusChange::Cancel, at(10)).await;
    assert_stock(
        f,
        a,
        MAX_STOCK,
        "cancelling at the limit returns the reservation",
    )
    .await;
    let missing = missing_product(a);
    assert_eq!(
        f.restock(missing, 1).await,
        Err(RestockError::UnknownProduct(missing)),
        "restocking a missing product is refused"
    );
}
