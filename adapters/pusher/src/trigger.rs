//! The Pusher HTTP trigger API, `POST /apps/{app_id}/events`: other services publish
//! through the gateway with a signed request, as with Pusher's server libraries.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::{self, is_valid_channel_name};
use crate::gateway::Inner;

/// Largest `data` string of one event (Pusher's limit: 10 KiB).
pub const MAX_EVENT_DATA_BYTES: usize = 10 * 1024;
/// Most channels one trigger request may name (Pusher's limit).
pub const MAX_TRIGGER_CHANNELS: usize = 100;
/// Longest event name.
pub const MAX_EVENT_NAME_LEN: usize = 200;
/// Largest request body accepted: the data, 100 channel names and the JSON around them.
pub const MAX_TRIGGER_BODY_BYTES: usize = 64 * 1024;
/// How far `auth_timestamp` may be from the server's clock, in seconds.
const MAX_CLOCK_SKEW_SECS: u64 = 600;

#[derive(Debug, Deserialize)]
struct TriggerBody {
    name: String,
    data: String,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    /// A socket not to send the event to (the one whose action caused it).
    #[serde(default)]
    socket_id: Option<String>,
}

pub(crate) async fn handle(
    State(inner): State<Arc<Inner>>,
    Path(app_id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if app_id != inner.settings.app_id {
        return json_error(StatusCode::NOT_FOUND, "No matching application for this ID");
    }
    let params = parse_query(query.as_deref().unwrap_or(""));
    let Some(params) = params else {
        return json_error(StatusCode::BAD_REQUEST, "Malformed query string");
    };
    if let Err(message) = authenticate(&inner, &app_id, &params, &body) {
        tracing::debug!(message, "trigger request refused");
        return json_error(StatusCode::UNAUTHORIZED, message);
    }
    let request: TriggerBody = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "Body must be JSON {\"name\", \"data\" (a string), \"channels\" or \"channel\"}",
            );
        }
    };
    let channels = match (request.channels, request.channel) {
        (Some(channels), _) => channels,
        (None, Some(channel)) => vec![channel],
        (None, None) => return json_error(StatusCode::BAD_REQUEST, "No channels given"),
    };
    if channels.is_empty() || channels.len() > MAX_TRIGGER_CHANNELS {
        return json_error(
            StatusCode::BAD_REQUEST,
            "Between 1 and 100 channels are allowed",
        );
    }
    if !channels.iter().all(|c| is_valid_channel_name(c)) {
        return json_error(StatusCode::BAD_REQUEST, "Invalid channel name");
    }
    if request.name.is_empty() || request.name.len() > MAX_EVENT_NAME_LEN {
        return json_error(StatusCode::BAD_REQUEST, "Invalid event name");
    }
    if request.data.len() > MAX_EVENT_DATA_BYTES {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Event data is larger than 10 KiB",
        );
    }
    let except = match request.socket_id.as_deref() {
        None => None,
        Some(socket_id) => match parse_socket_id(socket_id) {
            Some(except) => Some(except),
            None => return json_error(StatusCode::BAD_REQUEST, "Invalid socket_id"),
        },
    };
    for channel in &channels {
        inner.publish(channel, &request.name, &request.data, except);
    }
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

/// Checks key, timestamp, body digest and signature; the refusal's message otherwise.
fn authenticate(
    inner: &Inner,
    app_id: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Result<(), &'static str> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let settings = &inner.settings;
    let (Some(key), Some(timestamp), Some(signature)) = (
        param("auth_key"),
        param("auth_timestamp"),
        param("auth_signature"),
    ) else {
        return Err("Missing auth_key, auth_timestamp or auth_signature");
    };
    if key != settings.key {
        return Err("Unknown auth_key");
    }
    let timestamp: u64 = timestamp.parse().map_err(|_| "Invalid auth_timestamp")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(timestamp) > MAX_CLOCK_SKEW_SECS {
        return Err("auth_timestamp is more than 600 s away from the server's time");
    }
    if !body.is_empty() && param("body_md5") != Some(auth::body_md5(body).as_str()) {
        return Err("body_md5 does not match the body");
    }
    let to_sign = auth::trigger_string_to_sign(&format!("/apps/{app_id}/events"), params);
    auth::verify_trigger_signature(settings.secret.expose(), &to_sign, signature)
        .map_err(|_| "Invalid auth_signature")
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `(random half, sequence)` of a `digits.digits` socket id.
fn parse_socket_id(socket_id: &str) -> Option<(u32, u64)> {
    let (tag, id) = socket_id.split_once('.')?;
    if !auth::is_valid_socket_id(socket_id) {
        return None;
    }
    Some((tag.parse().ok()?, id.parse().ok()?))
}

/// `application/x-www-form-urlencoded` pairs, decoded; `None` if an escape is broken.
fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("a=1&b=x%20y+z&c"),
            Some(vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "x y z".to_owned()),
                ("c".to_owned(), String::new()),
            ])
        );
        assert_eq!(parse_query("a=%zz"), None);
    }

    #[test]
    fn socket_ids() {
        assert_eq!(parse_socket_id("12.34"), Some((12, 34)));
        assert_eq!(parse_socket_id("12.x"), None);
    }
}
