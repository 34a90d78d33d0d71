//! Interaction tests of `OrderService` with mockall ports: what it calls, in which order,
//! and what it must never call. Behaviour against faithful adapters is tested in the
//! workspace's integration tests on the memory adapters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mockall::Sequence;
use mockall::predicate::{always, eq};

use super::*;
use crate::domain::*;
use crate::ports::*;

struct Mocks {
    repo: MockOrderRepository,
    lock: MockDistributedLock,
    pay: MockPaymentGateway,
    events: MockEventPublisher,
    queue: MockJobQueue,
}

impl Mocks {
    fn new() -> Self {
        let mut events = MockEventPublisher::new();
        events.expect_publish().returning(|_| Ok(()));
        Self {
            repo: MockOrderRepository::new(),
            lock: MockDistributedLock::new(),
            pay: MockPaymentGateway::new(),
            events,
            queue: MockJobQueue::new(),
        }
    }

    fn service(self) -> OrderService {
        let mut queue = self.queue;
        queue.expect_timings().return_const(QueueTimings {
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 8,
            retry_backoff: Duration::from_secs(1),
        });
        let ports = Ports {
            repository: Arc::new(self.repo),
            lock: Arc::new(self.lock),
            payments: Arc::new(self.pay),
            events: Arc::new(self.events),
            queue: Arc::new(queue),
            clock: Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000))),
            rng: Arc::new(SeededRandom::new(1)),
        };
        OrderService::new(ports, ServiceConfig::default()).unwrap()
    }
}

fn user() -> UserId {
    UserId::new(1).unwrap()
}

fn request(products: &[i64]) -> CreateOrderRequest {
    CreateOrderRequest {
        user: user(),
        items: products
            .iter()
            .map(|p| RequestedItem {
                product_id: *p,
                quantity: 1,
            })
            .collect(),
        idempotency_key: "key-1".into(),
    }
}

fn pending_order(products: &[u64]) -> Order {
    let items = products
        .iter()
        .map(|p| (ProductId::new(*p).unwrap(), Quantity::new(1).unwrap()));
    let draft = OrderDraft::new(user(), items, IdempotencyKey::new("key-1").unwrap()).unwrap();
    let prices = vec![Money::from_cents(1000).unwrap(); products.len()];
    Order::place(
        OrderId::new(42).unwrap(),
        &draft,
        &prices,
        Timestamp::from_millis(1),
    )
    .unwrap()
}

fn processing(order: &Order, token: u64) -> Order {
    let mut o = order.clone();
    let lease = Lease {
        token: LeaseToken::from_raw(token),
        until: Timestamp::from_millis(u64::MAX / 2),
    };
    o.apply(&StatusChange::Start { lease }, Timestamp::from_millis(2))
        .unwrap();
    o
}

/// Expects the create path up to `place` with all locks granted, in order: ONE key
/// lookup before locking (a key committed while we wait is `place`'s to answer).
fn expect_locked_create(m: &mut Mocks, seq: &mut Sequence, keys: &[&'static str]) {
    m.repo
        .expect_find_by_key()
        .times(1)
        .returning(|_, _| Ok(None));
    for key in keys {
        m.lock
            .expect_try_acquire()
            .with(eq(*key), always(), eq(Duration::from_secs(10)))
            .times(1)
            .in_sequence(seq)
            .returning(|_, _, _| Ok(true));
    }
}

fn expect_releases(m: &mut Mocks, seq: &mut Sequence, keys: &[&'static str]) {
    for key in keys.iter().rev() {
        m.lock
            .expect_release()
            .with(eq(*key), always())
            .times(1)
            .in_sequence(seq)
            .returning(|_, _| Ok(true));
    }
}

const KEYS: [&str; 3] = ["idem:1:key-1", "product:2", "product:5"];

/// A create for products 2 and 5 whose `place` answers `outcome`: every lock is taken
/// ascending and released in reverse, and nothing is enqueued.
async fn create_when_place_answers(
    outcome: impl Fn() -> Result<Vec<PlaceOutcome>, RepositoryError> + Send + 'static,
) -> Result<CreatedOrder, CreateOrderError> {
    let mut m = Mocks::new();
    let mut seq = Sequence::new();
    expect_locked_create(&mut m, &mut seq, &KEYS);
    m.repo
        .expect_place()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| outcome());
    expect_releases(&mut m, &mut seq, &KEYS);
    m.queue.expect_enqueue().times(0);
    m.service().create_order(request(&[2, 5])).await
}

#[tokio::test]
async fn a_successful_create_locks_ascending_places_releases_every_lock_then_enqueues() {
    let mut m = Mocks::new();
    let mut seq = Sequence::new();
    expect_locked_create(&mut m, &mut seq, &KEYS);
    m.repo
        .expect_place()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|drafts, _| {
            assert_eq!(drafts.len(), 1);
            Ok(vec![PlaceOutcome::Placed(pending_order(&[2, 5]))])
        });
    expect_releases(&mut m, &mut seq, &KEYS);
    m.queue
        .expect_enqueue()
        .with(eq(Job::ProcessOrder(OrderId::new(42).unwrap())))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let svc = m.service();
    // Products sent out of order and duplicated: locks are still taken once, ascending.
    let created = svc.create_order(request(&[5, 2, 5])).await.unwrap();
    assert!(!created.replayed);
    assert_eq!(svc.stats().created, 1);
}

#[tokio::test]
async fn insufficient_stock_releases_every_lock_and_enqueues_nothing() {
    let err = create_when_place_answers(|| {
        Ok(vec![PlaceOutcome::InsufficientStock {
            product: ProductId::new(5).unwrap(),
            requested: 1,
            available: 0,
        }])
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            CreateOrderError::InsufficientStock { available: 0, .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_repository_error_releases_every_lock_and_enqueues_nothing() {
    let err = create_when_place_answers(|| Err(RepositoryError::Unavailable("db down".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, CreateOrderError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_key_committed_while_we_waited_is_replayed_by_place_and_not_enqueued_again() {
    let created =
        create_when_place_answers(|| Ok(vec![PlaceOutcome::Replayed(pending_order(&[2, 5]))]))
            .await
            .unwrap();
    assert!(created.replayed);
}

#[tokio::test]
async fn a_lock_still_busy_after_the_last_attempt_is_a_lock_conflict_and_releases_the_rest() {
    let mut m = Mocks::new();
    m.repo
        .expect_find_by_key()
        .times(1)
        .returning(|_, _| Ok(None));
    m.lock
        .expect_try_acquire()
        .with(eq("idem:1:key-1"), always(), always())
        .times(1)
        .returning(|_, _, _| Ok(true));
    m.lock
        .expect_try_acquire()
        .with(eq("product:2"), always(), always())
        .times(6)
        .returning(|_, _, _| Ok(false));
    m.lock
        .expect_release()
        .with(eq("idem:1:key-1"), always())
        .times(1)
        .returning(|_, _| Ok(true));
    m.repo.expect_place().times(0);
    m.queue.expect_enqueue().times(0);
    let svc = m.service();
    let err = svc.create_order(request(&[2, 5])).await.unwrap_err();
    assert!(
        matches!(err, CreateOrderError::LockConflict { product } if product.get() == 2),
        "{err:?}"
    );
    assert_eq!(svc.stats().lock_retries, 5);
    assert_eq!(svc.stats().lock_conflicts, 1);
}

#[tokio::test]
async fn a_busy_idempotency_key_is_in_flight_not_a_conflict() {
    let mut m = Mocks::new();
    m.repo
        .expect_find_by_key()
        .times(2)
        .returning(|_, _| Ok(None));
    m.lock
        .expect_try_acquire()
        .times(6)
        .returning(|_, _, _| Ok(false));
    m.lock.expect_release().times(0);
    m.repo.expect_place().times(0);
    let err = m.service().create_order(request(&[2])).await.unwrap_err();
    assert!(
        matches!(err, CreateOrderError::IdempotencyKeyInFlight),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_lock_service_outage_fails_open_to_the_database_guard() {
    let mut m = Mocks::new();
    m.repo
        .expect_find_by_key()
        .times(1)
        .returning(|_, _| Ok(None));
    m.lock
        .expect_try_acquire()
        .times(1)
        .returning(|_, _, _| Err(LockError::Unavailable("redis down".into())));
    m.lock.expect_release().times(0);
    m.repo
        .expect_place()
        .times(1)
        .returning(|_, _| Ok(vec![PlaceOutcome::Placed(pending_order(&[2]))]));
    m.queue.expect_enqueue().times(1).returning(|_| Ok(()));
    let svc = m.service();
    svc.create_order(request(&[2])).await.unwrap();
    assert_eq!(svc.stats().lock_fail_open, 1);
}

#[tokio::test]
async fn a_replay_takes_no_lock_and_writes_nothing() {
    let mut m = Mocks::new();
    m.repo
        .expect_find_by_key()
        .times(1)
        .returning(|_, _| Ok(Some(pending_order(&[2]))));
    m.lock.expect_try_acquire().times(0);
    m.repo.expect_place().times(0);
    m.queue.expect_enqueue().times(0);
    let created = m.service().create_order(request(&[2])).await.unwrap();
    assert!(created.replayed);
}

#[tokio::test]
async fn the_same_key_with_other_lines_is_refused() {
    let mut m = Mocks::new();
    m.repo
        .expect_find_by_key()
        .times(1)
        .returning(|_, _| Ok(Some(pending_order(&[3]))));
    m.repo.expect_place().times(0);
    let err = m.service().create_order(request(&[2])).await.unwrap_err();
    assert!(
        matches!(err, CreateOrderError::IdempotencyKeyReused { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_input_lists_every_field_and_touches_no_port() {
    let m = Mocks::new(); // any call to a port without an expectation panics
    let req = CreateOrderRequest {
        user: user(),
        items: vec![
            RequestedItem {
                product_id: 0,
                quantity: 1,
            },
            RequestedItem {
                product_id: 2,
                quantity: 0,
            },
            RequestedItem {
                product_id: -1,
                quantity: 20_000,
            },
        ],
        idempotency_key: "has space".into(),
    };
    let Err(CreateOrderError::Validation(errors)) = m.service().create_order(req).await else {
        panic!("expected a validation error");
    };
    let fields: Vec<&str> = errors.fields().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        [
            "idempotency_key",
            "items.0.product_id",
            "items.1.quantity",
            "items.2.product_id",
            "items.2.quantity"
        ]
    );
    let too_many = CreateOrderRequest {
        items: vec![
            RequestedItem {
                product_id: 1,
                quantity: 1
            };
            51
        ],
        ..request(&[])
    };
    let m = Mocks::new();
    assert!(matches!(
        m.service().create_order(too_many).await,
        Err(CreateOrderError::Validation(_))
    ));
}

#[tokio::test]
async fn no_charge_after_a_lost_start_race_and_the_job_waits_for_the_winners_lease() {
    let mut m = Mocks::new();
    let order = pending_order(&[2]);
    let o2 = order.clone();
    m.repo.expect_get().returning(move |_| Ok(Some(o2.clone())));
    let taken = processing(&order, 99);
    m.repo
        .expect_transition()
        .times(1)
        .returning(move |_, change, _| {
            assert!(matches!(change, StatusChange::Start { .. }));
            Ok(TransitionOutcome::LostRace(taken.clone()))
        });
    m.pay.expect_charge().times(0);
    let out = m.service().process_order(order.id()).await.unwrap();
    // The winner may crash: this delivery must come back when its lease may have run
    // out, not be acked (which would leave the order to nobody).
    assert!(
        matches!(out, ProcessOutcome::LeaseHeld { retry_after } if retry_after > Duration::ZERO),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_terminal_order_is_skipped_without_charging() {
    let mut m = Mocks::new();
    let mut order = pending_order(&[2]);
    order
        .apply(&StatusChange::Cancel, Timestamp::from_millis(3))
        .unwrap();
    m.repo
        .expect_get()
        .returning(move |_| Ok(Some(order.clone())));
    m.repo.expect_transition().times(0);
    m.pay.expect_charge().times(0);
    let out = m
        .service()
        .process_order(OrderId::new(42).unwrap())
        .await
        .unwrap();
    assert_eq!(out, ProcessOutcome::AlreadyTerminal(OrderStatus::Cancelled));
}

/// Mocks for a Pending order whose Start is applied with the service's lease; returns
/// the order and the cell holding the lease token the service chose.
fn started_order(m: &mut Mocks) -> (Order, Arc<AtomicU64>) {
    let order = pending_order(&[2]);
    let o2 = order.clone();
    m.repo.expect_get().returning(move |_| Ok(Some(o2.clone())));
    let token = Arc::new(AtomicU64::new(0));
    let t1 = token.clone();
    let o3 = order.clone();
    m.repo
        .expect_transition()
        .withf(|_, c, _| matches!(c, StatusChange::Start { .. }))
        .times(1)
        .returning(move |_, change, _| {
            let StatusChange::Start { lease } = change else {
                unreachable!()
            };
            t1.store(lease.token.raw(), Ordering::SeqCst);
            Ok(TransitionOutcome::Applied(processing(
                &o3,
                lease.token.raw(),
            )))
        });
    (order, token)
}

/// Expects one completion of `kind`, fenced by the token the service chose.
fn expect_completion(
    m: &mut Mocks,
    order: &Order,
    token: Arc<AtomicU64>,
    kind: fn(&StatusChange) -> bool,
) {
    let o4 = order.clone();
    m.repo
        .expect_transition()
        .withf(move |_, c, _| kind(c))
        .times(1)
        .returning(move |_, change, now| {
            let lease = match &change {
                StatusChange::Pay { lease } | StatusChange::Fail { lease, .. } => *lease,
                other => panic!("not a completion: {other:?}"),
            };
            assert_eq!(
                lease.raw(),
                token.load(Ordering::SeqCst),
                "completion is fenced by our lease"
            );
            let mut done = processing(&o4, lease.raw());
            done.apply(&change, now).unwrap();
            Ok(TransitionOutcome::Applied(done))
        });
}

/// Expects every one of the 3 charge attempts to fail transiently, then one void that
/// answers `void`.
fn expect_unanswered_charges(m: &mut Mocks, void: fn() -> Result<PaymentOutcome, PaymentError>) {
    m.pay
        .expect_charge()
        .times(3)
        .returning(|_, _| Err(PaymentError::Transient("timeout".into())));
    m.pay.expect_void().times(1).returning(move |_| void());
}

#[tokio::test]
async fn transient_payment_errors_are_retried_then_the_key_is_voided_and_the_order_fails() {
    let mut m = Mocks::new();
    let (order, token) = started_order(&mut m);
    expect_unanswered_charges(&mut m, || {
        Ok(PaymentOutcome::Declined(FailureReason::new("voided")))
    });
    expect_completion(&mut m, &order, token, |c| {
        matches!(c, StatusChange::Fail { .. })
    });
    let svc = m.service();
    let out = svc.process_order(order.id()).await.unwrap();
    let ProcessOutcome::Completed(done) = out else {
        panic!("{out:?}")
    };
    assert_eq!(done.status(), OrderStatus::Failed);
    assert_eq!(
        done.failure_reason().map(FailureReason::as_str),
        Some("Payment provider unavailable.")
    );
    assert_eq!(svc.stats().payment_retries, 2);
}

#[tokio::test]
async fn a_void_that_finds_the_charge_went_through_pays_the_order() {
    let mut m = Mocks::new();
    let (order, token) = started_order(&mut m);
    expect_unanswered_charges(&mut m, || Ok(PaymentOutcome::Approved));
    expect_completion(&mut m, &order, token, |c| {
        matches!(c, StatusChange::Pay { .. })
    });
    let out = m.service().process_order(order.id()).await.unwrap();
    assert!(
        matches!(&out, ProcessOutcome::Completed(o) if o.status() == OrderStatus::Paid),
        "{out:?}"
    );
}

#[tokio::test]
async fn an_unreachable_provider_releases_the_lease_and_the_job_is_retried() {
    let mut m = Mocks::new();
    let (order, token) = started_order(&mut m);
    expect_unanswered_charges(&mut m, || Err(PaymentError::Transient("down".into())));
    // No completion: after the Start, the only transition is giving the lease back,
    // fenced by the worker's own token, so the retry can take over at once.
    let o3 = order.clone();
    m.repo
        .expect_transition()
        .withf(move |_, c, _| {
            matches!(c, StatusChange::Release { lease } if lease.raw() == token.load(Ordering::SeqCst))
        })
        .times(1)
        .returning(move |_, _, _| Ok(TransitionOutcome::Applied(processing(&o3, 1))));
    m.queue.expect_ack().times(0);
    m.queue
        .expect_nack()
        .times(1)
        .returning(|_, _| Ok(NackOutcome::Retried(Duration::from_secs(1))));
    let svc = m.service();
    let delivery = Delivery {
        job: Job::ProcessOrder(order.id()),
        receipt: "r1".into(),
        attempt: 1,
    };
    let out = svc.handle_delivery(&delivery).await;
    assert!(matches!(out, WorkerOutcome::Released(_)), "{out:?}");
    assert_eq!(svc.stats().payments_unresolved, 1);
    assert_eq!(svc.stats().leases_released, 1);
}

#[tokio::test]
async fn a_fenced_completion_writes_nothing_and_is_reported() {
    let mut m = Mocks::new();
    let (order, _) = started_order(&mut m);
    m.pay
        .expect_charge()
        .times(1)
        .returning(|_, _| Ok(PaymentOutcome::Approved));
    let o4 = order.clone();
    m.repo
        .expect_transition()
        .withf(|_, c, _| matches!(c, StatusChange::Pay { .. }))
        .returning(move |_, _, _| Ok(TransitionOutcome::LostRace(processing(&o4, 777))));
    let svc = m.service();
    let out = svc.process_order(order.id()).await.unwrap();
    // The new holder owns the order now; the job waits for its lease, never acked.
    assert!(matches!(out, ProcessOutcome::LeaseHeld { .. }), "{out:?}");
    assert_eq!(svc.stats().fenced_writes, 1);
    assert_eq!(svc.stats().paid, 0);
}

#[tokio::test]
async fn a_live_lease_defers_the_job_without_using_an_attempt() {
    let mut m = Mocks::new();
    let order = pending_order(&[2]);
    let busy = processing(&order, 5);
    m.repo
        .expect_get()
        .returning(move |_| Ok(Some(busy.clone())));
    m.repo.expect_transition().times(0);
    m.pay.expect_charge().times(0);
    m.queue.expect_ack().times(0);
    m.queue.expect_nack().times(0);
    m.queue
        .expect_defer()
        .times(1)
        .returning(|_, d| Ok(NackOutcome::Retried(d)));
    let delivery = Delivery {
        job: Job::ProcessOrder(order.id()),
        receipt: "r1".into(),
        attempt: 1,
    };
    let out = m.service().handle_delivery(&delivery).await;
    assert!(matches!(out, WorkerOutcome::Deferred(_)), "{out:?}");
}

#[tokio::test]
async fn a_database_error_on_completion_releases_the_lease_before_the_nack() {
    let mut m = Mocks::new();
    let (order, token) = started_order(&mut m);
    m.pay
        .expect_charge()
        .times(1)
        .returning(|_, _| Ok(PaymentOutcome::Approved));
    let mut seq = Sequence::new();
    m.repo
        .expect_transition()
        .withf(|_, c, _| matches!(c, StatusChange::Pay { .. }))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Err(RepositoryError::Unavailable("connection reset".into())));
    let o3 = order.clone();
    m.repo
        .expect_transition()
        .withf(move |_, c, _| {
            matches!(c, StatusChange::Release { lease } if lease.raw() == token.load(Ordering::SeqCst))
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _| Ok(TransitionOutcome::Applied(processing(&o3, 1))));
    m.queue
        .expect_nack()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(NackOutcome::Retried(Duration::from_secs(1))));
    let delivery = Delivery {
        job: Job::ProcessOrder(order.id()),
        receipt: "r1".into(),
        attempt: 1,
    };
    let svc = m.service();
    let out = svc.handle_delivery(&delivery).await;
    assert!(matches!(out, WorkerOutcome::Released(_)), "{out:?}");
    assert_eq!(svc.stats().leases_released, 1);
}

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

#[tokio::test]
async fn a_total_too_large_for_money_is_a_validation_error_on_items() {
    let Err(CreateOrderError::Validation(errors)) =
        create_when_place_answers(|| Ok(vec![PlaceOutcome::TotalTooLarge])).await
    else {
        panic!("expected a validation error");
    };
    assert!(errors.fields().contains_key("items"), "{errors}");
}
