//! The test app: the API on the memory adapters, a manual clock, the demo accounts and
//! a small catalogue; and a request builder whose every response is checked for an
//! `X-Trace-Id` (so each test also proves the header is on that response).

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use order_core::app::{SeededRandom, ServiceConfig};
use order_core::ports::{
    Account, AccountError, AccountStore, Credentials, NewAccount, TokenDigest,
};
use order_core::{ManualClock, Money, OrderService, ProductId, Timestamp, UserId};
use order_http::{Api, ApiSettings, DEMO_PASSWORD, HealthProbe, seed_demo_accounts};
use order_memory::{MemoryAccounts, MemoryAdapters, QueueConfig};
use order_payment_sim::{MemoryLedger, SimConfig, SimulatedGateway};
use serde_json::Value;
use tower::ServiceExt as _;

/// When every test starts: 2023-11-14T22:13:20Z.
pub(crate) const START: u64 = 1_700_000_000_000;

/// The API under test and everything behind it.
pub(crate) struct TestApp {
    pub(crate) router: Router,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) adapters: MemoryAdapters,
    pub(crate) service: Arc<OrderService>,
    pub(crate) accounts: Arc<MemoryAccounts>,
    /// Alice, Bob, Charlie.
    pub(crate) users: Vec<Account>,
    /// 999.99, stock 50.
    pub(crate) laptop: ProductId,
    /// 29.99, stock 200.
    pub(crate) mouse: ProductId,
    /// 149.99, stock 75.
    pub(crate) keyboard: ProductId,
    /// 299.99, stock 1.
    pub(crate) headphones: ProductId,
}

/// Replaces the real account store (given to it) with another, e.g. a failing one.
pub(crate) type WrapAccounts = fn(Arc<MemoryAccounts>) -> Arc<dyn AccountStore>;

/// How to build a [`TestApp`].
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) settings: ApiSettings,
    pub(crate) probes: Vec<Arc<dyn HealthProbe>>,
    /// Wraps the real account store (to make it fail).
    pub(crate) accounts: Option<WrapAccounts>,
    /// No channel signer: no WebSocket gateway wired.
    pub(crate) without_signer: bool,
}

/// The test signer: shows what it was asked to sign.
pub(crate) fn test_signature(socket_id: &str, channel: &str) -> String {
    format!("test-key:{socket_id}|{channel}")
}

fn price(text: &str) -> Money {
    Money::parse(text).unwrap()
}

impl TestApp {
    pub(crate) async fn new() -> Self {
        Self::with(Options::default()).await
    }

    pub(crate) async fn with_settings(settings: ApiSettings) -> Self {
        Self::with(Options {
            settings,
            ..Options::default()
        })
        .await
    }

    pub(crate) async fn with(options: Options) -> Self {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
        let adapters = MemoryAdapters::new(clock.clone(), QueueConfig::default()).unwrap();
        let repo = &adapters.repository;
        let laptop = repo.add_product("Laptop Pro", price("999.99"), 50);
        let mouse = repo.add_product("Wireless Mouse", price("29.99"), 200);
        let keyboard = repo.add_product("Mechanical Keyboard", price("149.99"), 75);
        let headphones = repo.add_product("Limited Edition Headphones", price("299.99"), 1);
        let payments = SimulatedGateway::new(
            SimConfig {
                min_delay: std::time::Duration::ZERO,
                max_delay: std::time::Duration::ZERO,
                approval_rate: 1.0,
                ..SimConfig::default()
            },
            Arc::new(MemoryLedger::new()),
            clock.clone(),
        )
        .unwrap();
        let ports = adapters.ports(Arc::new(payments), Arc::new(SeededRandom::new(7)));
        let service = Arc::new(OrderService::new(ports, ServiceConfig::default()).unwrap());
        let accounts = Arc::new(MemoryAccounts::new(adapters.repository.clone()));
        let users = seed_demo_accounts(&*accounts).await.unwrap();
        let store: Arc<dyn AccountStore> = match options.accounts {
            Some(wrap) => wrap(accounts.clone()),
            None => accounts.clone(),
        };
        let mut api = Api::new(service.clone(), store, options.settings);
        for probe in options.probes {
            api = api.with_probe(probe);
        }
        if !options.without_signer {
            api = api.with_channel_signer(Arc::new(test_signature));
        }
        Self {
            router: api.router(),
            clock,
            adapters,
            service,
            accounts,
            users,
            laptop,
            mouse,
            keyboard,
            headphones,
        }
    }

    pub(crate) fn alice(&self) -> UserId {
        self.users[0].id
    }

    pub(crate) fn bob(&self) -> UserId {
        self.users[1].id
    }

    pub(crate) fn stock(&self, product: ProductId) -> u64 {
        self.adapters.repository.stock(product).unwrap()
    }

    /// Every product's stock, in id order.
    pub(crate) fn stocks(&self) -> Vec<u64> {
        [self.laptop, self.mouse, self.keyboard, self.headphones]
            .into_iter()
            .map(|p| self.stock(p))
            .collect()
    }

    pub(crate) fn request(&self, method: Method, uri: &str) -> Req {
        Req {
            router: self.router.clone(),
            builder: Request::builder().method(method).uri(uri),
            body: Body::empty(),
        }
    }

    pub(crate) fn get(&self, uri: &str) -> Req {
        self.request(Method::GET, uri)
    }

    pub(crate) fn post(&self, uri: &str) -> Req {
        self.request(Method::POST, uri)
    }

    /// A token for the demo account with this e-mail.
    pub(crate) async fn token(&self, email: &str) -> String {
        let resp = self
            .post("/api/tokens")
            .json(serde_json::json!({"email": email, "password": DEMO_PASSWORD}))
            .send()
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
        resp.json()["token"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn alice_token(&self) -> String {
        self.token("alice@example.com").await
    }

    pub(crate) async fn bob_token(&self) -> String {
        self.token("bob@example.com").await
    }

    /// Places an order as `token` for `items` (`(product, quantity)`) under `key`.
    pub(crate) async fn place(&self, token: &str, items: &[(ProductId, u32)], key: &str) -> Resp {
        let items: Vec<Value> = items
            .iter()
            .map(|(p, q)| serde_json::json!({"product_id": p.get(), "quantity": q}))
            .collect();
        self.post("/api/orders")
            .bearer(token)
            .json(serde_json::json!({"items": items, "idempotency_key": key}))
            .send()
            .await
    }
}

/// A request being built.
pub(crate) struct Req {
    router: Router,
    builder: axum::http::request::Builder,
    body: Body,
}

impl Req {
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub(crate) fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub(crate) fn json(mut self, value: Value) -> Self {
        self.builder = self
            .builder
            .header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(serde_json::to_vec(&value).unwrap());
        self
    }

    /// A body as given, with no `Content-Type` unless set with [`header`](Self::header).
    pub(crate) fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) async fn send(self) -> Resp {
        let request = self.builder.body(self.body).unwrap();
        let response = self.router.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let resp = Resp {
            status,
            headers,
            text,
        };
        let trace = resp.header("x-trace-id");
        assert!(
            trace.is_some_and(|t| !t.is_empty() && t.len() <= 128),
            "every response carries X-Trace-Id: {status} {:?}",
            resp.headers
        );
        resp
    }
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts an error answer: status, `error_code`, a JSON content type and a
    /// message; returns the body.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["error_code"], code, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        body
    }

    /// The field names of a 422's `errors`, sorted.
    #[track_caller]
    pub(crate) fn error_fields(&self) -> Vec<String> {
        let body = self.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED");
        let mut fields: Vec<String> = body["errors"]
            .as_object()
            .unwrap_or_else(|| panic!("no errors object: {body}"))
            .keys()
            .cloned()
            .collect();
        fields.sort();
        fields
    }
}

/// An account store that fails every call: `Unavailable` or `Unexpected`.
pub(crate) struct BrokenAccounts {
    pub(crate) unavailable: bool,
}

impl BrokenAccounts {
    fn error(&self) -> AccountError {
        if self.unavailable {
            AccountError::unavailable_msg("connection refused")
        } else {
            AccountError::Unexpected(anyhow::anyhow!("corrupted row"))
        }
    }
}

#[async_trait]
impl AccountStore for BrokenAccounts {
    async fn create_account(&self, _: NewAccount) -> Result<Account, AccountError> {
        Err(self.error())
    }
    async fn credentials(&self, _: &str) -> Result<Option<Credentials>, AccountError> {
        Err(self.error())
    }
    async fn issue_token(
        &self,
        _: UserId,
        _: TokenDigest,
        _: Timestamp,
    ) -> Result<(), AccountError> {
        Err(self.error())
    }
    async fn authenticate(
        &self,
        _: &TokenDigest,
        _: Timestamp,
    ) -> Result<Option<Account>, AccountError> {
        Err(self.error())
    }
    async fn count_accounts(&self) -> Result<u64, AccountError> {
        Err(self.error())
    }
}
