//! Plugging your own port implementation into `OrderService`.
//!
//! Here a user writes their own `PaymentGateway` — a card processor with a per-order
//! spending limit and its own idempotency table — and their own `EventPublisher` that
//! prints events, and wires them with `Engine::builder()` next to the memory adapters
//! for everything else.
//!
//! ```text
//! cargo run --example custom_adapter
//! ```
#![allow(clippy::print_stdout)]

#[path = "support/telemetry.rs"]
mod telemetry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use order_engine::Engine;
use order_engine::core::app::{CreateOrderRequest, ProcessOutcome};
use order_engine::core::domain::{FailureReason, Money, OrderId};
use order_engine::core::ports::{
    EventPublisher, OrderEvent, PaymentError, PaymentGateway, PaymentOutcome, PublishError,
};
use order_engine::memory::seed_reference_data;

/// The user's own provider: declines any charge above a limit, and — as the port
/// demands — answers a repeated key with the first outcome instead of charging again.
struct LimitedCardProcessor {
    limit: Money,
    seen: Mutex<HashMap<OrderId, PaymentOutcome>>,
}

#[async_trait]
impl PaymentGateway for LimitedCardProcessor {
    async fn charge(&self, key: OrderId, amount: Money) -> Result<PaymentOutcome, PaymentError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = seen.entry(key).or_insert_with(|| {
            if amount <= self.limit {
                PaymentOutcome::Approved
            } else {
                PaymentOutcome::Declined(FailureReason::new(format!(
                    "amount {amount} exceeds the card limit {}",
                    self.limit
                )))
            }
        });
        Ok(outcome.clone())
    }

    async fn void(&self, key: OrderId) -> Result<PaymentOutcome, PaymentError> {
        // A key never answered is settled as declined; a charged key stays charged.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = seen
            .entry(key)
            .or_insert_with(|| PaymentOutcome::Declined(FailureReason::new("voided")));
        Ok(outcome.clone())
    }
}

/// The user's own event sink.
struct PrintEvents;

#[async_trait]
impl EventPublisher for PrintEvents {
    async fn publish(&self, event: OrderEvent) -> Result<(), PublishError> {
        println!(
            "  event {} for order {} (user {}, total {})",
            event.kind.name(),
            event.order,
            event.user,
            event.total
        );
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    telemetry::init();
    let gateway = Arc::new(LimitedCardProcessor {
        limit: Money::parse("500.00")?,
        seen: Mutex::new(HashMap::new()),
    });
    // Our memory adapters for everything the user does not bring: a port set
    // explicitly wins over `.memory()`, whatever the order of the calls.
    let engine = Engine::builder()
        .memory()
        .payments(gateway)
        .events(Arc::new(PrintEvents))
        .build()
        .await?;
    let shop = seed_reference_data(&engine.memory().ok_or("built with .memory()")?.repository);
    let service = engine.service();

    for (key, product, quantity) in [("cheap", shop.mouse, 2), ("pricey", shop.laptop, 1)] {
        let request = CreateOrderRequest::new(shop.alice, [(product, quantity)], key);
        let created = service.create_order(request).await?;
        println!(
            "created order {} total {}",
            created.order.id(),
            created.order.total()
        );
        match service.process_order(created.order.id()).await? {
            ProcessOutcome::Completed(order) => println!(
                "order {} is {}{}",
                order.id(),
                order.status(),
                order
                    .failure_reason()
                    .map(|r| format!(": {}", r.as_str()))
                    .unwrap_or_default()
            ),
            other => println!("order {}: {other:?}", created.order.id()),
        }
    }
    Ok(())
}
