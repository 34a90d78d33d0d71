//! The order state machine and the `Order` entity.
//!
//! Legal transitions, and only these: Pending→Processing, Pending→Cancelled,
//! Processing→Paid, Processing→Failed. Paid, Failed and Cancelled are terminal.
//! A processing order carries a lease (token + expiry) that fences late writers: only the
//! lease holder may complete it, and an expired lease may be taken over with a new token.

use std::fmt;

use super::draft::OrderDraft;
use super::{
    IdempotencyKey, Money, MoneyError, OrderId, ProductId, Quantity, RequestFingerprint, Timestamp,
    UserId,
};

/// The status of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderStatus {
    /// Placed, stock reserved, waiting for a worker.
    Pending,
    /// A worker holds the lease and is charging the payment.
    Processing,
    /// Charged. Terminal.
    Paid,
    /// Payment declined or impossible; stock returned. Terminal.
    Failed,
    /// Cancelled by its owner while pending; stock returned. Terminal.
    Cancelled,
}

/// The text is not one of the five status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?} (expected PENDING, PROCESSING, PAID, FAILED or CANCELLED)")]
pub struct StatusParseError(pub String);

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Processing,
        OrderStatus::Paid,
        OrderStatus::Failed,
        OrderStatus::Cancelled,
    ];

    /// Whether no transition leaves this status.
    pub fn is_terminal(self) -> bool {
        match self {
            OrderStatus::Pending | OrderStatus::Processing => false,
            OrderStatus::Paid | OrderStatus::Failed | OrderStatus::Cancelled => true,
        }
    }

    /// Whether an order in this status holds its stock reservation
    /// (Pending, Processing and Paid do; Failed and Cancelled returned it).
    pub fn holds_stock(self) -> bool {
        match self {
            OrderStatus::Pending | OrderStatus::Processing | OrderStatus::Paid => true,
            OrderStatus::Failed | OrderStatus::Cancelled => false,
        }
    }

    /// Whether `self → next` is one of the four legal transitions.
    pub fn can_transition_to(self, next: OrderStatus) -> bool {
        matches!(
            (self, next),
            (OrderStatus::Pending, OrderStatus::Processing)
                | (OrderStatus::Pending, OrderStatus::Cancelled)
                | (OrderStatus::Processing, OrderStatus::Paid)
                | (OrderStatus::Processing, OrderStatus::Failed)
        )
    }

    /// The wire and storage name: `PENDING`, `PROCESSING`, `PAID`, `FAILED`, `CANCELLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Processing => "PROCESSING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses a status name, case-insensitively.
    ///
    /// # Errors
    /// [`StatusParseError`] for anything but the five names.
    pub fn parse(text: &str) -> Result<Self, StatusParseError> {
        OrderStatus::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| StatusParseError(text.to_owned()))
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// `from → to` is not a legal transition, or the order is not in `from`.
    #[error("order cannot go from {current} to {to}")]
    Illegal {
        /// The order's current status.
        current: OrderStatus,
        /// The requested status.
        to: OrderStatus,
    },
    /// The caller's lease token is not the order's current lease (it was taken over).
    #[error("the processing lease is held by another worker")]
    LeaseMismatch,
    /// A take-over was requested but the current lease has not expired yet.
    #[error("the processing lease has not expired")]
    LeaseNotExpired,
}

/// An opaque token naming one worker's processing lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(u64);

impl LeaseToken {
    /// Wraps a raw token (from the injected RNG, or from storage).
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw token, for storage.
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// A processing lease: who holds the order and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The holder's token.
    pub token: LeaseToken,
    /// After this instant another worker may take the order over.
    pub until: Timestamp,
}

/// Why a payment failed, as stored on the order and sent in `order.failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReason(String);

impl FailureReason {
    /// The longest stored reason, in characters; longer reasons are cut.
    pub const MAX_CHARS: usize = 255;

    /// A reason, cut to [`FailureReason::MAX_CHARS`] characters.
    pub fn new(reason: impl Into<String>) -> Self {
        let reason: String = reason.into();
        Self(reason.chars().take(Self::MAX_CHARS).collect())
    }

    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One line of an order: a product, a quantity and the unit price at placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// The product.
    pub product: ProductId,
    /// Units ordered.
    pub quantity: Quantity,
    /// Price per unit when the order was placed.
    pub unit_price: Money,
}

impl OrderLine {
    /// `unit_price × quantity`, exactly.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when the line total exceeds [`Money::max`].
    pub fn line_total(&self) -> Result<Money, MoneyError> {
        self.unit_price.checked_mul(self.quantity.get())
    }
}

/// Everything an adapter stores about an order, for rebuilding it with
/// [`Order::from_parts`]. Fields mirror the entity's getters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct OrderParts {
    pub id: OrderId,
    pub user: UserId,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub status: OrderStatus,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: RequestFingerprint,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub cancelled_at: Option<Timestamp>,
    pub lease: Option<Lease>,
    pub attempts: u32,
    pub failure_reason: Option<FailureReason>,
}

/// Stored data that cannot be a valid order (a corrupted row, a buggy adapter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderDataError {
    /// The stored total is not the exact sum of the lines.
    #[error("order {id}: stored total {stored} != sum of lines {computed}")]
    TotalMismatch {
        /// The order.
        id: OrderId,
        /// Total as stored.
        stored: Money,
        /// Sum of lines.
        computed: Money,
    },
    /// An order without lines, or lines whose total overflows.
    #[error("order {0}: lines are empty or their total overflows")]
    BadLines(OrderId),
    /// A cancelled order without `cancelled_at`, or the reverse.
    #[error("order {0}: cancelled_at is inconsistent with the status")]
    CancelledAtMismatch(OrderId),
}

/// An order: lines, exact total, status, lease and timestamps.
///
/// The total is always the exact sum of the lines; it is computed, never supplied.
/// Fields are private: state changes only through [`Order::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    parts: OrderParts,
}

/// A status change an adapter must apply atomically, compare-and-set style.
///
/// Each variant names its expected current status (`from`), its target (`to`) and its
/// fence. Cancel and Fail return the order's stock in the same atomic step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusChange {
    /// Pending → Processing, granting `lease`.
    Start {
        /// The new lease.
        lease: Lease,
    },
    /// Processing → Processing with a new lease, allowed only when the current lease is
    /// `expired` and its expiry is not after the transition's time.
    TakeOver {
        /// The lease the caller saw and believes expired.
        expired: LeaseToken,
        /// The new lease.
        lease: Lease,
    },
    /// Processing → Paid, only for the holder of `lease`.
    Pay {
        /// The caller's lease.
        lease: LeaseToken,
    },
    /// Processing → Failed, only for the holder of `lease`; returns the stock.
    Fail {
        /// The caller's lease.
        lease: LeaseToken,
        /// Why the payment failed.
        reason: FailureReason,
    },
    /// Pending → Cancelled; returns the stock.
    Cancel,
    /// Processing → Processing, only for the holder of `lease`: the holder gives up and
    /// its lease expires at once (`until` = the transition's time), so the next delivery
    /// of the job may take the order over without waiting for the lease to run out.
    Release {
        /// The caller's lease.
        lease: LeaseToken,
    },
}

impl StatusChange {
    /// The status the order must be in.
    pub fn from(&self) -> OrderStatus {
        match self {
            StatusChange::Start { .. } | StatusChange::Cancel => OrderStatus::Pending,
            StatusChange::TakeOver { .. }
            | StatusChange::Pay { .. }
            | StatusChange::Fail { .. }
            | StatusChange::Release { .. } => OrderStatus::Processing,
        }
    }

    /// The status the order ends in.
    pub fn to(&self) -> OrderStatus {
        match self {
            StatusChange::Start { .. }
            | StatusChange::TakeOver { .. }
            | StatusChange::Release { .. } => OrderStatus::Processing,
            StatusChange::Pay { .. } => OrderStatus::Paid,
            StatusChange::Fail { .. } => OrderStatus::Failed,
            StatusChange::Cancel => OrderStatus::Cancelled,
        }
    }

    /// Whether applying it returns the order's quantities to stock.
    pub fn returns_stock(&self) -> bool {
        self.from().holds_stock() && !self.to().holds_stock()
    }
}

impl Order {
    /// A new Pending order for `draft`, priced with `unit_prices` (one per draft line, in
    /// the draft's order).
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when the total exceeds [`Money::max`].
    pub fn place(
        id: OrderId,
        draft: &OrderDraft,
        unit_prices: &[Money],
        now: Timestamp,
    ) -> Result<Order, MoneyError> {
        let lines = draft.priced_lines(unit_prices);
        let total = Self::total_of(&lines)?;
        Ok(Order {
            parts: OrderParts {
                id,
                user: draft.user(),
                lines,
                total,
                status: OrderStatus::Pending,
                idempotency_key: draft.idempotency_key().clone(),
                fingerprint: draft.fingerprint(),
                created_at: now,
                updated_at: now,
                cancelled_at: None,
                lease: None,
                attempts: 0,
                failure_reason: None,
            },
        })
    }

    /// The exact sum of the lines' totals.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when it exceeds [`Money::max`].
    pub fn total_of(lines: &[OrderLine]) -> Result<Money, MoneyError> {
        lines
            .iter()
            .try_fold(Money::ZERO, |acc, l| acc.checked_add(l.line_total()?))
    }

    /// Rebuilds an order from stored parts, checking what must hold.
    ///
    /// # Errors
    /// [`OrderDataError`] when the total is not the sum of the lines, there are no lines,
    /// or `cancelled_at` disagrees with the status.
    pub fn from_parts(parts: OrderParts) -> Result<Order, OrderDataError> {
        if parts.lines.is_empty() {
            return Err(OrderDataError::BadLines(parts.id));
        }
        let computed =
            Self::total_of(&parts.lines).map_err(|_| OrderDataError::BadLines(parts.id))?;
        if computed != parts.total {
            return Err(OrderDataError::TotalMismatch {
                id: parts.id,
                stored: parts.total,
                computed,
            });
        }
        if parts.cancelled_at.is_some() != (parts.status == OrderStatus::Cancelled) {
            return Err(OrderDataError::CancelledAtMismatch(parts.id));
        }
        Ok(Order { parts })
    }

    /// Applies `change` at `now`, as an adapter's compare-and-set must.
    ///
    /// # Errors
    /// [`TransitionError::Illegal`] when the order is not in `change.from()`;
    /// [`TransitionError::LeaseMismatch`] when the fence token is not the current lease;
    /// [`TransitionError::LeaseNotExpired`] for a take-over of a live lease.
    /// On error the order is unchanged.
    pub fn apply(&mut self, change: &StatusChange, now: Timestamp) -> Result<(), TransitionError> {
        let p = &mut self.parts;
        if p.status != change.from() {
            return Err(TransitionError::Illegal {
                current: p.status,
                to: change.to(),
            });
        }
        let current_token = p.lease.map(|l| l.token);
        match change {
            StatusChange::Start { lease } => {
                p.lease = Some(*lease);
                p.attempts = p.attempts.saturating_add(1);
            }
            StatusChange::TakeOver { expired, lease } => {
                let current = p.lease.ok_or(TransitionError::LeaseMismatch)?;
                if current.token != *expired {
                    return Err(TransitionError::LeaseMismatch);
                }
                if current.until > now {
                    return Err(TransitionError::LeaseNotExpired);
                }
                p.lease = Some(*lease);
                p.attempts = p.attempts.saturating_add(1);
            }
            StatusChange::Pay { lease } => {
                if current_token != Some(*lease) {
                    return Err(TransitionError::LeaseMismatch);
                }
                p.lease = None;
            }
            StatusChange::Fail { lease, reason } => {
                if current_token != Some(*lease) {
                    return Err(TransitionError::LeaseMismatch);
                }
                p.lease = None;
                p.failure_reason = Some(reason.clone());
            }
            StatusChange::Cancel => {
                p.cancelled_at = Some(now);
            }
            StatusChange::Release { lease } => {
                let current = p.lease.ok_or(TransitionError::LeaseMismatch)?;
                if current.token != *lease {
                    return Err(TransitionError::LeaseMismatch);
                }
                // Never lengthen a lease: an already expired one stays as it is.
                p.lease = Some(Lease {
                    token: current.token,
                    until: current.until.min(now),
                });
            }
        }
        p.status = change.to();
        p.updated_at = now;
        Ok(())
    }

    /// The order's id.
    pub fn id(&self) -> OrderId {
        self.parts.id
    }
    /// The owner.
    pub fn user(&self) -> UserId {
        self.parts.user
    }
    /// Lines, ascending by product id, one per product.
    pub fn lines(&self) -> &[OrderLine] {
        &self.parts.lines
    }
    /// The exact sum of the lines.
    pub fn total(&self) -> Money {
        self.parts.total
    }
    /// Current status.
    pub fn status(&self) -> OrderStatus {
        self.parts.status
    }
    /// The owner's idempotency key.
    pub fn idempotency_key(&self) -> &IdempotencyKey {
        &self.parts.idempotency_key
    }
    /// Fingerprint of the lines the order was created with.
    pub fn fingerprint(&self) -> RequestFingerprint {
        self.parts.fingerprint
    }
    /// When it was placed.
    pub fn created_at(&self) -> Timestamp {
        self.parts.created_at
    }
    /// When it last changed.
    pub fn updated_at(&self) -> Timestamp {
        self.parts.updated_at
    }
    /// When it was cancelled (set iff status is Cancelled).
    pub fn cancelled_at(&self) -> Option<Timestamp> {
        self.parts.cancelled_at
    }
    /// The processing lease, while Processing.
    pub fn lease(&self) -> Option<Lease> {
        self.parts.lease
    }
    /// How many times a worker has started or taken over processing.
    pub fn attempts(&self) -> u32 {
        self.parts.attempts
    }
    /// Why it failed, when Failed.
    pub fn failure_reason(&self) -> Option<&FailureReason> {
        self.parts.failure_reason.as_ref()
    }
    /// All stored parts, for adapters that persist the order.
    pub fn parts(&self) -> &OrderParts {
        &self.parts
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod draft_tests;
