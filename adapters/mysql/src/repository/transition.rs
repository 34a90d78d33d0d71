//! Status changes: the compare-and-set transitions (with the stock they return), and the
//! reconciler's claims of stranded orders.
//!
//! Both are single transactions over order rows that a worker and a reconciler may race
//! for; the database's row locks decide the race, see [`MySqlOrderRepository`].

use order_core::domain::StatusChange;
use order_core::ports::{StrandedQuery, TransitionOutcome};
use order_core::{OrderId, ProductId, Timestamp};
use sqlx::{AssertSqlSafe, MySqlConnection};

use super::MySqlOrderRepository;
use super::events;
use super::place::{Adjust, adjust_stock};
use super::rows::{Read, load_items, load_order, order_id, product_id};
use super::sql::{
    BEGIN_READ_COMMITTED, CAS_CANCEL, CAS_FAIL, CAS_PAY, CAS_RELEASE, CAS_START, CAS_TAKE_OVER,
    CLAIM_SCAN_LOCKED, IN_LIST_CHUNK, repeat_sql,
};
use crate::error::{Context, DbError};
use crate::time::to_sql;

impl MySqlOrderRepository {
    /// One attempt at [`claim_stranded`], rolled back explicitly on any
    /// error.
    ///
    /// [`claim_stranded`]: order_core::ports::OrderRepository::claim_stranded
    pub(super) async fn claim_stranded_once(
        &self,
        query: StrandedQuery,
        now: Timestamp,
    ) -> Result<Vec<OrderId>, DbError> {
        let stale_ms = u64::try_from(query.stale_after.as_millis()).unwrap_or(u64::MAX);
        let cutoff = Timestamp::from_millis(now.as_millis().saturating_sub(stale_ms));
        let at = to_sql(now);
        let mut tx = self
            .pool
            .begin_with(BEGIN_READ_COMMITTED)
            .await
            .ctx("starting a READ COMMITTED transaction")?;
        let result = async {
            let ids: Vec<u64> = sqlx::query_scalar(CLAIM_SCAN_LOCKED)
                .bind(to_sql(cutoff))
                .bind(&at)
                .bind(query.limit)
                .fetch_all(&mut *tx)
                .await
                .ctx("selecting stranded orders")?;
            for chunk in ids.chunks(IN_LIST_CHUNK) {
                let sql = repeat_sql(
                    "UPDATE orders SET dispatched_at = ? WHERE id IN (",
                    "?",
                    ", ",
                    chunk.len(),
                    ")",
                );
                let mut stamp = sqlx::query(AssertSqlSafe(sql)).bind(&at);
                for id in chunk {
                    stamp = stamp.bind(*id);
                }
                stamp
                    .execute(&mut *tx)
                    .await
                    .ctx("stamping claimed orders")?;
            }
            ids.into_iter().map(order_id).collect::<Result<Vec<_>, _>>()
        }
        .await;
        match result {
            Ok(ids) => {
                tx.commit().await.ctx("committing a claim")?;
                Ok(ids)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed claim");
                }
                Err(e)
            }
        }
    }

    pub(super) async fn transition_once(
        &self,
        id: OrderId,
        change: &StatusChange,
        now: Timestamp,
    ) -> Result<TransitionOutcome, DbError> {
        let at = to_sql(now);
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        let result = async {
            let cas = match change {
                StatusChange::Start { lease } => sqlx::query(CAS_START)
                    .bind(lease.token.raw())
                    .bind(to_sql(lease.until))
                    .bind(&at)
                    .bind(id.get()),
                StatusChange::TakeOver { expired, lease } => sqlx::query(CAS_TAKE_OVER)
                    .bind(lease.token.raw())
                    .bind(to_sql(lease.until))
                    .bind(&at)
                    .bind(id.get())
                    .bind(expired.raw())
                    .bind(&at),
                StatusChange::Pay { lease } => sqlx::query(CAS_PAY)
                    .bind(&at)
                    .bind(id.get())
                    .bind(lease.raw()),
                StatusChange::Fail { lease, reason } => sqlx::query(CAS_FAIL)
                    .bind(reason.as_str())
                    .bind(&at)
                    .bind(id.get())
                    .bind(lease.raw()),
                StatusChange::Cancel => sqlx::query(CAS_CANCEL).bind(&at).bind(&at).bind(id.get()),
                StatusChange::Release { lease } => sqlx::query(CAS_RELEASE)
                    .bind(&at)
                    .bind(&at)
                    .bind(id.get())
                    .bind(lease.raw()),
            };
            // `rows_affected` is the number of rows MATCHED, not changed: sqlx connects
            // with CLIENT_FOUND_ROWS. That is the count a compare-and-set needs — the
            // WHERE clause is the whole precondition of `Order::apply` — and it matters
            // for Release, which may change nothing (a holder releasing an already
            // expired lease at the instant of its last change) and must still apply.
            let matched = cas
                .execute(&mut *tx)
                .await
                .ctx("compare-and-set on the order status")?
                .rows_affected();
            if matched == 0 {
                return Ok(None);
            }
            if change.returns_stock() {
                return_stock(&mut tx, id).await?;
            }
            // Re-read inside the transaction: exactly the state this change produced.
            let order = load_order(&mut tx, id.get())
                .await?
                .ok_or_else(|| DbError::data(format!("order {id} vanished after its update")))?;
            // A status change is logged with it; a lease-only change (TakeOver, Release)
            // is not an event.
            let event = if change.from() != change.to() {
                Some(events::log_change(&mut tx, &order).await?)
            } else {
                None
            };
            Ok(Some((order, event)))
        }
        .await;
        match result {
            Ok(Some((order, event))) => {
                tx.commit().await.ctx("committing a transition")?;
                Ok(TransitionOutcome::Applied(order, event))
            }
            Ok(None) => {
                tx.rollback().await.ctx("rolling back")?;
                let mut conn = self.acquire().await?;
                Ok(match load_order(&mut conn, id.get()).await? {
                    Some(current) => TransitionOutcome::LostRace(current),
                    None => TransitionOutcome::NotFound,
                })
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed transition");
                }
                Err(e)
            }
        }
    }
}

/// Puts order `id`'s quantities back, in the transaction that cancelled or failed it.
async fn return_stock(conn: &mut MySqlConnection, id: OrderId) -> Result<(), DbError> {
    let items = load_items(conn, id.get(), Read::Plain).await?;
    let deltas: Vec<(ProductId, u32)> = items
        .into_iter()
        .map(|item| Ok((product_id(item.product_id)?, item.quantity)))
        .collect::<Result<_, DbError>>()?;
    adjust_stock(conn, &deltas, Adjust::Return).await
}
