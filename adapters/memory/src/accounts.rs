//! [`MemoryAccounts`]: accounts and bearer-token digests in a mutex-guarded map, for the
//! embedded server and tests. New accounts take their ids from the
//! [`MemoryOrderRepository`] they were given, so every account can own orders there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use order_core::domain::{Timestamp, UserId};
use order_core::ports::{
    Account, AccountError, AccountStore, Credentials, NewAccount, TokenDigest,
};

use crate::MemoryOrderRepository;

#[derive(Debug, Default)]
struct State {
    /// By lowercased e-mail.
    by_email: HashMap<String, Credentials>,
    /// By id: the lowercased e-mail, the key of `by_email`.
    email_of: HashMap<UserId, String>,
    tokens: HashMap<TokenDigest, (UserId, Timestamp)>,
}

/// The in-memory [`AccountStore`]. Cloning shares the store.
#[derive(Debug, Clone)]
pub struct MemoryAccounts {
    repository: Arc<MemoryOrderRepository>,
    state: Arc<Mutex<State>>,
}

impl MemoryAccounts {
    /// An empty store whose accounts are users of `repository`.
    pub fn new(repository: Arc<MemoryOrderRepository>) -> Self {
        Self {
            repository,
            state: Arc::default(),
        }
    }

    fn guard(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated (every
        // update is one insert), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl AccountStore for MemoryAccounts {
    async fn create_account(&self, new: NewAccount) -> Result<Account, AccountError> {
        let key = new.email.to_lowercase();
        let mut state = self.guard();
        if state.by_email.contains_key(&key) {
            return Err(AccountError::EmailTaken);
        }
        let id = self.repository.add_user();
        let account = Account {
            id,
            name: new.name,
            email: new.email,
        };
        state.email_of.insert(id, key.clone());
        state.by_email.insert(
            key,
            Credentials {
                account: account.clone(),
                password_hash: new.password_hash,
            },
        );
        Ok(account)
    }

    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, AccountError> {
        Ok(self.guard().by_email.get(&email.to_lowercase()).cloned())
    }

    async fn issue_token(
        &self,
        user: UserId,
        digest: TokenDigest,
        expires_at: Timestamp,
    ) -> Result<(), AccountError> {
        let mut state = self.guard();
        if !state.email_of.contains_key(&user) {
            return Err(AccountError::UnknownAccount(user));
        }
        state.tokens.insert(digest, (user, expires_at));
        Ok(())
    }

    async fn authenticate(
        &self,
        digest: &TokenDigest,
        now: Timestamp,
    ) -> Result<Option<Account>, AccountError> {
        let state = self.guard();
        let Some((user, expires_at)) = state.tokens.get(digest) else {
            return Ok(None);
        };
        if now >= *expires_at {
            return Ok(None);
        }
        Ok(state
            .email_of
            .get(user)
            .and_then(|e| state.by_email.get(e))
            .map(|c| c.account.clone()))
    }

    async fn count_accounts(&self) -> Result<u64, AccountError> {
        Ok(self.guard().email_of.len() as u64)
    }
}
