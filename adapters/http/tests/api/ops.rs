//! `GET /api/health` and `GET /metrics`, on the full router and on `ops_router`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use order_http::HealthProbe;
use serde_json::json;
use tower::ServiceExt as _;

use crate::helpers::{Options, START, TestApp};

struct Probe {
    name: &'static str,
    up: bool,
    delay: Duration,
}

#[async_trait]
impl HealthProbe for Probe {
    fn name(&self) -> &str {
        self.name
    }
    async fn check(&self) -> Result<(), String> {
        tokio::time::sleep(self.delay).await;
        if self.up {
            Ok(())
        } else {
            Err("connection refused".to_owned())
        }
    }
}

fn probe(name: &'static str, up: bool, delay: Duration) -> Arc<dyn HealthProbe> {
    Arc::new(Probe { name, up, delay })
}

#[tokio::test]
async fn health_is_ok_when_every_probe_answers() {
    let app = TestApp::with(Options {
        probes: vec![
            probe("database", true, Duration::ZERO),
            probe("redis", true, Duration::ZERO),
        ],
        ..Options::default()
    })
    .await;
    let resp = app.get("/api/health").send().await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.json(),
        json!({
            "status": "ok",
            "services": {"database": "connected", "redis": "connected"},
            "timestamp": order_core::Timestamp::from_millis(START).to_rfc3339(),
        })
    );
}

#[tokio::test]
async fn health_is_a_503_degraded_naming_the_dependency_that_is_down() {
    let app = TestApp::with(Options {
        probes: vec![
            probe("database", true, Duration::ZERO),
            probe("redis", false, Duration::ZERO),
        ],
        ..Options::default()
    })
    .await;
    let resp = app.get("/api/health").send().await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = resp.json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(
        body["services"],
        json!({"database": "connected", "redis": "unavailable"})
    );
    assert!(
        !resp.text.contains("refused"),
        "the reason stays in the log"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_hangs_counts_as_down_after_the_timeout_and_the_others_run_alongside() {
    let app = TestApp::with(Options {
        probes: vec![
            probe("database", true, Duration::from_millis(1500)),
            probe("redis", true, Duration::from_secs(3600)),
        ],
        ..Options::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let resp = app.get("/api/health").send().await;
    let took = started.elapsed();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.json()["services"],
        json!({"database": "connected", "redis": "unavailable"})
    );
    assert!(
        took >= order_http::PROBE_TIMEOUT
            && took < order_http::PROBE_TIMEOUT + Duration::from_millis(500),
        "concurrent, bounded by the timeout: {took:?}"
    );
}

#[tokio::test]
async fn metrics_expose_order_outcomes_queue_depth_and_the_request_histogram() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    assert_eq!(
        app.place(&token, &[(app.mouse, 1)], "a").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.place(&token, &[(app.mouse, 1)], "a").await.status,
        StatusCode::OK
    );
    let refused = app.place(&token, &[(app.headphones, 5)], "b").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    app.get("/api/nope").send().await;

    let resp = app.get("/metrics").send().await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.text;
    for line in [
        "# TYPE orders_outcomes_total counter",
        "orders_outcomes_total{outcome=\"created\"} 1",
        "orders_outcomes_total{outcome=\"replayed\"} 1",
        "orders_outcomes_total{outcome=\"insufficient_stock\"} 1",
        "orders_outcomes_total{outcome=\"lock_conflict\"} 0",
        "orders_outcomes_total{outcome=\"paid\"} 0",
        "orders_outcomes_total{outcome=\"failed\"} 0",
        "orders_outcomes_total{outcome=\"cancelled\"} 0",
        "# TYPE orders_lock_waits_total counter",
        "orders_lock_fail_open_total 0",
        "orders_payment_retries_total 0",
        "orders_reconciler_requeued_total 0",
        "# TYPE orders_queue_depth gauge",
        "orders_queue_depth{state=\"waiting\"} 1",
        "orders_queue_depth{state=\"in_flight\"} 0",
        "orders_queue_depth{state=\"dead\"} 0",
        "# TYPE orders_http_request_duration_seconds histogram",
        "orders_http_request_duration_seconds_count{method=\"POST\",route=\"/api/orders\",status=\"2xx\"} 2",
        "orders_http_request_duration_seconds_count{method=\"POST\",route=\"/api/orders\",status=\"4xx\"} 1",
        "orders_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/orders\",status=\"2xx\",le=\"+Inf\"} 2",
        "orders_http_request_duration_seconds_bucket{method=\"GET\",route=\"unmatched\",status=\"4xx\",le=\"0.005\"}",
        "# TYPE orders_http_requests_total counter",
        "orders_http_requests_total{method=\"POST\",route=\"/api/orders\",status=\"201\"} 1",
        "orders_http_requests_total{method=\"POST\",route=\"/api/orders\",status=\"200\"} 1",
        "orders_http_requests_total{method=\"POST\",route=\"/api/orders\",status=\"409\"} 1",
        "orders_http_requests_total{method=\"POST\",route=\"/api/tokens\",status=\"201\"} 1",
        "orders_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Every sample line belongs to a family announced by HELP and TYPE.
    for sample in text.lines().filter(|l| !l.starts_with('#')) {
        let name = sample.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
            .unwrap_or(name);
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
}

#[tokio::test]
async fn the_ops_router_serves_metrics_and_health_only() {
    let app = TestApp::new().await;
    let ops = order_http::ops_router(
        app.service.clone(),
        vec![probe("database", true, Duration::ZERO)],
    );
    let get = |path: &str| {
        axum::http::Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let health = ops.clone().oneshot(get("/api/health")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(health.headers().contains_key("x-trace-id"));
    let metrics = ops.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let body = axum::body::to_bytes(metrics.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("orders_outcomes_total{outcome=\"created\"} 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "orders_http_requests_total{method=\"GET\",route=\"/api/health\",status=\"200\"} 1"
        ),
        "its own request metrics: {text}"
    );
    let products = ops.oneshot(get("/api/products")).await.unwrap();
    assert_eq!(products.status(), StatusCode::NOT_FOUND);
    assert!(products.headers().contains_key("x-trace-id"));
}
