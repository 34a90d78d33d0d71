//! The reference system's demo data, loaded into a [`MemoryOrderRepository`]: the
//! embedded server's `--seed` and the starting point of many tests.

use order_core::{Money, ProductId, UserId};

use crate::MemoryOrderRepository;

/// The ids the reference data received.
///
/// Users, in order: Alice (id 1), Bob (2), Charlie (3) — see
/// [`ReferenceData::USER_NAMES`]. This repository stores users as bare ids; names,
/// e-mails and the demo password (`password`) belong to the authentication store.
///
/// Products (id, name, price, stock): 1 "Laptop Pro" 999.99 × 50, 2 "Wireless Mouse"
/// 29.99 × 200, 3 "USB-C Hub" 49.99 × 100, 4 "Mechanical Keyboard" 149.99 × 75,
/// 5 "Limited Edition Headphones" 299.99 × 1 — see [`ReferenceData::PRODUCTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceData {
    /// Alice.
    pub alice: UserId,
    /// Bob.
    pub bob: UserId,
    /// Charlie.
    pub charlie: UserId,
    /// "Laptop Pro", 999.99, stock 50.
    pub laptop: ProductId,
    /// "Wireless Mouse", 29.99, stock 200.
    pub mouse: ProductId,
    /// "USB-C Hub", 49.99, stock 100.
    pub hub: ProductId,
    /// "Mechanical Keyboard", 149.99, stock 75.
    pub keyboard: ProductId,
    /// "Limited Edition Headphones", 299.99, stock 1: the oversell test.
    pub headphones: ProductId,
}

impl ReferenceData {
    /// The demo users' names, in id order (Alice, Bob, Charlie).
    pub const USER_NAMES: [&'static str; 3] = ["Alice", "Bob", "Charlie"];

    /// The demo products as (name, price in cents, stock), in id order.
    pub const PRODUCTS: [(&'static str, u64, u64); 5] = [
        ("Laptop Pro", 99_999, 50),
        ("Wireless Mouse", 2_999, 200),
        ("USB-C Hub", 4_999, 100),
        ("Mechanical Keyboard", 14_999, 75),
        ("Limited Edition Headphones", 29_999, 1),
    ];

    /// The demo products' ids, in id order.
    pub fn products(&self) -> [ProductId; 5] {
        [
            self.laptop,
            self.mouse,
            self.hub,
            self.keyboard,
            self.headphones,
        ]
    }

    /// The demo users' ids, in id order.
    pub fn users(&self) -> [UserId; 3] {
        [self.alice, self.bob, self.charlie]
    }
}

/// Adds the three demo users and the five demo products to `repository` and returns
/// their ids. On an empty repository those are users 1–3 and products 1–5; on one that
/// already holds data they are simply the next ids.
pub fn seed_reference_data(repository: &MemoryOrderRepository) -> ReferenceData {
    let [alice, bob, charlie] = ReferenceData::USER_NAMES.map(|_| repository.add_user());
    let [laptop, mouse, hub, keyboard, headphones] =
        ReferenceData::PRODUCTS.map(|(name, cents, stock)| {
            // Every price above is far below the maximum, so `from_cents` cannot fail;
            // zero is only a fallback the compiler needs.
            let price = Money::from_cents(cents).unwrap_or(Money::ZERO);
            repository.add_product(name, price, stock)
        });
    ReferenceData {
        alice,
        bob,
        charlie,
        laptop,
        mouse,
        hub,
        keyboard,
        headphones,
    }
}

#[cfg(test)]
mod tests {
    use order_core::ports::OrderRepository;

    use super::*;

    #[tokio::test]
    async fn the_reference_data_matches_the_reference_system() {
        let repo = MemoryOrderRepository::new();
        let data = seed_reference_data(&repo);
        assert_eq!(data.users().map(UserId::get), [1, 2, 3]);
        assert_eq!(data.products().map(ProductId::get), [1, 2, 3, 4, 5]);
        let products: Vec<_> = repo
            .products()
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.id.get(), p.name, p.price.to_string(), p.stock))
            .collect();
        assert_eq!(
            products,
            vec![
                (1, "Laptop Pro".to_owned(), "999.99".to_owned(), 50),
                (2, "Wireless Mouse".to_owned(), "29.99".to_owned(), 200),
                (3, "USB-C Hub".to_owned(), "49.99".to_owned(), 100),
                (4, "Mechanical Keyboard".to_owned(), "149.99".to_owned(), 75),
                (
                    5,
                    "Limited Edition Headphones".to_owned(),
                    "299.99".to_owned(),
                    1
                ),
            ]
        );
        assert_eq!(repo.stock(data.headphones), Some(1));
    }
}
