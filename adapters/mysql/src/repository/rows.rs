//! Rows: the shapes the adapter reads, and their conversion to domain values.
//!
//! Rows become domain values only through [`Order::from_parts`] and the value-object
//! constructors, so a row the domain would refuse is reported as `Unexpected` instead of
//! being trusted. The loaders shared by the read methods and both write paths live here
//! too: they are the only code that turns a query result into an [`Order`].

use std::collections::HashMap;

use order_core::domain::{
    FailureReason, Lease, LeaseToken, OrderLine, OrderParts, RequestFingerprint,
};
use order_core::ports::{ListFilter, OrderPage};
use order_core::{
    IdempotencyKey, Money, Order, OrderId, OrderStatus, Product, ProductId, Quantity, UserId,
};
use rust_decimal::Decimal;
use sqlx::mysql::MySqlRow;
use sqlx::{AssertSqlSafe, FromRow, MySqlConnection};

use super::sql::{
    COUNT_BY_USER, COUNT_BY_USER_STATUS, ITEMS_OF_ORDER, ITEMS_OF_ORDER_LOCKED,
    ITEMS_OF_ORDERS_HEAD, ITEMS_OF_ORDERS_TAIL, LIST_BY_USER, LIST_BY_USER_STATUS, ORDER_BY_ID,
    ORDER_BY_KEY, ORDER_BY_KEY_LOCKED, pad, padded, repeat_sql,
};
use crate::error::{Context, DbError};
use crate::time::from_sql;

/// One `orders` row as read by `order_select!`.
#[derive(sqlx::FromRow)]
pub(super) struct OrderRow {
    id: u64,
    user_id: u64,
    status: String,
    total_amount: Decimal,
    idempotency_key: String,
    request_fingerprint: u64,
    lease_token: Option<u64>,
    lease_until_ms: Option<i64>,
    attempts: u32,
    failure_reason: Option<String>,
    cancelled_at_ms: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

/// One `order_items` row.
#[derive(sqlx::FromRow)]
pub(super) struct ItemRow {
    order_id: u64,
    pub(super) product_id: u64,
    pub(super) quantity: u32,
    unit_price: Decimal,
}

/// One row of `ORDERS_WITH_ITEMS_*`: an order and one of its lines.
#[derive(sqlx::FromRow)]
struct OrderLineRow {
    #[sqlx(flatten)]
    order: OrderRow,
    item_product_id: Option<u64>,
    item_quantity: Option<u32>,
    item_unit_price: Option<Decimal>,
}

/// One `products` row.
#[derive(sqlx::FromRow)]
pub(super) struct ProductRow {
    id: u64,
    name: String,
    price: Decimal,
    stock: u32,
}

fn money(value: Decimal, column: &str) -> Result<Money, DbError> {
    Money::new(value).map_err(|e| DbError::data(format!("{column} {value}: {e}")))
}

pub(super) fn order_id(raw: u64) -> Result<OrderId, DbError> {
    OrderId::new(raw).map_err(|e| DbError::data(format!("order id {raw}: {e}")))
}

pub(super) fn product_id(raw: u64) -> Result<ProductId, DbError> {
    ProductId::new(raw).map_err(|e| DbError::data(format!("product id {raw}: {e}")))
}

impl ItemRow {
    fn into_line(self) -> Result<OrderLine, DbError> {
        Ok(OrderLine {
            product: product_id(self.product_id)?,
            quantity: Quantity::new(i64::from(self.quantity)).map_err(|e| {
                DbError::data(format!("order {} line quantity: {e}", self.order_id))
            })?,
            unit_price: money(self.unit_price, "order_items.unit_price")?,
        })
    }
}

impl ProductRow {
    pub(super) fn into_product(self) -> Result<Product, DbError> {
        Ok(Product {
            id: product_id(self.id)?,
            name: self.name,
            price: money(self.price, "products.price")?,
            stock: u64::from(self.stock),
        })
    }
}

impl OrderRow {
    /// Rebuilds the domain order; every check of [`Order::from_parts`] applies.
    fn into_order(self, items: Vec<ItemRow>) -> Result<Order, DbError> {
        let id = order_id(self.id)?;
        let lease = match (self.lease_token, self.lease_until_ms) {
            (None, None) => None,
            (Some(token), Some(until)) => Some(Lease {
                token: LeaseToken::from_raw(token),
                until: from_sql(until, "orders.lease_until")?,
            }),
            _ => {
                return Err(DbError::data(format!(
                    "order {id}: lease_token and lease_until must be set together"
                )));
            }
        };
        let parts = OrderParts {
            id,
            user: UserId::new(self.user_id)
                .map_err(|e| DbError::data(format!("order {id} user: {e}")))?,
            lines: items
                .into_iter()
                .map(ItemRow::into_line)
                .collect::<Result<_, _>>()?,
            total: money(self.total_amount, "orders.total_amount")?,
            status: OrderStatus::parse(&self.status)
                .map_err(|e| DbError::data(format!("order {id}: {e}")))?,
            idempotency_key: IdempotencyKey::new(self.idempotency_key)
                .map_err(|e| DbError::data(format!("order {id} idempotency key: {e}")))?,
            fingerprint: RequestFingerprint::from_raw(self.request_fingerprint),
            created_at: from_sql(self.created_at_ms, "orders.created_at")?,
            updated_at: from_sql(self.updated_at_ms, "orders.updated_at")?,
            cancelled_at: self
                .cancelled_at_ms
                .map(|ms| from_sql(ms, "orders.cancelled_at"))
                .transpose()?,
            lease,
            attempts: self.attempts,
            failure_reason: self.failure_reason.map(FailureReason::new),
        };
        Order::from_parts(parts).map_err(|e| DbError::Data(anyhow::Error::new(e)))
    }
}

/// Whether a read inside a transaction locks what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// A plain (snapshot) read.
    Plain,
    /// A shared locking read: the latest committed version, held until commit.
    Shared,
}

pub(super) async fn load_items(
    conn: &mut MySqlConnection,
    id: u64,
    read: Read,
) -> Result<Vec<ItemRow>, DbError> {
    let sql = match read {
        Read::Plain => ITEMS_OF_ORDER,
        Read::Shared => ITEMS_OF_ORDER_LOCKED,
    };
    sqlx::query_as::<_, ItemRow>(sql)
        .bind(id)
        .fetch_all(conn)
        .await
        .ctx("reading order lines")
}

pub(super) async fn load_order(
    conn: &mut MySqlConnection,
    id: u64,
) -> Result<Option<Order>, DbError> {
    let Some(row) = sqlx::query_as::<_, OrderRow>(ORDER_BY_ID)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .ctx("reading an order")?
    else {
        return Ok(None);
    };
    let items = load_items(conn, id, Read::Plain).await?;
    row.into_order(items).map(Some)
}

pub(super) async fn load_order_by_key(
    conn: &mut MySqlConnection,
    user: UserId,
    key: &IdempotencyKey,
    read: Read,
) -> Result<Option<Order>, DbError> {
    let sql = match read {
        Read::Plain => ORDER_BY_KEY,
        Read::Shared => ORDER_BY_KEY_LOCKED,
    };
    let Some(row) = sqlx::query_as::<_, OrderRow>(sql)
        .bind(user.get())
        .bind(key.as_str())
        .fetch_optional(&mut *conn)
        .await
        .ctx("reading an order by idempotency key")?
    else {
        return Ok(None);
    };
    let items = load_items(conn, row.id, read).await?;
    row.into_order(items).map(Some)
}

/// The orders of rows read by `ORDERS_WITH_ITEMS_HEAD` … `ORDERS_WITH_ITEMS_TAIL` (in a
/// script, `script.rs`), by id: each order once, with its lines. Inside a transaction
/// the read sees the transaction's own changes and its snapshot.
pub(super) fn orders_with_items(rows: Vec<MySqlRow>) -> Result<HashMap<u64, Order>, DbError> {
    let rows = rows
        .iter()
        .map(OrderLineRow::from_row)
        .collect::<Result<Vec<_>, _>>()
        .ctx("reading orders and their lines")?;
    orders_from_line_rows(rows)
}

fn orders_from_line_rows(rows: Vec<OrderLineRow>) -> Result<HashMap<u64, Order>, DbError> {
    let mut orders = HashMap::with_capacity(rows.len());
    // Rows come ordered by order: each order's lines are consecutive.
    let mut current: Option<(OrderRow, Vec<ItemRow>)> = None;
    for row in rows {
        let line = match (row.item_product_id, row.item_quantity, row.item_unit_price) {
            (Some(product_id), Some(quantity), Some(unit_price)) => Some(ItemRow {
                order_id: row.order.id,
                product_id,
                quantity,
                unit_price,
            }),
            _ => None,
        };
        match &mut current {
            Some((order, lines)) if order.id == row.order.id => lines.extend(line),
            _ => {
                if let Some((order, lines)) = current.take() {
                    orders.insert(order.id, order.into_order(lines)?);
                }
                current = Some((row.order, line.into_iter().collect()));
            }
        }
    }
    if let Some((order, lines)) = current {
        orders.insert(order.id, order.into_order(lines)?);
    }
    Ok(orders)
}

/// `rows` as orders, their lines read in one statement.
async fn with_items(
    conn: &mut MySqlConnection,
    rows: Vec<OrderRow>,
) -> Result<Vec<Order>, DbError> {
    let mut lines: HashMap<u64, Vec<ItemRow>> = HashMap::new();
    if !rows.is_empty() {
        let ids: Vec<u64> = rows.iter().map(|row| row.id).collect();
        let n = padded(ids.len(), 1);
        let sql = repeat_sql(ITEMS_OF_ORDERS_HEAD, "?", ", ", n, ITEMS_OF_ORDERS_TAIL);
        let mut query = sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql));
        for id in pad(&ids, n) {
            query = query.bind(*id);
        }
        for item in query
            .fetch_all(&mut *conn)
            .await
            .ctx("reading order lines")?
        {
            lines.entry(item.order_id).or_default().push(item);
        }
    }
    rows.into_iter()
        .map(|row| {
            let items = lines.remove(&row.id).unwrap_or_default();
            row.into_order(items)
        })
        .collect()
}

/// One page of `user`'s orders and their total, as
/// [`list_by_user`](order_core::ports::OrderRepository::list_by_user) promises it.
pub(super) async fn load_page(
    conn: &mut MySqlConnection,
    user: UserId,
    filter: ListFilter,
) -> Result<OrderPage, DbError> {
    let limit = u64::from(filter.per_page);
    let offset = u64::from(filter.page.max(1) - 1) * limit;
    let (rows, total) = match filter.status {
        None => {
            let rows = sqlx::query_as::<_, OrderRow>(LIST_BY_USER)
                .bind(user.get())
                .bind(limit)
                .bind(offset)
                .fetch_all(&mut *conn)
                .await
                .ctx("listing a user's orders")?;
            let total: i64 = sqlx::query_scalar(COUNT_BY_USER)
                .bind(user.get())
                .fetch_one(&mut *conn)
                .await
                .ctx("counting a user's orders")?;
            (rows, total)
        }
        Some(status) => {
            let rows = sqlx::query_as::<_, OrderRow>(LIST_BY_USER_STATUS)
                .bind(user.get())
                .bind(status.as_str())
                .bind(limit)
                .bind(offset)
                .fetch_all(&mut *conn)
                .await
                .ctx("listing a user's orders")?;
            let total: i64 = sqlx::query_scalar(COUNT_BY_USER_STATUS)
                .bind(user.get())
                .bind(status.as_str())
                .fetch_one(&mut *conn)
                .await
                .ctx("counting a user's orders")?;
            (rows, total)
        }
    };
    let orders = with_items(conn, rows).await?;
    let total =
        u64::try_from(total).map_err(|_| DbError::data(format!("negative order count {total}")))?;
    Ok(OrderPage { orders, total })
}
