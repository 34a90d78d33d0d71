//! A WebSocket gateway speaking the Pusher Channels protocol 7, so that unmodified
//! `pusher-js` 8 and `laravel-echo` 2 clients (configured for Laravel Reverb) receive
//! order events live.
//!
//! [`Gateway`] serves `GET /app/{key}` (the WebSocket endpoint: connection handshake,
//! public and `private-` channel subscriptions with HMAC-SHA256 signatures, ping/pong,
//! idle pruning) and `POST /apps/{app_id}/events` (Pusher's signed trigger API), and
//! publishes order events with [`Gateway::publish_order_event`]. Fan-out is local to
//! the process; several instances each forward the shared event bus.
//!
//! Codes and texts follow Pusher's protocol documentation and Laravel Reverb's server;
//! [`codes`] lists them.

mod auth;
mod connection;
mod gateway;
mod hub;
mod protocol;
mod settings;
mod trigger;

pub use auth::{AuthError, MAX_CHANNEL_NAME_LEN, channel_signature, trigger_query};
pub use gateway::Gateway;
pub use protocol::codes;
pub use settings::{AppSecret, PusherSettings, SettingsError};
pub use trigger::{
    MAX_EVENT_DATA_BYTES, MAX_EVENT_NAME_LEN, MAX_TRIGGER_BODY_BYTES, MAX_TRIGGER_CHANNELS,
};
