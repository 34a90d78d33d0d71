//! An embedder's service: their own repository and payment provider, our Redis
//! adapters, wired with `Engine::builder()` (the program is `program.rs`; the test
//! suite runs it too).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example embedder --features redis
//! ```
#![allow(clippy::print_stdout)]

#[path = "../support/telemetry.rs"]
mod telemetry;

mod program;

use std::process::ExitCode;

use clap::Parser;

/// Runs 20 orders through an embedder's own repository and provider on Redis.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// The Redis server for the lock, the queue and the events.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init();
    let prefix = format!("orders-embedder:{}:", std::process::id());
    match program::run(&args.redis_url, &prefix).await {
        Ok(report) => {
            println!(
                "{} orders: {} paid, {} failed over the card limit; {} charges approved",
                report.placed, report.paid, report.failed, report.approved
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("embedder: {}", order_engine::core::app::ErrorChain(&*e));
            ExitCode::FAILURE
        }
    }
}
