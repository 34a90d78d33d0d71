//! Event frames from `publish` and `publish_order_event`; fan-out only to subscribers.

use order_core::domain::{FailureReason, Money, OrderId, Timestamp, UserId};
use order_core::ports::{OrderEvent, OrderEventKind};

use crate::support::*;

fn paid(user: u64) -> OrderEvent {
    OrderEvent {
        seq: 3,
        kind: OrderEventKind::Paid,
        order: OrderId::new(42).unwrap(),
        user: UserId::new(user).unwrap(),
        total: Money::parse("100.00").unwrap(),
        at: Timestamp::from_millis(1_764_000_000_123),
    }
}

#[tokio::test]
async fn an_order_event_reaches_its_owner_as_a_pusher_event_frame() {
    let (gateway, addr) = serve(settings()).await;
    let (mut owner, socket_id) = connect(addr).await;
    subscribe_private(&mut owner, &gateway, &socket_id, "private-orders.7").await;
    let (mut other, other_id) = connect(addr).await;
    subscribe_private(&mut other, &gateway, &other_id, "private-orders.8").await;

    assert_eq!(gateway.publish_order_event(&paid(7)), 1);
    let frame = next_json(&mut owner).await;
    assert_eq!(frame["event"], "order.paid");
    assert_eq!(frame["channel"], "private-orders.7");
    let data = frame["data"].as_str().expect("data is a JSON string");
    assert_eq!(
        data,
        r#"{"order_id":"42","total":"100.00","paid_at":"2025-11-24T16:00:00.123Z","seq":3}"#
    );

    let mut failed = paid(7);
    failed.kind = OrderEventKind::Failed(FailureReason::new("card_declined"));
    gateway.publish_order_event(&failed);
    let data = inner(&next_json(&mut owner).await);
    assert_eq!(data["reason"], "card_declined");

    // The other user got nothing: its next frame is the pong to this ping.
    send(&mut other, r#"{"event":"pusher:ping"}"#).await;
    assert_eq!(next_json(&mut other).await["event"], "pusher:pong");
}

#[tokio::test]
async fn publish_counts_only_the_channels_subscribers() {
    let (gateway, addr) = serve(settings()).await;
    let mut clients = Vec::new();
    for i in 0..50 {
        let (mut client, _) = connect(addr).await;
        subscribe(&mut client, &format!("c{}", i % 5), None).await;
        clients.push(client);
    }
    assert_eq!(gateway.publish("c0", "e", "{}"), 10);
    assert_eq!(gateway.publish("nobody", "e", "{}"), 0);
    let frame = next_json(&mut clients[0]).await;
    assert_eq!(
        frame,
        serde_json::json!({ "event": "e", "channel": "c0", "data": "{}" })
    );
}
