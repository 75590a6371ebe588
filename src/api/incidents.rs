//! Incidents: listing, reading, the state-machine actions, escalations and the timeline.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Authorized, Responder, Viewer};
use super::extract::{IdPath, OptionalJsonBody, QueryParams};
use super::{ApiError, AppState};
use crate::domain::{
    Action, Escalation, EscalationPolicy, Incident, IncidentStatus, TimelineEntry, Timestamp,
};
use crate::store::{catalog, IncidentQuery, TransitionRequest, MAX_PAGE_SIZE};

/// The page size of `GET /incidents` when `limit` is not given.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The longest note accepted with an action, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

fn missing(id: Uuid) -> impl FnOnce() -> String {
    move || format!("incident {id} not found")
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only incidents in this status (case-insensitive).
    #[param(example = "ESCALATING")]
    status: Option<String>,
    /// 1 to 200; 50 if not given.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only the incidents of this service (its id).
    service: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    pub next_cursor: Option<String>,
}

/// List incidents, newest first
#[utoipa::path(
    get, path = "/incidents", tag = "incidents", params(ListParams),
    responses((status = 200, body = IncidentPage), (status = 400, description = "An invalid parameter")),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<IncidentPage>, ApiError> {
    let status = params
        .status
        .map(|text| {
            IncidentStatus::parse(&text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`status` must be one of OPEN, ACKNOWLEDGED, ESCALATING, RESOLVED, CANCELLED; got {text:?}"
                ))
            })
        })
        .transpose()?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be 1 to {MAX_PAGE_SIZE}"
        )));
    }
    let before = params
        .cursor
        .map(|cursor| {
            Uuid::parse_str(&cursor).map_err(|_| {
                ApiError::BadRequest(
                    "`cursor` must be a `next_cursor` returned by this endpoint".into(),
                )
            })
        })
        .transpose()?;
    let service = params
        .service
        .map(|text| {
            Uuid::parse_str(&text).map_err(|_| {
                ApiError::BadRequest(format!("`service` must be a service's id; got {text:?}"))
            })
        })
        .transpose()?;
    let page = state
        .store
        .incidents(IncidentQuery {
            status,
            limit,
            before,
            service,
        })
        .await?;
    Ok(Json(IncidentPage {
        incidents: page.items,
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// Get an incident
#[utoipa::path(
    get, path = "/incidents/{id}", tag = "incidents",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Incident), (status = 400), (status = 404)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<Incident>, ApiError> {
    let incident = state
        .store
        .incident(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(incident))
}

/// The optional body of escalate, acknowledge and cancel.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// Recorded in the timeline with the action; at most 10,000 characters.
    #[schema(max_length = 10000)]
    pub note: Option<String>,
}

/// The optional body of resolve.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Kept on the incident and recorded in the timeline. `note` is accepted as another name.
    #[serde(alias = "note")]
    #[schema(max_length = 10000)]
    pub resolution_note: Option<String>,
}

/// The policy incident `id` escalates under: its service's (the service's own, else the
/// configured one), or the configured one.
async fn policy_of(state: &AppState, id: Uuid) -> Result<Arc<EscalationPolicy>, ApiError> {
    let incident = state
        .store
        .incident(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    let Some(service_id) = incident.service_id else {
        return Ok(state.policy.get());
    };
    let service = state.store.service(service_id).await?;
    Ok(catalog::policy_of(state.store.as_ref(), &service, &state.policy.get()).await?)
}

async fn act(
    state: &AppState,
    actor: String,
    id: Uuid,
    action: Action,
    note: Option<String>,
) -> Result<Json<Incident>, ApiError> {
    if let Some(note) = &note {
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(ApiError::BadRequest(format!(
                "the note is longer than {MAX_NOTE_CHARS} characters"
            )));
        }
    }
    // An incident of a service escalates under the service's policy.
    let policy = match action {
        Action::Escalate => policy_of(state, id).await?,
        _ => state.policy.get(),
    };
    let request = TransitionRequest {
        incident_id: id,
        action,
        actor,
        note,
        at: Timestamp::now(),
        policy,
        link: None,
    };
    let outcome = state
        .apply(request)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    tracing::info!(incident_id = %id, %action, status = %outcome.incident.status, "incident transitioned");
    Ok(Json(outcome.incident))
}

/// Start escalating an incident
#[utoipa::path(
    post, path = "/incidents/{id}/escalate", tag = "incidents",
    params(("id" = Uuid, Path)), request_body(content = Option<NoteRequest>),
    responses(
        (status = 200, description = "ESCALATING; level 1 is scheduled", body = Incident),
        (status = 404), (status = 409, description = "Not allowed from the current status"),
    ),
    security(("bearer" = []))
)]
pub async fn escalate(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Responder>,
    IdPath(id): IdPath,
    OptionalJsonBody(body): OptionalJsonBody<NoteRequest>,
) -> Result<Json<Incident>, ApiError> {
    act(&state, caller.name, id, Action::Escalate, body.note).await
}

/// Acknowledge an incident
#[utoipa::path(
    post, path = "/incidents/{id}/acknowledge", tag = "incidents",
    params(("id" = Uuid, Path)), request_body(content = Option<NoteRequest>),
    responses(
        (status = 200, description = "ACKNOWLEDGED; pending escalations are cancelled", body = Incident),
        (status = 404), (status = 409, description = "Not allowed from the current status"),
    ),
    security(("bearer" = []))
)]
pub async fn acknowledge(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Responder>,
    IdPath(id): IdPath,
    OptionalJsonBody(body): OptionalJsonBody<NoteRequest>,
) -> Result<Json<Incident>, ApiError> {
    act(&state, caller.name, id, Action::Acknowledge, body.note).await
}

/// Resolve an incident
#[utoipa::path(
    post, path = "/incidents/{id}/resolve", tag = "incidents",
    params(("id" = Uuid, Path)), request_body(content = Option<ResolveRequest>),
    responses(
        (status = 200, description = "RESOLVED; pending escalations are cancelled", body = Incident),
        (status = 404), (status = 409, description = "Not allowed from the current status"),
    ),
    security(("bearer" = []))
)]
pub async fn resolve(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Responder>,
    IdPath(id): IdPath,
    OptionalJsonBody(body): OptionalJsonBody<ResolveRequest>,
) -> Result<Json<Incident>, ApiError> {
    act(
        &state,
        caller.name,
        id,
        Action::Resolve,
        body.resolution_note,
    )
    .await
}

/// Cancel an incident
#[utoipa::path(
    post, path = "/incidents/{id}/cancel", tag = "incidents",
    params(("id" = Uuid, Path)), request_body(content = Option<NoteRequest>),
    responses(
        (status = 200, description = "CANCELLED; pending escalations are cancelled", body = Incident),
        (status = 404), (status = 409, description = "Not allowed from the current status"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Responder>,
    IdPath(id): IdPath,
    OptionalJsonBody(body): OptionalJsonBody<NoteRequest>,
) -> Result<Json<Incident>, ApiError> {
    act(&state, caller.name, id, Action::Cancel, body.note).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EscalationList {
    pub incident_id: Uuid,
    pub escalations: Vec<Escalation>,
}

/// List an incident's escalations
#[utoipa::path(
    get, path = "/incidents/escalations/{id}", tag = "incidents",
    params(("id" = Uuid, Path, description = "The incident's id")),
    responses((status = 200, description = "By level, then creation", body = EscalationList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn escalations(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<EscalationList>, ApiError> {
    let escalations = state
        .store
        .escalations(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(EscalationList {
        incident_id: id,
        escalations,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Timeline {
    pub timeline: Vec<TimelineEntry>,
}

/// Get an incident's timeline
#[utoipa::path(
    get, path = "/incidents/{id}/timeline", tag = "incidents",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "Oldest first", body = Timeline), (status = 404)),
    security(("bearer" = []))
)]
pub async fn timeline(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<Timeline>, ApiError> {
    let timeline = state
        .store
        .timeline(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(Timeline { timeline }))
}
