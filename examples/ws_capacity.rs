//! Capacity benchmark of the WebSocket gateway (a load client, not a test): starts the
//! `gateway` binary, opens `--connections` WebSocket clients, each subscribed to a
//! private channel `private-orders.{i % users}`, publishes `--rate` events per second
//! for `--duration` seconds through the signed trigger API, and reports
//! publish-to-receive latency, delivery, and the gateway's memory and CPU.
//!
//! ```text
//! cargo build --release --example gateway --example ws_capacity --features pusher
//! target/release/examples/ws_capacity [--connections 10000 --users 1000 --rate 200 --duration 10 --json]
//! ```
//!
//! Both processes need more open files than the usual soft limit of 1024: this binary
//! re-executes itself through `bash -c 'ulimit -n <hard limit>'` when its soft limit is
//! too low, and starts the gateway the same way. Latency is measured from just before
//! the trigger request is sent to the frame's arrival, on this process's monotonic
//! clock (the send instant travels in the event's data). Memory is the gateway's VmRSS
//! (`/proc/PID/status`) before and after the clients connect; CPU is its utime+stime
//! (`/proc/PID/stat`) over the publish window, in percent of one core.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]
// A binary: it reads the environment, as only binaries may.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use order_engine::pusher::{channel_signature, trigger_query};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type AnyError = Box<dyn std::error::Error + Send + Sync>;

const APP_ID: &str = "capacity";
const KEY: &str = "capacity-key";
const SECRET: &str = "capacity-secret";
const REEXEC_MARK: &str = "WS_CAPACITY_REEXECUTED";

/// Load client for the WebSocket gateway.
#[derive(Debug, Parser)]
#[command(long_about = None)]
struct Args {
    /// The gateway binary to start.
    #[arg(long, default_value = "target/release/examples/gateway")]
    gateway_bin: String,
    /// WebSocket connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Distinct private channels (users); connection i joins `private-orders.{i % users}`.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Connections opened at once while ramping up. Batches of 500 on loopback here
    /// overflowed the accept queue and waited for SYN retransmits (1 s per batch); 100
    /// ramp 10 000 clients in about a second.
    #[arg(long, default_value_t = 100)]
    ramp: usize,
    /// Events published per second (each to one user's channel, round robin).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Print one JSON line of results as well.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Shared {
    latencies_us: Mutex<Vec<u32>>,
    received: AtomicU64,
    subscribed: AtomicUsize,
    failed: AtomicUsize,
}

fn main() -> Result<(), AnyError> {
    let args = Args::parse();
    let needed = u64::try_from(args.connections).unwrap_or(u64::MAX) + 256;
    let (soft, hard) = nofile_limits();
    if soft < needed && std::env::var_os(REEXEC_MARK).is_none() {
        // Raise the soft limit the only way without unsafe code: a shell's `ulimit`, then
        // exec this binary again.
        let status = Command::new("bash")
            .arg("-c")
            .arg(r#"ulimit -n "$(ulimit -Hn)" && exec "$0" "$@""#)
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(REEXEC_MARK, "1")
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    if soft < needed {
        eprintln!("warning: open-file limit {soft} (hard {hard}) is below the {needed} needed");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), AnyError> {
    let (gateway, addr) = start_gateway(&args.gateway_bin)?;
    let mut gateway = StopOnDrop(Some(gateway));
    let pid = gateway.pid();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_idle_kb = vm_rss_kb(pid)?;
    eprintln!(
        "gateway pid {pid} on {addr}, RSS {:.1} MB idle",
        mb(rss_idle_kb)
    );

    let shared = Arc::new(Shared::default());
    let base = Instant::now();
    let ramp_started = Instant::now();
    let mut clients = Vec::with_capacity(args.connections);
    for start in (0..args.connections).step_by(args.ramp.max(1)) {
        let end = (start + args.ramp).min(args.connections);
        let target = shared.subscribed.load(Ordering::Relaxed) + (end - start);
        for i in start..end {
            let channel = format!("private-orders.{}", i % args.users);
            clients.push(tokio::spawn(client(
                addr,
                channel,
                Arc::clone(&shared),
                base,
            )));
        }
        // The next batch starts once this one is subscribed (or failed).
        while shared.subscribed.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
            < target
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let ramp_secs = ramp_started.elapsed().as_secs_f64();
    let subscribed = shared.subscribed.load(Ordering::Relaxed);
    let failed = shared.failed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected_kb = vm_rss_kb(pid)?;
    eprintln!(
        "{subscribed} subscribed ({failed} failed) in {ramp_secs:.1} s; RSS {:.1} MB",
        mb(rss_connected_kb)
    );

    // Publish at a steady rate on one keep-alive connection.
    let mut sender = http_connection(addr).await?;
    let events = args.rate as u64 * args.duration;
    let mut expected: u64 = 0;
    let per_user = |user: usize| {
        (args.connections / args.users + usize::from(user < args.connections % args.users)) as u64
    };
    let cpu_before = cpu_ticks(pid)?;
    let window = Instant::now();
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rejected = 0u64;
    for seq in 0..events {
        ticker.tick().await;
        let user = usize::try_from(seq).unwrap_or(0) % args.users;
        let sent_us = base.elapsed().as_micros() as u64;
        let data = format!(r#"{{"seq":{seq},"sent_us":{sent_us}}}"#);
        let body = serde_json::json!({
            "name": "order.paid",
            "channel": format!("private-orders.{user}"),
            "data": data,
        })
        .to_string();
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let query = trigger_query(APP_ID, KEY, SECRET, body.as_bytes(), now);
        let request = hyper::Request::post(format!("/apps/{APP_ID}/events?{query}"))
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        // The previous response may be read before the connection can take the next
        // request.
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let _ = response.into_body().collect().await?;
        if status.is_success() {
            expected += per_user(user);
        } else {
            rejected += 1;
        }
    }
    let publish_secs = window.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks(pid)?;
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kb = vm_rss_kb(pid)?;
    let clk_tck = clock_ticks_per_second();
    let cpu_percent = (cpu_after - cpu_before) as f64 / clk_tck / publish_secs * 100.0;

    let received = shared.received.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[index]) / 1000.0
    };
    let (p50, p99, max) = (pct(0.50), pct(0.99), pct(1.0));
    let per_conn_kb =
        (rss_connected_kb.saturating_sub(rss_idle_kb)) as f64 / subscribed.max(1) as f64;

    println!(
        "ws_capacity: {} connections, {} channels, {} events/s for {} s",
        args.connections, args.users, args.rate, args.duration
    );
    println!(
        "  {:<34} {:>12}",
        "connections subscribed / failed",
        format!("{subscribed} / {failed}")
    );
    println!("  {:<34} {:>12.1}", "ramp-up (s)", ramp_secs);
    println!(
        "  {:<34} {:>12.1}",
        "gateway RSS idle (MB)",
        mb(rss_idle_kb)
    );
    println!(
        "  {:<34} {:>12.1}",
        "gateway RSS connected (MB)",
        mb(rss_connected_kb)
    );
    println!(
        "  {:<34} {:>12.1}",
        "gateway RSS after publishing (MB)",
        mb(rss_after_kb)
    );
    println!("  {:<34} {:>12.2}", "RSS per connection (KB)", per_conn_kb);
    println!(
        "  {:<34} {:>12}",
        "events published (rejected)",
        format!("{events} ({rejected})")
    );
    println!(
        "  {:<34} {:>12}",
        "deliveries received / expected",
        format!("{received} / {expected}")
    );
    println!("  {:<34} {:>12.2}", "latency p50 (ms)", p50);
    println!("  {:<34} {:>12.2}", "latency p99 (ms)", p99);
    println!("  {:<34} {:>12.2}", "latency max (ms)", max);
    println!(
        "  {:<34} {:>12.1}",
        "gateway CPU while publishing (%)", cpu_percent
    );
    if args.json {
        let line = serde_json::json!({
            "connections": args.connections, "subscribed": subscribed, "failed": failed,
            "users": args.users, "rate": args.rate, "duration_s": args.duration,
            "ramp_s": ramp_secs,
            "rss_idle_mb": mb(rss_idle_kb), "rss_connected_mb": mb(rss_connected_kb),
            "rss_after_mb": mb(rss_after_kb), "rss_per_connection_kb": per_conn_kb,
            "events": events, "rejected": rejected, "received": received, "expected": expected,
            "p50_ms": p50, "p99_ms": p99, "max_ms": max, "cpu_percent": cpu_percent,
        });
        println!("{line}");
    }

    // SIGTERM: the gateway closes every socket and exits 0.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let mut child = gateway.0.take().ok_or("no gateway")?;
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    eprintln!("gateway exited: {status}");
    for client in clients {
        client.abort();
    }
    Ok(())
}

/// One client: connect, subscribe (signed locally), then record every event's latency
/// and answer the server's pings.
async fn client(addr: SocketAddr, channel: String, shared: Arc<Shared>, base: Instant) {
    let url = format!("ws://{addr}/app/{KEY}?protocol=7&client=js&version=8.6.0&flash=false");
    // Small buffers: 10 000 clients share this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let Ok((mut ws, _)) =
        tokio_tungstenite::connect_async_with_config(url, Some(config), true).await
    else {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut subscribed = false;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        match frame["event"].as_str().unwrap_or_default() {
            "pusher:connection_established" => {
                let data: serde_json::Value =
                    serde_json::from_str(frame["data"].as_str().unwrap_or("{}"))
                        .unwrap_or_default();
                let socket_id = data["socket_id"].as_str().unwrap_or_default();
                let auth = format!("{KEY}:{}", channel_signature(SECRET, socket_id, &channel));
                let subscribe = serde_json::json!({
                    "event": "pusher:subscribe",
                    "data": { "channel": channel, "auth": auth },
                });
                if ws.send(Message::text(subscribe.to_string())).await.is_err() {
                    break;
                }
            }
            "pusher_internal:subscription_succeeded" => {
                subscribed = true;
                shared.subscribed.fetch_add(1, Ordering::Relaxed);
            }
            "pusher:ping" => {
                let _ = ws
                    .send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
                    .await;
            }
            "order.paid" => {
                let now_us = base.elapsed().as_micros() as u64;
                let data: serde_json::Value =
                    serde_json::from_str(frame["data"].as_str().unwrap_or("{}"))
                        .unwrap_or_default();
                if let Some(sent_us) = data["sent_us"].as_u64() {
                    let latency = u32::try_from(now_us.saturating_sub(sent_us)).unwrap_or(u32::MAX);
                    shared.latencies_us.lock().unwrap().push(latency);
                    shared.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                if !subscribed {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("unexpected frame before subscribing: {text}");
                    break;
                }
            }
        }
    }
    if !subscribed {
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The gateway process, sent SIGTERM if this run ends early (an error), so that it
/// does not outlive the benchmark.
struct StopOnDrop(Option<std::process::Child>);

impl StopOnDrop {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

/// Starts the gateway under a raised open-file limit; its address from its banner.
fn start_gateway(bin: &str) -> Result<(std::process::Child, SocketAddr), AnyError> {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -n "$(ulimit -Hn)" && exec "$0" "$@""#)
        .arg(bin)
        .args(["--listen", "127.0.0.1:0"])
        .env("PUSHER_APP_ID", APP_ID)
        .env("PUSHER_APP_KEY", KEY)
        .env("PUSHER_APP_SECRET", SECRET)
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot start {bin}: {e} (build it with --release --example gateway)")
        })?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    // "gateway listening on ws://ADDR/app/KEY"
    let addr = line
        .split("ws://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("unexpected gateway banner: {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

async fn http_connection(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, AnyError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// `(soft, hard)` open-file limits of this process, from `/proc/self/limits`.
fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (
        numbers.next().unwrap_or(1024),
        numbers.next().unwrap_or(1024),
    )
}

fn vm_rss_kb(pid: u32) -> Result<u64, AnyError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, AnyError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}
