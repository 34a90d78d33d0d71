//! The public product routes: `GET /api/products` and `GET /api/products/{id}`. No
//! authentication; a bad id is the same 404 as a missing product.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use order_core::{ListProductsError, ProductId};

use crate::ApiState;
use crate::dto::{ProductDto, ProductEnvelope, ProductList};
use crate::error::{ApiError, ErrorBody, server_fault};
use crate::json::Json;

const PRODUCT_NOT_FOUND: &str = "Product not found.";

fn store_error(e: ListProductsError) -> ApiError {
    match e {
        e @ ListProductsError::Unavailable(_) => server_fault(true, e),
        e @ ListProductsError::Unexpected(_) => server_fault(false, e),
    }
}

/// Every product with its price and stock, ascending by id.
#[utoipa::path(
    get,
    path = "/api/products",
    tag = "products",
    responses(
        (status = 200, description = "Every product", body = ProductList),
        (status = 503, description = "The product store is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn list_products(
    State(state): State<crate::ApiState>,
) -> Result<Response, ApiError> {
    let products = state.service.list_products().await.map_err(store_error)?;
    Ok(Json(ProductList {
        data: products.iter().map(ProductDto::from).collect(),
    })
    .into_response())
}

/// The product id in a path ([`path_id`](crate::validate::path_id)).
fn product_id(path: Result<Path<String>, PathRejection>) -> Option<ProductId> {
    ProductId::new(crate::validate::path_id(path)?).ok()
}

/// One product.
#[utoipa::path(
    get,
    path = "/api/products/{id}",
    tag = "products",
    params(("id" = u64, Path, minimum = 1, maximum = 9223372036854775807_i64, description = "The product's id")),
    responses(
        (status = 200, description = "The product", body = ProductEnvelope),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 503, description = "The product store is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn get_product(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = product_id(path).ok_or(ApiError::NotFound(PRODUCT_NOT_FOUND))?;
    let product = state
        .service
        .get_product(id)
        .await
        .map_err(store_error)?
        .ok_or(ApiError::NotFound(PRODUCT_NOT_FOUND))?;
    Ok(Json(ProductEnvelope {
        data: (&product).into(),
    })
    .into_response())
}
