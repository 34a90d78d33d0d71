-- What stock came in: the left-hand side of the stock invariant, stored.
--
-- DESIGN §2 states, per product at rest:
--   initial stock + restocks = stock + Σ quantity of its PENDING/PROCESSING/PAID orders.
-- Until now only the right-hand side was in the database: `stock` and the order lines.
-- The left-hand side lived in nobody's memory, so the invariant checker
-- (`order_mysql::audit::stock_conservation`) could not tell a leak or a double return
-- from a restock. `stock_received` is that left-hand side: every unit that ever entered
-- the product, never decreased. So at rest, per product:
--   stock_received = stock + Σ quantity of its lines in PENDING/PROCESSING/PAID orders.
-- `MySqlOrderRepository::add_product` sets it to the initial stock; `restock` adds to it
-- in the same UPDATE that adds to `stock`, so no reader ever sees one without the other.
-- Placing, cancelling, failing and paying never touch it: they only move units between
-- `stock` and the orders.
--
-- BIGINT UNSIGNED: it only grows, and restocks may add up past `INT UNSIGNED` over a
-- product's life even though `stock` plus its reservations never do.
--
-- Existing rows: the restocks of a running deployment were never recorded, so the one
-- value that makes each product consistent is taken as what came in: its stock plus the
-- units its PENDING/PROCESSING/PAID orders hold. A deployment therefore starts this
-- migration consistent by construction, and the checker reports only what goes wrong
-- from here on (a leak that happened before cannot be told apart any more). The backfill
-- keeps `updated_at` as it was: recording history is not a change of the product.
--
-- The default: a row inserted without the column (a bulk seed, an operator's INSERT)
-- gets its own initial `stock`, which is exactly what came in for a new product — an
-- expression default both MySQL 8.0.13+ and MariaDB 10.2+ accept. It is set only after
-- the backfill, so that existing rows get the backfilled value rather than their stock.
--
-- Three statements: the column exists before it is filled, and is filled before its
-- default starts to refer to `stock`.
ALTER TABLE products
    ADD COLUMN stock_received BIGINT UNSIGNED NOT NULL DEFAULT 0;

UPDATE products p
SET p.stock_received = p.stock + COALESCE((
        SELECT SUM(i.quantity)
        FROM order_items i
        JOIN orders o ON o.id = i.order_id
        WHERE i.product_id = p.id
          AND o.status IN ('PENDING', 'PROCESSING', 'PAID')
    ), 0),
    p.updated_at = p.updated_at;

ALTER TABLE products
    MODIFY COLUMN stock_received BIGINT UNSIGNED NOT NULL DEFAULT (stock);
