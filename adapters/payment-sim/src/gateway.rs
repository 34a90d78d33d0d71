//! The simulated provider: approve or decline after a delay, recorded in the ledger
//! while the call waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use order_core::app::SeededRandom;
use order_core::domain::{FailureReason, Money, OrderId};
use order_core::ports::{Clock, PaymentError, PaymentGateway, PaymentOutcome, RandomSource};

use crate::ledger::{LedgerEntry, LedgerError, PaymentLedger, Recorded};

/// The reference's decline reason.
pub const DECLINE_REASON: &str = "Simulated payment decline.";

/// The decline a void records for a key that had no outcome yet.
pub(crate) const VOID_REASON: &str = "Voided: the provider never answered.";

/// How the simulation behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Shortest delay before answering (reference: 50 ms). Zero is allowed.
    pub min_delay: Duration,
    /// Longest delay before answering (reference: 200 ms); at least `min_delay`.
    pub max_delay: Duration,
    /// Probability of approval, 0.0..=1.0 (reference: 0.8).
    pub approval_rate: f64,
    /// Probability that a call fails with a transient error before deciding anything
    /// (0.0 by default; raise it to exercise retries).
    pub transient_error_rate: f64,
    /// Seed of the simulation's random draws.
    pub seed: u64,
}

impl Default for SimConfig {
    /// The reference: 50–200 ms, 80 % approval, no transient errors, seed 0.
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            approval_rate: 0.8,
            transient_error_rate: 0.0,
            seed: 0,
        }
    }
}

/// Why a [`SimConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimConfigError {
    /// `max_delay < min_delay`.
    #[error("max_delay must be at least min_delay")]
    DelayRange,
    /// A rate outside 0.0..=1.0.
    #[error("{0} must be within 0.0..=1.0")]
    Rate(&'static str),
}

/// Calls seen for one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyReport {
    /// Every `charge` call with this key.
    pub calls: u32,
    /// Calls that recorded a new outcome in the ledger (0 or 1 when the ledger holds).
    pub new_charges: u32,
    /// Calls answered from the ledger (repeats).
    pub replays: u32,
    /// Calls that failed transiently.
    pub transient_errors: u32,
    /// `void` calls that recorded a decline (0 or 1).
    pub voids: u32,
}

/// A simulated payment provider: approves with the configured probability, records the
/// first outcome per key in its [`PaymentLedger`], and answers after a uniform delay on
/// the injected clock — the ledger write runs during the delay, so a call takes its
/// drawn delay, or the ledger write's time if that is longer. A repeated charge for a
/// key returns the recorded outcome without a new charge, whichever process made the
/// first one (when the ledger is shared); it is answered after a delay like any call,
/// and costs the ledger one write attempt (no read before it).
pub struct SimulatedGateway {
    config: SimConfig,
    ledger: Arc<dyn PaymentLedger>,
    clock: Arc<dyn Clock>,
    rng: SeededRandom,
    reports: Mutex<HashMap<OrderId, KeyReport>>,
}

impl std::fmt::Debug for SimulatedGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedGateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SimulatedGateway {
    /// A gateway over `ledger`, sleeping on `clock`.
    ///
    /// # Errors
    /// [`SimConfigError`] when the delay range or a rate is invalid.
    pub fn new(
        config: SimConfig,
        ledger: Arc<dyn PaymentLedger>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SimConfigError> {
        if config.max_delay < config.min_delay {
            return Err(SimConfigError::DelayRange);
        }
        if !(0.0..=1.0).contains(&config.approval_rate) {
            return Err(SimConfigError::Rate("approval_rate"));
        }
        if !(0.0..=1.0).contains(&config.transient_error_rate) {
            return Err(SimConfigError::Rate("transient_error_rate"));
        }
        Ok(Self {
            rng: SeededRandom::new(config.seed),
            config,
            ledger,
            clock,
            reports: Mutex::new(HashMap::new()),
        })
    }

    /// The ledger behind this gateway.
    pub fn ledger(&self) -> &Arc<dyn PaymentLedger> {
        &self.ledger
    }

    /// What this gateway instance saw for `key`.
    pub fn report(&self, key: OrderId) -> KeyReport {
        self.reports_lock().get(&key).copied().unwrap_or_default()
    }

    /// Every key this instance saw, with its report, ascending by key.
    pub fn reports(&self) -> Vec<(OrderId, KeyReport)> {
        let mut all: Vec<_> = self.reports_lock().iter().map(|(k, r)| (*k, *r)).collect();
        all.sort_by_key(|(k, _)| *k);
        all
    }

    fn reports_lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, KeyReport>> {
        // Each critical section is one counter update: a poisoned map is still consistent.
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, key: OrderId, f: impl FnOnce(&mut KeyReport)) {
        f(self.reports_lock().entry(key).or_default());
    }

    /// Records `entry` unless its key already has an outcome; returns the key's outcome
    /// and whether it is `entry`'s.
    async fn settle(&self, entry: LedgerEntry) -> Result<(PaymentOutcome, bool), PaymentError> {
        Ok(
            match self
                .ledger
                .record_first(entry)
                .await
                .map_err(ledger_error)?
            {
                Recorded::New(e) => (e.outcome, true),
                Recorded::Existing(e) => (e.outcome, false),
            },
        )
    }

    fn delay(&self) -> Duration {
        let span = self.config.max_delay.saturating_sub(self.config.min_delay);
        self.config.min_delay + span.mul_f64(self.rng.next_unit_f64())
    }
}

fn ledger_error(e: LedgerError) -> PaymentError {
    match e {
        e @ LedgerError::Unavailable(_) => PaymentError::transient(e),
        LedgerError::Unexpected(e) => PaymentError::Unexpected(e),
    }
}

#[async_trait]
impl PaymentGateway for SimulatedGateway {
    async fn charge(&self, key: OrderId, amount: Money) -> Result<PaymentOutcome, PaymentError> {
        self.note(key, |r| r.calls += 1);
        // No ledger read first: the write below is first-writer-wins and answers a
        // repeat with the key's recorded outcome, so a first charge — the common case —
        // costs one ledger write and nothing else. A repeat is answered after the
        // simulated delay, as a real provider answers a retried request.
        // Draw everything up front so a seed gives the same decisions whatever the clock.
        let delay = self.delay();
        let transient = self.rng.next_unit_f64() < self.config.transient_error_rate;
        let approved = self.rng.next_unit_f64() < self.config.approval_rate;
        if transient {
            self.clock.sleep(delay).await;
            self.note(key, |r| r.transient_errors += 1);
            return Err(PaymentError::transient_msg("simulated provider timeout"));
        }
        let outcome = if approved {
            PaymentOutcome::Approved
        } else {
            PaymentOutcome::Declined(FailureReason::new(DECLINE_REASON))
        };
        let entry = LedgerEntry {
            key,
            amount,
            outcome,
        };
        // The delay is the provider's whole answer time, its own bookkeeping included:
        // the ledger write runs while the call waits, and the answer comes when both
        // are done (after the delay, unless the ledger is slower than it).
        let (settled, ()) = tokio::join!(self.settle(entry), self.clock.sleep(delay));
        let (outcome, new) = settled?;
        self.note(key, |r| {
            if new {
                r.new_charges += 1;
            } else {
                r.replays += 1;
            }
        });
        Ok(outcome)
    }

    async fn void(&self, key: OrderId) -> Result<PaymentOutcome, PaymentError> {
        let entry = LedgerEntry {
            key,
            amount: Money::ZERO,
            outcome: PaymentOutcome::Declined(FailureReason::new(VOID_REASON)),
        };
        let (outcome, new) = self.settle(entry).await?;
        if new {
            self.note(key, |r| r.voids += 1);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::MemoryLedger;
    use order_core::app::ManualClock;
    use order_core::domain::Timestamp;

    /// A gateway on a manual clock starting at 0: the clock's reading is the total delay.
    fn gateway(config: SimConfig) -> (SimulatedGateway, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let g =
            SimulatedGateway::new(config, Arc::new(MemoryLedger::new()), clock.clone()).unwrap();
        (g, clock)
    }

    fn oid(n: u64) -> OrderId {
        OrderId::new(n).unwrap()
    }

    #[tokio::test]
    async fn approval_rate_and_delays_follow_the_config() {
        let (g, clock) = gateway(SimConfig {
            seed: 11,
            ..SimConfig::default()
        });
        let n = 2000u64;
        let mut approved = 0;
        for i in 1..=n {
            if g.charge(oid(i), Money::from_cents(100).unwrap())
                .await
                .unwrap()
                == PaymentOutcome::Approved
            {
                approved += 1;
            }
        }
        let rate = approved as f64 / n as f64;
        assert!((0.77..=0.83).contains(&rate), "approval rate {rate}");
        let mean_ms = clock.now().as_millis() as f64 / n as f64;
        assert!(
            (115.0..=135.0).contains(&mean_ms),
            "mean delay {mean_ms} ms, expected ~125"
        );
    }

    #[tokio::test]
    async fn a_repeated_charge_returns_the_first_outcome_and_is_not_a_new_charge() {
        let (g, _) = gateway(SimConfig {
            approval_rate: 0.5,
            seed: 3,
            ..SimConfig::default()
        });
        let amount = Money::from_cents(999).unwrap();
        let first = g.charge(oid(1), amount).await.unwrap();
        for _ in 0..20 {
            assert_eq!(g.charge(oid(1), amount).await.unwrap(), first);
        }
        let r = g.report(oid(1));
        assert_eq!((r.calls, r.new_charges, r.replays), (21, 1, 20));
        assert_eq!(g.ledger().entries().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_outcomes() {
        let outcomes = |seed| async move {
            let (g, _) = gateway(SimConfig {
                seed,
                ..SimConfig::default()
            });
            let mut v = Vec::new();
            for i in 1..=50 {
                v.push(g.charge(oid(i), Money::ZERO).await.unwrap());
            }
            v
        };
        assert_eq!(outcomes(5).await, outcomes(5).await);
        assert_ne!(outcomes(5).await, outcomes(6).await);
    }

    #[tokio::test]
    async fn zero_delay_and_transient_errors_are_configurable() {
        let config = SimConfig {
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            transient_error_rate: 1.0,
            ..SimConfig::default()
        };
        let (g, clock) = gateway(config);
        assert!(matches!(
            g.charge(oid(1), Money::ZERO).await,
            Err(PaymentError::Transient(_))
        ));
        assert_eq!(clock.now().as_millis(), 0);
        assert_eq!(g.report(oid(1)).transient_errors, 1);
        assert!(g.ledger().entries().await.unwrap().is_empty());
    }

    /// A ledger whose store is down: every call fails with an I/O error as the cause.
    struct DownLedger;

    fn refused() -> LedgerError {
        LedgerError::unavailable(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "ledger store refused the connection",
        ))
    }

    #[async_trait]
    impl PaymentLedger for DownLedger {
        async fn get(&self, _: OrderId) -> Result<Option<LedgerEntry>, LedgerError> {
            Err(refused())
        }
        async fn record_first(&self, _: LedgerEntry) -> Result<Recorded, LedgerError> {
            Err(refused())
        }
        async fn entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
            Err(refused())
        }
    }

    #[tokio::test]
    async fn a_ledger_outage_is_transient_and_keeps_the_ledger_error_and_its_cause() {
        use std::error::Error as _;
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(0)));
        let g = SimulatedGateway::new(SimConfig::default(), Arc::new(DownLedger), clock).unwrap();
        let err = g.charge(oid(1), Money::ZERO).await.unwrap_err();
        assert!(matches!(err, PaymentError::Transient(_)), "{err:?}");
        assert_eq!(err.to_string(), "payment provider temporarily unavailable");
        let ledger = err.source().and_then(|s| s.downcast_ref::<LedgerError>());
        assert!(
            matches!(ledger, Some(LedgerError::Unavailable(_))),
            "{ledger:?}"
        );
        let io = ledger
            .and_then(|l| l.source())
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    /// A ledger that signals `written` each time a record is asked of it.
    struct SignallingLedger {
        inner: MemoryLedger,
        written: Arc<tokio::sync::Notify>,
    }

    #[async_trait]
    impl PaymentLedger for SignallingLedger {
        async fn get(&self, key: OrderId) -> Result<Option<LedgerEntry>, LedgerError> {
            self.inner.get(key).await
        }
        async fn record_first(&self, entry: LedgerEntry) -> Result<Recorded, LedgerError> {
            self.written.notify_one();
            self.inner.record_first(entry).await
        }
        async fn entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
            self.inner.entries().await
        }
    }

    /// A clock whose sleeps end only once the ledger has been asked for a record.
    struct LedgerPacedClock {
        written: Arc<tokio::sync::Notify>,
    }

    impl Clock for LedgerPacedClock {
        fn now(&self) -> order_core::domain::Timestamp {
            Timestamp::from_millis(0)
        }
        fn sleep(&self, _: Duration) -> order_core::ports::Sleep<'_> {
            Box::pin(self.written.notified())
        }
    }

    #[tokio::test]
    async fn the_ledger_is_written_while_the_delay_runs() {
        // The delay cannot end before the ledger write has started: a gateway that
        // wrote only after its delay would never answer.
        let written = Arc::new(tokio::sync::Notify::new());
        let ledger = Arc::new(SignallingLedger {
            inner: MemoryLedger::new(),
            written: written.clone(),
        });
        let clock = Arc::new(LedgerPacedClock { written });
        let g = SimulatedGateway::new(
            SimConfig {
                approval_rate: 1.0,
                ..SimConfig::default()
            },
            ledger,
            clock,
        )
        .unwrap();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            g.charge(oid(1), Money::from_cents(100).unwrap()),
        )
        .await
        .expect("the delay waited for a ledger write that only follows it");
        assert_eq!(answer.unwrap(), PaymentOutcome::Approved);
        assert_eq!(g.ledger().entries().await.unwrap().len(), 1);
        assert_eq!(g.report(oid(1)).new_charges, 1);
    }

    #[tokio::test]
    async fn concurrent_charges_for_one_key_record_one_charge() {
        let (g, _) = gateway(SimConfig {
            approval_rate: 0.5,
            ..SimConfig::default()
        });
        let g = Arc::new(g);
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move {
                    g.charge(oid(7), Money::from_cents(1).unwrap())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut seen = Vec::new();
        for h in handles {
            seen.push(h.await.unwrap());
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "every caller sees the first outcome"
        );
        assert_eq!(g.report(oid(7)).new_charges, 1);
    }

    #[tokio::test]
    async fn a_void_settles_an_unanswered_key_and_a_later_charge_gets_its_decline() {
        let (g, _) = gateway(SimConfig {
            approval_rate: 1.0,
            ..SimConfig::default()
        });
        let voided = g.void(oid(1)).await.unwrap();
        assert_eq!(
            voided,
            PaymentOutcome::Declined(FailureReason::new(VOID_REASON))
        );
        assert_eq!(
            g.charge(oid(1), Money::from_cents(5).unwrap())
                .await
                .unwrap(),
            voided
        );
        assert_eq!(
            (g.report(oid(1)).voids, g.report(oid(1)).new_charges),
            (1, 0)
        );
        // A key that was charged keeps its charge: the void reports it.
        let charged = g
            .charge(oid(2), Money::from_cents(5).unwrap())
            .await
            .unwrap();
        assert_eq!(charged, PaymentOutcome::Approved);
        assert_eq!(g.void(oid(2)).await.unwrap(), PaymentOutcome::Approved);
        assert_eq!(g.report(oid(2)).voids, 0);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::default());
        let ledger: Arc<dyn PaymentLedger> = Arc::new(MemoryLedger::new());
        let bad = SimConfig {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::ZERO,
            ..SimConfig::default()
        };
        assert_eq!(
            SimulatedGateway::new(bad, ledger.clone(), clock.clone()).err(),
            Some(SimConfigError::DelayRange)
        );
        let bad = SimConfig {
            approval_rate: 1.5,
            ..SimConfig::default()
        };
        assert_eq!(
            SimulatedGateway::new(bad, ledger, clock).err(),
            Some(SimConfigError::Rate("approval_rate"))
        );
    }
}
