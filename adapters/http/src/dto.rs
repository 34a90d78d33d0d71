//! The JSON shapes the API answers with, and their conversion from domain types. Only
//! this crate knows JSON: the domain has no serde derives, so every wire shape is here,
//! documented for the OpenAPI document by `ToSchema`.

use order_core::ports::Account;
use order_core::{Order, OrderStatus, Product};
use serde::Serialize;
use utoipa::ToSchema;

/// An order's status on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = OrderStatus)]
pub(crate) enum StatusDto {
    /// Placed, stock reserved, waiting for a worker.
    #[serde(rename = "PENDING")]
    Pending,
    /// Being charged.
    #[serde(rename = "PROCESSING")]
    Processing,
    /// Charged.
    #[serde(rename = "PAID")]
    Paid,
    /// Payment failed; stock returned.
    #[serde(rename = "FAILED")]
    Failed,
    /// Cancelled by its owner; stock returned.
    #[serde(rename = "CANCELLED")]
    Cancelled,
}

impl From<OrderStatus> for StatusDto {
    fn from(s: OrderStatus) -> Self {
        match s {
            OrderStatus::Pending => StatusDto::Pending,
            OrderStatus::Processing => StatusDto::Processing,
            OrderStatus::Paid => StatusDto::Paid,
            OrderStatus::Failed => StatusDto::Failed,
            OrderStatus::Cancelled => StatusDto::Cancelled,
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = OrderItem)]
pub(crate) struct OrderItemDto {
    /// The product.
    #[schema(minimum = 1)]
    product_id: u64,
    /// Units ordered.
    #[schema(minimum = 1, maximum = 10000)]
    quantity: u32,
    /// Price per unit at placement, two decimals.
    #[schema(pattern = r"^[0-9]+\.[0-9]{2}$", example = "29.99")]
    unit_price: String,
}

/// An order.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Order)]
pub(crate) struct OrderDto {
    /// The order's id.
    #[schema(minimum = 1)]
    id: u64,
    /// Its owner.
    #[schema(minimum = 1)]
    user_id: u64,
    /// Where it is in its life.
    status: StatusDto,
    /// The exact sum of its lines, two decimals.
    #[schema(pattern = r"^[0-9]+\.[0-9]{2}$", example = "2029.97")]
    total_amount: String,
    /// The key it was placed with.
    idempotency_key: String,
    /// When it was cancelled (RFC 3339, UTC), or null.
    #[schema(format = DateTime)]
    cancelled_at: Option<String>,
    /// When it was placed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    created_at: String,
    /// When it last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    updated_at: String,
    /// Its lines, one per product.
    items: Vec<OrderItemDto>,
}

impl From<&Order> for OrderDto {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id().get(),
            user_id: o.user().get(),
            status: o.status().into(),
            total_amount: o.total().to_string(),
            idempotency_key: o.idempotency_key().as_str().to_owned(),
            cancelled_at: o.cancelled_at().map(|t| t.to_rfc3339()),
            created_at: o.created_at().to_rfc3339(),
            updated_at: o.updated_at().to_rfc3339(),
            items: o
                .lines()
                .iter()
                .map(|l| OrderItemDto {
                    product_id: l.product.get(),
                    quantity: l.quantity.get(),
                    unit_price: l.unit_price.to_string(),
                })
                .collect(),
        }
    }
}

/// `{"data": Order}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct OrderEnvelope {
    /// The order.
    pub(crate) data: OrderDto,
}

/// Paging facts of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct PageMeta {
    /// The page shown (1-based).
    #[schema(minimum = 1)]
    pub(crate) current_page: u32,
    /// Orders per page.
    #[schema(minimum = 1, maximum = 50)]
    pub(crate) per_page: u32,
    /// Orders matching the filter in all.
    #[schema(minimum = 0)]
    pub(crate) total: u64,
    /// The last page with orders (1 when there are none).
    #[schema(minimum = 1)]
    pub(crate) last_page: u64,
}

/// `{"data": [Order], "meta": PageMeta}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct OrderList {
    /// The orders of this page, newest first.
    pub(crate) data: Vec<OrderDto>,
    /// Paging facts.
    pub(crate) meta: PageMeta,
}

/// A product.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Product)]
pub(crate) struct ProductDto {
    /// The product's id.
    #[schema(minimum = 1)]
    id: u64,
    /// Display name.
    name: String,
    /// Unit price, two decimals.
    #[schema(pattern = r"^[0-9]+\.[0-9]{2}$", example = "999.99")]
    price: String,
    /// Units available now.
    #[schema(minimum = 0)]
    stock: u64,
}

impl From<&Product> for ProductDto {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id.get(),
            name: p.name.clone(),
            price: p.price.to_string(),
            stock: p.stock,
        }
    }
}

/// `{"data": Product}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ProductEnvelope {
    /// The product.
    pub(crate) data: ProductDto,
}

/// `{"data": [Product]}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ProductList {
    /// Every product, ascending by id.
    pub(crate) data: Vec<ProductDto>,
}

/// An account as a client sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = User)]
pub(crate) struct UserDto {
    /// The user's id (the `user_id` of their orders).
    #[schema(minimum = 1)]
    id: u64,
    /// Display name.
    name: String,
    /// Login e-mail.
    email: String,
}

impl From<&Account> for UserDto {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id.get(),
            name: a.name.clone(),
            email: a.email.clone(),
        }
    }
}
