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
//! With `--role all` it also serves the WebSocket gateway (Pusher protocol 7, a drop-in
//! for Laravel Reverb) on `--ws-listen` (default `127.0.0.1:8080`), fed by the engine's
//! events, and the live demo page at `/`: the embedded default is a complete system in
//! one process. `--role api` signs `/broadcasting/auth` with the same app
//! (`PUSHER_APP_*`) for separate `gateway` processes.
//!
//! The first line on stdout is `listening on http://ADDR` (with `--listen …:0` the
//! port the system chose), then, with a gateway, `gateway listening on ws://ADDR/app/KEY`. SIGTERM or Ctrl-C stops intake, drains in-flight requests and
//! jobs within `--shutdown-timeout-secs`, and exits 0.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/live.rs"]
mod live;
#[path = "support/signal.rs"]
mod signal;
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
    /// Address of the WebSocket gateway (`--role all`; port 0: any free port, printed).
    #[arg(long, env = "ORDERS_WS_LISTEN", default_value = "127.0.0.1:8080")]
    ws_listen: SocketAddr,
    /// What this process does.
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
    /// Load the reference demo data if the database holds no account yet (always done
    /// on the memory adapters).
    #[arg(long)]
    seed: bool,
    /// Worker loops of the worker role: charges in flight at once, one per loop.
    #[arg(long, env = "ORDERS_WORKER_CONCURRENCY", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    pusher: live::PusherArgs,
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
    let gateway = args.pusher.gateway()?;
    // The whole system in one process serves the gateway too.
    let ws = match args.role {
        Role::All => {
            let ws_listener = tokio::net::TcpListener::bind(args.ws_listen).await?;
            let ws_addr = ws_listener.local_addr()?;
            match &backend.events {
                backend::EventSource::Memory(bus) => live::relay_bus(bus, gateway.clone()),
                #[cfg(all(feature = "mysql", feature = "redis"))]
                backend::EventSource::Redis(config) => {
                    live::relay_redis(config, gateway.clone()).await?;
                }
            }
            Some((ws_listener, ws_addr))
        }
        Role::Api | Role::Worker => None,
    };
    banner(addr, ws.as_ref().map(|(_, a)| *a), &args, &backend);

    let workers = (args.role != Role::Api)
        .then(|| Workers::spawn_with_reconciler(&backend.service, usize::from(args.concurrency)));
    let router = match args.role {
        Role::All | Role::Api => {
            let api = Api::new(
                backend.service.clone(),
                backend.accounts.clone(),
                args.backend.api_settings(),
            );
            let ws_port = ws.as_ref().map_or(args.ws_listen.port(), |(_, a)| a.port());
            let page = live::page(&args.pusher.app_key, ws_port);
            backend
                .probes
                .iter()
                .cloned()
                .fold(api, Api::with_probe)
                .with_channel_signer(live::signer(&gateway))
                .router()
                .route(
                    "/",
                    axum::routing::get(move || async move { axum::response::Html(page) }),
                )
        }
        Role::Worker => ops_router(backend.service.clone(), backend.probes.clone()),
    };

    // Intake stops at the signal: the listener closes and keep-alive connections are
    // told to go; requests already running finish, bounded by the deadline below.
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let intake_stops = signal::shutdown_signal();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        intake_stops.await;
        eprintln!("shutting down: no new requests; draining");
        let _ = signalled_tx.send(());
    });
    let deadline = args.backend.shutdown_timeout();
    let serve = tokio::spawn(async move { server.await });
    // The gateway stops with the API: at the signal its sockets are closed (code 4200,
    // "reconnect elsewhere") so clients do not wait on a process that is going away.
    let ws_server = ws.map(|(ws_listener, _)| {
        let gateway = gateway.clone();
        let stop = signal::shutdown_signal();
        let server =
            axum::serve(ws_listener, gateway.router()).with_graceful_shutdown(async move {
                stop.await;
                gateway.shutdown().await;
            });
        tokio::spawn(async move { server.await })
    });
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
    if let Some(ws_server) = ws_server {
        match tokio::time::timeout(deadline, ws_server).await {
            Ok(joined) => joined??,
            Err(_) => eprintln!("WebSocket connections still open at the deadline were dropped"),
        }
    }
    if let Some(workers) = workers {
        backend::stop_workers(workers, deadline).await?;
    }
    Ok(())
}

fn banner(addr: SocketAddr, ws: Option<SocketAddr>, args: &Args, backend: &backend::Backend) {
    let mut out = std::io::stdout().lock();
    // stdout is the test harness's pipe as often as a terminal: a failed write there is
    // nothing the server can act on.
    let _ = writeln!(out, "listening on http://{addr}");
    if let Some(ws) = ws {
        let _ = writeln!(
            out,
            "gateway listening on ws://{ws}/app/{}; live page on http://{addr}/",
            args.pusher.app_key
        );
    }
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
