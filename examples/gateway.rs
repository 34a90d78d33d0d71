//! The WebSocket gateway: order events to pusher-js / laravel-echo clients over the
//! Pusher Channels protocol 7 (a drop-in for Laravel Reverb).
//!
//! ```text
//! cargo run --release --example gateway --features pusher[,redis] [-- --listen 127.0.0.1:8080]
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
// A binary: clap reads the environment, as only binaries may.
#![allow(clippy::disallowed_methods)]

#[path = "support/telemetry.rs"]
mod telemetry;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use order_engine::pusher::{Gateway, PusherSettings};

/// `PUSHER_APP_SECRET` when unset: the demo secret.
const DEMO_SECRET: &str = "orders-secret";

/// Any error the binary reports before exiting non-zero.
type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// The WebSocket gateway (Pusher protocol 7) for live order events.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// Address to serve on (port 0: any free port, printed once bound).
    #[arg(long, env = "ORDERS_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The app id of the trigger API (`POST /apps/{id}/events`).
    #[arg(long, env = "PUSHER_APP_ID", default_value = "orders")]
    app_id: String,
    /// The public app key clients connect with (`/app/{key}`).
    #[arg(long, env = "PUSHER_APP_KEY", default_value = "orders-key")]
    app_key: String,
    /// Seconds of client silence before the server pings it (announced to clients).
    #[arg(long, env = "ORDERS_WS_ACTIVITY_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    activity_timeout_secs: u64,
    /// Seconds a pinged client has to answer before its socket is closed (4201).
    #[arg(long, env = "ORDERS_WS_PONG_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pong_timeout_secs: u64,
    /// Most sockets open at once (more are refused with 4100); none by default.
    #[arg(long, env = "ORDERS_WS_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Redis URL: forward the engine's order events from Redis pub/sub.
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
    // The secret only from the environment: a flag would show it in `ps`.
    let secret = std::env::var("PUSHER_APP_SECRET").unwrap_or_else(|_| DEMO_SECRET.to_owned());
    let mut settings = PusherSettings::new(args.app_id, args.app_key, secret);
    settings.activity_timeout = Duration::from_secs(args.activity_timeout_secs);
    settings.pong_timeout = Duration::from_secs(args.pong_timeout_secs);
    settings.max_connections = args.max_connections;
    let gateway = Gateway::new(settings)?;

    let redis_url = args.redis_url.filter(|url| !url.is_empty());
    let forwarder = match redis_url {
        Some(url) => Some(forward_from_redis(&url, &args.redis_prefix, gateway.clone()).await?),
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!(
        "gateway listening on ws://{addr}/app/{}",
        gateway.settings().key
    );
    let _ = std::io::stdout().flush();
    if forwarder.is_none() {
        eprintln!(
            "no REDIS_URL: events arrive only through POST /apps/{}/events",
            gateway.settings().app_id
        );
    }

    let signal = shutdown_signal();
    let closing = gateway.clone();
    // The listener stops at the signal; upgraded sockets are not requests axum waits
    // for, so the gateway closes them itself.
    axum::serve(listener, gateway.router())
        .with_graceful_shutdown(async move {
            signal.await;
            eprintln!("shutting down: closing {} sockets", closing.connections());
            closing.shutdown().await;
        })
        .await?;
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    Ok(())
}

/// Subscribes to the engine's events on Redis and publishes each one to its owner's
/// channel, from a task of its own.
#[cfg(feature = "redis")]
async fn forward_from_redis(
    url: &str,
    prefix: &str,
    gateway: Gateway,
) -> Result<tokio::task::JoinHandle<()>, AnyError> {
    use order_engine::redis::{RedisConfig, RedisEventSubscriber, SubscriberError};

    let config = RedisConfig::new(url).with_prefix(prefix.to_owned());
    let mut subscriber = RedisEventSubscriber::subscribe(&config).await?;
    eprintln!(
        "forwarding order events from Redis channel {}",
        subscriber.channel()
    );
    Ok(tokio::spawn(async move {
        let mut lagged_total: u64 = 0;
        loop {
            match subscriber.recv().await {
                Ok(event) => {
                    gateway.publish_order_event(&event);
                }
                Err(SubscriberError::Lagged(lost)) => {
                    lagged_total += lost;
                    eprintln!(
                        "the Redis event subscriber fell behind: {lost} events lost ({lagged_total} in all)"
                    );
                }
                Err(SubscriberError::Closed) => {
                    eprintln!("the Redis event subscriber closed: no more events");
                    return;
                }
            }
        }
    }))
}

#[cfg(not(feature = "redis"))]
async fn forward_from_redis(
    _: &str,
    _: &str,
    _: Gateway,
) -> Result<tokio::task::JoinHandle<()>, AnyError> {
    Err("REDIS_URL is set, but this build has no Redis adapter: build with --features redis".into())
}

/// Completes on the first SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, so a signal during start-up is not lost (as in `support/backend.rs`, which
/// this binary does not include: it needs the API's features).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {}
            () = term => {}
        }
    }
}
