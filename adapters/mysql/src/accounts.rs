//! [`MySqlAccountStore`]: the [`AccountStore`] port on the `users` and `api_tokens`
//! tables (migrations 0001 and 0006).
//!
//! Every promise of the port is kept by the schema: the e-mail's unique index, under the
//! table's case-insensitive collation, refuses a second account whose e-mail differs only
//! in case (error 1062 on `users_email_unique` becomes [`AccountError::EmailTaken`]); the
//! tokens' foreign key refuses a token for a missing user (error 1452 becomes
//! [`AccountError::UnknownAccount`]); and expiry is compared by the server, `expires_at >
//! now`. Each operation is one statement, so a refusal writes nothing. Driver failures
//! are classified like the repository's (`Unavailable` for an unreachable or overloaded
//! server, `Unexpected` otherwise), the `sqlx::Error` kept as the cause.

use async_trait::async_trait;
use order_core::domain::{Timestamp, UserId};
use order_core::ports::{
    Account, AccountError, AccountStore, Credentials, NewAccount, RepositoryError, TokenDigest,
};
use sqlx::MySqlPool;

use crate::error::{Context, DbError, code};
use crate::time::to_sql;

/// The unique index on `users.email` (migration 0001), named in a duplicate-key error.
const EMAIL_UNIQUE: &str = "users_email_unique";

const INSERT_USER: &str = "INSERT INTO users (name, email, password_hash) VALUES (?, ?, ?)";
/// Served by `users_email_unique`; `=` compares under the column's case-insensitive
/// collation, as the index does.
const CREDENTIALS: &str = "SELECT id, name, email, password_hash FROM users WHERE email = ?";
const INSERT_TOKEN: &str =
    "INSERT INTO api_tokens (user_id, token_hash, expires_at) VALUES (?, ?, ?)";
/// Served by `api_tokens_token_hash_unique` (at most one row), then the users' primary
/// key. The expiry is exclusive: a token expiring at `now` is already expired.
const AUTHENTICATE: &str = "SELECT u.id, u.name, u.email FROM api_tokens t \
     JOIN users u ON u.id = t.user_id WHERE t.token_hash = ? AND t.expires_at > ?";
const COUNT_USERS: &str = "SELECT COUNT(*) FROM users";

/// One `users` row as [`CREDENTIALS`] reads it.
#[derive(sqlx::FromRow)]
struct UserRow {
    id: u64,
    name: String,
    email: String,
}

/// One `users` row with its password hash.
#[derive(sqlx::FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl UserRow {
    fn into_account(self) -> Result<Account, DbError> {
        Ok(Account {
            id: user_id(self.id)?,
            name: self.name,
            email: self.email,
        })
    }
}

fn user_id(raw: u64) -> Result<UserId, DbError> {
    UserId::new(raw).map_err(|e| DbError::data(format!("user id {raw}: {e}")))
}

/// The port error for a failed step, classified exactly as the repository's errors
/// (the `DbError`, and so the driver error, stays the source).
fn into_account_error(e: DbError) -> AccountError {
    match e.into_repository() {
        RepositoryError::Unavailable(cause) => AccountError::Unavailable(cause),
        RepositoryError::Unexpected(cause) => AccountError::Unexpected(cause),
    }
}

/// Whether `e` is the e-mail index refusing a duplicate (and not another unique index).
fn is_email_taken(e: &DbError) -> bool {
    let DbError::Sql { source, .. } = e else {
        return false;
    };
    e.server_code() == Some(code::DUPLICATE_KEY)
        && source
            .as_database_error()
            .is_some_and(|db| db.message().contains(EMAIL_UNIQUE))
}

/// Accounts and bearer-token digests in MySQL/MariaDB: the `users` table the
/// [`MySqlOrderRepository`](crate::MySqlOrderRepository) on the same database takes its
/// order owners from, so every account it creates may place orders there.
///
/// - **Accounts** are rows of `users`; the e-mail is unique case-insensitively through
///   its index and the table's collation (`utf8mb4_unicode_ci`, which also ignores
///   trailing spaces and, like any `_ci` collation, some accents). The password hash is
///   stored and returned as given.
/// - **Tokens** are rows of `api_tokens`: the digest as [`TokenDigest::to_hex`] in
///   `token_hash` (unique), the expiry in `expires_at` (UTC `DATETIME(3)`, exact to the
///   millisecond). `authenticate` compares `expires_at > now` in SQL; it does not touch
///   `last_used_at`. Deleting a user revokes their tokens (the foreign key cascades).
///
/// The pool's connections must run with `time_zone = '+00:00'` (sqlx's default, and what
/// [`connect`](crate::connect) sets), on a database migrated with
/// [`migrate`](crate::migrate). Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct MySqlAccountStore {
    pool: MySqlPool,
}

impl MySqlAccountStore {
    /// A store over `pool`, whose database has been migrated with
    /// [`migrate`](crate::migrate) (0006 at least, which adds the tokens' expiry).
    pub fn new(pool: MySqlPool) -> Self {
        Self { pool }
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }
}

#[async_trait]
impl AccountStore for MySqlAccountStore {
    /// One `INSERT INTO users`; the new id is the row's `AUTO_INCREMENT` id.
    ///
    /// # Errors
    /// [`AccountError::EmailTaken`] when `users_email_unique` refuses the e-mail;
    /// [`AccountError::Unavailable`] when the database cannot be reached;
    /// [`AccountError::Unexpected`] otherwise (e.g. a name or e-mail longer than 255
    /// characters). Nothing is written on error.
    async fn create_account(&self, new: NewAccount) -> Result<Account, AccountError> {
        let done = sqlx::query(INSERT_USER)
            .bind(&new.name)
            .bind(&new.email)
            .bind(&new.password_hash)
            .execute(&self.pool)
            .await
            .ctx("inserting an account")
            .map_err(|e| {
                if is_email_taken(&e) {
                    AccountError::EmailTaken
                } else {
                    into_account_error(e)
                }
            })?;
        Ok(Account {
            id: user_id(done.last_insert_id()).map_err(into_account_error)?,
            name: new.name,
            email: new.email,
        })
    }

    /// One indexed `SELECT` by e-mail, compared case-insensitively by the collation.
    ///
    /// # Errors
    /// [`AccountError::Unavailable`] when the database cannot be reached;
    /// [`AccountError::Unexpected`] otherwise (including a row whose id is not a valid
    /// [`UserId`]).
    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, AccountError> {
        let row = sqlx::query_as::<_, CredentialsRow>(CREDENTIALS)
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading an account's credentials")
            .map_err(into_account_error)?;
        row.map(|row| {
            Ok(Credentials {
                account: row.user.into_account()?,
                password_hash: row.password_hash,
            })
        })
        .transpose()
        .map_err(into_account_error)
    }

    /// One `INSERT INTO api_tokens` of the digest's hex form and the expiry.
    ///
    /// # Errors
    /// [`AccountError::UnknownAccount`] when the tokens' foreign key finds no such user;
    /// [`AccountError::Unavailable`] when the database cannot be reached;
    /// [`AccountError::Unexpected`] otherwise (e.g. a digest that is already stored, or
    /// an expiry after the year 9999). Nothing is written on error.
    async fn issue_token(
        &self,
        user: UserId,
        digest: TokenDigest,
        expires_at: Timestamp,
    ) -> Result<(), AccountError> {
        sqlx::query(INSERT_TOKEN)
            .bind(user.get())
            .bind(digest.to_hex())
            .bind(to_sql(expires_at))
            .execute(&self.pool)
            .await
            .ctx("inserting a token")
            .map_err(|e| {
                if e.server_code() == Some(code::NO_REFERENCED_ROW) {
                    AccountError::UnknownAccount(user)
                } else {
                    into_account_error(e)
                }
            })?;
        Ok(())
    }

    /// One `SELECT` joining the token to its user, `expires_at > now` compared by the
    /// server.
    ///
    /// # Errors
    /// [`AccountError::Unavailable`] when the database cannot be reached;
    /// [`AccountError::Unexpected`] otherwise.
    async fn authenticate(
        &self,
        digest: &TokenDigest,
        now: Timestamp,
    ) -> Result<Option<Account>, AccountError> {
        let row = sqlx::query_as::<_, UserRow>(AUTHENTICATE)
            .bind(digest.to_hex())
            .bind(to_sql(now))
            .fetch_optional(&self.pool)
            .await
            .ctx("authenticating a token")
            .map_err(into_account_error)?;
        row.map(UserRow::into_account)
            .transpose()
            .map_err(into_account_error)
    }

    /// `SELECT COUNT(*) FROM users`.
    ///
    /// # Errors
    /// [`AccountError::Unavailable`] when the database cannot be reached;
    /// [`AccountError::Unexpected`] otherwise.
    async fn count_accounts(&self) -> Result<u64, AccountError> {
        let n: i64 = sqlx::query_scalar(COUNT_USERS)
            .fetch_one(&self.pool)
            .await
            .ctx("counting accounts")
            .map_err(into_account_error)?;
        u64::try_from(n)
            .map_err(|_| into_account_error(DbError::data(format!("negative account count {n}"))))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use sqlx::mysql::MySqlPoolOptions;

    use super::*;

    /// A local port nobody listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_with_the_step_as_its_cause() {
        let url = format!("mysql://nobody@127.0.0.1:{}/none", closed_port());
        let pool = MySqlPoolOptions::new()
            .acquire_timeout(Duration::from_millis(300))
            .connect_lazy(&url)
            .unwrap();
        let store = MySqlAccountStore::new(pool);
        let err = store.count_accounts().await.unwrap_err();
        assert!(matches!(err, AccountError::Unavailable(_)), "{err:?}");
        assert_eq!(err.to_string(), "account store unavailable");
        let step = err.source().and_then(|s| s.downcast_ref::<DbError>());
        assert!(
            matches!(step, Some(DbError::Sql { .. })),
            "the source names the step: {step:?}"
        );
        let digest = TokenDigest::from_bytes([7; 32]);
        let err = store
            .authenticate(&digest, Timestamp::from_millis(0))
            .await
            .unwrap_err();
        assert!(matches!(err, AccountError::Unavailable(_)), "{err:?}");
    }
}
