//! What an embedder writes: a property test of THEIR wiring of the state machine, using
//! only public API — our strategies, reference model and scripted gateway — around their
//! own adapter. Here the "user" decorates the repository with an audit trail and checks,
//! besides our model, that their decorator saw only legal transitions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use order_core::app::{OrderService, Ports, SeededRandom, ServiceConfig};
use order_core::domain::{
    IdempotencyKey, Order, OrderDraft, OrderId, OrderStatus, Product, ProductId, StatusChange,
    Timestamp, UserId,
};
use order_core::ports::{
    Clock, ListFilter, OrderPage, OrderRepository, PlaceOutcome, RepositoryError, StrandedQuery,
    TransitionOutcome,
};
use order_core::testing::model::{ModelConfig, World, run_commands};
use order_core::testing::scripted::ScriptedGateway;
use order_core::testing::strategies::scenario;
use order_memory::{ManualClock, MemoryAdapters, MemoryOrderRepository, QueueConfig};
use proptest::prelude::*;

/// The embedder's adapter: any repository, plus an audit log of applied transitions.
struct AuditedRepository {
    inner: Arc<MemoryOrderRepository>,
    audit: Mutex<Vec<(OrderId, OrderStatus, OrderStatus)>>,
}

#[async_trait]
impl OrderRepository for AuditedRepository {
    async fn place(
        &self,
        drafts: &[OrderDraft],
        now: Timestamp,
    ) -> Result<Vec<PlaceOutcome>, RepositoryError> {
        self.inner.place(drafts, now).await
    }
    async fn transition(
        &self,
        id: OrderId,
        change: StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, RepositoryError> {
        let (from, to) = (change.from(), change.to());
        let out = self.inner.transition(id, change, now).await?;
        if let TransitionOutcome::Applied(..) = &out {
            self.audit.lock().unwrap().push((id, from, to));
        }
        Ok(out)
    }
    async fn get(&self, id: OrderId) -> Result<Option<Order>, RepositoryError> {
        self.inner.get(id).await
    }
    async fn find_by_key(
        &self,
        user: UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, RepositoryError> {
        self.inner.find_by_key(user, key).await
    }
    async fn list_by_user(
        &self,
        user: UserId,
        filter: ListFilter,
    ) -> Result<OrderPage, RepositoryError> {
        self.inner.list_by_user(user, filter).await
    }
    async fn products(&self) -> Result<Vec<Product>, RepositoryError> {
        self.inner.products().await
    }
    async fn events_after(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<order_core::ports::EventPage, RepositoryError> {
        self.inner.events_after(user, after, limit).await
    }
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, RepositoryError> {
        self.inner.prune_events(before, limit).await
    }

    async fn claim_stranded(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, RepositoryError> {
        self.inner.claim_stranded(query, now).await
    }
}

struct MyWorld {
    clock: Arc<ManualClock>,
    repo: Arc<MemoryOrderRepository>,
}

#[async_trait]
impl World for MyWorld {
    async fn seed(&self, config: &ModelConfig) -> (Vec<UserId>, Vec<ProductId>) {
        let users = (0..config.users).map(|_| self.repo.add_user()).collect();
        let products = config
            .products
            .iter()
            .map(|(p, s)| self.repo.add_product("item", *p, *s))
            .collect();
        (users, products)
    }
    async fn stock(&self, product: ProductId) -> u64 {
        self.repo.stock(product).unwrap_or(0)
    }
    fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn my_audited_wiring_follows_the_reference_model((config, commands) in scenario(40)) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let memory = MemoryAdapters::new(dyn_clock.clone(), QueueConfig::default()).unwrap();
        let audited = Arc::new(AuditedRepository { inner: memory.repository.clone(), audit: Mutex::new(Vec::new()) });
        let gateway = Arc::new(ScriptedGateway::new());
        let mut ports: Ports = memory.ports(gateway.clone(), Arc::new(SeededRandom::new(9)));
        ports.repository = audited.clone();
        let service = OrderService::new(ports, ServiceConfig::default()).unwrap();
        let world = MyWorld { clock, repo: memory.repository.clone() };

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = rt.block_on(run_commands(&service, &world, &gateway, &config, &commands));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
        for (id, from, to) in audited.audit.lock().unwrap().iter() {
            prop_assert!(from == to || from.can_transition_to(*to), "order {id}: {from} -> {to}");
        }
    }
}
