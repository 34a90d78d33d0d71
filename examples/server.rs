//! The order engine as a service: the REST API, workers and the reconciler.
//!
//! With no `DATABASE_URL`/`REDIS_URL` every role runs in this process on the memory
//! adapters, with the reference's demo data seeded (Alice, Bob and Charlie, password
//! `password`; the five products). With both set it runs on MySQL/MariaDB + Redis
//! (migrations applied on start; build with `--features mysql,redis`), and several
//! processes — `--role api` behind a load balancer, `--role worker` (or the `worker`
//! binary) — share one database and one `ORDERS_REDIS_PREFIX`.
//!
//! ```text
//! cargo run --release --example server [-- --listen 127.0.0.1:8000 --role all|api|worker --seed]
//! ```
//!
//! The first line on stdout is `listening on http://ADDR` (with `--listen …:0` the
//! port the system chose). SIGTERM or Ctrl-C stops intake, drains in-flight requests and
//! jobs within `--shutdown-timeout-secs`, and exits 0.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/telemetry.rs"]
mod telemetry;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use order_engine::Workers;
use order_engine::http::{Api, DEMO_ACCOUNTS, DEMO_PASSWORD, ops_router};

use backend::{AnyError, BackendArgs};

/// The order engine's REST API, workers and reconciler.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// Address to serve HTTP on (port 0: any free port, printed on the first line).
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// What this process does.
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
    /// Load the reference demo data if the database holds no account yet (always done
    /// on the memory adapters).
    #[arg(long)]
    seed: bool,
    /// Jobs in flight at once in the worker role.
    #[arg(long, env = "ORDERS_WORKER_CONCURRENCY", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    #[command(flatten)]
    backend: BackendArgs,
}

/// `--role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// The API, workers and the reconciler in one process.
    All,
    /// Only the REST API.
    Api,
    /// Only workers and the reconciler (serving /api/health and /metrics).
    Worker,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), AnyError> {
    let multi_process = args.role != Role::All;
    let backend = backend::build(&args.backend, args.seed, multi_process).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    banner(addr, &args, &backend);

    let workers = (args.role != Role::Api)
        .then(|| Workers::spawn_with_reconciler(&backend.service, usize::from(args.concurrency)));
    let router = match args.role {
        Role::All | Role::Api => {
            let api = Api::new(
                backend.service.clone(),
                backend.accounts.clone(),
                args.backend.api_settings(),
            );
            backend
                .probes
                .iter()
                .cloned()
                .fold(api, Api::with_probe)
                .router()
        }
        Role::Worker => ops_router(backend.service.clone(), backend.probes.clone()),
    };

    // Intake stops at the signal: the listener closes and keep-alive connections are
    // told to go; requests already running finish, bounded by the deadline below.
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = backend::shutdown_signal();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        signal.await;
        eprintln!("shutting down: no new requests; draining");
        let _ = signalled_tx.send(());
    });
    let deadline = args.backend.shutdown_timeout();
    let serve = tokio::spawn(async move { server.await });
    // Wait for the signal (or the server failing on its own), then give in-flight
    // requests until the deadline.
    let mut serve = serve;
    tokio::select! {
        _ = signalled_rx => {
            match tokio::time::timeout(deadline, &mut serve).await {
                Ok(joined) => joined??,
                Err(_) => {
                    eprintln!("requests still running at the deadline were dropped");
                    serve.abort();
                }
            }
        }
        joined = &mut serve => joined??,
    }
    if let Some(workers) = workers {
        backend::stop_workers(workers, deadline).await?;
    }
    Ok(())
}

fn banner(addr: SocketAddr, args: &Args, backend: &backend::Backend) {
    let mut out = std::io::stdout().lock();
    // stdout is the test harness's pipe as often as a terminal: a failed write there is
    // nothing the server can act on.
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = writeln!(
        out,
        "role {:?} on {}{}",
        args.role,
        backend.label,
        if backend.seeded {
            "; demo data seeded"
        } else {
            ""
        }
    );
    if args.role != Role::Worker {
        let (_, email) = DEMO_ACCOUNTS[0];
        let _ = writeln!(
            out,
            "get a token:\n  curl -s -X POST http://{addr}/api/tokens \
             -H 'Content-Type: application/json' \
             -d '{{\"email\":\"{email}\",\"password\":\"{DEMO_PASSWORD}\"}}'"
        );
        let _ = writeln!(
            out,
            "demo users: {} (password `{DEMO_PASSWORD}`)",
            DEMO_ACCOUNTS.map(|(_, e)| e).join(", ")
        );
    }
    let _ = out.flush();
}
