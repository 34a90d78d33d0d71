//! [`MemoryOrderRepository`]: the [`OrderRepository`] port in one process.
//!
//! All state (users, products with stock, orders, the idempotency index) sits behind a
//! single mutex, so every `place` draft and every `transition` is one atomic step — the
//! in-memory counterpart of one database transaction. It keeps every promise the port
//! makes (stock allotted in arrival order, replays, compare-and-set transitions that
//! return stock exactly once) so that it can serve as the reference the MySQL adapter is
//! checked against, and as the store of the embedded single-process server.
//!
//! Besides the port, it has a small seeding and inspection API (`add_user`,
//! `add_product`, `restock`, `stock`, `orders`) for wiring and tests; users are just ids
//! here (names, e-mails and credentials belong to whoever authenticates).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use order_core::domain::{IdError, MAX_STOCK, OrderDraft, RestockError, StatusChange};
use order_core::ports::{
    EventPage, ListFilter, OrderEvent, OrderPage, OrderRepository, PlaceOutcome, RepositoryError,
    StrandedQuery, TransitionOutcome,
};
use order_core::{
    IdempotencyKey, Money, Order, OrderId, OrderStatus, Product, ProductId, Timestamp, UserId,
};

/// Orders and stock in memory, changed atomically.
///
/// Each draft of [`OrderRepository::place`] and each [`OrderRepository::transition`] is
/// one atomic step under a single mutex, the counterpart of one database transaction.
/// Users are bare ids; products and users are added with [`add_user`](Self::add_user)
/// and [`add_product`](Self::add_product).
#[derive(Debug, Default)]
pub struct MemoryOrderRepository {
    // A std mutex rather than `tokio::sync::Mutex`: every critical section is a short,
    // purely in-memory computation that is never held across an `.await`, so it cannot
    // stall the executor, and a std mutex is much cheaper to take. One mutex around the
    // whole state (rather than one per product) makes each draft and transition atomic
    // without any lock ordering to get wrong.
    state: Mutex<State>,
}

/// Everything the repository stores.
#[derive(Debug, Default)]
struct State {
    users: HashSet<UserId>,
    products: BTreeMap<ProductId, Product>,
    orders: HashMap<OrderId, Order>,
    /// Each user's orders by id, so listing does not scan every order.
    by_user: HashMap<UserId, Vec<OrderId>>,
    keys: HashMap<(UserId, IdempotencyKey), OrderId>,
    /// Orders still Pending or Processing: the reconciler's and the restock limit's
    /// working set, so neither scans finished orders.
    open: BTreeSet<OrderId>,
    /// When the reconciler last claimed an order (its placement counts as the first
    /// hand-out, so an order is only here once claimed).
    handed_out: HashMap<OrderId, Timestamp>,
    /// Each user's event log (what is left of it after pruning) and latest seq.
    logs: HashMap<UserId, EventLog>,
    last_user: u64,
    last_product: u64,
    last_order: u64,
}

/// One user's event log: the retained events in seq order, and the latest seq (which
/// pruning never lowers).
#[derive(Debug, Default)]
struct EventLog {
    events: VecDeque<OrderEvent>,
    last_seq: u64,
}

impl EventLog {
    /// Appends the event recording `order`'s current status under the next seq.
    fn append(&mut self, order: &Order) -> OrderEvent {
        self.last_seq += 1;
        let event = OrderEvent::logged(order, self.last_seq);
        self.events.push_back(event.clone());
        event
    }
}

/// What one `place` call will write, decided before anything is written.
#[derive(Default)]
struct Plan {
    /// Units reserved per product by the drafts placed so far in this call.
    taken: HashMap<ProductId, u64>,
    /// Orders to insert, in id order.
    orders: Vec<Order>,
    /// Keys claimed by `orders` (index into it), so a second draft with the same key in
    /// one batch replays the first.
    keys: HashMap<(UserId, IdempotencyKey), usize>,
    /// The `order.created` events of `orders`, with the seqs they will have.
    events: Vec<OrderEvent>,
    /// Each user's latest seq as this call will leave it.
    last_seq: HashMap<UserId, u64>,
    last_order: u64,
}

/// The next id from a counter holding the last one handed out. Counters start at 0, so
/// the first id is 1; the loop only ever skips the single invalid value, 0, which would
/// take 2^64 allocations to reach.
fn allocate<T>(last: &mut u64, make: impl Fn(u64) -> Result<T, IdError>) -> T {
    loop {
        *last = last.wrapping_add(1);
        if let Ok(id) = make(*last) {
            return id;
        }
    }
}

fn unexpected(message: String) -> RepositoryError {
    RepositoryError::Unexpected(anyhow::Error::msg(message))
}

impl MemoryOrderRepository {
    /// An empty store: no users, no products, no orders.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a new user and returns its id (1, 2, 3, … in call order).
    pub fn add_user(&self) -> UserId {
        let mut state = self.guard();
        let id = allocate(&mut state.last_user, UserId::new);
        state.users.insert(id);
        id
    }

    /// Adds a product with its unit price and initial stock and returns its id (1, 2, 3,
    /// … in call order).
    pub fn add_product(&self, name: impl Into<String>, price: Money, stock: u64) -> ProductId {
        let mut state = self.guard();
        let id = allocate(&mut state.last_product, ProductId::new);
        state.products.insert(
            id,
            Product {
                id,
                name: name.into(),
                price,
                stock,
            },
        );
        id
    }

    /// Adds `units` to a product's stock, within the engine's one limit: stock plus the
    /// units reserved by Pending and Processing orders plus `units` may not exceed
    /// [`MAX_STOCK`], so returning those reservations can never overflow.
    ///
    /// # Errors
    /// [`RestockError::UnknownProduct`] when it does not exist;
    /// [`RestockError::AboveMaximum`] past the limit. Nothing changes on error.
    pub fn restock(&self, product: ProductId, units: u64) -> Result<(), RestockError> {
        let mut state = self.guard();
        let reserved = state.reserved(product);
        let p = state
            .products
            .get_mut(&product)
            .ok_or(RestockError::UnknownProduct(product))?;
        let total = p
            .stock
            .checked_add(reserved)
            .and_then(|t| t.checked_add(units));
        match total {
            Some(t) if t <= MAX_STOCK => {
                p.stock += units;
                Ok(())
            }
            _ => Err(RestockError::AboveMaximum {
                product,
                max: MAX_STOCK,
            }),
        }
    }

    /// A product's current stock, or `None` when it does not exist.
    pub fn stock(&self, product: ProductId) -> Option<u64> {
        self.guard().products.get(&product).map(|p| p.stock)
    }

    /// Every order, ascending by id (a snapshot, for tests and invariant checks).
    pub fn orders(&self) -> Vec<Order> {
        let state = self.guard();
        let mut orders: Vec<Order> = state.orders.values().cloned().collect();
        orders.sort_by_key(Order::id);
        orders
    }

    /// Every event left in the log, by user then seq (a snapshot, for tests and
    /// invariant checks).
    pub fn events(&self) -> Vec<OrderEvent> {
        let state = self.guard();
        let mut events: Vec<OrderEvent> = state
            .logs
            .values()
            .flat_map(|log| log.events.iter().cloned())
            .collect();
        events.sort_by_key(|e| (e.user, e.seq));
        events
    }

    fn guard(&self) -> MutexGuard<'_, State> {
        // A poisoned mutex means a thread panicked while holding it. Every critical
        // section decides everything that can fail before its first write and then only
        // performs writes that cannot fail (a failed allocation aborts rather than
        // unwinds), so a panic never leaves a half-applied change: the state is
        // consistent and safe to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Units of `product` held by Pending and Processing orders.
    fn reserved(&self, product: ProductId) -> u64 {
        self.open
            .iter()
            .filter_map(|id| self.orders.get(id))
            .flat_map(Order::lines)
            .filter(|l| l.product == product)
            .map(|l| u64::from(l.quantity.get()))
            .sum()
    }

    /// See [`OrderRepository::claim_stranded`].
    fn claim_stranded(&mut self, query: StrandedQuery, now: Timestamp) -> Vec<OrderId> {
        let cutoff = Timestamp::from_millis(
            now.as_millis()
                .saturating_sub(u64::try_from(query.stale_after.as_millis()).unwrap_or(u64::MAX)),
        );
        let mut stranded: Vec<(Timestamp, OrderId)> = self
            .open
            .iter()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| match (o.status(), o.lease()) {
                (OrderStatus::Pending, _) => true,
                (OrderStatus::Processing, Some(lease)) => lease.until <= now,
                (OrderStatus::Processing, None) => true,
                (OrderStatus::Paid | OrderStatus::Failed | OrderStatus::Cancelled, _) => false,
            })
            .map(|o| {
                let last = self.handed_out.get(&o.id()).copied();
                (last.unwrap_or(o.created_at()), o.id())
            })
            .filter(|(last, _)| *last <= cutoff)
            .collect();
        stranded.sort_unstable();
        stranded.truncate(usize::try_from(query.limit).unwrap_or(usize::MAX));
        stranded
            .into_iter()
            .map(|(_, id)| {
                self.handed_out.insert(id, now);
                id
            })
            .collect()
    }

    fn place(
        &mut self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        let mut plan = Plan {
            last_order: self.last_order,
            ..Plan::default()
        };
        let mut outcomes = Vec::with_capacity(drafts.len());
        for draft in drafts {
            outcomes.push(self.decide(draft, now, &mut plan)?);
        }
        self.commit(plan);
        Ok(outcomes)
    }

    /// Decides one draft against the stored state plus what earlier drafts of the same
    /// call will write. Writes nothing.
    fn decide(
        &self,
        draft: &OrderDraft,
        now: Timestamp,
        plan: &mut Plan,
    ) -> Result<PlaceOutcome, RepositoryError> {
        let key = (draft.user(), draft.idempotency_key().clone());
        let holder = match self.keys.get(&key) {
            Some(id) => self.orders.get(id),
            None => plan.keys.get(&key).and_then(|i| plan.orders.get(*i)),
        };
        if let Some(existing) = holder {
            return Ok(if draft.same_lines_as(existing) {
                PlaceOutcome::Replayed(existing.clone())
            } else {
                PlaceOutcome::KeyReused {
                    existing: existing.id(),
                }
            });
        }
        if !self.users.contains(&draft.user()) {
            return Ok(PlaceOutcome::UnknownUser(draft.user()));
        }
        // Products in ascending id order (the draft keeps them so), as the database
        // adapter locks its rows: the first missing or short product decides.
        let mut prices = Vec::with_capacity(draft.items().len());
        for (product, quantity) in draft.items() {
            let Some(stored) = self.products.get(product) else {
                return Ok(PlaceOutcome::UnknownProduct(*product));
            };
            let taken = plan.taken.get(product).copied().unwrap_or(0);
            let available = stored.stock.saturating_sub(taken);
            if u64::from(quantity.get()) > available {
                return Ok(PlaceOutcome::InsufficientStock {
                    product: *product,
                    requested: quantity.get(),
                    available,
                });
            }
            prices.push(stored.price);
        }
        // Check the total before taking an id: an overflow refuses this draft only.
        if draft.total_at(&prices).is_err() {
            return Ok(PlaceOutcome::TotalTooLarge);
        }
        let id = allocate(&mut plan.last_order, OrderId::new);
        let order = Order::place(id, draft, &prices, now).map_err(|e| {
            unexpected(format!(
                "order for user {} with key {}: {e}",
                draft.user(),
                draft.idempotency_key()
            ))
        })?;
        for (product, quantity) in draft.items() {
            // Bounded by the product's stock (checked above), so this cannot overflow.
            *plan.taken.entry(*product).or_default() += u64::from(quantity.get());
        }
        plan.keys.insert(key, plan.orders.len());
        plan.orders.push(order.clone());
        let seq = plan
            .last_seq
            .entry(draft.user())
            .or_insert_with(|| self.logs.get(&draft.user()).map_or(0, |log| log.last_seq));
        *seq += 1;
        let event = OrderEvent::logged(&order, *seq);
        plan.events.push(event.clone());
        Ok(PlaceOutcome::Placed(order, event))
    }

    /// Writes a plan. Nothing here can fail: every check happened in `decide`.
    fn commit(&mut self, plan: Plan) {
        for (product, units) in plan.taken {
            if let Some(p) = self.products.get_mut(&product) {
                p.stock = p.stock.saturating_sub(units);
            }
        }
        for order in plan.orders {
            self.keys
                .insert((order.user(), order.idempotency_key().clone()), order.id());
            self.by_user
                .entry(order.user())
                .or_default()
                .push(order.id());
            self.open.insert(order.id());
            self.orders.insert(order.id(), order);
        }
        for event in plan.events {
            let log = self.logs.entry(event.user).or_default();
            log.last_seq = event.seq;
            log.events.push_back(event);
        }
        self.last_order = plan.last_order;
    }

    fn events_after(&self, user: UserId, after: u64, limit: u32) -> EventPage {
        let Some(log) = self.logs.get(&user) else {
            return EventPage {
                events: Vec::new(),
                last_seq: 0,
            };
        };
        // Seqs are consecutive from the front's, so the first wanted index is direct.
        let first = log.events.front().map_or(0, |e| e.seq);
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        EventPage {
            events: log
                .events
                .iter()
                .skip(skip)
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .cloned()
                .collect(),
            last_seq: log.last_seq,
        }
    }

    fn prune_events(&mut self, before: Timestamp, limit: u32) -> u64 {
        let mut left = u64::from(limit);
        for log in self.logs.values_mut() {
            let kept = log.events.len();
            let mut budget = left;
            log.events.retain(|e| {
                if budget > 0 && e.at < before {
                    budget -= 1;
                    false
                } else {
                    true
                }
            });
            left -= (kept - log.events.len()) as u64;
            if left == 0 {
                break;
            }
        }
        u64::from(limit) - left
    }

    fn transition(
        &mut self,
        id: OrderId,
        change: &StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        let Some(current) = self.orders.get(&id) else {
            return Ok(TransitionOutcome::NotFound);
        };
        let mut updated = current.clone();
        if updated.apply(change, now).is_err() {
            return Ok(TransitionOutcome::LostRace(current.clone()));
        }
        let mut restored = Vec::new();
        if change.returns_stock() {
            for line in updated.lines() {
                let stock = self
                    .products
                    .get(&line.product)
                    .ok_or_else(|| {
                        unexpected(format!("order {id} holds missing product {}", line.product))
                    })?
                    .stock
                    .checked_add(u64::from(line.quantity.get()))
                    .ok_or_else(|| {
                        unexpected(format!(
                            "returning order {id}'s stock overflows product {}",
                            line.product
                        ))
                    })?;
                restored.push((line.product, stock));
            }
        }
        for (product, stock) in restored {
            if let Some(p) = self.products.get_mut(&product) {
                p.stock = stock;
            }
        }
        if matches!(
            updated.status(),
            OrderStatus::Paid | OrderStatus::Failed | OrderStatus::Cancelled
        ) {
            self.open.remove(&id);
            self.handed_out.remove(&id);
        }
        let event = (change.from() != change.to()).then(|| {
            self.logs
                .entry(updated.user())
                .or_default()
                .append(&updated)
        });
        self.orders.insert(id, updated.clone());
        Ok(TransitionOutcome::Applied(updated, event))
    }

    fn list_by_user(&self, user: UserId, filter: ListFilter) -> OrderPage {
        let mut matching: Vec<&Order> = self
            .by_user
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| filter.status.is_none_or(|s| o.status() == s))
            .collect();
        matching.sort_by(|a, b| {
            b.created_at()
                .cmp(&a.created_at())
                .then_with(|| b.id().cmp(&a.id()))
        });
        let per_page = usize::try_from(filter.per_page).unwrap_or(usize::MAX);
        let skip = usize::try_from(filter.page.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .saturating_mul(per_page);
        OrderPage {
            total: matching.len() as u64,
            orders: matching
                .into_iter()
                .skip(skip)
                .take(per_page)
                .cloned()
                .collect(),
        }
    }
}

#[async_trait]
impl OrderRepository for MemoryOrderRepository {
    /// Places each draft atomically, in arrival order; see the port. A second draft with
    /// the same (user, key) in one call replays (or refuses) the first.
    ///
    /// # Errors
    /// [`RepositoryError::Unexpected`] when a draft that would be placed has a total
    /// above [`Money::max`]; every draft is decided before anything is written, so the
    /// whole call then writes nothing.
    async fn place(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        self.guard().place(drafts, now)
    }

    /// Compare-and-set exactly as [`Order::apply`]; Cancel and Fail put every line's
    /// quantity back in the same step, so stock is returned once however many race.
    ///
    /// # Errors
    /// [`RepositoryError::Unexpected`] when returning stock is impossible (a product
    /// vanished or its stock would overflow `u64`); nothing is written.
    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        self.guard().transition(id, &change, now)
    }

    /// # Errors
    /// Never.
    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError> {
        Ok(self.guard().orders.get(&id).cloned())
    }

    /// # Errors
    /// Never.
    async fn find_by_key(
        &self,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError> {
        let state = self.guard();
        Ok(state
            .keys
            .get(&(user, key.clone()))
            .and_then(|id| state.orders.get(id))
            .cloned())
    }

    /// Newest first (creation time, then id, both descending). Page 0 reads as page 1;
    /// `per_page` 0 gives an empty page with the right total.
    ///
    /// # Errors
    /// Never.
    async fn list_by_user(
        &self,
        user: UserId,
        filter: ListFilter,
    ) -> Result<OrderPage, RepositoryError> {
        Ok(self.guard().list_by_user(user, filter))
    }

    /// # Errors
    /// Never.
    /// Claims under the one mutex, so concurrent reconcilers get disjoint orders.
    ///
    /// # Errors
    /// Never: the store is in memory.
    async fn claim_stranded(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, RepositoryError> {
        Ok(self.guard().claim_stranded(query, now))
    }

    async fn products(&self) -> Result<Vec<Product>, RepositoryError> {
        Ok(self.guard().products.values().cloned().collect())
    }

    /// Reads the user's log under the mutex: the events appended by every committed
    /// change, in seq order.
    ///
    /// # Errors
    /// Never.
    async fn events_after(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<EventPage, RepositoryError> {
        Ok(self.guard().events_after(user, after, limit))
    }

    /// # Errors
    /// Never.
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, RepositoryError> {
        Ok(self.guard().prune_events(before, limit))
    }
}

#[cfg(test)]
mod tests;
