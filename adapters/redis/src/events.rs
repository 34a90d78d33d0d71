//! The event bus on Redis pub/sub: [`RedisEvents`] publishes order events (encoded by
//! [`wire`](crate::wire)) on one channel; [`RedisEventSubscriber`] receives them, for the
//! WebSocket gateway. Several gateway instances may subscribe to the same channel: each
//! gets every event.
//!
//! Pub/sub is fire-and-forget, matching the port's "best effort" promise: an event
//! published while no subscriber is connected is lost, and a subscriber that reconnects
//! misses what was published in between (clients re-read order state over HTTP).

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use order_core::ports::{EventPublisher, OrderEvent, PublishError};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::config::RedisConfig;
use crate::connection::{self, ConnectError, Failure, RedisConnection};
use crate::wire::{decode_event, encode_event};

/// Publishes order events with `PUBLISH` on [`RedisConfig::events_channel`].
#[derive(Debug, Clone)]
pub struct RedisEvents {
    connection: RedisConnection,
    channel: String,
}

impl RedisEvents {
    /// A publisher on `connection`'s events channel.
    pub fn new(connection: &RedisConnection) -> Self {
        Self {
            connection: connection.clone(),
            channel: connection.config.events_channel(),
        }
    }

    /// The channel events go to.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

#[async_trait]
impl EventPublisher for RedisEvents {
    /// `PUBLISH channel <wire event>`; succeeds whether or not anyone listens.
    ///
    /// # Errors
    /// [`PublishError::Unavailable`] when Redis cannot be reached within the command
    /// timeout.
    async fn publish(&self, event: OrderEvent) -> Result<(), PublishError> {
        let payload = encode_event(&event);
        let _receivers: i64 = self
            .connection
            .pool
            .next()
            .publish(self.channel.as_str(), payload)
            .await
            .map_err(Failure::from)?;
        Ok(())
    }
}

/// Why [`RedisEventSubscriber::recv`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriberError {
    /// The reader fell more than [`EventsConfig::subscriber_buffer`] messages behind
    /// and this many were dropped; the next `recv` continues with the oldest kept one.
    ///
    /// [`EventsConfig::subscriber_buffer`]: crate::EventsConfig::subscriber_buffer
    #[error("the subscriber fell behind and lost {0} messages")]
    Lagged(u64),
    /// The subscriber was closed; no more events will come.
    #[error("the subscriber is closed")]
    Closed,
}

/// A dedicated pub/sub connection subscribed to the events channel.
///
/// It reconnects on its own and subscribes again after every reconnection; messages are
/// buffered ([`EventsConfig::subscriber_buffer`], default 65 536) so bursts are not lost
/// while the reader is busy.
///
/// [`EventsConfig::subscriber_buffer`]: crate::EventsConfig::subscriber_buffer
pub struct RedisEventSubscriber {
    client: SubscriberClient,
    messages: Receiver<Message>,
    channel: String,
    resubscriber: JoinHandle<()>,
}

impl std::fmt::Debug for RedisEventSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventSubscriber")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisEventSubscriber {
    /// Connects a subscriber to `config.url` and subscribes to
    /// [`RedisConfig::events_channel`]. Events published after this returns are received.
    ///
    /// # Errors
    /// [`ConnectError::InvalidConfig`] for a bad URL; [`ConnectError::Unavailable`] when
    /// the server cannot be reached or the subscription is not confirmed in time.
    pub async fn subscribe(config: &RedisConfig) -> Result<Self, ConnectError> {
        let channel = config.events_channel();
        let mut builder =
            connection::builder(config, Some(config.events.subscriber_buffer.max(1)))?;
        // Name the connection (`CLIENT SETNAME`, fred's client id) so operators can tell
        // it apart in `CLIENT LIST`.
        builder.with_connection_config(|c| c.auto_client_setname = true);
        let client = builder
            .build_subscriber_client()
            .map_err(|e| ConnectError::InvalidConfig(e.to_string()))?;
        connection::init(&client, config.connect_timeout).await?;
        // Take the receiver before subscribing so that nothing published after the
        // subscription is confirmed can be missed.
        let messages = client.message_rx();
        let resubscriber = client.manage_subscriptions();
        if let Err(e) = client.subscribe(channel.as_str()).await {
            resubscriber.abort();
            let _ = client.quit().await;
            return Err(ConnectError::from(Failure::from(e)));
        }
        Ok(Self {
            client,
            messages,
            channel,
            resubscriber,
        })
    }

    /// The channel this subscriber listens to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The name its connection carries on the server (`CLIENT LIST`, `CLIENT KILL`).
    pub fn connection_name(&self) -> &str {
        self.client.id()
    }

    /// The next event. Messages that are not valid events (another publisher, a newer
    /// format) are logged and skipped.
    ///
    /// # Errors
    /// [`SubscriberError::Lagged`] when messages were dropped because the reader was too
    /// slow (call again to continue); [`SubscriberError::Closed`] after
    /// [`close`](Self::close) or when the client shut down.
    pub async fn recv(&mut self) -> Result<OrderEvent, SubscriberError> {
        loop {
            let message = match self.messages.recv().await {
                Ok(message) => message,
                Err(RecvError::Lagged(n)) => return Err(SubscriberError::Lagged(n)),
                Err(RecvError::Closed) => return Err(SubscriberError::Closed),
            };
            if message.channel.as_bytes() != self.channel.as_bytes() {
                continue;
            }
            let Some(text) = message.value.as_str() else {
                tracing::warn!(channel = %self.channel, "skipping a non-text pub/sub message");
                continue;
            };
            match decode_event(&text) {
                Ok(event) => return Ok(event),
                Err(e) => {
                    tracing::warn!(channel = %self.channel, error = %e, "skipping an undecodable event");
                }
            }
        }
    }

    /// Unsubscribes and closes the connection.
    pub async fn close(self) {
        self.resubscriber.abort();
        let _ = self.client.unsubscribe_all().await;
        let _ = self.client.quit().await;
    }
}

impl Drop for RedisEventSubscriber {
    fn drop(&mut self) {
        self.resubscriber.abort();
        // Closing needs an await; hand it to the runtime if there is one, otherwise the
        // connection ends with the process.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}
