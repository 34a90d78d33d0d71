//! The black-box harness: a fresh MySQL database and a unique Redis prefix per test, the
//! real `server` binary started on them (`--listen 127.0.0.1:0 --seed`), and everything
//! taken down again when the test ends, passing or failing: the processes (SIGTERM, then
//! kill), the database (dropped), the Redis keys (deleted).
//!
//! Drop order is the teardown order: a [`Stack`]'s server goes first, then the database,
//! then the Redis prefix. A second process from [`Stack::spawn_api`] is a local the test
//! declares after its stack, so it is dropped (stopped) before the stack is.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use sqlx::MySql;
use sqlx::migrate::MigrateDatabase;

use super::client::Client;
use crate::real::{Cleanup, redis_url, unique_prefix};

/// How long a server may take from spawn to its `listening on` line (it migrates a fresh
/// database and hashes the demo passwords first, in a debug build).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a SIGTERM'd server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The most stderr kept per process (the tail is what explains a failure).
const STDERR_KEPT: usize = 64 * 1024;

/// The `server` example binary beside this test binary
/// (`target/debug/deps/integration-…` → `target/debug/examples/server`).
pub fn server_binary() -> PathBuf {
    example_binary("server")
}

/// The example binary `name` beside this test binary (`../examples/{name}`).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("examples").join(name));
    match candidate {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "no {name} binary beside {} (expected ../examples/{name}): build it first: \
             cargo build --examples --all-features (tests/run does)",
            exe.display()
        ),
    }
}

/// `base` (a `mysql://…/db?query` URL) with its database name replaced by `name`.
fn sibling_url(base: &str, name: &str) -> String {
    let (rest, query) = match base.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (base, None),
    };
    let authority_end = rest.find("://").map_or(0, |i| i + 3);
    let server = match rest[authority_end..].find('/') {
        Some(slash) => &rest[..authority_end + slash],
        None => rest,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// A database of its own for one test, dropped when this is.
struct TestDatabase {
    url: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL must name the MySQL/MariaDB server (tests/run sets it)");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "http_{}_{}_{:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            nanos & 0xffff_ffff_ffff
        );
        let url = sibling_url(&base, &name);
        MySql::create_database(&url)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} (is DATABASE_URL reachable?): {e}"));
        TestDatabase { url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop cannot await, and the test's runtime may be shutting down: a thread with a
        // runtime of its own.
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(MySql::drop_database(&url))
                .map_err(|e| e.to_string())
        })
        .join();
        let failure = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(_) => "the drop thread panicked".to_owned(),
        };
        if !std::thread::panicking() {
            panic!("cannot drop the test database: {failure}");
        }
    }
}

/// A port nothing listens on right now (the OS's pick; free again when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to process `pid` with the `kill`
/// utility (no libc in the tests: unsafe is forbidden).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("the kill utility");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// A private `redis-server` without persistence (the shared one cannot be stopped),
/// killed on drop.
pub struct PrivateRedis(Child);

impl PrivateRedis {
    /// Starts one on `port` and waits until it answers.
    pub fn start(port: u16) -> PrivateRedis {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{bin}`: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis(child)
    }

    /// Kills it as `kill -9` would: everything it held is gone.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One running `server` process.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    label: String,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Spawns the server binary with `args` and `env` (every inherited `ORDERS_*`
    /// variable removed first) and waits for its `listening on http://ADDR` line.
    pub fn spawn(label: &str, args: &[&str], env: &[(String, String)]) -> Server {
        Server::spawn_binary(&server_binary(), label, args, env)
    }

    /// As [`spawn`](Self::spawn), for another example binary that prints the same
    /// `listening on` line (the `worker`).
    pub fn spawn_binary(
        binary: &Path,
        label: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Server {
        let mut command = Command::new(binary);
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ORDERS_") {
                command.env_remove(name);
            }
        }
        // The server's WebSocket gateway (role all) on a free port too, so that servers
        // run side by side; the worker binary ignores it.
        command.env("ORDERS_WS_LISTEN", "127.0.0.1:0");
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                let mut kept = sink.lock().unwrap();
                kept.extend_from_slice(&chunk[..n]);
                let excess = kept.len().saturating_sub(STDERR_KEPT);
                kept.drain(..excess);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            // The first line names the address; the rest is drained so the pipe never
            // fills and blocks the server.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });

        let mut server = Server {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            label: label.to_owned(),
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let first = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let addr = first
            .ok()
            .and_then(|line| line.strip_prefix("listening on http://")?.parse().ok());
        match addr {
            Some(addr) => server.addr = addr,
            None => {
                let exited = server
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                let why = match exited {
                    Some(status) => format!("exited ({status}) before it was listening"),
                    None => {
                        format!("printed no `listening on http://ADDR` line in {START_TIMEOUT:?}")
                    }
                };
                server.stop();
                // Let the stderr reader catch up with what the process wrote last.
                std::thread::sleep(Duration::from_millis(100));
                let stderr = server.stderr_text();
                // target/ is shared: a build with other features replaces the binary.
                let hint = if stderr.contains("no MySQL/Redis adapters") {
                    "\n(the binary was built without mysql,redis: build it first: \
                     cargo build --examples --all-features)"
                } else {
                    ""
                };
                panic!("{label} {why}; stderr:\n{stderr}{hint}");
            }
        }
        server
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// What the process wrote on stderr so far (the last 64 KiB).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends SIGTERM and waits for the exit (killing the process after
    /// [`STOP_TIMEOUT`]); `None` when it was already stopped.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            return Some(status);
        }
        // No libc in the tests (unsafe is forbidden): the `kill` utility sends it.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{}: still running {STOP_TIMEOUT:?} after SIGTERM; killed",
            self.label
        );
        self.stop()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: the process dies on the spot, holding whatever it held.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.stop()
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills the process at once.
    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let status = self.terminate();
        if std::thread::panicking() {
            eprintln!(
                "--- {} (exit {status:?}) stderr:\n{}--- end of {}",
                self.label,
                self.stderr_text(),
                self.label
            );
        }
    }
}

/// A fresh deployment for one test: its database, its Redis prefix, and a `server
/// --role all --seed` on them (demo data loaded, rate limit off, payments always
/// approved unless the test says otherwise).
pub struct Stack {
    /// The first process (all roles). Dropped first.
    pub server: Server,
    /// A client of [`Stack::server`].
    pub client: Client,
    env: Vec<(String, String)>,
    _database: TestDatabase,
    _redis: Cleanup,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::with_env(&[]).await
    }

    /// A stack whose processes get `extra` environment variables too (they override
    /// the defaults), e.g. `ORDERS_GRACE_PERIOD_MS`, `ORDERS_TOKEN_TTL_SECS`.
    pub async fn with_env(extra: &[(&str, &str)]) -> Stack {
        Stack::with_role("all", extra).await
    }

    /// A stack whose first process runs `--role {role} --seed` (e.g. `api`: then only
    /// the worker processes a test starts take jobs).
    pub async fn with_role(role: &str, extra: &[(&str, &str)]) -> Stack {
        let database = TestDatabase::create().await;
        let prefix = unique_prefix("http");
        let redis = Cleanup::new(&prefix);
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", database.url.as_str()),
            ("REDIS_URL", redis_url().as_str()),
            ("ORDERS_REDIS_PREFIX", prefix.as_str()),
            ("ORDERS_RATE_LIMIT_PER_MINUTE", "0"),
            // Deterministic stock: a FAILED order gives its units back, so tests that
            // count stock run with every payment approved unless they choose otherwise.
            ("ORDERS_PAYMENT_APPROVAL_RATE", "1"),
            ("ORDERS_DB_MAX_CONNECTIONS", "16"),
            ("ORDERS_SHUTDOWN_TIMEOUT_SECS", "10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (name, value) in extra {
            env.retain(|(k, _)| k != name);
            env.push(((*name).to_owned(), (*value).to_owned()));
        }
        let label = format!("server --role {role}");
        let server = Server::spawn(&label, &["--role", role, "--seed"], &env);
        Stack {
            client: server.client(),
            server,
            env,
            _database: database,
            _redis: redis,
        }
    }

    /// A `worker` process (the worker binary) on the same database and Redis prefix.
    pub fn spawn_worker(&self) -> Server {
        let binary = example_binary("worker");
        Server::spawn_binary(&binary, "worker", &["--concurrency", "64"], &self.env)
    }

    /// A second process, `--role api`, on the same database and Redis prefix.
    pub fn spawn_api(&self) -> Server {
        Server::spawn("server --role api", &["--role", "api"], &self.env)
    }

    /// As [`spawn_worker`](Self::spawn_worker) / [`spawn_api`](Self::spawn_api), with
    /// `extra` environment variables on top of the stack's.
    pub fn spawn_with(
        &self,
        binary: &str,
        label: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Server {
        let mut env = self.env.clone();
        for (name, value) in extra {
            env.retain(|(k, _)| k != name);
            env.push(((*name).to_owned(), (*value).to_owned()));
        }
        Server::spawn_binary(&example_binary(binary), label, args, &env)
    }

    /// The stack's database URL.
    pub fn database_url(&self) -> &str {
        &self._database.url
    }

    /// The stack's Redis key prefix.
    pub fn redis_prefix(&self) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == "ORDERS_REDIS_PREFIX")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }
}

#[test]
fn a_sibling_url_keeps_the_server_and_the_query_and_replaces_the_database() {
    assert_eq!(
        sibling_url("mysql://u:p@127.0.0.1:3306/orders_test", "x"),
        "mysql://u:p@127.0.0.1:3306/x"
    );
    assert_eq!(
        sibling_url("mysql://u:p@h/db?ssl-mode=disabled", "x"),
        "mysql://u:p@h/x?ssl-mode=disabled"
    );
    assert_eq!(sibling_url("mysql://u:p@h:1", "x"), "mysql://u:p@h:1/x");
}
