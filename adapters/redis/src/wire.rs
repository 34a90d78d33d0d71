//! The wire format of order events on the Redis channel: one compact JSON object per
//! message, versioned so that a gateway can reject a format it does not know.
//!
//! ```text
//! {"v":2,"seq":5,"kind":"order.failed","order":42,"user":7,"total":"2029.97","reason":"card declined","at":1700000000123}
//! ```
//!
//! - `v`: format version, 2 (version 1 had no `seq`; a message in it is refused rather
//!   than delivered without the sequence number clients use to find gaps);
//! - `seq`: the event's per-user sequence number in the durable event log;
//! - `kind`: the event name (`order.created`, `order.processing`, `order.paid`,
//!   `order.failed`, `order.cancelled`);
//! - `order`, `user`: positive integer ids;
//! - `total`: the amount as a decimal string with two places (never a float);
//! - `reason`: present exactly for `order.failed`;
//! - `at`: milliseconds since the Unix epoch, UTC.
//!
//! Unknown fields are ignored (a newer publisher may add some); a missing or malformed
//! known field is an error.

use std::borrow::Cow;

use order_core::domain::{FailureReason, Money, OrderId, Timestamp, UserId};
use order_core::ports::{OrderEvent, OrderEventKind};
use serde::{Deserialize, Serialize};

/// The current format version.
pub const WIRE_VERSION: u32 = 2;

/// Why a message is not a valid order event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or a field has the wrong type or is missing.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A version this code does not read.
    #[error("unsupported event format version {0}")]
    UnsupportedVersion(u32),
    /// An event name this code does not know.
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    /// A field has a value the domain rejects (zero id, bad amount, missing reason).
    #[error("invalid event field {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    v: u32,
    // Defaulted so that a version-1 message (which has none) is refused for its version,
    // the clearer reason, rather than as malformed.
    #[serde(default)]
    seq: u64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    order: u64,
    user: u64,
    #[serde(borrow)]
    total: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    reason: Option<Cow<'a, str>>,
    at: u64,
}

/// Encodes an event in the current format.
pub fn encode_event(event: &OrderEvent) -> String {
    let reason = match &event.kind {
        OrderEventKind::Failed(reason) => Some(Cow::Borrowed(reason.as_str())),
        OrderEventKind::Created
        | OrderEventKind::Processing
        | OrderEventKind::Paid
        | OrderEventKind::Cancelled => None,
    };
    let wire = Wire {
        v: WIRE_VERSION,
        seq: event.seq,
        kind: Cow::Borrowed(event.kind.name()),
        order: event.order.get(),
        user: event.user.get(),
        total: Cow::Owned(event.total.to_string()),
        reason,
        at: event.at.as_millis(),
    };
    // Serializing a struct of strings and integers cannot fail; fall back to an empty
    // object rather than panic if serde_json ever disagrees.
    serde_json::to_string(&wire).unwrap_or_else(|_| "{}".to_owned())
}

/// Decodes an event written by [`encode_event`].
///
/// # Errors
/// [`DecodeError`] naming what is wrong with the message.
pub fn decode_event(text: &str) -> Result<OrderEvent, DecodeError> {
    let wire: Wire<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if wire.v != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion(wire.v));
    }
    if wire.seq == 0 {
        return Err(DecodeError::InvalidField {
            field: "seq",
            reason: "a sequence number starts at 1".into(),
        });
    }
    let kind = match wire.kind.as_ref() {
        "order.created" => OrderEventKind::Created,
        "order.processing" => OrderEventKind::Processing,
        "order.paid" => OrderEventKind::Paid,
        "order.cancelled" => OrderEventKind::Cancelled,
        "order.failed" => {
            let reason = wire.reason.as_deref().ok_or(DecodeError::InvalidField {
                field: "reason",
                reason: "order.failed needs a reason".into(),
            })?;
            OrderEventKind::Failed(FailureReason::new(reason))
        }
        other => return Err(DecodeError::UnknownKind(other.to_owned())),
    };
    Ok(OrderEvent {
        seq: wire.seq,
        kind,
        order: OrderId::new(wire.order).map_err(|e| invalid("order", e))?,
        user: UserId::new(wire.user).map_err(|e| invalid("user", e))?,
        total: Money::parse(&wire.total).map_err(|e| invalid("total", e))?,
        at: Timestamp::from_millis(wire.at),
    })
}

fn invalid(field: &'static str, error: impl std::fmt::Display) -> DecodeError {
    DecodeError::InvalidField {
        field,
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: OrderEventKind) -> OrderEvent {
        OrderEvent {
            seq: 5,
            kind,
            order: OrderId::new(42).unwrap(),
            user: UserId::new(7).unwrap(),
            total: Money::parse("2029.97").unwrap(),
            at: Timestamp::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in [
            OrderEventKind::Created,
            OrderEventKind::Processing,
            OrderEventKind::Paid,
            OrderEventKind::Failed(FailureReason::new("card \"declined\" | ü ✓\n")),
            OrderEventKind::Cancelled,
        ] {
            let e = event(kind);
            assert_eq!(decode_event(&encode_event(&e)), Ok(e));
        }
    }

    #[test]
    fn the_format_is_stable() {
        assert_eq!(
            encode_event(&event(OrderEventKind::Failed(FailureReason::new(
                "declined"
            )))),
            r#"{"v":2,"seq":5,"kind":"order.failed","order":42,"user":7,"total":"2029.97","reason":"declined","at":1700000000123}"#
        );
        assert_eq!(
            encode_event(&event(OrderEventKind::Paid)),
            r#"{"v":2,"seq":5,"kind":"order.paid","order":42,"user":7,"total":"2029.97","at":1700000000123}"#
        );
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        assert!(matches!(
            decode_event("nope"),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            decode_event(r#"{"v":1,"kind":"order.paid","order":1,"user":1,"total":"1.00","at":0}"#),
            Err(DecodeError::UnsupportedVersion(1))
        );
        assert_eq!(
            decode_event(
                r#"{"v":2,"seq":1,"kind":"order.shipped","order":1,"user":1,"total":"1.00","at":0}"#
            ),
            Err(DecodeError::UnknownKind("order.shipped".into()))
        );
        assert!(matches!(
            decode_event(
                r#"{"v":2,"seq":1,"kind":"order.failed","order":1,"user":1,"total":"1.00","at":0}"#
            ),
            Err(DecodeError::InvalidField {
                field: "reason",
                ..
            })
        ));
        assert!(matches!(
            decode_event(
                r#"{"v":2,"seq":1,"kind":"order.paid","order":0,"user":1,"total":"1.00","at":0}"#
            ),
            Err(DecodeError::InvalidField { field: "order", .. })
        ));
        assert!(matches!(
            decode_event(
                r#"{"v":2,"seq":1,"kind":"order.paid","order":1,"user":1,"total":"-1","at":0}"#
            ),
            Err(DecodeError::InvalidField { field: "total", .. })
        ));
        assert!(matches!(
            decode_event(r#"{"v":2,"kind":"order.paid","order":1,"user":1,"total":"1.00","at":0}"#),
            Err(DecodeError::InvalidField { field: "seq", .. })
        ));
        // Unknown fields from a newer publisher are ignored.
        assert!(
            decode_event(
                r#"{"v":2,"seq":1,"kind":"order.paid","order":1,"user":1,"total":"1.00","at":0,"x":1}"#
            )
            .is_ok()
        );
    }
}
