//! Money: an exact, non-negative amount with exactly two decimal places.
//!
//! Backed by `rust_decimal` so no amount ever passes through binary floating point.
//! Arithmetic is checked: overflow is an error value, never a panic or a wrap.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Why a value is not a valid [`Money`] amount, or an operation on amounts failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Amounts are never negative (refunds are modelled as events, not negative money).
    #[error("amount must not be negative")]
    Negative,
    /// More than two decimal places (after removing trailing zeros).
    #[error("amount must have at most two decimal places")]
    TooPrecise,
    /// Above [`Money::max`] (what a `DECIMAL(15,2)` column holds).
    #[error("amount exceeds the maximum of 9999999999999.99")]
    Overflow,
    /// The text is not a decimal number.
    #[error("not a decimal number")]
    Unparsable,
}

/// A non-negative amount with exactly two decimal places, at most [`Money::max`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

impl Money {
    /// The largest representable amount, 9 999 999 999 999.99 (fits `DECIMAL(15,2)`).
    pub const MAX_CENTS: u64 = 999_999_999_999_999;

    /// Zero.
    pub const ZERO: Money = Money(Decimal::from_parts(0, 0, 0, false, 2));

    /// The largest amount, as a `Money`.
    pub fn max() -> Money {
        Money(Decimal::new(Self::MAX_CENTS as i64, 2))
    }

    /// Validates a decimal: non-negative, at most two decimal places, at most the maximum.
    ///
    /// # Errors
    /// [`MoneyError::Negative`], [`MoneyError::TooPrecise`] or [`MoneyError::Overflow`].
    pub fn new(value: Decimal) -> Result<Self, MoneyError> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative);
        }
        let normalized = value.normalize();
        if normalized.scale() > 2 {
            return Err(MoneyError::TooPrecise);
        }
        let mut v = normalized;
        v.rescale(2);
        if v > Self::max().0 {
            return Err(MoneyError::Overflow);
        }
        // `-0` normalises to `0`; make sure the sign bit never survives.
        v.set_sign_positive(true);
        Ok(Self(v))
    }

    /// An amount in cents (hundredths).
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] above [`Money::MAX_CENTS`].
    pub fn from_cents(cents: u64) -> Result<Self, MoneyError> {
        if cents > Self::MAX_CENTS {
            return Err(MoneyError::Overflow);
        }
        Ok(Self(Decimal::new(cents as i64, 2)))
    }

    /// Parses text such as `"29.99"` or `"5"`.
    ///
    /// # Errors
    /// [`MoneyError::Unparsable`] for non-numbers, otherwise as [`Money::new`].
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let d = Decimal::from_str(text.trim()).map_err(|_| MoneyError::Unparsable)?;
        Self::new(d)
    }

    /// The amount as an exact decimal with scale 2.
    pub fn as_decimal(self) -> Decimal {
        self.0
    }

    /// The amount in cents.
    pub fn cents(self) -> u64 {
        // Scale is always 2 and the value is bounded by MAX_CENTS, so the mantissa fits.
        u64::try_from(self.0.mantissa()).unwrap_or(u64::MAX)
    }

    /// `self + other`, exactly.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when the sum exceeds the maximum.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        let sum = self.0.checked_add(other.0).ok_or(MoneyError::Overflow)?;
        Money::new(sum)
    }

    /// `self - other`, exactly.
    ///
    /// # Errors
    /// [`MoneyError::Negative`] when `other > self`.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        let diff = self.0.checked_sub(other.0).ok_or(MoneyError::Overflow)?;
        Money::new(diff)
    }

    /// `self × n`, exactly (a unit price times a quantity).
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when the product exceeds the maximum.
    pub fn checked_mul(self, n: u32) -> Result<Money, MoneyError> {
        let product = self
            .0
            .checked_mul(Decimal::from(n))
            .ok_or(MoneyError::Overflow)?;
        Money::new(product)
    }

    /// The exact sum of `amounts`.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when the sum exceeds the maximum.
    pub fn sum<I: IntoIterator<Item = Money>>(amounts: I) -> Result<Money, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Money::ZERO, Money::checked_add)
    }
}

impl fmt::Display for Money {
    /// Always two decimals, no thousands separator: `2029.97`, `0.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_total_is_exact() {
        let mouse = Money::parse("29.99").unwrap();
        let keyboard = Money::parse("149.99").unwrap();
        let total = mouse.checked_mul(2).unwrap().checked_add(keyboard).unwrap();
        assert_eq!(total.to_string(), "209.97");
    }

    #[test]
    fn invalid_amounts_are_rejected() {
        assert_eq!(Money::parse("-0.01"), Err(MoneyError::Negative));
        assert_eq!(Money::parse("1.001"), Err(MoneyError::TooPrecise));
        assert_eq!(Money::parse("abc"), Err(MoneyError::Unparsable));
        assert_eq!(Money::parse("10000000000000"), Err(MoneyError::Overflow));
        assert_eq!(
            Money::parse("1.500").map(|m| m.to_string()),
            Ok("1.50".into())
        );
        assert_eq!(Money::parse("-0").map(|m| m.to_string()), Ok("0.00".into()));
    }

    proptest! {
        #[test]
        fn addition_matches_integer_cents(a in 0..=Money::MAX_CENTS, b in 0..=Money::MAX_CENTS) {
            let (ma, mb) = (Money::from_cents(a).unwrap(), Money::from_cents(b).unwrap());
            match a.checked_add(b).filter(|s| *s <= Money::MAX_CENTS) {
                Some(s) => prop_assert_eq!(ma.checked_add(mb).unwrap().cents(), s),
                None => prop_assert_eq!(ma.checked_add(mb), Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn subtraction_never_goes_negative(a in 0..=Money::MAX_CENTS, b in 0..=Money::MAX_CENTS) {
            let r = Money::from_cents(a).unwrap().checked_sub(Money::from_cents(b).unwrap());
            if a >= b {
                prop_assert_eq!(r.unwrap().cents(), a - b);
            } else {
                prop_assert_eq!(r, Err(MoneyError::Negative));
            }
        }

        #[test]
        fn multiplication_is_exact_or_overflows(a in 0..=Money::MAX_CENTS, n in any::<u32>()) {
            let r = Money::from_cents(a).unwrap().checked_mul(n);
            match (a as u128).checked_mul(n as u128).filter(|p| *p <= Money::MAX_CENTS as u128) {
                Some(p) => prop_assert_eq!(r.unwrap().cents() as u128, p),
                None => prop_assert_eq!(r, Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn display_round_trips_with_two_decimals(a in 0..=Money::MAX_CENTS) {
            let m = Money::from_cents(a).unwrap();
            let text = m.to_string();
            prop_assert_eq!(text.split('.').nth(1).map(str::len), Some(2));
            prop_assert_eq!(Money::parse(&text).unwrap(), m);
        }

        #[test]
        fn sum_equals_fold_of_cents(v in proptest::collection::vec(0..=1_000_000_000u64, 0..60)) {
            let total = Money::sum(v.iter().map(|c| Money::from_cents(*c).unwrap())).unwrap();
            prop_assert_eq!(total.cents(), v.iter().sum::<u64>());
        }
    }
}
