//! `POST /api/tokens`, the bearer middleware and the per-user rate limit.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use order_core::Timestamp;
use order_core::ports::{AccountStore, TokenDigest};
use order_http::{ApiSettings, DEMO_ACCOUNTS, DEMO_PASSWORD};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{BrokenAccounts, Options, START, TestApp};

#[tokio::test]
async fn a_demo_user_gets_a_24_hour_bearer_token_that_opens_the_order_routes() {
    let app = TestApp::new().await;
    let resp = app
        .post("/api/tokens")
        .json(json!({"email": "alice@example.com", "password": DEMO_PASSWORD}))
        .send()
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    let body = resp.json();
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("ord_") && token.len() == 68, "{token}");
    assert_eq!(body["token_type"], "Bearer");
    let expires = Timestamp::from_millis(START).saturating_add(Duration::from_secs(86_400));
    assert_eq!(body["expires_at"], expires.to_rfc3339());
    assert_eq!(
        body["user"],
        json!({"id": app.alice().get(), "name": "Alice", "email": "alice@example.com"})
    );

    let orders = app.get("/api/orders").bearer(token).send().await;
    assert_eq!(orders.status, StatusCode::OK, "{}", orders.text);
}

#[tokio::test]
async fn the_store_holds_only_the_sha256_of_a_token() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let now = Timestamp::from_millis(START);
    let digest = TokenDigest::from_bytes(Sha256::digest(token.as_bytes()).into());
    let found = app.accounts.authenticate(&digest, now).await.unwrap();
    assert_eq!(found.map(|a| a.id), Some(app.alice()));
    let raw = TokenDigest::from_bytes(token.as_bytes()[4..36].try_into().unwrap());
    assert_eq!(app.accounts.authenticate(&raw, now).await.unwrap(), None);
}

#[tokio::test]
async fn every_demo_account_can_log_in_with_the_demo_password_in_any_email_case() {
    let app = TestApp::new().await;
    for (name, email) in DEMO_ACCOUNTS {
        let resp = app
            .post("/api/tokens")
            .json(json!({"email": email.to_uppercase(), "password": DEMO_PASSWORD}))
            .send()
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
        assert_eq!(resp.json()["user"]["name"], name);
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401() {
    let app = TestApp::new().await;
    let wrong = app
        .post("/api/tokens")
        .json(json!({"email": "alice@example.com", "password": "hunter2"}))
        .send()
        .await;
    let unknown = app
        .post("/api/tokens")
        .json(json!({"email": "mallory@example.com", "password": DEMO_PASSWORD}))
        .send()
        .await;
    let a = wrong.assert_error(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    let b = unknown.assert_error(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    assert_eq!(a, b);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn a_login_lists_every_missing_mistyped_or_unknown_field() {
    let app = TestApp::new().await;
    let resp = app
        .post("/api/tokens")
        .json(json!({"email": 5, "remember_me": true}))
        .send()
        .await;
    assert_eq!(resp.error_fields(), ["email", "password", "remember_me"]);
    let body = resp.json();
    assert_eq!(
        body["errors"]["email"][0],
        "The email field must be a string."
    );
    assert_eq!(
        body["errors"]["password"][0],
        "The password field is required."
    );
    assert_eq!(body["errors"]["remember_me"][0], "unknown field");

    let empty = app
        .post("/api/tokens")
        .json(json!({"email": "", "password": "x".repeat(1025)}))
        .send()
        .await;
    assert_eq!(empty.error_fields(), ["email", "password"]);
}

#[tokio::test]
async fn a_login_body_must_be_a_json_object_sent_as_json() {
    let app = TestApp::new().await;
    let text = app
        .post("/api/tokens")
        .header("content-type", "text/plain")
        .body(r#"{"email":"alice@example.com","password":"password"}"#)
        .send()
        .await;
    text.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    let broken = app
        .post("/api/tokens")
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await;
    broken.assert_error(StatusCode::BAD_REQUEST, "MALFORMED_JSON");
}

/// Every authenticated route, as (method, path).
fn order_routes() -> [(&'static str, &'static str); 4] {
    [
        ("POST", "/api/orders"),
        ("GET", "/api/orders"),
        ("GET", "/api/orders/1"),
        ("POST", "/api/orders/1/cancel"),
    ]
}

#[tokio::test]
async fn every_order_route_refuses_a_missing_malformed_or_unknown_token_with_401() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let bad_headers = [
        None,
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("Basic {token}")),
        Some(format!("Bearer {token} extra")),
        Some(format!("Bearer {token}x")),
        Some(
            "Bearer ord_0000000000000000000000000000000000000000000000000000000000000000"
                .to_owned(),
        ),
    ];
    for (method, path) in order_routes() {
        for header in &bad_headers {
            let mut req = app.request(method.parse().unwrap(), path);
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            let resp = req.json(json!({})).send().await;
            resp.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
            assert_eq!(
                resp.header("www-authenticate"),
                Some("Bearer"),
                "{method} {path} {header:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_token_stops_working_once_its_ttl_has_passed() {
    let app = TestApp::with_settings(ApiSettings {
        token_ttl: Duration::from_secs(3600),
        ..ApiSettings::default()
    })
    .await;
    let token = app.alice_token().await;
    app.clock.advance(Duration::from_millis(3_599_999));
    let before = app.get("/api/orders").bearer(&token).send().await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    app.clock.advance(Duration::from_millis(1));
    let after = app.get("/api/orders").bearer(&token).send().await;
    after.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    assert_eq!(after.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn the_third_request_of_a_user_limited_to_two_a_minute_is_refused_with_retry_after() {
    let app = TestApp::with_settings(ApiSettings {
        rate_limit_per_minute: 2,
        ..ApiSettings::default()
    })
    .await;
    let alice = app.alice_token().await;
    let bob = app.bob_token().await;
    for _ in 0..2 {
        let ok = app.get("/api/orders").bearer(&alice).send().await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    }
    // The limit counts every authenticated route, not one path.
    let third = app.get("/api/orders/1").bearer(&alice).send().await;
    third.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED");
    assert_eq!(third.header("retry-after"), Some("30"));
    let fourth = app.post("/api/orders/1/cancel").bearer(&alice).send().await;
    fourth.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED");

    // Bob has a budget of his own, and unauthenticated routes are not limited.
    let other = app.get("/api/orders").bearer(&bob).send().await;
    assert_eq!(other.status, StatusCode::OK);
    let products = app.get("/api/products").send().await;
    assert_eq!(products.status, StatusCode::OK);

    app.clock.advance(Duration::from_secs(30));
    let later = app.get("/api/orders").bearer(&alice).send().await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.text);
}

#[tokio::test]
async fn login_attempts_are_limited_per_email_so_a_password_cannot_be_guessed_at_full_speed() {
    let app = TestApp::with_settings(ApiSettings {
        rate_limit_per_minute: 2,
        ..ApiSettings::default()
    })
    .await;
    let login = |email: &'static str, password: &'static str| {
        app.post("/api/tokens")
            .json(serde_json::json!({"email": email, "password": password}))
            .send()
    };
    for _ in 0..2 {
        let wrong = login("alice@example.com", "guess").await;
        wrong.assert_error(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    }
    // The budget is the e-mail's, whatever its case, and even the right password waits.
    let third = login("ALICE@example.com", "password").await;
    third.assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED");
    assert_eq!(third.header("retry-after"), Some("30"));
    // Another account is not affected.
    let bob = login("bob@example.com", "password").await;
    assert_eq!(bob.status, StatusCode::CREATED, "{}", bob.text);
    app.clock.advance(Duration::from_secs(30));
    let later = login("alice@example.com", "password").await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.text);
}

#[tokio::test]
async fn a_rate_limit_of_zero_disables_it() {
    let app = TestApp::with_settings(ApiSettings {
        rate_limit_per_minute: 0,
        ..ApiSettings::default()
    })
    .await;
    let alice = app.alice_token().await;
    for _ in 0..50 {
        let ok = app.get("/api/orders").bearer(&alice).send().await;
        assert_eq!(ok.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn an_unavailable_account_store_is_an_opaque_503_and_a_broken_one_an_opaque_500() {
    for (unavailable, status, code, message) in [
        (
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Service temporarily unavailable.",
        ),
        (
            false,
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Internal server error.",
        ),
    ] {
        let app = TestApp::with(Options {
            accounts: Some(if unavailable {
                |_| Arc::new(BrokenAccounts { unavailable: true })
            } else {
                |_| Arc::new(BrokenAccounts { unavailable: false })
            }),
            ..Options::default()
        })
        .await;
        let login = app
            .post("/api/tokens")
            .json(json!({"email": "alice@example.com", "password": DEMO_PASSWORD}))
            .send()
            .await;
        let body = login.assert_error(status, code);
        assert_eq!(body, json!({"message": message, "error_code": code}));
        let orders = app.get("/api/orders").bearer("ord_x").send().await;
        let body = orders.assert_error(status, code);
        assert!(!orders.text.contains("refused") && !orders.text.contains("corrupted"));
        assert_eq!(body["message"], message);
    }
}
