//! The durable event log (migration 0007): appending an order's event inside the
//! transaction that changed it, reading a user's log, pruning it by age.

use std::collections::BTreeMap;

use order_core::domain::FailureReason;
use order_core::ports::{EventPage, OrderEvent, OrderEventKind};
use order_core::{Money, Order, OrderId, Timestamp, UserId};
use rust_decimal::Decimal;
use sqlx::mysql::MySqlRow;
use sqlx::{FromRow, MySqlConnection, Row};

use super::MySqlOrderRepository;
use super::rows::order_id;
use super::script::{Answers, Script};
use super::sql::{
    ADD_TO_SEQS_HEAD, BUMP_EVENT_SEQ, CASE_END_IN, EVENTS_AFTER, INSERT_EVENT,
    INSERT_EVENTS_BY_COUNTER_HEAD, INSERT_EVENTS_BY_COUNTER_TAIL, LAST_EVENT_SEQ, PRUNE_EVENTS,
    START_EVENT_OF, UNION_ALL, USER_SEQS_HEAD,
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

/// Reads, in `script`, the `order.processing` event logged for `order` (by the Start
/// that put it under its lease); returns the statement's index, for [`start_event`].
pub(super) fn start_event_in(script: &mut Script, order: OrderId) -> usize {
    script.sql(START_EVENT_OF).uint(order.get());
    script.end()
}

/// The event [`start_event_in`] read for `order`: exactly one must exist.
pub(super) fn start_event(order: OrderId, rows: Vec<MySqlRow>) -> Result<OrderEvent, DbError> {
    let mut rows = rows.into_iter();
    match (rows.next(), rows.next()) {
        (Some(row), None) => EventRow::from_row(&row)
            .ctx("reading a logged Start")?
            .into_event(),
        (None, _) => Err(DbError::data(format!(
            "order {order} is under a Start's lease but no Start is logged for it"
        ))),
        (Some(_), Some(_)) => Err(DbError::data(format!(
            "order {order} has more than one Start logged"
        ))),
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

/// The log writes of several status changes, written into a script (`script.rs`) that
/// runs them in the changes' transaction: each order in `orders` gets its owner's next
/// seq, in slice order. Three statements, whatever the number of orders and users:
///
/// 1. `UPDATE users SET event_seq = event_seq + CASE id …` — each user's counter moves
///    past all of its new events (the users' rows are locked ascending until commit, so
///    one user's seqs follow commit order);
/// 2. `INSERT INTO order_events … SELECT` — each event's seq computed from its user's
///    new counter (`event_seq - b`, `b` being how many of the user's events follow it);
/// 3. `SELECT id, event_seq FROM users …` — the new counters, from which
///    [`Logged::events`] computes the same seqs for the caller.
///
/// A user that vanished under its order is corrupt data: the insert joins the users
/// with a `LEFT JOIN`, so such an event's seq is NULL, which the column (`NOT NULL`,
/// and `CHECK (seq >= 1)` should the server turn the NULL into 0) refuses. The script
/// stops there, before its `COMMIT`.
pub(super) fn log_changes_in(script: &mut Script, orders: &[&Order]) -> Logged {
    let mut per_user: BTreeMap<UserId, u64> = BTreeMap::new();
    for order in orders {
        *per_user.entry(order.user()).or_default() += 1;
    }
    // Each event's distance from its user's last new seq.
    let mut left = per_user.clone();
    let mut back = Vec::with_capacity(orders.len());
    for order in orders {
        let n = left.entry(order.user()).or_default();
        *n = n.saturating_sub(1);
        back.push(*n);
    }
    let events: Vec<OrderEvent> = orders.iter().map(|o| OrderEvent::logged(o, 0)).collect();
    if events.is_empty() {
        return Logged {
            events,
            back,
            counters: None,
        };
    }

    script.sql(ADD_TO_SEQS_HEAD);
    for (user, k) in &per_user {
        script.sql(" WHEN ").uint(user.get()).sql(" THEN ").uint(*k);
    }
    script
        .sql(CASE_END_IN)
        .uints(per_user.keys().map(|u| u.get()))
        .sql(")");
    script.end();

    script.sql(INSERT_EVENTS_BY_COUNTER_HEAD).list(
        events.iter().zip(&back),
        UNION_ALL,
        |script, (event, b)| {
            script
                .sql("SELECT ")
                .uint(event.user.get())
                .sql(" AS u, ")
                .uint(*b)
                .sql(" AS b, ")
                .uint(event.order.get())
                .sql(" AS o, ")
                .text(event.kind.name())
                .sql(" AS k, ")
                .decimal(event.total.as_decimal())
                .sql(" AS t, ");
            match reason_of(event) {
                Some(reason) => script.text(reason),
                None => script.sql("NULL"),
            };
            script.sql(" AS w, ").text(&to_sql(event.at)).sql(" AS a");
        },
    );
    script.sql(INSERT_EVENTS_BY_COUNTER_TAIL);
    script.end();

    script
        .sql(USER_SEQS_HEAD)
        .uints(per_user.keys().map(|u| u.get()))
        .sql(")");
    let counters = script.end();
    Logged {
        events,
        back,
        counters: Some(counters),
    }
}

/// The events [`log_changes_in`] wrote, waiting for their seqs.
pub(super) struct Logged {
    /// The events, seq 0 until [`Logged::events`].
    events: Vec<OrderEvent>,
    /// Per event, how many of its user's events follow it.
    back: Vec<u64>,
    /// The statement that reads the users' new counters (none without events).
    counters: Option<usize>,
}

impl Logged {
    /// The events with their seqs, from the script's answers.
    pub(super) fn events(self, answers: &mut Answers) -> Result<Vec<OrderEvent>, DbError> {
        let Some(counters) = self.counters else {
            return Ok(self.events);
        };
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for row in answers.take(counters) {
            let id: u64 = row.try_get("id").ctx("reading a user id")?;
            let seq: u64 = row.try_get("event_seq").ctx("reading a user's event seq")?;
            last.insert(id, seq);
        }
        let mut events = self.events;
        for (event, b) in events.iter_mut().zip(self.back) {
            let seq = last
                .get(&event.user.get())
                .and_then(|last| last.checked_sub(b))
                .ok_or_else(|| {
                    DbError::data(format!(
                        "user {} of order {}: no event counter after the log write",
                        event.user, event.order
                    ))
                })?;
            event.seq = seq;
        }
        Ok(events)
    }
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
