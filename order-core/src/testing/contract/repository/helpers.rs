//! Helpers of the repository checks: every failure names what was being done.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use super::RepositoryFixture;
use crate::domain::{
    IdempotencyKey, Lease, LeaseToken, Money, Order, OrderDraft, OrderId, OrderStatus, ProductId,
    Quantity, StatusChange, Timestamp, UserId,
};
use crate::ports::{EventPage, ListFilter, OrderEvent, PlaceOutcome, TransitionOutcome};

// ---------------------------------------------------------------------------------------
// Helpers: every failure names what was being done.
// ---------------------------------------------------------------------------------------

/// An instant `offset` ms after a fixed base that has a millisecond part, so that a store
/// rounding to seconds is caught.
pub(super) fn at(offset: u64) -> Timestamp {
    Timestamp::from_millis(1_750_000_000_123 + offset)
}

pub(super) fn price(text: &str) -> Money {
    match Money::parse(text) {
        Ok(m) => m,
        Err(e) => panic!("contract bug: bad price {text:?}: {e}"),
    }
}

pub(super) fn key(text: &str) -> IdempotencyKey {
    match IdempotencyKey::new(text) {
        Ok(k) => k,
        Err(e) => panic!("contract bug: bad key {text:?}: {e}"),
    }
}

pub(super) fn lease(token: u64, until: Timestamp) -> Lease {
    Lease {
        token: LeaseToken::from_raw(token),
        until,
    }
}

pub(super) fn draft(user: UserId, k: &str, items: &[(ProductId, u32)]) -> OrderDraft {
    let items = items
        .iter()
        .map(|(p, q)| match Quantity::new(i64::from(*q)) {
            Ok(q) => (*p, q),
            Err(e) => panic!("contract bug: bad quantity {q}: {e}"),
        });
    match OrderDraft::new(user, items, key(k)) {
        Ok(d) => d,
        Err(e) => panic!("contract bug: bad draft: {e}"),
    }
}

/// An id no store in a fresh fixture has handed out.
pub(super) fn missing_product(existing: ProductId) -> ProductId {
    match ProductId::new(existing.get() + 1_000_000) {
        Ok(p) => p,
        Err(e) => panic!("contract bug: {e}"),
    }
}

pub(super) fn missing_user(existing: UserId) -> UserId {
    match UserId::new(existing.get() + 1_000_000) {
        Ok(u) => u,
        Err(e) => panic!("contract bug: {e}"),
    }
}

pub(super) fn missing_order(existing: OrderId) -> OrderId {
    match OrderId::new(existing.get() + 1_000_000) {
        Ok(o) => o,
        Err(e) => panic!("contract bug: {e}"),
    }
}

pub(super) async fn place(
    f: &dyn RepositoryFixture,
    drafts: &[OrderDraft],
    now: Timestamp,
) -> Vec<PlaceOutcome> {
    let outcomes = match f.repository().place(drafts, now).await {
        Ok(o) => o,
        Err(e) => panic!(
            "place of {} draft(s) failed: {}",
            drafts.len(),
            crate::app::ErrorChain(&e)
        ),
    };
    assert_eq!(
        outcomes.len(),
        drafts.len(),
        "place must return exactly one outcome per draft: {outcomes:?}"
    );
    outcomes
}

pub(super) async fn place_one(
    f: &dyn RepositoryFixture,
    d: OrderDraft,
    now: Timestamp,
) -> PlaceOutcome {
    let mut outcomes = place(f, &[d], now).await;
    match outcomes.pop() {
        Some(o) => o,
        None => panic!("place returned no outcome"),
    }
}

/// Places `d`, which must succeed, and checks the order against `Order::place`.
pub(super) async fn placed(f: &dyn RepositoryFixture, d: OrderDraft, now: Timestamp) -> Order {
    match place_one(f, d.clone(), now).await {
        PlaceOutcome::Placed(order, event) => {
            assert_logged(f, &order, Some(&event), "placing").await;
            assert_eq!(order.user(), d.user(), "placed order has the wrong user");
            assert_eq!(order.idempotency_key(), d.idempotency_key());
            assert_eq!(order.fingerprint(), d.fingerprint(), "fingerprint not kept");
            assert_eq!(
                order.status(),
                OrderStatus::Pending,
                "a new order is Pending"
            );
            assert_eq!(
                order.created_at(),
                now,
                "created_at must be `now`, to the ms"
            );
            assert_eq!(
                order.updated_at(),
                now,
                "updated_at must be `now`, to the ms"
            );
            assert_eq!(order.cancelled_at(), None);
            assert_eq!(order.lease(), None, "a new order holds no lease");
            assert_eq!(order.attempts(), 0);
            assert_eq!(order.failure_reason(), None);
            let ordered: Vec<(ProductId, Quantity)> = order
                .lines()
                .iter()
                .map(|l| (l.product, l.quantity))
                .collect();
            assert_eq!(ordered, d.items(), "lines must be the draft's merged items");
            order
        }
        other => panic!(
            "placing {:?} must succeed, got {other:?}",
            d.idempotency_key()
        ),
    }
}

/// Checks that `event` (what a place or transition returned) is
/// [`OrderEvent::logged`] of `order` and stands in the owner's log under its `seq` as
/// the owner's latest event. `None` (a lease-only change) checks nothing.
pub(super) async fn assert_logged(
    f: &dyn RepositoryFixture,
    order: &Order,
    event: Option<&OrderEvent>,
    what: &str,
) {
    let Some(event) = event else { return };
    assert!(event.seq >= 1, "{what}: seq starts at 1, got {}", event.seq);
    assert_eq!(
        event,
        &OrderEvent::logged(order, event.seq),
        "{what}: the returned event must be OrderEvent::logged of the order"
    );
    let page = events_after(f, order.user(), event.seq - 1, 10).await;
    assert_eq!(
        page.events,
        vec![event.clone()],
        "{what}: the event must be in the owner's log under its seq, as the latest"
    );
    assert_eq!(
        page.last_seq, event.seq,
        "{what}: last_seq must be the new event's"
    );
}

pub(super) async fn events_after(
    f: &dyn RepositoryFixture,
    user: UserId,
    after: u64,
    limit: u32,
) -> EventPage {
    match f.repository().events_after(user, after, limit).await {
        Ok(page) => page,
        Err(e) => panic!(
            "events_after({user}, {after}, {limit}) failed: {}",
            crate::app::ErrorChain(&e)
        ),
    }
}

pub(super) async fn get(f: &dyn RepositoryFixture, id: OrderId) -> Option<Order> {
    match f.repository().get(id).await {
        Ok(o) => o,
        Err(e) => panic!("get({id}) failed: {}", crate::app::ErrorChain(&e)),
    }
}

pub(super) async fn transition(
    f: &dyn RepositoryFixture,
    id: OrderId,
    change: &StatusChange,
    now: Timestamp,
) -> TransitionOutcome {
    match f.repository().transition(id, change.clone(), now).await {
        Ok(o) => o,
        Err(e) => panic!(
            "transition({id}, {change:?}) failed: {}",
            crate::app::ErrorChain(&e)
        ),
    }
}

/// Applies `change` and checks the result is exactly what [`Order::apply`] makes of
/// `order`, both as returned and as stored. Returns the new order.
pub(super) async fn applied(
    f: &dyn RepositoryFixture,
    order: &Order,
    change: StatusChange,
    now: Timestamp,
) -> Order {
    let mut expected = order.clone();
    if let Err(e) = expected.apply(&change, now) {
        panic!("contract bug: {change:?} is not legal on {order:?}: {e}");
    }
    match transition(f, order.id(), &change, now).await {
        TransitionOutcome::Applied(actual, event) => {
            assert_eq!(
                actual, expected,
                "{change:?} must return the order exactly as Order::apply leaves it"
            );
            let moves_status = change.from() != change.to();
            match (moves_status, &event) {
                (true, Some(_)) | (false, None) => {}
                (true, None) => panic!("{change:?} changes the status: it must log its event"),
                (false, Some(e)) => {
                    panic!("{change:?} moves only the lease: it must log no event, logged {e:?}")
                }
            }
            assert_logged(f, &actual, event.as_ref(), &format!("{change:?}")).await;
            assert_eq!(
                get(f, order.id()).await.as_ref(),
                Some(&expected),
                "after {change:?} the stored order must be what Order::apply leaves"
            );
            actual
        }
        other => panic!(
            "{change:?} on a {} order must apply, got {other:?}",
            order.status()
        ),
    }
}

/// Checks that `change` loses the race on `order` (as currently stored) and writes
/// nothing.
pub(super) async fn lost(
    f: &dyn RepositoryFixture,
    order: &Order,
    change: StatusChange,
    now: Timestamp,
) {
    let mut model = order.clone();
    assert!(
        model.apply(&change, now).is_err(),
        "contract bug: {change:?} is legal on {order:?}"
    );
    match transition(f, order.id(), &change, now).await {
        TransitionOutcome::LostRace(current) => assert_eq!(
            &current,
            order,
            "a lost race ({change:?} on a {} order) must carry the order as it is",
            order.status()
        ),
        other => panic!(
            "{change:?} on a {} order must be LostRace, got {other:?}",
            order.status()
        ),
    }
    assert_eq!(
        get(f, order.id()).await.as_ref(),
        Some(order),
        "a lost race ({change:?}) must write nothing"
    );
}

pub(super) async fn assert_stock(
    f: &dyn RepositoryFixture,
    product: ProductId,
    expected: u64,
    why: &str,
) {
    let actual = f.stock(product).await;
    assert_eq!(actual, expected, "stock of product {product}: {why}");
}

pub(super) async fn find_by_key(f: &dyn RepositoryFixture, user: UserId, k: &str) -> Option<Order> {
    match f.repository().find_by_key(user, &key(k)).await {
        Ok(o) => o,
        Err(e) => panic!(
            "find_by_key({user}, {k:?}) failed: {}",
            crate::app::ErrorChain(&e)
        ),
    }
}

pub(super) async fn list(
    f: &dyn RepositoryFixture,
    user: UserId,
    status: Option<OrderStatus>,
    page: u32,
    per_page: u32,
) -> (Vec<OrderId>, u64) {
    let filter = ListFilter {
        status,
        page,
        per_page,
    };
    match f.repository().list_by_user(user, filter).await {
        Ok(p) => {
            for o in &p.orders {
                assert_eq!(o.user(), user, "list_by_user({user}) returned {o:?}");
                assert_eq!(
                    get(f, o.id()).await.as_ref(),
                    Some(o),
                    "listed orders must be whole (lines included) and current"
                );
            }
            (p.orders.iter().map(Order::id).collect(), p.total)
        }
        Err(e) => panic!(
            "list_by_user({user}, {filter:?}) failed: {}",
            crate::app::ErrorChain(&e)
        ),
    }
}

/// A Pending order (placed at `at(0)`) of `units` of `product`, started at `at(10)` with
/// lease `token` until `at(100)`.
pub(super) async fn processing(
    f: &dyn RepositoryFixture,
    user: UserId,
    k: &str,
    product: ProductId,
    units: u32,
    token: u64,
) -> Order {
    let order = placed(f, draft(user, k, &[(product, units)]), at(0)).await;
    applied(
        f,
        &order,
        StatusChange::Start {
            lease: lease(token, at(100)),
        },
        at(10),
    )
    .await
}

/// Polls every future until all are ready (the contract suites have no runtime of their
/// own: this interleaves the calls on the caller's task, so an adapter doing real I/O
/// runs them concurrently).
pub(super) async fn join_all<T>(
    mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>,
) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *slot = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
