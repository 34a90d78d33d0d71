//! JSON in and out: the request-body pipeline every JSON route shares (media type →
//! size limit → parse to an object, in that order) and [`Json`], the response wrapper.
//!
//! Bodies are parsed to a [`serde_json::Value`] and validated by hand, so that a 422
//! lists every field at fault at once, and so that no serde rejection text ever reaches
//! a client. serde_json's recursion limit bounds nesting: a deeply nested body is a 400,
//! not a stack overflow.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ApiError, ServerFault};

/// A JSON response body (`Content-Type: application/json`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                bytes,
            )
                .into_response(),
            // Our DTOs hold strings and integers only; should one ever fail, the client
            // gets the opaque 500 and the log gets the reason.
            Err(e) => {
                let mut response = (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    r#"{"message":"Internal server error.","error_code":"INTERNAL_ERROR"}"#,
                )
                    .into_response();
                response
                    .extensions_mut()
                    .insert(ServerFault(format!("cannot serialise the response: {e}")));
                response
            }
        }
    }
}

/// Whether `headers` declare a JSON body: `application/json`, any parameters
/// (`; charset=utf-8`) allowed, case-insensitively.
fn is_json(headers: &HeaderMap) -> bool {
    has_content_type(headers, "application/json")
}

/// Whether `headers` declare exactly one `Content-Type` whose essence is `essence`
/// (parameters allowed, case-insensitively).
pub(crate) fn has_content_type(headers: &HeaderMap, essence: &str) -> bool {
    // Two Content-Type headers declare no one type.
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next().and_then(|v| v.to_str().ok()), values.next()) else {
        return false;
    };
    let declared = value.split(';').next().unwrap_or_default().trim();
    declared.eq_ignore_ascii_case(essence)
}

/// Reads the whole body, at most `limit` bytes of it as streamed (the
/// `Content-Length` is only a shortcut for refusing early).
///
/// # Errors
/// 413 past the limit; 400 when the body could not be read at all.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::PayloadTooLarge(limit))
            } else {
                Err(ApiError::MalformedJson(
                    "The request body could not be read.".to_owned(),
                ))
            }
        }
    }
}

/// Parses `bytes` as one JSON object.
///
/// # Errors
/// 400 `MALFORMED_JSON` for an empty body, invalid JSON (with serde_json's line and
/// column), nesting beyond serde_json's recursion limit, or a value that is not an
/// object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson(
            "The request body is empty; a JSON object is expected.".to_owned(),
        ));
    }
    match serde_json::from_slice::<Strict>(bytes).map(|s| s.0) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::MalformedJson(
            "The request body must be a JSON object.".to_owned(),
        )),
        Err(e) => Err(ApiError::MalformedJson(format!(
            "The request body is not valid JSON: {e}."
        ))),
    }
}

/// A JSON value parsed like [`Value`], except that an object naming one member twice is
/// an error: `{"idempotency_key":"a","idempotency_key":"b"}` has no one meaning, and
/// taking the last (as `Value` does) would silently pick one.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity, so `from_f64` only fails on input serde_json
        // never produces; null is the harmless answer then.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if members.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate member `{key}`"
                )));
            }
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

/// The JSON-body pipeline: 415 unless `Content-Type` is JSON, 413 past `limit`, then
/// 400 unless the body is one JSON object.
///
/// # Errors
/// As above, in that order.
pub(crate) async fn json_object(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Map<String, Value>, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_limited(headers, body, limit).await?;
    parse_object(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_type_with_parameters_is_still_json() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON ; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/json"));
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jsonx"),
        );
        assert!(!is_json(&h));
    }

    #[test]
    fn nesting_beyond_the_recursion_limit_is_malformed_json_not_a_crash() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        let err = parse_object(deep.as_bytes()).err();
        assert!(matches!(err, Some(ApiError::MalformedJson(_))), "{err:?}");
    }

    #[test]
    fn arrays_scalars_and_blank_bodies_are_not_objects() {
        for body in ["[]", "1", "\"x\"", "null", "  ", ""] {
            let err = parse_object(body.as_bytes()).err();
            assert!(
                matches!(err, Some(ApiError::MalformedJson(_))),
                "{body}: {err:?}"
            );
        }
    }

    #[test]
    fn a_member_named_twice_at_any_depth_is_malformed_json() {
        for body in [
            r#"{"idempotency_key":"a","idempotency_key":"b","items":[]}"#,
            r#"{"items":[{"product_id":1,"quantity":1,"quantity":2}]}"#,
        ] {
            match parse_object(body.as_bytes()) {
                Err(ApiError::MalformedJson(m)) => assert!(m.contains("duplicate"), "{m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn strict_parsing_keeps_every_value_as_serde_json_reads_it() {
        let body = r#"{"a":[1,-2,18446744073709551615,1.5,1e30,"s",null,true,{"b":{}}]}"#;
        let strict = parse_object(body.as_bytes()).unwrap();
        let plain: Value = serde_json::from_str(
            r#"{"a":[1,-2,18446744073709551615,1.5,1e30,"s",null,true,{"b":{}}]}"#,
        )
        .unwrap();
        assert_eq!(Value::Object(strict), plain);
    }
}
