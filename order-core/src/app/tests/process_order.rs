//! `process_order` and `handle_delivery`: no charge after a lost race, fenced writes,
//! voids when the provider never answers, and the lease given back before a nack.

use super::*;

#[tokio::test]
async fn no_charge_after_a_lost_start_race_and_the_job_waits_for_the_winners_lease() {
    let mut m = Mocks::new();
    let order = pending_order(&[2]);
    // No grace period: nothing is read before the Start, which decides on its own.
    m.repo.expect_get().times(0);
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
    m.repo.expect_get().times(0);
    // The blind Start loses to the cancel and reports the order as it is: nothing else
    // is written.
    m.repo
        .expect_transition()
        .times(1)
        .returning(move |_, change, _| {
            assert!(matches!(change, StatusChange::Start { .. }));
            Ok(TransitionOutcome::LostRace(order.clone()))
        });
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
    m.repo.expect_get().times(0);
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
            Ok(applied(processing(&o3, lease.token.raw())))
        });
    (order, token)
}

/// Expects one completion of `kind`, fenced by the token the service chose and given
/// the order exactly as the Start returned it (so the store need not read it back).
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
        .times(0);
    m.repo
        .expect_transition_from()
        .withf(move |_, c, _| kind(c))
        .times(1)
        .returning(move |current, change, now| {
            let lease = match &change {
                StatusChange::Pay { lease } | StatusChange::Fail { lease, .. } => *lease,
                other => panic!("not a completion: {other:?}"),
            };
            assert_eq!(
                lease.raw(),
                token.load(Ordering::SeqCst),
                "completion is fenced by our lease"
            );
            assert_eq!(
                current,
                &processing(&o4, lease.raw()),
                "the completion is given the order the Start returned"
            );
            let mut done = current.clone();
            done.apply(&change, now).unwrap();
            Ok(applied(done))
        });
}

/// Expects every one of the 3 charge attempts to fail transiently, then one void that
/// answers `void`.
fn expect_unanswered_charges(m: &mut Mocks, void: fn() -> Result<PaymentOutcome, PaymentError>) {
    m.pay
        .expect_charge()
        .times(3)
        .returning(|_, _| Err(PaymentError::transient_msg("timeout")));
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
    expect_unanswered_charges(&mut m, || Err(PaymentError::transient_msg("down")));
    // No completion: after the Start, the only transition is giving the lease back,
    // fenced by the worker's own token, so the retry can take over at once.
    let o3 = order.clone();
    m.repo
        .expect_transition()
        .withf(move |_, c, _| {
            matches!(c, StatusChange::Release { lease } if lease.raw() == token.load(Ordering::SeqCst))
        })
        .times(1)
        .returning(move |_, _, _| Ok(applied(processing(&o3, 1))));
    m.queue.expect_ack().times(0);
    m.queue
        .expect_nack()
        .times(1)
        .returning(|_, _| Ok(NackOutcome::Retried(Duration::from_secs(1))));
    let svc = m.service();
    let delivery = first_delivery(&order);
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
        .expect_transition_from()
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
    m.repo.expect_get().times(0);
    m.repo
        .expect_transition()
        .times(1)
        .returning(move |_, change, _| {
            assert!(matches!(change, StatusChange::Start { .. }));
            Ok(TransitionOutcome::LostRace(busy.clone()))
        });
    m.pay.expect_charge().times(0);
    m.queue.expect_ack().times(0);
    m.queue.expect_nack().times(0);
    m.queue
        .expect_defer()
        .times(1)
        .returning(|_, d| Ok(NackOutcome::Retried(d)));
    let delivery = first_delivery(&order);
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
        .expect_transition_from()
        .withf(|_, c, _| matches!(c, StatusChange::Pay { .. }))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Err(RepositoryError::unavailable_msg("connection reset")));
    let o3 = order.clone();
    m.repo
        .expect_transition()
        .withf(move |_, c, _| {
            matches!(c, StatusChange::Release { lease } if lease.raw() == token.load(Ordering::SeqCst))
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _| Ok(applied(processing(&o3, 1))));
    m.queue
        .expect_nack()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(NackOutcome::Retried(Duration::from_secs(1))));
    let delivery = first_delivery(&order);
    let svc = m.service();
    let out = svc.handle_delivery(&delivery).await;
    assert!(matches!(out, WorkerOutcome::Released(_)), "{out:?}");
    assert_eq!(svc.stats().leases_released, 1);
}

#[tokio::test]
async fn a_blind_start_that_finds_an_expired_lease_takes_the_order_over_and_completes() {
    let mut m = Mocks::new();
    let order = pending_order(&[2]);
    // Processing under a lease that expired long before the service clock's now.
    let mut stale = order.clone();
    let expired = Lease {
        token: LeaseToken::from_raw(7),
        until: Timestamp::from_millis(10),
    };
    stale
        .apply(
            &StatusChange::Start { lease: expired },
            Timestamp::from_millis(2),
        )
        .unwrap();
    m.repo.expect_get().times(0);
    let mut seq = Sequence::new();
    let lost = stale.clone();
    m.repo
        .expect_transition()
        .withf(|_, c, _| matches!(c, StatusChange::Start { .. }))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _| Ok(TransitionOutcome::LostRace(lost.clone())));
    let token = Arc::new(AtomicU64::new(0));
    let t1 = token.clone();
    m.repo
        .expect_transition()
        .withf(|_, c, _| matches!(c, StatusChange::TakeOver { expired, .. } if expired.raw() == 7))
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, change, now| {
            let StatusChange::TakeOver { lease, .. } = change else {
                unreachable!()
            };
            t1.store(lease.token.raw(), Ordering::SeqCst);
            let mut taken = stale.clone();
            taken.apply(&change, now).unwrap();
            Ok(TransitionOutcome::Applied(taken, None))
        });
    m.pay
        .expect_charge()
        .times(1)
        .returning(|_, _| Ok(PaymentOutcome::Approved));
    m.repo
        .expect_transition_from()
        .times(1)
        .returning(move |current, change, now| {
            assert!(matches!(change, StatusChange::Pay { lease } if lease.raw() == token.load(Ordering::SeqCst)));
            let mut done = current.clone();
            done.apply(&change, now).unwrap();
            Ok(applied(done))
        });
    let svc = m.service();
    let out = svc.process_order(order.id()).await.unwrap();
    assert!(
        matches!(&out, ProcessOutcome::Completed(o) if o.status() == OrderStatus::Paid),
        "{out:?}"
    );
    assert_eq!(svc.stats().lease_takeovers, 1);
}

#[tokio::test]
async fn with_a_grace_period_the_order_is_read_first_and_a_young_one_is_left_alone() {
    let mut m = Mocks::new();
    let order = pending_order(&[2]);
    let o2 = order.clone();
    m.repo
        .expect_get()
        .times(1)
        .returning(move |_| Ok(Some(o2.clone())));
    m.repo.expect_transition().times(0);
    m.pay.expect_charge().times(0);
    let svc = m.service_with(ServiceConfig {
        // The order was placed at 1 ms; the service clock reads 1.7e12 ms.
        grace_period: Duration::from_millis(1_800_000_000_000),
        ..ServiceConfig::default()
    });
    let out = svc.process_order(order.id()).await.unwrap();
    assert!(matches!(out, ProcessOutcome::TooYoung { .. }), "{out:?}");
}

/// The first delivery of `order`'s job.
fn first_delivery(order: &Order) -> Delivery {
    Delivery {
        job: Job::ProcessOrder(order.id()),
        receipt: "r1".into(),
        attempt: 1,
    }
}

/// A provider whose charge lets a [`GatedPublisher`] go on, and approves.
struct SignallingGateway {
    charged: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl PaymentGateway for SignallingGateway {
    async fn charge(&self, _: OrderId, _: Money) -> Result<PaymentOutcome, PaymentError> {
        self.charged.notify_one();
        Ok(PaymentOutcome::Approved)
    }
    async fn void(&self, _: OrderId) -> Result<PaymentOutcome, PaymentError> {
        Ok(PaymentOutcome::Approved)
    }
}

/// A publisher that records what it published, and whose `order.processing` publish
/// finishes only once a charge has started.
struct GatedPublisher {
    charged: Arc<tokio::sync::Notify>,
    published: std::sync::Mutex<Vec<&'static str>>,
}

#[async_trait::async_trait]
impl EventPublisher for GatedPublisher {
    async fn publish(&self, event: OrderEvent) -> Result<(), PublishError> {
        if event.kind == OrderEventKind::Processing {
            self.charged.notified().await;
        }
        self.published.lock().unwrap().push(event.kind.name());
        Ok(())
    }
}

/// The Start's `order.processing` is published while the charge runs (a publish that
/// waits for the charge to start would hang if they ran one after the other), and it is
/// out before the completion's `order.paid`.
#[tokio::test]
async fn the_processing_event_is_published_beside_the_charge_and_before_the_completions() {
    let mut m = Mocks::new();
    let (order, token) = started_order(&mut m);
    expect_completion(&mut m, &order, token, |c| {
        matches!(c, StatusChange::Pay { .. })
    });
    let charged = Arc::new(tokio::sync::Notify::new());
    let events = Arc::new(GatedPublisher {
        charged: charged.clone(),
        published: std::sync::Mutex::new(Vec::new()),
    });
    let service = m.service_on(
        ServiceConfig::default(),
        Arc::new(SignallingGateway { charged }),
        events.clone(),
    );
    let out = tokio::time::timeout(Duration::from_secs(5), service.process_order(order.id()))
        .await
        .expect("the processing publish waited for a charge that never started")
        .unwrap();
    assert!(matches!(out, ProcessOutcome::Completed(_)), "{out:?}");
    assert_eq!(
        *events.published.lock().unwrap(),
        vec!["order.processing", "order.paid"]
    );
}
