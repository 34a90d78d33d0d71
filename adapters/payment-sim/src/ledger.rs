//! The payment ledger: the provider's own record of the first outcome per charge key.
//!
//! It stands in for the payment provider's database. The in-memory ledger serves the
//! embedded default; a durable, shared ledger (e.g. a MySQL table) plugs in through
//! [`PaymentLedger`] so that a retried charge after any crash is still recognised.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use order_core::domain::{Money, OrderId};
use order_core::ports::PaymentOutcome;

/// Errors of a [`PaymentLedger`].
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger's store cannot be reached; nothing was recorded. The cause (the
    /// store's own error) is the [`source`](std::error::Error::source); `Display` is
    /// this sentence alone, as for the port errors.
    #[error("payment ledger unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else; nothing was recorded.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl LedgerError {
    /// [`LedgerError::Unavailable`] caused by `cause`, which stays reachable through
    /// `source()`.
    pub fn unavailable<E>(cause: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        LedgerError::Unavailable(anyhow::Error::new(cause))
    }

    /// [`LedgerError::Unavailable`] with only a description of the cause.
    pub fn unavailable_msg<M>(message: M) -> Self
    where
        M: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
    {
        LedgerError::Unavailable(anyhow::Error::msg(message))
    }
}

/// One key's entry: the first outcome recorded for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The charge key (the order id).
    pub key: OrderId,
    /// The amount of the first charge.
    pub amount: Money,
    /// The first outcome; every later charge with this key returns it.
    pub outcome: PaymentOutcome,
}

/// Whether [`PaymentLedger::record_first`] stored the caller's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The caller's outcome is now the key's first outcome: a new charge.
    New(LedgerEntry),
    /// The key already had an outcome (a concurrent or earlier charge won); it is
    /// returned and the caller's outcome was discarded.
    Existing(LedgerEntry),
}

/// The provider's record of charges: at most one entry per key, first writer wins.
#[async_trait]
pub trait PaymentLedger: Send + Sync {
    /// The entry for `key`, if any.
    ///
    /// # Errors
    /// [`LedgerError`] when the store failed.
    async fn get(&self, key: OrderId) -> Result<Option<LedgerEntry>, LedgerError>;

    /// Stores `entry` unless its key already has one — atomically, across every process
    /// sharing the ledger — and says which entry won.
    ///
    /// # Errors
    /// [`LedgerError`] when the store failed; then nothing was recorded.
    async fn record_first(&self, entry: LedgerEntry) -> Result<Recorded, LedgerError>;

    /// Every entry, ascending by key (for invariant checks and tests).
    ///
    /// # Errors
    /// [`LedgerError`] when the store failed.
    async fn entries(&self) -> Result<Vec<LedgerEntry>, LedgerError>;
}

/// A ledger in process memory: the embedded default.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    entries: Mutex<HashMap<OrderId, LedgerEntry>>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, LedgerEntry>> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // critical section is a single insert or read), so a poisoned lock is still sound.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl PaymentLedger for MemoryLedger {
    async fn get(&self, key: OrderId) -> Result<Option<LedgerEntry>, LedgerError> {
        Ok(self.lock().get(&key).cloned())
    }

    async fn record_first(&self, entry: LedgerEntry) -> Result<Recorded, LedgerError> {
        let mut map = self.lock();
        match map.get(&entry.key) {
            Some(existing) => Ok(Recorded::Existing(existing.clone())),
            None => {
                map.insert(entry.key, entry.clone());
                Ok(Recorded::New(entry))
            }
        }
    }

    async fn entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        let mut all: Vec<LedgerEntry> = self.lock().values().cloned().collect();
        all.sort_by_key(|e| e.key);
        Ok(all)
    }
}
