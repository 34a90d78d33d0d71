//! A small HTTP/1.1 client on hyper's connection API: one TCP connection per request, so
//! a test decides exactly which bytes go out (a wrong content type, a body of 65 537
//! bytes, no body at all) and can open fifty connections first and fire them together.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HeaderMap;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The password of every demo account.
pub const PASSWORD: &str = "password";
/// The demo accounts, in seeding order.
pub const USERS: [&str; 3] = [
    "alice@example.com",
    "bob@example.com",
    "charlie@example.com",
];
/// How long one request may take before the test fails (a hung server is a failure).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A server's answer: status, headers, and the whole body.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics (showing the body) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }

    /// The error body's `error_code`, or "" when there is none.
    pub fn code(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error_code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The order in `{"data": Order}`.
    pub fn data(&self) -> Value {
        self.json()["data"].clone()
    }

    /// Asserts the status (and, for an error, the `error_code`), showing the reply if not.
    pub fn expect(&self, status: u16, code: &str) -> &Self {
        assert!(
            self.status == status && self.code() == code,
            "expected {status} {code:?}, got {self:?}"
        );
        self
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let shown: String = body.chars().take(2_000).collect();
        write!(f, "HTTP {} {:?} {shown}", self.status, self.headers)
    }
}

/// A request to send: method, path (with query), extra headers, raw body.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &'static str, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new("GET", path)
    }

    /// A POST with a JSON body and `Content-Type: application/json`.
    pub fn post_json(path: impl Into<String>, body: &Value) -> Self {
        Self::new("POST", path)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// The hyper request for `request`, addressed to `addr`.
fn outgoing(
    request: &Request,
    addr: SocketAddr,
) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
    let mut builder = hyper::Request::builder()
        .method(request.method)
        .uri(&request.path)
        .header("host", addr.to_string());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Full::new(Bytes::from(request.body.clone())))
}

/// An open connection that sends one request.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Conn {
    pub async fn send(mut self, request: Request) -> Reply {
        let outgoing = outgoing(&request, self.addr).unwrap();
        let exchange = async {
            let response = self.sender.send_request(outgoing).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => panic!("{} {}: {e}", request.method, request.path),
            Err(_) => panic!(
                "{} {}: no answer in {REQUEST_TIMEOUT:?}",
                request.method, request.path
            ),
        }
    }
}

/// A logged-in demo user.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub user_id: u64,
}

/// Talks to one server.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// Opens a connection (to send one request on later).
    pub async fn connect(&self) -> Conn {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        // The connection task ends when the reply is read (or the server hangs up).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Conn {
            sender,
            addr: self.addr,
        }
    }

    pub async fn send(&self, request: Request) -> Reply {
        self.connect().await.send(request).await
    }

    /// [`send`](Self::send) for a server that may be dying: a refused connection, a
    /// broken one or no answer within `within` is an `Err` naming what happened, not a
    /// panic.
    pub async fn try_send(&self, request: Request, within: Duration) -> Result<Reply, String> {
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let outgoing = outgoing(&request, self.addr).map_err(|e| format!("request: {e}"))?;
            let response = sender
                .send_request(outgoing)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(within, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer in {within:?}")),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let request = Request::get(path);
        self.send(match token {
            Some(t) => request.bearer(t),
            None => request,
        })
        .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.send(Request::post_json(path, body).bearer(token))
            .await
    }

    /// `POST /api/tokens` for a demo user; panics unless it answers 201.
    pub async fn login(&self, email: &str) -> Session {
        let reply = self
            .send(Request::post_json(
                "/api/tokens",
                &json!({"email": email, "password": PASSWORD}),
            ))
            .await;
        assert_eq!(reply.status, 201, "login as {email}: {reply:?}");
        let body = reply.json();
        Session {
            token: body["token"].as_str().expect("a token").to_owned(),
            user_id: body["user"]["id"].as_u64().expect("user.id"),
        }
    }

    /// The three demo users, logged in (alice, bob, charlie).
    pub async fn login_all(&self) -> [Session; 3] {
        let (a, b, c) = tokio::join!(
            self.login(USERS[0]),
            self.login(USERS[1]),
            self.login(USERS[2])
        );
        [a, b, c]
    }

    /// `POST /api/orders` with `(product, quantity)` lines and a key in the body.
    pub async fn create(&self, token: &str, items: &[(u64, i64)], key: &str) -> Reply {
        self.send(create_request(token, items, key)).await
    }

    /// A product's stock, read through `GET /api/products/{id}`.
    pub async fn stock(&self, product: u64) -> i64 {
        let reply = self.get(&format!("/api/products/{product}"), None).await;
        assert_eq!(reply.status, 200, "product {product}: {reply:?}");
        reply.data()["stock"].as_i64().expect("stock")
    }

    /// Every product's stock, by id, through `GET /api/products`.
    pub async fn stocks(&self) -> Vec<(u64, i64)> {
        let reply = self.get("/api/products", None).await;
        assert_eq!(reply.status, 200, "products: {reply:?}");
        let data = reply.data();
        let mut stocks: Vec<(u64, i64)> = data
            .as_array()
            .expect("data is a list")
            .iter()
            .map(|p| (p["id"].as_u64().unwrap(), p["stock"].as_i64().unwrap()))
            .collect();
        stocks.sort_unstable();
        stocks
    }

    /// How many orders `token`'s user has: `meta.total` of `GET /api/orders`.
    pub async fn order_count(&self, token: &str) -> u64 {
        let reply = self.get("/api/orders", Some(token)).await;
        assert_eq!(reply.status, 200, "order list: {reply:?}");
        reply.json()["meta"]["total"].as_u64().expect("meta.total")
    }

    /// Polls `GET /api/orders/{id}` until its status is one of `statuses`; panics after
    /// `within`.
    pub async fn wait_for_status(
        &self,
        token: &str,
        id: u64,
        statuses: &[&str],
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let reply = self.get(&format!("/api/orders/{id}"), Some(token)).await;
            assert_eq!(reply.status, 200, "order {id}: {reply:?}");
            let order = reply.data();
            if statuses.iter().any(|s| order["status"] == *s) {
                return order;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} is still {} after {within:?}, expected one of {statuses:?}",
                order["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The request `Client::create` sends.
pub fn create_request(token: &str, items: &[(u64, i64)], key: &str) -> Request {
    let items: Vec<Value> = items
        .iter()
        .map(|(p, q)| json!({"product_id": p, "quantity": q}))
        .collect();
    Request::post_json(
        "/api/orders",
        &json!({"items": items, "idempotency_key": key}),
    )
    .bearer(token)
}
