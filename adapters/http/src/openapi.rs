//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes
//! and the DTOs' `ToSchema` derives, then completed by [`Common`] with what every
//! operation shares: the bearer security scheme, the `X-Trace-Id` response header,
//! `WWW-Authenticate` on 401s and `Retry-After` on 429s. Served at
//! `GET /api/openapi.json`; it is fuzzed against the server (schemathesis), so it says
//! only what the server holds to: every status an operation can answer is listed with
//! its body, and no request is called valid that the server refuses. Two request headers
//! are therefore described in prose, not listed as parameters: `X-Trace-Id` (any value
//! is accepted; an invalid one is replaced) and `Idempotency-Key` (an alternative to a
//! required body field, which OpenAPI cannot express).

use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, RefOr};
use utoipa::{Modify, OpenApi};

use crate::json::Json;

/// The document's root: every route and every schema.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Order API",
        description = "Place, list, read and cancel orders; products; health and metrics. \
            Every error body is `{message, error_code, errors?}`. Every response carries \
            `X-Trace-Id`: the request's own `X-Trace-Id` header when it sent one of 1..=128 \
            characters of [A-Za-z0-9._-] (any other value is replaced, never refused), else \
            a fresh id.",
    ),
    paths(
        crate::auth::issue_token,
        crate::health::health,
        crate::products::list_products,
        crate::products::get_product,
        crate::orders::create_order,
        crate::orders::list_orders,
        crate::orders::get_order,
        crate::orders::cancel_order,
        crate::broadcasting::list_events,
        crate::metrics::metrics,
        openapi_json,
    ),
    modifiers(&Common),
    tags(
        (name = "auth", description = "Bearer tokens"),
        (name = "orders", description = "The caller's orders (bearer token required)"),
        (name = "products", description = "The catalogue"),
        (name = "events", description = "The caller's durable event log (bearer token required)"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

/// What every operation shares (see the module documentation).
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("opaque (ord_ + 64 hex digits)")
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                complete(operation);
            }
        }
    }
}

fn string_schema(pattern: Option<&str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
}

/// Adds the shared response headers to `operation`.
fn complete(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let header = |description: &str, pattern: Option<&str>| {
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(string_schema(pattern)))
                    .description(Some(description))
                    .build(),
            )
        };
        response.headers.insert(
            "X-Trace-Id".to_owned(),
            header(
                "The request's trace id (echoed or generated); on every response",
                Some("^[A-Za-z0-9._-]{1,128}$"),
            ),
        );
        match status.as_str() {
            "401" => {
                response
                    .headers
                    .insert("WWW-Authenticate".to_owned(), header("`Bearer`", None));
            }
            "429" => {
                response.headers.insert(
                    "Retry-After".to_owned(),
                    header(
                        "Seconds until the next request is allowed (at least 1)",
                        Some("^[1-9][0-9]*$"),
                    ),
                );
            }
            _ => {}
        }
    }
}

/// The OpenAPI 3.1 document of every route this crate serves (what
/// `GET /api/openapi.json` answers).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = serde_json::Value))
)]
pub(crate) async fn openapi_json() -> Response {
    Json(openapi()).into_response()
}
