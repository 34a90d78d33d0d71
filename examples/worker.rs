//! A worker process: takes jobs from the Redis queue, charges, completes orders on
//! MySQL/MariaDB, and runs the reconciler. Start as many as you like against one
//! database and one `ORDERS_REDIS_PREFIX`; each serves `/api/health` and `/metrics` on
//! `--listen`.
//!
//! ```text
//! DATABASE_URL=mysql://… REDIS_URL=redis://… \
//!   cargo run --release --example worker --features mysql,redis -- --concurrency 256
//! ```
//!
//! SIGTERM or Ctrl-C: every worker finishes its current job (bounded by
//! `--shutdown-timeout-secs`; jobs still running then come back after the queue's
//! visibility timeout) and the process exits 0.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/signal.rs"]
mod signal;
#[path = "support/telemetry.rs"]
mod telemetry;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use order_engine::Workers;
use order_engine::http::ops_router;

use backend::{AnyError, BackendArgs};

/// Workers and the reconciler over MySQL + Redis.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// Worker loops: charges in flight at once, one per loop (a loop takes its next job
    /// once a charge has answered and starts it beside that order's completion).
    #[arg(long, env = "ORDERS_WORKER_CONCURRENCY", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Address serving /api/health and /metrics (port 0: any free port).
    #[arg(long, env = "ORDERS_WORKER_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    #[command(flatten)]
    backend: BackendArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), AnyError> {
    let backend = backend::build(&args.backend, false, true).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{}", listener.local_addr()?);
        let _ = writeln!(
            out,
            "{} workers and a reconciler on {}",
            args.concurrency, backend.label
        );
        let _ = out.flush();
    }
    let workers = Workers::spawn_with_reconciler(&backend.service, usize::from(args.concurrency));
    let ops = ops_router(backend.service.clone(), backend.probes.clone());
    axum::serve(listener, ops)
        .with_graceful_shutdown(signal::shutdown_signal())
        .await?;
    eprintln!("shutting down: finishing in-flight jobs");
    backend::stop_workers(workers, args.backend.shutdown_timeout()).await
}
