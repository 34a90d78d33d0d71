-- The durable event log: every status change of an order, per user, in order.
--
-- A client that was disconnected while its orders moved reads what it missed here
-- (`GET /api/events?after=<seq>`); the invariant checker reads each order's history
-- here. Every row is written by the transaction that made the change it records — the
-- placement (`order.created`) or the compare-and-set (`order.processing`, `order.paid`,
-- `order.failed`, `order.cancelled`) — so the log and the orders never disagree.
--
-- `seq` is the user's own sequence number: 1, 2, 3, … with no gap, so a client that
-- sees event n+2 after n knows it missed one. It comes from `users.event_seq`, bumped in
-- the same transaction with
--     UPDATE users SET event_seq = LAST_INSERT_ID(event_seq + 1) WHERE id = ?
-- whose result carries the new value (the OK packet's last-insert id: no SELECT). The
-- bump takes the user's row lock until commit, so one user's changes get their numbers
-- in commit order; different users never wait on each other. The counter lives on the
-- user row, not in the log, so pruning the log never lets a number be handed out twice.
--
-- Retention: the log is pruned by age (`prune_events`, run by the reconciler: events
-- older than `ReconcilerConfig::event_retention`, 7 days by default), served by the
-- `order_events_at` index. No foreign keys: the user row is already locked by the bump,
-- and a log row must outlive nothing.
ALTER TABLE users
    ADD COLUMN event_seq BIGINT UNSIGNED NOT NULL DEFAULT 0;

CREATE TABLE order_events (
    user_id      BIGINT UNSIGNED NOT NULL,
    seq          BIGINT UNSIGNED NOT NULL,
    order_id     BIGINT UNSIGNED NOT NULL,
    kind         ENUM ('order.created', 'order.processing', 'order.paid', 'order.failed',
                       'order.cancelled') NOT NULL,
    total_amount DECIMAL(15, 2)  NOT NULL,
    reason       VARCHAR(255)    NULL,
    at           DATETIME(3)     NOT NULL,
    PRIMARY KEY (user_id, seq),
    -- Pruning by age, oldest first.
    KEY order_events_at (at),
    -- One order's history (the invariant checker, operators).
    KEY order_events_order (order_id),
    CONSTRAINT order_events_seq_positive CHECK (seq >= 1),
    -- A reason exactly for order.failed.
    CONSTRAINT order_events_reason_iff_failed
        CHECK ((kind = 'order.failed') = (reason IS NOT NULL))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
