//! `pusher:subscribe` / `pusher:unsubscribe`: public and private channels.

use crate::support::*;

#[tokio::test]
async fn a_public_channel_needs_no_auth() {
    let (gateway, addr) = serve(settings()).await;
    let (mut client, _) = connect(addr).await;
    let reply = subscribe(&mut client, "news", None).await;
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(reply["channel"], "news");
    assert_eq!(reply["data"], "{}");
    assert_eq!(gateway.publish("news", "hello", "{}"), 1);
}

#[tokio::test]
async fn a_private_channel_with_a_correct_signature_is_joined() {
    let (_gateway, addr) = serve(settings()).await;
    let (mut client, socket_id) = connect(addr).await;
    let auth = format!(
        "{KEY}:{}",
        order_pusher::channel_signature(SECRET, &socket_id, "private-orders.7")
    );
    let reply = subscribe(&mut client, "private-orders.7", Some(&auth)).await;
    assert_eq!(
        reply["event"], "pusher_internal:subscription_succeeded",
        "{reply}"
    );
    assert_eq!(reply["channel"], "private-orders.7");
}

#[tokio::test]
async fn subscribe_data_may_be_a_json_string() {
    let (gateway, addr) = serve(settings()).await;
    let (mut client, socket_id) = connect(addr).await;
    let auth = gateway.sign_channel(&socket_id, "private-x").unwrap();
    let data = serde_json::json!({ "channel": "private-x", "auth": auth }).to_string();
    let frame = serde_json::json!({ "event": "pusher:subscribe", "data": data });
    send(&mut client, &frame.to_string()).await;
    let reply = next_json(&mut client).await;
    assert_eq!(
        reply["event"], "pusher_internal:subscription_succeeded",
        "{reply}"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_signature_gets_4009_and_subscription_error_and_the_socket_stays_open() {
    let (gateway, addr) = serve(settings()).await;
    let (mut client, socket_id) = connect(addr).await;
    let other_socket = gateway.sign_channel("1.2", "private-orders.7").unwrap();
    let other_channel = gateway
        .sign_channel(&socket_id, "private-orders.8")
        .unwrap();
    let wrong_key = format!(
        "nope:{}",
        order_pusher::channel_signature(SECRET, &socket_id, "private-orders.7")
    );
    for auth in [
        Some(other_socket.as_str()),
        Some(&other_channel),
        Some(&wrong_key),
        Some("garbage"),
        None,
    ] {
        let error = subscribe(&mut client, "private-orders.7", auth).await;
        assert_eq!(error["event"], "pusher:error", "{auth:?}: {error}");
        assert_eq!(inner(&error)["code"], 4009);
        let sub_error = next_json(&mut client).await;
        assert_eq!(
            sub_error["event"], "pusher:subscription_error",
            "{sub_error}"
        );
        assert_eq!(sub_error["channel"], "private-orders.7");
        let data = inner(&sub_error);
        assert_eq!(data["type"], "AuthError");
        assert_eq!(data["status"], 403);
        assert!(data["error"].is_string());
    }
    assert_eq!(gateway.publish("private-orders.7", "order.paid", "{}"), 0);
    // Still open and usable.
    subscribe_private(&mut client, &gateway, &socket_id, "private-orders.7").await;
    assert_eq!(gateway.publish("private-orders.7", "order.paid", "{}"), 1);
}

#[tokio::test]
async fn presence_channels_are_refused_with_subscription_error() {
    let (gateway, addr) = serve(settings()).await;
    let (mut client, socket_id) = connect(addr).await;
    let auth = gateway.sign_channel(&socket_id, "presence-room").unwrap();
    let reply = subscribe(&mut client, "presence-room", Some(&auth)).await;
    assert_eq!(reply["event"], "pusher:subscription_error", "{reply}");
    assert_eq!(reply["channel"], "presence-room");
    assert_eq!(inner(&reply)["status"], 501);
}

#[tokio::test]
async fn an_invalid_channel_name_is_refused() {
    let (_gateway, addr) = serve(settings()).await;
    let (mut client, _) = connect(addr).await;
    let reply = subscribe(&mut client, "bad channel!", None).await;
    assert_eq!(reply["event"], "pusher:error");
    assert_eq!(inner(&reply)["code"], 4200);
    let sub_error = next_json(&mut client).await;
    assert_eq!(sub_error["event"], "pusher:subscription_error");
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_disconnect_forgets_the_channels() {
    let (gateway, addr) = serve(settings()).await;
    let (mut client, socket_id) = connect(addr).await;
    subscribe_private(&mut client, &gateway, &socket_id, "private-orders.7").await;
    subscribe(&mut client, "news", None).await;
    assert_eq!(gateway.channels(), 2);
    send(
        &mut client,
        r#"{"event":"pusher:unsubscribe","data":{"channel":"private-orders.7"}}"#,
    )
    .await;
    // The ping round trip orders the unsubscribe before the check.
    send(&mut client, r#"{"event":"pusher:ping","data":{}}"#).await;
    assert_eq!(next_json(&mut client).await["event"], "pusher:pong");
    assert_eq!(gateway.publish("private-orders.7", "order.paid", "{}"), 0);
    assert_eq!(gateway.channels(), 1);
    drop(client);
    eventually(|| gateway.connections() == 0 && gateway.channels() == 0).await;
}

#[test]
fn sign_channel_matches_the_pusher_docs_vector_and_validates_its_input() {
    let gateway = order_pusher::Gateway::new(settings()).unwrap();
    assert_eq!(
        gateway.sign_channel("1234.1234", "private-foobar").unwrap(),
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    );
    assert_eq!(
        gateway.sign_channel("1234", "private-foobar"),
        Err(order_pusher::AuthError::InvalidSocketId)
    );
    assert_eq!(
        gateway.sign_channel("1.2", "a b"),
        Err(order_pusher::AuthError::InvalidChannel)
    );
}
