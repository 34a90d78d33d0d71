-- Orders and their lines: the heart of the system.
--
-- One row per order. Its life is the domain state machine, and every change is a
-- compare-and-set `UPDATE orders SET … WHERE id = ? AND status = ? AND <fence>` that
-- mirrors `Order::apply`:
--   PENDING    -> PROCESSING  (Start: grants a lease)
--   PROCESSING -> PROCESSING  (TakeOver: only with the expired lease's token, after it expired)
--   PROCESSING -> PAID/FAILED (Pay/Fail: only the lease holder; Fail returns the stock)
--   PENDING    -> CANCELLED   (Cancel: returns the stock)
--
-- Idempotency: the (user_id, idempotency_key) unique index IS the idempotency record. A
-- replayed request finds the order through it; two concurrent requests with one key race
-- on it and exactly one INSERT wins (the loser gets a duplicate-key error and replays).
-- `request_fingerprint` is a hash of the merged lines the key was first used with, so
-- that reusing a key for different lines is recognised and refused.
--
-- Processing lease: `lease_token` names the worker holding a PROCESSING order and
-- `lease_until` when another worker may take it over. Paying or failing is fenced by the
-- token, so a worker that paused past its lease writes nothing.
--
-- `total_amount` is the exact sum of the lines (checked again when rows become domain
-- objects). All instants are UTC, DATETIME(3).
CREATE TABLE orders (
    id                  BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id             BIGINT UNSIGNED NOT NULL,
    status              ENUM ('PENDING', 'PROCESSING', 'PAID', 'FAILED', 'CANCELLED') NOT NULL,
    total_amount        DECIMAL(15, 2)  NOT NULL,
    idempotency_key     VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_fingerprint BIGINT UNSIGNED NOT NULL,
    lease_token         BIGINT UNSIGNED NULL,
    lease_until         DATETIME(3)     NULL,
    attempts            INT UNSIGNED    NOT NULL DEFAULT 0,
    failure_reason      VARCHAR(255)    NULL,
    cancelled_at        DATETIME(3)     NULL,
    created_at          DATETIME(3)     NOT NULL,
    updated_at          DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    -- The idempotency record (and the index behind the user foreign key).
    UNIQUE KEY orders_user_key_unique (user_id, idempotency_key),
    -- "My orders", newest first: WHERE user_id = ? ORDER BY created_at DESC, id DESC.
    KEY orders_user_created (user_id, created_at DESC, id DESC),
    -- "My orders" filtered by status, newest first.
    KEY orders_user_status_created (user_id, status, created_at DESC, id DESC),
    -- Reconciler: PENDING orders not touched since a threshold (lost enqueue).
    KEY orders_status_updated (status, updated_at),
    -- Reconciler: PROCESSING orders whose lease expired (crashed worker).
    KEY orders_status_lease (status, lease_until),
    CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT orders_total_not_negative CHECK (total_amount >= 0),
    -- A lease is a token and an expiry, together, and only while PROCESSING.
    CONSTRAINT orders_lease_complete CHECK ((lease_token IS NULL) = (lease_until IS NULL)),
    CONSTRAINT orders_lease_iff_processing
        CHECK ((status = 'PROCESSING') = (lease_token IS NOT NULL)),
    -- `cancelled_at` is set exactly when the order is CANCELLED.
    CONSTRAINT orders_cancelled_at_iff_cancelled
        CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL)),
    -- A failure reason exists exactly when the order FAILED.
    CONSTRAINT orders_failure_reason_iff_failed
        CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The lines of an order: one per product (the domain merges duplicates), priced at
-- placement. Read by order (the primary key's prefix); the product index serves the
-- foreign key.
CREATE TABLE order_items (
    order_id   BIGINT UNSIGNED NOT NULL,
    product_id BIGINT UNSIGNED NOT NULL,
    quantity   INT UNSIGNED    NOT NULL,
    unit_price DECIMAL(10, 2)  NOT NULL,
    PRIMARY KEY (order_id, product_id),
    KEY order_items_product (product_id),
    CONSTRAINT order_items_order_fk FOREIGN KEY (order_id) REFERENCES orders (id)
        ON DELETE CASCADE,
    CONSTRAINT order_items_product_fk FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT order_items_quantity_range CHECK (quantity BETWEEN 1 AND 10000),
    CONSTRAINT order_items_price_not_negative CHECK (unit_price >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
