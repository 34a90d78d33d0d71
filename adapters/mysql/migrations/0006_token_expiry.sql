-- Token expiry: every bearer token is valid until an instant, and not from then on.
--
-- `AccountStore::authenticate` accepts a token only while `now < expires_at` (the bound
-- is exclusive), compared in SQL: `WHERE token_hash = ? AND expires_at > ?`, `now` bound
-- as UTC text like every instant of the adapter. The lookup stays on the unique index of
-- `token_hash` (one row at most), so `expires_at` needs no index of its own.
--
-- Existing rows: tokens issued before this migration had no expiry, so none can be given
-- a meaningful one. They are expired at once instead: the column is added with the
-- default CURRENT_TIMESTAMP(3), which both servers fill into every existing row, and
-- their holders log in again. (No deployment had issued a token yet; this keeps the
-- migration safe for one that had.) The default is then dropped, so that every token
-- inserted from now on must state its own expiry: an INSERT without one is refused (the
-- adapter's connections run in strict mode) rather than given a token that never, or
-- immediately, expires.
--
-- Two statements: the second alters a column the first creates.
ALTER TABLE api_tokens
    ADD COLUMN expires_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3);

ALTER TABLE api_tokens
    ALTER COLUMN expires_at DROP DEFAULT;
