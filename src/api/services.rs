//! Services and their integration keys: made and changed by admins, read by anyone with a token,
//! never deleted. A key's secret is shown once, in the answer that creates it, and kept hashed.

use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::auth::{Admin, Authorized, Viewer};
use super::cache::KeyRoute;
use super::extract::{IdPath, JsonBody, PathParams};
use super::{to_completion, ApiError, AppState};
use crate::domain::service::check_name;
use crate::domain::{
    Action, EventService, Heartbeat, HeartbeatChange, IntegrationKey, InvalidService, Service,
    Timestamp, TokenSecret,
};
use crate::store::{catalog, StoreError};

fn missing(id: Uuid) -> impl FnOnce() -> String {
    move || format!("service {id} not found")
}

impl From<InvalidService> for ApiError {
    fn from(invalid: InvalidService) -> Self {
        Self::BadRequest(invalid.to_string())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServiceRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Its escalation policy; the configured one if not given.
    pub escalation_policy_id: Option<Uuid>,
    /// `true` if not given: an incident it opens starts escalating at once.
    pub auto_escalate: Option<bool>,
}

/// The body of `PATCH /services/{id}`: the fields given are set, the others kept.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePatch {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// `null` puts the service back on the configured policy.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<Uuid>)]
    pub escalation_policy_id: Option<Option<Uuid>>,
    pub auto_escalate: Option<bool>,
}

/// A field that is present, even as `null`, is `Some` of its value.
fn given<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceList {
    /// By name.
    pub services: Vec<Service>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// What sends with it (a Prometheus, a script). 1 to 100 characters, not blank.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: Uuid,
    pub name: String,
    /// The secret: shown this once, never again. PagerDuty's `routing_key`, or Alertmanager's
    /// bearer token.
    pub key: String,
    pub service_id: Uuid,
    pub created_at: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// Oldest first, revoked ones included; never their secrets.
    pub integration_keys: Vec<IntegrationKey>,
}

/// What an event for `service` carries into the store: the service, and the policy an
/// incident it opens escalates under at once (the service's own, else the configured one) when
/// the service escalates automatically.
pub async fn event_service(
    state: &AppState,
    service: &Service,
) -> Result<EventService, StoreError> {
    catalog::event_service(state.store.as_ref(), service, &state.policy.get()).await
}

/// Where the integration key `secret` routes events: its service, and what that service's events
/// carry into the store; `None` for a key that is not live. Kept in [`AppState::routes`], which
/// every change of a service, policy or key empties (see [`super::cache`]).
pub async fn route(state: &AppState, secret: &TokenSecret) -> Result<Option<KeyRoute>, StoreError> {
    let hash = secret.hash();
    if let Some(route) = state.routes.get(&hash) {
        return Ok(Some(route));
    }
    let generation = state.routes.generation();
    let Some(service) = state.store.service_by_key(secret).await? else {
        return Ok(None);
    };
    let target = event_service(state, &service).await?;
    let route = KeyRoute { service, target };
    state.routes.insert(hash, route.clone(), generation);
    Ok(Some(route))
}

/// Acknowledges or resolves `service_id`'s live incident with `dedup_key` as `actor`, if there
/// is one; one already in that state is left as it is. The incident's id, if there was one:
/// what the integrations answer.
pub async fn act_on_live(
    state: &AppState,
    service_id: Uuid,
    dedup_key: &str,
    action: Action,
    actor: String,
    note: &str,
) -> Result<Option<Uuid>, StoreError> {
    let Some(incident) = state.store.live_incident(service_id, dedup_key).await? else {
        return Ok(None);
    };
    match state
        .transition(incident.id, action, actor, Some(note.to_owned()))
        .await
    {
        Ok(_) => {
            tracing::info!(incident_id = %incident.id, %action, "incident changed by an integration");
            Ok(Some(incident.id))
        }
        Err(StoreError::InvalidTransition(_)) => Ok(Some(incident.id)),
        Err(error) => Err(error),
    }
}

/// Answers `NotFound` for a policy that does not exist as a 400 naming the field.
fn policy_error(error: crate::store::StoreError, policy: Option<Uuid>) -> ApiError {
    match (error, policy) {
        (crate::store::StoreError::NotFound, Some(policy)) => ApiError::BadRequest(format!(
            "invalid `escalation_policy_id`: no escalation policy {policy}"
        )),
        (error, _) => ApiError::from_store(error, || "service not found".into()),
    }
}

/// Create a service
#[utoipa::path(
    post, path = "/services", tag = "services", request_body = NewServiceRequest,
    responses(
        (status = 201, body = Service),
        (status = 409, description = "The name is taken"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    JsonBody(request): JsonBody<NewServiceRequest>,
) -> Result<(StatusCode, Json<Service>), ApiError> {
    let policy = request.escalation_policy_id;
    let service = Service::new(
        &request.name,
        policy,
        request.auto_escalate.unwrap_or(true),
        Timestamp::now(),
    )?;
    let store = state.store.clone();
    let service = to_completion(async move { store.create_service(&service).await })
        .await
        .map_err(|e| policy_error(e, policy))?;
    tracing::info!(service_id = %service.id, by = %caller.name, "service created");
    Ok((StatusCode::CREATED, Json(service)))
}

/// List services
#[utoipa::path(
    get, path = "/services", tag = "services",
    responses((status = 200, body = ServiceList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
) -> Result<Json<ServiceList>, ApiError> {
    Ok(Json(ServiceList {
        services: state.store.services().await?,
    }))
}

/// Get a service
#[utoipa::path(
    get, path = "/services/{id}", tag = "services", params(("id" = Uuid, Path)),
    responses((status = 200, body = Service), (status = 404)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<Service>, ApiError> {
    let service = state
        .store
        .service(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(service))
}

/// Change a service
#[utoipa::path(
    patch, path = "/services/{id}", tag = "services", params(("id" = Uuid, Path)),
    request_body = ServicePatch,
    responses((status = 200, body = Service), (status = 404), (status = 409, description = "The name is taken")),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(patch): JsonBody<ServicePatch>,
) -> Result<Json<Service>, ApiError> {
    let mut service = state
        .store
        .service(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    if let Some(name) = &patch.name {
        service.name = check_name("name", name)?;
    }
    if let Some(policy) = patch.escalation_policy_id {
        service.escalation_policy_id = policy;
    }
    if let Some(auto) = patch.auto_escalate {
        service.auto_escalate = auto;
    }
    service.updated_at = Timestamp::now();
    let policy = service.escalation_policy_id;
    let store = state.store.clone();
    let service = to_completion(async move { store.update_service(&service).await })
        .await
        .map_err(|e| policy_error(e, policy))?;
    state.routes.clear();
    tracing::info!(service_id = %id, by = %caller.name, "service updated");
    Ok(Json(service))
}

/// Create an integration key for a service
#[utoipa::path(
    post, path = "/services/{id}/integration-keys", tag = "services", params(("id" = Uuid, Path)),
    request_body = NewKeyRequest,
    responses(
        (status = 201, description = "The key, with its secret shown this once", body = CreatedKey, headers(
            ("Cache-Control" = String, description = "`no-store`: the answer carries a secret"),
        )),
        (status = 404),
    ),
    security(("bearer" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<NewKeyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let name = check_name("name", &request.name)?;
    let secret = TokenSecret::generate();
    let store = state.store.clone();
    let key = secret.expose().to_owned();
    let created = to_completion(async move {
        store
            .create_integration_key(id, &name, &secret, Timestamp::now())
            .await
    })
    .await
    .map_err(|e| ApiError::from_store(e, missing(id)))?;
    tracing::info!(service_id = %id, key_id = %created.id, by = %caller.name, "integration key created");
    Ok((
        StatusCode::CREATED,
        [(CACHE_CONTROL, "no-store")],
        Json(CreatedKey {
            id: created.id,
            name: created.name,
            key,
            service_id: created.service_id,
            created_at: created.created_at,
        }),
    ))
}

/// List a service's integration keys
#[utoipa::path(
    get, path = "/services/{id}/integration-keys", tag = "services", params(("id" = Uuid, Path)),
    responses((status = 200, body = KeyList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn keys(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<KeyList>, ApiError> {
    let service = state
        .store
        .service(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(KeyList {
        integration_keys: state.store.integration_keys(service.id).await?,
    }))
}

/// The path of one integration key.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The service.
    id: Uuid,
    /// The key.
    key_id: Uuid,
}

/// Revoke an integration key
#[utoipa::path(
    delete, path = "/services/{id}/integration-keys/{key_id}", tag = "services", params(KeyPath),
    responses(
        (status = 200, description = "Revoked (kept, marked revoked): it stops working at once", body = IntegrationKey),
        (status = 404),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    PathParams(KeyPath { id, key_id }): PathParams<KeyPath>,
) -> Result<Json<IntegrationKey>, ApiError> {
    let store = state.store.clone();
    let revoked = to_completion(async move {
        store
            .revoke_integration_key(id, key_id, Timestamp::now())
            .await
    })
    .await
    .map_err(|e| {
        ApiError::from_store(e, || {
            format!("integration key {key_id} not found on service {id}")
        })
    })?;
    state.routes.clear();
    tracing::info!(service_id = %id, key_id = %key_id, by = %caller.name, "integration key revoked");
    Ok(Json(revoked))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHeartbeatRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// How long a ping is good for, `"1s"` to `"366days"`: `"30s"`, `"5m"`, `"1h 30m"`.
    #[schema(example = "5m")]
    pub interval: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedHeartbeat {
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// The secret of its ping URL, `POST /heartbeats/{key}`: shown this once.
    pub key: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeartbeatList {
    /// Oldest first, without their keys.
    pub heartbeats: Vec<Heartbeat>,
}

/// Create a heartbeat monitor on a service
#[utoipa::path(
    post, path = "/services/{id}/heartbeats", tag = "services", params(("id" = Uuid, Path)),
    request_body = NewHeartbeatRequest,
    responses(
        (status = 201, description = "The monitor, with its key shown this once", body = CreatedHeartbeat),
        (status = 404),
    ),
    security(("bearer" = []))
)]
pub async fn create_heartbeat(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<NewHeartbeatRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let heartbeat = Heartbeat::new(id, &request.name, &request.interval, Timestamp::now())?;
    let secret = TokenSecret::generate();
    let key = secret.expose().to_owned();
    let store = state.store.clone();
    let heartbeat = to_completion(async move { store.create_heartbeat(&heartbeat, &secret).await })
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    tracing::info!(service_id = %id, heartbeat_id = %heartbeat.id, by = %caller.name, "heartbeat created");
    Ok((
        StatusCode::CREATED,
        [(CACHE_CONTROL, "no-store")],
        Json(CreatedHeartbeat { heartbeat, key }),
    ))
}

/// List a service's heartbeat monitors
#[utoipa::path(
    get, path = "/services/{id}/heartbeats", tag = "services", params(("id" = Uuid, Path)),
    responses((status = 200, body = HeartbeatList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn heartbeats(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<HeartbeatList>, ApiError> {
    let service = state
        .store
        .service(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(HeartbeatList {
        heartbeats: state.store.heartbeats(service.id).await?,
    }))
}

/// A new name or interval for a monitor; what is left out stays.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatChangeRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// `"1s"` to `"366days"`. A monitor pinged before is due again at its last ping + this.
    #[schema(example = "10m")]
    pub interval: Option<String>,
}

/// The path of one heartbeat monitor.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HeartbeatPath {
    /// The service.
    id: Uuid,
    /// The monitor.
    heartbeat_id: Uuid,
}

fn missing_heartbeat(id: Uuid, heartbeat_id: Uuid) -> impl FnOnce() -> String {
    move || format!("heartbeat monitor {heartbeat_id} not found on service {id}")
}

/// Change a heartbeat monitor
#[utoipa::path(
    patch, path = "/services/{id}/heartbeats/{heartbeat_id}", tag = "services",
    params(HeartbeatPath), request_body = HeartbeatChangeRequest,
    responses(
        (status = 200, description = "Changed; its key stays the same", body = Heartbeat),
        (status = 400, description = "A name or interval that is not valid"),
        (status = 404, description = "No such live monitor on the service"),
    ),
    security(("bearer" = []))
)]
pub async fn change_heartbeat(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    PathParams(HeartbeatPath { id, heartbeat_id }): PathParams<HeartbeatPath>,
    JsonBody(request): JsonBody<HeartbeatChangeRequest>,
) -> Result<Json<Heartbeat>, ApiError> {
    let change = HeartbeatChange::new(request.name.as_deref(), request.interval.as_deref())?;
    let store = state.store.clone();
    let changed =
        to_completion(async move { store.change_heartbeat(id, heartbeat_id, &change).await })
            .await
            .map_err(|e| ApiError::from_store(e, missing_heartbeat(id, heartbeat_id)))?;
    tracing::info!(service_id = %id, %heartbeat_id, by = %caller.name, "heartbeat changed");
    Ok(Json(changed))
}

/// Retire a heartbeat monitor
#[utoipa::path(
    delete, path = "/services/{id}/heartbeats/{heartbeat_id}", tag = "services",
    params(HeartbeatPath),
    responses(
        (status = 200, description = "Retired (kept, marked retired): no longer listed, pinged or watched; an incident its miss opened stays", body = Heartbeat),
        (status = 404, description = "No such live monitor on the service"),
    ),
    security(("bearer" = []))
)]
pub async fn retire_heartbeat(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    PathParams(HeartbeatPath { id, heartbeat_id }): PathParams<HeartbeatPath>,
) -> Result<Json<Heartbeat>, ApiError> {
    let store = state.store.clone();
    let at = Timestamp::now();
    let retired = to_completion(async move { store.retire_heartbeat(id, heartbeat_id, at).await })
        .await
        .map_err(|e| ApiError::from_store(e, missing_heartbeat(id, heartbeat_id)))?;
    tracing::info!(service_id = %id, %heartbeat_id, by = %caller.name, "heartbeat retired");
    Ok(Json(retired))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Pinged {
    pub heartbeat_id: Uuid,
    /// When it is missed next.
    pub due_at: Timestamp,
    /// The incident a miss had opened, resolved by this ping.
    pub resolved_incident_id: Option<Uuid>,
}

/// The path of a ping.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PingPath {
    /// The monitor's key.
    key: String,
}

/// Ping a heartbeat monitor
#[utoipa::path(
    post, path = "/heartbeats/{key}", tag = "services", params(PingPath),
    responses(
        (status = 200, description = "Recorded; a miss's incident is resolved", body = Pinged),
        (status = 404, description = "No monitor has this key"),
    )
)]
pub async fn ping(
    State(state): State<AppState>,
    PathParams(PingPath { key }): PathParams<PingPath>,
) -> Result<Json<Pinged>, ApiError> {
    let at = Timestamp::now();
    let before = state
        .store
        .ping_heartbeat(&TokenSecret::from_presented(key), at)
        .await?
        .ok_or_else(|| ApiError::NotFound("no heartbeat monitor has this key".into()))?;
    let mut resolved = None;
    if let Some(incident_id) = before.incident_id {
        let actor = format!("heartbeat:{}", before.name);
        let note = Some("the heartbeat is back".into());
        let outcome = state
            .transition(incident_id, Action::Resolve, actor, note)
            .await;
        match outcome {
            Ok(_) => resolved = Some(incident_id),
            // Resolved or cancelled by hand already.
            Err(StoreError::InvalidTransition(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Json(Pinged {
        heartbeat_id: before.id,
        due_at: at.after(before.interval),
        resolved_incident_id: resolved,
    }))
}
