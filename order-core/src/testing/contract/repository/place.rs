//! Checks of `place`: stock, atomicity, idempotency, batches.

use super::RepositoryFixture;
use super::helpers::*;
use crate::domain::{Money, ProductId};
use crate::ports::PlaceOutcome;

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
        matches!(&outcomes[0], PlaceOutcome::Placed(o, _) if o.user() == u1),
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
        matches!(&outcomes[2], PlaceOutcome::Placed(o, _) if o.user() == u3),
        "a short draft must not stop a later one that fits: {:?}",
        outcomes[2]
    );
    assert_stock(f, p, 0, "3 + 2 reserved").await;
    for (outcome, d) in outcomes.iter().zip(&drafts) {
        if let PlaceOutcome::Placed(o, _) = outcome {
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
        matches!(out[1], PlaceOutcome::Placed(_, _)),
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

/// A key an order already holds decides a later draft with that key before anything
/// else, in a batch as alone: the same lines replay the order even when its product has
/// run out since, and other lines — even naming a product that does not exist, or more
/// than is in stock — are refused as a reused key, not as a shortage or an unknown
/// product. Nothing is written for any of them.
pub async fn a_held_key_answers_before_stock_and_products(f: &dyn RepositoryFixture) {
    let u = f.add_user().await;
    let scarce = f.add_product(price("2.00"), 1).await;
    let ghost = missing_product(scarce);
    let old = placed(f, draft(u, "old", &[(scarce, 1)]), at(0)).await;
    let drafts = [
        draft(u, "fresh", &[(scarce, 1)]),
        draft(u, "old", &[(scarce, 1)]),
        draft(u, "old", &[(ghost, 1)]),
        draft(u, "old", &[(scarce, 5)]),
    ];
    for (i, d) in drafts.iter().enumerate().skip(1) {
        let alone = place(f, std::slice::from_ref(d), at(1)).await;
        let expected = if i == 1 {
            PlaceOutcome::Replayed(old.clone())
        } else {
            PlaceOutcome::KeyReused { existing: old.id() }
        };
        assert_eq!(alone, vec![expected], "draft {i} alone");
    }
    let out = place(f, &drafts, at(1)).await;
    assert_eq!(
        out,
        vec![
            PlaceOutcome::InsufficientStock {
                product: scarce,
                requested: 1,
                available: 0
            },
            PlaceOutcome::Replayed(old.clone()),
            PlaceOutcome::KeyReused { existing: old.id() },
            PlaceOutcome::KeyReused { existing: old.id() },
        ],
        "in one batch"
    );
    assert_stock(f, scarce, 0, "only the old order holds the unit").await;
    assert_eq!(
        list(f, u, None, 1, 50).await.1,
        1,
        "u owns the old order only"
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
    let PlaceOutcome::Placed(n1, _) = &out[0] else {
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
    let PlaceOutcome::Placed(n5, _) = &out[6] else {
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
