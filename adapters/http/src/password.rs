//! Passwords and the demo accounts: argon2id hashing ([`hash_password`]), verification
//! with a fixed dummy hash for unknown e-mails (so a login takes as long whether or not
//! the account exists), and [`seed_demo_accounts`], the reference's Alice, Bob and
//! Charlie.
//!
//! Hashing is CPU-bound (tens of milliseconds by design): request handlers run it on
//! Tokio's blocking pool, never on an executor thread.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use order_core::ports::{Account, AccountError, AccountStore, NewAccount};

/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "password";

/// The demo accounts as `(name, e-mail)`: the reference system's seed users.
pub const DEMO_ACCOUNTS: [(&str, &str); 3] = [
    ("Alice", "alice@example.com"),
    ("Bob", "bob@example.com"),
    ("Charlie", "charlie@example.com"),
];

/// An argon2id hash (default parameters: m = 19 MiB, t = 2, p = 1) of a password nobody
/// has, verified against when the e-mail is unknown so that the answer takes as long as
/// for a real account.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2l4dGVlbmJ5dGVzYWx0IQ$Dd4ZozgP8mO3n0aVj8LhrhdqF8bzYAOhNyoF9lZ0ZAA";

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The operating system's random source failed (no salt could be drawn).
    #[error("cannot draw a random salt")]
    Random(#[source] getrandom::Error),
    /// argon2 refused the input or its parameters.
    #[error("cannot hash the password")]
    Hash(#[source] argon2::password_hash::Error),
}

/// Why [`seed_demo_accounts`] stopped. Accounts created before the failure stay.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A demo password could not be hashed.
    #[error("cannot hash a demo password")]
    Password(#[from] PasswordError),
    /// The account store refused an account (e.g. `EmailTaken`: already seeded).
    #[error("cannot create a demo account")]
    Store(#[from] AccountError),
}

/// Hashes `password` with argon2id (default parameters) and a fresh 16-byte random salt.
/// Returns the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), which
/// [`AccountStore::create_account`] stores as given and a login verifies against.
///
/// CPU-bound: call it from a blocking context, or accept tens of milliseconds of an
/// executor thread (as a one-off seeding does).
///
/// # Errors
/// [`PasswordError::Random`] when the OS random source fails; [`PasswordError::Hash`]
/// when argon2 refuses (never for the default parameters and a password that fits in
/// memory).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hash)?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(PasswordError::Hash)?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`; `false` as well for a string that
/// is not a valid PHC hash (a corrupted row must not let anyone in). CPU-bound.
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification against the dummy hash: the unknown-e-mail path
/// of a login. Always `false`.
pub(crate) fn verify_dummy(password: &str) -> bool {
    let _ = verify_password(password, DUMMY_HASH);
    false
}

/// Creates the three [`DEMO_ACCOUNTS`] in `accounts`, each with [`DEMO_PASSWORD`]
/// hashed by [`hash_password`] (its own salt), and returns them in that order.
///
/// Hashes inline on the calling task (three argon2 hashes): meant for start-up, before
/// serving. A server seeds only an empty store (see
/// [`AccountStore::count_accounts`]).
///
/// # Errors
/// [`SeedError::Password`] when hashing fails; [`SeedError::Store`] when the store
/// refuses an account (`EmailTaken` if one already exists) — accounts created before
/// the failure are kept.
pub async fn seed_demo_accounts(accounts: &dyn AccountStore) -> Result<Vec<Account>, SeedError> {
    let mut created = Vec::with_capacity(DEMO_ACCOUNTS.len());
    for (name, email) in DEMO_ACCOUNTS {
        let password_hash = hash_password(DEMO_PASSWORD)?;
        let account = accounts
            .create_account(NewAccount {
                name: name.to_owned(),
                email: email.to_owned(),
                password_hash,
            })
            .await?;
        created.push(account);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horse ", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_their_salt() {
        assert_ne!(hash_password("x").unwrap(), hash_password("x").unwrap());
    }

    #[test]
    fn the_dummy_hash_is_a_valid_argon2id_hash_with_the_default_parameters() {
        let hash = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(hash.algorithm.as_str(), "argon2id");
        let fresh = hash_password("x").unwrap();
        let fresh = PasswordHash::new(&fresh).unwrap();
        assert_eq!(
            hash.params, fresh.params,
            "same cost as a real account's hash"
        );
        assert!(!verify_dummy(DEMO_PASSWORD));
    }
}
