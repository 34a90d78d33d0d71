-- The reconciler's claim: when each open order was last handed out, and one index to
-- find the stranded ones.
--
-- An order is handed out when it is placed (its job is enqueued right after commit) and
-- again whenever the reconciler claims it (`claim_stranded`, which enqueues a fresh job).
-- It is stranded when that hand-out is at least `stale_after` old and it is still
-- PENDING, or PROCESSING with a lease that expired: its job was lost, or its worker died.
--
-- `dispatched_at` is the last claim, NULL until the first one: `place` and `transition`
-- never write it, so the hot paths pay nothing for it. The hand-out is therefore
-- COALESCE(dispatched_at, created_at).
--
-- `open_hand_out_at` is that hand-out while the order is open (PENDING or PROCESSING)
-- and NULL once it is terminal, computed by the server (a STORED generated column, which
-- both MySQL 8.0 and MariaDB 10.11 index). Its index holds only the open orders' values
-- in hand-out order (the NULLs of the paid/failed/cancelled history are skipped by the
-- range `open_hand_out_at <= cutoff`), so the claim
--   SELECT id … WHERE open_hand_out_at <= ? AND (status = 'PENDING' OR lease_until <= ?)
--   ORDER BY open_hand_out_at, id LIMIT ? FOR UPDATE SKIP LOCKED
-- reads the index in order, without a filesort, and stops at the LIMIT: it examines the
-- rows it claims plus the PROCESSING rows with a live lease among them, and nothing else
-- (it runs at READ COMMITTED, so the locks on those rejected rows go at once, and no gap
-- locks stand in the way of new orders). The entry moves only when an order is placed,
-- claimed, or becomes terminal — not on Start, TakeOver or Release, which keep the
-- status open and leave the hand-out alone — which is cheaper for the write paths than
-- the two indexes it replaces, (status, updated_at) and (status, lease_until), one of
-- which changed on every transition; the scans they served are gone.
--
-- This file also corrects the tour: 0001 counts four migrations, and 0003 still
-- describes the two reconciler indexes dropped here. Applied migrations are never
-- edited (sqlx refuses a database whose applied migration no longer matches its
-- checksum), so the correction lives here.
--
-- Two statements: the generated column refers to `dispatched_at`, so that column exists
-- before the expression naming it is checked.
ALTER TABLE orders
    ADD COLUMN dispatched_at DATETIME(3) NULL;

ALTER TABLE orders
    ADD COLUMN open_hand_out_at DATETIME(3)
        GENERATED ALWAYS AS (
            IF(status IN ('PENDING', 'PROCESSING'), COALESCE(dispatched_at, created_at), NULL)
        ) STORED,
    ADD KEY orders_open_hand_out (open_hand_out_at, id),
    DROP KEY orders_status_updated,
    DROP KEY orders_status_lease;
