//! `GET /app/{key}`: the handshake frame and the refusals.

use std::collections::HashSet;

use crate::support::*;

#[tokio::test]
async fn connection_established_carries_a_socket_id_and_a_nonzero_activity_timeout() {
    let (_gateway, addr) = serve(settings()).await;
    let mut client = connect_to(addr, &format!("/app/{KEY}?{QUERY}")).await;
    let frame = next_json(&mut client).await;
    assert_eq!(frame["event"], "pusher:connection_established");
    assert!(
        frame["data"].is_string(),
        "data must be a JSON string: {frame}"
    );
    let data = inner(&frame);
    let socket_id = data["socket_id"].as_str().unwrap();
    let (a, b) = socket_id.split_once('.').unwrap();
    assert!(
        !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()),
        "{socket_id}"
    );
    assert!(
        !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()),
        "{socket_id}"
    );
    assert_eq!(data["activity_timeout"], 30);
}

#[tokio::test]
async fn socket_ids_are_unique_and_a_sub_second_timeout_is_announced_as_one_second() {
    let mut s = settings();
    s.activity_timeout = std::time::Duration::from_millis(200);
    let (gateway, addr) = serve(s).await;
    let mut ids = HashSet::new();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = connect_to(addr, &format!("/app/{KEY}?{QUERY}")).await;
        let data = inner(&next_json(&mut client).await);
        assert_eq!(data["activity_timeout"], 1);
        assert!(ids.insert(data["socket_id"].as_str().unwrap().to_owned()));
        clients.push(client);
    }
    assert_eq!(gateway.connections(), 20);
}

#[tokio::test]
async fn an_unknown_key_gets_error_4001_and_a_close_with_4001() {
    let (gateway, addr) = serve(settings()).await;
    let mut client = connect_to(addr, &format!("/app/nope?{QUERY}")).await;
    let (frames, code) = until_close(&mut client).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["event"], "pusher:error");
    assert_eq!(inner(&frames[0])["code"], 4001);
    assert_eq!(code, Some(4001));
    assert_eq!(gateway.connections(), 0);
}

#[tokio::test]
async fn another_or_no_protocol_version_gets_4007() {
    let (_gateway, addr) = serve(settings()).await;
    for query in ["protocol=6&client=js", "client=js&version=8.6.0"] {
        let mut client = connect_to(addr, &format!("/app/{KEY}?{query}")).await;
        let (frames, code) = until_close(&mut client).await;
        assert_eq!(inner(&frames[0])["code"], 4007, "{query}");
        assert_eq!(code, Some(4007), "{query}");
    }
}

#[tokio::test]
async fn over_max_connections_gets_4100() {
    let mut s = settings();
    s.max_connections = Some(2);
    let (gateway, addr) = serve(s).await;
    let (_a, _) = connect(addr).await;
    let (_b, _) = connect(addr).await;
    let mut third = connect_to(addr, &format!("/app/{KEY}?{QUERY}")).await;
    let (frames, code) = until_close(&mut third).await;
    assert_eq!(inner(&frames[0])["code"], 4100);
    assert_eq!(code, Some(4100));
    assert_eq!(gateway.connections(), 2);
}

#[test]
fn settings_are_validated_and_the_secret_is_redacted() {
    let mut s = settings();
    assert!(s.validate().is_ok());
    assert!(!format!("{s:?}").contains(SECRET));
    s.activity_timeout = std::time::Duration::ZERO;
    assert!(order_pusher::Gateway::new(s).is_err());
    assert!(
        order_pusher::Gateway::new(order_pusher::PusherSettings::new("a b", "k", "s")).is_err()
    );
}
