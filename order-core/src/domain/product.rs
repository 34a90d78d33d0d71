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

/// The most units of one product the engine keeps track of: its stock plus every unit
/// reserved by its Pending and Processing orders (which Cancel and Fail put back). Every
/// adapter holds this one limit — MySQL's `INT UNSIGNED` column is exactly this wide —
/// so returning stock can never overflow the store.
pub const MAX_STOCK: u64 = u32::MAX as u64;

/// Why a restock was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestockError {
    /// No product has this id.
    #[error("product {0} does not exist")]
    UnknownProduct(ProductId),
    /// Stock plus reserved units plus the restock would exceed [`MAX_STOCK`].
    #[error("restocking product {product} would take its stock and reservations above {max} units")]
    AboveMaximum {
        /// The product.
        product: ProductId,
        /// The limit, [`MAX_STOCK`].
        max: u64,
    },
}
