//! `POST /api/orders`: creation, replay, every refusal — and stock unchanged after each
//! refusal.

use std::time::Duration;

use axum::http::StatusCode;
use order_core::ports::{DistributedLock, LockToken};
use serde_json::{Value, json};

use crate::helpers::{START, TestApp};

#[tokio::test]
async fn an_order_is_created_with_201_a_location_and_the_exact_total() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let resp = app
        .place(&token, &[(app.mouse, 2), (app.keyboard, 1)], "first-order")
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("idempotent-replayed"), None);
    let order = &resp.json()["data"];
    let id = order["id"].as_u64().unwrap();
    assert_eq!(
        resp.header("location"),
        Some(format!("/api/orders/{id}").as_str())
    );
    let at = order_core::Timestamp::from_millis(START).to_rfc3339();
    assert_eq!(
        *order,
        json!({
            "id": id,
            "user_id": app.alice().get(),
            "status": "PENDING",
            "total_amount": "209.97",
            "idempotency_key": "first-order",
            "cancelled_at": null,
            "created_at": at,
            "updated_at": at,
            "items": [
                {"product_id": app.mouse.get(), "quantity": 2, "unit_price": "29.99"},
                {"product_id": app.keyboard.get(), "quantity": 1, "unit_price": "149.99"},
            ],
        })
    );
    assert_eq!(app.stock(app.mouse), 198);
    assert_eq!(app.stock(app.keyboard), 74);
}

#[tokio::test]
async fn the_same_key_and_lines_replay_the_order_with_200_and_idempotent_replayed() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let first = app.place(&token, &[(app.laptop, 1)], "k-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = app.place(&token, &[(app.laptop, 1)], "k-1").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["data"], first.json()["data"]);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(app.stock(app.laptop), 49, "stock taken once");

    // Keys are per user: Bob's "k-1" is a new order.
    let bob = app.bob_token().await;
    let other = app.place(&bob, &[(app.laptop, 1)], "k-1").await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_ne!(other.json()["data"]["id"], first.json()["data"]["id"]);
}

#[tokio::test]
async fn the_key_may_come_from_the_idempotency_key_header() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let items = json!([{"product_id": app.mouse.get(), "quantity": 1}]);
    let resp = app
        .post("/api/orders")
        .bearer(&token)
        .header("idempotency-key", "from-header")
        .json(json!({"items": items}))
        .send()
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(resp.json()["data"]["idempotency_key"], "from-header");

    // The same key in both places is fine (and replays here).
    let both = app
        .post("/api/orders")
        .bearer(&token)
        .header("idempotency-key", "from-header")
        .json(json!({"items": items, "idempotency_key": "from-header"}))
        .send()
        .await;
    assert_eq!(both.status, StatusCode::OK, "{}", both.text);
}

#[tokio::test]
async fn a_missing_key_or_two_different_keys_are_refused_on_idempotency_key() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let before = app.stocks();
    let items = json!([{"product_id": app.mouse.get(), "quantity": 1}]);
    let neither = app
        .post("/api/orders")
        .bearer(&token)
        .json(json!({"items": items}))
        .send()
        .await;
    assert_eq!(neither.error_fields(), ["idempotency_key"]);
    let differ = app
        .post("/api/orders")
        .bearer(&token)
        .header("idempotency-key", "a")
        .json(json!({"items": items, "idempotency_key": "b"}))
        .send()
        .await;
    assert_eq!(differ.error_fields(), ["idempotency_key"]);
    for bad in [
        json!(""),
        json!("has space"),
        json!("x".repeat(256)),
        json!(7),
    ] {
        let resp = app
            .post("/api/orders")
            .bearer(&token)
            .json(json!({"items": items, "idempotency_key": bad}))
            .send()
            .await;
        assert_eq!(resp.error_fields(), ["idempotency_key"], "{bad}");
    }
    assert_eq!(app.stocks(), before);
}

#[tokio::test]
async fn a_reused_key_with_other_lines_is_422_idempotency_key_reused() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    assert_eq!(
        app.place(&token, &[(app.mouse, 1)], "k").await.status,
        StatusCode::CREATED
    );
    let before = app.stocks();
    let reused = app.place(&token, &[(app.mouse, 2)], "k").await;
    reused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.stocks(), before);
}

#[tokio::test]
async fn every_bad_field_is_listed_at_once_and_nothing_is_written() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let before = app.stocks();
    let body = json!({
        "items": [
            {"product_id": "1", "quantity": 1.5, "price": "1.00"},
            {"product_id": 0, "quantity": 0},
            {"quantity": -1},
            {"product_id": 1, "quantity": 9_223_372_036_854_775_808u64},
            {"product_id": 1, "quantity": "3"},
            7,
        ],
        "idempotency_key": "k",
        "status": "PAID",
        "total_amount": "0.01",
    });
    let resp = app
        .post("/api/orders")
        .bearer(&token)
        .json(body)
        .send()
        .await;
    assert_eq!(
        resp.error_fields(),
        [
            "items.0.price",
            "items.0.product_id",
            "items.0.quantity",
            "items.1.product_id",
            "items.1.quantity",
            "items.2.product_id",
            "items.2.quantity",
            "items.3.quantity",
            "items.4.quantity",
            "items.5",
            "status",
            "total_amount",
        ]
    );
    let errors = &resp.json()["errors"];
    assert_eq!(errors["status"][0], "unknown field");
    assert_eq!(errors["items.0.price"][0], "unknown field");
    assert_eq!(
        errors["items.0.quantity"][0],
        "The items.0.quantity field must be an integer."
    );
    assert_eq!(
        errors["items.3.quantity"][0],
        "The items.3.quantity field must be between 1 and 10000."
    );
    assert_eq!(
        errors["items.2.product_id"][0],
        "The items.2.product_id field is required."
    );
    assert_eq!(app.stocks(), before);
    assert!(app.adapters.repository.orders().is_empty());
}

#[tokio::test]
async fn items_must_be_an_array_of_one_to_fifty_lines_as_sent() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let line = json!({"product_id": app.mouse.get(), "quantity": 1});
    for items in [
        json!([]),
        json!(vec![line.clone(); 51]),
        json!({"0": line}),
        Value::Null,
    ] {
        let resp = app
            .post("/api/orders")
            .bearer(&token)
            .json(json!({"items": items, "idempotency_key": "k"}))
            .send()
            .await;
        assert_eq!(resp.error_fields(), ["items"], "{items}");
    }
    let missing = app
        .post("/api/orders")
        .bearer(&token)
        .json(json!({"idempotency_key": "k"}))
        .send()
        .await;
    assert_eq!(missing.error_fields(), ["items"]);
    // Fifty lines of one product are fine (merged into one line).
    let fifty = app
        .post("/api/orders")
        .bearer(&token)
        .json(json!({"items": vec![line; 50], "idempotency_key": "k"}))
        .send()
        .await;
    assert_eq!(fifty.status, StatusCode::CREATED, "{}", fifty.text);
    assert_eq!(app.stock(app.mouse), 150);
}

#[tokio::test]
async fn a_merged_quantity_above_the_maximum_is_the_cores_validation_error() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let resp = app
        .place(&token, &[(app.mouse, 6000), (app.mouse, 6000)], "k")
        .await;
    assert!(
        resp.error_fields().contains(&"items".to_owned()),
        "{}",
        resp.text
    );
    assert_eq!(app.stock(app.mouse), 200);
}

#[tokio::test]
async fn too_little_stock_is_409_insufficient_stock_with_the_reference_sentence() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let before = app.stocks();
    let resp = app.place(&token, &[(app.headphones, 10)], "k").await;
    let body = resp.assert_error(StatusCode::CONFLICT, "INSUFFICIENT_STOCK");
    assert_eq!(
        body["message"],
        format!(
            "Insufficient stock for product {}. Requested: 10, Available: 1",
            app.headphones
        )
    );
    assert_eq!(app.stocks(), before);

    // The last unit goes to one order; the next is refused.
    assert_eq!(
        app.place(&token, &[(app.headphones, 1)], "a").await.status,
        StatusCode::CREATED
    );
    let late = app.place(&token, &[(app.headphones, 1)], "b").await;
    late.assert_error(StatusCode::CONFLICT, "INSUFFICIENT_STOCK");
    assert_eq!(app.stock(app.headphones), 0);
}

#[tokio::test]
async fn an_unknown_product_is_a_422_on_each_item_that_names_it() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let before = app.stocks();
    let body = json!({
        "items": [
            {"product_id": app.mouse.get(), "quantity": 1},
            {"product_id": 999, "quantity": 1},
            {"product_id": 999, "quantity": 2},
        ],
        "idempotency_key": "k",
    });
    let resp = app
        .post("/api/orders")
        .bearer(&token)
        .json(body)
        .send()
        .await;
    assert_eq!(
        resp.error_fields(),
        ["items.1.product_id", "items.2.product_id"]
    );
    assert_eq!(
        resp.json()["errors"]["items.1.product_id"],
        json!(["The selected product does not exist."])
    );
    assert_eq!(app.stocks(), before);
}

#[tokio::test]
async fn a_user_id_is_accepted_when_it_is_the_callers_and_forbidden_otherwise() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let items = json!([{"product_id": app.mouse.get(), "quantity": 1}]);
    let alice = app.alice().get();
    for (n, own) in [json!(alice), json!(alice.to_string())]
        .into_iter()
        .enumerate()
    {
        let resp = app
            .post("/api/orders")
            .bearer(&token)
            .json(json!({"items": items, "idempotency_key": format!("own-{n}"), "user_id": own}))
            .send()
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{own}: {}", resp.text);
    }
    let before = app.stocks();
    for other in [
        json!(app.bob().get()),
        json!(app.bob().get().to_string()),
        json!(0),
    ] {
        let resp = app
            .post("/api/orders")
            .bearer(&token)
            .json(json!({"items": items, "idempotency_key": "theirs", "user_id": other}))
            .send()
            .await;
        resp.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    for junk in [
        json!("abc"),
        json!(1.5),
        json!(-1),
        json!(null),
        json!([alice]),
    ] {
        let resp = app
            .post("/api/orders")
            .bearer(&token)
            .json(json!({"items": items, "idempotency_key": "junk", "user_id": junk}))
            .send()
            .await;
        assert_eq!(resp.error_fields(), ["user_id"], "{junk}");
    }
    assert_eq!(app.stocks(), before);
}

#[tokio::test]
async fn a_product_lock_held_elsewhere_is_409_lock_conflict() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let holder = LockToken::new("someone-else");
    let key = format!("product:{}", app.mouse);
    assert!(
        app.adapters
            .lock
            .try_acquire(&key, &holder, Duration::from_secs(3600))
            .await
            .unwrap()
    );
    let before = app.stocks();
    let resp = app.place(&token, &[(app.mouse, 1)], "k").await;
    let body = resp.assert_error(StatusCode::CONFLICT, "LOCK_CONFLICT");
    assert_eq!(body["message"], "Could not acquire lock. Please retry.");
    assert_eq!(app.stocks(), before);
}

#[tokio::test]
async fn a_key_whose_first_request_is_still_running_is_409_in_flight_with_retry_after() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let holder = LockToken::new("the-first-request");
    let key = format!("idem:{}:busy-key", app.alice());
    assert!(
        app.adapters
            .lock
            .try_acquire(&key, &holder, Duration::from_secs(3600))
            .await
            .unwrap()
    );
    let before = app.stocks();
    let resp = app.place(&token, &[(app.mouse, 1)], "busy-key").await;
    resp.assert_error(StatusCode::CONFLICT, "IDEMPOTENCY_KEY_IN_FLIGHT");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(app.stocks(), before);
}

#[tokio::test]
async fn a_header_sent_twice_is_refused_not_resolved_by_picking_one() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let before = app.stocks();
    let body = json!({"items": [{"product_id": app.mouse.get(), "quantity": 1}]});

    let two_keys = app
        .post("/api/orders")
        .bearer(&token)
        .header("idempotency-key", "a1")
        .header("idempotency-key", "b2")
        .json(body.clone())
        .send()
        .await;
    two_keys.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
    assert_eq!(two_keys.error_fields(), vec!["idempotency_key".to_owned()]);

    let two_tokens = app
        .post("/api/orders")
        .bearer(&token)
        .header("authorization", "Bearer nope")
        .header("idempotency-key", "t1")
        .json(body.clone())
        .send()
        .await;
    two_tokens.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");

    let two_types = app
        .post("/api/orders")
        .bearer(&token)
        .header("idempotency-key", "c1")
        .header("content-type", "text/plain")
        .json(body)
        .send()
        .await;
    two_types.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(app.stocks(), before, "nothing was written");
}
