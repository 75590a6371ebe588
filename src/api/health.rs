//! `GET /health`: open to everyone, for load balancers and people alike.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::AppState;

/// How long the health check waits for the database before calling it down.
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the database cannot be reached.
    pub status: &'static str,
    /// `ok` or `down`.
    pub database: &'static str,
    /// `ok`, `down`, or `disabled` when no `redis_url` is configured.
    pub redis: &'static str,
    pub worker: WorkerHealth,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerHealth {
    /// Whether this process runs the escalation worker.
    pub running: bool,
}

#[utoipa::path(
    get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Everything needed is reachable", body = Health),
        (status = 503, description = "The database cannot be reached", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let database_ok = matches!(
        tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.store.ping()).await,
        Ok(Ok(()))
    );
    let health = Health {
        status: if database_ok { "ok" } else { "unavailable" },
        database: if database_ok { "ok" } else { "down" },
        redis: "disabled",
        worker: WorkerHealth { running: false },
    };
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}
