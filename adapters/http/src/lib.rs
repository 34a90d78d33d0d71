//! # order-http
//!
//! The REST API of the order engine: an axum [`Router`] over an [`OrderService`] and an
//! [`AccountStore`]. A driving adapter and a library: it opens no socket and reads no
//! environment; a binary builds [`ApiSettings`], wires the ports and serves
//! [`Api::router`].
//!
//! ## Routes
//!
//! | method, path | auth | success | errors |
//! |---|---|---|---|
//! | `POST /api/tokens` `{email, password}` | – | 201 `{token, token_type, expires_at, user}` | 400, 401 `INVALID_CREDENTIALS`, 413, 415, 422 |
//! | `GET /api/health` | – | 200 `{status:"ok", services, timestamp}` | 503 `degraded` |
//! | `GET /api/products` | – | 200 `{data:[Product]}` | 503 |
//! | `GET /api/products/{id}` | – | 200 `{data}` | 404 |
//! | `POST /api/orders` `{items, idempotency_key?, user_id?}` (+ `Idempotency-Key`) | bearer | 201 `{data}` + `Location`; 200 + `Idempotent-Replayed: true` on replay | 400, 401, 403, 409 `INSUFFICIENT_STOCK`/`LOCK_CONFLICT`/`IDEMPOTENCY_KEY_IN_FLIGHT`, 413, 415, 422 `VALIDATION_FAILED`/`IDEMPOTENCY_KEY_REUSED`, 429 |
//! | `GET /api/orders?status=&page=&per_page=` | bearer | 200 `{data, meta}` | 401, 422, 429 |
//! | `GET /api/orders/{id}` | bearer | 200 `{data}` | 401, 404 (also another user's), 429 |
//! | `POST /api/orders/{id}/cancel` | bearer | 200 `{data}` | 401, 404, 409 `INVALID_TRANSITION`, 429 |
//! | `GET /api/events?after=&limit=` | bearer | 200 `{data:[{seq, event, channel, data}], meta:{after, last_seq, has_more, truncated}}` | 401, 422, 429 |
//! | `POST /broadcasting/auth` (form: `socket_id`, `channel_name`) | bearer | 200 `{auth}` for the caller's own `private-orders.{id}` | 401, 403, 404 (no gateway), 415, 422 |
//! | `GET /metrics` | – | 200 Prometheus text 0.0.4 | |
//! | `GET /api/openapi.json` | – | 200 the OpenAPI 3.1 document ([`openapi`]) | |
//!
//! Every error body is `{"message", "error_code", "errors"?}`; an unknown route is 404
//! `NOT_FOUND`, a wrong method 405 `METHOD_NOT_ALLOWED`; 5xx bodies are opaque and their
//! cause is logged once with the request's trace id. Every response carries
//! `X-Trace-Id` (echoed when valid, else generated). Any store failure is a 503
//! `SERVICE_UNAVAILABLE`.
//!
//! Modules: `settings`, `error` (the one error type and its status mapping), `json`
//! (the body pipeline), `validate` (hand validation), `auth` (tokens, the bearer
//! middleware), `rate_limit`, `password` (argon2id, demo accounts), `orders`,
//! `products`, `health`, `metrics`, `openapi`, `trace` (the request middleware).

mod auth;
mod broadcasting;
mod dto;
mod error;
mod health;
mod json;
mod metrics;
mod openapi;
mod orders;
mod password;
mod products;
mod rate_limit;
mod settings;
mod trace;
mod validate;

use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use order_core::OrderService;
use order_core::ports::AccountStore;

pub use broadcasting::ChannelSigner;
pub use health::{HealthProbe, PROBE_TIMEOUT};
pub use openapi::openapi;
pub use password::{
    DEMO_ACCOUNTS, DEMO_PASSWORD, PasswordError, SeedError, hash_password, seed_demo_accounts,
};
pub use settings::ApiSettings;

use crate::error::ApiError;
use crate::metrics::HttpMetrics;
use crate::rate_limit::{LoginRateLimit, UserRateLimit};

/// What the API routes share.
#[derive(Clone)]
pub(crate) struct ApiState {
    service: Arc<OrderService>,
    accounts: Arc<dyn AccountStore>,
    settings: Arc<ApiSettings>,
    limiter: Arc<UserRateLimit>,
    login_limiter: Arc<LoginRateLimit>,
    /// Signs private-channel subscriptions; `None`: no WebSocket gateway, and
    /// `/broadcasting/auth` answers 404.
    signer: Option<broadcasting::SharedSigner>,
}

/// What the operations routes (`/metrics`, `/api/health`) share.
#[derive(Clone)]
pub(crate) struct OpsState {
    service: Arc<OrderService>,
    probes: Arc<[Arc<dyn HealthProbe>]>,
    metrics: Arc<HttpMetrics>,
}

/// The REST API over one service and account store. Cloning shares everything,
/// including the rate limiter's state and the request metrics: every router made by
/// [`router`](Self::router) counts into the same ones.
#[derive(Clone)]
pub struct Api {
    state: ApiState,
    probes: Vec<Arc<dyn HealthProbe>>,
    metrics: Arc<HttpMetrics>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("service", &self.state.service)
            .field("settings", &self.state.settings)
            .field("limiter", &self.state.limiter)
            .field(
                "probes",
                &self
                    .probes
                    .iter()
                    .map(|p| p.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Api {
    /// The API over `service` and `accounts`, behaving as `settings` say. The rate
    /// limiter measures time on the service's clock (`service.ports().clock`), as token
    /// expiry does.
    pub fn new(
        service: Arc<OrderService>,
        accounts: Arc<dyn AccountStore>,
        settings: ApiSettings,
    ) -> Api {
        let limiter = UserRateLimit::new(
            settings.rate_limit_per_minute,
            service.ports().clock.clone(),
        );
        let login_limiter = LoginRateLimit::new(
            settings.rate_limit_per_minute,
            service.ports().clock.clone(),
        );
        Api {
            state: ApiState {
                service,
                accounts,
                settings: Arc::new(settings),
                limiter: Arc::new(limiter),
                login_limiter: Arc::new(login_limiter),
                signer: None,
            },
            probes: Vec::new(),
            metrics: Arc::default(),
        }
    }

    /// Adds a dependency `GET /api/health` checks (call once per dependency; each is
    /// reported under its [`HealthProbe::name`]).
    #[must_use]
    pub fn with_probe(mut self, probe: Arc<dyn HealthProbe>) -> Api {
        self.probes.push(probe);
        self
    }

    /// Serves `POST /broadcasting/auth` with `signer`: the caller (bearer token) gets its
    /// own `private-orders.{id}` subscription signed, any other channel is a 403. Without
    /// a signer the route answers 404 (no WebSocket gateway is wired).
    #[must_use]
    pub fn with_channel_signer(mut self, signer: Arc<dyn ChannelSigner>) -> Api {
        self.state.signer = Some(signer);
        self
    }

    /// Every route: `/api/*`, `/metrics` and `/api/openapi.json`, with the request
    /// middleware (trace id, span, metrics, JSON 404/405). Serve it as it is.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let bearer = || from_fn_with_state(state.clone(), auth::authenticate);
        let api = Router::new()
            .route("/api/tokens", post(auth::issue_token))
            .route("/api/products", get(products::list_products))
            .route("/api/products/{id}", get(products::get_product))
            .route(
                "/api/orders",
                post(orders::create_order)
                    .get(orders::list_orders)
                    .route_layer(bearer()),
            )
            .route(
                "/api/orders/{id}",
                get(orders::get_order).route_layer(bearer()),
            )
            .route(
                "/api/orders/{id}/cancel",
                post(orders::cancel_order).route_layer(bearer()),
            )
            .route(
                "/api/events",
                get(broadcasting::list_events).route_layer(bearer()),
            )
            .route(
                "/broadcasting/auth",
                post(broadcasting::authorize_channel).route_layer(bearer()),
            )
            .route("/api/openapi.json", get(openapi::openapi_json))
            .with_state(self.state.clone());
        let ops = ops_routes(OpsState {
            service: self.state.service.clone(),
            probes: self.probes.clone().into(),
            metrics: self.metrics.clone(),
        });
        finish(api.merge(ops), self.metrics.clone())
    }
}

/// `/metrics` and `/api/health` alone, for a process that runs workers but no API: the
/// same request middleware (trace id, metrics, JSON 404/405), its own request metrics.
pub fn ops_router(service: Arc<OrderService>, probes: Vec<Arc<dyn HealthProbe>>) -> Router {
    let metrics = Arc::<HttpMetrics>::default();
    let ops = ops_routes(OpsState {
        service,
        probes: probes.into(),
        metrics: metrics.clone(),
    });
    finish(ops, metrics)
}

fn ops_routes(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/api/health", get(health::health))
        .with_state(state)
}

/// The JSON fallbacks and the request middleware around `routes`.
fn finish(routes: Router, metrics: Arc<HttpMetrics>) -> Router {
    routes
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .route_layer(from_fn(trace::matched_route))
        .layer(from_fn_with_state(metrics, trace::observe))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not found.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
