//! Inputs at the edge that the API accepts, each writing the order the design says
//! (they cannot sit in the bad-input table, which asserts nothing is written), and a
//! token that expires (a server with a one-second token lifetime), and the rate limit.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::Request;
use super::harness::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_edge_cases_write_the_order_the_design_says() {
    let stack = Stack::with_env(&[("ORDERS_GRACE_PERIOD_MS", "600000")]).await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;
    let order = |body: Value| Request::post_json("/api/orders", &body).bearer(&alice.token);

    // Duplicate product ids are merged into one line (DESIGN §4: 1..=50 lines counted as
    // sent, before merging): 1 + 2 Laptop Pro is one line of 3.
    let merged = client
        .send(order(json!({"items": [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}], "idempotency_key": "merged"})))
        .await;
    merged.expect(201, "");
    assert_eq!(
        merged.data()["items"],
        json!([{"product_id": 1, "quantity": 3, "unit_price": "999.99"}])
    );
    assert_eq!(merged.data()["total_amount"], "2999.97");
    assert_eq!(client.stock(1).await, 47);

    // Exactly 50 lines as sent is allowed (they merge into one line of 50 mice).
    let fifty: Vec<Value> = (0..50)
        .map(|_| json!({"product_id": 2, "quantity": 1}))
        .collect();
    let reply = client
        .send(order(json!({"items": fifty, "idempotency_key": "fifty"})))
        .await;
    reply.expect(201, "");
    assert_eq!(
        reply.data()["items"],
        json!([{"product_id": 2, "quantity": 50, "unit_price": "29.99"}])
    );

    // Your own user_id is accepted, as a number or a string of digits.
    for (key, user_id) in [
        ("own-id", json!(alice.user_id)),
        ("own-id-text", json!(alice.user_id.to_string())),
    ] {
        client
            .send(order(json!({"user_id": user_id, "items": [{"product_id": 3, "quantity": 1}], "idempotency_key": key})))
            .await
            .expect(201, "");
    }

    // A 255-character key, a key of SQL metacharacters (replayed too), the key in the
    // header only, and a JSON content type with parameters.
    let long = "k".repeat(255);
    let sql_key = "x';DROP/**/TABLE/**/orders;--";
    for key in [long.as_str(), sql_key] {
        client
            .create(&alice.token, &[(4, 1)], key)
            .await
            .expect(201, "");
    }
    let replay = client.create(&alice.token, &[(4, 1)], sql_key).await;
    replay.expect(200, "");
    assert_eq!(replay.data()["idempotency_key"], sql_key);
    let by_header = order(json!({"items": [{"product_id": 2, "quantity": 1}]}))
        .header("idempotency-key", "header-only");
    client.send(by_header).await.expect(201, "");
    let charset = Request::new("POST", "/api/orders")
        .bearer(&alice.token)
        .header("content-type", "application/json; charset=utf-8")
        .body(
            json!({"items": [{"product_id": 2, "quantity": 1}], "idempotency_key": "charset"})
                .to_string(),
        );
    client.send(charset).await.expect(201, "");

    assert_eq!(client.order_count(&alice.token).await, 8);
    let stocks = client.stocks().await;
    assert_eq!(stocks, [(1, 47), (2, 148), (3, 98), (4, 73), (5, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_with_401_and_writes_nothing() {
    let stack = Stack::with_env(&[("ORDERS_TOKEN_TTL_SECS", "1")]).await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;
    client
        .get("/api/orders", Some(&alice.token))
        .await
        .expect(200, "");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    client
        .get("/api/orders", Some(&alice.token))
        .await
        .expect(401, "UNAUTHENTICATED");
    client
        .create(&alice.token, &[(1, 1)], "after-expiry")
        .await
        .expect(401, "UNAUTHENTICATED");
    let fresh = client.login("alice@example.com").await;
    assert_eq!(client.order_count(&fresh.token).await, 0);
    assert_eq!(client.stock(1).await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_per_user_rate_limit_requests_get_429_with_retry_after_and_write_nothing() {
    let stack = Stack::with_env(&[("ORDERS_RATE_LIMIT_PER_MINUTE", "5")]).await;
    let client = stack.client;
    let [alice, bob, _] = client.login_all().await;
    for _ in 0..5 {
        client
            .get("/api/orders", Some(&alice.token))
            .await
            .expect(200, "");
    }
    let limited = client
        .create(&alice.token, &[(1, 1)], "over-the-limit")
        .await;
    limited.expect(429, "RATE_LIMIT_EXCEEDED");
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in whole seconds");
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_eq!(
        client.stock(1).await,
        50,
        "the refused create wrote nothing"
    );
    // The limit is per user: bob still has his whole budget.
    client
        .get("/api/orders", Some(&bob.token))
        .await
        .expect(200, "");
}
