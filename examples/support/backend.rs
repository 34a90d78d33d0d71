//! The wiring the `server` and `worker` binaries share: typed settings read once from
//! the command line and the environment, the engine on the memory adapters or on MySQL +
//! Redis, the account store, the health probes and demo seeding.
//! Only binaries read the environment; the libraries get typed values from here.

// A binary's module: clap reads the environment, as only binaries may.
#![allow(clippy::disallowed_methods)]
// Each binary uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use order_engine::core::app::{OrderService, ReconcilerConfig, ServiceConfig};
use order_engine::core::domain::Money;
use order_engine::core::ports::AccountStore;
use order_engine::http::{ApiSettings, HealthProbe, seed_demo_accounts};
use order_engine::memory::ReferenceData;
use order_engine::payment_sim::SimConfig;
use order_engine::{Engine, Workers};

/// Any error a binary reports before exiting non-zero.
pub(crate) type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Where orders live, and how the API behaves: flags, each also read from its
/// environment variable (once, at start).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BackendArgs {
    /// MySQL/MariaDB URL. With REDIS_URL: run on MySQL + Redis (migrations applied on
    /// start). Without either: everything in memory, demo data seeded.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis URL (with DATABASE_URL).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel: deployments with different prefixes
    /// share one Redis without seeing each other.
    #[arg(long, env = "ORDERS_REDIS_PREFIX", default_value = "orders:")]
    pub redis_prefix: String,
    /// Database connections in this process's pool.
    #[arg(long, env = "ORDERS_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,
    /// Requests per user and minute on the authenticated routes; 0 disables the limit.
    #[arg(long, env = "ORDERS_RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,
    /// How long a bearer token from POST /api/tokens stays valid, in seconds.
    #[arg(long, env = "ORDERS_TOKEN_TTL_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub token_ttl_secs: u64,
    /// Seconds to finish in-flight requests and jobs after SIGTERM/Ctrl-C.
    #[arg(long, env = "ORDERS_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// A worker does not start an order younger than this many milliseconds, so a
    /// cancel inside the window always wins (0: no window).
    #[arg(long, env = "ORDERS_GRACE_PERIOD_MS", default_value_t = 0)]
    pub grace_period_ms: u64,
    /// Payment simulation: probability of approval (the reference: 0.8).
    #[arg(long, env = "ORDERS_PAYMENT_APPROVAL_RATE", default_value_t = 0.8)]
    pub payment_approval_rate: f64,
    /// Payment simulation: shortest answer delay in ms (the reference: 50).
    #[arg(long, env = "ORDERS_PAYMENT_MIN_DELAY_MS", default_value_t = 50)]
    pub payment_min_delay_ms: u64,
    /// Payment simulation: longest answer delay in ms (the reference: 200; at least the
    /// shortest). 0 and 0 measure the worker path without the provider's wait.
    #[arg(long, env = "ORDERS_PAYMENT_MAX_DELAY_MS", default_value_t = 200)]
    pub payment_max_delay_ms: u64,
    /// How long a worker's processing lease lasts, in ms (default 30 000): a worker
    /// that died holding an order is replaced this long after it started the order.
    #[arg(long, env = "ORDERS_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// Bound on one charge call, in ms (default 5 000). The lease must outlive the
    /// worst case of every attempt (start-up refuses settings where it does not).
    #[arg(long, env = "ORDERS_PAYMENT_TIMEOUT_MS")]
    pub payment_timeout_ms: Option<u64>,
    /// How long a reserved job stays invisible before it is delivered again, in ms
    /// (default 30 000).
    #[arg(long, env = "ORDERS_QUEUE_VISIBILITY_TIMEOUT_MS")]
    pub queue_visibility_timeout_ms: Option<u64>,
    /// Pause between two reconciler passes, in ms (default 10 000).
    #[arg(long, env = "ORDERS_RECONCILER_INTERVAL_MS")]
    pub reconciler_interval_ms: Option<u64>,
    /// How long an order may go without being handed out before the reconciler hands
    /// it out again, in ms (default 60 000; at least the visibility timeout).
    #[arg(long, env = "ORDERS_RECONCILER_STALE_AFTER_MS")]
    pub reconciler_stale_after_ms: Option<u64>,
    /// Fail points to arm at start, for fault-injection tests only: `NAME=[N*]ACTION`
    /// parts joined by `;`, e.g. `after_start=abort;before_ack=2*exit(3)` (names and
    /// actions: order_core::failpoints). Needs a build with the `failpoints` feature;
    /// set in a build without it, start-up fails.
    #[arg(long, env = "ORDERS_FAILPOINTS")]
    pub failpoints: Option<String>,
}

impl BackendArgs {
    /// The API settings these flags give.
    pub(crate) fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            rate_limit_per_minute: self.rate_limit_per_minute,
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            ..ApiSettings::default()
        }
    }

    /// The service configuration these flags give.
    pub(crate) fn service_config(&self) -> ServiceConfig {
        let defaults = ServiceConfig::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        ServiceConfig {
            grace_period: Duration::from_millis(self.grace_period_ms),
            lease: ms(self.lease_ms, defaults.lease),
            payment_timeout: ms(self.payment_timeout_ms, defaults.payment_timeout),
            reconciler: ReconcilerConfig {
                interval: ms(self.reconciler_interval_ms, defaults.reconciler.interval),
                stale_after: ms(
                    self.reconciler_stale_after_ms,
                    defaults.reconciler.stale_after,
                ),
                ..defaults.reconciler
            },
            ..defaults
        }
    }

    /// The job queue's visibility timeout, when set.
    pub(crate) fn visibility_timeout(&self) -> Option<Duration> {
        self.queue_visibility_timeout_ms.map(Duration::from_millis)
    }

    /// The shutdown deadline.
    pub(crate) fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    fn real_urls(&self) -> Result<Option<(&str, &str)>, AnyError> {
        fn nonempty(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.trim().is_empty())
        }
        match (nonempty(&self.database_url), nonempty(&self.redis_url)) {
            (Some(db), Some(redis)) => Ok(Some((db, redis))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("DATABASE_URL is set but REDIS_URL is not: set both \
                                    (MySQL + Redis) or neither (memory)"
                .into()),
            (None, Some(_)) => Err("REDIS_URL is set but DATABASE_URL is not: set both \
                                    (MySQL + Redis) or neither (memory)"
                .into()),
        }
    }

    fn simulation(&self) -> Result<SimConfig, AnyError> {
        if !(0.0..=1.0).contains(&self.payment_approval_rate) {
            return Err("ORDERS_PAYMENT_APPROVAL_RATE must be between 0 and 1".into());
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        if self.payment_min_delay_ms > self.payment_max_delay_ms {
            return Err(
                "ORDERS_PAYMENT_MIN_DELAY_MS must not exceed ORDERS_PAYMENT_MAX_DELAY_MS".into(),
            );
        }
        Ok(SimConfig {
            approval_rate: self.payment_approval_rate,
            min_delay: Duration::from_millis(self.payment_min_delay_ms),
            max_delay: Duration::from_millis(self.payment_max_delay_ms),
            seed,
            ..SimConfig::default()
        })
    }
}

/// The engine and everything around it a binary serves.
pub(crate) struct Backend {
    /// What the engine runs on, for the start-up banner.
    pub label: &'static str,
    /// The use cases.
    pub service: Arc<OrderService>,
    /// Accounts and tokens of the same deployment.
    pub accounts: Arc<dyn AccountStore>,
    /// What GET /api/health checks.
    pub probes: Vec<Arc<dyn HealthProbe>>,
    /// Whether the demo data was loaded by this process.
    pub seeded: bool,
    /// Where the engine publishes its order events, for a gateway to relay. (The
    /// `worker` binary serves no gateway and leaves it unread.)
    pub events: EventSource,
}

/// Where a process's engine publishes its order events.
#[derive(Clone)]
pub(crate) enum EventSource {
    /// The in-process bus of the embedded default.
    Memory(Arc<order_engine::memory::MemoryEventBus>),
    /// Redis pub/sub: every gateway on the same Redis and prefix gets every event.
    #[cfg(all(feature = "mysql", feature = "redis"))]
    Redis(Box<order_engine::redis::RedisConfig>),
}

/// How long a process waits at start-up for Redis to answer before it goes on without.
const REDIS_STARTUP_WAIT: Duration = Duration::from_secs(5);

/// Builds the backend. `seed`: load the demo data when the store holds no account
/// (always done on the memory adapters, which start empty). `multi_process`: the role
/// shares its work with other processes, which the memory adapters cannot do.
pub(crate) async fn build(
    args: &BackendArgs,
    seed: bool,
    multi_process: bool,
) -> Result<Backend, AnyError> {
    arm_failpoints(args.failpoints.as_deref())?;
    match args.real_urls()? {
        None if multi_process => Err("--role api and --role worker share work through \
                                      MySQL + Redis: set DATABASE_URL and REDIS_URL"
            .into()),
        None => memory(args).await,
        Some((database_url, redis_url)) => real(args, database_url, redis_url, seed).await,
    }
}

/// Arms the fail points ORDERS_FAILPOINTS names, before the engine does any work (so
/// the first order already meets them).
#[cfg(feature = "failpoints")]
fn arm_failpoints(spec: Option<&str>) -> Result<(), AnyError> {
    let Some(spec) = spec.filter(|s| !s.trim().is_empty()) else {
        return Ok(());
    };
    order_engine::core::failpoints::arm_from_spec(spec)
        .map_err(|e| format!("ORDERS_FAILPOINTS: {e}"))?;
    tracing::warn!(
        spec,
        "fail points armed (ORDERS_FAILPOINTS): this process may crash on purpose"
    );
    Ok(())
}

/// Without the feature there is nothing to arm, and ignoring the setting would let a
/// fault-injection run pass without injecting anything.
#[cfg(not(feature = "failpoints"))]
fn arm_failpoints(spec: Option<&str>) -> Result<(), AnyError> {
    match spec {
        Some(s) if !s.trim().is_empty() => Err("ORDERS_FAILPOINTS is set, but this build has \
                                                no fail points: build with --features failpoints"
            .into()),
        _ => Ok(()),
    }
}

async fn memory(args: &BackendArgs) -> Result<Backend, AnyError> {
    let mut queue = order_engine::memory::QueueConfig::default();
    if let Some(visibility) = args.visibility_timeout() {
        queue.visibility_timeout = visibility;
    }
    let engine = Engine::builder()
        .memory_with(queue)
        .simulated_payments(args.simulation()?)
        .config(args.service_config())
        .build()
        .await?;
    let memory = engine.memory().ok_or("built with .memory()")?;
    let repository = memory.repository.clone();
    let accounts = engine
        .accounts()
        .ok_or("built on the memory repository")?
        .clone();
    seed_demo_accounts(accounts.as_ref()).await?;
    for (name, cents, stock) in ReferenceData::PRODUCTS {
        repository.add_product(name, Money::from_cents(cents)?, stock);
    }
    let probe = MemoryProbe {
        service: engine.service().clone(),
    };
    Ok(Backend {
        label: "memory adapters (embedded default; nothing is kept after exit)",
        service: engine.service().clone(),
        accounts,
        probes: vec![Arc::new(probe)],
        seeded: true,
        events: EventSource::Memory(memory.events.clone()),
    })
}

/// The memory repository as the "database" of /api/health: it answers while the
/// process runs.
struct MemoryProbe {
    service: Arc<OrderService>,
}

#[async_trait]
impl HealthProbe for MemoryProbe {
    fn name(&self) -> &str {
        "database"
    }

    async fn check(&self) -> Result<(), String> {
        self.service
            .list_products()
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[cfg(all(feature = "mysql", feature = "redis"))]
async fn real(
    args: &BackendArgs,
    database_url: &str,
    redis_url: &str,
    seed: bool,
) -> Result<Backend, AnyError> {
    use order_engine::redis::{RedisConfig, RedisConnection, RedisQueue};
    use sqlx::migrate::MigrateDatabase;

    if !sqlx::MySql::database_exists(database_url).await? {
        // Several processes starting at once may race here; the loser's error is
        // harmless when the database now exists.
        if let Err(e) = sqlx::MySql::create_database(database_url).await
            && !sqlx::MySql::database_exists(database_url).await?
        {
            return Err(e.into());
        }
    }
    let pool = order_engine::mysql::connect(database_url, args.db_max_connections).await?;
    // sqlx serialises concurrent migrators with a database lock.
    order_engine::mysql::migrate(&pool).await?;
    let mut redis_config = RedisConfig::new(redis_url).with_prefix(args.redis_prefix.clone());
    if let Some(visibility) = args.visibility_timeout() {
        redis_config.queue.visibility_timeout = visibility;
    }
    let redis = RedisConnection::connect(redis_config.clone()).await?;
    // Ready means ready: the first jobs or requests must not wait for connection
    // handshakes (measured: a worker's first `reserve` waited about 150 ms for them,
    // inside the first drain it ran). A Redis that is down is not fatal — the
    // adapters fail open or retry — so this waits a bounded time and goes on.
    let queue = RedisQueue::new(&redis).await?;
    if let Err(e) = queue.wait_connected(REDIS_STARTUP_WAIT).await {
        tracing::warn!(error = %e, "Redis does not answer yet; starting anyway");
    }
    let engine = Engine::builder()
        .mysql(pool.clone())
        .redis(&redis)
        .queue(Arc::new(queue))
        .simulated_payments(args.simulation()?)
        .config(args.service_config())
        .build()
        .await?;
    let repository = engine.mysql().ok_or("built with .mysql()")?.clone();
    let accounts = engine
        .accounts()
        .ok_or("built on the MySQL repository")?
        .clone();
    let seeded = seed && seed_mysql(accounts.as_ref(), &repository).await?;
    Ok(Backend {
        label: "MySQL + Redis",
        service: engine.service().clone(),
        accounts,
        probes: vec![
            Arc::new(MySqlProbe(repository)),
            Arc::new(RedisProbe(redis)),
        ],
        seeded,
        events: EventSource::Redis(Box::new(redis_config)),
    })
}

/// Loads the demo accounts and products into an empty database. Of several processes
/// seeding at once, the one whose accounts land also adds the products; the others see
/// the e-mails taken and add nothing.
#[cfg(all(feature = "mysql", feature = "redis"))]
async fn seed_mysql(
    accounts: &dyn AccountStore,
    repository: &order_engine::mysql::MySqlOrderRepository,
) -> Result<bool, AnyError> {
    if accounts.count_accounts().await? > 0 {
        return Ok(false);
    }
    match seed_demo_accounts(accounts).await {
        Ok(_) => {}
        Err(order_engine::http::SeedError::Store(
            order_engine::core::ports::AccountError::EmailTaken,
        )) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    for (name, cents, stock) in ReferenceData::PRODUCTS {
        repository
            .add_product(name, Money::from_cents(cents)?, stock)
            .await?;
    }
    Ok(true)
}

#[cfg(not(all(feature = "mysql", feature = "redis")))]
async fn real(_: &BackendArgs, _: &str, _: &str, _: bool) -> Result<Backend, AnyError> {
    Err(
        "DATABASE_URL and REDIS_URL are set, but this build has no MySQL/Redis adapters: \
         run with --features mysql,redis"
            .into(),
    )
}

#[cfg(all(feature = "mysql", feature = "redis"))]
struct MySqlProbe(Arc<order_engine::mysql::MySqlOrderRepository>);

#[cfg(all(feature = "mysql", feature = "redis"))]
#[async_trait]
impl HealthProbe for MySqlProbe {
    fn name(&self) -> &str {
        "database"
    }

    async fn check(&self) -> Result<(), String> {
        self.0
            .ping()
            .await
            .map_err(|e| order_engine::core::ErrorChain(&e).to_string())
    }
}

#[cfg(all(feature = "mysql", feature = "redis"))]
struct RedisProbe(order_engine::redis::RedisConnection);

#[cfg(all(feature = "mysql", feature = "redis"))]
#[async_trait]
impl HealthProbe for RedisProbe {
    fn name(&self) -> &str {
        "redis"
    }

    async fn check(&self) -> Result<(), String> {
        self.0
            .ping()
            .await
            .map_err(|e| order_engine::core::ErrorChain(&e).to_string())
    }
}

/// Stops `workers` within `deadline` and says what happened on stderr.
pub(crate) async fn stop_workers(workers: Workers, deadline: Duration) -> Result<(), AnyError> {
    let report = workers.stop(deadline).await?;
    eprintln!(
        "workers stopped: {} jobs handled, {} requeued, {} aborted at the deadline",
        report.handled, report.requeued, report.aborted
    );
    Ok(())
}
