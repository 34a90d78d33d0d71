//! The request middleware every route runs inside: a trace id (echoed from `X-Trace-Id`
//! when the client sent a valid one, else 16 random bytes in hex) on every response,
//! one `http_request` span per request (method, route template, trace id, user,
//! status), the latency histogram, the one log line of every 5xx (its cause, from the
//! response's [`ServerFault`]), a catch for panics (an opaque 500, never a dropped
//! connection), and a last pass that turns any non-JSON error a framework layer
//! produced (an empty 405, a rejection's text) into the API's JSON error body.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::error::{ApiError, ServerFault};
use crate::metrics::HttpMetrics;

/// The trace id header, in and out.
pub(crate) const TRACE_ID_HEADER: &str = "x-trace-id";

/// The route template a request matched, handed from the inner layer to the outer one.
#[derive(Debug, Clone)]
struct MatchedRoute(Arc<str>);

/// Whether a client's trace id may be echoed: 1..=128 of `[A-Za-z0-9._-]`.
pub(crate) fn is_valid_trace_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A fresh trace id: 16 random bytes in hex (a process-wide counter should the OS
/// random source fail, so an id is always there).
fn new_trace_id() -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => crate::auth::hex(&bytes),
        Err(_) => format!("{:032x}", FALLBACK.fetch_add(1, Ordering::Relaxed)),
    }
}

/// The outermost layer (see the module documentation).
pub(crate) async fn observe(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let trace_id = request
        .headers()
        .get(TRACE_ID_HEADER)
        .map(HeaderValue::as_bytes)
        .filter(|id| is_valid_trace_id(id))
        .and_then(|id| std::str::from_utf8(id).ok())
        .map_or_else(new_trace_id, str::to_owned);
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http_request",
        method = %method,
        route = Empty,
        trace_id = %trace_id,
        user = Empty,
        status = Empty,
    );
    let started = Instant::now();
    let outcome = AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let mut response = match outcome {
        Ok(response) => normalize(response),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_owned());
            ApiError::Internal(anyhow::anyhow!("the handler panicked: {why}")).into_response()
        }
    };
    let route = response
        .extensions()
        .get::<MatchedRoute>()
        .map_or_else(|| Arc::from("unmatched"), |r| r.0.clone());
    let status = response.status();
    span.record("route", &*route);
    span.record("status", status.as_u16());
    if let Some(ServerFault(cause)) = response.extensions().get::<ServerFault>() {
        span.in_scope(|| {
            tracing::error!(trace_id = %trace_id, status = status.as_u16(), error = %cause, "request failed");
        });
    }
    let took = started.elapsed();
    metrics.record(&method, &route, status, took);
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            took_ms = took.as_secs_f64() * 1000.0,
            "request served"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    response
}

/// The layer inside routing: records the matched route template on the span and hands
/// it to [`observe`] through the response's extensions.
pub(crate) async fn matched_route(request: Request, next: Next) -> Response {
    let route: Option<Arc<str>> = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| Arc::from(p.as_str()));
    if let Some(route) = &route {
        tracing::Span::current().record("route", &**route);
    }
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(MatchedRoute(route));
    }
    response
}

/// An error response without a JSON body (one a framework layer made, not
/// [`ApiError`]) becomes the API's JSON error for its status; headers such as `Allow`
/// are kept. JSON responses and successes pass unchanged.
fn normalize(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let replacement = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound("Not found."),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(0),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::UNAUTHORIZED => ApiError::Unauthenticated,
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::Unavailable(anyhow::anyhow!("a layer answered 503 without a body"))
        }
        s if s.is_server_error() => {
            ApiError::Internal(anyhow::anyhow!("a layer answered {s} without a JSON body"))
        }
        _ => ApiError::MalformedJson("The request could not be understood.".to_owned()),
    };
    let (parts, _) = response.into_parts();
    let mut fresh = replacement.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if let Some(route) = parts.extensions.get::<MatchedRoute>() {
        fresh.extensions_mut().insert(route.clone());
    }
    *fresh.status_mut() = status;
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_is_echoed_only_when_it_is_short_and_plain() {
        assert!(is_valid_trace_id(b"abc-123_X.y"));
        assert!(is_valid_trace_id(&[b'a'; 128]));
        assert!(!is_valid_trace_id(&[b'a'; 129]));
        assert!(!is_valid_trace_id(b""));
        assert!(!is_valid_trace_id(b"a b"));
        assert!(!is_valid_trace_id(b"<script>"));
    }

    #[test]
    fn a_generated_trace_id_is_32_hex_digits() {
        let id = new_trace_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_trace_id());
    }
}
