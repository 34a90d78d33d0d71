//! The `PaymentGateway` port: charging an order, idempotently per key.

use async_trait::async_trait;

use crate::domain::{FailureReason, Money, OrderId};

/// Errors of [`PaymentGateway`].
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The provider could not be reached or answered with a retryable failure. Whether
    /// the charge happened is unknown; retrying with the same key is safe.
    #[error("payment provider temporarily unavailable")]
    Transient(#[source] anyhow::Error),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The provider's answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The amount was charged.
    Approved,
    /// The charge was refused; nothing was charged.
    Declined(FailureReason),
}

/// Charges an order.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Charges `amount` for order `key`. A repeated call with the same key MUST return the
    /// first call's outcome and MUST NOT charge again.
    ///
    /// # Errors
    /// [`PaymentError::Transient`] when the outcome is unknown and a retry is safe.
    async fn charge(&self, key: OrderId, amount: Money) -> Result<PaymentOutcome, PaymentError>;

    /// Settles a key whose charges never gave an answer: if a charge for `key` already
    /// has an outcome, returns it (possibly `Approved` — the charge went through after
    /// all); otherwise records a decline for `key`, so that every later `charge` with
    /// this key returns that decline and charges nothing, and returns it. First outcome
    /// wins, atomically, exactly as for `charge`.
    ///
    /// The service calls it before failing an order whose payment stayed unknown, so a
    /// stalled worker that wakes up later cannot charge a Failed order.
    ///
    /// # Errors
    /// [`PaymentError::Transient`] when the provider cannot be reached; nothing is settled
    /// and the order must not be failed yet.
    async fn void(&self, key: OrderId) -> Result<PaymentOutcome, PaymentError>;
}
