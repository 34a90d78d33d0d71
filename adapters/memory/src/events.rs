//! [`MemoryEventBus`]: the [`EventPublisher`] port in one process, over a Tokio
//! broadcast channel.
//!
//! Subscribers (the embedded WebSocket gateway, tests) each get every event published
//! after they subscribed. Like Redis pub/sub it is best effort: publishing with nobody
//! listening succeeds and the event is gone, and a subscriber that falls more than the
//! channel's capacity behind loses the oldest events (its receiver reports `Lagged`).

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use order_core::ports::{EventPublisher, OrderEvent, PublishError};
use tokio::sync::broadcast;

/// An in-process event bus over a Tokio broadcast channel.
///
/// Best effort, like Redis pub/sub: publishing with no subscriber succeeds and the event
/// is gone, and a subscriber more than the capacity behind loses the oldest events (its
/// receiver reports `Lagged`).
#[derive(Debug)]
pub struct MemoryEventBus {
    sender: broadcast::Sender<OrderEvent>,
    published: AtomicU64,
}

impl Default for MemoryEventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventBus {
    /// Events a subscriber may fall behind before it loses the oldest. Tokio's usual
    /// choice of 32 drops events under any real load.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A bus with [`MemoryEventBus::DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A bus whose subscribers may lag `capacity` events behind (at least 1: a zero is
    /// raised to 1, since a broadcast channel cannot be empty-sized).
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            published: AtomicU64::new(0),
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<OrderEvent> {
        self.sender.subscribe()
    }

    /// How many events have been published in all, whether or not anyone listened.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl EventPublisher for MemoryEventBus {
    /// Hands the event to every current subscriber without waiting.
    ///
    /// # Errors
    /// Never: with no subscriber the event is simply dropped, as pub/sub does.
    async fn publish(&self, event: OrderEvent) -> Result<(), PublishError> {
        // `send` fails only when there is no receiver, which is not an error here.
        let _receivers = self.sender.send(event);
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use order_core::ports::OrderEventKind;
    use order_core::{Money, OrderId, Timestamp, UserId};

    use super::*;

    fn event(n: u64) -> OrderEvent {
        OrderEvent {
            seq: n,
            kind: OrderEventKind::Paid,
            order: OrderId::new(n).unwrap(),
            user: UserId::new(1).unwrap(),
            total: Money::parse("29.99").unwrap(),
            at: Timestamp::from_millis(n),
        }
    }

    #[tokio::test]
    async fn a_subscriber_receives_a_burst_of_ten_thousand_events_in_order() {
        let bus = MemoryEventBus::new();
        let mut rx = bus.subscribe();
        for n in 1..=10_000 {
            bus.publish(event(n)).await.unwrap();
        }
        for n in 1..=10_000 {
            let got = rx.recv().await.unwrap();
            assert_eq!(got.order.get(), n);
        }
        assert!(rx.try_recv().is_err());
        assert_eq!(bus.published(), 10_000);
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_published_after_it_subscribed() {
        let bus = MemoryEventBus::new();
        bus.publish(event(1)).await.unwrap();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.publish(event(2)).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), event(2));
        assert_eq!(b.recv().await.unwrap(), event(2));
        assert_eq!(bus.published(), 2);
    }

    #[tokio::test]
    async fn publishing_with_no_subscriber_succeeds_and_is_counted() {
        let bus = MemoryEventBus::with_capacity(0);
        bus.publish(event(1)).await.unwrap();
        assert_eq!(bus.published(), 1);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_the_capacity_is_told_it_lagged() {
        let bus = MemoryEventBus::with_capacity(4);
        let mut rx = bus.subscribe();
        for n in 1..=6 {
            bus.publish(event(n)).await.unwrap();
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(2))
        ));
        assert_eq!(rx.recv().await.unwrap().order.get(), 3);
    }
}
