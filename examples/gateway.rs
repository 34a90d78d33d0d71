//! The WebSocket gateway: order events to pusher-js / laravel-echo clients over the
//! Pusher Channels protocol 7 (a drop-in for Laravel Reverb).
//!
//! ```text
//! cargo run --release --example gateway [--features redis] [-- --listen 127.0.0.1:8080]
//! ```
//!
//! The app comes from `PUSHER_APP_ID`, `PUSHER_APP_KEY` and `PUSHER_APP_SECRET`, with
//! demo defaults `orders`, `orders-key` and `orders-secret` (change them anywhere but on
//! a laptop). With `REDIS_URL` set (a build with the `redis` feature), every order event
//! the engine publishes on Redis (`{ORDERS_REDIS_PREFIX}events`, prefix default
//! `orders:`) goes to its owner's channel `private-orders.{user}`; several gateways may
//! subscribe to the same Redis. Without it, events arrive only through the signed
//! trigger API `POST /apps/{app_id}/events` (from other services).
//!
//! Once bound it prints `gateway listening on ws://ADDR/app/KEY` (with `--listen …:0`,
//! the port the system chose). SIGTERM or Ctrl-C closes every socket (code 4200:
//! clients reconnect at once, elsewhere) and exits 0.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "support/live.rs"]
mod live;
#[path = "support/signal.rs"]
mod signal;
#[path = "support/telemetry.rs"]
mod telemetry;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// Any error the binary reports before exiting non-zero.
type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// The WebSocket gateway (Pusher protocol 7) for live order events.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// Address to serve on (port 0: any free port, printed once bound).
    #[arg(long, env = "ORDERS_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    pusher: live::PusherArgs,
    /// Redis URL: relay the engine's order events from Redis pub/sub.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of every Redis key and channel (the events channel is `{prefix}events`).
    #[arg(long, env = "ORDERS_REDIS_PREFIX", default_value = "orders:")]
    redis_prefix: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), AnyError> {
    let gateway = args.pusher.gateway()?;
    let stop = signal::shutdown_signal();
    match args
        .redis_url
        .as_deref()
        .filter(|url| !url.trim().is_empty())
    {
        Some(url) => relay_from_redis(url, &args.redis_prefix, &gateway).await?,
        None => eprintln!(
            "no REDIS_URL: events arrive only through POST /apps/{}/events",
            gateway.settings().app_id
        ),
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!(
        "gateway listening on ws://{addr}/app/{}",
        gateway.settings().key
    );
    // The harness reads this line from a pipe: a failed flush is nothing to act on.
    let _ = std::io::stdout().flush();

    let closing = gateway.clone();
    // The listener stops at the signal; upgraded sockets are not requests axum waits
    // for, so the gateway closes them itself.
    axum::serve(listener, gateway.router())
        .with_graceful_shutdown(async move {
            stop.await;
            eprintln!("shutting down: closing {} sockets", closing.connections());
            closing.shutdown().await;
        })
        .await?;
    Ok(())
}

#[cfg(feature = "redis")]
async fn relay_from_redis(
    url: &str,
    prefix: &str,
    gateway: &order_engine::pusher::Gateway,
) -> Result<(), AnyError> {
    let config = order_engine::redis::RedisConfig::new(url).with_prefix(prefix.to_owned());
    live::relay_redis(&config, gateway.clone()).await
}

#[cfg(not(feature = "redis"))]
async fn relay_from_redis(
    _: &str,
    _: &str,
    _: &order_engine::pusher::Gateway,
) -> Result<(), AnyError> {
    Err("REDIS_URL is set, but this build has no Redis adapter: build with --features redis".into())
}
