//! Load generator: every order path of the engine against the raw database limit of the
//! same work, measured in ONE run on MySQL/MariaDB + Redis, with the invariants checked
//! after every cell (figures on a shared 2-core machine move ±10 % run to run: only
//! same-run ratios mean anything).
//!
//! Scenarios and paths (issue 11):
//! - `hot` (every client on one product, large stock) and `spread` (1 000 products), at
//!   each `--concurrency`, through
//!   - `raw`: one hand-rolled transaction per order with sqlx (`UPDATE products SET stock
//!     = stock - q WHERE id = ? AND stock >= q`, insert order, insert item, commit);
//!   - `service-redis`: `OrderService::create_order` with `LockMode::Distributed` (Redis
//!     locks, the reference's policy) on the repository as `MySqlOrderRepository::new`
//!     builds it — the `server` binary's configuration, in process;
//!   - `service-none`: `LockMode::None`, `MySqlOrderRepository::without_coalescing()`;
//!   - `service-coalesced`: `LockMode::None`, `with_coalescing(CoalesceConfig::default())`;
//!   - `http`: `POST /api/orders` on a `server --role api` this program starts (its own
//!     defaults: Redis locks, the repository's default coalescing), keep-alive
//!     connections, one bearer token per client;
//! - `worker`: N orders placed beforehand, drained by one `worker` process at each
//!   `--worker-concurrency`, next to a raw-SQL drain of the same kind of orders (CAS
//!   start, ledger insert, CAS pay) at the same concurrency; SQL statements per order
//!   from the server's status counters.
//!
//! Every cell gets fresh products (no cell sees another's stock); the raw cell of a
//! scenario and concurrency runs first and the engine cells right after it. Everything
//! runs in a database of its own (`<DATABASE_URL's name>_<run>`, plus `…_w` for the
//! worker scenario, both dropped at the end unless `--keep-database`) and under a Redis
//! prefix of its own (`loadgen:<run>:`, deleted at the end).
//!
//! ```text
//! cargo build --release --all-features --example loadgen --example server --example worker
//! DATABASE_URL=mysql://orders:orders@127.0.0.1:3306/orders_loadgen \
//! REDIS_URL=redis://127.0.0.1:6379 \
//!   target/release/examples/loadgen [--duration 6] [--concurrency 1,8,32,64] \
//!     [--scenarios hot,spread,worker] [--paths raw,service-redis,service-none,service-coalesced,http] \
//!     [--json] [--chart loadgen.svg]
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../support/telemetry.rs"]
mod telemetry;

mod create;
mod db;
mod drain;
mod http;
mod report;

use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use order_engine::core::app::ErrorChain;
use order_engine::redis::{RedisConfig, RedisConnection};

use report::Report;

/// Any error that ends the run.
pub(crate) type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Measures every order path against the raw database limit, same run.
#[derive(Debug, Parser)]
#[command(long_about = None)]
pub(crate) struct Args {
    /// Seconds per measured cell of `hot` and `spread`.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: u64,
    /// Concurrent clients of `hot` and `spread`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64",
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Vec<u16>,
    /// Scenarios, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "hot,spread,worker"
    )]
    pub scenarios: Vec<Scenario>,
    /// Paths, comma-separated (`worker` measures `raw` and the worker process, which it
    /// reports as `service-redis`, whenever `raw` or any `service-*` path is listed).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "raw,service-redis,service-none,service-coalesced,http"
    )]
    pub paths: Vec<PathKind>,
    /// Print one JSON object per line per measured cell on stdout (the table then goes
    /// to stderr).
    #[arg(long)]
    pub json: bool,
    /// Draw throughput against concurrency per path and scenario into this SVG file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Jobs in flight in the worker process (its `--concurrency`: worker loops, each
    /// charging one order at a time), comma-separated; the raw drain runs as many tasks.
    #[arg(long, value_delimiter = ',', default_value = "256,1024",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_concurrency: Vec<u16>,
    /// Worker processes of the reference-payment drain, comma-separated (each runs
    /// `--worker-concurrency` jobs, so N processes hold N times as many in flight): how
    /// the drain scales with processes on the same MySQL and Redis. The zero-delay
    /// drain runs on one.
    #[arg(long, value_delimiter = ',', default_value = "1",
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub worker_processes: Vec<u16>,
    /// `server --role api` processes of the `http` path, comma-separated (the clients
    /// are spread over them round-robin): how HTTP throughput scales with API processes.
    #[arg(long, value_delimiter = ',', default_value = "1",
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub api_processes: Vec<u16>,
    /// Database connections of the worker process (`ORDERS_DB_MAX_CONNECTIONS`, the
    /// binary's default) and of the raw drain.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_db_connections: u32,
    /// Orders placed before each drain of the `worker` scenario.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_orders: u32,
    /// Stock of the hot product of each `hot` cell.
    #[arg(long, default_value_t = 1_000_000)]
    pub hot_stock: u32,
    /// Products of each `spread` cell (each with `--spread-stock`).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub spread_products: u32,
    /// Stock of each product of a `spread` cell.
    #[arg(long, default_value_t = 100_000)]
    pub spread_stock: u32,
    /// Where the `server` and `worker` binaries are (build them in release).
    #[arg(long, default_value = "target/release/examples")]
    pub bin_dir: PathBuf,
    /// Keep the run's databases instead of dropping them at the end.
    #[arg(long)]
    pub keep_database: bool,
    /// A MySQL/MariaDB URL whose user may create and drop databases; the run uses
    /// databases named after this URL's, with a suffix of its own.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The Redis the engine and its binaries run on.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: String,
}

/// `--scenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Scenario {
    /// Every client orders the same product.
    Hot,
    /// Each order picks one of `--spread-products` products at random.
    Spread,
    /// Pre-placed orders drained by a worker process vs a raw-SQL drain.
    Worker,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Hot => "hot",
            Scenario::Spread => "spread",
            Scenario::Worker => "worker",
        }
    }
}

/// `--paths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum PathKind {
    /// One hand-rolled transaction per order.
    Raw,
    /// `create_order`, Redis locks.
    ServiceRedis,
    /// `create_order`, no distributed lock, no coalescing.
    ServiceNone,
    /// `create_order`, no distributed lock, coalescing on.
    ServiceCoalesced,
    /// `POST /api/orders` on a running server.
    Http,
}

impl PathKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PathKind::Raw => "raw",
            PathKind::ServiceRedis => "service-redis",
            PathKind::ServiceNone => "service-none",
            PathKind::ServiceCoalesced => "service-coalesced",
            PathKind::Http => "http",
        }
    }
}

/// What every part of the run shares.
pub(crate) struct Run {
    pub args: Args,
    /// Unique per run: database suffix, Redis prefix, e-mails.
    pub tag: u64,
    /// The run's main database (hot, spread, the HTTP server).
    pub main_url: String,
    /// The worker scenario's database (only its orders: the worker's reconciler must
    /// not find the thousands of PENDING orders the other scenarios leave behind).
    pub worker_url: String,
    /// Every Redis key of the run starts with this.
    pub redis_prefix: String,
    /// Cells measured so far (numbers Redis prefixes and product names).
    cells: std::sync::atomic::AtomicU32,
    started: Instant,
}

impl Run {
    /// A fresh number for the next cell.
    pub(crate) fn next_cell(&self) -> u32 {
        self.cells
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1)
    }

    /// The Redis prefix of cell `cell`.
    pub(crate) fn cell_prefix(&self, cell: u32) -> String {
        format!("{}c{cell}:", self.redis_prefix)
    }

    /// A progress line on stderr (always: stdout may carry JSON).
    pub(crate) fn progress(&self, line: &str) {
        eprintln!("[{:>5.0} s] {line}", self.started.elapsed().as_secs_f64());
    }

    /// Whether live progress may redraw a line (stderr is a terminal).
    pub(crate) fn live(&self) -> bool {
        std::io::stderr().is_terminal()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init();
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run = match prepare(args, tag) {
        Ok(run) => Arc::new(run),
        Err(e) => {
            eprintln!("loadgen: {}", ErrorChain(&*e));
            return ExitCode::FAILURE;
        }
    };
    let outcome = suite(&run).await;
    let cleaned = cleanup(&run).await;
    match (outcome, cleaned) {
        (Ok(report), Ok(())) => {
            if report.all_invariants_ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("loadgen: an invariant check FAILED (see the table)");
                ExitCode::FAILURE
            }
        }
        (Err(e), cleaned) => {
            eprintln!("loadgen: {}", ErrorChain(&*e));
            if let Err(c) = cleaned {
                eprintln!("loadgen: cleanup: {}", ErrorChain(&*c));
            }
            ExitCode::FAILURE
        }
        (Ok(_), Err(c)) => {
            eprintln!("loadgen: cleanup: {}", ErrorChain(&*c));
            ExitCode::FAILURE
        }
    }
}

fn prepare(args: Args, tag: u64) -> Result<Run, AnyError> {
    let base = db::database_name(&args.database_url)?;
    let main_url = db::with_database(&args.database_url, &format!("{base}_{tag}"))?;
    let worker_url = db::with_database(&args.database_url, &format!("{base}_{tag}_w"))?;
    Ok(Run {
        args,
        tag,
        main_url,
        worker_url,
        redis_prefix: format!("loadgen:{tag}:"),
        cells: std::sync::atomic::AtomicU32::new(0),
        started: Instant::now(),
    })
}

/// Runs the selected scenarios, printing each cell as it completes and the whole table
/// (and chart) at the end.
async fn suite(run: &Arc<Run>) -> Result<Report, AnyError> {
    let args = &run.args;
    let scenarios: BTreeSet<Scenario> = args.scenarios.iter().copied().collect();
    let mut paths: Vec<PathKind> = args.paths.clone();
    paths.sort();
    paths.dedup();
    let mut concurrency: Vec<u16> = args.concurrency.clone();
    concurrency.sort_unstable();
    concurrency.dedup();
    let mut report = Report::new(args.json);

    let create_scenarios: Vec<Scenario> = scenarios
        .iter()
        .copied()
        .filter(|s| *s != Scenario::Worker)
        .collect();
    if !create_scenarios.is_empty() && !paths.is_empty() {
        run.progress(&format!(
            "database {} (fresh), Redis prefix {}",
            db::database_name(&run.main_url)?,
            run.redis_prefix
        ));
        let admin = db::fresh_database(&run.main_url).await?;
        let max_c = concurrency.iter().copied().max().unwrap_or(1);
        let mut api_processes: Vec<u16> = args.api_processes.clone();
        api_processes.sort_unstable();
        api_processes.dedup();
        let mut servers = Vec::new();
        if paths.contains(&PathKind::Http) {
            // The servers keep their connections while the other paths run their own
            // pools (up to C + 2): together they must stay under the server's
            // `max_connections` (151 by default), or cells fail with error 1040.
            let n = api_processes.last().copied().unwrap_or(1);
            let per_server = (u32::from(max_c) + 2).min(64 / u32::from(n)).max(8);
            for i in 0..n {
                let server = http::Server::spawn(run, per_server, i).await?;
                run.progress(&format!("server --role api listening on {}", server.addr));
                servers.push(server);
            }
        }
        let server = servers.first();
        // One user per client, so no two clients share an owner's event sequence.
        let users = db::create_users(&admin, run.tag, usize::from(max_c).max(64)).await?;
        let tokens = match &server {
            Some(server) => {
                let t = Instant::now();
                let tokens = server.login_all(run.tag, usize::from(max_c)).await?;
                run.progress(&format!(
                    "{} bearer tokens in {:.1} s",
                    tokens.len(),
                    t.elapsed().as_secs_f64()
                ));
                tokens
            }
            None => Vec::new(),
        };
        let shared = create::Shared {
            admin: admin.clone(),
            users: Arc::new(users),
            tokens: Arc::new(tokens),
            server_addrs: servers.iter().map(|s| s.addr).collect(),
        };
        for scenario in &create_scenarios {
            for &c in &concurrency {
                for &path in &paths {
                    let counts: &[u16] = if path == PathKind::Http {
                        &api_processes
                    } else {
                        &[1]
                    };
                    for &processes in counts {
                        let cell =
                            create::measure(run, &shared, *scenario, path, c, processes).await?;
                        report.add(cell);
                    }
                }
            }
        }
        for server in servers {
            server.stop().await;
        }
        admin.close().await;
    }

    if scenarios.contains(&Scenario::Worker) && !paths.is_empty() {
        drain::scenario(run, &mut report).await?;
    }

    report.print_table();
    if let Some(chart) = &args.chart {
        std::fs::write(chart, report.svg())?;
        run.progress(&format!("chart written to {}", chart.display()));
    }
    Ok(report)
}

/// Drops the run's databases (unless kept) and deletes its Redis keys.
async fn cleanup(run: &Run) -> Result<(), AnyError> {
    let mut failures: Vec<String> = Vec::new();
    if !run.args.keep_database {
        for url in [&run.main_url, &run.worker_url] {
            if let Err(e) = db::drop_database(url).await {
                failures.push(format!("dropping a database: {e}"));
            }
        }
    }
    let config = RedisConfig::new(run.args.redis_url.clone()).with_prefix(run.redis_prefix.clone());
    match RedisConnection::connect(config).await {
        Ok(redis) => match redis.delete_prefix().await {
            Ok(n) => run.progress(&format!(
                "cleanup: {n} Redis keys under {} deleted{}",
                run.redis_prefix,
                if run.args.keep_database {
                    ""
                } else {
                    ", databases dropped"
                }
            )),
            Err(e) => failures.push(format!("deleting Redis keys: {}", ErrorChain(&e))),
        },
        Err(e) => failures.push(format!("connecting to Redis: {}", ErrorChain(&e))),
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; ").into())
    }
}

/// A cell's latencies (µs, any order) as (p50, p99, max) in milliseconds.
pub(crate) fn percentiles(latencies: &mut [u32]) -> (f64, f64, f64) {
    if latencies.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[i]) / 1e3
    };
    (at(0.50), at(0.99), at(1.0))
}

/// Saturating microseconds of `d`.
pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
