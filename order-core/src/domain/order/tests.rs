//! Unit tests of the order state machine and the `Order` entity.

use super::*;
use crate::domain::DraftError;

fn pid(n: u64) -> ProductId {
    ProductId::new(n).unwrap()
}
fn qty(n: i64) -> Quantity {
    Quantity::new(n).unwrap()
}

fn order() -> Order {
    let draft = OrderDraft::new(
        UserId::new(1).unwrap(),
        [(pid(2), qty(2)), (pid(4), qty(1))],
        IdempotencyKey::new("k").unwrap(),
    )
    .unwrap();
    let prices = [
        Money::parse("29.99").unwrap(),
        Money::parse("149.99").unwrap(),
    ];
    Order::place(
        OrderId::new(9).unwrap(),
        &draft,
        &prices,
        Timestamp::from_millis(5),
    )
    .unwrap()
}

#[test]
fn only_the_four_legal_transitions_exist() {
    let legal: Vec<_> = OrderStatus::ALL
        .iter()
        .flat_map(|a| OrderStatus::ALL.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| a.can_transition_to(*b))
        .collect();
    assert_eq!(
        legal,
        vec![
            (OrderStatus::Pending, OrderStatus::Processing),
            (OrderStatus::Pending, OrderStatus::Cancelled),
            (OrderStatus::Processing, OrderStatus::Paid),
            (OrderStatus::Processing, OrderStatus::Failed),
        ]
    );
    for s in OrderStatus::ALL {
        assert_eq!(
            s.is_terminal(),
            OrderStatus::ALL.iter().all(|n| !s.can_transition_to(*n))
        );
        assert_eq!(OrderStatus::parse(&s.as_str().to_lowercase()), Ok(s));
    }
}

#[test]
fn placing_computes_the_exact_total() {
    assert_eq!(order().total().to_string(), "209.97");
}

#[test]
fn drafts_merge_duplicates_and_sort() {
    let d = OrderDraft::new(
        UserId::new(1).unwrap(),
        [(pid(3), qty(1)), (pid(1), qty(2)), (pid(3), qty(4))],
        IdempotencyKey::new("k").unwrap(),
    )
    .unwrap();
    assert_eq!(d.items(), &[(pid(1), qty(2)), (pid(3), qty(5))]);
    let too_many = OrderDraft::new(
        UserId::new(1).unwrap(),
        [(pid(3), qty(6000)), (pid(3), qty(6000))],
        IdempotencyKey::new("k").unwrap(),
    );
    assert_eq!(too_many, Err(DraftError::MergedQuantityTooLarge(pid(3))));
}

#[test]
fn a_late_writer_with_a_stale_lease_is_fenced_off() {
    let mut o = order();
    let first = Lease {
        token: LeaseToken::from_raw(1),
        until: Timestamp::from_millis(100),
    };
    o.apply(
        &StatusChange::Start { lease: first },
        Timestamp::from_millis(10),
    )
    .unwrap();
    let second = Lease {
        token: LeaseToken::from_raw(2),
        until: Timestamp::from_millis(300),
    };
    let early = StatusChange::TakeOver {
        expired: first.token,
        lease: second,
    };
    assert_eq!(
        o.apply(&early, Timestamp::from_millis(50)),
        Err(TransitionError::LeaseNotExpired)
    );
    o.apply(&early, Timestamp::from_millis(100)).unwrap();
    let late = StatusChange::Pay { lease: first.token };
    assert_eq!(
        o.apply(&late, Timestamp::from_millis(120)),
        Err(TransitionError::LeaseMismatch)
    );
    assert_eq!(o.status(), OrderStatus::Processing);
    o.apply(
        &StatusChange::Pay {
            lease: second.token,
        },
        Timestamp::from_millis(130),
    )
    .unwrap();
    assert_eq!(o.status(), OrderStatus::Paid);
    assert!(matches!(
        o.apply(&StatusChange::Cancel, Timestamp::from_millis(140)),
        Err(TransitionError::Illegal {
            current: OrderStatus::Paid,
            ..
        })
    ));
}

#[test]
fn cancel_and_fail_return_stock_and_nothing_else_does() {
    let lease = Lease {
        token: LeaseToken::from_raw(1),
        until: Timestamp::from_millis(1),
    };
    assert!(StatusChange::Cancel.returns_stock());
    assert!(
        StatusChange::Fail {
            lease: lease.token,
            reason: FailureReason::new("x")
        }
        .returns_stock()
    );
    assert!(!StatusChange::Pay { lease: lease.token }.returns_stock());
    assert!(!StatusChange::Start { lease }.returns_stock());
    assert!(
        !StatusChange::TakeOver {
            expired: lease.token,
            lease
        }
        .returns_stock()
    );
}

#[test]
fn corrupted_parts_are_refused() {
    let mut parts = order().parts().clone();
    parts.total = Money::parse("1.00").unwrap();
    assert!(matches!(
        Order::from_parts(parts),
        Err(OrderDataError::TotalMismatch { .. })
    ));
    let mut parts = order().parts().clone();
    parts.cancelled_at = Some(Timestamp::from_millis(1));
    assert!(matches!(
        Order::from_parts(parts),
        Err(OrderDataError::CancelledAtMismatch(_))
    ));
}
