//! The customer's own use cases besides creating: cancelling a Pending order, and the
//! reads (one order, a page of orders, the product list).

use super::errors::{
    CancelOrderError, GetOrderError, ListOrdersError, ListProductsError, ValidationErrors,
};
use super::service::OrderService;
use super::stats::ServiceStats;
use crate::domain::{Order, OrderId, OrderStatus, Product, ProductId, StatusChange, UserId};
use crate::ports::{EventPage, ListFilter, OrderPage, TransitionOutcome};

/// The most events [`OrderService::events_after`] returns at once.
pub const MAX_EVENTS_PAGE: u32 = 500;

/// Filter and page for [`OrderService::list_orders`], as the caller sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderQuery {
    /// Only this status, if set.
    pub status: Option<OrderStatus>,
    /// 1-based page (default 1).
    pub page: i64,
    /// 1..=50 (default 15).
    pub per_page: i64,
}

impl Default for OrderQuery {
    fn default() -> Self {
        Self {
            status: None,
            page: 1,
            per_page: 15,
        }
    }
}

impl OrderService {
    /// Cancels `user`'s Pending order, returning its stock exactly once. Cancelling an
    /// already cancelled order returns it unchanged. A cancel racing the worker: exactly
    /// one of them wins.
    ///
    /// # Errors
    /// [`CancelOrderError::NotFound`] for a missing or foreign order;
    /// [`CancelOrderError::InvalidTransition`] past Pending.
    #[tracing::instrument(skip_all, fields(user = %user, order = %id))]
    pub async fn cancel_order(&self, user: UserId, id: OrderId) -> Result<Order, CancelOrderError> {
        let repo = &self.ports.repository;
        let order = match repo.get(id).await? {
            Some(o) if o.user() == user => o,
            _ => return Err(CancelOrderError::NotFound),
        };
        match order.status() {
            OrderStatus::Cancelled => return Ok(order),
            OrderStatus::Pending => {}
            current @ (OrderStatus::Processing | OrderStatus::Paid | OrderStatus::Failed) => {
                return Err(CancelOrderError::InvalidTransition { current });
            }
        }
        let now = self.ports.clock.now();
        match repo.transition(id, StatusChange::Cancel, now).await? {
            TransitionOutcome::Applied(o, event) => {
                ServiceStats::bump(&self.stats.cancelled);
                if let Some(event) = event {
                    self.publish(event).await;
                }
                Ok(o)
            }
            TransitionOutcome::LostRace(o) if o.status() == OrderStatus::Cancelled => Ok(o),
            TransitionOutcome::LostRace(o) => Err(CancelOrderError::InvalidTransition {
                current: o.status(),
            }),
            TransitionOutcome::NotFound => Err(CancelOrderError::NotFound),
        }
    }

    /// `user`'s order `id`.
    ///
    /// # Errors
    /// [`GetOrderError::NotFound`] for a missing order or another user's.
    pub async fn get_order(&self, user: UserId, id: OrderId) -> Result<Order, GetOrderError> {
        match self.ports.repository.get(id).await? {
            Some(o) if o.user() == user => Ok(o),
            _ => Err(GetOrderError::NotFound),
        }
    }

    /// `user`'s orders, newest first, filtered and paged.
    ///
    /// # Errors
    /// [`ListOrdersError::Validation`] for a page < 1 or per_page outside 1..=50.
    pub async fn list_orders(
        &self,
        user: UserId,
        query: OrderQuery,
    ) -> Result<OrderPage, ListOrdersError> {
        let mut errors = ValidationErrors::new();
        let page = u32::try_from(query.page).ok().filter(|p| *p >= 1);
        if page.is_none() {
            errors.add("page", "page must be a positive integer");
        }
        let per_page = u32::try_from(query.per_page)
            .ok()
            .filter(|p| (1..=50).contains(p));
        if per_page.is_none() {
            errors.add("per_page", "per_page must be between 1 and 50");
        }
        let (Some(page), Some(per_page)) = (page, per_page) else {
            return Err(ListOrdersError::Validation(errors));
        };
        let filter = ListFilter {
            status: query.status,
            page,
            per_page,
        };
        Ok(self.ports.repository.list_by_user(user, filter).await?)
    }

    /// `user`'s logged events with `seq > after`, ascending, at most `limit` (bounded to
    /// 1..=[`MAX_EVENTS_PAGE`]), and the user's latest seq: what a client that missed
    /// live events reads (DESIGN §6). Events older than the reconciler's
    /// `event_retention` may have been pruned: the first returned `seq` is then above
    /// `after + 1` (or nothing is returned although `last_seq > after`).
    ///
    /// # Errors
    /// [`ListProductsError::Unavailable`] / `Unexpected` when the store failed (the read
    /// errors of the catalogue and the log are the same two).
    pub async fn events_after(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<EventPage, ListProductsError> {
        Ok(self
            .ports
            .repository
            .events_after(user, after, limit.clamp(1, MAX_EVENTS_PAGE))
            .await?)
    }

    /// Every product with its price and stock, ascending by id.
    ///
    /// # Errors
    /// [`ListProductsError::Unavailable`] / `Unexpected` when the store failed.
    pub async fn list_products(&self) -> Result<Vec<Product>, ListProductsError> {
        Ok(self.ports.repository.products().await?)
    }

    /// The product with this id, with its price and stock; `None` when there is none.
    ///
    /// # Errors
    /// [`ListProductsError::Unavailable`] / `Unexpected` when the store failed.
    pub async fn get_product(&self, id: ProductId) -> Result<Option<Product>, ListProductsError> {
        Ok(self.ports.repository.product(id).await?)
    }
}
