//! Contract suite for [`EventPublisher`]: a subscriber that was listening before the
//! events were published receives every one, in publish order, with every field intact.
//!
//! Each check takes a fresh [`EventsFixture`] whose subscriber is already listening,
//! and panics with a message naming the broken promise. Run every check in [`CHECKS`],
//! one test per check, with [`events_contract!`](crate::events_contract).

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

    /// Releases what the fixture holds (connections, server-side state) once a check
    /// passed: [`events_contract!`](crate::events_contract) awaits it after every check. A
    /// no-op unless overridden. A failing check panics before it, so clean-up that must
    /// happen then too belongs in a `Drop` of the fixture.
    async fn teardown(&self) {}
}

/// The names of every check, in the order they are meant to run (from the suite's one
/// list, like the tests [`events_contract!`](crate::events_contract) writes).
pub const CHECKS: &[&str] = crate::__events_checks! { [crate::__contract_check_names] };

/// THE list of this suite's checks, in the order they are meant to run: every check
/// function must be here (order-core's tests fail otherwise), and nowhere else.
/// `__events_checks! { [callback] args.. }` expands to `callback! { [checks..] args.. }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __events_checks {
    ([$($callback:tt)*] $($args:tt)*) => {
        $($callback)*! {
            [
            every_kind_arrives_with_every_field_intact,
            events_arrive_in_publish_order_exactly_once,
            ]
            $($args)*
        }
    };
}

/// One test per check of the [`EventPublisher`](crate::ports::EventPublisher) contract
/// ([`testing::contract::events`](crate::testing::contract::events)), each on a fresh
/// [`EventsFixture`](crate::testing::contract::events::EventsFixture), torn down after its check
/// passed.
///
/// The input is an optional test attribute and a fixture: `path::to::async_fn`,
/// `|| expression` or `|arg: Type, ..| expression` (see the [module
/// docs](crate::testing::contract#in-one-line)). Without an attribute the tests are
/// `#[tokio::test]`: the calling crate needs `tokio` as a dev-dependency with the
/// `macros` and `rt` features. The tests are named after the checks and written where
/// the macro is invoked.
///
/// ```ignore
/// // The fixture made by an expression; it may `.await`.
/// order_core::events_contract!(|| MyEventsFixture::subscribed().await);
/// ```
#[macro_export]
macro_rules! events_contract {
    ($($fixture:tt)+) => {
        $crate::__contract_parse! { __events_checks, events, EventsFixture; $($fixture)+ }
    };
}

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
        // Large and distinct per event, so a bus that drops or truncates seq is caught.
        seq: (1 << 40) + n * 3,
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
            "publish of {} for order {} failed: {}",
            e.kind.name(),
            e.order,
            crate::app::ErrorChain(&err)
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
