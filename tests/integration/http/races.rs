//! True concurrency over HTTP: every connection is opened first, then all requests go
//! out at once (a barrier), against one process or alternating between two API
//! processes on one database and one Redis prefix. The reference's "concurrency" tests
//! ran sequentially; these race.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::client::{Client, Reply, Request, Session, create_request};
use super::harness::Stack;

/// Sends every request at the same moment, each on its own connection; the replies in
/// request order.
async fn all_at_once(requests: Vec<(Client, Request)>) -> Vec<Reply> {
    let mut ready = Vec::with_capacity(requests.len());
    for (client, request) in requests {
        ready.push((client.connect().await, request));
    }
    let barrier = Arc::new(Barrier::new(ready.len()));
    let mut tasks = Vec::with_capacity(ready.len());
    for (conn, request) in ready {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            conn.send(request).await
        }));
    }
    let mut replies = Vec::with_capacity(tasks.len());
    for task in tasks {
        replies.push(task.await.expect("a request task panicked"));
    }
    replies
}

/// Fifty orders for one unit of product 5 (stock 1), spread over the three users with
/// distinct keys, sent alternately to `clients`.
async fn fifty_racers_for_the_last_unit(clients: &[Client], users: &[Session; 3]) -> Vec<Reply> {
    let requests = (0..50)
        .map(|i| {
            let user = &users[i % users.len()];
            let request = create_request(&user.token, &[(5, 1)], &format!("racer-{i}"));
            (clients[i % clients.len()], request)
        })
        .collect();
    all_at_once(requests).await
}

/// Exactly one 201 and 49 × 409 (`INSUFFICIENT_STOCK`, or `LOCK_CONFLICT` for a racer
/// whose lock stayed busy); one order in all; stock 0.
async fn assert_sold_exactly_once(replies: &[Reply], client: Client, users: &[Session; 3]) {
    let created = replies.iter().filter(|r| r.status == 201).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 409).collect();
    let others: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status != 201 && r.status != 409)
        .collect();
    assert!(others.is_empty(), "unexpected answers: {others:?}");
    assert_eq!(created, 1, "exactly one racer gets the unit");
    assert_eq!(refused.len(), 49);
    for reply in &refused {
        assert!(
            ["INSUFFICIENT_STOCK", "LOCK_CONFLICT"].contains(&reply.code().as_str()),
            "{reply:?}"
        );
    }
    let short = refused
        .iter()
        .filter(|r| r.code() == "INSUFFICIENT_STOCK")
        .count();
    println!(
        "50 racers for stock 1: 1 created, {short} insufficient stock, {} lock conflicts",
        49 - short
    );
    let mut orders = 0;
    for user in users {
        orders += client.order_count(&user.token).await;
    }
    assert_eq!(orders, 1, "exactly one order exists");
    assert_eq!(client.stock(5).await, 0);
}

/// Ten requests for alice with one key, sent alternately to `clients`.
async fn ten_requests_with_one_key(clients: &[Client], alice: &Session) -> Vec<Reply> {
    let requests = (0..10)
        .map(|i| {
            let request = create_request(&alice.token, &[(1, 1)], "one-key-for-all");
            (clients[i % clients.len()], request)
        })
        .collect();
    all_at_once(requests).await
}

/// Exactly one 201; the others 200 (the same order, replayed) or 409
/// `IDEMPOTENCY_KEY_IN_FLIGHT`; never a 5xx; one order exists and one unit is gone.
async fn assert_one_order(replies: &[Reply], client: Client, alice: &Session) {
    let mut ids = Vec::new();
    for reply in replies {
        match reply.status {
            201 => ids.push(reply.data()["id"].clone()),
            200 => {
                assert_eq!(reply.header("idempotent-replayed").as_deref(), Some("true"));
                ids.push(reply.data()["id"].clone());
            }
            409 => assert_eq!(reply.code(), "IDEMPOTENCY_KEY_IN_FLIGHT", "{reply:?}"),
            _ => panic!("unexpected answer: {reply:?}"),
        }
    }
    let count = |status: u16| replies.iter().filter(|r| r.status == status).count();
    println!(
        "{} requests with one key: {} created, {} replayed, {} in flight",
        replies.len(),
        count(201),
        count(200),
        count(409)
    );
    assert_eq!(count(201), 1, "{replies:?}");
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one order id for all: {ids:?}"
    );
    assert_eq!(client.order_count(&alice.token).await, 1);
    assert_eq!(client.stock(1).await, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_orders_for_the_last_unit_sell_it_exactly_once() {
    let stack = Stack::start().await;
    let users = stack.client.login_all().await;
    let replies = fifty_racers_for_the_last_unit(&[stack.client], &users).await;
    assert_sold_exactly_once(&replies, stack.client, &users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_simultaneous_requests_with_one_key_create_exactly_one_order() {
    let stack = Stack::start().await;
    let alice = stack.client.login("alice@example.com").await;
    let replies = ten_requests_with_one_key(&[stack.client], &alice).await;
    assert_one_order(&replies, stack.client, &alice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racers_alternating_between_two_api_processes_sell_the_last_unit_once() {
    let stack = Stack::start().await;
    let second = stack.spawn_api();
    let clients = [stack.client, second.client()];
    let users = stack.client.login_all().await;
    let replies = fifty_racers_for_the_last_unit(&clients, &users).await;
    assert_sold_exactly_once(&replies, second.client(), &users).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_sent_to_two_api_processes_at_once_creates_one_order() {
    let stack = Stack::start().await;
    let second = stack.spawn_api();
    let clients = [stack.client, second.client()];
    // A token issued by one process is good at the other: they share the database.
    let alice = second.client().login("alice@example.com").await;
    let replies = ten_requests_with_one_key(&clients, &alice).await;
    assert_one_order(&replies, stack.client, &alice).await;
    let health = second.client().get("/api/health", None).await;
    health.expect(200, "");
}

#[test]
fn requests_are_built_as_the_api_expects() {
    let request = create_request("t", &[(5, 1)], "k");
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/orders");
    assert!(
        request
            .headers
            .contains(&("authorization".to_owned(), "Bearer t".to_owned()))
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"items": [{"product_id": 5, "quantity": 1}], "idempotency_key": "k"})
    );
}
