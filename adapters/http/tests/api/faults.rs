//! Server faults: an opaque body for the client, and the cause logged exactly once (an
//! `ERROR` event with the trace id); a panic below the router is a 500, not a dropped
//! connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::StatusCode;
use order_core::Timestamp;
use order_core::UserId;
use order_core::ports::{
    Account, AccountError, AccountStore, Credentials, NewAccount, TokenDigest,
};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::helpers::{BrokenAccounts, Options, TestApp};

/// A subscriber that keeps every `ERROR` event as `field=value` text.
#[derive(Default)]
struct Errors {
    events: Mutex<Vec<String>>,
    next_span: AtomicU64,
}

struct Text<'a>(&'a mut String);

impl Visit for Text<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Errors {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::ERROR {
            let mut text = String::new();
            event.record(&mut Text(&mut text));
            self.events.lock().unwrap().push(text);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn a_5xx_is_opaque_to_the_client_and_its_cause_is_logged_once_with_the_trace_id() {
    let app = TestApp::with(Options {
        accounts: Some(|_| Arc::new(BrokenAccounts { unavailable: true })),
        ..Options::default()
    })
    .await;
    let errors = Arc::new(Errors::default());
    let _guard = tracing::subscriber::set_default(errors.clone());
    let resp = app
        .get("/api/orders")
        .bearer("ord_x")
        .header("x-trace-id", "trace-503")
        .send()
        .await;
    let body = resp.assert_error(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE");
    assert_eq!(
        body,
        json!({"message": "Service temporarily unavailable.", "error_code": "SERVICE_UNAVAILABLE"})
    );
    let logged = errors.events.lock().unwrap().clone();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("trace_id=trace-503"), "{logged:?}");
    assert!(
        logged[0].contains("account store unavailable: connection refused"),
        "the whole chain: {logged:?}"
    );
}

#[tokio::test]
async fn a_refusal_below_500_logs_no_error() {
    let app = TestApp::new().await;
    let errors = Arc::new(Errors::default());
    let _guard = tracing::subscriber::set_default(errors.clone());
    let resp = app.get("/api/orders").send().await;
    resp.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let missing = app.get("/api/products/999").send().await;
    missing.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert!(errors.events.lock().unwrap().is_empty());
}

/// An account store that panics when asked to authenticate.
struct Panicking;

#[async_trait]
impl AccountStore for Panicking {
    async fn create_account(&self, _: NewAccount) -> Result<Account, AccountError> {
        unreachable!("not called")
    }
    async fn credentials(&self, _: &str) -> Result<Option<Credentials>, AccountError> {
        unreachable!("not called")
    }
    async fn issue_token(
        &self,
        _: UserId,
        _: TokenDigest,
        _: Timestamp,
    ) -> Result<(), AccountError> {
        unreachable!("not called")
    }
    async fn authenticate(
        &self,
        _: &TokenDigest,
        _: Timestamp,
    ) -> Result<Option<Account>, AccountError> {
        panic!("a bug in the store")
    }
    async fn count_accounts(&self) -> Result<u64, AccountError> {
        unreachable!("not called")
    }
}

#[tokio::test]
async fn a_panic_below_the_router_is_an_opaque_500_with_a_trace_id() {
    let app = TestApp::with(Options {
        accounts: Some(|_| Arc::new(Panicking)),
        ..Options::default()
    })
    .await;
    let errors = Arc::new(Errors::default());
    let _guard = tracing::subscriber::set_default(errors.clone());
    let resp = app.get("/api/orders").bearer("ord_x").send().await;
    let body = resp.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR");
    assert_eq!(
        body,
        json!({"message": "Internal server error.", "error_code": "INTERNAL_ERROR"})
    );
    let logged = errors.events.lock().unwrap().clone();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("a bug in the store"), "{logged:?}");
}
