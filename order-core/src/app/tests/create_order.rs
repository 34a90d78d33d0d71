//! `create_order` and `place_order`: locks taken ascending and released on every path,
//! replays, refusals, validation, and the typed path's equivalence with the raw one.

use super::*;

const KEYS: [&str; 3] = ["idem:1:key-1", "product:2", "product:5"];

/// The two doors into one use case: a raw request as a client sends it
/// (`create_order`), and the typed draft a program builds from typed ids
/// (`place_order`). They must behave identically, so the tests below run both.
#[derive(Debug, Clone, Copy)]
enum Entry {
    Raw,
    Typed,
}

const ENTRIES: [Entry; 2] = [Entry::Raw, Entry::Typed];

/// Submits one unit of each of `products` (duplicates allowed) through `entry`.
async fn submit(
    svc: &OrderService,
    entry: Entry,
    products: &[i64],
) -> Result<CreatedOrder, CreateOrderError> {
    match entry {
        Entry::Raw => svc.create_order(request(products)).await,
        Entry::Typed => {
            let items = products
                .iter()
                .map(|p| (ProductId::from_i64(*p).unwrap(), Quantity::new(1).unwrap()));
            let draft = OrderDraft::new(user(), items, IdempotencyKey::new("key-1").unwrap());
            svc.place_order(draft.unwrap()).await
        }
    }
}

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
    for entry in ENTRIES {
        let mut m = Mocks::new();
        let mut seq = Sequence::new();
        expect_locked_create(&mut m, &mut seq, &KEYS);
        m.repo
            .expect_place()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|drafts, _| {
                assert_eq!(drafts.len(), 1);
                // The merged draft reaches the store as built: nothing re-parsed.
                assert_eq!(drafts[0], draft(&[(2, 1), (5, 2)]));
                Ok(vec![placed(pending_order(&[2, 5]))])
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
        let created = submit(&svc, entry, &[5, 2, 5]).await.unwrap();
        assert!(!created.replayed, "{entry:?}");
        assert_eq!(svc.stats().created, 1, "{entry:?}");
    }
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
    let err = create_when_place_answers(|| Err(RepositoryError::unavailable_msg("db down")))
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
    for entry in ENTRIES {
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
        let err = submit(&svc, entry, &[2, 5]).await.unwrap_err();
        assert!(
            matches!(err, CreateOrderError::LockConflict { product } if product.get() == 2),
            "{entry:?}: {err:?}"
        );
        assert_eq!(svc.stats().lock_retries, 5);
        assert_eq!(svc.stats().lock_conflicts, 1);
    }
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
        .returning(|_, _, _| Err(LockError::unavailable_msg("redis down")));
    m.lock.expect_release().times(0);
    m.repo
        .expect_place()
        .times(1)
        .returning(|_, _| Ok(vec![placed(pending_order(&[2]))]));
    m.queue.expect_enqueue().times(1).returning(|_| Ok(()));
    let svc = m.service();
    svc.create_order(request(&[2])).await.unwrap();
    assert_eq!(svc.stats().lock_fail_open, 1);
}

#[tokio::test]
async fn a_replay_takes_no_lock_and_writes_nothing() {
    for entry in ENTRIES {
        let mut m = Mocks::new();
        m.repo
            .expect_find_by_key()
            .times(1)
            .returning(|_, _| Ok(Some(pending_order(&[2]))));
        m.lock.expect_try_acquire().times(0);
        m.repo.expect_place().times(0);
        m.queue.expect_enqueue().times(0);
        let svc = m.service();
        let created = submit(&svc, entry, &[2]).await.unwrap();
        assert!(created.replayed, "{entry:?}");
        assert_eq!(svc.stats().replayed, 1, "{entry:?}");
    }
}

#[tokio::test]
async fn without_distributed_locks_nothing_is_read_first_and_place_answers_the_replay() {
    for entry in ENTRIES {
        let mut m = Mocks::new();
        // `place` decides a replay atomically; a read first would only cost a statement.
        m.repo.expect_find_by_key().times(0);
        m.lock.expect_try_acquire().times(0);
        m.repo
            .expect_place()
            .times(1)
            .returning(|_, _| Ok(vec![PlaceOutcome::Replayed(pending_order(&[2]))]));
        m.queue.expect_enqueue().times(0);
        let svc = m.service_with(ServiceConfig {
            lock: LockPolicy {
                mode: LockMode::None,
                ..LockPolicy::default()
            },
            ..ServiceConfig::default()
        });
        let created = submit(&svc, entry, &[2]).await.unwrap();
        assert!(created.replayed, "{entry:?}");
        assert_eq!(svc.stats().replayed, 1, "{entry:?}");
    }
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
async fn a_total_too_large_for_money_is_a_validation_error_on_items() {
    let Err(CreateOrderError::Validation(errors)) =
        create_when_place_answers(|| Ok(vec![PlaceOutcome::TotalTooLarge])).await
    else {
        panic!("expected a validation error");
    };
    assert!(errors.fields().contains_key("items"), "{errors}");
}

// ---------------------------------------------------------------------------------------
// the raw request's parse: the draft a program would build
// ---------------------------------------------------------------------------------------

fn draft(items: &[(u64, i64)]) -> OrderDraft {
    let items = items
        .iter()
        .map(|(p, q)| (ProductId::new(*p).unwrap(), Quantity::new(*q).unwrap()));
    OrderDraft::new(user(), items, IdempotencyKey::new("key-1").unwrap()).unwrap()
}

#[test]
fn a_raw_request_parses_into_the_draft_a_program_would_build() {
    let five = ProductId::new(5).unwrap();
    let two = ProductId::new(2).unwrap();
    let raw = CreateOrderRequest::new(user(), [(five, 1), (two, 1), (five, 2)], "key-1");
    assert_eq!(raw.into_draft(), Ok(draft(&[(2, 1), (5, 3)])));
    let Err(errors) = CreateOrderRequest::new(user(), [(two, 0)], "").into_draft() else {
        panic!("expected validation errors");
    };
    let fields: Vec<&str> = errors.fields().keys().map(String::as_str).collect();
    assert_eq!(fields, ["idempotency_key", "items.0.quantity"]);
}
