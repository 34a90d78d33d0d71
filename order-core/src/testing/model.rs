//! The reference model of the order state machine, and a driver that runs generated
//! commands against a real [`OrderService`] and checks it against the model after every
//! step.
//!
//! The model is deliberately naive — plain vectors and integers in cents — so that it is
//! obviously right. After every command the driver checks: each command's outcome
//! matches the model; every order's status, lines and total match; every observed status
//! change is one of the four legal transitions (so terminal states are absorbing); stock
//! matches the model and is conserved (`initial = current + Σ quantities held by
//! Pending/Processing/Paid orders`); and no order was charged more than once.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::scripted::{PaymentStep, ScriptedGateway};
use crate::app::{
    CancelOrderError, CreateOrderError, CreateOrderRequest, OrderService, ProcessOutcome,
};
use crate::domain::{
    Lease, LeaseToken, Money, OrderId, OrderStatus, ProductId, StatusChange, UserId,
};
use crate::ports::{PaymentOutcome, TransitionOutcome};

/// The shop the model starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// How many users exist.
    pub users: usize,
    /// Products as (unit price, initial stock).
    pub products: Vec<(Money, u64)>,
}

/// One step of a scenario. Order indices are taken modulo the number of orders created
/// so far (a command naming an order when none exists does nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `user` creates an order for `items` (product index, quantity) with key `key-{key}`.
    Create {
        /// User index.
        user: usize,
        /// (product index, quantity) as sent; duplicates allowed.
        items: Vec<(usize, u32)>,
        /// Small key space so replays and key reuse happen.
        key: u8,
    },
    /// A worker runs `process_order` (a first delivery or a redelivery); the provider
    /// follows `payment` (then approves).
    Process {
        /// Order index.
        order: usize,
        /// The provider's script for this order's charges.
        payment: Vec<PaymentStep>,
    },
    /// `user` cancels an order (maybe someone else's).
    Cancel {
        /// User index.
        user: usize,
        /// Order index.
        order: usize,
    },
    /// A worker takes the processing lease of a Pending order and stalls (as if paused
    /// or killed) before charging.
    StallAfterStart {
        /// Order index.
        order: usize,
    },
    /// Time passes beyond the lease duration: every lease expires.
    ExpireLeases,
    /// The stalled worker of an order wakes up, charges, and tries to complete with its
    /// old lease (it must be fenced off if its lease was taken over).
    LateCompletion {
        /// Order index.
        order: usize,
        /// What the provider does on this call.
        payment: PaymentStep,
    },
}

/// The environment the driver needs besides the service: seeding, stock and time.
#[async_trait]
pub trait World: Send + Sync {
    /// Creates the users and products of `config`; products' ids must ascend with their
    /// index.
    async fn seed(&self, config: &ModelConfig) -> (Vec<UserId>, Vec<ProductId>);
    /// The product's stock as stored.
    async fn stock(&self, product: ProductId) -> u64;
    /// Moves the service's clock forward by `d`.
    fn advance(&self, d: Duration);
}

#[derive(Debug, Clone)]
struct ModelOrder {
    id: OrderId,
    user: usize,
    /// Merged (product index, quantity), ascending.
    items: Vec<(usize, u32)>,
    key: u8,
    status: OrderStatus,
    lease: Option<(LeaseToken, u64)>,
    total_cents: u64,
}

/// The reference model: shop state in plain integers.
#[derive(Debug, Clone)]
pub struct ReferenceModel {
    prices: Vec<u64>,
    initial: Vec<u64>,
    stock: Vec<u64>,
    orders: Vec<ModelOrder>,
    recorded: HashMap<OrderId, bool>,
    stalled: HashMap<OrderId, LeaseToken>,
}

/// What a scenario did, for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Commands executed (including no-ops).
    pub steps: usize,
    /// Orders placed.
    pub placed: usize,
    /// Orders that ended Paid.
    pub paid: usize,
    /// Orders that ended Failed.
    pub failed: usize,
    /// Orders that ended Cancelled.
    pub cancelled: usize,
    /// Late completions that were fenced off.
    pub fenced: usize,
}

impl ReferenceModel {
    /// The model of a fresh shop.
    pub fn new(config: &ModelConfig) -> Self {
        Self {
            prices: config.products.iter().map(|(p, _)| p.cents()).collect(),
            initial: config.products.iter().map(|(_, s)| *s).collect(),
            stock: config.products.iter().map(|(_, s)| *s).collect(),
            orders: Vec::new(),
            recorded: HashMap::new(),
            stalled: HashMap::new(),
        }
    }

    fn merge(items: &[(usize, u32)]) -> Vec<(usize, u32)> {
        let mut merged: Vec<(usize, u32)> = Vec::new();
        let mut sorted = items.to_vec();
        sorted.sort_by_key(|(p, _)| *p);
        for (p, q) in sorted {
            match merged.last_mut() {
                Some((lp, lq)) if *lp == p => *lq += q,
                _ => merged.push((p, q)),
            }
        }
        merged
    }

    fn pick(&self, index: usize) -> Option<usize> {
        (!self.orders.is_empty()).then(|| index % self.orders.len())
    }

    fn return_stock(&mut self, i: usize) {
        for (p, q) in self.orders[i].items.clone() {
            self.stock[p] += u64::from(q);
        }
    }

    /// Checks stock conservation and that every held reservation is accounted for.
    ///
    /// # Errors
    /// A description of the first product whose books do not balance.
    pub fn check_conservation(&self) -> Result<(), String> {
        for p in 0..self.stock.len() {
            let held: u64 = self
                .orders
                .iter()
                .filter(|o| o.status.holds_stock())
                .flat_map(|o| o.items.iter())
                .filter(|(ip, _)| *ip == p)
                .map(|(_, q)| u64::from(*q))
                .sum();
            if self.initial[p] != self.stock[p] + held {
                return Err(format!(
                    "model: product #{p}: initial {} != stock {} + held {held}",
                    self.initial[p], self.stock[p]
                ));
            }
        }
        Ok(())
    }
}

/// Runs `commands` against `service` (which must be wired to `gateway` and to the
/// world's clock and repository) and checks it against the reference model after every
/// step.
///
/// # Errors
/// A precise description of the first divergence: the step, the command, what the model
/// expected and what the service did.
pub async fn run_commands(
    service: &OrderService,
    world: &dyn World,
    gateway: &ScriptedGateway,
    config: &ModelConfig,
    commands: &[Command],
) -> Result<RunReport, String> {
    let (users, products) = world.seed(config).await;
    if users.len() != config.users || products.len() != config.products.len() {
        return Err("world.seed returned the wrong number of ids".into());
    }
    let mut model = ReferenceModel::new(config);
    let mut report = RunReport::default();
    let mut next_token = 0xA11C_E000_0000_0000u64;
    let mut seen: HashMap<OrderId, OrderStatus> = HashMap::new();
    for (step, command) in commands.iter().enumerate() {
        report.steps += 1;
        let ctx = |msg: String| format!("step {step} {command:?}: {msg}");
        match command {
            Command::Create { user, items, key } => {
                let request = CreateOrderRequest::new(
                    users[*user],
                    items.iter().map(|(p, q)| (products[*p], *q)),
                    format!("key-{key}"),
                );
                let merged = ReferenceModel::merge(items);
                let got = service.create_order(request).await;
                let existing = model
                    .orders
                    .iter()
                    .position(|o| o.user == *user && o.key == *key);
                match (existing, got) {
                    (Some(i), Ok(c)) if model.orders[i].items == merged => {
                        if !c.replayed || c.order.id() != model.orders[i].id {
                            return Err(ctx(format!(
                                "expected replay of {}, got {c:?}",
                                model.orders[i].id
                            )));
                        }
                    }
                    (Some(i), Err(CreateOrderError::IdempotencyKeyReused { existing }))
                        if model.orders[i].items != merged && existing == model.orders[i].id => {}
                    (Some(i), other) => {
                        return Err(ctx(format!(
                            "expected replay/reuse of {}, got {other:?}",
                            model.orders[i].id
                        )));
                    }
                    (None, got) => {
                        let short = merged
                            .iter()
                            .find(|(p, q)| model.stock[*p] < u64::from(*q))
                            .copied();
                        match (short, got) {
                            (
                                Some((p, q)),
                                Err(CreateOrderError::InsufficientStock {
                                    product,
                                    requested,
                                    available,
                                }),
                            ) if product == products[p]
                                && requested == q
                                && available == model.stock[p] => {}
                            (None, Ok(c)) if !c.replayed => {
                                let total: u64 = merged
                                    .iter()
                                    .map(|(p, q)| model.prices[*p] * u64::from(*q))
                                    .sum();
                                if c.order.total().cents() != total
                                    || c.order.status() != OrderStatus::Pending
                                {
                                    return Err(ctx(format!(
                                        "placed order has total {} / status {}, model says {total} cents / PENDING",
                                        c.order.total(),
                                        c.order.status()
                                    )));
                                }
                                for (p, q) in &merged {
                                    model.stock[*p] -= u64::from(*q);
                                }
                                model.orders.push(ModelOrder {
                                    id: c.order.id(),
                                    user: *user,
                                    items: merged,
                                    key: *key,
                                    status: OrderStatus::Pending,
                                    lease: None,
                                    total_cents: total,
                                });
                                report.placed += 1;
                            }
                            (short, got) => {
                                return Err(ctx(format!(
                                    "model expected shortage {short:?}, service said {got:?}"
                                )));
                            }
                        }
                    }
                }
            }
            Command::Process { order, payment } => {
                let Some(i) = model.pick(*order) else {
                    continue;
                };
                let id = model.orders[i].id;
                gateway.script(id, payment.iter().copied());
                let now = service.ports().clock.now().as_millis();
                let got = service
                    .process_order(id)
                    .await
                    .map_err(|e| ctx(format!("error {e:?}")))?;
                let o = &model.orders[i];
                let expected_start = match (o.status, o.lease) {
                    (s, _) if s.is_terminal() => {
                        if got != ProcessOutcome::AlreadyTerminal(s) {
                            return Err(ctx(format!("expected AlreadyTerminal({s}), got {got:?}")));
                        }
                        false
                    }
                    (OrderStatus::Processing, Some((_, until))) if until > now => {
                        if !matches!(got, ProcessOutcome::LeaseHeld { .. }) {
                            return Err(ctx(format!("expected LeaseHeld, got {got:?}")));
                        }
                        false
                    }
                    _ => true,
                };
                if expected_start {
                    let attempts = service.config().payment_attempts;
                    let approved = match model.recorded.get(&id) {
                        Some(a) => *a,
                        None => {
                            let mut steps = payment.iter().copied();
                            let mut decided = None;
                            for _ in 0..attempts {
                                match steps.next().unwrap_or(PaymentStep::Approve) {
                                    PaymentStep::Transient => {}
                                    PaymentStep::Approve => {
                                        decided = Some(true);
                                        break;
                                    }
                                    PaymentStep::Decline => {
                                        decided = Some(false);
                                        break;
                                    }
                                }
                            }
                            // Every attempt unknown: the service voids the key, which
                            // records a decline (the scripted provider always answers it).
                            let settled = decided.unwrap_or(false);
                            model.recorded.insert(id, settled);
                            settled
                        }
                    };
                    let status = if approved {
                        OrderStatus::Paid
                    } else {
                        OrderStatus::Failed
                    };
                    match &got {
                        ProcessOutcome::Completed(done) if done.status() == status => {}
                        _ => return Err(ctx(format!("expected Completed({status}), got {got:?}"))),
                    }
                    model.orders[i].status = status;
                    model.orders[i].lease = None;
                    if status == OrderStatus::Failed {
                        model.return_stock(i);
                    }
                }
            }
            Command::Cancel { user, order } => {
                let Some(i) = model.pick(*order) else {
                    continue;
                };
                let id = model.orders[i].id;
                let got = service.cancel_order(users[*user], id).await;
                let o = &model.orders[i];
                match (o.user == *user, o.status, got) {
                    (false, _, Err(CancelOrderError::NotFound)) => {}
                    (true, OrderStatus::Cancelled, Ok(c))
                        if c.status() == OrderStatus::Cancelled => {}
                    (true, OrderStatus::Pending, Ok(c)) if c.status() == OrderStatus::Cancelled => {
                        model.orders[i].status = OrderStatus::Cancelled;
                        model.return_stock(i);
                    }
                    (
                        true,
                        s @ (OrderStatus::Processing | OrderStatus::Paid | OrderStatus::Failed),
                        Err(CancelOrderError::InvalidTransition { current }),
                    ) if current == s => {}
                    (owner, s, got) => {
                        return Err(ctx(format!("owner={owner} status={s}: unexpected {got:?}")));
                    }
                }
            }
            Command::StallAfterStart { order } => {
                let Some(i) = model.pick(*order) else {
                    continue;
                };
                let id = model.orders[i].id;
                next_token += 1;
                let token = LeaseToken::from_raw(next_token);
                let now = service.ports().clock.now();
                let until = now.saturating_add(service.config().lease);
                let change = StatusChange::Start {
                    lease: Lease { token, until },
                };
                let got = service
                    .ports()
                    .repository
                    .transition(id, change, now)
                    .await
                    .map_err(|e| ctx(format!("{e:?}")))?;
                match (model.orders[i].status, got) {
                    (OrderStatus::Pending, TransitionOutcome::Applied(o, _))
                        if o.status() == OrderStatus::Processing =>
                    {
                        model.orders[i].status = OrderStatus::Processing;
                        model.orders[i].lease = Some((token, until.as_millis()));
                        model.stalled.insert(id, token);
                    }
                    (s, TransitionOutcome::LostRace(o))
                        if s != OrderStatus::Pending && o.status() == s => {}
                    (s, got) => return Err(ctx(format!("model status {s}, start gave {got:?}"))),
                }
            }
            Command::ExpireLeases => {
                world.advance(service.config().lease + Duration::from_millis(1))
            }
            Command::LateCompletion { order, payment } => {
                let Some(i) = model.pick(*order) else {
                    continue;
                };
                let id = model.orders[i].id;
                let Some(token) = model.stalled.get(&id).copied() else {
                    continue;
                };
                gateway.script(id, [*payment]);
                let total = Money::from_cents(model.orders[i].total_cents)
                    .map_err(|e| ctx(e.to_string()))?;
                let charged = crate::ports::PaymentGateway::charge(gateway, id, total).await;
                let expected = match model.recorded.get(&id) {
                    Some(a) => Some(*a),
                    None => match payment {
                        PaymentStep::Transient => None,
                        PaymentStep::Approve => Some(true),
                        PaymentStep::Decline => Some(false),
                    },
                };
                let change = match (expected, &charged) {
                    (None, Err(_)) => continue, // the stalled worker gives up and stays stalled
                    (Some(true), Ok(PaymentOutcome::Approved)) => {
                        StatusChange::Pay { lease: token }
                    }
                    (Some(false), Ok(PaymentOutcome::Declined(r))) => StatusChange::Fail {
                        lease: token,
                        reason: r.clone(),
                    },
                    (e, c) => {
                        return Err(ctx(format!(
                            "model expected charge {e:?}, gateway said {c:?}"
                        )));
                    }
                };
                if let Some(a) = expected {
                    model.recorded.insert(id, a);
                }
                model.stalled.remove(&id);
                let now = service.ports().clock.now();
                let got = service
                    .ports()
                    .repository
                    .transition(id, change.clone(), now)
                    .await
                    .map_err(|e| ctx(format!("{e:?}")))?;
                let holds = model.orders[i].status == OrderStatus::Processing
                    && model.orders[i].lease.map(|l| l.0) == Some(token);
                match (holds, got) {
                    (true, TransitionOutcome::Applied(o, _)) if o.status() == change.to() => {
                        model.orders[i].status = change.to();
                        model.orders[i].lease = None;
                        if change.returns_stock() {
                            model.return_stock(i);
                        }
                    }
                    (false, TransitionOutcome::LostRace(_)) => report.fenced += 1,
                    (holds, got) => {
                        return Err(ctx(format!("lease held={holds}, completion gave {got:?}")));
                    }
                }
            }
        }
        check_world(service, world, gateway, &model, &products, &mut seen)
            .await
            .map_err(|e| format!("after step {step} {command:?}: {e}"))?;
    }
    for o in &model.orders {
        match o.status {
            OrderStatus::Paid => report.paid += 1,
            OrderStatus::Failed => report.failed += 1,
            OrderStatus::Cancelled => report.cancelled += 1,
            OrderStatus::Pending | OrderStatus::Processing => {}
        }
    }
    Ok(report)
}

async fn check_world(
    service: &OrderService,
    world: &dyn World,
    gateway: &ScriptedGateway,
    model: &ReferenceModel,
    products: &[ProductId],
    seen: &mut HashMap<OrderId, OrderStatus>,
) -> Result<(), String> {
    model.check_conservation()?;
    for (p, id) in products.iter().enumerate() {
        let stock = world.stock(*id).await;
        if stock != model.stock[p] {
            return Err(format!(
                "product {id}: stock {stock}, model {}",
                model.stock[p]
            ));
        }
    }
    for o in &model.orders {
        let stored = service
            .ports()
            .repository
            .get(o.id)
            .await
            .map_err(|e| format!("get {}: {e:?}", o.id))?
            .ok_or_else(|| format!("order {} vanished", o.id))?;
        if let Some(prev) = seen.insert(o.id, stored.status())
            && !is_observable_change(prev, stored.status())
        {
            return Err(format!(
                "order {}: illegal change {prev} -> {}",
                o.id,
                stored.status()
            ));
        }
        if stored.status() != o.status {
            return Err(format!(
                "order {}: status {}, model {}",
                o.id,
                stored.status(),
                o.status
            ));
        }
        if stored.total().cents() != o.total_cents {
            return Err(format!(
                "order {}: total {}, model {} cents",
                o.id,
                stored.total(),
                o.total_cents
            ));
        }
        let lines: Vec<(ProductId, u32)> = stored
            .lines()
            .iter()
            .map(|l| (l.product, l.quantity.get()))
            .collect();
        let expected: Vec<(ProductId, u32)> =
            o.items.iter().map(|(p, q)| (products[*p], *q)).collect();
        if lines != expected {
            return Err(format!(
                "order {}: lines {lines:?}, model {expected:?}",
                o.id
            ));
        }
        let charges = gateway.new_charges(o.id);
        if charges > 1 {
            return Err(format!("order {} charged {charges} times", o.id));
        }
        let recorded = gateway.recorded(o.id);
        if o.status == OrderStatus::Paid && recorded != Some(PaymentOutcome::Approved) {
            return Err(format!(
                "order {} is PAID but the provider recorded {recorded:?}",
                o.id
            ));
        }
        if o.status == OrderStatus::Failed && recorded == Some(PaymentOutcome::Approved) {
            return Err(format!(
                "order {} is FAILED but the provider charged it",
                o.id
            ));
        }
        if o.status == OrderStatus::Cancelled && charges > 0 {
            return Err(format!("order {} is CANCELLED but was charged", o.id));
        }
    }
    Ok(())
}

/// Whether an observer may see `from` and then `to` in two reads: no change, or a path
/// of legal transitions (one `process_order` step goes Pending → Processing → Paid).
/// Anything leaving a terminal status, or skipping backwards, is refused.
pub fn is_observable_change(from: OrderStatus, to: OrderStatus) -> bool {
    from == to
        || from.can_transition_to(to)
        || OrderStatus::ALL
            .iter()
            .any(|mid| from.can_transition_to(*mid) && mid.can_transition_to(to))
}
