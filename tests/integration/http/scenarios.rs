//! The reference's published feature scenarios, and the ones it never tested (another
//! user's order, health, SIGTERM), over HTTP against the real server on MySQL + Redis.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::Request;
use super::harness::Stack;

/// A grace period longer than any test: orders stay PENDING, so a cancel always wins.
const NO_WORKER: (&str, &str) = ("ORDERS_GRACE_PERIOD_MS", "600000");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_order_answers_201_with_its_location_and_decrements_stock() {
    let stack = Stack::start().await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;
    assert_eq!(client.stock(2).await, 200);
    assert_eq!(client.stock(4).await, 75);

    let reply = client
        .create(&alice.token, &[(2, 2), (4, 1)], "create-1")
        .await;
    reply.expect(201, "");
    let order = reply.data();
    let id = order["id"].as_u64().expect("id");
    assert_eq!(
        reply.header("location").as_deref(),
        Some(format!("/api/orders/{id}").as_str())
    );
    assert_eq!(reply.header("idempotent-replayed"), None);
    assert_eq!(order["user_id"], alice.user_id);
    assert_eq!(order["status"], "PENDING");
    // 2 × 29.99 + 149.99, exactly.
    assert_eq!(order["total_amount"], "209.97");
    assert_eq!(order["idempotency_key"], "create-1");
    assert_eq!(order["cancelled_at"], Value::Null);
    assert!(
        order["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(order["updated_at"].is_string());
    assert_eq!(
        order["items"],
        json!([
            {"product_id": 2, "quantity": 2, "unit_price": "29.99"},
            {"product_id": 4, "quantity": 1, "unit_price": "149.99"},
        ])
    );
    assert_eq!(client.stock(2).await, 198);
    assert_eq!(client.stock(4).await, 74);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_beyond_the_stock_answers_409_insufficient_stock_and_writes_nothing() {
    let stack = Stack::start().await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;

    let reply = client.create(&alice.token, &[(5, 2)], "too-many").await;
    reply.expect(409, "INSUFFICIENT_STOCK");
    assert_eq!(
        reply.json()["message"],
        "Insufficient stock for product 5. Requested: 2, Available: 1"
    );
    assert_eq!(client.stock(5).await, 1);
    assert_eq!(client.order_count(&alice.token).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_answers_201_then_200_replayed_with_the_same_order() {
    let stack = Stack::start().await;
    let client = stack.client;
    let [alice, bob, _] = client.login_all().await;

    let first = client.create(&alice.token, &[(1, 1)], "dup-key").await;
    first.expect(201, "");
    let again = client.create(&alice.token, &[(1, 1)], "dup-key").await;
    again.expect(200, "");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.data()["id"], first.data()["id"]);
    // The key in the header instead of the body is the same key.
    let by_header = Request::post_json(
        "/api/orders",
        &json!({"items": [{"product_id": 1, "quantity": 1}]}),
    )
    .bearer(&alice.token)
    .header("idempotency-key", "dup-key");
    let header_reply = client.send(by_header).await;
    header_reply.expect(200, "");
    assert_eq!(header_reply.data()["id"], first.data()["id"]);
    assert_eq!(client.stock(1).await, 49, "one order, one unit");
    assert_eq!(client.order_count(&alice.token).await, 1);

    // The same key with other lines is refused; another user's key space is their own.
    client
        .create(&alice.token, &[(1, 2)], "dup-key")
        .await
        .expect(422, "IDEMPOTENCY_KEY_REUSED");
    let bobs = client.create(&bob.token, &[(1, 1)], "dup-key").await;
    bobs.expect(201, "");
    assert_ne!(bobs.data()["id"], first.data()["id"]);
    assert_eq!(client.stock(1).await, 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_order_answers_422_listing_every_field_at_fault() {
    let stack = Stack::start().await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;

    let body =
        json!({"items": [{"product_id": 1, "quantity": 0}, {"product_id": 0, "quantity": 1}]});
    let reply = client.post("/api/orders", &alice.token, &body).await;
    reply.expect(422, "VALIDATION_FAILED");
    let errors = &reply.json()["errors"];
    for field in ["items.0.quantity", "items.1.product_id", "idempotency_key"] {
        assert!(errors[field].is_array(), "{field} is listed: {reply:?}");
    }
    assert_eq!(client.order_count(&alice.token).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn showing_an_order_answers_it_and_a_missing_one_answers_404() {
    let stack = Stack::start().await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;
    let created = client.create(&alice.token, &[(3, 2)], "show-me").await;
    created.expect(201, "");
    let id = created.data()["id"].as_u64().unwrap();

    let shown = client
        .get(&format!("/api/orders/{id}"), Some(&alice.token))
        .await;
    shown.expect(200, "");
    let (mut a, mut b) = (created.data(), shown.data());
    for volatile in ["status", "updated_at"] {
        a.as_object_mut().unwrap().remove(volatile);
        b.as_object_mut().unwrap().remove(volatile);
    }
    assert_eq!(a, b, "the shown order is the created one");

    let missing = client.get("/api/orders/999999", Some(&alice.token)).await;
    missing.expect(404, "NOT_FOUND");
    assert_eq!(missing.json()["message"], "Order not found.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_list_is_paged_newest_first_with_correct_meta_and_filters_by_status() {
    let stack = Stack::with_env(&[NO_WORKER]).await;
    let client = stack.client;
    let [alice, bob, _] = client.login_all().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let reply = client
            .create(&alice.token, &[(2, 1)], &format!("page-{i}"))
            .await;
        reply.expect(201, "");
        ids.push(reply.data()["id"].as_u64().unwrap());
    }
    client
        .create(&bob.token, &[(2, 1)], "bobs")
        .await
        .expect(201, "");
    ids.reverse(); // newest first

    let page = |query: &'static str| {
        let token = alice.token.clone();
        async move {
            let reply = client
                .get(&format!("/api/orders{query}"), Some(&token))
                .await;
            reply.expect(200, "");
            let body = reply.json();
            let got: Vec<u64> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_u64().unwrap())
                .collect();
            (got, body["meta"].clone())
        }
    };
    let (first, meta) = page("?per_page=3").await;
    assert_eq!(first, ids[..3]);
    assert_eq!(
        meta,
        json!({"current_page": 1, "per_page": 3, "total": 7, "last_page": 3})
    );
    let (third, meta) = page("?per_page=3&page=3").await;
    assert_eq!(third, ids[6..]);
    assert_eq!(meta["current_page"], 3);
    let (beyond, meta) = page("?per_page=3&page=4").await;
    assert!(beyond.is_empty());
    assert_eq!(meta["total"], 7);
    let (all, meta) = page("").await;
    assert_eq!(all, ids, "the default page holds all seven, none of bob's");
    assert_eq!(
        meta,
        json!({"current_page": 1, "per_page": 15, "total": 7, "last_page": 1})
    );

    client
        .post(
            &format!("/api/orders/{}/cancel", ids[0]),
            &alice.token,
            &json!({}),
        )
        .await
        .expect(200, "");
    let (cancelled, meta) = page("?status=CANCELLED").await;
    assert_eq!(cancelled, [ids[0]]);
    assert_eq!(meta["total"], 1);
    let (pending, meta) = page("?status=PENDING&per_page=50").await;
    assert_eq!(pending, ids[1..]);
    assert_eq!(meta["total"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pending_order_restores_its_stock_once() {
    let stack = Stack::with_env(&[NO_WORKER]).await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;
    let created = client.create(&alice.token, &[(3, 3)], "to-cancel").await;
    created.expect(201, "");
    let id = created.data()["id"].as_u64().unwrap();
    assert_eq!(client.stock(3).await, 97);

    let path = format!("/api/orders/{id}/cancel");
    let cancelled = client.post(&path, &alice.token, &json!({})).await;
    cancelled.expect(200, "");
    assert_eq!(cancelled.data()["status"], "CANCELLED");
    assert!(cancelled.data()["cancelled_at"].is_string());
    assert_eq!(client.stock(3).await, 100);

    // Idempotent: the cancelled order again, no second restock.
    let again = client.post(&path, &alice.token, &json!({})).await;
    again.expect(200, "");
    assert_eq!(again.data()["status"], "CANCELLED");
    assert_eq!(client.stock(3).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_list_and_a_product_show_the_seeded_catalogue() {
    let stack = Stack::start().await;
    let client = stack.client;
    let reply = client.get("/api/products", None).await;
    reply.expect(200, "");
    assert_eq!(
        reply.json(),
        json!({"data": [
            {"id": 1, "name": "Laptop Pro", "price": "999.99", "stock": 50},
            {"id": 2, "name": "Wireless Mouse", "price": "29.99", "stock": 200},
            {"id": 3, "name": "USB-C Hub", "price": "49.99", "stock": 100},
            {"id": 4, "name": "Mechanical Keyboard", "price": "149.99", "stock": 75},
            {"id": 5, "name": "Limited Edition Headphones", "price": "299.99", "stock": 1},
        ]})
    );
    let one = client.get("/api/products/5", None).await;
    one.expect(200, "");
    assert_eq!(
        one.data(),
        json!({"id": 5, "name": "Limited Edition Headphones", "price": "299.99", "stock": 1})
    );
    client
        .get("/api/products/6", None)
        .await
        .expect(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_id_is_echoed_and_otherwise_generated_on_every_response() {
    let stack = Stack::start().await;
    let client = stack.client;
    for path in ["/api/products", "/api/orders/1", "/api/nowhere"] {
        let echoed = client
            .send(Request::get(path).header("x-trace-id", "trace-abc-123"))
            .await;
        assert_eq!(
            echoed.header("x-trace-id").as_deref(),
            Some("trace-abc-123"),
            "{path}"
        );
    }
    let a = client.get("/api/products", None).await.header("x-trace-id");
    let b = client.get("/api/orders", None).await.header("x-trace-id");
    let (a, b) = (a.expect("generated"), b.expect("generated on a 401 too"));
    assert!(!a.is_empty() && a != b, "{a} / {b}");
    // A client's id that is not short and plain is replaced, never echoed.
    let unsafe_id = client
        .send(Request::get("/api/products").header("x-trace-id", "<script>"))
        .await
        .header("x-trace-id")
        .expect("generated");
    assert!(
        !unsafe_id.is_empty() && unsafe_id != "<script>",
        "{unsafe_id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_eventually_reach_paid_or_failed_and_failed_ones_give_their_stock_back() {
    let stack = Stack::with_env(&[("ORDERS_PAYMENT_APPROVAL_RATE", "0.5")]).await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let reply = client
            .create(&alice.token, &[(2, 1)], &format!("pay-{i}"))
            .await;
        reply.expect(201, "");
        ids.push(reply.data()["id"].as_u64().unwrap());
    }
    let mut paid = 0;
    for id in &ids {
        let order = client
            .wait_for_status(
                &alice.token,
                *id,
                &["PAID", "FAILED"],
                Duration::from_secs(60),
            )
            .await;
        if order["status"] == "PAID" {
            paid += 1;
        }
        // Terminal: a cancel is refused as a conflict with its state.
        let cancel = client
            .post(
                &format!("/api/orders/{id}/cancel"),
                &alice.token,
                &json!({}),
            )
            .await;
        cancel.expect(409, "INVALID_TRANSITION");
    }
    assert_eq!(
        client.stock(2).await,
        200 - paid,
        "only PAID orders keep their unit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_order_is_404_exactly_like_a_missing_one_and_stays_untouched() {
    let stack = Stack::with_env(&[NO_WORKER]).await;
    let client = stack.client;
    let [alice, bob, _] = client.login_all().await;
    let created = client.create(&alice.token, &[(4, 2)], "alices").await;
    created.expect(201, "");
    let id = created.data()["id"].as_u64().unwrap();
    let missing_id = id + 1000;

    let shown = client
        .get(&format!("/api/orders/{id}"), Some(&bob.token))
        .await;
    let missing = client
        .get(&format!("/api/orders/{missing_id}"), Some(&bob.token))
        .await;
    shown.expect(404, "NOT_FOUND");
    assert_eq!(
        shown.body, missing.body,
        "byte for byte: nothing tells the two apart"
    );

    let cancel = client
        .post(&format!("/api/orders/{id}/cancel"), &bob.token, &json!({}))
        .await;
    let cancel_missing = client
        .post(
            &format!("/api/orders/{missing_id}/cancel"),
            &bob.token,
            &json!({}),
        )
        .await;
    cancel.expect(404, "NOT_FOUND");
    assert_eq!(cancel.body, cancel_missing.body);

    let mine = client
        .get(&format!("/api/orders/{id}"), Some(&alice.token))
        .await;
    mine.expect(200, "");
    assert_eq!(mine.data()["status"], "PENDING");
    assert_eq!(mine.data()["cancelled_at"], Value::Null);
    assert_eq!(client.stock(4).await, 73);
    assert_eq!(client.order_count(&bob.token).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_200_with_the_database_and_redis_connected() {
    let stack = Stack::start().await;
    let reply = stack.client.get("/api/health", None).await;
    reply.expect(200, "");
    let body = reply.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["services"]["database"], "connected");
    assert_eq!(body["services"]["redis"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_gracefully_with_exit_code_0() {
    let mut stack = Stack::start().await;
    let client = stack.client;
    let alice = client.login("alice@example.com").await;
    client
        .create(&alice.token, &[(1, 1)], "before-stop")
        .await
        .expect(201, "");
    let status = stack.server.terminate().expect("the server was running");
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr:\n{}",
        stack.server.stderr_text()
    );
}
