//! # order-redis
//!
//! Redis adapters for the driven ports of `order-core`, on [fred]:
//!
//! - [`RedisLock`] — [`DistributedLock`](order_core::ports::DistributedLock): `SET NX PX`,
//!   released by a compare-and-delete Lua script;
//! - [`RedisQueue`] — [`JobQueue`](order_core::ports::JobQueue): a Stream with a consumer
//!   group, visibility timeout, delayed retries with exponential backoff and a dead
//!   letter; survives Redis losing its data without a restart of the process;
//! - [`RedisEvents`] — [`EventPublisher`](order_core::ports::EventPublisher): `PUBLISH`
//!   of a compact, versioned event format ([`wire`]); and [`RedisEventSubscriber`], its
//!   reading side for the WebSocket gateway.
//!
//! Wiring:
//!
//! ```no_run
//! # async fn wire() -> Result<(), order_redis::ConnectError> {
//! use order_redis::{RedisConfig, RedisConnection, RedisEvents, RedisLock, RedisQueue};
//!
//! let connection = RedisConnection::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?;
//! let lock = RedisLock::new(&connection).await?;
//! let queue = RedisQueue::new(&connection).await?;
//! let events = RedisEvents::new(&connection);
//! # let _ = (lock, queue, events);
//! # Ok(())
//! # }
//! ```
//!
//! Every key and channel starts with [`RedisConfig::prefix`]. Port methods return the
//! port's own errors: connection loss and timeouts are `Unavailable`, anything else
//! `Unexpected`; no fred type appears in a public signature.
//!
//! This crate depends on `order-core` only; nothing here knows HTTP or SQL.
//!
//! [fred]: https://docs.rs/fred

mod config;
mod connection;
mod events;
mod lock;
mod queue;
mod scripts;
pub mod wire;

pub use config::{EventSettings, LockSettings, QueueKeys, QueueSettings, RedisConfig};
pub use connection::{ConnectError, RedisConnection};
pub use events::{RedisEventSubscriber, RedisEvents, SubscriberError};
pub use lock::RedisLock;
pub use queue::RedisQueue;
