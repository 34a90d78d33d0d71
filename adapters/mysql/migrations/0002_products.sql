-- Products and their stock: the contended rows.
--
-- `place` locks the rows of an order's products in ascending id order
-- (`SELECT … WHERE id IN (…) ORDER BY id FOR UPDATE`), checks and decrements `stock`,
-- and Cancelled/Failed orders put their quantities back in the same transaction as the
-- status change. At rest, per product:
--   initial stock + restocks = stock + Σ quantity of its PENDING/PROCESSING/PAID orders.
--
-- `stock` is INT UNSIGNED: besides the adapter's own check, the server refuses to take
-- it below zero (strict mode turns the underflow into an error), so an oversell cannot
-- be stored even by a buggy writer. Prices are exact decimals, never floats.
CREATE TABLE products (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name       VARCHAR(255)    NOT NULL,
    price      DECIMAL(10, 2)  NOT NULL,
    stock      INT UNSIGNED    NOT NULL DEFAULT 0,
    created_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                               ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    CONSTRAINT products_price_not_negative CHECK (price >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
