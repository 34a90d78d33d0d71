//! The `OrderRepository` port: orders and stock, changed atomically.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    IdempotencyKey, Order, OrderDraft, OrderId, OrderStatus, Product, ProductId, StatusChange,
    Timestamp, UserId,
};
use crate::ports::OrderEvent;

/// Errors of [`OrderRepository`]. Business outcomes (stock, duplicates, lost races) are
/// not errors: they are variants of [`PlaceOutcome`] and [`TransitionOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The store cannot be reached or timed out; the operation wrote nothing and may be
    /// retried.
    #[error("order store unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else; the operation wrote nothing.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What happened to one draft in [`OrderRepository::place`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceOutcome {
    /// A new order was stored and its stock reserved; its `order.created` event was
    /// appended to the owner's event log in the same atomic step (the second field, as
    /// logged: [`OrderEvent::logged`]).
    Placed(Order, OrderEvent),
    /// The (user, key) pair already names an order created from the same lines
    /// ([`OrderDraft::same_lines_as`]): this is it.
    Replayed(Order),
    /// The (user, key) pair names an order created from different lines.
    KeyReused {
        /// The order that owns the key.
        existing: OrderId,
    },
    /// A product has less stock than requested; nothing was written for this draft.
    InsufficientStock {
        /// The first product (ascending) that is short.
        product: ProductId,
        /// Units requested.
        requested: u32,
        /// Units available when checked.
        available: u64,
    },
    /// A product does not exist; nothing was written for this draft.
    UnknownProduct(ProductId),
    /// The user does not exist; nothing was written for this draft.
    UnknownUser(UserId),
    /// The order's total would exceed [`Money::max`](crate::domain::Money::max) at the current prices; nothing was
    /// written for this draft.
    TotalTooLarge,
}

/// What happened to one [`OrderRepository::transition`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The change was applied (and stock returned if the change returns stock). When
    /// the change moved the order to another status (every change but `TakeOver` and
    /// `Release`, which only move the lease) its event was appended to the owner's event
    /// log in the same atomic step: the second field, as logged ([`OrderEvent::logged`]).
    Applied(Order, Option<OrderEvent>),
    /// The order was not in the expected status or the fence did not match: someone else
    /// won. Nothing was written. Carries the order as it is now.
    LostRace(Order),
    /// No order has this id.
    NotFound,
}

/// A page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    /// The orders on this page (at most `per_page`).
    pub orders: Vec<Order>,
    /// How many orders match the filter in all.
    pub total: u64,
}

/// Filter and page for [`OrderRepository::list_by_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListFilter {
    /// Only orders in this status, if set.
    pub status: Option<OrderStatus>,
    /// 1-based page number.
    pub page: u32,
    /// Orders per page (the service bounds it to 1..=50).
    pub per_page: u32,
}

/// A slice of one user's event log, from [`OrderRepository::events_after`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// Events with `seq` above the requested one, ascending by `seq`, at most the limit.
    pub events: Vec<OrderEvent>,
    /// The user's latest `seq` (0 when the user has no event yet). Events between the
    /// requested `seq` and the first one returned were pruned when the first returned
    /// `seq` is above `after + 1`, or when `events` is empty and `last_seq > after`.
    pub last_seq: u64,
}

/// What [`OrderRepository::claim_stranded`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrandedQuery {
    /// An order counts as stranded when it was last handed out (placed, or claimed by a
    /// reconciler) at or before `now - stale_after` and is still Pending, or is
    /// Processing with a lease that expired at or before `now`.
    pub stale_after: Duration,
    /// Most orders claimed by one call.
    pub limit: u32,
}

/// Orders and stock, changed atomically. The database behind it is the correctness
/// guard: locks in front of it only reduce contention.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait OrderRepository: Send + Sync {
    /// Places a batch of drafts, each independently, stock allotted in arrival order.
    ///
    /// For each draft, in ONE atomic step: lock its product rows in ascending id order,
    /// check and decrement stock, insert the order and its lines priced at the products'
    /// current prices, and record the (user, idempotency key) — or return the order that
    /// already holds that key ([`PlaceOutcome::Replayed`] when it was created from the
    /// same lines, compared line by line with [`OrderDraft::same_lines_as`];
    /// [`PlaceOutcome::KeyReused`] otherwise).
    ///
    /// Each line MUST carry the product's price current at the moment its stock is
    /// taken (under the same row lock): a price change committed while the draft waited
    /// for the row is the price it pays.
    ///
    /// Each placed order's `order.created` event is appended to its owner's event log
    /// in the same atomic step, with the owner's next `seq` (see
    /// [`events_after`](Self::events_after)); replays and refusals append nothing.
    ///
    /// Returns exactly one outcome per draft, in the drafts' order.
    ///
    /// # Errors
    /// [`RepositoryError`] only when the store failed; the adapter MUST have written
    /// nothing for any draft whose outcome is not returned. One draft's business failure
    /// never fails the others. Deadlocks and lock-wait timeouts MUST be retried inside the
    /// adapter a bounded number of times before surfacing as `Unavailable`.
    async fn place(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError>;

    /// Applies `change` to order `id` as a compare-and-set on status and lease token, at
    /// time `now`, exactly as [`Order::apply`] would. When the change returns stock
    /// (Cancel, Fail) the quantities go back in the same atomic step, so stock is returned
    /// exactly once however many callers race.
    ///
    /// A change that moves the order to another status (Start, Pay, Fail, Cancel)
    /// appends its event ([`OrderEvent::logged`] of the changed order) to the owner's
    /// event log in the same atomic step, with the owner's next `seq`; TakeOver and
    /// Release, which move only the lease, append nothing, and neither does a lost race.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed; nothing was written. A lost race is
    /// [`TransitionOutcome::LostRace`], never an error.
    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError>;

    /// [`transition`](Self::transition) of an order the caller holds: `current` is the
    /// order exactly as the caller's own last applied change returned it (a worker
    /// completing the order its Start or TakeOver gave it). Same promises, same
    /// outcomes: the compare-and-set still decides against the stored order, never
    /// against `current`.
    ///
    /// What `current` allows: when `change` is fenced by a lease token (Pay, Fail) and
    /// `current` holds that token, a successful compare-and-set means nothing but the
    /// caller has changed the order since `current` was returned, so an adapter MAY
    /// answer `Applied` with `current` after [`Order::apply`] instead of reading the
    /// order back. For every other change, or a `current` that does not hold the
    /// change's token, it MUST behave exactly as `transition`. Stock returned by Fail
    /// MUST still be the stored order's lines. The default calls `transition`.
    ///
    /// # Errors
    /// As [`transition`](Self::transition).
    async fn transition_from(
        &self,
        current: &Order,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        self.transition(current.id(), change, now).await
    }

    /// The order with this id, if any.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError>;

    /// The order `user` created with `key`, if any.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn find_by_key(
        &self,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError>;

    /// A user's orders, newest first (by creation time, then id), filtered and paged.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn list_by_user(
        &self,
        user: UserId,
        filter: ListFilter,
    ) -> Result<OrderPage, RepositoryError>;

    /// All products with their current price and stock, ascending by id.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn products(&self) -> Result<Vec<Product>, RepositoryError>;

    /// The product with this id, if any. The default reads [`products`](Self::products)
    /// and picks one; an adapter with an index overrides it with a single-row read.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn product(&self, id: ProductId) -> Result<Option<Product>, RepositoryError> {
        Ok(self.products().await?.into_iter().find(|p| p.id == id))
    }

    /// The durable event log of `user`: the events with `seq > after`, ascending, at
    /// most `limit` of them, and the user's latest `seq`.
    ///
    /// The log is what a client that missed live events reads. Each user's `seq` runs
    /// 1, 2, 3, … in the order the changes committed, with no gap and no repeat, however
    /// many processes write concurrently; events leave the log only through
    /// [`prune_events`](Self::prune_events), oldest first, and `seq` never restarts.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed.
    async fn events_after(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<EventPage, RepositoryError>;

    /// Deletes up to `limit` logged events that happened before `before` (the event
    /// log's retention) and returns how many it deleted. Later events, and every
    /// user's `seq` counter, are untouched.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed; nothing was deleted.
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, RepositoryError>;

    /// Claims up to `query.limit` stranded orders for the reconciler and returns their
    /// ids, oldest hand-out first. An order is stranded at `now` when its last hand-out
    /// — its placement, or its last claim by this method — is at or before `now -
    /// query.stale_after`, and it is Pending, or Processing with a lease that expired at
    /// or before `now`.
    ///
    /// Claiming stamps each returned order as handed out at `now`, atomically with the
    /// check: of several reconcilers calling at once, each order goes to exactly one,
    /// and it is not claimed again before another `stale_after` has passed. Claiming
    /// changes neither status nor lease.
    ///
    /// # Errors
    /// [`RepositoryError`] when the store failed; nothing was claimed.
    async fn claim_stranded(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, RepositoryError>;
}
