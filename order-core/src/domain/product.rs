//! Products as the order flow sees them: a price and the stock available right now.

use super::{Money, ProductId};

/// A product with its current unit price and available stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// The product's id.
    pub id: ProductId,
    /// Display name.
    pub name: String,
    /// Unit price charged for new orders.
    pub price: Money,
    /// Units available for new orders (never negative).
    pub stock: u64,
}
