//! The `AccountStore` port: who may place orders, and the bearer tokens they hold.
//!
//! The store never sees a password or a token: it keeps the password as a hash string
//! the caller made (an argon2id PHC string in `order-http`) and each token as its
//! [`TokenDigest`], so a leaked table grants nothing. Hashing and token generation belong
//! to the driving adapter; this port only stores and finds.

use async_trait::async_trait;

use crate::domain::{Timestamp, UserId};

/// Errors of [`AccountStore`].
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// [`AccountStore::create_account`]: another account already has this e-mail
    /// (compared case-insensitively). Nothing was written.
    #[error("an account with this e-mail already exists")]
    EmailTaken,
    /// [`AccountStore::issue_token`]: no account has this id. Nothing was written.
    #[error("account {0} does not exist")]
    UnknownAccount(UserId),
    /// The store cannot be reached or timed out; nothing was written.
    #[error("account store unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else; nothing was written.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// An account as the store knows it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's id: the [`UserId`] its orders carry.
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// The login e-mail, as stored.
    pub email: String,
}

/// An account with the password hash it was created with: what a login checks.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account.
    pub account: Account,
    /// The hash string given to [`AccountStore::create_account`], unchanged.
    pub password_hash: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("account", &self.account)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// What [`AccountStore::create_account`] stores.
#[derive(Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Display name (1..=255 characters).
    pub name: String,
    /// Login e-mail (1..=255 characters), unique case-insensitively.
    pub email: String,
    /// The password's hash (e.g. an argon2id PHC string), stored as given.
    pub password_hash: String,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// The SHA-256 digest of a bearer token: the only form in which a store sees one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Wraps a 32-byte digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex characters (how the MySQL adapter stores it).
    pub fn to_hex(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(64);
        for b in self.0 {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
        }
        out
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A digest is not a secret, but printing a prefix is enough to tell two apart.
        write!(f, "TokenDigest({}…)", &self.to_hex()[..8])
    }
}

/// Accounts and their bearer tokens.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Stores a new account and returns it with its fresh id. The id is a [`UserId`]
    /// the [`OrderRepository`](crate::ports::OrderRepository) of the same deployment
    /// accepts as an order's owner.
    ///
    /// # Errors
    /// [`AccountError::EmailTaken`] when the e-mail is in use (case-insensitively);
    /// `Unavailable`/`Unexpected` when the store failed. Nothing is written on error.
    async fn create_account(&self, new: NewAccount) -> Result<Account, AccountError>;

    /// The account whose e-mail equals `email` case-insensitively, with its password
    /// hash; `None` when there is none.
    ///
    /// # Errors
    /// `Unavailable`/`Unexpected` when the store failed.
    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, AccountError>;

    /// Records a token for `user`, valid until `expires_at` (exclusive).
    ///
    /// # Errors
    /// [`AccountError::UnknownAccount`] for a missing user; `Unavailable`/`Unexpected`
    /// when the store failed. Nothing is written on error.
    async fn issue_token(
        &self,
        user: UserId,
        digest: TokenDigest,
        expires_at: Timestamp,
    ) -> Result<(), AccountError>;

    /// The account holding the token with this digest, if the token exists and
    /// `now < expires_at`. An expired or unknown token is `None`, never an error.
    ///
    /// # Errors
    /// `Unavailable`/`Unexpected` when the store failed.
    async fn authenticate(
        &self,
        digest: &TokenDigest,
        now: Timestamp,
    ) -> Result<Option<Account>, AccountError>;

    /// How many accounts exist (a server seeds its demo data only into an empty store).
    ///
    /// # Errors
    /// `Unavailable`/`Unexpected` when the store failed.
    async fn count_accounts(&self) -> Result<u64, AccountError>;
}
