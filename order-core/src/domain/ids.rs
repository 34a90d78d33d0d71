//! Identifiers. Every id is a positive 64-bit integer (database `BIGINT UNSIGNED`
//! auto-increment ids start at 1), so zero is rejected at the boundary.

use std::fmt;

/// Why a raw integer is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Identifiers start at 1.
    #[error("an id must be a positive integer")]
    Zero,
    /// Negative numbers are never identifiers.
    #[error("an id must be a positive integer, got {0}")]
    Negative(i64),
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a positive integer.
            ///
            /// # Errors
            /// [`IdError::Zero`] for 0.
            pub fn new(raw: u64) -> Result<Self, IdError> {
                if raw == 0 { Err(IdError::Zero) } else { Ok(Self(raw)) }
            }

            /// Wraps a signed integer as it arrives from JSON or SQL.
            ///
            /// # Errors
            /// [`IdError::Zero`] or [`IdError::Negative`] when `raw < 1`.
            pub fn from_i64(raw: i64) -> Result<Self, IdError> {
                match u64::try_from(raw) {
                    Ok(v) => Self::new(v),
                    Err(_) => Err(IdError::Negative(raw)),
                }
            }

            /// The raw value (always ≥ 1).
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// Identifies an order.
    OrderId
);
id_type!(
    /// Identifies a user (the owner of orders).
    UserId
);
id_type!(
    /// Identifies a product (a stock-keeping unit).
    ProductId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_negative_ids_are_rejected() {
        assert_eq!(OrderId::new(0), Err(IdError::Zero));
        assert_eq!(ProductId::from_i64(-3), Err(IdError::Negative(-3)));
        assert_eq!(UserId::from_i64(7).map(UserId::get), Ok(7));
    }
}
