//! A payment gateway whose outcomes are scripted per order, idempotent per key like a
//! real provider, and which counts the charges it recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::domain::{FailureReason, Money, OrderId};
use crate::ports::{PaymentError, PaymentGateway, PaymentOutcome};

/// What one charge call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStep {
    /// Approve (and record it as the key's outcome).
    Approve,
    /// Decline (and record it as the key's outcome).
    Decline,
    /// Fail transiently (record nothing; a retry is safe).
    Transient,
}

/// The decline reason the scripted gateway records.
pub const SCRIPTED_DECLINE: &str = "Scripted decline.";

/// The decline reason a void records.
pub const SCRIPTED_VOID: &str = "Voided: no answer from the provider.";

#[derive(Debug, Default)]
struct State {
    scripts: HashMap<OrderId, VecDeque<PaymentStep>>,
    recorded: HashMap<OrderId, (PaymentOutcome, Money)>,
    new_charges: HashMap<OrderId, u32>,
    calls: HashMap<OrderId, u32>,
    voids: HashMap<OrderId, u32>,
}

/// A [`PaymentGateway`] that follows a per-order script of [`PaymentStep`]s (approving
/// once a script runs out). The first definitive outcome per key — a charge's, or a
/// void's decline — is recorded and returned to every later call, which is not counted
/// as a new charge. `void` always reaches this provider.
#[derive(Debug, Default)]
pub struct ScriptedGateway {
    state: Mutex<State>,
}

impl ScriptedGateway {
    /// A gateway with no scripts (everything approves).
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few map updates that cannot panic midway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the script for `order`.
    pub fn script(&self, order: OrderId, steps: impl IntoIterator<Item = PaymentStep>) {
        self.state()
            .scripts
            .insert(order, steps.into_iter().collect());
    }

    /// The outcome recorded for `order`, if any.
    pub fn recorded(&self, order: OrderId) -> Option<PaymentOutcome> {
        self.state().recorded.get(&order).map(|(o, _)| o.clone())
    }

    /// How many charges were recorded for `order` (a faithful provider: 0 or 1).
    pub fn new_charges(&self, order: OrderId) -> u32 {
        self.state().new_charges.get(&order).copied().unwrap_or(0)
    }

    /// How many times `void` was called for `order`.
    pub fn voids(&self, order: OrderId) -> u32 {
        self.state().voids.get(&order).copied().unwrap_or(0)
    }

    /// How many times `charge` was called for `order`.
    pub fn calls(&self, order: OrderId) -> u32 {
        self.state().calls.get(&order).copied().unwrap_or(0)
    }
}

#[async_trait]
impl PaymentGateway for ScriptedGateway {
    async fn charge(&self, key: OrderId, amount: Money) -> Result<PaymentOutcome, PaymentError> {
        let mut s = self.state();
        *s.calls.entry(key).or_default() += 1;
        if let Some((outcome, _)) = s.recorded.get(&key) {
            return Ok(outcome.clone());
        }
        let step = s
            .scripts
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
            .unwrap_or(PaymentStep::Approve);
        let outcome = match step {
            PaymentStep::Transient => {
                return Err(PaymentError::transient_msg("scripted transient failure"));
            }
            PaymentStep::Approve => PaymentOutcome::Approved,
            PaymentStep::Decline => PaymentOutcome::Declined(FailureReason::new(SCRIPTED_DECLINE)),
        };
        s.recorded.insert(key, (outcome.clone(), amount));
        *s.new_charges.entry(key).or_default() += 1;
        Ok(outcome)
    }

    async fn void(&self, key: OrderId) -> Result<PaymentOutcome, PaymentError> {
        let mut s = self.state();
        *s.voids.entry(key).or_default() += 1;
        let outcome = s.recorded.entry(key).or_insert_with(|| {
            (
                PaymentOutcome::Declined(FailureReason::new(SCRIPTED_VOID)),
                Money::ZERO,
            )
        });
        Ok(outcome.0.clone())
    }
}
