//! Live events in a binary: the Pusher-protocol gateway's settings (flags and
//! `PUSHER_*` / `ORDERS_WS_*` variables, read once), the relays that feed it the
//! engine's events (from the in-process bus or from Redis), the signer of
//! `/broadcasting/auth`, and the live demo page. Shared by `server` and `gateway`.

// A binary's module: it reads PUSHER_APP_SECRET, as only binaries may.
#![allow(clippy::disallowed_methods)]
// Each binary uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use order_engine::core::ports::OrderEvent;
use order_engine::pusher::{Gateway, PusherSettings};

/// Any error a binary reports before exiting non-zero.
type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// `PUSHER_APP_SECRET` when unset: the demo secret.
pub(crate) const DEMO_SECRET: &str = "orders-secret";

/// The gateway's app and limits. The demo defaults (`orders`, `orders-key`,
/// `orders-secret`) are for a laptop: set all three anywhere else. The secret comes
/// only from `PUSHER_APP_SECRET` (a flag would show it in `ps`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PusherArgs {
    /// The app id of the trigger API (`POST /apps/{id}/events`).
    #[arg(long, env = "PUSHER_APP_ID", default_value = "orders")]
    pub app_id: String,
    /// The public app key clients connect with (`/app/{key}`).
    #[arg(long, env = "PUSHER_APP_KEY", default_value = "orders-key")]
    pub app_key: String,
    /// Seconds of client silence before the server pings it (announced to clients).
    #[arg(long, env = "ORDERS_WS_ACTIVITY_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub activity_timeout_secs: u64,
    /// Seconds a pinged client has to answer before its socket is closed (4201).
    #[arg(long, env = "ORDERS_WS_PONG_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub pong_timeout_secs: u64,
    /// Most sockets open at once (more are refused with 4100); none by default.
    #[arg(long, env = "ORDERS_WS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
}

impl PusherArgs {
    /// The gateway these settings describe.
    pub(crate) fn gateway(&self) -> Result<Gateway, AnyError> {
        let secret = std::env::var("PUSHER_APP_SECRET").unwrap_or_else(|_| DEMO_SECRET.to_owned());
        let mut settings = PusherSettings::new(&self.app_id, &self.app_key, secret);
        settings.activity_timeout = Duration::from_secs(self.activity_timeout_secs);
        settings.pong_timeout = Duration::from_secs(self.pong_timeout_secs);
        settings.max_connections = self.max_connections;
        Ok(Gateway::new(settings)?)
    }
}

/// What the API's `/broadcasting/auth` signs with: the gateway's own signature.
pub(crate) fn signer(gateway: &Gateway) -> Arc<dyn order_engine::http::ChannelSigner> {
    let gateway = gateway.clone();
    Arc::new(move |socket_id: &str, channel: &str| {
        // The API validated both; a refusal here would be a bug in one of the two
        // validations, and an empty signature is refused by the gateway in turn.
        gateway.sign_channel(socket_id, channel).unwrap_or_default()
    })
}

/// Forwards every event of the in-process bus to `gateway`, on a task of its own, for
/// as long as the process runs. A relay that fell behind logs how many events it
/// skipped: clients find the gap in `seq` and read them from `GET /api/events`.
pub(crate) fn relay_bus(bus: &order_engine::memory::MemoryEventBus, gateway: Gateway) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = bus.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => forward(&gateway, &event),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "event relay fell behind");
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// Subscribes to the engine's events on Redis (`config`'s prefix) and forwards every
/// one to `gateway` on a task of its own; the subscriber reconnects and resubscribes on
/// its own. Several gateways on one Redis each get every event.
///
/// # Errors
/// When the subscription cannot be made (bad URL, Redis unreachable).
#[cfg(feature = "redis")]
pub(crate) async fn relay_redis(
    config: &order_engine::redis::RedisConfig,
    gateway: Gateway,
) -> Result<(), AnyError> {
    use order_engine::redis::{RedisEventSubscriber, SubscriberError};
    let mut subscriber = RedisEventSubscriber::subscribe(config).await?;
    tracing::info!(
        channel = subscriber.channel(),
        "relaying order events from Redis"
    );
    tokio::spawn(async move {
        loop {
            match subscriber.recv().await {
                Ok(event) => forward(&gateway, &event),
                Err(SubscriberError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "event relay fell behind");
                }
                Err(SubscriberError::Closed) => return,
            }
        }
    });
    Ok(())
}

fn forward(gateway: &Gateway, event: &OrderEvent) {
    let reached = gateway.publish_order_event(event);
    tracing::debug!(seq = event.seq, event = event.kind.name(), user = %event.user, reached, "relayed");
}

/// The live demo page, with the gateway's key and WebSocket port filled in.
pub(crate) fn page(key: &str, ws_port: u16) -> String {
    include_str!("live/index.html")
        .replace("__PUSHER_KEY__", key)
        .replace("__WS_PORT__", &ws_port.to_string())
}
