//! Listing, reading and cancelling orders: only the caller's own, the same 404 for a
//! missing order and another user's, and stock returned exactly once by a cancel.

use axum::http::StatusCode;
use order_core::OrderId;
use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp};

fn id_of(resp: &Resp) -> u64 {
    resp.json()["data"]["id"].as_u64().unwrap()
}

#[tokio::test]
async fn a_list_shows_only_the_callers_orders_newest_first_with_paging_facts() {
    let app = TestApp::new().await;
    let alice = app.alice_token().await;
    let bob = app.bob_token().await;
    let mut mine = Vec::new();
    for n in 0..3 {
        mine.push(id_of(
            &app.place(&alice, &[(app.mouse, 1)], &format!("a{n}")).await,
        ));
        app.clock.advance(std::time::Duration::from_secs(1));
    }
    app.place(&bob, &[(app.mouse, 1)], "b0").await;

    let all = app.get("/api/orders").bearer(&alice).send().await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    let body = all.json();
    let ids: Vec<u64> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, mine.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(
        body["meta"],
        json!({"current_page": 1, "per_page": 15, "total": 3, "last_page": 1})
    );

    let page = app
        .get("/api/orders?per_page=2&page=2")
        .bearer(&alice)
        .send()
        .await;
    let body = page.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["data"][0]["id"], mine[0]);
    assert_eq!(
        body["meta"],
        json!({"current_page": 2, "per_page": 2, "total": 3, "last_page": 2})
    );

    let beyond = app.get("/api/orders?page=9").bearer(&alice).send().await;
    assert_eq!(beyond.json()["data"], json!([]));
}

#[tokio::test]
async fn a_status_filter_and_an_empty_list_still_report_last_page_one() {
    let app = TestApp::new().await;
    let alice = app.alice_token().await;
    let first = id_of(&app.place(&alice, &[(app.mouse, 1)], "a").await);
    app.place(&alice, &[(app.mouse, 1)], "b").await;
    app.post(&format!("/api/orders/{first}/cancel"))
        .bearer(&alice)
        .send()
        .await;

    let cancelled = app
        .get("/api/orders?status=CANCELLED")
        .bearer(&alice)
        .send()
        .await;
    let body = cancelled.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["data"][0]["id"], first);
    let paid = app
        .get("/api/orders?status=PAID")
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(
        paid.json(),
        json!({"data": [], "meta": {"current_page": 1, "per_page": 15, "total": 0, "last_page": 1}})
    );
}

#[tokio::test]
async fn each_bad_list_parameter_is_listed_in_one_422() {
    let app = TestApp::new().await;
    let alice = app.alice_token().await;
    let resp = app
        .get("/api/orders?status=LOST&page=0&per_page=51&user_id=1")
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(
        resp.error_fields(),
        ["page", "per_page", "status", "user_id"]
    );
    for query in [
        "page=abc",
        "page=1.5",
        "page=",
        "page=-1",
        "page=4294967296",
        "page=1&page=2",
    ] {
        let resp = app
            .get(&format!("/api/orders?{query}"))
            .bearer(&alice)
            .send()
            .await;
        assert_eq!(resp.error_fields(), ["page"], "{query}");
    }
    for query in ["per_page=0", "per_page=x", "per_page=99999999999999999999"] {
        let resp = app
            .get(&format!("/api/orders?{query}"))
            .bearer(&alice)
            .send()
            .await;
        assert_eq!(resp.error_fields(), ["per_page"], "{query}");
    }
    let ok = app
        .get("/api/orders?page=4294967295&per_page=50")
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}

#[tokio::test]
async fn another_users_order_is_the_same_404_as_a_missing_one() {
    let app = TestApp::new().await;
    let alice = app.alice_token().await;
    let bob = app.bob_token().await;
    let id = id_of(&app.place(&alice, &[(app.laptop, 1)], "a").await);

    let own = app
        .get(&format!("/api/orders/{id}"))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.json()["data"]["id"], id);

    let foreign = app
        .get(&format!("/api/orders/{id}"))
        .bearer(&bob)
        .send()
        .await;
    let missing = app.get("/api/orders/987654").bearer(&bob).send().await;
    let a = foreign.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let b = missing.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(a, b);
    assert_eq!(
        a,
        json!({"message": "Order not found.", "error_code": "NOT_FOUND"})
    );

    let foreign_cancel = app
        .post(&format!("/api/orders/{id}/cancel"))
        .bearer(&bob)
        .send()
        .await;
    let missing_cancel = app
        .post("/api/orders/987654/cancel")
        .bearer(&bob)
        .send()
        .await;
    assert_eq!(
        foreign_cancel.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND"),
        missing_cancel.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    assert_eq!(app.stock(app.laptop), 49, "Bob's cancel changed nothing");
    let still = app
        .get(&format!("/api/orders/{id}"))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(still.json()["data"]["status"], "PENDING");
}

#[tokio::test]
async fn an_id_that_is_not_a_positive_64_bit_integer_is_404() {
    let app = TestApp::new().await;
    let alice = app.alice_token().await;
    for id in [
        "abc",
        "0",
        "-1",
        "1.0",
        "+1",
        "%20",
        "9223372036854775808",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        for (method, path) in [
            ("GET", format!("/api/orders/{id}")),
            ("POST", format!("/api/orders/{id}/cancel")),
        ] {
            let resp = app
                .request(method.parse().unwrap(), &path)
                .bearer(&alice)
                .send()
                .await;
            let body = resp.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
            assert_eq!(body["message"], "Order not found.", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn a_cancel_returns_the_stock_once_and_a_second_cancel_changes_nothing() {
    let app = TestApp::new().await;
    let alice = app.alice_token().await;
    let id = id_of(&app.place(&alice, &[(app.headphones, 1)], "a").await);
    assert_eq!(app.stock(app.headphones), 0);
    // Any body is ignored, whatever its type.
    let resp = app
        .post(&format!("/api/orders/{id}/cancel"))
        .bearer(&alice)
        .header("content-type", "text/plain")
        .body("ignored")
        .send()
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let order = &resp.json()["data"];
    assert_eq!(order["status"], "CANCELLED");
    assert!(order["cancelled_at"].is_string(), "{order}");
    assert_eq!(app.stock(app.headphones), 1);

    let again = app
        .post(&format!("/api/orders/{id}/cancel"))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["data"], *order);
    assert_eq!(app.stock(app.headphones), 1, "returned exactly once");
}

#[tokio::test]
async fn a_paid_order_cannot_be_cancelled_409_invalid_transition() {
    let app = TestApp::new().await;
    let alice = app.alice_token().await;
    let id = id_of(&app.place(&alice, &[(app.mouse, 3)], "a").await);
    app.service
        .process_order(OrderId::new(id).unwrap())
        .await
        .unwrap();
    let shown = app
        .get(&format!("/api/orders/{id}"))
        .bearer(&alice)
        .send()
        .await;
    assert_eq!(shown.json()["data"]["status"], "PAID");

    let resp = app
        .post(&format!("/api/orders/{id}/cancel"))
        .bearer(&alice)
        .send()
        .await;
    let body = resp.assert_error(StatusCode::CONFLICT, "INVALID_TRANSITION");
    assert_eq!(
        body["message"],
        "Order cannot be cancelled. Current status: PAID"
    );
    assert_eq!(app.stock(app.mouse), 197);
}

#[tokio::test]
async fn products_are_listed_and_read_with_prices_as_strings() {
    let app = TestApp::new().await;
    let list = app.get("/api/products").send().await;
    assert_eq!(list.status, StatusCode::OK);
    let data = list.json()["data"].clone();
    assert_eq!(data.as_array().unwrap().len(), 4);
    assert_eq!(
        data[0],
        json!({"id": app.laptop.get(), "name": "Laptop Pro", "price": "999.99", "stock": 50})
    );
    let one = app
        .get(&format!("/api/products/{}", app.headphones))
        .send()
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(
        one.json()["data"],
        json!({"id": app.headphones.get(), "name": "Limited Edition Headphones", "price": "299.99", "stock": 1})
    );
    for id in ["999", "0", "abc", "-3", "18446744073709551616"] {
        let resp = app.get(&format!("/api/products/{id}")).send().await;
        let body: Value = resp.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
        assert_eq!(body["message"], "Product not found.");
    }
}
