//! Ping/pong, malformed frames, client events, oversized messages.

use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn ping_gets_pong_and_pong_is_accepted_silently() {
    let (_gateway, addr) = serve(settings()).await;
    let (mut client, _) = connect(addr).await;
    send(&mut client, r#"{"event":"pusher:pong","data":{}}"#).await;
    send(&mut client, r#"{"event":"pusher:ping","data":{}}"#).await;
    let pong = next_json(&mut client).await;
    assert_eq!(
        pong,
        serde_json::json!({ "event": "pusher:pong", "data": "{}" })
    );
}

#[tokio::test]
async fn malformed_frames_get_4200_and_the_socket_stays_open() {
    let (gateway, addr) = serve(settings()).await;
    let (mut client, _) = connect(addr).await;
    for text in [
        "not json",
        r#"{"data":{}}"#,
        r#"{"event":"pusher:nonsense"}"#,
        r#"{"event":"pusher:subscribe"}"#,
    ] {
        send(&mut client, text).await;
        let error = next_json(&mut client).await;
        assert_eq!(error["event"], "pusher:error", "{text}");
        assert_eq!(inner(&error)["code"], 4200, "{text}");
    }
    client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let error = next_json(&mut client).await;
    assert_eq!(inner(&error)["code"], 4200);
    send(&mut client, r#"{"event":"pusher:ping"}"#).await;
    assert_eq!(next_json(&mut client).await["event"], "pusher:pong");
    assert_eq!(gateway.connections(), 1);
}

#[tokio::test]
async fn client_events_get_4301_and_are_not_relayed() {
    let (gateway, addr) = serve(settings()).await;
    let (mut sender, _) = connect(addr).await;
    let (mut listener, _) = connect(addr).await;
    subscribe(&mut sender, "room", None).await;
    subscribe(&mut listener, "room", None).await;
    send(
        &mut sender,
        r#"{"event":"client-typing","channel":"room","data":{}}"#,
    )
    .await;
    let error = next_json(&mut sender).await;
    assert_eq!(inner(&error)["code"], 4301);
    // The listener's next frame is the event published after, not the client event.
    gateway.publish("room", "server-event", "{}");
    assert_eq!(next_json(&mut listener).await["event"], "server-event");
    assert_eq!(gateway.connections(), 2);
}

#[tokio::test]
async fn a_message_over_max_message_bytes_gets_4300_and_a_close() {
    let mut s = settings();
    s.max_message_bytes = 1024;
    let (gateway, addr) = serve(s).await;
    let (mut client, _) = connect(addr).await;
    let big = format!(r#"{{"event":"pusher:ping","data":"{}"}}"#, "x".repeat(2000));
    send(&mut client, &big).await;
    let (frames, code) = until_close(&mut client).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["event"], "pusher:error");
    assert_eq!(inner(&frames[0])["code"], 4300);
    assert_eq!(code, Some(4300));
    eventually(|| gateway.connections() == 0).await;
}
