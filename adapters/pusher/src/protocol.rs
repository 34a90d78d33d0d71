//! The wire: Pusher protocol 7 frames the server sends and the client messages it reads,
//! and the error/close codes it uses.
//!
//! Server→client `data` is always a JSON *string* holding JSON (pusher-js parses it a
//! second time); client→server `data` is an object (a string holding an object is
//! accepted too).

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

/// The `pusher:error` codes and WebSocket close codes the gateway uses.
///
/// Pusher's ranges decide what pusher-js does after a close: 4000–4099 it does not
/// reconnect, 4100–4199 it reconnects with back-off, 4200–4299 it reconnects at once,
/// 4300–4399 it does not reconnect. Texts and codes follow Pusher's protocol
/// documentation and Laravel Reverb's server where Reverb has one.
pub mod codes {
    /// `GET /app/{key}` with a key this gateway does not serve (error, then close).
    pub const UNKNOWN_APP: u16 = 4001;
    /// `protocol` query parameter missing or not 7 (error, then close).
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// A private-channel subscription with a missing or wrong signature (error only:
    /// the socket stays open, as in Reverb).
    pub const UNAUTHORIZED: u16 = 4009;
    /// The gateway holds `max_connections` sockets already (error, then close).
    pub const OVER_CAPACITY: u16 = 4100;
    /// A malformed client message (not JSON, no `event`, binary, an unknown
    /// `pusher:` event): error only, as Reverb's "Invalid message format". Also the
    /// close code of [`Gateway::shutdown`](crate::Gateway::shutdown), "reconnect at
    /// once" (to another instance behind the load balancer).
    pub const INVALID_MESSAGE: u16 = 4200;
    /// Close code of a shutdown: reconnect at once.
    pub const SHUTTING_DOWN: u16 = 4200;
    /// A pinged client said nothing for `pong_timeout` (error, then close).
    pub const PONG_TIMEOUT: u16 = 4201;
    /// A client message larger than `max_message_bytes` (error, then close).
    pub const MESSAGE_TOO_LARGE: u16 = 4300;
    /// A `client-*` event: client events are not enabled (error only; Reverb's code
    /// and text when an app has client messaging off).
    pub const CLIENT_EVENTS_DISABLED: u16 = 4301;
}

#[derive(Serialize)]
struct Outgoing<'a> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    data: &'a str,
}

/// A frame `{"event":…,"channel":…,"data":"…"}` where `data` is JSON text sent as a
/// string.
pub(crate) fn frame(event: &str, channel: Option<&str>, data: &str) -> Utf8Bytes {
    let out = Outgoing {
        event,
        channel,
        data,
    };
    // Serializing strs into a String cannot fail.
    Utf8Bytes::from(serde_json::to_string(&out).unwrap_or_default())
}

/// `pusher:connection_established`.
pub(crate) fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> Utf8Bytes {
    let data =
        serde_json::json!({ "socket_id": socket_id, "activity_timeout": activity_timeout_secs });
    frame("pusher:connection_established", None, &data.to_string())
}

/// `pusher:error` with `{"code":…,"message":…}` (as a string, like Reverb).
pub(crate) fn error(code: u16, message: &str) -> Utf8Bytes {
    let data = serde_json::json!({ "code": code, "message": message });
    frame("pusher:error", None, &data.to_string())
}

/// `pusher:subscription_error` for `channel`: the `{type, error, status}` pusher-js hands
/// to `.error()` callbacks.
pub(crate) fn subscription_error(
    channel: &str,
    kind: &str,
    message: &str,
    status: u16,
) -> Utf8Bytes {
    let data = serde_json::json!({ "type": kind, "error": message, "status": status });
    frame(
        "pusher:subscription_error",
        Some(channel),
        &data.to_string(),
    )
}

/// `pusher_internal:subscription_succeeded` for `channel`.
pub(crate) fn subscription_succeeded(channel: &str) -> Utf8Bytes {
    frame(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        "{}",
    )
}

pub(crate) const PONG: &str = r#"{"event":"pusher:pong","data":"{}"}"#;
pub(crate) const PING: &str = r#"{"event":"pusher:ping","data":"{}"}"#;

/// A client message, before its `data` is interpreted.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming {
    pub(crate) event: String,
    #[serde(default)]
    pub(crate) data: Option<serde_json::Value>,
}

/// The `data` of `pusher:subscribe` / `pusher:unsubscribe`.
#[derive(Debug, Deserialize)]
pub(crate) struct ChannelData {
    pub(crate) channel: String,
    #[serde(default)]
    pub(crate) auth: Option<String>,
}

impl Incoming {
    /// `data` as a channel request: an object, or a string holding one.
    pub(crate) fn channel_data(self) -> Option<ChannelData> {
        match self.data? {
            serde_json::Value::String(text) => serde_json::from_str(&text).ok(),
            value @ serde_json::Value::Object(_) => serde_json::from_value(value).ok(),
            _ => None,
        }
    }
}

/// The `data` JSON object of an order event: its payload fields in order, text as JSON
/// strings and numbers as JSON numbers.
pub(crate) fn order_event_data(event: &order_core::ports::OrderEvent) -> String {
    use order_core::ports::PayloadValue;
    let mut out = String::from("{");
    for (i, (name, value)) in event.payload().into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_string(name));
        out.push(':');
        match value {
            PayloadValue::Text(text) => out.push_str(&json_string(&text)),
            PayloadValue::Number(n) => out.push_str(&n.to_string()),
        }
    }
    out.push('}');
    out
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}
