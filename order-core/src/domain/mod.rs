//! The domain: value objects with validating constructors, the order state machine and
//! the `Order` entity. Pure code: no I/O, no serde, no database types. Adapters own their
//! rows and DTOs and convert through the constructors here.

mod draft;
mod ids;
mod money;
mod order;
mod product;
mod time;
mod values;

pub use draft::{DraftError, OrderDraft};
pub use ids::{IdError, OrderId, ProductId, UserId};
pub use money::{Money, MoneyError};
pub use order::{
    FailureReason, Lease, LeaseToken, Order, OrderDataError, OrderLine, OrderParts, OrderStatus,
    StatusChange, StatusParseError, TransitionError,
};
pub use product::{MAX_STOCK, Product, RestockError};
pub use time::Timestamp;
pub use values::{
    IdempotencyKey, IdempotencyKeyError, Quantity, QuantityError, RequestFingerprint,
};
