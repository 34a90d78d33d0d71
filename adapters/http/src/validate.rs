//! Hand validation of JSON objects: [`Fields`] takes the known fields out of an object
//! one by one, records a message for every field at fault (a 422 lists them all at
//! once), and reports what is left over as unknown fields — no mass assignment.
//!
//! Messages follow the reference's (Laravel's) wording: "The email field is required.".

use order_core::app::ValidationErrors;
use serde_json::{Map, Value};

/// The id in a path segment (`/api/orders/{id}`): digits only, 1..=`i64::MAX` (what
/// every store can hold); anything else — `abc`, `0`, `-1`, a number past `i64::MAX`,
/// a path axum could not extract — names nothing, which the routes answer with 404.
pub(crate) fn path_id(
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Option<u64> {
    let Ok(axum::extract::Path(raw)) = path else {
        return None;
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<u64>()
        .ok()
        .filter(|n| (1..=i64::MAX as u64).contains(n))
}

/// The message for a field the API does not know.
pub(crate) const UNKNOWN_FIELD: &str = "unknown field";

/// A JSON object under validation, at a path (`""` for the body, `"items.2."` for an
/// item).
#[derive(Debug)]
pub(crate) struct Fields {
    object: Map<String, Value>,
    prefix: String,
    errors: ValidationErrors,
}

impl Fields {
    /// The body object.
    pub(crate) fn new(object: Map<String, Value>) -> Self {
        Self::nested(object, String::new())
    }

    /// An object nested at `prefix` (ending with `.`).
    pub(crate) fn nested(object: Map<String, Value>, prefix: String) -> Self {
        Self {
            object,
            prefix,
            errors: ValidationErrors::new(),
        }
    }

    /// The full name of `field` here (`items.2.quantity`).
    pub(crate) fn path(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// Records `message` for `field` (a name relative to this object).
    pub(crate) fn error(&mut self, field: &str, message: impl Into<String>) {
        let path = self.path(field);
        self.errors.add(path, message);
    }

    /// Takes `field` out of the object (so it is not reported as unknown).
    pub(crate) fn take(&mut self, field: &str) -> Option<Value> {
        self.object.remove(field)
    }

    /// A required string field of 1..=`max` characters.
    pub(crate) fn string(&mut self, field: &str, max: usize) -> Option<String> {
        let path = self.path(field);
        match self.take(field) {
            None | Some(Value::Null) => {
                self.error(field, format!("The {path} field is required."));
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                self.error(field, format!("The {path} field is required."));
                None
            }
            Some(Value::String(s)) if s.chars().count() > max => {
                self.error(
                    field,
                    format!("The {path} field must not be greater than {max} characters."),
                );
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.error(field, format!("The {path} field must be a string."));
                None
            }
        }
    }

    /// A required integer field within `min..=max`; floats, strings and numbers beyond
    /// `i64` are each an error of their own.
    pub(crate) fn integer(&mut self, field: &str, min: i64, max: i64) -> Option<i64> {
        let path = self.path(field);
        let value = self.take(field);
        let number = match value {
            None | Some(Value::Null) => {
                self.error(field, format!("The {path} field is required."));
                return None;
            }
            Some(Value::Number(n)) => n,
            Some(_) => {
                self.error(field, format!("The {path} field must be an integer."));
                return None;
            }
        };
        let in_range = |n: i64| (min..=max).contains(&n);
        match (number.as_i64(), number.as_u64()) {
            (Some(n), _) if in_range(n) => Some(n),
            (Some(_), _) | (None, Some(_)) => {
                self.error(
                    field,
                    format!("The {path} field must be between {min} and {max}."),
                );
                None
            }
            (None, None) => {
                self.error(field, format!("The {path} field must be an integer."));
                None
            }
        }
    }

    /// Reports every field not taken so far as unknown.
    pub(crate) fn reject_unknown(&mut self) {
        let left: Vec<String> = std::mem::take(&mut self.object).keys().cloned().collect();
        for field in left {
            self.error(&field, UNKNOWN_FIELD);
        }
    }

    /// Whether no field is at fault so far.
    pub(crate) fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Adds every error of `other` (a nested object's) to this one's.
    pub(crate) fn absorb(&mut self, other: Fields) {
        for (field, messages) in other.errors.fields() {
            for m in messages {
                self.errors.add(field.clone(), m.clone());
            }
        }
    }

    /// The errors recorded.
    pub(crate) fn into_errors(self) -> ValidationErrors {
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Fields {
        match v {
            Value::Object(m) => Fields::new(m),
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn every_kind_of_bad_integer_is_its_own_clear_error() {
        let mut f = fields(json!({
            "a": 1.5, "b": "3", "c": 0, "d": -1, "e": 9_223_372_036_854_775_808u64,
            "f": 7, "g": null
        }));
        for k in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            f.integer(k, 1, 10);
        }
        let errors = f.into_errors();
        let e = errors.fields();
        assert_eq!(e["a"], ["The a field must be an integer."]);
        assert_eq!(e["b"], ["The b field must be an integer."]);
        assert_eq!(e["c"], ["The c field must be between 1 and 10."]);
        assert_eq!(e["d"], ["The d field must be between 1 and 10."]);
        assert_eq!(e["e"], ["The e field must be between 1 and 10."]);
        assert!(!e.contains_key("f"));
        assert_eq!(e["g"], ["The g field is required."]);
        assert_eq!(e["h"], ["The h field is required."]);
    }

    #[test]
    fn fields_left_over_are_unknown_and_keep_their_path() {
        let Value::Object(m) = json!({"quantity": 1, "price": "9.99"}) else {
            unreachable!()
        };
        let mut f = Fields::nested(m, "items.0.".to_owned());
        f.integer("quantity", 1, 10);
        f.reject_unknown();
        assert_eq!(f.into_errors().fields()["items.0.price"], [UNKNOWN_FIELD]);
    }
}
