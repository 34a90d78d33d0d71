//! `POST /broadcasting/auth` and `GET /api/events`: the HTTP side of live events.

use axum::http::StatusCode;
use order_core::domain::OrderStatus;
use order_core::ports::JobQueue;
use serde_json::json;

use crate::helpers::*;

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn the_caller_gets_its_own_private_channel_signed_from_a_form() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let channel = format!("private-orders.{}", app.alice());
    let resp = app
        .post("/broadcasting/auth")
        .bearer(&token)
        .header("content-type", FORM)
        .body(format!(
            "socket_id=123.456&channel_name={}",
            channel.replace('.', "%2E")
        ))
        .send()
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json(),
        json!({ "auth": test_signature("123.456", &channel) })
    );
    // JSON is accepted too.
    let resp = app
        .post("/broadcasting/auth")
        .bearer(&token)
        .json(json!({"socket_id": "1.2", "channel_name": channel}))
        .send()
        .await;
    assert_eq!(resp.json()["auth"], test_signature("1.2", &channel));
}

#[tokio::test]
async fn another_users_channel_or_any_other_channel_is_forbidden() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    for channel in [
        format!("private-orders.{}", app.bob()),
        "private-orders.1x".to_owned(),
        "orders.1".to_owned(),
        "presence-orders.1".to_owned(),
        format!("private-orders.{} ", app.alice()),
    ] {
        let resp = app
            .post("/broadcasting/auth")
            .bearer(&token)
            .header("content-type", FORM)
            .body(format!("socket_id=1.1&channel_name={channel}"))
            .send()
            .await;
        resp.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
}

#[tokio::test]
async fn bad_auth_requests_get_a_precise_4xx() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let channel = format!("private-orders.{}", app.alice());
    /// Content type, body, status, error code, fields at fault.
    type Case<'a> = (Option<&'a str>, String, StatusCode, &'a str, &'a [&'a str]);
    let cases: Vec<Case<'_>> = vec![
        (
            Some(FORM),
            format!("channel_name={channel}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            &["socket_id"],
        ),
        (
            Some(FORM),
            "socket_id=1.1".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            &["channel_name"],
        ),
        (
            Some(FORM),
            format!("socket_id=abc&channel_name={channel}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            &["socket_id"],
        ),
        (
            Some(FORM),
            format!("socket_id=1.&channel_name={channel}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            &["socket_id"],
        ),
        (
            Some(FORM),
            String::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            &["channel_name", "socket_id"],
        ),
        (
            Some("text/plain"),
            format!("socket_id=1.1&channel_name={channel}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            &[],
        ),
        (
            None,
            format!("socket_id=1.1&channel_name={channel}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            &[],
        ),
    ];
    for (content_type, body, status, code, fields) in cases {
        let mut req = app
            .post("/broadcasting/auth")
            .bearer(&token)
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await;
        resp.assert_error(status, code);
        if !fields.is_empty() {
            assert_eq!(resp.error_fields(), fields, "{body}");
        }
    }
    let resp = app
        .post("/broadcasting/auth")
        .header("content-type", FORM)
        .body(format!("socket_id=1.1&channel_name={channel}"))
        .send()
        .await;
    resp.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
}

#[tokio::test]
async fn without_a_gateway_the_auth_route_is_not_found() {
    let app = TestApp::with(Options {
        without_signer: true,
        ..Options::default()
    })
    .await;
    let token = app.alice_token().await;
    let resp = app
        .post("/broadcasting/auth")
        .bearer(&token)
        .header("content-type", FORM)
        .body(format!(
            "socket_id=1.1&channel_name=private-orders.{}",
            app.alice()
        ))
        .send()
        .await;
    resp.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn events_after_a_seq_are_the_callers_log_with_the_broadcast_payloads() {
    let app = TestApp::new().await;
    let alice = app.alice_token().await;
    let bob = app.bob_token().await;
    let first = app.place(&alice, &[(app.mouse, 2)], "e1").await.json()["data"]["id"].clone();
    let second = app.place(&alice, &[(app.laptop, 1)], "e2").await.json()["data"]["id"].clone();
    app.place(&bob, &[(app.mouse, 1)], "b1").await;
    let cancel = app
        .post(&format!("/api/orders/{second}/cancel"))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(cancel.status, StatusCode::OK);
    let cancelled_at = cancel.json()["data"]["cancelled_at"].clone();

    let resp = app.get("/api/events").bearer(&alice).send().await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let body = resp.json();
    let channel = format!("private-orders.{}", app.alice());
    assert_eq!(
        body,
        json!({
            "data": [
                {"seq": 1, "event": "order.created", "channel": channel,
                 "data": {"order_id": first.to_string(), "total": "59.98", "created_at": "2023-11-14T22:13:20.000Z", "seq": 1}},
                {"seq": 2, "event": "order.created", "channel": channel,
                 "data": {"order_id": second.to_string(), "total": "999.99", "created_at": "2023-11-14T22:13:20.000Z", "seq": 2}},
                {"seq": 3, "event": "order.cancelled", "channel": channel,
                 "data": {"order_id": second.to_string(), "cancelled_at": cancelled_at, "seq": 3}},
            ],
            "meta": {"after": 0, "last_seq": 3, "has_more": false, "truncated": false}
        })
    );
    let page = app
        .get("/api/events?after=1&limit=1")
        .bearer(&alice)
        .send()
        .await
        .json();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["seq"], 2);
    assert_eq!(
        page["meta"],
        json!({"after": 1, "last_seq": 3, "has_more": true, "truncated": false})
    );
    let bobs = app.get("/api/events").bearer(&bob).send().await.json();
    assert_eq!(
        bobs["data"].as_array().unwrap().len(),
        1,
        "bob sees only his own"
    );
    assert_eq!(bobs["data"][0]["seq"], 1, "bob's seq counts on its own");
    // The worker path logs processing and paid (payments always approve here).
    let job = app
        .adapters
        .queue
        .reserve(std::time::Duration::ZERO)
        .await
        .unwrap();
    if let Some(d) = job {
        app.service.handle_delivery(&d).await;
    }
    let after = app
        .get("/api/events?after=3")
        .bearer(&alice)
        .send()
        .await
        .json();
    let kinds: Vec<_> = after["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["order.processing", "order.paid"]);
    assert_eq!(after["data"][1]["data"]["total"], "59.98");
    let order = app
        .service
        .get_order(
            app.alice(),
            order_core::OrderId::new(first.as_u64().unwrap()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(order.status(), OrderStatus::Paid);
}

#[tokio::test]
async fn bad_event_queries_are_422_and_a_token_is_required() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    for (query, field) in [
        ("after=-1", "after"),
        ("after=abc", "after"),
        ("after=", "after"),
        ("after=99999999999999999999999", "after"),
        ("after=9223372036854775808", "after"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("after=1&after=2", "after"),
        ("since=1", "since"),
    ] {
        let resp = app
            .get(&format!("/api/events?{query}"))
            .bearer(&token)
            .send()
            .await;
        resp.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
        assert_eq!(resp.error_fields(), [field], "{query}");
    }
    let resp = app
        .get("/api/events?after=9223372036854775807")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "the largest documented after is accepted"
    );
    app.get("/api/events")
        .send()
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
}
