//! Tests of `OrderDraft` that need the entity's private parts (to forge a fingerprint collision).

use super::*;
use crate::domain::DraftError;

fn draft(items: &[(u64, i64)]) -> OrderDraft {
    let items = items
        .iter()
        .map(|(p, q)| (ProductId::new(*p).unwrap(), Quantity::new(*q).unwrap()));
    OrderDraft::new(
        UserId::new(1).unwrap(),
        items,
        IdempotencyKey::new("k").unwrap(),
    )
    .unwrap()
}

#[test]
fn equal_fingerprints_are_confirmed_line_by_line() {
    let original = draft(&[(1, 2), (3, 1)]);
    let order = Order::place(
        OrderId::new(9).unwrap(),
        &original,
        &[Money::from_cents(100).unwrap(); 2],
        Timestamp::from_millis(1),
    )
    .unwrap();
    assert!(original.same_lines_as(&order));
    // A different request whose 64-bit hash collides with the original's: forge it
    // by giving the order the other draft's fingerprint.
    let other = draft(&[(1, 2), (3, 2)]);
    let mut parts = order.parts.clone();
    parts.fingerprint = other.fingerprint();
    let colliding = Order::from_parts(parts).unwrap();
    assert!(
        !other.same_lines_as(&colliding),
        "a hash collision must not make different lines a replay"
    );
}

#[test]
fn a_draft_beyond_the_line_cap_is_refused_in_the_domain() {
    let items = (1..=OrderDraft::MAX_LINES as u64 + 1)
        .map(|p| (ProductId::new(p).unwrap(), Quantity::new(1).unwrap()));
    let err = OrderDraft::new(
        UserId::new(1).unwrap(),
        items,
        IdempotencyKey::new("k").unwrap(),
    );
    assert_eq!(
        err.err(),
        Some(DraftError::TooManyLines { max: 50, got: 51 })
    );
}
