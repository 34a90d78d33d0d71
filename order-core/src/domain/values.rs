//! Small validated values: quantities, idempotency keys and request fingerprints.

use std::fmt;

/// Why a number is not a valid [`Quantity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Quantities are between [`Quantity::MIN`] and [`Quantity::MAX`].
    #[error("quantity must be between 1 and 10000, got {0}")]
    OutOfRange(i64),
}

/// How many units of one product a line orders: 1..=10 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u32);

impl Quantity {
    /// The smallest quantity.
    pub const MIN: u32 = 1;
    /// The largest quantity on one line (and on one merged product line).
    pub const MAX: u32 = 10_000;

    /// Validates a quantity.
    ///
    /// # Errors
    /// [`QuantityError::OutOfRange`] outside 1..=10 000.
    pub fn new(n: i64) -> Result<Self, QuantityError> {
        if (i64::from(Self::MIN)..=i64::from(Self::MAX)).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(QuantityError::OutOfRange(n))
        }
    }

    /// The number of units.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a string is not a valid [`IdempotencyKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// The key is empty.
    #[error("idempotency key must not be empty")]
    Empty,
    /// The key is longer than 255 bytes.
    #[error("idempotency key must be at most 255 characters, got {0}")]
    TooLong(usize),
    /// The key holds a character outside visible ASCII (`!`..=`~`).
    #[error("idempotency key must be visible ASCII (no spaces or control characters)")]
    InvalidCharacter,
}

/// A client-chosen key that makes order creation idempotent per user: 1..=255 visible
/// ASCII characters (`0x21..=0x7E`). Keys are scoped to a user, never global.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key.
    pub const MAX_LEN: usize = 255;

    /// Validates a key.
    ///
    /// # Errors
    /// [`IdempotencyKeyError`] when the key is empty, too long or not visible ASCII.
    pub fn new(key: impl Into<String>) -> Result<Self, IdempotencyKeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if key.len() > Self::MAX_LEN {
            return Err(IdempotencyKeyError::TooLong(key.len()));
        }
        if !key.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
            return Err(IdempotencyKeyError::InvalidCharacter);
        }
        Ok(Self(key))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stable 64-bit fingerprint of what a create request asked for (its merged lines),
/// stored next to the idempotency key so that a reused key with a different payload is
/// recognised. Stable across processes and releases: FNV-1a over a canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestFingerprint(u64);

impl RequestFingerprint {
    /// The fingerprint of merged `(product id, quantity)` pairs, which must be sorted by
    /// product id (as [`OrderDraft`](super::OrderDraft) keeps them).
    pub fn of_items(items: &[(u64, u32)]) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        for (product, qty) in items {
            for b in product.to_le_bytes().into_iter().chain(qty.to_le_bytes()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        }
        Self(h)
    }

    /// Rebuilds a stored fingerprint.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value, for storage.
    pub fn raw(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(10_001).is_err());
        assert_eq!(Quantity::new(10_000).map(Quantity::get), Ok(10_000));
    }

    #[test]
    fn idempotency_key_rules() {
        assert_eq!(IdempotencyKey::new(""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::new("a b"),
            Err(IdempotencyKeyError::InvalidCharacter)
        );
        assert_eq!(
            IdempotencyKey::new("é"),
            Err(IdempotencyKeyError::InvalidCharacter)
        );
        assert_eq!(
            IdempotencyKey::new("k".repeat(256)),
            Err(IdempotencyKeyError::TooLong(256))
        );
        assert!(IdempotencyKey::new("k".repeat(255)).is_ok());
    }

    #[test]
    fn fingerprints_differ_when_lines_differ() {
        let a = RequestFingerprint::of_items(&[(1, 2), (3, 1)]);
        assert_eq!(a, RequestFingerprint::of_items(&[(1, 2), (3, 1)]));
        assert_ne!(a, RequestFingerprint::of_items(&[(1, 2), (3, 2)]));
        assert_ne!(a, RequestFingerprint::of_items(&[(1, 2)]));
    }
}
