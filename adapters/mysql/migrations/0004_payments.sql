-- The simulated payment provider's ledger: the first outcome recorded per charge key.
--
-- It stands in for the provider's own database, so it has no foreign key to `orders`
-- (a provider knows nothing of our schema). The primary key on the charge key (the order
-- id) is what makes charging idempotent across processes: the first INSERT for a key
-- wins, every later one gets a duplicate-key error and reads the winner back. This is
-- how "at most one charge per order" survives worker crashes and a total Redis loss.
CREATE TABLE payments (
    order_id       BIGINT UNSIGNED NOT NULL,
    amount         DECIMAL(15, 2)  NOT NULL,
    outcome        ENUM ('APPROVED', 'DECLINED') NOT NULL,
    decline_reason VARCHAR(255)    NULL,
    created_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (order_id),
    CONSTRAINT payments_amount_not_negative CHECK (amount >= 0),
    -- A declined charge says why; an approved one has nothing to explain.
    CONSTRAINT payments_reason_iff_declined
        CHECK ((outcome = 'DECLINED') = (decline_reason IS NOT NULL))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
