//! [`Engine`] and its [`EngineBuilder`]: one place to wire an [`OrderService`] from
//! ports — ours (behind cargo features) or the embedder's own — with defaults for
//! everything that has a sensible one, validated once in [`EngineBuilder::build`].

use std::sync::Arc;

use order_core::OrderService;
use order_core::app::{ConfigError, Ports, SeededRandom, ServiceConfig};
use order_core::ports::{
    AccountStore, Clock, DistributedLock, EventPublisher, JobQueue, OrderRepository,
    PaymentGateway, RandomSource,
};

use crate::Workers;

/// Why [`EngineBuilder::build`] refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A port nobody provided; the message names the setters that provide it.
    #[error("no {port}: {hint}")]
    MissingPort {
        /// The port (`repository`, `payments`, `lock`, `queue`, `events`).
        port: &'static str,
        /// Which builder calls provide it.
        hint: &'static str,
    },
    /// The service settings are incoherent, alone or with the queue's timings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The memory queue's settings are unusable.
    #[cfg(feature = "memory")]
    #[error(transparent)]
    MemoryQueue(#[from] order_core::ports::QueueTimingsError),
    /// The payment simulation's settings are unusable.
    #[cfg(feature = "payment-sim")]
    #[error(transparent)]
    Payments(#[from] order_payment_sim::SimConfigError),
    /// The Redis adapters' settings are unusable.
    #[cfg(feature = "redis")]
    #[error(transparent)]
    Redis(#[from] order_redis::ConnectError),
}

/// A wired engine: the [`OrderService`], plus handles to those of our adapters the
/// builder created, for seeding and inspection.
pub struct Engine {
    service: Arc<OrderService>,
    accounts: Option<Arc<dyn AccountStore>>,
    #[cfg(feature = "memory")]
    memory: Option<order_memory::MemoryAdapters>,
    #[cfg(feature = "mysql")]
    mysql: Option<Arc<order_mysql::MySqlOrderRepository>>,
    #[cfg(feature = "payment-sim")]
    simulated: Option<Arc<order_payment_sim::SimulatedGateway>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder with every default: the system clock, an entropy-seeded RNG and the
    /// default [`ServiceConfig`]; no ports yet.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The use cases.
    pub fn service(&self) -> &Arc<OrderService> {
        &self.service
    }

    /// The account store of the same deployment as the repository: the one given to
    /// [`EngineBuilder::accounts`]; else, when the repository is ours, the accounts
    /// beside it (MySQL's `users`/`api_tokens` tables with [`EngineBuilder::mysql`],
    /// memory with [`EngineBuilder::memory`]); else `None` (an embedder's own
    /// repository: its users are theirs to store).
    pub fn accounts(&self) -> Option<&Arc<dyn AccountStore>> {
        self.accounts.as_ref()
    }

    /// The memory adapters, when [`EngineBuilder::memory`] created them (also those the
    /// embedder replaced by its own ports: they are then simply unused).
    #[cfg(feature = "memory")]
    pub fn memory(&self) -> Option<&order_memory::MemoryAdapters> {
        self.memory.as_ref()
    }

    /// The MySQL repository, when [`EngineBuilder::mysql`] created it (seeding,
    /// inspection, `explain_reads`).
    #[cfg(feature = "mysql")]
    pub fn mysql(&self) -> Option<&Arc<order_mysql::MySqlOrderRepository>> {
        self.mysql.as_ref()
    }

    /// The simulated provider, when [`EngineBuilder::simulated_payments`] created it
    /// (its ledger records every charge).
    #[cfg(feature = "payment-sim")]
    pub fn simulated_payments(&self) -> Option<&Arc<order_payment_sim::SimulatedGateway>> {
        self.simulated.as_ref()
    }

    /// Spawns `count` workers (at least one) and one reconciler on the current Tokio
    /// runtime — the worker role of DESIGN §6. Stop them with [`Workers::stop`], which
    /// has a deadline.
    pub fn spawn_workers(&self, count: usize) -> Workers {
        Workers::spawn_with_reconciler(&self.service, count)
    }
}

/// Builds an [`Engine`]: one setter per port, conveniences for our adapters, defaults for
/// the rest, and one validation in [`build`](Self::build).
///
/// A port set explicitly always wins over one a convenience would provide, whatever the
/// order of the calls: `.memory().repository(mine)` runs on `mine` and the memory lock,
/// queue and events.
#[derive(Default)]
#[must_use = "an EngineBuilder does nothing until `build` is called"]
pub struct EngineBuilder {
    repository: Option<Arc<dyn OrderRepository>>,
    accounts: Option<Arc<dyn AccountStore>>,
    payments: Option<Arc<dyn PaymentGateway>>,
    lock: Option<Arc<dyn DistributedLock>>,
    queue: Option<Arc<dyn JobQueue>>,
    events: Option<Arc<dyn EventPublisher>>,
    clock: Option<Arc<dyn Clock>>,
    rng: Option<Arc<dyn RandomSource>>,
    config: ServiceConfig,
    #[cfg(feature = "memory")]
    memory: Option<order_memory::QueueConfig>,
    #[cfg(feature = "mysql")]
    mysql: Option<order_mysql::MySqlPool>,
    #[cfg(feature = "redis")]
    redis: Option<order_redis::RedisConnection>,
    #[cfg(feature = "payment-sim")]
    simulated: Option<order_payment_sim::SimConfig>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("repository", &self.repository.is_some())
            .field("payments", &self.payments.is_some())
            .field("lock", &self.lock.is_some())
            .field("queue", &self.queue.is_some())
            .field("events", &self.events.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Accounts and bearer tokens (what `order-http` authenticates against); by default
    /// those beside our repository, see [`Engine::accounts`].
    pub fn accounts(mut self, accounts: Arc<dyn AccountStore>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Orders and stock.
    pub fn repository(mut self, repository: Arc<dyn OrderRepository>) -> Self {
        self.repository = Some(repository);
        self
    }

    /// The payment provider.
    pub fn payments(mut self, payments: Arc<dyn PaymentGateway>) -> Self {
        self.payments = Some(payments);
        self
    }

    /// The distributed lock in front of the database. With [`LockMode::None`] it is
    /// never called, but a port is still required (the memory lock will do).
    ///
    /// [`LockMode::None`]: order_core::LockMode::None
    pub fn lock(mut self, lock: Arc<dyn DistributedLock>) -> Self {
        self.lock = Some(lock);
        self
    }

    /// The job queue.
    pub fn queue(mut self, queue: Arc<dyn JobQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Where status changes are published.
    pub fn events(mut self, events: Arc<dyn EventPublisher>) -> Self {
        self.events = Some(events);
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The random source for lease tokens, lock tokens and jitter (default: seeded from
    /// OS entropy). Give a [`SeededRandom`] for reproducible runs.
    pub fn rng(mut self, rng: Arc<dyn RandomSource>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// The service settings (default: [`ServiceConfig::default`]).
    pub fn config(mut self, config: ServiceConfig) -> Self {
        self.config = config;
        self
    }

    /// Every port not set otherwise — repository, lock, queue (default
    /// [`QueueConfig`](order_memory::QueueConfig)), events — in memory, on the engine's
    /// clock: the embedded default. Payments still need a provider
    /// ([`simulated_payments`](Self::simulated_payments) or [`payments`](Self::payments)).
    #[cfg(feature = "memory")]
    pub fn memory(self) -> Self {
        self.memory_with(order_memory::QueueConfig::default())
    }

    /// As [`memory`](Self::memory), with the memory queue's settings.
    #[cfg(feature = "memory")]
    pub fn memory_with(mut self, queue: order_memory::QueueConfig) -> Self {
        self.memory = Some(queue);
        self
    }

    /// The repository on MySQL/MariaDB (`pool` already migrated: see
    /// `order_mysql::migrate`); with [`simulated_payments`](Self::simulated_payments)
    /// the provider's ledger lives in the same database.
    #[cfg(feature = "mysql")]
    pub fn mysql(mut self, pool: order_mysql::MySqlPool) -> Self {
        self.mysql = Some(pool);
        self
    }

    /// Lock, queue and events on Redis, over `connection` (which may still be
    /// connecting: the adapters recover by themselves).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, connection: &order_redis::RedisConnection) -> Self {
        self.redis = Some(connection.clone());
        self
    }

    /// The simulated provider (50–200 ms, 80 % approval by default), over a ledger in
    /// MySQL when [`mysql`](Self::mysql) is set, in memory otherwise.
    #[cfg(feature = "payment-sim")]
    pub fn simulated_payments(mut self, config: order_payment_sim::SimConfig) -> Self {
        self.simulated = Some(config);
        self
    }

    /// Wires and validates everything once. Asynchronous because the Redis adapters
    /// start their connections; nothing waits for a server.
    ///
    /// # Errors
    /// [`BuildError::MissingPort`] naming a port nobody provided; the configuration
    /// errors of the service (checked with the queue's timings) and of our adapters.
    pub async fn build(self) -> Result<Engine, BuildError> {
        // Filled in below by the conveniences of whichever adapter features are on.
        #[allow(unused_mut)]
        let mut ports = PartialPorts {
            repository: self.repository,
            payments: self.payments,
            lock: self.lock,
            queue: self.queue,
            events: self.events,
        };
        let clock: Arc<dyn Clock> = match self.clock {
            Some(c) => c,
            None => Arc::new(order_core::runtime::SystemClock::new()),
        };
        let rng: Arc<dyn RandomSource> = match self.rng {
            Some(r) => r,
            None => Arc::new(SeededRandom::from_entropy()),
        };

        #[allow(unused_mut)]
        let mut accounts = self.accounts;
        #[cfg(feature = "mysql")]
        let mysql = self.mysql.map(|pool| {
            let repository = Arc::new(order_mysql::MySqlOrderRepository::new(pool.clone()));
            if ports.repository.is_none() {
                ports.repository = Some(repository.clone());
                accounts.get_or_insert_with(|| {
                    Arc::new(order_mysql::MySqlAccountStore::new(pool.clone()))
                });
            }
            (pool, repository)
        });

        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            if ports.lock.is_none() {
                ports.lock = Some(Arc::new(order_redis::RedisLock::new(redis).await?));
            }
            if ports.queue.is_none() {
                ports.queue = Some(Arc::new(order_redis::RedisQueue::new(redis).await?));
            }
            ports
                .events
                .get_or_insert_with(|| Arc::new(order_redis::RedisEvents::new(redis)));
        }

        #[cfg(feature = "memory")]
        let memory = match self.memory {
            Some(queue) => {
                let memory = order_memory::MemoryAdapters::new(clock.clone(), queue)?;
                if ports.repository.is_none() {
                    ports.repository = Some(memory.repository.clone());
                    accounts.get_or_insert_with(|| {
                        Arc::new(order_memory::MemoryAccounts::new(memory.repository.clone()))
                    });
                }
                ports.lock.get_or_insert_with(|| memory.lock.clone());
                ports.queue.get_or_insert_with(|| memory.queue.clone());
                ports.events.get_or_insert_with(|| memory.events.clone());
                Some(memory)
            }
            None => None,
        };

        #[cfg(feature = "payment-sim")]
        let simulated = match self.simulated {
            Some(config) => {
                #[cfg(feature = "mysql")]
                let ledger: Arc<dyn order_payment_sim::PaymentLedger> = match &mysql {
                    Some((pool, _)) => Arc::new(order_mysql::MySqlPaymentLedger::new(pool.clone())),
                    None => Arc::new(order_payment_sim::MemoryLedger::new()),
                };
                #[cfg(not(feature = "mysql"))]
                let ledger: Arc<dyn order_payment_sim::PaymentLedger> =
                    Arc::new(order_payment_sim::MemoryLedger::new());
                let gateway = Arc::new(order_payment_sim::SimulatedGateway::new(
                    config,
                    ledger,
                    clock.clone(),
                )?);
                ports
                    .payments
                    .get_or_insert_with(|| gateway.clone() as Arc<dyn PaymentGateway>);
                Some(gateway)
            }
            None => None,
        };

        let ports = ports.complete(clock, rng)?;
        let service = Arc::new(OrderService::new(ports, self.config)?);
        Ok(Engine {
            service,
            accounts,
            #[cfg(feature = "memory")]
            memory,
            #[cfg(feature = "mysql")]
            mysql: mysql.map(|(_, repository)| repository),
            #[cfg(feature = "payment-sim")]
            simulated,
        })
    }
}

/// The driven ports gathered so far.
struct PartialPorts {
    repository: Option<Arc<dyn OrderRepository>>,
    payments: Option<Arc<dyn PaymentGateway>>,
    lock: Option<Arc<dyn DistributedLock>>,
    queue: Option<Arc<dyn JobQueue>>,
    events: Option<Arc<dyn EventPublisher>>,
}

fn require<T: ?Sized>(
    port: Option<Arc<T>>,
    name: &'static str,
    hint: &'static str,
) -> Result<Arc<T>, BuildError> {
    port.ok_or(BuildError::MissingPort { port: name, hint })
}

impl PartialPorts {
    fn complete(
        self,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn RandomSource>,
    ) -> Result<Ports, BuildError> {
        Ok(Ports {
            repository: require(
                self.repository,
                "repository",
                "call .repository(..), .memory() or .mysql(pool)",
            )?,
            payments: require(
                self.payments,
                "payment provider",
                "call .payments(..) or .simulated_payments(..)",
            )?,
            lock: require(
                self.lock,
                "lock",
                "call .lock(..), .memory() or .redis(&conn)",
            )?,
            queue: require(
                self.queue,
                "queue",
                "call .queue(..), .memory() or .redis(&conn)",
            )?,
            events: require(
                self.events,
                "event publisher",
                "call .events(..), .memory() or .redis(&conn)",
            )?,
            clock,
            rng,
        })
    }
}
