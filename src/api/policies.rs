//! Escalation policies kept as data: made and replaced by admins, read by anyone with a token,
//! never deleted. Durations are humantime text, as in the configuration. An incident escalating
//! under a policy keeps the snapshot it took; a replaced policy applies to incidents that start
//! escalating later.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Admin, Authorized, Viewer};
use super::extract::{IdPath, JsonBody};
use super::{to_completion, ApiError, AppState};
use crate::domain::contact::humantime_text;
use crate::domain::service::delay;
use crate::domain::{Channel, EscalationLevel, OnlyDuring, PolicyRecord, Timestamp};

fn missing(id: Uuid) -> impl FnOnce() -> String {
    move || format!("escalation policy {id} not found")
}

/// One level, as the API reads and shows it.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LevelBody {
    /// 1, 2, 3, … in order.
    pub level: i32,
    /// After the escalate action for level 1, after the previous level for the others:
    /// `"0s"`, `"5m"`, `"1h 30m"`; at most 365 days.
    #[schema(example = "5m")]
    pub delay: String,
    pub channels: Vec<Channel>,
    /// User handles, and `schedule:<name>` for whoever is on call in that schedule when the
    /// level runs; none tells every active responder and admin.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The `[webhooks.<name>]` the webhook channel posts to.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// When the level runs, such as `{"weekdays":["mon","tue","wed","thu","fri"],
    /// "start":"09:00","end":"17:00","time_zone":"Europe/Berlin"}`; outside it the level is
    /// skipped and the next follows at once. At least one level of a policy has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_during: Option<OnlyDuring>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// How many times to walk the levels again after the last, 0 to 20 (0 if not given).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 20)]
    pub repeat: u32,
    pub levels: Vec<LevelBody>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub id: Uuid,
    pub name: String,
    pub repeat: u32,
    pub levels: Vec<LevelBody>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<PolicyRecord> for PolicyView {
    fn from(policy: PolicyRecord) -> Self {
        Self {
            id: policy.id,
            name: policy.name,
            repeat: policy.levels.repeat(),
            levels: policy
                .levels
                .levels()
                .iter()
                .map(|level| LevelBody {
                    level: level.level,
                    delay: humantime_text::format(level.delay),
                    channels: level.channels.clone(),
                    targets: level.targets.clone(),
                    webhooks: level.webhooks.clone(),
                    only_during: level.only_during.clone(),
                })
                .collect(),
            created_at: policy.created_at,
            updated_at: policy.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyList {
    /// By name.
    pub escalation_policies: Vec<PolicyView>,
}

/// The policy a request describes, its levels checked as the configuration's are.
fn record_of(state: &AppState, request: PolicyRequest) -> Result<PolicyRecord, ApiError> {
    let mut levels = Vec::with_capacity(request.levels.len());
    for (index, body) in request.levels.into_iter().enumerate() {
        let level = EscalationLevel {
            level: body.level,
            delay: delay(&body.delay)?,
            channels: body.channels,
            targets: body.targets,
            webhooks: body.webhooks,
            only_during: body.only_during,
        };
        let reach = state.reach.get();
        level
            .check(|name| reach.webhooks.iter().any(|known| known == name))
            .map_err(|problem| {
                ApiError::BadRequest(format!(
                    "invalid `levels[{index}].{}`: {}",
                    problem.field, problem.reason
                ))
            })?;
        levels.push(level);
    }
    Ok(PolicyRecord::new(
        &request.name,
        request.repeat,
        levels,
        Timestamp::now(),
    )?)
}

/// Create an escalation policy
#[utoipa::path(
    post, path = "/escalation-policies", tag = "escalation policies", request_body = PolicyRequest,
    responses((status = 201, body = PolicyView), (status = 409, description = "The name is taken")),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    JsonBody(request): JsonBody<PolicyRequest>,
) -> Result<(StatusCode, Json<PolicyView>), ApiError> {
    let policy = record_of(&state, request)?;
    let store = state.store.clone();
    let policy = to_completion(async move { store.create_policy(&policy).await }).await?;
    tracing::info!(policy_id = %policy.id, by = %caller.name, "escalation policy created");
    Ok((StatusCode::CREATED, Json(policy.into())))
}

/// List escalation policies
#[utoipa::path(
    get, path = "/escalation-policies", tag = "escalation policies",
    responses((status = 200, body = PolicyList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
) -> Result<Json<PolicyList>, ApiError> {
    let policies = state.store.policies().await?;
    Ok(Json(PolicyList {
        escalation_policies: policies.into_iter().map(PolicyView::from).collect(),
    }))
}

/// Get an escalation policy
#[utoipa::path(
    get, path = "/escalation-policies/{id}", tag = "escalation policies", params(("id" = Uuid, Path)),
    responses((status = 200, body = PolicyView), (status = 404)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<PolicyView>, ApiError> {
    let policy = state
        .store
        .policy(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(policy.into()))
}

/// Replace an escalation policy
#[utoipa::path(
    put, path = "/escalation-policies/{id}", tag = "escalation policies", params(("id" = Uuid, Path)),
    request_body = PolicyRequest,
    responses(
        (status = 200, description = "Replaced; incidents already escalating keep their snapshot", body = PolicyView),
        (status = 404), (status = 409, description = "The name is taken"),
    ),
    security(("bearer" = []))
)]
pub async fn replace(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<PolicyRequest>,
) -> Result<Json<PolicyView>, ApiError> {
    let mut policy = record_of(&state, request)?;
    let existing = state
        .store
        .policy(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    policy.id = existing.id;
    policy.created_at = existing.created_at;
    let store = state.store.clone();
    let policy = to_completion(async move { store.replace_policy(&policy).await })
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    state.routes.clear();
    tracing::info!(policy_id = %id, by = %caller.name, "escalation policy replaced");
    Ok(Json(policy.into()))
}
