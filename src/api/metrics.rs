//! `GET /metrics`: Prometheus text format. On the API's port it asks for a token; on
//! `metrics_listen`, where [`open_router`] serves it alone, it does not, as Prometheus expects of
//! an exporter.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::auth::{Authorized, Viewer};
use super::{ApiError, AppState};
use crate::domain::Timestamp;

/// The content type of Prometheus' text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics
#[utoipa::path(
    get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
    security(("bearer" = []))
)]
pub async fn render(state: State<AppState>, _: Authorized<Viewer>) -> impl IntoResponse {
    render_open(state).await
}

/// The metrics, to anyone who can reach the address: only on `metrics_listen`.
async fn render_open(State(state): State<AppState>) -> impl IntoResponse {
    // The gauges are left out, not faked, when the database cannot be read.
    let backlog = state.store.backlog(Timestamp::now()).await.ok();
    (
        [(CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.metrics.render(backlog),
    )
}

/// What `metrics_listen` serves: `GET /metrics` without a token, and nothing else.
pub fn open_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(render_open))
        .fallback(|| async { ApiError::NotFound("only /metrics is served here".into()) })
        .with_state(state)
}
