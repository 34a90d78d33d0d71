//! [`OrderDraft`]: a validated request to place an order, before it has an id or prices
//! — what the service hands the repository, and what a program with typed values builds
//! to call `OrderService::place_order` directly.

use super::order::{Order, OrderLine};
use super::{IdempotencyKey, Money, MoneyError, ProductId, Quantity, RequestFingerprint, UserId};

/// A validated request to place an order, before it has an id or prices.
///
/// Lines are merged per product (quantities summed) and sorted by product id ascending,
/// which is also the order in which locks and rows are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDraft {
    user: UserId,
    items: Vec<(ProductId, Quantity)>,
    idempotency_key: IdempotencyKey,
    fingerprint: RequestFingerprint,
}

/// Why items cannot form an [`OrderDraft`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DraftError {
    /// An order needs at least one line.
    #[error("an order needs at least one item")]
    Empty,
    /// Merged quantities for one product exceed [`Quantity::MAX`].
    #[error("total quantity for product {0} exceeds 10000")]
    MergedQuantityTooLarge(ProductId),
    /// More distinct products than [`OrderDraft::MAX_LINES`].
    #[error("an order may have at most {max} distinct products, got {got}")]
    TooManyLines {
        /// The limit, [`OrderDraft::MAX_LINES`].
        max: usize,
        /// Distinct products in the draft.
        got: usize,
    },
}

impl OrderDraft {
    /// The most distinct products one order may hold. Every adapter can store an order
    /// this large in one statement (MySQL's 65 535 placeholders would overflow at 13 108
    /// lines); the service refuses more than this many lines *as sent*, before merging.
    pub const MAX_LINES: usize = 50;

    /// Merges duplicate products (summing quantities) and sorts by product id.
    ///
    /// # Errors
    /// [`DraftError::Empty`] with no items; [`DraftError::MergedQuantityTooLarge`] when
    /// a product's summed quantity exceeds 10 000; [`DraftError::TooManyLines`] beyond
    /// [`OrderDraft::MAX_LINES`] distinct products.
    pub fn new(
        user: UserId,
        items: impl IntoIterator<Item = (ProductId, Quantity)>,
        idempotency_key: IdempotencyKey,
    ) -> Result<Self, DraftError> {
        let mut merged: Vec<(ProductId, Quantity)> = Vec::new();
        let mut raw: Vec<(ProductId, Quantity)> = items.into_iter().collect();
        raw.sort_by_key(|(p, _)| *p);
        for (product, qty) in raw {
            match merged.last_mut() {
                Some((last, acc)) if *last == product => {
                    *acc = Quantity::new(i64::from(acc.get()) + i64::from(qty.get()))
                        .map_err(|_| DraftError::MergedQuantityTooLarge(product))?;
                }
                _ => merged.push((product, qty)),
            }
        }
        if merged.is_empty() {
            return Err(DraftError::Empty);
        }
        if merged.len() > Self::MAX_LINES {
            return Err(DraftError::TooManyLines {
                max: Self::MAX_LINES,
                got: merged.len(),
            });
        }
        let canon: Vec<(u64, u32)> = merged.iter().map(|(p, q)| (p.get(), q.get())).collect();
        Ok(Self {
            user,
            fingerprint: RequestFingerprint::of_items(&canon),
            items: merged,
            idempotency_key,
        })
    }

    /// The ordering user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// Merged lines, ascending by product id, product ids unique.
    pub fn items(&self) -> &[(ProductId, Quantity)] {
        &self.items
    }

    /// The idempotency key.
    pub fn idempotency_key(&self) -> &IdempotencyKey {
        &self.idempotency_key
    }

    /// The fingerprint of the merged lines: a cheap pre-check only. Different
    /// fingerprints prove different lines; equal ones must be confirmed with
    /// [`OrderDraft::same_lines_as`].
    pub fn fingerprint(&self) -> RequestFingerprint {
        self.fingerprint
    }

    /// Whether `order` was created from exactly these merged lines (product and
    /// quantity, line by line; prices are not compared). This is the idempotency
    /// comparison: a replay must send the same lines as the request that created the
    /// order.
    pub fn same_lines_as(&self, order: &Order) -> bool {
        self.fingerprint == order.fingerprint()
            && self.items.len() == order.lines().len()
            && self
                .items
                .iter()
                .zip(order.lines())
                .all(|((p, q), line)| *p == line.product && *q == line.quantity)
    }

    /// The product ids, ascending and unique.
    pub fn product_ids(&self) -> impl Iterator<Item = ProductId> + '_ {
        self.items.iter().map(|(p, _)| *p)
    }

    /// The draft's lines at `unit_prices` (one per line, in the draft's order; extra
    /// prices are ignored, missing ones drop their lines).
    pub fn priced_lines(&self, unit_prices: &[Money]) -> Vec<OrderLine> {
        self.items
            .iter()
            .zip(unit_prices)
            .map(|((product, quantity), unit_price)| OrderLine {
                product: *product,
                quantity: *quantity,
                unit_price: *unit_price,
            })
            .collect()
    }

    /// The exact total of the draft at `unit_prices`.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when it exceeds [`Money::max`].
    pub fn total_at(&self, unit_prices: &[Money]) -> Result<Money, MoneyError> {
        Order::total_of(&self.priced_lines(unit_prices))
    }
}
