//! One error enum per use case. Business outcomes are variants (each documents the HTTP
//! status the REST adapter gives it); everything else is `Unavailable` or `Unexpected`.

use std::collections::BTreeMap;
use std::fmt;

use crate::domain::{OrderId, OrderStatus, ProductId, UserId};
use crate::ports::RepositoryError;

/// A store failure becomes the use case's own `Unavailable` / `Unexpected`: every use
/// case error has both, with the same meaning.
macro_rules! from_repository_error {
    ($($error:ident),*) => {$(
        impl From<RepositoryError> for $error {
            fn from(e: RepositoryError) -> Self {
                match e {
                    RepositoryError::Unavailable(m) => $error::Unavailable(m),
                    RepositoryError::Unexpected(e) => $error::Unexpected(e),
                }
            }
        }
    )*};
}

from_repository_error!(
    CreateOrderError,
    ProcessOrderError,
    ReconcileError,
    CancelOrderError,
    GetOrderError,
    ListOrdersError
);

/// Every field at fault in a request, with every message for each: `items.2.quantity` →
/// `["quantity must be between 1 and 10000, got 0"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    fields: BTreeMap<String, Vec<String>>,
}

impl ValidationErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Records `message` for `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.fields
            .entry(field.into())
            .or_default()
            .push(message.into());
    }
    /// Whether nothing is at fault.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
    /// Field → messages, fields sorted.
    pub fn fields(&self) -> &BTreeMap<String, Vec<String>> {
        &self.fields
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (field, messages) in &self.fields {
            for m in messages {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(f, "{field}: {m}")?;
            }
        }
        Ok(())
    }
}

/// Why `create_order` did not create (or replay) an order. In every case nothing was
/// written.
#[derive(Debug, thiserror::Error)]
pub enum CreateOrderError {
    /// The request is malformed (422 `VALIDATION_FAILED`).
    #[error("the given data was invalid: {0}")]
    Validation(ValidationErrors),
    /// The key was used by this user for an order with different lines
    /// (422 `IDEMPOTENCY_KEY_REUSED`).
    #[error("idempotency key already used for order {existing} with a different payload")]
    IdempotencyKeyReused {
        /// The order that owns the key.
        existing: OrderId,
    },
    /// Another request with this key is still being processed (409
    /// `IDEMPOTENCY_KEY_IN_FLIGHT`); retrying later replays its result.
    #[error("a request with this idempotency key is still in flight")]
    IdempotencyKeyInFlight,
    /// A product lock stayed busy after the last attempt (409 `LOCK_CONFLICT`).
    #[error("could not acquire lock for product {product}; please retry")]
    LockConflict {
        /// The product whose lock was busy.
        product: ProductId,
    },
    /// Not enough stock (409 `INSUFFICIENT_STOCK`).
    #[error(
        "insufficient stock for product {product}. Requested: {requested}, Available: {available}"
    )]
    InsufficientStock {
        /// The product that is short.
        product: ProductId,
        /// Units requested.
        requested: u32,
        /// Units available.
        available: u64,
    },
    /// A product does not exist (422 `VALIDATION_FAILED` on the item).
    #[error("product {0} does not exist")]
    UnknownProduct(ProductId),
    /// The user does not exist (401/422 depending on the entry point).
    #[error("user {0} does not exist")]
    UnknownUser(UserId),
    /// A dependency is down; nothing was written and a retry may succeed (503).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500, opaque).
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why `process_order` could not finish its job; the worker gives the job back to the
/// queue for a retry.
#[derive(Debug, thiserror::Error)]
pub enum ProcessOrderError {
    /// The provider never answered a charge nor the void that followed: whether the order
    /// was charged is unknown, so it stays Processing; the worker releases its lease and
    /// the job is retried (and, once the queue gives up, the reconciler hands it out
    /// again).
    #[error("payment outcome of order {0} unknown: the provider is unreachable")]
    PaymentUnresolved(OrderId),
    /// The order store is down.
    #[error("order store unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why one reconciler pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The order store is down; nothing was claimed.
    #[error("order store unavailable: {0}")]
    Unavailable(String),
    /// The queue refused a job; the orders claimed but not enqueued are claimed again
    /// after `stale_after`.
    #[error("job queue refused a stranded order: {0}")]
    Queue(#[from] crate::ports::QueueError),
    /// Anything else.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why `cancel_order` did not cancel.
#[derive(Debug, thiserror::Error)]
pub enum CancelOrderError {
    /// No such order for this user (404 `NOT_FOUND`; also for another user's order).
    #[error("order not found")]
    NotFound,
    /// The order is past Pending (409 `INVALID_TRANSITION`).
    #[error("order cannot be cancelled. Current status: {current}")]
    InvalidTransition {
        /// Its status now.
        current: OrderStatus,
    },
    /// The order store is down (503).
    #[error("order store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why `get_order` found nothing.
#[derive(Debug, thiserror::Error)]
pub enum GetOrderError {
    /// No such order for this user (404; also for another user's order).
    #[error("order not found")]
    NotFound,
    /// The order store is down (503).
    #[error("order store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why `list_orders` / `list_products` failed.
#[derive(Debug, thiserror::Error)]
pub enum ListOrdersError {
    /// Bad page parameters (422).
    #[error("the given data was invalid: {0}")]
    Validation(ValidationErrors),
    /// The order store is down (503).
    #[error("order store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error(transparent)]
    Unexpected(anyhow::Error),
}
