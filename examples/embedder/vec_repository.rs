//! An embedder's own `OrderRepository`, written from scratch against `order-core`'s
//! public API only: a few `Vec`s behind one mutex, every method a linear scan. It is
//! what a team with their own store writes, and it is held to every promise of the port
//! by one line in the test suite (`tests/integration/user_repository.rs`):
//!
//! ```ignore
//! order_core::repository_contract!(fixture);
//! ```
// Ids come from counters starting at 1, which `UserId::new`/`ProductId::new` accept:
// their `expect`s cannot fire.
#![allow(clippy::expect_used)]

use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use order_engine::core::domain::{MAX_STOCK, OrderDraft, RestockError, StatusChange};
use order_engine::core::ports::{
    EventPage, ListFilter, OrderEvent, OrderPage, OrderRepository, PlaceOutcome, RepositoryError,
    StrandedQuery, TransitionOutcome,
};
use order_engine::core::{
    IdempotencyKey, Money, Order, OrderId, OrderStatus, Product, ProductId, Timestamp, UserId,
};

/// Orders and stock in plain vectors behind one mutex: every call is one atomic step.
#[derive(Debug, Default)]
pub(crate) struct VecRepository {
    store: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    users: Vec<UserId>,
    /// Ascending by id: ids are handed out in order and appended.
    products: Vec<Product>,
    /// Ascending by id, as above.
    orders: Vec<Order>,
    /// `(order, when the reconciler last claimed it)`.
    claims: Vec<(OrderId, Timestamp)>,
    /// Every user's event log, in commit order (so each user's seqs ascend).
    events: Vec<OrderEvent>,
    /// `(user, latest seq)`: pruning never lowers it.
    last_seqs: Vec<(UserId, u64)>,
}

fn is_open(order: &Order) -> bool {
    matches!(
        order.status(),
        OrderStatus::Pending | OrderStatus::Processing
    )
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl VecRepository {
    fn store(&self) -> MutexGuard<'_, Store> {
        // No critical section below panics half-way through a write.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a user (ids 1, 2, 3, …).
    pub(crate) fn add_user(&self) -> UserId {
        let mut store = self.store();
        let id = UserId::new(store.users.len() as u64 + 1).expect("user id");
        store.users.push(id);
        id
    }

    /// Adds a product with a price and stock (ids 1, 2, 3, …).
    pub(crate) fn add_product(&self, price: Money, stock: u64) -> ProductId {
        let mut store = self.store();
        let id = ProductId::new(store.products.len() as u64 + 1).expect("product id");
        store.products.push(Product {
            id,
            name: format!("Product {id}"),
            price,
            stock,
        });
        id
    }

    /// A product's stock, if it exists.
    pub(crate) fn stock(&self, product: ProductId) -> Option<u64> {
        self.store().product(product).map(|p| p.stock)
    }

    /// Stock plus the units reserved by open orders plus `units` stays within
    /// [`MAX_STOCK`], or nothing changes.
    pub(crate) fn restock(&self, product: ProductId, units: u64) -> Result<(), RestockError> {
        let mut store = self.store();
        let reserved: u64 = store
            .orders
            .iter()
            .filter(|o| is_open(o))
            .flat_map(Order::lines)
            .filter(|l| l.product == product)
            .map(|l| u64::from(l.quantity.get()))
            .sum();
        let p = store
            .product_mut(product)
            .ok_or(RestockError::UnknownProduct(product))?;
        match p
            .stock
            .checked_add(reserved)
            .and_then(|t| t.checked_add(units))
        {
            Some(total) if total <= MAX_STOCK => {
                p.stock += units;
                Ok(())
            }
            _ => Err(RestockError::AboveMaximum {
                product,
                max: MAX_STOCK,
            }),
        }
    }
}

impl Store {
    fn product(&self, id: ProductId) -> Option<&Product> {
        self.products.iter().find(|p| p.id == id)
    }

    fn product_mut(&mut self, id: ProductId) -> Option<&mut Product> {
        self.products.iter_mut().find(|p| p.id == id)
    }

    /// Appends the event recording `order`'s status under its owner's next seq.
    fn log(&mut self, order: &Order) -> OrderEvent {
        let user = order.user();
        let seq = match self.last_seqs.iter_mut().find(|(u, _)| *u == user) {
            Some((_, last)) => {
                *last += 1;
                *last
            }
            None => {
                self.last_seqs.push((user, 1));
                1
            }
        };
        let event = OrderEvent::logged(order, seq);
        self.events.push(event.clone());
        event
    }

    fn order_by_key(&self, user: UserId, key: &IdempotencyKey) -> Option<&Order> {
        self.orders
            .iter()
            .find(|o| o.user() == user && o.idempotency_key() == key)
    }

    /// One draft, decided and written in one step.
    fn place_one(&mut self, draft: &OrderDraft, now: Timestamp) -> PlaceOutcome {
        if let Some(existing) = self.order_by_key(draft.user(), draft.idempotency_key()) {
            return if draft.same_lines_as(existing) {
                PlaceOutcome::Replayed(existing.clone())
            } else {
                PlaceOutcome::KeyReused {
                    existing: existing.id(),
                }
            };
        }
        if !self.users.contains(&draft.user()) {
            return PlaceOutcome::UnknownUser(draft.user());
        }
        // The draft keeps its products ascending by id: the first missing or short one
        // decides.
        let mut prices = Vec::new();
        for (product, quantity) in draft.items() {
            let Some(p) = self.product(*product) else {
                return PlaceOutcome::UnknownProduct(*product);
            };
            if u64::from(quantity.get()) > p.stock {
                return PlaceOutcome::InsufficientStock {
                    product: *product,
                    requested: quantity.get(),
                    available: p.stock,
                };
            }
            prices.push(p.price);
        }
        let id = OrderId::new(self.orders.len() as u64 + 1).expect("order id");
        let Ok(order) = Order::place(id, draft, &prices, now) else {
            return PlaceOutcome::TotalTooLarge;
        };
        for (product, quantity) in draft.items() {
            if let Some(p) = self.product_mut(*product) {
                p.stock -= u64::from(quantity.get());
            }
        }
        self.orders.push(order.clone());
        let event = self.log(&order);
        PlaceOutcome::Placed(order, event)
    }
}

#[async_trait]
impl OrderRepository for VecRepository {
    async fn place(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        let mut store = self.store();
        Ok(drafts.iter().map(|d| store.place_one(d, now)).collect())
    }

    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        let mut store = self.store();
        let Some(current) = store.orders.iter().find(|o| o.id() == id).cloned() else {
            return Ok(TransitionOutcome::NotFound);
        };
        let mut updated = current.clone();
        if updated.apply(&change, now).is_err() {
            return Ok(TransitionOutcome::LostRace(current));
        }
        if change.returns_stock() {
            for line in updated.lines() {
                if let Some(p) = store.product_mut(line.product) {
                    p.stock += u64::from(line.quantity.get());
                }
            }
        }
        if let Some(slot) = store.orders.iter_mut().find(|o| o.id() == id) {
            *slot = updated.clone();
        }
        let event = (change.from() != change.to()).then(|| store.log(&updated));
        Ok(TransitionOutcome::Applied(updated, event))
    }

    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError> {
        Ok(self.store().orders.iter().find(|o| o.id() == id).cloned())
    }

    async fn find_by_key(
        &self,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError> {
        Ok(self.store().order_by_key(user, key).cloned())
    }

    async fn list_by_user(
        &self,
        user: UserId,
        filter: ListFilter,
    ) -> Result<OrderPage, RepositoryError> {
        let store = self.store();
        let mut mine: Vec<&Order> = store
            .orders
            .iter()
            .filter(|o| o.user() == user && filter.status.is_none_or(|s| o.status() == s))
            .collect();
        mine.sort_by_key(|o| std::cmp::Reverse((o.created_at(), o.id())));
        let per_page = filter.per_page as usize;
        let skip = (filter.page.max(1) as usize - 1).saturating_mul(per_page);
        Ok(OrderPage {
            total: mine.len() as u64,
            orders: mine
                .into_iter()
                .skip(skip)
                .take(per_page)
                .cloned()
                .collect(),
        })
    }

    async fn products(&self) -> Result<Vec<Product>, RepositoryError> {
        Ok(self.store().products.clone())
    }

    async fn events_after(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<EventPage, RepositoryError> {
        let store = self.store();
        Ok(EventPage {
            events: store
                .events
                .iter()
                .filter(|e| e.user == user && e.seq > after)
                .take(limit as usize)
                .cloned()
                .collect(),
            last_seq: store
                .last_seqs
                .iter()
                .find(|(u, _)| *u == user)
                .map_or(0, |(_, last)| *last),
        })
    }

    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, RepositoryError> {
        let mut store = self.store();
        let mut deleted = 0u64;
        store.events.retain(|e| {
            let prune = deleted < u64::from(limit) && e.at < before;
            deleted += u64::from(prune);
            !prune
        });
        Ok(deleted)
    }

    async fn claim_stranded(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, RepositoryError> {
        let mut store = self.store();
        let cutoff = now.as_millis().saturating_sub(millis(query.stale_after));
        let mut stranded: Vec<(Timestamp, OrderId)> = store
            .orders
            .iter()
            .filter(|o| match o.status() {
                OrderStatus::Pending => true,
                OrderStatus::Processing => o.lease().is_none_or(|l| l.until <= now),
                OrderStatus::Paid | OrderStatus::Failed | OrderStatus::Cancelled => false,
            })
            .map(|o| {
                let last = store
                    .claims
                    .iter()
                    .find(|(id, _)| *id == o.id())
                    .map_or(o.created_at(), |(_, at)| *at);
                (last, o.id())
            })
            .filter(|(last, _)| last.as_millis() <= cutoff)
            .collect();
        stranded.sort();
        stranded.truncate(query.limit as usize);
        let claimed: Vec<OrderId> = stranded.into_iter().map(|(_, id)| id).collect();
        store.claims.retain(|(id, _)| !claimed.contains(id));
        store.claims.extend(claimed.iter().map(|id| (*id, now)));
        Ok(claimed)
    }
}
