//! The `EventPublisher` port: best-effort broadcasts of status changes.

use async_trait::async_trait;

use crate::domain::{FailureReason, Money, OrderId, Timestamp, UserId};

/// Errors of [`EventPublisher`].
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event bus cannot be reached; the event is lost (events are best effort).
    #[error("event bus unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What happened to an order, as broadcast to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEventKind {
    /// `order.created`.
    Created,
    /// `order.processing`.
    Processing,
    /// `order.paid`.
    Paid,
    /// `order.failed`, with the reason.
    Failed(FailureReason),
    /// `order.cancelled`.
    Cancelled,
}

impl OrderEventKind {
    /// The wire name: `order.created`, `order.processing`, `order.paid`, `order.failed`,
    /// `order.cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            OrderEventKind::Created => "order.created",
            OrderEventKind::Processing => "order.processing",
            OrderEventKind::Paid => "order.paid",
            OrderEventKind::Failed(_) => "order.failed",
            OrderEventKind::Cancelled => "order.cancelled",
        }
    }
}

/// A status change of one order, for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    /// What happened.
    pub kind: OrderEventKind,
    /// The order.
    pub order: OrderId,
    /// Its owner (the event goes to the owner's private channel).
    pub user: UserId,
    /// The order total.
    pub total: Money,
    /// When it happened.
    pub at: Timestamp,
}

/// Broadcasts order events. Best effort: a failure is logged and never undoes or blocks
/// a transition.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes one event. SHOULD return promptly (the service bounds it by a timeout).
    ///
    /// # Errors
    /// [`PublishError`] when the event could not be handed to the bus.
    async fn publish(&self, event: OrderEvent) -> Result<(), PublishError>;
}
