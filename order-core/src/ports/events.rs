//! The `EventPublisher` port: best-effort broadcasts of status changes.

use async_trait::async_trait;

use crate::domain::{FailureReason, Money, Order, OrderId, OrderStatus, Timestamp, UserId};

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
///
/// Every event is first appended to the owner's durable event log by the
/// [`OrderRepository`](crate::ports::OrderRepository), in the transaction that made the
/// change, and carries its place in that log: `seq`, the owner's per-user sequence
/// number (1, 2, 3, … with no gaps). A client that sees a gap, or reconnects, reads what
/// it missed with [`OrderRepository::events_after`](crate::ports::OrderRepository::events_after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    /// The owner's per-user sequence number of this event (1-based, consecutive).
    pub seq: u64,
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

/// One value of an event payload (see [`OrderEvent::payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadValue {
    /// A JSON string.
    Text(String),
    /// A JSON (non-negative integer) number.
    Number(u64),
}

impl OrderEvent {
    /// The event that records `order`'s current status, with `seq` as its place in
    /// the owner's log: what a repository appends when it places an order (Pending:
    /// `order.created`, at `created_at`) or changes its status (Processing, Paid,
    /// Failed with the order's failure reason, Cancelled: at `updated_at`). Every
    /// adapter builds logged events with this function, so the log, the live event and
    /// the order agree field by field.
    pub fn logged(order: &Order, seq: u64) -> OrderEvent {
        let kind = match order.status() {
            OrderStatus::Pending => OrderEventKind::Created,
            OrderStatus::Processing => OrderEventKind::Processing,
            OrderStatus::Paid => OrderEventKind::Paid,
            OrderStatus::Failed => OrderEventKind::Failed(
                order
                    .failure_reason()
                    .cloned()
                    .unwrap_or_else(|| FailureReason::new("")),
            ),
            OrderStatus::Cancelled => OrderEventKind::Cancelled,
        };
        let at = match order.status() {
            OrderStatus::Pending => order.created_at(),
            OrderStatus::Processing | OrderStatus::Paid | OrderStatus::Failed => order.updated_at(),
            OrderStatus::Cancelled => order.cancelled_at().unwrap_or(order.updated_at()),
        };
        OrderEvent {
            seq,
            kind,
            order: order.id(),
            user: order.user(),
            total: order.total(),
            at,
        }
    }

    /// The private channel of the event's owner: `private-orders.{user_id}` (the
    /// reference's channel name, as Laravel Echo's `private('orders.{id}')` spells it on
    /// the wire).
    pub fn channel(&self) -> String {
        format!("private-orders.{}", self.user)
    }

    /// The event's payload as the reference broadcasts it, field by field in a fixed
    /// order, for a driving adapter to serialize (the WebSocket gateway sends it as the
    /// Pusher `data` string; the HTTP API's missed-event read returns it as `data`):
    ///
    /// - `order.created`: `order_id`, `total`, `created_at`, `seq`;
    /// - `order.processing`: `order_id`, `processing_at`, `seq`;
    /// - `order.paid`: `order_id`, `total`, `paid_at`, `seq`;
    /// - `order.failed`: `order_id`, `reason`, `failed_at`, `seq`;
    /// - `order.cancelled`: `order_id`, `cancelled_at`, `seq`.
    ///
    /// `order_id` and `total` are strings (`"42"`, `"100.00"`: the reference's types),
    /// instants are RFC 3339 UTC with milliseconds, `seq` is a number.
    pub fn payload(&self) -> Vec<(&'static str, PayloadValue)> {
        let text = PayloadValue::Text;
        let at = text(self.at.to_rfc3339());
        let mut fields = vec![("order_id", text(self.order.to_string()))];
        match &self.kind {
            OrderEventKind::Created => {
                fields.push(("total", text(self.total.to_string())));
                fields.push(("created_at", at));
            }
            OrderEventKind::Processing => fields.push(("processing_at", at)),
            OrderEventKind::Paid => {
                fields.push(("total", text(self.total.to_string())));
                fields.push(("paid_at", at));
            }
            OrderEventKind::Failed(reason) => {
                fields.push(("reason", text(reason.as_str().to_owned())));
                fields.push(("failed_at", at));
            }
            OrderEventKind::Cancelled => fields.push(("cancelled_at", at)),
        }
        fields.push(("seq", PayloadValue::Number(self.seq)));
        fields
    }
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
