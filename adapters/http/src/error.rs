//! [`ApiError`]: every refusal the API answers with, its HTTP status, its stable
//! `error_code` and its JSON body `{"message", "error_code", "errors"?}`.
//!
//! 5xx bodies are opaque: the cause never reaches the client. Instead the error's whole
//! chain (rendered with [`ErrorChain`]) is put in the response's extensions as a
//! [`ServerFault`], and the request middleware ([`crate::trace`]) logs it once, with the
//! request's trace id — so a failure is logged exactly once, where it is answered.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use order_core::app::ValidationErrors;
use order_core::{ErrorChain, OrderStatus, ProductId};
use serde::Serialize;
use utoipa::ToSchema;

/// The stable machine-readable code of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ErrorCode {
    /// 400: the body is not a JSON object.
    MalformedJson,
    /// 401: a missing, malformed, unknown or expired bearer token.
    Unauthenticated,
    /// 401: wrong e-mail or password.
    InvalidCredentials,
    /// 403: acting for another user.
    Forbidden,
    /// 404: no such resource (or not yours), or no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: a product lock stayed busy.
    LockConflict,
    /// 409: not enough stock.
    InsufficientStock,
    /// 409: another request with this idempotency key is in flight.
    IdempotencyKeyInFlight,
    /// 409: the order's status forbids the change.
    InvalidTransition,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: fields at fault (listed in `errors`).
    ValidationFailed,
    /// 422: the idempotency key was used for different lines.
    IdempotencyKeyReused,
    /// 429: the caller's rate limit is exhausted.
    RateLimitExceeded,
    /// 500: anything unexpected (opaque).
    InternalError,
    /// 503: a dependency is down (opaque).
    ServiceUnavailable,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    /// A sentence for humans.
    #[schema(example = "The given data was invalid.")]
    pub(crate) message: String,
    /// The stable code to branch on.
    pub(crate) error_code: ErrorCode,
    /// Field → messages; only on 422 `VALIDATION_FAILED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) errors: Option<BTreeMap<String, Vec<String>>>,
}

/// The rendered cause of a 5xx answer, carried in the response extensions for the
/// request middleware to log once (with the trace id); never sent to the client.
#[derive(Debug, Clone)]
pub(crate) struct ServerFault(pub(crate) String);

/// Every refusal the API answers with. Each variant documents its status and code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 422 `VALIDATION_FAILED`, listing every field at fault.
    #[error("the given data was invalid: {0}")]
    Validation(ValidationErrors),
    /// 400 `MALFORMED_JSON`, with a sentence saying what is wrong.
    #[error("{0}")]
    MalformedJson(String),
    /// 415 `UNSUPPORTED_MEDIA_TYPE`.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// 413 `PAYLOAD_TOO_LARGE`; the limit in bytes (0 when unknown).
    #[error("the body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// 401 `UNAUTHENTICATED` with `WWW-Authenticate: Bearer`.
    #[error("unauthenticated")]
    Unauthenticated,
    /// 401 `INVALID_CREDENTIALS` with `WWW-Authenticate: Bearer`.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 403 `FORBIDDEN`.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// 404 `NOT_FOUND` with this message ("Order not found.").
    #[error("{0}")]
    NotFound(&'static str),
    /// 405 `METHOD_NOT_ALLOWED` (axum adds the `Allow` header).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 `LOCK_CONFLICT`.
    #[error("lock conflict on product {0}")]
    LockConflict(ProductId),
    /// 409 `INSUFFICIENT_STOCK`.
    #[error("insufficient stock for product {product}")]
    InsufficientStock {
        /// The product that is short.
        product: ProductId,
        /// Units requested.
        requested: u32,
        /// Units available.
        available: u64,
    },
    /// 409 `IDEMPOTENCY_KEY_IN_FLIGHT` with `Retry-After: 1`.
    #[error("idempotency key in flight")]
    IdempotencyKeyInFlight,
    /// 422 `IDEMPOTENCY_KEY_REUSED`.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// 409 `INVALID_TRANSITION`.
    #[error("order cannot be cancelled from {0}")]
    InvalidTransition(OrderStatus),
    /// 429 `RATE_LIMIT_EXCEEDED` with `Retry-After` (whole seconds, at least 1).
    #[error("rate limit exceeded")]
    RateLimited {
        /// Seconds until the next request is allowed.
        retry_after: u64,
    },
    /// 503 `SERVICE_UNAVAILABLE`, opaque; the cause is logged.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500 `INTERNAL_ERROR`, opaque; the cause is logged.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The status this error is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthenticated | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::LockConflict(_)
            | ApiError::InsufficientStock { .. }
            | ApiError::IdempotencyKeyInFlight
            | ApiError::InvalidTransition(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body's `error_code`.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            ApiError::Validation(_) => ErrorCode::ValidationFailed,
            ApiError::MalformedJson(_) => ErrorCode::MalformedJson,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::Unauthenticated => ErrorCode::Unauthenticated,
            ApiError::InvalidCredentials => ErrorCode::InvalidCredentials,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::LockConflict(_) => ErrorCode::LockConflict,
            ApiError::InsufficientStock { .. } => ErrorCode::InsufficientStock,
            ApiError::IdempotencyKeyInFlight => ErrorCode::IdempotencyKeyInFlight,
            ApiError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            ApiError::InvalidTransition(_) => ErrorCode::InvalidTransition,
            ApiError::RateLimited { .. } => ErrorCode::RateLimitExceeded,
            ApiError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The body's `message`: safe to show (5xx say nothing of the cause).
    fn message(&self) -> String {
        match self {
            ApiError::Validation(_) => "The given data was invalid.".to_owned(),
            ApiError::MalformedJson(m) => m.clone(),
            ApiError::UnsupportedMediaType => {
                "The request body must be sent as Content-Type: application/json.".to_owned()
            }
            ApiError::PayloadTooLarge(0) => "The request body is too large.".to_owned(),
            ApiError::PayloadTooLarge(limit) => {
                format!("The request body must not exceed {limit} bytes.")
            }
            ApiError::Unauthenticated => "Unauthenticated.".to_owned(),
            ApiError::InvalidCredentials => "The provided credentials are incorrect.".to_owned(),
            ApiError::Forbidden(m) | ApiError::NotFound(m) => (*m).to_owned(),
            ApiError::MethodNotAllowed => "Method not allowed.".to_owned(),
            ApiError::LockConflict(_) => "Could not acquire lock. Please retry.".to_owned(),
            ApiError::InsufficientStock {
                product,
                requested,
                available,
            } => format!(
                "Insufficient stock for product {product}. Requested: {requested}, Available: {available}"
            ),
            ApiError::IdempotencyKeyInFlight => {
                "A request with this idempotency key is still being processed. Please retry."
                    .to_owned()
            }
            ApiError::IdempotencyKeyReused => {
                "This idempotency key was already used for an order with different items."
                    .to_owned()
            }
            ApiError::InvalidTransition(current) => {
                format!("Order cannot be cancelled. Current status: {current}")
            }
            ApiError::RateLimited { retry_after } => {
                format!("Too many requests. Retry after {retry_after} seconds.")
            }
            ApiError::Unavailable(_) => "Service temporarily unavailable.".to_owned(),
            ApiError::Internal(_) => "Internal server error.".to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            message: self.message(),
            error_code: self.code(),
            errors: match &self {
                ApiError::Validation(errors) => Some(errors.fields().clone()),
                _ => None,
            },
        };
        let mut response = (status, crate::json::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthenticated | ApiError::InvalidCredentials => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::IdempotencyKeyInFlight => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unavailable(cause) | ApiError::Internal(cause) => {
                let cause: &(dyn std::error::Error + 'static) = cause.as_ref();
                let fault = ServerFault(ErrorChain(cause).to_string());
                response.extensions_mut().insert(fault);
            }
            _ => {}
        }
        response
    }
}

/// Turns a use-case error's `Unavailable`/`Unexpected` into 503/500, keeping the whole
/// use-case error (its own sentence first) as the cause to log.
pub(crate) fn server_fault<E>(unavailable: bool, error: E) -> ApiError
where
    E: std::error::Error + Send + Sync + 'static,
{
    if unavailable {
        ApiError::Unavailable(anyhow::Error::new(error))
    } else {
        ApiError::Internal(anyhow::Error::new(error))
    }
}
