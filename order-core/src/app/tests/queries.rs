//! `cancel_order`: a foreign order is not found, and a cancel that loses to the worker
//! is refused.

use super::*;

#[tokio::test]
async fn cancelling_another_users_order_is_not_found() {
    let mut m = Mocks::new();
    let order = pending_order(&[2]);
    m.repo
        .expect_get()
        .returning(move |_| Ok(Some(order.clone())));
    m.repo.expect_transition().times(0);
    let err = m
        .service()
        .cancel_order(UserId::new(2).unwrap(), OrderId::new(42).unwrap())
        .await;
    assert!(matches!(err, Err(CancelOrderError::NotFound)), "{err:?}");
}

#[tokio::test]
async fn a_cancel_that_loses_to_the_worker_is_an_invalid_transition() {
    let mut m = Mocks::new();
    let order = pending_order(&[2]);
    let o2 = order.clone();
    m.repo.expect_get().returning(move |_| Ok(Some(o2.clone())));
    let taken = processing(&order, 3);
    m.repo
        .expect_transition()
        .times(1)
        .returning(move |_, _, _| Ok(TransitionOutcome::LostRace(taken.clone())));
    let err = m.service().cancel_order(user(), order.id()).await;
    assert!(
        matches!(
            err,
            Err(CancelOrderError::InvalidTransition {
                current: OrderStatus::Processing
            })
        ),
        "{err:?}"
    );
}
