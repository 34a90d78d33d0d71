//! The embedder's program: their own repository ([`VecRepository`]) and their own
//! payment provider ([`CardProvider`]), with our Redis adapters for the lock, the queue
//! and the events, wired by `Engine::builder()`; then a burst of orders, workers and the
//! reconciler until every order is terminal. The test suite runs [`run`] against the
//! machine's Redis (`tests/integration/real/embedder_program.rs`).

// The program seeds through only part of the repository's operator API (`add_user`,
// `add_product`); the contract fixture uses the rest.
#[allow(dead_code)]
#[path = "vec_repository.rs"]
pub(crate) mod vec_repository;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use order_engine::Engine;
use order_engine::core::app::CreateOrderRequest;
use order_engine::core::domain::{FailureReason, Money, OrderId, OrderStatus};
use order_engine::core::ports::{OrderRepository, PaymentError, PaymentGateway, PaymentOutcome};
use order_engine::redis::{RedisConfig, RedisConnection};

pub(crate) use vec_repository::VecRepository;

/// A boxed error, for a program.
pub(crate) type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// The embedder's provider: approves up to a limit per charge, declines above it, and —
/// as the port demands — answers a repeated key with its first outcome.
#[derive(Debug)]
pub(crate) struct CardProvider {
    limit: Money,
    outcomes: Mutex<HashMap<OrderId, PaymentOutcome>>,
}

impl CardProvider {
    /// A provider that declines charges above `limit`.
    pub(crate) fn new(limit: Money) -> Self {
        Self {
            limit,
            outcomes: Mutex::new(HashMap::new()),
        }
    }

    /// How many keys were approved (each at most once, by construction).
    pub(crate) fn approved(&self) -> usize {
        let outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        outcomes
            .values()
            .filter(|o| **o == PaymentOutcome::Approved)
            .count()
    }
}

#[async_trait]
impl PaymentGateway for CardProvider {
    async fn charge(&self, key: OrderId, amount: Money) -> Result<PaymentOutcome, PaymentError> {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = outcomes.entry(key).or_insert_with(|| {
            if amount <= self.limit {
                PaymentOutcome::Approved
            } else {
                PaymentOutcome::Declined(FailureReason::new("over the card limit"))
            }
        });
        Ok(outcome.clone())
    }

    async fn void(&self, key: OrderId) -> Result<PaymentOutcome, PaymentError> {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = outcomes
            .entry(key)
            .or_insert_with(|| PaymentOutcome::Declined(FailureReason::new("voided")));
        Ok(outcome.clone())
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    /// Orders placed.
    pub placed: usize,
    /// Of those, paid.
    pub paid: usize,
    /// Of those, failed (over the limit).
    pub failed: usize,
    /// Charges the provider approved.
    pub approved: usize,
}

/// Runs the program on the Redis at `redis_url`, under `prefix` (its keys are deleted at
/// the end).
///
/// # Errors
/// A build error, a refused order, or orders still open after 30 s.
pub(crate) async fn run(redis_url: &str, prefix: &str) -> Result<Report, AnyError> {
    let repository = Arc::new(VecRepository::default());
    let provider = Arc::new(CardProvider::new(Money::parse("100.00")?));
    let redis = RedisConnection::connect(RedisConfig::new(redis_url).with_prefix(prefix)).await?;
    let engine = Engine::builder()
        .repository(repository.clone())
        .payments(provider.clone())
        .redis(&redis)
        .build()
        .await?;

    let user = repository.add_user();
    let cheap = repository.add_product(Money::parse("30.00")?, 100);
    let dear = repository.add_product(Money::parse("250.00")?, 100);
    let mut ids = Vec::new();
    for i in 0..20u32 {
        let product = if i % 4 == 0 { dear } else { cheap };
        let request = CreateOrderRequest::new(user, [(product, 1)], format!("order-{i}"));
        ids.push(engine.service().create_order(request).await?.order.id());
    }

    let workers = engine.spawn_workers(4);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (paid, failed) = loop {
        let (mut paid, mut failed) = (0, 0);
        for id in &ids {
            match repository.get(*id).await?.map(|o| o.status()) {
                Some(OrderStatus::Paid) => paid += 1,
                Some(OrderStatus::Failed) => failed += 1,
                _ => {}
            }
        }
        if paid + failed == ids.len() || Instant::now() > deadline {
            break (paid, failed);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    workers.stop(Duration::from_secs(5)).await?;
    redis.delete_prefix().await?;
    redis.close().await;
    if paid + failed != ids.len() {
        return Err(format!("{} orders still open after 30 s", ids.len() - paid - failed).into());
    }
    Ok(Report {
        placed: ids.len(),
        paid,
        failed,
        approved: provider.approved(),
    })
}
