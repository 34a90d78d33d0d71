//! The durable event log (migration 0007): appending an order's event inside the
//! transaction that changed it, reading a user's log, pruning it by age.

use std::collections::{BTreeMap, BTreeSet};

use order_core::domain::FailureReason;
use order_core::ports::{EventPage, OrderEvent, OrderEventKind};
use order_core::{Money, Order, Timestamp, UserId};
use rust_decimal::Decimal;
use sqlx::MySqlConnection;

use super::MySqlOrderRepository;
use super::batch;
use super::rows::order_id;
use super::sql::{
    BUMP_EVENT_SEQ, BUMP_EVENT_SEQ_BY, EVENTS_AFTER, INSERT_EVENT, LAST_EVENT_SEQ, PRUNE_EVENTS,
    SET_SEQS_HEAD,
};
use crate::error::{Context, DbError};
use crate::time::{from_sql, to_sql};

/// One `order_events` row as [`EVENTS_AFTER`] reads it.
#[derive(sqlx::FromRow)]
struct EventRow {
    user_id: u64,
    seq: u64,
    order_id: u64,
    kind: String,
    total_amount: Decimal,
    reason: Option<String>,
    at_ms: i64,
}

impl EventRow {
    fn into_event(self) -> Result<OrderEvent, DbError> {
        let kind = match (self.kind.as_str(), self.reason) {
            ("order.created", None) => OrderEventKind::Created,
            ("order.processing", None) => OrderEventKind::Processing,
            ("order.paid", None) => OrderEventKind::Paid,
            ("order.failed", Some(reason)) => OrderEventKind::Failed(FailureReason::new(reason)),
            ("order.cancelled", None) => OrderEventKind::Cancelled,
            (other, reason) => {
                return Err(DbError::data(format!(
                    "event {}/{}: kind {other:?} with reason {reason:?}",
                    self.user_id, self.seq
                )));
            }
        };
        Ok(OrderEvent {
            seq: self.seq,
            kind,
            order: order_id(self.order_id)?,
            user: UserId::new(self.user_id)
                .map_err(|e| DbError::data(format!("event user: {e}")))?,
            total: Money::new(self.total_amount)
                .map_err(|e| DbError::data(format!("event total {}: {e}", self.total_amount)))?,
            at: from_sql(self.at_ms, "order_events.at")?,
        })
    }
}

/// Takes `user`'s next seq: bumps the counter on the user's row (locking it until the
/// transaction ends, so one user's seqs follow commit order) and reads the new value
/// from the statement's own result. `None` when the user does not exist.
pub(super) async fn next_seq(
    conn: &mut MySqlConnection,
    user: UserId,
) -> Result<Option<u64>, DbError> {
    let done = sqlx::query(BUMP_EVENT_SEQ)
        .bind(user.get())
        .execute(&mut *conn)
        .await
        .ctx("taking the user's next event seq")?;
    Ok((done.rows_affected() == 1).then(|| done.last_insert_id()))
}

/// Appends the event recording `order`'s current status under `seq` (from
/// [`next_seq`] in the same transaction) and returns it.
pub(super) async fn append(
    conn: &mut MySqlConnection,
    order: &Order,
    seq: u64,
) -> Result<OrderEvent, DbError> {
    let event = OrderEvent::logged(order, seq);
    let reason = reason_of(&event);
    sqlx::query(INSERT_EVENT)
        .bind(event.user.get())
        .bind(event.seq)
        .bind(event.order.get())
        .bind(event.kind.name())
        .bind(event.total.as_decimal())
        .bind(reason)
        .bind(to_sql(event.at))
        .execute(&mut *conn)
        .await
        .ctx("appending to the event log")?;
    Ok(event)
}

/// The `reason` column of `event`: the failure reason of `order.failed`, else NULL.
pub(super) fn reason_of(event: &OrderEvent) -> Option<&str> {
    match &event.kind {
        OrderEventKind::Failed(reason) => Some(reason.as_str()),
        OrderEventKind::Created
        | OrderEventKind::Processing
        | OrderEventKind::Paid
        | OrderEventKind::Cancelled => None,
    }
}

/// [`next_seq`] then [`append`]: the whole log write of one status change. A user that
/// vanished under its order is corrupt data.
pub(super) async fn log_change(
    conn: &mut MySqlConnection,
    order: &Order,
) -> Result<OrderEvent, DbError> {
    let seq = next_seq(conn, order.user()).await?.ok_or_else(|| {
        DbError::data(format!(
            "order {} belongs to user {}, who does not exist",
            order.id(),
            order.user()
        ))
    })?;
    append(conn, order, seq).await
}

/// The log writes of several status changes in one transaction: each order in `orders`
/// gets its owner's next seq, in slice order, and its event is appended. One order is
/// [`log_change`]; several of one user take their seqs with one bump; several users'
/// rows are locked ascending, set to their last new seq in one statement, and the events
/// appended in one insert. A user that vanished under its order is corrupt data.
pub(super) async fn log_changes(
    conn: &mut MySqlConnection,
    orders: &[&Order],
) -> Result<Vec<OrderEvent>, DbError> {
    let (first, rest) = match orders {
        [] => return Ok(Vec::new()),
        [one] => return Ok(vec![log_change(conn, one).await?]),
        [first, rest @ ..] => (first, rest),
    };
    let vanished = |order: &Order| {
        DbError::data(format!(
            "order {} belongs to user {}, who does not exist",
            order.id(),
            order.user()
        ))
    };
    let mut next: BTreeMap<UserId, u64> = BTreeMap::new();
    if rest.iter().all(|o| o.user() == first.user()) {
        let k = orders.len() as u64;
        let done = sqlx::query(BUMP_EVENT_SEQ_BY)
            .bind(k)
            .bind(first.user().get())
            .execute(&mut *conn)
            .await
            .ctx("taking the user's next event seqs")?;
        if done.rows_affected() != 1 {
            return Err(vanished(first));
        }
        next.insert(first.user(), done.last_insert_id().saturating_sub(k));
    } else {
        let users: BTreeSet<UserId> = orders.iter().map(|o| o.user()).collect();
        let locked = batch::lock_users(conn, &users).await?;
        for order in orders {
            let seq = locked.get(&order.user()).ok_or_else(|| vanished(order))?;
            next.insert(order.user(), *seq);
        }
    }
    let mut events = Vec::with_capacity(orders.len());
    for order in orders {
        let seq = next.get_mut(&order.user()).ok_or_else(|| vanished(order))?;
        *seq += 1;
        events.push(OrderEvent::logged(order, *seq));
    }
    if next.len() > 1 {
        let last: Vec<(u64, u64)> = next.iter().map(|(u, s)| (u.get(), *s)).collect();
        batch::update_by_case(conn, SET_SEQS_HEAD, &last, "setting the users' event seqs").await?;
    }
    batch::insert_events(conn, &events).await?;
    Ok(events)
}

impl MySqlOrderRepository {
    /// The events, then the counter: read in that order, `last_seq` is never below the
    /// last event returned (a change committing in between only raises it).
    pub(super) async fn events_after_once(
        &self,
        user: UserId,
        after: u64,
        limit: u32,
    ) -> Result<EventPage, DbError> {
        let mut conn = self.acquire().await?;
        let rows: Vec<EventRow> = sqlx::query_as(EVENTS_AFTER)
            .bind(user.get())
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await
            .ctx("reading the event log")?;
        let events = rows
            .into_iter()
            .map(EventRow::into_event)
            .collect::<Result<Vec<_>, _>>()?;
        let last_seq: Option<u64> = sqlx::query_scalar(LAST_EVENT_SEQ)
            .bind(user.get())
            .fetch_optional(&mut *conn)
            .await
            .ctx("reading the user's last event seq")?;
        Ok(EventPage {
            events,
            last_seq: last_seq.unwrap_or(0),
        })
    }

    pub(super) async fn prune_events_once(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, DbError> {
        let done = sqlx::query(PRUNE_EVENTS)
            .bind(to_sql(before))
            .bind(limit)
            .execute(&self.pool)
            .await
            .ctx("pruning the event log")?;
        Ok(done.rows_affected())
    }
}
