//! The order routes, all behind the bearer middleware and the per-user rate limit:
//! create (`POST /api/orders`), list (`GET /api/orders`), read (`GET /api/orders/{id}`)
//! and cancel (`POST /api/orders/{id}/cancel`). A caller only ever sees their own
//! orders: another user's order is the same 404 as a missing one.

pub(crate) mod input;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use order_core::app::ValidationErrors;
use order_core::{
    CancelOrderError, CreateOrderError, GetOrderError, ListOrdersError, OrderId, ProductId,
    RequestedItem,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::dto::{OrderDto, OrderEnvelope, OrderList, PageMeta, StatusDto};
use crate::error::{ApiError, ErrorBody, server_fault};
use crate::json::{Json, json_object};

/// The one answer for a missing order and for another user's.
const ORDER_NOT_FOUND: &str = "Order not found.";

/// `POST /api/orders` body. (The handler validates the raw JSON by hand, to list every
/// field at fault; this type documents the shape.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateOrder)]
#[allow(dead_code)]
pub(crate) struct CreateOrderBody {
    /// The lines, 1..=50 as sent; lines of one product are merged.
    #[schema(min_items = 1, max_items = 50)]
    items: Vec<CreateOrderItem>,
    /// Makes the request safe to retry: the same key and lines replay the first order.
    /// May be sent as the `Idempotency-Key` header instead (equal to this when both are
    /// sent).
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: String,
    /// Optional; when sent it must be the caller's own id (else 403).
    #[schema(minimum = 1, nullable = false)]
    user_id: Option<u64>,
}

/// One line of a create request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateOrderItem)]
#[allow(dead_code)]
pub(crate) struct CreateOrderItem {
    /// An existing product's id.
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    product_id: i64,
    /// Units, 1..=10000.
    #[schema(minimum = 1, maximum = 10000)]
    quantity: u32,
}

/// Places an order for the caller (or replays the one placed with the same key).
///
/// The idempotency key may come in the `Idempotency-Key` request header instead of the
/// body's `idempotency_key`; when both are sent they must be equal (else 422 on
/// `idempotency_key`). The header is described here rather than listed as a parameter:
/// OpenAPI cannot say "this header or that field", and listing both as optional would
/// call a request with neither (or with two different keys) valid.
#[utoipa::path(
    post,
    path = "/api/orders",
    tag = "orders",
    security(("bearer" = [])),
    request_body(content = CreateOrderBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Order placed", body = OrderEnvelope,
            headers(("Location" = String, description = "`/api/orders/{id}`"))),
        (status = 200, description = "Replay: the order placed earlier with this key and these lines",
            body = OrderEnvelope,
            headers(
                ("Location" = String, description = "`/api/orders/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true`"),
            )),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 401, description = "Missing, malformed, unknown or expired token", body = ErrorBody),
        (status = 403, description = "`user_id` names another user", body = ErrorBody),
        (status = 409, description = "`INSUFFICIENT_STOCK`, `LOCK_CONFLICT` or `IDEMPOTENCY_KEY_IN_FLIGHT` (with `Retry-After`)",
            body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds; on `IDEMPOTENCY_KEY_IN_FLIGHT`"))),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 422, description = "`VALIDATION_FAILED` (every field at fault) or `IDEMPOTENCY_KEY_REUSED`", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
        (status = 503, description = "A dependency is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn create_order(
    State(state): State<ApiState>,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let object = json_object(&headers, body, state.settings.body_limit).await?;
    let request = input::create_request(object, &headers, caller.id)?;
    let items = request.items.clone();
    let created = state
        .service
        .create_order(request)
        .await
        .map_err(|e| create_error(e, &items))?;
    let order = &created.order;
    let (status, replayed) = if created.replayed {
        (StatusCode::OK, Some(HeaderValue::from_static("true")))
    } else {
        (StatusCode::CREATED, None)
    };
    let mut response = (status, Json(OrderEnvelope { data: order.into() })).into_response();
    let location = format!("/api/orders/{}", order.id());
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Some(v) = replayed {
        response.headers_mut().insert("idempotent-replayed", v);
    }
    Ok(response)
}

/// Maps every refusal of `create_order`; `items` are the lines as sent, to name the
/// item(s) of an unknown product.
fn create_error(e: CreateOrderError, items: &[RequestedItem]) -> ApiError {
    match e {
        CreateOrderError::Validation(errors) => ApiError::Validation(errors),
        CreateOrderError::IdempotencyKeyReused { .. } => ApiError::IdempotencyKeyReused,
        CreateOrderError::IdempotencyKeyInFlight => ApiError::IdempotencyKeyInFlight,
        CreateOrderError::LockConflict { product } => ApiError::LockConflict(product),
        CreateOrderError::InsufficientStock {
            product,
            requested,
            available,
        } => ApiError::InsufficientStock {
            product,
            requested,
            available,
        },
        CreateOrderError::UnknownProduct(product) => unknown_product(product, items),
        CreateOrderError::UnknownUser(_) => ApiError::Unauthenticated,
        e @ CreateOrderError::Unavailable(_) => server_fault(true, e),
        e @ CreateOrderError::Unexpected(_) => server_fault(false, e),
    }
}

/// 422 on `items.{i}.product_id` for every line that names `product`.
fn unknown_product(product: ProductId, items: &[RequestedItem]) -> ApiError {
    let mut errors = ValidationErrors::new();
    for (i, item) in items.iter().enumerate() {
        if u64::try_from(item.product_id).ok() == Some(product.get()) {
            errors.add(
                format!("items.{i}.product_id"),
                "The selected product does not exist.",
            );
        }
    }
    if errors.is_empty() {
        errors.add("items", format!("Product {product} does not exist."));
    }
    ApiError::Validation(errors)
}

/// Lists the caller's orders, newest first.
#[utoipa::path(
    get,
    path = "/api/orders",
    tag = "orders",
    security(("bearer" = [])),
    params(
        ("status" = Option<StatusDto>, Query, nullable = false, description = "Only orders in this status"),
        ("page" = Option<i64>, Query, nullable = false, minimum = 1, maximum = 4294967295_i64, description = "1-based page (default 1)"),
        ("per_page" = Option<i64>, Query, nullable = false, minimum = 1, maximum = 50, description = "Orders per page (default 15)"),
    ),
    responses(
        (status = 200, description = "A page of the caller's orders", body = OrderList),
        (status = 401, description = "Missing, malformed, unknown or expired token", body = ErrorBody),
        (status = 422, description = "A parameter is unknown, repeated or out of range", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
        (status = 503, description = "The order store is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn list_orders(
    State(state): State<ApiState>,
    Extension(Caller(caller)): Extension<Caller>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let query = input::list_query(uri.query())?;
    let page = state
        .service
        .list_orders(caller.id, query)
        .await
        .map_err(|e| match e {
            ListOrdersError::Validation(errors) => ApiError::Validation(errors),
            e @ ListOrdersError::Unavailable(_) => server_fault(true, e),
            e @ ListOrdersError::Unexpected(_) => server_fault(false, e),
        })?;
    // The query was checked above: both fit in u32.
    let per_page = u32::try_from(query.per_page).unwrap_or(u32::MAX);
    let current_page = u32::try_from(query.page).unwrap_or(u32::MAX);
    let last_page = page.total.div_ceil(u64::from(per_page.max(1))).max(1);
    let body = OrderList {
        data: page.orders.iter().map(OrderDto::from).collect(),
        meta: PageMeta {
            current_page,
            per_page,
            total: page.total,
            last_page,
        },
    };
    Ok(Json(body).into_response())
}

/// The order id in a path ([`path_id`](crate::validate::path_id)).
fn order_id(path: Result<Path<String>, PathRejection>) -> Option<OrderId> {
    OrderId::new(crate::validate::path_id(path)?).ok()
}

/// One of the caller's orders.
#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = u64, Path, minimum = 1, maximum = 9223372036854775807_i64, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderEnvelope),
        (status = 401, description = "Missing, malformed, unknown or expired token", body = ErrorBody),
        (status = 404, description = "No such order of the caller's", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
        (status = 503, description = "The order store is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn get_order(
    State(state): State<ApiState>,
    Extension(Caller(caller)): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = order_id(path).ok_or(ApiError::NotFound(ORDER_NOT_FOUND))?;
    let order = state
        .service
        .get_order(caller.id, id)
        .await
        .map_err(|e| match e {
            GetOrderError::NotFound => ApiError::NotFound(ORDER_NOT_FOUND),
            e @ GetOrderError::Unavailable(_) => server_fault(true, e),
            e @ GetOrderError::Unexpected(_) => server_fault(false, e),
        })?;
    Ok(Json(OrderEnvelope {
        data: (&order).into(),
    })
    .into_response())
}

/// Cancels one of the caller's Pending orders (stock returned); an already cancelled
/// order is returned unchanged. Any request body is ignored.
#[utoipa::path(
    post,
    path = "/api/orders/{id}/cancel",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = u64, Path, minimum = 1, maximum = 9223372036854775807_i64, description = "The order's id")),
    responses(
        (status = 200, description = "The cancelled order", body = OrderEnvelope),
        (status = 401, description = "Missing, malformed, unknown or expired token", body = ErrorBody),
        (status = 404, description = "No such order of the caller's", body = ErrorBody),
        (status = 409, description = "`INVALID_TRANSITION`: the order is past Pending", body = ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = ErrorBody),
        (status = 503, description = "The order store is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn cancel_order(
    State(state): State<ApiState>,
    Extension(Caller(caller)): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = order_id(path).ok_or(ApiError::NotFound(ORDER_NOT_FOUND))?;
    let order = state
        .service
        .cancel_order(caller.id, id)
        .await
        .map_err(|e| match e {
            CancelOrderError::NotFound => ApiError::NotFound(ORDER_NOT_FOUND),
            CancelOrderError::InvalidTransition { current } => ApiError::InvalidTransition(current),
            e @ CancelOrderError::Unavailable(_) => server_fault(true, e),
            e @ CancelOrderError::Unexpected(_) => server_fault(false, e),
        })?;
    Ok(Json(OrderEnvelope {
        data: (&order).into(),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> Option<u64> {
        order_id(Ok(Path(raw.to_owned()))).map(OrderId::get)
    }

    #[test]
    fn only_digits_from_one_to_i64_max_name_an_order() {
        assert_eq!(id("42"), Some(42));
        assert_eq!(id("9223372036854775807"), Some(i64::MAX as u64));
        for bad in [
            "0",
            "-1",
            "+1",
            "1.0",
            "abc",
            "",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }
}
