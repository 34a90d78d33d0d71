//! The [`Gateway`]: the router (WebSocket endpoint and trigger API), local fan-out and
//! shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::auth::{self, AuthError};
use crate::connection;
use crate::hub::Hub;
use crate::protocol::{self, codes};
use crate::settings::{PusherSettings, SettingsError};
use crate::trigger;

/// Read buffer per socket. Client messages are small (subscribe, ping); a larger one
/// grows the buffer for its duration. Tungstenite's default (128 KiB) would cost more
/// than everything else a connection holds.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// A Pusher protocol 7 server for one app: a drop-in for Laravel Reverb as far as
/// pusher-js 8 and laravel-echo 2 clients see, for public and `private-` channels.
///
/// Cloning is cheap and every clone is the same gateway. Fan-out is local to this
/// process: with several instances, each gets every event (e.g. from the Redis event
/// bus) and publishes it to its own sockets.
///
/// Not supported: `presence-` and `private-encrypted-` channels (a subscription gets
/// `pusher:subscription_error` with status 501) and client events (`client-*` get
/// `pusher:error` 4301, the socket stays open). See [`codes`](crate::codes) for every
/// error and close code.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) settings: PusherSettings,
    pub(crate) hub: Hub,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl Inner {
    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn publish(
        &self,
        channel: &str,
        event: &str,
        data: &str,
        except: Option<(u32, u64)>,
    ) -> usize {
        let frame = protocol::frame(event, Some(channel), data);
        self.hub.publish(channel, &frame, except)
    }
}

impl Gateway {
    /// A gateway with no connections yet.
    ///
    /// # Errors
    /// [`SettingsError`] when the settings are invalid ([`PusherSettings::validate`]).
    pub fn new(settings: PusherSettings) -> Result<Gateway, SettingsError> {
        settings.validate()?;
        let (shutdown, _) = watch::channel(false);
        Ok(Gateway {
            inner: Arc::new(Inner {
                settings,
                hub: Hub::default(),
                next_id: AtomicU64::new(0),
                shutdown,
            }),
        })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &PusherSettings {
        &self.inner.settings
    }

    /// The routes, to serve alone or merge into another router:
    ///
    /// - `GET /app/{key}?protocol=7&…` — the WebSocket endpoint. A key other than this
    ///   app's gets `pusher:error` 4001 and a close with 4001; a `protocol` other than
    ///   7 (or none) gets 4007 likewise.
    /// - `POST /apps/{app_id}/events?auth_key=…&auth_timestamp=…&auth_version=1.0&body_md5=…&auth_signature=…`
    ///   — the signed trigger API, body `{"name","data","channels"|"channel","socket_id"?}`:
    ///   200 `{}`; 401 for a bad key, timestamp (over 600 s off), body digest or
    ///   signature; 400 for a malformed body or more than 100 channels; 413 for data
    ///   over 10 KiB; 404 for another app id.
    ///
    /// After [`shutdown`](Self::shutdown) began, the WebSocket endpoint answers 503.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/app/{key}", get(connect))
            .route(
                "/apps/{app_id}/events",
                post(trigger::handle).layer(DefaultBodyLimit::max(trigger::MAX_TRIGGER_BODY_BYTES)),
            )
            .with_state(Arc::clone(&self.inner))
    }

    /// Sends event `event` with `data` (JSON text, sent as the frame's `data` string) to
    /// every socket of this process subscribed to `channel`. Returns how many sockets it
    /// was queued to; a socket whose queue is full is dropped instead. Never blocks:
    /// costs O(subscribers of `channel`).
    pub fn publish(&self, channel: &str, event: &str, data: &str) -> usize {
        self.inner.publish(channel, event, data, None)
    }

    /// Publishes an order event to its owner's channel `private-orders.{user}` under
    /// its name (`order.paid`, …), `data` being the JSON object of
    /// [`OrderEvent::payload`](order_core::ports::OrderEvent::payload) in field order
    /// (text as strings, numbers as numbers). Returns the sockets reached.
    pub fn publish_order_event(&self, event: &order_core::ports::OrderEvent) -> usize {
        let data = protocol::order_event_data(event);
        self.inner
            .publish(&event.channel(), event.kind.name(), &data, None)
    }

    /// Sockets open now (handshaken and not yet closed).
    pub fn connections(&self) -> usize {
        self.inner.hub.connections()
    }

    /// Channels with at least one subscriber now.
    pub fn channels(&self) -> usize {
        self.inner.hub.channel_count()
    }

    /// The `auth` token a client needs to subscribe `socket_id` to the private channel
    /// `channel_name`: `"{key}:{hex(HMAC-SHA256(secret, "{socket_id}:{channel_name}"))}"`.
    /// For the application's auth endpoint (`/broadcasting/auth`).
    ///
    /// # Errors
    /// [`AuthError::InvalidSocketId`] unless `socket_id` is `digits.digits`;
    /// [`AuthError::InvalidChannel`] for a name outside Pusher's rules.
    pub fn sign_channel(&self, socket_id: &str, channel_name: &str) -> Result<String, AuthError> {
        if !auth::is_valid_socket_id(socket_id) {
            return Err(AuthError::InvalidSocketId);
        }
        if !auth::is_valid_channel_name(channel_name) {
            return Err(AuthError::InvalidChannel);
        }
        let settings = &self.inner.settings;
        let signature = auth::channel_signature(settings.secret.expose(), socket_id, channel_name);
        Ok(format!("{}:{signature}", settings.key))
    }

    /// Closes every socket and refuses new ones; returns once every socket is gone.
    ///
    /// Each socket gets a close frame with code 4200 ("reconnect at once": pusher-js
    /// reconnects straight away, to another instance behind the load balancer) and has
    /// up to a second for the close handshake. New WebSocket requests are answered 503
    /// from the start. The listener itself belongs to the caller (e.g. axum's graceful
    /// shutdown): upgraded sockets are not HTTP requests, so only this closes them.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        loop {
            let idle = self.inner.hub.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.connections() == 0 {
                return;
            }
            idle.await;
        }
    }
}

async fn connect(
    State(inner): State<Arc<Inner>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    if inner.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let refusal = if key != inner.settings.key {
        Some((codes::UNKNOWN_APP, "Application does not exist"))
    } else if protocol_version(query.as_deref()) != Some("7") {
        Some((codes::UNSUPPORTED_PROTOCOL, "Unsupported protocol version"))
    } else {
        None
    };
    let max = inner.settings.max_message_bytes;
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        // Flush every frame as it is sent: nothing accumulates per connection.
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            match refusal {
                Some((code, message)) => connection::refuse(socket, code, message).await,
                None => connection::run(socket, inner).await,
            }
        })
}

fn protocol_version(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("protocol="))
}
