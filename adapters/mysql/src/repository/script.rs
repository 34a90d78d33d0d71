//! Scripts: several statements sent to the server as one text — the protocol's
//! multi-statements — so that they cost one round trip instead of one each. The batch
//! path (`batch.rs`) runs its transaction as two scripts: the locking reads, then every
//! write and the `COMMIT`. On a hot product those round trips are spent while the
//! product's row is locked, so they bound the throughput.
//!
//! **Values.** A script is written from static SQL and typed values only:
//! - unsigned integers, and decimals, in their plain decimal form (digits, `.` and `-`);
//! - idempotency keys as `_ascii X'…' COLLATE ascii_bin`;
//! - any other text as `_utf8mb4 X'…'`.
//!
//! A hex literal's digits cannot end it, so no value can change what a statement says.
//! Nothing a client sent is ever copied into a script as it is, and a script is as safe
//! as a statement with placeholders. Scripts use the text protocol, so nothing is
//! prepared and sqlx's statement cache is not involved.
//!
//! **Running.** The statements run in order, and the first error stops the script: the
//! statements after it do not run. [`ScriptTx`] is a transaction opened by a script's
//! `BEGIN`, which sqlx does not know about. It ends with a script's `COMMIT` or with
//! [`ScriptTx::rollback`]; if it is dropped while still open (a cancelled caller), its
//! connection is closed rather than returned to the pool, and the server rolls back.

use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_util::TryStreamExt;
use rust_decimal::Decimal;
use sqlx::mysql::MySqlRow;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Either, MySql, MySqlConnection};

use order_core::IdempotencyKey;

/// Statements and values, written into one text (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Script {
    sql: String,
    statements: usize,
}

/// What each statement of a script answered, by statement index: its rows (none for a
/// statement without a result set) and the rows it matched.
#[derive(Debug)]
pub(crate) struct Answers(Vec<(Vec<MySqlRow>, u64)>);

impl Answers {
    /// Takes the rows of statement `index` (the value [`Script::end`] returned for it).
    pub(crate) fn take(&mut self, index: usize) -> Vec<MySqlRow> {
        self.0
            .get_mut(index)
            .map(|(rows, _)| std::mem::take(rows))
            .unwrap_or_default()
    }

    /// The rows statement `index` matched (an `UPDATE`'s matched rows: sqlx connects
    /// with `CLIENT_FOUND_ROWS`).
    pub(crate) fn matched(&self, index: usize) -> u64 {
        self.0.get(index).map_or(0, |(_, n)| *n)
    }
}

impl Script {
    /// An empty script.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Static SQL.
    pub(crate) fn sql(&mut self, text: &'static str) -> &mut Self {
        self.sql.push_str(text);
        self
    }

    /// An unsigned integer.
    pub(crate) fn uint(&mut self, value: impl Into<u64>) -> &mut Self {
        // Writing into a String cannot fail.
        let _ = write!(self.sql, "{}", value.into());
        self
    }

    /// A decimal, exactly (never in exponent form).
    pub(crate) fn decimal(&mut self, value: Decimal) -> &mut Self {
        let _ = write!(self.sql, "{value}");
        self
    }

    /// An idempotency key, in the `orders.idempotency_key` column's character set and
    /// collation, so that comparing it with the column uses the column's index.
    pub(crate) fn key(&mut self, key: &IdempotencyKey) -> &mut Self {
        self.sql.push_str("_ascii ");
        self.hex(key.as_str().as_bytes());
        self.sql.push_str(" COLLATE ascii_bin");
        self
    }

    /// Any text (UTF-8).
    pub(crate) fn text(&mut self, text: &str) -> &mut Self {
        self.sql.push_str("_utf8mb4 ");
        self.hex(text.as_bytes());
        self
    }

    /// `value, value, …`.
    pub(crate) fn uints(&mut self, values: impl IntoIterator<Item = u64>) -> &mut Self {
        self.list(values, ", ", |script, value| {
            script.uint(value);
        })
    }

    /// `write` for each of `items`, with `sep` between them (nothing for no items).
    pub(crate) fn list<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        sep: &'static str,
        mut write: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.sql(sep);
            }
            write(self, item);
        }
        self
    }

    /// Ends the current statement; returns its index, for [`Answers::take`].
    pub(crate) fn end(&mut self) -> usize {
        self.sql.push_str(";\n");
        self.statements += 1;
        self.statements - 1
    }

    /// The script's text (for tests and logs).
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.sql
    }

    fn hex(&mut self, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        self.sql.reserve(bytes.len() * 2 + 3);
        self.sql.push_str("X'");
        for b in bytes {
            self.sql.push(char::from(DIGITS[usize::from(b >> 4)]));
            self.sql.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        self.sql.push('\'');
    }

    /// Runs every statement, in order, in one round trip. The first failing statement's
    /// error is returned; the statements after it did not run.
    pub(crate) async fn run(self, conn: &mut MySqlConnection) -> Result<Answers, sqlx::Error> {
        let expected = self.statements;
        let mut sets = Vec::with_capacity(expected);
        let mut rows = Vec::new();
        let mut stream = sqlx::raw_sql(AssertSqlSafe(self.sql)).fetch_many(conn);
        while let Some(item) = stream.try_next().await? {
            match item {
                Either::Left(done) => {
                    sets.push((std::mem::take(&mut rows), done.rows_affected()));
                }
                Either::Right(row) => rows.push(row),
            }
        }
        if sets.len() != expected {
            return Err(sqlx::Error::Protocol(format!(
                "a script of {expected} statements had {} results",
                sets.len()
            )));
        }
        Ok(Answers(sets))
    }
}

/// A pooled connection that may hold a transaction opened by a script (see the module
/// docs): dropped while the transaction is open, the connection is marked to be closed
/// instead of going back to the pool, so the server rolls the transaction back.
pub(crate) struct ScriptTx<'c> {
    conn: &'c mut PoolConnection<MySql>,
    open: bool,
}

impl<'c> ScriptTx<'c> {
    /// `conn`, with no transaction open.
    pub(crate) fn new(conn: &'c mut PoolConnection<MySql>) -> Self {
        Self { conn, open: false }
    }

    /// The connection, for statements run inside the transaction.
    pub(crate) fn conn(&mut self) -> &mut MySqlConnection {
        self.conn
    }

    /// Runs a script that opens the transaction (it starts with `BEGIN`); from here on
    /// the transaction counts as open, whatever the script's outcome.
    pub(crate) async fn begin(&mut self, script: Script) -> Result<Answers, sqlx::Error> {
        self.open = true;
        script.run(self.conn).await
    }

    /// Runs a script that ends the transaction with `COMMIT`. On an error the
    /// transaction still counts as open (the `COMMIT` may not have run): roll back.
    pub(crate) async fn commit(&mut self, script: Script) -> Result<Answers, sqlx::Error> {
        let answers = script.run(self.conn).await?;
        self.open = false;
        Ok(answers)
    }

    /// Rolls the transaction back (a no-op for the server if it has already ended).
    /// Runs `script` inside the transaction [`begin`](Self::begin) opened, which stays
    /// open.
    pub(crate) async fn run(&mut self, script: Script) -> Result<Answers, sqlx::Error> {
        script.run(self.conn).await
    }

    pub(crate) async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        let mut script = Script::new();
        script.sql("ROLLBACK").end();
        script.run(self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for ScriptTx<'_> {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// The connection a batch may run on without a trip through the pool: the one the
/// batch before it has just committed on (its `Carry` in `group.rs`), so known to be
/// alive microseconds ago — which spares the pool's ping on acquire. Shared by the
/// attempts of one batch; a failed attempt does not put its connection back.
#[derive(Debug, Default)]
pub(crate) struct Warm(Mutex<Option<PoolConnection<MySql>>>);

impl Warm {
    /// Holding `conn`, if any.
    pub(crate) fn new(conn: Option<PoolConnection<MySql>>) -> Self {
        Self(Mutex::new(conn))
    }

    /// The connection held, if any (it is no longer held).
    pub(crate) fn take(&self) -> Option<PoolConnection<MySql>> {
        self.lock().take()
    }

    /// Holds `conn`, after a committed (or cleanly rolled back) attempt; a connection
    /// held already goes back to the pool.
    pub(crate) fn put(&self, conn: PoolConnection<MySql>) {
        *self.lock() = Some(conn);
    }

    /// What is held at the end of the batch, for the next one.
    pub(crate) fn into_inner(self) -> Option<PoolConnection<MySql>> {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot; only moves happen under the lock, so a poisoned one is used as it is.
    fn lock(&self) -> MutexGuard<'_, Option<PoolConnection<MySql>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Script;
    use order_core::IdempotencyKey;
    use rust_decimal::Decimal;

    #[test]
    fn values_are_written_as_numbers_and_hex_literals_only() {
        let key = IdempotencyKey::new("k';DROP/**/TABLE/**/orders;--").expect("key");
        let mut script = Script::new();
        script
            .sql("SELECT ")
            .uint(42_u64)
            .sql(", ")
            .decimal(Decimal::new(-1250, 2))
            .sql(", ")
            .key(&key)
            .sql(", ")
            .text("é'\\")
            .sql(" FROM t WHERE id IN (")
            .uints([1, 2, 3])
            .sql(")");
        assert_eq!(script.end(), 0);
        assert_eq!(script.end(), 1);
        assert_eq!(
            script.as_str(),
            "SELECT 42, -12.50, _ascii X'6B273B44524F502F2A2A2F5441424C452F2A2A2F6F72646572733B2D2D' \
             COLLATE ascii_bin, _utf8mb4 X'C3A9275C' FROM t WHERE id IN (1, 2, 3);\n;\n"
        );
    }
}
