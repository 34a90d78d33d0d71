//! `GET /api/health`: every [`HealthProbe`] run concurrently, each bounded by
//! [`PROBE_TIMEOUT`]; 200 `ok` when all answer, 503 `degraded` naming the ones that did
//! not. No authentication (a load balancer calls it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::OpsState;
use crate::json::Json;

/// How long one probe may take before it counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency the health route checks (the database, Redis). Implemented by the
/// binary that knows its connections; the library never opens one.
#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// The name reported under `services` (`"database"`, `"redis"`).
    fn name(&self) -> &str;
    /// `Ok` when the dependency answers; `Err` with why not (logged, never sent to the
    /// client). Bounded by [`PROBE_TIMEOUT`] by the caller.
    async fn check(&self) -> Result<(), String>;
}

/// A service's state in a health answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ServiceState {
    /// It answered in time.
    Connected,
    /// It failed or timed out.
    Unavailable,
}

/// The overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OverallState {
    /// Every service answered.
    Ok,
    /// At least one did not.
    Degraded,
}

/// The health answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Health)]
pub(crate) struct HealthBody {
    /// `ok` or `degraded`.
    status: OverallState,
    /// Each probe's name and state.
    services: BTreeMap<String, ServiceState>,
    /// When the check ran (RFC 3339, UTC).
    #[schema(format = DateTime)]
    timestamp: String,
}

/// Runs one probe within the timeout.
async fn run(probe: &Arc<dyn HealthProbe>) -> ServiceState {
    match tokio::time::timeout(PROBE_TIMEOUT, probe.check()).await {
        Ok(Ok(())) => ServiceState::Connected,
        Ok(Err(why)) => {
            tracing::warn!(service = probe.name(), error = %why, "health probe failed");
            ServiceState::Unavailable
        }
        Err(_) => {
            tracing::warn!(service = probe.name(), timeout = ?PROBE_TIMEOUT, "health probe timed out");
            ServiceState::Unavailable
        }
    }
}

/// Whether the service and its dependencies are up.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency answered", body = HealthBody),
        (status = 503, description = "At least one dependency is down (`degraded`)", body = HealthBody),
    )
)]
pub(crate) async fn health(State(state): State<OpsState>) -> Response {
    let states = futures_util::future::join_all(state.probes.iter().map(run)).await;
    let services: BTreeMap<String, ServiceState> = state
        .probes
        .iter()
        .map(|p| p.name().to_owned())
        .zip(states)
        .collect();
    let degraded = services.values().any(|s| *s == ServiceState::Unavailable);
    let (status, overall) = if degraded {
        (StatusCode::SERVICE_UNAVAILABLE, OverallState::Degraded)
    } else {
        (StatusCode::OK, OverallState::Ok)
    };
    let body = HealthBody {
        status: overall,
        services,
        timestamp: state.service.ports().clock.now().to_rfc3339(),
    };
    (status, Json(body)).into_response()
}
