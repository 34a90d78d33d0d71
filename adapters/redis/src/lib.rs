//! # order-redis
//!
//! Redis adapters for the driven ports of `order-core`, on [fred]:
//!
//! - [`RedisLock`] — [`DistributedLock`](order_core::ports::DistributedLock): a Lua
//!   script taking the key with `SET NX PX` (or restarting the TTL when the same token
//!   holds it, so a re-sent acquire succeeds), released by a compare-and-delete script;
//! - [`RedisQueue`] — [`JobQueue`](order_core::ports::JobQueue): a Stream with a consumer
//!   group, visibility timeout, delayed retries with exponential backoff, deferral
//!   without using an attempt, and a dead letter; receipts name one delivery, so a stale
//!   one never touches the live redelivery; `reserve` is cancel-safe; idle consumer
//!   names are pruned; survives Redis losing its data without a restart of the process
//!   (the reconciler of `order-core` re-enqueues the jobs lost with it);
//! - [`RedisEvents`] — [`EventPublisher`](order_core::ports::EventPublisher): `PUBLISH`
//!   of a compact, versioned event format ([`wire`]); and [`RedisEventSubscriber`], its
//!   reading side for the WebSocket gateway;
//! - [`inspect`] — read-only looks at what the adapters leave behind (the dead letter's
//!   entries, lock keys), for the invariant checker.
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
//! Nothing here needs the server to be up at start-up: [`RedisConnection::connect`],
//! [`RedisLock::new`] and [`RedisQueue::new`] only check the settings
//! ([`ConnectError::InvalidConfig`]) and start connecting in the background, retrying
//! forever; the consumer group and the Lua scripts are created on first use. While Redis
//! is down every call fails with the port's `Unavailable` within
//! [`RedisConfig::command_timeout`] (the service then fails open for locks and counts a
//! failed enqueue, whose order the reconciler recovers). Once connected, a server whose
//! `maxmemory-policy` can evict keys is reported with a warning.
//! [`RedisConnection::wait_connected`] waits for the server if a process prefers to.
//! Only [`RedisEventSubscriber::subscribe`] still needs the server, since it confirms
//! its subscription before returning.
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
pub mod inspect;
mod lock;
mod queue;
mod scripts;
pub mod wire;

pub use config::{EventsConfig, LockConfig, QueueConfig, QueueKeys, RedisConfig};
pub use connection::{ConnectError, RedisConnection};
pub use events::{RedisEventSubscriber, RedisEvents, SubscriberError};
pub use inspect::{DeadLetter, InspectError};
pub use lock::RedisLock;
#[doc(hidden)]
pub use queue::QueueRoundTrips;
pub use queue::RedisQueue;
