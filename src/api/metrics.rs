//! `GET /metrics`: Prometheus text format.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::auth::{Authorized, Viewer};
use super::AppState;
use crate::domain::Timestamp;

/// The content type of Prometheus' text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics
#[utoipa::path(
    get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
    security(("bearer" = []))
)]
pub async fn render(State(state): State<AppState>, _: Authorized<Viewer>) -> impl IntoResponse {
    // The gauges are left out, not faked, when the database cannot be read.
    let backlog = state.store.backlog(Timestamp::now()).await.ok();
    (
        [(CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.metrics.render(backlog),
    )
}
