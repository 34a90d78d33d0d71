//! `GET /metrics`: the Prometheus text exposition format 0.0.4, rendered by hand from
//! the service's counters ([`OrderService::stats`]), the queue's depth and this
//! router's own request histogram ([`HttpMetrics`]). No global recorder: several
//! routers (and tests) live in one process, each with its own numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use order_core::{OrderService, StatsSnapshot};

use crate::OpsState;

/// The histogram's upper bounds, in seconds (Prometheus' defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long the queue may take to report its depth before the gauge is left out.
const QUEUE_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// One latency histogram.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket of [`BUCKETS`]; past the last: only in `count`.
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Labels of a histogram: method, route template, status class (`2xx`).
type HistogramKey = (&'static str, String, &'static str);
/// Labels of a request counter: method, route template, status code.
type CounterKey = (&'static str, String, u16);

#[derive(Debug, Default, Clone)]
struct Series {
    durations: BTreeMap<HistogramKey, Histogram>,
    requests: BTreeMap<CounterKey, u64>,
}

/// The request metrics of one router: a latency histogram per (method, route, status
/// class) and a counter per (method, route, status).
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    series: Mutex<Series>,
}

/// A method as a label: the standard ones by name, anything else as `OTHER` (so a
/// client cannot grow the label set).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("OTHER", |(_, name)| name)
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl HttpMetrics {
    /// Records one answered request. `route` is the matched route template
    /// (`/api/orders/{id}`), or `unmatched`.
    pub(crate) fn record(&self, method: &Method, route: &str, status: StatusCode, took: Duration) {
        let method = method_label(method);
        let secs = took.as_secs_f64();
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let h = series
            .durations
            .entry((method, route.to_owned(), status_class(status)))
            .or_default();
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            h.buckets[i] += 1;
        }
        h.sum += secs;
        h.count += 1;
        *series
            .requests
            .entry((method, route.to_owned(), status.as_u16()))
            .or_default() += 1;
    }

    /// A copy of every series, taken under the lock.
    fn snapshot(&self) -> Series {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Appends `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The service's counters: order outcomes under one labelled counter, the rest one
/// counter each.
fn render_service(out: &mut String, stats: StatsSnapshot) {
    // Destructured field by field: a new counter in the core fails to compile here
    // until it is exported.
    let StatsSnapshot {
        created,
        replayed,
        insufficient_stock,
        lock_conflicts,
        lock_retries,
        lock_fail_open,
        enqueue_failures,
        publish_failures,
        payment_retries,
        payments_unresolved,
        paid,
        failed,
        cancelled,
        lease_takeovers,
        fenced_writes,
        leases_released,
        deferred,
        reconciler_requeued,
    } = stats;
    header(
        out,
        "orders_outcomes_total",
        "counter",
        "Orders by outcome: create requests (created, replayed, refused) and completions.",
    );
    for (outcome, n) in [
        ("created", created),
        ("replayed", replayed),
        ("insufficient_stock", insufficient_stock),
        ("lock_conflict", lock_conflicts),
        ("paid", paid),
        ("failed", failed),
        ("cancelled", cancelled),
    ] {
        let _ = writeln!(out, "orders_outcomes_total{{outcome=\"{outcome}\"}} {n}");
    }
    for (name, help, n) in [
        (
            "orders_lock_waits_total",
            "Lock attempts that found the lock busy and backed off.",
            lock_retries,
        ),
        (
            "orders_lock_fail_open_total",
            "Times the lock service was down and the database guard alone decided.",
            lock_fail_open,
        ),
        (
            "orders_enqueue_failures_total",
            "Committed orders whose job could not be enqueued (the reconciler recovers them).",
            enqueue_failures,
        ),
        (
            "orders_publish_failures_total",
            "Events that could not be published.",
            publish_failures,
        ),
        (
            "orders_payment_retries_total",
            "Payment calls retried after a transient error or timeout.",
            payment_retries,
        ),
        (
            "orders_payments_unresolved_total",
            "Orders left Processing because the provider never answered.",
            payments_unresolved,
        ),
        (
            "orders_lease_takeovers_total",
            "Expired processing leases taken over.",
            lease_takeovers,
        ),
        (
            "orders_fenced_writes_total",
            "Completions refused because the lease had been taken over.",
            fenced_writes,
        ),
        (
            "orders_leases_released_total",
            "Leases given back by a worker that gave up on an order.",
            leases_released,
        ),
        (
            "orders_deliveries_deferred_total",
            "Deliveries deferred because the order was leased.",
            deferred,
        ),
        (
            "orders_reconciler_requeued_total",
            "Stranded orders the reconciler handed to the queue again.",
            reconciler_requeued,
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {n}");
    }
}

fn render_http(out: &mut String, http: &HttpMetrics) {
    let Series {
        durations,
        requests,
    } = http.snapshot();
    header(
        out,
        "orders_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by method, route template and status class.",
    );
    for ((method, route, class), h) in durations {
        let labels = format!(
            "method=\"{method}\",route=\"{}\",status=\"{class}\"",
            escape(&route)
        );
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "orders_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "orders_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "orders_http_request_duration_seconds_sum{{{labels}}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "orders_http_request_duration_seconds_count{{{labels}}} {}",
            h.count
        );
    }
    header(
        out,
        "orders_http_requests_total",
        "counter",
        "HTTP requests answered, by method, route template and status code.",
    );
    for ((method, route, status), n) in requests {
        let _ = writeln!(
            out,
            "orders_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
            escape(&route)
        );
    }
}

/// The whole exposition: service counters, queue depth (left out when the queue does
/// not answer) and the HTTP series.
pub(crate) async fn render(service: &OrderService, http: &HttpMetrics) -> String {
    let mut out = String::with_capacity(4096);
    render_service(&mut out, service.stats());
    let depth = tokio::time::timeout(QUEUE_STATS_TIMEOUT, service.ports().queue.stats()).await;
    match depth {
        Ok(Ok(q)) => {
            header(
                &mut out,
                "orders_queue_depth",
                "gauge",
                "Jobs in the queue by state.",
            );
            for (state, n) in [
                ("waiting", q.waiting),
                ("in_flight", q.in_flight),
                ("dead", q.dead),
            ] {
                let _ = writeln!(out, "orders_queue_depth{{state=\"{state}\"}} {n}");
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %order_core::ErrorChain(&e), "queue depth unavailable for /metrics")
        }
        Err(_) => tracing::warn!("queue depth timed out for /metrics"),
    }
    render_http(&mut out, http);
    out
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
    )
)]
pub(crate) async fn metrics(State(state): State<OpsState>) -> Response {
    let text = render(&state.service, &state.metrics).await;
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lands_in_its_bucket_and_every_bucket_above_it() {
        let m = HttpMetrics::default();
        m.record(
            &Method::GET,
            "/api/products",
            StatusCode::OK,
            Duration::from_millis(30),
        );
        m.record(
            &Method::GET,
            "/api/products",
            StatusCode::OK,
            Duration::from_secs(20),
        );
        let mut out = String::new();
        render_http(&mut out, &m);
        let labels = r#"method="GET",route="/api/products",status="2xx""#;
        assert!(
            out.contains(&format!(
                "orders_http_request_duration_seconds_bucket{{{labels},le=\"0.025\"}} 0\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "orders_http_request_duration_seconds_bucket{{{labels},le=\"0.05\"}} 1\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "orders_http_request_duration_seconds_bucket{{{labels},le=\"10\"}} 1\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "orders_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "orders_http_request_duration_seconds_count{{{labels}}} 2\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(
                r#"orders_http_requests_total{method="GET",route="/api/products",status="200"} 2"#
            ),
            "{out}"
        );
    }

    #[test]
    fn unusual_methods_share_one_label_and_quotes_are_escaped() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
