//! The `http` path: a `server --role api` process of our own, and a plain hyper client
//! keeping one connection alive per client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{AnyError, Run, db};

/// How long a request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process of ours (`server` or `worker`) that printed `listening on http://…`.
pub(crate) struct Process {
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// The address of its first stdout line.
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `binary` with `args` and `envs` (every inherited `ORDERS_*` variable
    /// removed first, so the caller's shell cannot change the measured configuration),
    /// waits for its `listening on http://ADDR` line, and keeps draining its stdout.
    #[allow(clippy::disallowed_methods)] // a binary: it may read its own environment
    pub(crate) async fn spawn(
        binary: &Path,
        args: &[&str],
        envs: &[(&str, String)],
        log: PathBuf,
    ) -> Result<Self, AnyError> {
        let mut command = Command::new(binary);
        command.args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ORDERS_") {
                command.env_remove(&name);
            }
        }
        // The children log warnings only, unless `LOADGEN_CHILD_RUST_LOG` asks for more
        // (a diagnosis of a slow cell; each child's stderr goes to its own log file).
        command
            .env(
                "RUST_LOG",
                std::env::var("LOADGEN_CHILD_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e} (build it first)", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                return Err(format!(
                    "{} exited before listening; its stderr: {}",
                    binary.display(),
                    log.display()
                )
                .into());
            }
            Err(_) => return Err(format!("{} did not start in 120 s", binary.display()).into()),
        };
        let addr: SocketAddr = line
            .strip_prefix("listening on http://")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .trim()
            .parse()?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, log, addr })
    }

    /// Kills the process and reaps it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Whether it is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The API server of the `http` path.
pub(crate) struct Server {
    process: Process,
    pub addr: SocketAddr,
}

impl Server {
    /// `server --role api` (the first, `index` 0, with `--seed`) on the run's main
    /// database, with its own Redis
    /// prefix, no rate limit, and `pool` database connections.
    pub(crate) async fn spawn(run: &Run, pool: u32, index: u16) -> Result<Self, AnyError> {
        let binary = run.args.bin_dir.join("server");
        let log = std::env::temp_dir().join(format!("loadgen-{}-server-{index}.log", run.tag));
        let mut args = vec!["--role", "api", "--listen", "127.0.0.1:0"];
        // The first seeds the demo data; the others share its database.
        if index == 0 {
            args.push("--seed");
        }
        let process = Process::spawn(
            &binary,
            &args,
            &[
                ("DATABASE_URL", run.main_url.clone()),
                ("REDIS_URL", run.args.redis_url.clone()),
                ("ORDERS_REDIS_PREFIX", format!("{}http:", run.redis_prefix)),
                ("ORDERS_RATE_LIMIT_PER_MINUTE", "0".to_owned()),
                ("ORDERS_DB_MAX_CONNECTIONS", pool.to_string()),
            ],
            log,
        )
        .await?;
        let addr = process.addr;
        Ok(Self { process, addr })
    }

    /// A bearer token for each of the first `n` users of run `tag` (created with the
    /// demo password's hash), two logins at a time.
    pub(crate) async fn login_all(&self, tag: u64, n: usize) -> Result<Vec<String>, AnyError> {
        let mut tokens = vec![String::new(); n];
        for chunk in (0..n).collect::<Vec<_>>().chunks(2) {
            let logins: Vec<_> = chunk
                .iter()
                .map(|i| {
                    let addr = self.addr;
                    let email = db::user_email(tag, *i);
                    tokio::spawn(async move { login(addr, &email).await })
                })
                .collect();
            for (i, login) in chunk.iter().zip(logins) {
                tokens[*i] = login.await??;
            }
        }
        Ok(tokens)
    }

    pub(crate) async fn stop(mut self) {
        if !self.process.alive() {
            eprintln!(
                "loadgen: the server had exited; its stderr: {}",
                self.process.log.display()
            );
        }
        self.process.stop().await;
    }
}

/// `POST /api/tokens` for `email` with the demo password.
async fn login(addr: SocketAddr, email: &str) -> Result<String, AnyError> {
    let mut conn = HttpConn::open(addr).await?;
    let body = serde_json::json!({ "email": email, "password": "password" }).to_string();
    let (status, reply) = conn.post("/api/tokens", None, body).await?;
    if status != 201 && status != 200 {
        return Err(format!("POST /api/tokens for {email}: {status} {}", excerpt(&reply)).into());
    }
    let value: serde_json::Value = serde_json::from_slice(&reply)?;
    value["token"]
        .as_str()
        .or_else(|| value["data"]["token"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("no token in {}", excerpt(&reply)).into())
}

/// The start of a body, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl HttpConn {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self, AnyError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender, addr })
    }

    /// POSTs a JSON `body` (with a bearer `token`) and returns the status and the body.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: String,
    ) -> Result<(u16, Bytes), AnyError> {
        let mut builder = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = builder.body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(format!("no answer in {REQUEST_TIMEOUT:?}").into()),
        }
    }
}
