//! Contract suite for [`OrderRepository`]: stock, idempotency and compare-and-set
//! transitions, held to the same promises in every adapter.
//!
//! Each check is a `pub async fn` taking a [`RepositoryFixture`] over a **fresh, empty
//! store** (no users, products or orders), and panics with a message naming the broken
//! promise. Run every check in [`CHECKS`] against your adapter, one test per check, with
//! [`repository_contract!`](crate::repository_contract):
//!
//! ```ignore
//! async fn my_fixture() -> MyFixture {
//!     MyFixture::over_an_empty_store().await
//! }
//!
//! order_core::repository_contract!(my_fixture);
//! ```
//!
//! Transitions are checked against [`Order::apply`] itself: whatever the adapter returns
//! as `Applied` must equal what `apply` makes of the order it started from, and a lost
//! race must leave the order exactly as it was. Instants carry milliseconds, so a store
//! that rounds them fails the equality checks.
//!
//! Pure code like the rest of the crate: no runtime, no I/O of its own.

use std::sync::Arc;

use async_trait::async_trait;

use std::time::Duration;

use crate::domain::{
    FailureReason, IdempotencyKey, Lease, LeaseToken, MAX_STOCK, Money, Order, OrderDraft, OrderId,
    OrderStatus, ProductId, Quantity, RestockError, StatusChange, Timestamp, UserId,
};
use crate::ports::{ListFilter, OrderRepository, PlaceOutcome, StrandedQuery, TransitionOutcome};

/// What a repository check needs from the adapter under test.
#[async_trait]
pub trait RepositoryFixture: Send + Sync {
    /// The adapter under test, over a store that was empty when the fixture was made.
    fn repository(&self) -> Arc<dyn OrderRepository>;

    /// Creates a user who may place orders and returns its id.
    async fn add_user(&self) -> UserId;

    /// Creates a product with this unit price and stock and returns its id. Prices used
    /// by the checks stay within `DECIMAL(10,2)` (at most 99 999 999.99) and stocks at or
    /// below 10 000.
    async fn add_product(&self, price: Money, stock: u64) -> ProductId;

    /// A product's current stock (the fixture panics if the product does not exist).
    async fn stock(&self, product: ProductId) -> u64;

    /// Restocks through the adapter's own restock operation (not part of the port; the
    /// fixture panics on a store failure and returns the adapter's refusal).
    async fn restock(&self, product: ProductId, units: u64) -> Result<(), RestockError>;

    /// Releases what the fixture holds (connections, server-side state) once a check
    /// passed: [`repository_contract!`](crate::repository_contract) awaits it after every check. A
    /// no-op unless overridden. A failing check panics before it, so clean-up that must
    /// happen then too belongs in a `Drop` of the fixture.
    async fn teardown(&self) {}
}

/// The names of every check, in the order they are meant to run (from the suite's one
/// list, like the tests [`repository_contract!`](crate::repository_contract) writes).
pub const CHECKS: &[&str] = crate::__repository_checks! { [crate::__contract_check_names] };

/// THE list of this suite's checks, in the order they are meant to run: every check
/// function must be here (order-core's tests fail otherwise), and nowhere else.
/// `__repository_checks! { [callback] args.. }` expands to `callback! { [checks..] args.. }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __repository_checks {
    ([$($callback:tt)*] $($args:tt)*) => {
        $($callback)*! {
            [
            place_reserves_stock_and_prices_lines,
            place_is_atomic_across_products,
            insufficient_stock_reports_the_first_short_product,
            unknown_product_writes_nothing,
            unknown_user_writes_nothing,
            replay_returns_the_stored_order_and_reserves_nothing,
            reused_key_with_other_lines_is_refused,
            keys_are_scoped_per_user_and_case_sensitive,
            batch_allots_stock_in_arrival_order,
            batch_outcomes_are_independent,
            a_total_above_the_maximum_refuses_only_that_draft,
            start_moves_pending_to_processing_with_a_lease,
            take_over_only_after_the_lease_expired,
            pay_is_fenced_by_the_lease,
            fail_is_fenced_by_the_lease_and_returns_stock_once,
            cancel_returns_stock_exactly_once,
            cancel_only_from_pending,
            terminal_statuses_are_absorbing,
            unknown_order_is_not_found,
            list_by_user_is_newest_first_filtered_and_paged,
            products_are_listed_ascending_with_current_stock,
            find_by_key_is_scoped_to_the_user,
            release_expires_the_holders_lease_at_once,
            claim_stranded_hands_each_order_out_once_per_stale_after,
            claim_stranded_skips_live_leases_and_terminal_orders,
            restock_is_bounded_by_max_stock,
            ]
            $($args)*
        }
    };
}

/// One test per check of the [`OrderRepository`](crate::ports::OrderRepository)
/// contract ([`testing::contract::repository`](crate::testing::contract::repository)),
/// each on a fresh
/// [`RepositoryFixture`](crate::testing::contract::repository::RepositoryFixture), torn
/// down after its check passed.
///
/// The input is an optional test attribute and a fixture: `path::to::async_fn`,
/// `|| expression` or `|arg: Type, ..| expression` (see the [module
/// docs](crate::testing::contract#in-one-line)). Without an attribute the tests are
/// `#[tokio::test]`: the calling crate needs `tokio` as a dev-dependency with the
/// `macros` and `rt` features. The tests are named after the checks and written where
/// the macro is invoked.
///
/// ```ignore
/// // `#[sqlx::test]` hands each test a fresh database's pool: the tests take it as a
/// // parameter and the fixture is built from it.
/// order_core::repository_contract!(
///     #[sqlx::test(migrator = "my_adapter::MIGRATOR")]
///     |pool: MySqlPool| MyFixture::new(pool)
/// );
/// ```
#[macro_export]
macro_rules! repository_contract {
    ($($fixture:tt)+) => {
        $crate::__contract_parse! {
            __repository_checks, repository, RepositoryFixture; $($fixture)+
        }
    };
}

// ---------------------------------------------------------------------------------------
// Helpers: every failure names what was being done.
// ---------------------------------------------------------------------------------------

/// An instant `offset` ms after a fixed base that has a millisecond part, so that a store
/// rounding to seconds is caught.
fn at(offset: u64) -> Timestamp {
    Timestamp::from_millis(1_750_000_000_123 + offset)
}

fn price(text: &str) -> Money {
    match Money::parse(text) {
        Ok(m) => m,
        Err(e) => panic!("contract bug: bad price {text:?}: {e}"),
    }
}

fn key(text: &str) -> IdempotencyKey {
    match IdempotencyKey::new(text) {
        Ok(k) => k,
        Err(e) => panic!("contract bug: bad key {text:?}: {e}"),
    }
}

fn lease(token: u64, until: Timestamp) -> Lease {
    Lease {
        token: LeaseToken::from_raw(token),
        until,
    }
}

fn draft(user: UserId, k: &str, items: &[(ProductId, u32)]) -> OrderDraft {
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
fn missing_product(existing: ProductId) -> ProductId {
    match ProductId::new(existing.get() + 1_000_000) {
        Ok(p) => p,
        Err(e) => panic!("contract bug: {e}"),
    }
}

fn missing_user(existing: UserId) -> UserId {
    match UserId::new(existing.get() + 1_000_000) {
        Ok(u) => u,
        Err(e) => panic!("contract bug: {e}"),
    }
}

fn missing_order(existing: OrderId) -> OrderId {
    match OrderId::new(existing.get() + 1_000_000) {
        Ok(o) => o,
        Err(e) => panic!("contract bug: {e}"),
    }
}

async fn place(
    f: &dyn RepositoryFixture,
    drafts: &[OrderDraft],
    now: Timestamp,
) -> Vec<PlaceOutcome> {
    let outcomes = match f.repository().place(drafts, now).await {
        Ok(o) => o,
        Err(e) => panic!("place of {} draft(s) failed: {e}", drafts.len()),
    };
    assert_eq!(
        outcomes.len(),
        drafts.len(),
        "place must return exactly one outcome per draft: {outcomes:?}"
    );
    outcomes
}

async fn place_one(f: &dyn RepositoryFixture, d: OrderDraft, now: Timestamp) -> PlaceOutcome {
    let mut outcomes = place(f, &[d], now).await;
    match outcomes.pop() {
        Some(o) => o,
        None => panic!("place returned no outcome"),
    }
}

/// Places `d`, which must succeed, and checks the order against `Order::place`.
async fn placed(f: &dyn RepositoryFixture, d: OrderDraft, now: Timestamp) -> Order {
    match place_one(f, d.clone(), now).await {
        PlaceOutcome::Placed(order) => {
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

async fn get(f: &dyn RepositoryFixture, id: OrderId) -> Option<Order> {
    match f.repository().get(id).await {
        Ok(o) => o,
        Err(e) => panic!("get({id}) failed: {e}"),
    }
}

async fn transition(
    f: &dyn RepositoryFixture,
    id: OrderId,
    change: &StatusChange,
    now: Timestamp,
) -> TransitionOutcome {
    match f.repository().transition(id, change.clone(), now).await {
        Ok(o) => o,
        Err(e) => panic!("transition({id}, {change:?}) failed: {e}"),
    }
}

/// Applies `change` and checks the result is exactly what [`Order::apply`] makes of
/// `order`, both as returned and as stored. Returns the new order.
async fn applied(
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
        TransitionOutcome::Applied(actual) => {
            assert_eq!(
                actual, expected,
                "{change:?} must return the order exactly as Order::apply leaves it"
            );
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
async fn lost(f: &dyn RepositoryFixture, order: &Order, change: StatusChange, now: Timestamp) {
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

async fn assert_stock(f: &dyn RepositoryFixture, product: ProductId, expected: u64, why: &str) {
    let actual = f.stock(product).await;
    assert_eq!(actual, expected, "stock of product {product}: {why}");
}

async fn find_by_key(f: &dyn RepositoryFixture, user: UserId, k: &str) -> Option<Order> {
    match f.repository().find_by_key(user, &key(k)).await {
        Ok(o) => o,
        Err(e) => panic!("find_by_key({user}, {k:?}) failed: {e}"),
    }
}

async fn list(
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
        Err(e) => panic!("list_by_user({user}, {filter:?}) failed: {e}"),
    }
}

/// A Pending order (placed at `at(0)`) of `units` of `product`, started at `at(10)` with
/// lease `token` until `at(100)`.
async fn processing(
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

// ---------------------------------------------------------------------------------------
// place
// ---------------------------------------------------------------------------------------

/// Placing reserves each line's quantity, prices lines at the products' current prices,
/// computes the exact total, and stores the order (readable by `get` and `find_by_key`).
pub async fn place_reserves_stock_and_prices_lines(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let mouse = f.add_product(price("29.99"), 10).await;
    let keyboard = f.add_product(price("149.99"), 5).await;
    // Sent in reverse and with a duplicate: the draft merges and sorts.
    let d = draft(user, "k-1", &[(keyboard, 1), (mouse, 1), (mouse, 1)]);
    let order = placed(f, d, at(0)).await;
    let prices: Vec<(ProductId, u32, Money)> = order
        .lines()
        .iter()
        .map(|l| (l.product, l.quantity.get(), l.unit_price))
        .collect();
    assert_eq!(
        prices,
        vec![(mouse, 2, price("29.99")), (keyboard, 1, price("149.99"))],
        "lines must be merged, ascending by product and priced at placement"
    );
    assert_eq!(
        order.total(),
        price("209.97"),
        "total must be the exact sum"
    );
    assert_stock(f, mouse, 8, "placing 2 must reserve 2").await;
    assert_stock(f, keyboard, 4, "placing 1 must reserve 1").await;
    assert_eq!(
        get(f, order.id()).await,
        Some(order.clone()),
        "get must return the order"
    );
    assert_eq!(
        find_by_key(f, user, "k-1").await,
        Some(order),
        "find_by_key must return the order"
    );
}

/// When one product of a draft is short, nothing is reserved for any of its products
/// and no order or key is stored.
pub async fn place_is_atomic_across_products(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 5).await;
    let b = f.add_product(price("2.00"), 1).await;
    let outcome = place_one(f, draft(user, "k", &[(a, 2), (b, 2)]), at(0)).await;
    assert_eq!(
        outcome,
        PlaceOutcome::InsufficientStock {
            product: b,
            requested: 2,
            available: 1
        }
    );
    assert_stock(
        f,
        a,
        5,
        "a refused draft must not reserve its other products",
    )
    .await;
    assert_stock(f, b, 1, "a refused draft must reserve nothing").await;
    assert_eq!(
        find_by_key(f, user, "k").await,
        None,
        "a refused draft must not hold its key"
    );
    assert_eq!(
        list(f, user, None, 1, 50).await,
        (vec![], 0),
        "no order may be stored"
    );
    // The key is still free: the same key succeeds once stock allows.
    placed(f, draft(user, "k", &[(a, 2), (b, 1)]), at(1)).await;
}

/// With several short products, the first one in ascending id order is reported, with
/// the quantity requested and the stock available; nothing is written.
pub async fn insufficient_stock_reports_the_first_short_product(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("1.00"), 1).await;
    let b = f.add_product(price("1.00"), 0).await;
    let outcome = place_one(f, draft(user, "k", &[(b, 3), (a, 3)]), at(0)).await;
    assert_eq!(
        outcome,
        PlaceOutcome::InsufficientStock {
            product: a,
            requested: 3,
            available: 1
        },
        "the first short product in ascending id order must be reported"
    );
    assert_stock(f, a, 1, "nothing may be reserved").await;
    assert_stock(f, b, 0, "nothing may be reserved").await;
    assert_eq!(find_by_key(f, user, "k").await, None);
}

/// A draft naming a product that does not exist is `UnknownProduct` and writes nothing.
pub async fn unknown_product_writes_nothing(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("3.50"), 4).await;
    let ghost = missing_product(a);
    let outcome = place_one(f, draft(user, "k", &[(a, 1), (ghost, 1)]), at(0)).await;
    assert_eq!(outcome, PlaceOutcome::UnknownProduct(ghost));
    assert_stock(f, a, 4, "an unknown product must reserve nothing").await;
    assert_eq!(find_by_key(f, user, "k").await, None);
}

/// A draft from a user that does not exist is `UnknownUser` and writes nothing.
pub async fn unknown_user_writes_nothing(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("3.50"), 4).await;
    let ghost = missing_user(user);
    let outcome = place_one(f, draft(ghost, "k", &[(a, 1)]), at(0)).await;
    assert_eq!(outcome, PlaceOutcome::UnknownUser(ghost));
    assert_stock(f, a, 4, "an unknown user must reserve nothing").await;
    assert_eq!(find_by_key(f, ghost, "k").await, None);
}

/// The same user, key and lines again returns the stored order unchanged (original
/// timestamps, same id) and reserves nothing more, even when the stock is now gone.
pub async fn replay_returns_the_stored_order_and_reserves_nothing(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("10.00"), 2).await;
    let order = placed(f, draft(user, "k", &[(a, 2)]), at(0)).await;
    assert_stock(f, a, 0, "the first placement reserves").await;
    for (n, now) in [at(5), at(60_000)].into_iter().enumerate() {
        let again = place_one(f, draft(user, "k", &[(a, 2)]), now).await;
        assert_eq!(
            again,
            PlaceOutcome::Replayed(order.clone()),
            "replay #{n} must return the stored order as it was"
        );
    }
    // Lines given in another order or split are the same merged lines.
    let split = place_one(f, draft(user, "k", &[(a, 1), (a, 1)]), at(7)).await;
    assert_eq!(split, PlaceOutcome::Replayed(order.clone()));
    assert_stock(f, a, 0, "a replay must not reserve again").await;
    assert_eq!(list(f, user, None, 1, 50).await, (vec![order.id()], 1));
}

/// The same user and key with different lines is `KeyReused`, naming the order that
/// holds the key; nothing is written.
pub async fn reused_key_with_other_lines_is_refused(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("10.00"), 10).await;
    let b = f.add_product(price("20.00"), 10).await;
    let order = placed(f, draft(user, "k", &[(a, 1)]), at(0)).await;
    for other in [vec![(a, 2)], vec![(b, 1)], vec![(a, 1), (b, 1)]] {
        let outcome = place_one(f, draft(user, "k", &other), at(1)).await;
        assert_eq!(
            outcome,
            PlaceOutcome::KeyReused {
                existing: order.id()
            },
            "key reused for {other:?}"
        );
    }
    assert_stock(f, a, 9, "a reused key must not reserve").await;
    assert_stock(f, b, 10, "a reused key must not reserve").await;
    assert_eq!(get(f, order.id()).await, Some(order));
}

/// Keys belong to a user: two users with one key get two orders. Keys are compared
/// exactly: `Key-A` and `key-a` are two keys.
pub async fn keys_are_scoped_per_user_and_case_sensitive(f: &dyn RepositoryFixture) {
    let alice = f.add_user().await;
    let bob = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let first = placed(f, draft(alice, "Key-A", &[(a, 1)]), at(0)).await;
    let second = placed(f, draft(bob, "Key-A", &[(a, 1)]), at(1)).await;
    assert_ne!(
        first.id(),
        second.id(),
        "two users with one key need two orders"
    );
    let third = placed(f, draft(alice, "key-a", &[(a, 1)]), at(2)).await;
    assert_ne!(
        first.id(),
        third.id(),
        "keys differing in case are different keys"
    );
    assert_stock(f, a, 7, "three orders, three units").await;
}

/// In a batch, stock goes to drafts in arrival order: a later draft sees what earlier
/// ones took (`available` included), and a short draft does not stop later ones that fit.
pub async fn batch_allots_stock_in_arrival_order(f: &dyn RepositoryFixture) {
    let u1 = f.add_user().await;
    let u2 = f.add_user().await;
    let u3 = f.add_user().await;
    let p = f.add_product(price("5.00"), 5).await;
    let drafts = [
        draft(u1, "a", &[(p, 3)]),
        draft(u2, "b", &[(p, 3)]),
        draft(u3, "c", &[(p, 2)]),
    ];
    let outcomes = place(f, &drafts, at(0)).await;
    assert!(
        matches!(&outcomes[0], PlaceOutcome::Placed(o) if o.user() == u1),
        "the first draft gets the stock first: {:?}",
        outcomes[0]
    );
    assert_eq!(
        outcomes[1],
        PlaceOutcome::InsufficientStock {
            product: p,
            requested: 3,
            available: 2
        },
        "the second draft sees what the first took"
    );
    assert!(
        matches!(&outcomes[2], PlaceOutcome::Placed(o) if o.user() == u3),
        "a short draft must not stop a later one that fits: {:?}",
        outcomes[2]
    );
    assert_stock(f, p, 0, "3 + 2 reserved").await;
    for (outcome, d) in outcomes.iter().zip(&drafts) {
        if let PlaceOutcome::Placed(o) = outcome {
            assert_eq!(
                get(f, o.id()).await.as_ref(),
                Some(o),
                "placed in a batch, stored"
            );
            assert_eq!(o.created_at(), at(0));
            assert_eq!(o.fingerprint(), d.fingerprint());
        }
    }
    assert_eq!(
        find_by_key(f, u2, "b").await,
        None,
        "the short draft holds no key"
    );
}

/// A draft whose total would exceed [`Money::max`] at the current prices is refused with
/// [`PlaceOutcome::TotalTooLarge`], writes nothing (no stock taken, no key recorded), and
/// does not fail the other drafts of its batch.
pub async fn a_total_above_the_maximum_refuses_only_that_draft(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let mut products = Vec::new();
    for _ in 0..11 {
        products.push(f.add_product(price("99999999.99"), 10_000).await);
    }
    // 11 × 10 000 × 99 999 999.99 = 10 999 999 998 900.00 > 9 999 999 999 999.99.
    let huge: Vec<(ProductId, u32)> = products.iter().map(|p| (*p, 10_000)).collect();
    let drafts = [
        draft(user, "huge", &huge),
        draft(user, "small", &[(products[0], 1)]),
    ];
    let out = place(f, &drafts, at(0)).await;
    assert_eq!(
        out[0],
        PlaceOutcome::TotalTooLarge,
        "the huge draft is refused"
    );
    assert!(
        matches!(out[1], PlaceOutcome::Placed(_)),
        "the other draft of the batch is still placed: {:?}",
        out[1]
    );
    assert_eq!(
        f.stock(products[0]).await,
        9_999,
        "only the small draft took stock"
    );
    for p in &products[1..] {
        assert_eq!(
            f.stock(*p).await,
            10_000,
            "the refused draft took no stock of {p}"
        );
    }
    assert_eq!(
        find_by_key(f, user, "huge").await,
        None,
        "the refused draft holds no key"
    );
}

/// One batch mixing every outcome: each draft gets its own, in order, and the failures
/// write nothing while the others are placed. A second draft with a key claimed earlier
/// in the same batch replays it (same lines) or is refused (other lines), exactly as if
/// the drafts had arrived one after the other.
pub async fn batch_outcomes_are_independent(f: &dyn RepositoryFixture) {
    let u1 = f.add_user().await;
    let u2 = f.add_user().await;
    let a = f.add_product(price("1.25"), 10).await;
    let b = f.add_product(price("7.00"), 1).await;
    let old = placed(f, draft(u1, "old", &[(a, 1)]), at(0)).await;
    let ghost_user = missing_user(u2);
    let ghost_product = missing_product(b);
    let drafts = [
        draft(u1, "n1", &[(a, 1)]),
        draft(ghost_user, "n2", &[(a, 1)]),
        draft(u1, "n3", &[(a, 1), (ghost_product, 1)]),
        draft(u1, "old", &[(a, 1)]),
        draft(u1, "old", &[(a, 2)]),
        draft(u2, "n4", &[(b, 2)]),
        draft(u2, "n5", &[(a, 1), (b, 1)]),
        draft(u2, "n5", &[(a, 1), (b, 1)]),
        draft(u2, "n5", &[(a, 3)]),
    ];
    let out = place(f, &drafts, at(1)).await;
    let PlaceOutcome::Placed(n1) = &out[0] else {
        panic!("draft 0 must be placed: {:?}", out[0])
    };
    assert_eq!(out[1], PlaceOutcome::UnknownUser(ghost_user), "draft 1");
    assert_eq!(
        out[2],
        PlaceOutcome::UnknownProduct(ghost_product),
        "draft 2"
    );
    assert_eq!(out[3], PlaceOutcome::Replayed(old.clone()), "draft 3");
    assert_eq!(
        out[4],
        PlaceOutcome::KeyReused { existing: old.id() },
        "draft 4"
    );
    assert_eq!(
        out[5],
        PlaceOutcome::InsufficientStock {
            product: b,
            requested: 2,
            available: 1
        },
        "draft 5"
    );
    let PlaceOutcome::Placed(n5) = &out[6] else {
        panic!("draft 6 must be placed: {:?}", out[6])
    };
    assert_eq!(
        out[7],
        PlaceOutcome::Replayed(n5.clone()),
        "draft 7 repeats draft 6 in the same batch: a replay"
    );
    assert_eq!(
        out[8],
        PlaceOutcome::KeyReused { existing: n5.id() },
        "draft 8 reuses draft 6's key with other lines"
    );
    assert_stock(f, a, 7, "old + n1 + n5 hold one unit each").await;
    assert_stock(f, b, 0, "n5 holds the only unit").await;
    assert_eq!(get(f, n1.id()).await.as_ref(), Some(n1));
    assert_eq!(get(f, n5.id()).await.as_ref(), Some(n5));
    assert_eq!(list(f, u1, None, 1, 50).await.1, 2, "u1 owns old and n1");
    assert_eq!(list(f, u2, None, 1, 50).await.1, 1, "u2 owns n5 only");
    assert_eq!(
        find_by_key(f, u1, "n3").await,
        None,
        "a refused draft holds no key"
    );
}

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

// ---------------------------------------------------------------------------------------
// reads
// ---------------------------------------------------------------------------------------

/// `list_by_user` returns only the user's orders, newest first by creation time then by
/// id, filtered by status, paged (1-based) with the total of all matching orders.
pub async fn list_by_user_is_newest_first_filtered_and_paged(f: &dyn RepositoryFixture) {
    let alice = f.add_user().await;
    let bob = f.add_user().await;
    let nobody = f.add_user().await;
    let a = f.add_product(price("1.00"), 100).await;
    // Creation times out of id order: created_at decides, then id (both descending).
    let o1 = placed(f, draft(alice, "1", &[(a, 1)]), at(30)).await;
    let o2 = placed(f, draft(alice, "2", &[(a, 1)]), at(10)).await;
    let o3 = placed(f, draft(alice, "3", &[(a, 1)]), at(30)).await;
    let o4 = placed(f, draft(alice, "4", &[(a, 1)]), at(20)).await;
    let o5 = placed(f, draft(alice, "5", &[(a, 2)]), at(31)).await;
    placed(f, draft(bob, "1", &[(a, 1)]), at(40)).await;
    let (first, second) = match (o1.id() < o3.id(), o3.id() < o1.id()) {
        (true, _) => (o3.id(), o1.id()),
        (_, true) => (o1.id(), o3.id()),
        _ => panic!("two orders share id {}", o1.id()),
    };
    applied(f, &o4, StatusChange::Cancel, at(50)).await;

    let newest_first = vec![o5.id(), first, second, o4.id(), o2.id()];
    assert_eq!(
        list(f, alice, None, 1, 50).await,
        (newest_first.clone(), 5),
        "all of alice's orders, newest first (ties by id, descending)"
    );
    assert_eq!(
        list(f, alice, None, 1, 2).await,
        (newest_first[..2].to_vec(), 5),
        "page 1 of 2"
    );
    assert_eq!(
        list(f, alice, None, 2, 2).await,
        (newest_first[2..4].to_vec(), 5),
        "page 2 of 2"
    );
    assert_eq!(
        list(f, alice, None, 3, 2).await,
        (newest_first[4..].to_vec(), 5),
        "last, partial page"
    );
    assert_eq!(
        list(f, alice, None, 4, 2).await,
        (vec![], 5),
        "beyond the last page"
    );
    assert_eq!(
        list(f, alice, Some(OrderStatus::Pending), 1, 3).await,
        (vec![o5.id(), first, second], 4),
        "filtered by status: paged and counted after filtering"
    );
    assert_eq!(
        list(f, alice, Some(OrderStatus::Cancelled), 1, 50).await,
        (vec![o4.id()], 1)
    );
    assert_eq!(
        list(f, alice, Some(OrderStatus::Paid), 1, 50).await,
        (vec![], 0)
    );
    assert_eq!(
        list(f, nobody, None, 1, 50).await,
        (vec![], 0),
        "a user without orders"
    );
}

/// `products` lists every product ascending by id with its current price and stock.
pub async fn products_are_listed_ascending_with_current_stock(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("29.99"), 10).await;
    let b = f.add_product(price("0.00"), 0).await;
    let c = f.add_product(price("99999.99"), 7).await;
    placed(f, draft(user, "k", &[(a, 4), (c, 7)]), at(0)).await;
    let products = match f.repository().products().await {
        Ok(p) => p,
        Err(e) => panic!("products() failed: {e}"),
    };
    let seen: Vec<(ProductId, Money, u64)> =
        products.iter().map(|p| (p.id, p.price, p.stock)).collect();
    let mut expected = vec![
        (a, price("29.99"), 6),
        (b, price("0.00"), 0),
        (c, price("99999.99"), 0),
    ];
    expected.sort_by_key(|(id, _, _)| *id);
    assert_eq!(
        seen, expected,
        "products ascending by id, with current stock"
    );
}

/// `find_by_key` finds an order by its owner and key, and only so.
pub async fn find_by_key_is_scoped_to_the_user(f: &dyn RepositoryFixture) {
    let alice = f.add_user().await;
    let bob = f.add_user().await;
    let a = f.add_product(price("1.00"), 10).await;
    let order = placed(f, draft(alice, "k", &[(a, 1)]), at(0)).await;
    assert_eq!(find_by_key(f, alice, "k").await, Some(order.clone()));
    assert_eq!(find_by_key(f, bob, "k").await, None, "another user's key");
    assert_eq!(find_by_key(f, alice, "other").await, None, "another key");
    assert_eq!(
        find_by_key(f, alice, "K").await,
        None,
        "keys compare exactly"
    );
    let cancelled = applied(f, &order, StatusChange::Cancel, at(1)).await;
    assert_eq!(
        find_by_key(f, alice, "k").await,
        Some(cancelled),
        "find_by_key returns the order as it is now"
    );
}

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

async fn claim(
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
        Err(e) => panic!("claim_stranded at {now} failed: {e}"),
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
