//! `GET /health`: open to everyone, for load balancers and people alike.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use serde::Serialize;

use super::error::RETRY_AFTER_SECONDS;
use super::AppState;
use crate::domain::Timestamp;

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
    /// When this process's worker last looked for due escalations.
    pub last_tick_at: Option<Timestamp>,
    /// Escalations waiting to run, across all instances (`null` if the database is down).
    pub pending: Option<i64>,
    /// Pending escalations already due: more than a handful for long means the workers lag.
    pub overdue: Option<i64>,
}

/// Report whether the server, its database and its worker are up
#[utoipa::path(
    get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Everything needed is reachable", body = Health),
        (status = 503, description = "The database cannot be reached", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, HeaderMap, Json<Health>) {
    let checked = tokio::time::timeout(DATABASE_CHECK_TIMEOUT, async {
        state.store.ping().await?;
        state.store.backlog(Timestamp::now()).await
    })
    .await;
    let backlog = match checked {
        Ok(Ok(backlog)) => Some(backlog),
        _ => None,
    };
    let database_ok = backlog.is_some();
    let worker = state.worker.snapshot();
    let health = Health {
        status: if database_ok { "ok" } else { "unavailable" },
        database: if database_ok { "ok" } else { "down" },
        redis: state.scheduler.redis_status(),
        worker: WorkerHealth {
            running: worker.running,
            last_tick_at: worker.last_tick_at,
            pending: backlog.map(|b| b.pending),
            overdue: backlog.map(|b| b.overdue),
        },
    };
    let mut headers = HeaderMap::new();
    let status = if database_ok {
        StatusCode::OK
    } else {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, headers, Json(health))
}
