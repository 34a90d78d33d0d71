//! Idle pruning: a silent client is pinged after `activity_timeout`, and closed with
//! 4201 if still silent `pong_timeout` later. Real sockets, 200–300 ms timeouts.

use std::time::{Duration, Instant};

use crate::support::*;

fn short() -> order_pusher::PusherSettings {
    let mut s = settings();
    s.activity_timeout = Duration::from_millis(300);
    s.pong_timeout = Duration::from_millis(300);
    s
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_closed_with_4201() {
    let (gateway, addr) = serve(short()).await;
    let started = Instant::now();
    let (mut client, _) = connect(addr).await;
    let ping = next_json(&mut client).await;
    assert_eq!(ping["event"], "pusher:ping");
    let pinged_after = started.elapsed();
    assert!(
        pinged_after >= Duration::from_millis(290),
        "{pinged_after:?}"
    );
    let (frames, code) = until_close(&mut client).await;
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(590),
        "{closed_after:?}"
    );
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(inner(&frames[0])["code"], 4201);
    assert_eq!(code, Some(4201));
    eventually(|| gateway.connections() == 0).await;
}

#[tokio::test]
async fn a_client_that_answers_the_ping_stays() {
    let (gateway, addr) = serve(short()).await;
    let (mut client, _) = connect(addr).await;
    for _ in 0..3 {
        assert_eq!(next_json(&mut client).await["event"], "pusher:ping");
        send(&mut client, r#"{"event":"pusher:pong","data":{}}"#).await;
    }
    assert_eq!(gateway.connections(), 1);
}

#[tokio::test]
async fn a_talking_client_is_never_pinged() {
    let (gateway, addr) = serve(short()).await;
    let (mut client, _) = connect(addr).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&mut client, r#"{"event":"pusher:ping","data":{}}"#).await;
        assert_eq!(next_json(&mut client).await["event"], "pusher:pong");
    }
    assert_eq!(gateway.connections(), 1);
}
