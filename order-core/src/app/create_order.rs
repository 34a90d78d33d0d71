//! The create use case: a raw request (as a client sent it) or a typed [`OrderDraft`] (as
//! a program holds it) becomes a placed order, its job enqueued and `order.created`
//! published — or a refusal with nothing written. Both entry points share one path after
//! validation, so they take the same locks in the same order and release them in one
//! place (`release`).

use tracing::warn;

use super::config::LockMode;
use super::errors::{CreateOrderError, ErrorChain, ValidationErrors};
use super::service::OrderService;
use super::stats::ServiceStats;
use crate::domain::{IdempotencyKey, Money, Order, OrderDraft, ProductId, Quantity, UserId};
use crate::ports::{Job, LockError, LockToken, OrderEvent, PlaceOutcome};
use crate::runtime::join;

/// The most lines one create request may send (counted before merging duplicates): the
/// domain's [`OrderDraft::MAX_LINES`].
pub const MAX_LINES: usize = OrderDraft::MAX_LINES;

/// One line of a create request as the caller sent it (unvalidated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedItem {
    /// The product id as sent.
    pub product_id: i64,
    /// The quantity as sent.
    pub quantity: i64,
}

/// A create request as the caller sent it; [`OrderService::create_order`] validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOrderRequest {
    /// The authenticated caller.
    pub user: UserId,
    /// Lines as sent (1..=50, duplicates allowed and merged).
    pub items: Vec<RequestedItem>,
    /// The caller's idempotency key as sent.
    pub idempotency_key: String,
}

impl CreateOrderRequest {
    /// A request for known products with quantities and a key still to be checked:
    /// `(product, quantity)` lines, validated by [`OrderService::create_order`] exactly
    /// like a client's (every field at fault listed). This is for programs that take
    /// quantities and keys from their own callers; one whose values are already typed
    /// builds an [`OrderDraft`] and calls [`OrderService::place_order`], which reads no
    /// integer twice. The product id goes through `i64` losslessly for every id a store
    /// hands out; one above `i64::MAX` is sent as `i64::MAX` and refused as unknown.
    pub fn new(
        user: UserId,
        items: impl IntoIterator<Item = (ProductId, u32)>,
        idempotency_key: impl Into<String>,
    ) -> Self {
        Self {
            user,
            items: items
                .into_iter()
                .map(|(product, quantity)| RequestedItem {
                    product_id: i64::try_from(product.get()).unwrap_or(i64::MAX),
                    quantity: i64::from(quantity),
                })
                .collect(),
            idempotency_key: idempotency_key.into(),
        }
    }

    /// Parses the request into an [`OrderDraft`], collecting every field at fault
    /// rather than stopping at the first: lines 1..=[`MAX_LINES`] as sent, each product
    /// id positive, each quantity within [`Quantity`]'s range, the key a valid
    /// [`IdempotencyKey`], and merged lines forming a valid draft.
    ///
    /// # Errors
    /// [`ValidationErrors`] keyed by field: `items`, `idempotency_key`,
    /// `items.{i}.product_id`, `items.{i}.quantity`.
    pub fn into_draft(self) -> Result<OrderDraft, ValidationErrors> {
        let Self {
            user,
            items: requested,
            idempotency_key,
        } = self;
        let mut errors = ValidationErrors::new();
        if requested.is_empty() {
            errors.add("items", "at least one item is required");
        }
        if requested.len() > MAX_LINES {
            errors.add(
                "items",
                format!(
                    "at most {MAX_LINES} items are allowed, got {}",
                    requested.len()
                ),
            );
        }
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|e| errors.add("idempotency_key", e.to_string()))
            .ok();
        let mut items = Vec::with_capacity(requested.len());
        for (i, item) in requested.iter().enumerate() {
            let product = ProductId::from_i64(item.product_id)
                .map_err(|e| errors.add(format!("items.{i}.product_id"), e.to_string()))
                .ok();
            let quantity = Quantity::new(item.quantity)
                .map_err(|e| errors.add(format!("items.{i}.quantity"), e.to_string()))
                .ok();
            if let (Some(p), Some(q)) = (product, quantity) {
                items.push((p, q));
            }
        }
        match key {
            Some(key) if errors.is_empty() => OrderDraft::new(user, items, key).map_err(|e| {
                errors.add("items", e.to_string());
                errors
            }),
            _ => Err(errors),
        }
    }
}

/// A created or replayed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedOrder {
    /// The order.
    pub order: Order,
    /// `true` when this is an earlier request's order returned again (HTTP 200 with
    /// `Idempotent-Replayed: true`), `false` when it was created now (201).
    pub replayed: bool,
}

/// What a create request locks, in this order: its idempotency key, then every product
/// ascending. Everyone takes them in this order, so two requests never wait on each
/// other in a cycle.
#[derive(Debug, Clone, Copy)]
enum LockTarget<'a> {
    Key(&'a OrderDraft),
    Product(ProductId),
}

impl LockTarget<'_> {
    /// The lock's name in the [`DistributedLock`].
    fn name(&self) -> String {
        match self {
            LockTarget::Key(d) => format!("idem:{}:{}", d.user(), d.idempotency_key()),
            LockTarget::Product(p) => format!("product:{p}"),
        }
    }
}

/// Locks held by one create request (released in reverse), and the target that stayed
/// busy through every attempt, if one did.
struct HeldLocks<'a> {
    names: Vec<String>,
    token: LockToken,
    busy: Option<LockTarget<'a>>,
}

impl OrderService {
    /// Validates a client's request, then replays, refuses or places the order,
    /// enqueues its job and publishes `order.created`. Every lock taken is released on
    /// every path. A program that already holds typed values calls
    /// [`OrderService::place_order`] instead; after validation both are the same path.
    ///
    /// # Errors
    /// [`CreateOrderError::Validation`] listing every field at fault (see
    /// [`CreateOrderRequest::into_draft`]); otherwise as [`OrderService::place_order`].
    /// On every error nothing was written.
    #[tracing::instrument(skip_all, fields(user = %request.user, lines = request.items.len()))]
    pub async fn create_order(
        &self,
        request: CreateOrderRequest,
    ) -> Result<CreatedOrder, CreateOrderError> {
        let draft = request.into_draft().map_err(CreateOrderError::Validation)?;
        self.create_from_draft(draft).await
    }

    /// Places an already validated `draft`: replays the key's earlier order if there is
    /// one (read first under distributed locks; answered by `place` itself under
    /// [`LockMode::None`]), else takes the key's and the products' locks (ascending),
    /// places the order,
    /// releases every lock, enqueues its job and publishes `order.created`. Nothing is
    /// re-parsed: a program with typed ids, quantities and key never goes through raw
    /// integers.
    ///
    /// # Errors
    /// See [`CreateOrderError`]: a business refusal (stock, unknown product or user, key
    /// reused or in flight, lock conflict, a total too large for [`Money`] as
    /// `Validation` on `items`) or a store failure. On every error nothing was written.
    #[tracing::instrument(skip_all, fields(user = %draft.user(), lines = draft.items().len()))]
    pub async fn place_order(&self, draft: OrderDraft) -> Result<CreatedOrder, CreateOrderError> {
        self.create_from_draft(draft).await
    }

    /// The one create path after validation, shared by both entry points (each of which
    /// opens its own span, so a request is traced once).
    async fn create_from_draft(&self, draft: OrderDraft) -> Result<CreatedOrder, CreateOrderError> {
        // The pre-read spares a replay the locks. Without locks there is nothing to
        // spare: `place` answers a replay (or a reused key) atomically, so the common
        // case — a new key — costs no read.
        if self.config.lock.mode != LockMode::None
            && let Some(found) = self.replay(&draft).await?
        {
            return Ok(found);
        }

        // No second lookup of the key after locking: if a request with our key commits
        // while we wait, `place` answers with its order (replay or key reuse) atomically.
        let locks = self.lock_for(&draft).await;
        let result = match locks.busy {
            None => self.commit(&draft).await,
            Some(LockTarget::Key(_)) => {
                // The request holding our key may have finished just now: replay if so.
                match self.replay(&draft).await {
                    Ok(Some(found)) => Ok((found, None)),
                    Ok(None) => Err(CreateOrderError::IdempotencyKeyInFlight),
                    Err(e) => Err(e),
                }
            }
            Some(LockTarget::Product(product)) => {
                ServiceStats::bump(&self.stats.lock_conflicts);
                Err(CreateOrderError::LockConflict { product })
            }
        };
        self.release(locks).await;

        match result {
            Ok((created, event)) => {
                if let Some(event) = event {
                    self.after_commit(&created.order, event).await;
                }
                Ok(created)
            }
            Err(e) => Err(e),
        }
    }

    /// The order an earlier request with `draft`'s key created, if any: a replay when its
    /// lines match, a refusal when the key was used for other lines.
    async fn replay(&self, draft: &OrderDraft) -> Result<Option<CreatedOrder>, CreateOrderError> {
        let found = self
            .ports
            .repository
            .find_by_key(draft.user(), draft.idempotency_key())
            .await?;
        match found {
            None => Ok(None),
            Some(order) if draft.same_lines_as(&order) => {
                ServiceStats::bump(&self.stats.replayed);
                Ok(Some(CreatedOrder {
                    order,
                    replayed: true,
                }))
            }
            Some(order) => Err(CreateOrderError::IdempotencyKeyReused {
                existing: order.id(),
            }),
        }
    }

    /// Places `draft` in the repository (the database guard decides stock and the
    /// idempotency record atomically) and maps its answer to the use case's result.
    /// A new order comes with the `order.created` event its placement logged.
    async fn commit(
        &self,
        draft: &OrderDraft,
    ) -> Result<(CreatedOrder, Option<OrderEvent>), CreateOrderError> {
        let now = self.ports.clock.now();
        let mut outcomes = self
            .ports
            .repository
            .place(std::slice::from_ref(draft), now)
            .await?;
        let outcome = match (outcomes.pop(), outcomes.is_empty()) {
            (Some(o), true) => o,
            _ => {
                return Err(CreateOrderError::Unexpected(anyhow::anyhow!(
                    "repository returned the wrong number of outcomes for one draft"
                )));
            }
        };
        match outcome {
            PlaceOutcome::Placed(order, event) => {
                ServiceStats::bump(&self.stats.created);
                Ok((
                    CreatedOrder {
                        order,
                        replayed: false,
                    },
                    Some(event),
                ))
            }
            PlaceOutcome::Replayed(order) => {
                ServiceStats::bump(&self.stats.replayed);
                Ok((
                    CreatedOrder {
                        order,
                        replayed: true,
                    },
                    None,
                ))
            }
            PlaceOutcome::KeyReused { existing } => {
                Err(CreateOrderError::IdempotencyKeyReused { existing })
            }
            PlaceOutcome::InsufficientStock {
                product,
                requested,
                available,
            } => {
                ServiceStats::bump(&self.stats.insufficient_stock);
                Err(CreateOrderError::InsufficientStock {
                    product,
                    requested,
                    available,
                })
            }
            PlaceOutcome::UnknownProduct(p) => Err(CreateOrderError::UnknownProduct(p)),
            PlaceOutcome::UnknownUser(u) => Err(CreateOrderError::UnknownUser(u)),
            PlaceOutcome::TotalTooLarge => {
                let mut errors = ValidationErrors::new();
                errors.add(
                    "items",
                    format!("the order total would exceed {}", Money::max()),
                );
                Err(CreateOrderError::Validation(errors))
            }
        }
    }

    /// Enqueue and announce a freshly committed order, side by side (two independent
    /// round trips: the request waits for the slower, not for both in turn). Neither may
    /// fail the request: the order exists. A failed enqueue is counted; the reconciler
    /// claims the order once it is `stale_after` old and enqueues it again.
    async fn after_commit(&self, order: &Order, created: OrderEvent) {
        crate::fail_point!("after_commit_before_enqueue", self.ports.clock);
        let enqueue = async {
            if let Err(e) = self
                .ports
                .queue
                .enqueue(Job::ProcessOrder(order.id()))
                .await
            {
                ServiceStats::bump(&self.stats.enqueue_failures);
                warn!(order = %order.id(), error = %ErrorChain(&e),
                    "order committed but its job was not enqueued; the reconciler will hand it out");
            }
        };
        join(enqueue, self.publish(created)).await;
    }

    /// Takes every lock of `draft` in [`LockTarget`] order, stopping at the first one that
    /// stays busy. With [`LockMode::None`], or when the lock service is down (fail open
    /// to the database guard, counted), it takes none.
    async fn lock_for<'a>(&self, draft: &'a OrderDraft) -> HeldLocks<'a> {
        let token = LockToken::new(format!(
            "{:016x}{:016x}",
            self.ports.rng.next_u64(),
            self.ports.rng.next_u64()
        ));
        let mut held = HeldLocks {
            names: Vec::new(),
            token,
            busy: None,
        };
        if self.config.lock.mode == LockMode::None {
            return held;
        }
        let targets = std::iter::once(LockTarget::Key(draft))
            .chain(draft.product_ids().map(LockTarget::Product));
        for target in targets {
            let name = target.name();
            match self.acquire_one(&name, &held.token).await {
                Ok(true) => held.names.push(name),
                Ok(false) => {
                    held.busy = Some(target);
                    break;
                }
                Err(e) => {
                    ServiceStats::bump(&self.stats.lock_fail_open);
                    warn!(error = %ErrorChain(&e), "lock service unavailable; falling back to the database guard");
                    break;
                }
            }
        }
        held
    }

    /// Tries one lock `policy.attempts` times with the policy's backoff between tries:
    /// `Ok(false)` when it stayed busy throughout.
    async fn acquire_one(&self, key: &str, token: &LockToken) -> Result<bool, LockError> {
        let policy = &self.config.lock;
        for attempt in 1..=policy.attempts {
            if self.ports.lock.try_acquire(key, token, policy.ttl).await? {
                return Ok(true);
            }
            if attempt < policy.attempts {
                ServiceStats::bump(&self.stats.lock_retries);
                self.ports
                    .clock
                    .sleep(policy.backoff.delay(attempt, &*self.ports.rng))
                    .await;
            }
        }
        Ok(false)
    }

    /// Releases every lock `held` names: the one place each lock a create request takes
    /// is given back, on every path.
    async fn release(&self, held: HeldLocks<'_>) {
        // Release in reverse order of acquisition; a failed release only delays others
        // until the TTL, so it is logged, never returned.
        for key in held.names.iter().rev() {
            if let Err(e) = self.ports.lock.release(key, &held.token).await {
                warn!(key, error = %ErrorChain(&e), "lock release failed; it will expire with its TTL");
            }
        }
    }
}
