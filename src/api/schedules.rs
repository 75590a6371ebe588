//! On-call schedules: made and changed by admins, read by anyone with a token, never deleted
//! (rotations and overrides are retired). People are named by handle in and out; the store keeps
//! their ids. Who is on call, the shifts and the gaps are computed by
//! [`crate::domain::schedule`] from what the store holds at the time of the request; the
//! calendar feed renders the shifts as RFC 5545 iCalendar.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use icalendar::{Calendar, Component, Event, EventLike};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Admin, Authorized, FeedAuthorized, Viewer};
use super::extract::{IdPath, JsonBody, PathParams, QueryParams};
use super::{to_completion, ApiError, AppState};
use crate::domain::schedule::{
    check_range, InvalidSchedule, OverrideRecord, RestrictionFields, RotationFields, RotationKind,
    RotationRecord, Schedule, ScheduleRecord, Shift,
};
use crate::domain::{Timestamp, User};
use crate::store::ScheduleLayers;

/// How many days the calendar feed covers, from the start of the current UTC day.
pub const CALENDAR_DAYS: i64 = 60;

fn missing(id: Uuid) -> impl FnOnce() -> String {
    move || format!("schedule {id} not found")
}

/// The message names the field at fault: "`shift_length` must be from 1 to 1000".
impl From<InvalidSchedule> for ApiError {
    fn from(invalid: InvalidSchedule) -> Self {
        Self::BadRequest(invalid.to_string())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// An IANA time zone: rotations hand off at wall-clock times in it.
    #[schema(example = "America/New_York")]
    pub time_zone: String,
}

/// The body of `PATCH /schedules/{id}`: the fields given are set, the others kept.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// A new zone moves every handoff to the same wall-clock time in it.
    pub time_zone: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// By name.
    pub schedules: Vec<ScheduleRecord>,
}

/// A rotation as the API writes it (`POST` and `PUT`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RotationKind,
    /// In units of `type`: 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub shift_length: i64,
    /// The first handoff, as wall-clock time in the schedule's zone, without an offset.
    #[schema(example = "2026-03-06T09:00:00")]
    pub start: String,
    /// User handles in turn order; a user may appear more than once.
    pub participants: Vec<String>,
    /// Higher decides where rotations overlap; 0 if not given.
    #[serde(default)]
    pub priority: i32,
    /// The rotation applies within any of these; always, without any.
    #[serde(default)]
    pub restrictions: Vec<RestrictionFields>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotationView {
    pub id: Uuid,
    pub schedule_id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RotationKind,
    pub shift_length: i64,
    pub start: String,
    /// Handles, in turn order.
    pub participants: Vec<String>,
    pub priority: i32,
    pub restrictions: Vec<RestrictionFields>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotationList {
    /// The live rotations, in the order they were made (which settles equal priorities).
    pub rotations: Vec<RotationView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// The handle of who is on call during the override.
    pub user: String,
    /// The handle of who they replace; without it, `user` is on call beside whoever is.
    pub replaces: Option<String>,
    /// RFC 3339.
    pub start: DateTime<Utc>,
    /// RFC 3339, after `start`.
    pub end: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverrideView {
    pub id: Uuid,
    pub schedule_id: Uuid,
    /// A handle.
    pub user: String,
    /// A handle.
    pub replaces: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverrideList {
    /// The live overrides, in the order they were made (of two replacing one user, the later
    /// applies).
    pub overrides: Vec<OverrideView>,
}

/// The path of one rotation.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RotationPath {
    /// The schedule.
    id: Uuid,
    rotation_id: Uuid,
}

/// The path of one override.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OverridePath {
    /// The schedule.
    id: Uuid,
    override_id: Uuid,
}

/// A range of instants, `[from, to)`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// RFC 3339 (write `+` in an offset as `%2B`, or use `Z`).
    from: Option<DateTime<Utc>>,
    /// RFC 3339, after `from`, at most 366 days later.
    to: Option<DateTime<Utc>>,
}

impl RangeParams {
    /// Both ends, checked as the schedule checks them.
    fn required(&self) -> Result<(Timestamp, Timestamp), ApiError> {
        let given = |end: Option<DateTime<Utc>>, name: &str| {
            end.map(Timestamp::from_datetime).ok_or_else(|| {
                ApiError::BadRequest(format!("query parameter `{name}` is required"))
            })
        };
        let (from, to) = (given(self.from, "from")?, given(self.to, "to")?);
        check_range(from.as_datetime(), to.as_datetime())?;
        Ok((from, to))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OnCallParams {
    /// RFC 3339; now if not given.
    at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OnCall {
    pub at: Timestamp,
    /// By handle; empty in a gap.
    pub users: Vec<User>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShiftView {
    /// A handle.
    pub user: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShiftList {
    /// Clipped to the range, by start and then user, with the overrides applied.
    pub shifts: Vec<ShiftView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GapView {
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GapList {
    /// The ranges within the one asked for in which nobody is on call, in order.
    pub gaps: Vec<GapView>,
}

/// The feed's parameters other than `token`, which [`FeedAuthorized`] reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CalendarParams {
    /// Only this user's shifts (a handle).
    user: Option<String>,
}

/// The ids of the users `handles` name, in the same order; a 400 naming `field` for a handle
/// that names nobody, or a deactivated user.
async fn user_ids(
    state: &AppState,
    field: &str,
    handles: &[String],
) -> Result<Vec<Uuid>, ApiError> {
    let found = state.store.users_by_handle(handles).await?;
    handles
        .iter()
        .map(|handle| {
            let user = found
                .iter()
                .find(|user| &user.handle == handle)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "invalid `{field}`: no user has handle {handle:?}"
                    ))
                })?;
            if !user.active {
                return Err(ApiError::BadRequest(format!(
                    "invalid `{field}`: user {handle:?} is deactivated"
                )));
            }
            Ok(user.id)
        })
        .collect()
}

/// The users with these ids, by id.
async fn users_by_id(
    state: &AppState,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<HashMap<Uuid, User>, ApiError> {
    let mut ids: Vec<Uuid> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let users = state.store.users_by_id(&ids).await?;
    Ok(users.into_iter().map(|user| (user.id, user)).collect())
}

/// The handle of user `id` (users are never deleted; a missing one is shown by id).
fn handle(users: &HashMap<Uuid, User>, id: Uuid) -> String {
    users
        .get(&id)
        .map_or_else(|| id.to_string(), |user| user.handle.clone())
}

async fn rotation_views(
    state: &AppState,
    rotations: Vec<RotationRecord>,
) -> Result<Vec<RotationView>, ApiError> {
    let users = users_by_id(
        state,
        rotations
            .iter()
            .flat_map(|r| r.fields.participants.iter().copied()),
    )
    .await?;
    Ok(rotations
        .into_iter()
        .map(|rotation| RotationView {
            id: rotation.id,
            schedule_id: rotation.schedule_id,
            name: rotation.name,
            kind: rotation.fields.kind,
            shift_length: rotation.fields.shift_length,
            start: rotation.fields.start,
            participants: rotation
                .fields
                .participants
                .iter()
                .map(|&id| handle(&users, id))
                .collect(),
            priority: rotation.fields.priority,
            restrictions: rotation.fields.restrictions,
            created_at: rotation.created_at,
            updated_at: rotation.updated_at,
            retired_at: rotation.retired_at,
        })
        .collect())
}

async fn override_views(
    state: &AppState,
    overrides: Vec<OverrideRecord>,
) -> Result<Vec<OverrideView>, ApiError> {
    let users = users_by_id(
        state,
        overrides
            .iter()
            .flat_map(|o| std::iter::once(o.user).chain(o.replaces)),
    )
    .await?;
    Ok(overrides
        .into_iter()
        .map(|o| OverrideView {
            id: o.id,
            schedule_id: o.schedule_id,
            user: handle(&users, o.user),
            replaces: o.replaces.map(|id| handle(&users, id)),
            start: o.start,
            end: o.end,
            created_at: o.created_at,
            retired_at: o.retired_at,
        })
        .collect())
}

/// The rotation a request describes, in schedule `schedule_id`, made at `at`.
async fn rotation_of(
    state: &AppState,
    schedule_id: Uuid,
    request: RotationRequest,
    at: Timestamp,
) -> Result<RotationRecord, ApiError> {
    let fields = RotationFields {
        kind: request.kind,
        shift_length: request.shift_length,
        start: request.start,
        participants: user_ids(state, "participants", &request.participants).await?,
        priority: request.priority,
        restrictions: request.restrictions,
    };
    Ok(RotationRecord::new(schedule_id, &request.name, fields, at)?)
}

/// Schedule `id` as it stands for `[from, to)`, with the users it may name.
async fn compute(
    state: &AppState,
    id: Uuid,
    (from, to): (Timestamp, Timestamp),
) -> Result<(ScheduleLayers, Schedule), ApiError> {
    let layers = state
        .store
        .layers(id, from, to)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    // Every stored record was checked when it was written: one that fails now is not the
    // client's doing.
    let schedule = layers
        .schedule
        .schedule(&layers.rotations, &layers.overrides)
        .map_err(|invalid| ApiError::Internal(Box::new(invalid)))?;
    Ok((layers, schedule))
}

/// The shifts of schedule `id` in `[from, to)` with the users they name, and the schedule.
async fn shifts_of(
    state: &AppState,
    id: Uuid,
    range: (Timestamp, Timestamp),
) -> Result<(ScheduleRecord, Vec<Shift>, HashMap<Uuid, User>), ApiError> {
    let (layers, schedule) = compute(state, id, range).await?;
    let shifts = schedule.shifts(range.0.as_datetime(), range.1.as_datetime())?;
    let users = users_by_id(state, shifts.iter().map(|shift| shift.user)).await?;
    Ok((layers.schedule, shifts, users))
}

/// Create an on-call schedule
#[utoipa::path(
    post, path = "/schedules", tag = "schedules", request_body = ScheduleRequest,
    responses((status = 201, body = ScheduleRecord), (status = 409, description = "The name is taken")),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    JsonBody(request): JsonBody<ScheduleRequest>,
) -> Result<(StatusCode, Json<ScheduleRecord>), ApiError> {
    let schedule = ScheduleRecord::new(&request.name, &request.time_zone, Timestamp::now())?;
    let store = state.store.clone();
    let schedule = to_completion(async move { store.create_schedule(&schedule).await }).await?;
    tracing::info!(schedule_id = %schedule.id, by = %caller.name, "schedule created");
    Ok((StatusCode::CREATED, Json(schedule)))
}

/// List schedules
#[utoipa::path(
    get, path = "/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
) -> Result<Json<ScheduleList>, ApiError> {
    Ok(Json(ScheduleList {
        schedules: state.store.schedules().await?,
    }))
}

/// Get a schedule
#[utoipa::path(
    get, path = "/schedules/{id}", tag = "schedules", params(("id" = Uuid, Path)),
    responses((status = 200, body = ScheduleRecord), (status = 404)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<ScheduleRecord>, ApiError> {
    let schedule = state
        .store
        .schedule(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(schedule))
}

/// Change a schedule's name or time zone
#[utoipa::path(
    patch, path = "/schedules/{id}", tag = "schedules", params(("id" = Uuid, Path)),
    request_body = SchedulePatch,
    responses(
        (status = 200, body = ScheduleRecord),
        (status = 404), (status = 409, description = "The name is taken"),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(patch): JsonBody<SchedulePatch>,
) -> Result<Json<ScheduleRecord>, ApiError> {
    let existing = state
        .store
        .schedule(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    let changed = existing.changed(
        patch.name.as_deref(),
        patch.time_zone.as_deref(),
        Timestamp::now(),
    )?;
    let store = state.store.clone();
    let schedule = to_completion(async move { store.update_schedule(&changed).await })
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    tracing::info!(schedule_id = %id, by = %caller.name, "schedule changed");
    Ok(Json(schedule))
}

/// Add a rotation (a layer) to a schedule
#[utoipa::path(
    post, path = "/schedules/{id}/rotations", tag = "schedules", params(("id" = Uuid, Path)),
    request_body = RotationRequest,
    responses((status = 201, body = RotationView), (status = 404)),
    security(("bearer" = []))
)]
pub async fn add_rotation(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<RotationRequest>,
) -> Result<(StatusCode, Json<RotationView>), ApiError> {
    let rotation = rotation_of(&state, id, request, Timestamp::now()).await?;
    let store = state.store.clone();
    let rotation = to_completion(async move { store.add_rotation(&rotation).await })
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    tracing::info!(schedule_id = %id, rotation_id = %rotation.id, by = %caller.name, "rotation added");
    let mut views = rotation_views(&state, vec![rotation]).await?;
    Ok((StatusCode::CREATED, Json(views.remove(0))))
}

/// List a schedule's rotations
#[utoipa::path(
    get, path = "/schedules/{id}/rotations", tag = "schedules", params(("id" = Uuid, Path)),
    responses((status = 200, body = RotationList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn rotations(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<RotationList>, ApiError> {
    let rotations = state
        .store
        .rotations(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(RotationList {
        rotations: rotation_views(&state, rotations).await?,
    }))
}

/// Replace a rotation
#[utoipa::path(
    put, path = "/schedules/{id}/rotations/{rotation_id}", tag = "schedules", params(RotationPath),
    request_body = RotationRequest,
    responses(
        (status = 200, description = "Replaced whole; it keeps its id and its place among equal priorities", body = RotationView),
        (status = 404),
    ),
    security(("bearer" = []))
)]
pub async fn replace_rotation(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    PathParams(RotationPath { id, rotation_id }): PathParams<RotationPath>,
    JsonBody(request): JsonBody<RotationRequest>,
) -> Result<Json<RotationView>, ApiError> {
    let mut rotation = rotation_of(&state, id, request, Timestamp::now()).await?;
    rotation.id = rotation_id;
    let store = state.store.clone();
    let rotation = to_completion(async move { store.replace_rotation(&rotation).await })
        .await
        .map_err(|e| {
            ApiError::from_store(e, || {
                format!("rotation {rotation_id} not found in schedule {id}")
            })
        })?;
    tracing::info!(schedule_id = %id, %rotation_id, by = %caller.name, "rotation replaced");
    let mut views = rotation_views(&state, vec![rotation]).await?;
    Ok(Json(views.remove(0)))
}

/// Retire a rotation
#[utoipa::path(
    delete, path = "/schedules/{id}/rotations/{rotation_id}", tag = "schedules", params(RotationPath),
    responses(
        (status = 200, description = "Retired (kept, no longer applied)", body = RotationView),
        (status = 404),
    ),
    security(("bearer" = []))
)]
pub async fn retire_rotation(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    PathParams(RotationPath { id, rotation_id }): PathParams<RotationPath>,
) -> Result<Json<RotationView>, ApiError> {
    let store = state.store.clone();
    let rotation = to_completion(async move {
        store
            .retire_rotation(id, rotation_id, Timestamp::now())
            .await
    })
    .await
    .map_err(|e| {
        ApiError::from_store(e, || {
            format!("no live rotation {rotation_id} in schedule {id}")
        })
    })?;
    tracing::info!(schedule_id = %id, %rotation_id, by = %caller.name, "rotation retired");
    let mut views = rotation_views(&state, vec![rotation]).await?;
    Ok(Json(views.remove(0)))
}

/// Add an override: someone takes over a time range
#[utoipa::path(
    post, path = "/schedules/{id}/overrides", tag = "schedules", params(("id" = Uuid, Path)),
    request_body = OverrideRequest,
    responses((status = 201, body = OverrideView), (status = 404)),
    security(("bearer" = []))
)]
pub async fn add_override(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<OverrideRequest>,
) -> Result<(StatusCode, Json<OverrideView>), ApiError> {
    let user = user_ids(&state, "user", std::slice::from_ref(&request.user)).await?[0];
    let replaces = match &request.replaces {
        Some(handle) => Some(user_ids(&state, "replaces", std::slice::from_ref(handle)).await?[0]),
        None => None,
    };
    let range = (
        Timestamp::from_datetime(request.start),
        Timestamp::from_datetime(request.end),
    );
    let taken = OverrideRecord::new(id, user, replaces, range, Timestamp::now())?;
    let store = state.store.clone();
    let taken = to_completion(async move { store.add_override(&taken).await })
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    tracing::info!(schedule_id = %id, override_id = %taken.id, by = %caller.name, "override added");
    let mut views = override_views(&state, vec![taken]).await?;
    Ok((StatusCode::CREATED, Json(views.remove(0))))
}

/// List a schedule's overrides
#[utoipa::path(
    get, path = "/schedules/{id}/overrides", tag = "schedules",
    params(("id" = Uuid, Path), RangeParams),
    responses((status = 200, body = OverrideList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn overrides(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
    QueryParams(range): QueryParams<RangeParams>,
) -> Result<Json<OverrideList>, ApiError> {
    let (from, to) = (
        range.from.map(Timestamp::from_datetime),
        range.to.map(Timestamp::from_datetime),
    );
    let overrides = state
        .store
        .overrides(id, from, to)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(OverrideList {
        overrides: override_views(&state, overrides).await?,
    }))
}

/// Retire an override
#[utoipa::path(
    delete, path = "/schedules/{id}/overrides/{override_id}", tag = "schedules", params(OverridePath),
    responses(
        (status = 200, description = "Retired (kept, no longer applied)", body = OverrideView),
        (status = 404),
    ),
    security(("bearer" = []))
)]
pub async fn retire_override(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    PathParams(OverridePath { id, override_id }): PathParams<OverridePath>,
) -> Result<Json<OverrideView>, ApiError> {
    let store = state.store.clone();
    let retired = to_completion(async move {
        store
            .retire_override(id, override_id, Timestamp::now())
            .await
    })
    .await
    .map_err(|e| {
        ApiError::from_store(e, || {
            format!("no live override {override_id} in schedule {id}")
        })
    })?;
    tracing::info!(schedule_id = %id, %override_id, by = %caller.name, "override retired");
    let mut views = override_views(&state, vec![retired]).await?;
    Ok(Json(views.remove(0)))
}

/// Who is on call at an instant (now by default)
#[utoipa::path(
    get, path = "/schedules/{id}/on-call", tag = "schedules",
    params(("id" = Uuid, Path), OnCallParams),
    responses((status = 200, body = OnCall), (status = 404)),
    security(("bearer" = []))
)]
pub async fn on_call(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
    QueryParams(params): QueryParams<OnCallParams>,
) -> Result<Json<OnCall>, ApiError> {
    let at = params
        .at
        .map_or_else(Timestamp::now, Timestamp::from_datetime);
    let (_, schedule) = compute(
        &state,
        id,
        (at, at.after(std::time::Duration::from_millis(1))),
    )
    .await?;
    let mut users: Vec<User> = users_by_id(&state, schedule.on_call(at.as_datetime()))
        .await?
        .into_values()
        .collect();
    users.sort_by(|a, b| a.handle.cmp(&b.handle));
    Ok(Json(OnCall { at, users }))
}

/// The shifts in a range, overrides applied
#[utoipa::path(
    get, path = "/schedules/{id}/shifts", tag = "schedules",
    params(("id" = Uuid, Path), RangeParams),
    responses((status = 200, body = ShiftList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn shifts(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
    QueryParams(range): QueryParams<RangeParams>,
) -> Result<Json<ShiftList>, ApiError> {
    let (_, shifts, users) = shifts_of(&state, id, range.required()?).await?;
    Ok(Json(ShiftList {
        shifts: shifts
            .into_iter()
            .map(|shift| ShiftView {
                user: handle(&users, shift.user),
                start: Timestamp::from_datetime(shift.start),
                end: Timestamp::from_datetime(shift.end),
            })
            .collect(),
    }))
}

/// The ranges in which nobody is on call
#[utoipa::path(
    get, path = "/schedules/{id}/gaps", tag = "schedules",
    params(("id" = Uuid, Path), RangeParams),
    responses((status = 200, body = GapList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn gaps(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
    QueryParams(range): QueryParams<RangeParams>,
) -> Result<Json<GapList>, ApiError> {
    let range = range.required()?;
    let (_, schedule) = compute(&state, id, range).await?;
    let gaps = schedule.gaps(range.0.as_datetime(), range.1.as_datetime())?;
    Ok(Json(GapList {
        gaps: gaps
            .into_iter()
            .map(|gap| GapView {
                start: Timestamp::from_datetime(gap.start),
                end: Timestamp::from_datetime(gap.end),
            })
            .collect(),
    }))
}

/// The shifts as an iCalendar feed to subscribe to
#[utoipa::path(
    get, path = "/schedules/{id}/calendar.ics", tag = "schedules",
    params(
        ("id" = Uuid, Path),
        ("token" = Option<String>, Query, description = "An API token that may read, for calendar clients that cannot send `Authorization`"),
        CalendarParams,
    ),
    responses(
        (status = 200, description = "The shifts of the next 60 days from the start of the current UTC day, as RFC 5545 iCalendar", content_type = "text/calendar", body = String),
        (status = 404),
    ),
    security(("bearer" = []), ("token" = []))
)]
pub async fn calendar(
    State(state): State<AppState>,
    _: FeedAuthorized<Viewer>,
    IdPath(id): IdPath,
    QueryParams(params): QueryParams<CalendarParams>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    // From a fixed point, so that a shift under way keeps its start, and its UID, all day.
    let from = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let range = (
        Timestamp::from_datetime(from),
        Timestamp::from_datetime(from + Duration::days(CALENDAR_DAYS)),
    );
    let only = match &params.user {
        Some(handle) => Some(user_ids(&state, "user", std::slice::from_ref(handle)).await?[0]),
        None => None,
    };
    let (schedule, shifts, users) = shifts_of(&state, id, range).await?;
    let shifts = shifts
        .iter()
        .filter(|shift| only.is_none_or(|user| shift.user == user));
    let feed = ics(&schedule, shifts, &users, now);
    Ok((
        [
            (CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        feed,
    )
        .into_response())
}

/// `shifts` of `schedule` as an RFC 5545 calendar made at `stamp`: one event per shift, in
/// UTC, with the shift's stable UID. The crate writes CRLF line endings, folds lines at 75
/// octets and escapes text.
fn ics<'a>(
    schedule: &ScheduleRecord,
    shifts: impl Iterator<Item = &'a Shift>,
    users: &HashMap<Uuid, User>,
    stamp: DateTime<Utc>,
) -> String {
    let mut calendar = Calendar::empty();
    calendar
        .append_property(("VERSION", "2.0"))
        .append_property(("PRODID", "-//Klaxon//On-call schedules//EN"))
        .append_property(("CALSCALE", "GREGORIAN"))
        .append_property(("METHOD", "PUBLISH"))
        .name(&format!("{} on call", schedule.name));
    for shift in shifts {
        let handle = handle(users, shift.user);
        calendar.push(
            Event::new()
                .uid(&shift.uid(schedule.id))
                .timestamp(stamp)
                .starts(shift.start)
                .ends(shift.end)
                .summary(&format!("On call: {handle} ({})", schedule.name))
                .done(),
        );
    }
    calendar.to_string()
}
