//! Domain instants in and out of `DATETIME(3)` columns.
//!
//! The domain's [`Timestamp`] is milliseconds since the Unix epoch, UTC. Writes bind it
//! as UTC text (`2024-02-29 12:34:56.789`), which both servers parse into a `DATETIME(3)`
//! exactly; reads turn the column back into milliseconds in SQL with
//! [`ms!`](crate::time::ms) (`TIMESTAMPDIFF` from the epoch), pure calendar arithmetic
//! that depends neither on the session time zone nor on the 2038 limit of
//! `UNIX_TIMESTAMP`. Round trips are exact to the millisecond. No sqlx type is involved.

use order_core::Timestamp;

use crate::error::DbError;

/// The SQL expression reading a `DATETIME(3)` column as signed milliseconds since the
/// Unix epoch (NULL stays NULL), as a string literal usable in `concat!`.
macro_rules! ms {
    ($column:literal) => {
        concat!(
            "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', ",
            $column,
            ") DIV 1000 AS SIGNED)"
        )
    };
}
pub(crate) use ms;

/// `ts` as `YYYY-MM-DD HH:MM:SS.mmm` in UTC, the text form of a `DATETIME(3)`. Instants
/// after the year 9999 produce text the server refuses (so they fail loudly).
pub(crate) fn to_sql(ts: Timestamp) -> String {
    // `to_rfc3339` is `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    let text = ts.to_rfc3339();
    text.strip_suffix('Z')
        .unwrap_or(&text)
        .replacen('T', " ", 1)
}

/// Milliseconds read with [`ms!`] as a [`Timestamp`].
pub(crate) fn from_sql(millis: i64, column: &str) -> Result<Timestamp, DbError> {
    u64::try_from(millis)
        .map(Timestamp::from_millis)
        .map_err(|_| DbError::data(format!("{column} is before 1970: {millis} ms")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_format_as_datetime_text() {
        assert_eq!(
            to_sql(Timestamp::from_millis(1_709_210_096_789)),
            "2024-02-29 12:34:56.789"
        );
        assert_eq!(to_sql(Timestamp::from_millis(0)), "1970-01-01 00:00:00.000");
    }

    #[test]
    fn negative_milliseconds_are_refused() {
        assert!(from_sql(-1, "created_at").is_err());
        assert_eq!(
            from_sql(5, "created_at").ok(),
            Some(Timestamp::from_millis(5))
        );
    }
}
