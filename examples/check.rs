//! The invariant checker's command line: judges every invariant of a deployment on
//! MySQL/MariaDB + Redis and prints one line per invariant, `PASS  …` or `FAIL  …: why`.
//!
//! ```text
//! DATABASE_URL=mysql://… REDIS_URL=redis://… \
//!   cargo run --features mysql,redis --example check -- [--wait-secs 30] \
//!   [--expect-dead-letter PAYLOAD]…
//! ```
//!
//! It reads `DATABASE_URL`, `REDIS_URL` and `ORDERS_REDIS_PREFIX` (default `orders:`)
//! — the same settings as `server` and `worker` — or the flags of the same names. It
//! only reads: it never migrates, creates or repairs anything (a database without the
//! schema is a connection-level error, exit 2). Every order in the database counts as
//! accepted; `--wait-secs` bounds how long it waits for open orders to finish.
//!
//! Exit status: 0 when every invariant holds, 1 when any fails, 2 when it could not
//! judge (bad usage, an unreachable server, a failed query).
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/telemetry.rs"]
mod telemetry;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use order_engine::check::{CheckOptions, check};
use order_engine::core::app::ErrorChain;
use order_engine::redis::{RedisConfig, RedisConnection};

/// Checks the order engine's invariants on a MySQL/MariaDB + Redis deployment.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// The deployment's database (`mysql://user:password@host:port/database`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The deployment's Redis server.
    #[arg(long, env = "REDIS_URL")]
    redis_url: String,
    /// The deployment's Redis key prefix.
    #[arg(long, env = "ORDERS_REDIS_PREFIX", default_value = "orders:")]
    redis_prefix: String,
    /// How long to wait for open orders to finish before judging "every accepted order
    /// is terminal".
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
    /// A payload injected as a poison job, which the dead letter may hold (repeatable).
    #[arg(long = "expect-dead-letter", value_name = "PAYLOAD")]
    expect_dead_letter: Vec<String>,
}

/// Exit status when the checker could not judge (clap uses it for usage errors too).
const CANNOT_JUDGE: u8 = 2;

/// How long to wait for the servers to answer at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    telemetry::init();
    // A usage error exits here with status 2 (clap's), `--help` with 0.
    let args = Args::parse();
    let options = CheckOptions {
        terminal_wait: Duration::from_secs(args.wait_secs),
        accepted: None,
        expected_dead_letters: args.expect_dead_letter.clone(),
    };
    // Two connections are plenty: the audits run one after the other.
    let pool = match order_engine::mysql::connect(&args.database_url, 2).await {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("check: {}", ErrorChain(&e));
            return ExitCode::from(CANNOT_JUDGE);
        }
    };
    let config = RedisConfig::new(args.redis_url.clone()).with_prefix(args.redis_prefix.clone());
    let redis = match connect_redis(config).await {
        Ok(redis) => redis,
        Err(e) => {
            eprintln!("check: {}", ErrorChain(&e));
            pool.close().await;
            return ExitCode::from(CANNOT_JUDGE);
        }
    };
    let outcome = check(&pool, &redis, &options).await;
    redis.close().await;
    pool.close().await;
    match outcome {
        Ok(report) => {
            print!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("check: {}", ErrorChain(&e));
            ExitCode::from(CANNOT_JUDGE)
        }
    }
}

/// A Redis connection that has answered a `PING`: the pool itself connects in the
/// background and would only report an unreachable server at the first inspection.
async fn connect_redis(
    config: RedisConfig,
) -> Result<RedisConnection, order_engine::redis::ConnectError> {
    let redis = RedisConnection::connect(config).await?;
    if let Err(e) = redis.wait_connected(CONNECT_TIMEOUT).await {
        redis.close().await;
        return Err(e);
    }
    Ok(redis)
}
