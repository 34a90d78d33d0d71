//! Live events, the HTTP side: `POST /broadcasting/auth` signs a WebSocket client's
//! subscription to its owner's private channel (Laravel's route, as pusher-js and
//! laravel-echo call it), and `GET /api/events?after=<seq>` returns the events a client
//! missed from the durable event log (DESIGN §6, §7).
//!
//! The signature itself is the gateway's business (its app key and secret): this crate
//! asks a [`ChannelSigner`] for it and never sees the secret.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use order_core::app::{ListProductsError, MAX_EVENTS_PAGE, ValidationErrors};
use order_core::ports::{OrderEvent, PayloadValue};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, server_fault};
use crate::json::{Json, has_content_type, parse_object, read_limited};
use crate::orders::input::{decode, query_pairs};

/// Signs a socket's subscription to a private channel: `key:hex(HMAC-SHA256(secret,
/// "socket_id:channel"))`, the `auth` string Pusher-protocol clients send with
/// `pusher:subscribe`. Implemented by the WebSocket gateway's wiring (the facade's
/// `order_engine::pusher` gateway), or by any closure of that shape.
pub trait ChannelSigner: Send + Sync {
    /// The `auth` value for `socket_id` subscribing to `channel`. Both were validated
    /// by the caller (`socket_id` is `digits.digits`, `channel` is the caller's own
    /// `private-orders.{id}`).
    fn sign(&self, socket_id: &str, channel: &str) -> String;
}

impl<F> ChannelSigner for F
where
    F: Fn(&str, &str) -> String + Send + Sync,
{
    fn sign(&self, socket_id: &str, channel: &str) -> String {
        self(socket_id, channel)
    }
}

/// The channel `user`'s order events go to (see `OrderEvent::channel`).
fn own_channel(user: order_core::UserId) -> String {
    format!("private-orders.{user}")
}

/// A Pusher socket id: `digits.digits`, as the gateway hands them out.
fn is_socket_id(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    text.split_once('.')
        .is_some_and(|(a, b)| digits(a) && digits(b))
}

/// `{"auth": "key:signature"}`.
#[derive(Debug, Serialize)]
pub(crate) struct ChannelAuth {
    /// The `auth` string for `pusher:subscribe`.
    auth: String,
}

/// The two fields, from a form-encoded body (what pusher-js and laravel-echo send) or
/// a JSON object.
fn auth_fields(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(Option<String>, Option<String>), ApiError> {
    let mut socket_id = None;
    let mut channel = None;
    if has_content_type(headers, "application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::MalformedJson("The form body is not valid UTF-8.".to_owned()))?;
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match decode(name).as_str() {
                "socket_id" => socket_id = Some(decode(value)),
                "channel_name" => channel = Some(decode(value)),
                // Clients may add their own parameters (Echo's `params`): ignored.
                _ => {}
            }
        }
    } else if has_content_type(headers, "application/json") {
        let object: Map<String, Value> = parse_object(bytes)?;
        socket_id = object
            .get("socket_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        channel = object
            .get("channel_name")
            .and_then(Value::as_str)
            .map(str::to_owned);
    } else {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok((socket_id, channel))
}

/// Signs the caller's subscription to its own private channel. Not in the OpenAPI
/// document: it is the Pusher protocol's authorisation hook (pusher-js and laravel-echo
/// call it), not part of the REST resource model.
pub(crate) async fn authorize_channel(
    State(state): State<ApiState>,
    Extension(Caller(caller)): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(signer) = state.signer.clone() else {
        return Err(ApiError::NotFound("Not found."));
    };
    let bytes = read_limited(&headers, body, state.settings.body_limit).await?;
    let (socket_id, channel) = auth_fields(&headers, &bytes)?;
    let mut errors = ValidationErrors::new();
    let socket_id = match socket_id {
        Some(s) if is_socket_id(&s) => Some(s),
        Some(_) => {
            errors.add("socket_id", "The socket_id must look like 1234.5678.");
            None
        }
        None => {
            errors.add("socket_id", "The socket_id field is required.");
            None
        }
    };
    let channel = match channel {
        Some(c) if !c.is_empty() && c.len() <= 200 => Some(c),
        Some(_) => {
            errors.add(
                "channel_name",
                "The channel_name must be 1 to 200 characters.",
            );
            None
        }
        None => {
            errors.add("channel_name", "The channel_name field is required.");
            None
        }
    };
    let (Some(socket_id), Some(channel)) = (socket_id, channel) else {
        return Err(ApiError::Validation(errors));
    };
    if channel != own_channel(caller.id) {
        return Err(ApiError::Forbidden(
            "You may only subscribe to your own private-orders channel.",
        ));
    }
    let auth = signer.sign(&socket_id, &channel);
    Ok(Json(ChannelAuth { auth }).into_response())
}

/// One logged event as `GET /api/events` returns it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventDto {
    /// The caller's per-user sequence number (1, 2, 3, … with no gap).
    seq: u64,
    /// `order.created`, `order.processing`, `order.paid`, `order.failed` or
    /// `order.cancelled`.
    event: &'static str,
    /// The private channel it was broadcast on.
    channel: String,
    /// The payload exactly as broadcast (`order_id` and `total` as strings, instants RFC
    /// 3339, `seq`).
    #[schema(value_type = Object)]
    data: Map<String, Value>,
}

impl From<&OrderEvent> for EventDto {
    fn from(event: &OrderEvent) -> Self {
        let data = event
            .payload()
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    PayloadValue::Text(text) => Value::String(text),
                    PayloadValue::Number(n) => Value::from(n),
                };
                (name.to_owned(), value)
            })
            .collect();
        EventDto {
            seq: event.seq,
            event: event.kind.name(),
            channel: event.channel(),
            data,
        }
    }
}

/// Facts about the slice of the log returned.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventsMeta {
    /// The `after` asked for.
    after: u64,
    /// The caller's latest seq.
    last_seq: u64,
    /// More events follow: ask again with `after` = the last `seq` returned.
    has_more: bool,
    /// Events right after `after` were pruned (older than the retention): re-read the
    /// orders themselves.
    truncated: bool,
}

/// `{"data": [Event], "meta": EventsMeta}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventList {
    data: Vec<EventDto>,
    meta: EventsMeta,
}

/// `after` (default 0) and `limit` (default 100, at most 500) from the query string;
/// anything else, a repeated or malformed one is a 422.
fn events_query(raw: Option<&str>) -> Result<(u64, u32), ApiError> {
    let mut errors = ValidationErrors::new();
    let (mut after, mut limit) = (0u64, 100u32);
    for (name, value) in query_pairs(raw, &mut errors) {
        let digits =
            !value.is_empty() && value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit());
        match name.as_str() {
            // Bounded like every integer of the API's document (a signed 64-bit value):
            // no seq comes near it.
            "after" => match value.parse::<i64>() {
                Ok(n) if digits => after = n.unsigned_abs(),
                _ => errors.add(
                    "after",
                    format!("The after field must be between 0 and {}.", i64::MAX),
                ),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if digits && (1..=MAX_EVENTS_PAGE).contains(&n) => limit = n,
                _ => errors.add(
                    "limit",
                    format!("The limit field must be between 1 and {MAX_EVENTS_PAGE}."),
                ),
            },
            _ => errors.add(
                name.clone(),
                format!("The {name} parameter is not supported."),
            ),
        }
    }
    if errors.is_empty() {
        Ok((after, limit))
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// The caller's events after a seq: what a client missed while disconnected.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    security(("bearer" = [])),
    params(
        ("after" = Option<i64>, Query, nullable = false, minimum = 0, maximum = 9223372036854775807_i64, description = "Return events with seq above this (default 0: from the start)"),
        ("limit" = Option<i64>, Query, nullable = false, minimum = 1, maximum = 500, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "The caller's events with seq > after, ascending", body = EventList),
        (status = 401, description = "Missing, malformed, unknown or expired token", body = crate::error::ErrorBody),
        (status = 422, description = "A parameter is unknown, repeated or out of range", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limit exceeded", body = crate::error::ErrorBody),
        (status = 503, description = "The order store is unavailable", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn list_events(
    State(state): State<ApiState>,
    Extension(Caller(caller)): Extension<Caller>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (after, limit) = events_query(uri.query())?;
    let page = state
        .service
        .events_after(caller.id, after, limit)
        .await
        .map_err(|e| match e {
            e @ ListProductsError::Unavailable(_) => server_fault(true, e),
            e @ ListProductsError::Unexpected(_) => server_fault(false, e),
        })?;
    let first = page.events.first().map(|e| e.seq);
    let last = page.events.last().map(|e| e.seq);
    let meta = EventsMeta {
        after,
        last_seq: page.last_seq,
        has_more: last.is_some_and(|l| l < page.last_seq),
        truncated: match first {
            Some(f) => f > after.saturating_add(1),
            None => page.last_seq > after,
        },
    };
    Ok(Json(EventList {
        data: page.events.iter().map(EventDto::from).collect(),
        meta,
    })
    .into_response())
}

/// The signer as the API state holds it.
pub(crate) type SharedSigner = Arc<dyn ChannelSigner>;
