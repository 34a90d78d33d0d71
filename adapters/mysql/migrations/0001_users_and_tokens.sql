-- Users and their API tokens.
--
-- Welcome to the schema: it is the first stop of the tour. Four migrations, one per
-- concern: who may order (0001), what can be ordered (0002), the orders themselves with
-- their idempotency record and processing lease (0003), and the simulated payment
-- provider's ledger (0004). Every SQL statement here and in `src/` runs unchanged on
-- MySQL 8.0 and MariaDB 10.11 (no RETURNING, no `AS new` aliases, no FOR SHARE).
--
-- House rules for every table:
-- * ids are BIGINT UNSIGNED AUTO_INCREMENT: the domain ids are positive u64;
-- * instants are DATETIME(3) in UTC (the adapter's connections run with
--   time_zone = '+00:00' and bind instants as UTC text), exact to the millisecond, which
--   is the domain `Timestamp`'s resolution;
-- * InnoDB (row locks, foreign keys, crash safety) and utf8mb4 with a collation both
--   servers know (utf8mb4_unicode_ci); machine-made identifiers (idempotency keys, token
--   hashes) are ASCII with a binary collation so that "Key" and "key" are two keys.

-- The people who place orders. `email` is unique (case-insensitively, through the
-- table's collation) because it is the login. `password_hash` holds an argon2id PHC
-- string, never a password.
CREATE TABLE users (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name          VARCHAR(255)    NOT NULL,
    email         VARCHAR(255)    NOT NULL,
    password_hash VARCHAR(255)    NOT NULL,
    created_at    DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at    DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                  ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY users_email_unique (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Bearer tokens. Only a hash of each token is stored (hex SHA-256, 64 characters), so a
-- leaked table grants nothing; lookup is by that hash, hence its unique index. Deleting a
-- user revokes their tokens.
CREATE TABLE api_tokens (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id      BIGINT UNSIGNED NOT NULL,
    token_hash   CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at   DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    last_used_at DATETIME(3)     NULL,
    PRIMARY KEY (id),
    UNIQUE KEY api_tokens_token_hash_unique (token_hash),
    KEY api_tokens_user (user_id),
    CONSTRAINT api_tokens_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
        ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
