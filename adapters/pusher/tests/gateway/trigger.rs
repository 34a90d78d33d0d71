//! The signed trigger API, `POST /apps/{app_id}/events`.

use crate::support::*;

fn signed_path(body: &str, timestamp: u64, key: &str, secret: &str) -> String {
    let query = order_pusher::trigger_query(APP_ID, key, secret, body.as_bytes(), timestamp);
    format!("/apps/{APP_ID}/events?{query}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_signed_event_reaches_the_channels_subscribers() {
    let (_gateway, addr) = serve(settings()).await;
    let (mut a, _) = connect(addr).await;
    subscribe(&mut a, "c1", None).await;
    let (mut b, _) = connect(addr).await;
    subscribe(&mut b, "c2", None).await;

    let body = r#"{"name":"ev","channels":["c1","c2"],"data":"{\"x\":1}"}"#;
    assert_eq!(trigger(addr, body).await, (200, "{}".to_owned()));
    for client in [&mut a, &mut b] {
        let frame = next_json(client).await;
        assert_eq!(frame["event"], "ev");
        assert_eq!(frame["data"], r#"{"x":1}"#);
    }

    let body = r#"{"name":"ev2","channel":"c1","data":"plain"}"#;
    assert_eq!(trigger(addr, body).await.0, 200);
    let frame = next_json(&mut a).await;
    assert_eq!(
        (
            frame["event"].as_str(),
            frame["channel"].as_str(),
            frame["data"].as_str()
        ),
        (Some("ev2"), Some("c1"), Some("plain"))
    );
}

#[tokio::test]
async fn socket_id_excludes_that_socket() {
    let (_gateway, addr) = serve(settings()).await;
    let (mut a, a_id) = connect(addr).await;
    subscribe(&mut a, "c1", None).await;
    let (mut b, _) = connect(addr).await;
    subscribe(&mut b, "c1", None).await;
    let body = format!(r#"{{"name":"ev","channels":["c1"],"data":"{{}}","socket_id":"{a_id}"}}"#);
    assert_eq!(trigger(addr, &body).await.0, 200);
    assert_eq!(next_json(&mut b).await["event"], "ev");
    send(&mut a, r#"{"event":"pusher:ping"}"#).await;
    assert_eq!(next_json(&mut a).await["event"], "pusher:pong");
}

#[tokio::test]
async fn bad_credentials_get_401() {
    let (gateway, addr) = serve(settings()).await;
    let body = r#"{"name":"ev","channels":["c1"],"data":"{}"}"#;
    let cases = [
        (
            "wrong secret",
            signed_path(body, now(), KEY, "not-the-secret"),
        ),
        ("wrong key", signed_path(body, now(), "other-key", SECRET)),
        (
            "stale timestamp",
            signed_path(body, now() - 601, KEY, SECRET),
        ),
        (
            "no signature",
            format!(
                "/apps/{APP_ID}/events?auth_key={KEY}&auth_timestamp={}",
                now()
            ),
        ),
    ];
    for (case, path) in cases {
        let (status, response) = http(addr, "POST", &path, body.as_bytes()).await;
        assert_eq!(status, 401, "{case}: {response}");
        let json: serde_json::Value = serde_json::from_str(&response).unwrap();
        assert!(json["error"].is_string(), "{case}");
    }
    // A signature for another body: body_md5 no longer matches.
    let path = signed_path(body, now(), KEY, SECRET);
    let other = r#"{"name":"ev","channels":["c1"],"data":"{\"evil\":1}"}"#;
    assert_eq!(http(addr, "POST", &path, other.as_bytes()).await.0, 401);
    // Tampering with a signed parameter.
    let tampered = path.replace("auth_version=1.0", "auth_version=1.1");
    assert_eq!(http(addr, "POST", &tampered, body.as_bytes()).await.0, 401);
    drop(gateway);
}

#[tokio::test]
async fn malformed_bodies_get_400_big_data_413_and_another_app_404() {
    let (_gateway, addr) = serve(settings()).await;
    let too_many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let too_many =
        serde_json::json!({ "name": "ev", "channels": too_many, "data": "{}" }).to_string();
    for body in [
        "not json",
        r#"{"name":"ev","channels":["c1"]}"#,
        r#"{"name":"ev","channels":["c1"],"data":{"object":true}}"#,
        r#"{"name":"ev","data":"{}"}"#,
        r#"{"name":"ev","channels":[],"data":"{}"}"#,
        r#"{"name":"ev","channels":["bad name"],"data":"{}"}"#,
        too_many.as_str(),
    ] {
        let (status, response) = trigger(addr, body).await;
        assert_eq!(status, 400, "{body}: {response}");
    }
    let big =
        serde_json::json!({ "name": "ev", "channels": ["c1"], "data": "x".repeat(10 * 1024 + 1) });
    assert_eq!(trigger(addr, &big.to_string()).await.0, 413);
    let body = r#"{"name":"ev","channels":["c1"],"data":"{}"}"#;
    let query = order_pusher::trigger_query("other", KEY, SECRET, body.as_bytes(), now());
    assert_eq!(
        http(
            addr,
            "POST",
            &format!("/apps/other/events?{query}"),
            body.as_bytes()
        )
        .await
        .0,
        404
    );
}
