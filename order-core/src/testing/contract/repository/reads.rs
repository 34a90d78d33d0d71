//! Checks of the reads: listing, products, lookup by key.

use super::RepositoryFixture;
use super::helpers::*;
use crate::domain::{Money, OrderStatus, ProductId, StatusChange};

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
        Err(e) => panic!("products() failed: {}", crate::app::ErrorChain(&e)),
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

/// `product(id)` is exactly the matching element of `products()` (current price, stock
/// and name), and `None` for an id no product has.
pub async fn product_reads_one_product_as_products_lists_it(f: &dyn RepositoryFixture) {
    let user = f.add_user().await;
    let a = f.add_product(price("12.34"), 9).await;
    let b = f.add_product(price("0.00"), 0).await;
    let c = f.add_product(price("99999.99"), 3).await;
    placed(f, draft(user, "k", &[(a, 2), (c, 3)]), at(0)).await;
    let products = match f.repository().products().await {
        Ok(p) => p,
        Err(e) => panic!("products() failed: {}", crate::app::ErrorChain(&e)),
    };
    assert_eq!(products.len(), 3, "products() must list the three products");
    for listed in &products {
        let one = match f.repository().product(listed.id).await {
            Ok(p) => p,
            Err(e) => panic!(
                "product({}) failed: {}",
                listed.id,
                crate::app::ErrorChain(&e)
            ),
        };
        assert_eq!(
            one.as_ref(),
            Some(listed),
            "product({}) must equal its element of products()",
            listed.id
        );
    }
    let stocks: Vec<(ProductId, u64)> = products.iter().map(|p| (p.id, p.stock)).collect();
    let mut expected = vec![(a, 7), (b, 0), (c, 0)];
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(stocks, expected, "product() reads the current stock");
    let ghost = missing_product(a.max(b).max(c));
    match f.repository().product(ghost).await {
        Ok(None) => {}
        Ok(Some(p)) => panic!("product({ghost}) must be None: no such product, got {p:?}"),
        Err(e) => panic!(
            "product({ghost}) must be None, not an error: {}",
            crate::app::ErrorChain(&e)
        ),
    }
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
