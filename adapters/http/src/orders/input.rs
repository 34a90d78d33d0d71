//! What an order request sent, parsed and checked by hand: the create body (with the
//! `Idempotency-Key` header) and the list query string. Every field at fault is listed
//! at once; `user_id` naming someone else is refused as 403 before any 422.

use axum::http::HeaderMap;
use order_core::app::{MAX_LINES, ValidationErrors};
use order_core::{
    CreateOrderRequest, IdempotencyKey, OrderQuery, OrderStatus, Quantity, RequestedItem, UserId,
};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::validate::Fields;

/// The header that may carry the idempotency key instead of the body.
pub(crate) const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The largest page number accepted.
pub(crate) const MAX_PAGE: i64 = u32::MAX as i64;
/// The largest `per_page` accepted.
pub(crate) const MAX_PER_PAGE: i64 = 50;
/// The default `per_page`.
pub(crate) const DEFAULT_PER_PAGE: i64 = 15;

/// Parses a create body for `caller`.
///
/// # Errors
/// 403 `FORBIDDEN` when `user_id` names another user; otherwise 422 listing every field
/// at fault: unknown fields (`status`, `items.0.price`), `items` (1..=50 objects as
/// sent), `items.{i}.product_id` (positive integer), `items.{i}.quantity` (1..=10000),
/// `idempotency_key` (required in the body or the header, the same in both, 1..=255
/// visible ASCII) and `user_id` (an integer or a string of digits).
pub(crate) fn create_request(
    object: Map<String, Value>,
    headers: &HeaderMap,
    caller: UserId,
) -> Result<CreateOrderRequest, ApiError> {
    let mut fields = Fields::new(object);

    if let Some(user) = fields.take("user_id") {
        match user_id(&user) {
            Some(id) if id == caller.get() => {}
            Some(_) => {
                return Err(ApiError::Forbidden(
                    "You may only place orders for yourself.",
                ));
            }
            None => fields.error(
                "user_id",
                "The user_id field must be an integer (your own user id).",
            ),
        }
    }

    let items = items(&mut fields);
    let key = idempotency_key(&mut fields, headers);
    fields.reject_unknown();

    match (items, key) {
        (Some(items), Some(idempotency_key)) if fields.is_ok() => Ok(CreateOrderRequest {
            user: caller,
            items,
            idempotency_key,
        }),
        _ => Err(ApiError::Validation(fields.into_errors())),
    }
}

/// A `user_id` as sent: a non-negative integer, or a string of digits.
fn user_id(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// The `items` array: 1..=[`MAX_LINES`] objects of `{product_id, quantity}`.
fn items(fields: &mut Fields) -> Option<Vec<RequestedItem>> {
    let list = match fields.take("items") {
        None | Some(Value::Null) => {
            fields.error("items", "The items field is required.");
            return None;
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            fields.error("items", "The items field must be an array.");
            return None;
        }
    };
    if list.is_empty() {
        fields.error("items", "The items field must have at least 1 item.");
    }
    if list.len() > MAX_LINES {
        fields.error(
            "items",
            format!(
                "The items field must not have more than {MAX_LINES} items, got {}.",
                list.len()
            ),
        );
    }
    let mut items = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let Value::Object(object) = item else {
            fields.error(
                &format!("items.{i}"),
                format!("The items.{i} field must be an object."),
            );
            continue;
        };
        let mut item = Fields::nested(object, format!("items.{i}."));
        let product_id = item.integer("product_id", 1, i64::MAX);
        let quantity = item.integer(
            "quantity",
            i64::from(Quantity::MIN),
            i64::from(Quantity::MAX),
        );
        item.reject_unknown();
        fields.absorb(item);
        if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
            items.push(RequestedItem {
                product_id,
                quantity,
            });
        }
    }
    fields.is_ok().then_some(items)
}

/// The idempotency key from the body or the `Idempotency-Key` header (the same in
/// both when both are sent), checked as an [`IdempotencyKey`].
fn idempotency_key(fields: &mut Fields, headers: &HeaderMap) -> Option<String> {
    const FIELD: &str = "idempotency_key";
    let body = match fields.take(FIELD) {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            fields.error(FIELD, "The idempotency_key field must be a string.");
            return None;
        }
    };
    if headers
        .get_all(IDEMPOTENCY_KEY_HEADER)
        .iter()
        .nth(1)
        .is_some()
    {
        fields.error(
            FIELD,
            "The Idempotency-Key header must be sent at most once.",
        );
        return None;
    }
    let header = match headers.get(IDEMPOTENCY_KEY_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.to_owned()),
        Some(Err(_)) => {
            fields.error(
                FIELD,
                "The Idempotency-Key header must be visible ASCII (no spaces or control characters).",
            );
            return None;
        }
    };
    let key = match (body, header) {
        (None, None) => {
            fields.error(
                FIELD,
                "The idempotency_key field is required (in the body or the Idempotency-Key header).",
            );
            return None;
        }
        (Some(b), Some(h)) if b != h => {
            fields.error(
                FIELD,
                "The idempotency_key field and the Idempotency-Key header must be the same.",
            );
            return None;
        }
        (Some(k), _) | (None, Some(k)) => k,
    };
    match IdempotencyKey::new(key.as_str()) {
        Ok(_) => Some(key),
        Err(e) => {
            fields.error(FIELD, format!("The {e}."));
            None
        }
    }
}

/// Parses the raw query of `GET /api/orders`: `status` (a status name, upper case as
/// documented),
/// `page` (1..=2^32-1, default 1), `per_page` (1..=50, default 15).
///
/// # Errors
/// 422 listing every parameter at fault: unknown, repeated, empty, not an integer or out
/// of range, or an unknown status.
pub(crate) fn list_query(raw: Option<&str>) -> Result<OrderQuery, ApiError> {
    let mut errors = ValidationErrors::new();
    let mut query = OrderQuery {
        status: None,
        page: 1,
        per_page: DEFAULT_PER_PAGE,
    };
    for (name, value) in query_pairs(raw, &mut errors) {
        match name.as_str() {
            "status" => match OrderStatus::ALL.into_iter().find(|s| s.as_str() == value) {
                Some(s) => query.status = Some(s),
                None => errors.add(
                    "status",
                    "The selected status is invalid (PENDING, PROCESSING, PAID, FAILED or CANCELLED).",
                ),
            },
            "page" => match bounded(&value, 1, MAX_PAGE) {
                Ok(n) => query.page = n,
                Err(why) => errors.add("page", format!("The page field {why}.")),
            },
            "per_page" => match bounded(&value, 1, MAX_PER_PAGE) {
                Ok(n) => query.per_page = n,
                Err(why) => errors.add("per_page", format!("The per_page field {why}.")),
            },
            _ => errors.add(name.clone(), format!("The {name} parameter is not supported.")),
        }
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// `text` as an integer within `min..=max`, or why not.
fn bounded(text: &str, min: i64, max: i64) -> Result<i64, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be an integer".to_owned());
    }
    match text.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be between {min} and {max}")),
    }
}

/// The decoded `name=value` pairs of a query string, each name once: a name given
/// again is recorded in `errors` ("must be given once") and its later values skipped.
/// Every strict query parser of the API reads its parameters through this.
pub(crate) fn query_pairs(
    raw: Option<&str>,
    errors: &mut ValidationErrors,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name), decode(value));
        if pairs.iter().any(|(seen, _)| *seen == name) {
            errors.add(
                name.clone(),
                format!("The {name} parameter must be given once."),
            );
            continue;
        }
        pairs.push((name, value));
    }
    pairs
}

/// Percent-decodes a query component (`+` is a space); invalid escapes stay as sent,
/// invalid UTF-8 becomes U+FFFD.
pub(crate) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(decode("per%5Fpage"), "per_page");
        assert_eq!(decode("a+b%20c"), "a b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn defaults_apply_and_every_bad_parameter_is_listed() {
        assert_eq!(list_query(None).ok(), Some(OrderQuery::default()));
        let q = list_query(Some("status=PAID&page=2&per_page=50")).ok();
        assert_eq!(
            q,
            Some(OrderQuery {
                status: Some(OrderStatus::Paid),
                page: 2,
                per_page: 50
            })
        );
        let Err(ApiError::Validation(e)) =
            list_query(Some("status=paid&page=0&per_page=abc&user_id=1&page=3"))
        else {
            panic!("expected a validation error");
        };
        let keys: Vec<_> = e.fields().keys().cloned().collect();
        assert_eq!(keys, ["page", "per_page", "status", "user_id"]);
        assert_eq!(e.fields()["page"].len(), 2, "out of range, and repeated");
    }
}
