//! One seeded run: the shop, the service instances over shared faulty adapters, the
//! workload, the scheduler loop to quiescence, and the invariant checks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use order_core::app::{
    Backoff, CancelOrderError, CreateOrderError, CreateOrderRequest, LockMode, LockPolicy, Ports,
    ReconcilerConfig, SeededRandom, ServiceConfig,
};
use order_core::ports::{Clock, OrderEventKind, PaymentOutcome};
use order_core::{Money, OrderId, OrderService, OrderStatus, ProductId, UserId};
use order_memory::{MemoryEventBus, MemoryLock, MemoryOrderRepository, QueueConfig};

use crate::exec::{Executor, Kind, Rng, SimClock};
use crate::faults::{
    Ctx, Profile, Sabotage, Service, SimEvents, SimLock, SimPayments, SimQueue, SimRepo,
};

/// Simulated start (2023-11-14T22:13:20Z).
const START_MS: u64 = 1_700_000_000_000;
/// Faults are injected during the first this many simulated milliseconds.
const FAULT_MS: u64 = 8_000;
/// After the fault window, how long the system may take to settle.
const QUIESCE_LIMIT_MS: u64 = 120_000;
/// Without a reconciler, how long after the fault window the queue may take.
const QUEUE_ONLY_LIMIT_MS: u64 = 30_000;
/// Scheduler steps per run before we call it a livelock.
const STEP_BUDGET: u64 = 2_000_000;

pub fn service_config(lock_mode: LockMode) -> ServiceConfig {
    ServiceConfig {
        lock: LockPolicy {
            mode: lock_mode,
            ttl: Duration::from_secs(1),
            attempts: 3,
            backoff: Backoff {
                base: Duration::from_millis(20),
                max: Duration::from_secs(1),
                jitter: 0.25,
            },
        },
        lease: Duration::from_secs(2),
        payment_timeout: Duration::from_millis(200),
        payment_attempts: 2,
        payment_backoff: Backoff::fixed_schedule(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ),
        publish_timeout: Duration::from_millis(100),
        worker_poll: Duration::from_millis(100),
        reconciler: ReconcilerConfig {
            interval: Duration::from_secs(1),
            stale_after: Duration::from_secs(2),
            batch: 16,
            ..ReconcilerConfig::default()
        },
        grace_period: Duration::ZERO,
    }
}

pub fn queue_config() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_secs(1),
        // Backoffs 100+200+400+800+1600 ms = 3.1 s > the 2 s lease.
        max_attempts: 6,
        retry_backoff: Backoff::fixed_schedule(Duration::from_millis(100), Duration::from_secs(10)),
        capacity: 1_000_000,
        dead_letter_capacity: 100_000,
    }
}

/// What one run did (for the trace test and for reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub seed: u64,
    pub trace: u64,
    pub events: u64,
    pub steps: u64,
    pub sim_ms: u64,
    pub orders: usize,
    pub accepted: usize,
    pub paid: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub crashes: u32,
    pub wipes: u32,
}

/// What clients saw.
#[derive(Debug, Default)]
struct ClientLog {
    /// (user, key) → the order every success for it returned.
    by_key: BTreeMap<(UserId, String), OrderId>,
    /// Accepted orders and their owners, in acceptance order.
    accepted: Vec<(OrderId, UserId)>,
    accepted_set: BTreeSet<OrderId>,
    /// Orders whose cancel returned Ok.
    cancelled_ok: BTreeSet<OrderId>,
    violations: Vec<String>,
}

#[derive(Debug, Clone)]
struct CreatePlan {
    start_ms: u64,
    api: usize,
    user: usize,
    items: Vec<(usize, u32)>,
    key: String,
}

#[derive(Debug, Clone, Copy)]
struct CancelPlan {
    start_ms: u64,
    api: usize,
    pick: u64,
    foreign: bool,
}

#[derive(Debug, Clone, Copy)]
enum Chaos {
    Wipe,
    Outage(Service, u64),
}

const API_INSTANCES: usize = 2;
const WORKERS: usize = 3;
const RECONCILERS: usize = 2;
const USERS: usize = 4;

struct World {
    clock: Arc<SimClock>,
    repo: Arc<SimRepo>,
    queue: Arc<SimQueue>,
    payments: Arc<SimPayments>,
    lock: Arc<SimLock>,
    events: Arc<SimEvents>,
    config: ServiceConfig,
}

impl World {
    fn service(&self, rng_seed: u64) -> Result<Rc<OrderService>, String> {
        let ports = Ports {
            repository: self.repo.clone(),
            lock: self.lock.clone(),
            payments: self.payments.clone(),
            events: self.events.clone(),
            queue: self.queue.clone(),
            clock: self.clock.clone() as Arc<dyn Clock>,
            rng: Arc::new(SeededRandom::new(rng_seed)),
        };
        OrderService::new(ports, self.config.clone())
            .map(Rc::new)
            .map_err(|e| format!("invalid config: {e}"))
    }
}

fn spawn_worker(ex: &mut Executor, n: usize, svc: Rc<OrderService>) {
    ex.spawn(
        Kind::Worker(n),
        Box::pin(async move {
            svc.run_worker(std::future::pending()).await;
        }),
    );
}

fn spawn_reconciler(ex: &mut Executor, n: usize, svc: Rc<OrderService>) {
    ex.spawn(
        Kind::Reconciler(n),
        Box::pin(async move {
            svc.run_reconciler(std::future::pending()).await;
        }),
    );
}

/// Runs one seed to quiescence and checks every invariant.
///
/// # Errors
/// A description of every violated invariant (or of a run that did not settle).
pub fn run_seed(seed: u64, sabotage: Sabotage) -> Result<RunReport, String> {
    let mut root = Rng::new(seed ^ 0x51_u64.rotate_left(56));
    let mut sched_rng = root.fork();
    let mut workload = root.fork();
    let mut crash_rng = root.fork();
    let profile = Profile::draw(&mut root);
    // One run in four has no reconciler: the queue alone must then finish every order.
    let net_free = root.below(4) == 0;
    let lock_mode = if root.below(4) == 0 {
        LockMode::None
    } else {
        LockMode::Distributed
    };

    let clock = Arc::new(SimClock::new(START_MS));
    let config = service_config(lock_mode);
    let qconfig = queue_config();
    let stall_base = config.lease.max(qconfig.visibility_timeout) + Duration::from_millis(100);
    let ctx = Arc::new(Ctx::new(
        clock.clone(),
        root.fork(),
        profile,
        sabotage,
        stall_base,
        net_free,
    ));

    // The shop: a few users, a few products with limited stock.
    let memory = Arc::new(MemoryOrderRepository::new());
    let users: Vec<UserId> = (0..USERS).map(|_| memory.add_user()).collect();
    let product_count = 3;
    let mut products: Vec<(ProductId, u64)> = Vec::new();
    for i in 0..product_count {
        let stock = workload.range(60, 300);
        let price = Money::from_cents(workload.range(100, 20_000)).map_err(|e| e.to_string())?;
        products.push((memory.add_product(format!("p{i}"), price, stock), stock));
    }

    let world = World {
        repo: Arc::new(SimRepo::new(memory.clone(), ctx.clone())),
        queue: Arc::new(SimQueue::new(ctx.clone(), qconfig, memory.clone())),
        payments: Arc::new(SimPayments::new(ctx.clone(), root.fork())),
        lock: Arc::new(SimLock::new(
            Arc::new(MemoryLock::new(clock.clone() as Arc<dyn Clock>)),
            ctx.clone(),
        )),
        events: Arc::new(SimEvents::new(Arc::new(MemoryEventBus::new()), ctx.clone())),
        clock: clock.clone(),
        config,
    };

    let mut instance_seeds = root.fork();
    let apis: Vec<Rc<OrderService>> = (0..API_INSTANCES)
        .map(|_| world.service(instance_seeds.next_u64()))
        .collect::<Result<_, _>>()?;
    let log = Rc::new(RefCell::new(ClientLog::default()));
    let mut ex = Executor::new(sched_rng.fork());

    for n in 0..WORKERS {
        spawn_worker(&mut ex, n, world.service(instance_seeds.next_u64())?);
    }
    for n in 0..if net_free { 0 } else { RECONCILERS } {
        spawn_reconciler(&mut ex, n, world.service(instance_seeds.next_u64())?);
    }

    // The workload: creates in bursts (with replays and key reuse), then cancels.
    let creates = workload.range(150, 250) as usize;
    let mut plans: Vec<CreatePlan> = Vec::with_capacity(creates);
    for i in 0..creates {
        let start_ms = workload.below(30) * 200;
        let api = workload.below(API_INSTANCES as u64) as usize;
        let roll = workload.below(100);
        let plan = if roll < 10 && !plans.is_empty() {
            // A replay: the same request again.
            let earlier = plans[workload.below(plans.len() as u64) as usize].clone();
            CreatePlan {
                start_ms,
                api,
                ..earlier
            }
        } else {
            let user = workload.below(USERS as u64) as usize;
            let lines = workload.range(1, 2);
            let items: Vec<(usize, u32)> = (0..lines)
                .map(|_| {
                    (
                        workload.below(product_count) as usize,
                        workload.range(1, 4) as u32,
                    )
                })
                .collect();
            let key = if roll < 15 && !plans.is_empty() {
                // Key reuse with (probably) different lines.
                let earlier = &plans[workload.below(plans.len() as u64) as usize];
                if earlier.user == user {
                    earlier.key.clone()
                } else {
                    format!("u{user}-k{i}")
                }
            } else {
                format!("u{user}-k{i}")
            };
            CreatePlan {
                start_ms,
                api,
                user,
                items,
                key,
            }
        };
        plans.push(plan);
    }
    for plan in plans {
        let api = apis[plan.api].clone();
        let clock = clock.clone();
        let log = log.clone();
        let user = users[plan.user];
        let request = CreateOrderRequest::new(
            user,
            plan.items.iter().map(|&(p, q)| (products[p].0, q)),
            plan.key.clone(),
        );
        ex.spawn(
            Kind::Client,
            Box::pin(async move {
                clock.sleep(Duration::from_millis(plan.start_ms)).await;
                for attempt in 1..=3u64 {
                    match api.create_order(request.clone()).await {
                        Ok(created) => {
                            let id = created.order.id();
                            let mut l = log.borrow_mut();
                            if created.order.user() != user {
                                l.violations.push(format!(
                                    "create for {user} returned order {id} of {}",
                                    created.order.user()
                                ));
                            }
                            let key = (user, plan.key.clone());
                            match l.by_key.get(&key) {
                                Some(&other) if other != id => l.violations.push(format!(
                                    "key {key:?} returned order {other} and later order {id}"
                                )),
                                _ => {
                                    l.by_key.insert(key, id);
                                }
                            }
                            if l.accepted_set.insert(id) {
                                l.accepted.push((id, user));
                            }
                            return;
                        }
                        Err(
                            CreateOrderError::Unavailable(_)
                            | CreateOrderError::Unexpected(_)
                            | CreateOrderError::LockConflict { .. }
                            | CreateOrderError::IdempotencyKeyInFlight,
                        ) => {
                            clock.sleep(Duration::from_millis(50 * attempt)).await;
                        }
                        Err(_) => return,
                    }
                }
            }),
        );
    }
    let cancels = workload.range(20, 60);
    for _ in 0..cancels {
        let plan = CancelPlan {
            start_ms: workload.below(FAULT_MS / 100 + 20) * 100,
            api: workload.below(API_INSTANCES as u64) as usize,
            pick: workload.next_u64(),
            foreign: workload.below(10) == 0,
        };
        let api = apis[plan.api].clone();
        let clock = clock.clone();
        let log = log.clone();
        let users = users.clone();
        ex.spawn(
            Kind::Client,
            Box::pin(async move {
                clock.sleep(Duration::from_millis(plan.start_ms)).await;
                let target = {
                    let l = log.borrow();
                    if l.accepted.is_empty() {
                        return;
                    }
                    l.accepted[(plan.pick % l.accepted.len() as u64) as usize]
                };
                let (id, owner) = target;
                let user = if plan.foreign {
                    users[(users.iter().position(|u| *u == owner).unwrap_or(0) + 1) % users.len()]
                } else {
                    owner
                };
                match api.cancel_order(user, id).await {
                    Ok(order) => {
                        let mut l = log.borrow_mut();
                        if user != owner {
                            l.violations
                                .push(format!("{user} cancelled order {id} owned by {owner}"));
                        }
                        if order.status() != OrderStatus::Cancelled {
                            l.violations.push(format!(
                                "cancel of {id} returned Ok with status {}",
                                order.status()
                            ));
                        }
                        l.cancelled_ok.insert(id);
                    }
                    Err(CancelOrderError::NotFound) if user != owner => {}
                    Err(_) => {}
                }
            }),
        );
    }

    // Chaos: queue wipes and outage windows at random times in the fault window.
    let chaos_events = workload.range(0, 6);
    let mut chaos: Vec<(u64, Chaos)> = (0..chaos_events)
        .map(|_| {
            let at = workload.below(FAULT_MS);
            // Without a reconciler, outages stay short enough for the queue's retries.
            let cap = if net_free { 2 } else { 1 };
            let event = match workload.below(5) {
                0 if !net_free => Chaos::Wipe,
                0 | 1 => Chaos::Outage(Service::Lock, workload.range(200, 3000)),
                2 => Chaos::Outage(Service::Payments, workload.range(200, 3000 / cap)),
                3 => Chaos::Outage(Service::Repository, workload.range(100, 1500 / cap)),
                _ => Chaos::Outage(Service::Queue, workload.range(100, 1500 / cap)),
            };
            (at, event)
        })
        .collect();
    chaos.sort_by_key(|(at, _)| *at);
    {
        let ctx = ctx.clone();
        let queue = world.queue.clone();
        ex.spawn(
            Kind::Background,
            Box::pin(async move {
                for (at, event) in chaos {
                    let now = ctx.clock.now_ms() - START_MS;
                    ctx.clock
                        .sleep(Duration::from_millis(at.saturating_sub(now)))
                        .await;
                    match event {
                        Chaos::Wipe => queue.wipe(),
                        Chaos::Outage(service, ms) => {
                            ctx.outage(service, ctx.clock.now_ms() + ms);
                        }
                    }
                }
                ctx.clock
                    .sleep(Duration::from_millis(
                        (START_MS + FAULT_MS).saturating_sub(ctx.clock.now_ms()),
                    ))
                    .await;
                ctx.stop_faults();
            }),
        );
    }

    // The scheduler loop.
    let mut steps = 0u64;
    let mut crashes = 0u32;
    let mut next_check = START_MS + FAULT_MS;
    let mut queue_only = net_free;
    let mut queue_only_violations: Vec<String> = Vec::new();
    let settled = loop {
        for fut in ctx.take_spawned() {
            ex.spawn(Kind::Background, fut);
        }
        if let Some((id, kind)) = ex.pick() {
            steps += 1;
            if steps > STEP_BUDGET {
                break Err(format!(
                    "step budget of {STEP_BUDGET} exhausted (livelock?)"
                ));
            }
            ctx.trace.record(100, id);
            // Without a reconciler a client crash between commit and enqueue would strand
            // its order for good: only workers crash then.
            let crashable = match kind {
                Kind::Background => false,
                Kind::Client => !net_free,
                Kind::Worker(_) | Kind::Reconciler(_) => true,
            };
            if crashable && ctx.faults_active() && crash_rng.chance(profile.crash) {
                ex.kill(id);
                crashes += 1;
                ctx.trace.record(101, id);
                match kind {
                    Kind::Worker(n) => {
                        spawn_worker(&mut ex, n, world.service(instance_seeds.next_u64())?);
                    }
                    Kind::Reconciler(n) => {
                        spawn_reconciler(&mut ex, n, world.service(instance_seeds.next_u64())?);
                    }
                    Kind::Client | Kind::Background => {}
                }
                continue;
            }
            ex.poll(id);
            continue;
        }
        let now = clock.now_ms();
        if !ctx.faults_active() && now >= next_check {
            next_check = now + 500;
            let clients_done = ex.count(|k| k == Kind::Client) == 0;
            let open: Vec<OrderId> = memory
                .orders()
                .iter()
                .filter(|o| !o.status().is_terminal())
                .map(|o| o.id())
                .collect();
            if queue_only {
                // Without a reconciler, the queue alone must finish every order whose
                // job was not dead-lettered by genuine failures. Then the reconcilers
                // start and must finish the rest.
                let dead = world.queue.legitimately_dead();
                let stuck: Vec<OrderId> = open
                    .iter()
                    .copied()
                    .filter(|id| !dead.contains(id))
                    .collect();
                let timed_out = now > START_MS + FAULT_MS + QUEUE_ONLY_LIMIT_MS;
                if clients_done && (stuck.is_empty() || timed_out) {
                    if !stuck.is_empty() {
                        queue_only_violations.push(format!(
                            "without a reconciler, orders {stuck:?} were neither finished nor \
                             dead-lettered by genuine failures {}",
                            stuck
                                .iter()
                                .take(2)
                                .map(|id| crate::world::describe_order(&world, *id))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ));
                    }
                    queue_only = false;
                    for n in 0..RECONCILERS {
                        spawn_reconciler(&mut ex, n, world.service(instance_seeds.next_u64())?);
                    }
                    continue;
                }
            } else if clients_done && open.is_empty() {
                break Ok(());
            }
            if now > START_MS + FAULT_MS + QUIESCE_LIMIT_MS {
                break Err(format!(
                    "not quiescent {} s after the fault window",
                    QUIESCE_LIMIT_MS / 1000
                ));
            }
        }
        match clock.advance() {
            Some(t) => ctx.trace.record(102, t),
            None => break Err("no task ready and no timer left (deadlock)".into()),
        }
    };
    ex.clear();
    drop(apis);

    let mut violations = queue_only_violations;
    if let Err(e) = settled {
        violations.push(e);
    }
    let log = log.borrow();
    violations.extend(log.violations.iter().cloned());
    violations.extend(check(&world, &memory, &products, &log));
    // Liveness of the protocol, not just its end state (the reconciler would repair a
    // job nacked to death): every nack must follow a fault the nacking worker met while
    // handling that delivery.
    violations.extend(ctx.unprovoked_nacks().into_iter().take(3));
    violations.extend(world.queue.open_acks().into_iter().take(3));

    let orders = memory.orders();
    for o in &orders {
        ctx.trace.record(103, o.id().get() << 8 | o.status() as u64);
    }
    let (trace, events) = ctx.trace.finish();
    let count = |s: OrderStatus| orders.iter().filter(|o| o.status() == s).count();
    let report = RunReport {
        seed,
        trace,
        events,
        steps,
        sim_ms: clock.now_ms() - START_MS,
        orders: orders.len(),
        accepted: log.accepted.len(),
        paid: count(OrderStatus::Paid),
        failed: count(OrderStatus::Failed),
        cancelled: count(OrderStatus::Cancelled),
        crashes,
        wipes: *crate::faults::lock(&world.queue.wipes),
    };
    if violations.is_empty() {
        Ok(report)
    } else {
        violations.truncate(10);
        Err(format!(
            "{} (profile {profile:?}, lock {lock_mode:?}, reconciler {}, {} orders, {} steps, {} crashes, {} wipes)",
            violations.join("; "),
            !net_free,
            report.orders,
            report.steps,
            report.crashes,
            report.wipes
        ))
    }
}

/// An order's recorded transitions and ledger entry, for failure messages.
fn describe_order(world: &World, id: OrderId) -> String {
    let history = crate::faults::lock(&world.repo.history).get(&id).cloned();
    let steps: Vec<String> = crate::faults::lock(&world.repo.applied)
        .iter()
        .filter(|a| a.order == id)
        .map(|a| format!("{}:{}->{}", a.change, a.before, a.after))
        .collect();
    let ledger = crate::faults::lock(&world.payments.ledger)
        .get(&id)
        .cloned();
    format!(
        "[history {history:?}; applied {}; ledger {ledger:?}]",
        steps.join(",")
    )
}

/// Every end-of-run invariant.
fn check(
    world: &World,
    memory: &MemoryOrderRepository,
    products: &[(ProductId, u64)],
    log: &ClientLog,
) -> Vec<String> {
    let mut v = Vec::new();
    let orders = memory.orders();
    let by_id: BTreeMap<OrderId, &order_core::Order> = orders.iter().map(|o| (o.id(), o)).collect();
    let ledger = crate::faults::lock(&world.payments.ledger).clone();
    let history = crate::faults::lock(&world.repo.history).clone();
    let applied = crate::faults::lock(&world.repo.applied).clone();
    let describe = |id: OrderId| describe_order(world, id);

    // Terminal: every order in the store, and every accepted one exists.
    for o in &orders {
        if !o.status().is_terminal() {
            v.push(format!(
                "order {} not terminal: {} {}",
                o.id(),
                o.status(),
                describe(o.id())
            ));
        }
    }
    for id in &log.accepted_set {
        if !by_id.contains_key(id) {
            v.push(format!("accepted order {id} is missing from the store"));
        }
    }
    for id in &log.cancelled_ok {
        match by_id.get(id) {
            Some(o) if o.status() == OrderStatus::Cancelled => {}
            Some(o) => v.push(format!(
                "order {id} was cancelled (Ok) but ended {} {}",
                o.status(),
                describe(*id)
            )),
            None => v.push(format!("cancelled order {id} is missing")),
        }
    }

    // Stock conserved per product, without underflow.
    for &(product, initial) in products {
        let current = memory.stock(product).unwrap_or(u64::MAX);
        let mut held = 0u64;
        for o in orders.iter().filter(|o| o.status().holds_stock()) {
            for l in o.lines().iter().filter(|l| l.product == product) {
                held = held.saturating_add(u64::from(l.quantity.get()));
            }
        }
        if current.checked_add(held) != Some(initial) {
            v.push(format!(
                "stock of product {product} not conserved: initial {initial} != current {current} + held {held}"
            ));
        }
        if current > initial {
            v.push(format!(
                "stock of product {product} grew: {current} > {initial}"
            ));
        }
    }

    // Payments: at most one charge per key; Paid ⇔ exactly one approved charge.
    for (id, e) in &ledger {
        if e.charged > 1 {
            v.push(format!("order {id} charged {} times", e.charged));
        }
        let approved = e.outcome == Some(PaymentOutcome::Approved);
        if approved != (e.charged == 1) {
            v.push(format!("ledger of {id} inconsistent: {e:?}"));
        }
        if !by_id.contains_key(id) {
            v.push(format!("payment for unknown order {id}"));
        }
    }
    for o in &orders {
        let e = ledger.get(&o.id());
        let approved = e.is_some_and(|e| e.outcome == Some(PaymentOutcome::Approved));
        let charged = e.map_or(0, |e| e.charged);
        match o.status() {
            OrderStatus::Paid => {
                if !approved || charged != 1 {
                    v.push(format!(
                        "order {} is PAID without exactly one approved charge {}",
                        o.id(),
                        describe(o.id())
                    ));
                }
                if let Some(amount) = e.and_then(|e| e.amount)
                    && amount != o.total()
                {
                    v.push(format!(
                        "order {} charged {amount} for a total of {}",
                        o.id(),
                        o.total()
                    ));
                }
            }
            OrderStatus::Failed | OrderStatus::Cancelled | OrderStatus::Pending => {
                if approved || charged > 0 {
                    v.push(format!(
                        "order {} is {} but was charged {}",
                        o.id(),
                        o.status(),
                        describe(o.id())
                    ));
                }
            }
            OrderStatus::Processing => {}
        }
        if o.status() == OrderStatus::Cancelled && e.is_some_and(|e| e.charge_calls > 0) {
            v.push(format!(
                "cancelled order {} reached the payment provider {}",
                o.id(),
                describe(o.id())
            ));
        }
    }

    // Only legal transitions, and each order's history is a legal path to its status.
    for a in &applied {
        if a.before != a.expected_from {
            v.push(format!(
                "{} applied to order {} in status {} (expects {})",
                a.change, a.order, a.before, a.expected_from
            ));
        }
        let legal = if a.before == a.after {
            matches!(a.change, "TakeOver" | "Release")
        } else {
            a.before.can_transition_to(a.after)
        };
        if !legal {
            v.push(format!(
                "illegal transition {} {} -> {} on order {}",
                a.change, a.before, a.after, a.order
            ));
        }
    }
    for o in &orders {
        let Some(h) = history.get(&o.id()) else {
            v.push(format!("order {} has no recorded placement", o.id()));
            continue;
        };
        if h.first() != Some(&OrderStatus::Pending) {
            v.push(format!("order {} did not start Pending: {h:?}", o.id()));
        }
        if let Some(pair) = h.windows(2).find(|w| !w[0].can_transition_to(w[1])) {
            v.push(format!(
                "order {} went {} -> {}: {h:?}",
                o.id(),
                pair[0],
                pair[1]
            ));
        }
        if h.last() != Some(&o.status()) {
            v.push(format!(
                "order {} is {} but its recorded history is {h:?}",
                o.id(),
                o.status()
            ));
        }
    }

    // The durable event log: each user's seqs run 1, 2, 3, … and each order's logged
    // statuses are exactly its history (one event per status change, none for a lost
    // race, a replay or a lease-only change).
    let events = memory.events();
    let mut logged: BTreeMap<OrderId, Vec<OrderStatus>> = BTreeMap::new();
    let mut last_seq: BTreeMap<UserId, u64> = BTreeMap::new();
    for e in &events {
        let expected = last_seq.get(&e.user).copied().unwrap_or(0) + 1;
        if e.seq != expected {
            v.push(format!(
                "user {}'s event log jumps to seq {} where {expected} was due",
                e.user, e.seq
            ));
        }
        last_seq.insert(e.user, e.seq);
        let status = match e.kind {
            OrderEventKind::Created => OrderStatus::Pending,
            OrderEventKind::Processing => OrderStatus::Processing,
            OrderEventKind::Paid => OrderStatus::Paid,
            OrderEventKind::Failed(_) => OrderStatus::Failed,
            OrderEventKind::Cancelled => OrderStatus::Cancelled,
        };
        logged.entry(e.order).or_default().push(status);
    }
    for o in &orders {
        let h = history.get(&o.id()).cloned().unwrap_or_default();
        let l = logged.get(&o.id()).cloned().unwrap_or_default();
        if h != l {
            v.push(format!(
                "order {}'s event log {l:?} differs from its history {h:?}",
                o.id()
            ));
        }
    }
    v
}
