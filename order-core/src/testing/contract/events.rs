//! Contract suite for [`EventPublisher`]: a subscriber that was listening before the
//! events were published receives every one, in publish order, with every field intact.
//!
//! Each check takes a fresh [`EventsFixture`] whose subscriber is already listening,
//! and panics with a message naming the broken promise. Run every check in [`CHECKS`].

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{FailureReason, Money, OrderId, Timestamp, UserId};
use crate::ports::{EventPublisher, OrderEvent, OrderEventKind};

/// What an events check needs from the adapter under test.
#[async_trait]
pub trait EventsFixture: Send + Sync {
    /// The publisher under test.
    fn publisher(&self) -> &dyn EventPublisher;

    /// The next event the fixture's subscriber (listening since the fixture was built)
    /// received, or `None` if none arrives within `timeout`.
    async fn next_event(&self, timeout: Duration) -> Option<OrderEvent>;
}

/// The names of every check, in the order they are meant to run.
pub const CHECKS: &[&str] = &[
    "every_kind_arrives_with_every_field_intact",
    "events_arrive_in_publish_order_exactly_once",
];

/// How long a check waits for an event it expects.
const EXPECT: Duration = Duration::from_secs(5);
/// How long a check waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(200);

fn event(kind: OrderEventKind, n: u64) -> OrderEvent {
    let (Ok(order), Ok(user), Ok(total)) = (
        OrderId::new(n),
        UserId::new(1_000 + n % 7),
        Money::from_cents(199_997 + n),
    ) else {
        panic!("contract suite bug: cannot build event #{n}");
    };
    OrderEvent {
        kind,
        order,
        user,
        total,
        at: Timestamp::from_millis(1_700_000_000_000 + n),
    }
}

async fn publish<F: EventsFixture + ?Sized>(f: &F, e: &OrderEvent) {
    if let Err(err) = f.publisher().publish(e.clone()).await {
        panic!(
            "publish of {} for order {} failed: {err}",
            e.kind.name(),
            e.order
        );
    }
}

/// One event of every kind — a failure reason with quotes, separators, newlines and
/// non-ASCII text included — arrives exactly as published.
pub async fn every_kind_arrives_with_every_field_intact<F: EventsFixture + ?Sized>(f: &F) {
    let events = [
        event(OrderEventKind::Created, 1),
        event(OrderEventKind::Processing, 2),
        event(OrderEventKind::Paid, 3),
        event(
            OrderEventKind::Failed(FailureReason::new(
                "Card \"declined\" | code=51; retry: no\nÜberweisung ✓",
            )),
            4,
        ),
        event(OrderEventKind::Cancelled, 5),
    ];
    for e in &events {
        publish(f, e).await;
    }
    for e in &events {
        match f.next_event(EXPECT).await {
            Some(got) => assert_eq!(
                &got,
                e,
                "a {} event must arrive with every field intact",
                e.kind.name()
            ),
            None => panic!(
                "the {} event for order {} never arrived",
                e.kind.name(),
                e.order
            ),
        }
    }
}

/// Many events from one publisher arrive in publish order, each once, and nothing else.
pub async fn events_arrive_in_publish_order_exactly_once<F: EventsFixture + ?Sized>(f: &F) {
    let events: Vec<OrderEvent> = (1..=200).map(|n| event(OrderEventKind::Paid, n)).collect();
    for e in &events {
        publish(f, e).await;
    }
    for (i, e) in events.iter().enumerate() {
        match f.next_event(EXPECT).await {
            Some(got) => assert_eq!(&got, e, "events must arrive in publish order (event #{i})"),
            None => panic!("event #{i} (order {}) never arrived", e.order),
        }
    }
    if let Some(extra) = f.next_event(QUIET).await {
        panic!(
            "an event arrived that was not published (or arrived twice): order {}",
            extra.order
        );
    }
}
