//! # order-engine
//!
//! The facade over the order-processing engine: re-exports [`order_core`] (the hexagon)
//! and, behind cargo features, our adapters, and wires them with [`Engine::builder`]:
//!
//! | feature | default | brings |
//! |---|---|---|
//! | `memory` | yes | every port in memory ([`memory`]): the embedded default |
//! | `payment-sim` | yes | the simulated payment provider ([`payment_sim`]) |
//! | `mysql` | no | orders, stock and the payment ledger on MySQL/MariaDB ([`mysql`]) |
//! | `redis` | no | lock, queue and events on Redis ([`redis`]) |
//! | `http` | yes | the REST API: an axum `Router` over the service ([`http`]) |
//! | `pusher` | yes | the WebSocket gateway (Pusher protocol 7) for live order events ([`pusher`]) |
//!
//! An embedder with adapters of their own needs none of them (`default-features =
//! false`), or only `order-core`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use order_engine::Engine;
//! use order_engine::core::app::{CreateOrderRequest, ProcessOutcome};
//! use order_engine::memory::seed_reference_data;
//! use order_engine::payment_sim::SimConfig;
//!
//! let engine = Engine::builder()
//!     .memory()
//!     .simulated_payments(SimConfig::default())
//!     .build()
//!     .await?;
//! let shop = seed_reference_data(&engine.memory().expect("built with .memory()").repository);
//! let created = engine
//!     .service()
//!     .create_order(CreateOrderRequest::new(shop.alice, [(shop.mouse, 2)], "checkout-42"))
//!     .await?;
//! assert_eq!(created.order.total().to_string(), "59.98");
//!
//! // Workers and the reconciler would do this for every job:
//! // `let workers = engine.spawn_workers(8); … workers.stop(deadline).await`.
//! let outcome = engine.service().process_order(created.order.id()).await?;
//! assert!(matches!(outcome, ProcessOutcome::Completed(o) if o.status().is_terminal()));
//! # Ok(())
//! # }
//! ```

#[cfg(all(feature = "mysql", feature = "redis"))]
pub mod check;
mod engine;
mod workers;

pub use order_core as core;
#[cfg(feature = "http")]
pub use order_http as http;
#[cfg(feature = "memory")]
pub use order_memory as memory;
#[cfg(feature = "mysql")]
pub use order_mysql as mysql;
#[cfg(feature = "payment-sim")]
pub use order_payment_sim as payment_sim;
#[cfg(feature = "pusher")]
pub use order_pusher as pusher;
#[cfg(feature = "redis")]
pub use order_redis as redis;

pub use engine::{BuildError, Engine, EngineBuilder};
pub use workers::{StopReport, Workers};
