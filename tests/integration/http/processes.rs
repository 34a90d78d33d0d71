//! Several processes on one deployment: API processes that take no jobs, `worker`
//! processes that do all the processing, and a server that keeps serving — and says so
//! on `/api/health` — while its Redis is down.

use std::time::Duration;

use super::client::{Client, Request};
use super::harness::{PrivateRedis, Stack, free_port};

/// The sum of `orders_outcomes_total{outcome="paid"}` in a Prometheus text page.
fn paid_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("orders_outcomes_total{") && l.contains("outcome=\"paid\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn metrics(client: &Client) -> String {
    let reply = client.send(Request::get("/metrics")).await;
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_processes_and_two_worker_processes_share_one_database_and_prefix() {
    // The first process only serves the API: every order must be paid by the workers.
    let stack = Stack::with_role("api", &[]).await;
    let second_api = stack.spawn_api();
    let mut workers = [stack.spawn_worker(), stack.spawn_worker()];
    let apis = [stack.client, second_api.client()];
    let alice = apis[0].login("alice@example.com").await;

    let mut ids = Vec::new();
    for i in 0..20u64 {
        let api = &apis[(i % 2) as usize];
        let reply = api
            .create(&alice.token, &[(2, 1)], &format!("multi-{i}"))
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        ids.push(reply.data()["id"].as_u64().unwrap());
    }
    for (i, id) in ids.iter().enumerate() {
        // Read through the other API process than the one that created it.
        let api = &apis[(i + 1) % 2];
        api.wait_for_status(&alice.token, *id, &["PAID"], Duration::from_secs(30))
            .await;
    }
    assert_eq!(
        apis[0].stock(2).await,
        200 - 20,
        "each order took its unit once"
    );
    // A worker counts an order paid just after its commit, which the API may already
    // show: wait for the counters to catch up (they must reach 20 and never pass it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let paid = loop {
        let paid: u64 = paid_in(&metrics(&workers[0].client()).await)
            + paid_in(&metrics(&workers[1].client()).await);
        if paid >= 20 || std::time::Instant::now() > deadline {
            break paid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(paid, 20, "the worker processes paid every order, once");
    assert_eq!(
        paid_in(&metrics(&apis[0]).await) + paid_in(&metrics(&apis[1]).await),
        0,
        "--role api takes no jobs"
    );
    for worker in &mut workers {
        let status = worker.terminate().expect("the worker was running");
        assert_eq!(status.code(), Some(0), "SIGTERM: graceful exit 0");
    }
}

async fn wait_for_health(client: &Client, status: u16) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = client.send(Request::get("/api/health")).await;
        if reply.status == status {
            return reply.json();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health stayed {} ({:?}), expected {status}",
            reply.status,
            reply.json()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_server_keeps_taking_orders_and_health_names_redis() {
    let port = free_port();
    let redis = PrivateRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    // Nothing else uses this private server: the stack's Redis cleanup finds no keys.
    let stack = Stack::with_role("api", &[("REDIS_URL", url.as_str())]).await;
    let up = wait_for_health(&stack.client, 200).await;
    assert_eq!(up["services"]["redis"], "connected");

    drop(redis);
    let down = wait_for_health(&stack.client, 503).await;
    assert_eq!(down["status"], "degraded");
    assert_eq!(down["services"]["redis"], "unavailable", "{down}");
    assert_eq!(down["services"]["database"], "connected", "{down}");

    // The lock fails open to the database guard; the order is committed (its job is
    // the reconciler's to re-enqueue once Redis is back).
    let alice = stack.client.login("alice@example.com").await;
    let reply = stack
        .client
        .create(&alice.token, &[(3, 1)], "redis-down")
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.data()["status"], "PENDING");
    assert_eq!(stack.client.stock(3).await, 99);

    let _back = PrivateRedis::start(port);
    let again = wait_for_health(&stack.client, 200).await;
    assert_eq!(again["services"]["redis"], "connected");
}
