//! What every route shares: the JSON body pipeline (415, 413, 400), JSON 404 and 405,
//! `X-Trace-Id`, and the OpenAPI document.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use order_http::ApiSettings;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_create_body_that_is_not_application_json_is_415() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let body = format!(
        r#"{{"items":[{{"product_id":{},"quantity":1}}],"idempotency_key":"k"}}"#,
        app.mouse
    );
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonp"),
    ] {
        let mut req = app.post("/api/orders").bearer(&token);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.body(body.clone()).send().await;
        resp.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    }
    let with_charset = app
        .post("/api/orders")
        .bearer(&token)
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await;
    assert_eq!(
        with_charset.status,
        StatusCode::CREATED,
        "{}",
        with_charset.text
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_whether_or_not_its_length_is_declared() {
    let app = TestApp::with_settings(ApiSettings {
        body_limit: 256,
        ..ApiSettings::default()
    })
    .await;
    let token = app.alice_token().await;
    let padding = "x".repeat(300);
    let big = format!(r#"{{"items":[],"idempotency_key":"{padding}"}}"#);

    let declared = app
        .post("/api/orders")
        .bearer(&token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await;
    declared.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");

    // Streamed in chunks with no Content-Length: the limit is on the bytes themselves.
    let chunks: Vec<Result<Bytes, Infallible>> = big
        .as_bytes()
        .chunks(64)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let streamed = app
        .post("/api/orders")
        .bearer(&token)
        .header("content-type", "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .send()
        .await;
    streamed.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");

    // A lying Content-Length does not get more through.
    let lying = app
        .post("/api/orders")
        .bearer(&token)
        .header("content-type", "application/json")
        .header("content-length", "10")
        .body(big)
        .send()
        .await;
    lying.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    assert_eq!(app.stock(app.mouse), 200);

    let login = app
        .post("/api/tokens")
        .header("content-type", "application/json")
        .body(format!(r#"{{"email":"{padding}","password":"p"}}"#))
        .send()
        .await;
    login.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn empty_malformed_non_object_and_too_deep_bodies_are_400_malformed_json() {
    let app = TestApp::new().await;
    let token = app.alice_token().await;
    let deep = format!("{{\"items\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    for body in [
        "",
        "   ",
        "{",
        "{\"items\": [}",
        "[]",
        "42",
        "\"text\"",
        "null",
        deep.as_str(),
    ] {
        let resp = app
            .post("/api/orders")
            .bearer(&token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await;
        resp.assert_error(StatusCode::BAD_REQUEST, "MALFORMED_JSON");
    }
    assert!(app.adapters.repository.orders().is_empty());
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404_and_a_wrong_method_a_json_405_with_allow() {
    let app = TestApp::new().await;
    for path in [
        "/",
        "/api",
        "/api/nope",
        "/api/orders/1/refund",
        "/api/products/",
    ] {
        let resp = app.get(path).send().await;
        resp.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let resp = app
        .request("DELETE".parse().unwrap(), "/api/products")
        .send()
        .await;
    resp.assert_error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert_eq!(resp.header("allow"), Some("GET,HEAD"));
    // A wrong method on an authenticated path is 405 without a token, too.
    let resp = app
        .request("DELETE".parse().unwrap(), "/api/orders/1")
        .send()
        .await;
    resp.assert_error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    let resp = app.get("/api/tokens").send().await;
    resp.assert_error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert_eq!(resp.header("allow"), Some("POST"));
}

#[tokio::test]
async fn a_valid_trace_id_is_echoed_and_anything_else_is_replaced_by_a_fresh_one() {
    let app = TestApp::new().await;
    let resp = app
        .get("/api/products")
        .header("x-trace-id", "abc-123.X_y")
        .send()
        .await;
    assert_eq!(resp.header("x-trace-id"), Some("abc-123.X_y"));
    // Also on errors.
    let resp = app
        .get("/api/nope")
        .header("x-trace-id", "trace-404")
        .send()
        .await;
    assert_eq!(resp.header("x-trace-id"), Some("trace-404"));
    let resp = app
        .get("/api/orders")
        .header("x-trace-id", "trace-401")
        .send()
        .await;
    assert_eq!(resp.header("x-trace-id"), Some("trace-401"));

    for bad in ["has space", "<script>", &"a".repeat(129)] {
        let resp = app
            .get("/api/products")
            .header("x-trace-id", bad)
            .send()
            .await;
        let id = resp.header("x-trace-id").unwrap();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32, "{id}");
    }
    let a = app.get("/api/products").send().await;
    let b = app.get("/api/products").send().await;
    assert_ne!(a.header("x-trace-id"), b.header("x-trace-id"));
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_route_status_bound_and_the_bearer_scheme() {
    let app = TestApp::new().await;
    let resp = app.get("/api/openapi.json").send().await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let doc = resp.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/tokens", "post"),
        ("/api/health", "get"),
        ("/api/products", "get"),
        ("/api/products/{id}", "get"),
        ("/api/orders", "post"),
        ("/api/orders", "get"),
        ("/api/orders/{id}", "get"),
        ("/api/orders/{id}/cancel", "post"),
        ("/metrics", "get"),
        ("/api/openapi.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "opaque (ord_ + 64 hex digits)"})
    );
    let create = &paths["/api/orders"]["post"];
    assert_eq!(create["security"], json!([{"bearer": []}]));
    for status in [
        "201", "200", "400", "401", "403", "409", "413", "415", "422", "429", "503",
    ] {
        let response = &create["responses"][status];
        assert!(
            response.is_object(),
            "POST /api/orders does not document {status}"
        );
        assert!(response["headers"]["X-Trace-Id"].is_object(), "{status}");
    }
    assert!(create["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
    assert!(create["responses"]["429"]["headers"]["Retry-After"].is_object());
    let schemas = &doc["components"]["schemas"];
    let body = &schemas["CreateOrder"];
    assert_eq!(body["additionalProperties"], false);
    assert_eq!(body["properties"]["items"]["minItems"], 1);
    assert_eq!(body["properties"]["items"]["maxItems"], 50);
    assert_eq!(body["properties"]["idempotency_key"]["maxLength"], 255);
    let item = &schemas["CreateOrderItem"];
    assert_eq!(item["additionalProperties"], false);
    assert_eq!(item["properties"]["quantity"]["minimum"], 1);
    assert_eq!(item["properties"]["quantity"]["maximum"], 10000);
    let params = paths["/api/orders"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(param("page")["schema"]["minimum"], 1);
    assert_eq!(param("per_page")["schema"]["maximum"], 50);
    assert_eq!(
        schemas["OrderStatus"]["enum"],
        json!(["PENDING", "PROCESSING", "PAID", "FAILED", "CANCELLED"])
    );
    assert_eq!(body["required"], json!(["items", "idempotency_key"]));
    assert!(
        create["description"]
            .as_str()
            .is_some_and(|d| d.contains("Idempotency-Key")),
        "the header alternative is described: {create}"
    );
    assert!(
        doc["info"]["description"]
            .as_str()
            .unwrap()
            .contains("X-Trace-Id")
    );
    assert_eq!(doc, serde_json::to_value(order_http::openapi()).unwrap());
}
