//! Shared fixtures: a deterministic engine on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use order_core::app::{
    CreateOrderError, CreateOrderRequest, CreatedOrder, OrderService, Ports, SeededRandom,
    ServiceConfig,
};
use order_core::domain::{Money, OrderId, ProductId, Timestamp, UserId};
use order_core::ports::{Clock, PaymentError, PaymentGateway, PaymentOutcome};
use order_core::testing::model::{Command, ModelConfig, RunReport, World, run_commands};
use order_core::testing::scripted::ScriptedGateway;
use order_memory::{ManualClock, MemoryAdapters, QueueConfig};

/// A deterministic engine: memory adapters, a manual clock, a scripted provider.
pub struct ManualWorld {
    pub clock: Arc<ManualClock>,
    pub adapters: MemoryAdapters,
    pub gateway: Arc<ScriptedGateway>,
    pub service: OrderService,
}

impl ManualWorld {
    pub fn new(seed: u64) -> Self {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_764_000_000_000)));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let adapters = MemoryAdapters::new(dyn_clock, QueueConfig::default()).unwrap();
        let gateway = Arc::new(ScriptedGateway::new());
        let payments: Arc<dyn PaymentGateway> = gateway.clone();
        let ports: Ports = adapters.ports(payments, Arc::new(SeededRandom::new(seed)));
        let service = OrderService::new(ports, ServiceConfig::default()).unwrap();
        Self {
            clock,
            adapters,
            gateway,
            service,
        }
    }
}

impl ManualWorld {
    /// Runs `commands` against this world's service and the reference model, on a
    /// current-thread runtime (proptest closures are synchronous).
    pub fn run(&self, config: &ModelConfig, commands: &[Command]) -> Result<RunReport, String> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
            .block_on(run_commands(
                &self.service,
                self,
                &self.gateway,
                config,
                commands,
            ))
    }
}

#[async_trait]
impl World for ManualWorld {
    async fn seed(&self, config: &ModelConfig) -> (Vec<UserId>, Vec<ProductId>) {
        let repo = &self.adapters.repository;
        let users = (0..config.users).map(|_| repo.add_user()).collect();
        let products = config
            .products
            .iter()
            .enumerate()
            .map(|(i, (price, stock))| repo.add_product(format!("p{i}"), *price, *stock))
            .collect();
        (users, products)
    }

    async fn stock(&self, product: ProductId) -> u64 {
        self.adapters.repository.stock(product).unwrap()
    }

    fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

/// Sends `n` create requests at once, request `i` to `services[i % services.len()]`, and
/// returns their results in request order.
pub async fn all_at_once(
    services: &[&Arc<OrderService>],
    n: usize,
    request: impl Fn(usize) -> CreateOrderRequest,
) -> Vec<Result<CreatedOrder, CreateOrderError>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let service = Arc::clone(services[i % services.len()]);
            let request = request(i);
            tokio::spawn(async move { service.create_order(request).await })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for t in tasks {
        results.push(t.await.expect("a create task panicked"));
    }
    results
}

/// A provider that can be switched off: then every charge and void is unanswered.
pub struct Outage {
    pub down: AtomicBool,
    pub inner: ScriptedGateway,
}

impl Outage {
    /// A provider that is up and approves everything.
    pub fn up() -> Self {
        Self {
            down: AtomicBool::new(false),
            inner: ScriptedGateway::new(),
        }
    }
}

#[async_trait]
impl PaymentGateway for Outage {
    async fn charge(&self, key: OrderId, amount: Money) -> Result<PaymentOutcome, PaymentError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PaymentError::transient_msg("provider unreachable"));
        }
        self.inner.charge(key, amount).await
    }
    async fn void(&self, key: OrderId) -> Result<PaymentOutcome, PaymentError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PaymentError::transient_msg("provider unreachable"));
        }
        self.inner.void(key).await
    }
}
