//! [`MySqlPaymentLedger`]: the simulated payment provider's durable ledger, in the
//! `payments` table.
//!
//! It records the first outcome per charge key (the order id) so that a retried charge
//! after any crash — even a total Redis loss — is recognised, and so that "at most one
//! charge per order" can be checked. "First writer wins" is enforced by the table's
//! primary key, atomically across every process sharing the database: a plain `INSERT`
//! either stores the caller's entry or fails with a duplicate key, and then the winner is
//! read back. (`INSERT IGNORE` would also silence unrelated errors such as truncation.)
//! No sqlx error leaves this module.

use async_trait::async_trait;
use order_core::domain::FailureReason;
use order_core::ports::PaymentOutcome;
use order_core::{Money, OrderId};
use order_payment_sim::{LedgerEntry, LedgerError, PaymentLedger, Recorded};
use rust_decimal::Decimal;
use sqlx::MySqlPool;

use crate::error::{Context, DbError, code};

const APPROVED: &str = "APPROVED";
const DECLINED: &str = "DECLINED";

const INSERT: &str =
    "INSERT INTO payments (order_id, amount, outcome, decline_reason) VALUES (?, ?, ?, ?)";
const BY_KEY: &str =
    "SELECT order_id, amount, outcome, decline_reason FROM payments WHERE order_id = ?";
const ALL: &str =
    "SELECT order_id, amount, outcome, decline_reason FROM payments ORDER BY order_id";

/// One `payments` row.
#[derive(sqlx::FromRow)]
struct PaymentRow {
    order_id: u64,
    amount: Decimal,
    outcome: String,
    decline_reason: Option<String>,
}

impl PaymentRow {
    fn into_entry(self) -> Result<LedgerEntry, DbError> {
        let key = OrderId::new(self.order_id)
            .map_err(|e| DbError::data(format!("payment key {}: {e}", self.order_id)))?;
        let amount = Money::new(self.amount)
            .map_err(|e| DbError::data(format!("payment {key} amount: {e}")))?;
        let outcome = match (self.outcome.as_str(), self.decline_reason) {
            (APPROVED, None) => PaymentOutcome::Approved,
            (DECLINED, Some(reason)) => PaymentOutcome::Declined(FailureReason::new(reason)),
            (other, reason) => {
                return Err(DbError::data(format!(
                    "payment {key}: outcome {other:?} with decline reason {reason:?}"
                )));
            }
        };
        Ok(LedgerEntry {
            key,
            amount,
            outcome,
        })
    }
}

/// The simulated provider's ledger in the `payments` table: at most one entry per charge
/// key, first writer wins across every process sharing the database (the table's
/// primary key decides; the loser reads the winner back).
#[derive(Debug, Clone)]
pub struct MySqlPaymentLedger {
    pool: MySqlPool,
}

impl MySqlPaymentLedger {
    /// A ledger over `pool`, whose database has been migrated with
    /// [`migrate`](crate::migrate).
    pub fn new(pool: MySqlPool) -> Self {
        Self { pool }
    }

    async fn fetch(&self, key: OrderId) -> Result<Option<LedgerEntry>, DbError> {
        sqlx::query_as::<_, PaymentRow>(BY_KEY)
            .bind(key.get())
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a payment")?
            .map(PaymentRow::into_entry)
            .transpose()
    }

    async fn insert_first(&self, entry: LedgerEntry) -> Result<Recorded, DbError> {
        let (outcome, reason) = match &entry.outcome {
            PaymentOutcome::Approved => (APPROVED, None),
            PaymentOutcome::Declined(reason) => (DECLINED, Some(reason.as_str())),
        };
        // Autocommit: the row is durable (or refused) when the statement returns.
        let inserted = sqlx::query(INSERT)
            .bind(entry.key.get())
            .bind(entry.amount.as_decimal())
            .bind(outcome)
            .bind(reason)
            .execute(&self.pool)
            .await
            .ctx("recording a payment");
        match inserted {
            Ok(_) => Ok(Recorded::New(entry)),
            Err(e) if e.server_code() == Some(code::DUPLICATE_KEY) => {
                // The duplicate error is only reported once the winner has committed,
                // so a fresh read sees it.
                match self.fetch(entry.key).await? {
                    Some(winner) => Ok(Recorded::Existing(winner)),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl PaymentLedger for MySqlPaymentLedger {
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached;
    /// [`LedgerError::Unexpected`] otherwise.
    async fn get(&self, key: OrderId) -> Result<Option<LedgerEntry>, LedgerError> {
        self.fetch(key).await.map_err(DbError::into_ledger)
    }

    /// First writer wins, enforced by the primary key on the charge key.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached;
    /// [`LedgerError::Unexpected`] otherwise (e.g. an amount beyond `DECIMAL(15,2)`).
    async fn record_first(&self, entry: LedgerEntry) -> Result<Recorded, LedgerError> {
        self.insert_first(entry).await.map_err(DbError::into_ledger)
    }

    /// # Errors
    /// [`LedgerError::Unavailable`] when the database cannot be reached;
    /// [`LedgerError::Unexpected`] otherwise.
    async fn entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        async {
            sqlx::query_as::<_, PaymentRow>(ALL)
                .fetch_all(&self.pool)
                .await
                .ctx("listing payments")?
                .into_iter()
                .map(PaymentRow::into_entry)
                .collect::<Result<Vec<_>, _>>()
        }
        .await
        .map_err(DbError::into_ledger)
    }
}
