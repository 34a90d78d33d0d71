//! One error enum per use case. Business outcomes are variants (each documents the HTTP
//! status the REST adapter gives it); everything else is `Unavailable` or `Unexpected`.
//!
//! The errors keep their cause, on the convention the ports follow (see
//! [`crate::ports`]): `Unavailable` holds the port error that caused it as its
//! `#[source]` (itself holding the driver error), and its `Display` is the use case's
//! own sentence without the cause; `Unexpected` is transparent. So `Display` alone is
//! safe to show (each layer says what it could not do, never twice), and
//! [`ErrorChain`] renders the whole chain for logs: `cannot cancel the order now: order
//! store unavailable: pool timed out while waiting for an open connection`.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;

use crate::domain::{OrderId, OrderStatus, ProductId, UserId};
use crate::ports::RepositoryError;

/// A store failure becomes the use case's own `Unavailable` (the [`RepositoryError`]
/// kept as its source) or `Unexpected` (the same `anyhow::Error`): every use case error
/// has both, with the same meaning.
macro_rules! from_repository_error {
    ($($error:ident),*) => {$(
        impl From<RepositoryError> for $error {
            fn from(e: RepositoryError) -> Self {
                match e {
                    e @ RepositoryError::Unavailable(_) => {
                        $error::Unavailable(anyhow::Error::new(e))
                    }
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
    ListOrdersError,
    ListProductsError
);

/// Renders an error and every [`source`](Error::source) below it, separated by `": "`,
/// each part once: the form for logs and for text that outlives the error (a nack
/// reason). `Display` of the error alone says only what its own layer could not do.
///
/// Some driver errors break the convention and repeat their source in their own
/// `Display` (`error communicating with database: connection refused`, whose source is
/// `connection refused`): a source whose text the part above already ends with is
/// skipped, so it still shows once.
///
/// ```
/// use order_core::app::ErrorChain;
/// use order_core::ports::RepositoryError;
///
/// let e = RepositoryError::unavailable_msg("connection reset");
/// assert_eq!(e.to_string(), "order store unavailable");
/// assert_eq!(
///     ErrorChain(&e).to_string(),
///     "order store unavailable: connection reset"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut above = self.0.to_string();
        f.write_str(&above)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !above.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            above = text;
            cause = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

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
    /// A dependency is down; nothing was written and a retry may succeed (503). The
    /// source is the port error.
    #[error("cannot create the order now")]
    Unavailable(#[source] anyhow::Error),
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
    /// The order store is down. The source is the [`RepositoryError`].
    #[error("cannot process the order now")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why one reconciler pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The order store is down; nothing was claimed. The source is the
    /// [`RepositoryError`].
    #[error("cannot look for stranded orders now")]
    Unavailable(#[source] anyhow::Error),
    /// The queue refused a job; the orders claimed but not enqueued are claimed again
    /// after `stale_after`.
    #[error("job queue refused a stranded order")]
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
    /// The order store is down (503). The source is the [`RepositoryError`].
    #[error("cannot cancel the order now")]
    Unavailable(#[source] anyhow::Error),
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
    /// The order store is down (503). The source is the [`RepositoryError`].
    #[error("cannot read the order now")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else (500).
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why `list_orders` failed.
#[derive(Debug, thiserror::Error)]
pub enum ListOrdersError {
    /// Bad page parameters (422).
    #[error("the given data was invalid: {0}")]
    Validation(ValidationErrors),
    /// The order store is down (503). The source is the [`RepositoryError`].
    #[error("cannot list the orders now")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else (500).
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

/// Why `list_products` failed.
#[derive(Debug, thiserror::Error)]
pub enum ListProductsError {
    /// The order store is down (503). The source is the [`RepositoryError`].
    #[error("cannot list the products now")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else (500).
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver error as an adapter would hold it: its own message and its own cause.
    #[derive(Debug, thiserror::Error)]
    #[error("pool timed out")]
    struct DriverError(#[source] std::io::Error);

    fn driver_error() -> DriverError {
        DriverError(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
    }

    /// Every message in the chain below `e`, `e` included.
    fn chain(e: &(dyn Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(e), |e| (*e).source())
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_use_case_error_keeps_the_repository_error_and_the_driver_error_as_its_sources() {
        let e = CancelOrderError::from(RepositoryError::unavailable(driver_error()));
        assert!(matches!(e, CancelOrderError::Unavailable(_)), "{e:?}");
        assert_eq!(
            chain(&e),
            [
                "cannot cancel the order now",
                "order store unavailable",
                "pool timed out",
                "connection refused"
            ]
        );
        let repository = e.source().and_then(|s| s.downcast_ref::<RepositoryError>());
        assert!(
            matches!(repository, Some(RepositoryError::Unavailable(_))),
            "the source is the port error itself: {repository:?}"
        );
        let driver = repository
            .and_then(|r| r.source())
            .and_then(|s| s.downcast_ref::<DriverError>());
        assert!(
            driver.is_some(),
            "the port error's source is the driver error"
        );
        assert_eq!(
            ErrorChain(&e).to_string(),
            "cannot cancel the order now: order store unavailable: pool timed out: \
             connection refused"
        );
    }

    #[test]
    fn display_is_the_layers_own_sentence_and_each_cause_is_rendered_once() {
        let e = CreateOrderError::from(RepositoryError::unavailable_msg("db down"));
        assert_eq!(e.to_string(), "cannot create the order now");
        assert_eq!(
            ErrorChain(&e).to_string(),
            "cannot create the order now: order store unavailable: db down"
        );
        let queue = ReconcileError::from(crate::ports::QueueError::unavailable_msg("refused"));
        assert_eq!(
            ErrorChain(&queue).to_string(),
            "job queue refused a stranded order: job queue unavailable: refused"
        );
    }

    /// A driver error that repeats its source in its own `Display`.
    #[derive(Debug, thiserror::Error)]
    #[error("error communicating with database: {0}")]
    struct Repeating(#[source] std::io::Error);

    #[test]
    fn a_source_the_error_above_already_shows_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = RepositoryError::unavailable(Repeating(io));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "order store unavailable: error communicating with database: refused"
        );
    }

    #[test]
    fn unexpected_stays_transparent() {
        let cause = anyhow::Error::new(driver_error()).context("reading order 7");
        let e = ListProductsError::from(RepositoryError::Unexpected(cause));
        assert!(matches!(e, ListProductsError::Unexpected(_)), "{e:?}");
        assert_eq!(
            chain(&e),
            ["reading order 7", "pool timed out", "connection refused"]
        );
    }
}
